"""Check 9 of ``check_family``: the optional capabilities a family declares hold on its rollout.

A capability of ``metabelief.tasks.base`` unlocks baselines that trust it, so a family that has
one (``isinstance(family, BetaArms)``) is checked against its semantics along the random rollout
checks 6-8 use, with the exact belief replayed on it (index t: before the t-th transition):

* ``BetaArms``: ``num_arms == num_actions``; ``beta_posterior(belief_init(obs))`` is Beta(prior_a,
  prior_b) on every arm; each step adds exactly the reward to alpha and 1 - reward to beta of the
  pulled arm only (rewards 0 or 1); the posterior mean alpha / (alpha + beta) equals the first
  ``num_arms`` entries of ``belief_features``.
* ``DependentArms``: two actions; ``p_support`` None or probabilities; the evidence counts start
  at [0, 0] and each step adds one, for p exactly when (action 0, reward 1) or (action 1, reward
  0); E[p | counts] under ``p_support`` (float64) equals ``belief_features[0]``.
* ``ExpectedRewards``: ``float32[num_actions]``, finite; and calibrated: the reward that follows
  action a from belief b averages ``expected_rewards(b, obs)[a]``, tested in groups of steps (the
  action crossed with a quantile bin of the prediction) like check 7, Bonferroni over the groups
  at ``false_alarm_rate`` of its own.
* ``GoalCandidates``: the tables' shapes and ranges; ``distance_table`` is the breadth-first
  distance of ``move_table``; a step without reward lands on ``move_table[cell, action]`` and a
  paid one enters a goal cell; ``possible_goals`` never regrows, never empties and is the support
  of the posterior over candidates that opens ``belief_features``.

* ``FiniteOutcomes``: ``outcomes(belief, obs, action)`` gives ``float32[K]`` probabilities that
  are >= 0 and sum to 1, rewards and next observations; every step's outcome is one listed with
  positive probability, and each listed outcome happens as often as its probability says (tested
  like ``ExpectedRewards``, per outcome, in groups of the action crossed with check 7's last-step
  groups and a bin of the probability; one Bonferroni bound over all K outcomes' tests).
* ``ReferencePolicies``: every policy returns an ``int32[]`` action in range on every belief.

(``BeliefVariance`` is check 8.)
"""

from __future__ import annotations

import functools
import statistics

import jax
import numpy as np

from metabelief.tasks.base import (
    BetaArms,
    DependentArms,
    ExpectedRewards,
    FiniteOutcomes,
    GoalCandidates,
    ReferencePolicies,
    TaskFamily,
)
from metabelief.testing.calibration import FLOAT32_ROUNDING, MIN_TASKS_PER_GROUP, _Cells, _last_step_group
from metabelief.testing.failures import fail
from metabelief.testing.random_rollout import RandomRollout

# Capabilities check 9 tests, in order (BeliefVariance is check 8).
CHECKED = (BetaArms, DependentArms, ExpectedRewards, GoalCandidates, FiniteOutcomes, ReferencePolicies)
OUTCOME_TOLERANCE = 1e-5  # probabilities summing to 1; a realised outcome matching a listed one
COUNT_TOLERANCE = 1e-3  # counts are integers plus a prior; float32 keeps them far closer than this
MEAN_TOLERANCE = 1e-4  # posterior means recomputed from the counts vs belief_features


def declared_capabilities(family: TaskFamily) -> tuple[type, ...]:
    """The capabilities of ``CHECKED`` that ``family`` has."""
    return tuple(capability for capability in CHECKED if isinstance(family, capability))


def check_capabilities(
    family: TaskFamily, data: RandomRollout, false_alarm_rate: float = 1e-4
) -> tuple[str, ...]:
    """Check 9 on ``data`` (a random rollout of ``family``, arrays ``[T (+ 1), N, ...]``).

    Returns the names of the capabilities checked; raises ``FamilyCheckError`` [<name> capability]
    naming the first one that does not hold.
    """
    declared = declared_capabilities(family)
    if not declared:
        return ()
    names = tuple(capability.__name__ for capability in declared)
    outputs = _outputs(family, names, data)
    checks = {
        "BetaArms": _check_beta_arms,
        "DependentArms": _check_dependent_arms,
        "ExpectedRewards": functools.partial(_check_expected_rewards, false_alarm_rate=false_alarm_rate),
        "GoalCandidates": _check_goal_candidates,
        "FiniteOutcomes": functools.partial(_check_finite_outcomes, false_alarm_rate=false_alarm_rate),
        "ReferencePolicies": _check_reference_policies,
    }
    for name in names:
        checks[name](family, data, outputs[name])
    return names


