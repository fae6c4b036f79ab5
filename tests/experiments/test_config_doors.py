"""Every experiment config rejects bad fields with a ValueError naming them, at construction."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest

from metabelief import experiments
from metabelief.experiments.bandit import BanditConfig
from metabelief.experiments.failure import FailureConfig
from metabelief.experiments.gridworld import GridworldConfig
from metabelief.experiments.rl2_table import ROWS, RL2TableConfig
from metabelief.experiments.two_step import TwoStepConfig
from metabelief.train import TrainConfig

NAN, INF = math.nan, math.inf
PROBED = (BanditConfig, GridworldConfig, TwoStepConfig, FailureConfig)  # held-out tasks cut 1/2, 1/4, 1/4


def _cases():
    for config in (*PROBED, RL2TableConfig):
        name = config.__name__
        for value in ("x", None, {}, config().train.to_dict()):
            yield pytest.param(config, dict(train=value), "train", id=f"{name}-train={value!r:.20}")
        for value in (NAN, INF, "4096", 4096.0, True, -1):
            yield pytest.param(config, dict(eval_tasks=value), "eval_tasks", id=f"{name}-eval_tasks={value}")
    for config in PROBED:
        name = config.__name__
        yield pytest.param(config, dict(eval_tasks=8), "eval_tasks", id=f"{name}-eval_tasks=8")
        for value in (0, 2.5, NAN, INF, "100", False):
            yield pytest.param(config, dict(mlp_steps=value), "mlp_steps", id=f"{name}-mlp_steps={value}")
    for config in (BanditConfig, TwoStepConfig):  # the intervention's dose grid and random directions
        for field in ("intervention_doses", "intervention_random"):
            for value in (1, 2.5, NAN, "8", True):
                yield pytest.param(config, {field: value}, field, id=f"{config.__name__}-{field}={value}")
    # The family each experiment is built on (inconsistent: its run needs that family's attributes).
    wrong_family = {
        BanditConfig: TrainConfig(family="gridworld"),
        GridworldConfig: TrainConfig(family="bernoulli_bandit"),
        TwoStepConfig: TrainConfig(family="dependent_bandit"),
        FailureConfig: TrainConfig(family="dependent_bandit"),  # p ~ U[0, 1]: no training support
        RL2TableConfig: TrainConfig(family="two_step"),
    }
    for config, train in wrong_family.items():
        yield pytest.param(config, dict(train=train), "train.family", id=f"{config.__name__}-family")


def _specific_cases():
    two_step = (
        [(dict(stay_blocks=value), "stay_blocks") for value in (1, 0, 3, 4.0, True, "16", NAN, INF)]
        + [
            (dict(model_free_learning_rate=value), "model_free_learning_rate")
            for value in (0.0, -0.5, 1.5, NAN, INF, "1", True)
        ]
        + [
            (dict(model_free_inverse_temperature=value), "model_free_inverse_temperature")
            for value in (-1.0, NAN, INF, -INF, "5", None)
        ]
    )
    failure = [(dict(horizon_factor=value), "horizon_factor") for value in (1, 0, 2.0, True, "2", NAN)] + [
        (
            dict(train=TrainConfig(family="dependent_bandit", family_args=(("support", (0.2, 0.8)),))),
            "support",
        )
    ]
    rl2 = (
        [(dict(rows=value), "rows") for value in ((), "small", None, 5, ((5,),), ((5, 10, 1),))]
        + [(dict(rows=((arms, pulls),)), "rows") for arms, pulls in ((1, 10), (5, 0), (5.0, 10), (True, 10))]
        + [(dict(rows=((5, NAN),)), "rows"), (dict(rows=((5, 10), (5, 10))), "rows")]  # repeated row
        + [(dict(eval_tasks=1), "eval_tasks")]
        + [
            (dict([(name, value)]), name)
            for name in ("agent_steps", "max_updates")
            for value in (0, -1, 1e6, NAN, INF, "100", True)
        ]
    )
    for config, cases in ((TwoStepConfig, two_step), (FailureConfig, failure), (RL2TableConfig, rl2)):
        for fields, argument in cases:
            yield pytest.param(config, fields, argument, id=f"{config.__name__}-{fields!r:.40}")


@pytest.mark.parametrize("config, fields, argument", [*_cases(), *_specific_cases()])
def test_experiment_config_rejects_bad_fields(config, fields, argument):
    with pytest.raises(ValueError, match=re.escape(argument)):
        config(**fields)


@pytest.mark.parametrize("name", sorted(set(experiments.EXPERIMENTS) - {"study"}))  # study: a grid, no train
def test_default_quick_and_replaced_configs_still_construct(name):
    _, config = experiments.EXPERIMENTS[name]
    for built in (config(), config.quick()):
        five_seeds = dataclasses.replace(built.train, num_seeds=5)
        assert dataclasses.replace(built, train=five_seeds).train.num_seeds == 5
    with pytest.raises(ValueError, match="num_seeds"):  # replace() goes through the same door
        dataclasses.replace(config(), train=dataclasses.replace(config().train, num_seeds=0))


def test_rl2_table_accepts_every_published_row_and_lists_as_rows():
    assert RL2TableConfig(rows=ROWS["all"]).rows == ROWS["all"]
    assert RL2TableConfig(rows=[[5, 10]]).rows == ((5, 10),)
