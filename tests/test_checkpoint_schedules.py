"""The bridge to checkpoint_schedules, tested from the other side each way.

revseq -> theirs: the translated schedule drives a minimal executor written the
way checkpoint_schedules' documentation shows (``functools.singledispatch`` on
the action type, a loop that stops at ``EndReverse``) over a real recurrence.
The executor counts its own calls of the step function and the checkpoints it
holds; its gradient is compared with a plain store-everything reversal, and
its step count with revseq's prediction ``strategy.cost(n)`` converted to
their convention, and, for binomial schedules, with checkpoint_schedules' own
``optimal_steps_binomial``.

theirs -> revseq: their schedules run through ``revseq.backprop`` with a step
function that counts its calls; the gradient must equal StoreAll's, and the
count must equal their own ``Forward`` total converted to revseq's convention
(and Griewank-Walther's minimum for Revolve).
"""

from __future__ import annotations

import functools
import itertools
import re
import sys
from pathlib import Path

import attrs
import numpy as np
import pytest
from every_other import EveryOther

import revseq
import revseq.testing
from revseq import Advance, Restore, Reverse, Store

cs = pytest.importorskip("checkpoint_schedules", reason="pip install 'revseq[checkpoint-schedules]'")
bridge = pytest.importorskip("revseq.checkpoint_schedules")

from checkpoint_schedules import (  # noqa: E402
    Copy,
    EndForward,
    EndReverse,
    Forward,
    Move,
    StorageType,
)
from checkpoint_schedules import Reverse as TheirReverse  # noqa: E402

RAM, DISK, WORK, NONE = StorageType.RAM, StorageType.DISK, StorageType.WORK, StorageType.NONE

# Their MixedCheckpointSchedule warns when numba is missing, and PeriodicDiskRevolve prints its period.
pytestmark = pytest.mark.filterwarnings("ignore:Numba not available:RuntimeWarning")


def step(x):
    return np.sin(x) + 0.3 * x


def dstep(x):
    return np.cos(x) + 0.3


X0 = np.random.default_rng(0).uniform(-1.0, 1.0, 5)
SEED = np.random.default_rng(1).uniform(-1.0, 1.0, 5)


def plain_reversal(n):
    """x_n and d(SEED . x_n)/d x0 by storing every state: the oracle."""
    states = [X0]
    for _ in range(n):
        states.append(step(states[-1]))
    adj = SEED
    for t in range(n - 1, -1, -1):
        adj = adj * dstep(states[t])
    return states[n], adj


# -- a minimal executor, written as their documentation shows ----------------------------------------


@attrs.define
class Run:
    state: object = None  # x_n
    gradient: object = None
    calls: int = 0  # calls of the step function
    peak: dict = attrs.Factory(lambda: {RAM: 0, DISK: 0})  # checkpoints held at once, per storage
    peak_held: int = 0  # checkpoints at both levels plus adjoint dependencies in WORK, at once


