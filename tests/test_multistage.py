"""MultistageCheckpointing: the least step + disk time, with checkpoints in memory and on disk.

The schedule's cost, simulated by revseq and weighted by ``DiskCosts.time``,
is compared with oracles that do not import revseq (tests/multistage_oracles.py):
an exhaustive search over every schedule of revseq's actions for tiny n, a
more general dynamic programme over nested schedules for longer ones, and
THEORY 5.1's recurrences of Aupy et al. (2016) with unlimited disk. Then the
engine runs the schedules, on an in-memory and a real disk store, and must
give StoreAll's gradient with the predicted counts.
"""

from __future__ import annotations

import doctest
import math
from pathlib import Path

import multistage_oracles as oracle
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import revseq
from revseq.strategies.multistage import MAX_PLAN_WORK, DiskCosts, MultistageCheckpointing
from revseq.testing import check_strategy

# THEORY 5.1's (write, read) pairs, the step costing 1.
PAIRS = ((2.0, 1.0), (0.5, 0.5), (3.0, 3.0), (1.0, 4.0), (6.0, 2.0))
DISKS = (None, 1, 2, 3)


def weighted(strategy: MultistageCheckpointing, n: int) -> float:
    """The simulated schedule's time, less the call producing x_n (the oracles leave it out)."""
    return strategy.costs.time(strategy.cost(n)) - strategy.costs.step


def same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9)


# -- optimal: against the exhaustive search, every schedule of revseq's actions ---------------------


@pytest.mark.parametrize("ram", [0, 1, 2, 3])
@pytest.mark.parametrize(("write", "read"), PAIRS)
def test_equals_exhaustive_search(write: float, read: float, ram: int) -> None:
    for disk in DISKS:
        strategy = MultistageCheckpointing(ram=ram, disk=disk, costs=DiskCosts(1.0, write, read))
        for n in range(1, 7 if disk is None and write < 1 else 8):
            best = oracle.exhaustive_time(n, ram, disk, 1.0, write, read)
            got = weighted(strategy, n)
            assert same(got, best), f"ram={ram}, disk={disk}, write={write}, read={read}, n={n}: {got} vs {best}"
            assert same(strategy.predicted_time(n) - 1.0, best)


@pytest.mark.parametrize(
    ("n", "ram", "disk", "write", "read"),
    [(9, 1, None, 6.0, 2.0), (10, 1, None, 6.0, 2.0), (9, 2, 2, 0.5, 0.5), (9, 3, 1, 1.0, 4.0), (8, 0, 3, 2.0, 1.0)],
)
def test_equals_exhaustive_search_longer(n: int, ram: int, disk: int | None, write: float, read: float) -> None:
    strategy = MultistageCheckpointing(ram=ram, disk=disk, costs=DiskCosts(1.0, write, read))
    assert same(weighted(strategy, n), oracle.exhaustive_time(n, ram, disk, 1.0, write, read))


def test_theory_values_and_the_read_once_pitfall() -> None:
    """THEORY 5.1: ram=1, write=6, read=2: 36 and 41 at n=9, 10 (read-once: 37, 43), adjoints at 1 each.

    THEORY's makespan is ``uf T + ub (l + 1)`` with ``l = n - 1``: ours plus ``n``.
    """
    strategy = MultistageCheckpointing(ram=1, costs=DiskCosts(step=1.0, write=6.0, read=2.0))
    read_once = oracle.aupy_times(10, 1, 1.0, 6.0, 2.0, read_once=True)
    for n, theirs, once in ((9, 36, 37), (10, 41, 43)):
        assert weighted(strategy, n) + n == theirs
        assert oracle.exhaustive_time(n, 1, None, 1.0, 6.0, 2.0) + n == theirs
        assert read_once[n] + n == once
    assert strategy.cost(9).disk_reads > strategy.cost(9).disk_writes  # some disk checkpoint is read twice


def test_a_disk_budget_needs_more_than_first_sweep_writes() -> None:
    """With a disk budget, writing to disk on the first sweep only (THEORY's Dinf, one slot less per level) loses."""
    costs = DiskCosts(1.0, 0.5, 0.5)
    first_sweep = oracle.first_sweep_time(6, 0, 2, 1.0, 0.5, 0.5)
    best = oracle.exhaustive_time(6, 0, 2, 1.0, 0.5, 0.5)
    assert (best, first_sweep) == (12.0, 12.5)
    assert weighted(MultistageCheckpointing(ram=0, disk=2, costs=costs), 6) == best


# -- optimal for longer n: against the general nested programme and Aupy et al.'s ------------------


