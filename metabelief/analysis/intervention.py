"""A causal test of the decoded belief: push the hidden state along it, does behaviour follow?

Probes show that the posterior is *decodable* from the LSTM's hidden state; they do not show that
the agent *uses* it. Here the hidden state is moved so that the decoded belief changes, and the
agent's policy is compared with what the belief policy does under the same change of belief:

1. **Read-out.** Ridge regression ``hidden [H] -> posterior means [D]`` (the first ``D`` belief
   features, ``D`` = the width of ``history.truth``) is fitted on the train and validation lanes
   of a held-out history with ``metabelief.probes.linear_probe`` (fit on train, ridge strength
   chosen on validation, refit on both); its weights are ``W [H, D]`` and its R^2 is scored on
   the test lanes.
2. **Minimum-norm shift.** For a target dimension ``d`` the hidden shift that moves read-out
   ``d`` by ``delta`` and leaves every other read-out dimension unchanged, with the smallest
   Euclidean norm, is ``dh = delta * u`` with ``u = pinv(W^T) e_d``: the minimum-norm solution of
   ``W^T u = e_d``, which lies in the column space of ``W`` (orthogonal to the null space of
   ``W^T``, the directions the read-out cannot see). ``u`` is computed once per network on the
   host in float64 (``numpy.linalg.pinv`` of ``W^T``; ``W`` is tiny). When ``W`` has full column
   rank (``D <= H`` and the read-outs are linearly independent) ``W^T u = e_d`` holds exactly.
   **Encoding direction.** The minimum-norm shift is the smallest push the read-out can see; it
   need not be a direction the network ever moves in. The second push follows ordinary activity:
   ``u_enc`` = row ``d`` of the ridge regression posterior means -> hidden (``encoding_direction``),
   how the hidden state moves on average per unit of mean ``d`` with the other means fixed. Its
   responses are reported under ``"encoding"`` with the read-out's view of it (``W^T u_enc``).
3. **Agent response.** On the TEST lanes, at every counted decision (``target.decisions``), with
   ``h`` the replayed hidden state (the agent's readout) and ``m`` the rest of its memory (the
   LSTM's cell; ``metabelief.agents``):

   * ``agent``: ``P(target action | policy head(h + dh)) - P(target action | policy head(h))``,
     the policy head read directly (the immediate effect);
   * ``agent_next_step``: the agent is stepped once from the shifted carry (``carry_from_memory``
     of ``[h + dh, m]``, the rest of the memory unchanged) on the history's next input
     (``obs[t + 1]``, ``actions[t]``, ``rewards[t]``) and the policy at that next decision is
     compared with the one from the unshifted carry. Steps ``t`` count when both ``t`` and
     ``t + 1`` are counted decisions within the episode (the last step has no next decision). The
     shift is applied once, at ``t``; the next step's hidden state is whatever the agent makes of it.

   Both are averaged over the counted test steps, for each ``delta``.
4. **Belief-greedy ("Bayes") response.** The exact posterior feature ``d`` is moved by the same
   ``delta`` (clipped to ``target.feature_range``) and the belief-greedy policy's probability of
   the target action (``target.greedy_prob``) is recomputed; its mean change over the same test
   steps is the response a belief policy gives to that change in belief.
5. **fraction_of_bayes**: the least-squares slope through the origin of the agent's response on
   the belief policy's response across the ``delta`` grid,
   ``sum_delta dP_agent * dP_bayes / sum_delta dP_bayes^2``: 1 when the agent's action
   probability moves as the belief policy's does, 0 when it does not move at all (negative when
   it moves the other way). ``None`` when the belief policy does not respond at all.

Targets:

* ``bandit_arm_target(family, arm=0)``: feature = the posterior mean of ``arm``, action = ``arm``;
  belief-greedy = the arm with the highest posterior mean (ties split evenly). On bandits this
  myopic policy is *not* Bayes-optimal (it never explores); it is the policy that reads the
  posterior means and nothing else.
* ``two_step_target(family)``: feature 0 = P(A rich), action = the first-stage action whose
  common transition leads to A (action ``STATE_A`` = 0); belief-greedy = that action when
  P(A rich) > 1/2, the other below, 1/2 at exactly 1/2. In this task the belief-greedy policy is
  Bayes-optimal: whichever state is rich, a trial moves the log-odds toward it with probability
  ``p_rich`` whatever the action (the evidence lies in reward x reached state, whose law does not
  depend on the action), so actions cannot buy information and the myopic choice is optimal.
  ``two_step`` takes one agent step per trial (the observation is the second-stage state the
  previous trial reached), so every step is a first-stage decision and the next step is the next
  trial's first-stage decision, taken after the agent has read this trial's outcome.

A note on size: an LSTM's hidden state lies in (-1, 1) per unit, and ``dh`` need not. The result
reports ``shift_norm`` (``||u||``, the norm of the shift per unit of ``delta``) beside
``hidden_norm`` (the mean ``||h||`` over the counted test steps) so a reader can tell a push
within the range of ordinary activity from one far outside it.

Usage::

    target = bandit_arm_target(family)
    report = dose_response(family, agent, {"trained": params, "untrained": initial}, history,
                           split_sizes(num_tasks), target=target)
    report["trained"].fraction_of_bayes  # a DoseResponse; .to_dict() is its JSON form
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metabelief import probes
from metabelief.agents.base import Agent
from metabelief.analysis.records import Record
from metabelief.rollout import Trajectory, lane_moments, replay_jit, split_lanes
from metabelief.tasks.base import PyTree, TaskFamily
from metabelief.tasks.two_step import STATE_A, TwoStep

DEFAULT_DELTAS = tuple(round(float(d), 6) for d in np.linspace(-0.3, 0.3, 9))  # -0.3, -0.225, ..., 0.3


# ----------------------------------------------------------------------------- targets
def every_step(history: Trajectory) -> jax.Array:
    """``bool[T, N]``: every step of the history is a decision that counts."""
    return jnp.ones(history.actions.shape, bool)


@dataclasses.dataclass(frozen=True)
class BanditGreedy:
    """Belief-greedy P(``arm``): 1 / (number of tied best arms) if ``arm``'s posterior mean is the
    highest, else 0. ``features [..., F]``, the posterior means first (``num_arms`` of them)."""

    num_arms: int
    arm: int

    def __call__(self, features: jax.Array) -> jax.Array:
        means = features[..., : self.num_arms]
        best = means == means.max(axis=-1, keepdims=True)
        return best[..., self.arm] / best.sum(axis=-1)


@dataclasses.dataclass(frozen=True)
class ThresholdGreedy:
    """Belief-greedy P(action) for a binary belief ``p = features[..., feature]``: 1 if p > 1/2,
    1/2 at exactly 1/2, 0 below."""

    feature: int = 0

    def __call__(self, features: jax.Array) -> jax.Array:
        p = features[..., self.feature]
        return jnp.where(p > 0.5, 1.0, jnp.where(p == 0.5, 0.5, 0.0))


@dataclasses.dataclass(frozen=True)
class InterventionTarget:
    """Which belief feature is pushed and which action probability is watched.

    Fields:
      name: a description for reports and plots.
      feature: ``d``, the index of a posterior mean in the belief features (``< D``, the read-out
        covers the first ``D`` features).
      action: the action whose probability is measured.
      greedy_prob: belief features ``[..., F]`` -> the belief-greedy policy's P(``action``)
        ``[...]``; jittable and hashable (a frozen dataclass), it is a static jit argument.
      feature_range: the valid range of feature ``d``; a shifted belief is clipped to it.
      decisions: history -> ``bool[T, N]``, the steps where the choice counts.
    """

    name: str
    feature: int
    action: int
    greedy_prob: Callable[[jax.Array], jax.Array]
    feature_range: tuple[float, float] = (0.0, 1.0)
    decisions: Callable[[Trajectory], jax.Array] = every_step


def bandit_arm_target(family: TaskFamily, arm: int = 0) -> InterventionTarget:
    """Push the posterior mean of ``arm`` (feature ``arm``); watch P(pull ``arm``); belief-greedy
    pulls the arm with the highest posterior mean (ties split). Every step counts."""
    num_arms = getattr(family, "num_arms", None)
    if not isinstance(num_arms, int):
        raise ValueError(f"bandit_arm_target needs a bandit family (with num_arms), got {family!r}")
    if not (isinstance(arm, int) and 0 <= arm < num_arms):
        raise ValueError(f"arm must be an arm index in [0, {num_arms}), got {arm!r}")
    return InterventionTarget(
        name=f"posterior mean of arm {arm} -> P(arm {arm})",
        feature=arm,
        action=arm,
        greedy_prob=BanditGreedy(num_arms=num_arms, arm=arm),
    )


def two_step_target(family: TaskFamily) -> InterventionTarget:
    """Push P(A rich) (feature 0); watch P(the first-stage action whose common transition leads to
    A) (action ``STATE_A`` = 0); belief-greedy (Bayes-optimal here) takes it when P(A rich) > 1/2.
    One agent step per trial, so every step is a first-stage decision."""
    if not isinstance(family, TwoStep):
        raise ValueError(f"two_step_target needs a two_step family, got {family!r}")
    return InterventionTarget(
        name="P(A rich) -> P(action commonly leading to A)",
        feature=0,
        action=STATE_A,  # action 0 leads to A with p_common
        greedy_prob=ThresholdGreedy(feature=0),
    )


# ----------------------------------------------------------------------------- results
@dataclasses.dataclass(frozen=True)
class EncodingResponse(Record):
    """The responses to the push along ``encoding_direction`` (the fields of ``DoseResponse`` of
    the same names, for that push)."""

    agent: tuple[float | None, ...]
    agent_next_step: tuple[float | None, ...]
    fraction_of_bayes: float | None
    fraction_of_bayes_next_step: float | None
    read_out_per_unit_shift: tuple[float | None, ...]
    shift_norm: float


@dataclasses.dataclass(frozen=True)
class DoseResponse(Record):
    """One network's responses to a shift of the belief (``dose_response``); the top-level
    responses are to the minimum-norm shift, ``encoding`` holds those to the encoding direction.
    ``to_dict()`` is its JSON form (``None`` for a mean over no step)."""

    target: str  # the target's name
    deltas: tuple[float, ...]  # the shifts of the belief
    agent: tuple[float | None, ...]  # per delta: mean change of P(target action), policy head at h + dh
    agent_next_step: tuple[float | None, ...]  # ... one LSTM step on from the shifted carry
    belief_greedy: tuple[float | None, ...]  # ... of the belief-greedy policy (the same for every network)
    fraction_of_bayes: float | None  # slope through the origin of agent on belief_greedy
    fraction_of_bayes_next_step: float | None  # of agent_next_step on belief_greedy
    read_out_r2: float | None  # test R^2 of the read-out hidden -> the D posterior means
    read_out_r2_target: float | None  # ... of the target dimension d
    ridge: float  # the read-out's ridge strength
    read_out_per_unit_shift: tuple[float | None, ...]  # W^T u: e_d when the shift is exact
    shift_norm: float  # ||u||: the norm of the shift per unit delta
    hidden_norm: float  # mean ||h|| on the counted test steps
    num_steps: int  # test steps averaged over
    num_steps_next: int  # ... for the next-step response
    encoding: EncodingResponse


# ----------------------------------------------------------------------------- the shift
def minimum_norm_shift(weights: np.ndarray | jax.Array, dimension: int) -> np.ndarray:
    """``u = pinv(W^T) e_d``, float64 ``[H]``: the smallest hidden shift with ``W^T u = e_d``.

    Moving the hidden state by ``delta * u`` moves read-out ``dimension`` by ``delta`` and the
    others by 0 (exactly when ``W [H, D]`` has full column rank; else the least-squares best).
    """
    weights = np.asarray(weights, np.float64)
    unit = np.zeros(weights.shape[1], np.float64)
    unit[dimension] = 1.0
    return np.linalg.pinv(weights.T) @ unit


def fit_read_out(
    agent: Agent, replayed: Trajectory, sizes: tuple[int, int, int], num_means: int
) -> probes.LinearProbeResult:
    """The linear read-out hidden -> the first ``num_means`` belief features (``linear_probe``:
    fitted on the train and validation lanes, scored on the test lanes).
    """
    moments = lane_moments(replayed.hidden, replayed.features, sizes)
    hidden = slice(0, agent.hidden_size)
    means = slice(agent.hidden_size, agent.hidden_size + num_means)
    return probes.linear_probe(moments, hidden, means)


# ----------------------------------------------------------------------------- responses
def dose_response(
    family: TaskFamily,
    agent: Agent,
    networks: dict[str, PyTree],
    history: Trajectory,
    sizes: Sequence[int],
    *,
    target: InterventionTarget,
    deltas: Sequence[float] = DEFAULT_DELTAS,
) -> dict[str, DoseResponse]:
    """The agent's and the belief-greedy policy's response to a shift of the belief, per network.

    Args:
      family, agent: the task family and the agent's sizes.
      networks: name -> parameters (e.g. ``{"trained": ..., "untrained": ...}``); each replays
        ``history`` (teacher forcing), so all are tested on the same histories.
      history: a held-out trajectory ``[T, N, ...]`` recorded with beliefs.
      sizes: ``(train, validation, test)`` lanes (``metabelief.experiments.probing.split_sizes``).
      target: ``bandit_arm_target(family)``, ``two_step_target(family)`` or your own.
      deltas: the shifts of the belief (posterior-mean units), e.g. a symmetric grid.

    Returns:
      ``{name: DoseResponse}``, for each network: ``target`` (its name), ``deltas``, ``agent`` and
      ``agent_next_step`` (mean change of P(target action) per delta), ``belief_greedy`` (the
      belief policy's mean change per delta, the same for every network), ``fraction_of_bayes``
      and ``fraction_of_bayes_next_step`` (slopes through the origin, None if the belief policy
      never responds), ``read_out_r2`` (test R^2 over the D posterior means) and
      ``read_out_r2_target`` (dimension d), ``ridge``, ``read_out_per_unit_shift`` (``W^T u``,
      ``e_d`` when the shift is exact), ``shift_norm`` (``||u||``), ``hidden_norm`` (mean
      ``||h||`` on the counted test steps), ``num_steps`` and ``num_steps_next`` (test steps
      averaged over); ``encoding`` (an ``EncodingResponse``): ``agent``, ``agent_next_step``,
      ``fraction_of_bayes``, ``fraction_of_bayes_next_step``, ``read_out_per_unit_shift`` and
      ``shift_norm`` for the push along ``encoding_direction``.
    """
    sizes = tuple(int(size) for size in sizes)
    num_tasks, num_steps = history.actions.shape[1], history.actions.shape[0]
    if len(sizes) != 3 or sum(sizes) != num_tasks or min(sizes) < 1:
        raise ValueError(f"sizes must be 3 positive lane counts adding up to {num_tasks}, got {sizes}")
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
    deltas_array = np.asarray(deltas, np.float64)
    if deltas_array.ndim != 1 or deltas_array.size == 0 or not np.isfinite(deltas_array).all():
        raise ValueError(f"deltas must be a non-empty 1-D sequence of finite numbers, got {deltas!r}")
    deltas_jax = jnp.asarray(deltas_array, jnp.float32)

    decisions = jnp.asarray(target.decisions(history), bool)  # [T, N]
    if decisions.shape != (num_steps, num_tasks):
        raise ValueError(f"target.decisions must give bool[{num_steps}, {num_tasks}], got {decisions.shape}")
    # t counts for the next-step response when t and t + 1 are both counted decisions.
    next_decisions = jnp.concatenate([decisions[:-1] & decisions[1:], jnp.zeros_like(decisions[:1])])
    mask, next_mask = (split_lanes(m, sizes)[2] for m in (decisions, next_decisions))
    test = jax.tree.map(lambda leaf: split_lanes(leaf, sizes)[2], history)
    low, high = (float(v) for v in target.feature_range)
    greedy = np.asarray(
        _greedy_response(target.greedy_prob, target.feature, low, high, test.features, mask, deltas_jax)
    )
    # The next input: what the agent read at t + 1 in the history (the input of the last step's
    # "next" is built from obs[T] too, but that step is masked out).
    times = jnp.broadcast_to(jnp.arange(1, num_steps + 1)[:, None], test.actions.shape)
    next_inputs = jax.vmap(agent.inputs)(test.obs[1:], test.actions, test.rewards, times)  # [T, n, I]

    report = {}
    for name, params in networks.items():
        replayed = replay_jit(family, agent, params, history)
        read_out = fit_read_out(agent, replayed, sizes, num_means)
        weights = np.asarray(read_out.probe.weights, np.float64)
        direction = minimum_norm_shift(weights, target.feature)
        hidden, memory = (split_lanes(leaf, sizes)[2] for leaf in (replayed.hidden, replayed.memory))
        encoding = encoding_direction(agent, replayed, sizes, num_means, target.feature)
        # Mean change of P(target action) per delta along each push: now and one LSTM step later.
        (now, after), (enc_now, enc_after) = (
            [
                np.asarray(response, np.float64)
                for response in _agent_response(
                    agent,
                    target.action,
                    params,
                    memory,
                    next_inputs,
                    mask,
                    next_mask,
                    jnp.asarray(shift, jnp.float32),
                    deltas_jax,
                )  # fmt: skip
            ]
            for shift in (direction, encoding)
        )
        hidden_norm = _masked_mean(jnp.linalg.norm(hidden, axis=-1), mask)
        scores = read_out.test.to_dict()
        report[name] = DoseResponse(
            target=target.name,
            deltas=tuple(float(d) for d in deltas_array),
            agent=_floats(now),
            agent_next_step=_floats(after),
            belief_greedy=_floats(greedy),
            fraction_of_bayes=fraction_of_bayes(now, greedy),
            fraction_of_bayes_next_step=fraction_of_bayes(after, greedy),
            read_out_r2=scores["r2"],
            read_out_r2_target=scores["r2_per_dim"][target.feature],
            ridge=float(read_out.ridge),
            read_out_per_unit_shift=_floats(weights.T @ direction),
            shift_norm=float(np.linalg.norm(direction)),
            hidden_norm=float(hidden_norm),
            num_steps=int(mask.sum()),
            num_steps_next=int(next_mask.sum()),
            encoding=EncodingResponse(
                agent=_floats(enc_now),
                agent_next_step=_floats(enc_after),
                fraction_of_bayes=fraction_of_bayes(enc_now, greedy),
                fraction_of_bayes_next_step=fraction_of_bayes(enc_after, greedy),
                read_out_per_unit_shift=_floats(weights.T @ encoding),
                shift_norm=float(np.linalg.norm(encoding)),
            ),
        )
    return report


def encoding_direction(
    agent: Agent, replayed: Trajectory, sizes: tuple[int, int, int], num_means: int, dimension: int
) -> np.ndarray:
    """``[H]``: how the hidden state moves, on average, per unit of posterior mean ``dimension`` with
    the other means held fixed: row ``dimension`` of the ridge regression posterior means -> hidden
    (fitted on the train and validation lanes). The direction ordinary activity takes when the
    belief changes, where the minimum-norm shift is the smallest push the read-out can see."""
    moments = lane_moments(replayed.hidden, replayed.features, sizes)
    hidden = slice(0, agent.hidden_size)
    means = slice(agent.hidden_size, agent.hidden_size + num_means)
    return np.asarray(probes.linear_probe(moments, means, hidden).probe.weights[dimension], np.float64)


def fraction_of_bayes(agent: Sequence[float], bayes: Sequence[float]) -> float | None:
    """Least-squares slope through the origin of ``agent`` on ``bayes`` (responses per delta):
    ``sum agent * bayes / sum bayes^2``; None when ``bayes`` is all zero."""
    agent, bayes = np.asarray(agent, np.float64), np.asarray(bayes, np.float64)
    denominator = float(np.sum(bayes**2))
    slope = float(np.sum(agent * bayes) / denominator) if denominator > 0.0 else float("nan")
    return None if np.isnan(slope) else slope


@functools.partial(jax.jit, static_argnames=("agent", "action"))
def _agent_response(
    agent: Agent,
    action: int,
    params: PyTree,
    memory: jax.Array,  # [T, n, M], the readout first
    next_inputs: jax.Array,  # [T, n, I]
    mask: jax.Array,  # bool[T, n]
    next_mask: jax.Array,  # bool[T, n]
    direction: jax.Array,  # [H]
    deltas: jax.Array,  # [K]
) -> tuple[jax.Array, jax.Array]:
    """Mean change of P(``action``) per delta, ``([K], [K])``: from the policy head at the shifted
    hidden state, and at the next step from the agent stepped on from the shifted carry."""
    hidden = memory[..., : agent.hidden_size]
    batch = hidden.shape[:-1]

    def now(h):
        return jax.nn.softmax(agent.heads(params, h)[0])[..., action]

    def next_step(h):
        shifted = memory.at[..., : agent.hidden_size].set(h)
        carry = agent.carry_from_memory(shifted.reshape(-1, shifted.shape[-1]))
        _, logits, _ = agent.step(params, carry, next_inputs.reshape(-1, next_inputs.shape[-1]))
        return jax.nn.softmax(logits)[..., action].reshape(batch)

    # The unshifted policy is row 0 of the same batched computation (delta = 0 then gives 0 up to
    # float32 rounding of the softmax, ~1e-9, not a systematic offset between two code paths).
    shifted = hidden + jnp.concatenate([jnp.zeros((1,)), deltas])[:, None, None, None] * direction
    probs_now, probs_next = jax.vmap(now)(shifted), jax.vmap(next_step)(shifted)  # [K + 1, T, n]
    mean_change = jax.vmap(_masked_mean, in_axes=(0, None))
    changes_now = mean_change(probs_now[1:] - probs_now[0], mask)
    return changes_now, mean_change(probs_next[1:] - probs_next[0], next_mask)


@functools.partial(jax.jit, static_argnames=("greedy_prob", "feature", "low", "high"))
def _greedy_response(
    greedy_prob: Callable[[jax.Array], jax.Array],
    feature: int,
    low: float,
    high: float,
    features: jax.Array,  # [T, n, F]
    mask: jax.Array,  # bool[T, n]
    deltas: jax.Array,  # [K]
) -> jax.Array:
    """Mean change per delta ``[K]`` of the belief-greedy P(action) when feature ``feature`` is
    moved by delta (clipped to [low, high])."""
    base = greedy_prob(features)

    def at(delta):
        shifted = features.at[..., feature].set(jnp.clip(features[..., feature] + delta, low, high))
        return _masked_mean(greedy_prob(shifted) - base, mask)

    return jax.vmap(at)(deltas)


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of ``values`` where ``mask``; NaN where nothing counts."""
    count = mask.sum()
    return jnp.where(count > 0, jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(count, 1), jnp.nan)


def _floats(values: np.ndarray) -> tuple[float | None, ...]:
    return tuple(None if np.isnan(v) else float(v) for v in np.asarray(values, np.float64))
