"""The gradient of a long diffusion run in JAX, with checkpoints in memory and on disk, inside one ``jax.jit``.

A 1-D reaction-diffusion field of ``--size`` float64 values is advanced
``--steps`` times by an explicit step, ``u <- u + k (u[i-1] - 2u[i] + u[i+1])
+ 0.01 sin(u)``; the loss is the final field's energy. Its gradient with
respect to the initial field and ``k`` is computed three ways, each one
jitted ``jax.grad``:

- ``jax.lax.scan``, which keeps every state;
- ``revseq.jax.scan`` with ``BinomialCheckpointing(ram)``: ``ram`` states in
  memory, more recomputation;
- ``revseq.jax.scan`` with ``MultistageCheckpointing(ram=ram)`` and
  ``disk=``: the same ``ram`` states in memory plus as many as it likes on
  disk, written and read by host callbacks, in a private directory removed
  when the backward pass ends.

The three gradients must agree (checked), the directory must be empty
afterwards (checked), and the table shows the steps each made, the disk
traffic the schedule plans (``strategy.cost(n)``), the temporary memory the
compiler allocates (``memory_analysis()``, beyond arguments and outputs) and
the time of one compiled gradient. ``MultistageCheckpointing`` weighs a
write as two steps and a read as one by default (``DiskCosts``); pass your
own measured costs to plan for your disk.

Run it as a script: ``python examples/jax_disk.py`` (``--help`` for sizes;
the defaults take a few seconds on two cores, most of it compiling).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import revseq
import revseq.jax as rj


def loss(u0, k, scan, n):
    def step(u, _):
        lap = jnp.roll(u, 1) - 2 * u + jnp.roll(u, -1)
        return u + k * lap + 0.01 * jnp.sin(u), None

    u, _ = scan(step, u0, None, length=n)
    return jnp.sum(u**2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="values in the field (float64)")
    parser.add_argument("--steps", type=int, default=300, help="n, the steps of the run")
    parser.add_argument("--ram", type=int, default=3, help="checkpoints held in memory")
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    n, ram = args.steps, args.ram
    u0 = jnp.asarray(np.random.default_rng(0).normal(size=args.size))
    k = jnp.asarray(0.2)
    with tempfile.TemporaryDirectory() as parent:
        ways = {
            "lax.scan": (None, lambda f, i, x, length: jax.lax.scan(f, i, x, length=length)),
        }
        for strategy, disk in [
            (revseq.BinomialCheckpointing(checkpoints=ram), None),
            (revseq.MultistageCheckpointing(ram=ram), parent),
        ]:
            ways[type(strategy).__name__] = (
                strategy,
                lambda f, i, x, length, s=strategy, d=disk: rj.scan(f, i, x, length=length, strategy=s, disk=d),
            )
        print(f"field of {args.size} float64 ({args.size * 8 / 1e3:.0f} kB), n = {n}, {ram} checkpoints in memory")
        print(f"{'':>24} {'steps':>6} {'disk writes':>11} {'disk reads':>10} {'temp MB':>8} {'s/grad':>7}")
        first = None
        for name, (strategy, scan) in ways.items():
            grad = jax.jit(jax.grad(lambda u0, k, scan=scan: loss(u0, k, scan, n), argnums=(0, 1)))
            temp = grad.lower(u0, k).compile().memory_analysis().temp_size_in_bytes
            jax.block_until_ready(grad(u0, k))  # compiled, and run once
            start = time.perf_counter()
            got = jax.block_until_ready(grad(u0, k))
            seconds = time.perf_counter() - start
            if first is None:
                first = got
            for a, b in zip(got, first, strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-10)
            cost = strategy.cost(n) if strategy is not None else None
            steps = n if cost is None else cost.forward_steps
            writes = 0 if cost is None else cost.disk_writes
            reads = 0 if cost is None else cost.disk_reads
            print(f"{name:>24} {steps:>6} {writes:>11} {reads:>10} {temp / 1e6:>8.2f} {seconds:>7.3f}")
        assert os.listdir(parent) == [], "the disk checkpoints are removed when each backward pass ends"
    print("gradients agree; no checkpoint file is left")


if __name__ == "__main__":
    main()
