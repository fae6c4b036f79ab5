"""The belief intervention: known answers for the shift, the agent's response and the belief policy's."""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief import probes
from metabelief.agents import agent_for
from metabelief.analysis import intervention
from metabelief.experiments.probing import split_sizes
from metabelief.rollout import lane_moments, replay_jit, rollout, split_lanes
from metabelief.testing import sample_tasks

NUM_TASKS, HORIZON, HIDDEN = 64, 12, 8
SIZES = split_sizes(NUM_TASKS)  # (32, 16, 16)
DELTAS = (-0.3, -0.1, 0.0, 0.1, 0.3)
rollout_jit = jax.jit(rollout, static_argnums=(0, 1))


def _setup(family, time_input=False, seed=0):
    agent = agent_for(family, hidden_size=HIDDEN, time_input=time_input)
    params = agent.init(jax.random.key(seed))
    tasks = sample_tasks(family, jax.random.key(seed + 1), NUM_TASKS)
    history = rollout_jit(family, agent, params, jax.random.key(seed + 2), tasks)
    return agent, params, history


@pytest.fixture(scope="module")
def bandit():
    family = metabelief.make("bernoulli_bandit", num_arms=2, horizon=HORIZON)
    return (family, *_setup(family))


@pytest.fixture(scope="module")
def two_step():
    family = metabelief.make("two_step", num_trials=HORIZON)
    return (family, *_setup(family, time_input=True))


def _with_policy(params, kernel, bias):
    """``params`` with the policy head replaced (the LSTM, hence the replayed hidden states, kept)."""
    inner = dict(params["params"])
    inner["policy"] = {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}
    return {"params": inner}


def _test_lanes(array):
    return np.asarray(split_lanes(array, SIZES)[2], np.float64)


# ---------------------------------------------------------------------------------------------
# The minimum-norm shift


@pytest.mark.parametrize("dimension", [0, 2])
def test_minimum_norm_shift_moves_only_the_target_read_out_and_sees_no_null_direction(dimension):
    weights = np.random.default_rng(0).standard_normal((7, 3))  # W [H, D]
    unit = intervention.minimum_norm_shift(weights, dimension)
    for delta in (-0.3, 0.05, 0.2):
        expected = np.zeros(3)
        expected[dimension] = delta
        np.testing.assert_allclose(weights.T @ (delta * unit), expected, atol=1e-12)
    # Orthogonal to the null space of W^T (the directions the read-out cannot see): the last
    # H - D right singular vectors of W^T.
    null_space = np.linalg.svd(weights.T)[2][3:]
    np.testing.assert_allclose(null_space @ unit, 0.0, atol=1e-12)
    # Hence the smallest shift that does the job: adding a null direction only lengthens it.
    assert np.linalg.norm(unit) < np.linalg.norm(unit + 0.1 * null_space[0])


# ---------------------------------------------------------------------------------------------
# The agent's response, on hand-built policy heads


def test_a_policy_reading_the_decoded_mean_responds_as_the_read_out_predicts(bandit):
    """Logit of arm 0 = beta * (W^T h)_0, arm 1 = 0: a shift delta * u moves the logit by exactly
    beta * delta, so P(arm 0) moves from sigmoid(beta r) to sigmoid(beta (r + delta))."""
    family, agent, params, history = bandit
    replayed = replay_jit(family, agent, params, history)
    read_out = intervention.fit_read_out(agent, replayed, SIZES, num_means=2)
    weights = np.asarray(read_out.probe.weights, np.float64)  # [H, 2]
    beta = 3.0
    kernel = np.stack([beta * weights[:, 0], np.zeros(HIDDEN)], axis=1)
    reading = _with_policy(params, kernel, np.zeros(2))
    target = intervention.bandit_arm_target(family)
    report = intervention.dose_response(
        family, agent, {"reading": reading}, history, SIZES, target=target, deltas=DELTAS
    )["reading"]

    decoded = _test_lanes(replayed.hidden) @ weights[:, 0]  # [T, n_test]: W^T h, no bias
    sigmoid = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    expected = [np.mean(sigmoid(beta * (decoded + delta)) - sigmoid(beta * decoded)) for delta in DELTAS]
    np.testing.assert_allclose(report.agent, expected, atol=2e-6)
    assert report.agent[-1] > 0.05  # a real push, not a vacuous match
    np.testing.assert_allclose(report.read_out_per_unit_shift, [1.0, 0.0], atol=1e-5)
    assert report.shift_norm == pytest.approx(np.linalg.norm(np.linalg.pinv(weights.T)[:, 0]), rel=1e-5)
    assert report.num_steps == HORIZON * SIZES[2]
    assert report.num_steps_next == (HORIZON - 1) * SIZES[2]
    assert report.read_out_r2 == pytest.approx(float(read_out.test.r2))


