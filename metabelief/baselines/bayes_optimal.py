"""The Bayes-optimal policy of finite-horizon Bernoulli bandits, by exact dynamic programming.

The belief is a sufficient statistic, so the Bayes-optimal policy is the optimal policy of the
belief MDP: undiscounted total reward over the family's horizon, value

    V(b) = max_a [ P(r = 1 | b, a) (1 + V(b after a success on a)) + P(r = 0 | b, a) V(b after a failure) ]

and V = 0 once the horizon is used up (with a discount ``gamma`` < 1, the two future values are
multiplied by ``gamma``: the policy that maximises the discounted return over the horizon, as an
agent trained at that ``gamma`` does). Every belief here is a function of integer counts, and the
counts' total is the number of pulls made, so the time is known from the counts and the DP runs
backward over that total ("level") with NumPy float64, one vectorised step per level.

(A family with the ``FiniteOutcomes`` capability and neither of the two below is solved over its
belief tree instead: ``metabelief.baselines.belief_tree``; ``bayes_optimal`` picks that for it.)

It takes any family with one of two capabilities of ``metabelief.tasks.base``, whatever its class:

* ``BetaArms`` (``bernoulli_bandit``): the counts are (successes, failures) per arm, read from
  ``beta_posterior(belief)`` minus the prior. The value is symmetric in
  the arms, so a state is the multiset of per-arm counts: the arms' count ids sorted in decreasing
  order. Only ``min(num_arms, horizon)`` columns are kept, since at most ``horizon - 1`` arms can
  have been pulled before the last decision; the arms beyond are untouched (id 0). What fits
  the size limits below (each under ~16 s and 1.4 GB on one CPU core): 2 arms up to horizon 155,
  3 arms 54, 5 arms 29, 10 arms 21, any number of arms at horizon <= 19; not 5 or more arms at
  horizon 100, nor 2 arms at 500.
* ``DependentArms`` (``dependent_bandit``): the counts are the evidence for p and against p
  (``evidence_counts(belief)``; p ~ U[0, 1] or uniform over ``p_support``). Both arms give the
  same information, so the DP is 1-D per level (and its policy is the greedy one: pull arm 0 iff
  E p > 1/2).

The tables are built and cached on plain numbers (arms, horizon, prior; horizon, support), so
equal models share one table whatever family object they come from.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from metabelief.baselines.belief_tree import BeliefTreePolicy, belief_tree_policy, belief_tree_value
from metabelief.tasks.bandit_base import BetaBelief, beta_mean, observed_counts
from metabelief.tasks.base import (
    BetaArms,
    DependentArms,
    ExpectedRewards,
    FiniteOutcomes,
    PyTree,
    TaskFamily,
    require_capability,
)
from metabelief.tasks.dependent_bandit import support_log_posterior
from metabelief.tasks.validation import probability

# Table entries (belief states x columns) above which the DP refuses. On one CPU core 4.4M entries
# (2 arms, horizon 100) take ~2 s; 22M (2 arms, horizon 150) ~12 s and ~1.2 GB.
MAX_TABLE_ENTRIES = 25_000_000
# Successor candidates the forward pass sorts (entries x columns x 2 outcomes): it bounds the wide
# tables of many arms; 50 arms at horizon 19 (3.5e8) take ~10 s and ~1.3 GB.
MAX_SUCCESSOR_ENTRIES = 400_000_000
# Q-values this close to the best are ties (float64 rounding of equal values reached by different sums).
TIE_TOLERANCE = 1e-9


@dataclasses.dataclass(frozen=True, eq=False)
class BayesOptimalTable:
    """Q-values of every belief state the family can reach before its horizon, level by level.

    Level n (n pulls made) holds ``rows[starts[n]:starts[n + 1]]``, sorted lexicographically.
    """

    rows: np.ndarray  # int32[S, W]: a canonical key of each belief state
    starts: np.ndarray  # int64[H + 1]: where each level begins in ``rows``
    q_values: np.ndarray  # float64[S, C]: value of each column's action, to the end of the episode
    optimal: np.ndarray  # bool[S, C]: columns within TIE_TOLERANCE of the best
    value: float  # V of the prior: the Bayes-optimal expected total reward

    @property
    def num_states(self) -> int:
        return self.rows.shape[0]


@dataclasses.dataclass(frozen=True)
class BayesOptimal:
    """Acts Bayes-optimally from the exact belief: the best action of the belief-MDP's DP table.

    Defined for families with the ``BetaArms`` capability (``bernoulli_bandit``: any prior, sizes
    up to ``MAX_TABLE_ENTRIES``; see ``bayes_optimal_table_size``) or the ``DependentArms`` one
    (both ``dependent_bandit`` variants). Ties are broken at random. Beyond the family's horizon
    (``run_policy`` with more steps) it plays greedily on the posterior mean.

    The table is keyed on the belief's sufficient statistic (``statistic``): the per-arm Beta
    posterior of a ``BetaArms`` family, the evidence counts of a ``DependentArms`` one.
    ``action_values_at`` and ``action_probs_at`` act on that statistic directly (the
    state-machine simulation puts the Bayes agent in mapped counts that way).

    Example::

        family = metabelief.make("bernoulli_bandit", num_arms=2, horizon=100)
        policy = bayes_optimal(family)  # builds the table once (cached per family)
        rollout = run_policy(family, policy, key, tasks)
    """

    family: TaskFamily
    gamma: float = 1.0  # the DP's discount: 1 = the undiscounted total reward over the horizon

    def __post_init__(self):
        object.__setattr__(self, "gamma", probability("gamma", self.gamma))
        self._table()  # raises for an unsupported family, or one too large

    @property
    def value(self) -> float:
        """The expected (``gamma``-discounted) return of this policy from the prior."""
        return self._table().value

    def _table(self) -> BayesOptimalTable:
        return bayes_optimal_table(self.family, self.gamma)

    def statistic(self, belief: PyTree) -> BetaBelief | jax.Array:
        """The sufficient statistic the table is keyed on: ``beta_posterior(belief)`` (a
        ``BetaBelief``, ``float32[num_arms]`` each) for ``BetaArms``, else
        ``evidence_counts(belief)`` (``float32[2]``)."""
        if isinstance(self.family, BetaArms):
            return self.family.beta_posterior(belief)
        return self.family.evidence_counts(belief)

    def action_values(self, belief: PyTree) -> jax.Array:
        """Q-value of each action for one belief: expected reward to the end of the episode.

        Returns ``float32[num_actions]`` (beyond the horizon: the posterior expected rewards).
        """
        return self._action_values(self.statistic(belief), belief)

    def action_probs(self, belief: PyTree) -> jax.Array:
        """The policy's action distribution for one belief: uniform over the optimal actions.

        Returns ``float32[num_actions]``.
        """
        return self._action_probs(self.statistic(belief), belief)

    def action_values_at(self, statistic: BetaBelief | jax.Array) -> jax.Array:
        """``action_values`` of the belief whose sufficient statistic (``statistic``) this is."""
        return self._action_values(statistic)

    def action_probs_at(self, statistic: BetaBelief | jax.Array) -> jax.Array:
        """``action_probs`` of the belief whose sufficient statistic (``statistic``) this is."""
        return self._action_probs(statistic)

    def __call__(self, key: jax.Array, belief: PyTree, obs: jax.Array) -> jax.Array:
        del obs
        probs = self.action_probs(belief)
        return jax.random.choice(key, probs.shape[0], p=probs).astype(jnp.int32)

    def _action_values(self, statistic: BetaBelief | jax.Array, belief: PyTree = None) -> jax.Array:
        index, columns, within = self._locate(statistic)
        q_values = jnp.asarray(self._table().q_values, jnp.float32)[index, columns]
        return jnp.where(within, q_values, self._expected_rewards(statistic, belief))

    def _action_probs(self, statistic: BetaBelief | jax.Array, belief: PyTree = None) -> jax.Array:
        index, columns, within = self._locate(statistic)
        optimal = jnp.asarray(self._table().optimal)[index, columns]
        expected = self._expected_rewards(statistic, belief)
        optimal = jnp.where(within, optimal, expected == expected.max())
        return optimal / optimal.sum()

    def _expected_rewards(self, statistic: BetaBelief | jax.Array, belief: PyTree = None) -> jax.Array:
        """The posterior expected reward of each arm (its posterior mean), for play past the horizon:
        the family's own ``expected_rewards`` given a belief and the capability, else from the
        statistic."""
        if belief is not None and isinstance(self.family, ExpectedRewards):
            return self.family.expected_rewards(belief, jnp.zeros((0,), jnp.float32))
        if isinstance(self.family, BetaArms):
            return beta_mean(statistic)
        support = _support(self.family)
        if support is None:  # Beta(1 + evidence for p, 1 + evidence against p)
            mean = beta_mean(BetaBelief(alpha=1.0 + statistic[0], beta=1.0 + statistic[1]))
        else:
            posterior = jnp.exp(support_log_posterior(support, statistic))
            mean = posterior @ jnp.asarray(support, jnp.float32)
        return jnp.stack([mean, 1.0 - mean])

    def _locate(self, statistic: BetaBelief | jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """The statistic's row in the table, the column of each action, and whether n < horizon."""
        table = self._table()
        if isinstance(self.family, BetaArms):
            prior = (float(self.family.prior_a), float(self.family.prior_b))
            level, key, columns = _bernoulli_key(*prior, statistic, table.rows.shape[1])
        else:
            level, key = _dependent_key(statistic)
            columns = jnp.arange(2)
        within = level < self.family.horizon
        level = jnp.clip(level, 0, self.family.horizon - 1)
        starts = jnp.asarray(table.starts, jnp.int32)
        widest = int(np.diff(table.starts).max())
        index = _lower_bound(jnp.asarray(table.rows), starts[level], starts[level + 1], key, widest)
        return index, columns, within


