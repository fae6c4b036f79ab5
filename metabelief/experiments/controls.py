"""Controls beside every probe: what would any network, or no network at all, decode from the same histories?

A hidden state that decodes the belief is weak evidence by itself: an untrained LSTM fed the same
histories decodes much of the bandit posterior too. ``probe_controls`` reports, on the test tasks of
one held-out trajectory:

* per network (e.g. ``trained`` and ``untrained``, each teacher forced on the same history), the
  R^2 of hidden -> each belief feature on its own (means and uncertainties apart);
* an input-only baseline: the last ``k`` network inputs and the time step, no network at all;
* R^2 with time partialled out, for each network and the input-only baseline;
* the whole memory (``agent.memory``: the LSTM's ``[hidden, cell]``) beside its readout alone;
* predictive sufficiency: the MSE of decoding the *true* task quantity against the Bayes minimum
  (the exact posterior mean, the MSE-optimal predictor given the history) and the prior;
* the headline differences: trained minus untrained, trained minus input-only.

The probes of each input (a network's states, a baseline's inputs) are
``metabelief.experiments.control_scores``'s, which states their protocol.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from metabelief import probes
from metabelief.agents.base import Agent
from metabelief.analysis.records import Record
from metabelief.experiments import no_learning
from metabelief.experiments.control_scores import (
    ControlScores,
    InputOnlyScores,
    TruthBaselines,
    check_lags,
    check_sizes,
    check_targets,
    finite_or_none,
    input_only_scores,
    lagged_inputs,
    network_scores,
    truth_baselines,
)
from metabelief.experiments.next_outcome import NextOutcome, next_outcome
from metabelief.rollout import Trajectory, replay_jit, sample_rows, split_lanes
from metabelief.tasks.base import PyTree, TaskFamily
from metabelief.tasks.validation import integer_at_least

INPUT_ONLY = "input_only"  # the name of the input-only baseline beside the networks' names
TRACES = "traces"  # the no-learning baselines' names (``no_learning``)
RUNNING_SUMS = "running_sums"
BASELINES = (INPUT_ONLY, TRACES, RUNNING_SUMS)  # names no network may take


# ----------------------------------------------------------------------------- results
# Every score is a test-task figure; None where it is undefined (e.g. a target that does not vary).
@dataclasses.dataclass(frozen=True)
class InputOnly(Record):
    """One input-only baseline of the report: the last ``lags`` inputs and a one-hot of t ->
    the belief features."""

    lags: int  # k
    r2: float | None
    r2_posterior_mean: float | None
    per_dimension: tuple[float | None, ...]


@dataclasses.dataclass(frozen=True)
class HiddenAndMemory(Record):
    """The readout (hidden) alone beside the whole memory as probe inputs."""

    hidden: ControlScores
    memory: ControlScores


@dataclasses.dataclass(frozen=True)
class TruthDecoding(TruthBaselines):
    """``TruthBaselines`` and, per network and ``input_only``, the test MSE of decoding the truth.

    No "fraction of the achievable" is derived from it: for any read-out f of the history,
    ``E[(truth - f)^2] = bayes_minimum + E[(posterior mean - f)^2]``, so in the population that
    fraction is the R^2 of decoding the posterior mean, not a second test. The second test is
    ``ProbeControls.next_outcome`` (``metabelief.experiments.next_outcome``)."""

    mse: dict[str, float | None]


@dataclasses.dataclass(frozen=True)
class MLPHeadline(Record):
    """Differences of the MLP probes' R^2 (-> all features): the trained network's minus each
    baseline's; None where a side is missing or undefined."""

    trained_minus_input_only: float | None = None
    trained_minus_traces: float | None = None
    trained_minus_running_sums: float | None = None


@dataclasses.dataclass(frozen=True)
class Headline(Record):
    """Differences of hidden -> posterior means R^2: the network named ``trained`` minus the one
    named ``untrained``, minus the input-only baseline (the largest k) and minus each no-learning
    baseline, pooled and with time partialled out; and of the MLP probes' R^2 (all features), the
    trained network's minus each baseline's (``mlp``). None where a side is missing or undefined."""

    trained_minus_untrained: float | None = None
    within_time_trained_minus_untrained: float | None = None
    trained_minus_input_only: float | None = None
    within_time_trained_minus_input_only: float | None = None
    trained_minus_traces: float | None = None
    within_time_trained_minus_traces: float | None = None
    trained_minus_running_sums: float | None = None
    within_time_trained_minus_running_sums: float | None = None
    mlp: MLPHeadline = MLPHeadline()


