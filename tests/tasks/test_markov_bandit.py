"""The Markov (restless) bandit: beliefs against a float64 NumPy forward filter, dynamics against
their parameters.

The reference filter is written here from the family's specification, without the package's
code: each arm's hidden chain is filtered in float64 probability space, normalising after every
step. On a transition the pulled arm's posterior is multiplied by the likelihood of the reward and
normalised, then EVERY arm's posterior is pushed through its own transition matrix (the belief
describes the states the agent acts in next). The family's own check under ``check_family`` with
default arguments runs in tests/test_testing.py, which checks every registered family.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief.tasks import MarkovBandit
from metabelief.tasks.markov_bandit import KUO_VARIANTS, MarkovBelief
from metabelief.testing import check_family, random_rollout, sample_tasks

ATOL = 1e-5  # float32 features against a float64 reference

rollout = jax.jit(random_rollout, static_argnames=("family", "num_steps"))

DEFAULTS = dict(
    reward_probs=((0.1, 0.9), (0.1, 0.9)),
    transitions=(((0.9, 0.1), (0.1, 0.9)),) * 2,
    horizon=300,
)

# Chains that are not symmetric (so a transposed matrix shows), an arm whose high state is state 0,
# and 3 arms of 3 states with a tie for the highest reward probability (the first state wins).
ASYMMETRIC = dict(
    reward_probs=((0.8, 0.3), (0.25, 0.7)),
    transitions=(((0.95, 0.05), (0.3, 0.7)), ((0.6, 0.4), (0.1, 0.9))),
    horizon=50,
)
THREE_BY_THREE = dict(
    reward_probs=((0.1, 0.5, 0.9), (0.6, 0.6, 0.1), (0.3, 0.8, 0.2)),
    transitions=(
        ((0.8, 0.15, 0.05), (0.1, 0.7, 0.2), (0.05, 0.25, 0.7)),
        ((0.5, 0.3, 0.2), (0.0, 0.9, 0.1), (0.3, 0.3, 0.4)),
        ((0.9, 0.1, 0.0), (0.2, 0.2, 0.6), (0.1, 0.1, 0.8)),
    ),
    horizon=40,
)
# Rewards that reveal arm 0's state, an absorbing state and impossible transitions: log 0 = -inf.
DETERMINISTIC = dict(
    reward_probs=((0.0, 1.0), (1.0, 0.5)),
    transitions=(((1.0, 0.0), (0.2, 0.8)), ((0.7, 0.3), (0.0, 1.0))),
    horizon=60,
)
# Slow chains and informative rewards: near-certain beliefs over a long history.
SLOW = dict(
    reward_probs=((0.05, 0.95), (0.2, 0.9)),
    transitions=(((0.99, 0.01), (0.02, 0.98)), ((0.995, 0.005), (0.01, 0.99))),
    horizon=3000,
)


def parameters(kwargs: dict) -> tuple[np.ndarray, np.ndarray]:
    """float64 reward_probs [K, S] and transitions [K, S, S] of the family built from ``kwargs``."""
    full = {**DEFAULTS, **kwargs}
    return np.asarray(full["reward_probs"], np.float64), np.asarray(full["transitions"], np.float64)


def reference_posteriors(kwargs: dict, actions: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """float64 [T + 1, N, K, S]: P(state of each arm on the next step | history), each prefix.

    ``actions`` int[T, N] and ``rewards`` float[T, N] of a rollout; index 0 is the uniform prior.
    """
    reward_probs, transitions = parameters(kwargs)
    (num_steps, num_tasks), (num_arms, num_states) = actions.shape, reward_probs.shape
    lanes = np.arange(num_tasks)
    posteriors = np.empty((num_steps + 1, num_tasks, num_arms, num_states))
    posteriors[0] = 1.0 / num_states
    for t in range(num_steps):
        belief = posteriors[t].copy()
        pulled = actions[t]
        p = reward_probs[pulled]  # [N, S]
        likelihood = np.where(rewards[t][:, None] > 0.5, p, 1.0 - p)
        joint = belief[lanes, pulled] * likelihood
        belief[lanes, pulled] = joint / joint.sum(axis=-1, keepdims=True)
        posteriors[t + 1] = np.einsum("nks,kst->nkt", belief, transitions)  # every arm steps
    return posteriors


def reference_features(kwargs: dict, posteriors: np.ndarray) -> np.ndarray:
    """float64 [..., 2K]: [P(arm k in its high state)] + [E reward of arm k]."""
    reward_probs, _ = parameters(kwargs)
    high = np.argmax(reward_probs, axis=1)  # the first on ties
    p_high = posteriors[..., np.arange(len(high)), high]  # [..., K]
    return np.concatenate([p_high, (posteriors * reward_probs).sum(axis=-1)], axis=-1)


@functools.partial(jax.jit, static_argnames="family")
def replay_final_belief(family: MarkovBandit, actions: jax.Array, rewards: jax.Array):
    """The family's belief after replaying recorded ``actions``/``rewards`` [T, N] (its own update)."""
    no_obs = jnp.zeros((actions.shape[1], 0), jnp.float32)
    initial = jax.vmap(family.belief_init)(no_obs)

    def update(belief, transition):
        action, reward = transition
        return jax.vmap(family.belief_update)(belief, no_obs, action, reward, no_obs), None

    return jax.lax.scan(update, initial, (actions, rewards))[0]


