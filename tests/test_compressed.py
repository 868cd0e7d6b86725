"""CompressedStore: states come back as they went in (within ZFP's tolerance), a byte budget counts compressed
bytes, and nothing is left behind however a run ends."""

from __future__ import annotations

import gc
import os
import sys
from collections import namedtuple
from typing import Any

import numpy as np
import pytest
from steps import failing_on_call
from stores import Forwarding

import revseq
from revseq import CompressedStore
from revseq.disk import DiskStore
from revseq.errors import ParameterError, StoreError

numcodecs = pytest.importorskip("numcodecs", reason="the compress extra: pip install 'revseq[compress]'")

TOLERANCE = 1e-6
LOSSLESS = {
    "blosc": lambda: "blosc",
    "zstd": lambda: "zstd",
    "lz4": lambda: "lz4",
    "Blosc(lz4, bitshuffle)": lambda: numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE),
    "Zstd(1)": lambda: numcodecs.Zstd(level=1),
}
lossless = pytest.mark.parametrize("codec", list(LOSSLESS.values()), ids=list(LOSSLESS))
Point = namedtuple("Point", "h c")


def zfp() -> Any:
    if not hasattr(numcodecs, "ZFPY"):  # numcodecs without zfpy
        pytest.skip("numcodecs.ZFPY needs zfpy")
    return numcodecs.ZFPY(tolerance=TOLERANCE)


def smooth(shape: tuple[int, ...] = (64, 64)) -> np.ndarray:
    """A smooth field: a few Fourier modes on a grid, which compresses well."""
    grids = np.meshgrid(*(np.linspace(0, 1, k) for k in shape), indexing="ij")
    return np.sin(2 * np.pi * grids[0]) * np.cos(np.pi * sum(grids[1:]))


def heat(x: np.ndarray) -> np.ndarray:
    """One explicit step of the 2-D heat equation (periodic), linear, so its VJP is itself."""
    lap = np.roll(x, 1, 0) + np.roll(x, -1, 0) + np.roll(x, 1, 1) + np.roll(x, -1, 1) - 4 * x
    return x + 0.2 * lap


HEAT = revseq.Recurrence(heat, vjp=lambda x, g: heat(g))
SIN = revseq.Recurrence(np.sin, np.cos)


def states() -> list[Any]:
    rng = np.random.default_rng(0)
    return [
        smooth(),
        rng.normal(size=100).astype(np.float32),
        np.arange(30, dtype=np.int32).reshape(5, 6),
        rng.normal(size=(3, 4)) + 1j * rng.normal(size=(3, 4)),
        rng.normal(size=17).astype(">f8"),  # not native byte order
        np.array([(1, 2.5), (3, 4.5)], dtype=[("a", "i4"), ("b", "f8")]),
        np.asfortranarray(rng.normal(size=(6, 5))),
        rng.normal(size=(8, 8))[::2, 1::3],  # neither C- nor Fortran-contiguous
        np.array(3.0),
        np.zeros((0, 4)),
        np.array([True, False, True]),
        (smooth(), np.float64(2.5), 7),
        {"h": smooth((5, 7)), "c": [np.ones(3, np.int64), np.float32(1.5)]},
        Point(np.ones(4), np.zeros(2)),
    ]


def same(a: Any, b: Any) -> None:
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
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
        assert a.tobytes("A") == b.tobytes("A")
        if a.flags.f_contiguous and not a.flags.c_contiguous:
            assert b.flags.f_contiguous
        assert b.flags.writeable
    else:
        assert a == b


# -- round trips ----------------------------------------------------------------------------


