"""Test scores of one probe input for the belief: a network's states, or a baseline's inputs.

The probes behind ``metabelief.experiments.controls``: ``network_scores`` (a network's readout and
whole memory), ``input_only_scores`` (a baseline's inputs with the time step), ``lagged_inputs``
(the input-only baseline's inputs) and ``truth_baselines`` (the Bayes minimum and the prior).

Every probe is a ridge regression in closed form from sufficient statistics, with the protocol of
``probes.linear_probe``: fitted on the training tasks for each strength of the grid, the strength
chosen on the validation tasks, refitted on training + validation tasks, scored on the test tasks.
R^2 and MSE are ``probes.score_moments`` / ``probes.score_arrays``'s: R^2 pooled over the
dimensions that vary (``1 - sum of squared errors / total sum of squares``), MSE the mean over
samples and dimensions.

Time enters a probe as a one-hot of the step t whose coefficients are not penalised. It is fitted
by Frisch-Waugh-Lovell rather than as 100 more columns: subtract from inputs and targets their
per-step means over the fitting tasks (the training tasks while choosing the strength, training +
validation tasks for the refit), ridge-regress the residual targets on the residual inputs, and
predict ``mean_y(t) + ridge(x - mean_x(t))``. That is exactly ridge regression on ``[x, one-hot(t)]``
with the time coefficients free, and its linear system has no one-hot columns to condition. The
same residuals give "within time" scores: R^2 on the test tasks' residuals against the variance of
those residuals, i.e. of what the time step alone does not explain.

Probe inputs of any width may be padded with zero columns to a shared width (``width=``): the padded
columns are masked out of the fit and the scores, so the figures do not change, and the probes of
every input of that width run the same compiled programs (``controls.probe_controls`` pads all its
inputs to the widest, so each program is compiled once per report, not once per input width).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metabelief import probes
from metabelief.agents.base import Agent
from metabelief.analysis.records import Record
from metabelief.rollout import Trajectory, history_inputs, sample_rows, split_lanes
from metabelief.tasks.validation import integer_at_least


# ----------------------------------------------------------------------------- results
# Every score is a test-task figure; None where it is undefined (e.g. a target that does not vary).
@dataclasses.dataclass(frozen=True)
class ControlScores(Record):
    """Test R^2 of one probe input -> all ``F`` belief features (pooled) and -> the ``D`` posterior
    means (pooled)."""

    r2: float | None
    r2_posterior_mean: float | None


@dataclasses.dataclass(frozen=True)
class NetworkScores(Record):
    """``network_scores``: one network's states as probe inputs."""

    hidden: ControlScores  # hidden -> features
    memory: ControlScores  # the whole memory -> features
    per_dimension: tuple[float | None, ...]  # [F]: hidden -> each feature, a probe each
    within_time: ControlScores  # hidden -> features, time partialled out
    truth_mse: float | None  # hidden -> the truth


@dataclasses.dataclass(frozen=True)
class InputOnlyScores(Record):
    """``input_only_scores``: a baseline's inputs (the last ``k`` inputs, or a no-learning memory:
    traces, running sums) and a one-hot of t as probe inputs."""

    r2: float | None
    r2_posterior_mean: float | None
    per_dimension: tuple[float | None, ...]
    within_time: ControlScores
    truth_mse: float | None


@dataclasses.dataclass(frozen=True)
class TruthBaselines(Record):
    """Test MSE of the exact posterior mean (the Bayes minimum) and of the training tasks' mean of
    the truth (the prior), as predictions of the truth."""

    bayes_minimum: float | None
    prior: float | None


# Probe statistics are float32 matrix products; keep them at full float32 on accelerators whose
# default float32 matmul rounds inputs to fewer bits (e.g. TF32 on recent NVIDIA GPUs).
_PRECISION = "highest"


