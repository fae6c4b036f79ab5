"""PNG plots written by the experiments (matplotlib, headless)."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence

import matplotlib
import matplotlib.cm as cm
import matplotlib.colors as colors
import matplotlib.patches as patches
import numpy as np  # noqa: E402
from matplotlib.figure import Figure


def learning_curve(
    path: pathlib.Path, steps: np.ndarray, returns: np.ndarray, references: dict[str, float]
) -> None:
    """Mean episode return per update against agent steps, each seed thin and their mean bold
    (``returns`` ``[S, num_updates]``), with reference policies as lines."""
    figure, axes = subplots(figsize=(6, 4))
    returns = np.atleast_2d(returns)
    for seed_returns in returns:
        axes.plot(steps, seed_returns, color="black", linewidth=0.5, alpha=0.35)
    label = f"LSTM agent (training tasks), mean of {returns.shape[0]} seeds"
    axes.plot(steps, returns.mean(axis=0), color="black", linewidth=1.5, label=label)
    for (name, value), colour in zip(references.items(), ("tab:gray", "tab:blue", "tab:green"), strict=False):
        axes.axhline(value, linestyle="--", color=colour, label=f"{name} ({value:.1f})")
    axes.set(xlabel="agent steps per seed", ylabel="mean return per episode", title="Learning curve")
    axes.legend(loc="lower right")
    save(figure, path)


def decoded_beliefs(
    path: pathlib.Path,
    decoded: dict[str, np.ndarray],
    episodes: int = 3,
    quantity: str = "posterior mean of arm 0",
) -> None:
    """Decoded vs exact first belief feature (``quantity``): over a few test episodes, and all test steps."""
    exact = decoded["exact"][..., 0]  # [T, n]
    names = [name for name in decoded if name != "exact"]
    figure, (over_time, scatter) = subplots(1, 2, figsize=(11, 4))
    time = np.arange(exact.shape[0])
    for episode, colour in zip(range(episodes), ("tab:blue", "tab:orange", "tab:green"), strict=False):
        over_time.plot(time, exact[:, episode], color=colour, linewidth=2)
        for name, style in zip(names, ("--", ":"), strict=False):
            over_time.plot(time, decoded[name][:, episode, 0], style, color=colour, linewidth=1)
    styles = ", ".join(f"{name} ({style})" for name, style in zip(names, ("dashed", "dotted"), strict=False))
    over_time.set(xlabel="step in episode", ylabel=quantity, title=f"exact (solid), {styles}")
    rows = np.random.default_rng(0).choice(exact.size, size=min(exact.size, 4000), replace=False)
    for name, colour in zip(names, ("tab:red", "tab:gray"), strict=False):
        decoded_first_arm = decoded[name][..., 0].ravel()[rows]
        scatter.scatter(exact.ravel()[rows], decoded_first_arm, s=2, alpha=0.3, color=colour, label=name)
    scatter.plot([0, 1], [0, 1], color="black", linewidth=1)
    scatter.set(xlabel=f"exact {quantity}", ylabel="decoded from hidden state", title="held-out test tasks")
    scatter.legend(markerscale=5)
    save(figure, path)


def r2_by_time(path: pathlib.Path, per_seed: Sequence[Mapping[str, Sequence[float | None]]]) -> None:
    """Held-out R^2 (hidden -> posterior means) at each step of the episode, per network: each
    seed thin, the mean over seeds bold (``per_seed``: one ``{network: [T]}`` per seed, e.g.
    ``protocol.r2_by_time`` of the seeds' probe reports)."""
    figure, axes = subplots(figsize=(6, 4))
    for name, colour in zip(per_seed[0], ("tab:blue", "tab:orange", "tab:green"), strict=False):
        values = np.array(
            [[np.nan if v is None else v for v in seed[name]] for seed in per_seed], dtype=float
        )
        steps = np.arange(values.shape[1])
        for seed_values in values:
            axes.plot(steps, seed_values, color=colour, linewidth=0.5, alpha=0.35)
        defined = np.isfinite(values).sum(axis=0)
        mean = np.where(defined > 0, np.nansum(values, axis=0) / np.maximum(defined, 1), np.nan)
        axes.plot(steps, mean, color=colour, linewidth=1.5, label=f"{name}, mean of seeds")
    axes.set(xlabel="step in episode", ylabel="held-out R²", title="Linear probe, hidden → posterior means")
    axes.set_ylim(min(0.0, axes.get_ylim()[0]), 1.0)
    axes.legend(loc="lower right")
    save(figure, path)


def save(figure, path: pathlib.Path) -> None:
    if figure.get_layout_engine() is None:
        figure.tight_layout()
    figure.savefig(path, dpi=120)


def subplots(*grid, figsize: tuple[float, float], layout: str | None = None, **options):
    """``(figure, axes)`` like ``pyplot.subplots``, without pyplot: a bare ``Figure`` renders to PNG
    through Agg when saved, so no global backend is set and no figure is left registered."""
    figure = Figure(figsize=figsize, layout=layout)
    return figure, figure.subplots(*grid, **options)


def goal_beliefs(
    path: pathlib.Path,
    size: int,
    goal_cells: np.ndarray,
    walls: list[int],
    positions: np.ndarray,
    goal: int,
    beliefs: dict[str, np.ndarray],
    times: list[int],
) -> None:
    """The belief over goal candidates on the grid at a few steps of one episode, one row per source.

    Args:
      size: cells per side.
      goal_cells: ``[G]`` cell index of each candidate.
      walls: wall cell indices (drawn black).
      positions: ``[T]`` the agent's cell at each step (a white dot).
      goal: the true goal's candidate index (a red frame).
      beliefs: row label -> ``[T, G]`` probability of each candidate at each step.
      times: the steps (columns) to show.
    """
    figure, axes = subplots(
        len(beliefs),
        len(times),
        figsize=(2.2 * len(times) + 1, 2.2 * len(beliefs)),
        squeeze=False,
        layout="constrained",
    )
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgray")
    norm = colors.PowerNorm(gamma=0.4, vmin=0.0, vmax=1.0)  # so 1/G stands out from 0
    for row, (label, belief) in enumerate(beliefs.items()):
        for column, t in enumerate(times):
            grid = np.full(size * size, np.nan)
            grid[goal_cells] = belief[t]
            grid[walls] = -1.0
            ax = axes[row, column]
            ax.imshow(np.ma.masked_invalid(grid.reshape(size, size)), cmap=cmap, norm=norm)
            if walls:
                wall_rows, wall_cols = np.divmod(np.asarray(walls), size)
                ax.scatter(wall_cols, wall_rows, marker="s", s=300, color="black")
            agent_row, agent_col = divmod(int(positions[t]), size)
            ax.scatter([agent_col], [agent_row], s=40, color="white", edgecolors="black")
            goal_row, goal_col = divmod(int(goal_cells[goal]), size)
            ax.add_patch(
                patches.Rectangle((goal_col - 0.5, goal_row - 0.5), 1, 1, fill=False, color="red", lw=2)
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"step {t}")
            if column == 0:
                ax.set_ylabel(label)
    figure.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, shrink=0.8, label="P(goal)")
    figure.suptitle("Belief over goal candidates; agent white, true goal framed red")
    save(figure, path)


