"""The latent-goal cart: beliefs against a float64 NumPy posterior, dynamics against their
parameters, and the MAP-greedy reference policy against belief-greedy.

The reference posterior is written here from the family's specification, without the package's
code. The goal never changes, so the log posterior after t steps is the uniform prior plus the
sum of the Gaussian log likelihoods of the t rewards, each under the noiseless reward
``-(position' - goal)^2 - velocity_cost * v^2`` at the position the step reached (the next
observation) and the velocity taken, computed in float64 and normalised with a stable
log-sum-exp. The family's own check under ``check_family`` with default arguments runs in
tests/test_testing.py, which checks every registered family.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief.baselines import belief_greedy, run_policy
from metabelief.tasks import LatentGoalCart
from metabelief.tasks.latent_goal_cart import CartBelief
from metabelief.testing import check_family, random_rollout, sample_tasks

# The family computes its Gaussian log likelihood in float32: each step adds
# -((r - m_g) / noise_std)^2 / 2 with m_g ~ 1-10 rounded to ~1e-7 relatively, so the log odds
# between goals pick up ~1e-7 * |m_g| * |r - m_g| / noise_std^2 of rounding per step (the float64
# reference reads the same float32 rewards and positions, so only this arithmetic differs). Only
# an uncertain posterior turns that into a probability error, and such a posterior has
# |r - m_g| ~ noise_std, so the error stays ~1e-6 / noise_std per step: measured at most 9e-6
# (noise_std 0.01) and 3e-6 (default) over 60 steps of 64 tasks. 1e-4 leaves a 10x margin and is
# far below a modelling error (a dropped velocity cost or the pre-step position moves the
# beliefs by > 1e-2).
ATOL = 1e-4

rollout = jax.jit(random_rollout, static_argnames=("family", "num_steps"))
run = jax.jit(run_policy, static_argnames=("family", "policy", "num_steps"))

DEFAULTS = dict(
    goals=(-1.0, 1.0),
    noise_std=0.1,
    horizon=30,
    velocities=(-1.0, -0.5, 0.0, 0.5, 1.0),
    dt=0.1,
    position_limit=2.0,
    start_spread=0.1,
    velocity_cost=0.01,
)
THREE_GOALS = dict(goals=(-1.0, 0.25, 1.5), noise_std=0.5)
SMALL_NOISE = dict(noise_std=0.01)
# Only rightward velocities: the cart reaches the limit 0.5 within 5 steps and stays pinned.
PINNED = dict(velocities=(0.5, 1.0, 2.0), position_limit=0.5, noise_std=1.0, goals=(-1.0, 0.2, 1.0))
# Big steps in a narrow track: the cart bounces between both limits.
BOUNCING = dict(velocities=(-3.0, 0.0, 3.0), dt=0.2, position_limit=0.4, start_spread=0.4, noise_std=0.5)
COSTLY = dict(velocity_cost=0.5, velocities=(-2.0, 0.0, 2.0), noise_std=0.3)


def parameters(kwargs: dict) -> dict:
    return {**DEFAULTS, **kwargs}


def next_positions(p: dict, positions: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """float64 clip(position + dt * v, -limit, limit)."""
    v = np.asarray(p["velocities"], np.float64)[actions]
    return np.clip(positions.astype(np.float64) + p["dt"] * v, -p["position_limit"], p["position_limit"])


def noiseless_rewards(p: dict, next_position: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """float64 [..., G]: the reward's mean under each goal, at the position reached."""
    goals = np.asarray(p["goals"], np.float64)
    v = np.asarray(p["velocities"], np.float64)[actions]
    return (
        -((next_position.astype(np.float64)[..., None] - goals) ** 2) - p["velocity_cost"] * v[..., None] ** 2
    )


def reference_log_posteriors(
    kwargs: dict, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray
) -> np.ndarray:
    """float64 [T + 1, N, G]: log P(goal | history) after each history prefix.

    ``obs`` float[T + 1, N, 1], ``actions`` int[T, N], ``rewards`` float[T, N] of a rollout.
    """
    p = parameters(kwargs)
    means = noiseless_rewards(p, obs[1:, :, 0], actions)  # [T, N, G], at the NEXT observation
    log_likelihood = -0.5 * ((rewards.astype(np.float64)[..., None] - means) / p["noise_std"]) ** 2
    log_joint = np.concatenate([np.zeros_like(log_likelihood[:1]), np.cumsum(log_likelihood, axis=0)])
    top = log_joint.max(axis=-1, keepdims=True)
    return log_joint - top - np.log(np.exp(log_joint - top).sum(axis=-1, keepdims=True))


