"""Throughput of metabelief next to its anchors, measured in one process (``metabelief bench``).

For each number of tasks N, after warm-up, the median of interleaved repeats (compile time
apart) of:

* (a) ``env + belief``: the family stepped with random actions and its exact belief updated in
  lockstep, next to ``gymnax env-only``: gymnax's ``BernoulliBandit-misc`` stepped with random
  actions, no belief (when gymnax is installed: ``pip install "metabelief[bench]"``);
* (b) ``rollout + probe``: the full lockstep rollout (agent sampling, env, belief and streaming
  probe statistics), next to ``floor``: a bare flax ``OptimizedLSTMCell`` scan with a linear head
  of the same width and batch on random inputs, which no LSTM rollout can beat;
* (c) ``A2C update``: rollout, backprop through the episode and the optimiser step, in agent
  steps per second.

Both sides of a ratio draw their randomness the same way (keys or numbers drawn before the scan).
Then (d) a probe over ``probe_tasks x T`` (hidden, belief) pairs: tasks sampled and probed chunk
by chunk inside one ``lax.scan``, so device memory does not grow with the number of pairs. And
(e) ``seeds``: one A2C update of a population of S agents (``train.population_update``, vmapped
over seeds) for S in ``seed_counts`` at the same tasks per seed, each S timed apart, each as
agent steps per second over all seeds and as a ratio to S = 1 (S when the extra seeds
come free, 1 when they cost as much as separate runs). And (f) ``agents``: for each built-in
memory model, its A2C and PPO updates as ratios to its own floor, the agent's forward scan
(``agents.base.scan_steps``: the cell and its heads stepped over random inputs) of the same width
and batch, each update timed apart from the floor.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import statistics
import time
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

import metabelief
from metabelief import rollout as lockstep
from metabelief import train
from metabelief.agents import CELLS, agent_for
from metabelief.agents.base import scan_steps
from metabelief.cli import Parser, checked_out_dir, naming_flags
from metabelief.experiments.probing import split_sizes
from metabelief.tasks.validation import boolean, integer_at_least, integer_tuple

# Anchors measured on one NVIDIA H200 (jax 0.11.2, flax 0.12.10; 128 steps, random inputs), from
# the issue that asked for this benchmark: N -> M steps/s.
H200_ANCHORS = {
    "gymnax env-only": {1024: 78, 8192: 601, 65536: 3530, 262144: 10270},
    "floor LSTM(48)": {1024: 69, 8192: 383, 65536: 679, 262144: 843},
    "floor LSTM(256)": {1024: 40, 8192: 111, 65536: 155, 262144: 158},
}
CPU_SIZES, QUICK_SIZES = (1024, 4096, 16384, 65536), (1024, 4096)
ACCELERATOR_SIZES = (1024, 8192, 65536, 262144)
# BenchConfig field -> the `metabelief bench` flag that sets it.
FLAGS = {
    "sizes": "--sizes",
    "num_steps": "--steps",
    "hidden_size": "--hidden",
    "rounds": "--rounds",
    "probe_chunks": "--probe-chunks",
    "probe_chunk_size": "--probe-chunk-size",
    "seed_counts": "--seeds",
    "seed_tasks": "--seed-tasks",
    "agent_cells": "--cells",
    "agent_tasks": "--agent-tasks",
}


class _BareLSTM(nn.Module):
    hidden_size: int
    num_actions: int

    @nn.compact
    def __call__(self, carry, inputs):
        carry, hidden = nn.OptimizedLSTMCell(self.hidden_size)(carry, inputs)
        return carry, nn.Dense(self.num_actions)(hidden)


def lstm_floor(hidden_size: int, num_actions: int, input_size: int, num_tasks: int, num_steps: int):
    """The floor: a jitted ``(params, inputs [T, N, I]) -> sum of head outputs`` and its arguments."""
    network = _BareLSTM(hidden_size, num_actions)
    zeros = jnp.zeros((num_tasks, hidden_size))
    inputs = jax.random.normal(jax.random.key(1), (num_steps, num_tasks, input_size))
    params = network.init(jax.random.key(0), (zeros, zeros), inputs[0])

    def run(params, inputs):
        def step(carry, x):
            lstm, total = carry
            lstm, out = network.apply(params, lstm, x)
            return (lstm, total + out), None

        (_, total), _ = jax.lax.scan(step, ((zeros, zeros), jnp.zeros((num_tasks, num_actions))), inputs)
        return total

    return jax.jit(run), (params, inputs)


def agent_floor(agent, num_tasks: int, num_steps: int):
    """A memory model's floor: its forward scan (cell and heads, ``scan_steps``) over random
    inputs ``[T, N, I]``, a jitted ``(params, inputs) -> sum of logits and values``."""
    inputs = jax.random.normal(jax.random.key(1), (num_steps, num_tasks, agent.input_size))
    params = agent.init(jax.random.key(0))

    def run(params, inputs):
        _, logits, values, _ = scan_steps(agent, params, agent.initial_carry(num_tasks), inputs)
        return logits.sum() + values.sum()

    return jax.jit(run), (params, inputs)


def agent_cases(cell: str, num_tasks: int, num_steps: int, hidden_size: int) -> list[dict]:
    """(f) Groups timed apart: the memory model ``cell``'s floor, its A2C update, its PPO update
    (on the 2-armed bandit of horizon ``num_steps``, default A2C/PPO settings otherwise)."""
    config = train.TrainConfig(
        family_args=(("horizon", num_steps),), num_tasks=num_tasks, hidden_size=hidden_size, cell=cell
    )
    groups = [{"floor": agent_floor(config.make_agent(), num_tasks, num_steps)}]
    for algorithm in train.ALGORITHMS:
        algorithm_config = dataclasses.replace(config, algorithm=algorithm)
        update = jax.jit(lambda s, c=algorithm_config: train.update(s, c))
        groups.append({f"{algorithm.upper()} update": (update, (train.init_state(algorithm_config),))})
    return groups


def agent_rates(cell: str, num_tasks: int, num_steps: int, hidden_size: int, rounds: int) -> dict:
    """``agent_cases`` measured: agent steps per second of the floor and of each update."""
    measured = {}
    for group in agent_cases(cell, num_tasks, num_steps, hidden_size):
        measured |= measure(group, rounds)
    return {name: num_tasks * num_steps / run_s for name, (_, run_s) in measured.items()}


def agent_scaling(config: BenchConfig) -> dict:
    """(f) measured: per memory model, agent steps/s of its floor and updates and their ratios."""
    out = {}
    for cell in config.agent_cells:
        rates = agent_rates(cell, config.agent_tasks, config.num_steps, config.hidden_size, config.rounds)
        out[cell] = {
            "steps_per_second": rates,
            "ratio_to_floor": {
                name: rate / rates["floor"] for name, rate in rates.items() if name != "floor"
            },
        }
    return {"tasks": config.agent_tasks, "cells": out}


def format_agent_scaling(scaling: dict) -> str:
    """One line per memory model: its floor and its updates' rates and ratios to the floor."""
    lines = [f"memory models ({scaling['tasks']:,} tasks; updates as agent steps/s, ratio to own floor):"]
    for cell, case in scaling["cells"].items():
        rates, ratio = case["steps_per_second"], case["ratio_to_floor"]
        parts = [f"floor {rates['floor'] / 1e6:6.2f} M/s"]
        parts += [f"{name} {rates[name] / 1e6:6.3f} M/s ({ratio[name]:.3f}x)" for name in ratio]
        lines.append(f"  {cell:6s} " + " | ".join(parts))
    return "\n".join(lines)


