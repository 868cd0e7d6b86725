"""Helpers shared by the benchmark modules: independent step counts and a minimal schedule walker."""

from __future__ import annotations

import math
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from revseq import Action, Advance, Free, Reverse, Store


def binomial_steps(n: int, c: int) -> int:
    """Griewank & Walther's minimum of forward steps with c checkpoints, as revseq counts them.

    revseq counts the calls of f in a whole backprop: T(n, c) advances, the
    first sweep included, plus the one call that produces x_n (THEORY.md, section 0).
    Computed here from the closed form, independently of revseq's code.
    """
    r = 0
    while math.comb(c + r, c) < n:
        r += 1
    return r * n - math.comb(c + r, r - 1) + 1 if r else 1


def label(n: int, c: int) -> str:
    """``n=1e6,c=30``."""
    exponent = round(math.log10(n))
    return f"n=1e{exponent},c={c}" if 10**exponent == n else f"n={n},c={c}"


def walk_revseq(actions: Iterable[Action], n: int) -> tuple[int, int, int]:
    """Forward steps (x_n's call included), peak checkpoints and number of actions of a revseq schedule.

    The least any executor must do per action: dispatch on its type and keep
    the counts; no f is run. Checkpoints are kept on a stack (a binomial
    schedule stores them in increasing order and releases them last-in,
    first-out): ``Reverse(start, stop)`` releases every checkpoint at or
    after ``start``, ``Free`` drops a range early.
    """
    steps = peak = count = 0
    computed_n = False  # whether an Advance reached x_n itself (then the reversal does not compute it)
    held: list[int] = []
    for action in actions:
        count += 1
        kind = type(action)
        if kind is Advance:
            start, stop = action.start, action.stop
            steps += stop - start
            computed_n = computed_n or stop == n
            if action.keep:
                held.extend(range(start + 1, stop))
                peak = max(peak, len(held))
        elif kind is Store:
            held.append(action.step)
            peak = max(peak, len(held))
        elif kind is Reverse:
            start = action.start
            while held and held[-1] >= start:
                held.pop()
            if action.stop == n and not computed_n:
                steps += 1  # x_n = f(x_{n-1}), computed by the engine when step n-1 is reversed
        elif kind is Free:
            start, stop = action.start, action.stop
            held = [t for t in held if not start <= t < stop]
    return steps, peak, count


def walk_checkpoint_schedules(cs: Any, schedule: Iterable[Any]) -> tuple[int, int, int]:
    """The same walk over a checkpoint_schedules schedule (module ``cs``).

    Returns forward steps as that library counts them (``n + T``: every
    reversed step is re-run once before its ``Reverse``), peak snapshots held
    and the number of actions.
    """
    forward, move, end = cs.Forward, cs.Move, cs.EndReverse
    steps = held = peak = count = 0
    for action in schedule:
        count += 1
        kind = type(action)
        if kind is forward:
            steps += action.n1 - action.n0
            if action.write_ics:  # a snapshot of x_{n0} is written
                held += 1
                peak = max(peak, held)
        elif kind is move:  # a snapshot's last use: it leaves storage
            held -= 1
        elif kind is end:
            break
    return steps, peak, count


