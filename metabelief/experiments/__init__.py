"""Experiments: each module has a frozen config dataclass and ``run(config, out_dir) -> results``.

``EXPERIMENTS`` maps the names ``metabelief run NAME`` accepts to their modules; a module
provides ``NAME``, ``SUMMARY``, a config class with a ``train: TrainConfig`` field and a
``quick()`` constructor, ``run`` and ``table``. ``run`` returns typed results (frozen
dataclasses) and writes their ``to_dict()`` as ``results.json``; ``table(results)`` prints their
summary. The result types and every key of ``results.json``: ``metabelief.experiments.results``.
"""

from __future__ import annotations

from types import ModuleType

from metabelief.experiments import bandit, failure, family, gridworld, rl2_table, study, two_step

EXPERIMENTS: dict[str, tuple[ModuleType, type]] = {
    bandit.NAME: (bandit, bandit.BanditConfig),
    gridworld.NAME: (gridworld, gridworld.GridworldConfig),
    two_step.NAME: (two_step, two_step.TwoStepConfig),
    failure.NAME: (failure, failure.FailureConfig),
    rl2_table.NAME: (rl2_table, rl2_table.RL2TableConfig),
    family.NAME: (family, family.FamilyConfig),
    study.NAME: (study, study.StudyConfig),
}


def lookup(name: str) -> tuple[ModuleType, type]:
    """The experiment module and its config class; an unknown name lists the known ones."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(sorted(EXPERIMENTS))}")
    return EXPERIMENTS[name]
