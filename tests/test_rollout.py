"""The lockstep rollout: beliefs, truth and agent inputs against recomputations, replay, probe moments.

Beliefs are checked against a float64 NumPy posterior computed here from the recorded history and
against the family's own ``belief_init``/``belief_update`` run in a Python loop; the agent's
hidden states against ``agent.step`` fed the recorded history by hand.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief.agents import agent_for
from metabelief.rollout import Trajectory, probe_moments, replay, rollout
from metabelief.tasks.bernoulli_bandit import BernoulliTask
from metabelief.tasks.dependent_bandit import DependentTask
from tests.tasks.bandit_helpers import assert_rewards_follow

HORIZON, NUM_TASKS, HIDDEN = 20, 64, 8
SUPPORT = (0.2, 0.8)
SPLITS = (24, 16, 24)
BERNOULLI = metabelief.make("bernoulli_bandit", num_arms=2, horizon=HORIZON)
DEPENDENT = metabelief.make("dependent_bandit", horizon=HORIZON, support=SUPPORT)
# The time input is on, so the step index the scan feeds the agent is checked too.
AGENTS = {
    "bernoulli": agent_for(BERNOULLI, hidden_size=HIDDEN, time_input=True),
    "dependent": agent_for(DEPENDENT, hidden_size=HIDDEN),
}

run = jax.jit(rollout, static_argnums=(0, 1), static_argnames=("num_steps", "track_belief"))
rerun = jax.jit(replay, static_argnums=(0, 1))
moments = jax.jit(probe_moments, static_argnums=(0, 1, 3), static_argnames="num_steps")
step = jax.jit(lambda agent, params, carry, inputs: agent.step(params, carry, inputs), static_argnums=0)


def sharpened(params, seed=0, scale=30.0):
    """Parameters with a large random policy head, so the policy is far from uniform."""
    params = jax.tree.map(lambda leaf: leaf, params)  # a copy of the nested dicts
    shape = params["params"]["policy"]["kernel"].shape
    kernel = scale * np.random.default_rng(seed).standard_normal(shape)
    params["params"]["policy"]["kernel"] = jnp.asarray(kernel, jnp.float32)
    return params


def bernoulli_tasks(seed: int, num_tasks: int = NUM_TASKS) -> BernoulliTask:
    probs = np.random.default_rng(seed).uniform(size=(num_tasks, 2))
    return BernoulliTask(probs=jnp.asarray(probs, jnp.float32))


def dependent_tasks(seed: int, num_tasks: int = NUM_TASKS) -> DependentTask:
    p = np.random.default_rng(seed).choice(SUPPORT, size=num_tasks)
    return DependentTask(p=jnp.asarray(p, jnp.float32))


def arm_probs(tasks) -> np.ndarray:
    """float64 [N, 2] success probability of each arm."""
    if isinstance(tasks, BernoulliTask):
        return np.asarray(tasks.probs, np.float64)
    p = np.asarray(tasks.p, np.float64)
    return np.stack([p, 1.0 - p], axis=1)


@pytest.fixture(scope="module", params=["bernoulli", "dependent"])
def setup(request):
    """``(family, agent, params, tasks, trajectory)`` of one rollout with a far-from-uniform policy."""
    family = {"bernoulli": BERNOULLI, "dependent": DEPENDENT}[request.param]
    agent = AGENTS[request.param]
    params = sharpened(agent.init(jax.random.key(0)))
    tasks = {"bernoulli": bernoulli_tasks, "dependent": dependent_tasks}[request.param](1)
    return family, agent, params, tasks, run(family, agent, params, jax.random.key(2), tasks)


@pytest.fixture(scope="module")
def bernoulli_setup():
    agent = AGENTS["bernoulli"]
    params = sharpened(agent.init(jax.random.key(0)))
    tasks = bernoulli_tasks(1)
    return BERNOULLI, agent, params, tasks, run(BERNOULLI, agent, params, jax.random.key(2), tasks)


def as_numpy(trajectory: Trajectory) -> dict[str, np.ndarray]:
    return {name: np.asarray(value) for name, value in trajectory.items()}


# ---------------------------------------------------------------------------------------------
# What the rollout records


def test_shapes_and_dtypes(setup):
    family, agent, _, _, trajectory = setup
    num_features = {BERNOULLI: 4, DEPENDENT: 2 + len(SUPPORT)}[family]
    expected = {
        "obs": ((HORIZON + 1, NUM_TASKS, 0), jnp.float32),
        "actions": ((HORIZON, NUM_TASKS), jnp.int32),
        "rewards": ((HORIZON, NUM_TASKS), jnp.float32),
        "dones": ((HORIZON, NUM_TASKS), jnp.bool_),
        "hidden": ((HORIZON, NUM_TASKS, HIDDEN), jnp.float32),
        "memory": ((HORIZON, NUM_TASKS, 2 * HIDDEN), jnp.float32),
        "logits": ((HORIZON, NUM_TASKS, 2), jnp.float32),
        "values": ((HORIZON, NUM_TASKS), jnp.float32),
        "features": ((HORIZON, NUM_TASKS, num_features), jnp.float32),
        "truth": ((HORIZON, NUM_TASKS, 2), jnp.float32),
    }
    assert {name: (value.shape, value.dtype) for name, value in trajectory.items()} == expected


def test_bernoulli_features_are_beta_posterior_before_each_transition(bernoulli_setup):
    *_, trajectory = bernoulli_setup
    out = as_numpy(trajectory)
    pulled = out["actions"][..., None] == np.arange(2)  # [T, N, K]
    successes = np.cumsum(pulled * out["rewards"][..., None], axis=0)
    failures = np.cumsum(pulled * (1.0 - out["rewards"][..., None]), axis=0)
    # features[t] has seen transitions 0 .. t - 1: shift the running counts by one step.
    zeros = np.zeros((1, NUM_TASKS, 2))
    alpha = 1.0 + np.concatenate([zeros, successes[:-1]]).astype(np.float64)
    beta = 1.0 + np.concatenate([zeros, failures[:-1]]).astype(np.float64)
    mean = alpha / (alpha + beta)
    std = np.sqrt(alpha * (alpha + 1.0) / ((alpha + beta) * (alpha + beta + 1.0)) - mean**2)
    expected = np.concatenate([mean, std], axis=-1)
    np.testing.assert_allclose(out["features"], expected, rtol=0.0, atol=1e-6)


def test_dependent_support_features_are_posterior_over_support_before_each_transition():
    agent = AGENTS["dependent"]
    params = sharpened(agent.init(jax.random.key(0)))
    out = as_numpy(run(DEPENDENT, agent, params, jax.random.key(2), dependent_tasks(1)))
    # Outcomes with likelihood p: arm 0 paid or arm 1 failed.
    favours_p = np.where(out["actions"] == 0, out["rewards"], 1.0 - out["rewards"]).astype(np.float64)
    zeros = np.zeros((1, NUM_TASKS))
    for_p = np.concatenate([zeros, np.cumsum(favours_p, axis=0)[:-1]])  # [T, N]
    against_p = np.arange(HORIZON)[:, None] - for_p
    support = np.asarray(SUPPORT)
    likelihood = support ** for_p[..., None] * (1.0 - support) ** against_p[..., None]  # [T, N, S]
    posterior = likelihood / likelihood.sum(axis=-1, keepdims=True)
    mean = posterior @ support
    expected = np.concatenate([mean[..., None], 1.0 - mean[..., None], posterior], axis=-1)
    np.testing.assert_allclose(out["features"], expected, rtol=0.0, atol=1e-5)


def test_features_equal_family_belief_run_over_the_recorded_history(setup):
    family, *_, trajectory = setup
    update = jax.jit(jax.vmap(family.belief_update))
    features = jax.jit(jax.vmap(family.belief_features))
    beliefs = jax.vmap(family.belief_init)(trajectory.obs[0])
    for t in range(HORIZON):
        np.testing.assert_array_equal(np.asarray(trajectory.features[t]), np.asarray(features(beliefs)))
        beliefs = update(
            beliefs, trajectory.obs[t], trajectory.actions[t], trajectory.rewards[t], trajectory.obs[t + 1]
        )


def test_truth_is_each_task_arm_probabilities_at_every_step(setup):
    *_, tasks, trajectory = setup
    expected = np.broadcast_to(arm_probs(tasks).astype(np.float32), (HORIZON, NUM_TASKS, 2))
    np.testing.assert_array_equal(np.asarray(trajectory.truth), expected)


def test_rewards_follow_the_tasks_and_actions_are_in_range(setup):
    family, *_, tasks, trajectory = setup
    out = as_numpy(trajectory)
    assert ((out["actions"] >= 0) & (out["actions"] < family.num_actions)).all()
    assert set(np.unique(out["rewards"])) <= {0.0, 1.0}
    assert_rewards_follow(arm_probs(tasks), out["actions"], out["rewards"].astype(np.float64))


def test_actions_are_sampled_from_the_policy_logits(bernoulli_setup):
    *_, trajectory = bernoulli_setup
    probs = np.asarray(jax.nn.softmax(trajectory.logits), np.float64)[..., 0]  # P(arm 0) [T, N]
    # The sharpened policy is far from uniform, so this is not the uniform policy passing.
    assert np.mean(np.abs(probs - 0.5) > 0.3) > 0.3
    chose_arm_0 = np.asarray(trajectory.actions) == 0
    z = (chose_arm_0.sum() - probs.sum()) / np.sqrt((probs * (1.0 - probs)).sum())
    assert abs(z) < 5.0
    # Nearly sure choices are made: where one arm has probability > 0.99 the agent picks it.
    sure = np.abs(probs - 0.5) > 0.49
    assert sure.sum() > 100
    assert (chose_arm_0[sure] == (probs[sure] > 0.5)).mean() > 0.95


def test_deterministic_arms_pay_exactly_and_done_holds_past_the_horizon():
    agent = AGENTS["bernoulli"]
    params = sharpened(agent.init(jax.random.key(3)))
    probs = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]] * 4, np.float32)
    tasks = BernoulliTask(probs=jnp.asarray(probs))
    num_steps = HORIZON + 5
    out = as_numpy(run(BERNOULLI, agent, params, jax.random.key(4), tasks, num_steps=num_steps))
    assert out["actions"].shape == (num_steps, 16)
    np.testing.assert_array_equal(out["rewards"], np.take_along_axis(probs, out["actions"].T, axis=1).T)
    steps_taken = np.arange(1, num_steps + 1)[:, None]
    np.testing.assert_array_equal(out["dones"], np.broadcast_to(steps_taken >= HORIZON, (num_steps, 16)))
    assert out["dones"][HORIZON - 1].all() and not out["dones"][HORIZON - 2].any()


def test_agent_reads_previous_action_reward_and_time(bernoulli_setup):
    """``agent.step`` fed the recorded history by hand reproduces hidden, memory, logits and values."""
    _, agent, params, _, trajectory = bernoulli_setup
    carry = agent.initial_carry(NUM_TASKS)
    prev_action = jnp.full((NUM_TASKS,), -1, jnp.int32)
    prev_reward = jnp.zeros((NUM_TASKS,), jnp.float32)
    for t in range(HORIZON):
        inputs = agent.inputs(trajectory.obs[t], prev_action, prev_reward, jnp.asarray(t, jnp.int32))
        carry, logits, values = step(agent, params, carry, inputs)
        np.testing.assert_allclose(
            np.asarray(trajectory.memory[t, :, HIDDEN:]), np.asarray(carry[0]), atol=1e-6
        )
        np.testing.assert_allclose(np.asarray(trajectory.hidden[t]), np.asarray(carry[1]), atol=1e-6)
        np.testing.assert_allclose(np.asarray(trajectory.logits[t]), np.asarray(logits), atol=1e-5)
        np.testing.assert_allclose(np.asarray(trajectory.values[t]), np.asarray(values), atol=1e-6)
        prev_action, prev_reward = trajectory.actions[t], trajectory.rewards[t]


# ---------------------------------------------------------------------------------------------
# Teacher forcing


def test_replay_with_the_same_params_reproduces_the_rollout(bernoulli_setup):
    family, agent, params, _, trajectory = bernoulli_setup
    original, replayed = as_numpy(trajectory), as_numpy(rerun(family, agent, params, trajectory))
    for name in ("obs", "actions", "rewards", "dones", "truth", "features"):
        np.testing.assert_array_equal(replayed[name], original[name], err_msg=name)
    for name in ("hidden", "memory", "logits", "values"):
        np.testing.assert_allclose(replayed[name], original[name], rtol=0.0, atol=1e-6, err_msg=name)


def test_replay_with_other_params_changes_hidden_but_not_the_history(bernoulli_setup):
    family, agent, _, _, trajectory = bernoulli_setup
    other = agent.init(jax.random.key(99))
    original, replayed = as_numpy(trajectory), as_numpy(rerun(family, agent, other, trajectory))
    for name in ("obs", "actions", "rewards", "dones", "truth", "features"):
        np.testing.assert_array_equal(replayed[name], original[name], err_msg=name)
    assert np.abs(replayed["hidden"] - original["hidden"]).mean() > 1e-2
    # The replayed hidden states are the other network's response to this very history.
    carry = agent.initial_carry(NUM_TASKS)
    prev_action, prev_reward = jnp.full((NUM_TASKS,), -1, jnp.int32), jnp.zeros((NUM_TASKS,))
    for t in range(3):
        inputs = agent.inputs(trajectory.obs[t], prev_action, prev_reward, jnp.asarray(t, jnp.int32))
        carry, _, _ = step(agent, other, carry, inputs)
        np.testing.assert_allclose(replayed["hidden"][t], np.asarray(carry[1]), atol=1e-6)
        prev_action, prev_reward = trajectory.actions[t], trajectory.rewards[t]


# ---------------------------------------------------------------------------------------------
# Probe statistics


def reference_moments(trajectory: Trajectory, split_sizes) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """float64 ``(count, mean, centred scatter)`` of ``[hidden, features]`` over each split's tasks."""
    pairs = np.concatenate([trajectory.hidden, trajectory.features], axis=-1).astype(np.float64)
    bounds = np.cumsum([0, *split_sizes])
    result = []
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        z = pairs[:, start:stop].reshape(-1, pairs.shape[-1])
        centred = z - z.mean(axis=0)
        result.append((z.shape[0], z.mean(axis=0), centred.T @ centred))
    return result


