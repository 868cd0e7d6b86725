"""revseq.jax against jax.grad of plain JAX loops, compiled.

Float64 is enabled for this module only. Every gradient is compared with
``jax.grad`` of ``jax.lax.scan`` (or of a masked scan, for the while loop),
and calls of the step are counted from outside, with ``jax.debug.callback``
inside the step (it fires on every execution, jitted or not). The device
plans are compared action by action with the strategies' own schedules.
Each distinct (strategy, n) compiles once, so the cases are chosen for what
they cover, not swept.
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
from test_faults import RandomSchedule

import revseq
from revseq.schedule import Advance, Free, Restore, Reverse, Store

try:
    import jax
    import jax.numpy as jnp

    import revseq.jax as rj
    from revseq import _jaxplan
    from revseq._microcode import DONE, FORWARD, RESTORE, REVERSE, STORE
except ModuleNotFoundError:  # the tests below that need JAX skip
    jax = None

needs_jax = pytest.mark.skipif(jax is None, reason="JAX is not installed (pip install 'revseq[jax]')")

STRATEGIES = [
    *every_builtin(),
    revseq.OnlineCheckpointing(checkpoints=3),  # not a device rule: runs as a program
    RandomSchedule(seed=7, slots=3),  # a user's strategy, with Free and odd restores: a program
]
# Every strategy at a few lengths (the device plans are compared action by action for every n <= 40 below,
# and benchmarks/test_jax_compiled.py checks every strategy at n in {1, 2, 3, 17, 1000}): each case compiles.
CASES = (
    [(s, n) for s in STRATEGIES for n in (2, 17)]
    + [
        (s, 1000)
        for s in STRATEGIES
        if isinstance(s, (revseq.BinomialCheckpointing, RandomSchedule, revseq.SqrtCheckpointing))
    ]
    + [(revseq.BinomialCheckpointing(checkpoints=3), 1)]
)
COUNTED = 20_000  # count calls from outside up to this many (one host callback per call)


@pytest.fixture(autouse=True, scope="module")
def _float64(jax_float64):
    """JAX in float64 for every test here (the oracles are float64)."""


calls: list[int] = []


def _count() -> None:
    calls.append(1)


def rnn_problem(n, width=8, features=3, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 6)
    W = jax.random.normal(keys[0], (width, width)) / np.sqrt(width)
    U = jax.random.normal(keys[1], (features, width))
    V = jax.random.normal(keys[2], (width, 2))
    xs = jax.random.normal(keys[3], (n, 2, features))
    h0 = jax.random.normal(keys[4], (2, width))
    w_y = jax.random.normal(keys[5], (n, 2, 2))
    return (W, U, V), xs, h0, w_y


def rnn_loss(scan, params, xs, h0, w_y, counted=False):
    """An RNN with a readout, the weights closed over; a loss on the final state and every output."""
    W, U, V = params

    def step(h, x):
        if counted:
            jax.debug.callback(_count)
        h = jnp.tanh(h @ W + x @ U)
        return h, h @ V

    h, ys = scan(step, h0, xs)
    return jnp.sum(h**3) + jnp.sum(w_y * ys) + jnp.sum(ys**2)


def assert_trees_close(got, expected):
    for g, e in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)


@functools.cache
def expected_gradients(n):
    return jax.jit(jax.value_and_grad(functools.partial(rnn_loss, jax.lax.scan), argnums=(0, 1, 2)))(*rnn_problem(n))


@needs_jax
@pytest.mark.parametrize(("strategy", "n"), CASES, ids=[f"{s!r}-{n}" for s, n in CASES])
def test_jitted_gradients_match_lax_scan_and_the_step_runs_cost_plus_n_times(strategy, n):
    cost = strategy.cost(n).forward_steps
    counted = cost + n <= COUNTED
    ours = functools.partial(rnn_loss, functools.partial(rj.scan, strategy=strategy), counted=counted)
    grad = jax.jit(jax.value_and_grad(ours, argnums=(0, 1, 2)))
    calls.clear()
    got = grad(*rnn_problem(n))
    jax.effects_barrier()
    assert_trees_close(got, expected_gradients(n))
    if counted:
        assert len(calls) == cost + n  # the schedule's steps, and one re-run inside each step's vjp


@needs_jax
@pytest.mark.parametrize(
    "strategy",
    [revseq.BinomialCheckpointing(checkpoints=4), revseq.SqrtCheckpointing(), RandomSchedule(3, 4)],
    ids=repr,
)
def test_the_tally_counts_each_pass_and_a_second_vjp_runs_the_reversal_again(strategy):
    n = 40
    params, xs, h0, w_y = rnn_problem(n)
    tally = rj.Tally()
    ours = functools.partial(rj.scan, strategy=strategy, tally=tally)
    _, vjp = jax.vjp(lambda h: rnn_loss(ours, params, xs, h, w_y), h0)
    first = vjp(1.0)
    jax.effects_barrier()
    assert (tally.forward_steps, tally.vjp_steps) == (strategy.cost(n).forward_steps, n)
    assert tally.stats is None  # compiled: the calls are counted, the engine's Stats do not exist
    swept = tally.forward_steps
    assert_trees_close(vjp(1.0), first)
    jax.effects_barrier()
    # The forward sweep ran once; the second VJP runs the rest of the schedule again from its residuals.
    assert tally.vjp_steps == 2 * n
    assert tally.forward_steps > swept


@needs_jax
def test_every_transformation_jit_vmap_grad_of_jit_nested_and_reversed():
    n = 30
    params, xs, h0, w_y = rnn_problem(n)
    strategy = revseq.BinomialCheckpointing(checkpoints=4)
    ours = functools.partial(rj.scan, strategy=strategy)
    loss = functools.partial(rnn_loss, params=params, xs=xs, w_y=w_y)
    expected = jax.grad(lambda h: loss(jax.lax.scan, h0=h))(h0)
    assert_trees_close(jax.jit(jax.grad(lambda h: loss(ours, h0=h)))(h0), expected)
    assert_trees_close(jax.grad(jax.jit(lambda h: loss(ours, h0=h)))(h0), expected)
    batch = jnp.stack([h0, h0 + 0.5, -h0])
    assert_trees_close(
        jax.jit(jax.vmap(jax.grad(lambda h: loss(ours, h0=h))))(batch),
        jax.vmap(jax.grad(lambda h: loss(jax.lax.scan, h0=h)))(batch),
    )
    # The forward value alone is lax.scan's, traceable anywhere.
    assert_trees_close(jax.jit(lambda h: loss(ours, h0=h))(h0), loss(jax.lax.scan, h0=h0))

    W = params[0]

    def nested(scan, W):  # three rounds of an inner scan, inside an outer lax.scan
        def round_(h, _):
            return scan(lambda h, x: (jnp.tanh(h @ W + x @ params[1]), None), h, xs)[0], None

        return jnp.sum(jax.lax.scan(round_, h0, None, length=3)[0] ** 2)

    assert_trees_close(
        jax.jit(jax.grad(functools.partial(nested, ours)))(W), jax.grad(functools.partial(nested, jax.lax.scan))(W)
    )

    def backwards(scan, h):
        return jnp.sum(scan(lambda h, x: (jnp.tanh(h @ W + x @ params[1]), h[0]), h, xs, reverse=True)[1] ** 2)

    assert_trees_close(
        jax.jit(jax.grad(functools.partial(backwards, ours)))(h0),
        jax.grad(functools.partial(backwards, jax.lax.scan))(h0),
    )


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
    got = jax.jit(jax.grad(lambda p, v: loss(ours, p, v), argnums=(0, 1)))(pos0, vel0)
    assert_trees_close(got, expected)


@needs_jax
def test_outputs_the_loss_does_not_use_and_integer_outputs():
    """ys returned but unused reach the backward pass as symbolic zeros, one zero row per step; integer ys as float0."""
    xs = jnp.linspace(0.0, 1.0, 12).reshape(6, 2)

    def step(h, x):
        return jnp.tanh(1.1 * h + x), (jnp.sum(h), jnp.int32(3))

    ours = functools.partial(rj.scan, strategy=revseq.BinomialCheckpointing(checkpoints=2))
    for pick in (lambda out: jnp.sum(out[0]), lambda out: jnp.sum(out[1][0])):
        expected = jax.grad(lambda h, pick=pick: pick(jax.lax.scan(step, h, xs)))(jnp.ones(2))
        assert_trees_close(jax.jit(jax.grad(lambda h, pick=pick: pick(ours(step, h, xs))))(jnp.ones(2)), expected)


@needs_jax
def test_integer_inputs_token_ids():
    tokens = jnp.arange(30) % 7
    embed = jax.random.normal(jax.random.PRNGKey(1), (7, 4))

    def loss(scan, embed):
        h, ys = scan(lambda h, k: (jnp.tanh(0.8 * h + embed[k]), h[0]), jnp.zeros(4), tokens)
        return jnp.sum(h) + jnp.sum(ys**2)

    expected = jax.grad(lambda e: loss(jax.lax.scan, e))(embed)
    got = jax.jit(jax.grad(lambda e: loss(lambda f, i, x: rj.scan(f, i, x, strategy=revseq.RecursiveHalving()), e)))(
        embed
    )
    assert_trees_close(got, expected)


# ---------------------------------------------------------------- the device plans, action by action


def schedule_events(actions, n):
    """What a schedule does, as (what, step) events: forward to step, store, restore, reverse a step."""
    events, live = [], 0
    for action in actions:
        if isinstance(action, Advance):
            for t in range(action.start + 1, min(action.stop, n - 1) + 1):
                events.append(("forward", t))
                if action.keep and t < action.stop:  # x_{start+1} .. x_{stop-1}
                    events.append(("store", t))
            live = min(action.stop, n - 1)
        elif isinstance(action, Store):
            events.append(("store", action.step))
        elif isinstance(action, Restore):
            events.append(("restore", action.step))
            live = action.step
        elif isinstance(action, Reverse):
            for t in range(action.stop - 1, action.start - 1, -1):
                if t != live:
                    events.append(("restore", t))
                    live = t
                events.append(("reverse", t))
        else:
            assert isinstance(action, Free)
    return events


def device_runner(plan, limit):
    """A jitted run of a device plan alone, recording its micro-operations; ``n`` is a runtime value."""

    @jax.jit
    def run(n):
        st = plan.init(n)
        ops = jnp.full((limit, 3), -1, jnp.int32)

        def body(carry):
            live, st, ops, i, _ = carry
            op, slot, pos, st = plan.next(st, live)
            ops = ops.at[i].set(jnp.stack([op, jnp.where(op == RESTORE, pos, live), slot]))
            live = jnp.where(op == FORWARD, live + 1, jnp.where(op == RESTORE, pos, live))
            return live, st, ops, i + 1, op

        def going(carry):
            return (carry[4] != DONE) & (carry[3] < limit)

        return jax.lax.while_loop(going, body, (jnp.int32(0), st, ops, jnp.int32(0), jnp.int32(-1)))[2]

    return run


def device_events(run, n):
    """The events of a device plan's run (device_runner) for ``n`` steps, as schedule_events lists them."""
    events = []
    for op, at, slot in np.asarray(run(n)).tolist():
        if op == FORWARD:
            events.append(("forward", at + 1))
            if slot >= 0:
                events.append(("store", at + 1))
        elif op == STORE:
            events.append(("store", at))
        elif op == RESTORE:
            events.append(("restore", at))
        elif op == REVERSE:
            events.append(("reverse", at))
        else:
            break
    return events


