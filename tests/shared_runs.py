"""An experiment run that several test files read, run once per test session.

The suite is compile-bound, and some end-to-end runs are the same experiment with the same config
in two files (the built-in GRU's bandit run is the reference of both the own-family and the
own-agent equality tests). Under pytest-xdist those files may run on different workers: the first
to ask runs the experiment into a folder of the session's shared temp folder, holding a file lock;
the others wait on the lock and read what it wrote. Run alone, or with ``-n 0``, the folder is the
session's own, so no run is ever read from an earlier session.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
from collections.abc import Callable

import pytest

from metabelief import train
from metabelief.experiments import bandit

COMPLETE = "complete"  # written last: a folder without it holds a run that failed midway


def session_folder(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The temp folder every worker of this session shares."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # workers: session/popen-gwN


def run_once(
    tmp_path_factory: pytest.TempPathFactory, run: Callable[..., object], config: object
) -> tuple[dict, pathlib.Path]:
    """``run(config, folder, progress=False)`` (an experiment's ``run``), once per session: the
    ``results.json`` it wrote and the folder it wrote it in (with the agent).

    The run is keyed by ``repr(config)`` and ``run``'s module, so a different config or experiment
    never reads another's results.
    """
    key = hashlib.sha256(f"{run.__module__} {config!r}".encode()).hexdigest()[:16]
    runs = session_folder(tmp_path_factory) / "shared-runs"
    runs.mkdir(parents=True, exist_ok=True)
    folder = runs / key
    with open(runs / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (folder / COMPLETE).exists():
            shutil.rmtree(folder, ignore_errors=True)
            run(config, folder, progress=False)
            (folder / COMPLETE).touch()
    return json.loads((folder / "results.json").read_text()), folder


TINY_TRAIN = train.TrainConfig(
    family_args=(("num_arms", 2), ("horizon", 10)),
    num_tasks=32,
    num_updates=4,
    updates_per_chunk=2,
    hidden_size=8,
    learning_rate=5e-3,
    num_seeds=2,
)


def tiny_bandit(**train_fields) -> bandit.BanditConfig:
    """The bandit experiment at the size of the own-family and own-agent equality tests."""
    return bandit.BanditConfig(
        train=dataclasses.replace(TINY_TRAIN, **train_fields), eval_tasks=64, mlp_steps=20
    )
