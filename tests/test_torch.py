"""revseq.torch against plain PyTorch autograd through the unrolled loop.

The oracle everywhere is the loop a user would write without revseq,
differentiated by autograd; calls of the cell are counted from outside, and
memory is read from ``torch.autograd.graph.saved_tensors_hooks``.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import weakref

import pytest
from registry import every_builtin

import revseq

try:
    import torch

    import revseq.torch as rt
except ModuleNotFoundError:  # the tests below that need PyTorch skip
    torch = None  # type: ignore[assignment]

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed (pip install 'revseq[torch]')")

STRATEGIES = every_builtin()
NS = [1, 2, 3, 5, 17, 40]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def gru_problem(n, width=8, batch=2, features=3, seed=0):
    """A GRU cell with a linear readout, inputs, h0 and a loss weighting h_n and every output."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cell = torch.nn.GRUCell(features, width).double()
    readout = torch.nn.Linear(width, 2).double()
    u = torch.randn(n, batch, features, dtype=torch.float64, generator=gen, requires_grad=True)
    h0 = torch.randn(batch, width, dtype=torch.float64, generator=gen, requires_grad=True)
    w_h = torch.randn(batch, width, dtype=torch.float64, generator=gen)
    w_y = torch.randn(n, batch, 2, dtype=torch.float64, generator=gen)

    def loss(h, ys):
        return (w_h * h).sum() + (w_y * ys).sum() + (ys**2).sum()

    return cell, readout, u, h0, loss


def unrolled(cell, readout, u, h0):
    """The oracle: the plain loop, differentiated by autograd."""
    h, ys = h0, []
    for t in range(u.shape[0]):
        h = cell(u[t], h)
        ys.append(readout(h))
    return h, torch.stack(ys)


@needs_torch
@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
def test_gradients_match_unrolled_autograd(strategy, n):
    cell, readout, u, h0, loss = gru_problem(n)
    wrt = [h0, u, *cell.parameters(), *readout.parameters()]
    h_ref, ys_ref = unrolled(cell, readout, u, h0)
    expected = torch.autograd.grad(loss(h_ref, ys_ref), wrt)

    h, ys = rt.unroll(lambda h, u_t: cell(u_t, h), h0, u, strategy=strategy, output=readout,
                      params=cell.parameters())  # fmt: skip
    got = torch.autograd.grad(loss(h, ys), wrt)

    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(ys, ys_ref)
    names = ["h0", "u"] + [f"cell.{k}" for k, _ in cell.named_parameters()]
    names += [f"readout.{k}" for k, _ in readout.named_parameters()]
    for name, g, e in zip(names, got, expected, strict=True):
        torch.testing.assert_close(g, e, msg=lambda m, name=name: f"gradient of {name}: {m}")


@needs_torch
@pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
def test_cell_calls_are_the_strategys_cost_plus_one_rerun_per_step(strategy):
    n = 17
    cell, _, u, h0, _ = gru_problem(n)
    calls = []

    def counted(h, u_t):
        calls.append(torch.is_grad_enabled())
        return cell(u_t, h)

    tally = rt.Tally()
    h = rt.unroll(counted, h0, u, strategy=strategy, params=cell.parameters(), tally=tally)
    h.sum().backward()
    cost = strategy.cost(n)
    assert calls.count(False) == cost.forward_steps  # the engine's calls, without gradients
    assert calls.count(True) == n  # one re-run inside each step's adjoint
    assert (tally.forward_steps, tally.vjp_steps, tally.step_calls) == (cost.forward_steps, n, len(calls))
    assert tally.stats.as_cost() == cost


@needs_torch
def test_tuple_state_lstm_long_sequence():
    n = 200
    torch.manual_seed(1)
    cell = torch.nn.LSTMCell(3, 6).double()
    u = torch.randn(n, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    wrt = [h0, c0, u, *cell.parameters()]

    state = (h0, c0)
    for t in range(n):
        state = cell(u[t], state)
    expected = torch.autograd.grad(state[0].sum() + (state[1] ** 2).sum(), wrt)

    tally = rt.Tally()
    strategy = revseq.BinomialCheckpointing(checkpoints=6)
    h, c = rt.unroll(lambda s, u_t: cell(u_t, s), (h0, c0), u, strategy=strategy, params=cell.parameters(),
                     tally=tally)  # fmt: skip
    got = torch.autograd.grad(h.sum() + (c**2).sum(), wrt)
    torch.testing.assert_close((h, c), state)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)
    assert tally.stats.peak_checkpoints == 6
    assert tally.forward_steps == revseq.optimal_forward_steps(n, 6)


