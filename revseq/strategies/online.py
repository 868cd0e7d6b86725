"""Online checkpointing: reversing a run whose length is not known until it stops.

An adaptive ODE solver, a while-loop RNN, a simulation that runs until a
condition holds: the number of steps ``n`` is known only once the forward
sweep has computed ``x_n``. The checkpoints must be placed on the way, with
no knowledge of ``n``, and no more than ``c`` of them held at any moment.

The forward sweep
    Up to ``(c + 1)(c + 2)/2 - 1`` steps it follows Stumm & Walther's
    Algorithm I (SIAM J. Sci. Comput. 32(2), 2010), as equinox's
    ``checkpointed_while_loop`` implements it. With the reversal below this
    is optimal: no schedule that computes ``x_n`` before reversing anything
    (as every online one must) makes fewer forward steps, even one told
    ``n`` in advance. Past that range equinox switches to Wang & Moin's level
    rule (SIAM J. Sci. Comput. 31(4), 2009), which stores every state and,
    even with the optimal reversal, makes up to 20-47 % more forward steps
    than that bound (c = 3 to 100). Here, instead, each state is weighed as
    it arrives, in the spirit of Hinze & Sternberg's a-revolve: store it in
    place of the checkpoint whose loss costs least, or not at all, whichever
    makes the exact reversal cost smallest were the run to stop at the next
    step. For every n up to 10^5 that stays within 7 % of the bound for
    c >= 3, within 3 % for c >= 20 (docs/online.md). It is a heuristic:
    nothing is proven past the optimal range.
The reversal
    Given the checkpoints ``0 = p_0 < p_1 < ... < p_k`` left when the run
    stopped, the last segment ``[p_k, n)`` is reversed first, by Revolve
    with the ``c - k`` checkpoints not held by ``p_0 .. p_{k-1}``; then
    ``[p_{k-1}, p_k)`` with ``c - k + 1``, and so on (THEORY 4.1). Discarding
    some checkpoints first, to give later segments more room, never helped
    (the tests search every subset for c <= 5, n <= 150), so all are kept.
"""

from __future__ import annotations

import array
import functools
import itertools
import math
import operator
import sys
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import final

import attrs

from revseq import _limits
from revseq._validate import as_int, check_int, checkpoints_in, int_at_least, unsized
from revseq.errors import ParameterError
from revseq.schedule import Action, Advance, Bounds, Cost, Free, Restore, Reverse, Store
from revseq.strategies.base import OnlineStrategy
from revseq.strategies.binomial import _repetitions, revolve, revolve_advances, revolve_counts

__all__ = ["OnlineCheckpointing", "online_lower_bound"]


MAX_COST_STEPS = 10**7
"""The longest run :meth:`OnlineCheckpointing.cost` prices past ``(c + 1)(c + 2)/2 - 1`` steps; longer ones are refused.

Within that range the cost takes O(c), for any n; past it, O(1) amortised
per checkpoint the adaptive rule places (one every 4 to 20 steps for c = 10
to 1000 near n = 10^6), measured at 0.25 to 1.5 us per step on the 2-core
machine of docs/benchmarks.md where no sweep with the same c has placed
them yet (:class:`_Table`), 0.02 to 0.15 us where one has: at most half a
minute or so here.
"""


def _optimal_range(c: int) -> int:
    """The longest run for which the forward sweep stays optimal: ``(c + 1)(c + 2)/2 - 1`` steps."""
    return (c + 1) * (c + 2) // 2 - 1


def online_lower_bound(n: int, checkpoints: int) -> int:
    """The fewest forward steps of any schedule that computes ``x_n`` before reversing anything.

    Every online strategy must do that, since it learns ``n`` only on
    arriving at ``x_n``; so no online strategy with ``checkpoints``
    checkpoints can make fewer forward steps than this, even if it were told
    ``n``. It is ``n`` plus the cheapest reversal over every choice of
    checkpoint positions, segment ``i`` reversed optimally with ``c - i``
    checkpoints (``T'(n, c)`` of THEORY 4.1). ``OnlineCheckpointing`` makes
    exactly this many when ``n <= (c + 1)(c + 2)/2 - 1``.

    Computed in ``O(log R)`` evaluations of ``comb``: each segment's Revolve
    cost ``T(l, s)`` grows with ``l`` by the repetition number ``r(l, s)``,
    so the best split of ``n`` steps takes the ``n`` smallest of those
    increments over all segments. There are ``K(r) = C(c + r + 1, c) - 1``
    of them no larger than ``r``; with ``R`` the least ``r`` with ``K(r) >=
    n``, summing by parts (and the hockey-stick identity) leaves
    ``(R + 1)(n + 1) - C(c + R + 1, c + 1)``.

    >>> online_lower_bound(10, 3), online_lower_bound(500, 3)
    (18, 4693)
    """
    n = check_int("n", n, 1)
    c = check_int("checkpoints", checkpoints, 1)
    top = _repetitions(n + 1, c) - 1  # R: the least r with C(c + r + 1, c) >= n + 1
    return (top + 1) * (n + 1) - math.comb(c + top + 1, c + 1)


