"""Index policies: Gittins indices against Gittins' tables and a brute-force calibration, every
policy's actions against a NumPy replay of its rule, and the ordering of their returns."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief.baselines import (
    bayes_optimal_value,
    epsilon_greedy,
    gittins,
    gittins_index_table,
    greedy,
    run_policy,
    thompson_sampling,
    ucb1,
)
from metabelief.tasks.bernoulli_bandit import BernoulliTask


@functools.partial(jax.jit, static_argnums=(0, 1))
def play(family, policy, key, tasks):
    rollout = run_policy(family, policy, key, tasks)
    return rollout.actions, rollout.rewards


def beta_tasks(family, seed: int, num_tasks: int) -> BernoulliTask:
    probs = np.random.default_rng(seed).beta(family.prior_a, family.prior_b, (num_tasks, family.num_arms))
    return BernoulliTask(probs=jnp.asarray(probs, jnp.float32))


def replay_counts(actions: np.ndarray, rewards: np.ndarray, num_arms: int) -> tuple[np.ndarray, np.ndarray]:
    """Observed successes and pulls of each arm before each step, float64 [T, N, arms]."""
    pulled = np.eye(num_arms)[actions]  # [T, N, arms]
    successes = np.cumsum(pulled * rewards[..., None], axis=0) - pulled * rewards[..., None]
    pulls = np.cumsum(pulled, axis=0) - pulled
    return successes, pulls


def chosen(scores: np.ndarray, actions: np.ndarray) -> np.ndarray:
    return np.take_along_axis(scores, actions[..., None], axis=-1)[..., 0]


# --- Gittins index values -------------------------------------------------------------------------


def test_gittins_indices_match_gittins_tables_for_a_uniform_prior_at_discount_0_9():
    # Gittins' table for discount 0.9 and a uniform prior, as reproduced in Christian & Griffiths,
    # "Algorithms to Live By" (2016), ch. 2: wins-losses 0-0, 1-1, 2-2 and 9-1.
    table = gittins_index_table(12, 0.9)
    for (wins, losses), published in {(0, 0): 0.7029, (1, 1): 0.6346, (2, 2): 0.6010, (9, 1): 0.8695}.items():
        assert table[wins, losses] == pytest.approx(published, abs=6e-5)


def calibrated_index(a: float, b: float, discount: float, depth: int) -> float:
    """Brute-force calibration of one Beta(a, b) arm: bisection on the retirement reward, each
    step a value iteration over the arm's own count lattice, truncated ``depth`` pulls ahead."""
    low, high = 0.0, 1.0
    for _ in range(50):
        reward = 0.5 * (low + high)
        retire = reward / (1.0 - discount)
        value = np.maximum(retire, (a + np.arange(depth + 1)) / (a + b + depth) / (1.0 - discount))
        for level in reversed(range(depth)):
            mean = (a + np.arange(level + 1)) / (a + b + level)
            go_on = mean + discount * (mean * value[1:] + (1.0 - mean) * value[:-1])
            value = np.maximum(retire, go_on)
        low, high = (reward, high) if go_on[0] > retire else (low, reward)
    return 0.5 * (low + high)


@pytest.mark.parametrize("discount, prior", [(0.7, (1.0, 1.0)), (0.95, (2.0, 0.5)), (0.9, (0.5, 3.0))])
def test_gittins_table_is_a_tight_lower_bound_of_a_brute_force_calibration(discount, prior):
    horizon, depth = 6, 40
    table = gittins_index_table(horizon, discount, *prior, depth=depth)
    for wins in range(horizon):
        for losses in range(horizon - wins):
            # The same truncation: the lattice ends horizon - 1 + depth pulls after the prior.
            reference = calibrated_index(
                prior[0] + wins, prior[1] + losses, discount, horizon - 1 + depth - wins - losses
            )
            assert table[wins, losses] <= reference + 1e-9  # a lower bound
            assert table[wins, losses] == pytest.approx(reference, abs=2e-6)
    assert np.isnan(table[3, 3]) and np.isnan(table[5, 1])  # past the horizon


