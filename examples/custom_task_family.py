"""Writing your own task family: a restless Tiger problem, from definition to a probed agent.

A tiger hides behind the left or the right door (uniformly at first) and after every step
changes sides with probability ``p_switch``. The agent can listen (it hears the tiger's side
correctly with probability ``accuracy``; listening costs 0.1) or open a door (+1 if the tiger is
not there, -1 if it is, which tells it where the tiger was). Its exact belief is
P(tiger left now | history), one number: a two-state HMM forward filter.

The steps every family goes through:
1. implement the contract (sizes, sample_task, reset, step, belief_init, belief_update,
   belief_features, true_features) as pure functions for ONE task, in a frozen dataclass;
2. test that the belief is calibrated as the exact posterior must be (``metabelief.check_family``;
   a necessary condition, not a proof);
3. train an agent on the instance itself, ``TrainConfig(family=RestlessTiger(...))``, save it and
   load it back (``load_agent(path, family=...)``), and probe its hidden state for the belief, like
   any built-in family.
``metabelief.register`` is only needed for using the family by name: ``metabelief.make`` and the
CLI (``metabelief check restless_tiger``); the last step does it.

Run: ``python examples/custom_task_family.py`` (about a minute on a 2-core CPU).
"""

from __future__ import annotations

import dataclasses
import tempfile

import jax
import jax.numpy as jnp
from flax import struct

import metabelief
from metabelief import probes, rollout
from metabelief.tasks import validation


@struct.dataclass
class TigerTask:
    left: jax.Array  # bool[]: the tiger starts behind the left door


@struct.dataclass
class TigerState:
    time: jax.Array  # int32[]
    left: jax.Array  # bool[]: the tiger is behind the left door now


@struct.dataclass
class TigerBelief:
    p_left: jax.Array  # float32[]: P(tiger left | history)


LISTEN, OPEN_LEFT, OPEN_RIGHT = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class RestlessTiger(metabelief.TaskFamily):
    """Tiger behind one of two doors; observation ``[heard left, heard right]`` after listening."""

    accuracy: float = 0.85
    p_switch: float = 0.1
    horizon: int = 30
    num_actions = 3  # listen, open left, open right
    obs_size = 2

    def __post_init__(self):
        validation.probability("accuracy", self.accuracy)
        validation.probability("p_switch", self.p_switch)
        validation.integer_at_least("horizon", self.horizon, 1)

    def sample_task(self, key):
        return TigerTask(left=jax.random.bernoulli(key))

    def reset(self, key, task):
        return TigerState(time=jnp.zeros((), jnp.int32), left=task.left), jnp.zeros((2,), jnp.float32)

    def step(self, key, task, state, action):
        hear_key, switch_key = jax.random.split(key)
        heard_left = jax.random.bernoulli(hear_key, self.accuracy) == state.left
        obs = jnp.where(action == LISTEN, jnp.stack([heard_left, ~heard_left]).astype(jnp.float32), 0.0)
        opened_tiger = jnp.where(action == OPEN_LEFT, state.left, ~state.left)
        reward = jnp.where(action == LISTEN, -0.1, jnp.where(opened_tiger, -1.0, 1.0)).astype(jnp.float32)
        left = state.left ^ jax.random.bernoulli(switch_key, self.p_switch)  # the tiger moves
        state = TigerState(time=state.time + 1, left=left)
        return state, obs, reward, state.time >= self.horizon

    def belief_init(self, obs):
        return TigerBelief(p_left=jnp.asarray(0.5, jnp.float32))

    def belief_update(self, belief, obs, action, reward, next_obs):
        # Likelihood of what was seen under "tiger left" and under "tiger right".
        heard_left = next_obs[0] > 0.5
        listen_left = jnp.where(heard_left, self.accuracy, 1.0 - self.accuracy)
        opened_tiger = reward < -0.5
        open_left = jnp.where(action == OPEN_LEFT, opened_tiger, ~opened_tiger).astype(jnp.float32)
        like_left = jnp.where(action == LISTEN, listen_left, open_left)
        like_right = jnp.where(action == LISTEN, 1.0 - listen_left, 1.0 - open_left)
        joint_left = belief.p_left * like_left
        p_left = joint_left / (joint_left + (1.0 - belief.p_left) * like_right)
        # Then the tiger may switch sides before the next step.
        return TigerBelief(p_left=p_left * (1.0 - self.p_switch) + (1.0 - p_left) * self.p_switch)

    def belief_features(self, belief):
        return belief.p_left[None]

    def true_features(self, task, state):
        return state.left.astype(jnp.float32)[None]


def main(num_updates: int = 150) -> dict:
    family = RestlessTiger(accuracy=0.8)
    report = metabelief.check_family(family, num_tasks=1024)
    print(
        f"check_family passed: max |z| {report.calibration_max_z:.2f} over {report.calibration_groups} groups"
    )

    config = metabelief.TrainConfig(
        family=family, num_tasks=512, num_updates=num_updates, updates_per_chunk=25, learning_rate=5e-3
    )
    result = metabelief.train.train(config, progress=False)
    with tempfile.TemporaryDirectory() as folder:  # config.json records the class and its fields
        metabelief.train.save_agent(folder, result.params, config)
        # A class defined in a script cannot be imported by name elsewhere: hand the family back.
        params, loaded = metabelief.train.load_agent(folder, seed=0, family=family)  # the one seed
    assert loaded == config
    initial_params = result.seed_initial_params(0)
    agent = config.make_agent()
    tasks = jax.vmap(family.sample_task)(jax.random.split(jax.random.key(1), 2048))
    history = jax.jit(rollout.rollout, static_argnums=(0, 1))(family, agent, params, jax.random.key(2), tasks)
    print(f"return per episode: {float(history.rewards.sum(0).mean()):.2f} (opening doors blindly: 0)")

    hidden, belief = slice(0, agent.hidden_size), slice(agent.hidden_size, agent.hidden_size + 1)
    r2 = {}
    for name, network in {"trained": params, "untrained": initial_params}.items():
        moments = rollout.probe_moments(family, agent, network, (1024, 512, 512), history=history)
        r2[name] = float(probes.linear_probe(moments, hidden, belief).test.r2)
    print(
        f"held-out R², hidden → P(tiger left): trained {r2['trained']:.3f}, untrained {r2['untrained']:.3f}"
    )
    metabelief.register("restless_tiger", RestlessTiger, overwrite=True)  # now `make` knows its name
    assert metabelief.make("restless_tiger", accuracy=0.8) == family
    return r2


if __name__ == "__main__":
    main()