def reference_features(kwargs: dict, log_posteriors: np.ndarray) -> np.ndarray:
    probs = np.exp(log_posteriors)
    return np.concatenate(
        [probs, probs @ np.asarray(parameters(kwargs)["goals"], np.float64)[:, None]], axis=-1
    )


# ---------------------------------------------------------------------------------------------
# Beliefs on random histories

BELIEF_CASES = {
    "defaults": {},
    "three-goals": THREE_GOALS,
    "small-noise-near-certain": SMALL_NOISE,
    "pinned-at-the-limit": PINNED,
    "bouncing-between-limits": BOUNCING,
    "costly-velocities": COSTLY,
}


def belief_case(name: str):
    """Rolls the case out and compares every belief feature at every step; returns both."""
    kwargs = BELIEF_CASES[name]
    family = LatentGoalCart(**kwargs)
    num_goals = len(parameters(kwargs)["goals"])
    num_steps = 2 * family.horizon  # past the horizon the task and the filter go on
    tasks = sample_tasks(family, jax.random.key(1), 64)
    out = jax.device_get(rollout(family, jax.random.key(2), tasks, num_steps=num_steps))
    assert out.features.dtype == np.float32 and out.features.shape == (num_steps + 1, 64, num_goals + 1)
    expected = reference_features(kwargs, reference_log_posteriors(kwargs, out.obs, out.actions, out.rewards))
    np.testing.assert_allclose(out.features, expected, rtol=0.0, atol=ATOL)
    np.testing.assert_allclose(out.features[0, :, :num_goals], 1.0 / num_goals, atol=1e-6)
    return out, expected


@pytest.mark.parametrize("name", [name for name in BELIEF_CASES if name != "small-noise-near-certain"])
def test_belief_features_equal_the_float64_posterior(name):
    belief_case(name)


def test_small_noise_belief_equals_the_float64_posterior_and_is_certain_within_a_few_steps():
    out, _ = belief_case("small-noise-near-certain")
    truth = out.truth  # one-hot goal
    # After 10 random steps nearly every task's posterior puts > 0.999 on the true goal.
    on_truth = (out.features[10:, :, :2] * truth[10:]).sum(axis=-1)
    assert (on_truth > 0.999).mean() > 0.9
    assert np.isfinite(out.features).all()


def test_pinned_cart_sits_at_the_limit():
    family = LatentGoalCart(**PINNED)
    tasks = sample_tasks(family, jax.random.key(3), 64)  # the belief test's shapes: one compile
    out = jax.device_get(rollout(family, jax.random.key(4), tasks, num_steps=60))
    positions = out.obs[..., 0]
    assert (np.diff(positions, axis=0) >= 0).all()
    # From at most 0.1 below 0 to the limit 0.5 in steps of at least dt * 0.5 = 0.05: 12 steps.
    np.testing.assert_array_equal(positions[13:], np.float32(0.5))


