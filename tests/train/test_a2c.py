"""A2C training: returns against a NumPy loop, the config's checks and round trips, a tiny run."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metabelief.rollout import rollout
from metabelief.tasks.dependent_bandit import DependentTask
from metabelief.train import (
    TrainConfig,
    discounted_returns,
    init_state,
    load_agent,
    save_agent,
    select_seed,
    train,
)

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


def _population(config: TrainConfig, seed: int = 0):
    """Parameters ``[num_seeds, ...]`` that are not the initialisation the loader builds its
    template from: loaded values must come from the file."""
    agent = config.make_agent()
    rng = np.random.default_rng(seed)
    keys = jax.vmap(jax.random.key)(jnp.arange(config.num_seeds) + 5)
    return jax.tree.map(
        lambda leaf: leaf + jnp.asarray(rng.standard_normal(leaf.shape), jnp.float32),
        jax.vmap(agent.init)(keys),
    )


def test_save_and_load_agent_round_trip(tmp_path):
    config = TrainConfig(
        family="dependent_bandit", family_args=(("horizon", 10), ("support", (0.2, 0.8))),
        hidden_size=8, time_input=True, num_seeds=3, seed=4,
    )  # fmt: skip
    agent = config.make_agent()
    population = _population(config)
    directory = save_agent(tmp_path / "agent", population, config)
    assert sorted(path.name for path in directory.iterdir()) == ["config.json", "params.msgpack"]
    loaded, loaded_config = load_agent(directory)
    assert loaded_config == config
    assert jax.tree.structure(loaded) == jax.tree.structure(population)
    jax.tree.map(np.testing.assert_array_equal, loaded, population)

    # One agent picked out: its parameters without the seed axis and the config that trains it alone.
    params, one_config = load_agent(directory, seed=2)
    assert one_config == dataclasses.replace(config, seed=6, num_seeds=1)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b[2]), params, population)
    with pytest.raises(ValueError, match="index must be < num_seeds"):
        load_agent(directory, seed=3)

    family = loaded_config.make_family()
    tasks = DependentTask(p=jnp.asarray([0.2, 0.8] * 8, jnp.float32))
    run = jax.jit(rollout, static_argnums=(0, 1))
    original = run(family, agent, select_seed(population, 2), jax.random.key(1), tasks)
    restored = run(family, one_config.make_agent(), params, jax.random.key(1), tasks)
    for name in ("actions", "rewards", "hidden", "logits", "features"):
        np.testing.assert_array_equal(np.asarray(restored[name]), np.asarray(original[name]), err_msg=name)


SMALL_AGENT = TrainConfig(family_args=(("horizon", 10),), hidden_size=8, num_seeds=2)


@pytest.fixture
def saved(tmp_path):
    return save_agent(tmp_path / "agent", _population(SMALL_AGENT), SMALL_AGENT)


def test_load_agent_names_a_missing_folder_or_file(tmp_path, saved):
    with pytest.raises(ValueError, match=f"no saved agent at {tmp_path / 'nowhere'}: not a folder"):
        load_agent(tmp_path / "nowhere")
    (saved / "params.msgpack").unlink()
    with pytest.raises(ValueError, match="params.msgpack is missing"):
        load_agent(saved)


def test_load_agent_names_a_truncated_parameter_file(saved):
    path = saved / "params.msgpack"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=f"{path} is truncated or corrupt"):
        load_agent(saved)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(hidden_size=16), r"an array of shape \(2, .*\) where \(2, .*\) belongs"),
        (dict(num_seeds=3), "2 seeds where num_seeds is 3|an array of shape"),
        (dict(family="no_such_family"), "is not a valid TrainConfig: unknown family name 'no_such_family'"),
    ],
)
def test_load_agent_names_a_config_that_does_not_match(saved, change, message):
    config_path = saved / "config.json"
    fields = json.loads(config_path.read_text()) | change
    config_path.write_text(json.dumps(fields))
    with pytest.raises(ValueError, match=message) as raised:
        load_agent(saved)
    assert str(saved) in str(raised.value)


def test_save_agent_rejects_parameters_of_another_shape(tmp_path):
    one_seed = select_seed(_population(SMALL_AGENT), 0)  # no seed axis: not a population
    with pytest.raises(ValueError, match="params for"):
        save_agent(tmp_path / "agent", one_seed, SMALL_AGENT)
    assert not (tmp_path / "agent").exists()


def test_an_interrupted_save_leaves_the_previous_agent(saved, monkeypatch):
    before = load_agent(saved)[0]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_agent(saved, _population(SMALL_AGENT, seed=1), SMALL_AGENT)
    monkeypatch.undo()
    jax.tree.map(np.testing.assert_array_equal, load_agent(saved)[0], before)


# ---------------------------------------------------------------------------------------------
# Training


def test_tiny_training_run_in_two_chunks():
    config = TrainConfig(num_updates=3, updates_per_chunk=2, **SMALL)  # chunks of 2 and 1 updates
    result = train(config, progress=False)
    assert result.num_seeds == 1
    assert set(result.metrics) == {"episode_return", "policy_loss", "value_loss", "entropy", "grad_norm"}
    for name, values in result.metrics.items():
        assert values.shape == (1, 3), name
        assert np.isfinite(values).all(), name
    returns = result.metrics["episode_return"]
    assert ((returns >= 0.0) & (returns <= 10.0)).all()
    # Two arms: the entropy of the policy lies in (0, log 2]; gradients are not zero.
    assert ((result.metrics["entropy"] > 0.0) & (result.metrics["entropy"] <= np.log(2.0) + 1e-6)).all()
    assert (result.metrics["grad_norm"] > 0.0).all()
    # Three different gradient steps, one per update.
    assert len(np.unique(result.metrics["policy_loss"])) == 3

    jax.tree.map(np.testing.assert_array_equal, result.seed_initial_params(0), init_state(config).params)
    changed = jax.tree.map(lambda a, b: bool((np.asarray(a) != np.asarray(b)).any()), result.params,
                           result.initial_params)  # fmt: skip
    assert all(jax.tree.leaves(changed))
    assert result.seconds > 0.0 and result.agent_steps_per_second > 0.0


def test_a_population_trained_together_equals_one_seed_runs():
    """Three seeds in one program = three one-seed runs with seeds 3, 4, 5 (own init, tasks, actions)."""
    config = TrainConfig(num_updates=2, updates_per_chunk=2, seed=3, num_seeds=3, **SMALL)
    population = train(config, progress=False)
    assert population.num_seeds == 3
    for index in range(3):
        alone = train(config.for_seed(index), progress=False)
        assert alone.num_seeds == 1 and config.for_seed(index).seed == 3 + index
        for together, single in zip(
            jax.tree.leaves(population.params), jax.tree.leaves(alone.params), strict=True
        ):
            np.testing.assert_allclose(
                np.asarray(together)[index], np.asarray(single)[0], rtol=1e-5, atol=1e-6
            )
        for name, values in population.metrics.items():
            np.testing.assert_allclose(
                values[index], alone.metrics[name][0], rtol=1e-5, atol=1e-6, err_msg=name
            )
    # Independent agents: different initialisations and different training curves.
    kernels = np.asarray(population.initial_params["params"]["policy"]["kernel"])
    assert not np.allclose(kernels[0], kernels[1])
    assert len({tuple(row) for row in population.metrics["episode_return"]}) == 3


@pytest.mark.parametrize(
    "fields, message",
    [(dict(num_seeds=0), "num_seeds must be >= 1"), (dict(num_seeds=1.5), "num_seeds must be an integer")],
)
def test_config_rejects_bad_seed_counts(fields, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**fields)


def test_config_seeds_and_for_seed():
    config = TrainConfig(seed=7, num_seeds=3)
    assert config.seeds == (7, 8, 9)
    assert config.for_seed(1) == TrainConfig(seed=8)
    with pytest.raises(ValueError, match="index must be < num_seeds"):
        config.for_seed(3)
    old_fields = TrainConfig().to_dict()
    del old_fields["num_seeds"]  # saved before the field existed: one seed, as then
    assert TrainConfig.from_dict(old_fields).num_seeds == 1


@pytest.mark.parametrize("anneal", [False, True])
def test_optimiser_step_sizes(anneal):
    """Adam on a constant gradient steps by its learning rate exactly (m / sqrt(v) = 1 after bias
    correction): constant 1e-2, or falling linearly from 1e-2 to 0 over the 4 updates."""
    from metabelief.train.state import optimiser

    config = TrainConfig(num_updates=4, learning_rate=1e-2, anneal_learning_rate=anneal)
    params = {"w": jnp.zeros(3)}
    transform = optimiser(config)
    state = transform.init(params)
    steps = []
    for _ in range(4):
        updates, state = transform.update({"w": jnp.full(3, 0.1)}, state, params)
        steps.append(-float(updates["w"][0]))
    expected = [1e-2 * (1 - t / 4) for t in range(4)] if anneal else [1e-2] * 4
    np.testing.assert_allclose(steps, expected, rtol=1e-4)  # Adam's eps: 1e-8 next to sqrt(v) = 0.1
