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
from metabelief.baselines import run_policy
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


def _output_figures(source, receiver, arm_means) -> dict:
    """The three output measures between two policies' probabilities ``[T, n_test, A]``."""
    greedy = lambda probs: np.eye(probs.shape[-1])[probs.argmax(-1)]  # noqa: E731 -- ties: lowest arm
    return {
        "total_variation": 0.5 * np.abs(source - receiver).sum(-1).mean(),
        "return_difference": _returns(source, receiver, arm_means),
        "return_difference_greedy": _returns(greedy(source), greedy(receiver), arm_means),
    }


def _returns(source, receiver, arm_means) -> float:
    per_episode = ((source - receiver) * arm_means).sum(-1).sum(0)  # [n_test]
    return np.abs(per_episode).mean()


def _measures(predicted, target, source_probs, receiver_probs, arm_means, agent_probs, bayes_probs) -> dict:
    """The measures of one map, from its test predictions and the action probabilities
    ``[T, n_test, A]`` of the source at its true states, the receiver at the mapped states, and
    each agent at its own true states (the floor; the Bayes agent's also against random)."""
    mapped = _output_figures(source_probs, receiver_probs, arm_means)
    floor = _output_figures(agent_probs, bayes_probs, arm_means)
    uniform = np.full_like(bayes_probs, 1.0 / bayes_probs.shape[-1])
    greedy_bayes = np.eye(bayes_probs.shape[-1])[bayes_probs.argmax(-1)]
    random = {
        "total_variation": 0.5 * np.abs(bayes_probs - uniform).sum(-1).mean(),
        "return_difference": _returns(bayes_probs, uniform, arm_means),
        "return_difference_greedy": _returns(greedy_bayes, uniform, arm_means),  # not uniform's argmax
    }
    output = {
        name: {
            "mapped": mapped[name],
            "floor": floor[name],
            "excess": mapped[name] - floor[name],
            "random": random[name],
            "normalised": mapped[name] / random[name],
        }
        for name in mapped
    }
    return {
        "state_dissimilarity": _state_dissimilarity(predicted, target),
        # Kuo et al.'s get_state_dissimilarity: summed squared error over summed squared norm.
        "state_dissimilarity_uncentred": ((predicted - target) ** 2).sum() / (target**2).sum(),
        "output": {"undiscounted": output},
    }


def _expected(states: dict, policies: dict, arm_means, key, kinds=("linear", "mlp")) -> dict:
    """``{direction: {kind: measures}}`` recomputed here; ``states``/``policies`` by ``"bayes"``
    and ``"agent"``, the policies NumPy functions of float64 states."""
    direction_keys = dict(zip(state_machine.DIRECTIONS, jax.random.split(key, 2), strict=True))
    test_means = _lanes(np.broadcast_to(arm_means, (NUM_STEPS, *np.shape(arm_means)[-2:])), 2)
    report = {}
    at_true = {name: policies[name](_lanes(states[name], 2)) for name in ("agent", "bayes")}
    for direction, map_key in direction_keys.items():
        source, receiver = direction.split("_to_")
        source_probs = at_true[source]
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
                at_true["agent"],
                at_true["bayes"],
            )
    return report


def _assert_close(written: dict, expected: dict, rel=1e-4, abs=1e-6, path=()) -> None:
    """Every number of ``expected`` (nested dicts) equals ``written``'s at the same keys."""
    for key, value in expected.items():
        if isinstance(value, dict):
            _assert_close(written[key], value, rel, abs, (*path, key))
        else:
            assert written[key] == pytest.approx(value, rel=rel, abs=abs), (*path, key)


def _mapped_tv(measures: dict) -> float:
    return measures["output"]["undiscounted"]["total_variation"]["mapped"]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def _softmax_agent(logits: np.ndarray) -> tuple:
    """An agent acting by softmax(state @ ``logits``): its policy in float32 JAX for the simulation,
    and in float64 NumPy for the reference."""
    return (
        lambda states: jax.nn.softmax(states @ jnp.asarray(logits, jnp.float32)),
        lambda states: _softmax(np.asarray(states, np.float64) @ logits),
    )


