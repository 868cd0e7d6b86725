"""Compressed checkpoints: a store layer that compresses every array of a state with a numcodecs codec.

``CompressedStore(inner, codec)`` compresses each numpy array of a state on
``put`` and decompresses it on ``get``, keeping the compressed bytes in an
inner store (a :class:`~revseq.MemoryStore` by default, or a
:class:`~revseq.DiskStore`). Its ``nbytes`` counts compressed bytes, so a
byte budget (``BinomialCheckpointing(max_bytes=...)``) holds as many
checkpoints as fit compressed: the engine sizes it with ``x0``'s compressed
size (see :meth:`CompressedStore.stored_nbytes`). Needs the ``compress``
extra: ``pip install 'revseq[compress]'`` (numcodecs, and zfpy for ZFP).
docs/storage.md, "Compressed checkpoints", has the guarantees and the costs.
"""

from __future__ import annotations

import importlib
import itertools
import math
import weakref
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from revseq import _tree
from revseq.errors import ParameterError, StoreError
from revseq.store import MemoryStore
from revseq.store import Store as StoreProtocol

__all__ = ["CompressedStore"]

# Codecs whose decoded bytes are exactly those encoded (numcodecs codec_id); any other is taken to be lossy.
_LOSSLESS = frozenset({"blosc", "zstd", "lz4", "zlib", "gzip", "bz2", "lzma"})
# ZFP compresses floating-point arrays of 1 to 4 dimensions, in C order, and nothing else.
_ZFP_DTYPES = frozenset({np.dtype(np.float32), np.dtype(np.float64)})
_SHORTHANDS = ("blosc", "zstd", "lz4")


def _numcodecs() -> Any:
    """The numcodecs module, or an error naming the extra that installs it."""
    try:
        return importlib.import_module("numcodecs")
    except ModuleNotFoundError as error:  # only a missing numcodecs; a broken install keeps its own message
        if error.name != "numcodecs":
            raise
        raise ModuleNotFoundError(
            "revseq.CompressedStore needs numcodecs (and zfpy for ZFP): pip install 'revseq[compress]'",
            name=error.name,
        ) from None


def _codec(codec: Any) -> Any:
    """A numcodecs codec from an instance or one of the shorthands."""
    numcodecs = _numcodecs()
    if isinstance(codec, str):
        if codec == "blosc":
            return numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.SHUFFLE)
        if codec == "zstd":
            return numcodecs.Zstd(level=3)
        if codec == "lz4":
            return numcodecs.LZ4()
        raise ParameterError(
            f"codec must be a numcodecs codec or one of {', '.join(map(repr, _SHORTHANDS))}, got {codec!r}; "
            f"for lossy compression pass numcodecs.ZFPY(tolerance=...)"
        )
    if isinstance(codec, type) or not isinstance(codec, numcodecs.abc.Codec):
        what = f"the class {codec.__name__}" if isinstance(codec, type) else f"{codec!r} ({type(codec).__name__})"
        raise ParameterError(
            f"codec must be a numcodecs codec instance (numcodecs.Blosc(), numcodecs.ZFPY(tolerance=1e-6), ...) "
            f"or one of {', '.join(map(repr, _SHORTHANDS))}, got {what}"
        )
    return codec


class _Leaf:
    """What the store keeps in memory about one compressed array: enough to rebuild and check it."""

    __slots__ = ("crc", "dtype", "fortran", "index", "raw", "shape", "size")

    def __init__(self, index: int, array: np.ndarray[Any, Any], fortran: bool, size: int, crc: int) -> None:
        self.index = index  # its place in the tuple of byte arrays put in the inner store
        self.shape = array.shape
        self.dtype = array.dtype
        self.fortran = fortran
        self.raw = array.nbytes
        self.size = size  # compressed bytes
        self.crc = crc  # CRC-32 of the compressed bytes


class _Entry:
    """One checkpoint: its structure (with _Leaf slots, scalars kept as they are) and its byte counts."""

    __slots__ = ("nbytes", "raw", "tree")

    def __init__(self, tree: Any, nbytes: int, raw: int) -> None:
        self.tree = tree
        self.nbytes = nbytes  # bytes held: compressed arrays, plus scalars kept uncompressed
        self.raw = raw  # the state's own nbytes


