"""BenchConfig and every `metabelief bench` flag reject bad values, naming them, before anything compiles."""

from __future__ import annotations

import math
import re

import pytest

from metabelief import bench, cli

NAN, INF = math.nan, math.inf
INTEGERS = (
    "num_steps",
    "hidden_size",
    "rounds",
    "probe_chunks",
    "probe_chunk_size",
    "seed_tasks",
    "agent_tasks",
)


@pytest.mark.parametrize(
    "fields, argument",
    [
        *[
            (dict(sizes=value), "sizes")
            for value in ((), [], (0,), (1024, -1), (2.5,), (1024.0,), (True,), ("1024",), (NAN,), (INF,))
        ],
        *[(dict(sizes=value), "sizes") for value in (1024, "1024", None, {1024})],  # not a tuple
        (dict(sizes=(1024, 1024)), "sizes"),  # the same N twice
        *[
            (dict([(name, value)]), name)
            for name in INTEGERS
            for value in (0, -1, 2.5, 8.0, True, "8", NAN, INF)
        ],
        *[(dict(max_training_tasks=value), "max_training_tasks") for value in (-1, 1.5, NAN, INF, "0", None)],
        *[(dict(seed_counts=value), "seed_counts") for value in ((0,), (1, -4), (1.0,), (False,), (NAN,), 4)],
        (dict(seed_counts=(1, 4, 4)), "seed_counts"),  # the same S twice
        *[(dict(agent_cells=value), "agent_cells") for value in (("xyz",), ("lstm", 3), "lstm", None)],
        *[(dict(gymnax=value), "gymnax") for value in (1, "no", None)],
    ],
)
def test_bench_config_rejects_bad_fields(fields, argument):
    with pytest.raises(ValueError, match=re.escape(argument)):
        bench.BenchConfig(**({"sizes": (1024,)} | fields))


def test_bench_config_keeps_good_values():
    config = bench.BenchConfig(sizes=[4096, 1024], seed_counts=[], max_training_tasks=0)
    assert config.sizes == (4096, 1024) and config.seed_counts == () and config.max_training_tasks == 0
    with pytest.raises(ValueError, match="quick"):
        bench.BenchConfig.for_device(quick="yes")


@pytest.fixture
def nothing_runs(monkeypatch):
    def reached(*args, **kwargs):
        raise AssertionError("bad input reached the benchmark")

    monkeypatch.setattr(bench, "run", reached)


@pytest.mark.parametrize(
    "argv, flag",
    [
        *[
            ([flag, value], flag)
            for flag in (
                "--steps",
                "--hidden",
                "--rounds",
                "--probe-chunks",
                "--probe-chunk-size",
                "--seed-tasks",
            )
            for value in ("0", "-1", "nan", "inf", "2.5", "x")
        ],
        *[
            (["--sizes", *values], "--sizes")
            for values in ([], ["0"], ["1024", "-1"], ["nan"], ["1e3"], ["8", "8"])
        ],
        *[(["--seeds", *values], "--seeds") for values in (["0"], ["1", "-4"], ["inf"], ["1.5"], ["4", "4"])],
        (["--cells", "xyz"], "--cells"),
        *[(["--agent-tasks", value], "--agent-tasks") for value in ("0", "-1", "nan", "x")],
        (["--quick=1"], "--quick"),
        (["--no-gymnax=0"], "--no-gymnax"),
        (["--bogus"], "--bogus"),
    ],
    ids=lambda x: " ".join(x) if isinstance(x, list) else x,
)
def test_bad_bench_flag_exits_2_with_one_line_naming_it(nothing_runs, argv, flag, capsys, tmp_path):
    for main, prefix in ((bench.main, []), (cli.main, ["bench"])):
        with pytest.raises(SystemExit) as exit_info:
            main([*prefix, *argv, "--out", str(tmp_path / "out")])
        assert exit_info.value.code == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.endswith("\n") and captured.err.count("\n") == 1, captured.err
        assert "Traceback" not in captured.err and flag in captured.err, captured.err
    assert not (tmp_path / "out").exists()  # rejected before the output folder was made


def test_bench_out_that_cannot_be_a_folder_exits_2(nothing_runs, tmp_path, capsys):
    taken = tmp_path / "bench.json"
    taken.write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--out", str(taken)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err and "Traceback" not in err
