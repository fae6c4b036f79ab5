"""Reference policies that act from the exact belief, run on the same tasks as the agent.

A belief policy is a pure function ``policy(key, belief) -> action`` for ONE task (vmapped by
``run_policy``), so it sees exactly what a Bayesian agent knows: the posterior, nothing else.
The built-in policies are frozen dataclasses, so equal policies are equal static jit arguments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from metabelief.tasks.bandit_base import BetaBelief
from metabelief.tasks.base import PyTree, TaskFamily
from metabelief.tasks.bernoulli_bandit import BernoulliBandit
from metabelief.tasks.dependent_bandit import DependentBandit
from metabelief.testing.random_rollout import belief_policy_rollout

BeliefPolicy = Callable[[jax.Array, PyTree], jax.Array]


@dataclasses.dataclass(frozen=True)
class RandomPolicy:
    """Uniformly random actions, ignoring the belief."""

    num_actions: int

    def __call__(self, key: jax.Array, belief: PyTree) -> jax.Array:
        return jax.random.randint(key, (), 0, self.num_actions, jnp.int32)


@dataclasses.dataclass(frozen=True)
class ThompsonSampling:
    """Draws the task from the posterior and plays its best arm (Thompson 1933).

    Defined for Beta posteriors: ``bernoulli_bandit`` (one Beta per arm) and the continuous
    ``dependent_bandit`` (one Beta over p; arm 0 pays p, arm 1 pays 1 - p).
    """

    family: TaskFamily

    def __post_init__(self):
        if not isinstance(self.family, BernoulliBandit | DependentBandit):
            raise ValueError(f"thompson_sampling needs a Beta-posterior bandit family, got {self.family!r}")

    def __call__(self, key: jax.Array, belief: BetaBelief) -> jax.Array:
        draw = jax.random.beta(key, belief.alpha, belief.beta)
        if isinstance(self.family, DependentBandit):
            return (draw < 0.5).astype(jnp.int32)  # arm 1 pays 1 - p
        return jnp.argmax(draw).astype(jnp.int32)


def random_policy(family: TaskFamily) -> RandomPolicy:
    """Uniformly random actions over ``family``'s actions."""
    return RandomPolicy(family.num_actions)


def thompson_sampling(family: TaskFamily) -> ThompsonSampling:
    """Thompson sampling on ``family``'s exact Beta posterior."""
    return ThompsonSampling(family)


def run_policy(
    family: TaskFamily, policy: BeliefPolicy, key: jax.Array, tasks: PyTree, num_steps: int | None = None
) -> tuple[jax.Array, jax.Array]:
    """Runs ``policy`` on a batch of tasks with the exact belief in lockstep.

    Returns:
      ``(actions int32[T, N], rewards float32[T, N])``, T = ``num_steps`` (default: the horizon).
    """
    num_tasks = jax.tree.leaves(tasks)[0].shape[0]
    num_steps = family.horizon if num_steps is None else num_steps

    def policy_actions(policy_key, beliefs):
        return jax.vmap(policy)(jax.random.split(policy_key, num_tasks), beliefs)

    rollout = belief_policy_rollout(family, key, tasks, num_steps, policy_actions)
    return rollout.actions, rollout.rewards
