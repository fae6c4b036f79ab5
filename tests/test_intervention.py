"""The causal test on LSTMs and on a hand-built belief reader: known answers for the trace, the
observational sensitivity and their ratio; the report, its table and its plot."""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief.agents import agent_for
from metabelief.analysis import intervention
from metabelief.experiments import plots, protocol, seeds
from metabelief.experiments.probing import split_sizes
from metabelief.rollout import replay_jit, rollout, split_lanes
from metabelief.testing import sample_tasks

NUM_TASKS, HORIZON, HIDDEN = 64, 12, 8
SIZES = split_sizes(NUM_TASKS)  # (32, 16, 16)
DELTAS = (-0.3, -0.1, 0.1, 0.3)
KEY = jax.random.key(5)
rollout_jit = jax.jit(rollout, static_argnums=(0, 1))


def _setup(family, agent, params, seed=0):
    tasks = sample_tasks(family, jax.random.key(seed + 1), NUM_TASKS)
    return agent, params, rollout_jit(family, agent, params, jax.random.key(seed + 2), tasks)


@pytest.fixture(scope="module")
def bandit():
    family = metabelief.make("bernoulli_bandit", num_arms=2, horizon=HORIZON)
    agent = agent_for(family, hidden_size=HIDDEN)
    return (family, *_setup(family, agent, agent.init(jax.random.key(0))))


@pytest.fixture(scope="module")
def two_step():
    family = metabelief.make("two_step", num_trials=HORIZON)
    agent = agent_for(family, hidden_size=HIDDEN, time_input=True)
    return (family, *_setup(family, agent, agent.init(jax.random.key(0))))


def _with_policy(params, kernel, bias):
    """``params`` with the policy head replaced (the memory, hence the read-out, kept)."""
    inner = dict(params["params"])
    inner["policy"] = {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}
    return {"params": inner}


def _respond(family, agent, networks, history, target, **options):
    options = {"deltas": DELTAS, "trace_steps": 2, "num_random": 3} | options
    return intervention.dose_response(
        family, agent, networks, history, SIZES, target=target, key=KEY, **options
    )


# ---------------------------------------------------------------------------------------------
# A hand-built agent whose memory holds the exact posterior means: the ratio is 1


@dataclasses.dataclass(frozen=True)
class MeanReader:
    """Memory = readout = ``[posterior mean of each arm, pulls of each arm]`` of a Beta(1, 1)
    bandit, updated exactly from the input; the policy is linear in the memory (``heads``). A pushed
    mean becomes pseudo-counts in ``carry_from_memory``, so the push persists."""

    num_actions: int = 2
    input_size: int = 3  # one-hot previous action, previous reward
    hidden_size: int = 4
    memory_size: int = 4

    def init(self, key):
        return {"params": {"policy": {"kernel": jnp.zeros((4, 2)), "bias": jnp.zeros(2)}}}

    def initial_carry(self, num_tasks):
        return jnp.zeros((num_tasks, 2)), jnp.zeros((num_tasks, 2))  # successes, failures

    def inputs(self, obs, prev_action, prev_reward, time):
        del obs, time
        return jnp.concatenate([jax.nn.one_hot(prev_action, 2), prev_reward[:, None].astype(jnp.float32)], -1)

    def step(self, params, carry, inputs):
        successes, failures = carry
        pulled, reward = inputs[:, :2], inputs[:, 2:]
        carry = successes + pulled * reward, failures + pulled * (1.0 - reward)
        logits, value = self.heads(params, self.memory(carry))
        return carry, logits, value

    def memory(self, carry):
        successes, failures = carry
        pulls = successes + failures
        return jnp.concatenate([(1.0 + successes) / (2.0 + pulls), pulls], -1)

    def carry_from_memory(self, memory):
        means, pulls = memory[..., :2], memory[..., 2:]
        successes = means * (2.0 + pulls) - 1.0
        return successes, pulls - successes

    def heads(self, params, readout):
        policy = params["params"]["policy"]
        return readout @ policy["kernel"] + policy["bias"], readout[..., 0] * 0.0


@pytest.fixture(scope="module")
def mean_reader():
    family = metabelief.make("bernoulli_bandit", num_arms=2, horizon=HORIZON)
    agent = MeanReader()
    # A fixed policy preferring arm 0 as its mean grows plays the histories.
    player = _with_policy(agent.init(None), np.array([[2.0, 0.0], [0.0, 2.0], [0, 0], [0, 0]]), np.zeros(2))
    return (family, *_setup(family, agent, player, seed=3))


