"""What ``metabelief run`` returns and writes: the result types and the schema of ``results.json``.

Every experiment's ``run`` returns typed results (frozen dataclasses, ``Record`` of
``metabelief.analysis.records``) and writes their ``to_dict()`` as ``results.json``: each field
name is a key (a field ``return_`` writes ``"return"``), NaN is written as ``null``, tuples as
lists, and every key is a field's name or a name the run chose (a network, a policy, a test
condition), never built from strings. This docstring is the one description of that file.

**Common part** (``ExperimentResults``; ``rl2-table``'s differs, below)::

    experiment          the experiment's name ("bandit", "gridworld", "two-step", "failure", "family")
    config              the experiment's config fields; config.train is the TrainConfig (to_dict)
    device              where it ran, e.g. "cpu x1" or "gpu: NVIDIA H100 80GB HBM3 x1"
    provenance          what ran (``Provenance``): commit (``git rev-parse HEAD`` of the checkout
                        the package was imported from, null when it is not one), uncommitted_changes
                        (whether tracked files differed from that commit, null without a commit),
                        and the versions of python, numpy, jax, jaxlib, flax and optax
    train               the population's training (TrainStats): seconds, compile_seconds,
                        agent_steps_per_second (all seeds together), num_seeds,
                        dynamics_seconds_per_checkpoint and dynamics_compile_seconds (what the
                        evaluations during training cost; null without them)
    seeds               one entry per seed, in order: seed and the keys a one-seed run writes
    summary             the keys of one entry but "seed", every number replaced by
                        {"mean", "low", "high", "n", "method"}: the mean over seeds and its 95%
                        interval (``metabelief.experiments.seeds``; lists element by element,
                        other values kept where every seed agrees), by the method
                        ``metabelief.experiments.interval_rules`` declares for the key:
                        "bootstrap" (expanded percentile, over seeds) for the bounded figures:
                        every R² (r2, r2_per_dim, r2_by_time, r2_posterior_mean, r2_all,
                        read_out_r2, read_out_r2_target, controls.per_dimension,
                        controls.<...>.per_dimension, controls.mlp), MSEs, truth MSEs and
                        next-outcome log-losses, the state machine's dissimilarities and its
                        output measures' mapped, floor, random and normalised, and two-step's
                        stay probabilities; "t+tasks" for the return fractions (return_fraction_*:
                        Student t over seeds widened by their <key>_se, the error of the
                        held-out tasks all seeds share); "t" (Student t) for every other number

**One seed's entry** of a protocol experiment (``SeedResult``; bandit, gridworld, two-step, family)::

    seed                the seed the agent was trained with
    train.final_training_return   its mean training return over the last 10 updates
    train.dynamics                its evaluations during training (``SeedDynamics``; null with
                                  ``checkpoints=0``): ``updates`` (per checkpoint), ``series.<name>``
                                  (``metabelief.train.dynamics.SERIES``: return, r2_trained,
                                  r2_untrained, r2_input_only, dissimilarity_agent_to_bayes,
                                  dissimilarity_bayes_to_agent; one value per checkpoint),
                                  ``reached.<return | r2_trained | dissimilarity_agent_to_bayes>``
                                  (the update from which it stays past 90% of its rise) and ``lag``
                                  (reached r2_trained - reached return)
    return.{agent, <policy>...}   mean return per episode on the held-out tasks: the agent and
                                  each reference policy (the same tasks for every seed)
    return_se.{...}               the standard error of each over the held-out tasks

and, per experiment (``<fraction>_se``: the fraction's standard error over the held-out tasks, the
delta method paired by task, ``metabelief.experiments.fractions``):

* ``bandit`` (``bandit.BanditSeed``): ``return_fraction_random_to_thompson`` ((agent - random) /
  (thompson - random), of the returns on the held-out tasks),
  ``return_fraction_random_to_bayes_optimal`` (the same between the exact expected returns from
  the prior of random play, ``fractions.exact_random_return``, and of the Bayes-optimal DP,
  ``baselines.bayes_optimal_value``), ``return_fraction_random_to_thompson_se`` and
  ``return_fraction_random_to_bayes_optimal_se``, ``probe``, ``intervention``, ``state_machine``,
  ``counterfactual`` (below).
* ``gridworld`` (``gridworld.GridworldSeed``): ``return_fraction_random_to_belief_greedy``,
  ``return_fraction_random_to_belief_greedy_se``, ``probe``.
* ``family`` (``family.FamilySeed``): ``return_fraction_random_to_reference`` ((agent - random) /
  (reference - random)), ``return_fraction_random_to_reference_se``, ``probe``. At the top level
  (``family.FamilyResults``) also ``family`` (its repr), ``reference`` (the policy the fraction is
  measured against: ``bayes_optimal`` where the exact DP runs, else the best other reference),
  ``bayes_optimal_value`` (the exact Bayes-optimal return from the prior, or null) and
  ``unavailable`` (reference -> why the family's capabilities did not unlock it).
* ``two-step`` (``two_step.TwoStepSeed``): ``reward_per_trial`` and ``reward_per_trial_se`` (the
  agent and each reference, per trial), ``stay.<agent | reference>`` (``two_step.StayFigures``:
  ``probs`` and ``probs_se``, P(stay) after rewarded_common, rewarded_rare, unrewarded_common,
  unrewarded_rare; ``model_based_index``, ``model_based_index_se``, ``model_free_index``,
  ``model_free_index_se``; means and s.e. over blocks of held-out tasks), ``probe``,
  ``intervention``. At the top level (``two_step.TwoStepResults``) also ``family``, the task
  family's repr.

**failure** (``failure.FailureResults``): the common part, with seed entries
(``failure.FailureSeed``) of ``seed``, ``train``, ``learning`` (``fraction``: the in-distribution
return from evidence-blind 0 to Bayes-optimal 1; ``included``: the exclusion rule keeps the seed)
and ``conditions.<test condition>`` (below), and at the top level ``exclusion``, ``verdicts`` and
``paired_differences`` (below).

**study** (``study.StudyResults``): ``experiment``, ``config`` (the grid's name, seed and cells),
``device``, ``provenance``, ``references.<task>`` (``random``, ``reference``, ``reference_policy``:
the anchors of every cell of that task on its held-out tasks), ``cells`` (one ``study.CellResult``
each: the cell's ``question``, ``task``, ``cell``, ``width``, ``objective``, ``algorithm``, its
training's ``train_seconds``, ``compile_seconds``, ``agent_steps_per_second``,
``machine_fraction``, ``seeds`` (``seed``, ``return_fraction``, ``dynamics`` as above) and
``summary`` (intervals over seeds of return_fraction, the final r2_trained, r2_untrained,
r2_input_only and dissimilarity_agent_to_bayes, reached_<series> and lag)), ``speed``
(``study.Speed``: ``grid_seconds`` (the whole run), ``train_seconds``, ``agent_steps`` (every
seed of every cell), ``agent_steps_per_second``, ``one_seed_cell`` (the cell trained alone with one
seed in the same run), ``one_seed_steps_per_second``, ``one_by_one_seconds`` (the grid's steps at
that rate)), ``smallest_widths.<model>.{return, decodability}`` and
``objective_differences.<task algorithm>.<figure>`` (predictive - RL², Welch interval).

**rl2-table** (``rl2_table.RL2TableResults``): ``experiment``, ``config``, ``device``,
``provenance``, ``num_seeds``, ``summary``, ``seeds`` and ``published_source`` (where the paper's values come
from). A seed entry (``rl2_table.RL2Seed``) is ``seed`` and ``rows``, one ``rl2_table.RowResult``
per (k, n): ``arms``, ``pulls``, ``return`` and ``return_se`` (``lstm`` and each policy: total
reward per episode and its s.e. over held-out tasks), ``lstm_over_gittins``, ``published`` (the
paper's row, or null), ``train`` (the row's ``TrainStats`` and ``updates``) and ``dynamics``
(this seed's evaluations during the row's training, as ``train.dynamics`` above).

**probe** (``probing.ProbeReport``; every score on the held-out test tasks)::

    split_sizes                       [train, validation, test] held-out tasks
    networks.<network>                "trained" and "untrained" (its initial weights, teacher
                                      forced on the trained agent's histories)
        linear                        hidden -> all belief features, ridge: r2 (pooled),
                                      r2_per_dim, mse, mse_per_dim
        posterior_mean                hidden -> the posterior means (the first D features), the same
        ridge                         the ridge strength chosen for linear
        reverse                       belief features -> hidden, ridge (r2, r2_per_dim, ...)
        mlp                           hidden -> belief features, an MLP (r2, r2_per_dim, ...)
        r2_by_time                    [T] R² of posterior_mean at each step
    controls                          (controls.ProbeControls)
        split_sizes, input_lags       the lanes and the k of the input-only baselines, ascending
        per_dimension.<network>       [F] R² of hidden -> each belief feature, a probe each
        input_only                    one per k: lags (k), r2, r2_posterior_mean, per_dimension:
                                      the last k network inputs and the time step, no network
        within_time.<network | "input_only">   r2, r2_posterior_mean with time partialled out
                                      (input_only: the largest k)
        hidden_and_memory.<network>   hidden (the readout) and memory (the whole memory, the
                                      LSTM's [hidden, cell]): r2, r2_posterior_mean each
        truth                         decoding the true task quantity: bayes_minimum (MSE of the
                                      exact posterior mean), prior (of the training tasks' mean),
                                      mse.<network | "input_only">
        headline                      hidden -> posterior means R²: trained_minus_untrained,
                                      trained_minus_input_only, trained_minus_traces,
                                      trained_minus_running_sums; with time partialled out:
                                      within_time_trained_minus_untrained,
                                      within_time_trained_minus_input_only,
                                      within_time_trained_minus_traces,
                                      within_time_trained_minus_running_sums; and mlp (of the
                                      MLP probes' R²): trained_minus_input_only,
                                      trained_minus_traces, trained_minus_running_sums (null if
                                      not defined)
        trace_time_constants          the time constants (steps) of the exponential traces
        no_learning.<"traces" | "running_sums">   r2, r2_posterior_mean, per_dimension,
                                      within_time (r2, r2_posterior_mean), truth_mse: exponential
                                      traces / running sums of the inputs and the reward-gated
                                      inputs (``no_learning``) and the time step, no network
        mlp.<network | "input_only" | "traces" | "running_sums">   R² of an MLP probe -> all
                                      features (the networks' is networks.<network>.mlp.r2)
        next_outcome                  predicting the reward of the action taken (``next_outcome``;
                                      null unless rewards are 0/1 with ExpectedRewards): exact
                                      (test log-loss of the exact posterior predictive, nats per
                                      step), no_history, log_loss.<network (its whole memory) |
                                      "input_only" | "traces" | "running_sums">, excess.<...>
                                      (log_loss - exact)

**state_machine** (bandit; ``analysis.state_machine.Simulation`` per network and histories)::

    <network>.<histories>.gamma.<bayes>       the discount of each Bayes agent's DP
    <network>.<histories>.<direction>.<map>.<measure>
        histories   agent (the trained network's own rollout), bayes (the Bayes-optimal DP's
                    rollout on the same tasks: Kuo et al.'s "bayes_sampled")
        direction   agent_to_bayes (network -> Bayes agent), bayes_to_agent
        map         linear (ridge), mlp
        measure     state_dissimilarity (1 - R²), state_dissimilarity_uncentred (Kuo et al.'s),
                    output.<bayes>.<output measure>.<figure>
        bayes       undiscounted (the DP of the total reward), training_gamma (the DP at the
                    network's training γ)
        output measure   total_variation, return_difference, return_difference_greedy
        figure      mapped (0 = the receiver acts as the source), floor (each agent at its own
                    true state), excess (mapped - floor), random (the Bayes agent vs a uniformly
                    random policy), normalised (mapped / random: 1 = no better than random)

**intervention** (bandit, two-step; ``analysis.intervention.DoseResponse`` per network; the whole
memory pushed along the decoded belief, every push of Mahalanobis norm ``|δ| mahalanobis_per_unit``
in the activity's covariance; responses are mean changes of the log-odds of the target action,
index ``[k][δ]`` = k steps after the push)::

    <network>   target, deltas, mahalanobis_per_unit, num_steps (per k),
                observational_slope (the agent's log-odds per unit of exact belief, logistic fit),
                reference_slopes.<policy> (the same fit of a reference, e.g. bayes_optimal; bandit),
                read_out_r2, read_out_r2_target, ridge
      pushes.<minimum_mahalanobis | minimum_euclidean | encoding>
                read_out_per_unit, decoded_per_unit, euclidean_norm, mahalanobis_norm,
                log_odds [k][δ], log_odds_slope [k] (per unit of decoded belief),
                causal_to_observational [k] (log_odds_slope / observational_slope)
      random    num_directions, log_odds_mean [k][δ], log_odds_std [k][δ] (over random
                directions of the same Mahalanobis norm)

**counterfactual** (bandit; ``analysis.counterfactual.UpdateTest`` per network; test lanes)::

    <network>   outcomes (the possible next outcomes: "arm a, reward r"), and per outcome:
                slope, r2 (the line of the decoded belief's change after one step of the network
                on that outcome against the exact Bayes change; 1 and 1 = Bayes's update),
                num_pairs (test step-lanes); slope_all, r2_all (every outcome pooled);
                read_out_r2 (memory -> posterior means, on the states), ridge

**conditions.<test condition>** (failure; ``failure_measures.Condition``, the measures are defined in
``metabelief.experiments.failure``'s docstring)::

    return, return_se         .agent and .bayes_optimal (of the test prior): return per episode
    gap, gap_se               bayes_optimal - agent, mean over tasks and its s.e.
    gap_fraction              gap / bayes_optimal's return
    disagreement              share of test steps where two greedy choices differ:
                              posterior_vs_majority (training posterior vs the evidence majority),
                              training_vs_test (training vs test posterior)
    states.<state>            agent, untrained, counts, training posterior, test posterior,
                              training log-odds:
        follows_posterior_not_majority, follows_training_prior
                              steps (where the two rules differ), probability (of the training
                              posterior's arm there; null without such a step), se (task lanes
                              as clusters)
        readout               the frozen in-distribution read-out of E_train[p]: rmse and
                              rmse_by_time (.training prior, .test prior), closer_to_training,
                              closer_to_training_se, differing_pairs, confidence (.read-out and
                              each prior)
        r2_posterior_mean     .training prior, .test prior: linear, mlp (refitted R²)
    choices                   (``failure_choices.ChoiceLikelihood``) the agent's held-out choices
                              under each hypothesis's softmax: per_choice and se (.<hypothesis>,
                              ."agent policy"; nats per choice), inverse_temperature
                              (.<hypothesis>, fitted on the train lanes), best (a hypothesis or
                              "undecided")
    evidence_weights.<agent | untrained>   (``failure_choices.EvidenceWeights``) the policy
                              log-odds regressed on (s, f): successes, failures, ratio, ratio_se, r2
    test_family, steps        the test family's repr, steps per episode

**exclusion** (failure; ``failure_verdicts.Exclusion``): rule, min_learning_fraction,
evidence_blind_return, bayes_optimal_return (both exact), excluded_seeds, num_excluded,
num_included.

**verdicts** (failure; ``failure_verdicts.Verdict`` per measure and condition that separates
hypotheses in a learning seed; the rule is ``failure_verdicts``' docstring)::

    measure, condition, agent (its interval over the learning seeds), untrained, controls (mean
    of each hypothesis control over the learning seeds), separates (the pairs told apart),
    per_seed (each seed's verdict: a hypothesis, "undecided", or null: excluded / no figure),
    counts (hypothesis or "undecided" -> learning seeds), excluded

**paired_differences** (failure; ``failure_verdicts.PairedDifference``): quantity, condition,
per_seed (the difference in each seed, null where excluded), interval (over the learning seeds).

The fields' docstrings and comments say what each number means; the modules that compute them
(``probing``, ``controls``, ``metabelief.analysis.state_machine``,
``metabelief.analysis.intervention``, each experiment) define them.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import pathlib
import platform
import subprocess
from collections.abc import Sequence
from typing import TYPE_CHECKING, Self

import numpy as np

from metabelief import train
from metabelief.analysis.records import Record
from metabelief.experiments import interval_rules, output
from metabelief.train.dynamics import Dynamics

if TYPE_CHECKING:
    from metabelief.experiments.protocol import Evaluation


@dataclasses.dataclass(frozen=True)
class TrainStats(Record):
    """How long training a population took and how fast it ran, and what its evaluations during
    training cost (None without them)."""

    seconds: float
    compile_seconds: float
    agent_steps_per_second: float  # all seeds together
    num_seeds: int
    dynamics_seconds_per_checkpoint: float | None = dataclasses.field(default=None, kw_only=True)
    dynamics_compile_seconds: float | None = dataclasses.field(default=None, kw_only=True)

    @classmethod
    def of(cls, trained: train.TrainResult, **extra) -> Self:
        dynamics = trained.dynamics
        return cls(
            seconds=trained.seconds,
            compile_seconds=trained.compile_seconds,
            agent_steps_per_second=trained.agent_steps_per_second,
            num_seeds=trained.num_seeds,
            dynamics_seconds_per_checkpoint=None if dynamics is None else dynamics.seconds_per_checkpoint,
            dynamics_compile_seconds=None if dynamics is None else dynamics.compile_seconds,
            **extra,
        )


@dataclasses.dataclass(frozen=True)
class SeedDynamics(Record):
    """One seed's evaluations during training (``metabelief.train.dynamics``)."""

    updates: tuple[int, ...]  # the updates done at each checkpoint
    series: dict[str, tuple[float | None, ...]]  # each of ``dynamics.SERIES``, one value per checkpoint
    reached: dict[str, float | None]  # series -> the update at which it covered 90% of its way
    lag: float | None  # reached["r2_trained"] - reached["return"]: > 0, decodable after the return rose

    @classmethod
    def of(cls, dynamics: Dynamics, index: int) -> Self:
        """Seed ``index``'s entry of a population's ``Dynamics``."""
        reached = {name: _number(dynamics.reached(name)[index]) for name in REACHED_SERIES}
        lag = None
        if reached["r2_trained"] is not None and reached["return"] is not None:
            lag = reached["r2_trained"] - reached["return"]
        return cls(
            updates=tuple(int(update) for update in dynamics.updates),
            series={
                name: tuple(_number(v) for v in values[index]) for name, values in dynamics.series.items()
            },
            reached=reached,
            lag=lag,
        )


