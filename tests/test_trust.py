"""No silent wrong answers: one regression test (or a few) per way revseq used to give one.

Each test names the failure it guards against. The oracle is always
independent of the code under test: StoreAll's gradient on a pure step,
a state counted or compared from outside, the filesystem listed directly,
tracemalloc for bytes really held.
"""

from __future__ import annotations

import gc
import itertools
import os
import tracemalloc
from collections.abc import Iterator

import attrs
import numpy as np
import pytest

import revseq
from revseq import (
    Advance,
    Bounds,
    DiskStore,
    Free,
    MemoryStore,
    OnlineStrategy,
    ParameterError,
    Recurrence,
    Restore,
    ReversalStrategy,
    Reverse,
    ScheduleError,
    StepError,
    Store,
)
from revseq.strategies.binomial import revolve

SIN = Recurrence(np.sin, np.cos)


def store_all_gradient(n, x0=None, rec=SIN):
    x0 = np.linspace(-0.9, 0.8, 3) if x0 is None else x0
    return revseq.backprop(rec, x0, n, revseq.StoreAll()).gradient


def files_under(directory) -> list[str]:
    return [os.path.join(root, name) for root, _, names in os.walk(directory) for name in names]


# -- 1. a store belongs to one run at a time ------------------------------------------------


def test_two_walks_on_one_store_cannot_interleave():
    store = MemoryStore()
    first = revseq.walk(lambda x: x + 1, 0, 10, revseq.BinomialCheckpointing(3), store=store, output=False)
    second = revseq.walk(lambda x: x + 100, 0, 10, revseq.BinomialCheckpointing(3), store=store, output=False)
    assert next(first) == (9, 9)
    with pytest.raises(ParameterError, match=r"^store is in use by another run that has not ended"):
        next(second)
    # The first run is untouched by the refused one, and its states are its own.
    assert [int(x) for _, x in first] == list(range(8, -1, -1))
    assert len(store) == 0
    # Once the first has ended, the store can serve a new run.
    third = revseq.walk(lambda x: x + 100, 0, 4, revseq.StoreAll(), store=store, output=False)
    assert [int(x) for _, x in third] == [300, 200, 100, 0]


def test_a_walk_made_but_never_started_holds_nothing_and_clears_nothing():
    store = MemoryStore()
    idle = revseq.walk(np.sin, np.ones(2), 10, revseq.StoreAll(), store=store)
    running = revseq.walk(np.sin, np.ones(2), 10, revseq.StoreAll(), store=store)
    next(running)
    held = len(store)
    assert held == 9
    idle.close()  # it never started: it owns nothing, so it must not empty the running walk's store
    del idle
    gc.collect()
    assert len(store) == held
    assert len(list(running)) == 10
    assert len(store) == 0


def test_the_same_store_as_memory_and_disk_is_refused_before_anything_runs():
    store = MemoryStore()
    with pytest.raises(ParameterError, match=r"^store and disk must be two different stores"):
        revseq.backprop(SIN, np.ones(2), 10, store=store, disk=store)


def test_a_store_is_given_back_when_a_run_fails():
    store = MemoryStore()

    def f(x):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        revseq.backprop(Recurrence(f, np.cos), np.ones(2), 10, store=store)
    out = revseq.backprop(SIN, np.ones(2), 10, revseq.StoreAll(), store=store)  # not "in use"
    np.testing.assert_array_equal(out.gradient, store_all_gradient(10, np.ones(2)))


# -- 2. in-place and aliasing steps ----------------------------------------------------------


def sin_in_place(x):
    np.sin(x, out=x)
    return x


class ReusedBuffers:
    """np.sin into one of ``k`` buffers of its own, in turn: every state it returns is overwritten later."""

    def __init__(self, k: int) -> None:
        self.buffers = [np.empty(3) for _ in range(k)]
        self.calls = 0

    def __call__(self, x):
        out = self.buffers[self.calls % len(self.buffers)]
        self.calls += 1
        return np.sin(x, out=out)


STRATEGIES = [
    revseq.StoreAll(),
    revseq.BinomialCheckpointing(3),
    revseq.RecursiveHalving(),
    revseq.SqrtCheckpointing(),
    revseq.Recompute(),
]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
def test_an_in_place_step_is_refused_with_a_referencing_store_and_x0_is_untouched(strategy):
    x0 = np.linspace(-0.9, 0.8, 3)
    before = x0.copy()
    with pytest.raises(StepError, match=r"^f modified its argument in place: x_0 changed during the call f\(x_0\)"):
        revseq.backprop(Recurrence(sin_in_place, np.cos), x0, 20, strategy)
    np.testing.assert_array_equal(x0, before)


@pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
@pytest.mark.parametrize("store", [lambda: MemoryStore(copy=True), DiskStore], ids=["MemoryStore(copy)", "DiskStore"])
def test_an_in_place_step_is_exact_with_a_store_that_copies(strategy, store):
    x0 = np.linspace(-0.9, 0.8, 3)
    before = x0.copy()
    out = revseq.backprop(Recurrence(sin_in_place, np.cos), x0, 20, strategy, store=store())
    np.testing.assert_array_equal(out.gradient, store_all_gradient(20))
    np.testing.assert_array_equal(x0, before)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_a_step_reusing_its_output_buffers_is_refused(k):
    with pytest.raises(StepError, match=r"f wrote into x_1, an array it was given or returned earlier"):
        revseq.backprop(Recurrence(ReusedBuffers(k), np.cos), np.linspace(-0.9, 0.8, 3), 20, revseq.StoreAll())


@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_a_step_reusing_its_output_buffers_is_exact_with_a_store_that_copies(k):
    out = revseq.backprop(
        Recurrence(ReusedBuffers(k), np.cos), np.linspace(-0.9, 0.8, 3), 20, revseq.BinomialCheckpointing(3),
        store=MemoryStore(copy=True),
    )  # fmt: skip
    np.testing.assert_array_equal(out.gradient, store_all_gradient(20))


def test_a_pure_step_returning_its_input_or_a_view_of_it_is_accepted():
    # Aliasing alone is not a write: an identity step and a reversing view are pure.
    for f in (lambda x: x, lambda x: x[::-1]):
        out = revseq.backprop(Recurrence(f, lambda x: np.ones_like(x)), np.arange(3.0), 6, revseq.StoreAll())
        np.testing.assert_array_equal(out.gradient, np.ones(3))


def test_an_in_place_step_on_a_tree_state_is_refused():
    def f(s):
        s["a"] += 1.0
        return {"a": s["a"], "b": np.sin(s["b"])}

    state = {"a": np.zeros(2), "b": np.ones(2)}
    with pytest.raises(StepError, match="in place"):
        list(revseq.reverse(f, state, 5))
    np.testing.assert_array_equal(state["a"], np.zeros(2))


