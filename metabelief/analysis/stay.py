"""Stay probabilities of the two-step task: the behavioural signature of model-based control.

After each trial, does the agent repeat its first-stage action? Daw et al. (2011) split that
probability by what happened on the previous trial: rewarded or not, and common or rare
transition. A model-free learner repeats rewarded actions whatever the transition (a main effect
of reward); a model-based learner knows that a reward after a *rare* transition speaks for the
*other* action, so reward and transition interact. Wang et al. (2018) used this to show that a
meta-RL agent trained with model-free RL behaves model-based.

Layout of every ``[2, 2]`` cell array here, in the order of the classic bar plot::

    [[rewarded-common,   rewarded-rare],
     [unrewarded-common, unrewarded-rare]]

i.e. the first index is the previous reward (``REWARDED`` = 0, ``UNREWARDED`` = 1) and the second
the previous transition (``COMMON`` = 0, ``RARE`` = 1).

Indices (differences of stay probabilities, each in [-2, 2]):

* model-based index = (rewarded-common + unrewarded-rare) - (rewarded-rare + unrewarded-common),
  the reward x transition interaction: 2 for a policy that repeats exactly when the previous
  outcome speaks for the same action, 0 for one that ignores the transition.
* model-free index = (rewarded-common + rewarded-rare) - (unrewarded-common + unrewarded-rare),
  the main effect of reward: 2 for win-stay/lose-switch, 0 for a purely model-based policy.

Usage, from any policy's trajectory of a ``two_step`` family (time-major, one task per lane)::

    stay = stay_probabilities(actions, next_obs, rewards)  # [T, N], [T, N, 2], [T, N]
    stay.probs, stay.model_based_index
    runs = jax.vmap(stay_probabilities)(actions_r, next_obs_r, rewards_r)  # leading runs axis
    summary = summarize_runs(runs)  # mean and standard error over runs
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp

REWARDED, UNREWARDED = 0, 1  # first index of a cell array: the previous trial's reward
COMMON, RARE = 0, 1  # second index: the previous trial's transition


@chex.dataclass(frozen=True)
class StayProbabilities:
    """Stay counts of a set of trajectories, pooled over trials and tasks.

    Leaves may carry leading batch axes (e.g. runs, from ``jax.vmap(stay_probabilities)``); the
    last two axes are the cells in the module's layout (first index ``REWARDED``/``UNREWARDED``,
    second ``COMMON``/``RARE``).
    """

    stays: jax.Array  # int32[..., 2, 2]: trials t >= 1 that repeated the action of trial t - 1
    counts: jax.Array  # int32[..., 2, 2]: trials t >= 1 whose previous trial fell in the cell

    @property
    def probs(self) -> jax.Array:
        """``float32[..., 2, 2]``: P(stay | previous reward, previous transition); NaN in an empty cell."""
        return self.stays.astype(jnp.float32) / self.counts.astype(jnp.float32)

    @property
    def model_based_index(self) -> jax.Array:
        """``float32[...]``: (rewarded-common + unrewarded-rare) - (rewarded-rare + unrewarded-common)."""
        return _model_based_index(self.probs)

    @property
    def model_free_index(self) -> jax.Array:
        """``float32[...]``: (rewarded-common + rewarded-rare) - (unrewarded-common + unrewarded-rare)."""
        return _model_free_index(self.probs)


@chex.dataclass(frozen=True)
class StaySummary:
    """Means over runs of the per-run stay probabilities and indices, with standard errors.

    The standard error is the sample standard deviation over runs (ddof = 1) over sqrt(runs):
    NaN with a single run. ``pooled`` sums the counts of every run.
    """

    probs: jax.Array  # float32[2, 2]: mean over runs of StayProbabilities.probs
    probs_se: jax.Array  # float32[2, 2]
    model_based_index: jax.Array  # float32[]
    model_based_index_se: jax.Array  # float32[]
    model_free_index: jax.Array  # float32[]
    model_free_index_se: jax.Array  # float32[]
    pooled: StayProbabilities  # counts summed over runs, leaves int32[2, 2]


def stay_probabilities(actions: jax.Array, reached: jax.Array, rewards: jax.Array) -> StayProbabilities:
    """Stay counts of first-stage actions by the previous trial's reward and transition.

    Pools the trials t >= 1 of every task: trial t stays when its action equals trial t - 1's,
    and falls in the cell of trial t - 1's reward (rewarded when ``reward > 0``) and transition
    (common when action 0 reached A or action 1 reached B). Pure ``jax.numpy``, no loop over
    time: jit it or vmap it over a leading runs axis.

    Args:
      actions: ``int[T, N]``, first-stage actions (0 or 1) of N tasks over T >= 2 trials.
      reached: the second-stage state each trial reached, either as ``int[T, N]`` (0 = A,
        1 = B) or as the one-hot observations ``step`` returned, ``float[T, N, 2]`` (a rollout's
        ``obs[1:]``: index 0 of a ``RandomRollout``'s ``obs`` is the reset observation).
      rewards: ``float[T, N]``, the rewards of the trials.

    Returns:
      A ``StayProbabilities`` with ``int32[2, 2]`` counts; ``.probs`` in the module's layout.

    Raises:
      ValueError: arrays that are not ``[T, N]`` (``[T, N, 2]`` for observations) of one shape,
        or fewer than two trials.
    """
    actions, reached, rewards = jnp.asarray(actions), jnp.asarray(reached), jnp.asarray(rewards)
    if actions.ndim != 2:
        raise ValueError(f"actions must be [T, N] (time, tasks), got shape {actions.shape}")
    if reached.shape == (*actions.shape, 2):
        reached = jnp.argmax(reached, axis=-1)
    if reached.shape != actions.shape or rewards.shape != actions.shape:
        raise ValueError(
            f"reached must be [T, N] or [T, N, 2] and rewards [T, N] like actions {actions.shape}, "
            f"got reached {reached.shape} and rewards {rewards.shape}"
        )
    if actions.shape[0] < 2:
        raise ValueError(f"actions must span at least 2 trials to count stays, got T = {actions.shape[0]}")
    previous_rare = actions[:-1] != reached[:-1]
    previous_unrewarded = ~(rewards[:-1] > 0)
    cell = 2 * previous_unrewarded.astype(jnp.int32) + previous_rare.astype(jnp.int32)  # [T - 1, N]
    stayed = actions[1:] == actions[:-1]
    counts = jnp.bincount(cell.ravel(), length=4)
    # Switches go to a fifth, discarded bin: integer counts of stays without float weights.
    stays = jnp.bincount(jnp.where(stayed, cell, 4).ravel(), length=5)[:4]
    return StayProbabilities(
        stays=stays.astype(jnp.int32).reshape(2, 2), counts=counts.astype(jnp.int32).reshape(2, 2)
    )


def summarize_runs(runs: StayProbabilities | Sequence[StayProbabilities]) -> StaySummary:
    """Mean and standard error over independent runs (seeds, agents) of the stay analysis.

    Args:
      runs: one ``StayProbabilities`` whose leaves carry a leading runs axis (``int32[R, 2, 2]``,
        e.g. from ``jax.vmap(stay_probabilities)``), or a sequence of R unbatched ones.

    Returns:
      A ``StaySummary``; each run weighs the same whatever its number of trials.
    """
    if not isinstance(runs, StayProbabilities):
        runs = list(runs)
        if not runs:
            raise ValueError("runs must hold at least one StayProbabilities")
        runs = jax.tree.map(lambda *leaves: jnp.stack(leaves), *runs)
    if runs.counts.ndim != 3 or runs.counts.shape[1:] != (2, 2):
        raise ValueError(f"runs must have counts of shape [R, 2, 2], got {runs.counts.shape}")
    probs = runs.probs

    def mean_and_se(values: jax.Array) -> tuple[jax.Array, jax.Array]:
        return values.mean(axis=0), values.std(axis=0, ddof=1) / jnp.sqrt(values.shape[0])

    probs_mean, probs_se = mean_and_se(probs)
    based, based_se = mean_and_se(_model_based_index(probs))
    free, free_se = mean_and_se(_model_free_index(probs))
    return StaySummary(
        probs=probs_mean,
        probs_se=probs_se,
        model_based_index=based,
        model_based_index_se=based_se,
        model_free_index=free,
        model_free_index_se=free_se,
        pooled=StayProbabilities(stays=runs.stays.sum(axis=0), counts=runs.counts.sum(axis=0)),
    )


def _model_based_index(probs: jax.Array) -> jax.Array:
    return (probs[..., REWARDED, COMMON] + probs[..., UNREWARDED, RARE]) - (
        probs[..., REWARDED, RARE] + probs[..., UNREWARDED, COMMON]
    )


def _model_free_index(probs: jax.Array) -> jax.Array:
    return probs[..., REWARDED, :].sum(axis=-1) - probs[..., UNREWARDED, :].sum(axis=-1)
