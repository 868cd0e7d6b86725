"""PyTorch adapter: backpropagate through ``h_{t+1} = cell(h_t, u_t)`` under a revseq schedule.

PyTorch differentiates the steps; revseq decides which states to keep. The
forward pass runs the cell without building a graph, holding only
checkpoints; the backward pass walks the states back, re-runs the cell with
gradients enabled from them and asks autograd for the vector-Jacobian
products. Gradients reach ``h0``, the inputs and every parameter of the cell
exactly as they would through the unrolled loop. With a strategy, each step
is re-run and differentiated alone:

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

By default, segments of steps are re-run together, their graphs ("tapes")
kept until one backward call per segment, as planned from the measured
sizes of a state and of a step's graph: here 9 segments of 11 steps after
the first, 9 states and 11 steps' graphs held at most, and each step made
about twice (the first step's graph, measured, is dropped and it is re-run).

>>> tally = rt.Tally()
>>> h = rt.unroll(lambda h, u_t: cell(u_t, h), torch.zeros(2, 8), u, params=cell.parameters(), tally=tally)
>>> h.sum().backward()
>>> tally.forward_steps, tally.vjp_steps, (tally.plan.segment, tally.plan.checkpoints)
(88, 101, (11, 9))

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

from revseq import _limits, _tapes, _tree
from revseq._adapter import Tally, strategy_or_default
from revseq._tapes import TapePlan
from revseq._validate import check_bool, check_int
from revseq.engine import DEFAULT_STRATEGY, Stats, Walk, walk
from revseq.errors import ParameterError, StepError
from revseq.recurrence import Recurrence
from revseq.strategies.base import ReversalStrategy
from revseq.torch._ambient import Ambient, Carry, Fingerprints

__all__ = ["HostMemory", "Recurrent", "Tally", "TapePlan", "unroll"]


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


@attrs.frozen
class HostMemory:
    """A :class:`revseq.MultistageCheckpointing` strategy's disk level in host memory: ``unroll(disk=HostMemory())``.

    For tensors on an accelerator: the schedule's "disk" checkpoints (in the
    forward and in the backward pass) are copied to host memory and back to
    the device when read, so the device holds only the memory level. The
    copies go into page-locked ("pinned") buffers, without waiting for the
    device (``non_blocking``), on the current stream, which orders them with
    the steps around them. Tensors on the CPU are copied in RAM (the level
    then only moves states from the memory budget to another count).

    pin_memory:
        Pin the host buffers of accelerator tensors (default: True). Without
        pinning, copies to and from the device wait for it.
    """

    pin_memory: bool = attrs.field(default=True, validator=lambda _, __, v: check_bool("pin_memory", v))


class _HostStore:
    """The disk level in host memory (:class:`HostMemory`): each state's tensors copied there, and back when read."""

    __slots__ = ("_ambient", "_data", "_pin", "bytes_read", "bytes_written", "nbytes")

    def __init__(self, level: HostMemory, ambient: Ambient) -> None:
        self._ambient = ambient
        self._pin = level.pin_memory
        self._data: dict[int, tuple[tuple[Tensor, ...], tuple[torch.device, ...], Any]] = {}
        self.nbytes = self.bytes_written = self.bytes_read = 0

    def _host(self, leaf: Tensor) -> Tensor:
        leaf = leaf.detach()
        if leaf.device.type == "cpu":
            return leaf.clone()
        copy = torch.empty(leaf.shape, dtype=leaf.dtype, pin_memory=self._pin)
        return copy.copy_(leaf, non_blocking=self._pin)

    def put(self, key: int, state: Carry) -> None:
        self._ambient.keep(state)
        leaves = tuple(self._host(leaf) for leaf in state.leaves)
        size = sum(leaf.nbytes for leaf in leaves)
        self._data[key] = (leaves, tuple(leaf.device for leaf in state.leaves), state.snapshot)
        self.nbytes += size
        self.bytes_written += size

    def get(self, key: int) -> Carry:
        leaves, devices, snapshot = self._data[key]
        self.bytes_read += sum(leaf.nbytes for leaf in leaves)
        back = tuple(
            leaf if device.type == "cpu" else leaf.to(device, non_blocking=self._pin)
            for leaf, device in zip(leaves, devices, strict=True)
        )
        return Carry(back, snapshot)

    def delete(self, key: int) -> None:
        leaves, _, _ = self._data.pop(key)
        self.nbytes -= sum(leaf.nbytes for leaf in leaves)

    def clear(self) -> None:
        self._data.clear()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._data)

    @property
    def copies(self) -> bool:
        return True