def test_a_vjp_writing_into_its_adjoint_does_not_change_the_callers_seed():
    def vjp(x, g):
        g *= np.cos(x)
        return g

    seed = np.array([1.0, 2.0, 3.0])
    out = revseq.backprop(Recurrence(np.sin, vjp=vjp), np.linspace(-0.9, 0.8, 3), 10, adjoint=seed)
    np.testing.assert_array_equal(seed, [1.0, 2.0, 3.0])
    want = revseq.backprop(SIN, np.linspace(-0.9, 0.8, 3), 10, revseq.StoreAll(), adjoint=np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(out.gradient, want.gradient)


# -- 3. what df, vjp, loss and the parameter gradients return --------------------------------

X0 = np.linspace(-0.9, 0.8, 3)
W = np.eye(3) * 0.9
PARAMS = {"W": W, "b": np.zeros(3)}


def rnn_vjp(h, p, g):
    z = p["W"] @ h + p["b"]
    gz = g * (1 - np.tanh(z) ** 2)
    return p["W"].T @ gz, {"W": np.outer(gz, h), "b": gz}


def rnn(vjp=rnn_vjp, loss=None):
    return Recurrence(lambda h, p: np.tanh(p["W"] @ h + p["b"]), vjp=vjp, params=PARAMS, loss=loss)


def square_loss(h, p):
    return float(h @ h), 2 * h, {"W": np.zeros((3, 3)), "b": np.zeros(3)}


BAD_OUTPUTS = {
    "vjp returns None": (Recurrence(np.sin, vjp=lambda x, g: None), r"vjp returned a gradient with respect to x_t"),
    "df broadcasts": (Recurrence(np.sin, lambda x: np.cos(x[:1])), r"df returned a derivative at step t=19 .* \(1,\)"),
    "df is a scalar": (Recurrence(np.sin, lambda x: 0.5), r"df returned a derivative at step t=19"),
    "df is complex": (Recurrence(np.sin, lambda x: np.cos(x) + 0j), r"where a real number was expected"),
    "df is text": (Recurrence(np.sin, lambda x: np.array(["a", "b", "c"])), r"where a real number was expected"),
    "loss gradient broadcasts": (
        Recurrence(np.sin, np.cos, loss=lambda x: (float(x.sum()), np.ones(1))),
        r"loss returned a gradient with respect to x_t at step t=20",
    ),
    "loss value is an array": (
        Recurrence(np.sin, np.cos, loss=lambda x: (x, np.ones(3))),
        r"loss returned a value at step t=20 that is not one real number",
    ),
    "parameter gradient misses a key": (
        rnn(vjp=lambda h, p, g: (rnn_vjp(h, p, g)[0], {"W": rnn_vjp(h, p, g)[1]["W"]})),
        r"vjp returned a gradient with respect to params at step t=19 .*keys \['W'\]",
    ),
    "parameter gradient broadcasts": (
        rnn(vjp=lambda h, p, g: (rnn_vjp(h, p, g)[0], {"W": np.ones((1, 3)), "b": rnn_vjp(h, p, g)[1]["b"]})),
        r"\['W'\]: shape \(1, 3\) float64 where shape \(3, 3\) was expected",
    ),
    "loss parameter gradient is None": (
        rnn(loss=lambda h, p: (float(h @ h), 2 * h, None)),
        r"loss returned a gradient with respect to params at step t=20",
    ),
}


@pytest.mark.parametrize("case", list(BAD_OUTPUTS), ids=str)
def test_a_callable_output_of_the_wrong_shape_or_type_is_refused_naming_it(case):
    rec, message = BAD_OUTPUTS[case]
    with pytest.raises(StepError, match=message):
        revseq.backprop(rec, X0, 20, revseq.BinomialCheckpointing(4))


def test_a_vjp_going_wrong_after_the_first_step_is_caught_at_the_end():
    calls = itertools.count()

    def vjp(x, g):
        return None if next(calls) == 19 else g * np.cos(x)  # the last step, t = 0

    with pytest.raises(StepError, match=r"^the gradient summed over all steps is not shaped like x0 \(None"):
        revseq.backprop(Recurrence(np.sin, vjp=vjp), X0, 20, revseq.StoreAll())


def test_a_correct_rnn_with_params_and_a_loss_passes_every_check():
    got = revseq.backprop(rnn(loss=square_loss), X0, 30, revseq.BinomialCheckpointing(4))
    want = revseq.backprop(rnn(loss=square_loss), X0, 30, revseq.StoreAll())
    np.testing.assert_array_equal(got.gradient, want.gradient)
    for key in PARAMS:
        np.testing.assert_array_equal(got.params_gradient[key], want.params_gradient[key])


# -- 5. a checkpoint holds its own bytes, not a larger buffer's --------------------------------


def test_a_byte_budget_holds_when_the_step_returns_views_into_large_buffers():
    def f(x):
        big = np.empty(1 << 17)  # 1 MiB, of which the state is a 100-float view
        np.sin(x, out=big[:100])
        return big[:100]

    x0 = np.linspace(-0.9, 0.8, 100)
    strategy = revseq.BinomialCheckpointing(max_bytes=16 * 1024)  # 20 states of 800 bytes
    revseq.backprop(Recurrence(f, np.cos), x0, 50, strategy)  # warm up numpy's caches
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        out = revseq.backprop(Recurrence(f, np.cos), x0, 200, strategy)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert out.stats.peak_checkpoints == 20
    assert out.stats.peak_bytes == 20 * 800
    # Held as views, the 20 checkpoints would keep 20 MiB of buffers alive; copied, they hold 16 KiB.
    # Besides them, states that are not checkpoints each keep a 1 MiB buffer of f's alive: x_n (the
    # result), the live state, the one the adjoint loop is at, the one f is filling. Five at most.
    assert peak < out.stats.peak_bytes + 5 * (1 << 20), peak
    np.testing.assert_array_equal(out.gradient, store_all_gradient(200, x0))


# -- 6. a walk dropped before it ends releases what it holds ------------------------------------


@pytest.mark.parametrize("make_store", [MemoryStore, DiskStore], ids=["memory", "disk"])
@pytest.mark.parametrize("kind", ["walk", "reverse"])
def test_a_dropped_walk_empties_its_store_and_leaves_no_file(make_store, kind, tmp_path):
    store = make_store() if make_store is MemoryStore else make_store(tmp_path)
    run = revseq.walk if kind == "walk" else revseq.reverse
    it = run(np.sin, np.ones(4), 50, revseq.BinomialCheckpointing(5), store=store)
    next(it)
    next(it)
    assert len(store) > 0
    del it
    gc.collect()
    assert len(store) == 0
    assert files_under(tmp_path) == []
    # ... and the store is free for the next run.
    assert len(list(revseq.reverse(np.sin, np.ones(4), 10, store=store))) == 10


def test_a_dropped_multistage_walk_removes_its_own_disk_files(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    strategy = revseq.MultistageCheckpointing(ram=1, disk=None, costs=revseq.DiskCosts(1, 0.01, 0.01))
    it = revseq.walk(np.sin, np.ones(4), 40, strategy)
    for _ in range(3):
        next(it)
    assert files_under(tmp_path), "the schedule should have written to disk by now"
    del it
    gc.collect()
    assert files_under(tmp_path) == []


# -- 7. a schedule that loops forever is stopped --------------------------------------------


@attrs.frozen
class Looping(ReversalStrategy):
    """Legal actions forever, of one of three kinds."""

    kind: str

    def actions(self, n: int) -> Iterator[revseq.Action]:
        yield Store(0)
        for _ in itertools.count():
            if self.kind == "restore":
                yield Restore(0)
            elif self.kind == "store-free":
                yield Free(0, 1)
                yield Store(0)
            else:  # re-advance from x_0 over and over
                yield Restore(0)
                yield Advance(0, n - 1)


@pytest.mark.parametrize("kind", ["restore", "store-free", "advance"])
@pytest.mark.parametrize("entry", ["backprop", "cost"])
def test_a_schedule_making_no_progress_is_stopped(kind, entry):
    strategy = Looping(kind)
    run = (lambda: revseq.backprop(SIN, np.ones(2), 30, strategy)) if entry == "backprop" else lambda: strategy.cost(30)
    with pytest.raises(ScheduleError, match=r"without progress: the schedule is repeating itself"):
        run()


def test_the_progress_rule_leaves_every_built_in_far_inside_it():
    # The rule's margins, checked on the longest phases the built-ins have.
    for strategy in [*STRATEGIES, revseq.OnlineCheckpointing(checkpoints=1), revseq.OnlineCheckpointing(checkpoints=4)]:
        for n in (1, 2, 3, 7, 64, 300):
            strategy.cost(n)  # raises if the rule fired


# -- 8. what cannot fit is refused at once ----------------------------------------------------


def test_store_all_for_a_trillion_steps_is_refused_before_running():
    with pytest.raises(ParameterError, match=r"^n is too large to run here: StoreAll\(\) for 1000000000000 steps"):
        revseq.backprop(SIN, np.ones(1), 10**12, revseq.StoreAll())
    with pytest.raises(ParameterError, match=r"^n is too large to run here"):
        revseq.walk(np.sin, np.ones(1), 2**70, revseq.StoreAll())


@attrs.frozen
class KeepsEverything(ReversalStrategy):
    def actions(self, n: int) -> Iterator[revseq.Action]:
        yield Advance(0, n - 1, keep=True)
        yield Reverse(0, n)


def test_a_user_schedule_keeping_a_trillion_states_is_refused_by_the_simulator():
    with pytest.raises(ScheduleError, match=r"keeps 999999999998 states: tracking .* more than this machine's"):
        KeepsEverything().cost(10**12)
    with pytest.raises(ScheduleError, match=r"keeps"):
        revseq.simulate(KeepsEverything().actions(2**70), 2**70)


# -- 10. what a strategy returns ----------------------------------------------------------------


@attrs.frozen
class Returns(ReversalStrategy):
    actions_result: object = None
    bounds_result: object = attrs.field(factory=Bounds)

    def actions(self, n):
        return self.actions_result

    def bounds(self, n):
        return self.bounds_result


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        (Returns(actions_result=None), r"\.actions\(5\) must return an iterable of actions.*got None"),
        (Returns(actions_result=[Store(0)], bounds_result=None), r"\.bounds\(5\) must return a revseq.Bounds"),
        (Returns(actions_result=[Advance(0, 4, keep="no")]), r"keep must be a bool, got 'no' \(str\)"),
        (Returns(actions_result=[Store(0, disk=1)]), r"disk must be a bool, got 1 \(int\)"),
        (Returns(actions_result=[Advance(0, 4.0)]), r"stop must be an int, got 4.0 \(float\)"),
        (Returns(actions_result=[(0, 4)]), r"not an action"),
    ],
    ids=["actions None", "bounds None", "keep str", "disk int", "stop float", "plain tuple"],
)
def test_a_strategy_returning_the_wrong_thing_gets_a_schedule_error_naming_it(strategy, message):
    with pytest.raises(ScheduleError, match=message):
        revseq.backprop(SIN, np.ones(2), 5, strategy)
    with pytest.raises(ScheduleError, match=message):
        strategy.cost(5)


