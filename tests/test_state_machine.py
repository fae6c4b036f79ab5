"""The state-machine simulation: the Bayes state (posterior counts of the replayed belief), the
dissimilarity measures on hand-built states with known answers, and a run on a network."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief.analysis.state_machine import bayes_counts
from metabelief.testing import random_rollout, sample_tasks


def test_bayes_counts_equal_float64_counts_of_the_history():
    family = metabelief.make("bernoulli_bandit", num_arms=3, horizon=30, prior_a=2.0, prior_b=0.5)
    tasks = sample_tasks(family, jax.random.key(0), 64)
    history = jax.jit(random_rollout, static_argnames=("family", "num_steps"))(
        family, jax.random.key(1), tasks, num_steps=30
    )
    counts = np.asarray(bayes_counts(family, history))  # [T, N, 6]: before each decision
    assert counts.shape == (30, 64, 6)
    actions, rewards = np.asarray(history.actions), np.asarray(history.rewards, np.float64)
    successes, failures = np.zeros((64, 3)), np.zeros((64, 3))
    for t in range(30):
        # Exact: integers plus a prior of 2 and 0.5 are exact in float32.
        np.testing.assert_array_equal(counts[t], np.concatenate([successes, failures], axis=1))
        lanes = np.arange(64)
        successes[lanes, actions[t]] += rewards[t]
        failures[lanes, actions[t]] += 1.0 - rewards[t]


def test_bayes_counts_need_beta_arms():
    family = metabelief.make("dependent_bandit", horizon=5)
    history = random_rollout(family, jax.random.key(0), sample_tasks(family, jax.random.key(1), 4), 5)
    with pytest.raises(ValueError, match="the state-machine simulation needs a family with the BetaArms"):
        bayes_counts(family, history)


# ---------------------------------------------------------------------------------------------
# The state dissimilarity on hand-built states with known answers


def _splits(rng, num_rows: int, width: int):
    return [jnp.asarray(rng.standard_normal((num_rows, width)), jnp.float32) for _ in range(3)]


def test_state_dissimilarity_is_zero_for_an_exact_linear_map_and_one_for_the_mean():
    from metabelief.analysis.state_machine import _linear_map, _normalised_mse

    rng = np.random.default_rng(0)
    sources = _splits(rng, 400, 6)
    weights = jnp.asarray(rng.standard_normal((6, 3)), jnp.float32)
    targets = [x @ weights + 2.0 for x in sources]  # an exact affine function of the source state
    assert _normalised_mse(_linear_map(sources, targets), targets[2]) < 1e-6
    # Predicting each dimension's mean scores 1 (the MSE of the mean is the variance); a constant
    # dimension is left out rather than divided by zero.
    test = jnp.concatenate([targets[2], jnp.ones((400, 1))], axis=-1)
    assert _normalised_mse(jnp.broadcast_to(test.mean(axis=0), test.shape), test) == pytest.approx(
        1.0, abs=1e-5
    )
    # A source that carries nothing about the target cannot be mapped onto it: about 1.
    noise = _splits(rng, 400, 6)
    assert _normalised_mse(_linear_map(noise, targets), targets[2]) == pytest.approx(1.0, abs=0.1)


def test_state_dissimilarity_of_half_the_target_is_its_unexplained_share():
    from metabelief.analysis.state_machine import _linear_map, _normalised_mse

    rng = np.random.default_rng(1)
    known, hidden = _splits(rng, 2000, 1), _splits(rng, 2000, 1)
    targets = [k + h for k, h in zip(known, hidden, strict=True)]  # variance 2, half of it visible
    assert _normalised_mse(_linear_map(known, targets), targets[2]) == pytest.approx(0.5, abs=0.05)


# ---------------------------------------------------------------------------------------------
# Output dissimilarities (Mikulik et al. 2020; Kuo et al. 2025's utils/state_machine_analysis.py):
# the SOURCE agent's actual outputs vs the RECEIVING agent's from the mapped state.

NUM_STEPS, SPLITS = 12, (48, 24, 24)
MEASURES = {"state_dissimilarity", "state_dissimilarity_uncentred", "output"}
OUTPUTS = ("total_variation", "return_difference", "return_difference_greedy")


@pytest.fixture(scope="module")
def bandit():
    """A 2-armed bandit's random-action histories: the Bayes state (counts), its policy, the arm means."""
    from metabelief.analysis.state_machine import bayes_count_policy

    family = metabelief.make("bernoulli_bandit", num_arms=2, horizon=NUM_STEPS)
    bayes = metabelief.baselines.bayes_optimal(family)
    tasks = sample_tasks(family, jax.random.key(0), sum(SPLITS))
    history = jax.jit(random_rollout, static_argnames=("family", "num_steps"))(
        family, jax.random.key(1), tasks, num_steps=NUM_STEPS
    )
    counts = bayes_counts(family, history)  # [T, N, 4]
    # The Bayes agent's action probabilities at the true counts, straight from BayesOptimal.
    beliefs = metabelief.tasks.bandit_base.BetaBelief(
        alpha=counts[..., :2].reshape(-1, 2) + family.prior_a,
        beta=counts[..., 2:].reshape(-1, 2) + family.prior_b,
    )
    probs = np.asarray(jax.vmap(bayes.action_probs)(beliefs)).reshape(NUM_STEPS, -1, 2)
    return {
        "counts": counts,
        "policy": bayes_count_policy(family, bayes),
        "means": history.truth[:NUM_STEPS],  # [T, N, 2]: the arms' success probabilities
        "probs": probs,
    }


