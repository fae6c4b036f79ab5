"""The built-in memory models behind the agent protocol (``metabelief.agents``).

For every cell: the protocol's members, the memory vector's round trip back into a carry and the
heads on its readout. Against float64 NumPy: one GRU, Elman and LRU step written from the cells'
equations. The LRU's parallel ``associative_scan`` against stepping it. The belief oracle's carried
belief against the engine's exact one (and, for the bandit, against counts taken in NumPy).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief.agents import CELLS, REQUIRED_MEMBERS, Agent, agent_for, check_agent, unroll
from metabelief.agents.base import scan_steps
from metabelief.agents.lru import LRUCell, parallel_states
from metabelief.rollout import rollout, sample_tasks
from tests.test_agents import init, step

HIDDEN = 6
NUM_TASKS = 5

# Shared family instances: every distinct (agent, family) pair costs a compile of each jitted function.
FAMILIES = {
    "bandit": metabelief.make("bernoulli_bandit", horizon=6),  # no observation, 2 arms
    "two_step": metabelief.make("two_step", num_trials=6),  # a 2-wide observation
}


@functools.partial(jax.jit, static_argnums=0)
def heads(agent, params, readout):
    return agent.heads(params, readout)


@functools.partial(jax.jit, static_argnums=0)
def parallel_unroll(agent, params, carry, inputs):
    return unroll(agent, params, carry, inputs)


@functools.partial(jax.jit, static_argnums=0)
def stepped_unroll(agent, params, carry, inputs):
    return scan_steps(agent, params, carry, inputs)


rollout_jit = jax.jit(rollout, static_argnums=(0, 1))


def normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def perturbed(params, seed, keep=()):
    """Every leaf (but those named in ``keep``) shifted by noise, so zero biases and the heads'
    small initial weights matter too."""
    rng = np.random.default_rng(seed)

    def shift(path, leaf):
        if any(getattr(entry, "key", None) in keep for entry in path):
            return leaf
        return leaf + jnp.asarray(0.5 * rng.standard_normal(leaf.shape), jnp.float32)

    return jax.tree_util.tree_map_with_path(shift, params)


def random_inputs(agent, seed, num_steps, num_tasks=NUM_TASKS):
    """``float32[T, N, I]`` built with ``agent.inputs``: binary observations, no previous action or
    reward at t = 0, then random actions and 0/1 rewards."""
    rng = np.random.default_rng(seed)
    steps = []
    for t in range(num_steps):
        obs = rng.integers(0, 2, (num_tasks, agent.obs_size)).astype(np.float32)
        actions = rng.integers(0, agent.num_actions, num_tasks) if t else np.full(num_tasks, -1)
        rewards = rng.integers(0, 2, num_tasks) if t else np.zeros(num_tasks)
        steps.append(
            agent.inputs(
                jnp.asarray(obs),
                jnp.asarray(actions, jnp.int32),
                jnp.asarray(rewards, jnp.float32),
                jnp.asarray(t, jnp.int32),
            )
        )
    return jnp.stack(steps)


def as64(tree):
    return jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), tree)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def linear_heads(p, hidden):
    """The policy and value layers in float64 NumPy."""
    logits = hidden @ p["policy"]["kernel"] + p["policy"]["bias"]
    value = hidden @ p["value"]["kernel"][:, 0] + p["value"]["bias"][0]
    return logits, value


def assert_close(actual, expected, atol=1e-5):
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected), rtol=0.0, atol=atol)


# ---------------------------------------------------------------------------------------------
# Every cell: the protocol, the memory round trip and the heads on the readout

CASES = [(cell, family) for cell in CELLS for family in FAMILIES]


def expected_memory_size(cell, family):
    """The documented layout of each memory model, counted by hand."""
    belief = {"bandit": 2 + 2, "two_step": 1}[family]  # Beta counts (alpha, beta) per arm; the log-odds
    return {
        "lstm": 2 * HIDDEN,
        "gru": HIDDEN,
        "rnn": HIDDEN,
        "lru": 3 * HIDDEN,
        "oracle": HIDDEN + belief + FAMILIES[family].obs_size,
    }[cell]


def test_every_cell_is_tested():
    assert set(CELLS) == {"lstm", "gru", "rnn", "lru", "oracle"}


@pytest.mark.parametrize("cell, family", CASES)
def test_memory_round_trips_and_heads_read_the_readout(cell, family):
    agent = agent_for(FAMILIES[family], HIDDEN, time_input=True, cell=cell)
    assert check_agent(agent) is agent and isinstance(agent, Agent)
    assert agent.memory_size == expected_memory_size(cell, family)
    params = perturbed(init(agent, jax.random.key(0)), seed=1)
    inputs = random_inputs(agent, seed=2, num_steps=4)
    carry = agent.initial_carry(NUM_TASKS)
    for t in range(inputs.shape[0] + 1):
        memory = agent.memory(carry)
        assert memory.shape == (NUM_TASKS, agent.memory_size) and memory.dtype == jnp.float32
        back = agent.carry_from_memory(memory)
        assert jax.tree.structure(back) == jax.tree.structure(carry)
        for leaf, leaf_back in zip(jax.tree.leaves(carry), jax.tree.leaves(back), strict=True):
            assert leaf_back.shape == leaf.shape and leaf_back.dtype == leaf.dtype
            np.testing.assert_array_equal(np.asarray(leaf_back), np.asarray(leaf))
        np.testing.assert_array_equal(np.asarray(agent.readout(carry)), np.asarray(memory[:, :HIDDEN]))
        if t == inputs.shape[0]:
            break
        new_carry, logits, value = step(agent, params, carry, inputs[t])
        assert logits.shape == (NUM_TASKS, agent.num_actions) and value.shape == (NUM_TASKS,)
        readout = agent.memory(new_carry)[:, :HIDDEN]
        head_logits, head_value = heads(agent, params, readout)
        assert_close(logits, head_logits, atol=1e-6)
        assert_close(value, head_value, atol=1e-6)
        # A carry rebuilt from its memory steps exactly like the carry itself.
        rebuilt = agent.carry_from_memory(agent.memory(carry))
        _, logits_back, value_back = step(agent, params, rebuilt, inputs[t])
        np.testing.assert_array_equal(np.asarray(logits_back), np.asarray(logits))
        np.testing.assert_array_equal(np.asarray(value_back), np.asarray(value))
        carry = new_carry
    # The memory moved: the steps above did not compare zeros with zeros.
    assert np.abs(np.asarray(agent.memory(carry)[:, :HIDDEN])).max() > 1e-3


def test_lstm_readout_is_the_hidden_output_not_the_cell():
    agent = agent_for(FAMILIES["bandit"], HIDDEN, cell="lstm")
    params = perturbed(init(agent, jax.random.key(0)), seed=1)
    (cell, hidden), _, _ = step(agent, params, agent.initial_carry(NUM_TASKS), random_inputs(agent, 3, 1)[0])
    memory = agent.memory((cell, hidden))
    np.testing.assert_array_equal(np.asarray(memory), np.concatenate([hidden, cell], -1))


# ---------------------------------------------------------------------------------------------
# GRU, Elman and LRU steps against float64 NumPy


def gru_reference(params, hidden, x):
    """flax's ``GRUCell``: input kernels ``i*`` with biases, hidden kernels ``h*`` without, but for
    ``hn``, whose bias sits inside the reset gate's product."""
    p = as64(params["params"])
    gru = p["gru"]
    assert set(p) == {"gru", "policy", "value"}
    assert {name: set(gru[name]) for name in gru} == {
        "ir": {"kernel", "bias"},
        "iz": {"kernel", "bias"},
        "in": {"kernel", "bias"},
        "hr": {"kernel"},
        "hz": {"kernel"},
        "hn": {"kernel", "bias"},
    }
    h, x = np.asarray(hidden, np.float64), np.asarray(x, np.float64)

    def dense(name, v):
        return v @ gru[name]["kernel"] + gru[name].get("bias", 0.0)

    r = sigmoid(dense("ir", x) + dense("hr", h))
    z = sigmoid(dense("iz", x) + dense("hz", h))
    n = np.tanh(dense("in", x) + r * dense("hn", h))
    new_h = (1.0 - z) * n + z * h
    return new_h, *linear_heads(p, new_h)