@attrs.frozen
class NumpyFields(ReversalStrategy):
    """Binomial's schedule with every field a numpy scalar, as a user computing indices with numpy would write."""

    def actions(self, n):
        for action in revseq.BinomialCheckpointing(3).actions(n):
            fields = [np.bool_(v) if isinstance(v, bool) else np.int64(v) for v in action]
            yield type(action)(*fields)

    def bounds(self, n):
        return Bounds(checkpoints=np.int32(3), forward_steps=np.int64(revseq.optimal_forward_steps(n, 3)))


def test_numpy_integers_in_actions_and_bounds_are_accepted():
    out = revseq.backprop(SIN, X0, 40, NumpyFields())
    np.testing.assert_array_equal(out.gradient, store_all_gradient(40))
    assert out.stats.as_cost() == revseq.BinomialCheckpointing(3).cost(40)
    assert all(type(t) is int for t, _ in revseq.walk(np.sin, X0, 10, NumpyFields()))


@pytest.mark.parametrize("field", ["forward_steps", "checkpoints", "disk_checkpoints"])
@pytest.mark.parametrize("bad", [-1, "3", 2.5, True])
def test_bounds_refuse_what_is_not_a_count(field, bad):
    with pytest.raises(ParameterError, match=rf"^{field} must be an int >= 0, got "):
        Bounds(**{field: bad})


# -- 11. an online sweep freeing a disk checkpoint -----------------------------------------------


