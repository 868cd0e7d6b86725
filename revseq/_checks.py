"""Checks of what user callables return, shared by the engine and the recurrence.

Every value a user callable returns is checked against what it must be
before it is used: a ``vjp`` returning ``None``, a ``df`` of another shape
(numpy would broadcast it into a wrong gradient without a word), a loss
gradient missing a key. The checks run in full on the first call of each
callable, where they cost nothing measurable; the engine checks the
accumulated gradients once more at the end of a run (see docs/guide.md,
"What is checked, and when").
"""

from __future__ import annotations

import weakref
import zlib
from typing import Any

import numpy as np

from revseq import _tree
from revseq.errors import StepError

__all__ = [
    "check_like",
    "check_scalar",
    "fingerprint",
    "holds",
    "matches",
    "mismatch",
    "private_copy",
    "refers_to",
    "same_prints",
]

_REAL_KINDS = frozenset("iuf")
_COMPLEX_KINDS = frozenset("iufc")


def _kind(value: Any) -> str | None:
    """The numpy dtype kind of a leaf, or None where it has no numpy dtype (a tensor of another library)."""
    dtype = getattr(value, "dtype", None)
    try:
        return np.dtype(dtype).kind if dtype is not None else np.asarray(value).dtype.kind
    except (TypeError, ValueError):
        return None


def _leaf_text(value: Any) -> str:
    if value is None:
        return "None"
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is None or dtype is None:
        return f"{type(value).__name__} {value!r:.60}"
    return f"shape {tuple(shape)} {dtype}"


def mismatch(value: Any, reference: Any) -> str | None:
    """Why ``value`` is not shaped like ``reference``, or None if it is.

    Shaped like means: the same containers (tuples and lists interchangeable,
    dicts with the same keys), and at each leaf the same shape and a numeric
    dtype (integers or floats; complex only where the reference is complex).
    No broadcasting: a leaf of shape ``(1,)`` where ``(3,)`` is expected is
    a mismatch.
    """
    if isinstance(reference, dict):
        if not isinstance(value, dict):
            return f"{_leaf_text(value) if _tree.is_leaf(value) else type(value).__name__} where a dict was expected"
        if value.keys() != reference.keys():
            return f"keys {list(value)} where {list(reference)} were expected"
        for key, ref in reference.items():
            problem = mismatch(value[key], ref)
            if problem is not None:
                return f"[{key!r}]: {problem}"
        return None
    if isinstance(reference, (tuple, list)):
        if not isinstance(value, (tuple, list)) or len(value) != len(reference):
            what = _leaf_text(value) if _tree.is_leaf(value) else f"a {type(value).__name__} of {len(value)}"
            return f"{what} where a {type(reference).__name__} of {len(reference)} was expected"
        for index, (item, ref) in enumerate(zip(value, reference, strict=True)):
            problem = mismatch(item, ref)
            if problem is not None:
                return f"[{index}]: {problem}"
        return None
    if value is None or not _tree.is_leaf(value):
        return f"{'None' if value is None else type(value).__name__} where an array was expected"
    shape, expected = np.shape(value), np.shape(reference)
    if shape != expected:
        return f"{_leaf_text(value)} where shape {expected} was expected (numpy would broadcast it)"
    kind = _kind(value)
    if kind is not None:
        allowed = _COMPLEX_KINDS if _kind(reference) == "c" else _REAL_KINDS
        if kind not in allowed:
            number = "complex" if allowed is _COMPLEX_KINDS else "real"
            return f"{_leaf_text(value)} where a {number} number was expected"
    return None


def check_like(value: Any, reference: Any, what: str, name: str, t: int | None) -> None:
    """Raise :class:`StepError` if ``value`` (``what``, returned by ``name``) is not shaped like ``reference``."""
    problem = mismatch(value, reference)
    if problem is not None:
        at = "" if t is None else f" at step t={t}"
        raise StepError(
            f"{name} returned {what}{at} that is not shaped like {_describe(reference)}: {problem}; "
            f"it must have the same structure, shapes and a numeric dtype"
        )


