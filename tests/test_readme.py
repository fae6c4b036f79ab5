"""Every Python example in the README (and in docs/) runs as written, in order, in one namespace."""

import pathlib
import re

import metabelief

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))


def _python_blocks(path: pathlib.Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)


def test_readme_python_examples_run(clean_registry, capsys):
    blocks = _python_blocks(README)
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["features"].shape == (100, 4096, 4)
    assert "ten_armed_bandit" in metabelief.families()
    assert namespace["report"].calibration_groups >= 100  # (790) check_family tested many groups
    assert namespace["trajectory"].hidden.shape == (100, 1024, 48)
    assert namespace["untrained"].features.shape == (100, 1024, 4)
    assert namespace["everyone"].hidden.shape == (3, 100, 1024, 48)
    # Agent 0 of the population played alone is the population's first member.
    assert (namespace["everyone"].actions[0] == namespace["trajectory"].actions).all()
    assert float(namespace["to_means"].test.r2) > 0.0  # scored on the 256 test tasks
    assert "(100, 4096, 4)" in capsys.readouterr().out


def test_readme_lists_every_registered_family():
    text = README.read_text()
    for name in metabelief.families():
        assert f"`{name}(" in text


def test_docs_python_examples_run(capsys):
    documents = [path for path in DOCS if _python_blocks(path)]
    assert documents, "docs/agents.md shows how to train other agents from Python"
    for path in documents:
        namespace: dict = {}
        for block in _python_blocks(path):
            exec(compile(block, str(path), "exec"), namespace)
    assert "16 48" in capsys.readouterr().out  # docs/agents.md: the LRU's readout and memory widths