def assert_moments_match(stats, trajectory: Trajectory, split_sizes) -> None:
    size = HIDDEN + trajectory.features.shape[-1]
    assert stats.count.shape == (len(split_sizes),)
    assert stats.mean.shape == (len(split_sizes), size)
    assert stats.scatter.shape == (len(split_sizes), size, size)
    for split, (count, mean, scatter) in enumerate(reference_moments(trajectory, split_sizes)):
        assert float(stats.count[split]) == count == split_sizes[split] * HORIZON
        np.testing.assert_allclose(np.asarray(stats.mean[split]), mean, rtol=0.0, atol=1e-5)
        tolerance = 1e-5 * np.abs(scatter).max()
        np.testing.assert_allclose(np.asarray(stats.scatter[split]), scatter, rtol=1e-4, atol=tolerance)


def test_probe_moments_from_key_and_tasks_match_the_stored_rollout(bernoulli_setup):
    family, agent, params, tasks, trajectory = bernoulli_setup
    stats = moments(family, agent, params, SPLITS, key=jax.random.key(2), tasks=tasks)
    assert_moments_match(stats, trajectory, SPLITS)


def test_probe_moments_from_history_match_the_replayed_trajectory(bernoulli_setup):
    family, agent, _, _, trajectory = bernoulli_setup
    other = agent.init(jax.random.key(99))
    stats = moments(family, agent, other, SPLITS, history=trajectory)
    assert_moments_match(stats, rerun(family, agent, other, trajectory), SPLITS)


