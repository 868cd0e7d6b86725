"""Segment checkpointing: O(sqrt n) memory for about 2n forward steps (Chen et al. 2016)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import final

import attrs

from revseq._validate import as_int, int_at_least
from revseq.schedule import Action, Advance, Bounds, Cost, Restore, Reverse, Store
from revseq.strategies.base import ReversalStrategy

__all__ = ["SqrtCheckpointing"]


@final
@attrs.frozen
class SqrtCheckpointing(ReversalStrategy):
    """Store every ``interval``-th state on a first sweep, then reverse segment by segment.

    Each earlier segment is recomputed once from its checkpoint, keeping its
    states; the last segment's states are kept on the first sweep already.
    With ``m = ceil(n / k)`` segments of length ``k = interval`` (the last
    one ``l = n - (m - 1) k`` long) it makes ``2n - l - m + 1 <= 2n``
    forward steps and holds ``max(m + l - 2, m + k - 3)`` checkpoints, about
    ``2 sqrt(n)`` at the default ``k = ceil(sqrt(n))``. This is the scheme
    of Chen, Xu, Zhang and Guestrin (2016, arXiv:1604.06174) and of
    PyTorch's ``checkpoint_sequential``. ``BinomialCheckpointing`` with the
    same memory is never worse; pick this for its simple, even pattern.
    :meth:`cost` is this closed form (with the writes and reads), instant
    for any ``n``.

    Parameters
    ----------
    interval:
        Segment length ``k >= 1``; ``None`` (default) means ``ceil(sqrt(n))``.

    >>> SqrtCheckpointing().cost(10_000)
    Cost(n=10000, forward_steps=19801, peak_checkpoints=198, writes=9900, reads=99)
    """

    interval: int | None = attrs.field(default=None, converter=as_int, validator=int_at_least(1, optional=True))

    def _interval(self, n: int) -> int:
        return self.interval if self.interval is not None else math.isqrt(n - 1) + 1

    def actions(self, n: int) -> Iterator[Action]:
        k = self._interval(n)
        starts = range(0, n, k)
        last = starts[-1]
        for a in starts[:-1]:  # first sweep: a checkpoint at each segment start
            yield Store(a)
            yield Advance(a, a + k)
        if n - last > 1:  # the last segment keeps its states right away
            yield Store(last)
            yield Advance(last, n - 1, keep=True)
        yield Reverse(last, n)  # releases the segment's checkpoints, as each Reverse below does
        for a in reversed(starts[:-1]):
            yield Restore(a)
            if k > 1:
                yield Advance(a, a + k - 1, keep=True)
            yield Reverse(a, a + k)

    def _closed_cost(self, n: int) -> Cost:
        k = self._interval(n)
        segments = -(-n // k)
        last = n - (segments - 1) * k  # the last segment's length, 1 .. k
        earlier = segments - 1
        # First sweep: x_0, x_k, ... stored; the last segment keeps its states (last - 1 of them with its
        # start). Each earlier segment is then restored once and recomputed keeping its k - 2 inner states.
        writes = earlier + (last - 1) + earlier * max(k - 2, 0)
        held = max(segments + last - 2, earlier + max(k - 2, 0) if earlier else 0)
        return Cost(n=n, forward_steps=2 * n - last - segments + 1, peak_checkpoints=held, writes=writes, reads=earlier)

    def bounds(self, n: int) -> Bounds:
        k = self._interval(n)
        segments = -(-n // k)
        last = n - (segments - 1) * k
        held = max(segments + last - 2, segments + k - 3 if segments > 1 else 0, 0)
        return Bounds(forward_steps=2 * n - last - segments + 1, checkpoints=held)
