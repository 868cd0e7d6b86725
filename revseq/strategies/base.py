"""The abstract base class every reversal strategy derives from."""

from __future__ import annotations

import abc
import itertools
from collections.abc import Iterable, Iterator
from typing import Any, final

from revseq._validate import check_int
from revseq.errors import ParameterError
from revseq.schedule import Action, Advance, Bounds, Cost, Free, Schedule, Store, strategy_iterable

__all__ = ["OnlineStrategy", "ReversalStrategy", "as_strategy"]


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

    def sized(self, state_nbytes: int) -> ReversalStrategy:
        """This strategy for states of ``state_nbytes`` bytes (the engine calls it with x0's size).

        A strategy whose budget is given in bytes returns a copy with the
        budget turned into a number of checkpoints; the default returns self.
        """
        return self

    @final
    def schedule(self, n: int) -> Schedule:
        """The schedule for ``n`` steps: a lazy, re-iterable sequence of actions."""
        return Schedule(self, check_int("n", n, 1))

    @final
    def cost(self, n: int) -> Cost:
        """What ``n`` steps cost (forward steps, peak checkpoints, writes, reads), without running f.

        The built-in offline strategies (:class:`~revseq.StoreAll`,
        :class:`~revseq.Recompute`, :class:`~revseq.RecursiveHalving`,
        :class:`~revseq.SqrtCheckpointing`, :class:`~revseq.BinomialCheckpointing`)
        answer in closed form, exactly what simulating their schedules gives
        (the tests compare the two), so that ``cost(10**12)`` is instant; any
        other strategy's schedule is simulated, and checked against its
        bounds on the way. :meth:`Schedule.cost <revseq.Schedule.cost>`
        always simulates.
        """
        n = check_int("n", n, 1)
        closed = self._closed_cost(n)
        return closed if closed is not None else self.schedule(n).cost()

    def _closed_cost(self, n: int) -> Cost | None:
        """The cost of ``n >= 1`` steps computed without walking the schedule, or None to simulate it.

        Private: only the built-in strategies implement it, each proven
        equal to the simulation by the tests; a user's strategy is simulated.
        """
        return None


class OnlineStrategy(ReversalStrategy):
    """A strategy that places checkpoints without knowing ``n``: for runs that stop on a condition.

    Implement :meth:`forward`, the actions of the forward sweep for a run of
    unknown length (``Store``, ``Free`` and ``Advance`` without ``keep``; it
    may be infinite, and each decision may depend only on the steps taken so
    far), :meth:`backward`, the reversal once the sweep has stopped at
    ``x_n``, and :meth:`online_bounds`, what it promises whatever ``n`` turns
    out to be. Then ``backprop(..., n=None, until=...)`` runs it, and
    :meth:`actions` (the schedule for a known ``n``) is derived: the forward
    sweep cut at ``x_n``, then the reversal. So ``cost(n)`` is what a run
    that stops at ``n`` costs, and the contract checks apply unchanged.
    """

    __slots__ = ()

    @abc.abstractmethod
    def forward(self) -> Iterator[Action]:
        """Yield the forward sweep's actions for a run of unknown length."""

    @abc.abstractmethod
    def backward(self, n: int, stored: tuple[int, ...]) -> Iterator[Action]:
        """Yield the reversal of ``n`` steps, the live state being ``x_n``.

        ``stored`` is every checkpoint the forward sweep left, in memory or
        on disk, sorted: the same whether ``n`` was known in advance or not.
        """

    @abc.abstractmethod
    def online_bounds(self) -> Bounds:
        """Upper bounds that hold whatever ``n`` turns out to be (checkpoints, at least)."""

    def bounds(self, n: int) -> Bounds:
        return self.online_bounds()

    @final
    def actions(self, n: int) -> Iterator[Action]:
        # A chain of the two parts, so that no frame of ours handles each action; the parts are asked for
        # lazily, the reversal only once the forward sweep is cut at x_n and has left `stored`.
        def parts() -> Iterator[Iterable[Action]]:
            stored: list[int] = []
            yield self._forward_to(n, stored)
            yield strategy_iterable(self, f"backward({n}, ...)", self.backward(n, tuple(stored)))

        return itertools.chain.from_iterable(parts())

    def _forward_to(self, n: int, stored: list[int]) -> Iterator[Action]:
        """The forward sweep as far as ``x_n``, leaving in ``stored`` (sorted) what it leaves stored once drained.

        :func:`_cut_forward` of :meth:`forward`. Private: a built-in strategy
        may cut its own sweep faster, the tests proving it the same.
        """
        return _cut_forward(strategy_iterable(self, "forward()", self.forward()), n, stored)


def as_strategy(strategy: Any, default: ReversalStrategy) -> ReversalStrategy:
    """``strategy`` checked where a user passes one (``default`` for None), with a hint for a class."""
    if strategy is None:
        return default
    if isinstance(strategy, type) and issubclass(strategy, ReversalStrategy):
        raise ParameterError(
            f"strategy must be a ReversalStrategy instance, got the class {strategy.__name__}; "
            f"did you mean {strategy.__name__}()?"
        )
    if not isinstance(strategy, ReversalStrategy):
        raise ParameterError(f"strategy must be a ReversalStrategy, got {strategy!r} ({type(strategy).__name__})")
    return strategy


def _cut_forward(actions: Iterator[Action], n: int, stored: list[int]) -> Iterator[Action]:
    """The forward sweep ``actions`` as far as ``x_n``, leaving in ``stored`` (sorted) what it leaves stored."""
    held: set[int] = set()  # a set: an online sweep frees and stores once per step, whatever c is
    add, discard = held.add, held.discard
    try:
        for action in actions:
            # Dispatch on the exact type first (one test per action, the planning hot path: an online sweep
            # is up to three actions a step); a subclass of an action, which the simulator refuses, is
            # still cut and counted by isinstance below.
            kind = type(action)
            if kind is Store:
                add(action.step)  # type: ignore[union-attr]
            elif kind is Free:
                start, stop = action  # type: ignore[misc]
                if stop - start == 1:
                    discard(start)
                else:
                    held.difference_update(range(start, stop))
            elif kind is Advance:
                if action.stop >= n:  # type: ignore[union-attr]
                    yield Advance(action.start, n, action.keep)  # type: ignore[union-attr]
                    return
            elif isinstance(action, Advance):
                if action.stop >= n:
                    yield Advance(action.start, n, action.keep)
                    return
            elif isinstance(action, Store):
                add(action.step)
            elif isinstance(action, Free):
                held.difference_update(range(action.start, action.stop))
            yield action
    finally:
        stored[:] = sorted(held)
