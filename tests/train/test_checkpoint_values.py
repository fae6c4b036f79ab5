"""Checkpoints and family values under failure: the order of a save's writes, each load error's exact
message, and ``family_args`` as a value (its order does not matter, its contents do).

The independent references: hand-written expected messages and records (every field of the config
spelled out), parameters drawn with NumPy and compared bit for bit, and the trace of the file-system
calls (``os.fsync``/``os.replace``, read through ``/proc/self/fd``) that a save makes. Failures are
injected at the first and at the SECOND write: in ``os.replace``, in the writer before it writes, and
halfway through writing the bytes of the file.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib

import jax
import numpy as np
import pytest
from flax import serialization

from metabelief.tasks.bernoulli_bandit import BernoulliBandit
from metabelief.tasks.dependent_bandit import DependentBandit
from metabelief.train import TrainConfig, checkpoint, load_agent, save_agent

BASE = dict(family_args=(("horizon", 5),), hidden_size=4, num_seeds=2)
CONFIG = TrainConfig(**BASE)
DESCRIBED = "for the config (family bernoulli_bandit, agent lstm, hidden_size {}, num_seeds {})"


@functools.cache
def _shapes(config: TrainConfig):
    keys = jax.random.split(jax.random.key(0), config.num_seeds)
    return jax.eval_shape(jax.vmap(config.make_agent().init), keys)


def _population(config: TrainConfig, seed: int):
    """NumPy parameters ``[num_seeds, ...]`` of ``config``'s shapes, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: rng.standard_normal(leaf.shape).astype(leaf.dtype), _shapes(config))


def _same(tree_a, tree_b) -> bool:
    if jax.tree.structure(tree_a) != jax.tree.structure(tree_b):
        return False
    return all(
        np.asarray(a).shape == np.asarray(b).shape and np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b), strict=True)
    )


def _message(call) -> str:
    with pytest.raises(ValueError) as raised:
        call()
    return str(raised.value)


