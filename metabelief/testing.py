"""Conformance checks for task families, including the ones users write.

``check_family(family)`` runs a family through the contract of ``metabelief.tasks.base`` and
raises ``FamilyCheckError`` naming the first check that fails:

1. sizes: ``num_actions`` and ``horizon`` are Python ints >= 1, ``obs_size`` one >= 0;
2. shapes and dtypes of every method's output, and ``step``/``belief_update`` keep the
   structure, shapes and dtypes of the state and belief they are given;
3. compile once: jitted ``step``, ``belief_update`` and ``belief_features`` fed their own outputs
   are traced a single time (``chex.assert_max_traces``);
4. vmap over tasks equals a Python loop of single-task calls (two separate traces given the same
   keys, so this also catches randomness or state read on the host while tracing);
5. the same key gives bit-identical output from a compiled rollout run twice;
6. over 10 x horizon random steps: ``done`` exactly from the horizon on, beliefs finite, the
   posterior means inside the range of the truth and summing like it when its sum is fixed;
7. calibration: over many sampled tasks, the truth averaged within a group of steps equals the
   belief averaged there, within Monte Carlo error. A group is a bin of one posterior mean
   crossed with the last action, whether the last reward was high and which half of the
   observations (split by a fixed random projection) came last. Because an exact posterior
   mean is E[truth | history], this holds for ANY history-measurable grouping; grouping by the
   last step is what exposes beliefs that skip, delay or ignore part of an update. Standard errors cluster
   by task, the bound is Bonferroni over groups, and a near-certain belief gets slack for the
   rare tasks a finite sample misses (none of 1,000 tasks may hold a 1-in-200 outcome).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import statistics
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from metabelief.tasks.base import PyTree, TaskFamily

_check_ids = itertools.count()


class FamilyCheckError(AssertionError):
    """A task family breaks the contract; the message names the check and what was seen."""


@chex.dataclass(frozen=True)
class RandomRollout:
    """Uniformly random actions on sampled tasks with the belief in lockstep.

    Index 0 of ``features`` and ``truth`` is the start of the episode (``belief_init``), index
    t + 1 follows the t-th transition.
    """

    obs: jax.Array  # float32[T + 1, N, obs_size]: what the belief has seen last
    features: jax.Array  # float32[T + 1, N, F]: belief_features
    truth: jax.Array  # float32[T + 1, N, D]: true_features
    actions: jax.Array  # int32[T, N]
    rewards: jax.Array  # float32[T, N]
    dones: jax.Array  # bool[T, N]


@dataclasses.dataclass(frozen=True)
class CheckReport:
    """What ``check_family`` measured on a family that passed."""

    calibration_groups: int  # groups with enough tasks to be tested
    calibration_max_z: float  # largest calibration z over the groups (module docstring, check 7)
    z_threshold: float  # the bound it had to stay under


def sample_tasks(family: TaskFamily, key: jax.Array, num_tasks: int) -> PyTree:
    """``num_tasks`` tasks from the family's prior: its task pytree with a leading [num_tasks] axis."""
    return jax.vmap(family.sample_task)(jax.random.split(key, num_tasks))


def random_rollout(family: TaskFamily, key: jax.Array, tasks: PyTree, num_steps: int) -> RandomRollout:
    """Steps a batch of ``tasks`` ``num_steps`` times with uniformly random actions.

    One ``lax.scan`` over time of the family vmapped over tasks; jit it with ``num_steps`` static.

    Args:
      family: the task family.
      key: PRNG key for resets, actions and environment noise.
      tasks: task pytree with a leading [N] axis (e.g. from ``sample_tasks``).
      num_steps: T, the number of transitions.

    Returns:
      A ``RandomRollout`` with arrays of shape ``[T (+ 1), N, ...]``.
    """
    num_tasks = jax.tree.leaves(tasks)[0].shape[0]
    reset_key, scan_key = jax.random.split(key)
    states, obs = jax.vmap(family.reset)(jax.random.split(reset_key, num_tasks), tasks)
    beliefs = jax.vmap(family.belief_init)(obs)
    features = jax.vmap(family.belief_features)
    truth = jax.vmap(family.true_features)

    def transition(carry, step_key):
        states, obs, beliefs = carry
        action_key, env_key = jax.random.split(step_key)
        actions = jax.random.randint(action_key, (num_tasks,), 0, family.num_actions, jnp.int32)
        env_keys = jax.random.split(env_key, num_tasks)
        states, next_obs, rewards, dones = jax.vmap(family.step)(env_keys, tasks, states, actions)
        beliefs = jax.vmap(family.belief_update)(beliefs, obs, actions, rewards, next_obs)
        record = (next_obs, features(beliefs), truth(tasks, states), actions, rewards, dones)
        return (states, next_obs, beliefs), record

    _, (step_obs, step_features, step_truth, actions, rewards, dones) = jax.lax.scan(
        transition, (states, obs, beliefs), jax.random.split(scan_key, num_steps)
    )
    return RandomRollout(
        obs=jnp.concatenate([obs[None], step_obs]),
        features=jnp.concatenate([features(beliefs)[None], step_features]),
        truth=jnp.concatenate([truth(tasks, states)[None], step_truth]),
        actions=actions,
        rewards=rewards,
        dones=dones,
    )


