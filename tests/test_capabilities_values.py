"""Check 9 of ``check_family`` catches each way a declared capability can break, naming it.

Each broken family below subclasses a built-in one and breaks exactly one promise of one
capability (``metabelief.tasks.base``); ``check_capabilities`` (check 9 alone, as
``check_family`` calls it) must fail it with that capability and the message of the promise it
breaks (the unbroken built-in families pass check 9 in tests/test_capabilities.py and
tests/test_capabilities_outcomes.py; the gridworld set up here passes it below). The independent
reference is the capability's own definition: the breaks are built by hand (an arm shifted, a
constant added, a distance computed without the walls, ...), so each one is wrong by construction.

A break that only touches capability methods (``beta_posterior``, ``expected_rewards``,
``distance_table``, ...) is checked on the unbroken family's random rollout, shared here: check 9
replays the belief of the family it checks on the recorded history, so the rollout's own
dynamics are the unbroken ones. A break of the dynamics (a reward paid off the goal) gets its own.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metabelief.tasks import BernoulliBandit, DiscreteDependentBandit, Gridworld, Tiger
from metabelief.tasks.tiger import LISTEN
from metabelief.testing import FamilyCheckError, random_rollout, sample_tasks
from metabelief.testing.capabilities import check_capabilities

NUM_TASKS, NUM_STEPS = 256, 8
BANDIT_ARGS = dict(num_arms=3, horizon=NUM_STEPS)
DEPENDENT_ARGS = dict(horizon=NUM_STEPS, support=(0.2, 0.7))
TIGER_ARGS = dict(accuracy=0.85, p_stay=0.9, horizon=NUM_STEPS)
BANDIT = BernoulliBandit(**BANDIT_ARGS)
DEPENDENT = DiscreteDependentBandit(**DEPENDENT_ARGS)
TIGER = Tiger(**TIGER_ARGS)
# A wall at (0, 1) makes the breadth-first distances differ from the Manhattan ones; two goals in
# the corners, so random walks from the centre rule candidates out and find the goal often.
GRID_ARGS = dict(size=3, walls=((0, 1),), goals=((0, 0), (2, 2)), horizon=12)
GRID = Gridworld(**GRID_ARGS)


@functools.cache
def rollout_of(family, num_steps: int = NUM_STEPS):
    """A random rollout of ``family`` (one compiled program per family, shared by its breaks)."""
    key = jax.random.key(0)
    tasks = sample_tasks(family, key, NUM_TASKS)
    return jax.device_get(jax.jit(random_rollout, static_argnums=(0, 3))(family, key, tasks, num_steps))


def assert_fails(family, base, capability: str, message: str) -> None:
    """Check 9 fails ``family`` on ``base``'s rollout, naming ``capability`` and ``message``."""
    with pytest.raises(FamilyCheckError, match=rf"\[{capability} capability\]: .*{message}"):
        check_capabilities(family, rollout_of(base, base.horizon))


def _breaks(capability: str, base, cases: dict) -> list:
    """``(family, base, capability, message)`` cases of ``test_each_break_fails_its_capabilitys_check``
    from ``{id: (broken family, message)}``; each family is checked on ``base``'s rollout."""
    return [
        pytest.param(family, base, capability, message, id=f"{capability}-{name}")
        for name, (family, message) in cases.items()
    ]


# --- BetaArms ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CountsOnTheNextArm(BernoulliBandit):
    """Reports each arm's counts on the next arm: right at the (symmetric) prior, wrong after a pull."""

    def beta_posterior(self, belief):
        posterior = super().beta_posterior(belief)
        return posterior.replace(alpha=jnp.roll(posterior.alpha, 1), beta=jnp.roll(posterior.beta, 1))


@dataclasses.dataclass(frozen=True)
class MeansInReverse(BernoulliBandit):
    """belief_features opens with the arms' posterior means in reverse order (the middle arm's is right)."""

    def belief_features(self, belief):
        features = super().belief_features(belief)
        return features.at[: self.num_arms].set(features[: self.num_arms][::-1])


@dataclasses.dataclass(frozen=True)
class ExtraFailure(BernoulliBandit):
    """Reports Beta(prior_a, prior_b + 1): one failure too many on every arm, from the start."""

    def beta_posterior(self, belief):
        posterior = super().beta_posterior(belief)
        return posterior.replace(beta=posterior.beta + 1.0)


