"""JAX adapter: ``lax.scan`` and ``lax.while_loop`` whose reverse pass follows a revseq schedule, compiled.

:func:`scan` takes the arguments of :func:`jax.lax.scan` and computes the
same values; :func:`while_loop` those of :func:`jax.lax.while_loop`, plus a
bound on the steps. Under :func:`jax.grad` their forward pass keeps only the
strategy's checkpoints, in a fixed buffer of slots, and their reverse pass
runs the schedule in one ``lax.while_loop``: each iteration asks the plan
for the next micro-operation (advance, store, restore, reverse a step) and
performs it under ``lax.switch``. Everything is traceable: ``jax.jit``,
``jax.vmap``, ``jax.grad`` of ``jax.jit`` and ``jax.jit`` of ``jax.grad``,
nesting inside another scan. Program size and compile time do not depend on
``n``.

A strategy with a disk level (:class:`~revseq.MultistageCheckpointing`)
runs with ``scan(..., disk=directory)``: its memory checkpoints stay in the
compiled buffer, its disk checkpoints go to a :class:`revseq.DiskStore` per
forward pass through ordered host callbacks, one per disk write, read or
deletion (never per step), and the backward pass removes the files when it
ends (not under ``jax.vmap``; see :func:`scan` and docs/autodiff.md).

>>> import jax, jax.numpy as jnp, numpy as np, revseq
>>> import revseq.jax as rj
>>> def step(h, x):
...     h = jnp.tanh(0.9 * h + x)
...     return h, jnp.sum(h)                                  # the carry, a per-step output
>>> xs = jnp.linspace(0.0, 1.0, 300).reshape(100, 3)
>>> @jax.jit
... def grad(h0):
...     def loss(h0):
...         h, ys = rj.scan(step, h0, xs, strategy=revseq.BinomialCheckpointing(checkpoints=5))
...         return jnp.sum(h) + jnp.sum(ys)
...     return jax.grad(loss)(h0)
>>> def plain_loss(h0):
...     h, ys = jax.lax.scan(step, h0, xs)
...     return jnp.sum(h) + jnp.sum(ys)
>>> bool(np.allclose(grad(jnp.ones(3)), jax.grad(plain_loss)(jnp.ones(3))))
True

See docs/autodiff.md for the strategies on device, the counts, the memory
and what was measured.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from collections.abc import Callable
from typing import Any

try:
    import jax
except ModuleNotFoundError as error:  # only a missing jax; a broken install keeps its own message
    if error.name != "jax":
        raise
    raise ModuleNotFoundError("revseq.jax needs JAX: pip install 'revseq[jax]'", name=error.name) from None

import attrs
import jax.custom_batching
import jax.extend.core
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import CustomVJPPrimal, SymbolicZero
from jax.experimental import io_callback

from revseq import _jaxplan, _microcode
from revseq._adapter import Tally, strategy_or_default
from revseq._microcode import DONE, FORWARD, IDLE, RESTORE, REVERSE, STORE
from revseq._validate import check_directory, check_int
from revseq.errors import ParameterError, StoreError
from revseq.strategies.base import ReversalStrategy
from revseq.strategies.basic import Recompute, StoreAll
from revseq.strategies.binomial import BinomialCheckpointing
from revseq.strategies.halving import RecursiveHalving
from revseq.strategies.online import OnlineCheckpointing
from revseq.strategies.sqrt import SqrtCheckpointing

__all__ = ["Tally", "plan", "remove_disk_checkpoints", "scan", "while_loop"]

_i32 = jnp.int32
_tree = jax.tree_util


# ---------------------------------------------------------------- plans


def _state_nbytes(init: Any) -> int:
    return sum(int(np.prod(np.shape(leaf))) * jnp.result_type(leaf).itemsize for leaf in _tree.tree_leaves(init))


def plan(
    strategy: ReversalStrategy | None, n: int, state_nbytes: int = 0, *, disk: bool = False
) -> _jaxplan.Stack | _jaxplan.Program:
    """The on-device plan :func:`scan` runs for ``strategy`` over ``n`` steps.

    The built-in offline strategies (:class:`~revseq.StoreAll`,
    :class:`~revseq.Recompute`, :class:`~revseq.BinomialCheckpointing`,
    :class:`~revseq.RecursiveHalving`, :class:`~revseq.SqrtCheckpointing`)
    get a :class:`~revseq._jaxplan.Stack`: the next action is computed on
    device from O(c) integers (plus, for Revolve, a table of about ``2 sqrt(2 n)``
    binomial coefficients). Any other strategy's checked schedule is
    compiled to a :class:`~revseq._jaxplan.Program` of int32 rows (12 bytes
    per action, per state kept and per step reversed). ``state_nbytes``
    sizes a ``max_bytes=`` budget. With ``disk``, a schedule may store on
    disk (:func:`revseq._jaxplan.disk_program`: the program's disk rows are
    host callbacks); without, such a schedule is refused.
    """
    strategy = strategy_or_default(strategy).sized(state_nbytes)
    kind = type(strategy)
    if kind is StoreAll:
        return _jaxplan.Stack(_jaxplan.binomial_rule(n, n), n - 1, n)
    if kind is Recompute:
        return _jaxplan.Stack(_jaxplan.binomial_rule(n, 1), 1, 1)
    if kind is BinomialCheckpointing:
        c = strategy.budget(n)  # type: ignore[attr-defined]
        return _jaxplan.Stack(_jaxplan.binomial_rule(n, c), min(c, n - 1), c)
    if kind is RecursiveHalving:
        return _jaxplan.Stack(_jaxplan.halving_rule(), strategy.bounds(n).checkpoints or 0, 0)
    if kind is SqrtCheckpointing:
        k = strategy._interval(n)  # type: ignore[attr-defined]
        return _jaxplan.Stack(_jaxplan.interval_rule(k), strategy.bounds(n).checkpoints or 0, 0)
    if disk:
        rows, slots, disk_rows = _jaxplan.disk_program(strategy.schedule(n), n, repr(strategy))
        return _jaxplan.Program(rows, slots, disk=disk_rows > 0)
    try:
        rows, slots = _microcode.program(strategy.schedule(n), n, repr(strategy))
    except ParameterError as error:
        if " on disk: " not in str(error):
            raise
        raise ParameterError(
            f"{error}; or pass disk= a directory for its disk checkpoints, written and read by host "
            f"callbacks: revseq.jax.scan(..., strategy=strategy, disk=tempfile.gettempdir())"
        ) from None
    return _jaxplan.Program(rows, slots)


# ---------------------------------------------------------------- trees and cotangents


def _at(tree: Any, t: Any) -> Any:
    return _tree.tree_map(lambda a: jax.lax.dynamic_index_in_dim(a, t, keepdims=False), tree)


def _put(tree: Any, t: Any, value: Any) -> Any:
    return _tree.tree_map(lambda a, v: jax.lax.dynamic_update_index_in_dim(a, v.astype(a.dtype), t, 0), tree, value)


def _write(tree: Any, t: Any, value: Any, when: Any) -> Any:
    """``tree`` with row ``t`` set to ``value`` where ``when`` holds, else unchanged.

    The row index is sent out of bounds, where the write is dropped, instead
    of selecting between ``value`` and the row's old contents: reading the
    row being written makes XLA copy the whole buffer on every iteration of
    a loop (quadratic time for a buffer of ``n`` rows), while a scatter that
    reads nothing is done in place.
    """
    return _tree.tree_map(
        lambda a, v: a.at[jnp.where(when, t, a.shape[0])].set(v.astype(a.dtype), mode="drop"), tree, value
    )


def _slots(example: Any, size: int) -> Any:
    return _tree.tree_map(lambda a: jnp.zeros((size, *jnp.shape(a)), jnp.result_type(a)), example)


def _inexact(leaf: Any) -> bool:
    return bool(jnp.issubdtype(jnp.result_type(leaf), jnp.inexact))


def _float0(leaf: Any, lead: tuple[int, ...] = ()) -> Any:
    return np.zeros((*lead, *np.shape(leaf)), dtype=jax.dtypes.float0)


class _Grads:
    """The cotangents a loop carries for one pytree: its inexact leaves (those in ``wanted``, if given).

    The others get zeros at the end, float0 for integer leaves.
    """

    def __init__(self, example: Any, wanted: list[bool] | None = None) -> None:
        self.leaves, self.treedef = _tree.tree_flatten(example)
        wanted = wanted or [True] * len(self.leaves)
        self.mask = [_inexact(leaf) and w for leaf, w in zip(self.leaves, wanted, strict=True)]

    def zeros(self, lead: tuple[int, ...] = ()) -> list[Any]:
        return [
            jnp.zeros((*lead, *jnp.shape(a)), jnp.result_type(a))
            for a, m in zip(self.leaves, self.mask, strict=True)
            if m
        ]

    def full(self, carried: list[Any], lead: tuple[int, ...] = ()) -> Any:
        """The pytree of cotangents from the carried ones: zeros for the other inexact leaves, float0 elsewhere."""
        it = iter(carried)
        return self.treedef.unflatten(
            [
                next(it)
                if m
                else jnp.zeros((*lead, *jnp.shape(a)), jnp.result_type(a))
                if _inexact(a)
                else _float0(a, lead)
                for a, m in zip(self.leaves, self.mask, strict=True)
            ]
        )

    def pick(self, tree: Any) -> list[Any]:
        return [leaf for leaf, m in zip(_tree.tree_leaves(tree), self.mask, strict=True) if m]


class _Static:
    """Python values travelling with a custom_vjp's residuals: a pytree node with no leaves."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


