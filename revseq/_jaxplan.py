"""Schedules that run on device: the next micro-operation from a few integers (revseq.jax's planner half).

A *plan* has ``init(n)``, its state (a pytree of int32 arrays), and
``next(state, live)``: the next micro-operation ``(op, slot, step)`` (see
revseq._microcode) and the new state, given the live step. It runs inside
``lax.while_loop``, so everything here is traced jnp on scalars and arrays
of one entry per slot (O(c); StoreAll's ``n - 1``), with no host call. A
:class:`Program`'s rows, made on the host, are the one table of size O(n).

:class:`Stack` is the rule-driven plan of the built-in offline strategies.
Their checkpoints form a stack, positions increasing upwards: the top is the
base of the segment being reversed, ``cursor`` the step after its end, and
``s = c - (depth of the top)`` the slots it may use. At that point a rule
chooses how far to advance and what to keep:

* KEEP: advance to ``cursor - 1`` storing every state passed (a store-all leaf);
* SWEEP: advance to ``cursor - 1`` storing nothing (one slot: recompute);
* SPLIT: advance by the rule's offset and store the state reached.

Reversing step ``cursor - 1`` at the live state pops the top if it held that
step; a live state elsewhere is replaced by the top's. With Revolve's split
rule this is :func:`revseq.strategies.binomial.revolve` action for action
(the tests compare them), and the same stack, filled by an online forward
sweep, is OnlineCheckpointing's reversal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from revseq._microcode import ADVANCE, DONE, FORWARD, IDLE, RESTORE, REVERSE, STORE, _Slots, binomial_table
from revseq.errors import ParameterError
from revseq.schedule import Advance, Free, Restore, Reverse, Store

KEEP, SWEEP, SPLIT = 0, 1, 2

# The disk level's micro-operations (revseq.jax with disk=), after revseq._microcode's. Each is one host
# callback; the step it names is a program row's first argument.
DISK_STORE = IDLE + 1  # write the live state, x_step, to the disk store
DISK_READ = IDLE + 2  # the live state becomes x_step, read from disk
DISK_TAKE = IDLE + 3  # the same, then the file is deleted: the schedule reads it no more
DISK_FREE = IDLE + 4  # delete x_step's file, which the schedule released without reading it again
DISK_OPS = (DISK_STORE, DISK_READ, DISK_TAKE, DISK_FREE)

_i32 = jnp.int32

Rule = Callable[[Any, Any], tuple[Any, Any]]  # (length, s) -> (offset, mode), traced

_SEARCH = 16


def binomial_rule(n: int, c: int) -> Rule:
    """Revolve's rule for ``c`` checkpoints on runs of ``<= n`` steps: store-all, sweeps, or its split."""
    if c >= n - 1:  # every segment fits: never splits, no table
        return lambda length, s: (length - 1, jnp.asarray(KEEP, _i32))
    table = binomial_table(n, c)

    def split(length: Any, s: Any) -> Any:
        values, offsets, lengths = (jnp.asarray(a) for a in table)  # constants of the traced rule, once

        def b(row: Any, t: Any) -> Any:
            return values[offsets[row] + jnp.minimum(t, lengths[row] - 1)]

        # The repetition number, the least t with C(s + t, s) >= length, by a binary search unrolled:
        # straight-line code compiles far faster than a loop nested in the schedule's loop. Always _SEARCH
        # steps, whatever n, so that the program does not grow with n: rows have at most
        # sqrt(2 * 2**30) + 3 < 2**16 entries.
        low, high = jnp.asarray(0, _i32), lengths[s] - 1
        for _ in range(_SEARCH):
            mid = (low + high) // 2
            ok = b(s, mid) >= length
            low, high = jnp.where(ok, low, mid + 1), jnp.where(ok, mid, high)
        t = jnp.maximum(2, low)
        b_s_tm2, b_s_tm1 = b(s, t - 2), b(s, t - 1)
        b_sm1_tm1, b_sm2_tm1 = b(s - 1, t - 1), b(s - 2, t - 1)
        return jnp.where(
            length <= b_s_tm1 + b_sm2_tm1,
            b_s_tm2,
            jnp.where(length < b_s_tm1 + b_sm1_tm1 + b_sm2_tm1, length - b_sm1_tm1 - b_sm2_tm1, b_s_tm1),
        )

    def rule(length: Any, s: Any) -> tuple[Any, Any]:
        keep, sweep = s >= length - 1, s == 1
        split_at = split(length, jnp.clip(s, 2, c))  # computed in every case, selected below: no branch
        offset = jnp.where(keep | sweep, length - 1, split_at)
        return offset, jnp.where(keep, KEEP, jnp.where(sweep, SWEEP, SPLIT)).astype(_i32)

    return rule


