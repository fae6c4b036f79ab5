"""Reference policies that act from the exact belief, run on the same tasks as the agent.

A belief policy is a pure function ``policy(key, belief, obs) -> action`` for ONE task (vmapped
by ``run_policy``), so it sees exactly what a Bayesian agent knows: the posterior and the current
observation, nothing else.
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
from metabelief.tasks.gridworld import GoalBelief, Gridworld
from metabelief.testing.random_rollout import belief_policy_rollout

BeliefPolicy = Callable[[jax.Array, PyTree, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class RandomPolicy:
    """Uniformly random actions, ignoring the belief."""

    num_actions: int

    def __call__(self, key: jax.Array, belief: PyTree, obs: jax.Array) -> jax.Array:
        del belief, obs
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

    def __call__(self, key: jax.Array, belief: BetaBelief, obs: jax.Array) -> jax.Array:
        del obs
        draw = jax.random.beta(key, belief.alpha, belief.beta)
        if isinstance(self.family, DependentBandit):
            return (draw < 0.5).astype(jnp.int32)  # arm 1 pays 1 - p
        return jnp.argmax(draw).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class NearestCandidate:
    """Walks a shortest path to the nearest goal candidate the belief still allows (``gridworld``).

    The belief-greedy explorer: it rules candidates out by visiting them, nearest first (ties
    broken at random), and once the goal is known it walks the shortest path back to it after
    every return to the start.
    """

    family: Gridworld

    def __post_init__(self):
        if not isinstance(self.family, Gridworld):
            raise ValueError(f"nearest_candidate needs a gridworld family, got {self.family!r}")

    def __call__(self, key: jax.Array, belief: GoalBelief, obs: jax.Array) -> jax.Array:
        distances = jnp.asarray(self.family.distance_table())
        goal_cells = jnp.asarray(self.family.goal_cells())
        position = jnp.argmax(obs)
        to_candidates = jnp.where(belief.possible, distances[position, goal_cells], jnp.iinfo(jnp.int32).max)
        nearest = to_candidates == to_candidates.min()
        target = goal_cells[jax.random.choice(key, goal_cells.shape[0], p=nearest / nearest.sum())]
        next_cells = jnp.asarray(self.family.move_table())[position]  # [4]
        return jnp.argmax(distances[next_cells, target] < distances[position, target]).astype(jnp.int32)


def random_policy(family: TaskFamily) -> RandomPolicy:
    """Uniformly random actions over ``family``'s actions."""
    return RandomPolicy(family.num_actions)


def thompson_sampling(family: TaskFamily) -> ThompsonSampling:
    """Thompson sampling on ``family``'s exact Beta posterior."""
    return ThompsonSampling(family)


def nearest_candidate(family: Gridworld) -> NearestCandidate:
    """The belief-greedy explorer of a gridworld: the nearest goal candidate still possible."""
    return NearestCandidate(family)


def run_policy(
    family: TaskFamily, policy: BeliefPolicy, key: jax.Array, tasks: PyTree, num_steps: int | None = None
) -> tuple[jax.Array, jax.Array]:
    """Runs ``policy`` on a batch of tasks with the exact belief in lockstep.

    Returns:
      ``(actions int32[T, N], rewards float32[T, N])``, T = ``num_steps`` (default: the horizon).
    """
    num_tasks = jax.tree.leaves(tasks)[0].shape[0]
    num_steps = family.horizon if num_steps is None else num_steps

    def policy_actions(policy_key, beliefs, obs):
        return jax.vmap(policy)(jax.random.split(policy_key, num_tasks), beliefs, obs)

    rollout = belief_policy_rollout(family, key, tasks, num_steps, policy_actions)
    return rollout.actions, rollout.rewards
