"""Probes: streaming moments, ridge fits and scores against float64 NumPy; the linear and MLP protocols."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metabelief import probes

RIDGES = (0.0, 0.1, 3.0)


def correlated_samples(seed: int, n: int, dx: int = 3, dy: int = 2, noise: float = 0.3) -> np.ndarray:
    """float32 ``[n, dx + dy]``: correlated inputs far from zero and noisy linear targets."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((dx, dx))
    x = 5.0 + rng.standard_normal((n, dx)) @ mixing
    y = x @ rng.standard_normal((dx, dy)) - 2.0 + noise * rng.standard_normal((n, dy))
    return np.concatenate([x, y], axis=1).astype(np.float32)


def reference_stats(z: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """float64 ``(count, mean, centred scatter)``."""
    z = np.asarray(z, np.float64)
    centred = z - z.mean(axis=0)
    return z.shape[0], z.mean(axis=0), centred.T @ centred


def assert_stats_match(moments: probes.Moments, z: np.ndarray, rtol: float = 1e-5) -> None:
    count, mean, scatter = reference_stats(z)
    assert float(moments.count) == count
    np.testing.assert_allclose(np.asarray(moments.mean), mean, rtol=rtol, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(moments.scatter), scatter, rtol=rtol, atol=rtol * np.abs(scatter).max()
    )


def three_splits(samples: np.ndarray, sizes=(400, 300, 300)) -> probes.Moments:
    assert samples.shape[0] == sum(sizes)
    return probes.split_moments(jnp.asarray(samples, jnp.float32), sizes)


# ---------------------------------------------------------------------------------------------
# Moments


def test_moments_of_matches_float64_mean_and_centred_scatter():
    z = correlated_samples(0, 200)
    moments = probes.moments_of(jnp.asarray(z))
    assert moments.count.dtype == moments.mean.dtype == moments.scatter.dtype == jnp.float32
    assert_stats_match(moments, z)


def test_merge_of_two_uneven_parts_equals_moments_of_the_whole():
    z = correlated_samples(1, 128)
    merged = probes.merge(probes.moments_of(jnp.asarray(z[:37])), probes.moments_of(jnp.asarray(z[37:])))
    assert_stats_match(merged, z)


def test_merge_with_no_samples_is_the_identity_on_either_side():
    z = correlated_samples(2, 50)
    moments = probes.moments_of(jnp.asarray(z))
    empty = probes.empty_moments(z.shape[1])
    for merged in (probes.merge(empty, moments), probes.merge(moments, empty)):
        assert_stats_match(merged, z)
    both_empty = probes.merge(empty, empty)
    assert float(both_empty.count) == 0.0
    assert not np.asarray(both_empty.mean).any() and not np.asarray(both_empty.scatter).any()


def test_streamed_merges_stay_accurate_far_from_zero():
    """Many small blocks around 1000: a float32 sum of squares would lose the unit variance."""
    rng = np.random.default_rng(3)
    z = (1000.0 + rng.standard_normal((400, 2))).astype(np.float32)
    merge = jax.jit(probes.merge)
    moments = probes.empty_moments(2)
    for start in range(0, 400, 8):
        moments = merge(moments, probes.moments_of(jnp.asarray(z[start : start + 8])))
    assert_stats_match(moments, z, rtol=1e-4)


def test_split_moments_are_each_block_stacked():
    z = correlated_samples(4, 90)
    sizes = (20, 45, 25)
    moments = probes.split_moments(jnp.asarray(z), sizes)
    assert moments.count.shape == (3,) and moments.mean.shape == (3, 5) and moments.scatter.shape == (3, 5, 5)
    bounds = np.cumsum([0, *sizes])
    for block in range(3):
        one = jax.tree.map(lambda leaf, b=block: leaf[b], moments)
        assert_stats_match(one, z[bounds[block] : bounds[block + 1]])


def test_pool_merges_the_chosen_splits_only():
    z = correlated_samples(5, 90)
    moments = probes.split_moments(jnp.asarray(z), (20, 45, 25))
    assert_stats_match(probes.pool(moments, [0, 2]), np.concatenate([z[:20], z[65:]]))
    assert_stats_match(probes.pool(moments, [1]), z[20:65])
    assert_stats_match(probes.pool(moments, [0, 1, 2]), z)


# ---------------------------------------------------------------------------------------------
# Ridge fits and scores


def reference_ridge(z: np.ndarray, x: slice, y: slice, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """float64 ridge with an unpenalised intercept, from the augmented normal equations [X 1].

    The penalty is ``ridge * tr(S_xx) / dx`` with ``S_xx`` the centred scatter of the inputs, at
    least ``ROUNDING_FLOOR * tr(S_xx)``.
    """
    z = np.asarray(z, np.float64)
    inputs, targets = z[:, x], z[:, y]
    dx = inputs.shape[1]
    centred = inputs - inputs.mean(axis=0)
    penalty = max(ridge, probes.ROUNDING_FLOOR * dx) * np.trace(centred.T @ centred) / dx
    design = np.concatenate([inputs, np.ones((z.shape[0], 1))], axis=1)
    solution = np.linalg.solve(design.T @ design + np.diag([penalty] * dx + [0.0]), design.T @ targets)
    return solution[:dx], solution[dx]


@pytest.mark.parametrize("ridge", RIDGES)
def test_fit_ridge_matches_float64_ridge_with_unpenalised_intercept(ridge):
    z = correlated_samples(6, 300)
    probe = probes.fit_ridge(probes.moments_of(jnp.asarray(z)), slice(0, 3), slice(3, 5), ridge)
    weights, bias = reference_ridge(z, slice(0, 3), slice(3, 5), ridge)
    assert probe.weights.shape == (3, 2) and probe.bias.shape == (2,)
    np.testing.assert_allclose(
        np.asarray(probe.weights), weights, rtol=1e-4, atol=1e-4 * np.abs(weights).max()
    )
    np.testing.assert_allclose(np.asarray(probe.bias), bias, rtol=1e-4, atol=1e-4 * np.abs(bias).max())


def test_fit_ridge_regresses_any_block_on_any_other():
    """Here the first two columns on the last three: blocks need not be in x-then-y order."""
    z = correlated_samples(7, 300)
    probe = probes.fit_ridge(probes.moments_of(jnp.asarray(z)), slice(3, 5), slice(0, 3), 0.1)
    weights, bias = reference_ridge(z, slice(3, 5), slice(0, 3), 0.1)
    np.testing.assert_allclose(
        np.asarray(probe.weights), weights, rtol=1e-4, atol=1e-4 * np.abs(weights).max()
    )
    np.testing.assert_allclose(np.asarray(probe.bias), bias, rtol=1e-4, atol=1e-4 * np.abs(bias).max())


@pytest.mark.parametrize("ridge", RIDGES)
def test_fit_ridge_with_a_mask_is_the_ridge_of_the_kept_columns_alone(ridge):
    """Columns masked out, here ones that vary and correlate with the rest, get zero weights and
    change neither the penalty's scale nor the other weights."""
    z = correlated_samples(8, 300, dx=5)
    mask = jnp.asarray([1.0, 0.0, 1.0, 1.0, 0.0])
    probe = probes.fit_ridge(probes.moments_of(jnp.asarray(z)), slice(0, 5), slice(5, 7), ridge, mask)
    weights, bias = reference_ridge(z[:, [0, 2, 3, 5, 6]], slice(0, 3), slice(3, 5), ridge)
    assert np.all(np.asarray(probe.weights)[[1, 4]] == 0.0)
    np.testing.assert_allclose(
        np.asarray(probe.weights)[[0, 2, 3]], weights, rtol=1e-4, atol=1e-4 * np.abs(weights).max()
    )
    np.testing.assert_allclose(np.asarray(probe.bias), bias, rtol=1e-4, atol=1e-4 * np.abs(bias).max())


def test_score_arrays_matches_float64_r2_and_mse():
    rng = np.random.default_rng(8)
    targets = rng.standard_normal((200, 3)) * [1.0, 2.0, 0.5] + [0.0, 3.0, -1.0]
    predictions = targets + rng.standard_normal((200, 3)) * [0.2, 1.0, 0.5]
    scores = probes.score_arrays(jnp.asarray(predictions, jnp.float32), jnp.asarray(targets, jnp.float32))
    errors = ((targets - predictions) ** 2).sum(axis=0)
    total = ((targets - targets.mean(axis=0)) ** 2).sum(axis=0)
    np.testing.assert_allclose(float(scores.r2), 1.0 - errors.sum() / total.sum(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(scores.r2_per_dim), 1.0 - errors / total, rtol=1e-5)
    np.testing.assert_allclose(float(scores.mse), errors.sum() / targets.size, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(scores.mse_per_dim), errors / 200, rtol=1e-5)


@pytest.mark.parametrize("fitted", [True, False])
def test_score_moments_equals_score_arrays_of_predictions(fitted):
    """On held-out samples, for the fitted probe and for an arbitrary one (biased residuals)."""
    train, test = correlated_samples(9, 300), correlated_samples(9, 300, noise=1.0)
    x, y = slice(0, 3), slice(3, 5)
    if fitted:
        probe = probes.fit_ridge(probes.moments_of(jnp.asarray(train)), x, y, 0.1)
    else:
        rng = np.random.default_rng(10)
        probe = probes.LinearProbe(
            weights=jnp.asarray(rng.standard_normal((3, 2)), jnp.float32),
            bias=jnp.asarray(rng.standard_normal(2), jnp.float32),
        )
    closed_form = probes.score_moments(probe, probes.moments_of(jnp.asarray(test)), x, y)
    direct = probes.score_arrays(probes.predict(probe, jnp.asarray(test[:, x])), jnp.asarray(test[:, y]))
    for name in ("r2", "r2_per_dim", "mse", "mse_per_dim"):
        np.testing.assert_allclose(
            np.asarray(closed_form[name]), np.asarray(direct[name]), rtol=1e-4, atol=1e-5, err_msg=name
        )
    assert fitted == bool(closed_form.r2 > 0.5)


# ---------------------------------------------------------------------------------------------
# The linear probe protocol


# Every protocol run below regresses columns 3:5 on 0:3 of 5, so they share one compile.
X, Y = slice(0, 3), slice(3, 5)


def test_linear_probe_recovers_an_exactly_linear_map():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((1000, 3))
    mapping, offset = rng.standard_normal((3, 2)), rng.standard_normal(2)
    result = probes.linear_probe(three_splits(np.concatenate([x, x @ mapping + offset], axis=1)), x=X, y=Y)
    assert float(result.test.r2) > 0.9999 and float(result.validation.r2) > 0.9999
    assert (np.asarray(result.test.r2_per_dim) > 0.9999).all()
    np.testing.assert_allclose(np.asarray(result.probe.weights), mapping, rtol=0.0, atol=1e-2)
    np.testing.assert_allclose(np.asarray(result.probe.bias), offset, rtol=0.0, atol=1e-2)


def test_linear_probe_of_independent_noise_scores_about_zero():
    samples = np.random.default_rng(12).standard_normal((9000, 5))
    result = probes.linear_probe(three_splits(samples, (3000, 3000, 3000)), x=X, y=Y)
    assert abs(float(result.test.r2)) < 0.02
    assert (np.abs(np.asarray(result.test.r2_per_dim)) < 0.02).all()


def linear_and_constant(value: float) -> np.ndarray:
    """Inputs, a linear target and a target that is ``value`` in every sample."""
    x = np.random.default_rng(13).standard_normal((1000, 3))
    return np.concatenate([x, x @ [[1.0], [2.0], [-1.0]], np.full((1000, 1), value)], axis=1)


def test_linear_probe_r2_per_dim_is_nan_for_a_constant_target():
    # Zero is exact in float32 arithmetic: the constant column has no scatter at all.
    result = probes.linear_probe(three_splits(linear_and_constant(0.0)), x=X, y=Y)
    r2_per_dim = np.asarray(result.test.r2_per_dim)
    assert r2_per_dim[0] > 0.9999 and np.isnan(r2_per_dim[1])
    assert float(result.test.r2) > 0.9999  # the overall R^2 pools the dims that vary


def test_linear_probe_r2_per_dim_is_nan_for_a_constant_target_not_exact_in_float32():
    result = probes.linear_probe(three_splits(linear_and_constant(0.3), (400, 350, 250)), x=X, y=Y)
    assert np.isnan(np.asarray(result.test.r2_per_dim)[1])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_linear_probe_rejects_nan_or_inf_inputs(bad):
    samples = correlated_samples(14, 1000)
    samples[700, 1] = bad  # a test sample
    with pytest.raises(ValueError, match="NaN or inf"):
        probes.linear_probe(three_splits(samples), x=X, y=Y)


def test_linear_probe_rejects_a_split_with_too_few_samples():
    samples = correlated_samples(15, 20)
    # 4 validation samples for 3 inputs and an intercept.
    with pytest.raises(ValueError, match="too few samples"):
        probes.linear_probe(three_splits(samples, (10, 4, 6)), x=X, y=Y)
    # Enough everywhere: the same data cut differently fits.
    result = probes.linear_probe(three_splits(samples, (8, 6, 6)), x=X, y=Y)
    assert np.isfinite(float(result.test.r2))


@pytest.mark.parametrize(
    "x, y",
    [
        (slice(0, 3), slice(5, 7)),  # y past the end: not clipped
        (slice(0, 3), slice(3, 9)),  # y partly past the end
        (slice(None, 3), slice(3, 5)),  # open start
        (slice(3, 3), slice(3, 5)),  # empty x
        (slice(0, 3, 2), slice(3, 5)),  # not contiguous
        (range(0, 3), range(3, 9)),  # a range is not clipped
        (slice(0, 3), slice(4, 3)),  # reversed
    ],
)
def test_linear_probe_rejects_bad_blocks(x, y):
    with pytest.raises(ValueError, match="contiguous, non-empty block"):
        probes.linear_probe(three_splits(correlated_samples(16, 1000)), x=x, y=y)


def test_linear_probe_rejects_overlapping_blocks():
    with pytest.raises(ValueError, match="overlap"):
        probes.linear_probe(three_splits(correlated_samples(16, 1000)), x=slice(0, 4), y=slice(3, 5))


def test_linear_probe_needs_exactly_three_splits():
    samples = correlated_samples(17, 100)
    with pytest.raises(ValueError, match="3 splits"):
        probes.linear_probe(probes.split_moments(jnp.asarray(samples), (50, 50)), x=X, y=Y)


# ---------------------------------------------------------------------------------------------
# The MLP probe


def square_splits(seed: int, sizes=(2000, 500, 500)):
    """``(x, x^2)`` splits, x ~ U[-1, 1]: no linear dependence at all."""
    x = np.random.default_rng(seed).uniform(-1.0, 1.0, (sum(sizes), 1))
    samples = np.concatenate([x, x**2], axis=1).astype(np.float32)
    bounds = np.cumsum([0, *sizes])
    return [
        (jnp.asarray(samples[a:b, :1]), jnp.asarray(samples[a:b, 1:]))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]


def test_mlp_probe_fits_a_nonlinear_map_a_linear_probe_cannot():
    train, validation, test = square_splits(18)
    scores = probes.mlp_probe(
        jax.random.key(0), train, validation, test, width=32, num_steps=1000, batch_size=256
    )
    assert float(scores.r2) > 0.9
    # The best linear map, fitted on the same training samples, explains almost nothing.
    linear = probes.fit_ridge(
        probes.moments_of(jnp.concatenate(train, axis=1)), slice(0, 1), slice(1, 2), 0.0
    )
    linear_scores = probes.score_arrays(probes.predict(linear, test[0]), test[1])
    assert float(linear_scores.r2) < 0.1


def test_a_scatter_rounded_below_zero_gets_a_penalty_that_keeps_the_weights_bounded():
    # A float32 scatter matrix is positive semidefinite only up to its rounding: along a direction
    # the inputs barely move in, an eigenvalue of -0.5 eps lambda_max (what a trained Tiger agent's
    # readout gave). The smallest grid strength, 1e-6 of the mean variance, is below that, so the
    # system (S + penalty I) would be indefinite and the weight along that direction huge.
    eps = float(np.finfo(np.float32).eps)
    dx, rotation = 48, np.linalg.qr(np.random.default_rng(0).normal(size=(48, 48)))[0]
    eigenvalues = np.array([1000.0] + [1e-3] * (dx - 2) + [-0.5 * eps * 1000.0])
    scatter_xx = rotation @ np.diag(eigenvalues) @ rotation.T
    scatter_xy = rotation @ np.r_[100.0, [1e-3] * (dx - 1)][:, None]  # a little along the null too
    scatter = np.block([[scatter_xx, scatter_xy], [scatter_xy.T, np.array([[20.0]])]])
    moments = probes.Moments(
        count=jnp.float32(1000.0), mean=jnp.zeros(dx + 1), scatter=jnp.asarray(scatter, jnp.float32)
    )
    probe = probes.fit_ridge(moments, slice(0, dx), slice(dx, dx + 1), 1e-6)
    along_null = float(np.asarray(probe.weights)[:, 0] @ rotation[:, -1])
    # The floor: penalty >= ROUNDING_FLOOR * tr(S_xx), so the null direction's weight is at most
    # 1e-3 / (ROUNDING_FLOOR * tr - 0.5 eps lambda_max), about 6 (float32 solve: 10% slack).
    trace = eigenvalues.sum()
    bound = 1e-3 / (probes.ROUNDING_FLOOR * trace - 0.5 * eps * 1000.0)
    assert abs(along_null) <= 1.1 * bound  # without the floor: 1e-3 / (2.1e-5 - 6e-5), about -26


def test_an_input_column_constant_in_training_moves_no_mlp_prediction():
    # Column 1 never moves in training (an action no training history took): whatever value it
    # takes later, the frozen MLP cannot have learnt what it means and must predict as if it were
    # still at its training value. A tiny standardising scale instead multiplied it by 1e6.
    x = jax.random.normal(jax.random.key(0), (256, 2)).at[:, 1].set(0.0)
    y = jnp.sin(2.0 * x[:, :1])
    readout = probes.fit_mlp(jax.random.key(1), (x, y), (x, y), width=16, num_steps=1000, batch_size=64)
    moved = x.at[:, 1].set(1.0)
    np.testing.assert_array_equal(probes.apply_mlp(readout, moved), probes.apply_mlp(readout, x))
    scores = probes.mlp_probe(
        jax.random.key(1), (x, y), (x, y), (moved, y), width=16, num_steps=1000, batch_size=64
    )
    assert scores.r2 > 0.5  # the varying column still carries the fit


@pytest.mark.parametrize("split", [0, 1, 2])
def test_mlp_probe_rejects_nan_in_any_split(split):
    splits = square_splits(19, (20, 10, 10))
    x, y = splits[split]
    splits[split] = (x.at[3, 0].set(jnp.nan), y)
    with pytest.raises(ValueError, match="NaN or inf"):
        probes.mlp_probe(jax.random.key(0), *splits, width=8, num_steps=100, batch_size=8)


def test_mlp_probe_rejects_mismatched_samples():
    train, validation, test = square_splits(20, (20, 10, 10))
    with pytest.raises(ValueError, match="too few or mismatched"):
        probes.mlp_probe(jax.random.key(0), train, (validation[0], test[1][:9]), test)


def test_scores_of_targets_that_never_vary_are_nan_and_none_in_json():
    targets = jnp.full((64, 2), 0.5)
    scores = probes.score_arrays(targets + 0.1, targets)
    assert np.isnan(float(scores.r2)) and np.isnan(np.asarray(scores.r2_per_dim)).all()
    assert scores.to_dict()["r2"] is None and scores.to_dict()["r2_per_dim"] == [None, None]
    assert scores.to_dict()["mse"] == pytest.approx(0.01)


# ---------------------------------------------------------------------------------------------
# The linear probe protocol against a float64 re-implementation


def reference_protocol(splits: list[np.ndarray], x: slice, y: slice, grid) -> dict:
    """float64 NumPy, from the protocol's definition: fit each ridge strength on the training
    samples, pick the best validation R^2, refit on training + validation, score on the test set.

    A fit centres inputs and targets and solves ``(S_xx + ridge tr(S_xx) / dx I) W = S_xy`` (ridge
    at least ``ROUNDING_FLOOR * dx``); the
    intercept, unpenalised, carries the means. R^2 pools the target dims that vary.
    """

    def fit(z, ridge):
        inputs, targets = z[:, x], z[:, y]
        centred_x, centred_y = inputs - inputs.mean(axis=0), targets - targets.mean(axis=0)
        scatter = centred_x.T @ centred_x
        size = scatter.shape[0]
        penalty = max(ridge, probes.ROUNDING_FLOOR * size) * np.trace(scatter) / size * np.eye(size)
        weights = np.linalg.solve(scatter + penalty, centred_x.T @ centred_y)
        return weights, targets.mean(axis=0) - inputs.mean(axis=0) @ weights

    def score(z, weights, bias):
        targets = z[:, y]
        errors = ((targets - z[:, x] @ weights - bias) ** 2).sum(axis=0)
        total = ((targets - targets.mean(axis=0)) ** 2).sum(axis=0)
        varies = total > 1e-12
        return {
            "r2": 1.0 - errors[varies].sum() / total[varies].sum(),
            "r2_per_dim": np.where(varies, 1.0 - errors / np.where(varies, total, 1.0), np.nan),
            "mse": errors.sum() / targets.size,
            "mse_per_dim": errors / targets.shape[0],
        }

    train, validation, test = (np.asarray(split, np.float64) for split in splits)
    candidates = [score(validation, *fit(train, ridge)) for ridge in grid]
    best = int(np.nanargmax([candidate["r2"] for candidate in candidates]))
    weights, bias = fit(np.concatenate([train, validation]), grid[best])
    return {
        "best": best,
        "validation_r2": np.array([candidate["r2"] for candidate in candidates]),
        "validation": candidates[best],
        "weights": weights,
        "bias": bias,
        "train_only_weights": fit(train, grid[best])[0],
        "test": score(test, weights, bias),
    }


def assert_scores_equal(scores: probes.ProbeScores, expected: dict, what: str) -> None:
    for name, value in expected.items():
        np.testing.assert_allclose(
            np.asarray(scores[name]), value, rtol=1e-4, atol=1e-5, err_msg=f"{what} {name}"
        )


@pytest.mark.parametrize("seed", [26, 17])
def test_linear_probe_protocol_equals_a_float64_reimplementation(seed):
    """Few, noisy training samples, so the ridge strength matters: at these seeds the validation
    R^2 peaks inside the grid (0.1 at seed 26, 0.01 at 17), clear of its neighbours."""
    rng = np.random.default_rng(seed)
    sizes = (12, 60, 60)
    mixing = rng.standard_normal((3, 3))
    x_part = 5.0 + rng.standard_normal((sum(sizes), 3)) @ mixing
    mapping = 0.3 * rng.standard_normal((3, 2))
    y_part = x_part @ mapping - 2.0 + 1.5 * rng.standard_normal((sum(sizes), 2))
    samples = np.concatenate([x_part, y_part], axis=1).astype(np.float32)
    splits = np.split(samples, np.cumsum(sizes)[:-1])
    expected = reference_protocol(splits, X, Y, probes.DEFAULT_RIDGE_GRID)
    result = probes.linear_probe(three_splits(samples, sizes), x=X, y=Y)

    # The choice is not at either end of the grid, and clear enough for float32 to agree.
    assert 0 < expected["best"] < len(probes.DEFAULT_RIDGE_GRID) - 1
    assert np.sort(expected["validation_r2"])[-1] - np.sort(expected["validation_r2"])[-2] > 5e-3
    assert result.ridge == probes.DEFAULT_RIDGE_GRID[expected["best"]]
    assert_scores_equal(result.validation, expected["validation"], "validation")
    np.testing.assert_allclose(np.asarray(result.probe.weights), expected["weights"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(result.probe.bias), expected["bias"], rtol=1e-4, atol=1e-4)
    assert_scores_equal(result.test, expected["test"], "test")
    # Refitting on training + validation samples is visible: the training fit alone differs.
    assert np.abs(expected["train_only_weights"] - expected["weights"]).max() > 1e-2


def test_linear_probe_compiles_once_for_every_pair_of_blocks_of_one_width():
    """The blocks reach the compiled program as masks: x -> y, y -> x and part of x -> y share it,
    and each still equals the float64 protocol on its own blocks."""
    rng = np.random.default_rng(5)
    sizes = (40, 30, 30)
    samples = correlated_samples(9, sum(sizes)) + 0.5 * rng.standard_normal((sum(sizes), 5)).astype(
        np.float32
    )
    splits = np.split(samples, np.cumsum(sizes)[:-1])
    moments = three_splits(samples, sizes)
    probes._linear_probe.clear_cache()
    for x, y in ((X, Y), (Y, X), (slice(1, 3), Y)):
        result = probes.linear_probe(moments, x=x, y=y)
        expected = reference_protocol(splits, x, y, probes.DEFAULT_RIDGE_GRID)
        assert result.ridge == probes.DEFAULT_RIDGE_GRID[expected["best"]]
        np.testing.assert_allclose(
            np.asarray(result.probe.weights), expected["weights"], rtol=1e-3, atol=1e-4
        )
        np.testing.assert_allclose(np.asarray(result.probe.bias), expected["bias"], rtol=1e-3, atol=1e-3)
        assert_scores_equal(result.validation, expected["validation"], f"{x} -> {y} validation")
        assert_scores_equal(result.test, expected["test"], f"{x} -> {y} test")
    assert probes._linear_probe._cache_size() == 1


# ---------------------------------------------------------------------------------------------
# The logistic fitter against a float64 IRLS


def reference_logistic(x, y, sample_weights, penalty: float) -> tuple[np.ndarray, float]:
    """float64 Newton (IRLS) on the weighted mean log-loss + penalty / 2 |w|^2, intercept free;
    run to convergence, no damping. Returns ``(weights [d], bias)``."""
    x, y, c = (np.asarray(a, np.float64) for a in (x, y, sample_weights))
    design = np.hstack([np.ones((len(x), 1)), x])
    share = c / c.sum()
    ridge = np.diag([0.0] + [penalty] * x.shape[1])
    theta = np.zeros(design.shape[1])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-design @ theta))
        gradient = design.T @ (share * (p - y)) + ridge @ theta
        hessian = design.T @ (design * (share * p * (1 - p))[:, None]) + ridge
        theta -= np.linalg.solve(hessian, gradient)
    assert np.abs(gradient).max() < 1e-10  # the reference reached the minimum
    return theta[1:], float(theta[0])


fit_logistic = jax.jit(probes.fit_logistic, static_argnames=("steps",))


def logistic_case(seed: int, n: int = 60):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2)) * [1.0, 3.0] + [0.5, -1.0]
    labels = (rng.random(n) < 1.0 / (1.0 + np.exp(-(x @ [1.5, -0.4] + 0.3)))).astype(np.float64)
    weights = rng.uniform(0.0, 2.0, n) * (rng.random(n) < 0.8)  # some rows left out
    return x, labels, weights


