"""`revseq compare`, `plan` and `plot` with a strategy of the user's: `-s module:object` (issue 14).

The counts are checked against formulas written out here for the user's
strategies (not revseq's simulator), the errors against what a user must be
told, and a strategy's legality against a schedule that breaks the rules.
"""

from __future__ import annotations

import json
import math
import sys
import textwrap

import every_other as every_other_module
import pytest

import revseq
from revseq.cli import main

USER = "revseq_cli_user_strategies"  # a module name no other test uses: sys.modules caches it

SOURCE = every_other_module.SOURCE + textwrap.dedent(
    """


    every_other = EveryOther()


    def tenth(n):
        '''A factory of n: sqrt checkpointing with segments of n // 10.'''
        return revseq.SqrtCheckpointing(interval=max(1, n // 10))


    class Plain(revseq.ReversalStrategy):
        '''Not an attrs class: named by its class.'''

        def actions(self, n):
            yield Store(0)
            if n > 1:
                yield Advance(0, n - 1, keep=True)
            yield Reverse(0, n)


    plain = Plain()


    @attrs.frozen
    class HalfOnDisk(revseq.ReversalStrategy):
        '''Every state stored, the even ones on disk.'''

        def actions(self, n):
            for t in range(n):
                yield Store(t, disk=t % 2 == 0)
                if t + 1 < n:
                    yield Advance(t, t + 1)
            yield Reverse(0, n)


    half_on_disk = HalfOnDisk()


    @attrs.frozen
    class RestoresTooSoon(revseq.ReversalStrategy):
        def actions(self, n):
            yield Restore(3)


    @attrs.frozen
    class Overpromises(revseq.ReversalStrategy):
        '''Stores everything but promises 2 checkpoints.'''

        def actions(self, n):
            yield Store(0)
            yield Advance(0, n - 1, keep=True)
            yield Reverse(0, n)

        def bounds(self, n):
            return Bounds(checkpoints=2)


    illegal = RestoresTooSoon()
    overpromises = Overpromises()
    number = 3
    cls = EveryOther


    def needs_two(a, b):
        return revseq.StoreAll()


    def raises(n):
        raise ValueError(f"no strategy for n={n}")


    def returns_int(n):
        return 7


    def returns_class(n):
        return revseq.StoreAll
    """
)


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    where = tmp_path_factory.mktemp("user")
    (where / f"{USER}.py").write_text(SOURCE)
    (where / "user_syntax.py").write_text("def f(:\n")
    sys.path.insert(0, str(where))
    yield where
    sys.path.remove(str(where))
    sys.modules.pop(USER, None)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def every_other_steps(n: int) -> int:
    """EveryOther by hand: the sweep to the last even start, one step into every pair, and x_n's call."""
    last = (n - 1) // 2 * 2
    pairs_of_two = n // 2  # starts a with a + 1 < n
    return last + pairs_of_two + 1


def sqrt_steps(n: int, k: int) -> int:
    """Segments of k: every segment but the last is recomputed once, less its first state (restored)."""
    m = -(-n // k)
    last = n - (m - 1) * k
    return n + (n - last) - (m - 1)


def binomial_steps(n: int, c: int) -> int:
    r = 0
    while math.comb(c + r, c) < n:
        r += 1
    return r * n - math.comb(c + r, r - 1) + 1 if r else 1


# -- compare ------------------------------------------------------------------------------------------


def test_compare_runs_the_users_strategies_beside_the_builtins(capsys, user_dir):
    n, size = 60, 4
    argv = ["compare", "--json", "-n", str(n), "--size", str(size), "-s", f"storeall,binomial,{USER}:every_other"]
    argv += ["-s", f"{user_dir / (USER + '.py')}:tenth,{USER}:plain,{USER}:every_other"]  # a path; a repeat
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    rows = {row["strategy"]: row for row in json.loads(out)["rows"]}
    assert list(rows) == [
        "StoreAll()",
        "BinomialCheckpointing()",
        "BinomialCheckpointing(checkpoints=7)",  # ceil(log2 n) + 1
        "EveryOther()",
        "SqrtCheckpointing(interval=6)",  # the factory was called with n = 60
        "Plain",  # no attrs, a default repr: the class name
    ]
    mine = rows["EveryOther()"]
    assert mine["name"] == f"{USER}:every_other"
    assert mine["forward_steps"] == every_other_steps(n) == 89
    assert mine["checkpoints"] == n // 2
    assert mine["peak_bytes"] == n // 2 * size * 8
    assert mine["max_gradient_deviation"] == 0.0
    assert rows["SqrtCheckpointing(interval=6)"]["forward_steps"] == sqrt_steps(n, 6)
    assert rows["SqrtCheckpointing(interval=6)"]["name"].endswith(".py:tenth")
    assert rows["Plain"]["forward_steps"] == n
    assert rows["Plain"]["checkpoints"] == n - 1
    assert rows["BinomialCheckpointing(checkpoints=7)"]["forward_steps"] == binomial_steps(n, 7)
    notes = json.loads(out)["notes"]
    assert any(note.startswith("yours: EveryOther() (") and "checked" in note for note in notes)


def test_compare_table_names_the_users_strategy(capsys, user_dir):
    code, out, err = run(capsys, "compare", "-n", "30", "--size", "2", "-s", f"halving,{USER}:every_other")
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("EveryOther()"))
    assert line.split()[1:4] == ["15", str(every_other_steps(30)), f"{every_other_steps(30) / 30:.2f}"]
    assert f"yours: EveryOther() ({USER}:every_other)" in out


