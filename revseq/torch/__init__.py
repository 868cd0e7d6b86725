"""PyTorch adapter: backpropagate through ``h_{t+1} = cell(h_t, u_t)`` under a revseq schedule.

PyTorch differentiates one step; revseq decides which states to keep. The
forward pass runs the cell without building a graph, holding only the
strategy's checkpoints; the backward pass walks the states back, re-runs the
cell with gradients enabled at each ``h_t`` and asks autograd for that one
step's vector-Jacobian product. Gradients reach ``h0``, the inputs and every
parameter of the cell exactly as they would through the unrolled loop.

>>> import torch, revseq
>>> import revseq.torch as rt
>>> _ = torch.manual_seed(0)
>>> torch.set_num_threads(1)                           # steps this small run fastest on one thread
>>> cell = torch.nn.GRUCell(4, 8)
>>> u = torch.randn(100, 2, 4)                        # 100 steps, batch of 2
>>> tally = rt.Tally()
>>> h = rt.unroll(lambda h, u_t: cell(u_t, h), torch.zeros(2, 8), u, params=cell.parameters(),
...               strategy=revseq.BinomialCheckpointing(checkpoints=5), tally=tally)
>>> h.sum().backward()                                # fills cell.weight_hh.grad, ...
>>> tally.forward_steps, tally.vjp_steps, tally.stats.peak_checkpoints
(317, 100, 5)

See docs/autodiff.md for the design, the counting convention and measured memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

try:
    import torch
    from torch import Tensor
except ModuleNotFoundError as error:  # only a missing torch; a broken install keeps its own message
    if error.name != "torch":
        raise
    raise ModuleNotFoundError("revseq.torch needs PyTorch: pip install 'revseq[torch]'", name=error.name) from None

import attrs

from revseq import _limits, _tree
from revseq._adapter import Tally, strategy_or_default
from revseq._validate import check_bool, check_directory, check_int
from revseq.engine import Stats, Walk, walk
from revseq.errors import ParameterError, StepError
from revseq.recurrence import Recurrence
from revseq.strategies.base import ReversalStrategy
from revseq.torch._ambient import Ambient, Carry

__all__ = ["Recurrent", "Tally", "unroll"]


# -- trees of tensors -------------------------------------------------------
# A state, an input or an output is a tensor or a tuple, list or dict of
# tensors (revseq's own tree rule). Autograd wants flat tensor arguments, so
# each tree travels as its leaves plus a skeleton (the tree with None leaves).


def _flatten(tree: Any, name: str) -> tuple[list[Tensor], Any]:
    leaves = _tree.leaves(tree)
    for leaf in leaves:
        if not isinstance(leaf, torch.Tensor):
            raise ParameterError(
                f"{name} must be a tensor or a tuple, list or dict of tensors, "
                f"got a leaf {leaf!r} ({type(leaf).__name__})"
            )
    return leaves, _tree.tree_map(lambda _: None, tree)


def _unflatten(skeleton: Any, leaves: Iterable[Tensor]) -> Any:
    items = iter(leaves)
    return _tree.tree_map(lambda _: next(items), skeleton)


def _describe(skeleton: Any) -> str:
    return repr(_tree.tree_map(lambda _: "tensor", skeleton)).replace("'", "")


class _SavedStore:
    """The walk's checkpoints, held by autograd while the walk waits for the backward pass.

    Between forward and backward the checkpoints leave this dict and become
    tensors saved with ``ctx.save_for_backward``: autograd then owns them, so
    ``torch.autograd.graph.saved_tensors_hooks`` (``save_on_cpu``, a memory
    meter) see them like any other saved tensor, and they are freed with the
    graph. During the backward pass they come back here, and the checkpoints
    the schedule makes while reversing live here only until it frees them.
    Each checkpoint keeps its step's snapshot (generators, buffers: see
    ``_ambient``), taken when it is stored.
    """

    __slots__ = ("_ambient", "_arity", "_data", "_keys", "_nbytes", "_snapshots")

    def __init__(self, arity: int, ambient: Ambient) -> None:
        self._arity = arity  # leaves per state
        self._ambient = ambient
        self._data: dict[int, Carry] = {}
        self._keys: list[int] = []
        self._snapshots: list[Any] = []
        self._nbytes = 0

    def put(self, key: int, state: Carry) -> None:
        self._ambient.keep(state)
        self._data[key] = state
        self._nbytes += state.nbytes

    def get(self, key: int) -> Carry:
        return self._data[key]

    def delete(self, key: int) -> None:
        self._nbytes -= self._data.pop(key).nbytes

    def clear(self) -> None:
        self._data.clear()
        self._keys, self._snapshots = [], []
        self._nbytes = 0

    def __len__(self) -> int:
        return len(self._data) or len(self._keys)

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def seal(self) -> list[Tensor]:
        """Hand the checkpoints over (as a flat list of tensors) and drop this store's references."""
        self._keys = sorted(self._data)
        carries = [self._data[key] for key in self._keys]
        self._snapshots = [carry.snapshot for carry in carries]
        self._data.clear()
        return [leaf for carry in carries for leaf in carry.leaves]

    def unseal(self, leaves: tuple[Tensor, ...]) -> None:
        """Take the checkpoints back from the saved tensors :meth:`seal` handed over."""
        k = self._arity
        self._data = {
            key: Carry(tuple(leaves[i * k : (i + 1) * k]), snapshot)
            for i, (key, snapshot) in enumerate(zip(self._keys, self._snapshots, strict=True))
        }
        self._keys, self._snapshots = [], []


