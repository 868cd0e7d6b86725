"""Where checkpoints live while a schedule runs."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from operator import attrgetter
from typing import Any, Protocol, runtime_checkable

import numpy as np

from revseq import _tree

__all__ = ["MemoryStore", "Store"]


@runtime_checkable
class Store(Protocol):
    """Checkpoint storage keyed by step index.

    The engine calls ``put`` for each ``Store`` action and for states kept by
    ``Advance(keep=True)``, ``get`` for ``Restore`` and ``Reverse``, ``delete``
    for ``Free``, and ``clear`` when a run ends, however it ends. ``len``
    and ``nbytes`` are read after every write to measure the peaks.

    A store belongs to one run at a time. A store may also have a boolean
    ``copies`` attribute: true if ``put`` keeps a copy and ``get`` hands out
    a fresh one, so that a step modifying its argument in place cannot
    change a checkpoint. The engine allows such steps only where every store
    copies; without the attribute a store is taken to keep references. A
    store may also have a ``settle(value)`` method, for lazy states (dask
    arrays: :class:`revseq.dask.ClusterStore`): the engine then settles
    ``x0``, each state ``f`` returns and ``backprop``'s sums after each
    reversed step, and uses what it returns.
    """

    def put(self, key: int, state: Any) -> None: ...

    def get(self, key: int) -> Any: ...

    def delete(self, key: int) -> None: ...

    def clear(self) -> None: ...

    def __len__(self) -> int: ...

    @property
    def nbytes(self) -> int: ...


class MemoryStore:
    """Checkpoints in RAM.

    By default a checkpoint is a reference to the state f returned, not a
    copy: numpy steps return new arrays, so this is both correct and free.
    If your step modifies its argument in place, pass ``copy=True``: states
    are then copied when stored and again when read back (the engine
    refuses an in-place step on a store without copies; see ``copies``).

    A checkpoint holds only its own bytes: an array that is a view into a
    larger buffer (a step returning ``buf[:100]`` of a 1 MiB ``buf``) is
    copied when stored, or the whole buffer would stay alive behind it and
    a byte budget would not hold. ``nbytes`` counts the ``nbytes`` of every
    stored leaf (numpy arrays, and anything else that reports it), which is
    then what the checkpoints really occupy.
    """

    # Checkpoints put one at a time live in a dict. The engine stores
    # the states a sweep keeps (Advance(keep=True): StoreAll's n of them) as one run, a list of
    # consecutive steps, and takes a reversal's states back as slices: a step then costs the store no
    # call and no dict entry.
    __slots__ = ("_copy", "_count", "_data", "_nbytes", "_runs", "_starts")

    def __init__(self, *, copy: bool = False) -> None:
        self._copy = copy
        self._data: dict[int, Any] = {}
        self._starts: list[int] = []  # the first key of each run, sorted
        self._runs: list[list[Any]] = []  # each run's states, keys starts[i], starts[i] + 1, ...
        self._count = 0  # states held, in the dict and the runs
        self._nbytes = 0

    def put(self, key: int, state: Any) -> None:
        if self._copy:
            state = _tree.deep_copy(state)
        data = self._data
        if key in data or (self._starts and self._run_of(key) >= 0):  # stored again: the old state goes
            self._delete_range(key, key + 1)
        state, size = _owned(state)
        self._nbytes += size
        data[key] = state
        self._count += 1

    def get(self, key: int) -> Any:
        try:
            state = self._data[key]
        except KeyError:
            i = self._run_of(key)
            if i < 0:
                raise
            state = self._runs[i][key - self._starts[i]]
        # A step that works in place would otherwise modify the checkpoint
        # through the live state restored from it.
        return _tree.deep_copy(state) if self._copy else state

    def delete(self, key: int) -> None:
        if not self._holds(key):
            raise KeyError(key)
        self._delete_range(key, key + 1)

    def clear(self) -> None:
        self._data.clear()
        self._starts.clear()
        self._runs.clear()
        self._count = self._nbytes = 0

    def __len__(self) -> int:
        return self._count

    @property
    def copies(self) -> bool:
        """Whether states are copied on the way in and out (``copy=True``).

        The engine reads it: a step may modify its argument in place only
        where every store copies.
        """
        return self._copy

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def __repr__(self) -> str:
        return f"MemoryStore(copy={self._copy}, held={self._count}, nbytes={self._nbytes})"

    # -- the engine's bulk path: on this class exactly, without copy (a subclass's put is called per state)

    def _run_of(self, key: int) -> int:
        """The index of the run holding ``key``, or -1."""
        i = bisect_right(self._starts, key) - 1
        return i if i >= 0 and key - self._starts[i] < len(self._runs[i]) else -1

    def _holds(self, key: int) -> bool:
        return key in self._data or self._run_of(key) >= 0

    def _held(self) -> list[int]:
        """Every key held, sorted."""
        runs = (range(first, first + len(run)) for first, run in zip(self._starts, self._runs, strict=True))
        return sorted([*self._data, *(key for keys in runs for key in keys)])

    def _put_run(self, start: int, states: list[Any]) -> None:
        """Store ``states`` as ``x_start, x_{start+1}, ...``, none of them held yet (the list is kept)."""
        self._nbytes += _owned_run(states)
        self._count += len(states)
        i = bisect_right(self._starts, start)
        self._starts.insert(i, start)
        self._runs.insert(i, states)

    def _pop_block(self, start: int, stop: int) -> list[tuple[int, list[Any]]]:
        """Delete the states ``x_start .. x_{stop-1}``, all held but perhaps the last, and return them as
        pieces ``(top, [x_top, x_{top-1}, ...])``, the highest first (a KeyError if one is missing)."""
        data = self._data
        if not self._starts:  # single states only (a binomial schedule's reversals): one piece
            t = stop - 1 if stop - 1 in data else stop - 2
            if t < start:
                return []
            states = list(map(data.pop, range(t, start - 1, -1)))
            self._forget((states,))
            return [(t, states)]
        cut = self._cut_runs(start, stop)
        t = stop - 1
        if t not in data and not (cut and cut[-1][0] + len(cut[-1][1]) == stop):
            t -= 1  # x_{stop-1} is not held (it is the live state)
        pieces: list[tuple[int, list[Any]]] = []
        for first, run in reversed(cut):
            last = first + len(run) - 1
            if t > last:  # single states between this run and the one above
                pieces.append((t, list(map(data.pop, range(t, last, -1)))))
            run.reverse()
            pieces.append((last, run))
            t = first - 1
        if t >= start:
            pieces.append((t, list(map(data.pop, range(t, start - 1, -1)))))
        self._forget([states for _, states in pieces])
        return pieces

    def _delete_range(self, start: int, stop: int) -> None:
        """Delete every state held with a key in ``start .. stop-1`` (others may be held elsewhere)."""
        data = self._data
        gone = [states for _, states in self._cut_runs(start, stop)] if self._starts else []
        keys = range(start, stop) if stop - start <= len(data) else [k for k in data if start <= k < stop]
        gone.append([data.pop(k) for k in keys if k in data])
        self._forget(gone)

    def _forget(self, gone: Sequence[list[Any]]) -> None:
        """Count out the states just taken from the store, in groups (nothing to add up once it is empty)."""
        self._count -= sum(map(len, gone))
        self._nbytes = self._nbytes - sum(map(_size, gone)) if self._count else 0

    def _cut_runs(self, start: int, stop: int) -> list[tuple[int, list[Any]]]:
        """Take the parts of runs in ``start .. stop-1`` out of them; return them as ``(first key, states)``."""
        starts, runs = self._starts, self._runs
        cut: list[tuple[int, list[Any]]] = []
        if not starts:
            return cut
        i = max(bisect_right(starts, start) - 1, 0)
        while i < len(starts) and starts[i] < stop:
            first, run = starts[i], runs[i]
            lo, hi = max(start - first, 0), min(stop - first, len(run))
            if lo >= hi:  # the run ends before start
                i += 1
                continue
            cut.append((first + lo, run[lo:hi]))
            rest = run[hi:]
            del run[lo:]
            if rest:  # what follows the cut part becomes a run of its own
                starts.insert(i + 1, first + hi)
                runs.insert(i + 1, rest)
            if not run:
                del starts[i], runs[i]
            else:
                i += 1
        return cut


def _owned(state: Any) -> tuple[Any, int]:
    """``state`` as a :class:`MemoryStore` keeps it (a view of a larger buffer copied), and the bytes it holds."""
    if type(state) is _NDARRAY:  # the usual state: the fast path
        if state.base is not None:  # a view: of a larger buffer?
            state = _own(state)
        return state, state.nbytes
    if isinstance(state, np.generic):  # a numpy scalar (np.sin of a 0-d array returns one)
        return state, state.nbytes
    state = _tree.tree_map(_own, state)
    return state, _tree.nbytes(state)


def _owned_run(states: list[Any]) -> int:
    """Make each of ``states`` what a :class:`MemoryStore` keeps, in place; return the bytes they hold."""
    if not all(issubclass(kind, np.generic) for kind in set(map(type, states))):  # scalars own their bytes
        for i, state in enumerate(states):
            if type(state) is _NDARRAY:
                if state.base is not None:
                    states[i] = _own(state)
            elif not isinstance(state, np.generic):
                states[i] = _tree.tree_map(_own, state)
    return _size(states)


def _size(states: list[Any]) -> int:
    """The bytes ``states`` hold: ``sum(map(_tree.nbytes, states))``, faster where each reports ``nbytes``."""
    try:
        return int(sum(map(_NBYTES, states)))
    except AttributeError:  # a tuple, list or dict of arrays
        return sum(map(_tree.nbytes, states))


_NDARRAY = np.ndarray  # a module constant: one lookup fewer on the hot path
_NBYTES = attrgetter("nbytes")


def _own(leaf: Any) -> Any:
    """``leaf`` itself, or a compact copy if it is a numpy view into a buffer larger than itself."""
    base = getattr(leaf, "base", None)
    if base is None or not isinstance(leaf, np.ndarray):
        return leaf
    try:
        held = memoryview(base).nbytes  # ndarray, bytes, mmap: whatever the view keeps alive
    except TypeError:  # a buffer whose size is not known: copy to be sure of the bytes held
        return leaf.copy()
    return leaf.copy() if held > leaf.nbytes else leaf
