"""What every experiment writes: an output folder, ``results.json``, and a printed table."""

from __future__ import annotations

import datetime
import json
import pathlib

import jax
import numpy as np


def default_out_dir(experiment: str) -> pathlib.Path:
    """``runs/<experiment>-<YYYYmmdd-HHMMSS>`` under the working directory."""
    return pathlib.Path("runs") / f"{experiment}-{datetime.datetime.now():%Y%m%d-%H%M%S}"


def device_description() -> str:
    """E.g. ``"cpu x1"`` or ``"gpu: NVIDIA H100 80GB HBM3 x1"``."""
    devices = jax.devices()
    kind = devices[0].device_kind
    name = devices[0].platform if kind == devices[0].platform else f"{devices[0].platform}: {kind}"
    return f"{name} x{len(devices)}"


def mean_and_se(values: jax.Array) -> tuple[float, float]:
    """Mean and standard error of the mean of independent samples."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(values.size))


def write_json(path: pathlib.Path, results: dict) -> None:
    path.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")


def format_table(rows: list[list[str]]) -> str:
    """Left-aligned first column, right-aligned others, widths from the contents."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
