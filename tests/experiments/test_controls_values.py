"""Every figure of ``probe_controls``' report recomputed apart from the report, in float64 NumPy.

The independent reference: ridge regression solved as an augmented least-squares problem on the
sample rows (``np.linalg.lstsq`` on ``[centred X; sqrt(penalty) I]``, never from statistics), the
strength chosen by the protocol written out here (fitted on the training lanes for each strength,
chosen on the validation lanes by pooled R^2 or by each column's, refitted on training + validation
lanes, scored on the test lanes), time partialled out by subtracting per-step means in NumPy (the
training lanes' while choosing, the training + validation lanes' for the refit and the test), the
input-only baseline's lagged inputs built by hand from the recorded actions and rewards, and the
truth baselines and the headline differences from MSEs and R^2s computed
here. Hand-built cases pin the selection itself: which strength must win, pooled and per column.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief.agents import agent_for
from metabelief.experiments import control_scores, controls
from metabelief.rollout import replay_jit, rollout

FAMILY = metabelief.make("bernoulli_bandit", num_arms=2, horizon=10)  # features: 2 means, 2 stds; truth: 2
AGENT = agent_for(FAMILY, hidden_size=4)
SIZES = (10, 6, 8)  # uneven, so a block boundary off by one shows
LAGS = (3, 1)  # given unsorted: the report sorts them and uses the largest for the other controls
GRID = (1e-4, 1e-2, 1.0)
ATOL = 3e-4  # float32 statistics against float64 rows


# ---------------------------------------------------------------------------------------------
# float64 reference


def lanes(array, sizes=SIZES) -> list[np.ndarray]:
    """``[T, N, d]`` -> float64 ``[T, n, d]`` blocks of consecutive lanes: train, validation, test."""
    array = np.asarray(array, np.float64)
    a, b = sizes[0], sizes[0] + sizes[1]
    return [array[:, :a], array[:, a:b], array[:, b:]]


def flat(array: np.ndarray) -> np.ndarray:
    return array.reshape(-1, array.shape[-1])


def ridge(x: np.ndarray, y: np.ndarray, strength: float):
    """Ridge of rows ``y`` on rows ``x``, intercept free, penalty ``strength * mean variance of x``
    (times the count): least squares on the centred rows stacked over ``sqrt(penalty) * I``."""
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - x_mean, y - y_mean
    penalty = strength * np.sum(xc**2) / x.shape[1]
    design = np.vstack([xc, np.sqrt(penalty) * np.eye(x.shape[1])])
    weights = np.linalg.lstsq(design, np.vstack([yc, np.zeros((x.shape[1], y.shape[1]))]), rcond=None)[0]
    return lambda new: new @ weights + (y_mean - x_mean @ weights)


def r2_columns(predictions: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """(R^2 pooled over the columns that vary, R^2 of each, NaN where constant), rows ``[n, d]``."""
    errors = np.sum((targets - predictions) ** 2, axis=0)
    total = np.sum((targets - targets.mean(axis=0)) ** 2, axis=0)
    varies = total > 1e-9 * len(targets) * (1.0 + targets.mean(axis=0) ** 2)
    per_column = np.where(varies, 1.0 - errors / np.where(varies, total, 1.0), np.nan)
    pooled = 1.0 - errors[varies].sum() / total[varies].sum() if varies.any() else np.nan
    return pooled, per_column


def per_step_residuals(x, y, sizes=SIZES):
    """Inputs and targets less per-step means: (train, validation) about the training lanes' means,
    (train + validation, test) about the train + validation lanes' means; and the latter means."""
    (x_train, x_val, x_test), (y_train, y_val, y_test) = lanes(x, sizes), lanes(y, sizes)
    x_fit, y_fit = np.concatenate([x_train, x_val], 1), np.concatenate([y_train, y_val], 1)
    x_t, y_t = x_train.mean(1, keepdims=True), y_train.mean(1, keepdims=True)
    x_f, y_f = x_fit.mean(1, keepdims=True), y_fit.mean(1, keepdims=True)
    select = (x_train - x_t, y_train - y_t, x_val - x_t, y_val - y_t)
    refit = (x_fit - x_f, y_fit - y_f, x_test - x_f, y_test - y_f)
    return select, refit, (x_f, y_f)


