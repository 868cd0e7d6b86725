"""Plans for :class:`~revseq.strategies.multistage.MultistageCheckpointing` too long for the exact programme.

The exact programme (``multistage._Table``) costs ``O(n^2)`` with unlimited
disk and ``O(n^2 disk)`` with a binding budget. Past a few thousand steps
the strategy plans with one of these, each built on an exact table of a few
thousand steps, each emitting its actions lazily and counting its cost from
the table's counts (``O(1)`` or ``O(number of distinct sub-problems)``, never
a walk over the actions):

* :class:`Periodic`, unlimited disk (Aupy and Herrmann 2017, THEORY 6.1):
  write ``x_0, x_m, x_2m, ...`` to disk on the first sweep, reverse the last
  ``n'`` steps (``N - m < n' <= N``) by the exact table, then each period
  from its disk copy by the exact table;
* :class:`Nested`, a binding disk budget: binomial checkpointing over blocks
  of ``B`` steps with ``s`` of the disk slots (x_0's included), each block
  reversed by the exact budgeted table with the other ``disk - s``;
* :class:`RamOnly`, revolve in memory alone, when disk does not pay.

A plan answers ``time(n)`` (the planner's objective, in its unit),
``counts(n)`` (the :class:`Counts` of its actions) and ``actions(n)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, NamedTuple, Protocol

from revseq.schedule import Action, Advance, Free, Restore, Reverse, Store
from revseq.strategies._patterns import sweeps
from revseq.strategies.binomial import _split, revolve, revolve_advances, revolve_counts

if TYPE_CHECKING:
    from revseq.strategies.multistage import _Table

# Where a segment keeps its first state x_base (live at the segment's start) while it splits,
# or _REVOLVE: in memory, reversing the whole segment in memory alone.
MEMORY, DISK, REVOLVE = 0, 1, 2
LIVE = 3  # not kept yet: the start of a segment


class Counts(NamedTuple):
    """What a (part of a) plan does: advances, memory and disk writes and reads, and the peaks it holds.

    Peaks count what the part holds at once, ``x_base``'s copy included when
    the part starts with it stored; a caller holding ``h`` more adds ``h``.
    """

    steps: int = 0
    writes: int = 0
    reads: int = 0
    disk_writes: int = 0
    disk_reads: int = 0
    peak: int = 0
    peak_disk: int = 0

    def then(self, other: Counts, *, held: int = 0, held_disk: int = 0) -> Counts:
        """This part, then ``other`` run while ``held`` and ``held_disk`` more are kept."""
        return Counts(
            self.steps + other.steps,
            self.writes + other.writes,
            self.reads + other.reads,
            self.disk_writes + other.disk_writes,
            self.disk_reads + other.disk_reads,
            max(self.peak, other.peak + held),
            max(self.peak_disk, other.peak_disk + held_disk),
        )

    def times(self, k: int) -> Counts:
        """``k`` runs of this part one after the other, nothing held between them."""
        return Counts(
            self.steps * k,
            self.writes * k,
            self.reads * k,
            self.disk_writes * k,
            self.disk_reads * k,
            self.peak if k else 0,
            self.peak_disk if k else 0,
        )


class Plan(Protocol):
    def time(self, n: int) -> float: ...

    def counts(self, n: int) -> Counts: ...

    def actions(self, n: int) -> Iterator[Action]: ...


_new = tuple.__new__
_TWO = (Advance, Free, Reverse)  # actions with two step indices (and Advance's keep); Store and Restore have one


def shifted(template: tuple[Action, ...], base: int) -> Iterator[Action]:
    """The actions of ``template`` (a sub-plan made at ``x_0``) moved to start at ``x_base``."""
    for action in template:
        kind = type(action)
        fields: tuple[int | bool, ...] = tuple(action)
        if kind in _TWO:
            yield _new(kind, (fields[0] + base, fields[1] + base, *fields[2:]))
        else:
            yield _new(kind, (fields[0] + base, *fields[1:]))


def revolve_tally(length: int, slots: int, *, store: bool) -> Counts:
    """:func:`revolve` of ``length`` steps from a stored ``x_base`` (``store``: the Store of x_base included)."""
    if length == 1:
        return Counts()
    peak, writes, reads = revolve_counts(length, slots)
    return Counts(revolve_advances(length, slots), writes + store, reads, 0, 0, peak, 0)


class RamOnly:
    """Revolve in memory alone: ``BinomialCheckpointing(ram)``'s schedule."""

    def __init__(self, ram: int, uf: float) -> None:
        self.ram, self.uf = ram, uf

    def time(self, n: int) -> float:
        return self.uf * revolve_advances(n, self.ram) if self.ram or n == 1 else math.inf

    def counts(self, n: int) -> Counts:
        return revolve_tally(n, self.ram, store=True)

    def actions(self, n: int) -> Iterator[Action]:
        if n > 1:
            yield Store(0)
        yield from revolve(0, n, self.ram)


