"""The abstract base class every reversal strategy derives from."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import final

from revseq._validate import check_int
from revseq.schedule import Action, Bounds, Cost, Schedule

__all__ = ["ReversalStrategy"]


class ReversalStrategy(abc.ABC):
    """How to trade memory for recomputation when reversing ``n`` steps.

    A strategy never runs f: it only says which actions to take. To write
    one, subclass this class (as a frozen attrs class whose fields are its
    configuration) and implement :meth:`actions`; optionally override
    :meth:`bounds` to promise a cost, which the engine then enforces and
    :func:`revseq.testing.check_strategy` checks. Everything else, cost,
    validation, running, is derived from the actions.

    Examples
    --------
    A strategy that stores every other state (about n/2 checkpoints and
    3n/2 forward steps):

    >>> import attrs
    >>> from revseq import Advance, Restore, Reverse, Store
    >>> @attrs.frozen
    ... class EveryOther(ReversalStrategy):
    ...     def actions(self, n):
    ...         starts = range(0, n, 2)
    ...         for a in starts:                       # first sweep: store x_0, x_2, ...
    ...             yield Store(a)
    ...             if a + 2 < n:
    ...                 yield Advance(a, a + 2)
    ...         for a in reversed(starts):             # then each pair, last first
    ...             if a != starts[-1]:
    ...                 yield Restore(a)
    ...             if a + 1 < n:
    ...                 yield Advance(a, a + 1)
    ...             yield Reverse(a, min(a + 2, n))    # releases x_a: nothing needs it now
    >>> EveryOther().cost(10)
    Cost(n=10, forward_steps=14, peak_checkpoints=5, writes=5, reads=4)
    """

    __slots__ = ()

    @abc.abstractmethod
    def actions(self, n: int) -> Iterator[Action]:
        """Yield the schedule's actions for ``n >= 1`` steps, lazily."""

    def bounds(self, n: int) -> Bounds:
        """Upper bounds this strategy promises for ``n`` steps (default: none)."""
        return Bounds()

    @final
    def schedule(self, n: int) -> Schedule:
        """The schedule for ``n`` steps: a lazy, re-iterable sequence of actions."""
        return Schedule(self, check_int("n", n, 1))

    @final
    def cost(self, n: int) -> Cost:
        """Forward steps and peak checkpoints for ``n`` steps, simulated without running f."""
        return self.schedule(n).cost()
