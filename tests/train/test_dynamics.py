"""Probes during training (``train(config, dynamics=DynamicsSchedule(...))``): every series against
a float64 NumPy reference, ``reached`` and ``chunks`` against known answers, training untouched by
the evaluations, one compilation of each program, and the schedule's doors.

The reference for the series is built here, apart from ``metabelief.train.dynamics``: each seed's
agent plays the schedule's held-out tasks (``rollout``, its trajectory recorded), the untrained
network reads that history (``replay``), the exact beliefs are replayed (``replay_beliefs``), the
lagged inputs and the one-hot time are assembled in NumPy, and each probe is a float64 ridge on
the sample rows of the fit, validation and test lanes.
"""

from __future__ import annotations

import logging
import re

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from metabelief.probes import DEFAULT_RIDGE_GRID
from metabelief.rollout import history_inputs, replay, replay_beliefs, rollout
from metabelief.train import TrainConfig, train
from metabelief.train.dynamics import SERIES, Dynamics, DynamicsSchedule, evaluator, reached
from metabelief.train.loop import chunks

# 4 updates in chunks [1, 1, 2]: the checkpoint at 1 cuts the first chunk of 2 (without it: [2, 2]).
CONFIG = TrainConfig(
    family_args=(("horizon", 12),),
    hidden_size=6,
    num_tasks=32,
    num_updates=4,
    updates_per_chunk=2,
    num_seeds=2,
    learning_rate=0.05,  # large, so 4 updates move the agent away from its initialisation
)
SCHEDULE = DynamicsSchedule(updates=(0, 1, 4), num_tasks=64, input_lags=2)
COMPILING = re.compile(r"Compiling jit\((\w+)\)")


class _CompileLog(logging.Handler):
    """Collects the names of the programs JAX compiles (``jax.log_compiles``)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.names: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = COMPILING.search(record.getMessage())
        if match:
            self.names.append(match.group(1))


@pytest.fixture(scope="module")
def runs():
    """The population trained with the schedule (its compilations logged), and without it."""
    handler = _CompileLog()
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            probed = train(CONFIG, progress=False, dynamics=SCHEDULE)
    finally:
        logger.removeHandler(handler)
    return probed, train(CONFIG, progress=False), handler.names


# ---------------------------------------------------------------------------------------------
# The float64 reference of every series


def _reference_arrays(family, agent, params, initial_params, key, tasks):
    """Per seed: the agent's recorded rollout, the untrained readout on that history, the inputs
    it read and the exact beliefs before each decision (leaves flattened), all ``[S, T, N, ...]``."""

    def one(trained, initial):
        history = rollout(family, agent, trained, key, tasks)
        untrained = replay(family, agent, initial, history).hidden
        beliefs = [
            leaf.reshape(*leaf.shape[:2], -1) for leaf in jax.tree.leaves(replay_beliefs(family, history))
        ]
        return history, untrained, history_inputs(agent, history), beliefs

    return jax.vmap(one)(params, initial_params)


_reference_arrays_jit = jax.jit(_reference_arrays, static_argnums=(0, 1))


def _lagged_inputs(inputs: np.ndarray, lags: int) -> np.ndarray:
    """``[T, N, lags * I]``: at step t the inputs of steps t, t - 1, ..., t - lags + 1 (zeros before 0)."""
    padded = np.concatenate([np.zeros((lags - 1, *inputs.shape[1:])), inputs])
    num_steps = inputs.shape[0]
    return np.concatenate(
        [padded[lags - 1 - lag : lags - 1 - lag + num_steps] for lag in range(lags)], axis=-1
    )


def _rows(array: np.ndarray, lanes: slice) -> np.ndarray:
    """``[T, N, d]`` -> the sample rows ``[T * n, d]`` of the task lanes ``lanes``."""
    block = np.asarray(array, np.float64)[:, lanes]
    return block.reshape(-1, block.shape[-1])


def _ridge(x: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of the ridge with an unpenalised intercept, penalty ridge * tr(S_xx) / dx."""
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    scatter = (x - x_mean).T @ (x - x_mean)
    penalty = ridge * np.trace(scatter) / x.shape[1] * np.eye(x.shape[1])
    weights = np.linalg.solve(scatter + penalty, (x - x_mean).T @ (y - y_mean))
    return weights, y_mean - x_mean @ weights


