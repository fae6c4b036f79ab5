"""Probe controls against float64 NumPy references and known answers.

The references are written from the definitions, not from the implementation: ridge regressions
solved on the sample rows (not on statistics), time as explicit one-hot columns with unpenalised
coefficients (the implementation partials time out by Frisch-Waugh-Lovell instead), lagged inputs
built by hand from the recorded actions and rewards, and the truth baselines as plain means.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief import probes
from metabelief.agents import agent_for
from metabelief.experiments import control_scores, controls
from metabelief.rollout import replay, rollout

FAMILY = metabelief.make("bernoulli_bandit", num_arms=2, horizon=20)  # features: 2 means, 2 stds
AGENT = agent_for(FAMILY, hidden_size=4)
HIDDEN = AGENT.hidden_size
NUM_TASKS = 40
SIZES = (20, 8, 12)  # uneven, so a block boundary off by one shows
GRID = probes.DEFAULT_RIDGE_GRID
PRIOR = np.array([0.5, 0.5, np.sqrt(1 / 12), np.sqrt(1 / 12)])  # Beta(1, 1): mean, std of each arm


def record(num_tasks: int, seed: int = 0):
    """A rollout of the network at one initialisation and the network at another replayed on it."""
    params, other = AGENT.init(jax.random.key(seed)), AGENT.init(jax.random.key(seed + 1))
    tasks = jax.vmap(FAMILY.sample_task)(jax.random.split(jax.random.key(seed + 2), num_tasks))
    history = jax.jit(rollout, static_argnums=(0, 1))(FAMILY, AGENT, params, jax.random.key(seed + 3), tasks)
    replayed = jax.jit(replay, static_argnums=(0, 1))(FAMILY, AGENT, other, history)
    return dict(params=params, other=other, history=history, replayed=replayed)


@pytest.fixture(scope="module")
def recorded():
    return record(NUM_TASKS)


# ---------------------------------------------------------------------------------------------
# float64 references


def blocks(array, sizes=SIZES) -> list[np.ndarray]:
    """``[T, N, ...]`` -> float64 ``[T, n, ...]`` for the train, validation and test lanes."""
    array = np.asarray(array, np.float64)
    bounds = np.cumsum([0, *sizes])
    return [array[:, a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def rows(array: np.ndarray) -> np.ndarray:
    return array.reshape(-1, array.shape[-1])


def time_one_hot(array: np.ndarray) -> np.ndarray:
    """One-hot of the step of each row of ``[T, n, ...]``: ``[T * n, T]``."""
    num_steps, num_lanes = array.shape[:2]
    return rows(np.broadcast_to(np.eye(num_steps)[:, None], (num_steps, num_lanes, num_steps)))


def ridge_predictor(x: np.ndarray, y: np.ndarray, strength: float, with_time: bool):
    """Ridge of ``y`` on ``x`` (``[T, n, d]``), intercept free, penalty ``strength`` times the mean
    input variance; with ``with_time`` also on a one-hot of t whose coefficients are free (and the
    input variance is the variance within steps). Returns the prediction function."""
    x_rows, y_rows = rows(x), rows(y)
    if with_time:
        residual = rows(x - x.mean(axis=1, keepdims=True))
        scale = np.trace(residual.T @ residual) / x.shape[-1]
        design = np.concatenate([x_rows, time_one_hot(x)], axis=1)  # the one-hots span the intercept
        penalty = np.diag(np.r_[np.full(x.shape[-1], strength * scale), np.zeros(x.shape[0])])
        coefficients = np.linalg.solve(design.T @ design + penalty, design.T @ y_rows)
        return lambda new: (np.concatenate([rows(new), time_one_hot(new)], axis=1) @ coefficients).reshape(
            *new.shape[:2], -1
        )
    centred = x_rows - x_rows.mean(axis=0)
    scatter = centred.T @ centred
    scale = np.trace(scatter) / x.shape[-1]
    weights = np.linalg.solve(
        scatter + strength * scale * np.eye(x.shape[-1]), centred.T @ (y_rows - y_rows.mean(0))
    )
    bias = y_rows.mean(axis=0) - x_rows.mean(axis=0) @ weights
    return lambda new: new @ weights + bias


def reference_predictions(x, y, *, with_time=False, per_column=False, grid=GRID) -> np.ndarray:
    """Test predictions ``[T, n_test, dy]`` of the protocol: fit on train lanes for each strength,
    choose on validation lanes by squared error (pooled over columns, or for each column), refit
    on train + validation lanes."""
    (x_train, x_val, x_test), (y_train, y_val, _) = blocks(x), blocks(y)
    errors = np.stack(
        [
            ((ridge_predictor(x_train, y_train, s, with_time)(x_val) - y_val) ** 2).sum(axis=(0, 1))
            for s in grid
        ]
    )  # [R, dy]
    chosen = errors.argmin(axis=0) if per_column else np.full(y.shape[-1], errors.sum(axis=1).argmin())
    x_fit, y_fit = np.concatenate([x_train, x_val], axis=1), np.concatenate([y_train, y_val], axis=1)
    refits = [ridge_predictor(x_fit, y_fit, s, with_time)(x_test) for s in grid]
    return np.stack([refits[r][..., column] for column, r in enumerate(chosen)], axis=-1)


def pooled_r2(predictions: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """(R^2 pooled over the dimensions, R^2 of each) about the targets' overall mean."""
    errors = rows((targets - predictions) ** 2).sum(axis=0)
    total = rows((targets - rows(targets).mean(axis=0)) ** 2).sum(axis=0)
    return 1 - errors.sum() / total.sum(), 1 - errors / total


