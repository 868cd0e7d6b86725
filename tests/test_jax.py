"""revseq.jax.scan against jax.grad of the plain jax.lax.scan.

Float64 is enabled for this module only. Evaluations of the step are
counted from outside with ``jax.debug.callback`` (it fires on every
execution, jitted or not), and memory is read from ``jax.live_arrays()``.
"""

from __future__ import annotations

import functools
import gc
import importlib
import re
import subprocess
import sys

import numpy as np
import pytest
from registry import every_builtin

import revseq

try:
    import jax
    import jax.numpy as jnp

    import revseq.jax as rj
except ModuleNotFoundError:  # the tests below that need JAX skip
    jax = None

needs_jax = pytest.mark.skipif(jax is None, reason="JAX is not installed (pip install 'revseq[jax]')")

STRATEGIES = every_builtin()
NS = [1, 2, 40]  # fewer than test_torch.py: each n compiles the step (xs is indexed inside jit)


@pytest.fixture(autouse=True, scope="module")
def _float64():
    if jax is None:
        yield
        return
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


def rnn_problem(n, width=8, features=3, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 6)
    W = jax.random.normal(keys[0], (width, width)) / np.sqrt(width)
    U = jax.random.normal(keys[1], (features, width))
    V = jax.random.normal(keys[2], (width, 2))
    xs = jax.random.normal(keys[3], (n, 2, features))
    h0 = jax.random.normal(keys[4], (2, width))
    w_y = jax.random.normal(keys[5], (n, 2, 2))
    return (W, U, V), xs, h0, w_y


def rnn_step(carry, x):
    """An RNN step with a readout; the weights ride in the carry, unchanged, so that this one
    module-level function (compiled once per n) serves every strategy."""
    h, (W, U, V) = carry
    h = jnp.tanh(h @ W + x @ U)
    return (h, (W, U, V)), h @ V


def carried_loss(scan, params, xs, h0, w_y):
    (h, _), ys = scan(rnn_step, (h0, params), xs)
    return jnp.sum(h**3) + jnp.sum(w_y * ys) + jnp.sum(ys**2)


def closure_loss(scan):
    """The same RNN written the usual way: W, U, V closed over by the step."""

    def loss(params, xs, h0, w_y):
        W, U, V = params

        def step(h, x):
            h = jnp.tanh(h @ W + x @ U)
            return h, h @ V

        h, ys = scan(step, h0, xs)
        return jnp.sum(h**3) + jnp.sum(w_y * ys) + jnp.sum(ys**2)

    return loss


def assert_trees_close(got, expected):
    for g, e in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)


_expected = {}


def expected_gradients(n):
    if n not in _expected:
        _expected[n] = jax.value_and_grad(functools.partial(carried_loss, jax.lax.scan), argnums=(0, 1, 2))(
            *rnn_problem(n)
        )
    return _expected[n]


@needs_jax
@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
def test_gradients_match_jax_grad_of_lax_scan(strategy, n):
    ours = functools.partial(carried_loss, functools.partial(rj.scan, strategy=strategy))
    got = jax.value_and_grad(ours, argnums=(0, 1, 2))(*rnn_problem(n))
    assert_trees_close(got, expected_gradients(n))


@needs_jax
@pytest.mark.parametrize("strategy", [revseq.StoreAll(), revseq.BinomialCheckpointing(checkpoints=3)], ids=repr)
def test_gradients_reach_arrays_the_step_closes_over(strategy):
    args = rnn_problem(17)
    expected = jax.value_and_grad(closure_loss(jax.lax.scan), argnums=(0, 1, 2))(*args)
    got = jax.value_and_grad(closure_loss(functools.partial(rj.scan, strategy=strategy)), argnums=(0, 1, 2))(*args)
    assert_trees_close(got, expected)