class _Costs(dict[int, int]):
    """``T(length, slots)`` for one number of slots, by length: computed on first use, then looked up.

    The adaptive rule prices the same few segments over and over (about 10^4
    distinct ``(length, slots)`` up to ``n = 10^6`` for ``c = 10 .. 1000``,
    against 10^5 .. 10^6 lookups): a hit is a plain dict subscript, a third
    of an ``lru_cache`` call. Shared by every sweep (:data:`_COSTS`), and
    emptied, all rows at once, when it holds ``_COSTS_KEPT`` values, so that
    its memory stays bounded however long the runs.
    """

    __slots__ = ("slots",)

    def __init__(self, slots: int) -> None:
        super().__init__()
        self.slots = slots

    def __missing__(self, length: int) -> int:
        if _COSTS.held >= _COSTS_KEPT:
            for row in _COSTS.values():
                row.clear()
            _COSTS.held = 0
        _COSTS.held += 1
        value = self[length] = revolve_advances(length, self.slots)
        return value


class _CostRows(dict[int, _Costs]):
    """The rows of :class:`_Costs` by number of slots, each made when first asked for."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        super().__init__()
        self.held = 0  # values held over all rows

    def __missing__(self, slots: int) -> _Costs:
        row = self[slots] = _Costs(slots)
        return row


_COSTS = _CostRows()  # _COSTS[s][l] = T(l, s)
_COSTS_KEPT = 1 << 15


def _two_slots(length: int) -> tuple[int, int]:
    """``(r, T(length, 2))`` in O(1), ``r`` the least with ``C(r + 2, 2) >= length``; ``T = r length - C(r + 2, 3)``."""
    r = max(0, (math.isqrt(8 * length + 1) - 3) // 2)  # r or r - 1
    while (r + 1) * (r + 2) // 2 < length:
        r += 1
    return r, r * length - (r + 2) * (r + 1) * r // 6


def _doubling_search(low: int, holds: Callable[[int], bool]) -> int:
    """The least ``x > low`` at which ``holds`` fails, given that it holds on ``low .. x - 1`` (and ``low``)."""
    gap = 1
    while holds(low + gap):
        low += gap
        gap *= 2
    high = low + gap  # holds(low), not holds(high)
    while high - low > 1:
        mid = (low + high) // 2
        if holds(mid):
            low = mid
        else:
            high = mid
    return high


def _waiting(size: int) -> int:
    """``T(size, 1) - T(size - 1, 2)``: what storing the live state ``x_{last+size-1}`` saves in the last segment.

    If the run stopped at ``x_{t+1}`` with the last checkpoint at ``last``,
    ``size = t + 1 - last``, the last segment, reversed with one checkpoint,
    costs ``T(size, 1) = size (size - 1)/2``; storing ``x_t`` in place of an
    inner checkpoint would give it two, for ``T(size - 1, 2)``. Increasing,
    by ``size - r(size, 2) >= 1`` a step.
    """
    return size * (size - 1) // 2 - _two_slots(size - 1)[1]


@functools.cache
def _waiting_table() -> list[int]:
    """``_waiting(size)`` for ``size = 1 .. 4096``, at index ``size - 1``: summed from its increments, once."""
    table, value, r, reach = [0], 0, 0, 1  # reach = C(r + 2, 2): the longest length with repetition number r
    for size in range(1, 1 << 12):
        if size > reach:
            r += 1
            reach += r + 1
        value += size - r
        table.append(value)
    return table


def _inner_limit(margin: float) -> int | None:
    """The least ``size >= 1`` with ``_waiting(size) > margin``: how far the last segment grows before storing
    in place of an inner checkpoint, whose effect elsewhere is ``margin``, wins (None if it never does)."""
    table = _waiting_table()
    if margin < table[-1]:
        return bisect_right(table, margin) + 1
    if margin == math.inf:
        return None
    return _doubling_search(len(table), lambda size: _waiting(size) <= margin)


@functools.lru_cache(maxsize=1 << 12)
def _merge_limit(gap: int) -> int:
    """The least ``size >= 1`` with ``T(size, 1) + T(gap, 2) > T(size - 1 + gap, 2)``.

    How far the last segment grows (``size`` as in :func:`_waiting`) before
    storing the live state in place of the last checkpoint wins, the
    segment before being ``gap`` long: that merges the two into ``size - 1
    + gap`` steps reversed with two checkpoints, against ``gap`` with two and
    ``size`` with one. The difference is convex in ``size`` (increments
    ``size - r(size + gap, 2)`` never fall) and not positive at ``size =
    1``, so the sizes where merging does not win are ``1 .. limit - 1``.
    Depends on ``gap`` alone, hence the cache (gaps recur).
    """
    before = _two_slots(gap)[1]
    return _doubling_search(1, lambda size: size * (size - 1) // 2 + before <= _two_slots(size - 1 + gap)[1])


def _phases(c: int) -> Iterator[tuple[int, int, int]]:
    """``(o, top, first)`` for each phase ``o = c - 1 .. 1`` of Stumm & Walther's Algorithm I.

    The rule as equinox's ``_stumm_walther_i`` states it (THEORY 4.2) moves
    a slot pointer that cycles through the slots, a cycle shorter by one
    each time. Stated by what it stores (the tests check it against the
    slot-pointer form, tests/online_oracles.py): steps ``0 .. c - 1``, all;
    then phase ``o``, which starts at step ``top`` (``c`` for the first),
    stores ``x_{top+1} .. x_{top+o}`` in place of the previous phase's
    stores but its first, ``first .. first + o - 1`` (for the first phase
    ``x_1 .. x_{c-1}``): the newest of those first, then the others oldest
    first. A phase's first store stays to the end; the next phase starts at
    ``top + o + 1``, and the last store is at ``(c + 1)(c + 2)/2 - 3``.
    """
    first, top = 1, c
    for o in range(c - 1, 0, -1):
        yield o, top, first
        first, top = top + 2, top + o + 1


def _stumm_walther(c: int) -> Iterator[tuple[int, int | None]]:
    """``(step, evicted)`` for each state Stumm & Walther's Algorithm I stores (:func:`_phases`)."""
    return itertools.chain.from_iterable(_stumm_walther_pieces(c))


