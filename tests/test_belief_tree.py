"""The belief-tree DP of ``FiniteOutcomes`` families: its values equal independent references (the
count-based Bernoulli DP, hand-derived oracle-bandit values, brute force over candidate sets, a
recursion over the Tiger's P(left)), its policy earns its value, and it refuses what it cannot do."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief.baselines import BayesOptimal, bayes_optimal, bayes_optimal_value, run_policy
from metabelief.baselines.belief_tree import (
    BeliefTreePolicy,
    belief_tree,
    belief_tree_policy,
    belief_tree_value,
)
from metabelief.tasks import BernoulliBandit, FiniteOutcomes, OracleBandit, OracleTask, Tiger, TigerTask
from metabelief.tasks.tiger import LISTEN, OPEN_LEFT, OPEN_RIGHT

# The outcomes' probabilities are float32 (the FiniteOutcomes contract), so the tree's values
# carry float32 rounding: about 1e-7 relative, far below any error of the DP itself.
REL = 1e-6


@functools.partial(jax.jit, static_argnums=(0, 1), static_argnames="num_steps")
def play(family, policy, key, tasks, num_steps=None):
    rollout = run_policy(family, policy, key, tasks, num_steps)
    return rollout.actions, rollout.rewards


# --- 1. A Bernoulli bandit given outcomes: the tree equals the count-based DP ---------------------


@dataclasses.dataclass(frozen=True)
class OutcomeBernoulliBandit(BernoulliBandit):
    """``bernoulli_bandit`` with the ``FiniteOutcomes`` capability: the pulled arm pays 1 with its
    posterior mean, else 0."""

    def outcomes(self, belief, obs, action):
        del obs
        mean = (belief.alpha / (belief.alpha + belief.beta))[action]
        probs = jnp.stack([mean, 1.0 - mean]).astype(jnp.float32)
        return probs, jnp.array([1.0, 0.0], jnp.float32), jnp.zeros((2, 0), jnp.float32)


def test_the_bernoulli_subclass_has_the_capability():
    family = OutcomeBernoulliBandit(num_arms=2, horizon=3)
    assert isinstance(family, FiniteOutcomes)
    assert not isinstance(BernoulliBandit(num_arms=2, horizon=3), FiniteOutcomes)


@pytest.mark.parametrize(
    "num_arms, horizon, prior_a, prior_b", [(2, 8, 1.0, 1.0), (3, 6, 1.0, 1.0), (2, 8, 2.0, 1.0)]
)
def test_bernoulli_tree_value_equals_the_count_based_dp(num_arms, horizon, prior_a, prior_b):
    sizes = dict(num_arms=num_arms, horizon=horizon, prior_a=prior_a, prior_b=prior_b)
    expected = bayes_optimal_value(BernoulliBandit(**sizes))
    assert belief_tree(OutcomeBernoulliBandit(**sizes)).value == pytest.approx(expected, rel=REL, abs=0.0)


@functools.cache
def discounted_bernoulli_value(counts: tuple, steps: int, prior: tuple, gamma: float) -> float:
    """float64 recursion over (successes, failures) per arm: max over arms of
    m (1 + gamma V(success)) + (1 - m) gamma V(failure), m the arm's posterior mean."""
    if steps == 0:
        return 0.0
    q_values = []
    for arm, (wins, losses) in enumerate(counts):
        mean = (prior[0] + wins) / (prior[0] + prior[1] + wins + losses)
        success, failure = list(counts), list(counts)
        success[arm], failure[arm] = (wins + 1, losses), (wins, losses + 1)
        after_success = discounted_bernoulli_value(tuple(success), steps - 1, prior, gamma)
        after_failure = discounted_bernoulli_value(tuple(failure), steps - 1, prior, gamma)
        q_values.append(mean * (1.0 + gamma * after_success) + (1.0 - mean) * gamma * after_failure)
    return max(q_values)


def test_discounted_bernoulli_tree_value_equals_a_recursion_over_beta_counts():
    family = OutcomeBernoulliBandit(num_arms=2, horizon=8, prior_a=1.0, prior_b=1.0)
    expected = discounted_bernoulli_value(((0, 0),) * 2, 8, (1.0, 1.0), 0.9)
    assert belief_tree(family, 0.9).value == pytest.approx(expected, rel=REL, abs=0.0)
    assert belief_tree_value(family, 0.9) == belief_tree(family, 0.9).value
    # Discounting matters here: the undiscounted value is larger.
    assert belief_tree(family).value > expected + 0.1


