"""Sharding the task axis: training and probe statistics on 4 devices equal the one-device results.

This process's JAX already has its devices, so the multi-device runs happen in a subprocess with
4 simulated CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=4``). It computes each
result on one device and on the 4-device mesh and saves both; the tests here compare them.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metabelief import cli, sharding
from metabelief.train import TrainConfig

NUM_DEVICES = 4
# 2 chunks of 2 updates: the second chunk takes the sharded state the first one returned.
CONFIG = dict(family_args=(("horizon", 10),), hidden_size=8, num_tasks=64, num_updates=4, updates_per_chunk=2)
# How a population is split over the 4 devices (metabelief.sharding.spreads_seeds): 2 seeds, each
# seed's tasks split; 4 seeds, one whole seed per device.
LAYOUTS = {"tasks": 2, "seeds": 4}
SPLITS = (24, 16, 24)  # 16 lanes per device: the first two splits straddle devices


# ---------------------------------------------------------------------------------------------
# What runs in the subprocess


def _four_device_worker(out_dir: str) -> None:
    """Trains and probes on one device and on all 4, saving both results in ``out_dir``."""
    from metabelief import rollout
    from metabelief.train import init_population, loop, train

    assert jax.device_count() == NUM_DEVICES, jax.devices()
    out_dir = pathlib.Path(out_dir)
    arrays, facts = {}, {}

    def flops(config):  # the chunk train() compiled, from the compilation cache: its cost per device
        compiled = loop._train_chunk.lower(
            init_population(config), config, CONFIG["updates_per_chunk"]
        ).compile()
        cost = compiled.cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost)["flops"]

    results = {}
    for layout, num_seeds in LAYOUTS.items():
        configs = {
            "single": TrainConfig(**CONFIG, num_seeds=num_seeds),
            "sharded": TrainConfig(**CONFIG, num_seeds=num_seeds, devices=None),
        }
        for name, config in configs.items():
            results[layout, name] = result = train(config, progress=False)
            for index, leaf in enumerate(jax.tree.leaves(result.params)):
                arrays[f"{layout}/{name}/params/{index}"] = np.asarray(leaf)
            for index, leaf in enumerate(jax.tree.leaves(result.initial_params)):
                arrays[f"{layout}/{name}/initial/{index}"] = np.asarray(leaf)
            for metric, values in result.metrics.items():
                arrays[f"{layout}/{name}/metrics/{metric}"] = values
            state = init_population(config)
            facts[f"{layout}/{name}/flops"] = flops(config)
            facts[f"{layout}/{name}/state_devices"] = len(jax.tree.leaves(state)[0].sharding.device_set)
            facts[f"{layout}/{name}/result_devices"] = len(
                jax.tree.leaves(result.params)[0].sharding.device_set
            )
    # One seed, tasks split: the layout of one agent's update.
    facts["one_seed/share"] = flops(TrainConfig(**CONFIG, devices=None)) / flops(TrainConfig(**CONFIG))

    # The references run on one device: the single-device run's parameters live there.
    config, mesh = TrainConfig(**CONFIG), sharding.task_mesh()
    family, agent = config.make_family(), config.make_agent()
    single = results["tasks", "single"]
    trained, untrained = single.seed_params(1), single.seed_initial_params(1)
    tasks = jax.vmap(family.sample_task)(jax.random.split(jax.random.key(7), config.num_tasks))
    history = jax.jit(rollout.rollout, static_argnums=(0, 1))(
        family, agent, trained, jax.random.key(8), tasks
    )
    single = jax.jit(rollout.probe_moments, static_argnums=(0, 1, 3))
    moments = {
        "key": (
            single(family, agent, trained, SPLITS, key=jax.random.key(9), tasks=tasks),
            sharding.probe_moments(family, agent, trained, SPLITS, mesh, key=jax.random.key(9), tasks=tasks),
        ),
        "history": (
            single(family, agent, untrained, SPLITS, history=history),
            sharding.probe_moments(family, agent, untrained, SPLITS, mesh, history=history),
        ),
    }
    for source, pair in moments.items():
        for name, stats in zip(("single", "sharded"), pair, strict=True):
            for field in ("count", "mean", "scatter"):
                arrays[f"{source}/{name}/{field}"] = np.asarray(stats[field])
        facts[f"{source}/moment_devices"] = len(pair[1].scatter.sharding.device_set)

    def error(function, *args, **kwargs) -> str | None:
        try:
            function(*args, **kwargs)
        except ValueError as raised:
            return str(raised)
        return None

    facts["errors"] = {
        "odd_tasks": error(sharding.shard_tasks, jax.tree.map(lambda leaf: leaf[:62], tasks), mesh),
        "odd_splits": error(
            sharding.probe_moments, family, agent, untrained, (26, 14, 24), mesh, history=history
        ),
        "splits_do_not_add_up": error(
            sharding.probe_moments, family, agent, untrained, (24, 16, 16), mesh, history=history
        ),
        "odd_tasks_on_all_devices": error(train, TrainConfig(**CONFIG | dict(num_tasks=62), devices=None)),
        "too_many_devices": error(sharding.task_mesh, 8),
    }
    np.savez(out_dir / "arrays.npz", **arrays)
    (out_dir / "facts.json").write_text(json.dumps(facts))


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    """``(arrays, facts)`` the subprocess saved."""
    out_dir = tmp_path_factory.mktemp("four_devices")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    flags = f"--xla_force_host_platform_device_count={NUM_DEVICES}"
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flags}".strip()
    code = "import sys; from tests.test_sharding import _four_device_worker; _four_device_worker(sys.argv[1])"
    finished = subprocess.run(
        [sys.executable, "-c", code, str(out_dir)],
        cwd=pathlib.Path(__file__).parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert finished.returncode == 0, finished.stderr[-4000:]
    with np.load(out_dir / "arrays.npz") as arrays:
        return dict(arrays), json.loads((out_dir / "facts.json").read_text())


def _select(arrays: dict, prefix: str) -> dict:
    return {name.removeprefix(prefix): value for name, value in arrays.items() if name.startswith(prefix)}


# ---------------------------------------------------------------------------------------------
# Four devices against one


@pytest.mark.parametrize("layout", LAYOUTS)
def test_training_on_four_devices_equals_training_on_one(four_devices, layout):
    arrays, facts = four_devices
    single, sharded = (
        _select(arrays, f"{layout}/single/params/"),
        _select(arrays, f"{layout}/sharded/params/"),
    )
    assert single.keys() == sharded.keys() and len(single) > 0
    for name in single:
        assert single[name].shape[0] == LAYOUTS[layout]
        np.testing.assert_allclose(sharded[name], single[name], rtol=1e-5, atol=1e-6, err_msg=name)
    # Four updates moved every parameter array, so the equality is not that of two untrained networks.
    initial = _select(arrays, f"{layout}/sharded/initial/")
    assert all((sharded[name] != initial[name]).any() for name in initial)
    single, sharded = (
        _select(arrays, f"{layout}/single/metrics/"),
        _select(arrays, f"{layout}/sharded/metrics/"),
    )
    assert (
        set(single) == set(sharded) == {"episode_return", "policy_loss", "value_loss", "entropy", "grad_norm"}
    )
    for name in single:
        assert sharded[name].shape == (LAYOUTS[layout], CONFIG["num_updates"])
        np.testing.assert_allclose(sharded[name], single[name], rtol=1e-5, atol=1e-6, err_msg=name)
    # The state is on the mesh while training; the result comes back on one device.
    assert (
        facts[f"{layout}/single/state_devices"] == 1
        and facts[f"{layout}/sharded/state_devices"] == NUM_DEVICES
    )
    assert facts[f"{layout}/single/result_devices"] == facts[f"{layout}/sharded/result_devices"] == 1


@pytest.mark.parametrize("case", ["one_seed", "seeds"])
def test_each_device_runs_about_a_quarter_of_the_update(four_devices, case):
    _, facts = four_devices
    if case == "one_seed":
        share = facts["one_seed/share"]
    else:
        share = facts["seeds/sharded/flops"] / facts["seeds/single/flops"]
    # More means work replicated on every device; look for all-gathers in the update's HLO (e.g.
    # a reshape merging the time and lane axes of a [T, N, ...] array before a matmul).
    assert share < 0.35, f"each of 4 devices runs {share:.0%} of the one-device update"


@pytest.mark.parametrize("source", ["key", "history"])
def test_probe_moments_on_four_devices_equal_those_on_one(four_devices, source):
    arrays, facts = four_devices
    single, sharded = _select(arrays, f"{source}/single/"), _select(arrays, f"{source}/sharded/")
    num_steps = CONFIG["family_args"][0][1]
    np.testing.assert_array_equal(single["count"], np.asarray(SPLITS, np.float32) * num_steps)
    np.testing.assert_array_equal(sharded["count"], single["count"])
    np.testing.assert_allclose(sharded["mean"], single["mean"], rtol=1e-5, atol=1e-6)
    scale = np.abs(single["scatter"]).max()
    np.testing.assert_allclose(sharded["scatter"], single["scatter"], rtol=1e-5, atol=1e-6 * scale)
    assert scale > 1.0  # the hidden states vary: the statistics are not trivially equal
    assert facts[f"{source}/moment_devices"] == NUM_DEVICES


@pytest.mark.parametrize(
    "case, message",
    [
        ("odd_tasks", "number of tasks must be divisible by the 4 devices"),
        (
            "odd_splits",
            r"split_sizes must each be divisible by the 4 devices to replay a history, got \(26, 14",
        ),
        ("splits_do_not_add_up", "split_sizes must add up to the 64 tasks"),
        ("odd_tasks_on_all_devices", "number of tasks must be divisible by the 4 devices"),
        ("too_many_devices", "num_devices is 8, but only 4 cpu devices are available"),
    ],
)
def test_bad_layouts_on_four_devices_raise(four_devices, case, message):
    _, facts = four_devices
    raised = facts["errors"][case]
    assert raised is not None, f"{case} raised nothing"
    assert re.search(message, raised), raised


# ---------------------------------------------------------------------------------------------
# Checks that need no second device


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(devices=0), "devices must be >= 1"),
        (dict(devices=2.0), "devices must be an integer"),
        (dict(devices=3, num_tasks=64), r"num_tasks \(64\) must be divisible by devices \(3\)"),
    ],
)
def test_config_rejects_bad_devices(fields, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**fields)


def test_config_devices_round_trip_and_default():
    config = TrainConfig(devices=None, num_tasks=64)
    restored = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config and restored.devices is None
    old_fields = TrainConfig().to_dict()
    del old_fields["devices"]  # saved before the field existed: one device, as then
    assert TrainConfig.from_dict(old_fields).devices == 1


def test_task_mesh_checks_the_device_count():
    mesh = sharding.task_mesh()
    assert mesh.axis_names == ("tasks",) and mesh.size == jax.device_count()
    with pytest.raises(ValueError, match="num_devices must be >= 1"):
        sharding.task_mesh(0)
    with pytest.raises(ValueError, match=f"num_devices is {jax.device_count() + 1}, but only"):
        sharding.task_mesh(jax.device_count() + 1)


def test_shard_tasks_needs_a_lane_axis():
    with pytest.raises(ValueError, match="lanes on axis 1"):
        sharding.shard_tasks({"lanes": jnp.zeros(8), "scalar": jnp.zeros(8)}, sharding.task_mesh(1), axis=1)


def test_run_devices_flag_reaches_the_training_config(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "bandit", "--devices", "3"])
    assert exit_info.value.code == 2
    assert "must be divisible by devices (3)" in capsys.readouterr().err
