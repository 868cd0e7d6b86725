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
``Store(t, disk=False)``   store a copy of the live state ``x_t`` (in
                           memory, or on disk).
``Restore(t)``             the live state becomes the stored ``x_t`` (the
                           memory copy if there is one).
``Free(start, stop)``      drop the checkpoints ``x_start .. x_{stop-1}``
                           before they expire.
``Reverse(start, stop)``   reverse steps ``stop - 1`` down to ``start``; step
                           ``t`` reads ``x_t`` from the live state if it is
                           ``x_t``, otherwise from the store. Then every
                           checkpoint ``x_t`` with ``t >= start`` is released:
                           nothing can need it any more.
=========================  ==================================================

The final state ``x_n`` is computed once. Usually the engine computes it
from ``x_{n-1}`` when the reversal of step ``n - 1`` starts (one forward
step, counted), so that a schedule need not keep ``x_{n-1}`` when it
produces ``x_n``. A schedule may instead ``Advance`` to ``x_n`` before its
first ``Reverse`` (an online schedule must: it learns ``n`` only on
arriving there); the reversal then does not compute it again.

:func:`simulate` walks a schedule without running anything and returns its
:class:`Cost`; it raises :class:`~revseq.errors.ScheduleError`, naming the
action and why, at the first illegal action. The engine runs the same
checks before every action it executes, so an illegal schedule never runs.
"""

from __future__ import annotations

import numbers
from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

import attrs
import numpy as np

from revseq import _limits
from revseq._validate import as_int, check_int, int_at_least
from revseq.errors import ParameterError, ScheduleError

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
# (NamedTuples take no base classes, so the methods are set on each after.)
# Actions carry no validators either: every schedule is checked by the
# _Tracker below, which names the offending action.


def _action_eq(self: tuple[Any, ...], other: object) -> bool:
    return type(self) is type(other) and tuple.__eq__(self, other)


def _action_hash(self: tuple[Any, ...]) -> int:
    return hash((type(self).__name__, tuple.__hash__(self)))


def _action_ne(self: tuple[Any, ...], other: object) -> bool:
    return not _action_eq(self, other)


class Advance(NamedTuple):
    """Advance the live state from ``x_start`` to ``x_stop``; ``keep`` stores the states in between."""

    start: int
    stop: int
    keep: bool = False


class Store(NamedTuple):
    """Store a copy of the live state, which must be ``x_step``: in memory, or on disk with ``disk=True``.

    A state may be held at both levels at once; ``Restore`` then reads the
    memory copy.
    """

    step: int
    disk: bool = False

    def __repr__(self) -> str:
        return f"Store(step={self.step!r}, disk=True)" if self.disk else f"Store(step={self.step!r})"


class Restore(NamedTuple):
    """Make the stored ``x_step`` the live state (the checkpoint stays stored).

    Reads the memory copy if there is one, else the disk copy.
    """

    step: int


class Free(NamedTuple):
    """Drop the checkpoints ``x_start .. x_{stop-1}``, from memory and disk alike.

    Only needed to make room early: a ``Reverse`` releases by itself every
    checkpoint it has made useless.
    """

    start: int
    stop: int


class Reverse(NamedTuple):
    """Reverse steps ``stop - 1`` down to ``start`` (``Reverse(t, t + 1)`` reverses step ``t``).

    Step ``stop - 1`` reads the live state if it is ``x_{stop-1}``, every
    other step reads the store. Afterwards the checkpoints ``x_t`` with
    ``t >= start`` are released, since no step left to reverse needs them.
    """

    start: int
    stop: int


for _kind in (Advance, Store, Restore, Free, Reverse):
    _kind.__eq__ = _action_eq  # type: ignore[method-assign]
    _kind.__ne__ = _action_ne  # type: ignore[method-assign,assignment]
    _kind.__hash__ = _action_hash  # type: ignore[method-assign]

Action: TypeAlias = Advance | Store | Restore | Free | Reverse


@attrs.frozen(repr=False)
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
        Most states held in memory at one time (the live state is not counted).
    writes:
        States written to memory (``Store`` actions and states kept by ``Advance``).
    reads:
        ``Restore`` actions served from memory.
    peak_disk, disk_writes, disk_reads:
        The same for checkpoints on disk (``Store(t, disk=True)``); shown
        only when a schedule uses the disk.
    """

    n: int
    forward_steps: int
    peak_checkpoints: int
    writes: int
    reads: int
    peak_disk: int = 0
    disk_writes: int = 0
    disk_reads: int = 0

    @property
    def recompute_factor(self) -> float:
        """``forward_steps / n``: 1.0 means no recomputation."""
        return self.forward_steps / self.n

    def __repr__(self) -> str:
        fields = attrs.fields(Cost)
        shown = [f for f in fields if f.name not in _DISK_FIELDS or any(getattr(self, d) for d in _DISK_FIELDS)]
        return "Cost(" + ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in shown) + ")"