@needs_jax
@pytest.mark.parametrize("c", [1, 2, 3, 5, 8])
def test_revolve_on_device_is_revolve_action_for_action(c):
    top = 400
    strategy = revseq.BinomialCheckpointing(checkpoints=c)
    expected = {n: schedule_events(strategy.schedule(n), n) for n in [*range(1, 41), 97, 256, top]}
    plan = _jaxplan.Stack(_jaxplan.binomial_rule(top, c), c, c)  # one compilation serves every n <= top
    run = device_runner(plan, max(map(len, expected.values())) + 2)
    for n, events in expected.items():
        assert device_events(run, n) == events, n


@needs_jax
@pytest.mark.parametrize(
    "strategy",
    [revseq.StoreAll(), revseq.RecursiveHalving(), revseq.SqrtCheckpointing(), revseq.SqrtCheckpointing(3)],
    ids=repr,
)
def test_the_other_rules_on_device_are_their_strategies_action_for_action(strategy):
    for n in [1, 2, 3, 4, 5, 9, 16, 17, 50]:
        plan = rj.plan(strategy, n)
        assert isinstance(plan, _jaxplan.Stack)
        expected = schedule_events(strategy.schedule(n), n)
        assert device_events(device_runner(plan, len(expected) + 2), n) == expected, n


