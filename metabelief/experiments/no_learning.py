"""Fair no-learning baselines: memories of the history that were never trained.

The input-only baseline of ``controls`` (the last k <= 5 inputs and the time step) cannot hold a
count over 100 steps, so a trained network beating it says little. These probe inputs can, and
none of them learned anything; each is built on device from the same history the networks read:

* ``outcome_inputs``: what a step adds to the history, ``[u_t, r_{t-1} u_t]``: the network's input
  ``u_t`` (``agent.inputs``: the observation, the one-hot of the previous action, the previous
  reward) and the same vector gated by the previous reward. For a bandit, ``u_t`` holds the
  pulled arm and ``r_{t-1} u_t`` the arm that paid, so their sums are the counts.
* ``running_sums``: their sums over the history so far (a bandit's pulls and successes per arm,
  the sufficient statistics of the Beta posterior: the hand-built upper reference).
* ``exponential_traces``: their exponentially weighted means at several time constants, an
  untrained linear reservoir with leak ``w = exp(-1 / tau)``. The trace is normalised,
  ``e_t = sum_s w^(t-s) v_s / sum_s w^(t-s)``, so as the time constant grows (``w -> 1``) it
  becomes the running mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metabelief.agents.base import Agent
from metabelief.rollout import Trajectory, history_inputs

DEFAULT_TIME_CONSTANTS = (1.0, 4.0, 16.0, 64.0)


def outcome_inputs(agent: Agent, history: Trajectory) -> jax.Array:
    """``float32[T, N, 2 I]``: the network's input ``u_t`` at each step and ``r_{t-1} u_t`` (zero
    at the first step, which has no previous reward)."""
    inputs = history_inputs(agent, history)  # [T, N, I]
    prev_rewards = jnp.concatenate([jnp.zeros_like(history.rewards[:1]), history.rewards[:-1]])  # [T, N]
    return jnp.concatenate([inputs, prev_rewards[..., None] * inputs], axis=-1)


@jax.jit
def running_sums(inputs: jax.Array) -> jax.Array:
    """``[T, N, d]``: the sum of ``inputs [T, N, d]`` over steps 0..t, at each step t."""
    return jnp.cumsum(inputs.astype(jnp.float32), axis=0)


def exponential_traces(inputs: jax.Array, time_constants: Sequence[float]) -> jax.Array:
    """``float32[T, N, K d]``: the normalised exponential trace of ``inputs [T, N, d]`` for each of
    the ``K`` time constants (in steps), blocks in their order."""
    time_constants = check_time_constants(time_constants)
    leaks = jnp.asarray([math.exp(-1.0 / tau) for tau in time_constants], jnp.float32)  # [K]
    return _traces(inputs.astype(jnp.float32), leaks)


@jax.jit
def _traces(inputs: jax.Array, leaks: jax.Array) -> jax.Array:
    def step(carry, values):  # values [N, d]
        weighted, total = carry  # [N, K, d], [K]
        weighted = leaks[:, None] * weighted + values[:, None, :]
        total = leaks * total + 1.0
        return (weighted, total), (weighted / total[:, None]).reshape(values.shape[0], -1)

    num_tasks, size = inputs.shape[1:]
    start = (jnp.zeros((num_tasks, leaks.shape[0], size), jnp.float32), jnp.zeros_like(leaks))
    return jax.lax.scan(step, start, inputs)[1]


def check_time_constants(time_constants: Sequence[float]) -> tuple[float, ...]:
    """Positive finite numbers, at least one, none repeated."""
    if isinstance(time_constants, (str, bytes)) or not np.iterable(time_constants) or not time_constants:
        raise ValueError(f"trace_time_constants must be a non-empty sequence, got {time_constants!r}")
    checked = []
    for tau in time_constants:
        if (
            isinstance(tau, bool)
            or not isinstance(tau, (int, float, np.integer, np.floating))
            or not 0 < tau < math.inf
        ):
            raise ValueError(f"trace_time_constants must be positive finite numbers, got {time_constants!r}")
        checked.append(float(tau))
    if len(set(checked)) != len(checked):
        raise ValueError(f"trace_time_constants must be distinct, got {time_constants!r}")
    return tuple(checked)
