"""Overlapped checkpoint I/O: a store layer that writes behind the computation and reads ahead of it.

``OverlappedStore(inner, depth=k)`` hands every write and read of its inner
store (a :class:`~revseq.DiskStore` by default) to one background thread.
A ``put`` returns once the state is staged in a buffer (copied, by default);
the thread writes it while the run computes on. The engine tells the store
which checkpoints it will read next, from the schedule, which is known data
(``expect``): the thread reads them ahead into the buffer, so that a
``Restore`` finds its state there. At most ``depth`` states are staged or
read ahead at a time; they are RAM, and the engine counts them in
``Stats.peak_bytes``. docs/storage.md, "Overlapped I/O", has the guarantees
and the measurements.

:func:`overlapped_time` prices a schedule under this model (THEORY.md 6.2):
one I/O channel, ``depth`` buffers, a write hidden behind the steps that
follow it and a read behind the steps before it; a stretch of work costs
``max(compute, I/O)`` rather than their sum, where the buffers allow.
"""

from __future__ import annotations

import collections
import math
import operator
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from revseq import _tree
from revseq._validate import check_bool, check_int
from revseq.errors import ParameterError, StoreError
from revseq.schedule import Action, Advance, Free, Restore, Reverse, Store
from revseq.store import Store as StoreProtocol

__all__ = ["OverlappedStore", "overlapped_plan", "overlapped_time", "time_overlapped"]

_WRITE, _READ, _DELETE = "write", "read", "delete"


class _Task:
    """One piece of background work: write, read ahead (or on demand) or delete one checkpoint."""

    __slots__ = ("demand", "done", "error", "gen", "key", "kind", "nbytes", "result", "state")

    def __init__(self, kind: str, key: int, gen: int, state: Any = None, nbytes: int = 0, demand: bool = False):
        self.kind = kind
        self.key = key
        self.gen = gen  # the key's generation when the task was made: a later put or delete makes its read stale
        self.state = state  # a write's staged state
        self.nbytes = nbytes  # buffer bytes this task holds (0 for a delete and a demand read)
        self.demand = demand  # a read the main thread waits for (not a read ahead): holds no buffer
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False


