"""The failure experiment's measures of whose posterior an agent acts on and reads out, and its verdicts."""

import jax.numpy as jnp
import numpy as np
import pytest

from metabelief.experiments.failure_measures import (
    TRAIN_SUPPORT,
    Preference,
    compare_readout,
    evidence_counts,
    prefers_training_arm,
)
from metabelief.rollout import Trajectory


def _posterior_mean(support, successes_0, failures_0, successes_1, failures_1):
    """E[p | counts] for the dependent bandit (arm 0 pays p, arm 1 pays 1 - p), p uniform on support."""
    p = np.asarray(support, np.float64)[:, None, None]
    log_likelihood = (successes_0 + failures_1) * np.log(p) + (failures_0 + successes_1) * np.log1p(-p)
    weights = np.exp(log_likelihood - log_likelihood.max(axis=0))
    return (weights * p).sum(axis=0) / weights.sum(axis=0)


def _greedy_arm_0(mean):
    return np.where(mean > 0.5, 1.0, np.where(mean < 0.5, 0.0, 0.5))


@pytest.mark.parametrize("other", ["test posterior", "majority"])
def test_prefers_training_arm_counts_only_steps_where_the_greedy_arms_differ(other):
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 6, size=(4, 30, 20))
    training = _posterior_mean(TRAIN_SUPPORT, *counts)
    if other == "test posterior":
        other_arm_0 = _greedy_arm_0(_posterior_mean((0.1, 0.5), *counts))
    else:
        evidence = counts[0] + counts[3] - counts[1] - counts[2]  # for p minus against p
        other_arm_0 = _greedy_arm_0(0.5 + evidence)
    other_arm_0[:5, 0] = 0.5  # ties never count
    arm_0 = rng.uniform(size=(30, 20))

    got = prefers_training_arm(*(jnp.asarray(x, jnp.float32) for x in (arm_0, training, other_arm_0)))

    chosen = []
    for t in range(30):
        for n in range(20):
            if abs(training[t, n] - 0.5) <= 1e-6 or other_arm_0[t, n] == 0.5:  # a tie, as documented
                continue
            training_arm_0 = float(training[t, n] > 0.5)
            if training_arm_0 != other_arm_0[t, n]:
                chosen.append(arm_0[t, n] if training_arm_0 else 1.0 - arm_0[t, n])
    assert got.steps == len(chosen) > 20
    np.testing.assert_allclose(got.probability, np.mean(chosen), rtol=1e-5)


def test_prefers_training_arm_reports_no_steps_when_the_rules_agree():
    mean = jnp.linspace(0.05, 0.95, 12).reshape(3, 4)
    got = prefers_training_arm(jnp.zeros((3, 4)), mean, jnp.where(mean > 0.5, 1.0, 0.0))
    assert got == Preference(steps=0, probability=None, se=None)
    assert got.to_dict() == {"steps": 0, "probability": None, "se": None}


def test_evidence_counts_are_the_outcomes_before_each_step():
    rng = np.random.default_rng(2)
    actions, rewards = rng.integers(0, 2, size=(9, 5)), rng.integers(0, 2, size=(9, 5)).astype(np.float32)
    history = _history(actions=jnp.asarray(actions, jnp.int32), rewards=jnp.asarray(rewards))

    got = np.asarray(evidence_counts(history))

    for n in range(5):
        s = f = 0
        for t in range(9):
            np.testing.assert_array_equal(got[t, n], [s, f])
            favours_p = rewards[t, n] if actions[t, n] == 0 else 1.0 - rewards[t, n]
            s, f = s + favours_p, f + 1.0 - favours_p


def test_the_training_support_makes_posterior_and_majority_disagree():
    """On (0.1, 0.55) the training posterior prefers arm 0 on evidence rates the majority calls for
    arm 1, for a share of steps the symmetric support never has."""
    successes, failures = np.meshgrid(np.arange(40), np.arange(40), indexing="ij")
    zeros = np.zeros_like(successes)
    for support, disagree in ((TRAIN_SUPPORT, True), ((0.1, 0.9), False)):
        arm_0 = _greedy_arm_0(_posterior_mean(support, successes, failures, zeros, zeros))
        majority = _greedy_arm_0(0.5 + successes - failures)
        differs = (arm_0 != majority) & (arm_0 != 0.5) & (majority != 0.5)
        assert differs.any() == disagree
    # e.g. 9 outcomes for p, 11 against: 0.55 is far likelier than 0.1, so E[p] > 1/2.
    assert _posterior_mean(TRAIN_SUPPORT, 9, 11, 0, 0) > 0.5


def _history(**fields):
    num_steps, num_tasks = fields["actions"].shape
    zeros = jnp.zeros((num_steps, num_tasks))
    defaults = dict(
        obs=jnp.zeros((num_steps + 1, num_tasks, 1)),
        actions=zeros.astype(jnp.int32),
        rewards=zeros,
        dones=zeros.astype(bool),
        hidden=jnp.zeros((num_steps, num_tasks, 3)),
        memory=jnp.zeros((num_steps, num_tasks, 3)),
        logits=jnp.zeros((num_steps, num_tasks, 2)),
        values=zeros,
        features=jnp.zeros((num_steps, num_tasks, 2)),
        truth=jnp.zeros((num_steps, num_tasks, 2)),
    )
    return Trajectory(**(defaults | fields))


def test_compare_readout_against_numpy():
    rng = np.random.default_rng(1)
    training = rng.uniform(0.1, 0.9, size=(7, 40))
    test = np.where(rng.uniform(size=(7, 40)) < 0.3, training, rng.uniform(0.4, 0.6, size=(7, 40)))
    decoded = training + rng.normal(scale=0.2, size=(7, 40))

    got = compare_readout(*(jnp.asarray(x, jnp.float32) for x in (decoded, training, test)))

    differ = np.abs(training - test) > 1e-3
    nearer = np.abs(decoded - training) < np.abs(decoded - test)
    assert got.differing_pairs == differ.sum()
    np.testing.assert_allclose(got.closer_to_training, nearer[differ].mean(), rtol=1e-6)
    for prior, mean in (("training prior", training), ("test prior", test)):
        np.testing.assert_allclose(got.rmse[prior], np.sqrt(np.mean((decoded - mean) ** 2)), rtol=1e-5)
        np.testing.assert_allclose(
            got.rmse_by_time[prior], np.sqrt(np.mean((decoded - mean) ** 2, axis=1)), rtol=1e-5
        )
        np.testing.assert_allclose(got.confidence[prior], np.abs(mean - 0.5).mean(), rtol=1e-5)
    np.testing.assert_allclose(got.confidence["read-out"], np.abs(decoded - 0.5).mean(), rtol=1e-5)
    written = got.to_dict()
    assert set(written) == {
        "rmse",
        "rmse_by_time",
        "closer_to_training",
        "closer_to_training_se",
        "differing_pairs",
        "confidence",
    }
    assert written["rmse_by_time"]["test prior"] == list(got.rmse_by_time["test prior"])


def test_compare_readout_has_no_vote_when_the_posteriors_agree():
    mean = jnp.full((3, 4), 0.7)
    assert compare_readout(mean + 0.1, mean, mean).closer_to_training is None
