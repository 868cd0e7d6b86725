"""Sizes: closed-form costs for the offline strategies, O(polylog) helpers, and scale-free disk costs.

``cost(n)`` of every built-in offline strategy is computed without walking
its schedule; the oracle is the simulator, ``revseq.simulate(strategy.schedule(n),
n)``, for every n up to 300, and for large n the formulas of DESIGN.md and
tests/oracles.py, plus a plain memoised walk of Revolve's recursion written
out below. Sizes nobody can walk must come back at once: the tests that
check them make the schedule unreachable, so that walking it would fail.
"""

from __future__ import annotations

import math
import random
import sys

import oracles
import pytest

import revseq
from revseq import BinomialCheckpointing, Recompute, RecursiveHalving, SqrtCheckpointing, StoreAll
from revseq.strategies import binomial
from revseq.strategies.multistage import DiskCosts, MultistageCheckpointing

NS = range(1, 301)

OFFLINE = [
    StoreAll(),
    Recompute(),
    RecursiveHalving(),
    SqrtCheckpointing(),
    *(SqrtCheckpointing(interval=k) for k in range(1, 21)),
    BinomialCheckpointing(),
    *(BinomialCheckpointing(checkpoints=c) for c in range(1, 13)),
]


@pytest.mark.parametrize("strategy", OFFLINE, ids=repr)
def test_closed_form_cost_equals_the_simulation(strategy):
    for n in NS:
        assert strategy.cost(n) == revseq.simulate(strategy.schedule(n), n), f"{strategy!r}, n={n}"


@pytest.mark.parametrize(
    ("strategy", "n"),
    [
        (BinomialCheckpointing(checkpoints=30), 20_000),
        (BinomialCheckpointing(checkpoints=3), 30_000),
        (BinomialCheckpointing(checkpoints=2), 5_000),
        (BinomialCheckpointing(), 50_000),
        (RecursiveHalving(), 100_003),
        (SqrtCheckpointing(interval=77), 100_000),
        (Recompute(), 2_001),
    ],
    ids=repr,
)
def test_closed_form_cost_equals_the_simulation_for_larger_n(strategy, n):
    assert strategy.cost(n) == revseq.simulate(strategy.schedule(n), n)


def test_design_numbers():
    # DESIGN.md: n=100, c=5: 317; n=1000, c=10: 3637; n=10^4, c=15: 45156; n=10^6, c=30: 5623009.
    for n, c, steps in ((100, 5, 317), (1000, 10, 3637), (10**4, 15, 45156), (10**6, 30, 5623009)):
        cost = BinomialCheckpointing(checkpoints=c).cost(n)
        assert (cost.forward_steps, cost.peak_checkpoints) == (steps, c)
    # The gist's halving makes 74608 steps with 15 states at n=10^4; ours never worse on either count.
    halving = RecursiveHalving().cost(10**4)
    assert halving.forward_steps == 1 + sum(bin(k).count("1") for k in range(10**4)) == 64609
    assert halving.peak_checkpoints == 14


# -- a plain walk of Revolve's recursion: the oracle for the writes and reads at large n -------------


def walked_counts(length: int, slots: int) -> tuple[int, int, int]:
    """(peak, writes, reads) of ``revolve``'s reversal, counted by walking its recursion with memoisation.

    Read off the actions ``revolve`` makes: a split at ``j = _split(L, s)`` is
    ``Advance``, ``Store(mid)`` (when the right part has more than one step)
    and, after the right part, ``Restore(base)``; a part with ``s >= L - 1``
    keeps every state (``L - 2`` writes), one with one slot sweeps (``L - 2``
    restores). No closed form is used, so the number of sub-problems grows
    with n (1_131 for n = 10**12, c = 10).
    """
    memo: dict[tuple[int, int], tuple[int, int, int]] = {}
    stack = [(length, slots)]
    while stack:
        size, s = task = stack[-1]
        if task in memo:
            stack.pop()
        elif s >= size - 1:  # every state kept: x_base and size - 2 more
            memo[task] = (max(size - 1, 0), max(size - 2, 0), 0)
        elif s == 1:  # sweeps from x_base, restored before each but the first
            memo[task] = (1, 0, size - 2)
        else:
            j = binomial._split(size, s)
            left, right = (j, s), (size - j, s - 1)
            if left not in memo or right not in memo:
                stack.extend(p for p in (left, right) if p not in memo)
                continue
            (lp, lw, lr), (rp, rw, rr) = memo[left], memo[right]
            memo[task] = (max(1 + rp, lp), (size - j > 1) + rw + lw, 1 + rr + lr)
    return memo[(length, slots)]


