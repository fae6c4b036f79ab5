"""The A2C loss and its gradient against float64 NumPy, and a tiny run that learns a bandit.

The reference is written from the formula, not from ``a2c.py``: the LSTM actor-critic's forward
pass in float64 NumPy on the recorded history (its actions, rewards), the loss from that, and the
gradient by central finite differences of that NumPy loss, holding the sampled actions and the
advantages fixed (``stop_gradient``), over every parameter coordinate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metabelief.baselines import run_policy, thompson_sampling
from metabelief.rollout import rollout
from metabelief.train import TrainConfig, a2c_loss, init_state, update
from tests.train.numpy_reference import numpy_forward

# Coefficients away from their defaults and from each other, so that each term weighs in.
CONFIG = TrainConfig(
    family="bernoulli_bandit", family_args=(("horizon", 5),), hidden_size=4, num_tasks=6,
    gamma=0.8, value_coef=0.3, entropy_coef=0.2,
)  # fmt: skip
LOSS_KEY = jax.random.key(11)


# ---------------------------------------------------------------------------------------------
# The float64 reference


def numpy_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """``G_t = sum_{k >= t} gamma^(k - t) r_k`` to the end of the episode, by the closed sum."""
    num_steps = rewards.shape[0]
    powers = np.triu(gamma ** (np.arange(num_steps)[None, :] - np.arange(num_steps)[:, None]))
    return powers @ rewards  # [T, T] @ [T, N]


def numpy_loss(params, actions, rewards, config, advantages=None) -> dict:
    """The A2C loss terms in float64; ``advantages`` given: held fixed (the stop-gradient)."""
    logits, values, _ = numpy_forward(
        params, _no_obs(actions), actions, rewards, config.make_family().num_actions
    )
    returns = numpy_returns(rewards, config.gamma)
    if advantages is None:
        advantages = returns - values
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_pi = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))  # [T, N, A]
    chosen = np.take_along_axis(log_pi, actions[..., None], axis=-1)[..., 0]
    policy_loss = -np.mean(chosen * advantages)
    value_loss = 0.5 * np.mean((returns - values) ** 2)
    entropy = np.mean(-np.sum(np.exp(log_pi) * log_pi, axis=-1))
    return dict(
        loss=policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy,
        policy_loss=policy_loss, value_loss=value_loss, entropy=entropy,
        advantages=advantages, logits=logits, values=values,
    )  # fmt: skip


@pytest.fixture(scope="module")
def episode():
    """Perturbed parameters (so logits are far from uniform), the episode the loss sees, and both
    the loss, metrics and gradient of ``a2c_loss`` at those parameters."""
    agent, family = CONFIG.make_agent(), CONFIG.make_family()
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda leaf: leaf + jnp.asarray(0.7 * rng.standard_normal(leaf.shape), jnp.float32),
        agent.init(jax.random.key(1)),
    )
    # The episode a2c_loss runs: tasks from the first half of its key, the rollout from the second.
    task_key, rollout_key = jax.random.split(LOSS_KEY)
    tasks = jax.vmap(family.sample_task)(jax.random.split(task_key, CONFIG.num_tasks))
    trajectory = rollout(family, agent, params, rollout_key, tasks, track_belief=False)
    (loss, metrics), grads = jax.value_and_grad(a2c_loss, has_aux=True)(params, CONFIG, LOSS_KEY)
    return dict(params=params, trajectory=trajectory, loss=loss, metrics=metrics, grads=grads)


def _float64(tree):
    return jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), tree)


# ---------------------------------------------------------------------------------------------
# Loss and gradient


def test_numpy_forward_reproduces_the_recorded_logits_and_values(episode):
    """The reference network is the package's network (else the loss check below means nothing)."""
    trajectory = episode["trajectory"]
    actions, rewards = np.asarray(trajectory.actions), np.asarray(trajectory.rewards, np.float64)
    logits, values, _ = numpy_forward(_float64(episode["params"]), _no_obs(actions), actions, rewards, 2)
    np.testing.assert_allclose(np.asarray(trajectory.logits), logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(trajectory.values), values, rtol=1e-5, atol=1e-6)
    # Not a degenerate episode: both arms pulled, both outcomes seen, the policy far from uniform.
    assert set(np.unique(actions)) == {0, 1} and set(np.unique(rewards)) == {0.0, 1.0}
    assert np.abs(logits[..., 0] - logits[..., 1]).max() > 0.5


