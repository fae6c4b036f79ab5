"""Probes during training: when the return rises and when the belief becomes decodable.

``train(config, dynamics=DynamicsSchedule(...))`` pauses between jitted chunks at the updates of
the schedule (as it does for the progress bar) and evaluates every seed of the population on one
fixed set of held-out tasks, without storing a trajectory: one lockstep scan (``rollout.lockstep``)
streams the probe statistics of

    z = [trained memory (M) | untrained readout (H) | last k inputs, one-hot time
         | Bayes state (B) | belief features (F)]

and ridge probes (``probes.linear_probe``'s protocol: the strength chosen on validation tasks, the
probe refitted and scored on test tasks; tasks cut 1/2 fit, 1/4 validate, 1/4 test) are fitted
from those statistics, in float64 on the host (the solves are d x d, d the width of ``z``). At
each checkpoint and for each seed (``SERIES``):

* ``return``: the agent's mean return per episode on the held-out tasks (its own actions);
* ``r2_trained``: held-out R^2 of the posterior means (the first D belief features, D the width of
  ``true_features``) decoded linearly from the readout, the figure ``probe.networks.trained
  .posterior_mean.r2`` reports for the final agent;
* ``r2_untrained``: the same from the readout of the network before training, teacher forced on
  the same inputs (the control: how much an untrained memory already holds);
* ``r2_input_only``: the same from the last ``input_lags`` network inputs and a one-hot of the
  time (the control that needs no memory at all);
* ``dissimilarity_agent_to_bayes`` / ``dissimilarity_bayes_to_agent``: the linear state
  dissimilarity of Mikulik et al. (2020) as ``metabelief.analysis.state_machine`` defines it: the
  mean over the target's varying dimensions of the held-out normalised MSE (1 - R^2 per dimension)
  of a linear map from the whole memory to the Bayes state, and back. The Bayes state is the
  family's exact belief pytree as stored, flattened (Beta counts for a bandit, the candidate mask of
  the oracle bandit, Tiger's log-odds), so every family has it.

``Dynamics.reached`` gives, per seed, the checkpoint from which a series stays at least 90% of its
way from its value before training to its final value: "when the return rises" and "when the
belief becomes decodable", and their lag.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from metabelief import probes
from metabelief.agents.base import Agent
from metabelief.rollout import Carry, NetworkActor, fit_validate_test, lockstep, sample_tasks
from metabelief.tasks.base import PyTree, TaskFamily
from metabelief.tasks.validation import integer_at_least

SERIES = (
    "return",
    "r2_trained",
    "r2_untrained",
    "r2_input_only",
    "dissimilarity_agent_to_bayes",
    "dissimilarity_bayes_to_agent",
)
REACHED_FRACTION = 0.9  # "reached": 90% of the way from the value before training to the final one


@dataclasses.dataclass(frozen=True)
class DynamicsSchedule:
    """When and on how many held-out tasks ``train`` evaluates the population.

    ``updates``: the numbers of updates done at each checkpoint, ascending (0: before training;
    ``num_updates``: the trained agent). ``num_tasks``: held-out tasks, cut 1/2 fit, 1/4 validate,
    1/4 test for the probes (each quarter needs more steps than the widest probe input has columns).
    ``input_lags``: the k most recent inputs of the input-only control.
    """

    updates: tuple[int, ...]
    num_tasks: int = 512
    input_lags: int = 5

    def __post_init__(self):
        updates = self.updates
        if isinstance(updates, str | bytes) or not np.iterable(updates) or len(updates) == 0:
            raise ValueError(f"updates must be a non-empty sequence of update counts, got {updates!r}")
        updates = tuple(integer_at_least("updates", update, 0) for update in updates)
        if list(updates) != sorted(set(updates)):
            raise ValueError(f"updates must be strictly increasing, got {updates}")
        object.__setattr__(self, "updates", updates)
        object.__setattr__(self, "num_tasks", integer_at_least("num_tasks", self.num_tasks, 4))
        object.__setattr__(self, "input_lags", integer_at_least("input_lags", self.input_lags, 1))

    @classmethod
    def every(cls, every: int, num_updates: int, **fields) -> DynamicsSchedule:
        """Checkpoints at 0, ``every``, ``2 * every``, ... and always at ``num_updates``."""
        every = integer_at_least("every", every, 1)
        num_updates = integer_at_least("num_updates", num_updates, 1)
        return cls(updates=tuple(sorted({*range(0, num_updates, every), num_updates})), **fields)

    @classmethod
    def evenly(
        cls, num_checkpoints: int, num_updates: int, multiple_of: int = 1, **fields
    ) -> DynamicsSchedule:
        """About ``num_checkpoints`` checkpoints spread evenly from 0 to ``num_updates``, each a
        multiple of ``multiple_of`` where that leaves at least two (so chunks of that many updates
        need no cutting) but the last, which is ``num_updates``."""
        num_checkpoints = integer_at_least("num_checkpoints", num_checkpoints, 2)
        every = max(1, num_updates // (num_checkpoints - 1))
        if every >= multiple_of:
            every -= every % multiple_of
        return cls.every(every, num_updates, **fields)

    @classmethod
    def of(cls, config) -> DynamicsSchedule:
        """The schedule of a ``TrainConfig`` with ``checkpoints`` > 0: that many evenly spaced
        checkpoints on chunk boundaries, on the fewest held-out tasks (at least 256) the probes need."""
        family, agent = config.make_family(), config.make_agent()
        num_tasks = max(256, minimum_tasks(family, agent, cls.input_lags))
        return cls.evenly(
            config.checkpoints, config.num_updates, config.updates_per_chunk, num_tasks=num_tasks
        )

    def check(self, num_updates: int) -> None:
        if self.updates[-1] > num_updates:
            raise ValueError(
                f"dynamics updates must be <= num_updates ({num_updates}), got {self.updates[-1]}"
            )

    @property
    def split_sizes(self) -> tuple[int, int, int]:
        quarter = self.num_tasks // 4
        return fit_validate_test((self.num_tasks - 2 * quarter, quarter, quarter), self.num_tasks)


@dataclasses.dataclass(frozen=True)
class Dynamics:
    """The series of every seed at every checkpoint, and what evaluating them cost."""

    updates: tuple[int, ...]  # [C]: the updates done at each checkpoint
    series: dict[str, np.ndarray]  # each of SERIES -> float64[S, C]
    seconds_per_checkpoint: float  # wall time of one evaluation of the population, compiled
    compile_seconds: float

    def reached(self, name: str) -> np.ndarray:
        """``[S]``: per seed, the first checkpoint's update at which series ``name`` has covered
        ``REACHED_FRACTION`` of its way from its first value to its last (NaN when it did not move)."""
        return reached(np.asarray(self.updates), self.series[name])


def reached(updates: np.ndarray, values: np.ndarray, fraction: float = REACHED_FRACTION) -> np.ndarray:
    """``[S]``: for each row of ``values`` ``[S, C]``, the first ``updates[c]`` from which on every
    ``(values[k] - values[0]) / (values[-1] - values[0]) >= fraction`` (``k >= c``: a series that
    passes the bar on a noisy evaluation and falls back has not reached it); NaN for a row whose
    last value equals its first (or holds a NaN)."""
    values = np.asarray(values, np.float64)
    span = values[:, -1] - values[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        covered = (values - values[:, :1]) / span[:, None]
    stays = np.flip(np.minimum.accumulate(np.flip(covered, axis=1), axis=1), axis=1) >= fraction
    first = np.argmax(stays, axis=1)
    moved = np.isfinite(covered).all(axis=1) & (span != 0)
    return np.where(moved, np.asarray(updates, np.float64)[first], np.nan)


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Where each block lies in ``z`` (``[start, stop)``)."""

    memory: tuple[int, int]
    readout: tuple[int, int]
    untrained: tuple[int, int]
    input_only: tuple[int, int]
    bayes: tuple[int, int]
    posterior_means: tuple[int, int]


