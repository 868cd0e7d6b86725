"""OnlineCheckpointing: runs whose length is known only when they stop.

Oracles: the brute-force DP of the offline bound T' (tests/online_oracles.py,
built on tests/oracles.py's DP of T), an independent port of equinox's
forward rule with Table O1 of THEORY 4.3, an exhaustive search over which
checkpoints to discard before reversing, plain backpropagation (StoreAll),
plain loops, and calls of f counted from outside.
"""

from __future__ import annotations

import doctest
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import online_oracles
import oracles
import pytest

import revseq
from revseq import Advance, Free, ParameterError, Store
from revseq.strategies import base, online
from revseq.strategies.online import OnlineCheckpointing, online_lower_bound
from revseq.testing import check_strategy

ROOT = Path(__file__).resolve().parent.parent


def optimal_range(c: int) -> int:
    return (c + 1) * (c + 2) // 2 - 1


def held_by_n(strategy: OnlineCheckpointing, nmax: int) -> dict[int, tuple[int, ...]]:
    """The checkpoints the forward sweep holds on reaching x_n, n = 1 .. nmax, read from its actions."""
    held: set[int] = set()
    out: dict[int, tuple[int, ...]] = {}
    live = 0
    for action in strategy.forward():
        if type(action) is Store:
            held.add(action.step)
        elif type(action) is Free:
            held.difference_update(range(action.start, action.stop))
        else:
            assert type(action) is Advance
            for n in range(live + 1, min(action.stop, nmax) + 1):
                out[n] = tuple(sorted(held))
            live = action.stop
            if live >= nmax:
                return out
    raise AssertionError("the forward sweep ended")


# -- the contract, and the promise ---------------------------------------------------------------------------


@pytest.mark.parametrize("c", [1, 2, 3, 5, 8])
def test_passes_the_contract(c):
    check_strategy(OnlineCheckpointing(checkpoints=c))


def test_cost_is_the_offline_bound_in_the_optimal_range():
    # T'(n, c) (DP): no schedule that computes x_n before reversing can do better, even knowing n.
    for c in range(1, 9):
        strategy = OnlineCheckpointing(checkpoints=c)
        for n in range(1, optimal_range(c) + 1):
            assert strategy.cost(n).forward_steps == online_oracles.lower_bound_dp(n, c), (c, n)
            assert strategy.bounds(n).forward_steps == online_oracles.lower_bound_dp(n, c), (c, n)


def test_one_checkpoint_is_optimal_for_every_n():
    # x_0 alone: sweep to x_n, then n (n - 1) / 2 steps of sweeps from x_0, the bound T'(n, 1).
    for n in range(1, 60):
        assert OnlineCheckpointing(checkpoints=1).cost(n).forward_steps == online_oracles.lower_bound_dp(n, 1)


def test_lower_bound_matches_the_dp():
    for c in range(1, 11):
        for n in range(1, 257):
            assert online_lower_bound(n, c) == online_oracles.lower_bound_dp(n, c), (c, n)


def test_lower_bound_is_within_two_of_the_offline_optimum_in_the_optimal_range():
    # THEORY 4.1: T' - T is 1 or 2 for 2 <= c <= 10 and n < (c+1)(c+2)/2; revseq's offline count is T + 1.
    for c in range(2, 11):
        for n in range(2, optimal_range(c) + 1):
            offline = revseq.optimal_forward_steps(n, c)
            assert online_lower_bound(n, c) - offline in (0, 1), (c, n)


def test_table_o1():
    for (c, n), (offline, bound, _equinox, equinox_forward) in online_oracles.TABLE_O1.items():
        assert oracles.closed_form_advances(n, c) == offline
        assert online_lower_bound(n, c) == bound
        # The oracle's port of equinox's rule, reversed optimally, reproduces the table's last column...
        positions = dict(online_oracles.positions_by_n(online_oracles.equinox_placements(c), c, n))[n]
        assert online_oracles.reversal_cost(positions, n, c) == equinox_forward, (c, n)
        # ... and OnlineCheckpointing never does worse than it.
        ours = OnlineCheckpointing(checkpoints=c).cost(n).forward_steps
        assert bound <= ours <= equinox_forward, (c, n, ours)