def _check_disk(disk: Any) -> Any:
    if disk is None or isinstance(disk, (str, os.PathLike, HostMemory)):
        return disk
    raise ParameterError(
        f"disk must be a directory (a str or os.PathLike) under which a private one is made for the checkpoints, "
        f"revseq.torch.HostMemory() for host memory, or None, got {disk!r} ({type(disk).__name__})"
    )


def _disk_level(disk: Any, ambient: Ambient) -> _DiskStore | _HostStore:
    """The store of the disk level: host memory (:class:`HostMemory`), or files under a directory."""
    return _HostStore(disk, ambient) if isinstance(disk, HostMemory) else _DiskStore(disk, ambient)


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
    strategy: ReversalStrategy | None  # None: planned with tapes
    n: int
    state_skeleton: Any
    has_inputs: bool
    input_skeleton: Any
    num_state: int
    num_inputs: int
    params: tuple[Tensor, ...]
    tally: Tally | None
    preserve_rng_state: bool
    disk: Any  # the disk level: a directory (None: the system's temporary directory), or HostMemory
    tape: int | None = None  # steps per taped segment, if given
    max_bytes: int | None = None  # the budget of a plan with tapes, if given
    output_skeleton: Any = _UNKNOWN  # known after the first call of `output`

    @property
    def single(self) -> bool:
        return _tree.is_leaf(self.state_skeleton)

    @property
    def tapes(self) -> bool:
        """Whether segments of steps are re-run together, their graphs kept (else each step alone)."""
        return self.strategy is None or self.tape is not None

    def plan_tapes(self, state_bytes: int, tape_bytes: int) -> tuple[int, bool, ReversalStrategy]:
        """``(segment length, keep the first step's graph, the walk's strategy)``, from the measured sizes."""
        if self.tape is not None and self.max_bytes is None:  # segments of the user's length, reversed by
            strategy = self.strategy if self.strategy is not None else DEFAULT_STRATEGY  # the user's strategy
            return min(self.tape, max(1, self.n - 1)), True, strategy
        budget = self.max_bytes
        if budget is None:
            budget = _tapes.default_budget(self.n, state_bytes, tape_bytes)
        chosen = _tapes.plan(self.n, state_bytes, tape_bytes, budget, segment=self.tape)
        if self.tally is not None:
            self.tally.plan = chosen
        return chosen.segment, chosen.keep_first, chosen.strategy

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
    """What the backward pass resumes: a walk stopped at the final state, and the graphs kept from the forward pass.

    The walk resumes once; a second backward (``retain_graph=True``)
    replays it from ``start`` with a fresh store, and re-runs the steps the
    kept graphs covered.
    """

    def __init__(
        self,
        pairs: Walk | None,
        store: _SavedStore,
        start: Carry,
        layout: _Layout,
        strategy: ReversalStrategy,
        head: _Segment | None,
        tail: list[_Segment],
    ) -> None:
        self.pairs = pairs
        self.store = store
        self.start = start  # the walk's first state: h_0, or h_1 when the first step is taped
        self.layout = layout
        self.strategy = strategy  # the walk's: over steps, or over segments
        self.head = head  # the first step's graph, from the forward pass (a taped plan that keeps it)
        self.tail = tail  # the last segment's graph, from the forward pass (a taped plan)


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
        self.layouts: list[tuple[torch.Size, torch.dtype]] = []  # each leaf's shape and dtype, as at y_0
        self.first: list[Tensor] = []  # y_0's leaves, for the check a plain loop makes on its first step

    def record(self, t: int, h1: Any) -> list[Tensor] | None:
        """Record ``y_t`` if it is the next to record: its leaves (None if it was not recorded)."""
        if t != self.next:
            return None
        leaves = self.spec.outputs_of(h1)
        if not t:
            self.first = leaves
            nbytes = sum(leaf.nbytes for leaf in leaves) * self.spec.n
            _limits.check_fits("steps", nbytes, f"recording the {self.spec.n} outputs")
            self.buffers = [leaf.new_empty((self.spec.n, *leaf.shape)) for leaf in leaves]
            self.layouts = [(leaf.shape, leaf.dtype) for leaf in leaves]
        layouts = self.layouts
        if len(leaves) != len(layouts) or any(
            leaf.shape != shape or leaf.dtype != dtype for leaf, (shape, dtype) in zip(leaves, layouts, strict=True)
        ):
            raise StepError(
                f"output must return tensors of the same shape and dtype at every step: y_0 has "
                f"{[(tuple(shape), dtype) for shape, dtype in self.layouts]}, y_{t} has "
                f"{[(tuple(x.shape), x.dtype) for x in leaves]}"
            )
        for buffer, leaf in zip(self.buffers, leaves, strict=True):
            buffer[t].copy_(leaf.detach())  # detached: no graph through the buffer, in or out of grad mode
        self.next = t + 1
        return leaves

    def finish(self) -> list[Tensor]:
        """The outputs, stacked along a new first dimension; recording stops."""
        assert self.next == self.spec.n  # the first sweep passes every state before x_n is out
        self.next, self.first = -1, []
        buffers, self.buffers = self.buffers, []
        return buffers


