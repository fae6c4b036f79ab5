"""The failure experiment's measures of whose posterior an agent acts on and reads out."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metabelief import probes
from metabelief.agents.lstm import RecurrentAgent
from metabelief.experiments.failure import belief_readout, compare_readout, follows_training_prior
from metabelief.experiments.probing import split_sizes
from metabelief.rollout import Trajectory


def _posterior_mean(support, successes_0, failures_0, successes_1, failures_1):
    """E[p | counts] for the dependent bandit (arm 0 pays p, arm 1 pays 1 - p), p uniform on support."""
    p = np.asarray(support, np.float64)[:, None, None]
    log_likelihood = (successes_0 + failures_1) * np.log(p) + (failures_0 + successes_1) * np.log1p(-p)
    weights = np.exp(log_likelihood - log_likelihood.max(axis=0))
    return (weights * p).sum(axis=0) / weights.sum(axis=0)


def test_follows_training_prior_counts_only_steps_where_the_greedy_arms_differ():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 6, size=(4, 30, 20))
    training = _posterior_mean((0.1, 0.9), *counts)
    test = _posterior_mean((0.1, 0.5), *counts)
    test[0, :5] = 0.5  # ties never count
    logits = rng.normal(size=(30, 20, 2))

    got = follows_training_prior(jnp.asarray(logits), jnp.asarray(training), jnp.asarray(test))

    probability_of_arm_0 = 1.0 / (1.0 + np.exp(logits[..., 1] - logits[..., 0]))
    chosen = []
    for t in range(30):
        for n in range(20):
            if min(abs(training[t, n] - 0.5), abs(test[t, n] - 0.5)) <= 1e-6:  # a tie, as documented
                continue
            training_arm, test_arm = int(training[t, n] < 0.5), int(test[t, n] < 0.5)
            if training_arm != test_arm:
                p0 = probability_of_arm_0[t, n]
                chosen.append(p0 if training_arm == 0 else 1.0 - p0)
    assert got["steps"] == len(chosen) > 50
    np.testing.assert_allclose(got["probability"], np.mean(chosen), rtol=1e-5)


def test_follows_training_prior_reports_no_steps_when_the_priors_agree():
    mean = jnp.linspace(0.05, 0.95, 12).reshape(3, 4)
    got = follows_training_prior(jnp.zeros((3, 4, 2)), mean, 0.5 + 0.2 * (mean - 0.5))
    assert got == {"steps": 0, "probability": None}


@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_belief_readout_recovers_a_linearly_encoded_posterior(noise):
    num_steps, num_tasks, hidden_size = 6, 64, 5
    keys = jax.random.split(jax.random.key(0), 3)
    mean_of_p = jax.random.uniform(keys[0], (num_steps, num_tasks, 1), minval=0.1, maxval=0.9)
    mixing = jax.random.normal(keys[1], (1, hidden_size))
    hidden = (
        mean_of_p @ mixing + 0.3 + noise * jax.random.normal(keys[2], (num_steps, num_tasks, hidden_size))
    )
    features = jnp.concatenate([mean_of_p, 1.0 - mean_of_p], axis=-1)
    zeros = jnp.zeros((num_steps, num_tasks))
    history = Trajectory(
        obs=jnp.zeros((num_steps + 1, num_tasks, 1)),
        actions=zeros.astype(jnp.int32),
        rewards=zeros,
        dones=zeros.astype(bool),
        hidden=hidden,
        cell=hidden,
        logits=jnp.zeros((num_steps, num_tasks, 2)),
        values=zeros,
        features=features,
        truth=features,
    )
    agent = RecurrentAgent(num_actions=2, obs_size=1, horizon=num_steps, hidden_size=hidden_size)

    readout = belief_readout(history, agent, split_sizes(num_tasks))

    decoded = probes.predict(readout, hidden)
    error = float(jnp.sqrt(jnp.mean((decoded - mean_of_p) ** 2)))
    assert error < 1e-3 + noise


def test_compare_readout_against_numpy():
    rng = np.random.default_rng(1)
    training = rng.uniform(0.1, 0.9, size=(7, 40))
    test = np.where(rng.uniform(size=(7, 40)) < 0.3, training, rng.uniform(0.4, 0.6, size=(7, 40)))
    decoded = training + rng.normal(scale=0.2, size=(7, 40))

    got = compare_readout(*(jnp.asarray(x, jnp.float32) for x in (decoded, training, test)))

    differ = np.abs(training - test) > 1e-3
    nearer = np.abs(decoded - training) < np.abs(decoded - test)
    assert got["differing_pairs"] == differ.sum()
    np.testing.assert_allclose(got["closer_to_training"], nearer[differ].mean(), rtol=1e-6)
    for prior, mean in (("training prior", training), ("test prior", test)):
        np.testing.assert_allclose(got["rmse"][prior], np.sqrt(np.mean((decoded - mean) ** 2)), rtol=1e-5)
        np.testing.assert_allclose(
            got["rmse_by_time"][prior], np.sqrt(np.mean((decoded - mean) ** 2, axis=1)), rtol=1e-5
        )
        np.testing.assert_allclose(got["confidence"][prior], np.abs(mean - 0.5).mean(), rtol=1e-5)
    np.testing.assert_allclose(got["confidence"]["read-out"], np.abs(decoded - 0.5).mean(), rtol=1e-5)


def test_compare_readout_has_no_vote_when_the_posteriors_agree():
    mean = jnp.full((3, 4), 0.7)
    assert compare_readout(mean + 0.1, mean, mean)["closer_to_training"] is None
