"""``metabelief run failure``: off its training prior, whose posterior does an agent hold and act on?

The belief view predicts that a meta-trained agent has learnt the Bayes filter of its *training*
task distribution, so on tasks from another prior it keeps updating as if the old prior held. Two
other readings fit the same returns: the state holds the *counts* (a sufficient statistic from
which any prior's posterior can be read), and the agent acts on the empirical majority; or it
holds the *test* posterior. This experiment is built to tell the three apart.

**Training prior.** The dependent two-armed bandit (arm 0 pays p, arm 1 pays 1 - p, 100 pulls)
with p uniform on the asymmetric support ``TRAIN_SUPPORT = (0.1, 0.55)``. Every pull is evidence
about p whatever the arm, so the history's sufficient statistic is the evidence count (s outcomes
with likelihood p, f with likelihood 1 - p). On a symmetric support the training posterior prefers
arm 0 exactly when s > f, so acting on the posterior and acting on the majority cannot be told
apart. On (0.1, 0.55) the posterior prefers arm 0 once p = 0.55 is likely, which it is well
before s > f (a success rate of 0.45 is far likelier under 0.55 than under 0.1): the two disagree
on a share of steps the experiment reports (``disagreement``).

**Test conditions.** ``in distribution`` (the training prior), ``support (0.4, 0.6)``,
``support (0.1, 0.5)``, ``p ~ U[0, 1]`` and ``past the horizon`` (the training prior for twice the
training episode). For each: the return gap to the Bayes-optimal agent of the TEST prior (exact
dynamic programming, ``metabelief.baselines.bayes_optimal``).

**Hypothesis controls.** The same measures are taken on the trained agent's state and on states
that embody each hypothesis, read on the same histories (the trained agent's, teacher forced):

* ``untrained``: the same network at its initial weights (what any random recurrent reservoir gives);
* ``counts``: the raw evidence counts [s, f]; it acts on the empirical majority (ties: 1/2);
* ``training posterior``: E[p | history] under the training prior alone; acts greedily on it;
* ``test posterior``: E[p | history] under the test prior alone; acts greedily on it;
* ``training log-odds``: [log P(p = 0.55 | history) / P(p = 0.1 | history), t] under the training
  prior, linear in the counts (an invertible map of [s, f]): the counts, in the training
  posterior's coordinates; acts greedily on the training posterior.

**Measures** (test lanes, every state; ``metabelief.experiments.failure_measures`` takes them on
one seed and condition):

* ``follows_posterior_not_majority`` — on the steps where the training posterior's better arm and
  the majority's differ, the probability the state's policy gives the posterior's arm (1: the
  training posterior, 0: the counts);
* ``follows_training_prior`` — on the steps where the training and the test posteriors' better
  arms differ, the probability of the training posterior's arm (1: training, 0: test);
* ``readout`` — an MLP read-out state -> E_train[p] fitted in distribution, frozen and applied to
  the test histories: on which share of the pairs where the posteriors differ it lies nearer the
  training posterior, its RMSE against each, how sure it is;
* ``r2_posterior_mean`` — probes refitted on the test histories, state -> E[p] under each prior
  (held-out R², linear and MLP): what the state holds, whether or not it is used.

The preference and read-out shares carry a within-seed standard error (task lanes as clusters).

**The agent's choices** (``metabelief.experiments.failure_choices``): ``choices``, the held-out
log-likelihood of the agent's choices under each hypothesis's softmax at a temperature fitted on
the training lanes (the greedy controls cannot match a stochastic policy near a tie); and
``evidence_weights``, the agent's (and the untrained network's) policy log-odds regressed on the
counts (s, f): the ratio of the coefficients is -1 for the majority, -0.41 for the training
posterior.

**Verdicts** (``metabelief.experiments.failure_verdicts``): seeds that did not learn to use the
evidence are set aside by a rule fixed in the config (``min_learning_fraction``); each remaining
seed gets a verdict per measure and condition, a hypothesis only where the measure separates it
from every other and the agent's interval is on its side, else "undecided"; the summary counts
them. ``paired_differences`` gives per-seed differences (agent - untrained on every measure,
log-likelihood of one hypothesis minus another) with intervals over the learning seeds.

``run`` returns ``FailureResults`` with one ``FailureSeed`` per seed (``results.json``'s keys:
``metabelief.experiments.results``).
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import numpy as np

from metabelief import baselines, train
from metabelief.analysis.records import Record
from metabelief.experiments import output, plots, protocol, seeds
from metabelief.experiments.failure_choices import log_odds_ratio
from metabelief.experiments.failure_measures import (
    HYPOTHESES,
    MEASURES,
    NETWORKS,
    STATES,
    TRAIN_SUPPORT,
    Condition,
    condition_results,
    fit_readouts,
    seed_histories,
)
from metabelief.experiments.failure_verdicts import (
    RULE,
    Exclusion,
    Learning,
    PairedDifference,
    Verdict,
    learning,
    paired_difference,
    verdicts,
)
from metabelief.experiments.probing import split_sizes
from metabelief.experiments.results import ExperimentResults, SeedTraining
from metabelief.rollout import rollout_population_jit, sample_tasks
from metabelief.tasks import DependentArms, dependent_bandit
from metabelief.tasks.validation import integer_at_least

NAME = "failure"
SUMMARY = "train on p in {0.1, 0.55}; test on other priors: return gap, whose posterior it holds and acts on"

SHORT = {
    "counts": "counts",
    "training posterior": "train",
    "test posterior": "test",
    "training log-odds": "log-odds",
}


@dataclasses.dataclass(frozen=True)
class FailureConfig:
    """The experiment; ``train`` holds the agent and A2C settings."""

    train: train.TrainConfig = train.TrainConfig(
        family="dependent_bandit",
        family_args=(("horizon", 100), ("support", TRAIN_SUPPORT)),
        num_tasks=1024,
        num_updates=400,
        updates_per_chunk=25,
        checkpoints=11,  # evaluations during training (results.json: seeds[i].train.dynamics)
        learning_rate=5e-3,
        anneal_learning_rate=True,
        num_seeds=3,
    )
    eval_tasks: int = 4096
    horizon_factor: int = 2  # "past the horizon" runs this many training horizons
    mlp_steps: int = 1000
    # The exclusion rule, fixed before the run (``failure_verdicts``): a seed's verdicts count if its
    # in-distribution return is this fraction of the way from evidence-blind to Bayes-optimal.
    min_learning_fraction: float = 0.5

    def __post_init__(self):
        protocol.check_train(self.train, DependentArms, NAME)
        support = self.train.make_family().p_support
        if support != TRAIN_SUPPORT:  # the test conditions are built around the training prior
            raise ValueError(f"train.family_args support must be {TRAIN_SUPPORT}, got {support!r}")
        object.__setattr__(self, "eval_tasks", protocol.check_eval_tasks(self.eval_tasks))
        object.__setattr__(self, "horizon_factor", integer_at_least("horizon_factor", self.horizon_factor, 2))
        object.__setattr__(self, "mlp_steps", integer_at_least("mlp_steps", self.mlp_steps, 1))
        if not 0.0 <= self.min_learning_fraction <= 1.0:
            raise ValueError(f"min_learning_fraction must lie in [0, 1], got {self.min_learning_fraction!r}")

    @classmethod
    def quick(cls) -> FailureConfig:
        """A smoke-test size (about a minute on a 2-core CPU); the findings are not expected to hold."""
        base = cls()
        quick_train = dataclasses.replace(
            protocol.quick_train(base.train), family_args=(("horizon", 20), ("support", TRAIN_SUPPORT))
        )
        return cls(train=quick_train, eval_tasks=64, mlp_steps=100)


@dataclasses.dataclass(frozen=True)
class FailureSeed(Record):
    """One seed's entry: its training and its figures on each test condition."""

    seed: int
    train: SeedTraining
    learning: Learning  # whether the exclusion rule keeps this seed's verdicts
    conditions: dict[str, Condition]  # test condition name -> figures


