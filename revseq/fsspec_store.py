"""Checkpoints on any filesystem or object store fsspec reaches: ``file://``, ``memory://``, ``s3://``, ``gs://``, ...

``FsspecStore(url)`` keeps each checkpoint as ``.npy`` objects under a
private prefix of ``url``, with the guarantees of :class:`~revseq.DiskStore`
(it writes and checks the same bytes, with the same code): nothing pickled,
atomic puts, every read checked against what was written, everything
removed when the run ends, and backend errors raised as
:class:`~revseq.errors.StoreError` with the backend's reason. It plugs in
wherever a ``DiskStore`` does, as ``store=`` or as the ``disk=`` level of
:class:`~revseq.MultistageCheckpointing`. Needs the ``remote`` extra:
``pip install 'revseq[remote]'`` (fsspec and s3fs; other backends need
their own fsspec package: gcsfs, adlfs, ...). docs/storage.md, "Checkpoints
on any filesystem or object store", has the guarantees and the costs.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import io
import operator
import os
import secrets
import threading
import warnings
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from revseq import _tree
from revseq.disk import (
    _HEAD_SLACK,
    _check_parent,
    _Counted,
    _enter,
    _Entry,
    _flatten,
    _Layout,
    _matches,
    _mismatch,
    _NotWritten,
    _parse_header,
    _read_up_to,
    _revive,
    _write,
)
from revseq.errors import ParameterError, RevseqError, StoreError

__all__ = ["FsspecStore"]

# Backends where one put (fsspec ``pipe``) makes an object appear whole or not at all: S3 (s3fs: one
# PutObject, or a multipart upload, which is invisible until completed and aborted on failure), Google
# Cloud Storage, Azure Blob and Data Lake, Alibaba OSS, and fsspec's in-process memory filesystem. Every
# other filesystem (local, SFTP, HDFS, SMB, ...) gets a temporary name and a rename.
_ONE_PUT = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "memory"})
# Backends whose put sends its body through aiohttp, which wants a stream (see _Body).
_STREAMED = frozenset({"s3", "s3a", "gs", "gcs"})
_PARTIAL = ".partial"
# The errno an OSError subclass stands for, where a backend raises one without it.
_ERRNOS = (
    (FileNotFoundError, errno.ENOENT),
    (PermissionError, errno.EACCES),
    (FileExistsError, errno.EEXIST),
    (ConnectionRefusedError, errno.ECONNREFUSED),
    (ConnectionResetError, errno.ECONNRESET),
    (TimeoutError, errno.ETIMEDOUT),
)


def _fsspec() -> Any:
    """The fsspec module, or an error naming the extra that installs it."""
    try:
        return importlib.import_module("fsspec")
    except ModuleNotFoundError as error:  # only a missing fsspec; a broken install keeps its own message
        if error.name != "fsspec":
            raise
        raise ModuleNotFoundError(
            "revseq.FsspecStore needs fsspec (and s3fs for s3:// URLs): pip install 'revseq[remote]'",
            name=error.name,
        ) from None


class _Owned:
    """Every object or directory a store may have created and not yet removed, kept apart from the store.

    The store's finalizer holds this, not the store: a store dropped, or
    alive at exit, without ``clear()`` still has its objects removed.
    """

    __slots__ = ("dirs", "fs", "paths", "pid")

    def __init__(self, fs: Any) -> None:
        self.fs = fs
        self.pid = os.getpid()  # a forked child must not delete its parent's checkpoints
        self.paths: set[str] = set()  # objects (files), possibly written
        self.dirs: list[str] = []  # private directories made (filesystems with directories only)

    def remove(self, paths: Iterable[str] | None = None) -> Exception | None:
        """Remove ``paths`` (default: everything owned); return the error if one came (they stay owned)."""
        if os.getpid() != self.pid:
            return None
        everything = paths is None
        targets = sorted(self.paths if paths is None else paths)
        try:
            _remove_files(self.fs, targets)
            self.paths.difference_update(targets)
            if everything:
                while self.dirs:
                    _remove_dir(self.fs, self.dirs[-1])
                    self.dirs.pop()
        except Exception as exc:  # a backend's failure, whatever its type: reported, and retried later
            return exc
        return None

    def finalize(self) -> None:
        """At garbage collection or exit: a last try, silent (nothing can be done with an error then)."""
        self.remove()


class FsspecStore(_Counted):
    """Checkpoints as ``.npy`` objects under a URL fsspec understands, in a private prefix per run.

    Parameters
    ----------
    url:
        Where the checkpoints go: ``"s3://bucket/checkpoints"``,
        ``"gs://bucket/run"``, ``"file:///scratch"``, ``"memory://ckpt"``, or
        a plain local path. The store writes under a private prefix
        ``revseq-<16 hex digits>`` of it, made on the first ``put`` and removed,
        with everything in it, by :meth:`clear`, which the engine calls
        however a run ends; so runs sharing one ``url`` never see each other's
        checkpoints. A local directory must exist and be writable (checked
        here, as ``DiskStore`` does); a bucket is not checked until the first
        put, to make the store without a network call.
    **storage_options:
        Passed to fsspec (:func:`fsspec.url_to_fs`): credentials,
        ``endpoint_url``, ``client_kwargs``, ``config_kwargs`` (s3fs: for
        example ``{"connect_timeout": 2, "retries": {"max_attempts": 2}}``
        to fail fast when the server is gone), ...

    A state is a numpy array or a tuple, list or dict of them, with numpy
    scalars and Python numbers as leaves too, exactly as for ``DiskStore``:
    checkpoint ``x_t`` is the object ``x_t.npy`` (``x_t.0.npy``, ... for a
    tree; the structure is kept in memory), holding the bytes
    :func:`numpy.save` writes. Nothing is pickled: an object array or any
    other leaf raises :class:`~revseq.errors.ParameterError` before anything
    is written.

    **Atomic puts.** On an object store (S3, GCS, Azure, OSS, and
    ``memory://``) each object is written by one put, which makes it appear
    whole or not at all (a large one is an S3 multipart upload, invisible
    until completed and aborted on failure). On any other filesystem (local,
    SFTP, ...) each file is written under ``<name>.partial`` (created
    exclusively on a local disk) and renamed into place once all the
    checkpoint's files are written. A put that fails removes what it wrote
    and leaves the store as it was; storing a key again writes new objects
    and removes the old ones only once the new are complete.

    **Checked reads.** The store keeps each object's ``.npy`` header (shape,
    dtype, order) and size; a read fetches at most that many bytes plus one,
    parses the header with numpy's helpers, compares it and the size with
    what was written, and only then copies the data into a new array. An
    object replaced, truncated or extended is refused with a
    :class:`~revseq.errors.StoreError` naming the checkpoint, the object,
    what was expected and what was found. The data are not checksummed.

    **Nothing left behind.** :meth:`clear` deletes every object the store
    wrote (one bulk delete on S3) and the private directory where there are
    directories. If the backend cannot be reached then, ``clear`` warns
    (:class:`RuntimeWarning`, naming the prefix) instead of raising, so the
    error that ended the run is the one seen, and keeps the list: the next
    ``clear()``, or the store's finalizer (when it is garbage-collected, or
    at exit), tries again. Only a killed process leaves objects behind.

    **Errors.** A backend failure (connection refused, access denied, no
    such bucket, a missing object) raises :class:`~revseq.errors.StoreError`
    naming the checkpoint and the prefix, with the backend's reason, its
    ``errno`` where one is known (``ECONNREFUSED``, ``ENOENT``, ...) and the
    original exception as ``__cause__``. Reading or deleting a key not held
    raises ``KeyError``.

    Counters, in bytes of array data as ``DiskStore`` counts them:
    ``nbytes`` (held now), ``bytes_written`` and ``bytes_read`` (since the
    store was made), and ``disk_usage`` (the objects' sizes now, headers
    included). ``copies`` is True: a state is written out on put and read
    back as a new array on get.

    Examples
    --------
    >>> import numpy as np, revseq
    >>> from revseq.fsspec_store import FsspecStore
    >>> store = FsspecStore("memory://revseq-doctest")
    >>> rec = revseq.Recurrence(np.sin, np.cos)
    >>> plan = revseq.MultistageCheckpointing(ram=2, disk=3)
    >>> out = revseq.backprop(rec, np.full(3, 0.5), 50, plan, disk=store)
    >>> out.stats.disk_writes > 0, store.bytes_written == 24 * out.stats.disk_writes
    (True, True)
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
        "_fs",
        "_local",
        "_nbytes",
        "_one_put",
        "_owned",
        "_prefix",
        "_root",
        "_streams",
        "_url",
    )

    def __init__(self, url: str | os.PathLike[str], **storage_options: Any) -> None:
        if isinstance(url, os.PathLike):
            url = os.fspath(url)
        if not isinstance(url, str) or not url:
            raise ParameterError(
                f"url must be a non-empty str or os.PathLike (such as 's3://bucket/prefix' or a local directory), "
                f"got {url!r} ({type(url).__name__})"
            )
        fsspec = _fsspec()
        try:
            fs, root = fsspec.core.url_to_fs(url, **storage_options)
        except ImportError as exc:  # the backend's package is missing: fsspec's message names it
            raise ModuleNotFoundError(f"FsspecStore({url!r}): {exc}", name=getattr(exc, "name", None)) from exc
        except (ValueError, TypeError) as exc:  # an unknown protocol, an option the backend does not take
            raise ParameterError(f"url must be a URL fsspec can open, got {url!r}: {exc}") from exc
        protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
        self._local = "file" in protocols or "local" in protocols
        if self._local:
            root = _check_parent(root)  # exists and is writable, or a StoreError now, as DiskStore
        self._one_put = not self._local and any(p in _ONE_PUT for p in protocols)
        self._streams = any(p in _STREAMED for p in protocols)
        self._fs = fs
        self._root = root
        self._url = url
        self._prefix: str | None = None  # the private prefix, once made
        self._owned = _Owned(fs)
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._entries: dict[int, _Entry] = {}
        self._nbytes = self._disk_usage = self._bytes_written = self._bytes_read = 0

    def put(self, key: int, state: Any) -> None:
        key = operator.index(key)  # the key becomes part of an object's name
        leaves, template, kind = _flatten(key, state, "FsspecStore")  # refuses what it cannot store, first
        prefix = self._private_prefix()
        old = self._entries.get(key)
        # A key stored again gets new names (x_t.npy <-> x_t~1.npy), so a failed put leaves the old whole.
        stem = f"x_{key}~1" if old is not None and old.names[0].startswith(f"x_{key}.") else f"x_{key}"
        names = [f"{stem}.npy"] if template is None else [f"{stem}.{i}.npy" for i in range(len(leaves))]
        paths = [f"{prefix}/{name}" for name in names]
        touched: list[str] = []  # what this put may have created, and only that
        try:
            if self._one_put:
                self._put_objects(leaves, paths, touched)
            else:
                self._put_files(leaves, paths, touched)
        except BaseException as exc:  # KeyboardInterrupt too: nothing half-written stays
            problem = self._owned.remove(touched)  # what cannot be removed now stays owned, for clear()
            if not self._entries:  # the prefix was made for this checkpoint: gone too (or left to clear())
                if problem is None:
                    self._owned.remove()
                self._prefix = None
            if isinstance(exc, Exception):
                raise _store_error(f"could not write checkpoint x_{key} to {self._show(prefix)}", exc) from exc
            raise
        if old is not None:  # replaced: its objects go (any that cannot stay owned, for clear())
            del self._entries[key]
            self._forget(old)
            self._owned.remove([f"{prefix}/{name}" for name in old.names])
        _enter(self, key, names, leaves, template, kind)

    def get(self, key: int) -> Any:
        entry = self._entries[key]  # KeyError for a key never stored
        prefix = self._prefix
        assert prefix is not None  # an entry implies the prefix
        paths = [f"{prefix}/{name}" for name in entry.names]
        try:
            if self._one_put:
                arrays = self._get_objects(paths, entry.layouts)
            else:
                arrays = [self._get_file(path, layout) for path, layout in zip(paths, entry.layouts, strict=True)]
        except Exception as exc:
            raise _store_error(f"could not read checkpoint x_{key} from {self._show(prefix)}", exc) from exc
        self._bytes_read += entry.nbytes
        if entry.template is None:
            return _revive(arrays[0], entry.kind)
        return _tree.tree_map(lambda slot: _revive(arrays[slot.index], slot.kind), entry.template)

    def delete(self, key: int) -> None:
        entry = self._entries.pop(key)  # KeyError for a key not held
        self._forget(entry)
        prefix = self._prefix
        assert prefix is not None
        problem = self._owned.remove([f"{prefix}/{name}" for name in entry.names])
        if problem is not None:  # the objects stay owned: clear() removes them
            raise _store_error(f"could not delete checkpoint x_{key} in {self._show(prefix)}", problem) from problem

    def clear(self) -> None:
        """Forget every checkpoint and delete every object the store wrote; counters are kept.

        What cannot be deleted (the backend is unreachable) is reported with
        a :class:`RuntimeWarning` and kept on the list: the next ``clear()``
        or the store's finalizer tries again.
        """
        self._entries.clear()
        self._nbytes = self._disk_usage = 0
        prefix = self._prefix
        if prefix is None and not self._owned.paths and not self._owned.dirs:
            return
        problem = self._owned.remove()
        self._prefix = None  # the next run gets a prefix of its own either way
        if problem is None:
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
            return
        left = len(self._owned.paths) + len(self._owned.dirs)
        where = self._show(prefix) if prefix is not None else self._url
        warnings.warn(
            f"FsspecStore could not delete {left} checkpoint object(s) under {where} ({_reason(problem)[0]}); "
            "the next clear() or the store's finalizer tries again, or delete them by hand",
            RuntimeWarning,
            stacklevel=2,
        )

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def url(self) -> str:
        """The URL the store was made with."""
        return self._url

    @property
    def fs(self) -> Any:
        """The fsspec filesystem the store writes through."""
        return self._fs

    @property
    def path(self) -> str | None:
        """The private prefix holding the checkpoints, as a URL; None before a put and after ``clear``."""
        return None if self._prefix is None else self._show(self._prefix)

    def __repr__(self) -> str:
        return f"FsspecStore(url={self._url!r}, held={len(self._entries)}, nbytes={self._nbytes})"

    # -- writing and reading

    def _put_objects(
        self, leaves: Sequence[tuple[np.ndarray[Any, Any], _Layout]], paths: list[str], touched: list[str]
    ) -> None:
        """One put per object, all leaves at once (an async backend sends them concurrently)."""
        payloads: dict[str, Any] = {}
        for (array, layout), path in zip(leaves, paths, strict=True):
            body = _Body()
            _write(body, array, layout)
            body.seek(0)
            # A stream for the backends that send through aiohttp; the bytes themselves (no copy) elsewhere.
            payloads[path] = body if self._streams else body.getbuffer()
        self._own(paths, touched)  # before the call: a put that fails half-way may have created some
        if len(payloads) == 1:
            self._fs.pipe_file(paths[0], payloads[paths[0]])
        else:
            self._fs.pipe(payloads)

    def _put_files(
        self, leaves: Sequence[tuple[np.ndarray[Any, Any], _Layout]], paths: list[str], touched: list[str]
    ) -> None:
        """Each file under a temporary name, then all renamed into place."""
        mode = "xb" if self._local else "wb"  # a local file is created new, never written through
        for (array, layout), path in zip(leaves, paths, strict=True):
            partial = path + _PARTIAL
            try:
                fh = self._fs.open(partial, mode)
            except FileExistsError as exc:  # not ours: neither written through nor removed
                raise FileExistsError(
                    exc.errno,
                    f"{partial.rsplit('/', 1)[-1]} already exists, and this store did not create it; "
                    "it is left alone, not written through",
                ) from exc
            self._own([partial], touched)
            with fh:
                _write(fh, array, layout)
        self._own(paths, touched)
        for path in paths:
            self._fs.mv(path + _PARTIAL, path)

    def _get_objects(self, paths: list[str], layouts: Sequence[_Layout]) -> list[np.ndarray[Any, Any]]:
        """Each object by one ranged read of at most its size plus one byte (all at once), then checked."""
        sizes = [layout.size for layout in layouts]
        if len(paths) == 1:
            blobs = [self._fs.cat_file(paths[0], start=0, end=sizes[0] + 1)]
        else:
            blobs = self._fs.cat_ranges(paths, [0] * len(paths), [size + 1 for size in sizes])
        arrays = []
        for path, layout, blob in zip(paths, layouts, blobs, strict=True):
            if isinstance(blob, Exception):
                raise blob
            found = _parse_header(bytes(blob[: len(layout.header) + _HEAD_SLACK]))
            if not _matches(found, layout, len(blob)):
                size = len(blob) if len(blob) <= layout.size else self._fs.size(path)
                raise _NotWritten(_mismatch(path.rsplit("/", 1)[-1], layout, found, size))
            array = np.empty(layout.shape, layout.dtype, order="F" if layout.fortran else "C")
            if array.nbytes:
                raw = (array.T if layout.fortran else array).reshape(-1).view(np.uint8)
                raw[:] = np.frombuffer(blob, np.uint8, offset=len(layout.header))
            arrays.append(array)
        return arrays

    def _get_file(self, path: str, layout: _Layout) -> np.ndarray[Any, Any]:
        """The array in file ``path``, read straight into a new array once its header and size match."""
        name = path.rsplit("/", 1)[-1]
        with self._fs.open(path, "rb") as fh:
            head = _read_up_to(fh, len(layout.header) + _HEAD_SLACK)
            size = _size_of(self._fs, fh, path)
            found = _parse_header(head)
            if not _matches(found, layout, size):
                raise _NotWritten(_mismatch(name, layout, found, size))
            array = np.empty(layout.shape, layout.dtype, order="F" if layout.fortran else "C")
            if not array.nbytes:
                return array
            raw = (array.T if layout.fortran else array).reshape(-1).view(np.uint8).data
            fh.seek(len(layout.header))
            done = 0
            while done < len(raw):
                count = fh.readinto(raw[done:])
                if not count:
                    break
                done += count
            if done < len(raw) or fh.read(1):  # shrunk or grew after the size was checked
                raise _NotWritten(_mismatch(name, layout, found, self._fs.size(path)))
        return array

    # -- the private prefix and what the store owns

    def _private_prefix(self) -> str:
        if self._prefix is None:
            prefix = f"{self._root.rstrip('/')}/revseq-{secrets.token_hex(8)}"
            if not self._one_put:  # a directory to make (mode 0700 on a local disk)
                try:
                    if self._local:
                        os.mkdir(prefix, 0o700)
                    else:
                        self._fs.mkdir(prefix, create_parents=False)
                except Exception as exc:
                    where = self._show(self._root)
                    raise _store_error(f"could not create a checkpoint directory in {where}", exc) from exc
                self._owned.dirs.append(prefix)
            if self._finalizer is None:
                self._finalizer = weakref.finalize(self, self._owned.finalize)
                _at_exit(self)
            self._prefix = prefix
        return self._prefix

    def _own(self, paths: Iterable[str], touched: list[str]) -> None:
        for path in paths:
            self._owned.paths.add(path)
            touched.append(path)

    def _forget(self, entry: _Entry) -> None:
        self._nbytes -= entry.nbytes
        self._disk_usage -= entry.size

    def _show(self, path: str) -> str:
        """``path`` as a URL a user can paste (fsspec strips the protocol)."""
        return path if self._local else self._fs.unstrip_protocol(path)


