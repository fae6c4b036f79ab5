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
from metabelief.testing.random_rollout import RandomRollout, belief_policy_rollout

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
class BeliefGreedy:
    """Takes the action with the highest posterior expected reward now (ties broken at random).

    Myopic: it never explores for the sake of information. Defined for families that provide
    ``expected_rewards(belief, obs)`` (the bandits, ``two_step``).
    """

    family: TaskFamily

    def __post_init__(self):
        if not callable(getattr(self.family, "expected_rewards", None)):
            raise ValueError(
                f"belief_greedy needs a family with expected_rewards(belief, obs), got {self.family!r}"
            )

    def __call__(self, key: jax.Array, belief: PyTree, obs: jax.Array) -> jax.Array:
        expected = self.family.expected_rewards(belief, obs)
        best = expected == expected.max()
        return jax.random.choice(key, expected.shape[0], p=best / best.sum()).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class QLearning:
    """Model-free TD learning of each action's value from its rewards, softmax choice.

    Memory: ``Q float32[num_actions]``, starting at ``initial_value``; after taking ``a`` and
    receiving ``r``: ``Q[a] += learning_rate * (r - Q[a])``. It ignores observations, so on the
    two-step task it learns first-stage action values from the final reward, blind to which
    second-stage state paid (the textbook model-free agent of Daw et al. 2011, one stage).
    """

    num_actions: int
    learning_rate: float = 0.5
    inverse_temperature: float = 5.0
    initial_value: float = 0.5

    def init(self, obs: jax.Array) -> jax.Array:
        del obs
        return jnp.full((self.num_actions,), self.initial_value, jnp.float32)

    def update(
        self, q: jax.Array, obs: jax.Array, action: jax.Array, reward: jax.Array, next_obs: jax.Array
    ) -> jax.Array:
        del obs, next_obs
        return q.at[action].add(self.learning_rate * (reward - q[action]))

    def __call__(self, key: jax.Array, q: jax.Array, obs: jax.Array) -> jax.Array:
        del obs
        return jax.random.categorical(key, self.inverse_temperature * q).astype(jnp.int32)


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


def belief_greedy(family: TaskFamily) -> BeliefGreedy:
    """The action with the highest posterior expected reward (``family.expected_rewards``)."""
    return BeliefGreedy(family)


def nearest_candidate(family: Gridworld) -> NearestCandidate:
    """The belief-greedy explorer of a gridworld: the nearest goal candidate still possible."""
    return NearestCandidate(family)


def run_policy(
    family: TaskFamily, policy: BeliefPolicy, key: jax.Array, tasks: PyTree, num_steps: int | None = None
) -> RandomRollout:
    """Runs ``policy`` on a batch of tasks with the exact belief in lockstep.

    ``policy`` acts on the exact belief, or, when it has ``init`` and ``update`` methods (a
    ``metabelief.testing.random_rollout.Learner``, such as ``QLearning``), on its own memory.

    Returns:
      A ``RandomRollout``: ``actions`` int32[T, N], ``rewards`` float32[T, N], ``obs``
      float32[T + 1, N, O], beliefs ``features`` and ``truth`` [T + 1, N, ...]; T = ``num_steps``
      (default: the horizon).
    """
    num_tasks = jax.tree.leaves(tasks)[0].shape[0]
    num_steps = family.horizon if num_steps is None else num_steps
    learner = policy if callable(getattr(policy, "update", None)) else None

    def policy_actions(policy_key, memories, obs):
        return jax.vmap(policy)(jax.random.split(policy_key, num_tasks), memories, obs)

    return belief_policy_rollout(family, key, tasks, num_steps, policy_actions, learner)