# ---------------------------------------------------------------------------------------------
# Beliefs on random histories

BELIEF_CASES = {
    "defaults": ({}, 400),
    **{f"kuo-{name}": (dict(kwargs), 300) for name, kwargs in KUO_VARIANTS.items()},
    "asymmetric-chains-high-state-first": (ASYMMETRIC, 200),
    "three-arms-three-states": (THREE_BY_THREE, 200),
    "deterministic-rewards-absorbing-states": (DETERMINISTIC, 200),
}


@pytest.mark.parametrize("name", list(BELIEF_CASES))
def test_belief_features_equal_the_float64_forward_filter(name):
    kwargs, num_steps = BELIEF_CASES[name]
    family = MarkovBandit(**kwargs)
    num_arms = parameters(kwargs)[0].shape[0]
    tasks = sample_tasks(family, jax.random.key(1), 32)
    out = jax.device_get(rollout(family, jax.random.key(2), tasks, num_steps=num_steps))
    assert out.features.dtype == np.float32 and out.features.shape == (num_steps + 1, 32, 2 * num_arms)
    assert out.obs.shape == (num_steps + 1, 32, 0)
    np.testing.assert_array_equal(np.isin(out.rewards, (0.0, 1.0)), True)
    expected = reference_features(kwargs, reference_posteriors(kwargs, out.actions, out.rewards))
    np.testing.assert_allclose(out.features, expected, rtol=0.0, atol=ATOL)
    # Every arm was pulled and both rewards were seen: the histories test the whole update.
    assert set(np.unique(out.actions)) == set(range(num_arms)) and 0.0 < out.rewards.mean() < 1.0


def test_log_space_stays_finite_and_exact_over_3000_steps():
    family = MarkovBandit(**SLOW)
    num_steps = 3000
    tasks = sample_tasks(family, jax.random.key(3), 16)
    out = jax.device_get(rollout(family, jax.random.key(4), tasks, num_steps=num_steps))
    posteriors = reference_posteriors(SLOW, out.actions, out.rewards)
    np.testing.assert_allclose(out.features, reference_features(SLOW, posteriors), rtol=0.0, atol=ATOL)
    # The beliefs were near-certain somewhere (where float32 probabilities would lose precision).
    assert (np.abs(posteriors[..., 0] - 0.5) > 0.49).mean() > 0.1
    final = jax.device_get(replay_final_belief(family, out.actions, out.rewards))
    assert isinstance(final, MarkovBelief) and final.log_probs.dtype == np.float32
    assert final.log_probs.shape == (16, 2, 2) and np.isfinite(final.log_probs).all()
    np.testing.assert_allclose(np.exp(final.log_probs), posteriors[-1], rtol=0.0, atol=ATOL)
    # Normalised log probabilities: exp sums to 1 per arm.
    np.testing.assert_allclose(np.exp(final.log_probs).sum(axis=-1), 1.0, atol=1e-5)


def test_belief_after_one_pull_by_hand():
    family = MarkovBandit()  # reward 0.1 / 0.9, stay 0.9

    @jax.jit
    def features_after(arms, rewards):
        no_obs = jnp.zeros((0,), jnp.float32)
        belief = family.belief_init(no_obs)
        for arm, reward in zip(arms, rewards, strict=True):
            belief = family.belief_update(belief, no_obs, arm, reward, no_obs)
        return family.belief_features(belief)

    one = functools.partial(jax.tree.map, lambda x: jnp.asarray([x]))
    np.testing.assert_allclose(features_after((), ()), [0.5, 0.5, 0.5, 0.5], atol=1e-6)
    # Arm 0 paid: posterior (0.1, 0.9), then predicted P(high) = 0.1 * 0.1 + 0.9 * 0.9 = 0.82 and
    # E reward = 0.18 * 0.1 + 0.82 * 0.9 = 0.756. Arm 1 unpulled and at its stationary 1/2.
    np.testing.assert_allclose(
        features_after(*one((jnp.int32(0), jnp.float32(1.0)))), [0.82, 0.5, 0.756, 0.5], atol=1e-6
    )
    np.testing.assert_allclose(
        features_after(*one((jnp.int32(1), jnp.float32(0.0)))), [0.5, 0.18, 0.5, 0.244], atol=1e-6
    )


