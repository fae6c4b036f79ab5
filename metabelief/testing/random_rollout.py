"""Rollouts of a family with its belief in lockstep: random actions (the data the checks test) or
actions chosen from the belief (the baselines)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import chex
import jax
import jax.numpy as jnp

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


class Learner(Protocol):
    """A non-Bayesian agent's own memory of ONE task's history (e.g. Q-values), updated per step."""

    def init(self, obs: jax.Array) -> PyTree:
        """The memory before the first step, given the first observation."""

    def update(
        self, memory: PyTree, obs: jax.Array, action: jax.Array, reward: jax.Array, next_obs: jax.Array
    ) -> PyTree:
        """The memory after one transition."""


def sample_tasks(family: TaskFamily, key: jax.Array, num_tasks: int) -> PyTree:
    """``num_tasks`` tasks from the family's prior: its task pytree with a leading [num_tasks] axis."""
    return jax.vmap(family.sample_task)(jax.random.split(key, num_tasks))


def random_rollout(family: TaskFamily, key: jax.Array, tasks: PyTree, num_steps: int) -> RandomRollout:
    """Steps a batch of ``tasks`` ``num_steps`` times with uniformly random actions.

    One ``lax.scan`` over time of the family vmapped over tasks; jit it with ``num_steps`` static.

    Args:
      family: the task family.
      key: PRNG key for resets, actions and environment noise.
      tasks: task pytree with a leading [N] axis (e.g. from ``sample_tasks``).
      num_steps: T, the number of transitions.

    Returns:
      A ``RandomRollout`` with arrays of shape ``[T (+ 1), N, ...]``.
    """
    num_tasks = jax.tree.leaves(tasks)[0].shape[0]

    def uniform_actions(action_key, beliefs, obs):
        del beliefs, obs
        return jax.random.randint(action_key, (num_tasks,), 0, family.num_actions, jnp.int32)

    return belief_policy_rollout(family, key, tasks, num_steps, uniform_actions)


def belief_policy_rollout(
    family: TaskFamily,
    key: jax.Array,
    tasks: PyTree,
    num_steps: int,
    choose_actions: Callable[[jax.Array, PyTree, jax.Array], jax.Array],
    learner: Learner | None = None,
) -> RandomRollout:
    """Like ``random_rollout``, with actions from ``choose_actions(key, beliefs, obs) -> int32[N]``.

    ``beliefs`` is the batch of exact beliefs before each transition and ``obs`` the batch of
    current observations; a policy that acts on them (``metabelief.baselines``) sees exactly what
    a Bayesian agent knows. With a ``learner`` (e.g. a Q-learning agent), ``choose_actions`` is
    given the batch of the learner's own memories instead of the beliefs; the exact belief is
    still run in lockstep for ``features``.
    """
    num_tasks = jax.tree.leaves(tasks)[0].shape[0]
    reset_key, scan_key = jax.random.split(key)
    states, obs = jax.vmap(family.reset)(jax.random.split(reset_key, num_tasks), tasks)
    beliefs = jax.vmap(family.belief_init)(obs)
    memories = beliefs if learner is None else jax.vmap(learner.init)(obs)
    features = jax.vmap(family.belief_features)
    truth = jax.vmap(family.true_features)

    def transition(carry, step_key):
        states, obs, beliefs, memories = carry
        action_key, env_key = jax.random.split(step_key)
        actions = choose_actions(action_key, memories, obs)
        env_keys = jax.random.split(env_key, num_tasks)
        states, next_obs, rewards, dones = jax.vmap(family.step)(env_keys, tasks, states, actions)
        beliefs = jax.vmap(family.belief_update)(beliefs, obs, actions, rewards, next_obs)
        if learner is None:
            memories = beliefs
        else:
            memories = jax.vmap(learner.update)(memories, obs, actions, rewards, next_obs)
        record = (next_obs, features(beliefs), truth(tasks, states), actions, rewards, dones)
        return (states, next_obs, beliefs, memories), record

    _, (step_obs, step_features, step_truth, actions, rewards, dones) = jax.lax.scan(
        transition, (states, obs, beliefs, memories), jax.random.split(scan_key, num_steps)
    )
    return RandomRollout(
        obs=jnp.concatenate([obs[None], step_obs]),
        features=jnp.concatenate([features(beliefs)[None], step_features]),
        truth=jnp.concatenate([truth(tasks, states)[None], step_truth]),
        actions=actions,
        rewards=rewards,
        dones=dones,
    )
