"""Every figure of ``dose_response`` recomputed apart, in NumPy float64, for both pushes and every target.

The independent reference: a hand-built *linear* recurrent agent (written here, meeting only the agent
protocol) whose memory is ``[h, m]``::

    h_t = a h_{t-1} + x_t B + m_{t-1} C,    m_t = rho m_{t-1} + x_t E,    logits_t = h_t K + b

is replayed by hand in NumPy on a recorded history, so the hidden states, the read-out (ridge
regression hidden -> posterior means, strength chosen on the validation lanes, refit on train +
validation, scored on the test lanes), the minimum-norm shift ``u = W (W^T W)^-1 e_d`` (the normal
equations, not ``pinv``), the encoding direction (ridge regression posterior means -> hidden), the
agent's responses and the belief-greedy policy's are all computed without the module. Because the
agent is linear, pushing ``h_t`` by ``delta v`` moves the logits by ``delta v K`` now and by
``a delta v K`` one step on, whatever the input: the next-step response has a closed form.

Known answers: a policy head orthogonal to both pushes responds by 0 (now and next step, while the
belief-greedy policy responds); a head reading the target read-out (``K[:, action] = beta W[:, d]``)
moves its logit by exactly ``beta delta`` (``a beta delta`` one step on, ``beta delta (W^T u_enc)_d``
along the encoding direction). Targets: bandit arm 1, a custom bandit target (feature 0 pushed,
action 1 watched, some steps not counted, a narrow feature range that clips) and the two-step target.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief.analysis import intervention
from metabelief.probes import DEFAULT_RIDGE_GRID
from metabelief.rollout import replay_jit, rollout, sample_tasks

HIDDEN, EXTRA, HORIZON, NUM_TASKS = 5, 2, 8, 40
SIZES = (16, 10, 14)  # train, validation, test lanes: unequal, so a wrong split shows
TEST = slice(SIZES[0] + SIZES[1], NUM_TASKS)
DELTAS = (-0.3, -0.25, -0.1, 0.05, 0.25, 0.4)  # 0.25 makes exact ties of Beta posterior means
DECAY, RHO, BETA = 0.7, 0.6, 4.0

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
        return self.obs_size + self.num_actions + 2  # obs, one-hot previous action, reward, time

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
        return jnp.concatenate(
            [obs.astype(jnp.float32), one_hot, prev_reward.astype(jnp.float32)[:, None], time[:, None]], -1
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


def _with_head(params, kernel, bias):
    inner = dict(params["params"])
    inner["policy"] = {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}
    return {"params": inner}


# ---------------------------------------------------------------------------------------------
# NumPy references


def _np(array):
    return np.asarray(array, np.float64)


def _replay(params, history, horizon):
    """``(hidden [T, N, H], logits [T, N, A])`` of the linear agent teacher-forced on ``history``."""
    p = jax.tree.map(_np, params["params"])
    obs, actions, rewards = _np(history.obs), np.asarray(history.actions), _np(history.rewards)
    num_steps, num_tasks = actions.shape
    num_actions = p["policy"]["kernel"].shape[1]
    h, m = np.zeros((num_tasks, HIDDEN)), np.zeros((num_tasks, EXTRA))
    hidden = []
    for t in range(num_steps):
        one_hot = np.eye(num_actions)[actions[t - 1]] if t else np.zeros((num_tasks, num_actions))
        reward = rewards[t - 1] if t else np.zeros(num_tasks)
        x = np.concatenate([obs[t], one_hot, reward[:, None], np.full((num_tasks, 1), t / horizon)], -1)
        h, m = p["a"] * h + x @ p["B"] + m @ p["C"], p["rho"] * m + x @ p["E"]
        hidden.append(h)
    hidden = np.stack(hidden)
    return hidden, hidden @ p["policy"]["kernel"] + p["policy"]["bias"]


def _rows(array, lanes):
    return array[:, lanes].reshape(-1, array.shape[-1])


def _ridge(x, y, ridge):
    """Ridge of y on x with an unpenalised intercept, penalty ridge * mean input variance."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    scatter = xc.T @ xc
    penalty = ridge * np.trace(scatter) / x.shape[1] * np.eye(x.shape[1])
    weights = np.linalg.solve(scatter + penalty, xc.T @ yc)
    return weights, y.mean(0) - x.mean(0) @ weights