def _outputs(family: TaskFamily, names: tuple[str, ...], data: RandomRollout) -> dict:
    """Each declared capability's methods along ``data``, the belief replayed on its history."""
    error = None
    try:
        outputs = jax.jit(functools.partial(_replayed_outputs, family, names))(
            data.obs, data.actions, data.rewards
        )
    except Exception as exc:  # noqa: BLE001 -- any failure to run a capability method is the family's
        error = exc
    if error is not None:
        name = _failing_capability(family, names, data)
        raise fail(family, f"{name} capability", f"its methods do not run on the belief: {error}") from error
    return jax.device_get(outputs)


def _failing_capability(family: TaskFamily, names: tuple[str, ...], data: RandomRollout) -> str:
    """The first of ``names`` whose methods fail alone (for the message)."""
    short = data.replace(obs=data.obs[:2, :1], actions=data.actions[:1, :1], rewards=data.rewards[:1, :1])
    for name in names:
        try:
            _replayed_outputs(family, (name,), short.obs, short.actions, short.rewards)
        except Exception:  # noqa: BLE001
            return name
    return names[0]


def _replayed_outputs(family, names, obs, actions, rewards) -> dict:
    """Beliefs ``[T + 1, N]`` replayed on the history, read through each capability."""

    def transition(beliefs, step):
        obs, action, reward, next_obs = step
        beliefs = jax.vmap(family.belief_update)(beliefs, obs, action, reward, next_obs)
        return beliefs, beliefs

    first = jax.vmap(family.belief_init)(obs[0])
    _, later = jax.lax.scan(transition, first, (obs[:-1], actions, rewards, obs[1:]))
    beliefs = jax.tree.map(lambda head, tail: jax.numpy.concatenate([head[None], tail]), first, later)
    each = lambda method, *args: jax.vmap(jax.vmap(method))(*args)  # noqa: E731
    outputs = {}
    before = jax.tree.map(lambda leaf: leaf[:-1], beliefs)  # the belief each action was chosen on
    if any(name in names for name in ("BetaArms", "DependentArms", "GoalCandidates")):
        features = each(family.belief_features, beliefs)
    if "BetaArms" in names:
        posterior = each(family.beta_posterior, beliefs)
        outputs["BetaArms"] = {"alpha": posterior.alpha, "beta": posterior.beta, "features": features}
    if "DependentArms" in names:
        outputs["DependentArms"] = {"evidence": each(family.evidence_counts, beliefs), "features": features}
    if "ExpectedRewards" in names:
        outputs["ExpectedRewards"] = {"expected": each(family.expected_rewards, before, obs[:-1])}
    if "FiniteOutcomes" in names:
        probs, outcome_rewards, outcome_obs = each(family.outcomes, before, obs[:-1], actions)
        outputs["FiniteOutcomes"] = {"probs": probs, "rewards": outcome_rewards, "next_obs": outcome_obs}
    if "ReferencePolicies" in names:
        keys = jax.random.split(jax.random.key(0), actions.shape)
        outputs["ReferencePolicies"] = {
            name: each(policy, keys, before, obs[:-1]) for name, policy in family.reference_policies().items()
        }
    if "GoalCandidates" in names:
        outputs["GoalCandidates"] = {
            "cells": each(family.current_cell, obs),
            "possible": each(family.possible_goals, beliefs),
            "features": features,
        }
    return outputs


# --- BetaArms -----------------------------------------------------------------------------------


