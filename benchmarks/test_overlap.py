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

Run: ``python -m pytest benchmarks/test_overlap.py --benchmark-only -s``.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _common import heat_step, heat_vjp, interleaved

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
    """A DiskStore whose calls are timed from outside (the synchronous contender: blocked = I/O)."""

    def __init__(self, inner: DiskStore) -> None:
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


def _seconds(fn: Callable[[], Any], times: int = 3) -> float:
    spent = []
    for _ in range(times):
        start = time.perf_counter()
        fn()
        spent.append(time.perf_counter() - start)
    return statistics.median(spent)


@pytest.mark.parametrize("mb", SIZES)
def test_overlapped_against_synchronous(benchmark: Any, mb: int) -> None:
    m = int((mb * 2**20 / 8) ** 0.5)
    grid = np.linspace(0.0, 1.0, m)
    x0 = np.sin(np.pi * grid)[:, None] * np.sin(2 * np.pi * grid)[None, :]
    rec = revseq.Recurrence(f, vjp=vjp)
    directory = tempfile.mkdtemp(prefix="overlap-bench-")
    probe = DiskStore(directory)
    step = _seconds(lambda: f(x0))
    adjoint = _seconds(lambda: vjp(x0, x0))
    write = _seconds(lambda: (probe.put(0, x0), probe.delete(0)))
    probe.put(0, x0)
    read = _seconds(lambda: probe.get(0))
    probe.clear()
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
            assert out.stats.forward_steps == cost.forward_steps
            assert out.stats.disk_writes == cost.disk_writes
            if not reference:
                reference.append(out.gradient)
            np.testing.assert_array_equal(out.gradient, reference[0])
            if isinstance(store, Timed):
                io = blocked = store.seconds
            else:
                io, blocked = store.io_seconds, store.blocked_seconds
            entry = results.setdefault(name, {"io": [], "blocked": [], "peak_MB": out.stats.peak_bytes / 1e6})
            entry["io"].append(io)
            entry["blocked"].append(blocked)
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