@needs_jax
def test_a_binomial_plan_is_a_few_hundred_integers_and_a_users_strategy_a_table():
    plan = rj.plan(revseq.BinomialCheckpointing(checkpoints=20), 10**5)
    assert isinstance(plan, _jaxplan.Stack)
    assert plan.capacity == 20
    from revseq._microcode import binomial_table

    n, c = 10**5, 20
    assert binomial_table(n, c)[0].size < 2 * np.sqrt(2 * n) + 2 * (6 * n) ** (1 / 3) + 8 * c  # 1211 of them
    program = rj.plan(RandomSchedule(1, 3), 50)
    assert isinstance(program, _jaxplan.Program)
    assert program.rows.dtype == np.int32


@needs_jax
def test_a_disk_schedule_is_refused_by_name():
    strategy = revseq.MultistageCheckpointing(ram=2, disk=4)
    with pytest.raises(
        revseq.ParameterError, match=r"stores x_\d+ on disk: revseq\.jax keeps every checkpoint in device"
    ):
        jax.grad(lambda h: jnp.sum(rj.scan(lambda h, x: (h * x, None), h, jnp.ones(30), strategy=strategy)[0]))(1.0)


@needs_jax
def test_program_size_does_not_grow_with_n():
    def lowered(n):
        def loss(h, xs):
            return jnp.sum(
                rj.scan(lambda h, x: (jnp.tanh(h + x), None), h, xs, strategy=revseq.BinomialCheckpointing(8))[0]
            )

        return jax.jit(jax.grad(loss)).lower(jnp.ones(4), jnp.ones((n, 4))).as_text()

    small, large = lowered(100), lowered(100_000)
    # The same program but for numbers: the lengths, and the binomial table (a few hundred int32 more).
    constants = re.compile(r'dense<(\[[^\]]*\]|"0x[0-9A-F]*")>')
    assert re.sub(r"\d+", "0", constants.sub("", small)) == re.sub(r"\d+", "0", constants.sub("", large))