def _layout(agent: Agent, input_width: int, bayes_width: int, num_means: int) -> _Layout:
    memory, readout = agent.memory_size, agent.hidden_size
    untrained = (memory, memory + readout)
    input_only = (untrained[1], untrained[1] + input_width)
    bayes = (input_only[1], input_only[1] + bayes_width)
    return _Layout(
        memory=(0, memory),
        readout=(0, readout),
        untrained=untrained,
        input_only=input_only,
        bayes=bayes,
        posterior_means=(bayes[1], bayes[1] + num_means),
    )


@dataclasses.dataclass(frozen=True)
class _ProbedActor:
    """The trained network acts; the untrained one reads the same inputs (teacher forced); the last
    ``lags`` inputs and the time are kept; ``hidden`` carries all of it and the Bayes state, so the
    engine streams the statistics of ``z`` (its ``features`` come last). The memory also sums the
    rewards (the return)."""

    agent: Agent
    params: PyTree
    initial_params: PyTree
    lags: int
    horizon: int

    def noise(self, key: jax.Array, num_steps: int, num_tasks: int) -> jax.Array:
        return NetworkActor(agent=self.agent, params=self.params).noise(key, num_steps, num_tasks)

    def init(self, obs: jax.Array, beliefs: PyTree) -> dict:
        num_tasks = obs.shape[0]
        return {
            "trained": self.agent.initial_carry(num_tasks),
            "untrained": self.agent.initial_carry(num_tasks),
            "window": jnp.zeros((num_tasks, self.lags * self.agent.input_size), jnp.float32),
            "returns": jnp.zeros((num_tasks,), jnp.float32),
        }

    def act(self, carry: Carry, time: jax.Array, noise: jax.Array | None):
        state = carry.memory
        trained = NetworkActor(agent=self.agent, params=self.params)
        memory, actions, outputs = trained.act(carry.replace(memory=state["trained"]), time, noise)
        inputs = self.agent.inputs(carry.obs, carry.prev_action, carry.prev_reward, time)
        untrained, _, _ = self.agent.step(self.initial_params, state["untrained"], inputs)
        window = jnp.concatenate([inputs, state["window"][:, : -inputs.shape[-1]]], axis=-1)
        clock = jnp.broadcast_to(jax.nn.one_hot(time, self.horizon), (inputs.shape[0], self.horizon))
        probed = jnp.concatenate(
            [
                outputs["memory"],
                self.agent.memory(untrained)[:, : self.agent.hidden_size],
                window,
                clock,
                bayes_state(carry.belief),
            ],
            axis=-1,
        )
        state = {**state, "trained": memory, "untrained": untrained, "window": window}
        return state, actions, {"hidden": probed}

    def observe(self, memory, obs, actions, rewards, next_obs):
        return {**memory, "returns": memory["returns"] + rewards}