@dataclasses.dataclass(frozen=True)
class ProbeControls(Record):
    """``probe_controls``: the controls beside the probes of each named network (see there)."""

    split_sizes: tuple[int, int, int]
    input_lags: tuple[int, ...]
    per_dimension: dict[str, tuple[float | None, ...]]
    input_only: tuple[InputOnly, ...]
    within_time: dict[str, ControlScores]
    hidden_and_memory: dict[str, HiddenAndMemory]
    truth: TruthDecoding
    headline: Headline
    trace_time_constants: tuple[float, ...]
    no_learning: dict[str, InputOnlyScores]  # TRACES, RUNNING_SUMS
    mlp: dict[str, float | None]  # R^2 of MLP probes: networks (given), INPUT_ONLY, TRACES, RUNNING_SUMS
    next_outcome: NextOutcome | None


def probe_controls(
    family: TaskFamily,
    agent: Agent,
    networks: Mapping[str, PyTree],
    history: Trajectory,
    sizes: Sequence[int],
    *,
    input_lags: Sequence[int] = (1, 5),
    trace_time_constants: Sequence[float] = no_learning.DEFAULT_TIME_CONSTANTS,
    ridge_grid: Sequence[float] = probes.DEFAULT_RIDGE_GRID,
    key: jax.Array | None = None,
    mlp_steps: int = 1000,
    network_mlp_r2: Mapping[str, float | None] | None = None,
) -> ProbeControls:
    """Probes of each network's hidden state for the belief, next to the controls that calibrate them.

    Args:
      family: the task family ``history`` was recorded on.
      agent: the recurrent agent's sizes; ``networks`` maps names to its parameters (e.g.
        ``{"trained": params, "untrained": initial_params}``), each replayed on ``history``.
      history: the held-out trajectory (arrays ``[T (+ 1), N, ...]``) with exact belief
        ``features [T, N, F]`` and ``truth [T, N, D]``; the first ``D`` features are the posterior
        means of the truth.
      sizes: ``(train, validation, test)`` numbers of task lanes, consecutive blocks of the N.
      input_lags: the numbers ``k`` of most recent network inputs of the input-only baselines.
      trace_time_constants: the time constants (steps) of the exponential traces.
      ridge_grid: candidate relative ridge strengths (see ``probes.fit_ridge``).
      key: for the MLP probes of the input-only baseline (the largest k) and the no-learning
        baselines (``probes.mlp_probe``, ``mlp_steps`` steps); without it they are not fitted.
      network_mlp_r2: each network's MLP probe R^2 (hidden -> all features, from
        ``metabelief.experiments.probing``), reported beside the baselines' and in the headline.

    Returns:
      A ``ProbeControls`` (``None`` where a score is undefined, e.g. a target that does not vary;
      its ``to_dict()`` is the JSON form, with these keys):

      - ``split_sizes``: ``(train, validation, test)``; ``input_lags``: ``(k, ...)``, ascending.
      - ``per_dimension[name]``: ``[F]`` test R^2 of hidden -> each belief feature, one probe each.
      - ``input_only``: one ``InputOnly`` per k of ``input_lags`` (ascending): ``lags`` (k), ``r2``,
        ``r2_posterior_mean``, ``per_dimension`` ``[F]``: the last k inputs and a one-hot of t ->
        the belief features (``r2``: all F features, pooled; ``r2_posterior_mean``: the D
        posterior means).
      - ``within_time[name]`` and ``within_time["input_only"]`` (the largest k):
        ``{"r2", "r2_posterior_mean"}`` with time partialled out.
      - ``hidden_and_memory[name]``: ``{"hidden": {"r2", "r2_posterior_mean"},
        "memory": {"r2", "r2_posterior_mean"}}`` (the whole memory, ``agent.memory``).
      - ``truth``: ``{"bayes_minimum", "prior", "mse": {name..., "input_only"}}``: test MSE of
        decoding the truth, the exact posterior mean's MSE and the train-tasks mean's MSE.
      - ``headline``: ``Headline``'s differences (networks named ``trained`` and ``untrained``).
      - ``trace_time_constants``: as given.
      - ``no_learning["traces" | "running_sums"]``: ``InputOnlyScores`` (as ``input_only``'s,
        with ``within_time`` and ``truth_mse``) of the exponential traces (all time constants
        together) and of the running sums of ``no_learning.outcome_inputs``, each with a one-hot
        of t.
      - ``mlp[name | "input_only" | "traces" | "running_sums"]``: test R^2 of an MLP probe ->
        all F features: the networks' as given, the baselines' (each with the step t as one more
        input) fitted here, None without ``key``.
      - ``next_outcome``: ``next_outcome.NextOutcome`` of each network's whole memory and of each
        baseline (with the step t): the log-loss of predicting the reward of the action taken
        against the exact posterior predictive's; None unless the family has ``ExpectedRewards``
        and its rewards are 0 or 1.
    """
    num_tasks = history.actions.shape[1]
    sizes = check_sizes(sizes, num_tasks)
    lags = check_lags(input_lags)
    time_constants = no_learning.check_time_constants(trace_time_constants)
    mlp_steps = integer_at_least("mlp_steps", mlp_steps, 1)
    if not networks:
        raise ValueError("networks must name at least one parameter set, got none")
    for name in networks:
        if not isinstance(name, str) or name in BASELINES:
            raise ValueError(f"networks must be named by strings other than {BASELINES}, got {name!r}")
    check_targets(history.features, history.truth)

    memories = {name: replay_jit(family, agent, params, history).memory for name, params in networks.items()}
    lagged = {lag: lagged_inputs(agent, history, lag) for lag in lags}
    outcomes = no_learning.outcome_inputs(agent, history)
    baselines = {
        INPUT_ONLY: lagged[lags[-1]],  # the largest k, which also gives the other controls
        TRACES: no_learning.exponential_traces(outcomes, time_constants),
        RUNNING_SUMS: no_learning.running_sums(outcomes),
    }
    # Every probe input padded to the widest, so each probe program is compiled once for them all.
    width = max(x.shape[-1] for x in (*memories.values(), *lagged.values(), *baselines.values()))
    arguments = dict(ridge_grid=ridge_grid, width=width)
    scores = {
        name: network_scores(memory, agent.hidden_size, history.features, history.truth, sizes, **arguments)
        for name, memory in memories.items()
    }
    input_only = []
    for lag, inputs in lagged.items():  # ascending: the last is the largest k
        baseline, _ = input_only_scores(inputs, history.features, history.truth, sizes, **arguments)
        input_only.append(
            InputOnly(
                lags=lag,
                r2=baseline.r2,
                r2_posterior_mean=baseline.r2_posterior_mean,
                per_dimension=baseline.per_dimension,
            )
        )
    unlearned = {
        name: input_only_scores(x, history.features, history.truth, sizes, **arguments)[0]
        for name, x in baselines.items()
        if name != INPUT_ONLY
    }
    within_time = {name: network.within_time for name, network in scores.items()}
    within_time[INPUT_ONLY] = baseline.within_time
    mse = {name: network.truth_mse for name, network in scores.items()}
    mse[INPUT_ONLY] = baseline.truth_mse

    timed = {name: with_time(x) for name, x in baselines.items()}
    mlp_r2 = dict(network_mlp_r2 or {}) | _mlp_r2(key, timed, history.features, sizes, mlp_steps)
    baselines_truth = truth_baselines(history.features, history.truth, sizes)
    pooled = {name: network.hidden.r2_posterior_mean for name, network in scores.items()}
    pooled[INPUT_ONLY] = input_only[-1].r2_posterior_mean
    within = {name: value.r2_posterior_mean for name, value in within_time.items()}
    for name, values in unlearned.items():
        pooled[name], within[name] = values.r2_posterior_mean, values.within_time.r2_posterior_mean
    return ProbeControls(
        split_sizes=sizes,
        input_lags=lags,
        per_dimension={name: network.per_dimension for name, network in scores.items()},
        input_only=tuple(input_only),
        within_time=within_time,
        hidden_and_memory={
            name: HiddenAndMemory(hidden=network.hidden, memory=network.memory)
            for name, network in scores.items()
        },
        truth=TruthDecoding(
            bayes_minimum=baselines_truth.bayes_minimum, prior=baselines_truth.prior, mse=mse
        ),
        headline=_headline(pooled, within, mlp_r2),
        trace_time_constants=time_constants,
        no_learning=unlearned,
        mlp=mlp_r2,
        next_outcome=next_outcome(family, history, [memories, timed], sizes),
    )