def _run_rollout(family: TaskFamily, key: jax.Array, tasks: PyTree, num_steps: int) -> RandomRollout:
    """A freshly jitted ``random_rollout``, its result on the host."""
    rollout = jax.jit(functools.partial(random_rollout, family, num_steps=num_steps))
    return jax.device_get(rollout(key, tasks))


def check_family(
    family: TaskFamily,
    *,
    key: jax.Array | None = None,
    num_tasks: int = 2048,
    num_steps: int | None = None,
    false_alarm_rate: float = 1e-4,
) -> CheckReport:
    """Checks that ``family`` honours the task-family contract and that its belief is exact.

    Args:
      family: any object with the contract's attributes and methods.
      key: PRNG key for every random draw (default ``jax.random.key(0)``).
      num_tasks: tasks sampled for the calibration check.
      num_steps: steps per task for the calibration check (default ``min(horizon, 100)``).
      false_alarm_rate: probability that an exact belief fails the calibration check.

    Returns:
      A ``CheckReport`` with the calibration statistics.

    Raises:
      FamilyCheckError: naming the first check that failed.
    """
    key = jax.random.key(0) if key is None else key
    _check_sizes(family)
    shape_key, task_key, trace_key, vmap_key, rollout_key, calibration_key = jax.random.split(key, 6)
    _check_shapes_and_dtypes(family, shape_key)
    # One batch of tasks serves every check below: sampling can be the costliest part to compile.
    tasks = jax.jit(functools.partial(sample_tasks, family, num_tasks=num_tasks))(task_key)
    _check_compiles_once(family, trace_key, jax.tree.map(lambda x: x[0], tasks))
    _check_vmap_matches_loop(family, vmap_key)
    steps = min(family.horizon, 100) if num_steps is None else num_steps
    sampled = _run_rollout(family, calibration_key, tasks, steps)
    _check_long_rollout(family, rollout_key, tasks, sampled)
    return _check_calibration(family, sampled, false_alarm_rate)


def _fail(family: TaskFamily, check: str, detail: str) -> FamilyCheckError:
    return FamilyCheckError(f"check_family({family!r}) failed [{check}]: {detail}")


def _check_sizes(family: TaskFamily) -> None:
    for name, minimum in (("num_actions", 1), ("obs_size", 0), ("horizon", 1)):
        value = getattr(family, name, None)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _fail(family, "sizes", f"{name} must be a Python int >= {minimum}, got {value!r}")


def _expect(family: TaskFamily, what: str, value: jax.ShapeDtypeStruct, shape: tuple, dtype: Any) -> None:
    if value.shape != shape or value.dtype != jnp.dtype(dtype):
        raise _fail(
            family,
            "shapes",
            f"{what} must be {jnp.dtype(dtype).name}{list(shape)}, got {value.dtype.name}{list(value.shape)}",
        )


def _expect_same_layout(family: TaskFamily, what: str, before: PyTree, after: PyTree) -> None:
    def layout(tree):
        return jax.tree.map(lambda x: (x.shape, x.dtype, x.weak_type), tree)

    if jax.tree.structure(before) != jax.tree.structure(after) or layout(before) != layout(after):
        raise _fail(
            family,
            "shapes",
            f"{what} changed structure, shape or dtype across a call: {layout(before)} -> {layout(after)}",
        )


