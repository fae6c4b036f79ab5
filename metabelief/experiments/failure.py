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
programming, ``metabelief.baselines.bayes_optimal``); (b) whose posterior the agent holds, three
ways on the same test histories:

* ``readout``: the agent's own belief coordinate. A linear read-out hidden -> E[p | history] is
  fitted in distribution (held-out training-prior episodes), frozen, and applied to the test
  histories: on which share of the pairs where the two posteriors differ it lies nearer the
  training prior's, its RMSE against each (same units), and how sure it is next to each.
* ``follows_training_prior``: on the steps where acting greedily on the two posteriors picks
  different arms (only the asymmetric prior has such steps; for the dependent bandit the
  Bayes-optimal action is the greedy one), the probability the agent gives the training prior's arm
  (1: acts on its training posterior; 0: on the test posterior).
* ``r2_posterior_mean``: probes refitted on the test histories, hidden -> E[p] under each prior
  (held-out R^2, linear and MLP): what the state holds, whether or not the agent uses it;

(c) the same figures in distribution, where the agent is fine.
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from metabelief import baselines, probes, train
from metabelief.agents.lstm import RecurrentAgent
from metabelief.experiments import output, plots, protocol, seeds
from metabelief.experiments.probing import split_samples, split_sizes, trajectory_moments
from metabelief.rollout import Trajectory, replay_jit, rollout_population_jit, split_lanes
from metabelief.tasks import DiscreteDependentBandit, dependent_bandit
from metabelief.tasks.validation import integer_at_least
from metabelief.testing.random_rollout import sample_tasks

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
        num_seeds=3,
    )
    eval_tasks: int = 4096
    horizon_factor: int = 2  # "past the horizon" runs this many training horizons
    mlp_steps: int = 2000

    def __post_init__(self):
        protocol.check_train(self.train, DiscreteDependentBandit, NAME)
        support = self.train.make_family().support
        if support != TRAIN_SUPPORT:  # the test conditions are built around the training prior
            raise ValueError(f"train.family_args support must be {TRAIN_SUPPORT}, got {support!r}")
        object.__setattr__(self, "eval_tasks", protocol.check_eval_tasks(self.eval_tasks))
        object.__setattr__(self, "horizon_factor", integer_at_least("horizon_factor", self.horizon_factor, 2))
        object.__setattr__(self, "mlp_steps", integer_at_least("mlp_steps", self.mlp_steps, 1))

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
            num_seeds=2,
        )
        return cls(train=quick_train, eval_tasks=64, mlp_steps=100)


def test_conditions(horizon: int, horizon_factor: int) -> dict[str, tuple]:
    """name -> (test family, number of steps)."""
    longer = dependent_bandit(horizon=horizon * horizon_factor, support=TRAIN_SUPPORT)
    conditions = {
        "in distribution": dependent_bandit(horizon=horizon, support=TRAIN_SUPPORT),
        "support (0.4, 0.6)": dependent_bandit(horizon=horizon, support=(0.4, 0.6)),
        "support (0.1, 0.5)": dependent_bandit(horizon=horizon, support=(0.1, 0.5)),
        "p ~ U[0, 1]": dependent_bandit(horizon=horizon),
    }
    out = {name: (family, horizon) for name, family in conditions.items()}
    out["past the horizon"] = (longer, horizon * horizon_factor)
    return out