# ---------------------------------------------------------------- memory


def held_bytes(fn):
    """Bytes of the device arrays ``fn`` leaves alive (beyond what it returns), and what it returns."""
    gc.collect()
    before = {id(a) for a in jax.live_arrays()}
    out = fn()
    gc.collect()
    returned = {id(a) for a in jax.tree_util.tree_leaves(out[0])}
    return sum(a.nbytes for a in jax.live_arrays() if id(a) not in before and id(a) not in returned), out


@needs_jax
def test_residuals_are_the_slots_while_lax_scans_grow_and_are_freed_with_the_vjp():
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
    # ours: c slots and the live state x_{n-1}, plus the plan's few integers
    assert (c + 1) * state_bytes <= our_bytes <= (c + 1) * state_bytes + 1024
    del vjp
    left, _ = held_bytes(lambda: (None,))
    assert left == 0


@needs_jax
def test_compiled_temporary_memory_is_bounded_by_the_budget():
    n, c = 2000, 10
    W = jax.random.normal(jax.random.PRNGKey(0), (64, 64)) / 8
    xs = jax.random.normal(jax.random.PRNGKey(1), (n, 8, 64))

    def temp(scan):
        def loss(h, xs):
            return jnp.sum(scan(lambda h, x: (jnp.tanh(h @ W + x), None), h, xs)[0])

        compiled = jax.jit(jax.grad(loss)).lower(jnp.zeros((8, 64)), xs).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    state = 8 * 64 * 8
    ours = temp(functools.partial(rj.scan, strategy=revseq.BinomialCheckpointing(checkpoints=c)))
    plain = temp(jax.lax.scan)
    assert plain >= n * state
    assert ours < (c + 12) * state + n * state // 10  # the slots and a few states; no per-step residuals


