"""Every figure the failure experiment writes, recomputed in NumPy (float64) from hand-built inputs.

No agent is trained: the module's pure functions are fed arrays built here. The independent reference
for one seed's figures on one test condition (``condition_results``) is written out below from the
module docstring: returns and gap as mean and standard error over tasks; the greedy choices (arm 0
where E[p] > 1/2 or s > f, a tie at equality); the disagreement shares; a policy's preference for the
training posterior's arm on the test lanes (ties within 1e-6 of 1/2 left out); the frozen read-out's
RMSE (overall and per step), the share of differing pairs nearer the training posterior and the
confidence |E[p] - 1/2|; and the refitted linear probe's held-out R² (the ridge protocol of
``metabelief.probes`` written out in NumPy); the refitted MLP probe is replaced by a stand-in that
records which state, target and split it is given. The verdicts are checked end to end through the
same path as ``run`` (``FailureSeed`` records, ``summarize``, ``verdicts``) against answers worked
out by hand: a separation exactly at ``SEPARATION`` and just under it, ties between controls, and
figures missing (None) in one seed or every seed.
"""

import functools
import re
import types
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metabelief import probes
from metabelief.experiments import failure, seeds
from metabelief.experiments.failure import FailureResults, FailureSeed, table
from metabelief.experiments.failure_choices import ChoiceLikelihood, EvidenceWeights
from metabelief.experiments.failure_measures import (
    HYPOTHESES,
    MEASURES,
    STATES,
    TRAIN_SUPPORT,
    Condition,
    Disagreement,
    Histories,
    Preference,
    ReadoutComparison,
    RefitR2,
    StateFigures,
    compare_readout,
    condition_results,
    fit_readouts,
    prefers_training_arm,
)
from metabelief.experiments.failure_verdicts import SEPARATION, Exclusion, Learning, verdicts
from metabelief.experiments.probing import split_sizes
from metabelief.experiments.results import SeedTraining, TrainStats, summarize
from metabelief.rollout import Trajectory

T, N, WIDTH = 8, 20, 3
SIZES = split_sizes(N)  # (10, 5, 5): the last 5 lanes are the test lanes
TEST = slice(SIZES[0] + SIZES[1], N)
OFFSETS = {state: 0.01 * index for index, state in enumerate(STATES)}  # each state's own read-out
RIDGES = probes.DEFAULT_RIDGE_GRID


# ----------------------------------------------------------------------------- NumPy reference
def _greedy(x):
    """1 where x > 0, 0 where x < 0, 1/2 at 0."""
    return np.where(x > 0, 1.0, np.where(x < 0, 0.0, 0.5))


def _mean_se(values):
    values = np.asarray(values, np.float64).ravel()
    return values.mean(), values.std(ddof=1) / np.sqrt(values.size)


def _share_disagreeing(first, second):
    return np.mean((first != 0.5) & (second != 0.5) & (first != second))


def _lane_ratio_se(numerators, denominators):
    """Standard error of sum(a) / sum(b) with task lanes as clusters (linearisation); None with
    fewer than 2 lanes that count."""
    if np.sum(denominators > 0) < 2:
        return None
    ratio = numerators.sum() / denominators.sum()
    n = numerators.size
    return np.sqrt(n / (n - 1) * np.sum((numerators - ratio * denominators) ** 2)) / denominators.sum()


def _preference(arm_0, training_mean, other_arm_0):
    training_arm_0 = np.where(np.abs(training_mean - 0.5) > 1e-6, _greedy(training_mean - 0.5), 0.5)
    disagree = (training_arm_0 != 0.5) & (other_arm_0 != 0.5) & (training_arm_0 != other_arm_0)
    chosen = np.where(training_arm_0 == 1.0, arm_0, 1.0 - arm_0)
    return {
        "steps": int(disagree.sum()),
        "probability": float(chosen[disagree].mean()) if disagree.any() else None,
        "se": _lane_ratio_se(np.where(disagree, chosen, 0.0).sum(0), disagree.sum(0).astype(float)),
    }


def _readout(decoded, training_mean, test_mean):
    squared = {"training prior": (decoded - training_mean) ** 2, "test prior": (decoded - test_mean) ** 2}
    differ = np.abs(training_mean - test_mean) > 1e-3
    nearer = squared["training prior"] < squared["test prior"]
    return {
        "rmse": {prior: np.sqrt(error.mean()) for prior, error in squared.items()},
        "rmse_by_time": {prior: list(np.sqrt(error.mean(axis=1))) for prior, error in squared.items()},
        "closer_to_training": nearer[differ].mean() if differ.any() else None,
        "closer_to_training_se": _lane_ratio_se(
            (differ & nearer).sum(0).astype(float), differ.sum(0).astype(float)
        ),
        "differing_pairs": int(differ.sum()),
        "confidence": {
            "read-out": np.abs(decoded - 0.5).mean(),
            "training prior": np.abs(training_mean - 0.5).mean(),
            "test prior": np.abs(test_mean - 0.5).mean(),
        },
    }