def env_and_belief(family, num_tasks: int, num_steps: int):
    """(a) The family with its exact belief, random actions: the lockstep engine with
    ``UniformActions`` (every step's actions and keys drawn before the scan), nothing recorded."""

    def run(key):
        task_key, run_key = jax.random.split(key)
        tasks = lockstep.sample_tasks(family, task_key, num_tasks)
        actor = lockstep.UniformActions(family.num_actions)
        last = lockstep.lockstep(
            family, actor, key=run_key, tasks=tasks, num_steps=num_steps, record=False
        ).last
        return last.prev_reward.sum() + jax.vmap(family.belief_features)(last.belief).sum()

    return jax.jit(run), (jax.random.key(0),)


def gymnax_env_only(num_tasks: int, num_steps: int):
    """(a)'s anchor: gymnax's BernoulliBandit-misc, random actions, keys drawn before the scan."""
    import gymnax  # noqa: PLC0415 - optional: the `bench` extra

    env, env_params = gymnax.make("BernoulliBandit-misc")

    def run(key):
        reset_key, action_key, step_key = jax.random.split(key, 3)
        obs, states = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(reset_key, num_tasks), env_params
        )
        actions = jax.random.randint(action_key, (num_steps, num_tasks), 0, env.num_actions, jnp.int32)
        step_keys = jax.random.split(step_key, (num_steps, num_tasks))

        def step(carry, inputs):
            states, total = carry
            actions, keys = inputs
            # (obs, state, reward, done, info) before gymnax 1.0; (..., terminated, truncated, info) since
            stepped = jax.vmap(env.step, in_axes=(0, 0, 0, None))(keys, states, actions, env_params)
            return (stepped[1], total + stepped[2]), None

        (_, total), _ = jax.lax.scan(step, (states, jnp.zeros((num_tasks,), jnp.int32)), (actions, step_keys))
        return total.sum()

    return jax.jit(run), (jax.random.key(0),)