# ---------------------------------------------------------------- while_loop


def _masked_reference(body, init, n, max_steps):
    """A reverse-differentiable oracle: a lax.scan over max_steps that stops changing the carry at n."""

    def step(x, t):
        return jax.tree_util.tree_map(lambda a, b: jnp.where(t < n, a, b), body(x), x), None

    return jax.lax.scan(step, init, jnp.arange(max_steps))[0]


@needs_jax
@pytest.mark.parametrize("c", [1, 2, 3, 5])
def test_while_loop_gradients_and_calls_are_online_checkpointings(c):
    max_steps = 120
    W = jax.random.normal(jax.random.PRNGKey(0), (4, 4)) / 2

    def body(carry, W, counted):
        h, t = carry
        if counted:
            jax.debug.callback(_count)
        return jnp.tanh(h @ W + 0.1 * t), t + 1

    @jax.jit
    def ours(h0, W, n):
        out = rj.while_loop(lambda s: s[1] < n, lambda s: body(s, W, True), (h0, 0), max_steps=max_steps, checkpoints=c)
        return jnp.sum(out[0] ** 3)

    @jax.jit
    def reference(h0, W, n):
        return jnp.sum(_masked_reference(lambda s: body(s, W, False), (h0, 0), n, max_steps)[0] ** 3)

    strategy = revseq.OnlineCheckpointing(checkpoints=c)
    h0 = jnp.linspace(-1.0, 1.0, 4)
    for n in [1, 2, 3, 4, 7, 10, 20, 33, 50, 100, max_steps]:
        calls.clear()
        got = jax.grad(ours, argnums=(0, 1))(h0, W, n)
        jax.effects_barrier()
        assert_trees_close(got, jax.grad(reference, argnums=(0, 1))(h0, W, n))
        assert len(calls) == strategy.cost(n).forward_steps + n, n
        if n <= (c + 1) * (c + 2) // 2 - 1:
            assert len(calls) == revseq.online_lower_bound(n, c) + n, n


@needs_jax
def test_while_loop_under_vmap_with_a_stop_of_its_own_per_element():
    W = jax.random.normal(jax.random.PRNGKey(0), (4, 4)) / 2

    def body(carry):
        h, t = carry
        return jnp.tanh(h @ W + 0.1 * t), t + 1

    def ours(h0, n):
        return jnp.sum(rj.while_loop(lambda s: s[1] < n, body, (h0, 0), max_steps=60, checkpoints=4)[0] ** 2)

    def reference(h0, n):
        return jnp.sum(_masked_reference(body, (h0, 0), n, 60)[0] ** 2)

    h0 = jnp.stack([jnp.linspace(-1.0, 1.0, 4), jnp.ones(4), -jnp.ones(4)])
    ns = jnp.array([5, 37, 60])
    assert_trees_close(jax.jit(jax.vmap(jax.grad(ours)))(h0, ns), jax.vmap(jax.grad(reference))(h0, ns))


@needs_jax
def test_while_loop_stops_at_max_steps_and_counts_into_a_tally():
    tally = rj.Tally()

    def loss(x0):
        return rj.while_loop(lambda x: x < 1e9, lambda x: 1.01 * x + 0.1, x0, max_steps=30, checkpoints=3, tally=tally)

    _, grad = jax.jit(jax.value_and_grad(loss))(1.0)
    jax.effects_barrier()
    assert np.isclose(grad, 1.01**30)
    assert (tally.forward_steps, tally.vjp_steps) == (revseq.OnlineCheckpointing(3).cost(30).forward_steps, 30)


