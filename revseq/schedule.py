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
``Store(t, level=0)``      store a copy of the live state ``x_t`` in
                           memory (level 0), on disk (level 1, also
                           spelt ``disk=True``) or at a further level
                           (2, 3, ...: a multilevel schedule's).
``Restore(t)``             the live state becomes the stored ``x_t`` (the
                           copy at the lowest level holding it).
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
    "LevelCost",
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


class _StoreFields(NamedTuple):
    step: int
    level: int = 0


_tuple_new = tuple.__new__


class _NotBool:
    """What ``Store(t, disk=value)`` holds as its level when ``value`` is no bool: the checks refuse it, naming it."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


class Store(_StoreFields):
    """Store a copy of the live state, which must be ``x_step``, at storage level ``level``.

    Level 0 is memory (the engine's ``store``), level 1 the disk (its
    ``disk`` store, or the first of a list), levels 2, 3, ... the further
    stores of that list (slower ones, a network filesystem say).
    ``disk=True`` is the spelling of ``level=1`` (``Store(t, disk=True) ==
    Store(t, level=1)``), ``disk=False`` of ``level=0``; ``action.disk``
    says whether the state goes anywhere but memory.

    A state may be held at several levels at once; ``Restore`` then reads
    the copy at the lowest level (memory first).
    """

    __slots__ = ()

    def __new__(cls, step: int, level: int = 0, *, disk: bool | None = None) -> Store:
        if disk is not None:
            if level:
                raise ParameterError(f"give the level once, as level or as disk, got level={level!r} and disk={disk!r}")
            # Actions are checked where a schedule is run or simulated, not made: a disk flag that is no bool
            # is kept as it came, for the check to refuse (and name) there.
            level = (1 if disk else 0) if isinstance(disk, (bool, np.bool_)) else _NotBool(disk)
        elif level is True or level is False:  # Store(t, True): the old positional disk flag
            level = int(level)
        return _tuple_new(cls, (step, level))

    @property
    def disk(self) -> bool:
        """Whether the state goes to a level other than memory (``level >= 1``)."""
        return self.level != 0

    def __repr__(self) -> str:
        if isinstance(self.level, _NotBool):
            return f"Store(step={self.step!r}, disk={self.level!r})"
        if not self.level:
            return f"Store(step={self.step!r})"
        if self.level == 1:
            return f"Store(step={self.step!r}, disk=True)"
        return f"Store(step={self.step!r}, level={self.level!r})"


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


MAX_LEVEL = 15
"""The deepest storage level a ``Store`` may name: levels 0 (memory) to 15."""


class LevelCost(NamedTuple):
    """What a schedule does at one storage level: the most states held there at once, writes, reads."""

    peak: int = 0
    writes: int = 0
    reads: int = 0


def _trimmed(levels: Iterable[LevelCost]) -> tuple[LevelCost, ...]:
    """``levels`` without the unused levels at its end (so that a schedule using levels 0 and 1 has none)."""
    out = [LevelCost(*level) for level in levels]
    while out and not any(out[-1]):
        out.pop()
    return tuple(out)


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
        The same for checkpoints on disk (``Store(t, disk=True)``, level 1);
        shown only when a schedule uses the disk.
    deep_levels:
        The same for levels 2, 3, ... (``Store(t, level=k)``), one
        :class:`LevelCost` each, up to the deepest level used; empty (and
        not shown) when a schedule uses memory and disk alone.
        :meth:`level` gives any level's counts.
    """

    n: int
    forward_steps: int
    peak_checkpoints: int
    writes: int
    reads: int
    peak_disk: int = 0
    disk_writes: int = 0
    disk_reads: int = 0
    deep_levels: tuple[LevelCost, ...] = attrs.field(default=(), converter=_trimmed)

    @property
    def recompute_factor(self) -> float:
        """``forward_steps / n``: 1.0 means no recomputation."""
        return self.forward_steps / self.n

    @property
    def levels(self) -> int:
        """The number of storage levels the schedule uses: 1 (memory), 2 (and disk), or more."""
        return 2 + len(self.deep_levels) if self.deep_levels or any(getattr(self, d) for d in _DISK_FIELDS) else 1

    def level(self, k: int) -> LevelCost:
        """The counts at level ``k``: 0 memory, 1 disk, 2 and on the further levels (zeros past the deepest used).

        >>> simulate([Store(0, level=2), Advance(0, 1), Reverse(0, 2)], 2).level(2)
        LevelCost(peak=1, writes=1, reads=1)
        """
        k = check_int("k", k, 0)
        if k == 0:
            return LevelCost(self.peak_checkpoints, self.writes, self.reads)
        if k == 1:
            return LevelCost(self.peak_disk, self.disk_writes, self.disk_reads)
        return self.deep_levels[k - 2] if k - 2 < len(self.deep_levels) else LevelCost()

    def __repr__(self) -> str:
        fields = attrs.fields(Cost)
        disk = any(getattr(self, d) for d in _DISK_FIELDS) or bool(self.deep_levels)
        shown = [
            f for f in fields if (f.name not in _DISK_FIELDS or disk) and (f.name != "deep_levels" or self.deep_levels)
        ]
        return "Cost(" + ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in shown) + ")"