class _DiskStore:
    """The disk level for the adapter's states: a :class:`revseq.DiskStore` of numpy arrays, tensors in and out.

    A state's tensors are written as arrays (a dtype numpy lacks, such as
    bfloat16, as its raw bytes) and read back as tensors of the same dtype
    and shape on the device they came from; the snapshot of each step
    (generators, buffers) stays in memory. The files are in a private
    directory under ``directory`` (the system's temporary directory by
    default), removed when the walk ends, however it ends.
    """

    __slots__ = ("_ambient", "_inner", "_layouts", "_snapshots")

    def __init__(self, directory: Any, ambient: Ambient) -> None:
        from revseq.disk import DiskStore  # only the disk level needs it

        self._inner = DiskStore(directory)
        self._ambient = ambient
        self._snapshots: dict[int, Any] = {}
        self._layouts: dict[int, list[tuple[torch.dtype, tuple[int, ...], torch.device]]] = {}

    def put(self, key: int, state: Carry) -> None:
        self._ambient.keep(state)
        self._inner.put(key, tuple(_to_host(leaf) for leaf in state.leaves))
        self._snapshots[key] = state.snapshot
        self._layouts[key] = [(leaf.dtype, tuple(leaf.shape), leaf.device) for leaf in state.leaves]

    def get(self, key: int) -> Carry:
        arrays = self._inner.get(key)
        leaves = tuple(_from_host(a, *layout) for a, layout in zip(arrays, self._layouts[key], strict=True))
        return Carry(leaves, self._snapshots[key])

    def delete(self, key: int) -> None:
        self._inner.delete(key)
        del self._snapshots[key], self._layouts[key]

    def clear(self) -> None:
        self._snapshots.clear()
        self._layouts.clear()
        self._inner.clear()

    def __len__(self) -> int:
        return len(self._inner)

    @property
    def copies(self) -> bool:
        return True

    @property
    def nbytes(self) -> int:
        return self._inner.nbytes

    @property
    def bytes_written(self) -> int:
        return self._inner.bytes_written

    @property
    def bytes_read(self) -> int:
        return self._inner.bytes_read


def _to_host(leaf: Tensor) -> Any:
    """A tensor's values as a numpy array on the host; raw bytes for a dtype numpy has not (bfloat16, float8)."""
    host = leaf.detach().cpu()
    try:
        return host.numpy()
    except TypeError:
        return host.contiguous().reshape(-1).view(torch.uint8).numpy()


def _from_host(array: Any, dtype: torch.dtype, shape: tuple[int, ...], device: torch.device) -> Tensor:
    tensor = torch.from_numpy(array)
    if tensor.dtype != dtype:  # stored as raw bytes
        tensor = tensor.view(dtype).reshape(shape)
    return tensor.to(device)


_UNKNOWN = object()


