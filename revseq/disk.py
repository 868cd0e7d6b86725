"""Checkpoints on disk: one ``.npy`` file per checkpoint (one per array for a tuple or dict state).

For states too large to keep several of in RAM. Files live in a private
directory (mode 0700) created on the first write and removed, with
everything in it, by :meth:`DiskStore.clear`, which the engine calls however
a run ends; a finalizer removes it too if the store is dropped without
``clear()``, or the interpreter exits.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import operator
import os
import shutil
import tempfile
import warnings
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from revseq import _tree
from revseq.errors import ParameterError, StoreError

__all__ = ["DiskStore"]

# How a leaf comes back from its file: the array read, a numpy scalar, or a Python number.
_ARRAY, _NUMPY_SCALAR, _PYTHON_NUMBER = 0, 1, 2
_PYTHON_NUMBERS = (bool, int, float, complex)
_READ_ERRORS = (OSError, ValueError, EOFError)  # what np.load raises on a missing or damaged file
_CHUNK = 1 << 24  # bytes per write call: Ctrl-C acts between two


class _Slot:
    """Stands for leaf ``index`` in a tree state's structure, kept in memory (not a container, so a tree leaf)."""

    __slots__ = ("index", "kind")

    def __init__(self, index: int, kind: int) -> None:
        self.index = index
        self.kind = kind


class _Entry:
    """One checkpoint: its files, one per leaf, its structure (None for a single leaf) and its sizes."""

    __slots__ = ("kind", "names", "nbytes", "size", "template")

    def __init__(self, names: Sequence[str], template: Any, kind: int, nbytes: int, size: int) -> None:
        self.names = names
        self.template = template
        self.kind = kind  # the single leaf's kind when template is None
        self.nbytes = nbytes  # the arrays' nbytes
        self.size = size  # the files' sizes, headers included


