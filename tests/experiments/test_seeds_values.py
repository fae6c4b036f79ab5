"""Summaries over seeds, value by value, against references computed apart from the module.

The references: Student's t quantiles in closed form for df = 1, 2 and 4 (n = 2, 3 and 5 seeds:
Cauchy ``tan(pi (p - 1/2))``; ``(2p - 1) / sqrt(2p(1 - p))``; the trigonometric form for df = 4),
the closed-form CDFs for df = 3, 4, 5, the t density integrated numerically (Simpson, float64)
for other df, and NumPy's float64 mean and ``std(ddof=1)``. ``summarize`` is checked on hand-built
per-seed dicts with a boolean field, a key missing from one seed, None and NaN values, and lists of
equal and unequal lengths.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from metabelief.experiments import seeds


def t975_closed_form(df: int, p: float = 0.975) -> float:
    """The ``p`` quantile of Student's t for df 1, 2, 4 (closed forms)."""
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    if df == 4:
        alpha = 4 * p * (1 - p)
        q = math.cos(math.acos(math.sqrt(alpha)) / 3) / math.sqrt(alpha)
        return math.copysign(2 * math.sqrt(q - 1), p - 0.5)
    raise AssertionError(df)


def t_cdf_closed_form(t: float, df: int) -> float:
    """Student's t CDF for df 3, 4, 5 (closed forms)."""
    if df == 3:
        x = t / math.sqrt(3)
        return 0.5 + (x / (1 + x * x) + math.atan(x)) / math.pi
    if df == 4:
        u = 1 + t * t / 4
        return 0.5 + 3 / 8 * t / math.sqrt(u) * (1 - t * t / (12 * u))
    if df == 5:
        x, u = t / math.sqrt(5), 1 + t * t / 5
        return 0.5 + (x / u * (1 + 2 / (3 * u)) + math.atan(x)) / math.pi
    raise AssertionError(df)


def t_cdf_integrated(t: float, df: int, points: int = 20001) -> float:
    """1/2 + the integral of the t density from 0 to t (composite Simpson, float64)."""
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    x = np.linspace(0.0, t, points)
    density = np.exp(log_norm - (df + 1) / 2 * np.log1p(x * x / df))
    weights = np.ones(points)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    return 0.5 + float((x[1] - x[0]) / 3 * (weights * density).sum())


def reference_interval(values) -> tuple[float, float, float]:
    """(mean, low, high) with NumPy float64 and the closed-form quantile for n = 2, 3, 5."""
    array = np.asarray(values, dtype=np.float64)
    n = array.size
    half = t975_closed_form(n - 1) * array.std(ddof=1) / math.sqrt(n)
    return float(array.mean()), float(array.mean() - half), float(array.mean() + half)


# ---------------------------------------------------------------------------------------------
# Student's t


@pytest.mark.parametrize("df", [1, 2, 4])
@pytest.mark.parametrize("p", [0.975, 0.9, 0.6, 0.3, 0.025])
def test_t_quantile_equals_the_closed_forms_for_2_3_and_5_seeds(df, p):
    assert seeds.t_quantile(p, df) == pytest.approx(t975_closed_form(df, p), rel=1e-9, abs=1e-10)


def test_t_quantile_of_one_half_is_zero_and_the_tails_are_symmetric():
    for df in (1, 2, 3, 7):
        assert seeds.t_quantile(0.5, df) == pytest.approx(0.0, abs=1e-10)
        assert seeds.t_quantile(0.01, df) == pytest.approx(-seeds.t_quantile(0.99, df), rel=1e-10)
    assert seeds.t_quantile(0.975, 1) > 12.7  # few seeds: a wide interval


@pytest.mark.parametrize("df", [3, 4, 5])
@pytest.mark.parametrize("t", [-4.0, -1.3, 0.0, 0.5, 2.2, 9.0])
def test_t_cdf_equals_the_closed_forms_for_df_3_4_5(df, t):
    assert seeds.t_cdf(t, df) == pytest.approx(t_cdf_closed_form(t, df), abs=1e-12)


