"""The layers of README's "Architecture": each package module imports only the layers below it.

Read from the source with ``ast`` (imports inside functions count too), so a new import that
crosses a layer fails here with the module and the import named.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "metabelief"

# Layer of each top-level part of the package, lowest first; a module may import its own layer
# (other modules of the same part) and any lower one.
LAYERS = {
    "tasks": 0,
    "agents": 1,
    "probes": 1,
    "rollout": 2,
    "sharding": 2,
    "train": 3,
    "baselines": 3,
    "analysis": 4,
    "experiments": 5,
    "cli": 6,
    "bench": 6,
}
# The conformance kit sits beside the stack: it uses tasks and the engine, and only the package's
# front door and `metabelief check` use it.
TESTING_USES = {"tasks", "rollout", "testing"}
TESTING_USERS = {"__init__", "cli"}


def _part(module: str) -> str | None:
    """``metabelief.tasks.base`` -> ``tasks``; ``metabelief`` alone -> None."""
    names = module.split(".")
    return names[1] if names[0] == "metabelief" and len(names) > 1 else None


def _imports(path: pathlib.Path) -> list[str]:
    """The ``metabelief...`` modules the file imports (``from metabelief import x``: ``metabelief.x``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "metabelief":
                found += [f"metabelief.{alias.name}" for alias in node.names]
            else:
                found.append(node.module)
    return [name for name in found if name.split(".")[0] == "metabelief"]


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_each_module_imports_only_its_own_and_lower_layers(path):
    relative = path.relative_to(PACKAGE)
    own = relative.parts[0].removesuffix(".py")
    for module in _imports(path):
        part = _part(module)
        if part is None or part == own:
            continue
        if part == "testing":
            assert own in TESTING_USERS, f"{relative} imports the conformance kit ({module})"
        elif own == "testing":
            assert part in TESTING_USES, f"the conformance kit imports {module}"
        elif own in LAYERS:
            assert LAYERS[part] <= LAYERS[own], (
                f"{relative} (layer {LAYERS[own]}) imports {module} (layer {LAYERS[part]})"
            )


def test_every_part_of_the_package_has_a_layer():
    parts = {path.relative_to(PACKAGE).parts[0].removesuffix(".py") for path in MODULES}
    assert parts - {"__init__", "testing"} <= set(LAYERS)
