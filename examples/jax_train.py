"""Training a GRU in JAX on sequences of 10^4 steps, the whole training step jitted, with binomial checkpointing.

The task is rnn_torch.py's: the target at step t is a leaky running sum of
the inputs, y_t = 0.9 y_{t-1} + u_t (scaled to unit variance), and a GRU
cell (written out in jax.numpy) reads u_t and a linear readout predicts y_t
from its state, at all 10^4 steps of every sequence. The loss, its
``jax.value_and_grad`` and a hand-written Adam update are one ``jax.jit``-ed
function; the only change from plain JAX is ``revseq.jax.scan`` in place of
``jax.lax.scan``, with a strategy. Its forward pass keeps only the
strategy's checkpoints, in a buffer of c slots, and its reverse pass runs
the schedule inside the compiled code (a ``lax.while_loop``), recomputing
the steps it did not keep. The gradient is ``lax.scan``'s (checked first,
over 200 steps), so the loss goes down as it would with ``lax.scan``, while
the compiled step holds about c states (its checkpoints) instead of about
ten per step (``lax.scan`` keeps the GRU's gates and activations of every
step), for about 1.5 times the steps of the cell (the table's last columns).

Memory is read from the compiler, not assumed:
``jax.jit(train_step).lower(...).compile().memory_analysis()`` gives the
temporary bytes the compiled training step allocates (what backprop keeps,
the checkpoints, the cotangents) beyond its arguments and outputs. Only
compiling is needed, so ``--memory-only`` sizes runs that would not fit:
``python examples/jax_train.py --memory-only --steps 100000``. The per-step
loss is summed in the scan's carry rather than returned as ``ys``, which
would cost n outputs whatever the strategy.

Run it as a script: ``python examples/jax_train.py`` (``--help`` for sizes;
``--steps 300 --width 16 --epochs 10`` takes half a minute on two cores,
nearly all of it XLA compiling four functions).
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import revseq
import revseq.jax as rj

Params = dict[str, jax.Array]
Scan = Callable[..., tuple[Any, Any]]  # jax.lax.scan or revseq.jax.scan with its strategy bound


def make_data(n: int, batch: int, seed: int = 0) -> tuple[jax.Array, jax.Array]:
    def leak(level: jax.Array, u_t: jax.Array) -> tuple[jax.Array, jax.Array]:
        level = 0.9 * level + u_t
        return level, level

    u = jax.random.normal(jax.random.key(seed), (n, batch, 1))
    _, y = jax.lax.scan(leak, jnp.zeros((batch, 1)), u)
    return u, y / y.std()


def init_params(width: int, seed: int = 0) -> Params:
    """torch.nn.GRUCell's and Linear's initialisation: uniform in +-1/sqrt(width)."""
    shapes = {"wx": (1, 3 * width), "wh": (width, 3 * width), "bx": (3 * width,), "bh": (3 * width,)}
    shapes |= {"w_out": (width, 1), "b_out": (1,)}
    keys = jax.random.split(jax.random.key(seed), len(shapes))
    bound = 1 / np.sqrt(width)
    return {
        name: jax.random.uniform(key, shape, minval=-bound, maxval=bound)
        for key, (name, shape) in zip(keys, shapes.items(), strict=True)
    }


def gru(p: Params, h: jax.Array, u_t: jax.Array) -> jax.Array:
    """One step of torch.nn.GRUCell: reset gate r, update gate z, candidate c."""
    xr, xz, xc = jnp.split(u_t @ p["wx"] + p["bx"], 3, axis=-1)
    hr, hz, hc = jnp.split(h @ p["wh"] + p["bh"], 3, axis=-1)
    r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
    return (1 - z) * jnp.tanh(xc + r * hc) + z * h


def loss(p: Params, u: jax.Array, y: jax.Array, scan: Scan) -> jax.Array:
    def step(carry: tuple[jax.Array, jax.Array], inputs: tuple[jax.Array, jax.Array]):
        h, total = carry
        u_t, y_t = inputs
        h = gru(p, h, u_t)
        error = h @ p["w_out"] + p["b_out"] - y_t
        return (h, total + jnp.sum(error**2)), None  # no ys: they would cost n outputs

    h0 = jnp.zeros((u.shape[1], p["wh"].shape[0]))
    (_, total), _ = scan(step, (h0, jnp.zeros(())), (u, y))
    return total / y.size


class TrainState(NamedTuple):
    """The parameters and Adam's moments (a NamedTuple is a pytree)."""

    params: Params
    m: Params
    v: Params
    count: jax.Array

    @classmethod
    def start(cls, params: Params) -> TrainState:
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return cls(params, zeros, zeros, jnp.zeros((), jnp.int32))


def make_train_step(scan: Scan, lr: float = 0.06, decay: float = 0.65, b1: float = 0.9, b2: float = 0.999):
    """``train_step(state, u, y) -> (state, loss)``: the loss, its gradient and one Adam update.

    The learning rate decays by ``decay`` per step, a schedule for a short run of a few full-batch steps.
    """

    def train_step(state: TrainState, u: jax.Array, y: jax.Array) -> tuple[TrainState, jax.Array]:
        value, grads = jax.value_and_grad(loss)(state.params, u, y, scan)
        count = state.count + 1
        tree_map = jax.tree_util.tree_map
        m = tree_map(lambda m, g: b1 * m + (1 - b1) * g, state.m, grads)
        v = tree_map(lambda v, g: b2 * v + (1 - b2) * g**2, state.v, grads)
        scale = lr * decay ** (count - 1) * jnp.sqrt(1 - b2**count) / (1 - b1**count)
        params = tree_map(lambda p, m, v: p - scale * m / (jnp.sqrt(v) + 1e-8), state.params, m, v)
        return TrainState(params, m, v, count), value

    return train_step