# ----------------------------------------------------------------------------- representations
def network_scores(
    memory: jax.Array,
    hidden_size: int,
    features: jax.Array,
    truth: jax.Array,
    sizes: Sequence[int],
    *,
    ridge_grid: Sequence[float] = probes.DEFAULT_RIDGE_GRID,
    width: int | None = None,
) -> NetworkScores:
    """Test scores of one network's states as probe inputs: its whole ``memory`` ``[T, N, M]``,
    whose first ``hidden_size`` entries are the readout ``hidden`` (``metabelief.agents``).

    Returns ``NetworkScores``: ``hidden`` (or ``memory``, the whole vector) -> all ``F``
    belief features (``r2``, pooled) and -> the ``D`` posterior means (``r2_posterior_mean``);
    ``per_dimension``, hidden -> each feature with its own probe; ``within_time``, hidden ->
    features with time partialled out; and ``truth_mse``, the test MSE of hidden -> ``truth``.

    ``width`` (at least M; default M) pads the memory with zero columns, which changes no score:
    probes of one width share their compiled programs.
    """
    num_tasks = features.shape[1]
    sizes = check_sizes(sizes, num_tasks)
    check_targets(features, truth)
    if memory.ndim != 3 or memory.shape[:2] != features.shape[:2]:
        raise ValueError(f"memory must be [T, N, M] like features' [T, N], got {memory.shape}")
    if not 1 <= hidden_size <= memory.shape[-1]:
        raise ValueError(
            f"hidden_size must be in [1, {memory.shape[-1]}] (the memory's width), got {hidden_size}"
        )
    _check_finite("memory", memory)
    _check_counts(sizes, features.shape[0], memory.shape[-1])
    width = _check_width(width, memory.shape[-1])
    with jax.default_matmul_precision(_PRECISION):
        raw, within = _network_moments(_padded(memory, width), features, truth, sizes)
        shapes = dict(
            size=hidden_size,
            memory_size=memory.shape[-1],
            width=width,
            num_features=features.shape[-1],
            num_means=truth.shape[-1],
        )
        scores = _network_probes(raw, within, jnp.asarray(ridge_grid, jnp.float32), **shapes)
    scores = jax.device_get(scores)
    return NetworkScores(
        hidden=_control_scores(*scores["hidden"]),
        memory=_control_scores(*scores["memory"]),
        per_dimension=tuple(finite_or_none(v) for v in scores["per_dimension"]),
        within_time=_control_scores(*scores["within_time"]),
        truth_mse=finite_or_none(scores["truth_mse"]),
    )


def input_only_scores(
    inputs: jax.Array,
    features: jax.Array,
    truth: jax.Array,
    sizes: Sequence[int],
    *,
    ridge_grid: Sequence[float] = probes.DEFAULT_RIDGE_GRID,
    width: int | None = None,
) -> tuple[InputOnlyScores, jax.Array]:
    """Test scores of ``inputs [T, N, dx]`` together with a one-hot of the time step as probe inputs.

    Returns:
      ``(scores, predictions)``: ``scores`` is an ``InputOnlyScores`` (``r2``,
      ``r2_posterior_mean``, ``per_dimension`` ``[F]``, ``within_time``, ``truth_mse``, as
      ``network_scores``'s), and ``predictions`` the probe's belief features on the test tasks,
      ``[T, n_test, F]``.

    ``width`` (at least dx; default dx) pads the inputs with zero columns, as ``network_scores``'.
    """
    sizes = check_sizes(sizes, features.shape[1])
    check_targets(features, truth)
    if inputs.ndim != 3 or inputs.shape[:2] != features.shape[:2]:
        raise ValueError(f"inputs must be [T, N, dx] like features' [T, N], got {inputs.shape}")
    _check_finite("inputs", inputs)
    _check_counts(sizes, features.shape[0], inputs.shape[-1] + features.shape[0])
    width = _check_width(width, inputs.shape[-1])
    with jax.default_matmul_precision(_PRECISION):
        padded = _padded(inputs, width)
        select, refit, fit_means = _input_moments(padded, features, truth, sizes)
        shapes = dict(
            size=inputs.shape[-1], width=width, num_features=features.shape[-1], num_means=truth.shape[-1]
        )
        linear, within = _input_probes(select, refit, jnp.asarray(ridge_grid, jnp.float32), **shapes)
        pooled, predictions = _input_predictions(padded, features, truth, fit_means, linear, sizes)
    pooled, within = jax.device_get((pooled, within))
    scores = InputOnlyScores(
        r2=finite_or_none(pooled["r2"]),
        r2_posterior_mean=finite_or_none(pooled["r2_posterior_mean"]),
        per_dimension=tuple(finite_or_none(v) for v in pooled["per_dimension"]),
        within_time=_control_scores(*within),
        truth_mse=finite_or_none(pooled["truth_mse"]),
    )
    return scores, predictions


