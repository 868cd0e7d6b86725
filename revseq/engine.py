"""The engine: runs a schedule against a recurrence and measures what it cost.

The front of revseq: :func:`backprop` (gradients) and :func:`reverse` (the
states ``x_{n-1} .. x_0``, no derivative needed). Both run the strategy's
schedule through one interpreter, which checks each action with the same
tracker :func:`revseq.simulate` uses before executing it, counts the calls
of f it really makes, and reads the store's size after every write.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any

import attrs
import numpy as np

from revseq import _checks, _limits, _tree
from revseq._validate import check_int
from revseq.errors import ParameterError, RevseqError, ScheduleError, StepError
from revseq.recurrence import Recurrence
from revseq.schedule import (
    Action,
    Advance,
    Bounds,
    Cost,
    Free,
    Restore,
    Reverse,
    Store,
    _Tracker,
    strategy_bounds,
    strategy_iterable,
)
from revseq.store import MemoryStore
from revseq.store import Store as StoreProtocol
from revseq.strategies.base import OnlineStrategy, ReversalStrategy, as_strategy
from revseq.strategies.binomial import BinomialCheckpointing

__all__ = ["DEFAULT_STRATEGY", "Result", "Reversal", "Stats", "Walk", "backprop", "reverse", "walk"]

DEFAULT_STRATEGY: ReversalStrategy = BinomialCheckpointing()
"""Used when no strategy is given: binomial checkpointing with, for each n,
the fewest checkpoints (about sqrt(2 n)) that recompute no step more than
twice, so at most 2n forward steps."""


@attrs.frozen
class Stats:
    """What a run really cost, measured by the engine.

    ``forward_steps`` counts calls of f made; ``peak_checkpoints`` and
    ``peak_bytes`` are read from the memory store after every write, and
    ``peak_disk`` from the disk store; ``writes``/``reads`` and
    ``disk_writes``/``disk_reads`` count states stored and read back at each
    level, ``disk_bytes_written``/``disk_bytes_read`` the bytes moved to and
    from disk. The counts equal the strategy's ``cost(n)`` (see
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