def _check_beta_arms(family: TaskFamily, data: RandomRollout, out: dict) -> None:
    name = "BetaArms capability"
    num_arms = family.num_arms
    if isinstance(num_arms, bool) or not isinstance(num_arms, int) or num_arms != family.num_actions:
        raise fail(
            family, name, f"num_arms must be the int num_actions = {family.num_actions}, got {num_arms!r}"
        )
    prior = {}
    for field in ("prior_a", "prior_b"):
        value = getattr(family, field)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < np.inf:
            raise fail(family, name, f"{field} must be a positive finite number, got {value!r}")
        prior[field] = float(value)
    for part in ("alpha", "beta"):
        got = out[part]
        if got.dtype != np.float32 or got.shape[2:] != (num_arms,):
            raise fail(
                family,
                name,
                f"beta_posterior(belief).{part} must be float32[{num_arms}], got {_layout(got)}",
            )
    rewards = _binary_rewards(family, name, data)
    pulled = np.eye(num_arms)[np.asarray(data.actions)]  # [T, N, K]
    expected = {
        "alpha": prior["prior_a"] + _cumulative(pulled * rewards[..., None]),
        "beta": prior["prior_b"] + _cumulative(pulled * (1.0 - rewards[..., None])),
    }
    alpha, beta = (out[part].astype(np.float64) for part in ("alpha", "beta"))
    if not (_close(alpha[0], expected["alpha"][0]).all() and _close(beta[0], expected["beta"][0]).all()):
        raise fail(
            family,
            name,
            f"beta_posterior(belief_init(obs)) must be Beta(prior_a, prior_b) = Beta({prior['prior_a']:g}, "
            f"{prior['prior_b']:g}) on every arm, got alpha {alpha[0, 0].tolist()}, "
            f"beta {beta[0, 0].tolist()}",
        )
    wrong = ~(_close(alpha, expected["alpha"]) & _close(beta, expected["beta"])).all(axis=-1)  # [T + 1, N]
    if wrong.any():
        t, n = np.argwhere(wrong)[0]
        raise fail(
            family,
            name,
            f"each step must add the reward to alpha and 1 - reward to beta of the pulled arm only; after "
            f"{t} steps of task {n} (last: arm {int(data.actions[t - 1, n])}, reward "
            f"{float(data.rewards[t - 1, n]):g}) expected alpha {expected['alpha'][t, n].tolist()}, "
            f"beta {expected['beta'][t, n].tolist()}, got alpha {alpha[t, n].tolist()}, "
            f"beta {beta[t, n].tolist()}",
        )
    means = alpha / (alpha + beta)
    _check_means(family, name, means, out["features"][..., :num_arms], "alpha / (alpha + beta)")


# --- DependentArms ------------------------------------------------------------------------------


def _check_dependent_arms(family: TaskFamily, data: RandomRollout, out: dict) -> None:
    name = "DependentArms capability"
    if family.num_actions != 2:
        raise fail(
            family, name, f"a dependent bandit has 2 actions, got num_actions = {family.num_actions!r}"
        )
    support = family.p_support
    if support is not None:
        try:
            support = np.asarray([float(value) for value in support], np.float64)
        except (TypeError, ValueError):
            raise fail(
                family, name, f"p_support must be None or a tuple of probabilities, got {support!r}"
            ) from None
        if support.size == 0 or not np.all((support >= 0.0) & (support <= 1.0)):
            raise fail(
                family, name, f"p_support must be None or a tuple of probabilities, got {family.p_support!r}"
            )
    evidence = out["evidence"]
    if evidence.dtype != np.float32 or evidence.shape[2:] != (2,):
        raise fail(
            family,
            name,
            f"evidence_counts(belief) must be float32[2], got {_layout(evidence)}",
        )
    rewards = _binary_rewards(family, name, data)
    favours_p = np.where(np.asarray(data.actions) == 0, rewards, 1.0 - rewards)
    expected = np.stack([_cumulative(favours_p), _cumulative(1.0 - favours_p)], axis=-1)  # [T + 1, N, 2]
    evidence = evidence.astype(np.float64)
    if not _close(evidence[0], 0.0).all():
        raise fail(
            family, name, f"evidence_counts(belief_init(obs)) must be [0, 0], got {evidence[0, 0].tolist()}"
        )
    wrong = ~_close(evidence, expected).all(axis=-1)
    if wrong.any():
        t, n = np.argwhere(wrong)[0]
        raise fail(
            family,
            name,
            f"each step must add 1 to the evidence for p exactly when (action 0, reward 1) or (action 1, "
            f"reward 0), else to the evidence against; after {t} steps of task {n} (last: action "
            f"{int(data.actions[t - 1, n])}, reward {float(data.rewards[t - 1, n]):g}) expected "
            f"{expected[t, n].tolist()}, got {evidence[t, n].tolist()}",
        )
    _check_means(family, name, _mean_of_p(expected, support), out["features"][..., :1], "E[p | evidence]")


