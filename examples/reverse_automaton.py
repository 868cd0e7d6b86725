"""Walking sequences that have no derivative backwards: a cellular automaton and a random generator.

Rule 30 is not invertible (many rows have the same successor), and a
pseudo-random generator is only meant to run forwards; yet a backward pass
over a simulation that used them needs their states in reverse order: the
noise a stochastic simulation drew, last draw first, or the history of an
automaton from its end. ``revseq.reverse(f, x0, n, strategy)`` yields
``x_{n-1}, ..., x_0`` by recomputing from a few checkpoints: O(log n)
states instead of n. No derivative is involved, only f.

Every state is checked as it arrives: f of it must be the state yielded
just before (``x_n`` for the first), and the last must be ``x_0``, so the
walk is verified without storing the sequence. Run it as a script:
``python examples/reverse_automaton.py``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

import revseq


def rule30(row: np.ndarray) -> np.ndarray:
    """One step of Wolfram's rule 30 on a ring of cells: new = left XOR (centre OR right)."""
    return np.roll(row, 1) ^ (row | np.roll(row, -1))


def xorshift64(state: np.ndarray) -> np.ndarray:
    """Marsaglia's xorshift64 on a vector of independent 64-bit generators (shifts and XORs only)."""
    state = state ^ (state << np.uint64(13))
    state = state ^ (state >> np.uint64(7))
    return state ^ (state << np.uint64(17))


def walk_back(name: str, f: Callable[[np.ndarray], np.ndarray], x0: np.ndarray, n: int) -> list[np.ndarray]:
    """Reverse n steps of f with two strategies of O(log n) memory, checking every state; return the last few."""
    final = x0
    for _ in range(n):
        final = f(final)
    budget = math.ceil(math.log2(n)) + 1
    print(f"\n{name}: n = {n} steps, one state = {x0.nbytes} bytes (all n states: {n * x0.nbytes / 1e6:.1f} MB)")
    print(f"{'strategy':56} {'checkpoints':>11} {'kB held':>8} {'calls of f':>11} {'seconds':>8}")
    last_states: list[np.ndarray] = []
    for strategy in (revseq.RecursiveHalving(), revseq.BinomialCheckpointing(checkpoints=budget)):
        start = time.perf_counter()
        states = revseq.reverse(f, x0, n, strategy)
        after = final  # the state yielded just before: x_n for the first one
        collected = []
        for t, x in zip(range(n - 1, -1, -1), states, strict=True):
            assert np.array_equal(f(x), after), f"x_{t} does not lead to x_{t + 1}"
            after = x
            if len(collected) < 6:
                collected.append(x)
        assert np.array_equal(after, x0), "the walk did not end at x_0"
        seconds = time.perf_counter() - start
        stats = states.stats
        print(
            f"{strategy!r:56} {stats.peak_checkpoints:>11} {stats.peak_bytes / 1e3:>8.1f} "
            f"{stats.forward_steps:>11} {seconds:>8.2f}"
        )
        assert stats.forward_steps == strategy.cost(n).forward_steps - 1  # reverse never computes x_n
        last_states = collected
    return last_states


def main() -> None:
    width, n = 96, 1 << 14
    row = np.zeros(width, dtype=bool)
    row[width // 2] = True
    newest = walk_back("rule 30", rule30, row, n)
    print(f"the last rows, newest first (x_{n - 1} down to x_{n - len(newest)}):")
    for x in newest:
        print("  " + "".join("#" if cell else "." for cell in x))

    seeds = np.array([88172645463325252, 2463534242, 123456789, 987654321], dtype=np.uint64)
    newest = walk_back("xorshift64, 4 streams", xorshift64, seeds, 1 << 15)
    print("the last draws of stream 0, newest first: " + ", ".join(f"{int(x[0]):#018x}" for x in newest[:3]))


if __name__ == "__main__":
    main()
