"""Reference agents run on the same tasks as the trained network.

``policies``: belief policies (random, Thompson sampling, belief-greedy, the gridworld explorer),
the model-free ``QLearning`` learner and ``run_policy``.
``bayes_optimal``: the Bayes-optimal policy of Bernoulli bandits by exact DP over the belief.
``indices``: Gittins index, UCB1, greedy and epsilon-greedy policies of ``bernoulli_bandit``.
"""

from metabelief.baselines.bayes_optimal import (
    BayesOptimal,
    BayesOptimalTable,
    bayes_optimal,
    bayes_optimal_table,
    bayes_optimal_table_size,
    bayes_optimal_value,
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