_LIVE: weakref.WeakSet[FsspecStore] = weakref.WeakSet()  # stores that may own objects, for _exit
_EXIT_HOOK: list[bool] = []  # whether _exit is registered: once per process


def _at_exit(store: FsspecStore) -> None:
    """Have ``store``'s objects deleted at exit, while the backend can still reach the network.

    ``weakref.finalize`` runs its callbacks from ``atexit``, after the
    ``concurrent.futures`` executors have shut down, and aiohttp (s3fs,
    gcsfs) needs one to resolve a host name: a delete then fails with
    "cannot schedule new futures after shutdown". ``threading``'s exit hooks
    run in reverse order of registration, before those executors stop, so
    the stores' finalizers are run from one registered there (a private
    hook of the standard library, as concurrent.futures uses; where it is
    missing, the finalizer's own ``atexit`` run is the fallback).
    """
    _LIVE.add(store)
    register = getattr(threading, "_register_atexit", None)
    if _EXIT_HOOK or register is None:
        return
    try:
        register(_exit)
    except RuntimeError:  # the interpreter is already shutting down
        return
    _EXIT_HOOK.append(True)


def _exit() -> None:
    for store in list(_LIVE):
        finalizer = store._finalizer
        if finalizer is not None:
            finalizer()  # runs once: the atexit run then does nothing