@pytest.mark.parametrize("c", [3, 5, 10])
def test_stays_close_to_the_bound_beyond_the_optimal_range(c):
    # Measured over n <= 2000 (docs/online.md has n <= 10^5): worst ratio to T' 1.066 (c=3), 1.049 (5),
    # 1.039 (10); equinox's rule, reversed optimally, reaches 1.21, 1.26, 1.32 there.
    strategy = OnlineCheckpointing(checkpoints=c)
    held = held_by_n(strategy, 2000)
    costs = {n: online_oracles.reversal_cost(held[n], n, c) for n in held}
    assert max(costs[n] / online_lower_bound(n, c) for n in costs) <= {3: 1.066, 5: 1.05, 10: 1.039}[c]
    equinox = online_oracles.positions_by_n(online_oracles.equinox_placements(c), c, 2000)
    assert max(online_oracles.reversal_cost(p, n, c) / online_lower_bound(n, c) for n, p in equinox) > 1.2
    for n in (*range(optimal_range(c) + 1, optimal_range(c) + 40), 333, 1000, 1999):
        assert strategy.cost(n).forward_steps == costs[n], (c, n)  # the schedule costs what the oracle says


@pytest.mark.parametrize(("c", "nmax"), [(2, 8000), (3, 4000), (6, 1500), (12, 700), (40, 3000)])
def test_forward_sweep_follows_its_rule(c, nmax):
    # The library's O(1)-per-step bookkeeping against the rule stated plainly and priced in full at every step.
    assert held_by_n(OnlineCheckpointing(checkpoints=c), nmax) == dict(online_oracles.adaptive_positions(c, nmax))


@pytest.mark.parametrize("c", [7, 40, 100])
def test_the_adaptive_rules_memo_changes_no_placement(c, monkeypatch):
    # Long stretches of segments are priced once and then copied from a memo (emptied when full): the placements
    # must be those of pricing every stretch afresh, with the memo emptied often or never used at all.
    start = optimal_range(c)

    def placements(n):
        held = online._stumm_walther_held(c, start)[0]
        return list(itertools.takewhile(lambda p: p[0] < n, online._adaptive(c, held)))

    n = start + 20_000
    memo = placements(n)
    assert len(memo) > 1000
    with monkeypatch.context() as patch:
        patch.setattr(online, "_COSTS_KEPT", 50)
        assert placements(n) == memo
    with monkeypatch.context() as patch:
        patch.setattr(online, "_MEMO_FROM", c)
        assert placements(n) == memo


@pytest.mark.parametrize("c", [1, 2, 3, 7, 12, 60])
def test_known_n_sweep_is_the_forward_sweep_cut(c):
    # schedule(n) cuts the sweep at x_n itself (the phases by islice); the general cut, action by action, of the
    # endless sweep must give the same actions and leave the same checkpoints.
    strategy = OnlineCheckpointing(checkpoints=c)
    edge = optimal_range(c)
    every = 1 if c < 20 else 19  # c = 60: 1890 steps in Stumm and Walther's phases, every 19th and the edge
    for n in sorted({*range(1, edge + 30, every), *range(max(1, edge - 4), edge + 30), edge + 333, 4 * edge + 7}):
        ours: list[int] = []
        general: list[int] = []
        assert list(strategy._forward_to(n, ours)) == list(base._cut_forward(strategy.forward(), n, general)), (c, n)
        assert ours == general, (c, n)


def test_reversal_is_optimal_for_the_positions_left():
    # Discarding checkpoints before reversing, to give later segments more room, never beats keeping them all.
    for c in range(2, 6):
        strategy = OnlineCheckpointing(checkpoints=c)
        held = held_by_n(strategy, 150)
        for n in range(1, 151):
            cost = strategy.cost(n).forward_steps
            assert cost == online_oracles.reversal_cost(held[n], n, c) == online_oracles.best_subset_cost(held[n], n, c)


def test_never_more_than_c_checkpoints():
    c = 5
    strategy = OnlineCheckpointing(checkpoints=c)
    # The forward sweep, whatever n turns out to be: count what is held after every action up to x_3000.
    held: set[int] = set()
    for action in strategy.forward():
        if type(action) is Store:
            held.add(action.step)
            assert len(held) <= c
        elif type(action) is Free:
            held.difference_update(range(action.start, action.stop))
        elif action.stop >= 3000:
            break
    # The whole schedule, the reversal included, for many n: the simulator checks after every action.
    for n in (*range(1, 200), *range(200, 3001, 37), 3000):
        assert revseq.simulate(strategy.schedule(n), n, checkpoints=c).peak_checkpoints == min(c, n)


