"""Probes: how well does one representation decode another (hidden <-> belief), on held-out tasks.

Linear probes are ridge regressions fitted in closed form from streaming sufficient statistics
(``Moments``: count, mean and centred scatter matrix of ``z = [x, y]``), which a rollout
accumulates step by step in O(d^2) memory, merged with Chan et al.'s pairwise update so float32
stays accurate over 10^8 samples. Any block of ``z`` can be regressed on any other, so one set of
statistics serves both directions (hidden -> belief and belief -> hidden).

The protocol of ``linear_probe``: fit on the training tasks for each ridge strength, choose the
strength on the validation tasks, refit on training + validation tasks, and score on the test
tasks, which never share a task with the fit. ``mlp_probe`` is the nonlinear check on stored
samples. Both raise a ValueError on NaN/inf inputs or too few samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

DEFAULT_RIDGE_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
# The smallest ridge penalty, relative to tr(S_xx) >= lambda_max: two float32 epsilons, four times
# the rounding seen in a scatter matrix summed in float32 (-0.5 eps lambda_max; ``fit_ridge``).
ROUNDING_FLOOR = 2 * float(np.finfo(np.float32).eps)
_CONSTANT_COLUMN_STD = 1e-6  # an MLP input column varying less than this in training is constant


# ----------------------------------------------------------------------------- statistics
@chex.dataclass(frozen=True)
class Moments:
    """Sufficient statistics of samples ``z`` (optionally batched over leading axes)."""

    count: jax.Array  # float32[...]
    mean: jax.Array  # float32[..., d]
    scatter: jax.Array  # float32[..., d, d]: sum of (z - mean)(z - mean)^T


def empty_moments(size: int, batch_shape: tuple[int, ...] = ()) -> Moments:
    """Statistics of no samples, for ``z`` of length ``size``."""
    return Moments(
        count=jnp.zeros(batch_shape, jnp.float32),
        mean=jnp.zeros((*batch_shape, size), jnp.float32),
        scatter=jnp.zeros((*batch_shape, size, size), jnp.float32),
    )


def moments_of(z: jax.Array) -> Moments:
    """Statistics of the rows of ``z``, ``float32[n, d]``."""
    z = z.astype(jnp.float32)
    mean = z.mean(axis=0)
    centred = z - mean  # two passes: z^T z - n m m^T loses float32 digits when |mean| >> std
    return Moments(count=jnp.asarray(z.shape[0], jnp.float32), mean=mean, scatter=centred.T @ centred)


def split_moments(z: jax.Array, split_sizes: Sequence[int]) -> Moments:
    """Statistics of consecutive row blocks of ``z`` [n, d], stacked over the blocks: [S, ...]."""
    bounds = np.cumsum([0, *split_sizes])
    blocks = [moments_of(z[start:stop]) for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *blocks)


def merge(a: Moments, b: Moments) -> Moments:
    """Statistics of the union of two sample sets (Chan, Golub & LeVeque's pairwise update)."""
    count = a.count + b.count
    weight_b = jnp.where(count > 0, b.count / jnp.maximum(count, 1.0), 0.0)
    delta = b.mean - a.mean
    mean = a.mean + weight_b[..., None] * delta
    correction = (a.count * weight_b)[..., None, None] * delta[..., :, None] * delta[..., None, :]
    return Moments(count=count, mean=mean, scatter=a.scatter + b.scatter + correction)


def pool(moments: Moments, indices: Sequence[int]) -> Moments:
    """Merges the statistics ``moments[i]`` for ``i`` in ``indices`` (e.g. train + validation)."""
    pooled = jax.tree.map(lambda leaf: leaf[indices[0]], moments)
    for index in indices[1:]:
        pooled = merge(pooled, jax.tree.map(lambda leaf, i=index: leaf[i], moments))
    return pooled


# ----------------------------------------------------------------------------- linear probes
@chex.dataclass(frozen=True)
class LinearProbe:
    """``y ~ x @ weights + bias``."""

    weights: jax.Array  # float32[dx, dy]
    bias: jax.Array  # float32[dy]


@chex.dataclass(frozen=True)
class ProbeScores:
    """How well a probe predicts held-out samples."""

    r2: jax.Array  # float32[]: 1 - sum of squared errors / total sum of squares, over the dims that vary
    r2_per_dim: jax.Array  # float32[dy]: NaN where the target does not vary
    mse: jax.Array  # float32[]: mean over samples and dims
    mse_per_dim: jax.Array  # float32[dy]

    def to_dict(self) -> dict:
        """Plain Python numbers for JSON, NaN (a target that does not vary) as None."""
        number = lambda v: None if np.isnan(v) else float(v)  # noqa: E731
        return {
            "r2": number(self.r2),
            "r2_per_dim": [number(v) for v in np.asarray(self.r2_per_dim)],
            "mse": number(self.mse),
            "mse_per_dim": [number(v) for v in np.asarray(self.mse_per_dim)],
        }


def fit_ridge(
    moments: Moments, x: slice, y: slice, ridge: float | jax.Array, mask: jax.Array | None = None
) -> LinearProbe:
    """Ridge regression of ``z[y]`` on ``z[x]`` with an unpenalised intercept.

    The penalty is ``ridge`` times the mean input variance, so strengths are comparable across
    representations: ``W = (S_xx + ridge * tr(S_xx) / dx * I)^-1 S_xy``, and at least
    ``ROUNDING_FLOOR * tr(S_xx)``: statistics summed in float32 give a scatter matrix that is
    positive semidefinite only up to its rounding (eigenvalues down to about ``-eps * lambda_max``
    along directions the inputs barely move in), and a smaller penalty leaves the system indefinite
    and the weights unbounded along them. (A trained Tiger agent's readout: an eigenvalue of
    -0.0021 beside a penalty of 0.0015 at ``ridge`` 1e-6 gave weights 7x too large and a test R^2 of
    -0.52 where the same probe in float64 scores 0.84.)

    ``mask`` (0/1 ``[dx]``, default all 1) keeps only some columns of ``z[x]`` as inputs: the others
    get zero weights and count neither in ``tr(S_xx)`` nor in ``dx``, so a block padded with
    masked-out columns gives the probe of the block alone (up to float rounding) in a program
    whose shapes do not depend on the block's width.
    """
    scatter_xx = moments.scatter[x, x]
    mask = jnp.ones(scatter_xx.shape[0], scatter_xx.dtype) if mask is None else mask
    scatter_xx = scatter_xx * mask[:, None] * mask[None, :]
    scale = jnp.maximum(jnp.trace(scatter_xx) / jnp.sum(mask), 1e-30)
    penalty = jnp.maximum(ridge, ROUNDING_FLOOR * jnp.sum(mask)) * scale  # >= ROUNDING_FLOOR * trace
    # A masked-out column's row is the identity's, with a zero right-hand side: its weight is 0.
    system = scatter_xx + jnp.diag(penalty * mask + (1.0 - mask))
    weights = jnp.linalg.solve(system, moments.scatter[x, y] * mask[:, None]) * mask[:, None]
    return LinearProbe(weights=weights, bias=moments.mean[y] - moments.mean[x] @ weights)


def score_moments(
    probe: LinearProbe, moments: Moments, x: slice, y: slice, mask: jax.Array | None = None
) -> ProbeScores:
    """Scores ``probe`` on the samples summarised by ``moments``, in closed form; with ``mask``
    (0/1 ``[dy]``), the pooled ``r2`` and ``mse`` are over the columns of ``z[y]`` it selects."""
    w = probe.weights
    offset = moments.mean[y] - moments.mean[x] @ w - probe.bias  # mean residual [dy]
    total = jnp.diagonal(moments.scatter[y, y])
    errors = (
        total
        - 2.0 * jnp.sum(w * moments.scatter[x, y], axis=0)
        + jnp.sum(w * (moments.scatter[x, x] @ w), axis=0)
        + moments.count * offset**2
    )
    return _scores(jnp.maximum(errors, 0.0), total, moments.count, moments.mean[y], mask)


def score_arrays(predictions: jax.Array, targets: jax.Array) -> ProbeScores:
    """Scores predictions ``[..., dy]`` of ``targets`` ``[..., dy]`` (all leading axes are samples)."""
    predictions = predictions.reshape(-1, predictions.shape[-1])
    targets = targets.reshape(-1, targets.shape[-1])
    errors = jnp.sum((targets - predictions) ** 2, axis=0)
    mean = targets.mean(axis=0)
    total = jnp.sum((targets - mean) ** 2, axis=0)
    return _scores(errors, total, jnp.asarray(targets.shape[0], jnp.float32), mean)


def _scores(
    errors: jax.Array, total: jax.Array, count: jax.Array, mean: jax.Array, mask: jax.Array | None = None
) -> ProbeScores:
    """Scores from each target column's sum of squared ``errors`` and ``total`` sum of squares;
    ``r2`` and ``mse`` pooled over the columns ``mask`` selects (default all)."""
    # A target varies when its variance is resolvable in float32 next to its mean: a constant's
    # float32 mean can be an ulp off, which leaves a spurious ~(ulp * mean)^2 scatter.
    varies = total > 1e-10 * count * mean**2 + 1e-30
    r2_per_dim = jnp.where(varies, 1.0 - errors / jnp.where(varies, total, 1.0), jnp.nan)
    pooled = varies if mask is None else varies & (mask > 0)
    varied_total = jnp.sum(jnp.where(pooled, total, 0.0))
    r2 = jnp.where(varied_total > 0, 1.0 - jnp.sum(jnp.where(pooled, errors, 0.0)) / varied_total, jnp.nan)
    mse = errors.mean() if mask is None else jnp.sum(errors * mask) / jnp.sum(mask)
    return ProbeScores(r2=r2, r2_per_dim=r2_per_dim, mse=mse / count, mse_per_dim=errors / count)


def predict(probe: LinearProbe, x: jax.Array) -> jax.Array:
    """Probe output for inputs ``x`` ``[..., dx]``."""
    return x @ probe.weights + probe.bias


@chex.dataclass(frozen=True)
class LinearProbeResult:
    probe: LinearProbe
    ridge: float  # the strength chosen on the validation tasks
    validation: ProbeScores  # of the probe fitted on the training tasks with that strength
    test: ProbeScores  # of the refitted probe on the test tasks


def linear_probe(
    moments: Moments, x: slice, y: slice, ridge_grid: Sequence[float] = DEFAULT_RIDGE_GRID
) -> LinearProbeResult:
    """Fits, selects and scores a ridge probe of ``z[y]`` on ``z[x]``.

    Args:
      moments: statistics stacked over three task splits ``[3, ...]``: train, validation, test
        (e.g. from ``metabelief.rollout.probe_moments`` with three split sizes).
      x, y: the input and target blocks of ``z``, as slices or ranges (e.g. ``slice(0, 48)``).
      ridge_grid: candidate relative ridge strengths.
    """
    if moments.count.shape != (3,):
        raise ValueError(
            f"moments must be stacked over 3 splits (train, validation, test), got {moments.count.shape}"
        )
    size = moments.mean.shape[-1]
    x_bounds, y_bounds = _bounds("x", x, size), _bounds("y", y, size)
    if max(x_bounds[0], y_bounds[0]) < min(x_bounds[1], y_bounds[1]):
        raise ValueError(f"x and y overlap: {x!r}, {y!r}")
    _validate(moments, minimum_count=x_bounds[1] - x_bounds[0] + 2)
    x_mask, y_mask = _block_mask(x_bounds, size), _block_mask(y_bounds, size)
    result = _linear_probe(moments, jnp.asarray(ridge_grid, jnp.float32), x_mask, y_mask)
    x, y = slice(*x_bounds), slice(*y_bounds)
    return LinearProbeResult(
        probe=LinearProbe(weights=result["probe"].weights[x, y], bias=result["probe"].bias[y]),
        ridge=ridge_grid[int(result["best"])],
        validation=_columns(result["validation"], y),
        test=_columns(result["test"], y),
    )


@jax.jit
def _linear_probe(moments: Moments, ridge_grid: jax.Array, x_mask: jax.Array, y_mask: jax.Array) -> dict:
    """``linear_probe`` on blocks given as masks over all ``d`` columns of ``z``, so one compiled
    program serves every pair of blocks: the probe of every column on the ``x`` columns (``[d, d]``),
    scored over the ``y`` columns; ``linear_probe`` takes the ``[x, y]`` block of its results."""
    z = slice(0, x_mask.shape[0])
    train, validation, test = (jax.tree.map(lambda leaf, i=i: leaf[i], moments) for i in range(3))

    def fit_and_score(ridge):
        return score_moments(fit_ridge(train, z, z, ridge, x_mask), validation, z, z, y_mask)

    candidates = jax.vmap(fit_and_score)(ridge_grid)
    best = jnp.nanargmax(candidates.r2)
    probe = fit_ridge(merge(train, validation), z, z, ridge_grid[best], x_mask)
    return {
        "probe": probe,
        "best": best,
        "validation": jax.tree.map(lambda leaf: leaf[best], candidates),
        "test": score_moments(probe, test, z, z, y_mask),
    }


def _bounds(name: str, block: slice | range, size: int) -> tuple[int, int]:
    """``(start, stop)`` of a contiguous, non-empty block of ``z`` (hashable, unlike a slice)."""
    start, stop, step = block.start, block.stop, block.step
    if isinstance(block, slice):  # no open ends, no clipping: a block is stated in full
        step = 1 if step is None else step
    if not all(isinstance(v, int) for v in (start, stop)) or step != 1 or not 0 <= start < stop <= size:
        raise ValueError(
            f"{name} must be a contiguous, non-empty block of the {size} statistics, got {block!r}"
        )
    return start, stop


def _columns(scores: ProbeScores, y: slice) -> ProbeScores:
    """``scores`` with the per-column figures of the columns ``y`` only."""
    return scores.replace(r2_per_dim=scores.r2_per_dim[y], mse_per_dim=scores.mse_per_dim[y])


def _block_mask(bounds: tuple[int, int], size: int) -> np.ndarray:
    """``float32[size]``: 1 on the columns ``[start, stop)``, 0 elsewhere."""
    columns = np.arange(size)
    return ((bounds[0] <= columns) & (columns < bounds[1])).astype(np.float32)


def _validate(moments: Moments, minimum_count: int) -> None:
    finite = all(bool(jnp.isfinite(leaf).all()) for leaf in (moments.mean, moments.scatter))
    if not finite:
        raise ValueError("probe inputs contain NaN or inf")
    fewest = float(jnp.min(moments.count))
    if fewest < minimum_count:
        raise ValueError(
            f"too few samples for a probe: a split has {fewest:.0f}, needs at least {minimum_count}"
        )


# ----------------------------------------------------------------------------- logistic probe
@chex.dataclass(frozen=True)
class LogisticFit:
    """``P(y = 1 | x) = sigmoid(x @ weights + bias)``, fitted by ``fit_logistic``."""

    weights: jax.Array  # float32[d]
    bias: jax.Array  # float32[]
    converged: jax.Array  # bool[]: the last Newton step was below 1e-4 (1 + max |coefficient|), all finite


def fit_logistic(
    x: jax.Array,
    y: jax.Array,
    sample_weights: jax.Array,
    *,
    penalty: float | jax.Array = 0.0,
    steps: int,
    start: LogisticFit | None = None,
    damping: float = 1e-6,
) -> LogisticFit:
    """Weighted, L2-penalised logistic regression by Newton's method (IRLS); jittable, vmappable.

    Minimises the weighted mean log-loss of labels ``y [n]`` in [0, 1] (soft labels allowed) on
    inputs ``x [n, d]``, plus an L2 penalty on the weights (the intercept free)::

        L(w, b) = sum_i c_i [softplus(z_i) - y_i z_i] / sum_i c_i + penalty / 2 |w|^2,  z_i = x_i w + b

    with ``sample_weights`` ``c [n] >= 0`` (0 leaves a row out; all 0: only the penalty is left).
    ``steps`` Newton steps from ``start`` (default all 0), each solving with the Hessian's
    diagonal raised by ``damping``, which steadies the solve and leaves the minimum unchanged.
    Without a penalty, labels separable by the inputs have no minimum (the coefficients grow
    without bound): ``converged`` is then False.
    """
    design = jnp.concatenate([jnp.ones((x.shape[0], 1), x.dtype), x], axis=1)  # [n, 1 + d]: bias first
    total = jnp.sum(sample_weights)
    share = sample_weights / jnp.where(total > 0, total, 1.0)  # [n], sums to 1 (or all 0)
    penalised = penalty * jnp.ones(design.shape[1]).at[0].set(0.0)  # [1 + d]
    theta = (
        jnp.zeros(design.shape[1], design.dtype)
        if start is None
        else jnp.concatenate([start.bias[None], start.weights])
    )

    def newton(theta, _):
        p = jax.nn.sigmoid(design @ theta)
        gradient = design.T @ (share * (p - y)) + penalised * theta
        hessian = (design.T * (share * p * (1.0 - p))) @ design + jnp.diag(penalised + damping)
        step = jnp.linalg.solve(hessian, gradient)
        return theta - step, jnp.max(jnp.abs(step))

    theta, sizes = jax.lax.scan(newton, theta, None, length=steps)
    converged = (sizes[-1] < 1e-4 * (1.0 + jnp.max(jnp.abs(theta)))) & jnp.all(jnp.isfinite(theta))
    return LogisticFit(weights=theta[1:], bias=theta[0], converged=converged)


# ----------------------------------------------------------------------------- nonlinear probe
class _MLP(nn.Module):
    width: int
    out_size: int

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.width)(x))
        x = nn.relu(nn.Dense(self.width)(x))
        return nn.Dense(self.out_size)(x)