def test_compare_gives_a_users_disk_strategy_a_disk_store_and_leaves_nothing(capsys, user_dir, tmp_path):
    n = 20
    argv = ["compare", "--json", "-n", str(n), "--size", "3", "-s", f"{USER}:half_on_disk", "--disk-dir"]
    code, out, err = run(capsys, *argv, str(tmp_path))
    assert code == 0, err
    (row,) = json.loads(out)["rows"]
    assert row["forward_steps"] == n
    assert (row["disk_writes"], row["peak_disk"], row["checkpoints"]) == (n // 2, n // 2, n // 2)
    assert row["disk_bytes_written"] == n // 2 * 3 * 8
    assert row["max_gradient_deviation"] == 0.0
    assert list(tmp_path.iterdir()) == []  # its private directory was removed


def test_compare_refuses_an_illegal_schedule_before_running_anything(capsys, user_dir):
    code, out, err = run(capsys, "compare", "-n", "10", "--size", "2", "-s", f"storeall,{USER}:illegal")
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "revseq compare: error: argument -s/--strategies: RestoresTooSoon() makes an illegal schedule for n = 10: "
        "action #0 Restore(step=3): x_3 is not stored (never stored, freed, or released by a Reverse)"
    ]
    code, _, err = run(capsys, "plan", "-n", "10", "-s", f"{USER}:overpromises")
    assert code == 2
    assert "Overpromises() makes an illegal schedule for n = 10" in err
    assert "holds 9 checkpoints, over the budget of 2" in err


# -- plan ---------------------------------------------------------------------------------------------


def test_plan_costs_the_users_strategy(capsys, user_dir):
    code, out, err = run(capsys, "plan", "-s", f"{USER}:every_other", "-n", "100")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (
        f"EveryOther() (yours, from {USER}:every_other), n = 100: predicted by simulating its schedule, "
        f"which checks every action (nothing is run)"
    )
    assert lines[1].split()[:3] == ["forward", "steps", str(every_other_steps(100))]
    assert "promise           none" in out
    assert f"{binomial_steps(100, 50)} forward steps is the proven minimum for 50 checkpoints" in out
    code, out, err = run(capsys, "plan", "-s", f"{USER}:tenth", "-n", "100", "--json")
    doc = json.loads(out)
    assert (doc["strategy"], doc["from"], doc["forward_steps"]) == (
        "SqrtCheckpointing(interval=10)",
        f"{USER}:tenth",
        sqrt_steps(100, 10),
    )


def test_plan_lists_the_users_actions(capsys, user_dir):
    code, out, err = run(capsys, "plan", "-s", f"{USER}:plain", "-n", "5", "--actions")
    assert code == 0, err
    assert out.splitlines() == ["Store(step=0)", "Advance(start=0, stop=4, keep=True)", "Reverse(start=0, stop=5)"]
    code, out, err = run(capsys, "plan", "-s", f"{USER}:illegal", "-n", "5", "--actions")
    assert (code, out) == (2, "")  # checked before the first line is printed
    assert "illegal schedule" in err


def test_plan_options_of_builtins_do_not_apply_to_yours(capsys, user_dir):
    code, _, err = run(capsys, "plan", "-s", f"{USER}:every_other", "--checkpoints", "3")
    assert code == 2
    assert f"argument --checkpoints: applies to binomial and online only, not {USER}:every_other" in err


# -- plot ---------------------------------------------------------------------------------------------


