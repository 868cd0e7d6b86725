"""The multistage planner's programme for an overlapped disk store (``MultistageCheckpointing(depth=k)``).

An :class:`revseq.overlap.OverlappedStore` writes behind the computation
and reads ahead of it on one background thread, so a write or a read costs
only what the computation around it does not hide (THEORY.md 6.2). The
programme here solves the synchronous programme's segments (x_base kept in
memory, on disk, or revolve) with I/O priced that way, in ``ram - depth``
memory slots, into the same :class:`revseq.strategies.multistage._Table`
that runs and counts the plan. Overlapped costs do not add up, so its
value is an estimate: the strategy reports the event simulation
:func:`revseq.overlap.overlapped_time` of its actions (cached here in
:data:`SIMULATED`), and docs/storage.md, "Overlapped I/O", has its checks
against that simulation and against exhaustive search.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from revseq.strategies._multistage_plans import Plan, RamOnly
from revseq.strategies.multistage import (
    _CACHE_LOCK,
    _CACHE_SIZE,
    _DISK,
    _INF,
    _MEMORY,
    _REVOLVE,
    EXACT_WORK,
    DiskCosts,
    _check_work,
    _plans_for,
    _revolve_times,
    _Table,
)

__all__ = ["OVERLAP_WORK", "SIMULATED", "overlapped_plan", "overlapped_programme"]


_KEPT = 32
"""Right parts up to this many steps are taken to leave a just-written ``x_base`` in its buffer for its read.