@attrs.define(eq=False)
class _Spec:
    """Everything about one call of :func:`unroll` that is not a tensor autograd routes."""

    cell: Callable[..., Any]
    output: Callable[[Any], Any] | None
    strategy: ReversalStrategy
    n: int
    state_skeleton: Any
    has_inputs: bool
    input_skeleton: Any
    num_state: int
    num_inputs: int
    params: tuple[Tensor, ...]
    tally: Tally | None
    preserve_rng_state: bool
    disk: Any  # the directory for the disk level (None: the system's temporary directory)
    output_skeleton: Any = _UNKNOWN  # known after the first call of `output`

    @property
    def single(self) -> bool:
        return _tree.is_leaf(self.state_skeleton)

    def call(self, leaves: Sequence[Tensor], u: Sequence[Tensor] | None, t: int) -> tuple[Any, list[Tensor]]:
        """Run step ``t`` on a state and an input given by their leaves: ``(h_{t+1}, its leaves)``."""
        h = leaves[0] if self.single else _unflatten(self.state_skeleton, leaves)
        if u is None:
            h1 = self.cell(h)
        else:
            h1 = self.cell(h, u[0] if self.input_skeleton is None else _unflatten(self.input_skeleton, u))
        if self.single and isinstance(h1, torch.Tensor):  # the common case, checked cheaply
            return h1, [h1]
        new = _tree.leaves(h1)
        if len(new) != self.num_state or _tree.tree_map(lambda _: None, h1) != self.state_skeleton:
            raise StepError(
                f"cell must return a state of h0's structure {_describe(self.state_skeleton)}, "
                f"got {type(h1).__name__} at step {t}"
            )
        return h1, new

    def outputs_of(self, h1: Any) -> list[Tensor]:
        assert self.output is not None
        y = self.output(h1)
        if isinstance(y, torch.Tensor) and self.output_skeleton is not _UNKNOWN:
            return [y]
        leaves, skeleton = _flatten(y, "output(h)")
        if self.output_skeleton is _UNKNOWN:
            self.output_skeleton = skeleton
        return leaves

    def count(self, forward: int = 0, vjp: int = 0, stats: Stats | None = None) -> None:
        if self.tally is not None:
            self.tally.forward_steps += forward
            self.tally.vjp_steps += vjp
            if stats is not None:
                self.tally.stats = stats


class _Paused:
    """A walk stopped at ``(n, h_n)`` between the forward and the backward pass; resumable once."""

    def __init__(self, pairs: Walk, store: _SavedStore, counted: int) -> None:
        self.pairs: Walk | None = pairs
        self.store = store
        self.counted = counted  # engine calls already added to the tally


class _Outputs:
    """The outputs ``y_t``, written once each, as the first sweep passes ``h_{t+1}``, into one tensor per leaf.

    The first sweep computes every step for the first time in order
    (states only come from ``x_0`` forward), so a counter says which step
    is next. The ``n`` outputs go into tensors allocated once, at the first
    step, rather than ``n`` small tensors stacked at the end: small
    allocations interleaved with the states' scattered the heap, and peak RSS
    grew far beyond the bytes saved (docs/autodiff.md, "Outputs").
    """

    def __init__(self, spec: _Spec) -> None:
        self.spec = spec
        self.next = 0  # the step whose output is recorded next; -1 once recording is over
        self.buffers: list[Tensor] = []
        self.first: list[Tensor] = []  # y_0's leaves, for the check a plain loop makes on its first step

    def record(self, t: int, h1: Any) -> bool:
        """Record ``y_t`` if it is the next to record; whether it was."""
        if t != self.next:
            return False
        leaves = self.spec.outputs_of(h1)
        if not t:
            self.first = leaves
            nbytes = sum(leaf.nbytes for leaf in leaves) * self.spec.n
            _limits.check_fits("steps", nbytes, f"recording the {self.spec.n} outputs")
            self.buffers = [leaf.new_empty((self.spec.n, *leaf.shape)) for leaf in leaves]
        for buffer, leaf in zip(self.buffers, leaves, strict=True):
            if leaf.shape != buffer.shape[1:] or leaf.dtype != buffer.dtype:
                raise StepError(
                    f"output must return tensors of the same shape and dtype at every step: y_0 has "
                    f"{[(tuple(b.shape[1:]), b.dtype) for b in self.buffers]}, y_{t} has "
                    f"{[(tuple(x.shape), x.dtype) for x in leaves]}"
                )
            with torch.no_grad():
                buffer[t].copy_(leaf)
        self.next = t + 1
        return True

    def finish(self) -> list[Tensor]:
        """The outputs, stacked along a new first dimension; recording stops."""
        assert self.next == self.spec.n  # the first sweep passes every state before x_n is out
        self.next, self.first = -1, []
        buffers, self.buffers = self.buffers, []
        return buffers