# ---------------------------------------------------------------- arguments


BAD_ARGUMENTS = [
    (lambda: {"xs": None}, "length must be given when there are no xs"),
    (lambda: {"length": 4}, "length must equal the first dimension of xs, 5, got 4"),
    (lambda: {"xs": None, "length": 0}, "length must be an int >= 1, got 0"),
    (lambda: {"xs": None, "length": 2**31}, "length must be <= 2**30"),
    (lambda: {"xs": (jnp.zeros(5), jnp.zeros(4))}, "xs must have a first dimension of length n >= 1 shared"),
    (lambda: {"strategy": revseq.StoreAll}, "got the class StoreAll; did you mean StoreAll()?"),
    (lambda: {"tally": {}}, "tally must be a revseq.jax.Tally"),
    (lambda: {"reverse": 1}, "reverse must be a bool, got 1"),
    (lambda: {"f": 3}, "f must be callable, got 3"),
    (lambda: {"f": lambda h, x: (h.astype(jnp.float32), None)}, "f must return a carry of the initial carry's"),
    (lambda: {"f": lambda h, x: ((h, h), None)}, "f must return a carry of the initial carry's structure"),
    (lambda: {"f": lambda h, x: (h[:1], None)}, "f must return a carry of the initial carry's structure"),
]


@needs_jax
@pytest.mark.parametrize(("make", "message"), BAD_ARGUMENTS, ids=[m for _, m in BAD_ARGUMENTS])
def test_bad_arguments_are_rejected_with_a_message(make, message):
    args = {"f": lambda h, x: (h, None), "init": jnp.zeros(2), "xs": jnp.zeros(5)} | make()
    with pytest.raises(revseq.ParameterError, match=re.escape(message)):
        rj.scan(args.pop("f"), args.pop("init"), args.pop("xs"), **args)


BAD_WHILE = [
    ({"max_steps": 0}, "max_steps must be an int >= 1, got 0"),
    ({"max_steps": 10, "checkpoints": 0}, "checkpoints must be an int >= 1, got 0"),
    ({"max_steps": 2**31}, "max_steps must be <= 2**30"),
    ({"max_steps": 10, "tally": 3}, "tally must be a revseq.jax.Tally"),
]


@needs_jax
@pytest.mark.parametrize(("kwargs", "message"), BAD_WHILE, ids=[m for _, m in BAD_WHILE])
def test_bad_while_loop_arguments_are_rejected_with_a_message(kwargs, message):
    with pytest.raises(revseq.ParameterError, match=re.escape(message)):
        rj.while_loop(lambda x: x < 3, lambda x: x + 1, 0.0, **kwargs)


@needs_jax
def test_a_while_loop_whose_functions_return_the_wrong_thing_is_refused():
    with pytest.raises(revseq.ParameterError, match=re.escape("body_fun must return a carry of the initial carry's")):
        rj.while_loop(lambda x: x < 3, lambda x: x.astype(jnp.float32), jnp.zeros(2), max_steps=5)
    with pytest.raises(revseq.ParameterError, match=re.escape("cond_fun must return one bool (a 0-d boolean array)")):
        rj.while_loop(lambda x: x < 3, lambda x: x + 1, jnp.zeros(2), max_steps=5)


def test_import_names_the_extra_when_jax_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)  # makes `import jax` fail as if absent
    monkeypatch.delitem(sys.modules, "revseq.jax", raising=False)
    with pytest.raises(ImportError, match=re.escape("revseq.jax needs JAX: pip install 'revseq[jax]'")):
        importlib.import_module("revseq.jax")


def test_the_core_never_imports_jax():
    code = "import sys, revseq, revseq.testing; assert 'jax' not in sys.modules, 'jax was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