def _files(directory: pathlib.Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


# ---------------------------------------------------------------------------------------------
# The order of writes


def test_a_save_syncs_and_renames_the_parameters_before_the_config_both_from_the_same_folder(
    tmp_path, monkeypatch
):
    if not pathlib.Path("/proc/self/fd").is_dir():
        pytest.skip("reads the synced file's name from /proc/self/fd")
    directory = tmp_path / "agent"
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        name = pathlib.Path(os.readlink(f"/proc/self/fd/{fd}"))
        events.append(("fsync", name, name.read_bytes()))  # what reached the OS before the sync
        real_fsync(fd)

    def replace(source, target):
        events.append(("replace", pathlib.Path(source).resolve(), pathlib.Path(target).resolve()))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    population = _population(CONFIG, 1)
    assert save_agent(directory, population, CONFIG) == directory
    monkeypatch.undo()

    pid, folder = os.getpid(), directory.resolve()
    params_tmp, config_tmp = folder / f".params.msgpack.tmp-{pid}", folder / f".config.json.tmp-{pid}"
    assert [event[:2] for event in events] == [
        ("fsync", params_tmp),
        ("replace", params_tmp),
        ("fsync", config_tmp),
        ("replace", config_tmp),
    ]
    assert events[1][2] == folder / "params.msgpack" and events[3][2] == folder / "config.json"
    # Each file was complete when synced: the bytes synced are the bytes in place.
    final = _files(directory)
    assert sorted(final) == ["config.json", "params.msgpack"]  # no temporary left
    assert events[0][2] == final["params.msgpack"] and events[2][2] == final["config.json"]
    assert _same(load_agent(directory)[0], population)


class _Fail(Exception):
    pass


def _fail_at(monkeypatch, where: str, call: int) -> None:
    """Makes the ``call``-th write of a save fail: in ``os.replace``, in the writer before it writes,
    or halfway through writing the file's bytes."""
    if where == "replace":
        monkeypatch.setattr(os, "replace", _failing_on_call(os.replace, call))
    elif where == "writer":
        monkeypatch.setattr(
            checkpoint, "_write_atomically", _failing_on_call(checkpoint._write_atomically, call)
        )
    else:
        monkeypatch.setattr(checkpoint, "open", _half_writing_on_call(call), raising=False)


def _failing_on_call(real, call: int):
    """``real``, except that its ``call``-th call raises ``_Fail`` instead."""
    calls = []

    def failing(*args):
        calls.append(args)
        if len(calls) == call:
            raise _Fail(args)
        return real(*args)

    return failing


def _half_writing_on_call(call: int):
    """``open``, except that the ``call``-th file opened for writing writes half its bytes and fails."""
    calls = []

    class HalfWriter:
        def __init__(self, file):
            self.file = file

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, data):
            self.file.write(data[: len(data) // 2])
            self.file.flush()
            raise _Fail("interrupted")

    def opener(path, mode="r", *args, **kwargs):
        file = open(path, mode, *args, **kwargs)
        if "w" in mode:
            calls.append(path)
            if len(calls) == call:
                return HalfWriter(file)
        return file

    return opener


WHERE = ["replace", "writer", "half_written"]


@pytest.mark.parametrize("where", WHERE)
def test_a_first_save_failing_at_its_second_write_leaves_no_config_so_nothing_loads(
    tmp_path, monkeypatch, where
):
    directory, population = tmp_path / "agent", _population(CONFIG, 1)
    _fail_at(monkeypatch, where, call=2)
    with pytest.raises(_Fail):
        save_agent(directory, population, CONFIG)
    monkeypatch.undo()
    files = _files(directory)
    assert "config.json" not in files  # the config is the last file in place
    # The parameters, written first, are complete: every array of the population, bit for bit.
    written = serialization.msgpack_restore(files["params.msgpack"])
    assert _same(serialization.from_state_dict(population, written), population)
    assert _message(lambda: load_agent(directory)) == f"no saved agent at {directory}: config.json is missing"


@pytest.mark.parametrize("call", [1, 2])
@pytest.mark.parametrize("where", WHERE)
def test_a_save_over_the_same_config_failing_at_either_write_leaves_a_complete_agent(
    tmp_path, monkeypatch, where, call
):
    directory, before, after = tmp_path / "agent", _population(CONFIG, 1), _population(CONFIG, 2)
    save_agent(directory, before, CONFIG)
    previous = _files(directory)
    _fail_at(monkeypatch, where, call)
    with pytest.raises(_Fail):
        save_agent(directory, after, CONFIG)
    monkeypatch.undo()
    files = _files(directory)
    assert files["config.json"] == previous["config.json"]  # never half written
    if call == 1:  # nothing replaced yet
        assert files["params.msgpack"] == previous["params.msgpack"]
    params, config = load_agent(directory)
    assert config == CONFIG
    # Whole populations only: all the new arrays when the config's write failed (the parameters go
    # first), all the old ones when the first write failed.
    assert _same(params, after if call == 2 else before)


@pytest.mark.xfail(
    strict=True,
    reason="bug: params are replaced before the config, so a save of another config (same shapes) "
    "interrupted between the two renames loads the new parameters with the old config",
)
def test_a_save_of_another_config_failing_at_its_second_write_loads_nothing_mixed(tmp_path, monkeypatch):
    directory = tmp_path / "agent"
    other = TrainConfig(**BASE, seed=7, learning_rate=0.1)  # same parameter shapes
    old, new = _population(CONFIG, 1), _population(other, 2)
    save_agent(directory, old, CONFIG)
    _fail_at(monkeypatch, "replace", call=2)
    with pytest.raises(_Fail):
        save_agent(directory, new, other)
    monkeypatch.undo()
    try:
        params, config = load_agent(directory)
    except ValueError:
        return  # nothing loadable is acceptable
    assert (config == CONFIG and _same(params, old)) or (config == other and _same(params, new))


def test_a_family_argument_given_as_a_numpy_scalar_saves_and_loads(tmp_path):
    config = TrainConfig(**{**BASE, "family_args": {"horizon": np.int64(5)}})
    assert config == CONFIG
    save_agent(tmp_path / "agent", _population(config, 1), config)
    assert load_agent(tmp_path / "agent")[1] == CONFIG


def test_a_successful_save_over_another_replaces_both_files_and_creates_missing_folders(tmp_path):
    directory = tmp_path / "runs" / "deep" / "agent"  # parents created
    save_agent(directory, _population(CONFIG, 1), CONFIG)
    other = TrainConfig(**BASE, seed=7)
    new = _population(other, 2)
    assert save_agent(str(directory), new, other) == directory  # a str folder works too
    assert sorted(_files(directory)) == ["config.json", "params.msgpack"]
    params, config = load_agent(directory)
    assert config == other and _same(params, new)


# ---------------------------------------------------------------------------------------------
# Save errors: the parameters must be the config's population, checked before the folder exists


@pytest.mark.parametrize(
    "params_config, problem",
    [
        (TrainConfig(**{**BASE, "num_seeds": 3}), "3 seeds where num_seeds is 2"),
        (TrainConfig(**{**BASE, "hidden_size": 8}), "an array of shape (2, 8) where (2, 4) belongs"),
        (TrainConfig(**{**BASE, "cell": "gru"}), "a different set of parameters"),
    ],
    ids=["seeds", "shape", "structure"],
)
def test_save_names_parameters_that_are_not_the_configs_population(tmp_path, params_config, problem):
    directory = tmp_path / "agent"
    message = _message(lambda: save_agent(directory, _population(params_config, 0), CONFIG))
    assert message == f"params for {directory}: {problem} {DESCRIBED.format(4, 2)}"
    assert not directory.exists()


# ---------------------------------------------------------------------------------------------
# Load errors, each with its exact message


@pytest.fixture
def saved(tmp_path):
    return save_agent(tmp_path / "agent", _population(CONFIG, 1), CONFIG)


def test_load_names_a_missing_folder_a_file_in_its_place_and_each_missing_file(tmp_path, saved):
    nowhere = tmp_path / "nowhere"
    assert _message(lambda: load_agent(nowhere)) == f"no saved agent at {nowhere}: not a folder"
    a_file = tmp_path / "file"
    a_file.write_text("{}")
    assert _message(lambda: load_agent(a_file)) == f"no saved agent at {a_file}: not a folder"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _message(lambda: load_agent(empty)) == f"no saved agent at {empty}: config.json is missing"
    (saved / "params.msgpack").unlink()
    assert _message(lambda: load_agent(saved)) == f"no saved agent at {saved}: params.msgpack is missing"
    (saved / "config.json").unlink()
    (saved / "config.json").mkdir()  # a folder is not the file
    assert _message(lambda: load_agent(saved)) == f"no saved agent at {saved}: config.json is missing"


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "Expecting value: line 1 column 1 (char 0)"),
        (
            '{"family": "bernoulli_bandit", "hidden',
            "Unterminated string starting at: line 1 column 32 (char 31)",
        ),
        ("[1, 2]", "fields must be a dict of TrainConfig fields, got [1, 2]"),
        ('{"famly": 1, "wings": 2}', "unknown TrainConfig fields: famly, wings"),
        ('{"hidden_size": 0}', "hidden_size must be >= 1, got 0"),
        ('{"family": 3}', "family must be a registered family name or a family record, got 3"),
        (
            '{"family_args": [["horizon"]]}',
            "family_args must be (name, value) pairs with str names, got [['horizon']]",
        ),
        (
            '{"family_args": {"horizon": 5, "wings": 2}}',
            "family 'bernoulli_bandit' takes no argument 'wings'; "
            "it accepts: horizon, num_arms, prior_a, prior_b",
        ),
    ],
    ids=["empty", "truncated", "list", "unknown", "bad_value", "family_int", "args_pairs", "args_name"],
)
def test_load_names_a_config_that_is_not_a_train_config(saved, text, problem):
    (saved / "config.json").write_text(text)
    message = _message(lambda: load_agent(saved))
    assert message == f"{saved / 'config.json'} is not a valid TrainConfig: {problem}"