def protocol(x, y, *, per_step=False, per_column=False, grid=GRID, sizes=SIZES) -> dict:
    """The probe protocol on ``x [T, N, dx] -> y [T, N, dy]``. Returns the chosen strengths (an index
    of ``grid`` per column), the validation R^2 per strength and the test figures: ``r2`` /
    ``r2_per_column`` / ``mse`` of the predictions of ``y`` itself, and with ``per_step``
    ``within_r2`` of the residuals (predictions ``mean_y(t) + ridge(x - mean_x(t))``)."""
    if per_step:
        (x_train, y_train, x_val, y_val), (x_fit, y_fit, x_test, y_test_res), (x_f, y_f) = per_step_residuals(
            x, y, sizes
        )
    else:
        (x_train, x_val, x_test), (y_train, y_val, _) = lanes(x, sizes), lanes(y, sizes)
        x_fit, y_fit = np.concatenate([x_train, x_val], 1), np.concatenate([y_train, y_val], 1)
    validation = np.array(
        [r2_columns(ridge(flat(x_train), flat(y_train), s)(flat(x_val)), flat(y_val)) for s in grid],
        dtype=object,
    )
    pooled = np.array([float(v) for v in validation[:, 0]])
    columns = np.stack(validation[:, 1])  # [R, dy]
    if per_column:
        chosen = np.argmax(np.where(np.isnan(columns), -np.inf, columns), axis=0)
    else:
        chosen = np.full(y.shape[-1], np.nanargmax(pooled))
    refits = [ridge(flat(x_fit), flat(y_fit), s)(flat(x_test)) for s in grid]
    predicted = np.stack([refits[r][:, c] for c, r in enumerate(chosen)], axis=-1)  # rows of the test lanes
    target = flat(lanes(y, sizes)[2])
    result = dict(chosen=chosen, validation=pooled, validation_columns=columns)
    if per_step:
        result["within_r2"] = r2_columns(predicted, flat(y_test_res))[0]
        predicted = predicted + flat(np.broadcast_to(y_f, lanes(y, sizes)[2].shape))
    result["r2"], result["r2_per_column"] = r2_columns(predicted, target)
    result["mse"] = float(np.mean((predicted - target) ** 2))
    return result


def hand_built_lags(actions, rewards, lags: int, num_actions: int = 2) -> np.ndarray:
    """``[T, N, lags * (num_actions + 1)]``: block j holds [one-hot a(t - j - 1), r(t - j - 1)], zeros
    where t - j - 1 < 0 (the bandit's inputs: no observation, no time)."""
    actions, rewards = np.asarray(actions), np.asarray(rewards, np.float64)
    num_steps, num_lanes = actions.shape
    width = num_actions + 1
    built = np.zeros((num_steps, num_lanes, lags * width))
    for j in range(lags):
        for t in range(j + 1, num_steps):
            built[t, np.arange(num_lanes), j * width + actions[t - j - 1]] = 1.0
            built[t, :, j * width + num_actions] = rewards[t - j - 1]
    return built


# ---------------------------------------------------------------------------------------------
# One report, recomputed


@functools.cache
def recorded():
    """A rollout of one initialisation, the report of it and of another one replayed on it, and
    both replayed memories (``replay`` is the agent's own unroll, not part of the controls)."""
    params = {"trained": AGENT.init(jax.random.key(0)), "untrained": AGENT.init(jax.random.key(1))}
    tasks = jax.vmap(FAMILY.sample_task)(jax.random.split(jax.random.key(2), sum(SIZES)))
    history = jax.jit(rollout, static_argnums=(0, 1))(
        FAMILY, AGENT, params["trained"], jax.random.key(3), tasks
    )
    report = controls.probe_controls(FAMILY, AGENT, params, history, SIZES, input_lags=LAGS, ridge_grid=GRID)
    memory = {name: np.asarray(replay_jit(FAMILY, AGENT, p, history).memory) for name, p in params.items()}
    return history, report, memory, params