_WATCHED_CALLS = 4
"""How many of the first calls of f are watched for writes into states (see ``_Run._watched_call``):
enough to catch a step that cycles through up to three output buffers."""


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
    ) -> None:
        self.n = n
        # Where every level copies states (MemoryStore(copy=True), DiskStore), a
        # step may work in place: start from a copy, or the first step would
        # modify the caller's x0. Elsewhere the first call shows whether f does.
        self.copies = _copies(store, "store") and _copies(disk, "disk")
        # No callable ever gets the caller's x0 (f, df, vjp, loss, a walk's consumer): the run's own copy.
        self.x = _tree.deep_copy(x0) if self.copies else _checks.private_copy(x0)
        self.params = recurrence.params  # watched with f's first calls: a step must not write into them
        self.live = 0
        self.plain = recurrence.plain_step
        self.step = recurrence.step_at()
        self.store = store
        self.disk = disk  # checkpoints stored with Store(t, disk=True); a DiskStore is made if needed
        # A disk store's byte counters are cumulative over its life: count this run's from here.
        self.disk_bytes_before = (int(getattr(disk, "bytes_written", 0)), int(getattr(disk, "bytes_read", 0)))
        self.output = output
        # The strategy's promise, enforced: the run stops before an action that would break it.
        self.tracker = _Tracker(
            n,
            output=output,
            limit=bounds.checkpoints,
            disk_limit=bounds.disk_checkpoints,
            step_limit=bounds.forward_steps,
        )
        self.claims: list[StoreProtocol] = []  # the stores this run has claimed, released when it ends
        # How many calls of f are still watched (see _watched_call); then f runs unwatched in tight loops.
        self.probes = _WATCHED_CALLS
        self.watched: list[tuple[list[Any], int]] = []  # (fingerprint, t) of each state seen so far, held weakly
        self.calls = 0
        self.peak = self.peak_bytes = self.peak_disk = 0

    def stats(self) -> Stats:
        t, disk = self.tracker, self.disk
        return Stats(
            n=self.n if self.n is not None else self.live,
            forward_steps=self.calls,
            peak_checkpoints=self.peak,
            writes=t.writes,
            reads=t.reads,
            peak_bytes=self.peak_bytes,
            peak_disk=self.peak_disk,
            disk_writes=t.disk_writes,
            disk_reads=t.disk_reads,
            disk_bytes_written=int(getattr(disk, "bytes_written", 0)) - self.disk_bytes_before[0],
            disk_bytes_read=int(getattr(disk, "bytes_read", 0)) - self.disk_bytes_before[1],
        )

    def claim(self) -> None:
        """Make the stores this run's, now that it really starts; refuse stores another run holds."""
        with _claimed_lock:
            stores = [("store", self.store)] + ([("disk", self.disk)] if self.disk is not None else [])
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
                if self.disk is not None:
                    self.disk.clear()
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
        if size > self.peak_bytes:
            self.peak_bytes = size

    def _disk(self) -> StoreProtocol:
        if self.disk is None:
            from revseq.disk import DiskStore  # only runs that store on disk need it

            self.disk = DiskStore()  # made by this run: no other run can hold it
            self.claims.append(self.disk)
        return self.disk

    def _fetch(self, t: int) -> Any:
        """x_t from memory if it is there, else from disk."""
        try:
            return self.store.get(t)
        except KeyError:
            if self.disk is None:
                raise
            return self.disk.get(t)

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
        put = self.store.put
        t = start
        while self.probes and t < stop:
            x = self._watched_call(x, t)
            t += 1
            if keep and t < stop:
                put(t, x)
        if t < stop:
            plain, step = self.plain, self.step
            if keep:
                if plain is not None:
                    for s in range(t + 1, stop):
                        x = plain(x)
                        put(s, x)
                    x = plain(x)
                else:
                    for s in range(t, stop - 1):
                        x = step(x, s)
                        put(s + 1, x)
                    x = step(x, stop - 1)
            elif plain is not None:
                for _ in range(stop - t):
                    x = plain(x)
            else:
                for s in range(t, stop):
                    x = step(x, s)
            self.calls += stop - t
        if keep:
            self._measure()
        return x

    def _put(self, action: Store, x: Any) -> None:
        if action.disk:
            disk = self._disk()
            disk.put(action.step, x)
            self.peak_disk = max(self.peak_disk, len(disk))
        else:
            self.store.put(action.step, x)
            self._measure()

    def _release(self, memory: list[int], disk: list[int]) -> None:
        """Delete what the tracker says the last Reverse or Free released, at each level."""
        for t in memory:
            self.store.delete(t)
        if disk:
            assert self.disk is not None
            for t in disk:
                self.disk.delete(t)

    def execute(self, actions: Iterable[Action]) -> Generator[tuple[int, Any], None, None]:
        """Execute ``actions``, yielding ``(t, x_t)`` for each reversed step; first ``(n, x_n)`` if output."""
        tracker = self.tracker
        check = tracker.check
        n = tracker.n
        assert n is not None  # an online run executes actions only once its length is known
        x, live = self.x, self.live
        produced = tracker.output_done  # x_n is already computed: an online sweep stopped there
        get = self.store.get if self.disk is None else self._fetch
        for index, proposed in enumerate(actions):
            action = check(index, proposed)  # raises before anything illegal runs; numpy ints made ints
            kind = type(action)
            if kind is Advance:
                x = self._advance(x, action.start, action.stop, action.keep)  # type: ignore[union-attr]
                live = action.stop  # type: ignore[union-attr]
                if live == n and self.output:
                    produced = True
                    yield n, self._kept(x)  # this schedule computes x_n itself, before reversing
            elif kind is Reverse:
                start, stop = action.start, action.stop  # type: ignore[union-attr]
                if stop == n and self.output and not produced:
                    produced = True
                    if live == n - 1:
                        # f may write into its argument, or into a buffer it returned before (x itself):
                        # where that is allowed, x_{n-1} is kept apart for its own reversal.
                        last, x = x, self._kept(x)
                    else:
                        last = get(n - 1)  # a store that copies hands out a fresh copy
                    if self.probes:
                        final = self._watched_call(last, n - 1)
                    else:
                        final = self.step(last, n - 1)
                        self.calls += 1
                    yield n, self._kept(final)
                released, released_disk = tracker.released, tracker.released_disk
                top = stop - 1
                yield top, (x if top == live else get(top))
                for t in range(top - 1, start - 1, -1):
                    yield t, get(t)
                self._release(released, released_disk)
            elif kind is Store:
                self._put(action, x)  # type: ignore[arg-type]
                if action.disk:  # type: ignore[union-attr]
                    get = self._fetch
            elif kind is Restore:
                live = action.step  # type: ignore[union-attr]
                x = get(live)
            else:  # Free: the tracker has rejected anything else
                self._release(tracker.released, tracker.released_disk)
        self.x, self.live = x, live

    def walk(self, actions: Iterable[Action]) -> Generator[tuple[int, Any], None, None]:
        """Run a whole schedule for a known ``n``.

        The stores are claimed at the first action and emptied and given
        back however the walk ends: finished, failed, closed, or dropped
        (a generator's ``finally`` runs when it is closed or collected).
        """
        self.claim()
        try:
            yield from self.execute(actions)
            self.tracker.finish()
        finally:
            self.end()

    def walk_online(
        self, strategy: OnlineStrategy, until: Callable[[int, Any], Any] | None, max_steps: int
    ) -> Generator[tuple[int, Any], None, None]:
        """Run an online strategy's forward sweep until ``until`` says stop, then its reversal."""
        self.claim()
        try:
            self._forward_until(strategy, until, max_steps)
            n = self.live
            self.tracker.settle(n)
            self.n = n
            if self.output:
                yield n, self._kept(self.x)
            held = tuple(sorted({*self.tracker.keys, *self.tracker.disk_keys}))  # both levels, as _cut_forward
            yield from self.execute(strategy_iterable(strategy, "backward(...)", strategy.backward(n, held)))
            self.tracker.finish()
        finally:
            self.end()

    def _forward_until(self, strategy: OnlineStrategy, until: Callable[[int, Any], Any] | None, max_steps: int) -> None:
        tracker = self.tracker
        x = self.x
        step = self.step
        for index, proposed in enumerate(strategy_iterable(strategy, "forward()", strategy.forward())):
            action = tracker.check(index, proposed)
            kind = type(action)
            if kind is Advance:
                for s in range(action.start, action.stop):  # type: ignore[union-attr]
                    if self.probes:
                        x = self._watched_call(x, s)
                    else:
                        x = step(x, s)
                        self.calls += 1
                    t = s + 1
                    if t >= max_steps or (until is not None and _stops(self._ask(until, t, x), t)):
                        tracker.truncate(t)
                        self.x, self.live = x, t
                        return
                self.live = action.stop  # type: ignore[union-attr]
            elif kind is Store:
                self._put(action, x)  # type: ignore[arg-type]
            elif kind is Restore:
                x = self._fetch(action.step)  # type: ignore[union-attr]
                self.live = action.step  # type: ignore[union-attr]
            elif kind is Free:  # at whichever level holds each state, as in execute()
                self._release(tracker.released, tracker.released_disk)
        raise ScheduleError(f"{strategy!r}: the forward sweep ended at x_{self.live} before the run stopped")


