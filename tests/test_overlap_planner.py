"""MultistageCheckpointing(depth=k): plans priced for an OverlappedStore (issue 11, part 1).

The oracles do not use the planner's programme: the event simulation
``revseq.overlap.overlapped_time`` (THEORY.md 6.2, the store's policies
replayed on the actions), the synchronous planner's plan (exactly optimal
for the additive cost), an exhaustive enumeration of every plan of the
planner's own family (every segment's choice of revolve, x_base in memory
or x_base on disk, and every split) priced by the simulation, StoreAll's
gradient, and the counts of a real run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import revseq
from revseq.errors import ParameterError
from revseq.overlap import OverlappedStore, overlapped_plan, overlapped_time, time_overlapped
from revseq.schedule import Action, Advance, Free, Restore, Reverse, Store, validate
from revseq.strategies.binomial import revolve
from revseq.strategies.multistage import DiskCosts, MultistageCheckpointing

# (write, read, adjoint), a step costing 1: I/O of the order of a step, cheap, dear, and reads dearer than writes.
COSTS = ((2.0, 1.0, 1.0), (1.0, 1.0, 1.0), (0.5, 0.5, 1.0), (4.0, 2.0, 1.0), (1.0, 3.0, 2.0), (0.3, 0.2, 0.5))
SHAPES = ((2, 1), (3, 1), (4, 2))  # (ram, depth): ram states of memory, depth of them the store's buffers


def simulated(strategy: Any, n: int, costs: DiskCosts, depth: int) -> float:
    """The event simulation's wall time (``overlapped_time``, the oracle the programme is priced against)."""
    return time_overlapped(strategy, n, costs, depth)


@pytest.mark.parametrize(("ram", "depth"), SHAPES)
def test_never_slower_than_the_synchronous_plan_overlapped(ram: int, depth: int) -> None:
    """Same RAM: ram - depth checkpoints + depth buffers. Overlapped time from the simulation, n = 1 .. 40."""
    better = cases = 0
    for write, read, adjoint in COSTS:
        costs = DiskCosts(1.0, write, read, adjoint=adjoint)
        planned = MultistageCheckpointing(ram=ram, costs=costs, depth=depth)
        synchronous = MultistageCheckpointing(ram=ram - depth, costs=costs)
        for n in range(1, 41):
            mine = simulated(planned, n, costs, depth)
            theirs = simulated(synchronous, n, costs, depth)
            assert mine <= theirs + 1e-9, (write, read, adjoint, n, mine, theirs)
            assert planned.predicted_time(n) == mine
            if 0.5 <= max(write, read) <= 2 and n >= 10:  # I/O of the order of a step
                cases += 1
                better += mine < theirs - 1e-9
    assert better == cases == 3 * 31, (better, cases)  # strictly faster in every one of them


def test_the_gain_where_io_is_of_the_order_of_a_step() -> None:
    """THEORY.md 6.2's example: ram 4, step = adjoint = 1, write 2, read 1, n = 1000."""
    costs = DiskCosts(1.0, 2.0, 1.0, adjoint=1.0)
    n = 1000
    synchronous = MultistageCheckpointing(ram=4, costs=costs)
    assert synchronous.predicted_time(n) + n == 3389  # THEORY's exact synchronous optimum, adjoints added
    assert simulated(MultistageCheckpointing(ram=3, costs=costs), n, costs, 1) == 2748
    planned = MultistageCheckpointing(ram=4, costs=costs, depth=1)
    # THEORY's periodic overlapped plan (period 2, one buffer) reaches 2499 in its model.
    assert simulated(planned, n, costs, 1) == planned.predicted_time(n) == 2498


def _family(base: int, length: int, have: str, slots: int) -> Iterator[tuple[Action, ...]]:
    """Every plan of the planner's family, unlimited disk: each segment revolves, or keeps x_base in memory
    (its right part revolved in memory with one slot fewer) or on disk (its right part any such plan), at any split.
    """
    if length == 1:
        yield (Reverse(base, base + 1),)
        return
    if slots >= 1:
        yield ((Store(base),) if have != "memory" else ()) + tuple(revolve(base, length, slots))
    for j in range(1, length):
        right = length - j
        if slots >= 1 and (right == 1 or slots >= 2):
            moves = {"disk": (Free(base, base + 1), Store(base)), "live": (Store(base),)}
            head: tuple[Action, ...] = moves.get(have, ())
            kept = (Store(base + j),) if right > 1 else ()
            middle = (Advance(base, base + j), *kept, *revolve(base + j, right, slots - 1), Restore(base))
            for left in _family(base, j, "memory", slots):
                yield head + middle + left
        head = {"memory": (Free(base, base + 1), Store(base, disk=True)), "live": (Store(base, disk=True),)}.get(
            have, ()
        )
        for rest in _family(base + j, right, "live", slots):
            for left in _family(base, j, "disk", slots):
                yield (*head, Advance(base, base + j), *rest, Restore(base), *left)


