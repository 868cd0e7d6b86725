"""The engine: runs a schedule against a recurrence and measures what it cost.

The front of revseq: :func:`backprop` (gradients) and :func:`reverse` (the
states ``x_{n-1} .. x_0``, no derivative needed). Both run the strategy's
schedule through one interpreter, which checks each action with the same
tracker :func:`revseq.simulate` uses before executing it, counts the calls
of f it really makes, and reads the store's size after every write.
"""

from __future__ import annotations

import operator
import os
import sys
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import Any

import attrs
import numpy as np

from revseq import _checks, _limits, _tree
from revseq._validate import check_bool, check_int
from revseq.errors import ParameterError, RevseqError, ScheduleError, StepError
from revseq.recurrence import Recurrence
from revseq.schedule import (
    Action,
    Advance,
    Bounds,
    Cost,
    Free,
    LevelCost,
    Restore,
    Reverse,
    Store,
    _Tracker,
    strategy_bounds,
    strategy_iterable,
)
from revseq.store import MemoryStore, _owned, _owned_run
from revseq.store import Store as StoreProtocol
from revseq.strategies.base import OnlineStrategy, ReversalStrategy, as_strategy
from revseq.strategies.binomial import BinomialCheckpointing, revolve_tasks

__all__ = ["DEFAULT_STRATEGY", "Result", "Reversal", "Stats", "Walk", "backprop", "reverse", "walk"]

DEFAULT_STRATEGY: ReversalStrategy = BinomialCheckpointing()
"""Used when no strategy is given: binomial checkpointing with, for each n,
the fewest checkpoints (about sqrt(2 n)) that recompute no step more than
twice, so at most 2n forward steps."""


@attrs.frozen
class Stats:
    """What a run really cost, measured by the engine.

    ``forward_steps`` counts calls of f made; ``peak_checkpoints`` and
    ``peak_bytes`` are read from the memory store after every write
    (``peak_bytes`` adds the RAM buffers of a store that has them, a
    :class:`revseq.overlap.OverlappedStore`'s, read after each action), and
    ``peak_disk`` from the disk store; ``writes``/``reads`` and
    ``disk_writes``/``disk_reads`` count states stored and read back at each
    level, ``disk_bytes_written``/``disk_bytes_read`` the bytes moved to and
    from disk; ``deep_levels`` holds ``(peak, writes, reads)`` at each of
    levels 2, 3, ... of a multilevel run (``disk=[store1, store2, ...]``),
    empty otherwise. ``compression_ratio`` is the states' bytes over the bytes
    stored for them, over every state this run stored in a store that
    compresses (a :class:`~revseq.CompressedStore`, at either level), and
    None where none does. The counts equal the strategy's ``cost(n)`` (see
    :meth:`as_cost`); ``reverse`` makes one call fewer, since it never
    needs ``x_n``. For a run of unknown length, ``n`` is where it stopped.
    """

    n: int
    forward_steps: int
    peak_checkpoints: int
    writes: int
    reads: int
    peak_bytes: int
    peak_disk: int = 0
    disk_writes: int = 0
    disk_reads: int = 0
    disk_bytes_written: int = 0
    disk_bytes_read: int = 0
    compression_ratio: float | None = None
    deep_levels: tuple[LevelCost, ...] = ()

    @property
    def recompute_factor(self) -> float:
        return self.forward_steps / self.n

    def as_cost(self) -> Cost:
        """The counts comparable with :meth:`ReversalStrategy.cost`."""
        return Cost(
            n=self.n,
            forward_steps=self.forward_steps,
            peak_checkpoints=self.peak_checkpoints,
            writes=self.writes,
            reads=self.reads,
            peak_disk=self.peak_disk,
            disk_writes=self.disk_writes,
            disk_reads=self.disk_reads,
            deep_levels=self.deep_levels,
        )


@attrs.frozen
class Result:
    """What :func:`backprop` returns.

    Attributes
    ----------
    state:
        The final state ``x_n``.
    gradient:
        The gradient of the objective with respect to ``x_0``. The objective
        is ``<adjoint, x_n>`` plus the per-step losses, if any.
    params_gradient:
        Its gradient with respect to the recurrence's ``params``, summed
        over all steps (None without params).
    loss:
        The sum of the per-step losses over ``x_1 .. x_n`` (None without a loss).
    stats:
        The measured cost.
    """

    state: Any
    gradient: Any
    params_gradient: Any
    loss: Any
    stats: Stats


def _check_strategy(strategy: Any) -> ReversalStrategy:
    return as_strategy(strategy, DEFAULT_STRATEGY)


def _check_store(store: Any, name: str = "store") -> StoreProtocol:
    if store is None:
        return MemoryStore()
    if isinstance(store, type):
        raise ParameterError(
            f"{name} must be a store instance, got the class {store.__name__}; did you mean {store.__name__}()?"
        )
    if not isinstance(store, StoreProtocol):
        raise ParameterError(
            f"{name} must implement revseq.CheckpointStore (put, get, delete, clear, len, nbytes), got {store!r}"
        )
    _check_free(store, name)
    return store


# The stores runs are using now, by id(): a store belongs to one run at a time,
# from the moment the run really starts (its first action, not the call that
# made the lazy walk) until it ends, however it ends. The run holds a reference
# to each store it claims, so an id cannot be reused while it is listed.
_claimed: dict[int, str] = {}
# Re-entrant: a dropped walk's `finally` gives its stores back from the garbage
# collector, which may run inside claim() on the thread holding the lock.
_claimed_lock = threading.RLock()


def _check_free(store: StoreProtocol, name: str) -> None:
    if id(store) in _claimed:
        raise ParameterError(
            f"{name} is in use by another run that has not ended ({_claimed[id(store)]}); a store belongs to one "
            f"run at a time: give this run its own store, or finish or close() the other walk first"
        )
    if len(store):
        raise ParameterError(f"{name} must be empty when a run starts, got one holding {len(store)} states")


def _copies(store: StoreProtocol | None, name: str) -> bool:
    """Whether a store copies states in and out, so a step may work in place (None: a DiskStore made later)."""
    if store is None:
        return True
    copies = getattr(store, "copies", False)
    if not isinstance(copies, (bool, np.bool_)):
        raise ParameterError(
            f"{name}.copies must be a bool (a property or attribute saying whether the store copies states), "
            f"got {copies!r} ({type(copies).__name__})"
        )
    return bool(copies)


def _clear_all(stores: Sequence[StoreProtocol]) -> None:
    """Empty every store in ``stores``, each one even if emptying another raised (the first error is raised)."""
    error: BaseException | None = None
    for store in stores:
        try:
            store.clear()
        except BaseException as exc:  # raised below, after the others are emptied
            error = error or exc
    if error is not None:
        raise error


def _check_levels(disk: Any, store: Any) -> tuple[StoreProtocol | None, list[StoreProtocol]]:
    """``disk=`` checked: one store (level 1), or a list of stores for levels 1, 2, ...; every one distinct."""
    levels = list(disk) if isinstance(disk, (list, tuple)) else [disk]
    if not levels or len(levels) > 15:
        raise ParameterError(f"disk must be a store or a list of 1 to 15 stores (levels 1, 2, ...), got {disk!r}")
    listed = isinstance(disk, (list, tuple))
    seen = {id(store)} if store is not None else set()
    checked = []
    for k, level in enumerate(levels):
        name = f"disk[{k}]" if listed else "disk"
        if level is None:
            raise ParameterError(f"{name} must be a store, got None")
        if id(level) in seen:
            raise ParameterError(
                f"store and disk must be different stores, got the same object twice ({level!r}): "
                f"checkpoints at two levels share keys"
            )
        seen.add(id(level))
        checked.append(_check_store(level, name))
    return checked[0], checked[1:]


_WATCHED_CALLS = 4
"""How many of the first calls of f are watched for writes into states (see ``_Run._watched_call``):
enough to catch a step that cycles through up to three output buffers."""


def _lossy(store: Any) -> bool:
    """Whether ``store``, or a store it wraps (``inner``), gives back states only within a tolerance."""
    for _ in range(16):  # wrappers of wrappers, not a cycle
        if getattr(store, "lossless", True) is False:
            return True
        store = getattr(store, "inner", None)
        if store is None:
            return False
    return False


