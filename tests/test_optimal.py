"""Binomial checkpointing makes the provably fewest forward steps.

Oracles (tests/oracles.py, none of them imports revseq): the brute-force DP
of THEORY 1.2, the closed form of THEORY 1.1, and an exhaustive search over
every pebble-game schedule for tiny n; plus the verified tables of THEORY
and the examples of DESIGN. A whole ``backprop`` makes ``T(n, c) + 1``
calls of f (THEORY's note on conventions).
"""

from __future__ import annotations

import math
import platform

import oracles
import pytest

import revseq

NMAX, CMAX = 200, 12

# THEORY Table B1: T(n, s), minimal advances (GW accounting), columns s = 1, 2, 3, 5, 10.
TABLE_B1_S = (1, 2, 3, 5, 10)
TABLE_B1 = {
    1: (0, 0, 0, 0, 0),
    2: (1, 1, 1, 1, 1),
    3: (3, 2, 2, 2, 2),
    4: (6, 4, 3, 3, 3),
    5: (10, 6, 5, 4, 4),
    7: (21, 11, 9, 7, 6),
    11: (55, 24, 18, 15, 10),
    12: (66, 28, 21, 17, 12),
    16: (120, 45, 33, 25, 20),
    20: (190, 65, 45, 33, 28),
    50: (1225, 285, 180, 122, 88),
    100: (4950, 845, 490, 316, 222),
    1000: (499500, 28820, 12155, 6284, 3636),
}

# THEORY Table B2: repetition number r(n, s), same columns.
TABLE_B2 = {
    1: (0, 0, 0, 0, 0),
    4: (3, 2, 1, 1, 1),
    7: (6, 3, 2, 2, 1),
    12: (11, 4, 3, 2, 2),
    50: (49, 9, 5, 3, 2),
    100: (99, 13, 7, 4, 3),
    1000: (999, 44, 17, 8, 4),
}

# THEORY Table B4: T(n, s) for large n, via the closed form.
TABLE_B4 = [
    (10_000, 10, 7, 57_624),
    (10_000, 20, 4, 37_976),
    (10_000, 50, 3, 28_622),
    (10_000, 100, 3, 24_747),
    (100_000, 10, 10, 832_040),
    (100_000, 30, 5, 447_640),
    (1_000_000, 20, 8, 6_815_960),
    (1_000_000, 50, 5, 4_658_945),
]

# DESIGN.md's examples, in revseq's counting (calls of f over a whole backprop).
DESIGN_EXAMPLES = [(100, 5, 317), (1000, 10, 3637), (10_000, 15, 45_156), (1_000_000, 30, 5_623_009)]


# -- the oracles agree with each other and with THEORY's tables -------------------


def test_dp_equals_closed_form():
    table = oracles.dp_table(NMAX, CMAX)
    mismatches = [
        (n, c, table[c][n], oracles.closed_form_advances(n, c))
        for c in range(1, CMAX + 1)
        for n in range(1, NMAX + 1)
        if table[c][n] != oracles.closed_form_advances(n, c)
    ]
    assert mismatches == []


@pytest.mark.parametrize("n", sorted(TABLE_B1))
def test_oracles_reproduce_table_b1(n):
    for s, expected in zip(TABLE_B1_S, TABLE_B1[n], strict=True):
        assert oracles.closed_form_advances(n, s) == expected, (n, s)
        if n <= NMAX:
            assert oracles.dp_advances(n, s) == expected, (n, s)


@pytest.mark.parametrize("n", range(1, 9))
@pytest.mark.parametrize("c", range(1, 5))
def test_exhaustive_search_equals_dp(n, c):
    # THEORY 1.2: the DP is the optimum over *every* schedule, not just nested ones.
    assert oracles.exhaustive_advances(n, c) == oracles.dp_advances(n, c)


# -- revseq meets the optimum ------------------------------------------------------


@pytest.mark.parametrize("c", range(1, CMAX + 1))
def test_binomial_cost_is_optimal_for_every_small_n(c):
    table = oracles.dp_table(NMAX, CMAX)
    strategy = revseq.BinomialCheckpointing(checkpoints=c)
    for n in range(1, NMAX + 1):
        cost = strategy.cost(n)
        expected = table[c][n] + 1
        assert cost.forward_steps == expected == oracles.closed_form_advances(n, c) + 1, (n, c, cost)
        assert cost.peak_checkpoints <= c, (n, c, cost)
        assert revseq.optimal_forward_steps(n, c) == expected, (n, c)


