"""Every Python example in the README runs as written, in order, in one namespace."""

import pathlib
import re

import metabelief

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run(clean_registry, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
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
