"""OverlappedStore: write-behind and read-ahead on a background thread (issue 11, part 1).

Oracles: StoreAll's gradient, the strategy's own cost (planned without any
store), calls counted by an inner store written from the protocol alone, and
the directory listed from outside. Slow and failing inner stores are driven
by events, so that orderings are forced, not hoped for.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from typing import Any

import numpy as np
import pytest
from stores import Forwarding

import revseq
from revseq.disk import DiskStore
from revseq.errors import ParameterError, StoreError
from revseq.overlap import OverlappedStore, overlapped_plan, overlapped_time, prefetching

N = 60
SIZE = 64  # float64 leaves: 512 bytes per state


def _rec() -> revseq.Recurrence:
    return revseq.Recurrence(np.sin, np.cos)


def _x0() -> np.ndarray[Any, Any]:
    return np.linspace(0.1, 1.0, SIZE)


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "revseq-overlapped-io"]


class Recording(Forwarding):
    """Counts the calls the background thread makes, and can hold or fail them on demand."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.calls: list[tuple[str, int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_put: int | None = None
        self.fail_get: int | None = None

    def put(self, key: int, state: Any) -> None:
        self.calls.append(("put", key))
        self.entered.set()
        self.gate.wait(10)
        if key == self.fail_put:
            raise OSError(28, "No space left on device (injected)")
        self.inner.put(key, state)

    def get(self, key: int) -> Any:
        self.calls.append(("get", key))
        self.gate.wait(10)
        if key == self.fail_get:
            raise OSError(5, "Input/output error (injected)")
        return self.inner.get(key)

    def delete(self, key: int) -> None:
        self.calls.append(("delete", key))
        self.inner.delete(key)


@pytest.fixture
def disk(tmp_path: Any) -> DiskStore:
    return DiskStore(tmp_path)


def _left(tmp_path: Any) -> list[str]:
    return os.listdir(tmp_path)


def _settle(store: OverlappedStore) -> None:
    """Wait until the background thread has nothing queued or running (its private state, read under its lock)."""
    shared = store._shared
    with shared.cond:
        assert shared.cond.wait_for(lambda: not shared.queue and shared.running is None, timeout=5)


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("copy", [True, False])
def test_multistage_gradient_and_counts(tmp_path: Any, disk: DiskStore, depth: int, copy: bool) -> None:
    plan = revseq.MultistageCheckpointing(ram=2, costs=revseq.DiskCosts(step=1.0, write=1.0, read=1.0))
    expected = revseq.backprop(_rec(), _x0(), N, revseq.StoreAll())
    store = OverlappedStore(disk, depth=depth, copy=copy)
    out = revseq.backprop(_rec(), _x0(), N, plan, disk=store)
    np.testing.assert_array_equal(out.gradient, expected.gradient)
    np.testing.assert_array_equal(out.state, expected.state)
    cost = plan.cost(N)
    assert (out.stats.forward_steps, out.stats.disk_writes, out.stats.disk_reads, out.stats.peak_disk) == (
        cost.forward_steps,
        cost.disk_writes,
        cost.disk_reads,
        cost.peak_disk,
    )
    state = _x0().nbytes
    # The buffers are RAM: counted in peak_bytes, and never more than depth states.
    assert 0 < store.peak_buffer_nbytes <= depth * state
    assert 2 * state < out.stats.peak_bytes <= (2 + depth) * state
    assert store.prefetch_hits > 0
    assert _left(tmp_path) == []
    assert not store.running
    assert len(store) == 0
    assert not _threads()


def test_write_behind_serves_the_staged_copy(disk: DiskStore) -> None:
    inner = Recording(disk)
    store = OverlappedStore(inner, depth=2)
    inner.gate.clear()  # every inner call waits
    x = np.arange(5.0)
    store.put(3, x)  # returns while the write is held
    assert inner.entered.wait(5)
    x[:] = -1  # the caller may reuse its buffer at once: the store copied it
    np.testing.assert_array_equal(store.get(3), np.arange(5.0))  # served from the buffer, no read
    assert inner.calls == [("put", 3)]
    assert len(disk) == 0
    assert len(store) == 1
    inner.gate.set()
    store.clear()
    assert not store.running
    assert inner.calls == [("put", 3)]


