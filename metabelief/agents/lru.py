"""A linear recurrent unit (LRU, Orvieto et al. 2023, "Resurrecting recurrent neural networks for
long sequences") with a nonlinear readout, as an actor-critic.

The state is ``P`` complex numbers with a diagonal linear recurrence and a tanh readout::

    x_t = lambda * x_{t-1} + gamma * (B u_t)           lambda = exp(-exp(nu_log) + i exp(theta_log))
    h_t = tanh([Re x_t, Im x_t, u_t] W + b)             gamma = exp(gamma_log), at init sqrt(1 - |lambda|^2)

(``[Re x, Im x] W`` is the paper's ``Re(C x)``; the input term is its ``D u``.) The heads read
``h_t``. Because the recurrence is linear, a whole episode of stored inputs runs as one parallel
``jax.lax.associative_scan`` over time (``unroll``: O(log T) depth), while the lockstep rollout
steps it one input at a time (``step``); both give the same states to float32 rounding. Where the
parallel scan pays (``parallel``; by default on an accelerator), training plays the episode
without gradients and recomputes it in parallel (``parallel_unroll``). On a CPU it does not:
there the associative scan's log2(T) passes over ``[T, N, P]`` cost more memory traffic than the
one pass of stepping (2-core CPU, N = 1,024, T = 100, P = H = 48: forward 215 ms parallel against
47 ms stepped, gradient 958 against 262 ms; the LSTM's gradient 372 ms), so by default a CPU
backpropagates through the stepped rollout, as for the other memory models. The eigenvalues
start on the ring ``r_min <= |lambda| <= r_max`` with phases in ``[0, max_phase]`` (the paper's
initialisation; a ring near 1 keeps evidence over a bandit's 100 steps).

Carry ``(x_re, x_im, h)``, each ``float32[N, .]``; memory ``[h, x_re, x_im]`` (``M = H + 2P``).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from metabelief.agents.base import ActorCritic, PyTree, scan_steps
from metabelief.tasks.validation import boolean

LRUCarry = tuple[jax.Array, jax.Array, jax.Array]  # (x_re [N, P], x_im [N, P], h [N, H])


class LRUCell(nn.Module):
    """One step of the LRU: ``(carry, inputs [N, I]) -> (carry, h [N, H])``."""

    hidden_size: int
    state_size: int
    r_min: float = 0.9
    r_max: float = 0.999
    max_phase: float = math.pi / 10

    @nn.compact
    def __call__(self, carry: LRUCarry, inputs: jax.Array) -> tuple[LRUCarry, jax.Array]:
        params = self.declare(inputs.shape[-1])
        x_re, x_im, _ = carry
        state = lambdas(params) * jax.lax.complex(x_re, x_im) + drive(params, inputs)
        hidden = readout(params, state, inputs)
        return (jnp.real(state), jnp.imag(state), hidden), hidden

    def declare(self, input_size: int) -> dict[str, jax.Array]:
        """The parameters, by name (read back by the pure functions below)."""
        size = self.state_size

        def ring(key, shape):  # -log(nu) with |lambda|^2 uniform on [r_min^2, r_max^2]
            u = jax.random.uniform(key, shape)
            return jnp.log(-0.5 * jnp.log(u * (self.r_max**2 - self.r_min**2) + self.r_min**2))

        def phase(key, shape):
            return jnp.log(self.max_phase * jax.random.uniform(key, shape, minval=1e-3))

        nu_log = self.param("nu_log", ring, (size,))
        theta_log = self.param("theta_log", phase, (size,))
        modulus = jnp.exp(-jnp.exp(nu_log))
        gamma_init = jnp.log(jnp.sqrt(1.0 - modulus**2))
        normal = nn.initializers.normal(1.0 / math.sqrt(2 * input_size))
        return {
            "nu_log": nu_log,
            "theta_log": theta_log,
            "gamma_log": self.param("gamma_log", lambda key, shape: gamma_init, (size,)),
            "B_re": self.param("B_re", normal, (input_size, size)),
            "B_im": self.param("B_im", normal, (input_size, size)),
            "W": self.param("W", nn.initializers.lecun_normal(), (2 * size + input_size, self.hidden_size)),
            "b": self.param("b", nn.initializers.zeros, (self.hidden_size,)),
        }


def lambdas(params: dict) -> jax.Array:
    """The diagonal of the recurrence, ``complex64[P]``."""
    return jnp.exp(jax.lax.complex(-jnp.exp(params["nu_log"]), jnp.exp(params["theta_log"])))


def drive(params: dict, inputs: jax.Array) -> jax.Array:
    """``gamma * (B u)``, ``complex64[..., P]``."""
    drive_re, drive_im = inputs @ params["B_re"], inputs @ params["B_im"]
    return jnp.exp(params["gamma_log"]) * jax.lax.complex(drive_re, drive_im)


def readout(params: dict, state: jax.Array, inputs: jax.Array) -> jax.Array:
    """``h = tanh([Re x, Im x, u] W + b)``, ``float32[..., H]``."""
    features = jnp.concatenate([jnp.real(state), jnp.imag(state), inputs], axis=-1)
    return jnp.tanh(features @ params["W"] + params["b"])


def parallel_states(params: dict, carry: LRUCarry, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """States ``complex64[T, N, P]`` and readouts ``[T, N, H]`` of a whole sequence ``[T, N, I]``
    from ``carry``, by one ``associative_scan`` of the pairs ``(lambda, drive)`` over time."""
    x_re, x_im, _ = carry
    lam = lambdas(params)
    drives = drive(params, inputs)  # [T, N, P]
    drives = drives.at[0].add(lam * jax.lax.complex(x_re, x_im))  # x_0 enters through the first drive
    decays = jnp.broadcast_to(lam, drives.shape)

    def compose(earlier, later):  # x -> a2 (a1 x + b1) + b2
        a1, b1 = earlier
        a2, b2 = later
        return a1 * a2, a2 * b1 + b2

    _, states = jax.lax.associative_scan(compose, (decays, drives), axis=0)
    return states, readout(params, states, inputs)


@dataclasses.dataclass(frozen=True)
class LRUAgent(ActorCritic):
    """An LRU of ``hidden_size`` complex state units and a readout of ``hidden_size`` units.

    ``parallel``: recompute episodes by the parallel scan (True) or by stepping (False); None
    (default) chooses the parallel scan unless JAX's default backend is a CPU.
    """

    parallel: bool | None = None

    core_name = "lru"

    def __post_init__(self):
        super().__post_init__()
        if self.parallel is not None:
            object.__setattr__(self, "parallel", boolean("parallel", self.parallel))

    @property
    def parallel_unroll(self) -> bool:
        """Whether training recomputes the episode with the parallel ``unroll``."""
        return jax.default_backend() != "cpu" if self.parallel is None else self.parallel

    def core(self, name: str) -> nn.Module:
        return LRUCell(self.hidden_size, self.hidden_size, name=name)

    @property
    def memory_size(self) -> int:
        return 3 * self.hidden_size

    def initial_carry(self, num_tasks: int) -> LRUCarry:
        zeros = jnp.zeros((num_tasks, self.hidden_size), jnp.float32)
        return zeros, zeros, zeros

    def memory(self, carry: LRUCarry) -> jax.Array:
        x_re, x_im, hidden = carry
        return jnp.concatenate([hidden, x_re, x_im], axis=-1)

    def carry_from_memory(self, memory: jax.Array) -> LRUCarry:
        size = self.hidden_size
        return memory[..., size : 2 * size], memory[..., 2 * size :], memory[..., :size]

    def unroll(self, params: PyTree, carry: LRUCarry, inputs: jax.Array):
        """The episode on stored inputs, in parallel over time when ``parallel_unroll`` (else
        stepped): ``(carry, logits [T, N, A], values [T, N], memory [T, N, M])``, equal to
        stepping ``step`` through ``inputs`` to float32 rounding."""
        if not self.parallel_unroll:
            return scan_steps(self, params, carry, inputs)
        states, hidden = parallel_states(params["params"][self.core_name], carry, inputs)
        logits, values = self.heads(params, hidden)
        memory = jnp.concatenate([hidden, jnp.real(states), jnp.imag(states)], axis=-1)
        return self.carry_from_memory(memory[-1]), logits, values, memory
