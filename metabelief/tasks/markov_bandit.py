"""A bandit whose arms change hidden state: each arm is a Markov chain (Kuo et al. 2025).

Each of ``K`` arms has a hidden state among ``S`` that follows its own Markov chain
(``transitions[k]``, a row-stochastic ``S x S`` matrix); the pulled arm pays 1 with probability
``reward_probs[k][state]``, then every arm's chain steps. The initial states are uniform. Old
evidence must be forgotten at the rate the chains mix: an agent that counts rewards, as on a
stationary bandit, holds on to stale beliefs. Kuo et al.'s code: ``DiscreteBernoulliMarkovianBanditEnv``
in github.com/walkerlab/metaRL-predictive-representation, ``environments/dynamic_bandit/``.

The chains are independent given the actions, so the exact posterior factorises over arms: a
forward filter per arm (the pulled arm's state weighed by the reward's likelihood, then every
arm predicted through its transition matrix), in log space so it stays exact over any horizon.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from metabelief.tasks import validation
from metabelief.tasks.base import TaskFamily

ROW_SUM_TOLERANCE = 1e-6

# Kuo et al.'s three two-armed variants, as keyword arguments of ``MarkovBandit`` (arm 1 is their arm 2).
_STICKY = ((0.9, 0.1), (0.1, 0.9))
KUO_VARIANTS = {
    "symmetric": {"reward_probs": ((0.1, 0.9), (0.1, 0.9)), "transitions": (_STICKY, _STICKY)},
    "asymmetric_reward": {"reward_probs": ((0.1, 0.9), (0.4, 0.6)), "transitions": (_STICKY, _STICKY)},
    "asymmetric_transition": {
        "reward_probs": ((0.1, 0.9), (0.1, 0.9)),
        "transitions": (_STICKY, ((0.5, 0.5), (0.5, 0.5))),  # arm 1 memoryless
    },
}


@struct.dataclass
class MarkovTask:
    initial_states: jax.Array  # int32[K]: each arm's state on the first pull


@struct.dataclass
class MarkovState:
    states: jax.Array  # int32[K]: each arm's state on the next pull
    time: jax.Array  # int32[]: pulls made


@struct.dataclass
class MarkovBelief:
    """Per arm, the posterior over its state on the next pull."""

    log_probs: jax.Array  # float32[K, S], normalised per arm

    @property
    def probs(self) -> jax.Array:
        return jnp.exp(self.log_probs)


@dataclasses.dataclass(frozen=True)
class MarkovBandit(TaskFamily):
    """Bernoulli arms whose success probabilities follow hidden Markov chains.

    Action, ``int32[]``: the arm pulled. No observation (``obs_size`` 0). Reward: 1 with
    probability ``reward_probs[arm][state of arm]``, else 0; then every arm's state steps.
    Task: ``MarkovTask`` (initial states, uniform). State: ``MarkovState``. Belief:
    ``MarkovBelief``. An arm's *high* state is the one with its largest reward probability.
    Belief features, ``float32[2 K]``: P(each arm is in its high state now), then each arm's
    expected reward now; true features, ``float32[K]``: 1.0 where an arm is in its high state.
    Capability: ``ExpectedRewards``. Kuo et al.'s variants: ``KUO_VARIANTS``.

    Args:
      reward_probs: ``K x S`` success probabilities, per arm and state.
      transitions: ``K x S x S``; ``transitions[k][s][s']`` = P(arm k moves from s to s').
      horizon: pulls per episode.

    Example::

        from metabelief.tasks.markov_bandit import KUO_VARIANTS

        family = metabelief.make("markov_bandit", **KUO_VARIANTS["asymmetric_reward"])
    """

    reward_probs: tuple[tuple[float, ...], ...] = ((0.1, 0.9), (0.1, 0.9))
    transitions: tuple[tuple[tuple[float, ...], ...], ...] = (_STICKY, _STICKY)
    horizon: int = 300

    obs_size = 0

    def __post_init__(self) -> None:
        rewards = _nested_probabilities("reward_probs", self.reward_probs, depth=2)
        transitions = _nested_probabilities("transitions", self.transitions, depth=3)
        num_arms, num_states = np.shape(rewards) if _rectangular(rewards) else (0, 0)
        if num_arms < 2 or num_states < 2:
            raise ValueError(
                "reward_probs must be K x S with K >= 2 arms and S >= 2 states each, "
                f"got {self.reward_probs!r}"
            )
        if not _rectangular(transitions) or np.shape(transitions) != (num_arms, num_states, num_states):
            raise ValueError(
                f"transitions must be {num_arms} x {num_states} x {num_states} (an S x S matrix per arm), "
                f"got {self.transitions!r}"
            )
        row_sums = np.sum(transitions, axis=-1)
        if np.any(np.abs(row_sums - 1.0) > ROW_SUM_TOLERANCE):
            raise ValueError(f"transitions rows must each sum to 1, got row sums {row_sums.tolist()}")
        object.__setattr__(self, "reward_probs", rewards)
        object.__setattr__(self, "transitions", transitions)
        object.__setattr__(self, "horizon", validation.integer_at_least("horizon", self.horizon, 1))

    @property
    def num_actions(self) -> int:
        return len(self.reward_probs)

    @property
    def num_arms(self) -> int:
        return len(self.reward_probs)

    @property
    def num_states(self) -> int:
        return len(self.reward_probs[0])

    def high_states(self) -> np.ndarray:
        """``int[K]``: each arm's state with the largest reward probability (the first on ties)."""
        return np.argmax(np.asarray(self.reward_probs), axis=1)

    def sample_task(self, key: jax.Array) -> MarkovTask:
        states = jax.random.randint(key, (self.num_arms,), 0, self.num_states, jnp.int32)
        return MarkovTask(initial_states=states)

    def reset(self, key: jax.Array, task: MarkovTask) -> tuple[MarkovState, jax.Array]:
        del key
        state = MarkovState(states=task.initial_states.astype(jnp.int32), time=jnp.zeros((), jnp.int32))
        return state, jnp.zeros((0,), jnp.float32)

    def step(
        self, key: jax.Array, task: MarkovTask, state: MarkovState, action: jax.Array
    ) -> tuple[MarkovState, jax.Array, jax.Array, jax.Array]:
        del task
        reward_key, chain_key = jax.random.split(key)
        p_reward = jnp.asarray(self.reward_probs, jnp.float32)[action, state.states[action]]
        reward = jax.random.bernoulli(reward_key, p_reward).astype(jnp.float32)
        rows = jnp.log(jnp.asarray(self.transitions, jnp.float32))[jnp.arange(self.num_arms), state.states]
        states = jax.random.categorical(chain_key, rows, axis=-1).astype(jnp.int32)
        state = MarkovState(states=states, time=state.time + 1)
        return state, jnp.zeros((0,), jnp.float32), reward, state.time >= self.horizon

    def belief_init(self, obs: jax.Array) -> MarkovBelief:
        del obs
        return MarkovBelief(
            log_probs=jnp.full((self.num_arms, self.num_states), -np.log(self.num_states), jnp.float32)
        )

    def belief_update(
        self, belief: MarkovBelief, obs: jax.Array, action: jax.Array, reward: jax.Array, next_obs: jax.Array
    ) -> MarkovBelief:
        """The pulled arm's states weighed by the reward's likelihood, then every arm's chain predicted."""
        del obs, next_obs
        with np.errstate(divide="ignore"):
            log_pay = jnp.asarray(np.log(self.reward_probs), jnp.float32)
            log_miss = jnp.asarray(np.log1p(-np.asarray(self.reward_probs)), jnp.float32)
            log_transitions = jnp.asarray(np.log(self.transitions), jnp.float32)
        likelihood = jnp.where(reward > 0.5, log_pay[action], log_miss[action])  # [S]
        weighed = belief.log_probs.at[action].add(likelihood)
        weighed = weighed - jax.nn.logsumexp(weighed, axis=-1, keepdims=True)
        # log P(s') = logsumexp_s [log P(s) + log T(s, s')], per arm.
        predicted = jax.nn.logsumexp(weighed[:, :, None] + log_transitions, axis=1)
        predicted = predicted - jax.nn.logsumexp(predicted, axis=-1, keepdims=True)
        return MarkovBelief(log_probs=predicted.astype(jnp.float32))

    def belief_features(self, belief: MarkovBelief) -> jax.Array:
        probs = belief.probs
        p_high = probs[jnp.arange(self.num_arms), self.high_states()]
        return jnp.concatenate([p_high, self._expected_rewards(probs)])

    def true_features(self, task: MarkovTask, state: MarkovState) -> jax.Array:
        del task
        return (state.states == self.high_states()).astype(jnp.float32)

    def expected_rewards(self, belief: MarkovBelief, obs: jax.Array) -> jax.Array:
        """``float32[K]``: each arm's posterior probability of paying on the next pull."""
        del obs
        return self._expected_rewards(belief.probs)

    def _expected_rewards(self, probs: jax.Array) -> jax.Array:
        return (probs * jnp.asarray(self.reward_probs, jnp.float32)).sum(axis=-1)


def _nested_probabilities(name: str, values: object, depth: int) -> tuple:
    """``values`` as nested tuples of floats in [0, 1], ``depth`` levels deep."""
    if depth == 0:
        return validation.probability(name, values)
    if not isinstance(values, list | tuple | np.ndarray) or len(values) == 0:
        raise ValueError(f"{name} must be nested tuples of probabilities ({depth} levels), got {values!r}")
    return tuple(_nested_probabilities(name, value, depth - 1) for value in values)


def _rectangular(nested: tuple) -> bool:
    try:
        np.asarray(nested, dtype=float)
    except ValueError:
        return False
    return True