class _Shared:
    """What the store and its worker thread share; every field is guarded by ``cond``'s lock."""

    def __init__(self, inner: StoreProtocol, depth: int) -> None:
        self.inner = inner
        self.depth = depth
        self.cond = threading.Condition(threading.Lock())
        self.queue: collections.deque[_Task] = collections.deque()
        self.running: _Task | None = None
        self.stop = False
        self.thread: threading.Thread | None = None
        self.held: dict[int, int] = {}  # key -> the state's nbytes, for every checkpoint held (written or not)
        self.gen: dict[int, int] = {}  # key -> generation, bumped by put and delete
        self.staged: dict[int, _Task] = {}  # key -> its latest write, queued or running
        self.reading: dict[int, _Task] = {}  # key -> its read ahead, queued or running
        self.ready: dict[int, tuple[Any, int]] = {}  # key -> (state read ahead, or kept after its write; nbytes)
        self.in_inner: set[int] = set()  # keys the inner store holds a version of
        self.expected: list[int] = []  # the keys the engine will read next, in order
        self.slots = 0  # buffers in use: staged writes, reads ahead (queued, running or ready)
        self.buffer_nbytes = 0
        self.peak_buffer_nbytes = 0
        self.error: BaseException | None = None  # the first background failure, until clear()
        self.error_what = ""
        self.io_seconds = 0.0  # time spent in the inner store's calls, by either thread
        self.blocked_seconds = 0.0  # time the caller's thread spent waiting for the worker
        self.prefetch_hits = self.prefetches = 0

    # -- buffers (the caller holds the lock)

    def take(self, nbytes: int) -> None:
        self.slots += 1
        self.buffer_nbytes += nbytes
        if self.buffer_nbytes > self.peak_buffer_nbytes:
            self.peak_buffer_nbytes = self.buffer_nbytes

    def give(self, nbytes: int) -> None:
        self.slots -= 1
        self.buffer_nbytes -= nbytes

    def evict(self) -> bool:
        """Free one buffer held by a read ahead (not yet running, or done and unused); False if none can go."""
        for task in reversed(self.queue):  # the latest queued read ahead first
            if task.kind == _READ and not task.demand:
                self.queue.remove(task)
                del self.reading[task.key]
                self.give(task.nbytes)
                return True
        if self.ready:  # the state read ahead that is needed last, or not at all
            order = {key: i for i, key in reversed(list(enumerate(self.expected)))}
            key = max(self.ready, key=lambda k: order.get(k, len(order)))
            self.give(self.ready.pop(key)[1])
            return True
        return False

    def refill(self) -> None:
        """Read ahead the expected keys that are held and not buffered, while buffers are free."""
        # Reads ahead leave one buffer to writes (when there are two or more), so that a write
        # rarely has to drop a state read ahead, which would then be read again.
        limit = self.depth - 1 if self.depth > 1 else 1
        for key in self.expected:
            if self.slots >= limit:
                break
            if key not in self.held or key in self.ready or key in self.reading or key in self.staged:
                continue
            task = _Task(_READ, key, self.gen.get(key, 0), nbytes=self.held[key])
            self.take(task.nbytes)
            self.reading[key] = task
            self.queue.append(task)
            self.prefetches += 1
        self.wake()

    def wake(self) -> None:
        if self.queue and self.thread is None:
            self.thread = threading.Thread(target=_work, args=(self,), name="revseq-overlapped-io", daemon=True)
            self.thread.start()
        self.cond.notify_all()

    def finish(self, task: _Task) -> None:
        """Account for a task the worker has done (under the lock)."""
        key, current = task.key, self.gen.get(task.key, 0) == task.gen and task.key in self.held
        task.done = True
        if task.kind == _WRITE:
            if self.staged.get(key) is task:
                del self.staged[key]
            if task.error is None:
                self.in_inner.add(key)
                if current and key in self.expected and key not in self.ready:  # read soon: keep it
                    self.ready[key] = (task.state, task.nbytes)
                    task.state = None
                    return
            else:
                self._fail(task, f"could not write checkpoint x_{key} in the background")
            task.state = None
            self.give(task.nbytes)
        elif task.kind == _READ:
            if task.demand:
                if task.error is not None and not isinstance(task.error, (StoreError, KeyError)):
                    self._fail(task, f"could not read checkpoint x_{key}")
                return
            if self.reading.get(key) is task:
                del self.reading[key]
            if task.error is None and current and key not in self.ready:
                self.ready[key] = (task.result, task.nbytes)
                task.result = None
                return
            if task.error is not None and current:
                self._fail(task, f"could not read checkpoint x_{key} ahead in the background")
            task.result = None
            self.give(task.nbytes)
        else:
            if task.error is None:
                self.in_inner.discard(key)
            else:
                self._fail(task, f"could not delete checkpoint x_{key} in the background")

    def _fail(self, task: _Task, what: str) -> None:
        if self.error is None:
            self.error, self.error_what = task.error, what

    def check(self) -> None:
        """Raise the background failure, if any, as a StoreError (it stays until clear())."""
        if self.error is not None:
            raise StoreError(f"{self.error_what}: {self.error}") from self.error

    def wait(self, ready: Any) -> None:
        """Wait, counted as blocked time, until ``ready()`` (under the lock)."""
        if ready():
            return
        start = time.perf_counter()
        try:
            while not ready():
                self.cond.wait()
        finally:
            self.blocked_seconds += time.perf_counter() - start