def _r2(weights, bias, x, y):
    """(pooled R^2 over the target dims, R^2 per dim)."""
    errors = ((y - x @ weights - bias) ** 2).sum(0)
    total = ((y - y.mean(0)) ** 2).sum(0)
    return 1.0 - errors.sum() / total.sum(), 1.0 - errors / total


def _probe(x, y):
    """The linear-probe protocol on ``[T, N, .]`` arrays: ``(weights, ridge, validation R^2 per
    strength, test R^2 pooled, test R^2 per dim)``."""
    train, validation = slice(0, SIZES[0]), slice(SIZES[0], SIZES[0] + SIZES[1])
    scores = []
    for ridge in DEFAULT_RIDGE_GRID:
        weights, bias = _ridge(_rows(x, train), _rows(y, train), ridge)
        scores.append(_r2(weights, bias, _rows(x, validation), _rows(y, validation))[0])
    ridge = DEFAULT_RIDGE_GRID[int(np.argmax(scores))]
    fit = slice(0, SIZES[0] + SIZES[1])
    weights, bias = _ridge(_rows(x, fit), _rows(y, fit), ridge)
    r2, r2_per_dim = _r2(weights, bias, _rows(x, TEST), _rows(y, TEST))
    return weights, ridge, np.asarray(scores), r2, r2_per_dim


def _softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _mean_change(logits, shift, action, mask):
    """Mean over ``mask`` of P(action | logits + shift) - P(action | logits); NaN on no step."""
    change = _softmax(logits + shift)[..., action] - _softmax(logits)[..., action]
    return change[mask].mean() if mask.any() else np.nan


def _fraction(agent, bayes):
    agent, bayes = np.asarray(agent), np.asarray(bayes)
    return float(agent @ bayes / (bayes @ bayes))


def _bandit_greedy(arm):
    def prob(features):
        means = features[..., :2]  # the posterior means of the two arms; the stds follow
        best = means == means.max(-1, keepdims=True)
        return best[..., arm] / best.sum(-1)

    return prob


def _threshold_greedy(p):
    return np.where(p[..., 0] > 0.5, 1.0, np.where(p[..., 0] == 0.5, 0.5, 0.0))


def _greedy_changes(features, prob, feature, low, high, mask):
    """Belief-greedy response per delta, float32 like the features (so exact ties stay ties)."""
    features = np.asarray(features, np.float32)
    base = prob(features)
    out = []
    for delta in DELTAS:
        shifted = features.copy()
        shifted[..., feature] = np.clip(shifted[..., feature] + np.float32(delta), low, high)
        out.append((prob(shifted) - base)[mask].mean())
    return np.asarray(out, np.float64)


@functools.cache
def _read_out(name, feature):
    """The read-out of ``_case(name)`` (its hidden states do not depend on the policy head):
    ``W``, the chosen strength, validation R^2 per strength, test R^2 (pooled, per dim), the
    minimum-norm push ``u`` for ``feature`` and the encoding push ``u_enc``."""
    case = _case(name)
    hidden, _ = _replay(case["params"], case["history"], HORIZON)
    num_means = case["history"].truth.shape[-1]
    means = _np(case["history"].features)[..., :num_means]
    weights, ridge, validation, r2, r2_per_dim = _probe(hidden, means)
    unit = np.eye(num_means)[feature]
    direction = weights @ np.linalg.solve(weights.T @ weights, unit)  # min-norm solution of W^T u = e_d
    encoding = _probe(means, hidden)[0][feature]  # row d of the regression means -> hidden
    return dict(
        hidden=hidden, weights=weights, ridge=ridge, validation=validation, r2=r2, r2_per_dim=r2_per_dim,
        u=direction, u_enc=encoding,
    )  # fmt: skip


def _next(array):
    """``array[t + 1]`` at t (the last step gets step 0, which no next-step mask counts)."""
    return np.concatenate([array[1:], array[:1]])


def _next_mask(mask):
    return np.concatenate([mask[:-1] & mask[1:], np.zeros_like(mask[:1])])


