"""Independent oracles for two-level (memory + disk) checkpointing; nothing here imports revseq.

The cost of a schedule is ``step * advances + write * disk_writes + read *
disk_reads`` (memory is free; the adjoint steps and the call producing x_n
are the same for every schedule and left out). ``ram`` memory slots and
``disk`` disk slots (``None``: unlimited) hold checkpoints; the live state
is extra. The moves are revseq's actions (revseq/schedule.py):

* advance the live state one step (``step``);
* store the live state in memory (free) or on disk (``write``); a state may
  be held at both levels;
* restore a stored state: from memory if it is there (free), else from
  disk (``read``);
* free a state, which drops it from memory and disk alike (revseq's
  ``Free``: there is no way to drop just one copy);
* reverse step ``t`` (the next one) when ``x_t`` is live or stored; reading
  it from disk costs ``read``; the live state stays live.

Three oracles, written from THEORY.md 5.1 and from these rules alone:

* :func:`exhaustive_time`, a shortest-path search over every schedule;
* :func:`nested_times`, a dynamic programme over nested schedules that lets
  every segment keep its first state in memory, on disk or both, with any
  share of the slots (more general than revseq's programme, which it checks
  for lengths the exhaustive search cannot reach);
* :func:`aupy_times`, THEORY 5.1's recurrences for unlimited disk (Aupy,
  Herrmann, Hovland and Robert 2016), with re-readable disk checkpoints or,
  ``read_once=True``, checkpoint_schedules' default that reads each once; and
  :func:`first_sweep_time`, the same recurrence with a disk budget, which
  writes disk checkpoints only on the first sweep.
"""

from __future__ import annotations

import functools
import heapq
import math

from oracles import closed_form_advances

INF = math.inf


def exhaustive_time(n: int, ram: int, disk: int | None, step: float, write: float, read: float) -> float:
    """The least cost of reversing ``n`` steps over every schedule (Dijkstra; tiny n only).

    A state is ``(next, live, memory, on_disk)``: steps ``>= next`` are
    reversed, ``live`` is the live state's index (-1 when it is of no use
    any more), ``memory`` and ``on_disk`` are bit sets of stored indices
    (only indices below ``next`` are kept: the rest can never be needed).
    Frees are made only when a level is full, as part of a store (freeing
    earlier never helps); a free drops both copies, as revseq's does.
    """
    disk_slots = n if disk is None else disk
    start = (n, 0, 0, 0)
    best = {start: 0.0}
    heap = [(0.0, *start)]
    while heap:
        cost, nxt, live, memory, on_disk = heapq.heappop(heap)
        if best.get((nxt, live, memory, on_disk), INF) < cost:
            continue
        if nxt == 0:
            return cost
        moves: list[tuple[float, int, int, int, int]] = []
        if live >= 0:
            bit = 1 << live
            if live + 1 < nxt:
                moves.append((step, nxt, live + 1, memory, on_disk))
            if not memory & bit and ram > 0:
                if memory.bit_count() < ram:
                    moves.append((0.0, nxt, live, memory | bit, on_disk))
                else:
                    for t in range(nxt):
                        if memory >> t & 1:
                            gone = ~(1 << t)
                            moves.append((0.0, nxt, live, (memory & gone) | bit, on_disk & gone))
            if not on_disk & bit and disk_slots > 0:
                if on_disk.bit_count() < disk_slots:
                    moves.append((write, nxt, live, memory, on_disk | bit))
                else:
                    for t in range(nxt):
                        if on_disk >> t & 1:
                            gone = ~(1 << t)
                            moves.append((write, nxt, live, memory & gone, (on_disk & gone) | bit))
        for t in range(nxt):
            if t != live:
                if memory >> t & 1:
                    moves.append((0.0, nxt, t, memory, on_disk))
                elif on_disk >> t & 1:
                    moves.append((read, nxt, t, memory, on_disk))
        top = nxt - 1
        kept = (1 << top) - 1
        after = live if 0 <= live < top else -1
        if live == top or memory >> top & 1:
            moves.append((0.0, top, after, memory & kept, on_disk & kept))
        elif on_disk >> top & 1:
            moves.append((read, top, after, memory & kept, on_disk & kept))
        for extra, *state in moves:
            key = tuple(state)
            total = cost + extra
            if total < best.get(key, INF):
                best[key] = total
                heapq.heappush(heap, (total, *state))
    return INF


def _revolve(n: int, slots: int, step: float) -> float:
    """Revolve's time in memory alone with x_base in one of ``slots`` slots (THEORY 1.1)."""
    if n == 1:
        return 0.0
    if slots == 0:
        return INF
    return step * closed_form_advances(n, slots)