class DiskStore:
    """Checkpoints on disk, one file each, in a private temporary directory.

    Parameters
    ----------
    directory:
        The existing, writable directory under which the store creates its
        private directory (``revseq-XXXXXXXX``, mode 0700) on the first
        ``put``; default: :func:`tempfile.gettempdir`. Checked when the
        store is made (nothing is created then): a bad one raises
        :class:`~revseq.errors.StoreError`.

    A state is a numpy array or a tuple, list or dict of them (numpy scalars
    and Python numbers are accepted as leaves too). Checkpoint ``x_t`` is the
    file ``x_t.npy``, in the ``.npy`` format of :func:`numpy.save`; a tree
    state is one file per leaf, ``x_t.0.npy``, ``x_t.1.npy``, ..., with the
    tree's structure kept in memory (not ``.npz``: zip members are written
    and read several times slower). Reads use
    ``np.load(..., allow_pickle=False)`` and give back the same structure,
    shapes and dtypes (an array subclass such as ``np.memmap`` comes back as
    a plain ``ndarray``). Nothing is pickled: an object array or any other
    leaf raises :class:`~revseq.errors.ParameterError` before anything is
    written.

    Each file is written under a temporary name in the same directory and
    renamed into place (``os.replace``) once all the checkpoint's files are
    written, so a file under its final name is always complete. Files are
    not ``fsync``-ed: checkpoints are worthless once the process is gone, so
    durability across a crash would cost a flush per checkpoint for nothing.
    A failed write (disk full, I/O error) raises
    :class:`~revseq.errors.StoreError` naming the checkpoint, the directory
    and the reason (its ``errno`` is the system's), removes the partial
    files and leaves the store as it was.

    Sizes and counters, in bytes of array data (the arrays' ``nbytes``, as
    :class:`~revseq.MemoryStore` counts, so ``Stats.peak_bytes`` means the
    same with either store):

    - ``nbytes``: held now;
    - ``bytes_written``, ``bytes_read``: cumulative since the store was made
      (``clear()`` does not reset them, so they can be read after a run);
    - ``disk_usage``: the files' sizes now, headers included.

    Examples
    --------
    >>> import numpy as np, revseq
    >>> from revseq.disk import DiskStore
    >>> store = DiskStore()
    >>> rec = revseq.Recurrence(np.sin, np.cos)
    >>> out = revseq.backprop(rec, np.full(3, 0.5), 100, revseq.BinomialCheckpointing(checkpoints=5), store=store)
    >>> out.stats.forward_steps, store.bytes_written == 24 * out.stats.writes
    (317, True)
    >>> len(store), store.path  # emptied and removed when the run ended
    (0, None)
    """

    __slots__ = (
        "__weakref__",
        "_bytes_read",
        "_bytes_written",
        "_disk_usage",
        "_entries",
        "_finalizer",
        "_nbytes",
        "_parent",
        "_path",
    )

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self._parent = _check_parent(directory)
        self._path: str | None = None  # the private directory, once created
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._entries: dict[int, _Entry] = {}
        self._nbytes = self._disk_usage = self._bytes_written = self._bytes_read = 0

    def put(self, key: int, state: Any) -> None:
        key = operator.index(key)  # the key becomes part of a file name
        arrays, template, kind = _flatten(key, state)  # refuses what it cannot store before touching the disk
        directory = self._directory()
        names = [f"x_{key}.npy"] if template is None else [f"x_{key}.{i}.npy" for i in range(len(arrays))]
        paths = [os.path.join(directory, name) for name in names]
        size = 0
        try:
            for array, path in zip(arrays, paths, strict=True):
                with open(path + ".partial", "wb") as fh:
                    _save(fh, array)
                    size += fh.tell()
            old = self._entries.pop(key, None)  # replaced from here on
            if old is not None:
                self._forget(old)
                for name in set(old.names) - set(names):
                    _unlink(os.path.join(directory, name))
            for path in paths:
                os.replace(path + ".partial", path)
        except BaseException as exc:  # KeyboardInterrupt too: never leave a partial file
            for path in paths:
                _unlink(path + ".partial")
            if not self._entries:  # the directory was made for this checkpoint: leave nothing behind
                self._remove_directory()
            if isinstance(exc, OSError):
                raise _store_error(f"could not write checkpoint x_{key} to {directory}", exc) from exc
            raise
        nbytes = sum(a.nbytes for a in arrays)
        self._entries[key] = _Entry(names, template, kind, nbytes, size)
        self._nbytes += nbytes
        self._disk_usage += size
        self._bytes_written += nbytes

    def get(self, key: int) -> Any:
        entry = self._entries[key]  # KeyError for a key never stored
        assert self._path is not None  # an entry implies the directory
        try:
            arrays = [np.load(os.path.join(self._path, name), allow_pickle=False) for name in entry.names]
        except _READ_ERRORS as exc:
            raise _store_error(f"could not read checkpoint x_{key} from {self._path}", exc) from exc
        self._bytes_read += entry.nbytes
        if entry.template is None:
            return _revive(arrays[0], entry.kind)
        return _tree.tree_map(lambda slot: _revive(arrays[slot.index], slot.kind), entry.template)

    def delete(self, key: int) -> None:
        entry = self._entries.pop(key)  # KeyError for a key not held
        self._forget(entry)
        assert self._path is not None
        for name in entry.names:
            try:
                os.remove(os.path.join(self._path, name))
            except FileNotFoundError:  # removed from outside: what delete wanted anyway
                pass
            except OSError as exc:  # the file stays until clear() removes the directory
                raise _store_error(f"could not delete checkpoint x_{key} in {self._path}", exc) from exc

    def clear(self) -> None:
        """Forget every checkpoint and remove the private directory; counters are kept."""
        self._entries.clear()
        self._nbytes = self._disk_usage = 0
        self._remove_directory()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes of array data held now (the arrays' ``nbytes``; see ``disk_usage`` for file sizes)."""
        return self._nbytes

    @property
    def disk_usage(self) -> int:
        """Bytes the checkpoint files take now: ``nbytes`` plus the files' headers."""
        return self._disk_usage

    @property
    def bytes_written(self) -> int:
        """Bytes of array data written since the store was made (``clear`` does not reset it)."""
        return self._bytes_written

    @property
    def bytes_read(self) -> int:
        """Bytes of array data read since the store was made (``clear`` does not reset it)."""
        return self._bytes_read

    @property
    def directory(self) -> str:
        """The parent directory, as an absolute path."""
        return self._parent

    @property
    def path(self) -> str | None:
        """The private directory holding the files, or None when there is none (before a put, after clear)."""
        return self._path

    def __repr__(self) -> str:
        return f"DiskStore(directory={self._parent!r}, held={len(self._entries)}, nbytes={self._nbytes})"

    def _directory(self) -> str:
        if self._path is None:
            try:
                path = tempfile.mkdtemp(prefix="revseq-", dir=self._parent)  # mode 0700
            except OSError as exc:
                raise _store_error(f"could not create a checkpoint directory in {self._parent}", exc) from exc
            self._finalizer = weakref.finalize(self, _remove_tree, path, os.getpid())
            self._path = path
        return self._path

    def _remove_directory(self) -> None:
        path, finalizer = self._path, self._finalizer
        self._path = self._finalizer = None
        if finalizer is None:
            return
        problem = finalizer()  # runs _remove_tree once, and never again at garbage collection or exit
        if problem is not None:
            warnings.warn(
                f"DiskStore could not remove its checkpoint directory {path} ({problem}); remove it by hand",
                RuntimeWarning,
                stacklevel=3,
            )

    def _forget(self, entry: _Entry) -> None:
        self._nbytes -= entry.nbytes
        self._disk_usage -= entry.size


def _save(fh: Any, array: np.ndarray[Any, Any]) -> None:
    """Write ``array`` to ``fh`` in the ``.npy`` format, through ``fh.write``.

    Not ``np.save(fh, array)``: given a real file it writes with
    ``ndarray.tofile``, whose errors lose the reason (a full disk reads
    "800 requested and 496 written"). Through ``write`` the system's error
    comes through, and Ctrl-C acts between chunks. A plain numeric array
    contiguous in C or Fortran order (the usual state) is written straight
    from its memory after numpy's own header; anything else goes through
    numpy's writer, which copies it chunk by chunk.
    """
    fortran = array.flags.f_contiguous and not array.flags.c_contiguous
    data = array.T if fortran else array  # C-contiguous in either case, if contiguous at all
    if data.flags.c_contiguous and data.dtype.names is None and data.dtype.itemsize:
        np.lib.format.write_array_header_1_0(fh, np.lib.format.header_data_from_array_1_0(array))
        raw = data.reshape(-1).view(np.uint8)  # views, no copy
        for start in range(0, raw.size, _CHUNK):
            fh.write(raw[start : start + _CHUNK])
    else:
        np.save(_Writer(fh), array, allow_pickle=False)


class _Writer:
    """A file numpy can only ``write`` to, so that it does not use ``ndarray.tofile`` (see ``_save``)."""

    __slots__ = ("_fh",)

    def __init__(self, fh: Any) -> None:
        self._fh = fh

    def write(self, data: Any) -> int:
        return int(self._fh.write(data))


def _check_parent(directory: Any) -> str:
    """The parent directory as an absolute path, if it exists and is writable; create nothing."""
    if directory is None:
        return tempfile.gettempdir()
    path = os.fspath(directory) if isinstance(directory, (str, os.PathLike)) else None
    if not isinstance(path, str):
        raise ParameterError(
            f"directory must be a path (str or os.PathLike) or None, got {directory!r} ({type(directory).__name__})"
        )
    path = os.path.abspath(path)  # a later chdir must not move the checkpoints
    expected = "directory must be an existing, writable directory"
    try:
        if not os.path.isdir(path):
            os.listdir(path)  # raises the precise reason: no such file, not a directory
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
    except OSError as exc:
        raise _store_error(f"{expected}, got {path!r}", exc) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise _store_error(f"{expected}, got {path!r}", PermissionError(errno.EACCES, "not writable"))
    return path


def _store_error(message: str, exc: Exception) -> StoreError:
    """``message: reason`` as a StoreError that keeps the system's errno, if there is one."""
    error = StoreError(f"{message}: {getattr(exc, 'strerror', None) or exc}")
    error.errno = getattr(exc, "errno", None)  # set alone, it leaves str(error) as the message
    return error


def _flatten(key: int, state: Any) -> tuple[list[np.ndarray[Any, Any]], Any, int]:
    """The arrays to write, the structure (None for a single leaf), and the single leaf's kind."""
    if _tree.is_leaf(state):
        array, kind = _as_array(key, state, 0, state)
        return [array], None, kind
    arrays: list[np.ndarray[Any, Any]] = []

    def slot(leaf: Any) -> _Slot:
        array, kind = _as_array(key, leaf, len(arrays), state)
        arrays.append(array)
        return _Slot(len(arrays) - 1, kind)

    return arrays, _tree.tree_map(slot, state), _ARRAY


def _as_array(key: int, leaf: Any, index: int, state: Any) -> tuple[np.ndarray[Any, Any], int]:
    if isinstance(leaf, np.ndarray) and (type(leaf) is np.ndarray or isinstance(leaf, np.memmap)):
        array, kind = leaf, _ARRAY
    elif isinstance(leaf, np.generic):
        array, kind = np.asarray(leaf), _NUMPY_SCALAR
    elif isinstance(leaf, _PYTHON_NUMBERS):
        array, kind = np.asarray(leaf), _PYTHON_NUMBER
    else:
        what = type(leaf).__module__ + "." + type(leaf).__qualname__
        if isinstance(leaf, np.ndarray):
            what += ", an ndarray subclass that would come back as a plain ndarray"
        raise _leaf_error(key, index, state, what)
    if array.dtype.hasobject:
        raise _leaf_error(key, index, state, f"an array of dtype {array.dtype}")
    return array, kind


def _leaf_error(key: int, index: int, state: Any, what: str) -> ParameterError:
    where = next(itertools.islice(_leaf_paths(state, "state"), index, None))
    return ParameterError(
        f"DiskStore stores numpy arrays and numbers, without pickling: {where} of checkpoint x_{key} is {what}; "
        f"convert it to an array with a numeric dtype, or use MemoryStore"
    )


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


def _revive(array: np.ndarray[Any, Any], kind: int) -> Any:
    if kind == _ARRAY:
        return array
    if kind == _NUMPY_SCALAR:
        return array[()]
    return array.item()


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):  # already gone, or never created
        os.remove(path)


def _remove_tree(path: str, owner: int) -> str | None:
    """Remove a private directory; return what went wrong, if anything.

    Only in the process that made it: a forked child that exits normally
    runs finalizers too, and must not delete its parent's checkpoints.
    """
    if os.getpid() != owner:
        return None
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
    return None
