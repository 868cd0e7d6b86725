"""The engine: what walk/reverse/backprop deliver, what they cost, and the stores they use."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import pytest

import revseq
from revseq import Bounds, Recurrence, ScheduleError, StepError

STRATEGIES = [
    revseq.StoreAll(),
    revseq.Recompute(),
    revseq.RecursiveHalving(),
    revseq.SqrtCheckpointing(),
    revseq.SqrtCheckpointing(interval=4),
    revseq.BinomialCheckpointing(checkpoints=1),
    revseq.BinomialCheckpointing(checkpoints=3),
    revseq.BinomialCheckpointing(),
]
strategies = pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
lengths = pytest.mark.parametrize("n", [1, 2, 3, 8, 33])


def counting(step):
    calls = [0]

    def f(*args):
        calls[0] += 1
        return step(*args)

    return f, calls


# -- walk, reverse -----------------------------------------------------------------------


@strategies
@lengths
def test_walk_yields_x_n_first_then_backwards(strategy, n):
    f, calls = counting(lambda x: x + 1)
    pairs = [(t, int(x)) for t, x in revseq.walk(f, 0, n, strategy)]
    assert pairs == [(t, t) for t in range(n, -1, -1)]
    assert calls[0] == strategy.cost(n).forward_steps


@strategies
@lengths
def test_walk_without_output_skips_x_n(strategy, n):
    f, calls = counting(lambda x: x + 1)
    pairs = [(t, int(x)) for t, x in revseq.walk(f, 0, n, strategy, output=False)]
    assert pairs == [(t, t) for t in range(n - 1, -1, -1)]
    assert calls[0] == strategy.cost(n).forward_steps - 1


@strategies
@lengths
def test_reverse_makes_one_call_fewer_than_the_cost(strategy, n):
    f, calls = counting(lambda x: 2 * x + 1)
    states = revseq.reverse(f, 0, n, strategy)
    values = [int(x) for x in states]
    assert values == [2**t - 1 for t in range(n - 1, -1, -1)]
    assert calls[0] == strategy.cost(n).forward_steps - 1
    assert states.stats.forward_steps == calls[0]


def test_walk_can_pause_at_x_n_and_resume():
    f, calls = counting(lambda x: x + 1)
    strategy = revseq.BinomialCheckpointing(checkpoints=3)
    pairs = revseq.walk(f, 0, 20, strategy)
    t, xn = next(pairs)
    assert (t, int(xn)) == (20, 20)
    paused_at = calls[0]
    assert pairs.stats.forward_steps == paused_at  # stats so far
    assert [t for t, _ in pairs] == list(range(19, -1, -1))
    assert calls[0] == pairs.stats.forward_steps == strategy.cost(20).forward_steps
    assert pairs.n == 20


def test_reverse_of_an_indexed_recurrence_with_params():
    # x_{t+1} = x_t + p * t: x_t = p * t (t - 1) / 2
    rec = Recurrence(lambda x, t, p: x + p * t, indexed=True, params=3)
    values = [int(x) for x in revseq.reverse(rec, 0, 7, revseq.RecursiveHalving())]
    assert values == [3 * t * (t - 1) // 2 for t in range(6, -1, -1)]


def test_default_strategy_is_used_when_none_is_given():
    f, calls = counting(lambda x: x + 1)
    values = [int(x) for x in revseq.reverse(f, 0, 50)]
    assert values == list(range(49, -1, -1))
    assert calls[0] == revseq.DEFAULT_STRATEGY.cost(50).forward_steps - 1
    assert calls[0] <= 2 * 50


# -- backprop --------------------------------------------------------------------------


@strategies
def test_backprop_on_one_step(strategy):
    f, calls = counting(np.sin)
    x0 = np.array([0.3, -1.2])
    out = revseq.backprop(Recurrence(f, np.cos), x0, 1, strategy)
    np.testing.assert_array_equal(out.state, np.sin(x0))
    np.testing.assert_array_equal(out.gradient, np.cos(x0))
    assert calls[0] == 1
    assert out.stats == revseq.Stats(n=1, forward_steps=1, peak_checkpoints=0, writes=0, reads=0, peak_bytes=0)


def test_backprop_on_python_floats():
    out = revseq.backprop(Recurrence(lambda x: 0.5 * x, lambda x: 0.5 + 0 * x), 3.0, 4)
    assert float(out.state) == 3.0 / 16
    assert float(out.gradient) == 1 / 16


@strategies
def test_stats_equal_the_cost_and_the_calls_counted_outside(strategy):
    f, calls = counting(np.sin)
    out = revseq.backprop(Recurrence(f, np.cos), np.ones(3), 40, strategy)
    assert calls[0] == out.stats.forward_steps
    assert out.stats.as_cost() == strategy.cost(40)
    assert out.stats.recompute_factor == out.stats.forward_steps / 40


# -- stores ------------------------------------------------------------------------------


def in_place_step(x):
    """A step that modifies its argument and returns it (the default store keeps references)."""
    x *= 0.5
    x += 1.0
    return x


@strategies
def test_copying_store_makes_an_in_place_step_correct(strategy):
    n = 12
    expected = [float(x[0]) for x in revseq.reverse(lambda x: 0.5 * x + 1.0, np.zeros(1), n, revseq.StoreAll())]
    got = [
        float(x[0])
        for x in revseq.reverse(in_place_step, np.zeros(1), n, strategy, store=revseq.MemoryStore(copy=True))
    ]
    assert got == expected
    out = revseq.backprop(
        Recurrence(in_place_step, lambda x: np.full_like(x, 0.5)),
        np.zeros(1),
        n,
        strategy,
        store=revseq.MemoryStore(copy=True),
    )
    np.testing.assert_allclose(out.state, [2.0 - 2.0 ** (1 - n)])
    np.testing.assert_allclose(out.gradient, [0.5**n])


@pytest.mark.parametrize("entry", [revseq.reverse, lambda f, *a: revseq.backprop(Recurrence(f, np.cos), *a)])
def test_a_referencing_store_refuses_an_in_place_step_on_its_first_call(entry):
    # Without copy=True every checkpoint would be the same mutated array: a wrong answer, so it is refused.
    x0 = np.zeros(1)
    with pytest.raises(StepError, match=r"f modified its argument in place: x_0 changed during the call f\(x_0\)"):
        list(entry(in_place_step, x0, 12, revseq.StoreAll()))
    assert x0[0] == 0.0  # f was handed a copy: the caller's x0 is as it was


def test_peak_bytes_is_peak_checkpoints_times_the_state_size():
    x0 = np.ones((4, 8))  # 256 bytes
    for strategy in STRATEGIES:
        out = revseq.backprop(Recurrence(np.sin, np.cos), x0, 30, strategy)
        assert out.stats.peak_bytes == out.stats.peak_checkpoints * x0.nbytes, strategy
    pair = (np.ones(3), np.ones((2, 2), dtype=np.float32))  # 24 + 16 bytes
    out = revseq.backprop(
        Recurrence(lambda s: (np.sin(s[0]), np.cos(s[1])), lambda s: (np.cos(s[0]), -np.sin(s[1]))),
        pair,
        9,
        revseq.StoreAll(),
    )
    assert out.stats.peak_bytes == 8 * 40


class ListStore:
    """A checkpoint store written from the protocol alone (no dict, no MemoryStore), logging every call."""

    def __init__(self) -> None:
        self.keys: list[int] = []
        self.states: list[Any] = []
        self.log: list[tuple[str, int]] = []

    def put(self, key: int, state: Any) -> None:
        assert key not in self.keys
        self.log.append(("put", key))
        self.keys.append(key)
        self.states.append(np.array(state, copy=True))

    def get(self, key: int) -> Any:
        self.log.append(("get", key))
        return self.states[self.keys.index(key)]

    def delete(self, key: int) -> None:
        self.log.append(("delete", key))
        i = self.keys.index(key)
        del self.keys[i], self.states[i]

    def clear(self) -> None:
        self.keys.clear()
        self.states.clear()

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.states)


@strategies
def test_a_custom_store_works(strategy):
    store = ListStore()
    assert isinstance(store, revseq.CheckpointStore)
    rec = Recurrence(np.sin, np.cos)
    x0 = np.linspace(-1, 1, 5)
    got = revseq.backprop(rec, x0, 25, strategy, store=store)
    want = revseq.backprop(rec, x0, 25, strategy)
    np.testing.assert_array_equal(got.gradient, want.gradient)
    np.testing.assert_array_equal(got.state, want.state)
    assert got.stats == want.stats
    assert sum(1 for op, _ in store.log if op == "put") == got.stats.writes
    assert len(store) == 0


def test_store_is_emptied_after_a_successful_run():
    store = revseq.MemoryStore()
    revseq.backprop(
        Recurrence(np.sin, np.cos), np.ones(2), 30, revseq.BinomialCheckpointing(checkpoints=4), store=store
    )
    assert len(store) == 0
    assert store.nbytes == 0
    # ... so it can be used again.
    revseq.backprop(
        Recurrence(np.sin, np.cos), np.ones(2), 30, revseq.BinomialCheckpointing(checkpoints=4), store=store
    )


# -- promises ------------------------------------------------------------------------------


@attrs.frozen
class OverPromising(revseq.ReversalStrategy):
    """A legal schedule (StoreAll's) that promises far fewer checkpoints than it uses."""

    def actions(self, n):
        return revseq.StoreAll().actions(n)

    def bounds(self, n):
        return Bounds(checkpoints=1)


def test_the_engine_enforces_a_strategys_checkpoint_promise():
    # ReversalStrategy's docstring: bounds() is a promise "which the engine then enforces";
    # Bounds: "The engine and the simulator enforce checkpoints after every action".
    f, calls = counting(np.sin)
    store = revseq.MemoryStore()
    with pytest.raises(ScheduleError, match=r"over the budget of 1"):
        revseq.backprop(Recurrence(f, np.cos), np.ones(2), 10, OverPromising(), store=store)
    assert calls[0] == 0  # refused before the Advance that would keep 8 states runs
    assert len(store) == 0
    with pytest.raises(ScheduleError, match=r"over the budget of 1"):
        OverPromising().cost(10)


@strategies
def test_copying_store_keeps_x_n_minus_1_intact_when_computing_x_n(strategy):
    # The engine computes x_n from x_{n-1} and then reverses step n-1 at x_{n-1}: an in-place
    # step must not have consumed it. Oracle: integer arithmetic (x_t = 2**t).
    def double_in_place(x):
        x *= 2
        return x

    n = 6
    pairs = [(t, float(x[0])) for t, x in revseq.walk(double_in_place, np.ones(1), n, strategy,
                                                      store=revseq.MemoryStore(copy=True))]  # fmt: skip
    assert pairs == [(t, 2.0**t) for t in range(n, -1, -1)]


def test_disk_reads_and_bytes_are_counted_per_run(tmp_path):
    # x_0 kept on disk only, n = 3: one disk write; x_0 read back from disk twice (a Restore, and
    # the Reverse of step 0, which finds it on disk only). Reusing the store: each run counts its own.
    class DiskOnly(revseq.ReversalStrategy):
        def actions(self, n):
            assert n == 3
            yield revseq.Store(0, disk=True)
            yield revseq.Advance(0, 2)
            yield revseq.Reverse(2, 3)
            yield revseq.Restore(0)
            yield revseq.Advance(0, 1)
            yield revseq.Reverse(0, 2)

    disk = revseq.DiskStore(tmp_path)
    rec = Recurrence(np.sin, np.cos)
    want = revseq.backprop(rec, np.ones(4), 3, revseq.StoreAll())
    for _ in range(2):
        out = revseq.backprop(rec, np.ones(4), 3, DiskOnly(), disk=disk)
        np.testing.assert_allclose(out.gradient, want.gradient, rtol=1e-15)
        assert (out.stats.disk_writes, out.stats.disk_reads, out.stats.peak_disk) == (1, 2, 1)
        assert out.stats.disk_bytes_written == 4 * 8
        assert out.stats.disk_bytes_read == 2 * 4 * 8
        assert out.stats.as_cost() == DiskOnly().cost(3)
    assert list(tmp_path.iterdir()) == []
