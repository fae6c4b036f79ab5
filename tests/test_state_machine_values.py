"""Value tests of the state-machine simulation's wiring (``metabelief.analysis.state_machine``).

The independent reference, in float64 NumPy on hand-built arrays: the ridge map written out
(fitted on the training lanes at each strength of the grid, the strength chosen by R^2 on the
validation lanes, refitted on training + validation lanes, applied to the test lanes), the MLP map
called directly with the splits and the key each direction must get, the Bayes agent's counts
counted from the history and its policy read from ``BayesOptimal`` at counts rounded here, and the
four measures written out from the maps' predictions: per-dimension ``1 - R^2``, total variation,
Kuo et al.'s expected-return difference per episode and its greedy form. Known answers: a memory
that is the Bayes state (up to an invertible affine map) scores 0, a memory of noise about 1.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief import probes
from metabelief.agents import agent_for
from metabelief.analysis import state_machine
from metabelief.rollout import UniformActions, lockstep, replay_jit
from metabelief.tasks.bandit_base import BetaBelief
from metabelief.tasks.bernoulli_bandit import BernoulliTask

# One set of shapes for every test and both directions, so each map compiles once: T steps, lanes
# split (train, validation, test) into distinct sizes, Bayes states of 2K = 4 counts, agent states
# of 4 (an LSTM's memory [hidden, cell] with H = 2).
NUM_STEPS, SPLITS, NUM_ARMS, STATE_SIZE, HIDDEN_SIZE = 6, (20, 12, 8), 2, 4, 2
NUM_LANES = sum(SPLITS)
MLP_STEPS = 200  # two rounds of 100 steps: the validation lanes choose between two checkpoints
KEY = jax.random.key(2024)


def _lanes(array, split: int) -> np.ndarray:
    """Lanes of ``split`` (0 train, 1 validation, 2 test) of ``[T, N, ...]``, float64."""
    bounds = np.cumsum([0, *SPLITS])
    return np.asarray(array, np.float64)[:, bounds[split] : bounds[split + 1]]


def _rows(array: np.ndarray) -> np.ndarray:
    return array.reshape(-1, array.shape[-1])


def _ridge_map(source, receiver) -> np.ndarray:
    """The linear map's test predictions ``[T, n_test, dy]``: ridge of receiver on source states."""

    def fit(x, y, ridge):
        x_mean, y_mean = x.mean(0), y.mean(0)
        scatter = (x - x_mean).T @ (x - x_mean)
        scale = max(np.trace(scatter) / len(scatter), 1e-30)
        weights = np.linalg.solve(
            scatter + ridge * scale * np.eye(len(scatter)), (x - x_mean).T @ (y - y_mean)
        )
        return weights, y_mean - x_mean @ weights

    def r2(weights, bias, x, y):
        errors = ((y - x @ weights - bias) ** 2).sum(0)
        total = ((y - y.mean(0)) ** 2).sum(0)
        return 1.0 - errors.sum() / total.sum()

    (x_train, x_validation, x_test), (y_train, y_validation, _) = (
        [_rows(_lanes(states, split)) for split in range(3)] for states in (source, receiver)
    )
    scores = [
        r2(*fit(x_train, y_train, ridge), x_validation, y_validation) for ridge in probes.DEFAULT_RIDGE_GRID
    ]
    ridge = probes.DEFAULT_RIDGE_GRID[int(np.argmax(scores))]
    weights, bias = fit(
        np.concatenate([x_train, x_validation]), np.concatenate([y_train, y_validation]), ridge
    )
    return (x_test @ weights + bias).reshape(NUM_STEPS, SPLITS[2], -1)


def _mlp_map(source, receiver, key) -> np.ndarray:
    """The MLP map's test predictions: fitted on the training lanes with ``key``, kept at its best
    on the validation lanes (``probes.mlp_map``, rows in the module's order: step-major)."""
    x = [jnp.asarray(_rows(_lanes(source, split)), jnp.float32) for split in range(3)]
    y = [jnp.asarray(_rows(_lanes(receiver, split)), jnp.float32) for split in range(3)]
    predicted = probes.mlp_map(key, (x[0], y[0]), (x[1], y[1]), x[2], num_steps=MLP_STEPS)
    return np.asarray(predicted, np.float64).reshape(NUM_STEPS, SPLITS[2], -1)