@functools.cache
def expected() -> dict:
    """Every figure of the report, computed here."""
    history, _, memory, _ = recorded()
    features, truth = np.asarray(history.features), np.asarray(history.truth)
    means = features[..., :2]
    out = {"network": {}, "input_only": {}}
    for name, both in memory.items():
        hidden = both[..., : AGENT.hidden_size]
        out["network"][name] = dict(
            hidden=(protocol(hidden, features)["r2"], protocol(hidden, means)["r2"]),
            memory=(protocol(both, features)["r2"], protocol(both, means)["r2"]),
            per_dimension=protocol(hidden, features, per_column=True)["r2_per_column"],
            within=(
                protocol(hidden, features, per_step=True)["within_r2"],
                protocol(hidden, means, per_step=True)["within_r2"],
            ),
            truth_mse=protocol(hidden, truth)["mse"],
        )
    for lags in sorted(LAGS):
        inputs = hand_built_lags(history.actions, history.rewards, lags)
        fit = functools.partial(protocol, inputs, per_step=True)
        out["input_only"][lags] = dict(
            r2=fit(features)["r2"],
            r2_posterior_mean=fit(means)["r2"],
            per_dimension=fit(features, per_column=True)["r2_per_column"],
            within=(fit(features)["within_r2"], fit(means)["within_r2"]),
            truth_mse=fit(truth)["mse"],
        )
    truth_train, _, truth_test = lanes(truth)
    out["bayes_minimum"] = np.mean((truth_test - lanes(means)[2]) ** 2)
    out["prior"] = np.mean((truth_test - truth_train.mean(axis=(0, 1))) ** 2)
    return out


def test_report_per_dimension_hidden_and_memory_equal_a_numpy_ridge_on_each_replayed_state():
    _, report, _, _ = recorded()
    for name, values in expected()["network"].items():
        np.testing.assert_allclose(report.per_dimension[name], values["per_dimension"], atol=ATOL)
        scores = report.hidden_and_memory[name]
        assert (scores.hidden.r2, scores.hidden.r2_posterior_mean) == pytest.approx(
            values["hidden"], abs=ATOL
        )
        assert (scores.memory.r2, scores.memory.r2_posterior_mean) == pytest.approx(
            values["memory"], abs=ATOL
        )
    # The two networks and the two states are told apart: a swap of either would show.
    networks = expected()["network"]
    assert abs(networks["trained"]["hidden"][1] - networks["untrained"]["hidden"][1]) > 0.02
    assert abs(networks["trained"]["memory"][1] - networks["trained"]["hidden"][1]) > 0.02


def test_report_input_only_baselines_equal_a_numpy_ridge_on_hand_built_lags_less_per_step_means():
    _, report, _, _ = recorded()
    assert report.input_lags == (1, 3)
    assert [baseline.lags for baseline in report.input_only] == [1, 3]
    for baseline in report.input_only:
        values = expected()["input_only"][baseline.lags]
        assert baseline.r2 == pytest.approx(values["r2"], abs=ATOL)
        assert baseline.r2_posterior_mean == pytest.approx(values["r2_posterior_mean"], abs=ATOL)
        np.testing.assert_allclose(baseline.per_dimension, values["per_dimension"], atol=ATOL)
    one, three = (expected()["input_only"][k] for k in (1, 3))
    assert abs(one["r2"] - one["r2_posterior_mean"]) > 0.02  # the two fields are told apart
    assert abs(one["r2_posterior_mean"] - three["r2_posterior_mean"]) > 0.01  # and the two lags


