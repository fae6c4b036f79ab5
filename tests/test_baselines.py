"""Belief policies: random play earns the prior mean, Thompson sampling beats it from a uniform start,
the gridworld explorer walks shortest paths."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief.baselines import (
    QLearning,
    belief_greedy,
    nearest_candidate,
    random_policy,
    run_policy,
    thompson_sampling,
)
from metabelief.tasks.bernoulli_bandit import BernoulliTask
from metabelief.tasks.dependent_bandit import DependentTask
from metabelief.testing import sample_tasks

HORIZON, NUM_TASKS = 20, 1024
BERNOULLI = metabelief.make("bernoulli_bandit", num_arms=2, horizon=HORIZON)
DEPENDENT = metabelief.make("dependent_bandit", horizon=HORIZON)  # p ~ U[0, 1], a Beta posterior


@functools.partial(jax.jit, static_argnums=(0, 1), static_argnames="num_steps")
def play(family, policy, key, tasks, num_steps=None):
    rollout = run_policy(family, policy, key, tasks, num_steps)
    return rollout.actions, rollout.rewards


def tasks_and_probs(family, seed: int, num_tasks: int = NUM_TASKS):
    """Tasks drawn from the family's prior in NumPy, and float64 [N, 2] arm probabilities."""
    rng = np.random.default_rng(seed)
    if family is BERNOULLI:
        probs = rng.uniform(size=(num_tasks, 2))
        return BernoulliTask(probs=jnp.asarray(probs, jnp.float32)), probs
    p = rng.uniform(size=num_tasks)
    return DependentTask(p=jnp.asarray(p, jnp.float32)), np.stack([p, 1.0 - p], axis=1)


def test_random_policy_earns_the_mean_arm_probability_and_plays_arms_uniformly():
    tasks, probs = tasks_and_probs(BERNOULLI, 0)
    actions, rewards = play(BERNOULLI, random_policy(BERNOULLI), jax.random.key(0), tasks)
    assert actions.shape == rewards.shape == (HORIZON, NUM_TASKS) and actions.dtype == jnp.int32
    returns = np.asarray(rewards, np.float64).sum(axis=0)
    # Given the tasks, a uniformly random arm pays the mean of the two arms' probabilities.
    expected = HORIZON * probs.mean(axis=1)
    assert abs((returns - expected).mean()) < 5.0 * (returns - expected).std() / np.sqrt(NUM_TASKS)
    # And over the prior, U[0, 1] arms: horizon / 2.
    assert abs(returns.mean() - HORIZON / 2) < 5.0 * returns.std() / np.sqrt(NUM_TASKS)
    chose_arm_0 = (np.asarray(actions) == 0).mean()
    assert abs(chose_arm_0 - 0.5) < 5.0 * np.sqrt(0.25 / actions.size)


@pytest.mark.parametrize("family", [BERNOULLI, DEPENDENT], ids=["bernoulli", "dependent"])
def test_thompson_sampling_starts_uniform_and_beats_random_play_on_the_same_tasks(family):
    tasks, probs = tasks_and_probs(family, 1)
    _, random_rewards = play(family, random_policy(family), jax.random.key(1), tasks)
    actions, thompson_rewards = play(family, thompson_sampling(family), jax.random.key(2), tasks)
    # Every task starts from the same prior, so the first pull is a fair coin between the arms.
    chose_arm_0 = (np.asarray(actions[0]) == 0).mean()
    assert abs(chose_arm_0 - 0.5) < 5.0 * np.sqrt(0.25 / NUM_TASKS)
    random_returns = np.asarray(random_rewards, np.float64).sum(axis=0)
    difference = np.asarray(thompson_rewards, np.float64).sum(axis=0) - random_returns
    assert difference.mean() > 5.0 * difference.std() / np.sqrt(NUM_TASKS)
    # In its last steps Thompson sampling mostly plays the better arm (random play: half the time,
    # within 0.035 at 5 standard errors over these 5 * 1024 choices).
    better = np.argmax(probs, axis=1)
    assert (np.asarray(actions)[-5:] == better).mean() > 0.65


def test_equal_policies_are_equal_static_arguments():
    assert random_policy(BERNOULLI) == random_policy(metabelief.make("bernoulli_bandit", horizon=HORIZON))
    assert hash(thompson_sampling(BERNOULLI)) == hash(thompson_sampling(BERNOULLI))
    assert thompson_sampling(BERNOULLI) != thompson_sampling(DEPENDENT)


