"""revseq.benchmarking: a user's strategy against the built-ins under the real pytest-benchmark (issue 14).

A user's test file is run by pytest in a subprocess, timed (a few rounds)
and with ``--benchmark-disable``. What ``run`` records in ``extra_info`` is
checked against calls of f counted from outside, a store that measures
itself, closed-form step counts written out here, and the simulator's
``cost(n)``; what a user gets wrong is refused naming the parameter.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import every_other
import numpy as np
import pytest

import revseq
from revseq.benchmarking import BUILTINS, describe, parametrize, run, strategies
from revseq.errors import ParameterError

pytest.importorskip("pytest_benchmark")

N = 60
SIZE = 5

STRATEGY_MODULE = every_other.SOURCE

# The user's one short test file, plus what this test checks from outside: calls of f and a measuring store.
USER_TEST = textwrap.dedent(
    """
    import numpy as np
    import revseq
    from revseq.benchmarking import parametrize, run

    from bench_user_strategy import EveryOther

    N, SIZE = {n}, {size}
    CALLS = [0]


    def step(x):
        CALLS[0] += 1
        return np.tanh(1.5 * x)


    REC = revseq.Recurrence(step, df=lambda x: 1.5 / np.cosh(1.5 * x) ** 2)
    X0 = np.linspace(-1.0, 1.0, SIZE)


    class Measuring(revseq.MemoryStore):
        '''Counts its own peak, states and bytes, whatever the engine says.'''

        def __init__(self):
            super().__init__()
            self.peak = self.peak_bytes = 0

        def put(self, key, state):
            super().put(key, state)
            self.peak = max(self.peak, len(self))
            self.peak_bytes = max(self.peak_bytes, len(self) * np.asarray(state).nbytes)


    @parametrize(EveryOther(), n=N)
    def test_backprop(benchmark, strategy):
        store = Measuring()
        CALLS[0] = 0
        result = run(benchmark, REC, X0, N, strategy, rounds={rounds}, store=store)
        info = benchmark.extra_info
        rounds = 1 if benchmark.disabled else {rounds}
        assert CALLS[0] == rounds * info["forward_steps"]
        assert (info["peak_checkpoints"], info["peak_bytes"]) == (store.peak, store.peak_bytes)
        assert info["forward_steps"] == result.stats.forward_steps
        assert benchmark.group == "n=" + str(N)
        reference = revseq.backprop(REC, X0, N, revseq.StoreAll())
        np.testing.assert_allclose(result.gradient, reference.gradient, rtol=1e-12)
    """
)


def every_other_steps(n: int) -> int:
    """By hand: the sweep to the last even start, one step into every pair, and x_n's call."""
    return (n - 1) // 2 * 2 + n // 2 + 1


def binomial_steps(n: int, c: int) -> int:
    r = 0
    while math.comb(c + r, c) < n:
        r += 1
    return r * n - math.comb(c + r, r - 1) + 1 if r else 1