def probe_at_scale(family, agent, params, key: jax.Array, num_chunks: int, chunk_size: int):
    """(d) Probe statistics over ``num_chunks * chunk_size`` fresh tasks, one chunk per scan step."""
    sizes = split_sizes(chunk_size)

    def run(params, key):
        def chunk(moments, chunk_key):
            task_key, run_key = jax.random.split(chunk_key)
            tasks = lockstep.sample_tasks(family, task_key, chunk_size)
            more = lockstep.probe_moments(family, agent, params, sizes, key=run_key, tasks=tasks)
            return metabelief.probes.merge(moments, more), None

        feature_size = jax.eval_shape(
            family.belief_features, jax.eval_shape(family.belief_init, jnp.zeros((family.obs_size,)))
        ).shape[-1]
        empty = metabelief.probes.empty_moments(agent.hidden_size + feature_size, batch_shape=(len(sizes),))
        moments, _ = jax.lax.scan(chunk, empty, jax.random.split(key, num_chunks))
        return moments

    return jax.jit(run), (params, key)


def measure(cases: dict[str, tuple[Callable, tuple]], rounds: int) -> dict[str, tuple[float, float]]:
    """``name -> (compile seconds, median run seconds)`` of jitted ``fn(*args)`` cases.

    The cases run in interleaved rounds (each round runs every case once), so a slow spell of a
    shared machine hits all of them alike and the ratios stay meaningful.
    """
    compiled, compile_seconds = {}, {}
    for name, (fn, args) in cases.items():
        start = time.perf_counter()
        compiled[name] = (fn.lower(*args).compile(), args)
        compile_seconds[name] = time.perf_counter() - start
        jax.block_until_ready(compiled[name][0](*args))  # warm-up
    times = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (fn, args) in compiled.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - start)
    return {name: (compile_seconds[name], statistics.median(times[name])) for name in cases}


def throughput_cases(
    num_tasks: int, num_steps: int, hidden_size: int, with_gymnax: bool, with_training: bool
):
    """The cases measured at one N, on the 2-armed Bernoulli bandit of horizon ``num_steps``, in
    groups: each group's cases are timed in interleaved rounds, apart from the other groups (the A2C
    update's large buffers, interleaved with the others, slowed whichever case ran next)."""
    family = metabelief.make("bernoulli_bandit", num_arms=2, horizon=num_steps)
    agent = agent_for(family, hidden_size=hidden_size)
    params = agent.init(jax.random.key(0))
    tasks = lockstep.sample_tasks(family, jax.random.key(1), num_tasks)
    sizes = split_sizes(num_tasks)
    environment = {"env + belief": env_and_belief(family, num_tasks, num_steps)}
    if with_gymnax:
        environment["gymnax env-only"] = gymnax_env_only(num_tasks, num_steps)
    rollout_cases = {
        "floor": lstm_floor(hidden_size, agent.num_actions, agent.input_size, num_tasks, num_steps),
        "rollout + probe": (
            jax.jit(lambda p, k, t: lockstep.probe_moments(family, agent, p, sizes, key=k, tasks=t)),
            (params, jax.random.key(2), tasks),
        ),
    }
    groups = [environment, rollout_cases]
    if with_training:
        config = train.TrainConfig(
            family_args=(("horizon", num_steps),), num_tasks=num_tasks, hidden_size=hidden_size
        )
        groups.append(
            {"A2C update": (jax.jit(lambda s: train.update(s, config)), (train.init_state(config),))}
        )
    return groups


def seed_cases(num_tasks: int, num_steps: int, hidden_size: int, seed_counts: Sequence[int]) -> dict:
    """(e) One A2C update of S agents at once, ``num_tasks`` tasks each, for each S."""
    cases = {}
    for num_seeds in seed_counts:
        config = train.TrainConfig(
            family_args=(("horizon", num_steps),),
            num_tasks=num_tasks,
            hidden_size=hidden_size,
            num_seeds=num_seeds,
        )
        update = jax.jit(lambda s, config=config: train.population_update(s, config))
        cases[f"S = {num_seeds}"] = (update, (train.init_population(config),))
    return cases


