"""Every figure the README and docs/ print beside a results marker is in the committed results.

A table or printed block in README.md or docs/*.md that comes right after a line
``<!-- figures: docs/results/NAME.json [...] -->`` is checked number by number: each decimal
number it shows must equal, at the precision printed, a number of one of the named committed
``results.json`` files (or that number x 100, for percentages). A figure edited by hand, or left
over from an older run, fails; so does a marker naming a file that is not committed.
"""

import json
import math
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!-- figures: (.+?) -->")
# A decimal figure, not part of a word, a version (0.10.2) or a key name (r2, 1e-3).
FIGURE = re.compile(r"(?<![\w.])[−-]?\d+\.\d+(?![\w.])")


def marked_blocks(path: pathlib.Path) -> list[tuple[int, list[str], str]]:
    """(line, results files, text) of every block that follows a marker in ``path``."""
    lines = path.read_text().splitlines()
    blocks = []
    for index, line in enumerate(lines):
        match = MARKER.search(line)
        if not match:
            continue
        start = index + 1
        if lines[start].startswith("```"):
            end = next(j for j in range(start + 1, len(lines)) if lines[j].startswith("```"))
            body = lines[start + 1 : end]
        else:
            end = start
            while end < len(lines) and lines[end].lstrip().startswith("|"):
                end += 1
            body = lines[start:end]
        blocks.append((index + 1, match.group(1).split(), "\n".join(body)))
    return blocks


def numbers(node: object) -> list[float]:
    """Every finite number in a JSON tree."""
    if isinstance(node, dict):
        return [value for child in node.values() for value in numbers(child)]
    if isinstance(node, list):
        return [value for child in node for value in numbers(child)]
    if isinstance(node, bool) or not isinstance(node, int | float) or not math.isfinite(node):
        return []
    return [float(node)]


def printed_figures(text: str) -> list[str]:
    """The decimal figures of a block, as printed (a leading minus sign of either kind kept)."""
    return [match.group(0).replace("−", "-") for match in FIGURE.finditer(text)]


def is_recorded(figure: str, values: set[str], decimals: int) -> bool:
    """``figure`` is one of ``values`` (rounded alike); a printed 0.00 may be a rounded -0.00."""
    return figure in values or (figure == f"{0.0:.{decimals}f}" and f"-{figure}" in values)


CASES = [
    pytest.param(path, line, files, text, id=f"{path.name}:{line}")
    for path in DOCUMENTS
    for line, files, text in marked_blocks(path)
]


def test_the_readme_and_docs_mark_their_figures():
    assert any(path.name == "README.md" for path, *_ in (case.values for case in CASES))
    assert len(CASES) >= 3


@pytest.mark.parametrize(("path", "line", "files", "text"), CASES)
def test_every_marked_figure_is_in_the_committed_results(path, line, files, text):
    recorded: list[float] = []
    for name in files:
        results = ROOT / name
        assert results.is_file(), f"{path.name}:{line} names {name}, which is not committed"
        recorded += numbers(json.loads(results.read_text()))
    figures = printed_figures(text)
    assert figures, f"{path.name}:{line}: the marked block shows no figure"
    rounded: dict[int, set[str]] = {}
    missing = []
    for figure in figures:
        decimals = len(figure.split(".")[1])
        if decimals not in rounded:
            rounded[decimals] = {f"{value:.{decimals}f}" for value in recorded} | {
                f"{100 * value:.{decimals}f}" for value in recorded
            }
        if not is_recorded(figure, rounded[decimals], decimals):
            missing.append(figure)
    assert not missing, f"{path.name}:{line}: figures not in {files}: {missing}"
