"""The examples run as written."""

import importlib.util
import pathlib
import sys

import metabelief

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_custom_task_family_example_checks_trains_and_probes(clean_registry, capsys):
    example = load("custom_task_family")
    r2 = example.main(num_updates=25)
    assert "restless_tiger" in metabelief.families()
    assert set(r2) == {"trained", "untrained"} and all(value > 0.5 for value in r2.values())
    out = capsys.readouterr().out
    assert "check_family passed" in out and "held-out R²" in out
