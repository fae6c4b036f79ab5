"""State-machine simulation (Mikulik et al. 2020; Kuo et al. 2025's public reimplementation).

Two agents are behaviourally equivalent state machines if each one's state can be mapped onto the
other's so that the mapped state both (i) sits where the other agent's state actually is and (ii)
makes the other agent act as the first one actually acts: put the receiving agent B in the state
the map computes from the source agent A's state, and B must behave as A did (Mikulik et al.
2020, "Meta-trained agents implement Bayes-optimal agents", NeurIPS; Kuo, Hou, Dabney & Walker
2025, "Predictive Coding Enhances Meta-RL To Achieve Interpretable Bayes-Optimal Belief
Representation Under Partial Observability", NeurIPS, whose code is
github.com/walkerlab/metaRL-predictive-representation, ``utils/state_machine_analysis.py``:
``dissimilarity_analysis`` scores metaRL -> Bayes with ``get_output_dissimilarity(
true_actions=true_metaRL_actions, mapped_actions=mapped_bayes_actions)`` and Bayes -> metaRL with
``true_actions=true_bayes_actions, mapped_actions=mapped_metaRL_actions``).

Both agents read the same histories (the trained agent's held-out rollout): the recurrent agent's
state is its whole memory (``agent.memory``: the LSTM's ``[hidden, cell]``, a GRU's ``hidden``)
and its policy is its policy head on the readout (``agent.heads``); the
Bayes-optimal agent's state is the exact posterior of a family with the ``BetaArms`` capability
(``metabelief.tasks.base``; built in: ``bernoulli_bandit``) as counts (successes and failures of
each arm, ``bayes_counts``: ``beta_posterior`` of the replayed belief minus the prior) and its
policy is the DP's (``BayesOptimal.action_probs_at``: uniform over the optimal actions). Maps are
fitted both ways (ridge regression from streaming statistics, and an MLP) on the training lanes
(tasks), chosen on the validation lanes and scored on the held-out test lanes. In each direction
(``agent_to_bayes``: source = network, receiver = Bayes agent; ``bayes_to_agent``: source = Bayes
agent, receiver = network) and for each map:

* ``state_dissimilarity``: the mapped state's squared error to the receiver's true state, per
  dimension divided by that dimension's variance and averaged over the dimensions that vary
  (``1 - R^2``; 0 = the map is exact, 1 = no better than the mean). Kuo et al. instead divide the
  summed squared error by the mean squared norm of the true states (uncentred); ours does not
  reward a map for a state's offset from 0, nor let one large dimension drown the others.
* ``output_total_variation``: mean over test steps of ``0.5 sum_a |pi_source(a | its true state)
  - pi_receiver(a | mapped state)|`` (0 = B acts exactly as A did, 1 = disjoint actions).
* ``output_return_difference``: Kuo et al.'s output dissimilarity for the Bernoulli bandit, the
  expected-return difference per episode: mean over test episodes of ``|sum_t sum_a
  (pi_source(a) - pi_receiver(a)) p_a|``, p the task's true arm success probabilities. Kuo et al.
  use one action per step on each side; here each side's expected reward under its action
  distribution, so the measure has no sampling noise.
* ``output_return_difference_greedy``: the same with each policy's greedy action (argmax, as a
  one-hot) in place of its distribution: Kuo et al.'s Bayes agent acts by argmax (of Gittins
  indices) and so does ours here (the argmax of ``action_probs`` is the first optimal action,
  so ties go to the lowest arm on both sides).

The Bayes agent at a mapped state reads the mapped counts rounded to the nearest non-negative
integers (``bayes_count_policy``); counts past the horizon make it greedy on the posterior mean.
``simulate_states`` is the array core (any two agents given as states and policy functions);
``simulate`` runs it on a family, a recurrent agent's networks and a recorded history.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metabelief import probes
from metabelief.agents.base import Agent
from metabelief.analysis.records import Record
from metabelief.baselines.bayes_optimal import BayesOptimal
from metabelief.rollout import Trajectory, replay_beliefs, replay_jit, split_lanes
from metabelief.tasks.bandit_base import BetaBelief, observed_counts
from metabelief.tasks.base import BetaArms, TaskFamily, require_capability

# A policy: states ``[..., S]`` -> action probabilities ``[..., A]``.
Policy = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class SimulationMeasures(Record):
    """The four measures of one map in one direction, on the test lanes (see the module docstring);
    0 = the receiver in the mapped state is the source."""

    state_dissimilarity: float
    output_total_variation: float
    output_return_difference: float
    output_return_difference_greedy: float


@dataclasses.dataclass(frozen=True)
class MapMeasures(Record):
    """The measures of each kind of map, fitted in one direction: ridge regression and an MLP."""

    linear: SimulationMeasures
    mlp: SimulationMeasures


@dataclasses.dataclass(frozen=True)
class Simulation(Record):
    """The state-machine simulation of two agents: each direction (source -> receiver) and map.
    JSON: ``{direction: {map kind: {measure: float}}}`` with the names below."""

    agent_to_bayes: MapMeasures  # source = the network, receiver = the Bayes agent
    bayes_to_agent: MapMeasures  # source = the Bayes agent, receiver = the network


def _field_names(record: type) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(record))


DIRECTIONS = _field_names(Simulation)  # ("agent_to_bayes", "bayes_to_agent")
MAP_KINDS = _field_names(MapMeasures)  # ("linear", "mlp")
MEASURES = _field_names(SimulationMeasures)


def bayes_counts(family: TaskFamily, history: Trajectory) -> jax.Array:
    """The Bayes agent's state along ``history``: observed ``[successes (K), failures (K)]`` of each
    arm before each decision, ``float32[T, N, 2K]``, for a family with the ``BetaArms`` capability.

    The exact belief is replayed on the history (``metabelief.rollout.replay_beliefs``; any record
    with ``obs`` [T + 1, N, O], ``actions`` and ``rewards`` [T, N] will do) and read through
    ``beta_posterior``; the prior's pseudo-counts are subtracted.
    """
    require_capability("the state-machine simulation", family, BetaArms)
    return _bayes_counts(family, history.obs, history.actions, history.rewards)


@functools.partial(jax.jit, static_argnums=0)
def _bayes_counts(family: BetaArms, obs: jax.Array, actions: jax.Array, rewards: jax.Array) -> jax.Array:
    history = _History(obs=obs, actions=actions, rewards=rewards)
    posterior = jax.vmap(jax.vmap(family.beta_posterior))(replay_beliefs(family, history))
    return jnp.concatenate(observed_counts(posterior, family.prior_a, family.prior_b), axis=-1)


class _History(NamedTuple):
    """What ``replay_beliefs`` reads of a history."""

    obs: jax.Array
    actions: jax.Array
    rewards: jax.Array


def bayes_count_policy(family: TaskFamily, bayes: BayesOptimal) -> Policy:
    """The Bayes-optimal agent's policy on counts ``[..., 2K]`` (successes, then failures).

    Counts are first rounded to the nearest non-negative integers (a mapped state is real-valued),
    then looked up in the DP table: uniform over the optimal actions, ``float32[..., K]``.
    """
    return functools.partial(_bayes_action_probs, family, bayes)


def network_policy(agent: Agent, params: dict) -> Policy:
    """The agent's policy head on memory states ``[..., M]``: it reads the readout (the first
    ``H`` entries) only, as the network does (``softmax`` of the replay's logits on true states)."""

    def probs(states: jax.Array) -> jax.Array:
        return jax.nn.softmax(agent.heads(params, states[..., : agent.hidden_size])[0])

    return probs


def simulate(
    family: TaskFamily,
    agent: Agent,
    networks: dict[str, dict],
    history: Trajectory,
    bayes: BayesOptimal,
    split_sizes: tuple[int, int, int],
    *,
    key: jax.Array,
    mlp_steps: int = 1000,
) -> dict[str, Simulation]:
    """``simulate_states`` of each named network against the Bayes-optimal agent on ``history``.

    ``family`` needs the ``BetaArms`` capability (``metabelief.tasks.base``), whatever its class.
    Each network replays ``history`` (teacher forcing); its state is its memory, the Bayes
    agent's the posterior counts of the exact belief replayed on ``history`` (``bayes_counts``),
    the arms' means ``history.truth``; lanes are cut into ``split_sizes`` (train, validation, test).

    Returns ``{name: Simulation}`` (``Simulation.to_dict()`` is the JSON form, ``{direction:
    {"linear" | "mlp": {measure: float}}}`` over ``DIRECTIONS``, ``MAP_KINDS`` and ``MEASURES``).
    """
    counts = bayes_counts(family, history)  # [T, N, 2K]: the Bayes state
    report = {}
    for name, params in networks.items():
        replayed = replay_jit(family, agent, params, history)
        agent_states = replayed.memory  # [T, N, M]
        key, network_key = jax.random.split(key)
        report[name] = simulate_states(
            counts,
            bayes_count_policy(family, bayes),
            agent_states,
            network_policy(agent, params),
            history.truth,
            split_sizes,
            key=network_key,
            mlp_steps=mlp_steps,
        )
    return report


def simulate_states(
    bayes_counts: jax.Array,
    bayes_policy: Policy,
    agent_states: jax.Array,
    agent_policy: Policy,
    arm_means: jax.Array,
    split_sizes: Sequence[int],
    *,
    key: jax.Array,
    mlp_steps: int = 1000,
) -> Simulation:
    """The state-machine simulation of two agents given as states and policies (the array core).

    Args:
      bayes_counts: ``[T, N, 2K]``, the Bayes agent's state at each step of N episodes.
      bayes_policy: its policy, counts ``[..., 2K]`` -> action probabilities ``[..., A]``; it must
        accept real-valued (mapped) counts (``bayes_count_policy`` rounds them).
      agent_states: ``[T, N, S]``, the other agent's state on the same steps.
      agent_policy: its policy, states ``[..., S]`` -> action probabilities ``[..., A]``.
      arm_means: the arms' true success probabilities, ``[N, A]`` or ``[T, N, A]``.
      split_sizes: lanes (episodes) of the train, validation and test splits, in order.
      key: PRNG key of the MLP maps.
      mlp_steps: the MLP maps' training steps.

    Returns:
      A ``Simulation``: ``SimulationMeasures`` for each of ``DIRECTIONS`` and ``MAP_KINDS``, every
      figure on the test lanes (see the module docstring).
    """
    split_sizes = tuple(int(size) for size in split_sizes)
    num_steps, num_lanes = bayes_counts.shape[:2]
    if len(split_sizes) != 3 or sum(split_sizes) != num_lanes:
        raise ValueError(f"split_sizes must be 3 sizes adding up to the {num_lanes} lanes, got {split_sizes}")
    if agent_states.shape[:2] != (num_steps, num_lanes):
        raise ValueError(
            f"agent_states must be [T, N, S] = [{num_steps}, {num_lanes}, S] like bayes_counts, "
            f"got {agent_states.shape}"
        )
    arm_means = jnp.asarray(arm_means, jnp.float32)
    if arm_means.ndim == 2:
        arm_means = jnp.broadcast_to(arm_means, (num_steps, *arm_means.shape))
    if arm_means.shape[:2] != (num_steps, num_lanes):
        raise ValueError(f"arm_means must be [N, A] or [T, N, A] with N = {num_lanes}, got {arm_means.shape}")
    test_means = split_lanes(arm_means, split_sizes)[2]
    agents = {"bayes": (bayes_counts, bayes_policy), "agent": (agent_states, agent_policy)}
    directions = {}
    for direction, map_key in zip(DIRECTIONS, jax.random.split(key, len(DIRECTIONS)), strict=True):
        source, receiver = direction.split("_to_")
        source_states, source_policy = agents[source]
        receiver_states, receiver_policy = agents[receiver]
        source_splits = split_lanes(source_states, split_sizes)
        receiver_splits = split_lanes(receiver_states, split_sizes)
        inputs = [_flat(part) for part in source_splits]
        targets = [_flat(part) for part in receiver_splits]
        source_probs = source_policy(source_splits[2])  # what the source actually does: [T, n, A]
        mapped = {
            "linear": _linear_map(inputs, targets),
            "mlp": _mlp_map(map_key, inputs, targets, mlp_steps),
        }
        measures = {}
        for kind, predicted in mapped.items():
            # What the receiver does when put in the mapped state.
            receiver_probs = receiver_policy(predicted.reshape(receiver_splits[2].shape))
            measures[kind] = SimulationMeasures(
                state_dissimilarity=_normalised_mse(predicted, targets[2]),
                **output_dissimilarities(source_probs, receiver_probs, test_means),
            )
        directions[direction] = MapMeasures(**measures)
    return Simulation(**directions)


def output_dissimilarities(source_probs: jax.Array, receiver_probs: jax.Array, arm_means: jax.Array) -> dict:
    """The output measures of the module docstring, from the source's action probabilities at its
    true states and the receiver's at the mapped states (``[T, N, A]`` each; ``arm_means``
    ``[T, N, A]`` or ``[N, A]``): ``output_total_variation``, ``output_return_difference`` and
    ``output_return_difference_greedy``, as floats (the ``SimulationMeasures`` fields but the
    state's)."""
    num_actions = source_probs.shape[-1]
    greedy = lambda probs: jax.nn.one_hot(jnp.argmax(probs, axis=-1), num_actions)  # noqa: E731
    return {
        "output_total_variation": float(0.5 * jnp.abs(source_probs - receiver_probs).sum(-1).mean()),
        "output_return_difference": return_difference(source_probs, receiver_probs, arm_means),
        "output_return_difference_greedy": return_difference(
            greedy(source_probs), greedy(receiver_probs), arm_means
        ),
    }


def return_difference(source_probs: jax.Array, receiver_probs: jax.Array, arm_means: jax.Array) -> float:
    """Kuo et al.'s expected-return difference: mean over episodes of ``|sum_t sum_a (source(a) -
    receiver(a)) p_a|`` for action distributions ``[T, N, A]`` (one-hot: their sampled actions)
    and arm success probabilities ``p`` ``[T, N, A]`` or ``[N, A]``."""
    per_step = ((source_probs - receiver_probs) * arm_means).sum(-1)  # [T, N]
    return float(jnp.abs(per_step.sum(0)).mean())


@functools.partial(jax.jit, static_argnums=(0, 1))
def _bayes_action_probs(family: BetaArms, bayes: BayesOptimal, counts: jax.Array) -> jax.Array:
    """The Bayes-optimal policy's action probabilities at counts ``[..., 2K]``, rounded to the
    nearest non-negative integers."""
    num_arms = family.num_arms
    counts = jnp.maximum(jnp.round(counts), 0.0)
    posteriors = BetaBelief(
        alpha=counts[..., :num_arms] + family.prior_a,
        beta=counts[..., num_arms:] + family.prior_b,
    )
    flat = jax.tree.map(lambda leaf: leaf.reshape(-1, num_arms), posteriors)
    probs = jax.vmap(bayes.action_probs_at)(flat)
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


def _flat(array: jax.Array) -> jax.Array:
    return array.reshape(-1, array.shape[-1])
