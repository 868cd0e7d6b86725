"""FsspecStore: checkpoints on memory://, file:// and a real S3 server on localhost come back as they went in,
plug in as the disk level of a multistage run, and leave nothing behind, even when the server goes away."""

from __future__ import annotations

import gc
import io
import os
import re
import subprocess
import sys
import threading
import warnings
from collections import namedtuple
from typing import Any

import _s3_server
import numpy as np
import pytest
from _s3_server import FAST_FAIL, Proxy, objects, options

import revseq
from revseq.errors import ParameterError, StoreError

fsspec = pytest.importorskip("fsspec", reason="the remote extra: pip install 'revseq[remote]'")
from revseq.fsspec_store import FsspecStore  # noqa: E402 (after the skip)

# The fixtures of a real S3 server on localhost (tests/_s3_server.py), made this module's.
s3_endpoint, s3, bucket = _s3_server.s3_endpoint, _s3_server.s3, _s3_server.bucket
Point = namedtuple("Point", "h c")
BACKENDS = ["memory", "file", "s3"]


@pytest.fixture
def where(request: Any, tmp_path: Any) -> tuple[str, dict[str, Any], Any]:
    """(url, storage options, a function listing every object under the url now) for one backend."""
    kind = request.param
    if kind == "memory":
        url = f"memory://revseq-tests/{os.urandom(6).hex()}"
        fs, root = fsspec.url_to_fs(url)
        return url, {}, lambda: sorted(fs.find(root))
    if kind == "file":
        return f"file://{tmp_path}", {}, lambda: sorted(str(p) for p in tmp_path.rglob("*"))
    endpoint = request.getfixturevalue("s3_endpoint")
    name = request.getfixturevalue("bucket")
    direct = request.getfixturevalue("s3")
    return f"s3://{name}/runs", options(endpoint), lambda: objects(direct, name)


backends = pytest.mark.parametrize("where", BACKENDS, indirect=True)


def states() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return {
        "float64": rng.standard_normal(50),
        "fortran": np.asfortranarray(rng.standard_normal((4, 3))),
        "strided": rng.standard_normal((6, 8))[::2, 1::3],  # neither C- nor Fortran-contiguous
        "0-d": np.array(2.5),
        "empty": np.zeros((0, 3), np.int16),
        "big-endian": np.arange(5, dtype=">i4"),
        "complex64": (rng.standard_normal(7) + 1j).astype(np.complex64),
        "bool": rng.standard_normal(9) > 0,
        "structured": np.array([(1, 2.0)], dtype=[("a", "<i2"), ("b", "<f8")]),
        "tree": {"h": rng.standard_normal(3), "rest": (np.float32(1.5), 7, [np.arange(4)])},
        "namedtuple": Point(rng.standard_normal(2), np.ones((2, 2), order="F")),
        "2 MiB": rng.standard_normal(1 << 18),  # a body aiohttp would warn about if sent as raw bytes
    }


def same(a: Any, b: Any) -> None:
    """b is a copy of a: same structure, types, shapes, dtypes, order and values, sharing no memory."""
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            same(a[k], b[k])
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            same(x, y)
    elif isinstance(a, np.ndarray):
        assert (a.shape, a.dtype, a.flags.f_contiguous and not a.flags.c_contiguous) == (
            b.shape,
            b.dtype,
            b.flags.f_contiguous and not b.flags.c_contiguous,
        )
        assert np.array_equal(a, b)
        assert b.flags.writeable
        assert not np.shares_memory(a, b)
    else:
        assert a == b
        assert type(a) is type(b)


@backends
def test_puts_and_gets_give_back_what_was_put(where: Any) -> None:
    url, opts, listing = where
    store = FsspecStore(url, **opts)
    put = states()
    if url.startswith("s3://"):  # each object is a request to the server: the transport, not every layout again
        put = {k: put[k] for k in ("strided", "0-d", "tree", "namedtuple", "2 MiB")}
    for key, state in enumerate(put.values()):
        store.put(key, state)
    assert len(store) == len(put)
    for key, state in enumerate(put.values()):
        same(state, store.get(key))
    # Counters against an independent count: the arrays' nbytes, and np.save's file sizes.
    arrays = [np.asarray(leaf) for state in put.values() for leaf in revseq._tree.leaves(state)]
    assert store.nbytes == store.bytes_written == sum(a.nbytes for a in arrays)
    assert store.bytes_read == store.bytes_written
    assert store.disk_usage == sum(len(_npy(a)) for a in arrays)
    assert store.path is not None
    assert store.path.split("/")[-1].startswith("revseq-")
    store.delete(0)
    with pytest.raises(KeyError):
        store.get(0)
    with pytest.raises(KeyError):
        store.delete(0)
    store.clear()
    assert (len(store), store.nbytes, store.path) == (0, 0, None)
    assert [p for p in listing() if "revseq-" in p] == []