@lossless
@pytest.mark.parametrize("inner", ["memory", "disk"])
def test_lossless_codecs_give_back_exactly_what_was_put(codec, inner, tmp_path):
    store = CompressedStore(DiskStore(tmp_path) if inner == "disk" else None, codec=codec())
    cases = states()
    for key, state in enumerate(cases):
        store.put(key, state)
    assert len(store) == len(cases)
    for key, state in enumerate(cases):
        first, second = store.get(key), store.get(key)
        same(state, first)
        if isinstance(first, np.ndarray) and first.size:
            assert not np.shares_memory(first, second)  # a fresh array each get
            assert not np.shares_memory(first, state)
    store.clear()
    assert (len(store), store.nbytes, store.raw_nbytes, len(store.inner)) == (0, 0, 0, 0)


def test_zfp_gives_back_values_within_its_tolerance():
    store = CompressedStore(codec=zfp())
    rng = np.random.default_rng(1)
    cases = [smooth(), smooth((9, 10, 11)).astype(np.float32), rng.normal(size=50), np.asfortranarray(smooth((6, 8)))]
    for key, state in enumerate(cases):
        store.put(key, state)
        back = store.get(key)
        assert (back.shape, back.dtype) == (state.shape, state.dtype)
        assert np.abs(back - state).max() <= TOLERANCE
    assert not store.lossless
    assert store.ratio > 1


def test_zfp_refuses_leaves_it_cannot_compress_naming_them():
    store = CompressedStore(codec=zfp())
    with pytest.raises(ParameterError, match=r"ZFP compresses float32 and float64.*state\['n'\] of checkpoint x_3"):
        store.put(3, {"h": smooth(), "n": np.arange(4)})
    assert (len(store), store.nbytes) == (0, 0)


def test_leaves_that_are_not_numeric_arrays_are_refused_naming_them():
    store = CompressedStore(codec="lz4")
    with pytest.raises(ParameterError, match=r"state\[1\] of checkpoint x_0 is builtins.str"):
        store.put(0, (np.ones(3), "tag"))
    with pytest.raises(ParameterError, match=r"state of checkpoint x_0 is an array of dtype object"):
        store.put(0, np.array([None]))
    assert len(store) == 0


def test_counters_and_ratio():
    store = CompressedStore(codec="zstd")
    assert np.isnan(store.ratio)
    x = np.zeros(10_000)
    assert store.stored_nbytes(x) < 1000
    store.put(0, x)
    store.put(1, (x, np.float64(1.0)))
    assert store.raw_nbytes == 2 * x.nbytes + 8
    assert store.nbytes == store.stored_nbytes(x) * 2 + 8 == store.inner.nbytes + 8
    assert store.ratio == store.raw_bytes_put / store.bytes_put > 100
    store.put(1, x)  # stored again: the old state goes
    store.delete(0)
    assert (len(store), store.raw_nbytes) == (1, x.nbytes)
    with pytest.raises(KeyError):
        store.get(0)
    with pytest.raises(KeyError):
        store.delete(0)
    store.clear()
    assert store.puts == 3  # cumulative: clear() keeps them
    assert store.bytes_put > 0
    assert store.copies
    assert store.lossless


# -- runs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["blosc", "lz4"])
@pytest.mark.parametrize("inner", ["memory", "disk"])
@pytest.mark.parametrize(
    "strategy", [revseq.BinomialCheckpointing(checkpoints=3), revseq.RecursiveHalving(), revseq.StoreAll()], ids=repr
)
def test_lossless_gradients_are_exactly_storealls(codec, inner, strategy, tmp_path):
    x0 = np.random.default_rng(0).uniform(-1, 1, 50)
    expected = revseq.backprop(SIN, x0, 30, revseq.StoreAll())
    store = CompressedStore(DiskStore(tmp_path) if inner == "disk" else None, codec=codec)
    out = revseq.backprop(SIN, x0, 30, strategy, store=store)
    np.testing.assert_array_equal(out.gradient, expected.gradient)
    np.testing.assert_array_equal(out.state, expected.state)
    assert out.stats.forward_steps == strategy.cost(30).forward_steps
    assert len(store) == len(store.inner) == 0


