"""``check_family``'s check 9 on the ``FiniteOutcomes`` and ``ReferencePolicies`` capabilities:
the built-in families that declare them pass it, and a family broken in one way each fails with
the capability named. Check 9 runs alone here (``check_capabilities`` on a random rollout, as
``check_family`` calls it); the families' full ``check_family`` runs in their own test files."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from metabelief.tasks import FiniteOutcomes, ReferencePolicies, Tiger
from metabelief.tasks.oracle_bandit import OracleBandit
from metabelief.testing import FamilyCheckError, random_rollout, sample_tasks
from metabelief.testing.capabilities import check_capabilities

NUM_TASKS = 512


def check_nine(family, num_steps=12):
    """Check 9 of ``check_family`` on a random rollout of ``family``; the capabilities checked."""
    key = jax.random.key(0)
    tasks = sample_tasks(family, key, NUM_TASKS)
    data = jax.device_get(jax.jit(random_rollout, static_argnums=(0, 3))(family, key, tasks, num_steps))
    return check_capabilities(family, data)


def test_the_families_that_declare_them_have_them():
    assert isinstance(Tiger(), FiniteOutcomes) and not isinstance(Tiger(), ReferencePolicies)
    assert isinstance(OracleBandit(), FiniteOutcomes) and isinstance(OracleBandit(), ReferencePolicies)


@dataclasses.dataclass(frozen=True)
class DeafTiger(Tiger):
    """Lists the heard side with the prior's probabilities: right outcomes, wrong frequencies."""

    def outcomes(self, belief, obs, action):
        probs, rewards, next_obs = super().outcomes(belief, obs, action)
        return jnp.where(action == 0, jnp.array([0.5, 0.5], jnp.float32), probs), rewards, next_obs


@dataclasses.dataclass(frozen=True)
class ForgetfulTiger(Tiger):
    """Lists the doors' payoffs swapped: the treasure never appears among the outcomes."""

    def outcomes(self, belief, obs, action):
        probs, rewards, next_obs = super().outcomes(belief, obs, action)
        return probs, jnp.where(action == 0, rewards, jnp.float32(self.tiger_reward)), next_obs


@dataclasses.dataclass(frozen=True)
class LeakyTiger(Tiger):
    """Probabilities that do not sum to 1."""

    def outcomes(self, belief, obs, action):
        probs, rewards, next_obs = super().outcomes(belief, obs, action)
        return 0.9 * probs, rewards, next_obs


@dataclasses.dataclass(frozen=True)
class WildOracle(OracleBandit):
    """A reference policy that pulls an arm that does not exist."""

    def reference_policies(self):
        return {"wild": lambda key, belief, obs: jnp.int32(self.num_arms)}


@pytest.mark.parametrize("family", [Tiger(accuracy=0.9, p_stay=0.9), OracleBandit(num_arms=5)], ids=repr)
def test_built_in_families_pass(family):
    checked = check_nine(family)
    assert "FiniteOutcomes" in checked and ("ReferencePolicies" in checked) == isinstance(
        family, OracleBandit
    )


@pytest.mark.parametrize(
    ("family", "message"),
    [
        (DeafTiger(horizon=12), "more often than its probability"),
        (ForgetfulTiger(horizon=12), "did not list"),
        (LeakyTiger(horizon=12), "sum to 1"),
    ],
    ids=["wrong-frequencies", "outcome-missing", "not-normalised"],
)
def test_broken_outcomes_fail_naming_the_capability(family, message):
    with pytest.raises(FamilyCheckError, match=rf"FiniteOutcomes capability\].*{message}"):
        check_nine(family)


def test_a_reference_policy_out_of_range_fails():
    with pytest.raises(FamilyCheckError, match=r"ReferencePolicies capability\].*outside"):
        check_nine(WildOracle(num_arms=4, horizon=4), num_steps=4)
