"""Every flag of `metabelief run` and `metabelief check`: a bad value exits 2 with one line naming the flag.

Nothing trains or compiles: every experiment's ``run`` and the first conformance check are replaced
by a function that fails the test if it is reached.
"""

from __future__ import annotations

import pytest

from metabelief import cli, experiments
from metabelief.testing import structure


@pytest.fixture
def nothing_runs(monkeypatch):
    def reached(*args, **kwargs):
        raise AssertionError("bad input reached the experiment or the checks")

    for module, _ in experiments.EXPERIMENTS.values():
        monkeypatch.setattr(module, "run", reached)
    monkeypatch.setattr(structure, "check_sizes", reached)


def _assert_exits_naming(argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # not even the "writing to" line: it failed before any work
    assert captured.err.endswith("\n") and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err
    assert flag in captured.err, captured.err


RUN_CASES = [
    # argparse rejects what is not an int (NaN, inf, floats, words) and names the flag
    *[
        (["run", "bandit", flag, value], flag)
        for flag in ("--num-tasks", "--updates", "--seed", "--seeds", "--hidden", "--devices")
        for value in ("nan", "inf", "2.5", "x", "")
    ],
    # the config rejects out-of-range values: named by the flag, not only the config field
    *[
        (["run", "bandit", "--quick", flag, value], flag)
        for flag, value in (
            ("--num-tasks", "0"),
            ("--num-tasks", "-8"),
            ("--updates", "0"),
            ("--seed", "-1"),
            ("--seed", str(2**32)),
            ("--seeds", "0"),
            ("--hidden", "0"),
            ("--devices", "0"),
        )
    ],
    # the agent and the algorithm
    (["run", "bandit", "--quick", "--cell", "xyz"], "--cell"),
    (["run", "bandit", "--quick", "--algorithm", "sac"], "--algorithm"),
    (["run", "bandit", "--quick", "--predictive", "-0.5"], "--predictive"),
    (["run", "bandit", "--quick", "--predictive", "nan"], "--predictive"),
    (["run", "bandit", "--predictive", "x"], "--predictive"),
    # inconsistent values
    (["run", "bandit", "--quick", "--devices", "3"], "--devices"),  # 128 tasks do not split over 3
    (["run", "bandit", "--quick", "--num-tasks", "100", "--devices", "8"], "--num-tasks"),
    (["run", "bandit", "--quick", "--seed", str(2**32 - 2), "--seeds", "3"], "--seeds"),  # past uint32
    (["run", "bandit", "--quick", "--num-tasks", "4096", "--devices", "4096"], "--devices"),  # not there
    (["run", "bandit", "--rows", "small"], "--rows"),  # rl2-table only
    (["run", "gridworld", "--quick", "--rows", "5x10"], "--rows"),
    (["run", "rl2-table", "--quick", "--updates", "5"], "--updates"),  # rows set their own updates
    *[
        (["run", "rl2-table", "--quick", "--rows", value], "--rows")
        for value in ("5by10", "", "1x10", "5x0", "5x10,5x10", "5x10,", "nan", "-5x10")
    ],
    (["run", "bandit", "--quick", "--no-progress=yes"], "--no-progress"),
    (["run", "bandit", "--quick=1"], "--quick"),
    (["run", "bandit", "--bogus", "1"], "--bogus"),
    (["run", "no_such_experiment"], "experiment"),
    (["run"], "experiment"),
]

CHECK_CASES = [
    *[
        (["check", "bernoulli_bandit", "horizon=5", "--num-tasks", value], "--num-tasks")
        for value in ("0", "-1", "49", "nan", "inf", "2.5", "x")
    ],
    (["check", "bernoulli_bandit", "horizon=5", "horizon=6"], "horizon"),  # given twice
    (["check", "bernoulli_bandit", "horizon"], "NAME=VALUE"),
    (["check", "bernoulli_bandit", "=5"], "NAME=VALUE"),
    (["check", "bernoulli_bandit", "horizon=0"], "horizon"),
    (["check", "bernoulli_bandit", "horizon=nan"], "horizon"),
    (["check", "bernoulli_bandit", "prior_a=inf"], "prior_a"),
    (["check", "bernoulli_bandit", "arms=3"], "arms"),
    (["check", "no_such_family"], "family"),
    (["check"], "family"),
    (["check", "bernoulli_bandit", "--bogus"], "--bogus"),
]


@pytest.mark.parametrize(
    "argv, flag", RUN_CASES + CHECK_CASES, ids=lambda x: " ".join(x) if isinstance(x, list) else x
)
def test_bad_flag_exits_2_with_one_line_naming_it(nothing_runs, argv, flag, capsys):
    _assert_exits_naming(argv, flag, capsys)


def test_out_that_cannot_be_a_folder_exits_before_training(nothing_runs, tmp_path, capsys):
    taken = tmp_path / "results.json"
    taken.write_text("{}")
    _assert_exits_naming(["run", "bandit", "--quick", "--out", str(taken)], "--out", capsys)
    _assert_exits_naming(["run", "bandit", "--quick", "--out", str(taken / "below")], "--out", capsys)


def test_one_line_even_when_the_message_has_several(nothing_runs, monkeypatch, capsys):
    def many_lines(_):
        raise ValueError("first line\nsecond line")

    monkeypatch.setattr(experiments, "lookup", many_lines)
    _assert_exits_naming(["run", "bandit"], "first line second line", capsys)


def test_another_algorithm_brings_its_own_learning_rate_and_updates(monkeypatch, tmp_path):
    from metabelief.experiments import bandit  # noqa: PLC0415
    from metabelief.train.config import DEFAULTS  # noqa: PLC0415

    seen = []

    def capture(config, out_dir, progress=True):
        seen.append(config.train)
        raise SystemExit(0)

    monkeypatch.setattr(bandit, "run", capture)
    for argv in (["--algorithm", "ppo"], ["--algorithm", "ppo", "--updates", "7"], ["--algorithm", "a2c"]):
        with pytest.raises(SystemExit):
            cli.main(["run", "bandit", "--out", str(tmp_path), "--no-progress", *argv])
    ppo, ppo_seven, a2c = seen
    assert (ppo.algorithm, ppo.learning_rate, ppo.num_updates) == ("ppo", *DEFAULTS["ppo"].values())
    assert (ppo_seven.learning_rate, ppo_seven.num_updates) == (DEFAULTS["ppo"]["learning_rate"], 7)
    assert a2c == bandit.BanditConfig().train  # the experiment's own algorithm: its settings kept