def _stumm_walther_pieces(c: int) -> Iterator[Iterable[tuple[int, int | None]]]:
    yield zip(range(c), itertools.repeat(None), strict=False)
    for o, top, first in _phases(c):
        yield ((top + 1, first + o - 1),)
        yield zip(range(top + 2, top + o + 1), range(first, first + o - 1), strict=True)


def _stumm_walther_held(c: int, n: int) -> tuple[list[int], int]:
    """The steps Stumm & Walther's rule holds on reaching ``x_n`` (its stores at steps ``< n``), and their number.

    In O(c), from :func:`_phases`, without walking the steps.
    """
    if n <= c:
        return list(range(n)), n
    held, stores = [0], c
    for o, top, first in _phases(c):
        made = min(o, n - 1 - top)  # this phase's stores at steps < n
        if made <= 0:  # not begun: the previous phase's stores are all there
            return [*held, *range(first, first + o)], stores
        if made < o:  # evicted: the newest of the previous phase's, then its oldest made - 1
            return [*held, *range(first + made - 1, first + o - 1), *range(top + 1, top + made + 1)], stores + made
        held.append(top + 1)  # the phase's first store, held from now on
        stores += o
    return held, stores


class _MergeLimits(dict[int, int]):
    """:func:`_merge_limit` by gap, each computed on first use: a plain subscript in the adaptive rule's loop.

    Emptied when it holds ``_COSTS_KEPT`` values, so that its memory stays bounded however long the runs.
    """

    __slots__ = ()

    def __missing__(self, gap: int) -> int:
        if len(self) >= _COSTS_KEPT:
            self.clear()
        value = self[gap] = _merge_limit(gap)
        return value


_MERGE_LIMITS = _MergeLimits()


_MEMO_FROM = 4
"""Stretches of more than this many segments are repriced through :func:`_adaptive`'s memo; shorter ones directly."""


def _anchored(anchor: tuple[float, int, int], value: float, at: int, gain: int) -> tuple[float, int, int]:
    """A memo entry ``(value, at, gain)``, taken from segment ``s`` on, made absolute by the state left of ``s``."""
    before, before_at, before_gain = anchor
    value -= before_gain
    return (before, before_at, gain + before_gain) if value >= before else (value, at, gain + before_gain)


