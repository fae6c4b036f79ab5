"""The failure experiment's verdicts: seed by seed, only between hypotheses a measure separates.

**Which seeds count.** A seed whose agent did not learn to use the evidence says nothing about
whose posterior it uses. The rule, fixed in the config before the run
(``FailureConfig.min_learning_fraction``): in distribution, the agent's return must lie at least
that fraction of the way from the best *evidence-blind* policy (always the arm better under the
training prior: ``horizon * max(E[p], 1 - E[p])``, 67.5 on (0.1, 0.55) over 100 pulls) to the
Bayes-optimal return (exact, from the prior). Random play is not the floor: on this prior a policy
that never learns within an episode already earns 80% of the way from random to Bayes-optimal.

**One seed's verdict** on one measure and condition (``decide``): each figure is an estimate with
a within-seed standard error (``None``: taken as exact). Two hypothesis controls are *separated*
when they lie ``SEPARATION`` or more apart and the 95% interval of their difference excludes 0.
The agent sides with hypothesis h against a separated g when the 95% interval of its distance
from their midpoint, on h's side, lies above 0. The verdict is the hypothesis h that is separated
from every other defined control and that the agent sides with against each; otherwise
``"undecided"``: on a tie (a control the measure does not separate from h: the agent cannot be
nearer one of two equal figures) or where the intervals leave the side open.

**The summary** of a measure and condition counts the learning seeds' verdicts per hypothesis and
``"undecided"``; the excluded seeds are counted apart.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from metabelief.analysis.records import Record
from metabelief.experiments import seeds
from metabelief.experiments.failure_choices import UNDECIDED, Z_95

SEPARATION = 0.25  # two hypothesis controls this far apart on a measure: it may separate them


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A figure and its within-seed standard error (None: exact)."""

    value: float
    se: float | None = None

    @property
    def variance(self) -> float:
        return 0.0 if self.se is None else self.se**2


def separated(first: Estimate, second: Estimate, separation: float = SEPARATION) -> bool:
    """``separation`` or more apart, and the difference's 95% interval excludes 0."""
    gap = abs(first.value - second.value)
    return gap >= separation and gap - Z_95 * math.sqrt(first.variance + second.variance) > 0


def sides_with(agent: Estimate, chosen: Estimate, other: Estimate) -> bool:
    """The agent lies on ``chosen``'s side of the midpoint of ``chosen`` and ``other`` (its 95%
    interval; the three estimates taken as independent)."""
    midpoint = 0.5 * (chosen.value + other.value)
    toward = math.copysign(1.0, chosen.value - other.value) * (agent.value - midpoint)
    se = math.sqrt(agent.variance + 0.25 * (chosen.variance + other.variance))
    return toward - Z_95 * se > 0


def decide(agent: Estimate, controls: dict[str, Estimate], separation: float = SEPARATION) -> str:
    """One seed's verdict (the module docstring): the hypothesis separated from every other control
    whose side the agent is on against each, else ``UNDECIDED``."""
    for name, chosen in controls.items():
        others = [control for other, control in controls.items() if other != name]
        if others and all(
            separated(chosen, other, separation) and sides_with(agent, chosen, other) for other in others
        ):
            return name
    return UNDECIDED


# ----------------------------------------------------------------------------- which seeds count
@dataclasses.dataclass(frozen=True)
class Learning(Record):
    """A seed's in-distribution return, placed between the evidence-blind and Bayes-optimal ones."""

    fraction: float  # (agent - evidence-blind) / (Bayes-optimal - evidence-blind)
    included: bool  # fraction >= the config's min_learning_fraction


def learning(agent_return: float, blind_return: float, optimal_return: float, minimum: float) -> Learning:
    """Where ``agent_return`` lies from ``blind_return`` (0) to ``optimal_return`` (1); a seed
    counts if at ``minimum`` or above."""
    if not optimal_return > blind_return:
        raise ValueError(f"optimal_return must exceed blind_return, got {optimal_return} <= {blind_return}")
    fraction = (agent_return - blind_return) / (optimal_return - blind_return)
    return Learning(fraction=fraction, included=bool(fraction >= minimum))


@dataclasses.dataclass(frozen=True)
class Exclusion(Record):
    """``exclusion``: the rule that set seeds aside before any verdict, and whom it set aside."""

    rule: str
    min_learning_fraction: float
    evidence_blind_return: float  # exact: horizon * max(E[p], 1 - E[p]) under the training prior
    bayes_optimal_return: float  # exact: the DP's value from the training prior
    excluded_seeds: tuple[int, ...]
    num_excluded: int
    num_included: int


RULE = (
    "in-distribution return at least min_learning_fraction of the way from the evidence-blind "
    "policy (the prior's better arm) to Bayes-optimal"
)


# ----------------------------------------------------------------------------- verdicts
Reader = Callable[[dict], "float | None"]  # one state's entry in results.json -> a figure


