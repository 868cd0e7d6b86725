"""Reverse a 2-D diffusion on a dask cluster, with the checkpoints in the workers' memory.

The state is a dask array split into slabs of rows over the workers; a step
is explicit diffusion with a reaction term on a periodic grid (each slab
reads one halo row from each neighbour). revseq.backprop runs on it as on a
numpy array: the engine sees a dask state, keeps the checkpoints on the
cluster (revseq.dask.ClusterStore) and never pulls a state to this process.

It runs twice, each time on a fresh local cluster: with StoreAll, which
keeps every state, and with binomial checkpointing. The default grid is
sized so that StoreAll's states would not fit in the memory each worker is
given (--memory-limit; spilling, pausing and restarting are switched off
so that the run shows the high-water mark instead). Printed for each run:
the workers' memory high-water mark read from the scheduler (the bytes of
the chunks each worker holds), the workers' resident memory, the most
checkpoints held on the cluster at once, and the wall time.

    python examples/dask_diffusion.py                       # 2048 x 2048, 48 steps: 3 to 6 minutes on 2 cores
    python examples/dask_diffusion.py --size 64 --steps 8   # seconds; also checks the gradient against numpy
    python examples/dask_diffusion.py --size 64 --steps 8 --in-process   # workers as threads: quicker still
    python examples/dask_diffusion.py --scheduler tcp://127.0.0.1:8786   # an existing cluster
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

import dask
import dask.array as da
import numpy as np
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import SchedulerPlugin

import revseq
from revseq.dask import PREFIX

A, B = 0.2, 0.3  # diffusion number (stable below 0.25) and reaction rate


def lap_block(u: np.ndarray) -> np.ndarray:
    """The periodic 5-point Laplacian of a numpy array (or of a block with its halo)."""
    return np.roll(u, 1, 0) + np.roll(u, -1, 0) + np.roll(u, 1, 1) + np.roll(u, -1, 1) - 4 * u


def lap(u: Any) -> Any:
    if isinstance(u, da.Array):  # slabs of rows: one halo row from each neighbour, the columns whole
        return da.map_overlap(lap_block, u, depth={0: 1, 1: 0}, boundary="periodic", dtype=u.dtype)
    return lap_block(u)


def step(u: Any) -> Any:
    return u + A * lap(u) + B * np.sin(u)


def vjp(u: Any, g: Any) -> Any:
    return g + A * lap(g) + B * np.cos(u) * g  # the periodic Laplacian is symmetric


class Peaks(SchedulerPlugin):
    """On the scheduler: the most bytes any one worker held, all workers together, and checkpoints at once."""

    name = "revseq-example-peaks"

    def __init__(self) -> None:
        self.worker = self.total = self.checkpoints = 0
        self.chunks: dict[str, int] = {}

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        name = str(key[0] if isinstance(key, tuple) else key)
        if name.startswith(PREFIX):
            state = name.rsplit(".", 1)[0]
            if finish == "memory":
                self.chunks[state] = self.chunks.get(state, 0) + 1
            elif start == "memory":
                self.chunks[state] -= 1
                if not self.chunks[state]:
                    del self.chunks[state]
            self.checkpoints = max(self.checkpoints, len(self.chunks))
        if finish == "memory":
            sizes = [ws.nbytes for ws in self.scheduler.workers.values()]
            self.worker = max(self.worker, *sizes)
            self.total = max(self.total, sum(sizes))


def _peaks(dask_scheduler: Any) -> tuple[int, int, int]:
    plugin = dask_scheduler.plugins[Peaks.name]
    return plugin.worker, plugin.total, plugin.checkpoints


def _sample_rss(dask_worker: Any) -> int:
    """In a worker process: start sampling its resident memory every 5 ms (once); return the peak so far."""
    sampler = getattr(dask_worker, "_revseq_rss", None)
    if sampler is None:
        import psutil

        process = psutil.Process()
        sampler = dask_worker._revseq_rss = {"peak": process.memory_info().rss}

        def sample() -> None:
            while True:
                sampler["peak"] = max(sampler["peak"], process.memory_info().rss)
                time.sleep(0.005)

        threading.Thread(target=sample, daemon=True).start()
    return int(sampler["peak"])


def grid(size: int, rows: int) -> Any:
    """The initial grid, made on the workers (the same numbers for the same size and slabs)."""
    return da.random.RandomState(0).uniform(-1, 1, (size, size), chunks=(rows, size))


def run(client: Client, strategy: Any, size: int, rows: int, n: int, local: bool) -> dict[str, Any]:
    client.register_plugin(Peaks())
    if local:
        client.run(_sample_rss)
    u0 = client.persist(grid(size, rows))
    rec = revseq.Recurrence(step, vjp=vjp)
    start = time.perf_counter()
    out = revseq.backprop(rec, u0, n, strategy)  # x0 is a dask array: checkpoints on the cluster
    seconds = time.perf_counter() - start
    worker, total, checkpoints = client.run_on_scheduler(_peaks)
    rss = max(client.run(_sample_rss).values()) if local else None
    gradient = np.asarray(out.gradient)  # computed on the cluster; only now brought here
    return {
        "stats": out.stats,
        "gradient": gradient,
        "seconds": seconds,
        "worker": worker,
        "total": total,
        "checkpoints": checkpoints,
        "rss": rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2048, help="grid side (default 2048: 32 MiB a state)")
    parser.add_argument("--steps", type=int, default=48, help="steps n (default 48)")
    parser.add_argument("--checkpoints", type=int, default=4, help="binomial checkpoints (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="local workers (default 2)")
    parser.add_argument("--memory-limit", default="640MiB", help="memory given to each local worker")
    parser.add_argument("--scheduler", default=None, help="an existing cluster's address, instead of local ones")
    parser.add_argument(
        "--in-process", action="store_true", help="local workers as threads of this process (quick; no RSS)"
    )
    args = parser.parse_args()
    n, size, workers = args.steps, args.size, args.workers
    rows = -(-size // (2 * workers))  # two slabs of rows per worker
    state = size * size * 8
    print(f"grid {size} x {size} float64 ({state / 2**20:.1f} MiB a state, slabs of {rows} rows), n = {n} steps")
    strategies = [revseq.StoreAll(), revseq.BinomialCheckpointing(checkpoints=args.checkpoints)]
    labels = ["StoreAll", f"binomial, c={args.checkpoints}"]
    results = []
    for strategy in strategies:
        if args.scheduler:
            with Client(args.scheduler) as client:
                results.append(run(client, strategy, size, rows, n, local=False))
            continue
        # No spilling, pausing or restarting: StoreAll would otherwise be slowed or killed rather than measured.
        quiet = {f"distributed.worker.memory.{k}": False for k in ("target", "spill", "pause", "terminate")}
        with (
            dask.config.set(quiet),
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=not args.in_process,
                memory_limit=args.memory_limit,
                dashboard_address=":0",
                silence_logs=40,
            ) as cluster,
            Client(cluster) as client,
        ):
            share = cluster.workers[next(iter(cluster.workers))].memory_manager.memory_limit
            results.append(run(client, strategy, size, rows, n, local=not args.in_process))
    mib = 2**20
    print(
        f"\n{'strategy':<16} {'steps':>5} {'ckpts':>5} {'ckpts on cluster':>16} {'worker peak':>12} "
        f"{'all workers':>12} {'worker RSS':>11} {'wall':>7}"
    )
    for strategy, label, r in zip(strategies, labels, results, strict=True):
        stats = r["stats"]
        rss = f"{r['rss'] / mib:8.0f} MiB" if r["rss"] else "        -"
        print(
            f"{label:<16} {stats.forward_steps:>5} {stats.peak_checkpoints:>5} {r['checkpoints']:>16} "
            f"{r['worker'] / mib:8.0f} MiB {r['total'] / mib:8.0f} MiB {rss} {r['seconds']:6.1f}s"
        )
        assert r["checkpoints"] == strategy.cost(n).peak_checkpoints == stats.peak_checkpoints
    if not args.scheduler:
        print(f"each worker's memory share: {share / mib:.0f} MiB (--memory-limit)")
    # The two gradients are equal, and equal to numpy's on a small grid.
    g_all, g_binomial = (r["gradient"] for r in results)
    print(f"largest difference between the two gradients: {np.abs(g_all - g_binomial).max():.1e}")
    np.testing.assert_allclose(g_binomial, g_all, rtol=1e-12)
    if size <= 256:
        x0 = np.asarray(grid(size, rows).compute(scheduler="sync"))  # the same numbers, made here
        expected = revseq.backprop(revseq.Recurrence(step, vjp=vjp), x0, n, strategies[1]).gradient
        np.testing.assert_allclose(g_binomial, expected, rtol=1e-12)
        print("the gradient equals numpy's on the same grid")


if __name__ == "__main__":
    main()