_DISK_FIELDS = ("peak_disk", "disk_writes", "disk_reads")


@attrs.frozen
class Bounds:
    """A strategy's promise for one ``n``: upper bounds on its cost, ``None`` where it promises nothing.

    The engine and the simulator enforce all three after every action: a
    schedule that would hold more checkpoints, or make more forward steps,
    than its strategy promised is stopped with a
    :class:`~revseq.errors.ScheduleError` before the action runs. Each bound
    is an int ``>= 0`` (numpy integers accepted) or None.
    """

    forward_steps: int | None = attrs.field(default=None, converter=as_int, validator=int_at_least(0, optional=True))
    checkpoints: int | None = attrs.field(default=None, converter=as_int, validator=int_at_least(0, optional=True))
    disk_checkpoints: int | None = attrs.field(default=None, converter=as_int, validator=int_at_least(0, optional=True))


_FLAGS = ("keep", "disk")  # the action fields that are booleans; every other field is a step index

PROGRESS_RULE = (
    "a schedule may make at most 3n + 16 forward steps, and at most 16 + 8 * (its forward steps) + 2 * (the "
    "checkpoints held) actions, between two Reverse actions (before n is known: between two new states)"
)
"""How the engine tells a schedule that loops from a slow one (see ``_Tracker``): every legal
schedule that does not repeat itself stays far inside it."""