def execute(schedule, n):
    """Run ``schedule`` for ``n`` steps of ``step``; a forward that is told no length stops at ``n`` and finalizes."""
    run = Run()
    snapshots = {RAM: {}, DISK: {}}  # step -> ("ics" or "deps", state)
    forward = {"n": 0, "x": X0}  # the state in WORK and its step (n None: only dependencies are loaded)
    deps = {}  # step t -> x_t: what the adjoint of step t needs, in WORK
    adjoint = {"r": 0, "adj": None}

    def f(x):
        run.calls += 1
        return step(x)

    @functools.singledispatch
    def action(cp_action):
        raise TypeError(f"Unexpected checkpointing action: {cp_action}")

    @action.register(Forward)
    def action_forward(cp_action):
        assert forward["n"] == cp_action.n0, (forward["n"], cp_action)
        n1 = min(cp_action.n1, n)
        assert n1 <= n - adjoint["r"]  # never beyond the adjoint
        deps.clear()
        x = forward["x"]
        if cp_action.write_ics:
            assert cp_action.storage in (RAM, DISK)
            assert cp_action.n0 not in snapshots[cp_action.storage]
            snapshots[cp_action.storage][cp_action.n0] = ("ics", x.copy())
        for t in range(cp_action.n0, n1):
            if cp_action.write_adj_deps:
                if cp_action.storage == WORK:
                    deps[t] = x
                else:
                    assert t not in snapshots[cp_action.storage]
                    snapshots[cp_action.storage][t] = ("deps", x.copy())
            x = f(x)
        forward["n"], forward["x"] = n1, x
        if n1 == n and run.state is None:
            run.state = x
        if cp_action.n1 >= n and schedule.max_n is None:
            schedule.finalize(n)

    @action.register(TheirReverse)
    def action_reverse(cp_action):
        assert cp_action.n1 == n - adjoint["r"]
        for t in range(cp_action.n1 - 1, cp_action.n0 - 1, -1):
            adjoint["adj"] = adjoint["adj"] * dstep(deps[t])
            adjoint["r"] += 1
        if cp_action.clear_adj_deps:
            deps.clear()

    def load(cp_action, move):
        kind, x = snapshots[cp_action.from_storage][cp_action.n]
        if move:
            del snapshots[cp_action.from_storage][cp_action.n]
        if cp_action.to_storage == NONE:
            assert move
        elif cp_action.to_storage == WORK:
            deps.clear()
            if kind == "ics":
                forward["n"], forward["x"] = cp_action.n, x.copy()
            else:
                forward["n"] = None
                deps[cp_action.n] = x
        else:
            snapshots[cp_action.to_storage][cp_action.n] = (kind, x)

    @action.register(Copy)
    def action_copy(cp_action):
        load(cp_action, move=False)

    @action.register(Move)
    def action_move(cp_action):
        load(cp_action, move=True)

    @action.register(EndForward)
    def action_end_forward(cp_action):
        assert forward["n"] == n
        adjoint["adj"] = SEED

    @action.register(EndReverse)
    def action_end_reverse(cp_action):
        assert adjoint["r"] == n

    for cp_action in schedule:
        action(cp_action)
        for storage, held in snapshots.items():
            run.peak[storage] = max(run.peak[storage], len(held))
        run.peak_held = max(run.peak_held, len(snapshots[RAM]) + len(snapshots[DISK]) + len(deps))
        if isinstance(cp_action, EndReverse):
            break
    assert not snapshots[RAM], "checkpoints left behind"
    assert not snapshots[DISK], "checkpoints left behind"
    run.gradient = adjoint["adj"]
    return run


# -- revseq -> checkpoint_schedules ------------------------------------------------------------------

STRATEGIES = [
    revseq.StoreAll(),
    revseq.Recompute(),
    revseq.BinomialCheckpointing(checkpoints=3),
    revseq.BinomialCheckpointing(checkpoints=6),
    revseq.SqrtCheckpointing(),
    revseq.RecursiveHalving(),
    revseq.OnlineCheckpointing(checkpoints=4),
    revseq.MultistageCheckpointing(ram=2, disk=3),
    EveryOther(),
]


def taped_savings(strategy, n):
    """Steps the executor saves with tape_kept: an Advance(a, b, keep=True) directly followed by a
    Reverse(s, b + 1), s <= a + 1, tapes steps max(s, a) .. b in one Forward of one extra step instead
    of one re-run each. Read off revseq's own action list."""
    actions = list(strategy.actions(n))
    saved = 0
    for advance, following in itertools.pairwise(actions):
        if (
            type(advance) is Advance
            and advance.keep
            and type(following) is Reverse
            and following.stop == advance.stop + 1
            and following.start <= advance.start + 1
        ):
            saved += advance.stop + 1 - max(following.start, advance.start) - 1
    return saved


def computes_output(strategy, n):
    """Whether the schedule advances to x_n itself (an online one does) instead of leaving it to the reversal."""
    return any(type(a) is Advance and a.stop == n for a in strategy.actions(n))


@pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
@pytest.mark.parametrize("n", [1, 2, 9, 30])
@pytest.mark.parametrize("tape_kept", [False, True])
def test_revseq_schedule_drives_their_executor(strategy, n, tape_kept):
    cost = strategy.cost(n)
    run = execute(bridge.to_checkpoint_schedule(strategy, n, tape_kept=tape_kept), n)
    state, gradient = plain_reversal(n)
    np.testing.assert_allclose(run.state, state, rtol=1e-13, atol=0)
    np.testing.assert_allclose(run.gradient, gradient, rtol=1e-12, atol=0)
    # Their convention: one re-run of each step before its adjoint (n), on top of revseq's advances, which are
    # revseq's count less the call producing x_n when the reversal makes it.
    expected = cost.forward_steps + n - (0 if computes_output(strategy, n) else 1)
    if tape_kept:
        expected -= taped_savings(strategy, n)
    assert run.calls == expected
    # Checkpoints: never more than revseq holds, at either level.
    assert run.peak[RAM] <= cost.peak_checkpoints
    assert run.peak[DISK] <= cost.peak_disk
    assert run.peak_held <= cost.peak_checkpoints + cost.peak_disk + 1


@pytest.mark.parametrize(("n", "c"), [(2, 1), (9, 3), (30, 4), (30, 29), (40, 6)])
def test_binomial_matches_their_optimum(n, c):
    """Through their executor, revseq's binomial schedule makes exactly their optimal_steps_binomial, with the
    same c checkpoints as their MultistageCheckpointSchedule; taping kept ranges makes it fewer."""
    strategy = revseq.BinomialCheckpointing(checkpoints=c)
    theirs = execute(cs.MultistageCheckpointSchedule(n, c, 0), n)
    plain = execute(bridge.to_checkpoint_schedule(strategy, n, tape_kept=False), n)
    taped = execute(bridge.to_checkpoint_schedule(strategy, n), n)
    optimum = cs.optimal_steps_binomial(n, min(c, n - 1))
    assert theirs.calls == plain.calls == optimum
    assert plain.peak[RAM] == theirs.peak[RAM] == min(c, n - 1)
    assert taped.calls <= optimum
    np.testing.assert_allclose(taped.gradient, theirs.gradient, rtol=1e-12, atol=0)


@pytest.mark.parametrize("n", [1, 5, 17, 40])
def test_online_schedule_with_length_learnt_by_the_executor(n):
    """max_n=None: the executor's forward decides where it stops and calls finalize(n), as their online
    schedules (TwoLevelCheckpointSchedule) expect; revseq's online strategy then reverses."""
    strategy = revseq.OnlineCheckpointing(checkpoints=4)
    schedule = bridge.to_checkpoint_schedule(strategy)
    assert schedule.max_n is None
    run = execute(schedule, n)
    state, gradient = plain_reversal(n)
    np.testing.assert_allclose(run.gradient, gradient, rtol=1e-12, atol=0)
    np.testing.assert_allclose(run.state, state, rtol=1e-13, atol=0)
    assert schedule.is_exhausted
    cost = strategy.cost(n)
    assert run.calls == cost.forward_steps + n - taped_savings(strategy, n)
    assert run.peak[RAM] <= cost.peak_checkpoints == min(4, n)


def test_disk_checkpoints_use_their_disk_storage():
    strategy = revseq.MultistageCheckpointing(ram=1, disk=2)
    schedule = bridge.to_checkpoint_schedule(strategy, 20)
    assert schedule.uses_storage_type(DISK)
    assert schedule.uses_storage_type(RAM)
    assert not bridge.to_checkpoint_schedule(revseq.StoreAll(), 20).uses_storage_type(DISK)
    run = execute(schedule, 20)
    cost = strategy.cost(20)
    assert 0 < run.peak[DISK] <= cost.peak_disk
    assert run.peak[RAM] <= cost.peak_checkpoints


@attrs.frozen
class StoreThenWander(revseq.ReversalStrategy):
    """A user's legal order their actions cannot say in place: Store(t) with no Advance from x_t next."""

    def actions(self, n):
        yield Store(0)
        yield Advance(0, n - 1)
        yield Store(n - 1)  # stored, then the live state moves on by a Restore: a Forward must write it
        yield Restore(0)
        yield Advance(0, 1)
        yield Restore(n - 1)
        yield Reverse(n - 1, n)
        for t in range(n - 2, -1, -1):
            yield Restore(0)
            if t:
                yield Advance(0, t)
            yield Reverse(t, t + 1)