def _expected(run, network):
    """Every field of one network's ``DoseResponse`` in NumPy."""
    spec = RUNS[run]
    case, target, networks, _ = spec["make"]()
    read_out = _read_out(spec["case"], target.feature)
    _, logits = _replay(networks[network], case["history"], HORIZON)
    test_mask = _mask(target)[:, TEST]
    next_mask = _next_mask(test_mask)
    features = np.asarray(case["history"].features)[:, TEST]
    greedy = _greedy_changes(features, spec["greedy"], target.feature, *target.feature_range, test_mask)
    kernel = _np(networks[network]["params"]["policy"]["kernel"])
    now_logits, next_logits = logits[:, TEST], _next(logits[:, TEST])

    def responses(push):
        logit_shift = push @ kernel  # [A] per unit delta; a linear agent: times a one step on
        now = [_mean_change(now_logits, d * logit_shift, target.action, test_mask) for d in DELTAS]
        after = [_mean_change(next_logits, DECAY * d * logit_shift, target.action, next_mask) for d in DELTAS]
        return np.asarray(now), np.asarray(after)

    (now, after), (enc_now, enc_after) = responses(read_out["u"]), responses(read_out["u_enc"])
    weights = read_out["weights"]
    return {
        "deltas": list(DELTAS),
        "agent": now,
        "agent_next_step": after,
        "belief_greedy": greedy,
        "fraction_of_bayes": _fraction(now, greedy),
        "fraction_of_bayes_next_step": _fraction(after, greedy),
        "read_out_r2": read_out["r2"],
        "read_out_r2_target": read_out["r2_per_dim"][target.feature],
        "read_out_per_unit_shift": weights.T @ read_out["u"],
        "shift_norm": np.linalg.norm(read_out["u"]),
        "hidden_norm": np.linalg.norm(read_out["hidden"][:, TEST], axis=-1)[test_mask].mean(),
        "num_steps": int(test_mask.sum()),
        "num_steps_next": int(next_mask.sum()),
        "encoding": {
            "agent": enc_now,
            "agent_next_step": enc_after,
            "fraction_of_bayes": _fraction(enc_now, greedy),
            "fraction_of_bayes_next_step": _fraction(enc_after, greedy),
            "read_out_per_unit_shift": weights.T @ read_out["u_enc"],
            "shift_norm": np.linalg.norm(read_out["u_enc"]),
        },
    }


# Tolerances: the module fits the read-out in float32 (and its float32 sums are not bit-reproducible
# across runs), so its push differs from the float64 one by ~1e-5 relative; with pushes of norm ~15
# that leaves ~3e-5 on a response. Every response and slope compared here is O(0.01-1).
ATOL = {"agent": 1e-4, "agent_next_step": 1e-4, "belief_greedy": 1e-6, "read_out_per_unit_shift": 1e-4}


def _assert_report_matches(got, fields, validation):
    assert got["deltas"] == fields["deltas"]
    assert got["num_steps"] == fields["num_steps"] and got["num_steps_next"] == fields["num_steps_next"]
    # The strength the probe chose is (one of) the best on the validation lanes.
    assert got["ridge"] in DEFAULT_RIDGE_GRID
    assert validation[DEFAULT_RIDGE_GRID.index(got["ridge"])] >= validation.max() - 1e-5
    for key in ("agent", "agent_next_step", "belief_greedy", "read_out_per_unit_shift"):
        np.testing.assert_allclose(got[key], fields[key], rtol=0, atol=ATOL[key], err_msg=key)
    for key in ("fraction_of_bayes", "fraction_of_bayes_next_step"):
        assert got[key] == pytest.approx(fields[key], rel=1e-4, abs=5e-4), key
    for key in ("shift_norm", "hidden_norm"):
        assert got[key] == pytest.approx(fields[key], rel=1e-4), key
    for key in ("read_out_r2", "read_out_r2_target"):
        assert got[key] == pytest.approx(fields[key], abs=2e-5), key
    for key in ("agent", "agent_next_step", "read_out_per_unit_shift"):
        np.testing.assert_allclose(
            got["encoding"][key], fields["encoding"][key], rtol=0, atol=ATOL[key], err_msg=f"encoding {key}"
        )
    for key in ("fraction_of_bayes", "fraction_of_bayes_next_step", "shift_norm"):
        assert got["encoding"][key] == pytest.approx(fields["encoding"][key], rel=1e-4, abs=5e-4), key


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


