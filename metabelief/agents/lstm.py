"""An LSTM actor-critic whose input is the observation, the previous action and reward.

The agent is a frozen dataclass holding only sizes; parameters are a plain pytree from
``agent.init(key)``, so seeds or hyper-parameters can be vmapped. One call of ``agent.step``
advances a batch of LSTMs by one time step::

    agent = agent_for(family, hidden_size=48)
    params = agent.init(key)
    carry = agent.initial_carry(num_tasks)
    inputs = agent.inputs(obs, prev_action, prev_reward, time)    # [N, input_size]
    carry, logits, value = agent.step(params, carry, inputs)      # [N, A], [N]
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from metabelief.tasks.base import TaskFamily
from metabelief.tasks.validation import boolean, integer_at_least

LSTMCarry = tuple[jax.Array, jax.Array]  # (cell, hidden), each float32[..., hidden_size]


class LSTMActorCritic(nn.Module):
    """One step of an ``OptimizedLSTMCell`` followed by linear policy and value heads."""

    num_actions: int
    hidden_size: int

    @nn.compact
    def __call__(self, carry: LSTMCarry, inputs: jax.Array) -> tuple[LSTMCarry, jax.Array, jax.Array]:
        carry, hidden = nn.OptimizedLSTMCell(self.hidden_size, name="lstm")(carry, inputs)
        # Small policy weights start the agent near the uniform policy (as in purejaxrl).
        logits = nn.Dense(self.num_actions, kernel_init=nn.initializers.orthogonal(0.01), name="policy")(
            hidden
        )
        value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0), name="value")(hidden)
        return carry, logits, value[..., 0]


@dataclasses.dataclass(frozen=True)
class RecurrentAgent:
    """Sizes of an LSTM actor-critic for one task family; the maths lives in pure methods.

    Input vector, ``float32[input_size]``: the observation ``[obs_size]``, the one-hot previous
    action ``[num_actions]`` (zeros at the first step), the previous reward ``[1]`` (0 at the first
    step) and, when ``time_input``, the time in the episode divided by the horizon ``[1]``.
    """

    num_actions: int
    obs_size: int
    horizon: int
    hidden_size: int = 48
    time_input: bool = False

    def __post_init__(self):
        for name, minimum in (("num_actions", 2), ("obs_size", 0), ("horizon", 1), ("hidden_size", 1)):
            object.__setattr__(self, name, integer_at_least(name, getattr(self, name), minimum))
        object.__setattr__(self, "time_input", boolean("time_input", self.time_input))

    @property
    def input_size(self) -> int:
        return self.obs_size + self.num_actions + 1 + int(self.time_input)

    @property
    def network(self) -> LSTMActorCritic:
        return LSTMActorCritic(num_actions=self.num_actions, hidden_size=self.hidden_size)

    def init(self, key: jax.Array) -> dict:
        """Initial parameters, a pytree of float32 arrays."""
        carry = self.initial_carry(1)
        return self.network.init(key, carry, jnp.zeros((1, self.input_size), jnp.float32))

    def initial_carry(self, num_tasks: int) -> LSTMCarry:
        """Zero cell and hidden state, each ``float32[num_tasks, hidden_size]``."""
        zeros = jnp.zeros((num_tasks, self.hidden_size), jnp.float32)
        return zeros, zeros

    def inputs(
        self, obs: jax.Array, prev_action: jax.Array, prev_reward: jax.Array, time: jax.Array
    ) -> jax.Array:
        """Network input ``float32[N, input_size]``.

        Args:
          obs: ``float32[N, obs_size]``, the observation to act on.
          prev_action: ``int32[N]``, the previous action, or -1 before the first one (one-hot zero).
          prev_reward: ``float32[N]``, the previous reward (0 before the first action).
          time: ``int32[]`` or ``int32[N]``, steps taken in the episode.
        """
        parts = [
            obs.astype(jnp.float32),
            jax.nn.one_hot(prev_action, self.num_actions, dtype=jnp.float32),
            prev_reward.astype(jnp.float32)[:, None],
        ]
        if self.time_input:
            normalised = jnp.broadcast_to(time, prev_reward.shape).astype(jnp.float32) / self.horizon
            parts.append(normalised[:, None])
        return jnp.concatenate(parts, axis=-1)

    def step(
        self, params: dict, carry: LSTMCarry, inputs: jax.Array
    ) -> tuple[LSTMCarry, jax.Array, jax.Array]:
        """One LSTM step: new carry, policy logits ``float32[N, A]`` and value ``float32[N]``."""
        return self.network.apply(params, carry, inputs)


def agent_for(family: TaskFamily, hidden_size: int = 48, time_input: bool = False) -> RecurrentAgent:
    """The actor-critic sized for ``family``'s actions, observations and horizon."""
    if not all(hasattr(family, name) for name in ("num_actions", "obs_size", "horizon")):
        raise ValueError(
            f"family must be a task family (with num_actions, obs_size and horizon), got {family!r}"
        )
    return RecurrentAgent(
        num_actions=family.num_actions,
        obs_size=family.obs_size,
        horizon=family.horizon,
        hidden_size=hidden_size,
        time_input=time_input,
    )