def test_unpulled_arm_relaxes_through_its_transition_matrix():
    family = MarkovBandit(**ASYMMETRIC)  # arm 0's high state is state 0
    no_obs = jnp.zeros((0,), jnp.float32)

    @jax.jit
    def features_after_pulling_arm_1(rewards):
        belief = family.belief_init(no_obs)
        for reward in rewards:
            belief = family.belief_update(belief, no_obs, jnp.int32(1), reward, no_obs)
        return family.belief_features(belief)

    features = features_after_pulling_arm_1(jnp.ones(3, jnp.float32))
    # Arm 0 is never observed: uniform pushed through its matrix three times.
    arm0 = np.array([0.5, 0.5]) @ np.linalg.matrix_power(np.asarray(ASYMMETRIC["transitions"][0]), 3)
    np.testing.assert_allclose(features[0], arm0[0], atol=1e-6)
    np.testing.assert_allclose(features[2], arm0 @ np.asarray(ASYMMETRIC["reward_probs"][0]), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Dynamics


def assert_frequency(events: np.ndarray, p: float, what: str) -> None:
    n = events.size
    assert n > 0, what
    se = np.sqrt(max(p * (1.0 - p), 1.0 / n) / n)
    assert abs(events.mean() - p) < 5.0 * se, (what, events.mean(), p, se)


@pytest.mark.parametrize("kwargs", [ASYMMETRIC, {}], ids=["asymmetric", "defaults"])
def test_reward_and_transition_frequencies_match_the_parameters(kwargs):
    family = MarkovBandit(**kwargs)
    reward_probs, transitions = parameters(kwargs)
    high = np.argmax(reward_probs, axis=1)  # [K]
    num_tasks, num_steps = 256, 200
    tasks = sample_tasks(family, jax.random.key(5), num_tasks)
    out = jax.device_get(rollout(family, jax.random.key(6), tasks, num_steps=num_steps))
    assert out.truth.shape == (num_steps + 1, num_tasks, 2)
    np.testing.assert_array_equal(np.isin(out.truth, (0.0, 1.0)), True)
    # Two states per arm: the high-state indicator gives the state.
    states = np.where(out.truth > 0.5, high, 1 - high)  # [T + 1, N, K]
    np.testing.assert_array_equal(states[0], np.asarray(tasks.initial_states))
    for k in range(2):
        assert_frequency(states[0, :, k] == 1, 0.5, f"arm {k} starts in state 1")
        pulled = out.actions == k
        arm_state = states[:-1, :, k]  # the reward depends on the state before the step
        for s in range(2):
            assert_frequency(
                out.rewards[pulled & (arm_state == s)], reward_probs[k, s], f"reward of arm {k} in state {s}"
            )
            # Every arm steps on every transition, pulled or not.
            for was_pulled in (pulled, ~pulled):
                moved_to_1 = states[1:, :, k][(arm_state == s) & was_pulled] == 1
                assert_frequency(moved_to_1, transitions[k, s, 1], f"arm {k}: {s} -> 1")
    expected_done = np.arange(1, num_steps + 1)[:, None] >= family.horizon
    np.testing.assert_array_equal(out.dones, np.broadcast_to(expected_done, out.dones.shape))


def test_initial_states_are_uniform_over_three_states():
    family = MarkovBandit(**THREE_BY_THREE)
    tasks = jax.device_get(sample_tasks(family, jax.random.key(7), 4096))
    assert tasks.initial_states.dtype == np.int32 and tasks.initial_states.shape == (4096, 3)
    for s in range(3):
        assert_frequency(tasks.initial_states == s, 1.0 / 3.0, f"initial state {s}")
    state, obs = family.reset(jax.random.key(8), jax.tree.map(lambda x: x[0], tasks))
    np.testing.assert_array_equal(state.states, tasks.initial_states[0])
    assert int(state.time) == 0 and obs.shape == (0,) and obs.dtype == jnp.float32
    # High state of arm 1 is state 0 (the first of the tied 0.6's): the truth marks it.
    high = np.argmax(np.asarray(THREE_BY_THREE["reward_probs"]), axis=1)
    np.testing.assert_array_equal(
        family.true_features(jax.tree.map(lambda x: x[0], tasks), state),
        (tasks.initial_states[0] == high).astype(np.float32),
    )


def test_layouts():
    family = metabelief.make("markov_bandit")
    assert family == MarkovBandit()
    assert (family.num_actions, family.obs_size, family.horizon) == (2, 0, 300)
    three = metabelief.make("markov_bandit", **THREE_BY_THREE)
    assert (three.num_actions, three.obs_size, three.horizon) == (3, 0, 40)
    hash(three)
    task = three.sample_task(jax.random.key(0))
    state, obs = three.reset(jax.random.key(1), task)
    belief = three.belief_init(obs)
    assert isinstance(belief, MarkovBelief)
    assert belief.log_probs.shape == (3, 3) and belief.log_probs.dtype == jnp.float32
    assert three.belief_features(belief).shape == (6,) and three.true_features(task, state).shape == (3,)
    assert state.states.dtype == jnp.int32 and state.time.dtype == jnp.int32
    assert isinstance(three, metabelief.tasks.ExpectedRewards)


# ---------------------------------------------------------------------------------------------
# Expected rewards


def test_expected_rewards_equal_the_reference_posterior_mean_reward():
    family = MarkovBandit(**THREE_BY_THREE)
    reward_probs, _ = parameters(THREE_BY_THREE)
    tasks = sample_tasks(family, jax.random.key(9), 32)  # the belief test's shapes: one compile
    out = jax.device_get(rollout(family, jax.random.key(10), tasks, num_steps=200))
    posteriors = reference_posteriors(THREE_BY_THREE, out.actions, out.rewards)  # [T + 1, N, K, S]
    beliefs = MarkovBelief(log_probs=jnp.asarray(np.log(posteriors), jnp.float32))
    got = np.asarray(jax.jit(jax.vmap(jax.vmap(family.expected_rewards)))(beliefs, jnp.asarray(out.obs)))
    assert got.dtype == np.float32 and got.shape == (201, 32, 3)
    expected = (posteriors * reward_probs).sum(axis=-1)
    np.testing.assert_allclose(got, expected, rtol=0.0, atol=ATOL)
    np.testing.assert_allclose(got, out.features[..., 3:], rtol=0.0, atol=ATOL)  # the second half


# ---------------------------------------------------------------------------------------------
# Construction and the conformance check

TWO_BY_TWO = (((0.9, 0.1), (0.1, 0.9)),) * 2


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(reward_probs=((0.1, 1.5), (0.1, 0.9))), "reward_probs"),
        (dict(reward_probs=((-0.1, 0.9), (0.1, 0.9))), "reward_probs"),
        (dict(reward_probs=((0.1, float("nan")), (0.1, 0.9))), "reward_probs"),
        (dict(reward_probs=((0.1, 0.9), (0.1, 0.5, 0.9))), "reward_probs"),  # ragged
        (dict(reward_probs=((0.1, 0.9),), transitions=TWO_BY_TWO[:1]), "reward_probs"),  # one arm
        (dict(reward_probs=((0.5,), (0.5,)), transitions=(((1.0,),),) * 2), "reward_probs"),  # one state
        (dict(transitions=(((0.9, 0.2), (0.1, 0.9)), TWO_BY_TWO[1])), "transitions"),  # row sums 1.1
        (dict(transitions=(TWO_BY_TWO[0], ((0.5, 0.4), (0.1, 0.9)))), "transitions"),  # row sums 0.9
        (dict(transitions=(((1.2, -0.2), (0.1, 0.9)), TWO_BY_TWO[1])), "transitions"),  # negative
        (dict(transitions=(((0.9, 0.1), (float("nan"), 0.9)), TWO_BY_TWO[1])), "transitions"),
        (dict(transitions=TWO_BY_TWO[:1]), "transitions"),  # one matrix for two arms
        (dict(transitions=TWO_BY_TWO * 2), "transitions"),  # four matrices for two arms
        (dict(transitions=(((0.9, 0.1),),) * 2), "transitions"),  # 1 x 2, not square
        (dict(transitions=(((0.8, 0.1, 0.1),) * 3,) * 2), "transitions"),  # 3 x 3 for 2 states
        (dict(horizon=0), "horizon"),
        (dict(horizon=2.5), "horizon"),
    ],
    ids=str,
)
def test_invalid_arguments_raise_value_error(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MarkovBandit(**kwargs)
    with pytest.raises(ValueError, match=name):
        metabelief.make("markov_bandit", **kwargs)


def test_kuo_variants_are_as_specified():
    assert set(KUO_VARIANTS) == {"symmetric", "asymmetric_reward", "asymmetric_transition"}
    reward = MarkovBandit(**KUO_VARIANTS["asymmetric_reward"])
    np.testing.assert_allclose(reward.reward_probs[1], (0.4, 0.6))
    memoryless = MarkovBandit(**KUO_VARIANTS["asymmetric_transition"])
    np.testing.assert_allclose(memoryless.transitions[1], ((0.5, 0.5), (0.5, 0.5)))


def test_check_family_passes_with_three_arms_of_three_states():
    check_family(MarkovBandit(**{**THREE_BY_THREE, "horizon": 20}), num_tasks=512)