def _adaptive(c: int, held: list[int]) -> Iterator[tuple[int, int]]:
    """``(step, evicted)`` for each state stored from step ``(c + 1)(c + 2)/2 - 1`` on (none if ``c = 1``).

    ``held`` is the ``c`` checkpoints held on reaching that step, sorted
    (:func:`_stumm_walther_held`), and is kept up to date in place: each
    placement is made in it once the caller resumes the generator, so a
    caller that stops at a placement finds there what is held before it.

    At each step ``t`` (live ``x_t``) three candidates are priced, as the
    reversal's cost if the run stopped at ``x_{t+1}``: store nothing; store
    ``x_t`` in place of an inner checkpoint ``p_j`` (``0 < j < k = c - 1``),
    which merges segments ``j - 1`` and ``j`` and gives every later segment a
    checkpoint more; store it in place of the last one, ``p_k``. Ties go to
    storing nothing, then to the leftmost checkpoint.

    Only the last segment grows with ``t``, so the best inner eviction is
    settled once per change of the checkpoints, and the step at which
    storing wins is found without pricing every step (:func:`_merge_limit`,
    :func:`_inner_limit`). The entries below are prefix sums and a prefix
    minimum over segments, so a change at ``p_j`` reprices only the segments
    from ``j - 1`` on (each of which has one checkpoint more than before, or
    is new); the rule mostly evicts one of the last few, and a longer
    stretch is priced once, then copied from a memo.
    """
    if c < 2:  # with one checkpoint, x_0 is all there is room for
        return
    t = _optimal_range(c)
    k = c - 1
    rows = [_COSTS[s] for s in range(c, 1, -1)]  # rows[i][l] = T(l, c - i): segment i's row, i < k
    two = _COSTS[2]
    merge_limits = _MERGE_LIMITS
    # best[i] = (value, at, gains, s) for segment i: gains = gain_1 + ... + gain_i, gain_i being what one
    # checkpoint more would change in segment i (<= 0); value = the least, over 1 <= j <= i, of what evicting p_j
    # changes (merging segments j - 1 and j) less gains up to j (add gains up to k - 1 for the saving on the
    # segments right of j), the leftmost j of equals being `at`. With s > 0 the sums and the minimum are taken
    # from segment s on only, as the memo holds them, and anchors[s] is the entry of segment s - 1.
    best: list[tuple[float, int, int, int]] = [(math.inf, 0, 0, 0)] * k
    anchors: list[tuple[float, int, int]] = [(math.inf, 0, 0)] * k
    # The entries from segment s on depend only on s and the lengths of segments s - 1 .. k - 1, and the rule
    # keeps coming back to the same few (about 400 for c = 1000 up to n = 10^6, against 10^5 placements):
    # a long stretch is repriced once, then copied.
    memo: dict[tuple[int, tuple[int, ...]], list[tuple[float, int, int, int]]] = {}
    memo_held, memo_from = 0, _MEMO_FROM
    changed = 1  # the first segment whose entries are out of date (segment 0 has no eviction to price)
    waiting = _waiting_table()
    waiting_top = waiting[-1]
    while True:
        value, at, gain, first = best[changed - 1]
        if first:  # _anchored inlined: at c = 100 and more, most placements start in a stretch from the memo
            before, before_at, before_gain = anchors[first]
            value -= before_gain
            gain += before_gain
            if value >= before:
                value, at = before, before_at
        first, entries = 0, None
        if k - changed > memo_from:
            key = changed, tuple(map(operator.sub, held[changed : k + 1], held[changed - 1 : k]))
            entries = memo.get(key)
            anchor = value, at, gain
            if entries is None:  # priced from segment `changed` on alone, then kept
                value, at, gain, first = math.inf, 0, 0, changed
        if entries is None:
            base, start = held[changed - 1], held[changed]
            more = rows[changed - 1]
            left = more[start - base]  # segment changed - 1's cost
            for i, row, stop in zip(range(changed, k), rows[changed:], held[changed + 1 :], strict=True):
                length = stop - start
                cost = row[length]
                gain += more[length] - cost
                merge = more[stop - base] - left - cost - gain
                if merge < value:
                    value = merge
                    at = i
                best[i] = value, at, gain, first
                left, base, start, more = cost, start, stop, row
            if first:
                if memo_held >= _COSTS_KEPT:
                    memo.clear()
                    memo_held = 0
                memo_held += k - changed
                entries = memo[key] = best[changed:]
        if entries is not None:
            best[changed:] = entries
            anchors[changed] = anchor
            value, at, gain = _anchored(anchor, *entries[-1][:3])
            start, base = held[k], held[k - 1]
            left = two[start - base]
        # start = p_k, base = p_{k-1}, left = segment k - 1's cost; inner = what the best inner eviction
        # changes left of the last segment. The first step at which storing x_t beats waiting (both rules'
        # waiting sizes are intervals from 1), then which checkpoint it replaces: the best inner one, or the last.
        inner = value + gain
        limit = merge_limits[start - base]
        if inner < waiting_top:  # the common case, _inner_limit inlined
            beyond: int | None = bisect_right(waiting, inner) + 1
        else:
            beyond = _inner_limit(inner)
        if beyond is not None and beyond < limit:
            limit = beyond
        size = t + 1 - start
        if size < limit:
            size = limit
        t = start + size - 1
        j = at if inner + two[size - 1] <= two[t - base] - left else k
        yield t, held[j]
        del held[j]
        held.append(t)
        changed = j - 1 or 1
        t += 1