@pytest.mark.parametrize(
    ("ram", "depth", "costs"), [(2, 1, (2.0, 1.0, 1.0)), (3, 1, (1.0, 3.0, 2.0)), (3, 2, (6.0, 2.0, 1.0))]
)
def test_against_every_plan_of_its_family(ram: int, depth: int, costs: tuple[float, float, float]) -> None:
    """The best of every plan of the family (or revolve in all of ram), priced by the simulation, n <= 6.

    The programme is an estimate, so this bounds its gap rather than assert
    optimality. Measured over 126 cases (n <= 8, 3 shapes, 6 cost triples):
    equal in 101, 1 % worse on average, 16.7 % at most (3 units in 18).
    """
    write, read, adjoint = costs
    disk = DiskCosts(1.0, write, read, adjoint=adjoint)
    kw: dict[str, Any] = {"step": 1.0, "write": write, "read": read, "adjoint": adjoint, "depth": depth}
    for n in range(1, 7):
        candidates = list(_family(0, n, "live", ram - depth))
        for plan in candidates[:: max(1, len(candidates) // 50)]:  # the family is legal
            validate(plan, n, checkpoints=ram - depth)
        best = min(overlapped_time(plan, n, **kw)[0] for plan in candidates)
        best = min(best, overlapped_time(revseq.BinomialCheckpointing(ram).actions(n), n, **kw)[0])
        mine = MultistageCheckpointing(ram=ram, costs=disk, depth=depth).predicted_time(n)
        assert best - 1e-9 <= mine <= 1.2 * best, (n, mine, best)


def _rec() -> revseq.Recurrence:
    return revseq.Recurrence(np.sin, np.cos)


@pytest.mark.parametrize(("ram", "depth", "costs", "n"), [(3, 1, (2.0, 1.0, 1.0), 37), (4, 2, (1.0, 3.0, 2.0), 29)])
def test_the_engine_runs_the_plan(ram: int, depth: int, costs: tuple[float, float, float], n: int) -> None:
    """StoreAll's gradient, and the run's counts equal the plan's cost, with and without the overlapped store."""
    write, read, adjoint = costs
    strategy = MultistageCheckpointing(ram=ram, costs=DiskCosts(1.0, write, read, adjoint=adjoint), depth=depth)
    planned = strategy.cost(n)
    assert planned.disk_writes > 0
    assert planned.peak_checkpoints <= ram - depth
    x0 = np.linspace(0.1, 1.0, 16)
    expected = revseq.backprop(_rec(), x0, n, revseq.StoreAll())
    for disk in (OverlappedStore(depth=depth), None):
        out = revseq.backprop(_rec(), x0, n, strategy, disk=disk)
        np.testing.assert_array_equal(out.gradient, expected.gradient)
        np.testing.assert_array_equal(out.state, expected.state)
        stats = out.stats
        assert (stats.forward_steps, stats.disk_writes, stats.disk_reads) == (
            planned.forward_steps,
            planned.disk_writes,
            planned.disk_reads,
        )
        assert stats.peak_checkpoints <= ram - depth
        assert stats.peak_disk == planned.peak_disk


def test_a_budgeted_disk_and_ram_bytes() -> None:
    costs = DiskCosts(1.0, 2.0, 1.0, adjoint=1.0)
    strategy = MultistageCheckpointing(ram=3, disk=2, costs=costs, depth=1)
    for n in (5, 17, 30):
        cost = strategy.cost(n)  # simulated, against the bounds
        assert cost.peak_disk <= 2
        assert cost.peak_checkpoints <= (2 if cost.disk_writes else 3)  # revolve in all 3 states needs no buffer
        assert strategy.predicted_time(n) <= simulated(MultistageCheckpointing(ram=2, disk=2, costs=costs), n, costs, 1)
    x0 = np.linspace(0.1, 1.0, 16)
    sized = MultistageCheckpointing(ram_bytes=3 * x0.nbytes, costs=costs, depth=1).sized(x0.nbytes)
    assert sized == MultistageCheckpointing(ram=3, costs=costs, depth=1)
    with pytest.raises(ParameterError, match=r"depth must be an int < ram: ram_bytes=384 holds 3 states"):
        MultistageCheckpointing(ram_bytes=3 * x0.nbytes, costs=costs, depth=3).sized(x0.nbytes)


def test_depth_zero_is_the_synchronous_plan() -> None:
    """The adjoint is ignored without overlap: the same schedule as before it existed."""
    for n in (1, 9, 40):
        plain = MultistageCheckpointing(ram=3, costs=DiskCosts(1.0, 2.0, 1.0))
        told = MultistageCheckpointing(ram=3, costs=DiskCosts(1.0, 2.0, 1.0, adjoint=5.0))
        assert list(plain.actions(n)) == list(told.actions(n))
        assert plain.predicted_time(n) == told.predicted_time(n)


def test_overlapped_plan_uses_the_programme() -> None:
    costs = DiskCosts(1.0, 2.0, 1.0)
    strategy, predicted = overlapped_plan(200, ram=4, costs=costs, depth=1, adjoint=1.0)
    assert strategy == MultistageCheckpointing(ram=4, costs=DiskCosts(1.0, 2.0, 1.0, adjoint=1.0), depth=1)
    timed = DiskCosts(1.0, 2.0, 1.0, adjoint=1.0)
    assert predicted == strategy.predicted_time(200)
    assert predicted < simulated(MultistageCheckpointing(ram=3, costs=costs), 200, timed, 1)
    # with the older search over scaled costs as well: never slower than the programme alone
    _, searched = overlapped_plan(200, ram=4, costs=costs, depth=1, adjoint=1.0, scales=(0.0, 0.5, 1.0))
    assert searched <= predicted


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ram": 3, "depth": -1}, "depth must be an int >= 0, got -1"),
        ({"ram": 3, "depth": 3}, "depth must be an int < ram .* got depth=3 with ram=3"),
        ({"ram": 2, "depth": 5}, "depth must be an int < ram .* got depth=5 with ram=2"),
        ({"ram": 3, "depth": 1.5}, "depth must be an int"),
        ({"ram": 3, "depth": True}, "depth must be an int"),
        ({"levels": [revseq.Level(3), revseq.Level(None, 2.0, 1.0)], "depth": 1}, "depth=1 .* not with levels="),
    ],
)
def test_bad_depth(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        MultistageCheckpointing(**kwargs)


@pytest.mark.parametrize("adjoint", [math.inf, math.nan, -1.0, "1"])
def test_bad_adjoint(adjoint: Any) -> None:
    with pytest.raises(ParameterError, match="adjoint must be a finite number >= 0, got"):
        DiskCosts(1.0, 2.0, 1.0, adjoint=adjoint)


# -- the command line: --depth and --adjoint-cost -------------------------------------------------------


def test_plan_with_depth_reports_the_simulated_time_and_the_synchronous_ones(capsys: Any) -> None:
    import json

    from revseq.cli import main
    from revseq.schedule import simulate

    argv = ["plan", "-s", "multistage", "-n", "60", "--ram", "3", "--depth", "1", "--adjoint-cost", "1", "--json"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    costs = DiskCosts(step=1.0, write=2.0, read=1.0, adjoint=1.0)
    strategy = revseq.MultistageCheckpointing(ram=3, costs=costs, depth=1)
    actions = list(strategy.actions(60))
    # Oracles: the event simulation of the schedule, and the synchronous price of its simulated counts.
    expected = overlapped_time(iter(actions), 60, step=1.0, write=2.0, read=1.0, adjoint=1.0, depth=1)[0]
    cost = simulate(iter(actions), 60)
    assert doc["predicted_time"] == expected
    assert doc["synchronous_time"] == costs.time(cost) + 60  # the forward steps (x_n's call included), 60 adjoints
    assert doc["depth"] == 1
    assert doc["synchronous_plan_time"] > doc["predicted_time"]  # the point of planning for the overlap


def test_depth_on_the_command_line_is_checked(capsys: Any) -> None:
    from revseq.cli import main

    assert main(["plan", "-s", "multistage", "-n", "50", "--ram", "2", "--depth", "2"]) == 2
    assert "--depth: must be less than --ram" in capsys.readouterr().err
    assert main(["plan", "-s", "multistage", "-n", "50", "--depth", "1", "--level", "none:4:2"]) == 2
    assert "not with --level" in capsys.readouterr().err
    assert main(["plan", "-s", "binomial", "-n", "50", "--depth", "1"]) == 2
    assert "applies to multistage only" in capsys.readouterr().err


def test_compare_with_depth_runs_the_plan_through_an_overlapped_store(capsys: Any, tmp_path: Any) -> None:
    import json

    from revseq.cli import main

    argv = ["compare", "-n", "80", "--size", "50", "-s", "multistage", "--ram", "3", "--depth", "1"]
    assert main([*argv, "--disk-dir", str(tmp_path), "--json", "--no-progress"]) == 0
    (row,) = [r for r in json.loads(capsys.readouterr().out)["rows"] if "depth=1" in r["strategy"]]
    cost = revseq.MultistageCheckpointing(ram=3, depth=1).cost(80)
    assert (row["forward_steps"], row["disk_writes"], row["disk_reads"]) == (
        cost.forward_steps,
        cost.disk_writes,
        cost.disk_reads,
    )
    assert row["max_gradient_deviation"] == 0.0  # StoreAll's gradient
    assert list(tmp_path.iterdir()) == []