@needs_torch
def test_dict_state_without_inputs_and_closure_params():
    n = 23
    gen = torch.Generator().manual_seed(2)
    W = (0.5 * torch.randn(4, 4, dtype=torch.float64, generator=gen)).requires_grad_()
    b = torch.randn(4, dtype=torch.float64, generator=gen, requires_grad=True)
    x0 = {"pos": torch.randn(4, dtype=torch.float64, generator=gen, requires_grad=True),
          "vel": torch.randn(4, dtype=torch.float64, generator=gen, requires_grad=True)}  # fmt: skip

    def step(s):
        return {"pos": s["pos"] + 0.1 * s["vel"], "vel": torch.tanh(s["pos"] @ W + b)}

    s = x0
    for _ in range(n):
        s = step(s)
    wrt = [x0["pos"], x0["vel"], W, b]
    expected = torch.autograd.grad((s["pos"] ** 2).sum() + s["vel"].sum(), wrt)

    out = rt.unroll(step, x0, steps=n, strategy=revseq.RecursiveHalving(), params=[W, b])
    assert set(out) == {"pos", "vel"}
    got = torch.autograd.grad((out["pos"] ** 2).sum() + out["vel"].sum(), wrt)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)


@needs_torch
def test_only_some_inputs_need_grad_and_integer_inputs():
    # Token ids (integers, no gradient) through an embedding owned by a Module cell.
    n = 15

    class Cell(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(10, 3).double()
            self.gru = torch.nn.GRUCell(3, 5).double()

        def forward(self, h, token):
            return self.gru(self.embed(token), h)

    torch.manual_seed(3)
    cell = Cell()
    tokens = torch.randint(0, 10, (n, 2))
    h0 = torch.zeros(2, 5, dtype=torch.float64)  # needs no gradient
    h = h0
    for t in range(n):
        h = cell(h, tokens[t])
    expected = torch.autograd.grad((h**2).sum(), list(cell.parameters()))

    h = rt.unroll(cell, h0, tokens, strategy=revseq.BinomialCheckpointing(checkpoints=2))  # params found
    got = torch.autograd.grad((h**2).sum(), list(cell.parameters()))
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)


@needs_torch
def test_runs_on_the_meta_device_so_no_host_round_trips():
    # Meta tensors have no data: any .item(), .cpu() or .numpy() in the hot path would fail here.
    cell = torch.nn.GRUCell(3, 4, device="meta")
    u = torch.empty(12, 2, 3, device="meta", requires_grad=True)
    h0 = torch.empty(2, 4, device="meta", requires_grad=True)
    h = rt.unroll(lambda h, u_t: cell(u_t, h), h0, u, params=cell.parameters(),
                  strategy=revseq.BinomialCheckpointing(checkpoints=3))  # fmt: skip
    h.sum().backward()
    assert h.device.type == u.grad.device.type == cell.weight_hh.grad.device.type == "meta"
    assert u.grad.shape == u.shape


def saved_bytes(fn, owned):
    """Run ``fn`` under saved-tensor hooks; return (bytes of distinct storages saved, not counting
    those of ``owned`` tensors (parameters, inputs, h0, which the caller keeps anyway), the result)."""
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    mine = {t.untyped_storage().data_ptr() for t in owned}
    return sum(size for ptr, size in storages.items() if ptr not in mine), out


