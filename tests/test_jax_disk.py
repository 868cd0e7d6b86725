"""revseq.jax.scan with a disk level (``disk=``): MultistageCheckpointing inside ``jax.jit``.

Every gradient is compared with ``jax.grad`` of ``jax.lax.scan`` and with
revseq's own StoreAll. Disk traffic is counted from outside: the methods of
:class:`revseq.DiskStore` are wrapped for the test (each ``put``, ``get``,
``delete`` made by the host callbacks, and the files in the store's
directory after each ``put``) and compared with ``strategy.cost(n)``.
After every run, failed or not, the parent directory must be empty (or the
test says why not, and removes what is left with the documented function).
"""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
from test_faults import RandomSchedule

import revseq
from revseq.disk import DiskStore

try:
    import jax
    import jax.numpy as jnp
    from jax.experimental import io_callback

    import revseq.jax as rj
    from revseq import _jaxplan
except ModuleNotFoundError:  # every test here needs JAX
    jax = None

pytestmark = pytest.mark.skipif(jax is None, reason="JAX is not installed (pip install 'revseq[jax]')")

CHEAP = revseq.DiskCosts(step=1.0, write=0.5, read=0.5)  # disk cheaper than a step: the plans use it


@pytest.fixture(autouse=True, scope="module")
def _float64(jax_float64):
    """JAX in float64 for every test here (the oracles are float64)."""


@pytest.fixture
def traffic(monkeypatch):
    """Counts DiskStore's puts, gets and deletes, and the most files one store's directory held."""
    seen = {"put": 0, "get": 0, "delete": 0, "files": 0}
    put, get, delete = DiskStore.put, DiskStore.get, DiskStore.delete

    def counted_put(self, key, state):
        seen["put"] += 1
        put(self, key, state)
        seen["files"] = max(seen["files"], len(os.listdir(self.path)))

    def counted_get(self, key):
        seen["get"] += 1
        return get(self, key)

    def counted_delete(self, key):
        seen["delete"] += 1
        delete(self, key)

    monkeypatch.setattr(DiskStore, "put", counted_put)
    monkeypatch.setattr(DiskStore, "get", counted_get)
    monkeypatch.setattr(DiskStore, "delete", counted_delete)
    return seen


@pytest.fixture
def parent(tmp_path):
    """The directory given as ``disk=``; empty again after the test, whatever happened."""
    yield tmp_path
    left = rj.remove_disk_checkpoints()
    assert left == 0, f"{left} runs were left open"
    assert os.listdir(tmp_path) == []


def rnn(W, U, h0, xs, scan):
    """A tanh RNN whose carry also holds a bfloat16 leaf (a dtype numpy lacks) and a step counter."""

    def step(carry, x):
        h, low, k = carry
        h = jnp.tanh(h @ W + x @ U + 0.1 * low.astype(h.dtype))
        low = (0.5 * low + h[0]).astype(jnp.bfloat16)
        return (h, low, k + 1), jnp.sum(h**2)

    (h, low, k), ys = scan(step, (h0, jnp.asarray(0.25, jnp.bfloat16), jnp.asarray(0, jnp.int32)), xs)
    return jnp.sum(h) + jnp.sum(ys) + low.astype(h.dtype) + k


N = 12  # one length for the cases below, so that each oracle compiles once


def inputs(n=N, width=3, seed=0):
    rng = np.random.default_rng(seed)
    W = jnp.asarray(rng.normal(size=(width, width)) / width)
    U = jnp.asarray(rng.normal(size=(2, width)))
    return W, U, jnp.asarray(rng.normal(size=width)), jnp.asarray(rng.normal(size=(n, 2)))


def _grad(scan):
    return jax.jit(jax.grad(lambda W, U, h0, xs: rnn(W, U, h0, xs, scan), argnums=(0, 1, 2)))


if jax is not None:
    plain_grad = _grad(jax.lax.scan)
    store_all_grad = _grad(lambda f, i, x: rj.scan(f, i, x, strategy=revseq.StoreAll()))

