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

The histories. Both agents read the same histories, and the maps are fitted and scored on them.
``simulate`` takes them by name: the experiments give ``"agent"`` (the trained network's own
held-out rollout) and ``"bayes"`` (the Bayes-optimal DP's rollout on the same tasks: Kuo et al.
fit and test on these, ``gen_ref_trajectories_by_bayes`` -> ``..._bayes_sampled`` in their
``sms.py``; the network's own rollout favours the network, whose states then lie where it goes).
The recurrent agent's state is its whole memory (``agent.memory``: the LSTM's ``[hidden, cell]``,
a GRU's ``hidden``) and its policy is its policy head on the readout (``agent.heads``); the
Bayes-optimal agent's state is the exact posterior of a family with the ``BetaArms`` capability
(``metabelief.tasks.base``; built in: ``bernoulli_bandit``) as counts (successes and failures of
each arm, ``bayes_counts``: ``beta_posterior`` of the replayed belief minus the prior) and its
policy is the DP's (``BayesOptimal.action_probs_at``: uniform over the optimal actions).

The Bayes agents. The network maximises the ``gamma``-discounted return it was trained on (0.9 by
default); the Bayes-optimal agent of the README is the undiscounted DP. Each Bayes agent is scored
(``BAYES_AGENTS``: ``"undiscounted"``, ``"training_gamma"``: the DP at the training ``gamma``,
``metabelief.baselines.bayes_optimal(family, gamma)``) on the same maps, and ``Simulation.gamma``
records the discount of each. Returns are undiscounted totals over the episode in every case.

Maps are fitted both ways (ridge regression from streaming statistics, and an MLP) on the training
lanes (tasks), chosen on the validation lanes and scored on the held-out test lanes. In each
direction (``agent_to_bayes``: source = network, receiver = Bayes agent; ``bayes_to_agent``:
source = Bayes agent, receiver = network) and for each map:

* ``state_dissimilarity``: the mapped state's squared error to the receiver's true state, per
  dimension divided by that dimension's variance and averaged over the dimensions that vary
  (``1 - R^2``; 0 = the map is exact, 1 = no better than the mean).
* ``state_dissimilarity_uncentred``: Kuo et al.'s ``get_state_dissimilarity``, the summed squared
  error over the summed squared norm of the true states, ``sum ||mapped - true||^2 / sum
  ||true||^2`` over test steps (uncentred: a state far from 0 makes any error look small, and
  predicting 0 scores 1); reported so that figures compare with theirs.
* ``output.<Bayes agent>``: three output measures, each the source's action probabilities at its
  true states against the receiver's at the mapped states:

  - ``total_variation``: mean over test steps of ``0.5 sum_a |pi_source(a) - pi_receiver(a)|``
    (0 = B acts exactly as A did, 1 = disjoint actions);
  - ``return_difference``: Kuo et al.'s output dissimilarity for the Bernoulli bandit, the
    expected-return difference per episode: mean over test episodes of ``|sum_t sum_a
    (pi_source(a) - pi_receiver(a)) p_a|``, p the task's true arm success probabilities (Kuo et
    al. use one action per step on each side; here each side's expected reward under its action
    distribution, so the measure has no sampling noise);
  - ``return_difference_greedy``: the same with each policy's greedy action (argmax, as a
    one-hot; ties go to the lowest arm) in place of its distribution, as Kuo et al.'s Bayes agent
    acts by argmax (of Gittins indices).

  Each is an ``OutputMeasure``: ``mapped`` (the figure above), ``floor`` (the same measure
  between the two agents each at its own true state: what a perfect map scores, since the
  network's softmax policy is not the DP's deterministic one even where their states agree; the
  same in both directions), ``excess`` (``mapped - floor``: what the map loses), ``random`` (the
  same measure between the Bayes agent at its true states and a uniformly random policy; for the
  greedy return difference the Bayes agent's greedy action against the random policy: the
  Bayes-optimal minus random return gap in Kuo et al.'s per-episode form) and ``normalised``
  (``mapped / random``: 0 = the receiver acts as the source, 1 = no closer than a random policy
  is to the Bayes agent; null when ``random`` is 0).

The Bayes agent at a mapped state reads the mapped counts rounded to the nearest non-negative
integers (``bayes_count_policy``); counts past the horizon make it greedy on the posterior mean.
``simulate_states`` is the array core (any two agents given as states and policy functions);
``simulate`` runs it on a family, a recurrent agent's networks and recorded histories.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metabelief import probes
from metabelief.agents.base import Agent
from metabelief.analysis.records import Record
from metabelief.baselines.bayes_optimal import BayesOptimal, bayes_optimal
from metabelief.rollout import Trajectory, replay_beliefs, replay_jit, sample_rows, split_lanes
from metabelief.tasks.bandit_base import BetaBelief, observed_counts
from metabelief.tasks.base import BetaArms, TaskFamily, require_capability

# A policy: states ``[..., S]`` -> action probabilities ``[..., A]``.
Policy = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class OutputMeasure(Record):
    """One output measure of one map (see the module docstring): the receiver at the mapped state
    against the source, its floor (each agent at its own true state), the excess over the floor,
    the random policy's figure and the mapped figure in units of it."""

    mapped: float
    floor: float
    excess: float  # mapped - floor
    random: float  # the Bayes agent against a uniformly random policy
    normalised: float  # mapped / random: 1 = no better than random (NaN when random is 0)


@dataclasses.dataclass(frozen=True)
class OutputMeasures(Record):
    """The three output measures of one map and one Bayes agent."""

    total_variation: OutputMeasure
    return_difference: OutputMeasure
    return_difference_greedy: OutputMeasure


@dataclasses.dataclass(frozen=True)
class SimulationMeasures(Record):
    """The measures of one map in one direction, on the test lanes (see the module docstring);
    0 = the receiver in the mapped state is the source. ``output`` by Bayes agent."""

    state_dissimilarity: float
    state_dissimilarity_uncentred: float  # Kuo et al.'s
    output: dict[str, OutputMeasures]


@dataclasses.dataclass(frozen=True)
class MapMeasures(Record):
    """The measures of each kind of map, fitted in one direction: ridge regression and an MLP."""

    linear: SimulationMeasures
    mlp: SimulationMeasures


@dataclasses.dataclass(frozen=True)
class Simulation(Record):
    """The state-machine simulation of two agents on one set of histories: each direction (source
    -> receiver) and map. JSON: ``{"gamma": {Bayes agent: its DP's discount}, direction: {map kind:
    {measure: ...}}}`` with the names below."""

    gamma: dict[str, float | None]  # the discount of each Bayes agent's DP (None: not a DP)
    agent_to_bayes: MapMeasures  # source = the network, receiver = the Bayes agent
    bayes_to_agent: MapMeasures  # source = the Bayes agent, receiver = the network


def _field_names(record: type) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(record))