def test_a_policy_that_reads_the_belief_through_the_read_out_responds_as_its_own_behaviour_says(mean_reader):
    """log-odds(arm 0) = beta (W' m + c)_0: a push moving the read-out by δ moves the log-odds by beta δ,
    and since the memory holds the exact means the logistic fit of its behaviour finds beta too."""
    family, agent, player, history = mean_reader
    replayed = replay_jit(family, agent, player, history)
    read_out, _ = intervention.fit_read_out(agent, replayed, SIZES, num_means=2)
    weights, bias = (np.asarray(v, np.float64) for v in (read_out.probe.weights, read_out.probe.bias))
    beta = 3.0
    kernel = np.stack([beta * weights[:, 0], np.zeros(4)], axis=1)
    reads = _with_policy(player, kernel, [beta * bias[0], 0.0])
    report = _respond(family, agent, {"reads": reads}, history, intervention.bandit_arm_target(family))[
        "reads"
    ]
    assert report.read_out_r2 > 0.9999  # the memory holds the means exactly
    assert report.observational_slope == pytest.approx(beta, rel=1e-3)
    pushed = report.pushes["minimum_mahalanobis"]
    np.testing.assert_allclose(pushed.log_odds[0], beta * np.asarray(DELTAS), rtol=1e-4)
    assert pushed.causal_to_observational[0] == pytest.approx(1.0, abs=2e-3)
    # Per unit of decoded belief every belief push moves the log-odds by beta at the push.
    for push in report.pushes.values():
        assert push.log_odds_slope[0] == pytest.approx(beta, rel=1e-3)
    # A head that reads arm 1's read-out only is not moved by a push that holds it fixed.
    other = np.stack([beta * weights[:, 1], np.zeros(4)], axis=1)
    ignores = _respond(family, agent, {"n": _with_policy(player, other, [0.0, 0.0])}, history,
                       intervention.bandit_arm_target(family))["n"]  # fmt: skip
    np.testing.assert_allclose(ignores.pushes["minimum_mahalanobis"].log_odds[0], 0.0, atol=1e-4)
    assert abs(ignores.observational_slope) < 0.01


# ---------------------------------------------------------------------------------------------
# The LSTM: the whole memory [h, c] pushed, the trace stepped by hand


def test_the_trace_equals_stepping_the_lstm_by_hand_from_the_pushed_whole_memory(two_step):
    family, agent, params, history = two_step
    params = _with_policy(params, np.random.default_rng(1).standard_normal((HIDDEN, 2)), [0.2, -0.1])
    target = intervention.two_step_target(family)
    report = _respond(family, agent, {"net": params}, history, target)["net"]

    replayed = replay_jit(family, agent, params, history)
    read_out, moments = intervention.fit_read_out(agent, replayed, SIZES, num_means=1)
    covariance = intervention.activity_covariance(moments, agent.memory_size)
    push = intervention.minimum_mahalanobis_push(read_out.probe.weights, covariance, 0)
    assert np.abs(push[HIDDEN:]).max() > 0.1 * np.abs(push).max()  # the cell state is pushed too
    test = jax.tree.map(lambda leaf: split_lanes(leaf, SIZES)[2], replayed)
    delta = DELTAS[-1]

    def log_odds(logits):
        return np.asarray(logits[..., 0] - logits[..., 1], np.float64)

    for k in (1, 2):
        changes = []
        for t in range(HORIZON - k):
            pushed = agent.carry_from_memory(test.memory[t] + jnp.asarray(delta * push, jnp.float32))
            for step in range(t + 1, t + k + 1):
                inputs = agent.inputs(
                    test.obs[step], test.actions[step - 1], test.rewards[step - 1], jnp.asarray(step)
                )
                pushed, logits, _ = agent.step(params, pushed, inputs)
            changes.append(log_odds(logits) - log_odds(test.logits[t + k]))
        assert report.pushes["minimum_mahalanobis"].log_odds[k][-1] == pytest.approx(
            np.mean(changes), abs=2e-4
        )
        assert abs(np.mean(changes)) > 1e-3  # the push does reach step k
    assert report.num_steps == tuple((HORIZON - k) * SIZES[2] for k in range(3))


def test_a_uniform_policy_does_not_respond_and_has_no_sensitivity(bandit):
    family, agent, params, history = bandit
    uniform = _with_policy(params, np.zeros((HIDDEN, 2)), np.zeros(2))
    report = _respond(family, agent, {"u": uniform}, history, intervention.bandit_arm_target(family))["u"]
    for push in report.pushes.values():
        assert np.all(np.asarray(push.log_odds) == 0.0)
    assert np.all(np.asarray(report.random.log_odds_mean) == 0.0)
    assert report.observational_slope == pytest.approx(0.0, abs=1e-5)


# ---------------------------------------------------------------------------------------------
# Pieces


def test_log_odds_of_one_of_three_actions_is_log_p_over_one_minus_p():
    logits = jnp.array([[0.3, -1.2, 2.0], [5.0, 0.0, -3.0]])
    p = np.asarray(jax.nn.softmax(logits), np.float64)
    for action in range(3):
        expected = np.log(p[:, action] / (1 - p[:, action]))
        np.testing.assert_allclose(intervention._log_odds(logits, action), expected, rtol=1e-5)


