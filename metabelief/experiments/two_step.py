"""``metabelief run two-step``: why a model-free meta-RL agent looks model-based.

Wang et al. (2018) trained an LSTM with a model-free algorithm (A2C) on the two-step task and
found the "model-based" signature in its choices: after a reward, it repeats its first-stage
action when the transition was common and switches when it was rare. Alver & Precup (2021)
explain it with the belief view: acting on the exact belief over which second-stage state is rich
produces exactly that signature. Here, on the same held-out tasks:

1. the trained LSTM (48 units, A2C, gamma 0.9, episodes of 100 trials);
2. the belief-greedy agent, which takes the action with the higher posterior expected reward;
3. a model-free TD agent (Q-learning on the first-stage actions from the final reward);
4. random choices;

with reward per trial, the four stay probabilities (s.e. over blocks of held-out tasks) and the
model-based index, and the hidden -> belief probes of the trained vs the untrained network.

``run`` returns ``TwoStepResults`` with one ``TwoStepSeed`` per seed (``results.json``'s keys:
``metabelief.experiments.results``).
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import numpy as np

from metabelief import analysis, baselines, train
from metabelief.analysis import intervention
from metabelief.analysis.records import Record
from metabelief.experiments import output, plots, protocol, seeds
from metabelief.experiments.probing import ProbeReport, split_sizes
from metabelief.experiments.results import ExperimentResults, SeedResult
from metabelief.tasks import TwoStep
from metabelief.tasks.validation import integer_at_least, non_negative_float, positive_float

NAME = "two-step"
SUMMARY = "LSTM A2C on the two-step task; stay probabilities vs belief-greedy and model-free agents; probes"

AGENTS = ("agent", "belief_greedy", "model_free", "random")
CELLS = ("rewarded_common", "rewarded_rare", "unrewarded_common", "unrewarded_rare")


@dataclasses.dataclass(frozen=True)
class TwoStepConfig:
    """The experiment; ``train`` holds the agent and A2C settings (Wang et al. 2018: 48 units, gamma 0.9)."""

    train: train.TrainConfig = train.TrainConfig(
        family="two_step",
        family_args=(("num_trials", 100),),
        hidden_size=48,
        gamma=0.9,
        num_tasks=1024,
        num_updates=600,
        updates_per_chunk=25,
        checkpoints=11,  # evaluations during training (results.json: seeds[i].train.dynamics)
        learning_rate=5e-3,
        anneal_learning_rate=False,
        num_seeds=3,
    )
    eval_tasks: int = 4096  # held-out tasks for returns, stay probabilities and probes
    stay_blocks: int = 16  # blocks of held-out tasks the stay standard errors are taken over
    # Learning rate 1: the Q-values hold each action's last outcome. With slower learning rates the
    # stay analysis of a Q-learner shows a spurious interaction (Akam et al. 2015): at 0.5 its
    # "model-based index" is about 0.3 on these tasks, because a rare, unrewarded trial mostly
    # follows a good action whose Q-value earlier rewards keep high.
    model_free_learning_rate: float = 1.0
    model_free_inverse_temperature: float = 5.0
    mlp_steps: int = 2000
    intervention_doses: int = intervention.DEFAULT_NUM_DOSES  # pushes from -0.3 to 0.3 (dose_grid)
    intervention_random: int = intervention.DEFAULT_NUM_RANDOM  # random directions of the same norm

    def __post_init__(self):
        protocol.check_train(self.train, TwoStep, NAME)
        eval_tasks = protocol.check_eval_tasks(self.eval_tasks)
        stay_blocks = integer_at_least("stay_blocks", self.stay_blocks, 2)
        if eval_tasks % stay_blocks:
            raise ValueError(f"stay_blocks must divide eval_tasks {eval_tasks}, got {stay_blocks!r}")
        learning_rate = positive_float("model_free_learning_rate", self.model_free_learning_rate)
        if learning_rate > 1.0:
            raise ValueError(f"model_free_learning_rate must lie in (0, 1], got {learning_rate!r}")
        inverse_temperature = non_negative_float(
            "model_free_inverse_temperature", self.model_free_inverse_temperature
        )
        for name, value in (
            ("eval_tasks", eval_tasks),
            ("stay_blocks", stay_blocks),
            ("model_free_learning_rate", learning_rate),
            ("model_free_inverse_temperature", inverse_temperature),
            ("mlp_steps", integer_at_least("mlp_steps", self.mlp_steps, 1)),
            ("intervention_doses", integer_at_least("intervention_doses", self.intervention_doses, 2)),
            ("intervention_random", integer_at_least("intervention_random", self.intervention_random, 2)),
        ):
            object.__setattr__(self, name, value)

    @classmethod
    def quick(cls) -> TwoStepConfig:
        """A smoke-test size (about a minute on a 2-core CPU); the thresholds are not expected to hold."""
        return cls(
            train=protocol.quick_train(cls().train),
            eval_tasks=128,
            stay_blocks=4,
            mlp_steps=100,
            intervention_doses=3,
            intervention_random=2,
        )


@dataclasses.dataclass(frozen=True)
class StayFigures(Record):
    """One agent's stay analysis: means and standard errors over blocks of held-out tasks."""

    probs: dict[str, float]  # P(stay) after each of ``CELLS``
    probs_se: dict[str, float]
    model_based_index: float  # (rewarded_common + unrewarded_rare) - (rewarded_rare + unrewarded_common)
    model_based_index_se: float
    model_free_index: float  # (rewarded_common + rewarded_rare) - (unrewarded_common + unrewarded_rare)
    model_free_index_se: float


