"""A GRU actor-critic (Cho et al. 2014; the memory model of most recurrent PPO agents): flax's
``GRUCell`` and linear heads. Carry, readout and memory are the hidden state ``float32[N, H]``."""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from metabelief.agents.rnn import SingleStateAgent


@dataclasses.dataclass(frozen=True)
class GRUAgent(SingleStateAgent):
    """A ``GRUCell`` of ``hidden_size`` units."""

    core_name = "gru"

    def core(self, name: str) -> nn.Module:
        return nn.GRUCell(self.hidden_size, name=name)
