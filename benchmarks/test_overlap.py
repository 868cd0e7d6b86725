"""Overlapped checkpoint I/O against synchronous I/O on a real case (issue 11, part 1).

A 2-D heat equation with a small cubic reaction, ``x + k lap(x) - dt x^3``
on an ``m x m`` float64 field (64 MB: m = 2896; a 16 MB one too, so a quick
run finishes in a few minutes; set ``REVSEQ_OVERLAP_MB=64,256`` for others),
reversed by ``MultistageCheckpointing(ram=2)`` planned with costs measured
here (one step, one ``DiskStore`` put and get of x0). The same plan runs
with three disk stores, in interleaved rounds in one process (the order
rotating):

- ``DiskStore``: synchronous, every write and read in the run's thread;
- ``OverlappedStore(DiskStore, depth=2)``: write-behind and read-ahead, the
  state copied into its buffer on put;
- the same with ``copy=False`` (the staged state is the run's own array).

Per store: wall time (median and range over rounds), I/O time (time in the
inner DiskStore's calls, whichever thread made them), the time the run's
thread was blocked on I/O (for ``DiskStore``: all of it), the fraction of I/O
hidden, ``1 - blocked / I/O``, the share of the synchronous run's I/O time
the run no longer waits for (``1 - blocked / DiskStore's I/O``, same
round), and the peak bytes in RAM (checkpoints plus
buffers). The cost model's prediction (:func:`revseq.overlap.overlapped_time`
with the measured costs) is printed beside the measured wall time. Nothing
asserts a time; the gradients are asserted equal to the synchronous run's.

A second test, ``test_overlapped_on_s3``, stores the checkpoints in S3
(``FsspecStore("s3://...")`` on moto's server on localhost, in its own
process, or ``REVSEQ_TEST_S3_ENDPOINT``; skipped without moto), where the
I/O thread waits on a socket rather than copying memory itself. One field
(``REVSEQ_OVERLAP_S3_MB``, default 16 MB), n = 32, 4 states of memory, and
four runs in interleaved rounds: the synchronous programme's plan with the
synchronous store (4 memory checkpoints) and with
``OverlappedStore(depth=2)`` (2 checkpoints beside the 2 buffers), and the
overlap-aware programme's plan (``MultistageCheckpointing(ram=4,
depth=2)``) with both stores. Each row gives the cost model's prediction
beside the measured wall time: ``costs.time + adjoints`` for the
synchronous store, :func:`~revseq.overlap.overlapped_time` for the
overlapped one.

Run: ``python -m pytest benchmarks/test_overlap.py --benchmark-only -s``
(``-k s3`` for the S3 case alone).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from _common import heat_field, heat_step, heat_vjp, interleaved, measured_costs, s3_endpoint

import revseq
from revseq.disk import DiskStore
from revseq.overlap import OverlappedStore, overlapped_time

ROUNDS = 3
N = 24
RAM = 2
DEPTH = 2
SIZES = [int(mb) for mb in os.environ.get("REVSEQ_OVERLAP_MB", "16,64").split(",")]


f, vjp = heat_step, heat_vjp


class Timed:
    """A store (DiskStore, FsspecStore) whose calls are timed from outside (a synchronous contender: blocked = I/O)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = 0.0

    def _timed(self, call: Callable[..., Any], *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return call(*args)
        finally:
            self.seconds += time.perf_counter() - start

    def put(self, key: int, state: Any) -> None:
        self._timed(self.inner.put, key, state)

    def get(self, key: int) -> Any:
        return self._timed(self.inner.get, key)

    def delete(self, key: int) -> None:
        self._timed(self.inner.delete, key)

    def clear(self) -> None:
        self._timed(self.inner.clear)

    def __len__(self) -> int:
        return len(self.inner)

    @property
    def nbytes(self) -> int:
        return self.inner.nbytes

    @property
    def copies(self) -> bool:
        return True

    @property
    def bytes_written(self) -> int:
        return self.inner.bytes_written

    @property
    def bytes_read(self) -> int:
        return self.inner.bytes_read


def _record(out: Any, store: Any, cost: Any, reference: list[np.ndarray], entry: dict[str, Any]) -> None:
    """Check a run against the plan's counts and the first run's gradient; add its I/O and blocked seconds."""
    stats = out.stats
    assert (stats.forward_steps, stats.disk_writes, stats.disk_reads) == (
        cost.forward_steps,
        cost.disk_writes,
        cost.disk_reads,
    )
    if not reference:
        reference.append(out.gradient)
    np.testing.assert_array_equal(out.gradient, reference[0])
    if isinstance(store, Timed):
        io = blocked = store.seconds
    else:
        io, blocked = store.io_seconds, store.blocked_seconds
    entry["io"].append(io)
    entry["blocked"].append(blocked)


@pytest.mark.parametrize("mb", SIZES)
def test_overlapped_against_synchronous(benchmark: Any, mb: int) -> None:
    m = int((mb * 2**20 / 8) ** 0.5)
    x0 = heat_field(m)
    rec = revseq.Recurrence(f, vjp=vjp)
    directory = tempfile.mkdtemp(prefix="overlap-bench-")
    timed = measured_costs(f, vjp, x0, DiskStore(directory))
    step, write, read, adjoint = timed.step, timed.write, timed.read, timed.adjoint
    costs = revseq.DiskCosts(step=step, write=write, read=read)
    plan = revseq.MultistageCheckpointing(ram=RAM, costs=costs)
    cost = plan.cost(N)
    predicted, synchronous = overlapped_time(
        plan.actions(N), N, step=step, write=write, read=read, adjoint=adjoint, depth=DEPTH
    )
    reference: list[np.ndarray] = []
    results: dict[str, dict[str, Any]] = {}
    made = {
        "DiskStore": lambda: Timed(DiskStore(directory)),
        f"OverlappedStore(depth={DEPTH})": lambda: OverlappedStore(DiskStore(directory), depth=DEPTH),
        f"OverlappedStore(depth={DEPTH}, copy=False)": lambda: OverlappedStore(
            DiskStore(directory), depth=DEPTH, copy=False
        ),
    }
    runs = {}
    for name, make in made.items():

        def run(make: Callable[[], Any] = make, name: str = name) -> None:
            store = make()
            out = revseq.backprop(rec, x0, N, plan, disk=store)
            entry = results.setdefault(name, {"io": [], "blocked": [], "peak_MB": out.stats.peak_bytes / 1e6})
            _record(out, store, cost, reference, entry)
            assert os.listdir(directory) == []

        runs[name] = run
    benchmark.pedantic(runs["DiskStore"], rounds=1, iterations=1)
    for entry in results.values():
        entry["io"].clear()
        entry["blocked"].clear()
    times = interleaved(runs, ROUNDS, warmup=0)
    os.rmdir(directory)
    print(
        f"\n{mb} MB ({m} x {m} float64), n={N}, MultistageCheckpointing(ram={RAM}): forward steps "
        f"{cost.forward_steps}, disk writes {cost.disk_writes}, disk reads {cost.disk_reads}; measured "
        f"step {step * 1e3:.0f} ms, adjoint {adjoint * 1e3:.0f} ms, write {write * 1e3:.0f} ms, "
        f"read {read * 1e3:.0f} ms; {ROUNDS} rounds; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"cost model (THEORY 6.2, overlapped_time): synchronous {synchronous:.2f} s, "
        f"overlapped (depth={DEPTH}) {predicted:.2f} s"
    )
    print(
        "| disk store | wall s, median [range] | wall / DiskStore | I/O s | blocked s | I/O hidden | "
        "wait saved | peak MB in RAM |"
    )
    print("|---|---|---|---|---|---|---|---|")
    sync_io = results["DiskStore"]["io"]
    sync_wall = times["DiskStore"][1]
    for name, entry in results.items():
        wall = sorted(times[name][1])
        ratio = sorted(w / s for w, s in zip(times[name][1], sync_wall, strict=True))  # round by round
        io, blocked = statistics.median(entry["io"]), statistics.median(entry["blocked"])
        hidden = sorted(1 - b / i for b, i in zip(entry["blocked"], entry["io"], strict=True))
        saved = sorted(1 - b / i for b, i in zip(entry["blocked"], sync_io, strict=True))
        entry.update(wall_s=wall, io_s=io, blocked_s=blocked, hidden=hidden, saved=saved)
        print(
            f"| {name} | {statistics.median(wall):.2f} [{wall[0]:.2f}, {wall[-1]:.2f}] | "
            f"{statistics.median(ratio):.2f} [{ratio[0]:.2f}, {ratio[-1]:.2f}] | {io:.2f} | {blocked:.2f} | "
            f"{statistics.median(hidden):.0%} [{hidden[0]:.0%}, {hidden[-1]:.0%}] | "
            f"{statistics.median(saved):.0%} [{saved[0]:.0%}, {saved[-1]:.0%}] | {entry['peak_MB']:.0f} |"
        )
    benchmark.extra_info["results"] = results
    benchmark.extra_info["predicted_s"] = {"synchronous": synchronous, "overlapped": predicted}


S3_SIZES = [int(mb) for mb in os.environ.get("REVSEQ_OVERLAP_S3_MB", "16").split(",")]
S3_LATENCIES = [float(s) for s in os.environ.get("REVSEQ_OVERLAP_S3_LATENCY", "0,0.1").split(",")]
S3_N = 32
S3_RAM = 4  # states of memory: checkpoints, and the overlapped store's buffers
CREDENTIALS = {"key": "testing", "secret": "testing"}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    yield from s3_endpoint()


class Latent(Timed):
    """A store whose every put, get and delete first waits ``latency`` seconds, as on a distant network.

    moto's server answers from localhost in its own process, competing with
    the run for the same cores; a remote object store makes the client wait
    (a round trip, a bandwidth limit) without using them. ``time.sleep``
    releases the GIL, as a socket waiting for an answer does.
    """

    def __init__(self, inner: Any, latency: float) -> None:
        super().__init__(inner)
        self.latency = latency

    def put(self, key: int, state: Any) -> None:
        time.sleep(self.latency)
        self.inner.put(key, state)

    def get(self, key: int) -> Any:
        time.sleep(self.latency)
        return self.inner.get(key)

    def delete(self, key: int) -> None:
        time.sleep(self.latency)
        self.inner.delete(key)

    def clear(self) -> None:
        self.inner.clear()


@pytest.mark.parametrize("latency", S3_LATENCIES)
@pytest.mark.parametrize("mb", S3_SIZES)
def test_overlapped_on_s3(benchmark: Any, endpoint: str, mb: int, latency: float) -> None:
    pytest.importorskip("s3fs")
    from revseq.fsspec_store import FsspecStore

    m = int((mb * 2**20 / 8) ** 0.5)
    x0 = heat_field(m)
    rec = revseq.Recurrence(f, vjp=vjp)
    options = {**CREDENTIALS, "endpoint_url": endpoint}
    import s3fs

    s3 = s3fs.S3FileSystem(**options)
    bucket = f"revseq-overlap-{os.urandom(4).hex()}"
    s3.mkdir(bucket)
    url = f"s3://{bucket}/runs"

    def fresh() -> Any:
        store = FsspecStore(url, **options)
        return Latent(store, latency) if latency else store

    costs = measured_costs(f, vjp, x0, fresh())
    step, write, read, adjoint = costs.step, costs.write, costs.read, costs.adjoint
    plans = {
        "synchronous programme": (
            revseq.MultistageCheckpointing(ram=S3_RAM, costs=costs),
            revseq.MultistageCheckpointing(ram=S3_RAM - DEPTH, costs=costs),
        ),
        f"overlap-aware (depth={DEPTH})": (revseq.MultistageCheckpointing(ram=S3_RAM, costs=costs, depth=DEPTH),) * 2,
    }
    contenders: dict[str, tuple[Any, Callable[[], Any], float]] = {}
    for planned, (for_sync, for_overlap) in plans.items():
        timed = dict(step=step, write=write, read=read, adjoint=adjoint)
        contenders[f"{planned}, FsspecStore"] = (
            for_sync,
            lambda: Timed(fresh()),
            overlapped_time(for_sync.actions(S3_N), S3_N, **timed, depth=0)[0],
        )
        contenders[f"{planned}, OverlappedStore(depth={DEPTH})"] = (
            for_overlap,
            lambda: OverlappedStore(fresh(), depth=DEPTH),
            overlapped_time(for_overlap.actions(S3_N), S3_N, **timed, depth=DEPTH)[0],
        )
    reference: list[np.ndarray] = []
    results: dict[str, dict[str, Any]] = {}
    runs = {}
    for name, (strategy, make, _) in contenders.items():
        cost = strategy.cost(S3_N)

        def run(strategy: Any = strategy, make: Callable[[], Any] = make, name: str = name, cost: Any = cost) -> None:
            store = make()
            out = revseq.backprop(rec, x0, S3_N, strategy, disk=store)
            entry = results.setdefault(name, {"io": [], "blocked": [], "cost": cost})
            _record(out, store, cost, reference, entry)

        runs[name] = run
    benchmark.pedantic(runs[next(iter(runs))], rounds=1, iterations=1)
    for entry in results.values():
        entry["io"].clear()
        entry["blocked"].clear()
    times = interleaved(runs, ROUNDS, warmup=0)
    assert s3.find(bucket) == []  # every run removed its checkpoints
    s3.rmdir(bucket)
    print(
        f"\n{mb} MB ({m} x {m} float64) on S3 (moto on localhost, {latency * 1e3:.0f} ms added per request), "
        f"n={S3_N}, {S3_RAM} states of memory; measured "
        f"step {step * 1e3:.0f} ms, adjoint {adjoint * 1e3:.0f} ms, write {write * 1e3:.0f} ms, "
        f"read {read * 1e3:.0f} ms; {ROUNDS} rounds; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        "| plan | store | steps / writes / reads | predicted s | wall s, median [range] | CPU s | I/O s | blocked s | "
        "I/O hidden |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, entry in results.items():
        planned, store = name.split(", ", 1)
        cost = entry.pop("cost")
        wall = sorted(times[name][1])
        io, blocked = statistics.median(entry["io"]), statistics.median(entry["blocked"])
        hidden = sorted(1 - b / i if i > 0 else 0.0 for b, i in zip(entry["blocked"], entry["io"], strict=True))
        predicted = contenders[name][2]
        entry.update(
            cpu_s=sorted(times[name][0]),
            wall_s=wall,
            io_s=io,
            blocked_s=blocked,
            hidden=hidden,
            predicted_s=predicted,
            counts=[cost.forward_steps, cost.disk_writes, cost.disk_reads],
        )
        print(
            f"| {planned} | {store} | {cost.forward_steps} / {cost.disk_writes} / {cost.disk_reads} | "
            f"{predicted:.2f} | {statistics.median(wall):.2f} [{wall[0]:.2f}, {wall[-1]:.2f}] | "
            f"{statistics.median(times[name][0]):.2f} | {io:.2f} | "
            f"{blocked:.2f} | {statistics.median(hidden):.0%} [{hidden[0]:.0%}, {hidden[-1]:.0%}] |"
        )
    benchmark.extra_info["results"] = results
