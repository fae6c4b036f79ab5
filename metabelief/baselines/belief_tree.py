"""The Bayes-optimal policy of any family with finitely many outcomes, by DP over its belief tree.

A family with the ``FiniteOutcomes`` capability lists, for a belief, an observation and an action,
every outcome (reward, next observation) of the step with its posterior predictive probability.
From the first belief, the beliefs reachable in ``t`` steps are then a finite set: level ``t`` of
the belief tree. ``belief_tree(family)`` builds the levels forward (``belief_update`` on every
node x action x outcome, vmapped in JAX; equal beliefs merged) and solves the belief MDP backward
in float64 NumPy:

    Q_t(b, a) = sum_k P(k | b, a) [r_k + gamma V_{t+1}(b_k)],    V_t(b) = max_a Q_t(b, a),

``V_horizon = 0``. The policy (``BeliefTreePolicy``) follows the tree: its memory is the node it
is at, the outcome a step returned picks the child, and it takes an action of highest Q (ties at
random). It is the exact Bayes-optimal policy of the undiscounted return (or of the
``gamma``-discounted one) whenever the tree fits.

Two nodes are one belief when they have the same observation and every leaf of the belief
pytree agrees to ``decimals`` decimal places: the same posterior reached along different paths
differs only by float32 rounding (e.g. the Tiger's log-odds after listen-left-right and
right-left). Beliefs that truly differ by less than that would be merged too; for the built-in
families none do. The tree must stay small: families whose beliefs keep splitting (the Markov
Tiger, a Markov bandit, any continuous reward) have no ``FiniteOutcomes`` DP here, and a tree
wider than ``max_nodes`` raises.

The first observation must be the same for every task (a node has one observation); a family
whose ``reset`` observation varies raises.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from metabelief.rollout import sample_tasks
from metabelief.tasks.base import FiniteOutcomes, PyTree, TaskFamily, require_capability
from metabelief.tasks.validation import integer_at_least, probability

MAX_NODES = 50_000  # beliefs per level above which the tree refuses
TIE_TOLERANCE = 1e-9  # Q-values this close to the best are ties
_ROOT_SAMPLES = 64  # tasks whose first observation must agree


@dataclasses.dataclass(frozen=True, eq=False)
class BeliefTree:
    """The belief tree of a family, level by level, and its Q-values.

    Node ``i`` of level ``t`` is row ``starts[t] + i``; level 0 holds the root alone.
    """

    starts: np.ndarray  # int64[H + 1]: where each level begins
    probs: np.ndarray  # float64[N, A, K]: P(outcome k | node, action)
    rewards: np.ndarray  # float32[N, A, K]
    next_obs: np.ndarray  # float32[N, A, K, O]
    children: np.ndarray  # int32[N, A, K]: the node outcome k leads to (the node itself on the last level)
    q_values: np.ndarray  # float64[N, A]: expected (discounted) reward to the end of the episode
    gamma: float

    @property
    def value(self) -> float:
        """V of the root: the Bayes-optimal expected return from the prior."""
        return float(self.q_values[0].max())

    @property
    def num_nodes(self) -> int:
        return self.q_values.shape[0]


@functools.lru_cache(maxsize=16)
def belief_tree(
    family: TaskFamily, gamma: float = 1.0, *, decimals: int = 6, max_nodes: int = MAX_NODES
) -> BeliefTree:
    """Builds and solves the belief tree of ``family`` (cached per family, gamma and rounding).

    Raises:
      ValueError: ``family`` lacks ``FiniteOutcomes``, its first observation varies between
        tasks, or a level holds more than ``max_nodes`` distinct beliefs.
    """
    require_capability("the belief-tree DP", family, FiniteOutcomes)
    gamma = probability("gamma", gamma)
    integer_at_least("max_nodes", max_nodes, 1)
    beliefs, obs = _root(family)
    levels, expand = [], jax.jit(functools.partial(_expand, family))
    for depth in range(family.horizon):
        num = obs.shape[0]
        padded = _pad(beliefs, obs, 1 << max(num - 1, 0).bit_length())
        probs, rewards, next_obs, children = jax.device_get(expand(*padded))
        probs, rewards, next_obs = probs[:num].astype(np.float64), rewards[:num], next_obs[:num]
        level = {"probs": probs, "rewards": rewards, "next_obs": next_obs}
        if depth + 1 < family.horizon:
            children = jax.tree.map(functools.partial(_first, num), children)
            child_index, beliefs, obs = _merge(children, next_obs, probs, decimals)
            if obs.shape[0] > max_nodes:
                raise ValueError(
                    f"the belief tree of {family!r} has {obs.shape[0]} distinct beliefs after {depth + 1} "
                    f"steps, more than max_nodes = {max_nodes}: its beliefs keep splitting, so it has no "
                    "exact DP here"
                )
            level["children"] = child_index
        levels.append(level)
    return _solve(levels, gamma)


def belief_tree_value(family: TaskFamily, gamma: float = 1.0) -> float:
    """The Bayes-optimal expected (discounted) return of ``family`` from the prior."""
    return belief_tree(family, gamma).value


@dataclasses.dataclass(frozen=True)
class BeliefTreePolicy:
    """The Bayes-optimal policy of a ``FiniteOutcomes`` family (a ``metabelief.rollout.Learner``:
    ``run_policy`` runs it). Its memory is its node in the belief tree, ``int32[]``.

    Example::

        family = metabelief.make("oracle_bandit")
        policy = belief_tree_policy(family)
        rollout = run_policy(family, policy, key, tasks)
        policy.value  # 25.55: ask the oracle, then pull the target
    """

    family: TaskFamily
    gamma: float = 1.0

    def __post_init__(self):
        belief_tree(self.family, self.gamma)  # builds (and caches) the tree, or raises

    @property
    def tree(self) -> BeliefTree:
        return belief_tree(self.family, self.gamma)

    @property
    def value(self) -> float:
        return self.tree.value

    def init(self, obs: jax.Array) -> jax.Array:
        del obs
        return jnp.zeros((), jnp.int32)

    def update(
        self, node: jax.Array, obs: jax.Array, action: jax.Array, reward: jax.Array, next_obs: jax.Array
    ) -> jax.Array:
        """The child of ``node`` that ``action`` and its outcome (``reward``, ``next_obs``) lead to:
        the listed outcome nearest to what happened, among those of positive probability."""
        del obs
        tree = self.tree
        probs = jnp.asarray(tree.probs, jnp.float32)[node, action]
        distance = jnp.abs(jnp.asarray(tree.rewards)[node, action] - reward)
        distance += jnp.abs(jnp.asarray(tree.next_obs)[node, action] - next_obs).sum(axis=-1)
        outcome = jnp.argmin(jnp.where(probs > 0.0, distance, jnp.inf))
        return jnp.asarray(tree.children)[node, action, outcome]

    def __call__(self, key: jax.Array, node: jax.Array, obs: jax.Array) -> jax.Array:
        del obs
        q_values = jnp.asarray(self.tree.q_values)[node]
        best = q_values >= q_values.max() - TIE_TOLERANCE
        return jax.random.choice(key, best.shape[0], p=best / best.sum()).astype(jnp.int32)


def belief_tree_policy(family: TaskFamily, gamma: float = 1.0) -> BeliefTreePolicy:
    """The Bayes-optimal policy of a ``FiniteOutcomes`` family, by DP over its belief tree."""
    return BeliefTreePolicy(family, gamma)


def _root(family: TaskFamily) -> tuple[PyTree, np.ndarray]:
    """The first belief and observation, ``[1, ...]`` each; the observation must not vary by task."""
    key = jax.random.key(0)
    tasks = sample_tasks(family, key, _ROOT_SAMPLES)
    _, obs = jax.vmap(family.reset)(jax.random.split(key, _ROOT_SAMPLES), tasks)
    obs = np.asarray(obs)
    if not np.all(obs == obs[:1]):
        raise ValueError(
            f"the belief tree of {family!r} needs the same first observation for every task; reset gives "
            "several"
        )
    belief = family.belief_init(jnp.asarray(obs[0]))
    return jax.tree.map(lambda leaf: jnp.asarray(leaf)[None], belief), obs[:1]


def _expand(family: TaskFamily, beliefs: PyTree, obs: jax.Array):
    """Every node x action x outcome: probabilities, rewards, next observations ``[n, A, K, ...]``
    and the child beliefs (a pytree ``[n, A, K, ...]``)."""
    actions = jnp.arange(family.num_actions, dtype=jnp.int32)

    def per_action(belief, ob, action):
        probs, rewards, next_obs = family.outcomes(belief, ob, action)
        update = jax.vmap(family.belief_update, in_axes=(None, None, None, 0, 0))
        return probs, rewards, next_obs, update(belief, ob, action, rewards, next_obs)

    per_node = jax.vmap(per_action, in_axes=(None, None, 0))
    return jax.vmap(per_node, in_axes=(0, 0, None))(beliefs, obs, actions)


def _first(num: int, leaf: np.ndarray) -> np.ndarray:
    return leaf[:num]


def _pad(beliefs: PyTree, obs: np.ndarray, size: int) -> tuple[PyTree, np.ndarray]:
    """Repeats the first node up to ``size`` nodes, so levels of similar width share one program."""

    def pad(leaf):
        leaf = np.asarray(leaf)
        return np.concatenate([leaf, np.repeat(leaf[:1], size - leaf.shape[0], axis=0)])

    return jax.tree.map(pad, beliefs), pad(obs)


def _merge(children: PyTree, next_obs: np.ndarray, probs: np.ndarray, decimals: int):
    """The distinct reachable children: ``(index [n, A, K] into them, their beliefs, their obs)``.

    Children of probability 0 are not reachable; their index is 0 (never followed: their
    probability weighs them out of every Q-value, and the policy never picks them).
    """

    def flat(leaf):  # [n, A, K, ...] -> [n * A * K, trailing size]
        leaf = np.asarray(leaf)
        return leaf.reshape(probs.size, int(np.prod(leaf.shape[probs.ndim :])))

    rows = np.concatenate(
        [flat(leaf).astype(np.float64) for leaf in [*jax.tree.leaves(children), next_obs]], axis=1
    )
    reachable = probs.reshape(-1) > 0.0
    with np.errstate(invalid="ignore"):
        keys = np.round(rows[reachable], decimals)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    index = np.zeros(probs.size, np.int32)
    index[reachable] = inverse.reshape(-1)
    picked = np.flatnonzero(reachable)[first]  # one flat (node, action, outcome) per distinct child

    def take(leaf):
        leaf = np.asarray(leaf)
        return leaf.reshape((probs.size,) + leaf.shape[probs.ndim :])[picked]

    return index.reshape(probs.shape), jax.tree.map(take, children), take(next_obs)


def _solve(levels: list[dict], gamma: float) -> BeliefTree:
    """Backward induction over the levels; the tables concatenated with global child indices."""
    sizes = [level["probs"].shape[0] for level in levels]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    q_levels, next_values = [None] * len(levels), np.zeros(1)
    for depth in reversed(range(len(levels))):
        level = levels[depth]
        future = next_values[level["children"]] if "children" in level else 0.0
        q_levels[depth] = (level["probs"] * (level["rewards"] + gamma * future)).sum(axis=-1)
        next_values = q_levels[depth].max(axis=-1)
    children = []
    for depth, level in enumerate(levels):
        if "children" in level:
            children.append(level["children"] + starts[depth + 1])
        else:  # the last level: no step follows; point at the node itself
            nodes = np.arange(starts[depth], starts[depth + 1])
            children.append(np.broadcast_to(nodes[:, None, None], level["probs"].shape))
    return BeliefTree(
        starts=starts,
        probs=np.concatenate([level["probs"] for level in levels]),
        rewards=np.concatenate([level["rewards"] for level in levels]),
        next_obs=np.concatenate([level["next_obs"] for level in levels]),
        children=np.concatenate(children).astype(np.int32),
        q_values=np.concatenate(q_levels),
        gamma=gamma,
    )
