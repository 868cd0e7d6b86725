"""States on a dask cluster: the gradient equals numpy's, the checkpoints the scheduler holds equal the strategy's
count, nothing is computed on the client, and nothing is left on the cluster however a run ends.

One LocalCluster for the module (2 workers, 1 thread each, in this process: it starts in 0.1 s where worker
processes take 2 s), or the scheduler at REVSEQ_TEST_DASK_SCHEDULER if set (.ci/dask-cluster starts one).
What the workers hold is read from the scheduler by a plugin that follows every key's transitions in and out
of memory, never from the store's own counters.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import revseq
from revseq.errors import ParameterError, StoreError

da = pytest.importorskip("dask.array", reason="the dask extra: pip install 'revseq[dask]'")
distributed = pytest.importorskip("distributed", reason="the dask extra: pip install 'revseq[dask]'")
from revseq.dask import PREFIX, ClusterStore  # noqa: E402 (after the skip: it needs dask)

SCHEDULER = os.environ.get("REVSEQ_TEST_DASK_SCHEDULER")


class Watch(distributed.diagnostics.plugin.SchedulerPlugin):
    """Counts, on the scheduler, the checkpoints in workers' memory: a checkpoint is held from the moment its
    first chunk is in memory until its last one leaves. Also the peak of all bytes the workers hold."""

    name = "revseq-test-watch"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.chunks: Counter[str] = Counter()
        self.peak = 0
        self.seen: set[str] = set()

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        name = str(key[0] if isinstance(key, tuple) else key)
        if not name.startswith(PREFIX):
            return
        state = name.rsplit(".", 1)[0]  # a state of several arrays: one checkpoint
        if finish == "memory":
            self.chunks[state] += 1
            self.seen.add(state)
            self.peak = max(self.peak, len(self.chunks))
        elif start == "memory":
            self.chunks[state] -= 1
            if not self.chunks[state]:
                del self.chunks[state]


def _reset(dask_scheduler: Any) -> None:
    dask_scheduler.plugins[Watch.name].reset()


def _read(dask_scheduler: Any) -> tuple[int, int, int]:
    watch = dask_scheduler.plugins[Watch.name]
    held = sum(
        1
        for key, task in dask_scheduler.tasks.items()
        if task.state == "memory" and str(key[0] if isinstance(key, tuple) else key).startswith(PREFIX)
    )
    return watch.peak, len(watch.seen), held


@pytest.fixture(scope="module")
def client():
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the plugin runs on a scheduler elsewhere too
    if SCHEDULER:
        cluster = None
        client = distributed.Client(SCHEDULER, set_as_default=True)
        client.upload_file(__file__)  # the steps below run on its workers: they import them from this file
    else:
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0", silence_logs=40
        )
        client = distributed.Client(cluster, set_as_default=True)
    client.register_plugin(Watch())
    yield client
    client.close()
    if cluster is not None:
        cluster.close()


@pytest.fixture
def cluster(client):
    """The client, with the scheduler's watch reset; after the test, no checkpoint key is left."""
    client.run_on_scheduler(_reset)
    yield client
    assert _left(client) == 0


def _left(client: Any) -> int:
    """Checkpoint chunks still in workers' memory, once the releases already sent have arrived (1 s at most)."""
    deadline = time.monotonic() + 1.0
    while True:
        held = client.run_on_scheduler(_read)[2]
        if not held or time.monotonic() > deadline:
            return held
        time.sleep(0.02)