@pytest.mark.parametrize("df", [6, 7, 8, 11, 12])
@pytest.mark.parametrize("t", [-2.5, 0.8, 3.0])
def test_t_cdf_equals_the_integrated_density_for_larger_df(df, t):
    assert seeds.t_cdf(t, df) == pytest.approx(t_cdf_integrated(t, df), abs=1e-10)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: seeds.t_cdf(1.0, 2.5), "df must be an integer >= 1, got 2.5"),
        (lambda: seeds.t_quantile(1.0, 3), "probability must lie in"),
        (lambda: seeds.t_quantile(0.0, 3), "probability must lie in"),
    ],
)
def test_bad_t_arguments_raise_naming_them(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------------
# interval


@pytest.mark.parametrize(
    "values",
    [[0.0, 1.0], [0.2, 0.9, 0.4], [0.91, 0.88, 0.95, 0.7, 0.83], [3, 5, 4]],
    ids=["n2", "n3", "n5", "ints"],
)
def test_interval_equals_the_numpy_reference(values):
    result = seeds.interval(values)
    mean, low, high = reference_interval(values)
    assert result["n"] == len(values)
    assert (result["mean"], result["low"], result["high"]) == pytest.approx(
        (mean, low, high), rel=1e-10, abs=1e-12
    )


def test_interval_of_equal_values_has_zero_width_and_of_spread_values_is_wide():
    assert seeds.interval([0.4] * 5) == {
        "mean": pytest.approx(0.4),
        "low": 0.4,
        "high": 0.4,
        "n": 5,
        "method": "t",
    }
    spread = seeds.interval([0.0, 1.0])  # half-width t(0.975, 1) * sqrt(1/2) / sqrt(2) = 6.353
    assert spread["high"] - spread["mean"] == pytest.approx(t975_closed_form(1) / 2, rel=1e-10)
    assert spread["mean"] - spread["low"] == pytest.approx(spread["high"] - spread["mean"], rel=1e-12)


def test_interval_leaves_out_none_and_nan_and_counts_only_defined_values():
    nan = float("nan")
    values = [None, 0.2, nan, 0.9, 0.4, None]
    result = seeds.interval(values)
    mean, low, high = reference_interval([0.2, 0.9, 0.4])
    assert result["n"] == 3
    assert (result["mean"], result["low"], result["high"]) == pytest.approx(
        (mean, low, high), rel=1e-10, abs=1e-12
    )
    assert seeds.interval([nan, 2.5, None]) == {"mean": 2.5, "low": None, "high": None, "n": 1, "method": "t"}
    assert seeds.interval([nan, nan]) == {"mean": None, "low": None, "high": None, "n": 0, "method": "t"}
    assert seeds.interval([]) == {"mean": None, "low": None, "high": None, "n": 0, "method": "t"}


# ---------------------------------------------------------------------------------------------
# summarize


def test_summarize_every_number_at_every_depth_equals_the_reference():
    rng = np.random.default_rng(3)
    draws = rng.normal(size=(5, 4))
    per_seed = [
        {"a": {"b": float(row[0])}, "by_time": [float(row[1]), float(row[2])], "arms": [{"p": float(row[3])}]}
        for row in draws
    ]
    summary = seeds.summarize(per_seed)
    for got, column in [
        (summary["a"]["b"], 0),
        (summary["by_time"][0], 1),
        (summary["by_time"][1], 2),
        (summary["arms"][0]["p"], 3),
    ]:
        assert got["n"] == 5
        assert (got["mean"], got["low"], got["high"]) == pytest.approx(
            reference_interval(draws[:, column]), rel=1e-10, abs=1e-12
        )
    assert seeds.means(summary) == {
        "a": {"b": pytest.approx(draws[:, 0].mean())},
        "by_time": [pytest.approx(draws[:, 1].mean()), pytest.approx(draws[:, 2].mean())],
        "arms": [{"p": pytest.approx(draws[:, 3].mean())}],
    }


def test_summarize_keeps_a_boolean_every_seed_agrees_on_and_lists_it_per_seed_otherwise():
    # Booleans are not numbers: no interval (True is not averaged to 1.0).
    per_seed = [
        {"passed": True, "failed": False, "verdict": True},
        {"passed": True, "failed": False, "verdict": False},
        {"passed": True, "failed": False, "verdict": True},
    ]
    summary = seeds.summarize(per_seed)
    assert summary == {"passed": True, "failed": False, "verdict": [True, False, True]}
    assert type(summary["passed"]) is bool and type(summary["failed"]) is bool


def test_summarize_leaves_out_a_key_that_one_seed_lacks_whichever_seed_it_is():
    # Current behaviour (not stated in the docstring): only keys every seed has are summarised,
    # in the order of the first seed.
    full = {"z": 1.0, "only_some": 5.0, "a": "x"}
    lacking = {"a": "x", "z": 3.0}
    for per_seed in ([full, lacking, full], [lacking, full, full], [full, full, lacking]):
        summary = seeds.summarize(per_seed)
        assert set(summary) == {"z", "a"}
        assert summary["z"]["mean"] == pytest.approx(np.mean([s["z"] for s in per_seed]))
        assert summary["a"] == "x"
    assert list(seeds.summarize([full, lacking])) == ["z", "a"]
    assert list(seeds.summarize([lacking, full])) == ["a", "z"]


def test_summarize_numbers_with_none_and_nan_count_only_the_defined_seeds():
    nan = float("nan")
    summary = seeds.summarize([{"r2": None, "x": 0.2}, {"r2": 0.5, "x": nan}, {"r2": 0.7, "x": 0.9}])
    assert summary["r2"]["n"] == 2 and summary["x"]["n"] == 2
    assert (summary["r2"]["mean"], summary["r2"]["low"], summary["r2"]["high"]) == pytest.approx(
        reference_interval([0.5, 0.7]), rel=1e-10, abs=1e-12
    )
    assert (summary["x"]["mean"], summary["x"]["low"], summary["x"]["high"]) == pytest.approx(
        reference_interval([0.2, 0.9]), rel=1e-10, abs=1e-12
    )
    # A figure no seed could compute is an interval without a mean, not a list of Nones.
    assert seeds.summarize([{"r2": None}, {"r2": None}]) == {
        "r2": {"mean": None, "low": None, "high": None, "n": 0, "method": "t"}
    }


def test_summarize_lists_of_different_lengths_per_seed_in_either_order():
    short, long = [1.0, 2.0], [1.0, 2.0, 3.0]
    assert seeds.summarize([short, long]) == [short, long]
    assert seeds.summarize([long, short]) == [long, short]


def test_summarize_keeps_strings_every_seed_agrees_on_and_lists_the_others():
    summary = seeds.summarize(
        [
            {"family": "bandit", "labels": ["a", "b"], "run": "s0"},
            {"family": "bandit", "labels": ["a", "b"], "run": "s1"},
        ]
    )
    assert summary == {"family": "bandit", "labels": ["a", "b"], "run": ["s0", "s1"]}


def test_summarize_of_one_seed_gives_intervals_without_bounds():
    summary = seeds.summarize([{"x": 0.25, "xs": [1.0, None]}])
    assert summary == {
        "x": {"mean": 0.25, "low": None, "high": None, "n": 1, "method": "t"},
        "xs": [
            {"mean": 1.0, "low": None, "high": None, "n": 1, "method": "t"},
            {"mean": None, "low": None, "high": None, "n": 0, "method": "t"},
        ],
    }


# ---------------------------------------------------------------------------------------------
# percent, means, format_interval


def test_percent_scales_mean_and_bounds_but_not_the_count():
    values = [0.2, 0.9, 0.4]
    mean, low, high = reference_interval(values)
    result = seeds.percent(seeds.interval(values))
    assert result["n"] == 3
    assert (result["mean"], result["low"], result["high"]) == pytest.approx(
        (100 * mean, 100 * low, 100 * high), abs=1e-10
    )
    assert seeds.percent(seeds.interval([0.5])) == {
        "mean": 50.0,
        "low": None,
        "high": None,
        "n": 1,
        "method": "t",
    }
    assert seeds.percent(seeds.interval([None])) == {
        "mean": None,
        "low": None,
        "high": None,
        "n": 0,
        "method": "t",
    }


def test_means_replaces_intervals_in_lists_and_keeps_other_values():
    summary = seeds.summarize(
        [{"xs": [1.0, 2.0], "tag": "t", "ok": True}, {"xs": [3.0, 6.0], "tag": "t", "ok": True}]
    )
    assert seeds.means(summary) == {"xs": [2.0, 4.0], "tag": "t", "ok": True}
    assert seeds.means([seeds.interval([1.0, 2.0]), "k"]) == [1.5, "k"]


def test_format_interval_prints_the_reference_numbers():
    values = [0.2, 0.9, 0.4]
    mean, low, high = reference_interval(values)
    assert seeds.format_interval(seeds.interval(values)) == f"{mean:.3f} [{low:.3f}, {high:.3f}]"
    assert seeds.format_interval(seeds.percent(seeds.interval(values)), ".1f") == (
        f"{100 * mean:.1f} [{100 * low:.1f}, {100 * high:.1f}]"
    )
    assert seeds.format_interval(seeds.interval([0.25])) == "0.250"  # one seed: the mean alone
    assert seeds.format_interval(seeds.interval([0.25, 0.25, 0.25])) == "0.250"  # every seed agrees
    assert seeds.format_interval(seeds.interval([None, float("nan")])) == "–"
    # A zero that rounds from below prints without its sign, at the mean and at a bound.
    assert seeds.format_interval({"mean": -0.0001, "low": -0.3, "high": 0.2, "n": 2}, ".2f") == (
        "0.00 [-0.30, 0.20]"
    )
    assert seeds.format_interval({"mean": 0.1, "low": -0.0004, "high": 0.2, "n": 2}, ".2f") == (
        "0.10 [0.00, 0.20]"
    )