def elman_reference(params, hidden, x):
    """flax's ``SimpleCell``: ``tanh(x W_i + b + h W_h)``, the bias on the input kernel ``i``."""
    p = as64(params["params"])
    rnn = p["rnn"]
    assert set(p) == {"rnn", "policy", "value"}
    assert {name: set(rnn[name]) for name in rnn} == {"i": {"kernel", "bias"}, "h": {"kernel"}}
    h, x = np.asarray(hidden, np.float64), np.asarray(x, np.float64)
    new_h = np.tanh(x @ rnn["i"]["kernel"] + rnn["i"]["bias"] + h @ rnn["h"]["kernel"])
    return new_h, *linear_heads(p, new_h)


def lru_reference(params, carry, u):
    """``lru.py``'s equations in complex128: ``x' = lambda x + gamma (u B)``, ``lambda =
    exp(-exp(nu_log) + i exp(theta_log))``, ``gamma = exp(gamma_log)``, ``h = tanh([Re x', Im x',
    u] W + b)``; the carry ``(Re x', Im x', h)``."""
    p = as64(params["params"])
    lru = p["lru"]
    assert set(p) == {"lru", "policy", "value"}
    assert set(lru) == {"nu_log", "theta_log", "gamma_log", "B_re", "B_im", "W", "b"}
    x_re, x_im, _ = (np.asarray(part, np.float64) for part in carry)
    u = np.asarray(u, np.float64)
    lam = np.exp(-np.exp(lru["nu_log"]) + 1j * np.exp(lru["theta_log"]))
    b_matrix = lru["B_re"] + 1j * lru["B_im"]
    x = lam * (x_re + 1j * x_im) + np.exp(lru["gamma_log"]) * (u @ b_matrix)
    new_h = np.tanh(np.concatenate([x.real, x.imag, u], -1) @ lru["W"] + lru["b"])
    return (x.real, x.imag, new_h), *linear_heads(p, new_h)


