"""The dependent bandit: beliefs against float64 NumPy Bayes, dynamics against the prior over p.

Beliefs run the family's own ``belief_init``/``belief_update`` under ``jax.jit`` and ``lax.scan``;
the references are computed here from the history prefix without any of the package's code:
the Beta posterior (and, for short histories, quadrature over p) when ``support=None``, and
brute-force Bayes over the support values when a support is given.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import metabelief
from metabelief.tasks.dependent_bandit import DependentTask
from tests.tasks.bandit_helpers import assert_rewards_follow, random_rollout, run_beliefs, sample_tasks

ATOL = 1e-5  # float32 features against a float64 reference
LONG_HISTORY = 10_000
HYPOTHESIS_STEPS = 24  # every hypothesis history is padded to this length: one compile per family
SUPPORTS = (
    (0.1, 0.9),
    (0.2, 0.5, 0.7),
    (0.3, 0.30001),
    (0.0, 0.5, 1.0),
    (0.0, 1.0),
    (0.5,),
)


def outcome_likelihoods(p: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """float64 [T, ...]: P(reward_t | action_t, p) for each step, arm 0 paying p and arm 1 paying 1 - p."""
    p = np.asarray(p, np.float64)
    arm_prob = np.where(actions[:, None] == 0, p, 1.0 - p)  # [T, S]
    return np.where(rewards[:, None] == 1.0, arm_prob, 1.0 - arm_prob)


def reference_support_features(
    support: tuple[float, ...], actions: np.ndarray, rewards: np.ndarray
) -> np.ndarray:
    """float64 [T + 1, 2 + S]: ``[E p, 1 - E p, posterior over the support]`` after each prefix.

    Brute-force Bayes: the log-likelihood of every observation under every support value, summed
    over the prefix (log 0 = -inf rules a value out for good), then a logsumexp over the finite
    entries.
    """
    values = np.asarray(support, np.float64)
    with np.errstate(divide="ignore"):
        step_log_likelihood = np.log(outcome_likelihoods(values, actions, rewards))  # [T, S]
    log_joint = np.concatenate([np.zeros((1, values.size)), np.cumsum(step_log_likelihood, axis=0)])
    assert not np.isnan(log_joint).any()
    possible = np.isfinite(log_joint)
    assert possible.any(axis=1).all(), "the history is impossible under every support value"
    shift = np.max(np.where(possible, log_joint, -np.inf), axis=1, keepdims=True)
    weights = np.where(possible, np.exp(np.where(possible, log_joint - shift, 0.0)), 0.0)
    posterior = weights / weights.sum(axis=1, keepdims=True)
    mean = posterior @ values
    return np.concatenate([mean[:, None], 1.0 - mean[:, None], posterior], axis=1)


def evidence_counts(actions: np.ndarray, rewards: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 [T + 1] counts of outcomes with likelihood p and with likelihood 1 - p, per prefix."""
    for_p = ((actions == 0) & (rewards == 1.0)) | ((actions == 1) & (rewards == 0.0))
    for_p = np.concatenate([[0.0], np.cumsum(for_p)])
    return for_p, np.arange(actions.size + 1) - for_p