def test_next_step_response_equals_stepping_the_lstm_by_hand_from_the_shifted_carry(two_step):
    """Two-step (observations and the time input exercised): at every test step but the last,
    the LSTM is stepped once from (cell, hidden + delta u) on the next input, and compared with
    the policy the replay had at the next step."""
    family, agent, params, history = two_step
    head = np.random.default_rng(1).standard_normal((HIDDEN, 2))
    params = _with_policy(params, head, np.array([0.2, -0.1]))
    target = intervention.two_step_target(family)
    assert target.action == 0 and target.feature == 0  # action 0 commonly leads to A
    delta = 0.25
    report = intervention.dose_response(
        family, agent, {"net": params}, history, SIZES, target=target, deltas=(delta,)
    )["net"]

    replayed = replay_jit(family, agent, params, history)
    read_out = intervention.fit_read_out(agent, replayed, SIZES, num_means=1)
    unit = jnp.asarray(intervention.minimum_norm_shift(read_out.probe.weights, 0), jnp.float32)
    test = jax.tree.map(lambda leaf: split_lanes(leaf, SIZES)[2], replayed)
    changes = []
    for t in range(HORIZON - 1):
        inputs = agent.inputs(test.obs[t + 1], test.actions[t], test.rewards[t], jnp.asarray(t + 1))
        _, logits, _ = agent.step(params, (test.memory[t, :, HIDDEN:], test.hidden[t] + delta * unit), inputs)
        shifted = np.asarray(jax.nn.softmax(logits)[:, 0])
        changes.append(shifted - np.asarray(jax.nn.softmax(test.logits[t + 1])[:, 0]))
    assert report.agent_next_step[0] == pytest.approx(np.mean(changes), abs=2e-6)
    assert abs(np.mean(changes)) > 1e-4  # the shift does reach the next step


def test_a_uniform_policy_does_not_respond(bandit):
    family, agent, params, history = bandit
    uniform = _with_policy(params, np.zeros((HIDDEN, 2)), np.zeros(2))
    target = intervention.bandit_arm_target(family)
    report = intervention.dose_response(
        family, agent, {"uniform": uniform}, history, SIZES, target=target, deltas=DELTAS
    )["uniform"]
    assert report.agent == (0.0,) * len(DELTAS)
    assert report.agent_next_step == (0.0,) * len(DELTAS)
    assert report.fraction_of_bayes == 0.0 and report.fraction_of_bayes_next_step == 0.0
    assert any(value != 0.0 for value in report.belief_greedy)  # the belief policy does respond


def test_fraction_of_bayes_is_the_slope_through_the_origin():
    bayes = [-0.2, -0.1, 0.0, 0.1, 0.2]
    assert intervention.fraction_of_bayes(bayes, bayes) == pytest.approx(1.0)
    assert intervention.fraction_of_bayes([0.5 * b for b in bayes], bayes) == pytest.approx(0.5)
    assert intervention.fraction_of_bayes([-b for b in bayes], bayes) == pytest.approx(-1.0)
    assert intervention.fraction_of_bayes([0.0] * 5, bayes) == 0.0
    # Not proportional: (0.1 * 0.2 + 0.3 * 0.2) / (2 * 0.04 + 2 * 0.01) = 0.8.
    assert intervention.fraction_of_bayes([-0.1, 0.0, 0.0, 0.0, 0.3], bayes) == pytest.approx(0.8)
    assert intervention.fraction_of_bayes(bayes, [0.0] * 5) is None


# ---------------------------------------------------------------------------------------------
# The belief-greedy ("Bayes") response


def _numpy_greedy_change(means, delta):
    """Mean change of P(arm 0 is the greedy arm), ties split, when arm 0's mean moves by delta."""

    def p_arm0(m0, m1):
        return np.where(m0 > m1, 1.0, np.where(m0 == m1, 0.5, 0.0))

    m0, m1 = means[..., 0], means[..., 1]
    return p_arm0(np.clip(m0 + delta, 0.0, 1.0), m1) - p_arm0(m0, m1)


