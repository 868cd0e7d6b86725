"""Bad inputs are refused where they enter, with a message naming the parameter; failures leave nothing behind."""

from __future__ import annotations

import numpy as np
import pytest
from steps import failing_on_call

import revseq
from revseq import ParameterError, Recurrence, StepError

SIN = Recurrence(np.sin, np.cos)
STRATEGIES = [
    revseq.StoreAll(),
    revseq.Recompute(),
    revseq.RecursiveHalving(),
    revseq.SqrtCheckpointing(),
    revseq.BinomialCheckpointing(checkpoints=3),
]
strategies = pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)


# -- n ---------------------------------------------------------------------------------

BAD_N = [0, -1, True, False, 2.5, "3", None, np.float64(4.0)]


@pytest.mark.parametrize("n", BAD_N, ids=repr)
@pytest.mark.parametrize(
    "entry",
    [
        lambda n: revseq.backprop(SIN, np.ones(2), n),
        lambda n: revseq.reverse(np.sin, np.ones(2), n),
        lambda n: revseq.walk(np.sin, np.ones(2), n),
        lambda n: revseq.BinomialCheckpointing(checkpoints=3).cost(n),
        lambda n: revseq.StoreAll().schedule(n),
        lambda n: revseq.simulate([], n),
        lambda n: revseq.optimal_forward_steps(n, 3),
    ],
    ids=["backprop", "reverse", "walk", "cost", "schedule", "simulate", "optimal_forward_steps"],
)
def test_bad_n_is_refused_naming_n(entry, n, request):
    if n is None and request.node.callspec.id.split("-")[0] in {"backprop", "reverse", "walk"}:
        # For the run functions n=None means "length unknown": it needs a stop condition.
        with pytest.raises(ParameterError, match=r"^n=None runs until a condition: give until="):
            entry(n)
        return
    with pytest.raises(ParameterError, match=r"^n must be an int >= 1, got ") as info:
        entry(n)
    assert repr(n) in str(info.value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, TypeError)


def test_numpy_integer_n_is_accepted():
    values = [int(x) for x in revseq.reverse(lambda x: x + 1, 0, np.int64(4), revseq.StoreAll())]
    assert values == [3, 2, 1, 0]
    assert revseq.BinomialCheckpointing(checkpoints=2).cost(np.int32(10)) == revseq.BinomialCheckpointing(2).cost(10)


# -- strategy configuration -----------------------------------------------------------


@pytest.mark.parametrize("value", [0, -2, True, 2.5, "3", np.float32(3.0)], ids=repr)
def test_bad_checkpoints_are_refused(value):
    with pytest.raises(ParameterError, match=r"^checkpoints must be an int >= 1, got ") as info:
        revseq.BinomialCheckpointing(checkpoints=value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "4"], ids=repr)
def test_bad_interval_is_refused(value):
    with pytest.raises(ParameterError, match=r"^interval must be an int >= 1, got "):
        revseq.SqrtCheckpointing(interval=value)


@pytest.mark.parametrize("kind", [np.int8, np.int32, np.int64, np.uint16])
def test_numpy_integer_configuration_is_accepted_and_equal_to_int(kind):
    binomial = revseq.BinomialCheckpointing(checkpoints=kind(3))
    assert binomial == revseq.BinomialCheckpointing(checkpoints=3)
    assert hash(binomial) == hash(revseq.BinomialCheckpointing(checkpoints=3))
    assert type(binomial.checkpoints) is int
    assert revseq.SqrtCheckpointing(interval=kind(5)) == revseq.SqrtCheckpointing(interval=5)


def test_optimal_forward_steps_refuses_bad_checkpoints():
    with pytest.raises(ParameterError, match=r"^checkpoints must be an int >= 1, got 0"):
        revseq.optimal_forward_steps(10, 0)


