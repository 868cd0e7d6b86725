"""K storage levels: MultistageCheckpointing(levels=[...]), Store(t, level=k), and the engine's stores per level.

The plan's simulated time is compared with oracles that do not import revseq
(tests/multistage_oracles.py): an exhaustive search over every schedule of
revseq's actions with three and four levels for small n, and, where a level
is unused, the two-level programme written again with plain lists. The
engine then runs the schedules against memory and disk stores, one per
level, and must give StoreAll's gradient with the counts ``cost(n)``
predicts, calls of f counted from outside.
"""

from __future__ import annotations

import math
from pathlib import Path

import multistage_oracles as oracle
import numpy as np
import pytest

import revseq
from revseq import Level, LevelCost
from revseq.cli import main
from revseq.errors import ParameterError, ScheduleError
from revseq.schedule import Advance, Free, Restore, Reverse, Store, simulate
from revseq.strategies import _multilevel
from revseq.strategies.multistage import DiskCosts, MultistageCheckpointing


def three(caps: tuple[int | None, int | None, int | None], w1: float, r1: float, w2: float, r2: float):
    return MultistageCheckpointing(levels=[Level(caps[0]), Level(caps[1], w1, r1), Level(caps[2], w2, r2)])


def weighted(strategy: MultistageCheckpointing, n: int) -> float:
    """The simulated schedule's time, less the call producing x_n (the oracles leave it out)."""
    return strategy.time_of(strategy.cost(n)) - 1.0


def same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9)


# -- actions and counts ------------------------------------------------------------------------------


def test_store_level_spellings() -> None:
    assert Store(3, disk=True) == Store(3, level=1) == Store(3, True)
    assert hash(Store(3, disk=True)) == hash(Store(3, level=1))
    assert Store(3, disk=False) == Store(3) == Store(3, level=0)
    assert Store(3, level=2) != Store(3, level=1) != Restore(3)
    assert (Store(3).disk, Store(3, disk=True).disk, Store(3, level=2).disk) == (False, True, True)
    assert (Store(3, disk=True).level, type(Store(3, True).level)) == (1, int)
    assert [repr(Store(3)), repr(Store(3, level=1)), repr(Store(3, level=2))] == [
        "Store(step=3)",
        "Store(step=3, disk=True)",
        "Store(step=3, level=2)",
    ]
    with pytest.raises(ParameterError, match="give the level once"):
        Store(3, level=2, disk=True)


def test_simulate_counts_each_level() -> None:
    # x_0 at level 2 and x_1 at level 3, x_2 on disk; every read comes from the lowest level holding the state.
    actions = [
        Store(0, level=2),
        Advance(0, 1),
        Store(1, level=3),
        Store(1),  # x_1 in memory too: its reads are memory's
        Advance(1, 2),
        Store(2, disk=True),
        Advance(2, 3),
        Reverse(3, 4),  # computes x_4, reverses step 3 from the live x_3
        Reverse(2, 3),  # x_2 from disk
        Restore(1),  # memory
        Free(1, 2),  # both copies of x_1
        Restore(0),  # level 2
        Store(0, level=3),
        Advance(0, 1),
        Reverse(0, 2),  # x_1 live, x_0 from level 2 (the lowest holding it)
    ]
    cost = simulate(actions, 4)
    assert (cost.forward_steps, cost.peak_checkpoints, cost.writes, cost.reads) == (5, 1, 1, 1)
    assert (cost.peak_disk, cost.disk_writes, cost.disk_reads) == (1, 1, 1)
    assert cost.deep_levels == (LevelCost(1, 1, 2), LevelCost(1, 2, 0))
    assert cost.level(3) == LevelCost(1, 2, 0)
    assert cost.level(7) == LevelCost()
    assert cost.levels == 4
    assert "deep_levels" not in repr(simulate([Store(0, disk=True), Advance(0, 1), Reverse(0, 2)], 2))
    with pytest.raises(ScheduleError, match="over the budget of 1"):
        simulate([Store(0, level=2), Advance(0, 1), Store(1, level=2), Reverse(0, 3)], 3, deep_checkpoints=(1,))
    with pytest.raises(ScheduleError, match="level must be an int from 0"):
        simulate([Store(0, level=16), Reverse(0, 1)], 1)
    with pytest.raises(ScheduleError, match="level must be an int"):
        simulate([tuple.__new__(Store, (0, "deep")), Reverse(0, 1)], 1)
    assert simulate([tuple.__new__(Store, (np.int64(0), np.int32(2))), Advance(0, 1), Reverse(0, 2)], 2).level(2) == (
        LevelCost(1, 1, 1)
    )
    with pytest.raises(ParameterError, match="deep_checkpoints"):
        revseq.Bounds(deep_checkpoints=3)


