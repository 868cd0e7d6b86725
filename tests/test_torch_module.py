"""revseq.torch.Recurrent against the nn.RNN / nn.GRU / nn.LSTM it wraps: same call, same results, same gradients."""

from __future__ import annotations

import pytest

import revseq

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

import revseq.torch as rt  # noqa: E402

KINDS = [torch.nn.RNN, torch.nn.GRU, torch.nn.LSTM]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def loss(output, h):
    if isinstance(h, tuple):  # an LSTM's (h_n, c_n)
        h = h[0] + 2 * h[1]
    data = output.data if isinstance(output, torch.nn.utils.rnn.PackedSequence) else output
    return (data**2).sum() + (h**3).sum()


def compare(rnn, module, args, wrt):
    expected_out, expected_h = rnn(*args)
    expected = torch.autograd.grad(loss(expected_out, expected_h), wrt, retain_graph=True)
    out, h = module(*args)
    got = torch.autograd.grad(loss(out, h), wrt)
    # nn's fused kernels sum in another order than the step-by-step cells: equal to rounding.
    torch.testing.assert_close(out.data if hasattr(out, "batch_sizes") else out,
                               expected_out.data if hasattr(expected_out, "batch_sizes") else expected_out)  # fmt: skip
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)
    return out, expected_out


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_same_outputs_and_gradients_as_the_module(kind, batch_first):
    torch.manual_seed(0)
    rnn = kind(3, 5, num_layers=2, batch_first=batch_first).double()
    tally = rt.Tally()
    module = rt.Recurrent(rnn, strategy=revseq.BinomialCheckpointing(checkpoints=3), tally=tally)
    x = torch.randn((4, 9, 3) if batch_first else (9, 4, 3), dtype=torch.float64, requires_grad=True)
    compare(rnn, module, (x,), [x, *rnn.parameters()])
    assert tally.stats.peak_checkpoints <= 3
    assert tally.forward_steps == revseq.BinomialCheckpointing(checkpoints=3).cost(9).forward_steps


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_a_gradient_penalty_through_the_module(kind):
    """The swap the issue asks for keeps gradient penalties: create_graph=True, then the penalised loss."""
    torch.manual_seed(0)
    rnn = kind(3, 5, num_layers=2).double()
    module = rt.Recurrent(rnn)
    x = torch.randn(12, 4, 3, dtype=torch.float64, requires_grad=True)

    def penalised(net):
        output, _ = net(x)
        (g,) = torch.autograd.grad(output.pow(2).sum(), x, create_graph=True)  # a WGAN-GP style penalty
        total = output.sum() + (g.norm() - 1) ** 2
        return g.detach(), torch.autograd.grad(total, [x, *rnn.parameters()])

    got, expected = penalised(module), penalised(rnn)
    torch.testing.assert_close(got[0], expected[0])
    for g, e in zip(got[1], expected[1], strict=True):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_packed_sequences_and_lengths(kind):
    torch.manual_seed(1)
    rnn = kind(3, 4, num_layers=2).double()
    module = rt.Recurrent(rnn, strategy=revseq.RecursiveHalving())
    x = torch.randn(7, 4, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([7, 3, 5, 1])
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    out, expected = compare(rnn, module, (packed,), [x, *rnn.parameters()])
    assert torch.equal(out.batch_sizes, expected.batch_sizes)
    assert torch.equal(out.sorted_indices, expected.sorted_indices)
    assert torch.equal(out.unsorted_indices, expected.unsorted_indices)
    # The same batch padded, with lengths=: outputs past each length are zeros, h_n is at the length.
    padded_out, _ = module(x, lengths=lengths)
    expected_padded, _ = torch.nn.utils.rnn.pad_packed_sequence(expected, total_length=7)
    torch.testing.assert_close(padded_out, expected_padded)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_unbatched_input_with_an_initial_state(kind):
    torch.manual_seed(2)
    rnn = kind(3, 4, num_layers=2).double()
    module = rt.Recurrent(rnn, strategy=revseq.StoreAll())
    x = torch.randn(6, 3, dtype=torch.float64)
    h = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    hx = (h, torch.randn(2, 4, dtype=torch.float64)) if kind is torch.nn.LSTM else h
    compare(rnn, module, (x, hx), [h, *rnn.parameters()])


def test_dropout_between_layers_is_replayed():
    # nn.GRU draws one mask for a layer's whole sequence; Recurrent draws one per step: the oracle is
    # the step-by-step loop with the same draws, and the recomputations must reproduce them.
    torch.manual_seed(3)
    rnn = torch.nn.GRU(3, 5, num_layers=3, dropout=0.4).double()
    x = torch.randn(12, 2, 3, dtype=torch.float64, requires_grad=True)
    wrt = [x, *rnn.parameters()]

    def by_hand():
        hs = [x.new_zeros(2, 5) for _ in range(3)]
        outs = []
        for t in range(12):
            below = x[t]
            for layer in range(3):
                hs[layer] = torch.gru_cell(below, hs[layer], *rnn.all_weights[layer])
                below = torch.nn.functional.dropout(hs[layer], 0.4) if layer < 2 else hs[layer]
            outs.append(below)
        return torch.stack(outs), torch.stack(hs)

    torch.manual_seed(4)
    expected = torch.autograd.grad(loss(*by_hand()), wrt)
    torch.manual_seed(4)
    module = rt.Recurrent(rnn, strategy=revseq.BinomialCheckpointing(checkpoints=2))
    got = torch.autograd.grad(loss(*module(x)), wrt)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)  # to rounding (the graphs sum in other orders); another mask is O(1) off


def test_state_dict_and_parameters_are_the_modules():
    rnn = torch.nn.GRU(3, 4)
    module = rt.Recurrent(rnn)
    assert list(module.parameters()) == list(rnn.parameters())
    assert set(module.state_dict()) == {f"rnn.{name}" for name in rnn.state_dict()}


def GRU34():
    return rt.Recurrent(torch.nn.GRU(3, 4))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: rt.Recurrent(torch.nn.GRU(3, 4, bidirectional=True)), "must not be bidirectional"),
        (lambda: rt.Recurrent(torch.nn.LSTM(3, 4, proj_size=2)), "proj_size=0"),
        (lambda: rt.Recurrent(torch.nn.Linear(3, 4)), "must be an nn.RNN, nn.GRU or nn.LSTM"),
        (lambda: rt.Recurrent(torch.nn.GRU(3, 4), strategy="binomial"), "strategy"),
        (lambda: GRU34()(torch.randn(5, 2, 7)), r"input must be a tensor of shape \(seq, batch, 3\)"),
        (lambda: GRU34()(torch.randn(5, 2, 3), torch.randn(2, 2, 4)), r"hx must be a tensor of shape \(1, 2, 4\)"),
        (lambda: GRU34()(torch.randn(5, 2, 3), lengths=[5, 6]), r"lengths must hold one length in 1..5"),
    ],
)  # fmt: skip
def test_bad_arguments_are_named(make, message):
    with pytest.raises(revseq.ParameterError, match=message):
        make()
