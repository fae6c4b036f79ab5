"""Any finite set of tabular MDPs: the task is which of M known MDPs the agent is in.

The exact belief comes for free: the posterior over the M tasks, updated with the likelihood of
each observed transition (next state and Bernoulli reward), kept in log space and normalised at
every step so it stays finite over any horizon.
"""

from __future__ import annotations

import dataclasses
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from metabelief.tasks import validation
from metabelief.tasks.base import TaskFamily


@struct.dataclass
class TabularTask:
    index: jax.Array  # int32[]: which of the M MDPs


@struct.dataclass
class TabularState:
    position: jax.Array  # int32[]: the current state
    time: jax.Array  # int32[]: steps taken in the episode


@struct.dataclass
class TabularBelief:
    log_posterior: jax.Array  # float32[M]: log P(task | history), normalised
    compensation: jax.Array  # float32[M]: rounding error of log_posterior not yet added back


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class TabularFamily(TaskFamily):
    """M tabular MDPs over S states and A actions, one of them drawn from ``prior`` per episode.

    Observation: one-hot of the current state, ``float32[S]``. Action: ``int32[]`` in [0, A).
    Reward: ``float32[]`` in {0, 1}, 1 with probability ``reward_probs[m, s, a]``. Next state:
    ``s' ~ transitions[m, s, a]``. Termination: ``done`` once ``horizon`` steps have been taken
    (no reset: the task and its dynamics go on). State: ``TabularState``.

    Belief: ``TabularBelief``. Belief features: the posterior over the M tasks, ``float32[M]``.
    True features: the one-hot of the task, ``float32[M]``. A history impossible under every task
    gives a NaN belief.

    Args:
      transitions: ``[M, S, A, S]``, each ``transitions[m, s, a]`` a distribution over next states.
      reward_probs: ``[M, S, A]`` in [0, 1].
      prior: ``[M]``, the distribution of tasks (default uniform).
      init_probs: ``[S]`` or ``[M, S]``, the start-state distribution (default: state 0).
      horizon: steps per episode.

    Families are frozen; they keep read-only float64 copies of the arrays (``init_probs`` as
    ``[M, S]``) and compare equal, and hash, by those and the horizon, so they can be static jit
    arguments.
    """

    transitions: np.ndarray
    reward_probs: np.ndarray
    prior: np.ndarray | None = None
    init_probs: np.ndarray | None = None
    horizon: int = 50

    def __post_init__(self) -> None:
        transitions = _probabilities("transitions", self.transitions, ndim=4)
        num_tasks, num_states, num_actions, _ = transitions.shape
        if transitions.shape[3] != num_states:
            raise ValueError(f"transitions must have shape [M, S, A, S], got {transitions.shape}")
        _rows_sum_to_one("transitions", transitions)
        reward_probs = _probabilities("reward_probs", self.reward_probs, ndim=3)
        if reward_probs.shape != (num_tasks, num_states, num_actions):
            raise ValueError(
                f"reward_probs must have shape [M, S, A] = {transitions.shape[:3]}, got {reward_probs.shape}"
            )
        prior = self.prior
        prior = (
            np.full(num_tasks, 1.0 / num_tasks) if prior is None else _probabilities("prior", prior, ndim=1)
        )
        if prior.shape != (num_tasks,):
            raise ValueError(f"prior must have shape ({num_tasks},), got {prior.shape}")
        _rows_sum_to_one("prior", prior)
        init_probs = np.eye(num_states)[0] if self.init_probs is None else self.init_probs
        init_probs = _probabilities("init_probs", init_probs, ndim=(1, 2))
        if init_probs.shape == (num_states,):
            init_probs = np.broadcast_to(init_probs, (num_tasks, num_states))
        if init_probs.shape != (num_tasks, num_states):
            raise ValueError(
                f"init_probs must have shape [S] or [M, S] with M, S = {num_tasks}, {num_states}, "
                f"got {init_probs.shape}"
            )
        _rows_sum_to_one("init_probs", init_probs)
        object.__setattr__(self, "horizon", validation.integer_at_least("horizon", self.horizon, 1))
        arrays = {
            "transitions": transitions,
            "reward_probs": reward_probs,
            "prior": prior,
            "init_probs": init_probs,
        }
        for name, array in arrays.items():
            object.__setattr__(self, name, _read_only(array))

    @property
    def num_tasks(self) -> int:
        return self.transitions.shape[0]

    @property
    def num_states(self) -> int:
        return self.transitions.shape[1]

    @property
    def num_actions(self) -> int:
        return self.transitions.shape[2]

    @property
    def obs_size(self) -> int:
        return self.num_states

    @property
    def _identity(self) -> tuple:
        arrays = (self.transitions, self.reward_probs, self.prior, self.init_probs)
        return (self.horizon, *((array.shape, array.tobytes()) for array in arrays))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._identity == self._identity

    def __hash__(self) -> int:
        return hash(self._identity)

    def __repr__(self) -> str:
        digest = hashlib.sha1(repr(self._identity).encode()).hexdigest()[:8]
        return (
            f"TabularFamily(num_tasks={self.num_tasks}, num_states={self.num_states}, "
            f"num_actions={self.num_actions}, horizon={self.horizon}, arrays={digest})"
        )

    def sample_task(self, key: jax.Array) -> TabularTask:
        """Draws the task index from the prior."""
        return TabularTask(index=jax.random.categorical(key, _log(self.prior)).astype(jnp.int32))

    def reset(self, key: jax.Array, task: TabularTask) -> tuple[TabularState, jax.Array]:
        """Draws the start state from the task's start distribution."""
        position = jax.random.categorical(key, _log(self.init_probs)[task.index]).astype(jnp.int32)
        return TabularState(position=position, time=jnp.zeros((), jnp.int32)), self._observe(position)

    def step(
        self, key: jax.Array, task: TabularTask, state: TabularState, action: jax.Array
    ) -> tuple[TabularState, jax.Array, jax.Array, jax.Array]:
        """Draws the next state and a Bernoulli reward from the task's tables."""
        state_key, reward_key = jax.random.split(key)
        log_next = _log(self.transitions)[task.index, state.position, action]
        position = jax.random.categorical(state_key, log_next).astype(jnp.int32)
        reward_prob = jnp.asarray(self.reward_probs, jnp.float32)[task.index, state.position, action]
        reward = jax.random.bernoulli(reward_key, reward_prob).astype(jnp.float32)
        state = TabularState(position=position, time=state.time + 1)
        return state, self._observe(position), reward, state.time >= self.horizon

    def belief_init(self, obs: jax.Array) -> TabularBelief:
        """The prior times each task's probability of the observed start state."""
        log_joint = _log(self.prior) + _log(self.init_probs)[:, jnp.argmax(obs)]
        log_posterior = log_joint - jax.nn.logsumexp(log_joint)
        return TabularBelief(log_posterior=log_posterior, compensation=jnp.zeros_like(log_posterior))

    def belief_update(
        self, belief: TabularBelief, obs: jax.Array, action: jax.Array, reward: jax.Array, next_obs: jax.Array
    ) -> TabularBelief:
        """Bayes' rule with each task's likelihood of the next state and the reward."""
        state, next_state = jnp.argmax(obs), jnp.argmax(next_obs)
        log_move = _log(self.transitions)[:, state, action, next_state]
        log_reward = jnp.where(
            reward > 0.5,
            _log(self.reward_probs)[:, state, action],
            _log(1.0 - self.reward_probs)[:, state, action],
        )
        log_likelihood = log_move + log_reward
        # Compensated (Kahan) sums: a plain float32 sum drifts by ~5e-6 per 1,000 steps when two
        # tasks stay nearly tied; the normaliser is added the same way, as a second increment.
        belief = _compensated_add(belief, log_likelihood)
        return _compensated_add(belief, -jax.nn.logsumexp(belief.log_posterior))

    def belief_features(self, belief: TabularBelief) -> jax.Array:
        """The posterior over the M tasks, ``float32[M]``."""
        return jnp.exp(belief.log_posterior)

    def true_features(self, task: TabularTask, state: TabularState) -> jax.Array:
        """The one-hot of the task, ``float32[M]``."""
        del state
        return jax.nn.one_hot(task.index, self.num_tasks, dtype=jnp.float32)

    def _observe(self, position: jax.Array) -> jax.Array:
        return jax.nn.one_hot(position, self.num_states, dtype=jnp.float32)