STEP_FAMILY = FAMILIES["two_step"]  # input: 2 obs + 2 one-hot + reward + time = 6


@pytest.mark.parametrize("cell, reference", [("gru", gru_reference), ("rnn", elman_reference)])
def test_single_state_step_matches_float64_numpy(cell, reference):
    agent = agent_for(STEP_FAMILY, HIDDEN, time_input=True, cell=cell)
    params = perturbed(init(agent, jax.random.key(4)), seed=5)
    carry, ref_carry = normal(6, (NUM_TASKS, HIDDEN)), np.asarray(normal(6, (NUM_TASKS, HIDDEN)), np.float64)
    inputs = normal(7, (3, NUM_TASKS, agent.input_size))
    for t in range(3):  # fed back through the carry
        carry, logits, value = step(agent, params, carry, inputs[t])
        ref_carry, ref_logits, ref_value = reference(params, ref_carry, inputs[t])
        assert_close(carry, ref_carry)
        assert_close(logits, ref_logits)
        assert_close(value, ref_value)


def test_lru_step_matches_float64_numpy():
    agent = agent_for(STEP_FAMILY, HIDDEN, time_input=True, cell="lru")
    params = perturbed(init(agent, jax.random.key(8)), seed=9)
    carry = tuple(normal(10 + i, (NUM_TASKS, HIDDEN)) for i in range(3))
    ref_carry = as64(carry)
    inputs = normal(13, (3, NUM_TASKS, agent.input_size))
    for t in range(3):  # fed back through the carry: its (Re x, Im x, h) order matters
        carry, logits, value = step(agent, params, carry, inputs[t])
        ref_carry, ref_logits, ref_value = lru_reference(params, ref_carry, inputs[t])
        for part, ref_part in zip(carry, ref_carry, strict=True):
            assert_close(part, ref_part)
        assert_close(logits, ref_logits)
        assert_close(value, ref_value)


# ---------------------------------------------------------------------------------------------
# The LRU's parallel scan against stepping


