"""What a PyTorch step reads besides its arguments, captured with checkpoints and put back before recomputing.

A recomputed step must compute what the first sweep computed. Three things
a cell commonly reads are not among its arguments:

- **the random number generators** (dropout in training mode): the CPU
  generator, and the generator of every device the state, the inputs or the
  parameters live on;
- **the buffers of the modules it calls** (``BatchNorm``'s running mean and
  ``num_batches_tracked``), which such modules update in place at every
  call, so a recomputation would update them again;
- **autocast** (``torch.autocast`` around the call of ``unroll``), which is
  off when the backward pass recomputes.

The adapter's engine state is a :class:`Carry`: a state's tensors and a
:class:`Snapshot` of the generators and buffers as they were when the state
was computed. A snapshot is taken only when the state is kept (stored as a
checkpoint, or about to be disturbed by a step's re-run under autograd), and
put back before a step runs from a state that is not the one just computed.
So the random numbers of step ``t`` are the same in the first sweep, in
every recomputation and in the re-run that differentiates it, exactly as
``torch.utils.checkpoint(preserve_rng_state=True)`` replays them for a
segment, and the buffers end as the plain loop leaves them.

What it costs: ``torch.get_rng_state()`` (5 KB for the CPU generator, about
2-3 microseconds) per checkpoint and per kept state; a snapshot that equals
the one before shares its tensors, so a cell that draws no random numbers
holds one generator state in all. After the forward pass, if no step drew a
random number and no module the cell calls has buffers, nothing more is
captured or restored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from revseq.errors import StepError

__all__ = ["Ambient", "Carry", "Fingerprints", "Snapshot", "autocast_state"]


class Snapshot:
    """The generators' states and the buffers' values at one step; immutable once made."""

    __slots__ = ("buffers", "devices", "rng", "rng_bytes")

    def __init__(
        self, rng: Tensor | None, rng_bytes: bytes, devices: tuple[Tensor, ...], buffers: tuple[Tensor, ...]
    ) -> None:
        self.rng = rng  # the CPU generator's state, or None when the generators are not replayed
        self.rng_bytes = rng_bytes  # its bytes, to tell a later state from it (b"" without one)
        self.devices = devices  # one state per device in Ambient.device_ids
        self.buffers = buffers  # clones, in Ambient.buffers' order; later discovered ones are at their baseline


class Carry:
    """The engine's state in the PyTorch adapter: a state's tensors, and the snapshot of its step once taken.

    The engine never looks inside a state; it counts ``nbytes``, which is
    the tensors' bytes only (snapshots are accounted for by the store).
    """

    __slots__ = ("leaves", "snapshot")

    def __init__(self, leaves: tuple[Tensor, ...], snapshot: Snapshot | None = None) -> None:
        self.leaves = leaves
        self.snapshot = snapshot

    @property
    def nbytes(self) -> int:
        return sum(int(leaf.nbytes) for leaf in self.leaves)


AutocastState = tuple[tuple[tuple[str, bool, torch.dtype], ...], bool]


def autocast_state(device_types: Iterable[str]) -> AutocastState:
    """Autocast as it is now, for each device type: ``((type, enabled, dtype), ...), cache_enabled``."""
    return (
        tuple(
            (kind, torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind))
            for kind in sorted(set(device_types))
            if torch.amp.is_autocast_available(kind)
        ),
        torch.is_autocast_cache_enabled(),
    )


_PERIOD = 1 << 16  # the fingerprints' weights repeat with this period: one set per dtype and device
_SAMPLED = 8  # elements of each group a fingerprint also holds, at fixed positions
_STRIDE = 4  # every 4th state is fingerprinted, in runs longer than
_EVERY_STATE_UP_TO = 64  # steps, where every state is


class Fingerprints:
    """A fingerprint of the states the first sweep computes, to check that each recomputation gives them again.

    What a step reads besides its arguments and is not replayed here (a
    ``torch.Generator`` of the user's own, a tensor in a closure changed in
    place, a module buffer written outside a module's call, an operation
    that is not deterministic) makes a recomputed step compute another
    state, and the gradient wrong without a word. So every state of a run
    of up to 64 steps, and every 4th state of a longer one, gets a
    fingerprint when the first sweep makes it: for its leaves (and the
    step's outputs, where the pass computes them) weighed as one flat
    tensor, a weighted sum (fixed weights in ``[0.5, 1.5)`` repeating every
    ``_PERIOD`` elements, drawn once from a generator of their own, so the
    caller's generators are untouched) and ``_SAMPLED`` elements at fixed
    positions (a sum averages small noise away; single elements do not).
    A recomputation must agree to ``RTOL`` of each column's scale (the
    group's size times its samples' mean size, for the sum; a sample's own
    size plus that mean, for a sample). A mismatch is flagged on the device
    (no host synchronisation per step) and raised by :meth:`verify` once
    the backward pass is done. Cost: three tensor operations per group and
    sampled step, and a few per segment; 1.04x (0.90-1.24) the time without
    the check on the GRU case at n = 2000 (benchmarks/test_torch_fingerprints.py).
    """

    RTOL = 1e-4  # recomputations are bitwise on the CPU; the margin is for kernels that are not deterministic

    def __init__(self, n: int) -> None:
        self.n = n
        self.next = 0  # h_1 .. h_next have been made
        # Every stride-th state is fingerprinted (h_{t+1} for t + 1 a multiple of it): all of a short run's.
        self.stride = 1 if n <= _EVERY_STATE_UP_TO else _STRIDE
        rows = n // self.stride + 1
        self._rows = rows
        self._ref: Tensor | None = None  # (rows, columns): the first sweep's fingerprints, row (t + 1) // stride
        self._scale: Tensor | None = None  # (rows, columns): their scales
        self._bad: Tensor | None = None  # (rows,): a recomputation of that state differed
        self._layouts: dict[tuple[int, torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}
        self._sizes: list[int] = []  # the number of elements of the state's group, then the outputs'

    def _layout(self, flat: Tensor) -> tuple[Tensor, Tensor]:
        """For a group of ``flat``'s size, dtype and device: one period of the weights (``_PERIOD`` of them,
        repeating) and the sampled positions."""
        key = (flat.numel(), flat.dtype, flat.device)
        layout = self._layouts.get(key)
        if layout is None:
            generator = torch.Generator().manual_seed(_PERIOD)
            weight = torch.rand(_PERIOD, generator=generator, dtype=torch.float64).add_(0.5)
            count = min(_SAMPLED, flat.numel())
            positions = torch.linspace(0, flat.numel() - 1, count, dtype=torch.float64).round().long()
            layout = self._layouts[key] = (weight.to(device=flat.device, dtype=flat.dtype), positions.to(flat.device))
        return layout

    @staticmethod
    def _flat(leaves: Sequence[Tensor]) -> Tensor:
        """A group's leaves as one 1-D float32 or float64 tensor (complex as pairs of reals)."""
        flats = []
        for leaf in leaves:
            leaf = leaf.detach()
            if leaf.is_complex():
                leaf = torch.view_as_real(leaf)
            if leaf.dtype not in (torch.float32, torch.float64):
                leaf = leaf.float()  # sums of half precision would round away what they should show
            flats.append(leaf.reshape(-1))
        if len(flats) == 1:
            return flats[0]
        home = flats[0].device
        return torch.cat([f if f.device == home else f.to(home, non_blocking=True) for f in flats])

    @staticmethod
    def _dot(flat: Tensor, weight: Tensor) -> Tensor:
        """``flat``'s weighted sum, the weights repeating every ``_PERIOD`` elements: no weight as large as flat."""
        size = flat.numel()
        if size <= _PERIOD:
            return torch.dot(flat, weight[:size] if size < _PERIOD else weight)
        rows = size // _PERIOD
        total = torch.mv(flat[: rows * _PERIOD].view(rows, _PERIOD), weight).sum()
        rest = flat[rows * _PERIOD :]
        return total + torch.dot(rest, weight[: rest.numel()]) if rest.numel() else total

    def of(self, t: int, state: Sequence[Tensor], outputs: Sequence[Tensor] = ()) -> list[Tensor]:
        """The fingerprint of ``h_{t+1}`` (and of ``y_t``, if given): per group, a sum and samples.

        A group (the state's leaves, then the outputs' if given) is weighed
        as one flat tensor: its weighted sum (0-d) and ``_SAMPLED`` of its
        elements at fixed positions (a sum averages small noise away; single
        elements do not). Three tensor operations a group, no host sync.
        """
        made: list[Tensor] = []
        if (t + 1) % self.stride:
            return made  # not a sampled state
        sizes = []
        for group in (state, outputs) if outputs else (state,):
            flat = self._flat(group)
            sizes.append(flat.numel())
            weight, positions = self._layout(flat)
            kind = flat.device.type
            if kind != "cpu" and torch.amp.is_autocast_available(kind) and torch.is_autocast_enabled(kind):
                with torch.autocast(kind, enabled=False):  # the same precision in every pass
                    made += [self._dot(flat, weight), torch.index_select(flat, 0, positions)]
            else:  # dot, mv and index_select: not cast by the CPU's autocast
                made += [self._dot(flat, weight), torch.index_select(flat, 0, positions)]
        if len(sizes) > len(self._sizes):
            self._sizes = sizes
        return made

    def _columns(self, prints: list[list[Tensor]], groups: int) -> tuple[Tensor, Tensor]:
        """Several steps' fingerprints as rows: per group its sum, then its samples; and the samples alone."""
        sums = [torch.stack([p[2 * g] for p in prints]).double().unsqueeze(1) for g in range(groups)]
        samples = [torch.stack([p[2 * g + 1] for p in prints]).double() for g in range(groups)]
        return torch.cat([c for pair in zip(sums, samples, strict=True) for c in pair], 1), torch.cat(samples, 1)

    def observe(self, start: int, prints: list[list[Tensor]]) -> None:
        """Record or check the fingerprints of ``h_{start+1} ..``, one list per step, from :meth:`of`.

        The lists of the states that are not sampled are empty. The first
        sweep and the re-runs with gradients fingerprint the state and the
        outputs, the recomputations without gradients the state alone: a
        prefix of the columns.
        """
        stop = start + len(prints)
        fresh = stop > self.next
        rows = [p for p in prints if p]
        if rows:
            stride = self.stride
            first_row = (start + stride) // stride  # the row of the first sampled state: (t + 1) // stride
            made_rows = max(0, min(stop, self.next) // stride - first_row + 1) if self.next > start else 0
            old = min(len(rows), made_rows)  # recomputed: already recorded
            if old:
                assert self._ref is not None
                assert self._scale is not None
                assert self._bad is not None
                got, _ = self._columns(rows[:old], len(rows[0]) // 2)
                width = got.shape[1]  # a recomputation without its outputs checks the state's columns only
                at = slice(first_row, first_row + old)
                ref, scale = self._ref[at, :width], self._scale[at, :width]
                self._bad[at] |= ((got - ref).abs() > self.RTOL * scale).any(1)
            if old < len(rows):  # first made, in order: the first sweep passes every state once, in turn
                new, _ = self._columns(rows[old:], len(rows[old]) // 2)
                # Scales: a group's size times the mean size of its samples for the sum (the weights average
                # 1), and for each sample its own size plus that mean.
                parts: list[Tensor] = []
                column = 0
                for size in self._sizes[: len(rows[old]) // 2]:
                    count = min(_SAMPLED, size)
                    samples = new[:, column + 1 : column + 1 + count].abs()
                    mean = samples.mean(1, keepdim=True)
                    parts += [new[:, column : column + 1].abs() + size * mean, samples + mean]
                    column += 1 + count
                scales = torch.cat(parts, 1)
                if self._ref is None:
                    self._ref = new.new_zeros((self._rows, new.shape[1]))
                    self._scale = new.new_zeros((self._rows, new.shape[1]))
                    self._bad = torch.zeros(self._rows, dtype=torch.bool, device=new.device)
                assert self._scale is not None
                at = slice(first_row + old, first_row + len(rows))
                self._ref[at] = new
                self._scale[at] = scales
        if fresh:
            self.next = stop

    def verify(self) -> None:
        """Raise if a recomputed state differed from the first sweep's (one host synchronisation)."""
        if self._bad is None or self._bad.is_meta or not bool(self._bad.any()):  # meta tensors hold no values
            return
        t = int(self._bad.nonzero()[0, 0]) * self.stride - 1
        raise StepError(
            f"step {t} gave another state or output when recomputed than in the forward pass (h_{t + 1} or y_{t} "
            f"differs beyond rounding), so the gradient would be wrong: the cell (or output) depends on something "
            f"revseq does not replay, "
            f"such as a torch.Generator of its own, a tensor changed in place that is neither an argument nor a "
            f"module buffer, or an operation that is not deterministic; make the step a function of h, u_t, the "
            f"parameters, the global random generators and the buffers of the modules it calls"
        )


class Ambient:
    """The generators, buffers and autocast state of one call of ``unroll``.

    Parameters
    ----------
    preserve_rng_state:
        Replay the random number generators (as ``torch.utils.checkpoint``).
        Without it, a cell that draws random numbers is refused after the
        forward pass, since its recomputations would draw others.
    tensors:
        The state, inputs and parameters: their devices decide which device
        generators are replayed and which autocast states are captured.
    """

    def __init__(self, preserve_rng_state: bool, tensors: Iterable[Tensor]) -> None:
        tensors = list(tensors)
        self.preserve_rng_state = preserve_rng_state
        self.replay_rng = preserve_rng_state  # false once the forward pass shows no step draws random numbers
        kinds = {t.device.type for t in tensors} - {"cpu", "meta"}
        if len(kinds) > 1:
            raise StepError(
                f"unroll replays one accelerator's random number generator, but the tensors are on {sorted(kinds)}"
            )
        self.device_kind = kinds.pop() if kinds else None
        self.device_ids = sorted({t.get_device() for t in tensors if t.device.type == self.device_kind})
        self.autocast = autocast_state({"cpu", *(() if self.device_kind is None else (self.device_kind,))})
        self._wrap = False
        self.buffers: list[Tensor] = []  # of the modules the cell called, in the order found
        self.baselines: list[Tensor] = []  # each buffer's value when found: where older snapshots leave it
        self._homes: list[list[tuple[torch.nn.Module, str]]] = []  # per buffer, the (module, name) holding it
        self._found: set[int] = set()
        self._last: Snapshot | None = None  # the latest snapshot taken or restored, and the buffers' versions then
        self._last_versions: list[int] = []
        self.current: Carry | None = None  # the state whose snapshot the generators and buffers now hold
        self.prints = Fingerprints(0)  # the checkpointed path sets one for its n steps
        # The generators before the first step, to tell after the forward pass whether any step drew from them.
        self._rng_before = torch.get_rng_state().numpy().tobytes()
        self._devices_before = self._device_states()
        self.start = self.capture()  # x_0's snapshot; the generators' states only after replay_rng's

    # -- finding buffers ----------------------------------------------------

    @contextlib.contextmanager
    def discovering(self) -> Iterator[None]:
        """Find the buffers of every module called in this block (the forward pass), by a global forward pre-hook."""

        def found(module: torch.nn.Module, _args: Any) -> None:
            for name, buffer in module._buffers.items():
                if buffer is None:
                    continue
                if id(buffer) not in self._found:
                    self._found.add(id(buffer))
                    self.buffers.append(buffer)
                    self.baselines.append(buffer.detach().clone())
                    self._homes.append([])
                home = self._homes[next(i for i, b in enumerate(self.buffers) if b is buffer)]
                if (module, name) not in home:
                    home.append((module, name))

        handle = torch.nn.modules.module.register_module_forward_pre_hook(found)
        try:
            yield
        finally:
            handle.remove()

    # -- snapshots ----------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether snapshots carry anything: generators replayed, or buffers to put back."""
        return self.replay_rng or bool(self.buffers)

    def capture(self) -> Snapshot:
        """The generators and buffers now; shares the previous snapshot's tensors where nothing changed."""
        last = self._last
        rng: Tensor | None = None
        raw = b""
        devices: tuple[Tensor, ...] = ()
        if self.replay_rng:
            rng = torch.get_rng_state()
            raw = rng.numpy().tobytes()
            if last is not None and last.rng is not None and raw == last.rng_bytes:
                rng, raw = last.rng, last.rng_bytes
            devices = self._device_states()
        versions = [b._version for b in self.buffers]
        if last is not None and versions == self._last_versions:
            buffers = last.buffers
        else:
            with torch.no_grad():
                buffers = tuple(b.detach().clone() for b in self.buffers)
        if last is not None and rng is last.rng and buffers is last.buffers and not devices:
            return last  # device generators (16 bytes each) are not compared: a new snapshot
        snapshot = Snapshot(rng, raw, devices, buffers)
        self._last, self._last_versions = snapshot, versions
        return snapshot

    def _device_states(self) -> tuple[Tensor, ...]:
        if self.device_kind is None:
            return ()
        module = torch.get_device_module(self.device_kind)
        return tuple(module.get_rng_state(i) for i in self.device_ids)

    def _set_device_states(self, states: tuple[Tensor, ...]) -> None:
        if self.device_kind is not None:
            module = torch.get_device_module(self.device_kind)
            for i, state in zip(self.device_ids, states, strict=True):
                module.set_rng_state(state, i)

    def restore(self, snapshot: Snapshot | None) -> None:
        """Put the generators and buffers back as ``snapshot`` holds them."""
        if snapshot is None:
            raise RuntimeError("revseq.torch: a state without a snapshot was resumed; please report this as a bug")
        if self.replay_rng and snapshot.rng is not None:
            torch.set_rng_state(snapshot.rng)
            self._set_device_states(snapshot.devices)
        if self.buffers:
            values = (*snapshot.buffers, *self.baselines[len(snapshot.buffers) :])
            with torch.no_grad():
                for buffer, value in zip(self.buffers, values, strict=True):
                    buffer.copy_(value)
        self._last, self._last_versions = snapshot, [b._version for b in self.buffers]

    @contextlib.contextmanager
    def replaying(self, snapshot: Snapshot) -> Iterator[None]:
        """Run a block from ``snapshot``'s generators, on copies of the buffers, and leave both as they were.

        The modules see fresh tensors holding the snapshot's values in place
        of their buffers, so the block updates those, not the buffers: a
        graph made before or inside the block that saved a buffer keeps the
        version it saved. The generators are put back afterwards.
        """
        before = torch.get_rng_state(), self._device_states()
        values = (*snapshot.buffers, *self.baselines[len(snapshot.buffers) :])
        if self.replay_rng and snapshot.rng is not None:
            torch.set_rng_state(snapshot.rng)
            self._set_device_states(snapshot.devices)
        for home, value in zip(self._homes, values, strict=True):
            copy = value.clone()
            for module, name in home:
                module._buffers[name] = copy
        try:
            yield
        finally:
            for home, buffer in zip(self._homes, self.buffers, strict=True):
                for module, name in home:
                    module._buffers[name] = buffer
            torch.set_rng_state(before[0])
            self._set_device_states(before[1])
            self.current = None

    def resume(self, carry: Carry) -> None:
        """Before a step runs from ``carry``: put its snapshot back unless it is the state just computed."""
        if carry is not self.current:
            if self.active:
                self.restore(carry.snapshot)
            self.current = carry

    def keep(self, carry: Carry) -> None:
        """``carry`` will be needed later (stored, or about to be disturbed): take its snapshot if not yet taken."""
        if carry.snapshot is None:
            if carry is not self.current:
                raise RuntimeError("revseq.torch: a state's snapshot was asked too late; please report this as a bug")
            carry.snapshot = self.capture() if self.active else self.start

    def end_forward(self) -> None:
        """After the forward pass: if no step drew a random number, there is nothing to replay from now on.

        Without ``preserve_rng_state``, a step that drew one is refused here:
        its recomputations would draw other numbers, and the gradient would be
        wrong without a word.
        """
        drew = torch.get_rng_state().numpy().tobytes() != self._rng_before or any(
            not torch.equal(now, before)
            for now, before in zip(self._device_states(), self._devices_before, strict=True)
        )
        if not drew:
            self.replay_rng = False
        elif not self.preserve_rng_state:
            raise StepError(
                "the cell drew random numbers (dropout in training mode?) with preserve_rng_state=False: "
                "recomputed steps would draw other numbers and the gradient would be wrong; "
                "pass preserve_rng_state=True (the default) to replay them, or make the cell deterministic "
                "(module.eval())"
            )

    def enter_phase(self) -> None:
        """At the start of the forward or the backward pass: whether steps need autocast entered for them.

        The forward pass runs where ``unroll`` was called, under the caller's
        autocast; the backward pass usually runs outside it. Entering autocast
        costs about 9 microseconds, so it is entered only where it differs.
        """
        kinds, _ = self.autocast
        self._wrap = autocast_state(kind for kind, _, _ in kinds) != self.autocast

    def cached_cast_dtype(self, tensor: Tensor) -> torch.dtype | None:
        """The precision autocast casts ``tensor`` to once and caches, when it does (a floating leaf needing grad)."""
        kinds, cache = self.autocast
        if not (cache and tensor.is_floating_point()):
            return None
        for kind, enabled, dtype in kinds:
            if enabled and kind == tensor.device.type and tensor.dtype != dtype:
                return dtype
        return None

    def autocast_context(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast as it was when ``unroll`` was called, for one call of the cell."""
        if not self._wrap:
            return contextlib.nullcontext()
        kinds, cache = self.autocast
        stack = contextlib.ExitStack()
        for kind, enabled, dtype in kinds:
            stack.enter_context(torch.autocast(kind, dtype=dtype, enabled=enabled, cache_enabled=cache))
        return stack
