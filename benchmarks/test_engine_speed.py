"""The engine close to the hardware (issue 10): revseq against the loops one would write by hand.

Each case runs its contenders in interleaved rounds in one process (each
round runs every contender once, the order rotating) and reports the median
of the per-round ratios of CPU time, with the quartiles and the range. The
engine as it was before issue 10 (commit ``BEFORE``, loaded beside the
current package by ``_revision.py``) is a contender too, so before and after
come from the same run. Every contender's gradient is asserted equal to the
hand-written one, and revseq's forward steps to the strategy's cost, before
anything is timed. Nothing asserts a time.

Cases (goal in brackets):

- ``StoreAll`` against a hand loop that stores every state, ``np.sin``:
  0-d states at n = 10^5 and 10^6 [<= 1.3x]; 1 float and 100 floats
  [<= 1.15x].
- ``BinomialCheckpointing(20)`` against the seed gist's ``recursive`` (a
  full sweep, then bisection), 0-d states, n = 10^5: time per call of f
  [<= 1.5x].
- A tanh RNN, width 256, n = 10^4, with ``vjp`` and ``params``: ``StoreAll``
  against hand-written BPTT [<= 1.2x], the default strategy [<= 2.1x]; and,
  to separate the engine from the vjp's recomputation of the step (it is
  given ``h_t``, not ``h_{t+1}``), a hand loop calling the same ``f`` and
  ``vjp``; and the same RNN with ``vjp_output=True``, whose vjp is given
  ``h_{t+1}`` and recomputes nothing, as hand-written BPTT.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _common import hand_written, interleaved, ratios
from _revision import revision_or_skip
from oracles import gist_recursive  # tests/oracles.py: the gist verbatim (THEORY.md 2)

import revseq

BEFORE = "008d6d4"  # the last commit before issue 10's engine changes


@pytest.fixture(scope="module")
def old() -> Any:
    return revision_or_skip(BEFORE)


def record(benchmark: Any, timings: Any, case: str, times: Any, name: str, baseline: str, target: str,
           *, scale: float = 1.0) -> dict[str, Any]:  # fmt: skip
    """Put ``time(name) / time(baseline)`` (CPU, per round) in extra_info and the end-of-run table."""
    cpu = ratios(times, name, baseline, scale=scale)
    wall = ratios(times, name, baseline, scale=scale, clock=1)
    key = f"{name} / {baseline}"
    benchmark.extra_info[key] = {"cpu": cpu, "wall": wall, "target": target}
    timings.add(f"{case}: {name} (CPU, median of {len(times[name][0])} rounds)", baseline, cpu["median"],
                target=target)  # fmt: skip
    q, r = cpu["quartiles"], cpu["range"]
    print(f"\n{case}: {key} = {cpu['median']:.3f} [{q[0]:.3f}, {q[1]:.3f}] ({r[0]:.3f} .. {r[1]:.3f}); "
          f"target {target}")  # fmt: skip
    return cpu


# -- StoreAll against the hand loop ------------------------------------------------------------------

STORE_ALL = {  # case: (x0, n, rounds, goal)
    "0-d, n=1e5": (np.asarray(0.5), 10**5, 15, "<= 1.3"),
    "0-d, n=1e6": (np.asarray(0.5), 10**6, 5, "<= 1.3"),
    "1 float, n=1e5": (np.full(1, 0.5), 10**5, 15, "<= 1.15"),
    "100 floats, n=1e5": (np.linspace(0.1, 1.0, 100), 10**5, 11, "<= 1.15"),
}


@pytest.mark.parametrize("case", list(STORE_ALL))
def test_store_all_against_the_hand_loop(benchmark, timings, old, case):
    x0, n, rounds, goal = STORE_ALL[case]
    w = np.ones_like(x0) * 1.5
    state, gradient = hand_written(x0, n, w)
    contenders = {}
    for name, module in (("revseq", revseq), ("revseq before", old)):
        rec = module.Recurrence(np.sin, df=np.cos)
        out = module.backprop(rec, x0, n, module.StoreAll(), adjoint=w)
        assert out.stats.forward_steps == n
        np.testing.assert_allclose(out.state, state, rtol=1e-12)
        np.testing.assert_allclose(out.gradient, gradient, rtol=1e-12)
        contenders[name] = lambda m=module, r=rec: m.backprop(r, x0, n, m.StoreAll(), adjoint=w)
    contenders["hand loop"] = lambda: hand_written(x0, n, w)
    benchmark.pedantic(contenders["revseq"], rounds=1, iterations=1)
    times = interleaved(contenders, rounds)
    record(benchmark, timings, f"StoreAll, {case}", times, "revseq", "hand loop", goal)
    record(benchmark, timings, f"StoreAll, {case}", times, "revseq before", "hand loop", "(before)")


# -- Binomial against the gist ----------------------------------------------------------------------


def gist(x0: Any, n: int, w: Any, calls: list[int] | None = None) -> tuple[Any, Any]:
    """The gist's driver: a full sweep to x_n, then the states back by ``recursive``, the adjoint applied."""

    def f(x: Any) -> Any:
        if calls is not None:
            calls[0] += 1
        return np.sin(x)

    step = f if calls is not None else np.sin
    x = x0
    for _ in range(n):
        x = step(x)
    g = w
    for s in gist_recursive(step, x0, 0, n):
        g = g * np.cos(s)
    return x, g


