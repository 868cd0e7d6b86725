"""Multistage checkpointing: a few checkpoints in memory, more on disk, where disk traffic costs time.

When a state is large (a PDE field of hundreds of MB), a handful fit in RAM
and many fit on disk, but writing one to disk or reading it back costs about
as much as a step, or more. :class:`MultistageCheckpointing` minimises

    time = step * forward_steps + write * disk_writes + read * disk_reads

(:meth:`DiskCosts.time`; memory reads and writes are free), exactly, by a
dynamic programme over where each segment of the reversal keeps its first
state ``x_base``. With unlimited disk it finds the optimum of Aupy,
Herrmann, Hovland and Robert (2016, SIAM J. Sci. Comput. 38(3), "Optimal
multistage algorithm for adjoint computation") in the variant whose disk
checkpoints may be read more than once (THEORY.md 5.1). With ``uf`` the
step cost, ``T`` revolve's fewest advances and the adjoints left out (every
schedule makes the same ``n`` of them)::

    R[n]    = uf * T(n, ram)                                      revolve in memory
    D1[n]   = min(R[n], min_j  j uf + R[n-j] + read + D1[j])            x_base on disk
    Dinf[n] = min(R[n], min_j  write + j uf + Dinf[n-j] + read + D1[j])  x_base live

``Dinf[n]`` is the optimum (``step`` more for the call producing ``x_n``).
Reading ``Dinf``'s left part back with ``R`` instead of ``D1`` (each disk
checkpoint read once, checkpoint_schedules' default) is not always optimal:
ram=1, write=6, read=2, n=9 costs 37 there and 36 here (their accounting,
adjoints at 1 each).

With a budget of ``disk`` checkpoints, writing to disk on the first sweep
only (``Dinf_d[n] = min(R[n], min_j write + j uf + Dinf_{d-1}[n-j] + read +
D1[j])``) is no longer optimal: once a right part has released its disk
slots, the left part may want them (ram=0, disk=2, write=read=0.5, n=6:
12 at best, 12.5 that way). The programme revseq solves lets every segment
choose. Row ``k`` is a budget of ``k`` disk slots (row 0: memory alone,
revolve); ``F_L(n, k)`` reverses ``n`` steps from a live ``x_base`` kept
nowhere yet, ``F_D(n, k)`` one kept on disk::

    S_M(n, k) = min_j  j uf + uf T(n-j, ram-1) + F_L(j, k)              x_base in memory
    S_D(n, k) = min_j  j uf + F_L(n-j, k-1) + read + F_D(j, k)          x_base on disk
    F_L = min(S_M, write + S_D)     F_D = min(S_D, S_M)     F_L(n, 0) = uf T(n, ram)

A segment keeping ``x_base`` in memory reverses its right part in memory
alone: a segment with disk slots left may move ``x_base`` between the levels
before any split. With unlimited disk there is one row, ``k - 1 = k``, and
``F_L = Dinf``. The programme is checked, not proven: it equals an
exhaustive search over every schedule of revseq's actions for all n <= 9
(and many n = 10) with ram <= 3, disk in {1, 2, 3, unlimited} and five
cost pairs, and a more general programme (``x_base`` anywhere, right parts
with any share of both levels) for n <= 40; see
``tests/multistage_oracles.py``.

The programme costs ``O(n^2)`` with unlimited disk (or a budget the
unlimited-disk plan fits in) and ``O(n^2 disk)`` when the budget binds. It
is vectorised with numpy, cached per configuration, and solved by default up
to :data:`EXACT_WORK`; longer runs get the plans of
``revseq.strategies._multistage_plans``: periodic (unlimited disk; equal to
the exact optimum wherever that was measured) or, for a binding budget, the
better of revolve over ``ram + disk`` slots with the outer ones on disk and
binomial checkpointing over blocks reversed exactly (within 1.06x of the
optimum where measured; docs/multistage.md). ``exact=True`` solves the
programme at any ``n``, refusing problems over :data:`MAX_PLAN_WORK`.

With ``depth=k`` the plan is for an :class:`revseq.overlap.OverlappedStore`
of depth ``k`` (writes behind, reads ahead, on one background thread):
``revseq.strategies._overlapped`` solves the same segments with each write and read
priced by what the computation around it hides (THEORY.md 6.2), in ``ram -
k`` memory slots. Overlapped costs do not add up, so that programme is an
estimate and the strategy's predicted time is the event simulation
:func:`revseq.overlap.overlapped_time` of its actions; docs/storage.md,
"Overlapped I/O", has its checks against exhaustive search.
"""

from __future__ import annotations

import math
import numbers
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, final

import attrs
import numpy as np
import numpy.typing as npt

from revseq._validate import as_int, check_int, int_at_least, unsized
from revseq.errors import ParameterError
from revseq.schedule import Action, Advance, Bounds, Cost, Free, Restore, Reverse, Store, simulate
from revseq.strategies import _multilevel
from revseq.strategies._multistage_plans import (
    DISK,
    LIVE,
    MEMORY,
    REVOLVE,
    Counts,
    DiskRevolve,
    Nested,
    Periodic,
    Plan,
    RamOnly,
    revolve_tally,
)
from revseq.strategies.base import ReversalStrategy
from revseq.strategies.binomial import revolve

__all__ = ["EXACT_WORK", "MAX_PLAN_WORK", "DiskCosts", "Level", "MultistageCheckpointing"]

MAX_PLAN_WORK = 10**10
"""The largest exact programme ``exact=True`` accepts: ``n**2`` times the disk rows.

The default plans longer runs without it, past :data:`EXACT_WORK`. With
unlimited disk, or a budget the unlimited-disk plan fits in, there is one
row: ``n = 100_000`` is the longest accepted (about half a minute to plan).
A binding budget of ``disk`` slots has ``disk + 1`` rows (``disk = 10``: up
to ``n = 30_000``). Beyond it ``exact=True`` raises
:class:`~revseq.errors.ParameterError` rather than run for hours.
"""

_INF = math.inf
_Floats = npt.NDArray[np.float64]