@dataclasses.dataclass(frozen=True)
class FailureResults(ExperimentResults):
    """``ExperimentResults``, the exclusion rule's outcome, the verdicts and paired differences."""

    exclusion: Exclusion
    verdicts: tuple[Verdict, ...]
    paired_differences: tuple[PairedDifference, ...]


def test_conditions(horizon: int, horizon_factor: int) -> dict[str, tuple]:
    """name -> (test family, number of steps)."""
    longer = dependent_bandit(horizon=horizon * horizon_factor, support=TRAIN_SUPPORT)
    conditions = {
        "in distribution": dependent_bandit(horizon=horizon, support=TRAIN_SUPPORT),
        "support (0.4, 0.6)": dependent_bandit(horizon=horizon, support=(0.4, 0.6)),
        "support (0.1, 0.5)": dependent_bandit(horizon=horizon, support=(0.1, 0.5)),
        "p ~ U[0, 1]": dependent_bandit(horizon=horizon),
    }
    out = {name: (family, horizon) for name, family in conditions.items()}
    out["past the horizon"] = (longer, horizon * horizon_factor)
    return out


def run(config: FailureConfig, out_dir: pathlib.Path, *, progress: bool = True) -> FailureResults:
    """Runs the experiment, writes ``results.json``, the plots and the agents into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    train_family, agent = config.train.make_family(), config.train.make_agent()
    trained = protocol.train_and_save(config.train, out_dir / "agent", progress=progress)
    sizes = split_sizes(config.eval_tasks)
    run_policy = jax.jit(baselines.run_policy, static_argnums=(0, 1, 4))
    readout_key, conditions_key = jax.random.split(protocol.held_out_key(config.train))

    def play(family, key, num_steps):  # every seed's Histories on one condition's tasks
        task_key, agent_key = jax.random.split(key)
        tasks = sample_tasks(family, task_key, config.eval_tasks)
        played = rollout_population_jit(family, agent, trained.params, agent_key, tasks, num_steps)
        return (
            tasks,
            played,
            [seed_histories(trained, seed, played, train_family, agent) for seed in range(trained.num_seeds)],
        )

    _, _, in_distribution = play(train_family, readout_key, train_family.horizon)
    readouts = [
        fit_readouts(histories, sizes, key, config.mlp_steps)
        for histories, key in zip(
            in_distribution,
            jax.random.split(jax.random.fold_in(readout_key, 1), trained.num_seeds),
            strict=True,
        )
    ]
    del in_distribution

    conditions = [{} for _ in readouts]  # per seed: condition name -> its figures
    per_step = {}
    for index, (name, (family, num_steps)) in enumerate(
        test_conditions(train_family.horizon, config.horizon_factor).items()
    ):
        play_key, optimal_key, probe_key = jax.random.split(jax.random.fold_in(conditions_key, index), 3)
        tasks, played, per_seed_histories = play(family, play_key, num_steps)
        optimal = run_policy(family, baselines.bayes_optimal(family), optimal_key, tasks, num_steps)
        for seed_index, histories in enumerate(per_seed_histories):
            conditions[seed_index][name] = condition_results(
                histories,
                optimal,
                readouts[seed_index],
                sizes,
                probe_key,
                config.mlp_steps,
                test_family=repr(family),
                steps=num_steps,
            )
        per_step[name] = (
            np.asarray(played.rewards).mean(axis=(0, 2)),  # over seeds and tasks
            np.asarray(optimal.rewards).mean(axis=1),
        )
        del played, per_seed_histories

    blind, optimal_value = evidence_blind_return(train_family), baselines.bayes_optimal_value(train_family)
    per_seed = [
        FailureSeed(
            seed=seed,
            train=SeedTraining.of(trained, index),
            learning=learning(
                seed_conditions["in distribution"].return_["agent"],
                blind,
                optimal_value,
                config.min_learning_fraction,
            ),
            conditions=seed_conditions,
        )
        for index, (seed, seed_conditions) in enumerate(zip(config.train.seeds, conditions, strict=True))
    ]
    included = [entry.learning.included for entry in per_seed]
    per_seed_conditions = [entry.to_dict()["conditions"] for entry in per_seed]
    results = FailureResults.of(
        NAME,
        protocol.config_dict(config),
        trained,
        per_seed,
        exclusion=Exclusion(
            rule=RULE,
            min_learning_fraction=config.min_learning_fraction,
            evidence_blind_return=blind,
            bayes_optimal_return=optimal_value,
            excluded_seeds=tuple(entry.seed for entry in per_seed if not entry.learning.included),
            num_excluded=included.count(False),
            num_included=included.count(True),
        ),
        verdicts=tuple(verdicts(per_seed_conditions, included, MEASURES, HYPOTHESES)),
        paired_differences=tuple(paired_differences(per_seed_conditions, included)),
    )
    output.write_json(out_dir / "results.json", results.to_dict())
    protocol.plot_learning_curve(out_dir / "learning_curve.png", config.train, trained)
    mean_conditions = seeds.means(results.summary["conditions"])
    plots.failure_summary(out_dir / "failure.png", mean_conditions, per_step, train_family.horizon)
    return results


def evidence_blind_return(family) -> float:
    """The exact expected return of the best policy that ignores the evidence: always the arm
    better under ``family``'s prior (p uniform on its ``p_support``)."""
    mean_p = float(np.mean(family.p_support))
    return family.horizon * max(mean_p, 1.0 - mean_p)


