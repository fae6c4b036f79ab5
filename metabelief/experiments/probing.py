"""The probe protocol shared by experiments: a trained and an untrained network on the same histories.

The trained agent's own held-out trajectory is replayed (teacher forcing) through the trained
network and through the same network at its initial weights, so both are probed on exactly the
same histories. Held-out tasks are cut into train / validation / test blocks of lanes; every
score is on the test tasks.
"""

from __future__ import annotations

import jax
import numpy as np

from metabelief import probes
from metabelief.agents.lstm import RecurrentAgent
from metabelief.rollout import Trajectory, lane_moments, replay_jit, split_lanes
from metabelief.tasks.base import PyTree, TaskFamily


def split_sizes(num_tasks: int) -> tuple[int, int, int]:
    """Half the tasks fit probes, a quarter choose the ridge strength, a quarter test."""
    train, validation = num_tasks // 2, num_tasks // 4
    return train, validation, num_tasks - train - validation


def probe_networks(
    family: TaskFamily,
    agent: RecurrentAgent,
    networks: dict[str, PyTree],
    history: Trajectory,
    *,
    key: jax.Array,
    mlp_steps: int = 2000,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Linear probes both ways and an MLP probe for each named parameter set, on ``history``.

    Returns:
      ``(report, decoded)``. ``report`` is JSON-ready with, for each ``name`` in ``networks``:
      ``name`` (hidden -> belief features, plus ``r2_posterior_mean`` for the leading ``D``
      features), ``reverse_<name>`` (belief features -> hidden), ``mlp_<name>`` (MLP hidden ->
      belief features), and ``r2_by_time[name]`` (hidden -> posterior means at each step, test
      tasks). ``decoded[name]`` holds the posterior means decoded on the test tasks,
      ``[T, n_test, D]``, and ``decoded["exact"]`` the exact ones.
    """
    sizes = split_sizes(history.actions.shape[1])
    hidden = slice(0, agent.hidden_size)
    num_features = history.features.shape[-1]
    num_means = history.truth.shape[-1]
    features = slice(agent.hidden_size, agent.hidden_size + num_features)
    means = slice(agent.hidden_size, agent.hidden_size + num_means)
    report = {"split_sizes": list(sizes), "r2_by_time": {}}
    decoded = {"exact": np.asarray(split_lanes(history.features, sizes)[2][..., :num_means])}
    for name, params in networks.items():
        replayed = replay_jit(family, agent, params, history)
        moments = trajectory_moments(replayed, sizes)
        forward = probes.linear_probe(moments, hidden, features)
        to_means = probes.linear_probe(moments, hidden, means)
        report[name] = forward.test.to_dict() | {
            "r2_posterior_mean": to_means.test.to_dict()["r2"],
            "ridge": forward.ridge,
        }
        report[f"reverse_{name}"] = probes.linear_probe(moments, features, hidden).test.to_dict()

        key, mlp_key = jax.random.split(key)
        samples = split_samples(replayed, sizes)
        report[f"mlp_{name}"] = probes.mlp_probe(mlp_key, *samples, num_steps=mlp_steps).to_dict()
        test_hidden = split_lanes(replayed.hidden, sizes)[2]
        test_means = split_lanes(replayed.features, sizes)[2][..., :num_means]
        per_step = jax.vmap(probes.score_arrays)(probes.predict(to_means.probe, test_hidden), test_means)
        report["r2_by_time"][name] = [None if np.isnan(r2) else float(r2) for r2 in np.asarray(per_step.r2)]
        decoded[name] = np.asarray(probes.predict(to_means.probe, test_hidden))
    return report, decoded


def trajectory_moments(trajectory: Trajectory, sizes: tuple[int, ...]) -> probes.Moments:
    """Probe statistics of ``[hidden, features]`` per split of task lanes, from stored arrays.

    The same statistics ``metabelief.rollout.probe_moments`` streams, taken here from the replay
    the MLP probe and the per-step scores need anyway, so the history is replayed once.
    """
    return lane_moments(trajectory.hidden, trajectory.features, sizes)


def split_samples(trajectory: Trajectory, sizes: tuple[int, ...]) -> list[tuple[jax.Array, jax.Array]]:
    """``(hidden, features)`` sample rows ``([n * T, H], [n * T, F])`` per split of task lanes,
    for the MLP probe."""
    by_split = split_lanes(trajectory.hidden, sizes), split_lanes(trajectory.features, sizes)
    return [(_flat(h), _flat(f)) for h, f in zip(*by_split, strict=True)]


def _flat(array: jax.Array) -> jax.Array:
    return array.reshape(-1, array.shape[-1])
