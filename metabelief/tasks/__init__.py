"""Task families: the contract, its optional capabilities, the built-in families and the registry."""

from metabelief.tasks.bandit_base import BanditFamily, BanditState, BetaBelief
from metabelief.tasks.base import (
    BeliefVariance,
    BetaArms,
    DependentArms,
    ExpectedRewards,
    GoalCandidates,
    TaskFamily,
)
from metabelief.tasks.bernoulli_bandit import BernoulliBandit, BernoulliTask
from metabelief.tasks.dependent_bandit import (
    DependentBandit,
    DependentTask,
    DiscreteDependentBandit,
    SupportBelief,
    dependent_bandit,
)
from metabelief.tasks.gridworld import GoalBelief, GoalTask, GridState, Gridworld
from metabelief.tasks.registry import families, make, register
from metabelief.tasks.tabular import (
    TabularBelief,
    TabularFamily,
    TabularState,
    TabularTask,
    random_tabular,
    tabular,
)
from metabelief.tasks.two_step import TwoStep, TwoStepBelief, TwoStepState, TwoStepTask

register("bernoulli_bandit", BernoulliBandit)
register("dependent_bandit", dependent_bandit)
register("tabular", tabular)
register("gridworld", Gridworld)
register("two_step", TwoStep)

__all__ = [
    "BanditFamily",
    "BanditState",
    "BeliefVariance",
    "BernoulliBandit",
    "BernoulliTask",
    "BetaArms",
    "BetaBelief",
    "DependentArms",
    "DependentBandit",
    "DependentTask",
    "DiscreteDependentBandit",
    "ExpectedRewards",
    "GoalBelief",
    "GoalCandidates",
    "GoalTask",
    "GridState",
    "Gridworld",
    "SupportBelief",
    "TabularBelief",
    "TabularFamily",
    "TabularState",
    "TabularTask",
    "TaskFamily",
    "TwoStep",
    "TwoStepBelief",
    "TwoStepState",
    "TwoStepTask",
    "dependent_bandit",
    "families",
    "make",
    "random_tabular",
    "register",
    "tabular",
]