_tree.register_pytree_node(_Static, lambda s: ((), s.value), lambda value, _: _Static(value))


def _primals(tree: Any) -> tuple[Any, list[bool]]:
    """A custom_vjp fwd's arguments (symbolic_zeros=True): their values, and which leaves are differentiated."""
    wrapped = _tree.tree_leaves(tree, is_leaf=lambda p: isinstance(p, CustomVJPPrimal))
    values = _tree.tree_map(lambda p: p.value, tree, is_leaf=lambda p: isinstance(p, CustomVJPPrimal))
    return values, [bool(p.perturbed) for p in wrapped]


def _materialize(tree: Any) -> Any:
    """Zeros in place of symbolic zero cotangents (float0 for integer leaves)."""

    def zero(z: Any) -> Any:
        if not isinstance(z, SymbolicZero):
            return z
        if z.aval.dtype == jax.dtypes.float0:
            return np.zeros(z.aval.shape, dtype=jax.dtypes.float0)
        return jnp.zeros(z.aval.shape, z.aval.dtype)

    return _tree.tree_map(zero, tree, is_leaf=lambda z: isinstance(z, SymbolicZero))


def _nonzero(tree: Any) -> list[bool]:
    return [
        not isinstance(z, SymbolicZero) for z in _tree.tree_leaves(tree, is_leaf=lambda z: isinstance(z, SymbolicZero))
    ]


def _hoisted(fn: Callable[..., Any], *example: Any) -> tuple[Callable[..., Any], tuple[Any, ...], Any]:
    """``fn`` with every array it closes over made an argument: ``(converted, consts, shape)``.

    ``converted(*args, *consts)`` is ``fn(*args)``; ``shape`` is what it
    returns, as ``jax.ShapeDtypeStruct`` leaves. Unlike
    :func:`jax.closure_convert`, which hoists only the values that may be
    differentiated, every traced value is hoisted (an integer bound ``n``
    from an enclosing ``jit``, say): one left closed over would leak out of
    the traces ``custom_vjp`` makes of the forward and backward passes.
    Concrete arrays are hoisted too; not being differentiated, they cost no
    cotangent (symbolic zeros).
    """
    closed, shape = jax.make_jaxpr(fn, return_shape=True)(*example)
    out_tree = _tree.tree_structure(shape)
    count = len(example)

    def converted(*args: Any) -> Any:
        inputs, consts = args[:count], args[count:]
        evaluate = jax.extend.core.jaxpr_as_fun(jax.extend.core.ClosedJaxpr(closed.jaxpr, list(consts)))
        return _tree.tree_unflatten(out_tree, evaluate(*_tree.tree_leaves(inputs)))

    return converted, tuple(closed.consts), shape


def _check_carry(name: str, init: Any, carry: Any) -> None:
    """The carry ``name`` returns must be ``init``'s: the same structure, shapes and dtypes (weak types aside).

    ``lax.scan`` and ``lax.while_loop`` refuse any other, and so must the
    differentiated passes, which would otherwise cast a changed dtype back
    silently.
    """
    expected = [(jnp.shape(a), jnp.result_type(a)) for a in _tree.tree_leaves(init)]
    got = [(tuple(a.shape), jnp.dtype(a.dtype)) for a in _tree.tree_leaves(carry)]
    if _tree.tree_structure(init) != _tree.tree_structure(carry) or expected != got:
        raise ParameterError(
            f"{name} must return a carry of the initial carry's structure, shapes and dtypes: "
            f"expected {_tree.tree_structure(init)} with {expected}, got {_tree.tree_structure(carry)} with {got}"
        )