@dataclasses.dataclass(frozen=True)
class TwoStepSeed(SeedResult):
    """One seed's entry: its returns (``SeedResult``), reward per trial, the stay analysis of its
    agent and of each reference agent, and what its agent's state holds and does."""

    reward_per_trial: dict[str, float]  # "agent" and each reference
    reward_per_trial_se: dict[str, float]  # s.e. over held-out tasks
    stay: dict[str, StayFigures]  # each of ``AGENTS``
    probe: ProbeReport
    intervention: dict[str, intervention.DoseResponse]  # per network


@dataclasses.dataclass(frozen=True)
class TwoStepResults(ExperimentResults):
    """``ExperimentResults`` and the task family played."""

    family: str  # the family's repr


def run(config: TwoStepConfig, out_dir: pathlib.Path, *, progress: bool = True) -> TwoStepResults:
    """Runs the experiment, writes ``results.json``, the plots and the agent into ``out_dir``."""
    family = config.train.make_family()
    references = {
        "belief_greedy": baselines.belief_greedy(family),
        "model_free": baselines.QLearning(
            family.num_actions,
            learning_rate=config.model_free_learning_rate,
            inverse_temperature=config.model_free_inverse_temperature,
        ),
        "random": baselines.random_policy(family),
    }
    trained, evaluations = protocol.train_and_evaluate(
        config.train, config.eval_tasks, references, out_dir, progress=progress
    )
    num_trials = family.num_trials

    def stay_summary(played):
        return _stay_summary(played.actions, played.obs[1:], played.rewards, config.stay_blocks)

    # The references play the same tasks for every seed: their stay analysis runs once.
    reference_stays = {name: stay_summary(played) for name, played in evaluations[0].references.items()}
    per_seed, decoded, stays = [], None, {}
    for evaluation in evaluations:
        seed_stays = {"agent": stay_summary(evaluation.history)} | reference_stays
        stays = stays or seed_stays  # the first seed's stay probabilities are drawn
        networks, probe, seed_decoded = protocol.probe_trained_and_untrained(evaluation, config.mlp_steps)
        decoded = decoded or seed_decoded
        per_seed.append(
            TwoStepSeed.of(
                evaluation,
                reward_per_trial={name: mean / num_trials for name, (mean, _) in evaluation.returns.items()},
                reward_per_trial_se={name: se / num_trials for name, (_, se) in evaluation.returns.items()},
                stay={name: _stay_figures(summary) for name, summary in seed_stays.items()},
                probe=probe,
                intervention=intervention.dose_response(
                    family,
                    evaluation.agent,
                    networks,
                    evaluation.history,
                    split_sizes(config.eval_tasks),
                    target=intervention.two_step_target(family),
                    key=jax.random.fold_in(evaluation.probe_key, 3),  # 2 draws the controls' probes
                    deltas=intervention.dose_grid(config.intervention_doses),
                    num_random=config.intervention_random,
                ),
            )
        )
    results = TwoStepResults.of(NAME, protocol.config_dict(config), trained, per_seed, family=repr(family))
    output.write_json(out_dir / "results.json", results.to_dict())

    labels = {"belief_greedy": "belief-greedy", "model_free": "model-free TD", "random": "random"}
    protocol.plot_evaluation_learning_curve(
        out_dir / "learning_curve.png", config.train, trained, evaluations[0], labels
    )
    plots.stay_probabilities(
        out_dir / "stay_probabilities.png",
        {
            name: (np.asarray(s.probs), np.asarray(s.probs_se))
            for name, s in stays.items()
            if name != "random"
        },
    )
    plots.decoded_beliefs(out_dir / "decoded_belief.png", decoded, quantity="P(A is rich)")
    plots.r2_by_time(
        out_dir / "probe_r2_by_time.png", protocol.r2_by_time([entry.probe for entry in per_seed])
    )
    plots.intervention(
        out_dir / "intervention.png",
        [entry.to_dict()["intervention"] for entry in per_seed],
        title="push the decoded P(A rich) by δ",
    )
    return results


