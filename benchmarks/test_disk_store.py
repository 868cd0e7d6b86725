"""DiskStore.put and get against the fastest ways to write and read the same ``.npy`` file (issue 10).

Goal: ``DiskStore.put`` within 1.05x of the fastest safe write of a 64 or
256 MB float64 state, and ``get`` within 1.05x of the fastest read, both
keeping everything the store promises (exclusive creation, atomic rename,
cleanup on every failure, a read that checks the file before trusting it).

Writes. Every contender writes the same bytes (a ``.npy`` file: np.save's
128-byte header, then the data) to a new file in one temporary directory
and removes it, so each round creates and deletes one file per contender:

- ``DiskStore.put`` (then ``delete``): exclusive create of ``x_0.npy.partial``,
  the header and data through ``write`` in 16 MiB chunks after reserving the
  data's blocks, rename, and the unlink;
- ``np.save``: numpy's own writer (``ndarray.tofile``, which reserves the
  blocks with ``fallocate`` before one ``fwrite``);
- ``ndarray.tofile``: the header, then ``tofile`` on the open file;
- ``os.write``: the header, then the array's memory through ``os.write`` in
  16 MiB chunks, nothing reserved: the store's write path before issue 10;
- ``os.write after fallocate``: the same after
  ``fallocate(FALLOC_FL_KEEP_SIZE)`` (Linux; called here through ctypes,
  independently of revseq): the floor for a write through Python.

Reads, of files holding those same bytes: ``DiskStore.get``, ``np.load``,
``np.fromfile`` (offset past the header, so no header parsing) and
``readinto``, ``os.readv`` into a new array: the floor. Every reader reads a
file whose data starts at byte 128, because where it starts matters on some
machines: on docs/benchmarks.md's, reading a file whose data starts at byte 0
into a new numpy array takes 2.4x as long as one whose data starts at 128
(the kernel's copy from a page at offset 0 to an address 16 bytes into a
page stalls on 4 kB aliasing), which would make a raw ``np.fromfile`` of a
headerless file look slow for reasons that have nothing to do with it.

What this measures. Nothing is ``fsync``-ed (the store does not, and neither
does np.save): a write ends in the page cache, the file is removed long
before the kernel would write it back (30 s), so these are memory-bandwidth
and file-system bookkeeping measurements, not disk measurements, and reads
come from the page cache too. That is the store's regime for states that fit
the page cache; a state larger than free RAM goes at the disk's speed,
whoever writes it. CPU time (``time.process_time``, all threads, kernel time
included: nearly all of it here) and wall time are both taken. Each round
runs every contender once, in an order that rotates, and the ratio to a
contender is taken within the round; the median of the per-round ratios is
reported with the quartiles and the range. Nothing asserts a time; the bytes
written and the arrays read are asserted equal.
"""

from __future__ import annotations

import ctypes
import errno
import filecmp
import io
import os
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from _common import Times, interleaved, summary

from revseq.disk import DiskStore

MB = 1 << 20
CHUNK = 16 * MB
SIZES = {"64 MB": (64 * MB, 25), "256 MB": (256 * MB, 13)}  # state size in bytes, interleaved rounds
TARGET = "<= 1.05"


def header_of(array: np.ndarray) -> bytes:
    """The ``.npy`` header np.save writes before ``array``'s data."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, np.lib.format.header_data_from_array_1_0(array))
    return out.getvalue()


def keep_size_fallocate() -> Callable[[int, int, int], None] | None:
    """``fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, length)`` from the C library; None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    function = ctypes.CDLL(None, use_errno=True).fallocate64
    function.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)

    def reserve(fd: int, offset: int, length: int) -> None:
        if function(fd, 1, offset, length) != 0 and ctypes.get_errno() not in (errno.EOPNOTSUPP, errno.ENOSYS):
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))

    return reserve


@pytest.fixture(scope="module")
def directory() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="revseq-bench-") as path:
        yield path


Written = tuple[str, Callable[[], None]]  # the file written, and how to remove it


def writers(x: np.ndarray, directory: str) -> tuple[dict[str, Callable[[], Written]], DiskStore]:
    """Each contender writes np.save's bytes for ``x`` to a new file in ``directory``."""
    header = header_of(x)
    data = memoryview(x).cast("B")
    store = DiskStore(directory)
    reserve = keep_size_fallocate()

    def put() -> Written:
        store.put(0, x)
        return os.path.join(store.path or "", "x_0.npy"), lambda: store.delete(0)

    def save() -> Written:
        path = os.path.join(directory, "save.npy")
        np.save(path, x, allow_pickle=False)
        return path, lambda: os.remove(path)

    def tofile() -> Written:
        path = os.path.join(directory, "tofile.npy")
        with open(path, "xb") as fh:
            fh.write(header)
            x.tofile(fh)
        return path, lambda: os.remove(path)

    def os_write(reserved: bool) -> Callable[[], Written]:
        def write() -> Written:
            path = os.path.join(directory, f"write-{reserved}.npy")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                if reserved and reserve is not None:
                    reserve(fd, len(header), len(data))
                os.write(fd, header)
                for start in range(0, len(data), CHUNK):
                    part = data[start : start + CHUNK]
                    while part:
                        part = part[os.write(fd, part) :]
            finally:
                os.close(fd)
            return path, lambda: os.remove(path)

        return write

    found = {"DiskStore.put": put, "np.save": save, "ndarray.tofile": tofile, "os.write": os_write(False)}
    if reserve is not None:
        found["os.write after fallocate"] = os_write(True)
    return found, store