# -- optimal: against the exhaustive search over every schedule ---------------------------------------

CASES = [
    ((0, 1, None), 0.5, 0.25, 2.0, 1.0),
    ((1, 1, None), 1.0, 1.0, 3.0, 3.0),
    ((1, 1, 1), 0.5, 0.5, 6.0, 2.0),
    ((2, 1, 2), 0.25, 1.0, 1.0, 4.0),
    ((0, 2, None), 2.0, 1.0, 4.0, 4.0),
    ((1, 0, None), 0.5, 0.25, 2.0, 1.0),
]


@pytest.mark.parametrize(("caps", "w1", "r1", "w2", "r2"), CASES)
def test_three_levels_equal_exhaustive_search(caps, w1: float, r1: float, w2: float, r2: float) -> None:
    strategy = three(caps, w1, r1, w2, r2)
    for n in range(1, 6):
        best = oracle.exhaustive_levels_time(n, caps, (0.0, w1, w2), (0.0, r1, r2))
        assert same(weighted(strategy, n), best), f"n={n}: {weighted(strategy, n)} vs {best}"
        assert same(strategy.predicted_time(n) - 1.0, best)


def test_four_levels_equal_exhaustive_search() -> None:
    caps, writes, reads = (1, 1, 1, None), (0.0, 0.25, 1.0, 4.0), (0.0, 0.25, 1.0, 2.0)
    strategy = MultistageCheckpointing(levels=[Level(caps[k], writes[k], reads[k]) for k in range(4)])
    for n in range(1, 6):
        assert same(weighted(strategy, n), oracle.exhaustive_levels_time(n, caps, writes, reads)), f"n={n}"


def test_the_third_level_pays_where_the_search_says_it_does() -> None:
    # Not a vacuous check: with ram=0 the exhaustive optimum over three levels beats both two-level optima.
    n, w1, r1, w2, r2 = 6, 0.5, 0.25, 2.0, 1.0
    best = oracle.exhaustive_levels_time(n, (0, 1, None), (0.0, w1, w2), (0.0, r1, r2))
    assert best < min(oracle.exhaustive_time(n, 0, 1, 1.0, w1, r1), oracle.exhaustive_time(n, 0, None, 1.0, w2, r2))
    strategy = three((0, 1, None), w1, r1, w2, r2)
    assert same(weighted(strategy, n), best)
    cost = strategy.cost(n)
    assert cost.peak_disk == 1
    assert cost.level(2).writes >= 1


@pytest.mark.parametrize(("ram", "disk", "write", "read"), [(1, 2, 0.5, 0.5), (2, None, 2.0, 1.0), (0, 3, 1.0, 4.0)])
def test_an_unused_level_gives_the_two_level_programme(ram: int, disk: int | None, write: float, read: float) -> None:
    """A level with no capacity, or one too dear to use, leaves THEORY 5.1's two-level programme (plain lists)."""
    want = oracle.budgeted_times(40, ram, disk, 1.0, write, read)
    empty = three((ram, 0, disk), 0.1, 0.1, write, read)
    dear = three((ram, disk, None), write, read, 1e9, 1e9)
    for n in range(1, 41):
        assert same(empty.predicted_time(n) - 1.0, want[n]), f"n={n}"
        assert same(dear.predicted_time(n) - 1.0, want[n]), f"n={n}"
    assert same(weighted(empty, 40), want[40])
    assert same(weighted(dear, 40), want[40])