def run(config: FailureConfig, out_dir: pathlib.Path, *, progress: bool = True) -> dict:
    """Runs the experiment, writes ``results.json``, the plots and the agents into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    train_family, agent = config.train.make_family(), config.train.make_agent()
    trained = protocol.train_and_save(config.train, out_dir / "agent", progress=progress)
    eval_key = protocol.held_out_key(config.train)
    sizes = split_sizes(config.eval_tasks)
    run_policy = jax.jit(baselines.run_policy, static_argnums=(0, 1, 4))

    readout_key, conditions_key = jax.random.split(eval_key)
    task_key, agent_key = jax.random.split(readout_key)
    in_distribution = sample_tasks(train_family, task_key, config.eval_tasks)
    readout_histories = rollout_population_jit(
        train_family, agent, trained.params, agent_key, in_distribution
    )
    readouts = [
        belief_readout(train.select_seed(readout_histories, index), agent, sizes)
        for index in range(trained.num_seeds)
    ]
    del readout_histories

    conditions = [{} for _ in readouts]  # per seed: condition name -> its figures
    per_step = {}
    for index, (name, (family, num_steps)) in enumerate(
        test_conditions(train_family.horizon, config.horizon_factor).items()
    ):
        keys = jax.random.split(jax.random.fold_in(conditions_key, index), 4)
        task_key, agent_key, optimal_key, probe_key = keys
        tasks = sample_tasks(family, task_key, config.eval_tasks)
        histories = rollout_population_jit(family, agent, trained.params, agent_key, tasks, num_steps)
        optimal = run_policy(family, baselines.bayes_optimal(family), optimal_key, tasks, num_steps)
        for seed_index, readout in enumerate(readouts):
            history = train.select_seed(histories, seed_index)
            params = trained.seed_params(seed_index)
            conditions[seed_index][name] = _condition_results(
                family, num_steps, train_family, agent, params, readout, history, optimal, probe_key, config
            )
        per_step[name] = (
            np.asarray(histories.rewards).mean(axis=(0, 2)),  # over seeds and tasks
            np.asarray(optimal.rewards).mean(axis=1),
        )
        del histories

    final_returns = protocol.final_training_return(trained)
    per_seed = [
        {"seed": seed, "train": {"final_training_return": float(final)}, "conditions": seed_conditions}
        for seed, final, seed_conditions in zip(config.train.seeds, final_returns, conditions, strict=True)
    ]
    results = protocol.population_results(NAME, protocol.config_dict(config), trained, per_seed)
    output.write_json(out_dir / "results.json", results)
    protocol.plot_learning_curve(out_dir / "learning_curve.png", config.train, trained)
    mean_conditions = seeds.means(results["summary"]["conditions"])
    plots.failure_summary(out_dir / "failure.png", mean_conditions, per_step, train_family.horizon)
    return results


def _condition_results(
    family, num_steps, train_family, agent, params, readout, history, optimal, probe_key, config
) -> dict:
    """One seed's figures on one test condition: return gap, read-out, choices, refitted probes."""
    sizes = split_sizes(config.eval_tasks)

    def test_lanes(array):  # [T, N, 1] -> [T, n_test]
        return split_lanes(array, sizes)[2][..., 0]

    agent_return = output.mean_and_se(history.rewards.sum(axis=0))
    optimal_return = output.mean_and_se(optimal.rewards.sum(axis=0))
    gap = output.mean_and_se(optimal.rewards.sum(axis=0) - history.rewards.sum(axis=0))
    posterior_means = {  # E[p | history], [T, N, 1]
        "training prior": replay_jit(train_family, agent, params, history).features[..., :1],
        "test prior": history.features[..., :1],
    }
    decoded = test_lanes(probes.predict(readout, history.hidden))
    return {
        "test_family": repr(family),
        "steps": num_steps,
        "return": {"agent": agent_return[0], "bayes_optimal": optimal_return[0]},
        "return_se": {"agent": agent_return[1], "bayes_optimal": optimal_return[1]},
        "gap": gap[0],
        "gap_se": gap[1],
        "gap_fraction": gap[0] / optimal_return[0],
        "readout": compare_readout(decoded, *(test_lanes(mean) for mean in posterior_means.values())),
        "follows_training_prior": follows_training_prior(
            history.logits, *(mean[..., 0] for mean in posterior_means.values())
        ),
        "r2_posterior_mean": {
            prior: _posterior_mean_r2(history.replace(features=mean), agent, sizes, key, config.mlp_steps)
            for prior, mean, key in zip(
                posterior_means, posterior_means.values(), jax.random.split(probe_key), strict=True
            )
        },
    }


def belief_readout(
    history: Trajectory, agent: RecurrentAgent, sizes: tuple[int, int, int]
) -> probes.LinearProbe:
    """The agent's belief coordinate: ridge hidden -> E[p | history] on ``history``'s train and
    validation lanes (its features must be the training-prior belief), to be applied unchanged."""
    return probes.linear_probe(trajectory_moments(history, sizes), *_hidden_and_mean(agent)).probe


def _hidden_and_mean(agent: RecurrentAgent) -> tuple[slice, slice]:
    """Where the hidden state and E[p] (the first belief feature) sit in ``[hidden, features]``."""
    return slice(0, agent.hidden_size), slice(agent.hidden_size, agent.hidden_size + 1)


def compare_readout(decoded: jax.Array, training_mean: jax.Array, test_mean: jax.Array) -> dict:
    """Is the frozen read-out of the agent's belief the posterior under the training or the test prior?

    Args:
      decoded: ``[T, N]`` the in-distribution read-out applied to test histories; ``training_mean``,
        ``test_mean``: ``[T, N]`` E[p | history] under each prior.

    Returns:
      JSON-ready: ``rmse`` and ``rmse_by_time`` against each posterior mean; ``closer_to_training``,
      the share of the (step, task) pairs where the two posteriors differ (by more than 1e-3) on
      which the read-out is nearer the training prior's (None where they never differ);
      ``confidence``, mean |E[p] - 1/2| of the read-out and of each posterior (how sure each is).
    """
    means = {"training prior": training_mean, "test prior": test_mean}
    squared = {prior: (decoded - mean) ** 2 for prior, mean in means.items()}
    differ = jnp.abs(training_mean - test_mean) > 1e-3
    nearer_training = squared["training prior"] < squared["test prior"]
    pairs = int(differ.sum())
    closer = float(jnp.sum(differ & nearer_training) / pairs) if pairs else None
    return {
        "rmse": {prior: float(jnp.sqrt(error.mean())) for prior, error in squared.items()},
        "rmse_by_time": {
            prior: np.sqrt(np.asarray(error.mean(axis=1))).tolist() for prior, error in squared.items()
        },
        "closer_to_training": closer,
        "differing_pairs": pairs,
        "confidence": {
            name: float(jnp.abs(value - 0.5).mean())
            for name, value in (("read-out", decoded), *means.items())
        },
    }


