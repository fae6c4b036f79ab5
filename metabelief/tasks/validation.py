"""Construction-time argument checks: each raises a ValueError naming the bad argument."""

from __future__ import annotations

import math
import numbers


def integer_at_least(name: str, value: object, minimum: int) -> int:
    """Returns ``value`` as an int, or raises if it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def positive_float(name: str, value: object) -> float:
    """Returns ``value`` as a float, or raises if it is not a finite number > 0."""
    number = _finite_float(name, value)
    if number <= 0.0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return number


def probability(name: str, value: object) -> float:
    """Returns ``value`` as a float, or raises if it is not a number in [0, 1]."""
    number = _finite_float(name, value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return number


def _finite_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number
