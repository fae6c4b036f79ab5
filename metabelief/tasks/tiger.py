"""The repeated Tiger problem (Kaelbling, Littman & Cassandra 1998), as Kuo et al. (2025) test it.

A tiger hides behind the left or the right door. The agent can listen (it hears the tiger's side
correctly with probability ``accuracy``, for ``listen_reward``) or open a door: ``tiger_reward``
if the tiger is behind it, ``treasure_reward`` if not; then the tiger is placed again behind a
door chosen uniformly at random, and the game goes on until the horizon. With ``p_stay < 1`` the
tiger also changes sides after each listening step with probability ``1 - p_stay`` (Kuo et al.'s
Markov Tiger uses 0.9). Acting well needs the belief: listening costs, so the agent must decide
when it has heard enough.

The exact posterior is a two-state hidden Markov model filter, kept as the log-odds of "tiger
left" (exact over any number of steps in float32, and finite for ``accuracy = 1`` until a door
is opened, which resets it). Opening a door says where the tiger was, but the tiger is placed
again at random, so the belief goes back to even odds.

Where this differs from Kuo et al.'s code (github.com/walkerlab/metaRL-predictive-representation,
``environments/tiger/tiger.py``): there the tiger stays where it was after a door is opened (and
the Markov tiger stops moving), actions are ordered open left, open right, listen, and the
default accuracy is 0.85; here a door opened starts a new round (the classic repeated Tiger),
listening is action 0, and the default accuracy is 0.8.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from metabelief.tasks import two_state, validation
from metabelief.tasks.base import TaskFamily

LISTEN, OPEN_LEFT, OPEN_RIGHT = 0, 1, 2  # actions
HEARD_LEFT, HEARD_RIGHT = 0, 1  # entries of the observation


@struct.dataclass
class TigerTask:
    left: jax.Array  # bool[]: the tiger starts behind the left door


@struct.dataclass
class TigerState:
    left: jax.Array  # bool[]: the tiger is behind the left door now
    time: jax.Array  # int32[]: steps taken


@struct.dataclass
class TigerBelief:
    """The posterior over the tiger's side in the state the agent acts in next."""

    log_odds: jax.Array  # float32[]: log P(left | history) - log P(right | history)

    @property
    def p_left(self) -> jax.Array:
        return jax.nn.sigmoid(self.log_odds)