# The series whose 90% update each seed's entry gives: the return, decodability, dissimilarity.
REACHED_SERIES = ("return", "r2_trained", "dissimilarity_agent_to_bayes")


def _number(value: float) -> float | None:
    return None if math.isnan(float(value)) else float(value)


@dataclasses.dataclass(frozen=True)
class SeedTraining(Record):
    """One seed's training."""

    final_training_return: float  # its mean training return over the last 10 updates
    dynamics: SeedDynamics | None = None  # its evaluations during training, when there were any

    @classmethod
    def of(cls, trained: train.TrainResult, index: int) -> Self:
        """Seed ``index`` of a trained population."""
        final = float(np.mean(trained.metrics["episode_return"][index, -10:]))
        dynamics = None if trained.dynamics is None else SeedDynamics.of(trained.dynamics, index)
        return cls(final_training_return=final, dynamics=dynamics)


@dataclasses.dataclass(frozen=True)
class SeedResult(Record):
    """The start of one seed's entry of a protocol experiment; each experiment's entry type
    subclasses it with its own figures."""

    seed: int
    train: SeedTraining
    return_: dict[str, float]  # "agent" and each reference policy: mean return per episode
    return_se: dict[str, float]  # their standard errors over the held-out tasks

    @classmethod
    def of(cls, evaluation: Evaluation, **figures) -> Self:
        """The entry of ``evaluation`` with the experiment's ``figures`` (the subclass's fields)."""
        return cls(
            seed=evaluation.seed,
            train=evaluation.training,
            return_={name: mean for name, (mean, _) in evaluation.returns.items()},
            return_se={name: se for name, (_, se) in evaluation.returns.items()},
            **figures,
        )