def check_scalar(value: Any, name: str, t: int) -> None:
    """Raise :class:`StepError` unless ``value`` (a loss value) is one real number."""
    kind = _kind(value) if value is not None and _tree.is_leaf(value) else None
    if kind not in _REAL_KINDS or np.ndim(value) != 0:
        raise StepError(f"{name} returned a value at step t={t} that is not one real number: {_leaf_text(value)}")


def _describe(reference: Any) -> str:
    return str(_tree.describe(reference)).replace("'", "")


def private_copy(tree: Any) -> Any:
    """``tree`` with every numpy array copied (other leaves, immutable or foreign, as they are)."""
    return _tree.tree_map(lambda a: a.copy() if isinstance(a, np.ndarray) else a, tree)


def _bits(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


_COPY_LIMIT = 1 << 20
"""Leaves up to 1 MiB are fingerprinted by a copy (exact); larger ones by a CRC-32 of their bytes
(about 2 GB/s, and no memory), so that watching a large state costs no state-sized copy."""


def fingerprint(tree: Any) -> list[tuple[Any, Any]]:
    """What :func:`matches` compares ``tree``'s numpy leaves with later, to see whether anything wrote into them.

    Each leaf is held by a weak reference: a fingerprint keeps nothing
    alive, and a leaf that nothing holds any more is not compared (no write
    into it can matter).
    """
    # Other leaves are immutable (numbers), foreign (a tensor), or without bits to compare (objects).
    return [
        (weakref.ref(leaf), leaf.copy() if leaf.nbytes <= _COPY_LIMIT else zlib.crc32(_bits(leaf).data))
        for leaf in _arrays(tree)
    ]


def _same(leaf: np.ndarray[Any, Any], print_: Any) -> bool:
    """Whether ``leaf`` holds what ``print_`` (a copy of it, or a CRC-32 of its bytes) recorded, bit for bit."""
    if isinstance(print_, np.ndarray):
        return (
            leaf.shape == print_.shape
            and leaf.dtype == print_.dtype
            and bool(np.array_equal(_bits(leaf), _bits(print_)))  # bits: NaNs compare equal to themselves
        )
    return bool(zlib.crc32(_bits(leaf).data) == print_)


def matches(prints: list[tuple[Any, Any]]) -> bool:
    """Whether every leaf fingerprinted by :func:`fingerprint` and still alive holds what it held then."""
    for ref, print_ in prints:
        leaf = ref()
        if leaf is not None and not _same(leaf, print_):
            return False
    return True


def _arrays(tree: Any) -> list[np.ndarray[Any, Any]]:
    """The leaves :func:`fingerprint` takes, in its order."""
    return [leaf for leaf in _tree.leaves(tree) if isinstance(leaf, np.ndarray) and not leaf.dtype.hasobject]


def refers_to(prints: list[tuple[Any, Any]], tree: Any) -> bool:
    """Whether ``prints`` is a fingerprint of ``tree`` itself (its very arrays, not equal ones)."""
    arrays = _arrays(tree)
    return len(arrays) == len(prints) and all(ref() is a for (ref, _), a in zip(prints, arrays, strict=True))


def same_prints(tree: Any, prints: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """A fingerprint of ``tree`` (a copy of the tree ``prints`` was taken of, as it still is) without new copies."""
    return [(weakref.ref(a), p) for a, (_, p) in zip(_arrays(tree), prints, strict=True)]


def holds(tree: Any, prints: list[tuple[Any, Any]]) -> bool:
    """Whether ``tree`` (a copy of the fingerprinted tree, say) holds what the fingerprint recorded."""
    leaves = _arrays(tree)
    return len(leaves) == len(prints) and all(_same(leaf, p) for leaf, (_, p) in zip(leaves, prints, strict=True))
