"""Stores written from the protocol alone, shared by the fault tests."""

from __future__ import annotations

from typing import Any


class Forwarding:
    """A store (the protocol only, no base class) that hands every call to ``inner``; subclasses watch some."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def put(self, key: int, state: Any) -> None:
        self.inner.put(key, state)

    def get(self, key: int) -> Any:
        return self.inner.get(key)

    def delete(self, key: int) -> None:
        self.inner.delete(key)

    def clear(self) -> None:
        self.inner.clear()

    def __len__(self) -> int:
        return len(self.inner)

    @property
    def nbytes(self) -> int:
        return int(self.inner.nbytes)

    @property
    def copies(self) -> bool:
        return bool(getattr(self.inner, "copies", False))
