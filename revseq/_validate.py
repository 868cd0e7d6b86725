"""Parameter checks shared by every entry point (one message shape)."""

from __future__ import annotations

import numbers
import os
from typing import Any

import numpy as np

from revseq.errors import ParameterError


def as_int(value: Any) -> Any:
    """attrs converter: numpy integers become ``int``; anything else is left for the validator."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value


def check_int(name: str, value: Any, minimum: int) -> int:
    """Return ``value`` as an ``int`` if it is an integer >= ``minimum``; raise otherwise.

    Booleans are rejected (``True`` is not a count); numpy integers are accepted.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParameterError(f"{name} must be an int >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ParameterError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` as a ``bool`` if it is one (numpy's included); raise otherwise."""
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterError(f"{name} must be a bool, got {value!r} ({type(value).__name__})")
    return bool(value)


def check_directory(name: str, value: Any) -> Any:
    """Return ``value`` if it is a path (``str`` or ``os.PathLike``) or None; raise otherwise.

    For a directory under which a store makes its own private one; whether it
    exists and is writable is the store's check (``revseq.disk``).
    """
    if value is None or isinstance(value, (str, os.PathLike)):
        return value
    raise ParameterError(
        f"{name} must be a directory (a str or os.PathLike) under which a private one is made for the "
        f"checkpoints, or None, got {value!r} ({type(value).__name__})"
    )


def int_at_least(minimum: int, *, optional: bool = False) -> Any:
    """An attrs validator: the field is an int >= ``minimum`` (or None when ``optional``)."""

    def validator(instance: Any, attribute: Any, value: Any) -> None:
        if optional and value is None:
            return
        check_int(attribute.name, value, minimum)

    return validator


def checkpoints_in(max_bytes: int, state_nbytes: int) -> int:
    """How many states of ``state_nbytes`` bytes fit in ``max_bytes`` (at least one must: x_0's copy)."""
    if state_nbytes <= 0:
        raise ParameterError(
            "max_bytes needs states whose size is known (numpy arrays report nbytes), "
            f"got a state of {state_nbytes} bytes"
        )
    count = max_bytes // state_nbytes
    if count < 1:
        raise ParameterError(
            f"max_bytes must hold at least one state (x_0's copy) of {state_nbytes} bytes, got {max_bytes}"
        )
    return count


def unsized(strategy: Any) -> ParameterError:
    """The error for planning a byte budget before the state's size is known."""
    return ParameterError(
        f"{strategy!r} has its budget in bytes and needs the state's size: run it with backprop, reverse "
        f"or walk, or plan with .sized(state_nbytes)"
    )
