"""Pictures of schedules: the layout is checked against the simulator, the PNGs are real PNGs.

The timeline is computed by revseq.plot on its own; revseq.simulate (the
schedule tracker) is the independent oracle for what it must show.
"""

from __future__ import annotations

import itertools
import math
import struct
from pathlib import Path

import attrs
import multistage_oracles
import online_oracles
import pytest

import revseq
from revseq.cli import main
from revseq.plot import MAX_DIAGRAM_N, frontier, timeline

STRATEGIES = [
    revseq.StoreAll(),
    revseq.Recompute(),
    revseq.RecursiveHalving(),
    revseq.SqrtCheckpointing(),
    revseq.SqrtCheckpointing(interval=3),
    revseq.BinomialCheckpointing(),
    revseq.BinomialCheckpointing(checkpoints=2),
    revseq.BinomialCheckpointing(checkpoints=4),
    revseq.OnlineCheckpointing(checkpoints=3),
    revseq.OnlineCheckpointing(checkpoints=6),
    revseq.MultistageCheckpointing(ram=2),
    revseq.MultistageCheckpointing(ram=1, disk=2, costs=revseq.DiskCosts(step=1.0, write=0.5, read=0.5)),
    revseq.MultistageCheckpointing(ram=0, disk=3),
]


@attrs.frozen
class EveryOther(revseq.ReversalStrategy):
    """Stores every other state on the first sweep: a user's strategy, not a built-in."""

    def actions(self, n):
        starts = range(0, n, 2)
        for a in starts:
            yield revseq.Store(a)
            if a + 2 < n:
                yield revseq.Advance(a, a + 2)
        for a in reversed(starts):
            if a != starts[-1]:
                yield revseq.Restore(a)
            if a + 1 < n:
                yield revseq.Advance(a, a + 1)
            yield revseq.Reverse(a, min(a + 2, n))


@pytest.mark.parametrize("strategy", [*STRATEGIES, EveryOther()], ids=repr)
def test_timeline_shows_what_the_simulator_counts(strategy):
    for n in range(1, 41):
        lay = timeline(strategy.schedule(n), n)
        cost = revseq.simulate(strategy.schedule(n), n)
        assert lay.forward_steps == cost.forward_steps, n
        assert lay.peak_checkpoints == cost.peak_checkpoints, n
        assert lay.peak_disk == cost.peak_disk, n
        assert lay.duration == cost.forward_steps + n
        # every step is reversed once, from n - 1 down to 0, each reversal right after the last
        reversed_steps = [t for _, start, stop in lay.reversals for t in range(stop - 1, start - 1, -1)]
        assert reversed_steps == list(range(n - 1, -1, -1))
        # nothing happens at once: sweeps and reversals tile the time axis
        spans = sorted([(time, time + stop - start) for time, start, stop in (*lay.sweeps, *lay.reversals)])
        assert spans[0][0] == 0
        assert spans[-1][1] == lay.duration
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
        # a checkpoint lives from its store to its release, and x_n is reached exactly once
        assert all(begin <= end for _, begin, end, _ in lay.lifetimes)
        assert len(lay.lifetimes) == cost.writes + cost.disk_writes
        assert sum(1 for *_, disk in lay.lifetimes if disk) == cost.disk_writes
        assert sum(1 for _, _, stop in lay.sweeps if stop == n) == 1


def test_timeline_of_a_hand_made_schedule():
    actions = [
        revseq.Store(0),
        revseq.Advance(0, 2),
        revseq.Reverse(2, 3),
        revseq.Restore(0),
        revseq.Advance(0, 1),
        revseq.Reverse(0, 2),
    ]
    lay = timeline(actions, 3)
    assert lay.sweeps == ((0, 0, 2), (2, 2, 3), (4, 0, 1))  # the engine's call producing x_3 included
    assert lay.reversals == ((3, 2, 3), (5, 0, 2))
    assert lay.restores == ((4, 0, 2),)  # the pen jumps from x_2, where the reversal ended
    assert lay.lifetimes == ((0, 0, 7, False),)  # x_0 is released once step 0 is reversed
    assert lay.duration == 7


def test_timeline_ends_a_freed_checkpoint_where_it_is_freed():
    actions = [
        revseq.Store(0),
        revseq.Advance(0, 1),
        revseq.Store(1),
        revseq.Free(1, 2),  # dropped right away: x_1 is recomputed later instead
        revseq.Advance(1, 2),
        revseq.Reverse(2, 3),
        revseq.Restore(0),
        revseq.Advance(0, 1),
        revseq.Reverse(1, 2),
        revseq.Restore(0),
        revseq.Reverse(0, 1),
    ]
    lay = timeline(actions, 3)
    assert lay.lifetimes == ((0, 0, 7, False), (1, 1, 1, False))
    assert lay.held == ((0, 0), (0, 1), (1, 2), (1, 1), (7, 0))  # x_1 came and went at time 1
    assert lay.peak_checkpoints == revseq.simulate(actions, 3).peak_checkpoints == 2


