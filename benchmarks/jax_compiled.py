"""revseq.jax's compiled scan and while_loop beside jax.lax.scan, jax.checkpoint and equinox's checkpointed loops.

A script that prints every table of docs/benchmarks.md section 6 in one run,
and the measuring functions ``test_jax_compiled.py`` asserts on:

    python benchmarks/jax_compiled.py

The problem is a tanh RNN, ``h' = tanh(h W + x_t U + b)``, width 256, batch
16, inputs of width 32, float32, with the loss ``sum(h_n) + sum_t mean(h_t^2)``
(every output and the final state); gradients are taken with respect to the
parameters W, U, b, as in training.

1. Gradients agree (float64, small n): revseq.jax.scan against jax.grad of
   lax.scan and of equinox's checkpointed scan.
2. Memory: ``jax.jit(grad).lower(...).compile().memory_analysis()`` at
   n = 10^4 for lax.scan, jax.checkpoint around the step, nested sqrt(n)
   scans, equinox and revseq with the same budget c.
3. Body calls, counted by a ``jax.debug.callback`` in the step, and time per
   gradient (CPU time and wall, interleaved rounds) against equinox and
   lax.scan at equal c.
4. The while loop at THEORY.md's Table O1 points, body calls against
   equinox's checkpointed while_loop; one timed point.
5. Compile time and program size against n, the xs passed as an argument.

Counting convention (DESIGN.md, THEORY.md section 0): a gradient of revseq
calls the step ``strategy.cost(n).forward_steps + n`` times, the n extra
calls being the re-runs inside each step's ``jax.vjp``; equinox's count is
measured the same way (its backward loop runs ``jax.vjp`` of the body at
every iteration, advance or not). lax.scan calls the step n times (it
saves its residuals); jax.checkpoint'ed lax.scan 2n.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import jax
import jax.numpy as jnp
import numpy as np

import revseq
import revseq.jax as rj

WIDTH, BATCH, INPUTS = 256, 16, 32
N_MEMORY = 10**4
BUDGETS = (20, 100, 140)  # 140 = equinox's default for max_steps = 10^4 (and revseq's OnlineCheckpointing's)
SMALL_WIDTH = 8  # body calls do not depend on the width: count them on a small step
WHILE_BUDGETS = (3, 5, 10)
WHILE_NS = (10, 20, 50, 100, 200, 500)
WHILE_MAX_STEPS = 1000
COMPILE_NS = (10**2, 10**3, 10**4, 10**5)
COMPILE_BUDGET = 20
# Timed gradients: (n, c, most rounds, seconds after which no new round starts).
TIME_CASES = ((10**3, 20, 9, 45.0), (10**3, 100, 9, 45.0), (10**4, 100, 5, 90.0))
# Timed while loops: (c, n, max_steps, most rounds, seconds).
WHILE_TIME_CASES = ((10, 500, 1000, 9, 30.0), (10, 5000, 10**4, 5, 60.0))


def equinox_internal() -> Any:
    """``equinox.internal``, imported late: pytest imports this file when it collects doctests."""
    import equinox.internal as eqxi

    return eqxi


def source() -> str:
    """The revseq measured: its commit, and a digest of the JAX adapter's files if they differ from it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(revseq.__file__)))
    files = ["revseq/jax.py", "revseq/_jaxplan.py", "revseq/_microcode.py"]
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()  # fmt: skip
        changed = subprocess.run(["git", "-C", root, "diff", "--quiet", "HEAD", "--", *files]).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    if not changed:
        return commit
    digest = hashlib.sha1()
    for name in files:
        with open(os.path.join(root, name), "rb") as f:
            digest.update(f.read())
    return f"{commit} + uncommitted changes to the adapter (sha1 {digest.hexdigest()[:10]})"


def versions() -> dict[str, str]:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "python": platform.python_version(),
        "jax": version("jax"),
        "jaxlib": version("jaxlib"),
        "equinox": version("equinox"),
        "revseq": version("revseq"),
        "source": source(),
        "device": str(jax.devices()[0]),
        "nproc": str(os.cpu_count()),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# ---------------------------------------------------------------- the problem


