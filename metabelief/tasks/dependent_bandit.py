"""Two arms with complementary probabilities (p, 1 - p): the Wang et al. (2016) dependent bandit.

Every pull informs both arms: a success on arm 0 or a failure on arm 1 is evidence for p, the
other two outcomes are evidence for 1 - p. The number of each kind of evidence is a sufficient
statistic, so both beliefs below are exact functions of two counts.

* ``support=None``: p ~ U[0, 1] = Beta(1, 1) and the posterior is a Beta over p.
* ``support=(0.1, 0.9)`` or any tuple: p is uniform over those values and the posterior is a
  categorical over the support, kept as normalised log-probabilities.

Both have the ``DependentArms`` capability of ``metabelief.tasks.base`` (``p_support`` and the two
evidence counts, ``evidence_counts``), ``ExpectedRewards`` and ``BeliefVariance``;
``support_log_posterior`` is the exact posterior over a support given the evidence counts.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from metabelief.tasks import validation
from metabelief.tasks.bandit_base import BanditFamily, BetaBelief, beta_mean, beta_std


@struct.dataclass
class DependentTask:
    """A hidden dependent-bandit task: arm 0 pays with probability p, arm 1 with 1 - p."""

    p: jax.Array  # float32[]


@struct.dataclass
class SupportBelief:
    """Posterior over a finite support of p."""

    evidence: jax.Array  # float32[2]: outcomes that favour p, outcomes that favour 1 - p
    log_posterior: jax.Array  # float32[S]: normalised log P(p = support[i] | history)


def evidence_for_p(action: jax.Array, reward: jax.Array) -> jax.Array:
    """1.0 when the outcome has likelihood p (arm 0 success, arm 1 failure), else 0.0."""
    return jnp.where(action == 0, reward, 1.0 - reward)


class _DependentBanditBase(BanditFamily):
    """Dynamics shared by both priors over p."""

    num_actions = 2

    def arm_probs(self, task: DependentTask) -> jax.Array:
        return jnp.stack([task.p, 1.0 - task.p])


@dataclasses.dataclass(frozen=True)
class DependentBandit(_DependentBanditBase):
    """Dependent two-armed bandit with p ~ U[0, 1].

    Belief: ``BetaBelief`` over p (scalar ``alpha``, ``beta``, prior Beta(1, 1)).
    Belief features, ``float32[3]``: ``[E p, E (1 - p), std p]``. True features: ``[p, 1 - p]``.
    Capabilities: ``DependentArms`` (``p_support`` None), ``ExpectedRewards``, ``BeliefVariance``.
    """

    horizon: int = 100

    def __post_init__(self) -> None:
        object.__setattr__(self, "horizon", validation.integer_at_least("horizon", self.horizon, 1))

    @property
    def p_support(self) -> None:
        """``DependentArms``: p ~ U[0, 1], no finite support."""
        return None

    def evidence_counts(self, belief: BetaBelief) -> jax.Array:
        """``DependentArms``: ``[outcomes for p, outcomes for 1 - p]``, float32[2]: the counts minus
        the Beta(1, 1) prior."""
        return jnp.stack([belief.alpha - 1.0, belief.beta - 1.0])

    def sample_task(self, key: jax.Array) -> DependentTask:
        """Draws p uniformly from [0, 1]."""
        return DependentTask(p=jax.random.uniform(key, (), jnp.float32))

    def belief_init(self, obs: jax.Array) -> BetaBelief:
        """The uniform prior Beta(1, 1) over p."""
        del obs
        return BetaBelief(alpha=jnp.ones((), jnp.float32), beta=jnp.ones((), jnp.float32))

    def belief_update(
        self,
        belief: BetaBelief,
        obs: jax.Array,
        action: jax.Array,
        reward: jax.Array,
        next_obs: jax.Array,
    ) -> BetaBelief:
        """Counts the outcome as evidence for p (alpha) or for 1 - p (beta)."""
        del obs, next_obs
        favours_p = evidence_for_p(action, reward)
        return BetaBelief(alpha=belief.alpha + favours_p, beta=belief.beta + 1.0 - favours_p)

    def belief_features(self, belief: BetaBelief) -> jax.Array:
        """``[E p, 1 - E p, std p]``, float32[3]."""
        mean = beta_mean(belief)
        return jnp.stack([mean, 1.0 - mean, beta_std(belief)])

    def belief_variance(self, belief: BetaBelief) -> jax.Array:
        """The posterior variance of p and of 1 - p (equal), float32[2]."""
        return jnp.full((2,), beta_std(belief) ** 2)


@dataclasses.dataclass(frozen=True)
class DiscreteDependentBandit(_DependentBanditBase):
    """Dependent two-armed bandit with p uniform over a finite ``support``.

    Belief: ``SupportBelief`` (evidence counts and the normalised log-posterior, ``float32[S]``).
    Belief features, ``float32[2 + S]``: ``[E p, E (1 - p), P(p = support[i]) for each i]``.
    True features: ``[p, 1 - p]``. Capabilities: ``DependentArms`` (``p_support`` = ``support``),
    ``ExpectedRewards``, ``BeliefVariance``.
    """

    horizon: int = 100
    support: tuple[float, ...] = (0.1, 0.9)

    def __post_init__(self) -> None:
        object.__setattr__(self, "horizon", validation.integer_at_least("horizon", self.horizon, 1))
        if isinstance(self.support, (str, bytes)) or not np.iterable(self.support):
            raise ValueError(f"support must be a tuple of probabilities, got {self.support!r}")
        support = tuple(validation.probability("support", value) for value in self.support)
        if not support:
            raise ValueError("support must hold at least one probability, got an empty tuple")
        object.__setattr__(self, "support", support)

    @property
    def p_support(self) -> tuple[float, ...]:
        """``DependentArms``: the values p is uniform over (``support``)."""
        return self.support

    def evidence_counts(self, belief: SupportBelief) -> jax.Array:
        """``DependentArms``: ``[outcomes for p, outcomes for 1 - p]``, float32[2]."""
        return belief.evidence

    def sample_task(self, key: jax.Array) -> DependentTask:
        """Draws p uniformly from the support values."""
        index = jax.random.randint(key, (), 0, len(self.support))
        return DependentTask(p=jnp.asarray(self.support, jnp.float32)[index])

    def belief_init(self, obs: jax.Array) -> SupportBelief:
        """The uniform prior over the support."""
        del obs
        return self._belief_from_evidence(jnp.zeros((2,), jnp.float32))

    def belief_update(
        self,
        belief: SupportBelief,
        obs: jax.Array,
        action: jax.Array,
        reward: jax.Array,
        next_obs: jax.Array,
    ) -> SupportBelief:
        """Adds the outcome to the evidence counts and recomputes the log-posterior from them."""
        del obs, next_obs
        favours_p = evidence_for_p(action, reward)
        return self._belief_from_evidence(belief.evidence + jnp.stack([favours_p, 1.0 - favours_p]))

    def belief_features(self, belief: SupportBelief) -> jax.Array:
        """``[E p, 1 - E p, posterior over the support (S)]``, float32[2 + S]."""
        posterior = jnp.exp(belief.log_posterior)
        mean = posterior @ jnp.asarray(self.support, jnp.float32)
        return jnp.concatenate([jnp.stack([mean, 1.0 - mean]), posterior])

    def belief_variance(self, belief: SupportBelief) -> jax.Array:
        """The posterior variance of p and of 1 - p (equal), float32[2]."""
        posterior = jnp.exp(belief.log_posterior)
        support = jnp.asarray(self.support, jnp.float32)
        mean = posterior @ support
        return jnp.full((2,), jnp.maximum(posterior @ (support - mean) ** 2, 0.0))

    def _belief_from_evidence(self, evidence: jax.Array) -> SupportBelief:
        return SupportBelief(evidence=evidence, log_posterior=support_log_posterior(self.support, evidence))


def support_log_posterior(support: tuple[float, ...], evidence: jax.Array) -> jax.Array:
    """The normalised log-posterior over ``support`` (p uniform over it a priori), ``float32[S]``,
    given ``evidence`` ``float32[2]``: the outcomes whose likelihood is p and those whose is 1 - p.

    Jittable; ``support`` is static.
    """
    # Recomputing from exact integer counts (not accumulating per-step log-likelihoods) means
    # no rounding drift however long the history. float32 products count * log-likelihood
    # reach ~1e4, too coarse to split mass between nearby support values, so the weights are
    # taken relative to the most probable value m with float64-built tables of
    # log p_i - log p_m: entries near m, the only ones that carry mass, stay small and exact.
    tables = _relative_log_likelihoods(tuple(support))
    coarse = _log_weights(evidence, tables, row=-1)
    log_weights = _log_weights(evidence, tables, row=jnp.argmax(coarse))
    return log_weights - jax.nn.logsumexp(log_weights)


def _relative_log_likelihoods(support: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """float64 ``[S + 1, S]`` tables of ``log p_i - log p_m`` and ``log(1 - p_i) - log(1 - p_m)``.

    Row m < S is relative to support value m; the last row is shifted by the table's largest
    finite entry, a reference that needs no current belief.
    """
    support = np.asarray(support, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        tables = []
        for log_likelihood in (np.log(support), np.log1p(-support)):
            pairwise = log_likelihood[None, :] - log_likelihood[:, None]
            shifted = log_likelihood - _finite_max(log_likelihood)
            table = np.vstack([pairwise, shifted])
            # -inf - (-inf): both values are ruled out by the same outcome; any entry is fine.
            tables.append(np.where(np.isnan(table), 0.0, table))
    return tables[0], tables[1]


def _finite_max(table: np.ndarray) -> float:
    finite = table[np.isfinite(table)]
    return float(finite.max()) if finite.size else 0.0


def _log_weights(
    evidence: jax.Array, tables: tuple[np.ndarray, np.ndarray], row: int | jax.Array
) -> jax.Array:
    """Log-likelihood of the evidence under each support value, relative to row's reference."""
    log_p, log_not_p = (jnp.asarray(table, jnp.float32)[row] for table in tables)
    return _count_times_log(evidence[0], log_p) + _count_times_log(evidence[1], log_not_p)


def _count_times_log(count: jax.Array, log_likelihood: jax.Array) -> jax.Array:
    """count * log_likelihood, with 0 * log(0) = 0 (an outcome never seen rules nothing out)."""
    return jnp.where(count > 0, count * log_likelihood, 0.0)


def dependent_bandit(
    horizon: int = 100, support: tuple[float, ...] | None = None
) -> DependentBandit | DiscreteDependentBandit:
    """The dependent two-armed bandit: p ~ U[0, 1] (``support=None``) or uniform over ``support``."""
    if support is None:
        return DependentBandit(horizon=horizon)
    return DiscreteDependentBandit(horizon=horizon, support=support)
