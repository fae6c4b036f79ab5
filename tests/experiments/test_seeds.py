"""Intervals over seeds: Student's t against published quantiles and a hand computation."""

from __future__ import annotations

import math

import pytest

from metabelief.experiments import seeds

# Two-sided 95% critical values t(0.975, df), as printed in standard t tables.
T_TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228, 29: 2.045, 60: 2.000}


@pytest.mark.parametrize("df, critical", T_TABLE.items())
def test_t_quantile_matches_the_printed_table(df, critical):
    assert seeds.t_quantile(0.975, df) == pytest.approx(critical, abs=5e-4)
    assert seeds.t_quantile(0.025, df) == pytest.approx(-critical, abs=5e-4)


def test_t_cdf_closed_forms():
    # df = 1 is the Cauchy distribution, df = 2 has F(t) = 1/2 + t / (2 sqrt(2 + t^2)).
    for t in (-3.0, -0.4, 0.0, 0.7, 5.0):
        assert seeds.t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
        assert seeds.t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    # Large df approaches the standard normal: Phi(1.96) = 0.9750021.
    assert seeds.t_cdf(1.96, 2000) == pytest.approx(0.9750021, abs=2e-4)
    with pytest.raises(ValueError, match="df must be an integer >= 1"):
        seeds.t_cdf(1.0, 0)


def test_interval_by_hand():
    # values 1, 2, 3: mean 2, sd 1, half-width t(0.975, 2) / sqrt(3) = 4.302653 / 1.732051 = 2.484138
    result = seeds.interval([1.0, 2.0, 3.0])
    assert result["mean"] == 2.0 and result["n"] == 3
    assert result["low"] == pytest.approx(2.0 - 2.484138, abs=1e-6)
    assert result["high"] == pytest.approx(2.0 + 2.484138, abs=1e-6)
    # Five seeds 0.9, 0.88, 0.91, 0.87, 0.89: mean 0.89, sd 0.0158114, t(0.975, 4) = 2.776445.
    result = seeds.interval([0.9, 0.88, 0.91, 0.87, 0.89])
    half = 2.776445 * 0.0158114 / math.sqrt(5)
    assert (result["low"], result["high"]) == pytest.approx((0.89 - half, 0.89 + half), abs=1e-6)


def test_interval_leaves_out_undefined_values_and_needs_two():
    assert seeds.interval([None, 1.0, float("nan"), 3.0]) == seeds.interval([1.0, 3.0])
    assert seeds.interval([4.0]) == {"mean": 4.0, "low": None, "high": None, "n": 1, "method": "t"}
    assert seeds.interval([None, None]) == {"mean": None, "low": None, "high": None, "n": 0, "method": "t"}


def test_summarize_keeps_the_shape_of_one_seed():
    per_seed = [
        {"return": {"agent": 1.0, "random": 0.5}, "r2_by_time": [None, 0.2], "family": "f", "tag": "a"},
        {"return": {"agent": 3.0, "random": 0.5}, "r2_by_time": [None, 0.4], "family": "f", "tag": "b"},
    ]
    summary = seeds.summarize(per_seed)
    assert summary["return"]["agent"]["mean"] == 2.0
    half = 12.706205 * math.sqrt(2.0) / math.sqrt(2)  # sd of (1, 3) is sqrt(2)
    assert summary["return"]["agent"]["high"] == pytest.approx(2.0 + half, abs=1e-5)
    assert summary["return"]["random"] == {"mean": 0.5, "low": 0.5, "high": 0.5, "n": 2, "method": "t"}
    assert summary["r2_by_time"][0]["mean"] is None and summary["r2_by_time"][1]["mean"] == pytest.approx(0.3)
    assert summary["family"] == "f" and summary["tag"] == ["a", "b"]
    assert seeds.means(summary)["return"] == {"agent": 2.0, "random": 0.5}


def test_format_interval():
    assert seeds.format_interval(seeds.interval([1.0, 2.0, 3.0]), ".2f") == "2.00 [-0.48, 4.48]"
    assert seeds.format_interval(seeds.interval([0.5, 0.5]), ".2f") == "0.50"  # the same for every seed
    assert seeds.format_interval(seeds.interval([None]), ".2f") == "–"
    assert seeds.format_interval(seeds.interval([-0.001, 0.002, 0.0]), ".1f") == "0.0"  # no "-0.0"
    assert seeds.format_interval(seeds.percent(seeds.interval([0.5, 0.7])), ".0f").startswith("60 [")