def seed_scaling(config: BenchConfig) -> dict:
    """(e) measured: per S, seconds per update, agent steps/s over all seeds and the ratio to S = 1."""
    cases = seed_cases(config.seed_tasks, config.num_steps, config.hidden_size, config.seed_counts)
    # Each S timed apart: interleaved, the large population's buffers slowed the next case (S = 1
    # at 1,024 tasks per seed ran at half its speed after S = 16), flattering every ratio.
    measured = {name: measure({name: case}, config.rounds)[name] for name, case in cases.items()}
    steps = config.seed_tasks * config.num_steps
    out = {}
    for num_seeds, (compile_s, run_s) in zip(config.seed_counts, measured.values(), strict=True):
        out[str(num_seeds)] = {
            "compile_seconds": compile_s,
            "seconds": run_s,
            "steps_per_second": num_seeds * steps / run_s,
        }
    base = out[str(config.seed_counts[0])]["steps_per_second"]  # the first count, 1 by default
    for case in out.values():
        case["ratio_to_one_seed"] = case["steps_per_second"] / base
    return {"tasks_per_seed": config.seed_tasks, "seeds": out}


def has_gymnax() -> bool:
    try:
        import gymnax  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What ``run`` measures; each value is checked on construction (a ValueError names the field)."""

    sizes: tuple[int, ...]  # numbers of tasks N, each measured in turn
    num_steps: int = 128
    hidden_size: int = 48
    rounds: int = 5
    max_training_tasks: int = 65536  # BPTT memory grows with N x T; 0 never times the A2C update
    probe_chunks: int = 16
    probe_chunk_size: int = 65536
    seed_counts: tuple[int, ...] = (1, 4, 16)  # population sizes of (e); the first is the baseline
    seed_tasks: int = 1024  # tasks per seed in (e)
    agent_cells: tuple[str, ...] = ("lstm", "gru", "rnn", "lru")  # memory models of (f); none: skip
    agent_tasks: int = 1024  # tasks of (f)
    gymnax: bool = True

    def __post_init__(self):
        object.__setattr__(self, "sizes", integer_tuple("sizes", self.sizes, 1))
        object.__setattr__(
            self, "seed_counts", integer_tuple("seed_counts", self.seed_counts, 1, allow_empty=True)
        )
        cells = self.agent_cells
        if not isinstance(cells, tuple | list) or any(cell not in CELLS for cell in cells):
            raise ValueError(f"agent_cells must be a tuple of {', '.join(CELLS)}, got {cells!r}")
        object.__setattr__(self, "agent_cells", tuple(cells))
        names = (
            "num_steps",
            "hidden_size",
            "rounds",
            "probe_chunks",
            "probe_chunk_size",
            "seed_tasks",
            "agent_tasks",
        )
        for name in names:
            object.__setattr__(self, name, integer_at_least(name, getattr(self, name), 1))
        object.__setattr__(
            self, "max_training_tasks", integer_at_least("max_training_tasks", self.max_training_tasks, 0)
        )
        object.__setattr__(self, "gymnax", boolean("gymnax", self.gymnax))

    @classmethod
    def for_device(cls, quick: bool) -> BenchConfig:
        on_cpu = jax.devices()[0].platform == "cpu"
        quick = boolean("quick", quick)
        if quick:
            return cls(
                sizes=QUICK_SIZES,
                rounds=3,
                probe_chunks=4,
                probe_chunk_size=16384,
                seed_tasks=128,
                agent_tasks=256,
            )
        if on_cpu:  # BPTT at N = 65,536 x 128 steps would need ~16 GB of host memory
            return cls(sizes=CPU_SIZES, max_training_tasks=16384, seed_tasks=256)
        return cls(sizes=ACCELERATOR_SIZES)


def run(config: BenchConfig, progress: Callable[[str], None] = print) -> dict:
    """Measures every case at every size; returns a JSON-ready dict (rates in steps per second)."""
    with_gymnax = config.gymnax and has_gymnax()
    device = jax.devices()[0]
    results = {
        "device": f"{device.platform}: {device.device_kind} x{jax.device_count()}",
        "jax": jax.__version__,
        "config": dataclasses.asdict(config),
        "gymnax": with_gymnax,
        "sizes": {},
    }
    for num_tasks in config.sizes:
        groups = throughput_cases(
            num_tasks,
            config.num_steps,
            config.hidden_size,
            with_gymnax,
            with_training=num_tasks <= config.max_training_tasks,
        )
        measured = {
            name: timing for cases in groups for name, timing in measure(cases, config.rounds).items()
        }
        steps = num_tasks * config.num_steps
        results["sizes"][str(num_tasks)] = {
            name: {"compile_seconds": compile_s, "seconds": run_s, "steps_per_second": steps / run_s}
            for name, (compile_s, run_s) in measured.items()
        }
        progress(format_size(num_tasks, results["sizes"][str(num_tasks)]))

    family = metabelief.make("bernoulli_bandit", num_arms=2, horizon=config.num_steps)
    agent = agent_for(family, hidden_size=config.hidden_size)
    fn, args = probe_at_scale(
        family,
        agent,
        agent.init(jax.random.key(0)),
        jax.random.key(3),
        config.probe_chunks,
        config.probe_chunk_size,
    )
    (compile_s, run_s) = measure({"probe": (fn, args)}, rounds=1)["probe"]
    pairs = config.probe_chunks * config.probe_chunk_size * config.num_steps
    results["probe_at_scale"] = {
        "pairs": pairs,
        "tasks": config.probe_chunks * config.probe_chunk_size,
        "chunk_tasks": config.probe_chunk_size,
        "compile_seconds": compile_s,
        "seconds": run_s,
        "pairs_per_second": pairs / run_s,
        "peak_bytes_in_use": (device.memory_stats() or {}).get("peak_bytes_in_use"),
    }
    if config.seed_counts:
        results["seed_scaling"] = seed_scaling(config)
        progress(format_seed_scaling(results["seed_scaling"]))
    if config.agent_cells:
        results["agents"] = agent_scaling(config)
        progress(format_agent_scaling(results["agents"]))
    return results


def format_seed_scaling(scaling: dict) -> str:
    """One line per S: the population update's throughput and its ratio to one seed."""
    lines = [f"seeds (A2C update, {scaling['tasks_per_seed']:,} tasks per seed):"]
    for num_seeds, case in scaling["seeds"].items():
        lines.append(
            f"  S = {int(num_seeds):>3}: {case['seconds'] * 1e3:8.1f} ms per update, "
            f"{case['steps_per_second'] / 1e6:6.2f} M agent steps/s (all seeds), "
            f"{case['ratio_to_one_seed']:.2f}x one seed"
        )
    return "\n".join(lines)


