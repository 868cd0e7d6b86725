"""Where checkpoints live while a schedule runs."""

from __future__ import annotations

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
    copies; without the attribute a store is taken to keep references.
    """

    def put(self, key: int, state: Any) -> None: ...

    def get(self, key: int) -> Any: ...

    def delete(self, key: int) -> None: ...

    def clear(self) -> None: ...

    def __len__(self) -> int: ...

    @property
    def nbytes(self) -> int: ...


class MemoryStore:
    """Checkpoints in RAM, in a dict.

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

    __slots__ = ("_copy", "_data", "_nbytes")

    def __init__(self, *, copy: bool = False) -> None:
        self._copy = copy
        self._data: dict[int, Any] = {}
        self._nbytes = 0

    def put(self, key: int, state: Any) -> None:
        if self._copy:
            state = _tree.deep_copy(state)
        if type(state) is _NDARRAY:  # the usual state: the fast path (a put per step for StoreAll)
            if state.base is not None:  # a view: of a larger buffer?
                state = _own(state)
            self._nbytes += state.nbytes
        else:
            state = _tree.tree_map(_own, state)
            self._nbytes += _tree.nbytes(state)
        self._data[key] = state

    def get(self, key: int) -> Any:
        state = self._data[key]
        # A step that works in place would otherwise modify the checkpoint
        # through the live state restored from it.
        return _tree.deep_copy(state) if self._copy else state

    def delete(self, key: int) -> None:
        self._nbytes -= _tree.nbytes(self._data.pop(key))

    def clear(self) -> None:
        self._data.clear()
        self._nbytes = 0

    def __len__(self) -> int:
        return len(self._data)

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
        return f"MemoryStore(copy={self._copy}, held={len(self._data)}, nbytes={self._nbytes})"


_NDARRAY = np.ndarray  # a module constant: one lookup fewer on the hot path


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
