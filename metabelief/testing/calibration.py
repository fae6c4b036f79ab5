"""The exactness checks: an exact posterior is calibrated against the truth it estimates.

Check 7 (mean): E[truth - mean | group] = 0. Check 8 (second moment): E[(truth - mean)^2 - variance |
group] = 0, where ``variance`` is the posterior variance of each truth dimension: what the family's
optional ``belief_variance(belief)`` reports, else, for a dimension whose truth only takes the
values 0 and 1, the Bernoulli variance m (1 - m) its mean implies. Both hold for ANY grouping of
steps by the history alone, because an exact belief's mean is E[truth | history] and its variance
E[(truth - mean)^2 | history].
"""

from __future__ import annotations

import dataclasses
import statistics

import jax
import jax.numpy as jnp
import numpy as np

from metabelief.tasks.base import BeliefVariance, PyTree, TaskFamily
from metabelief.testing.failures import fail
from metabelief.testing.random_rollout import RandomRollout
from metabelief.testing.report import CheckReport

MIN_TASKS_PER_GROUP = 50  # a group of steps is tested once this many tasks reached it
FLOAT32_ROUNDING = 2.0**-18  # 64 float32 ulps, relative to the terms a residual subtracts


def reports_variance(family: TaskFamily) -> bool:
    """Whether ``family`` declares the ``BeliefVariance`` capability (``belief_variance(belief)``)."""
    return isinstance(family, BeliefVariance)


def with_variance_features(family: TaskFamily, key: jax.Array) -> TaskFamily:
    """``family`` whose ``belief_features`` are followed by ``belief_variance``: a rollout of it
    records the reported variance beside the features, along the very same trajectory.

    Raises ``FamilyCheckError`` [shapes] unless ``belief_variance`` gives ``float32[D]``, D the
    length of ``true_features``.
    """

    def variance_and_truth(key):
        task_key, reset_key = jax.random.split(key)
        task = family.sample_task(task_key)
        state, obs = family.reset(reset_key, task)
        return family.belief_variance(family.belief_init(obs)), family.true_features(task, state)

    variance, truth = jax.eval_shape(variance_and_truth, key)
    layout = (variance.dtype, variance.shape) if isinstance(variance, jax.ShapeDtypeStruct) else None
    if layout != (jnp.dtype(jnp.float32), truth.shape):
        got = f"{layout[0].name}{list(layout[1])}" if layout else repr(variance)
        raise fail(
            family,
            "shapes",
            f"belief_variance must be float32{list(truth.shape)} like true_features (the posterior "
            f"variance of each truth dimension), got {got}",
        )
    return _VarianceFeatures(family)


class _VarianceFeatures:
    """Delegates to ``family``; ``belief_features`` = ``[family's features, belief_variance]``."""

    def __init__(self, family: TaskFamily):
        self._family = family

    def __getattr__(self, name):
        if name == "_family":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self._family, name)

    def __repr__(self) -> str:
        return repr(self._family)

    def belief_features(self, belief: PyTree) -> jax.Array:
        return jnp.concatenate([self._family.belief_features(belief), self._family.belief_variance(belief)])


def split_variance_features(data: RandomRollout) -> tuple[RandomRollout, np.ndarray]:
    """Undoes ``with_variance_features``: the family's own rollout and the variance ``[T + 1, N, D]``."""
    num_truth = data.truth.shape[-1]
    features = data.features[..., :-num_truth]
    return data.replace(features=features), np.asarray(data.features[..., -num_truth:])


def check_calibration(
    family: TaskFamily,
    data: RandomRollout,
    false_alarm_rate: float,
    variance: np.ndarray | None = None,
    num_bins: int = 10,
    min_tasks_per_group: int = MIN_TASKS_PER_GROUP,
) -> CheckReport:
    """Tests checks 7 and 8 of ``metabelief.testing`` in every group of steps of ``data``.

    Args:
      family: the family (for messages and ``num_actions``).
      data: its random rollout.
      false_alarm_rate: probability that an exact belief fails either check.
      variance: ``[T + 1, N, D]``, the variance the family reports (``belief_variance``) along
        ``data``, or None; dimensions without one are tested on the second moment when their
        truth is 0/1 in ``data`` (variance m (1 - m)), else only on the mean.
      num_bins: posterior-mean bins (quantiles) crossed with the last-step groups.
      min_tasks_per_group: groups seen in fewer tasks are not tested.

    Raises ``FamilyCheckError`` [calibration] when a group's mean residual, else [second moment]
    when a group's squared-error residual, exceeds what chance allows at a family-wise
    ``false_alarm_rate`` over every test of both; else returns the report.
    """
    stats = calibration_statistics(family, data, false_alarm_rate, variance, num_bins, min_tasks_per_group)
    for moment, (z, test) in (("mean", stats.mean), ("second moment", stats.second_moment)):
        if z > stats.z_threshold:
            raise _failure(family, moment, *test, z, stats.z_threshold, stats.sources)
    return CheckReport(
        calibration_groups=stats.num_tests,
        calibration_max_z=max(stats.mean[0], stats.second_moment[0]),
        z_threshold=stats.z_threshold,
        second_moment_groups=stats.num_second_moment_tests,
        second_moment_max_z=stats.second_moment[0],
        second_moment_source=stats.sources,
        mean_max_z=stats.mean[0],
    )