_DISK_FIELDS = ("peak_disk", "disk_writes", "disk_reads")


def _deep_bounds(value: Any) -> tuple[int | None, ...]:
    """``Bounds.deep_checkpoints`` checked: a sequence of ints ``>= 0`` or None, one for each level from 2."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
        raise ParameterError(
            f"deep_checkpoints must be a tuple of bounds (ints >= 0 or None) for levels 2, 3, ..., "
            f"got {value!r} ({type(value).__name__})"
        )
    if len(value) > MAX_LEVEL - 1:
        raise ParameterError(f"deep_checkpoints holds bounds for levels 2 .. {MAX_LEVEL}, got {len(value)} of them")
    return tuple(None if v is None else check_int(f"deep_checkpoints[{i}]", v, 0) for i, v in enumerate(value))


@attrs.frozen
class Bounds:
    """A strategy's promise for one ``n``: upper bounds on its cost, ``None`` where it promises nothing.

    The engine and the simulator enforce all three after every action: a
    schedule that would hold more checkpoints, or make more forward steps,
    than its strategy promised is stopped with a
    :class:`~revseq.errors.ScheduleError` before the action runs. Each bound
    is an int ``>= 0`` (numpy integers accepted) or None;
    ``deep_checkpoints`` holds one such bound for each of levels 2, 3, ...
    (``Store(t, level=k)``), and a level past its end is unbounded.
    """

    forward_steps: int | None = attrs.field(default=None, converter=as_int, validator=int_at_least(0, optional=True))
    checkpoints: int | None = attrs.field(default=None, converter=as_int, validator=int_at_least(0, optional=True))
    disk_checkpoints: int | None = attrs.field(default=None, converter=as_int, validator=int_at_least(0, optional=True))
    deep_checkpoints: tuple[int | None, ...] = attrs.field(default=(), converter=_deep_bounds)


_FLAGS = ("keep",)  # the action fields that are booleans; Store's level is a small int; the rest are step indices

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
        "deep",
        "deep_limits",
        "deep_peaks",
        "deep_reads",
        "deep_writes",
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
        deep_limits: tuple[int | None, ...] = (),
    ) -> None:
        self.n = n
        self.limit = limit
        self.disk_limit = disk_limit
        self.deep_limits = deep_limits  # bounds at levels 2, 3, ... (None or past the end: unbounded)
        # Checkpoints at levels 2, 3, ... (deep[k - 2], sorted), grown when a schedule first stores there.
        self.deep: list[list[int]] = []
        self.deep_peaks: list[int] = []
        self.deep_writes: list[int] = []
        self.deep_reads: list[int] = []
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
            if type(action[0]) is not int or type(action[1]) is not int:
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
            if name == "level" and isinstance(value, _NotBool):  # Store(t, disk=1)
                raise self.fail(f"disk must be a bool, got {value.value!r} ({type(value.value).__name__})")
            if name == "level" and isinstance(value, (bool, np.bool_)):  # Store(t, True): disk=True
                values.append(int(value))
            elif name in _FLAGS:
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
        self.phase_held = len(self.keys) + len(self.disk_keys) + sum(map(len, self.deep))

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
        """How many of x_start .. x_{stop-1} are stored, at any level."""
        keys, disk = self.keys, self.disk_keys
        in_memory = bisect_left(keys, stop) - bisect_left(keys, start)
        if not disk and not self.deep:
            return in_memory
        both = set(keys[bisect_left(keys, start) : bisect_left(keys, stop)])
        for level in (disk, *self.deep):
            both.update(level[bisect_left(level, start) : bisect_left(level, stop)])
        return len(both)

    def _stored(self, t: int) -> bool:
        """Whether x_t is stored at any level."""
        if self._has(self.keys, t) or self._has(self.disk_keys, t):
            return True
        return any(self._has(level, t) for level in self.deep)

    def _first_missing(self, start: int, stop: int, *, last: bool = False) -> int:
        steps = range(stop - 1, start - 1, -1) if last else range(start, stop)
        return next(t for t in steps if not self._stored(t))

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
        level = a.level
        if level > 1:
            self._store_deep(t, level)
        elif level:
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

    def _store_deep(self, t: int, level: int) -> None:
        """Store x_t at level 2 or deeper."""
        if level > MAX_LEVEL or level < 0:
            raise self.fail(f"level must be an int from 0 (memory) to {MAX_LEVEL}, got {level}")
        deep = self.deep
        while len(deep) < level - 1:
            deep.append([])
            self.deep_peaks.append(0)
            self.deep_writes.append(0)
            self.deep_reads.append(0)
        i = level - 2
        keys = deep[i]
        if self._has(keys, t):
            raise self.fail(f"x_{t} is already stored at level {level}")
        insort(keys, t)
        self.deep_writes[i] += 1
        held = len(keys)
        limit = self.deep_limits[i] if i < len(self.deep_limits) else None
        if limit is not None and held > limit:
            raise self.fail(f"holds {held} checkpoints at level {level}, over the budget of {limit}")
        if held > self.deep_peaks[i]:
            self.deep_peaks[i] = held

    def _deep_level(self, t: int) -> int:
        """The index in ``deep`` of the lowest level 2, 3, ... holding x_t, or -1."""
        for i, keys in enumerate(self.deep):
            if self._has(keys, t):
                return i
        return -1

    def _restore(self, a: Restore) -> None:
        t = a.step
        if self._has(self.keys, t):
            self.reads += 1
        elif self._has(self.disk_keys, t):
            self.disk_reads += 1
        else:
            i = self._deep_level(t) if self.deep else -1
            if i < 0:
                raise self.fail(f"x_{t} is not stored (never stored, freed, or released by a Reverse)")
            self.deep_reads[i] += 1
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
        for level in self.deep:
            del level[bisect_left(level, start) : bisect_left(level, stop)]

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
        if top != self.live and not self._stored(top):
            raise self.fail(f"x_{top} is neither live (x_{self.live} is) nor stored")
        if self._held_in(start, top) != top - start:
            raise self.fail(f"x_{self._first_missing(start, top, last=True)} is not stored")
        if self.disk_keys or self.deep:  # each state is read from the lowest level holding it
            keys, disk = self.keys, self.disk_keys
            hi = top if top == self.live else stop  # x_top is read from the store unless it is live
            lo = start
            seen = set(keys[bisect_left(keys, lo) : bisect_left(keys, hi)])
            on_disk = set(disk[bisect_left(disk, lo) : bisect_left(disk, hi)])
            on_disk.difference_update(seen)
            self.disk_reads += len(on_disk)
            for i, level in enumerate(self.deep):
                seen.update(on_disk)
                on_disk = set(level[bisect_left(level, lo) : bisect_left(level, hi)])
                on_disk.difference_update(seen)
                self.deep_reads[i] += len(on_disk)
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
        for level in self.deep:
            del level[bisect_left(level, start) :]
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
            deep_levels=tuple(map(LevelCost, self.deep_peaks, self.deep_writes, self.deep_reads)),
        )


def simulate(
    actions: Iterable[Action],
    n: int,
    *,
    checkpoints: int | None = None,
    disk_checkpoints: int | None = None,
    forward_steps: int | None = None,
    deep_checkpoints: tuple[int | None, ...] = (),
) -> Cost:
    """Walk ``actions`` for ``n`` steps without running f and return their cost.

    Raises :class:`~revseq.errors.ScheduleError` at the first illegal action
    (restoring what is not stored, advancing from the wrong state, reversing
    out of order or twice, more than ``checkpoints`` held at once, more than
    ``forward_steps`` steps made, a schedule repeating itself without
    progress) or if the schedule ends before every step is reversed.
    ``disk_checkpoints`` bounds the states held on disk (level 1),
    ``deep_checkpoints`` those at levels 2, 3, ... (see :class:`Bounds`).
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
    deep_limits = Bounds(deep_checkpoints=deep_checkpoints).deep_checkpoints
    tracker = _Tracker(
        n, limit=checkpoints, disk_limit=disk_checkpoints, step_limit=forward_steps, deep_limits=deep_limits
    )
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
    deep_checkpoints: tuple[int | None, ...] = (),
) -> None:
    """Raise :class:`~revseq.errors.ScheduleError` if ``actions`` is not a legal schedule for ``n`` steps."""
    simulate(
        actions,
        n,
        checkpoints=checkpoints,
        disk_checkpoints=disk_checkpoints,
        forward_steps=forward_steps,
        deep_checkpoints=deep_checkpoints,
    )


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
            deep_checkpoints=bounds.deep_checkpoints,
        )

    def validate(self) -> None:
        self.cost()
