"""One episode of freshly sampled tasks for an update, and the agent's outputs on it.

Every update samples ``config.num_tasks`` tasks and plays one episode of each (they end at the
horizon, so nothing is bootstrapped). The agent's logits, values and readouts that the losses
differentiate come either straight from the rollout (backpropagation through the lockstep scan) or,
for an agent whose ``parallel_unroll`` is set (the linear recurrent model), from recomputing the
episode on its stored inputs with ``agent.unroll`` (a parallel scan), the rollout itself then
played without gradients.
"""

from __future__ import annotations

import jax

from metabelief import sharding
from metabelief.agents.base import unroll
from metabelief.rollout import Trajectory, history_inputs, rollout
from metabelief.tasks.base import PyTree
from metabelief.train.config import TrainConfig


def play(config: TrainConfig, params: PyTree, key: jax.Array) -> Trajectory:
    """The agent with ``params`` on one episode of ``config.num_tasks`` fresh tasks (no beliefs)."""
    family, agent = config.make_family(), config.make_agent()
    task_key, rollout_key = jax.random.split(key)
    tasks = jax.vmap(family.sample_task)(jax.random.split(task_key, config.num_tasks))
    if config.devices != 1:  # the partitioner carries the lane split through the whole update
        mesh = sharding.task_mesh(config.devices)
        if not sharding.spreads_seeds(config.num_seeds, mesh):
            tasks = sharding.shard_tasks(tasks, mesh)
    return rollout(family, agent, params, rollout_key, tasks, track_belief=False)


def replayed_outputs(config: TrainConfig, params: PyTree, episode: Trajectory):
    """``(logits [T, N, A], values [T, N], hidden [T, N, H])`` of the agent with ``params``
    recomputed from the episode's stored inputs (``agent.unroll``)."""
    agent = config.make_agent()
    inputs = history_inputs(agent, episode)
    _, logits, values, memory = unroll(agent, params, agent.initial_carry(inputs.shape[1]), inputs)
    return logits, values, memory[..., : agent.hidden_size]


def differentiable_episode(config: TrainConfig, params: PyTree, key: jax.Array):
    """``(episode, logits, values, hidden)`` with the last three differentiable in ``params``."""
    if getattr(config.make_agent(), "parallel_unroll", False):
        episode = play(config, jax.lax.stop_gradient(params), key)
        return episode, *replayed_outputs(config, params, episode)
    episode = play(config, params, key)
    return episode, episode.logits, episode.values, episode.hidden
