"""``metabelief run family NAME``: any task family, trained, compared with its references, probed.

The experiment a researcher runs on a family of their own, or on one of the package's, without
writing a script. For any family (a registered name with its arguments, an importable class
``package.module:Class`` with its arguments from the shell, or an instance from Python):

1. train the agent (``TrainConfig``: LSTM and A2C by default, every memory model and algorithm of
   the package) on fresh tasks every update, several seeds as one population;
2. on held-out tasks, compare its return with every reference the family's capabilities unlock
   (``metabelief.tasks.base``): random actions always; belief-greedy (``ExpectedRewards``);
   Thompson sampling (``BetaArms``, ``DependentArms``); the Bayes-optimal policy by exact DP
   (``BetaArms``, ``DependentArms``, or ``FiniteOutcomes`` over the belief tree when it fits);
   and the family's own (``ReferencePolicies``). The agent's return is placed on the way from
   random to the *reference*: the Bayes-optimal policy where it exists, else the best of the others;
3. probe its hidden state for the exact belief, trained vs untrained network on the same
   histories, with the probe controls (``metabelief.experiments.controls``).

``run`` returns ``FamilyResults`` with one ``FamilySeed`` per seed (``results.json``'s keys:
``metabelief.experiments.results``).

From Python::

    config = FamilyConfig.of(MyFamily(num_arms=4))          # or FamilyConfig.of("tiger", p_stay=0.9)
    results = metabelief.experiments.family.run(config, pathlib.Path("runs/mine"))
    print(metabelief.experiments.family.table(results))
"""

from __future__ import annotations

import dataclasses
import importlib
import pathlib
from collections.abc import Callable

from metabelief import baselines, train
from metabelief.experiments import fractions, output, plots, protocol, seeds
from metabelief.experiments.probing import ProbeReport
from metabelief.experiments.results import ExperimentResults, SeedResult
from metabelief.tasks import registry
from metabelief.tasks.base import (
    BetaArms,
    DependentArms,
    ExpectedRewards,
    FiniteOutcomes,
    ReferencePolicies,
    TaskFamily,
)
from metabelief.tasks.validation import integer_at_least

NAME = "family"
SUMMARY = "any task family (NAME or package.module:Class, then ARG=VALUE): returns vs its references; probes"

# Training that learns each built-in family of the literature (the TrainConfig defaults otherwise:
# LSTM of 48 units, A2C at 5e-3 annealed over 600 updates of 1,024 tasks, gamma 0.9).
PRESETS: dict[str, dict] = {
    "markov_bandit": {"num_tasks": 256},  # 300 pulls per episode: fewer episodes per update
}


@dataclasses.dataclass(frozen=True)
class FamilyConfig:
    """The experiment; ``train`` holds the family, the agent and the training settings."""

    train: train.TrainConfig = train.TrainConfig(family="oracle_bandit", num_seeds=5, checkpoints=11)
    eval_tasks: int = 2048  # held-out tasks for returns and probes (1/2 fit, 1/4 validate, 1/4 test)
    mlp_steps: int = 1000

    def __post_init__(self):
        protocol.check_train(self.train, _any_family, NAME)
        object.__setattr__(self, "eval_tasks", protocol.check_eval_tasks(self.eval_tasks))
        object.__setattr__(self, "mlp_steps", integer_at_least("mlp_steps", self.mlp_steps, 1))

    @classmethod
    def of(cls, family: str | TaskFamily, *, quick: bool = False, **family_args) -> FamilyConfig:
        """The experiment on ``family``: a registered name with ``family_args``, a class path
        ``"package.module:Class"`` built with ``family_args``, or an instance (no ``family_args``).
        Built-in families of ``PRESETS`` get their training settings; ``quick`` the smoke-test size."""
        family, family_args = resolve_family(family, family_args)
        preset = PRESETS.get(family, {}) if isinstance(family, str) else {}
        base = cls().train
        trained = dataclasses.replace(base, family=family, family_args=tuple(family_args.items()), **preset)
        if quick:
            return cls(train=protocol.quick_train(trained), eval_tasks=128, mlp_steps=100)
        return cls(train=trained)

    @classmethod
    def quick(cls) -> FamilyConfig:
        """A smoke-test size on the default family (about a minute on a 2-core CPU)."""
        return cls.of(cls().train.family, quick=True)


def _any_family(family: TaskFamily) -> bool:
    """any task family"""
    return registry.is_family(family)


def resolve_family(family: str | TaskFamily, family_args: dict) -> tuple[str | TaskFamily, dict]:
    """``(family, family_args)`` for a ``TrainConfig``: a registered name keeps its arguments; a
    class path ``"package.module:Class"`` becomes the instance ``Class(**family_args)``."""
    if not isinstance(family, str) or ":" not in family:
        return family, family_args
    module_name, _, class_name = family.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(
            f"family {family!r} names no importable class (package.module:Class): {error}"
        ) from error
    try:
        instance = cls(**family_args)
    except TypeError as error:
        raise ValueError(f"family {family!r} does not take these arguments: {error}") from error
    if not registry.is_family(instance):
        raise ValueError(f"family {family!r} built {instance!r}, which is not a task family")
    return instance, {}


