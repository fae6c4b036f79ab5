"""Stay probabilities of the two-step task against plain-Python counts and synthetic policies."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief.analysis import (
    COMMON,
    RARE,
    REWARDED,
    UNREWARDED,
    StayProbabilities,
    stay_probabilities,
    summarize_runs,
)
from metabelief.baselines import run_policy


def loop_counts(
    actions: np.ndarray, reached: np.ndarray, rewards: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Stays and counts [2, 2] by plain Python loops; rows rewarded/unrewarded, columns common/rare."""
    stays, counts = np.zeros((2, 2), int), np.zeros((2, 2), int)
    num_steps, num_tasks = actions.shape
    for n in range(num_tasks):
        for t in range(1, num_steps):
            previous_action = int(actions[t - 1, n])
            row = 0 if rewards[t - 1, n] > 0 else 1
            col = 0 if int(reached[t - 1, n]) == previous_action else 1
            counts[row, col] += 1
            stays[row, col] += int(actions[t, n]) == previous_action
    return stays, counts


def random_trials(rng: np.random.Generator, num_steps: int, num_tasks: int, p_common: float = 0.7):
    """Random actions, reached states (common with ``p_common``) and 0/1 rewards, int/float [T, N]."""
    actions = rng.integers(0, 2, (num_steps, num_tasks))
    common = rng.random((num_steps, num_tasks)) < p_common
    reached = np.where(common, actions, 1 - actions)
    rewards = (rng.random((num_steps, num_tasks)) < 0.4).astype(np.float32)
    return actions.astype(np.int32), reached.astype(np.int32), rewards


def simulate(rule, rng: np.random.Generator, num_steps: int = 300, num_tasks: int = 16):
    """Trajectories of a policy that stays iff ``rule(rewarded, common)`` on the previous trial."""
    _, reached_noise, rewards = random_trials(rng, num_steps, num_tasks)
    common = reached_noise == rng.integers(0, 2, (num_steps, num_tasks))  # random, about half rare
    actions = np.zeros((num_steps, num_tasks), np.int32)
    actions[0] = rng.integers(0, 2, num_tasks)
    for t in range(1, num_steps):
        stay = rule(rewards[t - 1] > 0, common[t - 1])
        actions[t] = np.where(stay, actions[t - 1], 1 - actions[t - 1])
    reached = np.where(common, actions, 1 - actions).astype(np.int32)
    return actions, reached, rewards


def test_layout_constants():
    assert (REWARDED, UNREWARDED, COMMON, RARE) == (0, 1, 0, 1)


@pytest.mark.parametrize("shape", [(2, 1), (7, 3), (200, 50)])
def test_counts_equal_a_plain_python_loop(shape):
    rng = np.random.default_rng(sum(shape))
    actions, reached, rewards = random_trials(rng, *shape)
    stays, counts = loop_counts(actions, reached, rewards)
    result = jax.jit(stay_probabilities)(actions, reached, rewards)
    assert result.stays.dtype == result.counts.dtype == jnp.int32
    assert result.stays.shape == result.counts.shape == result.probs.shape == (2, 2)
    np.testing.assert_array_equal(result.stays, stays)
    np.testing.assert_array_equal(result.counts, counts)
    assert int(result.counts.sum()) == (shape[0] - 1) * shape[1]
    with np.errstate(invalid="ignore"):
        probs = stays / counts
    np.testing.assert_allclose(result.probs, probs, rtol=1e-6)
    index = (probs[0, 0] + probs[1, 1]) - (probs[0, 1] + probs[1, 0])
    np.testing.assert_allclose(result.model_based_index, index, rtol=1e-5, atol=1e-6)
    free = (probs[0, 0] + probs[0, 1]) - (probs[1, 0] + probs[1, 1])
    np.testing.assert_allclose(result.model_free_index, free, rtol=1e-5, atol=1e-6)


def test_one_hot_observations_give_the_same_counts():
    actions, reached, rewards = random_trials(np.random.default_rng(0), 50, 8)
    from_states = stay_probabilities(actions, reached, rewards)
    from_obs = stay_probabilities(actions, np.eye(2, dtype=np.float32)[reached], rewards)
    jax.tree.map(np.testing.assert_array_equal, from_states, from_obs)


def test_always_repeating_stays_everywhere():
    _, reached, rewards = random_trials(np.random.default_rng(1), 100, 10)
    actions = np.broadcast_to(np.random.default_rng(2).integers(0, 2, 10), (100, 10))
    result = stay_probabilities(actions, reached, rewards)
    np.testing.assert_array_equal(result.probs, np.ones((2, 2)))
    assert float(result.model_based_index) == float(result.model_free_index) == 0.0