def test_user_store_without_advance_costs_their_executor_one_step():
    n = 6
    strategy = StoreThenWander()
    run = execute(bridge.to_checkpoint_schedule(strategy, n, tape_kept=False), n)
    np.testing.assert_allclose(run.gradient, plain_reversal(n)[1], rtol=1e-12, atol=0)
    assert run.calls == strategy.cost(n).forward_steps + n - 1 + 1  # the Forward that writes x_{n-1}


def test_illegal_user_strategy_is_refused_while_translating():
    @attrs.frozen
    class Skips(revseq.ReversalStrategy):
        def actions(self, n):
            yield Store(0)
            yield Restore(3)

    with pytest.raises(revseq.ScheduleError, match="x_3 is not stored"):
        list(bridge.to_checkpoint_schedule(Skips(), 5))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((revseq.StoreAll, 5), "ReversalStrategy instance, got the class StoreAll"),
        (("binomial", 5), "strategy must be a ReversalStrategy instance"),
        ((revseq.StoreAll(), 0), "max_n must be an int >= 1, got 0"),
        ((revseq.StoreAll(), True), "max_n must be an int >= 1, got True"),
        ((revseq.StoreAll(), None), "max_n=None .* needs an OnlineStrategy"),
    ],
)
def test_to_checkpoint_schedule_rejects_bad_input(args, message):
    with pytest.raises(revseq.ParameterError, match=message):
        bridge.to_checkpoint_schedule(*args)


def test_missing_library_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "checkpoint_schedules", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'revseq\[checkpoint-schedules\]'"):
        bridge.to_checkpoint_schedule(revseq.StoreAll(), 5)


# -- checkpoint_schedules -> revseq ------------------------------------------------------------------


def their_counts(make, n):
    """Walk a fresh schedule of theirs, counting as they do: the Forward total, the Forwards writing adjoint
    dependencies to WORK, whether the first Forward to reach x_n is one, and the peak of checkpoints held."""
    schedule = make(n)
    total = work_deps = 0
    output_in_work = None
    held = {RAM: set(), DISK: set()}
    peak = {RAM: 0, DISK: 0}
    for cp_action in schedule:
        if isinstance(cp_action, Forward):
            n1 = min(cp_action.n1, n)
            total += n1 - cp_action.n0
            in_work = cp_action.write_adj_deps and cp_action.storage == WORK
            work_deps += in_work
            if n1 == n and output_in_work is None:
                output_in_work = in_work
            if cp_action.write_ics:
                held[cp_action.storage].add(cp_action.n0)
            elif cp_action.write_adj_deps and cp_action.storage != WORK:
                held[cp_action.storage].update(range(cp_action.n0, n1))
            if schedule.max_n is None and cp_action.n1 >= n:
                schedule.finalize(n)
        elif isinstance(cp_action, Move):
            held[cp_action.from_storage].discard(cp_action.n)
        elif isinstance(cp_action, EndReverse):
            break
        for storage in held:
            peak[storage] = max(peak[storage], len(held[storage]))
    return total, work_deps, output_in_work, peak


THEIRS = {
    "Revolve(n, 3)": lambda n: cs.Revolve(n, 3),
    "Revolve(n, 6)": lambda n: cs.Revolve(n, 6),
    "Multistage(n, 4, 0)": lambda n: cs.MultistageCheckpointSchedule(n, 4, 0),
    "Multistage(n, 1, 2)": lambda n: cs.MultistageCheckpointSchedule(n, 1, 2),
    "HRevolve(n, 1, 2)": lambda n: cs.HRevolve(n, 1, 2),
    "DiskRevolve(n, 2)": lambda n: cs.DiskRevolve(n, 2),
    "Mixed(n, 3)": lambda n: cs.MixedCheckpointSchedule(n, 3),
    "Mixed(n, 3, RAM)": lambda n: cs.MixedCheckpointSchedule(n, 3, storage=RAM),
    "TwoLevel(4, 2)": lambda n: cs.TwoLevelCheckpointSchedule(4, 2),
    "TwoLevel(3, 1, RAM)": lambda n: cs.TwoLevelCheckpointSchedule(3, 1, binomial_storage=RAM),
    "SingleMemory": lambda n: cs.SingleMemoryStorageSchedule(),
    "SingleDisk": lambda n: cs.SingleDiskStorageSchedule(),
    "SingleDisk(move)": lambda n: cs.SingleDiskStorageSchedule(move_data=True),
}