def rnn_params(width: int = WIDTH, inputs: int = INPUTS, dtype: Any = jnp.float32, seed: int = 0) -> dict[str, Any]:
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    return {
        "W": jax.random.normal(k1, (width, width), dtype) / np.sqrt(width),
        "U": jax.random.normal(k2, (inputs, width), dtype) / np.sqrt(inputs),
        "b": 0.1 * jax.random.normal(k3, (width,), dtype),
    }


def rnn_data(n: int, width: int = WIDTH, inputs: int = INPUTS, dtype: Any = jnp.float32) -> tuple[Any, Any]:
    """``(h0, xs)``: a start state and n steps of inputs."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    return 0.5 * jax.random.normal(k1, (BATCH, width), dtype), jax.random.normal(k2, (n, BATCH, inputs), dtype)


def rnn_shapes(n: int, width: int = WIDTH, inputs: int = INPUTS) -> tuple[Any, ...]:
    """The arguments of a gradient as shapes only, for lowering without allocating the xs."""
    f32 = jnp.float32
    params = {
        "W": jax.ShapeDtypeStruct((width, width), f32),
        "U": jax.ShapeDtypeStruct((inputs, width), f32),
        "b": jax.ShapeDtypeStruct((width,), f32),
    }
    return params, jax.ShapeDtypeStruct((BATCH, width), f32), jax.ShapeDtypeStruct((n, BATCH, inputs), f32)


class Counter:
    """Calls of the step, counted on the host by a ``jax.debug.callback`` the step makes."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *_: Any) -> None:
        self.calls += 1

    def read(self) -> int:
        jax.effects_barrier()
        return self.calls


def rnn_step(params: dict[str, Any], counter: Counter | None = None) -> Callable[[Any, Any], tuple[Any, Any]]:
    def step(h: Any, x: Any) -> tuple[Any, Any]:
        if counter is not None:
            # The callback takes the carry so that it depends on it: without an operand, lax.scan's
            # partial evaluation hoists it out of the loop as loop-invariant and it runs once.
            jax.debug.callback(counter, h)
        h = jnp.tanh(h @ params["W"] + x @ params["U"] + params["b"])
        return h, jnp.mean(h * h)

    return step


@attrs.frozen
class Method:
    """One way to differentiate the scan: ``kind`` in lax, remat, sqrt, equinox, revseq; ``c`` the budget."""

    kind: str
    c: int | None = None

    @property
    def name(self) -> str:
        names = {
            "lax": "lax.scan",
            "remat": "lax.scan of jax.checkpoint(step)",
            "sqrt": "nested sqrt(n) scans, inner jax.checkpoint",
            "equinox": f"equinox checkpointed, c={self.c}",
            "revseq": f"revseq Binomial(c={self.c})",
        }
        return names[self.kind]

    def scan(self, step: Callable[[Any, Any], Any], h0: Any, xs: Any) -> tuple[Any, Any]:
        if self.kind == "lax":
            return jax.lax.scan(step, h0, xs)
        if self.kind == "remat":
            return jax.lax.scan(jax.checkpoint(step), h0, xs)
        if self.kind == "sqrt":
            n = xs.shape[0]
            k = math.isqrt(n)
            if k * k != n:
                raise ValueError(f"the sqrt method needs a square n, got {n}")

            @jax.checkpoint
            def segment(h: Any, xs_segment: Any) -> tuple[Any, Any]:
                return jax.lax.scan(step, h, xs_segment)

            h, ys = jax.lax.scan(segment, h0, xs.reshape(k, k, *xs.shape[1:]))
            return h, ys.reshape(n)
        if self.kind == "equinox":
            return equinox_internal().scan(step, h0, xs, kind="checkpointed", checkpoints=self.c)  # type: ignore[no-any-return]
        if self.kind == "revseq":
            return rj.scan(step, h0, xs, strategy=revseq.BinomialCheckpointing(checkpoints=self.c))
        raise ValueError(f"unknown method {self.kind!r}")

    def grad(self, counter: Counter | None = None) -> Callable[..., Any]:
        """``jax.jit(jax.grad(loss))`` over ``(params, h0, xs)``, a fresh function (nothing cached) each call."""

        def loss(params: dict[str, Any], h0: Any, xs: Any) -> Any:
            h, ys = self.scan(rnn_step(params, counter), h0, xs)
            return jnp.sum(h) + jnp.sum(ys)

        return jax.jit(jax.grad(loss))


