"""A Beta-Bernoulli bandit written from scratch, as a user would: a subclass of
``metabelief.TaskFamily`` only, never registered, with a belief of its own layout (observed
outcomes; the prior is added by ``beta_posterior``). It samples and steps exactly as the built-in
``bernoulli_bandit`` does, so under the same keys every figure must equal the built-in's."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

import metabelief
from metabelief.tasks import BetaBelief


@struct.dataclass
class ArmProbs:
    p: jax.Array  # float32[K]


@struct.dataclass
class Clock:
    t: jax.Array  # int32[]


@struct.dataclass
class Tally:
    """Observed outcomes only (the prior is added by ``beta_posterior``): not the built-in layout."""

    wins: jax.Array  # float32[K]
    losses: jax.Array  # float32[K]


@dataclasses.dataclass(frozen=True)
class ScratchBetaBandit(metabelief.TaskFamily):
    """K independent arms, p_k ~ Beta(prior_a, prior_b); sampled and stepped as ``bernoulli_bandit``."""

    num_arms: int = 3
    horizon: int = 12
    prior_a: float = 2.0
    prior_b: float = 0.5

    obs_size = 0

    @property
    def num_actions(self) -> int:
        return self.num_arms

    def sample_task(self, key):
        return ArmProbs(p=jax.random.beta(key, self.prior_a, self.prior_b, (self.num_arms,), jnp.float32))

    def reset(self, key, task):
        return Clock(t=jnp.zeros((), jnp.int32)), jnp.zeros((0,), jnp.float32)

    def step(self, key, task, state, action):
        reward = jax.random.bernoulli(key, task.p[action]).astype(jnp.float32)
        state = Clock(t=state.t + 1)
        return state, jnp.zeros((0,), jnp.float32), reward, state.t >= self.horizon

    def belief_init(self, obs):
        zeros = jnp.zeros((self.num_arms,), jnp.float32)
        return Tally(wins=zeros, losses=zeros)

    def belief_update(self, belief, obs, action, reward, next_obs):
        pulled = jax.nn.one_hot(action, self.num_arms, dtype=jnp.float32)
        return Tally(wins=belief.wins + pulled * reward, losses=belief.losses + pulled * (1.0 - reward))

    def _alpha_beta(self, belief):
        return self.prior_a + belief.wins, self.prior_b + belief.losses

    def belief_features(self, belief):
        alpha, beta = self._alpha_beta(belief)
        total = alpha + beta
        return jnp.concatenate([alpha / total, jnp.sqrt(alpha * beta / (total * total * (total + 1.0)))])

    def true_features(self, task, state):
        return task.p

    # BetaArms
    def beta_posterior(self, belief):
        alpha, beta = self._alpha_beta(belief)
        return BetaBelief(alpha=alpha, beta=beta)

    # ExpectedRewards
    def expected_rewards(self, belief, obs):
        return self.belief_features(belief)[: self.num_arms]
