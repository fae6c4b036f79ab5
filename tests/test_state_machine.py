"""The state-machine simulation's Bayes state: posterior counts recovered from the belief features."""

from __future__ import annotations

import jax
import numpy as np

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
