"""metabelief run study: the grid's wiring against independent computations, its statistics against
SciPy, and its doors."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.stats

from metabelief import baselines
from metabelief.cli import main
from metabelief.experiments import study
from metabelief.experiments.results import SeedDynamics

QUICK = study.StudyConfig.quick()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    return study.run(QUICK, out, progress=False), out


def test_quick_grid_writes_three_figures_and_results(quick_run):
    results, out = quick_run
    for name in ("results.json", "study_objective.png", "study_width.png", "study_dynamics.png"):
        assert (out / name).stat().st_size > 0
    assert [c.label for c in study.GRIDS["quick"].cells] == [
        f"{c.task} {c.cell}-{c.width} {c.objective} {c.algorithm}" for c in results.cells
    ]
    text = study.table(results)
    for header in ("(a) RL² vs RL²", "(b) width", "(c) dynamics", "one seed of"):
        assert header in text


def test_each_seeds_fraction_is_its_final_return_between_its_tasks_anchors(quick_run):
    results, _ = quick_run
    for cell in results.cells:
        anchors = results.references[cell.task]
        for seed in cell.seeds:
            final = seed.dynamics.series["return"][-1]
            expected = (final - anchors.random) / (anchors.reference - anchors.random)
            assert seed.return_fraction == pytest.approx(expected, rel=1e-12)
        means = [s.dynamics.series["r2_trained"][-1] for s in cell.seeds]
        assert cell.summary["r2_trained"]["mean"] == pytest.approx(np.mean(means), rel=1e-9)


def test_tiger_is_measured_against_its_exact_bayes_optimal_value(quick_run):
    results, _ = quick_run
    family = QUICK.train_config(study.Cell("objective", "tiger", "lstm", 8, "rl2", "a2c")).make_family()
    tiger = results.references["tiger"]
    assert tiger.reference_policy == "bayes_optimal"
    assert tiger.reference == pytest.approx(baselines.bayes_optimal_value(family), rel=1e-9)
    assert tiger.random < tiger.reference


def test_agent_steps_count_every_seed_of_every_cell(quick_run):
    results, _ = quick_run
    grid = study.GRIDS["quick"]
    horizons = {"tiger": 30, "bandit": 100}
    expected = sum(
        grid.num_tasks * horizons[c.task] * grid.num_updates[c.task] * grid.num_seeds for c in grid.cells
    )
    assert results.speed.agent_steps == expected
    assert results.speed.one_by_one_seconds == pytest.approx(
        expected / results.speed.one_seed_steps_per_second
    )


def test_objective_differences_are_welch_intervals_of_the_seeds(quick_run):
    results, _ = quick_run
    cells = {c.objective: c for c in results.cells if c.question == "objective"}
    got = results.objective_differences["tiger a2c"]["dissimilarity_agent_to_bayes"]
    a, b = (
        [s.dynamics.series["dissimilarity_agent_to_bayes"][-1] for s in cells[o].seeds]
        for o in ("predictive", "rl2")
    )
    assert got["mean"] == pytest.approx(np.mean(a) - np.mean(b))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_welch_difference_matches_scipy_at_the_conservative_degrees_of_freedom(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(1.0, 1.0, 5), rng.normal(0.0, 3.0, 7)
    got = study.welch_difference(list(a), list(b))
    va, vb = a.var(ddof=1) / 5, b.var(ddof=1) / 7
    df = (va + vb) ** 2 / (va**2 / 4 + vb**2 / 6)
    half = scipy.stats.t.ppf(0.975, math.floor(df)) * math.sqrt(va + vb)
    assert got["mean"] == pytest.approx(a.mean() - b.mean())
    assert got["low"] == pytest.approx(a.mean() - b.mean() - half, rel=1e-6)
    assert got["high"] == pytest.approx(a.mean() - b.mean() + half, rel=1e-6)
    # scipy's own interval uses the fractional df: ours contains it
    scipy_interval = scipy.stats.ttest_ind(a, b, equal_var=False).confidence_interval()
    assert got["low"] <= scipy_interval.low and got["high"] >= scipy_interval.high


def _cell(model: str, width: int, fraction: float, r2: float) -> study.CellResult:
    dynamics = SeedDynamics(updates=(0, 1), series={}, reached={}, lag=None)
    return study.CellResult(
        question="width", task="bandit", cell=model, width=width, objective="rl2", algorithm="a2c",
        train_seconds=1.0, compile_seconds=1.0, agent_steps_per_second=1.0, machine_fraction=0.5,
        seeds=(study.CellSeed(seed=0, return_fraction=fraction, dynamics=dynamics),),
        summary={"return_fraction": {"mean": fraction}, "r2_trained": {"mean": r2}},
    )  # fmt: skip


def test_smallest_widths_known_answers():
    cells = [
        _cell("gru", 8, 0.95, 0.50),
        _cell("gru", 2, 0.40, 0.20),
        _cell("gru", 4, 0.89, 0.46),  # 0.46 is 92% of the best 0.50; 0.89 is short of 0.9
        _cell("rnn", 2, 0.10, 0.10),
        _cell("rnn", 4, 0.50, 0.30),
    ]
    assert study.smallest_widths(cells) == {
        "gru": {"return": 8, "decodability": 4},
        "rnn": {"return": None, "decodability": 4},
    }


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "study", "--seeds", "3"], "--seeds do not apply"),
        (["run", "bandit", "--grid", "quick"], "--grid applies to study"),
        (["run", "study", "--grid", "huge"], "grid must be one of quick, default, gpu"),
        (["run", "study", "--seed", "-1"], "--seed do not apply"),
    ],
)
def test_study_flags_are_checked(argv, message, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err


def test_every_grid_cell_is_a_valid_population():
    for name, grid in study.GRIDS.items():
        config = dataclasses.replace(QUICK, grid=name)
        for cell in grid.cells:
            train = config.train_config(cell)
            assert (train.hidden_size, train.cell, train.num_seeds) == (cell.width, cell.cell, grid.num_seeds)
            assert (train.predictive_coef > 0) == (cell.objective == "predictive")
