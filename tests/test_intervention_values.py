"""Every figure of ``dose_response`` recomputed apart, in NumPy float64, on a hand-built linear agent.

The independent reference: a linear recurrent agent (written here, meeting only the agent protocol)
whose memory is ``[h, m]``::

    h_t = a h_{t-1} + x_t B + m_{t-1} C,    m_t = rho m_{t-1} + x_t E,    logits_t = h_t K + b

is replayed by hand in NumPy on a recorded history, so the memory, its covariance on the fit lanes,
the read-out (ridge regression memory -> posterior means, strength chosen on the validation lanes,
refit on train + validation, scored on the test lanes), the pushes (``Σ W (W'ΣW)^-1 e_d`` and
``W (W'W)^-1 e_d`` by the normal equations, the encoding regression means -> memory), their
Mahalanobis norms ``sqrt(v' Σ^-1 v)`` and the agent's observational sensitivity (a float64 logistic
regression by scipy's BFGS) are all computed without the module. Because the agent is linear, a push
``v`` of the whole memory moves it by ``v A^k`` k steps on, ``A = [[a I, 0], [C, rho I]]``, whatever
the inputs, so the change of the log-odds is ``δ (v A^k)[:H] (K[:, action] - K[:, other])`` at every
step: the whole trace has a closed form.

Known answers: a network whose recurrence keeps ``m`` out of ``h`` (``C = 0``) and whose head is
orthogonal to the three pushes does not respond at any step (while random directions move it); the
random directions' mean and spread equal the closed form over the same directions.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

import metabelief
from metabelief.analysis import intervention
from metabelief.probes import DEFAULT_RIDGE_GRID, ROUNDING_FLOOR
from metabelief.rollout import replay_jit, rollout, sample_tasks

HIDDEN, EXTRA, HORIZON, NUM_TASKS = 5, 2, 8, 40
SIZES = (16, 10, 14)  # train, validation, test lanes: unequal, so a wrong split shows
TEST = slice(SIZES[0] + SIZES[1], NUM_TASKS)
DELTAS = (-0.3, -0.1, 0.05, 0.25)
TRACE, NUM_RANDOM = 3, 6
KEY = jax.random.key(11)
DECAY, RHO = 0.7, 0.6

rollout_jit = jax.jit(rollout, static_argnums=(0, 1))


# ---------------------------------------------------------------------------------------------
# The hand-built linear agent


@dataclasses.dataclass(frozen=True)
class LinearAgent:
    """The agent protocol and nothing more; the readout ``h`` is the first ``hidden_size`` entries
    of the memory ``[h, m]``, and ``m`` feeds ``h`` (so the rest of the memory matters)."""

    num_actions: int
    obs_size: int
    horizon: int
    hidden_size: int = HIDDEN
    extra_size: int = EXTRA

    @property
    def input_size(self) -> int:
        return (
            self.obs_size + self.num_actions + 3
        )  # obs, one-hot previous action, reward, time, their product

    @property
    def memory_size(self) -> int:
        return self.hidden_size + self.extra_size

    def init(self, key):
        keys = jax.random.split(key, 4)
        size, hidden, extra = self.input_size, self.hidden_size, self.extra_size
        return {
            "params": {
                "B": jax.random.normal(keys[0], (size, hidden)) * 0.6,
                "C": jax.random.normal(keys[1], (extra, hidden)) * 0.6,
                "E": jax.random.normal(keys[2], (size, extra)) * 0.6,
                "a": jnp.asarray(DECAY, jnp.float32),
                "rho": jnp.asarray(RHO, jnp.float32),
                "policy": {
                    "kernel": jax.random.normal(keys[3], (hidden, self.num_actions)),
                    "bias": jnp.linspace(-0.2, 0.2, self.num_actions),
                },
            }
        }

    def initial_carry(self, num_tasks):
        return jnp.zeros((num_tasks, self.hidden_size)), jnp.zeros((num_tasks, self.extra_size))

    def inputs(self, obs, prev_action, prev_reward, time):
        time = jnp.broadcast_to(time, prev_reward.shape).astype(jnp.float32) / self.horizon
        one_hot = jax.nn.one_hot(prev_action, self.num_actions)
        reward = prev_reward.astype(jnp.float32)
        # reward * time keeps the memory's covariance full rank (one-hot, time and reward alone leave
        # it singular on a bandit: a metric that needs the floor of ``activity_covariance``).
        return jnp.concatenate(
            [obs.astype(jnp.float32), one_hot, reward[:, None], time[:, None], (reward * time)[:, None]], -1
        )

    def step(self, params, carry, inputs):
        p = params["params"]
        h, m = carry
        h = p["a"] * h + inputs @ p["B"] + m @ p["C"]
        m = p["rho"] * m + inputs @ p["E"]
        logits, value = self.heads(params, h)
        return (h, m), logits, value

    def memory(self, carry):
        return jnp.concatenate(carry, axis=-1)

    def carry_from_memory(self, memory):
        return memory[..., : self.hidden_size], memory[..., self.hidden_size :]

    def heads(self, params, readout):
        policy = params["params"]["policy"]
        return readout @ policy["kernel"] + policy["bias"], readout.sum(-1) * 0.0


def _with(params, **changes):
    """``params`` with some layers replaced (``C``, ``policy``)."""
    return {"params": dict(params["params"]) | {k: jax.tree.map(jnp.asarray, v) for k, v in changes.items()}}


# ---------------------------------------------------------------------------------------------
# NumPy references


def _np(array):
    return np.asarray(array, np.float64)


def _replay(params, history):
    """``(memory [T, N, H + E], logits [T, N, A])`` of the linear agent teacher-forced on ``history``."""
    p = jax.tree.map(_np, params["params"])
    obs, actions, rewards = _np(history.obs), np.asarray(history.actions), _np(history.rewards)
    num_steps, num_tasks = actions.shape
    num_actions = p["policy"]["kernel"].shape[1]
    h, m = np.zeros((num_tasks, HIDDEN)), np.zeros((num_tasks, EXTRA))
    memory = []
    for t in range(num_steps):
        one_hot = np.eye(num_actions)[actions[t - 1]] if t else np.zeros((num_tasks, num_actions))
        reward = rewards[t - 1] if t else np.zeros(num_tasks)
        x = np.concatenate(
            [
                obs[t],
                one_hot,
                reward[:, None],
                np.full((num_tasks, 1), t / HORIZON),
                reward[:, None] * t / HORIZON,
            ],
            -1,
        )
        h, m = p["a"] * h + x @ p["B"] + m @ p["C"], p["rho"] * m + x @ p["E"]
        memory.append(np.concatenate([h, m], -1))
    memory = np.stack(memory)
    return memory, memory[..., :HIDDEN] @ p["policy"]["kernel"] + p["policy"]["bias"]


def _transition(params):
    """``A [M, M]``: ``[h, m]_{t+1} = [h, m]_t A + (the input's part)``."""
    p = jax.tree.map(_np, params["params"])
    return np.block(
        [[p["a"] * np.eye(HIDDEN), np.zeros((HIDDEN, EXTRA))], [p["C"], p["rho"] * np.eye(EXTRA)]]
    )


def _rows(array, lanes):
    return array[:, lanes].reshape(-1, array.shape[-1])


def _ridge(x, y, ridge):
    """Ridge of y on x with an unpenalised intercept, penalty ridge * mean input variance (at
    least ``ROUNDING_FLOOR`` * the trace, as ``probes.fit_ridge`` documents)."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    scatter = xc.T @ xc
    ridge = max(ridge, ROUNDING_FLOOR * x.shape[1])
    penalty = ridge * np.trace(scatter) / x.shape[1] * np.eye(x.shape[1])
    weights = np.linalg.solve(scatter + penalty, xc.T @ yc)
    return weights, y.mean(0) - x.mean(0) @ weights


def _r2(weights, bias, x, y):
    """(pooled R^2 over the target dims, R^2 per dim)."""
    errors = ((y - x @ weights - bias) ** 2).sum(0)
    total = ((y - y.mean(0)) ** 2).sum(0)
    return 1.0 - errors.sum() / total.sum(), 1.0 - errors / total


FIT = slice(0, SIZES[0] + SIZES[1])


def _probe(x, y):
    """The linear-probe protocol on ``[T, N, .]`` arrays: ``(weights, ridge, validation R^2 per
    strength, test R^2 pooled, test R^2 per dim)``."""
    train, validation = slice(0, SIZES[0]), slice(SIZES[0], SIZES[0] + SIZES[1])
    scores = []
    for ridge in DEFAULT_RIDGE_GRID:
        weights, bias = _ridge(_rows(x, train), _rows(y, train), ridge)
        scores.append(_r2(weights, bias, _rows(x, validation), _rows(y, validation))[0])
    ridge = DEFAULT_RIDGE_GRID[int(np.argmax(scores))]
    weights, bias = _ridge(_rows(x, FIT), _rows(y, FIT), ridge)
    r2, r2_per_dim = _r2(weights, bias, _rows(x, TEST), _rows(y, TEST))
    return weights, ridge, np.asarray(scores), r2, r2_per_dim


def _mahalanobis(v, covariance):
    return float(np.sqrt(v @ np.linalg.solve(covariance, v)))


def _logistic_slope(means, probs, mask, feature):
    """Coefficient of ``means[..., feature]`` in the logistic fit of soft labels ``probs`` on
    ``[1, means]`` over ``mask``, by BFGS in float64."""
    x = np.concatenate([np.ones((*means.shape[:-1], 1)), means], -1)[mask]
    y = probs[mask]

    def loss(theta):
        z = x @ theta
        return np.sum(np.logaddexp(0, z) - y * z), x.T @ (1 / (1 + np.exp(-z)) - y)

    fit = optimize.minimize(loss, np.zeros(x.shape[1]), jac=True, method="BFGS", options={"gtol": 1e-10})
    return fit.x[1 + feature]


def _softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# Cases (one history per family, shared by every test)


def _lane_dependent(history):
    """Counted decisions that depend on the step and the lane: (t + lane) % 3 != 0."""
    steps, lanes = history.actions.shape
    return (jnp.arange(steps)[:, None] + jnp.arange(lanes)[None, :]) % 3 != 0


def _mask(target):
    """The target's counted decisions ``bool[T, N]``, in NumPy."""
    if target.decisions is intervention.every_step:
        return np.ones((HORIZON, NUM_TASKS), bool)
    return (np.arange(HORIZON)[:, None] + np.arange(NUM_TASKS)[None, :]) % 3 != 0


def _trace_masks(mask):
    """``[K + 1, T, n]``: t counted at lag k when t and t + k are counted."""
    later = [np.concatenate([mask[k:], np.zeros_like(mask[:k])]) for k in range(TRACE + 1)]
    return mask[None] & np.stack(later)


@functools.cache
def _case(name):
    if name == "bandit":
        family = metabelief.make("bernoulli_bandit", num_arms=2, horizon=HORIZON)
        agent = LinearAgent(num_actions=2, obs_size=0, horizon=HORIZON)
    else:
        family = metabelief.make("two_step", num_trials=HORIZON)
        agent = LinearAgent(num_actions=2, obs_size=family.obs_size, horizon=HORIZON)
    params = agent.init(jax.random.key(3))
    tasks = sample_tasks(family, jax.random.key(4), NUM_TASKS)
    history = rollout_jit(family, agent, params, jax.random.key(5), tasks)
    return {"family": family, "agent": agent, "params": params, "history": history}


def _reference(case, params, feature):
    """Every figure the module derives from the memory, in NumPy: memory, logits, covariance,
    read-out and the three pushes scaled to the reference's Mahalanobis norm."""
    history = case["history"]
    memory, logits = _replay(params, history)
    num_means = history.truth.shape[-1]
    means = _np(history.features)[..., :num_means]
    weights, ridge, validation, r2, r2_per_dim = _probe(memory, means)
    rows = _rows(memory, FIT)
    covariance = np.cov(rows, rowvar=False, bias=True)
    unit = np.eye(num_means)[feature]
    spread = covariance @ weights
    reference = spread @ np.linalg.solve(weights.T @ spread, unit)
    norm = _mahalanobis(reference, covariance)
    euclidean = weights @ np.linalg.solve(weights.T @ weights, unit)
    encoding = _probe(means, memory)[0][feature]
    pushes = {
        "minimum_mahalanobis": reference,
        "minimum_euclidean": euclidean * norm / _mahalanobis(euclidean, covariance),
        "encoding": encoding * norm / _mahalanobis(encoding, covariance),
    }
    return dict(
        memory=memory, logits=logits, means=means, weights=weights, ridge=ridge, validation=validation,
        r2=r2, r2_per_dim=r2_per_dim, covariance=covariance, norm=norm, pushes=pushes,
    )  # fmt: skip


@functools.cache
def _networks(name, feature, action):
    """random: the agent's own head; ignores: C = 0 (``m`` never reaches ``h``) and a head
    orthogonal to the h-part of the three pushes of that network, so no push reaches the policy."""
    case = _case(name)
    params = case["params"]
    unfed = _with(params, C=np.zeros((EXTRA, HIDDEN)))
    pushes = np.stack(list(_reference(case, unfed, feature)["pushes"].values()), axis=1)[:HIDDEN]  # [H, 3]
    projector = np.eye(HIDDEN) - pushes @ np.linalg.pinv(pushes)
    head = projector @ np.random.default_rng(7).standard_normal((HIDDEN, 2)) * 3.0
    ignores = _with(unfed, policy={"kernel": head, "bias": np.array([0.3, -0.3])})
    return {"random": params, "ignores": ignores}


def _run(name, target):
    case = _case(name)
    networks = _networks(name, target.feature, target.action)
    report = intervention.dose_response(
        case["family"], case["agent"], networks, case["history"], SIZES, target=target, key=KEY,
        deltas=DELTAS, trace_steps=TRACE, num_random=NUM_RANDOM,
    )  # fmt: skip
    return case, target, networks, report


@functools.cache
def _bandit_custom():
    """Push arm 0's mean, watch arm 1's log-odds, count only the steps with (t + lane) % 3 != 0."""
    target = intervention.InterventionTarget(
        name="arm 0's mean -> log-odds of arm 1, some steps", feature=0, action=1, decisions=_lane_dependent
    )
    return _run("bandit", target)


@functools.cache
def _two_step():
    return _run("two_step", intervention.two_step_target(_case("two_step")["family"]))


RUNS = {"bandit custom": _bandit_custom, "two_step": _two_step}


def _expected(run, network):
    """Every field of one network's ``DoseResponse``, in NumPy."""
    case, target, networks, _ = RUNS[run]()
    params = networks[network]
    ref = _reference(case, params, target.feature)
    kernel = _np(params["params"]["policy"]["kernel"])
    reads = kernel[:, target.action] - kernel[:, 1 - target.action]  # the log-odds' weights on h
    powers = [np.linalg.matrix_power(_transition(params), k) for k in range(TRACE + 1)]
    masks = _trace_masks(_mask(target)[:, TEST])
    probs = _softmax(ref["logits"][:, TEST])[..., target.action]
    observed = _logistic_slope(ref["means"][:, TEST], probs, masks[0], target.feature)

    def trace(push):  # [K + 1]: change of log-odds per unit δ, k steps on
        return np.array([(push @ power)[:HIDDEN] @ reads for power in powers])

    pushes = {}
    for push_name, push in ref["pushes"].items():
        per_unit = ref["weights"].T @ push
        slopes = trace(push) / per_unit[target.feature]
        pushes[push_name] = {
            "read_out_per_unit": per_unit,
            "decoded_per_unit": per_unit[target.feature],
            "euclidean_norm": np.linalg.norm(push),
            "mahalanobis_norm": _mahalanobis(push, ref["covariance"]),
            "log_odds": np.outer(trace(push), DELTAS),
            "log_odds_slope": slopes,
            "causal_to_observational": slopes / observed,
        }
    randoms = intervention.random_pushes(KEY, ref["covariance"], NUM_RANDOM, ref["norm"])
    random_traces = np.stack([np.outer(trace(v), DELTAS) for v in randoms])  # [R, K + 1, J]
    return {
        "deltas": list(DELTAS),
        "mahalanobis_per_unit": ref["norm"],
        "num_steps": masks.sum(axis=(1, 2)).tolist(),
        "observational_slope": observed,
        "read_out_r2": ref["r2"],
        "read_out_r2_target": ref["r2_per_dim"][target.feature],
        "ridge": ref["ridge"],
        "validation": ref["validation"],
        "pushes": pushes,
        "random": {
            "num_directions": NUM_RANDOM,
            "log_odds_mean": random_traces.mean(0),
            "log_odds_std": random_traces.std(0, ddof=1),
        },
    }


# Tolerances: the module fits the read-out and the covariance in float32 (from float32 sums that are
# not bit-reproducible across runs), so its pushes differ from the float64 ones by ~1e-5 relative.
RTOL = 2e-3


def _close(got, expected, what, scale=1.0):
    np.testing.assert_allclose(
        np.asarray(got, np.float64), expected, rtol=RTOL, atol=1e-3 * scale, err_msg=what
    )


# ---------------------------------------------------------------------------------------------
# Tests


def test_the_numpy_replay_of_the_linear_agent_is_what_the_package_replays():
    """The reference's memory is right (else every comparison below would be moot)."""
    for name in ("bandit", "two_step"):
        case = _case(name)
        replayed = replay_jit(case["family"], case["agent"], case["params"], case["history"])
        memory, logits = _replay(case["params"], case["history"])
        np.testing.assert_allclose(replayed.memory, memory, atol=1e-4)
        np.testing.assert_allclose(replayed.logits, logits, atol=1e-4)
        # The rest of the memory is not 0 and feeds h: a push that left it alone would show.
        assert np.abs(memory[..., HIDDEN:]).mean() > 0.1


@pytest.mark.parametrize("run", list(RUNS))
@pytest.mark.parametrize("network", ["random", "ignores"])
def test_every_field_equals_its_numpy_recomputation(run, network):
    _, target, _, report = RUNS[run]()
    got, expected = report[network].to_dict(), _expected(run, network)
    assert got["target"] == target.name and got["deltas"] == expected["deltas"]
    assert got["num_steps"] == expected["num_steps"]
    assert got["ridge"] in DEFAULT_RIDGE_GRID  # one of the best on the validation lanes
    assert (
        expected["validation"][DEFAULT_RIDGE_GRID.index(got["ridge"])] >= expected["validation"].max() - 1e-5
    )
    for key in ("mahalanobis_per_unit", "observational_slope"):
        assert got[key] == pytest.approx(expected[key], rel=RTOL), key
    for key in ("read_out_r2", "read_out_r2_target"):
        assert got[key] == pytest.approx(expected[key], abs=1e-4), key
    assert set(got["pushes"]) == set(intervention.PUSHES)
    for name, push in expected["pushes"].items():
        for key, value in push.items():
            # A slope per unit of decoded belief divides by the push's decoded share, a ratio to the
            # observational slope by that slope too: so do their float32 errors.
            scale = {"log_odds_slope": 1.0, "causal_to_observational": abs(expected["observational_slope"])}
            dose = abs(push["decoded_per_unit"]) * max(abs(d) for d in DELTAS)
            scale = 1.0 / dose / scale[key] if key in scale else 1.0
            _close(got["pushes"][name][key], value, f"{name} {key}", scale)
    assert got["random"]["num_directions"] == NUM_RANDOM
    for key in ("log_odds_mean", "log_odds_std"):
        _close(got["random"][key], expected["random"][key], key)


@pytest.mark.parametrize("run", list(RUNS))
def test_a_network_whose_policy_ignores_the_pushes_does_not_respond_at_any_step(run):
    report = RUNS[run]()[3]
    ignores = report["ignores"]
    for push in ignores.pushes.values():
        # float32 pushes of Mahalanobis norm ~10 against float64 ones: ~1e-4 left of a response that
        # is O(1) for the agent's own head.
        np.testing.assert_allclose(np.asarray(push.log_odds, np.float64), 0.0, atol=1e-3)
        np.testing.assert_allclose(push.log_odds_slope, 0.0, atol=1e-2)
    for name in ("minimum_mahalanobis", "encoding"):  # in the span of Σ W: well conditioned
        np.testing.assert_allclose(ignores.pushes[name].causal_to_observational, 0.0, atol=1e-3)
    assert max(abs(v) for v in ignores.random.log_odds_std[0]) > 0.05  # other directions do reach it
    # The agent's own head does respond to the push, at the push and later.
    own = report["random"].pushes["minimum_mahalanobis"].log_odds
    assert abs(own[0][-1]) > 0.01 and abs(own[TRACE][-1]) > 1e-3


@pytest.mark.parametrize("run", list(RUNS))
def test_pushes_have_equal_mahalanobis_norms_and_the_reference_is_the_smallest_for_its_read_out(run):
    case, target, networks, report = RUNS[run]()
    ref = _reference(case, networks["random"], target.feature)
    got = report["random"]
    for push in got.pushes.values():
        assert push.mahalanobis_norm == pytest.approx(ref["norm"], rel=RTOL)
    reference = got.pushes["minimum_mahalanobis"]
    assert reference.decoded_per_unit == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(
        reference.read_out_per_unit, np.eye(len(reference.read_out_per_unit))[target.feature], atol=1e-4
    )
    # At the same Mahalanobis norm the Euclidean-minimal push carries less decoded belief (it is
    # minimal in another metric), and a random direction's share is smaller still on average.
    assert 0 < abs(got.pushes["minimum_euclidean"].decoded_per_unit) < 1.0 - 1e-3
    randoms = intervention.random_pushes(KEY, ref["covariance"], NUM_RANDOM, ref["norm"])
    for v in randoms:
        assert _mahalanobis(v, ref["covariance"]) == pytest.approx(ref["norm"], rel=1e-9)


def test_the_minimum_mahalanobis_push_is_the_smallest_in_that_metric_and_the_euclidean_one_in_its():
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((6, 2))
    factor = rng.standard_normal((6, 6))
    covariance = factor @ factor.T + 0.1 * np.eye(6)
    reference = intervention.minimum_mahalanobis_push(weights, covariance, 1)
    euclidean = intervention.minimum_euclidean_push(weights, 1)
    for push in (reference, euclidean):
        np.testing.assert_allclose(weights.T @ push, [0.0, 1.0], atol=1e-12)
    null_space = np.linalg.svd(weights.T)[2][2:]  # directions the read-out cannot see
    for other in null_space:
        for scale in (-0.3, 0.2):
            assert _mahalanobis(reference, covariance) < _mahalanobis(reference + scale * other, covariance)
            assert np.linalg.norm(euclidean) < np.linalg.norm(euclidean + scale * other)
    assert intervention.mahalanobis_norm(euclidean, covariance) == pytest.approx(
        _mahalanobis(euclidean, covariance)
    )


def test_random_directions_average_to_no_response_on_a_head_that_reads_one_direction():
    """Many random pushes of one Mahalanobis norm on a log-odds that reads one direction: the mean
    response is near 0 beside its spread, and the spread is the closed form's."""
    rng = np.random.default_rng(1)
    factor = rng.standard_normal((5, 5))
    covariance = factor @ factor.T + 0.2 * np.eye(5)
    reads = np.eye(5)[2] * 2.0
    pushes = intervention.random_pushes(jax.random.key(0), covariance, 4000, 1.5)
    responses = pushes @ reads
    assert abs(responses.mean()) < 4 * responses.std() / np.sqrt(len(responses))
    # Uniform on the Mahalanobis sphere: E[v v'] = norm^2 Σ / M, so Var(v · reads) = 1.5^2 reads'Σ reads / 5.
    assert responses.var() == pytest.approx(1.5**2 * reads @ covariance @ reads / 5, rel=0.08)


def test_the_activity_covariance_is_the_fit_lanes_covariance_of_the_memory():
    case = _case("bandit")
    replayed = replay_jit(case["family"], case["agent"], case["params"], case["history"])
    _, moments = intervention.fit_read_out(case["agent"], replayed, SIZES, num_means=2)
    got = intervention.activity_covariance(moments, HIDDEN + EXTRA)
    memory, _ = _replay(case["params"], case["history"])
    expected = np.cov(_rows(memory, FIT), rowvar=False, bias=True)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5 * np.abs(expected).max())
