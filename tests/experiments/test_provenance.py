"""results.json records which code ran: the commit and the versions of the packages that decide it."""

import pathlib
import platform
import subprocess

import flax
import jax
import jaxlib
import numpy as np
import optax
import pytest

from metabelief.experiments import results
from metabelief.experiments.results import Provenance

REPOSITORY = pathlib.Path(__file__).resolve().parents[2]  # the checkout this test runs in


def git(*args: str, cwd: pathlib.Path = REPOSITORY) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def test_provenance_is_the_checkouts_commit_and_the_packages_versions():
    written = results.RunResults(experiment="bandit", config={}, device="cpu x1").to_dict()
    assert list(written) == ["experiment", "config", "device", "provenance"]
    provenance = written["provenance"]
    assert provenance["commit"] == git("rev-parse", "HEAD")
    assert provenance["uncommitted_changes"] == bool(git("status", "--porcelain", "--untracked-files=no"))
    assert provenance["versions"] == {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
    }


def test_the_printed_line_names_the_commit_and_every_version():
    provenance = Provenance.now()
    line = provenance.describe()
    assert line.startswith(f"commit {git('rev-parse', 'HEAD')[:7]}")
    assert f"jax {jax.__version__}, jaxlib {jaxlib.__version__}" in line
    assert f"flax {flax.__version__}, optax {optax.__version__}" in line
    clean = Provenance(commit="0123456789abcdef", uncommitted_changes=False, versions={"jax": "1.0"})
    assert clean.describe() == "commit 0123456; jax 1.0"
    dirty = Provenance(commit="0123456789abcdef", uncommitted_changes=True, versions={"jax": "1.0"})
    assert dirty.describe() == "commit 0123456 (uncommitted changes); jax 1.0"
    assert Provenance(None, None, {"jax": "1.0"}).describe() == "not a git checkout; jax 1.0"


@pytest.mark.parametrize("inside", [False, True], ids=["no repository", "inside another repository"])
def test_no_commit_outside_the_packages_own_checkout(tmp_path, inside):
    """An installed package (site-packages) has no commit, even inside someone else's repository."""
    if inside:
        git("init", "-q", cwd=tmp_path)
        git(
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
            cwd=tmp_path,
        )
    package_root = tmp_path / "site-packages"
    package_root.mkdir()
    assert results._git_commit(package_root) == (None, None)
    if inside:  # the repository's own top is a checkout: the same function finds its commit
        assert results._git_commit(tmp_path.resolve()) == (git("rev-parse", "HEAD", cwd=tmp_path), False)