class _Body(io.BytesIO):
    """One object's bytes, written by ``disk._write``, as the stream a put sends.

    A stream, not ``bytes``: aiohttp (s3fs, gcsfs) sends a stream in
    chunks, and warns (``ResourceWarning``) that raw bytes over 1 MiB may
    hold up its event loop. ``len`` and slicing are what s3fs needs of a
    body to choose between one put and a multipart upload, and to cut parts.
    """

    def __len__(self) -> int:
        return self.getbuffer().nbytes

    def __getitem__(self, part: slice) -> _Body:
        return _Body(self.getbuffer()[part])


def _size_of(fs: Any, fh: Any, path: str) -> int:
    """The size of the open file ``fh``: from its descriptor where it has one, else as the backend reports it."""
    try:
        return os.fstat(fh.fileno()).st_size
    except Exception:  # no descriptor behind it (a remote file)
        size = getattr(fh, "size", None)
        return int(size) if isinstance(size, int) else int(fs.size(path))


def _remove_files(fs: Any, paths: list[str]) -> None:
    """Delete ``paths`` (one bulk call where the backend has one); a path already gone is no error."""
    if not paths:
        return
    try:
        fs.rm(paths)
        return
    except FileNotFoundError:  # some backends refuse a list holding a missing path: one by one
        pass
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(path)