def hand_written(x0: np.ndarray, n: int, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The baseline and oracle for x -> sin(x): every state stored, derivatives multiplied on the way back."""
    xs = []
    x = x0
    for _ in range(n):
        xs.append(x)
        x = np.sin(x)
    g = w
    for state in reversed(xs):
        g = g * np.cos(state)
    return x, g


Times = dict[str, tuple[list[float], list[float]]]
"""Per contender, its CPU times and wall times, one per round."""


def interleaved(contenders: dict[str, Callable[[], Any]], rounds: int, *, warmup: int = 1) -> Times:
    """Time each contender ``rounds`` times; each round runs every one once, the order rotating.

    CPU time (``time.process_time``) is what other processes on a shared
    machine disturb least; wall time is kept too. Ratios are then taken
    round by round, between runs made seconds apart.
    """
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    times: Times = {name: ([], []) for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            cpu, wall = time.process_time(), time.perf_counter()
            contenders[name]()
            times[name][0].append(time.process_time() - cpu)
            times[name][1].append(time.perf_counter() - wall)
    return times


def summary(ratios: list[float]) -> dict[str, Any]:
    """Median, quartiles and range of per-round ratios."""
    ratios = sorted(ratios)
    return {
        "median": round(statistics.median(ratios), 4),
        "quartiles": [round(ratios[len(ratios) // 4], 4), round(ratios[3 * len(ratios) // 4], 4)],
        "range": [round(ratios[0], 4), round(ratios[-1], 4)],
    }


def ratios(times: Times, name: str, baseline: str, *, scale: float = 1.0, clock: int = 0) -> dict[str, Any]:
    """``summary`` of ``scale * time(name) / time(baseline)`` round by round (clock 0: CPU, 1: wall)."""
    return summary([scale * a / b for a, b in zip(times[name][clock], times[baseline][clock], strict=True)])


# -- a heat-equation step and a local S3 server, for the storage benchmarks --------------------------------

HEAT_K, HEAT_DT = 0.2, 0.01


def _laplacian(x: np.ndarray) -> np.ndarray:
    out = x * -4.0
    out[1:] += x[:-1]
    out[:-1] += x[1:]
    out[:, 1:] += x[:, :-1]
    out[:, :-1] += x[:, 1:]
    return out


def heat_step(x: np.ndarray) -> np.ndarray:
    """One explicit step of ``u' = K lap(u) - DT u^3`` on a 2-D field (zero boundary), in place where it can."""
    y = _laplacian(x)
    y *= HEAT_K
    y += x
    y -= HEAT_DT * x**3
    return y


def heat_field(side: int) -> np.ndarray:
    """A smooth ``side x side`` float64 field, zero on the boundary: the heat equation's starting state."""
    grid = np.linspace(0.0, 1.0, side)
    return np.sin(np.pi * grid)[:, None] * np.sin(2 * np.pi * grid)[None, :]


def median_seconds(fn: Callable[[], Any], times: int = 3) -> float:
    """The median wall time of ``times`` calls of ``fn``."""
    spent = []
    for _ in range(times):
        start = time.perf_counter()
        fn()
        spent.append(time.perf_counter() - start)
    return statistics.median(spent)


def measured_costs(f: Callable[[Any], Any], vjp: Callable[[Any, Any], Any], x0: Any, store: Any, times: int = 3) -> Any:
    """``DiskCosts`` of one step, one adjoint, one write and one read of ``x0`` through ``store`` (medians; cleared)."""
    import revseq

    step = median_seconds(lambda: f(x0), times)
    adjoint = median_seconds(lambda: vjp(x0, x0), times)
    write = median_seconds(lambda: (store.put(0, x0), store.delete(0)), times)
    store.put(0, x0)
    read = median_seconds(lambda: store.get(0), times)
    store.clear()
    return revseq.DiskCosts(step=step, write=write, read=read, adjoint=adjoint)


def heat_vjp(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``heat_step``'s vector-Jacobian product (the Laplacian with a zero boundary is self-adjoint)."""
    out = _laplacian(g)
    out *= HEAT_K
    out += g
    out -= 3 * HEAT_DT * x**2 * g
    return out


def s3_endpoint() -> Iterator[str]:
    """The S3 endpoint to use: ``REVSEQ_TEST_S3_ENDPOINT``, or moto's server started on a free port (stopped after).

    A generator, for a pytest fixture to ``yield from``.
    """
    given = os.environ.get("REVSEQ_TEST_S3_ENDPOINT")
    if given:
        yield given
        return
    import pytest

    pytest.importorskip("moto.server", reason="moto's server: pip install 'moto[server]'")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except urllib.error.HTTPError:
                break  # an answer
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(10)
