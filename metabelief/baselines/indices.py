"""Classic index policies of the Bernoulli bandit, acting on the per-arm counts in its belief.

They take any family with the ``BetaArms`` capability (``metabelief.tasks.base``; built in:
``bernoulli_bandit``): its ``beta_posterior(belief)`` is one Beta(prior_a + successes, prior_b +
failures) per arm, so the observed counts are the posterior's counts minus the prior. These
policies need per-arm counts and independent arms; the dependent bandit's belief pools both arms'
outcomes into evidence about p (and there the greedy policy on its belief is already
Bayes-optimal), so it does not have the capability.

* ``gittins``: the Gittins index of each arm's Beta posterior for a discount factor (Gittins 1979),
  computed once per (prior, discount, horizon) as a table over the counts.
* ``ucb1``: UCB1 (Auer, Cesa-Bianchi & Fischer 2002) on the observed counts.
* ``greedy`` / ``epsilon_greedy``: the best observed mean (every arm once first) / with random arms.

Every policy breaks ties between arms at random.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from metabelief.tasks import validation
from metabelief.tasks.bandit_base import beta_mean, observed_counts
from metabelief.tasks.base import BetaArms, PyTree, TaskFamily, require_capability

# Calibration of the Gittins index: the depth past which an arm's mean is taken as known (its
# discounted value of information below TRUNCATION_TOLERANCE changes indices by ~1e-7), and the
# size of the lattice x lambda-grid sweep: as fine a grid as CALIBRATION_BUDGET entries allow
# (~2.5 s of NumPy), between MIN_GRID and MAX_GRID points; refused above MAX_CALIBRATION_ENTRIES.
TRUNCATION_TOLERANCE = 1e-2
CALIBRATION_BUDGET = 200_000_000
MIN_GRID, MAX_GRID = 256, 2048
MAX_CALIBRATION_ENTRIES = 3_000_000_000


def _check_family(name: str, family: TaskFamily) -> None:
    require_capability(name, family, BetaArms)


def _observed_counts(family: BetaArms, belief: PyTree) -> tuple[jax.Array, jax.Array]:
    """Observed successes and pulls of each arm: the posterior's counts minus the prior, float32."""
    successes, failures = observed_counts(family.beta_posterior(belief), family.prior_a, family.prior_b)
    return successes, successes + failures


def _argmax_random_ties(key: jax.Array, scores: jax.Array) -> jax.Array:
    best = scores == scores.max()
    return jax.random.choice(key, scores.shape[0], p=best / best.sum()).astype(jnp.int32)


def _unplayed_first(key: jax.Array, pulls: jax.Array, scores: jax.Array) -> jax.Array:
    """A random unplayed arm while there is one, else the arm with the best score."""
    return _argmax_random_ties(key, jnp.where((pulls == 0).any(), (pulls == 0).astype(scores.dtype), scores))


# --- Gittins ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GittinsIndex:
    """Plays the arm with the highest Gittins index of its Beta posterior (``BetaArms``).

    The Gittins index policy is Bayes-optimal for the infinite-horizon discounted bandit; on a
    finite horizon n it is a (close) approximation whose quality depends on the ``discount``
    (default ``1 - 1 / horizon``: the discounted effective horizon equals the episode length).
    The index table covers the counts the horizon allows; beyond it (``run_policy`` with more
    steps) an arm's index is its posterior mean.
    """

    family: TaskFamily
    discount: float | None = None

    def __post_init__(self):
        _check_family("gittins", self.family)
        discount = 1.0 - 1.0 / self.family.horizon if self.discount is None else self.discount
        discount = validation.probability("discount", discount)
        if discount >= 1.0:
            raise ValueError(f"discount must be < 1, got {self.discount!r}")
        object.__setattr__(self, "discount", discount)
        self.table()  # raises if the calibration is too large

    def table(self) -> np.ndarray:
        """``float64[horizon, horizon]``: the index after s successes, f failures at ``[s, f]``."""
        family = self.family
        return gittins_index_table(
            family.horizon, self.discount, float(family.prior_a), float(family.prior_b)
        )

    def indices(self, belief: PyTree) -> jax.Array:
        """Each arm's Gittins index, ``float32[num_arms]``."""
        successes, pulls = _observed_counts(self.family, belief)
        successes, pulls = successes.astype(jnp.int32), pulls.astype(jnp.int32)
        within = pulls < self.family.horizon
        last = self.family.horizon - 1
        table = jnp.asarray(np.nan_to_num(self.table()), jnp.float32)
        indices = table[jnp.clip(successes, 0, last), jnp.clip(pulls - successes, 0, last)]
        return jnp.where(within, indices, beta_mean(self.family.beta_posterior(belief)))

    def __call__(self, key: jax.Array, belief: PyTree, obs: jax.Array) -> jax.Array:
        del obs
        return _argmax_random_ties(key, self.indices(belief))