@contextlib.contextmanager
def no_pulls() -> Iterator[None]:
    """Any computation whose result comes to the client, or any dask array read there, fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a dask state was pulled to the client")

    with pytest.MonkeyPatch.context() as patch:
        for name in ("gather", "get", "compute"):
            patch.setattr(distributed.Client, name, refuse)
        for name in ("__array__", "compute", "__float__", "__bool__", "__int__", "__index__", "__complex__"):
            patch.setattr(da.Array, name, refuse)
        yield


# The step: explicit diffusion on a periodic grid with a reaction term, and its vector-Jacobian product. The
# Laplacian of a dask array is computed chunk by chunk with a one-cell halo (np.roll on a dask array would
# split its chunks further at every step); of a numpy array, with np.roll: the numpy run is the oracle.
A, B = 0.2, 0.3


def lap_block(u: np.ndarray) -> np.ndarray:
    return np.roll(u, 1, 0) + np.roll(u, -1, 0) + np.roll(u, 1, 1) + np.roll(u, -1, 1) - 4 * u


def lap(u: Any) -> Any:
    if isinstance(u, da.Array):  # the grid in slabs of rows: a halo of one row from each neighbour
        return da.map_overlap(lap_block, u, depth={0: 1, 1: 0}, boundary="periodic", dtype=u.dtype)
    return lap_block(u)


def step(u: Any) -> Any:
    return u + A * lap(u) + B * np.sin(u)


def vjp(u: Any, g: Any) -> Any:
    return g + A * lap(g) + B * np.cos(u) * g  # the periodic Laplacian is symmetric


GRID = np.random.default_rng(0).uniform(-1, 1, (12, 12))
REC = revseq.Recurrence(step, vjp=vjp)


def chunked(a: np.ndarray) -> Any:
    return da.from_array(a, chunks=(6, 12))  # a slab of rows for each of the 2 workers


def held(client: Any) -> tuple[int, int]:
    """(peak checkpoints held at once, checkpoints stored in all) since the watch was reset, from the scheduler."""
    peak, distinct, _ = client.run_on_scheduler(_read)
    return peak, distinct


SIN = revseq.Recurrence(np.sin, np.cos)  # elementwise: a step costs the cluster one small task per chunk


@pytest.mark.parametrize(
    ("strategy", "rec"),
    [(revseq.BinomialCheckpointing(checkpoints=2), REC), (revseq.StoreAll(), SIN)],
    ids=["binomial-diffusion", "store-all-sin"],
)
def test_gradient_equals_numpys_and_the_scheduler_holds_the_strategys_checkpoints(cluster, strategy, rec):
    n = 6
    with no_pulls():
        out = revseq.backprop(rec, chunked(GRID), n, strategy)  # no store given: a ClusterStore is chosen
    cost = strategy.cost(n)
    assert held(cluster) == (cost.peak_checkpoints, cost.writes)
    assert out.stats.as_cost() == cost
    assert isinstance(out.gradient, da.Array)
    assert isinstance(out.state, da.Array)
    expected = revseq.backprop(rec, GRID, n, strategy)
    np.testing.assert_allclose(np.asarray(out.gradient), expected.gradient, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(out.state), expected.state, rtol=1e-12)


def test_reverse_and_walk_give_numpys_states_held_on_the_cluster(cluster):
    n, strategy = 7, revseq.RecursiveHalving()
    expected = list(revseq.reverse(np.sin, GRID, n, strategy))
    got = []
    for x in revseq.reverse(np.sin, chunked(GRID), n, strategy):
        assert isinstance(x, da.Array)
        got.append(np.asarray(x))  # the test's own pull: a state held here would keep its checkpoint alive
        del x
    assert held(cluster) == (strategy.cost(n).peak_checkpoints, strategy.cost(n).writes)
    np.testing.assert_allclose(np.stack(got), np.stack(expected), rtol=1e-15)
    pairs = [(t, np.asarray(x)) for t, x in revseq.walk(np.sin, chunked(GRID), 3, revseq.StoreAll())]
    assert [t for t, _ in pairs] == [3, 2, 1, 0]
    np.testing.assert_allclose(pairs[0][1], np.sin(np.sin(np.sin(GRID))), rtol=1e-15)


def test_params_gradient_and_loss_equal_numpys(cluster):
    # f(x) = sin(p * x) with a parameter p and a loss sum(x_t^2) at every step: the sums over steps are dask
    # values too, settled at every step (an unsettled sum would hold every state's graph until the end).
    def f(x, p):
        return np.sin(p * x)

    def vjp(x, p, g):
        d = g * np.cos(p * x)
        return d * p, (d * x).sum(axis=(0, 1))[None]

    def loss(x, p):
        return (x**2).sum(), 2 * x, np.zeros(1)

    p = np.array([0.9])
    rec = revseq.Recurrence(f, vjp=vjp, params=p, loss=loss)
    strategy = revseq.BinomialCheckpointing(checkpoints=2)
    with no_pulls():
        out = revseq.backprop(rec, chunked(GRID), 6, strategy)
    assert held(cluster)[0] == strategy.cost(6).peak_checkpoints
    expected = revseq.backprop(rec, GRID, 6, strategy)
    np.testing.assert_allclose(np.asarray(out.gradient), expected.gradient, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(out.params_gradient), expected.params_gradient, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(out.loss), expected.loss, rtol=1e-12)


def failing_block(block: np.ndarray) -> np.ndarray:
    raise ValueError("the chunk function failed")


def test_nothing_is_left_on_the_cluster_however_a_run_ends(cluster):
    # `cluster` checks after the test that no checkpoint key is left; here, that each way of ending was taken.
    calls = 0

    def step_failing_at_call_5(x):
        nonlocal calls
        calls += 1
        if calls == 5:
            raise RuntimeError("step failed")
        return np.sin(x)

    strategy = revseq.BinomialCheckpointing(checkpoints=3)
    with pytest.raises(RuntimeError, match="step failed"):
        revseq.backprop(revseq.Recurrence(step_failing_at_call_5, np.cos), chunked(GRID), 8, strategy)
    assert held(cluster)[1] > 0  # it had stored checkpoints before it failed
    assert _left(cluster) == 0

    calls = 0

    def step_whose_task_fails_at_call_5(x):  # the error comes from a worker, when the state is computed
        nonlocal calls
        calls += 1
        return x.map_blocks(failing_block, dtype=x.dtype) if calls == 5 else np.sin(x)

    with pytest.raises(ValueError, match="the chunk function failed"):
        revseq.backprop(revseq.Recurrence(step_whose_task_fails_at_call_5, np.cos), chunked(GRID), 8, strategy)
    assert _left(cluster) == 0

    walk = revseq.walk(np.sin, chunked(GRID), 8, strategy)
    next(walk)  # x_8: the forward sweep has stored its checkpoints
    assert cluster.run_on_scheduler(_read)[2] > 0
    walk.close()
    assert _left(cluster) == 0


def test_the_store_by_hand(cluster):
    store = ClusterStore(cluster)
    x = store.settle(chunked(GRID))
    assert store.settle(GRID) is GRID  # nothing lazy: as it is
    store.put(3, {"u": x, "step": np.int64(3)})
    store.put(4, (x, x + 1))
    assert (len(store), store.nbytes) == (2, 3 * GRID.nbytes + 8)
    got = store.get(3)
    got["u"][0, 0] = 99.0  # dask's setitem changes that array object, not the checkpoint
    np.testing.assert_array_equal(np.asarray(store.get(3)["u"]), GRID)
    assert got["step"] == 3
    np.testing.assert_array_equal(np.asarray(store.get(4)[1]), GRID + 1)
    assert held(cluster)[1] == 2  # the tuple's two arrays are one checkpoint
    store.put(3, x)  # stored again: replaces
    assert (len(store), store.nbytes) == (2, 3 * GRID.nbytes)
    store.delete(4)
    with pytest.raises(KeyError):
        store.get(4)
    store.clear()
    assert (len(store), store.nbytes) == (0, 0)
    del got


def test_bad_client_and_a_closed_one(cluster):
    with pytest.raises(ParameterError, match=r"client must be a distributed\.Client or None"):
        ClusterStore("tcp://127.0.0.1:8786")
    with pytest.raises(ParameterError, match="got <class"):
        ClusterStore(distributed.Client)
    other = distributed.Client(cluster.scheduler.address, set_as_default=False)
    other.close()
    with pytest.raises(StoreError, match=r"could not hold checkpoint x_2 on the dask cluster at .*ClosedClientError"):
        ClusterStore(other).put(2, chunked(GRID))


def test_without_a_cluster_dask_computes_in_this_process(monkeypatch):
    def no_client() -> None:
        raise ValueError("No clients found")

    monkeypatch.setattr(distributed, "default_client", no_client)
    strategy = revseq.BinomialCheckpointing(checkpoints=2)
    out = revseq.backprop(SIN, chunked(GRID), 6, strategy)
    assert out.stats.peak_checkpoints == 2
    np.testing.assert_allclose(np.asarray(out.gradient), revseq.backprop(SIN, GRID, 6, strategy).gradient)
