"""The GRU case of issue 13 and the ways to backpropagate through it, shared by test_torch_tapes.py and its RSS runs.

A ``GRUCell(64, 256)``, batch 16, with a ``Linear(256, 1)`` readout per
step; the loss is ``h_n.sum() + outputs.sum()``. ``make(kind, param, n)``
returns a function running one forward and backward pass:

- ``plain``: autograd through the unrolled loop;
- ``revseq``: ``revseq.torch.unroll`` with a plan with tapes (``param``:
  ``max_bytes``, or ``default``);
- ``binomial``: ``unroll`` with ``BinomialCheckpointing`` and one re-run per
  step (``param``: checkpoints, or ``default``);
- ``segments``: ``torch.utils.checkpoint.checkpoint`` over segments of
  ``param`` steps (``checkpoint_sequential``'s scheme), RNG preserved;
- ``selective``: the same with a selective policy that saves the matrix
  products and recomputes the rest (``create_selective_checkpoint_contexts``);
- ``floor``: a sweep without gradients (outputs into a preallocated
  tensor), then the plain loop: the least a scheme that makes each step
  twice, once without and once with gradients, can cost (no checkpoint
  kept, no check, no segment: a reference, not a method).

``python benchmarks/torch_tapes_cases.py KIND PARAM N`` runs one
configuration in a process of its own: the problem is made, a 2-step pass
loads the kernels, then one of ``N`` steps runs, and a JSON line gives the
growth of peak RSS (``VmHWM``) over what the process held before it, in
MB: what the pass itself needs at its peak.
"""

from __future__ import annotations

import functools
import gc
import json
import resource
import sys
from collections.abc import Callable
from typing import Any

WIDTH, FEATURES, BATCH = 256, 64, 16


def problem(n: int, seed: int = 0) -> tuple[Any, Any, Any, Any]:
    import torch

    torch.manual_seed(seed)
    cell, readout = torch.nn.GRUCell(FEATURES, WIDTH), torch.nn.Linear(WIDTH, 1)
    u = torch.randn(n, BATCH, FEATURES)
    h0 = torch.zeros(BATCH, WIDTH, requires_grad=True)
    return cell, readout, u, h0


def make(kind: str, param: str, n: int, built: tuple[Any, Any, Any, Any] | None = None) -> Callable[[], Any]:
    """One forward and backward pass of ``kind`` (see the module's docstring); returns the loss."""
    import torch
    from torch.utils.checkpoint import checkpoint, create_selective_checkpoint_contexts

    import revseq
    import revseq.torch as rt

    cell, readout, u, h0 = built if built is not None else problem(n)
    params = list(cell.parameters())

    def step(h: Any, u_t: Any) -> Any:
        return cell(u_t, h)

    def plain() -> Any:
        h, ys = h0, []
        for t in range(n):
            h = step(h, u[t])
            ys.append(readout(h))
        return h, torch.stack(ys)

    def ours() -> Any:
        budget = None if param == "default" else int(float(param))
        return rt.unroll(step, h0, u, output=readout, params=params, max_bytes=budget)

    def per_step() -> Any:
        c = None if param == "default" else int(param)
        strategy = revseq.BinomialCheckpointing(checkpoints=c)
        return rt.unroll(step, h0, u, output=readout, params=params, strategy=strategy)

    def policy(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> Any:
        products = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default}
        saved = torch.utils.checkpoint.CheckpointPolicy
        return saved.MUST_SAVE if op in products else saved.PREFER_RECOMPUTE

    def segmented(selective: bool) -> Callable[[], Any]:
        length = int(param)
        options: dict[str, Any] = {"use_reentrant": False, "preserve_rng_state": True}
        if selective:
            options["context_fn"] = functools.partial(create_selective_checkpoint_contexts, policy)

        def run(h: Any, start: int) -> Any:
            ys = []
            for t in range(start, min(start + length, n)):
                h = step(h, u[t])
                ys.append(readout(h))
            return h, torch.stack(ys)

        def forward() -> Any:
            h, parts = h0, []
            for start in range(0, n, length):
                h, ys = checkpoint(run, h, start, **options)
                parts.append(ys)
            return h, torch.cat(parts)

        return forward

    def floor() -> Any:
        with torch.no_grad():
            h, ys = h0, torch.empty(n, BATCH, 1)
            for t in range(n):
                h = step(h, u[t])
                ys[t] = readout(h)
        return plain()

    forwards = {
        "plain": lambda: plain,
        "floor": lambda: floor,
        "revseq": lambda: ours,
        "binomial": lambda: per_step,
        "segments": lambda: segmented(False),
        "selective": lambda: segmented(True),
    }
    forward = forwards[kind]()

    def go() -> Any:
        h, ys = forward()
        loss = h.sum() + ys.sum()
        loss.backward()
        return loss.detach()

    return go


def peak_rss_kib() -> int:
    """This process's peak resident set size, in KiB.

    ``VmHWM`` from /proc: the high-water mark of this process's own memory
    map. Not ``getrusage``'s ``ru_maxrss``, which Linux carries over from the
    parent through fork and exec: run from a large parent (a benchmark that
    has just timed the unrolled loop), it starts at the parent's size and
    hides any growth below it.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    kind, param, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    import torch

    torch.set_num_threads(1)
    built = problem(n)
    make(kind, param, 2)()  # the kernels and the allocator's first pools, at next to no memory
    gc.collect()
    base = peak_rss_kib()
    make(kind, param, n, built)()
    print(json.dumps({"growth_mb": (peak_rss_kib() - base) / 1024}))


if __name__ == "__main__":
    main()