def test_belief_after_one_step_by_hand():
    family = LatentGoalCart()  # goals -1 and 1, noise_std 0.1, velocity_cost 0.01, dt 0.1
    start = jnp.array([0.0], jnp.float32)
    prior = family.belief_init(start)
    np.testing.assert_allclose(family.belief_features(prior), [0.5, 0.5, 0.0], atol=1e-6)
    # v = 1 to position 0.1; reward -0.82 is the noiseless reward under goal 1 (-(0.9^2) - 0.01);
    # under goal -1 it would be -1.22: log odds 0.4^2 / (2 * 0.01) = 8 for goal 1.
    after = family.belief_update(
        prior, start, jnp.int32(4), jnp.float32(-0.82), jnp.array([0.1], jnp.float32)
    )
    p1 = 1.0 / (1.0 + np.exp(-8.0))
    np.testing.assert_allclose(family.belief_features(after), [1 - p1, p1, 2 * p1 - 1], atol=1e-5)
    # Standing still at 0 says nothing about symmetric goals, whatever the reward.
    still = family.belief_update(prior, start, jnp.int32(2), jnp.float32(-3.0), start)
    np.testing.assert_allclose(family.belief_features(still), [0.5, 0.5, 0.0], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Dynamics


@pytest.mark.parametrize("kwargs", [{}, BOUNCING, THREE_GOALS], ids=["defaults", "bouncing", "three-goals"])
def test_positions_rewards_and_noise_follow_the_parameters(kwargs):
    family = LatentGoalCart(**kwargs)
    p = parameters(kwargs)
    num_tasks, num_steps = 256, 30
    tasks = jax.device_get(sample_tasks(family, jax.random.key(5), num_tasks))
    out = jax.device_get(rollout(family, jax.random.key(6), tasks, num_steps=num_steps))
    assert out.obs.dtype == np.float32 and out.obs.shape == (num_steps + 1, num_tasks, 1)
    positions = out.obs[..., 0]
    # Start uniform in [-start_spread, start_spread].
    spread = p["start_spread"]
    assert (np.abs(positions[0]) <= spread).all()
    assert abs(positions[0].mean()) < 5.0 * spread / np.sqrt(3.0 * num_tasks)
    assert abs(positions[0].std() / (spread / np.sqrt(3.0)) - 1.0) < 0.15
    # Moves: clip(position + dt * v) from the previous observation.
    reached = next_positions(p, positions[:-1], out.actions)
    np.testing.assert_allclose(positions[1:], reached, rtol=0.0, atol=1e-6)
    assert (np.abs(positions) <= p["position_limit"]).all()
    # Rewards: the noiseless reward under the true goal plus noise_std * N(0, 1).
    goal = np.asarray(tasks.goal)
    mean = np.take_along_axis(
        noiseless_rewards(p, positions[1:], out.actions),
        np.broadcast_to(goal[None, :, None], (num_steps, num_tasks, 1)),
        axis=-1,
    )[..., 0]
    z = (out.rewards.astype(np.float64) - mean) / p["noise_std"]
    n = z.size
    assert abs(z.mean()) < 5.0 / np.sqrt(n)
    assert abs(z.std() - 1.0) < 5.0 / np.sqrt(2.0 * n)
    assert abs((np.abs(z) < 1.0).mean() - 0.6827) < 5.0 * np.sqrt(0.6827 * 0.3173 / n)  # Gaussian
    # The truth is the goal, one-hot, for the whole episode.
    np.testing.assert_array_equal(out.truth, np.broadcast_to(np.eye(len(p["goals"]))[goal], out.truth.shape))
    expected_done = np.arange(1, num_steps + 1)[:, None] >= family.horizon
    np.testing.assert_array_equal(out.dones, np.broadcast_to(expected_done, out.dones.shape))


def test_bouncing_cart_reaches_both_limits():
    family = LatentGoalCart(**BOUNCING)
    tasks = sample_tasks(family, jax.random.key(7), 64)  # the belief test's shapes: one compile
    positions = jax.device_get(rollout(family, jax.random.key(8), tasks, num_steps=60)).obs[1:, :, 0]
    assert (positions == np.float32(0.4)).mean() > 0.2 and (positions == np.float32(-0.4)).mean() > 0.2


def test_goals_are_uniform():
    family = LatentGoalCart(**THREE_GOALS)
    goals = np.asarray(sample_tasks(family, jax.random.key(9), 6000).goal)
    assert goals.dtype == np.int32
    for g in range(3):
        n, p = goals.size, 1.0 / 3.0
        assert abs((goals == g).mean() - p) < 5.0 * np.sqrt(p * (1 - p) / n)


def test_layouts():
    family = metabelief.make("latent_goal_cart")
    assert family == LatentGoalCart()
    assert (family.num_actions, family.obs_size, family.horizon) == (5, 1, 30)
    three = metabelief.make("latent_goal_cart", **THREE_GOALS, horizon=12)
    assert (three.num_actions, three.obs_size, three.horizon) == (5, 1, 12)
    hash(three)
    task = three.sample_task(jax.random.key(0))
    state, obs = three.reset(jax.random.key(1), task)
    assert obs.shape == (1,) and obs.dtype == jnp.float32 and state.position.dtype == jnp.float32
    assert task.goal.dtype == jnp.int32 and state.time.dtype == jnp.int32
    belief = three.belief_init(obs)
    assert isinstance(belief, CartBelief) and belief.log_probs.shape == (3,)
    assert belief.log_probs.dtype == jnp.float32
    assert three.belief_features(belief).shape == (4,) and three.true_features(task, state).shape == (3,)
    assert isinstance(three, metabelief.tasks.ExpectedRewards)


# ---------------------------------------------------------------------------------------------
# Expected rewards


@pytest.mark.parametrize("kwargs", [THREE_GOALS, COSTLY, PINNED], ids=["three-goals", "costly", "pinned"])
def test_expected_rewards_equal_the_reference_posterior_mean_reward(kwargs):
    family = LatentGoalCart(**kwargs)
    p = parameters(kwargs)
    tasks = sample_tasks(family, jax.random.key(10), 16)
    out = jax.device_get(rollout(family, jax.random.key(11), tasks, num_steps=20))
    log_posteriors = reference_log_posteriors(kwargs, out.obs, out.actions, out.rewards)  # [T + 1, N, G]
    beliefs = CartBelief(log_probs=jnp.asarray(log_posteriors, jnp.float32))
    got = np.asarray(jax.jit(jax.vmap(jax.vmap(family.expected_rewards)))(beliefs, jnp.asarray(out.obs)))
    num_actions = len(p["velocities"])
    assert got.dtype == np.float32 and got.shape == (21, 16, num_actions)
    # For every action a from the current position: E over goals of the noiseless reward there.
    actions = np.broadcast_to(np.arange(num_actions), got.shape)
    reached = next_positions(p, np.broadcast_to(out.obs[..., :1], got.shape), actions)
    expected = (np.exp(log_posteriors)[..., None, :] * noiseless_rewards(p, reached, actions)).sum(axis=-1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# The MAP-greedy reference policy


def test_map_greedy_acts_on_the_most_probable_goal_and_beats_belief_greedy():
    family = LatentGoalCart()
    p = parameters({})
    policies = family.reference_policies()
    assert set(policies) == {"map_greedy"}
    tasks = sample_tasks(family, jax.random.key(12), 512)
    map_greedy = jax.device_get(run(family, policies["map_greedy"], jax.random.key(13), tasks))
    greedy = jax.device_get(run(family, belief_greedy(family), jax.random.key(13), tasks))
    # Its actions: the best noiseless reward under the most probable goal (where neither is tied).
    probs = map_greedy.features[..., :2]  # the beliefs acted on, [T, N, G]
    num_actions = len(p["velocities"])
    actions = np.broadcast_to(np.arange(num_actions), probs.shape[:2] + (num_actions,))
    reached = next_positions(p, np.broadcast_to(map_greedy.obs[:-1, :, :1], actions.shape), actions)
    values = noiseless_rewards(p, reached, actions)  # [T, N, A, G]
    map_goal = np.argmax(probs, axis=-1)
    under_map = np.take_along_axis(values, map_goal[..., None, None], axis=-1)[..., 0]  # [T, N, A]
    ordered = np.sort(under_map, axis=-1)
    sorted_probs = np.sort(probs, axis=-1)
    clear = (ordered[..., -1] - ordered[..., -2] > 1e-4) & (
        sorted_probs[..., -1] - sorted_probs[..., -2] > 1e-3
    )
    assert clear.mean() > 0.5
    np.testing.assert_array_equal(map_greedy.actions[clear], np.argmax(under_map, axis=-1)[clear])
    # Belief-greedy stays where the reward says nothing about the goal; MAP-greedy commits and
    # learns, so it earns more on average.
    map_returns, greedy_returns = map_greedy.rewards.sum(axis=0), greedy.rewards.sum(axis=0)
    difference = map_returns - greedy_returns
    se = difference.std() / np.sqrt(difference.size)
    assert difference.mean() > 5.0 * se, (map_returns.mean(), greedy_returns.mean(), se)


# ---------------------------------------------------------------------------------------------
# Construction and the conformance check


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(goals=(1.0,)), "goals"),
        (dict(goals=()), "goals"),
        (dict(goals=(0.5, 0.5)), "goals"),
        (dict(goals=(0.0, float("nan"))), "goals"),
        (dict(goals=(0.0, float("inf"))), "goals"),
        (dict(noise_std=0.0), "noise_std"),
        (dict(noise_std=-0.1), "noise_std"),
        (dict(noise_std=float("nan")), "noise_std"),
        (dict(velocities=()), "velocities"),
        (dict(velocities=(0.0, float("inf"))), "velocities"),
        (dict(velocities=(0.0, float("nan"))), "velocities"),
        (dict(dt=0.0), "dt"),
        (dict(dt=-0.1), "dt"),
        (dict(horizon=0), "horizon"),
        (dict(horizon=2.5), "horizon"),
        # Beyond the rules the spec lists ("..."): the module's own, each reasonable.
        (dict(position_limit=0.0), "position_limit"),
        (dict(start_spread=-0.1), "start_spread"),
        (dict(start_spread=3.0), "start_spread"),  # beyond the default limit 2
        (dict(velocity_cost=-0.01), "velocity_cost"),
    ],
    ids=str,
)
def test_invalid_arguments_raise_value_error(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LatentGoalCart(**kwargs)
    with pytest.raises(ValueError, match=name):
        metabelief.make("latent_goal_cart", **kwargs)


def test_check_family_passes_with_three_goals():
    check_family(LatentGoalCart(goals=(-1.0, 0.25, 1.5), noise_std=0.5, horizon=20), num_tasks=512)
