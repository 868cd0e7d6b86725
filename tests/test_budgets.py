"""Budgets in bytes: the engine turns them into checkpoints from x0's size, and the result is the count's.

Oracle: the same strategy configured with the count a user would compute by hand,
``max_bytes // x0.nbytes``, run on the same recurrence.
"""

import numpy as np
import pytest

import revseq
from revseq import ParameterError, Recurrence

SIN = Recurrence(np.sin, np.cos)
X0 = np.linspace(-1, 1, 100)  # 800 bytes
N = 500


@pytest.mark.parametrize(
    ("by_bytes", "by_count"),
    [
        (revseq.BinomialCheckpointing(max_bytes=8 * 800 + 799), revseq.BinomialCheckpointing(checkpoints=8)),
        (revseq.OnlineCheckpointing(max_bytes=6 * 800), revseq.OnlineCheckpointing(checkpoints=6)),
        (revseq.MultistageCheckpointing(ram_bytes=3 * 800 + 1), revseq.MultistageCheckpointing(ram=3)),
    ],
    ids=lambda s: type(s).__name__,
)
def test_a_byte_budget_runs_as_the_count_it_holds(by_bytes, by_count):
    got = revseq.backprop(SIN, X0, N, by_bytes, disk=revseq.MemoryStore())
    want = revseq.backprop(SIN, X0, N, by_count, disk=revseq.MemoryStore())
    assert got.stats == want.stats
    np.testing.assert_array_equal(got.gradient, want.gradient)
    assert got.stats.peak_bytes <= (by_bytes.max_bytes if hasattr(by_bytes, "max_bytes") else by_bytes.ram_bytes)


def test_a_byte_budget_bounds_the_bytes_measured():
    budget = 10_000
    out = revseq.backprop(SIN, X0, 2000, revseq.BinomialCheckpointing(max_bytes=budget))
    assert out.stats.peak_bytes <= budget
    assert out.stats.peak_checkpoints == budget // X0.nbytes


def test_a_byte_budget_for_an_online_run():
    # n unknown: the budget is sized from x0 before the first step.
    out = revseq.backprop(SIN, X0, None, revseq.OnlineCheckpointing(max_bytes=4 * 800), until=lambda t, x: t == 77)
    assert out.stats.n == 77
    assert out.stats.peak_checkpoints <= 4
    want = revseq.backprop(SIN, X0, 77, revseq.StoreAll())
    np.testing.assert_allclose(out.gradient, want.gradient, rtol=1e-12)


def test_planning_a_byte_budget_needs_the_state_size():
    strategy = revseq.BinomialCheckpointing(max_bytes=10_000)
    with pytest.raises(ParameterError, match=r"budget in bytes and needs the state's size"):
        strategy.cost(100)
    assert strategy.sized(800).cost(100) == revseq.BinomialCheckpointing(checkpoints=12).cost(100)


def test_a_byte_budget_that_holds_no_state_is_refused_before_running():
    calls = []
    rec = Recurrence(lambda x: calls.append(1) or np.sin(x), np.cos)
    with pytest.raises(ParameterError, match=r"max_bytes must hold at least one state .* of 800 bytes, got 799"):
        revseq.backprop(rec, X0, 10, revseq.BinomialCheckpointing(max_bytes=799))
    assert calls == []


def test_budget_given_twice_is_refused():
    with pytest.raises(ParameterError, match=r"give the budget once"):
        revseq.BinomialCheckpointing(checkpoints=3, max_bytes=10_000)
