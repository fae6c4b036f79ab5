"""The task axis over several devices: a one-axis ``jax.sharding.Mesh`` named ``"tasks"``.

Every phase is vmapped over N task lanes that never interact, so a multi-device run splits the
lanes: with D devices, device d holds lanes ``[d N/D, (d + 1) N/D)`` of every lane-major array
(tasks ``[N, ...]`` on axis 0, trajectories ``[T, N, ...]`` on axis 1), and parameters and
optimiser state are replicated. Results equal the one-device run's up to float rounding:

* Training (``TrainConfig(devices=...)``) and ``probe_moments`` from a key run the one-device
  program, jitted with the lanes sharded. The rollout draws the random numbers of all ``[T, N]``
  lanes from one key; threefry is partitionable (each number depends only on its index), so the
  partitioner has each device draw its own slice of those very numbers and run its lanes through
  the scan, and it all-reduces the sums behind each mean over lanes (loss, gradients, metrics).
  ``shard_map`` could not keep the draws: each device would draw ``[T, N/D]`` numbers of its own.
* Training a population of seeds (``TrainConfig(num_seeds=S)``) spreads whole seeds instead when
  the device count divides S (``spreads_seeds``): the population's leading axis is split over
  the same mesh axis, and as seeds never interact the devices never communicate.
* ``probe_moments`` of a recorded history draws nothing, so it runs under ``shard_map``: each
  device replays its lanes of every split, accumulating their statistics with no communication,
  and the per-device ``Moments`` of each split are pooled exactly once at the end.

Multi-host: call ``initialize_distributed()`` first in every process; ``jax.devices()`` then lists
the devices of all processes and ``task_mesh()`` spans them; ``place`` builds each process's shards
from its own host copy, and ``to_host`` gathers results split over processes. Tested with CPU
devices simulated by ``XLA_FLAGS=--xla_force_host_platform_device_count`` and with two real
processes on one host (gloo CPU collectives over loopback, ``tests/test_multiprocess.py``); not
yet on several machines or GPUs.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from metabelief import probes, rollout
from metabelief.agents.base import Agent
from metabelief.tasks.base import PyTree, TaskFamily
from metabelief.tasks.validation import integer_at_least

AXIS = "tasks"  # the mesh axis the lanes are split over

if hasattr(jax, "shard_map"):  # jax >= 0.7

    def _shard_map(body, mesh, in_specs, out_specs):
        return jax.shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)

else:
    from jax.experimental.shard_map import shard_map

    def _shard_map(body, mesh, in_specs, out_specs):
        return shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)


def initialize_distributed(**kwargs) -> None:
    """Joins this process to a multi-host run: ``jax.distributed.initialize(**kwargs)``.

    Call it once in every process, before any other JAX call; on managed clusters (SLURM, TPU
    pods, ...) JAX finds the coordinator itself, elsewhere pass ``coordinator_address``,
    ``num_processes`` and ``process_id``. Afterwards ``task_mesh()`` spans every process's devices
    and each process runs the same program (e.g. ``train(config)`` with ``devices=None``).
    """
    jax.distributed.initialize(**kwargs)


def task_mesh(num_devices: int | None = None) -> Mesh:
    """A one-axis (``"tasks"``) mesh over the first ``num_devices`` of ``jax.devices()``, all if None."""
    devices = jax.devices()
    num_devices = len(devices) if num_devices is None else integer_at_least("num_devices", num_devices, 1)
    if num_devices > len(devices):
        available = f"{len(devices)} {devices[0].platform} devices"
        raise ValueError(f"num_devices is {num_devices}, but only {available} are available")
    return Mesh(np.asarray(devices[:num_devices]), (AXIS,))


def spreads_seeds(num_seeds: int, mesh: Mesh) -> bool:
    """Whether training spreads whole seeds over ``mesh`` rather than each seed's tasks: when
    there are several seeds and the device count divides their number (no communication)."""
    return num_seeds > 1 and num_seeds % mesh.size == 0


def shard_tasks(tree: PyTree, mesh: Mesh, axis: int = 0) -> PyTree:
    """``tree`` with the lane axis ``axis`` of every array split over ``mesh``, other axes whole.

    ``axis`` is 0 for tasks and keys ``[N, ...]``, 1 for a ``Trajectory`` ``[T, N, ...]``. Places
    concrete arrays; inside ``jit`` it is a sharding constraint.
    """
    for leaf in jax.tree.leaves(tree):
        if leaf.ndim <= axis or leaf.shape[axis] % mesh.size:
            raise ValueError(
                f"the number of tasks must be divisible by the {mesh.size} devices, got an array of "
                f"shape {leaf.shape} with lanes on axis {axis}"
            )
    spec = PartitionSpec(*[None] * axis, AXIS)
    return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, spec))


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """A full copy of ``tree`` on every device of ``mesh`` (parameters, optimiser state, keys)."""
    return place(tree, NamedSharding(mesh, PartitionSpec()))


def shard_seeds(tree: PyTree, mesh: Mesh) -> PyTree:
    """``tree`` (a population, every leaf ``[S, ...]``) with whole seeds split over ``mesh``."""
    return place(tree, NamedSharding(mesh, PartitionSpec(AXIS)))


def place(tree: PyTree, sharding: NamedSharding) -> PyTree:
    """``jax.device_put(tree, sharding)`` that also works when ``sharding`` spans other processes'
    devices (multi-host): every process holds the same host values, and each builds the shards of
    its own devices from them. Key arrays travel as their raw key data."""
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def place_leaf(leaf):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = place_leaf(jax.random.key_data(leaf))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(place_leaf, tree)


def to_host(tree: PyTree) -> PyTree:
    """The whole value of every array of ``tree`` as NumPy, in every process (arrays split over
    other processes' devices are gathered first)."""
    from jax.experimental import multihost_utils  # noqa: PLC0415 - only for arrays across processes

    def fetch(leaf):
        if leaf.is_fully_addressable or leaf.is_fully_replicated:
            return np.asarray(leaf)
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree.map(fetch, tree)


def probe_moments(
    family: TaskFamily,
    agent: Agent,
    params: PyTree,
    split_sizes: Sequence[int],
    mesh: Mesh,
    *,
    key: jax.Array | None = None,
    tasks: PyTree | None = None,
    num_steps: int | None = None,
    history: rollout.Trajectory | None = None,
) -> probes.Moments:
    """``metabelief.rollout.probe_moments`` with the lanes split over ``mesh``: the same statistics.

    From ``key`` and ``tasks`` (N divisible by the device count), the streaming rollout is
    partitioned by lane and each step's statistics are reduced across devices. From ``history``,
    each split of lanes is spread evenly over the devices (so every split size must be divisible
    by the device count): device d replays lanes ``[d n_s/D, (d + 1) n_s/D)`` of each split s, and
    the devices' statistics of each split are pooled at the end.

    Returns:
      ``Moments`` stacked over the splits, replicated on ``mesh``.
    """
    split_sizes = tuple(int(size) for size in split_sizes)
    params = replicate(params, mesh)
    if history is None:
        key, tasks = replicate(key, mesh), shard_tasks(tasks, mesh)
        return _streamed_moments(
            family, agent, params, split_sizes, key=key, tasks=tasks, num_steps=num_steps
        )
    num_tasks = history.actions.shape[1]
    if sum(split_sizes) != num_tasks:
        raise ValueError(f"split_sizes must add up to the {num_tasks} tasks, got {split_sizes}")
    if any(size % mesh.size for size in split_sizes):
        raise ValueError(
            f"split_sizes must each be divisible by the {mesh.size} devices to replay a history, "
            f"got {split_sizes}"
        )
    return _replayed_moments(family, agent, mesh, split_sizes, params, shard_tasks(history, mesh, axis=1))


_streamed_moments = jax.jit(rollout.probe_moments, static_argnums=(0, 1, 3), static_argnames="num_steps")


@jax.jit(static_argnums=(0, 1, 2, 3))
def _replayed_moments(
    family: TaskFamily,
    agent: Agent,
    mesh: Mesh,
    split_sizes: tuple[int, ...],
    params: PyTree,
    history: rollout.Trajectory,
) -> probes.Moments:
    bounds = np.cumsum([0, *split_sizes])
    splits = [
        jax.tree.map(lambda leaf, start=start, stop=stop: leaf[:, start:stop], history)
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True)
    ]  # one [T, n_s, ...] trajectory per split, each sharded on its lanes
    local_sizes = tuple(size // mesh.size for size in split_sizes)

    def per_device(params, splits):
        local = jax.tree.map(lambda *blocks: jnp.concatenate(blocks, axis=1), *splits)  # [T, N/D, ...]
        moments = rollout.probe_moments(family, agent, params, local_sizes, history=local)
        return _pooled_over_devices(moments)

    lanes = PartitionSpec(None, AXIS)
    return _shard_map(per_device, mesh, in_specs=(PartitionSpec(), lanes), out_specs=PartitionSpec())(
        params, splits
    )


def _pooled_over_devices(moments: probes.Moments) -> probes.Moments:
    """Each split's statistics over the samples of all devices (Chan et al.'s merge, all at once).

    Scatter about the pooled mean = sum over devices of (scatter about the device mean
    + count * (device mean - pooled mean)(device mean - pooled mean)^T).
    """
    count = jax.lax.psum(moments.count, AXIS)  # [S]
    mean = jax.lax.psum(moments.count[..., None] * moments.mean, AXIS) / count[..., None]
    offset = moments.mean - mean  # [S, d]
    spread = moments.count[..., None, None] * offset[..., :, None] * offset[..., None, :]
    return probes.Moments(count=count, mean=mean, scatter=jax.lax.psum(moments.scatter + spread, AXIS))
