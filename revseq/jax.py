"""JAX adapter: a ``lax.scan`` whose backward pass follows a revseq schedule.

:func:`scan` takes the arguments of :func:`jax.lax.scan` and computes the
same values; under :func:`jax.grad` (or :func:`jax.vjp`) its forward pass
keeps only the strategy's checkpoints, and its backward pass walks the states
back, calling a jitted :func:`jax.vjp` of one step at each of them.

>>> import jax, jax.numpy as jnp, numpy as np, revseq
>>> import revseq.jax as rj
>>> def step(h, x):
...     h = jnp.tanh(0.9 * h + x)
...     return h, jnp.sum(h)                                  # the carry, a per-step output
>>> xs = jnp.linspace(0.0, 1.0, 300).reshape(100, 3)
>>> tally = rj.Tally()
>>> def loss(h0):
...     h, ys = rj.scan(step, h0, xs, strategy=revseq.BinomialCheckpointing(checkpoints=5), tally=tally)
...     return jnp.sum(h) + jnp.sum(ys)
>>> def plain_loss(h0):
...     h, ys = jax.lax.scan(step, h0, xs)
...     return jnp.sum(h) + jnp.sum(ys)
>>> bool(np.allclose(jax.grad(loss)(jnp.ones(3)), jax.grad(plain_loss)(jnp.ones(3))))
True
>>> tally.forward_steps, tally.vjp_steps                  # the strategy's cost(100), then one vjp per step
(317, 100)

What is traceable: the forward value, anywhere (under :func:`jax.jit`,
:func:`jax.vmap`, without differentiation, :func:`scan` is ``lax.scan``).
What is not: the backward pass, which runs the schedule in Python. So
differentiate outside ``jit`` (``jax.grad(loss)``, with ``loss`` calling
:func:`scan`, not ``jax.jit(jax.grad(loss))``); each step is jitted
already. Doing otherwise raises an error saying so. See docs/autodiff.md.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

try:
    import jax
except ModuleNotFoundError as error:  # only a missing jax; a broken install keeps its own message
    if error.name != "jax":
        raise
    raise ModuleNotFoundError("revseq.jax needs JAX: pip install 'revseq[jax]'", name=error.name) from None

import attrs
import jax.numpy as jnp
import numpy as np

from revseq import _limits
from revseq._adapter import Tally, strategy_or_default
from revseq._validate import check_int
from revseq.engine import Stats, Walk, walk
from revseq.errors import ParameterError
from revseq.recurrence import Recurrence
from revseq.strategies.base import ReversalStrategy

__all__ = ["Tally", "scan"]


@attrs.frozen(eq=False)
class _Spec:
    """The non-array arguments of one :func:`scan` (custom_vjp's nondiff argument)."""

    fn: Callable[..., Any]  # closure-converted step: (carry, x, *consts) -> (carry, y)
    n: int
    strategy: ReversalStrategy
    tally: Tally | None

    def count(self, forward: int = 0, vjp: int = 0, stats: Stats | None = None) -> None:
        if self.tally is not None:
            self.tally.forward_steps += forward
            self.tally.vjp_steps += vjp
            if stats is not None:
                self.tally.stats = stats


class _Opaque:
    """A Python object travelling as a custom_vjp residual: a pytree node with no leaves.

    The paused walk rides in its aux data, so its lifetime is the residuals':
    it is freed (and its checkpoints with it) when the VJP function is.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


jax.tree_util.register_pytree_node(_Opaque, lambda o: ((), o.value), lambda value, _: _Opaque(value))


class _Paused:
    def __init__(self, pairs: Walk, counted: int) -> None:
        self.pairs: Walk | None = pairs
        self.counted = counted


def _at(xs: Any, t: Any) -> Any:
    return jax.tree_util.tree_map(lambda a: jax.lax.dynamic_index_in_dim(a, t, keepdims=False), xs)


@functools.lru_cache(maxsize=64)
def _compiled(fn: Callable[..., Any], treedef: Any) -> tuple[Any, Any]:
    """The jitted step and its VJP for ``fn`` (the carry travels as its flat leaves).

    Cached per closure-converted step, which JAX itself caches per step
    function, shapes and dtypes: a step defined once compiles once (per n,
    since ``xs`` is an argument and indexed inside). One function serves the
    first sweep and the recomputations alike; the latter discard ``y``.
    """

    def forward(leaves: Any, xs: Any, t: Any, consts: Any) -> Any:
        carry, y = fn(jax.tree_util.tree_unflatten(treedef, leaves), _at(xs, t), *consts)
        return jax.tree_util.tree_leaves(carry), y

    def adjoint(leaves: Any, xs: Any, t: Any, consts: Any, g_carry: Any, g_ys: Any) -> Any:
        carry = jax.tree_util.tree_unflatten(treedef, leaves)
        _, pullback = jax.vjp(lambda c, x_t, k: fn(c, x_t, *k), carry, _at(xs, t), consts)
        g_c, g_x, g_k = pullback((jax.tree_util.tree_unflatten(treedef, g_carry), _at(g_ys, t)))
        return jax.tree_util.tree_leaves(g_c), g_x, g_k

    return jax.jit(forward), jax.jit(adjoint)


def _is_traced(tree: Any) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))


def _primal(spec: _Spec, init: Any, xs: Any, consts: Any) -> Any:
    return jax.lax.scan(lambda c, x: spec.fn(c, x, *consts), init, xs, length=spec.n)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _scan(spec: _Spec, init: Any, xs: Any, consts: Any) -> Any:
    return _primal(spec, init, xs, consts)


def _scan_fwd(spec: _Spec, init: Any, xs: Any, consts: Any) -> Any:
    if _is_traced((init, xs, consts)):
        raise TypeError(
            "revseq.jax.scan cannot be differentiated under a JAX transformation (jax.jit, jax.vmap, ...): "
            "its backward pass runs a revseq schedule in Python. Take the gradient outside: "
            "jax.grad(loss), not jax.jit(jax.grad(loss)) (each step is jitted already); "
            "under jit, scan's forward value works"
        )
    leaves, treedef = jax.tree_util.tree_flatten(init)
    forward, _ = _compiled(spec.fn, treedef)
    # One slot per step for the outputs: refused at once where even the slots cannot fit (n = 10**12).
    _limits.check_fits("length", spec.n * _limits.LIST_SLOT_BYTES, f"recording the {spec.n} outputs ys")
    ys: list[Any] = [None] * spec.n
    recording = [True]

    def step(state: tuple[Any, ...], t: int) -> tuple[Any, ...]:
        new, y = forward(state, xs, t, consts)
        if recording[0] and ys[t] is None:  # the first sweep passes each step once, before x_n
            ys[t] = y
        return tuple(new)

    pairs = walk(Recurrence(step, indexed=True), tuple(leaves), spec.n, spec.strategy)
    _, final = next(pairs)
    recording[0] = False
    stats = pairs.stats
    spec.count(forward=stats.forward_steps, stats=stats)
    stacked = jax.tree_util.tree_map(lambda *column: jnp.stack(column), *ys)
    ys.clear()
    carry = jax.tree_util.tree_unflatten(treedef, list(final))
    return (carry, stacked), (_Opaque(_Paused(pairs, stats.forward_steps)), init, xs, consts)


def _zeros_like(x: Any) -> Any:
    # The cotangent of an integer or boolean array has JAX's float0 dtype.
    if jnp.issubdtype(jnp.result_type(x), jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(np.shape(x), dtype=jax.dtypes.float0)


def _scan_bwd(spec: _Spec, residuals: Any, cotangents: Any) -> Any:
    opaque, init, xs, consts = residuals
    g_carry, g_ys = cotangents
    leaves, treedef = jax.tree_util.tree_flatten(init)
    forward, adjoint = _compiled(spec.fn, treedef)
    paused: _Paused = opaque.value
    pairs, counted = paused.pairs, paused.counted
    if pairs is None:
        # The VJP is applied a second time: the first application consumed the
        # walk, so replay it from init (the same cost again).
        def step(state: tuple[Any, ...], t: int) -> tuple[Any, ...]:
            return tuple(forward(state, xs, t, consts)[0])

        pairs = walk(Recurrence(step, indexed=True), tuple(leaves), spec.n, spec.strategy)
        counted = 0
    paused.pairs = None
    g = jax.tree_util.tree_leaves(g_carry)
    g_x: list[Any] = [None] * spec.n
    g_consts = jax.tree_util.tree_map(_zeros_like, consts)
    with pairs:
        for t, state in pairs:
            if t == spec.n:
                continue
            g, g_x[t], g_k = adjoint(list(state), xs, t, consts, g, g_ys)
            g_consts = jax.tree_util.tree_map(_add, g_consts, g_k)
            spec.count(vjp=1)
        spec.count(forward=pairs.stats.forward_steps - counted, stats=pairs.stats)
    g_init = jax.tree_util.tree_unflatten(treedef, g)
    g_xs = jax.tree_util.tree_map(lambda *column: _stack(column), *g_x) if xs is not None else None
    return g_init, g_xs, g_consts


def _add(a: Any, b: Any) -> Any:
    return a if getattr(b, "dtype", None) == jax.dtypes.float0 else a + b


def _stack(column: tuple[Any, ...]) -> Any:
    if getattr(column[0], "dtype", None) == jax.dtypes.float0:
        return np.zeros((len(column), *np.shape(column[0])), dtype=jax.dtypes.float0)
    return jnp.stack(column)


_scan.defvjp(_scan_fwd, _scan_bwd)


def scan(
    f: Callable[[Any, Any], tuple[Any, Any]],
    init: Any,
    xs: Any = None,
    length: int | None = None,
    *,
    strategy: ReversalStrategy | None = None,
    tally: Tally | None = None,
) -> tuple[Any, Any]:
    """``jax.lax.scan(f, init, xs, length)``, differentiated under a revseq schedule.

    Returns ``(carry, ys)`` as :func:`jax.lax.scan` does. Under
    :func:`jax.grad` / :func:`jax.vjp` the forward pass runs ``f`` step by
    step (jitted) through the engine, keeping only ``strategy``'s
    checkpoints, and the backward pass applies a jitted :func:`jax.vjp` of
    ``f`` at each state, last first. Gradients reach ``init``, ``xs`` and
    every array ``f`` closes over (hoisted by :func:`jax.closure_convert`),
    as with ``lax.scan``.

    Parameters
    ----------
    f:
        ``f(carry, x) -> (carry, y)``, a pure function (``x`` is None without
        ``xs``); the carry keeps its structure, shapes and dtypes. Define it
        once and reuse it: its jitted steps are cached per function.
    init:
        The initial carry: any pytree of arrays.
    xs:
        Per-step inputs, a pytree of arrays with leading dimension ``n``.
    length:
        ``n``, required without ``xs``.
    strategy:
        A :class:`revseq.ReversalStrategy`; default :data:`revseq.DEFAULT_STRATEGY`.
    tally:
        A :class:`Tally` to count the step's evaluations into.

    Notes
    -----
    Not traceable when differentiated: ``jax.grad`` must not be under
    ``jax.jit`` or ``jax.vmap`` (a clear ``TypeError`` says so). The
    stacked outputs ``ys`` are returned whole, so they cost ``n`` times one
    output whatever the strategy; keep them small or return None.
    Applying the VJP twice replays the schedule from ``init``.
    """
    if not callable(f):
        raise ParameterError(f"f must be callable, got {f!r} ({type(f).__name__})")
    xs_leaves = jax.tree_util.tree_leaves(xs)
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
    if tally is not None and not isinstance(tally, Tally):
        raise ParameterError(f"tally must be a revseq.jax.Tally, got {tally!r}")
    init = jax.tree_util.tree_map(jnp.asarray, init)
    x_example = None if xs is None else jax.tree_util.tree_map(lambda a: a[0], xs)
    fn, consts = jax.closure_convert(f, init, x_example)
    spec = _Spec(fn=fn, n=n, strategy=strategy_or_default(strategy), tally=tally)
    return _scan(spec, init, xs, tuple(consts))  # type: ignore[no-any-return]
