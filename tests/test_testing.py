"""check_family: passes every registered family and a user's duck-typed one, catches broken ones."""

import dataclasses
import itertools
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

import metabelief
from metabelief.tasks import BernoulliBandit, BetaBelief, DiscreteDependentBandit, SupportBelief
from metabelief.testing import FamilyCheckError, check_family, random_rollout, sample_tasks

# --- A user's family, written without subclassing TaskFamily --------------------------------------


@struct.dataclass
class CueState:
    time: jax.Array  # int32[]


@dataclasses.dataclass(frozen=True)
class NoisyCue:
    """A hidden bit z ~ Bernoulli(prior); every observation is z flipped with prob ``flip``.

    Action z pays 1 with probability ``hit``, the other action with ``1 - hit``. The belief is
    the log-odds of z = 1 and must condition on the first observation (from ``reset``).
    """

    horizon: int = 20
    prior: float = 0.3
    flip: float = 0.2
    hit: float = 0.7
    num_actions: int = 2
    obs_size: int = 1

    def sample_task(self, key):
        return jax.random.bernoulli(key, self.prior).astype(jnp.float32)

    def _cue(self, key, task):
        flipped = jax.random.bernoulli(key, self.flip)
        return jnp.where(flipped, 1.0 - task, task)[None].astype(jnp.float32)

    def reset(self, key, task):
        return CueState(time=jnp.zeros((), jnp.int32)), self._cue(key, task)

    def step(self, key, task, state, action):
        reward_key, cue_key = jax.random.split(key)
        pays = jnp.where(action == task, self.hit, 1.0 - self.hit)
        reward = jax.random.bernoulli(reward_key, pays).astype(jnp.float32)
        state = CueState(time=state.time + 1)
        return state, self._cue(cue_key, task), reward, state.time >= self.horizon

    def _cue_log_odds(self, obs):
        return jnp.where(obs[0] > 0.5, 1.0, -1.0) * np.log((1 - self.flip) / self.flip)

    def belief_init(self, obs):
        return jnp.log(self.prior / (1 - self.prior)) + self._cue_log_odds(obs)

    def belief_update(self, belief, obs, action, reward, next_obs):
        # Reward 1 after action a is evidence for z = a with likelihood ratio hit / (1 - hit).
        toward_one = jnp.where(action == 1, 1.0, -1.0) * jnp.where(reward > 0.5, 1.0, -1.0)
        return belief + toward_one * np.log(self.hit / (1 - self.hit)) + self._cue_log_odds(next_obs)

    def belief_features(self, belief):
        return jax.nn.sigmoid(belief)[None]

    def true_features(self, task, state):
        return task[None]


@struct.dataclass
class SwitchState:
    time: jax.Array  # int32[]
    bit: jax.Array  # float32[]: the hidden bit now


@dataclasses.dataclass(frozen=True)
class SwitchingCue(NoisyCue):
    """NoisyCue whose hidden bit flips with probability ``hazard`` after every step.

    The task is the starting bit; the truth is the bit in the state ``step`` returned. The exact
    belief weighs the reward on the bit acted on, predicts through the switch, then weighs the
    new cue: the timing the contract fixes.
    """

    hazard: float = 0.1

    def reset(self, key, task):
        return SwitchState(time=jnp.zeros((), jnp.int32), bit=task), self._cue(key, task)

    def step(self, key, task, state, action):
        reward_key, switch_key, cue_key = jax.random.split(key, 3)
        pays = jnp.where(action == state.bit, self.hit, 1.0 - self.hit)
        reward = jax.random.bernoulli(reward_key, pays).astype(jnp.float32)
        bit = jnp.where(jax.random.bernoulli(switch_key, self.hazard), 1.0 - state.bit, state.bit)
        state = SwitchState(time=state.time + 1, bit=bit)
        return state, self._cue(cue_key, bit), reward, state.time >= self.horizon

    def belief_update(self, belief, obs, action, reward, next_obs):
        toward_one = jnp.where(action == 1, 1.0, -1.0) * jnp.where(reward > 0.5, 1.0, -1.0)
        acted_on = jax.nn.sigmoid(belief + toward_one * np.log(self.hit / (1 - self.hit)))
        predicted = acted_on * (1 - self.hazard) + (1 - acted_on) * self.hazard
        return jnp.log(predicted / (1 - predicted)) + self._cue_log_odds(next_obs)

    def true_features(self, task, state):
        return state.bit[None]


# --- Broken families: each must fail a named check ----------------------------------------------


@dataclasses.dataclass(frozen=True)
class WrongPrior(BernoulliBandit):
    def belief_init(self, obs):
        return BetaBelief(alpha=jnp.ones(self.num_arms), beta=jnp.ones(self.num_arms))


