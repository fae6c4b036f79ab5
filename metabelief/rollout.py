"""The lockstep rollout: task family, recurrent agent and exact belief stepped together.

One ``lax.scan`` over time of everything vmapped over N tasks. At step t the agent reads the
observation ``obs[t]`` with the previous action and reward, updates its LSTM state to
``hidden[t]``/``cell[t]`` and acts; ``features[t]`` is the exact belief given the same history,
so ``(hidden[t], features[t])`` are the pairs a probe compares. Three entry points share the scan:

* ``rollout``: the agent samples its own actions (training, evaluation);
* ``replay``: teacher forcing, the agent reads a recorded history (e.g. an untrained network fed
  exactly what the trained one saw);
* ``probe_moments``: either of the above, keeping only the probe's sufficient statistics
  instead of the trajectory, so its memory does not grow with N or T.
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from metabelief import probes
from metabelief.agents.lstm import RecurrentAgent
from metabelief.tasks.base import PyTree, TaskFamily


@chex.dataclass(frozen=True)
class Trajectory:
    """One episode of N tasks; index t is the t-th decision."""

    obs: jax.Array  # float32[T + 1, N, O]: obs[t] is acted on at step t, obs[T] is the last seen
    actions: jax.Array  # int32[T, N]
    rewards: jax.Array  # float32[T, N]
    dones: jax.Array  # bool[T, N]
    hidden: jax.Array  # float32[T, N, H]: LSTM output after reading step t's input
    cell: jax.Array  # float32[T, N, H]
    logits: jax.Array  # float32[T, N, A]
    values: jax.Array  # float32[T, N]
    features: jax.Array  # float32[T, N, F]: belief_features given obs[:t + 1], actions[:t], rewards[:t]
    truth: jax.Array  # float32[T, N, D]: true_features in the state acted on at step t


def rollout(
    family: TaskFamily,
    agent: RecurrentAgent,
    params: PyTree,
    key: jax.Array,
    tasks: PyTree,
    num_steps: int | None = None,
    *,
    track_belief: bool = True,
) -> Trajectory:
    """Runs the agent on a batch of tasks for ``num_steps`` (default: the horizon), sampling its actions.

    Differentiable in ``params`` (training backpropagates through it). With ``track_belief=False``
    the belief is not updated and ``features``/``truth`` have zero width.

    Args:
      family: the task family.
      agent: the recurrent agent's sizes; ``params`` its parameters.
      key: PRNG key for resets, action sampling and environment noise.
      tasks: task pytree with a leading [N] axis.
      num_steps: T; past the horizon the task stays and ``done`` stays true.

    Returns:
      A ``Trajectory`` of arrays ``[T (+ 1), N, ...]``.
    """
    trajectory, _ = _lockstep(
        family,
        agent,
        params,
        tasks=tasks,
        key=key,
        num_steps=num_steps,
        track_belief=track_belief,
        record=True,
    )
    return trajectory


def rollout_population(
    family: TaskFamily,
    agent: RecurrentAgent,
    population: PyTree,
    key: jax.Array,
    tasks: PyTree,
    num_steps: int | None = None,
) -> Trajectory:
    """``rollout`` of every agent of a population (parameters ``[S, ...]``) on the same tasks with
    the same key, vmapped over the seeds: a ``Trajectory`` of arrays ``[S, T (+ 1), N, ...]``."""
    return jax.vmap(lambda params: rollout(family, agent, params, key, tasks, num_steps))(population)


# One compiled cache for every experiment that plays a population on held-out tasks.
rollout_population_jit = jax.jit(rollout_population, static_argnums=(0, 1, 5))


def replay(family: TaskFamily, agent: RecurrentAgent, params: PyTree, history: Trajectory) -> Trajectory:
    """Teacher forcing: the agent and the belief read ``history``'s observations, actions and rewards.

    The environment is not stepped: ``obs``, ``actions``, ``rewards``, ``dones`` and ``truth``
    are copied from ``history``; ``hidden``, ``cell``, ``logits``, ``values`` and ``features`` are
    recomputed. Replaying an agent's own rollout with the same parameters reproduces it.
    """
    track_belief = history.features.shape[-1] > 0  # a history recorded without beliefs stays so
    trajectory, _ = _lockstep(family, agent, params, history=history, track_belief=track_belief, record=True)
    return trajectory


# One compiled cache for every caller that replays histories (probes, state-machine simulation, ...).
replay_jit = jax.jit(replay, static_argnums=(0, 1))


def replay_beliefs(family: TaskFamily, history: Trajectory) -> PyTree:
    """The exact belief before each decision of ``history``: the belief pytree with leaves
    ``[T, N, ...]`` (index t: given ``obs[:t + 1]``, ``actions[:t]``, ``rewards[:t]``), so
    ``family.belief_features`` of entry t is ``history.features[t]``."""

    def transition(beliefs, step):
        obs, actions, rewards, next_obs = step
        return jax.vmap(family.belief_update)(beliefs, obs, actions, rewards, next_obs), beliefs

    steps = (history.obs[:-1], history.actions, history.rewards, history.obs[1:])
    _, beliefs = jax.lax.scan(transition, jax.vmap(family.belief_init)(history.obs[0]), steps)
    return beliefs


def split_lanes(array: jax.Array, sizes: Sequence[int]) -> list[jax.Array]:
    """``[T, N, ...]`` -> a list of ``[T, n_split, ...]``: consecutive blocks of task lanes."""
    return jnp.split(array, np.cumsum(sizes)[:-1], axis=1)


def lane_moments(x: jax.Array, y: jax.Array, sizes: Sequence[int]) -> probes.Moments:
    """Probe statistics of ``z = [x, y]`` from stored arrays ``[T, N, dx]`` and ``[T, N, dy]``,
    per block of task lanes (``split_lanes``): the statistics ``probe_moments`` streams, for
    arrays a caller holds anyway. Returns ``Moments`` stacked over the blocks."""
    pairs = jnp.concatenate([x, y], axis=-1)  # [T, N, dx + dy]
    by_task = pairs.swapaxes(0, 1).reshape(-1, pairs.shape[-1])  # rows task-major: [N * T, dx + dy]
    return probes.split_moments(by_task, [size * pairs.shape[0] for size in sizes])


def probe_moments(
    family: TaskFamily,
    agent: RecurrentAgent,
    params: PyTree,
    split_sizes: Sequence[int],
    *,
    key: jax.Array | None = None,
    tasks: PyTree | None = None,
    num_steps: int | None = None,
    history: Trajectory | None = None,
) -> probes.Moments:
    """Streaming probe statistics of ``z = [hidden, belief_features]`` without storing the trajectory.

    The N lanes (tasks) are cut, in order, into consecutive blocks of ``split_sizes`` (e.g. train,
    validation and test tasks), so no task is on both sides of a probe. Pass ``key`` and ``tasks``
    to let the agent act, or ``history`` to replay one.

    Returns:
      ``Moments`` stacked over the splits: ``count [S]``, ``mean [S, H + F]``,
      ``scatter [S, H + F, H + F]``, over all steps of each split's tasks.
    """
    split_sizes = tuple(int(size) for size in split_sizes)
    _, moments = _lockstep(
        family,
        agent,
        params,
        tasks=tasks,
        key=key,
        num_steps=num_steps,
        history=history,
        split_sizes=split_sizes,
    )
    return moments


def _lockstep(
    family: TaskFamily,
    agent: RecurrentAgent,
    params: PyTree,
    *,
    tasks: PyTree | None = None,
    key: jax.Array | None = None,
    num_steps: int | None = None,
    history: Trajectory | None = None,
    split_sizes: tuple[int, ...] | None = None,
    track_belief: bool = True,
    record: bool = False,
) -> tuple[Trajectory | None, probes.Moments | None]:
    """The shared scan; ``history`` selects teacher forcing, ``split_sizes`` the probe statistics."""
    forced = history is not None
    if forced:
        num_tasks, num_steps = history.actions.shape[1], history.actions.shape[0]
        first_obs, env_states = history.obs[0], None
    else:
        num_tasks = jax.tree.leaves(tasks)[0].shape[0]
        num_steps = family.horizon if num_steps is None else num_steps
        key, reset_key = jax.random.split(key)
        env_states, first_obs = jax.vmap(family.reset)(jax.random.split(reset_key, num_tasks), tasks)
    if split_sizes is not None and sum(split_sizes) != num_tasks:
        raise ValueError(f"split_sizes must add up to the {num_tasks} tasks, got {split_sizes}")

    belief_features = jax.vmap(family.belief_features)
    true_features = jax.vmap(family.true_features)
    beliefs = jax.vmap(family.belief_init)(first_obs) if track_belief else None

    def transition(carry, step):
        env_states, obs, beliefs, lstm, prev_action, prev_reward, moments = carry
        time = step["time"]
        inputs = agent.inputs(obs, prev_action, prev_reward, time)
        lstm, logits, values = agent.step(params, lstm, inputs)
        cell, hidden = lstm
        if track_belief:
            features = belief_features(beliefs)
            truth = step["truth"] if forced else true_features(tasks, env_states)
        else:
            features = truth = jnp.zeros((num_tasks, 0), jnp.float32)

        if forced:
            actions, rewards, dones, next_obs = (
                step[name] for name in ("actions", "rewards", "dones", "next_obs")
            )
        else:
            actions = _sample(jax.lax.stop_gradient(logits), step["uniform"])
            env_states, next_obs, rewards, dones = jax.vmap(family.step)(
                step["env_keys"], tasks, env_states, actions
            )
        if track_belief:
            beliefs = jax.vmap(family.belief_update)(beliefs, obs, actions, rewards, next_obs)
        if split_sizes is not None:
            pairs = jnp.concatenate([hidden, features], axis=-1)
            moments = probes.merge(moments, probes.split_moments(pairs, split_sizes))
        record_step = None
        if record:
            record_step = dict(
                obs=next_obs, actions=actions, rewards=rewards, dones=dones, hidden=hidden, cell=cell,
                logits=logits, values=values, features=features, truth=truth,
            )  # fmt: skip
        return (env_states, next_obs, beliefs, lstm, actions, rewards, moments), record_step

    steps = {"time": jnp.arange(num_steps, dtype=jnp.int32)}
    if forced:
        steps.update(
            actions=history.actions, rewards=history.rewards, dones=history.dones, next_obs=history.obs[1:],
            truth=history.truth,
        )  # fmt: skip
    else:
        # All randomness drawn before the scan, in two large vectorised calls: per-step key splits
        # and Gumbel sampling inside the loop cost a third of the LSTM step on a CPU.
        action_key, env_key = jax.random.split(key)
        steps["uniform"] = jax.random.uniform(action_key, (num_steps, num_tasks))
        steps["env_keys"] = jax.random.split(env_key, (num_steps, num_tasks))
    moments = None
    if split_sizes is not None:
        feature_size = jax.eval_shape(belief_features, beliefs).shape[-1]
        moments = probes.empty_moments(agent.hidden_size + feature_size, batch_shape=(len(split_sizes),))
    carry = (
        env_states,
        first_obs,
        beliefs,
        agent.initial_carry(num_tasks),
        jnp.full((num_tasks,), -1, jnp.int32),
        jnp.zeros((num_tasks,), jnp.float32),
        moments,
    )
    carry, recorded = jax.lax.scan(transition, carry, steps)
    if not record:
        return None, carry[-1]
    recorded["obs"] = jnp.concatenate([first_obs[None], recorded["obs"]])
    return Trajectory(**recorded), carry[-1]


def _sample(logits: jax.Array, uniform: jax.Array) -> jax.Array:
    """Actions ``int32[N]`` from ``softmax(logits)`` ``[N, A]`` by inverting the CDF at ``uniform`` [N]."""
    cumulative = jnp.cumsum(jax.nn.softmax(logits), axis=-1)[:, :-1]
    return jnp.sum(cumulative < uniform[:, None], axis=-1, dtype=jnp.int32)