@attrs.frozen
class DiskTrail(OnlineStrategy):
    """x_0 in memory and the latest even state on disk, freeing the one before it as the run goes."""

    def forward(self):
        yield Store(0)
        for t in itertools.count():
            yield Advance(t, t + 1)
            if (t + 1) % 2 == 0:
                if t + 1 > 2:
                    yield Free(t - 1, t)
                yield Store(t + 1, disk=True)

    def backward(self, n, stored):
        ends = (*stored[1:], n)
        for base, end in reversed(list(zip(stored, ends, strict=True))):
            yield Restore(base)
            yield from revolve(base, end - base, 1)

    def online_bounds(self):
        return Bounds(checkpoints=1, disk_checkpoints=1)


@pytest.mark.parametrize("n", [1, 2, 3, 8, 9])
def test_an_online_sweep_freeing_a_disk_checkpoint_runs_with_n_unknown(n, tmp_path):
    disk = DiskStore(tmp_path)
    got = revseq.backprop(SIN, X0, None, DiskTrail(), until=lambda t, x: t == n, disk=disk)
    known = revseq.backprop(SIN, X0, n, DiskTrail(), disk=disk)
    np.testing.assert_array_equal(got.gradient, store_all_gradient(n))
    assert got.stats == known.stats
    assert files_under(tmp_path) == []


class CollectingStore(MemoryStore):
    """A store whose len() runs the garbage collector from its second call on (the first is the call-time check)."""

    __slots__ = ("lens",)

    def __init__(self) -> None:
        super().__init__()
        self.lens = 0

    def __len__(self) -> int:
        self.lens += 1
        if self.lens == 2:  # inside the run's claim of its stores
            gc.collect()
        return super().__len__()


def test_a_walk_collected_while_another_run_claims_its_stores_does_not_deadlock():
    import threading

    dropped_store = MemoryStore()
    it = revseq.walk(np.sin, np.ones(2), 8, revseq.StoreAll(), store=dropped_store)
    next(it)
    cycle: list[object] = [it]
    cycle.append(cycle)  # only the collector can free the walk, and so end its run
    del it, cycle
    outcome: list[object] = []

    def run() -> None:  # claims its store, whose len() collects the dropped walk, whose end() takes the lock
        gc.disable()  # no collection before the one inside len()
        try:
            outcome.append(len(list(revseq.reverse(np.sin, np.ones(2), 5, store=CollectingStore()))))
        finally:
            gc.enable()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "deadlock: the collected walk's cleanup waited for the lock its own thread held"
    assert outcome == [5]
    assert len(dropped_store) == 0


# -- found by an adversarial pass after the fixes above (one test each) ------------------------------


class SwapsBuffers:
    """Writes each result into the array it was handed on the previous call (two buffers, swapped)."""

    def __init__(self) -> None:
        self.spare = None

    def __call__(self, x):
        out = self.spare if self.spare is not None else np.empty_like(x)
        np.sin(x, out=out)
        self.spare = x
        return out


@pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
def test_a_step_writing_into_the_array_it_was_given_before_is_refused(strategy):
    x0 = np.linspace(0.1, 1, 4)
    with pytest.raises(StepError, match=r"f wrote into x_0, an array it was given or returned earlier"):
        revseq.backprop(Recurrence(SwapsBuffers(), np.cos), x0, 20, strategy)
    np.testing.assert_array_equal(x0, np.linspace(0.1, 1, 4))


def test_sums_do_not_alias_a_buffer_a_callable_hands_out_every_call():
    class BufferedVJP:
        def __init__(self):
            self.g_params = {"W": np.zeros((3, 3)), "b": np.zeros(3)}

        def __call__(self, h, p, g):
            adj, gp = rnn_vjp(h, p, g)
            for key in gp:
                self.g_params[key][...] = gp[key]
            return adj, self.g_params

    class BufferedLoss:
        def __init__(self):
            self.value = np.zeros(())

        def __call__(self, h, p):
            np.sum(h * h, out=self.value)
            return self.value, 2 * h, {"W": np.zeros((3, 3)), "b": np.zeros(3)}

    got = revseq.backprop(rnn(vjp=BufferedVJP(), loss=BufferedLoss()), X0, 10, revseq.StoreAll())
    want = revseq.backprop(rnn(loss=square_loss), X0, 10, revseq.StoreAll())
    assert got.loss == want.loss
    for key in PARAMS:
        np.testing.assert_array_equal(got.params_gradient[key], want.params_gradient[key])


def test_a_loss_value_going_wrong_after_the_first_step_is_caught_at_the_end():
    loss = lambda x, t: (np.sum(x) if t != 3 else x.copy(), np.ones_like(x))  # noqa: E731
    rec = Recurrence(lambda x, t: np.sin(x), lambda x, t: np.cos(x), loss=loss, indexed=True)
    with pytest.raises(StepError, match=r"^the loss summed over all steps is not one real number"):
        revseq.backprop(rec, np.ones(4), 8)


