"""``metabelief run study``: which recurrent agents carry the belief, at what size, and when.

A grid of trained populations, each cell one memory model x width x objective x algorithm on one
task, trained with ``seeds`` seeds as one vmapped population and evaluated during training
(``metabelief.train.dynamics``: return, held-out R^2 of the posterior means from the readout with
the untrained-network and input-only controls, linear state dissimilarity to the exact belief).
Three questions, one table and one figure each:

(a) **objective** (Kuo, Hou, Dabney & Walker, NeurIPS 2025): RL² against RL² with the predictive
    objective (``metabelief.train.predictive``), per task (the bandit, the two-step task, the
    oracle bandit, Tiger): the return's way from random to the task's reference, and the state
    dissimilarity between the agent's memory and the Bayes state, with the difference
    predictive - RL² and its Welch interval;
(b) **width** (Hennig et al., PLoS Comput Biol 2023): return and belief decodability against the
    width of each memory model on the bandit, with the smallest width whose mean return reaches
    90% of the way to the reference and the smallest whose mean R^2 reaches 90% of the best any
    width reaches;
(c) **dynamics** (Mikulik et al. 2020; Rabinowitz 2019): per cell, the update from which the
    return and the decodability stay past 90% of their rise, and the lag between them with its
    interval over seeds.

Every cell of a task is evaluated on the same held-out tasks, and the task's reference policies
(random, and the Bayes-optimal DP where the family's capabilities unlock it, else the best other
reference: ``metabelief.experiments.family.references``) play those tasks too.

Grids (``--grid``): ``quick`` (CI-sized: tiny widths, few updates), ``default`` (21 minutes
measured on a 2-core CPU) and ``gpu`` (the sizes a GPU run should use: every memory model and width
2-128 on every task, both algorithms, 10 seeds, full training). ``run`` returns ``StudyResults``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import time
from collections.abc import Sequence

import jax
import numpy as np

from metabelief import baselines, train
from metabelief.analysis.records import Record
from metabelief.experiments import family as family_experiment
from metabelief.experiments import interval_rules, output, plots_study, seeds
from metabelief.experiments.results import RunResults, SeedDynamics
from metabelief.tasks.validation import integer_at_least
from metabelief.train.dynamics import REACHED_FRACTION, DynamicsSchedule, held_out_tasks

NAME = "study"
SUMMARY = "grid of memory model x width x objective x algorithm: who carries the belief, at what size, when"

# The tasks of question (a): registered family and its arguments, and the training that learns it.
TASKS: dict[str, dict] = {
    "bandit": {"family": "bernoulli_bandit", "family_args": (("num_arms", 2), ("horizon", 100))},
    "two_step": {"family": "two_step", "family_args": (("num_trials", 100),)},
    "oracle_bandit": {"family": "oracle_bandit", "family_args": ()},
    "tiger": {"family": "tiger", "family_args": ()},
}
PREDICTIVE_COEF = 0.5  # the predictive objective's weight (as the families write-up's runs)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One population of the grid."""

    question: str  # "objective" or "width"
    task: str  # a key of TASKS
    cell: str  # the memory model (metabelief.agents.CELLS)
    width: int
    objective: str  # "rl2" or "predictive"
    algorithm: str  # "a2c" or "ppo"

    @property
    def label(self) -> str:
        return f"{self.task} {self.cell}-{self.width} {self.objective} {self.algorithm}"


@dataclasses.dataclass(frozen=True)
class Grid:
    """The cells and the training every cell shares (tasks per update, updates per task)."""

    cells: tuple[Cell, ...]
    num_seeds: int
    num_tasks: int
    num_updates: dict[str, int]  # task -> A2C updates (PPO takes a quarter: 16 optimiser steps each)
    checkpoints: int


def _objective_cells(tasks: Sequence[str], algorithms: Sequence[str], width: int) -> tuple[Cell, ...]:
    return tuple(
        Cell("objective", task, "lstm", width, objective, algorithm)
        for task in tasks
        for algorithm in algorithms
        for objective in ("rl2", "predictive")
    )


