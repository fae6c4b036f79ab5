"""TrainConfig rejects every bad field with a ValueError naming it, at construction (nothing compiles)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from metabelief.train import TrainConfig

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    "fields, argument",
    [
        # family and its arguments
        (dict(family=3), "family"),
        (dict(family=None), "family"),
        (dict(family="no_such_family"), "family"),
        (dict(family_args=5), "family_args"),
        (dict(family_args="horizon=20"), "family_args"),
        (dict(family_args=(("horizon",),)), "family_args"),
        (dict(family_args=((20, "horizon"),)), "family_args"),
        (dict(family_args=(("horizon", 20), ("horizon", 30))), "family_args"),  # inconsistent
        (dict(family_args=(("support", {0.1: 1}),), family="dependent_bandit"), "family_args"),
        (dict(family_args=(("horizon", 0),)), "horizon"),
        (dict(family_args=(("horizon", NAN),)), "horizon"),
        (dict(family_args=(("prior_a", INF),)), "prior_a"),
        # integers
        *[
            (dict([(name, value)]), name)
            for name in ("num_tasks", "num_updates", "updates_per_chunk", "hidden_size", "num_seeds")
            for value in (0, -1, 2.5, 8.0, True, "8", NAN, INF, None)
            if not (name == "num_updates" and value is None)  # None: the algorithm's default
        ],
        *[(dict(seed=value), "seed") for value in (-1, 1.0, False, "0", NAN, None)],
        (dict(seed=2**32), "seed"),  # out of range: seeds are uint32 keys
        (dict(seed=2**32 - 2, num_seeds=3), "num_seeds"),  # inconsistent: the last seed overflows
        *[(dict(devices=value), "devices") for value in (0, -2, 2.0, True, "1", NAN, INF)],
        (dict(num_tasks=6, devices=4), "devices"),  # inconsistent: tasks do not split over devices
        # booleans
        *[
            (dict([(name, value)]), name)
            for name in ("time_input", "anneal_learning_rate")
            for value in (1, 0, "yes", None, NAN)
        ],
        # real numbers
        *[
            (dict([(name, value)]), name)
            for name in ("learning_rate", "max_grad_norm")
            for value in (0.0, -1e-3, NAN, INF, -INF, "1e-3", True, None)
            if not (name == "learning_rate" and value is None)  # None: the algorithm's default
        ],
        *[(dict(gamma=value), "gamma") for value in (-0.1, 1.5, NAN, INF, "0.9", True, None)],
        # the agent and the algorithm
        *[(dict(cell=value), "cell") for value in ("xyz", "LSTM", 3, None, ["lstm"])],
        (dict(agent=object()), "agent"),  # lacks every member of the agent protocol
        *[(dict(algorithm=value), "algorithm") for value in ("sac", "A2C", None, 1)],
        *[(dict(predictive_coef=value), "predictive_coef") for value in (-0.1, NAN, INF, "0.5", True, None)],
        *[(dict(ppo_clip=value), "ppo_clip") for value in (0.0, -0.2, NAN, INF, "0.2", None)],
        *[(dict(gae_lambda=value), "gae_lambda") for value in (-0.1, 1.5, NAN, "0.95", None)],
        *[
            (dict([(name, value)]), name)
            for name in ("ppo_epochs", "ppo_minibatches")
            for value in (0, -1, 2.5, True, "4", None)
        ],
        (dict(algorithm="ppo", num_tasks=30, ppo_minibatches=4), "ppo_minibatches"),  # inconsistent
        *[
            (dict([(name, value)]), name)
            for name in ("value_coef", "entropy_coef")
            for value in (-0.1, NAN, INF, "0.05", False, None)
        ],
    ],
)
def test_train_config_rejects_bad_fields(fields, argument):
    with pytest.raises(ValueError, match=re.escape(argument)):
        TrainConfig(**fields)


@pytest.mark.parametrize(
    "fields, argument",
    [([("family", "bernoulli_bandit")], "fields"), ("family=x", "fields"), ({"famly": "x"}, "famly")],
)
def test_from_dict_rejects_what_is_not_a_dict_of_fields(fields, argument):
    with pytest.raises(ValueError, match=re.escape(argument)):
        TrainConfig.from_dict(fields)


def test_good_values_of_other_numeric_types_are_stored_as_python_numbers():
    config = TrainConfig(
        num_tasks=np.int64(64),
        seed=np.int32(2**31 - 1),
        num_seeds=np.int8(2),
        devices=np.int64(2),
        learning_rate=1,
        gamma=np.float32(0.5),
        time_input=np.bool_(True),
        family_args={"horizon": np.int64(20)},
    )
    assert config == TrainConfig(
        num_tasks=64,
        seed=2**31 - 1,
        num_seeds=2,
        devices=2,
        learning_rate=1.0,
        gamma=0.5,
        time_input=True,
        family_args=(("horizon", 20),),
    )
    assert type(config.num_tasks) is int and type(config.learning_rate) is float
    assert TrainConfig(seed=2**32 - 3, num_seeds=3).seeds[-1] == 2**32 - 1  # the largest uint32 seed
    assert TrainConfig(devices=None).devices is None


def test_unset_learning_rate_and_updates_take_the_algorithms_defaults():
    from metabelief.train.config import DEFAULTS

    for algorithm, defaults in DEFAULTS.items():
        config = TrainConfig(algorithm=algorithm)
        assert (config.learning_rate, config.num_updates) == (
            defaults["learning_rate"],
            defaults["num_updates"],
        )
    assert TrainConfig(algorithm="ppo", learning_rate=3e-3).learning_rate == 3e-3
    assert DEFAULTS["a2c"]["learning_rate"] != DEFAULTS["ppo"]["learning_rate"]