def nested_times(nmax: int, ram: int, disk: int | None, step: float, write: float, read: float) -> list[float]:
    """The least cost over nested schedules for ``n = 0 .. nmax`` (index 0 unused): a DP over where x_base is.

    ``F(n, m, k, s)``: reverse ``n`` steps from a live x_base with ``m``
    memory and ``k`` disk slots (those holding x_base included), x_base kept
    at ``s`` (L: nowhere, M: memory, D: disk, B: both). A split at ``j``
    advances ``j`` steps and reverses the right part with what x_base does
    not hold, restores x_base (a read if it is on disk only) and reverses
    the left part with the same ``m, k, s``. Before a split x_base (live)
    may move: store it at a level (a write for disk), or free it (both
    copies) and store it again.
    """
    unlimited = disk is None
    kinds = ("M", "D", "B")
    # (memory copies, disk copies) of each kind, and what it costs to get there from each kind
    held = {"L": (0, 0), "M": (1, 0), "D": (0, 1), "B": (1, 1)}

    def move(have: str, want: str) -> float:
        (hm, hd), (wm, wd) = held[have], held[want]
        if hm > wm or hd > wd:  # something to drop: free both copies, store afresh
            hm = hd = 0
        return write if wd > hd else 0.0

    @functools.cache
    def split(n: int, m: int, k: int, s: str) -> float:
        sm, sd = held[s]
        if m < sm or (not unlimited and k < sd):
            return INF
        right_m, right_k = m - sm, k if unlimited else k - sd
        restore = 0.0 if sm else read
        best = INF
        for j in range(1, n):
            right = F(n - j, right_m, right_k, "L")
            if right < INF:
                best = min(best, j * step + right + restore + F(j, m, k, s))
        return best

    @functools.cache
    def F(n: int, m: int, k: int, s: str) -> float:
        if n == 1:
            return 0.0
        return min(move(s, want) + split(n, m, k, want) for want in kinds)

    k = 0 if unlimited else disk
    return [INF] + [F(n, ram, k, "L") for n in range(1, nmax + 1)]


def aupy_times(nmax: int, ram: int, step: float, write: float, read: float, *, read_once: bool = False) -> list[float]:
    """THEORY 5.1 with unlimited disk: ``Dinf[n]`` for ``n = 0 .. nmax``, adjoints left out (``ub = 0``).

    ``R[n] = step T(n, ram)``; ``D1[n] = min(R[n], min_j j step + R[n-j] +
    read + D1[j])``; ``Dinf[n] = min(R[n], min_j write + j step + Dinf[n-j]
    + read + LEFT(j))`` with ``LEFT = D1``, or ``LEFT = R`` if ``read_once``.
    """
    R = [INF] + [_revolve(i, ram, step) for i in range(1, nmax + 1)]
    D1 = [INF, 0.0] + [INF] * (nmax - 1)
    Dinf = [INF, 0.0] + [INF] * (nmax - 1)
    left = R if read_once else D1
    for i in range(2, nmax + 1):
        D1[i] = min([R[i]] + [j * step + R[i - j] + read + D1[j] for j in range(1, i)])
        Dinf[i] = min([R[i]] + [write + j * step + Dinf[i - j] + read + left[j] for j in range(1, i)])
    return Dinf


def first_sweep_time(n: int, ram: int, disk: int, step: float, write: float, read: float) -> float:
    """THEORY 5.1's ``Dinf`` given ``disk`` slots, which writes disk checkpoints on the first sweep only.

    ``Dinf_d[n] = min(R[n], min_j write + j step + Dinf_{d-1}[n-j] + read +
    D1[j])``, ``Dinf_0 = R``: the right part of a split runs while x_base
    holds a disk slot, and ``D1`` writes nothing to disk.
    With unlimited disk that loses nothing; with a budget it can.
    """
    R = [INF] + [_revolve(i, ram, step) for i in range(1, n + 1)]
    D1 = [INF, 0.0] + [INF] * (n - 1)
    for i in range(2, n + 1):
        D1[i] = min([R[i]] + [j * step + R[i - j] + read + D1[j] for j in range(1, i)])
    below = R
    for _ in range(disk):
        row = [INF, 0.0] + [INF] * (n - 1)
        for i in range(2, n + 1):
            row[i] = min([R[i]] + [write + j * step + below[i - j] + read + D1[j] for j in range(1, i)])
        below = row
    return below[n]


