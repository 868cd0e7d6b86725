"""Gradients against central finite differences (float64) and against plain loops.

The objective is ``<adjoint, x_n>`` plus the per-step losses at x_1 .. x_n;
the adjoint defaults to ones without a loss (the gist's gradient of
``sum(x_n)``) and to zeros with one. Every expected number comes from a
plain forward loop in this file, never from revseq.
"""

from __future__ import annotations

import numpy as np
import oracles
import pytest

import revseq

STRATEGIES = [
    revseq.StoreAll(),
    revseq.Recompute(),
    revseq.RecursiveHalving(),
    revseq.SqrtCheckpointing(),
    revseq.SqrtCheckpointing(interval=3),
    revseq.BinomialCheckpointing(checkpoints=2),
    revseq.BinomialCheckpointing(checkpoints=5),
    revseq.BinomialCheckpointing(),
]
LENGTHS = [1, 2, 3, 10, 41]
FD = {"rtol": 1e-6, "atol": 1e-8}  # central differences in float64, eps = 1e-6
ROUNDING = {"rtol": 1e-12, "atol": 1e-14}

strategies = pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
lengths = pytest.mark.parametrize("n", LENGTHS)


def rng():
    return np.random.default_rng(1234)


def final_state(f, x0, n, *args, indexed=False):
    return oracles.run_forward(f, x0, n, *args, indexed=indexed)[-1]


# -- the gist's elementwise form: f = sin, df = cos ---------------------------------


@strategies
@lengths
def test_elementwise_df_matches_finite_differences(strategy, n):
    x0 = rng().uniform(-1.5, 1.5, 5)
    out = revseq.backprop(revseq.Recurrence(np.sin, np.cos), x0, n, strategy)
    expected = oracles.central_difference(lambda x: final_state(np.sin, x, n).sum(), x0)
    np.testing.assert_allclose(out.gradient, expected, **FD)
    np.testing.assert_allclose(out.state, final_state(np.sin, x0, n), **ROUNDING)
    assert out.params_gradient is None
    assert out.loss is None


@pytest.mark.parametrize("n", [1, 2, 5, 20])
def test_the_gists_extra_factor_would_be_caught(n):
    # DESIGN: the true derivative has n factors df(x_0) .. df(x_{n-1}); the gist's
    # store-everything version also multiplies df(x_n). Finite differences tell them apart.
    x0 = rng().uniform(0.5, 1.5, 4)
    xs = oracles.run_forward(np.sin, x0, n)
    true = np.prod([np.cos(x) for x in xs[:n]], axis=0)
    slip = true * np.cos(xs[n])
    fd = oracles.central_difference(lambda x: final_state(np.sin, x, n).sum(), x0)
    np.testing.assert_allclose(true, fd, **FD)
    assert not np.allclose(slip, fd, **FD)
    out = revseq.backprop(revseq.Recurrence(np.sin, np.cos), x0, n, revseq.BinomialCheckpointing(checkpoints=2))
    np.testing.assert_allclose(out.gradient, true, **ROUNDING)


# -- a general vector-Jacobian product: x -> tanh(A x) -----------------------------


def tanh_layer(a):
    def f(x):
        return np.tanh(a @ x)

    def vjp(x, g):
        return a.T @ (g * (1.0 - np.tanh(a @ x) ** 2))

    return f, vjp


@strategies
@lengths
def test_vjp_matches_finite_differences(strategy, n):
    gen = rng()
    a = gen.normal(0, 0.6, (4, 4))
    x0, w = gen.normal(0, 1, 4), gen.normal(0, 1, 4)
    f, vjp = tanh_layer(a)
    out = revseq.backprop(revseq.Recurrence(f, vjp=vjp), x0, n, strategy, adjoint=w)
    expected = oracles.central_difference(lambda x: w @ final_state(f, x, n), x0)
    np.testing.assert_allclose(out.gradient, expected, **FD)
    np.testing.assert_allclose(out.state, final_state(f, x0, n), **ROUNDING)


# -- an indexed step reading inputs u[t] -------------------------------------------


@strategies
@lengths
def test_indexed_step_matches_finite_differences(strategy, n):
    gen = rng()
    w_mat = gen.normal(0, 0.5, (3, 3))
    u = gen.normal(0, 1, (n, 3))
    x0, adj = gen.normal(0, 1, 3), gen.normal(0, 1, 3)

    def f(x, t):
        return np.tanh(w_mat @ x + u[t])

    def vjp(x, t, g):
        return w_mat.T @ (g * (1.0 - f(x, t) ** 2))

    out = revseq.backprop(revseq.Recurrence(f, vjp=vjp, indexed=True), x0, n, strategy, adjoint=adj)
    expected = oracles.central_difference(lambda x: adj @ final_state(f, x, n, indexed=True), x0)
    np.testing.assert_allclose(out.gradient, expected, **FD)


