"""Recurrent PPO (Schulman et al. 2017) over whole episodes, as in purejaxrl's ``ppo_rnn.py``.

One update: play one episode of ``num_tasks`` fresh tasks with the current agent (no gradient),
compute GAE(lambda) advantages and the value targets ``advantage + V``, then ``ppo_epochs`` passes
over the batch, each cut into ``ppo_minibatches`` random minibatches of whole episodes (tasks, so
the memory is recomputed from the start of each task on the stored inputs, ``agent.unroll``), one
optimiser step per minibatch on::

    -min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t)  +  value_coef * (V_t - target_t)^2 / 2
        -  entropy_coef * H[pi(. | h_t)]                 (+ predictive_coef * prediction loss)

averaged over the minibatch's steps, with ``rho_t = pi(a_t | h_t) / pi_old(a_t | h_t)`` and the
advantages normalised per minibatch (as purejaxrl does). Episodes end at the horizon: nothing is
bootstrapped, and GAE's last step uses ``V_T = 0``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metabelief.rollout import Trajectory
from metabelief.tasks.base import PyTree
from metabelief.train.a2c import policy_terms
from metabelief.train.config import TrainConfig
from metabelief.train.episodes import play, replayed_outputs
from metabelief.train.predictive import prediction_loss
from metabelief.train.state import TrainState, apply_gradients


def gae(rewards: jax.Array, values: jax.Array, gamma: float, lam: float) -> jax.Array:
    """GAE(lambda) advantages ``[T, N]`` of one episode that ends after step T - 1 (``V_T = 0``):
    ``A_t = delta_t + gamma lam A_{t+1}``, ``delta_t = r_t + gamma V_{t+1} - V_t``."""
    next_values = jnp.concatenate([values[1:], jnp.zeros_like(values[:1])])
    deltas = rewards + gamma * next_values - values

    def backwards(future, delta):
        advantage = delta + gamma * lam * future
        return advantage, advantage

    _, advantages = jax.lax.scan(backwards, jnp.zeros_like(rewards[0]), deltas, reverse=True)
    return advantages


def ppo_loss(
    params: PyTree,
    config: TrainConfig,
    episode: Trajectory,
    old_log_probs: jax.Array,
    advantages: jax.Array,
    targets: jax.Array,
) -> tuple[jax.Array, dict]:
    """The clipped PPO loss on a minibatch of whole episodes ``[T, n, ...]``, and its metrics."""
    logits, values, hidden = replayed_outputs(config, params, episode)
    log_probs, entropy = policy_terms(logits, episode.actions)
    entropy = entropy.mean()
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    ratio = jnp.exp(log_probs - old_log_probs)
    clipped = jnp.clip(ratio, 1.0 - config.ppo_clip, 1.0 + config.ppo_clip)
    policy_loss = -jnp.mean(jnp.minimum(ratio * advantages, clipped * advantages))
    value_loss = 0.5 * jnp.mean((values - targets) ** 2)
    loss = policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy
    metrics = {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy,
        "clip_fraction": jnp.mean(jnp.abs(ratio - 1.0) > config.ppo_clip),
        "approx_kl": jnp.mean((ratio - 1.0) - jnp.log(ratio)),
    }
    if config.predictive_coef > 0:
        metrics["prediction_loss"] = prediction_loss(config.make_agent(), params, hidden, episode)
        loss = loss + config.predictive_coef * metrics["prediction_loss"]
    return loss, metrics


def update(state: TrainState, config: TrainConfig) -> tuple[TrainState, dict]:
    """One PPO update: an episode of fresh tasks, then epochs x minibatches optimiser steps."""
    key, play_key, shuffle_key = jax.random.split(state.key, 3)
    episode = play(config, state.params, play_key)
    old_log_probs, _ = policy_terms(episode.logits, episode.actions)
    advantages = gae(episode.rewards, episode.values, config.gamma, config.gae_lambda)
    batch = (episode, old_log_probs, advantages, advantages + episode.values)
    num_tasks, size = config.num_tasks, config.num_tasks // config.ppo_minibatches

    def epoch(state, epoch_key):
        order = jax.random.permutation(epoch_key, num_tasks).reshape(config.ppo_minibatches, size)

        def minibatch(state, lanes):
            # Every leaf is time-major [T (+ 1), N, ...]: take whole episodes (lanes).
            chosen = jax.tree.map(lambda leaf: jnp.take(leaf, lanes, axis=1), batch)
            grads, metrics = jax.grad(ppo_loss, has_aux=True)(state.params, config, *chosen)
            state, metrics["grad_norm"] = apply_gradients(state, grads, config)
            return state, metrics

        return jax.lax.scan(minibatch, state, order)

    state, metrics = jax.lax.scan(epoch, state, jax.random.split(shuffle_key, config.ppo_epochs))
    metrics = jax.tree.map(jnp.mean, metrics)  # over epochs and minibatches
    metrics["episode_return"] = episode.rewards.sum(axis=0).mean()
    return state.replace(key=key), metrics