def test_buffer_is_bounded(disk: DiskStore) -> None:
    inner = Recording(disk)
    store = OverlappedStore(inner, depth=2)
    inner.gate.clear()
    store.put(0, np.zeros(4))
    store.put(1, np.ones(4))  # two buffers taken: the write of x_0 is held, x_1 waits in the queue
    assert store.buffer_nbytes == 64
    done = threading.Event()
    third = threading.Thread(target=lambda: (store.put(2, np.full(4, 2.0)), done.set()))
    third.start()
    assert not done.wait(0.2)  # the third put waits for a buffer
    inner.gate.set()
    assert done.wait(5)
    third.join()
    for key in range(3):
        np.testing.assert_array_equal(store.get(key), np.full(4, float(key)))
    assert store.peak_buffer_nbytes == 64
    assert store.blocked_seconds > 0.1
    store.clear()


def test_expect_reads_ahead_once(disk: DiskStore) -> None:
    inner = Recording(disk)
    store = OverlappedStore(inner, depth=3)
    for key in range(3):
        store.put(key, np.full(4, float(key)))
    store.expect([])  # nothing expected: written states are not kept
    _settle(store)
    assert len(disk) == 3
    assert store.buffer_nbytes == 0
    store.expect([2, 0, 7])  # 7 is not held: skipped
    _settle(store)
    assert [c for c in inner.calls if c[0] == "get"] == [("get", 2), ("get", 0)]  # in order, depth - 1 ahead
    np.testing.assert_array_equal(store.get(2), np.full(4, 2.0))
    np.testing.assert_array_equal(store.get(0), np.zeros(4))
    assert store.prefetch_hits == 2
    np.testing.assert_array_equal(store.get(1), np.ones(4))  # not expected: read on demand
    assert [c for c in inner.calls if c[0] == "get"] == [("get", 2), ("get", 0), ("get", 1)]
    store.clear()


def test_a_written_state_expected_next_is_kept(disk: DiskStore) -> None:
    inner = Recording(disk)
    store = OverlappedStore(inner, depth=2)
    store.expect([5])
    store.put(5, np.full(3, 5.0))
    _settle(store)
    np.testing.assert_array_equal(store.get(5), np.full(3, 5.0))
    assert ("get", 5) not in inner.calls
    assert store.prefetch_hits == 1
    store.clear()


def test_delete_cancels_a_pending_write(disk: DiskStore) -> None:
    inner = Recording(disk)
    store = OverlappedStore(inner, depth=3)
    inner.gate.clear()
    store.put(0, np.zeros(2))  # running, held at the gate
    assert inner.entered.wait(5)
    store.put(1, np.ones(2))  # queued
    store.delete(1)  # never written: cancelled, no delete either
    store.delete(0)  # running: deleted after its write
    inner.gate.set()
    store.put(2, np.ones(2))
    np.testing.assert_array_equal(store.get(2), np.ones(2))
    store.expect([])
    _settle(store)
    store.clear()
    assert ("put", 1) not in inner.calls
    assert ("delete", 1) not in inner.calls
    assert inner.calls.index(("put", 0)) < inner.calls.index(("delete", 0))
    with pytest.raises(KeyError):
        store.get(0)


def test_a_failed_write_surfaces_at_the_next_call(disk: DiskStore) -> None:
    inner = Recording(disk)
    inner.fail_put = 1
    store = OverlappedStore(inner, depth=2)
    store.put(1, np.ones(3))
    _settle(store)
    with pytest.raises(StoreError, match="could not write checkpoint x_1 in the background") as info:
        store.put(2, np.ones(3))
    assert isinstance(info.value.__cause__, OSError)
    assert "injected" in str(info.value.__cause__)
    with pytest.raises(StoreError):  # until clear()
        store.get(1)
    store.clear()
    store.put(4, np.ones(3))  # usable again
    np.testing.assert_array_equal(store.get(4), np.ones(3))
    store.clear()


def test_a_failed_read_ahead_surfaces_at_the_get(disk: DiskStore) -> None:
    inner = Recording(disk)
    inner.fail_get = 0
    store = OverlappedStore(inner, depth=2)
    store.put(0, np.ones(3))  # nothing expected: released once written
    _settle(store)
    store.expect([0])  # read ahead, and it fails
    with pytest.raises(StoreError, match="x_0") as info:
        store.get(0)
    assert isinstance(info.value.__cause__, OSError)
    assert ("get", 0) in inner.calls
    store.clear()