def test_a2c_loss_equals_the_float64_formula(episode):
    trajectory = episode["trajectory"]
    actions, rewards = np.asarray(trajectory.actions), np.asarray(trajectory.rewards, np.float64)
    reference = numpy_loss(_float64(episode["params"]), actions, rewards, CONFIG)
    metrics = episode["metrics"]
    for name in ("policy_loss", "value_loss", "entropy"):
        np.testing.assert_allclose(float(metrics[name]), reference[name], rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(float(metrics["episode_return"]), rewards.sum(axis=0).mean(), rtol=1e-6)
    np.testing.assert_allclose(float(episode["loss"]), reference["loss"], rtol=1e-5, atol=1e-6)
    # Each term is large enough that a wrong sign or coefficient on it shows in the total.
    assert abs(reference["policy_loss"]) > 1e-2 and reference["value_loss"] > 1e-2
    assert reference["entropy"] > 1e-2


def test_a2c_gradient_equals_float64_finite_differences(episode):
    """Central differences of the NumPy loss, with the sampled actions and the advantages held
    fixed, on every coordinate of every parameter array."""
    trajectory = episode["trajectory"]
    actions, rewards = np.asarray(trajectory.actions), np.asarray(trajectory.rewards, np.float64)
    params = _float64(episode["params"])
    advantages = numpy_loss(params, actions, rewards, CONFIG)["advantages"]
    leaves, treedef = jax.tree.flatten(params)

    def loss_at(flat_leaves):
        tree = jax.tree.unflatten(treedef, flat_leaves)
        return numpy_loss(tree, actions, rewards, CONFIG, advantages=advantages)["loss"]

    step = 1e-6
    expected = []
    for index, leaf in enumerate(leaves):
        gradient = np.zeros_like(leaf)
        for coordinate in np.ndindex(leaf.shape):
            shifted = [leaf.copy() for _ in range(2)]
            shifted[0][coordinate] += step
            shifted[1][coordinate] -= step
            plus = loss_at([*leaves[:index], shifted[0], *leaves[index + 1 :]])
            minus = loss_at([*leaves[:index], shifted[1], *leaves[index + 1 :]])
            gradient[coordinate] = (plus - minus) / (2 * step)
        expected.append(gradient)

    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    actual = jax.tree.leaves(episode["grads"])
    scale = max(np.abs(gradient).max() for gradient in expected)
    assert scale > 1e-2
    for path, got, want in zip(paths, actual, expected, strict=True):
        assert got.shape == want.shape, path
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5 * scale, err_msg=path)
        assert np.abs(want).max() > 0.0, f"{path}: every parameter array gets a gradient"


# ---------------------------------------------------------------------------------------------
# Learning

# Seeds 0-4 of this configuration reach 0.89-1.09 of the way (Thompson sampling is not optimal
# over 20 pulls, so a trained agent may beat it); the test asks for 0.7 with seed 0 (1.09).
LEARN = TrainConfig(
    family="bernoulli_bandit", family_args=(("horizon", 20),), hidden_size=16, num_tasks=512,
    num_updates=200, learning_rate=2e-2, gamma=0.9, entropy_coef=0.01, value_coef=0.1, seed=0,
)  # fmt: skip
EVAL_TASKS = 2048


@jax.jit(static_argnames="config")
def _trained_params(config: TrainConfig):
    """``num_updates`` A2C updates in one scan from ``init_state``."""
    step = lambda state, _: update(state, config)  # noqa: E731
    state, metrics = jax.lax.scan(step, init_state(config), None, config.num_updates)
    return state.params, metrics


def test_a2c_learns_most_of_the_way_from_random_play_to_thompson_sampling():
    family, agent = LEARN.make_family(), LEARN.make_agent()
    params, metrics = _trained_params(LEARN)
    tasks = jax.vmap(family.sample_task)(jax.random.split(jax.random.key(100), EVAL_TASKS))
    learned = rollout(family, agent, params, jax.random.key(101), tasks, track_belief=False)
    trained = float(np.asarray(learned.rewards).sum(axis=0).mean())
    # Random play earns each task's mean arm probability per pull: its exact expected return.
    random = family.horizon * float(np.asarray(tasks.probs, np.float64).mean())
    thompson_run = run_policy(family, thompson_sampling(family), jax.random.key(102), tasks)
    thompson = float(np.asarray(thompson_run.rewards).sum(axis=0).mean())
    progress = (trained - random) / (thompson - random)
    assert thompson - random > 1.0, (random, thompson)  # there is something to learn
    assert progress >= 0.7, f"trained {trained:.3f}, random {random:.3f}, Thompson {thompson:.3f}"
    # The training returns rose too (the last 20 updates against the first 20).
    returns = np.asarray(metrics["episode_return"])
    assert returns[-20:].mean() - returns[:20].mean() > 0.7 * (thompson - random)


def _no_obs(actions: np.ndarray) -> np.ndarray:
    """The bandit's observations: width 0, ``[T, N, 0]``."""
    return np.zeros((*actions.shape, 0))
