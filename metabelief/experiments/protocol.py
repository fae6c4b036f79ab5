"""The steps every experiment shares: train, save the agent, play the held-out tasks with the
trained agent and with reference belief policies, and the common part of ``results.json``."""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import numpy as np

from metabelief import baselines, train
from metabelief.agents.lstm import RecurrentAgent
from metabelief.experiments import output, plots
from metabelief.experiments.probing import probe_networks
from metabelief.rollout import Trajectory, rollout
from metabelief.tasks.base import TaskFamily
from metabelief.testing.random_rollout import RandomRollout, sample_tasks


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """A trained agent and reference policies on the same held-out tasks."""

    family: TaskFamily
    agent: RecurrentAgent
    trained: train.TrainResult
    history: Trajectory  # the trained agent on the held-out tasks, beliefs in lockstep
    references: dict[str, RandomRollout]  # each reference policy on the same tasks
    returns: dict[str, tuple[float, float]]  # "agent" and each reference: mean and s.e. per episode
    probe_key: jax.Array  # for the probes of ``history``

    def mean_return(self, name: str) -> float:
        return self.returns[name][0]


def train_and_save(
    config: train.TrainConfig, agent_dir: pathlib.Path, *, progress: bool = True
) -> train.TrainResult:
    """Trains with ``config`` and saves the agent in ``agent_dir``; returns the ``TrainResult``."""
    trained = train.train(config, progress=progress)
    train.save_agent(agent_dir, trained.params, config)
    return trained


def held_out_key(config: train.TrainConfig) -> jax.Array:
    """The key of the held-out tasks: derived from the seed, never used by training."""
    return jax.random.fold_in(jax.random.key(config.seed), 1)


def train_stats(trained: train.TrainResult) -> dict:
    """How long training took and how fast it ran, for ``results.json``."""
    return {
        "seconds": trained.seconds,
        "compile_seconds": trained.compile_seconds,
        "agent_steps_per_second": trained.agent_steps_per_second,
    }


def train_and_evaluate(
    config: train.TrainConfig,
    eval_tasks: int,
    references: dict[str, baselines.BeliefPolicy],
    out_dir: pathlib.Path,
    *,
    progress: bool = True,
) -> Evaluation:
    """Trains with ``config``, saves the agent in ``out_dir / "agent"`` and plays held-out tasks.

    The held-out tasks come from a key training never used; the agent and every reference policy
    play the same ``eval_tasks`` tasks, each with its own random stream.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    family, agent = config.make_family(), config.make_agent()
    trained = train_and_save(config, out_dir / "agent", progress=progress)
    task_key, agent_key, *policy_keys, probe_key = jax.random.split(held_out_key(config), 3 + len(references))
    tasks = sample_tasks(family, task_key, eval_tasks)
    history = jax.jit(rollout, static_argnums=(0, 1))(family, agent, trained.params, agent_key, tasks)
    run_policy = jax.jit(baselines.run_policy, static_argnums=(0, 1))
    played = {
        name: run_policy(family, policy, key, tasks)
        for (name, policy), key in zip(references.items(), policy_keys, strict=True)
    }
    returns = {"agent": output.mean_and_se(history.rewards.sum(axis=0))}
    returns |= {name: output.mean_and_se(rollout.rewards.sum(axis=0)) for name, rollout in played.items()}
    return Evaluation(family, agent, trained, history, played, returns, probe_key)


def quick_train(config: train.TrainConfig) -> train.TrainConfig:
    """The smoke-test size of an experiment's training: seconds, not minutes."""
    return dataclasses.replace(config, num_tasks=128, num_updates=20, updates_per_chunk=10)


def check_eval_tasks(eval_tasks: int) -> None:
    """Held-out tasks are cut 1/2 fit, 1/4 validate, 1/4 test: at least 16 of them."""
    if eval_tasks < 16:
        raise ValueError(f"eval_tasks must be >= 16, got {eval_tasks!r}")


def config_dict(config) -> dict:
    """An experiment config as JSON-ready fields (``train`` as ``TrainConfig.to_dict``)."""
    fields = {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}
    return fields | {"train": config.train.to_dict()}


def probe_trained_and_untrained(evaluation: Evaluation, mlp_steps: int) -> tuple[dict, dict, dict]:
    """``probe_networks`` on the held-out history, trained vs initial weights.

    Returns ``(networks, report, decoded)``.
    """
    trained = evaluation.trained
    networks = {"trained": trained.params, "untrained": trained.initial_params}
    report, decoded = probe_networks(
        evaluation.family,
        evaluation.agent,
        networks,
        evaluation.history,
        key=evaluation.probe_key,
        mlp_steps=mlp_steps,
    )
    return networks, report, decoded


def common_results(name: str, config: dict, evaluation: Evaluation) -> dict:
    """The part of ``results.json`` every experiment writes: what ran, where, how fast, returns."""
    trained = evaluation.trained
    return {
        "experiment": name,
        "config": config,
        "device": output.device_description(),
        "train": train_stats(trained)
        | {"final_training_return": float(np.mean(trained.metrics["episode_return"][-10:]))},
        "return": {name: mean for name, (mean, _) in evaluation.returns.items()},
        "return_se": {name: se for name, (_, se) in evaluation.returns.items()},
    }


def plot_learning_curve(
    path: pathlib.Path,
    config: train.TrainConfig,
    trained: train.TrainResult,
    references: dict[str, float] | None = None,
) -> None:
    """The training return against agent steps, with reference returns (label -> value) as lines."""
    steps = np.arange(1, config.num_updates + 1) * config.steps_per_update
    plots.learning_curve(path, steps, trained.metrics["episode_return"], references or {})


def plot_evaluation_learning_curve(
    path: pathlib.Path, config: train.TrainConfig, evaluation: Evaluation, labels: dict[str, str]
) -> None:
    """``plot_learning_curve`` of ``evaluation``'s agent, with the held-out mean return of each
    reference policy named in ``labels`` (name -> label) as a line."""
    references = {label: evaluation.mean_return(name) for name, label in labels.items()}
    plot_learning_curve(path, config, evaluation.trained, references)


def returns_table(results: dict) -> str:
    """Mean and s.e. of the return per episode of the agent and each reference policy."""
    rows = [["return per episode", "mean", "s.e."]]
    rows += [
        [name, f"{mean:.2f}", f"{results['return_se'][name]:.2f}"] for name, mean in results["return"].items()
    ]
    return output.format_table(rows)


def probe_table(probe: dict) -> str:
    """Held-out R² of the trained and the untrained network, probed on the same histories."""

    def row(label: str, prefix: str, metric: str) -> list[str]:
        return [
            label,
            f"{probe[prefix + 'trained'][metric]:.3f}",
            f"{probe[prefix + 'untrained'][metric]:.3f}",
        ]

    return output.format_table(
        [
            ["held-out R²", "trained", "untrained"],
            row("hidden → posterior means (linear)", "", "r2_posterior_mean"),
            row("hidden → belief features (linear)", "", "r2"),
            row("hidden → belief features (MLP)", "mlp_", "r2"),
            row("belief features → hidden (linear)", "reverse_", "r2"),
        ]
    )


def header(results: dict, description: str) -> str:
    """First line of the printed summary: the experiment, the device and the training speed."""
    train_stats = results["train"]
    return (
        f"{results['experiment']}: {description}, {results['config']['eval_tasks']} held-out tasks "
        f"({results['device']}); trained {train_stats['seconds']:.0f} s at "
        f"{train_stats['agent_steps_per_second'] / 1e6:.2f} M agent steps/s"
    )
