"""The lockstep rollout next to its floor: a bare flax LSTM scan of the same width and batch.

Measured in one process, after warm-up, median of repeats, compile time reported apart:

* ``floor``: ``OptimizedLSTMCell(H)`` + a linear head scanned over T steps of random inputs,
  N lanes; no environment, no sampling, no belief. No LSTM rollout can beat it.
* ``agent + env``: the agent sampling its actions in the environment, no belief;
* ``agent + env + belief``: the same with the exact belief updated in lockstep;
* ``+ probe statistics``: ``metabelief.rollout.probe_moments`` (all of the above and the streaming
  probe statistics of ``[hidden, belief features]`` on every task and step, nothing stored);
* ``rollout, all recorded``: ``metabelief.rollout.rollout`` keeping the whole trajectory;
* ``A2C update``: rollout + backprop through time + Adam, in agent steps per second (timed
  apart from the others).

Then, per memory model (``--cells``, default lstm gru rnn lru), its own floor (the cell and its
heads stepped over random inputs, ``agents.base.scan_steps``) and its A2C and PPO updates as
ratios to that floor, each update timed apart from the floor (``metabelief.bench.agent_cases``).

Usage: ``python benchmarks/rollout_floor.py [--num-tasks 4096] [--hidden 48] [--steps 100]
[--cells lstm gru rnn lru] [--cell-tasks 1024]``.
"""

from __future__ import annotations

import argparse
import dataclasses

import jax

import metabelief
from metabelief import rollout as lockstep
from metabelief import train
from metabelief.agents import agent_for
from metabelief.bench import agent_rates, lstm_floor, measure
from metabelief.experiments.probing import split_sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-tasks", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=48)
    parser.add_argument("--steps", type=int, default=100, help="episode length (the bandit's horizon)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--cells", nargs="*", default=["lstm", "gru", "rnn", "lru"])
    parser.add_argument("--cell-tasks", type=int, default=1024, help="tasks of the per-memory-model rows")
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
    rollout_args = (params, key, tasks)
    cases = {
        "floor: bare LSTM scan": lstm_floor(args.hidden, agent.num_actions, agent.input_size, n, steps),
        # Only the rewards are used: the belief and the stored trajectory are compiled away.
        "agent + env": (
            jax.jit(
                lambda p, k, t: lockstep.rollout(family, agent, p, k, t, track_belief=False).rewards.sum()
            ),
            rollout_args,
        ),
        "agent + env + belief": (
            jax.jit(lambda p, k, t: _belief_checksum(lockstep.rollout(family, agent, p, k, t))),
            rollout_args,
        ),
        "+ probe statistics": (
            jax.jit(lambda p, k, t: lockstep.probe_moments(family, agent, p, sizes, key=k, tasks=t)),
            rollout_args,
        ),
        "rollout, all recorded": (
            jax.jit(lambda p, k, t: lockstep.rollout(family, agent, p, k, t)),
            rollout_args,
        ),
    }
    device = jax.devices()[0]
    print(f"{device.platform} ({device.device_kind}), N = {n}, T = {steps}, H = {args.hidden}")
    print(f"{'case':24s} {'compile s':>10s} {'run ms':>9s} {'M steps/s':>10s} {'x floor':>8s}")
    # The update is timed apart: its large buffers, interleaved with the others, slowed whichever
    # case ran next (the floor, which made every ratio look better than it is).
    update = {"A2C update": (jax.jit(lambda s: train.update(s, config)), (train.init_state(config),))}
    results = measure(cases, args.rounds) | measure(update, args.rounds)
    floor = n * steps / results["floor: bare LSTM scan"][1]
    for name, (compile_seconds, seconds) in results.items():
        rate = n * steps / seconds
        print(
            f"{name:24s} {compile_seconds:10.2f} {1e3 * seconds:9.1f} {rate / 1e6:10.2f} {rate / floor:8.2f}"
        )
    print(f"\nper memory model, N = {args.cell_tasks}: M steps/s, x its own floor")
    for cell in args.cells:
        rates = agent_rates(cell, args.cell_tasks, steps, args.hidden, args.rounds)
        row = " | ".join(
            f"{name} {rate / 1e6:6.3f} ({rate / rates['floor']:.3f}x)" for name, rate in rates.items()
        )
        print(f"{cell:6s} {row}")


def _belief_checksum(trajectory: lockstep.Trajectory) -> jax.Array:
    return trajectory.rewards.sum() + trajectory.features.sum()


if __name__ == "__main__":
    main()