class Periodic:
    """Unlimited disk beyond the exact table: periods of ``m`` steps, each kept on disk (THEORY 6.1).

    ``table`` is the exact unlimited-disk table up to ``N = table.size``;
    ``n`` steps are ``K`` periods and a remainder ``n' = n - K m`` with
    ``N - m < n' <= N``, reversed first (by the table, from a live state);
    then each period is read back and reversed by the table from its disk
    copy. Its time is ``K (write + read + m uf + F_D(m)) + F_L(n')``: the
    table's own choice at ``n`` whenever ``F_L(n) - F_L(n - m) = write +
    read + m uf + F_D(m)`` holds past ``N`` (``verified`` says whether it
    holds over the table's second half).
    """

    def __init__(self, table: _Table, ratios: tuple[float, float, float]) -> None:
        uf, w, r = ratios
        self.table, self.size = table, table.size
        FL, FD = table.FL[0], table.FD[0]
        top = self.size // 2
        lengths = range(1, top + 1)
        rates = [(w + r + uf * m + FD[m]) / m for m in lengths]
        best = min(rates)
        # the longest of the best periods (THEORY 6.1's choice on ties), within rounding
        self.m = m = max(i for i, rate in zip(lengths, rates, strict=True) if rate <= best * (1 + 1e-12))
        self.period = float(w + r + uf * m + FD[m])
        gap = max(abs(FL[i] - FL[i - m] - self.period) for i in range(self.size // 2, self.size + 1))
        self.verified = bool(gap <= 1e-9 * self.period)

    def _split(self, n: int) -> tuple[int, int]:
        """``(K, n')``: the periods and the remainder the table reverses first."""
        k = max(0, -(-(n - self.size) // self.m))
        return k, n - k * self.m

    def time(self, n: int) -> float:
        k, rest = self._split(n)
        return k * self.period + float(self.table.FL[0, rest])

    def counts(self, n: int) -> Counts:
        k, rest = self._split(n)
        table = self.table
        tail = table.tally(rest, 0, LIVE)
        period = table.tally(self.m, 0, DISK)
        sweep = Counts(k * self.m, 0, 0, k, k, 0, k)  # the first sweep's advances, writes; one read per period
        # The remainder runs while the k period starts are on disk; period i with i others before it.
        return sweep.then(tail, held_disk=k).then(period.times(k), held_disk=max(k - 1, 0))

    def actions(self, n: int) -> Iterator[Action]:
        k, rest = self._split(n)
        m, table = self.m, self.table
        for i in range(k):
            yield _new(Store, (i * m, True))
            yield _new(Advance, (i * m, (i + 1) * m, False))
        yield from table.run(k * m, rest, 0, LIVE)
        period = table.template(m, 0, DISK)  # every period's actions are the same, moved
        for i in reversed(range(k)):
            yield _new(Restore, (i * m,))  # a disk read
            yield from shifted(period, i * m)


class Nested:
    """A binding disk budget beyond the exact table: binomial checkpointing over blocks, on disk.

    ``n`` steps are ``K = ceil(n / B)`` blocks, the last one ``n - (K - 1) B``
    long. Over the blocks, revolve with ``s`` disk slots (x_0's included;
    Griewank and Walther's split rule, all its checkpoints on disk) decides
    which block starts to keep; each block is then reversed by the exact
    table with the disk slots the outer level leaves, ``q = disk - s``
    beside the block's own start (``row_live`` when the block starts live,
    ``row_disk``, one more, when its start is read back from disk; ``0``
    rows in an unlimited-disk table). Differences from revolve's own
    recursion: a leaf that keeps every block (``slots >= length - 1``)
    stores them on disk as it advances, and one slot sweeps from its base
    for each block; a block is reversed only when its start is live.
    """

    def __init__(
        self, table: _Table, ratios: tuple[float, float, float], block: int, slots: int, row_live: int, row_disk: int
    ) -> None:
        self.table, self.ratios = table, ratios
        self.block, self.slots, self.row_live, self.row_disk = block, slots, row_live, row_disk

    def _blocks(self, n: int) -> tuple[int, int]:
        k = -(-n // self.block)
        return k, n - (k - 1) * self.block

    def feasible(self, n: int) -> bool:
        """Whether the exact table can reverse every block (it cannot in memory alone with ``ram = 0``)."""
        _, last = self._blocks(n)
        table, b = self.table, self.block
        values = (table.FD[self.row_disk, b], table.FL[self.row_live, b], table.FL[self.row_live, last])
        return all(math.isfinite(v) for v in values)

    def time(self, n: int) -> float:
        if not self.feasible(n):
            return math.inf
        uf, w, r = self.ratios
        c = self.counts(n)
        return uf * c.steps + w * c.disk_writes + r * c.disk_reads

    def estimate(self, n: int) -> float:
        """A quick estimate of :meth:`time` from revolve's closed forms (every block read back from disk)."""
        if not self.feasible(n):
            return math.inf
        uf, w, r = self.ratios
        k, last = self._blocks(n)
        b, s, table = self.block, self.slots, self.table
        advances = revolve_advances(k, s) if s >= 1 else math.inf
        _, writes, reads = revolve_counts(k, s)
        inner = (k - 1) * float(table.FD[self.row_disk, b]) + float(table.FL[self.row_live, last])
        return uf * b * advances + w * (writes + 1) + r * (reads + writes) + inner

    def counts(self, n: int) -> Counts:
        k, last = self._blocks(n)
        table, b = self.table, self.block
        block_live = table.tally(b, self.row_live, LIVE)
        block_disk = table.tally(b, self.row_disk, DISK)
        last_live = table.tally(last, self.row_live, LIVE)

        def reverse_block(stored: bool, rightmost: bool) -> Counts:
            if rightmost:
                return last_live
            return block_disk if stored else block_live

        # Sub-problems (length, slots, stored, rightmost), as in revolve's recursion, with an explicit stack.
        memo: dict[tuple[int, int, bool, bool], Counts] = {}
        stack = [(k, self.slots, k > 1, True)]
        while stack:
            task = stack[-1]
            if task in memo:
                stack.pop()
                continue
            length, s, stored, rightmost = task
            if length == 1:
                memo[task] = reverse_block(stored, rightmost)
            elif s >= length - 1:  # keep every block start on disk, then reverse them last first
                keep = length - 2  # the starts of blocks 1 .. length - 2
                tally = Counts((length - 1) * b, 0, 0, keep, keep + 1, 0, keep + 1)
                tally = tally.then(reverse_block(False, rightmost), held_disk=length - 1)
                for i in range(length - 2, -1, -1):  # block i read back while i more are kept
                    tally = tally.then(block_disk, held_disk=i)
                memo[task] = tally
            elif s == 1:  # sweep from x_base for each block, last first
                tally = Counts(0, 0, 0, 0, 0, 0, 1)
                for t in range(length - 1, 0, -1):
                    sweep = Counts(t * b, 0, 0, 0, int(t < length - 1), 0, 0)
                    tally = tally.then(sweep).then(reverse_block(False, rightmost and t == length - 1), held_disk=1)
                memo[task] = tally.then(Counts(0, 0, 0, 0, 1, 0, 0)).then(block_disk)
            else:
                j = _split(length, s)
                right = (length - j, s - 1, length - j > 1, rightmost)
                left = (j, s, True, False)
                missing = [part for part in (right, left) if part not in memo]
                if missing:
                    stack.extend(missing)
                    continue
                head = Counts(j * b, 0, 0, int(length - j > 1), 1, 0, 1)  # advance, store x_mid, read x_base
                memo[task] = head.then(memo[right], held_disk=1).then(memo[left])
            stack.pop()
        top = memo[(k, self.slots, k > 1, True)]
        return Counts(0, 0, 0, int(k > 1), 0, 0, 0).then(top)  # x_0's Store

    def actions(self, n: int) -> Iterator[Action]:
        k, last = self._blocks(n)
        b, table = self.block, self.table
        block_live, block_disk = table.template(b, self.row_live, LIVE), table.template(b, self.row_disk, DISK)

        def reverse_block(i: int, stored: bool) -> Iterator[Action]:
            if i == k - 1:
                return table.run(i * b, last, self.row_live, LIVE)
            return shifted(block_disk if stored else block_live, i * b)

        return revolve_blocks(k, self.slots, b, 1, reverse_block)


def revolve_blocks(
    k: int, slots: int, b: int, level: int, reverse_block: Callable[[int, bool], Iterable[Action]]
) -> Iterator[Action]:
    """Revolve over ``k`` blocks of ``b`` steps, ``slots`` block starts held at storage ``level``.

    ``reverse_block(i, stored)`` reverses block ``i`` from its start, live
    (and also stored if ``stored``). The blocks' starts are stored at
    ``level`` (1: the disk); x_0's first.
    """
    if k > 1:
        yield Store(0, level=level)
    stack: list[tuple[int, int, int, bool] | Restore] = [(0, k, slots, k > 1)]
    pop, push = stack.pop, stack.append
    while stack:
        task = pop()
        if isinstance(task, Restore):
            yield task
            continue
        base, length, s, stored = task  # block indices; the live state is x_{base b}
        if length == 1:
            yield from reverse_block(base, stored)
        elif s >= length - 1:
            for i in range(base + 1, base + length):
                yield Advance((i - 1) * b, i * b)
                if i < base + length - 1:
                    yield Store(i * b, level=level)
            yield from reverse_block(base + length - 1, False)
            for i in range(base + length - 2, base - 1, -1):
                yield Restore(i * b)
                yield from reverse_block(i, True)
        elif s == 1:
            for t in range(length - 1, 0, -1):
                if t < length - 1:
                    yield Restore(base * b)
                yield Advance(base * b, (base + t) * b)
                yield from reverse_block(base + t, False)
            yield Restore(base * b)
            yield from reverse_block(base, True)
        else:
            j = _split(length, s)
            yield Advance(base * b, (base + j) * b)
            push((base, j, s, True))
            push(Restore(base * b))
            if length - j > 1:
                yield Store((base + j) * b, level=level)
            push((base + j, length - j, s - 1, length - j > 1))


class DiskRevolve:
    """Revolve with ``ram + disk`` slots, the outer ``disk`` levels on disk: for a tight budget.

    Griewank and Walther's split rule with ``s = ram + disk`` slots; a
    segment with more than ``ram`` slots keeps its first state on disk (a
    write, and a read at each restore), one with ``ram`` or fewer reverses
    itself by revolve in memory. A disk-level segment with a slot per step
    splits off one step at a time (revolve would keep its states with
    ``Advance(keep=True)``, in memory); one slot alone (``ram = 0``) sweeps
    from its disk copy. Its forward steps are revolve's with ``ram + disk``
    slots, the fewest any schedule with that many checkpoints can make, so
    its time is within the disk traffic of a lower bound.
    """

    def __init__(self, ram: int, disk: int, ratios: tuple[float, float, float]) -> None:
        self.ram, self.disk, self.ratios = ram, disk, ratios

    def _split(self, length: int, slots: int) -> int:
        return 1 if slots >= length - 1 else _split(length, slots)

    def time(self, n: int) -> float:
        uf, w, r = self.ratios
        c = self.counts(n)
        return uf * c.steps + w * c.disk_writes + r * c.disk_reads

    def counts(self, n: int) -> Counts:
        ram = self.ram
        memo: dict[tuple[int, int, bool], Counts] = {}
        top = (n, ram + self.disk, n > 1)
        stack = [top]
        while stack:
            task = stack[-1]
            if task in memo:
                stack.pop()
                continue
            length, s, stored = task  # x_base stored (on disk if s > ram) when length > 1 or a left part
            if length == 1:
                memo[task] = Counts(peak=int(stored and s <= ram), peak_disk=int(stored and s > ram))
            elif s <= ram:
                memo[task] = revolve_tally(length, s, store=False)
            elif s == 1:  # ram == 0: sweeps from the disk copy; the last two steps share one sweep
                memo[task] = Counts(length * (length - 1) // 2, 0, 0, 0, length - 1, 0, 1)
            else:
                j = self._split(length, s)
                right, left = (length - j, s - 1, length - j > 1), (j, s, True)
                missing = [part for part in (right, left) if part not in memo]
                if missing:
                    stack.extend(missing)
                    continue
                store = length - j > 1
                on_disk = s - 1 > ram
                head = Counts(j, int(store and not on_disk), 0, int(store and on_disk), 1, 0, 1)
                memo[task] = head.then(memo[right], held_disk=1).then(memo[left])
            stack.pop()
        first = Counts(0, int(n > 1 and top[1] <= ram), 0, int(n > 1 and top[1] > ram), 0, 0, 0)
        return first.then(memo[top])

    def actions(self, n: int) -> Iterator[Action]:
        ram = self.ram
        s = ram + self.disk
        if n > 1:
            yield Store(0, disk=s > ram)
        stack: list[tuple[int, int, int] | Restore] = [(0, n, s)]
        pop, push = stack.pop, stack.append
        while stack:
            task = pop()
            if isinstance(task, Restore):
                yield task
                continue
            base, length, s = task
            if length == 1:
                yield Reverse(base, base + 1)
            elif s <= ram:
                yield from revolve(base, length, s)
            elif s == 1:
                yield from sweeps(base, length)
            else:
                j = self._split(length, s)
                yield Advance(base, base + j)
                push((base, j, s))
                push(Restore(base))  # a disk read
                if length - j > 1:
                    yield Store(base + j, disk=s - 1 > ram)
                push((base + j, length - j, s - 1))
