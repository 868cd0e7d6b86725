"""DiskStore: the same results as MemoryStore, and nothing left on disk however a run ends."""

from __future__ import annotations

import builtins
import errno
import gc
import io
import os
import shutil
import stat
import sys
from collections import namedtuple
from typing import Any

import numpy as np
import pytest
from steps import failing_on_call

import revseq
import revseq.disk
from revseq.disk import DiskStore
from revseq.errors import ParameterError, RevseqError, StoreError

STRATEGIES = [
    revseq.StoreAll(),
    revseq.Recompute(),
    revseq.RecursiveHalving(),
    revseq.SqrtCheckpointing(),
    revseq.BinomialCheckpointing(checkpoints=3),
    revseq.BinomialCheckpointing(),
]
strategies = pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
N = 21
SIN = revseq.Recurrence(np.sin, np.cos)


def x0() -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, 7)


def entries(directory: Any) -> list[str]:
    """Everything under ``directory``, recursively: what a run left behind."""
    return sorted(os.path.relpath(os.path.join(root, name), directory)
                  for root, dirs, files in os.walk(directory) for name in dirs + files)  # fmt: skip


# -- the same results as MemoryStore -------------------------------------------------------


class Counting:
    """A store around another that counts the calls the engine makes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.puts = self.gets = 0

    def put(self, key: int, state: Any) -> None:
        self.puts += 1
        self.inner.put(key, state)

    def get(self, key: int) -> Any:
        self.gets += 1
        return self.inner.get(key)

    def delete(self, key: int) -> None:
        self.inner.delete(key)

    def clear(self) -> None:
        self.inner.clear()

    def __len__(self) -> int:
        return len(self.inner)

    @property
    def nbytes(self) -> int:
        return int(self.inner.nbytes)


@strategies
def test_gradient_and_stats_equal_memory_stores(strategy, tmp_path):
    store = DiskStore(tmp_path)
    counted = Counting(store)
    out = revseq.backprop(SIN, x0(), N, strategy, store=counted)
    expected = revseq.backprop(SIN, x0(), N, strategy)
    np.testing.assert_array_equal(out.gradient, expected.gradient)
    np.testing.assert_array_equal(out.state, expected.state)
    assert out.stats == expected.stats  # peak_bytes included: nbytes counts array data, as MemoryStore does
    assert counted.puts == strategy.cost(N).writes
    assert store.bytes_written == counted.puts * x0().nbytes
    assert store.bytes_read == counted.gets * x0().nbytes
    assert entries(tmp_path) == []
    assert (len(store), store.nbytes, store.disk_usage, store.path) == (0, 0, 0, None)


def objective(x: np.ndarray) -> float:
    for _ in range(N):
        x = np.sin(x)
    return float(x.sum())


def test_gradient_equals_finite_differences(tmp_path):
    x, eps = x0(), 1e-6
    out = revseq.backprop(SIN, x, N, revseq.BinomialCheckpointing(checkpoints=2), store=DiskStore(tmp_path))
    fd = [(objective(x + eps * e) - objective(x - eps * e)) / (2 * eps) for e in np.eye(x.size)]
    np.testing.assert_allclose(out.gradient, fd, rtol=1e-6, atol=1e-9)
    assert entries(tmp_path) == []


@strategies
def test_files_on_disk_are_the_checkpoints_held(strategy, tmp_path):
    store = DiskStore(tmp_path)
    seen = []

    def f(x):
        if store.path is not None:
            files = sorted(os.listdir(store.path))
            seen.append(len(files))
            assert len(files) == len(store)
            assert all(name.startswith("x_") and name.endswith(".npy") for name in files)
            assert store.disk_usage == sum(os.path.getsize(os.path.join(store.path, name)) for name in files)
            assert store.nbytes == len(files) * x0().nbytes
        return np.sin(x)

    states = list(revseq.reverse(f, x0(), N, strategy, store=store))
    np.testing.assert_array_equal(states, list(revseq.reverse(np.sin, x0(), N, strategy)))
    assert max(seen) == strategy.cost(N).peak_checkpoints
    assert entries(tmp_path) == []


def cell(h, c):
    """A two-part state (h float64, c float32): h' = sin(h) c, c' = cos(c)."""
    return np.sin(h) * c, np.cos(c)


def cell_vjp(h, c, gh, gc):
    return gh * np.cos(h) * c, (gh * np.sin(h) - gc * np.sin(c)).astype(c.dtype)


@pytest.mark.parametrize("state", ["tuple", "dict"])
def test_tree_states_give_the_memory_stores_gradient(state, tmp_path):
    h, c = x0(), np.cos(x0()).astype(np.float32)
    if state == "tuple":
        start: Any = (h, c)
        rec = revseq.Recurrence(lambda s: cell(*s), vjp=lambda s, g: cell_vjp(*s, *g))
    else:
        start = {"h": h, "c": c}
        rec = revseq.Recurrence(
            lambda s: dict(zip("hc", cell(s["h"], s["c"]), strict=True)),
            vjp=lambda s, g: dict(zip("hc", cell_vjp(s["h"], s["c"], g["h"], g["c"]), strict=True)),
        )
    for strategy in (revseq.StoreAll(), revseq.BinomialCheckpointing(checkpoints=3)):
        out = revseq.backprop(rec, start, N, strategy, store=DiskStore(tmp_path))
        expected = revseq.backprop(rec, start, N, strategy)
        assert_same(out.gradient, expected.gradient)
        assert out.stats == expected.stats
        assert entries(tmp_path) == []


def test_store_is_reusable_after_a_run(tmp_path):
    store = DiskStore(tmp_path)
    first = revseq.backprop(SIN, x0(), N, revseq.SqrtCheckpointing(), store=store)
    written = store.bytes_written
    second = revseq.backprop(SIN, x0(), N, revseq.SqrtCheckpointing(), store=store)
    np.testing.assert_array_equal(first.gradient, second.gradient)
    assert store.bytes_written == 2 * written  # cumulative: clear() does not reset the counters
    assert entries(tmp_path) == []


# -- nothing left behind, however a run ends -----------------------------------------------


@strategies
@pytest.mark.parametrize("k", [1, 5, N])  # N: the last call for StoreAll, x_n
def test_a_step_raising_mid_run_reaches_the_caller_unchanged(strategy, k, tmp_path):
    error = ValueError("the step's own error")
    store = DiskStore(tmp_path)
    rec = revseq.Recurrence(failing_on_call(k, error), np.cos)
    with pytest.raises(ValueError, match="the step's own error") as info:
        revseq.backprop(rec, x0(), N, strategy, store=store)
    assert info.value is error
    assert entries(tmp_path) == []
    assert len(store) == 0


@pytest.mark.parametrize("strategy", [revseq.StoreAll(), revseq.BinomialCheckpointing(checkpoints=3)], ids=repr)
def test_keyboard_interrupt_in_the_step_propagates_and_leaves_nothing(strategy, tmp_path):
    rec = revseq.Recurrence(failing_on_call(12, KeyboardInterrupt()), np.cos)
    with pytest.raises(KeyboardInterrupt):
        revseq.backprop(rec, x0(), N, strategy, store=DiskStore(tmp_path))
    assert entries(tmp_path) == []


def test_closing_a_reverse_iterator_early_leaves_nothing(tmp_path):
    states = revseq.reverse(np.sin, x0(), N, revseq.BinomialCheckpointing(checkpoints=3), store=DiskStore(tmp_path))
    next(states)
    next(states)
    assert entries(tmp_path) != []
    states.close()
    assert entries(tmp_path) == []


def test_an_abandoned_reverse_iterator_leaves_nothing_once_collected(tmp_path):
    states = revseq.reverse(np.sin, x0(), N, revseq.RecursiveHalving(), store=DiskStore(tmp_path))
    next(states)
    assert entries(tmp_path) != []
    del states
    gc.collect()
    assert entries(tmp_path) == []


def test_a_store_dropped_without_clear_removes_its_directory(tmp_path):
    store = DiskStore(tmp_path)
    store.put(0, x0())
    store.put(1, (x0(), x0()))
    assert len(entries(tmp_path)) == 4  # the private directory and three files
    del store
    gc.collect()
    assert entries(tmp_path) == []


def test_a_store_never_written_to_creates_nothing(tmp_path):
    store = DiskStore(tmp_path)
    store.clear()
    assert (entries(tmp_path), store.path, len(store)) == ([], None, 0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_remove_its_parents_checkpoints(tmp_path):
    store = DiskStore(tmp_path)
    store.put(0, x0())
    pid = os.fork()
    if pid == 0:  # the child: runs the store's finalizer, then exits without pytest's cleanup
        try:
            del store
            gc.collect()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    np.testing.assert_array_equal(store.get(0), x0())
    store.clear()
    assert entries(tmp_path) == []


# -- write failures: a full disk, a real I/O error, an interrupt ----------------------------


class FailingFile:
    """A real file that fails after ``budget`` bytes have been written, as a full disk does."""

    def __init__(self, path: str, mode: str, budget: int, error: BaseException) -> None:
        self._fh = builtins.open(path, mode)  # noqa: SIM115 (closed by __exit__, as the store's `with` does)
        self._left = budget
        self._error = error

    def write(self, data: Any) -> int:
        data = memoryview(data).cast("B")
        if len(data) > self._left:
            self._fh.write(data[: self._left])  # a partial file is left, for the store to remove
            self._fh.flush()
            raise self._error
        self._left -= len(data)
        return self._fh.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)

    def __enter__(self) -> FailingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fail_writes(monkeypatch, *, after_files: int, error: BaseException = ENOSPC, budget: int = 100) -> list[str]:
    """Make the store's ``after_files + 1``-th file, and every later one, fail while written."""
    opened: list[str] = []

    def fake_open(path, mode="r", *args, **kwargs):
        opened.append(path)
        if len(opened) > after_files:
            return FailingFile(path, mode, budget, error)
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(revseq.disk, "open", fake_open, raising=False)
    return opened