def test_report_within_time_equals_a_ridge_on_per_step_demeaned_arrays_for_networks_and_the_largest_lag():
    _, report, _, _ = recorded()
    values = expected()
    for name, network in values["network"].items():
        within = report.within_time[name]
        assert (within.r2, within.r2_posterior_mean) == pytest.approx(network["within"], abs=ATOL)
    within = report.within_time[controls.INPUT_ONLY]
    assert (within.r2, within.r2_posterior_mean) == pytest.approx(values["input_only"][3]["within"], abs=ATOL)
    assert abs(values["input_only"][3]["within"][1] - values["input_only"][1]["within"][1]) > 0.01


def test_report_truth_decoding_equals_independent_mses():
    _, report, _, _ = recorded()
    values = expected()
    assert report.truth.bayes_minimum == pytest.approx(values["bayes_minimum"], rel=1e-5)
    assert report.truth.prior == pytest.approx(values["prior"], rel=1e-5)
    mse = {name: network["truth_mse"] for name, network in values["network"].items()}
    mse[controls.INPUT_ONLY] = values["input_only"][3]["truth_mse"]
    assert set(report.truth.mse) == set(mse)
    for name, value in mse.items():
        assert report.truth.mse[name] == pytest.approx(value, rel=1e-4)
    # Decoding the truth from the hidden state is not decoding it from the whole memory or from one lag.
    _, _, memory, _ = recorded()
    truth = np.asarray(recorded()[0].truth)
    assert abs(protocol(memory["trained"], truth)["mse"] - mse["trained"]) > 1e-3 * mse["trained"]
    lag_one = values["input_only"][1]["truth_mse"]
    assert abs(lag_one - mse[controls.INPUT_ONLY]) > 1e-3 * lag_one


def test_report_headline_equals_differences_of_independently_computed_r2():
    _, report, _, _ = recorded()
    values = expected()
    trained, untrained = values["network"]["trained"], values["network"]["untrained"]
    largest = values["input_only"][3]
    headline = report.headline
    assert headline.trained_minus_untrained == pytest.approx(
        trained["hidden"][1] - untrained["hidden"][1], abs=ATOL
    )
    assert headline.trained_minus_input_only == pytest.approx(
        trained["hidden"][1] - largest["r2_posterior_mean"], abs=ATOL
    )
    assert headline.within_time_trained_minus_untrained == pytest.approx(
        trained["within"][1] - untrained["within"][1], abs=ATOL
    )
    assert headline.within_time_trained_minus_input_only == pytest.approx(
        trained["within"][1] - largest["within"][1], abs=ATOL
    )
    assert abs(headline.trained_minus_untrained) > 0.02  # a sign flip would show


def test_headline_differences_are_exactly_zero_for_the_same_network_under_both_names():
    history, _, _, params = recorded()
    networks = {"trained": params["trained"], "untrained": params["trained"]}
    report = controls.probe_controls(
        FAMILY, AGENT, networks, history, SIZES, input_lags=(1,), ridge_grid=GRID
    )
    assert report.headline.trained_minus_untrained == 0.0
    assert report.headline.within_time_trained_minus_untrained == 0.0
    assert report.truth.mse["trained"] == report.truth.mse["untrained"]
    assert report.next_outcome.excess["trained"] == report.next_outcome.excess["untrained"]


@pytest.mark.parametrize(
    "trained, untrained, input_only, expected_differences",
    [
        (0.9, 0.2, 0.5, (0.7, 0.4)),
        (0.1, 0.6, 0.3, (-0.5, -0.2)),  # a trained network worse than its controls: negative
        (0.4, None, 0.4, (None, 0.0)),
    ],
)
def test_headline_known_answers(trained, untrained, input_only, expected_differences):
    pooled = {"trained": trained, "untrained": untrained, controls.INPUT_ONLY: input_only}
    within = {"trained": trained / 2, "untrained": None if untrained is None else untrained / 2}
    within[controls.INPUT_ONLY] = input_only / 2
    mlp = {"trained": trained / 4, controls.INPUT_ONLY: input_only / 4, controls.RUNNING_SUMS: 0.0}
    headline = controls._headline(pooled, within, mlp)
    assert headline.mlp.trained_minus_input_only == pytest.approx(expected_differences[1] / 4)
    assert headline.mlp.trained_minus_running_sums == pytest.approx(trained / 4)
    assert headline.mlp.trained_minus_traces is None and headline.trained_minus_traces is None
    half = tuple(None if d is None else d / 2 for d in expected_differences)
    assert (headline.trained_minus_untrained, headline.trained_minus_input_only) == pytest.approx(
        expected_differences
    )
    assert (
        headline.within_time_trained_minus_untrained,
        headline.within_time_trained_minus_input_only,
    ) == pytest.approx(half)


