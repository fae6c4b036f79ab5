"""Tabular MDP task sets: beliefs against brute-force float64 Bayes, dynamics against the tables.

The task sets are random and stochastic (Dirichlet transition rows with some entries zeroed,
reward probabilities including exact 0 and 1, a non-uniform prior, start distributions shared
or per task), so every kind of likelihood factor, including the ones that rule a task out,
appears in the histories. Histories come from ``metabelief.testing.random_rollout``; the
references are computed here from the recorded states, actions and rewards with NumPy alone.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief.tasks import TabularFamily, random_tabular
from metabelief.tasks.tabular import TabularState, TabularTask
from metabelief.testing import check_family, random_rollout, sample_tasks

ATOL = 1e-5  # float32 features against a float64 reference
LONG_HISTORY = 5_000

rollout = jax.jit(random_rollout, static_argnames=("family", "num_steps"))
sample = jax.jit(sample_tasks, static_argnames=("family", "num_tasks"))


def sparsify(rng: np.random.Generator, rows: np.ndarray, rate: float) -> np.ndarray:
    """Zeroes about ``rate`` of the entries (never a row's largest) and renormalises the rows."""
    drop = (rng.random(rows.shape) < rate) & (rows < rows.max(axis=-1, keepdims=True))
    rows = np.where(drop, 0.0, rows)
    return rows / rows.sum(axis=-1, keepdims=True)


def stochastic_task_set(
    seed: int,
    init: str,
    num_tasks: int = 5,
    num_states: int = 4,
    num_actions: int = 3,
    zero_prior: bool = False,
) -> dict[str, np.ndarray | None]:
    """float64 arrays of a random stochastic task set, as ``TabularFamily`` keyword arguments.

    ``init`` is "default" (always state 0), "shared" ([S]) or "per_task" ([M, S], with zeros).
    ``zero_prior`` gives the last task prior probability 0.
    """
    rng = np.random.default_rng(seed)
    m, s, a = num_tasks, num_states, num_actions
    transitions = sparsify(rng, rng.dirichlet(np.full(s, 0.8), size=(m, s, a)), 0.25)
    reward_probs = rng.uniform(size=(m, s, a))
    extremes = rng.random((m, s, a))
    reward_probs = np.where(extremes < 0.1, 0.0, np.where(extremes > 0.9, 1.0, reward_probs))
    prior = rng.dirichlet(np.full(m, 2.0))
    if zero_prior:
        prior[-1] = 0.0
        prior /= prior.sum()
    init_probs = {
        "default": None,
        "shared": rng.dirichlet(np.ones(s)),
        "per_task": sparsify(rng, rng.dirichlet(np.ones(s), size=m), 0.3),
    }[init]
    return dict(transitions=transitions, reward_probs=reward_probs, prior=prior, init_probs=init_probs)


def start_table(arrays: dict) -> np.ndarray:
    """float64 [M, S]: the start distribution of every task (the spec's defaults spelled out)."""
    num_tasks, num_states = arrays["transitions"].shape[:2]
    init = arrays["init_probs"]
    if init is None:
        init = np.eye(num_states)[0]
    return np.broadcast_to(init, (num_tasks, num_states))


def reference_posteriors(
    arrays: dict, states: np.ndarray, actions: np.ndarray, rewards: np.ndarray
) -> np.ndarray:
    """float64 [T + 1, N, M]: P(task | history prefix) by brute-force Bayes.

    For every task m: log prior[m] + log init[m, s_0] + sum over the prefix of
    log(T[m, s_t, a_t, s_t+1] * (p or 1 - p)), with log 0 = -inf ruling m out; then normalised.

    Args:
      arrays: the task set (``stochastic_task_set``).
      states: int [T + 1, N], the state before each transition and the last one.
      actions: int [T, N]; rewards: [T, N] in {0, 1}.
    """
    transitions, reward_probs = arrays["transitions"], arrays["reward_probs"]
    num_tasks = transitions.shape[0]
    prior = np.full(num_tasks, 1.0 / num_tasks) if arrays["prior"] is None else arrays["prior"]
    before, after = states[:-1], states[1:]
    reward_prob = reward_probs[:, before, actions]  # [M, T, N]
    likelihood = transitions[:, before, actions, after] * np.where(
        rewards == 1.0, reward_prob, 1.0 - reward_prob
    )
    with np.errstate(divide="ignore"):
        log_start = np.log(prior)[:, None] + np.log(start_table(arrays)[:, states[0]])  # [M, N]
        log_likelihood = np.log(likelihood)
    cumulative = np.concatenate([np.zeros_like(log_likelihood[:, :1]), np.cumsum(log_likelihood, axis=1)], 1)
    log_joint = log_start[:, None] + cumulative  # [M, T + 1, N]
    shift = log_joint.max(axis=0)
    assert np.isfinite(shift).all(), "a history impossible under every task"
    weights = np.exp(log_joint - shift)
    return np.moveaxis(weights / weights.sum(axis=0), 0, -1)


def lanes(task_indices, copies: int) -> TabularTask:
    """``copies`` lanes of each given task index, as a batched ``TabularTask``."""
    return TabularTask(index=jnp.asarray(np.repeat(np.asarray(task_indices), copies), jnp.int32))


def record(family, key, tasks, num_steps):
    """A random rollout on the host, with the states read back off the one-hot observations."""
    out = jax.device_get(rollout(family, key, tasks, num_steps=num_steps))
    return out, out.obs.argmax(axis=-1)


# ---------------------------------------------------------------------------------------------
# Beliefs


def assert_beliefs_match(arrays: dict, out, states: np.ndarray, lanes_to_check=slice(None)) -> np.ndarray:
    """The rollout's belief features equal brute-force Bayes on every prefix; returns the reference."""
    expected = reference_posteriors(
        arrays, states[:, lanes_to_check], out.actions[:, lanes_to_check], out.rewards[:, lanes_to_check]
    )
    features = out.features[:, lanes_to_check]
    assert out.features.dtype == np.float32 and features.shape == expected.shape
    np.testing.assert_allclose(features, expected, rtol=0.0, atol=ATOL)
    # The histories exercise the update: tasks ruled out by zero entries, others left uncertain.
    assert (expected[1:] == 0.0).any() and ((expected[1:] > 0.05) & (expected[1:] < 0.95)).any()
    return expected


@pytest.mark.parametrize("init", ["default", "shared"])
def test_belief_matches_brute_force_bayes_on_random_histories(init):
    arrays = stochastic_task_set(seed=len(init), init=init)
    family = TabularFamily(**arrays, horizon=25)
    tasks = lanes(np.arange(5), copies=6)
    # 60 steps, well past the horizon of 25: the belief keeps following the same task.
    out, states = record(family, jax.random.key(1), tasks, 60)
    assert_beliefs_match(arrays, out, states)
    np.testing.assert_array_equal(
        out.truth, np.broadcast_to(np.eye(5)[np.asarray(tasks.index)], out.truth.shape)
    )
    # A start distribution shared by the tasks says nothing about them: belief_init is the prior.
    np.testing.assert_allclose(
        out.features[0], np.broadcast_to(arrays["prior"], (30, 5)), rtol=0.0, atol=ATOL
    )


@pytest.fixture(scope="module")
def dynamics_case():
    """A task set with per-task starts and a task of prior 0, and 300 lanes x 200 random steps.

    The lanes play every task, the impossible one included, 60 times each; 200 steps is four
    times the horizon, so the task's tables must keep applying past it.
    """
    arrays = stochastic_task_set(seed=5, init="per_task", zero_prior=True)
    family = TabularFamily(**arrays, horizon=50)
    out, states = record(family, jax.random.key(5), lanes(np.arange(5), copies=60), 200)
    return arrays, family, out, states


def test_belief_matches_brute_force_bayes_with_per_task_starts_and_a_zero_prior_task(dynamics_case):
    arrays, _, out, states = dynamics_case
    possible = np.flatnonzero(arrays["prior"] > 0)
    assert possible.size == 4  # a history needs a task the prior allows
    playable = np.isin(out.truth[0].argmax(-1), possible)
    expected = assert_beliefs_match(arrays, out, states, playable)
    assert (out.features[:, playable, -1] == 0.0).all()  # the task the prior rules out stays out
    # belief_init conditions on the start state: it moved away from the prior.
    assert np.abs(expected[0] - arrays["prior"]).max() > 0.05


def near_twin_task_set(seed: int) -> dict[str, np.ndarray]:
    """Four tasks; tasks 0 and 1 differ by a few percent, so a history tells them apart slowly.

    Task 1's transition rows are task 0's times exp(0.02 * noise), renormalised (same zeros), and
    its reward probabilities task 0's (kept in [0.2, 0.8]) plus up to 0.005.
    """
    arrays = stochastic_task_set(seed, init="shared", num_tasks=4, num_states=3, num_actions=2)
    rng = np.random.default_rng(seed + 100)
    transitions, reward_probs = arrays["transitions"], arrays["reward_probs"]
    twin = transitions[0] * np.exp(0.02 * rng.standard_normal(transitions[0].shape))
    transitions[1] = twin / twin.sum(axis=-1, keepdims=True)
    reward_probs[0] = np.clip(reward_probs[0], 0.2, 0.8)
    reward_probs[1] = reward_probs[0] + rng.uniform(-0.005, 0.005, size=reward_probs[0].shape)
    return arrays


def test_belief_matches_brute_force_bayes_over_a_long_history():
    # Rounding that accumulates in a float32 log-posterior grows with the history length: a
    # belief that only renormalises each step drifts by ~5e-6 per 1,000 steps here, while a
    # compensated (Kahan) sum stays near 1e-7 over all 5,000.
    arrays = near_twin_task_set(seed=12)
    family = TabularFamily(**arrays, horizon=100)
    tasks = lanes([0, 1, 0, 1, 0, 1, 0, 1, 2, 3], copies=1)
    out, states = record(family, jax.random.key(2), tasks, LONG_HISTORY)
    expected = reference_posteriors(arrays, states, out.actions, out.rewards)
    assert np.isfinite(out.features).all()
    np.testing.assert_allclose(out.features.sum(axis=-1), 1.0, rtol=0.0, atol=ATOL)
    # The twins stay uncertain over the whole history (well-defined, far from 0 and 1) while
    # moving far more than ATOL, so float32 drift in the log-posterior would show.
    pair = expected[100:, :8, 0] / expected[100:, :8, :2].sum(axis=-1)
    assert (pair > 1e-3).all() and (pair < 1.0 - 1e-3).all(), (pair.min(), pair.max())
    assert np.ptp(pair, axis=0).min() > 0.1
    np.testing.assert_allclose(expected[-1, 8:], np.eye(4)[[2, 3]], rtol=0.0, atol=1e-12)
    error = np.abs(out.features - expected).max(axis=(1, 2))  # [T + 1]
    per_1000_steps = [f"{error[: t + 1].max():.2g}" for t in range(1000, LONG_HISTORY + 1, 1000)]
    assert error.max() <= ATOL, f"largest error up to step 1000, 2000, ...: {per_1000_steps}"


def test_belief_hand_computed_case():
    # Two tasks, two states, one action. Prior (0.25, 0.75); task 0 starts in 0 or 1 evenly,
    # task 1 always in 0. Task 0 moves 0 -> 1 w.p. 0.2 and pays w.p. 0.5; task 1 moves w.p. 0.6
    # and pays w.p. 0.9.
    transitions = np.array([[[[0.8, 0.2]], [[0.0, 1.0]]], [[[0.4, 0.6]], [[0.5, 0.5]]]])
    reward_probs = np.array([[[0.5], [0.5]], [[0.9], [0.1]]])
    family = TabularFamily(
        transitions, reward_probs, prior=[0.25, 0.75], init_probs=[[0.5, 0.5], [1.0, 0.0]], horizon=5
    )
    zero, one = jnp.eye(2, dtype=jnp.float32)
    belief = family.belief_init(zero)
    start = np.array([0.25 * 0.5, 0.75 * 1.0])
    np.testing.assert_allclose(family.belief_features(belief), start / start.sum(), rtol=1e-6)
    action = jnp.asarray(0, jnp.int32)
    # 0 -> 1 without reward: likelihoods 0.2 * 0.5 and 0.6 * 0.1.
    belief = family.belief_update(belief, zero, action, jnp.float32(0.0), one)
    moved = start * np.array([0.2 * 0.5, 0.6 * 0.1])
    np.testing.assert_allclose(family.belief_features(belief), moved / moved.sum(), rtol=1e-6)
    # 1 -> 0 with reward: task 0 cannot leave state 1, so the posterior is certain.
    belief = family.belief_update(belief, one, action, jnp.float32(1.0), zero)
    np.testing.assert_allclose(family.belief_features(belief), [0.0, 1.0], atol=1e-7)
    assert isinstance(belief.log_posterior, jax.Array) and belief.log_posterior.shape == (2,)


# ---------------------------------------------------------------------------------------------
# Environment dynamics


def assert_frequencies(counts: np.ndarray, probs: np.ndarray) -> None:
    """Each count within 5 standard errors (plus one) of n * prob; impossible outcomes never seen.

    Args:
      counts: [..., K] outcomes of n = counts.sum(-1) independent draws.
      probs: [..., K] their probabilities.
    """
    draws = counts.sum(axis=-1, keepdims=True)
    assert (counts[probs == 0.0] == 0).all(), "an outcome of probability 0 happened"
    bound = 5.0 * np.sqrt(draws * probs * (1.0 - probs)) + 1.0
    worst = np.unravel_index(np.argmax(np.abs(counts - draws * probs) - bound), counts.shape)
    assert (np.abs(counts - draws * probs) <= bound).all(), (worst, counts[worst[:-1]], probs[worst[:-1]])


def test_sample_task_follows_the_prior(dynamics_case):
    arrays, family, _, _ = dynamics_case
    tasks = sample(family, jax.random.key(3), num_tasks=20_000)
    assert isinstance(tasks, TabularTask) and tasks.index.dtype == jnp.int32
    counts = np.bincount(np.asarray(tasks.index), minlength=family.num_tasks)
    assert counts.size == family.num_tasks
    assert_frequencies(counts, arrays["prior"])


def test_reset_follows_each_tasks_start_distribution(dynamics_case):
    arrays, family, _, _ = dynamics_case
    num_resets = 4_000
    keys = jax.random.split(jax.random.key(4), (family.num_tasks, num_resets))
    tasks = TabularTask(
        index=jnp.repeat(jnp.arange(family.num_tasks, dtype=jnp.int32)[:, None], num_resets, 1)
    )
    states, obs = jax.jit(jax.vmap(jax.vmap(family.reset)))(keys, tasks)
    assert isinstance(states, TabularState)
    assert states.position.dtype == jnp.int32 and states.time.dtype == jnp.int32
    assert (np.asarray(states.time) == 0).all()
    np.testing.assert_array_equal(
        obs, np.eye(family.num_states, dtype=np.float32)[np.asarray(states.position)]
    )
    counts = (np.asarray(states.position)[..., None] == np.arange(family.num_states)).sum(axis=1)
    assert_frequencies(counts, start_table(arrays))


def test_step_follows_transitions_and_reward_probs(dynamics_case):
    arrays, _, out, states = dynamics_case
    num_tasks, num_states, num_actions = arrays["reward_probs"].shape
    assert out.rewards.dtype == np.float32 and set(np.unique(out.rewards)) <= {0.0, 1.0}
    task = np.broadcast_to(out.truth[0].argmax(-1), out.actions.shape)
    np.testing.assert_array_equal(out.truth, np.broadcast_to(np.eye(5)[task[0]], out.truth.shape))
    cell = (task, states[:-1], out.actions)  # (m, s, a) of each transition
    moves = np.zeros((num_tasks, num_states, num_actions, num_states), np.int64)
    np.add.at(moves, (*cell, states[1:]), 1)
    paid = np.zeros((num_tasks, num_states, num_actions, 2), np.int64)
    np.add.at(paid, (*cell, out.rewards.astype(np.int64)), 1)
    visits = moves.sum(axis=-1)
    assert np.median(visits) > 200  # enough draws for the bounds to bite
    assert_frequencies(moves, arrays["transitions"])
    reward_probs = arrays["reward_probs"]
    assert_frequencies(paid, np.stack([1.0 - reward_probs, reward_probs], axis=-1))


def test_obs_is_one_hot_and_done_from_the_horizon_on():
    arrays = stochastic_task_set(seed=6, init="shared")
    horizon, num_steps = 3, 7
    family = TabularFamily(**arrays, horizon=horizon)
    assert (family.num_tasks, family.num_states, family.num_actions) == (5, 4, 3)
    assert family.obs_size == 4 and family.horizon == horizon
    task = TabularTask(index=jnp.asarray(2, jnp.int32))
    reset_key, *step_keys = jax.random.split(jax.random.key(7), num_steps + 1)
    state, obs = jax.jit(family.reset)(reset_key, task)
    assert obs.dtype == jnp.float32 and obs.shape == (4,)
    np.testing.assert_array_equal(obs, np.eye(4)[int(state.position)])
    assert int(state.time) == 0
    step = jax.jit(family.step)
    for t, key in enumerate(step_keys, start=1):
        state, obs, reward, done = step(key, task, state, jnp.asarray(t % 3, jnp.int32))
        assert obs.dtype == jnp.float32 and reward.dtype == jnp.float32 and done.dtype == jnp.bool_
        assert reward.shape == () and done.shape == ()
        np.testing.assert_array_equal(obs, np.eye(4)[int(state.position)])
        assert int(state.time) == t and bool(done) == (t >= horizon)


def test_default_start_is_state_zero():
    arrays = stochastic_task_set(seed=8, init="default")
    family = TabularFamily(arrays["transitions"], arrays["reward_probs"])
    assert family.horizon == 50  # the same default as make("tabular")
    keys = jax.random.split(jax.random.key(8), 64)
    tasks = TabularTask(index=jnp.arange(64, dtype=jnp.int32) % 5)
    states, obs = jax.vmap(family.reset)(keys, tasks)
    assert (np.asarray(states.position) == 0).all()
    np.testing.assert_array_equal(obs, np.broadcast_to(np.eye(4)[0], (64, 4)))
    counts = np.bincount(np.asarray(sample(family, jax.random.key(9), num_tasks=5_000).index), minlength=5)
    assert_frequencies(counts, np.full(5, 0.2))  # the default prior is uniform


# ---------------------------------------------------------------------------------------------
# Construction, equality, registry


def valid_arrays() -> dict:
    """Two tasks, three states, two actions."""
    return stochastic_task_set(seed=9, init="per_task", num_tasks=2, num_states=3, num_actions=2)


def broken(name: str, edit) -> dict:
    arrays = valid_arrays()
    arrays[name] = edit(arrays[name])
    return arrays


def set_entry(index, value):
    def edit(array):
        array = np.array(array, dtype=np.float64)
        array[index] = value
        return array

    return edit


INVALID = [
    ("transitions", lambda t: t[0]),  # [S, A, S]
    ("transitions", lambda t: t[..., :2]),  # [M, S, A, S - 1]
    ("transitions", lambda t: t[:, :, :, :, None]),
    ("transitions", lambda t: 1.1 * t),  # rows sum to 1.1
    ("transitions", lambda t: 0.5 * t),
    ("transitions", set_entry((0, 0, 0), [1.5, -0.5, 0.0])),  # sums to 1, entries outside [0, 1]
    ("transitions", set_entry((1, 2, 1, 0), np.nan)),
    ("transitions", lambda t: t[:0]),  # no tasks
    ("transitions", lambda t: "not an array"),
    ("reward_probs", lambda r: r[..., 0]),  # [M, S]
    ("reward_probs", lambda r: r[:1]),  # one task too few
    ("reward_probs", lambda r: np.concatenate([r, r[..., :1]], axis=-1)),  # [M, S, A + 1]
    ("reward_probs", set_entry((0, 1, 1), 1.5)),
    ("reward_probs", set_entry((0, 1, 1), -0.1)),
    ("reward_probs", set_entry((1, 0, 0), np.nan)),
    ("prior", lambda p: np.array([0.5, 0.25, 0.25])),  # [M + 1]
    ("prior", lambda p: np.array([[0.5, 0.5]])),
    ("prior", lambda p: np.array([0.3, 0.3])),
    ("prior", lambda p: np.array([1.5, -0.5])),
    ("prior", lambda p: np.array([np.nan, 1.0])),
    ("init_probs", lambda i: np.full(4, 0.25)),  # [S + 1]
    ("init_probs", lambda i: np.full((3, 3), 1.0 / 3.0)),  # [M + 1, S]
    ("init_probs", lambda i: i[None]),  # [1, M, S]
    ("init_probs", lambda i: np.full(3, 0.5)),
    ("init_probs", set_entry((0, 0), np.nan)),
    ("init_probs", lambda i: np.array([1.5, -0.5, 0.0])),
    ("horizon", lambda h: 0),
    ("horizon", lambda h: -3),
    ("horizon", lambda h: 2.5),
    ("horizon", lambda h: True),
]


@pytest.mark.parametrize("name, edit", INVALID, ids=[f"{name}-{i}" for i, (name, _) in enumerate(INVALID)])
def test_invalid_arguments_raise_value_error_naming_them(name, edit):
    arrays = dict(valid_arrays(), horizon=10)
    arrays[name] = edit(arrays[name])
    with pytest.raises(ValueError, match=name):
        TabularFamily(**arrays)
    with pytest.raises(ValueError, match=name):
        metabelief.make("tabular", **arrays)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(num_tasks=0), "num_tasks"),
        (dict(num_states=0), "num_states"),
        (dict(num_actions=1.5), "num_actions"),
        (dict(horizon=0), "horizon"),
        (dict(seed=-1), "seed"),
        (dict(transitions=valid_arrays()["transitions"]), "reward_probs"),  # one array without the other
    ],
    ids=str,
)
def test_invalid_registry_arguments_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        metabelief.make("tabular", **kwargs)