def _work(shared: _Shared) -> None:
    """The worker thread: runs the queued tasks in order until told to stop."""
    cond, inner = shared.cond, shared.inner
    while True:
        with cond:
            while not shared.queue and not shared.stop:
                cond.wait()
            if not shared.queue:  # stopped, nothing left
                shared.thread = None
                cond.notify_all()
                return
            task = shared.queue.popleft()
            shared.running = task
        start = time.perf_counter()
        try:
            if task.kind == _WRITE:
                inner.put(task.key, task.state)
            elif task.kind == _READ:
                task.result = inner.get(task.key)
            else:
                inner.delete(task.key)
        except Exception as exc:  # surfaces in the caller's thread, at its next call
            task.error = exc
        spent = time.perf_counter() - start
        with cond:
            shared.io_seconds += spent
            shared.running = None
            shared.finish(task)
            cond.notify_all()


def _stop(shared: _Shared) -> None:
    """The store's finalizer: tell the worker to stop once its queue is done (it holds no reference to the store)."""
    with shared.cond:
        shared.queue.clear()
        shared.stop = True
        shared.cond.notify_all()


class OverlappedStore:
    """Checkpoints written and read on a background thread, overlapped with the computation.

    Parameters
    ----------
    inner:
        Where the checkpoints go: a new :class:`~revseq.DiskStore` (in a
        private temporary directory) if ``None``, or an empty store of yours
        (``DiskStore(dir)``, ``FsspecStore(url)``, ``CompressedStore(...)``).
        It belongs to this store for as long as this store lives: no run may
        use it directly meanwhile. Only the background thread calls it while
        work is pending, so it need not be thread-safe.
    depth:
        The buffers, in states: at most ``depth`` states are staged for
        writing or read ahead at a time (default 2). They are RAM on top of
        the checkpoints in memory: the engine counts them in
        ``Stats.peak_bytes``, and a plan should leave them room (plan
        ``ram`` minus ``depth`` memory checkpoints).
    copy:
        ``True`` (the default): ``put`` copies the state into its buffer, so
        the caller may change it at once (steps that work in place are
        allowed). ``False`` keeps a reference until it is written, saving a
        copy per write; the engine then refuses steps that modify their
        argument in place, as with the default ``MemoryStore``.

    A ``put`` returns once the state is staged (it waits only while all
    ``depth`` buffers are busy); a ``get`` returns the state read ahead if
    it is there, the staged copy if its write is still pending, or else
    reads it (the background thread does, the caller waits).
    :meth:`expect` says which keys will be read next; the engine calls it
    from the schedule. A failure in the background (a full disk, an I/O
    error) is raised at the next ``put``, ``get``, ``delete`` or ``expect``
    as a :class:`~revseq.errors.StoreError` whose ``__cause__`` is the inner
    store's error, and at every later one until :meth:`clear`. ``clear``
    cancels pending work, waits for the thread's current call, stops the
    thread and empties the inner store.

    >>> import numpy as np, revseq
    >>> store = revseq.overlap.OverlappedStore(depth=2)
    >>> rec = revseq.Recurrence(np.sin, np.cos)
    >>> plan = revseq.MultistageCheckpointing(ram=2, costs=revseq.DiskCosts(step=1, write=1, read=1))
    >>> out = revseq.backprop(rec, np.full(1000, 0.5), 100, plan, disk=store)
    >>> out.stats.disk_writes > 0, store.prefetch_hits > 0, len(store), store.running
    (True, True, 0, False)
    """

    def __init__(self, inner: StoreProtocol | None = None, *, depth: int = 2, copy: bool = True) -> None:
        depth = check_int("depth", depth, 1)
        self._copy = check_bool("copy", copy)
        self._inner = self._adopt(inner)
        self._shared = _Shared(self._inner, depth)
        self.copy_seconds = 0.0  # time put spent copying states into buffers
        weakref.finalize(self, _stop, self._shared)

    def _adopt(self, inner: StoreProtocol | None) -> StoreProtocol:
        if inner is None:
            from revseq.disk import DiskStore

            return DiskStore()
        if isinstance(inner, type):
            raise ParameterError(
                f"inner must be a store instance, got the class {inner.__name__}; did you mean {inner.__name__}()?"
            )
        if not isinstance(inner, StoreProtocol):
            raise ParameterError(
                f"inner must be a store instance (DiskStore(), FsspecStore(url), ...) or None, got {inner!r}"
            )
        if isinstance(inner, OverlappedStore):
            raise ParameterError("inner must not be an OverlappedStore: one background thread per store is enough")
        from revseq import engine  # the engine's register of stores in use

        with engine._claimed_lock:
            engine._check_free(inner, "inner")
            engine._claimed[id(inner)] = "an OverlappedStore wraps it"
        weakref.finalize(self, _release, id(inner))
        return inner

    # -- the Store protocol

    def put(self, key: int, state: Any) -> None:
        key = operator.index(key)
        shared = self._shared
        with shared.cond:
            shared.check()
        nbytes = _tree.nbytes(state)
        if self._copy:
            start = time.perf_counter()
            state = _tree.deep_copy(state)
            self.copy_seconds += time.perf_counter() - start
        with shared.cond:
            shared.check()
            gen = shared.gen[key] = shared.gen.get(key, 0) + 1
            if key in shared.ready:
                shared.give(shared.ready.pop(key)[1])
            old = shared.staged.pop(key, None)
            if old is not None and old is not shared.running:  # superseded before it started
                shared.queue.remove(old)
                shared.give(old.nbytes)
            while shared.slots >= shared.depth and not shared.evict():
                shared.wait(lambda: shared.slots < shared.depth or shared.error is not None)
                shared.check()
            task = _Task(_WRITE, key, gen, state, nbytes)
            shared.take(nbytes)
            shared.staged[key] = task
            shared.held[key] = nbytes
            shared.queue.append(task)
            shared.wake()

    def get(self, key: int) -> Any:
        shared = self._shared
        with shared.cond:
            shared.check()
            if key not in shared.held:
                raise KeyError(key)
            if key in shared.expected:
                shared.expected.remove(key)
            if key in shared.ready:  # read ahead, or kept after its write
                state, nbytes = shared.ready.pop(key)
                shared.give(nbytes)
                shared.prefetch_hits += 1
                shared.refill()
                return state
            staged = shared.staged.get(key)
            if staged is None and key in shared.reading:  # being read ahead: wait for it
                reading = shared.reading[key]
                shared.wait(lambda: reading.done)
                shared.check()
                if key in shared.ready:
                    state, nbytes = shared.ready.pop(key)
                    shared.give(nbytes)
                    shared.prefetch_hits += 1
                    shared.refill()
                    return state
            if staged is None:  # read it now, before anything queued (nothing queued can change this key)
                task = _Task(_READ, key, shared.gen.get(key, 0), demand=True)
                shared.queue.appendleft(task)
                shared.wake()
                shared.wait(lambda: task.done)
                shared.check()
                if task.error is not None:
                    raise task.error
                shared.refill()
                return task.result
            state = staged.state
            shared.refill()
        # The write is pending: its staged state is served (it is never changed, so it is read unlocked).
        return _tree.deep_copy(state) if self._copy else state

    def delete(self, key: int) -> None:
        shared = self._shared
        with shared.cond:
            shared.check()
            if key not in shared.held:
                raise KeyError(key)
            del shared.held[key]
            shared.gen[key] = shared.gen.get(key, 0) + 1
            while key in shared.expected:
                shared.expected.remove(key)
            if key in shared.ready:
                shared.give(shared.ready.pop(key)[1])
            reading = shared.reading.pop(key, None)
            if reading is not None and reading is not shared.running:
                shared.queue.remove(reading)
                shared.give(reading.nbytes)
            staged = shared.staged.pop(key, None)
            if staged is not None and staged is not shared.running:  # never written: nothing to delete for it
                shared.queue.remove(staged)
                shared.give(staged.nbytes)
                staged = None
            if staged is not None or key in shared.in_inner:
                shared.queue.append(_Task(_DELETE, key, shared.gen[key]))
                shared.wake()
            shared.refill()

    def expect(self, keys: Iterable[int]) -> None:
        """The keys the next reads will ask for, in order: read ahead as many as the buffers allow.

        Replaces the previous expectation. Keys not held are skipped (they
        may be written later: a write of an expected key keeps its staged
        state in the buffer for the read, instead of reading it back).
        """
        shared = self._shared
        with shared.cond:
            shared.check()
            shared.expected = [operator.index(k) for k in keys]
            shared.refill()

    def clear(self) -> None:
        """Cancel pending work, wait for the thread's current call, stop the thread, empty the inner store.

        A background failure not yet raised is dropped: clear runs when a
        run ends, and must not hide the error that ended it.
        """
        shared = self._shared
        with shared.cond:
            shared.queue.clear()
            shared.stop = True
            shared.cond.notify_all()
            shared.wait(lambda: shared.thread is None)
            shared.stop = False
            shared.held.clear()
            shared.staged.clear()
            shared.reading.clear()
            shared.ready.clear()
            shared.expected = []
            shared.in_inner.clear()
            shared.slots = shared.buffer_nbytes = 0
            shared.error = None
        start = time.perf_counter()
        try:
            self._inner.clear()
        finally:
            spent = time.perf_counter() - start
            with shared.cond:
                shared.io_seconds += spent
                shared.blocked_seconds += spent

    def __len__(self) -> int:
        return len(self._shared.held)

    @property
    def nbytes(self) -> int:
        """Bytes of the checkpoints held (written or still staged), as the inner store counts them."""
        with self._shared.cond:
            return sum(self._shared.held.values())

    @property
    def copies(self) -> bool:
        """Whether states are copied on the way in and out: ``copy`` and the inner store copies."""
        return self._copy and bool(getattr(self._inner, "copies", False))

    # -- what the engine and a user read

    @property
    def inner(self) -> StoreProtocol:
        return self._inner

    @property
    def depth(self) -> int:
        """The number of buffers (states staged or read ahead at most)."""
        return self._shared.depth

    @property
    def buffer_nbytes(self) -> int:
        """RAM held in buffers now: states staged for writing, being read ahead or read ahead.

        A buffer is counted from the moment it is taken in the caller's
        thread (a ``put``, or an ``expect`` that starts a read ahead) until
        it is given back, so it grows only inside this store's calls: the
        engine reads it after each of them to measure the peak.
        """
        return self._shared.buffer_nbytes

    @property
    def peak_buffer_nbytes(self) -> int:
        """The largest ``buffer_nbytes`` since the store was made."""
        return self._shared.peak_buffer_nbytes

    @property
    def io_seconds(self) -> float:
        """Seconds spent in the inner store's calls (writes, reads, deletes, clear), since the store was made."""
        return self._shared.io_seconds

    @property
    def blocked_seconds(self) -> float:
        """Seconds the caller waited for I/O (a full buffer, a read not ready, clear), since the store was made."""
        return self._shared.blocked_seconds

    @property
    def hidden_fraction(self) -> float:
        """``1 - blocked_seconds / io_seconds``: the share of I/O time the caller did not wait for (nan before any)."""
        io = self._shared.io_seconds
        return 1.0 - self._shared.blocked_seconds / io if io > 0 else math.nan

    @property
    def prefetch_hits(self) -> int:
        """Reads served from the buffer (read ahead, or kept after the write) rather than waited for."""
        return self._shared.prefetch_hits

    @property
    def running(self) -> bool:
        """Whether the background thread is alive (it starts with the first task, and clear() stops it)."""
        thread = self._shared.thread
        return thread is not None and thread.is_alive()

    @property
    def bytes_written(self) -> int:
        return int(getattr(self._inner, "bytes_written", 0))

    @property
    def bytes_read(self) -> int:
        return int(getattr(self._inner, "bytes_read", 0))

    def __repr__(self) -> str:
        return f"OverlappedStore({self._inner!r}, depth={self.depth}, held={len(self)})"


