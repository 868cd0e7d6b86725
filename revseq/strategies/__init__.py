"""Reversal strategies: the abstract base class and the built-in strategies."""

from revseq.strategies.base import OnlineStrategy, ReversalStrategy
from revseq.strategies.basic import Recompute, StoreAll
from revseq.strategies.binomial import BinomialCheckpointing, optimal_forward_steps, repetition_number
from revseq.strategies.halving import RecursiveHalving
from revseq.strategies.multistage import DiskCosts, MultistageCheckpointing
from revseq.strategies.online import OnlineCheckpointing, online_lower_bound
from revseq.strategies.sqrt import SqrtCheckpointing

__all__ = [
    "BinomialCheckpointing",
    "DiskCosts",
    "MultistageCheckpointing",
    "OnlineCheckpointing",
    "OnlineStrategy",
    "Recompute",
    "RecursiveHalving",
    "ReversalStrategy",
    "SqrtCheckpointing",
    "StoreAll",
    "online_lower_bound",
    "optimal_forward_steps",
    "repetition_number",
]