@strategies
def test_a_full_disk_mid_run_raises_store_error_and_leaves_nothing(strategy, tmp_path, monkeypatch):
    good = min(2, strategy.cost(N).writes - 1)  # checkpoints written before the disk is full
    opened = fail_writes(monkeypatch, after_files=good)
    with pytest.raises(StoreError, match=r"could not write checkpoint x_\d+ to .*revseq-\w+: No space left on device"):
        revseq.backprop(SIN, x0(), N, strategy, store=DiskStore(tmp_path))
    assert len(opened) == good + 1
    assert entries(tmp_path) == []


def test_a_failed_write_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    store = DiskStore(tmp_path)
    store.put(0, x0())
    store.put(1, {"a": x0(), "b": np.arange(3)})
    before = (len(store), store.nbytes, store.disk_usage, store.bytes_written, sorted(os.listdir(store.path)))
    # One array; a tuple failing in its first file; a tuple failing in its second, the first written.
    for state, good in ((x0(), 0), ((x0(), x0()), 0), ((x0(), x0()), 1)):
        fail_writes(monkeypatch, after_files=good)
        with pytest.raises(StoreError) as info:
            store.put(2, state)
        assert info.value.errno == errno.ENOSPC
        assert info.value.__cause__ is ENOSPC
        assert str(info.value) == f"could not write checkpoint x_2 to {store.path}: No space left on device"
        assert isinstance(info.value, OSError)
        assert isinstance(info.value, RevseqError)
        after = (len(store), store.nbytes, store.disk_usage, store.bytes_written, sorted(os.listdir(store.path)))
        assert after == before == (2, before[1], before[2], before[3], ["x_0.npy", "x_1.0.npy", "x_1.1.npy"])
        with pytest.raises(KeyError):
            store.get(2)
    np.testing.assert_array_equal(store.get(0), x0())
    np.testing.assert_array_equal(store.get(1)["b"], np.arange(3))
    store.clear()
    assert entries(tmp_path) == []


