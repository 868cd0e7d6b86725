"""revseq.torch with cells that are not pure functions of their arguments (issue 13, items 1-5).

Random numbers, autocast, module buffers, in-place writes, double backward
(gradient penalties) and torch.func transforms: each is either reproduced exactly, checked
against autograd through the plain loop a user would write (same seed, same
data), or refused with a revseq error. Tensors are float64 unless autocast
needs float32; the comparisons are exact (``rtol=0, atol=0``) where the
computation is the same, which it is: every step's VJP is the one autograd
makes in the unrolled graph.
"""

from __future__ import annotations

import os

import pytest
from registry import every_builtin

import revseq

torch = pytest.importorskip("torch")
import revseq.torch as rt  # noqa: E402

STRATEGIES = every_builtin()
EXACT = {"rtol": 0.0, "atol": 0.0}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def grads(loss, tensors):
    return torch.autograd.grad(loss, tensors, allow_unused=True)


def assert_same(got, expected):
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, **EXACT)


class DropoutGRU(torch.nn.Module):
    """A GRU cell whose new state goes through dropout: a fresh mask at every step, in training mode."""

    def __init__(self, features=3, width=6, p=0.3):
        super().__init__()
        self.cell = torch.nn.GRUCell(features, width).double()
        self.drop = torch.nn.Dropout(p)

    def forward(self, h, u_t):
        return self.drop(self.cell(u_t, h))


def data(n, batch=2, features=3, width=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(n, batch, features, dtype=torch.float64, generator=gen, requires_grad=True)
    h0 = torch.randn(batch, width, dtype=torch.float64, generator=gen, requires_grad=True)
    return u, h0


def plain_loop(cell, h0, u):
    h = h0
    for t in range(u.shape[0]):
        h = cell(h, u[t])
    return h


# -- 1. random numbers -------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 7, 30])
@pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
def test_dropout_is_replayed_for_every_strategy(strategy, n):
    torch.manual_seed(0)
    cell = DropoutGRU()
    u, h0 = data(n)
    wrt = [h0, u, *cell.parameters()]
    torch.manual_seed(1)
    expected_h = plain_loop(cell, h0, u)
    expected = grads((expected_h**2).sum(), wrt)
    after_plain = torch.rand(3)  # the generator as the plain loop and its backward leave it

    torch.manual_seed(1)
    h = rt.unroll(cell, h0, u, strategy=strategy)
    got = grads((h**2).sum(), wrt)
    after = torch.rand(3)
    torch.testing.assert_close(h, expected_h, **EXACT)
    assert_same(got, expected)
    torch.testing.assert_close(after, after_plain, **EXACT)  # the backward pass drew nothing the caller sees


def test_dropout_with_outputs_and_a_second_backward():
    n = 25
    torch.manual_seed(0)
    cell = DropoutGRU()
    readout = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(6, 2).double())
    u, h0 = data(n, seed=3)
    wrt = [h0, u, *cell.parameters(), *readout.parameters()]
    torch.manual_seed(5)
    h, ys = h0, []
    for t in range(n):
        h = cell(h, u[t])
        ys.append(readout(h))
    expected = grads((h**2).sum() + torch.stack(ys).sum(), wrt)

    torch.manual_seed(5)
    h, ys = rt.unroll(cell, h0, u, output=readout, strategy=revseq.BinomialCheckpointing(checkpoints=3))
    loss = (h**2).sum() + ys.sum()
    first = torch.autograd.grad(loss, wrt, retain_graph=True)
    torch.rand(7)  # the caller draws between the two backward passes: the replay must not depend on it
    second = torch.autograd.grad(loss, wrt)
    assert_same(first, expected)
    assert_same(second, expected)


def test_without_preserve_rng_state_a_cell_drawing_random_numbers_is_refused():
    torch.manual_seed(0)
    cell = DropoutGRU()
    u, h0 = data(10)
    with pytest.raises(revseq.StepError, match=r"drew random numbers.*preserve_rng_state=True"):
        rt.unroll(cell, h0, u, strategy=revseq.BinomialCheckpointing(checkpoints=2), preserve_rng_state=False)
    cell.eval()  # no dropout: deterministic, so nothing is refused
    h = rt.unroll(cell, h0, u, strategy=revseq.BinomialCheckpointing(checkpoints=2), preserve_rng_state=False)
    assert_same(grads(h.sum(), [h0]), grads(plain_loop(cell, h0, u).sum(), [h0]))
    with pytest.raises(revseq.ParameterError, match="preserve_rng_state must be a bool"):
        rt.unroll(cell, h0, u, preserve_rng_state=1)


