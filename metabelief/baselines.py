"""Reference policies that act from the exact belief, run on the same tasks as the agent.

A belief policy is a pure function ``policy(key, belief) -> action`` for ONE task (vmapped by
``run_policy``), so it sees exactly what a Bayesian agent knows: the posterior, nothing else.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from metabelief.tasks.bandit_base import BetaBelief
from metabelief.tasks.base import PyTree, TaskFamily
from metabelief.tasks.bernoulli_bandit import BernoulliBandit
from metabelief.tasks.dependent_bandit import DependentBandit

BeliefPolicy = Callable[[jax.Array, PyTree], jax.Array]


def random_policy(family: TaskFamily) -> BeliefPolicy:
    """Uniformly random actions, ignoring the belief."""
    return lambda key, belief: jax.random.randint(key, (), 0, family.num_actions, jnp.int32)


def thompson_sampling(family: TaskFamily) -> BeliefPolicy:
    """Draws the task from the posterior and plays its best arm (Thompson 1933).

    Defined for Beta posteriors: ``bernoulli_bandit`` (one Beta per arm) and the continuous
    ``dependent_bandit`` (one Beta over p; arm 0 pays p, arm 1 pays 1 - p).
    """
    if isinstance(family, BernoulliBandit):

        def policy(key: jax.Array, belief: BetaBelief) -> jax.Array:
            return jnp.argmax(jax.random.beta(key, belief.alpha, belief.beta)).astype(jnp.int32)

    elif isinstance(family, DependentBandit):

        def policy(key: jax.Array, belief: BetaBelief) -> jax.Array:
            return (jax.random.beta(key, belief.alpha, belief.beta) < 0.5).astype(jnp.int32)

    else:
        raise ValueError(f"thompson_sampling needs a Beta-posterior bandit family, got {family!r}")
    return policy


def run_policy(
    family: TaskFamily, policy: BeliefPolicy, key: jax.Array, tasks: PyTree, num_steps: int | None = None
) -> tuple[jax.Array, jax.Array]:
    """Runs ``policy`` on a batch of tasks with the exact belief in lockstep.

    Returns:
      ``(actions int32[T, N], rewards float32[T, N])``, T = ``num_steps`` (default: the horizon).
    """
    num_tasks = jax.tree.leaves(tasks)[0].shape[0]
    num_steps = family.horizon if num_steps is None else num_steps
    reset_key, scan_key = jax.random.split(key)
    states, obs = jax.vmap(family.reset)(jax.random.split(reset_key, num_tasks), tasks)

    def transition(carry, step_key):
        states, obs, beliefs = carry
        policy_key, env_key = jax.random.split(step_key)
        actions = jax.vmap(policy)(jax.random.split(policy_key, num_tasks), beliefs)
        states, next_obs, rewards, _ = jax.vmap(family.step)(
            jax.random.split(env_key, num_tasks), tasks, states, actions
        )
        beliefs = jax.vmap(family.belief_update)(beliefs, obs, actions, rewards, next_obs)
        return (states, next_obs, beliefs), (actions, rewards)

    carry = (states, obs, jax.vmap(family.belief_init)(obs))
    _, (actions, rewards) = jax.lax.scan(transition, carry, jax.random.split(scan_key, num_steps))
    return actions, rewards
