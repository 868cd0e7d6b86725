"""The `revseq` command: arguments, errors, JSON, and that its numbers match independent formulas.

Every count the command prints is checked against a closed form written out
here (not revseq's own), and the memory column against states x bytes.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import multistage_oracles
import numpy as np
import online_oracles
import pytest

import revseq
from revseq.cli import main

N = 200  # small enough that every strategy, Recompute included, runs in well under a second
TIMING_CALLS = 3  # compare times f on x_0 this many times before it runs anything (docs/cli.md)


def binomial_steps(n: int, c: int) -> int:
    """Griewank & Walther's minimum, in revseq's counting (DESIGN.md)."""
    r = 0
    while math.comb(c + r, c) < n:
        r += 1
    return r * n - math.comb(c + r, r - 1) + 1 if r else 1


def online_steps(n: int, c: int) -> int:
    """OnlineCheckpointing's forward steps: the adaptive rule restated plainly in tests/online_oracles.py."""
    held = dict(online_oracles.adaptive_positions(c, n))[n]
    return online_oracles.reversal_cost(held, n, c)


def fewest_optimal(n: int) -> int:
    """The smallest c with n <= (c + 1)(c + 2)/2 - 1 (docs/online.md: for_max_steps)."""
    c = 1
    while (c + 1) * (c + 2) // 2 - 1 < n:
        c += 1
    return c


def multistage_time(n: int, ram: int, disk: int | None, step: float, write: float, read: float) -> float:
    """The least step + disk time, by the oracle's nested programme, plus the call producing x_n."""
    return step + multistage_oracles.nested_times(n, ram, disk, step, write, read)[n]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def compare_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    code, out, err = run(capsys, "compare", "--json", *argv)
    assert code == 0, err
    return json.loads(out)


# -- compare ------------------------------------------------------------------------------------------


