"""Compressed checkpoints under a fixed byte budget (issue 11, part 2): what compression buys and costs.

Two recurrences, each reversed with ``BinomialCheckpointing(max_bytes=B)``
for the same ``B`` with four stores: no compression (``MemoryStore``),
``CompressedStore`` with Blosc (zstd, level 3, byte shuffle), with LZ4, and
with ZFP at an absolute tolerance. The engine sizes the budget with ``x0``'s
compressed size, so a store that compresses better holds more checkpoints
and recomputes fewer steps. Per store: checkpoints that fit (the measured
peak), forward steps, peak bytes held, the compression ratio, CPU and wall
time (median of interleaved rounds, the order rotating), and the
gradient's largest error relative to StoreAll's largest entry.

- **Heat**: a smooth 512 x 512 float64 field (2 MiB), each step two explicit
  diffusion steps plus a small nonlinear reaction, ``H(x) + dt tanh(x)``, so
  the gradient reads the states; 60 steps, a budget of 6 raw states.
- **RNN**: ``h_{t+1} = tanh(W h_t + U u_t)``, a batch of 64 hidden states of
  width 512 in float64 (256 KiB), random weights and inputs; 200 steps, a
  budget of 8 raw states. Hidden states look like noise to a compressor.

Nothing asserts a time; forward steps are asserted equal to the planner's
prediction for the budget each store reports.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _common import interleaved

import revseq

numcodecs = pytest.importorskip("numcodecs", reason="the compress extra: pip install 'revseq[compress]'")

ROUNDS = 3
DT = 0.05


def _lap(x: np.ndarray) -> np.ndarray:
    return np.roll(x, 1, 0) + np.roll(x, -1, 0) + np.roll(x, 1, 1) + np.roll(x, -1, 1) - 4 * x


def _diffuse(x: np.ndarray) -> np.ndarray:
    for _ in range(2):
        x = x + 0.2 * _lap(x)  # symmetric: the diffusion is its own transpose
    return x


HEAT = revseq.Recurrence(
    lambda x: _diffuse(x) + DT * np.tanh(x),
    vjp=lambda x, g: _diffuse(g) + DT * (1 - np.tanh(x) ** 2) * g,
)


def heat_x0() -> np.ndarray:
    y, x = np.meshgrid(np.linspace(0, 1, 512), np.linspace(0, 1, 512), indexing="ij")
    return np.sin(2 * np.pi * x) * np.cos(4 * np.pi * y) + 0.5 * np.exp(-((x - 0.3) ** 2 + (y - 0.6) ** 2) / 0.02)


def rnn() -> tuple[revseq.Recurrence, np.ndarray, int]:
    rng = np.random.default_rng(0)
    width, batch, n = 512, 64, 200
    w = rng.normal(scale=1.0 / np.sqrt(width), size=(width, width))
    u = rng.normal(scale=0.5, size=(n, batch, width))

    def f(h: np.ndarray, t: int) -> np.ndarray:
        return np.tanh(h @ w.T + u[t])

    def vjp(h: np.ndarray, t: int, y: np.ndarray, g: np.ndarray) -> np.ndarray:
        return (g * (1 - y**2)) @ w

    rec = revseq.Recurrence(f, vjp=vjp, indexed=True, vjp_output=True)
    return rec, rng.normal(scale=0.5, size=(batch, width)), n


CASES: dict[str, Callable[[], tuple[revseq.Recurrence, np.ndarray, int, int]]] = {
    "heat 512x512 f64": lambda: (HEAT, heat_x0(), 60, 6),
    "RNN 64x512 f64": lambda: (*rnn(), 8),
}
STORES: dict[str, Callable[[], Any]] = {
    "none": lambda: None,
    "Blosc(zstd)": lambda: revseq.CompressedStore(codec="blosc"),
    "LZ4": lambda: revseq.CompressedStore(codec="lz4"),
    "ZFP(1e-6)": lambda: revseq.CompressedStore(codec=numcodecs.ZFPY(tolerance=1e-6)),
    "ZFP(1e-3)": lambda: revseq.CompressedStore(codec=numcodecs.ZFPY(tolerance=1e-3)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_compression_under_a_byte_budget(benchmark, case):
    rec, x0, n, states = CASES[case]()
    budget = states * x0.nbytes
    strategy = revseq.BinomialCheckpointing(max_bytes=budget)
    reference = revseq.backprop(rec, x0, n, revseq.StoreAll()).gradient
    scale = np.abs(reference).max()
    results: dict[str, dict[str, Any]] = {}
    runs = {}
    for name, make in STORES.items():

        def run(make: Callable[[], Any] = make, name: str = name) -> None:
            store = make()
            out = revseq.backprop(rec, x0, n, strategy, store=store)
            checkpoints = out.stats.peak_checkpoints
            sized = strategy.sized(store.stored_nbytes(x0) if store is not None else x0.nbytes)
            assert out.stats.forward_steps == sized.cost(n).forward_steps
            results[name] = {
                "checkpoints": checkpoints,
                "forward_steps": out.stats.forward_steps,
                "peak_MB": out.stats.peak_bytes / 1e6,
                "ratio": store.ratio if store is not None else 1.0,
                "error": float(np.abs(out.gradient - reference).max() / scale),
            }

        runs[name] = run
    benchmark.pedantic(runs["Blosc(zstd)"], rounds=1, iterations=1)
    times = interleaved(runs, ROUNDS)
    print(f"\n{case}: n={n}, budget {budget / 1e6:.1f} MB = {states} raw states, {ROUNDS} rounds")
    print("| store | checkpoints | forward steps | peak MB | ratio | CPU s | wall s | gradient error |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        cpu, wall = statistics.median(times[name][0]), statistics.median(times[name][1])
        r.update(cpu_s=cpu, wall_s=wall)
        print(
            f"| {name} | {r['checkpoints']} | {r['forward_steps']} | {r['peak_MB']:.2f} | {r['ratio']:.2f} | "
            f"{cpu:.2f} | {wall:.2f} | {r['error']:.1e} |"
        )
    benchmark.extra_info["results"] = results
