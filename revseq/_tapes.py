"""Planning with tapes: keep a segment's autograd graph instead of re-running each of its steps alone.

An adapter whose framework records a graph (PyTorch's autograd) can
differentiate a run of ``L`` consecutive steps with one re-run and one
backward call: it re-runs the segment from its first state with gradients
enabled, holding the ``L`` steps' graphs (their "tapes") at once, and then
asks for the segment's vector-Jacobian product. Per step this replaces a
re-run, a graph and a backward call each, and it needs the checkpoints only
at segment starts.

The plan is the mixed model of THEORY 5.2 restricted to one family: the
first step is taped in the forward pass (its graph kept until the backward
pass ends), the other ``n - 1`` steps are cut into segments of ``L`` (the
last one shorter), and Revolve reverses the segments with ``c`` checkpoints
of states. Its memory is ``min(c, N - 1)`` states and ``L + 1`` steps'
graphs, and it makes ``n`` calls with gradients and ``L (A - 1) + l``
without, where ``N = ceil((n - 1) / L)``, ``A`` is Revolve's calls for
``N`` segments and ``l`` the last segment's length (the first sweep
advances it once, to produce ``h_n``; nothing advances it again).
:func:`plan` searches ``L`` for the fewest calls under a byte budget;
ties go to the longer segment (fewer backward calls). tests/oracles.py has
the exact mixed programme of THEORY 5.2, against which docs/autodiff.md
states the gap.
"""

from __future__ import annotations

import math

import attrs

from revseq._validate import check_int
from revseq.errors import ParameterError
from revseq.strategies.binomial import BinomialCheckpointing, optimal_forward_steps

__all__ = ["TapePlan", "default_budget", "plan", "segment_calls"]

# Every segment length up to this is tried; above it, a geometric grid (ratio 1 + 1/_DENSE). A few
# hundred candidates at 4 microseconds each: well under 10 ms for any n.
_DENSE = 256


@attrs.frozen
class TapePlan:
    """A plan with tapes for ``n`` steps.

    Attributes
    ----------
    n:
        The number of steps.
    segment:
        ``L``: the steps re-run together with gradients, one graph held at a
        time (the first step, taped in the forward pass, is apart).
    checkpoints:
        The checkpoint budget of the :class:`revseq.BinomialCheckpointing`
        that reverses the segments.
    keep_first:
        Whether the first step's graph, made in the forward pass (where it
        measures a step's graph), is kept for the backward pass; else the
        first step is re-run there from ``h0``, one call more for one
        graph less.
    forward_steps:
        Calls of the step without gradients, over one forward and one
        backward pass.
    vjp_steps:
        Calls with gradients: ``n``, each step once (``n + 1`` without
        ``keep_first``).
    peak_bytes:
        Predicted peak of what the plan holds: checkpoints of states, and
        the graphs of one segment and of the first step if kept, for the
        sizes it was planned with.
    """

    n: int
    segment: int
    checkpoints: int
    keep_first: bool
    forward_steps: int
    vjp_steps: int
    peak_bytes: int

    @property
    def segments(self) -> int:
        """``N``: the segments after the first step (0 when ``n = 1``)."""
        return -(-(self.n - 1) // self.segment)

    @property
    def strategy(self) -> BinomialCheckpointing:
        """The strategy that reverses the segments."""
        return BinomialCheckpointing(checkpoints=self.checkpoints)

    @property
    def step_calls(self) -> int:
        return self.forward_steps + self.vjp_steps


def segment_calls(segment: int, walk_steps: int) -> int:
    """Calls without gradients when a walk over the segments advances ``walk_steps`` times.

    Every segment but the last is ``segment`` steps long; the last is
    advanced once, by the first sweep, with gradients (its graph kept).
    """
    return segment * (walk_steps - 1)


def _candidate(n: int, segment: int, checkpoints: int, keep_first: bool, state_bytes: int, tape_bytes: int) -> TapePlan:
    segments = -(-(n - 1) // segment)
    c = max(1, min(checkpoints, segments))
    walk = optimal_forward_steps(segments, c)
    held = min(c, segments - 1) * state_bytes + (segment + keep_first) * tape_bytes
    return TapePlan(n, segment, c, keep_first, segment_calls(segment, walk), n + (not keep_first), held)


def _lengths(longest: int) -> list[int]:
    dense = list(range(1, min(longest, _DENSE) + 1))
    sparse: list[int] = []
    length = _DENSE
    while length < longest:
        length = min(longest, max(length + 1, length * (_DENSE + 1) // _DENSE))
        sparse.append(length)
    return dense + sparse


def plan(n: int, state_bytes: int, tape_bytes: int, max_bytes: int, *, segment: int | None = None) -> TapePlan:
    """The plan with the fewest step calls whose checkpoints and graphs fit in ``max_bytes``.

    ``state_bytes`` is one state's size, ``tape_bytes`` one step's graph
    (what autograd saves for it); ``segment`` fixes ``L`` (else it is
    searched). Raises :class:`revseq.ParameterError` when not even one
    checkpoint and one step's graph (``segment`` steps' graphs) fit.

    >>> p = plan(10_000, state_bytes=16_384, tape_bytes=131_072, max_bytes=10 * 2**20)
    >>> p.segment, p.checkpoints, p.forward_steps, p.vjp_steps
    (50, 200, 9950, 10000)
    """
    n = check_int("n", n, 1)
    state_bytes = check_int("state_bytes", state_bytes, 1)
    tape_bytes = check_int("tape_bytes", tape_bytes, 1)
    max_bytes = check_int("max_bytes", max_bytes, 1)
    if n == 1:
        if tape_bytes > max_bytes:
            raise _too_small(max_bytes, tape_bytes)
        return TapePlan(1, 1, 1, True, 0, 1, tape_bytes)
    if segment is not None:
        segment = min(check_int("tape", segment, 1), n - 1)
    least = (segment or 1) * tape_bytes + (state_bytes if (segment or 1) < n - 1 else 0)
    if least > max_bytes:
        raise _too_small(max_bytes, least)
    longest = max(1, min(n - 1, max_bytes // tape_bytes))
    best: TapePlan | None = None
    for length in [segment] if segment is not None else _lengths(longest):
        for keep_first in (True, False):
            room = (max_bytes - (length + keep_first) * tape_bytes) // state_bytes
            if room < 1 and length < n - 1:
                continue
            candidate = _candidate(n, length, max(1, room), keep_first, state_bytes, tape_bytes)
            if candidate.peak_bytes <= max_bytes and (best is None or _better(candidate, best)):
                best = candidate
    if best is None:
        raise _too_small(max_bytes, least)
    return best


def _better(a: TapePlan, b: TapePlan) -> bool:
    """Fewer calls; then fewer backward calls (longer segments); then fewer bytes."""
    return (a.step_calls, -a.segment, a.peak_bytes) < (b.step_calls, -b.segment, b.peak_bytes)


def default_budget(n: int, state_bytes: int, tape_bytes: int) -> int:
    """The default budget: ``ceil(sqrt(n))`` steps' graphs and as many states.

    It holds about ``2 sqrt(n)`` steps' worth where the plain loop holds
    ``n``, and lets :func:`plan` make each step twice (once without, once
    with gradients), as segment checkpointing does.
    """
    root = math.isqrt(n - 1) + 1 if n > 1 else 1
    return (root + 1) * tape_bytes + root * state_bytes


def _too_small(max_bytes: int, least: int) -> ParameterError:
    return ParameterError(
        f"max_bytes must hold at least one checkpoint and one segment's graph, {least} bytes here "
        f"(measured on the first step), got {max_bytes}"
    )
