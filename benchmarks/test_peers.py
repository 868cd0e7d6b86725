"""revseq beside its peers, in the same process: checkpoint_schedules and pyrevolve.

Both peers are optional (``pip install -e ".[bench]"``); each test skips,
saying why, when its peer is missing.

1. The full binomial schedule for (n, c) in {(1e4, 10), (1e5, 20), (1e6, 30)},
   generated and walked by each library with the same minimal executor
   (dispatch on the action, add up forward steps and checkpoints held; no f):
   revseq's ``BinomialCheckpointing(c).schedule(n)``;
   ``checkpoint_schedules.MultistageCheckpointSchedule(n, c, 0)``, a fresh
   instance per round since its schedule is a one-shot iterator; and
   pyrevolve's C++ Revolve, driven through ``pyrevolve.crevolve.CRevolve(c, n)``
   and its ``revolve()`` loop, as pyrevolve's own ``examples/use_classic.py`` does.
2. One complete backprop of x -> sin(x) on 100 floats at (1e5, 20) through
   ``pyrevolve.Revolver`` and through ``revseq.backprop``; both gradients
   are checked against a hand-written store-everything loop.

Counting conventions (THEORY.md section 0), checked here on every walk so
that the libraries are seen to do equal work:

- revseq: ``T + 1`` forward steps, T the advances (first sweep included)
  and one call for x_n.
- checkpoint_schedules: its ``Forward`` actions add up to ``n + T``: each
  reversed step is re-run once with ``write_adj_deps`` just before its
  ``Reverse`` (Griewank-Walther accounting), so ``sum - n + 1`` is ours.
- Revolve: the ``advance`` actions add up to ``numforw(n, c) = T``; its
  ``firstrun`` step (x_{n-1} -> x_n) is the ``+ 1``. Its ``youturn`` re-runs
  nothing in the classic loop, but ``Revolver.apply_reverse`` calls the
  forward operator for one step before every reverse step, so a Revolver
  backprop calls f ``T + n`` times, ``n - 1`` more than revseq.

Checkpoint budgets are equal: all three count the copy of x_0 in their
budget (revseq ``checkpoints``, checkpoint_schedules ``snapshots_in_ram``:
its first snapshot is written at step 0, Revolve ``snaps``: its first
``takeshot`` is at step 0), and the peak number held is asserted equal to c
for every walk.
"""

from __future__ import annotations

import collections
import time

import numpy as np
import pytest
from _common import binomial_steps, hand_written, label, walk_checkpoint_schedules, walk_revseq

import revseq

CASES = [(10_000, 10), (100_000, 20), (1_000_000, 30)]
# Rounds per library and size: fewer for the slow ones, to keep the whole run short.
ROUNDS = {
    "revseq": {10_000: 10, 100_000: 5, 1_000_000: 3},
    "checkpoint_schedules": {10_000: 5, 100_000: 3, 1_000_000: 2},
    "pyrevolve": {10_000: 2, 100_000: 1, 1_000_000: 1},
}
PARAMS = [pytest.param(n, c, id=label(n, c)) for n, c in CASES]


def checkpoint_schedules():
    return pytest.importorskip(
        "checkpoint_schedules", reason="peer not installed: pip install checkpoint-schedules (or revseq[bench])"
    )


def pyrevolve():
    reason = "peer not installed: pip install pyrevolve (or revseq[bench]); it builds from source with a C++ compiler"
    return pytest.importorskip("pyrevolve", reason=reason)


# -- walking the schedule ------------------------------------------------------------------------


def walk_revolve(crevolve, n: int, c: int) -> tuple[int, int, int]:
    """Forward steps (advances + the firstrun step), peak snapshots, number of revolve() calls."""
    revolve = crevolve.CRevolve(c, n)
    action_kind = crevolve.Action
    advance, takeshot, firstrun, terminate = (action_kind.advance, action_kind.takeshot,
                                              action_kind.firstrun, action_kind.terminate)  # fmt: skip
    steps = peak = count = 0
    while True:
        action = revolve.revolve()
        count += 1
        if action is advance:
            steps += revolve.capo - revolve.oldcapo
        elif action is takeshot:
            peak = max(peak, revolve.check + 1)  # check is the slot written
        elif action is firstrun:
            steps += 1
        elif action is terminate:
            return steps, peak, count