def _simulate(bandit, agent_states, agent_policy, mlp_steps=100):
    from metabelief.analysis.state_machine import simulate_states

    return simulate_states(
        bandit["counts"],
        {"undiscounted": bandit["policy"]},
        agent_states,
        agent_policy,
        bandit["means"],
        SPLITS,
        key=jax.random.key(2),
        mlp_steps=mlp_steps,
    )


def _outputs(measures: dict, figure: str = "mapped") -> dict:
    """``{output measure: figure}`` of one map's JSON measures, for the DP ``"undiscounted"``."""
    return {name: measures["output"]["undiscounted"][name][figure] for name in OUTPUTS}


def _embedding(rng, width: int = 6):
    """An injective affine map of the counts [.., 4] into [.., width] and its inverse."""
    weights = rng.standard_normal((4, width)).astype(np.float32)
    offset = rng.standard_normal(width).astype(np.float32)
    inverse = np.linalg.pinv(weights).astype(np.float32)
    return (lambda counts: counts @ weights + offset), (lambda states: (states - offset) @ inverse)


def _test_lanes(array):
    return np.asarray(array)[:, SPLITS[0] + SPLITS[1] :]


def _numpy_return_difference(source, receiver, means):
    """Kuo et al.'s measure, written out: per episode |sum_t (E_source[p] - E_receiver[p])|, averaged."""
    differences = np.zeros(source.shape[1])
    for n in range(source.shape[1]):
        for t in range(source.shape[0]):
            differences[n] += np.dot(source[t, n], means[t, n]) - np.dot(receiver[t, n], means[t, n])
    return np.abs(differences).mean()


def test_the_bayes_policy_reads_mapped_counts_as_the_nearest_valid_counts(bandit):
    """A mapped (real-valued) state is rounded to the nearest non-negative integer counts."""
    counts, policy = bandit["counts"], bandit["policy"]
    np.testing.assert_array_equal(policy(counts), bandit["probs"])
    noise = jax.random.uniform(jax.random.key(11), counts.shape, minval=-0.45, maxval=0.45)
    np.testing.assert_array_equal(policy(counts + noise), bandit["probs"])
    # Negative counts are none: arm 1 never pulled, whatever the map says.
    lanes = counts[5, :4].at[:, 1].set(0.0).at[:, 3].set(0.0)  # [4, 4]: counts of arm 0 only
    np.testing.assert_array_equal(policy(lanes.at[:, 3].set(-3.0)), policy(lanes))
    np.testing.assert_array_equal(policy(lanes.at[:, 1].set(-2.0)), policy(lanes))


