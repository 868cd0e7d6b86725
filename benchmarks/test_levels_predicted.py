"""Three real storage levels: ``revseq.choose``'s predictions against measured wall time (issue 11, parts 3 and 4).

The step is a 2-D heat equation with a small cubic reaction,
``x + k lap(x) - dt x^3``, on an ``m x m`` float64 field (2 MiB: m = 512;
``REVSEQ_LEVELS_M`` for another m), ``n = 300``, its vjp by hand. The
levels are real:

- memory, room for ``SLOTS = 6`` states (``max_bytes``);
- a ``DiskStore`` in a private temporary directory (the page cache: nothing
  is flushed), limited to ``DISK_STATES = 8`` states, so that the
  three-level plan has a reason to use the third level;
- an ``FsspecStore`` on ``s3://`` against moto's S3 server on localhost,
  started here in its own process (``REVSEQ_TEST_S3_ENDPOINT`` if set), so
  the CPU time measured is the client's alone.

``revseq.choose(f, x0, n, max_bytes=..., disk=[(disk, bytes), s3])`` times a
step and a write and a read at each level and prices its candidates
(binomial in memory, and ``MultistageCheckpointing`` over the three
levels). Added here, priced by the same model at the same measured costs:
the two-level plans memory + disk (no limit) and memory + S3. Each
candidate's gradient is first checked equal, bit for bit, to ``StoreAll``'s;
then every candidate runs ``ROUNDS`` times in interleaved rounds (the order
rotating), wall and CPU time. The table gives the prediction, the
prediction plus the ``n`` adjoint steps (which the model leaves out: every
strategy makes the same ``n``; their time is measured here, a median of a
few vjp calls), the measured median and range (wall and CPU), and, from
f and vjp timed from outside during each run, the time of a step inside the
run and the time the run spent outside f and vjp (I/O, deletes, the
engine) beside the I/O the model predicted.

The second test takes one level below memory at a time (the disk, then
S3), measures a step, an adjoint, a write and a read there, plans with
``revseq.overlap.overlapped_plan(N, ram=SLOTS, depth=DEPTH)`` (a
``MultistageCheckpointing`` with ``SLOTS - DEPTH`` checkpoints in memory,
the ``DEPTH`` buffers taking the rest, chosen by its overlapped time), and
runs that plan with the synchronous store and with
``OverlappedStore(store, depth=DEPTH)``, in interleaved rounds, each beside
``revseq.overlap.overlapped_time``'s prediction (synchronous and
overlapped).

Nothing asserts a time. Counts (forward steps, writes and reads per level)
are asserted equal to the plan's ``cost(n)``; nothing is left in the
directory or the bucket (asserted). Run:
``python -m pytest benchmarks/test_levels_predicted.py --benchmark-only -s``.
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
from _common import heat_field, heat_step, heat_vjp, interleaved, measured_costs, median_seconds, s3_endpoint

import revseq
from revseq.disk import DiskStore
from revseq.overlap import OverlappedStore, overlapped_plan, overlapped_time

fsspec = pytest.importorskip("fsspec")
s3fs = pytest.importorskip("s3fs")
from revseq.fsspec_store import FsspecStore  # noqa: E402 (after the skips)

M = int(os.environ.get("REVSEQ_LEVELS_M", "512"))
N = 300
SLOTS = 6  # states of memory
DISK_STATES = 8  # the disk level's capacity in the three-level plan
DEPTH = 2  # OverlappedStore's buffers
ROUNDS = 3
CREDENTIALS = {"key": "testing", "secret": "testing"}


f, vjp = heat_step, heat_vjp


class Clock:
    """f and vjp timed from outside, summed over a run: the time a run spent in its steps, apart from the rest."""

    def __init__(self) -> None:
        self.steps = self.adjoints = 0.0
        self.rec = revseq.Recurrence(self._f, vjp=self._vjp)

    def _f(self, x: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        try:
            return f(x)
        finally:
            self.steps += time.perf_counter() - start

    def _vjp(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        try:
            return vjp(x, g)
        finally:
            self.adjoints += time.perf_counter() - start

    def reset(self) -> None:
        self.steps = self.adjoints = 0.0


def _x0() -> np.ndarray:
    return heat_field(M)


def _round(value: float) -> float:
    return float(f"{value:.3g}")  # as choose rounds what it measured


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    yield from s3_endpoint()


@pytest.fixture
def places(endpoint: str) -> Iterator[tuple[str, Any, str]]:
    """A private directory and a new bucket on the server, (directory, s3fs connection, bucket); both removed after."""
    opts = {**CREDENTIALS, "endpoint_url": endpoint}
    s3 = s3fs.S3FileSystem(**opts, skip_instance_cache=True)
    bucket = f"revseq-bench-{os.urandom(4).hex()}"
    s3.mkdir(bucket)
    directory = tempfile.mkdtemp(prefix="revseq-levels-")
    try:
        yield directory, s3, bucket
        s3.invalidate_cache()
        assert s3.find(bucket) == [], "objects left in the bucket"
        assert os.listdir(directory) == [], "files left in the directory"
    finally:
        for path in s3.find(bucket):
            s3.rm_file(path)
        s3.rmdir(bucket)
        for name in os.listdir(directory):
            os.remove(os.path.join(directory, name))
        os.rmdir(directory)


def _s3_store(endpoint: str, bucket: str) -> FsspecStore:
    return FsspecStore(f"s3://{bucket}/runs", **CREDENTIALS, endpoint_url=endpoint)


def _check_counts(stats: Any, cost: Any) -> None:
    assert stats.forward_steps == cost.forward_steps
    assert stats.disk_writes == cost.disk_writes
    assert stats.disk_reads == cost.disk_reads
    assert stats.deep_levels == cost.deep_levels


def _row(name: str, wall: list[float], cpu: list[float], *predicted: float) -> str:
    w, c = sorted(wall), sorted(cpu)
    cells = " | ".join(f"{p:.2f}" for p in predicted)
    return (
        f"| {name} | {cells} | {statistics.median(w):.2f} [{w[0]:.2f}, {w[-1]:.2f}] | "
        f"{statistics.median(c):.2f} [{c[0]:.2f}, {c[-1]:.2f}] |"
    )


def test_levels_predicted_against_measured(benchmark: Any, endpoint: str, places: tuple[str, Any, str]) -> None:
    directory, _, bucket = places
    x0 = _x0()
    state = x0.nbytes
    rec = revseq.Recurrence(f, vjp=vjp)
    clock = Clock()
    disk, s3 = DiskStore(directory), _s3_store(endpoint, bucket)
    load_before = os.getloadavg()
    choice = revseq.choose(rec, x0, N, max_bytes=SLOTS * state, disk=[(disk, DISK_STATES * state), s3])
    adjoint = median_seconds(lambda: vjp(x0, x0), 5)
    step = choice.step_seconds
    (disk_w, disk_r), (s3_w, s3_r) = choice.levels
    unit = _round(step)

    def level(w: float, r: float) -> revseq.Level:  # a level with no limit, its costs in steps, as choose makes them
        return revseq.Level(None, _round(w) / unit, _round(r) / unit)

    two_level = {
        "memory + disk": (revseq.MultistageCheckpointing(levels=[revseq.Level(SLOTS), level(disk_w, disk_r)]), [disk]),
        "memory + S3": (revseq.MultistageCheckpointing(levels=[revseq.Level(SLOTS), level(s3_w, s3_r)]), [s3]),
    }
    candidates: dict[str, tuple[Any, Any, float]] = {}  # name -> (strategy, disk argument, predicted seconds)
    where: Any
    for c in choice.candidates:
        if isinstance(c.strategy, revseq.MultistageCheckpointing):
            name, where = "memory + disk + S3", [disk, s3]
        else:
            name, where = type(c.strategy).__name__, None
        candidates[name] = (c.strategy, where, c.predicted_seconds)
    for name, (strategy, where) in two_level.items():
        candidates[name] = (strategy, where, unit * strategy.time_of(strategy.cost(N)))
    picked = next(name for name, (s, _, _) in candidates.items() if s is choice.strategy)

    reference = revseq.backprop(rec, x0, N, revseq.StoreAll()).gradient
    runs: dict[str, Callable[[], None]] = {}
    inside: dict[str, list[tuple[float, float]]] = {}  # name -> (seconds in f, in vjp) per timed run
    for name, (strategy, where, _) in candidates.items():
        cost = strategy.cost(N)

        def run(strategy: Any = strategy, where: Any = where, cost: Any = cost, name: str = name) -> None:
            clock.reset()
            out = revseq.backprop(clock.rec, x0, N, strategy, disk=where)
            inside.setdefault(name, []).append((clock.steps, clock.adjoints))
            _check_counts(out.stats, cost)
            assert np.array_equal(out.gradient, reference)

        # The gradient checked before any timing (this run is the warm-up; the pick's is pytest-benchmark's).
        benchmark.pedantic(run, rounds=1, iterations=1) if name == picked else run()
        runs[name] = run
    inside.clear()
    times = interleaved(runs, ROUNDS, warmup=0)
    load_after = os.getloadavg()

    print(
        f"\n{M} x {M} float64 ({state / 2**20:.1f} MiB), n={N}, memory for {SLOTS} states, disk level "
        f"{DISK_STATES} states in the three-level plan; choose measured: step {step * 1e3:.2f} ms, "
        f"disk write {disk_w * 1e3:.2f} ms / read {disk_r * 1e3:.2f} ms, "
        f"S3 write {s3_w * 1e3:.1f} ms / read {s3_r * 1e3:.1f} ms; adjoint (vjp) {adjoint * 1e3:.2f} ms; "
        f"{ROUNDS} rounds; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )
    print(f"choose picked: {choice.strategy!r}")
    print(
        "| candidate | forward steps | writes / reads per level | predicted s | + adjoints s | "
        "measured wall s, median [range] | CPU s, median [range] | ms a step in the run | "
        "predicted I/O s | rest s (wall - f - vjp) |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    info: dict[str, Any] = {}
    for name, (strategy, _, predicted) in candidates.items():
        cost = strategy.cost(N)
        io = ", ".join(
            f"{cost.level(k).writes} / {cost.level(k).reads}" for k in range(1, 2 + len(cost.deep_levels))
        ) if cost.disk_writes else "0"  # fmt: skip
        label = f"{name} (picked)" if name == picked else name
        cells = f"{cost.forward_steps} | {io}"
        per_step = statistics.median(a for a, _ in inside[name]) / cost.forward_steps
        rest = statistics.median(w - a - b for w, (a, b) in zip(times[name][1], inside[name], strict=True))
        row = _row(f"{label} | {cells}", times[name][1], times[name][0], predicted, predicted + N * adjoint)
        print(f"{row} {per_step * 1e3:.2f} | {predicted - cost.forward_steps * step:.2f} | {rest:.2f} |")
        info[name] = {
            "step_in_run_ms": per_step * 1e3,
            "in_f_vjp_s": inside[name],
            "strategy": repr(strategy),
            "forward_steps": cost.forward_steps,
            "predicted_s": predicted,
            "predicted_with_adjoints_s": predicted + N * adjoint,
            "wall_s": times[name][1],
            "cpu_s": times[name][0],
        }
    benchmark.extra_info.update(
        candidates=info,
        step_ms=step * 1e3,
        adjoint_ms=adjoint * 1e3,
        levels_ms=[[w * 1e3, r * 1e3] for w, r in choice.levels],
        loadavg=[load_before[0], load_after[0]],
    )
    s3.clear()


@pytest.mark.parametrize("where", ["disk", "s3"])
def test_overlapped_predicted_against_measured(
    benchmark: Any, endpoint: str, places: tuple[str, Any, str], where: str
) -> None:
    directory, _, bucket = places
    x0 = _x0()
    rec = revseq.Recurrence(f, vjp=vjp)

    def make() -> Any:
        return DiskStore(directory) if where == "disk" else _s3_store(endpoint, bucket)

    timed = measured_costs(f, vjp, x0, make(), times=5)
    step, write, read, adjoint = timed.step, timed.write, timed.read, timed.adjoint
    costs = revseq.DiskCosts(step=step, write=write, read=read)
    # The plan a user of OverlappedStore would take (it prices the overlap); both stores run it.
    plan, _ = overlapped_plan(N, ram=SLOTS, costs=costs, depth=DEPTH, adjoint=adjoint)
    cost = plan.cost(N)
    predicted, synchronous = overlapped_time(
        plan.actions(N), N, step=step, write=write, read=read, adjoint=adjoint, depth=DEPTH
    )
    reference = revseq.backprop(rec, x0, N, revseq.StoreAll()).gradient
    clock = Clock()
    inside: dict[str, list[tuple[float, float]]] = {}
    stores = {"synchronous": make, f"OverlappedStore(depth={DEPTH})": lambda: OverlappedStore(make(), depth=DEPTH)}
    runs: dict[str, Callable[[], None]] = {}
    for name, made in stores.items():

        def run(made: Callable[[], Any] = made, name: str = name) -> None:
            store = made()
            clock.reset()
            out = revseq.backprop(clock.rec, x0, N, plan, disk=store)
            inside.setdefault(name, []).append((clock.steps, clock.adjoints))
            _check_counts(out.stats, cost)
            assert np.array_equal(out.gradient, reference)
            store.clear()

        # The gradient checked before timing (the warm-up; the synchronous one's is pytest-benchmark's).
        benchmark.pedantic(run, rounds=1, iterations=1) if name == "synchronous" else run()
        runs[name] = run
    inside.clear()
    load_before = os.getloadavg()
    times = interleaved(runs, ROUNDS, warmup=0)
    load_after = os.getloadavg()
    print(
        f"\n{where}: {M} x {M} float64, n={N}, overlapped_plan(ram={SLOTS}, depth={DEPTH}) at the measured costs: "
        f"forward steps {cost.forward_steps}, writes {cost.disk_writes}, reads {cost.disk_reads}; measured step "
        f"{step * 1e3:.2f} ms, adjoint {adjoint * 1e3:.2f} ms, write {write * 1e3:.2f} ms, read {read * 1e3:.2f} ms; "
        f"{ROUNDS} rounds; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )
    print(f"plan: {plan!r}")
    print(
        "| store | predicted s | measured wall s, median [range] | CPU s, median [range] | ms a step in the run | "
        "rest s (wall - f - vjp) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    info: dict[str, Any] = {}
    for name, value in (("synchronous", synchronous), (f"OverlappedStore(depth={DEPTH})", predicted)):
        per_step = statistics.median(a for a, _ in inside[name]) / cost.forward_steps
        rest = statistics.median(w - a - b for w, (a, b) in zip(times[name][1], inside[name], strict=True))
        print(f"{_row(name, times[name][1], times[name][0], value)} {per_step * 1e3:.2f} | {rest:.2f} |")
        info[name] = {
            "predicted_s": value,
            "step_in_run_ms": per_step * 1e3,
            "in_f_vjp_s": inside[name],
            "wall_s": times[name][1],
            "cpu_s": times[name][0],
        }
    benchmark.extra_info.update(
        where=where,
        plan=repr(plan),
        results=info,
        step_ms=step * 1e3,
        adjoint_ms=adjoint * 1e3,
        write_ms=write * 1e3,
        read_ms=read * 1e3,
        loadavg=[load_before[0], load_after[0]],
    )
