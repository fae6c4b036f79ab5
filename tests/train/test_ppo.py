"""Recurrent PPO and the predictive objective against float64 NumPy, and two tiny runs that learn.

The references are written from the formulas, not from ``ppo.py``: GAE(lambda) as a backward loop,
the LSTM actor-critic's forward pass on the recorded history, the clipped surrogate with per-
minibatch advantage normalisation, the value and entropy terms, the diagnostics, and the linear
predictive head on ``[readout, one-hot action]``; gradients by a central difference of that float64
loss along a random direction in parameter space.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metabelief.train import TrainConfig, a2c_loss, gae, init_state, ppo_loss, train
from metabelief.train.episodes import play, replayed_outputs
from metabelief.train.ppo import update
from tests.train.numpy_reference import numpy_forward

# ---------------------------------------------------------------------------------------------
# GAE


def numpy_gae(rewards: np.ndarray, values: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    """GAE(lambda) by a backward loop, ``V_T = 0``: ``A_t = sum_k (gamma lam)^k delta_{t + k}``."""
    num_steps = rewards.shape[0]
    advantages = np.zeros_like(rewards)
    future = np.zeros_like(rewards[0])
    for t in reversed(range(num_steps)):
        next_value = values[t + 1] if t + 1 < num_steps else np.zeros_like(values[0])
        delta = rewards[t] + gamma * next_value - values[t]
        future = delta + gamma * lam * future
        advantages[t] = future
    return advantages


def numpy_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """``G_t = sum_{k >= t} gamma^(k - t) r_k`` to the end of the episode, by the closed sum."""
    num_steps = rewards.shape[0]
    exponents = np.arange(num_steps)[None, :] - np.arange(num_steps)[:, None]
    powers = np.where(exponents >= 0, gamma ** np.maximum(exponents, 0), 0.0)
    return powers @ rewards  # [T, T] @ [T, N]


def _random_episode(seed: int = 0, num_steps: int = 9, num_tasks: int = 4):
    rng = np.random.default_rng(seed)
    return rng.random((num_steps, num_tasks)), rng.standard_normal((num_steps, num_tasks))


def _jax_gae(rewards, values, gamma, lam):
    return np.asarray(gae(jnp.asarray(rewards, jnp.float32), jnp.asarray(values, jnp.float32), gamma, lam))


@pytest.mark.parametrize(
    "gamma, lam", [(0.9, 0.95), (0.99, 0.5), (0.7, 0.3), (1.0, 0.9), (0.8, 1.0), (0.9, 0.0)]
)
def test_gae_matches_a_numpy_loop(gamma, lam):
    rewards, values = _random_episode()
    advantages = _jax_gae(rewards, values, gamma, lam)
    assert advantages.shape == rewards.shape
    np.testing.assert_allclose(advantages, numpy_gae(rewards, values, gamma, lam), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gamma", [0.0, 0.8, 1.0])
def test_gae_with_lambda_one_is_the_discounted_return_minus_the_value(gamma):
    rewards, values = _random_episode(seed=1)
    expected = numpy_returns(rewards, gamma) - values
    np.testing.assert_allclose(_jax_gae(rewards, values, gamma, 1.0), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gamma", [0.5, 0.9, 1.0])
def test_gae_with_lambda_zero_is_the_one_step_td_error(gamma):
    rewards, values = _random_episode(seed=2)
    next_values = np.concatenate([values[1:], np.zeros((1, values.shape[1]))])  # the episode ends: V_T = 0
    expected = rewards + gamma * next_values - values
    np.testing.assert_allclose(_jax_gae(rewards, values, gamma, 0.0), expected, rtol=1e-5, atol=1e-5)
    # Not the same thing as lambda = 1 here (else the two tests above would not tell them apart).
    assert np.abs(expected - (numpy_returns(rewards, gamma) - values)).max() > 0.1 or gamma == 0.0


# ---------------------------------------------------------------------------------------------
# The float64 reference of the agent and the loss


def numpy_log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def numpy_prediction_loss(params: dict, hidden, obs, actions, rewards, num_actions: int) -> float:
    """Reward MSE (+ next-observation MSE over the entries) of ``[h_t, one_hot(a_t)] K + b``."""
    head = params["params"]["predictor"]
    features = np.concatenate([hidden, np.eye(num_actions)[actions]], axis=-1)  # [T, N, H + A]
    predicted = features @ head["kernel"] + head["bias"]  # [T, N, 1 + O]
    loss = np.mean((predicted[..., 0] - rewards) ** 2)
    if obs.shape[-1] > 0:
        loss += np.mean((predicted[..., 1:] - obs[1:]) ** 2)
    return loss


def numpy_ppo_loss(params, config, batch, old_log_probs, advantages, targets) -> dict:
    """The PPO loss and its diagnostics in float64 on a minibatch of whole episodes."""
    num_actions = config.make_family().num_actions
    obs, actions, rewards = batch["obs"], batch["actions"], batch["rewards"]
    logits, values, hidden = numpy_forward(params, obs, actions, rewards, num_actions)
    log_pi = numpy_log_softmax(logits)  # [T, n, A]
    chosen = np.take_along_axis(log_pi, actions[..., None], axis=-1)[..., 0]
    normalised = (advantages - advantages.mean()) / (advantages.std() + 1e-8)  # population std
    ratio = np.exp(chosen - old_log_probs)
    eps = config.ppo_clip
    surrogate = np.minimum(ratio * normalised, np.clip(ratio, 1.0 - eps, 1.0 + eps) * normalised)
    out = dict(
        policy_loss=-surrogate.mean(),
        value_loss=0.5 * np.mean((values - targets) ** 2),
        entropy=np.mean(-np.sum(np.exp(log_pi) * log_pi, axis=-1)),
        clip_fraction=np.mean(np.abs(ratio - 1.0) > eps),
        approx_kl=np.mean(ratio - 1.0 - np.log(ratio)),
    )  # fmt: skip
    out["loss"] = (
        out["policy_loss"] + config.value_coef * out["value_loss"] - config.entropy_coef * out["entropy"]
    )
    if config.predictive_coef > 0:
        out["prediction_loss"] = numpy_prediction_loss(params, hidden, obs, actions, rewards, num_actions)
        out["loss"] += config.predictive_coef * out["prediction_loss"]
    out.update(
        logits=logits, values=values, hidden=hidden, log_probs=chosen, ratio=ratio, normalised=normalised
    )
    return out


def _float64(tree):
    return jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), tree)


def _numpy_batch(episode) -> dict:
    """The recorded history the references replay, in float64."""
    return {
        "obs": np.asarray(episode.obs, np.float64),
        "actions": np.asarray(episode.actions),
        "rewards": np.asarray(episode.rewards, np.float64),
    }


def assert_directional_derivative(grads, params, numpy_loss, seed: int):
    """``grad . d`` equals the float64 central difference of ``numpy_loss`` at ``params`` along a
    random direction ``d`` in parameter space."""
    params = _float64(params)
    rng = np.random.default_rng(seed)
    direction = jax.tree.map(lambda leaf: rng.standard_normal(leaf.shape), params)
    step = 1e-5
    moved = [jax.tree.map(lambda leaf, d, s=s: leaf + s * d, params, direction) for s in (step, -step)]
    expected = (numpy_loss(moved[0]) - numpy_loss(moved[1])) / (2 * step)
    actual = sum(
        float(np.sum(np.asarray(g, np.float64) * d))
        for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction), strict=True)
    )
    assert abs(expected) > 1e-2
    np.testing.assert_allclose(actual, expected, rtol=1e-3)


# Coefficients away from their defaults and from each other, so that each term weighs in.
BASE = TrainConfig(
    family="bernoulli_bandit", family_args=(("horizon", 8),), hidden_size=5, num_tasks=8,
    algorithm="ppo", ppo_minibatches=2, ppo_clip=0.15, gamma=0.8, gae_lambda=0.7,
    value_coef=0.3, entropy_coef=0.2,
)  # fmt: skip
CONFIGS = {
    "bandit": BASE,
    "bandit_predictive": dataclasses.replace(BASE, predictive_coef=0.7),
    "two_step_predictive": dataclasses.replace(
        BASE, family="two_step", family_args=(("num_trials", 8),), predictive_coef=0.7
    ),
}
LANES = np.array([6, 1, 3, 4])  # one minibatch of whole episodes, as ``update`` takes them


def _perturbed_params(config: TrainConfig, seed: int = 0):
    """Initial parameters plus noise, so the policy is far from uniform and the predictor's bias
    is not zero."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda leaf: leaf + jnp.asarray(0.8 * rng.standard_normal(leaf.shape), jnp.float32),
        config.make_agent().init(jax.random.key(seed + 1)),
    )


