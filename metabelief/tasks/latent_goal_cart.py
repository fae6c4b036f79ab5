"""The latent-goal cart of Kuo et al. (2025): continuous position, noisy reward, hidden goal.

A cart on ``[-position_limit, position_limit]`` starts near 0 (uniform in ``±start_spread``); each
step it moves at the chosen velocity for ``dt`` (clipped at the ends) and is paid
``-(position - goal)^2 - velocity_cost * velocity^2`` plus Gaussian noise of ``noise_std``.
The goal is one of ``goals``, uniformly at random, and is never shown: only the noisy reward
says where it is. Kuo et al.'s code (github.com/walkerlab/metaRL-predictive-representation,
``environments/latent_goal_cart/``) takes a continuous velocity in [-1, 1]; the package's agents
act over a finite set, so here the velocity is one of ``velocities`` (five by default).

This is the package's first family with a real-valued observation and a continuous reward. The
exact posterior over the goals needs only the Gaussian likelihood of each reward under each
goal, given the position the step reached (read from the next observation, so the belief uses
the very float the environment computed) and the velocity: a log-space sum, normalised.
At the start, near 0, the reward barely depends on the goal (both ±1 are 1 away), so an agent
that only chases expected reward stays there and learns little: a step away from the middle
buys the information.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from metabelief.tasks import validation
from metabelief.tasks.base import TaskFamily


@struct.dataclass
class CartTask:
    goal: jax.Array  # int32[]: index into ``goals``


@struct.dataclass
class CartState:
    position: jax.Array  # float32[]
    time: jax.Array  # int32[]: steps taken


@struct.dataclass
class CartBelief:
    """The posterior over the goals."""

    log_probs: jax.Array  # float32[G], normalised


@dataclasses.dataclass(frozen=True)
class LatentGoalCart(TaskFamily):
    """A cart paid for being near a hidden goal, through a noisy reward.

    Action, ``int32[]``: an index into ``velocities``. Observation, ``float32[1]``: the position.
    Reward, ``float32[]``: ``-(position' - goal)^2 - velocity_cost * v^2 + noise_std * N(0, 1)``,
    position' the position after the step. Task: ``CartTask``. State: ``CartState``. Belief:
    ``CartBelief``. Belief features, ``float32[G + 1]``: the posterior probability of each goal,
    then the posterior mean goal position; true features, ``float32[G]``: the goal's one-hot.
    Capabilities: ``ExpectedRewards`` and ``ReferencePolicies`` (``"map_greedy"``: the best step
    for the most probable goal).

    Args:
      goals: the possible goal positions (>= 2, distinct).
      noise_std: standard deviation of the reward noise (> 0).
      horizon: steps per episode.
      velocities: the velocities the actions choose among (not empty).
      dt: time per step; position_limit: the track's half length; start_spread: the start is
        uniform in ``[-start_spread, start_spread]``; velocity_cost: the weight of ``v^2``.

    Example::

        family = metabelief.make("latent_goal_cart", goals=(-1.0, 0.0, 1.0))
    """

    goals: tuple[float, ...] = (-1.0, 1.0)
    noise_std: float = 0.1
    horizon: int = 30
    velocities: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0)
    dt: float = 0.1
    position_limit: float = 2.0
    start_spread: float = 0.1
    velocity_cost: float = 0.01

    obs_size = 1

    def __post_init__(self) -> None:
        goals = _float_tuple("goals", self.goals)
        if len(goals) < 2 or len(set(goals)) != len(goals):
            raise ValueError(f"goals must hold at least 2 distinct positions, got {self.goals!r}")
        velocities = _float_tuple("velocities", self.velocities)
        if not velocities:
            raise ValueError("velocities must not be empty")
        object.__setattr__(self, "goals", goals)
        object.__setattr__(self, "velocities", velocities)
        object.__setattr__(self, "horizon", validation.integer_at_least("horizon", self.horizon, 1))
        for name in ("noise_std", "dt", "position_limit"):
            object.__setattr__(self, name, validation.positive_float(name, getattr(self, name)))
        for name in ("start_spread", "velocity_cost"):
            object.__setattr__(self, name, validation.non_negative_float(name, getattr(self, name)))
        if self.start_spread > self.position_limit:
            raise ValueError(
                f"start_spread must be <= position_limit {self.position_limit}, got {self.start_spread!r}"
            )

    @property
    def num_actions(self) -> int:
        return len(self.velocities)

    @property
    def num_goals(self) -> int:
        return len(self.goals)

    def sample_task(self, key: jax.Array) -> CartTask:
        return CartTask(goal=jax.random.randint(key, (), 0, self.num_goals, jnp.int32))

    def reset(self, key: jax.Array, task: CartTask) -> tuple[CartState, jax.Array]:
        del task
        spread = self.start_spread
        position = jax.random.uniform(key, (), jnp.float32, -spread, spread)
        return CartState(position=position, time=jnp.zeros((), jnp.int32)), position[None]

    def step(
        self, key: jax.Array, task: CartTask, state: CartState, action: jax.Array
    ) -> tuple[CartState, jax.Array, jax.Array, jax.Array]:
        position = self.moved(state.position, action)
        goal = jnp.asarray(self.goals, jnp.float32)[task.goal]
        noise = self.noise_std * jax.random.normal(key, (), jnp.float32)
        reward = self.noiseless_rewards(position, action, goal) + noise
        state = CartState(position=position, time=state.time + 1)
        return state, position[None], reward.astype(jnp.float32), state.time >= self.horizon

    def belief_init(self, obs: jax.Array) -> CartBelief:
        del obs
        return CartBelief(log_probs=jnp.full((self.num_goals,), -np.log(self.num_goals), jnp.float32))

    def belief_update(
        self, belief: CartBelief, obs: jax.Array, action: jax.Array, reward: jax.Array, next_obs: jax.Array
    ) -> CartBelief:
        """Adds each goal's Gaussian log-likelihood of ``reward`` at the reached position."""
        del obs
        means = self.noiseless_rewards(next_obs[0], action, jnp.asarray(self.goals, jnp.float32))  # [G]
        log_probs = belief.log_probs - 0.5 * ((reward - means) / self.noise_std) ** 2
        return CartBelief(log_probs=(log_probs - jax.nn.logsumexp(log_probs)).astype(jnp.float32))

    def belief_features(self, belief: CartBelief) -> jax.Array:
        probs = jnp.exp(belief.log_probs)
        return jnp.concatenate([probs, (probs @ jnp.asarray(self.goals, jnp.float32))[None]])

    def true_features(self, task: CartTask, state: CartState) -> jax.Array:
        del state
        return jax.nn.one_hot(task.goal, self.num_goals, dtype=jnp.float32)

    def expected_rewards(self, belief: CartBelief, obs: jax.Array) -> jax.Array:
        """``float32[num_actions]``: each velocity's reward from ``obs``'s position, averaged over
        the posterior over goals."""
        actions = jnp.arange(self.num_actions)
        reached = self.moved(obs[0], actions)  # [A]
        goals = jnp.asarray(self.goals, jnp.float32)
        per_goal = self.noiseless_rewards(reached[:, None], actions[:, None], goals[None, :])  # [A, G]
        return per_goal @ jnp.exp(belief.log_probs)

    def reference_policies(self) -> dict:
        """``{"map_greedy": MapGreedy(self)}``: the best step for the most probable goal."""
        return {"map_greedy": MapGreedy(self)}

    def moved(self, position: jax.Array, action: jax.Array) -> jax.Array:
        """Where a step of velocity ``velocities[action]`` from ``position`` lands (clipped)."""
        velocity = jnp.asarray(self.velocities, jnp.float32)[action]
        return jnp.clip(position + self.dt * velocity, -self.position_limit, self.position_limit)

    def noiseless_rewards(self, position: jax.Array, action: jax.Array, goal: jax.Array) -> jax.Array:
        """The reward without noise for reaching ``position`` with ``action``'s velocity (broadcasts)."""
        velocity = jnp.asarray(self.velocities, jnp.float32)[action]
        return -((position - goal) ** 2) - self.velocity_cost * velocity**2


@dataclasses.dataclass(frozen=True)
class MapGreedy:
    """Acts as if the most probable goal were the goal (the first on ties): the velocity whose
    step earns the most there (a belief policy, ``policy(key, belief, obs) -> action``). Unlike
    belief-greedy it leaves the middle at once, and the rewards on the way correct a wrong guess."""

    family: LatentGoalCart

    def __call__(self, key: jax.Array, belief: CartBelief, obs: jax.Array) -> jax.Array:
        del key
        family = self.family
        goal = jnp.asarray(family.goals, jnp.float32)[jnp.argmax(belief.log_probs)]
        actions = jnp.arange(family.num_actions)
        earned = family.noiseless_rewards(family.moved(obs[0], actions), actions, goal)
        return jnp.argmax(earned).astype(jnp.int32)


def _float_tuple(name: str, values: object) -> tuple[float, ...]:
    if not isinstance(values, list | tuple | np.ndarray):
        raise ValueError(f"{name} must be a tuple of numbers, got {values!r}")
    return tuple(validation.finite_float(name, value) for value in values)