def timed(write: Callable[[], Written]) -> Callable[[], None]:
    """Write the file, then remove it: what one round times."""

    def run() -> None:
        write()[1]()

    return run


def check_writers(contenders: dict[str, Callable[[], Written]], x: np.ndarray, directory: str) -> None:
    """Every contender writes exactly np.save's bytes."""
    expected = os.path.join(directory, "expected.npy")
    np.save(expected, x, allow_pickle=False)
    for name, write in contenders.items():
        path, remove = write()
        assert filecmp.cmp(path, expected, shallow=False), name
        remove()
    os.remove(expected)


def readers(x: np.ndarray, directory: str) -> tuple[dict[str, Callable[[], Any]], DiskStore]:
    path = os.path.join(directory, "read.npy")
    np.save(path, x, allow_pickle=False)
    offset = len(header_of(x))
    store = DiskStore(directory)
    store.put(0, x)

    def get() -> Any:
        return store.get(0)

    def load() -> Any:
        return np.load(path, allow_pickle=False)

    def fromfile() -> Any:
        return np.fromfile(path, dtype=x.dtype, offset=offset)

    def readinto() -> Any:
        out = np.empty_like(x)
        view = memoryview(out).cast("B")
        fd = os.open(path, os.O_RDONLY)
        try:
            os.lseek(fd, offset, os.SEEK_SET)
            done = 0
            while done < len(view):
                count = os.readv(fd, [view[done : done + CHUNK]])
                if not count:
                    raise EOFError(path)
                done += count
        finally:
            os.close(fd)
        return out

    return {"DiskStore.get": get, "np.load": load, "np.fromfile": fromfile, "readinto": readinto}, store


def report(benchmark: Any, timings: Any, ours: str, size: str, times: Times, references: tuple[str, ...]) -> None:
    """Ratios of ``ours`` to every other contender, round by round, CPU and wall; ``references``' in the table."""
    rounds = len(times[ours][0])
    medians = {name: statistics.median(cpu) for name, (cpu, _) in times.items()}
    benchmark.extra_info["rounds"] = rounds
    benchmark.extra_info["cpu_ms_median"] = {name: round(1e3 * m, 2) for name, m in medians.items()}
    walls = {name: statistics.median(wall) for name, (_, wall) in times.items()}
    benchmark.extra_info["wall_ms_median"] = {name: round(1e3 * m, 2) for name, m in walls.items()}
    print(f"\n{ours}, {size} float64, {rounds} rounds; time / other contender's in the same round, median "
          f"[quartiles] (range):")  # fmt: skip
    for name in times:
        line = f"  {name:26s} CPU {1e3 * medians[name]:7.1f} ms, wall {1e3 * walls[name]:7.1f} ms"
        if name != ours:
            for clock, index in (("cpu", 0), ("wall", 1)):
                s = summary([a / b for a, b in zip(times[ours][index], times[name][index], strict=True)])
                benchmark.extra_info[f"ratio_{clock}_vs_{name}"] = s
                line += f"   {clock} {s['median']:.3f} [{s['quartiles'][0]:.3f}, {s['quartiles'][1]:.3f}]"
                line += f" ({s['range'][0]:.3f} .. {s['range'][1]:.3f})"
        print(line)
    for other in references:
        if other in times:
            cpu = summary([a / b for a, b in zip(times[ours][0], times[other][0], strict=True)])
            timings.add(f"{ours}, {size} (CPU, median of {rounds} rounds)", other, cpu["median"], target=TARGET)


@pytest.mark.parametrize("size", list(SIZES))
def test_put(benchmark, timings, directory, size):
    nbytes, rounds = SIZES[size]
    x = np.random.default_rng(0).standard_normal(nbytes // 8)
    contenders, store = writers(x, directory)
    check_writers(contenders, x, directory)
    benchmark.extra_info["bytes"] = x.nbytes
    benchmark.pedantic(timed(contenders["DiskStore.put"]), rounds=3, iterations=1)
    times = interleaved({name: timed(write) for name, write in contenders.items()}, rounds)
    report(benchmark, timings, "DiskStore.put", size, times, ("np.save", "os.write after fallocate"))
    store.clear()
    assert os.listdir(directory) == []


@pytest.mark.parametrize("size", list(SIZES))
def test_get(benchmark, timings, directory, size):
    nbytes, rounds = SIZES[size]
    x = np.random.default_rng(0).standard_normal(nbytes // 8)
    contenders, store = readers(x, directory)
    for name, read in contenders.items():
        assert np.array_equal(read(), x), name
    benchmark.extra_info["bytes"] = x.nbytes
    benchmark.pedantic(contenders["DiskStore.get"], rounds=3, iterations=1)
    report(benchmark, timings, "DiskStore.get", size, interleaved(contenders, rounds), ("np.load", "readinto"))
    store.clear()
    os.remove(os.path.join(directory, "read.npy"))
    assert os.listdir(directory) == []
