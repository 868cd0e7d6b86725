"""Choosing a strategy for the user: measure a step and the disk, then take the least predicted time.

:func:`choose` times a few steps of ``f`` from ``x0``, and, where a disk
directory is given, a few writes and reads of ``x0`` through a
:class:`~revseq.DiskStore`. It prices each strategy that fits the memory
limit by its exact counts (``cost(n)``: forward steps, disk writes and
reads) at the measured times, and returns the cheapest with the whole
comparison, so that what it picked can be checked and explained
(``Choice.explain()``, ``revseq compare --auto``).

The model is the multistage planner's (:class:`~revseq.DiskCosts`): memory
writes and reads are free (the default store keeps references), the adjoint
steps are left out (every strategy makes the same ``n``), and nothing
overlaps. It is a prediction: the measured times of a few steps stand for
all ``n``.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import attrs

from revseq import _tree
from revseq._validate import check_directory, check_int
from revseq.engine import _as_state
from revseq.errors import ParameterError
from revseq.recurrence import Recurrence
from revseq.schedule import Cost
from revseq.store import Store as StoreProtocol
from revseq.strategies import BinomialCheckpointing, DiskCosts, MultistageCheckpointing, StoreAll
from revseq.strategies.base import ReversalStrategy
from revseq.strategies.multistage import Level

__all__ = ["Candidate", "Choice", "choose"]


@attrs.frozen
class Candidate:
    """One strategy considered: its exact counts, and its time at the measured costs (seconds)."""

    strategy: ReversalStrategy
    cost: Cost
    predicted_seconds: float
    peak_bytes: int


@attrs.frozen
class Choice:
    """What :func:`choose` picked, and from what.

    ``strategy`` is the candidate with the least predicted time (fewer bytes
    held breaks a tie); ``candidates`` are all those considered, cheapest
    first; ``step_seconds``, ``write_seconds`` and ``read_seconds`` are the
    medians measured (``None`` without a disk; the first level's with
    several); ``levels`` holds ``(write_seconds, read_seconds)`` for each
    level below memory, in the order given (empty without a disk).
    """

    strategy: ReversalStrategy
    candidates: tuple[Candidate, ...]
    state_bytes: int
    max_bytes: int
    step_seconds: float
    write_seconds: float | None
    read_seconds: float | None
    levels: tuple[tuple[float, float], ...] = ()

    def explain(self) -> str:
        """Why: the measurements, then each candidate's counts and predicted time, the pick first."""
        disk = (
            "no disk"
            if self.write_seconds is None
            else f"a disk write {_seconds(self.write_seconds)}, a read {_seconds(self.read_seconds or 0.0)}"
        )
        if len(self.levels) > 1:
            disk = "; ".join(
                f"level {k}: a write {_seconds(w)}, a read {_seconds(r)}" for k, (w, r) in enumerate(self.levels, 1)
            )
        lines = [
            f"measured: a step {_seconds(self.step_seconds)}, {disk}; a state {self.state_bytes} bytes, "
            f"memory limit {self.max_bytes} bytes ({self.max_bytes // max(self.state_bytes, 1)} states)",
        ]
        for i, c in enumerate(self.candidates):
            cost = c.cost
            io = f", {cost.disk_writes} disk writes, {cost.disk_reads} reads" if cost.disk_writes else ""
            if cost.deep_levels:
                io = "".join(
                    f", {cost.level(k).writes} writes and {cost.level(k).reads} reads at level {k}"
                    for k in range(1, 2 + len(cost.deep_levels))
                )
            lines.append(
                f"{'picked' if i == 0 else 'then'}: {c.strategy!r}: {cost.forward_steps} forward steps{io}, "
                f"{c.peak_bytes} bytes in memory at most: predicted {_seconds(c.predicted_seconds)}"
            )
        return "\n".join(lines)


def _seconds(value: float) -> str:
    return f"{value * 1e6:.3g} µs" if value < 1e-3 else f"{value:.3g} s"


