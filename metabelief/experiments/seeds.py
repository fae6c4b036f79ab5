"""Results over independently trained agents: 95% Student-t intervals over seeds.

An experiment run with ``S`` seeds writes one result dict per seed, each with the keys a one-seed
run writes, and a summary of the same shape in which every number becomes an ``interval``: the
across-seed mean with its 95% confidence interval, ``mean ± t(0.975, S - 1) · sd / √S`` (sd with
``S - 1`` in the denominator). Lists of numbers (R² by time, per-dimension R²) are summarised
element by element; anything else (strings, config values) is kept when every seed agrees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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


def interval(values: Sequence[float | None]) -> dict:
    """``{"mean", "low", "high", "n"}``: the mean of the defined values (None and NaN are left
    out) and its 95% Student-t interval; ``low``/``high`` are None with fewer than 2 values."""
    defined = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    n = int(defined.size)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean = float(defined.mean())
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "n": n}
    half_width = t_quantile(0.5 + CONFIDENCE / 2, n - 1) * float(defined.std(ddof=1)) / math.sqrt(n)
    return {"mean": mean, "low": mean - half_width, "high": mean + half_width, "n": n}


def is_interval(node: object) -> bool:
    return isinstance(node, dict) and set(node) == {"mean", "low", "high", "n"}


def summarize(per_seed: Sequence[object]) -> object:
    """The summary of per-seed results of one shape: each number (or list of numbers) becomes an
    ``interval`` (a list of them); dicts and lists of dicts are walked; other values are kept if
    every seed has the same, else listed per seed."""
    first = per_seed[0]
    if isinstance(first, dict):
        keys = [key for key in first if all(isinstance(seed, dict) and key in seed for seed in per_seed)]
        return {key: summarize([seed[key] for seed in per_seed]) for key in keys}
    if all(_is_number(value) for value in per_seed):
        return interval(per_seed)
    if isinstance(first, list) and all(
        isinstance(seed, list) and len(seed) == len(first) for seed in per_seed
    ):
        return [summarize([seed[i] for seed in per_seed]) for i in range(len(first))]
    return first if all(seed == first for seed in per_seed) else list(per_seed)


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
    return {key: value if key == "n" or value is None else 100 * value for key, value in summary.items()}


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
