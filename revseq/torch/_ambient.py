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
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

from revseq.errors import StepError

__all__ = ["Ambient", "Carry", "Snapshot", "autocast_state"]


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
