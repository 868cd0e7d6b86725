"""The user strategy of the ReversalStrategy docstring, as module source and as a class, for the front ends' tests.

``SOURCE`` is what a user's module holds (written to a file by the tests
that import it by name, as the CLI and pytest do); ``EveryOther`` is the
class made from it here. It stores x_0, x_2, x_4, ...: about n/2
checkpoints and 3n/2 forward steps.
"""

from __future__ import annotations

import textwrap
from typing import Any

SOURCE = textwrap.dedent(
    """
    import attrs
    import revseq
    from revseq import Advance, Bounds, Restore, Reverse, Store


    @attrs.frozen
    class EveryOther(revseq.ReversalStrategy):
        '''Stores x_0, x_2, x_4, ...: about n/2 checkpoints and 3n/2 forward steps.'''

        def actions(self, n):
            starts = range(0, n, 2)
            for a in starts:
                yield Store(a)
                if a + 2 < n:
                    yield Advance(a, a + 2)
            for a in reversed(starts):
                if a != starts[-1]:
                    yield Restore(a)
                if a + 1 < n:
                    yield Advance(a, a + 1)
                yield Reverse(a, min(a + 2, n))
    """
)

_namespace: dict[str, Any] = {"__name__": "every_other_strategy"}
exec(SOURCE, _namespace)
EveryOther = _namespace["EveryOther"]