def summarize(per_seed: Sequence[Record]) -> dict:
    """The ``summary`` of seed entries: their ``to_dict()`` less ``seed``, summarised with the
    intervals ``interval_rules`` declares."""
    entries = [entry.to_dict() for entry in per_seed]
    return interval_rules.summarize(
        [{key: value for key, value in entry.items() if key != "seed"} for entry in entries]
    )


# The packages whose versions decide what a run computes, beside the Python that ran it.
VERSIONED_PACKAGES = ("numpy", "jax", "jaxlib", "flax", "optax")


@dataclasses.dataclass(frozen=True)
class Provenance(Record):
    """Which code ran: the commit of the checkout ``metabelief`` was imported from and the versions
    of the packages that decide the numbers."""

    commit: str | None  # ``git rev-parse HEAD``; None when the package is not in a git checkout
    uncommitted_changes: bool | None  # tracked files differ from ``commit``; None without a commit
    versions: dict[str, str]  # "python" and each of ``VERSIONED_PACKAGES``

    @classmethod
    def now(cls) -> Self:
        """The provenance of this process."""
        commit, changed = _git_commit(pathlib.Path(__file__).resolve().parents[2])
        versions = {"python": platform.python_version()}
        versions |= {name: importlib.metadata.version(name) for name in VERSIONED_PACKAGES}
        return cls(commit=commit, uncommitted_changes=changed, versions=versions)

    def describe(self) -> str:
        """One line, e.g. ``"commit 48fbeec (uncommitted changes); jax 0.7.1, jaxlib 0.7.1, ..."``."""
        if self.commit is None:
            code = "not a git checkout"
        else:
            code = f"commit {self.commit[:7]}{' (uncommitted changes)' if self.uncommitted_changes else ''}"
        return "; ".join([code, ", ".join(f"{name} {version}" for name, version in self.versions.items())])