def test_a_failed_first_write_leaves_no_directory(tmp_path, monkeypatch):
    store = DiskStore(tmp_path)
    fail_writes(monkeypatch, after_files=0)
    with pytest.raises(StoreError, match="No space left on device"):
        store.put(0, x0())
    assert (entries(tmp_path), store.path) == ([], None)


def test_keyboard_interrupt_during_a_write_leaves_no_partial_file(tmp_path, monkeypatch):
    store = DiskStore(tmp_path)
    store.put(0, x0())
    fail_writes(monkeypatch, after_files=0, error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        store.put(1, x0())
    assert os.listdir(store.path) == ["x_0.npy"]
    assert len(store) == 1


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE and SIGXFSZ as on Linux")
def test_a_real_write_error_from_the_system_is_reported_with_its_reason(tmp_path):
    import resource
    import signal

    store = DiskStore(tmp_path)
    store.put(0, np.zeros(10))
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limits[1]))
        with pytest.raises(StoreError, match=r"could not write checkpoint x_1 to .*: File too large") as info:
            store.put(1, np.zeros(10_000))
        with pytest.raises(StoreError, match="File too large"):
            store.put(1, {"big": np.zeros(10_000)})
        with pytest.raises(StoreError, match="File too large"):  # not contiguous: numpy's own writer
            store.put(1, np.zeros(20_000)[::2])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert info.value.errno == errno.EFBIG
    assert os.listdir(store.path) == ["x_0.npy"]
    store.clear()
    assert entries(tmp_path) == []