LAX, REMAT, SQRT = Method("lax"), Method("remat"), Method("sqrt")


def equinox(c: int) -> Method:
    return Method("equinox", c)


def ours(c: int) -> Method:
    return Method("revseq", c)


def revseq_calls(n: int, c: int) -> int:
    """The body calls of one revseq gradient: the schedule's forward steps plus the n re-runs in the VJPs."""
    return revseq.BinomialCheckpointing(checkpoints=c).cost(n).forward_steps + n


def binomial_calls(n: int, c: int) -> int:
    """The same from Griewank and Walther's closed form (DESIGN.md), independently of revseq's code."""
    r = 0
    while math.comb(c + r, c) < n:
        r += 1
    return (r * n - math.comb(c + r, r - 1) + 1 if r else 1) + n


# ---------------------------------------------------------------- 1. gradients agree


def gradient_differences(n: int, c: int, width: int = 32) -> dict[str, float]:
    """Largest relative differences of revseq's float64 gradient against lax.scan's and equinox's."""
    with jax.enable_x64(True):
        params = rnn_params(width, dtype=jnp.float64)
        h0, xs = rnn_data(n, width, dtype=jnp.float64)
        got = ours(c).grad()(params, h0, xs)
        out = {}
        for label, method in (("lax.scan", LAX), ("equinox", equinox(c))):
            want = method.grad()(params, h0, xs)
            out[label] = max(
                float(jnp.max(jnp.abs(got[k] - want[k])) / jnp.max(jnp.abs(want[k]))) for k in ("W", "U", "b")
            )
        assert got["W"].dtype == jnp.float64
        return out


def strategy_gradient_difference(strategy: revseq.ReversalStrategy, n: int, width: int = 8) -> float:
    """Largest relative difference of revseq's float64 gradient (any strategy, jitted) against lax.scan's."""
    with jax.enable_x64(True):
        params = rnn_params(width, dtype=jnp.float64)
        h0, xs = rnn_data(n, width, dtype=jnp.float64)

        def loss(scan: Callable[..., Any], params: dict[str, Any], h0: Any, xs: Any) -> Any:
            h, ys = scan(rnn_step(params), h0, xs)
            return jnp.sum(h) + jnp.sum(ys)

        got = jax.jit(jax.grad(lambda p, h, x: loss(lambda *a: rj.scan(*a, strategy=strategy), p, h, x)))(
            params, h0, xs
        )
        want = jax.jit(jax.grad(lambda p, h, x: loss(jax.lax.scan, p, h, x)))(params, h0, xs)
        return max(float(jnp.max(jnp.abs(got[k] - want[k])) / jnp.max(jnp.abs(want[k]))) for k in ("W", "U", "b"))


# ---------------------------------------------------------------- 2. memory


@attrs.frozen
class Memory:
    temp: int
    argument: int
    output: int
    lower_s: float
    compile_s: float


def memory(method: Method, n: int = N_MEMORY) -> Memory:
    start = time.perf_counter()
    lowered = method.grad().lower(*rnn_shapes(n))
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    done = time.perf_counter()
    m = compiled.memory_analysis()
    return Memory(
        temp=m.temp_size_in_bytes,
        argument=m.argument_size_in_bytes,
        output=m.output_size_in_bytes,
        lower_s=lowered_at - start,
        compile_s=done - lowered_at,
    )


def memory_methods(budgets: Iterable[int] = BUDGETS) -> list[Method]:
    return [LAX, REMAT, SQRT] + [m for c in budgets for m in (equinox(c), ours(c))]


