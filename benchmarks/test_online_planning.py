"""OnlineCheckpointing planning speed, per step, against a cheap step and binomial's schedule (issue 10).

For c = 10, 100, 1000 and n = 10^4, 10^5, 10^6, no f run at all:

- sweep: the forward sweep as an online run pulls it (the engine's ``n=None``
  path iterates ``strategy.forward()`` until the run stops), drained up to
  ``x_n`` (``deque(islice(forward(), count))``, ``count`` the actions before
  the cut, counted once beforehand); what planning adds to each step of a run.
  The adaptive rule's placements are kept in a table shared by every sweep
  with the same budget, so this is every run but the first;
- cold sweep: the same with that table emptied first, as the first run with
  a given budget in a process pays it;
- sweep before, schedule before: the same with revseq as it was at commit
  ``85095c0`` (loaded beside the current package, ``_revision.py``), before
  the table;
- schedule: ``deque(OnlineCheckpointing(c).schedule(n), maxlen=0)``, the whole
  known-n schedule (the sweep cut at ``x_n`` by ``OnlineStrategy.actions``,
  then the reversal, Revolve on each segment);
- cost: ``OnlineCheckpointing(c).cost(n)``, computed from the checkpoints the
  sweep places, without walking the schedule.

Baselines, in the same rounds: a cheap step, ``np.sin`` on a 0-d array, ``n``
times; and ``deque(BinomialCheckpointing(c).schedule(n), maxlen=0)``. Goals:
sweep and schedule <= 1 us per step at every c (a cheap step's time), cost()
<= 1.3x plain iteration of the schedule.

Each round runs every contender once, the order rotating; CPU time
(``time.process_time``). Reported: microseconds per step (median over rounds)
and the medians of the per-round ratios with quartiles and range, in
``extra_info`` and the end-of-run table. Nothing asserts a time. The costs
are asserted: ``cost(n)`` against a walk of the schedule written here
(independent of revseq's simulator) and, in the optimal range, against
``2n - c`` (``n`` for ``n <= c``).
"""

from __future__ import annotations

import bisect
import collections
import itertools
import statistics
from typing import Any

import numpy as np
import pytest
from _common import interleaved, label, ratios
from _revision import revision_or_skip

import revseq
from revseq import Advance, Free, Reverse, Store
from revseq.strategies import online

BEFORE = "85095c0"  # the commit before the shared table of placements

CASES = [
    pytest.param(n, c, rounds, id=label(n, c))
    for c in (10, 100, 1000)
    for n, rounds in ((10**4, 9), (10**5, 5), (10**6, 3))
]


def actions_before(strategy: revseq.OnlineCheckpointing, n: int) -> int:
    """How many actions ``forward()`` yields before the ``Advance`` that reaches ``x_n``, and that one."""
    for count, action in enumerate(strategy.forward(), 1):
        if type(action) is Advance and action.stop >= n:
            return count
    raise AssertionError("the forward sweep ended")


def walk(actions: Any, n: int) -> tuple[int, int, int, int]:
    """Forward steps (x_n's call included), peak checkpoints, writes and reads, by a plain walk of the actions.

    The held steps in a sorted list: ``Store`` inserts, ``Free`` drops a
    range, ``Reverse`` drops everything at or after its start,
    ``Advance(keep=True)`` adds the states it passes. The output ``x_n`` is
    computed by the Advance that reaches it, or else with the Reverse of
    step ``n - 1``.
    """
    held: list[int] = []
    steps = peak = writes = reads = 0
    computed_n = False
    for action in actions:
        kind = type(action)
        if kind is Advance:
            steps += action.stop - action.start
            computed_n = computed_n or action.stop == n
            if action.keep:
                for t in range(action.start + 1, action.stop):
                    bisect.insort(held, t)
                writes += action.stop - action.start - 1
        elif kind is Store:
            bisect.insort(held, action.step)
            writes += 1
        elif kind is Free:
            del held[bisect.bisect_left(held, action.start) : bisect.bisect_left(held, action.stop)]
        elif kind is Reverse:
            if action.stop == n and not computed_n:
                steps += 1
            del held[bisect.bisect_left(held, action.start) :]
        else:
            reads += 1
        peak = max(peak, len(held))
    return steps, peak, writes, reads