def test_the_bayes_agent_simulates_itself_exactly(bandit):
    report = _simulate(bandit, bandit["counts"], bandit["policy"]).to_dict()
    assert set(report) == {"gamma", "agent_to_bayes", "bayes_to_agent"}
    assert report["gamma"] == {"undiscounted": 1.0}  # the DP's discount, read from its policy
    for direction in (report["agent_to_bayes"], report["bayes_to_agent"]):
        assert set(direction) == {"linear", "mlp"}
        assert set(direction["linear"]) == set(direction["mlp"]) == MEASURES
        linear = direction["linear"]
        assert linear["state_dissimilarity"] < 1e-6
        assert linear["state_dissimilarity_uncentred"] < 1e-6
        for figure in ("mapped", "floor", "excess", "normalised"):
            assert _outputs(linear, figure) == dict.fromkeys(OUTPUTS, 0.0), figure
        # A short-trained MLP is nearly exact; rounding to counts absorbs most of its error.
        assert direction["mlp"]["state_dissimilarity"] < 0.05
        assert _outputs(direction["mlp"])["total_variation"] < 0.02


def test_a_uniform_agent_with_the_bayes_state_differs_by_the_bayes_policys_certainty(bandit):
    """Its state is an exact linear function of the counts, so both maps are exact, yet it acts
    uniformly: the simulation's outputs differ wherever the Bayes agent prefers an arm (and the
    receiver compared with itself would have scored 0)."""
    embed, _ = _embedding(np.random.default_rng(3))
    uniform = lambda states: jnp.full((*states.shape[:-1], 2), 0.5)  # noqa: E731
    report = _simulate(bandit, embed(bandit["counts"]), uniform).to_dict()

    bayes, means = _test_lanes(bandit["probs"]), _test_lanes(bandit["means"])
    decided = np.abs(bayes[..., 0] - 0.5) > 0.25  # ties (e.g. every t = 0) are uniform too
    assert 0.5 < decided.mean() < 1.0
    total_variation = 0.5 * decided.mean()  # 0.5 on every step where the Bayes agent decides
    returns = _numpy_return_difference(bayes, np.full_like(bayes, 0.5), means)
    # Greedy: the Bayes agent's first optimal arm vs the uniform policy's argmax, arm 0.
    lanes = np.arange(bayes.shape[1])
    greedy = np.mean(
        [
            np.abs(sum(means[t, n, bayes[t, n].argmax()] - means[t, n, 0] for t in range(NUM_STEPS)))
            for n in lanes
        ]
    )
    assert returns > 0.1 and greedy > 0.1
    for name in ("agent_to_bayes", "bayes_to_agent"):
        linear = report[name]["linear"]
        assert linear["state_dissimilarity"] < 1e-5, name
        outputs = _outputs(linear)
        assert outputs["total_variation"] == pytest.approx(total_variation, abs=1e-6), name
        assert outputs["return_difference"] == pytest.approx(returns, rel=1e-5), name
        assert outputs["return_difference_greedy"] == pytest.approx(greedy, rel=1e-5), name
        # The map is exact, so the mapped figures are the floor's: no excess. And the uniform
        # agent IS the random policy: 1 in units of the Bayes agent's difference from random.
        assert _outputs(linear, "floor") == pytest.approx(outputs, rel=1e-5, abs=1e-6), name
        assert _outputs(linear, "excess") == pytest.approx(dict.fromkeys(OUTPUTS, 0.0), abs=1e-5), name
        normalised = _outputs(linear, "normalised")
        assert normalised["total_variation"] == pytest.approx(1.0, rel=1e-5), name
        assert normalised["return_difference"] == pytest.approx(1.0, rel=1e-5), name


