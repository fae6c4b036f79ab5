"""Writing your own task family: one good arm among K, from definition to a probed agent.

K arms; one of them, drawn uniformly at random, is the good arm (the hidden task): it pays reward
1 with probability ``p_good``, every other arm with probability ``p_bad``. There is no
observation, only rewards. The exact belief is the posterior over which arm is good: pulling arm
a and getting reward r multiplies the probability of "a is good" by p_good^r (1 - p_good)^(1 - r)
and that of every other hypothesis by p_bad^r (1 - p_bad)^(1 - r). It is kept as normalised log
probabilities, so it stays exact and finite over any horizon.

The steps every family goes through:
1. implement the contract (sizes, sample_task, reset, step, belief_init, belief_update,
   belief_features, true_features) as pure functions for ONE task, in a frozen dataclass;
   optional capabilities (``metabelief.tasks.base``) are plain methods too: ``expected_rewards``
   declares ``ExpectedRewards``, which unlocks the belief-greedy reference
   (``metabelief.baselines.belief_greedy``);
2. test that the belief is calibrated as the exact posterior must be (``metabelief.check_family``,
   which also checks every capability the family declares; a necessary condition, not a proof);
3. train an agent on the instance itself, ``TrainConfig(family=OneGoodArm(...))``, save it and
   load it back (``load_agent(path, family=...)``), and probe its hidden state for the belief, like
   any built-in family.
``metabelief.register`` is only needed for using the family by name: ``metabelief.make`` and the
CLI (``metabelief check one_good_arm``); the last step does it.
Once the class is importable from a package of yours, the generic experiment runs it from the
shell without registering: ``metabelief run family my_pkg.tasks:OneGoodArm num_arms=4``.

Run: ``python examples/custom_task_family.py`` (about a minute on a 2-core CPU).
"""

from __future__ import annotations

import dataclasses
import tempfile

import jax
import jax.numpy as jnp
from flax import struct

import metabelief
from metabelief import baselines, probes, rollout
from metabelief.tasks import validation


@struct.dataclass
class OneGoodArmTask:
    good: jax.Array  # int32[]: the index of the good arm


@struct.dataclass
class OneGoodArmState:
    time: jax.Array  # int32[]: pulls made so far


@struct.dataclass
class OneGoodArmBelief:
    log_probs: jax.Array  # float32[K]: log P(arm i is the good one | history), normalised


@dataclasses.dataclass(frozen=True)
class OneGoodArm(metabelief.TaskFamily):
    """K arms, one good (pays with ``p_good``), the others pay with ``p_bad``; no observation."""

    num_arms: int = 3
    p_good: float = 0.8
    p_bad: float = 0.2
    horizon: int = 30
    obs_size = 0  # a class attribute, not a field: the family observes nothing

    def __post_init__(self):  # bad input fails here, naming the field, before anything compiles
        validation.integer_at_least("num_arms", self.num_arms, 2)
        validation.probability("p_good", self.p_good)
        validation.probability("p_bad", self.p_bad)
        validation.integer_at_least("horizon", self.horizon, 1)

    @property
    def num_actions(self):  # one action per arm
        return self.num_arms

    def sample_task(self, key):
        return OneGoodArmTask(good=jax.random.randint(key, (), 0, self.num_arms, jnp.int32))

    def reset(self, key, task):
        return OneGoodArmState(time=jnp.zeros((), jnp.int32)), jnp.zeros((0,), jnp.float32)

    def step(self, key, task, state, action):
        success_prob = jnp.where(action == task.good, self.p_good, self.p_bad)
        reward = jax.random.bernoulli(key, success_prob).astype(jnp.float32)
        state = OneGoodArmState(time=state.time + 1)
        return state, jnp.zeros((0,), jnp.float32), reward, state.time >= self.horizon

    def belief_init(self, obs):  # the uniform prior: an empty observation says nothing
        return OneGoodArmBelief(log_probs=jnp.full((self.num_arms,), -jnp.log(self.num_arms), jnp.float32))

    def belief_update(self, belief, obs, action, reward, next_obs):
        # Log likelihood of the reward under each hypothesis "arm i is good": the pulled arm pays
        # with p_good if i is the pulled arm, with p_bad otherwise. `where` rather than
        # r log p + (1 - r) log(1 - p), which is NaN (0 * -inf) when a probability is 0 or 1.
        success_prob = jnp.where(jnp.arange(self.num_arms) == action, self.p_good, self.p_bad)
        log_likelihood = jnp.where(reward > 0.5, jnp.log(success_prob), jnp.log1p(-success_prob))
        log_probs = belief.log_probs + log_likelihood
        return OneGoodArmBelief(log_probs=log_probs - jax.nn.logsumexp(log_probs))

    def belief_features(self, belief):  # P(arm i is good | history), whose truth is the one-hot
        return jnp.exp(belief.log_probs)

    def true_features(self, task, state):
        return jax.nn.one_hot(task.good, self.num_arms, dtype=jnp.float32)

    def expected_rewards(self, belief, obs):  # the ExpectedRewards capability
        p = jnp.exp(belief.log_probs)
        return p * self.p_good + (1.0 - p) * self.p_bad


def main(num_updates: int = 300) -> dict:
    family = OneGoodArm(num_arms=3)
    report = metabelief.check_family(family, num_tasks=1024)
    print(
        f"check_family passed: max |z| {report.calibration_max_z:.2f} over {report.calibration_groups} groups"
    )

    config = metabelief.TrainConfig(
        family=family, num_tasks=512, num_updates=num_updates, updates_per_chunk=25, learning_rate=1e-2
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
    # The capability at work: the belief-greedy reference on the same tasks.
    greedy = baselines.run_policy(family, baselines.belief_greedy(family), jax.random.key(3), tasks)
    chance = family.horizon * (family.p_good + (family.num_arms - 1) * family.p_bad) / family.num_arms
    print(
        f"return per episode: {float(history.rewards.sum(0).mean()):.2f} (random arms: {chance:.1f}, "
        f"belief-greedy: {float(greedy.rewards.sum(0).mean()):.2f}, "
        f"knowing the good arm: {family.horizon * family.p_good:.1f})"
    )

    hidden = slice(0, agent.hidden_size)
    belief = slice(agent.hidden_size, agent.hidden_size + family.num_arms)
    r2 = {}
    for name, network in {"trained": params, "untrained": initial_params}.items():
        moments = rollout.probe_moments(family, agent, network, (1024, 512, 512), history=history)
        r2[name] = float(probes.linear_probe(moments, hidden, belief).test.r2)
    print(
        f"held-out R², hidden → P(arm i is good): trained {r2['trained']:.3f}, "
        f"untrained {r2['untrained']:.3f}"
    )
    metabelief.register("one_good_arm", OneGoodArm, overwrite=True)  # now `make` knows its name
    assert metabelief.make("one_good_arm", num_arms=3) == family
    return r2


if __name__ == "__main__":
    main()
