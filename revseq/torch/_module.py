"""``Recurrent``: ``nn.RNN``, ``nn.GRU`` or ``nn.LSTM`` backpropagated under a revseq strategy, called the same way.

The wrapped module keeps its parameters (and so its ``state_dict``); the
forward pass runs its cells step by step through :func:`revseq.torch.unroll`
with the state of every layer as one revseq state, so the checkpoints hold
``num_layers`` hidden states (and cell states) per step kept, and the
outputs, the last layer's hidden state at every step, are what the caller
keeps, as with the module itself.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from revseq._adapter import Tally, strategy_or_default
from revseq._validate import check_int
from revseq.errors import ParameterError
from revseq.strategies.base import ReversalStrategy

__all__ = ["Recurrent"]

_CELLS = {
    "RNN_TANH": torch.rnn_tanh_cell,
    "RNN_RELU": torch.rnn_relu_cell,
    "GRU": torch.gru_cell,
    "LSTM": torch.lstm_cell,
}


class Recurrent(torch.nn.Module):  # type: ignore[misc,unused-ignore]  # Any where torch is not type-checked
    """Run ``rnn`` (an ``nn.RNN``, ``nn.GRU`` or ``nn.LSTM``) with revseq's checkpointing; the same call and results.

    ``Recurrent(rnn, strategy=...)(input, hx)`` returns what ``rnn(input, hx)``
    returns, ``(output, h_n)`` (``(output, (h_n, c_n))`` for an LSTM), with
    ``batch_first``, unbatched inputs, ``num_layers``, dropout between
    layers and ``PackedSequence`` inputs (or ``lengths=`` with a padded
    batch) as ``rnn`` takes them; the gradients are those of the unrolled
    cells. Memory and time are those of :func:`revseq.torch.unroll` with the
    same ``strategy``, ``tape`` and ``max_bytes`` (by default a plan with
    tapes: each step made twice, about ``2 sqrt(n)`` steps' graphs and states
    held), plus the output (``n`` last-layer states, which the caller keeps;
    see docs/autodiff.md).

    Parameters
    ----------
    rnn:
        The module whose parameters and configuration are used (it stays the
        owner of its parameters: ``Recurrent(rnn).state_dict()`` holds them
        under ``rnn.``). ``bidirectional`` and an LSTM's ``proj_size`` are
        refused.
    strategy, tape, max_bytes, disk:
        As for :func:`revseq.torch.unroll` (``disk``: a directory or
        :class:`revseq.torch.HostMemory`, for a ``MultistageCheckpointing``
        strategy's disk level).
    tally:
        A :class:`revseq.torch.Tally` counting the cell's calls (all layers at one step count once).

    Notes
    -----
    Dropout between layers is drawn per step (each step's mask for each
    layer), where ``nn.GRU`` draws one tensor for the whole sequence: with
    ``dropout > 0`` in training mode the masks differ from ``rnn``'s own,
    though they are replayed exactly in recomputations. Per-step outputs
    past a sequence's length are zeros, and its final state is the state at
    its length, as ``rnn`` gives them for a ``PackedSequence``.
    """

    def __init__(
        self,
        rnn: torch.nn.RNNBase,
        *,
        strategy: ReversalStrategy | None = None,
        tally: Tally | None = None,
        tape: int | None = None,
        max_bytes: int | None = None,
        disk: Any = None,
    ) -> None:
        super().__init__()
        if not isinstance(rnn, torch.nn.RNNBase) or rnn.mode not in _CELLS:
            raise ParameterError(f"rnn must be an nn.RNN, nn.GRU or nn.LSTM, got {rnn!r} ({type(rnn).__name__})")
        if rnn.bidirectional:
            raise ParameterError(
                "rnn must not be bidirectional: Recurrent reverses one direction (got bidirectional=True)"
            )
        if getattr(rnn, "proj_size", 0):
            raise ParameterError(f"rnn must have proj_size=0: projected LSTMs are not supported, got {rnn.proj_size}")
        if tally is not None and not isinstance(tally, Tally):
            raise ParameterError(f"tally must be a revseq.torch.Tally, got {tally!r}")
        self.rnn = rnn
        self.strategy = None if strategy is None else strategy_or_default(strategy)  # checked now, not at the call
        self.tally = tally
        self.tape = None if tape is None else check_int("tape", tape, 1)
        self.max_bytes = None if max_bytes is None else check_int("max_bytes", max_bytes, 1)
        self.disk = disk  # checked by unroll, at the call

    def extra_repr(self) -> str:
        disk = "" if self.disk is None else f", disk={self.disk!r}"
        return f"strategy={self.strategy!r}, tape={self.tape!r}, max_bytes={self.max_bytes!r}{disk}"

    def forward(self, input: Any, hx: Any = None, *, lengths: Any = None) -> tuple[Any, Any]:
        from revseq.torch import unroll  # the package imports this module

        rnn = self.rnn
        lstm = rnn.mode == "LSTM"
        packed = input if isinstance(input, PackedSequence) else None
        if packed is not None:
            if lengths is not None:
                raise ParameterError("lengths must be None when input is a PackedSequence (it has its own lengths)")
            input, lengths = pad_packed_sequence(packed)  # (seq, batch, features), in the caller's batch order
            batch_first = False
        else:
            batch_first = rnn.batch_first
        if not isinstance(input, Tensor) or input.dim() not in (2, 3) or input.shape[-1] != rnn.input_size:
            raise ParameterError(
                f"input must be a tensor of shape (seq, batch, {rnn.input_size}) (batch first if rnn.batch_first), "
                f"(seq, {rnn.input_size}) or a PackedSequence, got {getattr(input, 'shape', input)!r}"
            )
        unbatched = input.dim() == 2
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if batch_first else input)
        n, batch = int(x.shape[0]), int(x.shape[1])
        layers = rnn.num_layers
        h0 = self._initial(hx, lstm, unbatched, batch, x)
        inputs: dict[str, Tensor] = {"x": x}
        alive = None
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=x.device)
            if lengths.shape != (batch,) or int(lengths.min()) < 1 or int(lengths.max()) > n:
                raise ParameterError(
                    f"lengths must hold one length in 1..{n} per sequence ({batch}), got {lengths.tolist()!r}"
                )
            alive = (torch.arange(n, device=x.device)[:, None] < lengths[None, :]).unsqueeze(-1)  # (n, batch, 1)
            inputs["alive"] = alive
        cell = _CELLS[rnn.mode]
        weights = [rnn.all_weights[layer] for layer in range(layers)]
        p = rnn.dropout if rnn.training else 0.0

        def step(state: tuple[Tensor, ...], u: dict[str, Tensor]) -> tuple[Tensor, ...]:
            below = u["x"]
            new: list[Tensor] = []
            for layer in range(layers):
                if lstm:
                    h, c = state[2 * layer], state[2 * layer + 1]
                    h1, c1 = cell(below, (h, c), *weights[layer])
                    if "alive" in u:
                        h1, c1 = torch.where(u["alive"], h1, h), torch.where(u["alive"], c1, c)
                    new += (h1, c1)
                else:
                    h = state[layer]
                    h1 = cell(below, h, *weights[layer])
                    if "alive" in u:
                        h1 = torch.where(u["alive"], h1, h)
                    new.append(h1)
                below = torch.nn.functional.dropout(h1, p) if p and layer < layers - 1 else h1
            return tuple(new)

        top = 2 * (layers - 1) if lstm else layers - 1
        final, outputs = unroll(
            step,
            h0,
            inputs,
            strategy=self.strategy,
            output=lambda state: state[top],
            params=rnn.parameters(),
            tally=self.tally,
            tape=self.tape,
            max_bytes=self.max_bytes,
            disk=self.disk,
        )
        if alive is not None:
            outputs = outputs * alive
        h_n = torch.stack(final[0::2] if lstm else final)
        c_n = torch.stack(final[1::2]) if lstm else None
        if packed is not None:  # packed as the input was: its batch sizes and its sorting, as rnn's output is
            order = packed.sorted_indices
            ranked = outputs if order is None else outputs.index_select(1, order)
            ranks = lengths.cpu() if order is None else lengths.cpu()[order.cpu()]  # longest first, as packed
            data = pack_padded_sequence(ranked, ranks, enforce_sorted=True)
            outputs = PackedSequence(data.data, packed.batch_sizes, order, packed.unsorted_indices)
        elif unbatched:
            outputs, h_n = outputs.squeeze(1), h_n.squeeze(1)
            c_n = None if c_n is None else c_n.squeeze(1)
        elif batch_first:
            outputs = outputs.transpose(0, 1)
        return outputs, ((h_n, c_n) if lstm else h_n)

    def _initial(self, hx: Any, lstm: bool, unbatched: bool, batch: int, x: Tensor) -> tuple[Tensor, ...]:
        """Every layer's state, ``(h_0, ..., h_{L-1})`` or ``(h_0, c_0, h_1, c_1, ...)``, each ``(batch, width)``."""
        rnn = self.rnn
        layers, width = rnn.num_layers, rnn.hidden_size
        expected = (layers, width) if unbatched else (layers, batch, width)
        if hx is None:
            zeros = x.new_zeros((layers, batch, width))
            parts = [zeros, zeros] if lstm else [zeros]
        else:
            parts = list(hx) if lstm else [hx]
            if len(parts) != (2 if lstm else 1) or any(
                not isinstance(t, Tensor) or tuple(t.shape) != expected for t in parts
            ):
                raise ParameterError(
                    f"hx must be {'a tuple (h_0, c_0) of tensors' if lstm else 'a tensor'} of shape {expected}, "
                    f"got {hx!r}"
                )
            if unbatched:
                parts = [t.unsqueeze(1) for t in parts]
        if lstm:
            return tuple(t for layer in range(layers) for t in (parts[0][layer], parts[1][layer]))
        return tuple(parts[0][layer] for layer in range(layers))
