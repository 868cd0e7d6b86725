"""Reversal strategies: the abstract base class and the built-in strategies."""

from revseq.strategies.base import ReversalStrategy
from revseq.strategies.basic import Recompute, StoreAll
from revseq.strategies.binomial import BinomialCheckpointing, optimal_forward_steps, repetition_number
from revseq.strategies.halving import RecursiveHalving
from revseq.strategies.sqrt import SqrtCheckpointing

__all__ = [
    "BinomialCheckpointing",
    "Recompute",
    "RecursiveHalving",
    "ReversalStrategy",
    "SqrtCheckpointing",
    "StoreAll",
    "optimal_forward_steps",
    "repetition_number",
]