def random_tabular(
    num_tasks: int = 4, num_states: int = 5, num_actions: int = 2, horizon: int = 50, seed: int = 0
) -> TabularFamily:
    """A random stochastic task set: each transition row a Dirichlet(1) over a random half of the
    states (so some moves are impossible and rule tasks out), uniform reward probabilities, uniform
    prior and start state."""
    for name, value in (("num_tasks", num_tasks), ("num_states", num_states), ("num_actions", num_actions)):
        validation.integer_at_least(name, value, 1)
    rng = np.random.default_rng(validation.integer_at_least("seed", seed, 0))
    shape = (num_tasks, num_states, num_actions, num_states)
    reachable = rng.random(shape) < 0.5
    reachable[..., 0] |= ~reachable.any(axis=-1)  # every row reaches at least one state
    weights = rng.gamma(1.0, size=shape) * reachable
    transitions = weights / weights.sum(axis=-1, keepdims=True)
    reward_probs = rng.uniform(size=shape[:3])
    uniform_start = np.full(num_states, 1.0 / num_states)
    return TabularFamily(transitions, reward_probs, init_probs=uniform_start, horizon=horizon)


def tabular(
    transitions: np.ndarray | None = None,
    reward_probs: np.ndarray | None = None,
    prior: np.ndarray | None = None,
    init_probs: np.ndarray | None = None,
    horizon: int = 50,
    num_tasks: int | None = None,
    num_states: int | None = None,
    num_actions: int | None = None,
    seed: int | None = None,
) -> TabularFamily:
    """The registry's factory: the given task set, or a ``random_tabular`` one when no arrays are given.

    ``num_tasks`` (default 4), ``num_states`` (5), ``num_actions`` (2) and ``seed`` (0) shape the
    random set and may not be combined with arrays.
    """
    random_args = {"num_tasks": num_tasks, "num_states": num_states, "num_actions": num_actions, "seed": seed}
    if transitions is None and reward_probs is None:
        if prior is not None or init_probs is not None:
            raise ValueError("prior and init_probs need transitions and reward_probs")
        defaults = {"num_tasks": 4, "num_states": 5, "num_actions": 2, "seed": 0}
        given = {name: value for name, value in random_args.items() if value is not None}
        return random_tabular(horizon=horizon, **(defaults | given))
    if transitions is None or reward_probs is None:
        raise ValueError("transitions and reward_probs must be given together (or neither, for a random set)")
    clashing = [name for name, value in random_args.items() if value is not None]
    if clashing:
        raise ValueError(
            f"{', '.join(clashing)} shape a random task set; they cannot be combined with arrays"
        )
    return TabularFamily(transitions, reward_probs, prior, init_probs, horizon)