DIRECTIONS = ("agent_to_bayes", "bayes_to_agent")
MAP_KINDS = _field_names(MapMeasures)  # ("linear", "mlp")
MEASURES = _field_names(SimulationMeasures)  # the two state dissimilarities, then "output"
OUTPUT_MEASURES = _field_names(OutputMeasures)
FIGURES = _field_names(OutputMeasure)  # of each output measure
BAYES_AGENTS = ("undiscounted", "training_gamma")
HISTORIES = ("agent", "bayes")  # the experiments' names of the histories: who played them


def bayes_agents(family: TaskFamily, training_gamma: float) -> dict[str, BayesOptimal]:
    """``BAYES_AGENTS``: the undiscounted Bayes-optimal DP of ``family`` and the DP at the
    network's training discount ``training_gamma``."""
    return {"undiscounted": bayes_optimal(family), "training_gamma": bayes_optimal(family, training_gamma)}


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


@dataclasses.dataclass(frozen=True)
class CountPolicy:
    """The Bayes-optimal agent's policy on counts ``[..., 2K]`` (successes, then failures): the
    counts rounded to the nearest non-negative integers (a mapped state is real-valued), then looked
    up in the DP table: uniform over the optimal actions, ``float32[..., K]``."""

    family: BetaArms
    bayes: BayesOptimal

    @property
    def gamma(self) -> float:
        """The discount of the DP this policy reads."""
        return self.bayes.gamma

    def __call__(self, counts: jax.Array) -> jax.Array:
        return _bayes_action_probs(self.family, self.bayes, counts)


def bayes_count_policy(family: TaskFamily, bayes: BayesOptimal) -> CountPolicy:
    """The Bayes-optimal agent's policy on counts (``CountPolicy``)."""
    return CountPolicy(family, bayes)


def network_policy(agent: Agent, params: dict) -> Policy:
    """The agent's policy head on memory states ``[..., M]``: it reads the readout (the first
    ``H`` entries) only, as the network does (``softmax`` of the replay's logits on true states)."""

    def probs(states: jax.Array) -> jax.Array:
        return jax.nn.softmax(agent.heads(params, states[..., : agent.hidden_size])[0])

    return probs