def mlp_probe(
    key: jax.Array,
    train: tuple[jax.Array, jax.Array],
    validation: tuple[jax.Array, jax.Array],
    test: tuple[jax.Array, jax.Array],
    *,
    width: int = 64,
    num_steps: int = 2000,
    batch_size: int = 2048,
    learning_rate: float = 1e-3,
) -> ProbeScores:
    """A two-hidden-layer MLP probe (Adam, minibatches), kept at its best validation score.

    Each split is ``(x [n, dx], y [n, dy])`` of samples from disjoint tasks; inputs and targets
    are standardised with the training statistics (an input column constant in training is set
    to 0 everywhere: nothing was learnt about it). Returns the test scores.
    """
    for name, (inputs, targets) in {"train": train, "validation": validation, "test": test}.items():
        if not (bool(jnp.isfinite(inputs).all()) and bool(jnp.isfinite(targets).all())):
            raise ValueError(f"probe inputs contain NaN or inf ({name} split)")
        if inputs.shape[0] < 2 or inputs.shape[0] != targets.shape[0]:
            raise ValueError(
                f"too few or mismatched samples for a probe in the {name} split: {inputs.shape[0]}"
            )
    predictions = _mlp_fit_predict(
        key, train, validation, test[0], width, num_steps, batch_size, learning_rate
    )
    return score_arrays(predictions, test[1])


