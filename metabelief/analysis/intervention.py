"""A causal test of the decoded belief: push the agent's memory along it, does behaviour follow?

Probes show that the posterior is *decodable* from the agent's memory; they do not show that the
agent *uses* it. Here the whole memory is moved so that the decoded belief changes, the agent is
run on from the pushed memory, and the change of its policy is compared with how much the same
belief moves its policy in its own, unperturbed behaviour:

1. **Read-out.** Ridge regression ``memory [M] -> posterior means [D]`` (the whole memory,
   ``agent.memory``: the LSTM's ``[h, c]``; the first ``D`` belief features, ``D`` = the width of
   ``history.truth``), fitted on the train and validation lanes with
   ``metabelief.probes.linear_probe`` (ridge strength chosen on validation, refit on both) and
   scored on the test lanes; its weights are ``W [M, D]``.
2. **Metric.** ``Σ``, the covariance of the memory on the same fit lanes (scatter / count), its
   eigenvalues floored at ``COVARIANCE_FLOOR`` times their mean so a unit that never moves does
   not make it singular. The size of a push ``v`` is its Mahalanobis norm
   ``||v||_Σ = sqrt(v' Σ^-1 v)``: 1 is one standard deviation of ordinary activity along ``v``
   (a memory sample lies at ``sqrt(M)`` from the mean on average).
3. **Pushes**, per unit ``δ`` of decoded belief ``d`` (``target.feature``), all computed on the
   host in float64:

   * ``minimum_mahalanobis``: ``u = Σ W (W' Σ W)^+ e_d``, the smallest push in the activity's
     metric that moves read-out ``d`` by 1 and the other read-outs by 0. It lies in the span of
     ``Σ W``, the span of the encoding directions. Its Mahalanobis norm ``n`` per unit δ
     (``mahalanobis_per_unit``) sets the size of every push: at dose δ each push has norm ``|δ| n``.
   * ``minimum_euclidean``: ``(W')^+ e_d``, the smallest push in the Euclidean metric with the
     same effect on the read-out (mostly off the activity: much larger in ``Σ``'s metric),
     rescaled to Mahalanobis norm ``n``.
   * ``encoding``: row ``d`` of the ridge regression posterior means -> memory, how the memory
     moves with mean ``d`` with the other means fixed (``encoding_direction``), rescaled to ``n``.
   * ``random``: ``num_random`` directions ``Σ^½ z / ||z|| n`` with ``z ~ N(0, I)``: uniform on
     the sphere of Mahalanobis radius ``n`` (``random_pushes``), the control every steering
     result needs: what a push of the same size in no particular direction does.

   Rescaled, a push moves the read-out by ``W' v`` per unit δ (``read_out_per_unit``; ``e_d``
   for ``minimum_mahalanobis``): pushes of the same size, compared by how much decoded belief
   they carry and how much behaviour they move.
4. **Response**, on the TEST lanes, at every counted decision ``t`` (``target.decisions``): the
   memory at ``t`` is replaced by ``memory + δ v`` (every part of it). Step ``k = 0``: the policy
   head on the pushed readout (``agent.heads`` of its first ``H`` entries). Steps ``k = 1 ..
   trace_steps``: the agent is stepped from ``carry_from_memory(memory + δ v)`` on the history's
   inputs of steps ``t + 1 .. t + k`` (teacher forcing: the recorded actions and outcomes) and its
   policy at ``t + k`` is read. The measure is the change of the log-odds of the target action,
   ``log p / (1 - p)``, against the same computation from the unpushed memory, averaged over the
   pairs ``(t, lane)`` where ``t`` and ``t + k`` are counted decisions in the episode
   (``num_steps[k]`` of them). ``log_odds_slope[k]``: the least-squares slope through the origin
   of that mean change on the decoded change ``δ (W' v)_d`` across the δ grid (None for a push
   that does not move read-out ``d``).
5. **Observational sensitivity** (``observational_slope``): a logistic regression of the agent's
   choices of the target action on ``[1, the D exact posterior means]`` over the counted test
   steps, fitted to its action probabilities (the expected log-likelihood of its choices: no
   sampling noise): the coefficient of mean ``d``, the change of log-odds per unit of belief
   ``d`` with the other means fixed, as the pushes hold the other read-outs fixed. The same fit
   of a reference policy's probabilities (``references``, e.g. the Bayes-optimal DP's on the
   exact beliefs: ``belief_policy_probs``) gives ``reference_slopes``. None where the fit does not
   converge (a policy that is a step function of the means, e.g. two-step's belief-greedy = its
   DP, has an unbounded slope).
6. **causal_to_observational[k]** = ``log_odds_slope[k] / observational_slope``: 1 when pushing
   the decoded belief moves the agent's log-odds as much as the belief moves them in its own
   behaviour, 0 when the agent ignores the push. The observational slope pools every counted
   step, so what co-varies with the belief across steps (time, counts) enters it; the causal
   slope holds them fixed.

Targets: ``bandit_arm_target(family, arm=0)`` (feature = the posterior mean of ``arm``, action =
``arm``) and ``two_step_target(family)`` (feature 0 = P(A rich), action ``STATE_A`` = 0, the
first-stage action whose common transition leads to A; one agent step per trial, so every step is
a first-stage decision and step ``k`` is the ``k``-th next trial's).

Usage::

    target = bandit_arm_target(family)
    dp = {"bayes_optimal": belief_policy_probs(family, baselines.bayes_optimal(family), history, 0)}
    report = dose_response(family, agent, {"trained": params, "untrained": initial}, history,
                           split_sizes(num_tasks), target=target, key=key, references=dp)
    report["trained"].pushes["minimum_mahalanobis"].causal_to_observational  # per step k
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metabelief import probes
from metabelief.agents.base import Agent
from metabelief.analysis.records import Record
from metabelief.rollout import (
    Trajectory,
    fit_validate_test,
    history_inputs,
    lane_moments,
    replay_beliefs,
    replay_jit,
    split_lanes,
)
from metabelief.tasks.base import PyTree, TaskFamily
from metabelief.tasks.two_step import STATE_A, TwoStep


def dose_grid(num_doses: int) -> tuple[float, ...]:
    """``num_doses`` decoded belief shifts evenly from -0.3 to 0.3 (``dose_response``'s ``deltas``)."""
    return tuple(round(float(d), 6) for d in np.linspace(-0.3, 0.3, num_doses))


DEFAULT_NUM_DOSES = 9
DEFAULT_DELTAS = dose_grid(DEFAULT_NUM_DOSES)  # -0.3, -0.225, ..., 0.3
DEFAULT_TRACE_STEPS = 5
DEFAULT_NUM_RANDOM = 8
COVARIANCE_FLOOR = 1e-6  # eigenvalues of Σ below this times their mean are raised to it
PUSHES = ("minimum_mahalanobis", "minimum_euclidean", "encoding")
LOGISTIC_ITERATIONS = 60


# ----------------------------------------------------------------------------- targets
def every_step(history: Trajectory) -> jax.Array:
    """``bool[T, N]``: every step of the history is a decision that counts."""
    return jnp.ones(history.actions.shape, bool)


@dataclasses.dataclass(frozen=True)
class InterventionTarget:
    """Which belief feature is pushed and which action's log-odds are watched.

    Fields:
      name: a description for reports and plots.
      feature: ``d``, the index of a posterior mean in the belief features (``< D``, the read-out
        covers the first ``D`` features).
      action: the action whose log-odds are measured.
      decisions: history -> ``bool[T, N]``, the steps where the choice counts.
    """

    name: str
    feature: int
    action: int
    decisions: Callable[[Trajectory], jax.Array] = every_step


def bandit_arm_target(family: TaskFamily, arm: int = 0) -> InterventionTarget:
    """Push the posterior mean of ``arm`` (feature ``arm``); watch the log-odds of pulling ``arm``."""
    num_arms = getattr(family, "num_arms", None)
    if not isinstance(num_arms, int):
        raise ValueError(f"bandit_arm_target needs a bandit family (with num_arms), got {family!r}")
    if not (isinstance(arm, int) and 0 <= arm < num_arms):
        raise ValueError(f"arm must be an arm index in [0, {num_arms}), got {arm!r}")
    return InterventionTarget(
        name=f"posterior mean of arm {arm} -> log-odds of arm {arm}", feature=arm, action=arm
    )


def two_step_target(family: TaskFamily) -> InterventionTarget:
    """Push P(A rich) (feature 0); watch the log-odds of the first-stage action whose common
    transition leads to A (action ``STATE_A`` = 0). One agent step per trial."""
    if not isinstance(family, TwoStep):
        raise ValueError(f"two_step_target needs a two_step family, got {family!r}")
    return InterventionTarget(
        name="P(A rich) -> log-odds of the action commonly leading to A", feature=0, action=STATE_A
    )


# ----------------------------------------------------------------------------- results
@dataclasses.dataclass(frozen=True)
class PushResponse(Record):
    """The responses to one push direction, at Mahalanobis norm ``|δ| mahalanobis_per_unit``."""

    read_out_per_unit: tuple[float, ...]  # W' v per unit δ: e_d for minimum_mahalanobis
    decoded_per_unit: float  # (W' v)_d: the decoded change of belief d per unit δ
    euclidean_norm: float  # ||v|| per unit δ
    mahalanobis_norm: float  # ||v||_Σ per unit δ: mahalanobis_per_unit for every push
    log_odds: tuple[tuple[float | None, ...], ...]  # [k][δ]: mean change of log-odds k steps after the push
    log_odds_slope: tuple[float | None, ...]  # [k]: per unit of decoded change δ (W' v)_d
    causal_to_observational: tuple[float | None, ...]  # [k]: log_odds_slope / observational_slope


@dataclasses.dataclass(frozen=True)
class RandomResponse(Record):
    """The responses to ``num_directions`` random pushes of the same Mahalanobis norm."""

    num_directions: int
    log_odds_mean: tuple[tuple[float | None, ...], ...]  # [k][δ]: mean over directions of the mean change
    log_odds_std: tuple[tuple[float | None, ...], ...]  # [k][δ]: its standard deviation over directions


@dataclasses.dataclass(frozen=True)
class DoseResponse(Record):
    """One network's responses to pushes of its memory (``dose_response``). ``to_dict()`` is its
    JSON form (``None`` for a mean over no step or an undefined slope)."""

    target: str  # the target's name
    deltas: tuple[float, ...]  # decoded belief shifts of the minimum_mahalanobis push
    mahalanobis_per_unit: float  # ||u||_Σ of minimum_mahalanobis per unit δ: every push's size
    num_steps: tuple[int, ...]  # [k]: (t, lane) pairs averaged over, k steps after the push
    observational_slope: float | None  # the agent's log-odds per unit of exact belief d (logistic fit)
    reference_slopes: dict[str, float | None]  # the same fit of each reference policy
    read_out_r2: float | None  # test R^2 of the read-out memory -> the D posterior means
    read_out_r2_target: float | None  # ... of the target dimension d
    ridge: float  # the read-out's ridge strength
    pushes: dict[str, PushResponse]  # minimum_mahalanobis, minimum_euclidean, encoding
    random: RandomResponse


# ----------------------------------------------------------------------------- the pushes
def activity_covariance(moments: probes.Moments, size: int) -> np.ndarray:
    """``Σ`` float64 ``[size, size]``: the covariance (scatter / count) of the first ``size``
    statistics pooled over the train and validation splits, eigenvalues floored at
    ``COVARIANCE_FLOOR`` times their mean."""
    pooled = probes.pool(moments, [0, 1])
    covariance = np.asarray(pooled.scatter, np.float64)[:size, :size] / float(pooled.count)
    values, vectors = np.linalg.eigh((covariance + covariance.T) / 2)
    values = np.maximum(values, COVARIANCE_FLOOR * max(values.mean(), 1e-30))
    return (vectors * values) @ vectors.T


def mahalanobis_norm(push: np.ndarray, covariance: np.ndarray) -> float:
    """``sqrt(v' Σ^-1 v)``."""
    push = np.asarray(push, np.float64)
    return float(np.sqrt(push @ np.linalg.solve(covariance, push)))


def minimum_euclidean_push(weights: np.ndarray | jax.Array, dimension: int) -> np.ndarray:
    """``(W')^+ e_d``, float64 ``[M]``: the smallest push (Euclidean) with ``W' u = e_d`` (exactly
    when ``W [M, D]`` has full column rank; else the least-squares best)."""
    weights = np.asarray(weights, np.float64)
    return np.linalg.pinv(weights.T) @ np.eye(weights.shape[1])[dimension]


def minimum_mahalanobis_push(
    weights: np.ndarray | jax.Array, covariance: np.ndarray, dimension: int
) -> np.ndarray:
    """``Σ W (W' Σ W)^+ e_d``, float64 ``[M]``: the push of smallest ``||u||_Σ`` with ``W' u = e_d``
    (the Lagrange solution of minimising ``u' Σ^-1 u`` under that constraint)."""
    weights = np.asarray(weights, np.float64)
    spread = covariance @ weights  # [M, D]
    return spread @ np.linalg.pinv(weights.T @ spread) @ np.eye(weights.shape[1])[dimension]


def random_pushes(key: jax.Array, covariance: np.ndarray, num: int, norm: float) -> np.ndarray:
    """``[num, M]`` float64: ``Σ^½ z / ||z|| norm``, ``z ~ N(0, I)`` drawn from ``key``: uniform on
    the sphere of Mahalanobis radius ``norm``."""
    values, vectors = np.linalg.eigh(covariance)
    root = (vectors * np.sqrt(np.maximum(values, 0.0))) @ vectors.T
    z = np.asarray(jax.random.normal(key, (num, covariance.shape[0])), np.float64)
    return (z / np.linalg.norm(z, axis=-1, keepdims=True)) @ root * norm


def scaled_to(push: np.ndarray, covariance: np.ndarray, norm: float) -> np.ndarray:
    """``push`` rescaled to Mahalanobis norm ``norm`` (a zero push stays zero)."""
    size = mahalanobis_norm(push, covariance)
    return push * (norm / size) if size > 0 else push


def fit_read_out(
    agent: Agent, replayed: Trajectory, sizes: tuple[int, int, int], num_means: int
) -> tuple[probes.LinearProbeResult, probes.Moments]:
    """The linear read-out whole memory -> the first ``num_means`` belief features
    (``linear_probe``: fitted on the train and validation lanes, scored on the test lanes), and the
    lane moments of ``[memory, features]`` it was fitted from."""
    moments = lane_moments(replayed.memory, replayed.features, sizes)
    memory = slice(0, agent.memory_size)
    means = slice(agent.memory_size, agent.memory_size + num_means)
    return probes.linear_probe(moments, memory, means), moments


def encoding_direction(agent: Agent, moments: probes.Moments, num_means: int, dimension: int) -> np.ndarray:
    """``[M]``: how the memory moves, on average, per unit of posterior mean ``dimension`` with the
    other means held fixed: row ``dimension`` of the ridge regression posterior means -> memory
    (fitted on the train and validation lanes of ``moments``, statistics of ``[memory, features]``)."""
    memory = slice(0, agent.memory_size)
    means = slice(agent.memory_size, agent.memory_size + num_means)
    return np.asarray(probes.linear_probe(moments, means, memory).probe.weights[dimension], np.float64)


# ----------------------------------------------------------------------------- the comparators
def observational_slope(features: jax.Array, probs: jax.Array, mask: jax.Array, feature: int) -> float | None:
    """The coefficient of ``features[..., feature]`` in the logistic regression of choices with
    probabilities ``probs [...]`` on ``[1, features [..., D]]`` over the steps ``mask``; None when
    Newton's method does not converge (a separable policy: the slope is unbounded)."""
    fit = _logistic_fit(features, probs, mask)
    return float(fit.weights[feature]) if bool(fit.converged) else None


@jax.jit
def _logistic_fit(features: jax.Array, probs: jax.Array, mask: jax.Array) -> probes.LogisticFit:
    """``logit P = features @ w + b`` fitted to the soft labels ``probs`` on the steps ``mask``."""
    rows = features.reshape(-1, features.shape[-1])
    weights = mask.reshape(-1).astype(jnp.float32)
    return probes.fit_logistic(rows, probs.reshape(-1), weights, steps=LOGISTIC_ITERATIONS, damping=1e-9)


def belief_policy_probs(family: TaskFamily, policy: object, history: Trajectory, action: int) -> jax.Array:
    """``float32[T, N]``: P(``action``) of a belief policy with ``action_probs(belief)`` (e.g.
    ``metabelief.baselines.bayes_optimal``) on the exact belief at every step of ``history``."""
    if not callable(getattr(policy, "action_probs", None)):
        raise ValueError(f"policy must have action_probs(belief) (e.g. the Bayes-optimal DP), got {policy!r}")
    return _belief_policy_probs(family, policy, history, action)


@functools.partial(jax.jit, static_argnums=(0, 1, 3))
def _belief_policy_probs(family: TaskFamily, policy: object, history: Trajectory, action: int) -> jax.Array:
    beliefs = replay_beliefs(family, history)  # leaves [T, N, ...]
    return jax.vmap(jax.vmap(policy.action_probs))(beliefs)[..., action]


def slope_through_origin(response: Sequence[float], dose: Sequence[float]) -> float | None:
    """``sum response * dose / sum dose^2``; None when the dose is all zero or a response undefined."""
    response, dose = np.asarray(response, np.float64), np.asarray(dose, np.float64)
    denominator = float(np.sum(dose**2))
    slope = float(np.sum(response * dose) / denominator) if denominator > 1e-24 else float("nan")
    return None if np.isnan(slope) else slope


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``; None when either is undefined or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0.0:
        return None
    return numerator / denominator


# ----------------------------------------------------------------------------- responses
def dose_response(
    family: TaskFamily,
    agent: Agent,
    networks: dict[str, PyTree],
    history: Trajectory,
    sizes: Sequence[int],
    *,
    target: InterventionTarget,
    key: jax.Array,
    deltas: Sequence[float] = DEFAULT_DELTAS,
    trace_steps: int = DEFAULT_TRACE_STEPS,
    num_random: int = DEFAULT_NUM_RANDOM,
    references: Mapping[str, jax.Array] | None = None,
) -> dict[str, DoseResponse]:
    """The agent's response to pushes of its whole memory along the decoded belief, per network.

    Args:
      family, agent: the task family and the agent.
      networks: name -> parameters (e.g. ``{"trained": ..., "untrained": ...}``); each replays
        ``history`` (teacher forcing), so all are tested on the same histories.
      history: a held-out trajectory ``[T, N, ...]`` recorded with beliefs.
      sizes: ``(train, validation, test)`` lanes (``metabelief.experiments.probing.split_sizes``).
      target: ``bandit_arm_target(family)``, ``two_step_target(family)`` or your own.
      key: draws the random directions (the same for every network).
      deltas: decoded belief shifts of the minimum-Mahalanobis push (the dose grid).
      trace_steps: ``K``: responses are read 0 .. K steps after the push.
      num_random: random directions of the same Mahalanobis norm (at least 2).
      references: name -> P(target action) ``[T, N]`` of a reference policy on ``history``'s steps
        (``belief_policy_probs``), for ``reference_slopes``.

    Returns:
      ``{name: DoseResponse}`` (see the module docstring and ``DoseResponse``'s fields).
    """
    sizes, deltas_array = _check(agent, networks, history, sizes, target, deltas, trace_steps, num_random)
    decisions = jnp.asarray(target.decisions(history), bool)  # [T, N]
    if decisions.shape != history.actions.shape:
        raise ValueError(
            f"target.decisions must give bool{list(history.actions.shape)}, got {decisions.shape}"
        )
    references = dict(references or {})
    for name, probs in references.items():
        if np.shape(probs) != history.actions.shape:
            raise ValueError(f"references[{name!r}] must be P(target action) [T, N], got {np.shape(probs)}")
    masks, test_means, inputs = _prepare(agent, sizes, trace_steps, history, decisions)
    context = _Context(
        target=target,
        sizes=sizes,
        deltas=deltas_array,
        masks=masks,
        test_means=test_means,
        inputs=inputs,
        key=key,
        num_random=num_random,
    )
    reference_slopes = {
        name: observational_slope(
            test_means, _test_lanes(jnp.asarray(probs, jnp.float32), sizes), masks[0], target.feature
        )
        for name, probs in references.items()
    }
    return {
        name: _network_response(family, agent, params, history, context, reference_slopes)
        for name, params in networks.items()
    }


@dataclasses.dataclass(frozen=True)
class _Context:
    """What every network's response shares (prepared once by ``dose_response``)."""

    target: InterventionTarget
    sizes: tuple[int, int, int]
    deltas: np.ndarray  # [J] float64
    masks: jax.Array  # bool[K + 1, T, n]: (t, lane) counted k steps after a push at t
    test_means: jax.Array  # [T, n, D]: the exact posterior means on the test lanes
    inputs: jax.Array  # [K, T, n, I]: the input k + 1 steps after each step
    key: jax.Array
    num_random: int


def _network_response(
    family: TaskFamily,
    agent: Agent,
    params: PyTree,
    history: Trajectory,
    context: _Context,
    reference_slopes: dict[str, float | None],
) -> DoseResponse:
    """One network's ``DoseResponse``."""
    target, deltas = context.target, context.deltas
    num_means = history.truth.shape[-1]
    replayed = replay_jit(family, agent, params, history)
    read_out, moments = fit_read_out(agent, replayed, context.sizes, num_means)
    weights = np.asarray(read_out.probe.weights, np.float64)  # [M, D]
    covariance = activity_covariance(moments, agent.memory_size)
    reference = minimum_mahalanobis_push(weights, covariance, target.feature)
    norm = mahalanobis_norm(reference, covariance)
    directions = {
        "minimum_mahalanobis": reference,
        "minimum_euclidean": scaled_to(minimum_euclidean_push(weights, target.feature), covariance, norm),
        "encoding": scaled_to(
            encoding_direction(agent, moments, num_means, target.feature), covariance, norm
        ),
    }
    random = random_pushes(context.key, covariance, context.num_random, norm)
    every = np.concatenate([np.stack(list(directions.values())), random])  # [P, M]
    memory, test_logits = _test_lanes(
        (replayed.memory, replayed.logits), context.sizes
    )  # [T, n, M], [T, n, A]
    changes = np.asarray(
        _mean_log_odds_changes(
            agent,
            target.action,
            params,
            memory,
            context.inputs,
            context.masks,
            jnp.asarray(deltas[None, :, None] * every[:, None, :], jnp.float32).reshape(-1, every.shape[-1]),
        ),
        np.float64,
    ).reshape(len(every), len(deltas), -1)  # [P, J, K + 1]
    agent_probs = _softmax_of(test_logits, target.action)
    slope = observational_slope(context.test_means, agent_probs, context.masks[0], target.feature)
    pushes = {
        name: _push_response(direction, changes[index], weights, covariance, deltas, target.feature, slope)
        for index, (name, direction) in enumerate(directions.items())
    }
    random_changes = changes[len(directions) :].transpose(0, 2, 1)  # [R, K + 1, J]
    scores = read_out.test.to_dict()
    return DoseResponse(
        target=target.name,
        deltas=tuple(float(d) for d in deltas),
        mahalanobis_per_unit=norm,
        num_steps=tuple(int(m) for m in np.asarray(context.masks).sum(axis=(1, 2))),
        observational_slope=slope,
        reference_slopes=reference_slopes,
        read_out_r2=scores["r2"],
        read_out_r2_target=scores["r2_per_dim"][target.feature],
        ridge=float(read_out.ridge),
        pushes=pushes,
        random=RandomResponse(
            num_directions=len(random),
            log_odds_mean=_nested(random_changes.mean(axis=0)),
            log_odds_std=_nested(random_changes.std(axis=0, ddof=1)),
        ),
    )


def _push_response(direction, changes, weights, covariance, deltas, feature, slope) -> PushResponse:
    """``PushResponse`` of ``direction [M]`` from its mean changes ``[J, K + 1]`` per dose."""
    per_unit = weights.T @ direction  # [D]
    slopes = tuple(
        slope_through_origin(changes[:, k], deltas * per_unit[feature]) for k in range(changes.shape[1])
    )
    return PushResponse(
        read_out_per_unit=tuple(float(v) for v in per_unit),
        decoded_per_unit=float(per_unit[feature]),
        euclidean_norm=float(np.linalg.norm(direction)),
        mahalanobis_norm=mahalanobis_norm(direction, covariance),
        log_odds=_nested(changes.T),
        log_odds_slope=slopes,
        causal_to_observational=tuple(ratio(s, slope) for s in slopes),
    )


@functools.partial(jax.jit, static_argnames=("agent", "sizes", "trace_steps"))
def _prepare(
    agent: Agent, sizes: tuple[int, int, int], trace_steps: int, history: Trajectory, decisions: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """On the test lanes: the trace masks ``bool[K + 1, T, n]``, the exact posterior means
    ``[T, n, D]`` and the trace inputs ``[K, T, n, I]``."""
    test = _test_lanes(history, sizes)
    masks = _trace_masks(_test_lanes(decisions, sizes), trace_steps)
    inputs = _trace_inputs(history_inputs(agent, test), trace_steps)
    return masks, test.features[..., : history.truth.shape[-1]], inputs


@functools.partial(jax.jit, static_argnames=("sizes",))
def _test_lanes(tree: PyTree, sizes: tuple[int, int, int]) -> PyTree:
    """Every leaf ``[T, N, ...]`` of ``tree`` on the test lanes ``[T, n, ...]``."""
    return jax.tree.map(lambda leaf: split_lanes(leaf, sizes)[2], tree)


@functools.partial(jax.jit, static_argnames=("action",))
def _softmax_of(logits: jax.Array, action: int) -> jax.Array:
    return jax.nn.softmax(logits)[..., action]


def _trace_masks(decisions: jax.Array, trace_steps: int) -> jax.Array:
    """``bool[K + 1, T, N]``: step t counts at lag k when t and t + k are decisions of the episode."""
    later = [jnp.concatenate([decisions[k:], jnp.zeros_like(decisions[:k])]) for k in range(trace_steps + 1)]
    return decisions[None] & jnp.stack(later)


def _trace_inputs(inputs: jax.Array, trace_steps: int) -> jax.Array:
    """``[K, T, n, I]``: entry ``[k - 1, t]`` is the input of step ``t + k`` (the last step's where
    ``t + k`` is past the episode: those pairs are masked)."""
    num_steps = inputs.shape[0]
    steps = jnp.minimum(
        jnp.arange(num_steps)[None, :] + jnp.arange(1, trace_steps + 1)[:, None], num_steps - 1
    )
    return inputs[steps]


def _log_odds(logits: jax.Array, action: int) -> jax.Array:
    """``log p / (1 - p)`` of ``action`` under ``softmax(logits [..., A])``, computed from the logits."""
    others = jnp.where(jnp.arange(logits.shape[-1]) == action, -jnp.inf, logits)
    return logits[..., action] - jax.nn.logsumexp(others, axis=-1)


@functools.partial(jax.jit, static_argnames=("agent", "action"))
def _mean_log_odds_changes(
    agent: Agent,
    action: int,
    params: PyTree,
    memory: jax.Array,  # [T, n, M]
    inputs: jax.Array,  # [K, T, n, I]
    masks: jax.Array,  # bool[K + 1, T, n]
    pushes: jax.Array,  # [Q, M]
) -> jax.Array:
    """``[Q, K + 1]``: per push, the mean change of the log-odds of ``action`` k steps after the
    memory at every step is pushed, against the same computation unpushed."""
    shape, size = memory.shape[:-1], memory.shape[-1]
    steps = inputs.reshape(inputs.shape[0], -1, inputs.shape[-1])  # [K, T * n, I]

    def trace(push):  # [K + 1, T, n]: log-odds 0 .. K steps after the push
        pushed = (memory + push).reshape(-1, size)
        now = _log_odds(agent.heads(params, pushed[:, : agent.hidden_size])[0], action)

        def one(carry, step_inputs):
            carry, logits, _ = agent.step(params, carry, step_inputs)
            return carry, _log_odds(logits, action)

        _, later = jax.lax.scan(one, agent.carry_from_memory(pushed), steps)
        return jnp.concatenate([now[None], later]).reshape(-1, *shape)

    baseline = trace(jnp.zeros(size, memory.dtype))
    counts = jnp.maximum(masks.sum(axis=(1, 2)), 1)
    mean_change = lambda push: jnp.where(masks, trace(push) - baseline, 0.0).sum(axis=(1, 2)) / counts  # noqa: E731
    changes = jax.lax.map(mean_change, pushes)
    return jnp.where(masks.any(axis=(1, 2)), changes, jnp.nan)


def _nested(values: np.ndarray) -> tuple[tuple[float | None, ...], ...]:
    return tuple(
        tuple(None if np.isnan(v) else float(v) for v in row) for row in np.asarray(values, np.float64)
    )


def _check(agent, networks, history, sizes, target, deltas, trace_steps, num_random):
    """Validated ``(sizes, deltas)``; a ValueError naming the first bad argument."""
    sizes = fit_validate_test(sizes, history.actions.shape[1])
    if not networks:
        raise ValueError("networks must name at least one parameter set")
    num_means = history.truth.shape[-1]
    if not (isinstance(target, InterventionTarget) and 0 <= target.feature < num_means):
        raise ValueError(
            f"target must be an InterventionTarget whose feature is one of the {num_means} posterior "
            f"means, got {target!r}"
        )
    if not 0 <= target.action < agent.num_actions:
        raise ValueError(f"target.action must be one of the {agent.num_actions} actions, got {target.action}")
    deltas = np.asarray(deltas, np.float64)
    if deltas.ndim != 1 or deltas.size == 0 or not np.isfinite(deltas).all() or not np.any(deltas):
        raise ValueError(
            f"deltas must be a non-empty 1-D sequence of finite numbers, not all 0, got {deltas!r}"
        )
    if not (isinstance(trace_steps, int) and 0 <= trace_steps < history.actions.shape[0]):
        raise ValueError(
            f"trace_steps must be an integer in [0, {history.actions.shape[0]}), got {trace_steps!r}"
        )
    if not (isinstance(num_random, int) and num_random >= 2):
        raise ValueError(f"num_random must be an integer >= 2, got {num_random!r}")
    return sizes, deltas