def _npy(array: np.ndarray[Any, Any]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@backends
def test_objects_are_exactly_what_np_save_writes(where: Any) -> None:
    url, opts, _ = where
    store = FsspecStore(url, **opts)
    array = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    store.put(3, array)
    store.put(4, (np.arange(3), np.float32(2)))
    fs, root = fsspec.url_to_fs(store.path, **opts)
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)) == ["x_3.npy", "x_4.0.npy", "x_4.1.npy"]
    assert fs.cat_file(f"{root}/x_3.npy") == _npy(array)
    assert fs.cat_file(f"{root}/x_4.1.npy") == _npy(np.asarray(np.float32(2)))
    store.clear()


@backends
def test_storing_a_key_again_replaces_it_and_removes_the_old_objects(where: Any) -> None:
    url, opts, listing = where
    store = FsspecStore(url, **opts)
    store.put(1, (np.zeros(3), np.ones(2), np.ones(1)))
    store.put(1, np.arange(4.0))
    same(np.arange(4.0), store.get(1))
    store.put(1, {"a": np.arange(2)})
    same({"a": np.arange(2)}, store.get(1))
    assert len([p for p in listing() if p.endswith(".npy")]) == 1
    assert store.nbytes == 16
    store.clear()
    assert [p for p in listing() if "revseq-" in p] == []


@backends
def test_nothing_is_pickled_and_a_refused_state_writes_nothing(where: Any) -> None:
    url, opts, listing = where
    store = FsspecStore(url, **opts)
    before = listing()
    for state, what in [
        (np.array([1, "a"], dtype=object), "state of checkpoint x_5 is an array of dtype object"),
        ({"h": np.ones(2), "tag": "x"}, "state['tag'] of checkpoint x_5 is builtins.str"),
    ]:
        with pytest.raises(ParameterError, match=f"FsspecStore stores numpy arrays and numbers, .*{re.escape(what)}"):
            store.put(5, state)
    assert (len(store), store.path, listing()) == (0, None, before)


@backends
def test_a_replaced_truncated_or_missing_object_is_refused_on_read(where: Any) -> None:
    url, opts, _ = where
    store = FsspecStore(url, **opts)
    store.put(7, np.arange(7.0))
    fs, root = fsspec.url_to_fs(store.path, **opts)
    path = f"{root}/x_7.npy"
    good = fs.cat_file(path)
    expected = "expected shape (7,), dtype float64, C order, data from byte 128, 184 bytes"
    cases = [
        (_npy(np.arange(7, dtype=np.float32)), "found shape (7,), dtype float32, C order, data from byte 128, 156"),
        (good[:-1], "found shape (7,), dtype float64, C order, data from byte 128, 183 bytes"),
        (good + b"\0", "found shape (7,), dtype float64, C order, data from byte 128, 185 bytes"),
        (b"\x80\x04pickle", "found no .npy header numpy can parse"),
    ]
    for planted, found in cases:
        fs.pipe_file(path, planted)
        message = f"x_7.npy is not the file this store wrote: {expected}; {found}"
        with pytest.raises(StoreError, match=f"could not read checkpoint x_7 from .*: {re.escape(message)}"):
            store.get(7)
    fs.rm_file(path)
    with pytest.raises(StoreError, match="could not read checkpoint x_7") as caught:
        store.get(7)
    assert caught.value.errno == 2
    assert isinstance(caught.value.__cause__, FileNotFoundError)
    fs.pipe_file(path, good)
    same(np.arange(7.0), store.get(7))
    store.clear()


