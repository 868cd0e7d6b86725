"""Schedules as data: the closed vocabulary of actions, the simulator and the validator.

A schedule is a finite sequence of the five actions below, applied to one
*live* state (the state being advanced, not counted as a checkpoint) and a
store of checkpoints keyed by step index. At the start the live state is
``x_0`` and the store is empty. Steps are reversed from ``n - 1`` down to
``0``, each exactly once.

=========================  ==================================================
``Advance(start, stop)``   live ``x_start`` -> ``x_stop`` (``stop - start``
                           calls of f). ``keep=True`` also stores the states
                           passed on the way, ``x_{start+1} .. x_{stop-1}``.
``Store(t)``               store a copy of the live state ``x_t``.
``Restore(t)``             the live state becomes the stored ``x_t``.
``Free(start, stop)``      drop the checkpoints ``x_start .. x_{stop-1}``
                           (``Free(t)`` drops ``x_t``).
``Reverse(start, stop)``   reverse steps ``stop - 1`` down to ``start``; step
                           ``t`` reads ``x_t`` from the live state if it is
                           ``x_t``, otherwise from the store.
=========================  ==================================================

``Advance`` never goes past ``x_{n-1}``: the final state ``x_n`` is computed
by the engine from ``x_{n-1}`` when the reversal of step ``n - 1`` starts
(one forward step, counted), so that a schedule need not keep ``x_{n-1}``
when it produces ``x_n``.

:func:`simulate` walks a schedule without running anything and returns its
:class:`Cost`; it raises :class:`~revseq.errors.ScheduleError`, naming the
action and why, at the first illegal action. The engine runs the same
checks before every action it executes, so an illegal schedule never runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from revseq._validate import check_int
from revseq.errors import ScheduleError

if TYPE_CHECKING:
    from revseq.strategies.base import ReversalStrategy

__all__ = [
    "Action",
    "Advance",
    "Bounds",
    "Cost",
    "Free",
    "Restore",
    "Reverse",
    "Schedule",
    "Store",
    "simulate",
    "validate",
]

# Actions are created by the million for long schedules, so they carry no
# validators of their own: every schedule is checked by the _Tracker below,
# which names the offending action.


def _next_step(self: Any) -> int:
    return int(self.start) + 1


@attrs.frozen
class Advance:
    """Advance the live state from ``x_start`` to ``x_stop``; ``keep`` stores the states in between."""

    start: int
    stop: int
    keep: bool = False


@attrs.frozen
class Store:
    """Store a copy of the live state, which must be ``x_step``."""

    step: int


@attrs.frozen
class Restore:
    """Make the stored ``x_step`` the live state (the checkpoint stays stored)."""

    step: int


@attrs.frozen
class Free:
    """Drop the checkpoints ``x_start .. x_{stop-1}``; ``Free(t)`` drops ``x_t``."""

    start: int
    stop: int = attrs.field(default=attrs.Factory(_next_step, takes_self=True))


@attrs.frozen
class Reverse:
    """Reverse steps ``stop - 1`` down to ``start``; ``Reverse(t)`` reverses step ``t``."""

    start: int
    stop: int = attrs.field(default=attrs.Factory(_next_step, takes_self=True))


Action: TypeAlias = Advance | Store | Restore | Free | Reverse


@attrs.frozen
class Cost:
    """What a schedule costs, predicted by :func:`simulate` without running f.

    Attributes
    ----------
    n:
        Number of steps.
    forward_steps:
        Calls of f over a whole ``backprop``, the first sweep and the one call
        that produces ``x_n`` included (StoreAll: exactly ``n``).
    peak_checkpoints:
        Most states held in the store at one time (the live state is not counted).
    writes:
        States written to the store (``Store`` actions and states kept by ``Advance``).
    reads:
        ``Restore`` actions.
    """

    n: int
    forward_steps: int
    peak_checkpoints: int
    writes: int
    reads: int

    @property
    def recompute_factor(self) -> float:
        """``forward_steps / n``: 1.0 means no recomputation."""
        return self.forward_steps / self.n


@attrs.frozen
class Bounds:
    """A strategy's promise for one ``n``: upper bounds on its cost, ``None`` where it promises nothing.

    The engine and the simulator enforce ``checkpoints`` after every action;
    the contract checks in :mod:`revseq.testing` check both.
    """

    forward_steps: int | None = None
    checkpoints: int | None = None


class _Tracker:
    """Walks actions, checking each one and counting what it costs.

    The single source of truth for legality and counting: :func:`simulate`
    uses it alone, the engine consults it before executing each action.
    """

    __slots__ = (
        "action",
        "cursor",
        "forward_steps",
        "index",
        "limit",
        "live",
        "n",
        "output",
        "peak",
        "reads",
        "stored",
        "writes",
    )

    def __init__(self, n: int, *, limit: int | None = None, output: bool = True) -> None:
        self.n = n
        self.limit = limit
        self.output = output  # whether x_n is computed (backprop) or not (reverse)
        self.live = 0  # index of the live state
        self.stored: set[int] = set()
        self.cursor = n  # steps >= cursor are reversed; the next one is cursor - 1
        self.forward_steps = 0
        self.peak = 0
        self.writes = 0
        self.reads = 0
        self.index = -1
        self.action: object = None

    def fail(self, message: str) -> ScheduleError:
        return ScheduleError(message, index=self.index, action=self.action)

    def check(self, index: int, action: object) -> None:
        self.index = index
        self.action = action
        kind = type(action)
        if kind is Advance:
            self._advance(action)  # type: ignore[arg-type]
        elif kind is Reverse:
            self._reverse(action)  # type: ignore[arg-type]
        elif kind is Store:
            self._store(action)  # type: ignore[arg-type]
        elif kind is Restore:
            self._restore(action)  # type: ignore[arg-type]
        elif kind is Free:
            self._free(action)  # type: ignore[arg-type]
        else:
            raise self.fail("not an action: expected Advance, Store, Restore, Free or Reverse")

    def _range(self, start: Any, stop: Any) -> None:
        for name, value in (("start", start), ("stop", stop)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.fail(f"{name} must be an int, got {value!r}")
        if not 0 <= start < stop <= self.n:
            raise self.fail(f"needs 0 <= start < stop <= n = {self.n}")

    def _grow(self) -> None:
        held = len(self.stored)
        if self.limit is not None and held > self.limit:
            raise self.fail(f"holds {held} checkpoints, over the budget of {self.limit}")
        if held > self.peak:
            self.peak = held

    def _advance(self, a: Advance) -> None:
        start, stop = a.start, a.stop
        self._range(start, stop)
        if start != self.live:
            raise self.fail(f"the live state is x_{self.live}, not x_{start}")
        if stop >= self.cursor:
            what = (
                "x_n is computed by the engine when step n-1 is reversed"
                if stop == self.n
                else (f"steps >= {self.cursor} are already reversed, so x_{stop} is no longer needed")
            )
            raise self.fail(f"advances to x_{stop}, but {what}")
        if a.keep and stop - start > 1:
            kept = range(start + 1, stop)
            clash = self.stored.intersection(kept)
            if clash:
                raise self.fail(f"x_{min(clash)} is already stored")
            self.stored.update(kept)
            self.writes += len(kept)
            self._grow()
        self.forward_steps += stop - start
        self.live = stop

    def _store(self, a: Store) -> None:
        t = a.step
        if t != self.live:
            raise self.fail(f"the live state is x_{self.live}, not x_{t}")
        if t in self.stored:
            raise self.fail(f"x_{t} is already stored")
        if t >= self.cursor:
            raise self.fail(f"x_{t} is no longer needed: steps >= {self.cursor} are already reversed")
        self.stored.add(t)
        self.writes += 1
        self._grow()

    def _restore(self, a: Restore) -> None:
        if a.step not in self.stored:
            raise self.fail(f"x_{a.step} is not stored (never stored, or freed)")
        self.live = a.step
        self.reads += 1

    def _free(self, a: Free) -> None:
        self._range(a.start, a.stop)
        missing = [t for t in range(a.start, a.stop) if t not in self.stored]
        if missing:
            raise self.fail(f"x_{missing[0]} is not stored")
        self.stored.difference_update(range(a.start, a.stop))

    def _reverse(self, a: Reverse) -> None:
        start, stop = a.start, a.stop
        self._range(start, stop)
        if stop != self.cursor:
            if self.cursor == 0:
                raise self.fail("every step is already reversed")
            raise self.fail(f"steps are reversed from n-1 down to 0: the next one is step {self.cursor - 1}, "
                            f"so this action must stop at {self.cursor}")  # fmt: skip
        top = stop - 1
        if top != self.live and top not in self.stored:
            raise self.fail(f"x_{top} is neither live (x_{self.live} is) nor stored")
        missing = [t for t in range(start, top) if t not in self.stored]
        if missing:
            raise self.fail(f"x_{missing[-1]} is not stored")
        if stop == self.n and self.output:
            self.forward_steps += 1  # x_n = f(x_{n-1}), computed once
        self.cursor = start

    def finish(self) -> None:
        self.index, self.action = -1, None
        if self.cursor != 0:
            raise ScheduleError(f"the schedule ended before reversing steps {self.cursor - 1} down to 0")

    def cost(self) -> Cost:
        return Cost(n=self.n, forward_steps=self.forward_steps, peak_checkpoints=self.peak,
                    writes=self.writes, reads=self.reads)  # fmt: skip


def simulate(actions: Iterable[Action], n: int, *, checkpoints: int | None = None) -> Cost:
    """Walk ``actions`` for ``n`` steps without running f and return their cost.

    Raises :class:`~revseq.errors.ScheduleError` at the first illegal action
    (restoring what is not stored, advancing from the wrong state, reversing
    out of order or twice, more than ``checkpoints`` held at once) or if the
    schedule ends before every step is reversed.

    >>> simulate([Store(0), Advance(0, 2, keep=True), Reverse(0, 3)], 3)
    Cost(n=3, forward_steps=3, peak_checkpoints=2, writes=2, reads=0)
    """
    n = check_int("n", n, 1)
    if checkpoints is not None:
        checkpoints = check_int("checkpoints", checkpoints, 0)
    tracker = _Tracker(n, limit=checkpoints)
    for index, action in enumerate(actions):
        tracker.check(index, action)
    tracker.finish()
    return tracker.cost()


def validate(actions: Iterable[Action], n: int, *, checkpoints: int | None = None) -> None:
    """Raise :class:`~revseq.errors.ScheduleError` if ``actions`` is not a legal schedule for ``n`` steps."""
    simulate(actions, n, checkpoints=checkpoints)


@attrs.frozen
class Schedule:
    """The schedule of ``strategy`` for ``n`` steps: lazy, and re-iterable.

    Iterating it asks the strategy for a fresh generator each time, so
    nothing of size ``n`` is built and two walks see the same actions.
    """

    strategy: ReversalStrategy
    n: int

    def __iter__(self) -> Iterator[Action]:
        return iter(self.strategy.actions(self.n))

    def bounds(self) -> Bounds:
        return self.strategy.bounds(self.n)

    def cost(self) -> Cost:
        """Simulate the schedule (validating it against the strategy's own bounds)."""
        return simulate(self, self.n, checkpoints=self.bounds().checkpoints)

    def validate(self) -> None:
        self.cost()
