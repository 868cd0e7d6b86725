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
from stores import Forwarding

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


class Counting(Forwarding):
    """A store around another that counts the calls the engine makes."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.puts = self.gets = 0

    def put(self, key: int, state: Any) -> None:
        self.puts += 1
        super().put(key, state)

    def get(self, key: int) -> Any:
        self.gets += 1
        return super().get(key)


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
# JAX, once another test file has imported it, warns at every fork (its threads); the child here never touches it.
@pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")
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

    def __init__(self, path: str, mode: str, budget: int, error: BaseException, **kwargs: Any) -> None:
        self._fh = builtins.open(path, mode, **kwargs)  # noqa: SIM115 (closed by __exit__, as the store's `with` does)
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
            return FailingFile(path, mode, budget, error, **kwargs)  # with the store's opener
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
    with pytest.raises(StoreError) as info:
        store.get(3)
    assert str(info.value) == f"could not read checkpoint x_3 from {store.path}: x_3.npy: No such file or directory"
    assert info.value.errno == errno.ENOENT
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


# -- files changed or planted from outside: refused, never returned nor written through -------


def save_in_place_of(path: str, array: np.ndarray) -> None:
    os.remove(path)
    np.save(path, array, allow_pickle=True)  # a pickle too, if asked: the store must not unpickle it


def npz_in_place_of(path: str) -> None:
    np.savez(path + ".tmp.npz", x=x0())
    os.replace(path + ".tmp.npz", path)


def truncate(path: str) -> None:
    os.truncate(path, os.path.getsize(path) - 1)


def extend(path: str, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


def link_to_outside(path: str, outside: str) -> None:
    np.save(outside, x0())  # a valid file of the right shape and dtype, and the right values
    os.remove(path)
    os.symlink(outside, path)


def swap_for(path: str, make: Any) -> None:
    os.remove(path)
    make(path)


def npy(shape: Any, dtype: str, size: int) -> str:
    """How the store describes a ``.npy`` file (a header of 128 bytes, as for every small array here)."""
    return f"shape {shape}, dtype {dtype}, C order, data from byte 128, {size} bytes"


X0_NPY = f"expected {npy((7,), 'float64', 184)}; found "  # what the store wrote for x0(), and then found
NO_HEADER = X0_NPY + "no .npy header numpy can parse ("
LINK = "expected a regular file; found a symbolic link, not followed"
# What replaces x_3.npy (given its path and a path outside the store), and what the store then finds.
TAMPERING = {
    "another shape": (lambda p, o: save_in_place_of(p, np.zeros(3)), X0_NPY + npy((3,), "float64", 152)),
    "another dtype": (lambda p, o: save_in_place_of(p, x0().view(np.int64)), X0_NPY + npy((7,), "int64", 184)),
    "another byte order": (lambda p, o: save_in_place_of(p, x0().astype(">f8")), X0_NPY + npy((7,), ">f8", 184)),
    "another ndim": (lambda p, o: save_in_place_of(p, x0()[:, None]), X0_NPY + npy((7, 1), "float64", 184)),
    "a pickle": (lambda p, o: save_in_place_of(p, np.array([None] * 7)), X0_NPY + "shape (7,), dtype object, C order"),
    "an npz": (lambda p, o: npz_in_place_of(p), NO_HEADER + "the magic string is not correct; expected b'\\x93NUMPY'"),
    "truncated": (lambda p, o: truncate(p), X0_NPY + npy((7,), "float64", 183)),
    "an empty file": (lambda p, o: os.truncate(p, 0), NO_HEADER + "EOF: reading magic string"),
    "a byte appended": (lambda p, o: extend(p, b"\0"), X0_NPY + npy((7,), "float64", 185)),
    "an array appended": (lambda p, o: extend(p, np.zeros(7).tobytes()), X0_NPY + npy((7,), "float64", 240)),
    "a symlink to a valid file": (link_to_outside, LINK),
    "a dangling symlink": (lambda p, o: swap_for(p, lambda p: os.symlink(o, p)), LINK),
    "a directory": (lambda p, o: swap_for(p, os.mkdir), "expected a regular file; found a directory"),
    "a FIFO": (lambda p, o: swap_for(p, lambda p: os.mkfifo(p)), "expected a regular file; found a FIFO"),  # no wait
}  # fmt: skip


@pytest.mark.parametrize("name", list(TAMPERING))
def test_a_checkpoint_file_changed_from_outside_is_refused_on_read(name, tmp_path):
    tamper, found = TAMPERING[name]
    if name == "a FIFO" and not hasattr(os, "mkfifo"):
        pytest.skip("needs os.mkfifo")
    (tmp_path / "parent").mkdir()
    store = DiskStore(tmp_path / "parent")
    store.put(3, x0())
    store.put(4, x0())
    outside = tmp_path / "outside.npy"
    tamper(os.path.join(store.path, "x_3.npy"), str(outside))
    before = outside.read_bytes() if outside.exists() else None
    with pytest.raises(StoreError) as info:
        store.get(3)
    prefix = f"could not read checkpoint x_3 from {store.path}: x_3.npy is not the file this store wrote: "
    assert str(info.value).startswith(prefix + found), str(info.value)
    assert info.value.errno == (errno.ELOOP if "symlink" in name else None)
    assert isinstance(info.value, OSError)
    with pytest.raises(StoreError, match=r"x_3\.npy is not the file"):  # again: nothing was consumed or cached
        store.get(3)
    assert (len(store), store.bytes_read) == (2, 0)
    np.testing.assert_array_equal(store.get(4), x0())  # the other checkpoint is still read
    store.clear()
    assert entries(tmp_path) == (["outside.npy", "parent"] if before is not None else ["parent"])
    if before is not None:
        assert outside.read_bytes() == before


def test_a_changed_leaf_of_a_tree_state_is_named(tmp_path):
    store = DiskStore(tmp_path)
    store.put(5, {"h": x0(), "c": np.arange(3, dtype=np.int32)})
    save_in_place_of(os.path.join(store.path, "x_5.1.npy"), np.arange(3, dtype=np.int64))
    expected = (f"could not read checkpoint x_5 from {store.path}: x_5.1.npy is not the file this store wrote: "
                "expected shape (3,), dtype int32, C order, data from byte 128, 140 bytes; "
                "found shape (3,), dtype int64, C order, data from byte 128, 152 bytes")  # fmt: skip
    with pytest.raises(StoreError) as info:
        store.get(5)
    assert str(info.value) == expected
    store.clear()


def test_a_file_rewritten_with_the_same_header_and_size_is_read(tmp_path):
    # A known limit, stated in the docs: the data are not checksummed, so this is not detected.
    store = DiskStore(tmp_path)
    store.put(0, x0())
    path = os.path.join(store.path, "x_0.npy")
    os.remove(path)
    np.save(path, -x0())
    np.testing.assert_array_equal(store.get(0), -x0())
    store.clear()


@pytest.mark.parametrize("plant", ["a symlink to an outside file", "a dangling symlink", "a regular file"])
@pytest.mark.parametrize("state", ["array", "second leaf of a tuple"])
@pytest.mark.parametrize("held", [True, False])  # False: the private directory goes once the put fails
def test_a_put_does_not_write_through_what_is_planted_at_its_partial_name(plant, state, held, tmp_path):
    (tmp_path / "parent").mkdir()
    outside = tmp_path / "outside"
    if plant != "a dangling symlink":
        outside.write_bytes(b"not to be touched")
    store = DiskStore(tmp_path / "parent")
    store.put(0, x0())
    if not held:
        store.delete(0)
    name, value = ("x_1.npy", x0()) if state == "array" else ("x_1.1.npy", (x0(), np.arange(3)))
    planted = os.path.join(store.path, name + ".partial")  # the name a put of x_1 writes first
    if plant == "a regular file":
        with open(planted, "wb") as fh:
            fh.write(b"planted")
    else:
        os.symlink(outside, planted)
    before = (len(store), store.nbytes, store.disk_usage, store.bytes_written, sorted(os.listdir(store.path)))
    with pytest.raises(StoreError) as info:
        store.put(1, value)
    expected = f"{name}.partial already exists, and this store did not create it; it is left alone, not written through"
    assert str(info.value) == f"could not write checkpoint x_1 to {os.path.dirname(planted)}: {expected}"
    assert info.value.errno == errno.EEXIST
    if plant == "a dangling symlink":
        assert not os.path.lexists(outside)  # not created through the link
    else:
        assert outside.read_bytes() == b"not to be touched"
    if held:  # the store as it was, the planted entry left alone, x_1.0.npy.partial (ours) removed
        after = (len(store), store.nbytes, store.disk_usage, store.bytes_written, sorted(os.listdir(store.path)))
        assert after == before
        assert os.path.islink(planted) == (plant != "a regular file")
        np.testing.assert_array_equal(store.get(0), x0())
        store.clear()
    assert store.path is None
    assert entries(tmp_path) == (["parent"] if plant == "a dangling symlink" else ["outside", "parent"])
    if plant != "a dangling symlink":
        assert outside.read_bytes() == b"not to be touched"


def test_a_link_planted_at_a_final_name_is_replaced_not_followed(tmp_path):
    (tmp_path / "parent").mkdir()
    outside = tmp_path / "outside.npy"
    np.save(outside, np.zeros(7))
    before = outside.read_bytes()
    store = DiskStore(tmp_path / "parent")
    store.put(0, x0())
    os.symlink(outside, os.path.join(store.path, "x_1.npy"))
    store.put(1, 2 * x0())
    assert not os.path.islink(os.path.join(store.path, "x_1.npy"))
    np.testing.assert_array_equal(store.get(1), 2 * x0())
    assert outside.read_bytes() == before
    store.clear()
    assert entries(tmp_path) == ["outside.npy", "parent"]


def test_files_are_created_0600_and_new(tmp_path, monkeypatch):
    store = DiskStore(tmp_path)
    flags = []
    real = os.open

    def spy(path, flag, mode=0o777, **kwargs):
        if str(path).endswith(".partial"):
            flags.append((flag, mode))
        return real(path, flag, mode, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    store.put(0, x0())
    store.put(1, (x0(), x0()))
    monkeypatch.undo()
    assert len(flags) == 3
    for flag, mode in flags:
        assert mode == 0o600
        for required in ("O_WRONLY", "O_CREAT", "O_EXCL", "O_NOFOLLOW", "O_CLOEXEC"):
            if hasattr(os, required):
                assert flag & getattr(os, required), required
    for name in os.listdir(store.path):
        assert stat.S_IMODE(os.lstat(os.path.join(store.path, name)).st_mode) == 0o600
    store.clear()


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


def random_bits(dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    """An array whose bytes are random: NaNs with payloads, -0.0, subnormals, non-canonical bools..."""
    dtype = np.dtype(dtype)
    count = dtype.itemsize * int(np.prod(shape))
    return np.random.default_rng(count).integers(0, 256, count, dtype=np.uint8).view(dtype).reshape(shape)


NUMERIC = ["?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"]
PACKED = np.dtype([("i", "<i2"), ("x", ">f8"), ("v", "u1", (3,))])
ALIGNED = np.dtype([("a", "u1"), ("x", "f8"), ("inner", [("b", "i1"), ("y", "f4")])], align=True)
ARRAYS = {
    **{f"{np.dtype(code).name}": random_bits(code, (3, 5)) for code in NUMERIC},
    **{f"{np.dtype(code).name}, 0-d": random_bits(code, ()) for code in ("?", "i8", "f2", "c16")},
    **{f"{code}, big-endian": random_bits(code, (4,)) for code in (">i4", ">f8", ">c8")},
    "long double": random_bits("g", (3,)),
    "float64, Fortran": np.asfortranarray(random_bits("f8", (4, 3))),
    "int16, Fortran 3-d": np.asfortranarray(random_bits("i2", (2, 3, 4))),
    "float32, transposed": random_bits("f4", (5, 3)).T,
    "float64, strided": random_bits("f8", (20,))[::3],
    "complex64, reversed": random_bits("c8", (6,))[::-1],
    "uint8, 2-d slice": random_bits("u1", (6, 7))[1::2, ::3],
    "float64, broadcast": np.broadcast_to(random_bits("f8", (3,)), (4, 3)),
    "float64, empty": np.zeros((0,)),
    "int32, empty 2-d": np.zeros((3, 0), np.int32),
    "complex128, empty Fortran": np.asfortranarray(np.zeros((0, 4), np.complex128)),
    "structured": random_bits(PACKED, (4,)),
    "structured, aligned": random_bits(ALIGNED, (3,)),
    "structured, 0-d": random_bits(PACKED, ()),
    "structured, strided": random_bits(PACKED, (6,))[::2],
    "bytes": np.array([b"ab", b"\0\xff"], dtype="S2"),
    "str": np.array(["αβγ", "x"]),
    "void": random_bits("V3", (2,)),
    "datetime64": np.array(["2024-02-29T12:00", "NaT"], dtype="M8[s]"),
    "timedelta64": random_bits("m8[ns]", (3,)),
}


@pytest.mark.parametrize("name", list(ARRAYS))
def test_arrays_of_every_dtype_and_layout_round_trip_bit_exactly(name, tmp_path):
    want = ARRAYS[name]
    store = DiskStore(tmp_path)
    store.put(0, want)
    got = store.get(0)
    assert type(got) is np.ndarray
    assert (got.shape, got.dtype, got.dtype.descr) == (want.shape, want.dtype, want.dtype.descr)
    if want.dtype.names is None or want.flags.c_contiguous:  # else numpy's copy of the padding bytes is its own
        assert got.tobytes() == want.tobytes()
    else:
        assert all(got[field].tobytes() == want[field].tobytes() for field in want.dtype.names)
    fortran = want.flags.f_contiguous and not want.flags.c_contiguous
    assert got.flags.f_contiguous if fortran else got.flags.c_contiguous  # the order np.save writes and np.load gives
    assert got.flags.writeable
    assert not np.shares_memory(got, want)
    expected = io.BytesIO()
    np.save(expected, want, allow_pickle=False)
    with open(os.path.join(store.path, "x_0.npy"), "rb") as fh:
        assert fh.read() == expected.getvalue()  # numpy's own bytes, so np.load reads the file too
    assert store.bytes_read == want.nbytes
    store.clear()
    assert entries(tmp_path) == []


def test_a_header_too_long_for_format_1_is_written_and_read_in_format_2(tmp_path):
    dtype = np.dtype([(f"field_{i}", "u1") for i in range(3000)])  # a header of about 60 kB
    want = random_bits(dtype, (2,))
    store = DiskStore(tmp_path)
    store.put(0, want)
    got = store.get(0)
    assert (got.dtype, got.tobytes()) == (dtype, want.tobytes())
    expected = io.BytesIO()
    with pytest.warns(UserWarning, match="format 2.0"):
        np.save(expected, want, allow_pickle=False)
    with open(os.path.join(store.path, "x_0.npy"), "rb") as fh:
        assert fh.read() == expected.getvalue()
    store.clear()


def test_field_names_that_need_npy_format_3_are_refused_before_writing(tmp_path):
    store = DiskStore(tmp_path)
    with pytest.raises(ParameterError, match=r"state\[1\] of checkpoint x_0 is an array of dtype .*not Latin-1"):
        store.put(0, (x0(), np.zeros(2, dtype=[("\u03b1", "f8")])))
    assert (entries(tmp_path), len(store)) == ([], 0)


def test_copies_is_true_and_read_only(tmp_path):
    store = DiskStore(tmp_path)
    assert store.copies is True
    with pytest.raises(AttributeError):
        store.copies = False  # type: ignore[misc]
    assert (revseq.MemoryStore().copies, revseq.MemoryStore(copy=True).copies) == (False, True)


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


# -- blocks reserved before large data is written (fallocate, as ndarray.tofile does) -----------


def npy_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


class Reserving:
    """Stands for ``revseq.disk._fallocate()``: records each call, then answers ``code`` or calls the real one."""

    def __init__(self, code: int | None = None) -> None:
        self.code = code
        self.real = revseq.disk._fallocate()  # the C library's (None off Linux), taken before it is replaced
        self.calls: list[tuple[int, int, int]] = []  # (offset, length, the file's size when reserved)

    def __call__(self, fd: int, offset: int, length: int) -> int:
        self.calls.append((offset, length, os.fstat(fd).st_size))
        if self.code is not None:
            return self.code
        return 0 if self.real is None else self.real(fd, offset, length)


def reserve_from(monkeypatch, size: int, reserving: Reserving) -> None:
    monkeypatch.setattr(revseq.disk, "_PREALLOCATE_FROM", size)
    monkeypatch.setattr(revseq.disk, "_fallocate", lambda: reserving)


def test_the_data_of_a_large_leaf_is_reserved_before_it_is_written_and_the_file_is_np_saves(tmp_path, monkeypatch):
    reserving = Reserving()
    reserve_from(monkeypatch, 800, reserving)  # instead of 16 MiB: small arrays take the large arrays' path
    rng = np.random.default_rng(1)
    big, fortran, strided, small = (rng.standard_normal(100), np.asfortranarray(rng.standard_normal((10, 12))),
                                    rng.standard_normal(300)[::3], rng.standard_normal(99))  # fmt: skip
    store = DiskStore(tmp_path)
    store.put(0, big)
    store.put(1, (fortran, small, strided))
    # Where np.save's data starts and how long it is, from np.save's own bytes: the header is what precedes the data.
    expected = [(len(npy_bytes(a)) - a.nbytes, a.nbytes, 0) for a in (big, fortran, strided)]  # small: 792 < 800
    assert reserving.calls == expected  # the file still empty (0 bytes) when its data is reserved
    for name, array in (("x_0.npy", big), ("x_1.0.npy", fortran), ("x_1.1.npy", small), ("x_1.2.npy", strided)):
        with open(os.path.join(store.path, name), "rb") as fh:
            assert fh.read() == npy_bytes(array)  # the size too: the reservation did not extend the file
    np.testing.assert_array_equal(store.get(0), big)
    assert store.bytes_written == big.nbytes + fortran.nbytes + small.nbytes + strided.nbytes
    store.clear()
    assert entries(tmp_path) == []


NO_SPACE = [errno.ENOSPC, *([errno.EDQUOT] if hasattr(errno, "EDQUOT") else [])]  # a full disk, a full quota


@pytest.mark.parametrize("code", NO_SPACE, ids=errno.errorcode.get)
def test_a_full_disk_found_when_reserving_fails_the_put_before_any_data_is_written(code, tmp_path, monkeypatch):
    store = DiskStore(tmp_path)
    store.put(0, x0())
    before = (len(store), store.nbytes, store.disk_usage, store.bytes_written)
    reserving = Reserving(code)
    reserve_from(monkeypatch, 8, reserving)
    with pytest.raises(StoreError) as info:
        store.put(1, (x0(), x0()))
    assert str(info.value) == f"could not write checkpoint x_1 to {store.path}: {os.strerror(code)}"
    assert info.value.errno == code
    assert reserving.calls == [(128, 56, 0)]  # x0()'s data, after np.save's 128-byte header; no second file
    assert (len(store), store.nbytes, store.disk_usage, store.bytes_written) == before
    assert os.listdir(store.path) == ["x_0.npy"]
    np.testing.assert_array_equal(store.get(0), x0())
    store.clear()
    reserve_from(monkeypatch, 8, Reserving(code))
    with pytest.raises(StoreError):  # the first put of a store: its directory goes too
        DiskStore(tmp_path).put(0, x0())
    assert entries(tmp_path) == []


@pytest.mark.parametrize("code", [errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.EINTR], ids=errno.errorcode.get)
def test_a_file_system_that_cannot_reserve_is_written_all_the_same(code, tmp_path, monkeypatch):
    reserving = Reserving(code)
    reserve_from(monkeypatch, 8, reserving)
    store = DiskStore(tmp_path)
    store.put(0, x0())
    assert reserving.calls == [(128, 56, 0)]
    with open(os.path.join(store.path, "x_0.npy"), "rb") as fh:
        assert fh.read() == npy_bytes(x0())
    store.clear()


def test_an_interrupt_while_reserving_leaves_no_partial_file(tmp_path, monkeypatch):
    store = DiskStore(tmp_path)
    store.put(0, x0())

    def interrupted(fd: int, offset: int, length: int) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(revseq.disk, "_PREALLOCATE_FROM", 8)
    monkeypatch.setattr(revseq.disk, "_fallocate", lambda: interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.put(1, x0())
    assert (os.listdir(store.path), len(store)) == (["x_0.npy"], 1)
    store.clear()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fallocate is Linux's")
def test_the_c_librarys_fallocate_reserves_blocks_and_keeps_the_size(tmp_path):
    fallocate = revseq.disk._fallocate()
    assert fallocate is not None
    assert fallocate(-1, 0, 4096) == errno.EBADF  # the system's errno comes back
    with open(tmp_path / "f", "wb") as fh:
        fh.write(b"x" * 100)
        fh.flush()
        code = fallocate(fh.fileno(), 4096, 1 << 20)
        if code in (errno.EOPNOTSUPP, errno.ENOSYS):
            pytest.skip(f"the file system under {tmp_path} has no fallocate")
        assert code == 0
        info = os.fstat(fh.fileno())
        assert info.st_size == 100  # FALLOC_FL_KEEP_SIZE
        assert info.st_blocks * 512 >= 1 << 20  # the kernel's count: the blocks are there
    assert (tmp_path / "f").read_bytes() == b"x" * 100
