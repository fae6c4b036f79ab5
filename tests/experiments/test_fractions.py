"""The "% of the way" return fractions and their standard error over the held-out tasks, against
closed forms, hand-solved values and a Monte Carlo over many held-out sets (NumPy float64)."""

from __future__ import annotations

import types

import jax
import numpy as np
import pytest

import metabelief
from metabelief import baselines
from metabelief.experiments import bandit, fractions
from metabelief.rollout import sample_tasks


def test_an_agent_that_earns_the_reference_on_every_task_is_exactly_there_with_no_error():
    rng = np.random.default_rng(0)
    low, high = rng.normal(50, 5, 64), rng.normal(65, 8, 64)
    assert fractions.return_fraction(high, low, high) == pytest.approx((1.0, 0.0), abs=1e-12)
    assert fractions.return_fraction(low, low, high) == pytest.approx((0.0, 0.0), abs=1e-12)
    # Against exact anchors the same agent keeps the error of its own mean return.
    fraction, se = fractions.return_fraction(high, 50.0, 65.0)
    assert fraction == pytest.approx((high.mean() - 50.0) / 15.0, rel=1e-12)
    assert se == pytest.approx(high.std(ddof=1) / np.sqrt(64) / 15.0, rel=1e-12)
    assert se > 0.03  # large: sd 8 over 64 tasks is half a return unit, in a span of 15


def test_the_paired_standard_error_matches_the_spread_over_many_held_out_sets():
    # Tasks differ in how much can be earned (q); the agent and Thompson both track q, random does
    # not. 300 held-out sets of 256 tasks: the fraction's spread over sets vs its delta-method s.e.
    rng = np.random.default_rng(1)
    sets, tasks = 300, 256
    q = rng.uniform(0.5, 1.0, (sets, tasks))
    random = 50.0 + rng.normal(0, 5, (sets, tasks))
    thompson = 100 * q + rng.normal(0, 4, (sets, tasks))
    agent = 100 * q - 3 + rng.normal(0, 6, (sets, tasks))
    results = np.array(
        [fractions.return_fraction(a, r, t) for a, r, t in zip(agent, random, thompson, strict=True)]
    )
    spread, mean_se = results[:, 0].std(ddof=1), results[:, 1].mean()
    assert mean_se == pytest.approx(spread, rel=0.15)
    # Ignoring that the agent and Thompson share the tasks would count q's spread: far wider.
    unpaired = np.hypot(agent.std(axis=1, ddof=1), thompson.std(axis=1, ddof=1)).mean() / np.sqrt(tasks) / 25
    assert unpaired > 2.5 * spread


def test_exact_random_return_from_the_prior():
    assert fractions.exact_random_return(metabelief.make("bernoulli_bandit")) == 50.0  # Beta(1, 1), 100 pulls
    beta_2_1 = metabelief.make("bernoulli_bandit", prior_a=2.0, prior_b=1.0, horizon=30)
    assert fractions.exact_random_return(beta_2_1) == pytest.approx(20.0)
    assert fractions.exact_random_return(metabelief.make("dependent_bandit", horizon=40)) == 20.0
    assert fractions.exact_random_return(metabelief.make("gridworld")) is None
    # Random play on 4,096 tasks earns it, within 4 standard errors.
    family = metabelief.make("bernoulli_bandit", prior_a=2.0, prior_b=1.0, horizon=8)
    tasks = sample_tasks(family, jax.random.key(0), 4096)
    run_policy = jax.jit(baselines.run_policy, static_argnums=(0, 1))
    played = run_policy(family, baselines.random_policy(family), jax.random.key(1), tasks)
    returns = np.asarray(played.rewards, dtype=np.float64).sum(axis=0)
    assert abs(returns.mean() - fractions.exact_random_return(family)) < 4 * returns.std() / 64


def test_bandit_fractions_use_the_exact_anchors_and_the_shared_tasks():
    # Two pulls of two Beta(1, 1) arms: random earns 1; Bayes-optimal 1/2 + (1/2 · 2/3 + 1/2 · 1/2) = 13/12.
    family = metabelief.make("bernoulli_bandit", horizon=2)
    rng = np.random.default_rng(2)
    rewards = {
        name: rng.integers(0, 2, (2, 32)).astype(np.float32) for name in ("agent", "random", "thompson")
    }
    evaluation = types.SimpleNamespace(
        family=family,
        history=types.SimpleNamespace(rewards=rewards["agent"]),
        references={name: types.SimpleNamespace(rewards=rewards[name]) for name in ("random", "thompson")},
    )
    got = bandit.return_fractions(evaluation)
    agent, random, thompson = (rewards[name].sum(axis=0).astype(np.float64) for name in rewards)
    span = 13 / 12 - 1.0
    assert got["return_fraction_random_to_bayes_optimal"] == pytest.approx(
        (agent.mean() - 1.0) / span, rel=1e-9
    )
    assert got["return_fraction_random_to_bayes_optimal_se"] == pytest.approx(
        agent.std(ddof=1) / np.sqrt(32) / span, rel=1e-9
    )
    fraction = (agent.mean() - random.mean()) / (thompson.mean() - random.mean())
    assert got["return_fraction_random_to_thompson"] == pytest.approx(fraction, rel=1e-9)
    assert got["return_fraction_random_to_thompson_se"] > 0


def test_bad_anchors_raise_naming_them():
    agent = np.ones(8)
    with pytest.raises(ValueError, match="agent must hold"):
        fractions.return_fraction(np.ones(1), 0.0, 1.0)
    with pytest.raises(ValueError, match="high must be a number or the returns of the agent's 8 tasks"):
        fractions.return_fraction(agent, 0.0, np.ones(7))
    with pytest.raises(ValueError, match="low must be finite"):
        fractions.return_fraction(agent, float("nan"), 1.0)
    assert np.isnan(fractions.return_fraction(agent, np.ones(8), 1.0)).all()  # no span: undefined