def within_time_r2(predictions: np.ndarray, y) -> float:
    """R^2 against the test targets' variance about the train + validation lanes' mean at each step."""
    y_train, y_val, y_test = blocks(y)
    residual = y_test - np.concatenate([y_train, y_val], axis=1).mean(axis=1, keepdims=True)
    errors = ((y_test - predictions) ** 2).sum()
    return 1 - errors / ((rows(residual) - rows(residual).mean(axis=0)) ** 2).sum()


def mse(predictions: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean((predictions - targets) ** 2))


# ---------------------------------------------------------------------------------------------
# Networks: every score against the reference


def test_network_scores_equal_a_float64_ridge_protocol_on_the_sample_rows(recorded):
    history, replayed = recorded["history"], recorded["replayed"]
    hidden, both = replayed.hidden, replayed.memory  # the LSTM's memory is [hidden, cell]
    scores = control_scores.network_scores(both, hidden.shape[-1], history.features, history.truth, SIZES)
    features, truth, means = history.features, history.truth, history.features[..., :2]
    test = lambda array: blocks(array)[2]  # noqa: E731

    per_column = reference_predictions(hidden, features, per_column=True)
    np.testing.assert_allclose(scores.per_dimension, pooled_r2(per_column, test(features))[1], atol=2e-4)
    for pair, inputs in ((scores.hidden, hidden), (scores.memory, both)):
        expected_r2 = pooled_r2(reference_predictions(inputs, features), test(features))[0]
        expected_means = pooled_r2(reference_predictions(inputs, means), test(means))[0]
        assert pair.r2 == pytest.approx(expected_r2, abs=2e-4)
        assert pair.r2_posterior_mean == pytest.approx(expected_means, abs=2e-4)
    expected_mse = mse(reference_predictions(hidden, truth), test(truth))
    assert scores.truth_mse == pytest.approx(expected_mse, rel=1e-4)
    # The scores a probe on these statistics gets from probes.linear_probe itself (as probing.py's).
    z = jnp.concatenate([hidden, features], axis=-1)
    moments = probes.split_moments(z.swapaxes(0, 1).reshape(-1, z.shape[-1]), [n * 20 for n in SIZES])
    linear = probes.linear_probe(moments, slice(0, 4), slice(4, 6))
    assert scores.hidden.r2_posterior_mean == pytest.approx(float(linear.test.r2), abs=1e-5)


