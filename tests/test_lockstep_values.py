"""The lockstep engine beyond bandits: families with observations, and a truth that changes mid-episode.

``two_step`` with ``p_switch = 0.3`` (the rich state swaps within the episode; the belief reads
the observed second-stage state) and a random tabular task set (a random start state drawn from
the reset key, observations from the first step on) drive the engine under a network, a belief
policy and a learner. The independent references, all computed here:

* the environment: the family's own ``reset``/``step`` alone (no actor, no belief) stepped along
  the recorded actions with the engine's key schedule rebuilt by hand (``key -> (key, reset_key)``, ``key ->
  (action_key, env_key)``, one key per lane at reset and per lane and step after), giving the
  observations, rewards, dones and the truth of the state acted on at each step;
* the beliefs: float64 NumPy filters written from the tasks' definitions (the two-state hidden
  Markov model of ``two_step``, Bayes' rule over the tabular task set), and the family's own
  ``belief_update`` run in a Python loop over the recorded transitions;
* the actors: each policy called by hand on the key the schedule gives its lane and step;
* the probe blocks: NumPy slices of lanes and float64 moments.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metabelief import rollout as engine
from metabelief.agents import agent_for
from metabelief.agents.base import unroll as unroll_agent
from metabelief.tasks.tabular import TabularTask, random_tabular
from metabelief.tasks.two_step import TwoStep, TwoStepTask

NUM_STEPS, NUM_TASKS, HIDDEN = 10, 16, 8
TWO_STEP = TwoStep(num_trials=NUM_STEPS, p_common=0.8, p_rich=0.9, p_switch=0.3)
TABULAR = random_tabular(num_tasks=3, num_states=4, num_actions=2, horizon=NUM_STEPS, seed=1)
FAMILIES = {"two_step": TWO_STEP, "tabular": TABULAR}
TASKS = {
    "two_step": TwoStepTask(a_rich_at_start=jnp.arange(NUM_TASKS) % 2 == 0),
    "tabular": TabularTask(index=jnp.arange(NUM_TASKS, dtype=jnp.int32) % 3),
}
KEY = jax.random.key(7)


def _np(tree):
    return jax.tree.map(np.asarray, tree)


def schedule(key):
    """The engine's keys, rebuilt: reset keys ``[N]``, the actor's key, environment keys ``[T, N]``."""
    key, reset_key = jax.random.split(key)
    action_key, env_key = jax.random.split(key)
    return (
        jax.random.split(reset_key, NUM_TASKS),
        action_key,
        jax.random.split(env_key, (NUM_STEPS, NUM_TASKS)),
    )


@functools.cache
def _environment(family):
    """The family alone, stepped along given actions: one jitted scan of its vmapped ``step``."""

    def run(reset_keys, env_keys, tasks, actions):
        states, first = jax.vmap(family.reset)(reset_keys, tasks)

        def step(states, inputs):
            keys, action = inputs
            truth = jax.vmap(family.true_features)(tasks, states)
            states, obs, reward, done = jax.vmap(family.step)(keys, tasks, states, action)
            return states, (obs, reward, done, truth)

        _, (obs, rewards, dones, truth) = jax.lax.scan(step, states, (env_keys, actions))
        return jnp.concatenate([first[None], obs]), rewards, dones, truth

    return jax.jit(run)


def environment_along(family, tasks, key, actions):
    """The family stepped along ``actions`` ``[T, N]`` with the engine's keys rebuilt by hand:
    ``(obs [T + 1, N, O], rewards, dones, truth of the state acted on [T, N, D])``."""
    reset_keys, _, env_keys = schedule(key)
    return _np(_environment(family)(reset_keys, env_keys, tasks, jnp.asarray(actions)))


@functools.cache
def _belief_fns(family):
    return jax.jit(jax.vmap(family.belief_update)), jax.jit(jax.vmap(family.belief_features))


def beliefs_by_loop(family, history):
    """The family's ``belief_init``/``belief_update`` run over the recorded transitions in a Python
    loop: the list of T + 1 belief pytrees (entry t before the t-th decision) and their features."""
    update, features = _belief_fns(family)
    beliefs = [jax.vmap(family.belief_init)(history.obs[0])]
    for t in range(NUM_STEPS):
        beliefs.append(
            update(beliefs[-1], history.obs[t], history.actions[t], history.rewards[t], history.obs[t + 1])
        )
    return beliefs, np.stack([np.asarray(features(belief)) for belief in beliefs])


def two_step_filter(obs, rewards):
    """float64 ``[T + 1, N]``: P(A rich on the next trial | history), the two-state HMM written out."""
    p_rich, p_switch = TWO_STEP.p_rich, TWO_STEP.p_switch
    p = np.full(obs.shape[1], 0.5)
    out = [p]
    for t in range(rewards.shape[0]):
        reached_a, paid = obs[t + 1, :, 0] > 0.5, rewards[t] > 0.5
        like_a = np.where(reached_a == paid, p_rich, 1.0 - p_rich)  # P(outcome | A rich)
        posterior = p * like_a / (p * like_a + (1.0 - p) * (1.0 - like_a))
        p = posterior * (1.0 - p_switch) + (1.0 - posterior) * p_switch
        out.append(p)
    return np.stack(out)


def tabular_filter(tasks, obs, actions, rewards):
    """float64 ``[T + 1, N, M]``: P(task | history) by Bayes' rule over the tabular task set."""
    del tasks
    states = obs.argmax(axis=-1)  # [T + 1, N]
    with np.errstate(divide="ignore"):
        log_post = np.log(TABULAR.prior)[None] + np.log(TABULAR.init_probs[:, states[0]]).T  # [N, M]
        log_move = np.log(TABULAR.transitions)
        log_pay, log_miss = np.log(TABULAR.reward_probs), np.log1p(-TABULAR.reward_probs)
    out = []
    for t in range(actions.shape[0] + 1):
        posterior = np.exp(log_post - log_post.max(axis=-1, keepdims=True))
        out.append(posterior / posterior.sum(axis=-1, keepdims=True))
        if t == actions.shape[0]:
            break
        s, a, s_next = states[t], actions[t], states[t + 1]
        reward = np.where(rewards[t][:, None] > 0.5, log_pay[:, s, a].T, log_miss[:, s, a].T)
        log_post = log_post + log_move[:, s, a, s_next].T + reward
    return np.stack(out)


