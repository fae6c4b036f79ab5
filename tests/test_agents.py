"""LSTMAgent: the input vector layout and one LSTM step against a float64 NumPy LSTM."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief.agents import LSTMAgent, agent_for

HIDDEN = 8


@functools.partial(jax.jit, static_argnums=0)
def init(agent, key):
    return agent.init(key)


@functools.partial(jax.jit, static_argnums=0)
def step(agent, params, carry, inputs):
    return agent.step(params, carry, inputs)


# One agent for the step tests: every distinct agent costs a compile of ``init``.
AGENT = agent_for(metabelief.make("bernoulli_bandit", num_arms=3, horizon=20), HIDDEN, time_input=True)


@pytest.fixture(scope="module")
def params():
    """Initial parameters with every leaf shifted by noise, so zero-initialised biases matter too."""
    rng = np.random.default_rng(0)
    return jax.tree.map(
        lambda leaf: leaf + jnp.asarray(0.5 * rng.standard_normal(leaf.shape), jnp.float32),
        init(AGENT, jax.random.key(0)),
    )


def normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_step(params, carry, inputs):
    """One ``OptimizedLSTMCell`` step and the linear heads in float64 NumPy.

    Gates i, f, g, o: input kernel ``i*`` (no bias) plus hidden kernel and bias ``h*``;
    c' = f c + i g and h' = o tanh(c').
    """
    p = jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), params["params"])
    cell, hidden = (np.asarray(part, np.float64) for part in carry)
    x = np.asarray(inputs, np.float64)
    lstm = p["lstm"]
    # Nothing the reference would ignore: input kernels without bias, hidden kernels with one.
    assert set(p) == {"lstm", "policy", "value"}
    assert {name: set(lstm[name]) for name in lstm} == {
        **{f"i{gate}": {"kernel"} for gate in "ifgo"},
        **{f"h{gate}": {"kernel", "bias"} for gate in "ifgo"},
    }

    def pre(gate):
        return x @ lstm[f"i{gate}"]["kernel"] + hidden @ lstm[f"h{gate}"]["kernel"] + lstm[f"h{gate}"]["bias"]

    i, f, g, o = sigmoid(pre("i")), sigmoid(pre("f")), np.tanh(pre("g")), sigmoid(pre("o"))
    new_cell = f * cell + i * g
    new_hidden = o * np.tanh(new_cell)
    logits = new_hidden @ p["policy"]["kernel"] + p["policy"]["bias"]
    value = new_hidden @ p["value"]["kernel"][:, 0] + p["value"]["bias"][0]
    return (new_cell, new_hidden), logits, value


def bernoulli(num_arms=3, horizon=20):
    return metabelief.make("bernoulli_bandit", num_arms=num_arms, horizon=horizon)


# ---------------------------------------------------------------------------------------------
# Sizes and inputs


def test_agent_for_takes_sizes_from_the_family():
    agent = agent_for(bernoulli(num_arms=3, horizon=20), hidden_size=HIDDEN, time_input=True)
    assert (agent.num_actions, agent.obs_size, agent.horizon, agent.hidden_size) == (3, 0, 20, HIDDEN)
    assert agent.input_size == 0 + 3 + 1 + 1
    assert agent_for(bernoulli(num_arms=3), hidden_size=HIDDEN).input_size == 4


def test_inputs_are_obs_one_hot_previous_action_previous_reward_and_normalised_time():
    agent = LSTMAgent(num_actions=3, obs_size=2, horizon=10, hidden_size=HIDDEN, time_input=True)
    obs = np.array([[0.5, -1.0], [2.0, 3.0], [0.0, 0.25], [-4.0, 1.5]], np.float32)
    prev_action = np.array([-1, 0, 2, 1], np.int32)
    prev_reward = np.array([0.0, 1.0, 0.0, 1.0], np.float32)
    time = np.array([0, 3, 7, 10], np.int32)
    expected = np.array(
        [
            [0.5, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [2.0, 3.0, 1.0, 0.0, 0.0, 1.0, 0.3],
            [0.0, 0.25, 0.0, 0.0, 1.0, 0.0, 0.7],
            [-4.0, 1.5, 0.0, 1.0, 0.0, 1.0, 1.0],
        ]
    )
    inputs = agent.inputs(jnp.asarray(obs), jnp.asarray(prev_action), jnp.asarray(prev_reward), time)
    assert inputs.shape == (4, agent.input_size) == (4, 7) and inputs.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(inputs), expected, rtol=0.0, atol=1e-7)
    # A scalar time is shared by every task.
    shared = agent.inputs(
        jnp.asarray(obs), jnp.asarray(prev_action), jnp.asarray(prev_reward), jnp.asarray(4, jnp.int32)
    )
    np.testing.assert_allclose(np.asarray(shared)[:, -1], np.full(4, 0.4), rtol=0.0, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(shared)[:, :-1], expected[:, :-1])


def test_inputs_without_time_end_with_the_previous_reward():
    agent = agent_for(bernoulli(num_arms=2), hidden_size=HIDDEN)
    inputs = agent.inputs(
        jnp.zeros((3, 0), jnp.float32),
        jnp.asarray([1, -1, 0], jnp.int32),
        jnp.asarray([1.0, 0.0, 0.0], jnp.float32),
        jnp.asarray(5, jnp.int32),
    )
    np.testing.assert_array_equal(np.asarray(inputs), [[0.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])


@pytest.mark.parametrize("hidden_size", [0, -3, 2.5, True, "8"])
def test_bad_hidden_size_raises(hidden_size):
    with pytest.raises(ValueError, match="hidden_size"):
        agent_for(bernoulli(), hidden_size=hidden_size)


# ---------------------------------------------------------------------------------------------
# One step


def test_initial_carry_is_zero_cell_and_hidden():
    agent = agent_for(bernoulli(), hidden_size=HIDDEN)
    cell, hidden = agent.initial_carry(5)
    for part in (cell, hidden):
        assert part.shape == (5, HIDDEN) and part.dtype == jnp.float32
        assert not np.asarray(part).any()


def test_step_shapes_and_dtypes(params):
    (cell, hidden), logits, value = step(AGENT, params, AGENT.initial_carry(6), normal(1, (6, 5)))
    assert cell.shape == hidden.shape == (6, HIDDEN)
    assert logits.shape == (6, 3) and value.shape == (6,)
    for out in (cell, hidden, logits, value):
        assert out.dtype == jnp.float32
    # The hidden state is the LSTM output o * tanh(c), inside (-1, 1).
    assert (np.abs(np.asarray(hidden)) < 1.0).all()


def test_step_matches_float64_numpy_lstm(params):
    carry = (normal(2, (5, HIDDEN)), normal(3, (5, HIDDEN)))
    inputs = normal(4, (5, AGENT.input_size))
    (cell, hidden), logits, value = step(AGENT, params, carry, inputs)
    (ref_cell, ref_hidden), ref_logits, ref_value = reference_step(params, carry, inputs)
    np.testing.assert_allclose(np.asarray(cell), ref_cell, rtol=0.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(hidden), ref_hidden, rtol=0.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(logits), ref_logits, rtol=0.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(value), ref_value, rtol=0.0, atol=1e-5)


def test_unrolled_steps_match_float64_numpy_lstm(params):
    """Three steps fed back through the carry: the (cell, hidden) order of the carry matters."""
    inputs = normal(5, (3, 4, AGENT.input_size))
    carry = AGENT.initial_carry(4)
    ref_carry = (np.zeros((4, HIDDEN)), np.zeros((4, HIDDEN)))
    for t in range(3):
        carry, logits, _ = step(AGENT, params, carry, inputs[t])
        ref_carry, ref_logits, _ = reference_step(params, ref_carry, inputs[t])
    np.testing.assert_allclose(np.asarray(carry[0]), ref_carry[0], rtol=0.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(carry[1]), ref_carry[1], rtol=0.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(logits), ref_logits, rtol=0.0, atol=1e-5)


def test_initial_policy_is_near_uniform():
    params = init(AGENT, jax.random.key(5))
    _, logits, _ = step(AGENT, params, AGENT.initial_carry(16), normal(6, (16, AGENT.input_size)))
    np.testing.assert_allclose(np.asarray(jax.nn.softmax(logits)), 1.0 / 3.0, rtol=0.0, atol=0.02)


# ---------------------------------------------------------------------------------------------
# Several seeds at once


def test_vmapped_init_and_step_over_seeds_match_one_seed_at_a_time():
    keys = jax.random.split(jax.random.key(7), 3)
    stacked = jax.jit(jax.vmap(AGENT.init))(keys)
    inputs, carry = normal(8, (4, AGENT.input_size)), AGENT.initial_carry(4)
    (cells, hiddens), logits, values = jax.jit(jax.vmap(AGENT.step, in_axes=(0, None, None)))(
        stacked, carry, inputs
    )
    assert hiddens.shape == cells.shape == (3, 4, HIDDEN)
    assert logits.shape == (3, 4, 3) and values.shape == (3, 4)
    for seed in range(3):
        params = jax.tree.map(lambda leaf, s=seed: leaf[s], stacked)
        jax.tree.map(np.testing.assert_array_equal, params, init(AGENT, keys[seed]))
        (cell, hidden), _, value = step(AGENT, params, carry, inputs)
        np.testing.assert_allclose(np.asarray(hiddens[seed]), np.asarray(hidden), rtol=0.0, atol=1e-6)
        np.testing.assert_allclose(np.asarray(cells[seed]), np.asarray(cell), rtol=0.0, atol=1e-6)
        np.testing.assert_allclose(np.asarray(values[seed]), np.asarray(value), rtol=0.0, atol=1e-6)
    # Different seeds are different networks.
    assert not np.allclose(np.asarray(hiddens[0]), np.asarray(hiddens[1]))