class _Table:
    """The adaptive rule's placements for one budget ``c``: made on demand, once, and shared by every sweep.

    The rule never looks at ``n`` or at the states: every sweep with ``c``
    checkpoints places the same states at the same steps. So the placements
    (step, evicted) are kept here as they are made, in two ``array('q')``
    (16 bytes a placement), and a sweep reads them back in slices; only
    steps no earlier sweep (or :meth:`OnlineCheckpointing.cost`) has reached
    cost the rule's own time, 3 to 10 us a placement here. All tables together
    hold at most ``_TABLE_KEPT`` placements: a table that needs more room
    drops the others, and one that alone fills it stops growing (a sweep past
    its end goes on with the rule itself, :func:`_placement_chunks`). At
    most ``_TABLES_BUDGETS`` budgets have one, the least recently used going.
    """

    __slots__ = ("evicted", "lock", "rule", "steps")

    def __init__(self, c: int) -> None:
        self.lock = threading.Lock()
        self.rule: Iterator[tuple[int, int]] | None = _adaptive(c, _stumm_walther_held(c, _optimal_range(c))[0])
        self.steps = array.array("q")
        self.evicted = array.array("q")

    def grow(self, count: int) -> int:
        """Make placements until there are ``count`` (fewer if the room runs out); return how many there are."""
        with self.lock:
            have = len(self.steps)
            if have < count and self.rule is not None:
                with _TABLES_LOCK:
                    held = sum(len(table.steps) for table in _TABLES.values() if table is not self)
                    if held + count > _TABLE_KEPT:  # room for this one first: the others go
                        for c in [c for c, table in _TABLES.items() if table is not self]:
                            del _TABLES[c]
                more = min(count, _TABLE_KEPT) - have
                if more > 0:
                    try:
                        steps, evicted = _take(self.rule, more)
                    except BaseException:  # interrupted half-way: what the rule made is lost, so it must not go on
                        self.rule = None
                        raise
                    self.steps.extend(steps)
                    self.evicted.extend(evicted)
            return len(self.steps)

    def take_rule(self) -> Iterator[tuple[int, int]] | None:
        """The rule itself, at the table's end, for a sweep going on past a full table (the first to ask)."""
        with self.lock:
            rule, self.rule = self.rule, None
            return rule


_TABLES: dict[int, _Table] = {}
_TABLES_LOCK = threading.Lock()
_TABLE_KEPT = 1 << 20
"""The most placements :class:`_Table` keeps over all budgets: 16 MiB."""
_TABLES_BUDGETS = 8
"""The most budgets with a table: each also keeps its rule's state, a few MB at most (its memo, bounded)."""
_GROW = 256  # the most placements made at a time: a run that stops pays for at most this many it did not reach
_READ = 1 << 14  # placements read from a table at a time


def _table(c: int) -> _Table:
    """The shared table for ``c``, made if need be; the least recently used goes past ``_TABLES_BUDGETS`` tables."""
    with _TABLES_LOCK:
        table = _TABLES.pop(c, None)
        if table is None:
            table = _Table(c)
            while len(_TABLES) >= _TABLES_BUDGETS:
                del _TABLES[next(iter(_TABLES))]
        _TABLES[c] = table  # the most recently used last
        return table


