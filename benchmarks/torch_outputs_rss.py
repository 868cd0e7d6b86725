"""One configuration of the outputs memory benchmark, in a process of its own (run by test_torch_memory.py).

``python benchmarks/torch_outputs_rss.py KIND N [PATH]``: KIND is ``plain``
(autograd through the unrolled loop) or ``revseq`` (``revseq.torch.unroll``
with ``BinomialCheckpointing(checkpoints=20)``); PATH, if given, is put first
on ``sys.path`` (an older revseq, extracted from git). A GRU cell of width
256, batch 16, 64 input features and a ``Linear(256, 1)`` readout per step:
one forward and backward pass of 50 steps warms the allocator and the
kernels, then one of N steps runs; the line printed is a JSON object with
the growth of peak RSS (``VmHWM``: not ``ru_maxrss``, which Linux carries
over from the parent) over the warm-up's, in MB, and the
bytes the outputs and checkpoints hold.
"""

from __future__ import annotations

import gc
import json
import sys

from torch_tapes_cases import peak_rss_kib


def main() -> None:
    kind, n = sys.argv[1], int(sys.argv[2])
    if len(sys.argv) > 3:
        sys.path.insert(0, sys.argv[3])
    import torch

    import revseq
    import revseq.torch as rt

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cell, readout = torch.nn.GRUCell(64, 256), torch.nn.Linear(256, 1)
    u = torch.randn(n, 16, 64)
    h0 = torch.zeros(16, 256, requires_grad=True)

    def run(steps: int) -> None:
        if kind == "plain":
            h, ys = h0, []
            for t in range(steps):
                h = cell(u[t], h)
                ys.append(readout(h))
            outputs = torch.stack(ys)
        else:
            strategy = revseq.BinomialCheckpointing(checkpoints=20)
            h, outputs = rt.unroll(
                lambda h, u_t: cell(u_t, h), h0, u[:steps], output=readout, params=cell.parameters(), strategy=strategy
            )
        (h.sum() + outputs.sum()).backward()

    run(50)
    gc.collect()
    base = peak_rss_kib()
    run(n)
    peak = peak_rss_kib()
    held = n * 16 * 4 + (20 * 16 * 256 * 4 if kind != "plain" else 0)
    print(json.dumps({"growth_mb": (peak - base) / 1024, "held_mb": held / 2**20, "revseq": revseq.__file__}))


if __name__ == "__main__":
    main()