def test_the_walk_itself_counts_what_the_simulator_counts():
    for n in (2, 3, 7, 50, 301, 1000):
        for c in (1, 2, 3, 4, 9):
            cost = revseq.simulate(BinomialCheckpointing(checkpoints=c).schedule(n), n)
            assert walked_counts(n, c) == (cost.peak_checkpoints, cost.writes - (n > 1), cost.reads)


def test_binomial_counts_equal_the_walk_for_large_n():
    rng = random.Random(20240611)
    cases = [(10**12, 10), (10**6, 1000), (10**6, 30), (10**9, 3), (10**7, 2), (10**8, 4000)]
    cases += [
        (rng.randint(2, 10**9), rng.choice([2, 3, 4, 5, 8, 13, 40, 200, rng.randint(2, 3000)])) for _ in range(60)
    ]
    for n, c in cases:
        assert binomial.revolve_counts(n, c) == walked_counts(n, c), (n, c)


# -- sizes nobody can walk: answered at once ----------------------------------------------------------


@pytest.fixture
def unwalkable(monkeypatch):
    """Any attempt to list a schedule fails: what is computed under it never walked one."""

    def refuse(self, n):
        raise AssertionError(f"{self!r}.actions({n}) was called: the cost should not walk the schedule")

    for cls in (StoreAll, Recompute, RecursiveHalving, SqrtCheckpointing, BinomialCheckpointing):
        monkeypatch.setattr(cls, "actions", refuse)