def test_timeline_rejects_an_illegal_schedule():
    with pytest.raises(revseq.ScheduleError, match="Restore"):
        timeline([revseq.Restore(1)], 3)


def test_frontier_points_respect_the_proven_bound():
    def bound(n, c):
        r = 0
        while math.comb(c + r, c) < n:
            r += 1
        return r * n - math.comb(c + r, r - 1) + 1

    n = 300
    data = frontier(n)
    assert set(data) == {"binomial", "online", "sqrt", "halving", "storeall", "recompute"}  # no multistage
    for name, points in data.items():
        for strategy, cost in points:
            assert cost.n == n
            assert cost.peak_disk == 0
            assert cost.forward_steps >= bound(n, max(cost.peak_checkpoints, 1)), (name, strategy)
            if name == "binomial":
                assert cost.forward_steps == bound(n, cost.peak_checkpoints)
            if name == "online":  # no online schedule does better than T'(n, c)
                assert cost.forward_steps >= online_oracles.lower_bound_dp(n, cost.peak_checkpoints), strategy
    *_, (enough, cost) = data["online"]
    c = 1
    while (c + 1) * (c + 2) // 2 - 1 < n:  # the fewest checkpoints keeping every run up to n optimal
        c += 1
    assert enough == revseq.OnlineCheckpointing(checkpoints=c)
    assert cost.forward_steps == 2 * n - c  # T'(n, c) in the optimal range (docs/online.md)
    assert len(data["online"]) >= 4
    assert data["recompute"][0][1].forward_steps == n * (n - 1) // 2 + 1
    assert len(data["sqrt"]) > 10
    assert len(data["binomial"]) > 5


def test_diagram_refuses_large_n():
    pytest.importorskip("matplotlib")
    from revseq.plot import draw_diagram

    with pytest.raises(revseq.ParameterError, match=f"n must be <= {MAX_DIAGRAM_N}"):
        draw_diagram(revseq.StoreAll(), MAX_DIAGRAM_N + 1)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plot_writes_both_pngs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    assert main(["plot", "diagram", "-s", "halving", "-n", "24"]) == 0
    assert main(["plot", "frontier", "-n", "120"]) == 0
    out = capsys.readouterr().out
    assert "wrote revseq-diagram.png" in out
    assert "wrote revseq-frontier.png" in out
    for name in ("revseq-diagram.png", "revseq-frontier.png"):
        path = tmp_path / name
        width, height = png_size(path)
        assert 1000 <= width <= 2000, (name, width)
        assert 700 <= height <= 1200, (name, height)
        assert path.stat().st_size > 20_000  # drawn, not blank

    # Writing again replaces the file and says so; -o picks the path and the suffix the format.
    assert main(["plot", "diagram", "--checkpoints", "2", "-n", "9"]) == 0
    assert "(replaced the existing file)" in capsys.readouterr().out
    assert main(["plot", "diagram", "-o", str(tmp_path / "d.svg")]) == 0
    assert (tmp_path / "d.svg").read_text().lstrip().startswith("<?xml")
    capsys.readouterr()
    assert main(["plot", "diagram", "-o", str(tmp_path / "d.nosuchformat")]) == 2
    assert "argument -o/--output" in capsys.readouterr().err


def test_diagrams_of_online_and_multistage(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from revseq.plot import draw_diagram

    path = tmp_path / "online.png"
    assert main(["plot", "diagram", "-s", "online", "--checkpoints", "3", "-n", "30", "-o", str(path)]) == 0
    assert png_size(path)[0] >= 1000
    assert path.stat().st_size > 20_000
    path = tmp_path / "multistage.png"
    assert main(["plot", "diagram", "-s", "multistage", "-o", str(path)]) == 0  # --ram 3 by default, n = 20
    assert path.stat().st_size > 20_000
    assert capsys.readouterr().out.count("wrote") == 2

    fig = draw_diagram(revseq.MultistageCheckpointing(ram=3), 20)
    title = fig.axes[0].get_title()
    cost = revseq.simulate(revseq.MultistageCheckpointing(ram=3).schedule(20), 20)
    assert f"{cost.forward_steps} forward steps" in title
    assert f"3 checkpoints + {cost.peak_disk} on disk" in title
    best = 1 + multistage_oracles.nested_times(20, 3, None, 1.0, 2.0, 1.0)[20]  # + the call producing x_20
    assert f"time {best:g}, the least for a step 1, a disk write 2, a read 1" in title
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert "checkpoint on disk" in legend
    fig = draw_diagram(revseq.OnlineCheckpointing(checkpoints=5), 20)
    assert fig.axes[0].get_title().endswith(f"{2 * 20 - 5} forward steps (1.75 x n), 5 checkpoints")