def _step_function(spec: _Spec, inputs: list[Tensor] | None, outputs: _Outputs | None, ambient: Ambient) -> Any:
    """The engine's step ``(carry, t) -> carry``, recording the outputs ``y_t`` if asked.

    A step resumed from a state other than the one just computed first gets
    that state's generators and buffers back (:meth:`Ambient.resume`), and
    runs under the caller's autocast. Where those matter (a step draws random
    numbers, or a module it calls has buffers), a recomputed step runs
    ``output`` too, as the first sweep did, so that what ``output`` draws or
    updates is replayed in order. ``x_{n-1}`` and ``x_n`` keep their
    snapshots: the engine holds them outside the store (``x_{n-1}`` is
    reversed after ``x_n`` is made from it).
    """
    last = spec.n - 1
    params = spec.params

    def step(carry: Carry, t: int) -> Carry:
        if t == last:
            ambient.keep(carry)
        ambient.resume(carry)
        leaves = carry.leaves
        versions = [leaf._version for leaf in (*leaves, *params)]
        # No graph for any step here, also when the walk advances inside the backward pass.
        with torch.no_grad(), ambient.autocast_context():
            h1, new = spec.call(leaves, None if inputs is None else [v[t] for v in inputs], t)
            if outputs is not None and outputs.record(t, h1):
                pass
            elif spec.output is not None and ambient.active:
                spec.output(h1)  # what it draws or updates is part of the step: recomputed steps replay it too
        if versions != [leaf._version for leaf in (*leaves, *params)]:
            _raise_in_place(spec, leaves, versions, t)
        result = Carry(tuple(new))
        ambient.current = result
        if t == last:
            ambient.keep(result)
        return result

    return step


def _raise_in_place(spec: _Spec, leaves: tuple[Tensor, ...], versions: list[int], t: int) -> None:
    if [leaf._version for leaf in leaves] != versions[: len(leaves)]:
        raise StepError(
            f"the cell wrote into its argument h in place at step {t} (an in-place operation such as h.mul_() "
            f"or h[...] = ...): h is a checkpoint the backward pass restarts from, or h0 itself; "
            f"compute a new tensor instead (h = h * a rather than h.mul_(a))"
        )
    raise StepError(
        f"the cell modified a parameter in place at step {t}: recomputed steps would see other parameters "
        f"than the first sweep, and the gradient would be wrong; parameters must stay constant during unroll"
    )