@dataclasses.dataclass(frozen=True)
class CalibrationStatistics:
    """Both checks' statistics, before any verdict (``benchmarks/check_family_power.py`` counts
    each check's rejections apart)."""

    num_tests: int  # both moments: the Bonferroni count
    num_second_moment_tests: int
    z_threshold: float
    mean: tuple[float, tuple | None]  # check 7: the largest z and its test (dimension, mean, se, ...)
    second_moment: tuple[float, tuple | None]  # check 8: the same; (0.0, None) without tests
    sources: tuple[str, ...]  # check 8's variance per truth dimension: "reported", "0/1 truth", "none"


def calibration_statistics(
    family: TaskFamily,
    data: RandomRollout,
    false_alarm_rate: float,
    variance: np.ndarray | None = None,
    num_bins: int = 10,
    min_tasks_per_group: int = MIN_TASKS_PER_GROUP,
) -> CalibrationStatistics:
    """The z of every test of checks 7 and 8 on ``data``, summarised; arguments as ``check_calibration``."""
    truth = data.truth.astype(np.float64)  # [T + 1, N, D]
    means = data.features[..., : truth.shape[-1]].astype(np.float64)  # [T + 1, N, D]
    variance, sources = _second_moment_variance(family, truth, means, variance)
    history_group, num_history_groups = _last_step_group(data, family.num_actions)  # [T + 1, N], int

    tested = {"mean": [], "second moment": []}  # per test: (dimension, mean, se, slack, rounding)
    for dim in range(truth.shape[-1]):
        t, m = truth[..., dim], means[..., dim]
        cells = _Cells(m, history_group, num_history_groups, num_bins, min_tasks_per_group)
        low, high = t.min(), t.max()
        # Per step: the residual, how far a task missing from the sample could raise it and lower
        # it, and the size of the terms it is the difference of (for float32 rounding).
        tested["mean"] += [(dim, *s) for s in cells.tests(t - m, high - m, m - low, np.abs(t) + np.abs(m))]
        if variance is not None and not np.isnan(variance[0, 0, dim]):
            v = variance[..., dim]
            squared_error = (t - m) ** 2
            farthest = np.maximum(high - m, m - low) ** 2  # the largest squared error a truth can make
            tests = cells.tests(squared_error - v, farthest - v, v, squared_error + v)
            tested["second moment"] += [(dim, *s) for s in tests]

    num_tests = len(tested["mean"]) + len(tested["second moment"])
    if not num_tests:
        raise fail(family, "calibration", f"no group reached {min_tasks_per_group} tasks; raise num_tasks")
    per_group_rate = false_alarm_rate / (2 * num_tests)
    z_threshold = statistics.NormalDist().inv_cdf(1.0 - per_group_rate)
    # P(no task with an outcome expected in k of them) = exp(-k): k = log(1 / rate) bounds the unseen.
    unseen_tasks = np.log(1.0 / per_group_rate)
    worst = {}
    for moment, tests in tested.items():
        z_scores = [
            max(abs(mean) - unseen_tasks * slack - rounding, 0.0) / (se + 1e-9)
            for _, mean, se, slack, rounding in tests
        ]
        worst[moment] = (float(max(z_scores)), tests[int(np.argmax(z_scores))]) if tests else (0.0, None)
    return CalibrationStatistics(
        num_tests=num_tests,
        num_second_moment_tests=len(tested["second moment"]),
        z_threshold=z_threshold,
        mean=worst["mean"],
        second_moment=worst["second moment"],
        sources=sources,
    )


def _failure(family, moment, dim, mean, se, slack, rounding, z, z_threshold, sources):
    del slack, rounding
    odds = f"(standard error {se:.2g}; beyond the slack for unseen outcomes, z = {z:.1f} > {z_threshold:.1f})"
    if moment == "mean":
        return fail(
            family,
            "calibration",
            f"posterior mean {dim} is off its truth by {mean:+.4g} in a group of steps {odds}: the belief "
            "is not the exact posterior (wrong prior, a skipped or delayed update?)",
        )
    if sources[dim] == "reported":
        cause = (
            "too confident: belief_variance is smaller than the error it describes"
            if mean > 0
            else "too unsure: belief_variance is larger than the error it describes"
        )
    else:  # 0/1 truth: the variance is m (1 - m), so the mean itself is off, step by step
        cause = (
            "the truth is 0/1, so its variance is m (1 - m): the posterior mean errs step by step, in "
            "ways that cancel within the group"
        )
    return fail(
        family,
        "second moment",
        f"the squared error of posterior mean {dim} minus its posterior variance ({sources[dim]}) averages "
        f"{mean:+.4g} in a group of steps {odds}, where an exact belief averages 0: {cause}",
    )