def _partial_vjp(fn: Callable[..., Any], consts: tuple[Any, ...], wanted: list[bool], *args: Any) -> tuple[Any, Any]:
    """``jax.vjp`` of ``fn(*args, *consts)`` with respect to ``args`` and the wanted consts only.

    The others are closed over: a const the caller does not differentiate
    (data indexed by step, say) would otherwise get a cotangent of its full
    size at every step, quadratic time over a run.
    """
    chosen = [i for i, w in enumerate(wanted) if w]

    def partial(*inputs: Any) -> Any:
        k = list(consts)
        for i, value in zip(chosen, inputs[len(args) :], strict=True):
            k[i] = value
        return fn(*inputs[: len(args)], *k)

    return jax.vjp(partial, *args, *[consts[i] for i in chosen])  # type: ignore[no-any-return]


# ---------------------------------------------------------------- the disk level


class _Run:
    """One forward pass's disk checkpoints: a :class:`revseq.DiskStore`, and whether a backward pass took it."""

    __slots__ = ("claimed", "store")

    def __init__(self, store: Any) -> None:
        self.store = store
        self.claimed = False


_runs: dict[int, _Run] = {}  # open runs by id: made by a forward pass, removed by its backward pass
_run_ids = itertools.count(1)
_runs_lock = threading.Lock()  # callbacks of two computations may run at once, on XLA's threads


def _run(run: Any) -> _Run:
    with _runs_lock:
        found = _runs.get(int(run))
    if found is None:  # only remove_disk_checkpoints() removes a run while a backward pass reads it
        raise StoreError(
            f"the disk checkpoints of revseq.jax.scan's run {int(run)} were removed while its backward pass "
            f"ran (by revseq.jax.remove_disk_checkpoints()?)"
        )
    return found


def _discard(run: Any) -> None:
    """Removes run ``run``'s files and forgets it (nothing if it is gone)."""
    with _runs_lock:
        found = _runs.pop(int(run), None)
    if found is not None:
        found.store.clear()


def remove_disk_checkpoints() -> int:
    """Removes the disk checkpoints of every forward pass whose backward pass has not run; returns how many.

    :func:`scan` with ``disk=`` removes a forward pass's files when its
    backward pass ends (or fails in revseq's own disk operations). Files
    are left when the backward pass never runs: the VJP of a forward pass
    is never applied (``jax.vjp`` whose function is dropped, a gradient
    whose computation stops half-way, when the step raises from a callback
    of its own), because compiled code cannot know that it will not run.
    They go at the latest when the interpreter exits; call this to remove
    them sooner. A backward pass that starts later finds its forward pass's
    files gone and sweeps forward again to make them; one already running
    fails with a :class:`~revseq.errors.StoreError`.
    """
    with _runs_lock:
        runs = list(_runs.values())
        _runs.clear()
    for found in runs:
        found.store.clear()
    return len(runs)


def _to_host(leaf: Any) -> np.ndarray:
    """A leaf as numpy saves it: a dtype numpy does not know (bfloat16, float8) as unsigned ints of its size."""
    array = np.asarray(leaf)
    return array.view(f"u{array.dtype.itemsize}") if array.dtype.kind == "V" else array