def test_plot_draws_the_users_strategy(capsys, user_dir, tmp_path, monkeypatch):
    # What reaches the drawing functions, recorded; drawing itself is tests/test_plot.py's (and below).
    pytest.importorskip("matplotlib")
    from revseq import cli, plot

    drawn = []
    monkeypatch.setattr(plot, "draw_diagram", lambda strategy, n: drawn.append(("diagram", strategy, n)))
    monkeypatch.setattr(cli, "_frontier_with", lambda n, strategy, cost: drawn.append(("frontier", strategy, cost)))
    monkeypatch.setattr(plot, "save", lambda fig, path: path.write_text("drawn"))
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "plot", "-s", f"{USER}:tenth", "-n", "40")
    assert code == 0, err
    assert out.splitlines() == ["wrote revseq-diagram.png", "wrote revseq-frontier.png"]
    diagram, frontier = drawn
    assert diagram == ("diagram", revseq.SqrtCheckpointing(interval=4), 40)  # the factory called with n = 40
    assert frontier[:2] == ("frontier", revseq.SqrtCheckpointing(interval=4))
    # 10 segment starts, and in the last segment its states but the first (stored) and the last (live)
    assert (frontier[2].forward_steps, frontier[2].peak_checkpoints) == (sqrt_steps(40, 4), 10 + 4 - 2)


def test_plot_refuses_what_it_cannot_draw(capsys, user_dir, tmp_path):
    out_path = tmp_path / "x.png"
    code, _, err = run(capsys, "plot", "diagram", "-s", f"{USER}:illegal", "-n", "12", "-o", str(out_path))
    assert code == 2
    assert "argument -s/--strategy: RestoresTooSoon() makes an illegal schedule for n = 12" in err
    code, _, err = run(capsys, "plot", "frontier", "-s", f"{USER}:half_on_disk", "-n", "40", "-o", str(out_path))
    assert code == 2
    assert "HalfOnDisk() keeps checkpoints on disk" in err
    code, _, err = run(capsys, "plot", "frontier", "-s", "binomial", "-o", str(out_path))
    assert code == 2
    assert "--strategy does not apply (a strategy of yours, -s module:object, is drawn as one point on it)" in err
    assert not out_path.exists()


def test_the_frontier_marks_the_users_point():
    pytest.importorskip("matplotlib")
    from revseq.cli import _frontier_with

    strategy = revseq.BinomialCheckpointing(checkpoints=5)
    fig = _frontier_with(40, strategy, strategy.cost(40))
    ax = fig.axes[0]
    mine = [c for c in ax.collections if c.get_label() == "BinomialCheckpointing(checkpoints=5): yours"]
    assert len(mine) == 1
    assert mine[0].get_offsets().tolist() == [[5, binomial_steps(40, 5)]]
    assert "BinomialCheckpointing(checkpoints=5): yours" in [t.get_text() for t in ax.get_legend().get_texts()]


# -- errors: the same as --recurrence's, naming the option --------------------------------------------

WANTED = "must be a revseq.ReversalStrategy instance or a function of n returning one"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz:s", "cannot import 'no_such_module_xyz': No module named 'no_such_module_xyz'"),
        (f"{USER}:nothing", f"'{USER}' has no attribute 'nothing'"),
        (f"{USER}:number", f"{USER}:number {WANTED}, got 3 (int)"),
        (f"{USER}:cls", f"{USER}:cls {WANTED}, got the class EveryOther; make one in {USER}"),
        (f"{USER}:needs_two", f"{USER}:needs_two {WANTED}, but it cannot be called with one argument, n"),
        (f"{USER}:raises", f"calling {USER}:raises(N) raised ValueError: no strategy for n=N ({USER}.py:"),
        (f"{USER}:returns_int", f"{USER}:returns_int(N) must return a revseq.ReversalStrategy, got 7 (int)"),
        (f"{USER}:returns_class", "got the class StoreAll; did you mean StoreAll()?"),
        ("no/such/file.py:s", "no such file: no/such/file.py"),
        ("SYNTAX:f", "importing SYNTAX raised SyntaxError: invalid syntax (user_syntax.py:1)"),
        (f"{USER}:", "expected module:object (or path/to/file.py:object)"),
    ],
)
@pytest.mark.parametrize(
    ("command", "option", "n"),
    [
        (["compare", "--size", "2"], "-s/--strategies", 10),
        (["plan"], "-s/--strategy", 10),
        (["plot", "diagram"], "-s/--strategy", 20),
    ],
)
def test_a_strategy_that_cannot_be_loaded_is_one_line_naming_the_option(
    capsys, user_dir, spec, message, command, option, n
):
    spec = spec.replace("SYNTAX", str(user_dir / "user_syntax.py"))
    message = message.replace("SYNTAX", str(user_dir / "user_syntax.py")).replace("N)", f"{n})").replace("=N", f"={n}")
    code, out, err = run(capsys, *command, "-n", str(n), "-s", spec)
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1
    assert err.startswith(f"revseq {command[0]}: error: argument {option}: ")
    assert message in err


def test_an_unknown_name_says_how_to_name_your_own(capsys):
    code, _, err = run(capsys, "plan", "-s", "bisect")
    assert code == 2
    assert "unknown strategy 'bisect'" in err
    assert "or name your own as module:object or path/to/file.py:object" in err
    code, out, _ = run(capsys, "compare", "--help")
    assert code == 0
    assert "module:object" in " ".join(out.split())
