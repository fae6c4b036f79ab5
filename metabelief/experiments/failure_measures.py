"""The failure experiment on one seed and one test condition: the histories its agent played, the
states each hypothesis control reads from them, and the measures taken on every state.

``metabelief.experiments.failure``'s docstring defines the training prior, the hypothesis
controls (``HYPOTHESES``) and the measures (``MEASURES``); ``condition_results`` takes them all and
returns one ``Condition`` (``results.json``'s keys: ``metabelief.experiments.results``).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from metabelief import probes, train
from metabelief.analysis.records import Record
from metabelief.experiments import output
from metabelief.experiments.failure_choices import (
    ChoiceLikelihood,
    EvidenceWeights,
    choice_likelihood,
    evidence_weights,
    ratio_and_se,
    training_log_odds,
)
from metabelief.rollout import (
    Trajectory,
    lane_moments,
    replay_beliefs,
    replay_jit,
    sample_rows,
    split_lanes,
)
from metabelief.tasks.dependent_bandit import evidence_for_p

TRAIN_SUPPORT = (0.1, 0.55)
HYPOTHESES = ("counts", "training posterior", "test posterior", "training log-odds")  # a control each
STATES = ("agent", "untrained", *HYPOTHESES)
NETWORKS = ("agent", "untrained")  # the states with a policy of their own


# ----------------------------------------------------------------------------- one condition's figures
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


def seed_histories(
    trained: train.TrainResult, index: int, played: Trajectory, train_family, agent
) -> Histories:
    """Seed ``index``'s agent on one condition (``played``: every seed's play, ``[S, T, N, ...]``), with
    the untrained replay and both posteriors (``train_family``'s and the test family's)."""
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


def fit_readouts(
    histories: Histories, sizes: tuple[int, int, int], key: jax.Array, mlp_steps: int
) -> dict[str, probes.MLPReadout]:
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
        decoded = probes.apply_mlp(readouts[name], sample_rows(state)).reshape(state.shape[:2])
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
        (sample_rows(x), sample_rows(y))
        for x, y in zip(split_lanes(state, sizes), split_lanes(target, sizes), strict=True)
    ]


# ----------------------------------------------------------------------------- the measures' catalogue
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