def test_within_time_scores_equal_a_ridge_with_free_one_hot_time_coefficients(recorded):
    history, replayed = recorded["history"], recorded["replayed"]
    scores = control_scores.network_scores(replayed.memory, HIDDEN, history.features, history.truth, SIZES)
    features, means = history.features, history.features[..., :2]
    expected = within_time_r2(reference_predictions(replayed.hidden, features, with_time=True), features)
    expected_means = within_time_r2(reference_predictions(replayed.hidden, means, with_time=True), means)
    assert scores.within_time.r2 == pytest.approx(expected, abs=2e-4)
    assert scores.within_time.r2_posterior_mean == pytest.approx(expected_means, abs=2e-4)


def test_the_memory_equals_hidden_alone_when_the_rest_copies_the_hidden_state(recorded):
    # [h, h] with ridge r is h with ridge r / 2; at a vanishing ridge both are least squares.
    history, hidden = recorded["history"], recorded["replayed"].hidden
    scores = control_scores.network_scores(
        jnp.concatenate([hidden, hidden], -1),
        HIDDEN,
        history.features,
        history.truth,
        SIZES,
        ridge_grid=(1e-6,),
    )
    assert scores.memory.r2 == pytest.approx(scores.hidden.r2, abs=1e-4)
    assert scores.memory.r2_posterior_mean == pytest.approx(scores.hidden.r2_posterior_mean, abs=1e-4)


# ---------------------------------------------------------------------------------------------
# Time partialled out: known answers on synthetic representations


def synthetic(seed: int = 0, num_steps: int = 20, num_tasks: int = NUM_TASKS):
    """Steps ``t [T, N, 1]`` and independent standard normals ``[T, N, 4]``."""
    rng = np.random.default_rng(seed)
    steps = np.broadcast_to(np.arange(num_steps, dtype=np.float32)[:, None, None], (num_steps, num_tasks, 1))
    return steps, rng.standard_normal((num_steps, num_tasks, 4)).astype(np.float32)


def synthetic_scores(hidden, features):
    truth = features[..., :2]
    memory = jnp.concatenate([jnp.asarray(hidden)] * 2, axis=-1)  # [hidden, a copy of it]
    return control_scores.network_scores(memory, hidden.shape[-1], jnp.asarray(features), truth, SIZES)


def test_a_target_of_time_alone_is_decoded_pooled_and_undefined_within_time():
    steps, noise = synthetic()
    hidden = np.concatenate([steps / 20, noise[..., :3]], axis=-1)  # time plus three irrelevant units
    features = np.concatenate([0.1 + 0.03 * steps, 1 - 0.02 * steps, 0.5 + 0 * steps, -steps / 7], axis=-1)
    scores = synthetic_scores(hidden, features)
    assert scores.hidden.r2 == pytest.approx(1.0, abs=1e-4)
    assert scores.per_dimension[:2] == pytest.approx([1.0, 1.0], abs=1e-4)
    assert scores.per_dimension[2] is None  # a constant: nothing to explain
    # Nothing is left of any target once time is partialled out: no R^2, rather than noise.
    assert scores.within_time == control_scores.ControlScores(r2=None, r2_posterior_mean=None)
    assert scores.to_dict()["within_time"] == {"r2": None, "r2_posterior_mean": None}


def test_a_representation_of_time_alone_decodes_nothing_within_time():
    steps, noise = synthetic()
    other = synthetic(seed=1)[1]  # independent of the representation
    hidden = np.concatenate([steps / 20, (steps / 20) ** 2, noise[..., :2]], axis=-1)
    features = np.sin(steps / 4) + 0.3 * other  # mostly time, some variation unrelated to hidden
    scores = synthetic_scores(hidden, features)
    assert scores.hidden.r2 > 0.7
    assert abs(scores.within_time.r2) < 0.05
    assert abs(scores.within_time.r2_posterior_mean) < 0.05