def _steps_in_place(t: int, s: int, *, argument: bool) -> StepError:
    what = (
        "f modified its argument in place"
        if argument
        else f"f wrote into x_{s}, an array it was given or returned earlier (does it reuse an output buffer?)"
    )
    return StepError(
        f"{what}: x_{s} changed during the call f(x_{t}). The default store keeps references to states, so "
        f"checkpoints and the caller's x0 would change with it and the gradient would be wrong. Return a new "
        f"array each call (np.sin(x) rather than np.sin(x, out=x)), or pass store=revseq.MemoryStore(copy=True), "
        f"which copies every checkpoint"
    )


def _stops(answer: Any, t: int) -> bool:
    """``until``'s answer as a bool; an array (``x < 0.01`` rather than ``x[0] < 0.01``) is refused."""
    if type(answer) is bool:
        return answer
    try:
        return bool(answer)
    except ValueError as exc:  # numpy: the truth value of an array is ambiguous
        raise ParameterError(
            f"until must return one bool, got {type(answer).__name__} of shape {np.shape(answer)} at t={t}; "
            f"reduce it, as in until=lambda t, x: bool((x < 0.01).all())"
        ) from exc


def _as_state(x0: Any) -> Any:
    # A Python number has no shape or dtype to check steps against.
    return np.asarray(x0) if isinstance(x0, (int, float, complex)) else x0


def _describe_leaf(desc: Any) -> str:
    return str(desc).replace("'", "")


