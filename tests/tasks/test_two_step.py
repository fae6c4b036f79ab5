"""The two-step task: beliefs against a float64 NumPy HMM filter, dynamics against their parameters.

The reference filter is written here without the package's code: it replays the recorded
second-stage states (read off the one-hot observations) and rewards in float64 probability
space, normalising after each trial. The family's own check under ``check_family`` with default
arguments runs in tests/test_testing.py, which checks every registered family.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief.tasks import TwoStep, TwoStepBelief, TwoStepState, TwoStepTask
from metabelief.tasks.two_step import is_common, reached_state
from metabelief.testing import check_family, random_rollout, sample_tasks

ATOL = 1e-5  # float32 features against a float64 reference
LONG_HISTORY = 10_000

rollout = jax.jit(random_rollout, static_argnames=("family", "num_steps"))


def reference_beliefs(family: TwoStep, obs: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """float64 [T + 1, N]: P(A rich on the next trial | history) after each history prefix.

    ``obs`` is a rollout's ``float[T + 1, N, 2]`` (index 0 from reset), ``rewards`` ``float[T, N]``.
    """
    p_rich, p_switch = family.p_rich, family.p_switch
    at_a = obs[1:, :, 0] > 0.5  # [T, N]
    paid = rewards > 0.5
    beliefs = np.empty((rewards.shape[0] + 1, rewards.shape[1]))
    beliefs[0] = 0.5
    for t in range(rewards.shape[0]):
        reward_prob_if_rich = np.where(paid[t], p_rich, 1.0 - p_rich)
        reward_prob_if_poor = np.where(paid[t], 1.0 - p_rich, p_rich)
        like_a_rich = np.where(at_a[t], reward_prob_if_rich, reward_prob_if_poor)
        like_b_rich = np.where(at_a[t], reward_prob_if_poor, reward_prob_if_rich)
        a_rich = beliefs[t] * like_a_rich
        b_rich = (1.0 - beliefs[t]) * like_b_rich
        posterior = a_rich / (a_rich + b_rich)
        beliefs[t + 1] = posterior * (1.0 - p_switch) + (1.0 - posterior) * p_switch
    return beliefs


# ---------------------------------------------------------------------------------------------
# Beliefs on long random histories

LONG_FAMILIES = {
    "defaults": TwoStep(),
    "slow-switch": TwoStep(p_common=0.7, p_rich=0.99, p_switch=0.001),
    "weak-reward-never-switches": TwoStep(p_rich=0.55, p_switch=0.0),
    "certain-reward": TwoStep(p_rich=1.0, p_switch=0.1),
    "always-switches": TwoStep(p_rich=0.7, p_switch=1.0),
    "poor-is-rich": TwoStep(p_common=0.5, p_rich=0.2, p_switch=0.3),
}


@pytest.mark.parametrize("name", list(LONG_FAMILIES))
def test_belief_equals_the_float64_forward_filter_over_10000_trials(name):
    family = LONG_FAMILIES[name]
    tasks = sample_tasks(family, jax.random.key(1), num_tasks=32)
    out = jax.device_get(rollout(family, jax.random.key(2), tasks, num_steps=LONG_HISTORY))
    expected = reference_beliefs(family, out.obs, out.rewards)
    assert out.features.dtype == np.float32 and out.features.shape == (LONG_HISTORY + 1, 32, 1)
    np.testing.assert_allclose(out.features[..., 0], expected, rtol=0.0, atol=ATOL)
    # Random actions reach both states and the histories hold both kinds of evidence.
    assert 0.3 < out.obs[1:, :, 0].mean() < 0.7 and 0.0 < out.rewards.mean() < 1.0


def test_belief_after_one_trial_by_hand():
    family = TwoStep()  # p_rich 0.9, p_switch 0.025
    at_a, at_b = jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])
    prior = family.belief_init(jnp.zeros(2))

    def after(next_obs, reward):
        return float(family.belief_update(prior, jnp.zeros(2), 0, jnp.float32(reward), next_obs).p_a_rich)

    # Reward at A: posterior 0.9, then 0.9 * 0.975 + 0.1 * 0.025 = 0.88.
    assert after(at_a, 1.0) == pytest.approx(0.88, abs=1e-6)
    assert after(at_b, 0.0) == pytest.approx(0.88, abs=1e-6)
    assert after(at_a, 0.0) == pytest.approx(0.12, abs=1e-6)
    assert after(at_b, 1.0) == pytest.approx(0.12, abs=1e-6)
    np.testing.assert_array_equal(family.belief_features(prior), [0.5])
    # The action does not enter the update: the transition carries no evidence.
    for action in (0, 1):
        belief = family.belief_update(prior, jnp.zeros(2), jnp.int32(action), jnp.float32(1.0), at_a)
        assert float(belief.p_a_rich) == pytest.approx(0.88, abs=1e-6)


def test_certain_beliefs_stay_finite_and_recover_through_the_switch():
    family = TwoStep(p_rich=1.0, p_switch=0.2)
    belief = family.belief_init(jnp.zeros(2))
    belief = family.belief_update(belief, jnp.zeros(2), 0, jnp.float32(1.0), jnp.array([1.0, 0.0]))
    assert float(belief.p_a_rich) == pytest.approx(0.8, abs=1e-6)  # A was rich for sure, then may swap
    never = TwoStep(p_rich=1.0, p_switch=0.0)
    certain = never.belief_update(
        never.belief_init(jnp.zeros(2)), jnp.zeros(2), 0, jnp.float32(0.0), jnp.array([1.0, 0.0])
    )
    np.testing.assert_array_equal(never.belief_features(certain), [0.0])


# ---------------------------------------------------------------------------------------------
# Dynamics


@pytest.mark.parametrize(
    "family",
    [TwoStep(), TwoStep(num_trials=40, p_common=0.65, p_rich=0.75, p_switch=0.1)],
    ids=repr,
)
def test_transition_reward_and_switch_frequencies(family):
    num_tasks, num_steps = 512, 400
    tasks = sample_tasks(family, jax.random.key(3), num_tasks=num_tasks)
    out = jax.device_get(rollout(family, jax.random.key(4), tasks, num_steps=num_steps))
    a_rich = out.truth[..., 0] > 0.5  # [T + 1, N]: index t is the rich state on trial t
    at_a = out.obs[1:, :, 0] > 0.5  # [T, N]
    np.testing.assert_array_equal(out.obs[1:].sum(axis=-1), 1.0)  # one-hot after every step
    common = (out.actions == 0) == at_a
    np.testing.assert_array_equal(common, np.asarray(is_common(out.actions, out.obs[1:])))
    np.testing.assert_array_equal(at_a, np.asarray(reached_state(out.obs[1:])) == 0)
    reached_rich = at_a == a_rich[:-1]  # the reward depends on the rich state before the swap
    switched = a_rich[1:] != a_rich[:-1]

    def assert_frequency(events: np.ndarray, p: float, what: str):
        n = events.size
        se = np.sqrt(max(p * (1.0 - p), 1.0 / n) / n)
        assert abs(events.mean() - p) < 5.0 * se, (what, events.mean(), p, se)

    assert_frequency(common, family.p_common, "common transitions")
    assert_frequency(out.rewards[reached_rich], family.p_rich, "reward in the rich state")
    assert_frequency(out.rewards[~reached_rich], 1.0 - family.p_rich, "reward in the poor state")
    assert_frequency(switched, family.p_switch, "switches")
    assert_frequency(a_rich[0], 0.5, "A rich at the start")
    np.testing.assert_array_equal(a_rich[0], np.asarray(tasks.a_rich_at_start))
    np.testing.assert_array_equal(out.obs[0], 0.0)  # nothing reached at reset
    expected_done = np.arange(1, num_steps + 1)[:, None] >= family.num_trials
    np.testing.assert_array_equal(out.dones, np.broadcast_to(expected_done, out.dones.shape))


def test_deterministic_settings_step_as_specified():
    task = TwoStepTask(a_rich_at_start=jnp.asarray(True))
    keys = jax.random.split(jax.random.key(5), 6)
    for p_common, action, expected in ((1.0, 0, 0), (1.0, 1, 1), (0.0, 0, 1), (0.0, 1, 0)):
        family = TwoStep(num_trials=3, p_common=p_common, p_rich=1.0, p_switch=0.0)
        state, obs = family.reset(keys[0], task)
        for key in keys[1:]:
            next_state, next_obs, reward, done = family.step(key, task, state, jnp.int32(action))
            np.testing.assert_array_equal(next_obs, np.eye(2)[expected])
            assert float(reward) == float(expected == 0)  # only A pays: it is rich and never swaps
            assert bool(next_state.a_rich) and int(next_state.time) == int(state.time) + 1
            assert bool(done) == (int(next_state.time) >= 3)
            state = next_state
    alternating = TwoStep(p_switch=1.0)
    state, _ = alternating.reset(keys[0], task)
    for t, key in enumerate(keys[1:]):
        state = alternating.step(key, task, state, jnp.int32(0))[0]
        np.testing.assert_array_equal(alternating.true_features(task, state), [float(t % 2 == 1)])


def test_layouts():
    family = metabelief.make("two_step")
    assert family == TwoStep(num_trials=100, p_common=0.8, p_rich=0.9, p_switch=0.025)
    assert (family.num_actions, family.obs_size, family.horizon) == (2, 2, 100)
    task = family.sample_task(jax.random.key(0))
    state, obs = family.reset(jax.random.key(1), task)
    assert isinstance(task, TwoStepTask) and isinstance(state, TwoStepState)
    assert task.a_rich_at_start.dtype == jnp.bool_ and state.time.dtype == jnp.int32
    belief = family.belief_init(obs)
    assert isinstance(belief, TwoStepBelief) and belief.log_odds.dtype == jnp.float32
    assert family.belief_features(belief).shape == family.true_features(task, state).shape == (1,)
    other = metabelief.make("two_step", num_trials=7, p_switch=0)
    assert other == TwoStep(num_trials=7, p_switch=0.0) and other.horizon == 7
    assert isinstance(other.p_switch, float)
    hash(other)


# ---------------------------------------------------------------------------------------------
# Construction and the conformance check


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(num_trials=0), "num_trials"),
        (dict(num_trials=2.5), "num_trials"),
        (dict(num_trials=True), "num_trials"),
        (dict(num_trials="10"), "num_trials"),
        (dict(p_common=-0.1), "p_common"),
        (dict(p_common=1.5), "p_common"),
        (dict(p_common=float("nan")), "p_common"),
        (dict(p_rich=1.01), "p_rich"),
        (dict(p_rich="0.9"), "p_rich"),
        (dict(p_switch=-1e-3), "p_switch"),
        (dict(p_switch=float("inf")), "p_switch"),
    ],
    ids=str,
)
def test_invalid_arguments_raise_value_error(kwargs, name):
    with pytest.raises(ValueError, match=name):
        TwoStep(**kwargs)
    with pytest.raises(ValueError, match=name):
        metabelief.make("two_step", **kwargs)


def test_check_family_passes_with_non_default_arguments():
    family = metabelief.make("two_step", num_trials=30, p_common=0.65, p_rich=0.75, p_switch=0.1)
    report = check_family(family, num_tasks=1024)
    assert report.calibration_groups >= 20  # (57 at this key) the check had many groups to test


def test_expected_rewards_equal_the_reward_rate_seen_after_each_belief_and_action():
    family = TwoStep(num_trials=50)
    tasks = sample_tasks(family, jax.random.key(11), 4096)
    history = jax.jit(random_rollout, static_argnames=("family", "num_steps"))(
        family, jax.random.key(12), tasks, num_steps=50
    )
    p_a_rich = np.asarray(history.features[:-1, :, 0])  # belief before each trial
    beliefs = TwoStepBelief(log_odds=jnp.log(p_a_rich) - jnp.log1p(-p_a_rich))
    expected = np.asarray(jax.vmap(jax.vmap(family.expected_rewards))(beliefs, history.obs[:-1]))
    actions, rewards = np.asarray(history.actions), np.asarray(history.rewards, np.float64)
    chosen = np.take_along_axis(expected, actions[..., None], axis=-1)[..., 0]
    # Float64 by hand at the prior: P(reward | action) = 0.5 for both actions.
    np.testing.assert_allclose(expected[0], 0.5, atol=1e-6)
    # Calibration: among trials whose expected reward falls in a bin, the reward rate matches it.
    bins = np.digitize(chosen, np.linspace(0.1, 0.9, 9))
    for b in np.unique(bins):
        members = bins == b
        if members.sum() < 500:
            continue
        p = chosen[members].mean()
        se = np.sqrt(p * (1 - p) / members.sum())
        assert abs(rewards[members].mean() - p) < 5.0 * se