def test_zfp_gradient_error_is_bounded():
    x0 = smooth((32, 32))
    n = 20
    expected = revseq.backprop(HEAT, x0, n, revseq.StoreAll(), adjoint=x0)
    out = revseq.backprop(HEAT, x0, n, revseq.BinomialCheckpointing(checkpoints=4), store=CompressedStore(codec=zfp()),
                          adjoint=x0)  # fmt: skip
    # The recurrence is linear, so its gradient does not read the states: only restored checkpoints, advanced
    # again, enter x_n. Each is within the tolerance, and heat() does not amplify errors (max norm <= 1).
    np.testing.assert_array_equal(out.gradient, expected.gradient)
    assert np.abs(out.state - expected.state).max() <= TOLERANCE
    x1 = np.random.default_rng(2).uniform(-1, 1, 40)
    exact = revseq.backprop(SIN, x1, 25, revseq.StoreAll()).gradient
    lossy = revseq.backprop(SIN, x1, 25, revseq.RecursiveHalving(), store=CompressedStore(codec=zfp())).gradient
    # d/dx of prod cos(x_t): each factor off by at most TOLERANCE (|d cos| <= 1), up to 25 factors of |cos| <= 1
    assert 0 < np.abs(lossy - exact).max() <= 25 * TOLERANCE


def test_a_byte_budget_holds_more_checkpoints_when_compressed():
    x0 = smooth((64, 64))
    budget = 6 * x0.nbytes
    n = 60
    plain = revseq.backprop(HEAT, x0, n, revseq.BinomialCheckpointing(max_bytes=budget), adjoint=x0)
    store = CompressedStore(codec="blosc")
    packed = revseq.backprop(HEAT, x0, n, revseq.BinomialCheckpointing(max_bytes=budget), store=store, adjoint=x0)
    assert plain.stats.peak_checkpoints == 6
    # Lossless codecs gain little on float64 (the low mantissa bits look random): here 1.8x.
    assert packed.stats.peak_checkpoints > plain.stats.peak_checkpoints
    assert packed.stats.forward_steps < plain.stats.forward_steps
    assert packed.stats.peak_bytes <= budget  # the smooth field compresses no worse as it diffuses
    np.testing.assert_array_equal(packed.gradient, plain.gradient)
    lossy = revseq.backprop(HEAT, x0, n, revseq.BinomialCheckpointing(max_bytes=budget),
                            store=CompressedStore(codec=zfp()), adjoint=x0)  # fmt: skip
    assert lossy.stats.peak_checkpoints > 4 * plain.stats.peak_checkpoints
    # ZFP's size follows the field: the diffused states take 2 % more than x_0, so the peak passes the budget
    # planned from x_0's size by as much (CompressedStore(max_bytes=...) makes the budget hard).
    assert budget < lossy.stats.peak_bytes <= 1.05 * budget


def noisy(x: np.ndarray) -> np.ndarray:
    """A step whose states compress far worse than x_0 = 0 does."""
    return x + np.random.default_rng(int(abs(x).sum() * 1000) % 2**32).normal(size=x.shape)


def test_states_that_compress_worse_than_x0_may_exceed_the_budget_without_max_bytes():
    x0 = np.zeros(4096)
    store = CompressedStore(codec="lz4")
    budget = 8 * store.stored_nbytes(x0)
    out = revseq.reverse(noisy, x0, 20, revseq.BinomialCheckpointing(max_bytes=budget), store=store)
    list(out)
    assert out.stats.peak_checkpoints <= 8  # the number of checkpoints is a hard bound
    assert out.stats.peak_bytes > budget  # their bytes are not


class Sized(Forwarding):
    """A store that says what a state takes in it (the engine's optional ``stored_nbytes``)."""

    def __init__(self, size: Any) -> None:
        super().__init__(revseq.MemoryStore())
        self.size = size

    def stored_nbytes(self, state: Any) -> Any:
        return self.size