def budgeted_times(nmax: int, ram: int, disk: int | None, step: float, write: float, read: float) -> list[float]:
    """The programme of revseq's module notes, written again here with plain lists: ``F_L(n, disk)`` for every n.

    ``R_s(n) = step T(n, s)`` (closed form); row ``k`` is a budget of ``k``
    disk slots (``None``: one unlimited row whose right parts use it too)::

        S_M(n, k) = min_j  j step + R_{ram-1}(n-j) + F_L(j, k)
        S_D(n, k) = min_j  j step + F_L(n-j, k-1) + read + F_D(j, k)
        F_L = min(R_ram, S_M, write + S_D)     F_D = min(S_D, R_ram, S_M)     F_L(n, 0) = R_ram(n)

    ``O(nmax^2 disk)``: for checking long plans at a few hundred to a few thousand steps.
    """
    R = [INF] + [_revolve(i, ram, step) for i in range(1, nmax + 1)]
    R1 = [INF] + [_revolve(i, ram - 1, step) if ram else INF for i in range(1, nmax + 1)]  # no memory, no S_M
    rows = 1 if disk is None else disk + 1
    FL = [[INF, 0.0] + [INF] * (nmax - 1) for _ in range(rows)]
    FD = [[INF, 0.0] + [INF] * (nmax - 1) for _ in range(rows)]
    if disk is not None:
        FL[0] = R[:]
    for k in range(0 if disk is None else 1, rows):
        below = FL[k] if disk is None else FL[k - 1]
        fl, fd = FL[k], FD[k]
        for i in range(2, nmax + 1):
            sm = min(j * step + R1[i - j] + fl[j] for j in range(1, i))
            sd = min(j * step + below[i - j] + read + fd[j] for j in range(1, i))
            fl[i] = min(R[i], sm, write + sd)
            fd[i] = min(sd, R[i], sm)
    return FL[rows - 1]


# -- K storage levels ---------------------------------------------------------------------------------


def exhaustive_levels_time(
    n: int, caps: tuple[int | None, ...], writes: tuple[float, ...], reads: tuple[float, ...], step: float = 1.0
) -> float:
    """The least cost of reversing ``n`` steps with K storage levels, over every schedule (Dijkstra; tiny n only).

    Level ``k`` holds at most ``caps[k]`` states (``None``: unlimited),
    costs ``writes[k]`` to store a state there and ``reads[k]`` to read one
    back (level 0, memory, usually free). A state may be held at several
    levels; a restore, or the reversal of a step whose state is not live,
    reads the cheapest copy (revseq reads the lowest level holding it, which
    is the cheapest when reads grow with the level, as in every case
    tested); a free drops every copy. A search state is ``(next, live,
    held)`` with one bit set of stored indices per level, as in
    :func:`exhaustive_time`; frees are made only as part of a store into a
    full level.
    """
    levels = len(caps)
    slots = [n if c is None else c for c in caps]
    start = (n, 0, (0,) * levels)
    best = {start: 0.0}
    heap: list[tuple[float, int, int, tuple[int, ...]]] = [(0.0, *start)]
    while heap:
        cost, nxt, live, held = heapq.heappop(heap)
        if best.get((nxt, live, held), INF) < cost:
            continue
        if nxt == 0:
            return cost
        moves: list[tuple[float, int, int, tuple[int, ...]]] = []

        def read_cost(t: int, held: tuple[int, ...] = held) -> float:
            return min((reads[k] for k in range(levels) if held[k] >> t & 1), default=INF)

        if live >= 0:
            bit = 1 << live
            if live + 1 < nxt:
                moves.append((step, nxt, live + 1, held))
            for k in range(levels):
                if held[k] & bit or slots[k] == 0:
                    continue
                if held[k].bit_count() < slots[k]:
                    moves.append((writes[k], nxt, live, (*held[:k], held[k] | bit, *held[k + 1 :])))
                else:
                    for t in range(nxt):
                        if held[k] >> t & 1:
                            gone = ~(1 << t)
                            dropped = tuple(h & gone for h in held)
                            moves.append((writes[k], nxt, live, (*dropped[:k], dropped[k] | bit, *dropped[k + 1 :])))
        for t in range(nxt):
            if t != live:
                cost_t = read_cost(t)
                if cost_t < INF:
                    moves.append((cost_t, nxt, t, held))
        top = nxt - 1
        kept = (1 << top) - 1
        after = live if 0 <= live < top else -1
        trimmed = tuple(h & kept for h in held)
        if live == top:
            moves.append((0.0, top, after, trimmed))
        else:
            cost_t = read_cost(top)
            if cost_t < INF:
                moves.append((cost_t, top, after, trimmed))
        for extra, *state in moves:
            key = (state[0], state[1], state[2])
            total = cost + extra
            if total < best.get(key, INF):
                best[key] = total
                heapq.heappush(heap, (total, *key))
    return INF
