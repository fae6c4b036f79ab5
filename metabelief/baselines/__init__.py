"""Reference agents run on the same tasks as the trained network.

``policies``: belief policies (random, Thompson sampling, belief-greedy, the gridworld explorer),
the model-free ``QLearning`` learner and ``run_policy``.
"""

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
    "BeliefGreedy",
    "BeliefPolicy",
    "NearestCandidate",
    "QLearning",
    "RandomPolicy",
    "ThompsonSampling",
    "belief_greedy",
    "nearest_candidate",
    "random_policy",
    "run_policy",
    "thompson_sampling",
]
