"""Where an agent's return lies between two reference returns ("% of the way from random to X"),
with its standard error over the held-out tasks.

The fraction is ``(agent - low) / (high - low)`` of mean returns per episode. An anchor is either
a reference policy's Monte Carlo return on the same held-out tasks as the agent (per-task returns)
or an exact expected return from the prior (a number: the Bayes-optimal DP's
``baselines.bayes_optimal_value``, the random policy's ``exact_random_return``). Its standard
error over the tasks is the delta method on the per-task returns, paired by task: the fraction's
influence of task i is

    ψ_i = [(a_i - ā) - (l_i - l̄)] / (h̄ - l̄) - f · [(h_i - h̄) - (l_i - l̄)] / (h̄ - l̄),

an exact anchor's deviations being 0, and ``se = sd(ψ) / √N`` (sd with ``N - 1``). It holds the
references' Monte Carlo error and the agent's own sampling error over the tasks, with their
covariance: a reference that plays the same tasks cancels the luck of the draw of tasks that an
exact anchor does not (an agent that earns what the reference earns on every task is at exactly
100%, se 0; against the exact Bayes-optimal value it keeps the error of its own mean return).
"""

from __future__ import annotations

import numpy as np

from metabelief.tasks.base import BetaArms, DependentArms, TaskFamily

Anchor = np.ndarray | float  # per-task returns [N] on the agent's tasks, or an exact expected return


def return_fraction(agent: np.ndarray, low: Anchor, high: Anchor) -> tuple[float, float]:
    """``(fraction, se)``: ``(mean(agent) - low) / (high - low)`` and its standard error over the tasks.

    Args:
      agent: ``[N]`` the agent's return on each held-out task.
      low, high: the anchors (``[N]`` per-task returns of a reference on the same tasks, or an
        exact expected return).

    Returns NaN for both where the anchors' mean returns are equal.
    """
    agent = np.asarray(agent, dtype=np.float64)
    if agent.ndim != 1 or agent.size < 2:
        raise ValueError(f"agent must hold the returns of 2 or more tasks, got shape {agent.shape}")
    low_deviation, low_mean = _deviations("low", low, agent.size)
    high_deviation, high_mean = _deviations("high", high, agent.size)
    span = high_mean - low_mean
    if span == 0:
        return float("nan"), float("nan")
    fraction = (agent.mean() - low_mean) / span
    influence = ((agent - agent.mean()) - low_deviation - fraction * (high_deviation - low_deviation)) / span
    return float(fraction), float(influence.std(ddof=1) / np.sqrt(agent.size))


def _deviations(name: str, anchor: Anchor, num_tasks: int) -> tuple[np.ndarray | float, float]:
    """``(per-task deviations from the mean, mean)`` of an anchor; an exact one deviates by 0."""
    values = np.asarray(anchor, dtype=np.float64)
    if values.ndim == 0:
        if not np.isfinite(values):
            raise ValueError(f"{name} must be finite, got {anchor!r}")
        return 0.0, float(values)
    if values.shape != (num_tasks,):
        raise ValueError(
            f"{name} must be a number or the returns of the agent's {num_tasks} tasks, got {values.shape}"
        )
    return values - values.mean(), float(values.mean())


def exact_random_return(family: TaskFamily) -> float | None:
    """The uniformly random policy's expected return per episode from the prior, where the family's
    capabilities give it (else None). Random play ignores the history, so each pull's expected reward
    is the prior mean reward averaged over the arms: ``prior_a / (prior_a + prior_b)`` for ``BetaArms``;
    1/2 for ``DependentArms`` (arm 0 pays p, arm 1 pays 1 - p)."""
    if isinstance(family, BetaArms):
        return family.horizon * family.prior_a / (family.prior_a + family.prior_b)
    if isinstance(family, DependentArms):
        return family.horizon * 0.5
    return None


def between_references(evaluation, low: str, high: str) -> tuple[float, float]:
    """``return_fraction`` of a ``protocol.Evaluation``'s agent between two of its reference policies
    (names of ``evaluation.references``), all on the same held-out tasks."""
    return return_fraction(
        per_task_returns(evaluation.history.rewards),
        per_task_returns(evaluation.references[low].rewards),
        per_task_returns(evaluation.references[high].rewards),
    )


def per_task_returns(rewards) -> np.ndarray:
    """``[N]`` the return of each task of a trajectory's ``rewards`` ``[T, N]``."""
    return np.asarray(rewards, dtype=np.float64).sum(axis=0)
