"""The README's table of the literature's families: ``metabelief run family`` on each, one row each.

Runs ``metabelief run family NAME`` (its defaults: LSTM, A2C, 5 seeds; ``--seeds N``) for every
family given, keeps each run's ``results.json`` under ``--out``, and prints one markdown row per family, each
agent figure the mean over seeds with its 95% interval from the run's ``summary`` (Student's t
for returns, the bootstrap for R², ``metabelief.experiments.interval_rules``):

* return per episode: the agent's, then each reference policy's on the same held-out tasks
  (random, belief-greedy, the family's own references, the Bayes-optimal policy where the exact
  DP runs; one value each, the same tasks for every seed);
* hidden -> posterior means, held-out R^2: trained, the untrained network (its initial weights,
  teacher forced on the same histories), the input-only control (the last k inputs and the
  time step, no network) and exponential traces of the inputs (an untrained reservoir).

Usage: ``python benchmarks/families_table.py oracle_bandit tiger latent_goal_cart markov_bandit
--seeds 10``;
``--algorithm ppo`` and ``--predictive 0.5`` train every row's agent that way (PPO with its own
learning rate and updates, ``metabelief.train.config.with_algorithm``); ``--from-runs`` prints the
table from existing run folders (``--out``) without training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib

from metabelief.experiments import family, seeds
from metabelief.train.config import with_algorithm


def row(name: str, results: dict) -> str:
    """One markdown row from a ``run family`` ``results.json`` ("–" for the exponential-traces
    control in a run that predates it)."""
    summary = results["summary"]
    returns = summary["return"]
    references = [key for key in returns if key != "agent"]
    reference_cells = "; ".join(f"{key.replace('_', ' ')} {returns[key]['mean']:.2f}" for key in references)
    probe = summary["probe"]
    r2 = {network: probe["networks"][network]["posterior_mean"]["r2"] for network in ("trained", "untrained")}
    input_only = probe["controls"]["input_only"][-1]["r2_posterior_mean"]
    traces = probe["controls"].get("no_learning", {}).get("traces")
    traces_cell = seeds.format_interval(traces["r2_posterior_mean"]) if traces else "–"
    return (
        f"| `{name}` | {len(results['seeds'])} | {seeds.format_interval(returns['agent'], '.2f')} | "
        f"{reference_cells} | {seeds.format_interval(r2['trained'])} | "
        f"{seeds.format_interval(r2['untrained'])} | {seeds.format_interval(input_only)} | {traces_cell} |"
    )


HEADER = (
    "| family | seeds | LSTM return [95% CI] | references (same tasks) | R² trained | R² untrained | "
    "R² input only | R² traces |\n|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="+")
    parser.add_argument("--out", default="runs/families-table")
    parser.add_argument("--algorithm", default="a2c", help="a2c (default) or ppo")
    parser.add_argument("--predictive", type=float, default=0.0, help="predictive objective's weight")
    parser.add_argument("--seeds", type=int, help="agents trained together (default: the family's config)")
    parser.add_argument("--from-runs", action="store_true", help="print from existing runs, no training")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    rows = []
    for name in args.families:
        run_dir = out / name
        if not args.from_runs:
            config = family.FamilyConfig.of(name)
            trained = with_algorithm(config.train, args.algorithm)
            config = dataclasses.replace(
                config,
                train=dataclasses.replace(
                    trained, predictive_coef=args.predictive, num_seeds=args.seeds or trained.num_seeds
                ),
            )
            print(family.table(family.run(config, run_dir)))
        rows.append(row(name, json.loads((run_dir / "results.json").read_text())))
    table = "\n".join([HEADER, *rows])
    (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
