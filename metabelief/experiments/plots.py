"""PNG plots written by the experiments (matplotlib, headless)."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence

import matplotlib
import matplotlib.cm as cm
import matplotlib.colors as colors
import matplotlib.lines as lines
import matplotlib.patches as patches
import matplotlib.ticker as ticker
import numpy as np
from matplotlib.figure import Figure

from metabelief.experiments import seeds
from metabelief.train.dynamics import Dynamics


def learning_curve(
    path: pathlib.Path, steps: np.ndarray, returns: np.ndarray, references: dict[str, float]
) -> Figure:
    """Mean episode return per update against agent steps, each seed thin and their mean bold
    (``returns`` ``[S, num_updates]``), with reference policies as lines."""
    figure, axes = subplots(figsize=(8, 4), layout="constrained")
    returns = np.atleast_2d(returns)
    for seed_returns in returns:
        axes.plot(steps, seed_returns, color="black", linewidth=0.5, alpha=0.35)
    final = returns.mean(axis=0)[-10:].mean()  # as ``final_training_return``: the last 10 updates
    label = (
        f"agent on its training tasks: mean of {returns.shape[0]} seeds (thin: each seed); "
        f"last 10 updates {final:.1f}"
    )
    axes.plot(steps, returns.mean(axis=0), color="black", linewidth=1.5, label=label)
    for (name, value), colour in zip(references.items(), ("tab:gray", "tab:blue", "tab:green"), strict=False):
        axes.axhline(value, linestyle="--", color=colour, label=f"{name} on held-out tasks ({value:.1f})")
    axes.set(
        xlabel="agent steps per seed",
        ylabel="mean return per episode",
        title="Training: the agent's return against reference policies",
    )
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), fontsize="small")
    save(figure, path)
    return figure


def dynamics(path: pathlib.Path, evaluated: Dynamics, title: str = "") -> Figure:
    """Return, decodability of the belief and state dissimilarity against updates, each seed thin and
    the mean bold, with each seed's update of reaching 90% of its way (markers) and the mean lag
    between decodability and return with its 95% interval over seeds (``metabelief.train.dynamics``)."""
    updates = np.asarray(evaluated.updates)
    panels = (
        ("return", ("return",), "mean return per episode (held-out tasks)"),
        ("r2_trained", ("r2_trained", "r2_untrained", "r2_input_only"), "held-out R², posterior means"),
        (
            "dissimilarity_agent_to_bayes",
            ("dissimilarity_agent_to_bayes", "dissimilarity_bayes_to_agent"),
            "linear state dissimilarity",
        ),
    )
    colours = ("black", "tab:orange", "tab:green")
    figure, axes_row = subplots(1, 3, figsize=(14, 4.2), layout="constrained")
    for axes, (marked, names, ylabel) in zip(axes_row, panels, strict=True):
        for name, colour in zip(names, colours, strict=False):
            values = evaluated.series[name]
            for seed_values in values:
                axes.plot(updates, seed_values, color=colour, linewidth=0.5, alpha=0.35)
            axes.plot(updates, np.nanmean(values, axis=0), color=colour, linewidth=1.5, label=name)
        reached = evaluated.reached(marked)
        seed_rows = np.arange(len(reached))
        at = [
            np.interp(u, updates, evaluated.series[marked][i])
            for i, u in zip(seed_rows, reached, strict=True)
        ]
        axes.plot(reached, at, "v", color="tab:red", label="90% of the way (each seed)")
        axes.set(xlabel="updates", ylabel=ylabel)
        axes.legend(fontsize="x-small")
    lag = seeds.interval(evaluated.reached("r2_trained") - evaluated.reached("return"))
    lag_text = "no lag: a series did not move" if lag["mean"] is None else f"{lag['mean']:+.0f} updates"
    if lag["low"] is not None:
        lag_text += f" [{lag['low']:+.0f}, {lag['high']:+.0f}]"
    figure.suptitle(
        f"{title}: during training, {len(seed_rows)} seeds (thin: each seed; bold: mean). "
        f"Decodability reaches 90% of its rise {lag_text} after the return (95% interval over seeds)"
    )
    save(figure, path)
    return figure


def decoded_belief_r2(decoded: Mapping[str, np.ndarray]) -> dict[str, float]:
    """R² of each network's read-out of the first belief feature against the exact one, pooled over
    every step of ``decoded`` (``decoded_beliefs``'s input): 1 - SSE / SST, as the probe report
    scores ``r2_per_dim`` (``metabelief.probes.score_arrays``)."""
    exact = np.asarray(decoded["exact"][..., 0], np.float64)
    total = np.sum((exact - exact.mean()) ** 2)
    return {
        name: float(1.0 - np.sum((exact - np.asarray(values[..., 0], np.float64)) ** 2) / total)
        for name, values in decoded.items()
        if name != "exact"
    }


def decoded_beliefs(
    path: pathlib.Path,
    decoded: dict[str, np.ndarray],
    episodes: int = 3,
    quantity: str = "posterior mean of arm 0",
) -> Figure:
    """The belief read out of the hidden state against the exact one (its first feature,
    ``quantity``): over a few test episodes (left) and at every test step (right, with each
    network's R²).

    Args:
      decoded: ``"exact"`` -> the exact belief features ``[T, n, D]``; each network's name -> its
        linear read-out of them on the same test steps (``probing.probe_networks``'s ``decoded``).
    """
    exact = decoded["exact"][..., 0]  # [T, n]
    names = [name for name in decoded if name != "exact"]
    r2 = decoded_belief_r2(decoded)
    figure, (over_time, scatter) = subplots(1, 2, figsize=(12, 5), layout="constrained")
    time = np.arange(exact.shape[0])
    episode_colours = ("tab:blue", "tab:orange", "tab:green")[:episodes]
    styles = ("--", ":")
    for episode, colour in enumerate(episode_colours):
        over_time.plot(time, exact[:, episode], color=colour, linewidth=2)
        for name, style in zip(names, styles, strict=False):
            over_time.plot(time, decoded[name][:, episode, 0], style, color=colour, linewidth=1.2)
    line_key = [lines.Line2D([], [], color="black", linewidth=2, label="exact posterior")] + [
        lines.Line2D([], [], color="black", linestyle=style, label=f"read out of the {name} network")
        for name, style in zip(names, styles, strict=False)
    ]
    colour_key = [
        patches.Patch(color=colour, label=f"test episode {episode + 1}")
        for episode, colour in enumerate(episode_colours)
    ]
    over_time.legend(handles=line_key + colour_key, fontsize="small", loc="best")
    over_time.set(
        xlabel="step in episode", ylabel=quantity, title=f"over {len(episode_colours)} test episodes"
    )
    over_time.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    rows = np.random.default_rng(0).choice(exact.size, size=min(exact.size, 4000), replace=False)
    for name, colour in zip(names, ("tab:red", "tab:gray"), strict=False):
        decoded_first = decoded[name][..., 0].ravel()[rows]
        label = f"{name} network: R² {r2[name]:.2f}"
        scatter.scatter(exact.ravel()[rows], decoded_first, s=2, alpha=0.3, color=colour, label=label)
    scatter.plot([0, 1], [0, 1], color="black", linewidth=1, label="read-out = exact")
    scatter.set(
        xlabel=f"exact {quantity}",
        ylabel=f"{quantity}, read out of the hidden state",
        title=f"every test step ({exact.size:,}; R² over all of them)",
    )
    scatter.legend(markerscale=5, fontsize="small", loc="upper left")
    figure.suptitle(
        "Is the exact belief linearly decodable from the hidden state? Trained vs untrained network, "
        "ridge read-out fitted on other tasks"
    )
    save(figure, path)
    return figure


def r2_by_time(path: pathlib.Path, per_seed: Sequence[Mapping[str, Sequence[float | None]]]) -> Figure:
    """Held-out R^2 (hidden -> posterior means) at each step of the episode, per network: each
    seed thin, the mean over seeds bold (``per_seed``: one ``{network: [T]}`` per seed, e.g.
    ``protocol.r2_by_time`` of the seeds' probe reports)."""
    figure, axes = subplots(figsize=(7, 4.5), layout="constrained")
    for name, colour in zip(per_seed[0], ("tab:blue", "tab:orange", "tab:green"), strict=False):
        values = np.array(
            [[np.nan if v is None else v for v in seed[name]] for seed in per_seed], dtype=float
        )
        steps = np.arange(values.shape[1])
        for seed_values in values:
            axes.plot(steps, seed_values, color=colour, linewidth=0.5, alpha=0.35)
        defined = np.isfinite(values).sum(axis=0)
        mean = np.where(defined > 0, np.nansum(values, axis=0) / np.maximum(defined, 1), np.nan)
        label = (
            f"{name} network: mean of {len(per_seed)} seeds (thin: each seed); "
            f"mean over steps {np.nanmean(mean):.2f}"
        )
        axes.plot(steps, mean, color=colour, linewidth=1.5, label=label)
    axes.set(
        xlabel="step in episode",
        ylabel="held-out R² at this step",
        title="Linear read-out of the posterior means from the hidden state, trained vs untrained",
    )
    axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    axes.set_ylim(min(0.0, axes.get_ylim()[0]), 1.0)
    axes.legend(loc="lower left", fontsize="small")
    save(figure, path)
    return figure


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
) -> Figure:
    """The belief over goal candidates on the grid at a few steps of one episode, one row per source.

    Args:
      size: cells per side.
      goal_cells: ``[G]`` cell index of each candidate.
      walls: wall cell indices (drawn black).
      positions: ``[T]`` the agent's cell at each step (a white dot).
      goal: the true goal's candidate index (a red frame).
      beliefs: row label -> ``[T, G]`` probability of each candidate at each step: ``"exact"``
        the exact posterior, any other a network's read-out of it.
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
                ax.set_ylabel("exact posterior" if label == "exact" else f"read out of the\n{label} network")
    figure.colorbar(
        cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, shrink=0.8, label="P(goal is this cell)"
    )
    figure.suptitle(
        "Belief over the goal candidates during one test episode, exact vs read out of the hidden state\n"
        "agent: white dot; true goal: red frame; walls: black; cells that cannot be the goal: gray"
    )
    save(figure, path)
    return figure


def stay_probabilities(path: pathlib.Path, stays: dict[str, tuple[np.ndarray, np.ndarray]]) -> Figure:
    """The two-step bar plot: P(stay) after rewarded / unrewarded trials, common vs rare, per agent,
    each panel titled with its model-based and model-free index (``metabelief.analysis.stay``).

    Args:
      stays: agent name -> ``(probs, se)``, each ``[2, 2]`` indexed [rewarded, common] as in
        ``metabelief.analysis.stay``.
    """
    figure, axes = subplots(
        1, len(stays), figsize=(3.2 * len(stays), 4), sharey=True, squeeze=False, layout="constrained"
    )
    for ax, (name, (probs, se)) in zip(axes[0], stays.items(), strict=True):
        for transition, (label, colour, offset) in enumerate(
            (("common transition", "tab:blue", -0.2), ("rare transition", "tab:red", 0.2))
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
        ax.set_xlabel("last trial")
        ax.set_ylim(0.0, 1.15)
        ax.set_yticks(np.linspace(0.0, 1.0, 6))
        # The indices of metabelief.analysis.stay, from the probabilities drawn ([rewarded, common]).
        model_based = probs[0, 0] + probs[1, 1] - probs[0, 1] - probs[1, 0]
        model_free = probs[0, 0] + probs[0, 1] - probs[1, 0] - probs[1, 1]
        ax.set_title(f"{name}\nMB index {model_based:.2f}, MF index {model_free:.2f}", fontsize="medium")
    axes[0, 0].set_ylabel("P(repeat the first-stage choice)")
    axes[0, -1].legend(loc="upper right", fontsize="small")
    figure.suptitle(
        "Two-step task: how the last trial's reward and transition change the next first-stage choice "
        "(± 1 s.e.)"
    )
    save(figure, path)
    return figure


def failure_summary(
    path: pathlib.Path,
    conditions: dict[str, dict],
    per_step: dict[str, tuple[np.ndarray, np.ndarray]],
    training_horizon: int,
) -> Figure:
    """Reward per step of the agent vs the Bayes-optimal agent per test condition, and whose posterior
    (training or test prior) the hidden state carries: the in-distribution read-out's error against
    each, and probes refitted on the test histories. One colour per condition (the figure's legend,
    with its return gap), line styles keyed in each panel."""
    figure, (rewards, readout, refitted) = subplots(1, 3, figsize=(18, 5.5), layout="constrained")
    colours = ("tab:blue", "tab:orange", "tab:purple", "tab:green", "tab:red")
    window = 5  # a running mean over steps, for legibility

    def smooth(x):
        return np.convolve(x, np.ones(window) / window, mode="valid")

    for (agent, optimal), colour in zip(per_step.values(), colours, strict=False):
        steps = np.arange(window, agent.shape[0] + 1)
        rewards.plot(steps, smooth(agent), color=colour)
        rewards.plot(steps, smooth(optimal), color=colour, linestyle="--")
    rewards.set(
        xlabel="step in episode",
        ylabel=f"mean reward (running mean of {window} steps)",
        title="Reward per step under each test prior",
    )
    _style_key(rewards, {"agent": "-", "Bayes-optimal for the test prior": "--"}, training_horizon)

    for condition, colour in zip(conditions.values(), colours, strict=False):
        by_time = condition["states"]["agent"]["readout"]["rmse_by_time"]
        steps = np.arange(1, len(by_time["training prior"]) + 1)
        readout.plot(steps, by_time["training prior"], color=colour)
        readout.plot(steps, by_time["test prior"], color=colour, linestyle=":")
    readout.set(
        xlabel="step in episode",
        ylabel="RMSE of the read-out against E[p | history]",
        title="Whose posterior does the agent's state track?\n(the read-out fitted in distribution, frozen)",
    )
    key = {"E[p | history] under the training prior": "-", "... under the test prior": ":"}
    _style_key(readout, key, training_horizon)

    names = list(conditions)
    positions = np.arange(len(names))
    priors = (("training prior", "tab:gray"), ("test prior", "tab:olive"))
    for offset, (prior, colour) in zip((-0.2, 0.2), priors, strict=True):
        r2 = [conditions[name]["states"]["agent"]["r2_posterior_mean"][prior]["mlp"] for name in names]
        refitted.bar(
            positions + offset, r2, width=0.4, color=colour, label=f"E[p | history] under the {prior}"
        )
    refitted.set(
        ylabel="held-out R², hidden → posterior mean (MLP)",
        title="Which posterior does the state hold?\n(probes refitted on the test histories)",
    )
    refitted.set_ylim(min(0.0, refitted.get_ylim()[0]), 1.0)
    refitted.set_xticks(positions, names, fontsize="small", rotation=20)
    refitted.legend(fontsize="small", loc="lower left")
    condition_key = [
        lines.Line2D([], [], color=colour, linewidth=3, label=f"{name}: gap {condition['gap_fraction']:.0%}")
        for (name, condition), colour in zip(conditions.items(), colours, strict=False)
    ]
    figure.legend(
        handles=condition_key,
        loc="outside lower center",
        ncols=len(condition_key),
        fontsize="small",
        title="test condition: gap = (Bayes-optimal − agent) return, as a share of Bayes-optimal's",
        title_fontsize="small",
    )
    figure.suptitle("Out of distribution: the agent trained on one prior, tested on others")
    save(figure, path)
    return figure


def _style_key(axes, styles: dict[str, str], training_horizon: int) -> None:
    """A legend of the panel's line styles (label -> style) and the training horizon's line."""
    axes.axvline(training_horizon, color="black", linewidth=1)
    handles = [
        lines.Line2D([], [], color="black", linestyle=style, label=label) for label, style in styles.items()
    ]
    handles.append(lines.Line2D([], [], color="black", linewidth=1, label="end of the training episodes"))
    axes.legend(handles=handles, fontsize="small", loc="best")


# The terms of ``intervention``'s figure, printed under its panels.
INTERVENTION_TERMS = (
    "δ (dose): the shift of the decoded belief (the linear read-out of the whole memory) a push makes.",
    "Pushes: minimal in the activity's metric (Mahalanobis), minimal in the Euclidean metric, along "
    "the encoding direction; all of one Mahalanobis norm; random directions of that norm: the control.",
    "Response: change of the log-odds of the target action. Own sensitivity: a logistic fit of the "
    "agent's choices on the exact posterior. causal / observational = 1: the push acts as the belief does.",
)


def intervention(path: pathlib.Path, per_seed: list[dict[str, dict]], title: str | None = None) -> Figure:
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
    figure, (now, later) = subplots(1, 2, figsize=(13, 6.5), layout="constrained")
    names = list(per_seed[0])
    first = per_seed[0][names[0]]
    deltas = np.asarray(first["deltas"], dtype=float)
    now.axhline(0.0, color="lightgray", linewidth=0.8, zorder=0)
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
    later.axhline(0.0, color="lightgray", linewidth=0.8, zorder=0)
    later.set(
        xlabel="steps k after the push (teacher-forced on the recorded history)",
        ylabel="causal / observational slope (1 = as the belief moves it)",
        title="after the push: does the change persist?",
    )
    for axes in (now, later):
        axes.legend(fontsize="small", loc="best")
    figure.suptitle(f"{title or first.get('target', 'belief intervention')} ({len(per_seed)} seeds, means)")
    figure.text(0.5, 0.0, "\n".join(INTERVENTION_TERMS), ha="center", va="bottom", fontsize="small")
    figure.get_layout_engine().set(rect=(0.0, 0.1, 1.0, 0.9))  # room for the definitions
    save(figure, path)
    return figure


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
