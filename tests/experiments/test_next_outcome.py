"""The fair no-learning baselines, the next-outcome log-loss and the per-seed probe keys, against
known answers and float64 NumPy written from the definitions: counts tallied by hand, the Beta
posterior mean ``(1 + s) / (2 + n)`` in closed form, traces as weighted sums, the Bernoulli
log-loss, and a penalised logistic regression per action solved by Newton's method to convergence.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief import probes
from metabelief.agents import agent_for
from metabelief.experiments import next_outcome, no_learning, protocol
from metabelief.rollout import rollout

FAMILY = metabelief.make("bernoulli_bandit", num_arms=2, horizon=12)  # Beta(1, 1) arms
AGENT = agent_for(FAMILY, hidden_size=4)
SIZES = (60, 30, 30)


@pytest.fixture(scope="module")
def history():
    tasks = jax.vmap(FAMILY.sample_task)(jax.random.split(jax.random.key(0), sum(SIZES)))
    return jax.jit(rollout, static_argnums=(0, 1))(
        FAMILY, AGENT, AGENT.init(jax.random.key(1)), jax.random.key(2), tasks
    )


def counts(history) -> tuple[np.ndarray, np.ndarray]:
    """Pulls and successes of each arm before each step, ``[T, N, 2]`` each, tallied in a loop."""
    actions, rewards = np.asarray(history.actions), np.asarray(history.rewards, np.float64)
    pulls, successes = np.zeros((*actions.shape, 2)), np.zeros((*actions.shape, 2))
    for t in range(1, actions.shape[0]):
        pulls[t], successes[t] = pulls[t - 1], successes[t - 1]
        for lane in range(actions.shape[1]):
            pulls[t, lane, actions[t - 1, lane]] += 1
            successes[t, lane, actions[t - 1, lane]] += rewards[t - 1, lane]
    return pulls, successes


# ---------------------------------------------------------------------------------------------
# No-learning baselines


def test_running_sums_of_a_bandits_outcome_inputs_are_its_counts_and_give_the_beta_means(history):
    sums = np.asarray(no_learning.running_sums(no_learning.outcome_inputs(AGENT, history)), np.float64)
    pulls, successes = counts(history)
    # [u, r u] with u = [one-hot arm, reward]: pulls per arm, rewards, successes per arm, rewards.
    np.testing.assert_array_equal(sums[..., :2], pulls)
    np.testing.assert_array_equal(sums[..., 3:5], successes)
    np.testing.assert_array_equal(sums[..., 2], successes.sum(-1))
    # The closed-form read-out of the counts is the exact posterior mean: R^2 = 1.
    means = np.asarray(history.features[..., :2], np.float64)
    read_out = (1.0 + sums[..., 3:5]) / (2.0 + sums[..., :2])
    np.testing.assert_allclose(read_out, means, atol=1e-6)
    assert 1 - np.sum((read_out - means) ** 2) / np.sum((means - means.mean((0, 1))) ** 2) > 1 - 1e-9


def test_an_exponential_trace_is_a_weighted_mean_and_the_running_mean_for_a_long_time_constant():
    values = np.random.default_rng(0).standard_normal((9, 3, 2))
    traces = np.asarray(no_learning.exponential_traces(jnp.asarray(values, jnp.float32), (2.0, 1e12)))
    assert traces.shape == (9, 3, 4)
    running_mean = np.cumsum(values, axis=0) / np.arange(1, 10)[:, None, None]
    np.testing.assert_allclose(traces[..., 2:], running_mean, atol=1e-5)
    weights = [np.exp(-(t - np.arange(t + 1)) / 2.0) for t in range(9)]
    short = np.stack([np.tensordot(w, values[: len(w)], axes=1) / w.sum() for w in weights])
    np.testing.assert_allclose(traces[..., :2], short, atol=1e-5)
    assert np.abs(traces[..., :2] - running_mean).max() > 0.3  # the time constant matters


# ---------------------------------------------------------------------------------------------
# Next-outcome log-loss


def numpy_log_loss(p, r) -> float:
    p, r = np.asarray(p, np.float64), np.asarray(r, np.float64)
    return float(-np.mean(r * np.log(p) + (1 - r) * np.log(1 - p)))


def test_the_exact_predictive_is_the_pulled_arms_beta_mean_and_its_log_loss_the_numpy_one(history):
    predictive = np.asarray(next_outcome.bernoulli_predictive(FAMILY, history), np.float64)
    pulls, successes = counts(history)
    beta_mean = (1.0 + successes) / (2.0 + pulls)
    expected = np.take_along_axis(beta_mean, np.asarray(history.actions)[..., None], -1)[..., 0]
    np.testing.assert_allclose(predictive, expected, atol=1e-6)
    rewards = np.asarray(history.rewards)
    assert next_outcome.log_loss(predictive, rewards) == pytest.approx(
        numpy_log_loss(expected, rewards), rel=1e-5
    )
    # Outside what it is defined for: no Bernoulli rewards, or no ExpectedRewards capability.
    assert next_outcome.bernoulli_predictive(FAMILY, history.replace(rewards=history.rewards * 2)) is None
    assert next_outcome.bernoulli_predictive(metabelief.make("gridworld"), history) is None


def numpy_probe_log_loss(x, actions, rewards, sizes, grid=next_outcome.DEFAULT_PENALTY_GRID) -> float:
    """The logistic probe's protocol in float64: Newton's method to convergence for each action's
    head, the penalty chosen on validation lanes, refitted on training + validation lanes."""
    blocks = np.cumsum([0, *sizes])
    lanes = lambda v, a, b: np.asarray(v, np.float64)[:, a:b].reshape(-1, *np.shape(v)[2:])  # noqa: E731
    bounds = zip(blocks[:-1], blocks[1:], strict=True)
    split = [tuple(lanes(v, a, b) for v in (x, actions, rewards)) for a, b in bounds]
    mean, std = split[0][0].mean(0), split[0][0].std(0) + 1e-6
    design = lambda z: np.c_[(z - mean) / std, np.ones(len(z))]  # noqa: E731

    def fit(z, a, r, penalty):
        heads = []
        for action in range(2):
            rows, target = design(z[a == action]), r[a == action]
            free = np.r_[np.ones(rows.shape[1] - 1), 0.0]
            theta = np.zeros(rows.shape[1])
            for _ in range(50):
                p = 1 / (1 + np.exp(-rows @ theta))
                gradient = rows.T @ (p - target) / len(rows) + penalty * free * theta
                hessian = (rows.T * (p * (1 - p))) @ rows / len(rows) + np.diag(penalty * free)
                theta -= np.linalg.solve(hessian, gradient)
            heads.append(theta)
        return np.stack(heads)

    def loss(heads, z, a, r):
        return numpy_log_loss(1 / (1 + np.exp(-np.sum(design(z) * heads[a.astype(int)], -1))), r)

    chosen = min(grid, key=lambda penalty: loss(fit(*split[0], penalty), *split[1]))
    fit_rows = [np.concatenate(parts) for parts in zip(split[0], split[1], strict=True)]
    return loss(fit(*fit_rows, chosen), *split[2])


def synthetic_outcomes(seed: int = 0, num_steps: int = 20, num_lanes: int = 120):
    """Each step and lane draws each arm's exact ``P(r = 1)`` uniformly; one arm is pulled at random."""
    rng = np.random.default_rng(seed)
    probs = rng.uniform(0.05, 0.95, size=(num_steps, num_lanes, 2))
    actions = rng.integers(0, 2, size=(num_steps, num_lanes))
    exact = np.take_along_axis(probs, actions[..., None], -1)[..., 0]
    rewards = (rng.uniform(size=exact.shape) < exact).astype(np.float32)
    return probs, actions, rewards, exact