def test_indexed_step_sees_each_index_in_order():
    seen = []

    def f(x, t):
        seen.append(t)
        return x + t

    out = revseq.backprop(
        revseq.Recurrence(f, df=lambda x, t: np.ones_like(x), indexed=True), np.zeros(1), 6, revseq.StoreAll()
    )
    assert seen == list(range(6))
    assert out.state[0] == sum(range(6))


# -- shared parameters: the gradient is summed over steps --------------------------


def rnn(params_as):
    """h -> tanh(W h + b) with params (W, b) packed as a tuple or a dict."""

    def unpack(p):
        return (p["W"], p["b"]) if params_as == "dict" else p

    def pack(w, b):
        return {"W": w, "b": b} if params_as == "dict" else (w, b)

    def f(h, p):
        w, b = unpack(p)
        return np.tanh(w @ h + b)

    def vjp(h, p, g):
        w, b = unpack(p)
        d = g * (1.0 - np.tanh(w @ h + b) ** 2)
        return w.T @ d, pack(np.outer(d, h), d)

    return f, vjp, pack


@strategies
@pytest.mark.parametrize("params_as", ["tuple", "dict"])
@pytest.mark.parametrize("n", [1, 3, 25])
def test_params_gradient_is_summed_over_steps(strategy, params_as, n):
    gen = rng()
    f, vjp, pack = rnn(params_as)
    w, b = gen.normal(0, 0.5, (3, 3)), gen.normal(0, 0.3, 3)
    x0, adj = gen.normal(0, 1, 3), gen.normal(0, 1, 3)
    out = revseq.backprop(revseq.Recurrence(f, vjp=vjp, params=pack(w, b)), x0, n, strategy, adjoint=adj)

    got_w, got_b = (out.params_gradient["W"], out.params_gradient["b"]) if params_as == "dict" else out.params_gradient
    np.testing.assert_allclose(
        got_w, oracles.central_difference(lambda v: adj @ final_state(f, x0, n, pack(v, b)), w), **FD
    )
    np.testing.assert_allclose(
        got_b, oracles.central_difference(lambda v: adj @ final_state(f, x0, n, pack(w, v)), b), **FD
    )
    np.testing.assert_allclose(
        out.gradient, oracles.central_difference(lambda x: adj @ final_state(f, x, n, pack(w, b)), x0), **FD
    )


# -- a loss at every step x_1 .. x_n ------------------------------------------------


def lossy_rnn(n):
    gen = rng()
    w_mat = gen.normal(0, 0.5, (3, 3))
    u = gen.normal(0, 1, (n, 3))
    target = gen.normal(0, 1, (n + 1, 3))  # target[t] for the state x_t, t = 1 .. n

    def f(x, t):
        return np.tanh(w_mat @ x + u[t])

    def vjp(x, t, g):
        return w_mat.T @ (g * (1.0 - f(x, t) ** 2))

    def loss(x, t):
        r = x - target[t]
        return 0.5 * float(r @ r), r

    def total_loss(x0):
        xs = oracles.run_forward(f, x0, n, indexed=True)
        return sum(loss(xs[t], t)[0] for t in range(1, n + 1))

    return revseq.Recurrence(f, vjp=vjp, loss=loss, indexed=True), total_loss, f


@strategies
@lengths
def test_per_step_loss_value_and_gradient(strategy, n):
    rec, total_loss, _ = lossy_rnn(n)
    x0 = rng().normal(0, 1, 3)
    out = revseq.backprop(rec, x0, n, strategy)  # default seed: zeros, the objective is the loss alone
    assert out.loss == pytest.approx(total_loss(x0), rel=1e-12)
    np.testing.assert_allclose(out.gradient, oracles.central_difference(total_loss, x0), **FD)


@pytest.mark.parametrize("n", [1, 4, 30])
def test_per_step_loss_plus_an_adjoint(n):
    rec, total_loss, f = lossy_rnn(n)
    x0, adj = rng().normal(0, 1, 3), np.array([0.3, -1.0, 2.0])
    out = revseq.backprop(rec, x0, n, revseq.RecursiveHalving(), adjoint=adj)

    def objective(x):
        return total_loss(x) + adj @ final_state(f, x, n, indexed=True)

    np.testing.assert_allclose(out.gradient, oracles.central_difference(objective, x0), **FD)


