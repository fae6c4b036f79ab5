"""The steps every experiment shares: train a population of seeds, save it, play the held-out
tasks with each trained agent and with reference belief policies, probe them, and the tables of
the common part of ``results.json`` (its types and schema: ``metabelief.experiments.results``)."""

from __future__ import annotations

import dataclasses
import pathlib
import typing
from collections.abc import Callable, Sequence

import jax
import numpy as np

from metabelief import baselines, train
from metabelief.agents.base import Agent
from metabelief.experiments import controls, output, plots, seeds
from metabelief.experiments.probing import ProbeReport, probe_networks
from metabelief.experiments.results import ExperimentResults, SeedTraining
from metabelief.rollout import Trajectory, rollout_population_jit, sample_tasks
from metabelief.tasks.base import PyTree, TaskFamily, describe_capability
from metabelief.tasks.validation import integer_at_least


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One trained agent of a population and the reference policies on the same held-out tasks."""

    family: TaskFamily
    agent: Agent
    seed: int  # the agent's training seed
    training: SeedTraining  # its final training return and its evaluations during training
    params: PyTree  # its trained parameters
    initial_params: PyTree  # the same network before training (the untrained baseline)
    history: Trajectory  # the trained agent on the held-out tasks, beliefs in lockstep
    references: dict[str, Trajectory]  # each reference policy on the same tasks (shared by all seeds)
    returns: dict[str, tuple[float, float]]  # "agent" and each reference: mean and s.e. over tasks
    probe_key: jax.Array  # for the probes of ``history``: this seed's own (``seed_probe_key``)

    def mean_return(self, name: str) -> float:
        return self.returns[name][0]


def train_and_save(
    config: train.TrainConfig, agent_dir: pathlib.Path, *, progress: bool = True
) -> train.TrainResult:
    """Trains the population of ``config`` and saves it in ``agent_dir``; returns the ``TrainResult``."""
    trained = train.train(config, progress=progress)
    train.save_agent(agent_dir, trained.params, config)
    if trained.dynamics is not None:
        name = (
            "dynamics" + agent_dir.name.removeprefix("agent") + ".png"
        )  # agent-k5-n10 -> dynamics-k5-n10.png
        plots.dynamics(agent_dir.parent / name, trained.dynamics, config.family_name)
    return trained


def held_out_key(config: train.TrainConfig) -> jax.Array:
    """The key of the held-out tasks: derived from the first seed, never used by training."""
    return jax.random.fold_in(jax.random.key(config.seed), 1)


def train_and_evaluate(
    config: train.TrainConfig,
    eval_tasks: int,
    references: dict[str, baselines.BeliefPolicy],
    out_dir: pathlib.Path,
    *,
    progress: bool = True,
) -> tuple[train.TrainResult, list[Evaluation]]:
    """Trains the population of ``config``, saves it in ``out_dir / "agent"`` and plays held-out tasks.

    The held-out tasks come from a key training never used; every seed's agent (vmapped over the
    seeds) and every reference policy play the same ``eval_tasks`` tasks. Returns the training
    result and one ``Evaluation`` per seed.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    family, agent = config.make_family(), config.make_agent()
    trained = train_and_save(config, out_dir / "agent", progress=progress)
    task_key, agent_key, *policy_keys, probe_key = jax.random.split(held_out_key(config), 3 + len(references))
    tasks = sample_tasks(family, task_key, eval_tasks)
    histories = rollout_population_jit(family, agent, trained.params, agent_key, tasks)  # [S, T, N, ...]
    run_policy = jax.jit(baselines.run_policy, static_argnums=(0, 1))
    played = {
        name: run_policy(family, policy, key, tasks)
        for (name, policy), key in zip(references.items(), policy_keys, strict=True)
    }
    reference_returns = {name: output.mean_and_se(run.rewards.sum(axis=0)) for name, run in played.items()}
    agent_returns = np.asarray(histories.rewards.sum(axis=1))  # [S, N]
    evaluations = []
    for index, seed in enumerate(config.seeds):
        returns = {"agent": output.mean_and_se(agent_returns[index])} | reference_returns
        evaluations.append(
            Evaluation(
                family=family,
                agent=agent,
                seed=seed,
                training=SeedTraining.of(trained, index),
                params=trained.seed_params(index),
                initial_params=trained.seed_initial_params(index),
                history=train.select_seed(histories, index),
                references=played,
                returns=returns,
                probe_key=seed_probe_key(probe_key, index),
            )
        )
    return trained, evaluations


