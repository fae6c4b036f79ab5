"""The failure experiment's choice measures against float64 NumPy on hand-built arrays: the held-out
log-likelihood of the agent's choices under each hypothesis's softmax, the evidence weights
(failures over successes) and the lane-clustered ratio of sums."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from metabelief.experiments.failure_choices import (
    UNDECIDED,
    best_by_paired_interval,
    choice_likelihood,
    evidence_weights,
    fit_inverse_temperature,
    log_odds_ratio,
    ratio_and_se,
    training_log_odds,
)
from metabelief.experiments.failure_measures import TRAIN_SUPPORT

T, N, FIT = 30, 60, 40  # steps, task lanes, lanes the temperatures are fitted on


def _counts(rng) -> np.ndarray:
    """``[T, N, 2]`` evidence counts (s, f) before each step of random histories."""
    favours_p = rng.integers(0, 2, size=(T, N)).astype(np.float64)
    s = np.cumsum(favours_p, axis=0) - favours_p
    return np.stack([s, np.arange(T)[:, None] - s], axis=-1)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _log_likelihood(logit, choice):
    """float64 log P(choice) under P(arm 0) = sigmoid(logit)."""
    return np.where(choice == 1.0, -np.logaddexp(0.0, -logit), -np.logaddexp(0.0, logit))


def _newton_beta(decision, choice):
    """float64 maximum-likelihood beta of sigmoid(beta * decision) by Newton's method."""
    beta = 0.0
    for _ in range(100):
        p = _sigmoid(beta * decision)
        beta += np.sum(decision * (choice - p)) / np.sum(decision**2 * p * (1.0 - p))
    return beta


@pytest.fixture(scope="module")
def synthetic():
    """Choices drawn from the training log-odds' softmax at beta 0.8 (the generating hypothesis),
    and the decisions of three hypotheses on the same histories."""
    rng = np.random.default_rng(0)
    counts = _counts(rng)
    log_odds = np.asarray(training_log_odds(jnp.asarray(counts), TRAIN_SUPPORT), np.float64) - np.log(8.0)
    decisions = {
        "counts": counts[..., 0] - counts[..., 1],
        "training log-odds": log_odds,
        "constant": np.zeros((T, N)),  # says nothing: beta 0, chance
    }
    choice = (rng.uniform(size=(T, N)) < _sigmoid(0.8 * log_odds)).astype(np.float64)
    logits = rng.normal(size=(T, N, 2))
    got = choice_likelihood(
        {name: jnp.asarray(d, jnp.float32) for name, d in decisions.items()},
        jnp.asarray(choice == 1.0),
        jnp.asarray(logits, jnp.float32),
        FIT,
    )
    return decisions, choice, logits, got


def test_training_log_odds_is_the_two_point_posterior_log_odds():
    s, f = np.meshgrid(np.arange(6.0), np.arange(6.0), indexing="ij")
    low, high = TRAIN_SUPPORT
    want = np.log(high**s * (1 - high) ** f) - np.log(low**s * (1 - low) ** f)
    got = training_log_odds(jnp.asarray(np.stack([s, f], -1), jnp.float32), TRAIN_SUPPORT)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert log_odds_ratio(TRAIN_SUPPORT) == pytest.approx(np.log(0.45 / 0.9) / np.log(0.55 / 0.1))
    assert log_odds_ratio((0.2, 0.8)) == pytest.approx(-1.0)  # a symmetric support: the majority


def test_choice_likelihood_equals_numpy_at_the_numpy_fitted_temperatures(synthetic):
    decisions, choice, logits, got = synthetic
    for name, decision in decisions.items():
        fit, held_out = decision[:, :FIT].ravel(), decision[:, FIT:]
        beta = 0.0 if not decision.any() else _newton_beta(fit, choice[:, :FIT].ravel())
        np.testing.assert_allclose(got.inverse_temperature[name], beta, rtol=1e-3, atol=1e-6, err_msg=name)
        lanes = _log_likelihood(beta * held_out, choice[:, FIT:]).mean(axis=0)
        np.testing.assert_allclose(got.per_choice[name], lanes.mean(), rtol=1e-4, err_msg=name)
        np.testing.assert_allclose(
            got.se[name], lanes.std(ddof=1) / np.sqrt(N - FIT), rtol=1e-3, atol=1e-6, err_msg=name
        )
    own = logits[:, FIT:] - np.logaddexp(logits[:, FIT:, :1], logits[:, FIT:, 1:])
    want = np.where(choice[:, FIT:] == 1.0, own[..., 0], own[..., 1]).mean()
    np.testing.assert_allclose(got.per_choice["agent policy"], want, rtol=1e-5)
    assert got.per_choice["constant"] == pytest.approx(-np.log(2.0), rel=1e-6)


