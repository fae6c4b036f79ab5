"""Exact two-state hidden Markov filtering in log-odds, shared by ``two_step`` and ``tiger``.

A belief over two states kept as the log-odds of the first is exact over any number of steps in
float32: evidence adds a log likelihood ratio, and the prediction through a symmetric flip is
computed from log probabilities, so certain beliefs (infinite log-odds) and tiny flip
probabilities stay exact.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def log_ratio(p: float) -> np.float32:
    """log(p / (1 - p)): the evidence of an outcome of probability p under one state and 1 - p under
    the other; +-inf when p is 1 or 0."""
    with np.errstate(divide="ignore"):
        return np.float32(np.log(p) - np.log1p(-p))


def predict_flip(log_odds: jax.Array, p_flip: float) -> jax.Array:
    """The log-odds after the state flips with probability ``p_flip``:
    P(first next) = P(first) (1 - p_flip) + P(second) p_flip."""
    if p_flip == 0.0:
        return log_odds
    if p_flip == 1.0:
        return -log_odds
    log_stay, log_flip = float(np.log1p(-p_flip)), float(np.log(p_flip))
    log_first, log_second = jax.nn.log_sigmoid(log_odds), jax.nn.log_sigmoid(-log_odds)
    return jnp.logaddexp(log_first + log_stay, log_second + log_flip) - jnp.logaddexp(
        log_first + log_flip, log_second + log_stay
    )