def _unbatched(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, refusing ``jax.vmap`` with a revseq error where JAX's would say less.

    JAX runs no host callback in a batched ``lax.cond``/``switch`` ("IO
    effect not supported in vmap-of-cond") nor an ordered one in a batched
    ``while_loop`` or alone ("Cannot `vmap` ordered IO callback"), and the
    disk operations are both. Every input of a pass reaches its first
    callback (see :class:`_DiskLevel`), so a batched pass meets this first.
    """
    wrapped = jax.custom_batching.custom_vmap(fn)

    def refuse(axis_size: int, in_batched: Any, *args: Any) -> Any:
        raise ParameterError(
            "revseq.jax.scan with disk checkpoints (disk=) does not run under jax.vmap: its disk operations are "
            "host callbacks, which JAX does not batch inside loops and branches. Batch inside the step instead "
            "(a carry with a leading batch dimension), or leave disk= out and use a memory-only strategy"
        )

    wrapped.def_vmap(refuse)
    return wrapped  # type: ignore[no-any-return]


@attrs.frozen(eq=False)
class _DiskLevel:
    """The disk level of one :func:`scan`: host callbacks that write and read the carry's leaves as files.

    Each forward pass opens a *run*, a :class:`revseq.DiskStore` (one
    ``.npy`` file per leaf and checkpoint, in a private directory made under
    ``directory`` at the first write), and passes its id, an int32, to
    every later operation; the backward pass closes it, removing the
    directory. Every callback is an ordered ``io_callback`` (JAX runs them
    in program order, also inside loops and branches) and takes the run id,
    which is made from one element of each input of the forward pass (and,
    when resumed, of the cotangents): so no callback depends on constants
    alone, which JAX's partial evaluation would hoist out of an enclosing
    loop and run once, or run twice (JAX does so with effects in ``scan``
    and ``while_loop``; see docs). A callback that fails removes the run's
    files before raising.

    A backward pass *claims* its run (:meth:`resume`); if the run is gone
    or claimed (a second backward pass from the same forward pass, or a
    forward pass JAX hoisted out of a loop and ran once for several backward
    passes), the backward pass sweeps forward again into a new run.
    """

    directory: str
    leaves: tuple[Any, ...]  # the carry's leaves, as jax.ShapeDtypeStruct

    def _call(self, fn: Callable[..., Any], shapes: Any, *args: Any) -> Any:
        return io_callback(fn, shapes, *args, ordered=True)

    def _first(self, fn: Callable[..., Any], shapes: Any, *args: Any) -> Any:
        """The first callback of a pass, refusing ``jax.vmap`` with a message of revseq's (see :func:`_unbatched`)."""
        return _unbatched(lambda *args: self._call(fn, shapes, *args))(*args)

    def open(self, *inputs: Any) -> Any:
        salt = [jnp.ravel(a)[:1] for a in _tree.tree_leaves(inputs) if np.size(a)]

        def open_run(*_: Any) -> np.ndarray:
            from revseq.disk import DiskStore  # only the disk level needs it

            store = DiskStore(self.directory)
            with _runs_lock:
                run = next(_run_ids)
                _runs[run] = _Run(store)
            return np.asarray(run, np.int32)

        return self._first(open_run, jax.ShapeDtypeStruct((), _i32), *salt)

    def resume(self, run: Any, *inputs: Any) -> tuple[Any, Any]:
        """``(run, held)``: ``held`` if the run's files are there for this backward pass, which claims them."""
        salt = [jnp.ravel(a)[:1] for a in _tree.tree_leaves(inputs) if np.size(a)]

        def claim(run: Any, *_: Any) -> tuple[np.ndarray, np.ndarray]:
            with _runs_lock:
                found = _runs.get(int(run))
                held = found is not None and not found.claimed
                if held:
                    found.claimed = True  # type: ignore[union-attr]
            return np.asarray(run, np.int32), np.asarray(held)

        shapes = (jax.ShapeDtypeStruct((), _i32), jax.ShapeDtypeStruct((), jnp.bool_))
        return self._first(claim, shapes, run, *salt)  # type: ignore[no-any-return]

    def store(self, run: Any, step: Any, x: list[Any]) -> Any:
        def write(run: Any, step: Any, *leaves: Any) -> np.ndarray:
            try:
                _run(run).store.put(int(step), tuple(_to_host(leaf) for leaf in leaves))
            except BaseException:
                _discard(run)
                raise
            return np.asarray(run, np.int32)

        return self._call(write, jax.ShapeDtypeStruct((), _i32), run, step, *x)

    def read(self, run: Any, step: Any, take: Any) -> list[Any]:
        def get(run: Any, step: Any, take: Any) -> list[np.ndarray]:
            try:
                found = _run(run)
                arrays = found.store.get(int(step))
                if take:
                    found.store.delete(int(step))
            except BaseException:
                _discard(run)
                raise
            return [a.view(s.dtype) for a, s in zip(arrays, self.leaves, strict=True)]

        return self._call(get, list(self.leaves), run, step, take)  # type: ignore[no-any-return]

    def free(self, run: Any, step: Any) -> Any:
        def delete(run: Any, step: Any) -> np.ndarray:
            try:
                _run(run).store.delete(int(step))
            except BaseException:
                _discard(run)
                raise
            return np.asarray(run, np.int32)

        return self._call(delete, jax.ShapeDtypeStruct((), _i32), run, step)

    def close(self, run: Any) -> Any:
        def close_run(run: Any) -> np.ndarray:
            _discard(run)
            return np.asarray(run, np.int32)

        return self._call(close_run, jax.ShapeDtypeStruct((), _i32), run)


# ---------------------------------------------------------------- the executor


@attrs.frozen(eq=False)
class _Loop:
    """One compiled run: ``step(carry, t) -> (carry, y)`` over ``n`` steps under ``plan``.

    Each iteration performs one micro-operation. Only the step, a restore
    and the VJP are under ``lax.switch``/``lax.cond``; the large buffers
    (the slots, ``ys``, the cotangents of ``xs``) are written outside them,
    one row per iteration, by scatters sent out of bounds when nothing is to
    be written (:func:`_write`), so that XLA updates them in place instead
    of copying them every iteration.
    """

    step: Callable[[Any, Any], tuple[Any, Any]]
    n: int
    plan: Any
    output_index: Callable[[Any], Any] = lambda t: t  # where y_t goes in ys (reversed scans: n - 1 - t)
    disk: _DiskLevel | None = None  # the disk level, when the plan has disk operations; its run is st["run"]

    def _restores(self, op: Any) -> Any:
        """Whether ``op`` makes the live state a stored one (from the slots, or from disk)."""
        if self.disk is None:
            return op == RESTORE
        return (op == RESTORE) | (op == _jaxplan.DISK_READ) | (op == _jaxplan.DISK_TAKE)

    def _settle(self, op: Any, slot: Any, pos: Any, live: Any, new: Any, buffer: Any) -> tuple[Any, Any]:
        """After ``op`` made the live state ``new``: its step, and the slots with ``new`` stored if op stores."""
        buffer = _write(buffer, jnp.maximum(slot, 0), new, (op == STORE) | ((op == FORWARD) & (slot >= 0)))
        return jnp.where(op == FORWARD, live + 1, jnp.where(self._restores(op), pos, live)), buffer

    def _restore(self, buffer: Any, slot: Any, x: Any) -> Any:
        # Read inside a branch of the switch: a read of the slots outside it, next to the write after it,
        # makes XLA copy the whole buffer on every iteration.
        return self._cast(_at(buffer, slot), x)

    @staticmethod
    def _cast(value: Any, x: Any) -> Any:
        return _tree.tree_map(lambda a, b: b.astype(a.dtype), x, value)

    def _run(self, carry: tuple[Any, ...], ys: Any, stop: Callable[[Any, Any], Any]) -> tuple[Any, ...]:
        """Advances, stores and restores until ``stop(op, top)``; records ``ys`` if given.

        ``carry`` is ``(x, live, top, buffer, st, op, slot, pos, count)``,
        ``top`` the furthest step reached. The loop carries no cotangent:
        reversals happen between runs (:meth:`backward`).
        """
        plan = self.plan
        y_zero = None if ys is None else _tree.tree_map(lambda a: jnp.zeros(a.shape[1:], a.dtype), ys)

        def advance(loop: tuple[Any, ...]) -> tuple[Any, ...]:
            (x, live, top, buffer, st, op, slot, pos, count), ys = loop
            branch = jnp.where(op == FORWARD, 0, jnp.where(op == RESTORE, 1, 2))
            branches = [
                lambda x, buffer: self._step(x, live) if ys is not None else (self._step(x, live)[0], None),
                lambda x, buffer: (self._restore(buffer, slot, x), y_zero),
                lambda x, buffer: (x, y_zero),
            ]
            if self.disk is None:
                x, y = jax.lax.switch(branch, branches, x, buffer)
            else:  # the disk operations: one host callback each, the run id carried in the plan's state
                disk, run = self.disk, st["run"]
                branch = jnp.where(op == _jaxplan.DISK_STORE, 3, jnp.where(op == _jaxplan.DISK_FREE, 4, branch))
                branch = jnp.where((op == _jaxplan.DISK_READ) | (op == _jaxplan.DISK_TAKE), 5, branch)
                x, y, run = jax.lax.switch(
                    branch,
                    [
                        *[lambda x, buffer, fn=fn: (*fn(x, buffer), run) for fn in branches],
                        lambda x, buffer: (x, y_zero, disk.store(run, pos, x)),
                        lambda x, buffer: (x, y_zero, disk.free(run, pos)),
                        lambda x, buffer: (self._cast(disk.read(run, pos, op == _jaxplan.DISK_TAKE), x), y_zero, run),
                    ],
                    x,
                    buffer,
                )
                st = st | {"run": run}
            if ys is not None:
                ys = _write(ys, self.output_index(live), y, op == FORWARD)
            live, buffer = self._settle(op, slot, pos, live, x, buffer)
            count = count + (op == FORWARD).astype(_i32)
            op, slot, pos, st = plan.next(st, live)
            return (x, live, jnp.maximum(top, live), buffer, st, op, slot, pos, count), ys

        out, ys = jax.lax.while_loop(lambda loop: ~stop(loop[0][5], loop[0][2]), advance, (carry, ys))
        return out, ys

    def forward(self, x0: Any, ys: Any, st: Any = None) -> tuple[Any, ...]:
        """The first sweep: from x_0 until the schedule turns back at x_{n-1}; records ``ys`` if given.

        ``st`` is the plan's state to start from (default ``plan.init(n)``).
        Returns ``(x, live, top, buffer, st, op, slot, pos, count)`` and ``ys``.
        """
        plan, n = self.plan, self.n
        zero, idle = jnp.asarray(0, _i32), jnp.asarray(IDLE, _i32)
        st = plan.init(n) if st is None else st
        carry = (x0, zero, zero, _slots(x0, plan.capacity), st, idle, -idle, -idle, zero)
        return self._run(
            carry, ys, lambda op, top: (top == n - 1) & ((op == REVERSE) | self._restores(op) | (op == DONE))
        )

    def _step(self, x: Any, t: Any) -> tuple[Any, Any]:
        new, y = self.step(x, t)
        return _tree.tree_map(lambda a, b: a.astype(b.dtype), new, x), y

    def backward(self, state: tuple[Any, ...], small: Any, rows: Any, reverse: Callable[..., Any]) -> tuple[Any, ...]:
        """Runs the schedule to its end from ``state``.

        A loop of reversals; before each, a loop of the schedule's other
        operations. So the cotangents are carried by the outer loop only and
        the vjp needs no branch: carried through one, every other branch
        would copy them (the parameters' gradient sums too) at every step.
        ``reverse(x, t, small) -> (small, row)`` reverses step ``t``:
        ``small`` are the cotangents carried (the carry's, the sums over
        steps), ``row`` what goes into row ``output_index(t)`` of each of the
        buffers ``rows`` (the cotangents of ``xs``). Returns ``small``,
        ``rows``, the counts and the plan's last state. Each outer iteration
        ends at a reversal, the last at the schedule's end.
        """
        x, live, buffer, st, op, slot, pos = state
        row_zero = _tree.tree_map(lambda a: jnp.zeros(a.shape[1:], a.dtype), rows)

        def back(loop: tuple[Any, ...]) -> tuple[Any, ...]:
            carry, small, rows, vjps = loop
            (x, live, top, buffer, st, op, slot, pos, count), _ = self._run(
                carry, None, lambda op, top: (op == REVERSE) | (op == DONE)
            )
            # The schedule's end also ends a run: then nothing is reversed (the branch runs once per pass).
            small, row = jax.lax.cond(
                op == REVERSE,
                lambda: reverse(x, live, small),
                lambda: (small, _tree.tree_map(jnp.zeros_like, row_zero)),
            )
            rows = _write(rows, self.output_index(live), row, op == REVERSE)
            vjps = vjps + (op == REVERSE).astype(_i32)
            # The plan is asked for the next operation inside the loop above only: one copy of its code less.
            op = jnp.where(op == REVERSE, IDLE, op).astype(_i32)
            return (x, live, top, buffer, st, op, slot, pos, count), small, rows, vjps

        zero = jnp.asarray(0, _i32)
        loop = ((x, live, live, buffer, st, op, slot, pos, zero), small, rows, zero)
        carry, small, rows, vjps = jax.lax.while_loop(lambda loop: loop[0][5] != DONE, back, loop)
        return small, rows, carry[8], vjps, carry[4]


def _tell(tally: Tally | None, forward: Any, vjps: Any) -> None:
    """Adds counts to ``tally`` from compiled code: one host callback per pass, none per step."""
    if tally is None:
        return

    def add(forward: Any, vjps: Any) -> None:
        tally.forward_steps += int(np.sum(forward))
        tally.vjp_steps += int(np.sum(vjps))

    jax.debug.callback(add, forward, vjps)


# ---------------------------------------------------------------- scan


@attrs.frozen(eq=False)
class _ScanSpec:
    """The non-array arguments of one :func:`scan` (custom_vjp's nondiff argument)."""

    fn: Callable[..., Any]  # the step with what it closes over hoisted (_hoisted): (carry, x, *consts) -> (carry, y)
    n: int
    strategy: ReversalStrategy
    reverse: bool
    tally: Tally | None

    def index(self, t: Any) -> Any:
        return self.n - 1 - t if self.reverse else t

    state_nbytes: int  # sizes a max_bytes= budget
    disk: str | None  # the directory the disk level's runs are made under (checked); None: no disk level

    @functools.cached_property
    def plan(self) -> _jaxplan.Stack | _jaxplan.Program:
        """Made once, when the forward pass is first traced, and shared with the backward pass."""
        return plan(self.strategy, self.n, self.state_nbytes, disk=self.disk is not None)

    @property
    def uses_disk(self) -> bool:
        return isinstance(self.plan, _jaxplan.Program) and self.plan.disk


def _scan_loop(spec: _ScanSpec, init: Any, xs: Any, consts: Any) -> _Loop:
    treedef = _tree.tree_structure(init)

    def step(x: Any, t: Any) -> tuple[Any, Any]:
        carry, y = spec.fn(treedef.unflatten(x), None if xs is None else _at(xs, spec.index(t)), *consts)
        return _tree.tree_leaves(carry), y

    disk = None
    if spec.uses_disk:
        assert spec.disk is not None
        leaves = tuple(jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)) for a in _tree.tree_leaves(init))
        disk = _DiskLevel(spec.disk, leaves)
    return _Loop(step=step, n=spec.n, plan=spec.plan, output_index=spec.index, disk=disk)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _scan(spec: _ScanSpec, init: Any, xs: Any, consts: Any) -> Any:
    return jax.lax.scan(lambda c, x: spec.fn(c, x, *consts), init, xs, length=spec.n, reverse=spec.reverse)