LIKELIHOOD_PAIRS = (  # the held-out log-likelihoods compared seed by seed
    ("training posterior", "counts"),
    ("training posterior", "test posterior"),
    ("training log-odds", "training posterior"),
)


def paired_differences(per_seed: list[dict], included: list[bool]) -> list[PairedDifference]:
    """Per condition: agent - untrained on every measure, and the held-out log-likelihood per
    choice of one hypothesis minus another (``LIKELIHOOD_PAIRS``), seed by seed, with intervals
    over the seeds ``included`` keeps. ``per_seed``: each seed's ``conditions`` (``results.json``)."""
    rows = []
    for condition in per_seed[0]:
        for measure, (_, read, _) in MEASURES.items():
            states = [seed[condition]["states"] for seed in per_seed]
            rows.append(
                paired_difference(
                    f"{measure}: agent - untrained",
                    condition,
                    [read(state["agent"]) for state in states],
                    [read(state["untrained"]) for state in states],
                    included,
                )
            )
        for first, second in LIKELIHOOD_PAIRS:
            likelihoods = [seed[condition]["choices"]["per_choice"] for seed in per_seed]
            rows.append(
                paired_difference(
                    f"log-likelihood per choice: {first} - {second}",
                    condition,
                    [each[first] for each in likelihoods],
                    [each[second] for each in likelihoods],
                    included,
                )
            )
    return rows