def _ridge_r2(state, target):
    """Held-out R² of the linear probe state -> target (``[T, N, d]``, ``[T, N]``): ridge strength
    ``r * tr(S_xx) / d`` chosen on the validation lanes among ``RIDGES``, refitted on training and
    validation lanes, scored on the test lanes."""
    bounds = np.cumsum([0, *SIZES])
    splits = [
        (state[:, a:b].reshape(-1, state.shape[-1]), target[:, a:b].ravel())
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]

    def fit(x, y, ridge):
        x_mean, y_mean = x.mean(0), y.mean()
        scatter = (x - x_mean).T @ (x - x_mean)
        scale = max(np.trace(scatter) / x.shape[1], 1e-30)
        weights = np.linalg.solve(scatter + ridge * scale * np.eye(x.shape[1]), (x - x_mean).T @ (y - y_mean))
        return weights, y_mean - x_mean @ weights

    def r2(probe, x, y):
        weights, bias = probe
        return 1.0 - np.sum((y - x @ weights - bias) ** 2) / np.sum((y - y.mean()) ** 2)

    (x_fit, y_fit), (x_val, y_val), (x_test, y_test) = splits
    best = max(RIDGES, key=lambda ridge: r2(fit(x_fit, y_fit, ridge), x_val, y_val))
    pooled = fit(np.concatenate([x_fit, x_val]), np.concatenate([y_fit, y_val]), best)
    return r2(pooled, x_test, y_test)


def _log_odds(counts):
    """log P(p = 0.55 | s, f) / P(p = 0.1 | s, f) under the training prior."""
    s, f = counts[..., 0], counts[..., 1]
    return np.log(0.55**s * 0.45**f) - np.log(0.1**s * 0.9**f)


def _padded_states(scenario) -> dict:
    """Each state of ``STATES``, ``[T, N, WIDTH]``, zero-padded."""
    states = {
        "agent": scenario["hidden"],
        "untrained": scenario["untrained_hidden"],
        "counts": scenario["counts"],
        "training posterior": scenario["training"][..., None],
        "test posterior": scenario["test"][..., None],
        "training log-odds": np.stack([_log_odds(scenario["counts"]), scenario["counts"].sum(-1)], -1),
    }
    return {
        name: np.concatenate([state, np.zeros((T, N, WIDTH - state.shape[-1]))], axis=-1)
        for name, state in states.items()
    }


def _reference_condition(scenario):
    """``condition_results(...).to_dict()`` less the MLP R², from the scenario's float64 arrays."""
    agent_returns, optimal_returns = scenario["rewards"].sum(0), scenario["optimal"].sum(0)
    agent, agent_se = _mean_se(agent_returns)
    optimal, optimal_se = _mean_se(optimal_returns)
    gap, gap_se = _mean_se(optimal_returns - agent_returns)
    training, test, counts = scenario["training"], scenario["test"], scenario["counts"]
    majority = _greedy(counts[..., 0] - counts[..., 1])
    widths = {"agent": WIDTH, "untrained": WIDTH, "counts": 2, "training posterior": 1, "test posterior": 1}
    widths["training log-odds"] = 2
    arms = {
        "agent": 1.0 / (1.0 + np.exp(scenario["logits"][..., 1] - scenario["logits"][..., 0])),
        "untrained": 1.0
        / (1.0 + np.exp(scenario["untrained_logits"][..., 1] - scenario["untrained_logits"][..., 0])),
        "counts": majority,
        "training posterior": _greedy(training - 0.5),
        "test posterior": _greedy(test - 0.5),
        "training log-odds": _greedy(training - 0.5),
    }
    figures = {}
    for name, padded in _padded_states(scenario).items():
        assert not padded[..., widths[name] :].any()
        arm_0 = arms[name][:, TEST]
        figures[name] = {
            "follows_posterior_not_majority": _preference(arm_0, training[:, TEST], majority[:, TEST]),
            "follows_training_prior": _preference(arm_0, training[:, TEST], _greedy(test[:, TEST] - 0.5)),
            "readout": _readout(padded[:, TEST, 0] + OFFSETS[name], training[:, TEST], test[:, TEST]),
            "r2_linear": {
                "training prior": _ridge_r2(padded, training),
                "test prior": _ridge_r2(padded, test),
            },
        }
    return {
        "return": {"agent": agent, "bayes_optimal": optimal},
        "return_se": {"agent": agent_se, "bayes_optimal": optimal_se},
        "gap": gap,
        "gap_se": gap_se,
        "gap_fraction": gap / optimal,
        "disagreement": {
            "posterior_vs_majority": _share_disagreeing(_greedy(training[:, TEST] - 0.5), majority[:, TEST]),
            "training_vs_test": _share_disagreeing(
                _greedy(training[:, TEST] - 0.5), _greedy(test[:, TEST] - 0.5)
            ),
        },
        "states": figures,
    }


def _newton_beta(decision, choice):
    """float64 maximum-likelihood beta of P(arm 0) = sigmoid(beta * decision), Newton's method."""
    beta = 0.0
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-beta * decision))
        beta += np.sum(decision * (choice - p)) / np.sum(decision**2 * p * (1.0 - p))
    return beta


def _log_likelihood(logit, choice):
    return np.where(choice == 1.0, -np.logaddexp(0.0, -logit), -np.logaddexp(0.0, logit))


def _reference_choices(scenario):
    """``Condition.choices``: each hypothesis's softmax fitted on the train and validation lanes,
    the agent's choices (arm 0: action 0) scored on the test lanes."""
    counts, fit = scenario["counts"], SIZES[0] + SIZES[1]
    decisions = {
        "counts": counts[..., 0] - counts[..., 1],
        "training posterior": 2.0 * scenario["training"] - 1.0,
        "test posterior": 2.0 * scenario["test"] - 1.0,
        "training log-odds": _log_odds(counts) - np.log(0.4 / 0.05),  # 0 where E_train[p] = 1/2
    }
    choice = (scenario["actions"] == 0).astype(np.float64)
    betas = {name: _newton_beta(d[:, :fit].ravel(), choice[:, :fit].ravel()) for name, d in decisions.items()}
    lanes = {
        name: _log_likelihood(betas[name] * d[:, fit:], choice[:, fit:]).mean(0)
        for name, d in decisions.items()
    }
    logits = scenario["logits"][:, fit:]
    own = logits - np.logaddexp(logits[..., :1], logits[..., 1:])
    everything = lanes | {"agent policy": np.where(choice[:, fit:] == 1.0, own[..., 0], own[..., 1]).mean(0)}
    return {
        "per_choice": {name: values.mean() for name, values in everything.items()},
        "se": {name: values.std(ddof=1) / np.sqrt(values.size) for name, values in everything.items()},
        "inverse_temperature": betas,
    }, lanes


