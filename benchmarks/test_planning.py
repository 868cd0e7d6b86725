"""Planning speed: the binomial schedule for large n, with no f run at all.

Three ways to consume ``BinomialCheckpointing(c).schedule(n)``:

- generate: pull every action and drop it (``deque(maxlen=0)``), the bare
  cost of the strategy's generator and the action objects;
- walk: a minimal executor that dispatches on each action's type and adds
  up forward steps and checkpoints held, what any interpreter must at least do;
- cost: ``strategy.schedule(n).cost()``, the simulator, which also validates every action
  (``strategy.cost(n)`` is a closed form for the built-ins: microseconds, not timed here).

The forward steps and peak checkpoints are deterministic, so they are
asserted against Griewank & Walther's closed form computed independently
(``_common.binomial_steps``); times are recorded only.
"""

from __future__ import annotations

import collections

import pytest
from _common import binomial_steps, interleaved, label, ratios, walk_revseq

import revseq
from revseq.strategies import multistage

CASES = [
    pytest.param(n, c, rounds, id=label(n, c))
    for n, c, rounds in [(10_000, 10, 10), (100_000, 20, 5), (1_000_000, 30, 2)]
]


@pytest.mark.parametrize(("n", "c", "rounds"), CASES)
def test_generate(benchmark, timings, n, c, rounds):
    schedule = revseq.BinomialCheckpointing(checkpoints=c).schedule(n)
    timings.measure(benchmark, f"revseq generate binomial {label(n, c)}",
                    lambda: collections.deque(schedule, maxlen=0), rounds=rounds)  # fmt: skip
    benchmark.extra_info["forward_steps"] = binomial_steps(n, c)


@pytest.mark.parametrize(("n", "c", "rounds"), CASES)
def test_walk(benchmark, timings, n, c, rounds):
    schedule = revseq.BinomialCheckpointing(checkpoints=c).schedule(n)
    steps, peak, count = timings.measure(benchmark, f"revseq walk binomial {label(n, c)}",
                                         lambda: walk_revseq(schedule, n), rounds=rounds)  # fmt: skip
    assert steps == binomial_steps(n, c)
    assert peak == c
    benchmark.extra_info.update(forward_steps=steps, peak_checkpoints=peak, actions=count)


@pytest.mark.parametrize(("n", "c", "rounds"), CASES)
def test_cost(benchmark, timings, n, c, rounds):
    strategy = revseq.BinomialCheckpointing(checkpoints=c)
    name = f"revseq cost() binomial {label(n, c)}"
    cost = timings.measure(benchmark, name, lambda: strategy.schedule(n).cost(), rounds=rounds)
    assert cost.forward_steps == binomial_steps(n, c)
    assert cost.peak_checkpoints == c
    benchmark.extra_info.update(forward_steps=cost.forward_steps, peak_checkpoints=cost.peak_checkpoints)
    timings.ratio(benchmark, name, f"revseq walk binomial {label(n, c)}", key="ratio_vs_walk")


# -- cost(n) of every built-in against a plain iteration of its schedule (issue 10) ---------------------

BUILT_IN = {
    "StoreAll": revseq.StoreAll(),
    "Recompute": revseq.Recompute(),
    "RecursiveHalving": revseq.RecursiveHalving(),
    "SqrtCheckpointing": revseq.SqrtCheckpointing(),
    "BinomialCheckpointing(20)": revseq.BinomialCheckpointing(checkpoints=20),
    "OnlineCheckpointing(20)": revseq.OnlineCheckpointing(checkpoints=20),
    "MultistageCheckpointing(ram=4)": revseq.MultistageCheckpointing(ram=4),
    "MultistageCheckpointing(ram=4, disk=10)": revseq.MultistageCheckpointing(ram=4, disk=10),
}


@pytest.mark.parametrize("name", list(BUILT_IN))
def test_cost_of_a_built_in_against_iterating_its_schedule(benchmark, timings, name):
    """Goal: ``strategy.cost(n)`` of a built-in in closed form, or within 1.3x of iterating its schedule.

    n = 10^5 (Recompute: 10^3, its schedule being quadratic). The cost is asserted equal to the simulator's
    (``schedule(n).cost()``, which validates every action) before anything is timed. Multistage's plans, cached
    per configuration, are cleared before each contender: both plan afresh.
    """
    strategy = BUILT_IN[name]
    n = 1_000 if name == "Recompute" else 100_000
    cost = strategy.cost(n)
    assert cost == strategy.schedule(n).cost()

    def cold_cost() -> revseq.Cost:
        multistage._CACHE.clear()  # multistage's plans, kept per configuration: planned afresh by both
        return strategy.cost(n)

    def cold_iteration() -> None:
        multistage._CACHE.clear()
        collections.deque(strategy.schedule(n), maxlen=0)

    times = interleaved({"cost(n)": cold_cost, "iterate": cold_iteration}, 5)
    summary = ratios(times, "cost(n)", "iterate")
    benchmark.extra_info.update(n=n, forward_steps=cost.forward_steps, ratio_cost_vs_iterate=summary)
    benchmark.pedantic(lambda: strategy.cost(n), rounds=1, iterations=1)
    timings.add(f"{name}.cost({n}) (CPU, median of 5 rounds)", "iterating its schedule", summary["median"],
                target="closed form or <= 1.3")  # fmt: skip
