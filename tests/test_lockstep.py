"""The one lockstep engine: every actor through the same scan, key schedule and trajectory type.

References are computed here: the key schedule by drawing the same numbers by hand, beliefs by
the family's own update run in a Python loop, a learner's memory by a NumPy loop, the probe
statistics by NumPy float64 moments of the recorded pairs.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief import rollout as engine
from metabelief.agents import agent_for
from metabelief.baselines import QLearning, run_policy, thompson_sampling

HORIZON, NUM_TASKS = 12, 32
FAMILY = metabelief.make("bernoulli_bandit", num_arms=3, horizon=HORIZON)
AGENT = agent_for(FAMILY, hidden_size=8)
PARAMS = AGENT.init(jax.random.key(0))
TASKS = engine.sample_tasks(FAMILY, jax.random.key(1), NUM_TASKS)


def _np(tree):
    return jax.tree.map(np.asarray, tree)


def test_one_key_schedule_reset_then_actor_noise_then_environment_keys():
    key = jax.random.key(5)
    out = engine.lockstep(FAMILY, engine.UniformActions(3), key=key, tasks=TASKS).trajectory
    key, _ = jax.random.split(key)  # the reset key: a bandit's reset ignores it
    action_key, env_key = jax.random.split(key)
    actions = jax.random.randint(action_key, (HORIZON, NUM_TASKS), 0, 3, jnp.int32)
    env_keys = jax.random.split(env_key, (HORIZON, NUM_TASKS))
    probs = np.asarray(TASKS.probs)[np.arange(NUM_TASKS), np.asarray(actions)]  # [T, N]
    rewards = jax.vmap(jax.vmap(jax.random.bernoulli))(env_keys, jnp.asarray(probs))
    np.testing.assert_array_equal(np.asarray(out.actions), np.asarray(actions))
    np.testing.assert_array_equal(np.asarray(out.rewards), np.asarray(rewards, np.float32))


def test_belief_policy_features_are_the_family_belief_run_in_a_python_loop():
    out = run_policy(FAMILY, thompson_sampling(FAMILY), jax.random.key(2), TASKS)
    assert out.hidden is None and out.logits is None  # no network outputs for a belief policy
    actions, rewards = np.asarray(out.actions), np.asarray(out.rewards)
    for lane in (0, 7, 31):
        belief = FAMILY.belief_init(jnp.zeros((0,)))
        for t in range(HORIZON):
            np.testing.assert_allclose(out.features[t, lane], FAMILY.belief_features(belief), rtol=1e-6)
            belief = FAMILY.belief_update(
                belief, jnp.zeros((0,)), actions[t, lane], rewards[t, lane], jnp.zeros((0,))
            )
    np.testing.assert_allclose(out.truth, np.broadcast_to(TASKS.probs, (HORIZON, NUM_TASKS, 3)))


def test_learner_memory_is_its_update_replayed_in_numpy_and_its_choice_uses_the_actor_keys():
    learner = QLearning(num_actions=3, learning_rate=0.25, inverse_temperature=3.0, initial_value=0.5)
    key = jax.random.key(3)
    run = engine.lockstep(FAMILY, engine.LearnerActor(learner), key=key, tasks=TASKS)
    out = run.trajectory
    actions, rewards = np.asarray(out.actions), np.asarray(out.rewards, np.float64)
    q = np.full((NUM_TASKS, 3), 0.5)
    lanes = np.arange(NUM_TASKS)
    key, _ = jax.random.split(key)
    action_keys = jax.random.split(jax.random.split(key)[0], (HORIZON, NUM_TASKS))
    for t in range(HORIZON):
        chosen = jax.vmap(learner)(action_keys[t], jnp.asarray(q, jnp.float32), jnp.zeros((NUM_TASKS, 0)))
        np.testing.assert_array_equal(np.asarray(chosen), actions[t])
        q[lanes, actions[t]] += 0.25 * (rewards[t] - q[lanes, actions[t]])
    np.testing.assert_allclose(np.asarray(run.last.memory), q, rtol=1e-5)


def test_network_actor_through_lockstep_is_rollout_and_replay_reproduces_it():
    key = jax.random.key(4)
    via_engine = engine.lockstep(
        FAMILY, engine.NetworkActor(agent=AGENT, params=PARAMS), key=key, tasks=TASKS
    )
    direct = engine.rollout(FAMILY, AGENT, PARAMS, key, TASKS)
    chex.assert_trees_all_equal(_np(via_engine.trajectory), _np(direct))
    replayed = engine.replay(FAMILY, AGENT, PARAMS, direct)
    chex.assert_trees_all_close(_np(replayed), _np(direct), rtol=1e-6, atol=1e-6)


def test_streamed_moments_equal_float64_moments_of_the_recorded_pairs_per_split():
    sizes = (16, 8, 8)
    key = jax.random.key(6)
    run = engine.lockstep(
        FAMILY, engine.NetworkActor(agent=AGENT, params=PARAMS), key=key, tasks=TASKS, split_sizes=sizes
    )
    pairs = np.concatenate([run.trajectory.hidden, run.trajectory.features], axis=-1).astype(np.float64)
    bounds = np.cumsum([0, *sizes])
    for index, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        rows = pairs[:, start:stop].reshape(-1, pairs.shape[-1])
        centred = rows - rows.mean(axis=0)
        assert float(run.moments.count[index]) == rows.shape[0]
        np.testing.assert_allclose(run.moments.mean[index], rows.mean(axis=0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(run.moments.scatter[index], centred.T @ centred, rtol=1e-4, atol=1e-4)
    streamed = engine.probe_moments(FAMILY, AGENT, PARAMS, sizes, key=key, tasks=TASKS)
    chex.assert_trees_all_close(_np(streamed), _np(run.moments), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize(
    "source",
    [
        {},
        {"key": jax.random.key(0)},
        {"tasks": TASKS},
        {"key": jax.random.key(0), "tasks": TASKS, "history": "recorded"},
        {"tasks": TASKS, "history": "recorded"},
    ],
    ids=["nothing", "key only", "tasks only", "all three", "tasks and history"],
)
def test_probe_moments_needs_exactly_one_of_key_and_tasks_or_history(source):
    if "history" in source:
        source = source | {"history": engine.rollout(FAMILY, AGENT, PARAMS, jax.random.key(1), TASKS)}
    with pytest.raises(ValueError, match="exactly one"):
        engine.probe_moments(FAMILY, AGENT, PARAMS, (16, 8, 8), **source)


def test_a_jitted_lockstep_compiles_once_for_new_keys_tasks_and_params():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def play(params, key, tasks):
        actor = engine.NetworkActor(agent=AGENT, params=params)
        return engine.lockstep(FAMILY, actor, key=key, tasks=tasks, split_sizes=(16, 8, 8)).moments

    chex.clear_trace_counter()
    for seed in range(3):
        params = AGENT.init(jax.random.key(10 + seed))
        play(params, jax.random.key(seed), engine.sample_tasks(FAMILY, jax.random.key(20 + seed), NUM_TASKS))
