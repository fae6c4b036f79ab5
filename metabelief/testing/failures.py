"""How a conformance check reports a broken family."""

from __future__ import annotations

from typing import TYPE_CHECKING

from metabelief.tasks.base import TaskFamily

if TYPE_CHECKING:
    from metabelief.testing.report import CheckReport


class FamilyCheckError(AssertionError):
    """A task family breaks the contract; the message names the check and what was seen.

    ``check`` is that name, ``detail`` what was seen, and ``report`` (set by ``check_family``) the
    ``CheckReport`` of every check up to this one.
    """

    check: str = ""
    detail: str = ""
    report: CheckReport | None = None


def fail(family: TaskFamily, check: str, detail: str) -> FamilyCheckError:
    """The error for ``family`` failing ``check`` (the name users see in brackets)."""
    error = FamilyCheckError(f"check_family({family!r}) failed [{check}]: {detail}")
    error.check, error.detail = check, detail
    return error
