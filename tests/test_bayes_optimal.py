"""The Bayes-optimal DP: equal to brute-force expectimax over histories, run by its policy it earns
its value, it beats Thompson sampling, and it refuses what it cannot do."""

from __future__ import annotations

import functools
import itertools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief.baselines import (
    bayes_optimal,
    bayes_optimal_table,
    bayes_optimal_table_size,
    bayes_optimal_value,
    run_policy,
    thompson_sampling,
)
from metabelief.baselines.bayes_optimal import MAX_TABLE_ENTRIES
from metabelief.tasks.bandit_base import BetaBelief
from metabelief.tasks.bernoulli_bandit import BernoulliBandit, BernoulliTask
from metabelief.tasks.dependent_bandit import DependentTask


@functools.partial(jax.jit, static_argnums=(0, 1), static_argnames="num_steps")
def play(family, policy, key, tasks, num_steps=None):
    rollout = run_policy(family, policy, key, tasks, num_steps)
    return rollout.actions, rollout.rewards


# --- brute force: expectimax over every action and reward history ------------------------------


def beta_predictive(a: float, b: float) -> float:
    """P(next outcome is a success) under Beta(a, b): the ratio B(a + 1, b) / B(a, b)."""
    return math.exp(math.lgamma(a + 1) + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(a + b + 1))


def bernoulli_expectimax(counts: tuple, steps: int, prior: tuple[float, float]) -> list[float]:
    """Q-value of each arm over the next ``steps`` pulls; ``counts`` holds (successes, failures) per arm."""
    q_values = []
    for arm, (wins, losses) in enumerate(counts):
        success = beta_predictive(prior[0] + wins, prior[1] + losses)
        after = [list(counts), list(counts)]
        after[0][arm], after[1][arm] = (wins + 1, losses), (wins, losses + 1)
        q_values.append(
            success * (1.0 + bernoulli_value(tuple(after[0]), steps - 1, prior))
            + (1.0 - success) * bernoulli_value(tuple(after[1]), steps - 1, prior)
        )
    return q_values


@functools.cache
def bernoulli_value(counts: tuple, steps: int, prior: tuple[float, float]) -> float:
    return max(bernoulli_expectimax(counts, steps, prior)) if steps > 0 else 0.0


def dependent_predictive(favour: int, against: int, support) -> float:
    """P(the next outcome is evidence for p): Beta(1, 1) prior (support None) or uniform on support."""
    if support is None:
        return beta_predictive(1.0 + favour, 1.0 + against)
    weights = [p**favour * (1.0 - p) ** against for p in support]
    return sum(w * p for w, p in zip(weights, support, strict=True)) / sum(weights)


def dependent_value(favour: int, against: int, steps: int, support) -> float:
    """Expectimax over histories; arm 0 pays with P(for p), arm 1 with P(against p)."""
    if steps == 0:
        return 0.0
    for_p = dependent_predictive(favour, against, support)
    # An outcome of probability 0 leads to evidence no support value allows: never reached.
    after_for = dependent_value(favour + 1, against, steps - 1, support) if for_p > 0 else 0.0
    after_against = dependent_value(favour, against + 1, steps - 1, support) if for_p < 1 else 0.0
    arm_0 = for_p * (1.0 + after_for) + (1.0 - for_p) * after_against
    arm_1 = (1.0 - for_p) * (1.0 + after_against) + for_p * after_for
    return max(arm_0, arm_1)


@pytest.mark.parametrize("prior", [(1.0, 1.0), (2.0, 0.5), (0.5, 3.0)])
@pytest.mark.parametrize("num_arms, horizons", [(2, range(1, 6)), (3, range(1, 6)), (4, range(1, 4))])
def test_bernoulli_value_equals_brute_force_expectimax(prior, num_arms, horizons):
    for horizon in horizons:
        family = metabelief.make(
            "bernoulli_bandit", num_arms=num_arms, horizon=horizon, prior_a=prior[0], prior_b=prior[1]
        )
        expected = bernoulli_value(((0, 0),) * num_arms, horizon, prior)
        assert bayes_optimal_value(family) == pytest.approx(expected, abs=1e-12, rel=1e-12)


