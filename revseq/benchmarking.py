"""Benchmark your own strategy against the built-ins with pytest-benchmark.

One short test file times ``backprop`` on your recurrence with every
strategy, yours among them, and records what each run cost beside its time::

    # test_my_strategy.py        run: pytest test_my_strategy.py
    import numpy as np
    import revseq
    from revseq.benchmarking import parametrize, run

    from my_strategies import EveryOther         # your ReversalStrategy

    N = 2000
    RNN = revseq.Recurrence(np.tanh, df=lambda x: 1 - np.tanh(x) ** 2)
    X0 = np.linspace(-1, 1, 1000)

    @parametrize(EveryOther(), n=N)              # the built-ins, then yours; ids are their names
    def test_backprop(benchmark, strategy):
        run(benchmark, RNN, X0, N, strategy)

:func:`parametrize` gives one test per strategy, with readable ids
(``test_backprop[BinomialCheckpointing(checkpoints=51)]``); :func:`run`
times ``backprop`` with the ``benchmark`` fixture and puts the engine's
counts into ``benchmark.extra_info`` (forward steps, peak checkpoints, peak
bytes, ...), which ``--benchmark-json`` writes next to the times.

pytest-benchmark is not a dependency of revseq: this module imports nothing
from it, and takes the ``benchmark`` fixture as an argument (``pip install
pytest-benchmark``, or ``revseq[test]``). pytest is imported only by
:func:`parametrize`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from revseq.engine import Result, backprop
from revseq.errors import ParameterError
from revseq.plot import label
from revseq.recurrence import Recurrence
from revseq.store import Store
from revseq.strategies import BinomialCheckpointing, RecursiveHalving, SqrtCheckpointing, StoreAll
from revseq.strategies.base import ReversalStrategy, as_strategy

__all__ = ["BUILTINS", "describe", "parametrize", "run", "strategies"]

BUILTINS: tuple[ReversalStrategy, ...] = (
    StoreAll(),
    SqrtCheckpointing(),
    BinomialCheckpointing(),
    RecursiveHalving(),
)
"""The built-ins :func:`strategies` compares with by default: the fastest (StoreAll, n checkpoints), the
classic sqrt(n) segments, binomial at its default budget (about sqrt(2n), at most 2n steps) and recursive
halving (log2 n checkpoints). Recompute (n^2/2 steps) is left out: name it in ``builtins=`` for a small n."""


def describe(strategy: Any) -> str:
    """A strategy as it would be written: ``BinomialCheckpointing(checkpoints=7)``, ``EveryOther()``.

    An attrs class (every built-in, and a strategy written as the docs
    show) is written with the settings that differ from their defaults;
    any other object by its ``repr``, or its class name where that repr is
    Python's default ``<... object at 0x...>``.

    >>> describe(BinomialCheckpointing(checkpoints=7)), describe(StoreAll())
    ('BinomialCheckpointing(checkpoints=7)', 'StoreAll()')
    """
    if attrs.has(type(strategy)):
        return label(strategy)
    text = repr(strategy)
    if text.startswith("<") and " object at 0x" in text:
        return type(strategy).__name__
    return text


def strategies(
    *yours: ReversalStrategy,
    n: int | None = None,
    builtins: Iterable[ReversalStrategy] = BUILTINS,
) -> list[ReversalStrategy]:
    """The built-ins to compare with, then ``yours``; with ``n``, binomial with your memory too.

    Given ``n``, each of your strategies that keeps its checkpoints in memory
    is also set against ``BinomialCheckpointing(checkpoints=c)``, ``c`` being
    its peak checkpoints for ``n`` steps (``strategy.cost(n)``, which
    simulates and checks your schedule): the fewest forward steps any
    schedule can make in that memory. A strategy that is equal to one
    already listed is listed once.

    >>> [describe(s) for s in strategies(SqrtCheckpointing(interval=10), n=100, builtins=[StoreAll()])]
    ['StoreAll()', 'BinomialCheckpointing(checkpoints=18)', 'SqrtCheckpointing(interval=10)']
    """
    mine = [as_strategy(s, StoreAll()) for s in yours]
    listed: list[ReversalStrategy] = []
    for index, strategy in enumerate(builtins):
        if not isinstance(strategy, ReversalStrategy):
            raise ParameterError(
                f"builtins must hold ReversalStrategy instances, got {strategy!r} ({type(strategy).__name__}) "
                f"at index {index}"
            )
        listed.append(strategy)
    if n is not None:
        for strategy in mine:
            cost = strategy.cost(n)
            if cost.peak_disk == 0 and cost.peak_checkpoints >= 1:
                listed.append(BinomialCheckpointing(checkpoints=cost.peak_checkpoints))
    listed.extend(mine)
    unique: list[ReversalStrategy] = []
    for strategy in listed:
        if not any(_same(strategy, seen) for seen in unique):
            unique.append(strategy)
    return unique


def _same(a: ReversalStrategy, b: ReversalStrategy) -> bool:
    """Whether two strategies are the same: equal (attrs compares their settings), or one object."""
    try:
        return a is b or (type(a) is type(b) and bool(a == b))
    except Exception:  # a user's __eq__ that raises: treat them as different
        return False


def parametrize(
    *yours: ReversalStrategy,
    n: int | None = None,
    builtins: Iterable[ReversalStrategy] = BUILTINS,
    argname: str = "strategy",
) -> Any:
    """``pytest.mark.parametrize`` over :func:`strategies` (the built-ins, then yours), ids from :func:`describe`.

    >>> import pytest
    >>> mark = parametrize(BinomialCheckpointing(checkpoints=3), builtins=[StoreAll()])
    >>> mark.args[0], mark.kwargs["ids"]
    ('strategy', ['StoreAll()', 'BinomialCheckpointing(checkpoints=3)'])
    """
    import pytest  # here: revseq does not depend on pytest

    chosen = strategies(*yours, n=n, builtins=builtins)
    return pytest.mark.parametrize(argname, chosen, ids=[describe(s) for s in chosen])


def run(
    benchmark: Any,
    recurrence: Recurrence,
    x0: Any,
    n: int,
    strategy: ReversalStrategy,
    *,
    rounds: int | None = None,
    warmup_rounds: int = 0,
    store: Store | None = None,
    disk: Store | None = None,
) -> Result:
    """Time ``backprop(recurrence, x0, n, strategy)`` with pytest-benchmark's ``benchmark`` fixture.

    Records in ``benchmark.extra_info`` what the run cost, as the engine
    measured it (:class:`~revseq.Stats`, equal to ``strategy.cost(n)``):
    ``strategy`` (:func:`describe`), ``n``, ``forward_steps`` (calls of f),
    ``recompute_factor``, ``peak_checkpoints``, ``peak_bytes`` (the most
    bytes held in the checkpoint store), ``writes`` and ``reads``; with a
    ``disk`` store also ``peak_disk``, ``disk_writes``, ``disk_reads``,
    ``disk_bytes_written`` and ``disk_bytes_read``, and
    ``compression_ratio`` where a store compresses. Sets ``benchmark.group``
    to ``"n=<n>"`` unless it is set already, so that runs of the same
    length share a table. Returns the last round's
    :class:`~revseq.Result`.

    A strategy that is not one of revseq's own is checked action by action
    as it runs, as :func:`~revseq.backprop` always does; the time includes
    those checks.

    Parameters
    ----------
    benchmark:
        The ``benchmark`` fixture of the test.
    rounds:
        None: pytest-benchmark's own calibration (``--benchmark-min-rounds``,
        ``--benchmark-max-time``); an int: exactly that many timed rounds of
        one call each (``benchmark.pedantic``), for long runs.
    warmup_rounds:
        With ``rounds``, untimed rounds first.
    store, disk:
        Passed to ``backprop`` (each round empties them, as every run does).
    """
    if not callable(benchmark) or not hasattr(benchmark, "pedantic") or not hasattr(benchmark, "extra_info"):
        raise ParameterError(
            f"benchmark must be pytest-benchmark's benchmark fixture (a test's `benchmark` argument; "
            f"pip install pytest-benchmark), got {benchmark!r} ({type(benchmark).__name__})"
        )
    strategy = as_strategy(strategy, StoreAll())
    if rounds is not None and (isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1):
        raise ParameterError(f"rounds must be None or an int >= 1, got {rounds!r}")
    if isinstance(warmup_rounds, bool) or not isinstance(warmup_rounds, int) or warmup_rounds < 0:
        raise ParameterError(f"warmup_rounds must be an int >= 0, got {warmup_rounds!r}")
    if getattr(benchmark, "group", None) is None:
        benchmark.group = f"n={n}"

    def once() -> Result:
        return backprop(recurrence, x0, n, strategy, store=store, disk=disk)

    result: Result
    if rounds is None:
        result = benchmark(once)
    else:
        result = benchmark.pedantic(once, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
    stats = result.stats
    info: dict[str, Any] = {
        "strategy": describe(strategy),
        "n": stats.n,
        "forward_steps": stats.forward_steps,
        "recompute_factor": stats.recompute_factor,
        "peak_checkpoints": stats.peak_checkpoints,
        "peak_bytes": stats.peak_bytes,
        "writes": stats.writes,
        "reads": stats.reads,
    }
    if disk is not None:
        info.update(
            peak_disk=stats.peak_disk,
            disk_writes=stats.disk_writes,
            disk_reads=stats.disk_reads,
            disk_bytes_written=stats.disk_bytes_written,
            disk_bytes_read=stats.disk_bytes_read,
        )
    if stats.compression_ratio is not None:
        info["compression_ratio"] = stats.compression_ratio
    benchmark.extra_info.update(info)
    return result