# ----------------------------------------------------------------------------- the printed summary
def table(results: FailureResults) -> str:
    """The printed summary over seeds: per test condition the return gap and the disagreement
    shares; per measure every state's figure; the verdicts (mean [95% interval over seeds])."""
    cell = seeds.format_interval
    conditions = results.summary["conditions"]
    returns = [
        ["test condition", "steps", "agent", "Bayes-opt.", "gap", "gap %", "post. ≠ majority", "train ≠ test"]
    ]
    for name, c in conditions.items():
        returns.append(
            [
                name,
                f"{c['steps']['mean']:.0f}",
                cell(c["return"]["agent"], ".2f"),
                cell(c["return"]["bayes_optimal"], ".2f"),
                cell(c["gap"], ".2f"),
                cell(seeds.percent(c["gap_fraction"]), ".1f"),
                cell(seeds.percent(c["disagreement"]["posterior_vs_majority"]), ".1f") + "%",
                cell(seeds.percent(c["disagreement"]["training_vs_test"]), ".1f") + "%",
            ]
        )
    blocks = [_header(results), output.format_table(returns)]
    for label, read, _ in MEASURES.values():
        rows = [["test condition", *STATES]]
        for name, c in conditions.items():
            rows.append([name, *(_cell_or_dash(read(c["states"][state])) for state in STATES)])
        blocks.append(f"{label}:\n" + output.format_table(rows))
    blocks += [_choices_table(conditions), _verdict_table(results), _differences_table(results)]
    return "\n\n".join(blocks)