def _stay_summary(actions, reached, rewards, blocks: int) -> analysis.StaySummary:
    """Stay probabilities of each block of tasks, then their mean and standard error over blocks."""

    def by_block(array):  # [T, N, ...] -> [blocks, T, N / blocks, ...]
        return array.reshape(array.shape[0], blocks, -1, *array.shape[2:]).swapaxes(0, 1)

    per_block = jax.vmap(analysis.stay_probabilities)(by_block(actions), by_block(reached), by_block(rewards))
    return analysis.summarize_runs(per_block)


def _stay_figures(summary: analysis.StaySummary) -> StayFigures:
    probs, se = np.asarray(summary.probs).ravel(), np.asarray(summary.probs_se).ravel()
    return StayFigures(
        probs=dict(zip(CELLS, map(float, probs), strict=True)),
        probs_se=dict(zip(CELLS, map(float, se), strict=True)),
        model_based_index=float(summary.model_based_index),
        model_based_index_se=float(summary.model_based_index_se),
        model_free_index=float(summary.model_free_index),
        model_free_index_se=float(summary.model_free_index_se),
    )


def table(results: TwoStepResults) -> str:
    """The printed summary over seeds: reward per trial, stay probabilities and indices, probe R^2.

    The reference agents play the same held-out tasks for every seed, so their figures are one
    value each; the agent's are mean [95% interval] over seeds.
    """
    summary = results.summary
    reward, stay = summary["reward_per_trial"], summary["stay"]
    stay_rows = [
        ["P(stay) after", "rew-common", "rew-rare", "unrew-common", "unrew-rare", "MB index", "MF index"]
    ]
    for name in AGENTS:
        cells = [seeds.format_interval(stay[name]["probs"][cell]) for cell in CELLS]
        indices = [
            seeds.format_interval(stay[name][index]) for index in ("model_based_index", "model_free_index")
        ]
        stay_rows.append([name, *cells, *indices])
    gap = seeds.summarize(
        [entry.reward_per_trial["agent"] - entry.reward_per_trial["belief_greedy"] for entry in results.seeds]
    )
    lines = [
        protocol.header(results, f"two-step task ({results.family})"),
        "",
        output.format_table(
            [["reward per trial", "mean [95% CI over seeds]", "s.e. over tasks"]]
            + [
                [
                    name,
                    seeds.format_interval(reward[name]),
                    seeds.format_interval(summary["reward_per_trial_se"][name]),
                ]
                for name in AGENTS
            ]
        ),
        f"agent - belief_greedy, per trial: {seeds.format_interval(gap, '+.3f')}",
        "",
        output.format_table(stay_rows),
        "(the reference agents' stay figures: s.e. over task blocks in results.json)",
        "",
        protocol.probe_table(summary["probe"]),
        "",
        protocol.controls_table(summary["probe"]["controls"], ["P(A rich)"]),
        "",
        protocol.intervention_table(summary["intervention"]),
    ]
    return "\n".join(lines)