@pytest.mark.parametrize("n", [1, 5, 17])
def test_loss_with_params_gradient(n):
    # loss(x, p) -> (value, grad_x, grad_params): the params gradient adds the loss's own part.
    gen = rng()
    f, vjp, pack = rnn("tuple")
    w, b = gen.normal(0, 0.5, (3, 3)), gen.normal(0, 0.3, 3)
    x0 = gen.normal(0, 1, 3)

    def loss(x, p):
        return 0.5 * float(x @ x) + 0.1 * float(p[1] @ p[1]), x, (np.zeros_like(p[0]), 0.2 * p[1])

    def objective(x, p):
        xs = oracles.run_forward(f, x, n, p)
        return sum(loss(xt, p)[0] for xt in xs[1:])

    rec = revseq.Recurrence(f, vjp=vjp, params=pack(w, b), loss=loss)
    out = revseq.backprop(rec, x0, n, revseq.BinomialCheckpointing(checkpoints=2))
    assert out.loss == pytest.approx(objective(x0, (w, b)), rel=1e-12)
    got_w, got_b = out.params_gradient
    np.testing.assert_allclose(got_w, oracles.central_difference(lambda v: objective(x0, (v, b)), w), **FD)
    np.testing.assert_allclose(got_b, oracles.central_difference(lambda v: objective(x0, (w, v)), b), **FD)
    np.testing.assert_allclose(out.gradient, oracles.central_difference(lambda x: objective(x, (w, b)), x0), **FD)


# -- default seeds -------------------------------------------------------------------


def test_default_seed_is_ones_without_a_loss():
    f, vjp = tanh_layer(rng().normal(0, 0.6, (4, 4)))
    x0 = rng().normal(0, 1, 4)
    rec = revseq.Recurrence(f, vjp=vjp)
    implicit = revseq.backprop(rec, x0, 9)
    explicit = revseq.backprop(rec, x0, 9, adjoint=np.ones(4))
    np.testing.assert_array_equal(implicit.gradient, explicit.gradient)
    np.testing.assert_allclose(
        implicit.gradient, oracles.central_difference(lambda x: final_state(f, x, 9).sum(), x0), **FD
    )


def test_default_seed_is_zeros_with_a_loss():
    rec, total_loss, _ = lossy_rnn(8)
    x0 = rng().normal(0, 1, 3)
    implicit = revseq.backprop(rec, x0, 8)
    explicit = revseq.backprop(rec, x0, 8, adjoint=np.zeros(3))
    np.testing.assert_array_equal(implicit.gradient, explicit.gradient)
    np.testing.assert_allclose(implicit.gradient, oracles.central_difference(total_loss, x0), **FD)


# -- states that are tuples or dicts of arrays ---------------------------------------


def leafwise_fd(objective, state):
    """Central differences of ``objective`` with respect to every leaf of a tuple or dict state."""
    keys = range(len(state)) if isinstance(state, tuple) else list(state)

    def with_leaf(key, value):
        if isinstance(state, tuple):
            return tuple(value if i == key else state[i] for i in keys)
        return {k: value if k == key else state[k] for k in keys}

    grads = {
        key: oracles.central_difference(lambda v, key=key: objective(with_leaf(key, v)), state[key]) for key in keys
    }
    return tuple(grads[i] for i in keys) if isinstance(state, tuple) else grads


def total(state):
    leaves = state if isinstance(state, tuple) else state.values()
    return sum(float(leaf.sum()) for leaf in leaves)


@strategies
@pytest.mark.parametrize("n", [1, 4, 19])
def test_tuple_state_with_elementwise_df(strategy, n):
    def f(s):
        return np.sin(s[0]), np.cos(s[1])

    def df(s):
        return np.cos(s[0]), -np.sin(s[1])

    gen = rng()
    x0 = (gen.uniform(-1, 1, 3), gen.uniform(-1, 1, (2, 2)))
    out = revseq.backprop(revseq.Recurrence(f, df), x0, n, strategy)
    expected = leafwise_fd(lambda s: total(final_state(f, s, n)), x0)
    assert isinstance(out.gradient, tuple)
    for got, want in zip(out.gradient, expected, strict=True):
        np.testing.assert_allclose(got, want, **FD)


@strategies
@pytest.mark.parametrize("n", [1, 4, 19])
def test_dict_state_with_coupled_vjp(strategy, n):
    def f(s):
        return {"h": np.tanh(s["h"] + s["c"]), "c": 0.5 * s["h"] * s["c"]}

    def vjp(s, g):
        dh = g["h"] * (1.0 - np.tanh(s["h"] + s["c"]) ** 2)
        return {"h": dh + 0.5 * g["c"] * s["c"], "c": dh + 0.5 * g["c"] * s["h"]}

    gen = rng()
    x0 = {"h": gen.uniform(-1, 1, 3), "c": gen.uniform(-1, 1, 3)}
    adj = {"h": gen.normal(0, 1, 3), "c": gen.normal(0, 1, 3)}

    def objective(s):
        xn = final_state(f, s, n)
        return float(adj["h"] @ xn["h"] + adj["c"] @ xn["c"])

    out = revseq.backprop(revseq.Recurrence(f, vjp=vjp), x0, n, strategy, adjoint=adj)
    expected = leafwise_fd(objective, x0)
    assert set(out.gradient) == {"h", "c"}
    for key in expected:
        np.testing.assert_allclose(out.gradient[key], expected[key], **FD)


