"""What every Bernoulli bandit shares: the step counter, its dynamics and the Beta posterior.

A bandit has no observation (``obs_size == 0``): all information about the task comes from the
rewards. Subclasses say how a task maps to the arms' success probabilities (``arm_probs``). Every
bandit has the ``ExpectedRewards`` capability of ``metabelief.tasks.base``; ``BetaBelief`` is the
per-arm posterior of the ``BetaArms`` capability.
"""

from __future__ import annotations

import abc

import jax
import jax.numpy as jnp
from flax import struct

from metabelief.tasks.base import PyTree, TaskFamily


@struct.dataclass
class BanditState:
    """Environment state of a bandit episode."""

    time: jax.Array  # int32[]: steps taken so far in the episode


@struct.dataclass
class BetaBelief:
    """Beta posterior(s) as pseudo-counts: prior parameters plus observed successes/failures."""

    alpha: jax.Array  # float32[...]: prior_a + successes
    beta: jax.Array  # float32[...]: prior_b + failures


def beta_mean(belief: BetaBelief) -> jax.Array:
    """Posterior mean alpha / (alpha + beta), same shape as the counts."""
    return belief.alpha / (belief.alpha + belief.beta)


def observed_counts(posterior: BetaBelief, prior_a: float, prior_b: float) -> tuple[jax.Array, jax.Array]:
    """The successes and failures behind a Beta posterior: its pseudo-counts less the prior's,
    rounded to whole numbers (float32; the rounding undoes float error in the counts)."""
    return jnp.round(posterior.alpha - prior_a), jnp.round(posterior.beta - prior_b)


def beta_std(belief: BetaBelief) -> jax.Array:
    """Posterior standard deviation of a Beta(alpha, beta), same shape as the counts."""
    total = belief.alpha + belief.beta
    return jnp.sqrt(belief.alpha * belief.beta / (total * total * (total + 1.0)))


class BanditFamily(TaskFamily):
    """Shared dynamics: pulling arm k pays 1 with probability ``arm_probs(task)[k]``, else 0.

    Observation: none, ``float32[0]``. Action: ``int32[]`` arm index. Reward: ``float32[]`` in
    {0, 1}. Termination: ``done`` once ``horizon`` pulls have been made. State: ``BanditState``.
    """

    obs_size = 0

    @abc.abstractmethod
    def arm_probs(self, task: PyTree) -> jax.Array:
        """Success probability of each arm, ``float32[num_actions]``."""

    def reset(self, key: jax.Array, task: PyTree) -> tuple[BanditState, jax.Array]:
        """Starts an episode at time 0; a bandit observes nothing."""
        del key, task
        return BanditState(time=jnp.zeros((), jnp.int32)), jnp.zeros((0,), jnp.float32)

    def step(
        self, key: jax.Array, task: PyTree, state: BanditState, action: jax.Array
    ) -> tuple[BanditState, jax.Array, jax.Array, jax.Array]:
        """Pulls arm ``action``: reward ~ Bernoulli(arm_probs(task)[action])."""
        success_prob = self.arm_probs(task)[action]
        reward = jax.random.bernoulli(key, success_prob).astype(jnp.float32)
        state = BanditState(time=state.time + 1)
        done = state.time >= self.horizon
        return state, jnp.zeros((0,), jnp.float32), reward, done

    def expected_rewards(self, belief: PyTree, obs: jax.Array) -> jax.Array:
        """Posterior expected reward of each arm, ``float32[num_actions]`` (``ExpectedRewards``):
        the posterior means that open ``belief_features``."""
        del obs
        return self.belief_features(belief)[: self.num_actions]

    def true_features(self, task: PyTree, state: BanditState) -> jax.Array:
        """The arms' true success probabilities, ``float32[num_actions]``."""
        del state
        return self.arm_probs(task).astype(jnp.float32)