def test_belief_greedy_response_is_the_share_of_test_steps_whose_greedy_arm_flips(bandit):
    family, agent, params, history = bandit
    target = intervention.bandit_arm_target(family)
    report = intervention.dose_response(
        family, agent, {"net": params}, history, SIZES, target=target, deltas=DELTAS
    )["net"]
    means = _test_lanes(history.features)[..., :2].astype(np.float32)
    expected = [float(np.mean(_numpy_greedy_change(means, np.float32(d)))) for d in DELTAS]
    np.testing.assert_allclose(report.belief_greedy, expected, atol=1e-6)
    assert report.belief_greedy[0] < 0 < report.belief_greedy[-1]
    # The test lanes, not the fitting lanes: the same measure there gives other numbers.
    train_means = np.asarray(split_lanes(history.features, SIZES)[0])[..., :2]
    on_train = [float(np.mean(_numpy_greedy_change(train_means, np.float32(d)))) for d in DELTAS]
    assert not np.allclose(on_train, expected)


def test_belief_greedy_response_counts_only_the_steps_the_target_marks(bandit):
    family, agent, params, history = bandit
    odd_steps = lambda h: (jnp.arange(h.actions.shape[0]) % 2 == 1)[:, None] & (h.actions >= 0)  # noqa: E731
    target = intervention.InterventionTarget(
        name="arm 0, odd steps",
        feature=0,
        action=0,
        greedy_prob=intervention.BanditGreedy(num_arms=2, arm=0),
        decisions=odd_steps,
    )
    report = intervention.dose_response(
        family, agent, {"net": params}, history, SIZES, target=target, deltas=DELTAS
    )["net"]
    means = _test_lanes(history.features)[1::2, :, :2].astype(np.float32)
    expected = [float(np.mean(_numpy_greedy_change(means, np.float32(d)))) for d in DELTAS]
    np.testing.assert_allclose(report.belief_greedy, expected, atol=1e-6)
    assert report.num_steps == HORIZON // 2 * SIZES[2]
    assert report.num_steps_next == 0  # no odd step is followed by a counted one
    assert report.agent_next_step == (None,) * len(DELTAS)
    assert report.to_dict()["agent_next_step"] == [None] * len(DELTAS)


@dataclasses.dataclass(frozen=True)
class FeatureItself:
    """A stand-in "policy" whose P(action) is the belief feature itself, so clipping shows."""

    def __call__(self, features):
        return features[..., 0]


def test_shifted_belief_is_clipped_to_the_feature_range(two_step):
    family, agent, params, history = two_step
    target = intervention.InterventionTarget(
        name="P(A rich)", feature=0, action=0, greedy_prob=FeatureItself()
    )
    report = intervention.dose_response(
        family, agent, {"net": params}, history, SIZES, target=target, deltas=DELTAS
    )["net"]
    p = _test_lanes(history.features)[..., 0]
    expected = [np.mean(np.clip(p + d, 0.0, 1.0) - p) for d in DELTAS]
    np.testing.assert_allclose(report.belief_greedy, expected, atol=1e-6)
    assert abs(expected[-1]) < 0.3 - 0.01  # some beliefs were clipped


def test_two_step_belief_greedy_flips_where_p_a_rich_crosses_one_half(two_step):
    greedy = intervention.two_step_target(two_step[0]).greedy_prob
    p = jnp.array([[0.2], [0.5], [0.7]])
    np.testing.assert_array_equal(np.asarray(greedy(p)), [0.0, 0.5, 1.0])


# ---------------------------------------------------------------------------------------------
# Smoke: two networks, both families


@pytest.mark.parametrize("name", ["bandit", "two_step"])
def test_trained_vs_untrained_report_is_complete_finite_and_belief_greedy_is_monotone(name, request):
    family, agent, params, history = request.getfixturevalue(name)
    other = agent.init(jax.random.key(42))
    make_target = intervention.bandit_arm_target if name == "bandit" else intervention.two_step_target
    deltas = tuple(float(d) for d in np.linspace(-0.3, 0.3, 9))
    report = intervention.dose_response(
        family, agent, {"trained": params, "untrained": other}, history, SIZES,
        target=make_target(family), deltas=deltas,
    )  # fmt: skip
    keys = {
        "target", "deltas", "agent", "agent_next_step", "belief_greedy", "fraction_of_bayes",
        "fraction_of_bayes_next_step", "read_out_r2", "read_out_r2_target", "ridge",
        "read_out_per_unit_shift", "shift_norm", "hidden_norm", "num_steps", "num_steps_next", "encoding",
    }  # fmt: skip
    assert set(report) == {"trained", "untrained"}
    for typed in report.values():
        result = typed.to_dict()
        assert json.loads(json.dumps(result, allow_nan=False)) == result
        assert set(result) == keys
        assert set(result["encoding"]) == {
            "agent", "agent_next_step", "fraction_of_bayes", "fraction_of_bayes_next_step",
            "read_out_per_unit_shift", "shift_norm",
        }  # fmt: skip
        for key in ("agent", "agent_next_step", "belief_greedy"):
            assert len(result[key]) == 9 and all(math.isfinite(v) for v in result[key])
            assert result[key] == list(getattr(typed, key))
        for key in ("fraction_of_bayes", "fraction_of_bayes_next_step", "read_out_r2", "shift_norm"):
            assert math.isfinite(result[key]) and result[key] == getattr(typed, key)
        assert result["deltas"] == list(deltas)
        assert np.all(np.diff(result["belief_greedy"]) >= 0)
        assert result["belief_greedy"][0] < 0 < result["belief_greedy"][-1]
        assert result["agent"][4] == pytest.approx(0.0, abs=1e-6)
        assert result["encoding"]["shift_norm"] == typed.encoding.shift_norm
    assert report["trained"].belief_greedy == report["untrained"].belief_greedy