def interpreted(schedule: Any, n: int, x0: Any, w: Any) -> Any:
    """The least an interpreter of revseq's actions can do: dispatch on each one's type, keep states in a
    dict, call f and df; nothing counted or checked, no store object, no generator between the schedule and
    the adjoint loop. The floor of the architecture (docs/benchmarks.md 7.3), not a usable engine."""
    data: dict[int, Any] = {}
    x, live, g = x0, 0, w
    for action in schedule:
        kind = type(action)
        if kind is revseq.Advance:
            start, stop, keep = action
            if keep:
                for t in range(start + 1, stop):
                    x = np.sin(x)
                    data[t] = x
                x = np.sin(x)
            else:
                for _ in range(stop - start):
                    x = np.sin(x)
            live = stop
        elif kind is revseq.Reverse:
            start, stop = action
            if stop == n and live == n - 1:
                np.sin(x)  # x_n
            top = stop - 1
            g = g * np.cos(x if top == live else data.pop(top))
            for t in range(top - 1, start - 1, -1):
                g = g * np.cos(data.pop(t))
        elif kind is revseq.Store:
            data[action.step] = x
        else:
            live = action.step
            x = data[live]
    return g


def test_binomial_time_per_call_against_the_gist(benchmark, timings, old):
    x0, n, c = np.asarray(0.5), 10**5, 20
    w = np.asarray(1.5)
    counted = [0]
    _, gradient = gist(x0, n, w, counted)
    gist_calls = counted[0]
    assert gist_calls == n + sum(bin(k).count("1") for k in range(n))  # THEORY.md 2: n + sum of popcounts
    _, gradient_ref = hand_written(x0, n, w)
    np.testing.assert_allclose(gradient, gradient_ref, rtol=1e-12)
    contenders: dict[str, Callable[[], Any]] = {"gist": lambda: gist(x0, n, w)}
    for name, module in (("revseq", revseq), ("revseq before", old)):
        rec = module.Recurrence(np.sin, df=np.cos)
        out = module.backprop(rec, x0, n, module.BinomialCheckpointing(c), adjoint=w)
        calls = out.stats.forward_steps
        assert calls == revseq.BinomialCheckpointing(c).cost(n).forward_steps
        np.testing.assert_allclose(out.gradient, gradient, rtol=1e-12)
        contenders[name] = lambda m=module, r=rec: m.backprop(r, x0, n, m.BinomialCheckpointing(c), adjoint=w)
    schedule = revseq.BinomialCheckpointing(c).schedule(n)
    np.testing.assert_allclose(interpreted(schedule, n, x0, w), gradient, rtol=1e-12)
    contenders["interpreter floor"] = lambda: interpreted(schedule, n, x0, w)
    contenders["generating alone"] = lambda: collections.deque(schedule, maxlen=0)
    benchmark.extra_info["calls"] = {"gist": gist_calls, "revseq": calls}
    benchmark.pedantic(contenders["revseq"], rounds=1, iterations=1)
    times = interleaved(contenders, 11)
    per_call = gist_calls / calls  # time per call = time / calls
    record(benchmark, timings, "Binomial(20) per call of f, n=1e5", times, "revseq", "gist", "<= 1.5",
           scale=per_call)  # fmt: skip
    record(benchmark, timings, "Binomial(20) per call of f, n=1e5", times, "revseq before", "gist", "(before)",
           scale=per_call)  # fmt: skip
    record(benchmark, timings, "Binomial(20) in total, n=1e5", times, "revseq", "gist", "< 1")
    for floor in ("interpreter floor", "generating alone"):
        record(benchmark, timings, "Binomial(20) per call of f, n=1e5", times, floor, "gist", "(floor)",
               scale=per_call)  # fmt: skip


