"""The conformance kit's data: a family stepped with uniformly random actions and its belief in
lockstep (``metabelief.rollout.lockstep`` with ``UniformActions``), with the belief after the last
transition kept too."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from metabelief.rollout import UniformActions, lockstep
from metabelief.tasks.base import PyTree, TaskFamily


@chex.dataclass(frozen=True)
class RandomRollout:
    """Sampled tasks stepped with the belief in lockstep.

    Index 0 of ``features`` and ``truth`` is the start of the episode (``belief_init``), index
    t + 1 follows the t-th transition.
    """

    obs: jax.Array  # float32[T + 1, N, obs_size]: what the belief has seen last
    features: jax.Array  # float32[T + 1, N, F]: belief_features
    truth: jax.Array  # float32[T + 1, N, D]: true_features
    actions: jax.Array  # int32[T, N]
    rewards: jax.Array  # float32[T, N]
    dones: jax.Array  # bool[T, N]


def random_rollout(family: TaskFamily, key: jax.Array, tasks: PyTree, num_steps: int) -> RandomRollout:
    """Steps a batch of ``tasks`` ``num_steps`` times with uniformly random actions.

    One ``lax.scan`` over time of the family vmapped over tasks; jit it with ``num_steps`` static.

    Args:
      family: the task family.
      key: PRNG key for resets, actions and environment noise.
      tasks: task pytree with a leading [N] axis (e.g. from ``metabelief.rollout.sample_tasks``).
      num_steps: T, the number of transitions.

    Returns:
      A ``RandomRollout`` with arrays of shape ``[T (+ 1), N, ...]``.
    """
    run = lockstep(family, UniformActions(family.num_actions), key=key, tasks=tasks, num_steps=num_steps)
    trajectory, last = run.trajectory, run.last
    final_features = jax.vmap(family.belief_features)(last.belief)
    final_truth = jax.vmap(family.true_features)(tasks, last.env_state)
    return RandomRollout(
        obs=trajectory.obs,
        features=jnp.concatenate([trajectory.features, final_features[None]]),
        truth=jnp.concatenate([trajectory.truth, final_truth[None]]),
        actions=trajectory.actions,
        rewards=trajectory.rewards,
        dones=trajectory.dones,
    )