# --- The network: rollout and replay --------------------------------------------------------------

AGENTS = {name: agent_for(family, hidden_size=HIDDEN) for name, family in FAMILIES.items()}
PARAMS = {name: agent.init(jax.random.key(1)) for name, agent in AGENTS.items()}


@functools.cache
def network_run(name):
    """``engine.lockstep`` of the network on ``name``'s tasks (jitted; cached per family)."""
    family, agent = FAMILIES[name], AGENTS[name]

    @jax.jit
    def run(params, key, tasks):
        return engine.lockstep(family, engine.NetworkActor(agent=agent, params=params), key=key, tasks=tasks)

    return run(PARAMS[name], KEY, TASKS[name])


@pytest.mark.parametrize("name", FAMILIES)
def test_the_network_rollout_is_the_environment_stepped_with_one_key_per_lane_and_step(name):
    """Observations, rewards, dones and the truth of the state acted on, against the family stepped
    by hand along the recorded actions with the engine's keys; and ``rollout`` is this lockstep."""
    family, tasks = FAMILIES[name], TASKS[name]
    out = _np(network_run(name).trajectory)
    obs, rewards, dones, truth = environment_along(family, tasks, KEY, out.actions)
    np.testing.assert_array_equal(out.obs, obs)
    np.testing.assert_array_equal(out.rewards, rewards)
    np.testing.assert_array_equal(out.dones, dones)
    np.testing.assert_array_equal(out.truth, truth)
    # Not a constant history: several actions, and lanes with the same task that part ways.
    assert len(np.unique(out.actions)) == family.num_actions
    same_task = np.asarray(jax.tree.leaves(tasks)[0]) == np.asarray(jax.tree.leaves(tasks)[0])[0]
    histories = np.concatenate([out.actions, out.obs[1:].argmax(-1), out.rewards], axis=0)[:, same_task]
    assert len({column.tobytes() for column in histories.T}) == same_task.sum()


def test_two_step_truth_changes_within_the_episode_and_is_read_before_the_step():
    out = _np(network_run("two_step").trajectory)
    truth = out.truth[..., 0]
    np.testing.assert_array_equal(truth[0], np.asarray(TASKS["two_step"].a_rich_at_start, np.float32))
    switched = (truth[1:] != truth[:-1]).any(axis=0)
    assert switched.sum() >= 4  # p_switch = 0.3 over 9 trials: most lanes switch at least once