@pytest.mark.parametrize("support", [None, (0.1, 0.9), (0.25, 0.5, 0.6), (0.0, 0.3, 1.0)])
def test_dependent_value_equals_brute_force_expectimax(support):
    for horizon in range(1, 8):
        family = metabelief.make("dependent_bandit", horizon=horizon, support=support)
        expected = dependent_value(0, 0, horizon, support)
        assert bayes_optimal_value(family) == pytest.approx(expected, abs=1e-12, rel=1e-12)


def test_known_values_by_hand():
    uniform = functools.partial(metabelief.make, "bernoulli_bandit")
    assert bayes_optimal_value(uniform(num_arms=2, horizon=1)) == 0.5
    # Pull an arm (1/2); after a success stay (2/3), after a failure switch to a fresh arm (1/2).
    assert bayes_optimal_value(uniform(num_arms=2, horizon=2)) == pytest.approx(0.5 + 0.5 * 2 / 3 + 0.5 * 0.5)
    assert bayes_optimal_value(uniform(num_arms=3, horizon=2)) == pytest.approx(13 / 12)
    # Dependent, p ~ U[0, 1]: whatever the first outcome, the better-looking arm then pays 2/3.
    assert bayes_optimal_value(metabelief.make("dependent_bandit", horizon=2)) == pytest.approx(0.5 + 2 / 3)
    # Support {0.1, 0.9}: the first outcome tells which is likelier, 0.82 that it is right.
    discrete = metabelief.make("dependent_bandit", horizon=2, support=(0.1, 0.9))
    assert bayes_optimal_value(discrete) == pytest.approx(0.5 + 0.82)


def dense_two_arm_value(horizon: int) -> float:
    """An independent DP over the full [H + 1]^4 array of (s1, f1, s2, f2), Beta(1, 1) priors."""
    counts = np.arange(horizon + 1)
    s1, f1, s2, f2 = np.meshgrid(counts, counts, counts, counts, indexing="ij", sparse=True)
    total = s1 + f1 + s2 + f2
    mean_1, mean_2 = (1.0 + s1) / (2.0 + s1 + f1), (1.0 + s2) / (2.0 + s2 + f2)
    value = np.zeros((horizon + 2,) * 4)  # padded so that the successor of the last level exists
    for level in reversed(range(horizon)):
        inner = value[:-1, :-1, :-1, :-1]
        arm_1 = mean_1 * (1 + value[1:, :-1, :-1, :-1]) + (1 - mean_1) * value[:-1, 1:, :-1, :-1]
        arm_2 = mean_2 * (1 + value[:-1, :-1, 1:, :-1]) + (1 - mean_2) * value[:-1, :-1, :-1, 1:]
        inner[...] = np.where(total == level, np.maximum(arm_1, arm_2), inner)
    return float(value[0, 0, 0, 0])


def test_two_arm_value_equals_a_dense_dp_at_horizon_25():
    family = metabelief.make("bernoulli_bandit", num_arms=2, horizon=25)
    assert bayes_optimal_value(family) == pytest.approx(dense_two_arm_value(25), abs=1e-10)


def test_arms_beyond_the_horizon_add_nothing_and_states_are_counted_exactly():
    # With at least `horizon` arms a fresh arm is always left, so more arms change nothing.
    values = [
        bayes_optimal_value(metabelief.make("bernoulli_bandit", num_arms=k, horizon=8)) for k in (8, 20)
    ]
    assert values[0] == values[1]
    assert values[0] > bayes_optimal_value(metabelief.make("bernoulli_bandit", num_arms=5, horizon=8))
    for num_arms, horizon in [(2, 30), (3, 12), (5, 8), (20, 8)]:
        family = metabelief.make("bernoulli_bandit", num_arms=num_arms, horizon=horizon)
        table = bayes_optimal_table(family)
        assert bayes_optimal_table_size(family) == table.rows.size == table.q_values.size