def bayes_state(beliefs: PyTree) -> jax.Array:
    """``float32[N, B]``: the exact beliefs of N lanes, every leaf flattened and concatenated."""
    leaves = jax.tree.leaves(beliefs)
    return jnp.concatenate([leaf.reshape(leaf.shape[0], -1).astype(jnp.float32) for leaf in leaves], axis=-1)


def probe_statistics(
    family: TaskFamily,
    agent: Agent,
    params: PyTree,
    initial_params: PyTree,
    key: jax.Array,
    tasks: PyTree,
    split_sizes: tuple[int, int, int],
    input_lags: int,
) -> tuple[probes.Moments, jax.Array]:
    """ONE agent on ``tasks``: the statistics of ``z`` per split (``Moments`` ``[3, ...]``) and its
    mean return, from one lockstep scan that stores nothing."""
    actor = _ProbedActor(agent, params, initial_params, input_lags, family.horizon)
    run = lockstep(family, actor, key=key, tasks=tasks, record=False, split_sizes=split_sizes)
    return run.moments, run.last.memory["returns"].mean()


def series(moments: probes.Moments, mean_return: float, layout: _Layout) -> dict[str, float]:
    """Every series of ``SERIES`` from one agent's ``probe_statistics`` (host arrays), in float64."""

    def r2_per_dim(x: tuple[int, int], y: tuple[int, int]) -> np.ndarray:
        return _ridge_test_r2(moments, slice(*x), slice(*y))

    def r2(x: tuple[int, int], y: tuple[int, int]) -> float:
        return r2_per_dim(x, y)[1]

    def dissimilarity(x: tuple[int, int], y: tuple[int, int]) -> float:
        per_dim, _ = r2_per_dim(x, y)
        varying = per_dim[np.isfinite(per_dim)]
        return float(np.mean(1.0 - varying)) if varying.size else math.nan

    return {
        "return": float(mean_return),
        "r2_trained": r2(layout.readout, layout.posterior_means),
        "r2_untrained": r2(layout.untrained, layout.posterior_means),
        "r2_input_only": r2(layout.input_only, layout.posterior_means),
        "dissimilarity_agent_to_bayes": dissimilarity(layout.memory, layout.bayes),
        "dissimilarity_bayes_to_agent": dissimilarity(layout.bayes, layout.memory),
    }


