"""Independent references for online checkpointing (THEORY 4), for tests/test_online.py.

Nothing here imports revseq (except the ``__main__`` block, which prints the
tables of docs/online.md). Counting is Griewank-Walther's as in THEORY 4:
the online forward sweep computes x_1 .. x_n, which is also what revseq
counts for a schedule that advances to x_n itself, so these numbers compare
with ``OnlineCheckpointing(...).cost(n).forward_steps`` directly.
"""

from __future__ import annotations

import functools
import itertools
import sys
from collections.abc import Iterable, Iterator

import oracles

# -- the offline optimum constrained to compute x_n first (THEORY 4.1) ---------------------------------------


@functools.cache
def _reversal_table(nmax: int, cmax: int) -> tuple[tuple[int, ...], ...]:
    """``H[c][L]``: the cheapest reversal of ``L`` steps, checkpoints placed anywhere, segment i with c - i.

    ``H(L, 1) = T(L, 1)``, ``H(L, c) = min(T(L, c), min_{1 <= j < L} T(j, c) + H(L - j, c - 1))``, with
    ``T`` from the brute-force DP of THEORY 1.2 (tests/oracles.py).
    """
    t = oracles.dp_table(max(200, nmax), max(12, cmax))
    table = [[0] * (nmax + 1) for _ in range(cmax + 1)]
    for c in range(1, cmax + 1):
        for length in range(1, nmax + 1):
            best = t[c][length]
            if c > 1:
                best = min([best, *(t[c][j] + table[c - 1][length - j] for j in range(1, length))])
            table[c][length] = best
    return tuple(tuple(row) for row in table)


def lower_bound_dp(n: int, c: int) -> int:
    """``T'(n, c) = n + H(n, c)`` (THEORY 4.1), by the dynamic programme (tables shared, sizes rounded up)."""
    return n + _reversal_table(max(64, 1 << (n - 1).bit_length()), max(12, c))[c][n]


# -- equinox's checkpointed_while_loop forward rule (THEORY 4.2) ------------------------------------------------


def equinox_placements(c: int) -> Iterator[tuple[int, int]]:
    """``(step, slot)`` for each state equinox's controller stores (THEORY 4.2's transcription).

    Stumm-Walther Algorithm I for steps below ``(c+1)(c+2)/2 - 1``, then Wang-Moin's level rule, which
    stores every state. With one checkpoint nothing is stored after x_0 (equinox's ``_wang_moin``).
    """
    u2m1 = (c + 1) * (c + 2) // 2 - 1
    steps: list[int | None] = [None] * c
    i, o, p, s = 0, c, c, True
    for step in range(u2m1):
        if s:
            yield step, i
            steps[i] = step
            i += 1
            if i > o:
                i = 1
        if step + 1 == p:
            s = False
        if step == p:
            p += o
            o -= 1
            i = o
            s = o > 0
    if c == 1:
        return
    # Every slot is filled by now, so the "latest step" searches below never meet an empty one.
    held = [t if t is not None else -1 for t in steps]
    levels = [sys.maxsize] + [0] * (c - 1)  # x_0's slot: a level nothing is below, so never dispensable
    dispensable = [False] * c
    for step in itertools.count(u2m1):
        if any(dispensable):
            index = max((k for k in range(c) if dispensable[k]), key=held.__getitem__)
            level = 0
            dispensable[index] = False
        else:
            index = max(range(c), key=held.__getitem__)
            old = levels[index]
            level = old + 1
            for k in range(c):
                if levels[k] < old:  # the old level, as equinox compares
                    dispensable[k] = True
        levels[index] = level
        held[index] = step
        yield step, index


def positions_by_n(placements: Iterable[tuple[int, int]], c: int, nmax: int) -> Iterator[tuple[int, tuple[int, ...]]]:
    """``(n, positions)``: the sorted steps held in ``c`` slots when the forward sweep reaches ``x_n``."""
    slots: list[int | None] = [None] * c
    pending = iter(placements)
    nxt = next(pending, None)
    for n in range(1, nmax + 1):
        while nxt is not None and nxt[0] <= n - 1:  # decisions taken at steps 0 .. n-1
            slots[nxt[1]] = nxt[0]
            nxt = next(pending, None)
        yield n, tuple(sorted(t for t in slots if t is not None))


def advances(length: int, slots: int) -> int:
    """``T(length, slots)`` by the closed form of tests/oracles.py (its plain search for ``r`` is slow for one slot)."""
    return length * (length - 1) // 2 if slots == 1 else oracles.closed_form_advances(length, slots)


def reversal_cost(positions: tuple[int, ...], n: int, c: int) -> int:
    """``n`` plus each segment ``[p_i, p_{i+1})`` reversed optimally with ``c - i`` checkpoints (THEORY 4.2)."""
    ends = (*positions[1:], n)
    return n + sum(advances(ends[i] - positions[i], c - i) for i in range(len(positions)))


