"""Schedules as data: illegal schedules are refused with a reason, legal ones are lazy, re-iterable values."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest

import revseq
from revseq import Advance, Free, Restore, Reverse, ScheduleError, Store, simulate, validate

# Each case: (name, n, actions, index of the offending action or None, words the reason must contain).
ILLEGAL = [
    ("restore never stored", 3, [Restore(2)], 0, r"x_2 is not stored"),
    ("restore after free", 3, [Store(0), Free(0, 1), Restore(0)], 2, r"x_0 is not stored"),
    (
        "restore after its reversal",
        3,
        [Store(0), Advance(0, 2, keep=True), Reverse(1, 3), Restore(1)],
        3,
        r"x_1 is not stored",
    ),
    ("advance from the wrong live state", 4, [Advance(1, 2)], 0, r"live state is x_0, not x_1"),
    ("advance after restore from the old live", 4, [Store(0), Advance(0, 2), Restore(0), Advance(2, 3)], 3,
     r"live state is x_0, not x_2"),
    ("compute x_n twice", 3, [Store(0), Advance(0, 3), Restore(0), Advance(0, 3)], 3, r"x_n is already computed"),
    ("store x_n", 3, [Advance(0, 3), Store(3)], 1, r"x_n is the result, not a checkpoint"),
    ("advance past n", 3, [Advance(0, 5)], 0, r"0 <= start < stop <= n = 3"),
    ("advance backwards", 3, [Advance(2, 1)], 0, r"start < stop"),
    ("advance into reversed steps", 4, [Store(0), Advance(0, 3), Reverse(3, 4), Restore(0), Advance(0, 3)], 4,
     r"steps >= 3 are already reversed"),
    ("reverse out of order", 3, [Store(0), Advance(0, 1), Reverse(0, 1)], 2, r"the next one is step 2"),
    ("reverse the last step but not first", 3, [Store(0), Advance(0, 2, keep=True), Reverse(0, 2)], 2,
     r"the next one is step 2"),
    ("reverse twice", 3, [Store(0), Advance(0, 2, keep=True), Reverse(2, 3), Reverse(2, 3)], 3,
     r"the next one is step 1"),
    ("reverse after the end", 2, [Store(0), Advance(0, 1), Reverse(0, 2), Reverse(0, 1)], 3,
     r"every step is already reversed"),
    ("reverse with the top state missing", 3, [Reverse(2, 3)], 0, r"x_2 is neither live \(x_0 is\) nor stored"),
    ("reverse with a lower state missing", 3, [Store(0), Advance(0, 2), Reverse(0, 3)], 2, r"x_1 is not stored"),
    ("free a missing key", 3, [Free(1, 2)], 0, r"x_1 is not stored"),
    ("free a range with a gap", 4, [Store(0), Advance(0, 2), Store(2), Free(0, 3)], 3, r"x_1 is not stored"),
    ("store a key twice", 3, [Store(0), Store(0)], 1, r"x_0 is already stored"),
    ("keep over a stored key", 4, [Store(0), Advance(0, 1), Store(1), Restore(0), Advance(0, 3, keep=True)], 4,
     r"x_1 is already stored"),
    ("store the wrong state", 3, [Store(1)], 0, r"live state is x_0, not x_1"),
    ("store a reversed state", 2, [Advance(0, 1), Reverse(1, 2), Store(1)], 2,
     r"live state is x_1|no longer needed"),
    ("a tuple is not an action", 3, [(0, 1)], 0, r"not an action"),
    ("a string is not an action", 3, ["advance"], 0, r"not an action"),
    ("None is not an action", 3, [None], 0, r"not an action"),
    ("a float bound", 3, [Advance(0, 1.0)], 0, r"stop must be an int"),
    ("a bool bound", 3, [Advance(0, True)], 0, r"stop must be an int"),
]  # fmt: skip


@pytest.mark.parametrize(("n", "actions", "index", "reason"), [c[1:] for c in ILLEGAL], ids=[c[0] for c in ILLEGAL])
@pytest.mark.parametrize("check", [simulate, validate])
def test_illegal_schedule_is_refused_naming_the_action_and_why(check, n, actions, index, reason):
    with pytest.raises(ScheduleError, match=reason) as info:
        check(actions, n)
    error = info.value
    assert error.index == index
    assert error.action == actions[index]
    assert f"action #{index}" in str(error)
    assert repr(actions[index]) in str(error)
    assert isinstance(error, ValueError)


def test_exceeding_the_budget_names_the_action_and_the_budget():
    actions = list(revseq.StoreAll().schedule(6))
    assert simulate(actions, 6).peak_checkpoints == 5
    simulate(actions, 6, checkpoints=5)
    with pytest.raises(ScheduleError, match=r"holds 5 checkpoints, over the budget of 4") as info:
        simulate(actions, 6, checkpoints=4)
    assert info.value.action == actions[info.value.index]


def test_budget_counts_x0_copy():
    actions = [Store(0), Advance(0, 1), Store(1), Advance(1, 2), Reverse(0, 3)]
    assert simulate(actions, 3).peak_checkpoints == 2
    with pytest.raises(ScheduleError, match=r"over the budget of 1") as info:
        simulate(actions, 3, checkpoints=1)
    assert info.value.index == 2


@pytest.mark.parametrize(
    ("n", "actions", "left"),
    [
        (3, [], "2 down to 0"),
        (3, [Store(0), Advance(0, 2, keep=True), Reverse(2, 3)], "1 down to 0"),
        (3, [Store(0), Advance(0, 2, keep=True), Reverse(1, 3)], "0 down to 0"),
    ],
)
def test_schedule_ending_early_is_refused(n, actions, left):
    with pytest.raises(ScheduleError, match=rf"ended before reversing steps {left}") as info:
        validate(actions, n)
    assert info.value.index is None


def test_the_engine_runs_nothing_illegal():
    # The engine checks each action before executing it: f runs twice, then the bad Restore is refused.
    calls = []

    class Illegal(revseq.ReversalStrategy):
        def actions(self, n):
            yield Store(0)
            yield Advance(0, 2)
            yield Restore(1)

    def f(x):
        calls.append(x)
        return x + 1.0

    store = revseq.MemoryStore()
    with pytest.raises(ScheduleError, match=r"action #2 .*x_1 is not stored"):
        revseq.backprop(revseq.Recurrence(f, df=lambda x: 1.0 + 0 * x), np.zeros(1), 5, Illegal(), store=store)
    assert len(calls) == 2
    assert len(store) == 0


def test_simulate_accepts_any_iterable_and_matches_a_hand_count():
    actions = [Store(0), Advance(0, 2, keep=True), Reverse(0, 3)]
    expected = revseq.Cost(n=3, forward_steps=3, peak_checkpoints=2, writes=2, reads=0)
    assert simulate(actions, 3) == expected
    assert simulate(iter(actions), 3) == expected
    assert simulate(tuple(actions), 3) == expected
    assert validate(actions, 3) is None
    # reverse() does not need x_n: the same schedule makes one call fewer when run without output.
    assert [int(x) for x in revseq.reverse(lambda x: x + 1, 0, 3, revseq.StoreAll())] == [2, 1, 0]


def test_a_recompute_schedule_counted_by_hand():
    # n = 3 with one checkpoint: sweep to x_2, compute x_3; restore, sweep to x_1; restore, reverse step 0.
    actions = [
        Store(0),
        Advance(0, 2),
        Reverse(2, 3),
        Restore(0),
        Advance(0, 1),
        Reverse(1, 2),
        Restore(0),
        Reverse(0, 1),
    ]
    assert simulate(actions, 3) == revseq.Cost(n=3, forward_steps=4, peak_checkpoints=1, writes=1, reads=2)


# -- actions are values ---------------------------------------------------------------


def test_actions_compare_by_value():
    assert Advance(0, 3) == Advance(0, 3) == Advance(0, 3, keep=False)
    assert Advance(0, 3) != Advance(0, 3, keep=True)
    assert Store(3) == Store(3)
    assert Store(3) != Restore(3)
    assert Reverse(0, 1) != Free(0, 1)
    assert Store(3) != (3,)
    assert len({Store(3), Restore(3), Store(3), Free(3, 4), Reverse(3, 4)}) == 4
    assert hash(Advance(1, 5, keep=True)) == hash(Advance(1, 5, keep=True))


def test_actions_are_immutable():
    action = Advance(0, 3)
    with pytest.raises(AttributeError):
        action.stop = 4  # type: ignore[misc]


def test_actions_repr_names_their_fields():
    assert repr(Advance(0, 3, keep=True)) == "Advance(start=0, stop=3, keep=True)"
    assert repr(Store(2)) == "Store(step=2)"


def test_ranges_are_explicit():
    # Actions are NamedTuples (cheap to create by the million); a single step is Reverse(t, t + 1).
    with pytest.raises(TypeError):
        Reverse(4)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Free(4)  # type: ignore[call-arg]
    assert Reverse(4, 5) == Reverse(4, 5)
    assert hash(Free(4, 5)) == hash(Free(4, 5))


# -- schedules are lazy and re-iterable -------------------------------------------------

HUGE = 10**9
LAZY = [
    revseq.StoreAll(),
    revseq.Recompute(),
    revseq.RecursiveHalving(),
    revseq.SqrtCheckpointing(),
    revseq.BinomialCheckpointing(checkpoints=30),
    revseq.BinomialCheckpointing(),
]


@pytest.mark.parametrize("strategy", LAZY, ids=repr)
def test_a_schedule_for_a_billion_steps_starts_at_once_in_little_memory(strategy):
    schedule = strategy.schedule(HUGE)
    tracemalloc.start()
    try:
        first = list(itertools.islice(schedule, 100))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20  # nothing of size n: a table for 10^9 steps would take gigabytes
    assert 1 <= len(first) <= 100
    assert first == list(itertools.islice(schedule, 100))  # the same actions on a second walk


def test_schedules_are_re_iterable_values():
    strategy = revseq.BinomialCheckpointing(checkpoints=4)
    schedule = strategy.schedule(50)
    first, second = list(schedule), list(schedule)
    assert first == second
    assert schedule == strategy.schedule(50)
    assert schedule != strategy.schedule(51)
    assert schedule.n == 50
    assert schedule.cost() == strategy.cost(50) == simulate(first, 50)
    assert schedule.bounds() == strategy.bounds(50)
    schedule.validate()


def test_the_schedule_walked_by_the_engine_is_the_one_simulated():
    # Run a recorded schedule through the engine by wrapping it as a strategy; the engine's
    # counts must equal the simulated ones, and so must f's calls counted here.
    actions = list(revseq.SqrtCheckpointing(interval=3).schedule(10))

    class Recorded(revseq.ReversalStrategy):
        def actions(self, n):
            return iter(actions)

    calls = [0]

    def f(x):
        calls[0] += 1
        return x + 1

    pairs = list(revseq.walk(f, 0, 10, Recorded()))
    assert [t for t, _ in pairs] == list(range(10, -1, -1))
    assert calls[0] == simulate(actions, 10).forward_steps
