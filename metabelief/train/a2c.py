"""Advantage actor-critic with full-episode backpropagation through time (Wang et al. 2016).

Every update samples ``num_tasks`` fresh tasks, runs one episode of each with the agent
(``metabelief.train.episodes``: the rollout differentiated directly, so no second pass over the
episode, or a parallel recomputation for a linear recurrent model) and takes one optimiser step on
the mean over tasks and steps of::

    -log pi(a_t | h_t) * (G_t - V_t)  +  value_coef * (G_t - V_t)^2 / 2  -  entropy_coef * H[pi(. | h_t)]

with ``G_t`` the discounted return to the end of the episode (episodes end at the horizon, so
there is nothing to bootstrap), plus ``predictive_coef`` times the prediction loss
(``metabelief.train.predictive``) when that is positive.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metabelief.tasks.base import PyTree
from metabelief.train.config import TrainConfig
from metabelief.train.episodes import differentiable_episode
from metabelief.train.predictive import prediction_loss
from metabelief.train.state import TrainState, apply_gradients


def discounted_returns(rewards: jax.Array, gamma: float) -> jax.Array:
    """``G_t = r_t + gamma * G_{t+1}``, with ``G_T = 0``, for ``rewards`` [T, N]."""

    def backwards(future, reward):
        future = reward + gamma * future
        return future, future

    _, returns = jax.lax.scan(backwards, jnp.zeros_like(rewards[0]), rewards, reverse=True)
    return returns


def policy_terms(logits: jax.Array, actions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(log pi(a_t) [T, N], entropy [T, N])`` of the policy ``softmax(logits)`` ``[T, N, A]``."""
    log_probs = jax.nn.log_softmax(logits)
    chosen = jnp.take_along_axis(log_probs, actions[..., None], axis=-1)[..., 0]
    return chosen, -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)


def a2c_loss(params: PyTree, config: TrainConfig, key: jax.Array) -> tuple[jax.Array, dict]:
    """The A2C loss on one episode of ``config.num_tasks`` freshly sampled tasks, and its metrics."""
    episode, logits, values, hidden = differentiable_episode(config, params, key)
    returns = discounted_returns(episode.rewards, config.gamma)  # [T, N]
    advantages = jax.lax.stop_gradient(returns - values)
    chosen, entropy = policy_terms(logits, episode.actions)
    entropy = entropy.mean()
    policy_loss = -jnp.mean(chosen * advantages)
    value_loss = 0.5 * jnp.mean((returns - values) ** 2)
    loss = policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy
    metrics = {
        "episode_return": episode.rewards.sum(axis=0).mean(),
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy,
    }
    if config.predictive_coef > 0:
        metrics["prediction_loss"] = prediction_loss(config.make_agent(), params, hidden, episode)
        loss = loss + config.predictive_coef * metrics["prediction_loss"]
    return loss, metrics


def update(state: TrainState, config: TrainConfig) -> tuple[TrainState, dict]:
    """One A2C update: an episode of fresh tasks, its gradient and an optimiser step."""
    key, loss_key = jax.random.split(state.key)
    grads, metrics = jax.grad(a2c_loss, has_aux=True)(state.params, config, loss_key)
    state, metrics["grad_norm"] = apply_gradients(state, grads, config)
    return state.replace(key=key), metrics