def seed_probe_key(probe_key: jax.Array, index: int) -> jax.Array:
    """The key of the probes (MLP probes, maps) of the population's ``index``-th seed: each seed's
    own, so seeds' probe errors are independent draws."""
    return jax.random.fold_in(probe_key, index)


def quick_train(config: train.TrainConfig) -> train.TrainConfig:
    """The smoke-test size of an experiment's training (about a minute on a 2-core CPU); two seeds, so the
    seed axis and the intervals over it are exercised."""
    return dataclasses.replace(
        config,
        num_tasks=128,
        num_updates=20,
        updates_per_chunk=10,
        num_seeds=2,
        checkpoints=min(config.checkpoints, 2),
    )


def check_eval_tasks(eval_tasks: object) -> int:
    """Held-out tasks are cut 1/2 fit, 1/4 validate, 1/4 test: an integer, at least 16 of them."""
    return integer_at_least("eval_tasks", eval_tasks, 16)


def check_train(
    config: object,
    requirement: type | tuple[type, ...] | Callable[[TaskFamily], bool],
    experiment: str,
) -> None:
    """``config`` is a ``TrainConfig`` whose family has what ``experiment`` is built on.

    ``requirement``: a capability of ``metabelief.tasks.base`` (a runtime-checkable ``Protocol``
    such as ``BetaArms``: any family with it will do, whatever its class), a tuple of them (all
    needed), a family class (an experiment built on one task's own structure), or a predicate
    ``family -> bool`` (its docstring's first line says what it wants).
    """
    if not isinstance(config, train.TrainConfig):
        raise ValueError(f"train must be a TrainConfig, got {config!r}")
    family = config.make_family()
    if isinstance(requirement, type | tuple):
        required = requirement if isinstance(requirement, tuple) else (requirement,)
        met = all(isinstance(family, kind) for kind in required)
        capabilities = [kind for kind in required if typing.Protocol in kind.__bases__]
        classes = [f"a {kind.__name__}" for kind in required if kind not in capabilities]
        if capabilities:
            classes.append("a family with " + " and ".join(map(describe_capability, capabilities)))
        needed = " and ".join(classes)
    else:
        met = bool(requirement(family))
        doc = (requirement.__doc__ or "").strip()
        needed = f"a family that passes {getattr(requirement, '__name__', repr(requirement))}" + (
            f" ({doc.splitlines()[0]})" if doc else ""
        )
    if not met:
        raise ValueError(
            f"train.family must build {needed} for the {experiment} experiment, "
            f"got {config.family_name!r} with family_args {dict(config.family_args)}"
        )


def config_dict(config) -> dict:
    """An experiment config as JSON-ready fields (``train`` as ``TrainConfig.to_dict``)."""
    fields = {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}
    return fields | {"train": config.train.to_dict()}


def probe_trained_and_untrained(
    evaluation: Evaluation, mlp_steps: int
) -> tuple[dict[str, PyTree], ProbeReport, dict[str, np.ndarray]]:
    """``probe_networks`` on the held-out history, trained vs initial weights, with the probe
    controls (``metabelief.experiments.controls``) as the report's ``controls``.

    Returns ``(networks, report, decoded)``.
    """
    networks = {"trained": evaluation.params, "untrained": evaluation.initial_params}
    report, decoded = probe_networks(
        evaluation.family,
        evaluation.agent,
        networks,
        evaluation.history,
        key=evaluation.probe_key,
        mlp_steps=mlp_steps,
    )
    probe_controls = controls.probe_controls(
        evaluation.family,
        evaluation.agent,
        networks,
        evaluation.history,
        report.split_sizes,
        key=jax.random.fold_in(evaluation.probe_key, 2),  # 1: the state-machine maps; 3: the intervention
        mlp_steps=mlp_steps,
        network_mlp_r2={name: network.mlp.r2 for name, network in report.networks.items()},
    )
    return networks, dataclasses.replace(report, controls=probe_controls), decoded


