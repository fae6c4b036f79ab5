"""Results over independently trained agents: 95% intervals over seeds.

An experiment run with ``S`` seeds writes one result dict per seed, each with the keys a one-seed
run writes, and a summary of the same shape in which every number becomes an ``interval``
``{"mean", "low", "high", "n", "method"}``: the across-seed mean of the defined values (None and
NaN left out), ``n`` of them, and a 95% confidence interval by one of three methods:

* ``"t"`` (the default): Student's t, ``mean ± t(0.975, n - 1) · sd / √n`` (sd with ``n - 1``
  in the denominator);
* ``"bootstrap"``, for a quantity bounded to a support (a dissimilarity >= 0, a probability in
  [0, 1], an R² <= 1), where the t interval can leave the support: the expanded percentile
  bootstrap of the mean over seeds (Hesterberg 2015, "What teachers should know about the
  bootstrap", The American Statistician 69(4), section 5), ``BOOTSTRAP_RESAMPLES`` resamples of
  the seeds drawn with ``numpy.random.default_rng(BOOTSTRAP_SEED)``, cut at the percentiles
  ``Φ(∓√(n / (n - 1)) · t(0.975, n - 1))`` rather than 2.5% and 97.5% (the plain percentile
  interval is too narrow for few seeds); every resampled mean lies between the smallest and the
  largest seed, so the interval stays inside any interval-shaped support;
* ``"t+tasks"``, for a figure measured on held-out tasks that every seed shares (the tasks'
  sampling error is the same draw for all seeds, so it does not shrink with them): the t
  half-width and ``1.96 ×`` the seeds' mean standard error over the tasks (each seed's
  ``<key>_se``; the mean bounds the s.e. of the seeds' mean for any correlation between them)
  added in quadrature.

Lists of numbers (R² by time, per-dimension R²) are summarised element by element; anything else
(strings, config values) is kept when every seed agrees. Which keys are bounded and which carry a
task error is declared by the caller (``summarize``'s ``supports`` and ``task_error``; the
experiments' declarations: ``metabelief.experiments.interval_rules``).
"""

from __future__ import annotations

import fnmatch
import functools
import math
import statistics
from collections.abc import Mapping, Sequence

import numpy as np

CONFIDENCE = 0.95