def test_the_engine_sizes_a_byte_budget_with_the_stores_stored_nbytes():
    out = revseq.backprop(SIN, np.ones(1000), 100, revseq.BinomialCheckpointing(max_bytes=5000), store=Sized(1000))
    assert out.stats.peak_checkpoints == 5  # not 0: x0.nbytes is 8000
    assert out.stats.forward_steps == revseq.BinomialCheckpointing(checkpoints=5).cost(100).forward_steps


@pytest.mark.parametrize("size", [-1, 2.5, True, None])
def test_a_stored_nbytes_that_is_not_a_size_is_refused(size):
    with pytest.raises(ParameterError, match=r"store.stored_nbytes\(x0\) must return an int >= 0, got"):
        revseq.backprop(SIN, np.ones(3), 5, revseq.BinomialCheckpointing(max_bytes=5000), store=Sized(size))


@pytest.mark.parametrize("inner", ["memory", "disk"])
def test_max_bytes_makes_the_budget_hard_and_the_run_cleans_up(inner, tmp_path):
    x0 = np.zeros(4096)
    budget = 8 * CompressedStore(codec="lz4").stored_nbytes(x0)
    store = CompressedStore(DiskStore(tmp_path) if inner == "disk" else None, codec="lz4", max_bytes=budget)
    with pytest.raises(StoreError, match=r"could not store checkpoint x_\d+: .* would then exceed max_bytes="):
        list(revseq.reverse(noisy, x0, 20, revseq.BinomialCheckpointing(max_bytes=budget), store=store))
    assert (len(store), store.nbytes, len(store.inner)) == (0, 0, 0)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("inner", ["memory", "disk"])
def test_a_failing_step_leaves_nothing_behind(inner, tmp_path):
    store = CompressedStore(DiskStore(tmp_path) if inner == "disk" else None, codec="blosc")
    error = RuntimeError("step 9 failed")
    with pytest.raises(RuntimeError, match="step 9 failed"):
        revseq.backprop(revseq.Recurrence(failing_on_call(9, error), np.cos), np.linspace(0, 1, 100), 20,
                        revseq.BinomialCheckpointing(checkpoints=4), store=store)  # fmt: skip
    assert (len(store), store.nbytes, len(store.inner), store.inner.nbytes) == (0, 0, 0, 0)
    assert os.listdir(tmp_path) == []


def test_an_in_place_step_is_safe():
    def step(x: np.ndarray) -> np.ndarray:
        np.sin(x, out=x)
        return x

    x0 = np.random.default_rng(3).uniform(-1, 1, 30)
    expected = revseq.backprop(SIN, x0, 15, revseq.StoreAll())
    out = revseq.backprop(revseq.Recurrence(step, np.cos), x0, 15, revseq.BinomialCheckpointing(checkpoints=3),
                          store=CompressedStore(codec="lz4"))  # fmt: skip
    np.testing.assert_array_equal(out.gradient, expected.gradient)


# -- one run per store, and the inner store belongs to the wrapper -----------------------------


def test_the_inner_store_belongs_to_the_wrapper():
    inner = revseq.MemoryStore()
    store = CompressedStore(inner, codec="lz4")
    with pytest.raises(ParameterError, match=r"inner is in use by another run .*a CompressedStore wraps it"):
        CompressedStore(inner, codec="lz4")
    with pytest.raises(ParameterError, match=r"store is in use by another run .*a CompressedStore wraps it"):
        revseq.backprop(SIN, np.ones(3), 5, store=inner)
    del store
    gc.collect()
    revseq.backprop(SIN, np.ones(3), 5, store=inner)  # given back when the wrapper is gone


def test_a_non_empty_inner_store_is_refused():
    inner = revseq.MemoryStore()
    inner.put(0, np.ones(3))
    with pytest.raises(ParameterError, match="inner must be empty when a run starts, got one holding 1 states"):
        CompressedStore(inner)


