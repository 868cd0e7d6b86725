"""The two ends of the trade-off: keep every state, or keep only x_0."""

from __future__ import annotations

from collections.abc import Iterator
from typing import final

import attrs

from revseq.schedule import Action, Bounds
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

    >>> StoreAll().cost(100)
    Cost(n=100, forward_steps=100, peak_checkpoints=99, writes=99, reads=0)
    """

    def actions(self, n: int) -> Iterator[Action]:
        return _patterns.from_x0(n, _patterns.store_all(0, n))

    def bounds(self, n: int) -> Bounds:
        return Bounds(forward_steps=n, checkpoints=n - 1)


@final
@attrs.frozen
class Recompute(ReversalStrategy):
    """Keep only ``x_0`` and recompute every state from it: the least memory, quadratic time.

    Cost: ``n (n - 1) / 2 + 1`` forward steps and one checkpoint. The same as
    ``BinomialCheckpointing(checkpoints=1)``; useful as a baseline, or when
    even two states do not fit.

    >>> Recompute().cost(100).forward_steps
    4951
    """

    def actions(self, n: int) -> Iterator[Action]:
        return _patterns.from_x0(n, _patterns.sweeps(0, n))

    def bounds(self, n: int) -> Bounds:
        return Bounds(forward_steps=n * (n - 1) // 2 + 1, checkpoints=min(1, n - 1))