def simulate(
    family: TaskFamily,
    agent: Agent,
    networks: Mapping[str, dict],
    histories: Mapping[str, Trajectory],
    bayes: Mapping[str, BayesOptimal],
    split_sizes: tuple[int, int, int],
    *,
    key: jax.Array,
    mlp_steps: int = 1000,
) -> dict[str, dict[str, Simulation]]:
    """``simulate_states`` of each named network against the Bayes-optimal agents on each history.

    ``family`` needs the ``BetaArms`` capability (``metabelief.tasks.base``), whatever its class.
    Each network replays each history (teacher forcing); its state is its memory, the Bayes
    agent's the posterior counts of the exact belief replayed on the history (``bayes_counts``),
    the arms' means ``history.truth``; lanes are cut into ``split_sizes`` (train, validation, test).

    Args:
      histories: recorded histories by name, e.g. ``{"agent": the network's own rollout, "bayes":
        baselines.run_policy(family, bayes["undiscounted"], key, tasks)}`` (``HISTORIES``).
      bayes: the Bayes-optimal agents by name (``bayes_agents``: the undiscounted DP and the DP
        at the training discount).

    Returns ``{network: {histories: Simulation}}``; each network and history in turn gets a key of
    its own. ``Simulation.to_dict()`` is the JSON form (the module docstring).
    """
    require_capability("the state-machine simulation", family, BetaArms)
    if not histories or not bayes:
        raise ValueError(
            f"histories and bayes must each name at least one, got {list(histories)}, {list(bayes)}"
        )
    policies = {name: bayes_count_policy(family, agent_of) for name, agent_of in bayes.items()}
    counts = {name: bayes_counts(family, history) for name, history in histories.items()}  # [T, N, 2K]
    report = {}
    for network, params in networks.items():
        report[network] = {}
        for name, history in histories.items():
            agent_states = replay_jit(family, agent, params, history).memory  # [T, N, M]
            key, simulation_key = jax.random.split(key)
            report[network][name] = simulate_states(
                counts[name],
                policies,
                agent_states,
                network_policy(agent, params),
                history.truth,
                split_sizes,
                key=simulation_key,
                mlp_steps=mlp_steps,
            )
    return report