@backends
def test_the_disk_level_of_a_multistage_run(where: Any) -> None:
    """The gradient equals StoreAll's; the disk checkpoints the engine counts are the planner's and the
    store's own, and nothing is left once the run has ended."""
    url, opts, listing = where
    rec = revseq.Recurrence(np.sin, np.cos)
    x0 = np.linspace(-1, 1, 64)
    n = 60
    reference = revseq.backprop(rec, x0, n, revseq.StoreAll())
    plan = revseq.MultistageCheckpointing(ram=2, disk=4)
    store = FsspecStore(url, **opts)
    out = revseq.backprop(rec, x0, n, plan, disk=store)
    np.testing.assert_array_equal(out.gradient, reference.gradient)
    np.testing.assert_array_equal(out.state, reference.state)
    cost = plan.cost(n)
    assert out.stats.disk_writes == cost.disk_writes > 0
    assert out.stats.disk_reads == cost.disk_reads > 0
    assert 0 < out.stats.peak_disk <= 4
    assert store.bytes_written == out.stats.disk_bytes_written == cost.disk_writes * x0.nbytes
    assert store.bytes_read == out.stats.disk_bytes_read == cost.disk_reads * x0.nbytes
    assert (len(store), store.path) == (0, None)
    assert [p for p in listing() if "revseq-" in p] == []


@pytest.mark.parametrize("where", ["memory"], indirect=True)
def test_as_the_only_store_with_a_step_working_in_place(where: Any) -> None:
    url, _, _ = where

    def f(x: Any) -> Any:
        np.sin(x, out=x)  # in place: allowed, since the store copies
        return x

    rec = revseq.Recurrence(f, np.cos)
    x0 = np.linspace(0, 1, 5)
    reference = revseq.backprop(revseq.Recurrence(np.sin, np.cos), x0, 30, revseq.StoreAll())
    store = FsspecStore(url)
    assert store.copies is True
    out = revseq.backprop(rec, x0, 30, revseq.BinomialCheckpointing(checkpoints=3), store=store)
    np.testing.assert_array_equal(out.gradient, reference.gradient)
    assert out.stats.peak_checkpoints == 3
    assert len(store) == 0


def test_the_server_going_away_mid_run(s3_endpoint: str, bucket: str, s3: Any) -> None:
    """A clear StoreError with the backend's reason; then what could not be deleted is deleted once the
    server is back, and the bucket is empty."""
    proxy = Proxy(s3_endpoint).start()
    try:
        store = FsspecStore(f"s3://{bucket}/runs", **options(proxy.endpoint, **FAST_FAIL))
        store.fs.retries = 1  # s3fs's own retries (5, with backoff) would only make the test slow
        calls = [0]
        seen: list[str] = []

        def f(x: Any) -> Any:
            calls[0] += 1
            if calls[0] == 40:  # well into the reversal: checkpoints are on the server
                seen.extend(objects(s3, bucket))
                proxy.stop()
            return np.sin(x)

        plan = revseq.MultistageCheckpointing(ram=1, disk=3)
        with (
            pytest.warns(RuntimeWarning, match=r"FsspecStore could not delete \d checkpoint object\(s\) under s3://"),
            pytest.raises(StoreError, match="Could not connect to the endpoint URL") as caught,
        ):
            revseq.backprop(revseq.Recurrence(f, np.cos), np.ones(4), 60, plan, disk=store)
        error = caught.value
        assert "checkpoint x_" in str(error)
        assert f"s3://{bucket}/runs/revseq-" in str(error)
        assert error.errno is not None
        assert error.__cause__ is not None
        assert seen
        assert all(p.startswith(f"{bucket}/runs/revseq-") for p in seen)
        left = objects(s3, bucket)  # through the server, which never went away
        assert left
        assert set(left) <= set(seen) | {p for p in left if p.endswith(".npy")}
        assert len(store) == 0
        assert store.path is None

        proxy.start()  # back on the same port
        store.clear()  # what the finalizer would do too
        assert objects(s3, bucket) == []
    finally:
        proxy.stop()


def test_a_dropped_store_deletes_its_objects(s3_endpoint: str, bucket: str, s3: Any) -> None:
    store = FsspecStore(f"s3://{bucket}", **options(s3_endpoint))
    store.put(0, np.ones(3))
    store.put(1, (np.ones(2), np.zeros(2)))
    assert len(objects(s3, bucket)) == 3
    del store
    gc.collect()
    assert objects(s3, bucket) == []