def _reference_evidence_weights(logits, counts):
    """OLS of the test lanes' policy log-odds on [s, f, 1]: coefficients, ratio and r2."""
    y = (logits[:, TEST, 0] - logits[:, TEST, 1]).ravel()
    x = np.concatenate([counts[:, TEST].reshape(-1, 2), np.ones((y.size, 1))], axis=1)
    (a, b, c), *_ = np.linalg.lstsq(x, y, rcond=None)
    residuals = y - x @ np.array([a, b, c])
    return {
        "successes": a,
        "failures": b,
        "ratio": b / a,
        "r2": 1.0 - residuals @ residuals / np.sum((y - y.mean()) ** 2),
    }


# ----------------------------------------------------------------------------- hand-built inputs
def _f32(x):
    """``x`` rounded to float32 and back: the values the module sees, for the float64 reference."""
    return np.asarray(x, np.float32).astype(np.float64)


def _scenario(kind: str) -> dict:
    """Float64 arrays (already float32-exact) of one seed's histories on one condition.

    ``random``: everything drawn, with ties planted (E[p] exactly 1/2, within 1e-6 of it, s = f,
    posteriors equal or within 1e-3). ``settled``: in distribution (test = training posterior), the
    agent holds and acts on the training posterior exactly, and earns what the optimal agent earns.
    ``opposed``: the training posterior, the majority and the test posterior all disagree on every
    step, and the agent acts on the training posterior; the optimal agent earns 1 a step, the agent 0.
    """
    rng = np.random.default_rng({"random": 0, "settled": 1, "opposed": 2}[kind])
    counts = rng.integers(0, 4, size=(T, N, 2)).astype(np.float64)
    training = rng.uniform(0.2, 0.8, size=(T, N))
    training[0, ::3] = 0.5
    training[1, ::2] = 0.5 + 1e-7  # float32: within 1e-6 of 1/2, a tie for the preference only
    training[2, ::2] = 0.5 + 3e-6
    test = rng.uniform(0.3, 0.7, size=(T, N))
    test[3] = training[3]
    test[4, ::2] = training[4, ::2] + 5e-4  # differ by less than 1e-3: not a differing pair
    test[5, ::2] = 0.5
    hidden = rng.normal(size=(T, N, WIDTH))
    hidden[..., 0] = training + rng.normal(scale=0.1, size=(T, N))
    logits = rng.normal(scale=2.0, size=(T, N, 2))
    rewards = rng.integers(0, 2, size=(T, N)).astype(np.float64)
    optimal = rng.integers(0, 2, size=(T, N)).astype(np.float64)
    if kind == "settled":
        test = training.copy()
        hidden[..., 0] = training
        logits = np.stack([50.0 * np.sign(_f32(training) - 0.5), np.zeros((T, N))], axis=-1)
        optimal = rewards
    elif kind == "opposed":
        side = rng.choice([-1.0, 1.0], size=(T, N))
        training = 0.5 + side * rng.uniform(0.05, 0.3, size=(T, N))
        test = 0.5 - side * rng.uniform(0.05, 0.3, size=(T, N))
        counts[..., 0] = 5.0 - 2.0 * side
        counts[..., 1] = 5.0
        logits = np.stack([50.0 * side, np.zeros((T, N))], axis=-1)
        rewards, optimal = np.zeros((T, N)), np.ones((T, N))
    arrays = {
        "counts": counts,
        "training": training,
        "test": test,
        "hidden": hidden,
        "logits": logits,
        "untrained_hidden": rng.normal(size=(T, N, WIDTH)),
        "untrained_logits": rng.normal(size=(T, N, 2)),
        "rewards": rewards,
        "optimal": optimal,
        "actions": rng.integers(0, 2, size=(T, N)),  # drawn last: the other arrays as before
    }
    return {name: _f32(value) for name, value in arrays.items()}


def _trajectory(rewards, hidden, logits, actions=None) -> Trajectory:
    zeros = jnp.zeros((T, N))
    return Trajectory(
        obs=jnp.zeros((T + 1, N, 1)),
        actions=zeros.astype(jnp.int32) if actions is None else jnp.asarray(actions, jnp.int32),
        rewards=jnp.asarray(rewards, jnp.float32),
        dones=zeros.astype(bool),
        features=jnp.zeros((T, N, 2)),
        truth=jnp.zeros((T, N, 2)),
        hidden=jnp.asarray(hidden, jnp.float32),
        memory=jnp.asarray(hidden, jnp.float32),
        logits=jnp.asarray(logits, jnp.float32),
        values=zeros,
    )


def _column_0_readout(offset: float) -> probes.MLPReadout:
    """A frozen MLP read-out that returns ``x[0] + offset``: relu(x0) - relu(-x0) through the layers."""
    first = np.zeros((WIDTH, 2))
    first[0] = [1.0, -1.0]
    params = {
        "Dense_0": {"kernel": first, "bias": np.zeros(2)},
        "Dense_1": {"kernel": np.eye(2), "bias": np.zeros(2)},
        "Dense_2": {"kernel": np.array([[1.0], [-1.0]]), "bias": np.zeros(1)},
    }
    return probes.MLPReadout(
        params={"params": jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)},
        x_mean=jnp.zeros(WIDTH),
        x_std=jnp.ones(WIDTH),
        y_mean=jnp.full(1, offset, jnp.float32),
        y_std=jnp.ones(1),
    )


