"""The study's three figures (``metabelief.experiments.study``), drawn from its ``results.json``
dict (``StudyResults.to_dict()``), so a committed run's figures can be redrawn without rerunning."""

from __future__ import annotations

import pathlib

import matplotlib.ticker as ticker
import numpy as np
from matplotlib.figure import Figure

from metabelief.experiments.plots import save, subplots

OBJECTIVE_COLOURS = {"rl2": "tab:blue", "predictive": "tab:orange"}
MODEL_COLOURS = {
    "lstm": "tab:blue",
    "gru": "tab:orange",
    "rnn": "tab:green",
    "lru": "tab:red",
    "oracle": "black",
}


def _values(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


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


def _cells(results: dict, question: str) -> list[dict]:
    return [cell for cell in results["cells"] if cell["question"] == question]


def objective(path: pathlib.Path, results: dict) -> Figure:
    """(a) Per task: % of the way to the reference, belief R² and state dissimilarity to Bayes,
    RL² vs predictive, mean and 95% interval over seeds (dots: seeds)."""
    cells = _cells(results, "objective")
    groups = list(dict.fromkeys(f"{c['task']}\n{c['algorithm']}" for c in cells))
    figure, row = subplots(1, 3, figsize=(15, 4.2), layout="constrained")
    panels = (
        ("return_fraction", 100, "% of the way from random to the reference return"),
        ("r2_trained", 1, "held-out R², posterior means from the readout"),
        ("dissimilarity_agent_to_bayes", 1, "state dissimilarity, memory → Bayes state"),
    )
    for axes, (name, scale, ylabel) in zip(row, panels, strict=True):
        for c in cells:
            x = groups.index(f"{c['task']}\n{c['algorithm']}") + (
                0.15 if c["objective"] == "predictive" else -0.15
            )
            colour = OBJECTIVE_COLOURS[c["objective"]]
            if name == "return_fraction":
                per_seed = _values(s["return_fraction"] for s in c["seeds"])
            else:
                per_seed = _values(s["dynamics"]["series"][name][-1] for s in c["seeds"])
            axes.plot([x] * len(per_seed), scale * per_seed, ".", color=colour, alpha=0.4)
            _errorbar(axes, x, c["summary"][name], scale, color=colour, label=c["objective"])
        axes.set_xticks(range(len(groups)), groups)
        axes.set_ylabel(ylabel)
        handles, labels = axes.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        axes.legend(unique.values(), [f"{n} (mean, 95% CI; dots: seeds)" for n in unique], fontsize="x-small")
    row[0].axhline(100, color="gray", linewidth=0.8, linestyle="--")
    figure.suptitle(
        "(a) RL² vs RL² + predictive objective (Kuo et al. 2025), LSTM: final held-out figures per task"
    )
    save(figure, path)
    return figure


def width(path: pathlib.Path, results: dict) -> Figure:
    """(b) Return and belief decodability against width, per memory model."""
    cells = _cells(results, "width")
    widths_all = sorted({c["width"] for c in cells})
    figure, (left, right) = subplots(1, 2, figsize=(12, 4.2), layout="constrained")
    for model in dict.fromkeys(c["cell"] for c in cells):
        rows = sorted((c for c in cells if c["cell"] == model), key=lambda c: c["width"])
        widths = [c["width"] for c in rows]
        colour = MODEL_COLOURS.get(model, "gray")
        for axes, name, scale in ((left, "return_fraction", 100), (right, "r2_trained", 1)):
            axes.plot(
                widths, scale * _values(c["summary"][name]["mean"] for c in rows), color=colour, label=model
            )
            for c in rows:
                _errorbar(axes, c["width"], c["summary"][name], scale, color=colour)
        untrained = _values(c["summary"]["r2_untrained"]["mean"] for c in rows)
        right.plot(widths, untrained, color=colour, linestyle=":", linewidth=1)
    left.axhline(90, color="gray", linewidth=0.8, linestyle="--", label="90% of the way")
    right.plot([], [], color="gray", linestyle=":", label="untrained network of that width")
    left.set(ylabel="% of the way from random to the reference return")
    right.set(ylabel="held-out R², posterior means from the readout")
    for axes in (left, right):
        axes.set(xscale="log", xlabel="width (units)")
        axes.xaxis.set_minor_locator(ticker.NullLocator())
        axes.set_xticks(widths_all, [str(w) for w in widths_all])
        axes.legend(fontsize="small")
    figure.suptitle(
        "(b) bandit, RL² with A2C: return and decodability against width (mean, 95% CI over seeds)"
    )
    save(figure, path)
    return figure


def dynamics(path: pathlib.Path, results: dict) -> Figure:
    """(c) During training, for the objective cells: the return as % of the way from random to the
    reference (top) and the belief R² of the trained readout beside the untrained network's
    (bottom), each seed thin and the mean bold."""
    cells = _cells(results, "objective")
    tasks = list(dict.fromkeys(c["task"] for c in cells))
    figure, grid = subplots(2, len(tasks), figsize=(4 * len(tasks), 7), layout="constrained", squeeze=False)
    for column, task in enumerate(tasks):
        anchors = results["references"][task]
        span = anchors["reference"] - anchors["random"]
        for c in (c for c in cells if c["task"] == task):
            colour = OBJECTIVE_COLOURS[c["objective"]]
            updates = c["seeds"][0]["dynamics"]["updates"]
            returns = np.array([_values(s["dynamics"]["series"]["return"]) for s in c["seeds"]])
            _seed_lines(
                grid[0, column], updates, 100 * (returns - anchors["random"]) / span, colour, c["objective"]
            )
            r2 = np.array([_values(s["dynamics"]["series"]["r2_trained"]) for s in c["seeds"]])
            _seed_lines(grid[1, column], updates, r2, colour, f"{c['objective']}: trained")
            untrained = np.array([_values(s["dynamics"]["series"]["r2_untrained"]) for s in c["seeds"]])
            grid[1, column].plot(updates, np.nanmean(untrained, axis=0), ":", color=colour, label="untrained")
        grid[0, column].set(title=task, ylabel="% of the way to the reference")
        grid[1, column].set(xlabel="updates", ylabel="held-out R², posterior means (axis from -0.25)")
        # An R² far below 0 (a checkpoint whose test tasks barely move the belief) would hide the rest.
        grid[1, column].set_ylim(bottom=max(grid[1, column].get_ylim()[0], -0.25))
        for axes in grid[:, column]:
            axes.legend(fontsize="x-small")
    figure.suptitle(
        "(c) during training (held-out tasks): return and decodability of the belief; "
        "thin: seeds, bold: mean; the lag per cell is in the table"
    )
    save(figure, path)
    return figure


def _seed_lines(axes, updates, values: np.ndarray, colour: str, label: str) -> None:
    for seed_values in values:
        axes.plot(updates, seed_values, color=colour, linewidth=0.5, alpha=0.35)
    axes.plot(updates, np.nanmean(values, axis=0), color=colour, linewidth=1.6, label=label)
