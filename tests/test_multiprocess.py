"""Multi-process for real: two JAX processes on this machine train as one mesh, equal to one process.

Two subprocesses each call ``sharding.initialize_distributed`` (coordinator on a free loopback
port, bound to 127.0.0.1 only), so ``jax.devices()`` lists one CPU device per process, and each
runs ``train(config)`` with ``devices=None``: the task lanes of every update are split over the two
processes and the gradients reduced across them (gloo CPU collectives over TCP). Both must end
with the parameters of the same training run in a single process.

Two layouts: one seed, whose task lanes are split over the processes (gradients all-reduced),
and a population of two seeds, one whole seed per process (no communication until the
parameters are gathered at the end).
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from metabelief.train import TrainConfig, train

NUM_PROCESSES = 2
# Two chunks of two updates: the second chunk starts from the state the first one left sharded.
CONFIG = dict(family_args=(("horizon", 5),), hidden_size=4, num_tasks=16, num_updates=4, updates_per_chunk=2)
TIMEOUT_S = 300  # for the whole two-process run; a hung collective must not hang the suite
LAYOUTS = {"tasks": 1, "seeds": 2}  # num_seeds: 1 splits the tasks, 2 spreads the seeds (spreads_seeds)
SIZES = {"process_count": 2, "device_count": 2, "local_device_count": 1, "mesh_size": 2}

try:  # jax.config raises AttributeError for an option this JAX does not have
    _CPU_COLLECTIVES = jax.config.jax_cpu_collectives_implementation
except AttributeError:
    _CPU_COLLECTIVES = None
NEEDS_CPU_COLLECTIVES = pytest.mark.skipif(
    _CPU_COLLECTIVES is None,
    reason=f"JAX {jax.__version__} has no jax_cpu_collectives_implementation (no cross-process CPU "
    "collectives)",
)


# ---------------------------------------------------------------------------------------------
# What runs in each process


def _worker(process_id: int, port: str, out_dir: str) -> None:
    """Joins the two-process run, trains on both processes' devices and saves the result."""
    from metabelief import sharding

    # Before any computation: the CPU backend is created with cross-process collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    sharding.initialize_distributed(
        coordinator_address=f"127.0.0.1:{port}",
        coordinator_bind_address=f"127.0.0.1:{port}",
        num_processes=NUM_PROCESSES,
        process_id=process_id,
        initialization_timeout=120,
        shutdown_timeout_seconds=60,
    )
    facts = {
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "mesh_size": sharding.task_mesh().size,
    }
    arrays = {}
    for layout, num_seeds in LAYOUTS.items():
        result = train(TrainConfig(**CONFIG, num_seeds=num_seeds, devices=None), progress=False)
        arrays |= {
            f"{layout}/params/{i}": np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(result.params))
        }
        arrays |= {f"{layout}/metrics/{name}": np.asarray(values) for name, values in result.metrics.items()}
    out_dir = pathlib.Path(out_dir)
    np.savez(out_dir / f"process_{process_id}.npz", **arrays)
    (out_dir / f"process_{process_id}.json").write_text(json.dumps(facts))
    jax.distributed.shutdown()


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """``[(arrays, facts)]`` saved by each process, after both finished."""
    out_dir = tmp_path_factory.mktemp("two_processes")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    # One CPU device per process, whatever the parent asked for.
    flags = [flag for flag in env.get("XLA_FLAGS", "").split() if "device_count" not in flag]
    env["XLA_FLAGS"] = " ".join(flags)
    port = _free_loopback_port()
    code = "import sys; from tests.test_multiprocess import _worker; _worker(int(sys.argv[1]), *sys.argv[2:])"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(process_id), str(port), str(out_dir)],
            cwd=pathlib.Path(__file__).parents[1],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for process_id in range(NUM_PROCESSES)
    ]
    outputs = []
    try:
        for worker in workers:
            outputs.append(worker.communicate(timeout=TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
        for worker in workers:
            worker.kill()
        logs = [worker.communicate()[0][-3000:] for worker in workers]
        pytest.fail(f"the two-process run took over {TIMEOUT_S} s:\n" + "\n---\n".join(logs))
    for process_id, (worker, output) in enumerate(zip(workers, outputs, strict=True)):
        assert worker.returncode == 0, f"process {process_id} failed:\n{output[-4000:]}"
    results = []
    for process_id in range(NUM_PROCESSES):
        with np.load(out_dir / f"process_{process_id}.npz") as arrays:
            results.append((dict(arrays), json.loads((out_dir / f"process_{process_id}.json").read_text())))
    return results


# ---------------------------------------------------------------------------------------------
# Two processes against one


@NEEDS_CPU_COLLECTIVES
@pytest.mark.parametrize("layout", LAYOUTS)
def test_training_on_two_processes_equals_training_in_one(two_processes, layout):
    single = train(TrainConfig(**CONFIG, num_seeds=LAYOUTS[layout]), progress=False)
    expected = [np.asarray(leaf) for leaf in jax.tree.leaves(single.params)]
    initial = [np.asarray(leaf) for leaf in jax.tree.leaves(single.initial_params)]
    for process, (arrays, facts) in enumerate(two_processes):
        # Each process saw both processes' devices, one of them its own, and the mesh spans both.
        assert {name: facts[name] for name in SIZES} == SIZES
        for index, want in enumerate(expected):
            got = arrays[f"{layout}/params/{index}"]
            assert got.shape == want.shape and want.shape[0] == LAYOUTS[layout]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"process {process} #{index}")
        for name, want in single.metrics.items():
            got = arrays[f"{layout}/metrics/{name}"]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"process {process} {name}")
    # Four updates moved every parameter array: not two untrained networks agreeing.
    assert all((want != start).any() for want, start in zip(expected, initial, strict=True))