def test_a_target_linear_in_the_within_step_part_of_hidden_is_fully_decoded_within_time():
    steps, noise = synthetic()
    hidden = np.concatenate([np.sin(steps / 3) + noise[..., :1], np.cos(steps / 5) * noise[..., 1:]], -1)
    residual = hidden - hidden[:, : SIZES[0] + SIZES[1]].mean(axis=1, keepdims=True)
    mixing = np.random.default_rng(2).standard_normal((4, 4)).astype(np.float32)
    features = residual @ mixing + np.exp(steps / 10)  # + any function of time
    scores = synthetic_scores(hidden, features)
    assert scores.within_time.r2 == pytest.approx(1.0, abs=1e-4)
    assert scores.within_time.r2_posterior_mean == pytest.approx(1.0, abs=1e-4)
    assert scores.hidden.r2 < 0.9  # without time the same probe misses the time trend


# ---------------------------------------------------------------------------------------------
# Input-only baseline


def hand_built_lags(history, lags: int) -> np.ndarray:
    """``[T, N, lags * 3]``: for j = 0 .. lags - 1, [one-hot of a[t-j-1], r[t-j-1]] (the inputs of
    step t - j of a 2-armed bandit, which has no observation), zeros where t - j - 1 < 0."""
    actions, rewards = np.asarray(history.actions), np.asarray(history.rewards)
    num_steps, num_tasks = actions.shape
    built = np.zeros((num_steps, num_tasks, lags * 3))
    for t in range(num_steps):
        for lane in range(num_tasks):
            for j in range(lags):
                if t - j - 1 >= 0:
                    built[t, lane, 3 * j + actions[t - j - 1, lane]] = 1.0
                    built[t, lane, 3 * j + 2] = rewards[t - j - 1, lane]
    return built


@pytest.mark.parametrize("lags", [1, 3])
def test_lagged_inputs_equal_a_hand_built_matrix(lags):
    tasks = jax.vmap(FAMILY.sample_task)(jax.random.split(jax.random.key(7), 3))
    history = rollout(FAMILY, AGENT, AGENT.init(jax.random.key(8)), jax.random.key(9), tasks, num_steps=6)
    built = control_scores.lagged_inputs(AGENT, history, lags)
    assert built.shape == (6, 3, 3 * lags)
    np.testing.assert_array_equal(np.asarray(built), hand_built_lags(history, lags))


def test_input_only_with_one_lag_predicts_the_prior_at_the_first_step(recorded):
    history = recorded["history"]
    features = np.asarray(history.features)
    np.testing.assert_allclose(features[0], np.broadcast_to(PRIOR, features[0].shape), atol=1e-6)
    inputs = control_scores.lagged_inputs(AGENT, history, 1)
    _, predictions = control_scores.input_only_scores(inputs, history.features, history.truth, SIZES)
    assert predictions.shape == (20, SIZES[2], 4)
    # Every task has the prior at t = 0 and the same (empty) input there: the step alone says it.
    np.testing.assert_allclose(np.asarray(predictions[0]), np.broadcast_to(PRIOR, (SIZES[2], 4)), atol=1e-6)


@pytest.mark.parametrize("lags", [1, 5])
def test_input_only_scores_equal_a_ridge_on_lags_and_free_one_hot_time(recorded, lags):
    history = recorded["history"]
    features, truth, means = history.features, history.truth, history.features[..., :2]
    inputs = hand_built_lags(history, lags)
    scores, _ = control_scores.input_only_scores(jnp.asarray(inputs, jnp.float32), features, truth, SIZES)
    test = lambda array: blocks(array)[2]  # noqa: E731
    predict = lambda y, **kwargs: reference_predictions(inputs, y, with_time=True, **kwargs)  # noqa: E731

    assert scores.r2 == pytest.approx(pooled_r2(predict(features), test(features))[0], abs=2e-4)
    assert scores.r2_posterior_mean == pytest.approx(pooled_r2(predict(means), test(means))[0], abs=2e-4)
    per_column = predict(features, per_column=True)
    np.testing.assert_allclose(scores.per_dimension, pooled_r2(per_column, test(features))[1], atol=2e-4)
    assert scores.within_time.r2 == pytest.approx(within_time_r2(predict(features), features), abs=2e-4)
    assert scores.within_time.r2_posterior_mean == pytest.approx(
        within_time_r2(predict(means), means), abs=2e-4
    )
    assert scores.truth_mse == pytest.approx(mse(predict(truth), test(truth)), rel=1e-4)