def sqrt_steps(n: int) -> int:
    k = math.isqrt(n - 1) + 1
    m = -(-n // k)
    return n + (n - (n - (m - 1) * k)) - (m - 1)


def bisection_steps(n: int) -> int:
    return 1 + sum(bin(k).count("1") for k in range(n))


FAST_JSON = textwrap.dedent(
    """
    # --benchmark-json describes the machine (py-cpuinfo: seconds) and the git commit; not needed here.
    def pytest_benchmark_generate_machine_info(config):
        return {"node": "test"}


    def pytest_benchmark_generate_commit_info(config):
        return {"id": None}
    """
)


def pytest_run(tmp_path, *options: str) -> subprocess.CompletedProcess[str]:
    """Run the user's test file with pytest-benchmark in a fresh process, outside this repository's config."""
    (tmp_path / "bench_user_strategy.py").write_text(STRATEGY_MODULE)
    (tmp_path / "test_user.py").write_text(USER_TEST.format(n=N, size=SIZE, rounds=2))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not the repository's addopts
    (tmp_path / "conftest.py").write_text(FAST_JSON)
    # Only pytest-benchmark among the installed plugins: jaxtyping's alone would import jax (seconds).
    # And none of this run's pytest variables (pytest -n sets PYTEST_XDIST_WORKER, which the inner run would
    # take as being a worker of its own and write no JSON).
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "pytest_benchmark.plugin", "-p", "no:cacheprovider", *options]
    return subprocess.run([*argv, "test_user.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_users_benchmark_file_records_the_counts_next_to_the_times(tmp_path):
    done = pytest_run(tmp_path, "--benchmark-json=out.json", "--benchmark-warmup=off")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 passed" in done.stdout
    doc = json.loads((tmp_path / "out.json").read_text())
    rows = {bench["param"]: bench for bench in doc["benchmarks"]}
    default_c = revseq.BinomialCheckpointing().budget(N)
    mine = N // 2  # EveryOther's peak: x_0, x_2, ..., x_58
    expected_steps = {
        "StoreAll()": N,
        "SqrtCheckpointing()": sqrt_steps(N),
        "BinomialCheckpointing()": binomial_steps(N, default_c),
        "RecursiveHalving()": bisection_steps(N),
        f"BinomialCheckpointing(checkpoints={mine})": binomial_steps(N, mine),  # the optimum in its memory
        "EveryOther()": every_other_steps(N),
    }
    assert list(rows) == list(expected_steps)  # the built-ins, then binomial in the user's memory, then theirs
    for param, bench in rows.items():
        info = bench["extra_info"]
        assert bench["name"] == f"test_backprop[{param}]"
        assert bench["group"] == f"n={N}"
        assert bench["stats"]["rounds"] == 2  # timed, not disabled
        assert info["strategy"] == param
        assert info["n"] == N
        assert info["forward_steps"] == expected_steps[param]
        assert info["recompute_factor"] == expected_steps[param] / N
    assert rows["StoreAll()"]["extra_info"]["peak_checkpoints"] == N - 1
    assert rows["EveryOther()"]["extra_info"]["peak_checkpoints"] == mine
    assert rows["EveryOther()"]["extra_info"]["peak_bytes"] == mine * SIZE * 8
    # The simulator agrees with every measured count, writes and reads included.
    namespace: dict[str, object] = {}
    exec(STRATEGY_MODULE, namespace)  # the user's strategy, in this process
    for strategy in strategies(namespace["EveryOther"](), n=N):  # type: ignore[operator]
        cost = strategy.cost(N)
        info = rows[describe(strategy)]["extra_info"]
        assert (info["forward_steps"], info["peak_checkpoints"], info["writes"], info["reads"]) == (
            cost.forward_steps,
            cost.peak_checkpoints,
            cost.writes,
            cost.reads,
        )


def guide_blocks() -> tuple[str, str]:
    """docs/guide.md's EveryKth (section 8, without its contract check) and its benchmark file, n made small."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "guide.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    strategy = next(b for b in blocks if "class EveryKth" in b)
    strategy = "\n".join(line for line in strategy.splitlines() if not line.startswith("revseq.testing"))
    bench = next(b for b in blocks if "revseq.benchmarking" in b)
    assert "N = 2000\n" in bench
    return strategy, bench.replace("N = 2000\n", "N = 200\n")


def test_the_same_file_and_the_guides_run_once_each_under_benchmark_disable(tmp_path):
    strategy, bench = guide_blocks()
    (tmp_path / "my_strategies.py").write_text(strategy)
    (tmp_path / "test_guide.py").write_text(bench)
    done = pytest_run(tmp_path, "--benchmark-disable", "test_guide.py")
    assert done.returncode == 0, done.stdout + done.stderr
    # Each of the user's asserted its counts against its calls, made once; the guide's six ran.
    assert "12 passed" in done.stdout


# -- in this process: what the helpers build, and what they refuse -----------------------------------


class Unnamed(revseq.ReversalStrategy):
    def actions(self, n):
        yield revseq.Store(0)
        if n > 1:
            yield revseq.Advance(0, n - 1, keep=True)
        yield revseq.Reverse(0, n)


class Named(Unnamed):
    def __repr__(self) -> str:
        return "Named(k=3)"


def test_describe_writes_a_strategy_as_it_would_be_written():
    assert describe(revseq.BinomialCheckpointing(checkpoints=7)) == "BinomialCheckpointing(checkpoints=7)"
    assert describe(revseq.MultistageCheckpointing(ram=2)) == "MultistageCheckpointing(ram=2)"
    assert describe(Unnamed()) == "Unnamed"  # not `<...Unnamed object at 0x...>`
    assert describe(Named()) == "Named(k=3)"


def test_strategies_lists_the_builtins_then_yours():
    mine = Unnamed()
    assert strategies(mine) == [*BUILTINS, mine]
    # With n: binomial in the same memory, once, even when it is already there or is yours.
    binomial = revseq.BinomialCheckpointing(checkpoints=N - 1)
    assert strategies(mine, binomial, n=N, builtins=[revseq.StoreAll()]) == [revseq.StoreAll(), binomial, mine]
    # A strategy that uses the disk has no binomial twin: its memory is not all it holds.
    disk = revseq.MultistageCheckpointing(ram=2, disk=4)
    assert strategies(disk, n=N, builtins=()) == [disk]


def test_parametrize_gives_readable_ids():
    mark = parametrize(Named(), builtins=[revseq.StoreAll(), revseq.SqrtCheckpointing(interval=3)], argname="s")
    assert mark.name == "parametrize"
    assert mark.args[0] == "s"
    assert mark.kwargs["ids"] == ["StoreAll()", "SqrtCheckpointing(interval=3)", "Named(k=3)"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: strategies(3), "strategy must be a ReversalStrategy, got 3 (int)"),
        (lambda: strategies(Unnamed), "got the class Unnamed; did you mean Unnamed()?"),
        (lambda: strategies(builtins=[revseq.StoreAll(), "binomial"]), "builtins must hold ReversalStrategy"),
        (lambda: run(object(), None, 0.0, 3, revseq.StoreAll()), "benchmark must be pytest-benchmark's benchmark"),
    ],
)
def test_bad_arguments_are_refused_naming_them(call, message):
    with pytest.raises(ParameterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


class FakeBenchmark:
    """Stands in for the fixture only where the arguments are refused before anything is timed."""

    group = None
    extra_info: dict[str, object] = {}  # noqa: RUF012

    def __call__(self, fn):  # pragma: no cover - never reached
        raise AssertionError("timed a refused run")

    pedantic = __call__


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rounds": 0}, "rounds must be None or an int >= 1, got 0"),
        ({"rounds": True}, "rounds must be None or an int >= 1, got True"),
        ({"rounds": 2, "warmup_rounds": -1}, "warmup_rounds must be an int >= 0, got -1"),
    ],
)
def test_run_refuses_bad_rounds(kwargs, message):
    rec = revseq.Recurrence(np.sin, df=np.cos)
    with pytest.raises(ParameterError, match=message):
        run(FakeBenchmark(), rec, np.zeros(2), 3, revseq.StoreAll(), **kwargs)
