"""Fixtures shared across the test suite."""

import os

# The suite's shapes are tiny, so its time goes to XLA compiling, not running, programs: skip the
# backend's expensive optimisation passes (about 20% off the experiment smoke tests on CPU). Set
# before any JAX backend starts; subprocesses (the sharding test) inherit it.
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]
).strip()

import pytest  # noqa: E402

from metabelief.tasks import registry  # noqa: E402


@pytest.fixture
def clean_registry():
    """Lets a test register families; the registry is restored afterwards."""
    before = dict(registry._FACTORIES)
    yield
    registry._FACTORIES.clear()
    registry._FACTORIES.update(before)