def with_time(inputs: jax.Array) -> jax.Array:
    """``[T, N, d + 1]``: ``inputs [T, N, d]`` and the step t as one more column."""
    steps = jnp.broadcast_to(
        jnp.arange(inputs.shape[0], dtype=jnp.float32)[:, None, None], (*inputs.shape[:2], 1)
    )
    return jnp.concatenate([inputs.astype(jnp.float32), steps], axis=-1)


def _mlp_r2(
    key: jax.Array | None,
    inputs: Mapping[str, jax.Array],
    features: jax.Array,
    sizes: tuple[int, int, int],
    steps: int,
) -> dict[str, float | None]:
    """Test R^2 of the MLP probe (``probes.mlp_map``) of each named ``[T, N, d]`` input -> all
    ``features`` (pooled), each with its own key folded from ``key`` (None: not fitted, all None).

    The inputs are padded with zero columns to the widest (a zero column, standardised to zero,
    adds nothing) and the MLPs fitted side by side in one program, compiled once for them all.
    """
    if key is None:
        return dict.fromkeys(inputs)
    width = max(x.shape[-1] for x in inputs.values())
    padded = jnp.stack([jnp.pad(x, ((0, 0), (0, 0), (0, width - x.shape[-1]))) for x in inputs.values()])
    keys = jnp.stack([jax.random.fold_in(key, index) for index in range(len(inputs))])
    scores = jax.device_get(_mlp_scores(keys, padded, features, sizes, steps))
    return {name: finite_or_none(r2) for name, r2 in zip(inputs, scores, strict=True)}