def counting(recurrence_calls):
    def f(x):
        recurrence_calls[0] += 1
        return step(x)

    return revseq.Recurrence(f=f, df=dstep)


@pytest.mark.parametrize("name", list(THEIRS))
@pytest.mark.parametrize("n", [2, 9, 25])
def test_their_schedule_runs_in_backprop(name, n):
    make = THEIRS[name]
    strategy = bridge.FromCheckpointSchedule(make)
    calls = [0]
    out = revseq.backprop(counting(calls), X0, n, strategy, adjoint=SEED)
    reference = revseq.backprop(revseq.Recurrence(f=step, df=dstep), X0, n, revseq.StoreAll(), adjoint=SEED)
    np.testing.assert_allclose(out.gradient, reference.gradient, rtol=1e-12, atol=0)
    np.testing.assert_allclose(out.state, reference.state, rtol=1e-13, atol=0)
    total, work_deps, output_in_work, peak = their_counts(make, n)
    # revseq does not re-run the step whose dependencies a Forward writes to WORK, except the one producing x_n.
    assert calls[0] == out.stats.forward_steps == total - work_deps + int(output_in_work)
    assert strategy.cost(n).forward_steps == calls[0]  # the simulator predicts what the engine counted
    assert out.stats.peak_checkpoints <= max(peak[RAM], 1) + (n if name == "SingleMemory" else 0)


@pytest.mark.parametrize(("n", "c"), [(9, 3), (25, 3), (25, 6), (40, 5)])
def test_revolve_makes_griewank_walthers_minimum(n, c):
    for make in (lambda n: cs.Revolve(n, c), lambda n: cs.MultistageCheckpointSchedule(n, c, 0)):
        strategy = bridge.FromCheckpointSchedule(make, checkpoints=c)
        calls = [0]
        out = revseq.backprop(counting(calls), X0, n, strategy, adjoint=SEED)
        assert (
            calls[0]
            == revseq.optimal_forward_steps(n, c)
            == revseq.BinomialCheckpointing(checkpoints=c).cost(n).forward_steps
        )
        assert out.stats.peak_checkpoints == c


@pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
@pytest.mark.parametrize("tape_kept", [False, True])
def test_round_trip_keeps_the_cost(strategy, tape_kept):
    """revseq -> theirs -> revseq: the two conversions undo each other on forward steps and on checkpoints held
    at each level (reads differ: a state their Reverse needs is loaded into WORK first, a revseq Restore)."""

    def make(n):
        return bridge.to_checkpoint_schedule(strategy, n, tape_kept=tape_kept)

    for n in (1, 30):
        back, cost = bridge.FromCheckpointSchedule(make).cost(n), strategy.cost(n)
        assert back.forward_steps == cost.forward_steps
        # A stored state released unread is not written at all (EveryOther stores x_0 for n = 1).
        assert back.peak_checkpoints == cost.peak_checkpoints or (n, back.peak_checkpoints) == (1, 0)
        assert (back.peak_disk, back.disk_writes) == (cost.peak_disk, cost.disk_writes)


@pytest.mark.parametrize("name", ["Revolve(n, 3)", "Multistage(n, 1, 2)", "Mixed(n, 3)", "TwoLevel(4, 2)"])
def test_their_schedule_passes_revseqs_contract(name):
    revseq.testing.check_strategy(bridge.FromCheckpointSchedule(THEIRS[name]), ns=[1, 2, 3, 7, 20])


class _CopiesBetweenLevels(cs.CheckpointSchedule):
    def _iterator(self):
        yield Forward(0, 1, True, False, RAM)
        yield Copy(0, RAM, DISK)

    def uses_storage_type(self, storage_type):
        return True


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda n: cs.NoneCheckpointSchedule(), "NoneCheckpointSchedule, which runs no adjoint"),
        (lambda n: _CopiesBetweenLevels(n), "copies x_0 from StorageType.RAM to StorageType.DISK"),
        (lambda n: "revolve", "must return a checkpoint_schedules.CheckpointSchedule"),
        (lambda n: cs.Revolve(n + 1, 2), "must return a schedule for 5 steps, got one with max_n=6"),
    ],
)
def test_untranslatable_schedules_are_refused(make, message):
    with pytest.raises(revseq.ScheduleError, match=message):
        revseq.backprop(revseq.Recurrence(f=step, df=dstep), X0, 5, bridge.FromCheckpointSchedule(make))


