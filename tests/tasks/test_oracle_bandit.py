"""The oracle bandit: beliefs against a float64 NumPy reference, dynamics against their parameters.

The reference filter is written here without the package's code: it replays the recorded
actions and rewards and keeps the set of candidates they have not ruled out (a candidate pull
that pays ``target_reward`` leaves only that candidate, one that does not rules it out; the
oracle's reward (i + 1) / 10 leaves only candidate i), the posterior being uniform over the set.
The family's own check under ``check_family`` with default arguments runs in
tests/test_testing.py, which checks every registered family.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief.baselines import run_policy
from metabelief.tasks import OracleBandit
from metabelief.tasks.base import ExpectedRewards, FiniteOutcomes
from metabelief.tasks.oracle_bandit import OracleBelief, OracleState, OracleTask
from metabelief.testing import check_family, random_rollout, sample_tasks
from tests.tasks.outcome_helpers import assert_frequency, assert_same_distribution, matches

ATOL = 1e-5  # float32 against a float64 reference
NUM_STEPS = 40  # past the horizon: the task stays and the belief keeps updating
NUM_TASKS = 128

rollout = jax.jit(random_rollout, static_argnames=("family", "num_steps"))

FAMILIES = {
    "defaults": OracleBandit(),
    "three-arms": OracleBandit(num_arms=3, horizon=4),
    "twenty-arms": OracleBandit(num_arms=20, horizon=30),
    "target-pays-less": OracleBandit(num_arms=6, horizon=8, target_reward=-2.0, other_reward=0.5),
}


def oracle_values(num_candidates: int) -> np.ndarray:
    """float64 [C]: what the oracle pays when the target is candidate i, (i + 1) / 10."""
    return (np.arange(num_candidates) + 1.0) / 10.0


def reference_possible(family: OracleBandit, actions: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """bool [T + 1, N, C]: the candidates not ruled out after each history prefix.

    ``actions`` int [T, N] and ``rewards`` float32 [T, N] of a rollout.
    """
    num_candidates = family.num_arms - 1
    num_steps, num_histories = actions.shape
    candidates = np.arange(num_candidates)
    values = oracle_values(num_candidates)
    possible = np.ones((num_steps + 1, num_histories, num_candidates), bool)
    for t in range(num_steps):
        action, reward = actions[t], rewards[t].astype(np.float64)
        decoded = np.argmin(np.abs(reward[:, None] - values[None, :]), axis=1)
        is_arm = candidates[None, :] == action[:, None]  # all false for the oracle
        hit = rewards[t] == np.float32(family.target_reward)
        after_pull = np.where(hit[:, None], is_arm, possible[t] & ~is_arm)
        after_oracle = candidates[None, :] == decoded[:, None]
        possible[t + 1] = np.where((action == num_candidates)[:, None], after_oracle, after_pull)
    return possible


def posterior(possible: np.ndarray) -> np.ndarray:
    """float64 [..., C]: uniform over the possible candidates."""
    return possible / possible.sum(axis=-1, keepdims=True)


def reference_expected_rewards(family: OracleBandit, probs: np.ndarray) -> np.ndarray:
    """float64 [..., num_arms] from the posterior ``probs`` [..., C]."""
    values = oracle_values(family.num_arms - 1)
    pulls = probs * family.target_reward + (1.0 - probs) * family.other_reward
    return np.concatenate([pulls, (probs * values).sum(axis=-1, keepdims=True)], axis=-1)


def reference_outcomes(family: OracleBandit, probs: np.ndarray, actions: np.ndarray):
    """The posterior predictive of pulling ``actions`` [M] at posteriors ``probs`` [M, C].

    Returns ``(p [M, C], rewards [M, C], next_obs [M, C, 0])``: a candidate pull has two outcomes
    (target_reward, other_reward; the rest padding with probability 0), the oracle one per candidate.
    """
    num_candidates = family.num_arms - 1
    num = probs.shape[0]
    values = oracle_values(num_candidates)
    out_p = np.zeros((num, num_candidates))
    out_r = np.zeros((num, num_candidates))
    is_oracle = actions == num_candidates
    arm = np.minimum(actions, num_candidates - 1)
    p_arm = probs[np.arange(num), arm]
    out_p[:, 0], out_p[:, 1] = p_arm, 1.0 - p_arm
    out_r[:, 0], out_r[:, 1] = family.target_reward, family.other_reward
    out_p[is_oracle] = probs[is_oracle]
    out_r[is_oracle] = values
    return out_p, out_r, np.zeros((num, num_candidates, 0))


@functools.cache
def history(name: str):
    """One random rollout of ``NUM_TASKS`` tasks per family, shared by the tests below (one compile
    each), with the reference's possible candidates before each step."""
    family = FAMILIES[name]
    tasks = jax.device_get(sample_tasks(family, jax.random.key(0), NUM_TASKS))
    out = jax.device_get(rollout(family, jax.random.key(1), tasks, num_steps=NUM_STEPS))
    return tasks, out, reference_possible(family, out.actions, out.rewards)