def _r2_per_dim(weights, bias, x, y) -> np.ndarray:
    """1 - SSE / SST per target column; NaN for a column that is constant on these rows."""
    errors = ((y - x @ weights - bias) ** 2).sum(axis=0)
    total = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    varies = np.ptp(y, axis=0) > 0
    return np.where(varies, 1.0 - errors / np.where(varies, total, 1.0), np.nan)


def _pooled_r2(weights, bias, x, y) -> float:
    """1 - SSE / SST summed over the target columns that vary on these rows."""
    varies = np.ptp(y, axis=0) > 0
    errors = ((y - x @ weights - bias) ** 2).sum(axis=0)[varies]
    total = ((y - y.mean(axis=0)) ** 2).sum(axis=0)[varies]
    return 1.0 - errors.sum() / total.sum()


def _probe(x: np.ndarray, y: np.ndarray, splits: tuple[slice, slice, slice]) -> tuple[float, np.ndarray]:
    """Held-out (pooled R^2, R^2 per dim) of the ridge chosen on validation lanes by pooled R^2 and
    refitted on fit + validation lanes; ``x``, ``y`` ``[T, N, d]``."""
    fit, validate, test = splits
    candidates = [
        _pooled_r2(*_ridge(_rows(x, fit), _rows(y, fit), ridge), _rows(x, validate), _rows(y, validate))
        for ridge in DEFAULT_RIDGE_GRID
    ]
    ridge = DEFAULT_RIDGE_GRID[int(np.nanargmax(candidates))]
    both = slice(fit.start, validate.stop)
    probe = _ridge(_rows(x, both), _rows(y, both), ridge)
    x_test, y_test = _rows(x, test), _rows(y, test)
    return _pooled_r2(*probe, x_test, y_test), _r2_per_dim(*probe, x_test, y_test)


def _reference_series(params, initial_params) -> dict[str, np.ndarray]:
    """Every series of ``SERIES`` for a population ``[S, ...]``, computed apart from the module."""
    family, agent = CONFIG.make_family(), CONFIG.make_agent()
    task_key, action_key = jax.random.split(jax.random.fold_in(jax.random.key(CONFIG.seed), 3))
    tasks = jax.vmap(family.sample_task)(jax.random.split(task_key, SCHEDULE.num_tasks))
    histories, untrained, inputs, beliefs = jax.tree.map(
        np.asarray, _reference_arrays_jit(family, agent, params, initial_params, action_key, tasks)
    )
    horizon, quarter = family.horizon, SCHEDULE.num_tasks // 4
    half = SCHEDULE.num_tasks - 2 * quarter
    splits = (slice(0, half), slice(half, half + quarter), slice(half + quarter, SCHEDULE.num_tasks))
    series = {name: [] for name in SERIES}
    for seed in range(CONFIG.num_seeds):
        memory, readout = histories.memory[seed], histories.hidden[seed]
        num_means = histories.truth.shape[-1]
        means = histories.features[seed][..., :num_means]
        clock = np.broadcast_to(np.eye(horizon)[:, None], (horizon, SCHEDULE.num_tasks, horizon))
        input_only = np.concatenate([_lagged_inputs(inputs[seed], SCHEDULE.input_lags), clock], axis=-1)
        bayes = np.concatenate([leaf[seed] for leaf in beliefs], axis=-1)
        series["return"].append(histories.rewards[seed].astype(np.float64).sum(axis=0).mean())
        series["r2_trained"].append(_probe(readout, means, splits)[0])
        series["r2_untrained"].append(_probe(untrained[seed], means, splits)[0])
        series["r2_input_only"].append(_probe(input_only, means, splits)[0])
        series["dissimilarity_agent_to_bayes"].append(np.nanmean(1.0 - _probe(memory, bayes, splits)[1]))
        series["dissimilarity_bayes_to_agent"].append(np.nanmean(1.0 - _probe(bayes, memory, splits)[1]))
    return {name: np.asarray(values) for name, values in series.items()}