def test_families_compare_and_hash_by_their_arrays_and_horizon():
    arrays = valid_arrays()
    family = TabularFamily(**arrays, horizon=10)
    copy = TabularFamily(**{name: np.array(value).tolist() for name, value in arrays.items()}, horizon=10)
    assert family == copy and hash(family) == hash(copy)
    assert family != "tabular" and family != metabelief.make("tabular")
    assert TabularFamily(**arrays, horizon=11) != family
    for name, index in [
        ("transitions", (1, 2, 0)),
        ("reward_probs", (0, 0)),
        ("prior", slice(None)),
        ("init_probs", (1,)),
    ]:
        changed = dict(arrays)
        changed[name] = np.array(arrays[name])
        changed[name][index] = changed[name][index][::-1]  # still valid rows / probabilities
        assert not np.array_equal(changed[name], arrays[name])
        assert TabularFamily(**changed, horizon=10) != family, name
    # The defaults are the arrays they stand for.
    transitions, reward_probs = arrays["transitions"], arrays["reward_probs"]
    assert TabularFamily(transitions, reward_probs) == TabularFamily(
        transitions, reward_probs, prior=np.full(2, 0.5), init_probs=np.eye(3)[0], horizon=50
    )


def test_families_are_immutable_and_own_their_arrays():
    arrays = valid_arrays()
    family = TabularFamily(**arrays, horizon=10)
    before = hash(family)
    arrays["transitions"][0, 0, 0] = [1.0, 0.0, 0.0]  # the caller's array changes afterwards
    arrays["prior"][:] = [1.0, 0.0]
    assert family == TabularFamily(**valid_arrays(), horizon=10) and hash(family) == before
    with pytest.raises((ValueError, TypeError)):
        np.asarray(family.transitions)[0, 0, 0, 0] = 0.5
    # A static jit argument must not change under jit's cache: the base contract's "immutable".
    with pytest.raises((AttributeError, dataclasses.FrozenInstanceError)):
        family.horizon = 3


