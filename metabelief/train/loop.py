"""The training loop: every seed's updates, chunk by chunk, with a progress bar.

Seeds are one more vmapped axis: ``train`` runs ``config.num_seeds`` independent agents in the
same program, each with its own initialisation and its own task and action streams (agent i is
the one-seed run with seed ``config.seed + i``, up to float rounding, which a long and chaotic
training run can grow), so parameters, optimiser state and metrics carry a leading ``[S]`` axis.
Each update is ``config.algorithm``'s (``metabelief.train.a2c`` or ``metabelief.train.ppo``).
Updates run in jitted chunks of ``updates_per_chunk``; the Python loop between chunks only
refreshes the progress bar and, at the checkpoints of a ``DynamicsSchedule``, evaluates the
population on held-out tasks (``metabelief.train.dynamics``: return, decodability of the belief,
state dissimilarity), cutting a chunk where a checkpoint falls inside it.

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

import jax
import numpy as np
from tqdm.auto import tqdm

from metabelief import sharding
from metabelief.train import a2c, ppo
from metabelief.train.config import TrainConfig
from metabelief.train.dynamics import Dynamics, DynamicsSchedule, evaluator
from metabelief.train.state import TrainResult, TrainState, init_population

UPDATES = {"a2c": a2c.update, "ppo": ppo.update}


def update(state: TrainState, config: TrainConfig) -> tuple[TrainState, dict]:
    """One update of ``config.algorithm`` for one agent."""
    return UPDATES[config.algorithm](state, config)


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


def train(
    config: TrainConfig, *, progress: bool = True, dynamics: DynamicsSchedule | None = None
) -> TrainResult:
    """Trains the ``config.num_seeds`` agents of ``config`` together, showing steps (all seeds), the
    mean return over seeds and steps per second.

    With ``dynamics`` (default: ``DynamicsSchedule.of(config)`` when ``config.checkpoints`` > 0),
    every seed is also evaluated at the schedule's checkpoints (after that many updates;
    ``metabelief.train.dynamics``); its time is kept apart from the training's, and evaluating
    changes no update.

    Returns:
      A ``TrainResult`` with the final and the initial parameters (``[S, ...]``), per-seed,
      per-update metrics and, with ``dynamics``, the ``Dynamics``. The parameters are on the default
      device whatever ``config.devices``, so the code that evaluates them runs as after a one-device
      run (not replicated on every device).
    """
    if dynamics is None and config.checkpoints:
        dynamics = DynamicsSchedule.of(config)
    if dynamics is not None:
        dynamics.check(config.num_updates)
    state = init_population(config)
    initial_params = state.params
    checkpoints = () if dynamics is None else dynamics.updates
    chunk_sizes = chunks(config.num_updates, config.updates_per_chunk, checkpoints)

    start = time.perf_counter()
    compiled = {size: _train_chunk.lower(state, config, size).compile() for size in set(chunk_sizes)}
    compile_seconds = time.perf_counter() - start
    evaluate = None
    if dynamics is not None:
        family, agent = config.make_family(), config.make_agent()
        evaluate = evaluator(family, agent, dynamics, config.seed, state.params, initial_params)

    history, evaluations, evaluation_seconds = [], [], 0.0
    steps_per_update = config.num_seeds * config.steps_per_update
    bar = tqdm(
        total=config.num_updates * steps_per_update, unit="step", unit_scale=True, disable=not progress
    )
    seconds, done = 0.0, 0
    for size in (0, *chunk_sizes):
        start = time.perf_counter()
        if size:
            state, metrics = compiled[size](state)
            history.append(sharding.to_host(metrics))  # also split over processes
            jax.block_until_ready(state.params)
            done += size
        seconds += time.perf_counter() - start
        if done in checkpoints:
            start = time.perf_counter()
            evaluations.append(evaluate(state.params, initial_params))
            evaluation_seconds += time.perf_counter() - start
        if size:
            bar.update(size * steps_per_update)
            bar.set_postfix(mean_return=f"{history[-1]['episode_return'][:, -1].mean():.2f}")
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
        dynamics=None
        if dynamics is None
        else Dynamics(
            updates=checkpoints,
            series={name: np.stack([e[name] for e in evaluations], axis=1) for name in evaluations[0]},
            seconds_per_checkpoint=evaluation_seconds / len(checkpoints),
            compile_seconds=evaluate.compile_seconds,
        ),
    )


def chunks(num_updates: int, updates_per_chunk: int, checkpoints: tuple[int, ...] = ()) -> list[int]:
    """The sizes of the jitted chunks: ``updates_per_chunk`` updates each (the last one shorter),
    cut wherever a checkpoint falls inside a chunk."""
    bounds = sorted({*range(0, num_updates, updates_per_chunk), num_updates, *checkpoints} - {0})
    return [int(size) for size in np.diff([0, *bounds])]