def _state_dissimilarity(predicted, target) -> float:
    """Per varying dimension: the squared error over the variance (1 - R^2), averaged."""
    variance = _rows(target).var(0)
    varies = variance > 1e-12
    return (((_rows(predicted) - _rows(target)) ** 2).mean(0)[varies] / variance[varies]).mean()


def _measures(predicted, target, source_probs, receiver_probs, arm_means) -> dict:
    """The four measures of one map, from its test predictions and both agents' action
    probabilities ``[T, n_test, A]`` (the source at its true states, the receiver at the mapped)."""
    greedy = lambda probs: np.eye(probs.shape[-1])[probs.argmax(-1)]  # noqa: E731 -- ties: lowest arm

    def returns(source, receiver):
        per_episode = ((source - receiver) * arm_means).sum(-1).sum(0)  # [n_test]
        return np.abs(per_episode).mean()

    return {
        "state_dissimilarity": _state_dissimilarity(predicted, target),
        "output_total_variation": 0.5 * np.abs(source_probs - receiver_probs).sum(-1).mean(),
        "output_return_difference": returns(source_probs, receiver_probs),
        "output_return_difference_greedy": returns(greedy(source_probs), greedy(receiver_probs)),
    }


def _expected(states: dict, policies: dict, arm_means, key, kinds=("linear", "mlp")) -> dict:
    """``{direction: {kind: measures}}`` recomputed here; ``states``/``policies`` by ``"bayes"``
    and ``"agent"``, the policies NumPy functions of float64 states."""
    direction_keys = dict(zip(state_machine.DIRECTIONS, jax.random.split(key, 2), strict=True))
    test_means = _lanes(np.broadcast_to(arm_means, (NUM_STEPS, *np.shape(arm_means)[-2:])), 2)
    report = {}
    for direction, map_key in direction_keys.items():
        source, receiver = direction.split("_to_")
        source_probs = policies[source](_lanes(states[source], 2))
        report[direction] = {}
        for kind in kinds:
            if kind == "linear":
                predicted = _ridge_map(states[source], states[receiver])
            else:
                predicted = _mlp_map(states[source], states[receiver], map_key)
            report[direction][kind] = _measures(
                predicted,
                _lanes(states[receiver], 2),
                source_probs,
                policies[receiver](predicted),
                test_means,
            )
    return report


def _assert_close(written: dict, expected: dict, rel=1e-4, abs=1e-6) -> None:
    for direction, kinds in expected.items():
        for kind, measures in kinds.items():
            for measure, value in measures.items():
                assert written[direction][kind][measure] == pytest.approx(value, rel=rel, abs=abs), (
                    direction,
                    kind,
                    measure,
                )


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# The array core on hand-built states: which split fits, chooses and scores each map, the key of
# each direction, and which agent is the source.