def _placement_chunks(c: int) -> Iterator[tuple[Sequence[int], Sequence[int]]]:
    """The adaptive rule's placements (c >= 2) as ``(steps, evicted)`` slices, in order, from the shared table.

    Past the end of a table that cannot grow (:data:`_TABLE_KEPT`), the
    rule goes on by itself: the table's own, if no other sweep has taken it,
    else a fresh one that first makes again the placements already read.
    """
    table = _table(c)
    done = 0
    while True:
        have = len(table.steps)
        if done >= have:  # a sixteenth more, so that a run that stops soon after pays little for what it left
            have = table.grow(done + max(16, min(_GROW, done // 16)))
            if done >= have:
                break
        top = min(have, done + _READ)
        yield table.steps[done:top], table.evicted[done:top]
        done = top
    rule = table.take_rule()
    if rule is None:
        rule = itertools.islice(_adaptive(c, _stumm_walther_held(c, _optimal_range(c))[0]), done, None)
    while True:
        yield _take(rule, _GROW)


def _take(rule: Iterator[tuple[int, int]], count: int) -> tuple[array.array[int], array.array[int]]:
    """The next ``count`` placements of ``rule`` as ``(steps, evicted)``.

    Read through a flat ``array``, so that each placement's tuple is freed as
    soon as it is read: held all at once (``zip(*...)``), they would set off
    the garbage collector's young-generation passes over the rule's own
    objects, 1 to 2 us a placement more, measured.
    """
    flat = array.array("q", itertools.chain.from_iterable(itertools.islice(rule, count)))
    return flat[0::2], flat[1::2]


def _placements(c: int) -> Iterator[tuple[int, int | None]]:
    """``(step, evicted)`` for every state the forward sweep stores; ``evicted`` is the key it replaces."""
    if c < 2:
        return _stumm_walther(c)
    adaptive = itertools.chain.from_iterable(itertools.starmap(zip, _placement_chunks(c)))
    return itertools.chain(_stumm_walther(c), adaptive)


def _stumm_walther_sweep(c: int) -> Iterator[Iterable[Action]]:
    """The forward sweep's actions for :func:`_stumm_walther`'s placements, a piece per phase (and its first store).

    Made by ``map`` and ``zip`` over ranges, with no Python frame per action; the last ``Advance`` reaches
    ``x_{(c+1)(c+2)/2-3}``, the last store, live when the adaptive rule takes over.
    """
    # map(tuple.__new__, repeat(Advance), ...) rather than a partial: one call per action, not two.
    new, repeat = tuple.__new__, itertools.repeat
    advances, frees, stores = repeat(Advance), repeat(Free), repeat(Store)
    yield (new(Store, (0, False)),)
    stored = range(1, c)  # the first phase: x_1 .. x_{c-1}, one step each
    yield itertools.chain.from_iterable(
        zip(
            map(new, advances, zip(range(c - 1), stored, repeat(False), strict=False)),
            map(new, stores, zip(stored, repeat(False), strict=False)),
            strict=True,
        )
    )
    live = c - 1
    for o, top, first in _phases(c):  # live is x_{top - 1}, the previous phase's last store
        yield new(Advance, (live, top + 1, False)), new(Free, (first + o - 1, first + o)), new(Store, (top + 1, False))
        stored = range(top + 2, top + o + 1)
        yield itertools.chain.from_iterable(
            zip(
                map(new, advances, zip(range(top + 1, top + o), stored, repeat(False), strict=False)),
                map(new, frees, zip(range(first, first + o - 1), range(first + 1, first + o), strict=True)),
                map(new, stores, zip(stored, repeat(False), strict=False)),
                strict=True,
            )
        )
        live = top + o


def _stumm_walther_cut(c: int, stop: int) -> tuple[int, int]:
    """Where :func:`_stumm_walther_sweep` reaches ``x_stop`` (``1 <= stop <= (c+1)(c+2)/2 - 3``): the number of its
    actions before the ``Advance`` that does, and that one's start.

    Its actions: ``Store(0)``, two a step up to ``x_{c-1}``, then three a step
    (each phase's first ``Advance`` takes two steps, from ``x_{top-1}``).
    """
    if stop < c:
        return 2 * stop - 1, stop - 1
    count = 2 * c - 1
    for o, top, _ in _phases(c):
        if stop <= top + o:
            return (count, top - 1) if stop <= top + 1 else (count + 3 * (stop - top - 1), stop - 1)
        count += 3 * o
    raise AssertionError(f"x_{stop} is past Stumm and Walther's stores for c = {c}")  # pragma: no cover


def _sweep(
    budget: Callable[[], int], stop: int | None = None, stored: list[int] | None = None
) -> Iterator[Iterable[Action]]:
    """The forward sweep's actions for the placements of :func:`_placements`, in pieces for a chain.

    The same as, for each ``(step, evicted)``: ``Advance(live, step)``
    (unless ``step`` is live), ``Free(evicted, evicted + 1)`` (if any),
    ``Store(step)``. Made by ``map`` and ``zip``, with no Python frame per
    action or per placement: over ranges in Stumm & Walther's phases
    (:func:`_stumm_walther_sweep`), over slices of the shared table of the
    adaptive rule's placements past them (:func:`_placement_chunks`).
    Actions are built as :mod:`~revseq.strategies._patterns` builds them
    (``tuple.__new__``, equal to ``Advance(a, b)`` and the others).
    ``budget`` is asked when the sweep begins, as a generator body would.

    With ``stop``, the sweep as far as ``x_stop`` only, as
    :func:`~revseq.strategies.base._cut_forward` cuts any sweep (the actions
    before the ``Advance`` that reaches it, then that one ending there), and
    ``stored`` gets the checkpoints held there, sorted; but the phases are
    cut by ``islice``, and the table by ``bisect``.
    """
    c = budget()
    new = tuple.__new__
    reach = _optimal_range(c) - 2  # the last state Stumm & Walther's part stores, live at its end
    if stop is not None and stop <= reach:
        count, start = _stumm_walther_cut(c, stop)
        yield itertools.islice(itertools.chain.from_iterable(_stumm_walther_sweep(c)), count)
        yield (new(Advance, (start, stop, False)),)
        if stored is not None:
            stored[:] = _stumm_walther_held(c, stop)[0]
        return
    yield from _stumm_walther_sweep(c)
    end = sys.maxsize if stop is None else stop
    live = reach
    held = set(_stumm_walther_held(c, reach + 2)[0])
    if c > 1:  # with one checkpoint the placements end: x_0 is kept, and the run goes on until it stops
        repeat, add = itertools.repeat, operator.add
        advances, frees, stores, no, one = repeat(Advance), repeat(Free), repeat(Store), repeat(False), repeat(1)
        for steps, evicted in _placement_chunks(c):
            last = steps[-1] >= end
            if last:
                cut = bisect_left(steps, end)
                steps, evicted = steps[:cut], evicted[:cut]
            yield itertools.chain.from_iterable(
                zip(
                    map(new, advances, zip(itertools.chain((live,), steps), steps, no, strict=False)),
                    map(new, frees, zip(evicted, map(add, evicted, one), strict=True)),
                    map(new, stores, zip(steps, no, strict=False)),
                    strict=True,
                )
            )
            if stored is not None:
                held.update(steps)  # a step is stored once, and evicted only after it
                held.difference_update(evicted)
            if steps:
                live = steps[-1]
            if last:
                break
    yield (new(Advance, (live, end, False)),)
    if stored is not None:
        stored[:] = sorted(held)


def _held_at(c: int, n: int) -> tuple[list[int], int]:
    """The checkpoints the forward sweep holds on reaching ``x_n``, sorted, and how many states it stored.

    Stumm & Walther's part in O(c) (:func:`_stumm_walther_held`); then the
    adaptive rule's placements before ``n``, read from the shared table
    (made there first where no sweep has made them).
    """
    end = _optimal_range(c)
    if n <= end or c == 1:
        return _stumm_walther_held(c, min(n, end))
    initial, stores = _stumm_walther_held(c, end)
    held = set(initial)
    for steps, evicted in _placement_chunks(c):
        cut = bisect_left(steps, n)
        held.update(steps[:cut])
        held.difference_update(evicted[:cut])
        stores += cut
        if cut < len(steps):
            break
    return sorted(held), stores


@final
@attrs.frozen
class OnlineCheckpointing(OnlineStrategy):
    """Checkpointing for runs of unknown length: ``c`` checkpoints placed as the run goes.

    Run it with ``n=None`` and a stopping rule: ``backprop(rec, x0, None,
    OnlineCheckpointing(checkpoints=c), until=lambda t, x: ...)``, or
    ``max_steps=``. With a known ``n`` it works too (``cost(n)`` is what a run
    stopping at ``n`` costs), but :class:`BinomialCheckpointing`, which need
    not compute ``x_n`` before reversing, is then as good or better.

    Promise: never more than ``c`` checkpoints, whatever ``n`` turns out to
    be. For ``n <= (c + 1)(c + 2)/2 - 1`` steps it makes exactly
    :func:`online_lower_bound` forward steps (``2 n - c`` once ``n > c``),
    the fewest any schedule can make that computes ``x_n`` before reversing,
    as every online one must: 0 or 1 more than the offline optimum. Beyond
    that range it stayed within 7 % of that bound for every ``n`` up to
    10^5 and ``c >= 3`` (15 % for ``c = 2``; docs/online.md has the table),
    and at the points published for equinox's ``checkpointed_while_loop``
    it makes fewer steps than equinox's rule. Pick ``c`` from a bound on
    ``n`` with :meth:`for_max_steps`. :meth:`cost` does not walk the
    schedule: it finds the checkpoints held at ``x_n`` (in O(c) within the
    optimal range, then placement by placement) and adds Revolve's
    closed-form costs per segment; the tests check it against the simulator.

    Planning: the adaptive rule's placements depend on ``c`` alone, so they
    are made once per process and budget and kept (16 bytes each, at most
    16 MiB over all budgets). The forward sweep, as a run pulls it, then
    costs 0.05 to 0.9 us a step (building three action objects a stored
    step), and the first run with a given ``c`` 0.4 to 2.3 us, the rule's
    own decisions (docs/benchmarks.md, 7.5).

    The forward sweep is Stumm & Walther's Algorithm I, then an adaptive rule
    that weighs each state against the checkpoints it could replace; the
    reversal is Revolve on each segment between checkpoints (module
    docstring).

    Parameters
    ----------
    checkpoints:
        The budget ``c >= 1``, x_0's copy included.
    max_bytes:
        The budget in bytes instead: as many checkpoints as states of the
        run's size fit (the engine knows the size from ``x0``).

    >>> import numpy as np, revseq
    >>> rec = revseq.Recurrence(np.sin, np.cos)
    >>> out = revseq.backprop(rec, np.full(3, 1.0), None, OnlineCheckpointing(checkpoints=4),
    ...                       until=lambda t, x: x[0] < 0.3)
    >>> out.stats.n, out.stats.forward_steps, out.stats.peak_checkpoints
    (29, 72, 4)
    """

    checkpoints: int | None = attrs.field(default=None, converter=as_int, validator=int_at_least(1, optional=True))
    max_bytes: int | None = attrs.field(
        default=None, kw_only=True, converter=as_int, validator=int_at_least(1, optional=True)
    )

    def __attrs_post_init__(self) -> None:
        if self.checkpoints is None and self.max_bytes is None:
            raise ParameterError(
                "OnlineCheckpointing needs a budget, checkpoints=c or max_bytes=, got neither; "
                "with a bound on the number of steps, OnlineCheckpointing.for_max_steps(max_steps) picks c"
            )
        if self.checkpoints is not None and self.max_bytes is not None:
            raise ParameterError(
                f"give the budget once, as checkpoints or as max_bytes, got checkpoints={self.checkpoints} "
                f"and max_bytes={self.max_bytes}"
            )

    @classmethod
    def for_max_steps(cls, max_steps: int) -> OnlineCheckpointing:
        """The fewest checkpoints that keep every run of up to ``max_steps`` steps optimal.

        That is the smallest ``c`` with ``max_steps <= (c + 1)(c + 2)/2 - 1``,
        about ``sqrt(2 max_steps)``: equinox's default,
        ``floor(-1.5 + sqrt(2 max_steps + 0.25)) + 1``, in integer arithmetic.

        >>> OnlineCheckpointing.for_max_steps(1000)
        OnlineCheckpointing(checkpoints=44, max_bytes=None)
        """
        m = check_int("max_steps", max_steps, 1)
        c = max(1, math.isqrt(2 * m) - 2)  # within 2 of the answer: the loops below run at most 3 times
        while _optimal_range(c) < m:
            c += 1
        while c > 1 and _optimal_range(c - 1) >= m:
            c -= 1
        return cls(checkpoints=c)

    def sized(self, state_nbytes: int) -> OnlineCheckpointing:
        if self.max_bytes is None:
            return self
        return OnlineCheckpointing(checkpoints=checkpoints_in(self.max_bytes, state_nbytes))

    def budget(self) -> int:
        """The number of checkpoints ``c``."""
        if self.checkpoints is None:
            raise unsized(self)
        return self.checkpoints

    def online_bounds(self) -> Bounds:
        return Bounds(checkpoints=self.budget())

    def _closed_cost(self, n: int) -> Cost:
        # Not a closed form past the optimal range (the adaptive rule is a heuristic), but no action is made:
        # the checkpoints held at x_n, found placement by placement, then Revolve's closed forms per segment.
        c = self.budget()
        limit = max(MAX_COST_STEPS, _optimal_range(c))
        if n > limit:
            raise ParameterError(
                f"n must be <= {limit} for {self!r}.cost(n), got {n}: past its optimal range, (c + 1)(c + 2)/2 - 1 "
                f"steps, the cost is found by following every checkpoint the forward sweep places, up to about "
                f"{_limits.format_duration(n * 3e-6)} for this one; online_lower_bound(n, c) gives its fewest "
                f"forward steps in O(1), which it meets exactly within that range (a larger budget widens it)"
            )
        held, writes = _held_at(c, n)
        return _reversal_cost(n, c, held, writes)

    def bounds(self, n: int) -> Bounds:
        c = self.budget()
        optimal = online_lower_bound(n, c) if n <= _optimal_range(c) else None
        return Bounds(forward_steps=optimal, checkpoints=min(c, n))

    def forward(self) -> Iterator[Action]:
        return itertools.chain.from_iterable(_sweep(self.budget))

    def _forward_to(self, n: int, stored: list[int]) -> Iterator[Action]:
        # The sweep cut where it reaches x_n by _sweep itself: the phases by islice, not action by action.
        return itertools.chain.from_iterable(_sweep(self.budget, n, stored))

    def backward(self, n: int, stored: tuple[int, ...]) -> Iterator[Action]:
        # A chain of the segments' fragments: each action of revolve's generators reaches the caller through
        # no frame of ours (a `yield from` here would add one per action).
        return itertools.chain.from_iterable(_reversal(n, self.budget, stored))


def _reversal(n: int, budget: Callable[[], int], stored: tuple[int, ...]) -> Iterator[Iterable[Action]]:
    """The reversal of :meth:`OnlineCheckpointing.backward`, as a fragment per segment.

    ``budget`` is asked once the reversal begins, as a generator body would.
    """
    c = budget()
    new = tuple.__new__
    ends = (*stored[1:], n)
    run: tuple[int, int] | None = None  # one-step segments start .. stop - 1, pending: one Reverse takes them all
    for i in range(len(stored) - 1, -1, -1):  # segment i = [p_i, p_{i+1}), the last first
        base, end = stored[i], ends[i]
        if end - base == 1:
            run = (base, run[1] if run else end)
            continue
        restore = new(Restore, (base,))
        yield (new(Reverse, run), restore) if run else (restore,)
        run = None
        yield revolve(base, end - base, c - i)  # c - i: p_0 .. p_{i-1} are still held
    if run:
        yield (new(Reverse, run),)


def _reversal_cost(n: int, c: int, held: list[int], writes: int) -> Cost:
    """What the forward sweep, which left ``held`` after ``writes`` stores, and :func:`_reversal` cost.

    The sweep makes ``n`` forward steps (``x_n`` included) and holds at most
    ``len(held)`` checkpoints (a store in place of an evicted one never adds
    one); each segment of more than one step costs a restore of its base and
    what Revolve costs with the ``c - i`` checkpoints the earlier segments
    leave (:func:`~revseq.strategies.binomial.revolve_counts`, its peak
    counting the base), on top of the ``i`` held to its left.
    """
    steps, peak, reads = n, len(held), 0
    ends = (*held[1:], n)
    for i, base in enumerate(held):
        length = ends[i] - base
        if length > 1:
            slots = c - i
            top, stored, restored = revolve_counts(length, slots)
            steps += revolve_advances(length, slots)
            peak = max(peak, i + top)
            writes += stored
            reads += restored + 1
    return Cost(n=n, forward_steps=steps, peak_checkpoints=peak, writes=writes, reads=reads)