class CompressedStore:
    """Checkpoints compressed with a numcodecs codec, held in an inner store.

    Each numpy array of a state (an array, or a tuple, list, dict or
    namedtuple of them) is compressed on ``put`` and decompressed on
    ``get`` into a new array of the same shape, dtype and memory order.
    Numpy scalars and Python numbers are kept as they are, uncompressed.

    Parameters
    ----------
    inner:
        Where the compressed bytes go: a new :class:`~revseq.MemoryStore` if
        ``None``, or an empty store of yours, such as a
        :class:`~revseq.DiskStore`. It then belongs to this store for as
        long as this store lives: no run may use it directly meanwhile, nor
        may a second ``CompressedStore`` wrap it.
    codec:
        A numcodecs codec instance: lossless ``numcodecs.Blosc(...)``,
        ``Zstd(...)``, ``LZ4()``, or lossy ``numcodecs.ZFPY(tolerance=t)``
        (each value comes back within ``t``; float32 and float64 arrays of
        1 to 4 dimensions only). Or a shorthand: ``"blosc"`` (the default:
        Blosc with zstd, level 3, byte shuffle), ``"zstd"`` (level 3),
        ``"lz4"``.

    With a byte budget the engine plans with ``x0``'s compressed size
    (:meth:`stored_nbytes`): later states may compress worse, so the number
    of checkpoints is a hard bound but their bytes are not, unless this
    store is given ``max_bytes``: a ``put`` that would hold more raises a
    :class:`~revseq.errors.StoreError` and ends the run.

    >>> import numpy as np, revseq
    >>> store = revseq.CompressedStore(codec="lz4")
    >>> x0 = np.zeros(10_000)
    >>> rec = revseq.Recurrence(np.sin, np.cos)
    >>> out = revseq.backprop(rec, x0, 100, revseq.BinomialCheckpointing(max_bytes=8 * 10_000 * 5), store=store)
    >>> out.stats.peak_checkpoints > 5, store.ratio > 100
    (True, True)
    """

    def __init__(
        self, inner: StoreProtocol | None = None, *, codec: Any = "blosc", max_bytes: int | None = None
    ) -> None:
        self._codec = _codec(codec)
        self.lossless = str(getattr(self._codec, "codec_id", "")) in _LOSSLESS
        self._zfp = getattr(self._codec, "codec_id", None) == "zfpy"
        if max_bytes is not None and (
            isinstance(max_bytes, (bool, np.bool_)) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 1
        ):
            raise ParameterError(f"max_bytes must be an int >= 1 or None, got {max_bytes!r}")
        self.max_bytes = None if max_bytes is None else int(max_bytes)
        self._inner = self._adopt(inner)
        self._entries: dict[int, _Entry] = {}
        self._nbytes = self._raw_nbytes = 0
        self.raw_bytes_put = self.bytes_put = 0  # cumulative, over the store's life (clear() keeps them)
        self.puts = self.gets = 0

    def _adopt(self, inner: StoreProtocol | None) -> StoreProtocol:
        if inner is None:
            return MemoryStore()
        if isinstance(inner, type) or not isinstance(inner, StoreProtocol):
            raise ParameterError(
                f"inner must be a store instance (MemoryStore(), DiskStore(...)) or None, got {inner!r}"
            )
        if isinstance(inner, CompressedStore):
            raise ParameterError("inner must not be a CompressedStore: compressing twice gains nothing")
        from revseq import engine  # here: the engine's register of stores in use

        with engine._claimed_lock:
            engine._check_free(inner, "inner")  # in use by a run, or holding states: refused
            # The inner store is this store's from now on: a run handed it directly is refused, as if
            # it were in use, until this store is garbage-collected.
            engine._claimed[id(inner)] = "a CompressedStore wraps it"
        weakref.finalize(self, _release, id(inner))
        return inner

    # -- the Store protocol

    def put(self, key: int, state: Any) -> None:
        pieces: list[np.ndarray[Any, Any]] = []
        leaves: list[Any] = []
        tree = _tree.tree_map(lambda leaf: self._encode(key, leaf, state, pieces, leaves), state)
        size, raw = _sizes(pieces, leaves)
        if key in self._entries:  # stored again: the old state goes first
            self.delete(key)
        if self.max_bytes is not None and self._nbytes + size > self.max_bytes:
            raise StoreError(
                f"could not store checkpoint x_{key}: it compressed to {size} bytes ({raw} raw), and the store, "
                f"holding {self._nbytes} bytes in {len(self)} checkpoints, would then exceed max_bytes="
                f"{self.max_bytes}; the states compress worse than x_0 did when the budget was planned: give "
                f"more max_bytes, or plan with a smaller budget than the store's"
            )
        self._inner.put(key, tuple(pieces))
        self._entries[key] = _Entry(tree, size, raw)
        self._nbytes += size
        self._raw_nbytes += raw
        self.raw_bytes_put += raw
        self.bytes_put += size
        self.puts += 1

    def get(self, key: int) -> Any:
        entry = self._entries[key]  # KeyError if not held, as a dict
        try:
            pieces = self._inner.get(key)
        except KeyError as exc:
            raise StoreError(f"could not read checkpoint x_{key}: the inner store {self._inner!r} lost it") from exc
        if not isinstance(pieces, tuple) or not all(isinstance(p, np.ndarray) for p in pieces):
            raise StoreError(
                f"could not read checkpoint x_{key}: the inner store returned {type(pieces).__name__}, "
                f"not the tuple of byte arrays put there"
            )
        self.gets += 1
        return _tree.tree_map(lambda leaf: self._decode(key, leaf, pieces), entry.tree)

    def delete(self, key: int) -> None:
        entry = self._entries[key]  # KeyError if not held
        self._inner.delete(key)
        del self._entries[key]
        self._nbytes -= entry.nbytes
        self._raw_nbytes -= entry.raw

    def clear(self) -> None:
        try:
            self._inner.clear()
        finally:
            self._entries.clear()
            self._nbytes = self._raw_nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes held now: the compressed arrays, and the scalars kept as they are."""
        return self._nbytes

    @property
    def copies(self) -> bool:
        """Always true: a state is encoded on ``put`` and decoded into new arrays on ``get``."""
        return True

    # -- measures

    @property
    def inner(self) -> StoreProtocol:
        """The store holding the compressed bytes."""
        return self._inner

    @property
    def codec(self) -> Any:
        """The numcodecs codec."""
        return self._codec

    @property
    def raw_nbytes(self) -> int:
        """What the checkpoints held now would take uncompressed (their ``nbytes``)."""
        return self._raw_nbytes

    @property
    def ratio(self) -> float:
        """Uncompressed over compressed bytes of everything put so far (``nan`` before the first put)."""
        return self.raw_bytes_put / self.bytes_put if self.bytes_put else math.nan

    def stored_nbytes(self, state: Any) -> int:
        """The bytes ``state`` would take in this store: it is compressed, and nothing is kept.

        The engine sizes a byte budget (``max_bytes=``, ``ram_bytes=``) with
        this, for ``x0``, instead of ``x0``'s ``nbytes``: one compression of
        ``x0`` per run. Later states may compress better or worse.
        """
        pieces: list[np.ndarray[Any, Any]] = []
        leaves: list[Any] = []
        _tree.tree_map(lambda leaf: self._encode(0, leaf, state, pieces, leaves), state)
        return _sizes(pieces, leaves)[0]

    def __repr__(self) -> str:
        return (
            f"CompressedStore({self._inner!r}, codec={self._codec!r}, held={len(self)}, nbytes={self._nbytes}, "
            f"raw_nbytes={self._raw_nbytes})"
        )

    # -- one leaf

    def _encode(self, key: int, leaf: Any, state: Any, pieces: list[np.ndarray[Any, Any]], leaves: list[Any]) -> Any:
        """Compress ``leaf`` into ``pieces`` and return its _Leaf; a scalar is returned as it is."""
        if isinstance(leaf, (np.generic, bool, int, float, complex)):
            leaves.append(leaf)
            return leaf
        if not isinstance(leaf, np.ndarray) or isinstance(leaf, np.ma.MaskedArray) or leaf.dtype.hasobject:
            what = type(leaf).__module__ + "." + type(leaf).__qualname__
            if isinstance(leaf, np.ndarray):
                what = f"an array of dtype {leaf.dtype}" if leaf.dtype.hasobject else "a masked array"
            raise _leaf_error(key, len(leaves), state, what)
        fortran = leaf.ndim > 1 and leaf.flags.f_contiguous and not leaf.flags.c_contiguous
        data = np.ascontiguousarray(leaf.T if fortran else leaf)  # a view unless it was not contiguous
        if self._zfp and (data.dtype not in _ZFP_DTYPES or not 1 <= data.ndim <= 4):
            what = f"an array of dtype {data.dtype} and {data.ndim} dimensions"
            raise _leaf_error(
                key, len(leaves), state, what, "ZFP compresses float32 and float64 arrays of 1 to 4 dimensions"
            )
        if data.dtype.kind == "V" or data.dtype.byteorder not in "=|":  # structured, or not native: its bytes
            data = data.reshape(-1).view(np.uint8)
        try:
            encoded = self._codec.encode(data) if data.size else b""
        except Exception as exc:
            raise StoreError(f"could not compress checkpoint x_{key} with {self._codec!r}: {exc}") from exc
        piece = np.frombuffer(encoded, np.uint8)  # bytes-like: a read-only view, no copy
        record = _Leaf(len(pieces), leaf, fortran, piece.nbytes, zlib.crc32(piece.data))
        pieces.append(piece)
        leaves.append(record)
        return record

    def _decode(self, key: int, leaf: Any, pieces: tuple[np.ndarray[Any, Any], ...]) -> Any:
        if not isinstance(leaf, _Leaf):
            return leaf
        if leaf.index >= len(pieces):
            raise StoreError(f"could not read checkpoint x_{key}: the inner store returned {len(pieces)} arrays")
        piece = pieces[leaf.index]
        if (
            piece.dtype != np.uint8
            or piece.ndim != 1
            or piece.nbytes != leaf.size
            or zlib.crc32(piece.data) != leaf.crc
        ):
            raise StoreError(
                f"could not read checkpoint x_{key}: array {leaf.index} is not the compressed data written "
                f"({leaf.size} bytes, CRC-32 {leaf.crc:08x}); found {piece.nbytes} bytes of dtype {piece.dtype}"
                + (f", CRC-32 {zlib.crc32(piece.data):08x}" if piece.dtype == np.uint8 else "")
            )
        array = np.empty(leaf.shape, leaf.dtype, order="F" if leaf.fortran else "C")
        if not array.size:
            return array
        out = array.T if leaf.fortran else array  # C-contiguous, as encoded
        if out.dtype.kind == "V" or out.dtype.byteorder not in "=|":
            out = out.reshape(-1).view(np.uint8)
        try:
            decoded = self._codec.decode(piece, out=out)
        except Exception as exc:
            raise StoreError(f"could not decompress checkpoint x_{key} with {self._codec!r}: {exc}") from exc
        if decoded is not out:  # a codec that ignored out: its result must be exactly the array's size
            found = np.asarray(decoded)
            if found.nbytes != out.nbytes:
                raise StoreError(
                    f"could not decompress checkpoint x_{key} with {self._codec!r}: expected {out.nbytes} bytes, "
                    f"got {found.nbytes}"
                )
            out[...] = found.reshape(-1).view(out.dtype).reshape(out.shape)
        return array


def _sizes(pieces: list[np.ndarray[Any, Any]], leaves: list[Any]) -> tuple[int, int]:
    """Bytes held (compressed arrays, scalars as they are) and raw bytes (the leaves' own ``nbytes``)."""
    scalars = sum(int(getattr(leaf, "nbytes", 0)) for leaf in leaves if not isinstance(leaf, _Leaf))
    raw = sum(leaf.raw for leaf in leaves if isinstance(leaf, _Leaf))
    return sum(piece.nbytes for piece in pieces) + scalars, raw + scalars


def _release(inner_id: int) -> None:
    from revseq import engine

    with engine._claimed_lock:
        engine._claimed.pop(inner_id, None)


def _leaf_error(key: int, index: int, state: Any, what: str, why: str = "") -> ParameterError:
    where = next(itertools.islice(_leaf_paths(state, "state"), index, None))
    why = why or "CompressedStore compresses numpy arrays of a numeric dtype, and keeps numbers as they are"
    return ParameterError(f"{why}: {where} of checkpoint x_{key} is {what}")


def _leaf_paths(tree: Any, path: str) -> Iterator[str]:
    """Where each leaf sits, as ``state[0]['h']``, in the order of ``_tree.leaves``."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaf_paths(v, f"{path}[{k!r}]")
    elif isinstance(tree, (tuple, list)):
        for i, v in enumerate(tree):
            yield from _leaf_paths(v, f"{path}[{i}]")
    else:
        yield path