def test_series_match_a_float64_reference_before_and_after_training(runs):
    probed, _, _ = runs
    dynamics = probed.dynamics
    assert dynamics.updates == SCHEDULE.updates
    assert set(dynamics.series) == set(SERIES)
    for name in SERIES:
        assert dynamics.series[name].shape == (CONFIG.num_seeds, len(SCHEDULE.updates)), name
    for column, params in ((0, probed.initial_params), (-1, probed.params)):
        expected = _reference_series(params, probed.initial_params)
        for name in SERIES:
            got = dynamics.series[name][:, column]
            tolerance = 1e-5 if name == "return" else 1e-4  # float32 statistics: seen within 4e-6
            np.testing.assert_allclose(
                got, expected[name], atol=tolerance, rtol=0, err_msg=f"{name}[{column}]"
            )
    # Before training the trained network is the untrained one; after it, they differ.
    np.testing.assert_allclose(dynamics.series["r2_trained"][:, 0], dynamics.series["r2_untrained"][:, 0])
    assert np.all(
        np.abs(dynamics.series["r2_trained"][:, -1] - dynamics.series["r2_untrained"][:, -1]) > 1e-3
    )
    assert dynamics.seconds_per_checkpoint > 0 and dynamics.compile_seconds > 0


# ---------------------------------------------------------------------------------------------
# Training is not changed by evaluating; each program compiles once


def test_training_is_the_same_with_and_without_the_evaluations(runs):
    probed, plain, _ = runs
    assert chunks(CONFIG.num_updates, CONFIG.updates_per_chunk, SCHEDULE.updates) == [1, 1, 2]
    assert chunks(CONFIG.num_updates, CONFIG.updates_per_chunk) == [2, 2]
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), probed.params, plain.params
    )
    assert set(probed.metrics) == set(plain.metrics)
    for name in plain.metrics:
        assert probed.metrics[name].shape == (CONFIG.num_seeds, CONFIG.num_updates)
        np.testing.assert_allclose(
            probed.metrics[name], plain.metrics[name], rtol=1e-6, atol=1e-6, err_msg=name
        )
    assert plain.dynamics is None


def test_evaluation_compiles_once_and_training_once_per_chunk_size(runs):
    *_, compiled = runs
    assert compiled.count("_population_statistics") == 1
    assert compiled.count("train_chunk") == len(
        set(chunks(CONFIG.num_updates, CONFIG.updates_per_chunk, SCHEDULE.updates))
    )


# ---------------------------------------------------------------------------------------------
# reached: the checkpoint from which a series stays at least 90% of the way from its first value to its last

UPDATES = np.array([0, 10, 20, 30, 40])


@pytest.mark.parametrize(
    "values, expected",
    [
        ([0.0, 0.5, 0.85, 0.95, 1.0], 30.0),  # a rise: 0.85 is 85% of the way, 0.95 is 95%
        ([1.0, 0.6, 0.2, 0.12, 0.1], 30.0),  # a fall (a dissimilarity): 0.2 is 89%, 0.12 is 98%
        ([0.0, 1.5, 1.2, 1.1, 1.0], 10.0),  # an overshoot that settles: past 90% at the first step
        ([0.0, -0.5, 0.2, 0.9, 1.0], 30.0),  # a dip below the start before the rise
        ([2.0, 2.0, 2.0, 2.0, 2.0], np.nan),  # flat: it did not move
        ([0.0, 1.0, 3.0, 1.0, 0.0], np.nan),  # back where it began
        ([0.0, np.nan, 0.5, 0.95, 1.0], np.nan),  # a NaN on the way
        ([0.2, 0.2, 0.2, 0.2, 0.3], 40.0),  # moves only at the end
        ([0.0, 0.95, 0.5, 0.8, 1.0], 40.0),  # past 90%, back below, past again: where it stays past
    ],
)
def test_reached_known_answers(values, expected):
    got = reached(UPDATES, np.array([values]))
    assert got.shape == (1,)
    np.testing.assert_equal(got[0], expected)