def test_load_names_an_unknown_family_with_the_known_ones(saved):
    (saved / "config.json").write_text('{"family": "no_such"}')
    message = _message(lambda: load_agent(saved))
    prefix = (
        f"{saved / 'config.json'} is not a valid TrainConfig: unknown family name 'no_such'; known families: "
    )
    assert message.startswith(prefix)
    known = message[len(prefix) :].split(", ")
    assert known == sorted(known) and {"bernoulli_bandit", "dependent_bandit", "two_step"} <= set(known)


@pytest.mark.parametrize(
    "content, problem",
    [
        (lambda raw: b"", "is truncated or corrupt: Unpack failed: incomplete input"),
        (lambda raw: raw[: len(raw) // 2], "is truncated or corrupt: Unpack failed: incomplete input"),
    ],
    ids=["empty", "half"],
)
def test_load_names_a_truncated_parameter_file(saved, content, problem):
    path = saved / "params.msgpack"
    path.write_bytes(content(path.read_bytes()))
    assert _message(lambda: load_agent(saved)) == f"{path} {problem}"


def test_load_names_parameters_of_another_structure(saved):
    path = saved / "params.msgpack"
    path.write_bytes(serialization.msgpack_serialize({"weights": np.zeros(3, np.float32)}))
    message = _message(lambda: load_agent(saved))
    assert message.startswith(f"{path} does not hold the parameters {saved / 'config.json'} describes: ")
    assert "{'params'}" in message  # the key the config's agent has and the file lacks


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"num_seeds": 3}, f"2 seeds where num_seeds is 3 {DESCRIBED.format(4, 3)}"),
        ({"hidden_size": 8}, f"an array of shape (2, 4) where (2, 8) belongs {DESCRIBED.format(8, 2)}"),
    ],
    ids=["seeds", "hidden_size"],
)
def test_load_names_a_config_whose_parameters_differ(saved, change, problem):
    path = saved / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | change))
    assert _message(lambda: load_agent(saved)) == f"{saved / 'params.msgpack'}: {problem}"