def _scan_fwd(spec: _ScanSpec, init: Any, xs: Any, consts: Any) -> Any:
    init, _ = _primals(init)
    xs, xs_wanted = _primals(xs)
    consts, consts_wanted = _primals(consts)
    leaves, treedef = _tree.tree_flatten(init)
    x_example = None if xs is None else _at(xs, 0)
    _, y_shape = jax.eval_shape(lambda c, x, k: spec.fn(c, x, *k), init, x_example, consts)
    ys = _tree.tree_map(lambda s: jnp.zeros((spec.n, *s.shape), s.dtype), y_shape)
    loop = _scan_loop(spec, init, xs, consts)
    st = None
    if loop.disk is not None:  # a run per execution of the forward pass, named from all its inputs (_DiskLevel)
        st = spec.plan.init(spec.n) | {"run": loop.disk.open(init, xs, consts)}
    (x, live, _, buffer, st, op, slot, pos, count), ys = loop.forward(leaves, ys, st)
    final, y = loop.step(x, live)  # x_n from x_{n-1}: the output, computed once
    ys = _put(ys, spec.index(live), y)
    _tell(spec.tally, count + 1, 0)
    carry = treedef.unflatten(final)
    wanted = _Static((xs_wanted, [w and _inexact(k) for w, k in zip(consts_wanted, consts, strict=True)]))
    return (carry, ys), ((x, live, buffer, st, op, slot, pos), init, xs, consts, wanted)