class _Unroll(torch.autograd.Function):  # type: ignore[misc,unused-ignore]  # Any where torch is not type-checked
    @staticmethod
    def forward(ctx: Any, spec: _Spec, *tensors: Tensor) -> tuple[Tensor, ...]:
        k, m = spec.num_state, spec.num_inputs
        h0, inputs = list(tensors[:k]), list(tensors[k : k + m])
        ambient = Ambient(spec.preserve_rng_state, tensors)
        ambient.enter_phase()
        outputs = _Outputs(spec) if spec.output is not None else None
        step = _step_function(spec, inputs if spec.has_inputs else None, outputs, ambient)
        store = _SavedStore(k, ambient)
        start = Carry(tuple(h0), ambient.start)
        disk = _DiskStore(spec.disk, ambient)
        pairs = walk(Recurrence(step, indexed=True), start, spec.n, spec.strategy, store=store, disk=disk)
        try:
            with ambient.discovering():  # the buffers of the modules the cell calls
                _, final = next(pairs)  # the forward sweep: (n, h_n) comes first
            if ambient.current is not final:  # the generators and buffers as the plain loop leaves them
                ambient.restore(final.snapshot)
            ambient.end_forward()
        except BaseException:
            pairs.close()
            raise
        stats = pairs.stats
        spec.count(forward=stats.forward_steps, stats=stats)
        ctx.spec = spec
        ctx.ambient = ambient
        ctx.paused = _Paused(pairs, store, stats.forward_steps)
        # h0, the inputs and the parameters are saved for a replay (a second backward), and so that autograd
        # checks none of them is modified in place before the backward pass; the checkpoints so that autograd,
        # and its saved-tensor hooks, hold them.
        ctx.save_for_backward(*tensors, *store.seal())
        ys = outputs.finish() if outputs is not None else []
        # Return aliases, not the tensors themselves: the paused walk still
        # references h_n, and h_n's grad_fn would reference the walk (a cycle
        # only the garbage collector could free, keeping every checkpoint alive).
        return (*(leaf.detach() for leaf in final.leaves), *ys)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():  # create_graph=True: autograd runs the backward pass with grad mode on
            raise StepError(
                "revseq.torch.unroll cannot be differentiated twice: the backward pass was asked for a graph "
                "(create_graph=True, as for a gradient penalty or a Hessian-vector product), but its gradient "
                "would miss how each recomputed state depends on the parameters; compute higher derivatives "
                "through the plain loop, or torch.utils.checkpoint, for this part"
            )
        spec: _Spec = ctx.spec
        ambient: Ambient = ctx.ambient
        saved = ctx.saved_tensors  # raises PyTorch's own error on a second backward without retain_graph
        k, m, p = spec.num_state, spec.num_inputs, len(spec.params)
        h0, inputs = saved[:k], list(saved[k : k + m])
        paused: _Paused = ctx.paused
        pairs, counted = paused.pairs, paused.counted
        if pairs is None:
            # A second backward (retain_graph=True): the first one consumed the
            # walk, so replay it from h0 with a fresh store; the same cost again.
            step = _step_function(spec, inputs if spec.has_inputs else None, None, ambient)
            start = Carry(tuple(h0), ambient.start)
            store, disk = _SavedStore(k, ambient), _DiskStore(spec.disk, ambient)
            pairs = walk(Recurrence(step, indexed=True), start, spec.n, spec.strategy, store=store, disk=disk)
            counted = 0
        else:
            paused.pairs = None
            paused.store.unseal(saved[k + m + p :])
        # Like torch.utils.checkpoint, the backward pass leaves the generators and buffers as it found them.
        outer = ambient.capture() if ambient.active else None
        ambient.current = None
        ambient.enter_phase()
        sweep = _AdjointSweep(spec, ambient, inputs, ctx.needs_input_grad[1:], grads)
        try:
            with pairs:
                for t, carry in pairs:
                    if t < spec.n:  # (n, h_n) comes first on a replay: its adjoint is the incoming gradient
                        sweep.step(t, carry)
                spec.count(forward=pairs.stats.forward_steps - counted, stats=pairs.stats)
        finally:
            if outer is not None:
                ambient.restore(outer)
            ambient.current = None
        return (None, *sweep.gradients())


