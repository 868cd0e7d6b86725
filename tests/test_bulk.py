"""The engine's fast paths (issue 10), each against a plain model of what it replaces.

The default store keeps a sweep's states as runs and hands a reversal's
states back in slices; the engine keeps its record of held checkpoints as
runs of steps; a built-in strategy's schedule runs unchecked unless
``check_schedule=True``; parameter gradients are summed in place. Each is
checked here against the simplest thing that is obviously right: a dict, a
set, the checked run, a sum of fresh arrays.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from registry import LISTED

import revseq
from revseq import MemoryStore
from revseq.engine import _Held
from revseq.errors import StepError

# -- MemoryStore's runs against a dict --------------------------------------------------------------

# Operations on keys 0..39: put one state, put a run of consecutive new keys, delete a range, pop a block.
_ops = st.lists(
    st.tuples(st.sampled_from(["put", "run", "delete", "pop", "get"]), st.integers(0, 39), st.integers(1, 6)),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(_ops)
def test_the_memory_store_with_runs_behaves_as_a_dict(ops):
    store, model = MemoryStore(), {}
    for kind, key, length in ops:
        if kind == "put":
            state = np.full(length, float(key))
            store.put(key, state)
            model[key] = state
        elif kind == "run":
            keys = range(key, min(key + length, 40))
            if any(k in model for k in keys):
                continue  # a run is stored only where nothing is
            states = [np.full(1 + k % 3, float(k)) for k in keys]
            store._put_run(key, list(states))
            model.update(zip(keys, states, strict=True))
        elif kind == "delete":
            store._delete_range(key, key + length)
            for k in range(key, key + length):
                model.pop(k, None)
        elif kind == "get":
            if key in model:
                assert store.get(key) is model[key]
            else:
                with pytest.raises(KeyError):
                    store.get(key)
        else:  # pop a block: its precondition is every key held but perhaps the last
            stop = key + length
            if not all(k in model for k in range(key, stop - 1)):
                continue
            pieces = store._pop_block(key, stop)
            got = [(top - i, x) for top, states in pieces for i, x in enumerate(states)]
            expected = [(k, model.pop(k)) for k in range(stop - 1, key - 1, -1) if k in model]
            assert [t for t, _ in got] == [t for t, _ in expected]
            assert all(a is b for (_, a), (_, b) in zip(got, expected, strict=True))
        assert len(store) == len(model)
        assert store.nbytes == sum(x.nbytes for x in model.values())
        assert store._held() == sorted(model)


def test_delete_of_a_key_not_held_is_a_key_error():
    store = MemoryStore()
    store._put_run(3, [np.zeros(2), np.zeros(2)])
    with pytest.raises(KeyError):
        store.delete(5)
    store.delete(3)
    assert len(store) == 1
    assert store.get(4).shape == (2,)


# -- the engine's record of held steps against a set -----------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 49), st.integers(1, 8), st.booleans()), max_size=60))
def test_held_runs_behave_as_a_set(ops):
    held, model = _Held(), set()
    for add, start, length, to_end in ops:
        stop = start + length
        if add:
            if model & set(range(start, stop)):
                continue  # only steps not held are added
            held.add(start, stop)
            model |= set(range(start, stop))
        else:
            end = None if to_end else stop
            cut = held.cut(start, end)
            removed = {t for t in model if t >= start and (end is None or t < end)}
            assert {t for a, b in cut for t in range(a, b)} == removed
            model -= removed
        assert len(held) == len(model)
        assert held.keys() == sorted(model)
        assert all((t in held) == (t in model) for t in range(-1, 60))
        assert held.last() == (max(model) if model else -1)


# -- unchecked built-ins against the checked run -----------------------------------------------------


BUILT_IN = [
    *LISTED,
    revseq.OnlineCheckpointing(checkpoints=3),
    revseq.MultistageCheckpointing(ram=2, disk=3),
    revseq.MultistageCheckpointing(ram=1),
]


@pytest.mark.parametrize("strategy", BUILT_IN, ids=repr)
def test_a_built_in_run_unchecked_measures_what_the_checked_run_measures(strategy):
    rec = revseq.Recurrence(np.sin, df=np.cos)
    x0 = np.linspace(-1.0, 1.0, 7)
    for n in (1, 2, 17, 100):
        fast = revseq.backprop(rec, x0, n, strategy)
        checked = revseq.backprop(rec, x0, n, strategy, check_schedule=True)
        copying = revseq.backprop(rec, x0, n, strategy, store=MemoryStore(copy=True))  # no bulk path
        assert fast.stats == checked.stats == copying.stats
        np.testing.assert_array_equal(fast.gradient, checked.gradient)
        assert fast.stats.as_cost() == strategy.cost(n)


def test_a_subclass_of_a_built_in_is_checked():
    class Greedy(revseq.StoreAll):
        def bounds(self, n):
            return revseq.Bounds(checkpoints=1)  # a promise StoreAll's schedule breaks

    with pytest.raises(revseq.ScheduleError, match="over the budget of 1"):
        revseq.backprop(revseq.Recurrence(np.sin, df=np.cos), np.zeros(3), 5, Greedy())


def test_check_schedule_must_be_a_bool():
    with pytest.raises(revseq.ParameterError, match="check_schedule must be a bool, got 'yes'"):
        revseq.walk(np.sin, np.zeros(2), 3, check_schedule="yes")


# -- parameter gradients summed in place ------------------------------------------------------------


def _linear(vjp_returns_one_buffer: bool):
    """The vjp of x -> W x with params W; it may hand out one buffer at every call."""
    buffer = np.zeros((3, 3))

    def vjp(x, t, W, g):
        gW = np.outer(g, x)
        if vjp_returns_one_buffer:
            buffer[...] = gW
            gW = buffer
        return W.T @ g, gW

    return vjp


def test_parameter_gradients_summed_in_place_equal_a_sum_of_fresh_arrays():
    W = np.array([[0.9, 0.1, 0.0], [0.0, 0.8, 0.2], [0.1, 0.0, 0.7]])
    W_before = W.copy()
    x0 = np.array([1.0, -0.5, 0.25])
    n = 30
    xs = [x0]
    for _ in range(n):
        xs.append(W @ xs[-1])
    g, gW = np.ones(3), np.zeros((3, 3))
    for t in range(n - 1, -1, -1):
        gW = gW + np.outer(g, xs[t])
        g = W.T @ g
    for one_buffer in (False, True):  # a vjp reusing its output buffer must not change the sum
        rec = revseq.Recurrence(lambda x, t, W: W @ x, vjp=_linear(one_buffer), params=W, indexed=True)
        out = revseq.backprop(rec, x0, n, revseq.StoreAll())
        np.testing.assert_allclose(out.params_gradient, gW, rtol=1e-13)
        np.testing.assert_allclose(out.gradient, g, rtol=1e-13)
        np.testing.assert_array_equal(W, W_before)  # the user's array is never the buffer


@pytest.mark.parametrize("strategy", [revseq.StoreAll(), revseq.BinomialCheckpointing(3), revseq.Recompute()], ids=repr)
def test_the_gists_loop_names_the_step_where_a_later_derivative_went_wrong(strategy):
    # Elementwise df of x alone runs in a loop of its own, without the step index; the error still names it.
    calls = []

    def df(x):
        calls.append(x)
        return None if len(calls) == 5 else np.cos(x)  # the 5th call: t = 7, 6, 5, 4, then 3

    with pytest.raises(StepError, match=r"^at step t=3, revseq could not combine what df, vjp or loss returned"):
        revseq.backprop(revseq.Recurrence(np.sin, df), np.ones(4), 8, strategy)


# -- binomial run from revolve's tasks against the checked run of its actions -------------------------


def _recurrences():
    """The recurrence forms the fused binomial run takes: plain, indexed, params, loss, vjp, vjp_output."""
    W = np.array([[0.9, 0.2, 0.0], [-0.1, 0.8, 0.3], [0.2, 0.0, 0.7]])
    u = np.linspace(-0.5, 0.5, 64)

    def f(x, t, W):
        return np.tanh(W @ x + u[t])

    def vjp(x, t, W, g):
        d = g * (1 - np.tanh(W @ x + u[t]) ** 2)
        return W.T @ d, np.outer(d, x)

    def vjp_output(x, t, W, y, g):
        d = g * (1 - y**2)
        return W.T @ d, np.outer(d, x)

    def loss(x, t):
        return float(np.sum(x**2)) * t, 2 * t * x

    return {
        "gist": revseq.Recurrence(np.sin, df=np.cos),
        "indexed": revseq.Recurrence(lambda x, t: np.sin(x) + u[t], df=lambda x, t: np.cos(x), indexed=True),
        "loss": revseq.Recurrence(lambda x, t: np.sin(x) + u[t], df=lambda x, t: np.cos(x), loss=loss, indexed=True),
        "params": revseq.Recurrence(f, vjp=vjp, params=W, indexed=True),
        "vjp_output": revseq.Recurrence(f, vjp=vjp_output, params=W, indexed=True, vjp_output=True),
    }


RECURRENCES = _recurrences()


def _pairs_and_stats(walk):
    """Each ``(t, x_t)`` a walk delivers with the stats read right after it, then the final stats."""
    with walk:
        seen = [(t, x, walk.stats) for t, x in walk]
        return seen, walk.stats


@pytest.mark.parametrize("name", list(RECURRENCES))
def test_binomial_from_revolves_tasks_measures_what_the_checked_run_measures(name):
    rec = RECURRENCES[name]
    x0 = np.linspace(-0.4, 0.6, 3)
    for n in (*range(1, 13), 17, 33, 64):
        for c in sorted({1, 2, 3, 5, max(n - 2, 1), max(n - 1, 1), n, n + 4}):
            strategy = revseq.BinomialCheckpointing(c)
            fused = revseq.backprop(rec, x0, n, strategy)
            checked = revseq.backprop(rec, x0, n, strategy, check_schedule=True)
            copying = revseq.backprop(rec, x0, n, strategy, store=MemoryStore(copy=True))
            assert fused.stats == checked.stats == copying.stats, (n, c)
            assert fused.stats.as_cost() == strategy.cost(n)
            for a, b in ((fused.state, checked.state), (fused.gradient, checked.gradient)):
                np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(fused.params_gradient, checked.params_gradient)
            assert fused.loss == checked.loss
            step = rec if name != "gist" else np.sin
            for output in (True, False):  # walk (x_n first) and reverse (x_n never computed)
                seen, stats = _pairs_and_stats(revseq.walk(step, x0, n, strategy, output=output))
                seen_checked, stats_checked = _pairs_and_stats(
                    revseq.walk(step, x0, n, strategy, output=output, check_schedule=True)
                )
                assert [(t, s) for t, _, s in seen] == [(t, s) for t, _, s in seen_checked]  # stats after each pair
                assert all(np.array_equal(a, b) for (_, a, _), (_, b, _) in zip(seen, seen_checked, strict=True))
                assert stats == stats_checked


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 1000), st.integers(1, 40), st.sampled_from([np.asarray(0.5), np.linspace(-1.0, 1.0, 4)]))
def test_binomial_from_revolves_tasks_over_many_lengths_and_budgets(n, c, x0):
    rec = revseq.Recurrence(np.sin, df=np.cos)
    strategy = revseq.BinomialCheckpointing(c)
    fused = revseq.backprop(rec, x0, n, strategy)
    checked = revseq.backprop(rec, x0, n, strategy, check_schedule=True)
    assert fused.stats == checked.stats
    assert fused.stats.as_cost() == strategy.cost(n)
    np.testing.assert_array_equal(fused.gradient, checked.gradient)


def test_binomial_from_revolves_tasks_holds_its_checkpoints_itself_and_counts_a_views_own_bytes():
    # A step returning views of a larger buffer: the run keeps compact copies and counts their bytes,
    # as MemoryStore.put does. Only where no store is passed: a store the caller passes holds the checkpoints.
    def f(x):
        return np.concatenate([np.sin(x), np.zeros(97)])[:3]

    strategy = revseq.BinomialCheckpointing(4)
    walk = revseq.walk(f, np.zeros(3) + 0.5, 40, strategy)
    next(walk)
    assert walk.stats.peak_checkpoints == 4
    walk.close()
    store = MemoryStore()
    walk = revseq.walk(f, np.zeros(3) + 0.5, 40, strategy, store=store)
    next(walk)
    assert len(store) == 4  # the caller's store is used: the generic interpreter runs
    walk.close()
    fused = revseq.backprop(revseq.Recurrence(f, df=np.cos), np.full(3, 0.5), 40, strategy)
    checked_out = revseq.backprop(revseq.Recurrence(f, df=np.cos), np.full(3, 0.5), 40, strategy, check_schedule=True)
    assert fused.stats == checked_out.stats
    assert fused.stats.peak_bytes == 4 * 3 * 8


@pytest.mark.parametrize("kind", ["walk", "reverse"])
def test_a_dropped_binomial_walk_from_revolves_tasks_lets_its_checkpoints_go(kind):
    made = []

    def f(x):
        y = np.sin(x)
        made.append(weakref.ref(y))
        return y

    run = revseq.walk if kind == "walk" else revseq.reverse
    it = run(f, np.ones(4), 50, revseq.BinomialCheckpointing(5))
    next(it)
    next(it)
    assert sum(ref() is not None for ref in made) >= 4  # its checkpoints (x_0 is the run's own copy)
    del it
    gc.collect()
    assert [ref for ref in made if ref() is not None] == []


class _Injected(Exception):
    pass


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 60),
    c=st.integers(1, 8),
    fault=st.sampled_from(["f", "df", "drop"]),
    at=st.integers(1, 200),
    error=st.sampled_from([_Injected("injected"), KeyboardInterrupt()]),
)
def test_binomial_from_revolves_tasks_gives_the_error_and_holds_nothing_after(n, c, fault, at, error):
    calls = [0]
    made = []

    def faulty(fn, record=False):
        def call(x):
            calls[0] += 1
            if calls[0] == at and fn is not None:
                raise error
            y = (fn or np.sin)(x)
            if record:
                made.append(weakref.ref(y))
            return y

        return call

    f = faulty(np.sin if fault == "f" else None, record=True)
    rec = revseq.Recurrence(f, df=faulty(np.cos) if fault == "df" else np.cos)
    x0 = np.linspace(-1.0, 1.0, 5)
    raised = None
    try:
        if fault == "drop":
            walk = revseq.walk(rec, x0, n, revseq.BinomialCheckpointing(c))
            for _ in range(at % (n + 1)):
                next(walk)
            del walk
        else:
            out = revseq.backprop(rec, x0, n, revseq.BinomialCheckpointing(c))
            expected = revseq.backprop(revseq.Recurrence(np.sin, df=np.cos), x0, n, revseq.StoreAll())
            np.testing.assert_array_equal(out.gradient, expected.gradient)
            del out
    except (_Injected, KeyboardInterrupt) as exc:
        raised = exc
    assert raised is None or raised is error
    del raised
    error.__traceback__ = error.__context__ = None  # its frames would hold the states (the instance is reused)
    # No checkpoint outlives the run, however it ended; by reference counting alone (no gc.collect()).
    assert [ref for ref in made if ref() is not None] == []


@pytest.mark.parametrize("n", [1, 2, 5, 40])
def test_binomial_from_revolves_tasks_refuses_a_step_writing_in_place(n):
    def in_place(x):
        return np.sin(x, out=x)

    with pytest.raises(StepError, match="f modified its argument in place"):
        revseq.backprop(revseq.Recurrence(in_place, df=np.cos), np.full(3, 0.5), n, revseq.BinomialCheckpointing(3))