def halving_rule() -> Rule:
    """Recursive halving: store-all up to two steps, else store the midpoint."""
    return lambda length, s: (
        jnp.where(length <= 2, length - 1, length // 2),
        jnp.where(length <= 2, KEEP, SPLIT).astype(_i32),
    )


def interval_rule(k: int) -> Rule:
    """Sqrt checkpointing: a checkpoint every ``k`` steps, each segment reversed keeping its states."""
    return lambda length, s: (
        jnp.where(length <= k, length - 1, k).astype(_i32),
        jnp.where(length <= k, KEEP, SPLIT).astype(_i32),
    )


def _set(array: Any, index: Any, value: Any, when: Any) -> Any:
    """``array`` with ``array[index] = value`` where ``when`` holds: an out-of-bounds write is dropped.

    No select against the old entry: reading an array and writing it in one
    iteration of a loop makes XLA copy it whole every iteration (reads of
    these arrays are made inside ``lax.cond`` branches for that reason).
    """
    return array.at[jnp.where(when, index, array.shape[0])].set(value, mode="drop")


class Stack:
    """The stack machine (module docstring): ``capacity`` slots, ``budget`` = the ``c`` in ``s``.

    Started empty, its checkpoints are pushed and popped last in, first out,
    so the slot of the entry at depth ``d`` is ``d``. Started from an online
    sweep's checkpoints (``init(n, positions)``), it keeps a map from depth
    to slot and a list of free slots (``mapped``): O(c) integers more.
    """

    def __init__(self, rule: Rule, capacity: int, budget: int, *, mapped: bool = False) -> None:
        self.rule, self.capacity, self.budget, self.mapped = rule, max(capacity, 1), budget, mapped

    def init(self, n: int | Any, positions: Any = None) -> dict[str, Any]:
        """The state before the first action: nothing stored; or, given ``positions`` (slot -> step, -1
        free, after an online sweep; needs ``mapped``), those checkpoints stacked in step order, live at x_n."""
        size = self.capacity
        st = {
            "cursor": jnp.asarray(n, _i32),
            "target": jnp.asarray(-1, _i32),
            "mode": jnp.asarray(KEEP, _i32),
        }
        if positions is None:
            assert not self.mapped, "a mapped stack starts from an online sweep's positions"
            return st | {"pos": jnp.full(size, -1, _i32), "k": jnp.asarray(0, _i32), "top": jnp.asarray(-1, _i32)}
        assert self.mapped, "a stack started from given positions maps depths to slots"
        held = positions >= 0
        order = jnp.argsort(jnp.where(held, positions, jnp.iinfo(np.int32).max)).astype(_i32)
        k = jnp.sum(held).astype(_i32)
        pos = positions[order]
        top = jnp.maximum(k - 1, 0)
        return st | {
            "pos": pos,
            "k": k,
            "top": jnp.where(k > 0, pos[top], -1),
            "slot": order,
            "free": order[::-1],  # its first capacity - k entries are the free slots
            "nfree": size - k,
            "top_slot": order[top],
        }

    def next(self, st: dict[str, Any], live: Any) -> tuple[Any, Any, Any, dict[str, Any]]:
        k, cursor, top = st["k"], st["cursor"], st["top"]
        has_top = k > 0
        top_slot = st["top_slot"] if self.mapped else jnp.maximum(k - 1, 0)
        done = cursor == 0
        reverse = live == cursor - 1
        store = ~has_top
        decide = ~done & (live >= st["target"]) & ~reverse & ~store & (live == top)

        offset, chosen = self.rule(cursor - live, self.budget - (k - 1))  # used only when deciding
        target = jnp.where(decide, live + offset, st["target"])
        mode = jnp.where(decide, chosen, st["mode"])
        forward = ~done & (live < target)
        op = jnp.where(
            done,
            DONE,
            jnp.where(forward, FORWARD, jnp.where(reverse, REVERSE, jnp.where(store, STORE, RESTORE))),
        ).astype(_i32)
        step = jnp.where(op == STORE, live, live + 1)  # the step a push stores
        push = (op == STORE) | (
            forward
            & (((mode == KEEP) & (step < target)) | ((mode == SPLIT) & (step == target) & (cursor - target > 1)))
        )
        pop = (op == REVERSE) & has_top & (top >= cursor - 1)
        new = dict(st)
        if self.mapped:
            nfree = st["nfree"]
            new_slot = jax.lax.cond(push, lambda: st["free"][jnp.maximum(nfree - 1, 0)], lambda: top_slot)
            below_pos, below_slot = jax.lax.cond(
                pop,
                lambda: (st["pos"][jnp.maximum(k - 2, 0)], st["slot"][jnp.maximum(k - 2, 0)]),
                lambda: (top, top_slot),
            )
            new["slot"] = _set(st["slot"], k, new_slot, push)
            new["free"] = _set(st["free"], nfree, top_slot, pop)
            new["nfree"] = nfree - push.astype(_i32) + pop.astype(_i32)
            new["top_slot"] = jnp.where(push, new_slot, jnp.where(pop, below_slot, top_slot))
        else:
            new_slot = k
            # The value written comes out of the cond that reads: XLA then orders the write after the read
            # and updates the array in place, where it copies it whole for an independent write. (The false
            # branch must not pass ``step`` through unchanged, or XLA hoists it out of the cond: the test
            # test_no_buffer_is_copied_per_iteration fails if a change of XLA undoes this.)
            below_pos, step = jax.lax.cond(
                pop, lambda: (st["pos"][jnp.maximum(k - 2, 0)], step), lambda: (top, step + 0 * k)
            )
        slot = jnp.where(push, new_slot, jnp.where(op == RESTORE, top_slot, -1)).astype(_i32)
        new["pos"] = _set(st["pos"], k, step, push)
        new["k"] = k + push.astype(_i32) - pop.astype(_i32)
        new["top"] = jnp.where(push, step, jnp.where(pop, jnp.where(k > 1, below_pos, -1), top)).astype(_i32)
        new["cursor"] = cursor - (op == REVERSE).astype(_i32)
        new["target"] = jnp.where(op == RESTORE, -1, target).astype(_i32)
        new["mode"] = mode
        return op, slot, jnp.where(op == RESTORE, top, -1).astype(_i32), new


class Program:
    """A host-made program (revseq._microcode.program, or :func:`disk_program`) read row by row.

    ``disk`` says whether its rows hold the disk level's operations (:data:`DISK_OPS`); a program without
    them compiles to the same code as before the disk level existed.
    """

    def __init__(self, rows: np.ndarray, capacity: int, *, disk: bool = False) -> None:
        self.rows, self.capacity, self.disk = rows, max(capacity, 1), disk

    def init(self, n: int) -> dict[str, Any]:
        return {"index": jnp.asarray(0, _i32), "stop": jnp.asarray(-1, _i32)}

    def next(self, st: dict[str, Any], live: Any) -> tuple[Any, Any, Any, dict[str, Any]]:
        rows = jnp.asarray(self.rows)
        pending = live < st["stop"]
        index = st["index"]
        kind, a, b = rows[index, 0], rows[index, 1], rows[index, 2]
        read = ~pending
        advance = read & (kind == ADVANCE)
        op = jnp.where(pending | advance, FORWARD, kind).astype(_i32)
        slot = jnp.where(
            pending | advance, -1, jnp.where((kind == FORWARD) | (kind == STORE) | (kind == RESTORE), a, -1)
        )
        new = dict(st)  # entries of the executor's own (the disk level's run) travel along
        new["index"] = index + (read & (kind != DONE)).astype(_i32)
        new["stop"] = jnp.where(read, jnp.where(advance, a, -1), st["stop"]).astype(_i32)
        pos = jnp.where(op == RESTORE, b, -1)
        if self.disk:  # a disk operation's step is its row's first argument
            pos = jnp.where(op >= DISK_STORE, a, pos)
        return op, slot.astype(_i32), pos.astype(_i32), new


def disk_program(actions: Iterable[object], n: int, what: str) -> tuple[np.ndarray, int, int]:
    """A checked schedule with disk checkpoints as ``(rows, slots, disk_rows)``, for :class:`Program`.

    As :func:`revseq._microcode.program`, whose rows and conventions it
    keeps, plus the disk level's: ``(DISK_STORE, step, 0)`` for
    ``Store(step, disk=True)``; a ``Restore`` of a state held on disk only
    (the memory copy is read when there is one, as the engine does), or a
    state a ``Reverse`` reads from disk, is ``(DISK_READ, step, 0)``. When
    the schedule releases a disk checkpoint (``Free``, or the ``Reverse``
    that makes it useless), its last read since it was stored becomes
    ``DISK_TAKE`` (read, then delete the file: nothing reads it between the
    two), or, if it was not read since, a ``(DISK_FREE, step, 0)`` row
    deletes it there. So files are deleted when the schedule releases them
    or earlier, never later, and the disk holds at most the schedule's
    ``peak_disk`` checkpoints. ``disk_rows`` counts the disk rows (0: the
    schedule never uses the disk). A store at a storage level past the
    first disk level is refused, naming ``what`` (the strategy).
    """
    rows: list[tuple[int, int, int]] = []
    slots = _Slots()
    on_disk: dict[int, int | None] = {}  # step -> the row of its last read since it was stored (None: unread)
    live = 0

    def restore(t: int) -> None:
        if t in slots.of:
            rows.append((RESTORE, slots.of[t], t))
        else:
            on_disk[t] = len(rows)
            rows.append((DISK_READ, t, 0))

    def release_disk(start: int, stop: int) -> None:
        for t in sorted(t for t in on_disk if start <= t < stop):
            last = on_disk.pop(t)
            if last is None:
                rows.append((DISK_FREE, t, 0))
            else:
                rows[last] = (DISK_TAKE, t, 0)

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
                level = getattr(action, "level", 1)
                if level != 1:  # a schedule over several storage levels (Store(t, level=k), k >= 2)
                    raise ParameterError(
                        f"{what} stores x_{action.step} at storage level {level}: revseq.jax has memory and one "
                        f"disk level (level 1); plan for two levels (MultistageCheckpointing)"
                    )
                on_disk[action.step] = None
                rows.append((DISK_STORE, action.step, 0))
            else:
                rows.append((STORE, slots.take(action.step), 0))
        elif isinstance(action, Restore):
            restore(action.step)
            live = action.step
        elif isinstance(action, Free):
            slots.release(action.start, action.stop)
            release_disk(action.start, action.stop)
        elif isinstance(action, Reverse):
            for t in range(action.stop - 1, action.start - 1, -1):
                if t != live:
                    restore(t)
                    live = t
                rows.append((REVERSE, 0, 0))
            slots.release(action.start, n)
            release_disk(action.start, n)
        else:  # pragma: no cover - a checked schedule holds nothing else
            raise AssertionError(action)
    rows.append((DONE, 0, 0))
    table = np.array(rows, dtype=np.int32).reshape(-1, 3)
    return table, slots.size, int(np.isin(table[:, 0], DISK_OPS).sum())


__all__ = [
    "DISK_FREE",
    "DISK_OPS",
    "DISK_READ",
    "DISK_STORE",
    "DISK_TAKE",
    "KEEP",
    "REVERSE",
    "SPLIT",
    "SWEEP",
    "Program",
    "Stack",
    "binomial_rule",
    "disk_program",
    "halving_rule",
    "interval_rule",
]
