"""revseq.jax's compiled loops beside lax.scan, jax.checkpoint and equinox's checkpointed loops, in one process.

The problem and the measuring functions are in ``jax_compiled.py`` (which,
run as a script, prints every table of docs/benchmarks.md section 6); here
each measurement is a pytest-benchmark benchmark with its assertions:

1. the float64 gradients of revseq.jax.scan equal lax.scan's and equinox's;
2. the bytes XLA allocates for one ``jax.jit(jax.grad)`` at n = 10^4
   (``memory_analysis()``), and the goal: revseq's temporary bytes at or
   below equinox's at the same budget c;
3. body calls, counted from outside by a ``jax.debug.callback`` in the
   step: revseq's equal Griewank and Walther's closed form plus n (computed
   here, independently of revseq) and are at most equinox's; CPU time per
   gradient against equinox and lax.scan in interleaved rounds (ratios go
   into ``extra_info`` and the end-of-run table, never asserted; the time
   pytest-benchmark records is that of the whole batch of rounds);
4. the while loop at THEORY.md's Table O1 points: revseq's body calls equal
   ``OnlineCheckpointing(c).cost(n).forward_steps + n``, equal ``n + T'(n,
   c)`` (a dynamic programme here) up to (c+1)(c+2)/2 - 1 steps, and are at
   most equinox's everywhere, strictly fewer beyond; equinox's own counts
   equal Table O1's column, which checks the counting;
5. lowering and compiling against n, the xs an argument of the jitted
   function: times and program sizes, recorded.

Nothing asserts a time. ``pip install -e ".[bench]"`` brings equinox (and JAX with it).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("equinox")

import jax_compiled as jc  # noqa: E402  (needs jax)

import revseq  # noqa: E402


@pytest.fixture(autouse=True)
def _versions(benchmark):
    """The versions and the revseq source measured (the adapter's files may differ from the commit)."""
    benchmark.extra_info["versions"] = jc.versions()


def record_ratios(benchmark: Any, timings: Any, rounds: jc.Rounds, label: str, pairs: list[tuple[str, str]]) -> None:
    for name, baseline in pairs:
        for clock in ("cpu", "wall"):
            s = jc.summary(rounds.ratios(name, baseline, clock))
            key = f"{name}/{baseline}_{clock}"
            benchmark.extra_info[key] = {k: round(v, 3) for k, v in s.items()}
            if clock == "cpu":
                timings.add(f"{label}: {name}", f"{baseline}, CPU, median of {len(rounds.cpu[name])}", s["median"])
                print(f"\n{label}: {name}/{baseline} CPU median {s['median']:.3f}, quartiles {s['q1']:.3f} .. "
                      f"{s['q3']:.3f}, range {s['min']:.3f} .. {s['max']:.3f}")  # fmt: skip
    for name, times in rounds.cpu.items():
        benchmark.extra_info[f"{name}_cpu_median_s"] = round(statistics.median(times), 4)


# ---------------------------------------------------------------- 1. gradients


@pytest.mark.parametrize(("n", "c"), [(1, 3), (50, 5)])
def test_gradients_agree(benchmark, n, c):
    differences = benchmark.pedantic(jc.gradient_differences, args=(n, c), rounds=1, iterations=1)
    benchmark.extra_info.update(differences)
    assert differences["lax.scan"] < 1e-12
    assert differences["equinox"] < 1e-12


STRATEGIES = [
    revseq.StoreAll(),
    revseq.Recompute(),
    revseq.RecursiveHalving(),
    revseq.SqrtCheckpointing(),
    revseq.BinomialCheckpointing(),
    revseq.BinomialCheckpointing(checkpoints=3),
    revseq.OnlineCheckpointing(checkpoints=3),  # runs as a host-compiled program
]


@pytest.mark.parametrize("n", [1, 2, 3, 17, 1000])
@pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
def test_every_strategy_gives_lax_scans_gradient(benchmark, strategy, n):
    difference = benchmark.pedantic(jc.strategy_gradient_difference, args=(strategy, n), rounds=1, iterations=1)
    benchmark.extra_info["relative_difference"] = difference
    assert difference < 1e-12


# ---------------------------------------------------------------- 2. memory

STATE = jc.BATCH * jc.WIDTH * 4
PARAMS_BYTES = 4 * (jc.WIDTH * jc.WIDTH + jc.INPUTS * jc.WIDTH + jc.WIDTH)
XS_BYTES = 4 * jc.N_MEMORY * jc.BATCH * jc.INPUTS


def check_memory(benchmark: Any, method: jc.Method) -> jc.Memory:
    m = benchmark.pedantic(jc.memory, args=(method,), rounds=1, iterations=1)
    benchmark.extra_info.update({
        "method": method.name, "temp_bytes": m.temp, "argument_bytes": m.argument, "output_bytes": m.output,
        "temp_states": round(m.temp / STATE, 1),
    })  # fmt: skip
    # The arguments are the parameters, h0 and the xs; the output is the parameters' gradient.
    assert m.argument == PARAMS_BYTES + STATE + XS_BYTES
    assert m.output == PARAMS_BYTES + 8 * 3  # XLA adds the output tuple's table: a pointer per leaf
    return m


@pytest.mark.parametrize("method", [jc.LAX, jc.REMAT, jc.SQRT], ids=lambda m: m.kind)
def test_memory_baselines(benchmark, method):
    m = check_memory(benchmark, method)
    if method.kind in ("lax", "remat"):
        assert m.temp >= jc.N_MEMORY * STATE  # at least one state per step


@pytest.mark.parametrize("c", jc.BUDGETS)
def test_memory_at_equal_budget(benchmark, c):
    """The goal: revseq's temporary bytes at or below equinox's for the same c."""
    theirs = jc.memory(jc.equinox(c))
    m = check_memory(benchmark, jc.ours(c))
    benchmark.extra_info["equinox_temp_bytes"] = theirs.temp
    benchmark.extra_info["temp_over_equinox"] = round(m.temp / theirs.temp, 3)
    print(f"\nc={c}: temp revseq {m.temp / 1e6:.2f} MB, equinox {theirs.temp / 1e6:.2f} MB")
    assert m.temp <= theirs.temp


# ---------------------------------------------------------------- 3. body calls and time

CALL_CASES = [pytest.param(n, c, id=f"n=1e{round(math.log10(n))},c={c}") for n in (10**3, 10**4) for c in (20, 100)]


@pytest.mark.parametrize(("n", "c"), CALL_CASES)
def test_body_calls(benchmark, n, c):
    ours = benchmark.pedantic(jc.body_calls, args=(jc.ours(c), n), rounds=1, iterations=1)
    theirs = jc.body_calls(jc.equinox(c), n)
    benchmark.extra_info.update({"revseq_calls": ours, "equinox_calls": theirs})
    assert ours == jc.binomial_calls(n, c)
    assert ours == jc.revseq_calls(n, c)
    assert ours <= theirs


def test_body_calls_baselines(benchmark):
    n = 1000
    assert benchmark.pedantic(jc.body_calls, args=(jc.LAX, n), rounds=1, iterations=1) == n
    assert jc.body_calls(jc.REMAT, n) == 2 * n


TIME_CASES = [
    pytest.param(n, c, rounds, budget, id=f"n=1e{round(math.log10(n))},c={c}") for n, c, rounds, budget in jc.TIME_CASES
]


@pytest.mark.parametrize(("n", "c", "rounds", "budget"), TIME_CASES)
def test_gradient_time(benchmark, timings, n, c, rounds, budget):
    fns = jc.gradient_fns(n, c)
    result = benchmark.pedantic(jc.interleave, args=(fns, rounds, budget), rounds=1, iterations=1)
    calls = {"revseq": jc.revseq_calls(n, c), "lax": n}
    for name, count in calls.items():
        benchmark.extra_info[f"{name}_cpu_us_per_body_call"] = round(statistics.median(result.cpu[name]) / count * 1e6)
    record_ratios(benchmark, timings, result, f"grad, n={n}, c={c}", [("revseq", "equinox"), ("revseq", "lax")])


# ---------------------------------------------------------------- 4. while loops

# THEORY.md Table O1, the column "equinox scheme": its advances in GW accounting, calls - n.
TABLE_O1_EQUINOX = {
    3: {10: 19, 20: 54, 50: 220, 100: 682, 200: 2282, 500: 14699},
    5: {10: 15, 20: 35, 50: 144, 100: 360, 200: 835, 500: 3045},
    10: {10: 10, 20: 30, 50: 90, 100: 283, 200: 686, 500: 2078},
}


def revolve_advances(n: int, c: int) -> int:
    """T(n, c) in GW accounting (first sweep included, x_n not computed), from the closed form."""
    return jc.binomial_calls(n, c) - n - 1


def online_optimum(n_max: int, c: int) -> list[int]:
    """``T'(n, c) = n + H(n, c)`` for n <= n_max (THEORY.md 4.1), by its dynamic programme."""
    h = [[0] + [revolve_advances(length, 1) for length in range(1, n_max + 1)]]  # H(L, 1) = T(L, 1)
    for s in range(2, c + 1):
        t = [0] + [revolve_advances(length, s) for length in range(1, n_max + 1)]
        h.append([0] + [min([t[L]] + [t[j] + h[-1][L - j] for j in range(1, L)]) for L in range(1, n_max + 1)])
    return [n + h[-1][n] for n in range(n_max + 1)]


@pytest.mark.parametrize("c", jc.WHILE_BUDGETS)
def test_while_body_calls(benchmark, c):
    counts = benchmark.pedantic(jc.while_calls, args=(c,), rounds=1, iterations=1)
    optimum = online_optimum(max(jc.WHILE_NS), c)
    last_optimal = (c + 1) * (c + 2) // 2 - 1
    for n, got in counts.items():
        ours, theirs = got["revseq"], got["equinox"]
        benchmark.extra_info[f"n={n}"] = {"revseq": ours, "equinox": theirs, "T'": optimum[n]}
        assert theirs - n == TABLE_O1_EQUINOX[c][n]  # the counting sees what THEORY.md's re-implementation saw
        assert ours == jc.online_calls(n, c)
        assert ours - n >= revseq.online_lower_bound(n, c) == optimum[n]
        if n <= last_optimal:
            assert ours - n == optimum[n]
        assert ours <= theirs
        if n > last_optimal:
            assert ours < theirs


WHILE_TIME_CASES = [pytest.param(*case, id=f"c={case[0]},n={case[1]}") for case in jc.WHILE_TIME_CASES]


@pytest.mark.parametrize(("c", "n", "max_steps", "rounds", "budget"), WHILE_TIME_CASES)
def test_while_time(benchmark, timings, c, n, max_steps, rounds, budget):
    fns = jc.while_fns(c, n, max_steps)
    result = benchmark.pedantic(jc.interleave, args=(fns, rounds, budget), rounds=1, iterations=1)
    record_ratios(benchmark, timings, result, f"while_loop, c={c}, n={n}", [("revseq", "equinox")])


# ---------------------------------------------------------------- 5. compile time against n


def test_compile_against_n(benchmark):
    table = benchmark.pedantic(jc.compile_table, rounds=1, iterations=1)
    for (kind, n), runs in table.items():
        benchmark.extra_info[f"{kind},n={n}"] = {
            "lower_s": [round(r.lower_s, 3) for r in runs],
            "compile_s": [round(r.compile_s, 3) for r in runs],
            "lowered_chars": runs[0].lowered_chars,
            "compiled_chars": runs[0].compiled_chars,
        }
    print()
    for key, value in benchmark.extra_info.items():
        print(key, value)