def test_an_agent_acting_bayes_optimally_on_its_decoded_state_simulates_the_bayes_agent(bandit):
    embed, decode = _embedding(np.random.default_rng(4))
    policy = lambda states: bandit["policy"](decode(states))  # noqa: E731
    report = _simulate(bandit, embed(bandit["counts"]), policy).to_dict()
    for name in ("agent_to_bayes", "bayes_to_agent"):
        linear = report[name]["linear"]
        assert linear["state_dissimilarity"] == pytest.approx(0.0, abs=1e-5), name
        assert linear["state_dissimilarity_uncentred"] == pytest.approx(0.0, abs=1e-5), name
        for figure in ("mapped", "floor", "excess", "normalised"):
            assert _outputs(linear, figure) == pytest.approx(dict.fromkeys(OUTPUTS, 0.0), abs=1e-5), name


def test_directions_map_from_the_source_onto_the_receiver(bandit):
    """An agent that keeps only each arm's successes: its state is a function of the Bayes state
    (Bayes -> agent exact) but not the other way (agent -> Bayes loses the failures)."""
    rng = np.random.default_rng(5)
    weights = jnp.asarray(rng.standard_normal((2, 3)), jnp.float32)
    uniform = lambda states: jnp.full((*states.shape[:-1], 2), 0.5)  # noqa: E731
    report = _simulate(bandit, bandit["counts"][..., :2] @ weights, uniform)
    assert report.bayes_to_agent.linear.state_dissimilarity < 1e-5
    assert report.agent_to_bayes.linear.state_dissimilarity > 0.1
    # Bayes -> agent: the source is the Bayes agent at its true counts, the receiver uniform.
    bayes = _test_lanes(bandit["probs"])
    expected = 0.5 * np.abs(bayes - 0.5).sum(-1).mean()
    total_variation = report.bayes_to_agent.linear.output["undiscounted"].total_variation
    assert total_variation.mapped == pytest.approx(expected, abs=1e-6)


def test_return_difference_is_kuos_expected_return_difference_per_episode():
    from metabelief.analysis.state_machine import output_dissimilarities, return_difference

    rng = np.random.default_rng(6)
    num_steps, num_episodes, num_arms = 9, 13, 3
    means = rng.uniform(size=(num_episodes, num_arms)).astype(np.float32)
    # Kuo et al.'s get_output_dissimilarity: one action per step on each side.
    true_actions = rng.integers(num_arms, size=(num_steps, num_episodes))
    mapped_actions = rng.integers(num_arms, size=(num_steps, num_episodes))
    kuo = np.mean(
        [
            np.abs(np.sum(means[n][true_actions[:, n]] - means[n][mapped_actions[:, n]]))
            for n in range(num_episodes)
        ]
    )
    one_hot = lambda actions: jax.nn.one_hot(actions, num_arms)  # noqa: E731
    assert return_difference(one_hot(true_actions), one_hot(mapped_actions), means) == pytest.approx(
        kuo, rel=1e-5
    )
    # Action distributions: the expected reward of each, per step; the means may vary in time.
    source = rng.dirichlet(np.ones(num_arms), size=(num_steps, num_episodes)).astype(np.float32)
    receiver = rng.dirichlet(np.ones(num_arms), size=(num_steps, num_episodes)).astype(np.float32)
    varying = rng.uniform(size=(num_steps, num_episodes, num_arms)).astype(np.float32)
    measures = output_dissimilarities(jnp.asarray(source), jnp.asarray(receiver), jnp.asarray(varying))
    assert measures["return_difference"] == pytest.approx(
        _numpy_return_difference(source, receiver, varying), rel=1e-5
    )
    assert measures["total_variation"] == pytest.approx(
        0.5 * np.abs(source - receiver).sum(-1).mean(), rel=1e-5
    )
    assert measures["return_difference_greedy"] == pytest.approx(
        _numpy_return_difference(
            np.eye(num_arms)[source.argmax(-1)], np.eye(num_arms)[receiver.argmax(-1)], varying
        ),
        rel=1e-5,
    )