def stay_probabilities(path: pathlib.Path, stays: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """The two-step bar plot: P(stay) after rewarded / unrewarded trials, common vs rare, per agent.

    Args:
      stays: agent name -> ``(probs, se)``, each ``[2, 2]`` indexed [rewarded, common] as in
        ``metabelief.analysis.stay``.
    """
    figure, axes = subplots(1, len(stays), figsize=(3 * len(stays), 3.5), sharey=True, squeeze=False)
    for ax, (name, (probs, se)) in zip(axes[0], stays.items(), strict=True):
        for transition, (label, colour, offset) in enumerate(
            (("common", "tab:blue", -0.2), ("rare", "tab:red", 0.2))
        ):
            ax.bar(
                np.arange(2) + offset,
                probs[:, transition],
                width=0.4,
                color=colour,
                label=label,
                yerr=se[:, transition],
                capsize=3,
            )
        ax.set_xticks([0, 1], ["rewarded", "unrewarded"])
        ax.set_ylim(0.0, 1.15)
        ax.set_yticks(np.linspace(0.0, 1.0, 6))
        ax.set_title(name)
    axes[0, 0].set_ylabel("P(repeat first-stage action)")
    axes[0, -1].legend(loc="upper right", ncol=2, fontsize="small")
    save(figure, path)


def failure_summary(
    path: pathlib.Path,
    conditions: dict[str, dict],
    per_step: dict[str, tuple[np.ndarray, np.ndarray]],
    training_horizon: int,
) -> None:
    """Reward per step of the agent vs the Bayes-optimal agent per test condition, and whose posterior
    (training or test prior) the hidden state carries: the in-distribution read-out's error against
    each, and probes refitted on the test histories."""
    figure, (rewards, readout, refitted) = subplots(1, 3, figsize=(17, 4))
    colours = ("tab:blue", "tab:orange", "tab:purple", "tab:green", "tab:red")
    window = 5  # a running mean over steps, for legibility

    def smooth(x):
        return np.convolve(x, np.ones(window) / window, mode="valid")

    for (name, (agent, optimal)), colour in zip(per_step.items(), colours, strict=False):
        steps = np.arange(window, agent.shape[0] + 1)
        rewards.plot(steps, smooth(agent), color=colour, label=f"{name}: agent")
        rewards.plot(steps, smooth(optimal), color=colour, linestyle="--", label=f"{name}: Bayes-optimal")
    rewards.axvline(training_horizon, color="black", linewidth=1)
    rewards.set(xlabel="step", ylabel="mean reward (running mean of 5)", title="reward per step")
    rewards.legend(fontsize="x-small")

    for (name, condition), colour in zip(conditions.items(), colours, strict=False):
        by_time = condition["states"]["agent"]["readout"]["rmse_by_time"]
        steps = np.arange(1, len(by_time["training prior"]) + 1)
        readout.plot(steps, by_time["training prior"], color=colour, label=f"{name}: vs training prior")
        readout.plot(
            steps, by_time["test prior"], color=colour, linestyle=":", label=f"{name}: vs test prior"
        )
    readout.axvline(training_horizon, color="black", linewidth=1)
    readout.set(
        xlabel="step",
        ylabel="RMSE, read-out vs E[p | history]",
        title="the agent's belief: in-distribution read-out, frozen",
    )
    readout.legend(fontsize="xx-small")

    names = list(conditions)
    positions = np.arange(len(names))
    priors = (("training prior", "tab:purple"), ("test prior", "tab:olive"))
    for offset, (prior, colour) in zip((-0.2, 0.2), priors, strict=True):
        r2 = [conditions[name]["states"]["agent"]["r2_posterior_mean"][prior]["mlp"] for name in names]
        refitted.bar(positions + offset, r2, width=0.4, color=colour, label=f"posterior under the {prior}")
    refitted.set(
        ylabel="held-out R², hidden → E[p | history] (MLP)", title="what the state holds: probes refitted"
    )
    refitted.set_ylim(min(0.0, refitted.get_ylim()[0]), 1.0)
    refitted.set_xticks(positions, names, fontsize="x-small", rotation=20)
    refitted.legend(fontsize="small", loc="lower left")
    save(figure, path)


def intervention(path: pathlib.Path, per_seed: list[dict[str, dict]], title: str | None = None) -> None:
    """The causal test (``metabelief.analysis.intervention``), means over seeds. Left: the change
    of the log-odds of the target action at the push against the dose δ (the decoded belief shift
    of the push minimal in the activity's metric; every push has its Mahalanobis norm), for each
    push direction, beside random directions of the same norm (mean ± sd, grey) and what the
    agent's own observational sensitivity predicts for that belief shift (black). Right: causal /
    observational slope k steps after the push (1: the push moves behaviour as the belief does).

    Args:
      per_seed: one ``dose_response`` report per seed, as in ``results.json``
        (``{network: DoseResponse.to_dict()}``).
      title: the figure's title; by default the target's name.
    """
    figure, (now, later) = subplots(1, 2, figsize=(13, 5))
    names = list(per_seed[0])
    first = per_seed[0][names[0]]
    deltas = np.asarray(first["deltas"], dtype=float)
    now.axhline(0.0, color="gray", linewidth=0.8)
    random_mean = _seed_mean([seed[names[0]]["random"]["log_odds_mean"][0] for seed in per_seed])
    random_std = _seed_mean([seed[names[0]]["random"]["log_odds_std"][0] for seed in per_seed])
    now.fill_between(
        deltas, random_mean - random_std, random_mean + random_std, color="0.8",
        label=f"{names[0]}: random directions, mean ± sd",
    )  # fmt: skip
    slopes = [seed[names[0]]["observational_slope"] for seed in per_seed]
    if any(s is not None for s in slopes):
        observed = np.mean([s for s in slopes if s is not None])
        now.plot(
            deltas,
            observed * deltas,
            "k--",
            linewidth=1.5,
            label=f"{names[0]}: own sensitivity × δ ({observed:.3g} per unit)",
        )
    for index, name in enumerate(names):
        for push, style in _PUSH_STYLES.items():
            if index > 0 and push != "minimum_mahalanobis":
                continue
            pushes = [seed[name]["pushes"][push] for seed in per_seed]
            colour = _NETWORK_COLOURS[index % len(_NETWORK_COLOURS)]
            now.plot(deltas, _seed_mean([p["log_odds"][0] for p in pushes]), style, color=colour,
                     marker="o", markersize=3, label=f"{name}: {_PUSH_NAMES[push]}")  # fmt: skip
            ratios = _seed_mean([p["causal_to_observational"] for p in pushes])
            later.plot(
                np.arange(len(ratios)),
                ratios,
                style,
                color=colour,
                marker="o",
                label=f"{name}: {_PUSH_NAMES[push]}",
            )
    norm = np.mean([seed[names[0]]["mahalanobis_per_unit"] for seed in per_seed])
    now.set(
        xlabel=f"dose δ: decoded belief shift (Mahalanobis norm {norm:.1f} |δ| for every push)",
        ylabel="change of log-odds of the target action, at the push",
        title="at the push: pushes of equal size in the activity's metric",
    )
    later.axhline(1.0, color="black", linewidth=0.8, linestyle=":")
    later.axhline(0.0, color="gray", linewidth=0.8)
    later.set(
        xlabel="steps k after the push (teacher-forced on the recorded history)",
        ylabel="causal / observational slope (1 = as the belief moves it)",
        title="after the push: does the change persist?",
    )
    for axes in (now, later):
        axes.legend(fontsize="small", loc="best")
    figure.suptitle(f"{title or first.get('target', 'belief intervention')} ({len(per_seed)} seeds, means)")
    save(figure, path)


_PUSH_STYLES = {"minimum_mahalanobis": "-", "minimum_euclidean": "--", "encoding": ":"}
_PUSH_NAMES = {
    "minimum_mahalanobis": "push minimal in the activity's metric",
    "minimum_euclidean": "push minimal in the Euclidean metric",
    "encoding": "encoding direction",
}
_NETWORK_COLOURS = ("tab:blue", "tab:orange", "tab:green")


def _seed_mean(curves: list) -> np.ndarray:
    """The mean over seeds of curves with ``None`` for undefined points (NaN where no seed has one)."""
    values = np.array([[np.nan if v is None else v for v in curve] for curve in curves], dtype=float)
    defined = np.isfinite(values).sum(axis=0)
    return np.where(defined > 0, np.nansum(values, axis=0) / np.maximum(defined, 1), np.nan)
