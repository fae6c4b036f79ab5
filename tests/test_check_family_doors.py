"""check_family rejects bad arguments of its own with a ValueError naming them, before any check runs."""

from __future__ import annotations

import math
import re

import jax
import numpy as np
import pytest

import metabelief
from metabelief import testing
from metabelief.testing import structure

NAN, INF = math.nan, math.inf


@pytest.fixture
def no_checks(monkeypatch):
    """Reaching the first check (and so any compilation) fails the test."""

    def reached(family):
        raise AssertionError("check_family ran its checks on bad arguments")

    monkeypatch.setattr(structure, "check_sizes", reached)


@pytest.mark.parametrize(
    "family, kwargs, argument",
    [
        ("bernoulli_bandit", {}, "family"),  # a name, not a family
        *[
            (None, dict(num_tasks=value), "num_tasks")
            for value in (0, -1, 49, 2048.0, True, "2048", NAN, INF)
        ],
        *[(None, dict(num_steps=value), "num_steps") for value in (0, -3, 10.0, True, "10", NAN, INF)],
        *[
            (None, dict(false_alarm_rate=value), "false_alarm_rate")
            for value in (0.0, -1e-4, 1.0, 2.0, NAN, INF, "1e-4", True, None)
        ],
        *[
            (None, dict(key=value), "key")
            for value in (
                0,
                "0",
                np.zeros(2, np.uint32),  # not a jax array
                jax.random.split(jax.random.key(0)),  # two keys, not one
                jax.numpy.zeros(3, jax.numpy.uint32),  # a raw key has two words
                jax.numpy.zeros(2, jax.numpy.float32),
            )
        ],
    ],
    ids=lambda x: repr(x)[:30] if not isinstance(x, dict) else None,
)
def test_check_family_rejects_bad_arguments(no_checks, family, kwargs, argument):
    family = metabelief.make("bernoulli_bandit", horizon=5) if family is None else family
    with pytest.raises(ValueError, match=re.escape(argument)):
        testing.check_family(family, **kwargs)


def test_good_arguments_reach_the_checks(no_checks):
    family = metabelief.make("bernoulli_bandit", horizon=5)
    for kwargs in (
        {},
        dict(num_tasks=testing.calibration.MIN_TASKS_PER_GROUP, num_steps=np.int64(3), false_alarm_rate=0.5),
        dict(key=jax.random.key(1)),
        dict(key=jax.random.PRNGKey(1)),  # a raw uint32[2] key
    ):
        with pytest.raises(AssertionError, match="ran its checks"):
            testing.check_family(family, **kwargs)
