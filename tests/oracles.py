"""Independent reference implementations the tests compare revseq against.

Nothing here imports revseq: each oracle is written from the formulas and
code quoted in /work/shared/THEORY.md (section numbers below), so that a bug
in the library cannot also be a bug in its yardstick.

Counting: the oracles for binomial checkpointing use Griewank-Walther
accounting, ``T(n, s)`` advances with ``s`` checkpoints (x_0's copy
included); a whole revseq ``backprop`` makes ``T(n, s) + 1`` calls of f
(the extra one produces x_n), ``reverse`` makes ``T(n, s)``.
"""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Callable, Iterator
from typing import Any

# -- binomial checkpointing (THEORY 1.1, 1.2) -----------------------------------


def repetition(n: int, s: int) -> int:
    """The smallest ``r`` with ``C(s + r, s) >= n`` (THEORY 1.1), by plain search."""
    r = 0
    while math.comb(s + r, s) < n:
        r += 1
    return r


def closed_form_advances(n: int, s: int) -> int:
    """``T(n, s) = r n - C(s + r, r - 1)`` (THEORY 1.1); 0 for ``n = 1``."""
    r = repetition(n, s)
    if r == 0:
        return 0
    return r * n - math.comb(s + r, r - 1)


@functools.cache
def dp_table(nmax: int, smax: int) -> tuple[tuple[int, ...], ...]:
    """``table[s][n] = T(n, s)`` for ``1 <= n <= nmax``, ``1 <= s <= smax``, by the DP of THEORY 1.2.

    ``T(1, s) = 0``, ``T(n, 1) = n (n - 1) / 2``,
    ``T(n, s) = min_{1 <= j < n} j + T(n - j, s - 1) + T(j, s)``.
    Row and column 0 are unused (zero). Cached: build it once per size.
    """
    table = [[0] * (nmax + 1) for _ in range(smax + 1)]
    for n in range(1, nmax + 1):
        table[1][n] = n * (n - 1) // 2
    for s in range(2, smax + 1):
        row, left = table[s], table[s - 1]
        for n in range(2, nmax + 1):
            row[n] = min(j + left[n - j] + row[j] for j in range(1, n))
    return tuple(tuple(row) for row in table)


def dp_advances(n: int, s: int) -> int:
    """``T(n, s)`` from the DP; tables are shared between calls (sizes rounded up)."""
    nmax = max(200, 1 << (n - 1).bit_length())
    smax = max(12, s)
    return dp_table(nmax, smax)[s][n]


def exhaustive_advances(n: int, s: int) -> int:
    """The fewest advances over every pebble-game schedule (THEORY 1.2: "DP == exhaustive search").

    A shortest-path search (Dijkstra with 0/1 weights) over the states
    ``(live, stored, next)``: the index of the working state, the set of
    stored indices (at most ``s``), and the step to be reversed next. Moves:
    advance the working state one step (cost 1, never past ``x_{next}``),
    store it, free or restore a stored state (cost 0), reverse step ``next``
    when ``x_next`` is live or stored (cost 0). Only for tiny ``n``.
    """
    start = (0, frozenset(), n - 1)
    best = {start: 0}
    heap: list[tuple[int, int, frozenset[int], int]] = [(0, 0, frozenset(), n - 1)]
    while heap:
        cost, live, stored, nxt = heapq.heappop(heap)
        if best.get((live, stored, nxt), math.inf) < cost:
            continue
        if nxt < 0:
            return cost
        moves: list[tuple[int, int, frozenset[int], int]] = []
        if live < nxt:
            moves.append((cost + 1, live + 1, stored, nxt))
        if live not in stored and len(stored) < s and live <= nxt:
            moves.append((cost, live, stored | {live}, nxt))
        for k in stored:
            moves.append((cost, live, stored - {k}, nxt))
            moves.append((cost, k, stored, nxt))
        if live == nxt or nxt in stored:
            moves.append((cost, live, stored, nxt - 1))
        for move in moves:
            key = move[1:]
            if move[0] < best.get(key, math.inf):
                best[key] = move[0]
                heapq.heappush(heap, move)
    raise AssertionError(f"no schedule reverses n={n} with s={s}")


# -- the original gist's recursive halving (THEORY 2, verbatim) -----------------


def gist_recursive(f: Callable[[Any], Any], s0: Any, b: int, e: int) -> Iterator[Any]:
    """Tim Vieira's ``recursive(f, s0, b, e)``, copied from THEORY 2 (only renamed)."""
    if e - b == 1:
        yield s0
    else:
        # do O(n/2) work to find the midpoint with O(1) space.
        s = s0
        d = (e - b) // 2
        for _ in range(d):
            s = f(s)
        for s in gist_recursive(f, s, b + d, e):  # noqa: B020 - verbatim
            yield s
        for s in gist_recursive(f, s0, b, b + d):
            yield s


@functools.cache
def halving_advances(w: int) -> int:
    """``R(w)``: ``R(1) = 0``, ``R(w) = floor(w/2) + R(w - floor(w/2)) + R(floor(w/2))`` (DESIGN)."""
    if w == 1:
        return 0
    half = w // 2
    return half + halving_advances(w - half) + halving_advances(half)


class Meter:
    """Counts calls of f and live state objects (CPython frees a state as soon as nothing refers to it)."""

    def __init__(self) -> None:
        self.calls = 0
        self.live = 0
        self.peak = 0

    def state(self, value: int) -> Token:
        return Token(value, self)

    def step(self, x: Token) -> Token:
        """The counted step ``x -> x + 1``."""
        self.calls += 1
        return Token(x.value + 1, self)


