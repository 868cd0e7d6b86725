"""What replaying random numbers costs in revseq.torch, against plain autograd and torch.utils.checkpoint (issue 13).

A GRU cell of width 256 (64 input features, batch 16) with dropout 0.2 on
its new state, n = 2000 steps, float32, one thread, one forward and backward
pass per run. Contenders in interleaved rounds (CPU time, medians of the
per-round ratios to plain autograd; see _common.interleaved):

- plain autograd through the unrolled loop (the baseline);
- ``revseq.torch.unroll`` with the default strategy, dropout on (the
  generators' states replayed per checkpoint);
- the same cell in eval mode (no dropout: after the forward pass nothing is
  replayed), which prices the replay by difference;
- ``torch.utils.checkpoint.checkpoint_sequential``-style segments of
  ceil(sqrt(n)) steps through ``torch.utils.checkpoint.checkpoint(...,
  use_reentrant=False, preserve_rng_state=True)``, also replaying.

Gradients are checked equal to plain autograd's (same seed) before timing.
Run: ``python -m pytest benchmarks/test_torch_replay.py --benchmark-only -s``.
"""

from __future__ import annotations

import math

import pytest
from _common import interleaved, ratios

torch = pytest.importorskip("torch")
from torch.utils.checkpoint import checkpoint  # noqa: E402

import revseq.torch as rt  # noqa: E402

N, WIDTH, FEATURES, BATCH = 2000, 256, 64, 16


def test_dropout_replay_cost(benchmark):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    gru, drop = torch.nn.GRUCell(FEATURES, WIDTH), torch.nn.Dropout(0.2)
    u = torch.randn(N, BATCH, FEATURES)
    h0 = torch.zeros(BATCH, WIDTH, requires_grad=True)
    params = list(gru.parameters())

    def cell(h, u_t):
        return drop(gru(u_t, h))

    def plain():
        h = h0
        for t in range(N):
            h = cell(h, u[t])
        return h

    def revseq_unroll():
        return rt.unroll(cell, h0, u, params=params)

    segment = math.ceil(math.sqrt(N))

    def segments():
        def run(h, start):
            for t in range(start, min(start + segment, N)):
                h = cell(h, u[t])
            return h

        h = h0
        for start in range(0, N, segment):
            h = checkpoint(run, h, start, use_reentrant=False, preserve_rng_state=True)
        return h

    def grads(forward):
        torch.manual_seed(1)
        return torch.autograd.grad(forward().pow(2).sum(), [h0, *params])

    expected = grads(plain)
    for forward in (revseq_unroll, segments):
        for g, e in zip(grads(forward), expected, strict=True):
            torch.testing.assert_close(g, e)

    def timed(forward, train=True):
        def go():
            drop.train(train)
            torch.manual_seed(1)
            forward().pow(2).sum().backward()

        return go

    contenders = {
        "plain autograd": timed(plain),
        "revseq, dropout replayed": timed(revseq_unroll),
        "revseq, eval mode": timed(revseq_unroll, train=False),
        "torch.utils.checkpoint segments": timed(segments),
    }
    times = benchmark.pedantic(lambda: interleaved(contenders, 5), rounds=1, iterations=1)
    for name in contenders:
        summary = ratios(times, name, "plain autograd")
        benchmark.extra_info[name] = summary
        print(f"{name:>34}: {summary['median']:.2f}x plain autograd (quartiles {summary['quartiles']}, "
              f"range {summary['range']})")  # fmt: skip
    benchmark.extra_info["replay / eval mode"] = ratios(times, "revseq, dropout replayed", "revseq, eval mode")