@dataclasses.dataclass(frozen=True)
class Verdict(Record):
    """``verdicts``: one measure on one condition where hypothesis controls score apart."""

    measure: str
    condition: str
    agent: dict  # the agent's figure, an interval over the learning seeds
    untrained: float | None  # the untrained network's mean figure over the learning seeds
    controls: dict[str, float]  # each hypothesis control's mean figure over the learning seeds
    separates: tuple[tuple[str, str], ...]  # the pairs separated in at least one learning seed
    per_seed: tuple[str | None, ...]  # each seed's verdict; None: excluded, or no agent figure
    counts: dict[str, int]  # the learning seeds' verdicts: hypothesis or "undecided" -> seeds
    excluded: int  # seeds set aside by the exclusion rule


def verdicts(
    per_seed: list[dict],
    included: list[bool],
    measures: dict[str, tuple[str, Reader, Reader]],
    hypotheses: tuple[str, ...],
) -> list[Verdict]:
    """Every (measure, condition) on which some learning seed's controls separate two hypotheses.

    Args:
      per_seed: each seed's ``conditions`` as in ``results.json`` (``FailureSeed.to_dict()``).
      included: per seed, whether the exclusion rule keeps it.
      measures: name -> (label, read the figure, read its standard error) of one state's entry.
      hypotheses: the states that embody a hypothesis (the controls).

    Returns:
      One ``Verdict`` per (measure, condition) where a learning seed has the agent's figure, in the
      order of ``measures`` then conditions.
    """
    rows = []
    kept = [seed for seed, keep in zip(per_seed, included, strict=True) if keep]
    for measure, (_, read, read_se) in measures.items():
        for condition in per_seed[0]:
            seed_rows = [_seed_verdict(seed[condition]["states"], read, read_se, hypotheses) for seed in kept]
            separates = sorted({pair for row in seed_rows for pair in row[1]}, key=_pair_order(hypotheses))
            if not separates or all(row[0] is None for row in seed_rows):  # no learning agent's figure
                continue
            decided = iter(row[0] for row in seed_rows)
            per_seed_verdicts = tuple(next(decided) if keep else None for keep in included)
            rows.append(
                Verdict(
                    measure=measure,
                    condition=condition,
                    agent=seeds.interval([read(seed[condition]["states"]["agent"]) for seed in kept]),
                    untrained=seeds.interval([read(seed[condition]["states"]["untrained"]) for seed in kept])[
                        "mean"
                    ],
                    controls=_control_means(kept, condition, read, hypotheses),
                    separates=tuple(separates),
                    per_seed=per_seed_verdicts,
                    counts=_counts(per_seed_verdicts, hypotheses),
                    excluded=included.count(False),
                )
            )
    return rows


def _seed_verdict(states: dict, read, read_se, hypotheses) -> tuple[str | None, set]:
    """One seed's verdict (None without the agent's figure) and the pairs its controls separate."""
    controls = {
        name: Estimate(read(states[name]), read_se(states[name]))
        for name in hypotheses
        if read(states[name]) is not None
    }
    names = list(controls)
    pairs = {
        (first, second)
        for i, first in enumerate(names)
        for second in names[i + 1 :]
        if separated(controls[first], controls[second])
    }
    value = read(states["agent"])
    if value is None:
        return None, pairs
    return decide(Estimate(value, read_se(states["agent"])), controls), pairs


def _pair_order(hypotheses):
    return lambda pair: (hypotheses.index(pair[0]), hypotheses.index(pair[1]))


def _control_means(kept, condition, read, hypotheses) -> dict[str, float]:
    means = {
        name: seeds.interval([read(seed[condition]["states"][name]) for seed in kept])["mean"]
        for name in hypotheses
    }
    return {name: mean for name, mean in means.items() if mean is not None}


def _counts(per_seed_verdicts, hypotheses) -> dict[str, int]:
    return {name: per_seed_verdicts.count(name) for name in (*hypotheses, UNDECIDED)}


# ----------------------------------------------------------------------------- paired differences
@dataclasses.dataclass(frozen=True)
class PairedDifference(Record):
    """``paired_differences``: one figure minus another, seed by seed, over the learning seeds."""

    quantity: str  # what is compared, e.g. "refit_r2_test_prior: agent - untrained"
    condition: str
    per_seed: tuple[float | None, ...]  # None: excluded seed, or a figure missing
    interval: dict  # mean [95% Student-t interval] over the learning seeds' differences


def paired_difference(
    quantity: str, condition: str, first: list, second: list, included: list[bool]
) -> PairedDifference:
    """``first - second`` per seed (figures ``None`` where undefined), its interval over the
    seeds ``included`` keeps."""
    per_seed = tuple(
        None if not keep or a is None or b is None else a - b
        for a, b, keep in zip(first, second, included, strict=True)
    )
    return PairedDifference(
        quantity=quantity, condition=condition, per_seed=per_seed, interval=seeds.interval(list(per_seed))
    )
