"""Plots leave matplotlib's global state alone: no backend set at import, no figure left open."""

import subprocess
import sys

import numpy as np
import pytest

from metabelief.experiments import plots


def test_importing_and_plotting_leaves_the_global_backend_and_pyplot_alone(tmp_path):
    script = f"""
import matplotlib
matplotlib.use("pdf")
import matplotlib.pyplot as pyplot
import numpy as np
from metabelief.experiments import plots
plots.learning_curve({str(tmp_path / "curve.png")!r}, np.arange(3), np.ones((2, 3)), {{"ref": 1.0}})
assert matplotlib.get_backend() == "pdf", matplotlib.get_backend()
assert pyplot.get_fignums() == [], pyplot.get_fignums()
"""
    subprocess.run([sys.executable, "-c", script], check=True)
    assert (tmp_path / "curve.png").read_bytes().startswith(b"\x89PNG")


def _decoded() -> dict[str, np.ndarray]:
    """Exact beliefs ``[T, n, 2]`` and two read-outs: perfect, and the exact mean of feature 0."""
    rng = np.random.default_rng(0)
    exact = (rng.integers(0, 9, size=(8, 8, 2)) / 8).astype(np.float32)  # a mean float32 holds exactly
    constant = np.broadcast_to(exact.mean(axis=(0, 1)), exact.shape).copy()
    constant[..., 1] = 5.0  # feature 1 is not drawn, so it must not count
    return {"exact": exact, "trained": exact.copy(), "untrained": constant}


def test_decoded_belief_r2_is_the_r2_of_the_first_feature():
    decoded = _decoded()
    noisy = decoded["exact"] + np.random.default_rng(1).normal(scale=0.2, size=decoded["exact"].shape)
    r2 = plots.decoded_belief_r2(decoded | {"noisy": noisy.astype(np.float32)})
    assert r2["trained"] == pytest.approx(1.0, abs=1e-6)
    assert r2["untrained"] == pytest.approx(0.0, abs=1e-5)  # the mean of the truth explains nothing
    exact, guess = decoded["exact"][..., 0].astype(np.float64), noisy[..., 0].astype(np.float64)
    expected = 1.0 - ((exact - guess) ** 2).sum() / ((exact - exact.mean()) ** 2).sum()
    assert r2["noisy"] == pytest.approx(expected, abs=1e-5)


def test_decoded_belief_figure_has_a_legend_for_its_colours_and_each_r2(tmp_path):
    figure = plots.decoded_beliefs(tmp_path / "decoded.png", _decoded())
    over_time, scatter = figure.axes
    labels = {text.get_text() for text in over_time.get_legend().get_texts()}
    assert {
        "exact posterior",
        "read out of the trained network",
        "test episode 1",
        "test episode 3",
    } <= labels
    labels = [text.get_text() for text in scatter.get_legend().get_texts()]
    assert labels[:2] == ["trained network: R² 1.00", "untrained network: R² 0.00"]
    assert all(axes.get_xlabel() and axes.get_ylabel() and axes.get_title() for axes in figure.axes)
    assert (tmp_path / "decoded.png").read_bytes().startswith(b"\x89PNG")


def _push(scale: float, ratios: list[float]) -> dict:
    return {"log_odds": [[-scale, 0.0, scale], [0.0, 0.0, 0.0]], "causal_to_observational": ratios}


def test_intervention_figure_defines_its_terms_and_keeps_a_zero_response_visible(tmp_path):
    def network(scale: float) -> dict:
        return {
            "target": "arm 0",
            "deltas": [-0.2, 0.0, 0.2],
            "mahalanobis_per_unit": 4.0,
            "observational_slope": 1.5,
            "random": {"log_odds_mean": [[0.0, 0.0, 0.0]], "log_odds_std": [[0.1, 0.0, 0.1]]},
            "pushes": {
                "minimum_mahalanobis": _push(scale, [1.0, 0.0]),  # k = 1: exactly zero, on the zero line
                "minimum_euclidean": _push(scale / 2, [0.5, 0.0]),
                "encoding": _push(scale / 4, [0.25, 0.0]),
            },
        }

    seeds = [
        {"trained": network(0.3), "untrained": network(0.0)},
        {"trained": network(0.1), "untrained": network(0.0)},
    ]
    figure = plots.intervention(tmp_path / "intervention.png", seeds)
    for axes in figure.axes:
        zero_lines = [line for line in axes.get_lines() if list(line.get_ydata()) == [0.0, 0.0]]
        curves = [line for line in axes.get_lines() if not line.get_label().startswith("_")]
        assert zero_lines and max(line.get_zorder() for line in zero_lines) < min(
            c.get_zorder() for c in curves
        )
        legend = axes.get_legend()
        assert min(text.get_fontsize() for text in legend.get_texts()) >= 8  # not "x-small"
        assert axes.get_xlabel() and axes.get_ylabel() and axes.get_title()
    now, later = figure.axes
    curve = {line.get_label(): line.get_ydata() for line in now.get_lines()}
    # The mean over seeds of the response at the push: (0.3 + 0.1) / 2 per 0.2 of dose.
    np.testing.assert_allclose(curve["trained: push minimal in the activity's metric"], [-0.2, 0.0, 0.2])
    np.testing.assert_allclose(curve["untrained: push minimal in the activity's metric"], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(curve["trained: own sensitivity × δ (1.5 per unit)"], [-0.3, 0.0, 0.3])
    ratios = {line.get_label(): line.get_ydata() for line in later.get_lines()}
    np.testing.assert_allclose(ratios["trained: push minimal in the Euclidean metric"], [0.5, 0.0])
    terms = "\n".join(text.get_text() for text in figure.texts)
    for term in ("δ (dose):", "Pushes:", "Response:", "Own sensitivity:", "causal / observational"):
        assert term in terms
