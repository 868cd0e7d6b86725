"""revseq.torch's plans with tapes against plain autograd and torch.utils.checkpoint (issue 13, item 6).

The GRU case of torch_tapes_cases.py (``GRUCell(64, 256)``, batch 16, a
``Linear(256, 1)`` readout per step, float32, one thread). Two tests:

- ``test_default_against_plain_autograd``: n = 10^4 (``REVSEQ_BENCH_N``),
  time per forward and backward pass in interleaved rounds (CPU time, ratios
  to plain autograd round by round): the default plan, the per-step
  ``BinomialCheckpointing()`` it replaces as the default, segments of
  ``ceil(sqrt(n))`` steps through ``torch.utils.checkpoint`` (as
  ``checkpoint_sequential``), and the same with a selective policy saving
  the matrix products; and the floor of making each step twice (a sweep
  without gradients, then plain autograd), as a reference. Rounds:
  ``REVSEQ_BENCH_ROUNDS`` (3).
- ``test_time_memory_frontier``: n = 2000, the same contenders at several
  sizes (budgets for revseq, segment lengths for checkpoint), time as above
  and peak RSS growth in a fresh process per configuration (median of 3); the frontier is
  drawn to docs/img/torch_frontier.png.

Gradients are checked against plain autograd's before anything is timed.
Run: ``python -m pytest benchmarks/test_torch_tapes.py --benchmark-only -s``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from _common import interleaved, ratios

torch = pytest.importorskip("torch")

from torch_tapes_cases import make, problem  # noqa: E402

import revseq.torch as rt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "torch_tapes_cases.py")


def _check_gradients(n: int, contenders: list[tuple[str, str]]) -> dict[str, float]:
    """Assert each contender's gradients equal plain autograd's, but the selective policy's: its error, returned.

    ``torch.utils.checkpoint`` with a selective policy that saves the matrix
    products gives GRUCell wrong gradients, silently: the cell writes into
    the products' chunks in place (``sigmoid_``, ``tanh_``), and the saved
    products are those chunks (pytorch/pytorch#113737, #119590).
    """
    built = problem(n)
    cell, readout = built[0], built[1]
    params = [built[3], *cell.parameters(), *readout.parameters()]

    def grads(kind: str, param: str) -> list:
        for p in params:
            p.grad = None
        make(kind, param, n, built)()
        return [p.grad.clone() for p in params]

    expected = grads("plain", "-")
    errors = {}
    for kind, param in contenders:
        got = grads(kind, param)
        if kind == "selective":
            errors[f"{kind} {param}"] = max(
                float((g - e).norm() / e.norm()) for g, e in zip(got, expected, strict=True)
            )
            continue
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)
    return errors


def _rss(kind: str, param: str, n: int, runs: int = 3) -> tuple[float, float, float]:
    """Peak RSS growth of one pass, a fresh process per run: median, least and most of ``runs`` runs, in MB."""
    command = [sys.executable, SCRIPT, kind, param, str(n)]
    done = [subprocess.run(command, capture_output=True, text=True, check=True).stdout for _ in range(runs)]
    growth = sorted(json.loads(out)["growth_mb"] for out in done)
    return growth[len(growth) // 2], growth[0], growth[-1]


def test_default_against_plain_autograd(benchmark):
    torch.set_num_threads(1)
    n = int(os.environ.get("REVSEQ_BENCH_N", 10_000))
    root = str(math.isqrt(n - 1) + 1)
    configurations = {
        "plain autograd": ("plain", "-"),
        "floor: a sweep without gradients, then plain autograd": ("floor", "-"),
        "revseq default (tapes)": ("revseq", "default"),
        "revseq BinomialCheckpointing(), per step": ("binomial", "default"),
        f"torch.utils.checkpoint, segments of {root}": ("segments", root),
        f"torch.utils.checkpoint, selective, segments of {root}": ("selective", root),
    }
    errors = _check_gradients(min(n, 300), [c for c in configurations.values() if c[0] not in ("plain", "floor")])
    benchmark.extra_info["selective policy: relative gradient error"] = errors
    print(f"\nselective policy, relative gradient error (n = {min(n, 300)}): {errors}")
    built = problem(n)
    contenders = {name: make(kind, param, n, built) for name, (kind, param) in configurations.items()}
    tally = rt.Tally()
    cell, readout, u, h0 = built
    h, ys = rt.unroll(lambda h, x: cell(x, h), h0, u, output=readout, params=cell.parameters(), tally=tally)
    (h.sum() + ys.sum()).backward()
    benchmark.extra_info["plan"] = repr(tally.plan)
    rounds = int(os.environ.get("REVSEQ_BENCH_ROUNDS", 3))
    times = benchmark.pedantic(lambda: interleaved(contenders, rounds, warmup=0), rounds=1, iterations=1)
    print(f"\nn = {n}; the default plan: {tally.plan}")
    for name, (kind, param) in configurations.items():
        summary = ratios(times, name, "plain autograd")
        rss = _rss(kind, param, n) if kind != "floor" else (math.nan,) * 3  # the floor is a time, not a method
        benchmark.extra_info[name] = {**summary, "rss_growth_mb": rss}
        print(f"{name:>55}: {summary['median']:.2f}x plain autograd (range {summary['range']}), "
              f"peak RSS growth {rss[0]:.1f} MB ({rss[1]:.1f}-{rss[2]:.1f})")  # fmt: skip


def test_time_memory_frontier(benchmark):
    torch.set_num_threads(1)
    n = 2000
    built = problem(n)
    plain_rss = _rss("plain", "-", n)
    plain_mb = plain_rss[0]
    configurations: dict[str, tuple[str, str]] = {"plain autograd": ("plain", "-")}
    for fraction in (0.005, 0.02, 0.1, 0.5):
        configurations[f"revseq, max_bytes {fraction:g} of plain"] = ("revseq", str(int(fraction * plain_mb * 2**20)))
    configurations["revseq default"] = ("revseq", "default")
    configurations["revseq per step, binomial c=default"] = ("binomial", "default")
    for length in (10, 45, 200):
        configurations[f"checkpoint, segments of {length}"] = ("segments", str(length))
    configurations["checkpoint selective, segments of 45"] = ("selective", "45")
    _check_gradients(300, [c for c in configurations.values() if c[0] != "plain"][:3])  # the selective: above
    contenders = {name: make(kind, param, n, built) for name, (kind, param) in configurations.items()}
    times = benchmark.pedantic(lambda: interleaved(contenders, 3, warmup=0), rounds=1, iterations=1)
    points = {}
    for name, (kind, param) in configurations.items():
        summary = ratios(times, name, "plain autograd")
        rss = plain_rss if kind == "plain" else _rss(kind, param, n)
        points[name] = (rss[0], summary["median"], summary["range"])
        benchmark.extra_info[name] = {**summary, "rss_growth_mb": rss}
        print(f"{name:>45}: {summary['median']:.2f}x (range {summary['range']}), "
              f"peak RSS growth {rss[0]:.1f} MB ({rss[1]:.1f}-{rss[2]:.1f})")  # fmt: skip
    _draw(points, n)


def _draw(points: dict[str, tuple[float, float, list[float]]], n: int) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        return
    families = {"revseq, max": "revseq, plans with tapes (max_bytes)", "revseq default": "revseq default",
                "revseq per": "revseq, one re-run per step", "checkpoint, ": "torch.utils.checkpoint segments",
                "checkpoint selective": "checkpoint, selective policy", "plain": "plain autograd"}  # fmt: skip
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for prefix, label in families.items():
        chosen = sorted((mb, t) for name, (mb, t, _) in points.items() if name.startswith(prefix))
        if chosen:
            ax.plot([p[0] for p in chosen], [p[1] for p in chosen], "o-" if len(chosen) > 1 else "o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("peak RSS growth, MB (fresh process)")
    ax.set_ylabel("time / plain autograd (CPU, median of 3)")
    ax.set_title(f"GRUCell(64, 256), batch 16, n = {n}: time against memory")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "..", "docs", "img", "torch_frontier.png"), dpi=110)
