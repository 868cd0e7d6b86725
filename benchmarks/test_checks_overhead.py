"""What the trust checks of issue 8 cost: the engine now against the engine before them, in one process.

Every value a user callable returns is checked, the first calls of f are
watched for writes into states, a store is claimed per run, actions are
checked for progress and promised forward steps, views are copied into
checkpoints. The goal: all of it within 3 % of ``StoreAll``'s time at
n = 10^5 on 100-float states.

The baseline is revseq at commit ``BEFORE`` (the last one before the
checks), loaded beside the current package (``_revision.py``). Each round
runs the old and the new engine once each, alternately (which goes first
alternates too), and takes the ratio of their CPU times
(``time.process_time``). On a shared machine one run's CPU time moves by
up to +-40 %, so the number that means something is the median over many
rounds: it goes into ``extra_info`` and the end-of-run table with the
quartiles and the range. A last case, n = 10^4 over 201 rounds, pins the
median to about +-0.5 %. The gradients of old and new are asserted equal to
the last bit, and their forward steps too. Nothing asserts a time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _revision import revision_or_skip

import revseq

BEFORE = "cf83f2c"  # "tests: the failing step of the fault tests defined once", before issue 8
SIZE = 100
X0 = np.linspace(0.1, 1.0, SIZE)
W = np.linspace(1.0, 2.0, SIZE)


@pytest.fixture(scope="module")
def old() -> Any:
    return revision_or_skip(BEFORE)


def interleaved(new: Callable[[], Any], baseline: Callable[[], Any], rounds: int) -> list[float]:
    """Per-round ratios new / baseline of CPU time, the two run alternately."""
    new(), baseline()  # warm up both
    ratios = []
    for r in range(rounds):
        times = {}
        for fn in (new, baseline) if r % 2 == 0 else (baseline, new):
            start = time.process_time()
            fn()
            times[fn] = time.process_time() - start
        ratios.append(times[new] / times[baseline])
    return sorted(ratios)


def report(benchmark: Any, timings: Any, name: str, ratios: list[float]) -> None:
    median = statistics.median(ratios)
    quartiles = (ratios[len(ratios) // 4], ratios[3 * len(ratios) // 4])
    benchmark.extra_info["ratio_median"] = round(median, 4)
    benchmark.extra_info["ratio_quartiles"] = [round(q, 4) for q in quartiles]
    benchmark.extra_info["ratio_range"] = [round(ratios[0], 4), round(ratios[-1], 4)]
    benchmark.extra_info["rounds"] = len(ratios)
    timings.add(f"{name}: with the checks", f"before them ({BEFORE}), median of {len(ratios)}", median,
                target="<= 1.03")  # fmt: skip
    print(f"\n{name}: ratio median {median:.4f} over {len(ratios)} rounds, quartiles {quartiles[0]:.4f} .. "
          f"{quartiles[1]:.4f}, range {ratios[0]:.4f} .. {ratios[-1]:.4f}")  # fmt: skip


CASES = {
    "StoreAll, np.sin/np.cos, n=1e5": (10**5, 31, lambda r: r.StoreAll(), lambda r: r.Recurrence(np.sin, np.cos)),
    "Binomial(20), np.sin/np.cos, n=1e5": (
        10**5, 15, lambda r: r.BinomialCheckpointing(20), lambda r: r.Recurrence(np.sin, np.cos),
    ),
    "StoreAll, vjp, n=1e5": (
        10**5, 31, lambda r: r.StoreAll(), lambda r: r.Recurrence(np.sin, vjp=lambda x, g: g * np.cos(x)),
    ),
    "StoreAll, np.sin/np.cos, n=1e4 (precision)": (
        10**4, 201, lambda r: r.StoreAll(), lambda r: r.Recurrence(np.sin, np.cos),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_checks_overhead(benchmark, timings, old, case):
    n, rounds, strategy, recurrence = CASES[case]

    def new_run() -> Any:
        return revseq.backprop(recurrence(revseq), X0, n, strategy(revseq), adjoint=W)

    def old_run() -> Any:
        return old.backprop(recurrence(old), X0, n, strategy(old), adjoint=W)

    got, want = new_run(), old_run()
    np.testing.assert_array_equal(got.gradient, want.gradient)
    assert got.stats.forward_steps == want.stats.forward_steps
    benchmark.extra_info["forward_steps"] = got.stats.forward_steps
    benchmark.pedantic(new_run, rounds=3, iterations=1)
    report(benchmark, timings, f"{case}, {SIZE} floats", interleaved(new_run, old_run, rounds))
