"""The agents table: each memory model and algorithm through the same experiment, one row each.

For every agent (``--agents``, each ``cell[:algorithm[:predictive_coef]]``, e.g. ``lstm``,
``gru:ppo``, ``lstm:a2c:0.5``) runs ``metabelief run bandit`` or ``two-step`` with that agent and
the experiment's own settings otherwise (``--seeds``, ``--updates`` and ``--num-tasks`` override
them alike for every row), then prints one markdown row per agent, each figure the mean over seeds
with its 95% interval from the run's ``summary`` (``metabelief.experiments.interval_rules``;
two-step's return fraction: Student's t):

* return: % of the way from random to the reference (Thompson on the bandit, belief-greedy, which
  is Bayes-optimal there, on two-step);
* hidden -> posterior means, held-out R^2: trained, trained - untrained (the same network at its
  initial weights, teacher forced on the same histories) and the input-only control (the last k
  inputs and the time step, no network);
* bandit only, the state-machine simulation (Mikulik et al. 2020), linear maps: the state
  dissimilarity agent -> Bayes and Bayes -> agent on the agent's own histories (0 = the map is
  exact, 1 = no better than the mean).

Usage: ``python benchmarks/agents_table.py bandit --agents lstm gru rnn lru oracle --seeds 5``.
Each run's ``results.json`` is kept under ``--out``; ``table.md`` and ``table.json`` beside them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time

import jax

from metabelief.experiments import bandit, seeds, two_step
from metabelief.train.config import TrainConfig, with_algorithm

EXPERIMENTS = {"bandit": (bandit, bandit.BanditConfig), "two-step": (two_step, two_step.TwoStepConfig)}


def agent_config(config: TrainConfig, spec: str) -> TrainConfig:
    """``config`` with the agent of ``spec``, ``"gru:ppo:0.5"``: cell gru, trained by PPO (with
    PPO's learning rate and updates, ``metabelief.train.config.with_algorithm``), predictive
    objective at weight 0.5."""
    cell, *rest = spec.split(":")
    config = dataclasses.replace(config, cell=cell)
    if rest:
        config = with_algorithm(config, rest[0])
    if len(rest) > 1:
        config = dataclasses.replace(config, predictive_coef=float(rest[1]))
    return config


def row(experiment: str, results: dict) -> dict:
    """The table's figures (intervals over seeds) from one run's ``results.json``."""
    summary, per_seed = results["summary"], results["seeds"]
    controls = summary["probe"]["controls"]
    if experiment == "bandit":
        fraction = summary["return_fraction_random_to_thompson"]
    else:
        fraction = seeds.interval(
            [
                (s["reward_per_trial"]["agent"] - s["reward_per_trial"]["random"])
                / (s["reward_per_trial"]["belief_greedy"] - s["reward_per_trial"]["random"])
                for s in per_seed
            ]
        )
    out = {
        "return_fraction": fraction,
        "r2_trained": controls["hidden_and_memory"]["trained"]["hidden"]["r2_posterior_mean"],
        "r2_trained_minus_untrained": controls["headline"]["trained_minus_untrained"],
        "r2_input_only": controls["input_only"][-1]["r2_posterior_mean"],
        "r2_memory": controls["hidden_and_memory"]["trained"]["memory"]["r2_posterior_mean"],
    }
    if "state_machine" in summary:
        trained = summary["state_machine"]["trained"]["agent"]  # on the agent's own histories
        for direction in ("agent_to_bayes", "bayes_to_agent"):
            linear = trained[direction]["linear"]
            out[f"state_{direction}"] = linear["state_dissimilarity"]
            out[f"output_tv_{direction}"] = linear["output"]["undiscounted"]["total_variation"]["mapped"]
    return out


COLUMNS = {
    "return_fraction": ("return, % random → reference", ".0f"),
    "r2_trained": ("R² hidden → means", ".3f"),
    "r2_trained_minus_untrained": ("trained − untrained", "+.3f"),
    "r2_input_only": ("input only", ".3f"),
    "r2_memory": ("R² whole memory", ".3f"),
    "state_agent_to_bayes": ("state dissim. agent → Bayes", ".3f"),
    "state_bayes_to_agent": ("Bayes → agent", ".3f"),
}


def markdown(rows: dict[str, dict]) -> str:
    columns = [name for name in COLUMNS if any(name in figures for figures in rows.values())]
    lines = ["| agent | " + " | ".join(COLUMNS[name][0] for name in columns) + " |"]
    lines.append("|---" * (len(columns) + 1) + "|")
    for agent, figures in rows.items():
        cells = []
        for name in columns:
            value = figures.get(name)
            if value is None:
                cells.append("")
            else:
                value = seeds.percent(value) if name == "return_fraction" else value
                cells.append(seeds.format_interval(value, COLUMNS[name][1]))
        lines.append(f"| {agent} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=sorted(EXPERIMENTS))
    parser.add_argument("--agents", nargs="+", default=["lstm", "gru", "rnn", "lru", "oracle"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--updates", type=int)
    parser.add_argument("--num-tasks", type=int)
    parser.add_argument("--out", default="runs/agents-table")
    args = parser.parse_args()
    module, config_type = EXPERIMENTS[args.experiment]
    out = pathlib.Path(args.out) / args.experiment
    out.mkdir(parents=True, exist_ok=True)
    overrides = {"num_seeds": args.seeds}
    if args.updates:
        overrides["num_updates"] = args.updates
    if args.num_tasks:
        overrides["num_tasks"] = args.num_tasks
    rows = {}
    for spec in args.agents:
        base = config_type()
        trained_by = agent_config(dataclasses.replace(base.train, **overrides), spec)
        if args.updates:  # the updates asked for hold for every algorithm
            trained_by = dataclasses.replace(trained_by, num_updates=args.updates)
        config = dataclasses.replace(base, train=trained_by)
        start = time.perf_counter()
        results = module.run(config, out / spec.replace(":", "-"), progress=False).to_dict()
        rows[spec] = row(args.experiment, results)
        updates, rate = config.train.num_updates, config.train.learning_rate
        print(f"{spec}: {updates} updates at {rate}, {time.perf_counter() - start:.0f} s", flush=True)
        (out / "table.json").write_text(json.dumps(rows, indent=2) + "\n")
    device = jax.devices()[0]
    text = (
        f"{args.experiment}, {args.seeds} seeds, {device.platform} ({device.device_kind}); "
        f"train: {overrides}\n\n" + markdown(rows)
    )
    (out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