def _ridge_test_r2(moments: probes.Moments, x: slice, y: slice) -> tuple[np.ndarray, float]:
    """``probes.linear_probe``'s protocol in float64 on the host: ridge of ``z[y]`` on ``z[x]``
    (penalty ``ridge * tr(S_xx) / dx``, at least ``probes.ROUNDING_FLOOR * tr(S_xx)`` since the
    statistics are float32; intercept free) for each strength of the default grid, the one with
    the best pooled R^2 on the validation split refitted on fit + validation; its test R^2 per
    target dimension (NaN where the target does not vary) and pooled."""
    count, mean, scatter = (
        np.asarray(leaf, np.float64) for leaf in (moments.count, moments.mean, moments.scatter)
    )
    splits = [(count[i], mean[i], scatter[i]) for i in range(3)]

    def fit(split, ridge):
        n, m, s = split
        s_xx = s[x, x]
        scale = max(np.trace(s_xx) / s_xx.shape[0], 1e-30)
        penalty = max(ridge, probes.ROUNDING_FLOOR * s_xx.shape[0]) * scale
        weights = np.linalg.solve(s_xx + penalty * np.eye(s_xx.shape[0]), s[x, y])
        return weights, m[y] - m[x] @ weights

    def score(probe, split):
        (weights, bias), (n, m, s) = probe, split
        offset = m[y] - m[x] @ weights - bias
        total = np.diagonal(s[y, y])
        errors = total - 2 * np.sum(weights * s[x, y], axis=0) + np.sum(weights * (s[x, x] @ weights), axis=0)
        errors = np.maximum(errors + n * offset**2, 0.0)
        varies = total > 1e-10 * n * m[y] ** 2 + 1e-30
        per_dim = np.where(varies, 1.0 - errors / np.where(varies, total, 1.0), np.nan)
        pooled = 1.0 - errors[varies].sum() / total[varies].sum() if varies.any() else math.nan
        return per_dim, pooled

    validation = [score(fit(splits[0], ridge), splits[1])[1] for ridge in probes.DEFAULT_RIDGE_GRID]
    best = probes.DEFAULT_RIDGE_GRID[int(np.nanargmax(validation))]
    return score(fit(_merged(splits[0], splits[1]), best), splits[2])


def _merged(a: tuple, b: tuple) -> tuple:
    """``(count, mean, scatter)`` of the union of two sample sets (``probes.merge`` in float64)."""
    (n_a, m_a, s_a), (n_b, m_b, s_b) = a, b
    n = n_a + n_b
    delta = m_b - m_a
    return n, m_a + (n_b / n) * delta, s_a + s_b + (n_a * n_b / n) * np.outer(delta, delta)


def _target_widths(family: TaskFamily, key: jax.Array, tasks: PyTree) -> tuple[int, int]:
    """``(B, D)``: the widths of the Bayes state and of ``true_features`` (the posterior means)."""
    task = jax.tree.map(lambda leaf: leaf[0], tasks)

    def first_step(task):
        state, obs = family.reset(key, task)
        return bayes_state(jax.vmap(family.belief_init)(obs[None])), family.true_features(task, state)

    bayes, truth = jax.eval_shape(first_step, task)
    return bayes.shape[-1], truth.shape[-1]


def _population_statistics(family, agent, params, initial_params, key, tasks, split_sizes, input_lags):
    """``probe_statistics`` of every seed (parameters ``[S, ...]``) on the same tasks."""

    def one(trained: PyTree, initial: PyTree) -> tuple[probes.Moments, jax.Array]:
        return probe_statistics(family, agent, trained, initial, key, tasks, split_sizes, input_lags)

    return jax.vmap(one)(params, initial_params)