def test_reached_rows_are_seeds_and_fraction_sets_the_bar():
    values = np.array([[0.0, 0.5, 0.85, 0.95, 1.0], [1.0, 0.6, 0.2, 0.12, 0.1], [3.0, 3.0, 3.0, 3.0, 3.0]])
    np.testing.assert_equal(reached(UPDATES, values), [30.0, 30.0, np.nan])
    np.testing.assert_equal(
        reached(UPDATES, values, fraction=0.5), [10.0, 20.0, np.nan]
    )  # 0.5: 50%, 0.6: 44%
    np.testing.assert_equal(reached(UPDATES, values, fraction=1.0), [40.0, 40.0, np.nan])
    dynamics = Dynamics(
        updates=tuple(UPDATES.tolist()),
        series={"return": values},
        seconds_per_checkpoint=0.1,
        compile_seconds=1.0,
    )
    np.testing.assert_equal(dynamics.reached("return"), [30.0, 30.0, np.nan])


# ---------------------------------------------------------------------------------------------
# chunks: the jitted chunk sizes


@pytest.mark.parametrize(
    "num_updates, per_chunk, checkpoints, expected",
    [
        (10, 4, (), [4, 4, 2]),
        (8, 4, (), [4, 4]),
        (10, 4, (0, 3, 10), [3, 1, 4, 2]),
        (10, 4, (4, 8), [4, 4, 2]),  # checkpoints on the chunks' own bounds cut nothing
        (5, 10, (1, 2), [1, 1, 3]),
        (3, 1, (0, 1, 2, 3), [1, 1, 1]),
    ],
)
def test_chunks_known_answers(num_updates, per_chunk, checkpoints, expected):
    assert chunks(num_updates, per_chunk, checkpoints) == expected


@given(
    num_updates=st.integers(1, 60),
    per_chunk=st.integers(1, 25),
    data=st.data(),
)
def test_chunks_cover_the_updates_and_cut_at_every_checkpoint(num_updates, per_chunk, data):
    checkpoints = tuple(sorted(data.draw(st.sets(st.integers(0, num_updates), max_size=8))))
    sizes = chunks(num_updates, per_chunk, checkpoints)
    bounds = set(np.cumsum(sizes).tolist())
    assert sum(sizes) == num_updates
    assert all(1 <= size <= per_chunk for size in sizes)
    assert set(checkpoints) - {0} <= bounds
    assert set(range(per_chunk, num_updates, per_chunk)) <= bounds  # the regular cuts stay


# ---------------------------------------------------------------------------------------------
# Doors


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(updates=()), "updates must be a non-empty"),
        (dict(updates="0, 5"), "updates must be a non-empty"),
        (dict(updates=5), "updates must be a non-empty"),
        (dict(updates=(0, 5, 5)), "strictly increasing"),
        (dict(updates=(5, 2)), "strictly increasing"),
        (dict(updates=(-1, 2)), "updates"),
        (dict(updates=(0, 1.5)), "updates"),
        (dict(updates=(0, 2), num_tasks=3), "num_tasks"),
        (dict(updates=(0, 2), input_lags=0), "input_lags"),
    ],
)
def test_schedule_rejects_bad_fields(fields, message):
    with pytest.raises(ValueError, match=message):
        DynamicsSchedule(**fields)


def test_train_rejects_checkpoints_past_the_last_update():
    schedule = DynamicsSchedule(updates=(0, CONFIG.num_updates + 1))
    with pytest.raises(ValueError, match=r"dynamics updates must be <= num_updates \(4\), got 5"):
        train(CONFIG, progress=False, dynamics=schedule)


