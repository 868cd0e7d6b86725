"""Checkpoints on disk: one ``.npy`` file per checkpoint (one per array for a tuple or dict state).

For states too large to keep several of in RAM. Files live in a private
directory (mode 0700) created on the first write and removed, with
everything in it, by :meth:`DiskStore.clear`, which the engine calls however
a run ends; a finalizer removes it too if the store is dropped without
``clear()``, or the interpreter exits. The store remembers what it wrote in
each file (the exact ``.npy`` header facts and the file's size) and a read
returns nothing but exactly that.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import io
import itertools
import operator
import os
import shutil
import stat
import sys
import tempfile
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from revseq import _tree
from revseq.errors import ParameterError, StoreError

__all__ = ["DiskStore"]

# How a leaf comes back from its file: the array read, a numpy scalar, or a Python number.
_ARRAY, _NUMPY_SCALAR, _PYTHON_NUMBER = 0, 1, 2
_PYTHON_NUMBERS = (bool, int, float, complex)
_CHUNK = 1 << 24  # bytes per write or read call: Ctrl-C acts between two
# Data of at least this many bytes gets its blocks reserved before it is written (see _preallocate);
# numpy's threshold for the same call in ndarray.tofile, below which the call costs more than it saves.
_PREALLOCATE_FROM = 1 << 24
_FALLOC_FL_KEEP_SIZE = 1  # linux/falloc.h: reserve blocks past the end, the file's size unchanged
_NO_SPACE = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})  # a write would fail too

# Flags the platform may lack are 0 there: O_NOFOLLOW (absent on Windows, where a symbolic link
# is checked for before opening instead), O_CLOEXEC, O_NONBLOCK (a FIFO planted in place of a
# checkpoint must not hang the read), O_BINARY (Windows: no newline translation).
_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)
_COMMON_FLAGS: int = _NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _COMMON_FLAGS  # a new file, never through a link
_READ_FLAGS: int = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | _COMMON_FLAGS
_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}
_HEAD_SLACK = 4096  # bytes read past the expected header, to describe a longer header found instead
# numpy >= 1.24 bounds the header it parses; 1.23 (still supported) has no such parameter.
_HEADER_LIMIT = "max_header_size" in inspect.signature(np.lib.format.read_array_header_1_0).parameters


class _Slot:
    """Stands for leaf ``index`` in a tree state's structure, kept in memory (not a container, so a tree leaf)."""

    __slots__ = ("index", "kind")

    def __init__(self, index: int, kind: int) -> None:
        self.index = index
        self.kind = kind


class _Layout:
    """What the store wrote in one file: the exact ``.npy`` header and what it says, and the file's size.

    A read checks all of it before returning anything (see ``_read``).
    """

    __slots__ = ("descr", "dtype", "fortran", "header", "shape", "size")

    def __init__(self, array: np.ndarray[Any, Any]) -> None:
        facts = np.lib.format.header_data_from_array_1_0(array)
        self.header = _header_bytes(facts)  # UnicodeEncodeError for field names format 1.0 and 2.0 cannot hold
        self.shape: tuple[int, ...] = facts["shape"]
        self.fortran: bool = facts["fortran_order"]
        self.descr = facts["descr"]
        self.dtype = np.lib.format.descr_to_dtype(self.descr)  # as np.load gives it back
        self.size = len(self.header) + array.nbytes  # the whole file: header, then the data, nothing after

    def describe(self) -> str:
        return _describe(self.shape, self.fortran, self.dtype, len(self.header), self.size)


class _Entry:
    """One checkpoint: its files, one per leaf, their layouts, its structure (None for a single leaf) and sizes."""

    __slots__ = ("kind", "layouts", "names", "nbytes", "size", "template")

    def __init__(
        self, names: Sequence[str], layouts: Sequence[_Layout], template: Any, kind: int, nbytes: int, size: int
    ) -> None:
        self.names = names
        self.layouts = layouts
        self.template = template
        self.kind = kind  # the single leaf's kind when template is None
        self.nbytes = nbytes  # the arrays' nbytes
        self.size = size  # the files' sizes, headers included


def _enter(store: Any, key: int, names: Any, leaves: Any, template: Any, kind: Any) -> None:
    """Record checkpoint ``key`` in ``store`` (a DiskStore or an FsspecStore), written as ``names`` from ``leaves``
    (``(array, layout)`` pairs), and count its bytes."""
    layouts = [layout for _, layout in leaves]
    nbytes = sum(array.nbytes for array, _ in leaves)
    size = sum(layout.size for layout in layouts)
    store._entries[key] = _Entry(names, layouts, template, kind, nbytes, size)
    store._nbytes += nbytes
    store._disk_usage += size
    store._bytes_written += nbytes