def _log(probabilities: np.ndarray) -> jax.Array:
    """float32 log-probabilities with log 0 = -inf, built in float64."""
    with np.errstate(divide="ignore"):
        return jnp.asarray(np.log(probabilities), jnp.float32)


def _compensated_add(belief: TabularBelief, increment: jax.Array) -> TabularBelief:
    """Kahan summation of ``increment`` into the log-posterior; -inf entries stay -inf."""
    corrected = increment - belief.compensation
    total = belief.log_posterior + corrected
    compensation = (total - belief.log_posterior) - corrected
    return TabularBelief(
        log_posterior=total, compensation=jnp.where(jnp.isfinite(compensation), compensation, 0.0)
    )


def _probabilities(name: str, values: object, ndim: int | tuple[int, ...]) -> np.ndarray:
    try:
        array = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be an array of probabilities: {error}") from None
    if array.ndim not in np.atleast_1d(ndim):
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {array.shape}")
    if not np.isfinite(array).all() or (array < 0).any() or (array > 1).any():
        raise ValueError(f"{name} must hold probabilities in [0, 1] (no NaN)")
    return array


def _rows_sum_to_one(name: str, array: np.ndarray) -> None:
    sums = array.sum(axis=-1)
    if not np.allclose(sums, 1.0, atol=1e-6):
        worst = float(np.abs(sums - 1.0).max())
        raise ValueError(f"{name} rows must sum to 1 (off by up to {worst:.3g})")


def _read_only(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array, np.float64)
    array.setflags(write=False)
    return array
