"""The agent protocol: what training, the lockstep engine and the analyses may ask of an agent.

An agent is an immutable object holding sizes (hashable: it is a static jit argument); its
parameters are a plain pytree from ``agent.init(key)``, so seeds or hyper-parameters can be
vmapped. Every method is a pure, jittable function of arrays over a batch of N tasks::

    agent.num_actions, agent.input_size     # ints
    agent.hidden_size                       # H: width of the memory readout the probes read
    agent.memory_size                       # M >= H: width of the whole memory as one vector
    params = agent.init(key)
    carry = agent.initial_carry(n)          # the memory at the start of a task, any pytree
    inputs = agent.inputs(obs, prev_action, prev_reward, time)   # float32[N, input_size]
    carry, logits, value = agent.step(params, carry, inputs)     # [N, A], [N]
    memory = agent.memory(carry)            # float32[N, M]; memory[:, :H] is the readout
    carry = agent.carry_from_memory(memory) # the inverse: a (pushed) vector back into a carry
    logits, value = agent.heads(params, memory[:, :H])          # the heads on a readout

The readout is what the policy and value heads read: ``step``'s logits and value are
``heads(params, memory(new_carry)[:, :H])``. For the LSTM it is the hidden output ``h`` and the
memory ``[h, c]``; for a GRU or an Elman network both are ``h``. The analyses never look inside
``params`` or ``carry``: probes read the readout, the "whole memory" control and the state-machine
simulation read ``memory``, interventions write a pushed vector back with ``carry_from_memory``
and read the policy with ``heads``.

Optional: ``unroll(params, carry, inputs [T, N, I]) -> (carry, logits [T, N, A], values [T, N],
memory [T, N, M])`` replays stored inputs (``ActorCritic`` provides it as a ``lax.scan`` of
``step``; a linear recurrent model runs it as a parallel ``associative_scan``), ``parallel_unroll``
(True when training should recompute the episode with ``unroll`` rather than backpropagate through
the rollout) and ``predict(params, readout, actions) -> float32[N, 1 + obs_size]`` (a predictive
head: the next reward and observation, ``metabelief.train.predictive``).

``check_agent(agent)`` refuses an object lacking a required member, naming it. ``ActorCritic``
is the base of the built-in memory models: sizes, the input vector, the policy and value heads
and ``unroll``; a subclass supplies the memory model (``core``) and its carry layout.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

import flax.linen as nn
import jax
import jax.numpy as jnp

from metabelief.tasks.validation import boolean, integer_at_least

PyTree = Any

REQUIRED_MEMBERS = (
    "num_actions",
    "input_size",
    "hidden_size",
    "memory_size",
    "init",
    "initial_carry",
    "inputs",
    "step",
    "memory",
    "carry_from_memory",
    "heads",
)


@runtime_checkable
class Agent(Protocol):
    """A recurrent actor-critic over a batch of tasks (see the module docstring)."""

    num_actions: int
    input_size: int
    hidden_size: int
    memory_size: int

    def init(self, key: jax.Array) -> PyTree: ...

    def initial_carry(self, num_tasks: int) -> PyTree: ...

    def inputs(
        self, obs: jax.Array, prev_action: jax.Array, prev_reward: jax.Array, time: jax.Array
    ) -> jax.Array: ...

    def step(
        self, params: PyTree, carry: PyTree, inputs: jax.Array
    ) -> tuple[PyTree, jax.Array, jax.Array]: ...

    def memory(self, carry: PyTree) -> jax.Array: ...

    def carry_from_memory(self, memory: jax.Array) -> PyTree: ...

    def heads(self, params: PyTree, readout: jax.Array) -> tuple[jax.Array, jax.Array]: ...


def check_agent(agent: Any, name: str = "agent") -> Any:
    """``agent`` if it has every member of the protocol and is hashable; else a ValueError naming
    the first missing member."""
    for member in REQUIRED_MEMBERS:
        if not hasattr(agent, member):
            raise ValueError(
                f"{name} must provide {member!r} of the agent protocol (metabelief.agents.base), "
                f"got {type(agent).__qualname__} without it"
            )
    try:
        hash(agent)
    except TypeError as error:
        raise ValueError(
            f"{name} must be hashable (a static jit argument; a frozen dataclass is), got {agent!r}: {error}"
        ) from None
    return agent


def unroll(agent: Agent, params: PyTree, carry: PyTree, inputs: jax.Array):
    """``agent.unroll`` when the agent has one, else ``step`` scanned over ``inputs [T, N, I]``.

    Returns ``(carry, logits [T, N, A], values [T, N], memory [T, N, M])``.
    """
    if hasattr(agent, "unroll"):
        return agent.unroll(params, carry, inputs)
    return scan_steps(agent, params, carry, inputs)


def scan_steps(agent: Agent, params: PyTree, carry: PyTree, inputs: jax.Array):
    """``agent.step`` over time in one ``lax.scan``: ``(carry, logits, values, memory)``."""

    def one(carry, step_inputs):
        carry, logits, value = agent.step(params, carry, step_inputs)
        return carry, (logits, value, agent.memory(carry))

    carry, (logits, values, memory) = jax.lax.scan(one, carry, inputs)
    return carry, logits, values, memory


class _Network(nn.Module):
    """One step of the agent's memory model (``agent.core``) and its heads, as one flax module:
    parameters ``{core_name: ..., "policy": ..., "value": ...}`` (and ``"predictor"``)."""

    agent: ActorCritic

    @nn.compact
    def __call__(self, carry, inputs):
        carry, hidden = self.agent.core(name=self.agent.core_name)(carry, inputs)
        # Small policy weights start the agent near the uniform policy (as in purejaxrl).
        logits = nn.Dense(
            self.agent.num_actions, kernel_init=nn.initializers.orthogonal(0.01), name="policy"
        )(hidden)
        value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0), name="value")(hidden)
        if self.agent.predictive and self.is_initializing():  # its output is read through ``predict``
            nn.Dense(1 + self.agent.obs_size, name="predictor")(
                jnp.zeros((*hidden.shape[:-1], self.agent.hidden_size + self.agent.num_actions), hidden.dtype)
            )
        return carry, logits, value[..., 0]


@dataclasses.dataclass(frozen=True)
class ActorCritic:
    """Sizes of a built-in recurrent actor-critic for one task family; the maths in pure methods.

    Input vector, ``float32[input_size]``: the observation ``[obs_size]``, the one-hot previous
    action ``[num_actions]`` (zeros at the first step), the previous reward ``[1]`` (0 at the
    first step) and, when ``time_input``, the time in the episode divided by the horizon ``[1]``.
    With ``predictive``, the parameters hold a linear head predicting the next reward and
    observation from ``[readout, one-hot action]`` (``predict``).

    A subclass sets ``core_name`` and supplies ``core`` (a flax module ``(carry, inputs) ->
    (carry, readout)``), ``initial_carry``, ``memory``, ``carry_from_memory`` and
    ``memory_size``.
    """

    num_actions: int
    obs_size: int
    horizon: int
    hidden_size: int = 48
    time_input: bool = False
    predictive: bool = False

    core_name = "core"
    parallel_unroll = False

    def __post_init__(self):
        for name, minimum in (("num_actions", 2), ("obs_size", 0), ("horizon", 1), ("hidden_size", 1)):
            object.__setattr__(self, name, integer_at_least(name, getattr(self, name), minimum))
        for name in ("time_input", "predictive"):
            object.__setattr__(self, name, boolean(name, getattr(self, name)))

    # ------------------------------------------------------------------ what a subclass supplies
    def core(self, name: str) -> nn.Module:
        raise NotImplementedError

    @property
    def memory_size(self) -> int:
        raise NotImplementedError

    def initial_carry(self, num_tasks: int) -> PyTree:
        raise NotImplementedError

    def memory(self, carry: PyTree) -> jax.Array:
        raise NotImplementedError

    def carry_from_memory(self, memory: jax.Array) -> PyTree:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    @property
    def input_size(self) -> int:
        return self.obs_size + self.num_actions + 1 + int(self.time_input)

    @property
    def network(self) -> _Network:
        return _Network(agent=self)

    def init(self, key: jax.Array) -> PyTree:
        """Initial parameters, a pytree of float32 arrays."""
        return self.network.init(key, self.initial_carry(1), jnp.zeros((1, self.input_size), jnp.float32))

    def inputs(
        self, obs: jax.Array, prev_action: jax.Array, prev_reward: jax.Array, time: jax.Array
    ) -> jax.Array:
        """Network input ``float32[N, input_size]``.

        Args:
          obs: ``float32[N, obs_size]``, the observation to act on.
          prev_action: ``int32[N]``, the previous action, or -1 before the first one (one-hot zero).
          prev_reward: ``float32[N]``, the previous reward (0 before the first action).
          time: ``int32[]`` or ``int32[N]``, steps taken in the episode.
        """
        parts = [
            obs.astype(jnp.float32),
            jax.nn.one_hot(prev_action, self.num_actions, dtype=jnp.float32),
            prev_reward.astype(jnp.float32)[:, None],
        ]
        if self.time_input:
            normalised = jnp.broadcast_to(time, prev_reward.shape).astype(jnp.float32) / self.horizon
            parts.append(normalised[:, None])
        return jnp.concatenate(parts, axis=-1)

    def step(self, params: PyTree, carry: PyTree, inputs: jax.Array) -> tuple[PyTree, jax.Array, jax.Array]:
        """One step: new carry, policy logits ``float32[N, A]`` and value ``float32[N]``."""
        return self.network.apply(params, carry, inputs)

    def heads(self, params: PyTree, readout: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The policy logits ``[..., A]`` and value ``[...]`` of readouts ``[..., H]``: the
        layers ``step`` applies to its new readout."""
        layers = params["params"]
        logits = nn.Dense(self.num_actions).apply({"params": layers["policy"]}, readout)
        value = nn.Dense(1).apply({"params": layers["value"]}, readout)
        return logits, value[..., 0]

    def predict(self, params: PyTree, readout: jax.Array, actions: jax.Array) -> jax.Array:
        """The predictive head: ``float32[..., 1 + obs_size]``, the next reward and observation
        predicted from the readout ``[..., H]`` and the action taken ``int32[...]``."""
        if not self.predictive:
            raise ValueError("this agent has no predictive head: build it with predictive=True")
        features = jnp.concatenate(
            [readout, jax.nn.one_hot(actions, self.num_actions, dtype=readout.dtype)], -1
        )
        return nn.Dense(1 + self.obs_size).apply({"params": params["params"]["predictor"]}, features)

    def unroll(self, params: PyTree, carry: PyTree, inputs: jax.Array):
        """The agent on stored inputs ``[T, N, I]``: ``(carry, logits [T, N, A], values [T, N],
        memory [T, N, M])``."""
        return scan_steps(self, params, carry, inputs)

    def readout(self, carry: PyTree) -> jax.Array:
        """``float32[N, H]``: what the heads read, the first ``H`` entries of ``memory``."""
        return self.memory(carry)[..., : self.hidden_size]