class _AdjointSweep:
    """One backward pass: the VJP of each step by autograd, at ``h_t`` for ``t = n-1 .. 0``, accumulated."""

    def __init__(
        self, spec: _Spec, ambient: Ambient, inputs: list[Tensor], needs: tuple[bool, ...], grads: tuple[Tensor, ...]
    ) -> None:
        k, m = spec.num_state, spec.num_inputs
        self.spec = spec
        self.ambient = ambient
        self.inputs = inputs
        self.need_h0, self.need_u, self.need_p = needs[:k], needs[k : k + m], needs[k + m :]
        self.adjoint: list[Tensor] = list(grads[:k])  # d loss / d h_{t+1}; h_n's is the incoming gradient
        self.g_outputs = grads[k:]  # d loss / d y_t, stacked
        self.g_inputs = [torch.zeros_like(u) if need else None for u, need in zip(inputs, self.need_u, strict=True)]
        self.wanted = [p for p, need in zip(spec.params, self.need_p, strict=True) if need]
        self.g_params: list[Tensor | None] = [None] * len(self.wanted)
        self.sum_dtypes: list[torch.dtype | None] = [None] * len(self.wanted)
        self.checked = False

    def step(self, t: int, carry: Carry) -> None:
        spec, ambient = self.spec, self.ambient
        if carry is ambient.current:
            ambient.keep(carry)  # the re-run below moves the generators on: keep what x_t saw
        else:
            ambient.resume(carry)  # x_t's generators and buffers, as the first sweep had them
        need_x = t > 0 or any(self.need_h0)
        x = [leaf.detach().requires_grad_(need_x) for leaf in carry.leaves]
        u = None
        if spec.has_inputs:
            u = [
                v[t].detach().requires_grad_() if need else v[t]
                for v, need in zip(self.inputs, self.need_u, strict=True)
            ]
        # The step, re-run with gradients: its graph lives until the grad below.
        with torch.enable_grad(), ambient.autocast_context():
            h1, outs = spec.call(x, u, t)
            if spec.output is not None:
                outs = outs + spec.outputs_of(h1)
        ambient.current = None  # the re-run drew from the generators and updated the buffers
        spec.count(vjp=1)
        cotangents = list(self.adjoint)
        if spec.output is not None:
            cotangents += [g[t] for g in self.g_outputs]
        if not self.checked:
            parents = _check_captured(outs, {id(v) for v in (*x, *(u or ()), *spec.params)})
            # Where autocast casts a parameter (and caches the cast: one cast for the whole loop), plain
            # autograd sums its per-step gradients in the cast's precision: so does this sweep, to agree.
            self.sum_dtypes = [
                ambient.cached_cast_dtype(p) if parents.get(id(p)) == {"ToCopyBackward0"} else None for p in self.wanted
            ]
            self.checked = True
        u_wanted = [] if u is None else [v for v, need in zip(u, self.need_u, strict=True) if need]
        targets = (x if need_x else []) + u_wanted + self.wanted
        live = [(o, c) for o, c in zip(outs, cotangents, strict=True) if o.requires_grad]
        found: tuple[Tensor | None, ...] = (None,) * len(targets)
        if live and targets:
            found = torch.autograd.grad([o for o, _ in live], targets, [c for _, c in live], allow_unused=True)
        if need_x:
            self.adjoint = [torch.zeros_like(v) if g is None else g for v, g in zip(x, found[: len(x)], strict=True)]
        found = found[len(x) if need_x else 0 :]
        slots = iter(found[: len(u_wanted)])
        for g_u, need in zip(self.g_inputs, self.need_u, strict=True):
            g = next(slots) if need else None
            if g_u is not None and g is not None:
                g_u[t] = g
        for i, g in enumerate(found[len(u_wanted) :]):
            if g is not None:
                total, dtype = self.g_params[i], self.sum_dtypes[i]
                if dtype is not None:
                    g = g.to(dtype)  # exact: the gradient came through a cast from this precision
                self.g_params[i] = g if total is None else total + g  # not in place: g may alias a cotangent

    def gradients(self) -> list[Tensor | None]:
        """The gradients for (h0 leaves, input leaves, params), None where none was asked for."""
        g_h0: list[Tensor | None] = [g if need else None for g, need in zip(self.adjoint, self.need_h0, strict=True)]
        wanted = iter(zip(self.wanted, self.g_params, strict=True))
        g_p: list[Tensor | None] = []
        for need in self.need_p:
            if need:
                p, g = next(wanted)
                g_p.append(torch.zeros_like(p) if g is None else g.to(p.dtype))
            else:
                g_p.append(None)
        return [*g_h0, *self.g_inputs, *g_p]


def _check_captured(outs: list[Tensor], allowed: set[int]) -> dict[int, set[str]]:
    """Raise if the step's graph reaches a tensor needing grad that unroll was not given.

    Its gradient would silently be lost: autograd only routes gradients to
    the tensors passed to the Function. One graph walk, on the first step.
    Returns, for each leaf reached (by ``id``), the kinds of the nodes whose
    gradients flow into it (``{"ToCopyBackward0"}`` where autocast casts it).
    """
    seen: set[Any] = set()
    stack: list[Any] = [o.grad_fn for o in outs if o.grad_fn is not None]
    foreign = [o for o in outs if o.grad_fn is None and o.requires_grad and id(o) not in allowed]
    parents: dict[int, set[str]] = {}
    while stack and not foreign:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # AccumulateGrad: a leaf tensor
        if variable is not None and id(variable) not in allowed:
            foreign.append(variable)
        for next_node, _ in node.next_functions:
            leaf = getattr(next_node, "variable", None)
            if leaf is not None:
                parents.setdefault(id(leaf), set()).add(type(node).__name__)
            stack.append(next_node)
    if foreign:
        leaf = foreign[0]
        raise ParameterError(
            f"the cell uses a tensor that requires grad but was not passed to unroll "
            f"(shape {tuple(leaf.shape)}, dtype {leaf.dtype}); its gradient would be lost: "
            f"pass it in params=[...] (an nn.Module cell's own parameters are found by default), or detach it"
        )
    return parents