@dataclasses.dataclass(frozen=True)
class FamilySeed(SeedResult):
    """One seed's entry: its returns (``SeedResult``), where they lie between random and the
    reference, and the probes of its agent's state."""

    return_fraction_random_to_reference: float  # (agent - random) / (reference - random)
    return_fraction_random_to_reference_se: float  # its s.e. over the held-out tasks (``fractions``)
    probe: ProbeReport


@dataclasses.dataclass(frozen=True)
class FamilyResults(ExperimentResults):
    """``ExperimentResults`` and what the family was compared with."""

    family: str  # the family's repr
    reference: str  # the policy the return fraction is measured against
    bayes_optimal_value: float | None  # the exact Bayes-optimal return from the prior, where the DP runs
    unavailable: dict[str, str]  # references the family's capabilities did not unlock, and why


@dataclasses.dataclass(frozen=True)
class References:
    """The reference policies of a family (name -> belief policy or learner), the exact
    Bayes-optimal return where the DP runs, and why the missing ones are missing."""

    policies: dict
    bayes_optimal_value: float | None
    unavailable: dict[str, str]


def references(family: TaskFamily) -> References:
    """Every reference policy ``family``'s capabilities unlock (see the module docstring)."""
    policies = {"random": baselines.random_policy(family)}
    unavailable = {}
    if isinstance(family, ExpectedRewards):
        policies["belief_greedy"] = baselines.belief_greedy(family)
    else:
        unavailable["belief_greedy"] = "needs ExpectedRewards"
    if isinstance(family, BetaArms | DependentArms):
        policies["thompson"] = baselines.thompson_sampling(family)
    value = None
    if isinstance(family, BetaArms | DependentArms | FiniteOutcomes):
        try:
            policies["bayes_optimal"] = baselines.bayes_optimal(family)
            value = baselines.bayes_optimal_value(family)
        except ValueError as error:  # the DP does not fit (too large, beliefs that keep splitting)
            unavailable["bayes_optimal"] = str(error)
    else:
        unavailable["bayes_optimal"] = "needs BetaArms, DependentArms or FiniteOutcomes"
    if isinstance(family, ReferencePolicies):
        policies |= dict(family.reference_policies())
    return References(policies=policies, bayes_optimal_value=value, unavailable=unavailable)


def run(config: FamilyConfig, out_dir: pathlib.Path, *, progress: bool = True) -> FamilyResults:
    """Runs the experiment, writes ``results.json``, the plots and the agents into ``out_dir``."""
    family = config.train.make_family()
    found = references(family)
    trained, evaluations = protocol.train_and_evaluate(
        config.train, config.eval_tasks, found.policies, out_dir, progress=progress
    )
    reference = reference_policy(found, evaluations[0].mean_return)
    per_seed, decoded = [], None
    for evaluation in evaluations:
        _, probe, seed_decoded = protocol.probe_trained_and_untrained(evaluation, config.mlp_steps)
        decoded = decoded or seed_decoded  # the first seed's decoded beliefs are drawn
        # NaN where the reference is random play itself
        fraction, fraction_se = fractions.between_references(evaluation, "random", reference)
        per_seed.append(
            FamilySeed.of(
                evaluation,
                return_fraction_random_to_reference=fraction,
                return_fraction_random_to_reference_se=fraction_se,
                probe=probe,
            )
        )
    results = FamilyResults.of(
        NAME,
        protocol.config_dict(config),
        trained,
        per_seed,
        family=repr(family),
        reference=reference,
        bayes_optimal_value=found.bayes_optimal_value,
        unavailable=found.unavailable,
    )
    output.write_json(out_dir / "results.json", results.to_dict())

    labels = {name: name.replace("_", " ") for name in found.policies}
    protocol.plot_evaluation_learning_curve(
        out_dir / "learning_curve.png", config.train, trained, evaluations[0], labels
    )
    plots.decoded_beliefs(out_dir / "decoded_belief.png", decoded, quantity="first belief feature")
    plots.r2_by_time(
        out_dir / "probe_r2_by_time.png", protocol.r2_by_time([entry.probe for entry in per_seed])
    )
    return results


def reference_policy(found: References, mean_return: Callable[[str], float]) -> str:
    """The Bayes-optimal policy where it exists, else the reference with the highest held-out
    return (``mean_return(name)``); random where there is no other."""
    if "bayes_optimal" in found.policies:
        return "bayes_optimal"
    others = [name for name in found.policies if name != "random"]
    if not others:
        return "random"
    return max(others, key=mean_return)


def table(results: FamilyResults) -> str:
    """The printed summary over seeds: returns, the way from random to the reference, probe R²
    and the probe controls."""
    summary = results.summary
    bayes = results.bayes_optimal_value
    lines = [
        protocol.header(results, results.family),
        "",
        protocol.returns_table(summary),
        f"agent, % of the way from random to {results.reference}: "
        + seeds.format_interval(seeds.percent(summary["return_fraction_random_to_reference"]), ".0f"),
    ]
    if bayes is not None:
        lines.append(f"Bayes-optimal return from the prior (exact DP): {bayes:.3f}")
    for name, reason in results.unavailable.items():
        lines.append(f"no {name} reference: {reason}")
    lines += [
        "",
        protocol.probe_table(summary["probe"]),
        "",
        protocol.controls_table(summary["probe"]["controls"]),
    ]
    return "\n".join(lines)