def test_compare_runs_every_strategy_with_the_counts_the_formulas_give(capsys):
    doc = compare_json(capsys, "-n", str(N), "--size", "8")
    rows = {row["strategy"]: row for row in doc["rows"]}
    small = (N - 1).bit_length() + 1  # ceil(log2 n) + 1
    auto = revseq.BinomialCheckpointing().budget(N)
    k = math.isqrt(N - 1) + 1
    m, last = -(-N // k), N - (-(-N // k) - 1) * k
    expected = {  # strategy: (checkpoints, forward steps)
        "StoreAll()": (N - 1, N),
        "SqrtCheckpointing()": (max(m + last - 2, m + k - 3), 2 * N - last - m + 1),
        "BinomialCheckpointing()": (auto, binomial_steps(N, auto)),
        f"BinomialCheckpointing(checkpoints={small})": (small, binomial_steps(N, small)),
        f"OnlineCheckpointing(checkpoints={small})": (small, online_steps(N, small)),  # the same small budget
        "RecursiveHalving()": ((N - 1).bit_length(), 1 + sum(bin(i).count("1") for i in range(N))),
        "Recompute()": (1, N * (N - 1) // 2 + 1),
    }
    assert list(rows) == list(expected)  # all of them, in the documented order: no multistage by default
    for name, (checkpoints, steps) in expected.items():
        row = rows[name]
        assert (row["checkpoints"], row["forward_steps"]) == (checkpoints, steps), name
        assert (row["peak_disk"], row["disk_writes"], row["disk_reads"], row["disk_bytes_written"]) == (0, 0, 0, 0)
        assert row["recompute_factor"] == pytest.approx(steps / N)
        assert row["peak_bytes"] == checkpoints * 8 * 8  # states of 8 float64
        assert row["peak_mib"] == pytest.approx(row["peak_bytes"] / 2**20)
        assert row["seconds"] >= 0
        assert row["max_gradient_deviation"] <= 1e-12
        assert row["reference"] is (name == "StoreAll()")
    assert doc["n"] == N
    assert doc["state_bytes"] == 64
    assert doc["skipped"] == []
    (note,) = doc["notes"]
    assert "OnlineCheckpointing ran with n known" in note
    assert f"{online_oracles.lower_bound_dp(N, small)} with {small} checkpoints" in note


def test_compare_gives_online_the_budgets_of_binomial(capsys):
    n = 40
    doc = compare_json(capsys, "-n", str(n), "--size", "3", "-s", "online,binomial", "--checkpoints", "5,auto,8")
    auto = revseq.BinomialCheckpointing().budget(n)
    assert fewest_optimal(n) == 8  # online's auto is 8 too: one row for the two spellings
    assert [row["strategy"] for row in doc["rows"]] == [
        "OnlineCheckpointing(checkpoints=8)",
        "OnlineCheckpointing(checkpoints=5)",
        *(
            f"BinomialCheckpointing(checkpoints={c})" if c != auto else "BinomialCheckpointing()"
            for c in sorted({5, 8, auto}, reverse=True)
        ),
    ]
    rows = {row["strategy"]: row for row in doc["rows"]}
    assert rows["OnlineCheckpointing(checkpoints=8)"]["forward_steps"] == 2 * n - 8  # optimal range: T' = 2n - c
    assert rows["OnlineCheckpointing(checkpoints=5)"]["forward_steps"] == online_steps(n, 5)  # past it (n > 20)
    assert all(row["max_gradient_deviation"] <= 1e-12 for row in doc["rows"])
    assert all(row["checkpoints"] <= int(re.findall(r"\d+", row["strategy"])[-1]) for row in doc["rows"][:2])


WATCHER = """
import os
import numpy as np
import revseq

calls = []  # what the watched directory held at each call of f


def f(x):
    calls.append(sorted(os.listdir(os.environ["REVSEQ_TEST_WATCH"])))
    return np.sin(x)


rec = revseq.Recurrence(f, np.cos)
"""


def test_compare_multistage_keeps_its_disk_checkpoints_under_disk_dir_and_removes_them(capsys, tmp_path, monkeypatch):
    disk_dir, elsewhere = tmp_path / "disk", tmp_path / "tmp"
    disk_dir.mkdir()
    elsewhere.mkdir()
    (tmp_path / "cli_watcher.py").write_text(WATCHER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cli_watcher", raising=False)
    monkeypatch.setenv("REVSEQ_TEST_WATCH", str(disk_dir))
    monkeypatch.setattr(tempfile, "tempdir", str(elsewhere))  # the default place: nothing may land there
    n, size = 30, 5
    argv = ["-n", str(n), "--size", str(size), "-s", "storeall,multistage", "--recurrence", "cli_watcher:rec"]
    costs = ["--ram", "2", "--disk", "3", "--write-cost", "0.5", "--read-cost", "0.5"]
    doc = compare_json(capsys, *argv, *costs, "--disk-dir", str(disk_dir))
    storeall, row = doc["rows"]
    assert row["strategy"] == "MultistageCheckpointing(ram=2, disk=3, costs=DiskCosts(write=0.5, read=0.5))"
    assert row["max_gradient_deviation"] <= 1e-12
    # The engine's counts give the least time the oracle finds, and the bytes are states of 5 float64.
    time = row["forward_steps"] + 0.5 * row["disk_writes"] + 0.5 * row["disk_reads"]
    assert time == multistage_time(n, 2, 3, 1.0, 0.5, 0.5)
    assert (row["checkpoints"], row["peak_disk"]) <= (2, 3)
    assert row["peak_disk"] > 0
    assert row["disk_bytes_written"] == row["disk_writes"] * size * 8
    assert row["disk_bytes_read"] == row["disk_reads"] * size * 8
    calls = sys.modules["cli_watcher"].calls
    # counted from outside: the runs' calls, and the calls compare times f with before anything runs
    assert len(calls) == TIMING_CALLS + storeall["forward_steps"] + row["forward_steps"]
    held = {name for listing in calls for name in listing}
    assert len(held) == 1  # the run's private directory, inside --disk-dir while it ran
    assert next(iter(held)).startswith("revseq-")
    assert list(disk_dir.iterdir()) == []  # and gone once it ended
    assert list(elsewhere.iterdir()) == []
    (note,) = doc["notes"]
    assert f"private directory (revseq-XXXXXXXX, mode 0700) under {disk_dir}, made for each run and removed" in note


def test_compare_table_gains_disk_columns_only_with_multistage(capsys):
    argv = ["compare", "-n", "60", "--size", "4", "-s", "binomial", "--checkpoints", "3"]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert "disk" not in out
    code, out, _ = run(capsys, *argv[:-3], "binomial,multistage", "--checkpoints", "3", "--ram", "3")
    assert code == 0
    header = next(line for line in out.splitlines() if line.startswith("strategy"))
    for column in ("on disk", "disk w/r", "disk MiB w/r"):
        assert column in header
    table = out.split("\n\n")[1].splitlines()
    body = {line.split()[0]: line.split() for line in table[1:]}
    assert body["BinomialCheckpointing(checkpoints=3)"][5:8] == ["-", "-", "-"]
    _, held, steps, _, _, on_disk, traffic, _, _, deviation = body["MultistageCheckpointing(ram=3)"]
    writes, reads = map(int, traffic.split("/"))
    assert int(steps) + 2 * writes + reads == multistage_time(60, 3, None, 1.0, 2.0, 1.0)  # the default costs
    assert int(held) <= 3 < int(on_disk)
    assert int(steps) < binomial_steps(60, 3)
    assert float(deviation) <= 1e-12
    assert f"under {tempfile.gettempdir()}" in out
    assert "--disk-dir chooses where" in out


def test_compare_skips_recompute_by_default_for_long_runs_and_says_so(capsys):
    n = 2001
    code, out, _ = run(capsys, "compare", "-n", str(n), "--size", "1", "-s", "recompute,storeall", "--json")
    assert code == 0
    assert [r["strategy"] for r in json.loads(out)["rows"]] == ["Recompute()", "StoreAll()"]  # asked for: run

    code, out, _ = run(capsys, "compare", "-n", str(n), "--size", "1")
    assert code == 0
    assert "Recompute()" not in out.split("\n\n")[1]  # not in the table
    assert f"Recompute() skipped: {n * (n - 1) // 2 + 1} forward steps at n = {n}" in out
    assert "--strategies recompute" in out


def test_compare_table_has_every_column_and_explains_them(capsys):
    code, out, err = run(capsys, "compare", "-n", "50", "--size", "4", "-s", "storeall,binomial", "--checkpoints", "5")
    assert code == 0, err
    assert err == ""  # no progress bar when stderr is not a terminal
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("strategy"))
    for column in ("checkpoints", "forward steps", "x n", "ckpt MiB", "seconds", "max|grad - StoreAll|"):
        assert column in header
    body = {line.split()[0]: line.split() for line in lines if line.startswith(("StoreAll(", "Binomial"))}
    assert body["StoreAll()"][1:3] == ["49", "50"]
    assert body["BinomialCheckpointing(checkpoints=5)"][1:3] == ["5", str(binomial_steps(50, 5))]
    assert body["StoreAll()"][-1] == "(reference)"
    assert "checkpoint store" in out  # says what the memory column measures


def test_compare_options_choose_strategies_budgets_and_intervals(capsys):
    doc = compare_json(
        capsys,
        "-n",
        "100",
        "--size",
        "2",
        "-s",
        "SqrtCheckpointing,BINOMIAL",
        "--checkpoints",
        "3,auto",
        "--checkpoints",
        "7",
        "--interval",
        "5,auto",
    )
    names = [row["strategy"] for row in doc["rows"]]
    auto = revseq.BinomialCheckpointing().budget(100)
    assert names == [
        "SqrtCheckpointing(interval=5)",
        "SqrtCheckpointing()",
        *(
            f"BinomialCheckpointing(checkpoints={c})" if c != auto else "BinomialCheckpointing()"
            for c in sorted({3, 7, auto}, reverse=True)
        ),
    ]
    for row in doc["rows"]:
        if row["name"] == "binomial":
            assert row["forward_steps"] == binomial_steps(100, row["checkpoints"])
    assert not any(row["reference"] for row in doc["rows"])  # StoreAll ran as the reference, unlisted


def test_compare_trace_memory_sees_at_least_the_checkpoints(capsys):
    doc = compare_json(capsys, "-n", "300", "--size", "2000", "-s", "storeall,halving", "--trace-memory")
    for row in doc["rows"]:
        # tracemalloc counts numpy's buffers: the stored states are part of what it sees.
        assert row["traced_peak_mib"] >= row["peak_mib"] > 0


def test_compare_runs_a_users_recurrence(capsys, tmp_path, monkeypatch):
    (tmp_path / "cli_user_rec.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            import revseq

            tanh = revseq.Recurrence(np.tanh, lambda x: 1 - np.tanh(x) ** 2)

            def rnn():
                rng = np.random.default_rng(1)
                W = rng.normal(0, 0.4, (6, 6))
                def vjp(h, W, g):
                    d = g * (1 - np.tanh(W @ h) ** 2)
                    return W.T @ d, np.outer(d, h)
                return revseq.Recurrence(lambda h, W: np.tanh(W @ h), vjp=vjp, params=W), rng.normal(size=6)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cli_user_rec", raising=False)

    doc = compare_json(capsys, "-n", "60", "--size", "3", "--recurrence", "cli_user_rec:tanh")
    assert doc["state_bytes"] == 24
    assert "cli_user_rec:tanh" in doc["recurrence"]
    assert all(row["max_gradient_deviation"] <= 1e-12 for row in doc["rows"])

    doc = compare_json(capsys, "-n", "60", "--recurrence", f"{tmp_path / 'cli_user_rec.py'}:rnn")
    assert doc["state_bytes"] == 48  # its own x0: 6 float64
    rows = {row["strategy"]: row for row in doc["rows"]}
    assert rows["StoreAll()"]["peak_bytes"] == 59 * 48
    # the deviation covers the parameters' gradient too, and checkpointing changes no arithmetic
    assert all(row["max_gradient_deviation"] <= 1e-12 for row in doc["rows"])

    code, _, err = run(capsys, "compare", "--recurrence", "cli_user_rec:rnn", "--size", "4")
    assert code == 2
    assert "--size does not apply" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "-n", "-5"], "argument -n: must be an int >= 1, got -5"),
        (["compare", "-n", "ten"], "argument -n: must be an int >= 1, got 'ten'"),
        (["compare", "-n", "0"], "argument -n: must be an int >= 1, got 0"),
        (["compare", "--size", "0"], "argument --size: must be an int >= 1, got 0"),
        (["compare", "--checkpoints", "0"], "argument --checkpoints: must be an int >= 1, got 0 (or 'auto')"),
        (
            ["compare", "-s", "halving", "--checkpoints", "4"],
            "budgets of binomial and online, but --strategies includes",
        ),
        (["compare", "--ram", "4"], "--ram configures multistage, but --strategies does not include it"),
        (["compare", "-s", "sqrt", "--disk-dir", "."], "--disk-dir configures multistage, but --strategies does not"),
        (
            ["compare", "-s", "multistage", "--disk-dir", "no/such/dir"],
            "argument --disk-dir: must be an existing, writable directory, got 'no/such/dir' (no such directory)",
        ),
        (["compare", "-s", "multistage", "--disk-dir", __file__], "(not a directory)"),
        (["compare", "-s", "multistage", "--read-cost", "-1"], "argument --read-cost: must be a finite number >= 0"),
        (["plan", "-s", "multistage", "--ram", "-1"], "argument --ram: must be an int >= 0, got -1"),
        (["plan", "-s", "multistage", "--disk", "1.5"], "argument --disk: must be an int >= 0, got '1.5'"),
        (
            ["plan", "-s", "multistage", "--write-cost", "-0.5"],
            "argument --write-cost: must be a finite number >= 0, got -0.5",
        ),
        (
            ["plan", "-s", "multistage", "--read-cost", "inf"],
            "argument --read-cost: must be a finite number >= 0, got inf",
        ),
        (
            ["plan", "-s", "multistage", "--read-cost", "fast"],
            "argument --read-cost: must be a finite number >= 0, got 'fast'",
        ),
        (["plan", "-s", "multistage", "--step-cost", "0"], "argument --step-cost: must be a finite number > 0, got 0"),
        (
            ["plan", "-s", "multistage", "--ram", "0", "--disk", "0"],
            "argument --disk: --ram 0 and --disk 0 leave nowhere",
        ),
        (["plan", "-s", "online", "--ram", "3"], "argument --ram: applies to multistage only, not online"),
        (["plan", "--write-cost", "3"], "argument --write-cost: applies to multistage only, not binomial"),
        (["compare", "-s", "halving", "--interval", "4"], "--strategies does not include sqrt"),
        (["compare", "--recurrence", "no_such_module_xyz:f"], "cannot import 'no_such_module_xyz'"),
        (["compare", "--recurrence", "numpy"], "expected module:object"),
        (["compare", "--recurrence", "numpy:no_such_thing"], "has no attribute 'no_such_thing'"),
        (["compare", "--recurrence", "numpy:pi"], "must be a revseq.Recurrence or a callable"),
        (["compare", "--recurrence", "numpy:sin"], "wrap it: Recurrence(f, df=...)"),
        (["plan", "-n", "-1"], "argument -n: must be an int >= 1, got -1"),
        (
            ["plan", "-s", "halving", "--checkpoints", "3"],
            "argument --checkpoints: applies to binomial and online only",
        ),
        (["plot", "diagram", "-s", "sqrt", "--ram", "3"], "argument --ram: applies to multistage only, not sqrt"),
        (["plan", "-s", "binomial", "--interval", "3"], "argument --interval: applies to sqrt only"),
        (["plot", "diagram", "-n", "65"], "the diagram is drawn for n <= 64, got 65"),
        (["plot", "frontier", "-n", "1"], "the frontier needs n >= 2, got 1"),
        (["plot", "frontier", "-s", "sqrt"], "the frontier draws each strategy over its own range of budgets"),
        (["plot", "frontier", "--ram", "2"], "--ram does not apply"),
        (["plot", "-o", "x.png"], "names one file; choose diagram or frontier"),
        (["plot", "diagram", "-o", "no/such/dir/x.png"], "directory 'no/such/dir' does not exist"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_values_are_usage_errors_naming_the_option(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert out == ""


@pytest.mark.parametrize("command", ["compare", "plan", "plot"])
def test_an_unknown_strategy_lists_the_valid_names(capsys, command):
    option = "--strategies" if command == "compare" else "--strategy"
    code, _, err = run(capsys, command, option, "bisect")
    assert code == 2
    assert (
        "unknown strategy 'bisect'; choose from storeall, recompute, halving, sqrt, binomial, online, multistage" in err
    )
    assert "BinomialCheckpointing" in err
    assert "MultistageCheckpointing" in err


@pytest.mark.parametrize("name", ["online", "multistage", "OnlineCheckpointing", "MULTISTAGECHECKPOINTING"])
def test_the_new_strategies_parse_by_short_and_class_name(capsys, name):
    code, out, err = run(capsys, "plan", "-s", name, "-n", "30", "--json")
    assert code == 0, err
    assert json.loads(out)["strategy"].startswith("OnlineCheckpointing(" if "online" in name.lower() else "Multistage")


def test_help_and_version(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "compare" in out
    assert "plan" in out
    assert "plot" in out
    code, out, _ = run(capsys, "--version")
    assert (code, out.strip()) == (0, f"revseq {revseq.__version__}")
    code, out, _ = run(capsys)
    assert code == 2
    assert "usage: revseq" in out


# -- plan ---------------------------------------------------------------------------------------------


def test_plan_prints_the_predicted_cost(capsys):
    code, out, _ = run(capsys, "plan", "--strategy", "binomial", "--checkpoints", "10", "-n", "1000")
    assert code == 0
    assert "BinomialCheckpointing(checkpoints=10), n = 1000" in out
    assert "forward steps     3637" in out  # DESIGN.md's example
    assert "peak checkpoints  10" in out
    assert "proven minimum for 10 checkpoints" in out

    code, out, _ = run(capsys, "plan", "-s", "RecursiveHalving", "-n", "10000")
    assert code == 0
    assert "forward steps     64609" in out  # DESIGN.md / README
    assert f"binomial with the same 14 checkpoints makes {binomial_steps(10_000, 14)} forward steps" in out


def test_plan_json(capsys):
    code, out, _ = run(capsys, "plan", "-s", "binomial", "--checkpoints", "5", "-n", "100", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["strategy"] == "BinomialCheckpointing(checkpoints=5)"
    assert (doc["n"], doc["forward_steps"], doc["peak_checkpoints"]) == (100, 317, 5)
    assert doc["optimal_forward_steps"] == binomial_steps(100, 5)
    assert doc["bounds"]["checkpoints"] == 5
    assert "actions" not in doc


def test_plan_actions_list_a_complete_legal_schedule(capsys):
    code, out, _ = run(capsys, "plan", "-s", "binomial", "--checkpoints", "4", "-n", "60", "--actions")
    assert code == 0
    namespace = {name: getattr(revseq, name) for name in ("Advance", "Store", "Restore", "Free", "Reverse")}
    actions = [eval(line, namespace) for line in out.splitlines()]  # one action per line, as Python
    cost = revseq.simulate(actions, 60)
    assert (cost.forward_steps, cost.peak_checkpoints) == (binomial_steps(60, 4), 4)

    code, out, _ = run(capsys, "plan", "-s", "sqrt", "--interval", "3", "-n", "10", "--actions", "--json")
    assert code == 0
    doc = json.loads(out)
    rebuilt = [namespace[a.pop("action")](**a) for a in doc["actions"]]
    assert revseq.simulate(rebuilt, 10).forward_steps == doc["forward_steps"]


def plan_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    code, out, err = run(capsys, "plan", "--json", *argv)
    assert code == 0, err
    return json.loads(out)


def test_plan_multistage_plans_any_length_and_says_when_it_is_not_the_exact_optimum(capsys):
    # THEORY.md 6.1: ram 4, write 2, read 1: the exact optimum is 2389, 23989, 239989 at n = 10^3, 10^4, 10^5,
    # one period (m = 5 steps, 12 time units) more for every 5 steps: 2.4 n - 11.
    argv = ("-s", "multistage", "--ram", "4", "--write-cost", "2", "--read-cost", "1")
    small = plan_json(capsys, *argv, "-n", "1000")
    assert (small["predicted_time"], small["exact"]) == (2389, True)
    long = plan_json(capsys, *argv, "-n", "10**12")
    assert (long["predicted_time"], long["exact"]) == (2.4 * 10**12 - 11, False)
    code, out, _ = run(capsys, "plan", *argv, "-n", "10**12")
    assert code == 0
    assert "a periodic plan's, the least possible wherever that was measured" in out


@pytest.mark.parametrize(("n", "c"), [(1, 4), (6, 8), (9, 8), (40, 8), (44, 8), (100, 13)])
def test_plan_online_in_its_optimal_range_meets_the_online_bound(capsys, n, c):
    # docs/online.md: up to (c + 1)(c + 2)/2 - 1 steps, T'(n, c) = n for n <= c, 2n - c beyond.
    assert n <= (c + 1) * (c + 2) // 2 - 1
    expected = n if n <= c else 2 * n - c
    doc = plan_json(capsys, "-s", "online", "--checkpoints", str(c), "-n", str(n))
    assert doc["strategy"] == f"OnlineCheckpointing(checkpoints={c})"
    assert doc["forward_steps"] == doc["online_lower_bound"] == expected
    assert doc["optimal_forward_steps"] == binomial_steps(n, c)  # the offline optimum, n known
    assert expected - doc["optimal_forward_steps"] in (0, 1)
    assert doc["optimal_up_to"] == (c + 1) * (c + 2) // 2 - 1
    assert doc["peak_checkpoints"] <= c
    code, out, _ = run(capsys, "plan", "-s", "online", "--checkpoints", str(c), "-n", str(n))
    assert code == 0
    assert f"  online bound      {expected} forward steps, met: no online schedule with {c} checkpoints" in out
    assert f"  offline optimum   {binomial_steps(n, c)} forward steps: binomial with the same {c} checkpoints" in out


def test_plan_online_default_budget_is_the_fewest_optimal_up_to_n(capsys):
    c = fewest_optimal(1000)
    doc = plan_json(capsys, "-s", "OnlineCheckpointing", "-n", "1000")
    assert doc["strategy"] == f"OnlineCheckpointing(checkpoints={c})"
    assert doc["forward_steps"] == 2 * 1000 - c
    code, out, _ = run(capsys, "plan", "-s", "online", "-n", "1000")
    assert code == 0
    assert "OnlineCheckpointing.for_max_steps(1000)" in out


def test_plan_online_past_its_optimal_range(capsys):
    n, c = 300, 5
    code, out, _ = run(capsys, "plan", "-s", "online", "--checkpoints", str(c), "-n", str(n))
    assert code == 0
    bound, steps = online_oracles.lower_bound_dp(n, c), online_steps(n, c)
    assert steps > bound
    assert f"  forward steps     {steps}  " in out
    assert f"  online bound      {bound} forward steps: no online schedule with {c} checkpoints makes fewer" in out
    assert f"(this one makes {steps / bound:.3f}x as many; it is optimal for n <= 20 only)" in out
    assert f"  offline optimum   {binomial_steps(n, c)} forward steps" in out


MULTISTAGE = [  # n, ram, disk, step, write, read
    (30, 2, None, 1.0, 2.0, 1.0),
    (30, 1, 3, 1.0, 0.5, 0.5),
    (25, 0, 2, 1.0, 0.5, 0.5),
    (30, 3, 2, 2.0, 3.0, 0.25),
]


@pytest.mark.parametrize(("n", "ram", "disk", "step", "write", "read"), MULTISTAGE)
def test_plan_multistage_time_is_the_least_the_oracle_finds(capsys, n, ram, disk, step, write, read):
    options = ["--ram", str(ram), "--step-cost", str(step), "--write-cost", str(write), "--read-cost", str(read)]
    options += [] if disk is None else ["--disk", str(disk)]
    doc = plan_json(capsys, "-s", "multistage", "-n", str(n), *options)
    weighted = step * doc["forward_steps"] + write * doc["disk_writes"] + read * doc["disk_reads"]
    assert doc["predicted_time"] == weighted == multistage_time(n, ram, disk, step, write, read)
    assert doc["costs"] == {"step": step, "write": write, "read": read}
    assert doc["peak_checkpoints"] <= ram
    assert disk is None or doc["peak_disk"] <= disk
    assert doc["bounds"]["disk_checkpoints"] == doc["peak_disk"]
    if ram:
        alone = binomial_steps(n, ram)
        assert doc["memory_alone"] == {
            "strategy": f"BinomialCheckpointing(checkpoints={ram})",
            "forward_steps": alone,
            "time": step * alone,
        }
        assert doc["predicted_time"] <= step * alone
    else:
        assert doc["memory_alone"] is None
    assert "optimal_forward_steps" not in doc  # binomial's minimum bounds nothing that uses the disk

    code, out, _ = run(capsys, "plan", "-s", "multistage", "-n", str(n), *options)
    assert code == 0
    fs, dw, dr = doc["forward_steps"], doc["disk_writes"], doc["disk_reads"]
    assert f"= {fs} steps x {step:g} + {dw} disk writes x {write:g} + {dr} disk reads x {read:g}" in out
    assert f"{doc['peak_disk']} on disk" in out


def test_plan_multistage_extremes_and_the_published_case(capsys):
    # Free disk traffic: store every state, no recomputation at all (n forward steps, time n).
    doc = plan_json(capsys, "-s", "multistage", "--ram", "3", "--write-cost", "0", "--read-cost", "0", "-n", "200")
    assert (doc["forward_steps"], doc["predicted_time"]) == (200, 200.0)
    # No disk slot, or disk far dearer than recomputation: memory alone, binomial's minimum.
    for options in (["--disk", "0"], ["--write-cost", "1e6", "--read-cost", "1e6"]):
        doc = plan_json(capsys, "-s", "multistage", "--ram", "4", "-n", "1000", *options)
        assert doc["forward_steps"] == binomial_steps(1000, 4) == doc["predicted_time"]
        assert doc["disk_writes"] == doc["disk_reads"] == doc["peak_disk"] == 0
    # THEORY 5.1: ram=1, write=6, read=2, 9 steps cost 36 with adjoints at 1 and no call for x_9 (9 - 1 = 8 off).
    code, out, _ = run(
        capsys, "plan", "-s", "multistage", "--ram", "1", "--write-cost", "6", "--read-cost", "2", "-n", "9"
    )
    assert code == 0
    assert f"  time              {36 - 9 + 1} = " in out
    # The default memory budget is ceil(log2 n) + 1, as compare's small binomial budget.
    assert plan_json(capsys, "-s", "multistage", "-n", "1000")["strategy"] == "MultistageCheckpointing(ram=11)"


def test_plan_multistage_actions_show_disk_stores(capsys):
    argv = ["plan", "-s", "multistage", "--ram", "2", "--disk", "3", "-n", "40", "--actions"]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    namespace = {name: getattr(revseq, name) for name in ("Advance", "Store", "Restore", "Free", "Reverse")}
    assert re.search(r"^Store\(step=\d+, disk=True\)$", out, re.M)
    actions = [eval(line, namespace) for line in out.splitlines()]
    doc = plan_json(capsys, *argv[1:])
    cost = revseq.simulate(actions, 40)
    assert (cost.disk_writes, cost.disk_reads, cost.peak_disk) == (doc["disk_writes"], doc["disk_reads"], 3)
    assert sum(1 for a in actions if type(a) is revseq.Store and a.disk) == doc["disk_writes"]
    rebuilt = [namespace[a.pop("action")](**a) for a in doc["actions"]]
    assert rebuilt == actions


# -- sizes: what cannot be done is refused at once, on one line, naming the option ---------------------


def refused(capsys: pytest.CaptureFixture[str], code: int, option: str, *argv: str) -> str:
    """Run ``argv``; it must end with status ``code`` and one line on stderr naming ``option``, no traceback."""
    got, _, err = run(capsys, *argv)
    assert got == code, err
    assert len(err.splitlines()) == 1, err
    assert f"argument {option}" in err, err
    assert "Traceback" not in err
    assert err.startswith(f"revseq {argv[0]}: error: ")
    return err


def test_plan_answers_huge_n_at_once_from_the_closed_forms(capsys):
    n = 10**12
    doc = plan_json(capsys, "-s", "storeall", "-n", "10**12")
    assert (doc["n"], doc["forward_steps"], doc["peak_checkpoints"], doc["writes"]) == (n, n, n - 1, n - 1)
    doc = plan_json(capsys, "-s", "binomial", "--checkpoints", "10", "-n", "1e12")
    assert doc["forward_steps"] == doc["optimal_forward_steps"] == binomial_steps(n, 10)
    assert doc["peak_checkpoints"] == 10
    code, out, _ = run(capsys, "plan", "-s", "recompute", "-n", "10**100")  # no float or string overflows
    assert code == 0
    assert f"forward steps     {10**100 * (10**100 - 1) // 2 + 1}" in out
    code, out, _ = run(capsys, "plan", "-s", "storeall", "-n", str(n))
    assert code == 0
    assert f"StoreAll(), n = {n}: predicted in closed form from its schedule (nothing is run)" in out
    code, out, _ = run(capsys, "plan", "-s", "storeall", "-n", str(n), "--actions")
    assert (code, out.splitlines()) == (
        0,
        ["Store(step=0)", f"Advance(start=0, stop={n - 1}, keep=True)", f"Reverse(start=0, stop={n})"],
    )


def test_plan_multistage_costs_at_the_ends_of_the_float_range(capsys):
    base = plan_json(capsys, "-s", "multistage", "--ram", "3", "-n", "100")
    huge = ["--step-cost", "1e300", "--write-cost", "2e300", "--read-cost", "1e300"]
    doc = plan_json(capsys, "-s", "multistage", "--ram", "3", "-n", "100", *huge)
    assert [doc[k] for k in ("forward_steps", "disk_writes", "disk_reads")] == [
        base[k] for k in ("forward_steps", "disk_writes", "disk_reads")
    ]
    assert doc["predicted_time"] == pytest.approx(1e300 * base["predicted_time"], rel=1e-12)
    code, out, err = run(capsys, "plan", "-s", "multistage", "--ram", "3", "-n", "100", *huge)
    assert (code, err) == (0, "")
    assert f"  time              {1e300 * base['predicted_time']:.6g} = " in out
    # Past the largest float: the time is inf, and said so, not a crash.
    tiny_step = ["--step-cost", "5e-324", "--write-cost", "1.7e308", "--read-cost", "1.7e308", "--ram", "0"]
    code, out, err = run(capsys, "plan", "-s", "multistage", "-n", "100", *tiny_step)
    assert (code, err) == (0, "")
    assert "  time              inf = " in out


def test_plan_json_actions_stream_what_a_list_would_give(capsys):
    doc = plan_json(capsys, "-s", "halving", "-n", "9", "--actions")
    assert [a["action"] for a in doc["actions"]][:3] == ["Store", "Advance", "Store"]
    out = run(capsys, "plan", "-s", "halving", "-n", "9", "--actions", "--json")[1]
    expected = {k: v for k, v in doc.items() if k != "actions"}
    expected["actions"] = [revseq.cli._action_json(a) for a in revseq.RecursiveHalving().schedule(9)]
    assert out == json.dumps(expected, indent=2) + "\n"  # byte for byte what json.dump of the whole list prints
    doc = plan_json(capsys, "-s", "storeall", "-n", "10**12", "--actions")  # no list of 10**12 entries either
    assert len(doc["actions"]) == 3


@pytest.mark.parametrize("text", ["1000000", "1_000_000", "1e6", "1E6", "10**6", "10^6"])
def test_counts_may_be_written_as_powers(capsys, text):
    assert plan_json(capsys, "-s", "storeall", "-n", text)["n"] == 10**6


@pytest.mark.parametrize(
    ("argv", "option", "message"),
    [
        (["plan", "-s", "online", "--checkpoints", "3", "-n", "10**12"], "-n", "n must be <= 10000000 for Online"),
        (["plot", "diagram", "-n", "10**12"], "-n", "the diagram is drawn for n <= 64, got 1000000000000"),
        (["plot", "frontier", "-n", "10**12"], "-n", "the frontier is drawn for n <= 100000"),
        (["plot", "frontier", "-n", "100001"], "-n", "got 100001"),
        (["compare", "--size", "10**12", "-n", "10"], "--size", "too large to run here: x_0, the live state"),
    ],
)
def test_what_cannot_be_done_is_refused_on_one_line(capsys, argv, option, message):
    assert message in refused(capsys, 2, option, *argv)


def test_compare_refuses_what_cannot_fit_in_memory_before_running(capsys, monkeypatch):
    ran = []
    monkeypatch.setattr(revseq.cli, "backprop", lambda *a, **k: ran.append(a))
    err = refused(capsys, 2, "-n", "compare", "-n", "10**11")
    assert "StoreAll() (run as the gradient reference) for n = 100000000000 holds 99999999999 checkpoints" in err
    assert "more than this machine's" in err
    assert ran == []
    # Fits in memory (10**5 states of 8 bytes), but at a millisecond a step it would take over a minute.
    monkeypatch.setattr(revseq._limits, "time_per_call", lambda *a, **k: 1e-3)
    err = refused(capsys, 2, "-n", "compare", "-n", "10**5", "--size", "1", "--max-seconds", "60")
    assert "compare would run for at least" in err
    assert "over the limit of 1.0 min (--max-seconds)" in err
    assert ran == []


def test_compare_times_f_and_runs_what_fits_its_time(capsys, monkeypatch):
    monkeypatch.setattr(revseq._limits, "time_per_call", lambda *a, **k: 1e-3)
    # StoreAll 40 steps, Recompute 40 * 39 / 2 + 1 = 781: 821 ms predicted at a millisecond a step.
    argv = ["compare", "-n", "40", "--size", "2", "-s", "storeall,recompute", "--json"]
    err = refused(capsys, 2, "-n", *argv, "--max-seconds", "0.82")
    assert "(821 forward steps over 2 runs, at 1.0 ms per call of f timed on x_0)" in err
    assert run(capsys, *argv, "--max-seconds", "0.83")[0] == 0


def test_compare_times_three_calls_of_f(monkeypatch):
    calls = []
    rec = revseq.Recurrence(lambda x: calls.append(1) or np.sin(x), np.cos)
    assert revseq._limits.time_per_call(rec.step_at(), np.zeros(3), 0) >= 0
    assert len(calls) == TIMING_CALLS


def test_plot_output_that_cannot_be_written(capsys, monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    refused(capsys, 2, "-o/--output", "plot", "diagram", "-o", str(tmp_path))  # a directory
    (tmp_path / "file").write_text("")
    refused(capsys, 2, "-o/--output", "plot", "diagram", "-o", str(tmp_path / "file" / "x.png"))  # under a file
    err = refused(capsys, 2, "-o/--output", "plot", "diagram", "-o", str(tmp_path / "x.nosuchformat"))
    assert "Format 'nosuchformat' is not supported" in err

    def full(fig, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("revseq.plot.save", full)
    err = refused(capsys, 1, "-o/--output", "plot", "diagram", "-o", str(tmp_path / "x.png"))
    assert f"cannot write {str(tmp_path / 'x.png')!r}: No space left on device" in err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_plot_into_a_directory_without_write_permission(capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        err = refused(capsys, 2, "-o/--output", "plot", "diagram", "-o", str(locked / "x.png"))
        assert "is not writable" in err
    finally:
        locked.chmod(0o700)


BROKEN = """
import numpy as np
import revseq

def f(x):
    raise ZeroDivisionError("the step failed")

rec = revseq.Recurrence(f, np.cos)

def make():
    raise ValueError("cannot build it")
"""


def test_a_bad_recurrence_is_one_line_not_a_traceback(capsys, monkeypatch, tmp_path):
    (tmp_path / "cli_broken.py").write_text(BROKEN)
    (tmp_path / "cli_syntax.py").write_text("def f(x:\n")
    (tmp_path / "cli_raises.py").write_text("raise RuntimeError('no data here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("cli_broken", "cli_syntax", "cli_raises"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    err = refused(capsys, 2, "--recurrence", "compare", "--recurrence", str(tmp_path / "cli_syntax.py") + ":f")
    assert "SyntaxError" in err
    assert "cli_syntax.py:1" in err
    err = refused(capsys, 2, "--recurrence", "compare", "--recurrence", "cli_raises:f")
    assert "importing 'cli_raises' raised RuntimeError: no data here (cli_raises.py:1, in <module>)" in err
    err = refused(capsys, 2, "--recurrence", "compare", "--recurrence", "cli_broken:make", "-n", "5")
    assert "calling cli_broken:make() raised ValueError: cannot build it (cli_broken.py:" in err
    # The step itself failing is not a usage error: status 1, one line saying what and where.
    code, _, err = run(capsys, "compare", "--recurrence", "cli_broken:rec", "-n", "5")
    assert code == 1
    assert len(err.splitlines()) == 1
    assert "ZeroDivisionError: the step failed (raised at cli_broken.py:6, in f)" in err
    assert "--traceback" in err
    with pytest.raises(ZeroDivisionError, match="the step failed"):
        main(["compare", "--recurrence", "cli_broken:rec", "-n", "5", "--traceback"])


def test_an_unforeseen_error_is_one_line(capsys, monkeypatch):
    def boom(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(revseq.cli, "_plan", boom)
    code, _, err = run(capsys, "plan")
    assert code == 1
    assert len(err.splitlines()) == 1
    assert err.startswith("revseq plan: error: MemoryError (raised at test_cli.py:")
    assert "(out of memory)" in err


# -- plot without matplotlib, progress, entry points --------------------------------------------------


def test_plot_without_matplotlib_says_how_to_install_it(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    monkeypatch.chdir(tmp_path)
    code, _out, err = run(capsys, "plot")
    assert code == 1
    assert "matplotlib is needed for plots: pip install 'revseq[plot]'" in err
    assert list(tmp_path.iterdir()) == []


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_and_the_same_counts(capsys, monkeypatch):
    pytest.importorskip("tqdm")
    argv = ["compare", "-n", "300", "--size", "4", "-s", "storeall,binomial", "--checkpoints", "6", "--json"]
    quiet = json.loads(run(capsys, *argv)[1])
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert "BinomialCheckpointing(checkpoints=6)" in terminal.getvalue()  # the bar names the run
    assert "step" in terminal.getvalue()
    shown = json.loads(out)
    for a, b in zip(quiet["rows"], shown["rows"], strict=True):
        assert (a["forward_steps"], a["checkpoints"]) == (b["forward_steps"], b["checkpoints"])

    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert run(capsys, *argv, "--no-progress")[0] == 0
    assert terminal.getvalue() == ""


def test_python_dash_m_revseq():
    result = subprocess.run(
        [sys.executable, "-m", "revseq", "plan", "-n", "100", "--checkpoints", "5", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["forward_steps"] == 317


def test_the_builtin_recurrence_is_the_gist():
    from revseq import _builtin

    work = _builtin.builtin(5, seed=3)
    x = work.x0
    for _ in range(4):
        x = work.recurrence.f(x)
    np.testing.assert_array_equal(x, np.sin(np.sin(np.sin(np.sin(work.x0)))))
    assert work.x0.shape == (5,)
    assert np.all(np.abs(work.x0) <= 1)


def documented_runs(command: str) -> list:
    """The `$ revseq <command> ...` examples in docs/cli.md, with the output pasted under each."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    runs = []
    for block in re.findall(r"```console\n(.*?)```", text, re.S):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            line, _, output = chunk.partition("\n")
            argv = shlex.split(line.split("  #")[0])
            if argv[:2] == ["revseq", command]:
                runs.append(pytest.param(argv[1:], output, id=" ".join(argv[1:])))
    return runs


@pytest.mark.parametrize(("argv", "output"), documented_runs("plan"))
def test_docs_plan_examples_print_what_the_docs_show(capsys, argv, output):
    code, out, err = run(capsys, *argv)
    if output.startswith("..."):  # an error, its usage lines left out: the message is the last line
        assert code == 2
        assert err.splitlines()[-1] == output.splitlines()[-1]
    else:
        assert code == 0
        assert out == output


def test_docs_have_plan_examples():
    assert len(documented_runs("plan")) >= 5


CHEAP = ("compare --strategies binomial,online,multistage -n 2000", "compare -n 1000 --size 100")


def without_seconds(text: str) -> list[list[str]]:
    """The output's lines as words, less the seconds (a table row's next-to-last word, 0.123): they vary."""
    lines = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and re.fullmatch(r"\d+\.\d{3}", words[-2]):
            del words[-2]
        lines.append(words)
    return lines


@pytest.mark.parametrize(("argv", "output"), [run for run in documented_runs("compare") if run.id in CHEAP])
def test_docs_compare_examples_print_what_the_docs_show(capsys, monkeypatch, argv, output):
    monkeypatch.setattr(tempfile, "tempdir", "/tmp")  # where the docs' multistage note says its files went
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert without_seconds(out) == without_seconds(output)


def test_docs_have_the_cheap_compare_examples():
    assert {run.id for run in documented_runs("compare")} >= set(CHEAP)


# -- compare --compress ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("codec", "lossless"), [("blosc", True), ("zfp:1e-6", False)])
def test_compare_with_compressed_checkpoints_reports_the_ratio_and_the_gradient_error(capsys, codec, lossless):
    pytest.importorskip("numcodecs")
    doc = compare_json(capsys, "-n", "300", "--size", "2048", "-s", "binomial,sqrt", "--compress", codec,
                       "--no-progress")  # fmt: skip
    rows = [r for r in doc["rows"] if not r["reference"]]
    assert rows
    for row in rows:
        assert row["compression_ratio"] is not None
        if lossless:
            assert row["max_gradient_deviation"] == 0.0  # what comes back is what went in
        else:
            # sin's states lie in [-1, 1]: ZFP holds each value within 1e-6, and the gradient's error is
            # of that order (an exact gradient would mean the checkpoints were not compressed at all).
            assert 0.0 < row["max_gradient_deviation"] < 1e-3
            assert row["compression_ratio"] > 1.5
    assert doc["compress"] == ("blosc" if lossless else "zfp (tolerance 1e-06)")
    plain = compare_json(capsys, "-n", "300", "--size", "2048", "-s", "binomial,sqrt", "--no-progress")
    assert all(r["compression_ratio"] is None for r in plain["rows"])


def test_compare_refuses_an_unknown_codec(capsys):
    pytest.importorskip("numcodecs")
    code, _, err = run(capsys, "compare", "--compress", "zfp:-1")
    assert code == 2
    assert "expected blosc, zstd, lz4 or zfp:TOL with a tolerance TOL > 0, got 'zfp:-1'" in err


def test_compare_says_which_extra_compression_needs(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "numcodecs", None)  # as if it were not installed
    code, _, err = run(capsys, "compare", "--compress", "blosc")
    assert code == 2
    assert "pip install 'revseq[compress]'" in err


# -- compare --auto ---------------------------------------------------------------------------------------


def test_compare_runs_what_choose_picks_and_says_why(capsys, tmp_path):
    doc = compare_json(capsys, "-n", "400", "--size", "500", "-s", "sqrt", "--auto", str(4000 * 8),
                       "--disk-dir", str(tmp_path), "--no-progress")  # fmt: skip
    auto = doc["auto"]
    assert auto["max_bytes"] == 32000
    names = {c["strategy"].split("(")[0] for c in auto["candidates"]}
    assert names == {"BinomialCheckpointing", "MultistageCheckpointing"}  # 8 states of 4000 bytes, and a disk
    assert auto["picked"] == auto["candidates"][0]["strategy"]
    assert [c["predicted_seconds"] for c in auto["candidates"]] == sorted(
        c["predicted_seconds"] for c in auto["candidates"]
    )
    rows = {r["strategy"]: r for r in doc["rows"]}
    assert auto["picked"] in rows  # run beside the others
    assert rows[auto["picked"]]["forward_steps"] == auto["candidates"][0]["forward_steps"]
    assert rows[auto["picked"]]["max_gradient_deviation"] == 0.0
    assert any(note.startswith("auto (--auto 32000 bytes): revseq.choose picked") for note in doc["notes"])
    assert os.listdir(tmp_path) == []


def test_compare_auto_without_room_for_a_state_is_refused(capsys):
    code, _, err = run(capsys, "compare", "-n", "10", "--size", "100", "--auto", "10")
    assert code == 2
    assert "--auto: max_bytes=10 holds no state of 800 bytes" in err