def _second_moment_variance(
    family: TaskFamily, truth: np.ndarray, means: np.ndarray, reported: np.ndarray | None
) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """The variance check 8 compares with, ``[T + 1, N, D]`` (NaN where untested), and its source
    per dimension: "reported" (``belief_variance``), "0/1 truth" (m (1 - m)) or "none"."""
    binary = np.all((truth == 0.0) | (truth == 1.0), axis=(0, 1))  # [D]
    if reported is not None:
        reported = np.asarray(reported, np.float64)
        if not np.all(np.isfinite(reported)) or reported.min() < 0.0:
            bad = reported[~(np.isfinite(reported) & (reported >= 0.0))][0]
            raise fail(family, "second moment", f"belief_variance must be finite and >= 0, got {bad}")
        return reported, ("reported",) * truth.shape[-1]
    if not binary.any():
        return None, ("none",) * truth.shape[-1]
    variance = np.where(binary, means * (1.0 - means), np.nan)
    return variance, tuple("0/1 truth" if b else "none" for b in binary)


class _Cells:
    """Steps of one truth dimension grouped: a bin (quantile) of its posterior mean crossed with the
    last-step group; per group, per task sums of any per-step quantity."""

    def __init__(self, means, history_group, num_history_groups, num_bins, min_tasks):
        """``means``: float64[T + 1, N]; ``history_group``: int[T + 1, N] from ``_last_step_group``."""
        self.num_tasks = means.shape[1]
        edges = np.unique(np.quantile(means, np.linspace(0, 1, num_bins + 1)[1:-1]))
        group = np.searchsorted(edges, means, side="right") * num_history_groups + history_group
        self.num_groups = (len(edges) + 1) * num_history_groups
        self.cell = (group * self.num_tasks + np.arange(self.num_tasks)).ravel()  # (group, task) pairs
        self.counts = self.per_cell(None)
        self.tested_groups = np.flatnonzero((self.counts > 0).sum(axis=1) >= min_tasks)

    def per_cell(self, weights: np.ndarray | None) -> np.ndarray:  # [groups, tasks]
        flat = None if weights is None else weights.ravel()
        size = self.num_groups * self.num_tasks
        return np.bincount(self.cell, flat, size).reshape(self.num_groups, self.num_tasks)

    def tests(
        self, residual: np.ndarray, up_room: np.ndarray, down_room: np.ndarray, scale: np.ndarray
    ) -> list[tuple[float, float, float, float]]:
        """Per tested group: the mean residual, its standard error, the slack per unseen task and
        the allowance for rounding.

        ``residual``, ``up_room``, ``down_room``, ``scale``: float64[T + 1, N]; the rooms bound how
        far one task the sample missed would move a step's residual up or down; ``scale`` is the
        size of the float32 terms the residual is the difference of.
        """
        residual_sums, up_sums, down_sums, scale_sums = map(
            self.per_cell, (residual, up_room, down_room, scale)
        )
        tested = []
        for g in self.tested_groups:
            counts = self.counts[g]
            total = counts.sum()
            mean = residual_sums[g].sum() / total
            # Steps of one task share its truth: the standard error clusters by task.
            se = np.sqrt(((residual_sums[g] - mean * counts) ** 2).sum()) / total
            # A near-certain belief (0.995, say) is right when 1 task in 200 has the other truth;
            # with few such tasks expected, none may be sampled and the sample's spread cannot show
            # it. Each unseen task would pull the residual toward 0 by up to its room / n.
            room = max((up_sums[g] if mean < 0 else down_sums[g]).sum() / total, 0.0)
            # Features are float32: a group whose residual is the same at every step (se = 0) can
            # still be off by rounding, e.g. (truth - 0.5)^2 - a float32 variance of 0.16.
            rounding = FLOAT32_ROUNDING * scale_sums[g].sum() / total
            tested.append((float(mean), float(se), float(room / (counts > 0).sum()), float(rounding)))
        return tested


def _last_step_group(data: RandomRollout, num_actions: int) -> tuple[np.ndarray, int]:
    """Groups steps by what the history shows last: action, reward and observation.

    Returns ``int[T + 1, N]`` group labels and how many labels there can be.
    A label is ``2 * transition + obs_half``: transition is 0 before any step, else 1 + 2 * last action +
    (last reward above the midrange); obs_half splits the latest observation by a fixed random
    projection at its median, so a belief that ignores observations is miscalibrated somewhere.
    """
    actions, rewards = data.actions.astype(np.int64), data.rewards
    midrange = 0.5 * (rewards.min() + rewards.max())
    transition = np.concatenate(
        [np.zeros((1,) + actions.shape[1:], np.int64), 1 + 2 * actions + (rewards > midrange)]
    )
    projection = data.obs @ np.random.default_rng(0).standard_normal(data.obs.shape[-1])  # [T + 1, N]
    num_transitions = 2 * num_actions + 1
    return 2 * transition + (projection > np.median(projection)), 2 * num_transitions