def adaptive_positions(c: int, nmax: int) -> Iterator[tuple[int, tuple[int, ...]]]:
    """``(n, positions)`` under OnlineCheckpointing's rule, stated plainly (docs/online.md, "How it works").

    equinox's placements (Stumm-Walther Algorithm I) below ``(c+1)(c+2)/2 - 1`` steps; from there, at each
    step ``t`` every choice (store nothing, or store ``x_t`` in place of any checkpoint but x_0) is priced by
    :func:`reversal_cost` at ``n = t + 1``, and the cheapest taken, ties going to storing nothing, then to the
    leftmost checkpoint. O(c^2) work per step: the library does the same in O(1).
    """
    u2m1 = (c + 1) * (c + 2) // 2 - 1
    held: tuple[int, ...] = ()
    for n, positions in positions_by_n(equinox_placements(c), c, min(nmax, u2m1)):
        held = positions
        yield n, held
    for t in range(u2m1, nmax):
        if c > 1:
            choices = [held, *((*held[:j], *held[j + 1 :], t) for j in range(1, len(held)))]
            held = min(choices, key=lambda p: reversal_cost(p, t + 1, c))  # min keeps the first of equals
        yield t + 1, held


def best_subset_cost(positions: tuple[int, ...], n: int, c: int) -> int:
    """The cheapest :func:`reversal_cost` over every subset of ``positions`` that keeps x_0: every way to
    discard checkpoints before reversing, so that later segments get more room. Exhaustive."""
    inner = positions[1:]
    return min(
        reversal_cost((0, *kept), n, c)
        for size in range(len(inner) + 1)
        for kept in itertools.combinations(inner, size)
    )


# Table O1 of THEORY 4.3: (c, n) -> (T(n, c), T'(n, c), equinox's scheme, equinox's forward + optimal backward).
TABLE_O1: dict[tuple[int, int], tuple[int, int, int, int]] = {
    (3, 10): (15, 18, 19, 19),
    (3, 20): (45, 49, 54, 54),
    (3, 50): (180, 185, 220, 201),
    (3, 100): (490, 497, 682, 527),
    (3, 200): (1305, 1314, 2282, 1368),
    (3, 500): (4680, 4693, 14699, 5067),
    (5, 10): (13, 15, 15, 15),
    (5, 20): (33, 35, 35, 35),
    (5, 50): (122, 125, 144, 140),
    (5, 100): (316, 320, 360, 347),
    (5, 200): (790, 795, 835, 807),
    (5, 500): (2576, 2583, 3045, 2739),
    (10, 10): (9, 10, 10, 10),
    (10, 20): (28, 30, 30, 30),
    (10, 50): (88, 90, 90, 90),
    (10, 100): (222, 225, 283, 245),
    (10, 200): (522, 525, 686, 597),
    (10, 500): (1636, 1640, 2078, 1743),
}


def _profile(positions: Iterable[tuple[int, tuple[int, ...]]], c: int, bound: list[int]) -> list[float]:
    return [reversal_cost(p, n, c) / bound[n] for n, p in positions]


def _print_tables(nmax: int, cs: tuple[int, ...]) -> None:  # pragma: no cover - prints docs/online.md's table
    import revseq.strategies.online as online

    marks = [m for m in (10**3, 10**4, 10**5, 10**6) if m <= nmax]
    print("| c | exact up to n | worst ratio (at n) | mean | " + " | ".join(f"n = {m:,}" for m in marks), end="")
    print(" | equinox's worst (at n) | its mean | n where ours > equinox's (most) |")
    for c in cs:
        bound = [0] + [online.online_lower_bound(n, c) for n in range(1, nmax + 1)]
        ours_stored = _positions_of(online._placements(c), c, nmax)
        ours = _profile(ours_stored, c, bound)
        theirs = _profile(positions_by_n(equinox_placements(c), c, nmax), c, bound)
        worst = max(range(nmax), key=ours.__getitem__)
        their_worst = max(range(nmax), key=theirs.__getitem__)
        above = [i for i in range(nmax) if ours[i] > theirs[i] + 1e-12]
        most = max((ours[i] / theirs[i] for i in above), default=1.0)
        row = [
            f"{c}",
            f"{(c + 1) * (c + 2) // 2 - 1:,}",
            f"{ours[worst]:.3f} ({worst + 1:,})",
            f"{sum(ours) / nmax:.4f}",
            *(f"{ours[m - 1]:.4f}" for m in marks),
            f"{theirs[their_worst]:.3f} ({their_worst + 1:,})",
            f"{sum(theirs) / nmax:.4f}",
            f"{len(above) / nmax:.1%} (+{most - 1:.1%})",
        ]
        print("| " + " | ".join(row) + " |", flush=True)


def _positions_of(
    placements: Iterable[tuple[int, int | None]], c: int, nmax: int
) -> Iterator[tuple[int, tuple[int, ...]]]:  # pragma: no cover - used by _print_tables
    """Like :func:`positions_by_n` for placements given as ``(step, evicted key)``."""
    held: set[int] = set()
    pending = iter(placements)
    nxt = next(pending, None)
    for n in range(1, nmax + 1):
        while nxt is not None and nxt[0] <= n - 1:
            if nxt[1] is not None:
                held.remove(nxt[1])
            held.add(nxt[0])
            nxt = next(pending, None)
        yield n, tuple(sorted(held))


if __name__ == "__main__":  # pragma: no cover
    _print_tables(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000, (2, 3, 4, 5, 10, 20, 50, 100))