def _step_function(
    spec: _Spec,
    inputs: list[Tensor] | None,
    outputs: _Outputs | None,
    ambient: Ambient,
    layout: _Layout,
    tail: list[_Segment] | None = None,
) -> Any:
    """The engine's step ``(carry, i) -> carry``: step ``i``, or segment ``i`` of ``layout``.

    Recording the outputs ``y_t`` if asked. A step resumed from a state
    other than the one just computed first gets that state's generators and
    buffers back (:meth:`Ambient.resume`), and runs under the caller's
    autocast. Where those matter (a step draws random numbers, or a module
    it calls has buffers), a recomputed step runs ``output`` too, as the
    first sweep did, so that what ``output`` draws or updates is replayed in
    order. The last segment's first state and the final state keep their
    snapshots: the engine holds them outside the store (the last segment is
    reversed after the final state is made from it). With ``tail``, the
    last segment runs with gradients and its graph goes to ``tail``, for
    the backward pass to start from.
    """
    last = layout.count - 1
    params = spec.params
    prints = ambient.prints

    def step(carry: Carry, i: int) -> Carry:
        if i == last:
            ambient.keep(carry)
        ambient.resume(carry)
        start, stop = layout.steps(i)
        if tail is not None and i == last:
            segment = _tape(spec, ambient, carry.leaves, inputs, start, stop, (True, layout.need_u), outputs)
            tail.append(segment)
            result = Carry(segment.final)
        else:
            state = carry.leaves
            seen: list[list[Tensor]] = []  # each state's fingerprint: recorded in the first sweep, else checked
            # No graph for any step here, also when the walk advances inside the backward pass.
            with torch.no_grad(), ambient.autocast_context():
                for t in range(start, stop):
                    versions = [leaf._version for leaf in (*state, *params)]
                    h1, new = spec.call(state, None if inputs is None else [v[t] for v in inputs], t)
                    recorded = None if outputs is None else outputs.record(t, h1)
                    if recorded is None and spec.output is not None and ambient.active:
                        spec.output(h1)  # what it draws or updates is part of the step: recomputed steps replay it
                    if versions != [leaf._version for leaf in (*state, *params)]:
                        _raise_in_place(spec, state, versions, t)
                    state = tuple(new)
                    seen.append(prints.of(t, state, () if recorded is None else recorded))
            prints.observe(start, seen)
            spec.count(forward=stop - start)
            result = Carry(state)
        ambient.current = result
        if i == last:
            ambient.keep(result)
        return result

    return step