# ---------------------------------------------------------------------------------------------
# Selection: hand-built cases where the chosen strength decides the score

# The shapes of the report's lag-3 input-only probe and of its networks, and as many strengths as
# GRID, so these cases run on the programs the report compiled.
NUM_STEPS, NUM_LANES = FAMILY.horizon, sum(SIZES)
SELECT_GRID = (1e-6, 1.0, 30.0)


def selection_case(seed: int, signal_inputs: int = 9):
    """Inputs ``[T, N, 9]``: independent normals plus a function of time. Targets ``[T, N, 4]``, each
    plus a function of time: column 0 exactly linear in the first ``signal_inputs`` inputs (the
    smallest strength must win it), column 1 noise of its own (the largest strength, which predicts
    its mean, must win it), column 2 a mixture of the two, column 3 noise that grows with time."""
    rng = np.random.default_rng(seed)
    steps = np.arange(NUM_STEPS, dtype=np.float64)[:, None, None] * np.ones((1, NUM_LANES, 1))
    x = rng.standard_normal((NUM_STEPS, NUM_LANES, 9)) + np.sin(steps)
    signal = x[..., :signal_inputs] @ rng.standard_normal((signal_inputs, 1))
    noise, other = rng.standard_normal((2, NUM_STEPS, NUM_LANES, 1))
    y = np.concatenate(
        [signal + steps / 3, 2 * noise - steps / 5, signal - noise + np.cos(steps), other * (1 + steps / 10)],
        axis=-1,
    )
    return x.astype(np.float32), y.astype(np.float32)


# width: the inputs padded with zero columns (as probe_controls pads every probe input to the widest)
# score as the inputs alone, against the same float64 protocol on the unpadded inputs.
@pytest.mark.parametrize("width", [None, 13])
def test_input_only_choices_by_pooled_and_by_each_column_equal_the_numpy_protocol(width):
    x, y = selection_case(seed=1)
    truth = y[..., :2]
    scores, predictions = control_scores.input_only_scores(
        jnp.asarray(x), jnp.asarray(y), jnp.asarray(truth), SIZES, ridge_grid=SELECT_GRID, width=width
    )
    fit = functools.partial(protocol, x, per_step=True, grid=SELECT_GRID)
    by_column = fit(y, per_column=True)
    assert list(by_column["chosen"]) == [0, 2, 0, 2]  # the case is what it claims: a choice per column
    np.testing.assert_allclose(scores.per_dimension, by_column["r2_per_column"], atol=ATOL)
    pooled = fit(y)
    assert scores.r2 == pytest.approx(pooled["r2"], abs=ATOL)
    assert scores.within_time.r2 == pytest.approx(pooled["within_r2"], abs=ATOL)
    means = fit(truth)
    assert scores.r2_posterior_mean == pytest.approx(means["r2"], abs=ATOL)
    assert scores.within_time.r2_posterior_mean == pytest.approx(means["within_r2"], abs=ATOL)
    assert scores.truth_mse == pytest.approx(means["mse"], rel=1e-4)
    # The choice decides the score: the opposite end of the grid would score these columns apart.
    for column in range(2):
        other = SELECT_GRID[2 - by_column["chosen"][column]]
        alternative = fit(y[..., column : column + 1], grid=(other,))["r2"]
        assert abs(by_column["r2_per_column"][column] - alternative) > 0.05
    # Predictions: the per-step means of the fitting lanes plus the probe of the residual inputs.
    assert predictions.shape == (NUM_STEPS, SIZES[2], 4)
    test_rows = flat(lanes(y)[2])
    assert r2_columns(flat(np.asarray(predictions, np.float64)), test_rows)[0] == pytest.approx(
        pooled["r2"], abs=ATOL
    )