def test_a_store_in_a_running_walk_is_refused():
    store = CompressedStore(codec="lz4")
    it = revseq.walk(SIN, np.ones(3), 5, revseq.StoreAll(), store=store)
    next(it)
    with pytest.raises(ParameterError, match="store is in use by another run"):
        revseq.backprop(SIN, np.ones(3), 5, store=store)
    it.close()
    assert len(store) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"codec": "gzip9"}, r"codec must be a numcodecs codec or one of 'blosc', 'zstd', 'lz4', got 'gzip9'"),
        ({"codec": 3}, r"codec must be a numcodecs codec instance .* got 3 \(int\)"),
        ({"codec": numcodecs.Zstd}, r"got the class Zstd"),
        ({"inner": revseq.MemoryStore}, r"inner must be a store instance"),
        ({"max_bytes": 0}, r"max_bytes must be an int >= 1 or None, got 0"),
        ({"max_bytes": True}, r"max_bytes must be an int >= 1 or None, got True"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ParameterError, match=message):
        CompressedStore(**kwargs)


def test_a_wrapper_is_not_wrapped():
    with pytest.raises(ParameterError, match="inner must not be a CompressedStore"):
        CompressedStore(CompressedStore())


# -- a read returns what was written, or fails -------------------------------------------------


def test_data_of_another_size_in_the_inner_store_is_refused():
    store = CompressedStore(codec="lz4")
    store.put(7, smooth())
    store.inner.put(7, (np.zeros(5, np.uint8),))
    with pytest.raises(StoreError, match=r"could not read checkpoint x_7: array 0 is not the compressed data"):
        store.get(7)


def test_corrupted_bytes_are_refused(tmp_path):
    store = CompressedStore(DiskStore(tmp_path), codec="blosc")
    state = smooth()
    store.put(7, state)
    path = os.path.join(store.inner.path, "x_7.0.npy")
    with open(path, "r+b") as fh:  # flip a byte of the data in place: header and size kept
        fh.seek(-20, os.SEEK_END)
        byte = fh.read(1)
        fh.seek(-20, os.SEEK_END)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(StoreError, match=r"x_7: array 0 is not the compressed data written .* CRC-32"):
        store.get(7)


def test_the_inner_store_losing_a_checkpoint_is_a_store_error():
    store = CompressedStore(codec="lz4")
    store.put(2, np.ones(4))
    store.inner.delete(2)
    with pytest.raises(StoreError, match=r"could not read checkpoint x_2: the inner store .* lost it"):
        store.get(2)


def test_a_missing_numcodecs_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "numcodecs", None)  # import numcodecs now raises ModuleNotFoundError
    with pytest.raises(ModuleNotFoundError, match=r"needs numcodecs .*pip install 'revseq\[compress\]'"):
        CompressedStore()


def test_stats_report_each_runs_own_compression_ratio():
    rec = revseq.Recurrence(np.sin, np.cos)
    store = revseq.CompressedStore(codec="blosc")
    smooth = np.zeros(4096)
    rough = np.random.default_rng(0).standard_normal(4096)
    first = revseq.backprop(rec, smooth, 50, revseq.BinomialCheckpointing(4), store=store)
    after_first = (store.raw_bytes_put, store.bytes_put)
    second = revseq.backprop(rec, rough, 50, revseq.BinomialCheckpointing(4), store=store)
    # Counted from the store's own byte counters, run by run: the second run's ratio is not the first's.
    assert first.stats.compression_ratio == after_first[0] / after_first[1]
    assert second.stats.compression_ratio == (store.raw_bytes_put - after_first[0]) / (store.bytes_put - after_first[1])
    assert first.stats.compression_ratio > 10 > second.stats.compression_ratio
    assert revseq.backprop(rec, smooth, 50, revseq.BinomialCheckpointing(4)).stats.compression_ratio is None