@pytest.mark.parametrize(
    ("ram", "disk", "write", "read"),
    [
        (0, 2, 0.5, 0.5),
        (1, 1, 2.0, 1.0),
        (1, 3, 0.1, 0.1),
        (2, None, 0.5, 0.5),
        (2, 2, 1.0, 4.0),
        (3, 1, 0.2, 3.0),
        (3, 4, 3.0, 0.2),
        (2, 5, 0.0, 0.0),
    ],
)
def test_equals_general_nested_programme(ram: int, disk: int | None, write: float, read: float) -> None:
    nmax = 30
    want = oracle.nested_times(nmax, ram, disk, 1.0, write, read)
    strategy = MultistageCheckpointing(ram=ram, disk=disk, costs=DiskCosts(1.0, write, read))
    for n in range(1, nmax + 1):
        assert same(weighted(strategy, n), want[n]), f"n={n}"


@pytest.mark.parametrize(
    ("ram", "step", "write", "read"), [(1, 1.0, 6.0, 2.0), (2, 1.0, 2.0, 1.0), (4, 2.5, 1.0, 0.5), (3, 0.3, 3.0, 3.0)]
)
def test_equals_aupy_with_unlimited_disk(ram: int, step: float, write: float, read: float) -> None:
    nmax = 250
    want = oracle.aupy_times(nmax, ram, step, write, read)
    strategy = MultistageCheckpointing(ram=ram, costs=DiskCosts(step, write, read))
    for n in (*range(1, 60), 97, 128, 200, nmax):
        assert same(strategy.predicted_time(n) - step, want[n]), f"n={n}"
        if n % 7 == 0 or n > 60:
            assert same(weighted(strategy, n), want[n]), f"n={n}"


def test_budget_that_binds_and_one_that_does_not() -> None:
    costs = DiskCosts(1.0, 0.5, 0.5)
    unlimited = MultistageCheckpointing(ram=2, costs=costs)
    peak = unlimited.cost(120).peak_disk
    assert peak == unlimited.bounds(120).disk_checkpoints > 3
    roomy = MultistageCheckpointing(ram=2, disk=peak, costs=costs)
    assert roomy.cost(120) == unlimited.cost(120)
    tight = MultistageCheckpointing(ram=2, disk=3, costs=costs)
    assert tight.cost(120).peak_disk == 3
    assert tight.predicted_time(120) > unlimited.predicted_time(120)


# -- limits: what the cost model says at its ends ----------------------------------------------------


@pytest.mark.parametrize(("n", "ram"), [(1, 1), (2, 1), (10, 1), (100, 3), (1000, 5)])
def test_expensive_disk_is_binomial(n: int, ram: int) -> None:
    cost = MultistageCheckpointing(ram=ram, costs=DiskCosts(1.0, 1e6, 1e6)).cost(n)
    assert cost.forward_steps == revseq.optimal_forward_steps(n, ram)
    assert cost.disk_writes == cost.disk_reads == cost.peak_disk == 0


@pytest.mark.parametrize("ram", [1, 2, 3])
def test_disk_zero_is_binomial(ram: int) -> None:
    for n in (1, 2, 7, 50, 333):
        cost = MultistageCheckpointing(ram=ram, disk=0, costs=DiskCosts(1.0, 0.0, 0.0)).cost(n)
        assert cost == revseq.BinomialCheckpointing(ram).cost(n)


@pytest.mark.parametrize("ram", [0, 1, 3])
def test_free_disk_recomputes_nothing(ram: int) -> None:
    cost = MultistageCheckpointing(ram=ram, costs=DiskCosts(1.0, 0.0, 0.0)).cost(300)
    assert cost.forward_steps == 300


def test_no_memory_keeps_everything_on_disk() -> None:
    strategy = MultistageCheckpointing(ram=0, disk=1, costs=DiskCosts(1.0, 2.0, 1.0))
    cost = strategy.cost(20)
    assert cost.peak_checkpoints == 0
    assert cost.peak_disk == 1
    assert cost.forward_steps == 20 * 19 // 2 + 1  # x_0 on disk, one sweep per step: Recompute's
    assert cost.disk_writes == 1
    assert cost.disk_reads == 19