@pytest.mark.parametrize("width", [None, 13])
def test_network_choices_by_pooled_and_by_each_column_equal_the_numpy_protocol(width):
    x, y = selection_case(seed=1, signal_inputs=4)
    memory, hidden = x[..., :8], x[..., :4]  # the readout is the first half of the memory
    truth = y[..., :2]
    scores = control_scores.network_scores(
        jnp.asarray(memory), 4, jnp.asarray(y), jnp.asarray(truth), SIZES, ridge_grid=SELECT_GRID, width=width
    )
    fit = functools.partial(protocol, grid=SELECT_GRID)
    by_column = fit(hidden, y, per_column=True)
    assert by_column["chosen"][0] == 0
    np.testing.assert_allclose(scores.per_dimension, by_column["r2_per_column"], atol=ATOL)
    assert scores.hidden.r2 == pytest.approx(fit(hidden, y)["r2"], abs=ATOL)
    assert scores.hidden.r2_posterior_mean == pytest.approx(fit(hidden, truth)["r2"], abs=ATOL)
    assert scores.memory.r2 == pytest.approx(fit(memory, y)["r2"], abs=ATOL)
    assert scores.memory.r2_posterior_mean == pytest.approx(fit(memory, truth)["r2"], abs=ATOL)
    within = fit(hidden, y, per_step=True)["within_r2"], fit(hidden, truth, per_step=True)["within_r2"]
    assert (scores.within_time.r2, scores.within_time.r2_posterior_mean) == pytest.approx(within, abs=ATOL)
    assert scores.truth_mse == pytest.approx(fit(hidden, truth)["mse"], rel=1e-4)


def test_one_report_compiles_each_probe_program_once_for_all_its_input_widths():
    """The networks' memories (8 wide), the lagged inputs (3 and 9), the traces (24) and the running
    sums (6) are padded to one width: each probe program is compiled once, not once per width."""
    programs = [
        control_scores._network_moments,
        control_scores._input_moments,
        control_scores._ridge_path,
        control_scores._choose,
        control_scores._input_predictions,
    ]
    for program in programs:
        program.clear_cache()
    history, _, _, params = recorded()
    controls.probe_controls(FAMILY, AGENT, params, history, SIZES, input_lags=LAGS, ridge_grid=GRID)
    assert [program._cache_size() for program in programs] == [1] * len(programs)


def test_padding_is_checked():
    x, y = selection_case(seed=1)
    with pytest.raises(ValueError, match="width"):
        control_scores.input_only_scores(
            jnp.asarray(x), jnp.asarray(y), jnp.asarray(y[..., :2]), SIZES, width=8
        )


# ---------------------------------------------------------------------------------------------
# Known answers of the input-only baseline and the truth baselines


def test_input_only_r2_is_one_for_targets_linear_in_the_inputs_and_near_zero_within_time_for_noise():
    x, y = selection_case(seed=2)
    rng = np.random.default_rng(3)
    steps = np.arange(NUM_STEPS)[:, None, None] * np.ones((1, NUM_LANES, 2))
    unrelated = np.exp(steps / 4) + 0.2 * rng.standard_normal(steps.shape)  # time and noise of its own
    signal = np.concatenate([y[..., :1], x[..., 3:4] - 2 * x[..., 5:6]], axis=-1)
    grid = (1e-6,) * len(GRID)
    for means, others in ((signal, unrelated), (unrelated, signal)):
        features = np.concatenate([means, others], axis=-1).astype(np.float32)
        scores, _ = control_scores.input_only_scores(
            jnp.asarray(x), jnp.asarray(features), jnp.asarray(features[..., :2]), SIZES, ridge_grid=grid
        )
        reference = protocol(x, features[..., :2], per_step=True, grid=grid)
        assert scores.r2_posterior_mean == pytest.approx(reference["r2"], abs=ATOL)
        assert scores.within_time.r2_posterior_mean == pytest.approx(reference["within_r2"], abs=ATOL)
        if means is signal:
            assert scores.r2_posterior_mean == pytest.approx(1.0, abs=1e-4)
            assert scores.within_time.r2_posterior_mean == pytest.approx(1.0, abs=1e-4)
            assert min(scores.per_dimension[2:]) > 0.9  # time explains the unrelated targets' trend ...
        else:
            assert abs(scores.within_time.r2_posterior_mean) < 0.1  # ... and nothing left within a step
            assert scores.r2_posterior_mean > 0.9
            assert scores.per_dimension[2:] == pytest.approx([1.0, 1.0], abs=1e-4)


