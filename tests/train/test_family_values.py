"""Families as values: ``TrainConfig(family=instance)`` trains, saves and loads an unregistered family."""

from __future__ import annotations

import dataclasses
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

import metabelief
from metabelief.tasks import registry
from metabelief.tasks.bernoulli_bandit import BernoulliBandit
from metabelief.train import TrainConfig, load_agent, save_agent, train

TINY = dict(num_tasks=8, num_updates=2, updates_per_chunk=2, hidden_size=8)


# ---------------------------------------------------------------------------------------------
# A family written from scratch, registered nowhere: two Bernoulli arms with Beta priors.


@struct.dataclass
class CoinTask:
    probs: jax.Array  # float32[2]


@struct.dataclass
class CoinState:
    time: jax.Array  # int32[]


@struct.dataclass
class CoinBelief:
    alpha: jax.Array  # float32[2]
    beta: jax.Array  # float32[2]


@dataclasses.dataclass(frozen=True)
class TwoCoins(metabelief.TaskFamily):
    """Two arms, p_k ~ Beta(*prior); reward 1 with probability p of the pulled arm; no observation."""

    horizon: int = 5
    prior: tuple[float, float] = (1.0, 1.0)
    num_actions = 2
    obs_size = 0

    def sample_task(self, key):
        return CoinTask(probs=jax.random.beta(key, self.prior[0], self.prior[1], (2,), jnp.float32))

    def reset(self, key, task):
        return CoinState(time=jnp.zeros((), jnp.int32)), jnp.zeros((0,), jnp.float32)

    def step(self, key, task, state, action):
        reward = jax.random.bernoulli(key, task.probs[action]).astype(jnp.float32)
        state = CoinState(time=state.time + 1)
        return state, jnp.zeros((0,), jnp.float32), reward, state.time >= self.horizon

    def belief_init(self, obs):
        return CoinBelief(
            alpha=jnp.full((2,), self.prior[0], jnp.float32), beta=jnp.full((2,), self.prior[1], jnp.float32)
        )

    def belief_update(self, belief, obs, action, reward, next_obs):
        pulled = jax.nn.one_hot(action, 2, dtype=jnp.float32)
        return CoinBelief(alpha=belief.alpha + pulled * reward, beta=belief.beta + pulled * (1.0 - reward))

    def belief_features(self, belief):
        return belief.alpha / (belief.alpha + belief.beta)

    def true_features(self, task, state):
        return task.probs


def local_family_class():
    """A family class defined inside a function: it cannot be imported by name, so not rebuilt."""

    @dataclasses.dataclass(frozen=True)
    class LocalCoins(TwoCoins):
        pass

    return LocalCoins


@dataclasses.dataclass(frozen=True)
class DoublingCoins(TwoCoins):
    """Its ``__post_init__`` is not idempotent: rebuilt from its recorded fields it is another family."""

    def __post_init__(self):
        object.__setattr__(self, "horizon", 2 * self.horizon)


class UnhashableCoins(TwoCoins):
    __hash__ = None


@dataclasses.dataclass(frozen=True)
class LabelledCoins(TwoCoins):
    """A field with no JSON form: only the class can be recorded."""

    labels: frozenset = frozenset({"left", "right"})


@dataclasses.dataclass(frozen=True)
class ScriptCoins(TwoCoins):
    """As if defined in a script run as ``python script.py``."""


ScriptCoins.__module__ = "__main__"


@dataclasses.dataclass(frozen=True)
class DuckCoins:
    """TwoCoins without subclassing ``TaskFamily``: the contract's sizes and methods are enough."""

    horizon: int = 5
    prior: tuple[float, float] = (1.0, 1.0)
    num_actions = 2
    obs_size = 0
    sample_task = TwoCoins.sample_task
    reset = TwoCoins.reset
    step = TwoCoins.step
    belief_init = TwoCoins.belief_init
    belief_update = TwoCoins.belief_update
    belief_features = TwoCoins.belief_features
    true_features = TwoCoins.true_features


