"""The lockstep rollout next to its floor: a bare flax LSTM scan of the same width and batch.

Measured in one process, after warm-up, median of repeats, compile time reported apart:

* ``floor``: ``OptimizedLSTMCell(H)`` + a linear head scanned over T steps of random inputs,
  N lanes; no environment, no sampling, no belief. No LSTM rollout can beat it.
* ``rollout+belief+probe``: ``metabelief.rollout.probe_moments`` (agent sampling, environment,
  exact belief and the streaming probe statistics, nothing stored);
* ``rollout (recorded)``: ``metabelief.rollout.rollout`` keeping the whole trajectory;
* ``A2C update``: rollout + backprop through time + Adam, in agent steps per second.

Usage: ``python benchmarks/rollout_floor.py [--num-tasks 4096] [--hidden 48] [--steps 100]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

import metabelief
from metabelief import rollout as lockstep
from metabelief import train
from metabelief.agents import agent_for
from metabelief.experiments.probing import split_sizes


class _BareLSTM(nn.Module):
    hidden_size: int
    num_actions: int

    @nn.compact
    def __call__(self, carry, inputs):
        carry, hidden = nn.OptimizedLSTMCell(self.hidden_size)(carry, inputs)
        return carry, nn.Dense(self.num_actions)(hidden)


def lstm_floor(hidden_size: int, num_actions: int, input_size: int, num_tasks: int, num_steps: int):
    """A jitted ``(params, inputs [T, N, I]) -> sum of head outputs`` and its arguments."""
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


def measure(fn, args, repeats: int) -> tuple[float, float]:
    """(compile seconds, median run seconds) of a jitted ``fn(*args)``."""
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_seconds = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return compile_seconds, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-tasks", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=48)
    parser.add_argument("--steps", type=int, default=100, help="episode length (the bandit's horizon)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n, steps = args.num_tasks, args.steps

    family = metabelief.make("bernoulli_bandit", num_arms=2, horizon=steps)
    agent = agent_for(family, hidden_size=args.hidden)
    params = agent.init(jax.random.key(0))
    tasks = jax.vmap(family.sample_task)(jax.random.split(jax.random.key(1), n))
    key = jax.random.key(2)
    sizes = split_sizes(n)
    config = dataclasses.replace(
        train.TrainConfig(family_args=(("horizon", steps),)), num_tasks=n, hidden_size=args.hidden
    )
    cases = {
        "floor: bare LSTM scan": lstm_floor(args.hidden, agent.num_actions, agent.input_size, n, steps),
        "rollout+belief+probe": (
            jax.jit(lambda p, k, t: lockstep.probe_moments(family, agent, p, sizes, key=k, tasks=t)),
            (params, key, tasks),
        ),
        "rollout (recorded)": (
            jax.jit(lambda p, k, t: lockstep.rollout(family, agent, p, k, t)),
            (params, key, tasks),
        ),
        "A2C update": (jax.jit(lambda s: train.update(s, config)), (train.init_state(config),)),
    }
    print(f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind}), N = {n}, T = {steps}, H = {args.hidden}")
    print(f"{'case':24s} {'compile s':>10s} {'run ms':>9s} {'M steps/s':>10s} {'x floor':>8s}")
    floor = None
    for name, (fn, fn_args) in cases.items():
        compile_seconds, seconds = measure(fn, fn_args, args.repeats)
        rate = n * steps / seconds
        floor = floor or rate
        print(f"{name:24s} {compile_seconds:10.2f} {1e3 * seconds:9.1f} {rate / 1e6:10.2f} {rate / floor:8.2f}")


if __name__ == "__main__":
    main()