def test_strategy_class_instead_of_instance_says_the_fix():
    with pytest.raises(
        ParameterError, match=r"strategy must be a ReversalStrategy instance.*did you mean StoreAll\(\)\?"
    ):
        revseq.backprop(SIN, np.ones(2), 5, revseq.StoreAll)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"strategy must be a ReversalStrategy instance"):
        revseq.reverse(np.sin, np.ones(2), 5, revseq.BinomialCheckpointing)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["binomial", 3, object()], ids=["string", "int", "object"])
def test_non_strategy_is_refused(bad):
    with pytest.raises(ParameterError, match=r"^strategy must be a ReversalStrategy"):
        revseq.backprop(SIN, np.ones(2), 5, bad)


# -- the recurrence ---------------------------------------------------------------------


def test_backprop_needs_a_derivative():
    with pytest.raises(ParameterError, match=r"derivative.*df=.*vjp="):
        revseq.backprop(Recurrence(np.sin), np.ones(2), 5)


def test_a_step_without_derivative_is_fine_for_reverse():
    assert len(list(revseq.reverse(Recurrence(np.sin), np.ones(2), 5))) == 5


def test_df_and_vjp_together_are_refused():
    with pytest.raises(ParameterError, match=r"df.*vjp.*both"):
        Recurrence(np.sin, np.cos, vjp=lambda x, g: g * np.cos(x))


def test_params_with_df_are_refused_and_vjp_suggested():
    with pytest.raises(ParameterError, match=r"df.*params.*vjp"):
        Recurrence(lambda x, p: np.sin(p * x), lambda x, p: p * np.cos(p * x), params=np.ones(2))


@pytest.mark.parametrize("field", ["f", "df", "vjp", "loss"])
def test_non_callables_are_refused_naming_the_field(field):
    kwargs = {"f": np.sin, field: "not callable"}
    with pytest.raises(ParameterError, match=rf"^{field} must be callable"):
        Recurrence(**kwargs)


def test_indexed_must_be_a_bool():
    # One exception hierarchy, one message shape (STYLE.md): not attrs' own TypeError.
    with pytest.raises(ParameterError, match=r"^indexed must be"):
        Recurrence(np.sin, np.cos, indexed=1)  # type: ignore[arg-type]


def test_non_recurrence_passed_to_backprop_says_the_fix():
    with pytest.raises(ParameterError, match=r"^recurrence must be a revseq.Recurrence, got ufunc.*Recurrence\(f, df="):
        revseq.backprop(np.sin, np.ones(2), 5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "adjoint",
    [np.ones(3), np.ones((2, 1)), (np.ones(2), np.ones(2)), 1.0],
    ids=["longer", "2x1", "tuple", "scalar"],
)
def test_adjoint_of_the_wrong_shape_is_refused_before_running(adjoint):
    calls = []

    def f(x):
        calls.append(1)
        return np.sin(x)

    with pytest.raises(ParameterError, match=r"^adjoint must have the state's shape \(2,\)"):
        revseq.backprop(Recurrence(f, np.cos), np.ones(2), 5, adjoint=adjoint)
    assert calls == []


# -- the step's output ------------------------------------------------------------------


@strategies
def test_step_changing_the_shape_is_reported(strategy):
    rec = Recurrence(lambda x: np.append(x, 0.0), lambda x: np.ones_like(x))
    with pytest.raises(StepError, match=r"same structure, shape and dtype.*\(3,\).*\(4,\)"):
        revseq.backprop(rec, np.ones(3), 6, strategy)


def test_step_changing_the_dtype_is_reported():
    rec = Recurrence(lambda x: x.astype(np.float32), lambda x: np.ones_like(x))
    with pytest.raises(StepError, match=r"float64.*float32"):
        revseq.backprop(rec, np.ones(3), 6)


def test_integer_x0_with_a_float_step_suggests_astype_float():
    with pytest.raises(StepError, match=r"int64.*float64.*astype\(float\)") as info:
        revseq.backprop(SIN, np.arange(3), 6)
    assert isinstance(info.value, ValueError)
    with pytest.raises(StepError, match=r"astype\(float\)"):
        list(revseq.reverse(np.sin, np.arange(3), 6))


def test_step_returning_a_tuple_for_an_array_is_reported():
    with pytest.raises(StepError, match="structure"):
        revseq.backprop(Recurrence(lambda x: (x, x), lambda x: x), np.ones(3), 4)


