"""The Bayes-optimal DP at a discount gamma (the state-machine simulation's Bayes agent at the
network's training gamma): values and policies against a float64 recursion over the belief tree."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief.baselines.bayes_optimal import BayesOptimal, bayes_optimal
from metabelief.tasks.bandit_base import BetaBelief

HORIZON, PRIOR_A, PRIOR_B = 4, 2.0, 0.5


def _q_values(
    gamma: float, successes: tuple, failures: tuple, horizon: int = HORIZON, prior=(PRIOR_A, PRIOR_B)
) -> np.ndarray:
    """Q(b, a) of the gamma-discounted return over the remaining pulls, by plain recursion."""

    @functools.cache
    def value(successes, failures):
        if sum(successes) + sum(failures) == horizon:
            return 0.0
        return max(q(successes, failures))

    def q(successes, failures):
        values = []
        for arm in range(2):
            p = (prior[0] + successes[arm]) / (sum(prior) + successes[arm] + failures[arm])
            won = tuple(s + (i == arm) for i, s in enumerate(successes))
            lost = tuple(f + (i == arm) for i, f in enumerate(failures))
            values.append(p + gamma * (p * value(won, failures) + (1 - p) * value(successes, lost)))
        return values

    return np.array(q(successes, failures))


# Every belief state before the last pull: (successes, failures) of both arms, fewer than H pulls.
STATES = [
    ((s0, s1), (f0, f1))
    for s0, s1, f0, f1 in itertools.product(range(HORIZON), repeat=4)
    if s0 + s1 + f0 + f1 < HORIZON
]


@functools.partial(jax.jit, static_argnums=0)
def _dp_at(policy: BayesOptimal, alpha: jax.Array, beta: jax.Array):
    statistic = BetaBelief(alpha=alpha, beta=beta)
    return jax.vmap(policy.action_values_at)(statistic), jax.vmap(policy.action_probs_at)(statistic)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.9, 1.0])
def test_the_discounted_dp_has_the_recursions_values_and_optimal_actions_everywhere(gamma):
    family = metabelief.make(
        "bernoulli_bandit", num_arms=2, horizon=HORIZON, prior_a=PRIOR_A, prior_b=PRIOR_B
    )
    policy = bayes_optimal(family, gamma)
    assert isinstance(policy, BayesOptimal) and policy.gamma == gamma
    assert policy.value == pytest.approx(_q_values(gamma, (0, 0), (0, 0)).max(), rel=1e-12)
    successes, failures = (np.array([state[i] for state in STATES], np.float32) for i in (0, 1))
    values, probs = _dp_at(policy, jnp.asarray(successes + PRIOR_A), jnp.asarray(failures + PRIOR_B))
    expected = np.array([_q_values(gamma, *state) for state in STATES])
    np.testing.assert_allclose(values, expected, rtol=1e-6)
    optimal = np.isclose(expected, expected.max(-1, keepdims=True), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(probs, optimal / optimal.sum(-1, keepdims=True))


def test_discounting_changes_the_optimal_action_where_exploring_pays_later():
    """Arm 0 pulled 9 times (5 wins, mean 6/11 under Beta(1, 1)), arm 1 never (mean 1/2), 11 pulls
    left: greedy on the mean (gamma 0) pulls arm 0; undiscounted, the recursion explores arm 1. The
    DP follows the recursion at both, so the two Bayes agents differ; a gamma outside [0, 1] is
    refused."""
    horizon, state = 20, ((5, 0), (4, 0))
    family = metabelief.make("bernoulli_bandit", num_arms=2, horizon=horizon)
    statistic = BetaBelief(alpha=jnp.array([6.0, 1.0]), beta=jnp.array([5.0, 1.0]))
    for gamma, arm in ((0.0, 0), (1.0, 1)):
        q_values = _q_values(gamma, *state, horizon=horizon, prior=(1.0, 1.0))
        assert q_values.argmax() == arm and abs(q_values[0] - q_values[1]) > 1e-3
        np.testing.assert_array_equal(bayes_optimal(family, gamma).action_probs_at(statistic), np.eye(2)[arm])
    for gamma in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="gamma"):
            BayesOptimal(family, gamma)