def choose(
    f: Recurrence | Any,
    x0: Any,
    n: int,
    *,
    max_bytes: int,
    disk: str | os.PathLike[str] | StoreProtocol | list[Any] | tuple[Any, ...] | None = None,
    samples: int = 5,
) -> Choice:
    """The strategy with the least predicted time for ``n`` steps of ``f`` from ``x0`` within ``max_bytes``.

    Parameters
    ----------
    f:
        The step, or a :class:`~revseq.Recurrence` (its ``f`` is timed).
    x0:
        The initial state: its bytes size a checkpoint, and the timed steps start from it.
    n:
        The number of steps.
    max_bytes:
        The memory the checkpoints may take, in bytes (the states' ``nbytes``).
    disk:
        A directory for a disk level, or a store such as
        :class:`~revseq.FsspecStore` (object storage): if given, a write and
        a read of ``x0`` are timed there (in a private directory, removed
        after; through the store, left empty) and
        :class:`~revseq.MultistageCheckpointing` with the measured costs is a
        candidate; pass the same ``disk`` to ``backprop``. ``None``: memory
        only. A list gives several levels below memory, fastest first
        (local NVMe, then a network filesystem, say): each item a directory
        or a store, or a pair ``(directory or store, capacity_bytes)`` for a
        level that holds only so many bytes (``None``: no limit). A write and
        a read are timed at each, and the candidate is
        ``MultistageCheckpointing(levels=[...])`` with those costs; pass
        ``backprop`` one store per level, in the same order.
    samples:
        Steps timed (from ``x0`` on), and writes and reads; medians are used.

    Candidates: :class:`~revseq.StoreAll` if its ``n`` states fit,
    :class:`~revseq.BinomialCheckpointing` with as many checkpoints as fit
    (the fewest forward steps any memory-only schedule can make), and with a
    disk, :class:`~revseq.MultistageCheckpointing` with those in memory and
    the rest on disk.

    >>> import numpy as np, revseq
    >>> choice = revseq.choose(np.sin, np.zeros(1000), 10_000, max_bytes=8000 * 20)
    >>> choice.strategy
    BinomialCheckpointing(checkpoints=20, max_bytes=None)
    """
    recurrence = f if isinstance(f, Recurrence) else Recurrence(f)
    n = check_int("n", n, 1)
    max_bytes = check_int("max_bytes", max_bytes, 1)
    samples = check_int("samples", samples, 1)
    places, capacities = _levels(disk)
    x0 = _as_state(x0)
    state_bytes = _tree.nbytes(x0)
    if state_bytes <= 0:
        raise ParameterError(f"x0 must report its bytes (numpy arrays do: nbytes), got a state of {state_bytes} bytes")
    slots = max_bytes // state_bytes
    if slots < 1 and not places:
        raise ParameterError(
            f"max_bytes={max_bytes} holds no state of {state_bytes} bytes: give more memory, or a disk directory"
        )
    step = _time_steps(recurrence, x0, min(samples, n))
    write = read = None
    measured = tuple(_time_disk(x0, place, samples) for place in places)
    if measured:
        write, read = measured[0]
    # Three significant digits: the measurements are not better than that, and only the ratios plan.
    costs = DiskCosts(step=_round(step), write=_round(write or 0.0), read=_round(read or 0.0))
    options: list[ReversalStrategy] = []
    if StoreAll().cost(n).peak_checkpoints <= slots:
        options.append(StoreAll())  # first: the simplest wins a tie (binomial then stores all as well)
    if slots >= 1:
        options.append(BinomialCheckpointing(checkpoints=slots))
    if isinstance(disk, (list, tuple)):  # levels below memory: their costs in steps, their capacities in states
        unit = costs.step
        levels = [Level(slots)] + [
            Level(
                None if size is None else size // state_bytes,
                _round(w / unit) if unit else 0.0,
                _round(r / unit) if unit else 0.0,
            )
            for (w, r), size in zip(measured, capacities, strict=True)
        ]
        if slots >= 1 or any(level.capacity != 0 for level in levels):
            options.append(MultistageCheckpointing(levels=levels))
    elif disk is not None:
        options.append(MultistageCheckpointing(ram=slots, costs=costs))
    candidates = []
    for strategy in options:
        cost = strategy.cost(n)
        seconds = costs.time(cost)
        if isinstance(strategy, MultistageCheckpointing) and strategy.levels is not None:
            seconds = costs.step * strategy.time_of(cost)  # its Level costs are in steps
        candidates.append(Candidate(strategy, cost, seconds, cost.peak_checkpoints * state_bytes))
    candidates.sort(key=lambda c: (c.predicted_seconds, c.peak_bytes))  # stable: ties keep the order above
    return Choice(candidates[0].strategy, tuple(candidates), state_bytes, max_bytes, step, write, read, measured)


def _levels(disk: Any) -> tuple[list[Any], list[int | None]]:
    """``disk`` checked: the places to time (directories made absolute, stores as given) and each one's bytes."""
    if disk is None:
        return [], []
    if not isinstance(disk, (list, tuple)):
        return [disk if _is_store(disk) else check_directory("disk", disk)], [None]
    if not 1 <= len(disk) <= 15:
        raise ParameterError(f"disk must list 1 to 15 levels below memory, got {len(disk)}")
    places: list[Any] = []
    capacities: list[int | None] = []
    for k, item in enumerate(disk):
        where, size = item if isinstance(item, tuple) and len(item) == 2 else (item, None)
        places.append(where if _is_store(where) else check_directory(f"disk[{k}]", where))
        capacities.append(None if size is None else check_int(f"disk[{k}] capacity_bytes", size, 0))
    return places, capacities


def _round(value: float) -> float:
    return float(f"{value:.3g}")


def _time_steps(recurrence: Recurrence, x0: Any, samples: int) -> float:
    """The median wall time of one step, over ``samples`` steps from ``x0`` (the first one is not timed apart)."""
    step = recurrence.step_at()
    x, times = _tree.deep_copy(x0), []
    for t in range(samples):
        start = time.perf_counter()
        x = step(x, t)
        times.append(time.perf_counter() - start)
    return max(statistics.median(times), 1e-9)  # a step's cost must be > 0 (DiskCosts)


def _is_store(disk: Any) -> bool:
    return all(callable(getattr(disk, name, None)) for name in ("put", "get", "clear"))


def _time_disk(x0: Any, disk: Any, samples: int) -> tuple[float, float]:
    """Median wall times of writing and reading ``x0`` through ``disk`` (a store, or a DiskStore under a directory).

    Nothing is left behind: the store is cleared.
    """
    from revseq.disk import DiskStore

    store = disk if _is_store(disk) else DiskStore(disk)
    writes, reads = [], []
    try:
        for key in range(samples):
            start = time.perf_counter()
            store.put(key, x0)
            writes.append(time.perf_counter() - start)
            start = time.perf_counter()
            store.get(key)
            reads.append(time.perf_counter() - start)
    finally:
        store.clear()
    return statistics.median(writes), statistics.median(reads)