def lagged_inputs(agent: Agent, history: Trajectory, lags: int) -> jax.Array:
    """The last ``lags`` network inputs at each step, ``float32[T, N, lags * input_size]``.

    Block ``j`` (``j = 0 .. lags - 1``) holds ``agent.inputs`` of step ``t - j`` — the vector the
    agent reads there: ``obs[t - j]``, the action and reward of step ``t - j - 1`` (none before the
    first) and the time — or zeros when ``t - j < 0``. Block 0 is what the network reads at t.
    """
    lags = check_lags((lags,))[0]
    num_steps = history.actions.shape[0]
    inputs = history_inputs(agent, history)  # [T, N, I]
    padded = jnp.concatenate([jnp.zeros((lags - 1, *inputs.shape[1:]), inputs.dtype), inputs])
    blocks = [padded[lags - 1 - lag : lags - 1 - lag + num_steps] for lag in range(lags)]
    return jnp.concatenate(blocks, axis=-1)


# ----------------------------------------------------------------------------- truth
def truth_baselines(features: jax.Array, truth: jax.Array, sizes: Sequence[int]) -> TruthBaselines:
    """``bayes_minimum`` and ``prior``: test MSE of the exact posterior mean ``features[..., :D]``
    and of the training tasks' mean of ``truth``, as predictions of ``truth`` ``[T, N, D]``."""
    sizes = check_sizes(sizes, features.shape[1])
    check_targets(features, truth)
    num_means = truth.shape[-1]
    train, _, test = split_lanes(truth.astype(jnp.float32), sizes)
    posterior_mean = split_lanes(features[..., :num_means].astype(jnp.float32), sizes)[2]
    prior_mean = train.mean(axis=(0, 1))
    return TruthBaselines(
        bayes_minimum=finite_or_none(jnp.mean((test - posterior_mean) ** 2)),
        prior=finite_or_none(jnp.mean((test - prior_mean) ** 2)),
    )


# ----------------------------------------------------------------------------- jitted analyses
# Every probe input is padded with zero columns to a shared width W, laid out as ``z = [inputs,
# features, truth]``, and its input columns chosen by a 0/1 mask ``[W]`` that the programs read as an
# array, so the networks' and every baseline's probes, whatever their widths, run one compiled
# program each (``controls.probe_controls`` pads them all to the widest). The padding is invisible: a
# masked-out column gets a zero weight and enters neither the ridge penalty's scale (the mean
# variance of the real inputs) nor any score.
#
# The statistics (large matrix products over all samples) and predictions run as jitted programs;
# the probes on the statistics run as small programs, each batched ridge solve in one of its own.
# XLA's CPU runtime (jax 0.10.2, 2 cores) wedges a program holding a dozen independent batched
# LAPACK solves of ~100 x 100 systems (every worker thread idle, the result never ready), so solves
# are never gathered into one program, nor left in flight together.
@jax.jit(static_argnames=("sizes",))
def _network_moments(memory, features, truth, sizes):
    """``(raw, within)``: (select, refit) statistics of ``z = [memory, features, truth]`` per block
    of lanes, and of ``z`` less its per-step means."""
    z = jnp.concatenate([memory, features, truth], axis=-1).astype(jnp.float32)
    return _lane_moments(z, sizes), _time_moments(z, sizes)[:2]