@dataclasses.dataclass(frozen=True)
class IgnoresFailures(BernoulliBandit):
    def belief_update(self, belief, obs, action, reward, next_obs):
        pulled = jax.nn.one_hot(action, self.num_arms)
        return BetaBelief(alpha=belief.alpha + pulled * reward, beta=belief.beta)


@dataclasses.dataclass(frozen=True)
class NeverUpdates(BernoulliBandit):
    def belief_update(self, belief, obs, action, reward, next_obs):
        return belief


@struct.dataclass
class DelayedBelief:
    counts: BetaBelief
    pending: jax.Array  # float32[2]: (action, reward) of the transition not yet counted


@dataclasses.dataclass(frozen=True)
class OneStepLate(BernoulliBandit):
    """Off-by-one timing: each transition is counted one step late."""

    def belief_init(self, obs):
        return DelayedBelief(counts=super().belief_init(obs), pending=jnp.array([-1.0, 0.0]))

    def belief_update(self, belief, obs, action, reward, next_obs):
        pending_action, pending_reward = belief.pending
        counted = super().belief_update(
            belief.counts, obs, pending_action.astype(jnp.int32), pending_reward, obs
        )
        counts = jax.tree.map(
            lambda new, old: jnp.where(pending_action >= 0, new, old), counted, belief.counts
        )
        return DelayedBelief(counts=counts, pending=jnp.stack([action.astype(jnp.float32), reward]))

    def belief_features(self, belief):
        return super().belief_features(belief.counts)

    def belief_variance(self, belief):
        return super().belief_variance(belief.counts)


@dataclasses.dataclass(frozen=True)
class SwappedEvidence(DiscreteDependentBandit):
    """Treats a success on either arm as evidence for p (the dependent structure is lost)."""

    def belief_update(self, belief, obs, action, reward, next_obs):
        return self._belief_from_evidence(belief.evidence + jnp.stack([reward, 1.0 - reward]))


@dataclasses.dataclass(frozen=True)
class LinearSpaceWeights(DiscreteDependentBandit):
    """Multiplies unnormalised likelihoods in float32: underflows to 0/0 on long histories."""

    def belief_init(self, obs):
        return SupportBelief(evidence=jnp.zeros(2), log_posterior=jnp.ones(len(self.support)))

    def belief_update(self, belief, obs, action, reward, next_obs):
        p = jnp.asarray(self.support)
        likelihood = jnp.where((action == 0) == (reward > 0.5), p, 1.0 - p)
        return SupportBelief(evidence=belief.evidence, log_posterior=belief.log_posterior * likelihood)

    def belief_features(self, belief):
        posterior = belief.log_posterior / belief.log_posterior.sum()
        mean = posterior @ jnp.asarray(self.support)
        return jnp.concatenate([jnp.stack([mean, 1.0 - mean]), posterior])


@dataclasses.dataclass(frozen=True)
class UnnormalisedMeans(BernoulliBandit):
    def belief_features(self, belief):
        return jnp.concatenate([belief.alpha, belief.beta])


@dataclasses.dataclass(frozen=True)
class DoneOneLate(BernoulliBandit):
    def step(self, key, task, state, action):
        state, obs, reward, _ = super().step(key, task, state, action)
        return state, obs, reward, state.time > self.horizon


@dataclasses.dataclass(frozen=True)
class IntegerReward(BernoulliBandit):
    def step(self, key, task, state, action):
        state, obs, reward, done = super().step(key, task, state, action)
        return state, obs, reward.astype(jnp.int32), done


@dataclasses.dataclass(frozen=True)
class GrowingState(BernoulliBandit):
    """The state's structure changes every step, so a jitted step re-traces."""

    def reset(self, key, task):
        _, obs = super().reset(key, task)
        return (), obs

    def step(self, key, task, state, action):
        reward = jax.random.bernoulli(key, task.probs[action]).astype(jnp.float32)
        state = state + (reward,)
        return state, jnp.zeros((0,), jnp.float32), reward, jnp.asarray(len(state) >= self.horizon)


_host_draws = itertools.count()


@dataclasses.dataclass(frozen=True)
class HostCounter(BernoulliBandit):
    """Reads a Python counter at trace time, so two traces of one call disagree."""

    def sample_task(self, key):
        task = super().sample_task(key)
        return task.replace(probs=task.probs * 0 + (next(_host_draws) % 7) / 7)


@dataclasses.dataclass(frozen=True)
class FloatActions(BernoulliBandit):
    num_arms: float = 2.0

    def __post_init__(self):
        pass


@dataclasses.dataclass(frozen=True)
class IgnoresFirstCue(NoisyCue):
    def belief_init(self, obs):
        return jnp.asarray(np.log(self.prior / (1 - self.prior)), jnp.float32)


