"""``metabelief run rl2-table``: the multi-armed bandit table of RL² (Duan et al. 2016, Table 1).

k independent Bernoulli arms with means ~ U[0, 1], n pulls per episode; the average total reward
of random play, the Gittins index, Thompson sampling, UCB1, epsilon-greedy, greedy, the exact
Bayes-optimal policy where its dynamic programme fits, and an LSTM agent trained with A2C for
that row. Every policy plays the same held-out tasks.

Rows (``--rows``): ``small`` is k in {5, 10} at n in {10, 100} (a CPU's minutes);
``all`` adds k = 50 and n = 500 (for a GPU); or a list like ``5x10,10x100``.

Beside ours, the published values (``PUBLISHED``): the paper itself is out of this project's
reach, so they come from a transcription of its Table 1 (``PUBLISHED_SOURCE``); on the rows we
run, its random, Gittins and Thompson columns agree with our exact implementations within 0.8,
which is what we could check. Rows the paper did not run stay blank.

``run`` returns ``RL2TableResults`` (``results.json``'s keys: ``metabelief.experiments.results``).
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence

import jax

from metabelief import baselines, train
from metabelief.analysis.records import Record
from metabelief.experiments import output, protocol, seeds
from metabelief.experiments.results import RunResults, SeedDynamics, SeedTraining, TrainStats, summarize
from metabelief.rollout import rollout_population_jit, sample_tasks
from metabelief.tasks import BernoulliBandit, BetaArms, ExpectedRewards
from metabelief.tasks.validation import integer_at_least

NAME = "rl2-table"
SUMMARY = "RL² Table 1: k arms x n pulls; LSTM vs Gittins, Thompson, UCB1, greedy, Bayes-optimal"

Row = tuple[int, int]  # (arms k, pulls n)
ROWS: dict[str, tuple[Row, ...]] = {
    "small": ((5, 10), (10, 10), (5, 100), (10, 100)),
    "all": tuple((k, n) for n in (10, 100, 500) for k in (5, 10, 50)),
}
POLICIES = (
    "random",
    "gittins",
    "thompson",
    "ucb1",
    "epsilon_greedy",
    "greedy",
    "posterior_greedy",
    "bayes_optimal",
)

PUBLISHED_SOURCE = (
    "Duan et al. (2016), RL²: Fast Reinforcement Learning via Slow Reinforcement Learning, "
    "arXiv:1611.02779, Table 1, as transcribed in the README of github.com/lucaslingle/pytorch_rl2"
)
# Average total reward per episode; "ots" is optimistic Thompson sampling, "rl2" their GRU agent.
PUBLISHED_COLUMNS = ("random", "gittins", "thompson", "ots", "ucb1", "epsilon_greedy", "greedy", "rl2")
PUBLISHED: dict[Row, tuple[float, ...]] = {
    (5, 10): (5.0, 6.6, 5.7, 6.5, 6.7, 6.6, 6.6, 6.7),
    (10, 10): (5.0, 6.6, 5.5, 6.2, 6.7, 6.6, 6.6, 6.7),
    (50, 10): (5.1, 6.5, 5.2, 5.5, 6.6, 6.5, 6.5, 6.8),
    (5, 100): (49.9, 78.3, 74.7, 77.9, 78.0, 75.4, 74.8, 78.7),
    (10, 100): (49.9, 82.8, 76.7, 81.4, 82.4, 77.4, 77.1, 83.5),
    (50, 100): (49.8, 85.2, 64.5, 67.7, 84.3, 78.3, 78.0, 84.9),
    (5, 500): (249.8, 405.8, 402.0, 406.7, 405.8, 388.2, 380.6, 401.6),
    (10, 500): (249.0, 437.8, 429.5, 438.9, 437.1, 408.0, 395.0, 432.5),
    (50, 500): (249.6, 463.7, 427.2, 437.6, 457.6, 413.6, 402.8, 438.9),
}


def parse_rows(spec: str) -> tuple[Row, ...]:
    """``"small"``, ``"all"`` or ``"5x10,10x100"`` -> ``((5, 10), (10, 100))``."""
    if spec in ROWS:
        return ROWS[spec]
    rows = []
    for item in spec.split(","):
        arms, sep, pulls = item.strip().partition("x")
        if not sep or not arms.isdigit() or not pulls.isdigit():
            raise ValueError(f"rows must be 'small', 'all' or KxN pairs like 5x10,10x100; got {spec!r}")
        rows.append((int(arms), int(pulls)))
    return tuple(rows)


@dataclasses.dataclass(frozen=True)
class RL2TableConfig:
    """The experiment. ``train`` is the A2C template; each row sets its own arms and horizon, and
    gets ``agent_steps`` of training (``num_tasks * horizon`` per update)."""

    rows: tuple[Row, ...] = ROWS["small"]
    # Many small updates: at k = 10, n = 100, 2,400 updates of 256 tasks reached 77 where 600 of
    # 1,024 (the same agent steps) reached 65-68; a weak entropy bonus, since 10 arms start near
    # uniform and a strong one held the policy there for hundreds of updates.
    train: train.TrainConfig = train.TrainConfig(
        family="bernoulli_bandit",
        hidden_size=48,
        num_tasks=256,
        num_updates=4000,  # replaced per row from agent_steps
        updates_per_chunk=50,
        checkpoints=11,  # evaluations during training (results.json: seeds[i].train.dynamics)
        learning_rate=5e-3,
        anneal_learning_rate=False,
        entropy_coef=0.01,
        num_seeds=3,
    )
    agent_steps: int = 102_400_000  # per row: 4,000 updates of 256 tasks x 100 pulls
    max_updates: int = 12_000  # short episodes get more updates, up to this many
    eval_tasks: int = 4096

    def __post_init__(self):
        protocol.check_train(self.train, (BetaArms, ExpectedRewards), NAME)
        if not isinstance(self.rows, list | tuple):
            raise ValueError(f"rows must be a tuple of (arms, pulls) pairs, got {self.rows!r}")
        if not self.rows:
            raise ValueError("rows must not be empty")
        object.__setattr__(self, "rows", tuple(_checked_row(row) for row in self.rows))
        if len(set(self.rows)) != len(self.rows):  # each row writes its own agent folder
            raise ValueError(f"rows must not repeat a row, got {self.rows!r}")
        for name, minimum in (("agent_steps", 1), ("max_updates", 1), ("eval_tasks", 2)):
            object.__setattr__(self, name, integer_at_least(name, getattr(self, name), minimum))
        for arms, pulls in self.rows:  # each row's family and training, checked before any row runs
            self.row_config(arms, pulls)

    @classmethod
    def quick(cls) -> RL2TableConfig:
        """A smoke-test size (about a minute on a 2-core CPU); the thresholds are not expected to hold."""
        base = cls()
        quick_train = dataclasses.replace(base.train, num_tasks=128, updates_per_chunk=10, num_seeds=2)
        return cls(rows=((5, 10),), train=quick_train, agent_steps=128 * 10 * 20, eval_tasks=128)

    def row_config(self, arms: int, pulls: int) -> train.TrainConfig:
        """The A2C config of one row: its family and ``agent_steps`` worth of updates."""
        updates = min(self.max_updates, max(1, self.agent_steps // (self.train.num_tasks * pulls)))
        return dataclasses.replace(
            self.train, family_args=(("num_arms", arms), ("horizon", pulls)), num_updates=updates
        )


def _checked_row(row: object) -> Row:
    """``(arms, pulls)`` as ints, or a ValueError naming ``rows``."""
    try:
        arms, pulls = row
        return integer_at_least("rows", arms, 2), integer_at_least("rows", pulls, 1)
    except (TypeError, ValueError):
        raise ValueError(f"rows must be (arms >= 2, pulls >= 1) pairs, got {row!r}") from None


@dataclasses.dataclass(frozen=True)
class RowTrainStats(TrainStats):
    """A row's population training: ``TrainStats`` and its number of updates."""

    updates: int