@functools.cache
def _hand_built():
    """Bayes states ``x [T, N, 4]`` and agent states ``y = tanh(2 x W) + noise [T, N, 4]``, except on
    the validation lanes, where ``y = 0.2 tanh(2 x W) + noise``: a map fitted, chosen or kept on any
    other split than its own gives other figures (here the validation lanes keep the MLP's first
    checkpoint, the test lanes would keep its second; they choose different ridge strengths).
    Smooth, different policies over 2 actions; arm means [N, 2]."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((NUM_STEPS, NUM_LANES, 4))
    weights = rng.standard_normal((4, STATE_SIZE))
    scale = np.ones(NUM_LANES)
    scale[SPLITS[0] : SPLITS[0] + SPLITS[1]] = 0.2
    noise = 0.3 * rng.standard_normal((NUM_STEPS, NUM_LANES, STATE_SIZE))
    y = scale[None, :, None] * np.tanh(2.0 * x @ weights) + noise
    x, y = x.astype(np.float32), y.astype(np.float32)
    bayes_logits, agent_logits = (
        rng.standard_normal((4, NUM_ARMS)),
        rng.standard_normal((STATE_SIZE, NUM_ARMS)),
    )
    means = rng.uniform(size=(NUM_LANES, NUM_ARMS)).astype(np.float32)
    report = state_machine.simulate_states(
        jnp.asarray(x),
        lambda states: jax.nn.softmax(states @ jnp.asarray(bayes_logits, jnp.float32)),
        jnp.asarray(y),
        lambda states: jax.nn.softmax(states @ jnp.asarray(agent_logits, jnp.float32)),
        jnp.asarray(means),
        SPLITS,
        key=KEY,
        mlp_steps=MLP_STEPS,
    ).to_dict()
    states = {"bayes": x, "agent": y}
    policies = {
        "bayes": lambda states: _softmax(states @ bayes_logits),
        "agent": lambda states: _softmax(states @ agent_logits),
    }
    return report, states, policies, means


def test_linear_maps_are_fitted_on_train_chosen_on_validation_and_scored_on_the_test_lanes():
    report, states, policies, means = _hand_built()
    expected = _expected(states, policies, means, KEY, kinds=("linear",))
    # Not a degenerate case: the maps are imperfect and the agents act differently.
    for direction in expected.values():
        assert 0.05 < direction["linear"]["state_dissimilarity"] < 1.0
        assert direction["linear"]["output_total_variation"] > 0.05
    _assert_close(report, expected)


def test_each_directions_mlp_map_gets_its_own_key_and_is_kept_at_its_best_on_validation():
    report, states, policies, means = _hand_built()
    expected = _expected(states, policies, means, KEY, kinds=("mlp",))
    _assert_close(report, expected)


def test_the_source_acts_at_its_true_state_and_the_receiver_at_the_mapped_one():
    """The output figure compares the source at its true state with the receiver at the mapped
    one, not the receiver at its true state with itself at the mapped one."""
    report, states, policies, means = _hand_built()
    expected = _expected(states, policies, means, KEY, kinds=("linear",))
    for direction in state_machine.DIRECTIONS:
        source, receiver = direction.split("_to_")
        predicted = _ridge_map(states[source], states[receiver])
        at_true = policies[receiver](_lanes(states[receiver], 2))
        receiver_with_itself = 0.5 * np.abs(at_true - policies[receiver](predicted)).sum(-1).mean()
        written = report[direction]["linear"]["output_total_variation"]
        assert written == pytest.approx(expected[direction]["linear"]["output_total_variation"], rel=1e-4)
        assert written != pytest.approx(receiver_with_itself, rel=1e-2)


# ---------------------------------------------------------------------------------------------
# Known answers with the Bayes-optimal agent of a 2-armed Bernoulli bandit.


@functools.cache
def _bandit():
    """The family, its Bayes agent, a uniform-random history and its counts counted here."""
    family = metabelief.make("bernoulli_bandit", num_arms=NUM_ARMS, horizon=NUM_STEPS)
    bayes = metabelief.baselines.bayes_optimal(family)
    # Tasks from the prior, Beta(1, 1): uniform success probabilities (drawn here, in NumPy).
    probs = np.random.default_rng(5).uniform(size=(NUM_LANES, NUM_ARMS)).astype(np.float32)
    tasks = BernoulliTask(probs=jnp.asarray(probs))
    play = functools.partial(lockstep, family, UniformActions(NUM_ARMS), num_steps=NUM_STEPS)
    history = jax.jit(lambda key, tasks: play(key=key, tasks=tasks).trajectory)(jax.random.key(1), tasks)
    pulled = np.eye(NUM_ARMS)[np.asarray(history.actions)]  # [T, N, K]
    rewards = np.asarray(history.rewards, np.float64)[..., None]
    before = lambda x: np.cumsum(x, axis=0) - x  # noqa: E731 -- counts before each decision
    counts = np.concatenate([before(pulled * rewards), before(pulled * (1 - rewards))], axis=-1)
    return family, bayes, history, counts.astype(np.float32)


@functools.partial(jax.jit, static_argnums=0)
def _dp_probs(bayes, alpha, beta):
    return jax.vmap(bayes.action_probs_at)(BetaBelief(alpha=alpha, beta=beta))


def _bayes_probs(family, bayes, counts: np.ndarray) -> np.ndarray:
    """The DP's policy at ``counts [..., 2K]`` rounded here to the nearest non-negative integers."""
    counts = np.maximum(np.round(np.asarray(counts, np.float64)), 0.0)
    flat = counts.reshape(-1, 2 * NUM_ARMS)
    alpha = jnp.asarray(flat[:, :NUM_ARMS] + family.prior_a, jnp.float32)
    probs = _dp_probs(bayes, alpha, jnp.asarray(flat[:, NUM_ARMS:] + family.prior_b, jnp.float32))
    return np.asarray(probs, np.float64).reshape(*counts.shape[:-1], NUM_ARMS)