MLP_STEPS = 3
KEY = jax.random.key(7)


def _mlp_probe_stand_in(calls: list):
    """Stands in for ``probes.mlp_probe`` (fitting an MLP costs seconds; its own tests are in
    ``test_probes``): records each call and scores it by a closed form of its inputs, so a figure
    shows which state, target and split it was computed from."""

    def mlp_probe(key, train, validation, test, *, num_steps):
        calls.append((key, train, validation, test, num_steps))
        return types.SimpleNamespace(r2=_stand_in_score(train, validation, test))

    return mlp_probe


def _stand_in_score(train, validation, test) -> float:
    (x_fit, y_fit), (x_val, y_val), (x_test, y_test) = (
        (np.asarray(x, np.float64), np.asarray(y, np.float64)) for x, y in (train, validation, test)
    )
    return float(
        x_test[:, 0].mean()
        + 10 * y_test.mean()
        + 100 * y_val.mean()
        + 1000 * y_fit.mean()
        + x_fit[:, 1].mean()
    )


def _histories(scenario: dict) -> Histories:
    return Histories(
        history=_trajectory(scenario["rewards"], scenario["hidden"], scenario["logits"], scenario["actions"]),
        untrained=_trajectory(
            scenario["rewards"],
            scenario["untrained_hidden"],
            scenario["untrained_logits"],
            scenario["actions"],
        ),
        training_mean=jnp.asarray(scenario["training"], jnp.float32),
        test_mean=jnp.asarray(scenario["test"], jnp.float32),
        counts=jnp.asarray(scenario["counts"], jnp.float32),
    )


@functools.cache
def _computed(kind: str) -> tuple[dict, Condition, list]:
    scenario = _scenario(kind)
    histories = _histories(scenario)
    optimal = _trajectory(scenario["optimal"], scenario["hidden"], scenario["logits"])
    readouts = {state: _column_0_readout(offset) for state, offset in OFFSETS.items()}
    calls = []
    with mock.patch.object(probes, "mlp_probe", _mlp_probe_stand_in(calls)):
        got = condition_results(
            histories, optimal, readouts, SIZES, KEY, MLP_STEPS, test_family="hand-built", steps=T
        )
    return scenario, got, calls


def test_fit_readouts_fit_each_state_to_the_training_posterior_on_the_fit_lanes_kept_on_validation():
    """Per state (its own key), the read-out's rows: the fit lanes to fit, the validation lanes to
    choose the checkpoint; the test lanes are left for the measures."""
    scenario = _scenario("random")
    calls = []

    def fit_mlp(key, fit, validation, num_steps):
        calls.append((key, fit, validation, num_steps))
        return len(calls) - 1

    with mock.patch.object(probes, "fit_mlp", fit_mlp):
        readouts = fit_readouts(_histories(scenario), SIZES, KEY, MLP_STEPS)
    assert readouts == {state: index for index, state in enumerate(STATES)}
    lanes = {"fit": slice(0, SIZES[0]), "validation": slice(SIZES[0], SIZES[0] + SIZES[1])}
    keys = jax.random.split(KEY, len(STATES))
    for state, (key, fit, validation, num_steps) in zip(STATES, calls, strict=True):
        assert num_steps == MLP_STEPS
        np.testing.assert_array_equal(
            jax.random.key_data(key), jax.random.key_data(keys[STATES.index(state)])
        )
        for (x, y), split in ((fit, lanes["fit"]), (validation, lanes["validation"])):
            np.testing.assert_array_equal(np.asarray(y)[:, 0], scenario["training"][:, split].ravel())
            if state == "agent":
                np.testing.assert_array_equal(np.asarray(x), scenario["hidden"][:, split].reshape(-1, WIDTH))
            assert np.asarray(x).shape == (T * (split.stop - split.start), WIDTH)


def _assert_close(got, want, path="", rtol=1e-5, atol=1e-6):
    """Nested dicts and lists of numbers equal within tolerance; None only where None is wanted."""
    if isinstance(want, dict):
        assert set(got) == set(want), path
        for key in want:
            _assert_close(got[key], want[key], f"{path}/{key}", rtol, atol)
    elif isinstance(want, list):
        assert len(got) == len(want), path
        for index, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_close(g, w, f"{path}/{index}", rtol, atol)
    elif want is None:
        assert got is None, path
    else:
        assert got is not None, path
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=path)


def _without_r2(figures: dict) -> dict:
    left_out = ("states", "test_family", "steps", "choices", "evidence_weights")  # their own tests
    out = {key: value for key, value in figures.items() if key not in left_out}
    out["states"] = {
        name: {key: value for key, value in state.items() if key not in ("r2_posterior_mean", "r2_linear")}
        for name, state in figures["states"].items()
    }
    return out


# ----------------------------------------------------------------------------- one seed, one condition
@pytest.mark.parametrize("kind", ["random", "settled", "opposed"])
def test_condition_results_match_numpy_for_every_figure_but_the_refitted_r2(kind):
    scenario, got, _ = _computed(kind)
    written = got.to_dict()
    assert (written["test_family"], written["steps"]) == ("hand-built", T)
    _assert_close(_without_r2(written), _without_r2(_reference_condition(scenario)))


