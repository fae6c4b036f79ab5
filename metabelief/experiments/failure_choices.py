"""The failure experiment's measures of an agent's *choices*: whose softmax explains them, and which
combination of the evidence counts its policy weighs.

The greedy hypothesis controls of ``metabelief.experiments.failure`` pick an arm outright, while the
agent samples from a softmax: on steps near a tie the two cannot agree, whatever the agent holds.
``choice_likelihood`` instead gives each hypothesis a softmax of its own decision variable (the
evidence difference s - f for the counts, 2 E[p] - 1 for a posterior mean, the log posterior odds
for the training log-odds) at an inverse temperature fitted to the agent's choices on the
training lanes, and scores the agent's choices on the held-out lanes: the hypothesis with the
highest held-out log-likelihood explains the choices best, at its best temperature.

On the two-point training support (p1, p2) the training log posterior odds is linear in the
evidence counts, ``s log(p2 / p1) + f log((1 - p2) / (1 - p1))``, while the majority weighs both
equally (s - f). ``evidence_weights`` regresses the agent's policy log-odds (arm 0 against arm 1)
on (s, f) and reports the ratio of the coefficients (failures / successes): -1 for the majority,
``log((1 - p2) / (1 - p1)) / log(p2 / p1)`` (-0.41 on (0.1, 0.55)) for the training posterior. The
policy's own log-odds is the quantity regressed because a read-out fitted to the training
posterior would return the training combination from any state that holds both counts.

Intervals within a seed treat the task lanes as independent clusters (the steps of one task are
not): standard errors of ratios of sums by the linearisation (delta) method, and of regression
coefficients by the cluster-robust sandwich (e.g. Cameron & Miller 2015, "A practitioner's guide
to cluster-robust inference").
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from metabelief.analysis.records import Record
from metabelief.experiments import output

Z_95 = 1.959963984540054  # the normal 0.975 quantile: within-seed 95% intervals
UNDECIDED = "undecided"
_MAX_STANDARDISED_BETA = 50.0  # the inverse temperature's search range, on standardised decisions
_BISECTIONS = 60


def log_odds_ratio(support: tuple[float, float]) -> float:
    """Failures' weight over successes' in the log posterior odds of p2 against p1 on ``support``."""
    low, high = support
    return math.log((1.0 - high) / (1.0 - low)) / math.log(high / low)


def training_log_odds(counts: jax.Array, support: tuple[float, float]) -> jax.Array:
    """``[...]``: log P(p = p2 | history) / P(p = p1 | history) under the uniform prior on the
    two-point ``support`` (p1, p2), from the evidence counts ``[..., 2]`` (s, f)."""
    low, high = support
    return counts[..., 0] * math.log(high / low) + counts[..., 1] * math.log((1.0 - high) / (1.0 - low))


# ----------------------------------------------------------------------------- the ratio of two sums
def ratio_and_se(numerators: jax.Array, denominators: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``sum(numerators) / sum(denominators)`` over clusters ``[n]`` and its linearised standard
    error ``sqrt(n / (n - 1) * sum((a_i - r b_i)^2)) / sum(b_i)`` (NaN without a denominator)."""
    total = denominators.sum()
    ratio = numerators.sum() / total
    residuals = numerators - ratio * denominators
    n = numerators.shape[0]
    se = jnp.sqrt(n / max(n - 1, 1) * jnp.sum(residuals**2)) / total
    return ratio, se


# ----------------------------------------------------------------------------- held-out log-likelihood
@dataclasses.dataclass(frozen=True)
class ChoiceLikelihood(Record):
    """``choice_likelihood``: the agent's held-out choices scored under each hypothesis's softmax."""

    per_choice: dict[str, float]  # hypothesis (and "agent policy") -> mean log-likelihood per choice, nats
    se: dict[str, float]  # its standard error over the held-out task lanes
    inverse_temperature: dict[str, float]  # hypothesis -> the fitted beta (its decision's units)
    best: str  # the hypothesis above every other by a paired 95% interval, else "undecided"