def test_two_step_beliefs_are_the_float64_filter_and_the_family_update_looped():
    run = network_run("two_step")
    out = _np(run.trajectory)
    expected = two_step_filter(out.obs.astype(np.float64), out.rewards.astype(np.float64))  # [T + 1, N]
    np.testing.assert_allclose(out.features[..., 0], expected[:-1], rtol=0.0, atol=1e-5)
    _, looped = beliefs_by_loop(TWO_STEP, run.trajectory)
    np.testing.assert_allclose(out.features, looped[:-1], rtol=0.0, atol=1e-6)
    # The belief carried out of the scan is the one after the last transition.
    last = np.asarray(_belief_fns(TWO_STEP)[1](run.last.belief))[:, 0]
    np.testing.assert_allclose(last, expected[-1], rtol=0.0, atol=1e-5)
    # The belief moves: far from the prior in many steps.
    assert (np.abs(expected - 0.5) > 0.1).mean() > 0.3  # P(A rich) stays within 0.5 +- 0.2 at p_switch 0.3


def test_tabular_beliefs_start_from_the_observed_state_and_follow_bayes_rule():
    run = network_run("tabular")
    out = _np(run.trajectory)
    expected = tabular_filter(
        TASKS["tabular"], out.obs, out.actions, out.rewards.astype(np.float64)
    )  # [T + 1, N, M]
    np.testing.assert_allclose(out.features, expected[:-1], rtol=0.0, atol=1e-5)
    last = np.asarray(_belief_fns(TABULAR)[1](run.last.belief))
    np.testing.assert_allclose(last, expected[-1], rtol=0.0, atol=1e-5)
    assert (expected.max(axis=-1) > 0.9).any()  # some histories nearly identify the task


def test_each_lane_resets_with_its_own_key():
    """Lanes of the same task start in different states, each the reset of its own key."""
    out = _np(network_run("tabular").trajectory)
    first, *_ = environment_along(TABULAR, TASKS["tabular"], KEY, out.actions)
    np.testing.assert_array_equal(out.obs[0], first[0])
    same_task = np.asarray(TASKS["tabular"].index) == 0
    assert len(np.unique(out.obs[0, same_task].argmax(-1))) >= 2


@pytest.mark.parametrize("name", FAMILIES)
def test_replay_reproduces_the_network_outputs_and_the_beliefs(name):
    family, agent = FAMILIES[name], AGENTS[name]
    original = _np(network_run(name).trajectory)
    replayed = _np(engine.replay_jit(family, agent, PARAMS[name], network_run(name).trajectory))
    for field in ("obs", "actions", "rewards", "dones", "truth", "features"):
        np.testing.assert_array_equal(replayed[field], original[field], err_msg=field)
    for field in ("hidden", "memory", "logits", "values"):
        np.testing.assert_allclose(replayed[field], original[field], rtol=0.0, atol=1e-6, err_msg=field)


def test_replay_beliefs_are_the_beliefs_before_each_decision():
    history = network_run("two_step").trajectory
    beliefs = engine.replay_beliefs(TWO_STEP, history)
    features = jax.vmap(jax.vmap(TWO_STEP.belief_features))(beliefs)
    np.testing.assert_allclose(np.asarray(features), np.asarray(history.features), rtol=0.0, atol=1e-6)


def test_history_inputs_are_the_observation_previous_action_and_reward_the_network_read():
    history = _np(network_run("two_step").trajectory)
    agent = AGENTS["two_step"]
    inputs = engine.history_inputs(agent, network_run("two_step").trajectory)
    prev_actions = np.concatenate([np.zeros((1, NUM_TASKS, 2)), np.eye(2)[history.actions[:-1]]])
    prev_rewards = np.concatenate([np.zeros((1, NUM_TASKS)), history.rewards[:-1]])[..., None]
    expected = np.concatenate([history.obs[:-1], prev_actions, prev_rewards], axis=-1)
    np.testing.assert_array_equal(np.asarray(inputs), expected)
    # The network fed these inputs step by step gives the rollout's outputs.
    unroll = jax.jit(
        lambda params, inputs: unroll_agent(agent, params, agent.initial_carry(NUM_TASKS), inputs)
    )
    _, logits, values, memory = _np(unroll(PARAMS["two_step"], inputs))
    np.testing.assert_allclose(memory, history.memory, rtol=0.0, atol=1e-6)
    np.testing.assert_allclose(logits, history.logits, rtol=0.0, atol=1e-6)
    np.testing.assert_allclose(values, history.values, rtol=0.0, atol=1e-6)


def test_lane_blocks_and_their_moments_are_numpy_slices_of_lanes():
    sizes = (8, 3, 5)
    history = network_run("two_step").trajectory
    hidden, features = np.asarray(history.hidden, np.float64), np.asarray(history.features, np.float64)
    bounds = np.cumsum([0, *sizes])
    blocks, moments = jax.jit(
        lambda hidden, features: (
            engine.split_lanes(hidden, sizes),
            engine.lane_moments(hidden, features, sizes),
        )
    )(history.hidden, history.features)
    for index, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        np.testing.assert_array_equal(np.asarray(blocks[index]), np.asarray(history.hidden)[:, start:stop])
        rows = np.concatenate([hidden, features], axis=-1)[:, start:stop].reshape(-1, HIDDEN + 1)
        centred = rows - rows.mean(axis=0)
        assert float(moments.count[index]) == rows.shape[0]
        np.testing.assert_allclose(np.asarray(moments.mean[index]), rows.mean(axis=0), rtol=0.0, atol=1e-5)
        np.testing.assert_allclose(
            np.asarray(moments.scatter[index]), centred.T @ centred, rtol=1e-4, atol=1e-4
        )