def test_targets_the_same_in_every_lane_at_each_step_leave_nothing_to_explain_within_time():
    x, y = selection_case(seed=3)
    steps = np.arange(NUM_STEPS, dtype=np.float32)[:, None, None] * np.ones((1, NUM_LANES, 2), np.float32)
    of_time = (0.1 + 0.037 * steps) * np.array([1.0, 3.3], np.float32)  # float32 means of these round
    features = np.concatenate([of_time, y[..., 2:]], axis=-1)  # the posterior means are time alone
    truth = y[..., :2]
    hidden = x[..., :4]
    network = control_scores.network_scores(
        jnp.asarray(x[..., :8]), 4, jnp.asarray(features), jnp.asarray(truth), SIZES, ridge_grid=SELECT_GRID
    )
    inputs, _ = control_scores.input_only_scores(
        jnp.asarray(x), jnp.asarray(features), jnp.asarray(truth), SIZES, ridge_grid=SELECT_GRID
    )
    for scores, states in ((network, hidden), (inputs, x)):
        assert scores.within_time.r2_posterior_mean is None  # not float32 rounding scored as variance
        expected_r2 = protocol(states, features, per_step=True, grid=SELECT_GRID)["within_r2"]
        assert scores.within_time.r2 == pytest.approx(expected_r2, abs=ATOL)  # the two that vary
    assert inputs.per_dimension[:2] == pytest.approx([1.0, 1.0], abs=1e-5)  # the step alone says them