def _networks(name, feature, action):
    """random: the agent's own head; reads: logit of ``action`` = beta * read-out ``feature``, the
    other 0; ignores: a random head orthogonal to both pushes. The recurrence, hence the hidden
    states and the read-out, are the same for all three."""
    params = _case(name)["params"]
    read_out = _read_out(name, feature)
    reads = np.zeros((HIDDEN, 2))
    reads[:, action] = BETA * read_out["weights"][:, feature]
    pushes = np.stack([read_out["u"], read_out["u_enc"]], axis=1)  # [H, 2]
    projector = np.eye(HIDDEN) - pushes @ np.linalg.pinv(pushes)
    ignores = projector @ np.random.default_rng(7).standard_normal((HIDDEN, 2)) * 3.0
    return {
        "random": params,
        "reads": _with_head(params, reads, np.zeros(2)),
        "ignores": _with_head(params, ignores, np.array([0.3, -0.3])),
    }


def _run(name, target):
    case = _case(name)
    networks = _networks(name, target.feature, target.action)
    report = intervention.dose_response(
        case["family"], case["agent"], networks, case["history"], SIZES, target=target, deltas=DELTAS
    )
    return case, target, networks, report


@functools.cache
def _bandit_arm_1():
    return _run("bandit", intervention.bandit_arm_target(_case("bandit")["family"], arm=1))


@functools.cache
def _bandit_custom():
    """Push arm 0's mean, watch P(arm 1) (so it falls as the push rises), count only the steps with
    (t + lane) % 3 != 0, and clip the pushed mean to [0.3, 0.6]."""
    target = intervention.InterventionTarget(
        name="arm 0's mean -> P(arm 1), some steps, clipped",
        feature=0,
        action=1,
        greedy_prob=intervention.BanditGreedy(num_arms=2, arm=1),
        feature_range=(0.3, 0.6),
        decisions=_lane_dependent,
    )
    return _run("bandit", target)


@functools.cache
def _two_step():
    return _run("two_step", intervention.two_step_target(_case("two_step")["family"]))


RUNS = {
    "bandit arm 1": {"case": "bandit", "make": _bandit_arm_1, "greedy": _bandit_greedy(1)},
    "bandit custom": {"case": "bandit", "make": _bandit_custom, "greedy": _bandit_greedy(1)},
    "two_step": {"case": "two_step", "make": _two_step, "greedy": _threshold_greedy},
}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ---------------------------------------------------------------------------------------------
# Tests


def test_the_numpy_replay_of_the_linear_agent_is_what_the_package_replays():
    """The reference's hidden states are right (else every comparison below would be moot)."""
    for name in ("bandit", "two_step"):
        case = _case(name)
        replayed = replay_jit(case["family"], case["agent"], case["params"], case["history"])
        hidden, logits = _replay(case["params"], case["history"], HORIZON)
        np.testing.assert_allclose(replayed.hidden, hidden, atol=1e-4)
        np.testing.assert_allclose(replayed.logits, logits, atol=1e-4)
        # The rest of the memory is not 0 and feeds h: a carry rebuilt without it would show.
        assert np.abs(np.asarray(replayed.memory)[..., HIDDEN:]).mean() > 0.1


@pytest.mark.parametrize("run", list(RUNS))
@pytest.mark.parametrize("network", ["random", "reads", "ignores"])
def test_every_field_equals_its_numpy_recomputation(run, network):
    _, target, _, report = RUNS[run]["make"]()
    assert report[network].target == target.name
    validation = _read_out(RUNS[run]["case"], target.feature)["validation"]
    _assert_report_matches(report[network].to_dict(), _expected(run, network), validation)


@pytest.mark.parametrize("run", list(RUNS))
def test_a_head_orthogonal_to_both_pushes_does_not_respond_while_the_belief_policy_does(run):
    report = RUNS[run]["make"]()[3]
    ignores = report["ignores"]
    for values in (
        ignores.agent, ignores.agent_next_step, ignores.encoding.agent, ignores.encoding.agent_next_step
    ):  # fmt: skip
        np.testing.assert_allclose(values, 0.0, atol=1e-4)
    for slope in (
        ignores.fraction_of_bayes,
        ignores.fraction_of_bayes_next_step,
        ignores.encoding.fraction_of_bayes,
        ignores.encoding.fraction_of_bayes_next_step,
    ):
        assert abs(slope) < 1e-3
    assert max(abs(v) for v in ignores.belief_greedy) > 0.02
    # The same hidden states under the agent's own head do respond.
    assert max(abs(v) for v in report["random"].agent) > 0.01