@pytest.mark.parametrize("where", ["put", "get"])
def test_a_run_whose_background_io_fails_leaves_nothing(tmp_path: Any, disk: DiskStore, where: str) -> None:
    inner = Recording(disk)
    if where == "put":
        inner.fail_put = 20
    else:
        inner.fail_get = 0
    store = OverlappedStore(inner, depth=2)
    plan = revseq.MultistageCheckpointing(ram=1, costs=revseq.DiskCosts(step=1.0, write=0.5, read=0.5))
    with pytest.raises(StoreError) as info:
        revseq.backprop(_rec(), _x0(), N, plan, disk=store)
    assert isinstance(info.value.__cause__, OSError)
    assert _left(tmp_path) == []
    assert not store.running
    assert not _threads()
    assert len(store) == 0


class _Boom(Exception):
    pass


@pytest.mark.parametrize("error", [_Boom, KeyboardInterrupt])
def test_a_failing_or_interrupted_step_leaves_nothing(tmp_path: Any, disk: DiskStore, error: type) -> None:
    inner = Recording(disk)
    store = OverlappedStore(inner, depth=2)
    calls = 0

    def f(x: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 70:  # in the reverse sweep, with writes and reads in flight
            inner.gate.clear()  # the background thread is held in its next call...
            threading.Timer(0.05, inner.gate.set).start()  # ...while the step fails
            raise error("step failed")
        return np.sin(x)

    plan = revseq.MultistageCheckpointing(ram=2, costs=revseq.DiskCosts(step=1.0, write=1.0, read=1.0))
    assert plan.cost(N).forward_steps > N + 20
    with pytest.raises(error):
        revseq.backprop(revseq.Recurrence(f, np.cos), _x0(), N, plan, disk=store)
    assert _left(tmp_path) == []
    assert not store.running
    assert not _threads()
    assert len(store) == 0


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix", reason="a real SIGINT, POSIX")
def test_ctrl_c_while_waiting_for_a_read_leaves_nothing(tmp_path: Any, disk: DiskStore) -> None:
    class Held(Recording):
        def get(self, key: int) -> Any:
            if not any(call[0] == "get" for call in self.calls):  # the first read of the run is held...
                self.gate.clear()
                threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()  # ...while Ctrl-C comes
                threading.Timer(0.3, self.gate.set).start()
            return super().get(key)

    inner = Held(disk)
    store = OverlappedStore(inner, depth=2)
    plan = revseq.MultistageCheckpointing(ram=2, costs=revseq.DiskCosts(step=1.0, write=1.0, read=1.0))
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        revseq.backprop(_rec(), _x0(), N, plan, disk=store)
    assert time.monotonic() - start < 5
    assert _left(tmp_path) == []
    assert not store.running
    assert not _threads()
    assert len(store) == 0


def test_a_dropped_walk_leaves_nothing(tmp_path: Any, disk: DiskStore) -> None:
    store = OverlappedStore(disk, depth=2)
    plan = revseq.MultistageCheckpointing(ram=1, costs=revseq.DiskCosts(step=1.0, write=0.5, read=0.5))
    it = revseq.walk(np.sin, _x0(), N, plan, disk=store)
    for _ in range(5):
        next(it)
    assert _left(tmp_path) != []
    assert store.running
    del it
    gc.collect()
    assert _left(tmp_path) == []
    assert not store.running
    assert not _threads()


def test_a_dropped_store_stops_its_thread(tmp_path: Any) -> None:
    store = OverlappedStore(DiskStore(tmp_path), depth=2)
    store.put(0, np.ones(3))
    assert store.running
    del store
    gc.collect()
    deadline = time.monotonic() + 5
    while (_threads() or _left(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.005)
        gc.collect()
    assert not _threads()
    assert _left(tmp_path) == []


def test_bad_parameters() -> None:
    with pytest.raises(ParameterError, match="depth must be an int >= 1, got 0"):
        OverlappedStore(depth=0)
    with pytest.raises(ParameterError, match="depth must be an int >= 1, got True"):
        OverlappedStore(depth=True)
    with pytest.raises(ParameterError, match="copy must be a bool, got 'yes'"):
        OverlappedStore(copy="yes")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"got the class DiskStore; did you mean DiskStore\(\)\?"):
        OverlappedStore(DiskStore)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="must not be an OverlappedStore"):
        OverlappedStore(OverlappedStore())
    full = revseq.MemoryStore()
    full.put(0, np.ones(2))
    with pytest.raises(ParameterError, match="must be empty"):
        OverlappedStore(full)
    inner = revseq.MemoryStore()
    wrapper = OverlappedStore(inner)
    with pytest.raises(ParameterError, match="an OverlappedStore wraps it"):
        revseq.backprop(_rec(), _x0(), 5, store=inner)
    del wrapper