@pytest.mark.parametrize("split_sizes", [(24, 16, 23), (32, 40), (65,)])
def test_probe_moments_split_sizes_must_add_up_to_the_tasks(bernoulli_setup, split_sizes):
    family, agent, params, tasks, trajectory = bernoulli_setup
    with pytest.raises(ValueError, match="split_sizes"):
        probe_moments(family, agent, params, split_sizes, key=jax.random.key(2), tasks=tasks)
    with pytest.raises(ValueError, match="split_sizes"):
        probe_moments(family, agent, params, split_sizes, history=trajectory)


# ---------------------------------------------------------------------------------------------
# Compilation and options


def test_jitted_rollout_traces_once_for_new_keys_params_and_tasks():
    agent = AGENTS["bernoulli"]

    @jax.jit
    @chex.assert_max_traces(n=1)
    def actions_of(params, key, tasks):
        return rollout(BERNOULLI, agent, params, key, tasks).actions

    first = actions_of(agent.init(jax.random.key(0)), jax.random.key(1), bernoulli_tasks(5))
    second = actions_of(agent.init(jax.random.key(1)), jax.random.key(2), bernoulli_tasks(6))
    assert first.shape == second.shape == (HORIZON, NUM_TASKS)
    assert (np.asarray(first) != np.asarray(second)).any()


def test_without_belief_tracking_features_are_empty_and_behaviour_is_unchanged(bernoulli_setup):
    family, agent, params, tasks, trajectory = bernoulli_setup
    untracked = run(family, agent, params, jax.random.key(2), tasks, track_belief=False)
    assert untracked.features.shape == (HORIZON, NUM_TASKS, 0)
    assert untracked.truth.shape == (HORIZON, NUM_TASKS, 0)
    for name in ("actions", "rewards", "dones"):
        np.testing.assert_array_equal(np.asarray(untracked[name]), np.asarray(trajectory[name]))
    np.testing.assert_allclose(np.asarray(untracked.hidden), np.asarray(trajectory.hidden), atol=1e-6)
    replayed = replay(family, agent, params, untracked)  # a history without beliefs replays without them
    assert replayed.features.shape == replayed.truth.shape == (HORIZON, NUM_TASKS, 0)
