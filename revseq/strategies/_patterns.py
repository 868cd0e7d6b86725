"""Schedule fragments shared by several strategies (share by functions, not subclasses).

Each fragment reverses the ``length`` steps starting at ``base`` under the same
precondition: the live state is ``x_base`` and, if ``length > 1``, ``x_base``
is stored. The fragment's last ``Reverse`` releases ``x_base`` and every
checkpoint above it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

from revseq.schedule import Action, Advance, Restore, Reverse, Store

# The planning hot path: a binomial schedule for n = 10**6 is 1.5 million
# actions, most made here and in binomial.revolve. `_new(Advance, (a, b, k))`
# is `Advance(a, b, k)` without the Python-level __new__ NamedTuple
# generates, which is 40% of an action's cost.
_new = tuple.__new__


def store_all(base: int, length: int) -> tuple[Action, ...]:
    """Keep every state: ``length - 1`` forward steps, ``length - 1`` checkpoints with ``x_base``.

    A tuple, not a generator: at most two actions, and strategies emit it at
    every leaf of their recursion, where a generator's set-up would cost more
    than the actions.
    """
    if length == 1:
        return (_new(Reverse, (base, base + 1)),)
    return _new(Advance, (base, base + length - 1, length > 2)), _new(Reverse, (base, base + length))


def sweeps(base: int, length: int) -> Iterator[Action]:
    """Only ``x_base`` kept: one sweep from it per step, ``length (length - 1) / 2`` forward steps.

    The last two steps share one sweep's end: ``x_{base+1}`` live and
    ``x_base`` stored reverse both, which saves a restore.
    """
    restore = _new(Restore, (base,))  # one immutable action, yielded at every sweep
    for k in range(length, 2, -1):
        if k < length:
            yield restore
        yield _new(Advance, (base, base + k - 1, False))
        yield _new(Reverse, (base + k - 1, base + k))
    if length > 2:
        yield restore
    yield from store_all(base, min(length, 2))


def from_x0(n: int, body: Iterable[Action]) -> Iterator[Action]:
    """Store ``x_0`` before ``body`` (which reverses all ``n`` steps) when there is more than one step.

    Nothing frees it: the final ``Reverse`` releases every checkpoint. A
    chain, not a generator, so that the body's actions pass through no
    extra Python frame.
    """
    return itertools.chain((Store(0),) if n > 1 else (), body)