def reference_beta_features(actions: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """float64 [T + 1, 3]: ``[E p, 1 - E p, std p]`` of the Beta(1 + for p, 1 + against p) posterior."""
    for_p, against_p = evidence_counts(actions, rewards)
    alpha, beta = 1.0 + for_p, 1.0 + against_p
    mean = alpha / (alpha + beta)
    second_moment = alpha * (alpha + 1.0) / ((alpha + beta) * (alpha + beta + 1.0))
    return np.stack([mean, 1.0 - mean, np.sqrt(second_moment - mean**2)], axis=1)


# Gauss-Legendre on [0, 1] integrates the polynomial p^a (1 - p)^b * p^k exactly for a + b + k <
# 2 * 64, so for short histories it computes the uniform-prior posterior with no conjugacy at all.
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(64)
_NODES, _WEIGHTS = (_NODES + 1.0) / 2.0, _WEIGHTS / 2.0


def quadrature_beta_features(actions: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """float64 [3]: ``[E p, 1 - E p, std p]`` under p ~ U[0, 1] by integrating the likelihood."""
    likelihood = np.prod(outcome_likelihoods(_NODES, actions, rewards), axis=0) * _WEIGHTS  # [nodes]
    evidence = likelihood.sum()
    mean = (likelihood * _NODES).sum() / evidence
    variance = (likelihood * (_NODES - mean) ** 2).sum() / evidence
    return np.array([mean, 1.0 - mean, np.sqrt(variance)])


def sampled_history(rng: np.random.Generator, p: float, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniformly random arms on the task with arm probabilities (p, 1 - p)."""
    actions = rng.integers(0, 2, size=steps)
    rewards = (rng.random(steps) < np.where(actions == 0, p, 1.0 - p)).astype(np.float64)
    return actions, rewards


def padded(history: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    """A hypothesis history as [1, HYPOTHESIS_STEPS] actions and rewards, zero padded at the end."""
    actions = np.zeros((1, HYPOTHESIS_STEPS), np.int64)
    rewards = np.zeros((1, HYPOTHESIS_STEPS), np.float64)
    if history:
        actions[0, : len(history)], rewards[0, : len(history)] = np.asarray(history).T
    return actions, rewards


# ---------------------------------------------------------------------------------------------
# Beliefs, p ~ U[0, 1]


def test_uniform_prior_belief_matches_beta_posterior_on_every_prefix_of_10000_steps():
    rng = np.random.default_rng(0)
    family = metabelief.make("dependent_bandit")
    true_ps = np.concatenate([rng.random(3), [0.0, 1.0]])  # with the extremes, p = 0 and p = 1
    histories = [sampled_history(rng, p, LONG_HISTORY) for p in true_ps]
    actions, rewards = (np.stack(parts) for parts in zip(*histories, strict=True))
    features = run_beliefs(family, actions, rewards)
    assert features.shape == (true_ps.size, LONG_HISTORY + 1, 3)
    assert np.isfinite(features).all()
    for history in range(true_ps.size):
        expected = reference_beta_features(actions[history], rewards[history])
        np.testing.assert_allclose(features[history], expected, rtol=0.0, atol=ATOL)
    # No drift: after 10,000 pulls the posterior mean sits on the truth.
    np.testing.assert_allclose(features[:, -1, 0], true_ps, rtol=0.0, atol=0.02)
    np.testing.assert_allclose(features[:, 0], [[0.5, 0.5, np.sqrt(1.0 / 12.0)]] * true_ps.size, atol=ATOL)


@given(history=st.lists(st.tuples(st.integers(0, 1), st.sampled_from((0.0, 1.0))), max_size=HYPOTHESIS_STEPS))
def test_uniform_prior_belief_matches_quadrature_on_short_histories(history):
    # Under p ~ U[0, 1] every (arm, reward) sequence is a possible history.
    actions, rewards = padded(history)
    features = run_beliefs(metabelief.make("dependent_bandit"), actions, rewards)[0]
    length = len(history)
    for prefix in range(length + 1):
        expected = quadrature_beta_features(actions[0, :prefix], rewards[0, :prefix])
        np.testing.assert_allclose(features[prefix], expected, rtol=0.0, atol=ATOL)


# ---------------------------------------------------------------------------------------------
# Beliefs, p uniform over a finite support


def support_histories(support: tuple[float, ...], seed: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """One history per support value, each generated with that value as the true p: [S, T]."""
    rng = np.random.default_rng(seed)
    histories = [sampled_history(rng, p, steps) for p in support]
    return tuple(np.stack(parts) for parts in zip(*histories, strict=True))


def assert_support_beliefs_match(support, actions, rewards) -> tuple[np.ndarray, np.ndarray]:
    family = metabelief.make("dependent_bandit", support=support)
    features = run_beliefs(family, actions, rewards)
    assert features.shape == (actions.shape[0], actions.shape[1] + 1, 2 + len(support))
    assert np.isfinite(features).all()
    expected = np.stack(
        [reference_support_features(support, a, r) for a, r in zip(actions, rewards, strict=True)]
    )
    np.testing.assert_allclose(features, expected, rtol=0.0, atol=ATOL)
    return features, expected


@pytest.mark.parametrize("support", SUPPORTS, ids=str)
def test_support_belief_matches_brute_force_bayes_on_every_prefix_of_10000_steps(support):
    actions, rewards = support_histories(support, seed=len(support), steps=LONG_HISTORY)
    features, expected = assert_support_beliefs_match(support, actions, rewards)
    # The prior opens every trajectory: uniform over the support.
    np.testing.assert_allclose(features[:, 0, 2:], 1.0 / len(support), rtol=0.0, atol=ATOL)
    if len(support) == 1 or np.diff(sorted(support)).min() > 0.01:
        # Well separated values are told apart long before 10,000 pulls: the truth gets all the mass.
        np.testing.assert_allclose(features[:, -1, 2:], np.eye(len(support)), rtol=0.0, atol=ATOL)


def test_nearly_equal_support_values_keep_a_shared_posterior_that_still_matches():
    # p = 0.3 and p = 0.30001 differ by ~2e-3 in log-likelihood ratio over 10,000 pulls, so the
    # posterior stays near (1/2, 1/2); float32 must still resolve it to 1e-5.
    support = (0.3, 0.30001)
    actions, rewards = support_histories(support * 2, seed=7, steps=LONG_HISTORY)
    _, expected = assert_support_beliefs_match(support, actions, rewards)
    assert (expected[..., 2:] > 0.45).all() and (expected[..., 2:] < 0.55).all()
    # There is something to resolve: the reference moves away from 1/2 by far more than ATOL.
    assert np.abs(expected[..., 2] - 0.5).max() > 10 * ATOL


@pytest.mark.parametrize("support", [(0.3, 0.30001, 0.9), (0.01, 0.3, 0.30001)], ids=str)
def test_nearly_equal_support_values_beside_a_distant_value_still_match(support):
    # The truth is 0.3 or 0.30001, so the posterior stays shared between them, as above; the
    # distant value makes float32 count * log-likelihood products large unless taken relative.
    actions, rewards = support_histories((0.3, 0.30001), seed=8, steps=LONG_HISTORY)
    assert_support_beliefs_match(support, actions, rewards)


@pytest.mark.parametrize("support", [(0.1, 0.9), (0.0, 0.5, 1.0), (0.2, 0.5, 0.7)], ids=str)
@given(data=st.data())
def test_support_belief_matches_brute_force_bayes_on_short_histories(support, data):
    p = data.draw(st.sampled_from(support), label="true p")
    arm_probs = (p, 1.0 - p)
    steps = data.draw(
        st.lists(st.tuples(st.integers(0, 1), st.sampled_from((0.0, 1.0))), max_size=HYPOTHESIS_STEPS),
        label="arms and proposed rewards",
    )
    # Keep the history possible under the true p: an arm that pays with probability 0 or 1 does so.
    history = [(arm, reward if 0.0 < arm_probs[arm] < 1.0 else arm_probs[arm]) for arm, reward in steps]
    actions, rewards = padded(history)
    features = run_beliefs(metabelief.make("dependent_bandit", support=support), actions, rewards)[0]
    expected = reference_support_features(support, actions[0, : len(history)], rewards[0, : len(history)])
    np.testing.assert_allclose(features[: len(history) + 1], expected, rtol=0.0, atol=ATOL)


def test_support_belief_hand_computed_case():
    # Support (0.2, 0.5, 0.7); arm 0 pays, arm 1 fails (both likelihood p), arm 0 fails (1 - p).
    support = (0.2, 0.5, 0.7)
    features = run_beliefs(
        metabelief.make("dependent_bandit", support=support),
        np.array([[0, 1, 0]]),
        np.array([[1.0, 0.0, 0.0]]),
    )
    weights = np.array([0.2 * 0.2 * 0.8, 0.5 * 0.5 * 0.5, 0.7 * 0.7 * 0.3])
    posterior = weights / weights.sum()
    mean = posterior @ np.array(support)
    np.testing.assert_allclose(features[0, -1], [mean, 1.0 - mean, *posterior], rtol=0.0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Environment dynamics


def test_uniform_prior_sample_task_is_uniform():
    num_tasks = 20_000
    tasks = sample_tasks(metabelief.make("dependent_bandit"), jax.random.key(21), num_tasks)
    assert isinstance(tasks, DependentTask)
    assert tasks.p.shape == (num_tasks,) and tasks.p.dtype == jnp.float32
    p = np.asarray(tasks.p, np.float64)
    assert ((p >= 0.0) & (p <= 1.0)).all()
    assert abs(p.mean() - 0.5) < 5.0 * np.sqrt(1.0 / 12.0 / num_tasks)
    squared_deviation = (p - 0.5) ** 2
    assert abs(squared_deviation.mean() - 1.0 / 12.0) < 5.0 * squared_deviation.std() / np.sqrt(num_tasks)
    # The empirical CDF at the deciles: each a binomial proportion with standard error sqrt(q(1-q)/N).
    deciles = np.linspace(0.1, 0.9, 9)
    cdf = (p[:, None] <= deciles).mean(axis=0)
    assert (np.abs(cdf - deciles) < 5.0 * np.sqrt(deciles * (1.0 - deciles) / num_tasks)).all()


@pytest.mark.parametrize("support", [(0.1, 0.9), (0.2, 0.5, 0.7), (0.0, 0.5, 1.0), (0.3, 0.30001)], ids=str)
def test_support_sample_task_is_uniform_over_the_support_values(support):
    num_tasks = 6_000
    tasks = sample_tasks(metabelief.make("dependent_bandit", support=support), jax.random.key(22), num_tasks)
    assert tasks.p.shape == (num_tasks,) and tasks.p.dtype == jnp.float32
    p = np.asarray(tasks.p)
    values = np.asarray(support, np.float32)
    matches = p[:, None] == values  # [N, S]
    assert (matches.sum(axis=1) == 1).all(), "every sampled p is exactly one support value"
    counts = matches.sum(axis=0)
    share = 1.0 / len(support)
    assert (np.abs(counts - num_tasks * share) < 5.0 * np.sqrt(num_tasks * share * (1.0 - share))).all()


@pytest.mark.parametrize("support", [None, (0.2, 0.5, 0.7)], ids=str)
def test_step_rewards_follow_p_and_one_minus_p(support):
    family = metabelief.make("dependent_bandit", horizon=50, support=support)
    task_key, rollout_key = jax.random.split(jax.random.key(4))
    tasks = sample_tasks(family, task_key, 128)
    # 400 steps, well past the horizon of 50: rewards keep coming from the same task.
    out = random_rollout(family, rollout_key, tasks, 400)
    rewards = np.asarray(out["rewards"], np.float64)
    assert out["rewards"].dtype == jnp.float32
    assert set(np.unique(rewards)) <= {0.0, 1.0}
    assert_rewards_follow(
        np.stack([tasks.p, 1.0 - tasks.p], axis=1).astype(np.float64), np.asarray(out["actions"]), rewards
    )


@pytest.mark.parametrize("support", [None, (0.0, 0.5, 1.0)], ids=str)
def test_done_from_horizon_on_and_task_never_changes(support):
    horizon, num_steps = 5, 20
    family = metabelief.make("dependent_bandit", horizon=horizon, support=support)
    # p = 0 and p = 1 make every reward a check that step still plays this very task.
    p = np.array([0.0, 1.0, 1.0], np.float32)
    out = random_rollout(family, jax.random.key(6), DependentTask(p=jnp.asarray(p)), num_steps)
    out = {name: np.asarray(value) for name, value in out.items()}
    assert family.num_actions == 2 and family.obs_size == 0 and family.horizon == horizon
    np.testing.assert_array_equal(out["reset_time"], [0, 0, 0])
    assert out["reset_obs"].shape == (3, 0) and out["reset_obs"].dtype == np.float32
    assert out["obs"].shape == (num_steps, 3, 0) and out["obs"].dtype == np.float32
    steps_taken = np.arange(1, num_steps + 1)[:, None]  # [T, 1]
    np.testing.assert_array_equal(out["time"], np.broadcast_to(steps_taken, (num_steps, 3)))
    assert out["dones"].dtype == np.bool_
    np.testing.assert_array_equal(out["dones"], np.broadcast_to(steps_taken >= horizon, (num_steps, 3)))
    np.testing.assert_array_equal(out["rewards"], np.where(out["actions"] == 0, p, 1.0 - p))
    np.testing.assert_array_equal(out["truth"], np.broadcast_to(np.stack([p, 1.0 - p], 1), (num_steps, 3, 2)))


# ---------------------------------------------------------------------------------------------
# Construction


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(horizon=0), "horizon"),
        (dict(horizon=-1), "horizon"),
        (dict(horizon=2.5), "horizon"),
        (dict(horizon=0, support=(0.1, 0.9)), "horizon"),
        (dict(support=(0.1, 1.5)), "support"),
        (dict(support=(-0.1, 0.5)), "support"),
        (dict(support=(0.5, float("nan"))), "support"),
        (dict(support=(float("inf"),)), "support"),
        (dict(support=()), "support"),
        (dict(support=[]), "support"),
        (dict(support="0.1,0.9"), "support"),
        (dict(support=b"\x00\x01"), "support"),  # bytes iterate as the valid ints 0 and 1
        (dict(support=0.5), "support"),
        (dict(support=("0.5",)), "support"),
        (dict(num_arms=3), "num_arms"),
    ],
    ids=str,
)
def test_invalid_arguments_raise_value_error_naming_them(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        metabelief.make("dependent_bandit", **kwargs)


def test_valid_supports_are_normalised_to_tuples_of_floats():
    family = metabelief.make("dependent_bandit", support=[0, 0.5, np.float32(1.0)], horizon=np.int64(3))
    assert family.support == (0.0, 0.5, 1.0) and all(type(value) is float for value in family.support)
    assert family.horizon == 3 and type(family.horizon) is int
    assert hash(family) == hash(metabelief.make("dependent_bandit", support=(0.0, 0.5, 1.0), horizon=3))