@dataclasses.dataclass(frozen=True)
class RowResult(Record):
    """One seed's figures on one row (k arms, n pulls) of the table."""

    arms: int
    pulls: int
    return_: dict[str, float]  # "lstm" and each of ``POLICIES`` that fits: mean total reward per episode
    return_se: dict[str, float]  # their standard errors over the held-out tasks
    lstm_over_gittins: float
    published: dict[str, float] | None  # the paper's values (``PUBLISHED_COLUMNS``), None without a row
    train: RowTrainStats
    dynamics: SeedDynamics | None  # this seed's evaluations during the row's training


@dataclasses.dataclass(frozen=True)
class RL2Seed(Record):
    """One seed's entry: its LSTM on every row."""

    seed: int
    rows: tuple[RowResult, ...]


@dataclasses.dataclass(frozen=True)
class RL2TableResults(RunResults):
    """``results.json`` of the table (``metabelief.experiments.results``)."""

    num_seeds: int
    summary: dict  # ``summarize(seeds)``: intervals over seeds
    seeds: tuple[RL2Seed, ...]
    published_source: str


def reference_policies(family: BernoulliBandit) -> dict[str, baselines.BeliefPolicy]:
    """The classic policies of the table, plus Bayes-optimal DP where its table fits."""
    policies = {
        "random": baselines.random_policy(family),
        "gittins": baselines.gittins(family),
        "thompson": baselines.thompson_sampling(family),
        "ucb1": baselines.ucb1(family),
        "epsilon_greedy": baselines.epsilon_greedy(family),
        "greedy": baselines.greedy(family),
        "posterior_greedy": baselines.belief_greedy(family),
    }
    try:
        policies["bayes_optimal"] = baselines.bayes_optimal(family)
    except ValueError:  # the exact table would not fit: the column stays blank
        pass
    return policies


