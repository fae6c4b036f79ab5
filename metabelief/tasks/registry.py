"""The family registry: ``make(name, **kwargs)``, ``register(name, factory)``, ``families()``.

Also families as values: ``family_spec(family)`` records a family instance (its class and fields)
as JSON, and ``family_from_spec(spec)`` rebuilds it, so a config that holds an unregistered family
instance can be saved and loaded (``metabelief.train.save_agent``/``load_agent``).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

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


# ---------------------------------------------------------------------------------------------
# Families as values: a JSON spec of a family instance, and the instance rebuilt from it

FAMILY_SIZES = ("num_actions", "obs_size", "horizon")
FAMILY_METHODS = (
    "sample_task", "reset", "step", "belief_init", "belief_update", "belief_features", "true_features",
)  # fmt: skip


def is_family(value: object) -> bool:
    """Whether ``value`` is a task-family instance: a ``TaskFamily``, or any object (not a class)
    with the contract's sizes and methods (subclassing ``TaskFamily`` is optional)."""
    if isinstance(value, TaskFamily):
        return True
    return (
        not isinstance(value, type)
        and all(hasattr(value, name) for name in FAMILY_SIZES)
        and _has_methods(value)
    )


def _has_methods(value: object) -> bool:
    """Whether ``value`` (an instance or a class) has every method of the contract."""
    return all(callable(getattr(value, name, None)) for name in FAMILY_METHODS)


def family_spec(family: str | TaskFamily) -> str | dict[str, Any]:
    """A JSON-ready record of ``family`` from which ``family_from_spec`` can rebuild it.

    A registered name (a str) is its own spec. An instance gives
    ``{"class": "<module>.<QualName>", "fields": {...}, "rebuildable": bool}``:

    * ``fields``: the instance's ``__init__`` fields (``dataclasses.fields``) as JSON values
      (tuples and arrays become lists, NumPy scalars Python numbers); absent when the family is
      not a dataclass or a field has no JSON form (then only the class is recorded).
    * ``rebuildable``: whether ``family_from_spec`` can rebuild the instance from the record
      alone: it needs ``fields`` and a class importable by name in another process, so not one
      defined in ``__main__`` (a script) or inside a function. Otherwise the instance must be
      passed back to ``family_from_spec(spec, family=...)``, which checks it against the record.
    """
    if isinstance(family, str):
        return family
    if not is_family(family):
        raise ValueError(f"family must be a registered family name or a family instance, got {family!r}")
    cls = type(family)
    spec: dict[str, Any] = {"class": class_path(cls)}
    fields = _json_fields(family)
    if fields is not None:
        spec["fields"] = fields
    spec["rebuildable"] = fields is not None and cls.__module__ != "__main__" and "<" not in cls.__qualname__
    return spec