def r2_by_time(per_seed: Sequence[ProbeReport]) -> list[dict[str, tuple[float | None, ...]]]:
    """Each seed's ``{network: R² by time}`` (``plots.r2_by_time``'s input)."""
    return [{name: network.r2_by_time for name, network in probe.networks.items()} for probe in per_seed]


def plot_learning_curve(
    path: pathlib.Path,
    config: train.TrainConfig,
    trained: train.TrainResult,
    references: dict[str, float] | None = None,
) -> None:
    """The training return of each seed against agent steps (per seed), with reference returns
    (label -> value) as lines."""
    steps = np.arange(1, config.num_updates + 1) * config.steps_per_update
    plots.learning_curve(path, steps, trained.metrics["episode_return"], references or {})


def plot_evaluation_learning_curve(
    path: pathlib.Path,
    config: train.TrainConfig,
    trained: train.TrainResult,
    evaluation: Evaluation,
    labels: dict[str, str],
) -> None:
    """``plot_learning_curve`` of the population, with the held-out mean return of each reference
    policy named in ``labels`` (name -> label) as a line."""
    references = {label: evaluation.mean_return(name) for name, label in labels.items()}
    plot_learning_curve(path, config, trained, references)


def returns_table(summary: dict) -> str:
    """Return per episode over seeds (mean [95% interval]) and the s.e. over held-out tasks."""
    rows = [["return per episode", "mean [95% CI over seeds]", "s.e. over tasks"]]
    rows += [
        [name, seeds.format_interval(value, ".2f"), seeds.format_interval(summary["return_se"][name], ".2f")]
        for name, value in summary["return"].items()
    ]
    return output.format_table(rows)


def probe_table(probe: dict) -> str:
    """Held-out R² of the trained and the untrained network, probed on the same histories
    (``probe`` from a summary: mean [95% interval] over seeds)."""
    names = ("trained", "untrained")

    def row(label: str, probe_name: str) -> list[str]:
        return [label, *(seeds.format_interval(probe["networks"][n][probe_name]["r2"]) for n in names)]

    return output.format_table(
        [
            ["held-out R² (over seeds)", *names],
            row("hidden → posterior means (linear)", "posterior_mean"),
            row("hidden → belief features (linear)", "linear"),
            row("hidden → belief features (MLP)", "mlp"),
            row("belief features → hidden (linear)", "reverse"),
        ]
    )


