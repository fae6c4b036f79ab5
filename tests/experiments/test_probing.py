"""The probe protocol's data plumbing: task splits, statistics and samples against float64 NumPy.

``trajectory_moments`` and ``split_samples`` cut the task lanes (axis 1 of ``[T, N, ...]``) into
train / validation / test blocks; a lane in the wrong block would put one task on both sides of
a probe, so one test gives every lane values that name it and checks where each one lands.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief.agents import agent_for
from metabelief.experiments.probing import split_samples, split_sizes, trajectory_moments
from metabelief.rollout import Trajectory, probe_moments, replay, rollout

FAMILY = metabelief.make("bernoulli_bandit", horizon=6)  # belief features: 2 means, 2 stds
AGENT = agent_for(FAMILY, hidden_size=5)
NUM_TASKS = 10
SIZES = split_sizes(NUM_TASKS)  # (5, 2, 3): uneven, so a block boundary off by one shows


@pytest.fixture(scope="module")
def recorded():
    """A rollout of the network at ``params`` and the network at ``other`` replayed on it."""
    params, other = AGENT.init(jax.random.key(0)), AGENT.init(jax.random.key(1))
    tasks = jax.vmap(FAMILY.sample_task)(jax.random.split(jax.random.key(2), NUM_TASKS))
    trajectory = jax.jit(rollout, static_argnums=(0, 1))(FAMILY, AGENT, params, jax.random.key(3), tasks)
    replayed = jax.jit(replay, static_argnums=(0, 1))(FAMILY, AGENT, other, trajectory)
    return dict(params=params, other=other, trajectory=trajectory, replayed=replayed)


def reference_splits(trajectory: Trajectory, sizes) -> list[tuple[np.ndarray, np.ndarray]]:
    """float64 ``(hidden [n T, H], features [n T, F])`` of each block of lanes, rows paired."""
    hidden = np.asarray(trajectory.hidden, np.float64)
    features = np.asarray(trajectory.features, np.float64)
    bounds = np.cumsum([0, *sizes])
    return [
        (hidden[:, a:b].reshape(-1, hidden.shape[-1]), features[:, a:b].reshape(-1, features.shape[-1]))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]


def assert_moments_equal_reference(moments, trajectory: Trajectory, sizes) -> None:
    for split, (hidden, features) in enumerate(reference_splits(trajectory, sizes)):
        z = np.concatenate([hidden, features], axis=1)
        centred = z - z.mean(axis=0)
        scatter = centred.T @ centred
        assert float(moments.count[split]) == z.shape[0]
        np.testing.assert_allclose(np.asarray(moments.mean[split]), z.mean(axis=0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            np.asarray(moments.scatter[split]), scatter, rtol=1e-4, atol=1e-5 * np.abs(scatter).max()
        )


def sorted_rows(array: np.ndarray) -> np.ndarray:
    """Rows in lexicographic order: compares sample sets whatever their row order."""
    return array[np.lexsort(array.T[::-1])]


# ---------------------------------------------------------------------------------------------
# Split sizes


@pytest.mark.parametrize("num_tasks", [4, 5, 6, 7, 10, 63, 64, 1001])
def test_split_sizes_are_half_a_quarter_and_the_rest(num_tasks):
    train, validation, test = split_sizes(num_tasks)
    assert (train, validation) == (int(np.floor(num_tasks / 2)), int(np.floor(num_tasks / 4)))
    assert train + validation + test == num_tasks
    assert test >= validation >= 1 and train >= test  # the rest never starves the test split


# ---------------------------------------------------------------------------------------------
# Statistics and samples of a real rollout


def test_trajectory_moments_equal_float64_statistics_of_each_block_of_lanes(recorded):
    trajectory = recorded["trajectory"]
    moments = trajectory_moments(trajectory, SIZES)
    size = AGENT.hidden_size + trajectory.features.shape[-1]
    assert moments.count.shape == (3,) and moments.mean.shape == (3, size)
    assert moments.scatter.shape == (3, size, size)
    np.testing.assert_array_equal(np.asarray(moments.count), np.asarray(SIZES) * FAMILY.horizon)
    assert_moments_equal_reference(moments, trajectory, SIZES)
    # The splits differ (different tasks), so equal statistics could not come from one block.
    assert np.abs(np.diff(np.asarray(moments.mean), axis=0)).max() > 1e-3


@pytest.mark.parametrize("network", ["params", "other"])
def test_trajectory_moments_equal_the_streamed_probe_moments_of_the_same_history(recorded, network):
    """What ``probe_networks`` computes (replay, then statistics of the stored arrays) equals the
    statistics ``probe_moments`` streams while replaying the same history."""
    params, trajectory = recorded[network], recorded["trajectory"]
    replayed = trajectory if network == "params" else recorded["replayed"]
    stored = trajectory_moments(replayed, SIZES)
    streamed = jax.jit(probe_moments, static_argnums=(0, 1, 3))(
        FAMILY, AGENT, params, SIZES, history=trajectory
    )
    np.testing.assert_array_equal(np.asarray(stored.count), np.asarray(streamed.count))
    np.testing.assert_allclose(np.asarray(stored.mean), np.asarray(streamed.mean), rtol=1e-5, atol=1e-6)
    scale = np.abs(np.asarray(streamed.scatter)).max()
    np.testing.assert_allclose(
        np.asarray(stored.scatter), np.asarray(streamed.scatter), rtol=1e-4, atol=1e-5 * scale
    )
    assert scale > 0.1  # the hidden states vary: not two empty statistics agreeing


def test_split_samples_are_the_paired_rows_of_each_block_of_lanes(recorded):
    trajectory = recorded["trajectory"]
    samples = split_samples(trajectory, SIZES)
    assert len(samples) == 3
    for (hidden, features), (want_hidden, want_features), size in zip(
        samples, reference_splits(trajectory, SIZES), SIZES, strict=True
    ):
        assert hidden.shape == (size * FAMILY.horizon, AGENT.hidden_size)
        assert features.shape == (size * FAMILY.horizon, trajectory.features.shape[-1])
        got = np.concatenate([np.asarray(hidden), np.asarray(features)], axis=1).astype(np.float64)
        want = np.concatenate([want_hidden, want_features], axis=1)
        np.testing.assert_array_equal(sorted_rows(got), sorted_rows(want))


# ---------------------------------------------------------------------------------------------
# No lane crosses a split


def labelled_trajectory(num_steps: int, num_tasks: int) -> Trajectory:
    """A hand-made trajectory whose hidden state and features name their lane n and step t:
    ``hidden[t, n] = [n, t, n^2]``, ``features[t, n] = [1000 + n, -t]``."""
    t, n = np.meshgrid(np.arange(num_steps), np.arange(num_tasks), indexing="ij")  # [T, N]
    hidden = np.stack([n, t, n**2], axis=-1).astype(np.float32)
    features = np.stack([1000 + n, -t], axis=-1).astype(np.float32)
    zeros = np.zeros((num_steps, num_tasks), np.float32)
    return Trajectory(
        obs=jnp.zeros((num_steps + 1, num_tasks, 0)), actions=jnp.zeros((num_steps, num_tasks), jnp.int32),
        rewards=jnp.asarray(zeros), dones=jnp.zeros((num_steps, num_tasks), bool), hidden=jnp.asarray(hidden),
        memory=jnp.asarray(hidden), logits=jnp.zeros((num_steps, num_tasks, 2)), values=jnp.asarray(zeros),
        features=jnp.asarray(features), truth=jnp.zeros((num_steps, num_tasks, 1)),
    )  # fmt: skip


@pytest.mark.parametrize("num_steps, num_tasks", [(3, 12), (7, 5)])
def test_every_lane_lands_in_its_own_split_only(num_steps, num_tasks):
    """T != N, so a time-major flattening (rows of all lanes at one step) shows up as lanes of
    other splits; ``n^2`` makes the scatter of each block depend on exactly which lanes it holds."""
    trajectory = labelled_trajectory(num_steps, num_tasks)
    sizes = split_sizes(num_tasks)
    bounds = np.cumsum([0, *sizes])
    for split, (hidden, features) in enumerate(split_samples(trajectory, sizes)):
        hidden, features = np.asarray(hidden), np.asarray(features)
        lanes = np.arange(bounds[split], bounds[split + 1])
        # Each lane of the block, at every step, and nothing else.
        np.testing.assert_array_equal(np.sort(hidden[:, 0]), np.repeat(lanes, num_steps))
        np.testing.assert_array_equal(np.sort(hidden[:, 1]), np.repeat(np.arange(num_steps), lanes.size))
        # Each features row is paired with the hidden row of the same lane and step.
        np.testing.assert_array_equal(features[:, 0], 1000 + hidden[:, 0])
        np.testing.assert_array_equal(features[:, 1], -hidden[:, 1])
    moments = trajectory_moments(trajectory, sizes)
    assert_moments_equal_reference(moments, trajectory, sizes)
    for split in range(3):
        lanes = np.arange(bounds[split], bounds[split + 1], dtype=np.float64)
        np.testing.assert_allclose(float(moments.mean[split, 0]), lanes.mean(), rtol=1e-6)
        scatter = num_steps * ((lanes - lanes.mean()) ** 2).sum()
        np.testing.assert_allclose(float(moments.scatter[split, 0, 0]), scatter, rtol=1e-5, atol=1e-6)
