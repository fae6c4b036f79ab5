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

**Measures** (test lanes, every state):

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
import functools
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from metabelief import baselines, probes, train
from metabelief.analysis.records import Record
from metabelief.experiments import output, plots, protocol, seeds
from metabelief.experiments.failure_choices import (
    ChoiceLikelihood,
    EvidenceWeights,
    choice_likelihood,
    evidence_weights,
    log_odds_ratio,
    ratio_and_se,
    training_log_odds,
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
from metabelief.rollout import (
    Trajectory,
    lane_moments,
    replay_beliefs,
    replay_jit,
    rollout_population_jit,
    sample_tasks,
    split_lanes,
)
from metabelief.tasks import DependentArms, dependent_bandit
from metabelief.tasks.dependent_bandit import evidence_for_p
from metabelief.tasks.validation import integer_at_least

NAME = "failure"
SUMMARY = "train on p in {0.1, 0.55}; test on other priors: return gap, whose posterior it holds and acts on"

TRAIN_SUPPORT = (0.1, 0.55)
HYPOTHESES = ("counts", "training posterior", "test posterior", "training log-odds")  # a control each
STATES = ("agent", "untrained", *HYPOTHESES)
SHORT = {
    "counts": "counts",
    "training posterior": "train",
    "test posterior": "test",
    "training log-odds": "log-odds",
}
NETWORKS = ("agent", "untrained")  # the states with a policy of their own


@dataclasses.dataclass(frozen=True)
class FailureConfig:
    """The experiment; ``train`` holds the agent and A2C settings."""

    train: train.TrainConfig = train.TrainConfig(
        family="dependent_bandit",
        family_args=(("horizon", 100), ("support", TRAIN_SUPPORT)),
        num_tasks=1024,
        num_updates=400,
        updates_per_chunk=25,
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


# ----------------------------------------------------------------------------- results
@dataclasses.dataclass(frozen=True)
class Preference(Record):
    """``prefers_training_arm``: where the training posterior's greedy arm and another rule's differ."""

    steps: int  # the number of steps where they differ (neither a tie)
    probability: float | None  # the policy's mean probability of the training arm there; None: no step
    se: float | None  # its standard error, task lanes as clusters; None: fewer than 2 lanes with a step


@dataclasses.dataclass(frozen=True)
class ReadoutComparison(Record):
    """``compare_readout``: the frozen read-out of E_train[p] against each prior's posterior mean."""

    rmse: dict[str, float]  # "training prior", "test prior"
    rmse_by_time: dict[str, tuple[float, ...]]  # the same per step
    closer_to_training: float | None  # share of the differing pairs nearer the training posterior
    closer_to_training_se: float | None  # its standard error, task lanes as clusters
    differing_pairs: int  # (step, task) pairs where the two posterior means differ by > 1e-3
    confidence: dict[str, float]  # mean |E[p] - 1/2| of the "read-out" and of each posterior


@dataclasses.dataclass(frozen=True)
class RefitR2(Record):
    """Held-out R^2 of state -> a posterior mean, probes refitted on the test histories."""

    linear: float | None
    mlp: float | None


@dataclasses.dataclass(frozen=True)
class StateFigures(Record):
    """Every measure of one state (one of ``STATES``) on one test condition."""

    follows_posterior_not_majority: Preference
    follows_training_prior: Preference
    readout: ReadoutComparison
    r2_posterior_mean: dict[str, RefitR2]  # "training prior", "test prior"


@dataclasses.dataclass(frozen=True)
class Disagreement(Record):
    """Share of test steps where two greedy choices pick different arms (neither a tie)."""

    posterior_vs_majority: float  # the training posterior's vs the empirical majority's
    training_vs_test: float  # the training posterior's vs the test posterior's


@dataclasses.dataclass(frozen=True)
class Condition(Record):
    """One seed's figures on one test condition."""

    return_: dict[str, float]  # "agent", "bayes_optimal" (of the test prior): mean return per episode
    return_se: dict[str, float]
    gap: float  # bayes_optimal - agent, mean over tasks
    gap_se: float
    gap_fraction: float  # gap / bayes_optimal's return
    disagreement: Disagreement
    states: dict[str, StateFigures]  # each of ``STATES``
    choices: ChoiceLikelihood  # the agent's held-out choices under each hypothesis's softmax
    evidence_weights: dict[str, EvidenceWeights]  # each of ``NETWORKS``: its policy log-odds on (s, f)
    test_family: str  # the test family's repr
    steps: int  # steps per episode played


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


@dataclasses.dataclass(frozen=True)
class StateView:
    """One state's reading of a set of histories: the state ``[T, N, d]`` and its policy's
    probability of arm 0 ``[T, N]``."""

    state: jax.Array
    arm_0: jax.Array


@dataclasses.dataclass(frozen=True)
class Histories:
    """One seed's agent on one condition's tasks, with the quantities every state is measured against."""

    history: Trajectory  # the trained agent's own play, test beliefs in lockstep
    untrained: Trajectory  # the initial network replayed on it
    training_mean: jax.Array  # [T, N] E[p | history] under the training prior
    test_mean: jax.Array  # [T, N] under the test prior
    counts: jax.Array  # [T, N, 2] evidence counts [s, f] before each step

    def views(self) -> dict[str, StateView]:
        """Each state of ``STATES`` on these histories, zero-padded to the network's width (a zero
        column is standardised away by every probe, and one compiled fit then serves all states)."""
        s, f = self.counts[..., 0], self.counts[..., 1]
        width = self.history.hidden.shape[-1]
        greedy_on_training = _step(self.training_mean - 0.5)
        log_odds = jnp.stack([training_log_odds(self.counts, TRAIN_SUPPORT), s + f], axis=-1)
        views = {
            "agent": (self.history.hidden, jax.nn.softmax(self.history.logits)[..., 0]),
            "untrained": (self.untrained.hidden, jax.nn.softmax(self.untrained.logits)[..., 0]),
            "counts": (self.counts, _step(s - f)),
            "training posterior": (self.training_mean[..., None], greedy_on_training),
            "test posterior": (self.test_mean[..., None], _step(self.test_mean - 0.5)),
            "training log-odds": (log_odds, greedy_on_training),
        }
        return {name: StateView(_pad(state, width), arm_0) for name, (state, arm_0) in views.items()}

    def decisions(self) -> dict[str, jax.Array]:
        """``[T, N]`` per hypothesis: the decision variable its greedy control acts on (arm 0
        where positive), in its own units: s - f, 2 E[p] - 1 under either prior, and the training
        log posterior odds less its value where E_train[p] = 1/2."""
        low, high = TRAIN_SUPPORT
        return {
            "counts": self.counts[..., 0] - self.counts[..., 1],
            "training posterior": 2.0 * self.training_mean - 1.0,
            "test posterior": 2.0 * self.test_mean - 1.0,
            "training log-odds": training_log_odds(self.counts, TRAIN_SUPPORT)
            - math.log((0.5 - low) / (high - 0.5)),
        }


def _pad(state: jax.Array, width: int) -> jax.Array:
    return jnp.pad(state, [(0, 0)] * (state.ndim - 1) + [(0, width - state.shape[-1])])


def evidence_counts(history: Trajectory) -> jax.Array:
    """``[T, N, 2]``: outcomes with likelihood p and with likelihood 1 - p before each step."""
    favours_p = evidence_for_p(history.actions, history.rewards)
    before = jnp.cumsum(favours_p, axis=0) - favours_p
    steps = jnp.arange(favours_p.shape[0], dtype=jnp.float32)[:, None]
    return jnp.stack([before, steps - before], axis=-1)


def _step(x: jax.Array) -> jax.Array:
    """1 where x > 0, 0 where x < 0, 1/2 at 0: a greedy choice of arm 0 with ties split."""
    return 0.5 * (1.0 + jnp.sign(x))


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
            [_histories(trained, index, played, train_family, agent) for index in range(trained.num_seeds)],
        )

    _, _, in_distribution = play(train_family, readout_key, train_family.horizon)
    readouts = [
        _fit_readouts(seed_histories, sizes, key, config.mlp_steps)
        for seed_histories, key in zip(
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

    final_returns = protocol.final_training_return(trained)
    blind, optimal_value = evidence_blind_return(train_family), baselines.bayes_optimal_value(train_family)
    per_seed = [
        FailureSeed(
            seed=seed,
            train=SeedTraining(final_training_return=float(final)),
            learning=learning(
                seed_conditions["in distribution"].return_["agent"],
                blind,
                optimal_value,
                config.min_learning_fraction,
            ),
            conditions=seed_conditions,
        )
        for seed, final, seed_conditions in zip(config.train.seeds, final_returns, conditions, strict=True)
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


def _histories(trained, index, played, train_family, agent) -> Histories:
    """Seed ``index``'s agent on one condition, with the untrained replay and both posteriors."""
    history = train.select_seed(played, index)
    return Histories(
        history=history,
        untrained=replay_jit(train_family, agent, trained.seed_initial_params(index), history),
        training_mean=_posterior_means(train_family, history)[..., 0],
        test_mean=history.features[..., 0],
        counts=evidence_counts(history),
    )


@functools.partial(jax.jit, static_argnums=0)
def _posterior_means(family, history: Trajectory) -> jax.Array:
    """``family``'s exact posterior means before each decision of ``history``, ``[T, N, D]``:
    its belief replayed on the history (no network needed)."""
    beliefs = replay_beliefs(family, history)
    return jax.vmap(jax.vmap(family.belief_features))(beliefs)[..., : history.truth.shape[-1]]


def _fit_readouts(histories: Histories, sizes, key, mlp_steps) -> dict[str, probes.MLPReadout]:
    """Per state, an MLP read-out state -> E_train[p] fitted on in-distribution train/validation lanes."""
    target = histories.training_mean[..., None]
    keys = jax.random.split(key, len(STATES))
    readouts = {}
    for (name, view), state_key in zip(histories.views().items(), keys, strict=True):
        fit, validation, _ = _samples(view.state, target, sizes)
        readouts[name] = probes.fit_mlp(state_key, fit, validation, num_steps=mlp_steps)
    return readouts


def condition_results(
    histories: Histories,
    optimal: Trajectory,
    readouts: dict[str, probes.MLPReadout],
    sizes: tuple[int, int, int],
    key: jax.Array,
    mlp_steps: int,
    *,
    test_family: str,
    steps: int,
) -> Condition:
    """One seed's figures on one test condition (``test_family``, played for ``steps`` steps): the
    return gap, how often the posteriors and the majority disagree, and every measure for every
    state of ``STATES``."""
    agent_return = output.mean_and_se(histories.history.rewards.sum(axis=0))
    optimal_return = output.mean_and_se(optimal.rewards.sum(axis=0))
    gap = output.mean_and_se(optimal.rewards.sum(axis=0) - histories.history.rewards.sum(axis=0))

    def test_lanes(array):
        return split_lanes(array, sizes)[2]

    training_mean, test_mean = test_lanes(histories.training_mean), test_lanes(histories.test_mean)
    majority = _majority_arm_0(test_lanes(histories.counts))
    states = {}
    views = histories.views()
    for (name, view), state_key in zip(views.items(), jax.random.split(key, len(views)), strict=True):
        state = test_lanes(view.state)
        decoded = probes.apply_mlp(readouts[name], _flat(state)).reshape(state.shape[:2])
        arm_0 = test_lanes(view.arm_0)
        states[name] = StateFigures(
            follows_posterior_not_majority=prefers_training_arm(arm_0, training_mean, majority),
            follows_training_prior=prefers_training_arm(arm_0, training_mean, _step(test_mean - 0.5)),
            readout=compare_readout(decoded, training_mean, test_mean),
            r2_posterior_mean={
                prior: _refit_r2(view.state, mean[..., None], sizes, prior_key, mlp_steps)
                for (prior, mean), prior_key in zip(
                    (("training prior", histories.training_mean), ("test prior", histories.test_mean)),
                    jax.random.split(state_key),
                    strict=True,
                )
            },
        )
    test_counts = test_lanes(histories.counts)
    return Condition(
        return_={"agent": agent_return[0], "bayes_optimal": optimal_return[0]},
        return_se={"agent": agent_return[1], "bayes_optimal": optimal_return[1]},
        gap=gap[0],
        gap_se=gap[1],
        gap_fraction=gap[0] / optimal_return[0],
        disagreement=Disagreement(
            posterior_vs_majority=_share_disagreeing(_step(training_mean - 0.5), majority),
            training_vs_test=_share_disagreeing(_step(training_mean - 0.5), _step(test_mean - 0.5)),
        ),
        states=states,
        choices=choice_likelihood(
            histories.decisions(),
            histories.history.actions == 0,
            histories.history.logits,
            sizes[0] + sizes[1],
        ),
        evidence_weights={
            name: evidence_weights(_policy_log_odds(test_lanes(trajectory.logits)), test_counts)
            for name, trajectory in (("agent", histories.history), ("untrained", histories.untrained))
        },
        test_family=test_family,
        steps=steps,
    )


def _policy_log_odds(logits: jax.Array) -> jax.Array:
    """``[T, N]``: log P(arm 0) / P(arm 1) of a policy's logits ``[T, N, 2]``."""
    return logits[..., 0] - logits[..., 1]


def _majority_arm_0(counts: jax.Array) -> jax.Array:
    """``[T, N]``: 1 where the evidence favours arm 0 (s > f), 0 where arm 1, 1/2 on a tie."""
    return _step(counts[..., 0] - counts[..., 1])


def _share_disagreeing(first: jax.Array, second: jax.Array) -> float:
    """Share of steps where two greedy choices (1, 0 or 1/2 for a tie) pick different arms, neither a tie."""
    return float(jnp.mean((first != 0.5) & (second != 0.5) & (first != second)))


def prefers_training_arm(arm_0: jax.Array, training_mean: jax.Array, other_arm_0: jax.Array) -> Preference:
    """Where acting greedily on the training posterior and another rule pick different arms, the
    probability a policy gives the training posterior's arm.

    Arm 0 pays p and arm 1 pays 1 - p, so acting greedily on a posterior picks arm 0 when
    E[p] > 1/2. Steps where either choice is a tie do not count.

    Args:
      arm_0: ``[T, N]`` the policy's probability of arm 0.
      training_mean: ``[T, N]`` E[p | history] under the training prior.
      other_arm_0: ``[T, N]`` the other rule's choice of arm 0: 1, 0, or 1/2 for a tie (the test
        posterior's greedy choice, or the empirical majority's).

    Returns:
      ``Preference``: ``steps``, the number of disagreeing steps, and ``probability``, the mean
      probability there, None if none (1: the policy acts on the training posterior there; 0: on
      the other rule); ``se``, its standard error with the N task lanes as clusters (a ratio of
      sums over lanes, ``failure_choices.ratio_and_se``), None with fewer than 2 lanes with a step.
    """
    steps, lanes, total, se = jax.device_get(_preference_sums(arm_0, training_mean, other_arm_0))
    return Preference(
        steps=int(steps),
        probability=float(total / steps) if steps else None,
        se=float(se) if lanes > 1 else None,
    )


@jax.jit
def _preference_sums(arm_0, training_mean, other_arm_0) -> tuple[jax.Array, ...]:
    """The number of disagreeing steps, of lanes with one, the sum of the training arm's
    probability over them, and the lane-clustered standard error of its mean."""
    margin = 1e-6  # E[p] within this of 1/2 (in float32, a posterior all but settled on 1/2) is a tie
    training_arm_0 = jnp.where(jnp.abs(training_mean - 0.5) > margin, _step(training_mean - 0.5), 0.5)
    disagree = (training_arm_0 != 0.5) & (other_arm_0 != 0.5) & (training_arm_0 != other_arm_0)
    chosen = jnp.where(training_arm_0 == 1.0, arm_0, 1.0 - arm_0)
    per_lane_steps = disagree.sum(axis=0)  # [N]
    per_lane_total = jnp.sum(jnp.where(disagree, chosen, 0.0), axis=0)
    _, se = ratio_and_se(per_lane_total, per_lane_steps.astype(jnp.float32))
    return per_lane_steps.sum(), jnp.sum(per_lane_steps > 0), per_lane_total.sum(), se


def compare_readout(decoded: jax.Array, training_mean: jax.Array, test_mean: jax.Array) -> ReadoutComparison:
    """Is the frozen read-out of a state's belief the posterior under the training or the test prior?

    Args:
      decoded: ``[T, N]`` the in-distribution read-out applied to test histories; ``training_mean``,
        ``test_mean``: ``[T, N]`` E[p | history] under each prior.

    Returns:
      ``ReadoutComparison``: ``rmse`` and ``rmse_by_time`` against each posterior mean;
      ``closer_to_training``, the share of the (step, task) pairs where the two posteriors differ
      (by more than 1e-3) on which the read-out is nearer the training prior's (None where they
      never differ), ``closer_to_training_se`` its standard error (task lanes as clusters; None
      with fewer than 2 lanes with a pair); ``differing_pairs``, the number of those pairs;
      ``confidence``, mean |E[p] - 1/2| of the read-out and of each posterior (how sure each is).
    """
    stats = jax.device_get(_readout_statistics(decoded, training_mean, test_mean))
    pairs = int(stats["pairs"])
    return ReadoutComparison(
        rmse={prior: float(value) for prior, value in stats["rmse"].items()},
        rmse_by_time={prior: tuple(value.tolist()) for prior, value in stats["rmse_by_time"].items()},
        closer_to_training=float(stats["nearer_training"] / pairs) if pairs else None,
        closer_to_training_se=float(stats["nearer_training_se"]) if stats["lanes"] > 1 else None,
        differing_pairs=pairs,
        confidence={name: float(value) for name, value in stats["confidence"].items()},
    )


@jax.jit
def _readout_statistics(decoded, training_mean, test_mean) -> dict:
    means = {"training prior": training_mean, "test prior": test_mean}
    squared = {prior: (decoded - mean) ** 2 for prior, mean in means.items()}
    differ = jnp.abs(training_mean - test_mean) > 1e-3
    nearer_per_lane = jnp.sum(differ & (squared["training prior"] < squared["test prior"]), axis=0)  # [N]
    pairs_per_lane = differ.sum(axis=0)
    return {
        "rmse": {prior: jnp.sqrt(error.mean()) for prior, error in squared.items()},
        "rmse_by_time": {prior: jnp.sqrt(error.mean(axis=1)) for prior, error in squared.items()},
        "pairs": differ.sum(),
        "lanes": jnp.sum(pairs_per_lane > 0),
        "nearer_training": nearer_per_lane.sum(),
        "nearer_training_se": ratio_and_se(
            nearer_per_lane.astype(jnp.float32), pairs_per_lane.astype(jnp.float32)
        )[1],
        "confidence": {
            name: jnp.abs(value - 0.5).mean() for name, value in (("read-out", decoded), *means.items())
        },
    }


def _refit_r2(state: jax.Array, target: jax.Array, sizes, key: jax.Array, mlp_steps: int) -> RefitR2:
    """Held-out R^2 of state -> target (``[T, N, 1]``), probes refitted on these histories: a linear
    read-out and an MLP (a saturating posterior is not linear in anything that counts)."""
    width = state.shape[-1]
    moments = lane_moments(state, target, sizes)
    linear = probes.linear_probe(moments, slice(0, width), slice(width, width + 1)).test.r2
    mlp = probes.mlp_probe(key, *_samples(state, target, sizes), num_steps=mlp_steps).r2
    return RefitR2(linear=float(linear), mlp=float(mlp))


def _samples(state: jax.Array, target: jax.Array, sizes) -> list[tuple[jax.Array, jax.Array]]:
    """``(x [n * T, d], y [n * T, 1])`` sample rows per split of task lanes."""
    return [
        (_flat(x), _flat(y))
        for x, y in zip(split_lanes(state, sizes), split_lanes(target, sizes), strict=True)
    ]


def _flat(array: jax.Array) -> jax.Array:
    return array.reshape(-1, array.shape[-1])


# ----------------------------------------------------------------------------- verdicts
def _figure(*path):
    """Reads ``entry[path[0]][path[1]]...`` of one state's entry (a seed's or the summary's)."""
    return lambda entry: functools.reduce(lambda node, key: node[key], path, entry)


def _no_se(entry) -> None:
    return None


MEASURES = {  # name -> (label, one state's figure, its within-seed standard error or None)
    "follows_posterior_not_majority": (
        "P(training-posterior arm) where it and the majority differ",
        _figure("follows_posterior_not_majority", "probability"),
        _figure("follows_posterior_not_majority", "se"),
    ),
    "follows_training_prior": (
        "P(training-posterior arm) where the training and test posteriors differ",
        _figure("follows_training_prior", "probability"),
        _figure("follows_training_prior", "se"),
    ),
    "readout_closer_to_training": (
        "frozen read-out nearer the training posterior (share of pairs)",
        _figure("readout", "closer_to_training"),
        _figure("readout", "closer_to_training_se"),
    ),
    "refit_r2_test_prior": (
        "refitted R² state → test-prior E[p] (MLP)",
        _figure("r2_posterior_mean", "test prior", "mlp"),
        _no_se,  # the MLP probe reports no per-sample errors: taken as exact
    ),
}
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