def test_observational_slope_recovers_a_logistic_policy_and_refuses_a_step_function():
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(50, 8, 2)), jnp.float32)
    mask = jnp.ones((50, 8), bool).at[::3].set(False)
    probs = jax.nn.sigmoid(0.5 + 4.0 * x[..., 0] - 2.0 * x[..., 1])
    assert intervention.observational_slope(x, probs, mask, 0) == pytest.approx(4.0, rel=1e-4)
    assert intervention.observational_slope(x, probs, mask, 1) == pytest.approx(-2.0, rel=1e-4)
    # The steps outside the mask do not count: there the policy is another one.
    mixed = jnp.where(mask, probs, jax.nn.sigmoid(-5.0 * x[..., 0]))
    assert intervention.observational_slope(x, mixed, mask, 0) == pytest.approx(4.0, rel=1e-4)
    step = (x[..., 0] > 0.5).astype(jnp.float32)  # separable: the slope is unbounded
    assert intervention.observational_slope(x, step, mask, 0) is None


def test_the_bayes_optimal_policy_probabilities_are_its_action_probs_on_the_exact_beliefs(bandit):
    family, _, _, history = bandit
    dp = metabelief.baselines.bayes_optimal(family)
    probs = np.asarray(intervention.belief_policy_probs(family, dp, history, 0))
    beliefs = metabelief.rollout.replay_beliefs(family, history)
    for t, lane in ((0, 0), (5, 3), (11, 40)):
        one = jax.tree.map(lambda leaf, t=t, lane=lane: leaf[t, lane], beliefs)
        assert probs[t, lane] == pytest.approx(float(dp.action_probs(one)[0]))
    with pytest.raises(ValueError, match="policy"):
        intervention.belief_policy_probs(family, metabelief.baselines.random_policy(family), history, 0)


# ---------------------------------------------------------------------------------------------
# The report, its table and its plot


@pytest.mark.parametrize("name", ["bandit", "two_step"])
def test_trained_vs_untrained_report_is_complete_finite_and_prints(name, request, tmp_path):
    family, agent, params, history = request.getfixturevalue(name)
    other = agent.init(jax.random.key(42))
    make_target = intervention.bandit_arm_target if name == "bandit" else intervention.two_step_target
    references = {}
    if name == "bandit":
        dp = metabelief.baselines.bayes_optimal(family)
        references = {"bayes_optimal": intervention.belief_policy_probs(family, dp, history, 0)}
    report = _respond(
        family,
        agent,
        {"trained": params, "untrained": other},
        history,
        make_target(family),
        references=references,
    )
    per_seed = []
    for typed in report.values():
        result = typed.to_dict()
        assert json.loads(json.dumps(result, allow_nan=False)) == result
        assert set(result["pushes"]) == set(intervention.PUSHES)
        assert set(result["reference_slopes"]) == set(references)
        for push in result["pushes"].values():
            assert len(push["log_odds"]) == 3 and all(len(row) == len(DELTAS) for row in push["log_odds"])
            assert all(math.isfinite(v) for row in push["log_odds"] for v in row)
            assert push["mahalanobis_norm"] == pytest.approx(result["mahalanobis_per_unit"], rel=1e-6)
        assert len(result["random"]["log_odds_std"][0]) == len(DELTAS)
    per_seed = [{n: r.to_dict() for n, r in report.items()}] * 2
    summary = seeds.summarize(per_seed)
    table = protocol.intervention_table(summary)
    assert "causal / observational, k = 2" in table and "random directions" in table
    assert ("bayes_optimal's" in table) == (name == "bandit")
    plots.intervention(tmp_path / "intervention.png", per_seed)
    assert (tmp_path / "intervention.png").read_bytes().startswith(b"\x89PNG")


def test_bad_arguments_raise_value_errors(bandit, two_step):
    family, agent, params, history = bandit
    target = intervention.bandit_arm_target(family)

    def call(**options):
        sizes = options.pop("sizes", SIZES)
        return intervention.dose_response(
            family, agent, {"net": params}, history, sizes, **({"target": target, "key": KEY} | options)
        )

    for options, argument in (
        ({"sizes": (10, 10, 10)}, "sizes"),
        ({"deltas": []}, "deltas"),
        ({"deltas": [0.1, float("nan")]}, "deltas"),
        ({"deltas": [0.0]}, "deltas"),
        ({"trace_steps": HORIZON}, "trace_steps"),
        ({"num_random": 1}, "num_random"),
        ({"references": {"dp": np.zeros((3, 3))}}, "references"),
        ({"target": intervention.InterventionTarget(name="a std", feature=2, action=0)}, "target"),
        ({"target": intervention.InterventionTarget(name="no action", feature=0, action=2)}, "target.action"),
    ):
        with pytest.raises(ValueError, match=argument):
            call(**options)
    with pytest.raises(ValueError, match="networks"):
        intervention.dose_response(family, agent, {}, history, SIZES, target=target, key=KEY)
    with pytest.raises(ValueError, match="two_step"):
        intervention.two_step_target(family)
    with pytest.raises(ValueError, match="bandit"):
        intervention.bandit_arm_target(two_step[0])
    with pytest.raises(ValueError, match="arm"):
        intervention.bandit_arm_target(family, arm=2)