class _Tracker:
    """Walks actions, checking each one and counting what it costs.

    The single source of truth for legality and counting: :func:`simulate`
    uses it alone, the engine consults it before executing each action.
    Stored keys are kept sorted, one list per level (memory, disk), so every
    check is a bisection whatever the length of the range an action covers.

    With ``n=None`` the length is not known yet (an online run): only
    forward actions are legal until :meth:`settle` fixes ``n``.

    Besides legality it enforces what the strategy promised (``limit``,
    ``disk_limit``, ``step_limit``) and that the schedule makes progress
    (:data:`PROGRESS_RULE`): a *phase* runs from one ``Reverse`` to the next
    (with ``n`` unknown, from one new state to the next). No schedule needs
    more than ``2n`` forward steps in a phase (an online one sweeps to
    ``x_n``, then may restore ``x_0`` and advance to ``x_{n-1}``), nor more
    than a few actions per step and per checkpoint; one that exceeds that
    with room to spare is repeating itself (a user strategy yielding ``Restore(0)``
    forever), and is stopped instead of hanging the run.
    """

    __slots__ = (
        "action",
        "cursor",
        "disk_keys",
        "disk_limit",
        "disk_reads",
        "disk_writes",
        "forward_steps",
        "index",
        "keys",
        "limit",
        "live",
        "n",
        "output",
        "output_done",
        "peak",
        "peak_disk",
        "phase_actions",
        "phase_held",
        "phase_steps",
        "reads",
        "released",
        "released_disk",
        "step_limit",
        "top",
        "writes",
    )

    def __init__(
        self,
        n: int | None,
        *,
        limit: int | None = None,
        disk_limit: int | None = None,
        step_limit: int | None = None,
        output: bool = True,
    ) -> None:
        self.n = n
        self.limit = limit
        self.disk_limit = disk_limit
        self.step_limit = step_limit
        self.output = output  # whether x_n is computed (backprop) or not (reverse)
        self.output_done = False  # whether x_n has been computed (by an Advance reaching it)
        self.live = 0  # index of the live state
        self.top = 0  # the furthest state reached (what progress means before n is known)
        self.keys: list[int] = []  # checkpoints in memory, sorted
        self.disk_keys: list[int] = []  # checkpoints on disk, sorted
        self.released: list[int] = []  # what the last Reverse or Free released from memory
        self.released_disk: list[int] = []  # ... and from disk
        self.cursor = n  # steps >= cursor are reversed; the next one is cursor - 1 (None: n unknown)
        self.forward_steps = 0
        self.peak = self.peak_disk = 0
        self.writes = self.reads = self.disk_writes = self.disk_reads = 0
        self.phase_steps = self.phase_actions = self.phase_held = 0
        self.index = -1
        self.action: object = None

    def fail(self, message: str) -> ScheduleError:
        if self.cursor == 0:  # every action is illegal once every step is reversed: say why, once
            message = "every step is already reversed: the schedule must end here"
        return ScheduleError(message, index=self.index, action=self.action)

    def check(self, index: int, action: Any) -> Action:
        """Check ``action`` (the ``index``-th) and count it; return it with its fields as exact ints and bools.

        Raises :class:`~revseq.errors.ScheduleError` naming the action if it
        is illegal, breaks a promised bound, or shows the schedule looping.
        """
        self.index = index
        self.action = action
        kind = type(action)
        if kind is Advance:
            if type(action[0]) is not int or type(action[1]) is not int or type(action[2]) is not bool:
                action = self._exact(action)
            self._advance(action)
        elif kind is Reverse:
            if type(action[0]) is not int or type(action[1]) is not int:
                action = self._exact(action)
            self._reverse(action)
        elif kind is Restore:
            if type(action[0]) is not int:
                action = self._exact(action)
            self._restore(action)
        elif kind is Store:
            if type(action[0]) is not int or type(action[1]) is not bool:
                action = self._exact(action)
            self._store(action)
        elif kind is Free:
            if type(action[0]) is not int or type(action[1]) is not int:
                action = self._exact(action)
            self._free(action)
        else:
            raise self.fail("not an action: expected Advance, Store, Restore, Free or Reverse")
        self.phase_actions += 1
        if self.phase_actions > 16 + 8 * self.phase_steps + 2 * self.phase_held:
            raise self.fail(self._no_progress(f"{self.phase_actions} actions"))
        return action  # type: ignore[no-any-return]

    def _exact(self, action: Any) -> Any:
        """``action`` with numpy integers and booleans as Python ones; anything else is refused."""
        values: list[int | bool] = []
        for name, value in zip(action._fields, action, strict=True):
            if name in _FLAGS:
                if not isinstance(value, (bool, np.bool_)):
                    raise self.fail(f"{name} must be a bool, got {value!r} ({type(value).__name__})")
                values.append(bool(value))
            elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
                values.append(int(value))
            else:
                raise self.fail(f"{name} must be an int, got {value!r} ({type(value).__name__})")
        return tuple.__new__(type(action), values)

    def _no_progress(self, what: str) -> str:
        if self.n is None:
            since = f"since it reached x_{self.top}"
        elif self.cursor == self.n:
            since = "since the schedule began"
        else:
            since = f"since step {self.cursor} was reversed"
        return f"{what} {since} without progress: the schedule is repeating itself ({PROGRESS_RULE})"

    def _new_phase(self) -> None:
        self.phase_steps = self.phase_actions = 0
        self.phase_held = len(self.keys) + len(self.disk_keys)

    def _range(self, start: int, stop: int) -> None:
        if self.n is None:
            if not 0 <= start < stop:
                raise self.fail("needs 0 <= start < stop")
        elif not 0 <= start < stop <= self.n:
            raise self.fail(f"needs 0 <= start < stop <= n = {self.n}")

    @staticmethod
    def _has(keys: list[int], t: int) -> bool:
        i = bisect_left(keys, t)
        return i < len(keys) and keys[i] == t

    def _held_in(self, start: int, stop: int) -> int:
        """How many of x_start .. x_{stop-1} are stored, at either level."""
        keys, disk = self.keys, self.disk_keys
        in_memory = bisect_left(keys, stop) - bisect_left(keys, start)
        if not disk:
            return in_memory
        both = set(keys[bisect_left(keys, start) : bisect_left(keys, stop)])
        both.update(disk[bisect_left(disk, start) : bisect_left(disk, stop)])
        return len(both)

    def _first_missing(self, start: int, stop: int, *, last: bool = False) -> int:
        steps = range(stop - 1, start - 1, -1) if last else range(start, stop)
        return next(t for t in steps if not (self._has(self.keys, t) or self._has(self.disk_keys, t)))

    def _grow(self) -> None:
        held = len(self.keys)
        if self.limit is not None and held > self.limit:
            raise self.fail(f"holds {held} checkpoints, over the budget of {self.limit}")
        if held > self.peak:
            self.peak = held

    def _count_steps(self, steps: int) -> None:
        self.forward_steps += steps
        if self.step_limit is not None and self.forward_steps > self.step_limit:
            raise self.fail(f"makes {self.forward_steps} forward steps so far, over the promised {self.step_limit}")

    def _advance(self, a: Advance) -> None:
        start, stop = a.start, a.stop
        self._range(start, stop)
        if start != self.live:
            raise self.fail(f"the live state is x_{self.live}, not x_{start}")
        if self.n is None:
            if a.keep:
                raise self.fail("keep=True is not allowed before the length is known (an online forward sweep)")
        elif stop == self.n and self.cursor == self.n:
            if self.output_done:
                raise self.fail("x_n is already computed: a schedule computes it once")
            self.output_done = True  # this Advance computes x_n; the reversal will not
        elif stop >= self.cursor:  # type: ignore[operator]
            raise self.fail(f"advances to x_{stop}, but steps >= {self.cursor} are already reversed")
        if a.keep and stop - start > 1:
            self._keep(start, stop)
        self._count_steps(stop - start)
        self.live = stop
        if self.n is None and stop > self.top:
            self.top = stop
            self._new_phase()
        else:
            self.phase_steps += stop - start
            cap = 3 * (self.top if self.n is None else self.n) + 16
            if self.phase_steps > cap:
                raise self.fail(self._no_progress(f"{self.phase_steps} forward steps"))

    def _keep(self, start: int, stop: int) -> None:
        """Record ``x_{start+1} .. x_{stop-1}`` as stored (``Advance(keep=True)``), checking the budget first."""
        keys = self.keys
        count = stop - start - 1
        held = len(keys) + count
        if self.limit is not None and held > self.limit:
            raise self.fail(f"holds {held} checkpoints, over the budget of {self.limit}")
        if count > 1 << 20:  # before building a list of them: a range of 10**12 states cannot be tracked
            memory = _limits.physical_memory()
            needed = held * _limits.TRACKED_KEY_BYTES
            if memory is not None and needed > memory:
                raise self.fail(
                    f"keeps {count} states: tracking {held} checkpoints needs at least "
                    f"{_limits.format_bytes(needed)}, more than this machine's {_limits.format_bytes(memory)}"
                )
        i = bisect_left(keys, start + 1)
        if i < len(keys) and keys[i] < stop:
            raise self.fail(f"x_{keys[i]} is already stored")
        keys[i:i] = range(start + 1, stop)
        self.writes += count
        self._grow()

    def truncate(self, stop: int) -> None:
        """The last Advance (an online one, without keep) stopped early, at ``x_stop``."""
        self.forward_steps -= self.live - stop
        self.live = stop

    def settle(self, n: int) -> None:
        """An online forward sweep has stopped at ``x_n``: the length is now known."""
        self.index, self.action = -1, None
        if self.live != n:
            raise ScheduleError(f"the forward sweep stopped at x_{self.live}, not at x_n = x_{n}")
        self.n = self.cursor = n
        self.output_done = True
        self._new_phase()

    def _store(self, a: Store) -> None:
        t = a.step
        if t != self.live:
            raise self.fail(f"the live state is x_{self.live}, not x_{t}")
        if self.cursor is not None and t >= self.cursor:
            what = "x_n is the result, not a checkpoint" if t == self.n else f"steps >= {self.cursor} are reversed"
            raise self.fail(f"x_{t} is no longer needed: {what}")
        if a.disk:
            if self._has(self.disk_keys, t):
                raise self.fail(f"x_{t} is already stored on disk")
            insort(self.disk_keys, t)
            self.disk_writes += 1
            held = len(self.disk_keys)
            if self.disk_limit is not None and held > self.disk_limit:
                raise self.fail(f"holds {held} checkpoints on disk, over the budget of {self.disk_limit}")
            self.peak_disk = max(self.peak_disk, held)
        else:
            if self._has(self.keys, t):
                raise self.fail(f"x_{t} is already stored")
            insort(self.keys, t)
            self.writes += 1
            self._grow()

    def _restore(self, a: Restore) -> None:
        t = a.step
        if self._has(self.keys, t):
            self.reads += 1
        elif self._has(self.disk_keys, t):
            self.disk_reads += 1
        else:
            raise self.fail(f"x_{t} is not stored (never stored, freed, or released by a Reverse)")
        self.live = t

    def _free(self, a: Free) -> None:
        start, stop = a.start, a.stop
        self._range(start, stop)
        if self._held_in(start, stop) != stop - start:
            raise self.fail(f"x_{self._first_missing(start, stop)} is not stored")
        keys, disk = self.keys, self.disk_keys
        i, j = bisect_left(keys, start), bisect_left(keys, stop)
        self.released = keys[i:j]
        del keys[i:j]
        i, j = bisect_left(disk, start), bisect_left(disk, stop)
        self.released_disk = disk[i:j]
        del disk[i:j]

    def _reverse(self, a: Reverse) -> None:
        start, stop = a.start, a.stop
        if self.n is None:
            raise self.fail("the length is not known yet: an online forward sweep must end before any Reverse")
        self._range(start, stop)
        if stop != self.cursor:
            if self.cursor == 0:
                raise self.fail("every step is already reversed")
            raise self.fail(
                f"steps are reversed from n-1 down to 0: the next one is step {self.cursor - 1}, "  # type: ignore[operator]
                f"so this action must stop at {self.cursor}"
            )
        top = stop - 1
        if top != self.live and not (self._has(self.keys, top) or self._has(self.disk_keys, top)):
            raise self.fail(f"x_{top} is neither live (x_{self.live} is) nor stored")
        if self._held_in(start, top) != top - start:
            raise self.fail(f"x_{self._first_missing(start, top, last=True)} is not stored")
        if self.disk_keys:  # states read from disk, not memory, are disk reads
            keys, disk = self.keys, self.disk_keys
            hi = top if top == self.live else stop  # x_top is read from the store unless it is live
            lo = start
            on_disk = set(disk[bisect_left(disk, lo) : bisect_left(disk, hi)])
            on_disk.difference_update(keys[bisect_left(keys, lo) : bisect_left(keys, hi)])
            self.disk_reads += len(on_disk)
        if stop == self.n and self.output and not self.output_done:
            self._count_steps(1)  # x_n = f(x_{n-1}), computed once
            self.output_done = True
        self.cursor = start
        # Nothing can need x_t for t >= start any more: release those checkpoints.
        keys, disk = self.keys, self.disk_keys
        i = bisect_left(keys, start)
        self.released = keys[i:]
        del keys[i:]
        i = bisect_left(disk, start)
        self.released_disk = disk[i:]
        del disk[i:]
        self._new_phase()

    def finish(self) -> None:
        self.index, self.action = -1, None
        if self.cursor != 0:
            raise ScheduleError(
                "the schedule ended before the forward sweep ended"
                if self.cursor is None
                else f"the schedule ended before reversing steps {self.cursor - 1} down to 0"
            )

    def cost(self) -> Cost:
        assert self.n is not None
        return Cost(
            n=self.n,
            forward_steps=self.forward_steps,
            peak_checkpoints=self.peak,
            writes=self.writes,
            reads=self.reads,
            peak_disk=self.peak_disk,
            disk_writes=self.disk_writes,
            disk_reads=self.disk_reads,
        )


