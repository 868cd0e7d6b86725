"""Contract checks for reversal strategies, the built-ins' and your own.

Every built-in strategy passes these; run them on a strategy you wrote::

    from revseq.testing import check_strategy
    check_strategy(MyStrategy(budget=4))          # raises AssertionError naming what broke

or, in a pytest suite, one test per check::

    from revseq.testing import parametrize_with_checks

    @parametrize_with_checks([MyStrategy(budget=4), MyStrategy(budget=9)])
    def test_my_strategy(strategy, check):
        check(strategy)

Each check compares the strategy against something independent of the code
that produced it: integer states that say which state they are, calls of f
counted from outside, a store that measures itself, and the gradient of
plain backpropagation (``StoreAll``) on a nonlinear recurrence.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from revseq.engine import backprop, reverse
from revseq.errors import ParameterError, RevseqError
from revseq.recurrence import Recurrence
from revseq.schedule import Advance
from revseq.store import MemoryStore
from revseq.strategies.base import ReversalStrategy
from revseq.strategies.basic import StoreAll

__all__ = ["CHECKS", "DEFAULT_NS", "check_strategy", "parametrize_with_checks"]

DEFAULT_NS: tuple[int, ...] = (*range(1, 34), 50, 64, 100, 127, 257)
"""The lengths each check runs over: every small n, then a few awkward larger ones."""

Check = Callable[[ReversalStrategy], None]


class _MeasuringStore(MemoryStore):
    """A memory store that records its own peak size, independently of the engine."""

    __slots__ = ("max_held",)

    def __init__(self) -> None:
        super().__init__()
        self.max_held = 0

    def put(self, key: int, state: Any) -> None:
        super().put(key, state)
        self.max_held = max(self.max_held, len(self))


def _ns(ns: Iterable[int] | None) -> tuple[int, ...]:
    return DEFAULT_NS if ns is None else tuple(ns)


@contextlib.contextmanager
def _about(strategy: ReversalStrategy, n: int) -> Iterator[None]:
    """Turn an illegal schedule or a step error into a failed check that names the strategy and n."""
    try:
        yield
    except RevseqError as error:
        raise AssertionError(f"{strategy!r}, n={n}: {type(error).__name__}: {error}") from error


def check_reverses_in_order(strategy: ReversalStrategy, ns: Iterable[int] | None = None) -> None:
    """``reverse`` yields exactly x_{n-1}, ..., x_0 (integer states that name themselves)."""
    for n in _ns(ns):
        with _about(strategy, n):
            got = [int(x) for x in reverse(lambda x: x + 1, 0, n, strategy)]
            assert got == list(range(n - 1, -1, -1)), f"{strategy!r}, n={n}: reversed states {got[:12]}..."


def check_keeps_its_promise(strategy: ReversalStrategy, ns: Iterable[int] | None = None) -> None:
    """The simulated cost stays within the bounds the strategy promises."""
    for n in _ns(ns):
        with _about(strategy, n):
            cost, bounds = strategy.schedule(n).cost(), strategy.bounds(n)  # simulated, even for a built-in
            if bounds.forward_steps is not None:
                assert cost.forward_steps <= bounds.forward_steps, f"{strategy!r}, n={n}: {cost} over {bounds}"
            if bounds.checkpoints is not None:
                assert cost.peak_checkpoints <= bounds.checkpoints, f"{strategy!r}, n={n}: {cost} over {bounds}"
            assert cost.forward_steps >= n, f"{strategy!r}, n={n}: fewer than n forward steps is impossible: {cost}"


def check_measured_equals_predicted(strategy: ReversalStrategy, ns: Iterable[int] | None = None) -> None:
    """What the engine really does (calls counted from outside, a self-measuring store) equals ``cost(n)``."""
    calls = [0]

    def f(x: Any) -> Any:
        calls[0] += 1
        return x * 0.5 + 1.0

    for n in _ns(ns):
        with _about(strategy, n):
            calls[0] = 0
            store = _MeasuringStore()
            rec = Recurrence(f, df=lambda x: np.full_like(x, 0.5))
            out = backprop(rec, np.zeros(2), n, strategy, store=store)
            cost = strategy.cost(n)
            assert calls[0] == cost.forward_steps == out.stats.forward_steps, (
                f"{strategy!r}, n={n}: f called {calls[0]} times, engine says {out.stats.forward_steps}, "
                f"cost() predicts {cost.forward_steps}"
            )
            assert store.max_held == cost.peak_checkpoints == out.stats.peak_checkpoints, (
                f"{strategy!r}, n={n}: store held {store.max_held} at most, engine says "
                f"{out.stats.peak_checkpoints}, cost() predicts {cost.peak_checkpoints}"
            )
            assert out.stats.as_cost() == cost, f"{strategy!r}, n={n}: measured {out.stats}, predicted {cost}"
            assert len(store) == 0, f"{strategy!r}, n={n}: the store still holds {len(store)} states after the run"
            calls[0] = 0
            list(reverse(f, np.zeros(2), n, strategy))
            # reverse never computes x_n, unless the schedule advances to it (an online one must, to know it stopped)
            to_output = any(type(a) is Advance and a.stop == n for a in strategy.schedule(n))
            expected = cost.forward_steps - (0 if to_output else 1)
            assert calls[0] == expected, f"{strategy!r}, n={n}: reverse made {calls[0]} calls, expected {expected}"


def check_gradient_matches_store_all(strategy: ReversalStrategy, ns: Iterable[int] | None = None) -> None:
    """The gradient and final state equal plain backpropagation's on a nonlinear recurrence."""
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1, 1, 4)
    w = rng.uniform(-1, 1, 4)
    rec = Recurrence(lambda x: np.sin(1.3 * x) + 0.1, df=lambda x: 1.3 * np.cos(1.3 * x))
    for n in _ns(ns):
        with _about(strategy, n):
            got = backprop(rec, x0, n, strategy, adjoint=w)
            want = backprop(rec, x0, n, StoreAll(), adjoint=w)
            np.testing.assert_allclose(got.state, want.state, rtol=1e-12, atol=0, err_msg=f"{strategy!r}, n={n}")
            np.testing.assert_allclose(
                got.gradient, want.gradient, rtol=1e-10, atol=1e-300, err_msg=f"{strategy!r}, n={n}"
            )


