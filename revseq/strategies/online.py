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

import math
import sys
from collections.abc import Iterator
from typing import final

import attrs

from revseq import _limits
from revseq._validate import as_int, check_int, checkpoints_in, int_at_least, unsized
from revseq.errors import ParameterError
from revseq.schedule import Action, Advance, Bounds, Free, Restore, Reverse, Store
from revseq.strategies.base import OnlineStrategy
from revseq.strategies.binomial import _repetitions, revolve, revolve_advances

__all__ = ["OnlineCheckpointing", "online_lower_bound"]


MAX_COST_STEPS = 10**7
"""The longest run :meth:`OnlineCheckpointing.cost` simulates (one to two minutes); longer ones are refused."""


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


class _Growing:
    """``T(length, slots)`` for a segment that grows one step at a time, in O(1) per step.

    ``T(l + 1, s) - T(l, s)`` is the repetition number ``r(l + 1, s)``, which
    steps up when ``l`` passes ``C(s + r, s)``.
    """

    __slots__ = ("length", "r", "reach", "slots", "value")

    def __init__(self, length: int, slots: int) -> None:
        self.length, self.slots, self.value = length, slots, revolve_advances(length, slots)
        self.r = _repetitions(length, slots)
        self.reach = math.comb(slots + self.r, slots)  # C(slots + r, slots) >= length

    def grow(self) -> None:
        self.length += 1
        if self.length > self.reach:
            self.r += 1
            self.reach = self.reach * (self.slots + self.r) // self.r
        self.value += self.r


def _stumm_walther(c: int) -> Iterator[tuple[int, int]]:
    """``(step, slot)`` for each state Stumm & Walther's Algorithm I stores, steps ``< (c+1)(c+2)/2 - 1``.

    The rule as equinox's ``_stumm_walther_i`` states it (THEORY 4.2): the
    slot pointer ``i`` cycles through ``1 .. o``; at step ``p`` the cycle
    shortens (``o`` drops by one) and the next stop moves ``o`` steps on.
    """
    i, o, p, save = 0, c, c, True
    for step in range(_optimal_range(c)):
        if save:
            yield step, i
            i = 1 if i + 1 > o else i + 1
        if step + 1 == p:
            save = False
        if step == p:
            p += o
            o -= 1
            i = o
            save = o > 0


def _adaptive(c: int, held: list[int], t: int) -> Iterator[tuple[int, int]]:
    """``(step, evicted)`` for each state stored from step ``t`` on; ``held``: the ``c`` positions, sorted.

    At each step ``t`` (live ``x_t``) three candidates are priced, as the
    reversal's cost if the run stopped at ``x_{t+1}``: store nothing; store
    ``x_t`` in place of an inner checkpoint ``p_j`` (``0 < j < k = c - 1``),
    which merges segments ``j - 1`` and ``j`` and gives every later segment a
    checkpoint more; store it in place of the last one, ``p_k``. Ties go to
    storing nothing, then to the leftmost checkpoint.

    Only the last segment grows with ``t``, so the best inner eviction is
    settled once per change of ``held``, and the three terms that grow are
    updated in O(1) per step. The arrays below are prefix sums and a prefix
    minimum over segments, so a change at ``p_j`` recomputes only the entries
    from ``j - 1`` on; the rule mostly evicts one of the last few.
    """
    k = c - 1
    seg: list[int] = []  # seg[i]: T(l_i, c - i), segment i = [p_i, p_{i+1}) as it is
    gain: list[int] = []  # gain[i]: what one checkpoint more would change in seg[i] (<= 0)
    before = [0]  # before[i] = seg[0] + ... + seg[i - 1]
    gains = [0]  # gains[j] = gain[1] + ... + gain[j]
    # best[j]: the least, over 1 <= j' <= j, of what evicting p_j' changes (merging segments j' - 1 and j'),
    # less gains[j']: add gains[k - 1] for the saving on the segments right of j'.
    best: list[tuple[float, int]] = [(math.inf, 0)]
    changed = 0  # the first segment whose entries are out of date
    while True:
        del seg[changed:], gain[changed:], before[changed + 1 :]
        for i in range(changed, k):
            length = held[i + 1] - held[i]
            cost = revolve_advances(length, c - i)
            seg.append(cost)
            gain.append(revolve_advances(length, c - i + 1) - cost)
            before.append(before[i] + cost)
        changed = max(changed, 1)
        del gains[changed:], best[changed:]
        for j in range(changed, k):
            gains.append(gains[j - 1] + gain[j])
            merge = revolve_advances(held[j + 1] - held[j - 1], c - j + 1) - seg[j - 1] - seg[j] - gains[j]
            best.append(best[j - 1] if best[j - 1][0] <= merge else (merge, j))
        inner = before[k] + best[k - 1][0] + gains[k - 1]  # all but the last segment, after the best inner eviction
        keep = _Growing(t + 1 - held[k], c - k)  # the last segment, if x_t is not stored
        shifted = _Growing(t - held[k], c - k + 1)  # the same with one checkpoint more (an inner eviction)
        merged = _Growing(t - held[k - 1], c - k + 1)  # the last two merged (p_k evicted)
        while before[k] + keep.value <= min(inner + shifted.value, before[k - 1] + merged.value):
            t += 1
            keep.grow()
            shifted.grow()
            merged.grow()
        j = best[k - 1][1] if inner + shifted.value <= before[k - 1] + merged.value else k
        yield t, held.pop(j)
        held.append(t)
        changed = j - 1
        t += 1