def _width_cells(models: Sequence[str], widths: Sequence[int]) -> tuple[Cell, ...]:
    return tuple(Cell("width", "bandit", model, width, "rl2", "a2c") for model in models for width in widths)


GRIDS: dict[str, Grid] = {
    "quick": Grid(
        cells=_objective_cells(("tiger",), ("a2c",), 8) + _width_cells(("gru",), (2, 4)),
        num_seeds=2,
        num_tasks=64,
        num_updates={task: 10 for task in TASKS},
        checkpoints=2,
    ),
    "default": Grid(
        cells=_objective_cells(tuple(TASKS), ("a2c",), 48)
        + _width_cells(("lstm", "gru", "rnn", "lru"), (2, 4, 8, 16, 32, 64)),
        num_seeds=5,
        num_tasks=256,
        num_updates={"bandit": 300, "two_step": 300, "oracle_bandit": 300, "tiger": 300},
        checkpoints=11,
    ),
    "gpu": Grid(
        cells=_objective_cells(tuple(TASKS), ("a2c", "ppo"), 48)
        + _width_cells(("lstm", "gru", "rnn", "lru"), (2, 4, 8, 16, 32, 64, 128)),
        num_seeds=10,
        num_tasks=1024,
        num_updates={task: 600 for task in TASKS},
        checkpoints=21,
    ),
}


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """The experiment: which grid, and the first seed (cell i's seeds are ``seed .. seed + S - 1``,
    the same for every cell, so every cell of a task plays the same held-out tasks)."""

    grid: str = "default"
    seed: int = 0

    def __post_init__(self):
        if self.grid not in GRIDS:
            raise ValueError(f"grid must be one of {', '.join(GRIDS)}, got {self.grid!r}")
        object.__setattr__(self, "seed", integer_at_least("seed", self.seed, 0))

    @classmethod
    def quick(cls) -> StudyConfig:
        return cls(grid="quick")

    def train_config(self, cell: Cell) -> train.TrainConfig:
        """The population of ``cell``."""
        grid = GRIDS[self.grid]
        updates = grid.num_updates[cell.task]
        return train.TrainConfig(
            **TASKS[cell.task],
            cell=cell.cell,
            hidden_size=cell.width,
            algorithm=cell.algorithm,
            predictive_coef=PREDICTIVE_COEF if cell.objective == "predictive" else 0.0,
            num_tasks=grid.num_tasks,
            num_updates=updates if cell.algorithm == "a2c" else max(1, updates // 4),
            updates_per_chunk=max(1, updates // (grid.checkpoints - 1)) if cell.algorithm == "a2c" else 5,
            num_seeds=grid.num_seeds,
            seed=self.seed,
            checkpoints=grid.checkpoints,
        )


@dataclasses.dataclass(frozen=True)
class CellSeed(Record):
    """One seed of one cell."""

    seed: int
    return_fraction: float | None  # (agent - random) / (reference - random), final held-out return
    dynamics: SeedDynamics


@dataclasses.dataclass(frozen=True)
class CellResult(Record):
    """One cell: what it is, what training it cost, its seeds and their summary."""

    question: str
    task: str
    cell: str
    width: int
    objective: str
    algorithm: str
    train_seconds: float
    compile_seconds: float
    agent_steps_per_second: float  # all seeds of the cell together
    machine_fraction: float  # CPU time / (wall time x cores) of its training call (compiling, evaluating)
    seeds: tuple[CellSeed, ...]
    summary: dict  # intervals over seeds of return_fraction, the final series, reached and lag


@dataclasses.dataclass(frozen=True)
class TaskReference(Record):
    """A task's anchors on its held-out tasks."""

    random: float
    reference: float
    reference_policy: str


@dataclasses.dataclass(frozen=True)
class Speed(Record):
    """The grid's cost against one seed of one cell trained alone in the same run."""

    grid_seconds: float  # wall time of the whole grid, compilation and evaluation included
    train_seconds: float  # of which training (all cells, compiled)
    agent_steps: int  # all cells, all seeds
    agent_steps_per_second: float  # agent_steps / train_seconds
    one_seed_cell: str  # the cell trained alone with one seed
    one_seed_steps_per_second: float
    one_by_one_seconds: float  # the grid's agent steps at the one-seed throughput


@dataclasses.dataclass(frozen=True)
class StudyResults(RunResults):
    references: dict[str, TaskReference]
    cells: tuple[CellResult, ...]
    speed: Speed
    smallest_widths: dict[str, dict[str, int | None]]  # model -> {"return", "decodability"}
    objective_differences: dict[str, dict[str, dict]]  # task -> figure -> predictive - RL² interval


FINAL_FIGURES = ("r2_trained", "r2_untrained", "r2_input_only", "dissimilarity_agent_to_bayes")


def run(config: StudyConfig, out_dir: pathlib.Path, *, progress: bool = True) -> StudyResults:
    """Trains and evaluates every cell, writes ``results.json`` and the three figures."""
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = GRIDS[config.grid]
    start = time.perf_counter()
    speed_cell = grid.cells[0]
    one_seed = dataclasses.replace(config.train_config(speed_cell), num_seeds=1, checkpoints=0)
    one_seed_rate = train.train(one_seed, progress=False).agent_steps_per_second
    references = {task: _references(config, task) for task in dict.fromkeys(c.task for c in grid.cells)}
    results = []
    for index, cell in enumerate(grid.cells):
        if progress:
            print(f"[{index + 1}/{len(grid.cells)}] {cell.label}", flush=True)
        results.append(_run_cell(config, cell, references[cell.task], progress))
    grid_seconds = time.perf_counter() - start
    train_configs = [config.train_config(cell) for cell in grid.cells]
    steps = sum(each.steps_per_update * grid.num_seeds * each.num_updates for each in train_configs)
    train_seconds = sum(result.train_seconds for result in results)
    study = StudyResults(
        experiment=NAME,
        config=dataclasses.asdict(config) | {"grid_cells": [dataclasses.asdict(c) for c in grid.cells]},
        device=output.device_description(),
        references=references,
        cells=tuple(results),
        speed=Speed(
            grid_seconds=grid_seconds,
            train_seconds=train_seconds,
            agent_steps=steps,
            agent_steps_per_second=steps / train_seconds,
            one_seed_cell=speed_cell.label,
            one_seed_steps_per_second=one_seed_rate,
            one_by_one_seconds=steps / one_seed_rate,
        ),
        smallest_widths=smallest_widths(results),
        objective_differences=objective_differences(results),
    )
    written = study.to_dict()
    output.write_json(out_dir / "results.json", written)
    draw(written, out_dir)
    return study


def draw(results: dict, out_dir: pathlib.Path) -> None:
    """The three figures of a study's ``results.json`` dict into ``out_dir``."""
    plots_study.objective(out_dir / "study_objective.png", results)
    plots_study.width(out_dir / "study_width.png", results)
    plots_study.dynamics(out_dir / "study_dynamics.png", results)


def _references(config: StudyConfig, task: str) -> TaskReference:
    """Random and the reference policy on the held-out tasks every cell of ``task`` plays."""
    train_config = config.train_config(Cell("objective", task, "lstm", 8, "rl2", "a2c"))
    family = train_config.make_family()
    found = family_experiment.references(family)
    schedule = DynamicsSchedule.of(train_config)
    tasks, action_key = held_out_tasks(family, schedule.num_tasks, config.seed)  # the cells' own
    run_policy = jax.jit(baselines.run_policy, static_argnums=(0, 1))
    means = {
        name: float(np.asarray(run_policy(family, policy, action_key, tasks).rewards).sum(axis=0).mean())
        for name, policy in found.policies.items()
    }
    name = family_experiment.reference_policy(found, means.get)
    value = (
        found.bayes_optimal_value if name == "bayes_optimal" and found.bayes_optimal_value else means[name]
    )
    return TaskReference(random=means["random"], reference=value, reference_policy=name)


def _run_cell(config: StudyConfig, cell: Cell, reference: TaskReference, progress: bool) -> CellResult:
    train_config = config.train_config(cell)
    cpu, wall = time.process_time(), time.perf_counter()
    trained = train.train(train_config, progress=progress)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    dynamics = trained.dynamics
    span = reference.reference - reference.random
    per_seed = []
    for index, seed in enumerate(train_config.seeds):
        final_return = float(dynamics.series["return"][index, -1])
        per_seed.append(
            CellSeed(
                seed=seed,
                return_fraction=(final_return - reference.random) / span if span else None,
                dynamics=SeedDynamics.of(dynamics, index),
            )
        )
    summary = {"return_fraction": seeds.interval([s.return_fraction for s in per_seed])}
    for name in FINAL_FIGURES:
        support = interval_rules.R2 if name.startswith("r2") else interval_rules.NON_NEGATIVE
        summary[name] = seeds.interval([s.dynamics.series[name][-1] for s in per_seed], support=support)
    for name in per_seed[0].dynamics.reached:
        summary[f"reached_{name}"] = seeds.interval([s.dynamics.reached[name] for s in per_seed])
    summary["lag"] = seeds.interval([s.dynamics.lag for s in per_seed])
    return CellResult(
        **dataclasses.asdict(cell),
        train_seconds=trained.seconds,
        compile_seconds=trained.compile_seconds + dynamics.compile_seconds,
        agent_steps_per_second=trained.agent_steps_per_second,
        machine_fraction=cpu / (wall * (os.cpu_count() or 1)),
        seeds=tuple(per_seed),
        summary=summary,
    )


def smallest_widths(cells: Sequence[CellResult]) -> dict[str, dict[str, int | None]]:
    """Per memory model of question (b): the smallest width whose mean return fraction reaches
    ``REACHED_FRACTION`` (of the way from random to the reference), and the smallest whose mean
    R^2 reaches ``REACHED_FRACTION`` of the best mean R^2 of any of its widths; None if none does."""
    found = {}
    for model in dict.fromkeys(c.cell for c in cells if c.question == "width"):
        rows = sorted((c for c in cells if c.question == "width" and c.cell == model), key=lambda c: c.width)
        fractions = [c.summary["return_fraction"]["mean"] for c in rows]
        r2 = [c.summary["r2_trained"]["mean"] for c in rows]
        best = max((v for v in r2 if v is not None), default=None)
        found[model] = {
            "return": next(
                (
                    c.width
                    for c, v in zip(rows, fractions, strict=True)
                    if v is not None and v >= REACHED_FRACTION
                ),
                None,
            ),
            "decodability": None
            if best is None
            else next(
                (
                    c.width
                    for c, v in zip(rows, r2, strict=True)
                    if v is not None and v >= REACHED_FRACTION * best
                ),
                None,
            ),
        }
    return found


def objective_differences(cells: Sequence[CellResult]) -> dict[str, dict[str, dict]]:
    """Per task and algorithm of question (a): predictive - RL² of each figure, the difference of
    the seed means with its Welch 95% interval (the two populations' seeds are independent)."""
    differences = {}
    for cell in cells:
        if cell.question != "objective" or cell.objective != "predictive":
            continue
        rl2 = next(
            c
            for c in cells
            if c.question == "objective"
            and c.task == cell.task
            and c.algorithm == cell.algorithm
            and c.objective == "rl2"
        )
        key = f"{cell.task} {cell.algorithm}"
        differences[key] = {
            name: welch_difference(_seed_values(cell, name), _seed_values(rl2, name))
            for name in ("return_fraction", *FINAL_FIGURES)
        }
    return differences


def _seed_values(cell: CellResult, name: str) -> list[float | None]:
    if name == "return_fraction":
        return [s.return_fraction for s in cell.seeds]
    return [s.dynamics.series[name][-1] for s in cell.seeds]


def welch_difference(a: Sequence[float | None], b: Sequence[float | None]) -> dict:
    """``{"mean", "low", "high"}``: mean(a) - mean(b) with its 95% Welch-Satterthwaite t interval."""
    a = np.asarray([v for v in a if v is not None and not math.isnan(v)], np.float64)
    b = np.asarray([v for v in b if v is not None and not math.isnan(v)], np.float64)
    mean = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return {"mean": mean, "low": None, "high": None}
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0:
        return {"mean": mean, "low": mean, "high": mean}
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = seeds.t_quantile(0.975, max(1, math.floor(df))) * se  # df rounded down: conservative
    return {"mean": mean, "low": mean - half, "high": mean + half}


def table(results: StudyResults) -> str:
    """The three tables: (a) objective, (b) width, (c) dynamics, and the grid's speed."""

    def cell(summary: dict, spec: str = ".2f") -> str:
        return seeds.format_interval(summary, spec)

    lines = [
        "(a) RL² vs RL² + predictive objective (LSTM): final held-out figures, mean [95% interval] over seeds"
    ]
    rows = [
        [
            "task",
            "algorithm",
            "objective",
            "% of the way to reference",
            "R² trained",
            "R² untrained",
            "dissimilarity agent → Bayes",
        ]
    ]
    for c in results.cells:
        if c.question == "objective":
            rows.append(
                [
                    c.task,
                    c.algorithm,
                    c.objective,
                    cell(seeds.percent(c.summary["return_fraction"]), ".0f"),
                    cell(c.summary["r2_trained"]),
                    cell(c.summary["r2_untrained"]),
                    cell(c.summary["dissimilarity_agent_to_bayes"]),
                ]
            )
    lines += [output.format_table(rows), "", "predictive - RL² (Welch 95% interval)"]
    rows = [["task", "% of the way", "R² trained", "dissimilarity agent → Bayes"]]
    for key, figures in results.objective_differences.items():
        rows.append(
            [
                key,
                _difference(figures["return_fraction"], 100, ".0f"),
                _difference(figures["r2_trained"]),
                _difference(figures["dissimilarity_agent_to_bayes"]),
            ]
        )
    lines += [output.format_table(rows), "", "(b) width on the bandit (RL², A2C)"]
    rows = [["model", "width", "% of the way", "R² trained", "R² untrained", "R² input-only", "machine used"]]
    for c in results.cells:
        if c.question == "width":
            rows.append(
                [
                    c.cell,
                    str(c.width),
                    cell(seeds.percent(c.summary["return_fraction"]), ".0f"),
                    cell(c.summary["r2_trained"]),
                    cell(c.summary["r2_untrained"]),
                    cell(c.summary["r2_input_only"]),
                    f"{100 * c.machine_fraction:.0f}%",
                ]
            )
    lines += [
        output.format_table(rows),
        "smallest width reaching 90% (return of the way to the reference; R² of the model's best):",
    ]
    for model, found in results.smallest_widths.items():
        lines.append(f"  {model}: return {found['return']}, decodability {found['decodability']}")
    lines += [
        "",
        "(c) dynamics: the update from which each stays past 90% of its rise; lag = decodability - return",
    ]
    rows = [["cell", "return", "R² trained", "lag"]]
    for c in results.cells:
        rows.append(
            [
                f"{c.task} {c.cell}-{c.width} {c.objective} {c.algorithm}",
                cell(c.summary["reached_return"], ".0f"),
                cell(c.summary["reached_r2_trained"], ".0f"),
                cell(c.summary["lag"], "+.0f"),
            ]
        )
    speed = results.speed
    lines += [
        output.format_table(rows),
        "",
        f"grid: {speed.grid_seconds:.0f} s wall ({speed.train_seconds:.0f} s training), "
        f"{speed.agent_steps_per_second / 1e6:.2f} M agent steps/s; one seed of {speed.one_seed_cell} alone: "
        f"{speed.one_seed_steps_per_second / 1e6:.2f} M steps/s, so the grid's steps one seed at a time "
        f"would take {speed.one_by_one_seconds:.0f} s of training",
    ]
    return "\n".join(lines)


def _difference(interval: dict, scale: float = 1.0, spec: str = ".2f") -> str:
    scaled = {key: None if value is None else value * scale for key, value in interval.items()}
    text = f"{scaled['mean']:{spec}}"
    if scaled["low"] is not None:
        text += f" [{scaled['low']:{spec}}, {scaled['high']:{spec}}]"
    return text
