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
                           before they expire.
``Reverse(start, stop)``   reverse steps ``stop - 1`` down to ``start``; step
                           ``t`` reads ``x_t`` from the live state if it is
                           ``x_t``, otherwise from the store. Then every
                           checkpoint ``x_t`` with ``t >= start`` is released:
                           nothing can need it any more.
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

from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

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

# Actions are the one place revseq does not use attrs. A schedule for
# n = 10**6 with 30 checkpoints is 1.5 million of them, and a frozen attrs
# instance costs about three times as much to create as a NamedTuple, which
# is what made planning several times slower than it is. NamedTuples are
# immutable and have a field repr; the `__eq__`/`__hash__` below add what
# attrs would have given, that actions of different kinds never compare
# equal (`Store(3) != Restore(3)`, though both are the tuple `(3,)`).
# Actions carry no validators either: every schedule is checked by the
# _Tracker below, which names the offending action.


def _action_eq(self: tuple[Any, ...], other: object) -> bool:
    return type(self) is type(other) and tuple.__eq__(self, other)


def _action_hash(self: tuple[Any, ...]) -> int:
    return hash((type(self).__name__, tuple.__hash__(self)))


class Advance(NamedTuple):
    """Advance the live state from ``x_start`` to ``x_stop``; ``keep`` stores the states in between."""

    start: int
    stop: int
    keep: bool = False

    def __eq__(self, other: object) -> bool:
        return _action_eq(self, other)

    def __ne__(self, other: object) -> bool:
        return not _action_eq(self, other)

    def __hash__(self) -> int:
        return _action_hash(self)


class Store(NamedTuple):
    """Store a copy of the live state, which must be ``x_step``."""

    step: int

    def __eq__(self, other: object) -> bool:
        return _action_eq(self, other)

    def __ne__(self, other: object) -> bool:
        return not _action_eq(self, other)

    def __hash__(self) -> int:
        return _action_hash(self)


class Restore(NamedTuple):
    """Make the stored ``x_step`` the live state (the checkpoint stays stored)."""

    step: int

    def __eq__(self, other: object) -> bool:
        return _action_eq(self, other)

    def __ne__(self, other: object) -> bool:
        return not _action_eq(self, other)

    def __hash__(self) -> int:
        return _action_hash(self)


class Free(NamedTuple):
    """Drop the checkpoints ``x_start .. x_{stop-1}``.

    Only needed to make room early: a ``Reverse`` releases by itself every
    checkpoint it has made useless.
    """

    start: int
    stop: int

    def __eq__(self, other: object) -> bool:
        return _action_eq(self, other)

    def __ne__(self, other: object) -> bool:
        return not _action_eq(self, other)

    def __hash__(self) -> int:
        return _action_hash(self)


