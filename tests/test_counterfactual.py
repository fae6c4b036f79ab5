"""The counterfactual update test: known answers (the exact belief's agent, an agent deaf to its
inputs, a fraction c of the Bayes update) and a float64 NumPy recomputation on a tiny case."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief.agents import agent_for
from metabelief.analysis import counterfactual
from metabelief.experiments.probing import split_sizes
from metabelief.rollout import UniformActions, lockstep, rollout, split_lanes
from metabelief.tasks.bandit_base import BetaBelief
from metabelief.testing import sample_tasks

NUM_TASKS, HORIZON = 48, 8
SIZES = split_sizes(NUM_TASKS)  # (24, 12, 12)
BANDIT = metabelief.make("bernoulli_bandit", num_arms=2, horizon=HORIZON)
rollout_jit = jax.jit(rollout, static_argnums=(0, 1))


@dataclasses.dataclass(frozen=True)
class _HandBuilt:
    """The agent protocol around ``_next(params, memory [N, M], inputs [N, 4]) -> memory``: inputs
    ``[one-hot previous arm (2), previous reward, time / horizon]``, memory = carry, uniform policy."""

    memory_size: int
    num_actions: int = 2
    input_size: int = 4

    @property
    def hidden_size(self) -> int:
        return self.memory_size

    def init(self, key):
        return {}

    def initial_carry(self, num_tasks):
        return jnp.zeros((num_tasks, self.memory_size), jnp.float32)

    def inputs(self, obs, prev_action, prev_reward, time):
        time = jnp.broadcast_to(time, prev_reward.shape).astype(jnp.float32) / HORIZON
        one_hot = jax.nn.one_hot(prev_action, 2, dtype=jnp.float32)
        return jnp.concatenate([one_hot, prev_reward[:, None], time[:, None]], -1)

    def step(self, params, carry, inputs):
        memory = self._next(params, carry, inputs)
        return memory, *self.heads(params, memory)

    def memory(self, carry):
        return carry

    def carry_from_memory(self, memory):
        return memory

    def heads(self, params, readout):
        return jnp.zeros((*readout.shape[:-1], 2)), jnp.zeros(readout.shape[:-1])


@dataclasses.dataclass(frozen=True)
class Clock(_HandBuilt):
    """Memory ignores the inputs: it counts steps."""

    memory_size: int = 1

    def _next(self, params, memory, inputs):
        return memory + 1.0


@dataclasses.dataclass(frozen=True)
class FractionOfBayes(_HandBuilt):
    """Memory ``[m_0, m_1, alpha_0, alpha_1, beta_0, beta_1]``: exact Beta counts, and ``m`` moved
    by ``c`` times the Bayes change of the posterior means."""

    memory_size: int = 6
    c: float = 0.4

    def initial_carry(self, num_tasks):
        return jnp.tile(jnp.asarray([0.5, 0.5, 1.0, 1.0, 1.0, 1.0], jnp.float32), (num_tasks, 1))

    def _next(self, params, memory, inputs):
        means, alpha, beta = memory[:, :2], memory[:, 2:4], memory[:, 4:]
        pulled, reward = inputs[:, :2], inputs[:, 2:3]
        alpha, beta = alpha + pulled * reward, beta + pulled * (1.0 - reward)
        bayes_change = alpha / (alpha + beta) - memory[:, 2:4] / (memory[:, 2:4] + memory[:, 4:])
        return jnp.concatenate([means + self.c * bayes_change, alpha, beta], -1)


@dataclasses.dataclass(frozen=True)
class Linear(_HandBuilt):
    """``m' = m A + x B``."""

    memory_size: int = 3

    def init(self, key):
        a_key, b_key = jax.random.split(key)
        return {
            "A": 0.3 * jax.random.normal(a_key, (3, 3)),
            "B": jax.random.normal(b_key, (4, 3)),
        }

    def _next(self, params, memory, inputs):
        return memory @ params["A"] + inputs @ params["B"]


@pytest.fixture(scope="module")
def tiger():
    # The Markov tiger: its update of the log-odds (listen: evidence, then the flip; open: back to
    # 0) depends on the history. Uniformly random actions.
    family = metabelief.make("tiger", p_stay=0.9, horizon=HORIZON)
    tasks = sample_tasks(family, jax.random.key(1), NUM_TASKS)
    return family, lockstep(family, UniformActions(3), key=jax.random.key(0), tasks=tasks).trajectory


@pytest.fixture(scope="module")
def bandit_history():
    tasks = sample_tasks(BANDIT, jax.random.key(1), NUM_TASKS)
    return rollout_jit(BANDIT, Linear(), Linear().init(jax.random.key(0)), jax.random.key(2), tasks)


