"""revseq.torch.Recurrent against the nn.GRU it wraps, and against checkpointing that module (issue 13, item 9).

``GRU(64, 256, num_layers=2)``, batch 16, float32, one thread, n = 2000
(``REVSEQ_BENCH_N``); the loss is ``output.sum() + h_n.sum()``. Contenders,
one forward and backward pass each:

- ``nn.GRU``: the module itself (on the CPU, ATen's loop over the steps in
  C++, the input projections of a layer made in one product);
- ``Recurrent()``: revseq's default plan with tapes;
- ``Recurrent(BinomialCheckpointing(20))``: one re-run per step;
- ``checkpoint, chunks of L``: what a user of ``torch.utils.checkpoint``
  writes for a long sequence: ``nn.GRU`` over chunks of ``L = ceil(sqrt(n))``
  steps, each chunk in ``checkpoint(..., use_reentrant=False)``, the state
  carried from chunk to chunk (RNG preserved).

Time: CPU time, interleaved rounds (``REVSEQ_BENCH_ROUNDS``, 5), ratios to
``nn.GRU`` round by round. Memory: the bytes autograd saves during the
forward pass, each storage once, counted by a saved-tensor hook (not peak
RSS; see test_torch_tapes.py for that). Gradients are checked against ``nn.GRU``'s before anything is timed.
Run: ``python -m pytest benchmarks/test_torch_module.py --benchmark-only -s``.
"""

from __future__ import annotations

import math
import os
from typing import Any

import pytest
from _common import interleaved, ratios

torch = pytest.importorskip("torch")

import revseq  # noqa: E402
import revseq.torch as rt  # noqa: E402


def _contenders(n: int) -> tuple[Any, dict[str, Any], Any]:
    torch.manual_seed(0)
    gru = torch.nn.GRU(64, 256, num_layers=2)
    x = torch.randn(n, 16, 64, requires_grad=True)
    length = math.isqrt(n - 1) + 1
    from torch.utils.checkpoint import checkpoint

    def chunks(x: Any) -> tuple[Any, Any]:
        h, parts = None, []
        for start in range(0, n, length):
            out, h = checkpoint(gru, x[start : start + length], h, use_reentrant=False, preserve_rng_state=True)
            parts.append(out)
        return torch.cat(parts), h

    calls = {
        "nn.GRU": gru,
        "Recurrent()": rt.Recurrent(gru),
        "Recurrent(BinomialCheckpointing(20))": rt.Recurrent(gru, strategy=revseq.BinomialCheckpointing(20)),
        f"checkpoint, chunks of {length}": chunks,
    }
    return gru, calls, x


def _pass(call: Any, x: Any) -> Any:
    output, h_n = call(x)
    (output.sum() + h_n.sum()).backward()
    return output


def _saved_mb(call: Any, x: Any, exclude: list[Any]) -> float:
    seen = {t.untyped_storage().data_ptr() for t in exclude}
    total = [0]

    def pack(tensor: Any) -> Any:
        key = tensor.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total[0] += tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        output, h_n = call(x)
    (output.sum() + h_n.sum()).backward()
    return total[0] / 2**20


def test_recurrent_against_the_module(benchmark):
    torch.set_num_threads(1)
    n = int(os.environ.get("REVSEQ_BENCH_N", 2000))
    rounds = int(os.environ.get("REVSEQ_BENCH_ROUNDS", 5))
    gru, calls, x = _contenders(n)
    wrt = [x, *gru.parameters()]
    expected = None
    for name, call in calls.items():
        for p in wrt:
            p.grad = None
        _pass(call, x)
        got = [p.grad.clone() for p in wrt]
        if expected is None:
            expected = got
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-3, atol=1e-4, msg=name)
    saved = {name: _saved_mb(call, x, wrt) for name, call in calls.items()}
    contenders = {name: (lambda call=call: _pass(call, x)) for name, call in calls.items()}
    times = benchmark.pedantic(lambda: interleaved(contenders, rounds, warmup=0), rounds=1, iterations=1)
    print(f"\nGRU(64, 256, num_layers=2), batch 16, n = {n}, {rounds} rounds")
    for name in calls:
        summary = ratios(times, name, "nn.GRU")
        benchmark.extra_info[name] = {**summary, "saved_mb": saved[name]}
        print(f"{name:>40}: {summary['median']:.2f}x nn.GRU (range {summary['range']}), saved {saved[name]:.1f} MB")