def ratios(measured: dict) -> dict[str, float]:
    """The ratios the benchmark is judged by, at one N."""
    rate = {name: case["steps_per_second"] for name, case in measured.items()}
    out = {
        "rollout + probe / floor": rate["rollout + probe"] / rate["floor"],
    }
    if "A2C update" in rate:
        out["A2C update / floor"] = rate["A2C update"] / rate["floor"]
    if "gymnax env-only" in rate:
        out["env + belief / gymnax"] = rate["env + belief"] / rate["gymnax env-only"]
    return out


def format_size(num_tasks: int, measured: dict) -> str:
    cells = [f"N = {num_tasks:>7,}"]
    cells += [f"{name} {case['steps_per_second'] / 1e6:8.1f} M/s" for name, case in measured.items()]
    cells += [f"{name} {value:.2f}x" for name, value in ratios(measured).items()]
    return " | ".join(cells)


def table(results: dict) -> str:
    """Markdown table: M steps/s of every case and the ratios, one row per N."""
    names = list(next(iter(results["sizes"].values())).keys())
    ratio_names = ["env + belief / gymnax", "rollout + probe / floor", "A2C update / floor"]
    header = ["N", *(f"{name} (M/s)" for name in names), *ratio_names]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for size, measured in results["sizes"].items():
        ratio = ratios(measured)
        cells = [f"{int(size):,}"]
        cells += [f"{measured[n]['steps_per_second'] / 1e6:.1f}" if n in measured else "" for n in names]
        cells += [f"{ratio[n]:.2f}" if n in ratio else "" for n in ratio_names]
        rows.append("| " + " | ".join(cells) + " |")
    probe = results["probe_at_scale"]
    rows.append("")
    rows.append(
        f"probe at scale: {probe['pairs']:.2e} (hidden, belief) pairs ({probe['tasks']:,} tasks in "
        f"chunks of {probe['chunk_tasks']:,}) in {probe['seconds']:.1f} s = "
        f"{probe['pairs_per_second'] / 1e6:.1f} M pairs/s"
        + (
            f", peak device memory {probe['peak_bytes_in_use'] / 2**20:.0f} MiB"
            if probe["peak_bytes_in_use"]
            else ""
        )
    )
    if "seed_scaling" in results:
        rows += ["", format_seed_scaling(results["seed_scaling"])]
    if "agents" in results:
        rows += ["", format_agent_scaling(results["agents"])]
    return "\n".join(rows)