def mlp_map(
    key: jax.Array,
    train: tuple[jax.Array, jax.Array],
    validation: tuple[jax.Array, jax.Array],
    inputs: jax.Array,
    *,
    width: int = 64,
    num_steps: int = 2000,
    batch_size: int = 2048,
    learning_rate: float = 1e-3,
) -> jax.Array:
    """The MLP of ``mlp_probe`` fitted on ``train``, kept at its best ``validation`` score, applied
    to ``inputs [n, dx]``: its predictions ``[n, dy]``."""
    return _mlp_fit_predict(key, train, validation, inputs, width, num_steps, batch_size, learning_rate)


@chex.dataclass(frozen=True)
class MLPReadout:
    """A fitted MLP map, frozen: apply it to new inputs with ``apply_mlp``."""

    params: dict
    x_mean: jax.Array
    x_std: jax.Array
    y_mean: jax.Array
    y_std: jax.Array


def fit_mlp(
    key: jax.Array,
    train: tuple[jax.Array, jax.Array],
    validation: tuple[jax.Array, jax.Array],
    *,
    width: int = 64,
    num_steps: int = 2000,
    batch_size: int = 2048,
    learning_rate: float = 1e-3,
) -> MLPReadout:
    """The MLP of ``mlp_map``, returned rather than applied (to apply one read-out, unchanged, to
    inputs that arrive later)."""
    return _mlp_fit(key, train, validation, width, num_steps, batch_size, learning_rate)