def test_a_reused_schedule_is_refused():
    schedule = cs.Revolve(5, 2)
    next(schedule)
    with pytest.raises(revseq.ScheduleError, match="one-shot iterators"):
        bridge.FromCheckpointSchedule(lambda n: schedule).cost(5)


def test_their_schedule_is_checked_by_the_engine():
    """A user strategy for revseq: a budget it breaks stops the run, naming the action."""
    strategy = bridge.FromCheckpointSchedule(lambda n: cs.Revolve(n, 4), checkpoints=3)
    with pytest.raises(revseq.ScheduleError, match="over the budget of 3"):
        revseq.backprop(revseq.Recurrence(f=step, df=dstep), X0, 20, strategy)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"make": cs.Revolve}, "make must be a function of n"),
        ({"make": 5}, "make must be a function of n"),
        ({"make": lambda n: cs.Revolve(n, 2), "checkpoints": -1}, "checkpoints must be an int >= 0, got -1"),
        ({"make": lambda n: cs.Revolve(n, 2), "checkpoints": True}, "checkpoints must be an int >= 0, got True"),
    ],
)
def test_from_checkpoint_schedule_rejects_bad_input(kwargs, message):
    with pytest.raises(revseq.ParameterError, match=message):
        bridge.FromCheckpointSchedule(**kwargs)


# -- the documentation ---------------------------------------------------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "checkpoint_schedules.md"


def test_doc_example_runs_and_prints_what_it_says(capsys):
    text = DOC.read_text()
    block = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    exec(compile(block, str(DOC), "exec"), {"__name__": "doc"})
    printed = capsys.readouterr().out.split("\n")
    assert printed[:2] == ["317 404", "317 5"]
    assert "It prints `317 404`" in text
    assert "and `317 5`" in text


def test_doc_tables_are_what_runs_give():
    """Every row of the two measured tables with n <= 100, recomputed (n = 200 only in the doc's own run)."""
    text = DOC.read_text()
    namespace = {"__name__": "doc"}
    exec(
        compile(re.findall(r"```python\n(.*?)```", text, re.S)[0].split("\nn = 100\n")[0], str(DOC), "exec"), namespace
    )
    execute_doc = namespace["execute"]
    x0, seed = np.full(4, 0.5), np.ones(4)
    for n, c in [(20, 3), (100, 5)]:
        for strategy in (revseq.BinomialCheckpointing(checkpoints=c), revseq.OnlineCheckpointing(checkpoints=c)):
            cells = [strategy.cost(n).forward_steps]
            for tape_kept in (False, True):
                schedule = bridge.to_checkpoint_schedule(strategy, n, tape_kept=tape_kept)
                cells.append(execute_doc(schedule, n, x0, np.sin, np.cos, seed)[2])
            cells.append(cs.optimal_steps_binomial(n, c))
            row = f"| `{type(strategy).__name__}(checkpoints={c})` | {n} | " + " | ".join(map(str, cells)) + " |"
            assert row in text
        for name, make in [
            (f"Revolve(n, {c})", lambda n, c=c: cs.Revolve(n, c)),
            (
                f"MultistageCheckpointSchedule(n, 1, {c - 1})",
                lambda n, c=c: cs.MultistageCheckpointSchedule(n, 1, c - 1),
            ),
            (f"MixedCheckpointSchedule(n, {c})", lambda n, c=c: cs.MixedCheckpointSchedule(n, c)),
            (f"TwoLevelCheckpointSchedule({n // c}, 2)", lambda n, c=c: cs.TwoLevelCheckpointSchedule(n // c, 2)),
        ]:
            rec = revseq.Recurrence(f=np.sin, df=np.cos)
            stats = revseq.backprop(rec, x0, n, bridge.FromCheckpointSchedule(make), adjoint=seed).stats
            total = their_counts(make, n)[0]
            row = f"| `{name}` | {n} | {total} | {stats.forward_steps} | {stats.peak_checkpoints} | {stats.peak_disk} |"
            assert row in text
