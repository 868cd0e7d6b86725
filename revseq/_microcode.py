"""Schedules as small integer programs for a compiled executor (revseq.jax), built on the host with numpy.

A compiled loop cannot walk a Python generator, so a schedule reaches it in
one of two forms:

* a **rule**: the built-in offline strategies place their checkpoints by a
  split rule over a stack (Revolve's, bisection's, sqrt's), so the next
  action follows from O(c) integers. The only table such a rule needs is
  :func:`binomial_table`'s, a few hundred binomial coefficients;
* a **program** (:func:`program`): any other strategy's actions, checked by
  the simulator as they are read, with each checkpoint given a slot of a
  fixed buffer here on the host, and written as rows of three int32.

Both speak the executor's micro-operations, one per loop iteration:

=============  =============================================================
``FORWARD``    live ``x_t`` -> ``x_{t+1}``; with a slot ``>= 0``, also store
               ``x_{t+1}`` there (a program's ``ADVANCE`` row is many of
               them, without stores)
``STORE``      store the live state in a slot
``RESTORE``    the live state becomes a slot's, at a given step
``REVERSE``    reverse the step at the live state
``DONE``       every step is reversed
=============  =============================================================

Nothing here imports JAX: the tests check these tables against the
simulator and the strategies without it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from revseq.errors import ParameterError
from revseq.schedule import Advance, Free, Restore, Reverse, Store
from revseq.strategies.binomial import _repetitions
from revseq.strategies.online import _placements

__all__ = [
    "ADVANCE",
    "DONE",
    "FORWARD",
    "IDLE",
    "MAX_STEPS",
    "RESTORE",
    "REVERSE",
    "STORE",
    "binomial_table",
    "online_placements",
    "program",
]

FORWARD, STORE, RESTORE, REVERSE, DONE = range(5)
ADVANCE = 5  # a program row only: FORWARD (no store) until the live step is the row's argument
IDLE = 6  # the executor's only: nothing to perform, ask the plan (a loop starts so, and resumes so after a reversal)

MAX_STEPS = 2**30
"""The longest run a compiled schedule takes: its steps, slots and table entries are int32."""

_CAP = 2**31 - 1


def check_steps(name: str, n: int) -> None:
    if n > MAX_STEPS:
        raise ParameterError(
            f"{name} must be <= 2**30 = {MAX_STEPS} for a compiled schedule (its step indices are int32), got {n}"
        )


def binomial_table(n: int, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``C(s + t, s)`` for the ``s <= c`` and ``t`` Revolve's split rule meets on runs of ``<= n`` steps.

    Returned ragged, as ``(values, offsets, lengths)``: row ``s`` is
    ``values[offsets[s] : offsets[s] + lengths[s]]``, for ``t = 0, 1, ...``,
    capped at ``2**31 - 1``. A split of ``l <= n`` steps over ``s >= 2``
    slots reads rows ``s``, ``s - 1`` and ``s - 2`` at ``t <= max(2, r(n,
    s))``, where ``r`` is the repetition number, which falls as ``s`` grows:
    rows 1 and 2 have about ``sqrt(2 n)`` entries each, row 3 ``(6 n)**(1/3)``,
    the rest a handful each. So the table is under ``2 sqrt(2 n) + 2 (6
    n)**(1/3) + 8 c`` int32 (``n = 10**5, c = 20``: 1211 of them, 4.8 kB),
    where an action table would be O(n).
    Row 0 is ``[1]`` (``C(t, 0) = 1``, read clipped).
    """
    rows: list[list[int]] = [[1]]
    for s in range(1, c + 1):
        top = max(2, _repetitions(n, max(s, 2))) + 1
        row, value = [], 1  # C(s + t, s), from t = 0
        for t in range(top + 1):
            if t:
                value = value * (s + t) // t
            row.append(min(value, _CAP))
        rows.append(row)
    lengths = np.array([len(row) for row in rows], dtype=np.int32)
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int32)
    return np.array([v for row in rows for v in row], dtype=np.int32), offsets, lengths


