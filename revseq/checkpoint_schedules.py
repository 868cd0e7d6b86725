"""A bridge to checkpoint_schedules, both ways.

`checkpoint_schedules <https://www.firedrakeproject.org/checkpoint_schedules/>`_
is how Firedrake, pyadjoint, tlm_adjoint and dolfinx-adjoint get their
checkpointing: a schedule is an iterator of ``Forward``, ``Reverse``,
``Copy``, ``Move``, ``EndForward`` and ``EndReverse`` actions that the
consumer's executor carries out. This module translates in both directions:

:func:`to_checkpoint_schedule`
    A revseq strategy as a ``checkpoint_schedules.CheckpointSchedule``, so
    an executor written for their schedules runs revseq's binomial, online,
    multistage (RAM and disk) or a user's own schedule unchanged.
:class:`FromCheckpointSchedule`
    One of their schedules (``Revolve``, ``MultistageCheckpointSchedule``,
    ``HRevolve``, ``DiskRevolve``, ``PeriodicDiskRevolve``,
    ``TwoLevelCheckpointSchedule``, ``MixedCheckpointSchedule``,
    ``SingleMemoryStorageSchedule``, ``SingleDiskStorageSchedule``) as a revseq
    strategy, so ``revseq.backprop``, ``cost`` and the simulator run and judge it.
    Like any user strategy, every action it yields is checked by the engine.

The two libraries count forward steps differently: before each adjoint step
their executor re-runs the step's forward with ``write_adj_deps`` (Griewank
and Walther's accounting, ``n + T``), where revseq's adjoint reads ``x_t``
and needs no re-run (``T + 1``). docs/checkpoint_schedules.md gives the
conversion both ways, with measured counts.

Needs the ``checkpoint-schedules`` extra: ``pip install 'revseq[checkpoint-schedules]'``.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from revseq._validate import check_bool, check_int
from revseq.errors import ParameterError, ScheduleError
from revseq.schedule import (
    Action,
    Advance,
    Bounds,
    Free,
    Restore,
    Reverse,
    Store,
    _Tracker,
    strategy_bounds,
    strategy_iterable,
)
from revseq.strategies import MultistageCheckpointing
from revseq.strategies.base import OnlineStrategy, ReversalStrategy

__all__ = ["FromCheckpointSchedule", "to_checkpoint_schedule"]


def _library() -> Any:
    """The checkpoint_schedules module, or an error naming the extra that installs it."""
    try:
        return importlib.import_module("checkpoint_schedules")
    except ModuleNotFoundError as error:  # only a missing checkpoint_schedules; a broken install keeps its message
        if error.name != "checkpoint_schedules":
            raise
        raise ModuleNotFoundError(
            "revseq.checkpoint_schedules needs the checkpoint_schedules package: "
            "pip install 'revseq[checkpoint-schedules]'",
            name=error.name,
        ) from None


# -- revseq -> checkpoint_schedules ----------------------------------------------------------------


def to_checkpoint_schedule(strategy: ReversalStrategy, max_n: int | None = None, *, tape_kept: bool = True) -> Any:
    """``strategy`` as a ``checkpoint_schedules.CheckpointSchedule`` for ``max_n`` steps.

    Parameters
    ----------
    strategy:
        Any revseq strategy, a user's own included (its actions are checked
        as they are translated, against its own bounds, as the engine would).
    max_n:
        The number of steps. ``None`` for a run whose length the executor
        learns as it goes (it calls ``schedule.finalize(n)`` when its forward
        stops): then ``strategy`` must be an :class:`~revseq.OnlineStrategy`,
        such as :class:`~revseq.OnlineCheckpointing`.
    tape_kept:
        Where an ``Advance(keep=True)`` is followed by the ``Reverse`` that
        uses the states it kept (StoreAll, the last segment of every
        binomial schedule), emit one ``Forward`` with ``write_adj_deps`` over
        that range into ``StorageType.WORK`` and one multi-step ``Reverse``,
        as their ``SingleMemoryStorageSchedule`` does, instead of storing the
        kept states as restart checkpoints and re-running each step before
        its adjoint. The same states are held; fewer steps are run. ``False``
        gives exactly their ``MultistageCheckpointSchedule``'s conventions
        (each ``Reverse`` over one step, right after a one-step ``Forward``
        that writes its dependencies).

    Returns
    -------
    A one-shot iterator of their actions, as all their schedules are: make a
    new one for each run. Checkpoints go to ``StorageType.RAM``, or to
    ``StorageType.DISK`` where the strategy says ``Store(t, disk=True)``;
    ``Restore`` becomes ``Copy`` to ``StorageType.WORK`` (``Move`` where the
    checkpoint is read for the last time), a freed or released checkpoint a
    ``Move`` to ``StorageType.NONE``.

    Their executor runs ``T + n`` forward steps, ``T`` being revseq's
    advances: with ``tape_kept=False``, ``strategy.cost(n).forward_steps +
    n - 1`` (``+ n`` for a schedule that computes ``x_n`` itself, as an
    online one does); ``tape_kept`` saves ``L - 1`` steps for each range of
    ``L`` steps reversed from its taped dependencies. A strategy with a byte
    budget is planned for a state size first: pass ``strategy.sized(nbytes)``.
    """
    cs = _library()
    if isinstance(strategy, type) or not isinstance(strategy, ReversalStrategy):
        what = f"the class {strategy.__name__}" if isinstance(strategy, type) else repr(strategy)
        raise ParameterError(f"strategy must be a ReversalStrategy instance, got {what} ({type(strategy).__name__})")
    if max_n is None:
        if not isinstance(strategy, OnlineStrategy):
            raise ParameterError(
                f"max_n=None (a length learnt as the run goes) needs an OnlineStrategy, such as "
                f"revseq.OnlineCheckpointing(checkpoints=...), got {strategy!r}; pass max_n for any other strategy"
            )
    else:
        max_n = check_int("max_n", max_n, 1)
    return _schedule_class(cs)(strategy, max_n, check_bool("tape_kept", tape_kept))


@functools.cache
def _schedule_class(cs: Any) -> type:
    """The CheckpointSchedule subclass, made once their module is imported (it is optional)."""

    class RevseqCheckpointSchedule(cs.CheckpointSchedule):  # type: ignore[misc]
        """A revseq strategy's schedule in checkpoint_schedules' actions (see :func:`to_checkpoint_schedule`)."""

        def __init__(self, strategy: ReversalStrategy, max_n: int | None, tape_kept: bool) -> None:
            super().__init__(max_n)
            self._strategy = strategy
            self._tape_kept = tape_kept
            self._exhausted = False
            if max_n is None:
                assert isinstance(strategy, OnlineStrategy)
                bounds = strategy_bounds(strategy, "online_bounds()", strategy.online_bounds())
            else:
                bounds = strategy_bounds(strategy, f"bounds({max_n})", strategy.bounds(max_n))
            self._bounds = bounds
            self._disk = bool(bounds.disk_checkpoints) or isinstance(strategy, MultistageCheckpointing)

        def __repr__(self) -> str:
            return f"to_checkpoint_schedule({self._strategy!r}, max_n={self._max_n!r})"

        def _iterator(self) -> Iterator[Any]:
            yield from _Translation(cs, self).run()

        @property
        def is_exhausted(self) -> bool:
            return self._exhausted

        def uses_storage_type(self, storage_type: Any) -> bool:
            if storage_type == cs.StorageType.DISK:
                return self._disk
            return storage_type in (cs.StorageType.RAM, cs.StorageType.WORK)

    return RevseqCheckpointSchedule


_END = object()


class _Translation:
    """Walks a revseq schedule, checking each action as the engine would, and yields their actions.

    Their executor has one forward state (in WORK, at step ``pos``) and
    restart checkpoints keyed by step in RAM and on disk (``held``); revseq's
    live state is ``live``. A ``Store`` waits (``pending``) for the
    ``Forward`` that leaves the stored state, since their actions store a
    state only as the forward leaves it (``write_ics``). Each reversed step
    ``t`` becomes: ``x_t`` into WORK (unless it is there; a ``Move`` when it
    is the checkpoint's last use), ``Forward(t, t + 1)`` with
    ``write_adj_deps``, ``Reverse(t + 1, t)``; see ``tape_kept`` for ranges.
    """

    def __init__(self, cs: Any, schedule: Any) -> None:
        self.cs = cs
        self.schedule = schedule
        self.strategy: ReversalStrategy = schedule._strategy
        self.held: dict[Any, set[int]] = {cs.StorageType.RAM: set(), cs.StorageType.DISK: set()}
        self.pending: list[Any] = []  # the storages the live state is still to be written to
        self.pos = 0  # their forward position: the state in WORK
        self.live = 0  # revseq's live state
        self.ended_forward = False
        self.tracker: _Tracker
        self.index = -1

    # -- walking and checking revseq's actions

    def pull(self, actions: Iterator[Any]) -> Any:
        raw = next(actions, _END)
        if raw is _END:
            return _END
        self.index += 1
        return self.tracker.check(self.index, raw)

    def run(self) -> Iterator[Any]:
        n, bounds = self.schedule._max_n, self.schedule._bounds
        if n is None:
            yield from self.online()
            return
        self.tracker = _Tracker(
            n, limit=bounds.checkpoints, disk_limit=bounds.disk_checkpoints, step_limit=bounds.forward_steps
        )
        yield from self.translate(strategy_iterable(self.strategy, f"actions({n})", self.strategy.actions(n)))
        self.tracker.finish()
        self.schedule._exhausted = True  # before EndReverse, as theirs: an executor stops at it
        yield self.cs.EndReverse()

    def online(self) -> Iterator[Any]:
        """An online strategy's forward sweep until the executor calls ``finalize(n)``, then its reversal."""
        strategy, schedule, bounds = self.strategy, self.schedule, self.schedule._bounds
        assert isinstance(strategy, OnlineStrategy)
        self.tracker = tracker = _Tracker(None, limit=bounds.checkpoints, disk_limit=bounds.disk_checkpoints)
        sweep = strategy_iterable(strategy, "forward()", strategy.forward())
        while (action := self.pull(sweep)) is not _END:
            if type(action) is not Advance:
                yield from self.other(action)
                continue
            a, b = action.start, action.stop
            yield from self.forward(a, b)  # sets schedule._n = b: finalize(m) accepts any m <= b
            self.live = b
            if schedule._max_n is not None:  # the executor's forward stopped at x_m
                m = schedule._max_n
                if not a < m <= b:
                    raise ScheduleError(f"the executor called finalize({m}) during Forward({a}, {b})")
                tracker.truncate(m)
                self.pos = self.live = m
                break
        else:
            raise ScheduleError(f"{strategy!r}.forward() ended before the executor called finalize(n)")
        n = schedule._max_n
        tracker.settle(n)
        self.ended_forward = True
        yield self.cs.EndForward()
        stored = tuple(sorted(set(tracker.keys) | set(tracker.disk_keys)))
        yield from self.translate(strategy_iterable(strategy, f"backward({n}, ...)", strategy.backward(n, stored)))
        tracker.finish()
        self.schedule._exhausted = True  # before EndReverse, as theirs: an executor stops at it
        yield self.cs.EndReverse()

    def translate(self, actions: Iterator[Any]) -> Iterator[Any]:
        following: Any = _END
        while True:
            if following is not _END:
                action, following = following, _END
            else:
                action = self.pull(actions)
            if action is _END:
                return
            if type(action) is Advance and action.keep and self.schedule._tape_kept:
                # One action ahead: states kept for the Reverse that follows are taped, not stored.
                following = self.pull(actions)
                if (
                    type(following) is Reverse
                    and following.stop == action.stop + 1
                    and following.start <= action.start + 1
                ):
                    yield from self.taped(action.start, action.stop, following.start)
                    following = _END
                    continue
            if type(action) is Advance:
                yield from self.advance(action.start, action.stop, action.keep)
            elif type(action) is Reverse:
                yield from self.reverse(action.start, action.stop)
            else:
                yield from self.other(action)

    # -- one action each

    def is_held(self, t: int) -> bool:
        return any(t in keys for keys in self.held.values())

    def where(self, t: int) -> Any:
        """A storage holding ``x_t`` (RAM first)."""
        for storage, keys in self.held.items():
            if t in keys:
                return storage
        raise ScheduleError(f"internal: x_{t} is neither in WORK nor stored")  # the tracker rules this out

    def other(self, action: Action) -> Iterator[Any]:
        cs = self.cs
        if type(action) is Store:
            if action.disk:
                self.schedule._disk = True
            self.pending.append(cs.StorageType.DISK if action.disk else cs.StorageType.RAM)
        elif type(action) is Free:
            if action.start <= self.live < action.stop:
                self.pending.clear()
                yield from self.to_work(self.live, last=True)  # revseq's live state outlives its checkpoint
            for storage, keys in self.held.items():
                for t in sorted(t for t in keys if action.start <= t < action.stop):
                    keys.discard(t)
                    yield cs.Move(t, storage, cs.StorageType.NONE)
        elif type(action) is Restore:  # lazily: the Copy (or Move) is made where the state is first used
            yield from self.flush()
            self.live = action.step

    def flush(self) -> Iterator[Any]:
        """Write a pending store of the live state now, though no Forward of revseq's leaves it.

        Their actions store a state only as a Forward leaves it, so this costs one forward step that
        their executor makes and revseq does not count. revseq's own strategies never need it; a
        user's may (``Store(t)`` then ``Restore(u)``).
        """
        if self.pending:
            yield from self.to_work(self.live)
            yield from self.forward(self.live, self.live + 1)

    def to_work(self, t: int, *, last: bool = False) -> Iterator[Any]:
        """Make ``x_t`` their forward state; a ``Move`` out of storage if this is the checkpoint's last use."""
        cs = self.cs
        if self.pos == t:
            if last:  # in WORK already: what is stored of it goes now, not when the Reverse ends
                for storage, keys in self.held.items():
                    if t in keys:
                        keys.discard(t)
                        yield cs.Move(t, storage, cs.StorageType.NONE)
            return
        storage = self.where(t)
        self.schedule._n = self.pos = t
        if not last:
            yield cs.Copy(t, storage, cs.StorageType.WORK)
            return
        self.held[storage].discard(t)
        yield cs.Move(t, storage, cs.StorageType.WORK)
        for other, keys in self.held.items():  # a copy at the other level is released too
            if t in keys:
                keys.discard(t)
                yield cs.Move(t, other, cs.StorageType.NONE)

    def forward(self, a: int, b: int, *, adj_deps: bool = False) -> Iterator[Any]:
        """``Forward(a, b)``, writing ``x_a`` where it is pending, then ``EndForward`` if it reaches ``x_n`` first."""
        cs = self.cs
        write_ics = bool(self.pending)
        storage = self.pending[0] if write_ics else cs.StorageType.WORK
        self.schedule._n = self.pos = b
        yield cs.Forward(a, b, write_ics, adj_deps, storage)
        if write_ics:
            self.held[storage].add(a)
            for other in self.pending[1:]:  # stored at both levels: the second copy is made from the first
                self.held[other].add(a)
                yield cs.Copy(a, storage, other)
        self.pending.clear()
        if b == self.schedule._max_n and not self.ended_forward:
            self.ended_forward = True
            yield cs.EndForward()

    def advance(self, a: int, b: int, keep: bool) -> Iterator[Any]:
        yield from self.to_work(a)
        self.live = b
        if not keep:
            yield from self.forward(a, b)
            return
        yield from self.forward(a, a + 1)
        for t in range(a + 1, b):  # the kept states become restart checkpoints, one Forward each
            self.pending.append(self.cs.StorageType.RAM)
            yield from self.forward(t, t + 1)

    def taped(self, a: int, b: int, s: int) -> Iterator[Any]:
        """``Advance(a, b, keep=True)``, ``Reverse(s, b + 1)`` with ``s <= a + 1``: one taped Forward, one Reverse."""
        yield from self.to_work(a, last=s <= a)
        self.live = b
        if s == a + 1:  # x_a outlives this Reverse: it stays a restart checkpoint if the strategy stores it
            yield from self.forward(a, a + 1)
            start = a + 1
        else:  # x_a is released by this Reverse: its dependencies are taped with the others'
            self.pending.clear()
            start = a
        yield from self.forward(start, b + 1, adj_deps=True)
        self.schedule._r += b + 1 - start
        yield self.cs.Reverse(b + 1, start, True)
        yield from self.reverse(s, start)

    def reverse(self, s: int, e: int) -> Iterator[Any]:
        """Steps ``e - 1`` down to ``s``, each re-run with ``write_adj_deps`` then reversed; then the release."""
        cs = self.cs
        if self.pending and s <= self.live < e - 1:  # a pending store this Reverse reads: write it now
            yield from self.flush()
        self.pending.clear()  # any other is of x_{e-1}: stored, then released unread
        if self.pos == self.live < s and not self.is_held(self.live):
            # revseq's live state outlives the Reverse, but their forward state is about to move: keep a copy
            # (a user strategy's order; revseq's own restore a checkpoint after every Reverse).
            self.pending.append(cs.StorageType.RAM)
            yield from self.flush()
        for t in range(e - 1, s - 1, -1):
            yield from self.to_work(t, last=True)
            yield from self.forward(t, t + 1, adj_deps=True)
            self.schedule._r += 1
            yield cs.Reverse(t + 1, t, True)
        for storage, keys in self.held.items():  # what the Reverse released without reading it
            for t in sorted(t for t in keys if t >= s):
                keys.discard(t)
                yield cs.Move(t, storage, cs.StorageType.NONE)


# -- checkpoint_schedules -> revseq ----------------------------------------------------------------


def _make_validator(instance: Any, attribute: Any, value: Any) -> None:
    if isinstance(value, type) or not callable(value):
        raise ParameterError(
            f"make must be a function of n returning a fresh checkpoint_schedules schedule for n steps, "
            f"such as lambda n: checkpoint_schedules.Revolve(n, 5), got {value!r} ({type(value).__name__})"
        )


@attrs.frozen
class FromCheckpointSchedule(ReversalStrategy):
    """A checkpoint_schedules schedule as a revseq strategy.

    Parameters
    ----------
    make:
        A function of ``n`` returning a new schedule for ``n`` steps (theirs
        are one-shot iterators, so one is made per walk), for example
        ``lambda n: checkpoint_schedules.Revolve(n, 5)``. A schedule built
        without ``max_n`` (``TwoLevelCheckpointSchedule``,
        ``SingleMemoryStorageSchedule``, ...) is finalized at ``n`` when its
        forward reaches ``x_n``.
    checkpoints, disk_checkpoints:
        Optional budgets the engine then enforces (checkpoints held in
        memory, and on disk), as a revseq strategy's bounds.

    Their ``Forward`` with ``write_ics`` becomes ``Store`` then ``Advance``
    (to disk for ``StorageType.DISK``); a ``Forward`` writing adjoint
    dependencies to ``StorageType.WORK`` over steps ``n0 .. n1 - 1`` keeps
    ``x_n0 .. x_{n1-1}`` for the ``Reverse`` that follows, without the last
    step (revseq's adjoint of step ``t`` needs ``x_t``, not ``x_{t+1}``);
    dependencies written to RAM or disk are stored states; ``Copy`` to WORK
    is ``Restore``, ``Move`` to WORK ``Restore`` then ``Free``, ``Move`` to
    ``StorageType.NONE`` ``Free``. The walk stops at the first ``EndReverse``
    (revseq runs one adjoint). A schedule that copies checkpoints between RAM
    and disk, or runs no adjoint (``NoneCheckpointSchedule``), is refused
    with a :class:`~revseq.ScheduleError`.

    So ``n`` steps make their ``Forward`` total less one step for each
    ``Forward`` writing dependencies to WORK, plus one for ``x_n`` when that
    last ``Forward`` is one of them: ``sum - n + 1`` for Revolve and
    ``MultistageCheckpointSchedule`` (``T + 1``, revseq's binomial count).
    """

    make: Callable[[int], Any] = attrs.field(validator=_make_validator)
    checkpoints: int | None = attrs.field(default=None, kw_only=True)
    disk_checkpoints: int | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        for name in ("checkpoints", "disk_checkpoints"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, check_int(name, value, 0))

    def bounds(self, n: int) -> Bounds:
        return Bounds(checkpoints=self.checkpoints, disk_checkpoints=self.disk_checkpoints)

    def actions(self, n: int) -> Iterator[Action]:
        cs = _library()
        schedule = self.make(n)
        if not isinstance(schedule, cs.CheckpointSchedule):
            raise ScheduleError(
                f"make({n}) must return a checkpoint_schedules.CheckpointSchedule, "
                f"got {schedule!r} ({type(schedule).__name__})"
            )
        if isinstance(schedule, cs.NoneCheckpointSchedule):
            raise ScheduleError(
                f"make({n}) returned a NoneCheckpointSchedule, which runs no adjoint: nothing to reverse"
            )
        if schedule.max_n not in (None, n):
            raise ScheduleError(f"make({n}) must return a schedule for {n} steps, got one with max_n={schedule.max_n}")
        if hasattr(schedule, "iter") or schedule.n != 0:
            raise ScheduleError(
                f"make({n}) returned a schedule already started; their schedules are one-shot iterators, "
                f"so make must build a new one on every call"
            )
        return _from_theirs(cs, schedule, n)


def _from_theirs(cs: Any, schedule: Any, n: int) -> Iterator[Action]:
    """Their actions as revseq's (see :class:`FromCheckpointSchedule`)."""
    WORK, NONE, DISK = cs.StorageType.WORK, cs.StorageType.NONE, cs.StorageType.DISK
    held: dict[bool, set[int]] = {False: set(), True: set()}  # revseq checkpoints, by disk
    kind: dict[tuple[bool, int], str] = {}  # "ics" or "deps", for each (disk, t) stored from their actions
    live = pos = 0  # revseq's live state; their forward position
    cursor = n
    offline = schedule.max_n is not None

    def fail(index: int, action: Any, why: str) -> ScheduleError:
        return ScheduleError(f"{type(schedule).__name__} cannot be translated: {why}", index=index, action=action)

    def level(index: int, action: Any, storage: Any) -> bool:
        if storage not in (cs.StorageType.RAM, DISK):
            raise fail(index, action, f"expected StorageType.RAM or StorageType.DISK, got {storage!r}")
        return bool(storage == DISK)

    def drop(disk: bool, t: int) -> Iterator[Action]:
        held[disk].discard(t)
        if t not in held[not disk]:  # revseq's Free drops both levels: when one copy is left, revseq keeps both
            yield Free(t, t + 1)

    for index, action in enumerate(schedule):
        if isinstance(action, cs.Forward):
            n0, n1 = action.n0, (action.n1 if offline else min(action.n1, n))  # online: cut at x_n
            if n0 != pos:
                raise fail(index, action, f"it starts at step {n0}, but their forward is at {pos}")
            if not n0 < n1 <= n:
                raise fail(index, action, f"it needs {n0} < {n1} <= n = {n}")
            if live != pos:  # dependencies left in WORK and not reversed: catch up with their forward
                yield Advance(live, pos)
                live = pos
            if action.write_ics:
                disk = level(index, action, action.storage)
                if n0 not in held[disk]:
                    held[disk].add(n0)
                    kind[disk, n0] = "ics"
                    yield Store(n0, disk)
            if action.write_adj_deps and action.storage == WORK:
                # Steps n0 .. n1-1 are reversed next: keep x_n0 .. x_{n1-1}, the last one live.
                if n1 - n0 > 1:
                    if n0 not in held[False]:
                        held[False].add(n0)
                        kind[False, n0] = "deps"
                        yield Store(n0)
                    yield Advance(n0, n1 - 1, keep=True)
                    held[False].update(range(n0 + 1, n1 - 1))
                live = n1 - 1
            elif action.write_adj_deps:
                disk = level(index, action, action.storage)
                for t in range(n0, n1):
                    if t not in held[disk]:
                        held[disk].add(t)
                        kind[disk, t] = "deps"
                        yield Store(t, disk)
                    yield Advance(t, t + 1)
                live = n1
            else:
                yield Advance(n0, n1)
                live = n1
            pos = n1
            if not offline and n1 == n and schedule.max_n is None:
                schedule.finalize(n)
        elif isinstance(action, cs.Reverse):
            n0, n1 = action.n0, action.n1
            yield Reverse(n0, n1)
            cursor = n0
            for disk in (False, True):
                held[disk].difference_update([t for t in held[disk] if t >= cursor])
        elif isinstance(action, (cs.Copy, cs.Move)):
            t, source, target = action.n, action.from_storage, action.to_storage
            move = isinstance(action, cs.Move)
            disk = level(index, action, source)
            if t not in held[disk]:
                if t >= cursor:  # released already by a revseq Reverse: their deletion has nothing to do
                    continue
                raise fail(index, action, f"x_{t} is not stored in {source!r}")
            if target == NONE:
                if move:
                    yield from drop(disk, t)
                continue
            if target != WORK:
                raise fail(
                    index,
                    action,
                    f"it copies x_{t} from {source!r} to {target!r}; revseq moves no checkpoint between memory "
                    f"and disk except through the live state",
                )
            yield Restore(t)
            live = t
            pos = t + 1 if kind.get((disk, t)) == "deps" else t
            if move and kind.get((disk, t)) == "ics" and t not in held[not disk]:
                held[disk].discard(t)
                yield Free(t, t + 1)
        elif isinstance(action, cs.EndReverse):
            return
        elif isinstance(action, cs.EndForward):
            continue
        else:
            raise fail(index, action, "not one of Forward, Reverse, Copy, Move, EndForward, EndReverse")
    raise ScheduleError(f"{type(schedule).__name__} ended without EndReverse")