@given(
    n=st.integers(1, 90),
    ram=st.integers(0, 4),
    disk=st.integers(0, 6),
    write=st.sampled_from([0.0, 0.5, 1.0, 2.0, 6.0]),
    read=st.sampled_from([0.0, 0.5, 1.0, 4.0]),
)
def test_more_room_never_costs_more(n: int, ram: int, disk: int, write: float, read: float) -> None:
    costs = DiskCosts(1.0, write, read)

    def time(ram: int, disk: int | None) -> float:
        return MultistageCheckpointing(ram=ram, disk=disk, costs=costs).predicted_time(n)

    here = time(ram, disk) if ram or disk else math.inf
    assert time(ram + 1, disk) <= here + 1e-9
    assert time(ram, disk + 1) <= here + 1e-9
    assert time(ram, None) <= time(ram, disk + 1) + 1e-9
    assert time(ram, None) >= n  # no schedule makes fewer than n calls
    if ram:
        assert here <= revseq.optimal_forward_steps(n, ram) + 1e-9  # never worse than memory alone


def test_plans_are_cached_and_agree_across_lengths() -> None:
    strategy = MultistageCheckpointing(ram=2, disk=3, costs=DiskCosts(1.0, 0.7, 0.3))
    before = [strategy.predicted_time(n) for n in range(1, 40)]
    strategy.cost(700)  # replaces the cached tables with longer ones
    assert [strategy.predicted_time(n) for n in range(1, 40)] == before


# -- running it: gradients and counts through the engine ---------------------------------------------


@pytest.mark.parametrize(
    "strategy",
    [
        MultistageCheckpointing(ram=3, costs=DiskCosts(1.0, 2.0, 1.0)),
        MultistageCheckpointing(ram=2, disk=4, costs=DiskCosts(1.0, 0.5, 0.5)),
        MultistageCheckpointing(ram=0, disk=3, costs=DiskCosts(1.0, 1.0, 1.0)),
    ],
    ids=repr,
)
@pytest.mark.parametrize("level", ["memory", "files"])
def test_backprop_gradient_and_counts(strategy: MultistageCheckpointing, level: str, tmp_path: object) -> None:
    n = 150
    rec = revseq.Recurrence(np.sin, df=np.cos)
    x0 = np.random.default_rng(1).uniform(0.5, 1.5, 1000)
    disk = revseq.MemoryStore() if level == "memory" else revseq.DiskStore(directory=tmp_path)
    got = revseq.backprop(rec, x0, n, strategy, disk=disk)
    want = revseq.backprop(rec, x0, n, revseq.StoreAll())
    np.testing.assert_allclose(got.state, want.state, rtol=1e-13)
    np.testing.assert_allclose(got.gradient, want.gradient, rtol=1e-11)
    cost = strategy.cost(n)
    stats = got.stats
    assert stats.as_cost() == cost
    assert (stats.disk_writes, stats.disk_reads, stats.peak_disk) == (cost.disk_writes, cost.disk_reads, cost.peak_disk)
    assert cost.disk_writes > 0
    assert strategy.costs.time(stats.as_cost()) == pytest.approx(strategy.predicted_time(n), rel=1e-12)
    if level == "files":
        assert stats.disk_bytes_written == cost.disk_writes * x0.nbytes


def test_contract_unlimited_disk() -> None:
    check_strategy(MultistageCheckpointing(ram=2, disk=None, costs=DiskCosts(1.0, 2.0, 1.0)))


def test_contract_disk_budget_without_memory() -> None:
    check_strategy(MultistageCheckpointing(ram=0, disk=2, costs=DiskCosts(1.0, 0.5, 0.5)), ns=range(1, 24))


# -- configuration ---------------------------------------------------------------------------------


