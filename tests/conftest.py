"""Fixtures shared across the test suite."""

import pytest

from metabelief.tasks import registry


@pytest.fixture
def clean_registry():
    """Lets a test register families; the registry is restored afterwards."""
    before = dict(registry._FACTORIES)
    yield
    registry._FACTORIES.clear()
    registry._FACTORIES.update(before)