# ---------------------------------------------------------------- 3. body calls and time


def body_calls(method: Method, n: int, width: int = SMALL_WIDTH) -> int:
    counter = Counter()
    params = rnn_params(width, inputs=4)
    h0, xs = rnn_data(n, width, inputs=4)
    grad = method.grad(counter)
    jax.block_until_ready(grad(params, h0, xs))
    return counter.read()


@attrs.frozen
class Rounds:
    """Per-round CPU and wall times of several functions run in rotated order."""

    cpu: dict[str, list[float]]
    wall: dict[str, list[float]]

    def ratios(self, name: str, baseline: str, clock: str = "cpu") -> list[float]:
        times = self.cpu if clock == "cpu" else self.wall
        return sorted(a / b for a, b in zip(times[name], times[baseline], strict=True))


def interleave(fns: dict[str, Callable[[], Any]], rounds: int, budget_s: float = math.inf) -> Rounds:
    """Each round runs every function once, the order rotated from round to round.

    The functions are compiled ahead of time (``gradient_fns``), so there is
    no warm-up round. No new round starts once ``budget_s`` seconds have
    passed (a safeguard for a pathologically slow function), so there may be
    fewer than ``rounds``, never fewer than one.
    """
    names = list(fns)
    cpu: dict[str, list[float]] = {name: [] for name in names}
    wall: dict[str, list[float]] = {name: [] for name in names}
    started = time.perf_counter()
    for r in range(rounds):
        if r and time.perf_counter() - started > budget_s:
            break
        for name in names[r % len(names) :] + names[: r % len(names)]:
            c0, w0 = time.process_time(), time.perf_counter()
            jax.block_until_ready(fns[name]())
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - w0)
    return Rounds(cpu, wall)