BETA_ARMS_BREAKS = _breaks(
    "BetaArms",
    BANDIT,
    {
        "counts-on-the-wrong-arm": (
            CountsOnTheNextArm(**BANDIT_ARGS),
            "each step must add the reward to alpha",
        ),
        "means-not-opening-features": (
            MeansInReverse(**BANDIT_ARGS),
            r"alpha / \(alpha \+ beta\) must open belief_features",
        ),
        "prior-beta-off-by-one": (
            ExtraFailure(**BANDIT_ARGS),
            r"must be Beta\(prior_a, prior_b\) = Beta\(1, 1\)",
        ),
    },
)


# --- DependentArms -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MeanOverTheWrongSupport(DiscreteDependentBandit):
    """The posterior over the support is right, but E p is taken over the support reversed."""

    def belief_features(self, belief):
        features = super().belief_features(belief)
        mean = jnp.exp(belief.log_posterior) @ jnp.asarray(self.support[::-1], jnp.float32)
        return features.at[:2].set(jnp.stack([mean, 1.0 - mean]))


@dataclasses.dataclass(frozen=True)
class AgainstCountedTwice(DiscreteDependentBandit):
    """The evidence for p is right, the evidence against p is doubled."""

    def evidence_counts(self, belief):
        return belief.evidence * jnp.array([1.0, 2.0], jnp.float32)


DEPENDENT_ARMS_BREAKS = _breaks(
    "DependentArms",
    DEPENDENT,
    {
        "wrong-support-mean": (MeanOverTheWrongSupport(**DEPENDENT_ARGS), r"E\[p \| evidence\] must open"),
        "evidence-against-doubled": (
            AgainstCountedTwice(**DEPENDENT_ARGS),
            "each step must add 1 to the evidence",
        ),
    },
)


# --- ExpectedRewards -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExpectationsOffByAConstant(BernoulliBandit):
    """Every action's posterior expected reward plus 0.2."""

    def expected_rewards(self, belief, obs):
        return super().expected_rewards(belief, obs) + 0.2


@dataclasses.dataclass(frozen=True)
class ExpectationsNaNAfterAPull(BernoulliBandit):
    """NaN once an arm has been pulled twice."""

    def expected_rewards(self, belief, obs):
        expected = super().expected_rewards(belief, obs)
        pulls = belief.alpha + belief.beta - self.prior_a - self.prior_b
        return jnp.where(pulls >= 2, jnp.nan, expected)


EXPECTED_REWARDS_BREAKS = _breaks(
    "ExpectedRewards",
    BANDIT,
    {
        "off-by-a-constant": (ExpectationsOffByAConstant(**BANDIT_ARGS), "the reward after an action is off"),
        "non-finite": (ExpectationsNaNAfterAPull(**BANDIT_ARGS), "became non-finite"),
    },
)


# --- FiniteOutcomes ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LeakyDoors(Tiger):
    """Listening's outcomes sum to 1, a door's to 0.9."""

    def outcomes(self, belief, obs, action):
        probs, rewards, next_obs = super().outcomes(belief, obs, action)
        return jnp.where(action == LISTEN, probs, 0.9 * probs), rewards, next_obs


@dataclasses.dataclass(frozen=True)
class TigerNeverThere(Tiger):
    """Lists both doors' outcomes but gives the tiger's probability 0: a realised outcome unlisted."""

    def outcomes(self, belief, obs, action):
        probs, rewards, next_obs = super().outcomes(belief, obs, action)
        return jnp.where(action == LISTEN, probs, jnp.array([0.0, 1.0], jnp.float32)), rewards, next_obs


FINITE_OUTCOMES_BREAKS = _breaks(
    "FiniteOutcomes",
    TIGER,
    {
        "leaky-on-doors-only": (LeakyDoors(**TIGER_ARGS), "sum to 1"),
        "realised-outcome-at-probability-zero": (
            TigerNeverThere(**TIGER_ARGS),
            "did not list with positive probability",
        ),
    },
)


# --- ReferencePolicies ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NegativeReference(BernoulliBandit):
    def reference_policies(self):
        return {"negative": lambda key, belief, obs: jnp.int32(-1)}


@dataclasses.dataclass(frozen=True)
class FloatReference(BernoulliBandit):
    def reference_policies(self):
        return {"float": lambda key, belief, obs: jnp.float32(0.0)}