def _placements(c: int) -> Iterator[tuple[int, int | None]]:
    """``(step, evicted)`` for every state the forward sweep stores; ``evicted`` is the key it replaces."""
    slots: dict[int, int] = {}  # slot -> step: a dict, not a list of c, as c may be far larger than any run
    for step, slot in _stumm_walther(c):
        yield step, slots.get(slot)
        slots[slot] = step
    if c > 1:  # with one checkpoint, x_0 is all there is room for
        yield from _adaptive(c, sorted(slots.values()), _optimal_range(c))


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
    ``n`` with :meth:`for_max_steps`. :meth:`cost` simulates the schedule
    (no closed form is known past the optimal range): about 10 s per
    million steps.

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

    def _closed_cost(self, n: int) -> None:
        # No closed form: cost() simulates the schedule, at about 10 us a step (7-10 s per million).
        if n > MAX_COST_STEPS:
            raise ParameterError(
                f"n must be <= {MAX_COST_STEPS} for {self!r}.cost(n), got {n}: an online schedule has no "
                f"closed-form cost, and simulating it takes about 10 s per million steps (this one about "
                f"{_limits.format_duration(n * 1e-5)}); online_lower_bound(n, c) gives its fewest forward "
                f"steps in O(1), which it meets exactly up to (c + 1)(c + 2)/2 - 1 steps"
            )

    def bounds(self, n: int) -> Bounds:
        c = self.budget()
        optimal = online_lower_bound(n, c) if n <= _optimal_range(c) else None
        return Bounds(forward_steps=optimal, checkpoints=min(c, n))

    def forward(self) -> Iterator[Action]:
        live = 0
        for step, evicted in _placements(self.budget()):
            if step > live:
                yield Advance(live, step)
                live = step
            if evicted is not None:
                yield Free(evicted, evicted + 1)
            yield Store(step)
        # Only with one checkpoint do the placements end: x_0 is kept, and the run goes on until it stops.
        yield Advance(live, sys.maxsize)

    def backward(self, n: int, stored: tuple[int, ...]) -> Iterator[Action]:
        c = self.budget()
        ends = (*stored[1:], n)
        run: tuple[int, int] | None = None  # one-step segments start .. stop - 1, pending: one Reverse takes them all
        for i in range(len(stored) - 1, -1, -1):  # segment i = [p_i, p_{i+1}), the last first
            base, end = stored[i], ends[i]
            if end - base == 1:
                run = (base, run[1] if run else end)
                continue
            if run:
                yield Reverse(*run)
                run = None
            yield Restore(base)
            yield from revolve(base, end - base, c - i)  # c - i: p_0 .. p_{i-1} are still held
        if run:
            yield Reverse(*run)
