"""The `revseq` command: arguments, errors, JSON, and that its numbers match independent formulas.

Every count the command prints is checked against a closed form written out
here (not revseq's own), and the memory column against states x bytes.
"""

from __future__ import annotations

import io
import json
import math
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import revseq
from revseq.cli import main

N = 200  # small enough that every strategy, Recompute included, runs in well under a second


def binomial_steps(n: int, c: int) -> int:
    """Griewank & Walther's minimum, in revseq's counting (DESIGN.md)."""
    r = 0
    while math.comb(c + r, c) < n:
        r += 1
    return r * n - math.comb(c + r, r - 1) + 1 if r else 1


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
        "RecursiveHalving()": ((N - 1).bit_length(), 1 + sum(bin(i).count("1") for i in range(N))),
        "Recompute()": (1, N * (N - 1) // 2 + 1),
    }
    assert list(rows) == list(expected)  # all of them, in the documented order
    for name, (checkpoints, steps) in expected.items():
        row = rows[name]
        assert (row["checkpoints"], row["forward_steps"]) == (checkpoints, steps), name
        assert row["recompute_factor"] == pytest.approx(steps / N)
        assert row["peak_bytes"] == checkpoints * 8 * 8  # states of 8 float64
        assert row["peak_mib"] == pytest.approx(row["peak_bytes"] / 2**20)
        assert row["seconds"] >= 0
        assert row["max_gradient_deviation"] <= 1e-12
        assert row["reference"] is (name == "StoreAll()")
    assert doc["n"] == N
    assert doc["state_bytes"] == 64
    assert doc["skipped"] == []


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
        (["compare", "-s", "halving", "--checkpoints", "4"], "--strategies does not include binomial"),
        (["compare", "-s", "halving", "--interval", "4"], "--strategies does not include sqrt"),
        (["compare", "--recurrence", "no_such_module_xyz:f"], "cannot import 'no_such_module_xyz'"),
        (["compare", "--recurrence", "numpy"], "expected module:object"),
        (["compare", "--recurrence", "numpy:no_such_thing"], "has no attribute 'no_such_thing'"),
        (["compare", "--recurrence", "numpy:pi"], "must be a revseq.Recurrence or a callable"),
        (["compare", "--recurrence", "numpy:sin"], "wrap it: Recurrence(f, df=...)"),
        (["plan", "-n", "-1"], "argument -n: must be an int >= 1, got -1"),
        (["plan", "-s", "halving", "--checkpoints", "3"], "argument --checkpoints: applies to binomial only"),
        (["plan", "-s", "binomial", "--interval", "3"], "argument --interval: applies to sqrt only"),
        (["plot", "diagram", "-n", "65"], "the diagram is drawn for n <= 64, got 65"),
        (["plot", "frontier", "-n", "1"], "the frontier needs n >= 2, got 1"),
        (["plot", "frontier", "-s", "sqrt"], "the frontier shows every strategy"),
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
    assert "unknown strategy 'bisect'; choose from storeall, recompute, halving, sqrt, binomial" in err
    assert "BinomialCheckpointing" in err


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
