"""The contract's structural checks: sizes, shapes, compile once, vmap, determinism, long runs."""

from __future__ import annotations

import functools
import itertools
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from metabelief.tasks.base import PyTree, TaskFamily
from metabelief.testing.failures import fail
from metabelief.testing.random_rollout import RandomRollout, random_rollout

_check_ids = itertools.count()


def jit_rollout(family: TaskFamily, num_steps: int):
    """``random_rollout`` of ``num_steps`` steps, jitted: ``(key, tasks) -> RandomRollout``."""
    return jax.jit(functools.partial(random_rollout, family, num_steps=num_steps))


def check_sizes(family: TaskFamily) -> None:
    """``num_actions`` and ``horizon`` are Python ints >= 1, ``obs_size`` one >= 0."""
    for name, minimum in (("num_actions", 1), ("obs_size", 0), ("horizon", 1)):
        value = getattr(family, name, None)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise fail(family, "sizes", f"{name} must be a Python int >= {minimum}, got {value!r}")


def _expect(family: TaskFamily, what: str, value: jax.ShapeDtypeStruct, shape: tuple, dtype: Any) -> None:
    if value.shape != shape or value.dtype != jnp.dtype(dtype):
        raise fail(
            family,
            "shapes",
            f"{what} must be {jnp.dtype(dtype).name}{list(shape)}, got {value.dtype.name}{list(value.shape)}",
        )


def _expect_same_layout(family: TaskFamily, what: str, before: PyTree, after: PyTree) -> None:
    def layout(tree):
        return jax.tree.map(lambda x: (x.shape, x.dtype, x.weak_type), tree)

    if jax.tree.structure(before) != jax.tree.structure(after) or layout(before) != layout(after):
        raise fail(
            family,
            "shapes",
            f"{what} changed structure, shape or dtype across a call: {layout(before)} -> {layout(after)}",
        )


def _one_transition(family: TaskFamily, task_key, reset_key, step_key, action) -> tuple:
    """Every contract method once, for one task: sample, reset, init, step, update, features."""
    task = family.sample_task(task_key)
    state, obs = family.reset(reset_key, task)
    belief = family.belief_init(obs)
    next_state, next_obs, reward, done = family.step(step_key, task, state, action)
    next_belief = family.belief_update(belief, obs, action, reward, next_obs)
    features = family.belief_features(next_belief)
    truth = family.true_features(task, next_state)
    return task, state, obs, belief, next_state, next_obs, reward, done, next_belief, features, truth


def check_shapes_and_dtypes(family: TaskFamily, key: jax.Array) -> None:
    """Every output has the contract's shape and dtype; state and belief keep their layout."""
    action = jnp.asarray(family.num_actions - 1, jnp.int32)
    # Abstract evaluation: shapes, dtypes and weak types without compiling anything.
    _, state, obs, belief, next_state, next_obs, reward, done, next_belief, features, truth = jax.eval_shape(
        functools.partial(_one_transition, family), *jax.random.split(key, 3), action
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
        raise fail(
            family,
            "shapes",
            "belief_features must be 1-D and at least as long as the 1-D "
            f"true_features, got {features.shape} and {truth.shape}",
        )


def check_compiles_once(family: TaskFamily, key: jax.Array, task: PyTree) -> None:
    """Jitted step, belief_update and belief_features fed their own outputs trace once."""
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
        raise fail(family, "compile once", f"re-traced when fed its own outputs: {error}") from error


def check_vmap_matches_loop(family: TaskFamily, key: jax.Array, num_tasks: int = 4) -> None:
    """One transition vmapped over tasks equals a loop of single-task calls with the same keys."""
    task_key, reset_key, step_key = (jax.random.split(k, num_tasks) for k in jax.random.split(key, 3))
    actions = jnp.arange(num_tasks, dtype=jnp.int32) % family.num_actions
    one_transition = functools.partial(_one_transition, family)
    inputs = (task_key, reset_key, step_key, actions)
    batched = jax.device_get(jax.jit(jax.vmap(one_transition))(*inputs))
    single_transition = jax.jit(one_transition)
    for i in range(num_tasks):
        single = jax.device_get(single_transition(*(x[i] for x in inputs)))
        try:
            jax.tree.map(_assert_close, jax.tree.map(lambda x, i=i: x[i], batched), single)
        except AssertionError as error:
            raise fail(
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


def check_long_rollout(
    family: TaskFamily, key: jax.Array, tasks: PyTree, sampled: RandomRollout, max_tasks: int = 256
) -> None:
    """Over 10 x horizon random steps: deterministic, ``done`` on time, beliefs finite and in range."""
    num_steps = 10 * family.horizon
    # The whole trajectory is kept for the checks below: bound it to ~64 MB of float32.
    floats_per_step = sampled.obs.shape[-1] + sampled.features.shape[-1] + sampled.truth.shape[-1]
    num_tasks = int(np.clip(2**24 // (num_steps * floats_per_step), 8, max_tasks))
    tasks = jax.tree.map(lambda x: x[:num_tasks], tasks)
    rollout = jit_rollout(family, num_steps)
    first = jax.device_get(rollout(key, tasks))
    if not _bitwise_equal(first, jax.device_get(rollout(key, tasks))):
        raise fail(family, "determinism", "the same key gave different rollouts")

    expected_done = np.arange(1, num_steps + 1)[:, None] >= family.horizon
    if not np.array_equal(first.dones, np.broadcast_to(expected_done, first.dones.shape)):
        raise fail(family, "done", f"done must be true exactly from step horizon={family.horizon} on")
    for name in ("features", "truth", "rewards"):
        if not np.all(np.isfinite(getattr(first, name))):
            raise fail(family, "finite", f"{name} became non-finite within {num_steps} random steps")
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
        raise fail(
            family,
            "normalised",
            f"posterior mean {dim} left the range of its truth "
            f"[{low[dim]:.4g}, {high[dim]:.4g}]: {means[outside.any(axis=1)][0]}",
        )
    truth_sum = truth.sum(axis=1)
    if np.ptp(truth_sum) <= 1e-5 * (1.0 + np.abs(truth_sum).max()):
        error = np.abs(means.sum(axis=1) - truth_sum.mean()).max()
        if error > 1e-4 * (1.0 + np.abs(truth_sum).max()):
            raise fail(
                family,
                "normalised",
                f"the truth always sums to {truth_sum.mean():.6g} but the "
                f"posterior means are off by up to {error:.3g}",
            )
