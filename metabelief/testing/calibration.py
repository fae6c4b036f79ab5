"""The exactness check: an exact posterior mean is calibrated against the truth it estimates."""

from __future__ import annotations

import dataclasses
import statistics

import numpy as np

from metabelief.tasks.base import TaskFamily
from metabelief.testing.failures import fail
from metabelief.testing.random_rollout import RandomRollout

MIN_TASKS_PER_GROUP = 50  # a group of steps is tested once this many tasks reached it


@dataclasses.dataclass(frozen=True)
class CheckReport:
    """What ``check_family`` measured on a family that passed."""

    calibration_groups: int  # groups with enough tasks to be tested
    calibration_max_z: float  # largest calibration z over the groups (metabelief.testing, check 7)
    z_threshold: float  # the bound it had to stay under


def check_calibration(
    family: TaskFamily,
    data: RandomRollout,
    false_alarm_rate: float,
    num_bins: int = 10,
    min_tasks_per_group: int = MIN_TASKS_PER_GROUP,
) -> CheckReport:
    """Tests E[truth | group] = E[belief | group] in every group of steps of ``data``.

    Raises ``FamilyCheckError`` when a group's mean residual exceeds what chance allows at a
    family-wise ``false_alarm_rate``; else returns the report.
    """
    truth = data.truth.astype(np.float64)  # [T + 1, N, D]
    means = data.features[..., : truth.shape[-1]].astype(np.float64)  # [T + 1, N, D]
    history_group, num_history_groups = _last_step_group(data, family.num_actions)  # [T + 1, N], int

    tested = []  # per group: (dimension, mean residual, standard error, slack per unseen task)
    for dim in range(truth.shape[-1]):
        for stats in _group_statistics(
            truth[..., dim], means[..., dim], history_group, num_history_groups, num_bins, min_tasks_per_group
        ):
            tested.append((dim, *stats))

    if not tested:
        raise fail(family, "calibration", f"no group reached {min_tasks_per_group} tasks; raise num_tasks")
    per_group_rate = false_alarm_rate / (2 * len(tested))
    z_threshold = statistics.NormalDist().inv_cdf(1.0 - per_group_rate)
    # P(no task with an outcome expected in k of them) = exp(-k): k = log(1 / rate) bounds the unseen.
    unseen_tasks = np.log(1.0 / per_group_rate)
    z_scores = [max(abs(mean) - unseen_tasks * slack, 0.0) / (se + 1e-9) for _, mean, se, slack in tested]
    worst = int(np.argmax(z_scores))
    if z_scores[worst] > z_threshold:
        dim, mean, se, _ = tested[worst]
        raise fail(
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
