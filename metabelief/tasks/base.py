"""The task-family contract: a distribution over hidden tasks and its exact Bayes filter.

A task family is an immutable object whose hyper-parameters are static Python fields. Every
method is a pure, jittable function of arrays written for ONE task; callers vmap it over tasks
and scan it over time. The task is sampled outside the environment (``sample_task``) and passed
to ``reset`` and ``step``, so an episode never silently changes task.

Shapes and dtypes (per task, before any vmap):

* ``key``: a JAX PRNG key (typed ``jax.random.key`` or raw ``uint32[2]``).
* ``task``, ``state``, ``belief``: pytrees of arrays, fixed structure, shapes and dtypes.
* ``obs``: ``float32[obs_size]`` (``obs_size`` may be 0).
* ``action``: ``int32[]`` in ``[0, num_actions)``.
* ``reward``: ``float32[]``.
* ``done``: ``bool[]``, true once ``horizon`` steps of the episode have been taken.
* ``belief_features(belief)``: ``float32[F]``; its first ``D`` entries are the posterior mean of
  ``true_features(task, state)``, ``float32[D]``.

Optional capabilities: a family may also implement any of the ``typing.Protocol`` classes below
(``ExpectedRewards``, ``BeliefVariance``, ``BetaArms``, ``DependentArms``, ``GoalCandidates``,
``FiniteOutcomes``, ``ReferencePolicies``).
Nothing registers them: a family has a capability when it has the attributes and methods, which
``isinstance(family, BetaArms)`` tests. Each one unlocks the baselines and analyses that need it
(``metabelief.baselines`` and ``metabelief.analysis`` select by capability, never by class), and
``metabelief.check_family`` checks every capability a family declares (its step 9; a
declared ``belief_variance`` is check 8).

* ``expected_rewards(belief, obs) -> float32[num_actions]``, the posterior expected reward of each
  action in the current state; ``metabelief.baselines.belief_greedy`` acts on it.
* ``belief_variance(belief) -> float32[D]``, the posterior variance of each entry of
  ``true_features`` (so ``E[(truth - mean)^2 | history]``, not the spread of a parameter behind it);
  ``metabelief.check_family`` then tests it against the squared errors of the posterior
  mean (its check 8).
* ``BetaArms``: independent Beta-Bernoulli arms (``num_arms``, ``prior_a``, ``prior_b``,
  ``beta_posterior(belief)``): Thompson sampling, Gittins, UCB1, (epsilon-)greedy, the exact
  Bayes-optimal DP and the state-machine simulation.
* ``DependentArms``: two arms paying p and 1 - p (``p_support``, ``evidence_counts(belief)``): the
  Bayes-optimal DP and Thompson sampling.
* ``GoalCandidates``: a deterministic grid with a hidden goal among candidate cells: the
  nearest-candidate explorer.
* ``FiniteOutcomes``: ``outcomes(belief, obs, action)``, the finite posterior predictive of a step:
  the Bayes-optimal policy by dynamic programming over the belief tree.
* ``ReferencePolicies``: ``reference_policies()``, the family's own reference agents.

Timing: the belief after ``belief_update`` on transition t (``obs`` -> ``next_obs``) describes the
hidden quantity in the state that ``step`` returned at t, the state the agent acts in next.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import jax
import numpy as np

if TYPE_CHECKING:
    from metabelief.tasks.bandit_base import BetaBelief

PyTree = Any


class TaskFamily(abc.ABC):
    """A distribution over hidden tasks, their environment dynamics and the exact belief.

    Subclasses are frozen dataclasses that validate their fields in ``__post_init__`` and
    provide the three sizes as attributes or properties:

    * ``num_actions`` (int): number of discrete actions.
    * ``obs_size`` (int): length of the float observation vector, 0 when there is none.
    * ``horizon`` (int): steps per episode; one episode is one task.
    """

    num_actions: int
    obs_size: int
    horizon: int

    @abc.abstractmethod
    def sample_task(self, key: jax.Array) -> PyTree:
        """Draws a task from the prior. Returns a pytree of arrays (the hidden task)."""

    @abc.abstractmethod
    def reset(self, key: jax.Array, task: PyTree) -> tuple[PyTree, jax.Array]:
        """Starts an episode of ``task``. Returns ``(state, obs)``, obs ``float32[obs_size]``."""

    @abc.abstractmethod
    def step(
        self, key: jax.Array, task: PyTree, state: PyTree, action: jax.Array
    ) -> tuple[PyTree, jax.Array, jax.Array, jax.Array]:
        """Takes ``action`` (``int32[]``). Returns ``(state, obs, reward, done)``.

        ``obs`` is ``float32[obs_size]``, ``reward`` ``float32[]`` and ``done`` ``bool[]``.
        Stepping past the horizon keeps the same task (there is no auto-reset).
        """

    @abc.abstractmethod
    def belief_init(self, obs: jax.Array) -> PyTree:
        """The exact posterior over the task given the first observation (from ``reset``)."""

    @abc.abstractmethod
    def belief_update(
        self,
        belief: PyTree,
        obs: jax.Array,
        action: jax.Array,
        reward: jax.Array,
        next_obs: jax.Array,
    ) -> PyTree:
        """Exact Bayes update of ``belief`` on one transition ``(obs, action, reward, next_obs)``."""

    @abc.abstractmethod
    def belief_features(self, belief: PyTree) -> jax.Array:
        """The probe target, ``float32[F]``; it opens with the posterior mean of the truth."""

    @abc.abstractmethod
    def true_features(self, task: PyTree, state: PyTree) -> jax.Array:
        """The true value of what the first entries of ``belief_features`` estimate, ``float32[D]``."""


# --- Optional capabilities ---------------------------------------------------------------------
# Structural: a family has one when it has its members (``isinstance`` checks names, not
# signatures, and a method set to None counts as absent). ``metabelief.check_family``
# checks the semantics of every capability a family has.


@runtime_checkable
class ExpectedRewards(Protocol):
    """The posterior expected reward of each action in the current state.

    ``expected_rewards(belief, obs) -> float32[num_actions]``: entry a is ``E[reward | history,
    take a now]`` under the exact belief ``belief`` and the current observation ``obs``, so over
    many tasks the reward that follows action a from belief b averages ``expected_rewards(b,
    obs)[a]``.

    Unlocks: ``metabelief.baselines.belief_greedy``. Built in: the bandits, ``two_step``.
    """

    def expected_rewards(self, belief: PyTree, obs: jax.Array) -> jax.Array: ...


@runtime_checkable
class BeliefVariance(Protocol):
    """The posterior variance of each entry of the truth.

    ``belief_variance(belief) -> float32[D]``: ``E[(truth - mean)^2 | history]`` for each entry of
    ``true_features`` (D of them), ``mean`` the posterior mean that opens ``belief_features``; the
    variance of the truth itself, not the spread of a parameter behind it.

    Unlocks: check 8 of ``metabelief.check_family`` on a continuous truth (the squared
    error of the posterior mean must average this variance). Built in: the bandits.
    """

    def belief_variance(self, belief: PyTree) -> jax.Array: ...


@runtime_checkable
class BetaArms(Protocol):
    """Independent Beta-Bernoulli arms, as ``bernoulli_bandit``.

    What must hold for the baselines that use it to be right:

    * one action per arm (``num_actions == num_arms``) and one pull per step: action k pulls arm k,
      which pays reward 1 with probability p_k, else 0, with no observation that informs p;
    * the task draws p_k ~ Beta(``prior_a``, ``prior_b``) independently for each arm, fixed for the
      episode of ``horizon`` pulls;
    * ``beta_posterior(belief)`` is the exact posterior as a ``metabelief.tasks.BetaBelief`` with
      ``alpha = prior_a + successes`` and ``beta = prior_b + failures`` of each arm, each
      ``float32[num_arms]``; its means ``alpha / (alpha + beta)`` open ``belief_features``.

    Unlocks: ``thompson_sampling``, ``gittins``, ``ucb1``, ``greedy``, ``epsilon_greedy``,
    ``bayes_optimal`` (exact DP) and ``metabelief.analysis.state_machine.simulate``. (UCB1 and
    the greedy policies read only the observed counts; Gittins, Thompson and the DP also rely on
    the prior.) Built in: ``bernoulli_bandit``.
    """

    num_arms: int
    prior_a: float
    prior_b: float

    def beta_posterior(self, belief: PyTree) -> BetaBelief: ...


@runtime_checkable
class DependentArms(Protocol):
    """Two arms with complementary success probabilities, as ``dependent_bandit``.

    What must hold for the baselines that use it to be right:

    * two actions; arm 0 pays reward 1 with probability p, arm 1 with probability 1 - p, else 0;
      one pull per step, no observation that informs p;
    * ``p_support``: None when p ~ U[0, 1], else the tuple of values p is uniform over; p is fixed
      for the episode of ``horizon`` pulls;
    * ``evidence_counts(belief) -> float32[2]``: the outcomes so far whose likelihood is p (a
      success on arm 0 or a failure on arm 1) and those whose likelihood is 1 - p, a sufficient
      statistic of the exact posterior over p.

    Unlocks: ``bayes_optimal`` (exact DP) and ``thompson_sampling`` (p drawn from the Beta posterior,
    or from the categorical posterior over ``p_support``). Built in: ``dependent_bandit``.
    """

    p_support: tuple[float, ...] | None

    def evidence_counts(self, belief: PyTree) -> jax.Array: ...


@runtime_checkable
class GoalCandidates(Protocol):
    """A hidden goal among candidate cells of a world with deterministic moves, as ``gridworld``.

    What must hold for the baselines that use it to be right:

    * ``move_table() -> int[C, num_actions]``: action a from cell c enters ``move_table()[c, a]``
      (a step without reward lands there);
    * ``distance_table() -> int[C, C]``: the fewest moves of ``move_table`` from each cell to each
      cell (unreachable pairs: C or more);
    * ``goal_cells() -> int[G]``: the candidate goals' cells; the hidden goal is one of them and
      entering it pays;
    * ``current_cell(obs) -> int32[]``: the cell the agent is in, read from the observation;
    * ``possible_goals(belief) -> bool[G]``: the candidates the history has not ruled out, so the
      support of the posterior over candidates (``belief_features`` opens with that posterior).

    Unlocks: ``metabelief.baselines.nearest_candidate``. Built in: ``gridworld``.
    """

    def move_table(self) -> np.ndarray: ...

    def distance_table(self) -> np.ndarray: ...

    def goal_cells(self) -> np.ndarray: ...

    def current_cell(self, obs: jax.Array) -> jax.Array: ...

    def possible_goals(self, belief: PyTree) -> jax.Array: ...


@runtime_checkable
class FiniteOutcomes(Protocol):
    """The posterior predictive distribution of a step, over finitely many outcomes.

    ``outcomes(belief, obs, action) -> (probs float32[K], rewards float32[K], next_obs
    float32[K, obs_size])``: taking ``action`` now, in the current state ``obs`` with the exact
    belief ``belief``, returns reward ``rewards[k]`` and observation ``next_obs[k]`` with
    probability ``probs[k]`` (the probabilities sum to 1; K is fixed by the family, and entries of
    probability 0 are padding). Every outcome a step can produce is listed.

    Unlocks: ``metabelief.baselines.bayes_optimal`` for any family, by exact dynamic programming
    over the tree of beliefs the outcomes reach (as long as they stay few). Built in:
    ``oracle_bandit``, ``tiger``.
    """

    def outcomes(
        self, belief: PyTree, obs: jax.Array, action: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]: ...


@runtime_checkable
class ReferencePolicies(Protocol):
    """The family's own reference agents, beside the generic ones.

    ``reference_policies() -> dict[str, policy]``: each a belief policy ``policy(key, belief, obs)
    -> int32[]`` (``metabelief.baselines.BeliefPolicy``) that a reader of the task would compare an
    agent with (e.g. the oracle bandit's "ask the oracle first").

    Unlocks: the family's references in ``metabelief run family``. Built in: ``oracle_bandit``,
    ``latent_goal_cart``.
    """

    def reference_policies(self) -> dict: ...


CAPABILITIES = (
    ExpectedRewards,
    BeliefVariance,
    BetaArms,
    DependentArms,
    GoalCandidates,
    FiniteOutcomes,
    ReferencePolicies,
)

_SUMMARIES = {
    ExpectedRewards: "the posterior expected reward of each action: expected_rewards(belief, obs)",
    BeliefVariance: "the posterior variance of the truth: belief_variance(belief)",
    BetaArms: "independent Beta-Bernoulli arms: num_arms, prior_a, prior_b, beta_posterior(belief)",
    DependentArms: "two arms paying p and 1 - p: p_support, evidence_counts(belief)",
    GoalCandidates: (
        "a hidden goal among candidate cells: move_table(), distance_table(), goal_cells(), "
        "current_cell(obs), possible_goals(belief)"
    ),
    FiniteOutcomes: "the finite posterior predictive of a step: outcomes(belief, obs, action)",
    ReferencePolicies: "the family's own reference agents: reference_policies()",
}


def describe_capability(capability: type) -> str:
    """``"the BetaArms capability (independent Beta-Bernoulli arms: ...)"``, for messages."""
    summary = _SUMMARIES.get(capability)
    return f"the {capability.__name__} capability" + (f" ({summary})" if summary else "")


def require_capability(user: str, family: object, *capabilities: type) -> None:
    """Raises ``ValueError`` naming what ``user`` needs unless ``family`` has one of ``capabilities``."""
    if any(isinstance(family, capability) for capability in capabilities):
        return
    needed = " or ".join(describe_capability(capability) for capability in capabilities)
    raise ValueError(f"{user} needs a family with {needed}; got {family!r}")
