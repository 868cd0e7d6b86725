"""Your own strategy against the built-ins, on your own recurrence: the example of ``revseq.benchmarking``.

This is the one short file a user writes (docs/guide.md, section 8): a
strategy of theirs (here the guide's ``EveryKth``, which would normally be
imported from their package), their recurrence (here a small tanh RNN with
a hand-written VJP), and one parametrized test. Run it with::

    python -m pytest benchmarks/test_user_strategy.py --benchmark-only

    python -m pytest benchmarks/test_user_strategy.py --benchmark-only --benchmark-json=out.json

The table has one row per strategy, named ``test_backprop[<strategy>]``;
the JSON gives each row's ``extra_info``: forward steps, peak checkpoints,
peak bytes, writes and reads, as the engine measured them. As every file
here, it asserts counts, never times: each run's forward steps equal the
calls of f made, and ``EveryKth``'s equal a formula written out below.
"""

from __future__ import annotations

import attrs
import numpy as np

import revseq
from revseq import Advance, Bounds, Restore, Reverse, Store
from revseq.benchmarking import parametrize, run


@attrs.frozen
class EveryKth(revseq.ReversalStrategy):
    """Store every k-th state on the first sweep; recompute each segment from its checkpoint."""

    k: int = 4

    def actions(self, n):
        starts = range(0, n, self.k)
        for a in starts:
            yield Store(a)
            if a != starts[-1]:
                yield Advance(a, a + self.k)
        for a in reversed(starts):
            if a != starts[-1]:
                yield Restore(a)
            end = min(a + self.k, n)
            if end - a > 1:
                yield Advance(a, end - 1, keep=True)
            yield Reverse(a, end)

    def bounds(self, n):
        return Bounds(checkpoints=-(-n // self.k) + self.k)


N = 2000
SIZE = 256
_rng = np.random.default_rng(0)
W = _rng.normal(0.0, 1.0 / np.sqrt(SIZE), (SIZE, SIZE))
X0 = _rng.uniform(-1.0, 1.0, SIZE)
CALLS = [0]  # calls of the step, counted from outside revseq


def step(x):
    CALLS[0] += 1
    return np.tanh(W @ x)


def vjp(x, adj):
    y = np.tanh(W @ x)
    return W.T @ (adj * (1.0 - y * y))


RNN = revseq.Recurrence(step, vjp=vjp)


def every_kth_steps(n: int, k: int) -> int:
    """EveryKth's forward steps, counted by hand: the sweep to the last segment, each segment but its last
    state again, and the call producing x_n."""
    segments = -(-n // k)
    return (segments - 1) * k + (n - segments) + 1


@parametrize(EveryKth(k=50), n=N)  # StoreAll, sqrt, binomial (default and at EveryKth's memory), halving, EveryKth
def test_backprop(benchmark, strategy):
    CALLS[0] = 0
    result = run(benchmark, RNN, X0, N, strategy, rounds=5, warmup_rounds=1)
    rounds = 1 if benchmark.disabled else 6  # --benchmark-disable runs it once
    assert CALLS[0] == rounds * result.stats.forward_steps == rounds * benchmark.extra_info["forward_steps"]
    if isinstance(strategy, EveryKth):
        assert result.stats.forward_steps == every_kth_steps(N, strategy.k)
