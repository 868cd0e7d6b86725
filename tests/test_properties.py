"""Property-based tests over n and budgets: every strategy, drawn configurations.

Each property compares revseq against something outside it: integer states
that name themselves, calls of f counted by the test, a store that records
its own size, the brute-force DP (tests/oracles.py) and plain arithmetic.
"""

from __future__ import annotations

import math

import generators
import numpy as np
import oracles
from hypothesis import given, settings
from hypothesis import strategies as st

import revseq

# The DP over n <= 512 and c <= 16, built once for all the examples (about half a second).
DP_N, DP_C = 512, generators.MAX_BUDGET


def dp(n: int, c: int) -> int:
    return oracles.dp_table(DP_N, DP_C)[c][n]


class CountingStore(revseq.MemoryStore):
    """A store that records its own largest size, independently of the engine's stats."""

    __slots__ = ("max_held", "puts")

    def __init__(self) -> None:
        super().__init__()
        self.max_held = 0
        self.puts = 0

    def put(self, key: int, state: object) -> None:
        super().put(key, state)
        self.puts += 1
        self.max_held = max(self.max_held, len(self))


@settings(max_examples=60)
@given(n=generators.lengths(), strategy=generators.reversal_strategies())
def test_reverse_yields_exactly_the_states_backwards(n, strategy):
    calls = [0]

    def f(x):
        calls[0] += 1
        return x + 1

    got = [int(x) for x in revseq.reverse(f, 0, n, strategy)]
    assert got == list(range(n - 1, -1, -1))
    assert calls[0] == strategy.cost(n).forward_steps - 1  # reverse never computes x_n


@settings(max_examples=60)
@given(n=generators.lengths(), strategy=generators.reversal_strategies())
def test_engine_stats_equal_the_simulated_cost(n, strategy):
    calls = [0]

    def f(x):
        calls[0] += 1
        return 0.5 * x + 1.0

    store = CountingStore()
    out = revseq.backprop(
        revseq.Recurrence(f, df=lambda x: np.full_like(x, 0.5)), np.zeros(3), n, strategy, store=store
    )
    cost = strategy.cost(n)
    assert out.stats.as_cost() == cost
    assert calls[0] == cost.forward_steps == out.stats.forward_steps
    assert store.max_held == cost.peak_checkpoints
    assert store.puts == cost.writes
    assert len(store) == 0
    assert out.stats.peak_bytes == cost.peak_checkpoints * np.zeros(3).nbytes
    # d x_n / d x_0 of x -> x/2 + 1 is 2^-n elementwise; the state is sum_{k<n} 2^-k = 2 - 2^(1-n).
    np.testing.assert_allclose(out.gradient, np.full(3, 0.5**n))
    np.testing.assert_allclose(out.state, np.full(3, 2.0 - 2.0 ** (1 - n)))


@settings(max_examples=80)
@given(n=generators.lengths(), strategy=generators.reversal_strategies())
def test_every_strategy_keeps_its_promise(n, strategy):
    cost, bounds = strategy.cost(n), strategy.bounds(n)
    assert cost.forward_steps >= n
    if bounds.checkpoints is not None:
        assert cost.peak_checkpoints <= bounds.checkpoints
    if bounds.forward_steps is not None:
        assert cost.forward_steps <= bounds.forward_steps


@settings(max_examples=150)
@given(n=generators.lengths(DP_N), c=generators.budgets())
def test_binomial_equals_the_dp(n, c):
    cost = revseq.BinomialCheckpointing(checkpoints=c).cost(n)
    assert cost.forward_steps == dp(n, c) + 1
    assert cost.peak_checkpoints <= c
    assert revseq.optimal_forward_steps(n, c) == dp(n, c) + 1


@settings(max_examples=60)
@given(n=generators.lengths(), strategy=generators.reversal_strategies())
def test_no_strategy_beats_the_optimum_for_its_memory(n, strategy):
    cost = strategy.cost(n)
    if cost.peak_checkpoints >= 1:
        assert cost.forward_steps >= oracles.closed_form_advances(n, cost.peak_checkpoints) + 1


@settings(max_examples=60)
@given(n=generators.lengths(DP_N), c=generators.budgets())
def test_binomial_run_respects_its_budget(n, c):
    store = CountingStore()
    values = [int(x) for x in revseq.reverse(lambda x: x + 1, 0, n, revseq.BinomialCheckpointing(c), store=store)]
    assert values == list(range(n - 1, -1, -1))
    assert store.max_held <= c


@settings(max_examples=100)
@given(n=st.integers(min_value=1, max_value=5000))
def test_halving_peak_is_ceil_log2_n(n):
    cost = revseq.RecursiveHalving().cost(n)
    assert cost.peak_checkpoints == (0 if n == 1 else math.ceil(math.log2(n)))
    assert cost.peak_checkpoints == next(p for p in range(64) if 2**p >= n)
    assert cost.forward_steps == oracles.halving_advances(n) + 1


@settings(max_examples=60)
@given(n=generators.lengths(), strategy=generators.reversal_strategies())
def test_schedule_is_the_same_every_walk_and_simulates_as_its_cost(n, strategy):
    schedule = strategy.schedule(n)
    first = list(schedule)
    assert list(schedule) == first
    assert revseq.simulate(first, n) == strategy.cost(n)