@pytest.mark.parametrize("n", range(1, 9))
@pytest.mark.parametrize("c", range(1, 5))
def test_binomial_cost_equals_exhaustive_search(n, c):
    assert revseq.BinomialCheckpointing(checkpoints=c).cost(n).forward_steps == oracles.exhaustive_advances(n, c) + 1


@pytest.mark.parametrize("n", sorted(TABLE_B2))
def test_repetition_number_matches_table_b2(n):
    for s, expected in zip(TABLE_B1_S, TABLE_B2[n], strict=True):
        assert revseq.repetition_number(n, s) == expected == oracles.repetition(n, s), (n, s)


@pytest.mark.parametrize(("n", "s", "r", "advances"), TABLE_B4)
def test_large_n_matches_table_b4(n, s, r, advances):
    assert oracles.closed_form_advances(n, s) == advances
    assert revseq.repetition_number(n, s) == r
    assert revseq.optimal_forward_steps(n, s) == advances + 1


@pytest.mark.parametrize(("n", "c", "steps"), DESIGN_EXAMPLES)
def test_design_examples_by_formula(n, c, steps):
    assert oracles.closed_form_advances(n, c) + 1 == steps
    assert revseq.optimal_forward_steps(n, c) == steps


@pytest.mark.parametrize(("n", "c", "steps"), [*DESIGN_EXAMPLES[:3], (100_000, 30, 447_641)])
def test_design_examples_by_simulation(n, c, steps):
    # n = 10^6, c = 30 takes ~7 s to simulate here, so only the formula checks it
    # (test_design_examples_by_formula); n = 10^5, c = 30 is THEORY Table B4's row.
    cost = revseq.BinomialCheckpointing(checkpoints=c).cost(n)
    assert cost.forward_steps == steps
    assert cost.peak_checkpoints <= c


@pytest.mark.parametrize(
    ("n", "advances"),
    # THEORY Table H1: Revolve T(n, ceil(log2 n)), against the halving's B(n) with the same memory.
    [(10, 14), (16, 27), (100, 255), (128, 347), (1000, 3636), (1024, 3755), (10_000, 46_124)],
)
def test_binomial_beats_halving_with_the_same_memory(n, advances):
    slots = math.ceil(math.log2(n))
    binomial = revseq.BinomialCheckpointing(checkpoints=slots).cost(n)
    halving = revseq.RecursiveHalving().cost(n)
    assert binomial.forward_steps == advances + 1
    assert halving.peak_checkpoints == slots
    assert binomial.forward_steps < halving.forward_steps


def test_default_budget_is_the_fewest_with_repetition_two():
    # DESIGN / the docstring: with no budget, the fewest checkpoints c for which no step
    # is advanced more than twice (r <= 2), so at most 2n forward steps.
    strategy = revseq.BinomialCheckpointing()
    for n in range(1, 301):
        c = next(c for c in range(1, n + 2) if oracles.repetition(n, c) <= 2)
        cost = strategy.cost(n)
        assert cost.peak_checkpoints <= c, (n, c, cost)
        assert cost.forward_steps == oracles.closed_form_advances(n, c) + 1, (n, c, cost)
        assert cost.forward_steps <= 2 * n, (n, cost)


def test_more_memory_never_costs_more_steps():
    for n in (1, 2, 17, 64, 199):
        steps = [revseq.BinomialCheckpointing(checkpoints=c).cost(n).forward_steps for c in range(1, n + 2)]
        assert steps == sorted(steps, reverse=True), n
        assert steps[0] == n * (n - 1) // 2 + 1  # c = 1: Recompute
        assert steps[-1] == n  # enough memory: StoreAll


def test_binomial_with_one_checkpoint_is_recompute():
    for n in (1, 2, 3, 10, 57):
        binomial, recompute = revseq.BinomialCheckpointing(checkpoints=1).cost(n), revseq.Recompute().cost(n)
        assert binomial.forward_steps == recompute.forward_steps == n * (n - 1) // 2 + 1, n
        assert binomial.peak_checkpoints == recompute.peak_checkpoints == min(1, n - 1), n


