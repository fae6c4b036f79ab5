"""Optional capabilities (``metabelief.tasks.base``): baselines and analyses select families by what
they declare, never by class.

A Beta-Bernoulli bandit written here from scratch (a subclass of ``metabelief.TaskFamily`` only,
never registered, with a belief of its own layout) gets every baseline that needs ``BetaArms`` or
``ExpectedRewards`` and the state-machine simulation, and under the same keys acts exactly as the
built-in ``bernoulli_bandit`` does; ``check_family`` checks what it declares.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief import baselines
from metabelief.analysis import state_machine
from metabelief.experiments import protocol
from metabelief.tasks import (
    BeliefVariance,
    BetaArms,
    BetaBelief,
    DependentArms,
    DiscreteDependentBandit,
    ExpectedRewards,
    GoalCandidates,
    Gridworld,
)
from metabelief.testing import FamilyCheckError, check_family, random_rollout, sample_tasks
from tests.scratch_family import ArmProbs, ScratchBetaBandit

SCRATCH = ScratchBetaBandit()
BUILT_IN = metabelief.make("bernoulli_bandit", num_arms=3, horizon=12, prior_a=2.0, prior_b=0.5)
NUM_TASKS = 512


def test_the_scratch_family_is_no_built_in_and_declares_its_capabilities():
    assert type(SCRATCH).__mro__[1] is metabelief.TaskFamily  # a subclass of the contract only
    assert not isinstance(SCRATCH, metabelief.tasks.BanditFamily)
    assert isinstance(SCRATCH, BetaArms) and isinstance(SCRATCH, ExpectedRewards)
    assert not isinstance(SCRATCH, DependentArms | GoalCandidates | BeliefVariance)
    # The built-in families declare theirs.
    assert isinstance(BUILT_IN, BetaArms) and isinstance(BUILT_IN, ExpectedRewards | BeliefVariance)
    dependent = metabelief.make("dependent_bandit", support=(0.1, 0.9))
    assert isinstance(dependent, DependentArms) and not isinstance(dependent, BetaArms)
    assert isinstance(metabelief.make("gridworld"), GoalCandidates)
    assert not isinstance(metabelief.make("two_step"), BetaArms | DependentArms | GoalCandidates)


def test_check_family_passes_on_the_scratch_family():
    check_family(SCRATCH, num_tasks=1024)


POLICIES = {
    "thompson_sampling": baselines.thompson_sampling,
    "gittins": baselines.gittins,
    "ucb1": baselines.ucb1,
    "greedy": baselines.greedy,
    "epsilon_greedy": baselines.epsilon_greedy,
    "bayes_optimal": baselines.bayes_optimal,
    "belief_greedy": baselines.belief_greedy,
}


_sample_tasks = jax.jit(sample_tasks, static_argnums=(0, 2))  # jitted for both: the same float32 ops


@pytest.mark.parametrize("name", POLICIES)
def test_every_beta_arms_baseline_acts_on_the_scratch_family_exactly_as_on_the_built_in(name):
    tasks = _sample_tasks(BUILT_IN, jax.random.key(0), NUM_TASKS)
    scratch_tasks = _sample_tasks(SCRATCH, jax.random.key(0), NUM_TASKS)
    np.testing.assert_array_equal(scratch_tasks.p, tasks.probs)  # the same prior draws
    played = {}
    for family, family_tasks in ((SCRATCH, scratch_tasks), (BUILT_IN, tasks)):
        run = baselines.run_policy(family, POLICIES[name](family), jax.random.key(1), family_tasks)
        played[family] = (np.asarray(run.actions), np.asarray(run.rewards))
    np.testing.assert_array_equal(played[SCRATCH][0], played[BUILT_IN][0])
    np.testing.assert_array_equal(played[SCRATCH][1], played[BUILT_IN][1])
    # Not a degenerate policy: it plays several arms.
    assert len(np.unique(played[SCRATCH][0])) == 3


def test_the_state_machine_simulation_runs_on_the_scratch_family_as_on_the_built_in():
    from metabelief.agents import agent_for
    from metabelief.rollout import rollout

    splits = (48, 24, 24)
    reports = []
    for family in (SCRATCH, BUILT_IN):
        agent = agent_for(family, hidden_size=8)
        params = agent.init(jax.random.key(7))
        tasks = _sample_tasks(family, jax.random.key(8), sum(splits))
        history = jax.jit(rollout, static_argnums=(0, 1))(family, agent, params, jax.random.key(9), tasks)
        counts = np.asarray(state_machine.bayes_counts(family, history))  # [T, N, 2K]
        pulled = np.eye(3)[np.asarray(history.actions)]  # [T, N, K]
        rewards = np.asarray(history.rewards, np.float64)[..., None]
        before = lambda x: np.cumsum(x, axis=0) - x  # noqa: E731 -- counts before each decision
        np.testing.assert_array_equal(
            counts, np.concatenate([before(pulled * rewards), before(pulled * (1 - rewards))], axis=-1)
        )
        reports.append(
            state_machine.simulate(
                family,
                agent,
                {"untrained": params},
                {"agent": history},
                {"undiscounted": baselines.bayes_optimal(family)},
                splits,
                key=jax.random.key(10),
                mlp_steps=20,
            )
        )
    assert reports[0] == reports[1]
    assert set(reports[0]["untrained"]["agent"].to_dict()) == {"gamma", *state_machine.DIRECTIONS}


# --- Families without a capability get a clear error naming it ------------------------------------


@dataclasses.dataclass(frozen=True)
class WithoutBetaArms(ScratchBetaBandit):
    beta_posterior = None  # a method set to None is absent


@dataclasses.dataclass(frozen=True)
class WithoutExpectedRewards(ScratchBetaBandit):
    expected_rewards = None


BETA_ARMS_USERS = {name: policy for name, policy in POLICIES.items() if name != "belief_greedy"}


@pytest.mark.parametrize("name", BETA_ARMS_USERS)
def test_a_family_without_beta_arms_gets_an_error_naming_it(name):
    family = WithoutBetaArms()
    assert not isinstance(family, BetaArms)
    with pytest.raises(ValueError, match=rf"{name} needs a family with the BetaArms capability \("):
        BETA_ARMS_USERS[name](family)


def test_the_state_machine_needs_beta_arms():
    family = WithoutBetaArms()
    history = random_rollout(family, jax.random.key(0), sample_tasks(family, jax.random.key(1), 4), 5)
    with pytest.raises(
        ValueError, match="state-machine simulation needs a family with the BetaArms capability"
    ):
        state_machine.bayes_counts(family, history)
    with pytest.raises(ValueError, match="BetaArms capability"):
        state_machine.simulate(family, None, {}, history, None, (2, 1, 1), key=jax.random.key(0))


def test_belief_greedy_needs_expected_rewards_and_nothing_else():
    with pytest.raises(ValueError, match="belief_greedy needs a family with the ExpectedRewards capability"):
        baselines.belief_greedy(WithoutExpectedRewards())
    baselines.belief_greedy(WithoutBetaArms())  # ExpectedRewards is enough
    baselines.thompson_sampling(WithoutExpectedRewards())  # and BetaArms needs no ExpectedRewards
    baselines.bayes_optimal(WithoutExpectedRewards())


def test_nearest_candidate_needs_goal_candidates():
    with pytest.raises(
        ValueError, match="nearest_candidate needs a family with the GoalCandidates capability"
    ):
        baselines.nearest_candidate(SCRATCH)


def test_experiments_check_the_capability_of_their_training_family():
    config = metabelief.TrainConfig(family=SCRATCH)
    protocol.check_train(config, BetaArms, "bandit")  # a family from scratch will do
    protocol.check_train(config, (BetaArms, ExpectedRewards), "rl2_table")
    with pytest.raises(ValueError, match="must build a family with the BetaArms capability"):
        protocol.check_train(metabelief.TrainConfig(family="dependent_bandit"), BetaArms, "bandit")
    with pytest.raises(ValueError, match="the ExpectedRewards capability"):
        protocol.check_train(
            metabelief.TrainConfig(family=WithoutExpectedRewards()), (BetaArms, ExpectedRewards), "rl2_table"
        )
    with pytest.raises(ValueError, match="must build a Gridworld"):  # a class still works
        protocol.check_train(config, Gridworld, "gridworld")


# --- DependentArms: Thompson sampling on a finite support ------------------------------------------


@pytest.mark.parametrize(
    "evidence, p_high", [((0, 0), 0.5), ((1, 0), 0.8), ((0, 2), 1 / 17), ((3, 1), 16 / 17)]
)
def test_thompson_sampling_draws_p_from_the_posterior_over_a_finite_support(evidence, p_high):
    """Support (0.2, 0.8): P(p = 0.8 | evidence) = 4^(for - against) / (1 + 4^(for - against)); arm 0
    (paying p) is played exactly when the draw is 0.8."""
    family = metabelief.make("dependent_bandit", support=(0.2, 0.8))
    belief = family.belief_init(jnp.zeros((0,)))
    for outcome, count in zip(((0, 1.0), (0, 0.0)), evidence, strict=True):  # for p, against p
        for _ in range(count):
            belief = family.belief_update(belief, None, jnp.int32(outcome[0]), jnp.float32(outcome[1]), None)
    np.testing.assert_array_equal(family.evidence_counts(belief), evidence)
    policy = baselines.thompson_sampling(family)
    num_draws = 20_000
    actions = jax.vmap(policy, in_axes=(0, None, None))(
        jax.random.split(jax.random.key(3), num_draws), belief, jnp.zeros((0,))
    )
    chose_arm_0 = float((np.asarray(actions) == 0).mean())
    assert abs(chose_arm_0 - p_high) < 5.0 * np.sqrt(p_high * (1 - p_high) / num_draws) + 1e-9


# --- check_family checks what a family declares ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PosteriorOffByOne(ScratchBetaBandit):
    """Reports one success too many on every arm."""

    def beta_posterior(self, belief):
        posterior = super().beta_posterior(belief)
        return posterior.replace(alpha=posterior.alpha + 1.0)


@dataclasses.dataclass(frozen=True)
class PosteriorSwapped(ScratchBetaBandit):
    """Counts successes as failures: right at the prior, wrong from the first pull on."""

    def beta_posterior(self, belief):
        return BetaBelief(alpha=self.prior_a + belief.losses, beta=self.prior_b + belief.wins)


@dataclasses.dataclass(frozen=True)
class MisdeclaredPrior(ScratchBetaBandit):
    """An exact belief under Beta(2, 0.5), declaring (and reporting counts on) Beta(1, 1)."""

    prior_a: float = 1.0
    prior_b: float = 1.0

    def sample_task(self, key):
        return ArmProbs(p=jax.random.beta(key, 2.0, 0.5, (self.num_arms,), jnp.float32))

    def _alpha_beta(self, belief):
        return 2.0 + belief.wins, 0.5 + belief.losses

    def beta_posterior(self, belief):
        return BetaBelief(alpha=self.prior_a + belief.wins, beta=self.prior_b + belief.losses)


@dataclasses.dataclass(frozen=True)
class FlippedExpectations(ScratchBetaBandit):
    def expected_rewards(self, belief, obs):
        return 1.0 - super().expected_rewards(belief, obs)


@dataclasses.dataclass(frozen=True)
class PosteriorAsTuple(ScratchBetaBandit):
    def beta_posterior(self, belief):
        return (belief.wins, belief.losses)


@dataclasses.dataclass(frozen=True)
class ExpectationsOfTwoArms(ScratchBetaBandit):
    def expected_rewards(self, belief, obs):
        return super().expected_rewards(belief, obs)[:2]


@dataclasses.dataclass(frozen=True)
class SwappedEvidence(DiscreteDependentBandit):
    def evidence_counts(self, belief):
        return belief.evidence[::-1]


@dataclasses.dataclass(frozen=True)
class NothingRuledOut(Gridworld):
    def possible_goals(self, belief):
        return jnp.ones_like(belief.possible)


@pytest.mark.parametrize(
    "family, capability, message",
    [
        (
            PosteriorOffByOne(),
            "BetaArms",
            r"beta_posterior\(belief_init\(obs\)\) must be Beta\(prior_a, prior_b\)",
        ),
        (PosteriorSwapped(), "BetaArms", "each step must add the reward to alpha"),
        (MisdeclaredPrior(), "BetaArms", r"alpha / \(alpha \+ beta\) must open belief_features"),
        (PosteriorAsTuple(), "BetaArms", "its methods do not run on the belief"),
        (FlippedExpectations(), "ExpectedRewards", "the reward after an action is off expected_rewards"),
        (ExpectationsOfTwoArms(), "ExpectedRewards", r"must be float32\[3\], got float32\[2\]"),
        (SwappedEvidence(support=(0.2, 0.7)), "DependentArms", "each step must add 1 to the evidence for p"),
        (
            NothingRuledOut(size=4, horizon=20),
            "GoalCandidates",
            "support of the posterior over goal candidates",
        ),
    ],
    ids=lambda x: type(x).__name__ if not isinstance(x, str) else None,
)
def test_check_family_fails_a_broken_capability_naming_it(family, capability, message):
    with pytest.raises(FamilyCheckError, match=rf"\[{capability} capability\]: .*{message}"):
        check_family(family, num_tasks=512)


@dataclasses.dataclass(frozen=True)
class LastTransitionOnly(ScratchBetaBandit):
    """The exact posterior given only the last transition: it forgets the rest."""

    def belief_update(self, belief, obs, action, reward, next_obs):
        return super().belief_update(self.belief_init(obs), obs, action, reward, next_obs)


def test_a_declared_capability_catches_a_belief_the_calibration_checks_cannot_see():
    """Such a belief passes checks 7 and 8 (their known limit: see LastTransitionOnly in
    tests/test_calibration_second_moment.py); its Beta counts do not grow as BetaArms says."""
    with pytest.raises(FamilyCheckError, match=r"\[BetaArms capability\]: each step must add"):
        check_family(LastTransitionOnly(), num_tasks=512)


def test_the_capability_checks_pass_on_every_built_in_family():
    from metabelief.testing.capabilities import check_capabilities

    for family in [
        BUILT_IN,
        metabelief.make("dependent_bandit", horizon=30),
        metabelief.make("dependent_bandit", horizon=30, support=(0.0, 0.25, 0.6, 1.0)),
        metabelief.make("gridworld", size=4, walls=((0, 1),), horizon=30),
        metabelief.make("two_step"),
    ]:
        tasks = sample_tasks(family, jax.random.key(0), 256)
        data = jax.device_get(random_rollout(family, jax.random.key(1), tasks, min(family.horizon, 30)))
        assert check_capabilities(family, data) == tuple(
            capability.__name__
            for capability in (BetaArms, DependentArms, ExpectedRewards, GoalCandidates)
            if isinstance(family, capability)
        )