# --- 2. The oracle bandit: hand-derived values and brute force over candidate sets --------------


DEFAULT_ORACLE = OracleBandit()  # 10 candidates and the oracle, 6 pulls, target 5, other 1


def test_oracle_bandit_values_by_hand():
    # Ask the oracle (it pays (target + 1) / 10: 0.55 on average), then pull the target 5 times.
    assert belief_tree_value(DEFAULT_ORACLE) == pytest.approx(0.55 + 5 * 5.0, rel=REL)
    # One pull: a candidate pays 0.1 * 5 + 0.9 * 1 = 1.4, more than the oracle's 0.55.
    assert belief_tree_value(OracleBandit(horizon=1)) == pytest.approx(1.4, rel=REL)


def oracle_brute_force(family: OracleBandit):
    """``q(possible, steps)``: the Q-value of every arm when the target is uniform over the
    frozenset ``possible`` of candidates and ``steps`` pulls remain (float64, memoised)."""
    candidates = family.num_arms - 1
    target, other = family.target_reward, family.other_reward

    @functools.cache
    def value(possible: frozenset, steps: int) -> float:
        return max(q(possible, steps)) if steps > 0 else 0.0

    @functools.cache
    def q(possible: frozenset, steps: int) -> tuple:
        q_values = []
        for arm in range(candidates):
            if arm not in possible:  # ruled out: pays other_reward and teaches nothing
                q_values.append(other + value(possible, steps - 1))
                continue
            hit = 1.0 / len(possible)
            miss = (1.0 - hit) * (other + value(possible - {arm}, steps - 1)) if hit < 1.0 else 0.0
            q_values.append(hit * (target + value(frozenset({arm}), steps - 1)) + miss)
        oracle = sum((c + 1) / 10 + value(frozenset({c}), steps - 1) for c in possible) / len(possible)
        return (*q_values, oracle)

    return q, value


def test_oracle_bandit_root_values_equal_brute_force():
    for horizon in range(1, 6):
        family = OracleBandit(num_arms=6, horizon=horizon)
        _, value = oracle_brute_force(family)
        expected = value(frozenset(range(5)), horizon)
        assert belief_tree_value(family) == pytest.approx(expected, rel=REL, abs=1e-6), horizon


def oracle_child(family: OracleBandit, possible: frozenset, action: int, reward: float) -> frozenset:
    """The reference posterior after ``action`` paid ``reward``."""
    if action == family.oracle_arm:
        return frozenset({int(round(reward * 10)) - 1})
    if action not in possible:
        return possible
    if abs(reward - family.target_reward) < abs(reward - family.other_reward):
        return frozenset({action})
    return possible - {action}


ORACLE_SETTINGS = {  # (target_reward, other_reward)
    "asks": (5.0, 1.0),
    "never-asks": (5.0, 4.9),  # a miss costs 0.1, the oracle pays at most 0.5
    "avoid": (0.0, 1.0),  # the target is the arm to avoid
}


@pytest.mark.parametrize("setting", ORACLE_SETTINGS)
def test_oracle_bandit_every_q_value_of_the_tree_equals_brute_force(setting):
    """Walks the whole tree from the prior, following each positive-probability outcome to its
    child, and compares each node's Q-values (so every horizon up to 5, from every posterior the
    tree reaches) with brute force at the reference posterior there."""
    target_reward, other_reward = ORACLE_SETTINGS[setting]
    family = OracleBandit(num_arms=6, horizon=5, target_reward=target_reward, other_reward=other_reward)
    q, _ = oracle_brute_force(family)
    tree = belief_tree(family)
    root_q = tree.q_values[0]
    if setting == "asks":  # the oracle first
        assert root_q[family.oracle_arm] == pytest.approx(tree.value, rel=REL)
    else:  # a candidate first: a miss pays nearly as much (never-asks), or more (avoid)
        assert root_q[family.oracle_arm] < tree.value - 0.4
    seen = {0: frozenset(range(5))}
    frontier = [0]
    for depth in range(family.horizon):
        assert all(tree.starts[depth] <= node < tree.starts[depth + 1] for node in frontier)
        next_frontier = []
        for node in frontier:
            possible = seen[node]
            np.testing.assert_allclose(
                tree.q_values[node], q(possible, family.horizon - depth), rtol=REL, atol=1e-6
            )
            if depth + 1 == family.horizon:
                continue
            for action, outcome in zip(*np.nonzero(tree.probs[node] > 0), strict=True):
                child = int(tree.children[node, action, outcome])
                expected = oracle_child(family, possible, action, float(tree.rewards[node, action, outcome]))
                if child in seen:  # a merged node: the same posterior along another path
                    assert seen[child] == expected
                else:
                    seen[child] = expected
                    next_frontier.append(child)
        frontier = next_frontier
    assert len(seen) == tree.num_nodes  # every node is reachable
    for depth in range(family.horizon):  # and equal posteriors are one node
        level = [seen[node] for node in range(tree.starts[depth], tree.starts[depth + 1])]
        assert len(set(level)) == len(level)