@pytest.mark.parametrize(
    "num_tasks, input_lags, widest, enough",
    [
        # The widest probe reads the input-only block: lags x 3 inputs + 12 one-hot steps, and a
        # probe needs 2 samples more than it reads inputs in each quarter of the tasks (12 steps each).
        (7, 2, 18, 8),  # 18 inputs: 20 steps, 2 tasks a quarter; 7 tasks leave 1
        (8, 4, 24, 12),  # 24 inputs: 26 steps, 3 tasks a quarter; 8 tasks leave 2 (24 steps)
    ],
)
def test_evaluator_rejects_too_few_tasks_for_the_widest_probe(runs, num_tasks, input_lags, widest, enough):
    family, agent = CONFIG.make_family(), CONFIG.make_agent()
    assert agent.input_size == 3 and agent.memory_size == 12 and family.horizon == 12
    params = runs[0].initial_params
    schedule = DynamicsSchedule(updates=(0,), num_tasks=num_tasks, input_lags=input_lags)
    message = rf"num_tasks \({num_tasks}\) is too small.*reads {widest} inputs; use at least {enough}"
    with pytest.raises(ValueError, match=message):
        evaluator(family, agent, schedule, CONFIG.seed, params, params)


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: DynamicsSchedule.every(3, 10), (0, 3, 6, 9, 10)),
        (lambda: DynamicsSchedule.every(5, 10), (0, 5, 10)),
        (lambda: DynamicsSchedule.every(20, 10), (0, 10)),
        (lambda: DynamicsSchedule.evenly(3, 10), (0, 5, 10)),
        (lambda: DynamicsSchedule.evenly(2, 7), (0, 7)),
        (lambda: DynamicsSchedule.evenly(11, 10), tuple(range(11))),
        (lambda: DynamicsSchedule.evenly(50, 10), tuple(range(11))),  # never a fraction of an update
    ],
)
def test_every_and_evenly_give_the_checkpoints_they_say(make, expected):
    assert make().updates == expected


def test_every_and_evenly_pass_fields_through_and_reject_bad_counts():
    schedule = DynamicsSchedule.every(2, 4, num_tasks=16, input_lags=3)
    assert (schedule.num_tasks, schedule.input_lags) == (16, 3)
    assert schedule.split_sizes == (8, 4, 4)
    assert DynamicsSchedule(updates=(0,), num_tasks=10).split_sizes == (6, 2, 2)
    with pytest.raises(ValueError, match="every"):
        DynamicsSchedule.every(0, 10)
    with pytest.raises(ValueError, match="num_updates"):
        DynamicsSchedule.every(2, 0)
    with pytest.raises(ValueError, match="num_checkpoints"):
        DynamicsSchedule.evenly(1, 10)


def test_a_seeds_entry_holds_its_series_reached_updates_and_their_lag():
    from metabelief.experiments.results import SeedDynamics

    updates = (0, 10, 20, 30)
    series = {name: np.zeros((2, 4)) for name in SERIES}
    series["return"] = np.array([[0.0, 0.95, 1.0, 1.0], [0.0, 0.5, 0.8, 1.0]])  # reached at 10, at 30
    series["r2_trained"] = np.array([[0.2, 0.2, 0.6, 0.6], [0.2, 0.3, 0.3, 0.3]])  # at 20, at 10
    series["dissimilarity_agent_to_bayes"] = np.array([[1.0, 0.5, 0.0, 0.0], [0.4, 0.4, 0.4, 0.4]])
    dynamics = Dynamics(updates=updates, series=series, seconds_per_checkpoint=0.1, compile_seconds=1.0)
    first, second = (SeedDynamics.of(dynamics, index) for index in range(2))
    assert first.reached == {"return": 10.0, "r2_trained": 20.0, "dissimilarity_agent_to_bayes": 20.0}
    assert first.lag == 10.0
    assert second.reached == {"return": 30.0, "r2_trained": 10.0, "dissimilarity_agent_to_bayes": None}
    assert second.lag == -20.0
    assert second.series["r2_trained"] == (0.2, 0.3, 0.3, 0.3) and second.updates == updates
