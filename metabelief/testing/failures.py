"""How a conformance check reports a broken family."""

from __future__ import annotations

from metabelief.tasks.base import TaskFamily


class FamilyCheckError(AssertionError):
    """A task family breaks the contract; the message names the check and what was seen."""


def fail(family: TaskFamily, check: str, detail: str) -> FamilyCheckError:
    """The error for ``family`` failing ``check`` (the name users see in brackets)."""
    return FamilyCheckError(f"check_family({family!r}) failed [{check}]: {detail}")
