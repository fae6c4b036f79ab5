"""Independent Bernoulli arms with Beta priors: the classic multi-armed bandit.

Each arm's success probability is drawn independently, p_k ~ Beta(prior_a, prior_b). The arms
are conjugate and independent, so the exact posterior is one Beta per arm, kept as counts.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from metabelief.tasks import validation
from metabelief.tasks.bandit_base import BanditFamily, BetaBelief, beta_mean, beta_std


@struct.dataclass
class BernoulliTask:
    """A hidden bandit task."""

    probs: jax.Array  # float32[num_arms]: each arm's success probability


@dataclasses.dataclass(frozen=True)
class BernoulliBandit(BanditFamily):
    """``num_arms`` independent Bernoulli arms, p_k ~ Beta(prior_a, prior_b).

    Belief: ``BetaBelief`` with ``alpha``, ``beta`` of shape ``float32[num_arms]``.
    Belief features, ``float32[2 * num_arms]``: the posterior mean success probability of each
    arm, then each arm's posterior standard deviation. True features: the arms' probabilities.
    Capabilities (``metabelief.tasks.base``): ``BetaArms``, ``ExpectedRewards``, ``BeliefVariance``.

    Example::

        family = metabelief.make("bernoulli_bandit", num_arms=2, horizon=100)
        task = family.sample_task(jax.random.key(0))
    """

    num_arms: int = 2
    horizon: int = 100
    prior_a: float = 1.0
    prior_b: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_arms", validation.integer_at_least("num_arms", self.num_arms, 2))
        object.__setattr__(self, "horizon", validation.integer_at_least("horizon", self.horizon, 1))
        object.__setattr__(self, "prior_a", validation.positive_float("prior_a", self.prior_a))
        object.__setattr__(self, "prior_b", validation.positive_float("prior_b", self.prior_b))

    @property
    def num_actions(self) -> int:
        return self.num_arms

    def sample_task(self, key: jax.Array) -> BernoulliTask:
        """Draws each arm's success probability from Beta(prior_a, prior_b)."""
        probs = jax.random.beta(key, self.prior_a, self.prior_b, (self.num_arms,), jnp.float32)
        return BernoulliTask(probs=probs)

    def arm_probs(self, task: BernoulliTask) -> jax.Array:
        return task.probs

    def belief_init(self, obs: jax.Array) -> BetaBelief:
        """The prior: Beta(prior_a, prior_b) for every arm."""
        del obs
        shape = (self.num_arms,)
        return BetaBelief(
            alpha=jnp.full(shape, self.prior_a, jnp.float32),
            beta=jnp.full(shape, self.prior_b, jnp.float32),
        )

    def belief_update(
        self,
        belief: BetaBelief,
        obs: jax.Array,
        action: jax.Array,
        reward: jax.Array,
        next_obs: jax.Array,
    ) -> BetaBelief:
        """Counts a success (reward 1) or a failure (reward 0) for the pulled arm."""
        del obs, next_obs
        pulled = jax.nn.one_hot(action, self.num_arms, dtype=jnp.float32)
        return BetaBelief(
            alpha=belief.alpha + pulled * reward,
            beta=belief.beta + pulled * (1.0 - reward),
        )

    def belief_features(self, belief: BetaBelief) -> jax.Array:
        """``[posterior means (num_arms), posterior stds (num_arms)]``, float32."""
        return jnp.concatenate([beta_mean(belief), beta_std(belief)])

    def beta_posterior(self, belief: BetaBelief) -> BetaBelief:
        """Each arm's Beta posterior (``BetaArms``): the belief itself, prior plus counts."""
        return belief

    def belief_variance(self, belief: BetaBelief) -> jax.Array:
        """The posterior variance of each arm's success probability, float32[num_arms]."""
        return beta_std(belief) ** 2