def _simulate(bayes_states, bayes_policies: dict, agent_states, agent_policy, arm_means) -> dict:
    """``state_machine.simulate_states`` on these splits, key and MLP steps; its report as a dict."""
    return state_machine.simulate_states(
        jnp.asarray(bayes_states),
        bayes_policies,
        jnp.asarray(agent_states),
        agent_policy,
        jnp.asarray(arm_means),
        SPLITS,
        key=KEY,
        mlp_steps=MLP_STEPS,
    ).to_dict()


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
    bayes_simulated, bayes = _softmax_agent(rng.standard_normal((4, NUM_ARMS)))
    agent_simulated, agent = _softmax_agent(rng.standard_normal((STATE_SIZE, NUM_ARMS)))
    means = rng.uniform(size=(NUM_LANES, NUM_ARMS)).astype(np.float32)
    report = _simulate(x, {"undiscounted": bayes_simulated}, y, agent_simulated, means)
    return report, {"bayes": x, "agent": y}, {"bayes": bayes, "agent": agent}, means


def test_linear_maps_are_fitted_on_train_chosen_on_validation_and_scored_on_the_test_lanes():
    report, states, policies, means = _hand_built()
    expected = _expected(states, policies, means, KEY, kinds=("linear",))
    # Not a degenerate case: the maps are imperfect and the agents act differently.
    for direction in expected.values():
        assert 0.05 < direction["linear"]["state_dissimilarity"] < 1.0
        assert _mapped_tv(direction["linear"]) > 0.05
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
        written = _mapped_tv(report[direction]["linear"])
        assert written == pytest.approx(_mapped_tv(expected[direction]["linear"]), rel=1e-4)
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
    return family, bayes, history, _numpy_counts(history)


def _numpy_counts(history) -> np.ndarray:
    """``float32[T, N, 2K]``: each arm's successes, then failures, before each decision."""
    pulled = np.eye(NUM_ARMS)[np.asarray(history.actions)]  # [T, N, K]
    rewards = np.asarray(history.rewards, np.float64)[..., None]
    before = lambda x: np.cumsum(x, axis=0) - x  # noqa: E731 -- counts before each decision
    counts = np.concatenate([before(pulled * rewards), before(pulled * (1 - rewards))], axis=-1)
    return counts.astype(np.float32)


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
    report = _simulate(
        counts,
        {"undiscounted": state_machine.bayes_count_policy(family, bayes)},
        memory,
        lambda states: jnp.asarray(_bayes_probs(family, bayes, decode(states)), jnp.float32),
        history.truth,
    )
    for direction in (report["agent_to_bayes"], report["bayes_to_agent"]):
        assert direction["linear"]["state_dissimilarity"] < 1e-5
        assert direction["linear"]["state_dissimilarity_uncentred"] < 1e-5
        for measure, figures in direction["linear"]["output"]["undiscounted"].items():
            # Mapped and floor 0: the agent acts as the Bayes agent at the same states.
            assert {k: figures[k] for k in ("mapped", "floor", "excess", "normalised")} == dict.fromkeys(
                ("mapped", "floor", "excess", "normalised"), 0.0
            ), measure
            assert figures["random"] > 0.05, measure
        # A short-trained MLP is nearly exact too; rounding to counts absorbs its error.
        assert direction["mlp"]["state_dissimilarity"] < 0.05
        assert _mapped_tv(direction["mlp"]) < 0.05


def test_a_memory_of_noise_has_dissimilarity_one_and_acts_unlike_the_bayes_agent():
    family, bayes, history, counts = _bandit()
    rng = np.random.default_rng(2)
    noise = rng.standard_normal((NUM_STEPS, NUM_LANES, STATE_SIZE)).astype(np.float32)
    # Sharp logits: nearly one arm per state.
    agent_simulated, agent = _softmax_agent(4.0 * rng.standard_normal((STATE_SIZE, NUM_ARMS)))
    report = _simulate(
        counts,
        {"undiscounted": state_machine.bayes_count_policy(family, bayes)},
        noise,
        agent_simulated,
        history.truth,
    )
    states = {"bayes": counts, "agent": noise}
    policies = {"bayes": lambda states: _bayes_probs(family, bayes, states), "agent": agent}
    expected = _expected(states, policies, np.asarray(history.truth), KEY, kinds=("linear",))
    _assert_close(report, expected)
    for direction in state_machine.DIRECTIONS:
        written = report[direction]
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
            outputs = written[kind]["output"]["undiscounted"]
            assert outputs["total_variation"]["mapped"] > 0.2, kind
            assert outputs["return_difference"]["mapped"] > 0.05, kind