def test_a_memory_that_is_the_bayes_state_simulates_the_bayes_agent_with_dissimilarity_zero():
    family, bayes, history, counts = _bandit()
    rng = np.random.default_rng(1)
    embedding = rng.standard_normal((2 * NUM_ARMS, STATE_SIZE))
    offset = rng.standard_normal(STATE_SIZE)
    decode = lambda states: (np.asarray(states, np.float64) - offset) @ np.linalg.pinv(embedding)  # noqa: E731
    memory = (counts @ embedding + offset).astype(np.float32)  # an invertible affine image of the counts
    bayes_probs = _bayes_probs(family, bayes, counts)
    assert 0.3 < (bayes_probs.max(-1) == 1.0).mean() < 1.0  # the Bayes agent decides, not always
    report = state_machine.simulate_states(
        jnp.asarray(counts),
        state_machine.bayes_count_policy(family, bayes),
        jnp.asarray(memory),
        lambda states: jnp.asarray(_bayes_probs(family, bayes, decode(states)), jnp.float32),
        history.truth,
        SPLITS,
        key=KEY,
        mlp_steps=MLP_STEPS,
    ).to_dict()
    for direction in report.values():
        assert direction["linear"]["state_dissimilarity"] < 1e-5
        for measure in state_machine.MEASURES[1:]:
            assert direction["linear"][measure] == 0.0, measure
        # A short-trained MLP is nearly exact too; rounding to counts absorbs its error.
        assert direction["mlp"]["state_dissimilarity"] < 0.05
        assert direction["mlp"]["output_total_variation"] < 0.05


def test_a_memory_of_noise_has_dissimilarity_one_and_acts_unlike_the_bayes_agent():
    family, bayes, history, counts = _bandit()
    rng = np.random.default_rng(2)
    noise = rng.standard_normal((NUM_STEPS, NUM_LANES, STATE_SIZE)).astype(np.float32)
    logits = 4.0 * rng.standard_normal((STATE_SIZE, NUM_ARMS))  # sharp: nearly one arm per state
    report = state_machine.simulate_states(
        jnp.asarray(counts),
        state_machine.bayes_count_policy(family, bayes),
        jnp.asarray(noise),
        lambda states: jax.nn.softmax(states @ jnp.asarray(logits, jnp.float32)),
        history.truth,
        SPLITS,
        key=KEY,
        mlp_steps=MLP_STEPS,
    ).to_dict()
    states = {"bayes": counts, "agent": noise}
    policies = {
        "bayes": lambda states: _bayes_probs(family, bayes, states),
        "agent": lambda states: _softmax(np.asarray(states, np.float64) @ logits),
    }
    expected = _expected(states, policies, np.asarray(history.truth), KEY, kinds=("linear",))
    _assert_close(report, expected)
    for direction, written in report.items():
        # A map from noise predicts about the mean of the lanes it was fitted on: no better than
        # each dimension's mean (the test lanes' own mean scores 1 exactly).
        receiver = states[direction.split("_to_")[1]]
        target = _lanes(receiver, 2)
        fitted_mean = np.concatenate([_lanes(receiver, 0), _lanes(receiver, 1)], axis=1).mean((0, 1))
        constant = _state_dissimilarity(np.broadcast_to(fitted_mean, target.shape), target)
        assert constant >= 1.0
        assert written["linear"]["state_dissimilarity"] == pytest.approx(constant, abs=0.1)
        assert written["mlp"]["state_dissimilarity"] > 0.95
        for kind in ("linear", "mlp"):
            assert written[kind]["output_total_variation"] > 0.2, kind
            assert written[kind]["output_return_difference"] > 0.05, kind


# ---------------------------------------------------------------------------------------------
# simulate: each network's whole memory (replayed on the history), each network's own key.