def test_truth_baselines_are_zero_for_the_truth_itself_and_the_test_variance_about_the_train_mean():
    rng = np.random.default_rng(4)
    truth = rng.uniform(size=(5, 12, 2)).astype(np.float32)
    truth[:, :4] += 1.0  # the training lanes' mean is off the test lanes' by about 1
    features = np.concatenate([truth, rng.uniform(size=(5, 12, 1))], axis=-1).astype(np.float32)
    sizes = (4, 3, 5)
    baselines = control_scores.truth_baselines(jnp.asarray(features), jnp.asarray(truth), sizes)
    assert baselines.bayes_minimum == 0.0
    train, _, test = lanes(truth, sizes)
    assert baselines.prior == pytest.approx(np.mean((test - train.mean(axis=(0, 1))) ** 2), rel=1e-5)
    assert baselines.prior > 1.0
    shifted = control_scores.truth_baselines(jnp.asarray(features + 0.25), jnp.asarray(truth), sizes)
    assert shifted.bayes_minimum == pytest.approx(0.0625, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# The no-learning baselines of the report, recomputed from hand-built counts and traces


def hand_built_outcomes(actions, rewards, num_actions: int = 2) -> np.ndarray:
    """``[T, N, 2 (num_actions + 1)]``: u(t) = [one-hot a(t - 1), r(t - 1)] (zeros at t = 0) and
    r(t - 1) u(t)."""
    inputs = hand_built_lags(actions, rewards, 1, num_actions)
    return np.concatenate([inputs, inputs[..., -1:] * inputs], axis=-1)


def hand_built_traces(values: np.ndarray, time_constants) -> np.ndarray:
    """Exponentially weighted means over steps 0..t, written out as sums of weights, float64."""
    num_steps = values.shape[0]
    blocks = []
    for tau in time_constants:
        traces = np.zeros_like(values)
        for t in range(num_steps):
            weights = np.exp(-(t - np.arange(t + 1)) / tau)  # [t + 1]
            traces[t] = np.tensordot(weights, values[: t + 1], axes=1) / weights.sum()
        blocks.append(traces)
    return np.concatenate(blocks, axis=-1)


def test_report_no_learning_baselines_equal_a_numpy_ridge_on_hand_built_counts_and_traces():
    history, report, _, _ = recorded()
    features, truth = np.asarray(history.features), np.asarray(history.truth)
    outcomes = hand_built_outcomes(history.actions, history.rewards)
    inputs = {
        "running_sums": np.cumsum(outcomes, axis=0),
        "traces": hand_built_traces(outcomes, report.trace_time_constants),
    }
    for name, x in inputs.items():
        scores = report.no_learning[name]
        fit = functools.partial(protocol, x, per_step=True)
        assert scores.r2 == pytest.approx(fit(features)["r2"], abs=ATOL)
        assert scores.r2_posterior_mean == pytest.approx(fit(features[..., :2])["r2"], abs=ATOL)
        np.testing.assert_allclose(
            scores.per_dimension, fit(features, per_column=True)["r2_per_column"], atol=ATOL
        )
        within = (fit(features)["within_r2"], fit(features[..., :2])["within_r2"])
        assert (scores.within_time.r2, scores.within_time.r2_posterior_mean) == pytest.approx(
            within, abs=ATOL
        )
        assert scores.truth_mse == pytest.approx(fit(truth)["mse"], rel=1e-4)
    headline, pooled = report.headline, report.hidden_and_memory["trained"].hidden.r2_posterior_mean
    assert headline.trained_minus_running_sums == pytest.approx(
        pooled - report.no_learning["running_sums"].r2_posterior_mean
    )
    assert headline.within_time_trained_minus_traces == pytest.approx(
        report.within_time["trained"].r2_posterior_mean
        - report.no_learning["traces"].within_time.r2_posterior_mean
    )
    # The counts are the posterior's sufficient statistics: far above five inputs and the step.
    sums = report.no_learning["running_sums"].r2_posterior_mean
    assert sums > report.input_only[-1].r2_posterior_mean + 0.2
    assert scores.truth_mse != pytest.approx(
        report.no_learning["running_sums"].truth_mse, rel=1e-3
    )  # told apart


def test_report_next_outcome_equals_numpy_log_losses_of_the_beta_predictive_and_a_float64_logistic_probe():
    from tests.experiments.test_next_outcome import numpy_log_loss, numpy_probe_log_loss

    history, report, memory, _ = recorded()
    actions, rewards = np.asarray(history.actions), np.asarray(history.rewards)
    outcomes = hand_built_outcomes(actions, rewards)
    pulls, successes = np.cumsum(outcomes[..., :2], axis=0), np.cumsum(outcomes[..., 3:5], axis=0)
    exact = np.take_along_axis((1 + successes) / (2 + pulls), actions[..., None], -1)[..., 0]
    test = slice(SIZES[0] + SIZES[1], None)
    outcome = report.next_outcome
    assert outcome.exact == pytest.approx(numpy_log_loss(exact[:, test], rewards[:, test]), rel=1e-5)
    steps = np.broadcast_to(np.arange(NUM_STEPS)[:, None, None], (NUM_STEPS, NUM_LANES, 1))
    inputs = {
        "trained": memory["trained"],
        "running_sums": np.concatenate([np.cumsum(outcomes, 0), steps], -1),
    }
    for name, x in inputs.items():
        expected = numpy_probe_log_loss(x, actions, rewards, SIZES)
        assert outcome.log_loss[name] == pytest.approx(expected, abs=5e-4)
        assert outcome.excess[name] == pytest.approx(expected - outcome.exact, abs=5e-4)
    assert abs(outcome.excess["trained"] - outcome.excess["running_sums"]) > 5e-3  # told apart
