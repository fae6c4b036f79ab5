"""What ``check_family`` reports: each check passed, failed or not reached, and what it measured.

``CheckReport`` is returned by a family that passes every check; a family that fails one raises
``FamilyCheckError`` whose ``report`` holds the checks up to the failure. ``str(report)`` is the
summary ``metabelief check`` prints.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
from collections.abc import Iterator

from metabelief.tasks.base import TaskFamily
from metabelief.testing.failures import FamilyCheckError

# The checks of ``metabelief.testing``, in order (numbered from 1), each with the names in brackets
# of the failures it raises (``failures.fail``); check 9's are "<Capability> capability".
CHECKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("sizes", ("sizes",)),
    ("shapes and dtypes", ("shapes",)),
    ("compiles once", ("compile once",)),
    ("vmap equals a loop of single tasks", ("vmap",)),
    ("same key, same rollout", ("determinism",)),
    ("long rollout: done on time, finite, in range", ("done", "finite", "normalised")),
    ("calibration of the posterior mean", ("calibration",)),
    ("calibration of the second moment", ("second moment",)),
    ("declared capabilities", ()),
)
# What check 8 compares a truth dimension's squared error with (``second_moment_source``).
VARIANCE_SOURCES = {"reported": "belief_variance", "0/1 truth": "m (1 - m) of a 0/1 truth", "none": "nothing"}
PASSED, FAILED, NOT_REACHED = "passed", "FAILED", "not reached"
MEAN_CHECK, SECOND_MOMENT_CHECK, CAPABILITY_CHECK = 7, 8, 9


@dataclasses.dataclass(frozen=True)
class CheckOutcome:
    """One check's outcome: ``status`` is ``PASSED``, ``FAILED`` (``message`` says why) or
    ``NOT_REACHED`` (an earlier check failed)."""

    number: int  # 1-based, as in ``metabelief.testing``
    status: str
    message: str = ""

    @property
    def name(self) -> str:
        return CHECKS[self.number - 1][0]


@dataclasses.dataclass(frozen=True)
class CheckReport:
    """What ``check_family`` found: every check's outcome, the capabilities the family declares,
    and the calibration statistics (checks 7 and 8; NaN and 0 when they were not reached).

    ``calibration_*`` cover every test of checks 7 and 8 together (one test per dimension, group
    and moment; the Bonferroni bound counts them all); ``second_moment_*`` the check 8 part of them.
    """

    calibration_groups: int = 0  # tests made, both moments: the Bonferroni count
    calibration_max_z: float = math.nan  # largest z over all of them
    z_threshold: float = math.nan  # the bound each had to stay under
    second_moment_groups: int = 0  # of calibration_groups, tests of the second moment (check 8)
    second_moment_max_z: float = 0.0  # largest z among those (0 when there were none)
    second_moment_source: tuple[str, ...] = ()  # per truth dimension: "reported", "0/1 truth" or "none"
    mean_max_z: float = math.nan  # largest z among the tests of the mean (check 7)
    family: str = ""  # the family's repr
    checks: tuple[CheckOutcome, ...] = ()  # one per check of ``CHECKS``, in order
    capabilities: dict[str, int] = dataclasses.field(default_factory=dict)  # declared -> its check

    @property
    def passed(self) -> bool:
        return all(outcome.status == PASSED for outcome in self.checks)

    def __str__(self) -> str:
        failed = [outcome for outcome in self.checks if outcome.status == FAILED]
        verdict = f"FAILED check {failed[0].number} ({failed[0].name})" if failed else "passed every check"
        declared = ", ".join(f"{name} (check {number})" for name, number in self.capabilities.items())
        lines = [f"check_family({self.family}): {verdict}", f"capabilities declared: {declared or 'none'}"]
        width = max(len(name) for name, _ in CHECKS)
        for outcome in self.checks:
            detail = outcome.message if outcome.status == FAILED else self._detail(outcome)
            line = f"  {outcome.number}. {outcome.name:{width}s}  {outcome.status}"
            lines.append(f"{line}: {detail}" if detail else line)
        return "\n".join(lines)

    def _detail(self, outcome: CheckOutcome) -> str:
        """What a passed check measured, where there is a number to show."""
        if outcome.status != PASSED:
            return ""
        if outcome.number == MEAN_CHECK:
            tests = self.calibration_groups - self.second_moment_groups
            return f"{tests} groups, max |z| {self.mean_max_z:.2f} < {self.z_threshold:.2f}"
        if outcome.number == SECOND_MOMENT_CHECK:
            if not self.second_moment_groups:
                return "nothing to test (no belief_variance, no 0/1 truth): only the mean is checked"
            sources = collections.Counter(self.second_moment_source)
            variances = ", ".join(
                f"{VARIANCE_SOURCES[source]} for {count} of {len(self.second_moment_source)}"
                for source, count in sources.items()
            )
            return (
                f"{self.second_moment_groups} groups, max |z| {self.second_moment_max_z:.2f} < "
                f"{self.z_threshold:.2f}; truth dimensions tested with {variances}"
            )
        if outcome.number == CAPABILITY_CHECK:
            checked = [name for name, number in self.capabilities.items() if number == CAPABILITY_CHECK]
            return ", ".join(checked) if checked else "none declared"
        return ""


class CheckRun:
    """The checks of one ``check_family`` call as they run: ``with run.checking(5, 6): ...`` marks
    checks 5 and 6 passed when the block returns; on a ``FamilyCheckError`` it marks the check the
    error names failed (those before it passed), attaches ``report()`` to the error and re-raises."""

    def __init__(self, family: TaskFamily, capabilities: dict[str, int]):
        self.family = repr(family)
        self.capabilities = capabilities
        self.outcomes: dict[int, CheckOutcome] = {}

    @contextlib.contextmanager
    def checking(self, *numbers: int) -> Iterator[None]:
        try:
            yield
        except FamilyCheckError as error:
            if error.report is not None:  # recorded by an inner block already
                raise
            failed = failed_check(error.check, numbers)
            self.outcomes |= {number: CheckOutcome(number, PASSED) for number in numbers if number < failed}
            self.outcomes[failed] = CheckOutcome(failed, FAILED, error.detail)
            error.report = self.report()
            raise
        self.outcomes |= {number: CheckOutcome(number, PASSED) for number in numbers}

    def report(self, calibration: CheckReport | None = None) -> CheckReport:
        """The report so far (checks not recorded are ``NOT_REACHED``), with ``calibration``'s statistics."""
        checks = tuple(
            self.outcomes.get(number, CheckOutcome(number, NOT_REACHED))
            for number in range(1, len(CHECKS) + 1)
        )
        return dataclasses.replace(
            calibration or CheckReport(), family=self.family, checks=checks, capabilities=self.capabilities
        )


def failed_check(name: str, candidates: tuple[int, ...]) -> int:
    """The number of the check among ``candidates`` whose failure is named ``name`` (in brackets)."""
    if name.endswith(" capability"):
        return CAPABILITY_CHECK
    for number in candidates:
        if name in CHECKS[number - 1][1]:
            return number
    return candidates[0]  # a failure this table does not name: the block's first check