def _network_probes(raw, within, ridge_grid, size, memory_size, width, num_features, num_means) -> dict:
    """``{"hidden", "memory", "within_time": (r2, r2 of the means), "per_dimension",
    "truth_mse"}``, arrays (the fields of ``NetworkScores``)."""

    def pair(chosen: dict) -> tuple[jax.Array, jax.Array]:
        return chosen["features"][1].r2, chosen["means"][1].r2

    hidden, memory = _input_mask(size, width), _input_mask(memory_size, width)
    linear = _probe(*raw, ridge_grid, hidden, num_features, num_means)
    return {
        "hidden": pair(linear),
        "memory": pair(_probe(*raw, ridge_grid, memory, num_features, num_means)),
        "per_dimension": linear["columns"][1].r2_per_dim,
        "truth_mse": linear["truth"][1].mse,
        "within_time": pair(_probe(*within, ridge_grid, hidden, num_features, num_means)),
    }


@jax.jit(static_argnames=("sizes",))
def _input_moments(inputs, features, truth, sizes):
    """``(select, refit, fit_means)`` of ``z = [inputs, features, truth]`` less its per-step means."""
    return _time_moments(jnp.concatenate([inputs, features, truth], axis=-1).astype(jnp.float32), sizes)


def _input_probes(select, refit, ridge_grid, size, width, num_features, num_means) -> tuple[dict, dict]:
    """``(linear, within)``: probes of the features, the means, each feature alone (``columns``) and
    the truth on the residual inputs, and the within-time R^2 of the first two, ``(r2, r2 of the
    means)``."""
    chosen = _probe(select, refit, ridge_grid, _input_mask(size, width), num_features, num_means)
    linear = {kind: probe for kind, (probe, _) in chosen.items()}
    return linear, (chosen["features"][1].r2, chosen["means"][1].r2)


@jax.jit(static_argnames=("sizes",))
def _input_predictions(inputs, features, truth, fit_means, linear, sizes) -> tuple[dict, jax.Array]:
    """Pooled test scores of the input-only probes: ``mean_y(t) + probe(x - mean_x(t))``."""
    num_fit, width, num_features = sizes[0] + sizes[1], inputs.shape[-1], features.shape[-1]
    means = features[..., : truth.shape[-1]]
    targets = {"features": features, "means": means, "columns": features, "truth": truth}
    offsets = {"features": width, "means": width, "columns": width, "truth": width + num_features}
    residual_inputs = inputs[:, num_fit:].astype(jnp.float32) - fit_means[..., :width]
    predictions, scores = {}, {}
    for name, probe in linear.items():
        target = targets[name][:, num_fit:].astype(jnp.float32)
        start = offsets[name]
        mean = fit_means[..., start : start + target.shape[-1]]
        predictions[name] = mean + probes.predict(probe, residual_inputs)
        scores[name] = probes.score_arrays(predictions[name], target)
    pooled = {
        "r2": scores["features"].r2,
        "r2_posterior_mean": scores["means"].r2,
        "per_dimension": scores["columns"].r2_per_dim,
        "truth_mse": scores["truth"].mse,
    }
    return pooled, predictions["features"]


def _padded(inputs: jax.Array, width: int) -> jax.Array:
    """``float32[..., width]``: ``inputs [..., d]`` and ``width - d`` zero columns."""
    pad = [(0, 0)] * (inputs.ndim - 1) + [(0, width - inputs.shape[-1])]
    return jnp.pad(inputs.astype(jnp.float32), pad)


def _input_mask(size: int, width: int) -> np.ndarray:
    """``float32[width]``: 1 for the first ``size`` columns (the probe's inputs), 0 after."""
    return (np.arange(width) < size).astype(np.float32)


