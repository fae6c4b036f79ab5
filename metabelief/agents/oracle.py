"""The belief-oracle agent: a feed-forward actor-critic on the exact belief (the belief-MDP agent).

Its memory is not learnt: it is the family's exact Bayes filter, updated inside ``step`` from the
same input vector a recurrent agent reads (the observation, the one-hot previous action and the
previous reward), so the engine, training and every analysis treat it as one more agent. A
two-layer tanh MLP reads ``[belief_features, obs]`` and linear heads read its last layer, the
readout. Trained by the same algorithm and budget, it is the reference for what a policy *of the
belief* learns: a recurrent agent that falls short of it falls short in its memory, not in its
policy class.

Carry ``(belief, prev_obs [N, O], h [N, H])``; memory ``[h, belief leaves flattened, prev_obs]``
(integer belief leaves, e.g. counts, round-trip through float32 exactly up to 2**24).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from metabelief.agents.base import ActorCritic, PyTree
from metabelief.tasks.base import TaskFamily


class BeliefMLP(nn.Module):
    """The exact belief updated on one input, then ``h = tanh(W2 tanh(W1 [features, obs]))``."""

    family: TaskFamily
    hidden_size: int

    @nn.compact
    def __call__(self, carry, inputs):
        belief, prev_obs, _ = carry
        obs_size, num_actions = self.family.obs_size, self.family.num_actions
        obs = inputs[:, :obs_size]
        one_hot = inputs[:, obs_size : obs_size + num_actions]
        reward = inputs[:, obs_size + num_actions]
        first = one_hot.sum(axis=-1) == 0  # no previous action: the task starts here
        updated = jax.vmap(self.family.belief_update)(belief, prev_obs, jnp.argmax(one_hot, -1), reward, obs)
        start = jax.vmap(self.family.belief_init)(obs)
        belief = jax.tree.map(
            lambda fresh, old: jnp.where(first.reshape((-1,) + (1,) * (old.ndim - 1)), fresh, old),
            start,
            updated,
        )
        features = jax.vmap(self.family.belief_features)(belief).astype(jnp.float32)
        hidden = jnp.tanh(nn.Dense(self.hidden_size, name="layer_1")(jnp.concatenate([features, obs], -1)))
        hidden = jnp.tanh(nn.Dense(self.hidden_size, name="layer_2")(hidden))
        return (belief, obs, hidden), hidden


@dataclasses.dataclass(frozen=True)
class BeliefOracleAgent(ActorCritic):
    """``BeliefMLP`` for ``family``, ``hidden_size`` units per layer."""

    family: TaskFamily | None = None

    core_name = "oracle"

    def __post_init__(self):
        super().__post_init__()
        if self.family is None or (self.family.num_actions, self.family.obs_size) != (
            self.num_actions,
            self.obs_size,
        ):
            raise ValueError(f"family must be the task family this agent acts in, got {self.family!r}")

    def core(self, name: str) -> nn.Module:
        return BeliefMLP(self.family, self.hidden_size, name=name)

    def _template(self) -> PyTree:
        return jax.eval_shape(self.family.belief_init, jnp.zeros((self.obs_size,), jnp.float32))

    @property
    def memory_size(self) -> int:
        belief_size = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(self._template()))
        return self.hidden_size + belief_size + self.obs_size

    def initial_carry(self, num_tasks: int) -> PyTree:
        """The prior given a zero observation (replaced at the first step by ``belief_init(obs)``)."""
        obs = jnp.zeros((num_tasks, self.obs_size), jnp.float32)
        return (
            jax.vmap(self.family.belief_init)(obs),
            obs,
            jnp.zeros((num_tasks, self.hidden_size), jnp.float32),
        )

    def memory(self, carry: PyTree) -> jax.Array:
        belief, prev_obs, hidden = carry
        leaves = [leaf.reshape(leaf.shape[0], -1).astype(jnp.float32) for leaf in jax.tree.leaves(belief)]
        return jnp.concatenate([hidden, *leaves, prev_obs.astype(jnp.float32)], axis=-1)

    def carry_from_memory(self, memory: jax.Array) -> PyTree:
        template = self._template()
        leaves, treedef = jax.tree.flatten(template)
        start, parts = self.hidden_size, []
        for leaf in leaves:
            size = math.prod(leaf.shape)
            part = memory[..., start : start + size].reshape(*memory.shape[:-1], *leaf.shape)
            if jnp.issubdtype(leaf.dtype, jnp.integer):
                part = jnp.round(part)
            parts.append(part.astype(leaf.dtype))
            start += size
        belief = jax.tree.unflatten(treedef, parts)
        return belief, memory[..., start:], memory[..., : self.hidden_size]