def _mean_of_p(evidence: np.ndarray, support: np.ndarray | None) -> np.ndarray:
    """E[p | counts], float64 ``[..., 1]``: Beta(1 + for, 1 + against), or the posterior over ``support``."""
    favour, against = evidence[..., :1], evidence[..., 1:]
    if support is None:
        return (1.0 + favour) / (2.0 + favour + against)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_weights = np.where(favour > 0, favour * np.log(support), 0.0) + np.where(
            against > 0, against * np.log1p(-support), 0.0
        )
    weights = np.exp(log_weights - log_weights.max(axis=-1, keepdims=True))
    return (weights @ support / weights.sum(axis=-1))[..., None]


# --- ExpectedRewards ----------------------------------------------------------------------------


def _check_expected_rewards(
    family: TaskFamily, data: RandomRollout, out: dict, false_alarm_rate: float
) -> None:
    name = "ExpectedRewards capability"
    expected = out["expected"]  # [T, N, A]
    if expected.dtype != np.float32 or expected.shape[2:] != (family.num_actions,):
        raise fail(
            family,
            name,
            f"expected_rewards(belief, obs) must be float32[{family.num_actions}], got {_layout(expected)}",
        )
    if not np.all(np.isfinite(expected)):
        raise fail(family, name, "expected_rewards(belief, obs) became non-finite along a random rollout")
    actions = np.asarray(data.actions)
    predicted = np.take_along_axis(expected, actions[..., None], axis=-1)[..., 0].astype(np.float64)
    worst = _worst_group(
        predicted, np.asarray(data.rewards, np.float64), actions, family.num_actions, false_alarm_rate
    )
    if worst is not None:
        mean, se, z, z_threshold = worst
        raise fail(
            family,
            name,
            f"the reward after an action is off expected_rewards by {mean:+.4g} on average in a group of "
            f"steps (the action crossed with a bin of its prediction; standard error {se:.2g}, z = "
            f"{z:.1f} > {z_threshold:.1f}): not the posterior expected reward",
        )


def _worst_group(predicted, observed, groups, num_groups, false_alarm_rate):
    """Tests E[observed - predicted | group, bin of predicted] = 0 like check 7 (Bonferroni over the
    groups at ``false_alarm_rate``); returns ``(mean, se, z, threshold)`` of the worst group when it
    fails, else None. Arrays ``[T, N]``; ``groups`` int labels below ``num_groups``."""
    cells = _Cells(predicted, groups, num_groups, 10, MIN_TASKS_PER_GROUP)
    low, high = observed.min(), observed.max()
    tests = cells.tests(
        observed - predicted, high - predicted, predicted - low, np.abs(observed) + np.abs(predicted)
    )
    if not tests:
        return None
    per_group_rate = false_alarm_rate / (2 * len(tests))
    z_threshold = statistics.NormalDist().inv_cdf(1.0 - per_group_rate)
    unseen_tasks = np.log(1.0 / per_group_rate)
    z_scores = [
        max(abs(mean) - unseen_tasks * slack - rounding, 0.0) / (se + 1e-9)
        for mean, se, slack, rounding in tests
    ]
    worst = int(np.argmax(z_scores))
    if z_scores[worst] <= z_threshold:
        return None
    return (*tests[worst][:2], z_scores[worst], z_threshold)


# --- FiniteOutcomes -----------------------------------------------------------------------------