def test_vjp_without_params_pair_is_reported():
    rec = Recurrence(lambda x, p: p * x, vjp=lambda x, p, g: p * g, params=np.ones(2))
    with pytest.raises(StepError, match=r"vjp must return \(adj_x, adj_params\)"):
        revseq.backprop(rec, np.ones(2), 3)


def test_loss_returning_a_bare_value_is_reported():
    rec = Recurrence(np.sin, np.cos, loss=lambda x: float(x.sum()))
    with pytest.raises(StepError, match=r"loss must return \(value, grad_x\)"):
        revseq.backprop(rec, np.ones(2), 3)


# -- failures mid-run: the caller gets the step's own exception, the store is emptied ----


class Boom(Exception):
    pass


@strategies
@pytest.mark.parametrize("when", ["first", "second", "middle", "last"])
def test_step_error_reaches_the_caller_unchanged_and_the_store_is_emptied(strategy, when):
    calls = strategy.cost(12).forward_steps  # only to pick which call fails
    k = {"first": 1, "second": 2, "middle": calls // 2, "last": calls}[when]
    exc = Boom("from f")
    store = revseq.MemoryStore()
    with pytest.raises(Boom) as info:
        revseq.backprop(Recurrence(failing_on_call(k, exc), np.cos), np.ones(2), 12, strategy, store=store)
    assert info.value is exc
    assert len(store) == 0
    assert store.nbytes == 0


@strategies
def test_vjp_error_reaches_the_caller_unchanged_and_the_store_is_emptied(strategy):
    exc = Boom("from vjp")
    calls = [0]

    def vjp(x, g):
        calls[0] += 1
        if calls[0] == 4:
            raise exc
        return g * np.cos(x)

    store = revseq.MemoryStore()
    with pytest.raises(Boom) as info:
        revseq.backprop(Recurrence(np.sin, vjp=vjp), np.ones(2), 12, strategy, store=store)
    assert info.value is exc
    assert len(store) == 0


@strategies
def test_step_error_during_reverse_empties_the_store(strategy):
    exc = Boom("mid-reversal")
    store = revseq.MemoryStore()
    k = strategy.cost(12).forward_steps - 1  # reverse's last call
    states = revseq.reverse(failing_on_call(k, exc), np.ones(2), 12, strategy, store=store)
    with pytest.raises(Boom) as info:
        for _ in states:
            pass
    assert info.value is exc
    assert len(store) == 0


@strategies
def test_keyboard_interrupt_in_f_reaches_the_caller_and_the_store_is_emptied(strategy):
    exc = KeyboardInterrupt()
    store = revseq.MemoryStore()
    with pytest.raises(KeyboardInterrupt) as info:
        revseq.backprop(Recurrence(failing_on_call(8, exc), np.cos), np.ones(2), 12, strategy, store=store)
    assert info.value is exc
    assert len(store) == 0


@strategies
def test_closing_a_reversal_early_empties_the_store(strategy):
    store = revseq.MemoryStore()
    states = revseq.reverse(np.sin, np.ones(2), 20, strategy, store=store)
    next(states)
    next(states)
    states.close()
    assert len(store) == 0
    assert list(states) == []


@strategies
def test_leaving_a_walk_early_by_with_empties_the_store(strategy):
    store = revseq.MemoryStore()
    with revseq.walk(np.sin, np.ones(2), 20, strategy, store=store) as pairs:
        t, _ = next(pairs)
        assert t == 20
    assert len(store) == 0


def test_a_store_that_is_not_empty_is_refused():
    store = revseq.MemoryStore()
    store.put(0, np.ones(2))
    with pytest.raises(ParameterError, match=r"^store must be empty"):
        revseq.backprop(SIN, np.ones(2), 5, store=store)


def test_a_non_store_is_refused():
    with pytest.raises(ParameterError, match=r"^store must implement"):
        revseq.backprop(SIN, np.ones(2), 5, store={})  # type: ignore[arg-type]