def _check_shapes_and_dtypes(family: TaskFamily, key: jax.Array) -> None:
    def one_transition(key):
        task_key, reset_key, step_key = jax.random.split(key, 3)
        task = family.sample_task(task_key)
        state, obs = family.reset(reset_key, task)
        belief = family.belief_init(obs)
        action = jnp.asarray(family.num_actions - 1, jnp.int32)
        next_state, next_obs, reward, done = family.step(step_key, task, state, action)
        next_belief = family.belief_update(belief, obs, action, reward, next_obs)
        features = family.belief_features(next_belief)
        truth = family.true_features(task, next_state)
        return state, obs, belief, next_state, next_obs, reward, done, next_belief, features, truth

    # Abstract evaluation: shapes, dtypes and weak types without compiling anything.
    state, obs, belief, next_state, next_obs, reward, done, next_belief, features, truth = jax.eval_shape(
        one_transition, key
    )
    _expect(family, "reset's obs", obs, (family.obs_size,), jnp.float32)
    _expect(family, "step's obs", next_obs, (family.obs_size,), jnp.float32)
    _expect(family, "step's reward", reward, (), jnp.float32)
    _expect(family, "step's done", done, (), jnp.bool_)
    _expect_same_layout(family, "step's state", state, next_state)
    _expect_same_layout(family, "belief_update's belief", belief, next_belief)
    _expect(family, "belief_features", features, features.shape[:1], jnp.float32)
    _expect(family, "true_features", truth, truth.shape[:1], jnp.float32)
    if features.ndim != 1 or truth.ndim != 1 or truth.shape[0] > features.shape[0]:
        raise _fail(
            family,
            "shapes",
            "belief_features must be 1-D and at least as long as the 1-D "
            f"true_features, got {features.shape} and {truth.shape}",
        )


def _check_compiles_once(family: TaskFamily, key: jax.Array, task: PyTree) -> None:
    check_id = next(_check_ids)

    def traced_once(fn):
        # chex counts traces by the function's name and source; a fresh name per call keeps
        # checks of different families (and repeated checks) from sharing one counter.
        fn.__name__ = f"{fn.__name__}_check{check_id}"
        return jax.jit(chex.assert_max_traces(fn, n=1))

    def step(key, task, state, action):
        return family.step(key, task, state, action)

    def belief_update(belief, obs, action, reward, next_obs):
        return family.belief_update(belief, obs, action, reward, next_obs)

    def belief_features(belief):
        return family.belief_features(belief)

    jit_step, jit_update, jit_features = map(traced_once, (step, belief_update, belief_features))
    reset_key, key = jax.random.split(key)
    state, obs = family.reset(reset_key, task)
    belief = family.belief_init(obs)
    try:
        for step_key, action in zip(jax.random.split(key, 4), itertools.cycle(range(family.num_actions))):
            action = jnp.asarray(action, jnp.int32)
            state, next_obs, reward, _ = jit_step(step_key, task, state, action)
            belief = jit_update(belief, obs, action, reward, next_obs)
            jit_features(belief)
            obs = next_obs
    except AssertionError as error:
        raise _fail(family, "compile once", f"re-traced when fed its own outputs: {error}") from error


def _check_vmap_matches_loop(family: TaskFamily, key: jax.Array, num_tasks: int = 4) -> None:
    task_key, reset_key, step_key = (jax.random.split(k, num_tasks) for k in jax.random.split(key, 3))
    actions = jnp.arange(num_tasks, dtype=jnp.int32) % family.num_actions

    def one_transition(task_key, reset_key, step_key, action):
        task = family.sample_task(task_key)
        state, obs = family.reset(reset_key, task)
        belief = family.belief_init(obs)
        next_state, next_obs, reward, done = family.step(step_key, task, state, action)
        next_belief = family.belief_update(belief, obs, action, reward, next_obs)
        outputs = (task, state, obs, belief, next_state, next_obs, reward, done, next_belief)
        return outputs + (family.belief_features(next_belief), family.true_features(task, next_state))

    inputs = (task_key, reset_key, step_key, actions)
    batched = jax.device_get(jax.jit(jax.vmap(one_transition))(*inputs))
    single_transition = jax.jit(one_transition)
    for i in range(num_tasks):
        single = jax.device_get(single_transition(*(x[i] for x in inputs)))
        try:
            jax.tree.map(_assert_close, jax.tree.map(lambda x, i=i: x[i], batched), single)
        except AssertionError as error:
            raise _fail(
                family,
                "vmap",
                f"task {i} differs from its single-task call with the same keys (randomness or state "
                f"read on the host while tracing also shows here): {error}",
            ) from error