def gittins(family: TaskFamily, discount: float | None = None) -> GittinsIndex:
    """The Gittins index policy; ``discount`` defaults to ``1 - 1 / family.horizon``."""
    return GittinsIndex(family, discount)


def calibration_depth(discount: float) -> int:
    """Pulls past the table's last level after which the calibration treats an arm's mean as known."""
    if discount == 0.0:
        return 1
    return max(1, math.ceil(math.log(TRUNCATION_TOLERANCE) / math.log(discount)))


@functools.lru_cache(maxsize=16)
def gittins_index_table(
    horizon: int, discount: float, prior_a: float = 1.0, prior_b: float = 1.0, depth: int | None = None
) -> np.ndarray:
    """Gittins indices of a Bernoulli arm with a Beta(prior_a, prior_b) prior, float64.

    The index of counts x is the retirement reward lambda at which, offered lambda per step
    forever instead of the arm, one is indifferent between retiring now and pulling once more and
    then continuing optimally (calibration; Gittins, Glazebrook & Weber 2011, ch. 8). One backward
    value iteration over the lattice of counts, vectorised over a grid of lambda, gives every
    state's continuation advantage f(lambda) and its right derivative at every grid point. f is
    convex, piecewise linear and decreasing, so on the grid cell that holds the root it lies above
    both end points' tangent lines: the larger of their roots is a lower bound of the index, and
    the value returned. At discount 0.99 it is within 2.5e-4 of a 4096-point grid's (median 1e-5)
    with 256 points, within 1.2e-5 with 1024; at 0.9 (2048 points) it gives Gittins' tabled
    0.7029 for Beta(1, 1). Past ``depth`` more pulls (default ``calibration_depth(discount)``) the
    arm's mean is taken as known. Time grows as (horizon + depth)^2 x grid points: ~2.5 s for
    horizon 100 at discount 0.99, ~12 s for horizon 500 at 0.998 (256 points).

    Args:
      horizon: the table covers counts with s + f < horizon.
      discount: the discount factor, in [0, 1).
      prior_a, prior_b: the Beta prior.
      depth: truncation depth of the calibration beyond the table's last level.

    Returns:
      ``float64[horizon, horizon]``: the index after s successes and f failures at ``[s, f]``;
      NaN where s + f >= horizon.
    """
    horizon = validation.integer_at_least("horizon", horizon, 1)
    prior_a = validation.positive_float("prior_a", prior_a)
    prior_b = validation.positive_float("prior_b", prior_b)
    if not 0.0 <= discount < 1.0:
        raise ValueError(f"discount must lie in [0, 1), got {discount!r}")
    depth = calibration_depth(discount) if depth is None else validation.integer_at_least("depth", depth, 1)
    successes, failures = np.indices((horizon, horizon))
    outside = successes + failures >= horizon
    if discount == 0.0:  # the index is the immediate expected reward
        means = (prior_a + successes) / (prior_a + prior_b + successes + failures)
        return np.where(outside, np.nan, means)
    last = horizon - 1 + depth  # the truncation level
    nodes = (last + 1) * (last + 2) // 2
    grid_size = min(MAX_GRID, max(MIN_GRID, CALIBRATION_BUDGET // nodes))
    if nodes * grid_size > MAX_CALIBRATION_ENTRIES:
        raise ValueError(
            f"the Gittins calibration for horizon {horizon} and discount {discount} would sweep "
            f"{nodes * grid_size:.3g} lattice x grid entries, more than {MAX_CALIBRATION_ENTRIES:.3g}; "
            "pass a smaller discount or horizon"
        )
    grid = np.linspace(0.0, 1.0, grid_size)  # [L]: retirement rewards lambda
    retire, retire_slope = grid / (1.0 - discount), 1.0 / (1.0 - discount)

    def posterior_mean(level):
        return ((prior_a + np.arange(level + 1)) / (prior_a + prior_b + level))[:, None]  # [level + 1, 1]

    table = np.full((horizon, horizon), np.nan)
    # At the truncation level the mean is known: retire, or pull forever. Slopes are d/d lambda,
    # taken from the right: at a tie retiring has the larger slope.
    pull_forever = posterior_mean(last) / (1.0 - discount)
    value = np.maximum(retire, pull_forever)  # [level + 1, L], rows indexed by successes
    slope = np.where(retire >= pull_forever, retire_slope, 0.0)
    for level in reversed(range(last)):
        mean = posterior_mean(level)
        go_on = mean + discount * (mean * value[1:] + (1.0 - mean) * value[:-1])
        go_on_slope = discount * (mean * slope[1:] + (1.0 - mean) * slope[:-1])
        if level < horizon:
            wins = np.arange(level + 1)
            table[wins, level - wins] = _calibrated_root(grid, go_on - retire, go_on_slope - retire_slope)
        continuing = go_on > retire
        value = np.where(continuing, go_on, retire)
        slope = np.where(continuing, go_on_slope, retire_slope)
    return table


def _calibrated_root(grid: np.ndarray, advantage: np.ndarray, advantage_slope: np.ndarray) -> np.ndarray:
    """Lower bound of each row's root from its convex, decreasing advantage on ``grid`` ([R, L])."""
    cell = np.clip((advantage > 0.0).sum(axis=1) - 1, 0, grid.size - 2)  # f > 0 at the left end
    rows = np.arange(advantage.shape[0])
    roots = [
        grid[end] - advantage[rows, end] / advantage_slope[rows, end]  # slopes <= -1 < 0
        for end in (cell, cell + 1)
    ]
    return np.maximum(*roots)


# --- UCB1, greedy, epsilon-greedy ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class UCB1:
    """UCB1 (Auer et al. 2002) on the observed counts of a ``BetaArms`` family.

    Plays every arm once (a random unplayed arm first), then the arm maximising
    ``successes / pulls + sqrt(2 ln t / pulls)`` with t the total pulls so far.
    """

    family: TaskFamily

    def __post_init__(self):
        _check_family("ucb1", self.family)

    def __call__(self, key: jax.Array, belief: PyTree, obs: jax.Array) -> jax.Array:
        del obs
        successes, pulls = _observed_counts(self.family, belief)
        played = jnp.maximum(pulls, 1.0)
        bonus = jnp.sqrt(2.0 * jnp.log(jnp.maximum(pulls.sum(), 1.0)) / played)
        return _unplayed_first(key, pulls, successes / played + bonus)


@dataclasses.dataclass(frozen=True)
class EpsilonGreedy:
    """With probability ``epsilon`` a uniformly random arm, else the best observed mean.

    The greedy choice plays every arm once first (a random unplayed arm), then the arm with the
    highest observed mean ``successes / pulls`` (the prior plays no part). ``epsilon = 0`` is
    ``greedy``.
    """

    family: TaskFamily
    epsilon: float = 0.1

    def __post_init__(self):
        _check_family("epsilon_greedy", self.family)
        object.__setattr__(self, "epsilon", validation.probability("epsilon", self.epsilon))

    def __call__(self, key: jax.Array, belief: PyTree, obs: jax.Array) -> jax.Array:
        del obs
        explore_key, random_key, greedy_key = jax.random.split(key, 3)
        successes, pulls = _observed_counts(self.family, belief)
        greedy_arm = _unplayed_first(greedy_key, pulls, successes / jnp.maximum(pulls, 1.0))
        random_arm = jax.random.randint(random_key, (), 0, self.family.num_arms, jnp.int32)
        return jnp.where(jax.random.bernoulli(explore_key, self.epsilon), random_arm, greedy_arm)


def ucb1(family: TaskFamily) -> UCB1:
    """UCB1 on ``family``'s observed counts."""
    return UCB1(family)


def greedy(family: TaskFamily) -> EpsilonGreedy:
    """The best observed mean, after one pull of every arm (``epsilon_greedy`` with epsilon 0)."""
    return EpsilonGreedy(family, 0.0)


def epsilon_greedy(family: TaskFamily, epsilon: float = 0.1) -> EpsilonGreedy:
    """A random arm with probability ``epsilon``, else the greedy arm."""
    return EpsilonGreedy(family, epsilon)