def controls_table(controls: dict, feature_names: Sequence[str] | None = None) -> str:
    """The probe controls (``metabelief.experiments.controls``) over seeds: held-out R² of hidden →
    posterior means for the trained and untrained networks beside the baselines that learned
    nothing (the last k inputs and the time step; exponential traces and running sums of the
    inputs), pooled and with time partialled out; the whole memory (the LSTM's [hidden, cell]);
    each belief feature apart (named by ``feature_names``, else their mean and range); the MLP
    probes; decoding the true task quantity; and the excess log-loss of predicting the next reward
    over the exact posterior predictive's."""
    names = list(controls["hidden_and_memory"])
    largest = controls["input_only"][-1]  # the largest k (input_lags ascend), as the other controls
    unlearned = controls["no_learning"]
    constants = "/".join(f"{tau['mean']:g}" for tau in controls["trace_time_constants"])
    columns = [
        *names,
        f"input only ({largest['lags']['mean']:.0f} inputs)",
        f"traces (τ {constants})",
        "running sums",
    ]
    baselines = ["traces", "running_sums"]  # controls.TRACES, controls.RUNNING_SUMS
    cell = seeds.format_interval

    def baseline_cells(of_input_only, of_no_learning) -> list[str]:
        return [cell(of_input_only), *(cell(of_no_learning(unlearned[name])) for name in baselines)]

    rows = [["probe controls, held-out R² (over seeds)", *columns]]
    rows.append(
        [
            "hidden → posterior means",
            *(cell(controls["hidden_and_memory"][n]["hidden"]["r2_posterior_mean"]) for n in names),
            *baseline_cells(largest["r2_posterior_mean"], lambda scores: scores["r2_posterior_mean"]),
        ]
    )
    rows.append(
        [
            "  … with time partialled out",
            *(cell(controls["within_time"][n]["r2_posterior_mean"]) for n in names),
            *baseline_cells(
                controls["within_time"]["input_only"]["r2_posterior_mean"],
                lambda scores: scores["within_time"]["r2_posterior_mean"],
            ),
        ]
    )
    rows.append(
        [
            "whole memory → posterior means",
            *(cell(controls["hidden_and_memory"][n]["memory"]["r2_posterior_mean"]) for n in names),
            "",
            "",
            "",
        ]
    )
    per_dimension = (
        {n: controls["per_dimension"][n] for n in names}
        | {"input": largest["per_dimension"]}
        | {name: unlearned[name]["per_dimension"] for name in baselines}
    )
    if feature_names is not None:
        for index, feature in enumerate(feature_names):
            rows.append([f"hidden → {feature}", *(cell(values[index]) for values in per_dimension.values())])
    else:
        for label, reduce in (("mean", np.mean), ("lowest", np.min), ("highest", np.max)):
            rows.append(
                [
                    f"hidden → each feature apart: {label}",
                    *(f"{reduce([v['mean'] for v in values if v['mean'] is not None]):.3f}"
                      for values in per_dimension.values()),
                ]
            )  # fmt: skip
    mlp = controls["mlp"]
    rows.append(
        [
            "MLP → belief features (inputs + t for the baselines)",
            *(cell(mlp[n]) if n in mlp else "" for n in [*names, "input_only", *baselines]),
        ]
    )
    truth = controls["truth"]
    rows.append(
        [
            "decoding the truth: MSE",
            *(cell(truth["mse"][n], ".4f") for n in [*names, "input_only"]),
            *(cell(unlearned[name]["truth_mse"], ".4f") for name in baselines),
        ]
    )
    outcome = controls["next_outcome"]
    if not seeds.is_interval(outcome):  # an interval of nothing where the family has no such test
        rows.append(
            [
                "next reward: excess log-loss over the exact predictive (memory; baselines + t)",
                *(cell(outcome["excess"][n], ".4f") for n in [*names, "input_only", *baselines]),
            ]
        )
    headline = controls["headline"]
    lines = [
        output.format_table(rows),
        f"  Bayes minimum (exact posterior mean) MSE {cell(truth['bayes_minimum'], '.4f')}, "
        f"prior (no history) MSE {cell(truth['prior'], '.4f')}",
    ]
    if not seeds.is_interval(outcome):
        lines.append(
            "  next reward log-loss (nats per step): exact posterior predictive "
            f"{cell(outcome['exact'], '.4f')}, each action's reward rate (no history) "
            f"{cell(outcome['no_history'], '.4f')}"
        )
    mlp_headline = headline["mlp"]
    if any(
        seeds.is_interval(v) and v["mean"] is not None for v in [*headline.values(), *mlp_headline.values()]
    ):
        differences = [
            f"{label} {cell(headline[f'trained_minus_{name}'], '+.3f')} (within time "
            f"{cell(headline[f'within_time_trained_minus_{name}'], '+.3f')})"
            for name, label in (
                ("untrained", "untrained"),
                ("input_only", "input only"),
                ("traces", "traces"),
                ("running_sums", "running sums"),
            )
        ]
        lines.append("  trained − " + "; − ".join(differences))
        lines.append(
            "  MLP: trained − input only "
            f"{cell(mlp_headline['trained_minus_input_only'], '+.3f')}; − traces "
            f"{cell(mlp_headline['trained_minus_traces'], '+.3f')}; − running sums "
            f"{cell(mlp_headline['trained_minus_running_sums'], '+.3f')}"
        )
    return "\n".join(lines)