@pytest.mark.parametrize("kind", ["random", "settled", "opposed"])
def test_condition_results_choice_likelihood_matches_numpy(kind):
    scenario, got, _ = _computed(kind)
    want, lanes = _reference_choices(scenario)
    written = got.to_dict()["choices"]
    _assert_close({key: written[key] for key in want}, want, rtol=1e-3, atol=1e-5)
    # "best": above every other hypothesis by a paired 95% interval over the test lanes.
    clear = [
        name
        for name, values in lanes.items()
        if all(
            (d := values - other).mean() - 1.959964 * d.std(ddof=1) / np.sqrt(d.size) > 0
            for other_name, other in lanes.items()
            if other_name != name
        )
    ]
    assert written["best"] == (clear[0] if clear else "undecided")


def test_condition_results_evidence_weights_are_the_policy_log_odds_on_the_counts():
    scenario, got, _ = _computed("random")
    for name, logits in (("agent", scenario["logits"]), ("untrained", scenario["untrained_logits"])):
        want = _reference_evidence_weights(logits, scenario["counts"])
        weights = got.evidence_weights[name].to_dict()
        _assert_close({key: weights[key] for key in want}, want, rtol=1e-3, atol=1e-4, path=name)
        assert weights["ratio_se"] > 0


def test_condition_results_linear_r2_is_the_ridge_probe_refitted_on_each_prior():
    scenario, got, _ = _computed("random")
    want = _reference_condition(scenario)["states"]
    for name in STATES:
        for prior in ("training prior", "test prior"):
            np.testing.assert_allclose(
                got.states[name].r2_posterior_mean[prior].linear,
                want[name]["r2_linear"][prior],
                atol=2e-3,
                err_msg=f"{name} -> {prior}",
            )
    # A state that is a posterior mean decodes it exactly and the other prior's only in part.
    for name, own, other in (
        ("training posterior", "training prior", "test prior"),
        ("test posterior", "test prior", "training prior"),
    ):
        r2 = got.states[name].r2_posterior_mean
        assert r2[own].linear > 0.999 and r2[other].linear < 0.5


def _sorted_rows(a):
    return a[np.lexsort(a.T[::-1])]


