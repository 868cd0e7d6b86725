"""What checking every recomputed state costs in revseq.torch (the fingerprints of ``revseq.torch._ambient``).

The GRU case of torch_tapes_cases.py at n = 2000 (``REVSEQ_BENCH_N``), the
default plan with tapes, one forward and backward pass: with the check, and
with ``Fingerprints.of`` and ``observe`` replaced by no-ops. CPU time,
interleaved rounds (``REVSEQ_BENCH_ROUNDS``, 7), the median and range of the
per-round ratios. Run: ``python -m pytest benchmarks/test_torch_fingerprints.py
--benchmark-only -s``.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from _common import interleaved, ratios

torch = pytest.importorskip("torch")

from torch_tapes_cases import make, problem  # noqa: E402

from revseq.torch._ambient import Fingerprints  # noqa: E402


def test_fingerprint_check_overhead(benchmark: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    n = int(os.environ.get("REVSEQ_BENCH_N", 2000))
    rounds = int(os.environ.get("REVSEQ_BENCH_ROUNDS", 7))
    go = make("revseq", "default", n, problem(n))
    checked_of, checked_observe = Fingerprints.of, Fingerprints.observe

    def checked() -> None:
        monkeypatch.setattr(Fingerprints, "of", checked_of)
        monkeypatch.setattr(Fingerprints, "observe", checked_observe)
        go()

    def unchecked() -> None:
        monkeypatch.setattr(Fingerprints, "of", lambda self, *args: [])
        monkeypatch.setattr(Fingerprints, "observe", lambda self, start, prints: None)
        go()

    times = benchmark.pedantic(
        lambda: interleaved({"checked": checked, "unchecked": unchecked}, rounds), rounds=1, iterations=1
    )
    summary = ratios(times, "checked", "unchecked")
    benchmark.extra_info["checked / unchecked"] = summary
    print(f"\nn = {n}, {rounds} rounds: with the check {summary['median']:.3f}x without (range {summary['range']})")