# ---------------------------------------------------------------------------------------------
# simulate: each network's whole memory (replayed on the history), each network's own key.


def test_simulate_maps_each_networks_whole_memory_on_each_history_with_a_key_of_its_own():
    family, bayes, history, counts = _bandit()
    agent = agent_for(family, hidden_size=HIDDEN_SIZE)  # an LSTM: memory = [hidden, cell]
    assert agent.memory_size == STATE_SIZE == 2 * HIDDEN_SIZE
    networks = {"first": agent.init(jax.random.key(7)), "second": agent.init(jax.random.key(8))}
    # The agent's history was played by a third network: its recorded memory is no one's in
    # `networks`; the Bayes agent's is the DP's own rollout on the same tasks (Kuo et al.'s).
    histories = {
        "agent": replay_jit(family, agent, agent.init(jax.random.key(9)), history),
        "bayes": jax.jit(run_policy, static_argnums=(0, 1))(
            family, bayes, jax.random.key(3), BernoulliTask(probs=history.truth[0])
        ),
    }
    report = state_machine.simulate(
        family, agent, networks, histories, {"undiscounted": bayes}, SPLITS, key=KEY, mlp_steps=MLP_STEPS
    )
    assert list(report) == ["first", "second"]
    assert all(list(report[name]) == ["agent", "bayes"] for name in report)
    key = KEY
    for name, params in networks.items():
        policy = jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), params["params"]["policy"])
        policies = {
            "bayes": lambda states: _bayes_probs(family, bayes, states),
            # The policy head reads the readout, the memory's first H entries.
            "agent": lambda states, p=policy: _softmax(states[..., :HIDDEN_SIZE] @ p["kernel"] + p["bias"]),
        }
        for played_by, recorded in histories.items():
            key, simulation_key = jax.random.split(key)  # each network and history in turn
            memory = np.asarray(replay_jit(family, agent, params, recorded).memory, np.float64)
            assert memory.shape == (NUM_STEPS, NUM_LANES, STATE_SIZE)
            counts = _numpy_counts(recorded)
            states = {"bayes": counts, "agent": memory}
            truth = np.asarray(recorded.truth)
            expected = _expected(states, policies, truth, simulation_key, kinds=("linear",))
            if (name, played_by) == ("second", "bayes"):
                # The MLP of one direction, with that direction's share of the key: the last
                # key follows from every earlier one, so one check pins them all.
                predicted = _mlp_map(memory, counts, jax.random.split(simulation_key, 2)[0])
                expected["agent_to_bayes"]["mlp"] = _measures(
                    predicted,
                    _lanes(counts, 2),
                    policies["agent"](_lanes(memory, 2)),
                    policies["bayes"](predicted),
                    _lanes(truth, 2),
                    policies["agent"](_lanes(memory, 2)),
                    policies["bayes"](_lanes(counts, 2)),
                )
            _assert_close(report[name][played_by].to_dict(), expected, rel=1e-3, abs=1e-5)


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
    assert measures(same, same) == dict.fromkeys(state_machine.OUTPUT_MEASURES, 0.0)
    # Arm 0 against arm 1 throughout: disjoint actions, T * gap per episode, averaged over episodes.
    disjoint = measures(arm(0), arm(1))
    assert disjoint["total_variation"] == pytest.approx(1.0)
    assert disjoint["return_difference"] == pytest.approx(num_steps * (0.8 + 0.2) / 2)
    assert disjoint["return_difference_greedy"] == pytest.approx(num_steps * (0.8 + 0.2) / 2)
    # Taking turns: disjoint at every step, yet the same expected return per episode.
    turns = np.where((np.arange(num_steps) % 2 == 0)[:, None, None], arm(0), arm(1))
    alternating = measures(turns, turns[:, :, ::-1])
    assert alternating["total_variation"] == pytest.approx(1.0)
    assert alternating["return_difference"] == pytest.approx(0.0, abs=1e-6)
    # A tie goes to the lowest arm: greedily, uniform is arm 0, although it expects less.
    uniform = np.full((num_steps, 2, 2), 0.5, np.float32)
    tie = measures(uniform, arm(0))
    assert tie["total_variation"] == pytest.approx(0.5)
    assert tie["return_difference"] == pytest.approx(num_steps * 0.5 * (0.8 + 0.2) / 2)
    assert tie["return_difference_greedy"] == 0.0


