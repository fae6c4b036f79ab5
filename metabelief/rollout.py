"""THE lockstep engine: a task family, a policy and the exact belief stepped together.

One ``lax.scan`` over time of everything vmapped over N tasks (``lockstep``). At step t the
policy reads the observation ``obs[t]`` (the recurrent network also the previous action and
reward) and acts; ``features[t]`` is the exact belief given the same history, so for the network
``(hidden[t], features[t])`` are the pairs a probe compares. Any policy drives it (an ``Actor``):

* ``NetworkActor``: the recurrent actor-critic, sampling from its softmax;
* ``BeliefActor``: a policy acting on the exact belief (``metabelief.baselines``);
* ``LearnerActor``: a learner with a memory of its own (e.g. Q-learning), the belief beside it;
* ``UniformActions``: uniformly random actions (the conformance kit's data, the benchmarks).

One key schedule for every actor: ``key -> (key, reset_key)``, then ``key -> (action_key,
env_key)``; the actor draws its randomness for every step and lane from ``action_key`` in one
vectorised call before the scan (``Actor.noise``), the environment's keys are
``split(env_key, (T, N))``. The engine returns a ``Trajectory`` (one type for every policy),
streaming probe statistics, or both, and the final ``Carry``. The network's entry points:

* ``rollout``: the agent samples its own actions (training, evaluation);
* ``replay``: teacher forcing, the agent reads a recorded history (e.g. an untrained network fed
  exactly what the trained one saw);
* ``probe_moments``: either of the above, keeping only the probe's sufficient statistics
  instead of the trajectory, so its memory does not grow with N or T.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from metabelief import probes
from metabelief.agents.base import Agent
from metabelief.tasks.base import PyTree, TaskFamily


@chex.dataclass(frozen=True)
class Trajectory:
    """One episode of N tasks under any policy; index t is the t-th decision.

    The network's outputs (``hidden``, ``memory``, ``logits``, ``values``) are None for a policy
    that is not a network agent (``metabelief.agents``).
    """

    obs: jax.Array  # float32[T + 1, N, O]: obs[t] is acted on at step t, obs[T] is the last seen
    actions: jax.Array  # int32[T, N]
    rewards: jax.Array  # float32[T, N]
    dones: jax.Array  # bool[T, N]
    features: jax.Array  # float32[T, N, F]: belief_features given obs[:t + 1], actions[:t], rewards[:t]
    truth: jax.Array  # float32[T, N, D]: true_features in the state acted on at step t
    hidden: jax.Array | None = None  # float32[T, N, H]: the memory readout after reading step t's input
    memory: jax.Array | None = None  # float32[T, N, M]: the whole memory then, hidden first
    logits: jax.Array | None = None  # float32[T, N, A]
    values: jax.Array | None = None  # float32[T, N]


@struct.dataclass
class Carry:
    """What the scan carries from one step to the next, batched over the N tasks."""

    env_state: PyTree  # the family's states; None under teacher forcing
    obs: jax.Array  # float32[N, O]: the observation acted on next
    belief: PyTree  # the exact beliefs; None when not tracked
    memory: PyTree  # the policy's own memory: an agent's carry, a learner's memory, or None
    prev_action: jax.Array  # int32[N]: -1 before the first step
    prev_reward: jax.Array  # float32[N]
    moments: probes.Moments | None  # probe statistics per split of lanes, or None


@struct.dataclass
class Lockstep:
    """What ``lockstep`` returns; ``trajectory`` and ``moments`` are None unless asked for."""

    trajectory: Trajectory | None
    moments: probes.Moments | None
    last: Carry  # after the last step: e.g. the final beliefs and environment states


class Actor(Protocol):
    """A policy driving the engine, over the batch of N tasks.

    ``noise(key, num_steps, num_tasks)`` draws the policy's randomness for every step and lane
    before the scan. ``act`` reads the carry (its own ``memory``, the exact ``belief``, the
    observation ``obs`` and the previous action and reward) and step t's slice of the noise (None
    under teacher forcing, where the recorded actions are taken) and returns ``(memory, actions
    int32[N] or None, outputs)``,
    ``outputs`` a dict of ``Trajectory`` fields (the network's ``hidden``, ...) or empty.
    ``observe`` updates the memory after the transition.
    """

    def noise(self, key: jax.Array, num_steps: int, num_tasks: int) -> PyTree: ...

    def init(self, obs: jax.Array, beliefs: PyTree) -> PyTree: ...

    def act(
        self, carry: Carry, time: jax.Array, noise: PyTree | None
    ) -> tuple[PyTree, jax.Array | None, dict[str, jax.Array]]: ...

    def observe(
        self, memory: PyTree, obs: jax.Array, actions: jax.Array, rewards: jax.Array, next_obs: jax.Array
    ) -> PyTree: ...


class Learner(Protocol):
    """A non-Bayesian agent of ONE task: its own memory of the history (e.g. Q-values), updated
    per transition, and its choice ``learner(key, memory, obs) -> int32[]``."""

    def init(self, obs: jax.Array) -> PyTree: ...

    def update(
        self, memory: PyTree, obs: jax.Array, action: jax.Array, reward: jax.Array, next_obs: jax.Array
    ) -> PyTree: ...

    def __call__(self, key: jax.Array, memory: PyTree, obs: jax.Array) -> jax.Array: ...


class _Memoryless:
    """``init`` and ``observe`` of an actor with no memory of its own."""

    def init(self, obs: jax.Array, beliefs: PyTree) -> None:
        return None

    def observe(self, memory, obs, actions, rewards, next_obs) -> None:
        return None


@struct.dataclass
class NetworkActor:
    """A network agent (``metabelief.agents``): reads ``[obs, one-hot previous action, previous
    reward]`` and samples from ``softmax(logits)`` by inverting the CDF at one uniform number per
    step and lane; records its readout (``hidden``) and its whole ``memory``."""

    agent: Agent = struct.field(pytree_node=False)
    params: PyTree

    def noise(self, key: jax.Array, num_steps: int, num_tasks: int) -> jax.Array:
        return jax.random.uniform(key, (num_steps, num_tasks))

    def init(self, obs: jax.Array, beliefs: PyTree) -> PyTree:
        return self.agent.initial_carry(obs.shape[0])

    def act(self, carry, time, noise):
        inputs = self.agent.inputs(carry.obs, carry.prev_action, carry.prev_reward, time)
        memory, logits, values = self.agent.step(self.params, carry.memory, inputs)
        vector = self.agent.memory(memory)
        actions = None if noise is None else _sample(jax.lax.stop_gradient(logits), noise)
        outputs = {"hidden": vector[:, : self.agent.hidden_size], "memory": vector}
        return memory, actions, {**outputs, "logits": logits, "values": values}

    def observe(self, memory, obs, actions, rewards, next_obs):
        return memory


@dataclasses.dataclass(frozen=True)
class BeliefActor(_Memoryless):
    """A belief policy ``policy(key, belief, obs) -> int32[]`` of ONE task, vmapped; one key per
    step and lane."""

    policy: Callable[[jax.Array, PyTree, jax.Array], jax.Array]

    def noise(self, key: jax.Array, num_steps: int, num_tasks: int) -> jax.Array:
        return jax.random.split(key, (num_steps, num_tasks))

    def act(self, carry, time, noise):
        actions = None if noise is None else jax.vmap(self.policy)(noise, carry.belief, carry.obs)
        return carry.memory, actions, {}


@dataclasses.dataclass(frozen=True)
class LearnerActor:
    """A ``Learner`` acting on its own memory; the exact belief still runs beside it."""

    learner: Learner

    def noise(self, key: jax.Array, num_steps: int, num_tasks: int) -> jax.Array:
        return jax.random.split(key, (num_steps, num_tasks))

    def init(self, obs: jax.Array, beliefs: PyTree) -> PyTree:
        return jax.vmap(self.learner.init)(obs)

    def act(self, carry, time, noise):
        actions = None if noise is None else jax.vmap(self.learner)(noise, carry.memory, carry.obs)
        return carry.memory, actions, {}

    def observe(self, memory, obs, actions, rewards, next_obs):
        return jax.vmap(self.learner.update)(memory, obs, actions, rewards, next_obs)


@dataclasses.dataclass(frozen=True)
class UniformActions(_Memoryless):
    """Uniformly random actions, every step's drawn before the scan."""

    num_actions: int

    def noise(self, key: jax.Array, num_steps: int, num_tasks: int) -> jax.Array:
        return jax.random.randint(key, (num_steps, num_tasks), 0, self.num_actions, jnp.int32)

    def act(self, carry, time, noise):
        return carry.memory, noise, {}


def sample_tasks(family: TaskFamily, key: jax.Array, num_tasks: int) -> PyTree:
    """``num_tasks`` tasks from the family's prior: its task pytree with a leading [num_tasks] axis."""
    return jax.vmap(family.sample_task)(jax.random.split(key, num_tasks))


def lockstep(
    family: TaskFamily,
    actor: Actor,
    *,
    key: jax.Array | None = None,
    tasks: PyTree | None = None,
    num_steps: int | None = None,
    history: Trajectory | None = None,
    track_belief: bool = True,
    record: bool = True,
    split_sizes: Sequence[int] | None = None,
) -> Lockstep:
    """Steps ``family``, ``actor`` and the exact belief together over N tasks: THE scan.

    Args:
      family: the task family.
      actor: the policy (``NetworkActor``, ``BeliefActor``, ``LearnerActor``, ``UniformActions``).
      key: with ``tasks``, the actor acts in the environment: PRNG key of resets, the actor's
        noise and the environment's.
      tasks: task pytree with a leading [N] axis.
      num_steps: T (default: the horizon); past the horizon the task stays and ``done`` stays true.
      history: instead of ``key`` and ``tasks``, a recorded ``Trajectory`` to replay (teacher
        forcing): the environment is not stepped and the actor reads the recorded observations,
        actions and rewards; ``dones`` and ``truth`` are copied.
      track_belief: update the belief; without it ``features`` and ``truth`` have zero width.
      record: return the ``Trajectory``.
      split_sizes: return the probe statistics of ``z = [hidden, belief_features]`` (the
        network's ``hidden``) per consecutive block of lanes of these sizes (``probe_moments``).

    Returns:
      ``Lockstep(trajectory, moments, last)``.
    """
    _check_source(key, tasks, history)
    if history is not None:
        source = _Replay(history)
    else:
        source = _Live(family, tasks, key, family.horizon if num_steps is None else num_steps)
    env_states, first_obs, steps = source.start(actor)
    num_tasks = first_obs.shape[0]
    if split_sizes is not None:
        split_sizes = tuple(int(size) for size in split_sizes)
        if sum(split_sizes) != num_tasks:
            raise ValueError(f"split_sizes must add up to the {num_tasks} tasks, got {split_sizes}")
    belief_features = jax.vmap(family.belief_features)
    no_features = jnp.zeros((num_tasks, 0), jnp.float32)

    def advance(carry: Carry, step: dict[str, Any]) -> tuple[Carry, dict[str, jax.Array], jax.Array]:
        """One step of every lane: the next carry, what is recorded, and the probe pairs."""
        memory, actions, outputs = actor.act(carry, step["time"], step.get("noise"))
        features = belief_features(carry.belief) if track_belief else no_features
        truth = source.truth(step, carry.env_state) if track_belief else no_features
        env_states, next_obs, actions, rewards, dones = source.step(step, carry.env_state, actions)
        beliefs = carry.belief
        if track_belief:
            beliefs = jax.vmap(family.belief_update)(beliefs, carry.obs, actions, rewards, next_obs)
        next_carry = Carry(
            env_state=env_states,
            obs=next_obs,
            belief=beliefs,
            memory=actor.observe(memory, carry.obs, actions, rewards, next_obs),
            prev_action=actions,
            prev_reward=rewards,
            moments=carry.moments,
        )
        recorded = {}
        if record:
            recorded = dict(
                obs=next_obs, actions=actions, rewards=rewards, dones=dones, features=features, truth=truth
            )
            recorded.update(outputs)
        pairs = jnp.concatenate([outputs["hidden"], features], axis=-1) if split_sizes is not None else None
        return next_carry, recorded, pairs

    def transition(carry: Carry, step: dict[str, Any]) -> tuple[Carry, dict[str, jax.Array]]:
        next_carry, recorded, pairs = advance(carry, step)
        if split_sizes is not None:
            # Folded in step by step: one [n, d] scatter per split stays in cache (accumulating
            # blocks of steps in one matmul measured slower on a CPU, and costs the same FLOPs).
            moments = probes.merge(carry.moments, probes.split_moments(pairs, split_sizes))
            next_carry = next_carry.replace(moments=moments)
        return next_carry, recorded

    beliefs = jax.vmap(family.belief_init)(first_obs) if track_belief else None
    carry = Carry(
        env_state=env_states,
        obs=first_obs,
        belief=beliefs,
        memory=actor.init(first_obs, beliefs),
        prev_action=jnp.full((num_tasks,), -1, jnp.int32),
        prev_reward=jnp.zeros((num_tasks,), jnp.float32),
        moments=None,
    )
    if split_sizes is not None:
        _, _, pairs = jax.eval_shape(advance, carry, jax.tree.map(lambda leaf: leaf[0], steps))
        carry = carry.replace(moments=probes.empty_moments(pairs.shape[-1], batch_shape=(len(split_sizes),)))
    carry, recorded = jax.lax.scan(transition, carry, steps)
    trajectory = None
    if record:
        recorded["obs"] = jnp.concatenate([first_obs[None], recorded["obs"]])
        trajectory = Trajectory(**recorded)
    return Lockstep(trajectory=trajectory, moments=carry.moments, last=carry)


@dataclasses.dataclass(frozen=True)
class _Live:
    """The actor acts in the environment: ``family`` stepped on ``tasks`` from ``key``."""

    family: TaskFamily
    tasks: PyTree
    key: jax.Array
    num_steps: int

    def start(self, actor: Actor) -> tuple[PyTree, jax.Array, dict[str, jax.Array]]:
        """The reset states and observations, and what the scan reads at each step: the time, the
        actor's noise and the environment's keys, all drawn before the scan (per-step key splits
        and sampling inside the loop cost a third of the LSTM step on a CPU)."""
        num_tasks = jax.tree.leaves(self.tasks)[0].shape[0]
        key, reset_key = jax.random.split(self.key)
        env_states, first_obs = jax.vmap(self.family.reset)(
            jax.random.split(reset_key, num_tasks), self.tasks
        )
        action_key, env_key = jax.random.split(key)
        steps = {
            "time": jnp.arange(self.num_steps, dtype=jnp.int32),
            "noise": actor.noise(action_key, self.num_steps, num_tasks),
            "env_keys": jax.random.split(env_key, (self.num_steps, num_tasks)),
        }
        return env_states, first_obs, steps

    def truth(self, step: dict[str, jax.Array], env_states: PyTree) -> jax.Array:
        return jax.vmap(self.family.true_features)(self.tasks, env_states)

    def step(self, step: dict[str, jax.Array], env_states: PyTree, actions: jax.Array):
        """``(env_states, next_obs, actions, rewards, dones)`` after the actor's ``actions``."""
        env_states, next_obs, rewards, dones = jax.vmap(self.family.step)(
            step["env_keys"], self.tasks, env_states, actions
        )
        return env_states, next_obs, actions, rewards, dones


@dataclasses.dataclass(frozen=True)
class _Replay:
    """Teacher forcing: the recorded ``history`` is read back; no environment is stepped."""

    history: Trajectory

    def start(self, actor: Actor) -> tuple[None, jax.Array, dict[str, jax.Array]]:
        history = self.history
        steps = {
            "time": jnp.arange(history.actions.shape[0], dtype=jnp.int32),
            "actions": history.actions,
            "rewards": history.rewards,
            "dones": history.dones,
            "next_obs": history.obs[1:],
            "truth": history.truth,
        }
        return None, history.obs[0], steps

    def truth(self, step: dict[str, jax.Array], env_states: None) -> jax.Array:
        return step["truth"]

    def step(self, step: dict[str, jax.Array], env_states: None, actions: jax.Array | None):
        """The recorded transition; the actor's own ``actions`` (if any) are ignored."""
        return None, step["next_obs"], step["actions"], step["rewards"], step["dones"]


def _check_source(key: jax.Array | None, tasks: PyTree | None, history: Trajectory | None) -> None:
    """Raises unless exactly one of (``key`` and ``tasks``) or ``history`` is given."""
    acting = key is not None or tasks is not None
    if (history is not None) == acting or (acting and (key is None or tasks is None)):
        raise ValueError(
            "pass either key and tasks (the policy acts in the environment) or history (a recorded "
            f"trajectory to replay), exactly one of them; got key={'set' if key is not None else None}, "
            f"tasks={'set' if tasks is not None else None}, history={'set' if history is not None else None}"
        )


def rollout(
    family: TaskFamily,
    agent: Agent,
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
      agent: the agent (``metabelief.agents``); ``params`` its parameters.
      key: PRNG key for resets, action sampling and environment noise.
      tasks: task pytree with a leading [N] axis.
      num_steps: T; past the horizon the task stays and ``done`` stays true.

    Returns:
      A ``Trajectory`` of arrays ``[T (+ 1), N, ...]``.
    """
    actor = NetworkActor(agent=agent, params=params)
    return lockstep(
        family, actor, key=key, tasks=tasks, num_steps=num_steps, track_belief=track_belief
    ).trajectory


def rollout_population(
    family: TaskFamily,
    agent: Agent,
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


def replay(family: TaskFamily, agent: Agent, params: PyTree, history: Trajectory) -> Trajectory:
    """Teacher forcing: the agent and the belief read ``history``'s observations, actions and rewards.

    The environment is not stepped: ``obs``, ``actions``, ``rewards``, ``dones`` and ``truth``
    are copied from ``history``; ``hidden``, ``memory``, ``logits``, ``values`` and ``features`` are
    recomputed. Replaying an agent's own rollout with the same parameters reproduces it.
    """
    track_belief = history.features.shape[-1] > 0  # a history recorded without beliefs stays so
    actor = NetworkActor(agent=agent, params=params)
    return lockstep(family, actor, history=history, track_belief=track_belief).trajectory


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


def history_inputs(agent: Agent, history: Trajectory) -> jax.Array:
    """``float32[T, N, input_size]``: the input vector the agent read at each step of ``history``
    (``agent.inputs`` of ``obs[t]``, the action and reward of step ``t - 1``, none before the first,
    and the time ``t``): what ``metabelief.agents.unroll`` replays."""
    num_steps, num_tasks = history.actions.shape
    prev_actions = jnp.concatenate([jnp.full((1, num_tasks), -1, jnp.int32), history.actions[:-1]])
    prev_rewards = jnp.concatenate([jnp.zeros((1, num_tasks), jnp.float32), history.rewards[:-1]])
    steps = jnp.arange(num_steps, dtype=jnp.int32)
    return jax.vmap(agent.inputs)(history.obs[:-1], prev_actions, prev_rewards, steps)


def fit_validate_test(sizes: Sequence[int], num_tasks: int) -> tuple[int, int, int]:
    """``sizes`` as three positive lane counts (fit, validate, test) adding up to ``num_tasks``;
    a ``ValueError`` naming ``sizes`` otherwise."""
    sizes = tuple(int(size) for size in sizes)
    if len(sizes) != 3 or sum(sizes) != num_tasks or min(sizes) < 1:
        raise ValueError(f"sizes must be 3 positive lane counts adding up to {num_tasks}, got {sizes}")
    return sizes


def split_lanes(array: jax.Array, sizes: Sequence[int]) -> list[jax.Array]:
    """``[T, N, ...]`` -> a list of ``[T, n_split, ...]``: consecutive blocks of task lanes."""
    return jnp.split(array, np.cumsum(sizes)[:-1], axis=1)


def sample_rows(array: jax.Array) -> jax.Array:
    """``[..., d] -> [n, d]``: each entry of the leading axes (e.g. step and lane) one sample row."""
    return array.reshape(-1, array.shape[-1])


def lane_moments(x: jax.Array, y: jax.Array, sizes: Sequence[int]) -> probes.Moments:
    """Probe statistics of ``z = [x, y]`` from stored arrays ``[T, N, dx]`` and ``[T, N, dy]``,
    per block of task lanes (``split_lanes``): the statistics ``probe_moments`` streams, for
    arrays a caller holds anyway. Returns ``Moments`` stacked over the blocks."""
    pairs = jnp.concatenate([x, y], axis=-1)  # [T, N, dx + dy]
    by_task = pairs.swapaxes(0, 1).reshape(-1, pairs.shape[-1])  # rows task-major: [N * T, dx + dy]
    return probes.split_moments(by_task, [size * pairs.shape[0] for size in sizes])


def probe_moments(
    family: TaskFamily,
    agent: Agent,
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
    validation and test tasks), so no task is on both sides of a probe. Pass exactly one of:
    ``key`` and ``tasks`` (the agent acts), or ``history`` (a replay); anything else raises
    ``ValueError``.

    Returns:
      ``Moments`` stacked over the splits: ``count [S]``, ``mean [S, H + F]``,
      ``scatter [S, H + F, H + F]``, over all steps of each split's tasks.
    """
    actor = NetworkActor(agent=agent, params=params)
    return lockstep(
        family, actor, key=key, tasks=tasks, history=history, num_steps=num_steps, record=False,
        split_sizes=split_sizes,
    ).moments  # fmt: skip


def _sample(logits: jax.Array, uniform: jax.Array) -> jax.Array:
    """Actions ``int32[N]`` from ``softmax(logits)`` ``[N, A]`` by inverting the CDF at ``uniform`` [N]."""
    cumulative = jnp.cumsum(jax.nn.softmax(logits), axis=-1)[:, :-1]
    return jnp.sum(cumulative < uniform[:, None], axis=-1, dtype=jnp.int32)
