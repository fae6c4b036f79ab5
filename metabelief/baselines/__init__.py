"""Reference agents run on the same tasks as the trained network, each chosen by the capability
it needs (``metabelief.tasks.base``), never by a family's class.

``policies``: belief policies (random; Thompson sampling for ``BetaArms`` or ``DependentArms``;
belief-greedy for ``ExpectedRewards``; the gridworld explorer for ``GoalCandidates``), the
model-free ``QLearning`` learner and ``run_policy`` (the lockstep engine, ``metabelief.rollout``).
``bayes_optimal``: the Bayes-optimal policy by exact DP over the belief (``BetaArms``,
``DependentArms``), and of any ``FiniteOutcomes`` family over its belief tree (``belief_tree``).
``indices``: Gittins index, UCB1, greedy and epsilon-greedy policies (``BetaArms``).
"""

from metabelief.baselines.bayes_optimal import (
    BayesOptimal,
    BayesOptimalTable,
    bayes_optimal,
    bayes_optimal_table,
    bayes_optimal_table_size,
    bayes_optimal_value,
)
from metabelief.baselines.belief_tree import (
    BeliefTree,
    BeliefTreePolicy,
    belief_tree_policy,
    belief_tree_value,
)
from metabelief.baselines.indices import (
    UCB1,
    EpsilonGreedy,
    GittinsIndex,
    epsilon_greedy,
    gittins,
    gittins_index_table,
    greedy,
    ucb1,
)
from metabelief.baselines.policies import (
    BeliefGreedy,
    BeliefPolicy,
    NearestCandidate,
    QLearning,
    RandomPolicy,
    ThompsonSampling,
    belief_greedy,
    nearest_candidate,
    random_policy,
    run_policy,
    thompson_sampling,
)

__all__ = [
    "BayesOptimal",
    "BayesOptimalTable",
    "BeliefGreedy",
    "BeliefTree",
    "BeliefTreePolicy",
    "BeliefPolicy",
    "EpsilonGreedy",
    "GittinsIndex",
    "NearestCandidate",
    "QLearning",
    "RandomPolicy",
    "ThompsonSampling",
    "UCB1",
    "bayes_optimal",
    "bayes_optimal_table",
    "bayes_optimal_table_size",
    "bayes_optimal_value",
    "belief_greedy",
    "belief_tree_policy",
    "belief_tree_value",
    "epsilon_greedy",
    "gittins",
    "gittins_index_table",
    "greedy",
    "nearest_candidate",
    "random_policy",
    "run_policy",
    "thompson_sampling",
    "ucb1",
]
