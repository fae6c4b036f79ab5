"""An Elman network (vanilla tanh RNN, the memory model of Kuo et al. 2025's RL² baseline):
flax's ``SimpleCell``, ``h' = tanh(W_i x + W_h h + b)``, and linear heads. Carry, readout and
memory are the hidden state ``float32[N, H]``."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from metabelief.agents.base import ActorCritic


@dataclasses.dataclass(frozen=True)
class SingleStateAgent(ActorCritic):
    """A memory model whose whole carry is its readout ``float32[N, H]`` (GRU, Elman)."""

    @property
    def memory_size(self) -> int:
        return self.hidden_size

    def initial_carry(self, num_tasks: int) -> jax.Array:
        return jnp.zeros((num_tasks, self.hidden_size), jnp.float32)

    def memory(self, carry: jax.Array) -> jax.Array:
        return carry

    def carry_from_memory(self, memory: jax.Array) -> jax.Array:
        return memory


@dataclasses.dataclass(frozen=True)
class ElmanAgent(SingleStateAgent):
    """A ``SimpleCell`` (tanh) of ``hidden_size`` units."""

    core_name = "rnn"

    def core(self, name: str) -> nn.Module:
        return nn.SimpleCell(self.hidden_size, name=name)