@pytest.mark.parametrize("penalty", [0.0, 0.05])
def test_fit_logistic_equals_a_float64_irls_with_sample_weights_and_a_penalty(penalty):
    x, labels, weights = logistic_case(seed=3)
    soft = 0.8 * labels + 0.1  # soft labels as well as hard ones
    for y in (labels, soft):
        fit = fit_logistic(*(jnp.asarray(a, jnp.float32) for a in (x, y, weights)), penalty=penalty, steps=30)
        expected_weights, expected_bias = reference_logistic(x, y, weights, penalty)
        np.testing.assert_allclose(np.asarray(fit.weights), expected_weights, rtol=1e-4, atol=1e-5)
        assert float(fit.bias) == pytest.approx(expected_bias, rel=1e-4, abs=1e-5)
        assert bool(fit.converged)
    # The weights matter: ignoring them fits another line.
    unweighted = reference_logistic(x, labels, np.ones(len(x)), penalty)[0]
    assert np.abs(unweighted - reference_logistic(x, labels, weights, penalty)[0]).max() > 0.05


def test_fit_logistic_of_labels_that_ignore_the_inputs_is_the_label_rate_alone():
    x, _, weights = logistic_case(seed=4)
    fit = fit_logistic(jnp.asarray(x), jnp.full(len(x), 0.3), jnp.asarray(weights), steps=30)
    assert np.abs(np.asarray(fit.weights)).max() < 1e-5
    assert float(fit.bias) == pytest.approx(np.log(0.3 / 0.7), abs=1e-5)


def test_fit_logistic_of_separable_labels_does_not_converge_unless_penalised():
    x, _, weights = logistic_case(seed=5)
    separable = (x[:, 0] > 0.5).astype(np.float64)
    arrays = (
        jnp.asarray(x, jnp.float32),
        jnp.asarray(separable, jnp.float32),
        jnp.asarray(weights, jnp.float32),
    )
    assert not bool(fit_logistic(*arrays, steps=30).converged)  # the slope grows without bound
    penalised = fit_logistic(*arrays, penalty=0.1, steps=30)
    assert bool(penalised.converged)
    np.testing.assert_allclose(
        np.asarray(penalised.weights), reference_logistic(x, separable, weights, 0.1)[0], rtol=1e-4, atol=1e-5
    )
