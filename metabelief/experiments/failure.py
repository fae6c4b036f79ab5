"""``metabelief run failure``: an agent carries the posterior under its TRAINING prior.

The belief view predicts where a meta-trained agent fails: it has learnt the Bayes filter of the
task distribution it was trained on, so on tasks from another prior it keeps updating as if the
old prior held. The LSTM is trained on the dependent two-armed bandit with p in {0.1, 0.9} (arm 0
pays p, arm 1 pays 1 - p), 100 pulls, and tested on:

* ``in distribution``: p in {0.1, 0.9} again;
* ``support (0.4, 0.6)``: p in {0.4, 0.6}, far harder to tell apart;
* ``support (0.1, 0.5)``: an asymmetric prior, under which the test and the training posteriors
  order histories differently (not just by a monotone reshaping of the same evidence count);
* ``p ~ U[0, 1]``: the continuous prior;
* ``past the horizon``: p in {0.1, 0.9} for twice the training episode length.

For each: (a) the return gap to the Bayes-optimal agent of the TEST prior (exact dynamic
programming, ``metabelief.baselines.bayes_optimal``); (b) held-out R^2 of a linear read-out of the
hidden state for the posterior mean of p under the training prior and under the test prior,
computed on the same test histories; (c) the same figures in distribution, where the agent is fine.
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import numpy as np

from metabelief import baselines, probes, train
from metabelief.experiments import output, plots, protocol
from metabelief.experiments.probing import split_sizes, trajectory_moments
from metabelief.rollout import replay_jit, rollout, split_lanes
from metabelief.tasks import dependent_bandit

NAME = "failure"
SUMMARY = "train on p in {0.1, 0.9}; test on other priors and past the horizon: return gap, whose posterior"

TRAIN_SUPPORT = (0.1, 0.9)


@dataclasses.dataclass(frozen=True)
class FailureConfig:
    """The experiment; ``train`` holds the agent and A2C settings."""

    train: train.TrainConfig = train.TrainConfig(
        family="dependent_bandit",
        family_args=(("horizon", 100), ("support", TRAIN_SUPPORT)),
        num_tasks=1024,
        num_updates=400,
        updates_per_chunk=25,
        learning_rate=5e-3,
    )
    eval_tasks: int = 4096
    horizon_factor: int = 2  # "past the horizon" runs this many training horizons
    mlp_steps: int = 2000

    def __post_init__(self):
        protocol.check_eval_tasks(self.eval_tasks)
        if self.horizon_factor < 2:
            raise ValueError(f"horizon_factor must be >= 2, got {self.horizon_factor!r}")

    @classmethod
    def quick(cls) -> FailureConfig:
        """A smoke-test size: seconds, not minutes; the findings are not expected to hold."""
        base = cls()
        quick_train = dataclasses.replace(
            base.train,
            family_args=(("horizon", 20), ("support", TRAIN_SUPPORT)),
            num_tasks=128,
            num_updates=20,
            updates_per_chunk=10,
        )
        return cls(train=quick_train, eval_tasks=64, mlp_steps=100)


def test_conditions(horizon: int, horizon_factor: int) -> dict[str, tuple]:
    """name -> (test family, Bayes-optimal family, number of steps)."""
    longer = dependent_bandit(horizon=horizon * horizon_factor, support=TRAIN_SUPPORT)
    conditions = {
        "in distribution": dependent_bandit(horizon=horizon, support=TRAIN_SUPPORT),
        "support (0.4, 0.6)": dependent_bandit(horizon=horizon, support=(0.4, 0.6)),
        "support (0.1, 0.5)": dependent_bandit(horizon=horizon, support=(0.1, 0.5)),
        "p ~ U[0, 1]": dependent_bandit(horizon=horizon),
    }
    out = {name: (family, family, horizon) for name, family in conditions.items()}
    out["past the horizon"] = (longer, longer, horizon * horizon_factor)
    return out


def run(config: FailureConfig, out_dir: pathlib.Path, *, progress: bool = True) -> dict:
    """Runs the experiment, writes ``results.json``, the plots and the agent into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    train_family, agent = config.train.make_family(), config.train.make_agent()
    trained = protocol.train_and_save(config.train, out_dir / "agent", progress=progress)
    eval_key = protocol.held_out_key(config.train)

    play = jax.jit(rollout, static_argnums=(0, 1, 5))
    run_policy = jax.jit(baselines.run_policy, static_argnums=(0, 1, 4))
    conditions = {}
    per_step = {}
    for index, (name, (family, optimal_family, num_steps)) in enumerate(
        test_conditions(train_family.horizon, config.horizon_factor).items()
    ):
        task_key, agent_key, optimal_key, probe_key = jax.random.split(jax.random.fold_in(eval_key, index), 4)
        tasks = jax.vmap(family.sample_task)(jax.random.split(task_key, config.eval_tasks))
        history = play(family, agent, trained.params, agent_key, tasks, num_steps)
        optimal = run_policy(family, baselines.bayes_optimal(optimal_family), optimal_key, tasks, num_steps)
        agent_return = output.mean_and_se(history.rewards.sum(axis=0))
        optimal_return = output.mean_and_se(optimal.rewards.sum(axis=0))
        gap = output.mean_and_se(optimal.rewards.sum(axis=0) - history.rewards.sum(axis=0))
        conditions[name] = {
            "test_family": repr(family),
            "steps": num_steps,
            "return": {"agent": agent_return[0], "bayes_optimal": optimal_return[0]},
            "return_se": {"agent": agent_return[1], "bayes_optimal": optimal_return[1]},
            "gap": gap[0],
            "gap_se": gap[1],
            "gap_fraction": gap[0] / optimal_return[0],
            "r2_posterior_mean": {
                prior: _posterior_mean_r2(
                    belief_family,
                    agent,
                    trained.params,
                    history,
                    jax.random.fold_in(probe_key, j),
                    config.mlp_steps,
                )
                for j, (prior, belief_family) in enumerate(
                    (("training prior", train_family), ("test prior", family))
                )
            },
        }
        per_step[name] = (
            np.asarray(history.rewards).mean(axis=1),
            np.asarray(optimal.rewards).mean(axis=1),
        )

    results = {
        "experiment": NAME,
        "config": protocol.config_dict(config),
        "device": output.device_description(),
        "train": protocol.train_stats(trained),
        "conditions": conditions,
    }
    output.write_json(out_dir / "results.json", results)
    protocol.plot_learning_curve(out_dir / "learning_curve.png", config.train, trained)
    plots.failure_summary(out_dir / "failure.png", conditions, per_step, train_family.horizon)
    return results