def _as_float(value: Any) -> Any:
    """attrs converter: ints and numpy numbers become float; anything else is left for the validator."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


def _cost_at_least_zero(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, float) or not math.isfinite(value) or value < 0:
        raise ParameterError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


def _cost_above_zero(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, float) or not math.isfinite(value) or value <= 0:
        raise ParameterError(f"{attribute.name} must be a finite number > 0, got {value!r}")


@final
@attrs.frozen
class DiskCosts:
    """The time of one forward step, one disk write and one disk read, in any one unit.

    Memory writes and reads are taken as free, and the adjoint steps are left
    out (every strategy makes the same ``n`` of them). The defaults (a step
    1, a write 2, a read 1) fit a state of a few hundred MB on a local SSD
    next to a step of about a second: writes are slower than reads, and both
    are of the order of a step. Measure yours: time one step, one
    ``np.save`` of a state and one ``np.load``, and pass the three (only
    their ratios matter for the plan: costs scaled by a common factor, from
    ``1e-300`` to ``1e307``, give the same schedule, and
    :meth:`MultistageCheckpointing.predicted_time` in their unit).

    ``adjoint`` is the time of one adjoint (reverse) step. The synchronous
    plan ignores it; a plan for overlapped I/O
    (``MultistageCheckpointing(..., depth=k)``) uses it, because a disk
    read is hidden behind the adjoint steps that run before it is needed.

    >>> from revseq import BinomialCheckpointing
    >>> costs = DiskCosts(step=1.0, write=3.0, read=1.5)
    >>> costs.time(BinomialCheckpointing(2).cost(100)), costs.time(MultistageCheckpointing(2, costs=costs).cost(100))
    (846.0, 298.5)
    """

    step: float = attrs.field(default=1.0, converter=_as_float, validator=_cost_above_zero)
    write: float = attrs.field(default=2.0, converter=_as_float, validator=_cost_at_least_zero)
    read: float = attrs.field(default=1.0, converter=_as_float, validator=_cost_at_least_zero)
    adjoint: float = attrs.field(default=0.0, converter=_as_float, validator=_cost_at_least_zero)

    def time(self, cost: Cost) -> float:
        """``step * forward_steps + write * disk_writes + read * disk_reads`` of a schedule's cost."""
        return self._weigh(cost.forward_steps, cost.disk_writes, cost.disk_reads)

    def _weigh(self, steps: int, writes: int, reads: int) -> float:
        return self.step * steps + self.write * writes + self.read * reads

    def _ratios(self) -> tuple[float, float, float]:
        """The three costs in the planner's unit: what the plan is made from.

        Only the ratios decide the plan, so the planner divides by the step
        (by the largest cost instead when a disk cost passes 2**64 steps,
        where a step is negligible), which also keeps its sums far from
        overflow: ``step=1e307`` reached ``inf`` within ten steps and made
        every choice a tie. Each ratio is then rounded to 32 significant
        bits, so that costs scaled by a common factor plan identically even
        though the factor rounds each of them differently (``6e307 / 1e307``
        is not exactly 6); the rounding changes the objective by less than
        ``2**-32`` relatively. Ratios with 32 bits or fewer, such as
        ``(1, 6, 2)`` or ``(1, 0.5, 0.25)``, are kept exactly, and so are the
        exact sums and ties that make the plan reproducible.
        """
        write, read = _snap(self.write / self.step), _snap(self.read / self.step)
        if max(write, read) <= _LARGEST_RATIO:
            return 1.0, write, read
        top = max(self.write, self.read)
        return _snap(self.step / top), _snap(self.write / top), _snap(self.read / top)

    def _overlap_ratios(self) -> tuple[float, float, float, float]:
        """:meth:`_ratios` and the adjoint in the same unit: what an overlap-aware plan is made from."""
        uf, w, r = self._ratios()
        top = max(self.write, self.read)
        unit = self.step if _snap(top / self.step) <= _LARGEST_RATIO else top
        return uf, w, r, _snap(self.adjoint / unit)


_RATIO_BITS = 32
_LARGEST_RATIO = 2.0**64


def _snap(x: float) -> float:
    """``x`` rounded to ``_RATIO_BITS`` significant bits (``inf`` stays ``inf``)."""
    if x == 0 or not math.isfinite(x):
        return x
    mantissa, exponent = math.frexp(x)
    return math.ldexp(round(mantissa * 2**_RATIO_BITS) / 2**_RATIO_BITS, exponent)