# ---------------------------------------------------------------------------------------------
# Truth: Bayes minimum, prior, decoding the truth


def test_truth_baselines_equal_plain_means_over_the_test_lanes(recorded):
    history = recorded["history"]
    report = controls.probe_controls(
        FAMILY, AGENT, {"trained": recorded["params"]}, history, SIZES, input_lags=(2,)
    )
    truth_train, _, truth_test = blocks(history.truth)
    posterior_mean = blocks(history.features)[2][..., :2]
    assert report.truth.bayes_minimum == pytest.approx(np.mean((truth_test - posterior_mean) ** 2), rel=1e-5)
    prior = np.mean((truth_test - truth_train.mean(axis=(0, 1))) ** 2)
    assert report.truth.prior == pytest.approx(prior, rel=1e-5)
    assert report.truth.bayes_minimum < report.truth.prior


def test_a_state_that_is_the_belief_decodes_the_truth_at_the_bayes_minimum():
    history = record(400, seed=5)["history"]
    sizes = (200, 100, 100)
    baselines = control_scores.truth_baselines(history.features, history.truth, sizes)
    noise = jax.random.normal(jax.random.key(0), history.features.shape)
    mse = {}
    for name, state in (("belief", history.features), ("noise", noise)):
        memory = jnp.concatenate([state, state], axis=-1)
        scores = control_scores.network_scores(
            memory, state.shape[-1], history.features, history.truth, sizes
        )
        mse[name] = scores.truth_mse
    gap = baselines.prior - baselines.bayes_minimum
    assert mse["belief"] == pytest.approx(baselines.bayes_minimum, abs=0.02 * gap)
    assert mse["noise"] == pytest.approx(baselines.prior, abs=0.02 * gap)


# ---------------------------------------------------------------------------------------------
# Gridworld widths: XLA's CPU runtime wedged on one program holding all the probes' solves

WIDE = """
import jax
from metabelief.experiments import control_scores
keys = jax.random.split(jax.random.key(0), 3)
hidden, cell, features = (jax.random.normal(k, (20, 60, d)) for k, d in zip(keys, (48, 48, 24)))
for _ in range(3):
    memory = jax.numpy.concatenate([hidden, cell], axis=-1)
    print(control_scores.network_scores(memory, 48, features, features, (30, 15, 15)).hidden.r2)
"""


def test_probes_of_wide_states_and_many_targets_finish():
    # In a subprocess, so a wedged runtime fails the test rather than hanging the suite.
    done = subprocess.run(
        [sys.executable, "-c", WIDE], timeout=120, capture_output=True, text=True, env=os.environ.copy()
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.split()) == 3


# ---------------------------------------------------------------------------------------------
# The report