@jax.jit
def apply_mlp(readout: MLPReadout, inputs: jax.Array) -> jax.Array:
    """A fitted MLP's predictions ``[n, dy]`` for ``inputs [n, dx]``."""
    network = _MLP(
        width=readout.params["params"]["Dense_0"]["kernel"].shape[-1], out_size=readout.y_mean.shape[-1]
    )
    return (
        network.apply(readout.params, (inputs - readout.x_mean) / readout.x_std) * readout.y_std
        + readout.y_mean
    )


def _input_scale(x_train: jax.Array) -> jax.Array:
    """Each input column's standard deviation over the training rows; infinite for a column that
    does not vary there, so that it standardises to 0 wherever it is applied: the network never
    saw it move and cannot have learned what a move means (a tiny scale instead would blow a value
    it never took in training up by a million, e.g. an action no training history contains)."""
    std = x_train.std(0)
    return jnp.where(std > _CONSTANT_COLUMN_STD, std, jnp.inf)


@jax.jit(static_argnums=(4, 5, 6, 7))
def _mlp_fit_predict(key, train, validation, inputs, width, num_steps, batch_size, learning_rate):
    return apply_mlp(_mlp_fit(key, train, validation, width, num_steps, batch_size, learning_rate), inputs)


@jax.jit(static_argnums=(3, 4, 5, 6))
def _mlp_fit(key, train, validation, width, num_steps, batch_size, learning_rate) -> MLPReadout:
    x_train, y_train = train
    network = _MLP(width=width, out_size=y_train.shape[-1])
    standard = MLPReadout(
        params={},
        x_mean=x_train.mean(0),
        x_std=_input_scale(x_train),
        y_mean=y_train.mean(0),
        y_std=y_train.std(0) + 1e-6,
    )
    init_key, batch_key = jax.random.split(key)
    params = network.init(init_key, x_train[:1])
    optimiser = optax.adam(learning_rate)

    def loss(params, x, y):
        return jnp.mean(((apply_mlp(standard.replace(params=params), x) - y) / standard.y_std) ** 2)

    def train_step(carry, step_key):
        params, opt_state = carry
        rows = jax.random.randint(step_key, (batch_size,), 0, x_train.shape[0])
        grads = jax.grad(loss)(params, x_train[rows], y_train[rows])
        updates, opt_state = optimiser.update(grads, opt_state)
        return (optax.apply_updates(params, updates), opt_state), None

    num_rounds = max(num_steps // 100, 1)

    def train_round(carry, round_key):
        params, opt_state, best_params, best_loss = carry
        (params, opt_state), _ = jax.lax.scan(
            train_step, (params, opt_state), jax.random.split(round_key, 100)
        )
        validation_loss = loss(params, *validation)
        better = validation_loss < best_loss
        best_params = jax.tree.map(lambda new, old: jnp.where(better, new, old), params, best_params)
        return (params, opt_state, best_params, jnp.minimum(validation_loss, best_loss)), None

    carry = (params, optimiser.init(params), params, jnp.asarray(jnp.inf, jnp.float32))
    (_, _, best_params, _), _ = jax.lax.scan(train_round, carry, jax.random.split(batch_key, num_rounds))
    return standard.replace(params=best_params)
