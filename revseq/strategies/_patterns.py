"""Schedule fragments shared by several strategies (share by functions, not subclasses).

Each fragment reverses the ``length`` steps starting at ``base`` under the same
precondition: the live state is ``x_base`` and, if ``length > 1``, ``x_base``
is stored (the caller frees it).
"""

from __future__ import annotations

from collections.abc import Iterator

from revseq.schedule import Action, Advance, Free, Restore, Reverse, Store


def store_all(base: int, length: int) -> Iterator[Action]:
    """Keep every state: ``length - 1`` forward steps, ``length - 1`` checkpoints with ``x_base``."""
    last = base + length - 1
    if length > 1:
        yield Advance(base, last, keep=True)
    yield Reverse(base, base + length)
    if length > 2:
        yield Free(base + 1, last)


def sweeps(base: int, length: int) -> Iterator[Action]:
    """Only ``x_base`` kept: one sweep from it per step, ``length (length - 1) / 2`` forward steps."""
    for k in range(length, 0, -1):
        if k < length:
            yield Restore(base)
        if k > 1:
            yield Advance(base, base + k - 1)
        yield Reverse(base + k - 1, base + k)


def enclose(n: int, body: Iterator[Action]) -> Iterator[Action]:
    """Store ``x_0`` around ``body`` (which reverses all ``n`` steps) when there is more than one step."""
    if n > 1:
        yield Store(0)
    yield from body
    if n > 1:
        yield Free(0)
