"""Binomial checkpointing: the fewest forward steps for a fixed number of checkpoints.

Griewank (1992) and Griewank & Walther (2000), ACM TOMS 26(1), Algorithm 799
"Revolve". With ``c`` checkpoints (x_0's included) and ``r`` the repetition
number, the smallest integer with ``C(c + r, c) >= n``, no schedule can make
fewer than ``r n - C(c + r, r - 1) + 1`` forward steps (revseq counting: the
first sweep and the call that produces ``x_n`` included), and this one makes
exactly that many.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from typing import final

import attrs

from revseq._validate import as_int, check_int, checkpoints_in, int_at_least, unsized
from revseq.errors import ParameterError
from revseq.schedule import Action, Advance, Bounds, Cost, Restore, Store
from revseq.strategies import _patterns
from revseq.strategies.base import ReversalStrategy

__all__ = ["BinomialCheckpointing", "optimal_forward_steps", "repetition_number"]


def repetition_number(n: int, checkpoints: int) -> int:
    """The smallest ``r`` with ``C(checkpoints + r, checkpoints) >= n``.

    No step is advanced more than ``r`` times by the optimal schedule.

    >>> repetition_number(10_000, 15)
    5
    """
    return _repetitions(check_int("n", n, 1), check_int("checkpoints", checkpoints, 1))


def optimal_forward_steps(n: int, checkpoints: int) -> int:
    """The fewest forward steps any schedule can make reversing ``n`` steps with ``checkpoints`` checkpoints.

    Counted as revseq counts (``backprop``'s calls of f: the first sweep and the
    call producing ``x_n`` included), so ``n`` when everything fits.

    >>> optimal_forward_steps(100, 5), optimal_forward_steps(1000, 10)
    (317, 3637)
    """
    return revolve_advances(check_int("n", n, 1), check_int("checkpoints", checkpoints, 1)) + 1


def _repetitions(n: int, c: int) -> int:
    """The smallest ``r`` with ``C(c + r, c) >= n``, in ``O(log r)`` evaluations of ``comb``.

    ``r`` is small in the planners' inner loops, so the first few values are
    tried with one multiplication each; past them an exponential search
    brackets ``r`` and a binary search finds it (``r`` is about ``n`` for
    ``c = 1``, answered directly, and ``sqrt(2 n)`` for ``c = 2``).
    """
    if n <= 1:
        return 0
    if c < 1:  # C(r, 0) = 1 for every r: no repetition number reaches n >= 2 without a checkpoint
        raise ParameterError(f"checkpoints must be an int >= 1 to reverse {n} steps, got {c}")
    if c == 1:
        return n - 1
    r, reach = 0, 1  # reach = C(c + r, c)
    while reach < n:
        if r == _LINEAR_SEARCH:
            break
        r += 1
        reach = reach * (c + r) // r
    else:
        return r
    low, high = r, 2 * r  # C(c + low, c) < n
    while math.comb(c + high, c) < n:
        low, high = high, 2 * high
    while high - low > 1:
        mid = (low + high) // 2
        if math.comb(c + mid, c) < n:
            low = mid
        else:
            high = mid
    return high


_LINEAR_SEARCH = 8  # repetition numbers up to this are found by the incremental product


def revolve_advances(length: int, slots: int) -> int:
    """``T(length, slots)``: the forward steps :func:`revolve` makes (no call producing an ``x_n``).

    Unchecked, for planners that call it in their inner loops; the
    closed form of Griewank and Walther (THEORY 1.1).
    """
    r = _repetitions(length, slots)
    return r * length - math.comb(slots + r, r - 1) if r else 0


@functools.lru_cache(maxsize=1 << 14)
def _split(n: int, s: int) -> int:
    """Where to place the next checkpoint, for 2 <= s <= n - 2 (an argmin of the DP).

    The rule of Griewank & Walther (2000, p. 34), as in checkpoint_schedules'
    ``n_advance(..., trajectory="revolve")``; the tests check that it meets
    the brute-force dynamic programme. Cached: the same sub-problems recur
    throughout a schedule, and the cache's size is fixed.
    """
    t = max(2, _repetitions(n, s))  # the smallest t >= 2 with C(s + t, s) >= n
    b_s_tm2 = math.comb(s + t - 2, s)
    b_s_tm1 = math.comb(s + t - 1, s)
    b_sm1_tm1 = math.comb(s + t - 2, s - 1)
    b_sm2_tm1 = math.comb(s + t - 3, s - 2)
    if n <= b_s_tm1 + b_sm2_tm1:
        return b_s_tm2
    if n < b_s_tm1 + b_sm1_tm1 + b_sm2_tm1:
        return n - b_sm1_tm1 - b_sm2_tm1
    return b_s_tm1


def revolve(base: int, length: int, slots: int) -> Iterator[Action]:
    """Reverse steps ``base .. base + length - 1`` optimally with ``slots`` checkpoints.

    Precondition: the live state is ``x_base`` and, if ``length > 1``, it is
    stored (counted in ``slots``; the caller stores it). Makes exactly
    ``optimal_forward_steps(length, slots) - 1`` forward steps and releases
    everything it stores. Other strategies (online, multistage) reverse their
    segments with it. The actions of :func:`revolve_tasks`, one task at a time.
    """
    # Actions are made with tuple.__new__ (see _patterns): this is the planning hot path.
    new = tuple.__new__
    store_all = _patterns.store_all
    for start, stop, restore, store in revolve_tasks(base, length, slots):
        if restore:
            yield new(Restore, (start,))
        if store is None:
            yield from store_all(start, stop - start)
        else:
            yield new(Advance, (start, stop, False))
            if store:
                yield new(Store, (stop, False))  # released by the right part's last Reverse


def revolve_tasks(base: int, length: int, slots: int) -> Iterator[tuple[int, int, bool, bool | None]]:
    """Revolve's recursion, the one implementation of it: :func:`revolve`'s tasks ``(base, stop, restore, store)``.

    Each task starts at ``x_base``, read back from its checkpoint first if
    ``restore`` (the live state is elsewhere). With ``store`` None it is a
    leaf: advance to ``x_{stop-1}`` keeping the states on the way, then
    reverse steps ``stop - 1`` down to ``base``, releasing every checkpoint
    from ``x_base`` up. Otherwise it is a split: advance to ``x_stop`` (the
    split point), and store it if ``store``. :func:`revolve` turns tasks into
    actions; the engine runs them for :class:`BinomialCheckpointing` without
    making actions at all (``revseq.engine``, ``_Run.revolve``).

    With one slot the split is at the last step (``length - 1``): the
    sweeps of :func:`_patterns.sweeps`, task by task.
    """
    # Explicit stack rather than recursion: the depth is up to c + r, which can
    # pass Python's recursion limit for large budgets, and nested generators
    # would make every task pay for every level. The stack holds sub-problems
    # (base, length, slots, restore): a left part is pushed with the Restore of
    # its base, deferred until the right part pushed above it is done. This loop
    # is the planning hot path (1.5 million actions for n = 10**6, c = 30): keep it flat.
    stack = [(base, length, slots, False)]
    pop, push, split = stack.pop, stack.append, _split
    while stack:
        base, length, slots, restore = pop()  # live is x_base (after the restore), stored too if length > 1
        if slots >= length - 1:
            yield base, base + length, restore, None
        else:
            mid = base + (split(length, slots) if slots > 1 else length - 1)
            push((base, mid - base, slots, True))
            if base + length - mid > 1:
                yield base, mid, restore, True
                push((mid, base + length - mid, slots - 1, False))
            else:  # a right part of one step is a leaf at once (x_mid is not stored)
                yield base, mid, restore, False
                yield mid, mid + 1, False, None


def revolve_counts(length: int, slots: int) -> tuple[int, int, int]:
    """``(peak, writes, reads)`` of :func:`revolve`: checkpoints held at once, states stored, restores.

    Counted as a fragment: ``x_base`` (stored by the caller when
    ``length > 1``) is in the peak but not in the writes. Computed without
    walking the schedule, in ``O((c + r) log)`` at worst and usually far
    less (below).

    The peak is ``min(slots, length - 1)``: every right part of a split has
    at least ``slots`` steps, so the chain of right parts fills every slot.
    Writes and reads add up over the recursion of :func:`revolve`: a split
    into a left part ``(j, s)`` and a right part ``(length - j, s - 1)``
    adds one restore (of ``x_base``) and one store (of ``x_mid``; its right
    part always has more than one step). With ``b(s, t) = C(s + t, s)``, the
    repetition number ``t`` and the offset ``d = length - b(s, t - 1)``,
    :func:`_split` makes one of three splits, and in each one part has a
    closed form (:func:`_revolve_leaf`), so the recursion is one chain:

    A. ``d <= b(s - 2, t - 1)``: left ``b(s, t - 2)`` (canonical), right
       ``b(s - 1, t - 1) + d``: the same ``t`` and ``d`` with a slot fewer;
    B. ``d < b(s - 1, t - 1) + b(s - 2, t - 1)``: right ``b(s - 1, t - 1) +
       b(s - 2, t - 1)`` (closed form below), left the same ``s`` with
       ``t - 1`` and ``d - b(s - 2, t - 1)``;
    C. otherwise: left ``b(s, t - 1)`` (canonical), right ``d``: the same
       ``t`` and ``e = b(s, t) - length`` with a slot fewer.

    A run of one case continues while an inequality that is monotone in
    ``s`` (A, C) or ``t`` (B) holds, so each run is found by bisection and
    its parts summed by the hockey-stick identity. Measured: the chain is
    14 runs for ``n = 10**12, c = 10`` and 3 for ``n = 10**6, c = 1000``,
    at most 50 for every ``n <= 10**30`` and ``c`` tried (under a
    millisecond), where walking every split with memoisation (store-all and
    one slot as the only leaves) meets 1_131 and 1_997 distinct
    sub-problems, 68_179 for ``n = 10**12, c = 3`` (1 s) and 199_997 for
    ``n = 10**10, c = 10**5`` (2 s): it grows like ``c`` and like
    ``n**(1/3)``. The tests compare every count with
    :func:`~revseq.simulate`, and with that memoised walk for large ``n``.
    """
    writes = reads = 0
    size, s = length, slots
    while True:
        leaf = _revolve_leaf(size, s)
        if leaf is not None:
            return min(slots, length - 1), writes + leaf[1], reads + leaf[2]
        t = _repetitions(size, s)  # >= 2: not a leaf
        d = size - _b(s, t - 1)
        if d <= _b(s - 2, t - 1):  # A, down s while d <= b(s' - 2, t - 1)
            low = _lowest(3, s, functools.partial(_stays_a, t, d))
            size -= _hockey(t - 2, low, s)  # the left parts b(s', t - 2)
            writes += _hockey(t - 2, low - 1, s - 1)  # 1 + b(s' - 1, t - 2) - 1 each
            reads += s - low + 1 if t == 2 else _hockey(t - 3, low, s)  # 1 + b(s', t - 3) - 1 each
            s = low - 1
        elif d < _b(s - 1, t - 1) + _b(s - 2, t - 1):  # B, down t while d' stays in B's range
            g = _b(s - 1, t - 1) - d  # d' = b(s - 1, t' - 1) - g for every t' of the run
            low = _lowest(2, t, functools.partial(_stays_b, s, g))
            parts = _hockey(s - 2, low - 1, t - 1)  # the right parts' stores, b(s - 2, t' - 1) each
            restores = _hockey(s - 1, low - 1, t - 1)  # and restores, b(s - 1, t' - 1) each
            size -= parts + restores  # the right parts are b(s - 1, t' - 1) + b(s - 2, t' - 1) long
            writes += parts
            reads += restores
        else:  # C, down s while b(s' - 3, t) >= e
            e = _b(s, t) - size
            low = _lowest(3, s, functools.partial(_stays_c, t, e))
            size -= _hockey(t - 1, low, s)  # the left parts b(s', t - 1)
            writes += _hockey(t - 1, low - 1, s - 1)  # 1 + b(s' - 1, t - 1) - 1 each
            reads += _hockey(t - 2, low, s)  # 1 + b(s', t - 2) - 1 each
            s = low - 1


def _b(s: int, t: int) -> int:
    """``C(s + t, s)``: the longest reversal ``s`` checkpoints make with repetition number ``t``."""
    return math.comb(s + t, s)


def _hockey(a: int, low: int, high: int) -> int:
    """``sum(C(x + a, a) for x in range(low, high + 1))``, ``0 <= low``, by the hockey-stick identity."""
    if high < low:
        return 0
    return math.comb(high + a + 1, a + 1) - math.comb(low + a, a + 1)


def _stays_a(t: int, d: int, slots: int) -> bool:
    """Whether the split of ``b(slots, t - 1) + d`` is case A of :func:`revolve_counts`."""
    return _b(slots - 2, t - 1) >= d


def _stays_b(s: int, g: int, t: int) -> bool:
    """Whether the split of ``b(s, t - 1) + b(s - 1, t - 1) - g`` with ``s`` slots is case B."""
    return _b(s - 1, t - 2) > g > -_b(s - 2, t - 1)


def _stays_c(t: int, e: int, slots: int) -> bool:
    """Whether the split of ``b(slots, t) - e`` is case C (given that its repetition number is ``t``)."""
    return _b(slots - 3, t) >= e


def _lowest(low: int, high: int, holds: Callable[[int], bool]) -> int:
    """The least ``x`` in ``low .. high`` from which ``holds`` is true up to ``high`` (monotone; true at ``high``)."""
    while low < high:
        mid = (low + high) // 2
        if holds(mid):
            high = mid
        else:
            low = mid + 1
    return low


def _revolve_leaf(length: int, slots: int) -> tuple[int, int, int] | None:
    """:func:`revolve_counts` where it has a closed form, else None.

    Where :func:`revolve` does not split (every state kept; one slot,
    sweeps), with two slots (:func:`_two_slots`), and for the canonical
    lengths ``b(s, t)``, whose split is into ``b(s, t - 1)`` and ``b(s - 1,
    t)``: writes and reads then follow Pascal's rule, and are ``b(s - 1, t)
    - 1`` and ``b(s, t - 1) - 1``. Case B's right part, ``b(s, t - 1) + b(s
    - 1, t - 1)`` long with ``s`` slots, splits into ``b(s, t - 1) - b(s -
    2, t - 1)`` and the same shape with ``s - 1``, and so on: its counts are
    ``b(s - 1, t - 1) - 1`` and ``b(s, t - 1) - 1`` (checked, like all of
    these, against the simulator).
    """
    if slots >= length - 1:  # store_all: x_base and length - 2 kept states
        return max(length - 1, 0), max(length - 2, 0), 0
    if slots == 1:  # sweeps from x_base, length >= 3: restored once per sweep but the first
        return 1, 0, length - 2
    if slots == 2:
        return _two_slots(length)
    t = _repetitions(length, slots)
    if length == _b(slots, t):
        return slots, _b(slots - 1, t) - 1, _b(slots, t - 1) - 1
    if length == _b(slots, t - 1) + _b(slots - 1, t - 1):
        return slots, _b(slots - 1, t - 1) - 1, _b(slots, t - 1) - 1
    return None


def _two_slots(length: int) -> tuple[int, int, int]:
    """:func:`revolve_counts` with two slots, ``length >= 4``, in O(1).

    With two slots :func:`_split` leaves a right part of ``u + 1`` steps
    (reversed by sweeps: ``u - 1`` restores, the store of ``x_mid``), ``u``
    the repetition number of the length, ``C(u + 1, 2) < length <= C(u + 2,
    2)``. Write ``length = C(u + 1, 2) + d`` (``1 <= d <= u + 1``): the left
    part is ``(u - 1, d - 1)`` in the same terms, or, from ``d = 1``, the top of
    the block below, ``(u - 2, u - 1)``, whose left parts are all tops. So
    the chain of left parts is counted, not walked, down to a length of at
    most 3, whose states are all kept.
    """
    u = _repetitions(length, 2)
    d = length - math.comb(u + 1, 2)
    splits = min(u, d) - 1  # (u, d) -> (u - 1, d - 1) while both are >= 2
    u, d = u - splits, d - splits
    if u >= 2:  # d == 1: to the top of block u - 2, then down the tops to block 1
        top = u - 2
        splits += 1 + max(top - 1, 0)
        u = min(top, 1)
        d = u + 1
    last = math.comb(u + 1, 2) + d  # the length left to the final store-all
    # Every right part has at least 3 steps: one store each; its steps but one are restores.
    return 2, splits + max(last - 2, 0), length - last - splits


def _auto_checkpoints(n: int) -> int:
    # The fewest checkpoints with repetition number <= 2: C(c + 2, 2) >= n. The estimate is within 2 of
    # it, so the loops below run at most 3 times: O(1) big-int operations for any n.
    c = max(1, math.isqrt(2 * n) - 2)
    while math.comb(c + 2, 2) < n:
        c += 1
    while c > 1 and math.comb(c + 1, 2) >= n:
        c -= 1
    return c


@final
@attrs.frozen
class BinomialCheckpointing(ReversalStrategy):
    """Revolve: the proven minimum of forward steps for a fixed number of checkpoints.

    Cost with ``c`` checkpoints: exactly ``optimal_forward_steps(n, c)``
    forward steps, about ``r n`` where ``r`` is the smallest integer with
    ``C(c + r, c) >= n`` (so ``c`` and ``r`` both near ``log n`` give
    ``O(n log n)`` work in ``O(log n)`` memory), and never more than ``c``
    checkpoints. Planning is lazy: memory grows with ``c + r``, not ``n``.
    :meth:`cost` is computed without walking the schedule
    (:func:`revolve_counts`), in well under a millisecond for any ``n``
    (``n = 10**12``, ``c = 10``: about 0.2 ms). Pick it whenever the number
    of states that fit in memory is known.

    Parameters
    ----------
    checkpoints:
        The budget ``c >= 1``, x_0's copy included. ``None`` (the default)
        picks, for each ``n``, the fewest checkpoints with which no step is
        recomputed more than twice (about ``sqrt(2 n)``; at most ``2 n``
        forward steps), the rule equinox and diffrax use.
    max_bytes:
        The budget in bytes instead: as many checkpoints as states of the
        run's size fit (the engine knows the size from ``x0``).

    >>> BinomialCheckpointing(checkpoints=15).cost(10_000).forward_steps
    45156
    >>> BinomialCheckpointing(max_bytes=2**20).sized(800 * 100).budget(10_000)  # 1 MiB of 100-float states
    13
    """

    checkpoints: int | None = attrs.field(default=None, converter=as_int, validator=int_at_least(1, optional=True))
    max_bytes: int | None = attrs.field(
        default=None, kw_only=True, converter=as_int, validator=int_at_least(1, optional=True)
    )

    def __attrs_post_init__(self) -> None:
        if self.checkpoints is not None and self.max_bytes is not None:
            raise ParameterError(
                f"give the budget once, as checkpoints or as max_bytes, got checkpoints={self.checkpoints} "
                f"and max_bytes={self.max_bytes}"
            )

    def sized(self, state_nbytes: int) -> BinomialCheckpointing:
        if self.max_bytes is None:
            return self
        return BinomialCheckpointing(checkpoints=checkpoints_in(self.max_bytes, state_nbytes))

    def budget(self, n: int) -> int:
        """The number of checkpoints used for ``n`` steps."""
        if self.max_bytes is not None:
            raise unsized(self)
        return self.checkpoints if self.checkpoints is not None else _auto_checkpoints(n)

    def actions(self, n: int) -> Iterator[Action]:
        return _patterns.from_x0(n, revolve(0, n, self.budget(n)))

    def bounds(self, n: int) -> Bounds:
        c = self.budget(n)
        return Bounds(forward_steps=optimal_forward_steps(n, c), checkpoints=min(c, n - 1))

    def _closed_cost(self, n: int) -> Cost:
        c = self.budget(n)
        peak, writes, reads = revolve_counts(n, c)
        # x_0 stored first (n > 1); the call producing x_n comes with the first Reverse.
        return Cost(
            n=n, forward_steps=revolve_advances(n, c) + 1, peak_checkpoints=peak, writes=writes + (n > 1), reads=reads
        )
