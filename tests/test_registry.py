"""The registry: make, register, families, and the errors a user sees."""

import dataclasses

import pytest

import metabelief
from metabelief.tasks import BernoulliBandit, DependentBandit, DiscreteDependentBandit, TaskFamily


def test_builtin_families_are_registered():
    assert {"bernoulli_bandit", "dependent_bandit"} <= set(metabelief.families())
    assert list(metabelief.families()) == sorted(metabelief.families())


def test_make_applies_defaults_and_overrides():
    assert metabelief.make("bernoulli_bandit") == BernoulliBandit(
        num_arms=2, horizon=100, prior_a=1.0, prior_b=1.0
    )
    family = metabelief.make("bernoulli_bandit", num_arms=4, prior_b=3)
    assert (family.num_arms, family.num_actions, family.horizon, family.prior_b) == (4, 4, 100, 3.0)
    assert isinstance(family.prior_b, float)
    assert isinstance(family, TaskFamily)


def test_dependent_bandit_picks_the_belief_by_support():
    assert metabelief.make("dependent_bandit", horizon=7) == DependentBandit(horizon=7)
    family = metabelief.make("dependent_bandit", support=[0.1, 0.9])
    assert isinstance(family, DiscreteDependentBandit)
    assert family.support == (0.1, 0.9)
    hash(family)  # families are hashable, so they can be static arguments of jit


def test_families_are_immutable():
    family = metabelief.make("bernoulli_bandit")
    with pytest.raises(dataclasses.FrozenInstanceError):
        family.num_arms = 3


def test_unknown_family_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown family name 'bandit'.*bernoulli_bandit, dependent_bandit"):
        metabelief.make("bandit")


def test_unknown_argument_is_named_with_the_accepted_ones():
    with pytest.raises(ValueError, match=r"takes no argument 'arms'.*accepts: horizon, num_arms, prior_a"):
        metabelief.make("bernoulli_bandit", arms=3)


def test_register_a_user_factory(clean_registry):
    metabelief.register("five_arms", lambda horizon=10: BernoulliBandit(num_arms=5, horizon=horizon))
    assert "five_arms" in metabelief.families()
    assert metabelief.make("five_arms", horizon=3) == BernoulliBandit(num_arms=5, horizon=3)


def test_register_refuses_duplicates_unless_asked(clean_registry):
    with pytest.raises(ValueError, match="already registered"):
        metabelief.register("bernoulli_bandit", BernoulliBandit)
    metabelief.register("bernoulli_bandit", DependentBandit, overwrite=True)
    assert isinstance(metabelief.make("bernoulli_bandit"), DependentBandit)


@pytest.mark.parametrize(
    "name, factory", [("", BernoulliBandit), (3, BernoulliBandit), ("x", "not callable")]
)
def test_register_validates_its_arguments(clean_registry, name, factory):
    with pytest.raises(ValueError, match="name|factory"):
        metabelief.register(name, factory)


def test_factories_taking_var_kwargs_receive_everything(clean_registry):
    metabelief.register("anything", lambda **kwargs: BernoulliBandit(**kwargs))
    assert metabelief.make("anything", num_arms=3).num_arms == 3