def _check_finite_outcomes(
    family: TaskFamily, data: RandomRollout, out: dict, false_alarm_rate: float
) -> None:
    """Probabilities that sum to 1; every step's outcome listed with positive probability; and each
    listed outcome as frequent as its probability (in groups: the action crossed with a bin)."""
    name = "FiniteOutcomes capability"
    probs, rewards, next_obs = (
        out["probs"],
        out["rewards"],
        out["next_obs"],
    )  # [T, N, K], [T, N, K], [..., K, O]
    num = probs.shape[-1]
    layouts = (_layout(probs), _layout(rewards), _layout(next_obs))
    wanted = (f"float32[{num}]", f"float32[{num}]", f"float32[{num}, {family.obs_size}]")
    if layouts != wanted:
        raise fail(family, name, f"outcomes(belief, obs, action) must give {wanted}, got {layouts}")
    sums = probs.astype(np.float64).sum(axis=-1)
    if probs.min() < -OUTCOME_TOLERANCE or np.abs(sums - 1.0).max() > OUTCOME_TOLERANCE:
        raise fail(
            family, name, f"outcome probabilities must be >= 0 and sum to 1, got sums {np.unique(sums)[:3]}"
        )
    distance = np.abs(rewards - np.asarray(data.rewards)[..., None])
    distance += np.abs(next_obs - np.asarray(data.obs[1:])[..., None, :]).sum(axis=-1)
    scale = OUTCOME_TOLERANCE * (1.0 + np.abs(rewards) + np.abs(next_obs).sum(axis=-1))
    listed = (distance <= scale) & (probs > 0.0)
    if not listed.any(axis=-1).all():
        t, n = np.argwhere(~listed.any(axis=-1))[0]
        raise fail(
            family,
            name,
            f"step {t} of task {n} returned reward {float(data.rewards[t, n])} and observation "
            f"{np.asarray(data.obs[t + 1, n]).tolist()}, which outcomes() did not list with positive "
            "probability",
        )
    happened = (listed & (np.cumsum(listed, axis=-1) == 1)).astype(np.float64)  # the first match
    # Groups: the action crossed with what the history showed last (check 7's groups), so errors
    # that cancel over the histories an action is taken in (e.g. the prior's odds after a cue) show.
    history, num_history = _last_step_group(data, family.num_actions)
    groups = np.asarray(data.actions) * num_history + history[:-1]
    for k in range(num):
        worst = _worst_group(probs[..., k].astype(np.float64), happened[..., k], groups,
                             family.num_actions * num_history, false_alarm_rate / num)  # fmt: skip
        if worst is not None:
            mean, se, z, z_threshold = worst
            raise fail(
                family,
                name,
                f"outcome {k} happens {mean:+.4g} more often than its probability in a group of steps "
                f"(standard error {se:.2g}, z = {z:.1f} > {z_threshold:.1f}): not the posterior predictive",
            )


# --- ReferencePolicies --------------------------------------------------------------------------


def _check_reference_policies(family: TaskFamily, data: RandomRollout, out: dict) -> None:
    """Each reference policy gives an ``int32[]`` action in ``[0, num_actions)`` on every belief."""
    del data
    for policy, actions in out.items():
        if actions.dtype != np.int32 or actions.shape[2:] != ():
            raise fail(
                family,
                "ReferencePolicies capability",
                f"reference policy {policy!r} must return int32[] actions, got {_layout(actions)}",
            )
        if actions.min() < 0 or actions.max() >= family.num_actions:
            raise fail(
                family,
                "ReferencePolicies capability",
                f"reference policy {policy!r} chose actions outside [0, {family.num_actions}): "
                f"{np.unique(actions)[:5].tolist()}",
            )


# --- GoalCandidates -----------------------------------------------------------------------------