def revseq_walker(n: int, c: int):
    schedule = revseq.BinomialCheckpointing(checkpoints=c).schedule(n)
    return lambda: walk_revseq(schedule, n), lambda: collections.deque(schedule, maxlen=0)


def checkpoint_schedules_walker(n: int, c: int):
    cs = checkpoint_schedules()

    def fresh():  # a MultistageCheckpointSchedule can be iterated only once
        return cs.MultistageCheckpointSchedule(n, c, 0)

    return lambda: walk_checkpoint_schedules(cs, fresh()), lambda: collections.deque(fresh(), maxlen=0)


def pyrevolve_walker(n: int, c: int):
    pyrevolve()
    crevolve = pytest.importorskip("pyrevolve.crevolve", reason="pyrevolve's compiled extension is missing")
    return lambda: walk_revolve(crevolve, n, c), None  # Revolve's actions exist only inside its loop


WALKERS = {"revseq": revseq_walker, "checkpoint_schedules": checkpoint_schedules_walker, "pyrevolve": pyrevolve_walker}


def as_revseq_counts(library: str, steps: int, n: int) -> int:
    """The forward steps a walk counted, converted to revseq's convention (module docstring)."""
    return steps - n + 1 if library == "checkpoint_schedules" else steps


# The size is the outer loop, the library the inner one: the libraries compared at one size
# run back to back, so a change in the machine's load between them is least likely.
@pytest.mark.parametrize("library", list(WALKERS))
@pytest.mark.parametrize(("n", "c"), PARAMS)
def test_walk(benchmark, timings, n, c, library):
    walk, _ = WALKERS[library](n, c)
    name = f"walk {library} {label(n, c)}"
    steps, peak, count = timings.measure(benchmark, name, walk, rounds=ROUNDS[library][n])
    converted = as_revseq_counts(library, steps, n)
    assert converted == binomial_steps(n, c)  # equal work, once the conventions are converted
    assert peak == c  # equal memory: the same number of checkpoints, x_0's copy included
    benchmark.extra_info.update(forward_steps=steps, forward_steps_as_revseq_counts=converted, peak_checkpoints=peak,
                                actions=count)  # fmt: skip
    if library == "pyrevolve":
        crevolve = pytest.importorskip("pyrevolve.crevolve")
        assert steps == crevolve.numforw(n, c) + 1  # its advances, plus the firstrun step
    if library != "revseq":
        target = ">= 5" if (n, c) == (1_000_000, 30) and library == "checkpoint_schedules" else ""
        timings.ratio(benchmark, name, f"walk revseq {label(n, c)}", key="ratio_vs_revseq", target=target)


@pytest.mark.parametrize("library", ["revseq", "checkpoint_schedules"])
@pytest.mark.parametrize(("n", "c"), PARAMS)
def test_generate(benchmark, timings, n, c, library):
    """Only pull the actions (no executor at all): the bare cost of producing the schedule."""
    _, generate = WALKERS[library](n, c)
    name = f"generate {library} {label(n, c)}"
    timings.measure(benchmark, name, generate, rounds=ROUNDS[library][n])
    benchmark.extra_info["forward_steps_as_revseq_counts"] = binomial_steps(n, c)
    if library != "revseq":
        timings.ratio(benchmark, name, f"generate revseq {label(n, c)}", key="ratio_vs_revseq",
                      target=">= 5" if (n, c) == (1_000_000, 30) else "")  # fmt: skip


# -- one complete backprop -----------------------------------------------------------------------

BACKPROP_N, BACKPROP_C = 100_000, 20
X0 = np.linspace(0.1, 1.0, 100)
W = np.linspace(1.0, 2.0, 100)


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, np.ndarray]:
    return hand_written(X0, BACKPROP_N, W)