@needs_torch
def test_saved_bytes_stay_at_the_budget_while_the_unrolled_loop_grows():
    torch.manual_seed(4)
    width, batch, c = 32, 4, 10
    cell = torch.nn.GRUCell(width, width)
    state_bytes = batch * width * 4
    measured = {}
    for n in (1000, 2000):
        u = torch.randn(n, batch, width, requires_grad=True)
        h0 = torch.zeros(batch, width, requires_grad=True)
        owned = [u, h0, *cell.parameters()]

        def plain(u=u, h0=h0):
            h = h0
            for t in range(u.shape[0]):
                h = cell(u[t], h)
            return h

        def checkpointed(u=u, h0=h0):
            return rt.unroll(lambda h, u_t: cell(u_t, h), h0, u, params=cell.parameters(),
                             strategy=revseq.BinomialCheckpointing(checkpoints=c))  # fmt: skip

        plain_bytes, _ = saved_bytes(plain, owned)
        ours, out = saved_bytes(checkpointed, owned)
        measured[n] = (plain_bytes, ours)
        # The unrolled graph holds more than one state per step; ours, the c checkpoints at most.
        assert plain_bytes >= n * state_bytes
        assert 0 < ours <= c * state_bytes
        del out
    assert measured[2000][0] >= 1.9 * measured[1000][0]  # grows with n
    assert measured[2000][1] == measured[1000][1]  # does not


@needs_torch
def test_the_backward_pass_holds_one_steps_graph_at_a_time():
    # Tensors saved for backward that are still alive, sampled whenever one is saved: recomputed
    # steps must build no graph, and each re-run step's graph must be gone before the next.
    n = 40
    cell, _, u, h0, _ = gru_problem(n)
    alive, peak = set(), [0]

    def pack(t):
        key = object()
        alive.add(key)
        weakref.finalize(t, alive.discard, key)
        peak[0] = max(peak[0], len(alive))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        h = cell(u[0], h0)
    one_step = len(alive)  # a plain step saves this many (parameters included, which never die)
    del h
    h = rt.unroll(lambda h, u_t: cell(u_t, h), h0, u, params=cell.parameters(), strategy=revseq.Recompute())
    alive.clear()
    peak[0] = 0
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        h.sum().backward()
    assert 0 < peak[0] <= one_step + len(list(cell.parameters()))


@needs_torch
def test_checkpoints_go_through_saved_tensor_hooks_that_move_them():
    # A hook that stores a copy elsewhere and gives back another copy (what save_on_cpu does
    # across devices): the backward pass must use what the hooks give back, and stay exact.
    n = 25
    cell, readout, u, h0, loss = gru_problem(n)
    wrt = [h0, u, *cell.parameters(), *readout.parameters()]
    expected = torch.autograd.grad(loss(*unrolled(cell, readout, u, h0)), wrt)
    packed = []

    def pack(t):
        packed.append(t.shape)
        return t.clone()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t.clone()):
        h, ys = rt.unroll(lambda h, u_t: cell(u_t, h), h0, u, output=readout, params=cell.parameters(),
                          strategy=revseq.BinomialCheckpointing(checkpoints=4))  # fmt: skip
    assert packed.count(h0.shape) >= 4  # x_0 and the three other checkpoints
    got = torch.autograd.grad(loss(h, ys), wrt)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)


@needs_torch
def test_checkpoints_are_freed_with_the_graph_when_backward_never_runs():
    cell, _, u, h0, _ = gru_problem(30)
    saved = []

    def pack(t):
        saved.append(weakref.ref(t))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        h = rt.unroll(lambda h, u_t: cell(u_t, h), h0, u, params=cell.parameters(),
                      strategy=revseq.BinomialCheckpointing(checkpoints=4))  # fmt: skip
    theirs = {id(t) for t in (h0, u, *cell.parameters())}  # saved too, so that autograd sees writes into them
    ours = [r for r in saved if r() is not None and id(r()) not in theirs]
    assert len(ours) == 3  # x_0 is h0 itself; three more checkpoints
    del h  # no gc.collect(): reference counting alone must free them (no cycle)
    assert all(r() is None for r in ours)


@needs_torch
def test_second_backward_replays_with_retain_graph_and_raises_without():
    n = 20
    cell, readout, u, h0, loss = gru_problem(n)
    wrt = [h0, u, *cell.parameters()]
    h_ref, ys_ref = unrolled(cell, readout, u, h0)
    expected = torch.autograd.grad(loss(h_ref, ys_ref), wrt)

    tally = rt.Tally()
    strategy = revseq.BinomialCheckpointing(checkpoints=3)
    h, ys = rt.unroll(lambda h, u_t: cell(u_t, h), h0, u, strategy=strategy, output=readout,
                      params=cell.parameters(), tally=tally)  # fmt: skip
    total = loss(h, ys)
    first = torch.autograd.grad(total, wrt, retain_graph=True)
    second = torch.autograd.grad(total, wrt)
    for a, b, e in zip(first, second, expected, strict=True):
        torch.testing.assert_close(a, e)
        torch.testing.assert_close(b, e)
    assert tally.forward_steps == 2 * strategy.cost(n).forward_steps  # the replay costs a whole run
    assert tally.vjp_steps == 2 * n
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        torch.autograd.grad(total, wrt)