def test_probe_controls_report_is_json_numbers_in_the_documented_shape(recorded):
    history = recorded["history"]
    networks = {"trained": recorded["params"], "untrained": recorded["other"]}
    typed = controls.probe_controls(FAMILY, AGENT, networks, history, SIZES, input_lags=(5, 1))
    report = typed.to_dict()
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    assert list(report) == [field.name for field in dataclasses.fields(controls.ProbeControls)]
    assert report["split_sizes"] == list(SIZES) and report["input_lags"] == [1, 5]
    assert set(report["per_dimension"]) == set(networks)
    assert all(len(values) == 4 for values in report["per_dimension"].values())
    # One input-only baseline per lag, ascending: named by a field, not by a key built from k.
    assert [scores["lags"] for scores in report["input_only"]] == [1, 5]
    assert all(
        set(scores) == {"lags", "r2", "r2_posterior_mean", "per_dimension"} for scores in report["input_only"]
    )
    assert all(len(scores["per_dimension"]) == 4 for scores in report["input_only"])
    assert set(report["within_time"]) == {"trained", "untrained", "input_only"}
    assert set(report["truth"]["mse"]) == set(report["within_time"])
    assert set(report["truth"]) == {"bayes_minimum", "prior", "mse"}
    assert set(report["no_learning"]) == {"traces", "running_sums"}
    assert set(report["mlp"]) == {"input_only", "traces", "running_sums"}  # no key: not fitted
    assert all(value is None for value in report["mlp"].values())
    assert set(report["next_outcome"]["excess"]) == set(networks) | set(report["mlp"])
    # The untrained network replayed on the trained one's history is what network_scores sees (up to
    # float rounding: the report pads every probe input with zero columns to the widest).
    replayed = recorded["replayed"]
    untrained = control_scores.network_scores(replayed.memory, HIDDEN, history.features, history.truth, SIZES)
    close = functools.partial(pytest.approx, abs=1e-6)
    assert report["per_dimension"]["untrained"] == close(list(untrained.per_dimension))
    assert report["hidden_and_memory"]["untrained"]["hidden"] == close(untrained.hidden.to_dict())
    assert report["within_time"]["untrained"] == close(untrained.within_time.to_dict())
    assert report["truth"]["mse"]["untrained"] == close(untrained.truth_mse)
    pooled = {name: report["hidden_and_memory"][name]["hidden"]["r2_posterior_mean"] for name in networks}
    within = {name: scores["r2_posterior_mean"] for name, scores in report["within_time"].items()}
    headline = report["headline"]
    assert headline["trained_minus_untrained"] == pytest.approx(pooled["trained"] - pooled["untrained"])
    assert headline["trained_minus_input_only"] == pytest.approx(
        pooled["trained"] - report["input_only"][-1]["r2_posterior_mean"]
    )
    assert headline["within_time_trained_minus_untrained"] == pytest.approx(
        within["trained"] - within["untrained"]
    )
    assert headline["within_time_trained_minus_input_only"] == pytest.approx(
        within["trained"] - within["input_only"]
    )


def test_the_headline_without_an_untrained_network_leaves_its_differences_undefined(recorded):
    history = recorded["history"]
    report = controls.probe_controls(FAMILY, AGENT, {"trained": recorded["params"]}, history, SIZES)
    headline = report.headline
    assert headline.trained_minus_untrained is None and headline.within_time_trained_minus_untrained is None
    assert headline.trained_minus_input_only == pytest.approx(
        report.hidden_and_memory["trained"].hidden.r2_posterior_mean - report.input_only[-1].r2_posterior_mean
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sizes=(20, 8, 11)), "sizes"),
        (dict(sizes=(32, 8, 0)), "sizes"),
        (dict(input_lags=()), "input_lags"),
        (dict(input_lags=(0,)), "input_lags"),
        (dict(networks={"input_only": None}), "networks"),
        (dict(networks={"running_sums": None}), "networks"),
        (dict(trace_time_constants=(4.0, 0.0)), "trace_time_constants"),
        (dict(trace_time_constants=(float("inf"),)), "trace_time_constants"),
        (dict(mlp_steps=0), "mlp_steps"),
        (dict(networks={}), "networks"),
    ],
)
def test_bad_arguments_raise_a_value_error_naming_them(recorded, kwargs, message):
    arguments = dict(networks={"trained": recorded["params"]}, sizes=SIZES) | kwargs
    networks, sizes = arguments.pop("networks"), arguments.pop("sizes")
    with pytest.raises(ValueError, match=message):
        controls.probe_controls(FAMILY, AGENT, networks, recorded["history"], sizes, **arguments)


def test_nan_probe_inputs_raise_a_value_error(recorded):
    history = recorded["history"]
    features = history.features.at[3, 5, 1].set(jnp.nan)
    with pytest.raises(ValueError, match="NaN"):
        control_scores.network_scores(history.memory, HIDDEN, features, history.truth, SIZES)