def simulate(
    actions: Iterable[Action],
    n: int,
    *,
    checkpoints: int | None = None,
    disk_checkpoints: int | None = None,
    forward_steps: int | None = None,
) -> Cost:
    """Walk ``actions`` for ``n`` steps without running f and return their cost.

    Raises :class:`~revseq.errors.ScheduleError` at the first illegal action
    (restoring what is not stored, advancing from the wrong state, reversing
    out of order or twice, more than ``checkpoints`` held at once, more than
    ``forward_steps`` steps made, a schedule repeating itself without
    progress) or if the schedule ends before every step is reversed.
    Action fields may be numpy integers and booleans; anything else (a
    string, a float, ``keep="no"``) is refused.

    >>> simulate([Store(0), Advance(0, 2, keep=True), Reverse(0, 3)], 3)
    Cost(n=3, forward_steps=3, peak_checkpoints=2, writes=2, reads=0)
    """
    n = check_int("n", n, 1)
    if checkpoints is not None:
        checkpoints = check_int("checkpoints", checkpoints, 0)
    if disk_checkpoints is not None:
        disk_checkpoints = check_int("disk_checkpoints", disk_checkpoints, 0)
    if forward_steps is not None:
        forward_steps = check_int("forward_steps", forward_steps, 0)
    tracker = _Tracker(n, limit=checkpoints, disk_limit=disk_checkpoints, step_limit=forward_steps)
    check = tracker.check
    try:
        actions = iter(actions)
    except TypeError:
        raise ParameterError(
            f"actions must be an iterable of actions, got {actions!r} ({type(actions).__name__})"
        ) from None
    for index, action in enumerate(actions):
        check(index, action)
    tracker.finish()
    return tracker.cost()