def plot(results: dict, path: pathlib.Path) -> None:
    """Throughput against N (log-log), with the H200 anchors as dashed lines."""
    from metabelief.experiments.plots import save, subplots  # noqa: PLC0415 - matplotlib only when plotting

    figure, axes = subplots(figsize=(7, 4.5))
    sizes = [int(size) for size in results["sizes"]]
    names = list(next(iter(results["sizes"].values())).keys())
    for name in names:
        points = [
            (n, results["sizes"][str(n)][name]["steps_per_second"])
            for n in sizes
            if name in results["sizes"][str(n)]
        ]
        axes.plot(*zip(*points, strict=True), marker="o", label=f"{name} ({results['device']})")
    for name, anchor in H200_ANCHORS.items():
        axes.plot(
            list(anchor),
            [1e6 * v for v in anchor.values()],
            linestyle="--",
            alpha=0.6,
            label=f"{name}, H200 anchor",
        )
    axes.set(
        xscale="log", yscale="log", xlabel="tasks N", ylabel="steps per second", title="metabelief throughput"
    )
    axes.legend(fontsize="x-small")
    save(figure, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser(prog="metabelief bench", description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="N in {1024, 4096} and a 1e7-pair probe: about 3 CPU-minutes (a few minutes on a 2-core CPU)",
    )
    parser.add_argument("--sizes", type=int, nargs="+", help="numbers of tasks N to measure")
    parser.add_argument("--steps", type=int, help="steps per episode (default 128)")
    parser.add_argument("--hidden", type=int, help="LSTM units (default 48)")
    parser.add_argument("--rounds", type=int, help="interleaved repeats; the median is reported")
    parser.add_argument("--probe-chunks", type=int, help="chunks of the probe at scale")
    parser.add_argument("--probe-chunk-size", type=int, help="tasks per chunk of the probe at scale")
    parser.add_argument(
        "--seeds", type=int, nargs="*", help="population sizes S of the seeds case (none: skip)"
    )
    parser.add_argument("--seed-tasks", type=int, help="tasks per seed in the seeds case")
    parser.add_argument(
        "--cells", nargs="*", help=f"memory models of the agents case, of {', '.join(CELLS)} (none: skip)"
    )
    parser.add_argument("--agent-tasks", type=int, help="tasks in the agents case")
    parser.add_argument("--no-gymnax", action="store_true", help="skip the gymnax anchor")
    parser.add_argument("--out", default="runs/bench", help="folder for bench.json and bench.png")
    args = parser.parse_args(argv)
    overrides = {
        "sizes": tuple(args.sizes) if args.sizes else None,
        "num_steps": args.steps,
        "hidden_size": args.hidden,
        "rounds": args.rounds,
        "probe_chunks": args.probe_chunks,
        "probe_chunk_size": args.probe_chunk_size,
        "seed_counts": tuple(args.seeds) if args.seeds is not None else None,
        "seed_tasks": args.seed_tasks,
        "agent_cells": tuple(args.cells) if args.cells is not None else None,
        "agent_tasks": args.agent_tasks,
    }
    try:  # every value, and the output folder, is checked before anything compiles
        with naming_flags(FLAGS):
            config = dataclasses.replace(
                BenchConfig.for_device(args.quick),
                **{k: v for k, v in overrides.items() if v is not None},
                gymnax=not args.no_gymnax,
            )
        out = checked_out_dir(pathlib.Path(args.out))
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {' '.join(str(error).split())}\n")
    if config.gymnax and not has_gymnax():
        print('gymnax is not installed (pip install "metabelief[bench]"): measuring without its anchor')
    results = run(config)
    (out / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out / "bench.png")
    print()
    print(f"{results['device']}, jax {results['jax']}, T = {config.num_steps}, LSTM({config.hidden_size})")
    print(table(results))
    print(f"\nwrote {out / 'bench.json'} and {out / 'bench.png'}")
    return 0
