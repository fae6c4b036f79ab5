"""The two-step task (Daw et al. 2011) in the one-step-per-trial form of Wang et al. (2018).

Each trial the agent picks a first-stage action. Action 0 leads to second-stage state A with
probability ``p_common`` (else to B), action 1 leads to B with probability ``p_common`` (else to
A). One of A and B is *rich*: it pays 1 with probability ``p_rich``, the other with ``1 - p_rich``.
After every trial the rich state swaps with probability ``p_switch``. The hidden task is which
state is rich at the start; the hidden quantity the belief tracks is which state is rich now.

The transition says nothing about which state is rich (it depends only on the action), so the
exact posterior is a two-state hidden Markov model filter driven by the rewards alone: weigh the
reward by its likelihood under "A rich" and "B rich" given the state it came from, then predict
through the switch. It is kept as the log-odds of "A rich", which stays exact over any number of
trials in float32 (there is nothing to renormalise, and probabilities near 0 or 1 keep their
information).

A common transition is action 0 -> A or action 1 -> B: ``is_common(action, next_obs)``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from metabelief.tasks import two_state, validation
from metabelief.tasks.base import TaskFamily

STATE_A, STATE_B = 0, 1  # second-stage states: index into the observation


@struct.dataclass
class TwoStepTask:
    """A hidden two-step task."""

    a_rich_at_start: jax.Array  # bool[]: whether A is the rich state on the first trial


@struct.dataclass
class TwoStepState:
    a_rich: jax.Array  # bool[]: whether A is the rich state on the next trial
    time: jax.Array  # int32[]: trials taken in the episode


@struct.dataclass
class TwoStepBelief:
    """The posterior over which second-stage state is rich on the next trial."""

    log_odds: jax.Array  # float32[]: log P(A rich | history) - log P(B rich | history)

    @property
    def p_a_rich(self) -> jax.Array:
        """``float32[]``: P(A is rich on the next trial | history)."""
        return jax.nn.sigmoid(self.log_odds)


def reached_state(next_obs: jax.Array) -> jax.Array:
    """``int32[...]``: the second-stage state (``STATE_A`` = 0, ``STATE_B`` = 1) a step reached.

    ``next_obs`` is ``float32[..., 2]``, observations returned by ``TwoStep.step``.
    """
    return jnp.argmax(next_obs, axis=-1).astype(jnp.int32)


def is_common(action: jax.Array, next_obs: jax.Array) -> jax.Array:
    """``bool[...]``: whether the transition was the common one (action 0 -> A, action 1 -> B).

    ``action`` is ``int32[...]``, ``next_obs`` the ``float32[..., 2]`` observation ``step`` returned
    for it.
    """
    return jnp.asarray(action) == reached_state(next_obs)


@dataclasses.dataclass(frozen=True)
class TwoStep(TaskFamily):
    """The two-step task, one agent step per trial.

    Observation, ``float32[2]``: the one-hot of the second-stage state the trial reached (A at
    index 0, B at index 1); zeros from ``reset``, when no state has been reached yet.
    Action, ``int32[]``: the first-stage action, 0 or 1 (0 leads to A with ``p_common``, 1 to B).
    Reward, ``float32[]``: 1 with probability ``p_rich`` if the reached state is rich on this
    trial, else with ``1 - p_rich``; then the rich state swaps with probability ``p_switch``.
    Termination: ``done`` once ``num_trials`` trials have been taken (``horizon = num_trials``).
    Task: ``TwoStepTask``, A or B rich at the start with probability 1/2 each. State:
    ``TwoStepState``. Belief: ``TwoStepBelief`` (log-odds that A is rich; ``.p_a_rich``).
    Belief features, ``float32[1]``: [P(A is rich on the next trial | history)]. True features,
    ``float32[1]``: [1.0 if A is rich in the state ``step`` returned (after the swap) else 0.0].
    With ``p_rich`` 0 or 1 a history no task could produce gives a NaN belief.

    Args:
      num_trials: trials per episode (>= 1).
      p_common: probability of the common transition.
      p_rich: reward probability of the rich state (the other state pays with ``1 - p_rich``).
      p_switch: probability that the rich state swaps after a trial.

    Example::

        family = metabelief.make("two_step", num_trials=200)
    """

    num_trials: int = 100
    p_common: float = 0.8
    p_rich: float = 0.9
    p_switch: float = 0.025

    num_actions = 2  # class constants, not fields: first-stage actions and second-stage states
    obs_size = 2

    def __post_init__(self) -> None:
        num_trials = validation.integer_at_least("num_trials", self.num_trials, 1)
        object.__setattr__(self, "num_trials", num_trials)
        for name in ("p_common", "p_rich", "p_switch"):
            object.__setattr__(self, name, validation.probability(name, getattr(self, name)))

    @property
    def horizon(self) -> int:
        return self.num_trials

    def sample_task(self, key: jax.Array) -> TwoStepTask:
        """A or B rich at the start, with probability 1/2 each."""
        return TwoStepTask(a_rich_at_start=jax.random.bernoulli(key, 0.5))

    def reset(self, key: jax.Array, task: TwoStepTask) -> tuple[TwoStepState, jax.Array]:
        """Starts with the task's initial rich state; the observation is zeros."""
        del key
        state = TwoStepState(a_rich=jnp.asarray(task.a_rich_at_start, bool), time=jnp.zeros((), jnp.int32))
        return state, jnp.zeros((self.obs_size,), jnp.float32)

    def step(
        self, key: jax.Array, task: TwoStepTask, state: TwoStepState, action: jax.Array
    ) -> tuple[TwoStepState, jax.Array, jax.Array, jax.Array]:
        """One trial: transition, reward from the current rich state, then the rich state may swap."""
        del task
        transition_key, reward_key, switch_key = jax.random.split(key, 3)
        common = jax.random.bernoulli(transition_key, self.p_common)
        reached = jnp.where(common, action, 1 - action).astype(jnp.int32)
        reached_rich = (reached == STATE_A) == state.a_rich
        pays = jax.random.bernoulli(reward_key, jnp.where(reached_rich, self.p_rich, 1.0 - self.p_rich))
        swaps = jax.random.bernoulli(switch_key, self.p_switch)
        state = TwoStepState(a_rich=state.a_rich != swaps, time=state.time + 1)
        obs = jax.nn.one_hot(reached, self.obs_size, dtype=jnp.float32)
        return state, obs, pays.astype(jnp.float32), state.time >= self.num_trials

    def belief_init(self, obs: jax.Array) -> TwoStepBelief:
        """The prior: A or B rich with probability 1/2 each (log-odds 0)."""
        del obs
        return TwoStepBelief(log_odds=jnp.zeros((), jnp.float32))

    def belief_update(
        self, belief: TwoStepBelief, obs: jax.Array, action: jax.Array, reward: jax.Array, next_obs: jax.Array
    ) -> TwoStepBelief:
        """Weighs the reward by its likelihood under "A rich" and "B rich", then predicts the swap.

        A reward at A or no reward at B multiplies the odds of "A rich" by p_rich / (1 - p_rich),
        the other two outcomes divide them by it. The state reached is read from ``next_obs``;
        ``obs`` and ``action`` carry no information about which state is rich.
        """
        del obs, action
        toward_a = (next_obs[STATE_A] > 0.5) == (reward > 0.5)
        evidence = two_state.log_ratio(self.p_rich)
        log_odds = belief.log_odds + jnp.where(toward_a, evidence, -evidence)
        return TwoStepBelief(log_odds=two_state.predict_flip(log_odds, self.p_switch).astype(jnp.float32))

    def belief_features(self, belief: TwoStepBelief) -> jax.Array:
        """``float32[1]``: [P(A is rich on the next trial | history)]."""
        return belief.p_a_rich[None]

    def expected_rewards(self, belief: TwoStepBelief, obs: jax.Array) -> jax.Array:
        """``float32[2]``: posterior expected reward of each first-stage action on the next trial."""
        del obs
        pays_at_a = belief.p_a_rich * self.p_rich + (1.0 - belief.p_a_rich) * (1.0 - self.p_rich)
        reaches_a = jnp.array([self.p_common, 1.0 - self.p_common], jnp.float32)
        return reaches_a * pays_at_a + (1.0 - reaches_a) * (1.0 - pays_at_a)

    def true_features(self, task: TwoStepTask, state: TwoStepState) -> jax.Array:
        """``float32[1]``: [1.0 if A is rich in ``state`` else 0.0]."""
        del task
        return state.a_rich.astype(jnp.float32)[None]