def test_simulate_on_an_untrained_network():
    from metabelief.agents import agent_for
    from metabelief.analysis.state_machine import network_policy, simulate
    from metabelief.rollout import replay_jit, rollout

    family = metabelief.make("bernoulli_bandit", num_arms=2, horizon=NUM_STEPS)
    bayes = metabelief.baselines.bayes_optimal(family)
    agent = agent_for(family, hidden_size=8)
    params = agent.init(jax.random.key(7))
    tasks = sample_tasks(family, jax.random.key(8), sum(SPLITS))
    history = jax.jit(rollout, static_argnums=(0, 1))(family, agent, params, jax.random.key(9), tasks)
    # The policy of the network's memory ([hidden, cell]) is the network's own.
    replayed = replay_jit(family, agent, params, history)
    states = replayed.memory
    np.testing.assert_allclose(
        network_policy(agent, params)(states), jax.nn.softmax(replayed.logits), atol=1e-6
    )

    report = simulate(
        family,
        agent,
        {"untrained": params},
        {"agent": history},
        {"undiscounted": bayes},
        SPLITS,
        key=jax.random.key(10),
        mlp_steps=100,
    )
    assert set(report) == {"untrained"} and set(report["untrained"]) == {"agent"}
    simulation = report["untrained"]["agent"]
    written = simulation.to_dict()
    assert written["gamma"] == {"undiscounted": 1.0}
    for direction in ("agent_to_bayes", "bayes_to_agent"):
        for kind in ("linear", "mlp"):
            entry = written[direction][kind]
            assert set(entry) == MEASURES
            for figure in ("mapped", "floor", "excess", "random", "normalised"):
                values = [entry["state_dissimilarity"], *_outputs(entry, figure).values()]
                assert all(isinstance(value, float) and np.isfinite(value) for value in values)
    # Its near-uniform policy cannot act as the Bayes agent does, whatever state it is put in.
    assert simulation.bayes_to_agent.linear.output["undiscounted"].total_variation.mapped > 0.3
    assert simulation.bayes_to_agent.mlp.output["undiscounted"].total_variation.mapped > 0.3


# ---------------------------------------------------------------------------------------------
# The result types: the names of DIRECTIONS, MAP_KINDS and MEASURES are their fields


def test_the_result_types_write_directions_maps_and_measures_as_keys():
    from metabelief.analysis import state_machine

    figure = state_machine.OutputMeasure(
        mapped=0.5, floor=0.25, excess=0.25, random=0.5, normalised=float("nan")
    )
    assert figure.to_dict() == {
        "mapped": 0.5,
        "floor": 0.25,
        "excess": 0.25,
        "random": 0.5,
        "normalised": None,
    }
    assert tuple(figure.to_dict()) == state_machine.FIGURES
    outputs = state_machine.OutputMeasures(*(figure,) * 3)
    assert tuple(outputs.to_dict()) == state_machine.OUTPUT_MEASURES == OUTPUTS
    measures = state_machine.SimulationMeasures(0.25, 0.125, {"undiscounted": outputs})
    assert tuple(measures.to_dict()) == state_machine.MEASURES
    assert measures.to_dict()["output"]["undiscounted"]["return_difference"] == figure.to_dict()
    maps = state_machine.MapMeasures(linear=measures, mlp=measures)
    simulation = state_machine.Simulation(
        gamma={"undiscounted": 1.0}, agent_to_bayes=maps, bayes_to_agent=maps
    )
    written = simulation.to_dict()
    assert tuple(written) == ("gamma", *state_machine.DIRECTIONS)
    assert state_machine.DIRECTIONS == ("agent_to_bayes", "bayes_to_agent")
    assert tuple(written["bayes_to_agent"]) == state_machine.MAP_KINDS == ("linear", "mlp")
    assert written["agent_to_bayes"]["linear"] == measures.to_dict()