REFERENCE_POLICIES_BREAKS = _breaks(
    "ReferencePolicies",
    BANDIT,
    {
        "negative-action": (
            NegativeReference(**BANDIT_ARGS),
            r"'negative' chose actions outside \[0, 3\): \[-1\]",
        ),
        "float-action": (FloatReference(**BANDIT_ARGS), r"'float' must return int32\[\] actions"),
    },
)


# --- GoalCandidates ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ManhattanDistances(Gridworld):
    """Distances that ignore the walls."""

    def distance_table(self):
        rows, cols = np.divmod(np.arange(self.size * self.size), self.size)
        return (np.abs(rows[:, None] - rows) + np.abs(cols[:, None] - cols)).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class UpDownSwapped(Gridworld):
    """A move table with up and down swapped: the same distances, the wrong cells."""

    def move_table(self):
        return super().move_table()[:, [2, 1, 0, 3]]


@dataclasses.dataclass(frozen=True)
class LastTransitionOnlyGrid(Gridworld):
    """Rules out candidates from the last transition only, so a ruled-out goal comes back."""

    def belief_update(self, belief, obs, action, reward, next_obs):
        return super().belief_update(self.belief_init(obs), obs, action, reward, next_obs)


@dataclasses.dataclass(frozen=True)
class EmptiesWhenPinned(Gridworld):
    """possible_goals drops the last candidate standing (no regrowth, a possible set that empties)."""

    def possible_goals(self, belief):
        return belief.possible & (belief.possible.sum() > 1)


OFF_GOAL_CELL = 3  # (1, 0): left of the start, no candidate goal


@dataclasses.dataclass(frozen=True)
class PaysOffTheGoal(Gridworld):
    """Also pays (and sends the agent back to the start) on entering cell (1, 0), no candidate."""

    def step(self, key, task, state, action):
        next_state, _, reward, done = super().step(key, task, state, action)
        off_goal = jnp.asarray(self.move_table())[state.position, action] == OFF_GOAL_CELL
        position = jnp.where(off_goal, self._start_cell, next_state.position).astype(jnp.int32)
        reward = jnp.where(off_goal, 1.0, reward).astype(jnp.float32)
        return next_state.replace(position=position), self._observe(position), reward, done


def test_the_unbroken_gridworld_passes_and_its_rollout_exercises_every_promise():
    data = rollout_of(GRID, GRID.horizon)
    assert check_capabilities(GRID, data) == ("GoalCandidates",)
    # The data can show each break: paid steps, candidates ruled out, goals pinned.
    features = np.asarray(data.features)
    assert (np.asarray(data.rewards) == 1).any()
    assert ((features > 0).sum(axis=-1) == 1).any()
    # The wall makes a breadth-first distance differ from the Manhattan one.
    assert not np.array_equal(GRID.distance_table(), ManhattanDistances(**GRID_ARGS).distance_table())


GOAL_CANDIDATES_BREAKS = _breaks(
    "GoalCandidates",
    GRID,
    {
        "wrong-distances": (
            ManhattanDistances(**GRID_ARGS),
            r"distance_table\(\) must hold the fewest moves",
        ),
        "wrong-moves": (UpDownSwapped(**GRID_ARGS), r"a step without reward must land on move_table\(\)"),
        "goal-set-regrows": (LastTransitionOnlyGrid(**GRID_ARGS), "must never regrow a ruled-out goal"),
        "possible-goals-empties": (
            EmptiesWhenPinned(**GRID_ARGS),
            "must never regrow a ruled-out goal nor become empty",
        ),
    },
)


def test_a_reward_paid_off_the_goal_fails_the_goal_candidates_check():
    family = PaysOffTheGoal(**GRID_ARGS)
    assert OFF_GOAL_CELL not in family.goal_cells()
    assert_fails(family, family, "GoalCandidates", "a paid step must enter one of goal_cells")


# --- Every break ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "base", "capability", "message"),
    [
        *BETA_ARMS_BREAKS,
        *DEPENDENT_ARMS_BREAKS,
        *EXPECTED_REWARDS_BREAKS,
        *FINITE_OUTCOMES_BREAKS,
        *REFERENCE_POLICIES_BREAKS,
        *GOAL_CANDIDATES_BREAKS,
    ],
)
def test_each_break_fails_its_capabilitys_check(family, base, capability, message):
    assert_fails(family, base, capability, message)