def summary(values: list[float]) -> dict[str, float]:
    """Median, quartiles and range of a list of numbers."""
    v = sorted(values)
    return {
        "median": statistics.median(v),
        "q1": v[len(v) // 4],
        "q3": v[(3 * len(v)) // 4],
        "min": v[0],
        "max": v[-1],
    }


def gradient_fns(n: int, c: int) -> dict[str, Callable[[], Any]]:
    """One gradient of lax.scan, equinox and revseq at budget c on the full-width RNN, each a no-argument call."""
    params = rnn_params()
    h0, xs = rnn_data(n)
    fns = {}
    for method in (LAX, equinox(c), ours(c)):
        grad = method.grad().lower(params, h0, xs).compile()
        fns[method.kind] = lambda grad=grad: grad(params, h0, xs)
    return fns


# ---------------------------------------------------------------- 4. while loops


def while_grad(kind: str, c: int, max_steps: int, width: int, counter: Counter | None = None) -> Callable[..., Any]:
    """``jax.jit(jax.grad)`` of a while loop that stops after ``n`` steps, n a traced argument."""

    def loss(params: dict[str, Any], h0: Any, n: Any) -> Any:
        step = rnn_step(params, counter)
        x = jnp.ones((BATCH, params["U"].shape[0]), h0.dtype)

        def body(carry: tuple[Any, Any]) -> tuple[Any, Any]:
            h, t = carry
            return step(h, x)[0], t + 1

        def cond(carry: tuple[Any, Any]) -> Any:
            return carry[1] < n

        init = (h0, jnp.asarray(0, jnp.int32))
        if kind == "revseq":
            h, _ = rj.while_loop(cond, body, init, max_steps=max_steps, checkpoints=c)
        else:
            h, _ = equinox_internal().while_loop(
                cond, body, init, max_steps=max_steps, kind="checkpointed", checkpoints=c
            )
        return jnp.sum(h)

    return jax.jit(jax.grad(loss))


def while_calls(c: int, ns: Iterable[int] = WHILE_NS, max_steps: int = WHILE_MAX_STEPS) -> dict[int, dict[str, int]]:
    """Body calls of one gradient of each while loop, for each n (one compilation per library)."""
    params = rnn_params(SMALL_WIDTH, inputs=4)
    h0, _ = rnn_data(1, SMALL_WIDTH, inputs=4)
    out: dict[int, dict[str, int]] = {n: {} for n in ns}
    for kind in ("revseq", "equinox"):
        counter = Counter()
        grad = while_grad(kind, c, max_steps, SMALL_WIDTH, counter)
        for n in out:
            before = counter.read()
            jax.block_until_ready(grad(params, h0, jnp.asarray(n, jnp.int32)))
            out[n][kind] = counter.read() - before
    return out


def while_fns(c: int, n: int, max_steps: int) -> dict[str, Callable[[], Any]]:
    """One gradient of each while loop over n steps of the full-width RNN, each a no-argument call."""
    params = rnn_params()
    h0, _ = rnn_data(1)
    steps = jnp.asarray(n, jnp.int32)
    fns = {}
    for kind in ("equinox", "revseq"):
        grad = while_grad(kind, c, max_steps, WIDTH).lower(params, h0, steps).compile()
        fns[kind] = lambda grad=grad: grad(params, h0, steps)
    return fns


def online_calls(n: int, c: int) -> int:
    return revseq.OnlineCheckpointing(checkpoints=c).cost(n).forward_steps + n


# ---------------------------------------------------------------- 5. compile time against n


@attrs.frozen
class Compiled:
    lower_s: float
    compile_s: float
    lowered_chars: int  # the StableHLO text of the lowered program
    compiled_chars: int  # the optimised HLO text of the compiled one


def compile_once(method: Method, n: int) -> Compiled:
    grad = method.grad()
    start = time.process_time()
    lowered = grad.lower(*rnn_shapes(n))
    lowered_at = time.process_time()
    compiled = lowered.compile()
    done = time.process_time()
    return Compiled(lowered_at - start, done - lowered_at, len(lowered.as_text()), len(compiled.as_text()))


def compile_table(
    ns: Iterable[int] = COMPILE_NS, c: int = COMPILE_BUDGET, repeats: int = 2
) -> dict[tuple[str, int], list[Compiled]]:
    """Lower and compile each method at each n, ``repeats`` times, the methods interleaved (CPU time)."""
    out: dict[tuple[str, int], list[Compiled]] = {}
    methods = (LAX, equinox(c), ours(c))
    for n in ns:
        for r in range(repeats):
            for method in methods[r % 3 :] + methods[: r % 3]:
                out.setdefault((method.kind, n), []).append(compile_once(method, n))
    return out


# ---------------------------------------------------------------- printing


def mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.2f} MB"


def ratio_cell(values: list[float]) -> str:
    s = summary(values)
    return f"{s['median']:.2f} ({s['q1']:.2f}-{s['q3']:.2f}; {s['min']:.2f}-{s['max']:.2f})"


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    started = time.perf_counter()
    print("environment:", ", ".join(f"{k}={v}" for k, v in versions().items()))
    print(f"revseq from {revseq.__file__}")

    print("\n## 1. gradients agree (float64, width 32, batch 16): largest relative difference of revseq's")
    rows = []
    for n, c in ((1, 3), (50, 5)):
        d = gradient_differences(n, c)
        rows.append([n, c, f"{d['lax.scan']:.1e}", f"{d['equinox']:.1e}"])
    print(table(["n", "c", "vs lax.scan", "vs equinox (same c)"], rows))

    state = BATCH * WIDTH * 4
    print(f"\n## 2. memory of jax.jit(grad) at n = {N_MEMORY}, width {WIDTH}, batch {BATCH}, float32 "
          f"(one state = {state} bytes)")  # fmt: skip
    rows = []
    for method in memory_methods():
        m = memory(method)
        rows.append([method.name, mb(m.temp), f"{m.temp / state:.0f}", mb(m.argument), mb(m.output)])
    print(table(["method", "temp", "temp / state", "arguments", "outputs"], rows))

    print(f"\n## 3a. body calls per gradient (jax.debug.callback in the step, width {SMALL_WIDTH})")
    rows = []
    equinox_calls = {}
    for n in (10**3, 10**4):
        for c in (20, 100):
            got, theirs = body_calls(ours(c), n), body_calls(equinox(c), n)
            equinox_calls[n, c] = theirs
            rows.append([n, c, got, revseq_calls(n, c), theirs, f"{theirs / got:.2f}"])
    print(table(["n", "c", "revseq", "cost(n).forward_steps + n", "equinox", "equinox / revseq"], rows))
    print(f"lax.scan: {body_calls(LAX, 1000)} at n = 1000; lax.scan of jax.checkpoint(step): {body_calls(REMAT, 1000)}")

    print("\n## 3b. CPU time per gradient, interleaved rounds: median (quartiles; range)")
    rows = []
    for n, c, rounds, budget in TIME_CASES:
        r = interleave(gradient_fns(n, c), rounds, budget)
        calls = {"revseq": revseq_calls(n, c), "equinox": equinox_calls[n, c], "lax": n}
        per_call = {k: statistics.median(r.cpu[k]) / calls[k] * 1e6 for k in calls}
        rows.append([
            n, c, len(r.cpu["revseq"]),
            ratio_cell(r.ratios("revseq", "equinox")), ratio_cell(r.ratios("revseq", "lax")),
            ratio_cell(r.ratios("revseq", "equinox", "wall")),
            " / ".join(f"{statistics.median(r.cpu[k]):.2f}" for k in calls),
            " / ".join(f"{per_call[k]:.0f}" for k in calls),
        ])  # fmt: skip
        print(f"  n={n} c={c} done at {time.perf_counter() - started:.0f} s", flush=True)
    print(table(["n", "c", "rounds", "revseq/equinox", "revseq/lax.scan", "wall revseq/equinox",
                 "s per gradient (revseq / equinox / lax.scan)", "us per body call"], rows))  # fmt: skip

    print(f"\n## 4. while loops: body calls per gradient, max_steps = {WHILE_MAX_STEPS}")
    rows = []
    for c in WHILE_BUDGETS:
        for n, got in while_calls(c).items():
            rows.append([
                c, n, got["revseq"], online_calls(n, c), got["equinox"],
                revseq.OnlineCheckpointing(checkpoints=c).cost(n).forward_steps,
                revseq.online_lower_bound(n, c), got["equinox"] - n, f"{got['equinox'] / got['revseq']:.2f}",
            ])  # fmt: skip
    print(table(["c", "n", "revseq calls", "cost + n", "equinox calls", "cost(n).forward_steps",
                 "online_lower_bound", "equinox - n", "equinox / revseq"], rows))  # fmt: skip
    for c, n, max_steps, rounds, budget in WHILE_TIME_CASES:
        r = interleave(while_fns(c, n, max_steps), rounds, budget)
        print(f"while loop, c={c}, n={n}, max_steps={max_steps}, width {WIDTH}: revseq/equinox CPU "
              f"{ratio_cell(r.ratios('revseq', 'equinox'))}, wall {ratio_cell(r.ratios('revseq', 'equinox', 'wall'))}"
              f"; CPU s revseq {statistics.median(r.cpu['revseq']):.2f}, equinox "
              f"{statistics.median(r.cpu['equinox']):.2f} (median of {len(r.cpu['revseq'])})", flush=True)  # fmt: skip

    print(f"\n## 5. lowering and compiling against n (xs an argument; c = {COMPILE_BUDGET}; CPU s, min-max of 2)")
    rows = []
    for (kind, n), runs in sorted(compile_table().items()):
        lower, compile_ = [r.lower_s for r in runs], [r.compile_s for r in runs]
        rows.append([
            kind, n, f"{min(lower):.2f}-{max(lower):.2f}", f"{min(compile_):.2f}-{max(compile_):.2f}",
            runs[0].lowered_chars, runs[0].compiled_chars,
        ])  # fmt: skip
    print(table(["method", "n", "lower (s)", "compile (s)", "lowered chars", "compiled chars"], rows))
    print(f"\nloadavg at the end: {versions()['loadavg']}; {time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