class _Run:
    """One execution of a schedule: the live state, the stores, and the counters."""

    def __init__(
        self,
        n: int | None,
        x0: Any,
        recurrence: Recurrence,
        store: StoreProtocol,
        *,
        output: bool,
        bounds: Bounds,
        disk: StoreProtocol | None = None,
        checked: bool = True,
        deep: Sequence[StoreProtocol | None] = (),
    ) -> None:
        self.n = n
        # Where every level copies states (MemoryStore(copy=True), DiskStore), a
        # step may work in place: start from a copy, or the first step would
        # modify the caller's x0. Elsewhere the first call shows whether f does.
        self.copies = (
            _copies(store, "store")
            and _copies(disk, "disk")
            and all(_copies(level, f"disk[{k}]") for k, level in enumerate(deep, 1))
        )
        # No callable ever gets the caller's x0 (f, df, vjp, loss, a walk's consumer): the run's own copy.
        self.x = _tree.deep_copy(x0) if self.copies else _checks.private_copy(x0)
        self.params = recurrence.params  # watched with f's first calls: a step must not write into them
        self.live = 0
        self.plain = recurrence.plain_step
        self.step = recurrence.step_at()
        # A store may settle lazy states (revseq.dask.ClusterStore: a dask array is a graph of work not yet
        # done): each state f returns is then settled at once, so that no graph grows over the run and the
        # checkpoints are what the cluster holds; backprop settles its sums too. x0 is settled when the run starts.
        settle = getattr(store, "settle", None)
        self.settle: Callable[[Any], Any] | None = settle if callable(settle) else None
        if self.settle is not None:
            self.plain, self.step = None, _settled(self.step, self.settle)
        self.store = store
        # The default store, exactly (a subclass may override put): its dict is read, and runs of states
        # written and deleted, in bulk, with the same accounting as put and delete.
        self.bulk = type(store) is MemoryStore and not store.copies
        self.disk = disk  # checkpoints stored with Store(t, disk=True); a DiskStore is made if needed
        # A disk store's byte counters are cumulative over its life: count this run's from here.
        self.disk_bytes_before = (int(getattr(disk, "bytes_written", 0)), int(getattr(disk, "bytes_read", 0)))
        self.compressed_before = _compressed_bytes(store, disk, *deep)
        # Levels 2, 3, ... (Store(t, level=k)): the stores after the first of disk=[...], a DiskStore made for a
        # level a schedule uses that was given none; what each holds, and its counts.
        self.deep = list(deep)
        self.deep_keys: list[_Held] = []
        self.deep_counts: list[list[int]] = []  # [peak, writes, reads] at each of levels 2, 3, ...
        self.output = output
        # The strategy's promise, enforced: the run stops before an action that would break it. A built-in
        # strategy's schedules are proven legal by the tests, and run unchecked unless asked (check_schedule=True).
        self.tracker = (
            _Tracker(
                n,
                output=output,
                limit=bounds.checkpoints,
                disk_limit=bounds.disk_checkpoints,
                step_limit=bounds.forward_steps,
                deep_limits=bounds.deep_checkpoints,
            )
            if checked
            else None
        )
        self.claims: list[StoreProtocol] = []  # the stores this run has claimed, released when it ends
        # How many calls of f are still watched (see _watched_call); then f runs unwatched in tight loops.
        self.probes = _WATCHED_CALLS
        # Sampled states, fingerprinted when first made and checked when made again (a step that is not
        # deterministic is refused): every `every`-th state, which the loops below stop at.
        lossy = any(_lossy(level) for level in (store, disk, *deep) if level is not None)
        self.recomputed = _checks.Recomputations(n, enabled=not lossy)
        self.watched: list[tuple[list[Any], int]] = []  # (fingerprint, t) of each state seen so far, held weakly
        # What the run measures itself, whether or not a tracker checks the actions: the calls of f, the
        # checkpoints it holds at each level (sorted: a Reverse releases every one at or after its start),
        # the states written and read back at each level, and the peaks read from the stores.
        self.calls = 0
        # The default store keeps its own record (see MemoryStore); any other store gets one kept here.
        self.keys = None if self.bulk else _Held()
        self.disk_keys = _Held()
        self.writes = self.reads = self.disk_writes = self.disk_reads = 0
        self.peak = self.peak_bytes = self.peak_disk = 0
        self.produced = False  # whether x_n has been computed
        # Whether every state f returned in its watched calls owned its bytes (an array that is no view, or
        # a numpy scalar): then a sweep's states are collected and stored together; otherwise each is
        # stored (and a view copied) as it comes, so that no view keeps a larger buffer alive meanwhile.
        self.owning = True
        # Stores with RAM buffers of their own (revseq.overlap.OverlappedStore: states staged for writing or
        # read ahead) add them to peak_bytes, read after each action; stores with an `expect` method are told
        # which checkpoints the coming actions read (see _ahead).
        self.buffered = [s for s in (store, disk, *deep) if s is not None and hasattr(s, "buffer_nbytes")]

    def stats(self) -> Stats:
        disk = self.disk
        return Stats(
            n=self.n if self.n is not None else self.live,
            forward_steps=self.calls,
            peak_checkpoints=self.peak,
            writes=self.writes,
            reads=self.reads,
            peak_bytes=self.peak_bytes,
            peak_disk=self.peak_disk,
            disk_writes=self.disk_writes,
            disk_reads=self.disk_reads,
            disk_bytes_written=int(getattr(disk, "bytes_written", 0)) - self.disk_bytes_before[0],
            disk_bytes_read=int(getattr(disk, "bytes_read", 0)) - self.disk_bytes_before[1],
            compression_ratio=self._compression_ratio(),
            deep_levels=tuple(LevelCost(*counts) for counts in self.deep_counts),
        )

    def _compression_ratio(self) -> float | None:
        before, now = self.compressed_before, _compressed_bytes(self.store, self.disk, *self.deep)
        if now is None or before is None:
            return None
        raw, stored = now[0] - before[0], now[1] - before[1]
        return raw / stored if stored else None

    def claim(self) -> None:
        """Make the stores this run's, now that it really starts; refuse stores another run holds."""
        with _claimed_lock:
            stores = [("store", self.store)] + ([("disk", self.disk)] if self.disk is not None else [])
            stores += [(f"disk[{k}]", level) for k, level in enumerate(self.deep, 1) if level is not None]
            for name, store in stores:
                _check_free(store, name)
            for _, store in stores:
                _claimed[id(store)] = f"a run of {self.n if self.n is not None else 'unknown'} steps"
                self.claims.append(store)

    def end(self) -> None:
        """Empty every store and give it back (a run has ended, however it ended)."""
        try:
            self.store.clear()
        finally:
            try:
                try:
                    if self.disk is not None:
                        self.disk.clear()
                finally:
                    _clear_all([level for level in self.deep if level is not None])
            finally:
                with _claimed_lock:
                    for store in self.claims:
                        _claimed.pop(id(store), None)
                self.claims.clear()

    def _measure(self) -> None:
        store = self.store
        held = len(store)
        if held > self.peak:
            self.peak = held
        size = store.nbytes
        if self.buffered:
            size += sum(s.buffer_nbytes for s in self.buffered)
        if size > self.peak_bytes:
            self.peak_bytes = size

    def _disk(self) -> StoreProtocol:
        if self.disk is None:
            from revseq.disk import DiskStore  # only runs that store on disk need it

            self.disk = DiskStore()  # made by this run: no other run can hold it
            self.claims.append(self.disk)
        return self.disk

    def _level(self, k: int) -> StoreProtocol:
        """The store of level ``k >= 2``, a DiskStore made for it if none was given."""
        deep = self.deep
        while len(deep) < k - 1:
            deep.append(None)
        while len(self.deep_keys) < k - 1:
            self.deep_keys.append(_Held())
            self.deep_counts.append([0, 0, 0])
        level = deep[k - 2]
        if level is None:
            from revseq.disk import DiskStore  # only runs that store there need it

            level = deep[k - 2] = DiskStore()  # made by this run: no other run can hold it
            self.claims.append(level)
        return level

    def _fetch(self, t: int, *, count: bool = True) -> Any:
        """x_t from memory if it is there, else from disk, else from a deeper level (a read there, counted
        unless ``count`` is false)."""
        if (self.disk_keys or self.deep_keys) and not self._in_memory(t):
            if self.deep_keys and t not in self.disk_keys:
                for k, held in enumerate(self.deep_keys):
                    if t in held:
                        self.deep_counts[k][2] += count
                        return self.deep[k].get(t)  # type: ignore[union-attr]
            assert self.disk is not None
            self.disk_reads += count
            return self.disk.get(t)
        return self.store.get(t)

    def _in_memory(self, t: int) -> bool:
        return self.store._holds(t) if self.keys is None else t in self.keys  # type: ignore[attr-defined]

    def _restore(self, t: int) -> Any:
        """x_t read back for a Restore, counted at the level it comes from."""
        if (self.disk_keys or self.deep_keys) and not self._in_memory(t):
            return self._fetch(t)
        self.reads += 1
        return self.store.get(t)

    @property
    def every(self) -> int:
        """The stride of the sampled states (see ``recomputed``); it grows during an online run's forward sweep."""
        return self.recomputed.every

    def _watched_call(self, x: Any, t: int) -> Any:
        """One of the first calls of f, checked: f must return a state like its input, and write into no state.

        ``params`` must stay as they are, whatever the store: recomputed steps
        would see other parameters than the first sweep. Unless every store
        copies, f also gets a private copy of ``x`` (it is the caller's x0 or
        a checkpoint's referent), and each state seen so far (inputs and
        outputs of these calls) is compared with its fingerprint after the
        call: a step that writes into its argument is caught on the first
        call, one that writes into the array it returned last time (one
        output buffer reused) on the second, one cycling through k <= 3
        buffers on call k + 1, before anything it wrote is used.
        """
        self.probes -= 1
        first = not self.calls
        params_prints = _checks.fingerprint(self.params)
        if self.copies:
            y = self.step(x, t)
        else:
            watched = self.watched
            if watched and watched[-1][1] == t and _checks.refers_to(watched[-1][0], x):
                prints = watched[-1][0]  # x is the last call's output, fingerprinted then
            else:  # x_0, or a state restored since
                prints = _checks.fingerprint(x)
                watched.append((prints, t))
            probe = _checks.private_copy(x)
            y = self.step(probe, t)
        self.calls += 1
        if self.owning and not ((type(y) is np.ndarray and y.base is None) or isinstance(y, np.generic)):
            self.owning = False
        if first:
            before, after = _tree.describe(x), _tree.describe(y)
            if before != after:
                raise StepError(
                    f"f must return a state of the same structure, shape and dtype as its input: "
                    f"x_{t} is {_describe_leaf(before)} (shape, dtype), f(x_{t}) returned {_describe_leaf(after)}"
                    + ("; if x_0 holds integers, pass x0.astype(float)" if "int" in str(before) else "")
                    + (
                        "; a Python number x0 becomes a 0-d numpy array, so use numpy functions in f "
                        "(np.sin rather than math.sin) or return np.float64(...)"
                        if _tree.is_leaf(y) and isinstance(y, (int, float, complex))
                        else ""
                    )
                )
        if not _checks.matches(params_prints):
            raise StepError(
                f"f modified params in place during the call f(x_{t}): recomputed steps would see other "
                f"parameters than the first sweep did, and the gradient would be wrong; params must stay "
                f"constant for the whole run"
            )
        if not self.copies:
            if not _checks.holds(probe, prints):
                raise _steps_in_place(t, t, argument=True)
            for state_prints, s in watched:
                if not _checks.matches(state_prints):
                    raise _steps_in_place(t, s, argument=False)
            # The copy f was given is watched too: a step writing into the array it was handed last time
            # (swapping two buffers) would write into real states once the watch is over.
            watched.append((_checks.same_prints(probe, prints), t))
            watched.append((_checks.fingerprint(y), t + 1))
            if not self.probes:
                watched.clear()  # the watch is over: hold no state for it
        if not (t + 1) % self.every:
            self.recomputed.seen(t + 1, y)
        return y

    def _ask(self, until: Callable[[int, Any], Any], t: int, x: Any) -> Any:
        """``until(t, x)``; while f is watched, until is too: it must not write into the state it is shown.

        Whatever the store: a state changed by until would differ from the same state recomputed later.
        """
        if not self.probes:
            return until(t, x)
        prints = _checks.fingerprint(x)
        answer = until(t, x)
        if not _checks.matches(prints):
            raise ParameterError(
                f"until modified x_{t} in place during the call until({t}, x_{t}): the state is the run's, "
                f"and changing it would change every later state and the gradient; compute from it, do not write"
            )
        return answer

    def _kept(self, x: Any) -> Any:
        """``x`` to hold across later calls of f: a copy where steps may write in place (every store copies).

        A step working in place, or writing into output buffers of its own,
        would otherwise change ``x_n`` after it is delivered, or the live
        ``x_{n-1}`` before its reversal; elsewhere such steps are refused.
        """
        return _tree.deep_copy(x) if self.copies else x

    def _advance(self, x: Any, start: int, stop: int, keep: bool) -> Any:
        """``x_stop`` from ``x = x_start``; with ``keep``, ``x_{start+1} .. x_{stop-1}`` are stored on the way."""
        put = self.store.put
        t = start
        while self.probes and t < stop:
            x = self._watched_call(x, t)
            t += 1
            if keep and t < stop:
                put(t, x)
        if t < stop:
            plain, step = self.plain, self.step
            if keep and self.bulk and self.owning:  # the run of states is collected, then stored in one call
                states: list[Any] = []
                x = self._collect(x, t, stop, states.append)
                self.store._put_run(t + 1, states)  # type: ignore[attr-defined]
            elif keep:
                every, seen = self.every, self.recomputed.seen
                if plain is not None:
                    for s in range(t + 1, stop):
                        x = plain(x)
                        if not s % every:
                            seen(s, x)
                        put(s, x)
                    x = plain(x)
                else:
                    for s in range(t, stop - 1):
                        x = step(x, s)
                        if not (s + 1) % every:
                            seen(s + 1, x)
                        put(s + 1, x)
                    x = step(x, stop - 1)
                if not stop % every:
                    seen(stop, x)
            else:
                x = self._steps(x, t, stop)
            self.calls += stop - t
        if keep and stop - start > 1:
            if self.keys is not None:
                self.keys.add(start + 1, stop)
            self.writes += stop - start - 1
            self._measure()
        return x

    def _steps(self, x: Any, t: int, stop: int) -> Any:
        """``x_stop`` from ``x = x_t``, unwatched and uncounted (the sampled states on the way checked)."""
        plain, step, every = self.plain, self.step, self.every
        if (t // every + 1) * every > stop:  # no sampled state on the way: the common case, one loop
            if plain is not None:
                for _ in range(stop - t):
                    x = plain(x)
                return x
            for s in range(t, stop):
                x = step(x, s)
            return x
        seen = self.recomputed.seen
        while t < stop:
            edge = min(stop, (t // every + 1) * every)  # the next sampled state, or x_stop
            if plain is not None:
                for _ in range(edge - t):
                    x = plain(x)
            else:
                for s in range(t, edge):
                    x = step(x, s)
            t = edge
            if not t % every:
                seen(t, x)
        return x

    def _collect(self, x: Any, t: int, stop: int, keep: Callable[[Any], object]) -> Any:
        """``x_stop`` from ``x = x_t``, unwatched and uncounted; ``keep(x_s)`` for ``s = t+1 .. stop-1``."""
        plain, step, every = self.plain, self.step, self.every
        if (t // every + 1) * every > stop:  # no sampled state on the way: the common case, one loop
            if plain is not None:
                for _ in range(t + 1, stop):
                    x = plain(x)
                    keep(x)
                return plain(x)
            for s in range(t, stop - 1):
                x = step(x, s)
                keep(x)
            return step(x, stop - 1)
        seen = self.recomputed.seen
        while t < stop:
            edge = min(stop, (t // every + 1) * every)
            if plain is not None:
                for _ in range(edge - t - 1):
                    x = plain(x)
                    keep(x)
                x = plain(x)
            else:
                for s in range(t, edge - 1):
                    x = step(x, s)
                    keep(x)
                x = step(x, edge - 1)
            t = edge
            if not t % every:
                seen(t, x)
            if t < stop:
                keep(x)
        return x

    def _watch(self, x: Any, t: int, stop: int, keep: Callable[[Any], object] | None) -> tuple[Any, int]:
        """Advance from ``x = x_t`` towards ``x_stop`` while f's calls are watched: ``(x_s, s)`` where the watch
        ended (or ``stop``); with ``keep``, ``keep(x_s)`` for each state reached before ``x_stop``."""
        while self.probes and t < stop:
            x = self._watched_call(x, t)
            t += 1
            if keep is not None and t < stop:
                keep(x)
        return x, t

    def _keeper(self, states: list[Any]) -> Callable[[Any], object]:
        """What appends a state kept on the way to ``states``: as it is where f's states own their bytes (see
        ``owning``), else owned at once, so that no view keeps a larger buffer alive while the sweep goes on."""
        if self.owning:
            return states.append
        return lambda state: states.append(_owned(state)[0])

    def _put(self, t: int, x: Any, level: int) -> None:
        if level > 1:  # Store(t, level=k): levels 2, 3, ...
            store = self._level(level)
            store.put(t, x)
            self.deep_keys[level - 2].add(t, t + 1)
            counts = self.deep_counts[level - 2]
            counts[1] += 1
            counts[0] = max(counts[0], len(store))
        elif level:
            store = self._disk()
            store.put(t, x)
            self.disk_keys.add(t, t + 1)
            self.disk_writes += 1
            self.peak_disk = max(self.peak_disk, len(store))
            if self.buffered:  # the state staged for writing is RAM (revseq.overlap)
                self._measure()
        else:
            self.store.put(t, x)
            if self.keys is not None:
                self.keys.add(t, t + 1)
            self.writes += 1
            self._measure()

    def _release(self, start: int, stop: int | None = None) -> None:
        """Delete every checkpoint in ``x_start .. x_{stop-1}`` at each level (to the end with no ``stop``)."""
        if self.keys is None:
            self.store._delete_range(start, self.n if stop is None else stop)  # type: ignore[attr-defined]
        else:
            for first, end in self.keys.cut(start, stop):
                for t in range(first, end):
                    self.store.delete(t)
        if self.disk_keys:
            assert self.disk is not None
            for first, end in self.disk_keys.cut(start, stop):
                for t in range(first, end):
                    self.disk.delete(t)
        for k, held in enumerate(self.deep_keys):
            for first, end in held.cut(start, stop):
                for t in range(first, end):
                    self.deep[k].delete(t)  # type: ignore[union-attr]

    def _ahead(self, actions: Iterable[Action]) -> Iterable[Action]:
        """``actions``, looked ahead into for the stores that read ahead (an ``expect`` method: revseq.overlap)."""
        stores = [s for s in (self.store, self.disk, *self.deep) if callable(getattr(s, "expect", None))]
        if not stores:
            return actions
        from revseq.overlap import prefetching  # here: only runs with such a store need it

        return prefetching(actions, stores, measure=self._measure if self.buffered else None)

    def execute(self, actions: Iterable[Action]) -> Generator[tuple[int, Sequence[Any]], None, None]:
        """Execute ``actions``, yielding the states of each reversed step in blocks; first ``(n, [x_n])`` if output.

        A block ``(top, states)`` holds ``x_top, x_{top-1}, ...``: a Reverse's
        states in one list where the default store holds them (no call per
        state), one at a time elsewhere (a store that copies or reads from
        disk makes each state when it is needed). With a tracker, each action
        is checked before anything runs; the run does its own bookkeeping
        (calls, checkpoints held, writes and reads) either way.
        """
        tracker = self.tracker
        check = tracker.check if tracker is not None else None
        n = self.n
        assert n is not None  # an online run executes actions only once its length is known
        x, live = self.x, self.live
        output, bulk = self.output, self.bulk
        plain, step = self.plain, self.step
        store, on_disk = self.store, self.disk_keys
        watching = self.probes > 0  # whether f's first calls are still watched (see _watched_call)
        every = self.every
        action: Any
        for index, proposed in enumerate(self._ahead(actions)):
            action = proposed if check is None else check(index, proposed)  # numpy ints made ints
            kind = type(action)
            if kind is Advance:
                start, stop, keep = action
                if keep or watching:
                    x = self._advance(x, start, stop, keep)
                    watching = self.probes > 0
                elif stop - start == 1 and stop % every:  # the commonest advance of a binomial schedule
                    x = plain(x) if plain is not None else step(x, start)
                    self.calls += 1
                else:
                    x = self._steps(x, start, stop)
                    self.calls += stop - start
                live = stop
                if live == n and output:
                    self.produced = True
                    yield n, (self._kept(x),)  # this schedule computes x_n itself, before reversing
            elif kind is Reverse:
                start, stop = action
                if stop == n and output and not self.produced:
                    self.produced = True
                    if live == n - 1:
                        # f may write into its argument, or into a buffer it returned before (x itself):
                        # where that is allowed, x_{n-1} is kept apart for its own reversal.
                        last, x = x, self._kept(x)
                    else:  # read again below, for its own reversal: one read, as the simulator counts
                        last = self._fetch(n - 1, count=False)  # a store that copies hands out a fresh copy
                    if watching:
                        final = self._watched_call(last, n - 1)
                        watching = self.probes > 0
                    else:
                        final = step(last, n - 1)
                        self.calls += 1
                    yield n, (self._kept(final),)
                top = stop - 1
                if bulk and on_disk.last() < start and not self.deep_keys:  # nothing to read from disk: in pieces
                    pieces = store._pop_block(start, stop)  # type: ignore[attr-defined]
                    if top == live and not pieces:
                        pieces = [(top, [x])]
                    elif top == live:  # the live state is x_top: it goes first (if it is also stored, in its place)
                        first, states = pieces[0]
                        pieces[0] = (top, [x, *states[1:]] if first == top else [x, *states])
                        del states
                    yield from pieces
                    del pieces  # the reversed states must not outlive their reversal
                else:
                    yield top, (x if top == live else self._fetch(top),)
                    for t in range(top - 1, start - 1, -1):
                        yield t, (self._fetch(t),)
                    self._release(start)
            elif kind is Store:
                self._put(action[0], x, action[1])
            elif kind is Restore:
                live = action[0]
                x = self._restore(live)
            elif kind is Free:
                self._release(action[0], action[1])
            else:  # only an unchecked schedule gets here: a built-in strategy's, which yields actions only
                raise ScheduleError(f"not an action: {action!r}", index=index, action=action)
        self.x, self.live = x, live

    def revolve(self, slots: int) -> Generator[tuple[int, Sequence[Any]], None, None]:
        """Run ``BinomialCheckpointing(slots)``'s schedule for ``n`` steps from revolve's tasks, making no actions.

        What :meth:`execute` does with ``from_x0(n, revolve(0, n, slots))``,
        call for call and count for count, for a trusted built-in with the
        default store exactly (``bulk``): each task of
        :func:`~revseq.strategies.binomial.revolve_tasks` runs as a tight loop
        of f, and the checkpoints are a stack of the run's own rather than
        the store's (revolve stores above everything it holds, reads back the
        top, and releases from the top down), so the store stays empty. The
        states are owned and their bytes counted as :class:`MemoryStore` does
        (``_owned``); the tests compare every count with the checked run's.
        """
        n = self.n
        assert n is not None
        x, output, plain, step = self.x, self.output, self.plain, self.step
        watching = self.probes > 0  # whether f's first calls are still watched (see _watched_call)
        # The checkpoints, increasing: a task's x_base is the top one whenever it is held, which it is if the
        # task is more than one step long or reads it back (a right part of one step is not stored, nor is x_0
        # for n = 1). Beside them, the bytes held up to and including each.
        held: list[Any] = []
        marks: list[int] = []
        calls, writes, reads, peak, peak_bytes = 0, self.writes, self.reads, self.peak, self.peak_bytes
        try:
            if n > 1:  # x_0 is stored first (_patterns.from_x0)
                state, size = _owned(x)
                held.append(state)
                marks.append(size)
                writes += 1
                peak, peak_bytes = max(peak, 1), max(peak_bytes, size)
                del state
            for base, stop, restore, store in revolve_tasks(0, n, slots):
                if restore:
                    x = held[-1]
                    reads += 1
                t = base
                if store is not None:  # a split: advance to x_stop, the split point, and store it
                    if watching:
                        x, t = self._watch(x, t, stop, None)
                        watching = self.probes > 0
                    x = self._steps(x, t, stop)
                    calls += stop - t
                    if store:
                        state, size = _owned(x)
                        held.append(state)
                        marks.append(marks[-1] + size)
                        writes += 1
                        if len(held) > peak:
                            peak = len(held)
                        if marks[-1] > peak_bytes:
                            peak_bytes = marks[-1]
                        del state
                    continue
                # A leaf: advance to x_top keeping the states on the way, then reverse top .. base.
                top = stop - 1
                kept: list[Any] = []
                if watching:
                    x, t = self._watch(x, t, top, self._keeper(kept))
                    watching = self.probes > 0
                if top - t > 1:
                    x = self._collect(x, t, top, self._keeper(kept))
                elif top > t:
                    x = plain(x) if plain is not None else step(x, t)
                    if not top % self.every:
                        self.recomputed.seen(top, x)
                calls += top - t
                if kept:
                    writes += len(kept)
                    total = (marks[-1] if marks else 0) + _owned_run(kept)
                    peak, peak_bytes = max(peak, len(held) + len(kept)), max(peak_bytes, total)
                if stop == n and output:  # x_n, from the live x_{n-1}, before its reversal
                    if watching:
                        final = self._watched_call(x, top)
                        watching = self.probes > 0
                    else:
                        final = step(x, top)
                        calls += 1
                    self.produced = True
                    self.calls, self.writes, self.reads = self.calls + calls, writes, reads
                    calls, self.peak, self.peak_bytes = 0, peak, peak_bytes
                    yield n, (final,)
                    del final
                # Released: x_base, if held, and the kept states above it.
                if top > base:  # x_base, held, is reversed last
                    marks.pop()
                    states = [x, *reversed(kept), held.pop()] if kept else [x, held.pop()]
                else:  # x_base is live: reversed as it is, and released if it was read back
                    states = [x]
                    if restore:
                        marks.pop()
                        held.pop()
                del kept
                self.calls, self.writes, self.reads = self.calls + calls, writes, reads
                calls, self.peak, self.peak_bytes = 0, peak, peak_bytes
                yield top, states
                del states  # the reversed states must not outlive their reversal
        finally:
            self.calls, self.writes, self.reads = self.calls + calls, writes, reads
            self.peak, self.peak_bytes = peak, peak_bytes
            self.x, self.live = x, 0
            held.clear()

    def walk(
        self, actions: Iterable[Action], slots: int | None = None
    ) -> Generator[tuple[int, Sequence[Any]], None, None]:
        """Run a whole schedule for a known ``n``, in blocks (see :meth:`execute`); with ``slots``, binomial's
        schedule of ``n`` steps from revolve's tasks (see :meth:`revolve`), ``actions`` unused.

        The stores are claimed at the first action and emptied and given
        back however the walk ends: finished, failed, closed, or dropped
        (a generator's ``finally`` runs when it is closed or collected).
        """
        self.claim()
        try:
            if self.settle is not None:
                self.x = self.settle(self.x)
            yield from self.execute(actions) if slots is None else self.revolve(slots)
            if self.tracker is not None:
                self.tracker.finish()
        finally:
            self.end()

    def walk_online(
        self, strategy: OnlineStrategy, until: Callable[[int, Any], Any] | None, max_steps: int
    ) -> Generator[tuple[int, Sequence[Any]], None, None]:
        """Run an online strategy's forward sweep until ``until`` says stop, then its reversal."""
        self.claim()
        try:
            if self.settle is not None:
                self.x = self.settle(self.x)
            self._forward_until(strategy, until, max_steps)
            n = self.live
            if self.tracker is not None:
                self.tracker.settle(n)
            self.n = n
            self.produced = True  # the sweep has computed x_n
            if self.output:
                yield n, (self._kept(self.x),)
            memory = self.store._held() if self.keys is None else self.keys.keys()  # type: ignore[attr-defined]
            deeper = [held.keys() for held in self.deep_keys]
            held = tuple(sorted({*memory, *self.disk_keys.keys()}.union(*deeper)))  # every level, as _cut_forward
            yield from self.execute(strategy_iterable(strategy, "backward(...)", strategy.backward(n, held)))
            if self.tracker is not None:
                self.tracker.finish()
        finally:
            self.end()

    def _forward_until(self, strategy: OnlineStrategy, until: Callable[[int, Any], Any] | None, max_steps: int) -> None:
        tracker = self.tracker
        x = self.x
        step = self.step
        index = -1
        for proposed in strategy_iterable(strategy, "forward()", strategy.forward()):
            index += 1
            action = proposed if tracker is None else tracker.check(index, proposed)
            kind = type(action)
            if kind is Advance:
                for s in range(action.start, action.stop):  # type: ignore[union-attr]
                    if self.probes:
                        x = self._watched_call(x, s)
                    else:
                        x = step(x, s)
                        self.calls += 1
                        if not (s + 1) % self.every:
                            self.recomputed.seen(s + 1, x)
                    t = s + 1
                    if t >= max_steps or (until is not None and _stops(self._ask(until, t, x), t)):
                        if tracker is not None:
                            tracker.truncate(t)
                        self.x, self.live = x, t
                        return
                self.live = action.stop  # type: ignore[union-attr]
            elif kind is Store:
                self._put(action.step, x, action.level)  # type: ignore[union-attr]
            elif kind is Restore:
                x = self._restore(action.step)  # type: ignore[union-attr]
                self.live = action.step  # type: ignore[union-attr]
            elif kind is Free:  # at whichever level holds each state, as in execute()
                self._release(action.start, action.stop)  # type: ignore[union-attr]
            else:
                raise ScheduleError(f"not an action: {action!r}", index=index, action=action)
        raise ScheduleError(f"{strategy!r}: the forward sweep ended at x_{self.live} before the run stopped")


def _settled(step: Callable[[Any, int], Any], settle: Callable[[Any], Any]) -> Callable[[Any, int], Any]:
    """``step`` with each state it returns settled (see ``_Run.settle``)."""
    return lambda x, t: settle(step(x, t))


class _Held:
    """The checkpoints a run holds at one level: sorted, disjoint runs ``[start, stop)`` of step indices.

    A sweep that keeps its states adds one run for all of them, so the
    bookkeeping costs nothing per step.
    """

    __slots__ = ("count", "starts", "stops")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.stops: list[int] = []
        self.count = 0

    def add(self, start: int, stop: int) -> None:
        """Hold ``start .. stop-1``, none of them held yet."""
        starts, stops = self.starts, self.stops
        i = bisect_left(starts, start)
        left = i > 0 and stops[i - 1] == start
        right = i < len(starts) and starts[i] == stop
        if left and right:
            stops[i - 1] = stops[i]
            del starts[i], stops[i]
        elif left:
            stops[i - 1] = stop
        elif right:
            starts[i] = start
        else:
            starts.insert(i, start)
            stops.insert(i, stop)
        self.count += stop - start

    def cut(self, start: int, stop: int | None = None) -> list[tuple[int, int]]:
        """Stop holding ``start .. stop-1`` (to the end with no ``stop``); return the runs that were held."""
        starts, stops = self.starts, self.stops
        i = bisect_right(stops, start)  # the first run ending after start
        j = len(starts) if stop is None else bisect_left(starts, stop)  # one past the last run starting before stop
        if i >= j:
            return []
        end = stops[j - 1] if stop is None else stop
        cut = [(max(starts[k], start), min(stops[k], end)) for k in range(i, j)]
        kept_starts, kept_stops = [], []
        if starts[i] < start:
            kept_starts.append(starts[i])
            kept_stops.append(start)
        if stops[j - 1] > end:
            kept_starts.append(end)
            kept_stops.append(stops[j - 1])
        starts[i:j], stops[i:j] = kept_starts, kept_stops
        self.count -= sum(b - a for a, b in cut)
        return cut

    def __contains__(self, t: int) -> bool:
        i = bisect_right(self.starts, t) - 1
        return i >= 0 and t < self.stops[i]

    def __len__(self) -> int:
        return self.count

    def last(self) -> int:
        """The highest index held (-1 if none)."""
        return self.stops[-1] - 1 if self.stops else -1

    def keys(self) -> list[int]:
        return [t for start, stop in zip(self.starts, self.stops, strict=True) for t in range(start, stop)]


_RUN_CODE = frozenset(method.__code__ for method in (_Run.walk, _Run.walk_online, _Run.execute, _Run.revolve))


def _seed(adjoint: Any, x0: Any, has_loss: bool) -> Callable[[Any], Any]:
    """Check ``adjoint`` against x0 now (before anything runs); return the seed as a function of x_n."""
    if adjoint is None:
        fill = np.zeros_like if has_loss else np.ones_like
        return lambda xn: _tree.tree_map(fill, xn)
    problem = _checks.mismatch(adjoint, x0)
    if problem is not None:
        raise ParameterError(
            f"adjoint must have the state's shape {_describe_leaf(_tree.shapes(x0))} and a numeric dtype, got {problem}"
        )
    seed = _checks.private_copy(adjoint)  # a vjp working in place must not reach the caller's array
    return lambda xn: seed


_RUN_DOC = """
    n:
        Number of steps, ``n >= 1``; or ``None`` for a run of unknown length,
        which needs an online strategy and ``until`` and/or ``max_steps``.
    strategy:
        How to trade memory for recomputation; default :data:`DEFAULT_STRATEGY`,
        or with ``n=None`` and ``max_steps``, ``OnlineCheckpointing`` with the
        fewest checkpoints that keep it optimal up to ``max_steps``.
    store:
        Where checkpoints live; a fresh :class:`MemoryStore` by default, or a
        :class:`revseq.dask.ClusterStore` if ``x0`` holds dask arrays. It is
        emptied when the run ends, whether it succeeds or raises.
    disk:
        Where checkpoints stored with ``Store(t, disk=True)`` live (a
        multistage schedule's); a :class:`revseq.DiskStore` in a private
        temporary directory by default, made only if the schedule needs it.
        A list of stores gives the levels of a multilevel schedule:
        ``disk=[nvme, nfs]`` puts ``Store(t, level=1)`` in ``nvme`` and
        ``Store(t, level=2)`` in ``nfs`` (a level not given gets a private
        DiskStore too).
    until:
        With ``n=None``: ``until(t, x_t)`` is asked after each new state
        ``x_t`` (``t >= 1``) of the forward sweep; the first true answer
        makes ``n = t``.
    max_steps:
        With ``n=None``: the run stops at ``x_max_steps`` at the latest (a
        safety bound; ``stats.n`` says where it stopped). Needed if ``until``
        is not given.
    check_schedule:
        Check every action of the schedule before it runs, as
        :func:`revseq.simulate` does, and stop the run with a
        :class:`~revseq.errors.ScheduleError` at the first illegal one or the
        first that breaks the strategy's bounds. A strategy of your own is
        always checked; a built-in one (exactly one of revseq's classes, not a
        subclass) is proven legal by revseq's tests and runs unchecked unless
        this is true. The counts in ``stats`` are measured by the run either
        way."""


def backprop(
    recurrence: Recurrence,
    x0: Any,
    n: int | None,
    strategy: ReversalStrategy | None = None,
    *,
    adjoint: Any = None,
    store: StoreProtocol | None = None,
    disk: StoreProtocol | Sequence[StoreProtocol] | None = None,
    until: Callable[[int, Any], Any] | None = None,
    max_steps: int | None = None,
    check_schedule: bool = False,
) -> Result:
    """Run ``n`` steps from ``x0`` and return ``x_n`` with the gradient of the objective.

    The objective is ``<adjoint, x_n>`` plus the recurrence's per-step losses;
    ``adjoint`` defaults to ones (the gradient of ``sum(x_n)``, as in the
    original gist) when there is no loss, and to zeros when there is one.

    Parameters
    ----------
    recurrence:
        The step and its derivative.
    x0:
        The initial state: an array, or a tuple, list or dict of arrays.
    adjoint:
        The seed ``d objective / d x_n``, shaped like the state.
    {run}

    Examples
    --------
    >>> import numpy as np, revseq
    >>> rec = revseq.Recurrence(f=np.sin, df=np.cos)
    >>> out = revseq.backprop(rec, np.full(3, 0.5), 1000, revseq.BinomialCheckpointing(checkpoints=10))
    >>> out.stats.forward_steps, out.stats.peak_checkpoints
    (3637, 10)
    """
    if not isinstance(recurrence, Recurrence):
        raise ParameterError(
            f"recurrence must be a revseq.Recurrence, got {type(recurrence).__name__}; "
            f"wrap the step: Recurrence(f, df=...) or Recurrence(f, vjp=...)"
        )
    if not recurrence.has_derivative:
        raise ParameterError("backprop needs the step's derivative: Recurrence(f, df=...) or Recurrence(f, vjp=...)")
    x0 = _as_state(x0)
    seed = _seed(adjoint, x0, recurrence.loss is not None)
    # walk() checks n, strategy, stores, until and max_steps before anything runs
    pairs = walk(
        recurrence,
        x0,
        n,
        strategy,
        store=store,
        disk=disk,
        until=until,
        max_steps=max_steps,
        check_schedule=check_schedule,
    )
    leaf = _tree.is_leaf(x0)
    # Each user callable's first output is checked in full (structure, shapes,
    # dtype; no broadcasting) by the `checked` variants, used for the first
    # step only; the sums are checked again at the end.
    first_adjoint, adjoint_step = recurrence.adjoint_at(leaf, checked=True), recurrence.adjoint_at(leaf)
    first_loss, loss_at = recurrence.loss_at(checked=True), recurrence.loss_at()
    # The gist's case (elementwise df of x alone, one array, no loss) gets a
    # loop of its own: it is the one where the engine's per-step overhead is
    # comparable with the step itself.
    # A store settling lazy states settles the sums after each step too (see _Run.settle): no fast loop then.
    settle = pairs._run.settle
    plain_df = (
        recurrence.df if leaf and loss_at is None and recurrence.plain_step is not None and settle is None else None
    )
    gp = total = None
    t = n
    walking: Iterator[Any] | None = None  # the gist's loop below: where it is, for the error message
    try:
        with pairs:
            blocks = pairs._blocks  # the run's generator: `pairs` wraps it with cleanup we hold via `with`
            n, (state,) = next(blocks)  # (n, [x_n]): the first block
            g = seed(state)
            if first_loss is not None:
                total, gx, gp = first_loss(state, n)
                # Sums start from copies: a callable handing out one buffer each call must not change them.
                # The parameter gradient is then summed in place, into this buffer the run owns.
                total, gp = _checks.private_copy(total), _checks.private_copy(gp)
                g = g + gx if leaf else _tree.tree_add(g, gx)
            # The first step reversed, x_{n-1}, with every output checked; then the unchecked callables
            # (the gist's plain df in a tight loop of its own).
            adjoint, loss = first_adjoint, first_loss
            # With vjp_output, each step's output: x_n first (a copy: a vjp must not reach the result).
            takes_output = recurrence.vjp_output
            y = _checks.private_copy(state) if takes_output else None
            for top, states in blocks:
                if plain_df is not None and adjoint is adjoint_step:  # the gist's case, after the first step
                    size, walking = len(states), iter(states)
                    for x in walking:
                        g = g * plain_df(x)
                    walking = None
                    del states  # a reversed state must not be held while the run computes the next ones
                    x = None
                    continue
                steps = zip(range(top, -1, -1), states, strict=False)  # range: t for each state, as far as they go
                for t, x in steps:
                    g, gp_t = adjoint(x, t, y, g)
                    if takes_output:
                        y = x  # x_t: the output of step t - 1, reversed next
                    if gp_t is not None:
                        gp = _checks.private_copy(gp_t) if gp is None else _accumulate(gp, gp_t)
                    if loss is not None and t:
                        value, gx, gp_t = loss(x, t)
                        total = total + value
                        g = g + gx if leaf else _tree.tree_add(g, gx)
                        if gp_t is not None:
                            gp = _accumulate(gp, gp_t)
                    if settle is not None:  # what this step made holds x_t's graph: the settled sums do not
                        g, gp, total = settle((g, gp, total))
                        gp_t = value = gx = None
                    if adjoint is first_adjoint:
                        adjoint, loss = adjoint_step, loss_at
                        if plain_df is not None:
                            break
                if plain_df is not None:  # the rest of the first block
                    for t, x in steps:  # noqa: B007 (t names the step in the error below)
                        g = g * plain_df(x)
                del states, steps
                x = None
            stats = pairs.stats
    except (TypeError, ValueError) as exc:
        if isinstance(exc, RevseqError) or not _raised_in_revseq(exc):
            raise  # the user's own error, unchanged
        if walking is not None:  # the step the gist's loop was at: the states it had not reached are left
            t = top - (size - operator.length_hint(walking)) + 1
        raise StepError(
            f"at step t={t}, revseq could not combine what df, vjp or loss returned ({type(exc).__name__}: "
            f"{exc}): a value of another shape or type than at the first step, whose outputs were checked"
        ) from exc
    # What a later call returned wrong and numpy did not refuse (a None at the last step, say) shows here.
    _check_sum(g, x0, "gradient", "x0")
    if recurrence.params is not None:
        _check_sum(gp, recurrence.params, "parameter gradient", "params")
    if recurrence.loss is not None and _checks.mismatch(total, 0.0) is not None:
        raise StepError(
            f"the loss summed over all steps is not one real number (got {total!r:.80}): loss returned "
            f"a value of another shape or type at a step after the first (whose outputs were checked)"
        )
    return Result(state=state, gradient=g, params_gradient=gp, loss=total, stats=stats)


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _raised_in_revseq(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by revseq's own arithmetic on the adjoints: its last frame is in the
    package, and it did not come out of the schedule's run (the step, a store, a strategy: not ours to name).
    """
    tb, last = exc.__traceback__, None
    while tb is not None:  # every frame, the last included: an error raised in execute() itself is not ours to name
        if tb.tb_frame.f_code in _RUN_CODE:
            return False
        tb, last = tb.tb_next, tb
    return last is not None and os.path.abspath(last.tb_frame.f_code.co_filename).startswith(_PACKAGE)


def _accumulate(total: Any, part: Any) -> Any:
    """``total + part``, in place where ``total`` is an array (or a tree of arrays) the run owns.

    Only where ``part`` has exactly the shape and dtype of ``total``: anything
    else is summed as before, into a new value, so that what a later call
    returned wrong (another shape or dtype) still shows in the final check of
    the sum rather than being cast or broadcast into the buffer.
    """
    if type(total) is np.ndarray:
        if type(part) is np.ndarray and part.shape == total.shape and part.dtype == total.dtype:
            np.add(total, part, out=total)
            return total
        return total + part
    if isinstance(total, (tuple, list)) and isinstance(part, (tuple, list)) and len(total) == len(part):
        summed = [_accumulate(a, b) for a, b in zip(total, part, strict=True)]
        if isinstance(total, list):
            total[:] = summed
            return total
        return type(total)(*summed) if hasattr(total, "_fields") else type(total)(summed)
    if isinstance(total, dict) and isinstance(part, dict) and total.keys() == part.keys():
        for key in total:
            total[key] = _accumulate(total[key], part[key])
        return total
    return _tree.tree_add(total, part)


def _check_sum(total: Any, reference: Any, what: str, name: str) -> None:
    problem = _checks.mismatch(total, reference)
    if problem is not None:
        raise StepError(
            f"the {what} summed over all steps is not shaped like {name} ({problem}): df, vjp or loss returned "
            f"a value of another shape or type at a step after the first (whose outputs were checked)"
        )


def _pairs(blocks: Iterator[tuple[int, Sequence[Any]]]) -> Generator[tuple[int, Any], None, None]:
    """The run's blocks ``(top, [x_top, x_{top-1}, ...])`` as pairs ``(t, x_t)``."""
    for top, states in blocks:
        t = top
        for x in states:
            yield t, x
            t -= 1
        del states  # a reversed state must not be held while the run computes the next ones
        x = None


class Walk(Iterator[tuple[int, Any]]):
    """The pairs ``(t, x_t)`` a schedule delivers, lazily; see :func:`walk`.

    ``stats`` reports the cost so far. The run starts, and takes its stores,
    at the first ``next()``; they are emptied and given back when the walk
    ends, fails, is closed, leaves a ``with`` block, or is dropped, whichever
    comes first. A walk that never started touches no store.
    """

    def __init__(self, run: _Run, blocks: Generator[tuple[int, Sequence[Any]], None, None]) -> None:
        self._run = run
        self._blocks = blocks  # its `finally` ends the run: on exhaustion, error, close() or collection
        self._pairs = _pairs(blocks)

    def __iter__(self) -> Walk:
        return self

    def __next__(self) -> tuple[int, Any]:
        return next(self._pairs)

    def close(self) -> None:
        self._pairs.close()
        self._blocks.close()  # closing a generator that never started runs no `finally`: the run's own too

    def __enter__(self) -> Walk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def n(self) -> int | None:
        """The number of steps; None until an online run has stopped."""
        return self._run.n

    @property
    def stats(self) -> Stats:
        return self._run.stats()


class Reversal(Iterator[Any]):
    """The states ``x_{{n-1}}, ..., x_0``, lazily; see :func:`reverse`.

    ``stats``, ``close`` and ``with`` work as for :class:`Walk`.
    """

    def __init__(self, pairs: Walk) -> None:
        self._pairs = pairs

    def __iter__(self) -> Reversal:
        return self

    def __next__(self) -> Any:
        return next(self._pairs)[1]

    def close(self) -> None:
        self._pairs.close()

    def __enter__(self) -> Reversal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def stats(self) -> Stats:
        return self._pairs.stats


def _check_online(strategy: ReversalStrategy | None, until: Any, max_steps: Any) -> tuple[OnlineStrategy, int]:
    if until is None and max_steps is None:
        raise ParameterError("n=None runs until a condition: give until=lambda t, x: ... and/or max_steps=")
    if until is not None and not callable(until):
        raise ParameterError(f"until must be callable as until(t, x_t), got {until!r}")
    limit = sys.maxsize if max_steps is None else check_int("max_steps", max_steps, 1)
    if strategy is None:
        if max_steps is None:
            raise ParameterError(
                "n=None without max_steps needs a budget: strategy=revseq.OnlineCheckpointing(checkpoints=c)"
            )
        from revseq.strategies.online import OnlineCheckpointing  # here: revseq.strategies must not import the engine

        return OnlineCheckpointing.for_max_steps(limit), limit
    strategy = _check_strategy(strategy)
    if not isinstance(strategy, OnlineStrategy):
        raise ParameterError(
            f"n=None needs an online strategy, one that places checkpoints without knowing n, "
            f"such as OnlineCheckpointing(checkpoints=...); got {strategy!r}"
        )
    return strategy, limit


def walk(
    f: Callable[[Any], Any] | Recurrence,
    x0: Any,
    n: int | None,
    strategy: ReversalStrategy | None = None,
    *,
    store: StoreProtocol | None = None,
    disk: StoreProtocol | Sequence[StoreProtocol] | None = None,
    output: bool = True,
    until: Callable[[int, Any], Any] | None = None,
    max_steps: int | None = None,
    check_schedule: bool = False,
) -> Walk:
    """Run a schedule and yield ``(t, x_t)``: ``(n, x_n)`` first if ``output``, then ``t = n-1`` down to 0.

    The building block under :func:`backprop` and :func:`reverse`, for
    adjoints revseq does not compute itself (an autodiff framework's VJP, say):
    consume the pairs in order and apply the adjoint of step ``t`` at ``x_t``.
    The first pair arrives once the forward sweep has reached ``x_n``, so a
    caller can stop there, return ``x_n``, and resume the walk later.

    ``f`` is a step function or a :class:`Recurrence` (no derivative needed).
    The walk makes ``strategy.cost(n).forward_steps`` calls of f, one fewer
    without ``output`` (unless the schedule itself advances to ``x_n``).

    Parameters
    ----------
    output:
        Whether to compute and yield ``x_n``.
    {run}

    >>> import revseq
    >>> [(t, int(x)) for t, x in revseq.walk(lambda x: x + 1, 0, 3, revseq.StoreAll())]
    [(3, 3), (2, 2), (1, 1), (0, 0)]
    """
    recurrence = f if isinstance(f, Recurrence) else Recurrence(f)
    x0 = _as_state(x0)
    for name, flag in (("output", output), ("check_schedule", check_schedule)):
        check_bool(name, flag)
    if disk is not None and disk is store:
        raise ParameterError(
            f"store and disk must be two different stores, got the same object twice ({store!r}): "
            f"checkpoints at the two levels share keys"
        )
    given = store is not None  # a store the caller passed holds the checkpoints, whichever way the run goes
    store = _check_store(store, "store") if given else _default_store(x0)
    deep: list[StoreProtocol] = []
    if disk is not None:
        disk, deep = _check_levels(disk, store)
    state_nbytes = _stored_nbytes(store, x0)
    if n is None:
        online, limit = _check_online(strategy, until, max_steps)
        sized = _sized(online, state_nbytes)
        if not isinstance(sized, OnlineStrategy):
            raise ScheduleError(f"{online!r}.sized(...) must return an online strategy, got {sized!r}")
        bounds = strategy_bounds(sized, "online_bounds()", sized.online_bounds())
        _check_fits(sized, None, bounds, store, state_nbytes, limit)
        checked = bool(check_schedule) or not _trusted(sized)
        run = _Run(None, x0, recurrence, store, output=output, bounds=bounds, disk=disk, checked=checked, deep=deep)
        return Walk(run, run.walk_online(sized, until, limit))
    if until is not None or max_steps is not None:
        raise ParameterError(f"until and max_steps go with n=None (a run of unknown length), got n={n!r}")
    n = check_int("n", n, 1)
    schedule = _sized(_check_strategy(strategy), state_nbytes).schedule(n)
    bounds = schedule.bounds()
    _check_fits(schedule.strategy, n, bounds, store, state_nbytes, n)
    checked = bool(check_schedule) or not _trusted(schedule.strategy)
    run = _Run(n, x0, recurrence, store, output=output, bounds=bounds, disk=disk, checked=checked, deep=deep)
    # Binomial's own schedule, unchecked, with no store passed: run from revolve's tasks, no actions made, the
    # checkpoints held by the run itself (a store the caller passed is filled and emptied as the schedule says).
    sized = schedule.strategy
    slots = None
    if not checked and not given and run.bulk and type(sized) is BinomialCheckpointing:
        slots = sized.budget(n)
    return Walk(run, run.walk(schedule, slots))


def _default_store(x0: Any) -> StoreProtocol:
    """A fresh :class:`MemoryStore`; for a state of dask collections (dask's collection protocol, duck-typed), a
    :class:`revseq.dask.ClusterStore`, which keeps the checkpoints on the cluster and settles each state there."""
    if any(hasattr(type(leaf), "__dask_graph__") for leaf in _tree.leaves(x0)):
        from revseq.dask import ClusterStore  # here: only dask states need it, and it imports dask

        return ClusterStore()
    return MemoryStore()


def _trusted(strategy: ReversalStrategy) -> bool:
    """Whether ``strategy`` is one of revseq's own, exactly: its schedules are proven legal by the tests."""
    from revseq import strategies  # here: revseq.strategies must not import the engine

    return type(strategy) in (
        strategies.StoreAll,
        strategies.Recompute,
        strategies.RecursiveHalving,
        strategies.SqrtCheckpointing,
        strategies.BinomialCheckpointing,
        strategies.OnlineCheckpointing,
        strategies.MultistageCheckpointing,
    )


def _compressed_bytes(*stores: StoreProtocol | None) -> tuple[int, int] | None:
    """The states' bytes and the bytes stored for them, put so far into the stores that compress (None: none does).

    A store that compresses says so with the counters ``raw_bytes_put`` and
    ``bytes_put`` (a :class:`~revseq.CompressedStore`), cumulative over its life.
    """
    counted = [s for s in stores if s is not None and hasattr(s, "raw_bytes_put") and hasattr(s, "bytes_put")]
    if not counted:
        return None
    return sum(int(s.raw_bytes_put) for s in counted), sum(int(s.bytes_put) for s in counted)


def _stored_nbytes(store: StoreProtocol, x0: Any) -> int:
    """The bytes a checkpoint of ``x0`` takes in ``store``, which sizes a byte budget.

    ``x0``'s ``nbytes``, unless the store says otherwise with an optional
    ``stored_nbytes(state)`` method (a :class:`~revseq.CompressedStore`
    measures ``x0`` compressed).
    """
    measure = getattr(store, "stored_nbytes", None)
    if measure is None:
        return _tree.nbytes(x0)
    size = measure(x0)
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)) or size < 0:
        raise ParameterError(f"store.stored_nbytes(x0) must return an int >= 0, got {size!r} ({type(size).__name__})")
    return int(size)


def _sized(strategy: ReversalStrategy, state_nbytes: int) -> ReversalStrategy:
    sized = strategy.sized(state_nbytes)
    if not isinstance(sized, ReversalStrategy):
        raise ScheduleError(f"{strategy!r}.sized({state_nbytes}) must return a ReversalStrategy, got {sized!r}")
    return sized


def _check_fits(
    strategy: ReversalStrategy, n: int | None, bounds: Bounds, store: StoreProtocol, nbytes: int, max_steps: int
) -> None:
    """Refuse, in O(1), a run whose checkpoints cannot fit in this machine's memory.

    A run holds at most what its strategy promises, and never more than one
    checkpoint per state before ``x_n`` (``n``, or ``max_steps`` when ``n``
    is unknown): only what is certain not to fit is refused.
    """
    if bounds.checkpoints is None:
        return
    steps = max_steps if n is None else n
    held = min(bounds.checkpoints, steps)
    per_state = _limits.TRACKED_KEY_BYTES  # the engine's own record of each checkpoint
    if isinstance(store, MemoryStore):
        per_state += nbytes + _limits.STORED_STATE_BYTES
    if n is not None:
        name, length = "n", f"{n} steps"
    elif max_steps < sys.maxsize:
        name, length = "max_steps", f"up to {max_steps} steps"
    else:
        name, length = "strategy", "a run of unknown length"
    _limits.check_fits(
        name,
        held * per_state,
        f"{strategy!r} for {length} holds up to {held} checkpoints of {_limits.format_bytes(nbytes)}",
    )


def reverse(
    f: Callable[[Any], Any] | Recurrence,
    x0: Any,
    n: int | None,
    strategy: ReversalStrategy | None = None,
    *,
    store: StoreProtocol | None = None,
    disk: StoreProtocol | Sequence[StoreProtocol] | None = None,
    until: Callable[[int, Any], Any] | None = None,
    max_steps: int | None = None,
    check_schedule: bool = False,
) -> Reversal:
    """Yield ``x_{{n-1}}, ..., x_0`` of ``x_{{t+1}} = f(x_t)`` without storing them all.

    ``f`` is a step function or a :class:`Recurrence` (which may be indexed
    or take parameters; no derivative is needed). It makes
    ``strategy.cost(n).forward_steps - 1`` calls of f: ``x_n`` is never
    computed (unless the run's length is unknown: then the forward sweep
    must reach ``x_n`` to know it has ended).

    Parameters
    ----------
    {run}

    >>> import revseq
    >>> [int(x) for x in revseq.reverse(lambda x: x + 1, 0, 5, revseq.RecursiveHalving())]
    [4, 3, 2, 1, 0]
    """
    return Reversal(
        walk(
            f,
            x0,
            n,
            strategy,
            store=store,
            disk=disk,
            output=False,
            until=until,
            max_steps=max_steps,
            check_schedule=check_schedule,
        )
    )


for _function in (backprop, walk, reverse):
    _function.__doc__ = (_function.__doc__ or "").format(run=_RUN_DOC.strip("\n").lstrip())
