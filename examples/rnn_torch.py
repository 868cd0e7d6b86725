"""Training a GRU in PyTorch on sequences of 10^4 steps, with binomial checkpointing.

The task needs memory: the target at step t is a leaky running sum of the
inputs, y_t = 0.9 y_{t-1} + u_t (scaled to unit variance), and a GRU cell
reads u_t and a linear readout predicts y_t from its state, at all 10^4
steps of every sequence.
``revseq.torch.unroll`` runs the cell with a revseq strategy: the forward
pass keeps only the strategy's checkpoints, the backward pass re-runs one
step at a time under autograd. The loss goes down as with plain
backpropagation through time (the gradients are the same), while the graph
holds a few dozen states instead of every step's activations.

Memory is measured, not assumed: ``torch.autograd.graph.saved_tensors_hooks``
sees every tensor the autograd graph saves for backward (revseq's
checkpoints included: they are saved tensors too), and the bytes of the
distinct storages are summed, leaving out the parameters and the inputs,
which exist anyway. Run it as a script: ``python examples/rnn_torch.py``
(``--help`` for sizes; ``--memory-only --width 256`` gives the table in
docs/autodiff.md).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

import revseq
import revseq.torch as rt


def make_data(n: int, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(n, batch, 1, generator=gen)
    y = torch.empty_like(u)
    level = torch.zeros(batch, 1)
    for t in range(n):
        level = 0.9 * level + u[t]
        y[t] = level
    return u, y / y.std()


class Model(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.cell = torch.nn.GRUCell(1, width)
        self.readout = torch.nn.Linear(width, 1)

    def step(self, h: torch.Tensor, u_t: torch.Tensor) -> torch.Tensor:
        return self.cell(u_t, h)

    def forward(self, u: torch.Tensor, strategy: revseq.ReversalStrategy | None, tally: rt.Tally | None = None):
        h0 = torch.zeros(u.shape[1], self.cell.hidden_size, device=u.device)
        if strategy is None:  # the baseline: plain backpropagation through time
            h, ys = h0, []
            for t in range(u.shape[0]):
                h = self.step(h, u[t])
                ys.append(self.readout(h))
            return torch.stack(ys)
        _, ys = rt.unroll(self.step, h0, u, strategy=strategy, output=self.readout, params=self.parameters(),
                          tally=tally)  # fmt: skip
        return ys


def saved_bytes(fn: Callable[[], torch.Tensor], owned: list[torch.Tensor]) -> tuple[int, torch.Tensor]:
    """Bytes of the distinct storages autograd saves while ``fn`` runs, not counting ``owned`` tensors'."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    mine = {t.untyped_storage().data_ptr() for t in owned}
    return sum(size for ptr, size in storages.items() if ptr not in mine), out


def compare_memory(model: Model, u: torch.Tensor, y: torch.Tensor, strategies: list) -> None:
    n, batch = u.shape[0], u.shape[1]
    state = batch * model.cell.hidden_size * 4
    print(f"n = {n}, GRU width {model.cell.hidden_size}, batch {batch}: one state = {state} bytes")
    print(f"{'':56} {'saved for backward':>18} {'states':>8} {'cell calls':>13} {'seconds':>8}")
    owned = [u, y, *model.parameters()]
    for strategy in strategies:
        tally = rt.Tally()
        start = time.perf_counter()
        held, ys = saved_bytes(lambda s=strategy, t=tally: model(u, s, t), owned)
        torch.nn.functional.mse_loss(ys, y).backward()
        seconds = time.perf_counter() - start
        calls = f"{n} + {n}" if strategy is None else f"{tally.forward_steps} + {tally.vjp_steps}"
        name = "unrolled loop (plain autograd)" if strategy is None else repr(strategy)
        print(f"{name:56} {held / 1e6:>15.3f} MB {held / state:>8.1f} {calls:>13} {seconds:>8.1f}")
        model.zero_grad()
        del ys


def train(model: Model, u: torch.Tensor, y: torch.Tensor, strategy: revseq.ReversalStrategy, epochs: int) -> None:
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    print(f"training on {u.shape[1]} sequences of {u.shape[0]} steps with {strategy!r}")
    losses = []
    for epoch in range(epochs):
        start = time.perf_counter()
        tally = rt.Tally()
        loss = torch.nn.functional.mse_loss(model(u, strategy, tally), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        seconds = time.perf_counter() - start
        print(f"epoch {epoch}: loss {losses[-1]:.4f}   ({tally.step_calls} cell calls, {seconds:.1f} s)")
    assert losses[-1] < 0.5 * losses[0], "the loss did not go down"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--memory-only", action="store_true", help="only the memory comparison")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)  # steps this small gain nothing from threads
    u, y = make_data(args.steps, args.batch)
    model = Model(args.width)
    strategies = [None, revseq.BinomialCheckpointing(checkpoints=20)]
    if args.memory_only:
        strategies += [revseq.StoreAll(), revseq.BinomialCheckpointing(), revseq.RecursiveHalving()]
    compare_memory(model, u, y, strategies)
    if not args.memory_only:
        print()
        train(model, u, y, revseq.BinomialCheckpointing(), args.epochs)  # about sqrt(2n) checkpoints, <= 2n steps


if __name__ == "__main__":
    main()