def test_backprop_revseq(benchmark, timings, reference):
    n, c = BACKPROP_N, BACKPROP_C
    strategy = revseq.BinomialCheckpointing(checkpoints=c)
    calls = [0]

    def counted_sin(x: np.ndarray) -> np.ndarray:
        calls[0] += 1
        return np.sin(x)

    revseq.backprop(revseq.Recurrence(counted_sin, df=np.cos), X0, n, strategy, adjoint=W)  # untimed: count calls
    rec = revseq.Recurrence(np.sin, df=np.cos)
    result = timings.measure(benchmark, f"backprop revseq {label(n, c)}",
                             lambda: revseq.backprop(rec, X0, n, strategy, adjoint=W), rounds=3)  # fmt: skip
    assert calls[0] == result.stats.forward_steps == binomial_steps(n, c)
    assert result.stats.peak_checkpoints == c
    np.testing.assert_allclose(result.state, reference[0], rtol=1e-12)
    np.testing.assert_allclose(result.gradient, reference[1], rtol=1e-10)
    benchmark.extra_info.update(forward_steps=calls[0], peak_checkpoints=result.stats.peak_checkpoints)


def make_revolver(pr, n: int, c: int):
    """A pyrevolve Revolver for x -> sin(x); returns (revolver, workspace)."""

    class Workspace(pr.Checkpoint):
        """The live state pyrevolve copies into its storage (takeshot) and back (restore), in place."""

        def __init__(self) -> None:
            self.x = X0.copy()  # restores write into this array: never hand pyrevolve the caller's x0
            self.before = X0  # input of the last forward step: the reverse step needs it
            self.g = W.copy()
            self.final = None
            self.calls = 0

        @property
        def dtype(self):
            return np.float64

        @property
        def size(self):
            return self.x.size

        def get_data(self, timestep):
            return [self.x]

        def get_data_location(self, timestep):
            return [self.x]

    class Forward(pr.Operator):
        def __init__(self, ws: Workspace) -> None:
            self.ws = ws

        def apply(self, t_start: int, t_end: int) -> None:
            ws = self.ws
            x = before = ws.x
            for _ in range(t_start, t_end):
                before, x = x, np.sin(x)
            ws.calls += t_end - t_start
            ws.before, ws.x = before, x
            if t_end == n:
                ws.final = x.copy()  # a later restore overwrites ws.x in place

    class Reverse(pr.Operator):
        def __init__(self, ws: Workspace) -> None:
            self.ws = ws

        def apply(self, t_start: int, t_end: int) -> None:
            assert t_end == t_start + 1  # pyrevolve reverses one step at a time
            self.ws.g = self.ws.g * np.cos(self.ws.before)

    ws = Workspace()
    return pr.Revolver(ws, Forward(ws), Reverse(ws), c, n), ws


def test_backprop_pyrevolve(benchmark, timings, reference):
    pr = pyrevolve()
    n, c = BACKPROP_N, BACKPROP_C
    phases: dict[str, float] = {}

    def run():
        start = time.perf_counter()
        revolver, ws = make_revolver(pr, n, c)  # the constructor walks the whole schedule once
        built = time.perf_counter()
        revolver.apply_forward()
        forward = time.perf_counter()
        revolver.apply_reverse()
        done = time.perf_counter()
        phases.update(construct=built - start, apply_forward=forward - built, apply_reverse=done - forward)
        return ws

    ws = timings.measure(benchmark, f"backprop pyrevolve Revolver {label(n, c)}", run, rounds=1)
    np.testing.assert_allclose(ws.final, reference[0], rtol=1e-12)
    np.testing.assert_allclose(ws.g, reference[1], rtol=1e-10)
    # T advances + firstrun, then one forward call before each of the n - 1 later reverse steps.
    assert ws.calls == binomial_steps(n, c) + n - 1
    benchmark.extra_info.update(forward_steps=ws.calls, forward_steps_revseq=binomial_steps(n, c),
                                seconds_last_round={k: round(v, 3) for k, v in phases.items()})  # fmt: skip
    timings.ratio(benchmark, f"backprop pyrevolve Revolver {label(n, c)}", f"backprop revseq {label(n, c)}",
                  key="ratio_vs_revseq", target="> 1")  # fmt: skip
