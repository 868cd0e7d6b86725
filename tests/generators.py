"""Hypothesis helpers for revseq's tests.

Named ``generators`` rather than ``strategies`` so that in these tests
"strategy" means a :class:`revseq.ReversalStrategy` and nothing else.
"""

from __future__ import annotations

from hypothesis import strategies as st

import revseq

MAX_N = 400
MAX_BUDGET = 16


def lengths(max_n: int = MAX_N) -> st.SearchStrategy[int]:
    """Sequence lengths ``1 <= n <= max_n``, shrinking towards 1."""
    return st.integers(min_value=1, max_value=max_n)


def budgets(max_budget: int = MAX_BUDGET) -> st.SearchStrategy[int]:
    """Checkpoint budgets ``1 <= c <= max_budget``."""
    return st.integers(min_value=1, max_value=max_budget)


def binomials() -> st.SearchStrategy[revseq.BinomialCheckpointing]:
    """Binomial checkpointing with a drawn budget, or the automatic one."""
    return st.one_of(st.just(revseq.BinomialCheckpointing()), budgets().map(revseq.BinomialCheckpointing))


def sqrts() -> st.SearchStrategy[revseq.SqrtCheckpointing]:
    """Segment checkpointing with a drawn interval (possibly longer than n), or the default one."""
    intervals = st.integers(min_value=1, max_value=40)
    return st.one_of(st.just(revseq.SqrtCheckpointing()), intervals.map(revseq.SqrtCheckpointing))


def reversal_strategies() -> st.SearchStrategy[revseq.ReversalStrategy]:
    """Any built-in strategy, with its configuration drawn too."""
    return st.one_of(
        st.just(revseq.StoreAll()),
        st.just(revseq.Recompute()),
        st.just(revseq.RecursiveHalving()),
        sqrts(),
        binomials(),
    )