@dataclasses.dataclass(frozen=True)
class IgnoresSwitching(SwitchingCue):
    """Off-by-one timing: describes the bit acted on, not the bit in the state step returned."""

    def belief_update(self, belief, obs, action, reward, next_obs):
        return NoisyCue.belief_update(self, belief, obs, action, reward, next_obs)


# --- Tests ----------------------------------------------------------------------------------------

FAMILIES = [
    *(metabelief.make(name) for name in metabelief.families()),
    metabelief.make("bernoulli_bandit", num_arms=5, horizon=30, prior_a=0.5, prior_b=2.0),
    metabelief.make("dependent_bandit", support=(0.1, 0.9)),
    metabelief.make("dependent_bandit", horizon=50, support=(0.0, 0.25, 0.6, 1.0)),
    NoisyCue(),
    SwitchingCue(),
]


@pytest.mark.parametrize("family", FAMILIES, ids=repr)
def test_exact_families_pass(family):
    report = check_family(family)
    assert report.calibration_groups >= 10
    # The bound is Bonferroni over the tested groups and both signs, at the default rate 1e-4.
    bonferroni = statistics.NormalDist().inv_cdf(1.0 - 1e-4 / (2 * report.calibration_groups))
    assert report.z_threshold == pytest.approx(bonferroni, rel=1e-12)


@pytest.mark.parametrize(
    "family, check",
    [
        (WrongPrior(prior_a=2.0, prior_b=2.0), "calibration"),  # same prior mean, other spread
        (IgnoresFailures(), "calibration"),
        (NeverUpdates(), "calibration"),
        (OneStepLate(), "calibration"),
        (SwappedEvidence(support=(0.2, 0.7)), "calibration"),
        (IgnoresFirstCue(), "calibration"),
        (IgnoresSwitching(), "calibration"),
        (LinearSpaceWeights(support=(0.3, 0.6)), "finite"),
        (UnnormalisedMeans(), "normalised"),
        (DoneOneLate(horizon=10), "done"),
        (IntegerReward(), "shapes"),
        (GrowingState(horizon=5), "shapes"),
        (HostCounter(), "vmap"),
        (FloatActions(), "sizes"),
    ],
    ids=lambda x: type(x).__name__ if not isinstance(x, str) else x,
)
def test_broken_families_fail_the_right_check(family, check):
    with pytest.raises(FamilyCheckError, match=rf"\[{check}\]"):
        check_family(family)


def test_wrong_prior_in_a_user_family_is_caught():
    """NoisyCue's belief hard-codes nothing: building it with the wrong prior must fail."""

    @dataclasses.dataclass(frozen=True)
    class PriorMismatch(NoisyCue):
        def sample_task(self, key):
            return jax.random.bernoulli(key, 0.5).astype(jnp.float32)

    with pytest.raises(FamilyCheckError, match=r"\[calibration\]"):
        check_family(PriorMismatch())


def test_compile_once_catches_retracing():
    from metabelief.testing.structure import check_compiles_once

    with pytest.raises(FamilyCheckError, match=r"\[compile once\]"):
        family = GrowingState(horizon=5)
        check_compiles_once(family, jax.random.key(0), family.sample_task(jax.random.key(1)))


def test_checking_twice_does_not_share_trace_counters():
    family = metabelief.make("bernoulli_bandit", horizon=5)
    for _ in range(2):
        check_family(family, num_tasks=256)


def test_random_rollout_layout_and_belief_in_lockstep():
    family = metabelief.make("bernoulli_bandit", num_arms=3, horizon=7, prior_a=2.0, prior_b=0.5)
    tasks = sample_tasks(family, jax.random.key(2), num_tasks=5)
    rollout = jax.jit(lambda key: random_rollout(family, key, tasks, num_steps=9))(jax.random.key(3))
    assert rollout.features.shape == (10, 5, 6)
    assert rollout.truth.shape == (10, 5, 3)
    assert rollout.actions.shape == rollout.rewards.shape == rollout.dones.shape == (9, 5)
    # Replay the recorded history with independent float64 counting.
    pulled = np.eye(3)[np.asarray(rollout.actions)]  # [T, N, K]
    successes = np.cumsum(pulled * np.asarray(rollout.rewards)[..., None], axis=0)
    failures = np.cumsum(pulled, axis=0) - successes
    expected_means = (2.0 + successes) / (2.5 + successes + failures)
    np.testing.assert_allclose(rollout.features[1:, :, :3], expected_means, atol=1e-6)
    np.testing.assert_allclose(rollout.features[0, :, :3], 0.8, atol=1e-6)
    # The task never changes within the rollout.
    np.testing.assert_array_equal(rollout.truth, np.broadcast_to(rollout.truth[:1], rollout.truth.shape))