def test_the_exact_beliefs_agent_moves_its_decoded_belief_as_bayes_for_every_outcome(tiger):
    # The belief oracle's memory holds the tiger's exact log-odds.
    family, history = tiger
    agent = agent_for(family, hidden_size=4, cell="oracle")
    params = agent.init(jax.random.key(0))
    report = counterfactual.update_test(
        family, agent, {"oracle": params}, history, SIZES, coordinates=counterfactual.belief_leaves
    )["oracle"]
    assert len(report.outcomes) == 6 and min(report.num_pairs) > 0  # 3 actions x 2 outcomes
    np.testing.assert_allclose(report.slope, 1.0, atol=1e-3)
    np.testing.assert_allclose(report.r2, 1.0, atol=1e-4)
    assert report.slope_all == pytest.approx(1.0, abs=1e-3) and report.r2_all == pytest.approx(1.0, abs=1e-4)


def test_a_memory_that_ignores_its_inputs_does_not_update(bandit_history):
    report = counterfactual.update_test(BANDIT, Clock(), {"clock": {}}, bandit_history, SIZES)["clock"]
    assert report.outcomes == ("arm 0, reward 0", "arm 0, reward 1", "arm 1, reward 0", "arm 1, reward 1")
    assert report.num_pairs == (HORIZON * SIZES[2],) * 4
    np.testing.assert_allclose(report.slope, 0.0, atol=1e-6)
    assert report.r2 == (None,) * 4  # the decoded change is the same whatever the history


def test_a_fraction_c_of_the_bayes_update_gives_slope_c_and_a_refitted_read_out_rescales_it(bandit_history):
    agent = FractionOfBayes(c=0.4)
    # On the test lanes, as update_test calls it (one compilation for both).
    test = lambda tree: jax.tree.map(lambda leaf: split_lanes(leaf, SIZES)[2], tree)  # noqa: E731
    beliefs = counterfactual.replay_beliefs_jit(BANDIT, bandit_history)
    counts = np.concatenate([np.asarray(beliefs.alpha), np.asarray(beliefs.beta)], -1)
    exact_state = np.concatenate([counts[..., :2] / (counts[..., :2] + counts[..., 2:]), counts], -1)
    outcomes = test(counterfactual.candidate_outcomes(BANDIT, beliefs, bandit_history))
    read_means = np.eye(6, 2, dtype=np.float32)  # the read-out of m: the identity on the means
    decoded, exact = counterfactual.update_changes(
        BANDIT, agent, counterfactual.PosteriorMeans(BANDIT, 2), {},
        test(jnp.asarray(exact_state, jnp.float32)), test(beliefs), test(bandit_history.obs[:-1]),
        outcomes, jnp.asarray(read_means),
    )  # fmt: skip
    fit = counterfactual.fit_changes(decoded, exact, outcomes.valid)
    np.testing.assert_allclose(fit["slope"], 0.4, atol=1e-5)
    np.testing.assert_allclose(fit["r2"], 1.0, atol=1e-5)
    # Replayed, m holds 1/2 + c (posterior mean - 1/2): a read-out fitted on it reads the means
    # exactly, so the update is consistent with the code and the slope is 1.
    refitted = counterfactual.update_test(BANDIT, agent, {"c": {}}, bandit_history, SIZES)["c"]
    np.testing.assert_allclose(refitted.slope, 1.0, atol=1e-2)  # up to the ridge's shrinkage


def _bayes_mean_change_numpy(counts, arm, reward):
    """Exact change of the posterior means ``[..., 2]`` after ``(arm, reward)``, float64."""
    alpha, beta = counts[..., :2], counts[..., 2:]
    after_alpha, after_beta = alpha.copy(), beta.copy()
    after_alpha[..., arm] += reward
    after_beta[..., arm] += 1 - reward
    return after_alpha / (after_alpha + after_beta) - alpha / (alpha + beta)


def _line_numpy(x, y):
    """Slope and R^2 of y on x ``[samples, F]``, each column with its own intercept."""
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    sxx, sxy, syy = np.sum(x * x), np.sum(x * y), np.sum(y * y)
    return sxy / sxx, sxy**2 / (sxx * syy)