@pytest.mark.usefixtures("unwalkable")
def test_huge_sizes_are_answered_at_once():
    for n in (10**12, 2**70):
        assert StoreAll().cost(n) == revseq.Cost(n=n, forward_steps=n, peak_checkpoints=n - 1, writes=n - 1, reads=0)
        cost = Recompute().cost(n)
        assert (cost.forward_steps, cost.peak_checkpoints, cost.reads) == (n * (n - 1) // 2 + 1, 1, n - 2)
    n = 10**12
    cost = BinomialCheckpointing(checkpoints=10).cost(n)
    assert cost.forward_steps == oracles.closed_form_advances(n, 10) + 1
    peak, writes, reads = walked_counts(n, 10)
    assert (cost.peak_checkpoints, cost.writes, cost.reads) == (peak, writes + 1, reads)
    n = 2**70
    assert RecursiveHalving().cost(n).forward_steps == 1 + oracles.halving_advances(n)
    assert RecursiveHalving().cost(n).peak_checkpoints == 70
    k = math.isqrt(n - 1) + 1
    sqrt = SqrtCheckpointing().cost(n)
    assert (sqrt.forward_steps, sqrt.peak_checkpoints) == (
        oracles.segment_forward_steps(n, k),
        oracles.segment_peak(n, k),
    )
    for c in (2, 3, 7, 10**6):
        assert BinomialCheckpointing(checkpoints=c).cost(10**30).peak_checkpoints == c
    assert BinomialCheckpointing().cost(10**30).forward_steps <= 2 * 10**30


def test_a_users_strategy_is_still_simulated():
    class Kept(revseq.ReversalStrategy):
        def actions(self, n):
            return StoreAll().actions(n)

    assert Kept().cost(50) == StoreAll().cost(50)
    with pytest.raises(revseq.ParameterError, match="n must be an int >= 1, got 0"):
        StoreAll().cost(0)
    with pytest.raises(revseq.ParameterError, match="needs the state's size"):
        BinomialCheckpointing(max_bytes=1000).cost(10)


# -- the helpers that used to loop over n ---------------------------------------------------------------


def test_repetition_number_is_logarithmic():
    assert revseq.repetition_number(10**9, 1) == 10**9 - 1  # C(1 + r, 1) = r + 1
    assert revseq.repetition_number(10**100, 1) == 10**100 - 1
    for n in (2, 3, 10**12, 10**40 + 7):
        r = revseq.repetition_number(n, 2)  # C(2 + r, 2) >= n, the least such
        assert math.comb(2 + r, 2) >= n > math.comb(1 + r, 2)
    for n in range(1, 400):
        for c in range(1, 9):
            assert revseq.repetition_number(n, c) == oracles.repetition(n, c)


def test_online_lower_bound_in_closed_form():
    def by_increments(n: int, c: int) -> int:  # THEORY 4.1's sum, step by step
        extra = taken = r = 0
        count = c
        while count < n:
            extra += r * (count - taken)
            taken = count
            r += 1
            count = math.comb(c + r + 1, c) - 1
        return n + extra + r * (n - taken)

    for c in range(1, 12):
        for n in range(1, 800):
            assert revseq.online_lower_bound(n, c) == by_increments(n, c), (n, c)
    n = 10**12  # one checkpoint: x_n, then every state recomputed from x_0
    assert revseq.online_lower_bound(n, 1) == n + n * (n - 1) // 2


def test_default_budgets_for_huge_n():
    for n in (1, 2, 5, 10**12, 10**40, 2**200 + 1):
        c = BinomialCheckpointing().budget(n)  # the fewest with C(c + 2, 2) >= n
        assert math.comb(c + 2, 2) >= n
        assert c == 1 or math.comb(c + 1, 2) < n
        c = revseq.OnlineCheckpointing.for_max_steps(n).budget()  # the fewest with (c+1)(c+2)/2 - 1 >= n
        assert (c + 1) * (c + 2) // 2 - 1 >= n
        assert c == 1 or c * (c + 1) // 2 - 1 < n


def test_online_with_a_budget_past_any_run():
    strategy = revseq.OnlineCheckpointing(checkpoints=10**12)  # used to allocate a list of 10**12 slots
    assert strategy.cost(40) == revseq.simulate(strategy.schedule(40), 40)
    assert strategy.cost(40).forward_steps == 40


# -- disk costs: only their ratios matter --------------------------------------------------------------

FACTORS = (1e-300, 1.0, 1e300, 1e307)


@pytest.mark.parametrize("costs", [(1.0, 2.0, 1.0), (1.0, 6.0, 2.0), (2.0, 3.0, 0.25), (1.0, 0.7, 0.3)])
@pytest.mark.parametrize(("ram", "disk"), [(2, None), (1, 3), (0, 2), (3, 1)])
def test_scaling_the_costs_changes_nothing_but_the_unit(costs, ram, disk):
    step, write, read = costs
    base = MultistageCheckpointing(ram=ram, disk=disk, costs=DiskCosts(step, write, read))
    for n in (1, 6, 41, 150):
        actions, time = list(base.schedule(n)), base.predicted_time(n)
        assert time == base.costs.time(base.cost(n))
        for factor in FACTORS:
            scaled = (step * factor, write * factor, read * factor)
            if not all(math.isfinite(v) for v in scaled):
                continue  # not representable
            strategy = MultistageCheckpointing(ram=ram, disk=disk, costs=DiskCosts(*scaled))
            assert list(strategy.schedule(n)) == actions, (factor, n)
            got = strategy.predicted_time(n)
            assert got == strategy.costs.time(strategy.cost(n))
            if time * factor > sys.float_info.max:
                assert got == math.inf  # only when the true time is past the largest float
            else:
                assert got == pytest.approx(time * factor, rel=1e-12)


def test_costs_near_the_float_limit_plan_as_small_ones():
    # 1e307 per step overflowed the planner within ten steps and turned every choice into a tie.
    huge = MultistageCheckpointing(ram=2, costs=DiskCosts(step=1e307, write=2e307, read=1e307))
    small = MultistageCheckpointing(ram=2, costs=DiskCosts(step=1.0, write=2.0, read=1.0))
    for n in (5, 17, 100):
        assert list(huge.schedule(n)) == list(small.schedule(n))
        assert huge.cost(n).disk_writes > 0 or n < 17
    assert huge.predicted_time(5) == 1e307 * small.predicted_time(5) < math.inf
    assert huge.predicted_time(100) == math.inf  # 260e307: past the largest float