def _minibatch(config: TrainConfig, params, key):
    """An episode of ``config.num_tasks`` tasks played by ``params``, its lanes ``LANES``."""
    episode = play(config, params, key)
    return jax.tree.map(lambda leaf: jnp.take(leaf, jnp.asarray(LANES), axis=1), episode)


@pytest.fixture(scope="module", params=list(CONFIGS))
def case(request):
    """A minibatch, old log-probabilities off the current ones on both sides of the clip range, GAE
    advantages, targets, and ``ppo_loss``'s loss, metrics and gradient there."""
    config = CONFIGS[request.param]
    params = _perturbed_params(config)
    episode = _minibatch(config, params, jax.random.key(3))
    batch = _numpy_batch(episode)
    num_actions = config.make_family().num_actions
    logits, values, _ = numpy_forward(
        _float64(params), batch["obs"], batch["actions"], batch["rewards"], num_actions
    )
    log_probs = np.take_along_axis(numpy_log_softmax(logits), batch["actions"][..., None], axis=-1)[..., 0]
    old_log_probs = log_probs + 0.4 * np.random.default_rng(4).standard_normal(log_probs.shape)
    advantages = numpy_gae(batch["rewards"], values, config.gamma, config.gae_lambda)
    targets = advantages + values
    inputs = [jnp.asarray(array, jnp.float32) for array in (old_log_probs, advantages, targets)]
    (loss, metrics), grads = jax.value_and_grad(ppo_loss, has_aux=True)(params, config, episode, *inputs)
    return dict(
        config=config, params=params, episode=episode, batch=batch, loss=loss, metrics=metrics, grads=grads,
        # The float32 values ppo_loss saw, in float64, for the reference.
        inputs=[np.asarray(array, np.float64) for array in inputs],
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# ppo_loss


def test_numpy_forward_reproduces_the_replayed_and_the_recorded_outputs(case):
    """The reference network is the package's network (else the loss checks below mean nothing)."""
    config, batch, episode = case["config"], case["batch"], case["episode"]
    num_actions = config.make_family().num_actions
    logits, values, hidden = numpy_forward(
        _float64(case["params"]), batch["obs"], batch["actions"], batch["rewards"], num_actions
    )
    replayed = replayed_outputs(config, case["params"], episode)
    recorded = (episode.logits, episode.values, episode.hidden)
    for name, want, got_replayed, got_recorded in zip(
        ("logits", "values", "hidden"), (logits, values, hidden), replayed, recorded, strict=True
    ):
        np.testing.assert_allclose(np.asarray(got_replayed), want, rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(np.asarray(got_recorded), want, rtol=1e-5, atol=1e-5, err_msg=name)
    # Not a degenerate episode: both actions taken, both outcomes seen, the policy far from uniform.
    assert set(np.unique(batch["actions"])) == {0, 1} and set(np.unique(batch["rewards"])) == {0.0, 1.0}
    assert np.abs(logits[..., 0] - logits[..., 1]).max() > 0.5


def test_ppo_loss_and_metrics_equal_the_float64_formula(case):
    config = case["config"]
    reference = numpy_ppo_loss(_float64(case["params"]), config, case["batch"], *case["inputs"])
    metrics = case["metrics"]
    names = ["policy_loss", "value_loss", "entropy", "clip_fraction", "approx_kl"]
    if config.predictive_coef > 0:
        names.append("prediction_loss")
    assert set(metrics) == set(names)
    for name in names:
        np.testing.assert_allclose(float(metrics[name]), reference[name], rtol=2e-5, atol=2e-6, err_msg=name)
    np.testing.assert_allclose(float(case["loss"]), reference["loss"], rtol=2e-5, atol=2e-6)

    # The case exercises what it checks: ratios clipped on both sides with advantages of both signs
    # (so min picks the clipped term in some steps and the unclipped one in others), and every term
    # large enough that a wrong sign or coefficient on it shows in the total.
    ratio, normalised, eps = reference["ratio"], reference["normalised"], config.ppo_clip
    for high in (True, False):
        for positive in (True, False):
            side = ratio > 1 + eps if high else ratio < 1 - eps
            assert (side & ((normalised > 0) == positive)).any(), (high, positive)
    assert 0.2 < reference["clip_fraction"] < 0.9
    clipped = np.clip(ratio, 1 - eps, 1 + eps) * normalised
    # The loss tells min from either of its terms alone and from max.
    for alternative in (ratio * normalised, clipped, np.maximum(ratio * normalised, clipped)):
        assert abs(np.mean(alternative) + reference["policy_loss"]) > 1e-2
    assert abs(reference["policy_loss"]) > 1e-2 and reference["value_loss"] > 1e-2
    assert reference["entropy"] > 1e-2 and reference["approx_kl"] > 1e-2
    if config.predictive_coef > 0:
        assert reference["prediction_loss"] > 1e-2


def test_ppo_loss_normalises_advantages_over_the_minibatch(case):
    """An affine map of the advantages (a > 0) leaves the loss unchanged: they are normalised."""
    config, params, episode = case["config"], case["params"], case["episode"]
    old_log_probs, advantages, targets = (jnp.asarray(array, jnp.float32) for array in case["inputs"])
    shifted, _ = ppo_loss(params, config, episode, old_log_probs, 3.0 * advantages + 5.0, targets)
    np.testing.assert_allclose(float(shifted), float(case["loss"]), rtol=1e-4, atol=1e-5)


def test_ppo_gradient_equals_a_float64_directional_difference(case):
    """``grad . d`` of ``ppo_loss`` equals the central difference of the NumPy loss along a random
    direction ``d`` (the old log-probabilities, advantages and targets held fixed)."""
    config = case["config"]
    assert_directional_derivative(
        case["grads"],
        case["params"],
        lambda params: numpy_ppo_loss(params, config, case["batch"], *case["inputs"])["loss"],
        seed=5,
    )
    if config.predictive_coef > 0:  # the head is trained, and only by the prediction loss
        assert np.abs(np.asarray(case["grads"]["params"]["predictor"]["kernel"])).max() > 1e-3


def test_ppo_loss_at_the_old_policy_is_the_policy_gradient_of_normalised_advantages():
    """With ``old_log_probs`` the current ones every ratio is 1: nothing is clipped, the KL is 0,
    the surrogate is ``-mean(normalised A) = 0`` and its gradient that of ``-mean(log pi * A)``."""
    config = dataclasses.replace(BASE, value_coef=0.0, entropy_coef=0.0)
    params = _perturbed_params(config, seed=7)
    episode = _minibatch(config, params, jax.random.key(8))
    batch = _numpy_batch(episode)
    num_actions = config.make_family().num_actions
    logits, values, _ = numpy_forward(
        _float64(params), batch["obs"], batch["actions"], batch["rewards"], num_actions
    )
    chosen = np.take_along_axis(numpy_log_softmax(logits), batch["actions"][..., None], axis=-1)[..., 0]
    advantages = numpy_gae(batch["rewards"], values, config.gamma, config.gae_lambda)
    old = jnp.asarray(chosen, jnp.float32)
    (loss, metrics), grads = jax.value_and_grad(ppo_loss, has_aux=True)(
        params,
        config,
        episode,
        old,
        jnp.asarray(advantages, jnp.float32),
        jnp.asarray(advantages + values, jnp.float32),
    )
    assert float(metrics["clip_fraction"]) == 0.0
    assert abs(float(metrics["approx_kl"])) < 1e-6
    assert abs(float(metrics["policy_loss"])) < 1e-5 and abs(float(loss)) < 1e-5

    # Its gradient is that of the vanilla policy-gradient surrogate, in float64.
    normalised = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

    def surrogate(params):
        logits = numpy_forward(params, batch["obs"], batch["actions"], batch["rewards"], num_actions)[0]
        log_pi = np.take_along_axis(numpy_log_softmax(logits), batch["actions"][..., None], axis=-1)[..., 0]
        return -np.mean(log_pi * normalised)

    assert_directional_derivative(grads, params, surrogate, seed=9)


def test_a2c_loss_with_the_predictive_objective_equals_the_float64_formula():
    """A2C with ``predictive_coef`` > 0 on the two-step task (observations to predict): the loss,
    its terms and its gradient (the prediction's included, which reaches the memory too)."""
    config = dataclasses.replace(CONFIGS["two_step_predictive"], algorithm="a2c")
    params, key = _perturbed_params(config, seed=12), jax.random.key(13)
    (loss, metrics), grads = jax.value_and_grad(a2c_loss, has_aux=True)(params, config, key)
    batch = _numpy_batch(play(config, params, key))  # the episode a2c_loss plays with that key
    obs, actions, rewards = batch["obs"], batch["actions"], batch["rewards"]
    num_actions = config.make_family().num_actions
    returns = numpy_returns(rewards, config.gamma)
    held_advantages = returns - numpy_forward(_float64(params), obs, actions, rewards, num_actions)[1]

    def numpy_a2c_loss(params, parts=False):
        logits, values, hidden = numpy_forward(params, obs, actions, rewards, num_actions)
        log_pi = numpy_log_softmax(logits)
        chosen = np.take_along_axis(log_pi, actions[..., None], axis=-1)[..., 0]
        terms = dict(
            policy_loss=-np.mean(chosen * held_advantages),  # the advantages are held fixed
            value_loss=0.5 * np.mean((returns - values) ** 2),
            entropy=np.mean(-np.sum(np.exp(log_pi) * log_pi, axis=-1)),
            prediction_loss=numpy_prediction_loss(params, hidden, obs, actions, rewards, num_actions),
        )  # fmt: skip
        total = (
            terms["policy_loss"] + config.value_coef * terms["value_loss"]
            - config.entropy_coef * terms["entropy"] + config.predictive_coef * terms["prediction_loss"]
        )  # fmt: skip
        return (total, terms) if parts else total

    total, terms = numpy_a2c_loss(_float64(params), parts=True)
    for name, value in terms.items():
        np.testing.assert_allclose(float(metrics[name]), value, rtol=2e-5, atol=2e-6, err_msg=name)
    np.testing.assert_allclose(float(loss), total, rtol=2e-5, atol=2e-6)
    assert terms["prediction_loss"] > 1e-2
    assert_directional_derivative(grads, params, numpy_a2c_loss, seed=14)


# ---------------------------------------------------------------------------------------------
# update


def test_one_epoch_of_one_minibatch_reports_the_loss_at_the_played_episode():
    """With one optimiser step per update, its metrics are the loss at the played episode: ratios 1,
    targets ``GAE + V`` (so the value loss is ``mean(GAE^2) / 2``), GAE with the config's gamma
    and lambda."""
    config = dataclasses.replace(BASE, ppo_epochs=1, ppo_minibatches=1)
    state = init_state(config)
    state = state.replace(params=_perturbed_params(config, seed=11))
    new_state, metrics = jax.jit(update, static_argnums=1)(state, config)
    _, play_key, _ = jax.random.split(state.key, 3)  # update's split of its key
    episode = play(config, state.params, play_key)
    rewards = np.asarray(episode.rewards, np.float64)
    _, values, _ = numpy_forward(
        _float64(state.params), np.asarray(episode.obs, np.float64), np.asarray(episode.actions), rewards, 2
    )
    advantages = numpy_gae(rewards, values, config.gamma, config.gae_lambda)
    np.testing.assert_allclose(float(metrics["value_loss"]), 0.5 * np.mean(advantages**2), rtol=1e-4)
    np.testing.assert_allclose(float(metrics["episode_return"]), rewards.sum(axis=0).mean(), rtol=1e-6)
    assert float(metrics["clip_fraction"]) == 0.0 and abs(float(metrics["approx_kl"])) < 1e-6
    assert abs(float(metrics["policy_loss"])) < 1e-5 and float(metrics["grad_norm"]) > 0.0
    # Another GAE lambda would give another value loss (the check above tells them apart).
    other = numpy_gae(rewards, values, config.gamma, 1.0)
    assert abs(np.mean(other**2) - np.mean(advantages**2)) > 1e-2
    # Adam's first step moves every coordinate by the learning rate (m / sqrt(v) = sign(g)).
    moved = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - np.asarray(b)), new_state.params, state.params)
    np.testing.assert_allclose(np.max(np.concatenate([m.ravel() for m in jax.tree.leaves(moved)])),
                               config.learning_rate, rtol=1e-3)  # fmt: skip
    assert not np.array_equal(jax.random.key_data(new_state.key), jax.random.key_data(state.key))