class _Counted:
    """The byte counters a store that writes ``.npy`` bytes keeps (DiskStore, FsspecStore), as properties."""

    __slots__ = ()
    _nbytes: int
    _disk_usage: int
    _bytes_written: int
    _bytes_read: int

    @property
    def copies(self) -> bool:
        """True: states are written out on put and read back as new arrays on get.

        So a step that modifies its argument in place cannot corrupt a
        checkpoint (the engine uses this to know in-place steps are safe
        with this store), as with ``MemoryStore(copy=True)``.
        """
        return True

    @property
    def nbytes(self) -> int:
        """Bytes of array data held now (the arrays' ``nbytes``; see ``disk_usage`` for what is written)."""
        return self._nbytes

    @property
    def disk_usage(self) -> int:
        """Bytes the checkpoints take where they are written now: ``nbytes`` plus the ``.npy`` headers."""
        return self._disk_usage

    @property
    def bytes_written(self) -> int:
        """Bytes of array data written since the store was made (``clear`` does not reset it)."""
        return self._bytes_written

    @property
    def bytes_read(self) -> int:
        """Bytes of array data read since the store was made (``clear`` does not reset it)."""
        return self._bytes_read


class DiskStore(_Counted):
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
    file ``x_t.npy``, holding the bytes :func:`numpy.save` writes; a tree
    state is one file per leaf, ``x_t.0.npy``, ``x_t.1.npy``, ..., with the
    tree's structure kept in memory (not ``.npz``: zip members are written
    and read several times slower). A read gives back the same structure,
    shapes and dtypes (an array subclass such as ``np.memmap`` comes back as
    a plain ``ndarray``). Nothing is pickled: an object array or any other
    leaf raises :class:`~revseq.errors.ParameterError` before anything is
    written (so does a structured dtype whose field names are not Latin-1,
    which only ``.npy`` format 3.0 can hold).

    A read returns exactly what was written, or raises
    :class:`~revseq.errors.StoreError`. The store keeps, for each file, the
    header it wrote (shape, dtype, Fortran order, where the data starts) and
    the file's size; a read opens the file without following a symbolic
    link, parses its header with numpy's :mod:`numpy.lib.format` helpers,
    compares it and the size with what was written, and only then reads the
    data into a new array, checking that nothing follows it. A file replaced
    by another array, an ``.npz``, a truncated or extended file, or a link
    is refused with a message naming the checkpoint, the file, what was
    expected and what was found. The data itself is not checksummed: bytes
    overwritten in place, size kept, are not detected.

    Each file is written under a temporary name in the same directory,
    ``x_t.npy.partial``, created exclusively (``O_CREAT | O_EXCL``, and
    ``O_NOFOLLOW`` where the platform has it; mode 0600), so the store never
    writes through a file or link it did not create: if something already
    has that name, the write raises :class:`~revseq.errors.StoreError`
    (``errno.EEXIST``) and leaves it alone. The files are renamed into place
    (``os.replace``, which replaces a link at the final name rather than
    following it) once all the checkpoint's files are written, so a file
    under its final name is always complete. Files are
    not ``fsync``-ed: checkpoints are worthless once the process is gone, so
    durability across a crash would cost a flush per checkpoint for nothing.
    On Linux the blocks of 16 MiB or more of data are reserved before they
    are written (``fallocate``, keeping the file's size), as :func:`numpy.save`
    does, so a put is as fast as ``np.save`` and a full disk is found before
    anything is written. A failed write (disk full, I/O error) raises
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
        leaves, template, kind = _flatten(key, state)  # refuses what it cannot store before touching the disk
        directory = self._directory()
        names = [f"x_{key}.npy"] if template is None else [f"x_{key}.{i}.npy" for i in range(len(leaves))]
        paths = [os.path.join(directory, name) for name in names]
        created: list[str] = []  # the partial files this put may have created, and only those
        try:
            for (array, layout), path in zip(leaves, paths, strict=True):
                partial = path + ".partial"
                created.append(partial)  # before the open: an interrupt once the file exists still removes it
                try:
                    fh = open(partial, "wb", opener=_create_new)  # noqa: SIM115 (closed by the `with` below)
                except OSError as exc:  # nothing created: the name was free, or is taken by something not ours
                    created.pop()
                    if isinstance(exc, FileExistsError):  # neither written through nor removed
                        raise FileExistsError(
                            exc.errno,
                            f"{os.path.basename(partial)} already exists, and this store did not create it; "
                            "it is left alone, not written through",
                        ) from exc
                    raise
                with fh:
                    _write(fh, array, layout)
            old = self._entries.pop(key, None)  # replaced from here on
            if old is not None:
                self._forget(old)
                for name in set(old.names) - set(names):
                    _unlink(os.path.join(directory, name))
            for path in paths:
                os.replace(path + ".partial", path)  # replaces a link at `path`, never follows it
        except BaseException as exc:  # KeyboardInterrupt too: never leave a partial file
            for partial in created:  # only the files this put created: something planted stays as it was
                _unlink(partial)
            if not self._entries:  # the directory was made for this checkpoint: leave nothing behind
                self._remove_directory()
            if isinstance(exc, OSError):
                raise _store_error(f"could not write checkpoint x_{key} to {directory}", exc) from exc
            raise
        _enter(self, key, names, leaves, template, kind)

    def get(self, key: int) -> Any:
        entry = self._entries[key]  # KeyError for a key never stored
        directory = self._path
        assert directory is not None  # an entry implies the directory
        arrays = []
        for name, layout in zip(entry.names, entry.layouts, strict=True):
            try:
                arrays.append(_read(directory, name, layout))
            except _NotWritten as exc:  # its message names the file, what was expected and what was found
                raise _store_error(f"could not read checkpoint x_{key} from {directory}", exc) from exc
            except OSError as exc:  # the system's reason
                raise _store_error(f"could not read checkpoint x_{key} from {directory}: {name}", exc) from exc
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
        if finalizer is None or path is None:
            return
        # Removed first, forgotten after: a KeyboardInterrupt in the middle of the removal leaves the
        # path and its finalizer in place, so the next clear(), the collector or the exit finishes it.
        problem = _remove_tree(path, os.getpid())
        finalizer.detach()
        self._path = self._finalizer = None
        if problem is not None:
            warnings.warn(
                f"DiskStore could not remove its checkpoint directory {path} ({problem}); remove it by hand",
                RuntimeWarning,
                stacklevel=3,
            )

    def _forget(self, entry: _Entry) -> None:
        self._nbytes -= entry.nbytes
        self._disk_usage -= entry.size


def _header_bytes(facts: dict[str, Any]) -> bytes:
    """The ``.npy`` header :func:`numpy.save` writes for these facts: format 1.0, or 2.0 if too long for 1.0.

    Raises UnicodeEncodeError for field names that are not Latin-1, which
    only format 3.0 holds (the store does not write it: numpy's public
    helpers neither write nor read it).
    """
    buffer = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(buffer, facts)
    except UnicodeEncodeError:
        raise
    except ValueError:  # longer than format 1.0 allows (a dtype with thousands of fields): 2.0, as np.save does
        buffer = io.BytesIO()
        np.lib.format.write_array_header_2_0(buffer, facts)
    return buffer.getvalue()


def _write(fh: Any, array: np.ndarray[Any, Any], layout: _Layout) -> None:
    """Write ``array`` to ``fh`` in the ``.npy`` format, the bytes np.save writes, through ``fh.write``.

    Not ``np.save(fh, array)``: given a real file it writes with
    ``ndarray.tofile``, whose errors lose the reason (a full disk reads
    "800 requested and 496 written"). Through ``write`` the system's error
    comes through, and Ctrl-C acts between chunks. A large array's blocks
    are reserved first, as ``tofile`` does (``_preallocate``), which is what
    made ``tofile`` faster than plain writes. An array contiguous in C or
    Fortran order (the usual state) is written straight from its memory; any
    other is copied chunk by chunk in C order, as numpy's writer does.
    """
    _preallocate(fh, len(layout.header), array.nbytes)
    fh.write(layout.header)
    if not array.nbytes:
        return
    data = array.T if layout.fortran else array  # Fortran order: the transpose is C-contiguous
    if data.flags.c_contiguous:
        raw = data.reshape(-1).view(np.uint8)  # views, no copy
        for start in range(0, raw.size, _CHUNK):
            fh.write(raw[start : start + _CHUNK])
    else:
        size = max(_CHUNK // data.itemsize, 1)
        chunks = np.nditer(data, flags=["external_loop", "buffered", "zerosize_ok"], buffersize=size, order="C")
        for chunk in chunks:  # one operand, so each chunk is an array (numpy's stubs say a tuple)
            fh.write(np.asarray(chunk).tobytes("C"))


def _preallocate(fh: Any, offset: int, length: int) -> None:
    """Reserve the file's blocks for ``length`` bytes of data at ``offset`` before they are written (Linux).

    ``fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, length)``, the call
    ``ndarray.tofile`` (so ``np.save``) makes before writing 16 MiB or more.
    Without it, ext4's delayed allocation reserves the blocks page by page
    inside ``write``: plain writes of 64 to 256 MB took 1.2 to 1.3 times the
    CPU time of np.save's (benchmarks/test_disk_store.py). The file's size is
    unchanged, so a partial file is as long as what was written. A full disk
    or quota fails here, before any data is written; any other failure (a
    file system without ``fallocate``) is ignored, and the write meets and
    reports any real problem itself. Not ``os.posix_fallocate``: where the
    file system lacks ``fallocate`` (NFSv3, some FUSE mounts) glibc emulates
    it by writing a byte into every 4 kB block, over the network too, and
    it extends the file. Known cost: on tmpfs the call saves nothing and
    costs up to about 3 % of the write (measured at 16 and 64 MB).
    """
    if length < _PREALLOCATE_FROM:
        return
    try:
        fd = fh.fileno()
    except (AttributeError, OSError, ValueError):  # no file behind fh: an in-memory buffer (revseq.fsspec_store)
        return
    fallocate = _fallocate()
    if fallocate is None:
        return
    code = fallocate(fd, offset, length)
    if code in _NO_SPACE:
        raise OSError(code, os.strerror(code))


@functools.cache
def _fallocate() -> Callable[[int, int, int], int] | None:
    """The C library's ``fallocate`` with ``FALLOC_FL_KEEP_SIZE``, returning 0 or the errno; None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes  # here, once: needed only on Linux, for an array of 16 MiB or more

        libc = ctypes.CDLL(None, use_errno=True)
        function = getattr(libc, "fallocate64", None) or libc.fallocate  # 64-bit offsets on 32-bit glibc too
    except (ImportError, OSError, AttributeError):  # no ctypes (some embedded builds), no such symbol
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    function.restype = ctypes.c_int

    def keep_size(fd: int, offset: int, length: int) -> int:
        if function(fd, _FALLOC_FL_KEEP_SIZE, offset, length) == 0:
            return 0
        return ctypes.get_errno()

    return keep_size


def _create_new(path: str, flags: int) -> int:
    """An ``opener`` for ``open``: create ``path``, which must not exist (not even as a link), mode 0600."""
    return os.open(path, _CREATE_FLAGS, 0o600)


# What a file's header says (shape, Fortran order, dtype, where the data starts), or why it says nothing.
_Found = tuple[tuple[int, ...], bool, np.dtype[Any], int] | str


class _NotWritten(Exception):
    """A checkpoint's file is not the one the store wrote; the message says how (see ``_read``)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.errno = code  # the StoreError keeps it


def _read(directory: str, name: str, layout: _Layout) -> np.ndarray[Any, Any]:
    """The array in file ``name``, if the file is exactly the one described by ``layout``.

    Raises _NotWritten if it holds anything else, or is not a regular file
    (a symbolic link, not followed, is ``errno.ELOOP``), and OSError if it
    cannot be opened or read. Nothing is allocated before the header
    matches, so a planted header cannot ask for a huge array.
    """
    path = os.path.join(directory, name)
    if not _NOFOLLOW and os.path.islink(path):  # no O_NOFOLLOW (Windows): check first, racily
        raise _link_error(name)
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK) and os.path.islink(path):  # EMLINK: the BSDs' O_NOFOLLOW
            raise _link_error(name) from exc
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # a directory, a FIFO (not waited on: O_NONBLOCK), a device
            kind = _KINDS.get(stat.S_IFMT(info.st_mode), f"mode {stat.filemode(info.st_mode)}")
            raise _NotWritten(f"{name} is not the file this store wrote: expected a regular file; found {kind}")
        fh = io.FileIO(fd, "rb")  # closes fd when closed
    except BaseException:
        os.close(fd)
        raise
    with fh:
        found = _parse_header(_read_up_to(fh, len(layout.header) + _HEAD_SLACK))
        if not _matches(found, layout, info.st_size):
            raise _NotWritten(_mismatch(name, layout, found, info.st_size))
        array = np.empty(layout.shape, layout.dtype, order="F" if layout.fortran else "C")
        if not array.nbytes:
            return array
        raw = (array.T if layout.fortran else array).reshape(-1).view(np.uint8).data  # the new array's memory
        fh.seek(len(layout.header))
        done = 0
        while done < len(raw):
            count = fh.readinto(raw[done : done + _CHUNK])
            if not count:
                break
            done += count
        if done < len(raw) or fh.read(1):  # shrunk or grew after the size was checked
            raise _NotWritten(_mismatch(name, layout, found, os.fstat(fd).st_size))
    return array


def _read_up_to(fh: io.FileIO, size: int) -> bytes:
    """At most ``size`` bytes from ``fh``: fewer only at the end of the file."""
    parts = []
    while size > 0:
        part = fh.read(size)
        if not part:
            break
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def _parse_header(head: bytes) -> _Found:
    """What the ``.npy`` header at the start of ``head`` says (shape, Fortran order, dtype, data offset), or why not.

    With numpy's public helpers, never unpickling; versions 1.0 and 2.0
    only, the ones the store writes.
    """
    buffer = io.BytesIO(head)
    try:
        version = np.lib.format.read_magic(buffer)
        if version == (1, 0):
            reader = np.lib.format.read_array_header_1_0
        elif version == (2, 0):
            reader = np.lib.format.read_array_header_2_0
        else:
            return f"a .npy header of format {version[0]}.{version[1]}, which this store does not write"
        if _HEADER_LIMIT:
            shape, fortran, dtype = reader(buffer, max_header_size=len(head))
        else:  # pragma: no cover (numpy 1.23)
            shape, fortran, dtype = reader(buffer)
    except Exception as exc:  # anything a damaged or foreign header makes the parser raise
        return f"no .npy header numpy can parse ({exc})"
    return tuple(shape), bool(fortran), dtype, buffer.tell()


def _matches(found: _Found, layout: _Layout, size: int) -> bool:
    if isinstance(found, str):
        return False
    shape, fortran, dtype, offset = found
    return (
        shape == layout.shape
        and fortran == layout.fortran
        and dtype == layout.dtype
        and np.lib.format.dtype_to_descr(dtype) == layout.descr
        and offset == len(layout.header)
        and size == layout.size
    )


def _mismatch(name: str, layout: _Layout, found: _Found, size: int) -> str:
    what = f"{found}, {size} bytes" if isinstance(found, str) else _describe(*found, size)
    return f"{name} is not the file this store wrote: expected {layout.describe()}; found {what}"


def _describe(shape: tuple[int, ...], fortran: bool, dtype: np.dtype[Any], offset: int, size: int) -> str:
    order = "Fortran" if fortran else "C"
    return f"shape {shape}, dtype {dtype}, {order} order, data from byte {offset}, {size} bytes"


def _link_error(name: str) -> _NotWritten:
    what = "expected a regular file; found a symbolic link, not followed"
    return _NotWritten(f"{name} is not the file this store wrote: {what}", errno.ELOOP)


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


def _flatten(
    key: int, state: Any, owner: str = "DiskStore"
) -> tuple[list[tuple[np.ndarray[Any, Any], _Layout]], Any, int]:
    """The arrays to write with their layouts, the structure (None for a single leaf), the single leaf's kind.

    ``owner`` names the store in the error for a leaf that cannot be stored
    (revseq.fsspec_store writes the same ``.npy`` bytes).
    """
    if _tree.is_leaf(state):
        array, layout, kind = _as_array(key, state, 0, state, owner)
        return [(array, layout)], None, kind
    leaves: list[tuple[np.ndarray[Any, Any], _Layout]] = []

    def slot(leaf: Any) -> _Slot:
        array, layout, kind = _as_array(key, leaf, len(leaves), state, owner)
        leaves.append((array, layout))
        return _Slot(len(leaves) - 1, kind)

    return leaves, _tree.tree_map(slot, state), _ARRAY


def _as_array(
    key: int, leaf: Any, index: int, state: Any, owner: str = "DiskStore"
) -> tuple[np.ndarray[Any, Any], _Layout, int]:
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
        raise _leaf_error(key, index, state, what, owner)
    if array.dtype.hasobject:
        raise _leaf_error(key, index, state, f"an array of dtype {array.dtype}", owner)
    try:
        layout = _Layout(array)
    except UnicodeEncodeError:
        what = f"an array of dtype {array.dtype}, whose field names are not Latin-1 (.npy format 3.0)"
        raise _leaf_error(key, index, state, what, owner) from None
    return array, layout, kind


def _leaf_error(key: int, index: int, state: Any, what: str, owner: str = "DiskStore") -> ParameterError:
    where = next(itertools.islice(_leaf_paths(state, "state"), index, None))
    return ParameterError(
        f"{owner} stores numpy arrays and numbers, without pickling: {where} of checkpoint x_{key} is {what}; "
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
