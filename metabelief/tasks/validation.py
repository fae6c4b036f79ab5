"""Construction-time argument checks: each raises a ValueError naming the bad argument."""

from __future__ import annotations

import math
import numbers

import numpy as np


def integer_at_least(name: str, value: object, minimum: int) -> int:
    """Returns ``value`` as an int, or raises if it is not an integer >= ``minimum``."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def integer_tuple(name: str, values: object, minimum: int, *, allow_empty: bool = False) -> tuple[int, ...]:
    """Returns ``values`` as a tuple of ints, or raises unless it is a list or tuple of integers
    >= ``minimum`` with no repeats (and not empty, unless ``allow_empty``)."""
    if not isinstance(values, list | tuple):
        raise ValueError(f"{name} must be a tuple of integers, got {values!r}")
    if not values and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    try:
        checked = tuple(integer_at_least(name, value, minimum) for value in values)
    except ValueError:
        raise ValueError(f"{name} must hold integers >= {minimum}, got {values!r}") from None
    if len(set(checked)) != len(checked):
        raise ValueError(f"{name} must not repeat a value, got {values!r}")
    return checked


def positive_float(name: str, value: object) -> float:
    """Returns ``value`` as a float, or raises if it is not a finite number > 0."""
    number = finite_float(name, value)
    if number <= 0.0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return number


def non_negative_float(name: str, value: object) -> float:
    """Returns ``value`` as a float, or raises if it is not a finite number >= 0."""
    number = finite_float(name, value)
    if number < 0.0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return number


def probability(name: str, value: object) -> float:
    """Returns ``value`` as a float, or raises if it is not a number in [0, 1]."""
    number = finite_float(name, value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return number


def boolean(name: str, value: object) -> bool:
    """Returns ``value`` as a bool, or raises if it is not True or False (1, 0 and "yes" are not)."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def finite_float(name: str, value: object) -> float:
    """Returns ``value`` as a float, or raises if it is not a finite real number."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number