def _is_bool(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterError(f"{attribute.name} must be True or False, got {value!r} ({type(value).__name__})")


@final
@attrs.frozen
class Level:
    """One storage level of :class:`MultistageCheckpointing`: what it holds, and what a write and a read cost.

    ``capacity`` is the number of checkpoints it holds at most (``None``: no
    limit), or ``capacity_bytes`` the bytes (turned into states of the
    run's size by the engine). ``write`` and ``read`` are the time of
    storing one state there and of reading one back, in forward steps (a
    level whose write takes as long as 2.5 steps has ``write=2.5``). The
    first level of a list is memory, which the planner takes as free to
    write and read; the others follow from fastest to slowest (local NVMe,
    then a network filesystem, say), which is what the plan is optimal for.

    >>> Level(None, write=2.0, read=1.0)
    Level(capacity=None, write=2.0, read=1.0, capacity_bytes=None)
    """

    capacity: int | None = attrs.field(default=None, converter=as_int, validator=int_at_least(0, optional=True))
    write: float = attrs.field(default=0.0, converter=_as_float, validator=_cost_at_least_zero)
    read: float = attrs.field(default=0.0, converter=_as_float, validator=_cost_at_least_zero)
    capacity_bytes: int | None = attrs.field(
        default=None, kw_only=True, converter=as_int, validator=int_at_least(1, optional=True)
    )

    def __attrs_post_init__(self) -> None:
        if self.capacity is not None and self.capacity_bytes is not None:
            raise ParameterError(
                f"give a level's capacity once, as capacity (states) or capacity_bytes, "
                f"got capacity={self.capacity} and capacity_bytes={self.capacity_bytes}"
            )


_MAX_LEVELS = 15  # levels 0 .. 15 (revseq.schedule.MAX_LEVEL), the memory included


def _as_levels(value: Any) -> Any:
    """attrs converter: a list of levels becomes a tuple; anything else is left for the check."""
    return tuple(value) if isinstance(value, list) else value


def _check_levels(levels: Any) -> tuple[Level, ...]:
    if not isinstance(levels, tuple) or not 2 <= len(levels) <= _MAX_LEVELS:
        raise ParameterError(
            f"levels must be a list of 2 to {_MAX_LEVELS} revseq.Level, memory first, got {levels!r}; "
            f"for example levels=[Level(4), Level(None, write=2.0, read=1.0)]"
        )
    for k, level in enumerate(levels):
        if not isinstance(level, Level):
            raise ParameterError(
                f"levels[{k}] must be a revseq.Level, got {level!r} ({type(level).__name__}); "
                f"for example Level(capacity=100, write=2.0, read=1.0)"
            )
    memory = levels[0]
    if memory.capacity is None and memory.capacity_bytes is None:
        raise ParameterError(
            "levels[0] is memory and needs a capacity: the number of checkpoints that fit there "
            "(Level(4)), or capacity_bytes="
        )
    if memory.write or memory.read:
        raise ParameterError(
            f"levels[0] is memory, which the planner takes as free to write and read: give it write=0 and "
            f"read=0, got write={memory.write} and read={memory.read}"
        )
    if all(level.capacity == 0 for level in levels):
        raise ParameterError("every level has capacity 0, which leaves nowhere to keep x_0: give one capacity >= 1")
    return levels


def _costs_instance(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, DiskCosts):
        raise ParameterError(
            f"costs must be a DiskCosts, got {value!r} ({type(value).__name__}); "
            f"for example costs=DiskCosts(step=1.0, write=2.0, read=1.0)"
        )


@final
@attrs.frozen
class MultistageCheckpointing(ReversalStrategy):
    """Checkpoints in memory and on disk, placed to minimise step, write and read time together.

    For states so large that only ``ram`` of them fit in memory while many
    more fit on disk. The schedule minimises ``costs.time(cost(n))``, that
    is ``step * forward_steps + write * disk_writes + read * disk_reads``
    (:meth:`predicted_time` gives the minimum without simulating), over
    every schedule that never holds more than ``ram`` checkpoints in memory
    and ``disk`` on disk (Aupy, Herrmann, Hovland and Robert 2016, with disk
    checkpoints that may be read more than once; see the module's notes for
    the programme and for disk budgets). With expensive disk it is
    ``BinomialCheckpointing(ram)``; with cheap disk it stores on disk
    whatever would be recomputed.

    Planning is exact up to :data:`EXACT_WORK` (a dynamic programme,
    ``n = 8192`` with unlimited disk, about a second), and beyond it takes
    under a second at any ``n``: a periodic plan with unlimited disk (equal
    to the exact optimum in every case measured), and with a binding disk
    budget a heuristic within 1.06x of the optimum where that was measured
    (docs/multistage.md). Plans are cached per configuration.

    Parameters
    ----------
    ram:
        Checkpoints held in memory at most, x_0's copy included when it is
        there; ``0`` keeps every checkpoint on disk (and needs ``disk >= 1``).
    disk:
        Checkpoints held on disk at most; ``None`` (the default) for no limit.
        ``0`` is plain ``BinomialCheckpointing(ram)``.
    costs:
        The times of a step, a disk write and a disk read (:class:`DiskCosts`).
    ram_bytes:
        The memory budget in bytes instead of ``ram``: as many checkpoints as
        states of the run's size fit (the engine knows the size from ``x0``).
    exact:
        ``True`` solves the exact programme at every ``n`` (refused past
        :data:`MAX_PLAN_WORK`) instead of switching to the long-run plans.

    The engine puts disk checkpoints in its ``disk=`` store, a
    :class:`revseq.DiskStore` in a temporary directory by default.

    depth:
        ``0`` (the default): the disk store is synchronous, and the plan is
        the exact programme above. ``k >= 1``: a plan for an
        :class:`revseq.overlap.OverlappedStore` with ``depth=k``, whose
        ``k`` buffers take ``k`` of the ``ram`` states: the plan keeps at
        most ``ram - k`` checkpoints in memory (or ``ram``, when revolve in
        memory alone wins: it touches no disk and no buffer). Its
        programme prices a write by what the advance and the work after it
        hide, and a read by what the work before it hides, using
        ``costs.adjoint`` (THEORY.md 6.2; an estimate, see
        ``revseq.strategies._overlapped``); :meth:`predicted_time` is then the
        event simulation :func:`revseq.overlap.overlapped_time` of the
        plan's actions, adjoints included. Solved up to
        :data:`revseq.strategies._overlapped.OVERLAP_WORK` (``n = 4096``); longer runs get the
        synchronous long-run plan with ``ram - k`` checkpoints. ``depth``
        must be less than ``ram``, and does not combine with ``levels``.

    levels:
        Instead of ``ram``, ``disk`` and ``costs``: a list of
        :class:`Level`, memory first, then slower levels (local NVMe, a
        network filesystem, ...), each with its capacity and its write and
        read times in forward steps. Two levels mean exactly ``ram``,
        ``disk`` and ``costs=DiskCosts(1.0, write, read)`` (the same plan);
        with three or more the plan keeps each checkpoint at one of them
        (``Store(t, level=k)``) and minimises ``forward_steps + sum over
        levels of write * writes + read * reads`` (:meth:`time_of`). The
        engine takes one store per level below memory:
        ``disk=[nvme_store, nfs_store]``. ``ram``, ``disk`` and ``costs``
        then show the first two levels.

    The engine puts disk checkpoints in its ``disk=`` store, a
    :class:`revseq.DiskStore` in a temporary directory by default.

    >>> strategy = MultistageCheckpointing(ram=2, costs=DiskCosts(step=1.0, write=2.0, read=1.0))
    >>> strategy.cost(100)
    Cost(n=100, forward_steps=167, peak_checkpoints=2, writes=65, reads=3, peak_disk=31, disk_writes=31, disk_reads=31)
    >>> strategy.predicted_time(100), strategy.costs.time(strategy.cost(100))
    (260.0, 260.0)
    >>> nvme, nfs = Level(4, write=0.5, read=0.25), Level(None, write=4.0, read=2.0)
    >>> three = MultistageCheckpointing(levels=[Level(2), nvme, nfs])
    >>> three.predicted_time(100), three.time_of(three.cost(100))
    (275.5, 275.5)

    For an ``OverlappedStore(depth=1)``, in the same 3 states of memory (adjoints included):

    >>> timed = DiskCosts(step=1.0, write=2.0, read=1.0, adjoint=1.0)
    >>> MultistageCheckpointing(ram=3, costs=timed).predicted_time(100) + 100  # synchronous
    342.0
    >>> MultistageCheckpointing(ram=3, costs=timed, depth=1).predicted_time(100)
    248.0
    """

    ram: int | None = attrs.field(default=None, converter=as_int, validator=int_at_least(0, optional=True))
    disk: int | None = attrs.field(default=None, converter=as_int, validator=int_at_least(0, optional=True))
    costs: DiskCosts = attrs.field(factory=DiskCosts, validator=_costs_instance)
    ram_bytes: int | None = attrs.field(
        default=None, kw_only=True, converter=as_int, validator=int_at_least(1, optional=True)
    )
    exact: bool = attrs.field(default=False, kw_only=True, validator=_is_bool)
    levels: tuple[Level, ...] | None = attrs.field(default=None, kw_only=True, converter=_as_levels)
    depth: int = attrs.field(default=0, kw_only=True, converter=as_int, validator=int_at_least(0))

    def __attrs_post_init__(self) -> None:
        if self.depth and self.levels is not None:
            raise ParameterError(
                f"depth={self.depth} (a plan for overlapped I/O) works with ram/disk/costs, not with levels=: "
                f"give ram, disk and costs, or depth=0"
            )
        if self.depth and self.ram is not None and self.depth >= self.ram:
            raise ParameterError(
                f"depth must be an int < ram (the overlapped store's buffers are part of ram, and at least one "
                f"memory checkpoint must remain), got depth={self.depth} with ram={self.ram}"
            )
        if self.levels is not None:
            if self.ram is not None or self.disk is not None or self.costs != DiskCosts() or self.ram_bytes is not None:
                raise ParameterError(
                    "give either levels= or ram/disk/costs/ram_bytes, not both: levels[0] is the memory, "
                    "levels[1] the disk"
                )
            levels = _check_levels(self.levels)
            # The two-level view: what ram, disk and costs mean for the first two levels.
            object.__setattr__(self, "ram", levels[0].capacity)
            object.__setattr__(self, "ram_bytes", levels[0].capacity_bytes)
            object.__setattr__(self, "disk", levels[1].capacity)
            object.__setattr__(self, "costs", DiskCosts(1.0, levels[1].write, levels[1].read))
            return
        if self.ram is None and self.ram_bytes is None:
            raise ParameterError(
                "ram must be given: the number of checkpoints that fit in memory "
                "(or ram_bytes=, the bytes they may use)"
            )
        if self.ram is not None and self.ram_bytes is not None:
            raise ParameterError(
                f"give the memory budget once, as ram or as ram_bytes, "
                f"got ram={self.ram} and ram_bytes={self.ram_bytes}"
            )
        if self.ram == 0 and self.disk == 0:
            raise ParameterError("ram=0 and disk=0 leave nowhere to keep x_0: give ram >= 1 or disk >= 1 (or None)")

    def __repr__(self) -> str:
        if self.levels is not None:
            return f"MultistageCheckpointing(levels={list(self.levels)!r}, exact={self.exact!r})"
        return (
            f"MultistageCheckpointing(ram={self.ram!r}, disk={self.disk!r}, costs={self.costs!r}, "
            f"ram_bytes={self.ram_bytes!r}, exact={self.exact!r}" + (f", depth={self.depth!r})" if self.depth else ")")
        )

    def storage(self) -> tuple[Level, ...]:
        """The storage levels, memory first, whichever way they were given.

        >>> MultistageCheckpointing(ram=4, costs=DiskCosts(step=2.0, write=3.0, read=1.0)).storage()[1]
        Level(capacity=None, write=1.5, read=0.5, capacity_bytes=None)
        """
        if self.levels is not None:
            return self.levels
        costs = self.costs
        memory = Level(self.ram) if self.ram_bytes is None else Level(capacity_bytes=self.ram_bytes)
        return memory, Level(self.disk, write=costs.write / costs.step, read=costs.read / costs.step)

    def time_of(self, cost: Cost) -> float:
        """The time the plan minimises, of a schedule's ``cost`` (or a run's ``stats.as_cost()``).

        ``costs.time(cost)`` with two levels; with more, ``forward_steps +
        sum over levels k >= 1 of write_k * writes_k + read_k * reads_k``,
        in forward steps.
        """
        if self.levels is None or (len(self.levels) == 2 and not cost.deep_levels):
            return self.costs.time(cost)
        total = float(cost.forward_steps)
        for k, level in enumerate(self.levels[1:], 1):
            counts = cost.level(k)
            total += level.write * counts.writes + level.read * counts.reads
        return total

    def sized(self, state_nbytes: int) -> MultistageCheckpointing:
        if self.levels is not None and any(level.capacity_bytes is not None for level in self.levels):
            if state_nbytes <= 0:
                raise ParameterError(
                    "capacity_bytes needs states whose size is known (numpy arrays report nbytes), "
                    f"got a state of {state_nbytes} bytes"
                )
            levels = [
                level
                if level.capacity_bytes is None
                else Level(level.capacity_bytes // state_nbytes, level.write, level.read)
                for level in self.levels
            ]
            if all(level.capacity == 0 for level in levels):
                raise ParameterError(
                    f"the levels' capacity_bytes hold no state of {state_nbytes} bytes: give more bytes, "
                    f"or a level a capacity >= 1"
                )
            return MultistageCheckpointing(levels=levels, exact=self.exact)
        if self.ram_bytes is None:
            return self
        if state_nbytes <= 0:
            raise ParameterError(
                "ram_bytes needs states whose size is known (numpy arrays report nbytes), "
                f"got a state of {state_nbytes} bytes"
            )
        ram = self.ram_bytes // state_nbytes
        if ram == 0 and self.disk == 0:
            raise ParameterError(
                f"ram_bytes={self.ram_bytes} holds no state of {state_nbytes} bytes and disk=0: "
                f"give more ram_bytes, or disk >= 1"
            )
        if self.depth and self.depth >= ram:
            raise ParameterError(
                f"depth must be an int < ram: ram_bytes={self.ram_bytes} holds {ram} states of {state_nbytes} "
                f"bytes, which leaves no memory checkpoint beside depth={self.depth} buffers; give more ram_bytes "
                f"or a smaller depth"
            )
        return MultistageCheckpointing(ram=ram, disk=self.disk, costs=self.costs, exact=self.exact, depth=self.depth)

    def budget(self) -> int:
        """The number of checkpoints held in memory at most."""
        if self.ram is None or (self.levels is not None and any(lv.capacity_bytes for lv in self.levels)):
            raise unsized(self)
        return self.ram

    def _multilevel(self) -> _multilevel.LevelsPlans | None:
        """The K-level planner for three or more levels (None: two levels, planned by ``_Plans``)."""
        if self.levels is None or len(self.levels) == 2:
            return None
        self.budget()  # sized
        specs = tuple(
            _multilevel.LevelSpec(level.capacity, _snap(level.write), _snap(level.read)) for level in self.levels
        )
        return _multilevel.plans_for(specs, self.exact)

    def _levels_cost(self, n: int) -> Cost:
        """The K-level plan's cost for ``n`` steps, simulated (checked against the capacities) and cached."""
        plans = self._multilevel()
        assert plans is not None
        assert self.levels is not None
        key = ("cost", n)
        cost = plans.costs.get(key)
        if cost is None:
            caps = [level.capacity for level in self.levels]
            cost = simulate(
                plans.plan(n).actions(n),
                n,
                checkpoints=caps[0],
                disk_checkpoints=caps[1],
                deep_checkpoints=tuple(caps[2:]),
            )
            plans.remember(key, cost)
        return cost

    def predicted_time(self, n: int) -> float:
        """The ``costs.time`` of this schedule for ``n`` steps: the least of any schedule where it is exact.

        With ``depth > 0``: the wall time :func:`revseq.overlap.overlapped_time`
        predicts for the plan's actions with ``depth`` buffers, in the
        unit of :attr:`costs`, adjoints (``costs.adjoint`` each) and the
        call making ``x_n`` included (an event simulation, cached; about
        0.3 s at ``n = 1000``).

        In the unit of :attr:`costs`, and equal to ``costs.time(cost(n))``:
        the plan's forward steps and disk traffic are counted from the
        programme's table (without walking the schedule), then weighed. It is
        the optimum wherever the plan is exact (see the class notes), and
        ``inf`` only if that time exceeds the largest float.

        >>> MultistageCheckpointing(ram=1, costs=DiskCosts(write=6.0, read=2.0)).predicted_time(9)
        28.0
        """
        n = check_int("n", n, 1)
        plans = self._multilevel()
        if plans is not None:
            return plans.plan(n).time(n) + 1.0  # + 1: x_n's call
        if self.depth:
            return self._overlapped_time(n)
        counts = self._plan(n).counts(n)
        return self.costs._weigh(counts.steps + 1, counts.disk_writes, counts.disk_reads)  # + 1: x_n's call

    def is_exact(self, n: int) -> bool:
        """Whether the plan for ``n`` steps is the exact programme's, so that its time is the least possible.

        Otherwise it is a periodic plan (unlimited disk; equal to the optimum
        wherever that was measured) or, with a binding disk budget, the best
        of the long-run plans (within 1.06x of the optimum where measured);
        see the class notes.
        """
        n = check_int("n", n, 1)
        plans = self._multilevel()
        if plans is not None:
            return isinstance(plans.plan(n), _multilevel.LevelsTable)
        return not self.depth and isinstance(self._plan(n), _Table)

    def actions(self, n: int) -> Iterator[Action]:
        plans = self._multilevel()
        if plans is not None:
            return plans.plan(n).actions(n)
        return self._plan(n).actions(n)

    def bounds(self, n: int) -> Bounds:
        """At most ``ram`` checkpoints in memory; at every other level exactly the plan's peak (within capacity)."""
        if self._multilevel() is not None:
            cost = self._levels_cost(n)
            return Bounds(
                checkpoints=min(self.budget(), n - 1),
                disk_checkpoints=cost.peak_disk,
                deep_checkpoints=tuple(cost.level(k).peak for k in range(2, len(self.storage()))),
            )
        plan = self._plan(n)
        slots = self.budget() if not self.depth or isinstance(plan, RamOnly) else self.budget() - self.depth
        return Bounds(checkpoints=min(slots, n - 1), disk_checkpoints=plan.counts(n).peak_disk)

    def _closed_cost(self, n: int) -> Cost:
        if self._multilevel() is not None:
            return self._levels_cost(n)
        c = self._plan(n).counts(n)
        return Cost(
            n=n,
            forward_steps=c.steps + 1,  # the call producing x_n comes with the first Reverse
            peak_checkpoints=c.peak,
            writes=c.writes,
            reads=c.reads,
            peak_disk=c.peak_disk,
            disk_writes=c.disk_writes,
            disk_reads=c.disk_reads,
        )

    def _plan(self, n: int) -> Plan:
        """The plan for ``n`` steps: the exact programme's where it fits, else a periodic or nested one."""
        if self.depth:
            from revseq.strategies._overlapped import overlapped_plan  # it builds on this module

            return overlapped_plan(self.budget(), self.depth, self.disk, self.costs, self.exact, n)
        return _plans_for(self.budget(), self.disk, self.costs, self.exact).plan(n)

    def _overlapped_time(self, n: int) -> float:
        """The event-simulated wall time of this plan's actions with ``depth`` buffers (adjoints included), cached."""
        from revseq.overlap import time_overlapped
        from revseq.strategies._overlapped import SIMULATED

        key = (self.budget(), self.depth, self.disk, self.costs, self.exact, n)
        with _CACHE_LOCK:
            known = SIMULATED.get(key)
        if known is None:
            known = time_overlapped(self, n, self.costs, self.depth)
            with _CACHE_LOCK:
                SIMULATED[key] = known
                while len(SIMULATED) > 64:
                    SIMULATED.popitem(last=False)
        return known


# Where a segment keeps its first state x_base (live at the segment's start) while it splits,
# or _REVOLVE: in memory, reversing the whole segment in memory alone; _LIVE: not kept yet.
_MEMORY, _DISK, _REVOLVE, _LIVE = MEMORY, DISK, REVOLVE, LIVE


class _Table:
    """Values and choices of the programme for every length up to ``size`` and every disk budget row.

    Row ``k`` is a budget of ``k`` disk slots, row 0 being memory alone
    (revolve); with ``disk=None`` there is one row, unlimited, whose right
    parts use the same row. ``F_L[k, n]``: x_base live and nothing kept;
    ``F_D[k, n]``: x_base live and on disk. A segment either keeps x_base
    in memory and reverses its right part in memory alone with one slot
    fewer (``S_M``), or keeps it on disk and reverses its right part with
    one disk slot fewer (``S_D``)::

        S_M(n, k) = min_j  j uf + R_{ram-1}[n-j] + F_L(j, k)
        S_D(n, k) = min_j  j uf + F_L(n-j, k-1) + read + F_D(j, k)
        F_L = min(R_ram, S_M, write + S_D)        F_D = min(S_D, R_ram, S_M)

    ``R_ram[n] = uf T(n, ram)`` is revolve's time; ``S_M <= R_ram`` already,
    but on ties the plain revolve schedule is preferred (it is
    ``BinomialCheckpointing``'s, and restores less). Keeping x_base in
    memory and on disk at once never pays here: revseq's ``Free`` drops both
    copies, so x_base cannot go back to disk alone for free.
    """

    def __init__(
        self, ram: int, disk: int | None, ratios: tuple[float, float, float], size: int, adjoint: float | None = None
    ) -> None:
        self.fresh = _DISK  # the split a segment uses when it writes x_base to disk now (the overlap programme's own)
        self.contexts = 1  # the overlap programme has 2: plans followed by a disk read, or not
        if adjoint is not None:
            from revseq.strategies._overlapped import overlapped_programme  # it builds on this module

            overlapped_programme(self, ram, disk, ratios, adjoint, size)
            return
        rows = 1 if disk is None else disk + 1
        _check_work(size, rows, ram, disk)
        self.ram, self.size = ram, size
        self.row = 0 if disk is None else disk  # the row of the whole problem
        uf, w, r = ratios  # DiskCosts._ratios: a step is 1 (or a disk cost is), so the sums stay far from overflow
        FL = np.full((rows, size + 1), _INF)
        FD = np.full((rows, size + 1), _INF)
        FL[:, 1] = FD[:, 1] = 0.0
        # choice[have, k, n]: _MEMORY, _DISK or _REVOLVE, from x_base not kept (or in memory) / on disk
        self.choice = np.zeros((2, rows, size + 1), dtype=np.int8)
        self.split = np.zeros((2, rows, size + 1), dtype=np.int32)  # split[kind, k, n]: j
        peak_l = np.zeros((rows, size + 1), dtype=np.int32)  # disk checkpoints held at once by F_L's plan
        peak_d = np.ones((rows, size + 1), dtype=np.int32)  # ... by F_D's (x_base's copy included)
        whole = _revolve_times(size, ram, uf)  # R_ram
        if disk is None:
            computed = below = slice(0, 1)
        else:
            FL[0] = whole
            peak_d[0] = 0
            computed, below = slice(1, rows), slice(0, rows - 1)
        smaller = _revolve_times(size, ram - 1, uf) if ram else None  # right parts of a memory split
        choice, split = self.choice, self.split
        ramp = uf * np.arange(size + 1, dtype=float)
        width = rows - (disk is not None)
        arange = np.arange(width)
        rows_at, below_at = np.arange(rows)[computed], np.arange(rows)[below]  # for gathers, row by row
        # Right parts are read backwards (lengths n-1 .. 1): keep reversed copies, read forwards, which is
        # faster, and reuse buffers (this loop is all of planning).
        FL_back = FL[:, ::-1].copy()  # FL_back[k, size - i] = FL[k, i]
        smaller_back = smaller[::-1].copy() if smaller is not None else None
        by_disk, by_memory, memory_right = np.empty((width, size)), np.empty((width, size)), np.empty(size)
        for n in range(2, size + 1 if width else 2):
            lo, hi, k = size - n + 1, size, n - 1  # [lo, hi) backwards = lengths n-1 .. 1 of the right part
            t = by_disk[:, :k]
            np.add(FL_back[below, lo:hi], FD[computed, 1:n], out=t)
            t += ramp[1:n]
            jd = t.argmin(axis=1)
            sd = t[arange, jd] + r
            if smaller_back is not None:
                u = memory_right[:k]
                np.add(ramp[1:n], smaller_back[lo:hi], out=u)
                t = by_memory[:, :k]
                np.add(FL[computed, 1:n], u, out=t)
                jm = t.argmin(axis=1)
                sm = t[arange, jm]
            else:
                jm = np.zeros(width, dtype=np.int64)
                sm = np.full(width, _INF)
            split[_MEMORY, computed, n] = jm + 1
            split[_DISK, computed, n] = jd + 1
            peak_m = peak_l[rows_at, jm + 1]  # the right part holds nothing on disk
            peak_s = np.maximum(1 + peak_l[below_at, n - 1 - jd], peak_d[rows_at, jd + 1])
            rv = whole[n]
            to_disk = w + sd < sm  # ties: memory
            best = np.where(to_disk, w + sd, sm)
            plain = rv <= best  # ties: revolve
            FL[computed, n] = FL_back[computed, size - n] = np.where(plain, rv, best)
            choice[_MEMORY, computed, n] = np.where(plain, _REVOLVE, to_disk)
            peak_l[computed, n] = np.where(plain, 0, np.where(to_disk, peak_s, peak_m))
            stay = sd <= np.minimum(rv, sm)  # ties: no moves
            plain = ~stay & (rv <= sm)
            FD[computed, n] = np.where(stay, sd, np.where(plain, rv, sm))
            choice[_DISK, computed, n] = np.where(stay, _DISK, np.where(plain, _REVOLVE, _MEMORY))
            peak_d[computed, n] = np.where(stay, peak_s, np.maximum(np.where(plain, 0, peak_m), 1))  # x_base on disk
        self.FL, self.FD, self.peak, self.peak_d = FL, FD, peak_l, peak_d
        self.unlimited = disk is None
        self._memo: dict[tuple[int, int, int, int], Counts] = {}
        self._templates: dict[tuple[int, int, int], tuple[Action, ...]] = {}  # a few: see template()

    def tally(self, length: int, k: int, have: int) -> Counts:
        """What :meth:`run` does for one sub-problem, without walking its actions.

        The same choices as :meth:`run`, counted once per distinct
        sub-problem ``(length, row, where x_base is kept)`` (memoised across
        calls; an explicit stack, as the chains of right parts can be
        ``length`` long), with revolve's closed forms for the parts reversed
        in memory alone. Peaks include x_base's copy when it starts stored.
        """
        ram, choice, split, unlimited, memo = self.ram, self.choice, self.split, self.unlimited, self._memo
        reads = self.contexts - 1  # the context of right parts: followed by a disk read (overlap programme only)
        stack = [(length, k, have, 0)]
        while stack:
            task = stack[-1]
            if task in memo:
                stack.pop()
                continue
            size, row, kept, ctx = task
            if size == 1:
                memo[task] = Counts(peak=int(kept == _MEMORY), peak_disk=int(kept == _DISK))
                stack.pop()
                continue
            want = _REVOLVE if row == 0 and not unlimited else int(choice[2 * ctx + (kept == _DISK), row, size])
            if want == _REVOLVE:  # a memory Store unless x_base is there; a disk copy stays till the end
                whole = revolve_tally(size, ram, store=kept != _MEMORY)
                memo[task] = whole._replace(peak_disk=int(kept == _DISK))
                stack.pop()
                continue
            j = int(split[3 * ctx + (self.fresh if want == _DISK and kept != _DISK else want), row, size])
            left = (j, row, want, ctx)
            right = (size - j, row if unlimited else row - 1, _LIVE, reads) if want == _DISK else None
            missing = [part for part in (left, right) if part is not None and part not in memo]
            if missing:
                stack.extend(missing)
                continue
            stack.pop()
            on_disk = want == _DISK
            # Store x_base where it is wanted (if it moves), advance j, then the right part; Restore x_base.
            head = Counts(
                steps=j,
                writes=int(want != kept and not on_disk),
                disk_writes=int(want != kept and on_disk),
                reads=int(not on_disk),
                disk_reads=int(on_disk),
                peak=int(not on_disk),
                peak_disk=int(on_disk),
            )
            # the right part in memory alone, with one slot fewer, or with the disk rows below
            tail = memo[right] if right is not None else revolve_tally(size - j, ram - 1, store=True)
            memo[task] = head.then(tail, held=int(not on_disk), held_disk=int(on_disk)).then(memo[left])
        return memo[(length, k, have, 0)]

    def time(self, n: int) -> float:
        return float(self.FL[self.row, n])

    def counts(self, n: int) -> Counts:
        """The :class:`Counts` of :meth:`actions` for ``n`` steps."""
        return self.tally(n, self.row, _LIVE)

    def actions(self, n: int) -> Iterator[Action]:
        return self.run(0, n, self.row, _LIVE)

    def template(self, length: int, k: int, have: int) -> tuple[Action, ...]:
        """:meth:`run`'s actions from ``x_0``, kept: plans that repeat a sub-plan move a copy (``shifted``)."""
        key = (length, k, have)
        actions = self._templates.get(key)
        if actions is None:
            actions = self._templates[key] = tuple(self.run(0, length, k, have))
        return actions

    def run(self, base: int, length: int, k: int, have: int) -> Iterator[Action]:
        """The actions reversing ``x_base .. x_{base+length-1}`` from a live ``x_base``, with row ``k``.

        ``have`` says where x_base is kept already: ``_LIVE`` (nowhere),
        ``_MEMORY`` or ``_DISK``.
        """
        ram, choice, split, unlimited = self.ram, self.choice, self.split, self.unlimited
        reads, fresh = self.contexts - 1, self.fresh
        # An explicit stack, as in revolve: (base, length, row, where x_base is kept, context) and deferred
        # Restores. The context is 1 for a right part of the overlap programme (a disk read follows it).
        stack: list[tuple[int, int, int, int, int] | Restore] = [(base, length, k, have, 0)]
        pop, push = stack.pop, stack.append
        while stack:
            task = pop()
            if isinstance(task, Restore):
                yield task
                continue
            base, length, k, have, ctx = task  # the live state is x_base
            if length == 1:
                yield Reverse(base, base + 1)
                continue
            if k == 0 and not unlimited:  # no disk slot left: revolve in memory
                if have == _LIVE:
                    yield Store(base)
                yield from revolve(base, length, ram)
                continue
            want = int(choice[2 * ctx + (have == _DISK), k, length])
            if want == _REVOLVE:  # (a copy on disk may stay: nothing here needs its slot)
                if have != _MEMORY:
                    yield Store(base)
                yield from revolve(base, length, ram)
                continue
            if want != have:
                if have != _LIVE:
                    yield Free(base, base + 1)  # from memory to disk or back: rewrite it
                yield Store(base, disk=want == _DISK)
            j = int(split[3 * ctx + (fresh if want == _DISK and have != _DISK else want), k, length])
            yield Advance(base, base + j)
            push((base, j, k, want, ctx))
            push(Restore(base))  # a disk read if x_base is on disk
            right = length - j
            if want == _DISK:
                push((base + j, right, k if unlimited else k - 1, _LIVE, reads))
            else:  # the right part in memory alone, with one slot fewer
                if right > 1:
                    yield Store(base + j)
                yield from revolve(base + j, right, ram - 1)


def _revolve_times(size: int, slots: int, step: float) -> _Floats:
    """``step * T(n, slots)`` for ``n = 0 .. size`` (index 0 unused): revolve's time with x_base in memory.

    ``T(n, s) = r n - C(s + r, r - 1)``, r the repetition number, computed
    block by block of equal r; infinite without a slot (unless ``n = 1``).
    """
    times = np.full(size + 1, _INF)
    times[1] = 0.0
    if slots == 0:
        return times
    lengths = np.arange(size + 1, dtype=float)
    low, r = 1, 0  # lengths in (C(s + r - 1, s), C(s + r, s)] have repetition number r
    while low < size:
        r += 1
        high = min(math.comb(slots + r, slots), size)
        times[low + 1 : high + 1] = step * (r * lengths[low + 1 : high + 1] - math.comb(slots + r, r - 1))
        low = high
    return times


def _check_work(size: int, rows: int, ram: int, disk: int | None) -> None:
    work = size * size * rows
    if work > MAX_PLAN_WORK:
        budget = "" if disk is None else f" with a binding disk budget (disk={disk})"
        raise ParameterError(
            f"n={size} is too long to plan{budget}: about {work:.1e} terms of dynamic programming, over "
            f"revseq.strategies.multistage.MAX_PLAN_WORK = {MAX_PLAN_WORK:.0e}; reverse it in pieces, "
            f"give fewer disk slots, or disk=None"
        )


EXACT_WORK = 2**26
"""The largest programme :class:`MultistageCheckpointing` solves exactly by default: ``n**2`` times the rows.

About a second: ``n = 8192`` with unlimited disk (or a budget the
unlimited-disk plan fits in), ``n = 2896`` with a binding ``disk = 7``.
Longer problems get the periodic plan (unlimited disk) or the nested one
(a binding budget) unless ``exact=True``.
"""

PERIODIC_TABLE = 4096  # the exact table the periodic plan extends (doubled once if its period is not verified)
BLOCKS_TABLE = 1024  # the longest block of a nested plan: its exact tables' length
BLOCKS_ROWS = 15  # the disk slots a nested plan's exact budgeted table has rows for


class _Plans:
    """What is planned for one configuration: exact tables, and the plans for lengths past them.

    The exact tables grow with the longest ``n`` asked for up to
    :data:`EXACT_WORK` (or :data:`MAX_PLAN_WORK` with ``exact``); past it
    the unlimited-disk plan is :class:`Periodic` (or memory alone, when
    that is faster) and a binding budget's is the best :class:`Nested`
    plan found by a search over block lengths and outer slots (or memory
    alone).
    """

    def __init__(self, ram: int, disk: int | None, ratios: tuple[float, float, float], exact: bool) -> None:
        self.ram, self.disk, self.ratios, self.exact = ram, disk, ratios, exact
        self._tables: dict[int | None, _Table] = {}  # by disk row count (None: unlimited)
        self._periodic: Periodic | None = None
        self._inner: _Table | None = None
        self._nested: OrderedDict[int, Plan] = OrderedDict()
        self._lock = threading.Lock()

    def _table(self, disk: int | None, n: int) -> _Table:
        with self._lock:
            table = self._tables.get(disk)
            if table is None or table.size < n:
                table = self._tables[disk] = _Table(self.ram, disk, self.ratios, max(n, 64))
            return table

    def plan(self, n: int) -> Plan:
        unlimited = self._unlimited(n)
        if self.disk is None or self.disk >= unlimited.counts(n).peak_disk:
            return unlimited
        if self.exact or (self.disk + 1) * n * n <= EXACT_WORK:
            return self._table(self.disk, n)
        return self._budgeted(n)

    def _unlimited(self, n: int) -> Plan:
        if self.exact or n * n <= EXACT_WORK:
            return self._table(None, n)
        periodic = self._periodic_plan()
        memory = RamOnly(self.ram, self.ratios[0])
        return periodic if periodic.time(n) <= memory.time(n) else memory

    def _periodic_plan(self) -> Periodic:
        if self._periodic is None:
            periodic = Periodic(self._table(None, PERIODIC_TABLE), self.ratios)
            if not periodic.verified:  # a longer table may show the period
                periodic = Periodic(self._table(None, 2 * PERIODIC_TABLE), self.ratios)
            self._periodic = periodic
        return self._periodic

    def _budgeted(self, n: int) -> Plan:
        with self._lock:
            plan = self._nested.get(n)
            if plan is not None:
                return plan
        plan = self._search(n)
        with self._lock:
            self._nested[n] = plan
            while len(self._nested) > 16:
                self._nested.popitem(last=False)
        return plan

    def _search(self, n: int) -> Plan:
        """The best nested plan over a grid of block lengths and outer slots, or memory alone."""
        assert self.disk is not None
        disk, ratios = self.disk, self.ratios
        unlimited = self._table(None, BLOCKS_TABLE)
        if self._inner is None:
            self._inner = _Table(self.ram, min(disk, BLOCKS_ROWS), ratios, BLOCKS_TABLE)
        inner, top = self._inner, min(disk, BLOCKS_ROWS)
        blocks = sorted({b for b in (round(1.2**i) for i in range(39)) if b < BLOCKS_TABLE} | {BLOCKS_TABLE})
        slots = {s for s in range(1, min(disk, 8) + 1)} | {disk} | {round(disk * 0.8**i) for i in range(40)}
        candidates: list[tuple[float, Nested]] = []
        for b in blocks:
            if b >= n:
                continue
            need = max(int(unlimited.peak[0, b]), int(unlimited.peak_d[0, b]) - 1)  # inner slots beside x_base
            for s in sorted(slots | {disk - need}):
                if not 1 <= s <= disk:
                    continue
                q = disk - s
                if q >= need:
                    plan = Nested(unlimited, ratios, b, s, 0, 0)
                else:
                    plan = Nested(inner, ratios, b, s, min(q, top), min(q + 1, top))
                estimate = plan.estimate(n)
                if math.isfinite(estimate):
                    candidates.append((estimate, plan))
        candidates.sort(key=lambda pair: pair[0])
        best: Plan = DiskRevolve(self.ram, disk, ratios)
        best_time = best.time(n)
        if self.ram and RamOnly(self.ram, ratios[0]).time(n) < best_time:
            best, best_time = RamOnly(self.ram, ratios[0]), RamOnly(self.ram, ratios[0]).time(n)
        for _, plan in candidates[:4]:
            time = plan.time(n)
            if time < best_time:
                best, best_time = plan, time
        return best


_CACHE: OrderedDict[tuple[int, int | None, tuple[float, float, float], bool], _Plans] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 8


def _plans_for(ram: int, disk: int | None, costs: DiskCosts, exact: bool) -> _Plans:
    """The plans of this configuration, cached: keyed by the costs' ratios, all the plan depends on.

    Costs that differ by a common factor share one entry.
    """
    key = (ram, disk, costs._ratios(), exact)
    with _CACHE_LOCK:
        plans = _CACHE.get(key)
        if plans is None:
            plans = _CACHE[key] = _Plans(ram, disk, key[2], exact)
        _CACHE.move_to_end(key)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
        return plans
