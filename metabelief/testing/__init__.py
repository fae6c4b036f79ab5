"""Conformance checks for task families, including the ones users write.

``check_family(family)`` runs a family through the contract of ``metabelief.tasks.base`` and
raises ``FamilyCheckError`` naming the first check that fails (its ``report`` lists each check's
outcome up to it); a family that passes gets a ``CheckReport``, whose ``str`` names the
capabilities the family declares and what each check measured:

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
   outcome);
8. second moment: in the same groups, the squared error (truth - posterior mean)^2 averages the
   belief's own posterior variance, as E[(truth - mean)^2 | history] does for an exact belief.
   A family states its variance with the optional ``belief_variance(belief) -> float32[D]`` (the
   posterior variance of each truth dimension; see ``metabelief.tasks.base``). Without it, a truth
   dimension that takes only the values 0 and 1 in the sample (two_step, gridworld, tabular:
   indicator and one-hot truths) is tested against the Bernoulli variance m (1 - m) of its mean
   m, and any other dimension only by check 7. With a reported variance the check sees a right
   mean with the wrong uncertainty, too confident (positive residual) or too unsure (negative).
   For a 0/1 truth it adds little: the mean fixes the distribution, so no belief has the right
   mean and the wrong variance, and as (t - m)^2 - m (1 - m) = (t - m)(1 - 2m) the test is check
   7 with each step's residual weighted by 1 - 2m (measured, its z tracks check 7's). Standard
   errors and the slack for unseen outcomes are as in check 7 (a near-certain belief's rare
   outcome would add a large squared error), both checks allow 64 float32 ulps of rounding, and
   one Bonferroni bound at ``false_alarm_rate`` covers every test of checks 7 and 8 together; a
   family failing both is reported as failing check 7;
9. declared capabilities (``metabelief.testing.capabilities``): each optional capability of
   ``metabelief.tasks.base`` the family has (``BetaArms``, ``DependentArms``, ``ExpectedRewards``,
   ``GoalCandidates``) holds along the same random rollout, the belief replayed on it: Beta counts
   that start at the prior and grow by the reward on the pulled arm, evidence counts that grow for
   p exactly on (arm 0, reward 1) and (arm 1, reward 0), means that open ``belief_features``,
   expected rewards that the rewards after each action average (tested like check 7, with its own
   Bonferroni bound at ``false_alarm_rate``), a goal world's tables and possible goals. A failure
   names the capability, e.g. ``[BetaArms capability]``; the baselines that trust a capability
   (``metabelief.baselines``) are then right for the family.

Checks 7 and 8 are necessary conditions for an exact belief, not a proof: they test only the
first two moments, only averaged within these groups, and only along random-action histories.
What they cannot see: a belief that is the exact posterior given LESS of the history, as long as
what it keeps tells the groups apart (its own mean and the last step). Its mean and variance are
then E[truth | what it kept] and the variance given that, calibrated in every such group; a Beta
bandit that remembers only the last transition passes both checks. Likewise errors that cancel
within every group in both moments, and errors only in higher moments or in the correlations
across truth dimensions.
"""

import functools

import jax
import jax.numpy as jnp

from metabelief.rollout import sample_tasks
from metabelief.tasks.base import TaskFamily
from metabelief.tasks.validation import integer_at_least, positive_float
from metabelief.testing import capabilities, structure
from metabelief.testing.calibration import (
    MIN_TASKS_PER_GROUP,
    check_calibration,
    reports_variance,
    split_variance_features,
    with_variance_features,
)
from metabelief.testing.capabilities import check_capabilities
from metabelief.testing.failures import FamilyCheckError
from metabelief.testing.random_rollout import RandomRollout, random_rollout
from metabelief.testing.report import CAPABILITY_CHECK, SECOND_MOMENT_CHECK, CheckReport, CheckRun

__all__ = [
    "CheckReport",
    "FamilyCheckError",
    "RandomRollout",
    "check_family",
    "declared_capabilities",
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
      false_alarm_rate: probability that an exact belief fails the calibration checks (7 and 8
        together); check 9's test of ``expected_rewards`` has a bound of its own at this rate.

    Returns:
      A ``CheckReport``: every check passed, the capabilities the family declares and the
      calibration statistics of both moments; ``print(report)`` shows them.

    Raises:
      ValueError: a bad argument (named), before anything runs.
      FamilyCheckError: naming the first check that failed; its ``report`` shows the checks
        before it passed and the ones after it not reached.
    """
    _check_arguments(family, key, num_tasks, num_steps, false_alarm_rate)
    key = jax.random.key(0) if key is None else key
    run = CheckRun(family, declared_capabilities(family))
    with run.checking(1):
        structure.check_sizes(family)
    shape_key, task_key, trace_key, vmap_key, rollout_key, calibration_key = jax.random.split(key, 6)
    with run.checking(2):
        structure.check_shapes_and_dtypes(family, shape_key)
        # With belief_variance, the calibration rollout records it beside the features (check 8).
        calibrated = with_variance_features(family, shape_key) if reports_variance(family) else family
    # One batch of tasks serves every check below: sampling can be the costliest part to compile.
    tasks = jax.jit(functools.partial(sample_tasks, family, num_tasks=num_tasks))(task_key)
    with run.checking(3):
        structure.check_compiles_once(family, trace_key, jax.tree.map(lambda x: x[0], tasks))
    with run.checking(4):
        structure.check_vmap_matches_loop(family, vmap_key)
    steps = min(family.horizon, 100) if num_steps is None else num_steps
    sampled = jax.device_get(structure.jit_rollout(calibrated, steps)(calibration_key, tasks))
    sampled, variance = (sampled, None) if calibrated is family else split_variance_features(sampled)
    with run.checking(5, 6):
        structure.check_long_rollout(family, rollout_key, tasks, sampled)
    with run.checking(7, 8):
        calibration = check_calibration(family, sampled, false_alarm_rate, variance)
    with run.checking(9):
        check_capabilities(family, sampled, false_alarm_rate)
    return run.report(calibration)


def declared_capabilities(family: TaskFamily) -> dict[str, int]:
    """The optional capabilities of ``metabelief.tasks.base`` that ``family`` declares -> the check
    that tests each (8 for ``BeliefVariance``, 9 for the others)."""
    declared = {
        capability.__name__: CAPABILITY_CHECK for capability in capabilities.declared_capabilities(family)
    }
    return declared | ({"BeliefVariance": SECOND_MOMENT_CHECK} if reports_variance(family) else {})


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