def test_condition_results_mlp_r2_is_the_mlp_probe_of_each_state_on_each_priors_target():
    scenario, got, calls = _computed("random")
    targets = {"training prior": scenario["training"], "test prior": scenario["test"]}
    states = _padded_states(scenario)
    bounds = np.cumsum([0, *SIZES])
    assert len(calls) == len(STATES) * len(targets)
    assert len({tuple(np.asarray(jax.random.key_data(call[0])).ravel()) for call in calls}) == len(calls)
    for (name, state), (prior, target), call in zip(
        [(name, state) for name, state in states.items() for _ in targets],
        list(targets.items()) * len(states),
        calls,
        strict=True,
    ):
        _, *splits, num_steps = call
        assert num_steps == MLP_STEPS
        want = [
            (state[:, a:b].reshape(-1, WIDTH), target[:, a:b].reshape(-1, 1))
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        for (x, y), (x_want, y_want) in zip(splits, want, strict=True):
            # The (x, y) sample rows, in any order (the log-odds state rounded in float32).
            np.testing.assert_allclose(
                _sorted_rows(np.concatenate([np.asarray(x), np.asarray(y)], axis=1)),
                _sorted_rows(np.concatenate([x_want, y_want], axis=1)),
                rtol=1e-6,
            )
        assert got.states[name].r2_posterior_mean[prior].mlp == pytest.approx(
            _stand_in_score(*want), rel=1e-9
        ), (name, prior)


def test_known_answers_when_the_agent_is_the_training_posterior_in_distribution():
    _, got, _ = _computed("settled")
    assert got.gap == got.gap_se == got.gap_fraction == 0.0
    assert got.disagreement.training_vs_test == 0.0
    for name in STATES:
        figures = got.states[name]
        # Test and training posteriors agree everywhere: no step, no pair to vote on.
        assert figures.follows_training_prior == Preference(steps=0, probability=None, se=None)
        assert figures.readout.closer_to_training is None and figures.readout.differing_pairs == 0
        assert figures.readout.rmse["training prior"] == figures.readout.rmse["test prior"]
    agent = got.states["agent"]
    assert agent.readout.rmse["training prior"] == 0.0
    assert agent.readout.confidence["read-out"] == pytest.approx(agent.readout.confidence["training prior"])
    assert agent.follows_posterior_not_majority.steps > 0
    assert agent.follows_posterior_not_majority.probability == 1.0
    assert got.states["training posterior"].follows_posterior_not_majority.probability == 1.0
    assert got.states["counts"].follows_posterior_not_majority.probability == 0.0


def test_known_answers_when_every_rule_disagrees_and_the_agent_follows_the_training_posterior():
    _, got, _ = _computed("opposed")
    n_test = SIZES[2] * T
    assert got.return_ == {"agent": 0.0, "bayes_optimal": 1.0 * T}
    assert (got.gap, got.gap_se, got.gap_fraction) == (T, 0.0, 1.0)
    assert got.disagreement == Disagreement(posterior_vs_majority=1.0, training_vs_test=1.0)
    expected = {
        "agent": 1.0,
        "untrained": None,
        "counts": 0.0,
        "training posterior": 1.0,
        "test posterior": 0.0,
    }
    for name, probability in expected.items():
        for measure in ("follows_posterior_not_majority", "follows_training_prior"):
            preference = getattr(got.states[name], measure)
            assert preference.steps == n_test
            if probability is not None:
                assert preference.probability == probability, (name, measure)
    # The training posterior's read-out lies on it: nearer it on every pair, RMSE 0 up to its offset.
    readout = got.states["training posterior"].readout
    assert readout.closer_to_training == 1.0 and readout.differing_pairs == n_test
    assert readout.rmse["training prior"] == pytest.approx(OFFSETS["training posterior"], rel=1e-4)
    assert got.states["test posterior"].readout.closer_to_training == 0.0


# ----------------------------------------------------------------------------- the pure measures
def test_prefers_training_arm_counts_a_posterior_more_than_1e_6_from_one_half_and_no_tie():
    training = np.float32([0.5, 0.5 + 1e-7, 0.5 - 1e-7, 0.5 + 3e-6, 0.5 - 3e-6, 0.9, 0.1, 0.9])
    other = np.float32([0.0, 0.0, 1.0, 0.0, 1.0, 0.5, 1.0, 0.0])  # index 5: the other rule ties
    arm_0 = np.float32([0.3, 0.3, 0.3, 0.25, 0.25, 0.3, 0.125, 0.75])
    got = prefers_training_arm(*(jnp.asarray(x)[None] for x in (arm_0, training, other)))
    # Counted: 3 (arm 0 wanted: 0.25), 4 (arm 1: 0.75), 6 (arm 1: 0.875), 7 (arm 0: 0.75); each step
    # its own lane, 8 lanes: the clustered standard error of a mean over 4 of them.
    chosen = np.array([0.25, 0.75, 0.875, 0.75])
    se = np.sqrt(8 / 7 * np.sum((chosen - chosen.mean()) ** 2)) / 4
    assert (got.steps, got.probability) == (4, chosen.mean())
    assert got.se == pytest.approx(se, rel=1e-5)


@pytest.mark.parametrize(("arm_0", "probability"), [(1.0, 1.0), (0.0, 0.0), (0.5, 0.5)])
def test_prefers_training_arm_is_one_for_the_training_arm_and_zero_for_the_other(arm_0, probability):
    training = jnp.float32([[0.8, 0.2]])
    other = jnp.float32([[0.0, 1.0]])
    policy = jnp.float32([[arm_0, 1.0 - arm_0]])  # the same preference on both steps
    want = Preference(steps=2, probability=probability, se=0.0)  # both lanes agree: no spread
    assert prefers_training_arm(policy, training, other) == want


def test_compare_readout_known_answers_on_a_read_out_equal_to_either_posterior():
    training = jnp.float32([[0.2, 0.7], [0.9, 0.4]])
    test = jnp.float32([[0.4, 0.6], [0.5, 0.4]])  # the last pair does not differ
    on_training = compare_readout(training, training, test)
    assert on_training.closer_to_training == 1.0 and on_training.differing_pairs == 3
    assert on_training.rmse["training prior"] == 0.0
    np.testing.assert_allclose(on_training.rmse["test prior"], np.sqrt((0.04 + 0.01 + 0.16) / 4), rtol=1e-6)
    np.testing.assert_allclose(
        on_training.rmse_by_time["test prior"], [np.sqrt(0.05 / 2), np.sqrt(0.16 / 2)], rtol=1e-6
    )
    np.testing.assert_allclose(on_training.confidence["read-out"], (0.3 + 0.2 + 0.4 + 0.1) / 4, rtol=1e-6)
    np.testing.assert_allclose(on_training.confidence["test prior"], (0.1 + 0.1 + 0.0 + 0.1) / 4, rtol=1e-6)
    assert compare_readout(test, training, test).closer_to_training == 0.0


def test_compare_readout_counts_a_read_out_equidistant_from_both_as_not_nearer_training():
    training = jnp.float32([[0.25, 0.25, 0.25, 0.5]])
    test = jnp.float32([[0.75, 0.75, 0.75, 0.5 + 5e-4]])  # the last pair differs by under 1e-3
    decoded = jnp.float32([[0.5, 0.375, 0.625, 0.5]])  # a tie, nearer training, nearer test
    got = compare_readout(decoded, training, test)
    assert (got.differing_pairs, got.closer_to_training) == (3, 1 / 3)


def test_the_test_conditions_are_the_documented_priors_and_lengths():
    got = failure.test_conditions(horizon=7, horizon_factor=3)
    supports = {name: (family.p_support, family.horizon, steps) for name, (family, steps) in got.items()}
    assert supports == {
        "in distribution": (TRAIN_SUPPORT, 7, 7),
        "support (0.4, 0.6)": ((0.4, 0.6), 7, 7),
        "support (0.1, 0.5)": ((0.1, 0.5), 7, 7),
        "p ~ U[0, 1]": (None, 7, 7),
        "past the horizon": (TRAIN_SUPPORT, 21, 21),
    }


# ----------------------------------------------------------------------------- verdicts, per seed
# Each case: three seeds' (figure, within-seed se) per state (None: missing); seed 2 is excluded by
# the learning rule. The answer worked out by hand: (per-seed verdicts, separated pairs) for the
# measures with a standard error, then for the refit R² (no standard error: figures taken as
# exact); None: no verdict row.
A, U, C, TR, TE, LO = (
    "agent",
    "untrained",
    "counts",
    "training posterior",
    "test posterior",
    "training log-odds",
)
UND = "undecided"
NO = (None, None)
CASES = [
    (  # counts and training exactly SEPARATION apart; seed 1's interval reaches the midpoint 0.375
        {A: ((0.2, 0.01), (0.4, 0.05), (0.6, 0.01)), U: ((0.75, 0.0), (0.625, 0.0), (0.5, 0.0))}
        | {C: ((0.25, 0.0),) * 3, TR: ((0.5, 0.0),) * 3, TE: (NO,) * 3, LO: (NO,) * 3},
        ((C, UND, None), ((C, TR),)),
        ((C, TR, None), ((C, TR),)),
    ),
    (  # the controls 0.2499 apart: no verdict
        {A: ((0.0, 0.01),) * 3, U: ((1.0, 0.0),) * 3}
        | {C: ((0.25, 0.0),) * 3, TR: ((0.4999, 0.0),) * 3, TE: (NO,) * 3, LO: (NO,) * 3},
        None,
        None,
    ),
    (  # counts and test tie: an agent on their side is undecided, one on training's side is named
        {A: ((0.05, 0.01), (0.95, 0.01), (0.5, 0.01)), U: ((0.5, 0.0),) * 3}
        | {C: ((0.0, 0.0),) * 3, TR: ((1.0, 0.0),) * 3, TE: ((0.0, 0.0),) * 3, LO: (NO,) * 3},
        ((UND, TR, None), ((C, TR), (TR, TE))),
        ((UND, TR, None), ((C, TR), (TR, TE))),
    ),
    (  # seed 0's controls 0.5 apart with intervals that overlap (se 0.2 each): not separated there
        {A: ((0.0, 0.0), (0.45, 0.01), (0.1, 0.01)), U: ((0.25, 0.0),) * 3}
        | {C: ((0.0, 0.2), (0.0, 0.0), (0.0, 0.0)), TR: ((0.5, 0.2), (0.5, 0.0), (0.5, 0.0))}
        | {TE: (NO,) * 3, LO: (NO,) * 3},
        ((UND, TR, None), ((C, TR),)),
        ((C, TR, None), ((C, TR),)),
    ),
    (  # counts missing everywhere, the agent in seed 0: seed 1 sides with the log-odds
        {A: (NO, (0.45, 0.01), (0.9, 0.01)), U: (NO, (0.5, 0.0), (0.5, 0.0))}
        | {C: (NO,) * 3, TR: ((1.0, 0.0),) * 3, TE: ((0.0, 0.0),) * 3, LO: ((0.5, 0.0),) * 3},
        ((None, LO, None), ((TR, TE), (TR, LO), (TE, LO))),
        ((None, LO, None), ((TR, TE), (TR, LO), (TE, LO))),
    ),
    (  # the controls separate but only the excluded seed has the agent's figure: no verdict
        {A: (NO, NO, (1.0, 0.01)), U: ((0.5, 0.0),) * 3}
        | {C: ((0.0, 0.0),) * 3, TR: ((1.0, 0.0),) * 3, TE: ((0.5, 0.0),) * 3, LO: (NO,) * 3},
        None,
        None,
    ),
]
MEASURE_NAMES = [
    "follows_posterior_not_majority",
    "follows_training_prior",
    "readout_closer_to_training",
    "refit_r2_test_prior",
]
CONDITIONS = [f"condition {j}" for j in range(len(CASES))]
INCLUDED = (True, True, False)


def _case(measure_index: int, condition_index: int):
    """Measure k on condition j holds case (j + k) mod 6: every measure gives different verdicts."""
    return CASES[(condition_index + measure_index) % len(CASES)]


def _answer(measure_index: int, condition_index: int):
    case = _case(measure_index, condition_index)
    return case[2] if MEASURE_NAMES[measure_index] == "refit_r2_test_prior" else case[1]


def _state_figures(seed: int, state: str, condition_index: int) -> StateFigures:
    value = [_case(k, condition_index)[0][state][seed] for k in range(len(MEASURE_NAMES))]
    decoy = _case(3, condition_index + 3)[0][state][seed][0]  # in the fields no measure reads
    by_time = (0.25, 0.5)
    return StateFigures(
        follows_posterior_not_majority=Preference(steps=3, probability=value[0][0], se=value[0][1]),
        follows_training_prior=Preference(steps=2, probability=value[1][0], se=value[1][1]),
        readout=ReadoutComparison(
            rmse={"training prior": 0.5, "test prior": 0.25},
            rmse_by_time={"training prior": by_time, "test prior": by_time},
            closer_to_training=value[2][0],
            closer_to_training_se=value[2][1],
            differing_pairs=4,
            confidence={"read-out": 0.25, "training prior": 0.25, "test prior": 0.25},
        ),
        r2_posterior_mean={
            "training prior": RefitR2(linear=decoy, mlp=decoy),
            "test prior": RefitR2(linear=decoy, mlp=value[3][0]),
        },
    )


def _choices(seed: int) -> ChoiceLikelihood:
    """Log-likelihoods per choice: training posterior above counts by 0.1 + 0.05 seed."""
    per_choice = {C: -0.6, TR: -0.5 + 0.05 * seed, TE: -0.65, LO: -0.55, "agent policy": -0.4}
    return ChoiceLikelihood(
        per_choice=per_choice,
        se=dict.fromkeys(per_choice, 0.01),
        inverse_temperature=dict.fromkeys(HYPOTHESES, 1.0),
        best=TR,
    )


def _seed(seed: int) -> FailureSeed:
    weights = EvidenceWeights(successes=1.0, failures=-0.5, ratio=-0.5, ratio_se=0.1, r2=0.5)
    conditions = {
        name: Condition(
            return_={"agent": 10.0 + seed, "bayes_optimal": 12.0},
            return_se={"agent": 0.5, "bayes_optimal": 0.5},
            gap=2.0 - seed,
            gap_se=0.5,
            gap_fraction=(2.0 - seed) / 12.0,
            disagreement=Disagreement(posterior_vs_majority=0.25, training_vs_test=0.125),
            states={state: _state_figures(seed, state, j) for state in STATES},
            choices=_choices(seed),
            evidence_weights={"agent": weights, "untrained": weights},
            test_family="hand-built",
            steps=20,
        )
        for j, name in enumerate(CONDITIONS)
    }
    return FailureSeed(
        seed=seed,
        train=SeedTraining(final_training_return=1.0),
        learning=Learning(fraction=0.9 if INCLUDED[seed] else 0.1, included=INCLUDED[seed]),
        conditions=conditions,
    )


@functools.cache
def _verdicts():
    per_seed = [_seed(0), _seed(1), _seed(2)]
    summary = summarize(per_seed)
    seed_conditions = [entry.to_dict()["conditions"] for entry in per_seed]
    included = [entry.learning.included for entry in per_seed]
    return (
        per_seed,
        summary,
        verdicts(seed_conditions, included, MEASURES, HYPOTHESES),
        failure.paired_differences(seed_conditions, included),
    )


def test_verdicts_per_seed_match_the_hand_worked_answers_for_every_measure():
    assert list(MEASURES) == MEASURE_NAMES and SEPARATION == 0.25 and HYPOTHESES == (C, TR, TE, LO)
    _, _, got, _ = _verdicts()
    want = []
    for k, measure in enumerate(MEASURE_NAMES):
        for j, condition in enumerate(CONDITIONS):
            if _answer(k, j) is not None:
                want.append((measure, condition, *_answer(k, j)))
    got_rows = [(row.measure, row.condition, row.per_seed, row.separates) for row in got]
    assert got_rows == want and len(want) == 4 * 4
    for row in got:
        assert row.counts == {name: row.per_seed.count(name) for name in (*HYPOTHESES, UND)}
        assert sum(row.counts.values()) == sum(v is not None for v in row.per_seed)
        assert row.excluded == 1


def _learning_mean(figures, state):
    values = [v for (v, _), keep in zip(figures[state], INCLUDED, strict=True) if keep and v is not None]
    return np.mean(values) if values else None


def test_verdicts_figures_are_means_over_the_learning_seeds():
    _, _, got, _ = _verdicts()
    for row in got:
        k, j = MEASURE_NAMES.index(row.measure), CONDITIONS.index(row.condition)
        figures = _case(k, j)[0]
        learning_mean = functools.partial(_learning_mean, figures)
        assert row.agent["mean"] == pytest.approx(learning_mean(A))
        assert row.agent["n"] == sum(
            1 for (v, _), keep in zip(figures[A], INCLUDED, strict=True) if keep and v is not None
        )
        assert (row.untrained is None) == (learning_mean(U) is None)
        assert row.untrained == pytest.approx(learning_mean(U))
        want_controls = {h: learning_mean(h) for h in HYPOTHESES if learning_mean(h) is not None}
        assert list(row.controls) == list(want_controls)
        assert row.controls == pytest.approx(want_controls)


def test_paired_differences_are_per_seed_over_the_learning_seeds():
    _, _, _, got = _verdicts()
    assert len(got) == len(CONDITIONS) * (len(MEASURES) + len(failure.LIKELIHOOD_PAIRS))
    by_name = {(row.quantity, row.condition): row for row in got}
    for k, measure in enumerate(MEASURE_NAMES):
        for j, condition in enumerate(CONDITIONS):
            figures = _case(k, j)[0]
            row = by_name[(f"{measure}: agent - untrained", condition)]
            want = [
                None if not keep or a is None or u is None else a - u
                for (a, _), (u, _), keep in zip(figures[A], figures[U], INCLUDED, strict=True)
            ]
            assert row.per_seed == pytest.approx(tuple(want))
            assert row.interval == pytest.approx(seeds.interval(want))
    likelihood = by_name[("log-likelihood per choice: training posterior - counts", CONDITIONS[0])]
    assert likelihood.per_seed == pytest.approx((0.1, 0.15, None))
    assert likelihood.interval == pytest.approx(seeds.interval([0.1, 0.15]))


def test_table_prints_each_verdict_with_its_per_seed_verdicts_and_counts():
    per_seed, summary, found, differences = _verdicts()
    results = FailureResults(
        experiment="failure",
        config={"train": {"family_args": {"horizon": 20}}, "eval_tasks": 64},
        device="cpu",
        train=TrainStats(seconds=1.0, compile_seconds=0.5, agent_steps_per_second=10.0, num_seeds=3),
        summary=summary,
        seeds=tuple(per_seed),
        exclusion=Exclusion(
            rule=failure.RULE,
            min_learning_fraction=0.5,
            evidence_blind_return=13.5,
            bayes_optimal_return=14.15,
            excluded_seeds=(2,),
            num_excluded=1,
            num_included=2,
        ),
        verdicts=tuple(found),
        paired_differences=tuple(differences),
    )
    lines = table(results).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("verdicts per seed"))
    assert "1 of 3 seeds excluded" in lines[start] and "evidence-blind 13.50" in lines[start]
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[start + 3 : start + 3 + len(found)]]
    # follows_posterior_not_majority holds case j on condition j (cases 0, 2, 3 and 4 give verdicts).
    assert rows[:4] == [
        [
            MEASURE_NAMES[0],
            "condition 0",
            "0.30 [-0.97, 1.57]",
            "1 / 0 / 0 / 0 / 1",
            "counts, undecided, excl.",
        ],
        [
            MEASURE_NAMES[0],
            "condition 2",
            "0.50 [-5.22, 6.22]",
            "0 / 1 / 0 / 0 / 1",
            "undecided, train, excl.",
        ],
        [
            MEASURE_NAMES[0],
            "condition 3",
            "0.23 [-2.63, 3.08]",
            "0 / 1 / 0 / 0 / 1",
            "undecided, train, excl.",
        ],
        [MEASURE_NAMES[0], "condition 4", "0.45", "0 / 0 / 0 / 1 / 0", "excl., log-odds, excl."],
    ]