@pytest.mark.parametrize("store", [MemoryStore, lambda: MemoryStore(copy=True)], ids=["references", "copies"])
def test_a_step_writing_into_params_is_refused_whatever_the_store(store):
    # A store that copies states makes in-place writes to the state safe, not writes to params.
    def f(x, p):
        p["m"] *= 0.5
        return np.tanh(x + p["m"])

    rec = Recurrence(f, vjp=lambda x, p, g: (g, {"m": g}), params={"m": np.ones(3)})
    with pytest.raises(StepError, match=r"^f modified params in place during the call f\(x_0\)"):
        revseq.backprop(rec, np.ones(3), 10, revseq.BinomialCheckpointing(2), store=store())


@pytest.mark.parametrize("kind", ["df", "vjp"])
def test_a_derivative_writing_into_x_never_reaches_the_callers_x0(kind):
    x0 = np.linspace(-0.9, 0.8, 3)
    rec = (
        Recurrence(np.sin, lambda x: np.cos(x, out=x))
        if kind == "df"
        else Recurrence(np.sin, vjp=lambda x, g: g * np.cos(x, out=x))
    )
    out = revseq.backprop(rec, x0, 10, revseq.StoreAll())
    np.testing.assert_array_equal(x0, np.linspace(-0.9, 0.8, 3))
    np.testing.assert_array_equal(out.gradient, store_all_gradient(10))


def test_an_online_cost_too_long_to_simulate_is_refused_at_once():
    with pytest.raises(ParameterError, match=r"^n must be <= 10000000 for OnlineCheckpointing.*online_lower_bound"):
        revseq.OnlineCheckpointing(checkpoints=3).cost(10**12)


def test_an_interrupted_disk_clear_is_finished_by_the_next(tmp_path, monkeypatch):
    import shutil

    store = DiskStore(tmp_path)
    for key in range(5):
        store.put(key, np.zeros(2))
    real = shutil.rmtree

    def interrupted(path, *args, **kwargs):
        os.remove(files_under(path)[0])  # part of the work done, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.clear()
    assert files_under(tmp_path)
    monkeypatch.setattr(shutil, "rmtree", real)
    store.clear()
    assert files_under(tmp_path) == []
    assert store.path is None


def test_a_derivative_going_wrong_at_a_later_step_is_a_step_error_naming_it():
    rec = Recurrence(lambda x, t: np.sin(x), lambda x, t: None if t == 3 else np.cos(x), indexed=True)
    with pytest.raises(StepError, match=r"^at step t=3, revseq could not combine what df, vjp or loss returned"):
        revseq.backprop(rec, np.ones(4), 8)


def test_the_users_own_error_in_a_derivative_passes_unchanged():
    error = ValueError("mine")

    def df(x):
        raise error

    with pytest.raises(ValueError, match="mine") as info:
        revseq.backprop(Recurrence(np.sin, df), np.ones(2), 5)
    assert info.value is error


def test_until_returning_an_array_is_refused_naming_until():
    with pytest.raises(ParameterError, match=r"^until must return one bool, got ndarray of shape \(3,\) at t=1"):
        revseq.backprop(SIN, np.ones(3), None, revseq.OnlineCheckpointing(checkpoints=5), until=lambda t, x: x < 0.1)


@pytest.mark.parametrize("name", ["store", "disk"])
def test_a_store_class_instead_of_an_instance_says_the_fix(name):
    with pytest.raises(ParameterError, match=rf"^{name} must be a store instance, got the class \w+; did you mean"):
        revseq.backprop(SIN, np.ones(2), 5, **{name: MemoryStore if name == "store" else DiskStore})


@attrs.frozen
class ReturnsNoneOnline(OnlineStrategy):
    def forward(self):
        return None

    def backward(self, n, stored):
        return None

    def online_bounds(self):
        return Bounds(checkpoints=2)


def test_an_online_strategy_returning_none_is_a_schedule_error_with_n_known_too():
    with pytest.raises(ScheduleError, match=r"forward\(\) must return an iterable of actions"):
        revseq.backprop(SIN, np.ones(2), 9, ReturnsNoneOnline())
    with pytest.raises(ScheduleError, match=r"forward\(\) must return an iterable of actions"):
        ReturnsNoneOnline().cost(9)
    with pytest.raises(ParameterError, match=r"^actions must be an iterable of actions, got None"):
        revseq.simulate(None, 3)


def test_the_memory_refusal_counts_no_more_checkpoints_than_states():
    x0 = np.ones(1 << 17)  # 1 MiB
    # max_steps is a safety bound: the default online budget for 10**9 steps would be 44 721 states of 1 MiB,
    # but a run of at most 10**9 steps that stops at 44 holds 44 at most; what is refused is what cannot fit.
    out = revseq.backprop(
        Recurrence(lambda x: x * 0.9, lambda x: np.full_like(x, 0.9)), x0, None,
        revseq.OnlineCheckpointing(checkpoints=40), until=lambda t, x: x[0] < 0.01, max_steps=10**9,
    )  # fmt: skip
    assert out.stats.n == 44
    memory = revseq._limits.physical_memory()
    if memory is not None and memory < 40 * 2**30:  # the default budget for 10**9 steps, 44 721 MiB, cannot fit
        with pytest.raises(ParameterError, match=r"^max_steps is too large to run here"):
            revseq.backprop(SIN, x0, None, until=lambda t, x: t == 3, max_steps=10**9)

    @attrs.frozen
    class LooseBounds(ReversalStrategy):
        def actions(self, n):
            return revseq.StoreAll().actions(n)

        def bounds(self, n):
            return Bounds(checkpoints=10**30)

    assert revseq.backprop(SIN, x0, 6, LooseBounds()).stats.peak_checkpoints == 5