``OverlappedStore`` keeps a write whose key the engine expects to read soon
(within its lookahead of 256 actions) instead of reading it back; revolve
makes a few actions per step.
"""

_WRITE_NOW = 2  # index of the overlap programme's third split: x_base written to disk at the segment's start


def overlapped_programme(
    table: _Table, ram: int, disk: int | None, ratios: tuple[float, float, float], ub: float, size: int
) -> None:
    """Fill ``table`` with the overlap-aware programme: I/O priced by what the computation around it hides.

    The same segments as the synchronous programme (x_base kept in memory,
    on disk, or revolve), with I/O priced as an ``OverlappedStore`` runs it
    (one I/O channel, writes behind, reads ahead; THEORY.md 6.2). Each
    sub-plan carries, besides its time ``V`` (adjoints left out), the
    computation before its first I/O (``head``: what hides a write still
    running when it starts) and after its last disk read (``tail``: what
    hides the read of x_base that follows it), adjoints included (``ub``
    each). A segment that writes x_base now, advances ``j`` and reverses
    its right part ``P`` pays ``max(0, write - j uf - head(P))`` for the
    write, and ``max(0, read - tail(P))`` for reading x_base back::

        S_W(n, k) = min_j  j uf + V(P) + exposed(write) + exposed(read) + F_D(j, k)   (own split)
        S_D(n, k) = min_j  j uf + V(P) + exposed(read) + F_D(j, k)       x_base on disk already
        F_L = min(R, S_M, S_W)        F_D = min(S_D, R, S_M)

    with ``P`` the plan for ``F_L(n-j, k-1)`` chosen in the context "a disk
    read follows": sub-plans are chosen twice, by ``V`` alone (context 0)
    and by ``V + max(0, read - tail)`` (context 1, right parts and their
    left parts), so that a right part that leaves time to hide the next
    read can win over a faster one that does not. A right part without
    I/O hides the write and the read together (the read starts when the
    write is done; a short one leaves x_base in its buffer, unread, as the
    store does). The value is an estimate: it ignores reads ahead that wait
    for a buffer and the queueing of consecutive I/Os on the channel, so the
    strategy reports the event simulation
    (:func:`revseq.overlap.overlapped_time`) of its actions instead.
    """
    rows = 1 if disk is None else disk + 1
    _check_work(size, rows, ram, disk)
    table.ram, table.size, table.fresh, table.contexts = ram, size, _WRITE_NOW, 2
    table.row = 0 if disk is None else disk
    uf, w, r = ratios
    shape = (2, rows, size + 1)  # [context, row, length]
    val_l, val_d = np.full(shape, _INF), np.full(shape, _INF)
    val_l[:, :, 1] = val_d[:, :, 1] = 0.0
    head_l = np.full(shape, ub)  # computation before the first I/O (all of it, for a plan without I/O)
    tail_l, tail_d = np.full(shape, ub), np.full(shape, ub)  # computation after the last disk read (likewise)
    io_l, io_d = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    choice = table.choice = np.zeros((4, rows, size + 1), dtype=np.int8)  # [2 context + (x_base on disk)]
    split = table.split = np.zeros((6, rows, size + 1), dtype=np.int32)  # [3 context + kind]
    whole = _revolve_times(size, ram, uf)
    steps = np.arange(size + 1, dtype=float)
    if disk is None:
        computed = below = slice(0, 1)
    else:
        val_l[:, 0] = whole
        head_l[:, 0] = tail_l[:, 0] = whole + ub * steps
        computed, below = slice(1, rows), slice(0, rows - 1)
    smaller = _revolve_times(size, ram - 1, uf) if ram else np.full(size + 1, _INF)
    width = rows - (disk is not None)
    arange = np.arange(width)
    rows_at = np.arange(rows)[computed]
    for n in range(2, size + 1 if width else 2):
        j = steps[1:n]  # the advance; the right part has m = n - j steps (read backwards: n-1 .. 1)
        right = slice(n - 1, 0, -1)
        m = steps[right]
        vr, hr, tr, ir = val_l[1, below, right], head_l[1, below, right], tail_l[1, below, right], io_l[1, below, right]
        ahead = uf * j + vr + ub * m  # from the segment's start to the end of its right part
        unread = np.where(m > _KEPT, r, 0.0)  # a short right part without I/O: x_base stays in its buffer
        right_d = vr + np.where(ir, np.maximum(0.0, r - tr), np.maximum(0.0, r - ahead))
        right_w = vr + np.where(
            ir, np.maximum(0.0, w - uf * j - hr) + np.maximum(0.0, r - tr), np.maximum(0.0, w + unread - ahead)
        )
        rv = whole[n]
        plain_total = rv + ub * n
        for ctx in (0, 1):
            follow = float(ctx)  # weight of the read that follows this sub-plan
            left = val_d[ctx, computed, 1:n]
            tail_left = np.where(io_d[ctx, computed, 1:n], tail_d[ctx, computed, 1:n], left + ub * j)
            late = follow * np.maximum(0.0, r - tail_left)
            t = uf * j + right_d + left
            jd = (t + late).argmin(axis=1)
            sd, kd = t[arange, jd], (t + late)[arange, jd]
            t = uf * j + right_w + left
            jw = (t + late).argmin(axis=1)
            sw, kw = t[arange, jw], (t + late)[arange, jw]
            left_m = val_l[ctx, computed, 1:n]
            io_m_all = io_l[ctx, computed, 1:n]
            t = uf * j + smaller[right] + left_m
            tail_m_all = np.where(io_m_all, tail_l[ctx, computed, 1:n], t + ub * n)
            key = t + follow * np.maximum(0.0, r - tail_m_all)
            jm = key.argmin(axis=1)
            sm, km = t[arange, jm], key[arange, jm]
            io_m, tail_m = io_m_all[arange, jm], tail_m_all[arange, jm]
            head_m = np.where(
                io_m,
                uf * (jm + 1) + smaller[n - 1 - jm] + ub * (n - 1 - jm) + head_l[ctx, rows_at, jm + 1],
                sm + ub * n,
            )
            kr = rv + follow * max(0.0, r - plain_total)
            tail_w = np.where(
                io_d[ctx, rows_at, jw + 1], tail_d[ctx, rows_at, jw + 1], val_d[ctx, rows_at, jw + 1] + ub * (jw + 1)
            )
            tail_s = np.where(
                io_d[ctx, rows_at, jd + 1], tail_d[ctx, rows_at, jd + 1], val_d[ctx, rows_at, jd + 1] + ub * (jd + 1)
            )
            split[3 * ctx + _MEMORY, computed, n] = jm + 1
            split[3 * ctx + _DISK, computed, n] = jd + 1
            split[3 * ctx + _WRITE_NOW, computed, n] = jw + 1
            # F_L: revolve, x_base in memory, or x_base written to disk now (ties: revolve, then memory)
            to_disk = kw < km
            plain = kr <= np.where(to_disk, kw, km)
            val_l[ctx, computed, n] = np.where(plain, rv, np.where(to_disk, sw, sm))
            choice[2 * ctx + 0, computed, n] = np.where(plain, _REVOLVE, to_disk)
            io_l[ctx, computed, n] = ~plain & (to_disk | io_m)
            head_l[ctx, computed, n] = np.where(plain, plain_total, np.where(to_disk, 0.0, head_m))
            tail_l[ctx, computed, n] = np.where(plain, plain_total, np.where(to_disk, tail_w, tail_m))
            # F_D: x_base stays on disk, or revolve, or moves to memory (ties: the choice with less I/O)
            stay = kd < np.minimum(kr, km)
            plain = ~stay & (kr <= km)
            val_d[ctx, computed, n] = np.where(stay, sd, np.where(plain, rv, sm))
            choice[2 * ctx + 1, computed, n] = np.where(stay, _DISK, np.where(plain, _REVOLVE, _MEMORY))
            io_d[ctx, computed, n] = stay | (~plain & io_m)
            tail_d[ctx, computed, n] = np.where(stay, tail_s, np.where(plain, plain_total, tail_m))
    table.FL, table.FD = val_l[0], val_d[0]
    table.peak = table.peak_d = np.zeros((0, 0), dtype=np.int32)  # not kept: tally() counts the peaks
    table.unlimited = disk is None
    table._memo = {}
    table._templates = {}


OVERLAP_WORK = EXACT_WORK // 4
"""The largest overlap-aware programme (``depth > 0``) solved by default: ``n = 4096`` with unlimited disk.