_RUN_CODE = frozenset(method.__code__ for method in (_Run.walk, _Run.walk_online, _Run.execute))


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
        Where checkpoints live; a fresh :class:`MemoryStore` by default. It is
        emptied when the run ends, whether it succeeds or raises.
    disk:
        Where checkpoints stored with ``Store(t, disk=True)`` live (a
        multistage schedule's); a :class:`revseq.DiskStore` in a private
        temporary directory by default, made only if the schedule needs it.
    until:
        With ``n=None``: ``until(t, x_t)`` is asked after each new state
        ``x_t`` (``t >= 1``) of the forward sweep; the first true answer
        makes ``n = t``.
    max_steps:
        With ``n=None``: the run stops at ``x_max_steps`` at the latest (a
        safety bound; ``stats.n`` says where it stopped). Needed if ``until``
        is not given."""


def backprop(
    recurrence: Recurrence,
    x0: Any,
    n: int | None,
    strategy: ReversalStrategy | None = None,
    *,
    adjoint: Any = None,
    store: StoreProtocol | None = None,
    disk: StoreProtocol | None = None,
    until: Callable[[int, Any], Any] | None = None,
    max_steps: int | None = None,
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
    pairs = walk(recurrence, x0, n, strategy, store=store, disk=disk, until=until, max_steps=max_steps)
    leaf = _tree.is_leaf(x0)
    # Each user callable's first output is checked in full (structure, shapes,
    # dtype; no broadcasting) by the `checked` variants, used for the first
    # step only; the sums are checked again at the end.
    first_adjoint, adjoint_step = recurrence.adjoint_at(leaf, checked=True), recurrence.adjoint_at(leaf)
    first_loss, loss_at = recurrence.loss_at(checked=True), recurrence.loss_at()
    # The gist's case (elementwise df of x alone, one array, no loss) gets a
    # loop of its own: it is the one where the engine's per-step overhead is
    # comparable with the step itself.
    plain_df = recurrence.df if leaf and loss_at is None and recurrence.plain_step is not None else None
    gp = total = None
    t = n
    try:
        with pairs:
            steps = pairs._pairs  # the generator itself: `pairs` wraps it with cleanup we hold via `with`
            n, state = next(steps)  # (n, x_n): the first pair
            g = seed(state)
            if first_loss is not None:
                total, gx, gp = first_loss(state, n)
                # Sums start from copies: a callable handing out one buffer each call must not change them.
                total, gp = _checks.private_copy(total), _checks.private_copy(gp)
                g = g + gx if leaf else _tree.tree_add(g, gx)
            # The first step reversed, x_{n-1}, with every output checked; then the unchecked callables
            # (the gist's plain df in a tight loop of its own).
            adjoint, loss = first_adjoint, first_loss
            for t, x in steps:
                g, gp_t = adjoint(x, t, g)
                if gp_t is not None:
                    gp = _checks.private_copy(gp_t) if gp is None else _tree.tree_add(gp, gp_t)
                if loss is not None and t:
                    value, gx, gp_t = loss(x, t)
                    total = total + value
                    g = g + gx if leaf else _tree.tree_add(g, gx)
                    if gp_t is not None:
                        gp = _tree.tree_add(gp, gp_t)
                if plain_df is not None:
                    break
                adjoint, loss = adjoint_step, loss_at
            if plain_df is not None:
                for t, x in steps:  # noqa: B007 (t names the step in the error below)
                    g = g * plain_df(x)
            stats = pairs.stats
    except (TypeError, ValueError) as exc:
        if isinstance(exc, RevseqError) or not _raised_in_revseq(exc):
            raise  # the user's own error, unchanged
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


def _check_sum(total: Any, reference: Any, what: str, name: str) -> None:
    problem = _checks.mismatch(total, reference)
    if problem is not None:
        raise StepError(
            f"the {what} summed over all steps is not shaped like {name} ({problem}): df, vjp or loss returned "
            f"a value of another shape or type at a step after the first (whose outputs were checked)"
        )


class Walk(Iterator[tuple[int, Any]]):
    """The pairs ``(t, x_t)`` a schedule delivers, lazily; see :func:`walk`.

    ``stats`` reports the cost so far. The run starts, and takes its stores,
    at the first ``next()``; they are emptied and given back when the walk
    ends, fails, is closed, leaves a ``with`` block, or is dropped, whichever
    comes first. A walk that never started touches no store.
    """

    def __init__(self, run: _Run, pairs: Generator[tuple[int, Any], None, None]) -> None:
        self._run = run
        self._pairs = pairs  # its `finally` ends the run: on exhaustion, error, close() or collection

    def __iter__(self) -> Walk:
        return self

    def __next__(self) -> tuple[int, Any]:
        return next(self._pairs)

    def close(self) -> None:
        self._pairs.close()

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
    disk: StoreProtocol | None = None,
    output: bool = True,
    until: Callable[[int, Any], Any] | None = None,
    max_steps: int | None = None,
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
    if not isinstance(output, (bool, np.bool_)):
        raise ParameterError(f"output must be a bool, got {output!r} ({type(output).__name__})")
    if disk is not None and disk is store:
        raise ParameterError(
            f"store and disk must be two different stores, got the same object twice ({store!r}): "
            f"checkpoints at the two levels share keys"
        )
    store = _check_store(store, "store")
    if disk is not None:
        disk = _check_store(disk, "disk")
    state_nbytes = _tree.nbytes(x0)
    if n is None:
        online, limit = _check_online(strategy, until, max_steps)
        sized = _sized(online, state_nbytes)
        if not isinstance(sized, OnlineStrategy):
            raise ScheduleError(f"{online!r}.sized(...) must return an online strategy, got {sized!r}")
        bounds = strategy_bounds(sized, "online_bounds()", sized.online_bounds())
        _check_fits(sized, None, bounds, store, state_nbytes, limit)
        run = _Run(None, x0, recurrence, store, output=output, bounds=bounds, disk=disk)
        return Walk(run, run.walk_online(sized, until, limit))
    if until is not None or max_steps is not None:
        raise ParameterError(f"until and max_steps go with n=None (a run of unknown length), got n={n!r}")
    n = check_int("n", n, 1)
    schedule = _sized(_check_strategy(strategy), state_nbytes).schedule(n)
    bounds = schedule.bounds()
    _check_fits(schedule.strategy, n, bounds, store, state_nbytes, n)
    run = _Run(n, x0, recurrence, store, output=output, bounds=bounds, disk=disk)
    return Walk(run, run.walk(schedule))


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
    disk: StoreProtocol | None = None,
    until: Callable[[int, Any], Any] | None = None,
    max_steps: int | None = None,
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
    return Reversal(walk(f, x0, n, strategy, store=store, disk=disk, output=False, until=until, max_steps=max_steps))


for _function in (backprop, walk, reverse):
    _function.__doc__ = (_function.__doc__ or "").format(run=_RUN_DOC.strip("\n").lstrip())