def test_model_based_policy():
    # Stay iff the previous outcome speaks for the same action: rewarded-common or unrewarded-rare.
    result = stay_probabilities(
        *simulate(lambda rewarded, common: rewarded == common, np.random.default_rng(3))
    )
    np.testing.assert_array_equal(result.probs, [[1.0, 0.0], [0.0, 1.0]])
    assert (np.asarray(result.counts) > 100).all()
    assert float(result.model_based_index) == 2.0 and float(result.model_free_index) == 0.0


def test_model_free_policy():
    # Win-stay, lose-switch, blind to the transition.
    result = stay_probabilities(*simulate(lambda rewarded, common: rewarded, np.random.default_rng(4)))
    np.testing.assert_array_equal(result.probs, [[1.0, 1.0], [0.0, 0.0]])
    assert float(result.model_based_index) == 0.0 and float(result.model_free_index) == 2.0


def test_empty_cells_are_nan():
    actions = np.zeros((5, 2), np.int32)
    reached = np.zeros((5, 2), np.int32)  # every transition common
    rewards = np.ones((5, 2), np.float32)  # every trial rewarded
    result = stay_probabilities(actions, reached, rewards)
    np.testing.assert_array_equal(result.counts, [[8, 0], [0, 0]])
    assert float(result.probs[0, 0]) == 1.0 and np.isnan(result.probs[0, 1]) and np.isnan(result.probs[1, 1])
    assert np.isnan(result.model_based_index)


def test_runs_axis_and_summary():
    rng = np.random.default_rng(5)
    runs = [random_trials(rng, 60, 6, p_common=0.8) for _ in range(4)]
    actions, reached, rewards = (np.stack(arrays) for arrays in zip(*runs, strict=True))  # [R, T, N]
    batched = jax.jit(jax.vmap(stay_probabilities))(actions, reached, rewards)
    assert isinstance(batched, StayProbabilities) and batched.counts.shape == (4, 2, 2)
    singles = [stay_probabilities(*run) for run in runs]
    for r, single in enumerate(singles):
        np.testing.assert_array_equal(batched.stays[r], single.stays)
        np.testing.assert_array_equal(batched.counts[r], single.counts)
    summary = jax.jit(summarize_runs)(batched)
    from_list = summarize_runs(singles)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), summary, from_list)

    probs = np.stack([loop_counts(*run)[0] / loop_counts(*run)[1] for run in runs])  # [R, 2, 2]
    index = (probs[:, 0, 0] + probs[:, 1, 1]) - (probs[:, 0, 1] + probs[:, 1, 0])
    np.testing.assert_allclose(summary.probs, probs.mean(0), rtol=1e-5)
    np.testing.assert_allclose(summary.probs_se, probs.std(0, ddof=1) / 2.0, rtol=1e-4)
    np.testing.assert_allclose(summary.model_based_index, index.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(summary.model_based_index_se, index.std(ddof=1) / 2.0, rtol=1e-4)
    np.testing.assert_array_equal(summary.pooled.counts, sum(loop_counts(*run)[1] for run in runs))
    assert np.isnan(summarize_runs(singles[:1]).probs_se).all()


def test_bayes_greedy_agent_on_the_two_step_task_is_model_based():
    # Acting on the exact belief (the common route to the likelier rich state) shows the
    # reward x transition interaction, the whole analysis on device from a rollout.
    family = metabelief.make("two_step", num_trials=100)

    def greedy(key, beliefs, obs):
        del key, obs
        return jnp.where(beliefs.p_a_rich >= 0.5, 0, 1).astype(jnp.int32)

    tasks = metabelief.testing.sample_tasks(family, jax.random.key(0), num_tasks=256)

    @jax.jit
    def analyse(key):
        out = run_policy(family, greedy, key, tasks)
        return stay_probabilities(out.actions, out.obs[1:], out.rewards)

    result = analyse(jax.random.key(1))
    assert float(result.model_based_index) > 0.5
    assert float(result.probs[REWARDED, COMMON]) > float(result.probs[REWARDED, RARE])
    assert float(result.probs[UNREWARDED, RARE]) > float(result.probs[UNREWARDED, COMMON])


@pytest.mark.parametrize(
    "shapes, match",
    [
        (((10,), (10,), (10,)), "actions"),
        (((10, 2), (10, 3), (10, 2)), "reached"),
        (((10, 2), (10, 2, 3), (10, 2)), "reached"),
        (((10, 2), (10, 2), (9, 2)), "rewards"),
        (((1, 2), (1, 2), (1, 2)), "2 trials"),
    ],
)
def test_bad_shapes_raise_value_error(shapes, match):
    actions, reached, rewards = (np.zeros(shape) for shape in shapes)
    with pytest.raises(ValueError, match=match):
        stay_probabilities(actions.astype(np.int32), reached, rewards)


def test_summarize_runs_validates():
    with pytest.raises(ValueError, match="runs"):
        summarize_runs([])
    single = stay_probabilities(*random_trials(np.random.default_rng(6), 5, 2))
    with pytest.raises(ValueError, match="runs"):
        summarize_runs(single)  # no runs axis