def test_a_checkpoint_removed_from_outside_is_a_store_error_on_read(tmp_path):
    store = DiskStore(tmp_path)
    store.put(3, x0())
    os.remove(os.path.join(store.path, "x_3.npy"))
    with pytest.raises(StoreError, match=r"could not read checkpoint x_3 from .*: No such file or directory"):
        store.get(3)
    store.delete(3)  # already gone: nothing to complain about
    store.clear()
    assert entries(tmp_path) == []


def test_clear_warns_when_the_directory_cannot_be_removed(tmp_path, monkeypatch):
    store = DiskStore(tmp_path)
    store.put(0, x0())
    path = store.path

    def refuse(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(shutil, "rmtree", refuse)
    with pytest.warns(RuntimeWarning, match=f"could not remove its checkpoint directory {path}.*Permission denied"):
        store.clear()
    monkeypatch.undo()
    assert (len(store), store.path) == (0, None)
    shutil.rmtree(path)


# -- the parent directory ---------------------------------------------------------------------


def test_a_missing_parent_directory_fails_at_construction(tmp_path):
    missing = tmp_path / "missing" / "sub"
    expected = f"directory must be an existing, writable directory, got '{missing}': No such file or directory"
    with pytest.raises(StoreError, match=expected) as info:
        DiskStore(missing)
    assert info.value.errno == errno.ENOENT
    assert entries(tmp_path) == []


def test_a_parent_under_a_regular_file_fails_at_construction(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    for bad in (tmp_path / "file" / "sub", tmp_path / "file"):
        with pytest.raises(StoreError, match=f"got '{bad}': Not a directory"):
            DiskStore(str(bad))
    assert entries(tmp_path) == ["file"]


def test_a_parent_that_is_not_writable_fails_at_construction(tmp_path, monkeypatch):
    # Root writes anywhere, so chmod cannot make a directory unwritable here: ask os.access to say no.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(StoreError, match=f"got '{tmp_path}': not writable") as info:
        DiskStore(tmp_path)
    assert info.value.errno == errno.EACCES


def test_a_parent_removed_after_construction_fails_on_the_first_put(tmp_path):
    parent = tmp_path / "gone"
    parent.mkdir()
    store = DiskStore(parent)
    parent.rmdir()
    with pytest.raises(StoreError, match=f"could not create a checkpoint directory in {parent}: No such file"):
        store.put(0, x0())
    assert (entries(tmp_path), len(store)) == ([], 0)


@pytest.mark.parametrize("bad", [3, b"/tmp", ["/tmp"]])
def test_a_directory_that_is_not_a_path_is_a_parameter_error(bad):
    with pytest.raises(ParameterError, match="directory must be a path"):
        DiskStore(bad)


def test_the_parent_defaults_to_tempfiles_and_is_absolute(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    store = DiskStore()
    store.put(0, x0())
    assert os.path.dirname(store.path) == str(tmp_path)
    store.clear()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    assert DiskStore("sub").directory == str(tmp_path / "sub")


def test_the_private_directory_is_0700_and_files_load_without_pickle(tmp_path):
    store = DiskStore(tmp_path)
    store.put(0, x0())
    store.put(1, {"h": x0(), "n": np.arange(4)})
    assert os.path.dirname(store.path) == str(tmp_path)
    assert os.path.basename(store.path).startswith("revseq-")
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o700
    assert sorted(os.listdir(store.path)) == ["x_0.npy", "x_1.0.npy", "x_1.1.npy"]
    np.testing.assert_array_equal(np.load(os.path.join(store.path, "x_0.npy"), allow_pickle=False), x0())
    np.testing.assert_array_equal(np.load(os.path.join(store.path, "x_1.0.npy"), allow_pickle=False), x0())
    np.testing.assert_array_equal(np.load(os.path.join(store.path, "x_1.1.npy"), allow_pickle=False), np.arange(4))
    store.clear()


# -- what a state can be ------------------------------------------------------------------


Pair = namedtuple("Pair", "a b")

LEAVES = {
    "float32": np.linspace(0, 1, 5, dtype=np.float32),
    "int64": np.arange(6, dtype=np.int64).reshape(2, 3),
    "complex128": np.array([1 + 2j, -3j]),
    "0-d": np.array(2.5),
    "bool": np.array([True, False]),
    "big-endian": np.arange(3, dtype=">f8"),
    "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    "strided view": np.arange(20.0)[::3],
    "empty": np.zeros((0, 3)),
    "structured": np.array([(1, 2.0)], dtype=[("i", "i4"), ("x", "f8")]),
    "numpy scalar": np.float64(1.5),
    "numpy int scalar": np.int16(-7),
    "python float": 0.25,
    "python int": 3,
    "python complex": 1 - 1j,
    "python bool": True,
}


def assert_same(got: Any, want: Any) -> None:
    assert type(got) is type(want)
    if isinstance(want, dict):
        assert list(got) == list(want)
        for k in want:
            assert_same(got[k], want[k])
    elif isinstance(want, (tuple, list)):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_same(g, w)
    elif isinstance(want, (np.ndarray, np.generic)):
        assert (got.shape, got.dtype) == (want.shape, want.dtype)
        np.testing.assert_array_equal(got, want)
    else:
        assert got == want


@pytest.mark.parametrize("name", list(LEAVES))
def test_a_leaf_comes_back_with_its_type_dtype_and_shape(name, tmp_path):
    store = DiskStore(tmp_path)
    leaf = LEAVES[name]
    store.put(0, leaf)
    assert_same(store.get(0), leaf)
    assert_same(store.get(0), leaf)  # a read does not consume the checkpoint
    nbytes = np.asarray(leaf).nbytes
    assert (store.nbytes, store.bytes_written, store.bytes_read) == (nbytes, nbytes, 2 * nbytes)
    store.clear()
    assert entries(tmp_path) == []


@pytest.mark.parametrize("name", list(LEAVES))
def test_a_file_holds_the_bytes_np_save_writes(name, tmp_path):
    store = DiskStore(tmp_path)
    store.put(0, LEAVES[name])
    expected = io.BytesIO()
    np.save(expected, LEAVES[name], allow_pickle=False)
    with open(os.path.join(store.path, "x_0.npy"), "rb") as fh:
        assert fh.read() == expected.getvalue()
    store.clear()


def test_a_checkpoint_read_back_is_a_copy(tmp_path):
    store = DiskStore(tmp_path)
    x = x0()
    store.put(0, x)
    x[:] = 0  # a step that works in place does not reach the checkpoint
    y = store.get(0)
    y[:] = 1
    np.testing.assert_array_equal(store.get(0), x0())
    store.clear()


@pytest.mark.parametrize(
    ("tree", "leaves"),
    [
        ((LEAVES["float32"], LEAVES["int64"]), 2),
        ({"h": LEAVES["complex128"], "c": LEAVES["0-d"], "t": 3}, 3),
        ([LEAVES["fortran"], (LEAVES["bool"], {"s": np.float64(2.0)})], 3),
        (Pair(a=LEAVES["empty"], b=LEAVES["big-endian"]), 2),
        ((), 0),
    ],
    ids=["tuple", "dict", "nested list", "namedtuple", "empty tuple"],
)
def test_a_tree_state_comes_back_with_its_structure(tree, leaves, tmp_path):
    store = DiskStore(tmp_path)
    store.put(5, tree)
    assert_same(store.get(5), tree)
    assert sorted(os.listdir(store.path)) == [f"x_5.{i}.npy" for i in range(leaves)]
    store.clear()
    assert entries(tmp_path) == []


def test_putting_a_key_again_replaces_its_checkpoint(tmp_path):
    store = DiskStore(tmp_path)
    store.put(1, x0())
    store.put(1, (np.arange(3),))
    assert_same(store.get(1), (np.arange(3),))
    assert (len(store), os.listdir(store.path), store.nbytes) == (1, ["x_1.0.npy"], np.arange(3).nbytes)
    store.put(1, x0())
    assert (os.listdir(store.path), store.nbytes) == (["x_1.npy"], x0().nbytes)
    store.put(1, (x0(), np.arange(3)))
    store.put(1, (np.arange(3),))
    assert (os.listdir(store.path), store.nbytes) == (["x_1.0.npy"], np.arange(3).nbytes)
    assert store.disk_usage == os.path.getsize(os.path.join(store.path, "x_1.0.npy"))
    assert_same(store.get(1), (np.arange(3),))
    store.clear()


@pytest.mark.parametrize(
    ("state", "where", "what"),
    [
        ("text", "state", r"builtins\.str"),
        ((x0(), {"a": object()}), r"state\[1\]\['a'\]", r"builtins\.object"),
        ({"h": np.array([None, 1])}, r"state\['h'\]", "an array of dtype object"),
        (np.ma.masked_array([1.0, 2.0], mask=[0, 1]), "state", r"numpy\.ma\S*MaskedArray, an ndarray subclass"),
        ([x0(), 2**80], r"state\[1\]", "an array of dtype object"),
    ],
    ids=["str", "object leaf", "object array", "masked array", "huge int"],
)
def test_what_cannot_be_stored_without_pickling_is_refused_before_writing(state, where, what, tmp_path):
    store = DiskStore(tmp_path)
    match = f"DiskStore stores numpy arrays and numbers, without pickling: {where} of checkpoint x_4 is {what}"
    with pytest.raises(ParameterError, match=match):
        store.put(4, state)
    assert (entries(tmp_path), len(store), store.bytes_written) == ([], 0, 0)


def test_an_unstorable_state_in_a_run_reaches_the_caller_and_leaves_nothing(tmp_path):
    rec = revseq.Recurrence(lambda s: {"x": np.sin(s["x"]), "tag": s["tag"]},
                            vjp=lambda s, g: {"x": g["x"] * np.cos(s["x"]), "tag": g["tag"]})  # fmt: skip
    with pytest.raises(ParameterError, match=r"state\['tag'\] of checkpoint x_0 is builtins.str"):
        revseq.backprop(rec, {"x": x0(), "tag": "label"}, N, store=DiskStore(tmp_path))
    assert entries(tmp_path) == []


def test_missing_keys_are_key_errors(tmp_path):
    store = DiskStore(tmp_path)
    with pytest.raises(KeyError):
        store.get(0)
    store.put(0, x0())
    with pytest.raises(KeyError):
        store.delete(1)
    store.delete(0)
    with pytest.raises(KeyError):
        store.get(0)
    assert (len(store), store.nbytes, store.disk_usage, os.listdir(store.path)) == (0, 0, 0, [])
    store.clear()


def test_it_is_a_checkpoint_store():
    store = DiskStore()
    assert isinstance(store, revseq.CheckpointStore)
    assert repr(store).startswith("DiskStore(directory=")
