"""Predicting the next outcome: does a memory predict the reward as well as the exact belief does?

A linear read-out's R^2 for the posterior mean is, in the population, the same test as its MSE
for the truth (``E[(theta - f)^2] = Bayes minimum + E[(m - f)^2]`` for any f of the history, m the
posterior mean), so it cannot be a second one. This is one: the log-loss of predicting the reward
``r_t`` of the action ``a_t`` taken from the memory at step t, against the log-loss of the exact
posterior predictive, ``P(r_t = 1 | history, a_t) = expected_rewards(belief_t, obs_t)[a_t]`` (a
Beta-Bernoulli arm: ``alpha / (alpha + beta)`` of the pulled arm). The exact predictive is the
lowest expected log-loss any function of the history and the action can reach (log-loss is a
proper score), so the excess of a memory's probe over it is >= 0 in the population and 0 only if
the memory predicts as the belief does.

The probe is a logistic regression of the reward on the memory with one head per action,
``P(r = 1 | m, a) = sigmoid(w_a . m + b_a)`` (the heads share no parameter, so each is fitted on
the steps that took its action), on inputs standardised with the training lanes' statistics, an
L2 penalty ``lambda |w_a|^2 / 2`` on the mean log-loss (the intercept free), fitted by Newton's
method. The protocol of ``metabelief.probes.linear_probe``: fitted on the training lanes for each
penalty of the grid, the penalty chosen by the validation lanes' log-loss, refitted on training +
validation lanes, scored on the test lanes. Log-losses are in nats per step, averaged over the
test lanes' steps. It needs rewards in {0, 1} and the family's ``ExpectedRewards`` capability.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metabelief import probes
from metabelief.analysis.records import Record
from metabelief.rollout import Trajectory, replay_beliefs, sample_rows, split_lanes
from metabelief.tasks.base import ExpectedRewards, TaskFamily

DEFAULT_PENALTY_GRID = (1e-3, 1e-2, 1e-1)
NEWTON_STEPS = 6  # per penalty, each started from the previous penalty's solution (largest first)
_CLIP = 1e-7  # probabilities are kept in [_CLIP, 1 - _CLIP] so a log-loss stays finite


def bernoulli_predictive(family: TaskFamily, history: Trajectory) -> jax.Array | None:
    """``float32[T, N]``: the exact ``P(r_t = 1 | history up to t, a_t)``, or None where it is not
    defined here: the family lacks ``ExpectedRewards`` or a recorded reward is not 0 or 1."""
    if not isinstance(family, ExpectedRewards):
        return None
    if not bool(jnp.all((history.rewards == 0) | (history.rewards == 1))):
        return None
    return _bernoulli_predictive(family, history)


@jax.jit(static_argnums=0)
def _bernoulli_predictive(family: TaskFamily, history: Trajectory) -> jax.Array:
    beliefs = replay_beliefs(family, history)  # leaves [T, N, ...]: the belief acted on at step t
    expected = jax.vmap(jax.vmap(family.expected_rewards))(beliefs, history.obs[:-1])  # [T, N, A]
    return jnp.take_along_axis(expected, history.actions[..., None], axis=-1)[..., 0]


def log_loss(probabilities: jax.Array, rewards: jax.Array) -> float:
    """Mean ``-[r log p + (1 - r) log(1 - p)]`` over all entries, in nats."""
    return float(_log_loss(jnp.asarray(probabilities, jnp.float32), jnp.asarray(rewards, jnp.float32)))


@jax.jit
def _log_loss(probabilities, rewards):
    p = jnp.clip(probabilities, _CLIP, 1.0 - _CLIP)
    return -jnp.mean(rewards * jnp.log(p) + (1.0 - rewards) * jnp.log1p(-p))


def no_history_log_loss(
    actions: jax.Array, rewards: jax.Array, sizes: Sequence[int], num_actions: int
) -> float:
    """Test log-loss of each action's reward rate on the training + validation lanes: a prediction
    from no history at all."""
    num_fit = sizes[0] + sizes[1]
    chosen = jax.nn.one_hot(actions[:, :num_fit], num_actions)  # [T, n, A]
    pays = (chosen * rewards[:, :num_fit, None]).sum(axis=(0, 1)) / jnp.maximum(chosen.sum(axis=(0, 1)), 1.0)
    return log_loss(pays[actions[:, num_fit:]], rewards[:, num_fit:])


def probe_log_losses(
    inputs: Mapping[str, jax.Array],
    actions: jax.Array,
    rewards: jax.Array,
    sizes: Sequence[int],
    num_actions: int,
    *,
    penalty_grid: Sequence[float] = DEFAULT_PENALTY_GRID,
) -> dict[str, float]:
    """Test log-loss of the logistic probe of ``rewards [T, N]`` (0 or 1) on each named probe input
    ``[T, N, d]`` and the action taken, ``actions int32[T, N]`` (module docstring); ``sizes``:
    (train, validation, test) consecutive blocks of the N lanes.

    The inputs are padded with zero columns to the widest (a zero column, standardised to zero,
    gets a zero weight) and fitted together in one program, compiled once for them all.
    """
    num_tasks = actions.shape[1]
    if actions.ndim != 2 or actions.shape != rewards.shape:
        raise ValueError(f"actions and rewards must both be [T, N], got {actions.shape} and {rewards.shape}")
    if len(sizes) != 3 or min(sizes) < 1 or sum(sizes) != num_tasks:
        raise ValueError(
            f"sizes must be three positive numbers of lanes adding up to {num_tasks}, got {sizes}"
        )
    for name, x in inputs.items():
        if x.ndim != 3 or x.shape[:2] != actions.shape:
            raise ValueError(f"inputs must be [T, N, d] over actions' [T, N], got {x.shape} for {name!r}")
        if not bool(jnp.isfinite(x).all()):
            raise ValueError(f"probe inputs contain NaN or inf (inputs {name!r})")
    penalties = np.asarray(penalty_grid, np.float32)
    if penalties.ndim != 1 or penalties.size == 0 or not np.all(penalties > 0):
        raise ValueError(f"penalty_grid must be positive numbers, got {penalty_grid!r}")
    grid = jnp.asarray(np.sort(penalties)[::-1].copy())  # largest first: each warm-starts the next
    width = max(x.shape[-1] for x in inputs.values())
    stacked = jnp.stack(
        [jnp.pad(x.astype(jnp.float32), ((0, 0), (0, 0), (0, width - x.shape[-1]))) for x in inputs.values()]
    )  # [K, T, N, width]
    losses = _probe_log_losses(stacked, actions, rewards, grid, tuple(sizes), num_actions)
    return {name: float(loss) for name, loss in zip(inputs, jax.device_get(losses), strict=True)}


@jax.jit(static_argnums=(4, 5))
def _probe_log_losses(stacked, actions, rewards, grid, sizes, num_actions):
    targets = [
        (a.reshape(-1), r.reshape(-1))
        for a, r in zip(split_lanes(actions, sizes), split_lanes(rewards, sizes), strict=True)
    ]

    def one(inputs):
        splits = [
            (sample_rows(x), *target) for x, target in zip(split_lanes(inputs, sizes), targets, strict=True)
        ]
        return _probe_log_loss(*splits, grid, num_actions)

    return jax.vmap(one)(stacked)


def _probe_log_loss(train, validation, test, grid, num_actions):
    x_train = train[0]
    mean, scale = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    train, validation, test = (((x - mean) / scale, a, r) for x, a, r in (train, validation, test))

    path = _penalty_path(*train, grid, num_actions)  # leaves [R, A, ...]
    chosen = jnp.nanargmin(jax.vmap(lambda heads: _mean_log_loss(heads, *validation))(path))
    fit = tuple(jnp.concatenate(parts) for parts in zip(train, validation, strict=True))
    start = jax.tree.map(lambda leaf: leaf[chosen], path)
    return _mean_log_loss(_fit_heads(*fit, grid[chosen], num_actions, start), *test)


def _penalty_path(x, actions, rewards, grid, num_actions) -> probes.LogisticFit:
    """Heads (leaves ``[R, A, ...]``) fitted for each penalty of ``grid`` (descending), warm-started."""

    def fit(heads, penalty):
        heads = _fit_heads(x, actions, rewards, penalty, num_actions, heads)
        return heads, heads

    start = probes.LogisticFit(
        weights=jnp.zeros((num_actions, x.shape[1])),
        bias=jnp.zeros(num_actions),
        converged=jnp.zeros(num_actions, bool),
    )
    return jax.lax.scan(fit, start, grid)[1]


def _fit_heads(x, actions, rewards, penalty, num_actions, start) -> probes.LogisticFit:
    """Each action's penalised logistic regression on the rows that took it (leaves ``[A, ...]``),
    ``NEWTON_STEPS`` Newton steps of ``probes.fit_logistic`` from ``start``."""

    def head(action, start):
        taken = (actions == action).astype(jnp.float32)
        return probes.fit_logistic(x, rewards, taken, penalty=penalty, steps=NEWTON_STEPS, start=start)

    return jax.vmap(head)(jnp.arange(num_actions), start)


def _mean_log_loss(heads: probes.LogisticFit, x, actions, rewards):
    logits = jnp.sum(x * heads.weights[actions], axis=-1) + heads.bias[actions]
    return jnp.mean(jax.nn.softplus(logits) - rewards * logits)  # -log-likelihood of a Bernoulli


@dataclasses.dataclass(frozen=True)
class NextOutcome(Record):
    """Test log-losses (nats per step) of predicting the reward of the action taken: the exact
    posterior predictive's (``exact``, the floor), each action's reward rate (``no_history``), and
    the logistic probe's on each named probe input (``log_loss``), with its ``excess`` over
    ``exact``."""

    exact: float
    no_history: float
    log_loss: dict[str, float]
    excess: dict[str, float]


def next_outcome(
    family: TaskFamily,
    history: Trajectory,
    inputs: Sequence[Mapping[str, jax.Array]],
    sizes: Sequence[int],
    *,
    penalty_grid: Sequence[float] = DEFAULT_PENALTY_GRID,
) -> NextOutcome | None:
    """``NextOutcome`` of each named probe input ``[T, N, d]`` on ``history``'s test lanes, given
    in groups (each group's inputs are fitted together, ``probe_log_losses``: group inputs of
    similar widths); None where the exact predictive is not defined here (``bernoulli_predictive``)."""
    exact = bernoulli_predictive(family, history)
    if exact is None:
        return None
    test = slice(sizes[0] + sizes[1], None)
    actions, rewards = history.actions, history.rewards
    losses = {}
    for group in inputs:
        losses |= probe_log_losses(
            group, actions, rewards, sizes, family.num_actions, penalty_grid=penalty_grid
        )
    floor = log_loss(exact[:, test], rewards[:, test])
    return NextOutcome(
        exact=floor,
        no_history=no_history_log_loss(actions, rewards, sizes, family.num_actions),
        log_loss=losses,
        excess={name: loss - floor for name, loss in losses.items()},
    )
