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

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from revseq._microcode import ADVANCE, DONE, FORWARD, RESTORE, REVERSE, STORE, binomial_table

KEEP, SWEEP, SPLIT = 0, 1, 2

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
    """A host-made program (revseq._microcode.program) read row by row."""

    def __init__(self, rows: np.ndarray, capacity: int) -> None:
        self.rows, self.capacity = rows, max(capacity, 1)

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
        new = {
            "index": index + (read & (kind != DONE)).astype(_i32),
            "stop": jnp.where(read, jnp.where(advance, a, -1), st["stop"]).astype(_i32),
        }
        return op, slot.astype(_i32), jnp.where(op == RESTORE, b, -1).astype(_i32), new


__all__ = ["KEEP", "REVERSE", "SPLIT", "SWEEP", "Program", "Stack", "binomial_rule", "halving_rule", "interval_rule"]
