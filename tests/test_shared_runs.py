"""``tests.shared_runs``: a run shared by test files happens once per session, and only its own."""

from __future__ import annotations

import json
import pathlib

import pytest

from tests import shared_runs


class _Factory:
    """What ``run_once`` asks of pytest's ``TempPathFactory``."""

    def __init__(self, base: pathlib.Path):
        self.base = base

    def getbasetemp(self) -> pathlib.Path:
        return self.base


def _recording_run(calls: list, fail: bool = False):
    def run(config, out_dir, *, progress):
        assert progress is False
        calls.append(config)
        out_dir.mkdir(parents=True)
        (out_dir / "results.json").write_text(json.dumps({"config": config, "call": len(calls)}))
        if fail:
            raise RuntimeError("the run failed after writing its results")

    return run


def test_a_config_runs_once_and_another_config_runs_apart(tmp_path, monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    calls, factory = [], _Factory(tmp_path)
    run = _recording_run(calls)
    first = shared_runs.run_once(factory, run, "config a")
    assert shared_runs.run_once(factory, run, "config a") == first
    other = shared_runs.run_once(factory, run, "config b")
    assert calls == ["config a", "config b"]
    assert first[0] == {"config": "config a", "call": 1} and other[0] == {"config": "config b", "call": 2}
    assert first[1] != other[1] and first[1].parent == tmp_path / "shared-runs"


def test_a_run_that_failed_midway_is_run_again(tmp_path, monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    calls, factory = [], _Factory(tmp_path)
    with pytest.raises(RuntimeError, match="failed after writing"):
        shared_runs.run_once(factory, _recording_run(calls, fail=True), "config")
    results, _ = shared_runs.run_once(factory, _recording_run(calls), "config")
    assert calls == ["config", "config"] and results["call"] == 2


def test_workers_share_the_session_folder_and_a_lone_session_keeps_its_own(tmp_path, monkeypatch):
    worker_base = tmp_path / "pytest-7" / "popen-gw1"
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    assert shared_runs.session_folder(_Factory(worker_base)) == tmp_path / "pytest-7"
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert shared_runs.session_folder(_Factory(tmp_path / "pytest-8")) == tmp_path / "pytest-8"