def intervention_table(report: dict) -> str:
    """The causal test (``metabelief.analysis.intervention``) over seeds. The whole memory is pushed
    along the decoded belief; every push has the same size in the activity's metric (Mahalanobis
    norm). The agent's own sensitivity is the slope of its log-odds of the target action on the
    exact belief in its unperturbed behaviour (a logistic fit); causal / observational is the
    push's log-odds slope per unit of decoded belief over that (1: the push moves behaviour as
    the belief does, 0: not at all), at the push (k = 0) and k steps on. Random directions of the
    same norm are the control."""
    names = list(report)
    first = report[names[0]]
    trace = len(first["num_steps"]) - 1
    rows = [["intervention (held-out)", *names]]
    rows.append(["agent's own sensitivity: Δ log-odds per unit belief", *_cells(report, _observational)])
    rows.append(
        [
            "  causal, k = 0: the same per unit of pushed decoded belief",
            *_cells(report, _push("minimum_mahalanobis", "log_odds_slope", 0)),
        ]
    )
    for reference in first["reference_slopes"]:
        rows.append([f"  {reference}'s (the same fit)", *_cells(report, _reference(reference))])
    for push, label in PUSH_LABELS.items():
        rows.append([f"{label}: decoded shift per unit δ", *_cells(report, _push(push, "decoded_per_unit"))])
        for k in sorted({0, 1, trace}):
            rows.append(
                [
                    f"  causal / observational, k = {k}",
                    *_cells(report, _push(push, "causal_to_observational", k)),
                ]
            )
    largest = len(first["deltas"]) - 1
    delta = seeds.means(first["deltas"][largest])
    rows.append(
        [
            f"Δ log-odds at δ = {delta:+.2f}, k = 0: {PUSH_LABELS['minimum_mahalanobis']}",
            *_cells(report, _push("minimum_mahalanobis", "log_odds", 0, largest)),
        ]
    )
    rows.append(
        [
            "  random directions of that norm: mean ± sd over directions",
            *(
                f"{report[n]['random']['log_odds_mean'][0][largest]['mean']:+.3f} ± "
                f"{report[n]['random']['log_odds_std'][0][largest]['mean']:.3f}"
                for n in names
            ),
        ]
    )
    rows.append(
        [
            "Mahalanobis norm per unit δ (a sample: √M from the mean)",
            *(f"{report[n]['mahalanobis_per_unit']['mean']:.2f}" for n in names),
        ]
    )
    rows.append(["read-out R² (the pushed belief)", *_cells(report, lambda r: r["read_out_r2_target"])])
    return output.format_table(rows)


PUSH_LABELS = {
    "minimum_mahalanobis": "push minimal in the activity's metric",
    "minimum_euclidean": "push minimal in the Euclidean metric",
    "encoding": "push along the encoding direction",
}


def _cells(report: dict, figure) -> list[str]:
    """``figure(result)`` (an interval) of each network, formatted."""
    return [seeds.format_interval(figure(report[name]), ".2f") for name in report]


def _observational(result: dict) -> dict:
    return result["observational_slope"]


def _reference(name: str):
    return lambda result: result["reference_slopes"][name]


def _push(push: str, key: str, *indices: int):
    """The interval ``result["pushes"][push][key][indices...]``."""

    def figure(result: dict) -> dict:
        value = result["pushes"][push][key]
        for index in indices:
            value = value[index]
        return value

    return figure


def counterfactual_table(report: dict) -> str:
    """The counterfactual update test (``metabelief.analysis.counterfactual``) over seeds: for each
    possible next outcome, one step of the network from its recorded states, the slope and R² of
    its decoded belief's change against the exact Bayes change (1 and 1: the update is Bayes's;
    slope 0: it ignores the evidence), beside the read-out's R² on the states themselves."""
    names = list(report)
    rows = [
        ["counterfactual update (held-out)", *(f"{n}: slope" for n in names), *(f"{n}: R²" for n in names)]
    ]
    for index, label in enumerate(report[names[0]]["outcomes"]):
        slopes = [seeds.format_interval(report[n]["slope"][index], ".2f") for n in names]
        rows.append([label, *slopes, *(seeds.format_interval(report[n]["r2"][index], ".2f") for n in names)])
    rows.append(
        [
            "all outcomes",
            *(seeds.format_interval(report[n]["slope_all"], ".2f") for n in names),
            *(seeds.format_interval(report[n]["r2_all"], ".2f") for n in names),
        ]
    )
    rows.append(
        [
            "read-out R² (the states)",
            *("" for _ in names),
            *(seeds.format_interval(report[n]["read_out_r2"], ".2f") for n in names),
        ]
    )
    return output.format_table(rows)


def header(results: ExperimentResults, description: str) -> str:
    """First line of the printed summary: the experiment, seeds, the device and the training speed."""
    train_stats = results.train
    return (
        f"{results.experiment}: {description}, {train_stats.num_seeds} seeds, "
        f"{results.config['eval_tasks']} held-out tasks ({results.device}); trained "
        f"{train_stats.seconds:.0f} s at {train_stats.agent_steps_per_second / 1e6:.2f} M agent "
        "steps/s (all seeds); figures: mean [95% interval over seeds]"
    )