def _probe(select, refit, ridge_grid, mask, num_features: int, num_means: int) -> dict:
    """``probes.linear_probe``'s protocol for the targets ``[features, truth]`` of ``z`` on its input
    columns ``mask``, given statistics ``select`` = (train, validation) and ``refit`` = (train +
    validation, test), stacked ``[2, ...]``: ``{kind: (probe, test scores)}`` for each kind of
    ``_kinds``, the probe of its target columns refitted with the strength chosen on validation,
    as ``linear_probe`` would have for those columns alone.

    The ridge solutions for every strength of the grid are computed once for all target columns
    (a ridge regression fits each column on its own), then chosen from for each kind.
    """
    train, validation, fit, test = (
        jax.tree.map(lambda leaf, i=i: leaf[i], stats) for stats in (select, refit) for i in (0, 1)
    )
    # [R, W, F + D] each; waited for, so no two batched solves are ever in flight together.
    train_weights = jax.block_until_ready(_ridge_path(train, ridge_grid, mask))
    fit_weights = jax.block_until_ready(_ridge_path(fit, ridge_grid, mask))
    return _choose(train, validation, fit, test, train_weights, fit_weights, num_features, num_means)


@jax.jit
def _ridge_path(moments: probes.Moments, ridge_grid: jax.Array, mask: jax.Array) -> jax.Array:
    """``probes.fit_ridge`` weights of the targets (the columns after the ``W`` inputs) on the
    inputs ``mask [W]`` selects, for each strength, ``[R, W, F + D]``."""
    inputs, targets = slice(0, mask.shape[0]), slice(mask.shape[0], None)
    return jax.vmap(lambda ridge: probes.fit_ridge(moments, inputs, targets, ridge, mask).weights)(ridge_grid)


def _kinds(num_features: int, num_means: int) -> dict[str, tuple[tuple[int, int], bool]]:
    """The probes taken of each input, as (target columns of ``[features, truth]``, chosen per
    column): all features pooled, the posterior means pooled, each feature alone, the truth."""
    return {
        "features": ((0, num_features), False),
        "means": ((0, num_means), False),
        "columns": ((0, num_features), True),
        "truth": ((num_features, num_features + num_means), False),
    }


@jax.jit(static_argnames=("num_features", "num_means"))
def _choose(train, validation, fit, test, train_weights, fit_weights, num_features, num_means):
    """``{kind: (probe, test scores)}`` for each kind of ``_kinds``."""
    width = train_weights.shape[1]
    x = slice(0, width)
    chosen = {}
    for kind, (columns, per_column) in _kinds(num_features, num_means).items():
        y = slice(width + columns[0], width + columns[1])
        path, refits = train_weights[..., slice(*columns)], fit_weights[..., slice(*columns)]

        def validate(weights, y=y):
            probe = probes.LinearProbe(weights=weights, bias=train.mean[y] - train.mean[x] @ weights)
            return probes.score_moments(probe, validation, x, y)

        candidates = jax.vmap(validate)(path)
        if per_column:
            r2 = jnp.where(jnp.isnan(candidates.r2_per_dim), -jnp.inf, candidates.r2_per_dim)  # [R, dy]
            weights = jnp.take_along_axis(refits, jnp.argmax(r2, axis=0)[None, None, :], axis=0)[0]
        else:
            weights = refits[jnp.nanargmax(candidates.r2)]  # as linear_probe (the last when all are NaN)
        probe = probes.LinearProbe(weights=weights, bias=fit.mean[y] - fit.mean[x] @ weights)
        chosen[kind] = probe, probes.score_moments(probe, test, x, y)
    return chosen


def _lane_moments(z: jax.Array, sizes: tuple[int, int, int]) -> tuple[probes.Moments, probes.Moments]:
    """``(select, refit)`` statistics of the rows of ``z [T, N, d]`` in each block of lanes."""
    train, validation, test = (probes.moments_of(sample_rows(block)) for block in split_lanes(z, sizes))
    return _stack(train, validation), _stack(probes.merge(train, validation), test)