CASES = [  # each compiles a program (about 1.5 s of CPU): few, chosen for what they cover
    revseq.MultistageCheckpointing(ram=2, disk=3, costs=CHEAP),
    RandomSchedule(seed=12, slots=1, disk=True),  # a user's schedule, with a disk checkpoint freed unread
]


@pytest.mark.parametrize("strategy", CASES, ids=repr)
def test_gradients_and_disk_traffic(strategy, parent, traffic):
    W, U, h0, xs = inputs()
    tally = rj.Tally()
    grad = _grad(lambda f, i, x: rj.scan(f, i, x, strategy=strategy, tally=tally, disk=parent))
    got = grad(W, U, h0, xs)
    for a, b, c in zip(got, plain_grad(W, U, h0, xs), store_all_grad(W, U, h0, xs), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(a, c)  # the same arithmetic in the same order: to the bit
    cost = strategy.cost(N)
    assert cost.disk_writes > 0
    assert (traffic["put"], traffic["get"]) == (cost.disk_writes, cost.disk_reads)
    assert traffic["delete"] == cost.disk_writes  # every file is deleted once, when released or sooner
    assert traffic["files"] <= 3 * cost.peak_disk  # a file per leaf
    if not isinstance(strategy, RandomSchedule):  # it frees pointless stores early; the others peak exactly
        assert traffic["files"] == 3 * cost.peak_disk
    assert tally.forward_steps == cost.forward_steps
    assert tally.vjp_steps == N
    assert os.listdir(parent) == []
    W, U, h0, xs = inputs(seed=1)  # compiled once, run again: a new run, removed again
    np.testing.assert_allclose(grad(W, U, h0, xs)[0], plain_grad(W, U, h0, xs)[0], rtol=1e-12)
    assert traffic["put"] == 2 * cost.disk_writes
    assert os.listdir(parent) == []


def test_in_an_enclosing_scan_each_forward_pass_has_its_own_run(parent, traffic):
    """JAX hoists what depends only on an enclosing loop's constants out of it; the runs must not be.

    The inner scan starts from a constant: a run opened from it alone would
    be made once and shared by every outer iteration. (An inner scan that
    depends on nothing the outer loop changes is hoisted whole: one forward
    pass for several backward passes, which sweep again, as a VJP applied
    twice does below. Checked by hand, not here: each program costs time.)
    """
    n, strategy = N, revseq.MultistageCheckpointing(ram=1, disk=3, costs=CHEAP)
    xss = jnp.linspace(0.0, 1.0, 4 * n * 3).reshape(4, n, 3)

    def outer(W, inner):
        def body(c, xs):
            def step(h, x):
                h = jnp.tanh(W * h + x + c)
                return h, jnp.sum(h)

            h, ys = inner(step, jnp.zeros(3), xs)
            return c + jnp.sum(h), jnp.sum(ys)

        c, out = jax.lax.scan(body, 0.0, xss)
        return c + jnp.sum(out)

    revseq_inner = lambda f, i, x: rj.scan(f, i, x, strategy=strategy, disk=parent)  # noqa: E731
    got = jax.jit(jax.grad(lambda W: outer(W, revseq_inner)))(0.9)
    np.testing.assert_allclose(got, jax.jit(jax.grad(lambda W: outer(W, jax.lax.scan)))(0.9), rtol=1e-12)
    assert traffic["put"] == 4 * strategy.cost(n).disk_writes  # a run per outer iteration


def test_a_vjp_applied_twice_or_never(parent):
    n, strategy = N, revseq.MultistageCheckpointing(ram=1, disk=3, costs=CHEAP)
    W, U, h0, xs = inputs(n)
    loss = jax.jit(lambda h0: rnn(W, U, h0, xs, lambda f, i, x: rj.scan(f, i, x, strategy=strategy, disk=parent)))
    expected = plain_grad(W, U, h0, xs)[2]
    _, pullback = jax.vjp(loss, h0)
    (held,) = os.listdir(parent)  # the forward pass's run: its private directory, with its files
    assert len(os.listdir(parent / held)) == 3 * strategy.cost(n).peak_disk
    first, second = pullback(1.0)[0], pullback(1.0)[0]  # the second sweeps forward again
    np.testing.assert_allclose(first, expected, rtol=1e-12)
    np.testing.assert_array_equal(first, second)
    assert os.listdir(parent) == []
    _, pullback = jax.vjp(loss, h0)
    del pullback  # never applied: compiled code cannot know it will not be
    assert len(os.listdir(parent)) == 1
    assert rj.remove_disk_checkpoints() == 1
    assert os.listdir(parent) == []


def test_a_step_failing_at_trace_time_or_at_run_time(parent):
    n, strategy = 12, revseq.MultistageCheckpointing(ram=1, disk=3, costs=CHEAP)
    xs = jnp.linspace(0.0, 1.0, n)

    def broken(h, x):
        raise ValueError("a broken step")

    with pytest.raises(ValueError, match="a broken step"):
        jax.jit(jax.grad(lambda h: rj.scan(broken, h, xs, strategy=strategy, disk=parent)[0]))(1.0)
    assert os.listdir(parent) == []

    calls = []

    def check(h):
        calls.append(1)
        if len(calls) == 2 * n:  # in the backward pass, after the forward pass wrote its checkpoints
            raise ValueError("the step failed at run time")
        return np.zeros((), h.dtype)

    @jax.custom_jvp
    def checked(h):
        return h + io_callback(check, jax.ShapeDtypeStruct((), h.dtype), h, ordered=True)

    checked.defjvp(lambda p, t: (checked(p[0]), t[0]))
    step = lambda h, x: (jnp.sin(checked(h) + x), None)  # noqa: E731
    with pytest.raises(jax.errors.JaxRuntimeError, match="the step failed at run time"):
        jax.block_until_ready(jax.jit(jax.grad(lambda h: rj.scan(step, h, xs, strategy=strategy, disk=parent)[0]))(1.0))
    # The program stopped at the failing callback: the backward pass that would remove the run never ended.
    assert len(os.listdir(parent)) == 1
    assert rj.remove_disk_checkpoints() == 1


def test_the_directory_is_checked(tmp_path):
    def loss(h, disk):
        strategy = revseq.MultistageCheckpointing(ram=1)
        return rj.scan(lambda h, x: (jnp.sin(h + x), None), h, jnp.ones(30), strategy=strategy, disk=disk)[0]

    trace = jax.make_jaxpr(jax.grad(loss), static_argnums=1)  # checked when traced: nothing runs
    with pytest.raises(revseq.StoreError, match=r"disk: directory must be an existing, writable directory.*No such"):
        trace(1.0, tmp_path / "missing")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(revseq.StoreError, match=r"disk: directory must be an existing, writable directory.*Not a"):
        trace(1.0, tmp_path / "a_file")
    with pytest.raises(revseq.ParameterError, match=r"disk must be a directory .* got 3 \(int\)"):
        trace(1.0, 3)


def test_no_memory_and_a_disk_that_fails(tmp_path, monkeypatch):
    """ram=0: every checkpoint on disk. Then the disk fills up half-way, then the directory goes."""
    parent, n = tmp_path / "parent", 30
    parent.mkdir()
    strategy = revseq.MultistageCheckpointing(ram=0, disk=4, costs=revseq.DiskCosts(step=1.0, write=0.1, read=0.1))

    def loss(h, scan):
        return jnp.sum(scan(lambda h, x: (jnp.sin(h + x), jnp.cos(h)), h, jnp.linspace(0.0, 1.0, n))[1])

    grad = jax.jit(jax.grad(lambda h: loss(h, lambda f, i, x: rj.scan(f, i, x, strategy=strategy, disk=parent))))
    np.testing.assert_allclose(grad(1.0), jax.jit(jax.grad(lambda h: loss(h, jax.lax.scan)))(1.0), rtol=1e-12)
    assert strategy.cost(n).peak_checkpoints == 0
    assert strategy.cost(n).disk_writes == 15
    put, puts = DiskStore.put, []

    def full(self, key, state):  # the disk fills up at the fourth checkpoint
        puts.append(key)
        if len(puts) == 4:
            raise revseq.StoreError(f"could not write checkpoint x_{key}: {os.strerror(errno.ENOSPC)}")
        put(self, key, state)

    monkeypatch.setattr(DiskStore, "put", full)
    with pytest.raises(jax.errors.JaxRuntimeError, match=r"could not write checkpoint x_.*No space left"):
        jax.block_until_ready(grad(1.0))
    assert os.listdir(parent) == []  # the three files written before are gone, with their directory
    monkeypatch.setattr(DiskStore, "put", put)
    parent.rmdir()  # after tracing: found when the forward pass opens its run
    with pytest.raises(jax.errors.JaxRuntimeError, match=r"directory must be an existing, writable directory.*parent"):
        jax.block_until_ready(grad(1.0))
    assert rj.remove_disk_checkpoints() == 0


def test_vmap_is_refused_by_name(parent):
    loss = lambda h: rj.scan(  # noqa: E731
        lambda h, x: (jnp.sin(h + x), None), h, jnp.ones(8), strategy=revseq.MultistageCheckpointing(ram=1), disk=parent
    )[0]
    with pytest.raises(revseq.ParameterError, match=r"disk=\) does not run under jax\.vmap.*Batch inside the step"):
        jax.vmap(jax.grad(loss))(jnp.ones(2))


def test_a_disk_schedule_without_disk_says_what_to_pass():
    strategy = revseq.MultistageCheckpointing(ram=1)
    with pytest.raises(revseq.ParameterError, match=r"on disk: .*or pass disk= a directory"):
        jax.grad(lambda h: rj.scan(lambda h, x: (jnp.sin(h + x), None), h, jnp.ones(8), strategy=strategy)[0])(1.0)


def test_only_disk_operations_make_callbacks(parent):
    """A strategy that keeps everything in memory compiles without a callback, disk= or not."""

    def callbacks(strategy):
        loss = lambda h: rj.scan(  # noqa: E731
            lambda h, x: (jnp.sin(h + x), None), h, jnp.ones(8), strategy=strategy, disk=parent
        )[0]
        return str(jax.make_jaxpr(jax.grad(loss))(1.0)).count("io_callback")

    assert callbacks(revseq.BinomialCheckpointing(checkpoints=2)) == 0
    assert callbacks(revseq.MultistageCheckpointing(ram=3, costs=revseq.DiskCosts(write=100.0))) == 0
    assert callbacks(revseq.MultistageCheckpointing(ram=1)) > 0


@pytest.mark.parametrize("seed", range(6))
def test_disk_programs_count_as_the_simulator(seed):
    """The rows' disk operations are the schedule's writes and reads; every file is deleted, once."""
    for n in (1, 2, 7, 20):
        strategy = RandomSchedule(seed=seed, slots=1 + seed % 3, disk=True)
        rows, slots, disk_rows = _jaxplan.disk_program(strategy.schedule(n), n, repr(strategy))
        ops = rows[:, 0]
        cost = strategy.cost(n)
        assert np.sum(ops == _jaxplan.DISK_STORE) == cost.disk_writes
        assert np.sum((ops == _jaxplan.DISK_READ) | (ops == _jaxplan.DISK_TAKE)) == cost.disk_reads
        assert np.sum((ops == _jaxplan.DISK_TAKE) | (ops == _jaxplan.DISK_FREE)) == cost.disk_writes
        assert slots <= max(cost.peak_checkpoints, 1)
        assert disk_rows == np.isin(ops, _jaxplan.DISK_OPS).sum()


def test_a_deeper_storage_level_is_refused():
    from revseq.schedule import Store

    try:
        deep = Store(0, level=2)
    except TypeError:  # a revseq whose schedules have one disk level
        pytest.skip("Store has no storage levels past the disk")
    with pytest.raises(revseq.ParameterError, match=r"mine stores x_0 at storage level 2: revseq\.jax has memory"):
        _jaxplan.disk_program(iter([deep]), 4, "mine")