def test_two_levels_given_as_levels_are_the_two_level_strategy() -> None:
    for ram, disk, write, read in ((4, None, 2.0, 1.0), (2, 3, 0.5, 0.25), (0, 2, 1.0, 1.0)):
        old = MultistageCheckpointing(ram=ram, disk=disk, costs=DiskCosts(1.0, write, read))
        new = MultistageCheckpointing(levels=[Level(ram), Level(disk, write, read)])
        assert (new.ram, new.disk, new.costs) == (ram, disk, DiskCosts(1.0, write, read))
        assert list(new.actions(300)) == list(old.actions(300))
        assert new.cost(300) == old.cost(300)
        assert new.predicted_time(300) == old.predicted_time(300)
        assert new.bounds(300) == old.bounds(300)


# -- long runs: the periodic and nested plans --------------------------------------------------------


def test_long_run_plans_cost_what_they_say_and_stay_within_capacity() -> None:
    def weigh(cost, specs) -> float:
        return (
            cost.forward_steps
            - 1
            + sum(s.write * cost.level(k).writes + s.read * cost.level(k).reads for k, s in enumerate(specs))
        )

    spec = _multilevel.LevelSpec
    bounded = (spec(2, 0.0, 0.0), spec(3, 0.5, 0.25), spec(5, 4.0, 2.0))
    table = _multilevel.LevelsTable(bounded, 30, _multilevel.MAX_LEVELS_WORK)
    exact = _multilevel.LevelsTable(bounded, 150, _multilevel.MAX_LEVELS_WORK)
    for block, slots in ((4, 1), (9, 2), (30, 5)):
        plan = _multilevel.NestedLevels(table, block, slots)
        for n in (1, block, 150):
            cost = simulate(plan.actions(n), n, checkpoints=2, disk_checkpoints=3, deep_checkpoints=(5,))
            assert same(weigh(cost, bounded), plan.time(n))
            assert plan.time(n) >= exact.time(n) - 1e-9
    unlimited = (spec(2, 0.0, 0.0), spec(3, 0.5, 0.25), spec(None, 4.0, 2.0))
    periodic = _multilevel.PeriodicLevels(_multilevel.LevelsTable(unlimited, 30, _multilevel.MAX_LEVELS_WORK))
    exact = _multilevel.LevelsTable(unlimited, 150, _multilevel.MAX_LEVELS_WORK)
    for n in (7, 31, 150):
        cost = simulate(periodic.actions(n), n, checkpoints=2, disk_checkpoints=3)
        assert same(weigh(cost, unlimited), periodic.time(n))
    assert periodic.time(150) <= 1.01 * exact.time(150)


def test_the_strategy_switches_to_long_run_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_multilevel, "EXACT_LEVELS_WORK", 20_000)  # a table of about 40 steps
    for caps in ((2, 3, 5), (2, 3, None)):
        strategy = three(caps, 0.5, 0.25, 4.0, 2.0)
        exact = MultistageCheckpointing(levels=strategy.levels, exact=True)
        cost = strategy.cost(200)
        assert not strategy.is_exact(200)
        assert exact.is_exact(200)
        assert cost.peak_checkpoints <= 2
        assert cost.peak_disk <= 3
        assert cost.level(2).peak <= (caps[2] or 200)
        assert same(strategy.time_of(cost), strategy.predicted_time(200))
        assert exact.predicted_time(200) <= strategy.predicted_time(200) <= 1.1 * exact.predicted_time(200)


# -- the engine, one store per level ------------------------------------------------------------------


