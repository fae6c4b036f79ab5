"""LSTMAgent and agent_for reject every bad argument with a ValueError naming it."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import metabelief
from metabelief.agents import LSTMAgent, agent_for

NAN, INF = math.nan, math.inf
GOOD = dict(num_actions=2, obs_size=0, horizon=10, hidden_size=8, time_input=False)


@pytest.mark.parametrize(
    "change, argument",
    [
        *[(dict(num_actions=value), "num_actions") for value in (1, 0, 2.0, True, "2", NAN, INF, None)],
        *[(dict(obs_size=value), "obs_size") for value in (-1, 0.0, False, "0", NAN, None)],
        *[(dict(horizon=value), "horizon") for value in (0, -5, 10.0, True, "10", NAN, INF)],
        *[(dict(hidden_size=value), "hidden_size") for value in (0, 2.5, 8.0, True, "8", NAN, INF, None)],
        *[(dict(time_input=value), "time_input") for value in (1, 0, "False", None, NAN)],
    ],
)
def test_recurrent_agent_rejects_bad_sizes(change, argument):
    with pytest.raises(ValueError, match=re.escape(argument)):
        LSTMAgent(**(GOOD | change))


@pytest.mark.parametrize(
    "family, kwargs, argument",
    [
        ("bernoulli_bandit", {}, "family"),  # a name, not a family
        (None, {}, "family"),
        (object(), {}, "family"),
        (metabelief.make("bernoulli_bandit"), dict(hidden_size=0), "hidden_size"),
        (metabelief.make("bernoulli_bandit"), dict(hidden_size=NAN), "hidden_size"),
        (metabelief.make("bernoulli_bandit"), dict(time_input="yes"), "time_input"),
    ],
)
def test_agent_for_rejects_bad_arguments(family, kwargs, argument):
    with pytest.raises(ValueError, match=re.escape(argument)):
        agent_for(family, **kwargs)


def test_numpy_sizes_are_stored_as_python_ints():
    agent = LSTMAgent(num_actions=np.int64(3), obs_size=np.int32(0), horizon=np.int64(5), hidden_size=4)
    assert agent == LSTMAgent(num_actions=3, obs_size=0, horizon=5, hidden_size=4)
    assert type(agent.num_actions) is int
