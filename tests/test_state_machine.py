"""The state-machine simulation's Bayes state: posterior counts recovered from the belief features."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief.analysis.state_machine import counts_from_features
from metabelief.testing import random_rollout, sample_tasks


def test_counts_from_features_equal_float64_counts_of_the_history():
    family = metabelief.make("bernoulli_bandit", num_arms=3, horizon=30, prior_a=2.0, prior_b=0.5)
    tasks = sample_tasks(family, jax.random.key(0), 64)
    history = jax.jit(random_rollout, static_argnames=("family", "num_steps"))(
        family, jax.random.key(1), tasks, num_steps=30
    )
    counts = np.asarray(counts_from_features(family, history.features))  # [T + 1, N, 6]
    actions, rewards = np.asarray(history.actions), np.asarray(history.rewards, np.float64)
    successes, failures = np.zeros((64, 3)), np.zeros((64, 3))
    for t in range(31):
        np.testing.assert_allclose(counts[t], np.concatenate([successes, failures], axis=1), atol=2e-3)
        if t < 30:
            lanes = np.arange(64)
            successes[lanes, actions[t]] += rewards[t]
            failures[lanes, actions[t]] += 1.0 - rewards[t]


# ---------------------------------------------------------------------------------------------
# The state dissimilarity on hand-built states with known answers


def _splits(rng, num_rows: int, width: int):
    return [jnp.asarray(rng.standard_normal((num_rows, width)), jnp.float32) for _ in range(3)]


def test_state_dissimilarity_is_zero_for_an_exact_linear_map_and_one_for_the_mean():
    from metabelief.analysis.state_machine import _linear_map, _normalised_mse

    rng = np.random.default_rng(0)
    sources = _splits(rng, 400, 6)
    weights = jnp.asarray(rng.standard_normal((6, 3)), jnp.float32)
    targets = [x @ weights + 2.0 for x in sources]  # an exact affine function of the source state
    assert _normalised_mse(_linear_map(sources, targets), targets[2]) < 1e-6
    # Predicting each dimension's mean scores 1 (the MSE of the mean is the variance); a constant
    # dimension is left out rather than divided by zero.
    test = jnp.concatenate([targets[2], jnp.ones((400, 1))], axis=-1)
    assert _normalised_mse(jnp.broadcast_to(test.mean(axis=0), test.shape), test) == pytest.approx(
        1.0, abs=1e-5
    )
    # A source that carries nothing about the target cannot be mapped onto it: about 1.
    noise = _splits(rng, 400, 6)
    assert _normalised_mse(_linear_map(noise, targets), targets[2]) == pytest.approx(1.0, abs=0.1)


def test_state_dissimilarity_of_half_the_target_is_its_unexplained_share():
    from metabelief.analysis.state_machine import _linear_map, _normalised_mse

    rng = np.random.default_rng(1)
    known, hidden = _splits(rng, 2000, 1), _splits(rng, 2000, 1)
    targets = [k + h for k, h in zip(known, hidden, strict=True)]  # variance 2, half of it visible
    assert _normalised_mse(_linear_map(known, targets), targets[2]) == pytest.approx(0.5, abs=0.05)