# --- A belief policy and a learner ----------------------------------------------------------------


def rich_guess(key, belief, obs):
    """Action 0 (toward A) with a probability that rises with P(A rich) and with having just seen A."""
    return (jax.random.uniform(key) < 0.1 + 0.6 * belief.p_a_rich + 0.2 * obs[0]).astype(jnp.int32)


def test_a_belief_policy_acts_on_its_own_key_belief_and_observation_in_every_lane_and_step():
    tasks = TwoStepTask(a_rich_at_start=jnp.ones((NUM_TASKS,), bool))  # every lane the same task
    key = jax.random.key(11)
    run = jax.jit(
        lambda key: engine.lockstep(TWO_STEP, engine.BeliefActor(rich_guess), key=key, tasks=tasks)
    )(key)
    out = _np(run.trajectory)
    _, action_key, _ = schedule(key)
    keys = jax.random.split(action_key, (NUM_STEPS, NUM_TASKS))
    beliefs, looped = beliefs_by_loop(TWO_STEP, run.trajectory)
    policy = jax.jit(jax.vmap(rich_guess))
    for t in range(NUM_STEPS):
        np.testing.assert_array_equal(out.actions[t], np.asarray(policy(keys[t], beliefs[t], out.obs[t])))
    # The environment and the beliefs as under any other actor.
    obs, rewards, _, truth = environment_along(TWO_STEP, tasks, key, out.actions)
    np.testing.assert_array_equal(out.obs, obs)
    np.testing.assert_array_equal(out.rewards, rewards)
    np.testing.assert_array_equal(out.truth, truth)
    expected = two_step_filter(out.obs.astype(np.float64), out.rewards.astype(np.float64))
    np.testing.assert_allclose(out.features[..., 0], expected[:-1], rtol=0.0, atol=1e-5)
    np.testing.assert_allclose(out.features, looped[:-1], rtol=0.0, atol=1e-6)
    # One task, N lanes: no two lanes share their randomness, so no two histories are the same.
    histories = np.concatenate([out.actions, out.obs[1:, :, 0], out.rewards], axis=0)
    assert len({column.tobytes() for column in histories.T}) == NUM_TASKS


@dataclasses.dataclass(frozen=True)
class VisitCounter:
    """A learner whose memory counts the states it has entered (read from ``next_obs``), and which
    leans toward action 0 in a state the more often it has entered it."""

    def init(self, obs):
        return jnp.zeros_like(obs)

    def update(self, memory, obs, action, reward, next_obs):
        return memory + next_obs

    def __call__(self, key, memory, obs):
        visits = memory @ obs
        return jax.random.categorical(key, jnp.stack([0.5 * visits, -0.5 * visits])).astype(jnp.int32)


def test_a_learner_updates_on_the_next_observation_and_acts_on_its_own_keys():
    key = jax.random.key(12)
    learner = VisitCounter()
    run = jax.jit(
        lambda key: engine.lockstep(TABULAR, engine.LearnerActor(learner), key=key, tasks=TASKS["tabular"])
    )(key)
    out = _np(run.trajectory)
    visits = np.cumsum(np.concatenate([np.zeros((1, NUM_TASKS, 4)), out.obs[1:]]), axis=0)  # [T + 1, N, S]
    np.testing.assert_array_equal(np.asarray(run.last.memory), visits[-1])
    _, action_key, _ = schedule(key)
    keys = jax.random.split(action_key, (NUM_STEPS, NUM_TASKS))
    choose = jax.jit(jax.vmap(learner))
    for t in range(NUM_STEPS):
        chosen = choose(keys[t], jnp.asarray(visits[t], jnp.float32), out.obs[t])
        np.testing.assert_array_equal(out.actions[t], np.asarray(chosen))
    obs, rewards, _, _ = environment_along(TABULAR, TASKS["tabular"], key, out.actions)
    np.testing.assert_array_equal(out.obs, obs)
    np.testing.assert_array_equal(out.rewards, rewards)
    assert not np.array_equal(visits[-1], np.cumsum(out.obs[:-1], axis=0)[-1])  # next_obs, not obs, counts