# ---------------------------------------------------------------------------------------------
# Beliefs on random histories


@pytest.mark.parametrize("name", list(FAMILIES))
def test_belief_equals_the_float64_reference_at_every_step(name):
    family = FAMILIES[name]
    num_candidates = family.num_arms - 1
    tasks, out, possible = history(name)
    assert out.features.dtype == np.float32
    assert out.features.shape == (NUM_STEPS + 1, NUM_TASKS, num_candidates)
    np.testing.assert_allclose(out.features, posterior(possible), rtol=0.0, atol=ATOL)
    # The truth is one-hot(target) at every step, and the target is always still possible.
    target = np.asarray(tasks.target)
    np.testing.assert_array_equal(out.truth, np.broadcast_to(np.eye(num_candidates)[target], out.truth.shape))
    assert np.take_along_axis(
        possible, np.broadcast_to(target[None, :, None], (NUM_STEPS + 1, NUM_TASKS, 1)), -1
    ).all()
    # The histories hold every kind of evidence: oracle pulls, hits and misses.
    pulled_target = out.actions == target[None]
    assert (out.actions == num_candidates).any() and pulled_target.any()
    assert ((out.actions < num_candidates) & ~pulled_target).any()
    assert ((posterior(possible) > 0) & (posterior(possible) < 1)).any()


def test_belief_by_hand():
    family = OracleBandit()  # 10 candidates, target_reward 5, other_reward 1
    empty = jnp.zeros(0)
    prior = family.belief_init(empty)
    np.testing.assert_allclose(family.belief_features(prior), np.full(10, 0.1), atol=1e-7)

    update = jax.jit(family.belief_update)

    def after(belief, action, reward):
        return update(belief, empty, jnp.int32(action), jnp.float32(reward), empty)

    missed = after(prior, 3, 1.0)
    np.testing.assert_allclose(
        family.belief_features(missed), np.where(np.arange(10) == 3, 0.0, 1 / 9), atol=1e-7
    )
    np.testing.assert_array_equal(family.belief_features(after(missed, 7, 5.0)), np.eye(10)[7])
    missed_twice = after(missed, 0, 1.0)
    np.testing.assert_allclose(
        family.belief_features(missed_twice), np.where(np.isin(np.arange(10), [0, 3]), 0.0, 1 / 8), atol=1e-7
    )
    for i in range(10):
        np.testing.assert_array_equal(family.belief_features(after(prior, 10, (i + 1) / 10)), np.eye(10)[i])
    # The oracle's reward decodes to the candidate whose value is closest.
    for reward, i in ((0.26, 2), (0.34, 2), (0.14, 0), (0.94, 8), (0.96, 9), (1.04, 9)):
        np.testing.assert_array_equal(family.belief_features(after(missed_twice, 10, reward)), np.eye(10)[i])
    twenty = OracleBandit(num_arms=20)
    belief = twenty.belief_update(twenty.belief_init(empty), empty, jnp.int32(19), jnp.float32(1.9), empty)
    np.testing.assert_array_equal(twenty.belief_features(belief), np.eye(19)[18])
    # A lower target reward: the higher reward rules the arm out.
    low = OracleBandit(num_arms=3, target_reward=-2.0, other_reward=0.5)
    ruled_out = low.belief_update(low.belief_init(empty), empty, jnp.int32(0), jnp.float32(0.5), empty)
    np.testing.assert_array_equal(low.belief_features(ruled_out), [0.0, 1.0])
    found = low.belief_update(low.belief_init(empty), empty, jnp.int32(0), jnp.float32(-2.0), empty)
    np.testing.assert_array_equal(low.belief_features(found), [1.0, 0.0])


# ---------------------------------------------------------------------------------------------
# Dynamics