# The statistics on device, the small solves on the host in float64: XLA's CPU runtime (jaxlib
# 0.10.2) was seen to deadlock, every thread waiting, on a program holding the six probes' solves
# side by side (with or without the lockstep scan in it, whatever OPENBLAS_NUM_THREADS).
population_statistics = jax.jit(_population_statistics, static_argnums=(0, 1, 6, 7))


@dataclasses.dataclass(frozen=True)
class Evaluator:
    """The compiled evaluation of a population on the schedule's held-out tasks (drawn once, from
    a key training never uses), and what compiling it took."""

    statistics: object  # (params [S, ...], initial_params [S, ...]) -> (Moments, returns) [S, ...]
    layout: _Layout
    compile_seconds: float

    def __call__(self, params: PyTree, initial_params: PyTree) -> dict[str, np.ndarray]:
        moments, returns = jax.device_get(self.statistics(params, initial_params))
        per_seed = [
            series(jax.tree.map(lambda leaf, i=i: leaf[i], moments), returns[i], self.layout)
            for i in range(len(returns))
        ]
        return {name: np.array([seed[name] for seed in per_seed]) for name in SERIES}


def minimum_tasks(family: TaskFamily, agent: Agent, input_lags: int) -> int:
    """The fewest held-out tasks (a multiple of 4) whose quarter has more steps than the widest
    probe has inputs."""
    return _minimum_tasks(family, _layout_of(family, agent, input_lags))


def _minimum_tasks(family: TaskFamily, layout: _Layout) -> int:
    return 4 * -(-(_widest(layout) + 2) // family.horizon)


def _widest(layout: _Layout) -> int:
    return max(stop - start for start, stop in dataclasses.astuple(layout))


def _layout_of(family: TaskFamily, agent: Agent, input_lags: int) -> _Layout:
    """Where each block of ``z`` lies for ``family`` and ``agent`` (it depends on no task's values)."""
    key = jax.random.key(0)
    tasks = jax.vmap(family.sample_task)(jax.random.split(key, 1))
    return _layout(agent, input_lags * agent.input_size + family.horizon, *_target_widths(family, key, tasks))


def held_out_tasks(family: TaskFamily, num_tasks: int, seed: int) -> tuple[PyTree, jax.Array]:
    """``(tasks, action_key)``: the held-out tasks of the evaluations during training of a
    population whose first seed is ``seed`` (its key folded with 3, which training never uses), and
    the key of the agents' actions on them."""
    task_key, action_key = jax.random.split(jax.random.fold_in(jax.random.key(seed), 3))
    return sample_tasks(family, task_key, num_tasks), action_key


def evaluator(
    family: TaskFamily,
    agent: Agent,
    schedule: DynamicsSchedule,
    seed: int,
    params: PyTree,
    initial_params: PyTree,
) -> Evaluator:
    """Draws the held-out tasks of ``schedule`` (``held_out_tasks``) and compiles the evaluation
    for a population shaped like ``params``; a ``ValueError`` when a quarter of the tasks has fewer
    steps than the widest probe has inputs."""
    layout = _layout_of(family, agent, schedule.input_lags)
    if min(schedule.split_sizes) * family.horizon < _widest(layout) + 2:
        raise ValueError(
            f"dynamics num_tasks ({schedule.num_tasks}) is too small: a quarter of them has "
            f"{min(schedule.split_sizes) * family.horizon} steps, the widest probe reads {_widest(layout)} "
            f"inputs; use at least {_minimum_tasks(family, layout)}"
        )
    tasks, action_key = held_out_tasks(family, schedule.num_tasks, seed)
    start = time.perf_counter()
    statistics = population_statistics.lower(
        family, agent, params, initial_params, action_key, tasks, schedule.split_sizes, schedule.input_lags
    ).compile()
    return Evaluator(
        statistics=lambda p, i: statistics(p, i, action_key, tasks),
        layout=layout,
        compile_seconds=time.perf_counter() - start,
    )
