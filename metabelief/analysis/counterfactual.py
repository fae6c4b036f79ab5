"""The counterfactual update test: does the agent's *transition* move its decoded belief as Bayes does?

Probes test the agent's state: is the posterior decodable from the memory? This tests its update:
from a recorded memory, every possible next outcome is fed through ONE agent step, and the change of
the decoded belief is compared with the exact Bayes update of the same belief.

1. **States.** The network replays a held-out history (teacher forcing, ``replay_jit``): ``m_t``
   ``[M]`` is its whole memory after reading step t's input (the LSTM's ``[h, c]``), ``b_t`` the
   exact belief given the same history (``replay_beliefs``), ``x(b)`` the belief's coordinates
   (default ``PosteriorMeans``: the first ``D`` belief features, D = the width of
   ``history.truth``; ``belief_leaves``: the belief pytree itself, e.g. the tiger's log-odds).
2. **Read-out.** Ridge ``memory -> x`` (``metabelief.probes.linear_probe``: fitted on the train
   lanes, ridge strength chosen on the validation lanes, refitted on both), weights ``W [M, F]``.
3. **Counterfactual outcomes** ``o = (action a, reward r, next observation o')`` at every test step:

   * a family with ``FiniteOutcomes``: every action x every outcome its posterior predictive lists
     (``outcomes(b_t, obs_t, a)``; an entry counts where its probability is positive);
   * ``BetaArms`` or ``DependentArms`` (rewards 0 or 1, no observation): every arm x reward {0, 1};
   * any other family (continuous rewards or observations): one sample, the outcome the history
     recorded (a draw from the posterior predictive of the action the agent took).

   For each: ``decoded = (m' - m_t) W`` with ``m' = memory(step(carry_from_memory(m_t),
   inputs(o', a, r, t + 1)))`` (the read-out's intercept cancels), and ``exact = x(b') - x(b_t)``
   with ``b' = belief_update(b_t, obs_t, a, r, o')``. One jitted call, every (step, lane, outcome)
   in one batch of agent steps.
4. **Fit, per outcome**, on the test lanes: the least-squares line of ``decoded`` on ``exact``
   pooled over steps, lanes and the F coordinates, each coordinate with its own intercept (so a
   change that is the same whatever the history, e.g. a clock's, is no evidence either way):
   ``slope = Sxy / Sxx`` and ``r2 = Sxy^2 / (Sxx Syy)`` with ``Sxy = sum_f sum_i (x - mean_f x)
   (y - mean_f y)``. Slope 1 and R^2 1: the decoded belief moves as Bayes moves it; slope 0: the
   update does not follow the evidence (an agent whose memory ignores its inputs); slope c: a
   fraction c of the Bayes update. ``r2`` is None where the decoded change does not vary,
   ``slope`` and ``r2`` where the exact change does not (an outcome that cannot happen, or
   coordinates whose change is the same after every history, as a Beta arm's counts).
   ``slope_all``, ``r2_all``: every outcome pooled, each outcome x coordinate with its own
   intercept.

What it can and cannot show: the read-out is refitted on the network's own states, so a network
whose state encodes the belief linearly and exactly passes by construction, whatever its
coordinates (a state that moves c times as far as the belief is read out with gain 1/c). The
test has power where the encoding is approximate, as in any trained network: a probe R^2 of 0.9
over states is dominated by the spread of beliefs built up over many steps, while one step's
update is a small difference of two states; decoding errors that are not shared by ``m_t`` and
``m'`` swamp it, and a transition that moves the state across the read-out's direction in
proportion to the evidence keeps it. ``read_out_r2`` (the state probe's test R^2) is reported beside it.

Usage::

    report = update_test(family, agent, {"trained": params, "untrained": initial}, history,
                         split_sizes(num_tasks))
    report["trained"].slope  # per outcome, ``report["trained"].outcomes`` names them
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from metabelief import probes
from metabelief.agents.base import Agent
from metabelief.analysis.records import Record
from metabelief.rollout import (
    Trajectory,
    fit_validate_test,
    lane_moments,
    replay_beliefs,
    replay_jit,
    split_lanes,
)
from metabelief.tasks.base import BetaArms, DependentArms, FiniteOutcomes, PyTree, TaskFamily


# ----------------------------------------------------------------------------- coordinates
@dataclasses.dataclass(frozen=True)
class PosteriorMeans:
    """The first ``count`` belief features of ``family`` (its posterior means): ``float32[count]``."""

    family: TaskFamily
    count: int

    def __call__(self, belief: PyTree) -> jax.Array:
        return self.family.belief_features(belief)[: self.count].astype(jnp.float32)


def belief_leaves(belief: PyTree) -> jax.Array:
    """The belief pytree's leaves flattened into one ``float32`` vector (e.g. the tiger's log-odds)."""
    return jnp.concatenate([jnp.ravel(leaf).astype(jnp.float32) for leaf in jax.tree.leaves(belief)])


# ----------------------------------------------------------------------------- outcomes
@chex.dataclass(frozen=True)
class Outcomes:
    """The counterfactual next outcomes of every step and lane, ``K`` of them."""

    actions: jax.Array  # int32[T, N, K]
    rewards: jax.Array  # float32[T, N, K]
    next_obs: jax.Array  # float32[T, N, K, O]
    valid: jax.Array  # bool[T, N, K]: the outcome can happen (FiniteOutcomes' padding cannot)


def outcome_labels(family: TaskFamily) -> tuple[str, ...]:
    """The names of the ``K`` counterfactual outcomes of ``family`` (the module docstring, 3.)."""
    if isinstance(family, FiniteOutcomes):
        count = _finite_outcome_count(family)
        return tuple(f"action {a}, outcome {k}" for a in range(family.num_actions) for k in range(count))
    if isinstance(family, BetaArms | DependentArms):
        return tuple(f"arm {a}, reward {r}" for a in range(family.num_actions) for r in (0, 1))
    return ("recorded outcome",)


def candidate_outcomes(family: TaskFamily, beliefs: PyTree, history: Trajectory) -> Outcomes:
    """The outcomes ``outcome_labels`` names, at every step and lane of ``history`` (``beliefs``:
    the exact belief before each step, leaves ``[T, N, ...]``). Jittable with ``family`` static."""
    num_steps, num_tasks = history.actions.shape
    if isinstance(family, FiniteOutcomes):
        per_step = jax.vmap(jax.vmap(functools.partial(_finite_outcomes, family)))
        return per_step(beliefs, history.obs[:-1])
    if isinstance(family, BetaArms | DependentArms):
        actions = jnp.repeat(jnp.arange(family.num_actions, dtype=jnp.int32), 2)  # [K]: a, a, b, b, ...
        rewards = jnp.tile(jnp.asarray([0.0, 1.0], jnp.float32), family.num_actions)
        shape = (num_steps, num_tasks, actions.size)
        return Outcomes(
            actions=jnp.broadcast_to(actions, shape),
            rewards=jnp.broadcast_to(rewards, shape),
            next_obs=jnp.zeros((*shape, family.obs_size), jnp.float32),
            valid=jnp.ones(shape, bool),
        )
    return Outcomes(
        actions=history.actions[..., None],
        rewards=history.rewards[..., None].astype(jnp.float32),
        next_obs=history.obs[1:, :, None].astype(jnp.float32),
        valid=jnp.ones((num_steps, num_tasks, 1), bool),
    )


def _finite_outcomes(family: TaskFamily, belief: PyTree, obs: jax.Array) -> Outcomes:
    """Every action x every listed outcome of ONE step and lane: arrays ``[A * K, ...]``."""

    def of_action(action):
        probs, rewards, next_obs = family.outcomes(belief, obs, action)
        return jnp.full(probs.shape, action, jnp.int32), rewards, next_obs, probs > 0

    actions, rewards, next_obs, valid = jax.vmap(of_action)(jnp.arange(family.num_actions, dtype=jnp.int32))
    return Outcomes(
        actions=actions.reshape(-1),
        rewards=rewards.reshape(-1).astype(jnp.float32),
        next_obs=next_obs.reshape(valid.size, next_obs.shape[-1]).astype(jnp.float32),
        valid=valid.reshape(-1),
    )


def _finite_outcome_count(family: TaskFamily) -> int:
    """K of ``family.outcomes``: the length of its probability vector."""
    obs = jnp.zeros((family.obs_size,), jnp.float32)
    belief = jax.eval_shape(family.belief_init, obs)
    probs, _, _ = jax.eval_shape(family.outcomes, belief, obs, jnp.zeros((), jnp.int32))
    return int(probs.shape[0])


# ----------------------------------------------------------------------------- changes and fit
@functools.partial(jax.jit, static_argnames=("family", "agent", "coordinates"))
def update_changes(
    family: TaskFamily,
    agent: Agent,
    coordinates: Callable[[PyTree], jax.Array],
    params: PyTree,
    memory: jax.Array,  # [T, N, M]: the memory after reading step t's input
    beliefs: PyTree,  # leaves [T, N, ...]: the exact belief at step t
    obs: jax.Array,  # [T, N, O]: the observation acted on at step t
    outcomes: Outcomes,  # [T, N, K, ...]
    weights: jax.Array,  # [M, F]: the read-out memory -> coordinates
) -> tuple[jax.Array, jax.Array]:
    """``(decoded, exact)``, each ``float32[T, N, K, F]``: the change of the decoded coordinates
    after one agent step on each outcome, and the exact Bayes change of the coordinates."""
    num_steps, num_tasks, num_outcomes = outcomes.actions.shape
    batch = num_steps * num_tasks * num_outcomes
    before = jnp.broadcast_to(memory[:, :, None], (num_steps, num_tasks, num_outcomes, memory.shape[-1]))
    before = before.reshape(batch, memory.shape[-1])
    times = jnp.broadcast_to(jnp.arange(1, num_steps + 1)[:, None, None], outcomes.actions.shape)
    inputs = agent.inputs(
        outcomes.next_obs.reshape(batch, outcomes.next_obs.shape[-1]),
        outcomes.actions.reshape(batch),
        outcomes.rewards.reshape(batch),
        times.reshape(batch),
    )
    carry, _, _ = agent.step(params, agent.carry_from_memory(before), inputs)
    decoded = ((agent.memory(carry) - before) @ weights).reshape(num_steps, num_tasks, num_outcomes, -1)

    def exact_change(belief, obs_now, action, reward, next_obs):
        after = family.belief_update(belief, obs_now, action, reward, next_obs)
        return coordinates(after) - coordinates(belief)

    per_outcome = jax.vmap(exact_change, in_axes=(None, None, 0, 0, 0))
    exact = jax.vmap(jax.vmap(per_outcome))(
        beliefs, obs, outcomes.actions, outcomes.rewards, outcomes.next_obs
    )
    return decoded, exact


@jax.jit
def fit_changes(decoded: jax.Array, exact: jax.Array, valid: jax.Array) -> dict[str, jax.Array]:
    """The line of ``decoded`` on ``exact`` (``[T, N, K, F]``, counted where ``valid [T, N, K]``),
    per outcome and over all outcomes, each outcome x coordinate with its own intercept.

    Returns ``slope``, ``r2`` and ``count`` (counted step-lanes), each ``[K]``, and ``slope_all``,
    ``r2_all``; NaN where undefined (the module docstring, 4.).
    """
    mask = jnp.broadcast_to(valid[..., None], exact.shape)
    # An outcome that cannot happen may have a non-finite update: masked out, not multiplied by 0.
    exact, decoded = (jnp.where(mask, values, 0.0) for values in (exact, decoded))
    count = mask.sum(axis=(0, 1))  # [K, F]

    def centred(values):
        mean = values.sum(axis=(0, 1)) / jnp.maximum(count, 1)
        return jnp.where(mask, values - mean, 0.0)

    x, y = centred(exact), centred(decoded)
    sums = [jnp.sum(a * b, axis=(0, 1, 3)) for a, b in ((x, x), (x, y), (y, y))]  # Sxx, Sxy, Syy: [K]
    # Spread below float32 rounding of the values themselves is no variation (a clock's decoded
    # change is one number per coordinate, up to an ulp).
    sizes = [jnp.sum(values**2, axis=(0, 1, 3)) for values in (exact, decoded)]
    slope, r2 = _line(*sums, *sizes)
    slope_all, r2_all = _line(*(total.sum() for total in (*sums, *sizes)))
    return {
        "slope": slope,
        "r2": r2,
        "count": valid.sum(axis=(0, 1)),
        "slope_all": slope_all,
        "r2_all": r2_all,
    }


def _line(sxx, sxy, syy, x_size, y_size) -> tuple[jax.Array, jax.Array]:
    """Slope ``Sxy / Sxx`` (NaN if x does not vary) and R^2 ``Sxy^2 / (Sxx Syy)`` (NaN if x or y
    does not vary); ``x_size``, ``y_size``: the uncentred sums of squares."""
    x_varies = sxx > 1e-10 * x_size + jnp.finfo(jnp.float32).tiny
    y_varies = syy > 1e-10 * y_size + jnp.finfo(jnp.float32).tiny
    slope = jnp.where(x_varies, sxy / jnp.where(x_varies, sxx, 1.0), jnp.nan)
    r2 = jnp.where(x_varies & y_varies, sxy**2 / jnp.where(x_varies & y_varies, sxx * syy, 1.0), jnp.nan)
    return slope, r2


# ----------------------------------------------------------------------------- the test
@dataclasses.dataclass(frozen=True)
class UpdateTest(Record):
    """One network's counterfactual update test (``update_test``); ``None`` where undefined."""

    outcomes: tuple[str, ...]  # the K outcomes' names
    slope: tuple[float | None, ...]  # per outcome: decoded change per unit of exact Bayes change
    r2: tuple[float | None, ...]  # per outcome: R^2 of that line
    num_pairs: tuple[int, ...]  # per outcome: test step-lanes counted
    slope_all: float | None  # all outcomes pooled
    r2_all: float | None
    read_out_r2: float | None  # test R^2 of the read-out memory -> coordinates (the states)
    ridge: float  # the read-out's ridge strength


