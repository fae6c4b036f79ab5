"""Advantage actor-critic with full-episode backpropagation through time (Wang et al. 2016).

Every update samples ``num_tasks`` fresh tasks, runs one episode of each with the LSTM agent
(``metabelief.rollout.rollout``, differentiated directly, so no second pass over the episode),
and takes one optimiser step on the mean over tasks and steps of::

    -log pi(a_t | h_t) * (G_t - V_t)  +  value_coef * (G_t - V_t)^2 / 2  -  entropy_coef * H[pi(. | h_t)]

with ``G_t`` the discounted return to the end of the episode (episodes end at the horizon, so
there is nothing to bootstrap). Updates run in jitted chunks of ``updates_per_chunk``; the
Python loop between chunks only refreshes the progress bar.

Seeds are one more vmapped axis: ``train`` runs ``config.num_seeds`` independent agents in the
same program, each with its own initialisation and its own task and action streams (agent i is
the one-seed run with seed ``config.seed + i``, up to float rounding, which a long and chaotic
training run can grow), so parameters, optimiser state and metrics carry a leading ``[S]`` axis.

With ``config.devices`` other than 1 (D devices), the work is split over them one of two ways
(``metabelief.sharding.spreads_seeds``):

* **seeds**, when there are several and D divides their number: each device trains S / D whole
  agents. Seeds never interact, so the devices do not communicate at all;
* **tasks** otherwise (e.g. one seed): every seed's tasks are split over the devices and the
  state is replicated on them; the partitioner all-reduces the sums behind each mean over tasks.

Either way the updates equal the one-device ones up to float rounding.
"""

from __future__ import annotations

import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from metabelief import sharding
from metabelief.rollout import rollout
from metabelief.tasks.base import PyTree
from metabelief.train.config import TrainConfig


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


def discounted_returns(rewards: jax.Array, gamma: float) -> jax.Array:
    """``G_t = r_t + gamma * G_{t+1}``, with ``G_T = 0``, for ``rewards`` [T, N]."""

    def backwards(future, reward):
        future = reward + gamma * future
        return future, future

    _, returns = jax.lax.scan(backwards, jnp.zeros_like(rewards[0]), rewards, reverse=True)
    return returns


def optimiser(config: TrainConfig) -> optax.GradientTransformation:
    """Adam after clipping the global gradient norm; with ``anneal_learning_rate`` its step size
    falls linearly from ``learning_rate`` to 0 over ``num_updates`` (no late collapse of a policy
    that had converged, as a constant 5e-3 sometimes gives)."""
    learning_rate = config.learning_rate
    if config.anneal_learning_rate:
        learning_rate = optax.linear_schedule(config.learning_rate, 0.0, config.num_updates)
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
    (see the module docstring).
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


def a2c_loss(params: PyTree, config: TrainConfig, key: jax.Array) -> tuple[jax.Array, dict]:
    """The A2C loss on one episode of ``config.num_tasks`` freshly sampled tasks, and its metrics."""
    family, agent = config.make_family(), config.make_agent()
    task_key, rollout_key = jax.random.split(key)
    tasks = jax.vmap(family.sample_task)(jax.random.split(task_key, config.num_tasks))
    if config.devices != 1:  # the partitioner carries the lane split through the whole update
        mesh = sharding.task_mesh(config.devices)
        if not sharding.spreads_seeds(config.num_seeds, mesh):
            tasks = sharding.shard_tasks(tasks, mesh)
    trajectory = rollout(family, agent, params, rollout_key, tasks, track_belief=False)
    returns = discounted_returns(trajectory.rewards, config.gamma)  # [T, N]
    advantages = jax.lax.stop_gradient(returns - trajectory.values)
    log_probs = jax.nn.log_softmax(trajectory.logits)  # [T, N, A]
    chosen = jnp.take_along_axis(log_probs, trajectory.actions[..., None], axis=-1)[..., 0]
    entropy = -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1).mean()
    policy_loss = -jnp.mean(chosen * advantages)
    value_loss = 0.5 * jnp.mean((returns - trajectory.values) ** 2)
    loss = policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy
    metrics = {
        "episode_return": trajectory.rewards.sum(axis=0).mean(),
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy,
    }
    return loss, metrics


def update(state: TrainState, config: TrainConfig) -> tuple[TrainState, dict]:
    """One A2C update: an episode of fresh tasks, its gradient and an optimiser step."""
    key, loss_key = jax.random.split(state.key)
    grads, metrics = jax.grad(a2c_loss, has_aux=True)(state.params, config, loss_key)
    updates, opt_state = optimiser(config).update(grads, state.opt_state, state.params)
    metrics["grad_norm"] = optax.tree.norm(grads)
    params = optax.apply_updates(state.params, updates)
    return TrainState(params=params, opt_state=opt_state, key=key), metrics


def population_update(population: TrainState, config: TrainConfig) -> tuple[TrainState, dict]:
    """``update`` of every seed at once: ``population`` and the metrics carry a leading ``[S]`` axis."""
    return jax.vmap(update, in_axes=(0, None))(population, config)


def train_chunk(population: TrainState, config: TrainConfig, num_updates: int) -> tuple[TrainState, dict]:
    """``num_updates`` population updates in one ``lax.scan``; metrics ``[S, num_updates]``."""
    population, metrics = jax.lax.scan(
        lambda s, _: population_update(s, config), population, None, length=num_updates
    )
    return population, jax.tree.map(lambda values: values.T, metrics)


_train_chunk = jax.jit(train_chunk, static_argnames=("config", "num_updates"))


def train(config: TrainConfig, *, progress: bool = True) -> TrainResult:
    """Trains the ``config.num_seeds`` agents of ``config`` together, showing steps (all seeds), the
    mean return over seeds and steps per second.

    Returns:
      A ``TrainResult`` with the final and the initial parameters (``[S, ...]``) and per-seed,
      per-update metrics. The parameters are on the default device whatever ``config.devices``, so
      the code that evaluates them runs as after a one-device run (not replicated on every device).
    """
    state = init_population(config)
    initial_params = state.params
    chunk_sizes = [config.updates_per_chunk] * (config.num_updates // config.updates_per_chunk)
    if config.num_updates % config.updates_per_chunk:
        chunk_sizes.append(config.num_updates % config.updates_per_chunk)

    start = time.perf_counter()
    compiled = {size: _train_chunk.lower(state, config, size).compile() for size in set(chunk_sizes)}
    compile_seconds = time.perf_counter() - start

    history = []
    steps_per_update = config.num_seeds * config.steps_per_update
    bar = tqdm(
        total=config.num_updates * steps_per_update, unit="step", unit_scale=True, disable=not progress
    )
    start = time.perf_counter()
    for size in chunk_sizes:
        state, metrics = compiled[size](state)
        history.append(sharding.to_host(metrics))  # also split over processes
        bar.update(size * steps_per_update)
        bar.set_postfix(mean_return=f"{history[-1]['episode_return'][:, -1].mean():.2f}")
    jax.block_until_ready(state.params)
    seconds = time.perf_counter() - start
    bar.close()
    metrics = {name: np.concatenate([chunk[name] for chunk in history], axis=1) for name in history[0]}
    params = state.params
    if config.devices != 1:
        params, initial_params = jax.device_put(sharding.to_host((params, initial_params)))
    return TrainResult(
        params=params,
        initial_params=initial_params,
        metrics=metrics,
        seconds=seconds,
        compile_seconds=compile_seconds,
        agent_steps_per_second=config.num_updates * steps_per_update / seconds,
    )