# -- An RNN with parameters ------------------------------------------------------------------------

WIDTH, INPUTS, STEPS = 256, 32, 10**4


def rnn() -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    W = rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)
    U = rng.standard_normal((WIDTH, INPUTS)) / np.sqrt(INPUTS)
    u = rng.standard_normal((STEPS, INPUTS))
    return rng.standard_normal(WIDTH) * 0.1, (W, U), u


def bptt(h0: np.ndarray, params: tuple[np.ndarray, np.ndarray], u: np.ndarray, w: np.ndarray) -> tuple[Any, ...]:
    """Hand-written BPTT: every state kept, the parameter gradients summed in place."""
    W, U = params
    hs = [h0]
    h = h0
    for t in range(len(u)):
        h = np.tanh(W @ h + U @ u[t])
        hs.append(h)
    gW, gU = np.zeros_like(W), np.zeros_like(U)
    g = w
    for t in range(len(u) - 1, -1, -1):
        d = g * (1 - hs[t + 1] ** 2)
        gW += np.outer(d, hs[t])
        gU += np.outer(d, u[t])
        g = W.T @ d
    return h, g, (gW, gU)


def step_and_vjp(u: np.ndarray) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The RNN's step and its vjp as a revseq user writes them: the vjp gets ``h_t``, so it recomputes the step."""

    def f(h: np.ndarray, t: int, p: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        return np.tanh(p[0] @ h + p[1] @ u[t])

    def vjp(h: np.ndarray, t: int, p: tuple[np.ndarray, np.ndarray], g: np.ndarray) -> tuple[Any, Any]:
        d = g * (1 - np.tanh(p[0] @ h + p[1] @ u[t]) ** 2)
        return p[0].T @ d, (np.outer(d, h), np.outer(d, u[t]))

    return f, vjp


def recurrence(module: Any, params: tuple[np.ndarray, np.ndarray], u: np.ndarray) -> Any:
    f, vjp = step_and_vjp(u)
    return module.Recurrence(f, vjp=vjp, params=params, indexed=True)


def recurrence_from_output(params: tuple[np.ndarray, np.ndarray], u: np.ndarray) -> Any:
    """The same RNN with ``vjp_output=True``: its vjp gets ``h_{t+1}`` and recomputes nothing, as BPTT."""
    f, _ = step_and_vjp(u)

    def vjp(h: np.ndarray, t: int, p: tuple[np.ndarray, np.ndarray], y: np.ndarray, g: np.ndarray) -> Any:
        d = g * (1 - y**2)
        return p[0].T @ d, (np.outer(d, h), np.outer(d, u[t]))

    return revseq.Recurrence(f, vjp=vjp, params=params, indexed=True, vjp_output=True)


def bptt_with_the_users_vjp(h0: np.ndarray, params: Any, u: np.ndarray, w: np.ndarray) -> tuple[Any, ...]:
    """Every state kept, then the same f and vjp revseq is given, the parameter gradients summed in place:
    what the engine's StoreAll does, written by hand (the vjp's recomputation of the step included)."""
    f, vjp = step_and_vjp(u)
    hs = [h0]
    for t in range(len(u)):
        hs.append(f(hs[-1], t, params))
    gW, gU = np.zeros_like(params[0]), np.zeros_like(params[1])
    g = w
    for t in range(len(u) - 1, -1, -1):
        g, (dW, dU) = vjp(hs[t], t, params, g)
        gW += dW
        gU += dU
    return hs[-1], g, (gW, gU)


def test_rnn_with_parameters_against_bptt(benchmark, timings, old):
    h0, params, u = rnn()
    w = np.ones(WIDTH)
    state, gradient, (gW, gU) = bptt(h0, params, u, w)
    contenders: dict[str, Callable[[], Any]] = {
        "hand BPTT": lambda: bptt(h0, params, u, w),
        "hand loop, same vjp": lambda: bptt_with_the_users_vjp(h0, params, u, w),
    }
    _, same_gradient, same_params = bptt_with_the_users_vjp(h0, params, u, w)
    np.testing.assert_allclose(same_gradient, gradient, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(same_params[0], gW, rtol=1e-10, atol=1e-12)
    for name, module in (("revseq", revseq), ("revseq before", old)):
        rec = recurrence(module, params, u)
        for label, strategy in (("StoreAll", module.StoreAll()), ("default", None)):
            out = module.backprop(rec, h0, STEPS, strategy, adjoint=w)
            np.testing.assert_allclose(out.state, state, rtol=1e-10)
            np.testing.assert_allclose(out.gradient, gradient, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(out.params_gradient[0], gW, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(out.params_gradient[1], gU, rtol=1e-10, atol=1e-12)
            contenders[f"{name} {label}"] = lambda m=module, r=rec, s=strategy: m.backprop(r, h0, STEPS, s, adjoint=w)
    from_output = recurrence_from_output(params, u)
    for label, strategy in (("StoreAll", revseq.StoreAll()), ("default", None)):
        out = revseq.backprop(from_output, h0, STEPS, strategy, adjoint=w)
        np.testing.assert_allclose(out.gradient, gradient, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(out.params_gradient[0], gW, rtol=1e-10, atol=1e-12)
        contenders[f"revseq {label}, vjp_output"] = lambda s=strategy: revseq.backprop(
            from_output, h0, STEPS, s, adjoint=w
        )
    benchmark.pedantic(contenders["revseq StoreAll"], rounds=1, iterations=1)
    times = interleaved(contenders, 7)
    case = "RNN width 256, n=1e4, vjp + params"
    record(benchmark, timings, case, times, "revseq StoreAll, vjp_output", "hand BPTT", "<= 1.2")
    record(benchmark, timings, case, times, "revseq default, vjp_output", "hand BPTT", "<= 2.1")
    record(benchmark, timings, case, times, "revseq StoreAll", "hand BPTT", "<= 1.2")
    record(benchmark, timings, case, times, "revseq StoreAll", "hand loop, same vjp", "(the engine alone)")
    record(benchmark, timings, case, times, "hand loop, same vjp", "hand BPTT", "(the vjp's recomputation)")
    record(benchmark, timings, case, times, "revseq default", "hand BPTT", "<= 2.1")
    record(benchmark, timings, case, times, "revseq before StoreAll", "hand BPTT", "(before)")
    record(benchmark, timings, case, times, "revseq before default", "hand BPTT", "(before)")