def test_update_test_equals_a_float64_numpy_replay_step_and_fit(bandit_history):
    agent, params = Linear(), Linear().init(jax.random.key(0))
    actions, rewards = (np.asarray(a, np.float64) for a in (bandit_history.actions, bandit_history.rewards))
    a_matrix, b_matrix = (np.asarray(params[k], np.float64) for k in ("A", "B"))
    # Replay: the input at t is the action and reward of t - 1 (none at 0) and t / horizon.
    memory, state = np.zeros((HORIZON, NUM_TASKS, 3)), np.zeros((NUM_TASKS, 3))
    counts, state_counts = np.zeros((HORIZON, NUM_TASKS, 4)), np.ones((NUM_TASKS, 4))

    def inputs(arm, reward, time):
        one_hot = np.stack([arm == 0, arm == 1], -1).astype(np.float64)
        return np.concatenate([one_hot, reward[..., None], np.full((*reward.shape, 1), time / HORIZON)], -1)

    for t in range(HORIZON):
        previous = (actions[t - 1], rewards[t - 1]) if t else (np.full(NUM_TASKS, -1.0), np.zeros(NUM_TASKS))
        state = state @ a_matrix + inputs(*previous, t) @ b_matrix
        memory[t], counts[t] = state, state_counts
        pulled = np.stack([actions[t] == 0, actions[t] == 1], -1)
        state_counts = state_counts + np.concatenate(
            [pulled * rewards[t][:, None], pulled * (1 - rewards[t][:, None])], -1
        )
    report = counterfactual.update_test(BANDIT, agent, {"linear": params}, bandit_history, SIZES)["linear"]
    # The read-out: ridge memory -> means on the train + validation lanes, at the strength the
    # probe chose on the validation lanes (metabelief.probes.fit_ridge's penalty).
    fit_lanes = slice(0, SIZES[0] + SIZES[1])
    means = counts[..., :2] / (counts[..., :2] + counts[..., 2:])
    x, y = memory[:, fit_lanes].reshape(-1, 3), means[:, fit_lanes].reshape(-1, 2)
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    penalty = report.ridge * np.trace(x.T @ x) / 3 * np.eye(3)
    weights = np.linalg.solve(x.T @ x + penalty, x.T @ y)
    test_memory, test_counts = memory[:, -SIZES[2] :], counts[:, -SIZES[2] :]
    # The changes themselves (the fit's intercepts would hide an offset), at these weights.
    test = lambda tree: jax.tree.map(lambda leaf: split_lanes(leaf, SIZES)[2], tree)  # noqa: E731
    beliefs = counterfactual.replay_beliefs_jit(BANDIT, bandit_history)
    decoded_jax, exact_jax = counterfactual.update_changes(
        BANDIT, agent, counterfactual.PosteriorMeans(BANDIT, 2), params,
        test(jnp.asarray(memory, jnp.float32)), test(beliefs), test(bandit_history.obs[:-1]),
        test(counterfactual.candidate_outcomes(BANDIT, beliefs, bandit_history)),
        jnp.asarray(weights, jnp.float32),
    )  # fmt: skip
    for k, (arm, reward) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        next_inputs = [
            inputs(np.full(SIZES[2], arm), np.full(SIZES[2], 1.0 * reward), t + 1) for t in range(HORIZON)
        ]
        decoded = (test_memory @ a_matrix + np.stack(next_inputs) @ b_matrix - test_memory) @ weights
        exact = _bayes_mean_change_numpy(test_counts, arm, reward)
        np.testing.assert_allclose(decoded_jax[:, :, k], decoded, rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(exact_jax[:, :, k], exact, rtol=1e-5, atol=1e-7)
        slope, r2 = _line_numpy(exact.reshape(-1, 2), decoded.reshape(-1, 2))
        assert report.slope[k] == pytest.approx(slope, rel=2e-3, abs=1e-4), report.outcomes[k]
        assert report.r2[k] == pytest.approx(r2, rel=2e-3, abs=1e-4), report.outcomes[k]
    assert 0.0 < min(report.r2) and max(report.r2) < 0.99  # a case that is neither 0 nor 1


def test_finite_outcomes_list_each_action_and_outcome_with_positive_probability(tiger):
    family, history = tiger
    labels = counterfactual.outcome_labels(family)
    assert labels[:2] == ("action 0, outcome 0", "action 0, outcome 1") and len(labels) == 6
    beliefs = counterfactual.replay_beliefs_jit(family, history)
    outcomes = counterfactual.candidate_outcomes(family, beliefs, history)
    np.testing.assert_array_equal(outcomes.actions[0, 0], [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(outcomes.next_obs[0, 0, :2], np.eye(2))  # heard left / right
    # The prior is 1/2 left: every outcome is possible at the first step.
    assert bool(outcomes.valid[0].all())
    # The oracle bandit pads a pulled arm's two outcomes with impossible ones: they do not count.
    # Three candidate arms (3 outcomes each: a pull pays one of 2) and the oracle (3 answers).
    oracle_bandit = metabelief.make("oracle_bandit", num_arms=4, horizon=2)
    tasks = sample_tasks(oracle_bandit, jax.random.key(1), 2)
    history = lockstep(oracle_bandit, UniformActions(4), key=jax.random.key(0), tasks=tasks).trajectory
    beliefs = counterfactual.replay_beliefs_jit(oracle_bandit, history)
    valid = counterfactual.candidate_outcomes(oracle_bandit, beliefs, history).valid[0, 0]  # [4 x 3]
    np.testing.assert_array_equal(valid, [True, True, False] * 3 + [True] * 3)


def test_bad_input_raises_naming_the_argument(bandit_history):
    agent, params = Linear(), Linear().init(jax.random.key(0))
    with pytest.raises(ValueError, match="sizes"):
        counterfactual.update_test(BANDIT, agent, {"a": params}, bandit_history, (24, 12, 11))
    with pytest.raises(ValueError, match="networks"):
        counterfactual.update_test(BANDIT, agent, {}, bandit_history, SIZES)
    with pytest.raises(ValueError, match="coordinates"):
        counterfactual.update_test(
            BANDIT, agent, {"a": params}, bandit_history, SIZES, coordinates=_counts_matrix
        )


def _counts_matrix(belief: BetaBelief) -> jax.Array:
    return jnp.stack([belief.alpha, belief.beta])  # [2, num_arms]: not a vector