def test_simulate_maps_each_networks_whole_memory_with_a_key_of_its_own():
    family, bayes, history, counts = _bandit()
    agent = agent_for(family, hidden_size=HIDDEN_SIZE)  # an LSTM: memory = [hidden, cell]
    assert agent.memory_size == STATE_SIZE == 2 * HIDDEN_SIZE
    networks = {"first": agent.init(jax.random.key(7)), "second": agent.init(jax.random.key(8))}
    # The history was played by a third network: its recorded memory is no one's in `networks`.
    history = replay_jit(family, agent, agent.init(jax.random.key(9)), history)
    report = state_machine.simulate(
        family, agent, networks, history, bayes, SPLITS, key=KEY, mlp_steps=MLP_STEPS
    )
    assert list(report) == ["first", "second"]
    key = KEY
    for name, params in networks.items():
        key, network_key = jax.random.split(key)  # each network in turn: a key of its own
        memory = np.asarray(replay_jit(family, agent, params, history).memory, np.float64)
        assert memory.shape == (NUM_STEPS, NUM_LANES, STATE_SIZE)
        policy = jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), params["params"]["policy"])
        policies = {
            "bayes": lambda states: _bayes_probs(family, bayes, states),
            # The policy head reads the readout, the memory's first H entries.
            "agent": lambda states, p=policy: _softmax(states[..., :HIDDEN_SIZE] @ p["kernel"] + p["bias"]),
        }
        states = {"bayes": counts, "agent": memory}
        expected = _expected(states, policies, np.asarray(history.truth), network_key, kinds=("linear",))
        if name == "second":
            # The MLP of one direction, with that direction's share of the key: the second
            # network's key follows from the first's, so one check pins both.
            predicted = _mlp_map(memory, counts, jax.random.split(network_key, 2)[0])
            expected["agent_to_bayes"]["mlp"] = _measures(
                predicted,
                _lanes(counts, 2),
                policies["agent"](_lanes(memory, 2)),
                policies["bayes"](predicted),
                _lanes(np.asarray(history.truth), 2),
            )
        _assert_close(report[name].to_dict(), expected, rel=1e-3, abs=1e-5)


# ---------------------------------------------------------------------------------------------
# The measures' closed forms.


def test_state_dissimilarity_weighs_each_varying_dimension_equally_and_skips_constant_ones():
    rng = np.random.default_rng(3)
    large, small = 10.0 * rng.standard_normal(400), 2.0 * rng.standard_normal(400)
    target = np.stack([large, small, np.full(400, 3.0)], axis=-1).astype(np.float32)
    # Exact on the large dimension, the mean on the small one: (0 + 1) / 2 over the two that vary
    # (not the pooled 4 / 104, nor 2 / 2 divided by the standard deviation, nor 1 / 3 counting the
    # constant one).
    predicted = target.copy()
    predicted[:, 1] = target[:, 1].mean()
    figure = state_machine._normalised_mse(jnp.asarray(predicted), jnp.asarray(target))
    assert figure == pytest.approx(0.5, rel=1e-5)
    assert state_machine._normalised_mse(jnp.asarray(target), jnp.asarray(target)) == 0.0


def test_output_measures_are_zero_for_the_same_outputs_and_closed_forms_otherwise():
    num_steps = 4
    means = np.array([[0.9, 0.1], [0.6, 0.4]], np.float32)  # two episodes: gaps 0.8 and 0.2
    arm = lambda index: np.broadcast_to(np.eye(2)[index], (num_steps, 2, 2)).astype(np.float32)  # noqa: E731

    def measures(source, receiver):
        return state_machine.output_dissimilarities(
            jnp.asarray(source), jnp.asarray(receiver), jnp.asarray(means)
        )

    rng = np.random.default_rng(4)
    same = rng.dirichlet(np.ones(2), size=(num_steps, 2)).astype(np.float32)
    assert measures(same, same) == dict.fromkeys(state_machine.MEASURES[1:], 0.0)
    # Arm 0 against arm 1 throughout: disjoint actions, T * gap per episode, averaged over episodes.
    disjoint = measures(arm(0), arm(1))
    assert disjoint["output_total_variation"] == pytest.approx(1.0)
    assert disjoint["output_return_difference"] == pytest.approx(num_steps * (0.8 + 0.2) / 2)
    assert disjoint["output_return_difference_greedy"] == pytest.approx(num_steps * (0.8 + 0.2) / 2)
    # Taking turns: disjoint at every step, yet the same expected return per episode.
    turns = np.where((np.arange(num_steps) % 2 == 0)[:, None, None], arm(0), arm(1))
    alternating = measures(turns, turns[:, :, ::-1])
    assert alternating["output_total_variation"] == pytest.approx(1.0)
    assert alternating["output_return_difference"] == pytest.approx(0.0, abs=1e-6)
    # A tie goes to the lowest arm: greedily, uniform is arm 0, although it expects less.
    uniform = np.full((num_steps, 2, 2), 0.5, np.float32)
    tie = measures(uniform, arm(0))
    assert tie["output_total_variation"] == pytest.approx(0.5)
    assert tie["output_return_difference"] == pytest.approx(num_steps * 0.5 * (0.8 + 0.2) / 2)
    assert tie["output_return_difference_greedy"] == 0.0
