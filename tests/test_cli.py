"""The `metabelief` console script."""

import pathlib
import subprocess
import sys

import pytest

from metabelief import cli


def test_list_prints_every_family(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "bernoulli_bandit" in out and "dependent_bandit" in out


def test_check_runs_the_conformance_checks(capsys):
    assert (
        cli.main(["check", "dependent_bandit", "support=(0.2, 0.8)", "horizon=20", "--num-tasks", "512"]) == 0
    )
    out = capsys.readouterr().out
    assert "DiscreteDependentBandit(horizon=20, support=(0.2, 0.8)): passed" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["check", "no_such_family"], "unknown family name 'no_such_family'"),
        (["check", "bernoulli_bandit", "num_arms=1"], "num_arms must be >= 2"),
        (["check", "bernoulli_bandit", "num_arms"], "NAME=VALUE"),
    ],
)
def test_bad_input_exits_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_installed_console_script_runs():
    script = pathlib.Path(sys.executable).parent / "metabelief"  # installed beside the interpreter
    result = subprocess.run([str(script), "list"], capture_output=True, text=True, check=True)
    assert "bernoulli_bandit" in result.stdout