def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with ``df`` (integer >= 1) degrees of freedom.

    The finite trigonometric sums of Abramowitz & Stegun 26.7.3-4 (exact for integer ``df``):
    with theta = atan(t / sqrt(df)), A = P(|T| <= |t|) is a polynomial in cos(theta) times
    sin(theta) (even df), plus 2 theta / pi (odd df).
    """
    if df < 1 or int(df) != df:
        raise ValueError(f"df must be an integer >= 1, got {df!r}")
    theta = math.atan(abs(t) / math.sqrt(df))
    cos2, term = math.cos(theta) ** 2, 1.0
    if df % 2 == 0:  # sin(theta) * (1 + 1/2 cos^2 + 1·3/(2·4) cos^4 + ... up to cos^(df - 2))
        total = 1.0
        for k in range(2, df, 2):
            term *= cos2 * (k - 1) / k
            total += term
        inside = math.sin(theta) * total
    else:  # (2/pi) (theta + sin cos (1 + 2/3 cos^2 + 2·4/(3·5) cos^4 + ... up to cos^(df - 3)))
        total = 0.0 if df == 1 else 1.0
        for k in range(3, df - 1, 2):
            term *= cos2 * (k - 1) / k
            total += term
        inside = 2.0 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    return 0.5 + math.copysign(0.5 * inside, t)


def t_quantile(probability: float, df: int) -> float:
    """The ``probability`` quantile of Student's t with ``df`` degrees of freedom (bisection on
    ``t_cdf`` to 1e-12)."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability must lie in (0, 1), got {probability!r}")
    if probability < 0.5:
        return -t_quantile(1.0 - probability, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < probability:
        high *= 2.0
    while high - low > 1e-12 * max(1.0, high):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if t_cdf(middle, df) < probability else (low, middle)
    return 0.5 * (low + high)


Support = tuple[float | None, float | None]  # (lowest, highest) value; None: unbounded on that side

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
SUPPORT_TOLERANCE = 1e-6  # a value this far outside its support is rounding, not a wrong declaration


def interval(
    values: Sequence[float | None],
    *,
    support: Support | None = None,
    task_se: Sequence[float | None] | None = None,
) -> dict:
    """``{"mean", "low", "high", "n", "method"}``: the mean of the defined values (None and NaN
    are left out) and its 95% interval, by the method of the module docstring: ``"bootstrap"``
    where ``support`` is given (the values must lie in it), ``"t+tasks"`` where ``task_se`` (each
    value's standard error over the held-out tasks every seed shares) is, else ``"t"``.
    ``low``/``high`` are None with fewer than 2 values."""
    if support is not None and task_se is not None:
        raise ValueError("support and task_se are two methods: give at most one")
    if task_se is not None and len(task_se) != len(values):
        raise ValueError(
            f"task_se must hold one standard error per value, got {len(task_se)} for {len(values)}"
        )
    defined = [i for i, v in enumerate(values) if v is not None and not math.isnan(v)]
    array = np.asarray([values[i] for i in defined], dtype=np.float64)
    method = "bootstrap" if support is not None else "t" if task_se is None else "t+tasks"
    n = int(array.size)
    if support is not None:
        _check_support(array, support)
    result = {"mean": float(array.mean()) if n else None, "low": None, "high": None, "n": n, "method": method}
    if n < 2:
        return result
    if method == "bootstrap":
        result["low"], result["high"] = bootstrap_bounds(array)
        return result
    half_width = t_quantile(0.5 + CONFIDENCE / 2, n - 1) * float(array.std(ddof=1)) / math.sqrt(n)
    if method == "t+tasks":
        se = _task_se([task_se[i] for i in defined])
        half_width = math.hypot(half_width, statistics.NormalDist().inv_cdf(0.5 + CONFIDENCE / 2) * se)
    result["low"], result["high"] = result["mean"] - half_width, result["mean"] + half_width
    return result


def _check_support(values: np.ndarray, support: Support) -> None:
    low, high = support
    if low is not None and high is not None and not low < high:
        raise ValueError(f"support must be (low, high) with low < high, got {support!r}")
    outside = np.zeros(values.shape, dtype=bool)
    if low is not None:
        outside |= values < low - SUPPORT_TOLERANCE
    if high is not None:
        outside |= values > high + SUPPORT_TOLERANCE
    outside = values[outside]
    if outside.size:
        raise ValueError(f"values must lie in the support {support!r}, got {outside.tolist()}")


def _task_se(task_se: Sequence[float | None]) -> float:
    """The mean of the seeds' standard errors over the shared tasks."""
    array = np.asarray([np.nan if v is None else v for v in task_se], dtype=np.float64)
    if not np.all(np.isfinite(array) & (array >= 0)):
        raise ValueError(f"task_se must be finite and >= 0 for every defined value, got {task_se!r}")
    return float(array.mean())


def bootstrap_bounds(values: np.ndarray) -> tuple[float, float]:
    """The expanded percentile bootstrap interval of the mean of ``values`` (n >= 2; the module
    docstring), clipped to ``[min(values), max(values)]`` so that rounding cannot leave them."""
    n = values.size
    tail = statistics.NormalDist().cdf(-math.sqrt(n / (n - 1)) * t_quantile(0.5 + CONFIDENCE / 2, n - 1))
    resampled = values[_resample_indices(n)].mean(axis=1)  # [BOOTSTRAP_RESAMPLES]
    low, high = np.clip(np.quantile(resampled, [tail, 1.0 - tail]), values.min(), values.max())
    return float(low), float(high)


@functools.cache
def _resample_indices(n: int) -> np.ndarray:
    """``[BOOTSTRAP_RESAMPLES, n]`` seed indices drawn with replacement, the same for every figure
    of ``n`` seeds: ``default_rng(BOOTSTRAP_SEED).integers(0, n, (BOOTSTRAP_RESAMPLES, n))``."""
    indices = np.random.default_rng(BOOTSTRAP_SEED).integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))
    indices.flags.writeable = False
    return indices