def check_schedule_is_data(strategy: ReversalStrategy, ns: Iterable[int] | None = None) -> None:
    """A schedule can be walked twice with the same result; the strategy is hashable and compares by value."""
    for n in _ns(ns):
        with _about(strategy, n):
            schedule = strategy.schedule(n)
            assert list(schedule) == list(schedule), f"{strategy!r}, n={n}: two walks of one schedule differ"
    assert copy.deepcopy(strategy) == strategy, f"{strategy!r}: a copy does not compare equal"
    hash(strategy)


def check_rejects_bad_n(strategy: ReversalStrategy, ns: Iterable[int] | None = None) -> None:
    """``n`` must be an int >= 1: 0, negatives, booleans, floats and strings are refused with a message naming n."""
    for bad in (0, -3, True, 2.5, "10", None):
        try:
            strategy.schedule(bad)  # type: ignore[arg-type]
        except ParameterError as error:
            message = str(error)
        else:
            raise AssertionError(f"{strategy!r}: schedule(n={bad!r}) was accepted")
        assert "n must be" in message, f"{strategy!r}: unclear error for n={bad!r}: {message}"


CHECKS: tuple[Check, ...] = (
    check_reverses_in_order,
    check_keeps_its_promise,
    check_measured_equals_predicted,
    check_gradient_matches_store_all,
    check_schedule_is_data,
    check_rejects_bad_n,
)
"""Every contract check; each takes ``(strategy, ns=None)``."""


def check_strategy(strategy: ReversalStrategy, ns: Iterable[int] | None = None) -> None:
    """Run every check in :data:`CHECKS` on ``strategy``; raise AssertionError at the first failure."""
    if not isinstance(strategy, ReversalStrategy):
        raise ParameterError(f"strategy must be a ReversalStrategy instance, got {strategy!r}")
    lengths = _ns(ns)
    for check in CHECKS:
        check(strategy, lengths)  # type: ignore[call-arg]


def parametrize_with_checks(strategies: Sequence[ReversalStrategy]) -> Any:
    """A ``pytest.mark.parametrize`` over every (strategy, check) pair, for a test ``(strategy, check)``."""
    import pytest  # only where used: pytest is a test dependency, not a runtime one

    pairs = [(s, c) for s in strategies for c in CHECKS]
    ids = [f"{s!r}-{c.__name__}" for s, c in pairs]
    return pytest.mark.parametrize(("strategy", "check"), pairs, ids=ids)