def follows_training_prior(logits: jax.Array, training_mean: jax.Array, test_mean: jax.Array) -> dict:
    """How the agent acts where the two posteriors disagree about the better arm.

    Arm 0 pays p and arm 1 pays 1 - p, so acting greedily on a posterior picks arm 0 when
    E[p] > 1/2. On the steps where the greedy arms under the training and the test prior differ
    (both clear of 1/2), the agent's mean probability of the training prior's arm.

    Args:
      logits: the agent's ``[T, N, 2]`` action logits; ``training_mean``, ``test_mean``: ``[T, N]``
        E[p | history] under each prior.

    Returns:
      ``{"steps": number of disagreeing steps, "probability": mean probability or None if none}``.
    """
    margin = 1e-6  # E[p] within this of 1/2 (in float32, a posterior all but settled on 1/2) is a tie
    clear = (jnp.abs(training_mean - 0.5) > margin) & (jnp.abs(test_mean - 0.5) > margin)
    training_arm = (training_mean < 0.5).astype(jnp.int32)
    disagree = clear & (training_arm != (test_mean < 0.5))
    chosen = jnp.take_along_axis(jax.nn.softmax(logits), training_arm[..., None], axis=-1)[..., 0]
    steps = int(disagree.sum())
    probability = float(jnp.sum(jnp.where(disagree, chosen, 0.0)) / steps) if steps else None
    return {"steps": steps, "probability": probability}


def _posterior_mean_r2(
    history: Trajectory, agent: RecurrentAgent, sizes: tuple[int, int, int], key: jax.Array, mlp_steps: int
) -> dict:
    """Held-out R^2 of hidden -> ``history.features`` (one posterior mean), probes refitted on
    ``history``: a linear read-out and an MLP (a saturating posterior is not linear in anything the
    LSTM counts)."""
    linear = probes.linear_probe(trajectory_moments(history, sizes), *_hidden_and_mean(agent)).test.r2
    mlp = probes.mlp_probe(key, *split_samples(history, sizes), num_steps=mlp_steps).r2
    return {"linear": float(linear), "mlp": float(mlp)}


def table(results: dict) -> str:
    """The printed summary over seeds: per test condition, the return gap and whose posterior the
    agent holds (mean [95% interval over seeds])."""
    cell = seeds.format_interval
    returns = [["test condition", "steps", "agent", "Bayes-opt.", "gap", "gap %"]]
    acts = [
        [
            "test condition",
            "read-out nearer train prior",
            "RMSE vs train / test",
            "|E[p] - ½|: read-out / train / test",
            "P(train-prior arm) [steps]",
        ]
    ]
    holds = [["test condition", "refitted R² train prior (lin / MLP)", "refitted R² test prior (lin / MLP)"]]
    for name, c in results["summary"]["conditions"].items():
        returns.append(
            [
                name,
                f"{c['steps']['mean']:.0f}",
                cell(c["return"]["agent"], ".2f"),
                cell(c["return"]["bayes_optimal"], ".2f"),
                cell(c["gap"], ".2f"),
                cell(seeds.percent(c["gap_fraction"]), ".1f"),
            ]
        )
        readout, follows = c["readout"], c["follows_training_prior"]
        confidence = readout["confidence"]
        acts.append(
            [
                name,
                cell(readout["closer_to_training"], ".2f"),
                f"{cell(readout['rmse']['training prior'])} / {cell(readout['rmse']['test prior'])}",
                " / ".join(cell(confidence[k]) for k in ("read-out", "training prior", "test prior")),
                "–"
                if follows["probability"]["mean"] is None
                else f"{cell(follows['probability'], '.2f')} [{follows['steps']['mean']:.0f}]",
            ]
        )
        r2 = c["r2_posterior_mean"]
        holds.append([name, _r2_cell(r2["training prior"]), _r2_cell(r2["test prior"])])
    config = results["config"]
    header = (
        f"failure: trained on dependent_bandit(support={TRAIN_SUPPORT}), horizon "
        f"{config['train']['family_args']['horizon']}; {results['train']['num_seeds']} seeds; "
        f"{config['eval_tasks']} test tasks per condition ({results['device']}); trained "
        f"{results['train']['seconds']:.0f} s; figures: mean [95% interval over seeds]"
    )
    return "\n\n".join(
        [
            header,
            output.format_table(returns),
            "the agent's own belief (in-distribution read-out, frozen) and its choices:\n"
            + output.format_table(acts),
            "what the state holds (probes refitted on the test histories):\n" + output.format_table(holds),
        ]
    )


def _r2_cell(r2: dict) -> str:
    return f"{seeds.format_interval(r2['linear'])} / {seeds.format_interval(r2['mlp'])}"