def scan_for(strategy: revseq.ReversalStrategy | None, tally: rj.Tally | None = None) -> Scan:
    if strategy is None:  # the baseline: backpropagation through jax.lax.scan, which keeps every step's residuals
        return jax.lax.scan
    return functools.partial(rj.scan, strategy=strategy, tally=tally)


def check_gradient(params: Params, u: jax.Array, y: jax.Array, strategy: revseq.ReversalStrategy, n: int) -> None:
    u, y = u[:n], y[:n]
    plain = jax.jit(jax.grad(functools.partial(loss, scan=jax.lax.scan)))(params, u, y)
    mine = jax.jit(jax.grad(functools.partial(loss, scan=scan_for(strategy))))(params, u, y)
    difference = max(map(float, jax.tree.leaves(jax.tree.map(lambda a, b: jnp.max(jnp.abs(a - b)), plain, mine))))
    largest = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(plain))
    print(f"gradient over {n} steps, {strategy!r} vs jax.lax.scan: largest difference {difference:.1e}", end=" ")
    print(f"(largest entry {largest:.1e})")
    assert difference <= 1e-5 * largest, "revseq.jax.scan's gradient is not jax.lax.scan's"


def compile_step(strategy: revseq.ReversalStrategy | None, state: TrainState, u: jax.Array, y: jax.Array):
    """The train step with ``strategy``'s scan, compiled for these shapes, with the Tally its scan adds to."""
    tally = rj.Tally()
    return jax.jit(make_train_step(scan_for(strategy, tally))).lower(state, u, y).compile(), tally


def compare_memory(state: TrainState, u: jax.Array, y: jax.Array, strategies: list, run: bool) -> dict:
    """Compiles the train step for each strategy and prints its temp bytes (and, if ``run``, one step's cost)."""
    n, batch, width = u.shape[0], u.shape[1], state.params["wh"].shape[0]
    one = (batch * width + 1) * u.dtype.itemsize  # the carry: h and the running loss
    print(f"n = {n}, GRU width {width}, batch {batch}: one state = {one} bytes")
    print(f"{'scan in the jitted train step':56} {'temp bytes':>12} {'states':>9} {'fwd + vjp steps':>15}"
          f" {'compile s':>9} {'step s':>7}")  # fmt: skip
    compiled = {}
    for strategy in strategies:
        start = time.perf_counter()
        compiled[strategy] = step, tally = compile_step(strategy, state, u, y)
        compiling = time.perf_counter() - start
        temp = step.memory_analysis().temp_size_in_bytes
        calls, seconds = "", ""
        if run:
            start = time.perf_counter()
            jax.block_until_ready(step(state, u, y))
            seconds = f"{time.perf_counter() - start:.2f}"
            calls = f"{n} + {n}" if strategy is None else f"{tally.forward_steps} + {tally.vjp_steps}"
        name = "jax.lax.scan" if strategy is None else repr(strategy)  # revseq.jax.scan with it
        print(f"{name:56} {temp / 1e6:>9.2f} MB {temp / one:>9.1f} {calls:>15} {compiling:>9.1f} {seconds:>7}")
    return compiled


def train(state: TrainState, u: jax.Array, y: jax.Array, compiled: tuple[Callable, rj.Tally], epochs: int, name: str):
    train_step, tally = compiled
    print(f"training on {u.shape[1]} sequences of {u.shape[0]} steps with {name}, one jitted train step per epoch")
    losses = []
    for epoch in range(epochs):
        start = time.perf_counter()
        before = tally.forward_steps, tally.vjp_steps
        state, value = train_step(state, u, y)
        losses.append(float(value))  # waits for the step
        calls = f"{tally.forward_steps - before[0]} + {tally.vjp_steps - before[1]} steps"
        print(f"epoch {epoch}: loss {losses[-1]:.4f}   ({calls}, {time.perf_counter() - start:.1f} s)")
    assert losses[-1] < 0.5 * losses[0], "the loss did not go down"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--checkpoints", type=int, default=None, help="default: about sqrt(2 steps)")
    parser.add_argument("--memory-only", action="store_true", help="only compile, and compare more strategies")
    args = parser.parse_args()
    u, y = make_data(args.steps, args.batch)
    state = TrainState.start(init_params(args.width))
    checkpoints = args.checkpoints
    if checkpoints is None:  # BinomialCheckpointing's own default, written out so that the tables show it
        checkpoints = revseq.BinomialCheckpointing().budget(args.steps)
    strategy = revseq.BinomialCheckpointing(checkpoints=checkpoints)
    strategies = [None, strategy]
    if args.memory_only:
        strategies += [revseq.StoreAll(), revseq.BinomialCheckpointing(checkpoints=20), revseq.RecursiveHalving()]
    else:
        check_gradient(state.params, u, y, revseq.BinomialCheckpointing(checkpoints=8), min(args.steps, 200))
        print()
    compiled = compare_memory(state, u, y, strategies, run=not args.memory_only)
    if not args.memory_only:
        print()
        train(state, u, y, compiled[strategy], args.epochs, repr(strategy))


if __name__ == "__main__":
    main()