def _check_goal_candidates(family: TaskFamily, data: RandomRollout, out: dict) -> None:
    name = "GoalCandidates capability"
    moves, distances, goals = (
        np.asarray(table()) for table in (family.move_table, family.distance_table, family.goal_cells)
    )
    for what, table, ndim in (
        ("move_table()", moves, 2),
        ("distance_table()", distances, 2),
        ("goal_cells()", goals, 1),
    ):
        if table.ndim != ndim or not np.issubdtype(table.dtype, np.integer):
            raise fail(
                family,
                name,
                f"{what} must be a {ndim}-D integer array, got {table.dtype.name}{list(table.shape)}",
            )
    num_cells = moves.shape[0]
    if moves.shape[1] != family.num_actions or moves.min() < 0 or moves.max() >= num_cells:
        raise fail(
            family, name, f"move_table() must be [cells, num_actions = {family.num_actions}] of cell indices"
        )
    if distances.shape != (num_cells, num_cells) or not np.array_equal(
        np.minimum(distances, num_cells), _breadth_first(moves)
    ):
        raise fail(family, name, "distance_table() must hold the fewest moves of move_table() between cells")
    if goals.size == 0 or goals.min() < 0 or goals.max() >= num_cells:
        raise fail(
            family, name, f"goal_cells() must be cell indices in [0, {num_cells}), got {goals.tolist()}"
        )
    cells, possible = np.asarray(out["cells"]), np.asarray(out["possible"])
    if cells.min() < 0 or cells.max() >= num_cells:
        raise fail(family, name, f"current_cell(obs) must be a cell index in [0, {num_cells})")
    if possible.dtype != np.bool_ or possible.shape[2:] != goals.shape:
        raise fail(
            family,
            name,
            f"possible_goals(belief) must be bool[{goals.size}], got {_layout(possible)}",
        )
    actions, rewards = np.asarray(data.actions), np.asarray(data.rewards)
    entered = moves[cells[:-1], actions]  # [T, N]
    if not np.array_equal(cells[1:][rewards == 0], entered[rewards == 0]):
        raise fail(family, name, "a step without reward must land on move_table()[current_cell(obs), action]")
    if not np.isin(entered[rewards != 0], goals).all():
        raise fail(family, name, "a paid step must enter one of goal_cells()")
    if (possible[1:] & ~possible[:-1]).any() or not possible.any(axis=-1).all():
        raise fail(family, name, "possible_goals(belief) must never regrow a ruled-out goal nor become empty")
    if not np.array_equal(np.asarray(out["features"])[..., : goals.size] > 0, possible):
        raise fail(
            family, name, "possible_goals(belief) must be the support of the posterior over goal candidates"
        )


def _breadth_first(moves: np.ndarray) -> np.ndarray:
    """Fewest moves between cells, ``int[C, C]``; unreachable pairs get C."""
    num_cells = moves.shape[0]
    distances = np.full((num_cells, num_cells), num_cells, np.int64)
    reached = np.eye(num_cells, dtype=bool)
    np.fill_diagonal(distances, 0)
    for steps in range(1, num_cells):
        grown = reached.copy()
        for action in range(moves.shape[1]):
            # Cells that one move of `action` from a reached cell enters.
            sources, cells = np.nonzero(reached)
            grown[sources, moves[cells, action]] = True
        new = grown & ~reached
        if not new.any():
            break
        distances[new] = steps
        reached = grown
    return distances


# --- shared -------------------------------------------------------------------------------------


def _layout(batched: np.ndarray) -> str:
    """``float32[2]``: the dtype and per-step shape of an output ``[T, N, ...]``."""
    return f"{batched.dtype.name}{list(batched.shape[2:])}"


def _binary_rewards(family: TaskFamily, name: str, data: RandomRollout) -> np.ndarray:
    rewards = np.asarray(data.rewards, np.float64)
    if not np.isin(rewards, (0.0, 1.0)).all():
        raise fail(family, name, f"rewards must be 0 or 1, got {np.unique(rewards)[:5].tolist()}")
    return rewards


def _cumulative(per_step: np.ndarray) -> np.ndarray:
    """``[T, ...]`` -> running sums ``[T + 1, ...]`` from 0."""
    return np.concatenate([np.zeros_like(per_step[:1]), np.cumsum(per_step, axis=0)])


def _close(got: np.ndarray, expected: np.ndarray | float) -> np.ndarray:
    return np.abs(got - expected) <= COUNT_TOLERANCE + FLOAT32_ROUNDING * np.abs(expected)


def _check_means(family: TaskFamily, name: str, means: np.ndarray, features: np.ndarray, what: str) -> None:
    wrong = ~(np.abs(means - features) <= MEAN_TOLERANCE).all(axis=-1)
    if wrong.any():
        t, n = np.argwhere(wrong)[0]
        raise fail(
            family,
            name,
            f"the posterior mean {what} must open belief_features; after {t} steps of task {n}: "
            f"{means[t, n].tolist()} vs belief_features {features[t, n].tolist()}",
        )