class NoFields(metabelief.TaskFamily):
    """A family that is not a dataclass: hashable by identity, recorded by class only."""

    horizon = 5
    num_actions = 2
    obs_size = 0
    sample_task = TwoCoins.sample_task
    reset = TwoCoins.reset
    step = TwoCoins.step
    belief_init = TwoCoins.belief_init
    belief_update = TwoCoins.belief_update
    belief_features = TwoCoins.belief_features
    true_features = TwoCoins.true_features
    prior = (1.0, 1.0)


def _population(config: TrainConfig, offset: float = 0.0):
    """Parameters ``[num_seeds, ...]`` unlike the loader's template, so loaded values come from the file."""
    keys = jax.vmap(jax.random.key)(jnp.arange(config.num_seeds) + 5)
    return jax.tree.map(lambda leaf: leaf + 0.25 + offset, jax.vmap(config.make_agent().init)(keys))


def _assert_same(tree_a, tree_b):
    assert jax.tree.structure(tree_a) == jax.tree.structure(tree_b)
    jax.tree.map(np.testing.assert_array_equal, tree_a, tree_b)


# ---------------------------------------------------------------------------------------------
# Construction


@pytest.mark.parametrize("family_class", [TwoCoins, DuckCoins])
def test_an_unregistered_instance_is_the_family_and_trains(family_class):
    family = family_class(horizon=5)
    assert all(registry.lookup(name) is not family_class for name in metabelief.families())
    config = TrainConfig(family=family, **TINY)
    assert config.make_family() is family
    assert config.family_name == family_class.__name__ and config.family_args == ()
    assert config.make_agent().num_actions == 2 and config.steps_per_update == 8 * 5
    assert hash(config) == hash(TrainConfig(family=family_class(horizon=5), **TINY))  # a static jit argument
    result = train(config, progress=False)
    for name, values in result.metrics.items():
        assert values.shape == (1, 2) and np.isfinite(values).all(), name
    assert ((result.metrics["episode_return"] >= 0) & (result.metrics["episode_return"] <= 5)).all()
    changed = jax.tree.map(lambda a, b: bool((a != b).any()), result.params, result.initial_params)
    assert all(jax.tree.leaves(changed))


def test_a_built_in_instance_trains_exactly_as_its_name():
    horizon = 5
    by_name = TrainConfig(family="bernoulli_bandit", family_args=(("horizon", horizon),), **TINY)
    by_value = TrainConfig(family=metabelief.make("bernoulli_bandit", horizon=horizon), **TINY)
    assert by_value.make_family() == by_name.make_family() and by_value.family_name == "BernoulliBandit"
    named, valued = train(by_name, progress=False), train(by_value, progress=False)
    _assert_same(valued.params, named.params)
    _assert_same(valued.metrics, named.metrics)


def test_family_args_with_an_instance_are_rejected():
    with pytest.raises(ValueError, match="family_args must be empty when family is an instance"):
        TrainConfig(family=TwoCoins(), family_args=(("horizon", 5),))
    assert TrainConfig(family=TwoCoins(), family_args={}).family_args == ()  # empty is fine


@pytest.mark.parametrize(
    "family",
    [
        TwoCoins(prior=[1.0, 1.0]),  # a list field: the frozen dataclass's hash fails
        UnhashableCoins(),
    ],
)
def test_an_unhashable_instance_is_rejected(family):
    with pytest.raises(ValueError, match="family must be hashable"):
        TrainConfig(family=family)


@pytest.mark.parametrize("family", [3, None, BernoulliBandit, TwoCoins, object(), dataclasses.replace])
def test_family_must_be_a_name_or_an_instance(family):
    with pytest.raises(
        ValueError, match="family must be a registered family name .* or a task family instance"
    ):
        TrainConfig(family=family)


# ---------------------------------------------------------------------------------------------
# Records: to_dict / from_dict and registry.family_spec / family_from_spec


def test_to_dict_records_the_class_and_fields_and_from_dict_rebuilds_them():
    config = TrainConfig(family=TwoCoins(horizon=7, prior=(2.0, 0.5)), hidden_size=8, seed=3)
    fields = json.loads(json.dumps(config.to_dict()))  # JSON-ready
    assert fields["family"] == {
        "class": f"{TwoCoins.__module__}.TwoCoins",
        "fields": {"horizon": 7, "prior": [2.0, 0.5]},
        "rebuildable": True,
    }
    assert fields["family_args"] == {} and fields["hidden_size"] == 8 and fields["seed"] == 3
    restored = TrainConfig.from_dict(fields)
    assert restored == config and hash(restored) == hash(config)
    assert type(restored.family) is TwoCoins and restored.family.prior == (2.0, 0.5)  # a tuple again
    # A name stays a name.
    assert TrainConfig(family_args=(("horizon", 5),)).to_dict()["family"] == "bernoulli_bandit"


