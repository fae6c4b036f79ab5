"""The LSTM actor-critic of Wang et al. (2016): flax's ``OptimizedLSTMCell`` and linear heads.

Carry ``(cell, hidden)``, each ``float32[N, H]``; the readout is ``hidden`` and the memory
``[hidden, cell]`` (``M = 2H``).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from metabelief.agents.base import ActorCritic

LSTMCarry = tuple[jax.Array, jax.Array]  # (cell, hidden), each float32[..., hidden_size]


@dataclasses.dataclass(frozen=True)
class LSTMAgent(ActorCritic):
    """An ``OptimizedLSTMCell`` of ``hidden_size`` units (the package's default agent)."""

    core_name = "lstm"

    def core(self, name: str) -> nn.Module:
        return nn.OptimizedLSTMCell(self.hidden_size, name=name)

    @property
    def memory_size(self) -> int:
        return 2 * self.hidden_size

    def initial_carry(self, num_tasks: int) -> LSTMCarry:
        """Zero cell and hidden state, each ``float32[num_tasks, hidden_size]``."""
        zeros = jnp.zeros((num_tasks, self.hidden_size), jnp.float32)
        return zeros, zeros

    def memory(self, carry: LSTMCarry) -> jax.Array:
        cell, hidden = carry
        return jnp.concatenate([hidden, cell], axis=-1)

    def carry_from_memory(self, memory: jax.Array) -> LSTMCarry:
        return memory[..., self.hidden_size :], memory[..., : self.hidden_size]
