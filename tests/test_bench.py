"""`metabelief bench` runs end to end at toy sizes; its chunked probe equals statistics of stored rollouts."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np

import metabelief
from metabelief import bench, probes
from metabelief.agents import agent_for
from metabelief.experiments.probing import split_sizes
from metabelief.rollout import rollout


def test_bench_writes_json_and_plot_with_every_case(tmp_path, capsys):
    argv = [
        "--quick",
        "--sizes",
        "128",
        "--steps",
        "8",
        "--rounds",
        "1",
        "--no-gymnax",
        "--probe-chunks",
        "2",
        "--probe-chunk-size",
        "64",
        "--seeds",
        "1",
        "2",
        "--seed-tasks",
        "16",
        "--cells",
        "gru",
        "lru",
        "--agent-tasks",
        "16",
        "--out",
        str(tmp_path),
    ]
    assert bench.main(argv) == 0
    results = json.loads((tmp_path / "bench.json").read_text())
    measured = results["sizes"]["128"]
    assert set(measured) == {"env + belief", "floor", "rollout + probe", "A2C update"}
    assert all(case["steps_per_second"] > 0 for case in measured.values())
    assert results["probe_at_scale"]["pairs"] == 2 * 64 * 8
    scaling = results["seed_scaling"]
    assert scaling["tasks_per_seed"] == 16 and set(scaling["seeds"]) == {"1", "2"}
    assert scaling["seeds"]["1"]["ratio_to_one_seed"] == 1.0
    two = scaling["seeds"]["2"]  # agent steps of both seeds over the seconds of one update
    assert two["steps_per_second"] == 2 * 16 * 8 / two["seconds"]
    assert two["ratio_to_one_seed"] == two["steps_per_second"] / scaling["seeds"]["1"]["steps_per_second"]
    agents = results["agents"]
    assert agents["tasks"] == 16 and list(agents["cells"]) == ["gru", "lru"]
    for case in agents["cells"].values():  # each update as a ratio to the same cell's floor
        rates = case["steps_per_second"]
        assert set(rates) == {"floor", "A2C update", "PPO update"}
        assert case["ratio_to_floor"] == {
            name: rate / rates["floor"] for name, rate in rates.items() if name != "floor"
        }
    assert (tmp_path / "bench.png").read_bytes().startswith(b"\x89PNG")
    out = capsys.readouterr().out
    assert "rollout + probe / floor" in out and "S =   2" in out and "memory models" in out


def test_chunked_probe_equals_moments_of_the_stored_rollouts():
    family = metabelief.make("bernoulli_bandit", num_arms=2, horizon=6)
    agent = agent_for(family, hidden_size=4)
    params = agent.init(jax.random.key(0))
    fn, args = bench.probe_at_scale(family, agent, params, jax.random.key(1), num_chunks=3, chunk_size=16)
    got = fn(*args)
    sizes = split_sizes(16)
    pairs_by_split = [[], [], []]
    for chunk_key in jax.random.split(jax.random.key(1), 3):
        task_key, run_key = jax.random.split(chunk_key)
        tasks = jax.vmap(family.sample_task)(jax.random.split(task_key, 16))
        trajectory = rollout(family, agent, params, run_key, tasks)
        pairs = jnp.concatenate([trajectory.hidden, trajectory.features], axis=-1)  # [T, 16, d]
        for split, part in enumerate(jnp.split(pairs, np.cumsum(sizes)[:-1], axis=1)):
            pairs_by_split[split].append(np.asarray(part, np.float64).reshape(-1, pairs.shape[-1]))
    for split, chunks in enumerate(pairs_by_split):
        z = np.concatenate(chunks)
        centred = z - z.mean(axis=0)
        np.testing.assert_allclose(got.count[split], len(z))
        np.testing.assert_allclose(got.mean[split], z.mean(axis=0), atol=1e-5)
        np.testing.assert_allclose(got.scatter[split], centred.T @ centred, rtol=1e-4, atol=1e-4)
    assert isinstance(got, probes.Moments)
