"""What the autodiff adapters (revseq.torch, revseq.jax) share."""

from __future__ import annotations

from typing import Any

import attrs

from revseq.engine import DEFAULT_STRATEGY, Stats
from revseq.strategies.base import ReversalStrategy, as_strategy

__all__ = ["Tally", "strategy_or_default"]


@attrs.define
class Tally:
    """What an adapter's run cost, counted as it runs; pass one as ``tally=`` and read it afterwards.

    Attributes
    ----------
    forward_steps:
        Calls of the step made without gradients: the first sweep, its
        recomputations and the call producing the final state, summed over
        every forward and backward pass. After one forward and one backward
        it equals ``strategy.cost(n).forward_steps`` when a strategy
        reverses the steps one by one, and ``plan.forward_steps`` for a plan
        with tapes (revseq.torch's default). A primal computed by the
        framework alone (no differentiation) is not counted.
    vjp_steps:
        Calls of the step with gradients, where the framework runs it to
        differentiate it: ``n`` per backward pass (``plan.vjp_steps`` for a
        plan with tapes, whose last segment and first step run with
        gradients in the forward pass).
    stats:
        The engine's :class:`revseq.Stats` for the latest walk (its
        ``as_cost()`` is comparable with ``strategy.cost(n)``); None until a
        walk has run, and always None for revseq.jax, whose compiled loops
        have no engine. With tapes (revseq.torch), the walk is over
        segments: its steps are segments.
    plan:
        The plan with tapes revseq.torch chose for the latest call (segment
        length, checkpoints, predicted calls and bytes: a
        ``revseq.torch.TapePlan``); None when no plan was made.
    """

    forward_steps: int = 0
    vjp_steps: int = 0
    stats: Stats | None = None
    plan: Any = None

    @property
    def step_calls(self) -> int:
        """Every call of the step: ``forward_steps + vjp_steps``."""
        return self.forward_steps + self.vjp_steps


def strategy_or_default(strategy: Any) -> ReversalStrategy:
    return as_strategy(strategy, DEFAULT_STRATEGY)