def bayes_optimal(family: TaskFamily, gamma: float = 1.0) -> BayesOptimal | BeliefTreePolicy:
    """The Bayes-optimal policy of ``family`` for the ``gamma``-discounted return over its horizon
    (default: undiscounted; the DP table is built once per family and ``gamma`` and cached):
    ``BayesOptimal`` over the counts of a ``BetaArms`` or ``DependentArms`` family, else
    ``BeliefTreePolicy`` over the belief tree of a ``FiniteOutcomes`` one."""
    if _by_belief_tree(family):
        return belief_tree_policy(family, gamma)
    return BayesOptimal(family, gamma)


def bayes_optimal_value(family: TaskFamily) -> float:
    """The Bayes-optimal expected total reward over ``family.horizon`` steps, from the prior."""
    if _by_belief_tree(family):
        return belief_tree_value(family)
    return bayes_optimal_table(family).value


def _by_belief_tree(family: TaskFamily) -> bool:
    """Whether ``bayes_optimal`` solves ``family`` over its belief tree (no count-based DP fits it)."""
    return isinstance(family, FiniteOutcomes) and not isinstance(family, BetaArms | DependentArms)


def bayes_optimal_table_size(family: TaskFamily) -> int:
    """Entries (belief states x columns) of ``family``'s DP table, counted without building it."""
    require_capability("bayes_optimal", family, BetaArms, DependentArms)
    if isinstance(family, BetaArms):
        num_arms, horizon = int(family.num_arms), int(family.horizon)
        return _count_arm_multisets(num_arms, horizon) * min(num_arms, horizon)
    horizon = int(family.horizon)
    return horizon * (horizon + 1) // 2 * 2