def _posterior_mean_r2(belief_family, agent, params, history, key: jax.Array, mlp_steps: int) -> dict:
    """Held-out R^2 of hidden -> E[p | history] under ``belief_family``'s prior, on ``history``:
    a linear read-out and an MLP (a saturating posterior is not linear in anything the LSTM counts)."""
    replayed = replay_jit(belief_family, agent, params, history)
    sizes = split_sizes(history.actions.shape[1])
    moments = trajectory_moments(replayed, sizes)
    hidden = slice(0, agent.hidden_size)
    mean_of_p = slice(agent.hidden_size, agent.hidden_size + 1)
    linear = probes.linear_probe(moments, hidden, mean_of_p).test.r2
    by_split = zip(
        split_lanes(replayed.hidden, sizes), split_lanes(replayed.features[..., :1], sizes), strict=True
    )
    samples = [(h.reshape(-1, h.shape[-1]), f.reshape(-1, 1)) for h, f in by_split]
    mlp = probes.mlp_probe(key, *samples, num_steps=mlp_steps).r2
    return {"linear": float(linear), "mlp": float(mlp)}


def table(results: dict) -> str:
    """The printed summary: per test condition, the return gap and whose posterior the agent holds."""
    rows = [
        [
            "test condition",
            "steps",
            "agent",
            "Bayes-opt.",
            "gap",
            "gap %",
            "R² train prior (lin / MLP)",
            "R² test prior (lin / MLP)",
        ]
    ]
    for name, c in results["conditions"].items():
        rows.append(
            [
                name,
                str(c["steps"]),
                f"{c['return']['agent']:.2f}",
                f"{c['return']['bayes_optimal']:.2f}",
                f"{c['gap']:.2f} ± {c['gap_se']:.2f}",
                f"{100 * c['gap_fraction']:.1f}",
                _r2_cell(c["r2_posterior_mean"]["training prior"]),
                _r2_cell(c["r2_posterior_mean"]["test prior"]),
            ]
        )
    config = results["config"]
    header = (
        f"failure: trained on dependent_bandit(support={TRAIN_SUPPORT}), horizon "
        f"{config['train']['family_args']['horizon']}; {config['eval_tasks']} test tasks per condition "
        f"({results['device']}); trained {results['train']['seconds']:.0f} s"
    )
    return "\n".join([header, "", output.format_table(rows)])


def _r2_cell(r2: dict) -> str:
    return f"{r2['linear']:.3f} / {r2['mlp']:.3f}"
