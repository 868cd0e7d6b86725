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

import functools
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


RECOMPUTE_SAMPLES = 32
"""How many states of a run of known length are fingerprinted to check that recomputing them gives them again."""

_BLOCK = 1 << 16  # elements of a state weighed at a time; the weights repeat with this period


@functools.cache
def _weights() -> np.ndarray[Any, Any]:
    """Two periods of the fingerprints' weights, in [0.5, 1.5): 1 MiB, made once (a generator of their own)."""
    weights = np.random.default_rng(_BLOCK).random(_BLOCK) + 0.5
    doubled = np.concatenate([weights, weights])  # a block may start anywhere in the period
    doubled.flags.writeable = False
    return doubled


def _blocks(a: np.ndarray[Any, Any], offset: int) -> Any:
    """``(logical offset, 1-D piece)`` covering ``a`` in C order, each piece of at most ``_BLOCK`` elements,
    copying at most a piece at a time (a view where ``a`` is contiguous)."""
    if a.ndim <= 1 or a.flags.c_contiguous:
        flat = a.reshape(-1)  # a view where a is contiguous or 1-D
        for i in range(0, flat.size, _BLOCK):
            yield offset + i, flat[i : i + _BLOCK]
    elif a.size <= _BLOCK:
        yield offset, a.reshape(-1)  # a copy of at most a block
    else:
        step = a[0].size
        for k, sub in enumerate(a):
            yield from _blocks(sub, offset + k * step)


class Recomputations:
    """Check that recomputing a state gives what the first sweep gave: a step that is not deterministic is refused.

    A step drawing random numbers of its own, or reading a counter it
    advances, makes a recomputed ``x_t`` differ from the one the first sweep
    made, and the gradient is then that of another sequence, without a
    word. So the states at every ``every``-th step (about
    :data:`RECOMPUTE_SAMPLES` of them for a run of known length; for a run
    of unknown length, every 64th at first, the stride doubling whenever
    twice as many are held) get a fingerprint when first made: per numpy leaf, a
    dot product with fixed weights in ``[0.5, 1.5)`` (drawn from a generator
    of its own, never the caller's) and the same of the absolute values as
    its scale. Each later computation of such a state must agree to 1000
    machine epsilons of its dtype times that scale (floating-point results
    that are not bitwise reproducible, as threaded BLAS can give, pass), or
    :class:`StepError` is raised naming the step. States that are not numpy
    arrays (a dask array, a tensor) are not fingerprinted: computing one
    would pull the state in. Nor is anything checked when a store is lossy
    (a ``CompressedStore`` with ZFP: recomputing from a checkpoint read back
    within a tolerance rightly gives other states). The cost is two dot
    products per sampled state made first, one per sampled state recomputed;
    nothing per step.
    """

    __slots__ = ("every", "grow", "prints")

    def __init__(self, n: int | None, *, enabled: bool = True) -> None:
        # Off where a store is lossy (a CompressedStore with ZFP): a state recomputed from a checkpoint read
        # back within the codec's tolerance differs from the first sweep's, rightly.
        self.every = (max(1, n // RECOMPUTE_SAMPLES) if n else 64) if enabled else 1 << 62
        self.grow = n is None and enabled  # a run of unknown length: the stride doubles as the samples pile up
        self.prints: dict[int, list[tuple[float, float, float]]] = {}

    def _dots(self, leaf: np.ndarray[Any, Any], scale: bool) -> tuple[float, float]:
        """``leaf``'s weighted sum and (with ``scale``) that of its absolute values.

        The element at logical (C order) position ``p`` weighs ``W[p % _BLOCK]``,
        whatever the array's memory layout, so a state read back in another
        order gives the same sums; blocks of at most ``_BLOCK`` elements are
        weighed at a time, so no temporary and no weight is larger than a block.
        """
        doubled = _weights()
        if leaf.dtype.kind == "c":
            leaf = np.stack([leaf.real, leaf.imag], axis=-1)
        total = size = 0.0
        for offset, block in _blocks(leaf, 0):
            start = offset % _BLOCK
            weight = doubled[start : start + block.size]
            total += float(np.dot(block, weight))
            if scale:
                size += float(np.dot(np.abs(block), weight))
        return total, size

    def _of(self, x: Any, scale: bool) -> list[tuple[float, float, float]] | None:
        prints = []
        for leaf in _tree.leaves(x):
            if isinstance(leaf, (float, complex, np.generic)):
                leaf = np.asarray(leaf)
            if not isinstance(leaf, np.ndarray) or leaf.dtype.kind not in "fc":
                return None  # not ours to read (a lazy or foreign array), or nothing to round
            total, size = self._dots(leaf, scale)
            prints.append((total, size, float(np.finfo(leaf.dtype).eps)))
        return prints

    def seen(self, t: int, x: Any) -> None:
        """``x`` is ``x_t``, a sampled state (``t % every == 0``): record its fingerprint, or check it."""
        known = self.prints.get(t)
        if known is None:
            made = self._of(x, True)
            if made is not None:
                self.prints[t] = made
                if self.grow and len(self.prints) > 2 * RECOMPUTE_SAMPLES:  # keep every other sample
                    self.every *= 2
                    self.prints = {s: p for s, p in self.prints.items() if not s % self.every}
            return
        now = self._of(x, False)
        if now is None or len(now) != len(known):
            return
        for (total, scale, eps), (again, _, _) in zip(known, now, strict=True):
            if not abs(again - total) <= 1000 * eps * scale:  # NaN never agrees: a NaN state is refused too
                if np.isnan(total) and np.isnan(again):
                    continue
                raise StepError(
                    f"x_{t} was different when recomputed than when first computed (a weighted sum of its "
                    f"elements {total!r} then, {again!r} now): f is not a function of its arguments alone (it "
                    f"draws random numbers of its own, reads a counter it advances, or depends on other state "
                    f"that changes), so the gradient would be that of another sequence; draw any noise from a "
                    f"generator seeded by the step index t (f(x, t)), and keep f free of hidden state; or a store "
                    f"gave a checkpoint back changed: a store that is lossy on purpose says so with lossless = False"
                )