def _plain(spec: _Spec, h0: list[Tensor], inputs: list[Tensor]) -> list[Tensor]:
    """The forward pass when no gradient is wanted: the plain loop, n calls, no checkpoints."""
    has_inputs = spec.has_inputs
    outputs = _Outputs(spec) if spec.output is not None else None
    state: list[Tensor] = h0
    grad_mode = torch.is_grad_enabled()
    for t in range(spec.n):
        # The first step runs in the caller's grad mode, so that a cell capturing
        # a tensor that needs grad is caught rather than silently cut off.
        with torch.set_grad_enabled(grad_mode and not t):
            h1, state = spec.call(state, [v[t] for v in inputs] if has_inputs else None, t)
            if outputs is not None:
                outputs.record(t, h1)
        if grad_mode and not t:
            _check_captured(state + (outputs.first if outputs is not None else []), set())
    spec.count(forward=spec.n)
    return [*state, *(outputs.finish() if outputs is not None else [])]


def _refuse_functorch() -> None:
    """Refuse to run under ``torch.func`` transforms, which would see neither the checkpoints nor the gradients.

    Under ``vmap`` the tensors are batched wrappers whose ``requires_grad``
    autograd hides, so a weight the cell captures without ``params=`` would
    lose its gradient silently; ``torch.func.grad`` would need a functional
    backward pass that the schedule's stateful walk is not.
    """
    if torch._C._functorch.peek_interpreter_stack() is not None:
        raise ParameterError(
            "revseq.torch.unroll cannot run under torch.func transforms (vmap, grad, jacrev, jvp, ...): "
            "call it outside them; for vmap, give h0 and the inputs a batch dimension (the cell sees a batch), "
            "and for torch.func.grad use torch.autograd.grad or .backward() on unroll's result"
        )


def _parameters(module: Any) -> list[Tensor]:
    return list(module.parameters()) if isinstance(module, torch.nn.Module) else []