def test_equal_families_share_one_compile():
    traces = []

    @functools.partial(jax.jit, static_argnums=0)
    def first_obs(family, key):
        traces.append(family)
        return family.reset(key, TabularTask(index=jnp.asarray(1, jnp.int32)))[1]

    arrays = valid_arrays()
    key = jax.random.key(10)
    first_obs(TabularFamily(**arrays, horizon=10), key)
    first_obs(TabularFamily(**{k: np.copy(v) for k, v in arrays.items()}, horizon=10), key)
    assert len(traces) == 1
    first_obs(TabularFamily(**arrays, horizon=12), key)
    assert len(traces) == 2


def test_make_tabular_defaults_build_a_random_stochastic_task_set():
    assert {"tabular", "gridworld"} <= set(metabelief.families())
    family = metabelief.make("tabular")
    assert isinstance(family, TabularFamily)
    assert (family.num_tasks, family.num_states, family.num_actions, family.horizon) == (4, 5, 2, 50)
    assert family.obs_size == 5
    assert family == random_tabular(4, 5, 2, horizon=50, seed=0) == metabelief.make("tabular")
    assert metabelief.make("tabular", seed=1) != family
    transitions, reward_probs = np.asarray(family.transitions), np.asarray(family.reward_probs)
    assert transitions.shape == (4, 5, 2, 5) and reward_probs.shape == (4, 5, 2)
    np.testing.assert_allclose(transitions.sum(axis=-1), 1.0, atol=1e-9)
    assert ((reward_probs >= 0.0) & (reward_probs <= 1.0)).all()
    # Stochastic, with impossible moves: most rows spread over several next states, some entries
    # are 0 (so a move can rule a task out), and the tasks differ from one another.
    support = (transitions > 0).sum(axis=-1)
    assert (support >= 1).all() and support.mean() > 2.0 and (transitions == 0).any()
    assert len({transitions[m].tobytes() for m in range(4)}) == 4
    other = metabelief.make("tabular", num_tasks=3, num_states=2, num_actions=4, horizon=9, seed=3)
    assert (other.num_tasks, other.num_states, other.num_actions, other.horizon) == (3, 2, 4, 9)
    assert other == random_tabular(3, 2, 4, horizon=9, seed=3)


def test_make_tabular_with_explicit_arrays():
    arrays = valid_arrays()
    family = metabelief.make("tabular", **arrays, horizon=7)
    assert family == TabularFamily(**arrays, horizon=7)
    np.testing.assert_array_equal(family.transitions, arrays["transitions"])
    np.testing.assert_array_equal(family.reward_probs, arrays["reward_probs"])
    np.testing.assert_array_equal(family.prior, arrays["prior"])
    np.testing.assert_array_equal(family.init_probs, arrays["init_probs"])
    assert (family.num_tasks, family.num_states, family.num_actions, family.horizon) == (2, 3, 2, 7)


# ---------------------------------------------------------------------------------------------
# The conformance check


def test_check_family_passes_on_the_default_task_set():
    check_family(metabelief.make("tabular"), num_tasks=1024)


def test_check_family_passes_on_a_hand_made_task_set():
    arrays = stochastic_task_set(seed=12, init="per_task", num_tasks=3, num_states=3, num_actions=2)
    check_family(TabularFamily(**arrays, horizon=30), num_tasks=1024)