def _choices_table(conditions: dict) -> str:
    """Held-out log-likelihood per choice under each hypothesis, and the evidence weights' ratio."""
    cell = seeds.format_interval
    rows = [["test condition", *HYPOTHESES, "agent policy", *(f"{n}: f / s" for n in NETWORKS)]]
    for name, c in conditions.items():
        likelihood = c["choices"]["per_choice"]
        ratios = [cell(c["evidence_weights"][network]["ratio"], ".2f") for network in NETWORKS]
        rows.append([name, *(cell(likelihood[h], ".3f") for h in (*HYPOTHESES, "agent policy")), *ratios])
    low, high = TRAIN_SUPPORT
    return (
        "held-out log-likelihood per choice (nats; chance -0.693) under each hypothesis's softmax, "
        "and the policy log-odds' weight of failures over successes (majority -1, training posterior "
        f"{log_odds_ratio((low, high)):.2f}):\n" + output.format_table(rows)
    )


def _verdict_table(results: FailureResults) -> str:
    """Each verdict: the learning seeds' count per hypothesis, and each seed's."""
    exclusion = results.exclusion
    rows = [
        ["measure", "condition", "agent", "seeds: " + " / ".join(SHORT.values()) + " / undecided", "per seed"]
    ]
    for row in results.verdicts:
        counts = " / ".join(str(row.counts[name]) for name in (*HYPOTHESES, "undecided"))
        per_seed = ", ".join("excl." if v is None else SHORT.get(v, v) for v in row.per_seed)
        rows.append([row.measure, row.condition, seeds.format_interval(row.agent, ".2f"), counts, per_seed])
    return (
        f"verdicts per seed, only between hypotheses a measure separates ({exclusion.num_excluded} of "
        f"{exclusion.num_excluded + exclusion.num_included} seeds excluded: in-distribution return below "
        f"{exclusion.min_learning_fraction:.2f} of the way from evidence-blind "
        f"{exclusion.evidence_blind_return:.2f} to Bayes-optimal {exclusion.bayes_optimal_return:.2f}):\n"
        + output.format_table(rows)
    )


def _differences_table(results: FailureResults) -> str:
    rows = [["difference", "condition", "learning seeds"]]
    for row in results.paired_differences:
        rows.append([row.quantity, row.condition, seeds.format_interval(row.interval, ".3f")])
    return (
        "paired per-seed differences, mean [95% interval over the learning seeds]:\n"
        + output.format_table(rows)
    )


def _header(results: FailureResults) -> str:
    config = results.config
    return (
        f"failure: trained on dependent_bandit(support={TRAIN_SUPPORT}), horizon "
        f"{config['train']['family_args']['horizon']}; {results.train.num_seeds} seeds; "
        f"{config['eval_tasks']} test tasks per condition ({results.device}); trained "
        f"{results.train.seconds:.0f} s; figures: mean [95% interval over seeds]"
    )


def _cell_or_dash(interval: dict) -> str:
    return "–" if interval["mean"] is None else seeds.format_interval(interval, ".2f")
