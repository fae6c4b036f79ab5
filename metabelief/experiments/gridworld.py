"""``metabelief run gridworld``: explore, then exploit, in a hidden-goal gridworld.

The goal is one of the 24 free cells of a 5 x 5 grid (uniform); reaching it pays 1 and puts the
agent back at the centre, 50 steps per episode. The exact belief is the uniform posterior over
the candidates not yet ruled out.

1. train the LSTM actor-critic with A2C on fresh tasks every update;
2. on held-out tasks, compare its return with random moves and the belief-greedy explorer, which
   walks to the nearest candidate still possible (``metabelief.baselines.nearest_candidate``);
3. probe its hidden state for the posterior over goals, trained vs untrained network on the same
   histories, every R^2 on held-out test tasks, and draw the decoded belief on the grid.

``run`` returns ``ExperimentResults`` with one ``GridworldSeed`` per seed (``results.json``'s keys:
``metabelief.experiments.results``).
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from metabelief import baselines, train
from metabelief.experiments import fractions, output, plots, protocol, seeds
from metabelief.experiments.probing import ProbeReport, split_sizes
from metabelief.experiments.results import ExperimentResults, SeedResult
from metabelief.rollout import split_lanes
from metabelief.tasks import Gridworld
from metabelief.tasks.validation import integer_at_least

NAME = "gridworld"
SUMMARY = "LSTM A2C in a 5x5 hidden-goal gridworld; returns vs the belief-greedy explorer; goal-belief probes"


@dataclasses.dataclass(frozen=True)
class GridworldConfig:
    """The experiment; ``train`` holds the agent and A2C settings."""

    train: train.TrainConfig = train.TrainConfig(
        family="gridworld",
        family_args=(("size", 5), ("horizon", 50)),
        hidden_size=64,
        num_tasks=1024,
        num_updates=600,
        updates_per_chunk=25,
        checkpoints=11,  # evaluations during training (results.json: seeds[i].train.dynamics)
        learning_rate=5e-3,
        anneal_learning_rate=False,
        num_seeds=3,
    )
    eval_tasks: int = 4096  # held-out tasks for returns and probes (1/2 fit, 1/4 validate, 1/4 test)
    mlp_steps: int = 2000

    def __post_init__(self):
        protocol.check_train(self.train, Gridworld, NAME)
        object.__setattr__(self, "eval_tasks", protocol.check_eval_tasks(self.eval_tasks))
        object.__setattr__(self, "mlp_steps", integer_at_least("mlp_steps", self.mlp_steps, 1))

    @classmethod
    def quick(cls) -> GridworldConfig:
        """A smoke-test size (about a minute on a 2-core CPU); the thresholds are not expected to hold."""
        return cls(train=protocol.quick_train(cls().train), eval_tasks=128, mlp_steps=100)


@dataclasses.dataclass(frozen=True)
class GridworldSeed(SeedResult):
    """One seed's entry: its returns (``SeedResult``) and the probes of its agent's state."""

    return_fraction_random_to_belief_greedy: float  # (agent - random) / (belief_greedy - random)
    return_fraction_random_to_belief_greedy_se: float  # its s.e. over the held-out tasks (``fractions``)
    probe: ProbeReport


def run(config: GridworldConfig, out_dir: pathlib.Path, *, progress: bool = True) -> ExperimentResults:
    """Runs the experiment, writes ``results.json``, the plots and the agents into ``out_dir``."""
    family = config.train.make_family()
    references = {
        "random": baselines.random_policy(family),
        "belief_greedy": baselines.nearest_candidate(family),
    }
    trained, evaluations = protocol.train_and_evaluate(
        config.train, config.eval_tasks, references, out_dir, progress=progress
    )
    per_seed, decoded = [], None
    for evaluation in evaluations:
        _, probe, seed_decoded = protocol.probe_trained_and_untrained(evaluation, config.mlp_steps)
        decoded = decoded or seed_decoded  # the first seed's decoded beliefs are drawn
        fraction, fraction_se = fractions.between_references(evaluation, "random", "belief_greedy")
        per_seed.append(
            GridworldSeed.of(
                evaluation,
                return_fraction_random_to_belief_greedy=fraction,
                return_fraction_random_to_belief_greedy_se=fraction_se,
                probe=probe,
            )
        )
    results = ExperimentResults.of(NAME, protocol.config_dict(config), trained, per_seed)
    output.write_json(out_dir / "results.json", results.to_dict())

    labels = {"random": "random", "belief_greedy": "belief-greedy explorer"}
    protocol.plot_evaluation_learning_curve(
        out_dir / "learning_curve.png", config.train, trained, evaluations[0], labels
    )
    plots.r2_by_time(
        out_dir / "probe_r2_by_time.png", protocol.r2_by_time([entry.probe for entry in per_seed])
    )
    _plot_goal_beliefs(out_dir / "goal_belief.png", family, evaluations[0], decoded)
    return results


def _plot_goal_beliefs(path: pathlib.Path, family, evaluation: protocol.Evaluation, decoded: dict) -> None:
    """One held-out test episode in which the agent finds the goal late enough to show the search."""
    history = evaluation.history
    test = {  # the probes' test tasks, which ``decoded`` covers
        name: np.asarray(split_lanes(getattr(history, name), split_sizes(history.actions.shape[1]))[2])
        for name in ("rewards", "obs", "truth")
    }
    rewards = test["rewards"]  # [T, n_test]
    found = rewards.argmax(axis=0)  # first rewarded step (0 when never rewarded)
    candidates = np.flatnonzero((rewards.max(axis=0) > 0) & (found >= 6))
    episode = int(candidates[0]) if candidates.size else 0
    first = int(found[episode])
    times = sorted({0, first // 3, 2 * first // 3, first, first + 1, family.horizon - 1})
    positions = test["obs"][:-1].argmax(axis=-1)[:, episode]
    goal = int(test["truth"][0].argmax(axis=-1)[episode])
    beliefs = {
        name: np.clip(decoded[name][:, episode], 0.0, 1.0) for name in ("exact", "trained", "untrained")
    }
    walls = [r * family.size + c for r, c in family.walls]
    plots.goal_beliefs(path, family.size, family.goal_cells(), walls, positions, goal, beliefs, times)


def table(results: ExperimentResults) -> str:
    """The printed summary over seeds: returns, then held-out probe R^2 for the trained and
    untrained network."""
    summary = results.summary
    lines = [
        protocol.header(results, "5 x 5 hidden goal, horizon 50"),
        "",
        protocol.returns_table(summary),
        "agent, % of the way from random to the belief-greedy explorer: "
        + seeds.format_interval(seeds.percent(summary["return_fraction_random_to_belief_greedy"]), ".0f"),
        "",
        protocol.probe_table(summary["probe"]),
        "",
        protocol.controls_table(summary["probe"]["controls"]),
    ]
    return "\n".join(lines)
