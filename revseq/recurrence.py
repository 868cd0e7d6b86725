"""What to run: a step, its derivative, and optionally a step index, parameters and per-step losses."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeAlias

import attrs

from revseq import _checks, _tree
from revseq.errors import ParameterError, StepError

__all__ = ["VJP", "Derivative", "Loss", "Recurrence", "Step"]

State: TypeAlias = Any


# The callables' types are plain `Callable[..., Any]`, not Protocols: how many
# arguments they take depends on `indexed` and `params` (the calling rule),
# and numpy's ufuncs (`np.sin`, the gist's step) match no Protocol with a
# variable signature under mypy. Their contracts are documented here instead.

Step: TypeAlias = Callable[..., Any]
"""``f(x, [t], [params]) -> x_next``: the arguments in brackets only when enabled."""

Derivative: TypeAlias = Callable[..., Any]
"""``df(x, [t]) -> d``: the diagonal of the Jacobian, so the adjoint of a step is ``adj * d``."""

VJP: TypeAlias = Callable[..., Any]
"""``vjp(x, [t], [params], [y], adj) -> adj_x``, or ``(adj_x, adj_params)`` when params are given.

``y`` (the step's output) only with ``vjp_output=True``.

``adj`` is the gradient of the objective with respect to the step's output
``f(x, ...)``; return the gradient with respect to its input ``x`` (and to
``params``).
"""

Loss: TypeAlias = Callable[..., Any]
"""``loss(x, [t], [params]) -> (value, grad_x)``, or ``(value, grad_x, grad_params)`` with params.

Called once for every state the recurrence produces, ``x_1 .. x_n``, with
``t`` its index; the objective is the sum of the values.
"""


def _callable_or_none(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and not callable(value):
        raise ParameterError(f"{attribute.name} must be callable or None, got {value!r} ({type(value).__name__})")


def _callable(instance: Any, attribute: Any, value: Any) -> None:
    if not callable(value):
        raise ParameterError(f"{attribute.name} must be callable, got {value!r} ({type(value).__name__})")


def _boolean(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, bool):
        raise ParameterError(f"{attribute.name} must be a bool, got {value!r} ({type(value).__name__})")


@attrs.frozen
class Recurrence:
    """A recurrence ``x_{t+1} = f(x_t)`` and the derivative reverse mode needs.

    One rule decides how every callable is called: first the state ``x``,
    then the step index ``t`` if ``indexed=True``, then ``params`` if
    ``params`` is given, then (for ``vjp`` only) the adjoint. So the
    original gist's pair stays a one-liner, and an RNN reading inputs
    ``u[t]`` with weights ``p`` is the same class with two switches on.

    Parameters
    ----------
    f:
        The step.
    df:
        Elementwise derivative: the diagonal of the step's Jacobian. Give
        either ``df`` or ``vjp`` (``df`` cannot carry parameter gradients).
    vjp:
        Vector-Jacobian product of the step. With ``params`` it returns
        ``(adj_x, adj_params)``; ``adj_params`` is summed over all steps.
    params:
        Parameters shared by every step: an array, or a tuple, list or dict
        of arrays. Their gradient is returned as ``Result.params_gradient``.
    loss:
        A loss contribution at every state ``x_1 .. x_n``, returning the
        value and its gradient(s); see :class:`Loss`.
    indexed:
        Pass the step index ``t`` (``0 <= t < n``) to ``f``, ``df``, ``vjp``
        and ``loss``.
    vjp_output:
        Pass ``vjp`` the step's output ``y = f(x, ...)`` too, before the
        adjoint: ``vjp(x, [t], [params], y, adj)``. A vjp that needs what the
        step computed (``tanh(W h)`` for an RNN) then need not compute it
        again: ``y`` is the state the run holds anyway.

    Examples
    --------
    >>> import numpy as np
    >>> rec = Recurrence(f=np.sin, df=np.cos)
    >>> rnn = Recurrence(
    ...     f=lambda h, t, W: np.tanh(W @ h + t),
    ...     vjp=lambda h, t, W, g: (W.T @ (g * (1 - np.tanh(W @ h + t) ** 2)),
    ...                             np.outer(g * (1 - np.tanh(W @ h + t) ** 2), h)),
    ...     params=np.eye(3), indexed=True)

    ``f`` must return a new array each call: the default store keeps
    references to states (see :class:`revseq.MemoryStore`). A step that
    writes into its argument, or into an array it returned before, is
    refused on one of its first calls with a :class:`~revseq.errors.StepError`,
    unless the store copies (``MemoryStore(copy=True)``, ``DiskStore``).
    Writing into ``params`` is refused whatever the store.
    """

    f: Step = attrs.field(validator=_callable)
    df: Derivative | None = attrs.field(default=None, kw_only=False, validator=_callable_or_none)
    vjp: VJP | None = attrs.field(default=None, kw_only=True, validator=_callable_or_none)
    params: Any = attrs.field(default=None, kw_only=True)
    loss: Loss | None = attrs.field(default=None, kw_only=True, validator=_callable_or_none)
    indexed: bool = attrs.field(default=False, kw_only=True, validator=_boolean)
    vjp_output: bool = attrs.field(default=False, kw_only=True, validator=_boolean)

    def __attrs_post_init__(self) -> None:
        if self.vjp_output and self.vjp is None:
            raise ParameterError("vjp_output=True passes the step's output to vjp: give vjp=..., not df")
        if self.df is not None and self.vjp is not None:
            raise ParameterError("give the derivative once: df (elementwise) or vjp, got both")
        if self.params is not None and self.df is not None:
            raise ParameterError(
                "df gives no gradient for params: pass vjp(x, ..., params, adj) -> (adj_x, adj_params) instead"
            )

    @property
    def has_derivative(self) -> bool:
        return self.df is not None or self.vjp is not None

    # -- the normalised forms the engine calls --------------------------------
    # Each returns a callable of (x, t, ...) so the engine has one calling
    # convention; `plain_step` is the fast path when f takes x alone.

    def _bind(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` as a function of ``(x, t, *rest)``, with the index and params supplied by the rule."""
        indexed, params = self.indexed, self.params
        if params is None and indexed:
            return fn
        if params is None:
            return lambda x, t, *rest: fn(x, *rest)
        if indexed:
            return lambda x, t, *rest: fn(x, t, params, *rest)
        return lambda x, t, *rest: fn(x, params, *rest)

    @property
    def plain_step(self) -> Callable[[State], State] | None:
        """``f`` itself when it takes the state alone, else None."""
        return self.f if self.params is None and not self.indexed else None

    def step_at(self) -> Callable[[State, int], State]:
        """``f`` as a function of ``(x, t)``."""
        return self._bind(self.f)

    def adjoint_at(
        self, elementwise_leaf: bool, *, checked: bool = False
    ) -> Callable[[State, int, State, Any], tuple[Any, Any]]:
        """The adjoint of one step as a function of ``(x, t, y, adj) -> (adj_x, adj_params or None)``.

        ``y`` is the step's output ``x_{t+1}``, passed on to ``vjp`` only with
        ``vjp_output``. With ``checked``, every value ``df`` or ``vjp`` returns
        is checked against the state ``x`` (and ``params``) before it is used,
        and a :class:`~revseq.errors.StepError` names the callable and the
        step; the engine uses this version for the first step it reverses.
        """
        if self.df is not None:
            df = self._bind(self.df)
            if checked:
                return functools.partial(_checked_df, df, elementwise_leaf)
            if elementwise_leaf:
                return lambda x, t, y, g: (g * df(x, t), None)
            return lambda x, t, y, g: (_tree.tree_mul(g, df(x, t)), None)
        assert self.vjp is not None
        bound = self._bind(self.vjp)
        vjp: Callable[..., Any] = bound if self.vjp_output else (lambda x, t, y, g: bound(x, t, g))
        if self.params is None:
            if checked:
                return functools.partial(_checked_vjp, vjp)
            return lambda x, t, y, g: (vjp(x, t, y, g), None)
        if checked:
            return functools.partial(_checked_vjp_params, vjp, self.params)
        return functools.partial(_unpack_pair, vjp, "vjp")

    def loss_at(self, *, checked: bool = False) -> Callable[[State, int], tuple[Any, Any, Any]] | None:
        """The per-step loss as a function of ``(x, t) -> (value, grad_x, grad_params or None)``.

        With ``checked``, the value must be one real number and the gradients
        shaped like ``x`` (and ``params``), or a StepError says which is not.
        """
        if self.loss is None:
            return None
        loss = self._bind(self.loss)
        unpack = _unpack_value_grad if self.params is None else _unpack_value_grads
        if checked:
            return functools.partial(_checked_loss, unpack, loss, self.params)
        return functools.partial(unpack, loss)


_GRAD_X = "a gradient with respect to x_t"
_GRAD_PARAMS = "a gradient with respect to params"


def _checked_df(df: Callable[..., Any], elementwise_leaf: bool, x: State, t: int, y: State, g: Any) -> tuple[Any, None]:
    d = df(x, t)
    _checks.check_like(d, x, "a derivative", "df", t)
    return (g * d if elementwise_leaf else _tree.tree_mul(g, d)), None


def _checked_vjp(vjp: Callable[..., Any], x: State, t: int, y: State, g: Any) -> tuple[Any, None]:
    adj = vjp(x, t, y, g)
    _checks.check_like(adj, x, _GRAD_X, "vjp", t)
    return adj, None


def _checked_vjp_params(vjp: Callable[..., Any], params: Any, x: State, t: int, y: State, g: Any) -> tuple[Any, Any]:
    adj, adj_params = _unpack_pair(vjp, "vjp", x, t, y, g)
    _checks.check_like(adj, x, _GRAD_X, "vjp", t)
    _checks.check_like(adj_params, params, _GRAD_PARAMS, "vjp", t)
    return adj, adj_params


def _checked_loss(
    unpack: Callable[..., tuple[Any, Any, Any]], loss: Callable[..., Any], params: Any, x: State, t: int
) -> tuple[Any, Any, Any]:
    value, grad, grad_params = unpack(loss, x, t)
    _checks.check_scalar(value, "loss", t)
    _checks.check_like(grad, x, _GRAD_X, "loss", t)
    if params is not None:
        _checks.check_like(grad_params, params, _GRAD_PARAMS, "loss", t)
    return value, grad, grad_params


def _unpack_pair(vjp: Callable[..., Any], name: str, x: State, t: int, y: State, g: Any) -> tuple[Any, Any]:
    out = vjp(x, t, y, g)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise StepError(f"{name} must return (adj_x, adj_params) when params are given, got {type(out).__name__}")
    return out


def _unpack_value_grad(loss: Callable[..., Any], x: State, t: int) -> tuple[Any, Any, None]:
    out = loss(x, t)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise StepError(f"loss must return (value, grad_x), got {type(out).__name__}")
    return out[0], out[1], None


def _unpack_value_grads(loss: Callable[..., Any], x: State, t: int) -> tuple[Any, Any, Any]:
    out = loss(x, t)
    if not (isinstance(out, tuple) and len(out) == 3):
        raise StepError(
            f"loss must return (value, grad_x, grad_params) when params are given, got {type(out).__name__}"
        )
    return out[0], out[1], out[2]