def test_forward_sweep_is_lazy_and_endless():
    for c in (1, 2, 7):
        actions = list(itertools.islice(OnlineCheckpointing(checkpoints=c).forward(), 300))
        assert {type(a) for a in actions} <= {Advance, Store, Free}
        assert not any(a.keep for a in actions if type(a) is Advance)
        steps = [a for a in actions if type(a) is Advance]
        assert all(b.start == a.stop for a, b in itertools.pairwise([Advance(0, 0), *steps]))  # one after another
    last = list(OnlineCheckpointing(checkpoints=1).forward())  # one checkpoint: x_0, then on until stopped
    assert last == [Store(0), Advance(0, sys.maxsize)]


# -- cost(n) without walking the schedule -------------------------------------------------------------------------


@pytest.mark.parametrize("c", [1, 2, 3, 4, 5, 7, 12, 30])
def test_cost_without_walking_is_the_simulation(c):
    # cost(n) finds the checkpoints held at x_n and adds Revolve's closed forms per segment; the simulator walks
    # and validates every action of schedule(n). Every field must agree: forward steps, peak, writes, reads.
    strategy = OnlineCheckpointing(checkpoints=c)
    edge = optimal_range(c)
    ns = {*range(1, 41), *range(max(1, edge - 3), edge + 5), 97, 256, 613, 1500, 4000}
    for n in sorted(ns):
        assert strategy.cost(n) == strategy.schedule(n).cost(), (c, n)


def test_cost_without_walking_far_past_the_optimal_range():
    # n = 20,000 with c = 10: the forward steps against the oracle's reversal cost of the checkpoints read from the
    # forward sweep's own actions, and the whole Cost against the simulator.
    strategy = OnlineCheckpointing(checkpoints=10)
    n = 20_000
    held = held_by_n(strategy, n)[n]
    cost = strategy.cost(n)
    assert cost.forward_steps == online_oracles.reversal_cost(held, n, 10)
    assert cost == strategy.schedule(n).cost()


def test_stumm_walther_positions_in_closed_form():
    # The positions held on reaching x_n and the number of stores, computed in O(c) from the phases, against the
    # oracle's transcription of equinox's slot-pointer rule, for every n of the optimal range.
    for c in range(1, 13):
        placements = list(
            itertools.takewhile(lambda p, c=c: p[0] < optimal_range(c), online_oracles.equinox_placements(c))
        )
        positions = dict(online_oracles.positions_by_n(iter(placements), c, optimal_range(c)))
        for n in range(1, optimal_range(c) + 1):
            held, stores = online._stumm_walther_held(c, n)
            assert (tuple(held), stores) == (positions[n], sum(step < n for step, _ in placements)), (c, n)


def test_cost_in_the_optimal_range_for_a_large_budget():
    # O(c) in the optimal range: c = 20,000 covers 2 * 10^8 steps. The forward steps are the bound, 2n - c.
    strategy = OnlineCheckpointing(checkpoints=20_000)
    for n in (10**5, 1_234_567, 2 * 10**8):
        cost = strategy.cost(n)
        assert cost.forward_steps == online_lower_bound(n, 20_000) == 2 * n - 20_000
        assert cost.peak_checkpoints == 20_000


def brute_first(predicate, start=1):
    size = start
    while predicate(size):
        size += 1
    return size


def test_waiting_limits_against_brute_force():
    # How far the last segment grows before a store wins: bisection on a table (and doubling past it), and a
    # cached doubling search, against stepping one size at a time with the oracle's Revolve costs.
    def advances(length, slots):
        return online_oracles.advances(length, slots) if length > 1 else 0

    def waiting(size):
        return advances(size, 1) - advances(size - 1, 2)

    for margin in (-5, 0, 1, 2, 3, 10, 77, 1000, 12_345, 8_000_000, 8_500_000):  # the table ends near 8.3e6
        assert online._inner_limit(margin) == brute_first(lambda size, m=margin: waiting(size) <= m), margin
    assert online._inner_limit(math.inf) is None
    for gap in (*range(1, 40), 333, 4321, 10**5):
        before = advances(gap, 2)
        merged = brute_first(lambda size, g=gap, b=before: advances(size, 1) + b <= advances(size - 1 + g, 2))
        assert online._merge_limit(gap) == merged, gap


