"""Plots leave matplotlib's global state alone: no backend set at import, no figure left open."""

import subprocess
import sys


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