@needs_jax
@pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
def test_step_evaluations_are_the_strategys_cost_plus_one_per_vjp(strategy):
    n = 17
    calls = []

    def step(h, x):
        jax.debug.callback(lambda: calls.append(1))
        return jnp.sin(h) + x, None

    tally = rj.Tally()
    xs = jnp.linspace(0.0, 1.0, n)
    jax.grad(lambda h0: rj.scan(step, h0, xs, strategy=strategy, tally=tally)[0])(0.5)
    jax.effects_barrier()
    cost = strategy.cost(n)
    assert len(calls) == cost.forward_steps + n
    assert (tally.forward_steps, tally.vjp_steps, tally.step_calls) == (cost.forward_steps, n, len(calls))
    assert tally.stats.as_cost() == cost


@needs_jax
def test_pytree_carry_integer_leaves_and_no_xs():
    n = 200

    def step(carry, _):
        pos, vel, k = carry["pos"], carry["vel"], carry["k"]
        return {"pos": pos + 0.01 * vel, "vel": vel - 0.01 * jnp.sin(pos) * (1 + k % 2), "k": k + 1}, None

    def loss(scan, pos0, vel0):
        out, _ = scan(step, {"pos": pos0, "vel": vel0, "k": jnp.int64(0)}, None, n)
        return jnp.sum(out["pos"] ** 2) + jnp.sum(out["vel"])

    pos0, vel0 = jnp.linspace(-1.0, 1.0, 4), jnp.ones(4)
    expected = jax.grad(lambda p, v: loss(jax.lax.scan, p, v), argnums=(0, 1))(pos0, vel0)
    ours = lambda f, init, xs, length: rj.scan(f, init, xs, length, strategy=revseq.BinomialCheckpointing(5))  # noqa: E731
    got = jax.grad(lambda p, v: loss(ours, p, v), argnums=(0, 1))(pos0, vel0)
    assert_trees_close(got, expected)


@needs_jax
def test_integer_inputs_token_ids():
    tokens = jnp.arange(30) % 7
    embed = jax.random.normal(jax.random.PRNGKey(1), (7, 4))

    def loss(scan, embed):
        h, ys = scan(lambda h, k: (jnp.tanh(0.8 * h + embed[k]), h[0]), jnp.zeros(4), tokens)
        return jnp.sum(h) + jnp.sum(ys**2)

    expected = jax.grad(lambda e: loss(jax.lax.scan, e))(embed)
    got = jax.grad(lambda e: loss(lambda f, i, x: rj.scan(f, i, x, strategy=revseq.RecursiveHalving()), e))(embed)
    assert_trees_close(got, expected)


@needs_jax
def test_forward_value_is_traceable_under_jit_and_vmap():
    params, xs, h0, w_y = rnn_problem(25)
    expected = carried_loss(jax.lax.scan, params, xs, h0, w_y)
    assert_trees_close(jax.jit(functools.partial(carried_loss, rj.scan))(params, xs, h0, w_y), expected)
    batched = jax.vmap(lambda h: carried_loss(rj.scan, params, xs, h, w_y))(jnp.stack([h0, h0 + 1]))
    assert_trees_close(batched[0], expected)


@needs_jax
def test_differentiating_under_jit_is_a_clear_error():
    args = rnn_problem(5)
    with pytest.raises(TypeError, match=re.escape("jax.grad(loss), not jax.jit(jax.grad(loss))")):
        jax.jit(jax.grad(functools.partial(carried_loss, rj.scan)))(*args)


@needs_jax
def test_applying_the_vjp_twice_replays_the_schedule():
    n = 20
    xs = jnp.linspace(0.0, 2.0, n)
    step = lambda h, x: (jnp.tanh(1.5 * h + x), None)  # noqa: E731
    expected = jax.vjp(lambda h0: jax.lax.scan(step, h0, xs)[0], 0.1)[1](1.0)
    tally = rj.Tally()
    strategy = revseq.BinomialCheckpointing(checkpoints=3)
    _, vjp = jax.vjp(lambda h0: rj.scan(step, h0, xs, strategy=strategy, tally=tally)[0], 0.1)
    assert_trees_close(vjp(1.0), expected)
    assert_trees_close(vjp(1.0), expected)
    assert tally.forward_steps == 2 * strategy.cost(n).forward_steps
    assert tally.vjp_steps == 2 * n


