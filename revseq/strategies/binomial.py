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
from collections.abc import Iterator
from typing import final

import attrs

from revseq._validate import as_int, check_int, checkpoints_in, int_at_least, unsized
from revseq.errors import ParameterError
from revseq.schedule import Action, Advance, Bounds, Restore, Store
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
    r, reach = 0, 1  # reach = C(c + r, c)
    while reach < n:
        r += 1
        reach = reach * (c + r) // r
    return r


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
    t = 2
    while math.comb(s + t, s) < n:
        t += 1
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
    segments with it.
    """
    # Explicit stack rather than recursion: the depth is up to c + r, which can
    # pass Python's recursion limit for large budgets, and nested generators
    # would make every action pay for every level. The stack holds
    # sub-problems (base, length, slots) and the Restore of a base deferred
    # until the sub-problem pushed above it is done. This loop is the planning hot
    # path (1.5 million actions for n = 10**6, c = 30): keep it flat.
    # Actions are made with tuple.__new__ (see _patterns); tasks are plain
    # tuples, told apart from the deferred Restores by their exact type.
    new = tuple.__new__
    stack: list[tuple[int, int, int] | Restore] = [(base, length, slots)]
    pop, push = stack.pop, stack.append
    store_all, sweeps, split = _patterns.store_all, _patterns.sweeps, _split
    while stack:
        task = pop()
        if type(task) is not tuple:
            yield task  # type: ignore[misc]  # a Restore
            continue
        base, length, slots = task  # type: ignore[misc]  # live is x_base, stored too if length > 1
        if slots >= length - 1:
            yield from store_all(base, length)
        elif slots == 1:
            yield from sweeps(base, length)
        else:
            mid = base + split(length, slots)
            yield new(Advance, (base, mid, False))
            push((base, mid - base, slots))
            push(new(Restore, (base,)))
            if base + length - mid > 1:
                yield new(Store, (mid, False))  # released by the right part's last Reverse
            push((mid, base + length - mid, slots - 1))


def _auto_checkpoints(n: int) -> int:
    # The fewest checkpoints with repetition number <= 2: C(c + 2, 2) >= n.
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
    Pick it whenever the number of states that fit in memory is known.

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
