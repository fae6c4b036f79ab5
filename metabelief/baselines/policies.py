"""Reference policies that act from the exact belief, run on the same tasks as the agent.

A belief policy is a pure function ``policy(key, belief, obs) -> action`` for ONE task (vmapped
by ``run_policy``), so it sees exactly what a Bayesian agent knows: the posterior and the current
observation, nothing else.
The built-in policies are frozen dataclasses, so equal policies are equal static jit arguments.
They take any family with the capability they need (``metabelief.tasks.base``), whatever its
class: ``thompson_sampling`` ``BetaArms`` or ``DependentArms``, ``belief_greedy``
``ExpectedRewards``, ``nearest_candidate`` ``GoalCandidates``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from metabelief.rollout import BeliefActor, LearnerActor, Trajectory, lockstep
from metabelief.tasks.base import (
    BetaArms,
    DependentArms,
    ExpectedRewards,
    GoalCandidates,
    PyTree,
    TaskFamily,
    require_capability,
)
from metabelief.tasks.dependent_bandit import support_log_posterior

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

    Defined by capability (``metabelief.tasks.base``):

    * ``BetaArms`` (``bernoulli_bandit``): each arm's p drawn from its Beta posterior; the
      highest draw is played.
    * ``DependentArms`` (``dependent_bandit``; arm 0 pays p, arm 1 pays 1 - p): p drawn from its
      posterior, Beta(1 + evidence for p, 1 + evidence against) when p ~ U[0, 1], else the
      categorical posterior over ``p_support``; arm 1 when the draw is below 1/2, else arm 0.
    """

    family: TaskFamily

    def __post_init__(self):
        require_capability("thompson_sampling", self.family, BetaArms, DependentArms)

    def __call__(self, key: jax.Array, belief: PyTree, obs: jax.Array) -> jax.Array:
        del obs
        if isinstance(self.family, BetaArms):
            posterior = self.family.beta_posterior(belief)
            return jnp.argmax(jax.random.beta(key, posterior.alpha, posterior.beta)).astype(jnp.int32)
        evidence = self.family.evidence_counts(belief)  # [for p, against p]
        support = self.family.p_support
        if support is None:
            draw = jax.random.beta(key, 1.0 + evidence[0], 1.0 + evidence[1])
        else:
            index = jax.random.categorical(key, support_log_posterior(support, evidence))
            draw = jnp.asarray(support, jnp.float32)[index]
        return (draw < 0.5).astype(jnp.int32)  # arm 1 pays 1 - p


@dataclasses.dataclass(frozen=True)
class BeliefGreedy:
    """Takes the action with the highest posterior expected reward now (ties broken at random).

    Myopic: it never explores for the sake of information. Defined for families with the
    ``ExpectedRewards`` capability, ``expected_rewards(belief, obs)`` (the bandits, ``two_step``).
    """

    family: TaskFamily

    def __post_init__(self):
        require_capability("belief_greedy", self.family, ExpectedRewards)

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
    """Walks a shortest path to the nearest goal candidate the belief still allows.

    The belief-greedy explorer of a family with the ``GoalCandidates`` capability (``gridworld``):
    it rules candidates out by visiting them, nearest first (ties broken at random), and once the
    goal is known it walks the shortest path back to it after every return to the start.
    """

    family: TaskFamily

    def __post_init__(self):
        require_capability("nearest_candidate", self.family, GoalCandidates)

    def __call__(self, key: jax.Array, belief: PyTree, obs: jax.Array) -> jax.Array:
        distances = jnp.asarray(self.family.distance_table())
        goal_cells = jnp.asarray(self.family.goal_cells())
        position = self.family.current_cell(obs)
        possible = self.family.possible_goals(belief)
        to_candidates = jnp.where(possible, distances[position, goal_cells], jnp.iinfo(jnp.int32).max)
        nearest = to_candidates == to_candidates.min()
        target = goal_cells[jax.random.choice(key, goal_cells.shape[0], p=nearest / nearest.sum())]
        next_cells = jnp.asarray(self.family.move_table())[position]  # [4]
        return jnp.argmax(distances[next_cells, target] < distances[position, target]).astype(jnp.int32)


def random_policy(family: TaskFamily) -> RandomPolicy:
    """Uniformly random actions over ``family``'s actions."""
    return RandomPolicy(family.num_actions)


def thompson_sampling(family: TaskFamily) -> ThompsonSampling:
    """Thompson sampling on ``family``'s exact posterior (``BetaArms`` or ``DependentArms``)."""
    return ThompsonSampling(family)


def belief_greedy(family: TaskFamily) -> BeliefGreedy:
    """The action with the highest posterior expected reward (``ExpectedRewards``)."""
    return BeliefGreedy(family)


def nearest_candidate(family: TaskFamily) -> NearestCandidate:
    """The belief-greedy explorer of a gridworld (``GoalCandidates``): the nearest goal candidate
    still possible."""
    return NearestCandidate(family)


def run_policy(
    family: TaskFamily, policy: BeliefPolicy, key: jax.Array, tasks: PyTree, num_steps: int | None = None
) -> Trajectory:
    """Runs ``policy`` on a batch of tasks with the exact belief in lockstep (``metabelief.rollout``).

    ``policy`` acts on the exact belief, or, when it has ``init`` and ``update`` methods (a
    ``metabelief.rollout.Learner``, such as ``QLearning``), on its own memory.

    Returns:
      A ``Trajectory`` without network outputs: ``actions`` int32[T, N], ``rewards`` float32[T, N],
      ``obs`` float32[T + 1, N, O], the beliefs acted on ``features`` and the ``truth``
      [T, N, ...]; T = ``num_steps`` (default: the horizon).
    """
    learner = callable(getattr(policy, "update", None))
    actor = LearnerActor(policy) if learner else BeliefActor(policy)
    return lockstep(family, actor, key=key, tasks=tasks, num_steps=num_steps).trajectory