def unroll(
    cell: Callable[..., Any],
    h0: Any,
    inputs: Any = None,
    *,
    steps: int | None = None,
    strategy: ReversalStrategy | None = None,
    output: Callable[[Any], Any] | None = None,
    params: Iterable[Tensor] | None = None,
    tally: Tally | None = None,
    preserve_rng_state: bool = True,
    disk: str | os.PathLike[str] | None = None,
) -> Any:
    """Run ``h_{t+1} = cell(h_t, u_t)`` for ``t < n`` and return ``h_n`` (and the outputs), differentiably.

    The backward pass follows ``strategy``'s schedule: the forward pass keeps
    only its checkpoints (held by autograd as saved tensors), and each step
    is re-run with gradients enabled when its adjoint is needed. Gradients
    reach ``h0``, ``inputs`` and ``params`` exactly as through the unrolled
    loop. A recomputed step reproduces the first one: random numbers
    (dropout in training mode) are replayed, the buffers of the modules the
    cell calls (``BatchNorm``'s running statistics) are put back before
    each recomputation and end as the plain loop leaves them, and the steps
    run under the autocast state of the call. A cell writing into its
    argument ``h`` or into a parameter in place is refused.

    Parameters
    ----------
    cell:
        ``cell(h, u_t) -> h_next``, or ``cell(h) -> h_next`` without inputs.
        ``h`` has ``h0``'s structure: a tensor, or a tuple, list or dict of
        tensors (floating point). An ``nn.Module`` is called as it is; note
        that ``nn.GRUCell`` takes ``(input, hidden)``, so wrap it:
        ``lambda h, u: gru(u, h)`` with ``params=gru.parameters()``.
    h0:
        The initial state.
    inputs:
        Per-step inputs: a tensor (or tree of tensors) whose first dimension
        is the number of steps ``n``; step ``t`` gets ``inputs[t]``.
    steps:
        ``n``, required without inputs (and checked against them otherwise).
    strategy:
        A :class:`revseq.ReversalStrategy`; default :data:`revseq.DEFAULT_STRATEGY`.
    output:
        ``output(h_{t+1}) -> y_t``: if given, ``unroll`` returns
        ``(h_n, ys)`` with the ``y_t`` stacked along a new first dimension
        (``n`` of them; a tensor or a tree of tensors). Keep them small
        (a scalar loss term, a few logits): they are all returned, so they
        cost ``n`` times their size, whatever the strategy.
    params:
        The tensors the cell (or ``output``) uses that should get a
        gradient, besides the parameters of ``cell`` and ``output`` when
        they are ``nn.Module``s, which are always included. A tensor needing
        grad that the cell uses but ``unroll`` was not given raises an
        error (in the backward pass) rather than losing its gradient.
    tally:
        A :class:`Tally` to count the cell's calls into.
    preserve_rng_state:
        Replay the random number generators (CPU, and the accelerator the
        tensors are on) for every recomputed step, as
        ``torch.utils.checkpoint`` does for a segment: each checkpoint keeps
        the generators' state of its step (5 KB on the CPU; shared while no
        random number is drawn). With ``False``, a cell that draws random
        numbers is refused (``StepError``) at the end of the forward pass.

    Returns
    -------
    ``h_n``, or ``(h_n, ys)`` when ``output`` is given.

    Notes
    -----
    Without gradients (``torch.no_grad()``, or no tensor requiring grad) the
    plain loop runs: ``n`` calls, no checkpoints. A second backward pass
    (``retain_graph=True``) replays the schedule from ``h0``; without
    ``retain_graph`` PyTorch raises its usual "backward through the graph a
    second time" error. The backward pass itself is not differentiable:
    ``create_graph=True`` (a gradient penalty, ``torch.autograd.functional.hessian``)
    raises ``StepError``, and so does calling ``unroll`` under a
    ``torch.func`` transform (``ParameterError``; see docs/autodiff.md).
    """
    _refuse_functorch()
    h0_leaves, state_skeleton = _flatten(h0, "h0")
    for leaf in h0_leaves:
        if not (leaf.is_floating_point() or leaf.is_complex()):
            raise ParameterError(f"h0 must hold floating-point tensors, got one of dtype {leaf.dtype}")
    if inputs is None:
        if steps is None:
            raise ParameterError("steps must be given when there are no inputs: unroll(cell, h0, steps=n)")
        n = check_int("steps", steps, 1)
        input_leaves: list[Tensor] = []
        input_skeleton = None
    else:
        input_leaves, input_skeleton = _flatten(inputs, "inputs")
        lengths = {int(leaf.shape[0]) if leaf.dim() else 0 for leaf in input_leaves}
        if len(lengths) != 1 or 0 in lengths:
            raise ParameterError(
                f"inputs must have a first dimension of length n >= 1 (one slice per step), shared by every leaf, "
                f"got shapes {[tuple(leaf.shape) for leaf in input_leaves]}"
            )
        n = lengths.pop()
        if steps is not None and check_int("steps", steps, 1) != n:
            raise ParameterError(f"steps must equal the inputs' first dimension {n}, got {steps}")
    found = _parameters(cell) + _parameters(output)
    for p in () if params is None else params:
        if not isinstance(p, torch.Tensor):
            raise ParameterError(f"params must be tensors, got {p!r} ({type(p).__name__})")
        found.append(p)
    unique = tuple({id(p): p for p in found}.values())
    if output is not None and not callable(output):
        raise ParameterError(f"output must be callable or None, got {output!r}")
    if tally is not None and not isinstance(tally, Tally):
        raise ParameterError(f"tally must be a revseq.torch.Tally, got {tally!r}")
    spec = _Spec(
        cell=cell,
        output=output,
        strategy=strategy_or_default(strategy),
        n=n,
        state_skeleton=state_skeleton,
        has_inputs=inputs is not None,
        input_skeleton=input_skeleton,
        num_state=len(h0_leaves),
        num_inputs=len(input_leaves),
        params=unique,
        tally=tally,
        preserve_rng_state=check_bool("preserve_rng_state", preserve_rng_state),
        disk=check_directory("disk", disk),
    )
    tensors = (*h0_leaves, *input_leaves, *unique)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        flat = _Unroll.apply(spec, *tensors)  # type: ignore[no-untyped-call,unused-ignore]
    else:
        flat = _plain(spec, h0_leaves, input_leaves)
    k = spec.num_state
    h_n = _unflatten(state_skeleton, flat[:k])
    if output is None:
        return h_n
    return h_n, _unflatten(spec.output_skeleton, flat[k:])


from revseq.torch._module import Recurrent  # noqa: E402  (it calls unroll)
