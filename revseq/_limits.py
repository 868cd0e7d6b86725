"""What cannot fit on this machine (or cannot end in a reasonable time), refused in O(1) before anything runs.

A run or a simulation that would hold more than the machine's physical
memory can only end in a ``MemoryError`` (or in swapping for hours), so the
entry points compare what a schedule promises to hold with the memory there
is, and raise :class:`~revseq.errors.ParameterError` naming the parameter
instead. The estimate is a lower bound on what would be needed, so nothing
that could fit is refused.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

from revseq.errors import ParameterError

__all__ = [
    "STORED_STATE_BYTES",
    "TRACKED_KEY_BYTES",
    "check_fits",
    "format_bytes",
    "format_duration",
    "physical_memory",
    "time_per_call",
]

TRACKED_KEY_BYTES = 40
"""Bytes the simulator spends at the least on each checkpoint it tracks: a slot in a
sorted list (8) and the index as a Python int (32, for indices past 256)."""

STORED_STATE_BYTES = 100
"""Bytes a :class:`~revseq.MemoryStore` spends at the least on each checkpoint besides the
state's data: a dict entry and the array object's header."""


def physical_memory() -> int | None:
    """The machine's physical memory in bytes, or None where the system does not say."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):  # not POSIX, or the names are unknown
        return None


def format_bytes(count: int | float) -> str:
    """``count`` bytes for a message: ``1.5 GiB``, ``8.0 TiB``, ``512 B``."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """``seconds`` for a message: ``12 us``, ``3.4 s``, ``2.5 h``, ``52 days``, ``1.2e+05 years``."""
    for unit, size in (("years", 365.25 * 86400), ("days", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0)):
        if seconds >= size:
            value = seconds / size
            return f"{value:.3g} {unit}" if value >= 1000 else f"{value:.1f} {unit}"
    return f"{seconds * 1e3:.1f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.1f} us"


def check_fits(name: str, needed: int, what: str, *, hint: str = "") -> None:
    """Raise ``ParameterError`` if ``needed`` bytes exceed the machine's physical memory.

    ``name`` is the parameter to blame and ``what`` says what would be held,
    for example ``"StoreAll() for n = 10**12 holds 999999999999 checkpoints"``;
    ``hint``, if given, ends the message (what to do instead).
    """
    memory = physical_memory()
    if memory is not None and needed > memory:
        raise ParameterError(
            f"{name} is too large to run here: {what}, at least {format_bytes(needed)}, "
            f"more than this machine's {format_bytes(memory)} of memory" + (f"; {hint}" if hint else "")
        )


def time_per_call(fn: Callable[[Any, int], Any], x: Any, t: int, *, calls: int = 3, slow: float = 0.1) -> float:
    """Seconds one call ``fn(x, t)`` takes: the fastest of ``calls`` calls, or one call if it takes ``slow`` s or more.

    The fastest is kept because the first call of a step often pays for
    imports, caches and allocation; a slow step is timed once, since a
    second call would cost more than it teaches. Either way the number of
    calls is fixed in advance, so that a caller can say how many it made.
    """
    best = math.inf
    for index in range(calls):
        start = time.perf_counter()
        fn(x, t)
        best = min(best, time.perf_counter() - start)
        if index == 0 and best >= slow:
            break
    return best