# --- 3. The Tiger: a float64 recursion over P(tiger left) --------------------------------------


def tiger_reference(family: Tiger):
    """``q(steps, p)``: the Q-values of listen, open left, open right when the tiger is left with
    probability ``p`` and ``steps`` steps remain (float64, memoised on ``round(p, 12)``)."""
    accuracy, stay = family.accuracy, family.p_stay

    def heard(p: float, left: bool) -> tuple[float, float]:
        """(P(hearing that side), P(left) after hearing it and the tiger's move)."""
        likelihood_left, likelihood_right = (accuracy, 1 - accuracy) if left else (1 - accuracy, accuracy)
        probability = p * likelihood_left + (1 - p) * likelihood_right
        posterior = p * likelihood_left / probability if probability > 0 else p
        return probability, stay * posterior + (1 - stay) * (1 - posterior)

    @functools.cache
    def cached_q(steps: int, p: float) -> tuple:
        listen = family.listen_reward
        for left in (True, False):
            probability, after = heard(p, left)
            if probability > 0:
                listen += probability * value(steps - 1, after)
        reset = value(steps - 1, 0.5)
        open_left = p * family.tiger_reward + (1 - p) * family.treasure_reward + reset
        open_right = (1 - p) * family.tiger_reward + p * family.treasure_reward + reset
        return listen, open_left, open_right

    def q(steps: int, p: float) -> tuple:
        return cached_q(steps, round(p, 12))

    def value(steps: int, p: float) -> float:
        return max(q(steps, p)) if steps > 0 else 0.0

    return q, value, heard


TIGERS = [
    Tiger(accuracy=0.6, horizon=10),
    Tiger(accuracy=0.8, horizon=10),
    Tiger(accuracy=1.0, horizon=7),  # certain hearing: the log-odds become infinite
    Tiger(accuracy=0.8, horizon=10, p_stay=0.5),
    Tiger(accuracy=0.7, horizon=6, p_stay=0.5, tiger_reward=-5.0),  # doors beat listening
]


@pytest.mark.parametrize("family", TIGERS, ids=lambda family: f"{family.accuracy}-{family.p_stay}")
def test_tiger_value_equals_a_recursion_over_p_left(family):
    q, value, heard = tiger_reference(family)
    tree = belief_tree(family)
    assert tree.value == pytest.approx(value(family.horizon, 0.5), rel=REL, abs=1e-5)
    # Every node, at every depth (so every shorter horizon), against the recursion at its P(left).
    seen = {0: (0.5, "none")}  # each node's P(left) and observation (heard left, right, none)
    frontier = [0]
    for depth in range(family.horizon):
        next_frontier = []
        for node in frontier:
            p = seen[node][0]
            np.testing.assert_allclose(tree.q_values[node], q(family.horizon - depth, p), rtol=REL, atol=1e-5)
            if depth + 1 == family.horizon:
                continue
            for action, outcome in zip(*np.nonzero(tree.probs[node] > 0), strict=True):
                child = int(tree.children[node, action, outcome])
                if action == LISTEN:
                    left = bool(tree.next_obs[node, action, outcome, 0] > 0.5)
                    expected = heard(p, left)[1], "left" if left else "right"
                else:
                    assert action in (OPEN_LEFT, OPEN_RIGHT)
                    expected = 0.5, "none"
                if child in seen:  # a merged node: the same posterior along another path
                    assert seen[child][0] == pytest.approx(expected[0], abs=1e-9)
                    assert seen[child][1] == expected[1]
                else:
                    seen[child] = expected
                    next_frontier.append(child)
        frontier = next_frontier
    assert len(seen) == tree.num_nodes  # every node is reachable
    for depth in range(family.horizon):  # and equal beliefs are one node
        level = [seen[node] for node in range(tree.starts[depth], tree.starts[depth + 1])]
        assert len({(round(p, 9), ob) for p, ob in level}) == len(level)
    if family.p_stay == 0.5:  # P(left) is back at 1/2 after every step: a node per observation
        assert tree.num_nodes == 1 + 3 * (family.horizon - 1)
        expected = family.horizon * max(
            family.listen_reward, (family.tiger_reward + family.treasure_reward) / 2
        )
        assert tree.value == pytest.approx(expected, rel=REL)