@pytest.mark.parametrize("name", list(FAMILIES))
def test_rewards_are_exactly_as_specified_for_each_arm(name):
    family = FAMILIES[name]
    num_candidates = family.num_arms - 1
    tasks, out, _ = history(name)
    target = np.asarray(tasks.target)[None, :]
    actions = out.actions
    expected = np.where(
        actions == num_candidates,
        (target + 1) / 10.0,
        np.where(actions == target, family.target_reward, family.other_reward),
    )
    assert out.rewards.dtype == np.float32
    np.testing.assert_allclose(out.rewards, expected, rtol=0.0, atol=1e-6)
    # Every arm, the oracle included, was pulled.
    np.testing.assert_array_equal(np.unique(actions), np.arange(family.num_arms))
    assert out.obs.shape == (NUM_STEPS + 1, NUM_TASKS, 0)
    expected_done = np.arange(1, NUM_STEPS + 1)[:, None] >= family.horizon
    np.testing.assert_array_equal(out.dones, np.broadcast_to(expected_done, out.dones.shape))


@pytest.mark.parametrize("num_arms", [3, 11])
def test_targets_are_uniform(num_arms):
    family = OracleBandit(num_arms=num_arms)
    num_tasks, num_candidates = 20_000, num_arms - 1
    tasks = jax.device_get(sample_tasks(family, jax.random.key(3), num_tasks))
    target = np.asarray(tasks.target)
    assert target.dtype == np.int32 and target.min() >= 0 and target.max() < num_candidates
    for i in range(num_candidates):
        assert_frequency(target == i, 1.0 / num_candidates, f"target {i}")


def test_step_counts_time_and_ends_at_the_horizon():
    family = OracleBandit(num_arms=4, horizon=3)
    step = jax.jit(family.step)
    task = OracleTask(target=jnp.int32(1))
    state, obs = family.reset(jax.random.key(0), task)
    assert isinstance(state, OracleState) and int(state.time) == 0 and obs.shape == (0,)
    for t, (action, reward) in enumerate(((1, 5.0), (0, 1.0), (3, 0.2), (1, 5.0))):
        state, obs, r, done = step(jax.random.key(t), task, state, jnp.int32(action))
        assert float(r) == pytest.approx(reward, abs=1e-6)
        assert int(state.time) == t + 1 and bool(done) == (t + 1 >= 3) and obs.shape == (0,)
        np.testing.assert_array_equal(family.true_features(task, state), np.eye(3)[1])


# ---------------------------------------------------------------------------------------------
# Capabilities: expected rewards and outcomes, at the reference posteriors along the histories


@pytest.mark.parametrize("name", list(FAMILIES))
def test_expected_rewards_equal_the_reference_posterior_expectation(name):
    family = FAMILIES[name]
    _, out, possible = history(name)
    beliefs = OracleBelief(possible=jnp.asarray(possible))
    expected = np.asarray(jax.jit(jax.vmap(jax.vmap(family.expected_rewards)))(beliefs, out.obs))
    assert expected.dtype == np.float32 and expected.shape == possible.shape[:2] + (family.num_arms,)
    np.testing.assert_allclose(
        expected, reference_expected_rewards(family, posterior(possible)), rtol=1e-6, atol=ATOL
    )
    # Deterministic rewards: where the posterior is certain, the pulled arm pays its expectation.
    chosen = np.take_along_axis(expected[:-1], out.actions[..., None], axis=-1)[..., 0]
    certain = posterior(possible)[:-1].max(axis=-1) == 1.0
    assert certain.any()
    np.testing.assert_allclose(chosen[certain], out.rewards[certain], rtol=0.0, atol=1e-5)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_outcomes_are_the_posterior_predictive(name):
    family = FAMILIES[name]
    assert isinstance(family, FiniteOutcomes)
    _, out, possible = history(name)
    num_candidates = possible.shape[-1]
    # Every action at every belief along the first 32 histories.
    some = possible[:, :32].reshape(-1, num_candidates)
    flat_possible = np.repeat(some, family.num_arms, axis=0)
    flat_actions = np.tile(np.arange(family.num_arms, dtype=np.int32), some.shape[0])
    flat_obs = np.zeros((flat_actions.shape[0], 0), np.float32)
    outcomes = jax.jit(jax.vmap(family.outcomes))
    probs, rewards, next_obs = jax.device_get(
        outcomes(OracleBelief(possible=jnp.asarray(flat_possible)), flat_obs, jnp.asarray(flat_actions))
    )
    assert probs.dtype == rewards.dtype == next_obs.dtype == np.float32
    assert probs.ndim == 2 and rewards.shape == probs.shape and next_obs.shape == probs.shape + (0,)
    ref = reference_outcomes(family, posterior(flat_possible), flat_actions)
    assert_same_distribution(probs, rewards, next_obs, *ref)

    # The realised outcome of each step is listed with positive probability.
    step_possible = possible[:-1].reshape(-1, num_candidates)
    step_actions = out.actions.reshape(-1).astype(np.int32)
    probs, rewards, next_obs = jax.device_get(
        outcomes(
            OracleBelief(possible=jnp.asarray(step_possible)),
            np.zeros((step_actions.size, 0), np.float32),
            jnp.asarray(step_actions),
        )
    )
    realised = matches(rewards, next_obs, out.rewards.reshape(-1, 1), np.zeros((step_actions.size, 1, 0)))[
        :, 0
    ]
    assert ((realised & (probs > 0)).any(axis=-1)).all()