class ClaimsToCopy(MemoryStore):
    __slots__ = ()

    def copies(self):  # a method, not a property: truthy, and not a bool
        return True


def test_a_store_whose_copies_is_not_a_bool_is_refused():
    with pytest.raises(ParameterError, match=r"^store.copies must be a bool"):
        revseq.backprop(SIN, np.ones(2), 5, store=ClaimsToCopy())
    with pytest.raises(ParameterError, match=r"^output must be a bool, got 'no'"):
        revseq.walk(np.sin, np.ones(2), 5, output="no")


def test_the_adapters_refuse_a_trillion_steps_at_once():
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    import revseq.jax as rj
    import revseq.torch as rt

    h = torch.ones(3, requires_grad=True)
    with pytest.raises(ParameterError, match=r"^steps is too large to run here: recording the 1000000000000 outputs"):
        rt.unroll(
            lambda h: h * 0.5, h, steps=10**12, output=lambda h: h.sum(), strategy=revseq.BinomialCheckpointing(4)
        )

    def loss(h0):
        final, _ = rj.scan(
            lambda c, x: (c * 0.5, None), h0, None, length=10**12, strategy=revseq.BinomialCheckpointing(4)
        )
        return jax.numpy.sum(final)

    with pytest.raises(ParameterError, match=r"^length must be <= 2\*\*30 = 1073741824 for a compiled schedule"):
        jax.grad(loss)(jax.numpy.ones(3))


@pytest.mark.parametrize("extra", [Store(0), Restore(0), Advance(0, 1), Free(0, 1), Reverse(0, 1)], ids=repr)
def test_an_action_after_the_last_reversal_says_the_schedule_has_ended(extra):
    with pytest.raises(ScheduleError, match=r"every step is already reversed: the schedule must end here"):
        revseq.simulate([Store(0), Advance(0, 2, keep=True), Reverse(0, 3), extra], 3)


def test_a_python_number_x0_with_a_step_on_python_floats_gets_the_fix():
    import math

    with pytest.raises(StepError, match=r"use numpy functions in f \(np.sin rather than math.sin\)"):
        revseq.backprop(Recurrence(math.sin, math.cos), 0.5, 5)


@pytest.mark.parametrize("store", [MemoryStore, lambda: MemoryStore(copy=True)], ids=["references", "copies"])
def test_until_writing_into_the_state_is_named_whatever_the_store(store):
    # The changed state would differ from the same state recomputed later, copied or not.
    def until(t, x):
        x *= 0.5
        return t == 5

    with pytest.raises(ParameterError, match=r"^until modified x_1 in place during the call until\(1, x_1\)"):
        revseq.backprop(SIN, np.ones(3), None, revseq.OnlineCheckpointing(checkpoints=3), until=until, store=store())


# -- a step that is not deterministic: its recomputations differ from the first sweep ---------------------

RECOMPUTING = {
    "binomial": revseq.BinomialCheckpointing(3),
    "binomial, checked": revseq.BinomialCheckpointing(3),
    "halving": revseq.RecursiveHalving(),
    "sqrt": revseq.SqrtCheckpointing(),
    "online": revseq.OnlineCheckpointing(3),
    "multistage": revseq.MultistageCheckpointing(ram=2),
}


def noisy_step():
    """A step drawing noise from a generator of its own: each recomputation draws other numbers."""
    rng = np.random.default_rng(0)
    return lambda x: np.sin(x) + 0.01 * rng.standard_normal(x.shape)


def counting_step():
    """A step reading a counter it advances: a recomputation sees a larger count."""
    calls = [0]

    def f(x):
        calls[0] += 1
        return np.sin(x) + 1e-9 * calls[0]

    return f


@pytest.mark.parametrize("make", [noisy_step, counting_step], ids=["own-generator", "counter"])
@pytest.mark.parametrize("name", RECOMPUTING)
def test_a_step_that_is_not_deterministic_is_refused(name, make, tmp_path):
    """Before: the gradient of another sequence, without a word. Now: StepError naming a recomputed state."""
    strategy = RECOMPUTING[name]
    disk = DiskStore(tmp_path)
    with pytest.raises(StepError, match=r"x_\d+ was different when recomputed than when first computed"):
        revseq.backprop(
            Recurrence(make(), np.cos), np.full(10, 0.5), 200, strategy, disk=disk, check_schedule="checked" in name
        )
    assert files_under(tmp_path) == []
    with pytest.raises(StepError, match=r"was different when recomputed"):  # a walk, as an adapter runs one
        for _ in revseq.walk(make(), np.full(10, 0.5), 200, strategy):
            pass