def choice_likelihood(
    decisions: dict[str, jax.Array],
    chose_arm_0: jax.Array,
    agent_logits: jax.Array,
    fit_lanes: int,
) -> ChoiceLikelihood:
    """Whose softmax explains the agent's choices on held-out tasks?

    Each hypothesis h says P(arm 0) = sigmoid(beta_h d_h) with its decision variable d_h; beta_h
    maximises the log-likelihood of the agent's choices on the first ``fit_lanes`` task lanes and
    the choices of the other lanes are scored.

    Args:
      decisions: hypothesis -> ``[T, N]`` its decision variable (positive: arm 0).
      chose_arm_0: ``[T, N]`` 1 where the agent pulled arm 0, else 0.
      agent_logits: ``[T, N, 2]`` the agent's own policy logits: "agent policy", the likelihood
        of the policy that drew the choices (the ceiling any hypothesis can reach on average).
      fit_lanes: the number of leading lanes to fit the temperatures on (the rest are held out).

    Returns:
      ``ChoiceLikelihood``: ``per_choice`` and ``se`` (over held-out lanes) per hypothesis and for
      "agent policy", ``inverse_temperature`` per hypothesis, ``best``.
    """
    names = list(decisions)
    stacked = jnp.stack([decisions[name] for name in names])  # [H, T, N]
    got = jax.device_get(_choice_likelihood(stacked, chose_arm_0, agent_logits, fit_lanes))
    per_lane = dict(zip([*names, "agent policy"], got["lane_means"], strict=True))  # name -> [n]
    per_choice = {name: float(lanes.mean()) for name, lanes in per_lane.items()}
    se = {name: _se_of_mean(lanes) for name, lanes in per_lane.items()}
    return ChoiceLikelihood(
        per_choice=per_choice,
        se=se,
        inverse_temperature={name: float(beta) for name, beta in zip(names, got["beta"], strict=True)},
        best=best_by_paired_interval({name: per_lane[name] for name in names}),
    )


def _se_of_mean(values) -> float:
    """``output.mean_and_se``'s standard error; NaN for fewer than two values."""
    return output.mean_and_se(values)[1] if values.shape[0] > 1 else float("nan")


def best_by_paired_interval(per_lane: dict) -> str:
    """The name whose per-lane scores exceed every other's, each paired difference's 95% interval
    over lanes above 0; ``UNDECIDED`` if no name does."""
    for name, lanes in per_lane.items():
        differences = [lanes - other for other_name, other in per_lane.items() if other_name != name]
        if all(d.mean() - Z_95 * _se_of_mean(d) > 0 for d in differences):
            return name
    return UNDECIDED


@jax.jit(static_argnums=3)
def _choice_likelihood(decisions, chose_arm_0, agent_logits, fit_lanes) -> dict:
    """Fitted betas ``[H]`` and per-lane mean held-out log-likelihoods ``[H + 1, n_test]``."""
    choice = chose_arm_0.astype(jnp.float32)
    beta = jax.vmap(fit_inverse_temperature, in_axes=(0, None))(
        decisions[:, :, :fit_lanes].reshape(decisions.shape[0], -1), choice[:, :fit_lanes].ravel()
    )
    held_out = decisions[:, :, fit_lanes:]
    hypotheses = jax.vmap(log_likelihoods, in_axes=(0, None))(
        beta[:, None, None] * held_out, choice[:, fit_lanes:]
    )  # [H, T, n_test]
    own = jax.nn.log_softmax(agent_logits[:, fit_lanes:], axis=-1)
    agent = jnp.where(choice[:, fit_lanes:] == 1.0, own[..., 0], own[..., 1])
    return {"beta": beta, "lane_means": jnp.concatenate([hypotheses, agent[None]]).mean(axis=1)}


def log_likelihoods(logit_arm_0: jax.Array, chose_arm_0: jax.Array) -> jax.Array:
    """log P(choice) under P(arm 0) = sigmoid(``logit_arm_0``), elementwise."""
    return jnp.where(chose_arm_0 == 1.0, jax.nn.log_sigmoid(logit_arm_0), jax.nn.log_sigmoid(-logit_arm_0))