def test_thompson_sampling_rejects_a_family_without_beta_or_dependent_arms():
    with pytest.raises(ValueError, match="thompson_sampling needs .*BetaArms capability.*DependentArms"):
        thompson_sampling(metabelief.make("gridworld", size=5, horizon=10))


GRID = metabelief.make("gridworld", size=5, horizon=50)


def test_nearest_candidate_walks_shortest_paths_back_to_the_goal_once_found():
    tasks = sample_tasks(GRID, jax.random.key(3), 512)
    actions, rewards = play(GRID, nearest_candidate(GRID), jax.random.key(4), tasks)
    rewards = np.asarray(rewards)
    assert (rewards.sum(axis=0) > 0).all()  # 24 candidates, each at most 8 moves away: all found
    goals = np.array(GRID.goals)[np.asarray(tasks.goal)]
    distance = np.abs(goals - np.array(GRID.start)).sum(axis=1)  # Manhattan from the centre
    first = rewards.argmax(axis=0)
    # After the first find the goal is known: one reward every `distance` steps from the start.
    expected = 1 + (GRID.horizon - 1 - first) // distance
    np.testing.assert_array_equal(rewards.sum(axis=0), expected)


def test_nearest_candidate_rejects_a_family_without_goals():
    with pytest.raises(
        ValueError, match="nearest_candidate needs a family with the GoalCandidates capability"
    ):
        nearest_candidate(BERNOULLI)


def test_belief_greedy_plays_the_arm_with_the_highest_float64_posterior_mean():
    tasks, _ = tasks_and_probs(BERNOULLI, 7, num_tasks=256)
    actions, rewards = play(BERNOULLI, belief_greedy(BERNOULLI), jax.random.key(8), tasks)
    actions, rewards = np.asarray(actions), np.asarray(rewards, np.float64)
    successes, failures = np.zeros((256, 2)), np.zeros((256, 2))
    ties = 0
    for t in range(HORIZON):
        means = (1.0 + successes) / (2.0 + successes + failures)  # Beta(1, 1) prior
        unique = means[:, 0] != means[:, 1]
        np.testing.assert_array_equal(actions[t, unique], means[unique].argmax(axis=1))
        ties += (~unique).sum()
        lanes = np.arange(256)
        successes[lanes, actions[t]] += rewards[t]
        failures[lanes, actions[t]] += 1.0 - rewards[t]
    assert ties >= 256  # every task starts tied; ties are broken at random
    chose_arm_0 = (actions[0] == 0).mean()
    assert abs(chose_arm_0 - 0.5) < 5.0 * np.sqrt(0.25 / 256)


def test_belief_greedy_needs_expected_rewards():
    with pytest.raises(ValueError, match="belief_greedy needs a family with the ExpectedRewards capability"):
        belief_greedy(GRID)


def test_q_learning_chooses_by_softmax_of_float64_td_values_replayed_from_its_history():
    learner = QLearning(num_actions=2, learning_rate=0.3, inverse_temperature=4.0, initial_value=0.5)
    tasks, _ = tasks_and_probs(BERNOULLI, 9, num_tasks=2048)
    actions, rewards = play(BERNOULLI, learner, jax.random.key(10), tasks)
    actions, rewards = np.asarray(actions), np.asarray(rewards, np.float64)
    q = np.full((2048, 2), 0.5)
    lanes = np.arange(2048)
    probs_arm_0 = []
    for t in range(HORIZON):
        probs_arm_0.append(1.0 / (1.0 + np.exp(-4.0 * (q[:, 0] - q[:, 1]))))
        q[lanes, actions[t]] += 0.3 * (rewards[t] - q[lanes, actions[t]])
    probs_arm_0, chose_arm_0 = np.concatenate(probs_arm_0), (actions == 0).ravel()
    # Calibration: within each bin of the reference probability, arm 0 is chosen that often.
    bins = np.digitize(probs_arm_0, np.linspace(0.0, 1.0, 11)[1:-1])
    for b in np.unique(bins):
        members = bins == b
        if members.sum() < 200:
            continue
        p = probs_arm_0[members].mean()
        se = np.sqrt(p * (1 - p) / members.sum())
        assert abs(chose_arm_0[members].mean() - p) < 5.0 * se + 1e-3