@dataclasses.dataclass(frozen=True)
class Tiger(TaskFamily):
    """The repeated Tiger POMDP.

    Action, ``int32[]``: ``LISTEN`` (0), ``OPEN_LEFT`` (1), ``OPEN_RIGHT`` (2).
    Observation, ``float32[2]``: [heard left, heard right], one-hot after listening, zeros from
    ``reset`` and after opening a door.
    Reward: ``listen_reward`` for listening; ``tiger_reward`` or ``treasure_reward`` for a door.
    After a door the tiger is placed again uniformly; after listening it stays with ``p_stay``.
    Task: ``TigerTask`` (the first side, uniform). State: ``TigerState``. Belief: ``TigerBelief``.
    Belief features, ``float32[1]``: [P(tiger left now | history)]; true features ``float32[1]``:
    [1.0 if the tiger is behind the left door in the state ``step`` returned].
    Capabilities: ``ExpectedRewards``, ``FiniteOutcomes`` (so ``metabelief.baselines.bayes_optimal``
    solves it exactly when ``p_stay`` is 0, 1/2 or 1, the cases whose reachable beliefs stay few).

    Args:
      accuracy: probability of hearing the tiger's true side, in (0.5, 1].
      horizon: steps per episode.
      p_stay: probability that the tiger stays put after a listening step.
      listen_reward, treasure_reward, tiger_reward: the three payoffs.

    Example::

        family = metabelief.make("tiger", p_stay=0.9)  # Kuo et al.'s Markov Tiger
    """

    accuracy: float = 0.8
    horizon: int = 30
    p_stay: float = 1.0
    listen_reward: float = -1.0
    treasure_reward: float = 10.0
    tiger_reward: float = -100.0

    num_actions = 3
    obs_size = 2

    def __post_init__(self) -> None:
        accuracy = validation.probability("accuracy", self.accuracy)
        if accuracy <= 0.5:
            raise ValueError(f"accuracy must lie in (0.5, 1], got {self.accuracy!r}")
        object.__setattr__(self, "accuracy", accuracy)
        object.__setattr__(self, "horizon", validation.integer_at_least("horizon", self.horizon, 1))
        object.__setattr__(self, "p_stay", validation.probability("p_stay", self.p_stay))
        for name in ("listen_reward", "treasure_reward", "tiger_reward"):
            object.__setattr__(self, name, validation.finite_float(name, getattr(self, name)))
        if self.treasure_reward == self.tiger_reward:
            raise ValueError(
                f"treasure_reward must differ from tiger_reward (a door must tell them apart), "
                f"got {self.treasure_reward!r} for both"
            )

    def sample_task(self, key: jax.Array) -> TigerTask:
        return TigerTask(left=jax.random.bernoulli(key))

    def reset(self, key: jax.Array, task: TigerTask) -> tuple[TigerState, jax.Array]:
        del key
        state = TigerState(left=jnp.asarray(task.left, bool), time=jnp.zeros((), jnp.int32))
        return state, jnp.zeros((self.obs_size,), jnp.float32)

    def step(
        self, key: jax.Array, task: TigerTask, state: TigerState, action: jax.Array
    ) -> tuple[TigerState, jax.Array, jax.Array, jax.Array]:
        del task
        hear_key, stay_key, place_key = jax.random.split(key, 3)
        listened = action == LISTEN
        heard_left = jax.random.bernoulli(hear_key, self.accuracy) == state.left
        heard = jnp.stack([heard_left, ~heard_left]).astype(jnp.float32)
        obs = jnp.where(listened, heard, 0.0)
        opened_tiger = jnp.where(action == OPEN_LEFT, state.left, ~state.left)
        door = jnp.where(opened_tiger, self.tiger_reward, self.treasure_reward)
        reward = jnp.where(listened, self.listen_reward, door).astype(jnp.float32)
        moved = state.left != ~jax.random.bernoulli(stay_key, self.p_stay)
        left = jnp.where(listened, moved, jax.random.bernoulli(place_key))
        state = TigerState(left=left, time=state.time + 1)
        return state, obs, reward, state.time >= self.horizon

    def belief_init(self, obs: jax.Array) -> TigerBelief:
        del obs
        return TigerBelief(log_odds=jnp.zeros((), jnp.float32))

    def belief_update(
        self, belief: TigerBelief, obs: jax.Array, action: jax.Array, reward: jax.Array, next_obs: jax.Array
    ) -> TigerBelief:
        """Listening: weigh the heard side by ``accuracy / (1 - accuracy)``, then predict the move.
        Opening a door: even odds (the tiger is placed again at random)."""
        del obs, reward
        evidence = two_state.log_ratio(self.accuracy)
        heard = jnp.where(next_obs[HEARD_LEFT] > 0.5, evidence, -evidence)
        listened = two_state.predict_flip(belief.log_odds + heard, 1.0 - self.p_stay)
        log_odds = jnp.where(action == LISTEN, listened, 0.0)
        return TigerBelief(log_odds=log_odds.astype(jnp.float32))

    def belief_features(self, belief: TigerBelief) -> jax.Array:
        return belief.p_left[None]

    def true_features(self, task: TigerTask, state: TigerState) -> jax.Array:
        del task
        return state.left.astype(jnp.float32)[None]

    def expected_rewards(self, belief: TigerBelief, obs: jax.Array) -> jax.Array:
        """``float32[3]``: listen, open left, open right, under the posterior."""
        del obs
        p_left = belief.p_left
        left_door = p_left * self.tiger_reward + (1.0 - p_left) * self.treasure_reward
        right_door = (1.0 - p_left) * self.tiger_reward + p_left * self.treasure_reward
        return jnp.stack([jnp.full_like(p_left, self.listen_reward), left_door, right_door])

    def outcomes(
        self, belief: TigerBelief, obs: jax.Array, action: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """The two things ``action`` can return now: heard left / heard right after listening;
        the tiger's door / the treasure's door after opening one. ``float32[2]``, ``[2]``, ``[2, 2]``."""
        del obs
        p_left = belief.p_left
        p_heard_left = p_left * self.accuracy + (1.0 - p_left) * (1.0 - self.accuracy)
        p_tiger = jnp.where(action == OPEN_LEFT, p_left, 1.0 - p_left)
        listened = action == LISTEN
        probs = jnp.where(
            listened, jnp.stack([p_heard_left, 1.0 - p_heard_left]), jnp.stack([p_tiger, 1.0 - p_tiger])
        )
        door_rewards = jnp.array([self.tiger_reward, self.treasure_reward], jnp.float32)
        rewards = jnp.where(listened, jnp.float32(self.listen_reward), door_rewards)
        next_obs = jnp.where(listened, jnp.eye(2, dtype=jnp.float32), 0.0)
        return probs.astype(jnp.float32), rewards, next_obs
