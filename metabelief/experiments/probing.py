"""The probe protocol shared by experiments: a trained and an untrained network on the same histories.

The trained agent's own held-out trajectory is replayed (teacher forcing) through the trained
network and through the same network at its initial weights, so both are probed on exactly the
same histories. Held-out tasks are cut into train / validation / test blocks of lanes; every
score is on the test tasks. The results are a ``ProbeReport`` (``probe`` in ``results.json``, see
``metabelief.experiments.results``).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from metabelief import probes
from metabelief.agents.base import Agent
from metabelief.analysis.records import Record
from metabelief.experiments.controls import ProbeControls
from metabelief.rollout import Trajectory, lane_moments, replay_jit, sample_rows, split_lanes
from metabelief.tasks.base import PyTree, TaskFamily


@dataclasses.dataclass(frozen=True)
class Scores(Record):
    """A probe's test scores (``metabelief.probes.ProbeScores`` as plain numbers, None for NaN)."""

    r2: float | None  # pooled over the target dimensions that vary
    r2_per_dim: tuple[float | None, ...]  # None where the target does not vary
    mse: float | None  # mean over samples and dimensions
    mse_per_dim: tuple[float | None, ...]

    @classmethod
    def of(cls, scores: probes.ProbeScores) -> Scores:
        fields = scores.to_dict()
        return cls(
            r2=fields["r2"],
            r2_per_dim=tuple(fields["r2_per_dim"]),
            mse=fields["mse"],
            mse_per_dim=tuple(fields["mse_per_dim"]),
        )


@dataclasses.dataclass(frozen=True)
class NetworkProbe(Record):
    """The probes of one network's hidden state on the held-out history, test-task scores."""

    linear: Scores  # hidden -> all F belief features, ridge regression
    posterior_mean: Scores  # hidden -> the D posterior means (the first D features), ridge
    ridge: float  # the ridge strength chosen for ``linear``
    reverse: Scores  # belief features -> hidden, ridge
    mlp: Scores  # hidden -> belief features, an MLP
    r2_by_time: tuple[float | None, ...]  # [T]: R^2 of the posterior_mean probe at each step


@dataclasses.dataclass(frozen=True)
class ProbeReport(Record):
    """``probe_networks`` on named networks (``networks``: name -> its probes), with the probe
    controls (``metabelief.experiments.controls``) once they are added."""

    split_sizes: tuple[int, int, int]  # held-out tasks (lanes): train, validation, test
    networks: dict[str, NetworkProbe]
    controls: ProbeControls | None = None


def split_sizes(num_tasks: int) -> tuple[int, int, int]:
    """Half the tasks fit probes, a quarter choose the ridge strength, a quarter test."""
    train, validation = num_tasks // 2, num_tasks // 4
    return train, validation, num_tasks - train - validation


def probe_networks(
    family: TaskFamily,
    agent: Agent,
    networks: dict[str, PyTree],
    history: Trajectory,
    *,
    key: jax.Array,
    mlp_steps: int = 2000,
) -> tuple[ProbeReport, dict[str, np.ndarray]]:
    """Linear probes both ways and an MLP probe for each named parameter set, on ``history``.

    Returns:
      ``(report, decoded)``. ``report`` is a ``ProbeReport`` (no ``controls``) whose ``networks``
      has, for each ``name`` in ``networks``, a ``NetworkProbe``: hidden -> belief features
      (``linear``, and ``posterior_mean`` for the leading ``D`` features), belief features ->
      hidden (``reverse``), an MLP hidden -> belief features (``mlp``) and hidden -> posterior
      means at each step (``r2_by_time``), all on the test tasks. ``decoded[name]`` holds the
      posterior means decoded on the test tasks, ``[T, n_test, D]``, and ``decoded["exact"]`` the
      exact ones.
    """
    sizes = split_sizes(history.actions.shape[1])
    hidden = slice(0, agent.hidden_size)
    num_features = history.features.shape[-1]
    num_means = history.truth.shape[-1]
    features = slice(agent.hidden_size, agent.hidden_size + num_features)
    means = slice(agent.hidden_size, agent.hidden_size + num_means)
    probed = {}
    decoded = {"exact": np.asarray(split_lanes(history.features, sizes)[2][..., :num_means])}
    for name, params in networks.items():
        replayed = replay_jit(family, agent, params, history)
        moments = trajectory_moments(replayed, sizes)
        forward = probes.linear_probe(moments, hidden, features)
        to_means = probes.linear_probe(moments, hidden, means)
        reverse = probes.linear_probe(moments, features, hidden)

        key, mlp_key = jax.random.split(key)
        samples = split_samples(replayed, sizes)
        mlp = probes.mlp_probe(mlp_key, *samples, num_steps=mlp_steps)
        test_hidden = split_lanes(replayed.hidden, sizes)[2]
        test_means = split_lanes(replayed.features, sizes)[2][..., :num_means]
        per_step = jax.vmap(probes.score_arrays)(probes.predict(to_means.probe, test_hidden), test_means)
        probed[name] = NetworkProbe(
            linear=Scores.of(forward.test),
            posterior_mean=Scores.of(to_means.test),
            ridge=forward.ridge,
            reverse=Scores.of(reverse.test),
            mlp=Scores.of(mlp),
            r2_by_time=tuple(None if np.isnan(r2) else float(r2) for r2 in np.asarray(per_step.r2)),
        )
        decoded[name] = np.asarray(probes.predict(to_means.probe, test_hidden))
    return ProbeReport(split_sizes=sizes, networks=probed), decoded


def trajectory_moments(trajectory: Trajectory, sizes: tuple[int, ...]) -> probes.Moments:
    """Probe statistics of ``[hidden, features]`` per split of task lanes, from stored arrays.

    The same statistics ``metabelief.rollout.probe_moments`` streams, taken here from the replay
    the MLP probe and the per-step scores need anyway, so the history is replayed once.
    """
    return lane_moments(trajectory.hidden, trajectory.features, sizes)


def split_samples(trajectory: Trajectory, sizes: tuple[int, ...]) -> list[tuple[jax.Array, jax.Array]]:
    """``(hidden, features)`` sample rows ``([n * T, H], [n * T, F])`` per split of task lanes,
    for the MLP probe."""
    by_split = split_lanes(trajectory.hidden, sizes), split_lanes(trajectory.features, sizes)
    return [(sample_rows(h), sample_rows(f)) for h, f in zip(*by_split, strict=True)]