def _scan_bwd(spec: _ScanSpec, residuals: Any, cotangents: Any) -> Any:
    state, init, xs, consts, wanted = residuals
    xs_wanted, consts_wanted = wanted.value
    g_carry, g_ys = cotangents
    g_carry = _materialize(g_carry)
    loop = _scan_loop(spec, init, xs, consts)
    carry_g, xs_g = _Grads(init), _Grads(xs, xs_wanted)
    consts_g = _Grads(consts, consts_wanted)
    # One row of ys per step: a symbolic zero (ys the loss does not use) is no buffer, its rows are zeros.
    zero_leaf = lambda z: isinstance(z, SymbolicZero)  # noqa: E731
    ys_g = _Grads(
        _tree.tree_map(lambda z: jax.ShapeDtypeStruct(z.shape[1:], z.dtype), g_ys, is_leaf=zero_leaf), _nonzero(g_ys)
    )
    ys_given = [a for a, m in zip(_tree.tree_leaves(g_ys, is_leaf=zero_leaf), ys_g.mask, strict=True) if m]

    def reverse(x: Any, t: Any, small: tuple[Any, Any]) -> tuple[tuple[Any, Any], list[Any]]:
        g, g_k = small
        i = spec.index(t)
        x_t = None if xs is None else _at(xs, i)
        _, pullback = _partial_vjp(spec.fn, consts, consts_g.mask, carry_g.treedef.unflatten(x), x_t)
        y_bar = ys_g.full([jax.lax.dynamic_index_in_dim(a, i, keepdims=False) for a in ys_given])
        g_c, g_x, *g_kt = pullback((carry_g.full(g), y_bar))
        g_k = [a + b.astype(a.dtype) for a, b in zip(g_k, g_kt, strict=True)]
        return (carry_g.pick(g_c), g_k), ([] if xs is None else xs_g.pick(g_x))

    rows = [] if xs is None else [jnp.zeros_like(a) for a in xs_g.pick(xs)]
    if loop.disk is not None:
        state = _claim(spec, loop, state, init, xs, consts, (carry_g.pick(g_carry), ys_given))
    (g, g_k), g_xs, count, vjps, st = loop.backward(state, (carry_g.pick(g_carry), consts_g.zeros()), rows, reverse)
    if loop.disk is not None:
        loop.disk.close(st["run"])
    _tell(spec.tally, count, vjps)
    g_init = carry_g.full(g)
    g_xs_tree = None if xs is None else xs_g.full(g_xs)
    return g_init, g_xs_tree, consts_g.full(g_k)


_scan.defvjp(_scan_fwd, _scan_bwd, symbolic_zeros=True)


def _claim(
    spec: _ScanSpec, loop: _Loop, state: tuple[Any, ...], init: Any, xs: Any, consts: Any, cotangents: Any
) -> tuple[Any, ...]:
    """The forward pass's state with its disk run claimed, or a state that sweeps forward again.

    The backward pass claims the run the forward pass left (named from the
    cotangents as well, so that it is never hoisted). If it is gone or
    already claimed, which happens when JAX runs one forward pass for several
    backward passes (a VJP applied twice; a forward pass that depends on
    nothing an enclosing loop changes, which JAX hoists out of the loop), the
    backward pass starts from x_0 with a new run instead: its first run of
    the schedule is the first sweep again, in the same loop (no second copy
    of the loop's code), and its steps are counted with the others. The
    slots are not selected: that sweep writes each before it reads it.
    """
    assert loop.disk is not None
    disk, plan = loop.disk, spec.plan
    x, live, buffer, st, op, slot, pos = state
    run, held = disk.resume(st["run"], cotangents)
    run = jax.lax.cond(held, lambda: run, lambda: disk.open(run, init, xs, consts))
    idle = jnp.asarray(IDLE, _i32)
    kept = (x, live, st | {"run": run}, op, slot, pos)
    fresh = (_tree.tree_leaves(init), jnp.asarray(0, _i32), plan.init(spec.n) | {"run": run}, idle, -idle, -idle)
    x, live, st, op, slot, pos = _tree.tree_map(lambda a, b: jnp.where(held, a, b), kept, fresh)
    return x, live, buffer, st, op, slot, pos


