"""What the trust checks of issue 8 cost: the engine now against the engine before them, in one process.

Every value a user callable returns is checked, the first calls of f are
watched for in-place writes, a store is claimed per run, actions are
checked for progress and promised forward steps, views are copied into
checkpoints. The goal: none of it costs more than 3 % of ``StoreAll``'s
time at n = 10^5 on 100-float states.

The baseline is revseq at commit ``BEFORE`` (the last one before the
checks), loaded beside the current package (``_revision.py``). Each round
runs the old and the new engine once each, alternately, and takes their
ratio of CPU time (``time.process_time``); the median and range over the
rounds go into ``extra_info`` and the end-of-run table. The gradients of
the two are asserted equal to the last bit. Nothing asserts a time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _revision import load_revision

import revseq

BEFORE = "cf83f2c"  # "tests: the failing step of the fault tests defined once", before issue 8
N = 100_000
SIZE = 100
ROUNDS = 9
X0 = np.linspace(0.1, 1.0, SIZE)
W = np.linspace(1.0, 2.0, SIZE)


@pytest.fixture(scope="module")
def old() -> Any:
    try:
        return load_revision(BEFORE)
    except Exception as exc:  # no git, a shallow clone without the commit
        pytest.skip(f"cannot load revseq at {BEFORE}: {exc}")


def cpu(fn: Callable[[], Any]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def interleaved(new: Callable[[], Any], baseline: Callable[[], Any], rounds: int) -> list[float]:
    """Per-round ratios new / baseline of CPU time, the two run alternately (which goes first alternates too)."""
    new(), baseline()  # warm up both
    ratios = []
    for r in range(rounds):
        if r % 2:
            t_base, t_new = cpu(baseline), cpu(new)
        else:
            t_new, t_base = cpu(new), cpu(baseline)
        ratios.append(t_new / t_base)
    return ratios


def report(benchmark: Any, timings: Any, name: str, ratios: list[float]) -> None:
    median = statistics.median(ratios)
    benchmark.extra_info["ratio_median"] = round(median, 4)
    benchmark.extra_info["ratio_range"] = [round(min(ratios), 4), round(max(ratios), 4)]
    timings.add(f"{name}: with the checks", f"before them ({BEFORE}), median of {len(ratios)}", median,
                target="<= 1.03")  # fmt: skip
    print(f"\n{name}: ratio median {median:.4f}, range {min(ratios):.4f} .. {max(ratios):.4f}")


CASES = {
    "StoreAll, np.sin/np.cos": (lambda r: r.StoreAll(), lambda r: r.Recurrence(np.sin, np.cos)),
    "Binomial(20), np.sin/np.cos": (lambda r: r.BinomialCheckpointing(20), lambda r: r.Recurrence(np.sin, np.cos)),
    "StoreAll, vjp": (lambda r: r.StoreAll(), lambda r: r.Recurrence(np.sin, vjp=lambda x, g: g * np.cos(x))),
}


@pytest.mark.parametrize("case", list(CASES))
def test_checks_overhead(benchmark, timings, old, case):
    strategy, recurrence = CASES[case]

    def new_run() -> Any:
        return revseq.backprop(recurrence(revseq), X0, N, strategy(revseq), adjoint=W)

    def old_run() -> Any:
        return old.backprop(recurrence(old), X0, N, strategy(old), adjoint=W)

    got, want = new_run(), old_run()
    np.testing.assert_array_equal(got.gradient, want.gradient)
    assert got.stats.forward_steps == want.stats.forward_steps
    benchmark.extra_info["forward_steps"] = got.stats.forward_steps
    benchmark.pedantic(new_run, rounds=3, iterations=1)
    report(benchmark, timings, f"{case}, n=1e5, {SIZE} floats", interleaved(new_run, old_run, ROUNDS))
