"""The two ends of the trade-off: keep every state, or keep only x_0."""

from __future__ import annotations

from collections.abc import Iterator
from typing import final

import attrs

from revseq.schedule import Action, Bounds, Cost
from revseq.strategies import _patterns
from revseq.strategies.base import ReversalStrategy

__all__ = ["Recompute", "StoreAll"]


@final
@attrs.frozen
class StoreAll(ReversalStrategy):
    """Store every state on one forward sweep, then reverse: plain backpropagation.

    Cost: ``n`` forward steps (no recomputation) and ``n - 1`` checkpoints
    (``x_0 .. x_{n-2}``; ``x_{n-1}`` is the live state). Pick it when ``n``
    states fit in memory: it is the fastest schedule there is.
    :meth:`cost` is this closed form, instant for any ``n``.

    >>> StoreAll().cost(100)
    Cost(n=100, forward_steps=100, peak_checkpoints=99, writes=99, reads=0)
    >>> StoreAll().cost(10**12).peak_checkpoints  # to plan: running it needs 10**12 states of memory
    999999999999
    """

    def actions(self, n: int) -> Iterator[Action]:
        return _patterns.from_x0(n, _patterns.store_all(0, n))

    def bounds(self, n: int) -> Bounds:
        return Bounds(forward_steps=n, checkpoints=n - 1)

    def _closed_cost(self, n: int) -> Cost:
        # Store(0), Advance(0, n - 1, keep=True) keeping x_1 .. x_{n-2}, Reverse(0, n) computing x_n.
        return Cost(n=n, forward_steps=n, peak_checkpoints=n - 1, writes=n - 1, reads=0)


@final
@attrs.frozen
class Recompute(ReversalStrategy):
    """Keep only ``x_0`` and recompute every state from it: the least memory, quadratic time.

    Cost: ``n (n - 1) / 2 + 1`` forward steps, one checkpoint, and
    ``n - 2`` restores (one per sweep but the first). The same as
    ``BinomialCheckpointing(checkpoints=1)``; useful as a baseline, or when
    even two states do not fit. :meth:`cost` is this closed form, instant
    for any ``n``.

    >>> Recompute().cost(100)
    Cost(n=100, forward_steps=4951, peak_checkpoints=1, writes=1, reads=98)
    """

    def actions(self, n: int) -> Iterator[Action]:
        return _patterns.from_x0(n, _patterns.sweeps(0, n))

    def bounds(self, n: int) -> Bounds:
        return Bounds(forward_steps=n * (n - 1) // 2 + 1, checkpoints=min(1, n - 1))

    def _closed_cost(self, n: int) -> Cost:
        # Store(0), then one sweep from x_0 per step: see _patterns.sweeps.
        held = min(1, n - 1)
        return Cost(n=n, forward_steps=n * (n - 1) // 2 + 1, peak_checkpoints=held, writes=held, reads=max(n - 2, 0))