# ---------------------------------------------------------------------------------------------
# The reference policy


@pytest.mark.parametrize(
    "family",
    [
        OracleBandit(),
        OracleBandit(num_arms=20, horizon=30),
        OracleBandit(num_arms=3, horizon=4, target_reward=-2.0, other_reward=0.5),  # the target pays less
        OracleBandit(num_arms=5, horizon=1),
    ],
    ids=repr,
)
def test_oracle_first_asks_the_oracle_then_pulls_the_target(family):
    num_candidates = family.num_arms - 1
    policy = family.reference_policies()["oracle_first"]
    targets = np.tile(np.arange(num_candidates, dtype=np.int32), 2)  # every target, twice
    tasks = OracleTask(target=jnp.asarray(targets))
    trajectory = jax.device_get(run_policy(family, policy, jax.random.key(7), tasks))
    assert trajectory.actions.shape == (family.horizon, targets.size)
    np.testing.assert_array_equal(trajectory.actions[0], num_candidates)
    np.testing.assert_array_equal(
        trajectory.actions[1:], np.broadcast_to(targets, trajectory.actions[1:].shape)
    )
    returns = trajectory.rewards.astype(np.float64).sum(axis=0)
    expected = (targets + 1) / 10.0 + (family.horizon - 1) * family.target_reward
    np.testing.assert_allclose(returns, expected, rtol=1e-6, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Construction, layouts and the conformance check


def test_layouts():
    family = metabelief.make("oracle_bandit")
    assert family == OracleBandit(num_arms=11, horizon=6, target_reward=5.0, other_reward=1.0)
    assert (family.num_actions, family.obs_size, family.horizon, family.num_candidates) == (11, 0, 6, 10)
    assert isinstance(family, ExpectedRewards) and isinstance(family, FiniteOutcomes)
    task = family.sample_task(jax.random.key(0))
    state, obs = family.reset(jax.random.key(1), task)
    assert isinstance(task, OracleTask) and isinstance(state, OracleState)
    assert task.target.dtype == jnp.int32 and task.target.shape == ()
    assert state.time.dtype == jnp.int32 and obs.dtype == jnp.float32 and obs.shape == (0,)
    belief = family.belief_init(obs)
    assert isinstance(belief, OracleBelief) and belief.possible.dtype == jnp.bool_
    assert belief.possible.shape == (10,) and bool(belief.possible.all())
    assert family.belief_features(belief).shape == family.true_features(task, state).shape == (10,)
    assert family.expected_rewards(belief, obs).shape == (11,)
    assert set(family.reference_policies()) >= {"oracle_first"}
    other = metabelief.make("oracle_bandit", num_arms=4, horizon=2, target_reward=0.0)
    assert other == OracleBandit(num_arms=4, horizon=2, target_reward=0.0)
    assert (other.num_actions, other.horizon, other.num_candidates) == (4, 2, 3)
    hash(other)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(num_arms=2), "num_arms"),
        (dict(num_arms=0), "num_arms"),
        (dict(num_arms=5.0), "num_arms"),
        (dict(num_arms=True), "num_arms"),
        (dict(num_arms="11"), "num_arms"),
        (dict(horizon=0), "horizon"),
        (dict(horizon=2.5), "horizon"),
        (dict(horizon=True), "horizon"),
        (dict(target_reward=1.0), "target_reward|other_reward"),
        (dict(other_reward=5.0), "target_reward|other_reward"),
        (dict(target_reward=-3, other_reward=-3.0), "target_reward|other_reward"),
        (dict(target_reward=float("nan")), "target_reward"),
        (dict(target_reward=float("inf")), "target_reward"),
        (dict(target_reward="5"), "target_reward"),
        (dict(other_reward=float("-inf")), "other_reward"),
        (dict(other_reward=None), "other_reward"),
    ],
    ids=str,
)
def test_invalid_arguments_raise_value_error(kwargs, name):
    with pytest.raises(ValueError, match=name):
        OracleBandit(**kwargs)
    with pytest.raises(ValueError, match=name):
        metabelief.make("oracle_bandit", **kwargs)


def test_check_family_passes_with_non_default_arguments():
    family = metabelief.make("oracle_bandit", num_arms=5, horizon=8, target_reward=0.0, other_reward=2.0)
    check_family(family, num_tasks=512)