def test_cost_refuses_runs_too_long_to_price():
    strategy = OnlineCheckpointing(checkpoints=3)
    too_long = online.MAX_COST_STEPS + 1
    with pytest.raises(ParameterError, match=rf"n must be <= {too_long - 1} .* got {too_long}: past its optimal range"):
        strategy.cost(too_long)
    assert strategy.schedule(too_long).n == too_long  # the schedule itself is lazy: only its price is refused
    large = OnlineCheckpointing(checkpoints=5000)  # its optimal range, 12.5 million steps, is priced in O(c)
    assert large.cost(optimal_range(5000)).forward_steps == online_lower_bound(optimal_range(5000), 5000)


# -- running it: n=None with until / max_steps -----------------------------------------------------------------


def counting(f):
    calls = [0]

    def step(x):
        calls[0] += 1
        return f(x)

    return step, calls


def test_backprop_until_a_step_matches_store_all():
    x0 = np.linspace(-1.0, 1.0, 5)
    step, calls = counting(np.sin)
    strategy = OnlineCheckpointing(checkpoints=4)
    out = revseq.backprop(revseq.Recurrence(step, np.cos), x0, None, strategy, until=lambda t, x: t == 37)
    want = revseq.backprop(revseq.Recurrence(np.sin, np.cos), x0, 37, revseq.StoreAll())
    np.testing.assert_allclose(out.state, want.state, rtol=1e-14)
    np.testing.assert_allclose(out.gradient, want.gradient, rtol=1e-12)
    assert out.stats.n == 37
    assert calls[0] == out.stats.forward_steps == strategy.cost(37).forward_steps
    assert out.stats.peak_checkpoints <= 4
    assert out.stats.as_cost() == strategy.cost(37)  # the known-n schedule is the same run
    known = revseq.backprop(revseq.Recurrence(np.sin, np.cos), x0, 37, strategy)
    np.testing.assert_array_equal(known.gradient, out.gradient)


def test_data_dependent_stop_matches_a_plain_loop():
    # Damped oscillator, stopped when the state's norm drops below a threshold.
    a = np.array([[0.99, 0.1], [-0.1, 0.97]])

    def f(x):
        return a @ x + 0.01 * np.sin(x)

    def vjp(x, g):
        return a.T @ g + 0.01 * np.cos(x) * g

    x0 = np.array([1.0, 0.5])
    stop = lambda t, x: np.linalg.norm(x) < 0.05  # noqa: E731
    x, n = x0, 0
    while True:
        x, n = f(x), n + 1
        if stop(n, x):
            break
    assert n > 100  # long enough to leave the optimal range of 5 checkpoints (20 steps)
    rec = revseq.Recurrence(f, vjp=vjp)
    out = revseq.backprop(rec, x0, None, OnlineCheckpointing(checkpoints=5), until=stop)
    want = revseq.backprop(rec, x0, n, revseq.StoreAll())
    assert out.stats.n == n
    np.testing.assert_array_equal(out.state, x)
    np.testing.assert_allclose(out.gradient, want.gradient, rtol=1e-12)
    assert out.stats.forward_steps == OnlineCheckpointing(checkpoints=5).cost(n).forward_steps


def test_max_steps_stops_the_run():
    step, calls = counting(lambda x: 0.5 * x + 1.0)
    rec = revseq.Recurrence(step, df=lambda x: np.full_like(x, 0.5))
    out = revseq.backprop(
        rec, np.zeros(2), None, OnlineCheckpointing(checkpoints=3), until=lambda t, x: False, max_steps=50
    )
    assert out.stats.n == 50
    assert calls[0] == OnlineCheckpointing(checkpoints=3).cost(50).forward_steps
    np.testing.assert_allclose(out.gradient, 0.5**50)


def test_max_steps_alone_picks_an_optimal_budget():
    for m in (1, 2, 9, 100):
        rec = revseq.Recurrence(np.sin, np.cos)
        out = revseq.backprop(rec, np.ones(3), None, max_steps=m)
        c = OnlineCheckpointing.for_max_steps(m).checkpoints
        assert out.stats.n == m
        assert out.stats.peak_checkpoints <= c
        assert out.stats.forward_steps == online_oracles.lower_bound_dp(m, c)
    out = revseq.backprop(
        revseq.Recurrence(np.sin, np.cos), np.ones(3), None, until=lambda t, x: t == 40, max_steps=100
    )
    assert out.stats.n == 40


