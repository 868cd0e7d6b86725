"""The strategies against each other on one recurrence: time, forward steps, memory.

n = 10**4 steps of np.sin on 1000 floats, one full ``backprop`` per round.
The forward-step counts are deterministic, so they are asserted against
formulas computed here, independently of revseq (DESIGN.md, THEORY.md), and
against calls of f counted from outside; times are only recorded, with each
strategy's ratio to StoreAll (the fastest schedule there is) in the same run.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from _common import binomial_steps

import revseq

N = 10_000
SIZE = 1000
ROUNDS = 5
X0 = np.linspace(0.1, 1.0, SIZE)


def gist_halving_steps(n: int) -> int:
    """The original gist's recursive halving: a full sweep, then R(n) more steps (DESIGN.md)."""

    @functools.cache
    def extra(length: int) -> int:
        if length <= 1:
            return 0
        half = length // 2
        return half + extra(length - half) + extra(half)

    return n + extra(n)


def bisection_steps(n: int) -> int:
    """Bisection without the gist's full first sweep: x_k is reached by one advance per 1-bit of k."""
    return 1 + sum(bin(k).count("1") for k in range(n))


def sqrt_steps(n: int) -> int:
    """Segments of k = ceil(sqrt n): every segment but the last is recomputed once, its first state restored."""
    k = math.isqrt(n - 1) + 1
    m = -(-n // k)
    last = n - (m - 1) * k
    return n + (n - last) - (m - 1)


STRATEGIES = [
    ("StoreAll", revseq.StoreAll(), N),
    ("SqrtCheckpointing", revseq.SqrtCheckpointing(), sqrt_steps(N)),
    ("Binomial(default)", revseq.BinomialCheckpointing(), None),  # its budget depends on n; see below
    ("Binomial(c=15)", revseq.BinomialCheckpointing(checkpoints=15), binomial_steps(N, 15)),
    ("RecursiveHalving", revseq.RecursiveHalving(), bisection_steps(N)),
]


def counted(f):
    calls = [0]

    def step(x):
        calls[0] += 1
        return f(x)

    return step, calls


@pytest.fixture(scope="module")
def reference_gradient() -> np.ndarray:
    rec = revseq.Recurrence(np.sin, df=np.cos)
    return revseq.backprop(rec, X0, N, revseq.StoreAll()).gradient


@pytest.mark.parametrize(("label", "strategy", "expected"), STRATEGIES, ids=[s[0] for s in STRATEGIES])
def test_strategy(benchmark, timings, reference_gradient, label, strategy, expected):
    if expected is None:  # the default budget: the fewest checkpoints with repetition number 2
        expected = binomial_steps(N, strategy.budget(N))
        benchmark.extra_info["checkpoints"] = strategy.budget(N)
    elif isinstance(strategy, revseq.BinomialCheckpointing):
        benchmark.extra_info["checkpoints"] = strategy.checkpoints
    rec = revseq.Recurrence(np.sin, df=np.cos)

    # Calls of f counted from outside, in one untimed run.
    step, calls = counted(np.sin)
    revseq.backprop(revseq.Recurrence(step, df=np.cos), X0, N, strategy)
    assert calls[0] == expected

    name = f"{label}, n=1e4, 1000 floats"
    result = timings.measure(benchmark, name, lambda: revseq.backprop(rec, X0, N, strategy), rounds=ROUNDS, warmup=1)
    assert result.stats.forward_steps == expected
    np.testing.assert_allclose(result.gradient, reference_gradient, rtol=1e-10)
    benchmark.extra_info["forward_steps"] = result.stats.forward_steps
    benchmark.extra_info["recompute_factor"] = round(result.stats.recompute_factor, 4)
    benchmark.extra_info["peak_checkpoints"] = result.stats.peak_checkpoints
    benchmark.extra_info["peak_bytes"] = result.stats.peak_bytes
    if label == "RecursiveHalving":  # DESIGN.md: never worse than the original gist on either count
        benchmark.extra_info["gist_forward_steps"] = gist_halving_steps(N)
        assert result.stats.forward_steps <= gist_halving_steps(N)
        assert result.stats.peak_checkpoints <= math.ceil(math.log2(N)) + 1
    if label != "StoreAll":
        timings.ratio(benchmark, name, "StoreAll, n=1e4, 1000 floats", key="ratio_vs_store_all")
