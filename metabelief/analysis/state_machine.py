"""State-machine simulation (Mikulik et al. 2020, "Meta-trained agents implement Bayes-optimal agents").

Two agents are behaviourally equivalent state machines if each one's state can be mapped onto the
other's so that the mapped state both (i) sits where the other agent's state actually is and (ii)
makes the other agent act as it actually does. Both agents read the same histories (the trained
agent's held-out rollout): the recurrent agent's state is its LSTM ``[hidden, cell]``, the
Bayes-optimal agent's state is the exact posterior of ``bernoulli_bandit`` as counts
(successes and failures of each arm). Maps are fitted both ways (ridge regression from streaming
statistics, and an MLP) on the training tasks and scored on held-out test tasks:

* **state dissimilarity**: the mapped state's MSE to the true state, normalised by the true
  state's variance (``1 - R^2``; 0 = the map is exact);
* **output dissimilarity**: the total-variation distance between the action probabilities the
  receiving agent produces from the mapped state and from its true state, averaged over test
  steps. Agent -> Bayes: the Bayes-optimal policy at the mapped counts (rounded to the nearest
  valid counts) vs at the true counts; Bayes -> agent: the agent's policy head at the mapped
  ``hidden`` vs its actual policy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from metabelief import probes
from metabelief.agents.lstm import RecurrentAgent
from metabelief.baselines.bayes_optimal import BayesOptimal
from metabelief.rollout import Trajectory, replay_jit, split_lanes
from metabelief.tasks.bandit_base import BetaBelief
from metabelief.tasks.bernoulli_bandit import BernoulliBandit


def counts_from_features(family: BernoulliBandit, features: jax.Array) -> jax.Array:
    """Observed ``[successes (K), failures (K)]`` from ``bernoulli_bandit`` belief features.

    The features are the posterior means m and standard deviations s of each arm's Beta(a, b):
    a + b = m (1 - m) / s^2 - 1 and a = m (a + b); the prior's pseudo-counts are subtracted.
    """
    num_arms = family.num_arms
    means, stds = features[..., :num_arms], features[..., num_arms : 2 * num_arms]
    total = means * (1.0 - means) / stds**2 - 1.0
    alpha = means * total
    return jnp.concatenate([alpha - family.prior_a, total - alpha - family.prior_b], axis=-1)


def simulate(
    family: BernoulliBandit,
    agent: RecurrentAgent,
    networks: dict[str, dict],
    history: Trajectory,
    bayes: BayesOptimal,
    split_sizes: tuple[int, int, int],
    *,
    key: jax.Array,
    mlp_steps: int = 1000,
) -> dict:
    """Both maps, both dissimilarities, for each named network, on ``history``.

    Returns a JSON-ready dict: for each ``name`` in ``networks``, ``{"agent_to_bayes": ...,
    "bayes_to_agent": ...}``, each with ``state_dissimilarity`` and ``output_dissimilarity`` for
    the ``linear`` and ``mlp`` maps.
    """
    if not isinstance(family, BernoulliBandit):
        raise ValueError(f"the state-machine simulation needs bernoulli_bandit, got {family!r}")
    counts = counts_from_features(family, history.features)  # [T, N, 2K]: the Bayes agent's state
    bayes_probs = _bayes_action_probs(family, bayes, counts)
    report = {}
    for name, params in networks.items():
        replayed = replay_jit(family, agent, params, history)
        agent_state = jnp.concatenate([replayed.hidden, replayed.cell], axis=-1)  # [T, N, 2H]
        agent_probs = jax.nn.softmax(replayed.logits)
        splits = [_flat(part) for part in split_lanes(agent_state, split_sizes)]
        count_splits = [_flat(part) for part in split_lanes(counts, split_sizes)]
        test_bayes_probs = _flat(split_lanes(bayes_probs, split_sizes)[2])
        test_agent_probs = _flat(split_lanes(agent_probs, split_sizes)[2])
        key, *mlp_keys = jax.random.split(key, 3)
        report[name] = {}
        for direction, inputs, targets, mlp_key in (
            ("agent_to_bayes", splits, count_splits, mlp_keys[0]),
            ("bayes_to_agent", count_splits, splits, mlp_keys[1]),
        ):
            mapped = {
                "linear": _linear_map(inputs, targets),
                "mlp": _mlp_map(mlp_key, inputs, targets, mlp_steps),
            }
            report[name][direction] = {}
            for kind, predicted in mapped.items():
                if direction == "agent_to_bayes":
                    mapped_probs = _bayes_action_probs(family, bayes, jnp.maximum(predicted, 0.0))
                    reference = test_bayes_probs
                else:
                    hidden = predicted[:, : agent.hidden_size]
                    mapped_probs = jax.nn.softmax(
                        hidden @ _policy(params)["kernel"] + _policy(params)["bias"]
                    )
                    reference = test_agent_probs
                report[name][direction][kind] = {
                    "state_dissimilarity": _normalised_mse(predicted, targets[2]),
                    "output_dissimilarity": float(0.5 * jnp.abs(mapped_probs - reference).sum(-1).mean()),
                }
    return report


def _bayes_action_probs(family: BernoulliBandit, bayes: BayesOptimal, counts: jax.Array) -> jax.Array:
    """The Bayes-optimal policy's action probabilities at observed counts ``[..., 2K]``."""
    num_arms = family.num_arms
    beliefs = BetaBelief(
        alpha=jnp.round(counts[..., :num_arms]) + family.prior_a,
        beta=jnp.round(counts[..., num_arms:]) + family.prior_b,
    )
    flat = jax.tree.map(lambda leaf: leaf.reshape(-1, num_arms), beliefs)
    probs = jax.jit(jax.vmap(bayes.action_probs))(flat)
    return probs.reshape(*counts.shape[:-1], family.num_actions)


def _linear_map(inputs: list[jax.Array], targets: list[jax.Array]) -> jax.Array:
    """Ridge map fitted on split 0, its strength chosen on split 1; predictions on split 2."""
    joined = [jnp.concatenate([x, y], axis=-1) for x, y in zip(inputs, targets, strict=True)]
    moments = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[probes.moments_of(z) for z in joined])
    width = inputs[0].shape[-1]
    x, y = slice(0, width), slice(width, width + targets[0].shape[-1])
    result = probes.linear_probe(moments, x, y)
    return probes.predict(result.probe, inputs[2])


def _mlp_map(key: jax.Array, inputs: list[jax.Array], targets: list[jax.Array], num_steps: int) -> jax.Array:
    """MLP map fitted on split 0, kept at its best on split 1; predictions on split 2."""
    train, validation = (inputs[0], targets[0]), (inputs[1], targets[1])
    return probes.mlp_map(key, train, validation, inputs[2], num_steps=num_steps)


def _normalised_mse(predicted: jax.Array, target: jax.Array) -> float:
    """Mean squared error over dimensions that vary, each divided by its variance."""
    variance = target.var(axis=0)
    varies = variance > 1e-8 * jnp.maximum(1.0, (target**2).mean(axis=0))
    per_dim = ((predicted - target) ** 2).mean(axis=0) / jnp.where(varies, variance, 1.0)
    return float(np.asarray(per_dim)[np.asarray(varies)].mean())


def _policy(params: dict) -> dict:
    return params["params"]["policy"]


def _flat(array: jax.Array) -> jax.Array:
    return array.reshape(-1, array.shape[-1])
