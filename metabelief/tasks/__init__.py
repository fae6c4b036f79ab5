"""Task families: the contract, the built-in families and the registry."""

from metabelief.tasks.bandit_base import BanditFamily, BanditState, BetaBelief
from metabelief.tasks.base import TaskFamily
from metabelief.tasks.bernoulli_bandit import BernoulliBandit, BernoulliTask
from metabelief.tasks.dependent_bandit import (
    DependentBandit,
    DependentTask,
    DiscreteDependentBandit,
    SupportBelief,
    dependent_bandit,
)
from metabelief.tasks.registry import families, make, register

register("bernoulli_bandit", BernoulliBandit)
register("dependent_bandit", dependent_bandit)

__all__ = [
    "BanditFamily",
    "BanditState",
    "BernoulliBandit",
    "BernoulliTask",
    "BetaBelief",
    "DependentBandit",
    "DependentTask",
    "DiscreteDependentBandit",
    "SupportBelief",
    "TaskFamily",
    "dependent_bandit",
    "families",
    "make",
    "register",
]