@pytest.mark.parametrize(
    "family",
    [
        BernoulliBandit(num_arms=3, horizon=5, prior_a=2.0),
        metabelief.make("dependent_bandit", support=(0.2, 0.8), horizon=10),
        metabelief.make("gridworld", size=3, walls=((0, 0),), horizon=7),
        metabelief.make("tabular", num_tasks=2, num_states=3, num_actions=2, horizon=5),
        metabelief.make("two_step"),
    ],
    ids=lambda family: type(family).__name__,
)
def test_every_built_in_family_is_rebuilt_from_its_json_record(family):
    spec = json.loads(json.dumps(registry.family_spec(family)))
    assert spec["rebuildable"] is True
    assert registry.family_from_spec(spec) == family


def test_records_that_cannot_be_rebuilt_say_to_pass_the_family():
    local = local_family_class()(horizon=5)
    spec = registry.family_spec(local)
    assert spec["rebuildable"] is False and spec["fields"] == {"horizon": 5, "prior": [1.0, 1.0]}
    assert "<locals>" in spec["class"]
    no_fields = NoFields()
    assert registry.family_spec(no_fields) == {"class": f"{__name__}.NoFields", "rebuildable": False}
    base = {"class": f"{__name__}.TwoCoins", "fields": {"horizon": 5, "prior": [1.0, 1.0]}}
    broken = [
        (spec, "cannot be rebuilt from its record alone"),
        (registry.family_spec(no_fields), "cannot be rebuilt from its record alone"),
        ({**base, "class": "__main__.TwoCoins", "rebuildable": False}, "cannot be rebuilt"),
        ({**base, "class": "__main__.TwoCoins"}, "cannot be imported"),  # even when not marked
        ({**base, "class": "no_such_module_xyz.TwoCoins"}, "cannot be imported"),
        ({**base, "class": f"{__name__}.NoSuchCoins"}, "has no family class NoSuchCoins"),
        ({**base, "class": "collections.OrderedDict"}, "is not a dataclass task family"),
        ({**base, "class": f"{__name__}.DoublingCoins"}, "rebuilt from fields"),  # horizon 10, not 5
        ({**base, "fields": {"horizon": 5, "wings": 2}}, "do not fit family class"),
        ({"class": f"{BernoulliBandit.__module__}.BernoulliBandit", "fields": {"horizon": 0}}, "do not fit"),
    ]
    for record, message in broken:
        with pytest.raises(ValueError, match=re.escape(message)) as raised:
            registry.family_from_spec(record)
        assert "family=" in str(raised.value), record
        with pytest.raises(ValueError, match=re.escape(message)):
            TrainConfig.from_dict({"family": record, "hidden_size": 8})
    assert registry.family_spec(LabelledCoins()) == {
        "class": f"{__name__}.LabelledCoins",
        "rebuildable": False,
    }
    script = registry.family_spec(ScriptCoins())
    assert script["class"] == "__main__.ScriptCoins" and script["rebuildable"] is False
    with pytest.raises(ValueError, match="cannot be rebuilt from its record alone"):
        registry.family_from_spec(script)
    # A field added to the class since the record was made takes its default.
    assert registry.family_from_spec({**base, "fields": {"horizon": 4}}) == TwoCoins(horizon=4)
    # Handed back, each is checked against its record and used as it is.
    assert registry.family_from_spec(spec, family=local) is local
    assert registry.family_from_spec(registry.family_spec(no_fields), family=no_fields) is no_fields
    assert TrainConfig.from_dict({"family": spec}, family=local).family is local


@pytest.mark.parametrize(
    "family, message",
    [
        (TwoCoins(horizon=6), "does not match the recorded family"),  # other fields
        (BernoulliBandit(horizon=5), "does not match the recorded family class"),  # other class
        (NoFields(), "does not match the recorded family class"),
    ],
)
def test_a_family_handed_back_must_match_its_record(family, message):
    fields = TrainConfig(family=TwoCoins(horizon=5)).to_dict()
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig.from_dict(fields, family=family)


