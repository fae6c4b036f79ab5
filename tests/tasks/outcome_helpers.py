"""Shared by the tests of families with finitely many outcomes (``FiniteOutcomes``): a family's
listed outcomes against a float64 reference distribution, and event frequencies against a
probability."""

from __future__ import annotations

import numpy as np

ATOL = 1e-5  # float32 probabilities against a float64 reference


def matches(rewards, next_obs, ref_rewards, ref_obs) -> np.ndarray:
    """bool [M, R, K]: the family's outcome k is the reference outcome r (same reward and obs)."""
    same_reward = np.abs(rewards[:, None, :] - ref_rewards[:, :, None]) <= 1e-5 * (
        1.0 + np.abs(ref_rewards[:, :, None])
    )
    same_obs = np.all(np.abs(next_obs[:, None, :, :] - ref_obs[:, :, None, :]) <= 1e-6, axis=-1)
    return same_reward & same_obs


def assert_same_distribution(probs, rewards, next_obs, ref_p, ref_r, ref_obs):
    """The family's outcomes (K per row, any order, padding allowed) put the reference's mass on
    each reference outcome, and no mass elsewhere."""
    match = matches(rewards, next_obs, ref_r, ref_obs)  # [M, R, K]
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    assert (probs >= 0.0).all()
    mass = (match * probs[:, None, :].astype(np.float64)).sum(axis=-1)
    np.testing.assert_allclose(mass, ref_p, rtol=0.0, atol=ATOL)
    stray = ~match.any(axis=1) & (probs > 1e-7)
    assert not stray.any(), (rewards[stray.any(axis=1)][:3], probs[stray.any(axis=1)][:3])


def assert_frequency(events: np.ndarray, p: float, what: str):
    n = events.size
    se = np.sqrt(max(p * (1.0 - p), 1.0 / n) / n)
    assert abs(events.mean() - p) < 5.0 * se, (what, events.mean(), p, se)