@pytest.mark.parametrize("start", ["zero", "random"])
def test_lru_parallel_unroll_equals_stepping(start):
    agent = dataclasses.replace(agent_for(STEP_FAMILY, HIDDEN, time_input=True, cell="lru"), parallel=True)
    assert agent.parallel_unroll
    # The eigenvalues and their input scale stay as initialised (|lambda| near 1: long memory).
    params = perturbed(init(agent, jax.random.key(14)), seed=15, keep=("nu_log", "gamma_log"))
    num_steps, num_tasks = 50, 7
    inputs = normal(16, (num_steps, num_tasks, agent.input_size))
    carry = agent.initial_carry(num_tasks)
    if start == "random":
        carry = tuple(normal(17 + i, (num_tasks, HIDDEN)) for i in range(3))
    last, logits, values, memory = parallel_unroll(agent, params, carry, inputs)
    ref_last, ref_logits, ref_values, ref_memory = stepped_unroll(agent, params, carry, inputs)
    assert memory.shape == (num_steps, num_tasks, agent.memory_size)
    assert logits.shape == (num_steps, num_tasks, agent.num_actions)
    assert values.shape == (num_steps, num_tasks)
    assert_close(logits, ref_logits)
    assert_close(values, ref_values)
    assert_close(memory, ref_memory)
    for part, ref_part in zip(last, ref_last, strict=True):
        assert_close(part, ref_part)
    # ``parallel_states`` itself: the complex states are the memory's [Re x, Im x] columns.
    states, hidden = parallel_states(params["params"]["lru"], carry, inputs)
    assert_close(jnp.real(states), ref_memory[..., HIDDEN : 2 * HIDDEN])
    assert_close(jnp.imag(states), ref_memory[..., 2 * HIDDEN :])
    assert_close(hidden, ref_memory[..., :HIDDEN])
    # The start matters (a parallel scan that ignored it would fail the "random" case above).
    if start == "random":
        zero_logits = parallel_unroll(agent, params, agent.initial_carry(num_tasks), inputs)[1]
        assert np.abs(np.asarray(zero_logits - logits)[0]).max() > 1e-3


def test_lru_eigenvalues_start_on_the_ring():
    """|lambda| in [r_min, r_max] = [0.9, 0.999] and spread over it, phases in (0, pi / 10],
    gamma = sqrt(1 - |lambda|^2) (the paper's initialisation)."""
    state_size = 256
    cell = LRUCell(hidden_size=3, state_size=state_size)
    carry = tuple(jnp.zeros((1, size), jnp.float32) for size in (state_size, state_size, 3))
    p = as64(cell.init(jax.random.key(18), carry, jnp.zeros((1, 4), jnp.float32))["params"])
    modulus = np.exp(-np.exp(p["nu_log"]))
    assert cell.r_min == 0.9 and cell.r_max == 0.999
    assert modulus.min() >= 0.9 - 1e-6 and modulus.max() <= 0.999 + 1e-6
    assert modulus.min() < 0.92 and modulus.max() > 0.99
    phase = np.exp(p["theta_log"])
    assert phase.min() > 0.0 and phase.max() <= math.pi / 10 + 1e-6
    np.testing.assert_allclose(np.exp(p["gamma_log"]), np.sqrt(1.0 - modulus**2), rtol=1e-4)
    # The agent's own cell is initialised the same way.
    agent = agent_for(STEP_FAMILY, HIDDEN, cell="lru")
    nu_log = np.asarray(init(agent, jax.random.key(19))["params"]["lru"]["nu_log"], np.float64)
    agent_modulus = np.exp(-np.exp(nu_log))
    assert agent_modulus.min() >= 0.9 - 1e-6 and agent_modulus.max() <= 0.999 + 1e-6


# ---------------------------------------------------------------------------------------------
# The belief oracle carries the engine's exact belief