def test_load_picks_out_each_seed_and_names_a_wrong_one(saved):
    population = _population(CONFIG, 1)
    for index in (0, 1):  # seed 0 is one agent, not the population
        params, config = load_agent(saved, seed=index)
        assert _same(params, jax.tree.map(lambda leaf, index=index: leaf[index], population))
        assert config == TrainConfig(**{**BASE, "num_seeds": 1, "seed": index})
    params, config = load_agent(saved)
    assert _same(params, population) and config == CONFIG
    # The index is checked by TrainConfig.for_seed, whose argument is called index (no file named).
    for seed, message in [
        (2, "index must be < num_seeds (2), got 2"),
        (-1, "index must be >= 0, got -1"),
        (True, "index must be an integer, got True"),
        (1.0, "index must be an integer, got 1.0"),
    ]:
        assert _message(lambda seed=seed: load_agent(saved, seed=seed)) == message


def test_load_names_a_family_handed_back_that_does_not_match(tmp_path, saved):
    prefix = f"{saved / 'config.json'} is not a valid TrainConfig: "
    assert _message(lambda: load_agent(saved, family=BernoulliBandit(horizon=6))) == prefix + (
        "family BernoulliBandit(num_arms=2, horizon=6, prior_a=1.0, prior_b=1.0) does not match the "
        "recorded family 'bernoulli_bandit' with family_args {'horizon': 5}, which builds "
        "BernoulliBandit(num_arms=2, horizon=5, prior_a=1.0, prior_b=1.0)"
    )
    assert _message(lambda: load_agent(saved, family="bernoulli_bandit")) == prefix + (
        "family must be a task family instance or None, got 'bernoulli_bandit'"
    )
    assert load_agent(saved, family=BernoulliBandit(horizon=5))[1] == CONFIG  # the matching one loads

    family = BernoulliBandit(horizon=5)
    config = TrainConfig(**{**BASE, "family": family, "family_args": ()})
    directory = save_agent(tmp_path / "instance", _population(config, 3), config)
    prefix = f"{directory / 'config.json'} is not a valid TrainConfig: "
    recorded = "metabelief.tasks.bernoulli_bandit.BernoulliBandit"
    assert _message(lambda: load_agent(directory, family=BernoulliBandit(horizon=6))) == prefix + (
        f"family BernoulliBandit(num_arms=2, horizon=6, prior_a=1.0, prior_b=1.0) does not match the "
        f"recorded family {recorded} with fields "
        "{'num_arms': 2, 'horizon': 5, 'prior_a': 1.0, 'prior_b': 1.0}"
    )
    assert _message(lambda: load_agent(directory, family=DependentBandit(horizon=5))) == prefix + (
        "family DependentBandit(horizon=5) (class metabelief.tasks.dependent_bandit.DependentBandit) "
        f"does not match the recorded family class {recorded}"
    )
    params, loaded = load_agent(directory, family=family)
    assert loaded.family is family and loaded == config and _same(params, _population(config, 3))


