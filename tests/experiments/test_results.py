"""The result types: ``to_dict()`` holds the figures the computations give, under the fields' names,
as JSON; every key of ``results.json`` is documented in ``metabelief.experiments.results``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing

import jax
import numpy as np
import pytest

import metabelief
from metabelief import probes
from metabelief.agents import agent_for
from metabelief.analysis import intervention, state_machine
from metabelief.analysis.records import Record, json_key, json_ready
from metabelief.experiments import bandit, failure, gridworld, results, rl2_table, seeds, study, two_step
from metabelief.experiments.probing import (
    NetworkProbe,
    ProbeReport,
    Scores,
    probe_networks,
    split_samples,
    split_sizes,
    trajectory_moments,
)
from metabelief.rollout import replay_jit, rollout

# ---------------------------------------------------------------------------------------------
# Record: field names as keys, JSON values


@dataclasses.dataclass(frozen=True)
class Inner(Record):
    value: float
    values: tuple[float | None, ...]


@dataclasses.dataclass(frozen=True)
class Outer(Record):
    return_: dict[str, float]
    inner: Inner
    by_name: dict[str, Inner]
    count: int
    flag: bool
    label: str | None


def test_to_dict_writes_field_names_nested_records_lists_and_nan_as_none():
    inner = Inner(value=np.float32(0.5), values=(1.0, float("nan"), np.float64(2.5)))
    outer = Outer(
        return_={"agent": 1.5},
        inner=inner,
        by_name={"trained": inner},
        count=np.int64(3),
        flag=np.bool_(True),
        label=None,
    )
    written = outer.to_dict()
    assert written == {
        "return": {"agent": 1.5},  # a trailing underscore (a Python keyword) is dropped
        "inner": {"value": 0.5, "values": [1.0, None, 2.5]},
        "by_name": {"trained": {"value": 0.5, "values": [1.0, None, 2.5]}},
        "count": 3,
        "flag": True,
        "label": None,
    }
    assert type(written["count"]) is int and type(written["flag"]) is bool
    assert type(written["inner"]["value"]) is float
    assert json.loads(json.dumps(written, allow_nan=False)) == written
    assert json_key("return_") == "return" and json_key("r2") == "r2"


def test_json_ready_takes_arrays_and_rejects_what_json_cannot_hold():
    assert json_ready(np.array([[1.0, np.nan], [3.0, 4.0]], np.float32)) == [[1.0, None], [3.0, 4.0]]
    assert json_ready(jax.numpy.arange(3)) == [0, 1, 2]
    with pytest.raises(TypeError, match="object"):
        json_ready(object())


def test_a_record_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Inner(value=1.0, values=()).value = 2.0


# ---------------------------------------------------------------------------------------------
# The probe report: the figures of the probes, networks named by their names only

FAMILY = metabelief.make("bernoulli_bandit", horizon=8)  # belief features: 2 means, 2 stds
AGENT = agent_for(FAMILY, hidden_size=5)
NUM_TASKS = 40


@pytest.fixture(scope="module")
def probed():
    params, other = AGENT.init(jax.random.key(0)), AGENT.init(jax.random.key(1))
    tasks = jax.vmap(FAMILY.sample_task)(jax.random.split(jax.random.key(2), NUM_TASKS))
    history = jax.jit(rollout, static_argnums=(0, 1))(FAMILY, AGENT, params, jax.random.key(3), tasks)
    networks = {"trained": params, "untrained": other}
    report, decoded = probe_networks(FAMILY, AGENT, networks, history, key=jax.random.key(4), mlp_steps=20)
    return dict(networks=networks, history=history, report=report, decoded=decoded)


def test_probe_report_holds_the_scores_of_each_probe_under_its_field(probed):
    """What the dict code wrote under ``name``, ``reverse_<name>``, ``mlp_<name>`` and
    ``r2_by_time[name]``, computed here from the probes themselves, is under ``networks[name]``."""
    history, report = probed["history"], probed["report"]
    sizes = split_sizes(NUM_TASKS)
    hidden, features, means = slice(0, 5), slice(5, 9), slice(5, 7)
    key = jax.random.key(4)
    written = report.to_dict()
    assert json.loads(json.dumps(written, allow_nan=False)) == written
    assert set(written) == {"split_sizes", "networks", "controls"} and written["controls"] is None
    assert written["split_sizes"] == list(sizes)
    assert list(written["networks"]) == ["trained", "untrained"]  # exactly the network names
    for name, params in probed["networks"].items():
        network = written["networks"][name]
        assert list(network) == ["linear", "posterior_mean", "ridge", "reverse", "mlp", "r2_by_time"]
        replayed = replay_jit(FAMILY, AGENT, params, history)
        moments = trajectory_moments(replayed, sizes)
        forward = probes.linear_probe(moments, hidden, features)
        to_means = probes.linear_probe(moments, hidden, means)
        assert network["linear"] == forward.test.to_dict()
        assert network["ridge"] == forward.ridge
        assert network["posterior_mean"] == to_means.test.to_dict()
        assert network["reverse"] == probes.linear_probe(moments, features, hidden).test.to_dict()
        key, mlp_key = jax.random.split(key)
        test_hidden = replayed.hidden[:, sizes[0] + sizes[1] :]
        test_means = replayed.features[:, sizes[0] + sizes[1] :, :2]
        per_step = [
            probes.score_arrays(probes.predict(to_means.probe, test_hidden[t]), test_means[t]).r2
            for t in range(FAMILY.horizon)
        ]
        np.testing.assert_allclose(
            [np.nan if v is None else v for v in network["r2_by_time"]], per_step, rtol=1e-5, atol=1e-6
        )
        samples = split_samples(replayed, sizes)
        assert network["mlp"] == probes.mlp_probe(mlp_key, *samples, num_steps=20).to_dict()
        # The typed report holds the same figures the dict shows.
        typed = report.networks[name]
        assert isinstance(typed, NetworkProbe) and typed.linear == Scores.of(forward.test)
        assert typed.posterior_mean.r2 == network["posterior_mean"]["r2"]
    assert probed["decoded"]["trained"].shape == (FAMILY.horizon, split_sizes(NUM_TASKS)[2], 2)


def test_probe_report_with_controls_is_json_and_summarizes_over_seeds(probed):
    from metabelief.experiments import controls

    report = probed["report"]
    with_controls = dataclasses.replace(
        report,
        controls=controls.probe_controls(
            FAMILY, AGENT, probed["networks"], probed["history"], report.split_sizes, input_lags=(1, 2)
        ),
    )
    written = with_controls.to_dict()
    assert json.loads(json.dumps(written, allow_nan=False)) == written
    assert [entry["lags"] for entry in written["controls"]["input_only"]] == [1, 2]
    summary = seeds.summarize([written, written])
    assert (
        summary["networks"]["trained"]["linear"]["r2"]["mean"]
        == written["networks"]["trained"]["linear"]["r2"]
    )
    assert set(summary["networks"]) == {"trained", "untrained"}


# ---------------------------------------------------------------------------------------------
# Seed entries and the experiment's results


def _evaluation(seed: int, agent_return: float):
    return types.SimpleNamespace(
        seed=seed,
        training=results.SeedTraining(final_training_return=10.0 + seed),
        returns={"agent": (agent_return, 0.5), "random": (5.0, 0.25)},
    )


def _trained(num_seeds: int = 2):
    return types.SimpleNamespace(
        seconds=3.0, compile_seconds=1.0, agent_steps_per_second=2e6, num_seeds=num_seeds, dynamics=None
    )


def test_seed_results_and_experiment_results_write_the_common_keys():
    per_seed = [
        gridworld.GridworldSeed.of(
            _evaluation(seed, agent_return),
            return_fraction_random_to_belief_greedy=fraction,
            return_fraction_random_to_belief_greedy_se=0.1,
            probe=ProbeReport(split_sizes=(2, 1, 1), networks={}),
        )
        for seed, agent_return, fraction in ((0, 8.0, 0.5), (1, 9.0, 0.75))
    ]
    entry = per_seed[0].to_dict()
    assert entry == {
        "seed": 0,
        "train": {"final_training_return": 10.0, "dynamics": None},
        "return": {"agent": 8.0, "random": 5.0},
        "return_se": {"agent": 0.5, "random": 0.25},
        "return_fraction_random_to_belief_greedy": 0.5,
        "return_fraction_random_to_belief_greedy_se": 0.1,
        "probe": {"split_sizes": [2, 1, 1], "networks": {}, "controls": None},
    }
    experiment = results.ExperimentResults.of("gridworld", {"eval_tasks": 4}, _trained(), per_seed)
    written = experiment.to_dict()
    assert list(written) == ["experiment", "config", "device", "provenance", "train", "summary", "seeds"]
    assert written["train"] == {
        "seconds": 3.0,
        "compile_seconds": 1.0,
        "agent_steps_per_second": 2e6,
        "num_seeds": 2,
        "dynamics_seconds_per_checkpoint": None,
        "dynamics_compile_seconds": None,
    }
    assert written["seeds"] == [seed.to_dict() for seed in per_seed]
    assert "seed" not in written["summary"]
    assert written["summary"]["return"]["agent"]["mean"] == 8.5
    assert written["summary"]["return_fraction_random_to_belief_greedy"]["mean"] == 0.625
    # The fraction's interval holds the held-out tasks' error beside the seeds' (interval_rules).
    assert written["summary"]["return_fraction_random_to_belief_greedy"] == seeds.interval(
        [0.5, 0.75], task_se=[0.1, 0.1]
    )
    assert json.loads(json.dumps(written, allow_nan=False)) == written
    # An experiment's own top-level keys follow the common ones.
    two_step_results = two_step.TwoStepResults.of(
        "two-step", {}, _trained(), per_seed, family="TwoStep(num_trials=4)"
    )
    assert list(two_step_results.to_dict())[-1] == "family"


# ---------------------------------------------------------------------------------------------
# Every key of results.json is in the schema's docstring

ROOTS = (
    bandit.BanditSeed,
    gridworld.GridworldSeed,
    two_step.TwoStepSeed,
    two_step.TwoStepResults,
    failure.FailureSeed,
    failure.FailureResults,
    rl2_table.RL2TableResults,
    rl2_table.RL2Seed,
    study.StudyResults,
)


def _record_types(root: type, found: set[type]) -> set[type]:
    """``root`` and every result type its fields hold (through dicts, tuples, unions)."""
    if root in found:
        return found
    found.add(root)
    pending = list(typing.get_type_hints(root).values())
    while pending:
        hint = pending.pop()
        pending += typing.get_args(hint)
        if isinstance(hint, type) and issubclass(hint, Record) and dataclasses.is_dataclass(hint):
            _record_types(hint, found)
    return found


def test_every_key_of_every_result_type_is_documented_in_the_schema():
    documented = results.__doc__
    types_found: set[type] = set()
    for root in ROOTS:
        _record_types(root, types_found)
    expected = {state_machine.SimulationMeasures, intervention.PushResponse, intervention.RandomResponse}
    assert expected | {failure.Verdict} <= types_found
    undocumented = {
        f"{kind.__name__}.{json_key(field.name)}"
        for kind in types_found
        for field in dataclasses.fields(kind)
        if not re.search(rf"(?<![\w-]){re.escape(json_key(field.name))}(?![\w-])", documented)
    }
    assert not undocumented
