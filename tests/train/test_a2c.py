"""A2C training: returns against a NumPy loop, the config's checks and round trips, a tiny run."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metabelief.rollout import rollout
from metabelief.tasks.dependent_bandit import DependentTask
from metabelief.train import TrainConfig, discounted_returns, init_state, load_agent, save_agent, train

SMALL = dict(family_args=(("horizon", 10),), hidden_size=8, num_tasks=64)


@pytest.mark.parametrize("gamma", [0.0, 0.9, 1.0])
def test_discounted_returns_match_a_numpy_loop(gamma):
    rewards = np.random.default_rng(0).random((7, 3))
    expected = np.zeros_like(rewards)
    future = np.zeros(3)
    for t in reversed(range(7)):
        future = rewards[t] + gamma * future
        expected[t] = future
    returns = discounted_returns(jnp.asarray(rewards, jnp.float32), gamma)
    assert returns.shape == (7, 3)
    np.testing.assert_allclose(np.asarray(returns), expected, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# TrainConfig


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(num_tasks=0), "num_tasks"),
        (dict(num_updates=0), "num_updates"),
        (dict(hidden_size=2.5), "hidden_size"),
        (dict(gamma=1.5), "gamma"),
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(entropy_coef=-0.1), "entropy_coef"),
        (dict(family="no_such_family"), "unknown family name"),
        (dict(family_args=(("horizon", 0),)), "horizon"),
        (dict(family_args=(("num_arms", 3),), family="dependent_bandit"), "num_arms"),
    ],
)
def test_config_rejects_bad_fields(fields, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**fields)


def test_config_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown TrainConfig fields: famly"):
        TrainConfig.from_dict({"famly": "bernoulli_bandit"})


def test_config_round_trips_through_a_json_dict():
    config = TrainConfig(
        family="dependent_bandit",
        family_args=(("support", (0.2, 0.8)), ("horizon", 10)),
        hidden_size=8,
        time_input=True,
        gamma=0.8,
        seed=3,
    )
    fields = config.to_dict()
    assert fields["family_args"] == {"horizon": 10, "support": (0.2, 0.8)}
    # JSON turns the support tuple into a list; the config turns it back, so it stays hashable.
    for restored in (TrainConfig.from_dict(fields), TrainConfig.from_dict(json.loads(json.dumps(fields)))):
        assert restored == config and hash(restored) == hash(config)
        assert restored.make_family() == config.make_family()
    assert config.make_family().support == (0.2, 0.8) and config.make_family().horizon == 10


def test_config_sizes():
    config = TrainConfig(num_updates=5, updates_per_chunk=2, **SMALL)
    assert config.num_chunks == 3
    assert config.steps_per_update == 64 * 10
    agent = config.make_agent()
    assert (agent.hidden_size, agent.horizon, agent.num_actions) == (8, 10, 2)


# ---------------------------------------------------------------------------------------------
# Checkpoints


def test_save_and_load_agent_round_trip(tmp_path):
    config = TrainConfig(
        family="dependent_bandit", family_args=(("horizon", 10), ("support", (0.2, 0.8))),
        hidden_size=8, time_input=True,
    )  # fmt: skip
    agent = config.make_agent()
    # Not the initialisation the loader builds its template from: the values must come from the file.
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda leaf: leaf + jnp.asarray(rng.standard_normal(leaf.shape), jnp.float32),
        agent.init(jax.random.key(5)),
    )
    directory = save_agent(tmp_path / "agent", params, config)
    assert sorted(path.name for path in directory.iterdir()) == ["config.json", "params.msgpack"]
    loaded, loaded_config = load_agent(directory)
    assert loaded_config == config
    assert jax.tree.structure(loaded) == jax.tree.structure(params)
    jax.tree.map(np.testing.assert_array_equal, loaded, params)

    family = loaded_config.make_family()
    tasks = DependentTask(p=jnp.asarray([0.2, 0.8] * 8, jnp.float32))
    run = jax.jit(rollout, static_argnums=(0, 1))
    original = run(family, agent, params, jax.random.key(1), tasks)
    restored = run(family, loaded_config.make_agent(), loaded, jax.random.key(1), tasks)
    for name in ("actions", "rewards", "hidden", "logits", "features"):
        np.testing.assert_array_equal(np.asarray(restored[name]), np.asarray(original[name]), err_msg=name)


# ---------------------------------------------------------------------------------------------
# Training


def test_tiny_training_run_in_two_chunks():
    config = TrainConfig(num_updates=3, updates_per_chunk=2, **SMALL)  # chunks of 2 and 1 updates
    result = train(config, progress=False)
    assert set(result.metrics) == {"episode_return", "policy_loss", "value_loss", "entropy", "grad_norm"}
    for name, values in result.metrics.items():
        assert values.shape == (3,), name
        assert np.isfinite(values).all(), name
    returns = result.metrics["episode_return"]
    assert ((returns >= 0.0) & (returns <= 10.0)).all()
    # Two arms: the entropy of the policy lies in (0, log 2]; gradients are not zero.
    assert ((result.metrics["entropy"] > 0.0) & (result.metrics["entropy"] <= np.log(2.0) + 1e-6)).all()
    assert (result.metrics["grad_norm"] > 0.0).all()
    # Three different gradient steps, one per update.
    assert len(np.unique(result.metrics["policy_loss"])) == 3

    jax.tree.map(np.testing.assert_array_equal, result.initial_params, init_state(config).params)
    changed = jax.tree.map(lambda a, b: bool((np.asarray(a) != np.asarray(b)).any()), result.params,
                           result.initial_params)  # fmt: skip
    assert all(jax.tree.leaves(changed))
    assert result.seconds > 0.0 and result.agent_steps_per_second > 0.0