def test_load_names_an_agent_missing_given_for_a_cell_or_of_another_class(saved):
    path = saved / "config.json"
    prefix = f"{path} is not a valid TrainConfig: "
    built_in = CONFIG.make_agent()
    assert _message(lambda: load_agent(saved, agent=built_in)) == prefix + (
        f"agent {type(built_in).__qualname__} was given, but the config was saved with the built-in cell"
    )
    fields = json.loads(path.read_text())
    for record, problem in [
        ({"class": "my_lab.MyAgent"}, None),
        (3, "agent must be recorded as None or {'class': ...}, got 3"),
        ({"name": "x"}, "agent must be recorded as None or {'class': ...}, got {'name': 'x'}"),
    ]:
        path.write_text(json.dumps(fields | {"agent": record}))
        if problem is None:
            assert _message(lambda: load_agent(saved)) == prefix + (
                "the config was saved with your own agent my_lab.MyAgent, which cannot be rebuilt from its "
                "record: pass it back (e.g. load_agent(path, agent=...))"
            )
            assert _message(lambda: load_agent(saved, agent=built_in)) == prefix + (
                f"agent {type(built_in).__module__}.{type(built_in).__qualname__} does not match the "
                "recorded agent class my_lab.MyAgent"
            )
        else:
            assert _message(lambda: load_agent(saved)) == prefix + problem
    path.write_text(json.dumps(fields))  # the record put back, the same folder loads
    assert _same(load_agent(saved)[0], _population(CONFIG, 1))


def test_an_agent_object_is_saved_by_its_class_path_and_loads_only_handed_back(tmp_path):
    agent = CONFIG.make_agent()
    config = TrainConfig(**BASE, agent=agent)
    directory = save_agent(tmp_path / "agent", _population(config, 4), config)
    recorded = json.loads((directory / "config.json").read_text())
    assert recorded["agent"] == {"class": "metabelief.agents.lstm.LSTMAgent"} and recorded["cell"] == "lstm"
    assert _message(lambda: load_agent(directory)) == (
        f"{directory / 'config.json'} is not a valid TrainConfig: the config was saved with your own agent "
        "metabelief.agents.lstm.LSTMAgent, which cannot be rebuilt from its record: pass it back "
        "(e.g. load_agent(path, agent=...))"
    )
    params, loaded = load_agent(directory, agent=agent, seed=1)
    assert loaded.agent is agent and loaded == config.for_seed(1)
    assert _same(params, jax.tree.map(lambda leaf: leaf[1], _population(config, 4)))


# ---------------------------------------------------------------------------------------------
# family_args as a value


SUPPORT_ARGS = dict(family="dependent_bandit", hidden_size=4)
ORDERS = [
    (("horizon", 5), ("support", (0.2, 0.8))),
    (("support", (0.2, 0.8)), ("horizon", 5)),
    {"support": [0.2, 0.8], "horizon": 5},  # as JSON gives it
    [["support", [0.2, 0.8]], ["horizon", 5]],
    {"horizon": 5, "support": np.array([0.2, 0.8])},
]


def test_configs_differing_only_in_the_order_of_family_args_are_one_value(tmp_path):
    configs = [TrainConfig(**SUPPORT_ARGS, family_args=args) for args in ORDERS]
    for config in configs:
        assert config.family_args == (("horizon", 5), ("support", (0.2, 0.8)))  # sorted, tuples
        assert config == configs[0] and hash(config) == hash(configs[0])
        assert config.make_family() == configs[0].make_family()
    assert len({*configs}) == 1
    texts = {json.dumps(config.to_dict()) for config in configs}
    assert len(texts) == 1
    assert json.loads(texts.pop())["family_args"] == {"horizon": 5, "support": [0.2, 0.8]}
    saved = []
    for index, config in enumerate(configs):
        directory = save_agent(tmp_path / str(index), _population(config, 0), config)
        saved.append((directory / "config.json").read_bytes())
        loaded = load_agent(directory)[1]
        assert loaded == configs[0] and hash(loaded) == hash(configs[0])
    assert len(set(saved)) == 1  # the same file whatever the order given


