"""The study's three figures (``metabelief.experiments.study``): each readable on its own."""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from metabelief.experiments.plots import save, subplots

if TYPE_CHECKING:
    from metabelief.experiments.study import CellResult, StudyResults

OBJECTIVE_COLOURS = {"rl2": "tab:blue", "predictive": "tab:orange"}
MODEL_COLOURS = {
    "lstm": "tab:blue",
    "gru": "tab:orange",
    "rnn": "tab:green",
    "lru": "tab:red",
    "oracle": "black",
}


def _errorbar(axes, x, summary: dict, scale: float = 1.0, **style) -> None:
    mean = summary["mean"]
    if mean is None:
        return
    low = mean if summary["low"] is None else summary["low"]
    high = mean if summary["high"] is None else summary["high"]
    axes.errorbar(
        [x],
        [scale * mean],
        yerr=[[scale * (mean - low)], [scale * (high - mean)]],
        fmt="o",
        capsize=3,
        **style,
    )


def objective(path: pathlib.Path, results: StudyResults) -> Figure:
    """(a) Per task: % of the way to the reference and state dissimilarity to Bayes, RL² vs
    predictive, mean and 95% interval over seeds (dots: seeds)."""
    cells = [c for c in results.cells if c.question == "objective"]
    groups = list(dict.fromkeys(f"{c.task}\n{c.algorithm}" for c in cells))
    figure, (left, right) = subplots(1, 2, figsize=(12, 4.2), layout="constrained")
    for c in cells:
        x = groups.index(f"{c.task}\n{c.algorithm}") + (0.15 if c.objective == "predictive" else -0.15)
        colour = OBJECTIVE_COLOURS[c.objective]
        seed_fractions = [100 * s.return_fraction for s in c.seeds if s.return_fraction is not None]
        left.plot([x] * len(seed_fractions), seed_fractions, ".", color=colour, alpha=0.4)
        _errorbar(left, x, c.summary["return_fraction"], 100, color=colour, label=c.objective)
        dissimilarities = [s.dynamics.series["dissimilarity_agent_to_bayes"][-1] for s in c.seeds]
        right.plot([x] * len(dissimilarities), dissimilarities, ".", color=colour, alpha=0.4)
        _errorbar(right, x, c.summary["dissimilarity_agent_to_bayes"], color=colour, label=c.objective)
    for axes, ylabel in (
        (left, "% of the way from random to the reference return"),
        (right, "state dissimilarity, memory → Bayes state (0 = a linear map)"),
    ):
        axes.set_xticks(range(len(groups)), groups)
        axes.set_ylabel(ylabel)
        handles, labels = axes.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        axes.legend(
            unique.values(),
            [f"{name} (mean, 95% interval; dots: seeds)" for name in unique],
            fontsize="small",
        )
    left.axhline(100, color="gray", linewidth=0.8, linestyle="--")
    figure.suptitle(
        "(a) RL² vs RL² + predictive objective (Kuo et al. 2025): return and state dissimilarity per task"
    )
    save(figure, path)
    return figure


def width(path: pathlib.Path, results: StudyResults) -> Figure:
    """(b) Return and belief decodability against width, per memory model."""
    cells = [c for c in results.cells if c.question == "width"]
    figure, (left, right) = subplots(1, 2, figsize=(12, 4.2), layout="constrained")
    for model in dict.fromkeys(c.cell for c in cells):
        rows = sorted((c for c in cells if c.cell == model), key=lambda c: c.width)
        widths = [c.width for c in rows]
        colour = MODEL_COLOURS.get(model, "gray")
        for axes, name, scale in ((left, "return_fraction", 100), (right, "r2_trained", 1)):
            means = [
                np.nan if c.summary[name]["mean"] is None else scale * c.summary[name]["mean"] for c in rows
            ]
            axes.plot(widths, means, color=colour, label=model)
            for c in rows:
                _errorbar(axes, c.width, c.summary[name], scale, color=colour)
        untrained = [c.summary["r2_untrained"]["mean"] for c in rows]
        right.plot(widths, untrained, color=colour, linestyle=":", linewidth=1)
    left.axhline(90, color="gray", linewidth=0.8, linestyle="--", label="90% of the way")
    left.set(xscale="log", xlabel="width (units)", ylabel="% of the way from random to the reference return")
    right.set(xscale="log", xlabel="width (units)", ylabel="held-out R², posterior means from the readout")
    right.plot([], [], color="gray", linestyle=":", label="untrained network of that width")
    for axes in (left, right):
        axes.set_xticks(sorted({c.width for c in cells}), [str(w) for w in sorted({c.width for c in cells})])
        axes.legend(fontsize="small")
    figure.suptitle(
        "(b) bandit, RL² with A2C: return and decodability against width (mean, 95% interval over seeds)"
    )
    save(figure, path)
    return figure


def dynamics(path: pathlib.Path, results: StudyResults) -> Figure:
    """(c) Return and decodability during training for the objective cells, each normalised to its
    way from update 0 to the last checkpoint: mean over seeds, per cell."""
    cells = [c for c in results.cells if c.question == "objective"]
    tasks = list(dict.fromkeys(c.task for c in cells))
    figure, axes_row = subplots(
        1, len(tasks), figsize=(4 * len(tasks), 4), layout="constrained", squeeze=False
    )
    for axes, task in zip(axes_row[0], tasks, strict=True):
        for c in (c for c in cells if c.task == task):
            _normalised_curves(axes, c)
        axes.axhline(0.9, color="gray", linewidth=0.8, linestyle="--")
        axes.set(title=task, xlabel="updates", ylabel="fraction of the rise (0: update 0, 1: last)")
        axes.legend(fontsize="x-small")
    figure.suptitle(
        "(c) during training: return (solid) and decodability R² (dashed), each as the fraction of its rise; "
        "mean over seeds; lag per cell in the table"
    )
    save(figure, path)
    return figure


def _normalised_curves(axes, cell: CellResult) -> None:
    colour = OBJECTIVE_COLOURS[cell.objective]
    for name, style in (("return", "-"), ("r2_trained", "--")):
        values = np.array([[np.nan if v is None else v for v in s.dynamics.series[name]] for s in cell.seeds])
        rise = values[:, -1:] - values[:, :1]
        with np.errstate(invalid="ignore", divide="ignore"):
            normalised = np.nanmean((values - values[:, :1]) / rise, axis=0)
        label = f"{cell.objective} {cell.algorithm}: {'return' if name == 'return' else 'R²'}"
        axes.plot(cell.seeds[0].dynamics.updates, normalised, style, color=colour, label=label)