# ---------------------------------------------------------------------------------------------
# Learning

# Sixteen agents of this configuration (seeds 0-15) reached 5.63-6.09 over the last 10 updates
# (random play: 5.0; knowing the better arm: 10 E[max(p1, p2)] = 6.67); the standard error of the
# mean return of random play over those 10 x 128 episodes is about 0.07 per seed.
PPO_LEARN = TrainConfig(
    family="bernoulli_bandit", family_args=(("horizon", 10),), hidden_size=16, num_tasks=128,
    num_updates=150, updates_per_chunk=150, algorithm="ppo", ppo_epochs=4, ppo_minibatches=2,
    learning_rate=5e-3, entropy_coef=0.01, value_coef=0.5, num_seeds=4, seed=0,
)  # fmt: skip


def test_ppo_learns_the_bandit_well_above_random_play():
    family = PPO_LEARN.make_family()
    # A random policy earns each arm's probability per pull in expectation: prior mean a / (a + b).
    random = family.horizon * family.prior_a / (family.prior_a + family.prior_b)
    assert random == 5.0
    returns = train(PPO_LEARN, progress=False).metrics["episode_return"]  # [S, updates]
    assert returns.shape == (4, 150)
    first, last = returns[:, :10].mean(axis=1), returns[:, -10:].mean(axis=1)
    assert np.abs(first - random).max() < 0.4, first  # the agents start near the uniform policy
    assert last.min() > random + 0.4, last  # every seed: > 5 standard errors above random play
    assert last.mean() > random + 0.6, last