def test_lookahead_raises_a_schedule_error_in_place() -> None:
    seen: list[object] = []

    def actions() -> Any:
        yield revseq.Advance(0, 1)
        yield revseq.Advance(1, 2)
        raise RuntimeError("the strategy broke")

    class Expecting:
        depth = 2

        def expect(self, keys: list[int]) -> None:
            seen.append(list(keys))

    it = prefetching(actions(), [Expecting()])
    assert next(it) == revseq.Advance(0, 1)
    assert next(it) == revseq.Advance(1, 2)  # the error is raised where it stands, after both
    with pytest.raises(RuntimeError, match="the strategy broke"):
        next(it)


@pytest.mark.parametrize(("ram", "disk"), [(1, None), (2, None), (2, 3)])
@pytest.mark.parametrize("costs", [(1.0, 2.0, 1.0), (1.0, 0.5, 0.5), (2.0, 1.0, 3.0)])
def test_overlapped_time_without_buffers_is_the_synchronous_cost(
    ram: int, disk: int | None, costs: tuple[float, float, float]
) -> None:
    plan = revseq.MultistageCheckpointing(ram=ram, disk=disk, costs=revseq.DiskCosts(*costs))
    step, write, read = costs
    for n in (1, 7, 50, 200):
        actions = list(plan.actions(n))
        expected = revseq.DiskCosts(*costs).time(plan.cost(n)) + 0.5 * n
        none, sync = overlapped_time(actions, n, step=step, write=write, read=read, adjoint=0.5, depth=0)
        assert none == sync == expected
        overlapped = [
            overlapped_time(actions, n, step=step, write=write, read=read, adjoint=0.5, depth=d)[0] for d in (1, 2, 4)
        ]
        # Never worse than synchronous, never better than the computation alone.
        assert all(step * plan.cost(n).forward_steps + 0.5 * n <= t <= expected for t in overlapped)


def test_overlapped_time_by_hand() -> None:
    # x_0 to disk, 4 steps, x_4 reversed live (after the call making x_5), x_0 read back, 3 steps keeping
    # x_1 and x_2 in memory, then x_3 .. x_0 reversed: x_0 read from disk a second time.
    actions = [
        revseq.Store(0, disk=True),
        revseq.Advance(0, 4),
        revseq.Reverse(4, 5),
        revseq.Restore(0),
        revseq.Advance(0, 3, keep=True),
        revseq.Reverse(0, 4),
    ]
    # Synchronous: write 3 + 4 steps + 1 (x_5) + read 2 + 3 steps + read 2 = 15.
    assert overlapped_time(actions, 5, step=1.0, write=3.0, read=2.0, depth=0) == (15.0, 15.0)
    # Overlapped: the write runs over the 4 steps and stays in its buffer for the Restore (done at 3, needed
    # at 5); the second read starts ahead at 5, done at 7, needed at 8: 4 + 1 + 3 = 8, the steps alone.
    for depth in (1, 2):
        assert overlapped_time(actions, 5, step=1.0, write=3.0, read=2.0, depth=depth) == (8.0, 15.0)
    # A read of 6: started at 5, done at 11, waited for from 8.
    assert overlapped_time(actions, 5, step=1.0, write=3.0, read=6.0, depth=2) == (11.0, 23.0)


def test_overlapped_plan_beats_the_synchronous_plan_overlapped() -> None:
    costs = revseq.DiskCosts(step=1.0, write=2.0, read=1.0)
    n = 120
    strategy, predicted = overlapped_plan(n, ram=4, costs=costs, depth=2, adjoint=1.0)
    assert strategy.ram - strategy.depth == 2  # memory checkpoints beside the 2 buffers
    measured = overlapped_time(strategy.actions(n), n, step=1.0, write=2.0, read=1.0, adjoint=1.0, depth=2)[0]
    assert predicted == measured
    plain = revseq.MultistageCheckpointing(ram=2, costs=costs)
    assert predicted <= overlapped_time(plain.actions(n), n, step=1.0, write=2.0, read=1.0, adjoint=1.0, depth=2)[0]
    # The plan runs, and its counts are the strategy's.
    out = revseq.backprop(_rec(), _x0(), n, strategy, disk=OverlappedStore(depth=2))
    assert out.stats.forward_steps == strategy.cost(n).forward_steps
    with pytest.raises(ParameterError, match="ram must be an int >= 3, got 1"):
        overlapped_plan(n, ram=1, costs=costs, depth=2)
