"""FsspecStore.put and get on file://, memory:// and s3:// (moto's server on localhost) against DiskStore (issue 12).

The same 64 MB float64 state is written (then deleted) and read back by
each contender; each round runs every contender once, in an order that
rotates, and the ratio to ``DiskStore`` is taken within the round; the
median of the per-round ratios is reported with the quartiles and the range
(benchmarks/_common.py). Contenders:

- ``DiskStore``: the baseline, a private directory under the system's
  temporary directory (the page cache: memory bandwidth, nothing flushed);
- ``FsspecStore file://``: the same directory through fsspec's local
  filesystem (write under ``.partial``, rename; read into a new array);
- ``FsspecStore memory://``: fsspec's in-process memory filesystem;
- ``FsspecStore s3://``: a real S3 API over HTTP on localhost, moto's
  server in its own process (``REVSEQ_TEST_S3_ENDPOINT`` if set, else
  started here), so CPU time is the client's alone; wall time includes the
  server's work and the loopback transfer;
- ``s3fs pipe_file`` / ``s3fs cat_file``: plain s3fs on the same server, as
  a user would call it: np.save's bytes (made with ``np.save`` into a
  ``BytesIO``) put as ``bytes``; the object fetched whole (s3fs asks for its
  size first) and copied into a new array, as the store must, since
  ``bytes`` are read-only. No checks. Not a floor: the store makes one copy
  fewer on a put and one request fewer on a get.

Nothing asserts a time; the arrays read are asserted equal to the state.
"""

from __future__ import annotations

import io
import os
import statistics
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from _common import Times, interleaved, s3_endpoint, summary

from revseq.disk import DiskStore

fsspec = pytest.importorskip("fsspec")
s3fs = pytest.importorskip("s3fs")
from revseq.fsspec_store import FsspecStore  # noqa: E402 (after the skips)

MB = 1 << 20
NBYTES, ROUNDS = 64 * MB, 7
CREDENTIALS = {"key": "testing", "secret": "testing"}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    yield from s3_endpoint()


@pytest.fixture(scope="module")
def directory() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="revseq-bench-") as path:
        yield path


def npy(x: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, x, allow_pickle=False)
    return buffer.getvalue()


def stores(directory: str, endpoint: str) -> dict[str, Any]:
    opts = {**CREDENTIALS, "endpoint_url": endpoint}
    s3 = s3fs.S3FileSystem(**opts)
    bucket = f"revseq-bench-{os.urandom(4).hex()}"
    s3.mkdir(bucket)
    return {
        "DiskStore": DiskStore(directory),
        "FsspecStore file://": FsspecStore(f"file://{directory}"),
        "FsspecStore memory://": FsspecStore(f"memory://revseq-bench-{os.urandom(4).hex()}"),
        "FsspecStore s3://": FsspecStore(f"s3://{bucket}/runs", **opts),
        "_s3": (s3, bucket),
    }


def report(benchmark: Any, timings: Any, what: str, times: Times) -> None:
    base = "DiskStore"
    rounds = len(times[base][0])
    print(f"\n{what}, 64 MB float64, {rounds} rounds; time / DiskStore's in the same round, median [quartiles]:")
    for name, (cpu, wall) in times.items():
        line = f"  {name:28s} CPU {1e3 * statistics.median(cpu):8.1f} ms, wall {1e3 * statistics.median(wall):8.1f} ms"
        benchmark.extra_info[f"{name} cpu_ms"] = round(1e3 * statistics.median(cpu), 2)
        benchmark.extra_info[f"{name} wall_ms"] = round(1e3 * statistics.median(wall), 2)
        if name != base:
            for clock, index in (("cpu", 0), ("wall", 1)):
                s = summary([a / b for a, b in zip(times[name][index], times[base][index], strict=True)])
                benchmark.extra_info[f"{name} {clock} ratio"] = s
                line += f"   {clock} {s['median']:.2f} [{s['quartiles'][0]:.2f}, {s['quartiles'][1]:.2f}]"
            timings.add(f"{what} {name}, 64 MB (wall, median of {rounds} rounds)", base, summary(
                [a / b for a, b in zip(times[name][1], times[base][1], strict=True)])["median"])  # fmt: skip
        print(line)


def test_put(benchmark: Any, timings: Any, directory: str, endpoint: str) -> None:
    x = np.random.default_rng(0).standard_normal(NBYTES // 8)
    found = stores(directory, endpoint)
    s3, bucket = found.pop("_s3")
    data = npy(x)

    def put(store: Any) -> Callable[[], None]:
        def run() -> None:
            store.put(0, x)
            store.delete(0)

        return run

    def pipe() -> None:
        s3.pipe_file(f"{bucket}/floor.npy", npy(x))  # np.save's bytes made each time, as the store makes its own
        s3.rm_file(f"{bucket}/floor.npy")

    contenders: dict[str, Callable[[], None]] = {name: put(store) for name, store in found.items()}
    contenders["s3fs pipe_file"] = pipe
    benchmark.extra_info["bytes"] = x.nbytes
    benchmark.pedantic(contenders["FsspecStore s3://"], rounds=1, iterations=1)
    report(benchmark, timings, "put", interleaved(contenders, ROUNDS))
    found["FsspecStore s3://"].put(0, x)  # what the store wrote is np.save's bytes
    assert s3.cat_file(f"{found['FsspecStore s3://'].path.split('://', 1)[1]}/x_0.npy") == data
    for store in found.values():
        store.clear()
    assert s3.find(bucket) == []
    s3.rmdir(bucket)


def test_get(benchmark: Any, timings: Any, directory: str, endpoint: str) -> None:
    x = np.random.default_rng(0).standard_normal(NBYTES // 8)
    found = stores(directory, endpoint)
    s3, bucket = found.pop("_s3")
    header = len(npy(x)) - x.nbytes  # np.save's header: 128 bytes
    s3.pipe_file(f"{bucket}/floor.npy", npy(x))
    for store in found.values():
        store.put(0, x)

    def cat() -> np.ndarray:
        blob = s3.cat_file(f"{bucket}/floor.npy")
        out = np.empty_like(x)
        out.view(np.uint8)[:] = np.frombuffer(blob, np.uint8, offset=header)
        return out

    contenders: dict[str, Callable[[], Any]] = {name: (lambda s=store: s.get(0)) for name, store in found.items()}
    contenders["s3fs cat_file"] = cat
    for name, read in contenders.items():
        assert np.array_equal(read(), x), name
    benchmark.extra_info["bytes"] = x.nbytes
    benchmark.pedantic(contenders["FsspecStore s3://"], rounds=1, iterations=1)
    report(benchmark, timings, "get", interleaved(contenders, ROUNDS))
    for store in found.values():
        store.clear()
    s3.rm_file(f"{bucket}/floor.npy")
    assert s3.find(bucket) == []
    s3.rmdir(bucket)
