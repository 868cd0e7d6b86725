"""Peak RSS of ``revseq.torch.unroll`` with per-step outputs, a fresh process per configuration (issue 13, item 7).

Before, the n outputs ``y_t`` were n small tensors, allocated between the
states of the forward sweep and stacked at the end; the heap they scattered
kept peak RSS 60-110 MB above the 1 MB the outputs and checkpoints hold. Now
they are written into one tensor allocated at the first step. Contenders:
autograd through the plain loop, revseq now, and revseq at commit f4792db
(extracted with ``git archive``; skipped without git). Each runs
``torch_outputs_rss.py`` in its own process, three times, interleaved;
the numbers are recorded in ``extra_info`` and printed, not asserted.
Run: ``python -m pytest benchmarks/test_torch_memory.py --benchmark-only -s``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile

import pytest

pytest.importorskip("torch")

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "torch_outputs_rss.py")
BEFORE = "f4792db"


def _extract(revision: str, directory: str) -> str | None:
    archive = os.path.join(directory, "revseq.tar")
    done = subprocess.run(
        ["git", "-C", os.path.dirname(HERE), "archive", "--format=tar", "-o", archive, revision, "revseq"],
        capture_output=True,
    )
    if done.returncode:
        return None
    with tarfile.open(archive) as tar:
        tar.extractall(directory, filter="data")
    return directory


def _measure(kind: str, n: int, path: str | None) -> dict[str, float]:
    command = [sys.executable, SCRIPT, kind, str(n), *([path] if path else [])]
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def test_outputs_peak_rss(benchmark):
    n = 10_000
    with tempfile.TemporaryDirectory() as directory:
        before = _extract(BEFORE, directory)
        contenders = {"plain autograd": ("plain", None), "revseq": ("revseq", None)}
        if before is not None:
            contenders[f"revseq at {BEFORE}"] = ("revseq", before)
        growth: dict[str, list[float]] = {name: [] for name in contenders}
        held: dict[str, float] = {}

        def rounds() -> None:
            for _ in range(3):
                for name, (kind, path) in contenders.items():
                    result = _measure(kind, n, path)
                    growth[name].append(result["growth_mb"])
                    held[name] = result["held_mb"]

        benchmark.pedantic(rounds, rounds=1, iterations=1)
    for name, values in growth.items():
        benchmark.extra_info[name] = {"peak_rss_growth_mb": values, "held_mb": held[name]}
        print(f"{name:>24}: peak RSS growth {statistics.median(values):8.1f} MB "
              f"(range {min(values):.1f}-{max(values):.1f}), outputs and checkpoints {held[name]:.2f} MB")  # fmt: skip
