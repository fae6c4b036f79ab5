"""The repeated tiger POMDP: beliefs against a float64 NumPy filter, dynamics against their parameters.

The reference filter is written here without the package's code: it replays the recorded
actions and heard sides (read off the one-hot observations) in float64 log-odds of "tiger left",
adding the listening evidence, then predicting the move (the tiger stays with p_stay), and going
back to even odds after a door is opened. The family's own check under ``check_family`` with
default arguments runs in tests/test_testing.py, which checks every registered family.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief.baselines import run_policy
from metabelief.tasks import Tiger
from metabelief.tasks.base import ExpectedRewards, FiniteOutcomes
from metabelief.tasks.tiger import LISTEN, OPEN_LEFT, OPEN_RIGHT, TigerBelief, TigerState, TigerTask
from metabelief.testing import check_family, random_rollout, sample_tasks
from tests.tasks.outcome_helpers import assert_frequency, assert_same_distribution, matches

ATOL = 1e-5  # float32 features against a float64 reference
NUM_STEPS = 60
NUM_TASKS = 256

rollout = jax.jit(random_rollout, static_argnames=("family", "num_steps"))

FAMILIES = {
    "defaults": (Tiger(), NUM_STEPS),
    "drifting": (Tiger(p_stay=0.9), NUM_STEPS),
    "always-moves": (Tiger(accuracy=0.7, p_stay=0.0), NUM_STEPS),
    "perfect-hearing": (Tiger(accuracy=1.0), NUM_STEPS),
    "perfect-hearing-drifting": (Tiger(accuracy=1.0, p_stay=0.8), NUM_STEPS),
    "other-rewards": (
        Tiger(
            accuracy=0.65, p_stay=0.95, horizon=12, listen_reward=0.5, treasure_reward=-3.0, tiger_reward=7.0
        ),
        NUM_STEPS,
    ),
    "weak-hearing-long": (Tiger(accuracy=0.55, horizon=2000), 2000),
}


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    """log(1 / (1 + exp(-x))), exact at +-inf."""
    return -np.logaddexp(0.0, -x)


def predict(family: Tiger, log_odds: np.ndarray) -> np.ndarray:
    """Log-odds of "left" after the tiger stays with probability p_stay, else moves."""
    p_stay = family.p_stay
    if p_stay == 1.0:
        return log_odds
    if p_stay == 0.0:
        return -log_odds
    left, right = log_sigmoid(log_odds), log_sigmoid(-log_odds)
    stay, move = np.log(p_stay), np.log1p(-p_stay)
    return np.logaddexp(stay + left, move + right) - np.logaddexp(move + left, stay + right)


def reference_log_odds(family: Tiger, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """float64 [T + 1, N]: log P(tiger left) / P(right) for the state acted in after each prefix.

    ``obs`` is a rollout's ``float[T + 1, N, 2]`` (index 0 from reset), ``actions`` ``int[T, N]``.
    """
    with np.errstate(divide="ignore"):
        evidence = np.log(family.accuracy) - np.log1p(-family.accuracy)  # inf when accuracy is 1
    num_steps, num_histories = actions.shape
    log_odds = np.zeros((num_steps + 1, num_histories))
    with np.errstate(invalid="ignore"):  # (inf - inf only in branches np.where drops)
        for t in range(num_steps):
            heard_left = obs[t + 1, :, 0] > 0.5
            listened = predict(family, log_odds[t] + np.where(heard_left, evidence, -evidence))
            log_odds[t + 1] = np.where(actions[t] == LISTEN, listened, 0.0)
    return log_odds


def p_left(log_odds: np.ndarray) -> np.ndarray:
    return np.exp(log_sigmoid(log_odds))


def reference_expected_rewards(family: Tiger, left: np.ndarray) -> np.ndarray:
    """float64 [..., 3] from P(tiger left) ``left``."""
    return np.stack(
        [
            np.full_like(left, family.listen_reward),
            left * family.tiger_reward + (1.0 - left) * family.treasure_reward,
            (1.0 - left) * family.tiger_reward + left * family.treasure_reward,
        ],
        axis=-1,
    )


def reference_outcomes(family: Tiger, left: np.ndarray, actions: np.ndarray):
    """The posterior predictive of ``actions`` [M] at P(tiger left) ``left`` [M]: two outcomes each.

    Returns ``(p [M, 2], rewards [M, 2], next_obs [M, 2, 2])``.
    """
    num = left.shape[0]
    acc = family.accuracy
    heard_left = left * acc + (1.0 - left) * (1.0 - acc)
    listen = actions == LISTEN
    tiger_behind = np.where(actions == OPEN_LEFT, left, 1.0 - left)
    probs = np.where(
        listen[:, None],
        np.stack([heard_left, 1.0 - heard_left], -1),
        np.stack([tiger_behind, 1.0 - tiger_behind], -1),
    )
    rewards = np.where(
        listen[:, None],
        family.listen_reward,
        np.broadcast_to([family.tiger_reward, family.treasure_reward], (num, 2)),
    )
    next_obs = np.where(listen[:, None, None], np.eye(2)[None], 0.0)
    return probs, rewards, np.broadcast_to(next_obs, (num, 2, 2))


@functools.cache
def history(name: str):
    """One random rollout of ``NUM_TASKS`` tasks per family, shared by the tests below (one compile
    each), with the reference log-odds after each history prefix."""
    family, num_steps = FAMILIES[name]
    tasks = jax.device_get(sample_tasks(family, jax.random.key(0), NUM_TASKS))
    out = jax.device_get(rollout(family, jax.random.key(1), tasks, num_steps=num_steps))
    return tasks, out, reference_log_odds(family, out.obs, out.actions)


# ---------------------------------------------------------------------------------------------
# Beliefs on random histories


@pytest.mark.parametrize("name", list(FAMILIES))
def test_belief_equals_the_float64_filter_at_every_step(name):
    family, num_steps = FAMILIES[name]
    _, out, log_odds = history(name)
    expected = p_left(log_odds)
    assert out.features.dtype == np.float32 and out.features.shape == (num_steps + 1, NUM_TASKS, 1)
    assert np.isfinite(out.features).all()
    np.testing.assert_allclose(out.features[..., 0], expected, rtol=0.0, atol=ATOL)
    # The histories hold every action and both heard sides, and beliefs away from even odds.
    np.testing.assert_array_equal(np.unique(out.actions), [LISTEN, OPEN_LEFT, OPEN_RIGHT])
    heard = out.obs[1:][out.actions == LISTEN]
    assert heard[:, 0].any() and heard[:, 1].any()
    assert (np.abs(expected - 0.5) > 0.1).any()


@dataclasses.dataclass(frozen=True)
class AlwaysListen:
    def __call__(self, key, belief, obs):
        return jnp.int32(LISTEN)


@pytest.mark.parametrize("p_stay", [1.0, 0.999])
def test_belief_stays_finite_listening_for_2000_steps(p_stay):
    # With accuracy 0.9 the log-odds move ~1.8 per step: thousands after 2000 listens (and P(left)
    # underflows a float32 long before), unless a move (p_stay < 1) brings them back.
    family = Tiger(accuracy=0.9, p_stay=p_stay, horizon=2000)
    tasks = sample_tasks(family, jax.random.key(4), 16)
    trajectory = jax.device_get(run_policy(family, AlwaysListen(), jax.random.key(5), tasks))
    np.testing.assert_array_equal(trajectory.actions, LISTEN)
    log_odds = reference_log_odds(family, trajectory.obs, trajectory.actions)
    if p_stay == 1.0:
        assert np.abs(log_odds[-1]).min() > 1000.0
    assert np.isfinite(trajectory.features).all()
    np.testing.assert_allclose(trajectory.features[..., 0], p_left(log_odds[:-1]), rtol=0.0, atol=ATOL)


def test_belief_by_hand():
    family = Tiger()  # accuracy 0.8, p_stay 1
    zeros, heard_left, heard_right = jnp.zeros(2), jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])
    prior = family.belief_init(zeros)
    np.testing.assert_array_equal(family.belief_features(prior), [0.5])

    def after(family, belief, action, next_obs, reward):
        return jax.jit(family.belief_update)(belief, zeros, jnp.int32(action), jnp.float32(reward), next_obs)

    left = after(family, prior, LISTEN, heard_left, -1.0)
    np.testing.assert_allclose(family.belief_features(left), [0.8], atol=1e-6)
    twice = after(family, left, LISTEN, heard_left, -1.0)
    np.testing.assert_allclose(family.belief_features(twice), [0.64 / 0.68], atol=1e-6)
    back = after(family, twice, LISTEN, heard_right, -1.0)
    np.testing.assert_allclose(family.belief_features(back), [0.8], atol=1e-6)
    for action, reward in ((OPEN_LEFT, -100.0), (OPEN_LEFT, 10.0), (OPEN_RIGHT, 10.0)):
        np.testing.assert_array_equal(
            family.belief_features(after(family, twice, action, zeros, reward)), [0.5]
        )
    drifting = Tiger(p_stay=0.9)
    # 0.8 after hearing left, then 0.8 * 0.9 + 0.2 * 0.1 = 0.74 after the tiger may move.
    moved = after(drifting, drifting.belief_init(zeros), LISTEN, heard_left, -1.0)
    np.testing.assert_allclose(drifting.belief_features(moved), [0.74], atol=1e-6)
    swapping = Tiger(p_stay=0.0)
    swapped = after(swapping, swapping.belief_init(zeros), LISTEN, heard_left, -1.0)
    np.testing.assert_allclose(swapping.belief_features(swapped), [0.2], atol=1e-6)
    perfect = Tiger(accuracy=1.0, p_stay=0.9)
    certain = after(perfect, perfect.belief_init(zeros), LISTEN, heard_right, -1.0)
    np.testing.assert_allclose(perfect.belief_features(certain), [0.1], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Dynamics


@pytest.mark.parametrize("name", ["defaults", "always-moves", "perfect-hearing-drifting", "other-rewards"])
def test_listening_doors_and_moves_follow_the_parameters(name):
    family, num_steps = FAMILIES[name]
    tasks, out, _ = history(name)
    left = out.truth[..., 0] > 0.5  # [T + 1, N]: index t is the tiger's side when acting at t
    np.testing.assert_array_equal(left[0], np.asarray(tasks.left))
    np.testing.assert_array_equal(out.truth[..., 0], left.astype(np.float32))
    np.testing.assert_array_equal(out.obs[0], 0.0)  # nothing heard at reset
    listen = out.actions == LISTEN
    opened = ~listen
    next_obs = out.obs[1:]
    np.testing.assert_array_equal(next_obs[listen].sum(axis=-1), 1.0)  # one-hot after listening
    assert set(np.unique(next_obs[listen])) <= {0.0, 1.0}
    np.testing.assert_array_equal(next_obs[opened], 0.0)  # nothing heard after opening
    heard_left = next_obs[..., 0] > 0.5

    # Rewards, exactly: listening costs listen_reward; a door pays tiger_reward iff the tiger was
    # behind it in the state acted in.
    tiger_behind = np.where(out.actions == OPEN_LEFT, left[:-1], ~left[:-1])
    expected = np.where(
        listen, family.listen_reward, np.where(tiger_behind, family.tiger_reward, family.treasure_reward)
    )
    np.testing.assert_array_equal(out.rewards, expected.astype(np.float32))

    assert_frequency(heard_left[listen] == left[:-1][listen], family.accuracy, "the true side heard")
    assert_frequency(left[1:][listen] == left[:-1][listen], family.p_stay, "the tiger stays while listening")
    was_left = left[:-1][opened]
    now_left = left[1:][opened]
    assert_frequency(now_left[was_left], 0.5, "placed left after an open (tiger was left)")
    assert_frequency(now_left[~was_left], 0.5, "placed left after an open (tiger was right)")
    assert_frequency(left[0], 0.5, "the tiger starts left")
    expected_done = np.arange(1, num_steps + 1)[:, None] >= family.horizon
    np.testing.assert_array_equal(out.dones, np.broadcast_to(expected_done, out.dones.shape))


def test_tasks_are_uniform():
    tasks = jax.device_get(sample_tasks(Tiger(), jax.random.key(8), 20_000))
    assert tasks.left.dtype == np.bool_
    assert_frequency(np.asarray(tasks.left), 0.5, "tiger left")


def test_certain_hearing_and_a_still_tiger_step_as_specified():
    family = Tiger(accuracy=1.0, p_stay=1.0, horizon=4)
    step = jax.jit(family.step)
    for side in (True, False):
        task = TigerTask(left=jnp.asarray(side))
        state, obs = family.reset(jax.random.key(0), task)
        assert isinstance(state, TigerState) and bool(state.left) == side and int(state.time) == 0
        np.testing.assert_array_equal(obs, [0.0, 0.0])
        for t, key in enumerate(jax.random.split(jax.random.key(1), 5)):
            state, obs, reward, done = step(key, task, state, jnp.int32(LISTEN))
            np.testing.assert_array_equal(obs, [1.0, 0.0] if side else [0.0, 1.0])
            assert float(reward) == -1.0 and bool(state.left) == side
            assert int(state.time) == t + 1 and bool(done) == (t + 1 >= 4)
        state, _ = family.reset(jax.random.key(0), task)
        _, obs, reward, _ = step(jax.random.key(2), task, state, jnp.int32(OPEN_LEFT))
        assert float(reward) == (-100.0 if side else 10.0)
        np.testing.assert_array_equal(obs, [0.0, 0.0])
        _, _, reward, _ = step(jax.random.key(2), task, state, jnp.int32(OPEN_RIGHT))
        assert float(reward) == (10.0 if side else -100.0)


# ---------------------------------------------------------------------------------------------
# Capabilities: expected rewards and outcomes, at the reference posteriors along the histories

CAPABILITY_FAMILIES = ["defaults", "drifting", "always-moves", "perfect-hearing-drifting", "other-rewards"]


def _beliefs_along(name):
    """The history and its reference log-odds after each prefix, clipped far beyond float32's
    resolution of P so that a certain belief is finite."""
    _, out, log_odds = history(name)
    return out, np.clip(log_odds, -60.0, 60.0)


@pytest.mark.parametrize("name", CAPABILITY_FAMILIES)
def test_expected_rewards_equal_the_reference_posterior_expectation(name):
    family, num_steps = FAMILIES[name]
    out, log_odds = _beliefs_along(name)
    beliefs = TigerBelief(log_odds=jnp.asarray(log_odds, jnp.float32))
    expected = np.asarray(jax.jit(jax.vmap(jax.vmap(family.expected_rewards)))(beliefs, out.obs))
    assert expected.dtype == np.float32 and expected.shape == log_odds.shape + (3,)
    scale = max(abs(family.tiger_reward), abs(family.treasure_reward), abs(family.listen_reward))
    np.testing.assert_allclose(
        expected, reference_expected_rewards(family, p_left(log_odds)), rtol=0.0, atol=ATOL * scale
    )


@pytest.mark.parametrize("name", CAPABILITY_FAMILIES)
def test_outcomes_are_the_posterior_predictive(name):
    family, num_steps = FAMILIES[name]
    assert isinstance(family, FiniteOutcomes)
    out, log_odds = _beliefs_along(name)
    outcomes = jax.jit(jax.vmap(family.outcomes))
    # Every action at every belief along the histories.
    flat_log_odds = np.repeat(log_odds.reshape(-1), 3)
    flat_obs = np.repeat(out.obs.reshape(-1, 2), 3, axis=0)
    flat_actions = np.tile(np.arange(3, dtype=np.int32), log_odds.size)
    probs, rewards, next_obs = jax.device_get(
        outcomes(
            TigerBelief(log_odds=jnp.asarray(flat_log_odds, jnp.float32)), flat_obs, jnp.asarray(flat_actions)
        )
    )
    assert probs.dtype == rewards.dtype == next_obs.dtype == np.float32
    assert probs.ndim == 2 and rewards.shape == probs.shape and next_obs.shape == probs.shape + (2,)
    assert_same_distribution(
        probs, rewards, next_obs, *reference_outcomes(family, p_left(flat_log_odds), flat_actions)
    )

    # The realised outcome of each step is listed with positive probability.
    probs, rewards, next_obs = jax.device_get(
        outcomes(
            TigerBelief(log_odds=jnp.asarray(log_odds[:-1].reshape(-1), jnp.float32)),
            out.obs[:-1].reshape(-1, 2),
            jnp.asarray(out.actions.reshape(-1), jnp.int32),
        )
    )
    realised = matches(rewards, next_obs, out.rewards.reshape(-1, 1), out.obs[1:].reshape(-1, 1, 2))[:, 0]
    assert ((realised & (probs > 0)).any(axis=-1)).all()


# ---------------------------------------------------------------------------------------------
# Construction, layouts and the conformance check


def test_layouts():
    family = metabelief.make("tiger")
    assert family == Tiger(
        accuracy=0.8, horizon=30, p_stay=1.0, listen_reward=-1.0, treasure_reward=10.0, tiger_reward=-100.0
    )
    assert (family.num_actions, family.obs_size, family.horizon) == (3, 2, 30)
    assert (LISTEN, OPEN_LEFT, OPEN_RIGHT) == (0, 1, 2)
    assert isinstance(family, ExpectedRewards) and isinstance(family, FiniteOutcomes)
    task = family.sample_task(jax.random.key(0))
    state, obs = family.reset(jax.random.key(1), task)
    assert isinstance(task, TigerTask) and isinstance(state, TigerState)
    assert task.left.dtype == jnp.bool_ and task.left.shape == ()
    assert state.left.dtype == jnp.bool_ and state.time.dtype == jnp.int32
    assert obs.dtype == jnp.float32
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    belief = family.belief_init(obs)
    assert (
        isinstance(belief, TigerBelief)
        and belief.log_odds.dtype == jnp.float32
        and belief.log_odds.shape == ()
    )
    assert float(belief.log_odds) == 0.0
    assert family.belief_features(belief).shape == family.true_features(task, state).shape == (1,)
    np.testing.assert_array_equal(family.true_features(task, state), [float(bool(task.left))])
    assert family.expected_rewards(belief, obs).shape == (3,)
    other = metabelief.make("tiger", accuracy=1, p_stay=0, horizon=5)
    assert other == Tiger(accuracy=1.0, p_stay=0.0, horizon=5) and other.horizon == 5
    hash(other)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(accuracy=0.5), "accuracy"),
        (dict(accuracy=0.3), "accuracy"),
        (dict(accuracy=1.01), "accuracy"),
        (dict(accuracy=float("nan")), "accuracy"),
        (dict(accuracy="0.8"), "accuracy"),
        (dict(p_stay=-0.1), "p_stay"),
        (dict(p_stay=1.5), "p_stay"),
        (dict(p_stay=float("nan")), "p_stay"),
        (dict(horizon=0), "horizon"),
        (dict(horizon=2.5), "horizon"),
        (dict(horizon=True), "horizon"),
        (dict(listen_reward=float("inf")), "listen_reward"),
        (dict(listen_reward="-1"), "listen_reward"),
        (dict(treasure_reward=float("nan")), "treasure_reward"),
        (dict(tiger_reward=float("-inf")), "tiger_reward"),
        (dict(tiger_reward=None), "tiger_reward"),
    ],
    ids=str,
)
def test_invalid_arguments_raise_value_error(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Tiger(**kwargs)
    with pytest.raises(ValueError, match=name):
        metabelief.make("tiger", **kwargs)


def test_check_family_passes_with_non_default_arguments():
    family = metabelief.make("tiger", accuracy=0.7, p_stay=0.9, horizon=15, treasure_reward=5.0)
    check_family(family, num_tasks=512)