# -- every strategy gives StoreAll's numbers to rounding -----------------------------


@strategies
@pytest.mark.parametrize("n", [1, 2, 7, 64, 129])
def test_every_strategy_equals_store_all(strategy, n):
    gen = rng()
    w, b = gen.normal(0, 0.5, (3, 3)), gen.normal(0, 0.3, 3)
    u = gen.normal(0, 1, (n, 3))

    def f(h, t, p):
        return np.tanh(p[0] @ h + p[1] + u[t])

    def vjp(h, t, p, g):
        d = g * (1.0 - f(h, t, p) ** 2)
        return p[0].T @ d, (np.outer(d, h), d)

    def loss(h, t, p):
        return float(np.sin(h).sum()) * t, np.cos(h) * t, (np.zeros((3, 3)), np.zeros(3))

    rec = revseq.Recurrence(f, vjp=vjp, params=(w, b), loss=loss, indexed=True)
    x0, adj = gen.normal(0, 1, 3), gen.normal(0, 1, 3)
    got = revseq.backprop(rec, x0, n, strategy, adjoint=adj)
    want = revseq.backprop(rec, x0, n, revseq.StoreAll(), adjoint=adj)
    np.testing.assert_allclose(got.state, want.state, **ROUNDING)
    np.testing.assert_allclose(got.gradient, want.gradient, **ROUNDING)
    np.testing.assert_allclose(got.params_gradient[0], want.params_gradient[0], **ROUNDING)
    np.testing.assert_allclose(got.params_gradient[1], want.params_gradient[1], **ROUNDING)
    assert got.loss == pytest.approx(want.loss, rel=1e-12, abs=1e-14)


# -- a vjp given the step's output (vjp_output=True) ----------------------------------


def rnn_from_output():
    """h -> tanh(W h + u_t) with params W and a loss, its vjp written from y = f(h) (no recomputation)."""
    gen = rng()
    u = gen.normal(0, 1, (41, 3))
    target = gen.normal(0, 1, (42, 3))

    def f(h, t, w):
        return np.tanh(w @ h + u[t])

    def vjp(h, t, w, y, g):
        d = g * (1.0 - y**2)
        y *= 0.0  # a vjp writing into y reaches neither the result nor any later step
        return w.T @ d, np.outer(d, h)

    def loss(x, t, w):
        r = x - target[t]
        return 0.5 * float(r @ r), r, np.zeros_like(w)

    return f, vjp, loss


@pytest.mark.parametrize(
    "strategy",
    [*STRATEGIES, revseq.OnlineCheckpointing(checkpoints=3), revseq.MultistageCheckpointing(ram=2)],
    ids=repr,
)
@pytest.mark.parametrize("store", ["memory", "copying"])
@lengths
def test_a_vjp_given_the_steps_output_matches_finite_differences(strategy, store, n, tmp_path):
    f, vjp, loss = rnn_from_output()
    gen = rng()
    w, x0, adj = gen.normal(0, 0.5, (3, 3)), gen.normal(0, 1, 3), gen.normal(0, 1, 3)
    rec = revseq.Recurrence(f, vjp=vjp, params=w, loss=loss, indexed=True, vjp_output=True)
    kept = revseq.MemoryStore() if store == "memory" else revseq.MemoryStore(copy=True)
    disk = revseq.DiskStore(tmp_path) if isinstance(strategy, revseq.MultistageCheckpointing) else None
    out = revseq.backprop(rec, x0, n, strategy, adjoint=adj, store=kept, disk=disk)

    def objective(x, v):
        xs = oracles.run_forward(lambda h, t: f(h, t, v), x, n, indexed=True)
        return adj @ xs[n] + sum(loss(xs[t], t, v)[0] for t in range(1, n + 1))

    np.testing.assert_array_equal(out.state, final_state(lambda h, t: f(h, t, w), x0, n, indexed=True))
    np.testing.assert_allclose(out.gradient, oracles.central_difference(lambda x: objective(x, w), x0), **FD)
    np.testing.assert_allclose(out.params_gradient, oracles.central_difference(lambda v: objective(x0, v), w), **FD)
    assert out.stats.as_cost() == strategy.cost(n)


def test_vjp_output_needs_a_vjp():
    with pytest.raises(revseq.ParameterError, match="vjp_output=True passes the step's output to vjp: give vjp="):
        revseq.Recurrence(np.sin, np.cos, vjp_output=True)