def is_interval(node: object) -> bool:
    """Whether ``node`` is an ``interval`` (one written before intervals had a "method" too)."""
    return isinstance(node, dict) and set(node) - {"method"} == {"mean", "low", "high", "n"}


def summarize(
    per_seed: Sequence[object],
    supports: Mapping[str, Support] | None = None,
    task_error: Sequence[str] = (),
    *,
    path: str = "",
) -> object:
    """The summary of per-seed results of one shape: each number (or list of numbers) becomes an
    ``interval`` (a list of them); dicts and lists of dicts are walked; other values are kept if
    every seed has the same, else listed per seed.

    Args:
      per_seed: one result dict (or value) per seed.
      supports: dotted key path pattern (``fnmatch``: ``*`` matches across dots; list elements
        have their list's path) -> the support of the numbers there: their intervals are the
        bootstrap's. The first matching pattern counts.
      task_error: dotted key path patterns of numbers measured on the held-out tasks every seed
        shares: each seed holds their standard error over the tasks beside them, as
        ``<key>_se``, and their intervals are ``"t+tasks"``.
      path: the dotted path of ``per_seed`` in the whole result (for the recursion).
    """
    first = per_seed[0]
    if isinstance(first, dict):
        keys = [key for key in first if all(isinstance(seed, dict) and key in seed for seed in per_seed)]
        return {
            key: _summarize_key(per_seed, key, supports or {}, task_error, f"{path}.{key}" if path else key)
            for key in keys
        }
    if all(_is_number(value) for value in per_seed):
        return interval(per_seed, support=_support(path, supports or {}))
    if isinstance(first, list) and all(
        isinstance(seed, list) and len(seed) == len(first) for seed in per_seed
    ):
        return [
            summarize([seed[i] for seed in per_seed], supports, task_error, path=path)
            for i in range(len(first))
        ]
    return first if all(seed == first for seed in per_seed) else list(per_seed)


def _summarize_key(
    per_seed: Sequence[dict], key: str, supports: Mapping[str, Support], task_error: Sequence[str], path: str
) -> object:
    """The summary of ``key`` of every seed's dict, with its task error where declared."""
    values = [seed[key] for seed in per_seed]
    try:
        if not any(fnmatch.fnmatchcase(path, pattern) for pattern in task_error):
            return summarize(values, supports, task_error, path=path)
        if not all(_is_number(value) for value in values):
            raise ValueError("a figure with a task error must be a number in every seed")
        if not all(f"{key}_se" in seed for seed in per_seed):
            raise ValueError(f"every seed must hold its standard error over the tasks, {key}_se")
        return interval(values, task_se=[seed[f"{key}_se"] for seed in per_seed])
    except ValueError as error:
        raise ValueError(f"per_seed[...].{path}: {error}") from error


def _support(path: str, supports: Mapping[str, Support]) -> Support | None:
    return next(
        (support for pattern, support in supports.items() if fnmatch.fnmatchcase(path, pattern)), None
    )


def _is_number(value: object) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def means(summary: object) -> object:
    """``summary`` with every ``interval`` replaced by its mean (for plots of the mean over seeds)."""
    if is_interval(summary):
        return summary["mean"]
    if isinstance(summary, dict):
        return {key: means(value) for key, value in summary.items()}
    if isinstance(summary, list):
        return [means(value) for value in summary]
    return summary


def percent(summary: dict) -> dict:
    """An ``interval`` of a fraction, in percent."""
    scaled = ("mean", "low", "high")
    return {
        key: 100 * value if key in scaled and value is not None else value for key, value in summary.items()
    }


def format_interval(summary: dict, spec: str = ".3f") -> str:
    """``"0.896 [0.871, 0.921]"``; the mean alone where every seed gave the same value or there is
    one seed; ``"–"`` where no seed had a value."""
    if summary["mean"] is None:
        return "–"
    mean, low, high = (_format(summary[key], spec) for key in ("mean", "low", "high"))
    if summary["low"] is None or low == high == mean:
        return mean
    return f"{mean} [{low}, {high}]"


def _format(value: float | None, spec: str) -> str:
    """``format(value, spec)``, without the sign of a value that rounds to zero ("-0.0")."""
    if value is None:
        return ""
    text = format(value, spec)
    return format(abs(value), spec) if float(text) == 0 else text