def held_bytes(fn):
    """Bytes of the device arrays ``fn`` leaves alive (beyond what it returns), and what it returns."""
    gc.collect()
    before = {id(a) for a in jax.live_arrays()}
    out = fn()
    gc.collect()
    returned = {id(a) for a in jax.tree_util.tree_leaves(out[0])}
    return sum(a.nbytes for a in jax.live_arrays() if id(a) not in before and id(a) not in returned), out


@needs_jax
def test_residuals_stay_at_the_budget_while_lax_scans_grow_and_are_freed_with_the_vjp():
    n, c, state_bytes = 400, 6, 4 * 16 * 8
    W = jax.random.normal(jax.random.PRNGKey(0), (16, 16)) / 4
    step = lambda h, x: (jnp.tanh(h @ W + x), None)  # noqa: E731
    xs = jax.random.normal(jax.random.PRNGKey(1), (n, 4, 16))
    h0 = jnp.zeros((4, 16))
    plain = lambda h0, xs: jax.lax.scan(step, h0, xs)[0]  # noqa: E731
    ours = lambda h0, xs: rj.scan(step, h0, xs, strategy=revseq.BinomialCheckpointing(checkpoints=c))[0]  # noqa: E731
    jax.vjp(ours, h0, xs)  # compile first: jit caches hold constants of their own
    plain_bytes, _ = held_bytes(lambda: jax.vjp(plain, h0, xs))
    our_bytes, (_, vjp) = held_bytes(lambda: jax.vjp(ours, h0, xs))
    assert plain_bytes >= n * state_bytes  # lax.scan keeps residuals for every step
    # ours: c checkpoints (x_0 is h0 itself), plus the live state and x_n the paused walk holds
    assert 0 < our_bytes <= (c + 2) * state_bytes
    del vjp
    left, _ = held_bytes(lambda: (None,))
    assert left == 0  # dropping the VJP function freed every checkpoint


BAD_ARGUMENTS = [
    (lambda: {"xs": None}, "length must be given when there are no xs"),
    (lambda: {"length": 4}, "length must equal the first dimension of xs, 5, got 4"),
    (lambda: {"xs": None, "length": 0}, "length must be an int >= 1, got 0"),
    (lambda: {"xs": (jnp.zeros(5), jnp.zeros(4))}, "xs must have a first dimension of length n >= 1 shared"),
    (lambda: {"strategy": revseq.StoreAll}, "got the class StoreAll; did you mean StoreAll()?"),
    (lambda: {"tally": {}}, "tally must be a revseq.jax.Tally"),
    (lambda: {"f": 3}, "f must be callable, got 3"),
]


@needs_jax
@pytest.mark.parametrize(("make", "message"), BAD_ARGUMENTS, ids=[m for _, m in BAD_ARGUMENTS])
def test_bad_arguments_are_rejected_with_a_message(make, message):
    args = {"f": lambda h, x: (h, None), "init": jnp.zeros(2), "xs": jnp.zeros(5)} | make()
    with pytest.raises(revseq.ParameterError, match=re.escape(message)):
        rj.scan(args.pop("f"), args.pop("init"), args.pop("xs"), **args)


def test_import_names_the_extra_when_jax_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)  # makes `import jax` fail as if absent
    monkeypatch.delitem(sys.modules, "revseq.jax", raising=False)
    with pytest.raises(ImportError, match=re.escape("revseq.jax needs JAX: pip install 'revseq[jax]'")):
        importlib.import_module("revseq.jax")


def test_the_core_never_imports_jax():
    code = "import sys, revseq, revseq.testing; assert 'jax' not in sys.modules, 'jax was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