def test_two_arms_horizon_100_builds_in_seconds():
    family = metabelief.make("bernoulli_bandit", num_arms=2, horizon=100)
    start = time.perf_counter()
    value = bayes_optimal_value(family)
    print(f"bayes_optimal_value(2 arms, horizon 100) = {value:.6f} in {time.perf_counter() - start:.1f} s")
    # Upper bound: knowing the better arm, 100 * E max(p1, p2) = 200 / 3.
    assert 60.0 < value < 200.0 / 3.0
    assert bayes_optimal_table(family).num_states == 2_211_275  # multisets of two arms' counts


def test_unsupported_and_oversized_families_raise_before_building():
    with pytest.raises(
        ValueError, match="bayes_optimal needs .*BetaArms capability.*DependentArms capability"
    ):
        bayes_optimal(metabelief.make("gridworld", size=5, horizon=10))
    too_big = metabelief.make("bernoulli_bandit", num_arms=5, horizon=100)
    assert bayes_optimal_table_size(too_big) > MAX_TABLE_ENTRIES
    with pytest.raises(ValueError, match="MAX_TABLE_ENTRIES"):
        bayes_optimal_value(too_big)
    with pytest.raises(ValueError, match="MAX_SUCCESSOR_ENTRIES"):  # 50 wide rows
        bayes_optimal(metabelief.make("bernoulli_bandit", num_arms=50, horizon=20))


# --- the jitted policy --------------------------------------------------------------------------


def beta_tasks(family, seed: int, num_tasks: int) -> BernoulliTask:
    """Tasks from the family's prior, drawn in NumPy (no compile)."""
    probs = np.random.default_rng(seed).beta(family.prior_a, family.prior_b, (num_tasks, family.num_arms))
    return BernoulliTask(probs=jnp.asarray(probs, jnp.float32))


@pytest.mark.parametrize("num_arms, horizon", [(3, 6), (6, 4)])  # (6, 4): fewer columns than arms
def test_policy_plays_a_brute_force_best_arm_from_every_belief_it_meets(num_arms, horizon):
    prior, num_tasks = (2.0, 0.5), 128
    family = metabelief.make(
        "bernoulli_bandit", num_arms=num_arms, horizon=horizon, prior_a=prior[0], prior_b=prior[1]
    )
    policy = bayes_optimal(family)
    actions, rewards = play(family, policy, jax.random.key(1), beta_tasks(family, 0, num_tasks))
    actions, rewards = np.asarray(actions), np.asarray(rewards)
    counts = np.zeros((horizon, num_tasks, num_arms, 2), np.int64)  # before each step
    lanes = np.arange(num_tasks)
    for t in range(1, horizon):
        counts[t] = counts[t - 1]
        counts[t, lanes, actions[t - 1], 1 - rewards[t - 1].astype(np.int64)] += 1
    beliefs = BetaBelief(
        alpha=jnp.asarray(prior[0] + counts[..., 0]), beta=jnp.asarray(prior[1] + counts[..., 1])
    )
    values = np.asarray(jax.jit(jax.vmap(jax.vmap(policy.action_values)))(beliefs))  # [T, N, arms]
    for t, lane in itertools.product(range(horizon), range(0, num_tasks, 4)):
        expected = bernoulli_expectimax(tuple(map(tuple, counts[t, lane])), horizon - t, prior)
        np.testing.assert_allclose(values[t, lane], expected, rtol=1e-5)
        assert expected[actions[t, lane]] >= max(expected) - 1e-9