@pytest.mark.parametrize(
    "args",
    [
        (("horizon", 6), ("support", (0.2, 0.8))),
        (("horizon", 5), ("support", (0.8, 0.2))),  # order within a value is part of the value
        (("horizon", 5), ("support", (0.2, 0.7))),
        (("horizon", 5),),
    ],
)
def test_configs_with_other_family_args_values_differ(args):
    config = TrainConfig(**SUPPORT_ARGS, family_args=ORDERS[0])
    other = TrainConfig(**SUPPORT_ARGS, family_args=args)
    assert other != config and other.to_dict() != config.to_dict()
    assert other.make_family() != config.make_family()


def test_family_args_with_a_name_twice_are_refused_in_any_order():
    for pairs in ((("horizon", 5), ("horizon", 5)), [["horizon", 5], ["support", [0.5]], ["horizon", 6]]):
        with pytest.raises(ValueError) as raised:
            TrainConfig(**SUPPORT_ARGS, family_args=pairs)
        assert str(raised.value) == "family_args give horizon more than once"


def test_nested_lists_in_family_args_become_nested_tuples():
    config = TrainConfig(family="gridworld", family_args={"size": 3, "walls": [[0, 0], [1, 2]], "horizon": 7})
    assert config.family_args == (("horizon", 7), ("size", 3), ("walls", ((0, 0), (1, 2))))
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_to_dict_writes_every_field_and_from_dict_reads_it_back():
    config = TrainConfig(**SUPPORT_ARGS, family_args=ORDERS[1], seed=3, num_seeds=2, gamma=0.5)
    expected = {
        "family": "dependent_bandit",
        "family_args": {"horizon": 5, "support": (0.2, 0.8)},
        "cell": "lstm",
        "agent": None,
        "hidden_size": 4,
        "time_input": False,
        "algorithm": "a2c",
        "predictive_coef": 0.0,
        "ppo_clip": 0.2,
        "gae_lambda": 0.95,
        "ppo_epochs": 4,
        "ppo_minibatches": 4,
        "num_tasks": 1024,
        "num_updates": 600,
        "updates_per_chunk": 20,
        "checkpoints": 0,
        "learning_rate": 5e-3,
        "anneal_learning_rate": True,
        "max_grad_norm": 1.0,
        "gamma": 0.5,
        "value_coef": 0.05,
        "entropy_coef": 0.05,
        "seed": 3,
        "num_seeds": 2,
        "devices": 1,
    }
    assert config.to_dict() == expected
    assert list(config.to_dict()["family_args"]) == ["horizon", "support"]
    assert TrainConfig.from_dict(json.loads(json.dumps(expected))) == config
    assert TrainConfig.from_dict({}) == TrainConfig()  # missing fields take their defaults
    assert _message(lambda: TrainConfig.from_dict({}, family=BernoulliBandit(horizon=3))) == (
        "family BernoulliBandit(num_arms=2, horizon=3, prior_a=1.0, prior_b=1.0) does not match the "
        "recorded family 'bernoulli_bandit' with family_args {}, which builds "
        "BernoulliBandit(num_arms=2, horizon=100, prior_a=1.0, prior_b=1.0)"
    )  # the default family, also in the message
    instance = TrainConfig(family=BernoulliBandit(num_arms=3, horizon=5), hidden_size=4).to_dict()
    assert instance["family"] == {
        "class": "metabelief.tasks.bernoulli_bandit.BernoulliBandit",
        "fields": {"num_arms": 3, "horizon": 5, "prior_a": 1.0, "prior_b": 1.0},
        "rebuildable": True,
    }
    assert instance["family_args"] == {}