# --- 4. The policy: it earns its value, and bayes_optimal dispatches to it -----------------------


POLICY_TIGER = TIGERS[1]  # accuracy 0.8, 10 steps


def sample_tasks(family, seed: int, num_tasks: int):
    rng = np.random.default_rng(seed)
    if isinstance(family, OracleBandit):
        return OracleTask(target=jnp.asarray(rng.integers(0, family.num_arms - 1, num_tasks), jnp.int32))
    return TigerTask(left=jnp.asarray(rng.random(num_tasks) < 0.5))


@pytest.mark.parametrize("family", [DEFAULT_ORACLE, POLICY_TIGER], ids=["oracle", "tiger"])
def test_policy_earns_the_tree_value(family):
    num_tasks, extra = 4096, 3 if isinstance(family, OracleBandit) else 0
    policy = belief_tree_policy(family)
    tasks = sample_tasks(family, 3, num_tasks)
    actions, rewards = play(family, policy, jax.random.key(7), tasks, num_steps=family.horizon + extra)
    actions, rewards = np.asarray(actions), np.asarray(rewards, np.float64)
    returns = rewards[: family.horizon].sum(axis=0)
    standard_error = max(returns.std() / np.sqrt(num_tasks), 1e-4)
    assert abs(returns.mean() - policy.value) < 4.0 * standard_error
    assert policy.value == belief_tree_value(family)
    if isinstance(family, OracleBandit):  # ask the oracle, then pull the target, past the horizon too
        target = np.asarray(tasks.target)
        np.testing.assert_array_equal(actions[0], family.oracle_arm)
        np.testing.assert_allclose(rewards[0], (target + 1) / 10, rtol=1e-6)
        np.testing.assert_array_equal(actions[1:], np.broadcast_to(target, actions[1:].shape))
        np.testing.assert_array_equal(rewards[1:], family.target_reward)
    tree = belief_tree(family)
    last = np.arange(tree.starts[-2], tree.starts[-1])  # on the last level each node is its own child
    np.testing.assert_array_equal(
        tree.children[last], np.broadcast_to(last[:, None, None], tree.children[last].shape)
    )


def test_bayes_optimal_dispatches_by_capability():
    for family in (DEFAULT_ORACLE, POLICY_TIGER):
        policy = bayes_optimal(family)
        assert isinstance(policy, BeliefTreePolicy)
        assert policy.family is family and policy.gamma == 1.0
        assert bayes_optimal_value(family) == belief_tree_value(family)
    bernoulli = metabelief.make("bernoulli_bandit", num_arms=2, horizon=5)
    assert isinstance(bayes_optimal(bernoulli), BayesOptimal)
    # A count-based DP fits a BetaArms family, so it wins even when the family lists outcomes.
    assert isinstance(bayes_optimal(OutcomeBernoulliBandit(num_arms=2, horizon=5)), BayesOptimal)


# --- 5. Refusals ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PeekingTiger(Tiger):
    """A Tiger whose first observation shows the tiger's side: it varies by task."""

    def reset(self, key, task):
        state, obs = super().reset(key, task)
        return state, obs.at[0].set(task.left.astype(jnp.float32))


def test_refuses_a_family_without_finite_outcomes():
    family = BernoulliBandit(num_arms=2, horizon=3)
    with pytest.raises(ValueError, match="FiniteOutcomes"):
        belief_tree(family)
    with pytest.raises(ValueError, match="FiniteOutcomes"):
        belief_tree_policy(family)


def test_refuses_the_markov_tiger_whose_beliefs_keep_splitting():
    with pytest.raises(ValueError, match="max_nodes"):
        belief_tree(Tiger(p_stay=0.9, horizon=30), max_nodes=50)


def test_refuses_a_first_observation_that_varies_by_task():
    family = PeekingTiger(horizon=3)
    assert isinstance(family, FiniteOutcomes)
    with pytest.raises(ValueError, match="first observation"):
        belief_tree(family)