def simulate_states(
    bayes_counts: jax.Array,
    bayes_policies: Mapping[str, Policy],
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
      bayes_policies: its policies by name, counts ``[..., 2K]`` -> action probabilities
        ``[..., A]``; each must accept real-valued (mapped) counts (``CountPolicy`` rounds them);
        a policy's ``gamma`` attribute, if any, is recorded.
      agent_states: ``[T, N, S]``, the other agent's state on the same steps.
      agent_policy: its policy, states ``[..., S]`` -> action probabilities ``[..., A]``.
      arm_means: the arms' true success probabilities, ``[N, A]`` or ``[T, N, A]``.
      split_sizes: lanes (episodes) of the train, validation and test splits, in order.
      key: PRNG key of the MLP maps.
      mlp_steps: the MLP maps' training steps.

    Returns:
      A ``Simulation``: ``SimulationMeasures`` for each of ``DIRECTIONS`` and ``MAP_KINDS`` (the
      output measures for each Bayes policy), every figure on the test lanes (the module docstring).
    """
    split_sizes = tuple(int(size) for size in split_sizes)
    num_steps, num_lanes = bayes_counts.shape[:2]
    if len(split_sizes) != 3 or sum(split_sizes) != num_lanes:
        raise ValueError(f"split_sizes must be 3 sizes adding up to the {num_lanes} lanes, got {split_sizes}")
    if not bayes_policies:
        raise ValueError("bayes_policies must name at least one policy, got none")
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
    states = {"bayes": bayes_counts, "agent": agent_states}
    splits = {name: split_lanes(value, split_sizes) for name, value in states.items()}

    def probs(who: str, bayes_name: str, states: jax.Array) -> jax.Array:
        return bayes_policies[bayes_name](states) if who == "bayes" else agent_policy(states)

    # Each agent at its own true test states: the floor, and the Bayes agent against random.
    unmapped = {
        name: (probs("agent", name, splits["agent"][2]), probs("bayes", name, splits["bayes"][2]))
        for name in bayes_policies
    }
    floors = {name: output_dissimilarities(*pair, test_means) for name, pair in unmapped.items()}
    randoms = {name: random_policy_dissimilarities(pair[1], test_means) for name, pair in unmapped.items()}
    directions = {}
    for direction, map_key in zip(DIRECTIONS, jax.random.split(key, len(DIRECTIONS)), strict=True):
        source, receiver = direction.split("_to_")
        inputs = [sample_rows(part) for part in splits[source]]
        targets = [sample_rows(part) for part in splits[receiver]]
        mapped = {
            "linear": _linear_map(inputs, targets),
            "mlp": _mlp_map(map_key, inputs, targets, mlp_steps),
        }
        measures = {}
        for kind, predicted in mapped.items():
            predicted_states = predicted.reshape(splits[receiver][2].shape)
            output = {}
            for name in bayes_policies:
                # What the source does at its true state against the receiver in the mapped state.
                figures = output_dissimilarities(
                    probs(source, name, splits[source][2]),
                    probs(receiver, name, predicted_states),
                    test_means,
                )
                output[name] = _output_measures(figures, floors[name], randoms[name])
            measures[kind] = SimulationMeasures(
                state_dissimilarity=_normalised_mse(predicted, targets[2]),
                state_dissimilarity_uncentred=_uncentred_mse(predicted, targets[2]),
                output=output,
            )
        directions[direction] = MapMeasures(**measures)
    gamma = {name: getattr(policy, "gamma", None) for name, policy in bayes_policies.items()}
    return Simulation(gamma=gamma, **directions)


def output_dissimilarities(source_probs: jax.Array, receiver_probs: jax.Array, arm_means: jax.Array) -> dict:
    """The three output measures (``OUTPUT_MEASURES``) between two policies' action probabilities
    ``[T, N, A]`` each (``arm_means`` ``[T, N, A]`` or ``[N, A]``), as floats: ``total_variation``,
    ``return_difference`` and ``return_difference_greedy`` (the module docstring)."""
    return {
        "total_variation": float(0.5 * jnp.abs(source_probs - receiver_probs).sum(-1).mean()),
        "return_difference": return_difference(source_probs, receiver_probs, arm_means),
        "return_difference_greedy": return_difference(
            _greedy(source_probs), _greedy(receiver_probs), arm_means
        ),
    }


def random_policy_dissimilarities(bayes_probs: jax.Array, arm_means: jax.Array) -> dict:
    """The three output measures between the Bayes agent (``[T, N, A]``) and a uniformly random
    policy: the scale ``OutputMeasure.normalised`` divides by. The greedy return difference compares
    the Bayes agent's greedy action with the random policy (the uniform distribution, not its
    argmax)."""
    uniform = jnp.full(bayes_probs.shape, 1.0 / bayes_probs.shape[-1])
    return {
        "total_variation": float(0.5 * jnp.abs(bayes_probs - uniform).sum(-1).mean()),
        "return_difference": return_difference(bayes_probs, uniform, arm_means),
        "return_difference_greedy": return_difference(_greedy(bayes_probs), uniform, arm_means),
    }


def return_difference(source_probs: jax.Array, receiver_probs: jax.Array, arm_means: jax.Array) -> float:
    """Kuo et al.'s expected-return difference: mean over episodes of ``|sum_t sum_a (source(a) -
    receiver(a)) p_a|`` for action distributions ``[T, N, A]`` (one-hot: their sampled actions)
    and arm success probabilities ``p`` ``[T, N, A]`` or ``[N, A]``."""
    per_step = ((source_probs - receiver_probs) * arm_means).sum(-1)  # [T, N]
    return float(jnp.abs(per_step.sum(0)).mean())


def _greedy(probs: jax.Array) -> jax.Array:
    """Each step's most probable action as a one-hot (ties: the lowest)."""
    return jax.nn.one_hot(jnp.argmax(probs, axis=-1), probs.shape[-1])


def _output_measures(mapped: dict, floor: dict, random: dict) -> OutputMeasures:
    """``OutputMeasures`` from the mapped, floor and random figures of each output measure."""

    def measure(name: str) -> OutputMeasure:
        normalised = mapped[name] / random[name] if random[name] > 0 else math.nan
        return OutputMeasure(
            mapped=mapped[name],
            floor=floor[name],
            excess=mapped[name] - floor[name],
            random=random[name],
            normalised=normalised,
        )

    return OutputMeasures(**{name: measure(name) for name in OUTPUT_MEASURES})


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


def _uncentred_mse(predicted: jax.Array, target: jax.Array) -> float:
    """Kuo et al.'s normalised state-mapping MSE: ``sum ||target - predicted||^2 / sum ||target||^2``
    over the rows (``get_state_dissimilarity``); NaN for an all-zero target."""
    norm = float((target**2).sum())
    return float(((predicted - target) ** 2).sum()) / norm if norm > 0 else math.nan