def test_action_probabilities_are_uniform_over_ties_and_greedy_past_the_horizon():
    family = metabelief.make("bernoulli_bandit", num_arms=3, horizon=5)
    action_probs = jax.jit(jax.vmap(bayes_optimal(family).action_probs))
    beliefs = BetaBelief(
        alpha=jnp.array([[1.0, 1.0, 1.0], [2.0, 3.0, 1.0]]),
        beta=jnp.array([[1.0, 1.0, 1.0], [2.0, 2.0, 1.0]]),
    )
    probs = np.asarray(action_probs(beliefs))
    np.testing.assert_allclose(probs[0], np.full(3, 1 / 3), rtol=1e-6)  # the prior: all arms alike
    # Past the horizon (5 pulls made), the best posterior mean: arm 1 (3/5 against 2/4 and 1/2).
    np.testing.assert_array_equal(probs[1], [0.0, 1.0, 0.0])
    actions, _ = play(
        family, bayes_optimal(family), jax.random.key(2), beta_tasks(family, 3, 64), num_steps=8
    )
    assert actions.shape == (8, 64)


def test_equal_families_give_equal_policies():
    family = metabelief.make("bernoulli_bandit", num_arms=2, horizon=10)
    assert bayes_optimal(family) == bayes_optimal(metabelief.make("bernoulli_bandit", horizon=10))
    assert bayes_optimal_table(family) is bayes_optimal_table(metabelief.make("bernoulli_bandit", horizon=10))


MONTE_CARLO = [  # (family, compare with Thompson sampling)
    (metabelief.make("bernoulli_bandit", num_arms=2, horizon=20), True),
    (metabelief.make("bernoulli_bandit", num_arms=3, horizon=10, prior_a=0.5, prior_b=0.5), False),
    (metabelief.make("dependent_bandit", horizon=20), True),
    (metabelief.make("dependent_bandit", horizon=20, support=(0.3, 0.7)), False),  # no Beta posterior
]


@pytest.mark.parametrize(
    "family, against_thompson", MONTE_CARLO, ids=["2-arm", "3-arm", "dependent", "support"]
)
def test_policy_earns_its_value_and_beats_thompson_sampling_on_the_same_tasks(family, against_thompson):
    num_tasks = 4096
    if isinstance(family, BernoulliBandit):
        tasks = beta_tasks(family, 4, num_tasks)
    else:
        support = getattr(family, "support", None)
        rng = np.random.default_rng(4)
        p = rng.uniform(size=num_tasks) if support is None else rng.choice(support, num_tasks)
        tasks = DependentTask(p=jnp.asarray(p, jnp.float32))
    actions, rewards = play(family, bayes_optimal(family), jax.random.key(5), tasks)
    returns = np.asarray(rewards, np.float64).sum(axis=0)
    standard_error = returns.std() / np.sqrt(num_tasks)
    assert abs(returns.mean() - bayes_optimal_value(family)) < 5.0 * standard_error
    # From the symmetric prior the first pull is uniform over the arms.
    first = np.bincount(np.asarray(actions[0]), minlength=family.num_actions) / num_tasks
    assert np.abs(first - 1 / family.num_actions).max() < 5.0 * np.sqrt(0.25 / num_tasks)
    if against_thompson:
        _, thompson = play(family, thompson_sampling(family), jax.random.key(5), tasks)
        difference = returns - np.asarray(thompson, np.float64).sum(axis=0)
        assert difference.mean() > 3.0 * difference.std() / np.sqrt(num_tasks)


def test_dependent_policy_is_greedy_on_the_posterior_mean():
    # Both arms inform equally about p, so nothing is gained by exploring.
    for support in (None, (0.2, 0.5, 0.9)):
        family = metabelief.make("dependent_bandit", horizon=12, support=support)
        table = bayes_optimal_table(family)
        for level, favour in itertools.product(range(12), range(12)):
            if favour > level:
                continue
            mean = dependent_predictive(favour, level - favour, support)
            row = table.starts[level] + favour
            assert table.optimal[row, 0] == (mean >= 0.5 - 1e-12)
            assert table.optimal[row, 1] == (mean <= 0.5 + 1e-12)