class Counted:
    """f and its derivative, counting the calls of f from outside the engine."""

    def __init__(self) -> None:
        self.calls = 0

    def f(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.sin(x) * 1.1 + 0.1

    @staticmethod
    def df(x: np.ndarray) -> np.ndarray:
        return 1.1 * np.cos(x)


def test_engine_runs_three_levels_with_store_all_gradient(tmp_path: Path) -> None:
    strategy = three((2, 3, None), 0.5, 0.25, 4.0, 2.0)
    n, x0 = 60, np.linspace(0.0, 1.0, 7)
    want = revseq.backprop(revseq.Recurrence(Counted().f, Counted.df), x0, n, revseq.StoreAll()).gradient
    cost = strategy.cost(n)
    assert cost.level(2).writes > 0  # the schedule does use level 2
    nvme, nfs = tmp_path / "nvme", tmp_path / "nfs"
    nvme.mkdir(), nfs.mkdir()
    for disk in (None, [revseq.DiskStore(nvme), revseq.DiskStore(nfs)], [revseq.MemoryStore(copy=True)]):
        for checked in (False, True):
            counted = Counted()
            out = revseq.backprop(
                revseq.Recurrence(counted.f, Counted.df), x0, n, strategy, disk=disk, check_schedule=checked
            )
            np.testing.assert_allclose(out.gradient, want, rtol=1e-12)
            assert out.stats.as_cost() == cost
            assert counted.calls == cost.forward_steps
            assert out.stats.deep_levels == cost.deep_levels
    assert not any(nvme.iterdir())
    assert not any(nfs.iterdir())


def test_a_failing_step_leaves_no_checkpoint_at_any_level(tmp_path: Path) -> None:
    strategy = three((1, 2, None), 0.5, 0.25, 2.0, 1.0)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    stores = [revseq.DiskStore(tmp_path / "a"), revseq.DiskStore(tmp_path / "b")]
    calls = 0

    def f(x: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 55:  # in the reversal, with checkpoints at every level
            raise RuntimeError("boom")
        return x * 0.9

    assert strategy.cost(40).forward_steps > 55
    assert strategy.cost(40).level(2).writes
    with pytest.raises(RuntimeError, match="boom"):
        revseq.backprop(revseq.Recurrence(f, lambda x: 0.9 * np.ones_like(x)), np.ones(3), 40, strategy, disk=stores)
    assert all(len(s) == 0 for s in stores)
    assert not any((tmp_path / "a").iterdir())
    assert not any((tmp_path / "b").iterdir())
    halve = revseq.Recurrence(lambda x: x * 0.9, lambda x: 0.9 * np.ones_like(x))
    revseq.backprop(halve, np.ones(3), 40, strategy, disk=stores)  # the stores are free again


def test_engine_refuses_bad_level_stores() -> None:
    rec, x0, strategy = revseq.Recurrence(np.sin, np.cos), np.ones(2), three((1, 1, None), 0.5, 0.5, 2.0, 1.0)
    store = revseq.MemoryStore()
    with pytest.raises(ParameterError, match="different stores"):
        revseq.backprop(rec, x0, 5, strategy, disk=[store, store])
    with pytest.raises(ParameterError, match="different stores"):
        revseq.backprop(rec, x0, 5, strategy, store=store, disk=[revseq.MemoryStore(), store])
    with pytest.raises(ParameterError, match=r"disk\[1\] must be a store"):
        revseq.backprop(rec, x0, 5, strategy, disk=[revseq.MemoryStore(), None])
    with pytest.raises(ParameterError, match="list of 1 to 15 stores"):
        revseq.backprop(rec, x0, 5, strategy, disk=[])


# -- configuration ----------------------------------------------------------------------------------


def test_bad_levels_are_refused_with_the_parameter_named() -> None:
    cases = [
        ({"levels": [Level(2)]}, "levels must be a list of 2 to 15"),
        ({"levels": [Level(2), (3, 1.0, 1.0)]}, r"levels\[1\] must be a revseq.Level"),
        ({"levels": [Level(None), Level(3, 1.0, 1.0)]}, r"levels\[0\] is memory and needs a capacity"),
        ({"levels": [Level(2, write=1.0), Level(3, 1.0, 1.0)]}, "free to write and read"),
        ({"levels": [Level(0), Level(0, 1.0, 1.0), Level(0, 1.0, 1.0)]}, "nowhere to keep x_0"),
        ({"levels": [Level(2), Level(3)], "ram": 2}, "either levels= or ram"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ParameterError, match=message):
            MultistageCheckpointing(**kwargs)
    with pytest.raises(ParameterError, match="capacity once"):
        Level(3, capacity_bytes=100)
    with pytest.raises(ParameterError, match="write must be a finite number >= 0"):
        Level(3, write=-1.0)
    with pytest.raises(ParameterError, match="capacity must be an int >= 0"):
        Level(True)


def test_capacities_in_bytes_are_sized_from_the_state() -> None:
    strategy = MultistageCheckpointing(
        levels=[Level(capacity_bytes=1000), Level(capacity_bytes=2000, write=0.5, read=0.5), Level(None, 4.0, 2.0)]
    )
    with pytest.raises(ParameterError, match="needs the state's size"):
        strategy.cost(10)
    sized = strategy.sized(400)
    assert [level.capacity for level in sized.levels] == [2, 5, None]
    halve = revseq.Recurrence(lambda x: x * 0.5, lambda x: 0.5 * np.ones_like(x))
    out = revseq.backprop(halve, np.ones(50), 30, strategy)  # 400 bytes a state
    assert out.stats.as_cost() == sized.cost(30)


def test_cli_plan_shows_each_level(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["plan", "-s", "multistage", "--ram", "2", "--disk", "3", "--write-cost", "0.5", "--read-cost", "0.25"]
    assert main([*argv, "--level", "none:4:2", "-n", "100"]) == 0
    out = capsys.readouterr().out
    cost = three((2, 3, None), 0.5, 0.25, 4.0, 2.0).cost(100)
    assert f", {cost.level(2).peak} at level 2" in out
    assert "at most 3 on disk" in out
    assert main([*argv, "--level", "none:4:2", "-n", "100", "--actions"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("Store(") and line.endswith("level=2)") for line in listed) == cost.level(2).writes
    assert main([*argv, "--level", "3:x:2"]) == 2
    assert "CAPACITY:WRITE:READ" in capsys.readouterr().err


def test_timeline_puts_each_checkpoint_on_its_level() -> None:
    from revseq import plot

    strategy = three((2, 3, None), 0.5, 0.25, 4.0, 2.0)
    lay = plot.timeline(strategy.schedule(60), 60)
    cost = strategy.cost(60)
    assert [lay.peak_at(k) for k in range(3)] == [cost.level(k).peak for k in range(3)]
    assert sum(1 for *_, level in lay.stores if level == 2) == cost.level(2).writes
    assert "levels=[Level(capacity=2)" in plot.label(strategy)
    pytest.importorskip("matplotlib")
    plot.draw_diagram(strategy, 60)


def test_choose_times_each_level_and_prices_the_multilevel_plan(tmp_path: Path) -> None:
    levels = [(tmp_path, 32 * 3), revseq.MemoryStore(copy=True)]
    choice = revseq.choose(np.sin, np.zeros(4), 300, max_bytes=32 * 2, disk=levels, samples=2)
    assert len(choice.levels) == 2
    assert all(w > 0 and r > 0 for w, r in choice.levels)
    assert (choice.write_seconds, choice.read_seconds) == choice.levels[0]
    multi = next(c for c in choice.candidates if isinstance(c.strategy, MultistageCheckpointing))
    chosen = multi.strategy.levels
    assert [level.capacity for level in chosen] == [2, 3, None]
    assert multi.cost == multi.strategy.cost(300)
    cost, step = multi.cost, float(f"{choice.step_seconds:.3g}")  # choose prices at three significant digits
    steps = cost.forward_steps + sum(
        level.write * cost.level(k).writes + level.read * cost.level(k).reads for k, level in enumerate(chosen)
    )
    assert same(multi.predicted_seconds, step * steps)
    assert "level 2: a write" in choice.explain()
    assert not any(tmp_path.iterdir())
    assert len(levels[1]) == 0
    with pytest.raises(ParameterError, match=r"disk\[1\] capacity_bytes must be an int >= 0"):
        revseq.choose(np.sin, np.zeros(4), 30, max_bytes=64, disk=[tmp_path, (tmp_path, -1)])