def test_the_probe_log_loss_excess_is_zero_for_the_exact_belief_and_large_for_constant_or_noise():
    probs, actions, rewards, exact = synthetic_outcomes()
    sizes = (60, 30, 30)
    noise = np.random.default_rng(1).standard_normal(probs.shape)
    memories = {
        "belief": np.log(probs / (1 - probs)),  # the exact predictive's log-odds of each arm
        "constant": np.ones_like(probs),
        "noise": noise,
    }
    losses = next_outcome.probe_log_losses(
        {name: jnp.asarray(m, jnp.float32) for name, m in memories.items()},
        jnp.asarray(actions),
        jnp.asarray(rewards),
        sizes,
        2,
    )
    floor = numpy_log_loss(exact[:, 90:], rewards[:, 90:])
    assert losses["belief"] - floor == pytest.approx(0.0, abs=0.01)
    assert losses["constant"] - floor > 0.1 and losses["noise"] - floor > 0.1
    for name in ("belief", "noise"):
        assert losses[name] == pytest.approx(
            numpy_probe_log_loss(memories[name], actions, rewards, sizes), abs=2e-4
        )
    reference = next_outcome.no_history_log_loss(jnp.asarray(actions), jnp.asarray(rewards), sizes, 2)
    rates = [rewards[:, :90][actions[:, :90] == a].mean() for a in range(2)]
    assert reference == pytest.approx(
        numpy_log_loss(np.take(rates, actions[:, 90:]), rewards[:, 90:]), rel=1e-5
    )
    assert losses["constant"] == pytest.approx(reference, abs=2e-3)  # a constant memory is no history


def test_bad_log_loss_arguments_raise_a_value_error_naming_them():
    probs, actions, rewards, _ = synthetic_outcomes(num_steps=3, num_lanes=12)
    arguments = ({"m": jnp.asarray(probs)}, jnp.asarray(actions), jnp.asarray(rewards))
    with pytest.raises(ValueError, match="sizes"):
        next_outcome.probe_log_losses(*arguments, (6, 3, 2), 2)
    with pytest.raises(ValueError, match="penalty_grid"):
        next_outcome.probe_log_losses(*arguments, (6, 3, 3), 2, penalty_grid=(0.0,))
    with pytest.raises(ValueError, match="NaN"):
        next_outcome.probe_log_losses({"m": jnp.full(probs.shape, jnp.nan)}, *arguments[1:], (6, 3, 3), 2)


# ---------------------------------------------------------------------------------------------
# Each seed's own probe key


def test_each_seed_gets_its_own_reproducible_probe_key_and_mlp_draw():
    base = jax.random.key(7)
    keys = [protocol.seed_probe_key(base, index) for index in (0, 1, 0)]
    data = [jax.random.key_data(key) for key in keys]
    assert not np.array_equal(data[0], data[1]) and np.array_equal(data[0], data[2])
    # Two seeds with identical networks (the same samples): different MLP draws, each reproducible.
    x = jax.random.normal(jax.random.key(3), (96, 3))
    splits = [(x[i : i + 32], jnp.sin(x[i : i + 32, :1])) for i in (0, 32, 64)]
    r2 = [float(probes.mlp_probe(key, *splits, width=8, num_steps=100, batch_size=32).r2) for key in keys]
    assert r2[0] != r2[1] and r2[0] == r2[2]