def tree_step(s):
    return {"a": np.sin(s["a"]), "b": s["b"] * 0.99}


def tree_vjp(s, g):
    return {"a": np.cos(s["a"]) * g["a"], "b": 0.99 * g["b"]}


@pytest.mark.parametrize("name", RECOMPUTING)
def test_the_recomputation_check_passes_deterministic_steps_of_every_kind(name):
    """No false alarm: a step of (x, t), a tree state, complex and float32 states, a 0-d state."""
    strategy = RECOMPUTING[name]

    def indexed(x, t):
        return np.sin(x) + np.random.default_rng(t).standard_normal(x.shape) * 1e-3  # noise seeded by t: fine

    cases = [
        (Recurrence(indexed, vjp=lambda x, t, g: np.cos(x) * g, indexed=True), np.full(7, 0.3)),
        (Recurrence(tree_step, vjp=tree_vjp), {"a": np.full(3, 0.5), "b": np.ones(2)}),
        (Recurrence(lambda x: x * (0.9 + 0.1j), vjp=lambda x, g: g * np.conj(0.9 + 0.1j)), np.full(4, 1 + 1j)),
        (Recurrence(np.sin, np.cos), np.linspace(0.1, 1.0, 5, dtype=np.float32)),
        (SIN, np.float64(0.5)),
    ]
    for rec, x0 in cases:
        out = revseq.backprop(rec, x0, 150, strategy)
        expected = revseq.backprop(rec, x0, 150, revseq.StoreAll())
        for got, want in zip(revseq._tree.leaves(out.gradient), revseq._tree.leaves(expected.gradient), strict=True):
            np.testing.assert_array_equal(got, want)


def test_the_recomputation_check_is_off_with_a_lossy_store():
    """Recomputing from a checkpoint read back within a tolerance rightly gives other states: not refused."""
    numcodecs = pytest.importorskip("numcodecs")
    if not hasattr(numcodecs, "ZFPY"):
        pytest.skip("numcodecs.ZFPY needs zfpy")
    from revseq.overlap import OverlappedStore

    lossy = revseq.CompressedStore(codec=numcodecs.ZFPY(tolerance=1e-6))
    x0 = np.linspace(0.1, 1.0, 64)
    out = revseq.backprop(SIN, x0, 120, revseq.RecursiveHalving(), store=lossy)
    assert np.abs(out.gradient - store_all_gradient(120, x0)).max() < 1e-3
    wrapped = OverlappedStore(revseq.CompressedStore(codec=numcodecs.ZFPY(tolerance=1e-6)), depth=1)
    revseq.backprop(SIN, x0, 120, revseq.MultistageCheckpointing(ram=2), disk=wrapped)  # through a wrapper too


def test_the_recomputation_check_in_a_run_of_unknown_length():
    """Online, stopped by until: the samples' stride doubles as they pile up; noise is still caught, sin is not."""
    stop_at = 5000

    def until(t, x):
        return t >= stop_at

    x0 = np.full(4, 0.5)
    with pytest.raises(StepError, match=r"was different when recomputed"):
        revseq.backprop(Recurrence(noisy_step(), np.cos), x0, None, revseq.OnlineCheckpointing(4), until=until)
    out = revseq.backprop(SIN, x0, None, revseq.OnlineCheckpointing(4), until=until)
    np.testing.assert_array_equal(out.gradient, store_all_gradient(stop_at, x0))


def test_a_state_read_back_in_another_memory_order_has_the_same_fingerprint():
    """The fingerprint weighs elements by logical position, in blocks: C order, Fortran order, a transposed copy."""
    from revseq._checks import Recomputations

    check = Recomputations(100)
    a = np.random.default_rng(1).standard_normal((70, 50, 40))  # 140 000 elements: more than one block
    check.seen(4, a)
    for again in (np.asfortranarray(a), a.transpose(2, 1, 0).copy().transpose(2, 1, 0), a + 0.0):
        check.seen(4, again)  # no StepError
    with pytest.raises(StepError, match="x_4 was different"):
        check.seen(4, a + 1e-9 * np.abs(a).max())


def test_a_store_of_the_users_that_changes_states_must_say_so():
    """A store rounding its checkpoints makes recomputed states differ: refused unless it declares lossless = False."""

    class Rounding(MemoryStore):
        def put(self, key, x):
            super().put(key, np.round(x, 6))

    class Declared(Rounding):
        lossless = False

    x0 = np.linspace(0.1, 1.0, 20)
    with pytest.raises(StepError, match="lossless = False"):
        revseq.backprop(SIN, x0, 300, revseq.BinomialCheckpointing(3), store=Rounding())
    out = revseq.backprop(SIN, x0, 300, revseq.BinomialCheckpointing(3), store=Declared())
    assert np.abs(out.gradient - store_all_gradient(300, x0)).max() < 1e-4