@pytest.mark.parametrize("run", list(RUNS))
def test_a_head_reading_the_target_read_out_moves_its_logit_by_beta_delta_now_and_decay_times_that_next(run):
    """Two actions, logit(action) = beta (W^T h)_d, the other 0: P(action) = sigmoid(beta r). The
    minimum-norm push moves r by delta now and by a * delta one step on; the encoding push by
    delta (W^T u_enc)_d and a times that."""
    _, target, _, report = RUNS[run]["make"]()
    reads = report["reads"]
    read_out = _read_out(RUNS[run]["case"], target.feature)
    decoded = BETA * read_out["hidden"][:, TEST] @ read_out["weights"][:, target.feature]  # logit gap
    mask = _mask(target)[:, TEST]
    next_mask = _next_mask(mask)

    def closed_form(per_delta, gap, counted):
        return [(_sigmoid(gap + per_delta * BETA * d) - _sigmoid(gap))[counted].mean() for d in DELTAS]

    along_encoding = reads.encoding.read_out_per_unit_shift[target.feature]
    following = _next(decoded)
    np.testing.assert_allclose(reads.agent, closed_form(1.0, decoded, mask), atol=5e-5)
    np.testing.assert_allclose(reads.agent_next_step, closed_form(DECAY, following, next_mask), atol=5e-5)
    np.testing.assert_allclose(reads.encoding.agent, closed_form(along_encoding, decoded, mask), atol=5e-5)
    np.testing.assert_allclose(
        reads.encoding.agent_next_step, closed_form(DECAY * along_encoding, following, next_mask), atol=5e-5
    )
    # The slope through the origin of these closed forms on the NumPy belief-greedy response.
    features = np.asarray(RUNS[run]["make"]()[0]["history"].features)[:, TEST]
    greedy = _greedy_changes(features, RUNS[run]["greedy"], target.feature, *target.feature_range, mask)
    slope_now = _fraction(closed_form(1.0, decoded, mask), greedy)
    slope_next = _fraction(closed_form(DECAY, following, next_mask), greedy)
    assert reads.fraction_of_bayes == pytest.approx(slope_now, abs=5e-4)
    assert reads.fraction_of_bayes_next_step == pytest.approx(slope_next, abs=5e-4)
    unit = np.eye(len(reads.read_out_per_unit_shift))[target.feature]
    np.testing.assert_allclose(reads.read_out_per_unit_shift, unit, atol=1e-4)
    # A large response, increasing in delta, smaller one step on (a = 0.7 shrinks the push).
    assert np.all(np.diff(reads.agent) > 0) and reads.agent[-1] > 0.1
    assert 0 < reads.agent_next_step[-1] < reads.agent[-1]


def test_slopes_take_the_sign_of_the_belief_policy_they_are_compared_with():
    """Arm 1's mean pushed, P(arm 1) watched: both move with delta (positive slope). Arm 0's mean
    pushed, P(arm 1) watched: the belief policy moves against delta, the head reading arm 0's mean
    toward action 1 with it, so the slope is negative."""
    same = _bandit_arm_1()[3]["reads"]
    crossed = _bandit_custom()[3]["reads"]
    assert same.belief_greedy[0] < 0 < same.belief_greedy[-1] and same.fraction_of_bayes > 0.1
    assert crossed.belief_greedy[0] > 0 > crossed.belief_greedy[-1] and crossed.fraction_of_bayes < -0.1


def test_the_custom_target_counts_only_its_steps_and_clips_to_its_range():
    case, target, _, report = _bandit_custom()
    random = report["random"]
    mask = _mask(target)[:, TEST]
    assert random.num_steps == mask.sum() < mask.size
    assert random.num_steps_next == (mask[:-1] & mask[1:]).sum()
    # Clipping to [0.3, 0.6] changes the answer: unclipped, the pushes flip other steps.
    features = np.asarray(case["history"].features)[:, TEST]
    unclipped = _greedy_changes(features, _bandit_greedy(1), 0, -np.inf, np.inf, mask)
    assert not np.allclose(random.belief_greedy, unclipped, atol=1e-3)
    # Over every test step the mean hidden norm is another number: the mask is applied.
    all_steps = np.linalg.norm(_read_out("bandit", 0)["hidden"][:, TEST], axis=-1).mean()
    assert abs(random.hidden_norm - all_steps) > 1e-3