@jax.jit(static_argnames=("sizes", "steps"))
def _mlp_scores(keys, inputs, features, sizes, steps):
    """``[K]``: the test R^2 of ``probes.mlp_map`` on each of the ``inputs [K, T, N, d]``."""
    train, validation, test = (sample_rows(y) for y in split_lanes(features, sizes))

    def one(key, x):
        x_train, x_validation, x_test = (sample_rows(block) for block in split_lanes(x, sizes))
        predictions = probes.mlp_map(
            key, (x_train, train), (x_validation, validation), x_test, num_steps=steps
        )
        return probes.score_arrays(predictions, test).r2

    return jax.vmap(one)(keys, inputs)


# ----------------------------------------------------------------------------- reporting
def _headline(
    pooled: dict[str, float | None], within: dict[str, float | None], mlp: dict[str, float | None]
) -> Headline:
    """``Headline`` from hidden -> posterior means R^2 per name (networks and ``BASELINES``),
    pooled and within time, and from the MLP probes' R^2 per name."""

    def minus(scores: dict[str, float | None], other: str) -> float | None:
        return _difference(scores.get("trained"), scores.get(other))

    return Headline(
        trained_minus_untrained=minus(pooled, "untrained"),
        within_time_trained_minus_untrained=minus(within, "untrained"),
        trained_minus_input_only=minus(pooled, INPUT_ONLY),
        within_time_trained_minus_input_only=minus(within, INPUT_ONLY),
        trained_minus_traces=minus(pooled, TRACES),
        within_time_trained_minus_traces=minus(within, TRACES),
        trained_minus_running_sums=minus(pooled, RUNNING_SUMS),
        within_time_trained_minus_running_sums=minus(within, RUNNING_SUMS),
        mlp=MLPHeadline(
            trained_minus_input_only=minus(mlp, INPUT_ONLY),
            trained_minus_traces=minus(mlp, TRACES),
            trained_minus_running_sums=minus(mlp, RUNNING_SUMS),
        ),
    )


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else float(a - b)