def _assert_close(batched: Any, single: Any) -> None:
    np.testing.assert_allclose(_host(batched), _host(single), rtol=1e-5, atol=1e-6)


def _bitwise_equal(tree: PyTree, other: PyTree) -> bool:
    leaves, other_leaves = jax.tree.leaves(tree), jax.tree.leaves(other)
    return len(leaves) == len(other_leaves) and all(
        np.array_equal(_host(a), _host(b), equal_nan=True) for a, b in zip(leaves, other_leaves, strict=True)
    )


def _host(x: Any) -> np.ndarray:
    if jnp.issubdtype(jnp.result_type(x), jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.asarray(x)


def _check_long_rollout(
    family: TaskFamily, key: jax.Array, tasks: PyTree, sampled: RandomRollout, max_tasks: int = 256
) -> None:
    num_steps = 10 * family.horizon
    # The whole trajectory is kept for the checks below: bound it to ~64 MB of float32.
    floats_per_step = sampled.obs.shape[-1] + sampled.features.shape[-1] + sampled.truth.shape[-1]
    num_tasks = int(np.clip(2**24 // (num_steps * floats_per_step), 8, max_tasks))
    tasks = jax.tree.map(lambda x: x[:num_tasks], tasks)
    rollout = jax.jit(functools.partial(random_rollout, family, num_steps=num_steps))
    first = jax.device_get(rollout(key, tasks))
    if not _bitwise_equal(first, jax.device_get(rollout(key, tasks))):
        raise _fail(family, "determinism", "the same key gave different rollouts")

    expected_done = np.arange(1, num_steps + 1)[:, None] >= family.horizon
    if not np.array_equal(first.dones, np.broadcast_to(expected_done, first.dones.shape)):
        raise _fail(family, "done", f"done must be true exactly from step horizon={family.horizon} on")
    for name in ("features", "truth", "rewards"):
        if not np.all(np.isfinite(getattr(first, name))):
            raise _fail(family, "finite", f"{name} became non-finite within {num_steps} random steps")
    _check_posterior_means_in_range(family, first, sampled.truth)


def _check_posterior_means_in_range(
    family: TaskFamily, rollout: RandomRollout, sampled_truth: np.ndarray
) -> None:
    """A posterior mean lies in the convex hull of the truth's values, so in their range.

    The range is estimated from the truths of this rollout and of the many tasks ``sampled_truth``
    [..., D] holds, with 5% slack for values the sample did not reach.
    """
    truth = rollout.truth.reshape(-1, rollout.truth.shape[-1]).astype(np.float64)
    means = rollout.features[..., : truth.shape[-1]].reshape(truth.shape).astype(np.float64)
    every_truth = np.concatenate([truth, sampled_truth.reshape(-1, truth.shape[-1])])
    low, high = every_truth.min(axis=0), every_truth.max(axis=0)
    slack = 0.05 * (high - low) + 1e-5
    outside = (means < low - slack) | (means > high + slack)
    if outside.any():
        dim = int(np.argwhere(outside)[0, 1])
        raise _fail(
            family,
            "normalised",
            f"posterior mean {dim} left the range of its truth "
            f"[{low[dim]:.4g}, {high[dim]:.4g}]: {means[outside.any(axis=1)][0]}",
        )
    truth_sum = truth.sum(axis=1)
    if np.ptp(truth_sum) <= 1e-5 * (1.0 + np.abs(truth_sum).max()):
        error = np.abs(means.sum(axis=1) - truth_sum.mean()).max()
        if error > 1e-4 * (1.0 + np.abs(truth_sum).max()):
            raise _fail(
                family,
                "normalised",
                f"the truth always sums to {truth_sum.mean():.6g} but the "
                f"posterior means are off by up to {error:.3g}",
            )


def _check_calibration(
    family: TaskFamily,
    data: RandomRollout,
    false_alarm_rate: float,
    num_bins: int = 10,
    min_tasks_per_group: int = 50,
) -> CheckReport:
    truth = data.truth.astype(np.float64)  # [T + 1, N, D]
    means = data.features[..., : truth.shape[-1]].astype(np.float64)  # [T + 1, N, D]
    history_group = _last_step_group(data, family.num_actions)  # [T + 1, N]
    num_history_groups = 2 * (2 * family.num_actions + 1)

    tested = []  # per group: (dimension, mean residual, standard error, slack per unseen task)
    for dim in range(truth.shape[-1]):
        for stats in _group_statistics(
            truth[..., dim], means[..., dim], history_group, num_history_groups, num_bins, min_tasks_per_group
        ):
            tested.append((dim, *stats))

    if not tested:
        raise _fail(family, "calibration", f"no group reached {min_tasks_per_group} tasks; raise num_tasks")
    per_group_rate = false_alarm_rate / (2 * len(tested))
    z_threshold = statistics.NormalDist().inv_cdf(1.0 - per_group_rate)
    # P(no task with an outcome expected in k of them) = exp(-k): k = log(1 / rate) bounds the unseen.
    unseen_tasks = np.log(1.0 / per_group_rate)
    z_scores = [max(abs(mean) - unseen_tasks * slack, 0.0) / (se + 1e-9) for _, mean, se, slack in tested]
    worst = int(np.argmax(z_scores))
    if z_scores[worst] > z_threshold:
        dim, mean, se, _ = tested[worst]
        raise _fail(
            family,
            "calibration",
            f"posterior mean {dim} is off its truth by {mean:+.4g} in a group of steps (standard "
            f"error {se:.2g}; beyond the slack for unseen outcomes, z = {z_scores[worst]:.1f} > "
            f"{z_threshold:.1f}): the belief is not the exact posterior (wrong prior, a skipped or "
            "delayed update?)",
        )
    return CheckReport(
        calibration_groups=len(tested), calibration_max_z=float(z_scores[worst]), z_threshold=z_threshold
    )


def _group_statistics(
    truth: np.ndarray,
    means: np.ndarray,
    history_group: np.ndarray,
    num_history_groups: int,
    num_bins: int,
    min_tasks: int,
) -> list[tuple[float, float, float]]:
    """Mean residual, its standard error and slack per unseen task, for each tested group.

    Args:
      truth, means: float64[T + 1, N], one dimension of the truth and of the posterior mean.
      history_group: int[T + 1, N] from ``_last_step_group``.
      num_history_groups: the number of values ``history_group`` can take.
      num_bins: posterior-mean bins (quantiles) crossed with the history groups.
      min_tasks: groups seen in fewer tasks are not tested.
    """
    num_tasks = truth.shape[1]
    edges = np.unique(np.quantile(means, np.linspace(0, 1, num_bins + 1)[1:-1]))
    group = np.searchsorted(edges, means, side="right") * num_history_groups + history_group
    num_groups = (len(edges) + 1) * num_history_groups
    cell = (group * num_tasks + np.arange(num_tasks)).ravel()  # (group, task) pairs

    def per_cell(weights):  # [groups, tasks]
        return np.bincount(cell, weights, num_groups * num_tasks).reshape(num_groups, num_tasks)

    residual_sums, belief_sums, counts = (
        per_cell((truth - means).ravel()),
        per_cell(means.ravel()),
        per_cell(None),
    )
    low, high = truth.min(), truth.max()
    tested = []
    for g in np.flatnonzero((counts > 0).sum(axis=1) >= min_tasks):
        total = counts[g].sum()
        mean = residual_sums[g].sum() / total
        # Steps of one task share its truth: the standard error clusters by task.
        se = np.sqrt(((residual_sums[g] - mean * counts[g]) ** 2).sum()) / total
        # A near-certain belief (0.995, say) is right when 1 task in 200 has the other truth;
        # with few such tasks expected, none may be sampled and the sample's spread cannot show
        # it. Each unseen task would pull the mean toward 0 by up to gap / n.
        belief = belief_sums[g].sum() / total
        gap = high - belief if mean < 0 else belief - low
        tested.append((float(mean), float(se), float(gap / (counts[g] > 0).sum())))
    return tested


def _last_step_group(data: RandomRollout, num_actions: int) -> np.ndarray:
    """Groups steps by what the history shows last: action, reward and observation.

    ``2 * transition + obs_half``: transition is 0 before any step, else 1 + 2 * last action +
    (last reward above the midrange); obs_half splits the latest observation by a fixed random
    projection at its median, so a belief that ignores observations is miscalibrated somewhere.
    """
    actions, rewards = data.actions.astype(np.int64), data.rewards
    midrange = 0.5 * (rewards.min() + rewards.max())
    transition = np.concatenate(
        [np.zeros((1,) + actions.shape[1:], np.int64), 1 + 2 * actions + (rewards > midrange)]
    )
    projection = data.obs @ np.random.default_rng(0).standard_normal(data.obs.shape[-1])  # [T + 1, N]
    return 2 * transition + (projection > np.median(projection))
