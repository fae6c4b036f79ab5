"""Task families: the contract, its optional capabilities, the built-in families and the registry."""

from metabelief.tasks.bandit_base import BanditFamily, BanditState, BetaBelief
from metabelief.tasks.base import (
    BeliefVariance,
    BetaArms,
    DependentArms,
    ExpectedRewards,
    FiniteOutcomes,
    GoalCandidates,
    ReferencePolicies,
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
from metabelief.tasks.latent_goal_cart import CartBelief, CartState, CartTask, LatentGoalCart
from metabelief.tasks.markov_bandit import MarkovBandit, MarkovBelief, MarkovState, MarkovTask
from metabelief.tasks.oracle_bandit import OracleBandit, OracleBelief, OracleState, OracleTask
from metabelief.tasks.registry import families, make, register
from metabelief.tasks.tabular import (
    TabularBelief,
    TabularFamily,
    TabularState,
    TabularTask,
    random_tabular,
    tabular,
)
from metabelief.tasks.tiger import Tiger, TigerBelief, TigerState, TigerTask
from metabelief.tasks.two_step import TwoStep, TwoStepBelief, TwoStepState, TwoStepTask

register("bernoulli_bandit", BernoulliBandit)
register("dependent_bandit", dependent_bandit)
register("tabular", tabular)
register("gridworld", Gridworld)
register("two_step", TwoStep)
register("oracle_bandit", OracleBandit)
register("markov_bandit", MarkovBandit)
register("tiger", Tiger)
register("latent_goal_cart", LatentGoalCart)

__all__ = [
    "BanditFamily",
    "BanditState",
    "BeliefVariance",
    "BernoulliBandit",
    "BernoulliTask",
    "BetaArms",
    "BetaBelief",
    "CartBelief",
    "CartState",
    "CartTask",
    "DependentArms",
    "DependentBandit",
    "DependentTask",
    "DiscreteDependentBandit",
    "ExpectedRewards",
    "FiniteOutcomes",
    "GoalBelief",
    "GoalCandidates",
    "GoalTask",
    "GridState",
    "Gridworld",
    "LatentGoalCart",
    "MarkovBandit",
    "MarkovBelief",
    "MarkovState",
    "MarkovTask",
    "OracleBandit",
    "OracleBelief",
    "OracleState",
    "OracleTask",
    "ReferencePolicies",
    "SupportBelief",
    "TabularBelief",
    "TabularFamily",
    "TabularState",
    "TabularTask",
    "TaskFamily",
    "Tiger",
    "TigerBelief",
    "TigerState",
    "TigerTask",
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