def bayes_optimal_table(family: TaskFamily, gamma: float = 1.0) -> BayesOptimalTable:
    """The DP table of ``family`` for the ``gamma``-discounted return (cached per family and
    ``gamma``); raises ``ValueError`` when too large."""
    size = bayes_optimal_table_size(family)
    if size > MAX_TABLE_ENTRIES:
        raise ValueError(
            f"the Bayes-optimal DP table of {family!r} would hold {size:.3g} entries, more than "
            f"MAX_TABLE_ENTRIES = {MAX_TABLE_ENTRIES:.3g}; use fewer arms or a shorter horizon"
        )
    if isinstance(family, BetaArms):
        num_arms, horizon = int(family.num_arms), int(family.horizon)
        candidates = size * min(num_arms, horizon) * 2
        if candidates > MAX_SUCCESSOR_ENTRIES:
            raise ValueError(
                f"the Bayes-optimal DP of {family!r} would sort {candidates:.3g} successor entries, more "
                f"than MAX_SUCCESSOR_ENTRIES = {MAX_SUCCESSOR_ENTRIES:.3g}; use a shorter horizon"
            )
        return _bernoulli_table(num_arms, horizon, float(family.prior_a), float(family.prior_b), float(gamma))
    return _dependent_table(int(family.horizon), _support(family), float(gamma))