def scan(
    f: Callable[[Any, Any], tuple[Any, Any]],
    init: Any,
    xs: Any = None,
    length: int | None = None,
    reverse: bool = False,
    *,
    strategy: ReversalStrategy | None = None,
    tally: Tally | None = None,
    disk: str | os.PathLike[str] | None = None,
) -> tuple[Any, Any]:
    """``jax.lax.scan(f, init, xs, length, reverse)``, differentiated under a revseq schedule, compiled.

    Returns ``(carry, ys)`` as :func:`jax.lax.scan` does; without
    differentiation it *is* ``lax.scan``. Under :func:`jax.grad` (or
    :func:`jax.vjp`) the forward pass runs ``f`` in a ``lax.while_loop``
    that keeps only ``strategy``'s checkpoints, in a buffer of as many slots
    as the strategy's bound, and records ``ys``; the backward pass runs the
    rest of the schedule in a second ``lax.while_loop``, applying
    :func:`jax.vjp` of ``f`` at each state, last first. Gradients reach
    ``init``, ``xs`` and every array ``f`` closes over (hoisted by
    :func:`jax.make_jaxpr`), as with ``lax.scan``. Works under
    ``jax.jit``, ``jax.vmap`` and inside other scans.

    Parameters
    ----------
    f:
        ``f(carry, x) -> (carry, y)``, a pure function (``x`` is None without
        ``xs``); the carry keeps its structure, shapes and dtypes.
    init:
        The initial carry: any pytree of arrays.
    xs:
        Per-step inputs, a pytree of arrays with leading dimension ``n``.
    length:
        ``n``, required without ``xs``.
    reverse:
        Scan from the last ``x`` to the first, as ``lax.scan(reverse=True)``.
    strategy:
        A :class:`revseq.ReversalStrategy`; default :data:`revseq.DEFAULT_STRATEGY`.
        Built-in offline strategies plan on device; any other is compiled to
        a table (:func:`plan`). A strategy storing on disk
        (:class:`~revseq.MultistageCheckpointing`) needs ``disk``.
    tally:
        A :class:`Tally` the counts are added to after each pass (by one host
        callback per pass, not per step): ``forward_steps``, the schedule's
        calls of ``f``, equal to ``strategy.cost(n).forward_steps`` for a
        forward and a backward pass; ``vjp_steps``, one per step.
    disk:
        The directory (existing, writable) under which each forward pass
        makes a private directory for the strategy's disk checkpoints, one
        ``.npy`` file per carry leaf and checkpoint (a
        :class:`revseq.DiskStore`), written and read by ordered host
        callbacks (``jax.experimental.io_callback``) while the memory
        checkpoints stay in the compiled buffer; the backward pass removes
        it when it ends. Default None: no disk level. Not under
        ``jax.vmap``; one backward pass per forward pass; if the backward
        pass never runs, the files stay until
        :func:`remove_disk_checkpoints` or the interpreter's exit
        (docs/autodiff.md).

    Notes
    -----
    Each reversed step runs ``f`` once more inside its :func:`jax.vjp`: ``f``
    is called ``cost(n).forward_steps + n`` times per gradient. The stacked
    outputs ``ys`` cost ``n`` outputs whatever the strategy; keep them small
    or return None. Forward-mode (``jax.jvp``) is not supported: the
    reverse pass is a ``jax.custom_vjp``.
    """
    if not callable(f):
        raise ParameterError(f"f must be callable, got {f!r} ({type(f).__name__})")
    xs_leaves = _tree.tree_leaves(xs)
    if xs_leaves:
        lengths = {int(np.shape(leaf)[0]) if np.ndim(leaf) else 0 for leaf in xs_leaves}
        if len(lengths) != 1 or 0 in lengths:
            raise ParameterError(
                f"xs must have a first dimension of length n >= 1 shared by every leaf, "
                f"got shapes {[np.shape(leaf) for leaf in xs_leaves]}"
            )
        n = lengths.pop()
        if length is not None and check_int("length", length, 1) != n:
            raise ParameterError(f"length must equal the first dimension of xs, {n}, got {length}")
    else:
        if length is None:
            raise ParameterError("length must be given when there are no xs: scan(f, init, length=n)")
        n = check_int("length", length, 1)
        xs = None
    _microcode.check_steps("length", n)
    if tally is not None and not isinstance(tally, Tally):
        raise ParameterError(f"tally must be a revseq.jax.Tally, got {tally!r}")
    if not isinstance(reverse, bool):
        raise ParameterError(f"reverse must be a bool, got {reverse!r}")
    directory = None if check_directory("disk", disk) is None else _disk_parent(disk)
    init = _tree.tree_map(jnp.asarray, init)
    x_example = None if xs is None else _tree.tree_map(lambda a: a[0], xs)
    fn, consts, (carry_out, _) = _hoisted(f, init, x_example)
    _check_carry("f", init, carry_out)
    spec = _ScanSpec(
        fn=fn,
        n=n,
        strategy=strategy_or_default(strategy),
        reverse=reverse,
        tally=tally,
        state_nbytes=_state_nbytes(init),
        disk=directory,
    )
    return _scan(spec, init, xs, tuple(consts))  # type: ignore[no-any-return]


def _disk_parent(disk: Any) -> str:
    """``disk`` as an absolute path, if it is an existing, writable directory (nothing is created)."""
    from revseq.disk import DiskStore  # only the disk level needs it

    try:
        return DiskStore(disk).directory
    except StoreError as error:
        raise StoreError(f"disk: {error}") from error


# ---------------------------------------------------------------- while_loop