def family_from_spec(spec: str | Mapping[str, Any], family: TaskFamily | None = None) -> TaskFamily:
    """The family ``spec`` (from ``family_spec``) describes.

    Args:
      spec: a registered name (built with its defaults, as ``make(name)``), or an instance's record.
      family: the instance itself, when the caller has it. It is checked against ``spec``: its
        class must have the recorded qualified name and, where recorded, the same field values.

    Without ``family``, a record is rebuilt by importing its class's module and calling the class
    with the recorded fields (lists back to tuples); the class must be a dataclass task family,
    and the rebuilt instance must hold the recorded values (a field added to the class since the
    record was made takes its default). Importing runs the module's code, so rebuild only from
    files you trust.

    Raises:
      ValueError: ``family`` does not match ``spec``, or ``spec`` cannot be rebuilt (class in
        ``__main__``, module not importable, class missing or not a dataclass task family,
        fields that do not fit); the message says to pass the family (``family=``) or to register
        it and save it by name.
    """
    if isinstance(spec, str):
        built = make(spec)
        if family is not None and family != built:
            raise ValueError(f"family {family!r} does not match the recorded family {spec!r}, {built!r}")
        return built if family is None else family
    if not isinstance(spec, Mapping) or not isinstance(spec.get("class"), str):
        raise ValueError(f"a family spec is a registered name or a dict with a 'class' entry, got {spec!r}")
    path = spec["class"]
    if family is not None:
        given = family_spec(family)
        if not isinstance(given, dict) or given["class"] != path:
            raise ValueError(
                f"family {family!r} (class {class_path(type(family))}) does not match the "
                f"recorded family class {path}"
            )
        if "fields" in spec and not _fields_match(given.get("fields"), spec["fields"]):
            raise ValueError(
                f"family {family!r} does not match the recorded family {path} with fields {spec['fields']}"
            )
        return family
    advice = (
        "pass the family instance (e.g. load_agent(path, family=...)), or register it "
        "(metabelief.register) and use its name"
    )
    if "fields" not in spec or not spec.get("rebuildable", True):
        raise ValueError(f"the recorded family {path} cannot be rebuilt from its record alone: {advice}")
    cls = _import_class(path, advice)
    is_family_class = issubclass(cls, TaskFamily) or _has_methods(cls)
    if not (dataclasses.is_dataclass(cls) and is_family_class):
        raise ValueError(f"the recorded family class {path} is not a dataclass task family: {advice}")
    fields = spec["fields"]
    if not isinstance(fields, Mapping):
        raise ValueError(f"the recorded fields of family {path} must be a dict, got {fields!r}")
    try:
        rebuilt = cls(**{name: hashable(value) for name, value in fields.items()})
    except (TypeError, ValueError) as error:
        raise ValueError(f"the recorded fields do not fit family class {path} ({error}): {advice}") from error
    if not _fields_match(_json_fields(rebuilt), fields):
        raise ValueError(
            f"family class {path} rebuilt from fields {fields} records {_json_fields(rebuilt)}: {advice}"
        )
    return rebuilt


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _import_class(path: str, advice: str) -> type:
    """The class named ``<module>.<QualName>``: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        if module_name == "__main__":
            break
        try:
            found: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and (module_name + ".").startswith(error.name + "."):
                continue  # no such module (or package above it): try a shorter prefix
            raise ValueError(
                f"importing {module_name} for family class {path} failed ({error}): {advice}"
            ) from error
        except Exception as error:  # the module exists but failed while importing
            raise ValueError(
                f"importing {module_name} for family class {path} failed ({error}): {advice}"
            ) from error
        try:
            for name in parts[split:]:
                found = getattr(found, name)
        except AttributeError:
            raise ValueError(
                f"module {module_name} has no family class {'.'.join(parts[split:])}: {advice}"
            ) from None
        if not isinstance(found, type):
            raise ValueError(f"{path} is not a class: {advice}")
        return found
    raise ValueError(f"the module of family class {path} cannot be imported: {advice}")


def _json_fields(family: TaskFamily) -> dict[str, Any] | None:
    """The ``__init__`` fields of a dataclass family as JSON values, or None when it has none."""
    if not dataclasses.is_dataclass(family):
        return None
    fields = {}
    for field in dataclasses.fields(family):
        if not field.init:
            continue
        try:
            fields[field.name] = _json_value(getattr(family, field.name))
        except TypeError:
            return None
    return fields


def _json_value(value: Any) -> Any:
    """``value`` as JSON data; a TypeError when it has no JSON form."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.ndarray | np.generic):
        return _json_value(value.tolist())
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    raise TypeError(f"no JSON form for {value!r}")


def hashable(value: Any) -> Any:
    """Lists (e.g. from JSON) and arrays as nested tuples, NumPy scalars as Python numbers, so
    family arguments and a rebuilt family's fields stay hashable and JSON-ready."""
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()  # a NumPy scalar becomes the Python number (JSON can hold it)
    return tuple(hashable(item) for item in value) if isinstance(value, list | tuple) else value


def _fields_match(actual: Mapping[str, Any] | None, recorded: Any) -> bool:
    """Whether a family with JSON fields ``actual`` is the one recorded with ``recorded``: every
    recorded field has the same value (compared as JSON text, so alike before and after a JSON
    round trip, NaN too). Fields the record lacks (added to the class since) may hold anything."""
    if actual is None or not isinstance(recorded, Mapping):
        return False
    return all(
        name in actual and json.dumps(actual[name], sort_keys=True) == json.dumps(value, sort_keys=True)
        for name, value in recorded.items()
    )