def test_a_store_alive_at_exit_deletes_its_objects(s3_endpoint: str, bucket: str, s3: Any) -> None:
    """In a child interpreter that exits holding a store with checkpoints (no clear): the bucket is empty after."""
    script = (
        "import sys, numpy as np\n"
        "from revseq.fsspec_store import FsspecStore\n"
        "store = FsspecStore(sys.argv[1], key='testing', secret='testing', endpoint_url=sys.argv[2])\n"
        "store.put(0, np.ones(3)); store.put(1, (np.zeros(2), 5))\n"
        "print(store.path)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, f"s3://{bucket}/runs", s3_endpoint], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"s3://{bucket}/runs/revseq-")
    assert objects(s3, bucket) == []


def test_a_missing_bucket_is_a_store_error_and_leaves_nothing(s3_endpoint: str, s3: Any) -> None:
    store = FsspecStore("s3://revseq-no-such-bucket/x", **options(s3_endpoint))
    with pytest.raises(StoreError, match="could not write checkpoint x_0 to s3://revseq-no-such-bucket/x/revseq-"):
        store.put(0, np.ones(3))
    assert (len(store), store.path) == (0, None)
    assert not s3.exists("revseq-no-such-bucket")


@pytest.mark.parametrize("where", BACKENDS, indirect=True)
def test_concurrent_runs_under_one_prefix(where: Any) -> None:
    """Three runs at once, each with its own store on the same url: each its own prefix, each gradient
    StoreAll's, and one run's end deletes none of the others' checkpoints."""
    url, opts, listing = where
    rec = revseq.Recurrence(np.sin, np.cos)
    starts = [np.full(8, v) for v in (0.1, 0.5, 0.9)]
    references = [revseq.backprop(rec, x0, 30, revseq.StoreAll()).gradient for x0 in starts]
    barrier = threading.Barrier(len(starts), timeout=30)
    stores = [FsspecStore(url, **opts) for _ in starts]
    prefixes: list[str | None] = [None] * len(starts)
    gradients: list[Any] = [None] * len(starts)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        calls = [0]

        def f(x: Any) -> Any:
            calls[0] += 1
            if calls[0] == 33:  # all three runs hold disk checkpoints at this moment
                prefixes[i] = stores[i].path
                barrier.wait()
            return np.sin(x)

        try:
            plan = revseq.MultistageCheckpointing(ram=1, disk=3)
            gradients[i] = revseq.backprop(revseq.Recurrence(f, np.cos), starts[i], 30, plan, disk=stores[i]).gradient
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(starts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(prefixes)) == len(starts)
    assert all(p is not None for p in prefixes)
    for gradient, reference in zip(gradients, references, strict=True):
        np.testing.assert_array_equal(gradient, reference)
    assert [p for p in listing() if "revseq-" in p] == []

    a, b = FsspecStore(url, **opts), FsspecStore(url, **opts)
    a.put(0, np.arange(3.0))
    b.put(0, np.ones(3))
    b.clear()
    same(np.arange(3.0), a.get(0))
    a.clear()


def test_a_local_directory_is_private_and_a_planted_partial_file_is_left_alone(tmp_path: Any) -> None:
    store = FsspecStore(str(tmp_path))
    store.put(0, np.ones(2))
    assert store.path is not None
    assert os.stat(store.path).st_mode & 0o777 == 0o700
    planted = os.path.join(store.path, "x_1.npy.partial")
    with open(planted, "wb") as fh:
        fh.write(b"not ours")
    with pytest.raises(
        StoreError, match=r"x_1\.npy\.partial already exists, and this store did not create it"
    ) as caught:
        store.put(1, np.ones(2))
    assert caught.value.errno == 17
    with open(planted, "rb") as fh:
        assert fh.read() == b"not ours"
    same(np.ones(2), store.get(0))
    store.clear()
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path: Any) -> None:
    with pytest.raises(ParameterError, match=r"url must be a non-empty str or os.PathLike .*got 3 \(int\)"):
        FsspecStore(3)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="url must be a non-empty str"):
        FsspecStore("")
    with pytest.raises(ParameterError, match="url must be a URL fsspec can open, got 'nosuchprotocol://x'"):
        FsspecStore("nosuchprotocol://x")
    with pytest.raises(StoreError, match="directory must be an existing, writable directory"):
        FsspecStore(f"file://{tmp_path}/missing")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert FsspecStore(tmp_path).path is None  # nothing made before the first put
    assert list(tmp_path.iterdir()) == []