def update_test(
    family: TaskFamily,
    agent: Agent,
    networks: dict[str, PyTree],
    history: Trajectory,
    sizes: Sequence[int],
    *,
    coordinates: Callable[[PyTree], jax.Array] | None = None,
) -> dict[str, UpdateTest]:
    """The counterfactual update test of each network on the test lanes of ``history``.

    Args:
      family, agent: the task family and the agent's sizes.
      networks: name -> parameters (e.g. ``{"trained": ..., "untrained": ...}``); each replays
        ``history`` (teacher forcing), so all are tested on the same histories.
      history: a held-out trajectory ``[T, N, ...]`` recorded with beliefs.
      sizes: ``(train, validation, test)`` lanes (``metabelief.experiments.probing.split_sizes``).
      coordinates: ONE belief -> ``float32[F]``, hashable (a static jit argument); default
        ``PosteriorMeans(family, D)``.

    Returns:
      ``{name: UpdateTest}``.
    """
    sizes = fit_validate_test(sizes, history.actions.shape[1])
    if not networks:
        raise ValueError("networks must name at least one parameter set")
    if history.features.shape[-1] == 0:
        raise ValueError("history must be recorded with beliefs (track_belief=True)")
    if coordinates is None:
        coordinates = PosteriorMeans(family, history.truth.shape[-1])
    beliefs = replay_beliefs_jit(family, history)
    targets = _coordinates_of(coordinates, beliefs)  # [T, N, F]
    if targets.ndim != 3:
        raise ValueError(f"coordinates must map one belief to a 1-D vector, got shape {targets.shape[2:]}")
    test = lambda tree: jax.tree.map(lambda leaf: split_lanes(leaf, sizes)[2], tree)  # noqa: E731
    outcomes = test(_candidate_outcomes_jit(family, beliefs, history))
    labels = outcome_labels(family)

    report = {}
    for name, params in networks.items():
        memory = replay_jit(family, agent, params, history).memory  # [T, N, M]
        moments = lane_moments(memory, targets, sizes)
        read_out = probes.linear_probe(
            moments, slice(0, memory.shape[-1]), slice(memory.shape[-1], memory.shape[-1] + targets.shape[-1])
        )
        decoded, exact = update_changes(
            family,
            agent,
            coordinates,
            params,
            test(memory),
            test(beliefs),
            test(history.obs[:-1]),
            outcomes,
            read_out.probe.weights,
        )
        fit = jax.tree.map(np.asarray, fit_changes(decoded, exact, outcomes.valid))
        report[name] = UpdateTest(
            outcomes=labels,
            slope=_floats(fit["slope"]),
            r2=_floats(fit["r2"]),
            num_pairs=tuple(int(c) for c in fit["count"]),
            slope_all=_floats(fit["slope_all"][None])[0],
            r2_all=_floats(fit["r2_all"][None])[0],
            read_out_r2=read_out.test.to_dict()["r2"],
            ridge=float(read_out.ridge),
        )
    return report


replay_beliefs_jit = jax.jit(replay_beliefs, static_argnums=0)
_candidate_outcomes_jit = jax.jit(candidate_outcomes, static_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def _coordinates_of(coordinates: Callable[[PyTree], jax.Array], beliefs: PyTree) -> jax.Array:
    """``coordinates`` of beliefs with leaves ``[T, N, ...]``: ``[T, N, F]``."""
    return jax.vmap(jax.vmap(coordinates))(beliefs)


def _floats(values: np.ndarray) -> tuple[float | None, ...]:
    return tuple(None if np.isnan(v) else float(v) for v in np.asarray(values, np.float64))