# -- recursive halving: never worse than the original gist (DESIGN, THEORY 2) -------

needs_refcounting = pytest.mark.skipif(
    platform.python_implementation() != "CPython", reason="counts live states by CPython's reference counting"
)


def test_gist_oracle_reproduces_design_numbers():
    # DESIGN: the gist makes n + R(n) forward steps and holds ceil(log2 n) + 1 states; n = 10^4: 74608 and 15.
    assert oracles.gist_backprop_cost(10_000) == (74_608, 15)
    assert oracles.halving_advances(10_000) == 64_608


@needs_refcounting
@pytest.mark.parametrize("ns", [range(1, 301), [1000, 10_000]], ids=["n<=300", "n=10^3,10^4"])
def test_halving_never_worse_than_the_gist(ns):
    for n in ns:
        gist_steps, gist_states = oracles.gist_backprop_cost(n)
        assert gist_steps == n + oracles.halving_advances(n), n
        assert gist_states == (math.ceil(math.log2(n)) + 1 if n > 1 else 1), n

        cost = revseq.RecursiveHalving().cost(n)
        assert cost.forward_steps <= gist_steps, (n, cost)
        assert cost.peak_checkpoints + 1 <= gist_states, (n, cost)  # + 1: the live state, counted by the gist
        # THEORY 2: the same bisection without the first sweep: R(n) advances, ceil(log2 n) checkpoints.
        assert cost.forward_steps == oracles.halving_advances(n) + 1, (n, cost)
        assert cost.peak_checkpoints == (math.ceil(math.log2(n)) if n > 1 else 0), (n, cost)


@needs_refcounting
def test_halving_reverse_holds_no_more_states_than_the_gist():
    # Both measured from outside, the same way: calls of one counted f, and live state objects.
    for n in [*range(1, 130), 257, 1000]:
        values, gist_calls, gist_peak = oracles.gist_reverse_cost(n)
        assert values == list(range(n - 1, -1, -1)), n

        meter = oracles.Meter()
        ours = oracles.drain(revseq.reverse(meter.step, meter.state(0), n, revseq.RecursiveHalving()))
        assert ours == values, n
        assert meter.calls <= gist_calls, n
        assert meter.peak <= gist_peak, n
        assert meter.live == 0, n  # nothing kept after the walk


# -- segment checkpointing (THEORY 3) -----------------------------------------------


@pytest.mark.parametrize("interval", [None, 1, 2, 3, 4, 7, 10, 28, 500])
def test_sqrt_matches_segment_formulas(interval):
    strategy = revseq.SqrtCheckpointing(interval=interval)
    for n in range(1, 301):
        k = oracles.ceil_sqrt(n) if interval is None else interval
        cost = strategy.cost(n)
        assert cost.forward_steps == oracles.segment_forward_steps(n, k), (n, k, cost)
        assert cost.forward_steps <= 2 * n, (n, k, cost)
        assert cost.peak_checkpoints == oracles.segment_peak(n, k), (n, k, cost)


@pytest.mark.parametrize(
    ("n", "k", "advances", "peak"),
    # THEORY Table Q1 (every segment recomputed): advances 2n - 1 - ceil(n/k) and peak slots.
    [(16, 3, 25, 6), (16, 4, 27, 6), (100, 8, 186, 18), (100, 10, 189, 18), (100, 25, 195, 27),
     (1000, 28, 1963, 61), (1000, 31, 1966, 61), (1000, 32, 1967, 61), (10_000, 100, 19_899, 198)],
)  # fmt: skip
def test_sqrt_matches_table_q1(n, k, advances, peak):
    last = n - (-(-n // k) - 1) * k
    cost = revseq.SqrtCheckpointing(interval=k).cost(n)
    # revseq keeps the last segment on the first sweep: last - 1 fewer advances, plus the call producing x_n.
    assert cost.forward_steps == advances - (last - 1) + 1
    assert cost.peak_checkpoints <= peak
    if last >= 2:
        assert cost.peak_checkpoints == peak
