"""Where each array lands on the mesh, and the pooled probe statistics, against hand-computed values.

``tests/test_sharding.py`` compares whole training and probe runs on 4 devices with one device;
these are the cheap checks under it. The references: the lane slice ``[d N/D, (d + 1) N/D)`` the
module's docstring promises device d, the first ``k`` of ``jax.devices()`` for a mesh of ``k``,
and statistics (count, mean, scatter about the mean) of the samples of all devices pooled by NumPy
in float64. The placements run in one subprocess with 4 simulated CPU devices and no compilation
of an agent.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from metabelief import sharding

NUM_DEVICES = 4
# Samples each device holds of each of the 2 splits: unequal, so the pooled mean must weigh them.
DEVICE_COUNTS = ((3, 1), (5, 2), (2, 6), (6, 3))
DIM = 3


def _samples() -> list[list[np.ndarray]]:
    """``[device][split]`` arrays ``[count, DIM]``, the mean far from 0 in each split."""
    rng = np.random.default_rng(11)
    return [
        [
            rng.normal(loc=3.0 * (split + 1), scale=1.0 + device, size=(count, DIM))
            for split, count in enumerate(row)
        ]
        for device, row in enumerate(DEVICE_COUNTS)
    ]


# ---------------------------------------------------------------------------------------------
# What runs in the subprocess


def _shards(array) -> dict:
    """Device id -> the [start, stop) of every axis that device holds."""
    return {
        str(shard.device.id): [
            [s.start or 0, s.stop if s.stop is not None else n]
            for s, n in zip(shard.index, array.shape, strict=True)
        ]
        for shard in array.addressable_shards
    }


def _worker(out_path: str) -> None:
    import jax.numpy as jnp  # noqa: PLC0415
    from jax.sharding import PartitionSpec  # noqa: PLC0415

    from metabelief import probes  # noqa: PLC0415

    assert jax.device_count() == NUM_DEVICES, jax.devices()
    mesh = sharding.task_mesh()
    facts = {"mesh_ids": [d.id for d in mesh.devices.flat], "all_ids": [d.id for d in jax.devices()]}
    facts["mesh2_ids"] = [d.id for d in sharding.task_mesh(2).devices.flat]

    tasks = jnp.arange(8 * 3, dtype=jnp.float32).reshape(8, 3)
    trajectory = jnp.arange(5 * 8, dtype=jnp.float32).reshape(5, 8)
    population = jnp.arange(4 * 2, dtype=jnp.float32).reshape(4, 2)
    placed = {
        "tasks": sharding.shard_tasks(tasks, mesh),
        "trajectory": sharding.shard_tasks(trajectory, mesh, axis=1),
        "seeds": sharding.shard_seeds(population, mesh),
        "replicated": sharding.replicate(population, mesh),
    }
    facts["shards"] = {name: _shards(array) for name, array in placed.items()}
    facts["values_kept"] = {
        name: bool(np.array_equal(np.asarray(array), np.asarray(source)))
        for (name, array), source in zip(
            placed.items(), (tasks, trajectory, population, population), strict=True
        )
    }

    # probe_moments from a key: the program it runs (spied on, so nothing is compiled) gets the
    # tasks split by lane and the parameters and key whole on every device.
    seen = {}

    def spy(family, agent, params, split_sizes, *, key, tasks, num_steps):
        seen.update(params=params, key=jax.random.key_data(key), tasks=tasks, split_sizes=split_sizes)

    assert hasattr(sharding, "_streamed_moments")
    sharding._streamed_moments = spy
    params = {"w": population}
    sharding.probe_moments(None, None, params, [6, 2], mesh, key=jax.random.key(0), tasks={"p": tasks})
    facts["streamed"] = {
        "tasks": _shards(seen["tasks"]["p"]),
        "params": _shards(seen["params"]["w"]),
        "key": _shards(seen["key"]),
        "split_sizes": list(seen["split_sizes"]),
    }

    # Per-device statistics of each split, stacked on a leading device axis, pooled by shard_map.
    per_device = [
        probes.Moments(
            count=jnp.asarray([len(z) for z in row], jnp.float32),
            mean=jnp.asarray(np.stack([z.mean(axis=0) for z in row]), jnp.float32),
            scatter=jnp.asarray(
                np.stack([(z - z.mean(axis=0)).T @ (z - z.mean(axis=0)) for z in row]), jnp.float32
            ),
        )
        for row in _samples()
    ]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *per_device)

    def body(moments):
        return sharding._pooled_over_devices(jax.tree.map(lambda leaf: leaf[0], moments))

    pooled = jax.jit(
        sharding._shard_map(body, mesh, in_specs=(PartitionSpec(sharding.AXIS),), out_specs=PartitionSpec())
    )(stacked)
    facts["pooled"] = {
        field: np.asarray(getattr(pooled, field)).tolist() for field in ("count", "mean", "scatter")
    }
    pathlib.Path(out_path).write_text(json.dumps(facts))


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    out_path = tmp_path_factory.mktemp("sharding_values") / "facts.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    flags = [flag for flag in env.get("XLA_FLAGS", "").split() if "device_count" not in flag]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={NUM_DEVICES}"])
    code = "import sys; from tests.test_sharding_values import _worker; _worker(sys.argv[1])"
    finished = subprocess.run(
        [sys.executable, "-c", code, str(out_path)],
        cwd=pathlib.Path(__file__).parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr[-4000:]
    return json.loads(out_path.read_text())


# ---------------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize(
    "num_seeds, mesh_size, spreads",
    [
        (1, 1, False),
        (1, 4, False),
        (2, 1, True),
        (2, 4, False),
        (4, 4, True),
        (8, 4, True),
        (6, 4, False),
        (4, 2, True),
    ],
)
def test_spreads_seeds_only_when_several_seeds_divide_over_the_devices(num_seeds, mesh_size, spreads):
    assert sharding.spreads_seeds(num_seeds, types.SimpleNamespace(size=mesh_size)) is spreads


def test_task_mesh_takes_the_first_devices(four_devices):
    assert four_devices["mesh_ids"] == four_devices["all_ids"] and len(four_devices["all_ids"]) == NUM_DEVICES
    assert four_devices["mesh2_ids"] == four_devices["all_ids"][:2]


@pytest.mark.parametrize(
    "name, shape, lane_axis",
    [("tasks", (8, 3), 0), ("trajectory", (5, 8), 1), ("seeds", (4, 2), 0)],
)
def test_device_d_holds_lanes_d_n_over_d_to_d_plus_one_n_over_d(four_devices, name, shape, lane_axis):
    ids = four_devices["mesh_ids"]
    width = shape[lane_axis] // NUM_DEVICES
    for d, device in enumerate(ids):
        expected = [[0, n] for n in shape]
        expected[lane_axis] = [d * width, (d + 1) * width]
        assert four_devices["shards"][name][str(device)] == expected, (name, d)
    assert four_devices["values_kept"][name]


def test_probe_moments_from_a_key_splits_the_tasks_and_copies_params_and_key(four_devices):
    streamed, ids = four_devices["streamed"], four_devices["mesh_ids"]
    assert streamed["tasks"] == {str(device): [[2 * d, 2 * d + 2], [0, 3]] for d, device in enumerate(ids)}
    assert streamed["params"] == {str(device): [[0, 4], [0, 2]] for device in ids}
    assert streamed["key"] == {str(device): [[0, 2]] for device in ids}
    assert streamed["split_sizes"] == [6, 2]


def test_replicate_puts_the_whole_array_on_every_device(four_devices):
    shards = four_devices["shards"]["replicated"]
    assert sorted(shards) == sorted(str(d) for d in four_devices["mesh_ids"])
    assert all(bounds == [[0, 4], [0, 2]] for bounds in shards.values())
    assert four_devices["values_kept"]["replicated"]


def test_pooled_statistics_equal_those_of_all_samples_together(four_devices):
    samples = _samples()
    pooled = {field: np.asarray(values) for field, values in four_devices["pooled"].items()}
    for split in range(len(DEVICE_COUNTS[0])):
        z = np.concatenate([row[split] for row in samples])
        centred = z - z.mean(axis=0)
        assert pooled["count"][split] == len(z)
        np.testing.assert_allclose(pooled["mean"][split], z.mean(axis=0), rtol=1e-5)
        np.testing.assert_allclose(pooled["scatter"][split], centred.T @ centred, rtol=1e-4, atol=1e-3)
        # The spread of the device means is part of the pooled scatter: summing the devices'
        # own scatters alone falls well short.
        within = sum(
            (row[split] - row[split].mean(axis=0)).T @ (row[split] - row[split].mean(axis=0))
            for row in samples
        )
        assert np.trace(centred.T @ centred) - np.trace(within) > 1.0