def run(config: RL2TableConfig, out_dir: pathlib.Path, *, progress: bool = True) -> RL2TableResults:
    """Trains one population of LSTMs per row and plays every policy on the row's held-out tasks."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run_policy = jax.jit(baselines.run_policy, static_argnums=(0, 1))
    rows_by_seed = [[] for _ in range(config.train.num_seeds)]
    for arms, pulls in config.rows:
        row_config = config.row_config(arms, pulls)
        family, agent = row_config.make_family(), row_config.make_agent()
        trained = protocol.train_and_save(row_config, out_dir / f"agent-k{arms}-n{pulls}", progress=progress)
        task_key, agent_key, policy_key = jax.random.split(protocol.held_out_key(row_config), 3)
        tasks = sample_tasks(family, task_key, config.eval_tasks)
        lstm_returns = rollout_population_jit(family, agent, trained.params, agent_key, tasks).rewards.sum(1)
        references = {}
        for index, (name, policy) in enumerate(reference_policies(family).items()):
            played = run_policy(family, policy, jax.random.fold_in(policy_key, index), tasks)
            references[name] = output.mean_and_se(played.rewards.sum(axis=0))
        for index, (seed_rows, seed_returns) in enumerate(zip(rows_by_seed, lstm_returns, strict=True)):
            returns = {"lstm": output.mean_and_se(seed_returns)} | references
            seed_rows.append(
                RowResult(
                    arms=arms,
                    pulls=pulls,
                    return_={name: mean for name, (mean, _) in returns.items()},
                    return_se={name: se for name, (_, se) in returns.items()},
                    lstm_over_gittins=returns["lstm"][0] / returns["gittins"][0],
                    published=published(arms, pulls),
                    train=RowTrainStats.of(trained, updates=row_config.num_updates),
                    dynamics=SeedTraining.of(trained, index).dynamics,
                )
            )
        if progress:
            latest = [[seed_rows[-1].to_dict()] for seed_rows in rows_by_seed]
            print(format_rows(seeds.summarize(latest)), flush=True)
    per_seed = [
        RL2Seed(seed=seed, rows=tuple(seed_rows))
        for seed, seed_rows in zip(config.train.seeds, rows_by_seed, strict=True)
    ]
    results = RL2TableResults(
        experiment=NAME,
        config=protocol.config_dict(config),
        device=output.device_description(),
        num_seeds=config.train.num_seeds,
        summary=summarize(per_seed),
        seeds=tuple(per_seed),
        published_source=PUBLISHED_SOURCE,
    )
    output.write_json(out_dir / "results.json", results.to_dict())
    return results


def published(arms: int, pulls: int) -> dict[str, float] | None:
    """The paper's values for k = ``arms``, n = ``pulls``, or None where it has no such row."""
    values = PUBLISHED.get((arms, pulls))
    return None if values is None else dict(zip(PUBLISHED_COLUMNS, values, strict=True))


def format_rows(rows: list[dict]) -> str:
    """Rows of a summary over seeds: every policy's return, mean [95% interval] for the LSTM."""
    names = [*POLICIES, "lstm"]
    table = [["setup", *names, "LSTM / Gittins"]]
    for row in rows:
        cells = [
            seeds.format_interval(row["return"][name], ".1f") if name in row["return"] else ""
            for name in names
        ]
        setup = f"k={row['arms']['mean']:.0f}, n={row['pulls']['mean']:.0f}"
        table.append([setup, *cells, seeds.format_interval(row["lstm_over_gittins"])])
    return output.format_table(table)


def table(results: RL2TableResults) -> str:
    """Average total reward per episode of every policy, one row per (k, n), over seeds."""
    per_seed_rows = results.seeds[0].rows
    seconds = sum(row.train.seconds for row in per_seed_rows)
    largest_se = max(max(row.return_se.values()) for entry in results.seeds for row in entry.rows)
    rows = results.summary["rows"]
    return "\n".join(
        [
            f"rl2-table: arm means ~ U[0, 1]; {results.num_seeds} seeds; "
            f"{results.config['eval_tasks']} held-out tasks per row ({results.device}); "
            f"{seconds:.0f} s of training in all",
            "",
            format_rows(rows),
            "(LSTM: mean [95% interval over seeds]; the other policies play the same tasks for every",
            f" seed; largest standard error over tasks {largest_se:.2f}; bayes_optimal blank where its",
            " table does not fit)",
            "",
            f"published: {results.published_source}",
            format_published(per_seed_rows, rows),
        ]
    )


def format_published(per_seed_rows: Sequence[RowResult], summary_rows: list[dict]) -> str:
    """The paper's values on our rows (blank where it has none), and our LSTM (mean over seeds)
    against its RL²."""
    table = [["setup", *PUBLISHED_COLUMNS, "our LSTM / RL²"]]
    for row, summary in zip(per_seed_rows, summary_rows, strict=True):
        paper = row.published or {}
        cells = [f"{paper[name]:.1f}" if name in paper else "" for name in PUBLISHED_COLUMNS]
        ratio = f"{summary['return']['lstm']['mean'] / paper['rl2']:.3f}" if paper else ""
        table.append([f"k={row.arms}, n={row.pulls}", *cells, ratio])
    return output.format_table(table)