@pytest.mark.parametrize("family_name", list(FAMILIES))
def test_oracle_carries_the_exact_belief_of_the_engine(family_name):
    family = FAMILIES[family_name]
    agent = agent_for(family, HIDDEN, cell="oracle")
    params = init(agent, jax.random.key(20))
    num_tasks = 32
    tasks = sample_tasks(family, jax.random.key(21), num_tasks)
    trajectory = rollout_jit(family, agent, params, jax.random.key(22), tasks)
    belief, prev_obs, hidden = agent.carry_from_memory(trajectory.memory)  # leaves [T, N, ...]
    features = jax.vmap(jax.vmap(family.belief_features))(belief)
    assert features.shape == trajectory.features.shape
    assert_close(features, trajectory.features)
    # The beliefs moved over the episode: not a prior compared with a prior.
    assert np.abs(np.asarray(trajectory.features[-1] - trajectory.features[0])).max() > 0.05
    np.testing.assert_array_equal(np.asarray(prev_obs), np.asarray(trajectory.obs[:-1]))
    np.testing.assert_array_equal(np.asarray(hidden), np.asarray(trajectory.hidden))
    if family_name == "bandit":
        # Beta(1, 1) plus the successes and failures of each arm before step t, counted in NumPy.
        actions, rewards = np.asarray(trajectory.actions), np.asarray(trajectory.rewards, np.float64)
        pulled = np.eye(family.num_arms)[actions]  # [T, N, K]
        successes = np.cumsum(pulled * rewards[..., None], axis=0) - pulled * rewards[..., None]
        failures = np.cumsum(pulled * (1 - rewards[..., None]), axis=0) - pulled * (1 - rewards[..., None])
        np.testing.assert_array_equal(np.asarray(belief.alpha), 1.0 + successes)
        np.testing.assert_array_equal(np.asarray(belief.beta), 1.0 + failures)


# ---------------------------------------------------------------------------------------------
# Bad agents


def test_agent_for_rejects_an_unknown_cell():
    with pytest.raises(ValueError, match="cell") as error:
        agent_for(FAMILIES["bandit"], HIDDEN, cell="transformer")
    assert "transformer" in str(error.value)


class _Partial:
    """An object with every protocol member but ``missing``."""

    def __init__(self, missing):
        for member in REQUIRED_MEMBERS:
            if member != missing:
                setattr(self, member, None)


@pytest.mark.parametrize("missing", REQUIRED_MEMBERS)
def test_check_agent_names_the_missing_member(missing):
    with pytest.raises(ValueError, match=repr(missing)):
        check_agent(_Partial(missing))


def test_check_agent_refuses_an_unhashable_agent():
    agent = _Partial(missing=None)
    agent.__class__ = type("Unhashable", (_Partial,), {"__hash__": None})
    with pytest.raises(ValueError, match="hashable"):
        check_agent(agent)
    assert check_agent(_Partial(missing=None)) is not None


def test_lru_trains_alike_by_the_parallel_scan_and_by_stepping():
    """The A2C and PPO gradients of an LRU recomputed by the parallel scan equal those of the
    stepped path (backpropagation through the rollout for A2C, a stepped unroll for PPO)."""
    from metabelief import train  # noqa: PLC0415
    from metabelief.train import episodes, ppo  # noqa: PLC0415

    family = metabelief.make("bernoulli_bandit", horizon=12)
    params = init(agent_for(family, 8, cell="lru"), jax.random.key(21))
    grads = {}
    for parallel in (True, False):
        agent = dataclasses.replace(agent_for(family, 8, cell="lru"), parallel=parallel)
        config = train.TrainConfig(
            family=family, agent=agent, num_tasks=16, algorithm="ppo", ppo_minibatches=2
        )
        a2c = jax.grad(lambda p, c=config: train.a2c_loss(p, c, jax.random.key(22))[0])(params)
        episode = episodes.play(config, params, jax.random.key(23))
        old, targets = jnp.full_like(episode.rewards, -0.5), jnp.zeros_like(episode.rewards)

        def loss(p, config=config, episode=episode, old=old, targets=targets):
            return ppo.ppo_loss(p, config, episode, old, episode.rewards, targets)[0]

        grads[parallel] = (a2c, jax.grad(loss)(params))
    for parallel_grad, stepped_grad in zip(*(jax.tree.leaves(grads[p]) for p in (True, False)), strict=True):
        np.testing.assert_allclose(parallel_grad, stepped_grad, rtol=1e-3, atol=1e-5)