def test_defaults_and_conversions() -> None:
    assert DiskCosts() == DiskCosts(step=1.0, write=2.0, read=1.0)
    costs = DiskCosts(step=2, write=np.float32(0.5), read=np.int64(3))
    assert (costs.step, costs.write, costs.read) == (2.0, 0.5, 3.0)
    assert all(type(v) is float for v in (costs.step, costs.write, costs.read))
    strategy = MultistageCheckpointing(np.int64(4))
    assert (strategy.ram, strategy.disk, strategy.costs) == (4, None, DiskCosts())
    assert hash(strategy) == hash(MultistageCheckpointing(4))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step": 0.0}, "step must be a finite number > 0, got 0.0"),
        ({"step": -1}, "step must be a finite number > 0, got -1.0"),
        ({"write": -0.5}, "write must be a finite number >= 0, got -0.5"),
        ({"read": math.nan}, "read must be a finite number >= 0, got nan"),
        ({"write": math.inf}, "write must be a finite number >= 0, got inf"),
        ({"read": True}, "read must be a finite number >= 0, got True"),
        ({"step": "1"}, "step must be a finite number > 0, got '1'"),
    ],
)
def test_bad_costs(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(revseq.ParameterError, match=message.replace("(", r"\(")):
        DiskCosts(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "ram must be given"),
        ({"ram": -1}, "ram must be an int >= 0, got -1"),
        ({"ram": 2.0}, "ram must be an int >= 0, got 2.0"),
        ({"ram": True}, "ram must be an int >= 0, got True"),
        ({"ram": 2, "disk": -1}, "disk must be an int >= 0, got -1"),
        ({"ram": 2, "disk": "lots"}, "disk must be an int >= 0, got 'lots'"),
        ({"ram": 0, "disk": 0}, "ram=0 and disk=0 leave nowhere to keep x_0"),
        ({"ram": 2, "costs": (1.0, 2.0, 1.0)}, "costs must be a DiskCosts, got"),
        ({"ram": 2, "ram_bytes": 10**9}, "give the memory budget once, as ram or as ram_bytes"),
        ({"ram_bytes": 0}, "ram_bytes must be an int >= 1, got 0"),
    ],
)
def test_bad_configuration(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(revseq.ParameterError, match=message):
        MultistageCheckpointing(**kwargs)  # type: ignore[arg-type]


def test_too_long_to_plan_is_refused() -> None:
    """Only the exact programme is refused past MAX_PLAN_WORK (``exact=True``); the default plans long n otherwise."""
    n = math.isqrt(MAX_PLAN_WORK) + 1
    with pytest.raises(revseq.ParameterError, match=f"n={n} is too long to plan"):
        MultistageCheckpointing(ram=4, exact=True).cost(n)
    with pytest.raises(revseq.ParameterError, match="with a binding disk budget"):
        MultistageCheckpointing(ram=4, disk=100, costs=DiskCosts(1.0, 0.01, 0.01), exact=True).cost(
            math.isqrt(MAX_PLAN_WORK // 101) + 2
        )


def test_memory_budget_in_bytes() -> None:
    x0 = np.linspace(0.0, 1.0, 1000)  # 8000 bytes a state
    strategy = MultistageCheckpointing(ram_bytes=3 * 8000 + 100, disk=2)
    assert strategy.sized(8000) == MultistageCheckpointing(ram=3, disk=2)
    assert strategy.sized(20000) == MultistageCheckpointing(ram=1, disk=2)
    assert strategy.sized(30000) == MultistageCheckpointing(ram=0, disk=2)  # all on disk
    out = revseq.backprop(revseq.Recurrence(np.sin, df=np.cos), x0, 60, strategy, disk=revseq.MemoryStore())
    assert out.stats.as_cost() == MultistageCheckpointing(ram=3, disk=2).cost(60)
    assert out.stats.peak_bytes <= 3 * 8000
    with pytest.raises(revseq.ParameterError, match="budget in bytes"):
        strategy.cost(10)
    with pytest.raises(revseq.ParameterError, match="holds no state of 30000 bytes and disk=0"):
        MultistageCheckpointing(ram_bytes=24100, disk=0).sized(30000)
    with pytest.raises(revseq.ParameterError, match="ram_bytes needs states whose size is known"):
        strategy.sized(0)


def test_docs_examples() -> None:
    result = doctest.testfile(
        str(Path(__file__).resolve().parent.parent / "docs" / "multistage.md"),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
    )
    assert result.attempted >= 6
    assert result.failed == 0


def test_docs_comparison_table() -> None:
    """docs/multistage.md's table for n = 1000, ram = 4 and the default costs says what cost() says."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "multistage.md").read_text()
    costs = DiskCosts()
    rows = {
        "`BinomialCheckpointing(4)` (RAM only)": revseq.BinomialCheckpointing(4),
        "`MultistageCheckpointing(4, disk=1)`": MultistageCheckpointing(4, disk=1, costs=costs),
        "`MultistageCheckpointing(4, disk=3)`": MultistageCheckpointing(4, disk=3, costs=costs),
        "`MultistageCheckpointing(4, disk=10)`": MultistageCheckpointing(4, disk=10, costs=costs),
        "`MultistageCheckpointing(4, disk=50)`": MultistageCheckpointing(4, disk=50, costs=costs),
        "`MultistageCheckpointing(4)` (unlimited disk)": MultistageCheckpointing(4, costs=costs),
        "`BinomialCheckpointing(16)` (RAM only)": revseq.BinomialCheckpointing(16),
        "`BinomialCheckpointing(40)` (RAM only)": revseq.BinomialCheckpointing(40),
    }
    for name, strategy in rows.items():
        c = strategy.cost(1000)
        numbers = (c.forward_steps, c.disk_writes, c.disk_reads, c.peak_disk, int(costs.time(c)))
        row = f"| {name} | " + " | ".join(f"{v:,}".replace(",", " ") for v in numbers) + " |"
        assert row in text, f"docs/multistage.md should have the row {row}"
    for disk, want in {3: 5177, 10: 4095}.items():  # the prose's first-sweep-only numbers
        assert oracle.first_sweep_time(1000, 4, disk, 1.0, 2.0, 1.0) + 1 == want
        assert f"{want:,}".replace(",", " ") in text


# -- long n: the periodic plan (unlimited disk) and the nested ones (a binding budget) ----------------


@pytest.fixture
def small_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the long-n plans take over at a few hundred steps, where the oracles are cheap."""
    from collections import OrderedDict

    import revseq.strategies.multistage as ms

    monkeypatch.setattr(ms, "EXACT_WORK", 200**2)
    monkeypatch.setattr(ms, "PERIODIC_TABLE", 128)
    monkeypatch.setattr(ms, "BLOCKS_TABLE", 64)
    monkeypatch.setattr(ms, "BLOCKS_ROWS", 3)
    monkeypatch.setattr(ms, "_CACHE", OrderedDict())


@pytest.mark.parametrize(("ram", "write", "read"), [(4, 2.0, 1.0), (1, 6.0, 2.0), (2, 0.5, 0.5), (3, 10.0, 1.0)])
def test_periodic_plan_is_the_optimum_and_costs_what_it_simulates(
    small_tables: None, ram: int, write: float, read: float
) -> None:
    nmax = 700
    want = oracle.aupy_times(nmax, ram, 1.0, write, read)
    strategy = MultistageCheckpointing(ram=ram, costs=DiskCosts(1.0, write, read))
    for n in (201, 333, 512, nmax):
        assert same(strategy.predicted_time(n) - 1.0, want[n]), f"n={n}"
    for n in (257, nmax):
        assert strategy.cost(n) == strategy.schedule(n).cost()  # closed form == simulation
        assert (
            revseq.simulate(strategy.schedule(n), n, checkpoints=ram).peak_disk == strategy.bounds(n).disk_checkpoints
        )


@pytest.mark.parametrize(
    ("ram", "disk", "write", "read"), [(4, 1, 2.0, 1.0), (1, 3, 6.0, 2.0), (2, 4, 0.5, 0.5), (4, 10, 20.0, 10.0)]
)
def test_budgeted_long_plan_within_its_stated_factor(
    small_tables: None, ram: int, disk: int, write: float, read: float
) -> None:
    """Past the exact programme a binding budget is planned heuristically: within 1.1x of the optimum."""
    nmax = 450
    want = oracle.budgeted_times(nmax, ram, disk, 1.0, write, read)
    strategy = MultistageCheckpointing(ram=ram, disk=disk, costs=DiskCosts(1.0, write, read))
    for n in (250, nmax):
        got = strategy.predicted_time(n) - 1.0
        assert want[n] - 1e-9 <= got <= 1.1 * want[n], f"n={n}: {got} vs the optimum {want[n]}"
        cost = revseq.simulate(strategy.schedule(n), n, checkpoints=ram, disk_checkpoints=disk)
        assert cost == strategy.cost(n)
        assert same(strategy.costs.time(cost) - 1.0, got)


def test_long_runs_are_planned_quickly_and_within_budget() -> None:
    """THEORY 6.1's exact optimum at n = 10**5 (4, 2, 1); a tight budget at 10**5 used to take 18 s or be refused."""
    assert MultistageCheckpointing(ram=4).predicted_time(10**5) == 239_989.0
    tight = MultistageCheckpointing(ram=1, disk=3).cost(10**5)
    assert tight.peak_checkpoints <= 1
    assert tight.peak_disk <= 3
    assert tight.forward_steps >= oracle.closed_form_advances(10**5, 4) + 1  # no schedule with 4 slots does better
    long = MultistageCheckpointing(ram=4, disk=50).cost(10**6)
    assert long.peak_checkpoints <= 4
    assert long.peak_disk <= 50


def test_exact_must_be_a_bool() -> None:
    with pytest.raises(revseq.ParameterError, match="exact must be True or False, got 1"):
        MultistageCheckpointing(ram=2, exact=1)  # type: ignore[arg-type]
    assert MultistageCheckpointing(ram=2, exact=True).cost(300) == MultistageCheckpointing(ram=2).cost(300)