def test_a_cell_drawing_only_at_some_steps_is_replayed():
    # Randomness that depends on the data: most steps draw nothing, so most snapshots are shared.
    n = 40
    torch.manual_seed(0)
    w = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    u = torch.randn(n, dtype=torch.float64)

    def cell(h, u_t):
        h = torch.tanh(h @ w) + u_t
        return h + 0.1 * torch.randn_like(h) if u_t > 1 else h

    h0 = torch.ones(2, 4, dtype=torch.float64)
    torch.manual_seed(9)
    expected = grads(plain_loop(cell, h0, u).sum(), [w])
    torch.manual_seed(9)
    got = grads(rt.unroll(cell, h0, u, params=[w], strategy=revseq.RecursiveHalving()).sum(), [w])
    assert_same(got, expected)


# -- 2. autocast ---------------------------------------------------------------


@pytest.mark.parametrize("cache", [True, False], ids=["weight-cache", "no-cache"])
@pytest.mark.parametrize("strategy", [revseq.StoreAll(), revseq.BinomialCheckpointing(checkpoints=3)], ids=repr)
def test_autocast_steps_are_recomputed_under_the_callers_autocast(strategy, cache):
    n = 30
    torch.manual_seed(0)
    cell = torch.nn.GRUCell(3, 6)
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(n, 2, 3, generator=gen, requires_grad=True)
    h0 = torch.randn(2, 6, generator=gen, requires_grad=True)
    wrt = [h0, u, *cell.parameters()]

    def run(unroll, enabled=True):
        with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=cache, enabled=enabled):
            if unroll:
                h = rt.unroll(lambda h, u_t: cell(u_t, h), h0, u, params=cell.parameters(), strategy=strategy)
            else:
                h = plain_loop(lambda h, u_t: cell(u_t, h), h0, u)
        return grads((h.float() ** 2).sum(), wrt)  # backward outside autocast, as usual

    expected = run(False)
    assert not torch.equal(expected[-1], run(False, enabled=False)[-1])  # autocast does change the numbers
    # With the weight cache, autograd sums each weight's per-step gradients in bfloat16 through one
    # cached cast; revseq must do the same to agree to the bit.
    assert_same(run(True), expected)


# -- 3. buffers ------------------------------------------------------------------


class Counted(torch.nn.Module):
    """A module whose output depends on a buffer it updates at every call: a recomputation must see its old value."""

    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros((), dtype=torch.float64))

    def forward(self, h):
        self.calls += 1
        return h * (1 + 0.01 * self.calls)


@pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
def test_batchnorm_buffers_end_as_the_plain_loop_leaves_them(strategy):
    n = 20
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 6).double()
    bn = torch.nn.BatchNorm1d(6).double()
    counted = Counted()
    u, h0 = data(n, batch=4, features=6)

    def cell(h, u_t):  # a closure: the modules are found while they run, not from the cell
        return counted(torch.tanh(bn(lin(h)))) + u_t

    wrt = [h0, u, *lin.parameters(), *bn.parameters()]
    expected = grads((plain_loop(cell, h0, u) ** 2).sum(), wrt)
    buffers = [b.clone() for b in (*bn.buffers(), *counted.buffers())]
    for module in (bn, counted):
        for b, reset in zip(module.buffers(), (torch.zeros_like(b) for b in module.buffers()), strict=True):
            b.copy_(reset)
    bn.running_var.fill_(1.0)

    h = rt.unroll(cell, h0, u, params=[*lin.parameters(), *bn.parameters()], strategy=strategy)
    got = grads((h**2).sum(), wrt)
    assert_same(got, expected)
    assert_same([*bn.buffers(), *counted.buffers()], buffers)
    assert int(bn.num_batches_tracked) == n