def _git_commit(root: pathlib.Path) -> tuple[str | None, bool | None]:
    """``(HEAD, whether tracked files differ from it)`` of the git checkout whose top is ``root``;
    ``(None, None)`` when ``root`` is not one (an installed package inside another repository too)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):  # no git, or it hung
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or pathlib.Path(top).resolve() != root:
        return None, None
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit, (None if commit is None or status is None else bool(status))


@dataclasses.dataclass(frozen=True)
class RunResults(Record):
    """What ran, with which settings, where; ``provenance`` is taken when the results are made."""

    experiment: str
    config: dict  # the config's fields, JSON-ready (``protocol.config_dict``)
    device: str
    provenance: Provenance = dataclasses.field(default_factory=Provenance.now, kw_only=True)


@dataclasses.dataclass(frozen=True)
class ExperimentResults(RunResults):
    """``results.json`` of a population experiment (the module docstring); an experiment with
    more top-level keys subclasses it."""

    train: TrainStats
    summary: dict  # ``summarize(seeds)``: intervals over seeds
    seeds: tuple[Record, ...]

    @classmethod
    def of(
        cls, experiment: str, config: dict, trained: train.TrainResult, per_seed: Sequence[Record], **extra
    ) -> Self:
        """The results of ``per_seed`` entries, the training stats of ``trained``, the device now."""
        return cls(
            experiment=experiment,
            config=config,
            device=output.device_description(),
            train=TrainStats.of(trained),
            summary=summarize(per_seed),
            seeds=tuple(per_seed),
            **extra,
        )