It does about five times the synchronous programme's work per term (two
contexts, three splits): about two seconds at ``n = 4096``. Longer runs,
unless ``exact=True``, get the synchronous long-run plan with ``ram -
depth`` memory checkpoints.
"""

SIMULATED: OrderedDict[tuple[Any, ...], float] = OrderedDict()  # MultistageCheckpointing._overlapped_time
_OVERLAP_TABLES: OrderedDict[tuple[Any, ...], _Table] = OrderedDict()


def _overlap_table(slots: int, disk: int | None, ratios: tuple[float, float, float, float], n: int) -> _Table:
    """The overlap-aware programme's table for ``slots`` memory checkpoints, at least ``n`` long, cached."""
    key = (slots, disk, ratios)
    with _CACHE_LOCK:
        table = _OVERLAP_TABLES.get(key)
        if table is None or table.size < n:
            table = _OVERLAP_TABLES[key] = _Table(slots, disk, ratios[:3], max(n, 64), adjoint=ratios[3])
        _OVERLAP_TABLES.move_to_end(key)
        while len(_OVERLAP_TABLES) > _CACHE_SIZE:
            _OVERLAP_TABLES.popitem(last=False)
        return table


def overlapped_plan(ram: int, depth: int, disk: int | None, costs: DiskCosts, exact: bool, n: int) -> Plan:
    """The plan for an overlapped store with ``depth`` buffers: ``ram - depth`` memory checkpoints.

    The overlap-aware programme's plan where it fits in :data:`EXACT_WORK`
    (or ``exact``), else the synchronous long-run plan with ``ram - depth``
    checkpoints; or revolve with all ``ram`` in memory, which touches no
    disk and so needs no buffer, when the programme finds it faster.
    """
    slots = ram - depth
    ratios = costs._overlap_ratios()
    rows = 1 if disk is None else disk + 1
    if exact or n * n <= OVERLAP_WORK:
        plan: Plan = _overlap_table(slots, None, ratios, n)
        if disk is not None and disk < plan.counts(n).peak_disk:
            if not exact and rows * n * n > OVERLAP_WORK:
                plan = _plans_for(slots, disk, costs, exact).plan(n)
            else:
                plan = _overlap_table(slots, disk, ratios, n)
    else:
        plan = _plans_for(slots, disk, costs, exact).plan(n)
    memory = RamOnly(ram, ratios[0])
    return memory if memory.time(n) <= plan.time(n) else plan
