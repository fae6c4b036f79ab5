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
   last step is what exposes beliefs that skip, delay or ignore part of an update. Standard
   errors cluster by task, the bound is Bonferroni over groups, and a near-certain belief gets
   slack for the rare tasks a finite sample misses (none of 1,000 tasks may hold a 1-in-200
   outcome).
"""

import functools

import jax
import jax.numpy as jnp

from metabelief.tasks.base import TaskFamily
from metabelief.tasks.validation import integer_at_least, positive_float
from metabelief.testing import structure
from metabelief.testing.calibration import MIN_TASKS_PER_GROUP, CheckReport, check_calibration
from metabelief.testing.failures import FamilyCheckError
from metabelief.testing.random_rollout import RandomRollout, random_rollout, sample_tasks

__all__ = [
    "CheckReport",
    "FamilyCheckError",
    "RandomRollout",
    "check_family",
    "random_rollout",
    "sample_tasks",
]


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
      num_tasks: tasks sampled for the calibration check, at least 50 (its smallest tested group).
      num_steps: steps per task for the calibration check (default ``min(horizon, 100)``).
      false_alarm_rate: probability that an exact belief fails the calibration check.

    Returns:
      A ``CheckReport`` with the calibration statistics.

    Raises:
      ValueError: a bad argument (named), before anything runs.
      FamilyCheckError: naming the first check that failed.
    """
    _check_arguments(family, key, num_tasks, num_steps, false_alarm_rate)
    key = jax.random.key(0) if key is None else key
    structure.check_sizes(family)
    shape_key, task_key, trace_key, vmap_key, rollout_key, calibration_key = jax.random.split(key, 6)
    structure.check_shapes_and_dtypes(family, shape_key)
    # One batch of tasks serves every check below: sampling can be the costliest part to compile.
    tasks = jax.jit(functools.partial(sample_tasks, family, num_tasks=num_tasks))(task_key)
    structure.check_compiles_once(family, trace_key, jax.tree.map(lambda x: x[0], tasks))
    structure.check_vmap_matches_loop(family, vmap_key)
    steps = min(family.horizon, 100) if num_steps is None else num_steps
    sampled = jax.device_get(structure.jit_rollout(family, steps)(calibration_key, tasks))
    structure.check_long_rollout(family, rollout_key, tasks, sampled)
    return check_calibration(family, sampled, false_alarm_rate)


def _check_arguments(family, key, num_tasks, num_steps, false_alarm_rate) -> None:
    """``check_family``'s own arguments; the family itself is what the checks are for."""
    if isinstance(family, str):
        raise ValueError(f"family must be a task family object, e.g. metabelief.make({family!r}), not a name")
    if key is not None:
        is_key = isinstance(key, jax.Array) and (
            (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ())
            or (key.dtype == jnp.uint32 and key.shape == (2,))
        )
        if not is_key:
            raise ValueError(f"key must be one PRNG key such as jax.random.key(0), got {key!r}")
    if integer_at_least("num_tasks", num_tasks, 1) < MIN_TASKS_PER_GROUP:
        raise ValueError(
            f"num_tasks must be >= {MIN_TASKS_PER_GROUP} (the calibration check tests groups of steps "
            f"that at least {MIN_TASKS_PER_GROUP} tasks reached), got {num_tasks!r}"
        )
    if num_steps is not None:
        integer_at_least("num_steps", num_steps, 1)
    if positive_float("false_alarm_rate", false_alarm_rate) >= 1.0:
        raise ValueError(f"false_alarm_rate must lie in (0, 1), got {false_alarm_rate!r}")
