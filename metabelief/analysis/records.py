"""JSON-ready results: frozen dataclasses whose field names are the keys of their JSON form.

A result type subclasses ``Record`` and is decorated ``@dataclasses.dataclass(frozen=True)``; its
``to_dict()`` maps each field name to the field's value made JSON-ready by ``json_ready``: nested
records by their own ``to_dict()``, dicts by their values (keys as they are: names of networks,
policies, conditions, never built from strings), tuples and lists as lists, NaN as ``None`` (as
``metabelief.probes.ProbeScores.to_dict`` does). One field name may not be a key as it stands:
``return`` is a Python keyword, so a field ``return_`` writes the key ``"return"`` (a trailing
underscore is dropped). ``metabelief.experiments.results`` documents the whole of ``results.json``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np


class Record:
    """Mixin of JSON-ready frozen dataclasses: ``to_dict()`` and ``json_key``."""

    def to_dict(self) -> dict:
        """Field name (``json_key``) -> the field's value, JSON-ready (``json_ready``)."""
        return {
            json_key(field.name): json_ready(getattr(self, field.name)) for field in dataclasses.fields(self)
        }


def json_key(field_name: str) -> str:
    """The JSON key of a field: its name, less a trailing underscore (``return_`` -> ``return``)."""
    return field_name[:-1] if field_name.endswith("_") else field_name


def json_ready(value: object) -> object:
    """``value`` as plain JSON values: records (and anything with ``to_dict``) by their dicts,
    mappings by their values, sequences and arrays as lists, numbers as Python ``int``/``float``
    with NaN as ``None``; strings, booleans and ``None`` as they are."""
    if value is None or isinstance(value, str | bool):
        return value
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    if hasattr(value, "__array__"):  # numpy or jax arrays
        return json_ready(np.asarray(value).tolist())
    raise TypeError(f"cannot write {type(value).__name__} to JSON: {value!r}")
