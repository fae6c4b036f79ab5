"""Float64 NumPy references shared by the training tests."""

from __future__ import annotations

import numpy as np


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def numpy_forward(params: dict, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, num_actions: int):
    """float64 ``(logits [T, N, A], values [T, N], hidden [T, N, H])`` of the LSTM actor-critic.

    Input at step t: ``obs[t]``, the one-hot previous action (zeros at t = 0), the previous reward
    (0 at t = 0). LSTM: i, f, o = sigmoid, g = tanh of ``x W_i* + h W_h* + b_h*``;
    ``c' = f c + i g``, ``h' = o tanh(c')``; linear policy and value heads on ``h'``.
    """
    p = params["params"]
    lstm = p["lstm"]
    num_steps, num_tasks = actions.shape
    hidden = np.zeros((num_tasks, lstm["hi"]["kernel"].shape[0]))
    cell = np.zeros_like(hidden)
    prev_action = np.zeros((num_tasks, num_actions))
    prev_reward = np.zeros((num_tasks, 1))
    logits, values, hiddens = [], [], []
    for t in range(num_steps):
        x = np.concatenate([obs[t], prev_action, prev_reward], axis=1)

        def gate(name, x=x, hidden=hidden):
            input_part, hidden_part = x @ lstm[f"i{name}"]["kernel"], hidden @ lstm[f"h{name}"]["kernel"]
            return input_part + hidden_part + lstm[f"h{name}"]["bias"]

        i, f, g, o = _sigmoid(gate("i")), _sigmoid(gate("f")), np.tanh(gate("g")), _sigmoid(gate("o"))
        cell = f * cell + i * g
        hidden = o * np.tanh(cell)
        hiddens.append(hidden)
        logits.append(hidden @ p["policy"]["kernel"] + p["policy"]["bias"])
        values.append((hidden @ p["value"]["kernel"] + p["value"]["bias"])[:, 0])
        prev_action = np.eye(num_actions)[actions[t]]
        prev_reward = rewards[t][:, None]
    return np.stack(logits), np.stack(values), np.stack(hiddens)
