"""What cannot fit on this machine, refused in O(1) before anything runs.

A run or a simulation that would hold more than the machine's physical
memory can only end in a ``MemoryError`` (or in swapping for hours), so the
entry points compare what a schedule promises to hold with the memory there
is, and raise :class:`~revseq.errors.ParameterError` naming the parameter
instead. The estimate is a lower bound on what would be needed, so nothing
that could fit is refused.
"""

from __future__ import annotations

import os

from revseq.errors import ParameterError

__all__ = ["TRACKED_KEY_BYTES", "check_fits", "format_bytes", "physical_memory"]

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


def check_fits(name: str, needed: int, what: str) -> None:
    """Raise ``ParameterError`` if ``needed`` bytes exceed the machine's physical memory.

    ``name`` is the parameter to blame and ``what`` says what would be held,
    for example ``"StoreAll() for n = 10**12 holds 999999999999 checkpoints"``.
    """
    memory = physical_memory()
    if memory is not None and needed > memory:
        raise ParameterError(
            f"{name} is too large to run here: {what}, at least {format_bytes(needed)}, "
            f"more than this machine's {format_bytes(memory)} of memory"
        )
