"""check_family's report: every check's outcome, the capabilities found, readable as printed."""

import inspect
import re

import pytest

import metabelief
from metabelief import cli, testing
from metabelief.tasks import base
from metabelief.testing import CheckReport, FamilyCheckError, check_family, declared_capabilities
from metabelief.testing.failures import fail
from metabelief.testing.report import CHECKS, CheckRun
from tests.test_testing import DoneOneLate, NoisyCue

CHECK_LINE = re.compile(r"^  (\d)\. (.+?)  +(passed|FAILED|not reached)(?:: (.*))?$")


def capabilities_of(family) -> set[str]:
    """The optional capabilities of ``metabelief.tasks.base`` (runtime-checkable protocols) it has."""
    protocols = [
        cls
        for _, cls in inspect.getmembers(base, inspect.isclass)
        if getattr(cls, "_is_runtime_protocol", False) and cls.__module__ == base.__name__
    ]
    assert len(protocols) >= 7  # BetaArms, DependentArms, ... : the listing found them
    return {cls.__name__ for cls in protocols if isinstance(family, cls)}


def check_lines(text: str) -> dict[int, tuple[str, str]]:
    """``{number: (status, detail)}`` of a printed report's check lines."""
    found = [CHECK_LINE.match(line) for line in text.splitlines()]
    return {int(m[1]): (m[3], m[4] or "") for m in found if m}


def test_a_passing_report_names_each_capability_and_what_each_check_measured():
    """``metabelief check`` prints this report for a real family (tests/test_cli.py)."""
    family = metabelief.make("bernoulli_bandit", horizon=5)
    declared = capabilities_of(family)
    assert declared == {"BetaArms", "ExpectedRewards", "BeliefVariance"}  # the bandit's, listed independently
    run = CheckRun(family, declared_capabilities(family))
    with run.checking(*range(1, 10)):
        pass
    calibration = CheckReport(
        calibration_groups=30,
        calibration_max_z=2.5,
        z_threshold=4.25,
        second_moment_groups=10,
        second_moment_max_z=2.5,
        second_moment_source=("reported", "reported"),
        mean_max_z=1.5,
    )
    report = run.report(calibration)
    text = str(report)
    capability_line = next(line for line in text.splitlines() if line.startswith("capabilities declared:"))
    assert set(re.findall(r"(\w+) \(check \d\)", capability_line)) == declared
    assert "BeliefVariance (check 8)" in capability_line and "BetaArms (check 9)" in capability_line
    assert text.splitlines()[0] == f"check_family({family!r}): passed every check" and report.passed
    lines = check_lines(text)
    assert sorted(lines) == list(range(1, len(CHECKS) + 1)) and len(CHECKS) == 9
    assert all(status == "passed" for status, _ in lines.values())
    assert lines[7][1] == "20 groups, max |z| 1.50 < 4.25"  # 30 tests, 10 of them of the second moment
    assert lines[8][1].startswith("10 groups, max |z| 2.50 < 4.25")
    assert "belief_variance for 2 of 2" in lines[8][1]
    assert set(lines[9][1].split(", ")) == declared - {"BeliefVariance"}


def test_a_family_without_capabilities_says_so():
    run = CheckRun(NoisyCue(), {})
    with run.checking(*range(1, 10)):
        pass
    text = str(run.report())
    assert "capabilities declared: none" in text
    assert check_lines(text)[9] == ("passed", "none declared")


def test_a_broken_family_shows_the_failed_check_with_its_message():
    family = DoneOneLate(horizon=4)
    with pytest.raises(FamilyCheckError, match=r"\[done\]") as caught:
        check_family(family, num_tasks=128)
    error = caught.value
    text = str(error.report)
    assert text.splitlines()[0] == f"check_family({family!r}): FAILED check 6 ({CHECKS[5][0]})"
    lines = check_lines(text)
    assert [lines[n][0] for n in range(1, 10)] == ["passed"] * 5 + ["FAILED"] + ["not reached"] * 3
    assert lines[6][1] == error.detail and "done must be true exactly from step horizon=4" in error.detail
    assert not error.report.passed


@pytest.mark.parametrize(
    "block, failure, statuses",
    [
        ((5, 6), "determinism", {5: "FAILED"}),  # the first check of a block fails: none passed
        ((5, 6), "normalised", {5: "passed", 6: "FAILED"}),  # its second: the first passed
        ((7, 8), "second moment", {7: "passed", 8: "FAILED"}),
        ((9,), "BetaArms capability", {9: "FAILED"}),
    ],
)
def test_a_failure_marks_its_own_check(block, failure, statuses):
    family = NoisyCue()
    run = CheckRun(family, {})
    with run.checking(1, 2, 3, 4):
        pass
    with pytest.raises(FamilyCheckError) as caught, run.checking(*block):
        raise fail(family, failure, "what was seen")
    outcomes = {outcome.number: outcome for outcome in caught.value.report.checks}
    expected = {n: "passed" for n in range(1, 5)} | statuses
    assert {n: o.status for n, o in outcomes.items()} == expected | {
        n: "not reached" for n in range(1, 10) if n not in expected
    }
    failed = [outcome for outcome in outcomes.values() if outcome.status == "FAILED"]
    assert [outcome.message for outcome in failed] == ["what was seen"]


def test_metabelief_check_prints_the_report_of_a_failed_family_and_exits_1(monkeypatch, capsys):
    def failing_check(family, num_tasks):
        run = CheckRun(family, declared_capabilities(family))
        with run.checking(1, 2, 3, 4):
            pass
        with run.checking(5, 6):
            raise fail(family, "done", "done must be true exactly from step horizon=5 on")

    monkeypatch.setattr(testing, "check_family", failing_check)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["check", "bernoulli_bandit", "horizon=5"])
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    lines = check_lines(captured.out)
    assert lines[6] == ("FAILED", "done must be true exactly from step horizon=5 on")
    assert [lines[n][0] for n in (1, 5, 7, 9)] == ["passed", "passed", "not reached", "not reached"]
    assert "failed [done]: done must be true" in captured.err