class _Slots:
    """Slots of the checkpoint buffer for a program: a free list, and which step each slot holds."""

    def __init__(self) -> None:
        self.of: dict[int, int] = {}  # step -> slot
        self.free: list[int] = []
        self.size = 0

    def take(self, step: int) -> int:
        slot = self.free.pop() if self.free else self.size
        self.size = max(self.size, slot + 1)
        self.of[step] = slot
        return slot

    def release(self, start: int, stop: int) -> None:
        for step in [t for t in self.of if start <= t < stop]:
            self.free.append(self.of.pop(step))


def program(actions: Iterable[object], n: int, what: str) -> tuple[np.ndarray, int]:
    """A checked schedule for ``n`` steps as ``(rows, slots)``: int32 rows ``(op, a, b)`` and the buffer's size.

    ``actions`` must already be checked (a :class:`~revseq.Schedule`'s
    iteration raises at the first illegal action). Rows: ``(ADVANCE, stop,
    0)``; ``(FORWARD, slot, 0)``, one step storing its result (the states a
    ``keep=True`` advance passes); ``(STORE, slot, 0)``; ``(RESTORE, slot,
    step)``; ``(REVERSE, 0, 0)`` per step; ``(DONE, 0, 0)`` last. So a
    program is one row per action, plus one per state kept and one or two per
    reversed step: 12 bytes a row.

    An advance to ``x_n`` before the first reversal stops at ``x_{n-1}``:
    the executor computes ``x_n`` from it once, as the output, in either case.
    Disk checkpoints are refused: a compiled run keeps all of them in device
    memory, and a schedule planned for two levels would mislead about it.
    """
    rows: list[tuple[int, int, int]] = []
    slots = _Slots()
    live = 0
    for action in actions:
        if isinstance(action, Advance):
            stop = min(action.stop, n - 1)
            if action.keep:  # x_{start+1} .. x_{stop-1} kept; x_{n-1} too when the advance went on to x_n
                for t in range(action.start + 1, stop + (action.stop == n)):
                    rows.append((FORWARD, slots.take(t), 0))
                    live = t
            if stop > live:
                rows.append((ADVANCE, stop, 0))
            live = max(live, stop)
        elif isinstance(action, Store):
            if action.disk:
                raise ParameterError(
                    f"strategy {what} stores x_{action.step} on disk: revseq.jax keeps every checkpoint in "
                    f"device memory; give it a strategy for one level of memory (BinomialCheckpointing(checkpoints=c))"
                )
            rows.append((STORE, slots.take(action.step), 0))
        elif isinstance(action, Restore):
            rows.append((RESTORE, slots.of[action.step], action.step))
            live = action.step
        elif isinstance(action, Free):
            slots.release(action.start, action.stop)
        elif isinstance(action, Reverse):
            for t in range(action.stop - 1, action.start - 1, -1):
                if t != live:
                    rows.append((RESTORE, slots.of[t], t))
                    live = t
                rows.append((REVERSE, 0, 0))
            slots.release(action.start, n)
        else:  # pragma: no cover - a checked schedule holds nothing else
            raise AssertionError(action)
    rows.append((DONE, 0, 0))
    return np.array(rows, dtype=np.int32).reshape(-1, 3), slots.size


def online_placements(c: int, max_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, slots)``: where OnlineCheckpointing(checkpoints=c) stores each state of a run of ``<= max_steps``.

    The forward rule never looks at ``n``: it stores ``x_step`` in ``slot``
    (replacing what the slot held) for each pair, in order, as long as the
    run lasts. Computed here once per ``(c, max_steps)`` (0.4 s for a
    million steps at c = 10, 1.7 s at c = 100, measured) and looked up on
    device: 8 bytes a placement. A sentinel step
    ``max_steps`` ends the arrays.
    """
    steps: list[int] = []
    where: list[int] = []
    slot_of: dict[int, int] = {}
    for step, evicted in _placements(c):
        if step >= max_steps:
            break
        slot = slot_of.pop(evicted) if evicted is not None else len(slot_of)
        slot_of[step] = slot
        steps.append(step)
        where.append(slot)
    steps.append(max_steps)
    where.append(0)
    return np.array(steps, dtype=np.int32), np.array(where, dtype=np.int32)