def test_reverse_until():
    step, calls = counting(lambda x: x + 1)
    states = revseq.reverse(step, 0, None, OnlineCheckpointing(3), until=lambda t, x: x == 12)
    assert [int(x) for x in states] == list(range(11, -1, -1))
    assert states.stats.n == 12
    # The forward sweep had to compute x_12 to know it had stopped: one call more than an offline reverse.
    assert calls[0] == states.stats.forward_steps == OnlineCheckpointing(3).cost(12).forward_steps


def test_max_bytes_budget():
    x0 = np.zeros(100)  # 800 bytes
    strategy = OnlineCheckpointing(max_bytes=4000)
    assert strategy.sized(800) == OnlineCheckpointing(checkpoints=5)
    out = revseq.backprop(revseq.Recurrence(np.cos, lambda x: -np.sin(x)), x0, None, strategy, max_steps=200)
    assert out.stats.peak_checkpoints == 5
    assert out.stats.peak_bytes <= 4000
    assert out.stats.forward_steps == OnlineCheckpointing(checkpoints=5).cost(200).forward_steps


# -- for_max_steps -----------------------------------------------------------------------------------------------


def test_for_max_steps_is_the_smallest_optimal_budget():
    c = 1
    for m in range(1, 3000):
        while optimal_range(c) < m:  # brute force: the smallest c whose optimal range covers m
            c += 1
        assert OnlineCheckpointing.for_max_steps(m).checkpoints == c, m
        # equinox's formula (its checkpointed_while_loop default), in floating point
        assert c == (1 if m == 1 else math.floor(-1.5 + math.sqrt(2 * m + 0.25)) + 1), m
    for m in (10**6, 10**9 + 7, 2**62):
        c = OnlineCheckpointing.for_max_steps(m).checkpoints
        assert optimal_range(c - 1) < m <= optimal_range(c)


# -- bad inputs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "OnlineCheckpointing needs a budget, checkpoints=c or max_bytes=, got neither"),
        ({"checkpoints": 0}, "checkpoints must be an int >= 1, got 0"),
        ({"checkpoints": True}, "checkpoints must be an int >= 1, got True"),
        ({"checkpoints": 2.5}, "checkpoints must be an int >= 1, got 2.5"),
        ({"checkpoints": 3, "max_bytes": 100}, "give the budget once"),
        ({"max_bytes": 0}, "max_bytes must be an int >= 1, got 0"),
    ],
)
def test_rejects_bad_configuration(kwargs, message):
    with pytest.raises(ParameterError, match=message):
        OnlineCheckpointing(**kwargs)


def test_accepts_numpy_integers():
    assert OnlineCheckpointing(checkpoints=np.int64(4)) == OnlineCheckpointing(checkpoints=4)


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, None])
def test_for_max_steps_rejects_bad_values(bad):
    with pytest.raises(ParameterError, match="max_steps must be an int >= 1"):
        OnlineCheckpointing.for_max_steps(bad)


def test_byte_budget_needs_the_state_size():
    with pytest.raises(ParameterError, match="needs the state's size"):
        OnlineCheckpointing(max_bytes=1000).cost(10)
    with pytest.raises(ParameterError, match="must hold at least one state"):
        revseq.backprop(
            revseq.Recurrence(np.sin, np.cos), np.ones(10), None, OnlineCheckpointing(max_bytes=40), max_steps=5
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": OnlineCheckpointing(3), "until": 5}, r"until must be callable as until\(t, x_t\), got 5"),
        ({"strategy": OnlineCheckpointing(3)}, "n=None runs until a condition: give until="),
        ({"strategy": revseq.StoreAll(), "until": lambda t, x: t == 3}, "n=None needs an online strategy"),
        ({"until": lambda t, x: t == 3}, "n=None without max_steps needs a budget"),
        ({"strategy": OnlineCheckpointing(3), "max_steps": 0}, "max_steps must be an int >= 1, got 0"),
        ({"n": 10, "strategy": OnlineCheckpointing(3), "max_steps": 5}, "until and max_steps go with n=None"),
    ],
)
def test_run_rejects_bad_inputs(kwargs, message):
    n = kwargs.pop("n", None)
    with pytest.raises(ParameterError, match=message):
        revseq.backprop(revseq.Recurrence(np.sin, np.cos), np.ones(2), n, **kwargs)


