"""What training carries: one agent's parameters, optimiser state and key, and a trained population.

Seeds are one more vmapped axis: a population's parameters, optimiser state and metrics carry a
leading ``[S]`` axis (agent i is the one-seed run with seed ``config.seed + i``).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax

from metabelief import sharding
from metabelief.tasks.base import PyTree
from metabelief.train.config import TrainConfig
from metabelief.train.dynamics import Dynamics


@chex.dataclass(frozen=True)
class TrainState:
    params: PyTree
    opt_state: PyTree
    key: jax.Array


@chex.dataclass(frozen=True)
class TrainResult:
    """A trained population of ``S = config.num_seeds`` agents."""

    params: PyTree  # [S, ...]: the trained agents' parameters
    initial_params: PyTree  # [S, ...]: the same networks before training (the untrained baselines)
    metrics: dict  # name -> float32[S, num_updates], one entry per seed and update
    seconds: float  # wall time of the updates, compilation excluded
    compile_seconds: float
    agent_steps_per_second: float  # over all seeds
    dynamics: Dynamics | None = None  # the evaluations during training (``train(dynamics=...)``)

    @property
    def num_seeds(self) -> int:
        return population_size(self.params)

    def seed_params(self, index: int) -> PyTree:
        """Agent ``index``'s trained parameters (no seed axis)."""
        return select_seed(self.params, index)

    def seed_initial_params(self, index: int) -> PyTree:
        """Agent ``index``'s parameters before training (no seed axis)."""
        return select_seed(self.initial_params, index)


def select_seed(population: PyTree, index: int) -> PyTree:
    """Member ``index`` of a pytree with a leading seed axis."""
    size = population_size(population)
    if not 0 <= index < size:
        raise ValueError(f"index must be < num_seeds ({size}) and >= 0, got {index!r}")
    return jax.tree.map(lambda leaf: leaf[index], population)


def population_size(population: PyTree) -> int:
    """The length of the leading seed axis of a population pytree."""
    return int(jax.tree.leaves(population)[0].shape[0])


def steps_per_update(config: TrainConfig) -> int:
    """Optimiser steps in one update: 1 for A2C, epochs x minibatches for PPO."""
    return config.ppo_epochs * config.ppo_minibatches if config.algorithm == "ppo" else 1


def optimiser(config: TrainConfig) -> optax.GradientTransformation:
    """Adam after clipping the global gradient norm; with ``anneal_learning_rate`` its step size
    falls linearly from ``learning_rate`` to 0 over the training's optimiser steps (no late
    collapse of a policy that had converged, as a constant 5e-3 sometimes gives)."""
    learning_rate = config.learning_rate
    if config.anneal_learning_rate:
        learning_rate = optax.linear_schedule(
            config.learning_rate, 0.0, config.num_updates * steps_per_update(config)
        )
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(learning_rate))


def init_state(config: TrainConfig, key: jax.Array | None = None) -> TrainState:
    """One agent's initial parameters (from ``key``, default ``config.seed``) and optimiser state.

    Replicated on the devices of ``config.devices`` when that is not 1.
    """
    state = _init_one(config, jax.random.key(config.seed) if key is None else key)
    return state if config.devices == 1 else sharding.replicate(state, sharding.task_mesh(config.devices))


def init_population(config: TrainConfig) -> TrainState:
    """``init_state`` of every seed in ``config.seeds``, stacked on a leading ``[S]`` axis.

    With ``config.devices`` other than 1, split over the devices by seed or replicated on them
    (``metabelief.train.loop``).
    """
    keys = jax.vmap(jax.random.key)(jnp.asarray(config.seeds, jnp.uint32))
    population = jax.vmap(lambda key: _init_one(config, key))(keys)
    if config.devices == 1:
        return population
    mesh = sharding.task_mesh(config.devices)
    if sharding.spreads_seeds(config.num_seeds, mesh):
        return sharding.shard_seeds(population, mesh)
    return sharding.replicate(population, mesh)


def _init_one(config: TrainConfig, key: jax.Array) -> TrainState:
    init_key, train_key = jax.random.split(key)
    params = config.make_agent().init(init_key)
    return TrainState(params=params, opt_state=optimiser(config).init(params), key=train_key)


def apply_gradients(state: TrainState, grads: PyTree, config: TrainConfig) -> tuple[TrainState, jax.Array]:
    """One optimiser step: the new state (same key) and the gradient's global norm."""
    updates, opt_state = optimiser(config).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(params=params, opt_state=opt_state, key=state.key), optax.tree.norm(grads)