def sine_steps(n: int) -> None:
    x = np.array(0.5)
    for _ in range(n):
        x = np.sin(x)


@pytest.mark.parametrize(("n", "c", "rounds"), CASES)
def test_online_planning(benchmark, timings, n, c, rounds):
    old = revision_or_skip(BEFORE)
    strategy = revseq.OnlineCheckpointing(checkpoints=c)
    before = old.OnlineCheckpointing(checkpoints=c)
    schedule = strategy.schedule(n)
    cost = strategy.cost(n)
    assert (cost.forward_steps, cost.peak_checkpoints, cost.writes, cost.reads) == walk(schedule, n)
    if n <= (c + 1) * (c + 2) // 2 - 1:
        assert cost.forward_steps == (n if n <= c else 2 * n - c)
    count = actions_before(strategy, n)
    plain = lambda actions: [(type(a).__name__, *a) for a in itertools.islice(actions, count)]  # noqa: E731
    assert plain(before.forward()) == plain(strategy.forward())  # the old package's action classes are its own
    binomial = revseq.BinomialCheckpointing(checkpoints=c).schedule(n)

    def cold() -> None:
        online._TABLES.pop(c, None)  # the first run with this budget in the process
        collections.deque(itertools.islice(strategy.forward(), count), maxlen=0)

    contenders = {
        "sweep": lambda: collections.deque(itertools.islice(strategy.forward(), count), maxlen=0),
        "cold sweep": cold,
        "sweep before": lambda: collections.deque(itertools.islice(before.forward(), count), maxlen=0),
        "schedule": lambda: collections.deque(schedule, maxlen=0),
        "schedule before": lambda: collections.deque(before.schedule(n), maxlen=0),
        "cost": lambda: strategy.cost(n),
        "binomial": lambda: collections.deque(binomial, maxlen=0),
        "step": lambda: sine_steps(n),
    }
    times = interleaved(contenders, rounds)
    benchmark.pedantic(lambda: collections.deque(schedule, maxlen=0), rounds=1, iterations=1)
    per_step = {name: round(statistics.median(cpu) / n * 1e6, 3) for name, (cpu, _) in times.items()}
    found = {
        "sweep / step": (ratios(times, "sweep", "step"), "<= 1"),
        "cold sweep / step": (ratios(times, "cold sweep", "step"), "<= 1"),
        "sweep / sweep before": (ratios(times, "sweep", "sweep before"), ""),
        "cold sweep / sweep before": (ratios(times, "cold sweep", "sweep before"), ""),
        "schedule / schedule before": (ratios(times, "schedule", "schedule before"), ""),
        "schedule / step": (ratios(times, "schedule", "step"), "<= 1"),
        "schedule / binomial": (ratios(times, "schedule", "binomial"), ""),
        "cost / schedule": (ratios(times, "cost", "schedule"), "<= 1.3"),
    }
    benchmark.extra_info.update(
        us_per_step=per_step,
        forward_steps=cost.forward_steps,
        peak_checkpoints=cost.peak_checkpoints,
        sweep_actions=count,
        rounds=rounds,
        **{key: value for key, (value, _) in found.items()},
    )
    for key, (value, target) in found.items():
        name, baseline = key.split(" / ")
        timings.add(
            f"online {name} / {baseline} {label(n, c)}",
            f"{baseline}, median of {rounds}",
            value["median"],
            target=target,
        )
    print(f"\n{label(n, c)}: us per step (median) {per_step}")
    for key, (value, _) in found.items():
        print(f"  {key}: median {value['median']}, quartiles {value['quartiles']}, range {value['range']}")