class Reverse(NamedTuple):
    """Reverse steps ``stop - 1`` down to ``start`` (``Reverse(t, t + 1)`` reverses step ``t``).

    Step ``stop - 1`` reads the live state if it is ``x_{stop-1}``, every
    other step reads the store. Afterwards the checkpoints ``x_t`` with
    ``t >= start`` are released, since no step left to reverse needs them.
    """

    start: int
    stop: int

    def __eq__(self, other: object) -> bool:
        return _action_eq(self, other)

    def __ne__(self, other: object) -> bool:
        return not _action_eq(self, other)

    def __hash__(self) -> int:
        return _action_hash(self)


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
    Stored keys are kept sorted, so every check is a bisection, whatever the
    length of the range an action covers.
    """

    __slots__ = (
        "action",
        "cursor",
        "forward_steps",
        "index",
        "keys",
        "limit",
        "live",
        "n",
        "output",
        "peak",
        "reads",
        "released",
        "writes",
    )

    def __init__(self, n: int, *, limit: int | None = None, output: bool = True) -> None:
        self.n = n
        self.limit = limit
        self.output = output  # whether x_n is computed (backprop) or not (reverse)
        self.live = 0  # index of the live state
        self.keys: list[int] = []  # stored checkpoints, sorted
        self.released: list[int] = []  # what the last Reverse released
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
        elif kind is Restore:
            self._restore(action)  # type: ignore[arg-type]
        elif kind is Store:
            self._store(action)  # type: ignore[arg-type]
        elif kind is Free:
            self._free(action)  # type: ignore[arg-type]
        else:
            raise self.fail("not an action: expected Advance, Store, Restore, Free or Reverse")

    def _int(self, name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{name} must be an int, got {value!r}")

    def _range(self, start: Any, stop: Any) -> None:
        self._int("start", start)
        self._int("stop", stop)
        if not 0 <= start < stop <= self.n:
            raise self.fail(f"needs 0 <= start < stop <= n = {self.n}")

    def _stored(self, t: int) -> bool:
        keys = self.keys
        i = bisect_left(keys, t)
        return i < len(keys) and keys[i] == t

    def _first_missing(self, start: int, stop: int, *, last: bool = False) -> int:
        present = set(self.keys[bisect_left(self.keys, start) : bisect_left(self.keys, stop)])
        steps = range(stop - 1, start - 1, -1) if last else range(start, stop)
        return next(t for t in steps if t not in present)

    def _grow(self) -> None:
        held = len(self.keys)
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
                else f"steps >= {self.cursor} are already reversed, so x_{stop} is no longer needed"
            )
            raise self.fail(f"advances to x_{stop}, but {what}")
        if a.keep and stop - start > 1:
            keys = self.keys
            i = bisect_left(keys, start + 1)
            if i < len(keys) and keys[i] < stop:
                raise self.fail(f"x_{keys[i]} is already stored")
            keys[i:i] = range(start + 1, stop)
            self.writes += stop - start - 1
            self._grow()
        self.forward_steps += stop - start
        self.live = stop

    def _store(self, a: Store) -> None:
        t = a.step
        self._int("step", t)
        if t != self.live:
            raise self.fail(f"the live state is x_{self.live}, not x_{t}")
        if t >= self.cursor:
            raise self.fail(f"x_{t} is no longer needed: steps >= {self.cursor} are already reversed")
        if self._stored(t):
            raise self.fail(f"x_{t} is already stored")
        insort(self.keys, t)
        self.writes += 1
        self._grow()

    def _restore(self, a: Restore) -> None:
        self._int("step", a.step)
        if not self._stored(a.step):
            raise self.fail(f"x_{a.step} is not stored (never stored, freed, or released by a Reverse)")
        self.live = a.step
        self.reads += 1

    def _free(self, a: Free) -> None:
        start, stop = a.start, a.stop
        self._range(start, stop)
        keys = self.keys
        i, j = bisect_left(keys, start), bisect_left(keys, stop)
        if j - i != stop - start:
            raise self.fail(f"x_{self._first_missing(start, stop)} is not stored")
        del keys[i:j]

    def _reverse(self, a: Reverse) -> None:
        start, stop = a.start, a.stop
        self._range(start, stop)
        if stop != self.cursor:
            if self.cursor == 0:
                raise self.fail("every step is already reversed")
            raise self.fail(
                f"steps are reversed from n-1 down to 0: the next one is step {self.cursor - 1}, "
                f"so this action must stop at {self.cursor}"
            )
        top = stop - 1
        if top != self.live and not self._stored(top):
            raise self.fail(f"x_{top} is neither live (x_{self.live} is) nor stored")
        keys = self.keys
        i = bisect_left(keys, start)
        if bisect_left(keys, top) - i != top - start:
            raise self.fail(f"x_{self._first_missing(start, top, last=True)} is not stored")
        if stop == self.n and self.output:
            self.forward_steps += 1  # x_n = f(x_{n-1}), computed once
        self.cursor = start
        # Nothing can need x_t for t >= start any more: release those checkpoints.
        self.released = keys[i:]
        del keys[i:]

    def finish(self) -> None:
        self.index, self.action = -1, None
        if self.cursor != 0:
            raise ScheduleError(f"the schedule ended before reversing steps {self.cursor - 1} down to 0")

    def cost(self) -> Cost:
        return Cost(
            n=self.n, forward_steps=self.forward_steps, peak_checkpoints=self.peak, writes=self.writes, reads=self.reads
        )


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