def _release(inner_id: int) -> None:
    from revseq import engine

    with engine._claimed_lock:
        engine._claimed.pop(inner_id, None)


def read_keys(action: Action) -> Sequence[int]:
    """The checkpoints ``action`` reads, in order (a Reverse's from its top; its top may be live, not read)."""
    if isinstance(action, Restore):
        return (action.step,)
    if isinstance(action, Reverse):
        return range(action.stop - 1, action.start - 1, -1)
    return ()


def prefetching(
    actions: Iterable[Action], stores: Sequence[Any], *, window: int = 256, measure: Callable[[], None] | None = None
) -> Iterator[Action]:
    """``actions`` unchanged, while the stores are told (``expect``) what the coming actions will read.

    The engine's lookahead: up to ``window`` actions are taken ahead from
    ``actions`` (a lazy schedule is only walked further, never changed),
    and each store with an ``expect`` method is given the keys the next
    ones read, about ``2 * depth`` of them, whenever that list changes. An
    error raised by ``actions`` itself while looking ahead is raised when
    the action it stands for is reached, so the actions before it run as
    they would without lookahead. ``measure()`` is called after each
    action and each ``expect``: the engine reads the buffers' bytes then.
    """
    want = max((int(getattr(s, "depth", 4)) for s in stores), default=4) * 2
    source = iter(actions)
    ahead: collections.deque[Action] = collections.deque()
    keys: collections.deque[tuple[int, int]] = collections.deque()  # (position of its action, key)
    failure: BaseException | None = None
    taken = 0  # actions taken from the source
    given = 0  # actions handed out
    told: list[int] | None = None
    while True:
        while failure is None and len(ahead) < window and len(keys) < want:
            try:
                action = next(source)
            except StopIteration:
                failure = StopIteration()
                break
            except Exception as exc:  # raised in order, below
                failure = exc
                break
            ahead.append(action)
            keys.extend((taken, k) for k in read_keys(action)[:want] if isinstance(k, (int, np.integer)))
            taken += 1
        now = [k for _, k in keys][:want]
        if now != told:
            for store in stores:
                store.expect(now)
            told = now
            if measure is not None:
                measure()
        if not ahead:
            if failure is None or isinstance(failure, StopIteration):
                return
            raise failure
        action = ahead.popleft()
        while keys and keys[0][0] == given and type(action) is not Reverse:
            keys.popleft()
        given += 1
        yield action
        if measure is not None:
            measure()
        while keys and keys[0][0] < given:  # a Reverse's reads are done once it has run
            keys.popleft()