def fit_inverse_temperature(decision: jax.Array, chose_arm_0: jax.Array) -> jax.Array:
    """The beta maximising sum log P(choice) under sigmoid(beta * decision), samples ``[M]``.

    The log-likelihood is concave in beta, so its derivative sum d (y - sigmoid(beta d)) falls
    with beta and bisection finds its zero; beta stays within +-50 over the decisions' root mean
    square (where the choices follow the decision's sign exactly the optimum is infinite). A
    decision that is zero everywhere has beta 0.
    """
    scale = jnp.sqrt(jnp.mean(decision**2))
    standard = decision / jnp.where(scale > 0, scale, 1.0)

    def slope(beta):
        return jnp.sum(standard * (chose_arm_0 - jax.nn.sigmoid(beta * standard)))

    def halve(_, bounds):
        low, high = bounds
        middle = 0.5 * (low + high)
        rising = slope(middle) > 0
        return jnp.where(rising, middle, low), jnp.where(rising, high, middle)

    low, high = jax.lax.fori_loop(
        0, _BISECTIONS, halve, (jnp.float32(-_MAX_STANDARDISED_BETA), jnp.float32(_MAX_STANDARDISED_BETA))
    )
    return jnp.where(scale > 0, 0.5 * (low + high) / jnp.where(scale > 0, scale, 1.0), 0.0)


# ----------------------------------------------------------------------------- weights of the evidence
@dataclasses.dataclass(frozen=True)
class EvidenceWeights(Record):
    """``evidence_weights``: a quantity regressed on the evidence counts, y ~ a s + b f + c."""

    successes: float  # a: per outcome whose likelihood is p
    failures: float  # b: per outcome whose likelihood is 1 - p
    ratio: float | None  # b / a: -1 the majority, ``log_odds_ratio(support)`` the training posterior
    ratio_se: float | None  # its cluster-robust (task lanes) standard error, delta method
    r2: float  # the share of the quantity's variance the counts explain linearly


def evidence_weights(quantity: jax.Array, counts: jax.Array) -> EvidenceWeights:
    """Which combination of (s, f) does ``quantity`` ``[T, N]`` follow? Least squares of it on
    ``counts`` ``[T, N, 2]`` (s, f) and an intercept, pooled over steps and lanes; standard errors
    clustered by lane. The ratio is None where the successes' coefficient is 0."""
    got = {key: float(value) for key, value in jax.device_get(_evidence_weights(quantity, counts)).items()}
    defined = got["successes"] != 0.0 and math.isfinite(got["ratio"])
    return EvidenceWeights(
        successes=got["successes"],
        failures=got["failures"],
        ratio=got["ratio"] if defined else None,
        ratio_se=got["ratio_se"] if defined and math.isfinite(got["ratio_se"]) else None,
        r2=got["r2"],
    )


@jax.jit
def _evidence_weights(quantity, counts) -> dict:
    x = counts - counts.mean(axis=(0, 1))  # centred: the intercept drops out, [T, N, 2]
    y = quantity - quantity.mean()  # [T, N]
    gram = jnp.einsum("tni,tnj->ij", x, x)
    coefficients = jnp.linalg.solve(gram, jnp.einsum("tni,tn->i", x, y))  # [a, b]
    residuals = y - x @ coefficients
    scores = jnp.einsum("tni,tn->ni", x, residuals)  # per lane: X_n^T e_n, [N, 2]
    n = scores.shape[0]
    inverse = jnp.linalg.inv(gram)
    covariance = n / max(n - 1, 1) * inverse @ (scores.T @ scores) @ inverse
    a, b = coefficients
    gradient = jnp.stack([-b / a**2, 1.0 / a])  # of b / a
    return {
        "successes": a,
        "failures": b,
        "ratio": b / a,
        "ratio_se": jnp.sqrt(gradient @ covariance @ gradient),
        "r2": 1.0 - jnp.sum(residuals**2) / jnp.sum(y**2),
    }
