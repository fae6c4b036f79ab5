"""The oracle bandit of Kuo et al. (2025): an arm that pays little but tells where the prize is.

Of ``num_arms`` arms, one of the first ``num_arms - 1`` (the candidates) is the target, uniformly
at random. Pulling the target pays ``target_reward``, any other candidate ``other_reward``, and
the last arm, the oracle, pays ``(target + 1) / 10``: a small reward that names the target.
Rewards are deterministic (Kuo et al.'s ``OracleBanditDeterministic``, github.com/walkerlab/
metaRL-predictive-representation, ``environments/bandit/bandit.py``; their horizon there is 20,
the paper's 6). Acting well means sampling for information: the oracle's reward is the lowest,
so an agent that only chases expected reward never pulls it, while the Bayes-optimal agent pulls
it first and then the target every step.

The exact posterior is uniform over the candidates not ruled out: a candidate that paid
``other_reward`` is ruled out, one that paid ``target_reward`` is the target, and the oracle's
reward names it. It is kept as that set (``bool[num_arms - 1]``), which is exact for any horizon.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from metabelief.tasks import validation
from metabelief.tasks.base import TaskFamily


@struct.dataclass
class OracleTask:
    target: jax.Array  # int32[]: the paying candidate, in [0, num_arms - 1)


@struct.dataclass
class OracleState:
    time: jax.Array  # int32[]: pulls made


@struct.dataclass
class OracleBelief:
    """The candidates the history has not ruled out; the posterior is uniform over them."""

    possible: jax.Array  # bool[num_arms - 1]


@dataclasses.dataclass(frozen=True)
class OracleBandit(TaskFamily):
    """Find the target arm among ``num_arms - 1`` candidates, or ask the oracle (the last arm).

    Action, ``int32[]``: the arm pulled; arm ``num_arms - 1`` is the oracle. No observation
    (``obs_size`` 0). Reward: ``target_reward`` for the target, ``other_reward`` for another
    candidate, ``(target + 1) / 10`` for the oracle. Task: ``OracleTask``. State: ``OracleState``.
    Belief: ``OracleBelief``. Belief features, ``float32[num_arms - 1]``: the posterior probability
    that each candidate is the target; true features: the target's one-hot.
    Capabilities: ``ExpectedRewards``, ``FiniteOutcomes`` (``metabelief.baselines.bayes_optimal``
    solves it exactly) and ``ReferencePolicies`` (``"oracle_first"``: ask the oracle, then pull
    the target).

    Args:
      num_arms: arms including the oracle, >= 3.
      horizon: pulls per episode.
      target_reward, other_reward: what the target and any other candidate pay (must differ).

    Example::

        family = metabelief.make("oracle_bandit")  # 10 candidates and the oracle, 6 pulls
    """

    num_arms: int = 11
    horizon: int = 6
    target_reward: float = 5.0
    other_reward: float = 1.0

    obs_size = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_arms", validation.integer_at_least("num_arms", self.num_arms, 3))
        object.__setattr__(self, "horizon", validation.integer_at_least("horizon", self.horizon, 1))
        for name in ("target_reward", "other_reward"):
            object.__setattr__(self, name, validation.finite_float(name, getattr(self, name)))
        if self.target_reward == self.other_reward:
            raise ValueError(
                f"target_reward must differ from other_reward (a pull must tell the target apart), "
                f"got {self.target_reward!r} for both"
            )

    @property
    def num_actions(self) -> int:
        return self.num_arms

    @property
    def num_candidates(self) -> int:
        return self.num_arms - 1

    @property
    def oracle_arm(self) -> int:
        return self.num_arms - 1

    def oracle_rewards(self) -> jax.Array:
        """``float32[num_arms - 1]``: what the oracle pays when each candidate is the target."""
        return (jnp.arange(1, self.num_candidates + 1) / 10.0).astype(jnp.float32)

    def sample_task(self, key: jax.Array) -> OracleTask:
        return OracleTask(target=jax.random.randint(key, (), 0, self.num_candidates, jnp.int32))

    def reset(self, key: jax.Array, task: OracleTask) -> tuple[OracleState, jax.Array]:
        del key, task
        return OracleState(time=jnp.zeros((), jnp.int32)), jnp.zeros((0,), jnp.float32)

    def step(
        self, key: jax.Array, task: OracleTask, state: OracleState, action: jax.Array
    ) -> tuple[OracleState, jax.Array, jax.Array, jax.Array]:
        del key
        candidate = jnp.where(action == task.target, self.target_reward, self.other_reward)
        reward = jnp.where(action == self.oracle_arm, self.oracle_rewards()[task.target], candidate)
        state = OracleState(time=state.time + 1)
        return state, jnp.zeros((0,), jnp.float32), reward.astype(jnp.float32), state.time >= self.horizon

    def belief_init(self, obs: jax.Array) -> OracleBelief:
        del obs
        return OracleBelief(possible=jnp.ones((self.num_candidates,), bool))

    def belief_update(
        self, belief: OracleBelief, obs: jax.Array, action: jax.Array, reward: jax.Array, next_obs: jax.Array
    ) -> OracleBelief:
        """The oracle names the target (the candidate whose oracle reward is nearest); a candidate
        that paid ``target_reward`` is the target; one that paid ``other_reward`` is ruled out."""
        del obs, next_obs
        candidates = jnp.arange(self.num_candidates)
        named = candidates == jnp.argmin(jnp.abs(self.oracle_rewards() - reward))
        is_target = jnp.abs(reward - self.target_reward) < jnp.abs(reward - self.other_reward)
        pulled = candidates == action
        after_pull = jnp.where(is_target, pulled, belief.possible & ~pulled)
        return OracleBelief(possible=jnp.where(action == self.oracle_arm, named, after_pull))

    def belief_features(self, belief: OracleBelief) -> jax.Array:
        possible = belief.possible.astype(jnp.float32)
        return possible / possible.sum()

    def true_features(self, task: OracleTask, state: OracleState) -> jax.Array:
        del state
        return jax.nn.one_hot(task.target, self.num_candidates, dtype=jnp.float32)

    def expected_rewards(self, belief: OracleBelief, obs: jax.Array) -> jax.Array:
        """``float32[num_arms]``: each candidate's, then the oracle's, under the posterior."""
        del obs
        p = self.belief_features(belief)
        candidates = p * self.target_reward + (1.0 - p) * self.other_reward
        return jnp.concatenate([candidates, (p @ self.oracle_rewards())[None]])

    def outcomes(
        self, belief: OracleBelief, obs: jax.Array, action: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """What pulling ``action`` can pay now: for the oracle, each candidate's oracle reward with
        its posterior probability; for a candidate, ``target_reward`` or ``other_reward`` (entries
        beyond the second have probability 0). ``float32[C]``, ``[C]``, ``[C, 0]``, C candidates."""
        del obs
        p = self.belief_features(belief)
        p_target = p[jnp.minimum(action, self.num_candidates - 1)]
        pull = jnp.zeros_like(p).at[0].set(p_target).at[1].set(1.0 - p_target)
        pull_rewards = jnp.zeros_like(p).at[0].set(self.target_reward).at[1].set(self.other_reward)
        oracle = action == self.oracle_arm
        probs = jnp.where(oracle, p, pull)
        rewards = jnp.where(oracle, self.oracle_rewards(), pull_rewards)
        return probs, rewards, jnp.zeros((self.num_candidates, 0), jnp.float32)

    def reference_policies(self) -> dict:
        """``{"oracle_first": OracleFirst(self)}``: ask the oracle, then pull the target."""
        return {"oracle_first": OracleFirst(self)}


@dataclasses.dataclass(frozen=True)
class OracleFirst:
    """Pulls the oracle while more than one candidate is possible, then the target (a belief
    policy: ``policy(key, belief, obs) -> action``). Bayes-optimal with the default rewards."""

    family: OracleBandit

    def __call__(self, key: jax.Array, belief: OracleBelief, obs: jax.Array) -> jax.Array:
        del key, obs
        known = belief.possible.sum() == 1
        return jnp.where(known, jnp.argmax(belief.possible), self.family.oracle_arm).astype(jnp.int32)