def overlapped_time(
    actions: Iterable[Action],
    n: int,
    *,
    step: float,
    write: float,
    read: float,
    adjoint: float = 0.0,
    depth: int = 2,
    lookahead: int = 256,
) -> tuple[float, float]:
    """Predicted wall time of a schedule with its disk I/O overlapped, and without: ``(overlapped, synchronous)``.

    An event simulation of THEORY.md 6.2's model, as :class:`OverlappedStore`
    runs it: one I/O channel doing one write or read at a time in order, and
    ``depth`` buffers. The computation spends ``step`` per call of f (the
    call making ``x_n`` included) and ``adjoint`` per reversed step; memory
    is free. A disk ``Store`` takes a buffer (waiting while all are busy)
    and returns; its write starts when the channel is free and gives the
    buffer back when done. The disk reads of the next actions (up to
    ``lookahead`` of them, as the engine looks ahead) are started when a
    buffer is free; a read not yet done is waited for. A stretch of
    computation between two reads thus costs ``max(compute, I/O)`` where
    the buffers allow, instead of their sum. With ``depth=0`` nothing
    overlaps and the result is the synchronous time, ``step * forward_steps
    + write * disk_writes + read * disk_reads + adjoint * n``, which is the
    second number returned (``DiskCosts.time`` plus the adjoints).
    """
    n = check_int("n", n, 1)
    depth = check_int("depth", depth, 0)
    for name, value in (("step", step), ("write", write), ("read", read), ("adjoint", adjoint)):
        if not isinstance(value, (int, float, np.floating)) or not math.isfinite(value) or value < 0:
            raise ParameterError(f"{name} must be a finite number >= 0, got {value!r}")
    plan = list(actions)
    # Which keys each Restore and Reverse reads from disk: the levels replayed once, in order.
    on_disk: set[int] = set()
    in_memory: set[int] = set()  # read first, as the engine does
    disk_reads: list[tuple[int, int, int]] = []  # (action index, key, index of its Store), in the order needed
    written: dict[int, int] = {}  # key -> the index of the Store that put it on disk
    kept: dict[int, int] = {}  # Store index -> the disk read it serves, where that read is within the lookahead
    live = 0
    for i, action in enumerate(plan):
        if isinstance(action, Store):
            (on_disk if action.level else in_memory).add(action.step)
            if action.level:
                written[action.step] = i
        elif isinstance(action, Free):
            on_disk.difference_update(range(action.start, action.stop))
            in_memory.difference_update(range(action.start, action.stop))
        elif isinstance(action, Restore):
            live = action.step
            if live in on_disk and live not in in_memory:
                disk_reads.append((i, live, written[live]))
        elif isinstance(action, Reverse):
            start, stop = action.start, action.stop
            disk_reads.extend(
                (i, t, written[t])
                for t in range(stop - 1, start - 1, -1)
                if t in on_disk and t not in in_memory and t != live
            )
            on_disk = {t for t in on_disk if t < start}  # a Reverse releases everything from its start
            in_memory = {t for t in in_memory if t < start}
            live = start
        elif isinstance(action, Advance):
            live = action.stop
    # A state written while its read is expected (within the lookahead) stays in its buffer for that read.
    first: set[int] = set()
    for j, (i, _, w) in enumerate(disk_reads):
        if w not in first:  # the first read of what this Store wrote
            first.add(w)
            if i < w + lookahead:
                kept[w] = j
    now = channel = 0.0  # the computation's clock; when the I/O channel is next free
    sync = 0.0
    busy: list[float] = []  # when each buffer in use is given back (inf: read ahead, held until used)
    done_at: dict[int, float] = {}  # index in disk_reads -> when its read ahead is done
    pending = 0  # the next disk read to be used
    produced = False
    ahead_limit = depth - 1 if depth > 1 else depth  # as the store: reads ahead leave a buffer to writes

    def wait_for_buffer() -> None:
        nonlocal now, busy
        busy = [b for b in busy if b > now]
        if len(busy) >= depth and math.inf in busy:  # a state read ahead is dropped (read again later)
            del done_at[max(done_at)]
            busy.remove(math.inf)
        elif len(busy) >= depth:
            now = max(now, min(busy))
            busy.remove(min(busy))

    def use_read(j: int) -> None:
        nonlocal now, channel, sync
        sync += read
        if j in done_at:
            now = max(now, done_at.pop(j))
            busy.remove(math.inf)
        else:  # not read ahead: read now, and wait
            channel = max(now, channel) + read
            now = channel

    for i, action in enumerate(plan):
        if depth:  # read ahead the next disk reads within the lookahead, while buffers are free
            j = pending
            while j < len(disk_reads) and disk_reads[j][0] < i + lookahead:
                if disk_reads[j][2] >= i:  # not written yet
                    break
                if j not in done_at:
                    busy = [b for b in busy if b > now]
                    if len(busy) >= ahead_limit:
                        break
                    channel = max(now, channel) + read
                    done_at[j] = channel
                    busy.append(math.inf)
                j += 1
        if isinstance(action, Advance):
            spent = step * (action.stop - action.start)
            now += spent
            sync += spent
            produced = produced or action.stop == n
        elif isinstance(action, Store) and action.level:
            sync += write
            if depth:
                wait_for_buffer()
                channel = max(now, channel) + write
                if i in kept and kept[i] >= pending:  # the read it serves will find it in the buffer
                    done_at[kept[i]] = channel
                    busy.append(math.inf)
                else:
                    busy.append(channel)
            else:
                now += write
        elif isinstance(action, Restore):
            if pending < len(disk_reads) and disk_reads[pending][0] == i:
                use_read(pending)
                pending += 1
        elif isinstance(action, Reverse):
            start, stop = action.start, action.stop
            if stop == n and not produced:  # the call making x_n comes with the first Reverse reaching it
                now += step
                sync += step
                produced = True
            for t in range(stop - 1, start - 1, -1):
                if pending < len(disk_reads) and disk_reads[pending][:2] == (i, t):
                    use_read(pending)
                    pending += 1
                now += adjoint
                sync += adjoint
    return now, sync