def test_bad_arguments_raise_value_errors(bandit, two_step):
    family, agent, params, history = bandit
    target = intervention.bandit_arm_target(family)
    call = lambda **kw: intervention.dose_response(  # noqa: E731
        family, agent, {"net": params}, history, kw.pop("sizes", SIZES), **({"target": target} | kw)
    )
    with pytest.raises(ValueError, match="sizes"):
        call(sizes=(10, 10, 10))
    with pytest.raises(ValueError, match="deltas"):
        call(deltas=[])
    with pytest.raises(ValueError, match="deltas"):
        call(deltas=[0.1, float("nan")])
    beyond_the_means = intervention.InterventionTarget(
        name="a posterior std", feature=2, action=0, greedy_prob=target.greedy_prob
    )
    with pytest.raises(ValueError, match="target"):
        call(target=beyond_the_means)
    with pytest.raises(ValueError, match="two_step"):
        intervention.two_step_target(family)
    with pytest.raises(ValueError, match="bandit"):
        intervention.bandit_arm_target(two_step[0])
    with pytest.raises(ValueError, match="arm"):
        intervention.bandit_arm_target(family, arm=2)


def test_encoding_direction_is_the_regression_of_hidden_on_the_posterior_means(bandit):
    """Row d of the ridge regression hidden ~ 1 + means on the train and validation lanes, in NumPy
    float64 with the strength the probe chose: (S_mm + ridge * tr(S_mm) / D * I)^-1 S_mh."""
    family, agent, params, history = bandit
    replayed = replay_jit(family, agent, params, history)
    got = intervention.encoding_direction(agent, replayed, SIZES, num_means=2, dimension=0)

    moments = lane_moments(replayed.hidden, replayed.features, SIZES)
    means_block = slice(HIDDEN, HIDDEN + 2)
    ridge = probes.linear_probe(moments, means_block, slice(0, HIDDEN)).ridge
    fit_lanes = slice(0, SIZES[0] + SIZES[1])
    means = np.asarray(replayed.features[:, fit_lanes, :2], np.float64).reshape(-1, 2)
    hidden = np.asarray(replayed.hidden[:, fit_lanes], np.float64).reshape(-1, HIDDEN)
    means, hidden = means - means.mean(0), hidden - hidden.mean(0)
    scatter = means.T @ means
    coefficients = np.linalg.solve(scatter + ridge * np.trace(scatter) / 2 * np.eye(2), means.T @ hidden)
    np.testing.assert_allclose(got, coefficients[0], rtol=1e-3, atol=1e-4 * np.abs(coefficients[0]).max())

    report = intervention.dose_response(
        family, agent, {"net": params}, history, SIZES, target=intervention.bandit_arm_target(family)
    )["net"].encoding
    assert report.shift_norm == pytest.approx(np.linalg.norm(got), rel=1e-5)
    assert len(report.agent) == len(intervention.DEFAULT_DELTAS)


def test_plot_draws_every_seed_and_network(tmp_path):
    from metabelief.experiments import plots

    deltas = [-0.2, 0.0, 0.2]

    def network(scale):
        return {
            "target": "posterior mean of arm 0 -> P(arm 0)",
            "deltas": deltas,
            "agent": [-scale, 0.0, scale],
            "agent_next_step": [-scale / 2, 0.0, None],
            "belief_greedy": [-0.3, 0.0, 0.3],
            "fraction_of_bayes": scale / 0.3,
            "encoding": {
                "agent": [-2 * scale, 0.0, 2 * scale],
                "agent_next_step": [-scale, 0.0, scale],
                "fraction_of_bayes": 2 * scale / 0.3,
            },
        }

    per_seed = [
        {"trained": network(0.2), "untrained": network(0.01)},
        {"trained": network(0.25), "untrained": network(0.0)},
    ]
    plots.intervention(tmp_path / "intervention.png", per_seed)
    assert (tmp_path / "intervention.png").stat().st_size > 0
