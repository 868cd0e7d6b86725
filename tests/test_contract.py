"""The contract every strategy honours, run through revseq.testing, as a user would run it.

The registry covers every built-in strategy in several configurations and a
strategy written here the way a user would write one. The second half makes
sure the checks can fail: strategies broken in the ways a user's might be
must not pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import attrs
import pytest

import revseq
from revseq import Advance, Bounds, Free, Restore, ReversalStrategy, Reverse, ScheduleError, Store
from revseq.testing import CHECKS, check_strategy, parametrize_with_checks


@attrs.frozen
class EveryKth(ReversalStrategy):
    """A user's strategy: store every k-th state on one sweep, then reverse each segment by sweeps from its start.

    Promise: at most ``ceil(n / k)`` checkpoints, and ``n - 1`` advances for
    the first sweep plus ``0 + 1 + ... + (k - 1)`` per segment, plus the call
    producing x_n.
    """

    k: int = attrs.field(default=4, validator=attrs.validators.ge(1))

    def actions(self, n: int) -> Iterator[revseq.Action]:
        starts = range(0, n, self.k)
        for a in starts:
            yield Store(a)
            stop = min(a + self.k, n - 1)
            if stop > a:
                yield Advance(a, stop)
        live = n - 1
        for a in reversed(starts):
            for t in range(min(a + self.k, n) - 1, a - 1, -1):
                if live != t:
                    yield Restore(a)
                    if t > a:
                        yield Advance(a, t)
                    live = t
                yield Reverse(t, t + 1)  # reversing step a releases x_a: nothing needs it any more

    def bounds(self, n: int) -> Bounds:
        segments = -(-n // self.k)
        return Bounds(forward_steps=n + segments * self.k * (self.k - 1) // 2, checkpoints=segments)


REGISTRY = [
    revseq.StoreAll(),
    revseq.Recompute(),
    revseq.RecursiveHalving(),
    *(revseq.SqrtCheckpointing(interval=k) for k in (None, 1, 3, 7)),
    *(revseq.BinomialCheckpointing(checkpoints=c) for c in (1, 2, 3, 5, None)),
    *(revseq.OnlineCheckpointing(checkpoints=c) for c in (1, 2, 3, 5)),
    revseq.MultistageCheckpointing(ram=2, disk=None, costs=revseq.DiskCosts(step=1.0, write=2.0, read=1.0)),
    revseq.MultistageCheckpointing(ram=0, disk=2, costs=revseq.DiskCosts(step=1.0, write=0.5, read=0.5)),
    EveryKth(k=1),
    EveryKth(k=3),
    EveryKth(k=8),
]


@parametrize_with_checks(REGISTRY)
def test_strategy_contract(strategy, check):
    check(strategy)


def test_registry_covers_every_built_in_strategy():
    built_in = {
        getattr(revseq, name)
        for name in revseq.__all__
        if isinstance(getattr(revseq, name), type) and issubclass(getattr(revseq, name), ReversalStrategy)
    } - {ReversalStrategy, revseq.OnlineStrategy}
    assert built_in <= {type(s) for s in REGISTRY}


def test_parametrize_with_checks_pairs_every_strategy_with_every_check():
    mark = parametrize_with_checks([revseq.StoreAll(), EveryKth(k=2)])
    (argnames, pairs), kwargs = mark.args, mark.kwargs
    assert tuple(argnames) == ("strategy", "check")
    assert len(pairs) == 2 * len(CHECKS) == len(kwargs["ids"]) == len(set(kwargs["ids"]))
    assert {check for _, check in pairs} == set(CHECKS)


# -- the checks can fail: strategies broken as a user's might be -------------------


@attrs.frozen
class ReversesUpwards(ReversalStrategy):
    """Stores everything, then reverses step 0 first: the wrong order."""

    def actions(self, n: int) -> Iterator[revseq.Action]:
        yield Store(0)
        if n > 1:
            yield Advance(0, n - 1, keep=True)
        for t in range(n):
            yield Reverse(t, t + 1)


@attrs.frozen
class RestoresFreed(ReversalStrategy):
    """Recompute, but frees x_0 before the last restore."""

    def actions(self, n: int) -> Iterator[revseq.Action]:
        for action in revseq.Recompute().actions(n):
            if action == Restore(0) and n > 2:
                yield Free(0, 1)
            yield action


@attrs.frozen
class PromisesTooFewCheckpoints(ReversalStrategy):
    """StoreAll's schedule with RecursiveHalving's memory promise."""

    def actions(self, n: int) -> Iterator[revseq.Action]:
        return revseq.StoreAll().actions(n)

    def bounds(self, n: int) -> Bounds:
        return revseq.RecursiveHalving().bounds(n)


@attrs.frozen
class PromisesTooFewSteps(ReversalStrategy):
    """Recompute's schedule with StoreAll's time promise."""

    def actions(self, n: int) -> Iterator[revseq.Action]:
        return revseq.Recompute().actions(n)

    def bounds(self, n: int) -> Bounds:
        return Bounds(forward_steps=n)


@attrs.frozen
class OneShotSchedule(ReversalStrategy):
    """Hands out the same generator again and again: the second walk of a schedule finds it spent."""

    cache: dict[int, Iterator[revseq.Action]] = attrs.field(factory=dict, eq=False, hash=False, repr=False)

    def actions(self, n: int) -> Iterator[revseq.Action]:
        return self.cache.setdefault(n, revseq.StoreAll().actions(n))


BROKEN = [ReversesUpwards(), RestoresFreed(), PromisesTooFewCheckpoints(), PromisesTooFewSteps(), OneShotSchedule()]


@pytest.mark.parametrize("strategy", BROKEN, ids=lambda s: type(s).__name__)
def test_check_strategy_rejects_a_broken_strategy(strategy):
    with pytest.raises(AssertionError, match=re.escape(repr(strategy))):
        check_strategy(strategy, ns=range(1, 12))


@pytest.mark.parametrize(
    ("strategy", "failing_check", "cause"),
    [
        (ReversesUpwards(), "check_reverses_in_order", ScheduleError),
        (RestoresFreed(), "check_reverses_in_order", ScheduleError),
        (PromisesTooFewCheckpoints(), "check_keeps_its_promise", ScheduleError),
        (PromisesTooFewSteps(), "check_keeps_its_promise", ScheduleError),
        (OneShotSchedule(), "check_schedule_is_data", None),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, ReversalStrategy) else None,
)
def test_the_right_check_fails(strategy, failing_check, cause):
    # Every failure is an AssertionError naming the strategy (and n, where one n broke);
    # an illegal schedule's ScheduleError is kept as its cause.
    check = next(c for c in CHECKS if c.__name__ == failing_check)
    with pytest.raises(AssertionError) as info:
        check(strategy, range(3, 12))
    assert repr(strategy) in str(info.value)
    if cause is None:
        assert info.value.__cause__ is None
    else:
        assert isinstance(info.value.__cause__, cause)
        assert ", n=" in str(info.value)


def test_check_strategy_rejects_a_class():
    with pytest.raises(revseq.ParameterError, match="strategy"):
        check_strategy(EveryKth)  # type: ignore[arg-type]
