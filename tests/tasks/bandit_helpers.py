"""Drivers shared by the bandit tests: the family's own methods under jit, over given histories."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from metabelief.tasks.base import PyTree

NO_OBS = jnp.zeros((0,), jnp.float32)  # a bandit observes nothing


@functools.partial(jax.jit, static_argnames="family")
def belief_features_along(family, actions: jax.Array, rewards: jax.Array) -> jax.Array:
    """Belief features at the start and after each transition of a batch of histories.

    Args:
      family: the task family (static: one compile per family and history shape).
      actions: int32[B, T] pulled arms.
      rewards: float32[B, T] rewards in {0, 1}.

    Returns:
      float32[B, T + 1, F]; row 0 is the feature vector of ``belief_init``.
    """

    def one_history(actions, rewards):
        initial = family.belief_init(NO_OBS)

        def update(belief, transition):
            action, reward = transition
            belief = family.belief_update(belief, NO_OBS, action, reward, NO_OBS)
            return belief, family.belief_features(belief)

        _, features = jax.lax.scan(update, initial, (actions, rewards))  # [T, F]
        return jnp.concatenate([family.belief_features(initial)[None], features])

    return jax.vmap(one_history)(actions, rewards)


def run_beliefs(family, actions: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    features = belief_features_along(
        family, jnp.asarray(actions, jnp.int32), jnp.asarray(rewards, jnp.float32)
    )
    assert features.dtype == jnp.float32
    return np.asarray(features)


@functools.partial(jax.jit, static_argnames=("family", "num_tasks"))
def sample_tasks(family, key: jax.Array, num_tasks: int) -> PyTree:
    return jax.vmap(family.sample_task)(jax.random.split(key, num_tasks))


@functools.partial(jax.jit, static_argnames=("family", "num_steps"))
def random_rollout(family, key: jax.Array, tasks, num_steps: int) -> dict[str, jax.Array]:
    """Steps a batch of given tasks ``num_steps`` times with uniformly random arms.

    Returns:
      ``reset_time`` int32[N], ``reset_obs`` float32[N, 0], and per step (leading [T, N]):
      ``actions``, ``rewards``, ``dones``, ``time``, ``obs`` [T, N, 0], ``truth`` [T, N, D].
    """
    num_tasks = jax.tree.leaves(tasks)[0].shape[0]
    reset_key, action_key, step_key = jax.random.split(key, 3)
    states, reset_obs = jax.vmap(family.reset)(jax.random.split(reset_key, num_tasks), tasks)
    actions = jax.random.randint(action_key, (num_steps, num_tasks), 0, family.num_actions, jnp.int32)
    step_keys = jax.random.split(step_key, (num_steps, num_tasks))

    def one_step(states, inputs):
        keys, actions = inputs
        states, obs, rewards, dones = jax.vmap(family.step)(keys, tasks, states, actions)
        truth = jax.vmap(family.true_features)(tasks, states)
        return states, dict(
            actions=actions, rewards=rewards, dones=dones, time=states.time, obs=obs, truth=truth
        )

    _, per_step = jax.lax.scan(one_step, states, (step_keys, actions))
    return dict(reset_time=states.time, reset_obs=reset_obs, **per_step)


def assert_rewards_follow(probs: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
    """Per (task, arm) success counts within 5 standard errors (plus one count) of n * p.

    Args:
      probs: float64 [N, K] true success probabilities.
      actions, rewards: [T, N].
    """
    num_arms = probs.shape[1]
    pulled = actions[..., None] == np.arange(num_arms)  # [T, N, K]
    pulls = pulled.sum(axis=0)  # [N, K]
    successes = (pulled * rewards[..., None]).sum(axis=0)
    expected = pulls * probs
    variance = pulls * probs * (1.0 - probs)
    # The extra count keeps a single success on a near-zero arm from looking like 5 sigma.
    assert (np.abs(successes - expected) <= 5.0 * np.sqrt(variance) + 1.0).all()
    # Pooled over tasks each arm's standardised excess of successes is a plain normal.
    pooled_z = (successes - expected).sum(axis=0) / np.sqrt(variance.sum(axis=0))
    assert (np.abs(pooled_z) < 5.0).all(), pooled_z