def _remove_dir(fs: Any, path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path, recursive=True)  # the private directory: what a failed put left in it too


def _reason(exc: BaseException) -> tuple[str, int | None]:
    """The backend's reason for ``exc``, and the system's errno where one is in its chain of causes.

    A backend's own exception (botocore's "Could not connect to the endpoint
    URL") often wraps the system's (``ConnectionRefusedError``): the first
    errno down the chain is kept, and its text added to the reason.
    """
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    code: int | None = None
    cause: BaseException | None = exc
    for _ in range(8):
        if cause is None or (cause is not exc and isinstance(cause, RevseqError)):  # not an error of ours
            break
        found = getattr(cause, "errno", None)
        if not isinstance(found, int):  # fsspec backends raise FileNotFoundError(message) and the like, no errno
            found = next((number for kind, number in _ERRNOS if isinstance(cause, kind)), None)
        if found is not None:
            code = found
            extra = getattr(cause, "strerror", None) or os.strerror(found)
            if cause is not exc and str(cause) not in reason:
                reason = f"{reason} ({cause})"
            elif extra not in reason:
                reason = f"{extra}: {reason}"
            break
        cause = (
            cause.__cause__
            if cause.__cause__ is not None
            else None
            if cause.__suppress_context__
            else cause.__context__
        )
    return reason, code


def _store_error(message: str, exc: BaseException) -> StoreError:
    """``message: the backend's reason`` as a StoreError keeping the errno found, if any."""
    reason, code = _reason(exc)
    error = StoreError(f"{message}: {reason}")
    error.errno = exc.errno if isinstance(exc, _NotWritten) else code  # set alone, it keeps str(error)
    return error