@needs_torch
def test_without_gradients_the_plain_loop_runs():
    n = 12
    cell, readout, u, h0, _ = gru_problem(n)
    h_ref, ys_ref = unrolled(cell, readout, u, h0)
    tally = rt.Tally()
    with torch.no_grad():
        h, ys = rt.unroll(lambda h, u_t: cell(u_t, h), h0, u, output=readout, tally=tally)
    torch.testing.assert_close((h, ys), (h_ref, ys_ref))
    assert not h.requires_grad
    assert (tally.forward_steps, tally.vjp_steps, tally.stats) == (n, 0, None)


@needs_torch
def test_a_captured_tensor_needing_grad_is_an_error_not_a_lost_gradient():
    W = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, dtype=torch.float64, requires_grad=True)
    h = rt.unroll(lambda h: torch.tanh(h @ W), h0, steps=5)
    with pytest.raises(revseq.ParameterError, match=r"pass it in params=\[\.\.\.\]"):
        h.sum().backward()
    # Nothing passed needs grad: the plain loop's first step catches it too.
    with pytest.raises(revseq.ParameterError, match="requires grad but was not passed"):
        rt.unroll(lambda h: torch.tanh(h @ W), h0.detach(), steps=5)


BAD_ARGUMENTS = [
    (lambda: {"inputs": None}, "steps must be given when there are no inputs"),
    (lambda: {"steps": 4}, "steps must equal the inputs' first dimension 5, got 4"),
    (lambda: {"steps": 0}, "steps must be an int >= 1, got 0"),
    (lambda: {"inputs": (torch.zeros(5, 2), torch.zeros(4, 2))}, "first dimension of length n >= 1"),
    (lambda: {"strategy": revseq.StoreAll}, "strategy must be a ReversalStrategy instance, got the class StoreAll"),
    (lambda: {"h0": [1.0, 2.0]}, "h0 must be a tensor or a tuple, list or dict of tensors"),
    (lambda: {"h0": torch.zeros(3, dtype=torch.int64)}, "h0 must hold floating-point tensors"),
    (lambda: {"params": [1.0]}, "params must be tensors"),
    (lambda: {"tally": {}}, "tally must be a revseq.torch.Tally"),
]


@needs_torch
@pytest.mark.parametrize(("make", "message"), BAD_ARGUMENTS, ids=[m for _, m in BAD_ARGUMENTS])
def test_bad_arguments_are_rejected_with_a_message(make, message):
    args = {"h0": torch.zeros(3), "inputs": torch.zeros(5, 2)} | make()
    h0, inputs = args.pop("h0"), args.pop("inputs")
    with pytest.raises(revseq.ParameterError, match=re.escape(message)):
        rt.unroll(lambda h, u_t: h, h0, inputs, **args)


@needs_torch
def test_a_cell_changing_the_state_structure_is_named():
    with pytest.raises(revseq.StepError, match=r"cell must return a state of h0's structure \(tensor, tensor\)"):
        rt.unroll(lambda s: s[0], (torch.zeros(2), torch.zeros(2)), steps=3)


@needs_torch
@pytest.mark.parametrize("grad", [True, False], ids=["checkpointed", "plain-loop"])
def test_outputs_of_another_shape_at_a_later_step_are_named(grad):
    h0 = torch.zeros(2, 3, requires_grad=grad)
    with pytest.raises(revseq.StepError, match=r"same shape and dtype at every step.*y_4"):
        rt.unroll(lambda h: h + 1, h0, steps=6, output=lambda h: h[:, : 1 + int(h[0, 0] > 4)])


def test_import_names_the_extra_when_torch_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail as if absent
    monkeypatch.delitem(sys.modules, "revseq.torch", raising=False)
    with pytest.raises(ImportError, match=r"revseq.torch needs PyTorch: pip install 'revseq\[torch\]'"):
        importlib.import_module("revseq.torch")


def test_the_core_never_imports_torch():
    code = "import sys, revseq, revseq.testing; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