# -- the documentation -----------------------------------------------------------------------------------------


def test_docs_examples():
    result = doctest.testfile(
        str(ROOT / "docs" / "online.md"),
        module_relative=False,
        globs={"revseq": revseq, "np": np},
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
    )
    assert result.attempted > 0
    assert result.failed == 0


# -- the shared table of the adaptive rule's placements ------------------------------------------------------------


@pytest.mark.parametrize("c", [3, 6])
def test_placements_from_a_small_shared_table_follow_the_rule(c, monkeypatch):
    # Every sweep reads the adaptive rule's placements from a table shared by budget. With room for only a few,
    # made and read a few at a time, sweeps must still follow the rule (the plain-rule oracle): the first one past
    # the full table's end takes the table's rule over, later ones start a fresh rule and skip what it holds.
    monkeypatch.setattr(online, "_TABLES", {})
    monkeypatch.setattr(online, "_TABLE_KEPT", 20)
    monkeypatch.setattr(online, "_GROW", 7)
    monkeypatch.setattr(online, "_READ", 5)
    nmax = optimal_range(c) + 600
    expected = dict(online_oracles.adaptive_positions(c, nmax))
    strategy = OnlineCheckpointing(checkpoints=c)
    assert held_by_n(strategy, nmax) == expected  # fills the table, then takes its rule
    assert len(online._TABLES[c].steps) == 20
    assert online._TABLES[c].rule is None
    assert held_by_n(strategy, nmax) == expected  # a fresh rule past the table's end
    for n in (optimal_range(c) + 1, optimal_range(c) + 150, nmax):
        stored: list[int] = []
        assert list(strategy._forward_to(n, stored)) == list(base._cut_forward(strategy.forward(), n, []))
        assert tuple(stored) == expected[n]
        assert strategy.cost(n).forward_steps == online_oracles.reversal_cost(expected[n], n, c)


def test_a_table_needing_room_drops_the_others(monkeypatch):
    monkeypatch.setattr(online, "_TABLES", {})
    monkeypatch.setattr(online, "_TABLE_KEPT", 30)
    first = list(itertools.islice(OnlineCheckpointing(checkpoints=4).forward(), 200))
    assert list(online._TABLES) == [4]
    list(itertools.islice(OnlineCheckpointing(checkpoints=5).forward(), 200))  # 16 more would pass 30: 4's goes
    assert list(online._TABLES) == [5]
    assert list(itertools.islice(OnlineCheckpointing(checkpoints=4).forward(), 200)) == first  # made again
    assert list(online._TABLES) == [4]
    monkeypatch.setattr(online, "_TABLE_KEPT", 1000)
    monkeypatch.setattr(online, "_TABLES_BUDGETS", 3)  # and at most this many budgets, the least recently used going
    for c in (5, 6, 4, 7):
        list(itertools.islice(OnlineCheckpointing(checkpoints=c).forward(), 400))
    assert list(online._TABLES) == [6, 4, 7]


def test_an_interrupted_table_stops_growing(monkeypatch):
    # A sweep interrupted while the table's rule runs loses what the rule made: the table must not go on from
    # there (it would skip placements), and later sweeps past its end start a fresh rule.
    monkeypatch.setattr(online, "_TABLES", {})
    c, nmax = 5, 300
    expected = dict(online_oracles.adaptive_positions(c, nmax))
    table = online._table(c)
    rule = table.rule
    assert rule is not None

    def interrupted():
        yield next(rule)
        raise KeyboardInterrupt

    table.rule = interrupted()
    with pytest.raises(KeyboardInterrupt):
        list(itertools.islice(OnlineCheckpointing(checkpoints=c).forward(), 100))
    assert table.rule is None
    assert len(table.steps) == 0
    assert held_by_n(OnlineCheckpointing(checkpoints=c), nmax) == expected


def test_sweeps_in_threads_share_one_table(monkeypatch):
    # Sweeps with the same budget in several threads read and grow one table under its lock: each must still
    # follow the rule.
    import threading

    monkeypatch.setattr(online, "_TABLES", {})
    c, nmax = 4, 1500
    expected = dict(online_oracles.adaptive_positions(c, nmax))
    found: list[bool] = []

    def sweep() -> None:
        found.append(held_by_n(OnlineCheckpointing(checkpoints=c), nmax) == expected)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=sweep) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert found == [True] * 4
