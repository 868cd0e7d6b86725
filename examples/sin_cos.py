"""The original gist, on revseq: x_{t+1} = sin(x_t), gradient of w . x_n with respect to x_0.

Runs every built-in strategy on the same recurrence, prints what each one
cost (calls of f, checkpoints held) and checks the gradients: all against
plain backpropagation (StoreAll), and StoreAll against central finite
differences. Run it as a script: ``python examples/sin_cos.py``.
"""

from __future__ import annotations

import time

import numpy as np

import revseq


def finite_difference_gradient(x0: np.ndarray, w: np.ndarray, n: int, eps: float = 1e-6) -> np.ndarray:
    """d(w . x_n)/d x0 by central differences (the recurrence is elementwise, so one pair of sweeps)."""

    def run(x: np.ndarray) -> np.ndarray:
        for _ in range(n):
            x = np.sin(x)
        return x

    return w * (run(x0 + eps) - run(x0 - eps)) / (2 * eps)


def main(n: int = 10_000, size: int = 100) -> None:
    rec = revseq.Recurrence(f=np.sin, df=np.cos)
    x0 = np.random.default_rng(0).uniform(-1, 1, size)
    w = np.random.default_rng(1).uniform(-1, 1, size)

    reference = revseq.backprop(rec, x0, n, revseq.StoreAll(), adjoint=w)
    fd = finite_difference_gradient(x0, w, n)
    fd_error = np.max(np.abs(reference.gradient - fd)) / np.max(np.abs(fd))
    print(f"n = {n}, state of {size} floats; StoreAll vs finite differences: relative error {fd_error:.1e}\n")

    strategies = [
        revseq.StoreAll(),
        revseq.SqrtCheckpointing(),
        revseq.BinomialCheckpointing(),  # the default: about sqrt(2n) checkpoints, <= 2n steps
        revseq.BinomialCheckpointing(checkpoints=15),
        revseq.RecursiveHalving(),
    ]
    header = ("strategy", "checkpoints", "forward steps", "x n", "max |grad - StoreAll|", "seconds")
    print("{:40} {:>11} {:>13} {:>6} {:>22} {:>8}".format(*header))
    for strategy in strategies:
        start = time.perf_counter()
        out = revseq.backprop(rec, x0, n, strategy, adjoint=w)
        seconds = time.perf_counter() - start
        deviation = np.max(np.abs(out.gradient - reference.gradient))
        stats = out.stats
        print(
            f"{strategy!r:40} {stats.peak_checkpoints:>11} {stats.forward_steps:>13} "
            f"{stats.recompute_factor:>6.2f} {deviation:>22.1e} {seconds:>8.3f}"
        )
        assert stats.as_cost() == strategy.cost(n), "measured cost differs from the simulator's prediction"
        assert deviation <= 1e-12 * np.max(np.abs(reference.gradient))

    # Walking the states backwards needs no derivative at all:
    states = revseq.reverse(np.sin, x0, n, revseq.RecursiveHalving())
    first = next(states)
    np.testing.assert_allclose(np.sin(first), reference.state)
    rest = sum(1 for _ in states)
    print(f"\nreverse(): x_{n - 1} .. x_0 ({1 + rest} states) with {states.stats.peak_checkpoints} checkpoints")


if __name__ == "__main__":
    main()