def _support(family: DependentArms) -> tuple[float, ...] | None:
    """``p_support`` as a hashable tuple of floats (None: p ~ U[0, 1])."""
    return None if family.p_support is None else tuple(float(value) for value in family.p_support)


# --- independent arms: states are multisets of per-arm counts ----------------------------------


def _arm_id(successes, failures):
    """Id of an arm's counts, ordered by total pulls: (0, 0) -> 0, (1, 0) -> 1, (0, 1) -> 2, ..."""
    total = successes + failures
    return total * (total + 1) // 2 + failures


def _count_arm_multisets(num_arms: int, horizon: int) -> int:
    """Belief states at levels 0 .. horizon - 1: multisets of at most num_arms pulled arms' counts.

    Generating function over arm counts of total t >= 1 (t + 1 of them); float64, exact well past
    any size the DP accepts.
    """
    width = min(num_arms, horizon)
    counts = np.zeros((width + 1, horizon))  # [arms pulled, total pulls]
    counts[0, 0] = 1.0
    for total in range(1, horizon):
        grown = np.zeros_like(counts)
        for copies in range(min(width, (horizon - 1) // total) + 1):
            ways = math.comb(total + copies, copies)  # multisets of `copies` among total + 1 ids
            grown[copies:, copies * total :] += (
                ways * counts[: width + 1 - copies, : horizon - copies * total]
            )
        counts = grown
    return int(round(counts.sum()))


def _unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lexicographically sorted distinct rows of int[N, W], and each row's index among them."""
    order = np.lexsort(rows.T[::-1])
    ordered = rows[order]
    first = np.ones(len(rows), bool)
    first[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    inverse = np.empty(len(rows), np.int64)
    inverse[order] = np.cumsum(first) - 1
    return ordered[first], inverse


@functools.lru_cache(maxsize=8)
def _bernoulli_table(
    num_arms: int, horizon: int, prior_a: float, prior_b: float, gamma: float
) -> BayesOptimalTable:
    width = min(num_arms, horizon)
    totals = np.repeat(np.arange(horizon), np.arange(1, horizon + 1))  # arm ids with total < horizon
    failures = np.arange(totals.size) - totals * (totals + 1) // 2
    successes = totals - failures
    means = (prior_a + successes) / (prior_a + prior_b + totals)  # P(success) of each arm id
    advanced = (_arm_id(successes + 1, failures), _arm_id(successes, failures + 1))

    # Forward: each level's states and, for each state, column and outcome, its successor's row.
    levels, successors = [np.zeros((1, width), np.int32)], []
    columns = np.arange(width)
    for _ in range(horizon - 1):
        rows = levels[-1]
        candidates = np.broadcast_to(rows[:, None, None, :], (len(rows), width, 2, width)).copy()
        for outcome in (0, 1):
            candidates[:, columns, outcome, columns] = advanced[outcome][rows]
        candidates = -np.sort(-candidates, axis=-1)  # canonical: ids in decreasing order
        next_rows, inverse = _unique_rows(candidates.reshape(-1, width))
        levels.append(next_rows.astype(np.int32))
        successors.append(inverse.reshape(len(rows), width, 2))

    # Backward over levels: V = 0 after the last pull.
    q_levels = [None] * horizon
    next_values = None
    for level in reversed(range(horizon)):
        success = means[levels[level]]  # [M, W]
        q_values = success.copy()
        if next_values is not None:
            after = next_values[successors[level]]  # [M, W, 2]
            q_values += gamma * (success * after[..., 0] + (1.0 - success) * after[..., 1])
        q_levels[level] = q_values
        next_values = q_values.max(axis=1)
    return _finish_table(levels, q_levels)


# --- dependent arms: one count of evidence for p and one against ------------------------------


@functools.lru_cache(maxsize=8)
def _dependent_table(horizon: int, support: tuple[float, ...] | None, gamma: float) -> BayesOptimalTable:
    levels, q_levels = [], [None] * horizon
    next_values = None
    for level in reversed(range(horizon)):
        favour = np.arange(level + 1)  # evidence for p; level - favour against
        mean = _posterior_mean_of_p(favour, level - favour, support)
        q_values = np.stack([mean, 1.0 - mean], axis=1)  # arm 0 pays p, arm 1 pays 1 - p
        if next_values is not None:
            # Arm 0's success and arm 1's failure are both evidence for p (row favour + 1).
            for_p, against_p = next_values[favour + 1], next_values[favour]
            q_values += gamma * (mean * for_p + (1.0 - mean) * against_p)[:, None]
        q_levels[level] = q_values
        next_values = q_values.max(axis=1)
    levels = [np.arange(level + 1, dtype=np.int32)[:, None] for level in range(horizon)]
    return _finish_table(levels, q_levels)


def _posterior_mean_of_p(favour: np.ndarray, against: np.ndarray, support: tuple[float, ...] | None):
    """E[p | counts], float64: Beta(1 + favour, 1 + against) or the posterior over ``support``."""
    if support is None:
        return (1.0 + favour) / (2.0 + favour + against)
    values = np.asarray(support, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_p, log_not_p = np.log(values), np.log1p(-values)
        # 0 * log 0 = 0: an outcome never seen rules nothing out.
        log_weights = np.where(favour[:, None] > 0, favour[:, None] * log_p, 0.0) + np.where(
            against[:, None] > 0, against[:, None] * log_not_p, 0.0
        )
    largest = log_weights.max(axis=1, keepdims=True)
    possible = np.isfinite(largest[:, 0])  # evidence no support value allows is never reached
    weights = np.exp(log_weights - np.where(possible[:, None], largest, 0.0))
    return np.where(possible, weights @ values / np.maximum(weights.sum(axis=1), 1e-300), 0.5)


def _finish_table(levels: list[np.ndarray], q_levels: list[np.ndarray]) -> BayesOptimalTable:
    q_values = np.concatenate(q_levels)
    best = q_values.max(axis=1, keepdims=True)
    return BayesOptimalTable(
        rows=np.concatenate(levels),
        starts=np.cumsum([0] + [len(rows) for rows in levels]),
        q_values=q_values,
        optimal=q_values >= best - TIE_TOLERANCE,
        value=float(best[0, 0]),
    )


# --- from a belief to its row (jittable) --------------------------------------------------------


def _bernoulli_key(
    prior_a: float, prior_b: float, posterior: BetaBelief, width: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Level, canonical row and each arm's column: an arm's rank in decreasing id order, and
    the last column (an untouched arm, id 0) for the arms beyond the table's width."""
    successes, failures = (count.astype(jnp.int32) for count in observed_counts(posterior, prior_a, prior_b))
    ids = _arm_id(successes, failures)  # [num_arms]
    order = jnp.argsort(-ids)
    rank = jnp.argsort(order)
    return (successes + failures).sum(), ids[order][:width], jnp.minimum(rank, width - 1)


def _dependent_key(evidence: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Level and row of the evidence counts ``[for p, against p]``."""
    evidence = jnp.round(evidence).astype(jnp.int32)
    return evidence.sum(), evidence[:1]


def _lower_bound(rows: jax.Array, start: jax.Array, stop: jax.Array, key: jax.Array, width: int):
    """First index in ``rows[start:stop]`` (sorted lexicographically) whose row is >= ``key``."""

    def halve(_, bounds):
        low, high = bounds
        middle = jnp.minimum((low + high) // 2, rows.shape[0] - 1)
        differs = rows[middle] != key
        first = jnp.argmax(differs)
        below = differs.any() & (rows[middle, first] < key[first])
        searching = low < high
        return (
            jnp.where(searching & below, middle + 1, low),
            jnp.where(searching & ~below, middle, high),
        )

    steps = max(1, math.ceil(math.log2(width + 1)))
    low, _ = jax.lax.fori_loop(0, steps, halve, (start, stop))
    return low