# Eight agents of this configuration (seeds 0-7) fell from 0.26-0.88 over the first 5 updates to
# 0.204-0.213 over the last 20, 0.029-0.039 below the best constant prediction's error then (the
# noise of those means is about 0.001).
PREDICT_LEARN = TrainConfig(
    family="bernoulli_bandit", family_args=(("horizon", 20),), hidden_size=16, num_tasks=64,
    num_updates=200, updates_per_chunk=200, algorithm="a2c", predictive_coef=0.5,
    learning_rate=1e-2, num_seeds=2, seed=0,
)  # fmt: skip


def test_prediction_loss_falls_below_the_best_constant_prediction_during_a2c_training():
    metrics = train(PREDICT_LEARN, progress=False).metrics
    loss = metrics["prediction_loss"]  # [S, updates]
    assert loss.shape == (2, 200) and np.isfinite(loss).all()
    first, last = loss[:, :5].mean(axis=1), loss[:, -20:].mean(axis=1)
    assert (last < first - 0.03).all(), (first, last)
    # The best constant prediction of a reward with mean m has squared error m (1 - m) (~0.24 here):
    # below it, the head reads what the memory holds about the task.
    mean_reward = metrics["episode_return"][:, -20:] / PREDICT_LEARN.make_family().horizon
    assert (last < (mean_reward * (1 - mean_reward)).mean(axis=1) - 0.015).all(), (last, mean_reward)
    # No predictor beats the task's own noise: E[p (1 - p)] = 1/6 for p ~ U[0, 1].
    assert (last > 1 / 6 - 0.02).all(), last
