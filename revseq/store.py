"""Where checkpoints live while a schedule runs."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from revseq import _tree

__all__ = ["MemoryStore", "Store"]


@runtime_checkable
class Store(Protocol):
    """Checkpoint storage keyed by step index.

    The engine calls ``put`` for each ``Store`` action and for states kept by
    ``Advance(keep=True)``, ``get`` for ``Restore`` and ``Reverse``, ``delete``
    for ``Free``, and ``clear`` when a run ends, however it ends. ``len``
    and ``nbytes`` are read after every write to measure the peaks.
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
    are then copied when stored and again when read back.
    ``nbytes`` counts the ``nbytes`` of every stored leaf (numpy arrays, and
    anything else that reports it).
    """

    __slots__ = ("_copy", "_data", "_nbytes")

    def __init__(self, *, copy: bool = False) -> None:
        self._copy = copy
        self._data: dict[int, Any] = {}
        self._nbytes = 0

    def put(self, key: int, state: Any) -> None:
        if self._copy:
            state = _tree.deep_copy(state)
        self._data[key] = state
        size = getattr(state, "nbytes", None)  # an array: skip the tree walk
        self._nbytes += _tree.nbytes(state) if size is None else size

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
        """Whether states are copied on the way in and out (``copy=True``)."""
        return self._copy

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def __repr__(self) -> str:
        return f"MemoryStore(copy={self._copy}, held={len(self._data)}, nbytes={self._nbytes})"