def test_a_family_handed_back_for_a_name_must_be_the_one_it_builds():
    fields = TrainConfig(family_args=(("horizon", 5),)).to_dict()
    assert TrainConfig.from_dict(fields, family=BernoulliBandit(horizon=5)).family == "bernoulli_bandit"
    with pytest.raises(ValueError, match="does not match the recorded family 'bernoulli_bandit'"):
        TrainConfig.from_dict(fields, family=BernoulliBandit(horizon=6))
    assert registry.family_from_spec("bernoulli_bandit") == BernoulliBandit()
    assert registry.family_spec("bernoulli_bandit") == "bernoulli_bandit"
    with pytest.raises(ValueError, match="does not match the recorded family 'bernoulli_bandit'"):
        registry.family_from_spec("bernoulli_bandit", family=BernoulliBandit(horizon=3))
    with pytest.raises(ValueError, match="family must be a task family instance or None"):
        TrainConfig.from_dict(fields, family="bernoulli_bandit")


# ---------------------------------------------------------------------------------------------
# Checkpoints


@pytest.mark.parametrize(
    "family", [TwoCoins(horizon=5, prior=(2.0, 1.0)), BernoulliBandit(horizon=5), DuckCoins(prior=(1.0, 3.0))]
)
def test_save_and_load_an_importable_instance_without_passing_it(tmp_path, family):
    config = TrainConfig(family=family, hidden_size=8, num_seeds=2)
    population = _population(config)
    directory = save_agent(tmp_path / "agent", population, config)
    recorded = json.loads((directory / "config.json").read_text())["family"]
    assert recorded["class"] == f"{type(family).__module__}.{type(family).__qualname__}"
    params, loaded = load_agent(directory)  # rebuilt from the record
    assert loaded == config and loaded.family is not family and type(loaded.family) is type(family)
    _assert_same(params, population)
    one, one_config = load_agent(directory, seed=1, family=family)  # handed back: used as it is
    assert one_config.family is family and one_config == config.for_seed(1)
    _assert_same(one, jax.tree.map(lambda leaf: leaf[1], population))


def test_save_and_load_a_local_instance_by_passing_it(tmp_path):
    family = local_family_class()(horizon=5)
    config = TrainConfig(family=family, hidden_size=8)
    population = _population(config)
    directory = save_agent(tmp_path / "agent", population, config)
    params, loaded = load_agent(directory, family=family)
    assert loaded == config and loaded.family is family
    _assert_same(params, population)

    config_path = directory / "config.json"
    with pytest.raises(ValueError, match=re.escape(f"{config_path} is not a valid TrainConfig")) as raised:
        load_agent(directory)
    assert "load_agent(path, family=...)" in str(raised.value)
    with pytest.raises(ValueError, match=re.escape(str(config_path))) as raised:
        load_agent(directory, family=local_family_class()(horizon=6))
    assert "does not match the recorded family" in str(raised.value)
    with pytest.raises(ValueError, match="does not match the recorded family class"):
        load_agent(directory, family=TwoCoins(horizon=5))  # same fields, another class


def test_a_family_with_fields_without_json_form_saves_by_class(tmp_path):
    family = LabelledCoins(horizon=5)
    config = TrainConfig(family=family, hidden_size=8)
    directory = save_agent(tmp_path / "agent", _population(config), config)  # still JSON
    assert json.loads((directory / "config.json").read_text())["family"]["rebuildable"] is False
    with pytest.raises(ValueError, match="family="):
        load_agent(directory)
    assert load_agent(directory, family=family)[1].family is family


def test_a_loaded_config_whose_parameters_differ_names_the_family(tmp_path):
    config = TrainConfig(family=TwoCoins(horizon=5), hidden_size=8)
    directory = save_agent(tmp_path / "agent", _population(config), config)
    path = directory / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"hidden_size": 16}))
    with pytest.raises(ValueError, match=r"for the config \(family TwoCoins, agent lstm, hidden_size 16"):
        load_agent(directory)
