"""The family registry: ``make(name, **kwargs)``, ``register(name, factory)``, ``families()``."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from metabelief.tasks.base import TaskFamily

_FACTORIES: dict[str, Callable[..., TaskFamily]] = {}


def register(name: str, factory: Callable[..., TaskFamily], *, overwrite: bool = False) -> None:
    """Registers ``factory`` (a class or function returning a family) under ``name``.

    Args:
      name: the name ``make`` will accept.
      factory: called as ``factory(**kwargs)``; its defaults are the family's defaults.
      overwrite: replace an existing registration instead of raising.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise ValueError(f"factory for {name!r} must be callable, got {factory!r}")
    if name in _FACTORIES and not overwrite:
        raise ValueError(f"name {name!r} is already registered; pass overwrite=True to replace it")
    _FACTORIES[name] = factory


def make(name: str, **kwargs: object) -> TaskFamily:
    """Builds the family registered as ``name``; ``kwargs`` override its defaults.

    Raises:
      ValueError: unknown ``name`` (the message lists the known ones), an argument the family
        does not take, or an invalid argument value (named in the message).
    """
    build = lookup(name)
    accepted = _keyword_names(build)
    if accepted is not None:
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise ValueError(
                f"family {name!r} takes no argument {', '.join(map(repr, unknown))}; "
                f"it accepts: {', '.join(sorted(accepted))}"
            )
    return build(**kwargs)


def lookup(name: str) -> Callable[..., TaskFamily]:
    """The factory registered as ``name``."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown family name {name!r}; known families: {', '.join(families())}")
    return _FACTORIES[name]


def families() -> tuple[str, ...]:
    """The registered family names, sorted."""
    return tuple(sorted(_FACTORIES))


def _keyword_names(factory: Callable[..., TaskFamily]) -> set[str] | None:
    """The keyword arguments ``factory`` accepts, or None when it takes ``**kwargs``."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in parameters if p.kind in keyword_kinds}
