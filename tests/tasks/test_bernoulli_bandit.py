"""BernoulliBandit: beliefs against a float64 NumPy Beta posterior, dynamics against the prior.

Every belief check runs the family's own ``belief_init``/``belief_update`` under ``jax.jit`` and
``lax.scan`` and compares ``belief_features`` after each step with a posterior computed here from
the history prefix in float64 NumPy, without any of the package's code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import metabelief
from metabelief.tasks.bernoulli_bandit import BernoulliTask
from tests.tasks.bandit_helpers import assert_rewards_follow, belief_features_along, random_rollout

ATOL = 1e-5  # float32 features against a float64 reference
NUM_ARMS = (2, 3, 5)
PRIORS = ((1.0, 1.0), (0.5, 2.0), (3.0, 0.7))
LONG_HISTORY = 10_000
HYPOTHESIS_STEPS = 24  # every hypothesis history is padded to this length: one compile per family


def make_family(num_arms: int, prior: tuple[float, float], horizon: int = 100):
    return metabelief.make(
        "bernoulli_bandit", num_arms=num_arms, horizon=horizon, prior_a=prior[0], prior_b=prior[1]
    )


def reference_features(
    num_arms: int, prior: tuple[float, float], actions: np.ndarray, rewards: np.ndarray
) -> np.ndarray:
    """float64 [T + 1, 2 K]: per arm the Beta posterior mean, then its std, after each prefix.

    The std comes from the second moment E[p^2] = a (a + 1) / ((a + b)(a + b + 1)), not from the
    closed-form variance the package uses.
    """
    pulled = actions[:, None] == np.arange(num_arms)  # [T, K]
    successes = np.cumsum(pulled & (rewards[:, None] == 1.0), axis=0)
    failures = np.cumsum(pulled & (rewards[:, None] == 0.0), axis=0)
    zeros = np.zeros((1, num_arms))
    alpha = prior[0] + np.concatenate([zeros, successes]).astype(np.float64)  # [T + 1, K]
    beta = prior[1] + np.concatenate([zeros, failures]).astype(np.float64)
    mean = alpha / (alpha + beta)
    second_moment = alpha * (alpha + 1.0) / ((alpha + beta) * (alpha + beta + 1.0))
    std = np.sqrt(second_moment - mean**2)
    return np.concatenate([mean, std], axis=1)


def sampled_histories(
    rng: np.random.Generator, num_arms: int, prior: tuple[float, float], batch: int, steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """Uniformly random arms on tasks drawn from the prior: int64 actions and float64 rewards [B, T]."""
    probs = rng.beta(prior[0], prior[1], size=(batch, num_arms))
    actions = rng.integers(0, num_arms, size=(batch, steps))
    rewards = (rng.random((batch, steps)) < np.take_along_axis(probs, actions, axis=1)).astype(np.float64)
    return actions, rewards


def assert_matches_reference(family, num_arms, prior, actions, rewards) -> np.ndarray:
    features = belief_features_along(
        family, jnp.asarray(actions, jnp.int32), jnp.asarray(rewards, jnp.float32)
    )
    assert features.dtype == jnp.float32
    features = np.asarray(features)
    assert features.shape == (actions.shape[0], actions.shape[1] + 1, 2 * num_arms)
    assert np.isfinite(features).all()
    for history in range(actions.shape[0]):
        expected = reference_features(num_arms, prior, actions[history], rewards[history])
        np.testing.assert_allclose(features[history], expected, rtol=0.0, atol=ATOL)
    return features


# ---------------------------------------------------------------------------------------------
# Beliefs


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("num_arms", NUM_ARMS)
def test_belief_matches_beta_posterior_on_every_prefix_of_10000_steps(num_arms, prior):
    rng = np.random.default_rng([num_arms, int(10 * prior[0]), int(10 * prior[1])])
    actions, rewards = sampled_histories(rng, num_arms, prior, batch=3, steps=LONG_HISTORY)
    features = assert_matches_reference(make_family(num_arms, prior), num_arms, prior, actions, rewards)
    # The prior itself opens every trajectory: the Beta(a, b) mean and std for each arm.
    a, b = prior
    prior_std = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1.0)))
    np.testing.assert_allclose(features[:, 0, :num_arms], a / (a + b), rtol=0.0, atol=ATOL)
    np.testing.assert_allclose(features[:, 0, num_arms:], prior_std, rtol=0.0, atol=ATOL)
    # After 10,000 pulls every arm has been pulled > 1,000 times, so its std is < 1 / sqrt(4 * 1,000).
    assert (features[:, -1, num_arms:] < 0.016).all()


@given(data=st.data())
def test_belief_matches_beta_posterior_on_short_histories(data):
    num_arms = data.draw(st.sampled_from(NUM_ARMS), label="num_arms")
    prior = data.draw(st.sampled_from(PRIORS), label="prior")
    # Beta priors put mass on all of (0, 1), so every (arm, reward) sequence is a possible history.
    history = data.draw(
        st.lists(
            st.tuples(st.integers(0, num_arms - 1), st.sampled_from((0.0, 1.0))),
            max_size=HYPOTHESIS_STEPS,
        ),
        label="history",
    )
    length = len(history)
    actions = np.zeros(HYPOTHESIS_STEPS, np.int64)
    rewards = np.zeros(HYPOTHESIS_STEPS, np.float64)
    if history:
        actions[:length], rewards[:length] = np.asarray(history).T
    features = belief_features_along(
        make_family(num_arms, prior),
        jnp.asarray(actions[None], jnp.int32),
        jnp.asarray(rewards[None], jnp.float32),
    )
    # Only the first ``length`` transitions are the drawn history; the rest is padding.
    expected = reference_features(num_arms, prior, actions[:length], rewards[:length])
    np.testing.assert_allclose(np.asarray(features)[0, : length + 1], expected, rtol=0.0, atol=ATOL)


def test_belief_counts_only_the_pulled_arm():
    """A hand-computed case: Beta(2, 3) prior, arm 1 pays twice and fails once, arm 0 never pulled."""
    family = make_family(3, (2.0, 3.0))
    actions = np.array([[1, 1, 1, 2]])
    rewards = np.array([[1.0, 0.0, 1.0, 0.0]])
    features = np.asarray(belief_features_along(family, jnp.asarray(actions), jnp.asarray(rewards)))
    # Arm 0: Beta(2, 3); arm 1: Beta(4, 4); arm 2: Beta(2, 4).
    expected_mean = [2 / 5, 4 / 8, 2 / 6]
    expected_std = [np.sqrt(6 / (25 * 6)), np.sqrt(16 / (64 * 9)), np.sqrt(8 / (36 * 7))]
    np.testing.assert_allclose(features[0, -1], expected_mean + expected_std, rtol=0.0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Environment dynamics


@pytest.mark.parametrize("prior", PRIORS)
def test_sample_task_is_beta_prior(prior):
    num_tasks, num_arms = 10_000, 3
    family = make_family(num_arms, prior)
    keys = jax.random.split(jax.random.key(11), num_tasks)
    # Not jitted: eagerly the prior is an argument of JAX's own compiled Beta sampler, so its one
    # (slow) compile serves every prior, where jit would bake each prior in and compile anew.
    tasks = jax.vmap(family.sample_task)(keys)
    assert isinstance(tasks, BernoulliTask)
    assert tasks.probs.shape == (num_tasks, num_arms) and tasks.probs.dtype == jnp.float32
    probs = np.asarray(tasks.probs, np.float64)
    assert ((probs >= 0.0) & (probs <= 1.0)).all()
    a, b = prior
    mean = a / (a + b)
    variance = a * b / ((a + b) ** 2 * (a + b + 1.0))
    samples = probs.ravel()
    mean_se = np.sqrt(variance / samples.size)
    assert abs(samples.mean() - mean) < 5.0 * mean_se
    squared_deviation = (samples - mean) ** 2
    variance_se = squared_deviation.std() / np.sqrt(samples.size)
    assert abs(squared_deviation.mean() - variance) < 5.0 * variance_se
    # Arms are drawn independently: no correlation between arms 0 and 1.
    correlation = np.corrcoef(probs[:, 0], probs[:, 1])[0, 1]
    assert abs(correlation) < 5.0 / np.sqrt(num_tasks)


@pytest.mark.parametrize("num_arms, prior", [(2, (1.0, 1.0)), (5, (0.5, 2.0))])
def test_step_rewards_follow_sampled_arm_probabilities(num_arms, prior):
    family = make_family(num_arms, prior, horizon=50)
    # Tasks from the prior, drawn in NumPy (sample_task has its own test).
    rng = np.random.default_rng(num_arms)
    tasks = BernoulliTask(probs=jnp.asarray(rng.beta(*prior, size=(128, num_arms)), jnp.float32))
    # 400 steps, well past the horizon of 50: rewards keep coming from the same task.
    out = random_rollout(family, jax.random.key(3), tasks, 400)
    probs = np.asarray(tasks.probs, np.float64)
    rewards = np.asarray(out["rewards"], np.float64)
    assert out["rewards"].dtype == jnp.float32
    assert set(np.unique(rewards)) <= {0.0, 1.0}
    assert_rewards_follow(probs, np.asarray(out["actions"]), rewards)


def test_done_from_horizon_on_and_task_never_changes():
    horizon, num_steps = 7, 30
    family = make_family(5, (1.0, 1.0), horizon=horizon)
    # Deterministic arms make every reward a check that step still plays this very task.
    probs = np.array([[0.0, 1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0, 0.0]], np.float32)
    tasks = BernoulliTask(probs=jnp.asarray(probs))
    out = {
        name: np.asarray(value)
        for name, value in random_rollout(family, jax.random.key(5), tasks, num_steps).items()
    }
    assert family.num_actions == 5 and family.obs_size == 0 and family.horizon == horizon
    np.testing.assert_array_equal(out["reset_time"], [0, 0])
    assert out["reset_obs"].shape == (2, 0) and out["reset_obs"].dtype == np.float32
    assert out["obs"].shape == (num_steps, 2, 0) and out["obs"].dtype == np.float32
    steps_taken = np.arange(1, num_steps + 1)[:, None]  # [T, 1]
    np.testing.assert_array_equal(out["time"], np.broadcast_to(steps_taken, (num_steps, 2)))
    assert out["dones"].dtype == np.bool_
    np.testing.assert_array_equal(out["dones"], np.broadcast_to(steps_taken >= horizon, (num_steps, 2)))
    expected_rewards = np.take_along_axis(probs, out["actions"].T, axis=1).T  # [T, N]
    np.testing.assert_array_equal(out["rewards"], expected_rewards)
    np.testing.assert_array_equal(out["truth"], np.broadcast_to(probs, (num_steps, 2, 5)))


# ---------------------------------------------------------------------------------------------
# Construction


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(num_arms=1), "num_arms"),
        (dict(num_arms=0), "num_arms"),
        (dict(num_arms=-2), "num_arms"),
        (dict(num_arms=2.0), "num_arms"),
        (dict(num_arms="3"), "num_arms"),
        (dict(num_arms=True), "num_arms"),
        (dict(prior_a=0.0), "prior_a"),
        (dict(prior_a=-1.0), "prior_a"),
        (dict(prior_a=float("inf")), "prior_a"),
        (dict(prior_a=float("nan")), "prior_a"),
        (dict(prior_b=0.0), "prior_b"),
        (dict(prior_b=-0.5), "prior_b"),
        (dict(prior_b=float("inf")), "prior_b"),
        (dict(prior_b=float("nan")), "prior_b"),
        (dict(prior_b="1"), "prior_b"),
        (dict(horizon=0), "horizon"),
        (dict(horizon=-5), "horizon"),
        (dict(horizon=10.5), "horizon"),
        (dict(arms=3), "arms"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_them(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        metabelief.make("bernoulli_bandit", **kwargs)


def test_valid_arguments_are_normalised():
    family = metabelief.make(
        "bernoulli_bandit", num_arms=np.int64(4), horizon=np.int32(3), prior_a=2, prior_b=0.5
    )
    assert (family.num_arms, family.horizon, family.prior_a, family.prior_b) == (4, 3, 2.0, 0.5)
    assert type(family.num_arms) is int and type(family.prior_a) is float
    assert family.num_actions == 4