class Token:
    """An integer state that tells its meter when it is created and when it dies."""

    __slots__ = ("meter", "value")

    def __init__(self, value: int, meter: Meter) -> None:
        self.value = value
        self.meter = meter
        meter.live += 1
        meter.peak = max(meter.peak, meter.live)

    def __del__(self) -> None:
        self.meter.live -= 1


def drain(states: Iterator[Token]) -> list[int]:
    """The values of ``states``, holding none of them while the next one is produced."""
    values = []
    for token in states:
        values.append(token.value)
        del token
    return values


def gist_reverse_cost(n: int) -> tuple[list[int], int, int]:
    """Run the gist's ``recursive(f, x0, 0, n)``: (values yielded, calls of f, peak live states)."""
    meter = Meter()
    values = drain(gist_recursive(meter.step, meter.state(0), 0, n))
    return values, meter.calls, meter.peak


def gist_backprop_cost(n: int) -> tuple[int, int]:
    """The gist's memory-efficient backprop: a full forward sweep to x_n, then the bisection reversal.

    Returns (calls of f, peak live states during the reversal); DESIGN: n + R(n)
    calls and ceil(log2 n) + 1 states (n = 10^4: 74608 and 15). The sweep's
    own transient (x_0, x_t and x_{t+1} during a call) is not counted, as in
    DESIGN's figure.
    """
    meter = Meter()
    x0 = meter.state(0)
    x = x0
    for _ in range(n):
        x = meter.step(x)
    del x  # x_n is the output; the reversal does not need it
    meter.peak = meter.live
    values = drain(gist_recursive(meter.step, x0, 0, n))
    assert values == list(range(n - 1, -1, -1))
    return meter.calls, meter.peak


# -- segment checkpointing (THEORY 3) --------------------------------------------


def ceil_sqrt(n: int) -> int:
    """The smallest ``k`` with ``k * k >= n``."""
    k = 1
    while k * k < n:
        k += 1
    return k


def segment_forward_steps(n: int, k: int) -> int:
    """Calls of f for segments of length ``k`` when the last segment is kept on the first sweep.

    THEORY 3: ``2n - 1 - ceil(n/k)`` advances when every segment is
    recomputed, ``last - 1`` fewer when the last one is kept; plus the call
    producing x_n.
    """
    nseg = -(-n // k)
    last = n - (nseg - 1) * k
    return (2 * n - 1 - nseg) - (last - 1) + 1


def segment_peak(n: int, k: int) -> int:
    """Peak checkpoints of segment checkpointing (THEORY 3).

    ``max(nseg + max(0, last - 2), nseg - 1 + max(0, k - 2))``: the last
    segment's start and its kept states, or an earlier segment's recomputed
    states over the starts before it. Two cases THEORY's table does not
    cover: a last segment of length 1 is the working state itself and needs
    no checkpoint (``nseg - 1``), and with one segment there is no earlier one.
    """
    nseg = -(-n // k)
    last = n - (nseg - 1) * k
    tail = nseg + max(0, last - 2) if last >= 2 else nseg - 1
    earlier = nseg - 1 + max(0, k - 2) if nseg > 1 else 0
    return max(tail, earlier)


# -- the mixed hidden-state / tape model (THEORY 5.2) ------------------------------


def mixed_optimum(n: int, units: int, alpha: int) -> int:
    """The fewest forward evaluations reversing ``n`` steps in ``units`` of memory (THEORY 5.2, ``C0(n, M)``).

    A stored state costs 1 unit, a stored tape (a step's graph) ``alpha``;
    the adjoint of a step is free from its tape, else it costs one
    evaluation from its working state. Every evaluation, taped or not,
    counts 1. ``math.inf`` (as a huge int) when nothing fits.
    """
    big = 10**18

    @functools.cache
    def stored(k: int, m: int) -> int:  # C(k, m): x_0 stored, counting 1 of m units
        if k <= 1:
            return k
        best = big
        for j in range(1, k):  # advance j, store x_j, recurse right, then the left part
            best = min(best, j + free(k - j, m - 1) + free(j, m))
        for j in range(1, k + 1):  # tape step j, keep its tape, recurse right, then the left part
            best = min(best, j + free(k - j, m - 1 - alpha) + free(j - 1, m))
        return best

    @functools.cache
    def free(k: int, u: int) -> int:  # C0(k, u): x_0 working, not stored, u units free
        if u < 0:
            return big
        if k <= 1:
            return k
        best = stored(k, u) if u >= 1 else big
        if u >= alpha:
            best = min(best, 1 + free(k - 1, u - alpha))
        return best

    return free(n, units)


# -- reference recurrences (plain loops) -----------------------------------------


def run_forward(f: Callable[..., Any], x0: Any, n: int, *args: Any, indexed: bool = False) -> list[Any]:
    """``[x_0, ..., x_n]`` by a plain loop."""
    xs = [x0]
    for t in range(n):
        xs.append(f(xs[-1], t, *args) if indexed else f(xs[-1], *args))
    return xs


def central_difference(objective: Callable[[Any], float], x: Any, eps: float = 1e-6) -> Any:
    """The gradient of ``objective`` at the float64 array ``x``, by central differences."""
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += eps
        down[i] -= eps
        grad[i] = (objective(up) - objective(down)) / (2 * eps)
    return grad