def test_a_module_first_called_after_checkpoints_were_taken_is_put_back_too():
    # Counted runs only at steps whose input is positive: it is found after x_0's snapshot was taken.
    n = 30
    counted = Counted()
    w = torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    u = torch.tensor([(-1.0) ** (t // 7) for t in range(n)], dtype=torch.float64)

    def cell(h, u_t):
        h = torch.tanh(h @ w)
        return counted(h) if u_t > 0 else h - 0.1

    h0 = torch.ones(1, 4, dtype=torch.float64)
    expected = grads(plain_loop(cell, h0, u).sum(), [w])
    calls = counted.calls.clone()
    counted.calls.zero_()
    got = grads(rt.unroll(cell, h0, u, params=[w], strategy=revseq.BinomialCheckpointing(checkpoints=3)).sum(), [w])
    assert_same(got, expected)
    torch.testing.assert_close(counted.calls, calls, **EXACT)


# -- 4. double backward -----------------------------------------------------------


class NormedDropoutGRU(DropoutGRU):
    """DropoutGRU followed by BatchNorm in training mode: random numbers and buffers in one step."""

    def __init__(self):
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(6).double()

    def forward(self, h, u_t):
        return self.norm(super().forward(h, u_t))


PENALTY_PLANS = {
    "default": {},
    "taped": {"tape": 4},
    "binomial": {"strategy": revseq.BinomialCheckpointing(checkpoints=3)},
    "multistage": {"strategy": revseq.MultistageCheckpointing(ram=2, disk=3)},
}


@pytest.mark.parametrize("plan", PENALTY_PLANS, ids=str)
def test_a_gradient_penalty_equals_the_plain_loops(plan, tmp_path):
    """create_graph=True, then a loss with the penalty: dropout and BatchNorm replayed, against the plain loop."""
    n = 20
    torch.manual_seed(0)
    cell = NormedDropoutGRU()
    readout = torch.nn.Linear(6, 1).double()
    u, h0 = data(n, batch=4, seed=2)
    params = list(cell.parameters())
    leaves = [u, h0, *params, *readout.parameters()]
    start = {k: v.clone() for k, v in cell.state_dict().items()}
    kwargs = dict(PENALTY_PLANS[plan])
    if plan == "multistage":
        kwargs["disk"] = tmp_path

    def run(unrolled):
        cell.load_state_dict(start)
        torch.manual_seed(1)
        if unrolled:
            h, ys = rt.unroll(cell, h0, u, output=readout, params=params, **kwargs)
        else:
            h, outs = h0, []
            for t in range(n):
                h = cell(h, u[t])
                outs.append(readout(h))
            ys = torch.stack(outs)
        loss = (h**2).sum() + (ys**2).sum()
        first = torch.autograd.grad(loss, [u, *params], create_graph=True)
        (loss + sum((g**2).sum() for g in first)).backward()
        total = [leaf.grad.clone() for leaf in leaves]
        for leaf in leaves:
            leaf.grad = None
        return [g.detach() for g in first], total, cell.state_dict(), torch.rand(3)

    first, total, buffers, after = run(unrolled=True)
    expected_first, expected_total, expected_buffers, expected_after = run(unrolled=False)
    assert_same(first, expected_first)  # the penalty's gradient: the plain loop's graph, to the bit
    for g, e in zip(total, expected_total, strict=True):  # summed in another order: to rounding
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    assert {k: v.tolist() for k, v in buffers.items()} == {k: v.tolist() for k, v in expected_buffers.items()}
    torch.testing.assert_close(after, expected_after, **EXACT)  # the generator as the plain loop leaves it
    assert not list(tmp_path.iterdir())


def test_hessian_and_double_backward_equal_the_plain_loops():
    torch.manual_seed(0)
    w = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    h0 = torch.ones(2, 4, dtype=torch.float64)

    def loss(weight, unrolled):
        if unrolled:
            h = rt.unroll(lambda h: torch.tanh(h @ weight), h0, steps=10, params=[weight])
        else:
            h = h0
            for _ in range(10):
                h = torch.tanh(h @ weight)
        return h.pow(2).sum()

    hessian = torch.autograd.functional.hessian(lambda v: loss(v, True), w)
    # The second order runs partly through the first-order backward pass (the cotangent of h depends on w),
    # which sums in another order than the unrolled graph: equal to rounding.
    close = {"rtol": 1e-12, "atol": 1e-14}
    torch.testing.assert_close(hessian, torch.autograd.functional.hessian(lambda v: loss(v, False), w), **close)
    (g,) = torch.autograd.grad(loss(w, True), w, create_graph=True)
    g.sum().backward()
    got_w = w.grad.clone()
    w.grad = None
    (e,) = torch.autograd.grad(loss(w, False), w, create_graph=True)
    e.sum().backward()
    torch.testing.assert_close(g, e, **EXACT)  # the gradient itself: the plain loop's graph, to the bit
    torch.testing.assert_close(got_w, w.grad, **close)


def test_a_differentiable_backward_costs_one_probe_step_and_the_n_steps_with_gradients():
    calls = {True: 0, False: 0}  # step calls with and without gradients, counted from outside
    w = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    h0 = torch.ones(2, 4, dtype=torch.float64)

    def cell(h):
        calls[torch.is_grad_enabled()] += 1
        return torch.tanh(h @ w)

    def count(create_graph):
        calls.update({True: 0, False: 0})
        h = rt.unroll(cell, h0, steps=30, params=[w], strategy=strategy)
        torch.autograd.grad(h.sum(), w, create_graph=create_graph)
        return dict(calls)

    strategy = revseq.BinomialCheckpointing(checkpoints=3)
    # The usual pass: the schedule's forward steps without gradients, then one re-run per step with them.
    assert count(False) == {False: strategy.cost(30).forward_steps, True: 30}
    # Differentiable: the forward sweep's n calls, then a probe step and the n steps from h0, with gradients.
    assert count(True) == {False: 30, True: 30 + 1}


def test_a_parameter_computed_from_others_gets_its_gradient_and_a_captured_one_is_refused():
    """params may have a history (a weight made from others): the check stops there, and not before a sibling."""
    w = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    h0 = torch.ones(2, 4, dtype=torch.float64)
    for plan in ({}, {"strategy": revseq.BinomialCheckpointing(checkpoints=2)}):
        v = w * 2
        (got,) = grads(rt.unroll(lambda h, v=v: torch.tanh(h @ v), h0, steps=6, params=[v], **plan).sum(), [w])
        v, h = w * 2, h0
        for _ in range(6):
            h = torch.tanh(h @ v)
        assert_same([got], grads(h.sum(), [w]))
    a, b = torch.randn(2, 4, 4, dtype=torch.float64, requires_grad=True).unbind(0)  # one node makes both
    h = rt.unroll(lambda h: torch.tanh(h @ a @ b), h0, steps=6, params=[a])
    with pytest.raises(revseq.ParameterError, match="not passed to unroll"):
        h.sum().backward()


def test_a_captured_tensor_is_refused_in_a_differentiable_backward_too():
    w = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)  # captured, not in params
    h0 = torch.ones(2, 4, dtype=torch.float64)
    h = rt.unroll(lambda h: torch.tanh(h @ w @ v), h0, steps=6, params=[w])
    with pytest.raises(revseq.ParameterError, match="not passed to unroll"):
        torch.autograd.grad(h.sum(), w, create_graph=True)


# -- 5. torch.func -------------------------------------------------------------------


@pytest.mark.parametrize("transform", ["vmap", "grad", "jacrev"])
def test_torch_func_transforms_are_refused_with_what_to_do(transform):
    w = torch.randn(4, 4, requires_grad=True)  # captured, not in params: under vmap its gradient was lost silently

    def f(h0):
        return rt.unroll(lambda h: torch.tanh(h @ w), h0, steps=5).sum()

    fn = getattr(torch.func, transform)(f)
    with pytest.raises(revseq.ParameterError, match=r"torch\.func transforms.*batch dimension.*torch\.autograd\.grad"):
        fn(torch.randn(3, 4) if transform == "vmap" else torch.randn(4))


# -- in-place writes ---------------------------------------------------------------------


def test_a_cell_writing_into_its_argument_is_refused_and_h0_is_untouched():
    w = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    h0 = torch.ones(2, 4, dtype=torch.float64)
    before = h0.clone()
    with pytest.raises(revseq.StepError, match=r"wrote into its argument h in place at step 0"):
        rt.unroll(lambda h: h.mul_(0.5) @ w, h0, steps=5, params=[w])
    # The write happened before it could be seen; the message says so, and nothing else ran.
    assert not torch.equal(h0, before)


def test_a_cell_changing_a_parameter_is_refused_and_so_is_a_change_before_backward():
    w = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    scale = torch.ones((), dtype=torch.float64, requires_grad=True)
    h0 = torch.ones(2, 4, dtype=torch.float64)

    def cell(h):
        with torch.no_grad():
            scale.mul_(1.01)
        return torch.tanh(h @ w) * scale

    with pytest.raises(revseq.StepError, match=r"modified a parameter in place at step 0"):
        rt.unroll(cell, h0, steps=5, params=[w, scale])
    h = rt.unroll(lambda h: torch.tanh(h @ w), h0, steps=5, params=[w])
    with torch.no_grad():
        w.add_(1.0)  # an optimizer step between forward and backward: the recomputation would see new weights
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        h.sum().backward()


# -- what is not replayed: every recomputed state is checked against the first sweep's -------------------


def own_generator_cell(w):
    """A cell drawing noise from a torch.Generator of its own: recomputations draw other numbers."""
    generator = torch.Generator().manual_seed(3)

    def cell(h, u_t):
        noise = torch.rand(h.shape, generator=generator, dtype=h.dtype)
        return torch.tanh(h @ w + u_t) * (0.5 + noise)

    return cell


def counter_cell(w):
    """A cell reading a counter it changes in place, held in a closure (not a module buffer)."""
    count = torch.zeros(())

    def cell(h, u_t):
        count.add_(1)
        return torch.tanh(h @ w + u_t) + 1e-3 * count

    return cell


DIFFERS = {
    "default": {},
    "taped": {"tape": 3},
    "binomial": {"strategy": revseq.BinomialCheckpointing(checkpoints=3)},
    "multistage": {"strategy": revseq.MultistageCheckpointing(ram=2, disk=3)},
}


def noisy_output(h):
    """An output drawing from a torch.Generator of its own (the state itself is pure)."""
    if not hasattr(noisy_output, "generator"):
        noisy_output.generator = torch.Generator().manual_seed(5)
    return h * (0.5 + torch.rand(h.shape, generator=noisy_output.generator, dtype=h.dtype))


@pytest.mark.parametrize("plan", DIFFERS, ids=str)
def test_a_recomputed_output_that_differs_is_refused(plan, tmp_path):
    w, u, h0, kwargs = tanh_case(20, plan, tmp_path)
    h, ys = rt.unroll(lambda h, u_t: torch.tanh(h @ w + u_t), h0, u, output=noisy_output, params=[w], **kwargs)
    with pytest.raises(revseq.StepError, match=r"gave another state or output when recomputed"):
        (h.sum() + ys.pow(2).sum()).backward()


def tanh_case(n, plan, directory):
    """``(w, u, h0, unroll's keyword arguments for plan)``: a tanh cell's weight and data for n steps."""
    torch.manual_seed(0)
    w = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    u = torch.randn(n, 2, 4, dtype=torch.float64)
    kwargs = dict(DIFFERS[plan])
    if plan == "multistage":
        kwargs["disk"] = directory
    return w, u, torch.zeros(2, 4, dtype=torch.float64), kwargs


@pytest.mark.parametrize("plan", DIFFERS, ids=str)
@pytest.mark.parametrize("make", [own_generator_cell, counter_cell], ids=["own-generator", "closure-counter"])
def test_a_recomputed_state_that_differs_is_refused(make, plan, tmp_path):
    """Before, these gave wrong gradients without a word; now the backward pass names the step."""
    w, u, h0, kwargs = tanh_case(20, plan, tmp_path)
    h = rt.unroll(make(w), h0, u, params=[w], **kwargs)
    with pytest.raises(revseq.StepError, match=r"step \d+ gave another state or output when recomputed.*Generator"):
        h.pow(2).sum().backward()
    assert w.grad is None
    assert files_under(tmp_path) == []
    h = rt.unroll(make(w), h0, u, params=[w], **kwargs)  # and a differentiable backward pass, which replays
    with pytest.raises(revseq.StepError, match=r"gave another state or output when recomputed"):
        torch.autograd.grad(h.pow(2).sum(), w, create_graph=True)


def test_the_fingerprint_check_leaves_pure_cells_and_the_callers_generator_alone():
    """No false alarm where recomputation is exact (float32, bfloat16 autocast), and no random number drawn."""
    torch.manual_seed(0)
    cell = DropoutGRU().float()
    u, h0 = (t.detach().float().requires_grad_() for t in data(40))
    wrt = [h0, u, *cell.parameters()]
    for autocast in (False, True):
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            expected = grads((plain_loop(cell, h0, u).float() ** 2).sum(), wrt)
        after_plain = torch.rand(2)
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            got = grads((rt.unroll(cell, h0, u, tape=7).float() ** 2).sum(), wrt)
        assert_same(got, expected)
        torch.testing.assert_close(torch.rand(2), after_plain, **EXACT)


# -- a disk level (issue 13, item 8) -------------------------------------------------------


def files_under(directory):
    return [name for _, _, names in os.walk(directory) for name in names]


def dropout_gru_in(dtype, n):
    """A DropoutGRU case in ``dtype``: ``(cell, u, h0, wrt, expected)``, the plain loop run after seed 1."""
    torch.manual_seed(0)
    cell = DropoutGRU()
    cell.cell.to(dtype)
    u, h0 = data(n)
    u, h0 = u.detach().to(dtype).requires_grad_(), h0.detach().to(dtype).requires_grad_()
    wrt = [h0, u, *cell.parameters()]
    torch.manual_seed(1)
    return cell, u, h0, wrt, grads((plain_loop(cell, h0, u).float() ** 2).sum(), wrt)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
def test_multistage_keeps_tensor_checkpoints_on_disk_and_removes_them(tmp_path, dtype):
    n = 60
    cell, u, h0, wrt, expected = dropout_gru_in(dtype, n)
    strategy = revseq.MultistageCheckpointing(ram=2, disk=4)
    tally = rt.Tally()
    torch.manual_seed(1)
    h = rt.unroll(cell, h0, u, strategy=strategy, disk=tmp_path, tally=tally)
    assert len(files_under(tmp_path)) == 4  # the disk checkpoints of the forward sweep, as the schedule says
    got = grads((h.float() ** 2).sum(), wrt)
    assert_same(got, expected)  # bfloat16 states go through the files as raw bytes, unchanged
    assert tally.stats.as_cost() == strategy.cost(n)
    assert tally.stats.disk_writes > 0
    assert files_under(tmp_path) == []


def test_disk_checkpoints_go_with_the_graph_when_backward_never_runs(tmp_path):
    cell = DropoutGRU().eval()
    u, h0 = data(40)
    h = rt.unroll(cell, h0, u, strategy=revseq.MultistageCheckpointing(ram=2, disk=3), disk=tmp_path)
    assert files_under(tmp_path)
    del h  # reference counting alone frees the graph, the paused walk and its disk level
    assert files_under(tmp_path) == []


def test_disk_must_be_a_directory_or_host_memory():
    u, h0 = data(3)
    with pytest.raises(revseq.ParameterError, match=r"disk must be a directory.*HostMemory\(\).*got MemoryStore"):
        rt.unroll(DropoutGRU(), h0, u, disk=revseq.MemoryStore())
    with pytest.raises(revseq.ParameterError, match=r"pin_memory must be a bool"):
        rt.HostMemory(pin_memory="yes")


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("tape", [None, 5], ids=["per-step", "segments"])
def test_host_memory_as_the_disk_level(tmp_path, monkeypatch, dtype, tape):
    """HostMemory holds the schedule's disk checkpoints, in both passes, as tensors: no file anywhere."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where a DiskStore would go by default
    n = 60
    cell, u, h0, wrt, expected = dropout_gru_in(dtype, n)
    strategy = revseq.MultistageCheckpointing(ram=2, disk=4)
    tally = rt.Tally()
    torch.manual_seed(1)
    h = rt.unroll(cell, h0, u, strategy=strategy, disk=rt.HostMemory(), tape=tape, tally=tally)
    got = grads((h.float() ** 2).sum(), wrt)
    assert_same(got, expected)
    segments = n if tape is None else -(-(n - 1) // tape)  # the walk's steps: steps, or segments after the first
    stats = tally.stats
    assert stats.as_cost() == strategy.cost(segments)
    assert stats.disk_writes > 0
    assert stats.disk_reads > 0
    assert stats.disk_bytes_written == stats.disk_writes * h0.nbytes  # each write one state, counted from outside
    assert stats.disk_bytes_read == stats.disk_reads * h0.nbytes
    assert files_under(tmp_path) == []


def test_recurrent_takes_a_disk_level():
    torch.manual_seed(0)
    rnn = torch.nn.GRU(3, 5, num_layers=2).double()
    x = torch.randn(30, 2, 3, dtype=torch.float64, requires_grad=True)
    tally = rt.Tally()
    strategy = revseq.MultistageCheckpointing(ram=2, disk=3)
    module = rt.Recurrent(rnn, strategy=strategy, disk=rt.HostMemory(), tally=tally)
    assert "disk=HostMemory(pin_memory=True)" in repr(module)
    output, h_n = module(x)
    wrt = [x, *rnn.parameters()]
    got = grads(output.sum() + h_n.sum(), wrt)
    expected_output, expected_h_n = rnn(x)
    torch.testing.assert_close(output, expected_output)
    for g, e in zip(got, grads(expected_output.sum() + expected_h_n.sum(), wrt), strict=True):
        torch.testing.assert_close(g, e)
    assert tally.stats.as_cost() == strategy.cost(30)


# -- an accelerator, where there is one (issue 13, item 10) ------------------------------------


def accelerators():
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found or [pytest.param("cuda", marks=pytest.mark.skip(reason="no CUDA or MPS device on this machine"))]


@pytest.mark.parametrize("device", accelerators())
def test_on_an_accelerator_dropout_is_replayed_from_its_generator(device):
    n = 30
    torch.manual_seed(0)
    cell = DropoutGRU().float().to(device)
    u, h0 = (t.detach().float().to(device).requires_grad_() for t in data(n))
    wrt = [h0, u, *cell.parameters()]
    torch.manual_seed(1)
    expected = grads((plain_loop(cell, h0, u) ** 2).sum(), wrt)
    torch.manual_seed(1)
    h = rt.unroll(cell, h0, u, strategy=revseq.BinomialCheckpointing(checkpoints=3))
    assert h.device.type == device
    for g, e in zip(grads((h**2).sum(), wrt), expected, strict=True):
        torch.testing.assert_close(g, e)  # kernels may sum in other orders on a device; masks must agree
    # The disk level in pinned host memory: copies to the host and back without waiting for the device.
    for pin in (True, False):
        tally = rt.Tally()
        torch.manual_seed(1)
        strategy = revseq.MultistageCheckpointing(ram=2, disk=4)
        h = rt.unroll(cell, h0, u, strategy=strategy, disk=rt.HostMemory(pin_memory=pin), tally=tally)
        for g, e in zip(grads((h**2).sum(), wrt), expected, strict=True):
            torch.testing.assert_close(g, e)
        assert tally.stats.as_cost() == strategy.cost(n)


def test_fingerprints_of_a_state_larger_than_the_weights_period():
    """A state of more than 2^16 elements is weighed in periods: a noisy cell is still refused, a pure one not."""
    w = torch.full((), 0.9, dtype=torch.float64, requires_grad=True)
    h0 = torch.linspace(-1, 1, 2 * 40_000, dtype=torch.float64).reshape(2, 40_000)
    generator = torch.Generator().manual_seed(0)
    noisy = rt.unroll(lambda h: torch.tanh(h * w) + 1e-3 * torch.rand(h.shape, generator=generator,
                      dtype=h.dtype), h0, steps=12, params=[w], tape=3)  # fmt: skip
    with pytest.raises(revseq.StepError, match="gave another state or output when recomputed"):
        noisy.sum().backward()
    (got,) = grads(rt.unroll(lambda h: torch.tanh(h * w), h0, steps=12, params=[w], tape=3).sum(), [w])
    h = h0
    for _ in range(12):
        h = torch.tanh(h * w)
    assert_same([got], grads(h.sum(), [w]))


@pytest.mark.parametrize("plan", DIFFERS, ids=str)
def test_a_long_run_checks_every_fourth_state(plan, tmp_path):
    """Past 64 steps every 4th state is fingerprinted: a noisy cell is still refused, a pure one passes exactly."""
    w, u, h0, kwargs = tanh_case(150, plan, tmp_path)
    with pytest.raises(revseq.StepError, match=r"step (\d+) gave another state or output") as caught:
        rt.unroll(own_generator_cell(w), h0, u, params=[w], **kwargs).sum().backward()
    assert (int(caught.value.args[0].split()[1]) + 1) % 4 == 0  # a sampled state: t + 1 a multiple of 4

    def cell(h, u_t):
        return torch.tanh(h @ w + u_t)

    (got,) = grads(rt.unroll(cell, h0, u, params=[w], **kwargs).sum(), [w])
    assert_same([got], grads(plain_loop(cell, h0, u).sum(), [w]))