def test_gittins_index_exceeds_the_mean_and_moves_with_the_evidence():
    horizon, prior = 40, (1.0, 1.0)
    table = gittins_index_table(horizon, 0.95, *prior)
    wins, losses = np.indices(table.shape)
    inside = wins + losses < horizon
    means = (prior[0] + wins) / (prior[0] + prior[1] + wins + losses)
    bonus = np.where(inside, table - means, np.nan)
    assert (bonus[inside] > 0).all()
    more_wins, more_losses = table[1:, :-1] - table[:-1, :-1], table[:-1, 1:] - table[:-1, :-1]
    assert (more_wins[inside[1:, :-1]] > 0).all() and (more_losses[inside[:-1, 1:]] < 0).all()
    diagonal = np.diag(bonus)[: horizon // 2]  # n wins and n losses: the bonus shrinks with n
    assert (np.diff(diagonal) < 0).all() and diagonal[-1] < 0.2 * diagonal[0]
    # A longer effective horizon is worth more exploration; no discount leaves only the mean.
    assert (gittins_index_table(horizon, 0.9)[inside] < table[inside]).all()
    np.testing.assert_allclose(gittins_index_table(horizon, 0.0)[inside], means[inside])


def test_gittins_default_discount_and_bad_arguments():
    family = metabelief.make("bernoulli_bandit", num_arms=3, horizon=20)
    assert gittins(family).discount == pytest.approx(0.95)
    assert gittins(family) == gittins(family, 0.95)
    with pytest.raises(ValueError, match="discount"):
        gittins(family, 1.0)
    with pytest.raises(ValueError, match="gittins needs a family with the BetaArms capability"):
        gittins(metabelief.make("dependent_bandit", horizon=20))
    with pytest.raises(ValueError, match="epsilon"):
        epsilon_greedy(family, 1.5)
    with pytest.raises(ValueError, match="ucb1 needs a family with the BetaArms capability"):
        ucb1(metabelief.make("dependent_bandit", horizon=20))


# --- actions against a NumPy replay ------------------------------------------------------------

FAMILY = metabelief.make("bernoulli_bandit", num_arms=3, horizon=20, prior_a=2.0, prior_b=0.5)
NUM_TASKS = 512


def played(policy, seed: int):
    actions, rewards = play(FAMILY, policy, jax.random.key(seed), beta_tasks(FAMILY, seed, NUM_TASKS))
    actions, rewards = np.asarray(actions), np.asarray(rewards, np.float64)
    return actions, *replay_counts(actions, rewards, FAMILY.num_arms)


def assert_unplayed_first_then_best(actions, pulls, scores, tolerance):
    """Arms never pulled go first; after that the chosen arm has a best float64 score."""
    unplayed = (pulls == 0).any(axis=-1)
    assert (chosen(pulls, actions)[unplayed] == 0).all()
    gap = scores.max(axis=-1)[~unplayed] - chosen(scores, actions)[~unplayed]
    assert (gap <= tolerance).all()
    assert unplayed[: FAMILY.num_arms].all() and not unplayed[FAMILY.num_arms :].any()


def test_gittins_plays_the_arm_with_the_highest_float64_index():
    actions, successes, pulls = played(gittins(FAMILY, 0.9), 0)
    table = gittins_index_table(FAMILY.horizon, 0.9, FAMILY.prior_a, FAMILY.prior_b)
    indices = table[successes.astype(int), (pulls - successes).astype(int)]  # [T, N, arms]
    gap = indices.max(axis=-1) - chosen(indices, actions)
    assert (gap <= 1e-6).all()
    ties = (np.sort(indices, axis=-1)[..., -1] - np.sort(indices, axis=-1)[..., -2]) <= 1e-6
    assert ties[0].all() and ties.mean() < 0.3  # the prior is a three-way tie, later ones are rare
    first = np.bincount(actions[0], minlength=3) / NUM_TASKS
    assert np.abs(first - 1 / 3).max() < 5.0 * np.sqrt(2 / 9 / NUM_TASKS)


def test_ucb1_plays_every_arm_once_then_the_highest_float64_upper_bound():
    actions, successes, pulls = played(ucb1(FAMILY), 1)
    total = pulls.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        bounds = successes / pulls + np.sqrt(2.0 * np.log(total) / pulls)
    assert_unplayed_first_then_best(actions, pulls, np.nan_to_num(bounds, nan=-np.inf), tolerance=1e-5)


def test_greedy_plays_every_arm_once_then_the_best_observed_mean():
    actions, successes, pulls = played(greedy(FAMILY), 2)
    with np.errstate(invalid="ignore"):
        means = np.nan_to_num(successes / pulls, nan=-np.inf)
    assert_unplayed_first_then_best(actions, pulls, means, tolerance=1e-6)


def test_epsilon_greedy_departs_from_the_greedy_arm_at_rate_epsilon():
    epsilon = 0.3
    actions, successes, pulls = played(epsilon_greedy(FAMILY, epsilon), 3)
    with np.errstate(invalid="ignore"):
        means = successes / pulls
    settled = (pulls > 0).all(axis=-1)
    top = np.sort(means, axis=-1)
    unique = settled & (top[..., -1] > top[..., -2] + 1e-6)
    departs = (actions != means.argmax(axis=-1))[unique]
    expected = epsilon * (FAMILY.num_arms - 1) / FAMILY.num_arms  # a random arm is the greedy one 1/3
    assert abs(departs.mean() - expected) < 5.0 * np.sqrt(expected * (1 - expected) / departs.size)


# --- returns -------------------------------------------------------------------------------------


def test_mean_returns_order_gittins_thompson_greedy_and_ucb1_on_two_arms():
    family = metabelief.make("bernoulli_bandit", num_arms=2, horizon=50)
    num_tasks = 2048
    tasks = beta_tasks(family, 4, num_tasks)
    returns = {}
    for name, policy in [
        ("gittins", gittins(family)),
        ("thompson", thompson_sampling(family)),
        ("greedy", greedy(family)),
        ("ucb1", ucb1(family)),
    ]:
        returns[name] = np.asarray(play(family, policy, jax.random.key(5), tasks)[1], np.float64).sum(axis=0)

    def z_score(better, worse):  # paired over the same tasks
        difference = returns[better] - returns[worse]
        return difference.mean() / (difference.std() / np.sqrt(num_tasks))

    assert z_score("gittins", "thompson") > 3.0
    assert z_score("gittins", "greedy") > 3.0
    assert z_score("thompson", "ucb1") > 3.0  # UCB1's bonus explores far too long at this horizon
    # Nothing beats the Bayes-optimal policy.
    gittins_error = returns["gittins"].std() / np.sqrt(num_tasks)
    assert returns["gittins"].mean() < bayes_optimal_value(family) + 5.0 * gittins_error