# ---------------------------------------------------------------------------------------------
# Floors (each agent at its own true state) and Kuo et al.'s uncentred state dissimilarity.


def test_the_floor_is_the_distance_of_the_agents_softmax_from_each_deterministic_bayes_policy():
    """Hand-built logits: the agent acts by a softmax of its state, each Bayes agent by a one-hot
    of its own pair of counts; the floor is their distance on the same test steps, whatever the
    map or direction, and each Bayes agent gets its own."""
    rng = np.random.default_rng(7)
    counts = rng.standard_normal((NUM_STEPS, NUM_LANES, 4)).astype(np.float32)
    logits = (3.0 * rng.standard_normal((NUM_STEPS, NUM_LANES, STATE_SIZE))).astype(np.float32)
    means = rng.uniform(size=(NUM_LANES, NUM_ARMS)).astype(np.float32)
    one_hot = lambda states, dims: jax.nn.one_hot(jnp.argmax(states[..., dims], -1), NUM_ARMS)  # noqa: E731
    report = _simulate(
        counts,
        {
            "undiscounted": lambda s: one_hot(s, slice(0, 2)),
            "training_gamma": lambda s: one_hot(s, slice(2, 4)),
        },
        logits,
        lambda states: jax.nn.softmax(states[..., :NUM_ARMS]),
        means,
    )
    assert report["gamma"] == {"undiscounted": None, "training_gamma": None}  # not DPs
    agent = _softmax(_lanes(logits, 2)[..., :NUM_ARMS])
    test_means = np.broadcast_to(means[SPLITS[0] + SPLITS[1] :], agent.shape)
    for name, dims in (("undiscounted", slice(0, 2)), ("training_gamma", slice(2, 4))):
        bayes = np.eye(NUM_ARMS)[_lanes(counts, 2)[..., dims].argmax(-1)]
        floor_tv = 0.5 * np.abs(agent - bayes).sum(-1).mean()
        per_episode = ((agent - bayes) * test_means).sum(-1).sum(0)
        assert 0.1 < floor_tv < 0.9
        for direction in state_machine.DIRECTIONS:
            for kind in state_machine.MAP_KINDS:
                figures = report[direction][kind]["output"][name]
                assert figures["total_variation"]["floor"] == pytest.approx(floor_tv, rel=1e-5)
                assert figures["return_difference"]["floor"] == pytest.approx(
                    np.abs(per_episode).mean(), rel=1e-5
                )
                for measure in state_machine.OUTPUT_MEASURES:
                    entry = figures[measure]
                    assert entry["excess"] == pytest.approx(entry["mapped"] - entry["floor"], abs=1e-6)
                    assert entry["normalised"] == pytest.approx(entry["mapped"] / entry["random"], rel=1e-6)


def test_kuos_uncentred_state_dissimilarity_divides_by_the_states_squared_norm():
    rng = np.random.default_rng(8)
    target = (5.0 + rng.standard_normal((300, 3))).astype(np.float32)  # far from 0
    uncentred = lambda predicted: state_machine._uncentred_mse(jnp.asarray(predicted), jnp.asarray(target))  # noqa: E731
    assert uncentred(target) == 0.0
    assert uncentred(np.zeros_like(target)) == pytest.approx(1.0, rel=1e-6)  # predicting 0 scores 1
    # Predicting each dimension's mean: variance over second moment, small for states far from 0,
    # where the centred measure (1 - R^2) scores 1.
    mean = np.broadcast_to(target.mean(0), target.shape)
    target64 = target.astype(np.float64)
    closed_form = ((target64 - target64.mean(0)) ** 2).sum() / (target64**2).sum()
    assert uncentred(mean) == pytest.approx(closed_form, rel=1e-4)
    assert closed_form < 0.05
    assert state_machine._normalised_mse(jnp.asarray(mean), jnp.asarray(target)) == pytest.approx(
        1.0, rel=1e-5
    )
    assert np.isnan(state_machine._uncentred_mse(jnp.zeros((4, 2)), jnp.zeros((4, 2))))
