"""Interleaved rounds of revseq and checkpoint_schedules planning the binomial schedule for (n, c) = (1e6, 30).

Not a pytest module: a script for the one comparison with a target (revseq at
least 5x faster), where the machine's load drifting between two separately
timed benchmarks matters most. Rounds alternate (revseq, checkpoint_schedules),
and both wall and CPU time (``time.process_time``) are reported: on a shared
machine, CPU time is the less disturbed of the two.

    python benchmarks/paired_planning.py [--pairs 6] [--n 1000000] [--checkpoints 30]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time

from _common import binomial_steps, walk_checkpoint_schedules, walk_revseq

import revseq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--checkpoints", type=int, default=30)
    args = parser.parse_args()
    import checkpoint_schedules as cs  # here, not at the top: pytest imports this file when collecting doctests

    n, c = args.n, args.checkpoints
    schedule = revseq.BinomialCheckpointing(checkpoints=c).schedule(n)
    assert walk_revseq(schedule, n)[0] == binomial_steps(n, c)
    modes = {
        "generate": (lambda: collections.deque(schedule, maxlen=0),
                     lambda: collections.deque(cs.MultistageCheckpointSchedule(n, c, 0), maxlen=0)),
        "walk": (lambda: walk_revseq(schedule, n),
                 lambda: walk_checkpoint_schedules(cs, cs.MultistageCheckpointSchedule(n, c, 0))),
    }  # fmt: skip
    print(f"revseq from {revseq.__file__}; n={n}, c={c}, {args.pairs} interleaved pairs")
    for mode, (ours, theirs) in modes.items():
        times: dict[str, dict[str, list[float]]] = {"wall": {"revseq": [], "cs": []}, "cpu": {"revseq": [], "cs": []}}
        for _ in range(args.pairs):
            for who, fn in (("revseq", ours), ("cs", theirs)):
                wall, cpu = time.perf_counter(), time.process_time()
                fn()
                times["wall"][who].append(time.perf_counter() - wall)
                times["cpu"][who].append(time.process_time() - cpu)
        for clock, t in times.items():
            pairwise = [theirs_t / ours_t for ours_t, theirs_t in zip(t["revseq"], t["cs"], strict=True)]
            print(f"{mode:8} {clock:4}: revseq min {min(t['revseq']):.3f} s, checkpoint_schedules min "
                  f"{min(t['cs']):.3f} s, ratio of minima {min(t['cs']) / min(t['revseq']):.2f}; "
                  f"pairwise ratios median {statistics.median(pairwise):.2f} "
                  f"(range {min(pairwise):.2f}-{max(pairwise):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