def validate(
    actions: Iterable[Action],
    n: int,
    *,
    checkpoints: int | None = None,
    disk_checkpoints: int | None = None,
    forward_steps: int | None = None,
) -> None:
    """Raise :class:`~revseq.errors.ScheduleError` if ``actions`` is not a legal schedule for ``n`` steps."""
    simulate(actions, n, checkpoints=checkpoints, disk_checkpoints=disk_checkpoints, forward_steps=forward_steps)


def strategy_iterable(strategy: object, method: str, result: object) -> Iterator[Action]:
    """``iter(result)``, ``result`` being what ``strategy.method`` returned; a ScheduleError if not iterable."""
    try:
        return iter(result)  # type: ignore[call-overload,no-any-return]
    except TypeError:
        raise ScheduleError(
            f"{strategy!r}.{method} must return an iterable of actions (a generator, say), "
            f"got {result!r} ({type(result).__name__})"
        ) from None


def strategy_bounds(strategy: object, method: str, result: object) -> Bounds:
    """``result``, what ``strategy.method(...)`` returned, if it is a Bounds; a ScheduleError otherwise."""
    if not isinstance(result, Bounds):
        raise ScheduleError(
            f"{strategy!r}.{method} must return a revseq.Bounds (Bounds() promises nothing), "
            f"got {result!r} ({type(result).__name__})"
        )
    return result


@attrs.frozen
class Schedule:
    """The schedule of ``strategy`` for ``n`` steps: lazy, and re-iterable.

    Iterating it asks the strategy for a fresh generator each time, so
    nothing of size ``n`` is built and two walks see the same actions.
    """

    strategy: ReversalStrategy
    n: int

    def __iter__(self) -> Iterator[Action]:
        return strategy_iterable(self.strategy, f"actions({self.n})", self.strategy.actions(self.n))

    def bounds(self) -> Bounds:
        return strategy_bounds(self.strategy, f"bounds({self.n})", self.strategy.bounds(self.n))

    def cost(self) -> Cost:
        """Simulate the schedule (validating it against the strategy's own bounds)."""
        bounds = self.bounds()
        return simulate(
            self,
            self.n,
            checkpoints=bounds.checkpoints,
            disk_checkpoints=bounds.disk_checkpoints,
            forward_steps=bounds.forward_steps,
        )

    def validate(self) -> None:
        self.cost()