@attrs.frozen
class _Layout:
    """Which steps the engine's step ``i`` makes: ``first + i * length`` up to ``length`` of them, before ``n``."""

    n: int
    first: int = 0
    length: int = 1
    need_u: tuple[bool, ...] = ()  # whether each input's gradient is wanted (for a segment taped in the forward pass)

    @property
    def count(self) -> int:
        return -(-(self.n - self.first) // self.length)

    def steps(self, i: int) -> tuple[int, int]:
        start = self.first + i * self.length
        return start, min(self.n, start + self.length)


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
        feed = inputs if spec.has_inputs else None
        need_u = tuple(ctx.needs_input_grad[1 + k : 1 + k + m])
        ambient = Ambient(spec.preserve_rng_state, tensors)
        ambient.prints = Fingerprints(spec.n)
        ambient.enter_phase()
        outputs = _Outputs(spec) if spec.output is not None else None
        store = _SavedStore(k, ambient)
        head: _Segment | None = None
        tail: list[_Segment] = []
        pairs: Walk | None = None
        try:
            with ambient.discovering():  # the buffers of the modules the cell calls
                if spec.tapes:
                    # The first step runs with gradients: autograd's saved-tensor hook measures its graph
                    # (for the plan), and the graph is kept for the backward pass if the plan keeps it.
                    meter = _Meter([*spec.params, *inputs])
                    with torch.autograd.graph.saved_tensors_hooks(meter.pack, _unpack):
                        head = _tape(
                            spec, ambient, h0, feed, 0, 1, (any(ctx.needs_input_grad[1 : 1 + k]), need_u), outputs
                        )
                    length, keep_first, strategy = spec.plan_tapes(
                        sum(int(leaf.nbytes) for leaf in h0), max(1, meter.nbytes)
                    )
                    layout = _Layout(spec.n, 1, length, need_u)
                    start = Carry(head.final)
                    ambient.current = start
                    if not keep_first:
                        head = None
                else:
                    assert spec.strategy is not None  # no tapes: the user's strategy, step by step
                    layout, strategy, start = _Layout(spec.n), spec.strategy, Carry(tuple(h0), ambient.start)
                final = start
                if layout.count:
                    step = _step_function(spec, feed, outputs, ambient, layout, tail if spec.tapes else None)
                    pairs = walk(
                        Recurrence(step, indexed=True),
                        start,
                        layout.count,
                        strategy,
                        store=store,
                        disk=_disk_level(spec.disk, ambient),
                    )
                    _, final = next(pairs)  # the forward sweep: (count, final state) comes first
            if ambient.current is not final:  # the generators and buffers as the plain loop leaves them
                ambient.restore(final.snapshot)
            ambient.end_forward()
        except BaseException:
            if pairs is not None:
                pairs.close()
            raise
        if pairs is not None:
            spec.count(stats=pairs.stats)
        ctx.spec = spec
        ctx.ambient = ambient
        ctx.paused = _Paused(pairs, store, start, layout, strategy, head, tail)
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
            return _backward_with_graph(ctx, grads)
        spec: _Spec = ctx.spec
        ambient: Ambient = ctx.ambient
        saved = ctx.saved_tensors  # raises PyTorch's own error on a second backward without retain_graph
        k, m, p = spec.num_state, spec.num_inputs, len(spec.params)
        h0, inputs = saved[:k], list(saved[k : k + m])
        feed = inputs if spec.has_inputs else None
        paused: _Paused = ctx.paused
        layout, pairs, tail = paused.layout, paused.pairs, paused.tail
        if pairs is None and layout.count:
            # A second backward (retain_graph=True): the first one consumed the
            # walk, so replay it with a fresh store; the same cost again.
            step = _step_function(spec, feed, None, ambient, layout, tail if spec.tapes else None)
            start = paused.start if spec.tapes else Carry(tuple(h0), ambient.start)
            store, disk = _SavedStore(k, ambient), _disk_level(spec.disk, ambient)
            pairs = walk(Recurrence(step, indexed=True), start, layout.count, paused.strategy, store=store, disk=disk)
        elif pairs is not None:
            paused.store.unseal(saved[k + m + p :])
        paused.pairs = None
        # Like torch.utils.checkpoint, the backward pass leaves the generators and buffers as it found them.
        outer = ambient.capture() if ambient.active else None
        ambient.current = None
        ambient.enter_phase()
        sweep = _AdjointSweep(spec, ambient, inputs, ctx.needs_input_grad[1:], grads)
        try:
            if pairs is not None:
                with pairs:
                    # The last segment's graph, from the first sweep, is applied before the walk moves on: the
                    # walk may recompute (and put buffers back) on its way to the last segment's first state.
                    applied = bool(tail)
                    if applied:
                        sweep.apply(tail.pop())
                    for i, carry in pairs:
                        if i == layout.count:  # (count, final state) comes first on a replay, after its first sweep
                            applied = bool(tail)
                            if applied:
                                sweep.apply(tail.pop())
                        elif not (applied and i == layout.count - 1):
                            sweep.apply(sweep.rerun(*layout.steps(i), carry))
                    spec.count(stats=pairs.stats)
            if spec.tapes:
                head, paused.head = paused.head, None
                sweep.apply(head if head is not None else sweep.rerun(0, 1, Carry(tuple(h0), ambient.start)))
        finally:
            tail.clear()
            if outer is not None:
                ambient.restore(outer)
            ambient.current = None
        ambient.prints.verify()  # every recomputed state was the first sweep's
        return (None, *sweep.gradients())


def _backward_with_graph(ctx: Any, grads: tuple[Tensor, ...]) -> tuple[Tensor | None, ...]:
    """The backward pass when its result must be differentiable (``create_graph=True``): the plain loop's.

    The checkpoints are detached from the parameters and from ``h0``, so
    a gradient made from them could not be differentiated again. This pass
    re-runs the ``n`` steps with gradients from ``h0`` itself, replaying the
    first sweep's random numbers on copies of the buffers
    (:meth:`Ambient.replaying`), and asks autograd for the gradient with
    ``create_graph=True``: the graph and the memory of the plain loop, for
    as long as the caller keeps the gradient's graph. One step is run first
    on detached copies, to refuse a captured tensor needing grad as the
    usual backward pass does. The paused walk and the graphs kept from the
    forward pass are left as they are, for a first-order backward pass
    (the loss's own term, beside a gradient penalty's).
    """
    spec: _Spec = ctx.spec
    ambient: Ambient = ctx.ambient
    saved = ctx.saved_tensors  # raises PyTorch's own error on a second backward without retain_graph
    k, m = spec.num_state, spec.num_inputs
    h0, inputs = list(saved[:k]), list(saved[k : k + m])
    feed = inputs if spec.has_inputs else None
    tensors = [*h0, *inputs, *spec.params]
    needs = ctx.needs_input_grad[1:]
    ambient.enter_phase()
    with ambient.replaying(ambient.start):
        probe = _tape(spec, ambient, h0, feed, 0, 1, (True, tuple(needs[k : k + m])))
        _check_captured(probe.outs, [*probe.x, *(probe.inputs or ()), *spec.params])
    del probe
    with ambient.replaying(ambient.start):
        state: Sequence[Tensor] = h0
        ys: list[list[Tensor]] = []
        states: list[tuple[Sequence[Tensor], Sequence[Tensor]]] = []
        with torch.enable_grad(), ambient.autocast_context():
            for t in range(spec.n):
                h1, state = spec.call(state, None if feed is None else [v[t] for v in feed], t)
                if spec.output is not None:
                    ys.append(spec.outputs_of(h1))
                states.append((state, ys[-1] if spec.output is not None else ()))
        spec.count(vjp=spec.n)
    prints = ambient.prints
    prints.observe(0, [prints.of(t, h, y) for t, (h, y) in enumerate(states)])
    del states
    prints.verify()
    outs = [*state, *(torch.stack(column) for column in zip(*ys, strict=True))]
    targets = [v for v, need in zip(tensors, needs, strict=True) if need]
    live = [(o, g) for o, g in zip(outs, grads, strict=True) if o.requires_grad]
    found: tuple[Tensor | None, ...] = (None,) * len(targets)
    if live and targets:
        found = torch.autograd.grad(
            [o for o, _ in live], targets, [g for _, g in live], create_graph=True, allow_unused=True
        )
    slots = iter(found)
    gradients: list[Tensor | None] = []
    for v, need in zip(tensors, needs, strict=True):
        g = next(slots) if need else None
        gradients.append(torch.zeros_like(v) if need and g is None else g)
    return (None, *gradients)


class _Meter:
    """A saved-tensor hook's pack that adds up the bytes of the storages autograd saves, each once.

    The parameters' and the inputs' storages are left out: they exist
    whatever is saved. What remains is what a step's graph adds.
    """

    def __init__(self, existing: Iterable[Tensor]) -> None:
        self.seen = {t.untyped_storage().data_ptr() for t in existing}
        self.nbytes = 0

    def pack(self, tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in self.seen:
            self.seen.add(key)
            self.nbytes += storage.nbytes()
        return tensor


def _unpack(tensor: Tensor) -> Tensor:
    return tensor


class _Segment:
    """Steps ``start .. stop-1`` run with gradients from one state: their graph, until :meth:`_AdjointSweep.apply`."""

    __slots__ = ("aliases", "final", "inputs", "outs", "start", "stop", "x")

    def __init__(
        self,
        start: int,
        stop: int,
        x: list[Tensor],
        inputs: list[Tensor] | None,
        outs: list[Tensor],
        aliases: list[Tensor | None] | None = None,
    ) -> None:
        self.start, self.stop = start, stop
        self.x = x  # the first state's leaves (requiring grad where its adjoint is wanted)
        self.inputs = inputs  # the segment's slices of the inputs, or None without inputs
        self.outs = outs  # the last state's leaves, then each step's output leaves, step by step
        self.final = tuple(leaf.detach() for leaf in outs[: len(x)])
        self.aliases = aliases  # per wanted parameter, the output its running gradient sum seeds (see apply)


def _tape(
    spec: _Spec,
    ambient: Ambient,
    leaves: Sequence[Tensor],
    inputs: list[Tensor] | None,
    start: int,
    stop: int,
    need: tuple[bool, tuple[bool, ...]],
    outputs: _Outputs | None = None,
    aliases: Callable[[int], list[Tensor | None]] | None = None,
) -> _Segment:
    """Run steps ``start .. stop-1`` from ``leaves`` with gradients enabled, keeping their graph.

    ``need`` says whether the first state's and the inputs' gradients are
    wanted. The generators and buffers must already be those of the first
    state; the steps run under the call's autocast, entered once for the
    segment (so autocast casts a weight once per segment, as the plain loop
    does once). ``outputs`` records the ``y_t`` the first sweep has not
    recorded yet; ``aliases(steps)``, called under the same autocast once
    the steps have run, makes the outputs that seed the parameters' running
    gradient sums (:meth:`_AdjointSweep.apply`).
    """
    need_x, need_u = need
    x = [leaf.detach().requires_grad_(need_x) for leaf in leaves]
    u = None
    if inputs is not None:
        u = [
            v[start:stop].detach().requires_grad_() if wanted else v[start:stop]
            for v, wanted in zip(inputs, need_u, strict=True)
        ]
    params = spec.params
    versions = [leaf._version for leaf in (*leaves, *params)]
    ys: list[Tensor] = []
    state: Sequence[Tensor] = x
    states: list[tuple[Sequence[Tensor], Sequence[Tensor]]] = []  # each step's state and outputs (for fingerprints)
    try:
        with torch.enable_grad(), ambient.autocast_context():
            for t in range(start, stop):
                h1, state = spec.call(state, None if u is None else [v[t - start] for v in u], t)
                if spec.output is not None:
                    recorded = None if outputs is None else outputs.record(t, h1)
                    y = spec.outputs_of(h1) if recorded is None else recorded
                    ys += y
                    states.append((state, y))
                else:
                    states.append((state, ()))
            seeds = None if aliases is None else aliases(stop - start)
    except RuntimeError as error:  # autograd refuses an in-place write into a leaf that requires grad
        if "leaf Variable that requires grad" not in str(error):
            raise
        _raise_in_place(spec, tuple(leaves), [-1] * len(leaves), start)
    if versions != [leaf._version for leaf in (*leaves, *params)]:
        _raise_in_place(spec, tuple(leaves), versions, start)
    prints = ambient.prints
    prints.observe(start, [prints.of(t, h, y) for t, (h, y) in enumerate(states, start)])
    ambient.current = None  # the steps drew from the generators and updated the buffers
    spec.count(vjp=stop - start)
    return _Segment(start, stop, x, u, [*state, *ys], seeds)


class _AdjointSweep:
    """One backward pass: the VJP of each step (or segment of steps) by autograd, from the last to the first."""

    def __init__(
        self, spec: _Spec, ambient: Ambient, inputs: list[Tensor], needs: tuple[bool, ...], grads: tuple[Tensor, ...]
    ) -> None:
        k, m = spec.num_state, spec.num_inputs
        self.spec = spec
        self.ambient = ambient
        self.inputs = inputs
        self.need_h0, self.need_u = needs[:k], tuple(needs[k : k + m])
        self.need_p = needs[k + m :]
        self.adjoint: list[Tensor] = list(grads[:k])  # d loss / d h_{t+1}; h_n's is the incoming gradient
        self.g_outputs = grads[k:]  # d loss / d y_t, stacked
        self.g_inputs = [torch.zeros_like(u) if need else None for u, need in zip(inputs, self.need_u, strict=True)]
        self.wanted = [p for p, need in zip(spec.params, self.need_p, strict=True) if need]
        self.g_params: list[Tensor | None] = [None] * len(self.wanted)
        self.sum_dtypes: list[torch.dtype | None] = [None] * len(self.wanted)
        self.checked = False

    def need(self, start: int) -> tuple[bool, tuple[bool, ...]]:
        """Whether a segment starting at ``start`` needs its first state's gradient, and the inputs'."""
        return (start > 0 or any(self.need_h0)), self.need_u

    def step(self, t: int, carry: Carry) -> None:
        """Re-run step ``t`` from ``h_t`` with gradients and apply its VJP."""
        self.apply(self.rerun(t, t + 1, carry))

    def rerun(self, start: int, stop: int, carry: Carry) -> _Segment:
        """Steps ``start .. stop-1`` from ``carry`` with gradients, after its generators and buffers are put back."""
        ambient = self.ambient
        if carry is ambient.current:
            ambient.keep(carry)  # the re-run below moves the generators on: keep what x_t saw
        else:
            ambient.resume(carry)  # x_t's generators and buffers, as the first sweep had them
        inputs = self.inputs if self.spec.has_inputs else None
        return _tape(self.spec, ambient, carry.leaves, inputs, start, stop, self.need(start), aliases=self.aliases)

    def aliases(self, steps: int) -> list[Tensor | None]:
        """For each wanted parameter with a running sum, an output whose gradient is that sum (see :meth:`apply`).

        Made after a segment's steps: autograd runs the latest node first,
        so the sum reaches the parameter (or the cast autocast made of it
        for the segment) before the segment's own terms, which autograd then
        adds one by one, latest step first: the additions the unrolled loop
        makes, in its order. A parameter that autocast casts (and caches) is
        seeded through the cast, as a product with the identity (exact, in
        the cast's precision), for segments of more than one step; a single
        step's gradient is added to the sum in that precision instead.
        """
        made: list[Tensor | None] = []
        for p, total, dtype in zip(self.wanted, self.g_params, self.sum_dtypes, strict=True):
            if total is None:
                made.append(None)
            elif dtype is None:
                made.append(p.view_as(p))
            elif steps > 1 and p.dim() in (1, 2):
                eye = torch.eye(p.shape[-1], dtype=dtype, device=p.device)
                made.append(torch.matmul(p, eye))  # autocast casts p, from its cache: the segment's cast
            else:
                made.append(None)
        return made

    def apply(self, segment: _Segment) -> None:
        """Propagate the adjoint through ``segment``'s graph and add its parameter gradients, then drop it."""
        spec = self.spec
        start, stop, x, u = segment.start, segment.stop, segment.x, segment.inputs
        outs = segment.outs
        cotangents = list(self.adjoint) + [g[t] for t in range(start, stop) for g in self.g_outputs]
        if not self.checked:
            parents = _check_captured(outs, [*x, *(u or ()), *spec.params])
            # Where autocast casts a parameter (and caches the cast: one cast for the whole loop), plain
            # autograd sums its per-step gradients in the cast's precision: so does this sweep, to agree.
            self.sum_dtypes = [
                self.ambient.cached_cast_dtype(p) if parents.get(id(p)) == {"ToCopyBackward0"} else None
                for p in self.wanted
            ]
            self.checked = True
        # A parameter's running sum goes in first, as the gradient of an alias made after the segment (see
        # aliases): the same additions as through the unrolled loop, in the same order.
        aliases = segment.aliases
        if aliases is None:  # a segment from the forward pass: its aliases are made now, but not through casts
            with torch.enable_grad():
                aliases = self.aliases(1)
        seeded: set[int] = set()
        for i, alias in enumerate(aliases):
            total = self.g_params[i]
            if alias is not None and total is not None:
                outs = [*outs, alias]
                cotangents.append(total.to(alias.dtype).view_as(alias))
                seeded.add(i)
        segment.aliases = None
        need_x, need_u = self.need(start)
        u_wanted = [] if u is None else [v for v, wanted in zip(u, need_u, strict=True) if wanted]
        targets = (x if need_x else []) + u_wanted + self.wanted
        live = [(o, c) for o, c in zip(outs, cotangents, strict=True) if o.requires_grad]
        found: tuple[Tensor | None, ...] = (None,) * len(targets)
        if live and targets:
            found = torch.autograd.grad([o for o, _ in live], targets, [c for _, c in live], allow_unused=True)
        segment.outs = []
        if need_x:
            self.adjoint = [torch.zeros_like(v) if g is None else g for v, g in zip(x, found[: len(x)], strict=True)]
        found = found[len(x) if need_x else 0 :]
        slots = iter(found[: len(u_wanted)])
        for g_u, wanted in zip(self.g_inputs, need_u, strict=True):
            g = next(slots) if wanted else None
            if g_u is not None and g is not None:
                g_u[start:stop] = g
        for i, g in enumerate(found[len(u_wanted) :]):
            if g is None:
                continue
            total, dtype = self.g_params[i], self.sum_dtypes[i]
            if dtype is not None:
                g = g.to(dtype)  # exact: the gradient came through a cast from this precision
            if total is not None and i not in seeded:
                g = total + g  # not in place: g may alias a cotangent
            self.g_params[i] = g  # seeded: the running sum plus this segment's terms

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


def _check_captured(outs: list[Tensor], given: Sequence[Tensor]) -> dict[int, set[str]]:
    """Raise if the step's graph reaches a tensor needing grad that unroll was not given.

    Its gradient would silently be lost: autograd only routes gradients to
    the tensors passed to the Function. One graph walk, on the first step.
    The walk stops at the ``given`` tensors: a leaf by identity, a tensor
    with a history (a parameter computed from others) at the output of the
    node that made it. Returns, for each leaf reached (by ``id``), the kinds
    of the nodes whose gradients flow into it (``{"ToCopyBackward0"}`` where
    autocast casts it).
    """
    allowed = {id(v) for v in given}
    made = {(v.grad_fn, v.output_nr) for v in given if v.grad_fn is not None}
    seen: set[Any] = set()
    stack: list[Any] = [o.grad_fn for o in outs if o.grad_fn is not None and (o.grad_fn, o.output_nr) not in made]
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
        for edge in node.next_functions:
            next_node = edge[0]
            leaf = getattr(next_node, "variable", None)
            if leaf is not None:
                parents.setdefault(id(leaf), set()).add(type(node).__name__)
            if edge not in made:
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
            _check_captured(state + (outputs.first if outputs is not None else []), [])
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
    disk: str | os.PathLike[str] | HostMemory | None = None,
    tape: int | None = None,
    max_bytes: int | None = None,
) -> Any:
    """Run ``h_{t+1} = cell(h_t, u_t)`` for ``t < n`` and return ``h_n`` (and the outputs), differentiably.

    The forward pass keeps only checkpoints (held by autograd as saved
    tensors); the backward pass re-runs steps with gradients enabled from
    them and asks autograd for their vector-Jacobian products. By default
    the steps are re-run in segments: a segment's steps run together and
    their graphs (tapes) are kept until one backward call through the whole
    segment, with checkpoints at segment starts, as planned from the sizes of
    a state and of one step's graph (measured on the first step, which runs
    with gradients: see ``tape`` and ``max_bytes``). Given a ``strategy``
    alone, its schedule is followed step by step, one re-run and one
    backward call per step. Gradients reach ``h0``, ``inputs`` and
    ``params`` exactly as through the unrolled loop (to the bit on the CPU:
    parameter gradients are summed in the loop's order). A recomputed step
    reproduces the first one: random numbers (dropout in training mode) are
    replayed, the buffers of the modules the cell calls (``BatchNorm``'s
    running statistics) are put back before each recomputation and end as
    the plain loop leaves them, and the steps run under the autocast state
    of the call. A cell writing into its argument ``h`` or into a parameter
    in place is refused.

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
        A :class:`revseq.ReversalStrategy`: alone, it reverses the ``n``
        steps one by one (``strategy.cost(n).forward_steps`` calls without
        gradients, then one re-run per step); with ``tape``, it reverses the
        segments. Default: a plan with tapes (``max_bytes``).
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

    disk:
        Where the disk level of a :class:`revseq.MultistageCheckpointing`
        strategy lives: a directory (files in a private directory under it;
        default: the system's temporary directory), or :class:`HostMemory`
        (pinned host memory for states on an accelerator).
    tape:
        Steps per segment re-run together: after the first step (run with
        gradients in the forward pass, its graph kept), the ``n - 1`` others
        are cut into segments of ``tape`` steps, reversed by ``strategy``
        (default :data:`revseq.DEFAULT_STRATEGY`), or planned under
        ``max_bytes`` if given. The last segment runs with gradients in the
        forward pass too, its graph kept for the backward pass.
    max_bytes:
        The bytes a plan with tapes may hold: checkpoints of states, and the
        graphs of one segment and of the first step (autograd's saved
        tensors, less the parameters and inputs, which exist anyway). The
        plan (:func:`revseq._tapes.plan`, reported in ``tally.plan``) takes
        the fewest calls of the cell that fit, longer segments on ties.
        Default: ``ceil(sqrt(n))`` steps' graphs and as many states (each
        step is then made twice: once without, once with gradients). Not
        with ``strategy``, whose own budget decides.

    Returns
    -------
    ``h_n``, or ``(h_n, ys)`` when ``output`` is given.

    Notes
    -----
    Without gradients (``torch.no_grad()``, or no tensor requiring grad) the
    plain loop runs: ``n`` calls, no checkpoints. A second backward pass
    (``retain_graph=True``) replays the schedule from ``h0``; without
    ``retain_graph`` PyTorch raises its usual "backward through the graph a
    second time" error. A differentiable backward pass (``create_graph=True``:
    a gradient penalty, ``torch.autograd.functional.hessian``) re-runs the
    ``n`` steps with gradients from ``h0`` and holds the plain loop's graph
    while the gradient's graph lives. Calling ``unroll`` under a
    ``torch.func`` transform raises ``ParameterError`` (see docs/autodiff.md).
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
        strategy=None if strategy is None else strategy_or_default(strategy),
        n=n,
        state_skeleton=state_skeleton,
        has_inputs=inputs is not None,
        input_skeleton=input_skeleton,
        num_state=len(h0_leaves),
        num_inputs=len(input_leaves),
        params=unique,
        tally=tally,
        preserve_rng_state=check_bool("preserve_rng_state", preserve_rng_state),
        disk=_check_disk(disk),
        tape=None if tape is None else check_int("tape", tape, 1),
        max_bytes=None if max_bytes is None else check_int("max_bytes", max_bytes, 1),
    )
    if strategy is not None and max_bytes is not None:
        raise ParameterError(
            f"max_bytes plans the checkpoints with tapes, and strategy={strategy!r} already decides them: "
            f"give one of the two (a strategy's own budget: e.g. BinomialCheckpointing(max_bytes=...))"
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
