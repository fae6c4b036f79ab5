"""The task-family contract: a distribution over hidden tasks and its exact Bayes filter.

A task family is an immutable object whose hyper-parameters are static Python fields. Every
method is a pure, jittable function of arrays written for ONE task; callers vmap it over tasks
and scan it over time. The task is sampled outside the environment (``sample_task``) and passed
to ``reset`` and ``step``, so an episode never silently changes task.

Shapes and dtypes (per task, before any vmap):

* ``key``: a JAX PRNG key (typed ``jax.random.key`` or raw ``uint32[2]``).
* ``task``, ``state``, ``belief``: pytrees of arrays, fixed structure, shapes and dtypes.
* ``obs``: ``float32[obs_size]`` (``obs_size`` may be 0).
* ``action``: ``int32[]`` in ``[0, num_actions)``.
* ``reward``: ``float32[]``.
* ``done``: ``bool[]``, true once ``horizon`` steps of the episode have been taken.
* ``belief_features(belief)``: ``float32[F]``; its first ``D`` entries are the posterior mean of
  ``true_features(task, state)``, ``float32[D]``.

Optional: ``expected_rewards(belief, obs) -> float32[num_actions]``, the posterior expected
reward of each action in the current state; ``metabelief.baselines.belief_greedy`` acts on it.

Optional: ``belief_variance(belief) -> float32[D]``, the posterior variance of each entry of
``true_features`` (so ``E[(truth - mean)^2 | history]``, not the spread of a parameter behind it);
``metabelief.testing.check_family`` then tests it against the squared errors of the posterior
mean (its check 8).

Timing: the belief after ``belief_update`` on transition t (``obs`` -> ``next_obs``) describes the
hidden quantity in the state that ``step`` returned at t, the state the agent acts in next.
"""

from __future__ import annotations

import abc
from typing import Any

import jax

PyTree = Any


class TaskFamily(abc.ABC):
    """A distribution over hidden tasks, their environment dynamics and the exact belief.

    Subclasses are frozen dataclasses that validate their fields in ``__post_init__`` and
    provide the three sizes as attributes or properties:

    * ``num_actions`` (int): number of discrete actions.
    * ``obs_size`` (int): length of the float observation vector, 0 when there is none.
    * ``horizon`` (int): steps per episode; one episode is one task.
    """

    num_actions: int
    obs_size: int
    horizon: int

    @abc.abstractmethod
    def sample_task(self, key: jax.Array) -> PyTree:
        """Draws a task from the prior. Returns a pytree of arrays (the hidden task)."""

    @abc.abstractmethod
    def reset(self, key: jax.Array, task: PyTree) -> tuple[PyTree, jax.Array]:
        """Starts an episode of ``task``. Returns ``(state, obs)``, obs ``float32[obs_size]``."""

    @abc.abstractmethod
    def step(
        self, key: jax.Array, task: PyTree, state: PyTree, action: jax.Array
    ) -> tuple[PyTree, jax.Array, jax.Array, jax.Array]:
        """Takes ``action`` (``int32[]``). Returns ``(state, obs, reward, done)``.

        ``obs`` is ``float32[obs_size]``, ``reward`` ``float32[]`` and ``done`` ``bool[]``.
        Stepping past the horizon keeps the same task (there is no auto-reset).
        """

    @abc.abstractmethod
    def belief_init(self, obs: jax.Array) -> PyTree:
        """The exact posterior over the task given the first observation (from ``reset``)."""

    @abc.abstractmethod
    def belief_update(
        self,
        belief: PyTree,
        obs: jax.Array,
        action: jax.Array,
        reward: jax.Array,
        next_obs: jax.Array,
    ) -> PyTree:
        """Exact Bayes update of ``belief`` on one transition ``(obs, action, reward, next_obs)``."""

    @abc.abstractmethod
    def belief_features(self, belief: PyTree) -> jax.Array:
        """The probe target, ``float32[F]``; it opens with the posterior mean of the truth."""

    @abc.abstractmethod
    def true_features(self, task: PyTree, state: PyTree) -> jax.Array:
        """The true value of what the first entries of ``belief_features`` estimate, ``float32[D]``."""