def test_choice_likelihood_is_highest_for_the_hypothesis_that_generated_the_choices(synthetic):
    _, _, _, got = synthetic
    assert got.best == "training log-odds"
    assert got.per_choice["training log-odds"] > got.per_choice["counts"] > got.per_choice["constant"]
    assert got.inverse_temperature["training log-odds"] == pytest.approx(0.8, rel=0.25)


def test_fit_inverse_temperature_is_bounded_when_the_choices_follow_the_sign_exactly():
    decision = jnp.float32([-2.0, -1.0, 1.0, 3.0])
    beta = float(fit_inverse_temperature(decision, (decision > 0).astype(jnp.float32)))
    rms = float(jnp.sqrt(jnp.mean(decision**2)))
    assert beta == pytest.approx(50.0 / rms, rel=1e-4)  # the edge of the search range
    assert float(fit_inverse_temperature(decision, (decision < 0).astype(jnp.float32))) < 0


def test_best_by_paired_interval_is_undecided_for_equal_scores_and_decides_a_clear_lead():
    rng = np.random.default_rng(1)
    lanes = rng.normal(size=20)
    assert best_by_paired_interval({"a": lanes, "b": lanes.copy()}) == UNDECIDED
    assert best_by_paired_interval({"a": lanes, "b": lanes - 0.5 + 0.01 * rng.normal(size=20)}) == "a"
    noisy = lanes + rng.normal(size=20)  # the same mean lead, buried in lane noise
    assert best_by_paired_interval({"a": lanes, "b": noisy - 0.01}) == UNDECIDED


@pytest.mark.parametrize(("a", "b"), [(2.0, -0.8), (1.0, -1.0), (np.log(0.55 / 0.1), np.log(0.45 / 0.9))])
def test_evidence_weights_recover_a_known_linear_combination(a, b):
    rng = np.random.default_rng(2)
    counts = _counts(rng)
    noise = rng.normal(scale=0.05, size=(T, N))
    quantity = a * counts[..., 0] + b * counts[..., 1] + 3.0 + noise

    got = evidence_weights(jnp.asarray(quantity, jnp.float32), jnp.asarray(counts, jnp.float32))

    x = np.concatenate([counts.reshape(-1, 2), np.ones((T * N, 1))], axis=1)
    (want_a, want_b, _), *_ = np.linalg.lstsq(x, quantity.ravel(), rcond=None)
    np.testing.assert_allclose([got.successes, got.failures], [want_a, want_b], rtol=1e-3)
    assert got.ratio == pytest.approx(b / a, abs=5e-3)
    assert 0 < got.ratio_se < 5e-3 and got.r2 > 0.999
    # Cluster-robust: the sandwich over lanes, written out in float64.
    centred_x = (counts - counts.mean(axis=(0, 1))).reshape(T, N, 2)
    residuals = quantity - quantity.mean() - centred_x @ np.array([want_a, want_b])
    scores = np.einsum("tni,tn->ni", centred_x, residuals)
    inverse = np.linalg.inv(np.einsum("tni,tnj->ij", centred_x, centred_x))
    covariance = N / (N - 1) * inverse @ scores.T @ scores @ inverse
    gradient = np.array([-want_b / want_a**2, 1.0 / want_a])
    np.testing.assert_allclose(got.ratio_se, np.sqrt(gradient @ covariance @ gradient), rtol=0.05)


def test_evidence_weights_of_a_quantity_the_counts_do_not_drive_explain_nothing():
    rng = np.random.default_rng(3)
    got = evidence_weights(jnp.asarray(rng.normal(size=(T, N)), jnp.float32), jnp.asarray(_counts(rng)))
    assert got.r2 < 0.02 and abs(got.successes) < 0.1 and abs(got.failures) < 0.1


def test_ratio_and_se_against_numpy_and_zero_when_every_cluster_agrees():
    numerators, denominators = np.array([1.0, 3.0, 2.0, 6.0]), np.array([2.0, 4.0, 4.0, 8.0])
    ratio, se = ratio_and_se(jnp.asarray(numerators), jnp.asarray(denominators))
    r = numerators.sum() / denominators.sum()
    want = math.sqrt(4 / 3 * np.sum((numerators - r * denominators) ** 2)) / denominators.sum()
    np.testing.assert_allclose([ratio, se], [r, want], rtol=1e-6)
    _, zero = ratio_and_se(jnp.asarray(0.25 * denominators), jnp.asarray(denominators))
    assert float(zero) == 0.0