@attrs.frozen(eq=False)
class _WhileSpec:
    cond: Callable[..., Any]  # hoisted (_hoisted): (carry, *cond_consts) -> bool
    body: Callable[..., Any]  # hoisted: (carry, *body_consts) -> carry
    max_steps: int
    checkpoints: int
    tally: Tally | None

    @functools.cached_property
    def placements(self) -> tuple[np.ndarray, np.ndarray]:
        return _microcode.online_placements(self.checkpoints, self.max_steps)

    @functools.cached_property
    def stack(self) -> _jaxplan.Stack:
        c = self.checkpoints
        return _jaxplan.Stack(_jaxplan.binomial_rule(self.max_steps, c), min(c, self.max_steps), c, mapped=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _while(spec: _WhileSpec, init: Any, body_consts: Any, cond_consts: Any) -> Any:
    def going(carry: tuple[Any, Any]) -> Any:
        return (carry[1] < spec.max_steps) & spec.cond(carry[0], *cond_consts)

    def advance(carry: tuple[Any, Any]) -> tuple[Any, Any]:
        return spec.body(carry[0], *body_consts), carry[1] + 1

    return jax.lax.while_loop(going, advance, (init, jnp.asarray(0, _i32)))[0]


def _while_fwd(spec: _WhileSpec, init: Any, body_consts: Any, cond_consts: Any) -> Any:
    init, _ = _primals(init)
    body_consts, wanted = _primals(body_consts)
    cond_consts, _ = _primals(cond_consts)
    steps, where = (jnp.asarray(a) for a in spec.placements)
    size = spec.stack.capacity
    leaves, treedef = _tree.tree_flatten(init)

    def going(carry: tuple[Any, ...]) -> Any:
        x, t = carry[0], carry[1]
        return (t < spec.max_steps) & spec.cond(treedef.unflatten(x), *cond_consts)

    def advance(carry: tuple[Any, ...]) -> tuple[Any, ...]:
        x, t, buffer, positions, i = carry
        place = steps[i] == t
        slot = where[i]
        buffer = _write(buffer, slot, x, place)
        positions = _write(positions, slot, t, place)
        x = _tree.tree_leaves(spec.body(treedef.unflatten(x), *body_consts))
        return x, t + 1, buffer, positions, i + place.astype(_i32)

    carry = (leaves, jnp.asarray(0, _i32), _slots(leaves, size), jnp.full(size, -1, _i32), jnp.asarray(0, _i32))
    x, n, buffer, positions, _ = jax.lax.while_loop(going, advance, carry)
    _tell(spec.tally, n, 0)
    static = _Static([w and _inexact(k) for w, k in zip(wanted, body_consts, strict=True)])
    return treedef.unflatten(x), (x, n, buffer, positions, init, body_consts, cond_consts, static)


def _while_bwd(spec: _WhileSpec, residuals: Any, g_final: Any) -> Any:
    x, n, buffer, positions, init, body_consts, cond_consts, wanted = residuals
    treedef = _tree.tree_structure(init)
    stack = spec.stack
    carry_g, consts_g = _Grads(init), _Grads(body_consts, wanted.value)

    def step(x: Any, t: Any) -> tuple[Any, Any]:
        return _tree.tree_leaves(spec.body(treedef.unflatten(x), *body_consts)), None

    def reverse(x: Any, t: Any, small: tuple[Any, Any]) -> tuple[tuple[Any, Any], list[Any]]:
        g, g_k = small
        _, pullback = _partial_vjp(spec.body, body_consts, consts_g.mask, treedef.unflatten(x))
        g_c, *g_kt = pullback(carry_g.full(g))
        g_k = [a + b.astype(a.dtype) for a, b in zip(g_k, g_kt, strict=True)]
        return (carry_g.pick(g_c), g_k), []

    st = stack.init(n, positions)
    idle = jnp.asarray(IDLE, _i32)
    loop = _Loop(step=step, n=spec.max_steps, plan=stack)
    small = (carry_g.pick(_materialize(g_final)), consts_g.zeros())
    (g, g_k), _, count, vjps, _ = loop.backward((x, n, buffer, st, idle, -idle, -idle), small, [], reverse)
    _tell(spec.tally, count, vjps)
    cond_zero = _Grads(cond_consts, [False] * len(cond_consts)).full([])
    return carry_g.full(g), consts_g.full(g_k), cond_zero


_while.defvjp(_while_fwd, _while_bwd, symbolic_zeros=True)


def while_loop(
    cond_fun: Callable[[Any], Any],
    body_fun: Callable[[Any], Any],
    init_val: Any,
    *,
    max_steps: int,
    checkpoints: int | None = None,
    tally: Tally | None = None,
) -> Any:
    """``jax.lax.while_loop(cond_fun, body_fun, init_val)``, reverse-mode differentiable, compiled.

    The number of steps ``n`` is known only when ``cond_fun`` turns false
    (or at ``max_steps``, where the loop stops as equinox's does). Under
    :func:`jax.grad` the forward pass stores states by
    :class:`~revseq.OnlineCheckpointing`'s rule, never more than
    ``checkpoints`` of them, and the reverse pass reverses each segment
    between them with Revolve, on device: exactly ``T'(n, c)`` forward
    steps (:func:`revseq.online_lower_bound`) for ``n <= (c + 1)(c + 2)/2 -
    1``, the least any schedule that finds ``n`` by running can make, and
    fewer than equinox's ``checkpointed_while_loop`` beyond (docs/online.md,
    docs/autodiff.md). Gradients reach ``init_val`` and every array
    ``body_fun`` closes over.

    Parameters
    ----------
    cond_fun, body_fun:
        As for :func:`jax.lax.while_loop`; ``body_fun`` keeps the carry's
        structure, shapes and dtypes.
    max_steps:
        The most steps the loop may make (an int >= 1). The placements of
        the checkpoints are computed on the host for runs up to this length
        (8 bytes each: about one per 10 steps past the optimal range, for
        ``c = 10``) and read on device.
    checkpoints:
        The budget ``c``; default :meth:`OnlineCheckpointing.for_max_steps`
        (the fewest that keep every run up to ``max_steps`` optimal, about
        ``sqrt(2 max_steps)``; equinox's default).
    tally:
        As for :func:`scan`.
    """
    if not callable(cond_fun):
        raise ParameterError(f"cond_fun must be callable, got {cond_fun!r}")
    if not callable(body_fun):
        raise ParameterError(f"body_fun must be callable, got {body_fun!r}")
    max_steps = check_int("max_steps", max_steps, 1)
    _microcode.check_steps("max_steps", max_steps)
    if checkpoints is None:
        checkpoints = OnlineCheckpointing.for_max_steps(max_steps).budget()
    checkpoints = check_int("checkpoints", checkpoints, 1)
    if tally is not None and not isinstance(tally, Tally):
        raise ParameterError(f"tally must be a revseq.jax.Tally, got {tally!r}")
    init_val = _tree.tree_map(jnp.asarray, init_val)
    body, body_consts, carry_out = _hoisted(body_fun, init_val)
    _check_carry("body_fun", init_val, carry_out)
    cond, cond_consts, going = _hoisted(cond_fun, init_val)
    if not (isinstance(going, jax.ShapeDtypeStruct) and going.shape == () and going.dtype == jnp.bool_):
        raise ParameterError(f"cond_fun must return one bool (a 0-d boolean array), got {going}")
    spec = _WhileSpec(cond=cond, body=body, max_steps=max_steps, checkpoints=checkpoints, tally=tally)
    return _while(spec, init_val, tuple(body_consts), tuple(cond_consts))