def _time_moments(
    z: jax.Array, sizes: tuple[int, int, int]
) -> tuple[probes.Moments, probes.Moments, jax.Array]:
    """``(select, refit, fit_means)``: ``_lane_moments`` of ``z`` less its per-step means over the
    fitting lanes (training lanes for ``select``, training + validation lanes for ``refit``);
    ``fit_means [T, 1, d]`` are the latter."""
    num_train, num_fit = sizes[0], sizes[0] + sizes[1]
    train_means, fit_means = time_means(z, num_train), time_means(z, num_fit)
    blocks = (
        z[:, :num_train] - train_means,
        z[:, num_train:num_fit] - train_means,
        z[:, :num_fit] - fit_means,
        z[:, num_fit:] - fit_means,
    )
    train, validation, fit, test = (probes.moments_of(sample_rows(block)) for block in blocks)
    return _stack(train, validation), _stack(fit, test), fit_means


def time_means(z: jax.Array, num_lanes: int) -> jax.Array:
    """Per-step means of ``z [T, N, d]`` over its first ``num_lanes`` lanes, ``[T, 1, d]``.

    Taken about the first lane's value, so a quantity that is the same in every lane at a step (the
    prior at t = 0, a function of time alone) has a residual of exactly 0, not a float32 rounding
    error that would count as variance left to explain.
    """
    reference = z[:, :1]
    return reference + (z[:, :num_lanes] - reference).mean(axis=1, keepdims=True)


def _stack(*moments: probes.Moments) -> probes.Moments:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *moments)


# ----------------------------------------------------------------------------- conversions and checks
def finite_or_none(value) -> float | None:
    """``value`` as a float, None for NaN (an undefined score)."""
    value = float(value)
    return None if np.isnan(value) else value


def _control_scores(r2, r2_posterior_mean) -> ControlScores:
    return ControlScores(r2=finite_or_none(r2), r2_posterior_mean=finite_or_none(r2_posterior_mean))


def check_sizes(sizes: Sequence[int], num_tasks: int) -> tuple[int, int, int]:
    try:
        sizes = tuple(int(size) for size in sizes)
    except (TypeError, ValueError):
        raise ValueError(f"sizes must be three numbers of tasks, got {sizes!r}") from None
    if len(sizes) != 3 or min(sizes) < 1 or sum(sizes) != num_tasks:
        raise ValueError(
            f"sizes must be (train, validation, test) numbers of tasks, each at least 1, adding up "
            f"to the {num_tasks} tasks, got {sizes}"
        )
    return sizes


def check_lags(lags: Sequence[int]) -> tuple[int, ...]:
    if isinstance(lags, (str, bytes)) or not np.iterable(lags) or len(lags) == 0:
        raise ValueError(f"input_lags must be a non-empty sequence of positive integers, got {lags!r}")
    checked = []
    for lag in lags:
        if isinstance(lag, bool) or not isinstance(lag, (int, np.integer)) or lag < 1:
            raise ValueError(f"input_lags must be positive integers, got {lags!r}")
        checked.append(int(lag))
    if len(set(checked)) != len(checked):
        raise ValueError(f"input_lags must be distinct, got {lags!r}")
    return tuple(sorted(checked))


def check_targets(features: jax.Array, truth: jax.Array) -> None:
    if features.ndim != 3 or truth.ndim != 3 or features.shape[:2] != truth.shape[:2]:
        raise ValueError(
            f"features and truth must be [T, N, F] and [T, N, D], got {features.shape} and {truth.shape}"
        )
    if not 1 <= truth.shape[-1] <= features.shape[-1]:
        raise ValueError(
            f"truth must have 1 to F = {features.shape[-1]} dimensions (the first features are its "
            f"posterior means), got {truth.shape[-1]}"
        )
    _check_finite("features", features)
    _check_finite("truth", truth)


def _check_finite(name: str, array: jax.Array) -> None:
    if not bool(jnp.isfinite(array).all()):
        raise ValueError(f"probe inputs contain NaN or inf ({name})")


def _check_width(width: int | None, size: int) -> int:
    if width is None:
        return size
    return integer_at_least("width", width, size)


def _check_counts(sizes: tuple[int, int, int], num_steps: int, num_inputs: int) -> None:
    fewest = min(sizes) * num_steps
    if fewest < num_inputs + 2:
        raise ValueError(
            f"too few samples for a probe: a split has {fewest}, needs at least {num_inputs + 2}"
        )
