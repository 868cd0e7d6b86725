"""Plans for :class:`~revseq.strategies.multistage.MultistageCheckpointing` with three or more storage levels.

Level 0 is memory (free to write and read, ``c_0`` slots), levels ``1 ..
K-1`` are slower stores (``c_k`` slots, ``None`` for no limit, a write
costing ``w_k`` and a read ``r_k``, in forward steps). Two levels are the
two-level programme of ``multistage._Table``; this module generalises it.

The programme. ``G(n, k, m, h)`` is the least time to reverse ``n`` steps
from a live ``x_base`` using levels ``0 .. k`` only, with ``m`` slots at
level ``k`` (x_base's included when it is there) and every lower level
free, x_base already kept at level ``h`` (or nowhere, ``h = L``). A segment
either reverses itself in memory alone (revolve, ``R(n) = T(n, c_0)``), or
keeps x_base at a level ``g <= k`` (a write ``w_g`` unless it is there
already; a copy elsewhere is freed first), advances ``j`` steps, reverses
the right part with the levels up to ``g`` only and one slot fewer at
``g``, reads x_base back (``r_g``) and reverses the left part as before::

    S_g(n, k, m) = min_j  j + G(n-j, g, slots_g - 1, L) + r_g + G(j, k, m, g)
                   (slots_g = m if g == k else c_g;  G(n', 0, s, .) = T(n', s), revolve)
    G(n, k, m, h) = min(R(n), min_g  [h != g] w_g + S_g(n, k, m))

With two levels this is exactly ``multistage._Table``'s programme (``g =
0`` is its ``S_M``, ``g = 1`` its ``S_D``). The restriction it makes, that
a right part uses no level deeper than where its x_base is kept (a state
held longer goes to a slower level, as in Herrmann and Pallez's H-Revolve),
is checked, not proven: the tests compare the programme with an exhaustive
search over every schedule of revseq's actions for three levels and small
``n`` (``tests/multistage_oracles.py``).

It costs ``O(n^2 * sum_k (c_k + 1)(k + 1))`` terms (an unlimited level
counts as one slot row): exact up to :data:`EXACT_LEVELS_WORK` by default.
Longer runs get the better of two plans built from exact tables (see
:class:`LevelsPlans`): the periodic plan of the two-level module over the
K-level table (the deepest level unlimited), and each two-level plan of
memory and one other level.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from revseq.errors import ParameterError
from revseq.schedule import Action, Advance, Free, Restore, Reverse, Store
from revseq.strategies._multistage_plans import revolve_blocks
from revseq.strategies.binomial import _split as _binomial_split
from revseq.strategies.binomial import revolve, revolve_advances

_INF = math.inf
_Floats = npt.NDArray[np.float64]

EXACT_LEVELS_WORK = 2**25
"""The largest K-level programme solved exactly by default: ``n**2`` times the rows (about a second)."""

MAX_LEVELS_WORK = 2**31
"""The largest K-level programme ``exact=True`` accepts (about a minute)."""

_REVOLVE = -1  # choice: reverse the segment in memory alone
LIVE = -1  # h: x_base kept nowhere yet


class LevelSpec(NamedTuple):
    """One level as the planner sees it: slots (None: unlimited) and its write and read in steps."""

    slots: int | None
    write: float
    read: float


def _revolve_times(size: int, slots: int) -> _Floats:
    """``T(n, slots)`` for ``n = 0 .. size`` (index 0 unused; inf without a slot unless ``n = 1``)."""
    times = np.full(size + 1, _INF)
    times[1] = 0.0
    if slots >= 1:
        for n in range(2, size + 1):
            times[n] = revolve_advances(n, slots)
    return times


def rows(levels: tuple[LevelSpec, ...]) -> int:
    """The number of slot rows of the programme (its work is ``n**2`` times this)."""
    return sum((1 if spec.slots is None else spec.slots + 1) * (k + 1) for k, spec in enumerate(levels) if k)


class LevelsTable:
    """Values and choices of the K-level programme for every length up to ``size``.

    ``value[k][h + 1, row, n]`` is ``G(n, k, m, h)`` (row ``m``; the one row
    0 of an unlimited level stands for any ``m``); ``choice`` holds the level
    ``g`` kept (or ``_REVOLVE``) and ``split`` the ``j`` of ``S_g``.
    """

    def __init__(self, levels: tuple[LevelSpec, ...], size: int, limit: int) -> None:
        work = size * size * rows(levels)
        if work > limit:
            raise ParameterError(
                f"n={size} is too long to plan exactly over {len(levels)} levels: about {work:.1e} terms of "
                f"dynamic programming, over the limit of {limit:.0e}; give fewer slots to the bounded levels, "
                f"or leave exact=False"
            )
        self.levels, self.size = levels, size
        K = len(levels)
        ram = levels[0].slots
        assert ram is not None
        self.ram = ram
        self.memory = [_revolve_times(size, s) for s in range(ram + 1)]  # T(n, s) for s <= ram
        whole = self.memory[ram]
        self.value: list[_Floats] = [np.empty((0, 0, 0))]
        self.choice: list[npt.NDArray[np.int8]] = [np.empty((0, 0, 0), dtype=np.int8)]
        self.split: list[npt.NDArray[np.int32]] = [np.empty((0, 0, 0), dtype=np.int32)]
        for k in range(1, K):
            count = self._rows(k)
            self.value.append(np.full((k + 2, count, size + 1), _INF))
            self.value[k][:, :, 1] = 0.0
            self.choice.append(np.full((k + 2, count, size + 1), _REVOLVE, dtype=np.int8))
            self.split.append(np.zeros((k + 1, count, size + 1), dtype=np.int32))
        ramp = np.arange(size + 1, dtype=float)
        for n in range(2, size + 1):
            js = ramp[1:n]
            for k in range(1, K):
                value, choice, split = self.value[k], self.choice[k], self.split[k]
                for row in range(self._rows(k)):
                    best_g = np.full(k + 1, _INF)
                    for g in range(k + 1):
                        slots = self._slots(k, row) if g == k else levels[g].slots
                        if slots is not None and slots < 1:
                            continue
                        right = self._right(k, row, g)[n - 1 : 0 : -1]  # lengths n-1 .. 1 for j = 1 .. n-1
                        t = js + right + value[g + 1, row, 1:n]
                        j = int(t.argmin())
                        best_g[g] = t[j] + levels[g].read
                        split[g, row, n] = j + 1
                    for h in range(-1, k + 1):
                        moved = best_g + np.array([0.0 if h == g else levels[g].write for g in range(k + 1)])
                        g = int(moved.argmin())
                        if whole[n] <= moved[g]:  # ties: revolve in memory alone
                            value[h + 1, row, n], choice[h + 1, row, n] = whole[n], _REVOLVE
                        else:
                            value[h + 1, row, n], choice[h + 1, row, n] = moved[g], g

    def _rows(self, k: int) -> int:
        slots = self.levels[k].slots
        return 1 if slots is None else slots + 1

    def _slots(self, k: int, row: int) -> int | None:
        """The slots of ``row`` at level ``k`` (None: unlimited)."""
        return None if self.levels[k].slots is None else row

    def _below(self, k: int, row: int) -> int:
        """The row with one slot fewer (an unlimited level's one row stays)."""
        return row if self.levels[k].slots is None else row - 1

    def _top(self, k: int) -> int:
        """The row of level ``k`` with all its slots."""
        slots = self.levels[k].slots
        return 0 if slots is None else slots

    def _right(self, k: int, row: int, g: int) -> _Floats:
        """``G(., g, slots - 1, L)``: a right part's values when x_base is kept at level ``g``."""
        if g == 0:
            return self.memory[self.ram - 1] if self.ram else np.full(self.size + 1, _INF)
        below = self._below(g, row if g == k else self._top(g))
        values: _Floats = self.value[g][0, below]
        return values

    def time(self, n: int) -> float:
        """``G(n, K-1, c_{K-1}, L)``: the least time of ``n`` steps, the call producing ``x_n`` left out."""
        k = len(self.levels) - 1
        return float(self.value[k][0, self._top(k), n])

    def kept_time(self, n: int) -> float:
        """``G(n, K-1, c_{K-1}, K-1)``: the same from an x_base already kept at the deepest level."""
        k = len(self.levels) - 1
        return float(self.value[k][k + 1, self._top(k), n])

    def actions(self, n: int) -> Iterator[Action]:
        k = len(self.levels) - 1
        return self.run(0, n, k, self._top(k), LIVE)

    def run(self, base: int, length: int, k: int, row: int, have: int) -> Iterator[Action]:
        """The actions reversing ``x_base .. x_{base+length-1}`` from a live x_base (kept at ``have``)."""
        ram = self.ram
        stack: list[tuple[int, int, int, int, int] | Restore] = [(base, length, k, row, have)]
        pop, push = stack.pop, stack.append
        while stack:
            task = pop()
            if isinstance(task, Restore):
                yield task
                continue
            base, length, k, row, have = task
            if length == 1:
                yield Reverse(base, base + 1)
                continue
            if k == 0:  # memory alone, ``row`` slots
                if have == LIVE:
                    yield Store(base)
                yield from revolve(base, length, row)
                continue
            g = int(self.choice[k][have + 1, row, length])
            if g == _REVOLVE:  # (a copy at a deeper level may stay: nothing here needs its slot)
                if have != 0:
                    yield Store(base)
                yield from revolve(base, length, ram)
                continue
            if g != have:
                if have != LIVE:
                    yield Free(base, base + 1)
                yield Store(base, level=g)
            j = int(self.split[k][g, row, length])
            yield Advance(base, base + j)
            push((base, j, k, row, g))
            push(Restore(base))  # a read at level g
            if g == 0:
                right = (base + j, length - j, 0, ram - 1, LIVE)
            elif g == k:
                right = (base + j, length - j, k, self._below(k, row), LIVE)
            else:
                right = (base + j, length - j, g, self._below(g, self._top(g)), LIVE)
            push(right)


class PeriodicLevels:
    """The deepest level unlimited, beyond the exact table: periods of ``m`` steps kept there (THEORY 6.1).

    As the two-level module's ``Periodic``: the first sweep stores ``x_0,
    x_m, x_2m, ...`` at the deepest level, the last ``n'`` steps (``N - m <
    n' <= N``) are reversed by the exact table, then each period from its
    copy. Its time is ``K (w + r + m + G_kept(m)) + G(n')``.
    """

    def __init__(self, table: LevelsTable) -> None:
        self.table, self.size = table, table.size
        deepest = table.levels[-1]
        self.level = len(table.levels) - 1
        top = self.size // 2
        lengths = range(1, top + 1)
        rates = [(deepest.write + deepest.read + m + table.kept_time(m)) / m for m in lengths]
        best = min(rates)
        self.m = max(i for i, rate in zip(lengths, rates, strict=True) if rate <= best * (1 + 1e-12))
        self.period = deepest.write + deepest.read + self.m + table.kept_time(self.m)

    def _split(self, n: int) -> tuple[int, int]:
        k = max(0, -(-(n - self.size) // self.m))
        return k, n - k * self.m

    def time(self, n: int) -> float:
        k, rest = self._split(n)
        return k * self.period + self.table.time(rest)

    def actions(self, n: int) -> Iterator[Action]:
        k, rest = self._split(n)
        m, table, level = self.m, self.table, self.level
        top = table._top(level)
        for i in range(k):
            yield Store(i * m, level=level)
            yield Advance(i * m, (i + 1) * m)
        yield from table.run(k * m, rest, level, top, LIVE)
        for i in reversed(range(k)):
            yield Restore(i * m)
            yield from table.run(i * m, m, level, top, level)


class NestedLevels:
    """The deepest level bounded, beyond the exact table: binomial checkpointing over blocks kept there.

    The K-level form of the two-level module's ``Nested``: ``n`` steps are
    ``ceil(n / B)`` blocks; revolve over the blocks keeps block starts at the
    deepest level with ``s`` of its slots (x_0's included), and each block
    is reversed by the exact table with the other ``c - s`` slots of the
    deepest level (one more when the block's start is kept there, which
    holds it) and every other level in full. :meth:`time` follows
    :meth:`actions` exactly, through revolve's recursion over the blocks.
    """

    def __init__(self, table: LevelsTable, block: int, slots: int) -> None:
        self.table, self.block, self.slots = table, block, slots
        self.level = level = len(table.levels) - 1
        capacity = table.levels[level].slots
        assert capacity is not None
        assert 1 <= slots <= capacity
        self.row_live, self.row_kept = capacity - slots, capacity - slots + 1
        spec = table.levels[level]
        self.write, self.read = spec.write, spec.read

    def _blocks(self, n: int) -> tuple[int, int]:
        k = -(-n // self.block)
        return k, n - (k - 1) * self.block

    def time(self, n: int) -> float:
        k, last = self._blocks(n)
        table, b, w, r, level = self.table, self.block, self.write, self.read, self.level
        block_live = float(table.value[level][0, self.row_live, b])
        block_kept = float(table.value[level][level + 1, self.row_kept, b])
        last_live = float(table.value[level][0, self.row_live, last])

        def reverse_block(stored: bool, rightmost: bool) -> float:
            return last_live if rightmost else block_kept if stored else block_live

        memo: dict[tuple[int, int, bool, bool], float] = {}
        stack = [(k, self.slots, k > 1, True)]
        while stack:
            task = stack[-1]
            if task in memo:
                stack.pop()
                continue
            length, s, stored, rightmost = task
            if length == 1:
                memo[task] = reverse_block(stored, rightmost)
            elif s >= length - 1:  # keep every block start, then reverse them last first
                keep = length - 2
                memo[task] = (
                    (length - 1) * b
                    + w * keep
                    + r * (keep + 1)
                    + reverse_block(False, rightmost)
                    + (length - 1) * block_kept
                )
            elif s == 1:  # sweep from x_base for each block, last first
                total = 0.0
                for t in range(length - 1, 0, -1):
                    total += t * b + r * (t < length - 1) + reverse_block(False, rightmost and t == length - 1)
                memo[task] = total + r + block_kept
            else:
                j = _binomial_split(length, s)
                right = (length - j, s - 1, length - j > 1, rightmost)
                left = (j, s, True, False)
                missing = [part for part in (right, left) if part not in memo]
                if missing:
                    stack.extend(missing)
                    continue
                memo[task] = j * b + w * (length - j > 1) + r + memo[right] + memo[left]
            stack.pop()
        return w * (k > 1) + memo[(k, self.slots, k > 1, True)]

    def actions(self, n: int) -> Iterator[Action]:
        k, last = self._blocks(n)
        b, table, level = self.block, self.table, self.level

        def reverse_block(i: int, stored: bool) -> Iterator[Action]:
            if i == k - 1:
                return table.run(i * b, last, level, self.row_live, LIVE)
            if stored:
                return table.run(i * b, b, level, self.row_kept, level)
            return table.run(i * b, b, level, self.row_live, LIVE)

        return revolve_blocks(k, self.slots, b, level, reverse_block)


class Relabelled:
    """A two-level plan (memory and level 1) whose disk checkpoints go to level ``level`` instead."""

    def __init__(self, plan: object, level: int, write: float, read: float) -> None:
        self.plan, self.level, self.write, self.read = plan, level, write, read

    def time(self, n: int) -> float:
        counts = self.plan.counts(n)  # type: ignore[attr-defined]
        return float(counts.steps + self.write * counts.disk_writes + self.read * counts.disk_reads)

    def actions(self, n: int) -> Iterator[Action]:
        level = self.level
        for action in self.plan.actions(n):  # type: ignore[attr-defined]
            if type(action) is Store and action[1]:
                yield Store(action[0], level=level)
            else:
                yield action


class LevelsPlans:
    """What is planned for one K-level configuration: the exact table, grown as needed, and long-run plans."""

    def __init__(self, levels: tuple[LevelSpec, ...], exact: bool) -> None:
        self.levels, self.exact = levels, exact
        self._table: LevelsTable | None = None
        self._periodic: PeriodicLevels | None = None
        self._lock = threading.Lock()
        self.costs: OrderedDict[object, Any] = OrderedDict()  # simulated costs by n, a few

    def remember(self, key: object, value: Any) -> None:
        with self._lock:
            self.costs[key] = value
            while len(self.costs) > 16:
                self.costs.popitem(last=False)

    def table(self, n: int) -> LevelsTable:
        with self._lock:
            if self._table is None or self._table.size < n:
                limit = MAX_LEVELS_WORK if self.exact else max(EXACT_LEVELS_WORK, n * n * rows(self.levels))
                self._table = LevelsTable(self.levels, max(n, 16), limit)
            return self._table

    def fits(self, n: int) -> bool:
        return self.exact or n * n * rows(self.levels) <= EXACT_LEVELS_WORK

    def plan(self, n: int) -> LevelsTable | PeriodicLevels | NestedLevels | Relabelled:
        if self.fits(n):
            return self.table(n)
        from revseq.strategies.multistage import DiskCosts, _plans_for  # the two-level planner

        ram = self.levels[0].slots
        assert ram is not None
        candidates: list[LevelsTable | PeriodicLevels | NestedLevels | Relabelled] = []
        if self.levels[-1].slots is None:
            if self._periodic is None:
                size = math.isqrt(EXACT_LEVELS_WORK // rows(self.levels))
                self._periodic = PeriodicLevels(self.table(size))
            candidates.append(self._periodic)
        else:
            candidates += self._nested(n)
        for k, spec in enumerate(self.levels[1:], 1):
            if ram == 0 and spec.slots == 0:
                continue
            two = _plans_for(ram, spec.slots, DiskCosts(1.0, spec.write, spec.read), False).plan(n)
            candidates.append(Relabelled(two, k, spec.write, spec.read))
        return min(candidates, key=lambda plan: plan.time(n))

    def _nested(self, n: int) -> list[NestedLevels]:
        """The best :class:`NestedLevels` over a grid of block lengths and outer slots (none if none fits)."""
        capacity = self.levels[-1].slots
        if not capacity:
            return []
        table = self.table(math.isqrt(EXACT_LEVELS_WORK // rows(self.levels)))
        blocks = sorted({b for b in (round(1.25**i) for i in range(40)) if 2 <= b <= table.size and b < n})
        slots = sorted({s for s in range(1, min(capacity, 8) + 1)} | {round(capacity * 0.8**i) for i in range(30)})
        best: NestedLevels | None = None
        best_time = _INF
        for b in blocks:
            for s in slots:
                if not 1 <= s <= capacity:
                    continue
                plan = NestedLevels(table, b, s)
                time = plan.time(n)
                if time < best_time:
                    best, best_time = plan, time
        return [] if best is None else [best]


_CACHE: OrderedDict[tuple[tuple[LevelSpec, ...], bool], LevelsPlans] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def plans_for(levels: tuple[LevelSpec, ...], exact: bool) -> LevelsPlans:
    """The plans of this configuration, cached (a few configurations)."""
    key = (levels, exact)
    with _CACHE_LOCK:
        plans = _CACHE.get(key)
        if plans is None:
            plans = _CACHE[key] = LevelsPlans(levels, exact)
        _CACHE.move_to_end(key)
        while len(_CACHE) > 8:
            _CACHE.popitem(last=False)
        return plans