def time_overlapped(strategy: Any, n: int, costs: Any, depth: int) -> float:
    """:func:`overlapped_time` of ``strategy``'s schedule for ``n`` steps at ``costs`` (a ``DiskCosts``, its
    adjoint included) with ``depth`` buffers: the predicted wall time with an :class:`OverlappedStore`."""
    return overlapped_time(
        strategy.actions(n),
        n,
        step=costs.step,
        write=costs.write,
        read=costs.read,
        adjoint=costs.adjoint,
        depth=depth,
    )[0]


def overlapped_plan(
    n: int,
    *,
    ram: int,
    costs: Any,
    depth: int = 2,
    adjoint: float | None = None,
    disk: int | None = None,
    scales: Sequence[float] = (),
) -> tuple[Any, float]:
    """A :class:`~revseq.MultistageCheckpointing` plan for an :class:`OverlappedStore`, and its predicted time.

    ``ram`` states of memory hold the ``depth`` buffers and ``ram - depth``
    checkpoints. The candidates are the overlap-aware programme's plan,
    ``MultistageCheckpointing(ram, disk, costs, depth=depth)`` with
    ``costs.adjoint`` set to ``adjoint`` (when given), and the synchronous
    plan with ``ram - depth`` checkpoints; each is priced by
    :func:`overlapped_time` with the real ``costs``, and the faster is
    returned (ties: the programme's). ``scales`` adds the older search:
    synchronous plans made with the disk costs scaled by each of ``scales``
    (for the write and for the read), as before the planner priced overlap
    itself. Returns ``(strategy, predicted time)``, the time adjoints
    included; pass the strategy to ``backprop`` with
    ``disk=OverlappedStore(..., depth=depth)``.
    """
    from revseq.strategies.multistage import DiskCosts, MultistageCheckpointing

    if not isinstance(costs, DiskCosts):
        raise ParameterError(f"costs must be a DiskCosts, got {costs!r} ({type(costs).__name__})")
    n = check_int("n", n, 1)
    depth = check_int("depth", depth, 1)
    ram = check_int("ram", ram, depth + 1)
    if adjoint is not None:
        costs = DiskCosts(step=costs.step, write=costs.write, read=costs.read, adjoint=adjoint)

    planned = MultistageCheckpointing(ram=ram, disk=disk, costs=costs, depth=depth)
    best: tuple[float, Any] = (planned.predicted_time(n), planned)
    candidates = [MultistageCheckpointing(ram=ram - depth, disk=disk, costs=costs)]
    for a in scales:
        for b in scales:
            scaled = DiskCosts(step=costs.step, write=costs.write * a, read=costs.read * b)
            candidates.append(MultistageCheckpointing(ram=ram - depth, disk=disk, costs=scaled))
    for strategy in candidates:
        wall = time_overlapped(strategy, n, costs, depth)
        if wall < best[0]:
            best = (wall, strategy)
    return best[1], best[0]
