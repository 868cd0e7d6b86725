"""revseq: reverse long recurrences under a memory budget.

The front
---------
backprop(recurrence, x0, n, strategy)   x_n and the gradient, with measured stats
reverse(f, x0, n, strategy)             x_{n-1}, ..., x_0, lazily
walk(f, x0, n, strategy)                (t, x_t) from t = n down to 0: for adjoints of your own
Recurrence(f, df) / Recurrence(f, vjp=..., params=..., loss=..., indexed=...)

Strategies (frozen configuration objects; subclass ReversalStrategy for your own)
--------------------------------------------------------------------------------
StoreAll()                               n steps, n - 1 checkpoints
Recompute()                              ~n^2/2 steps, 1 checkpoint
RecursiveHalving()                       ~(n/2) log2 n steps, ceil(log2 n) checkpoints
SqrtCheckpointing(interval=None)         <= 2n steps, ~2 sqrt(n) checkpoints
BinomialCheckpointing(checkpoints=c)     the proven minimum of steps for c checkpoints
OnlineCheckpointing(checkpoints=c)       for runs of unknown length (n=None, until=...)
MultistageCheckpointing(ram, disk, costs)  least step + disk time, checkpoints in RAM and on disk
MultistageCheckpointing(levels=[Level(...), ...])  the same over K storage levels (RAM, NVMe, NFS, ...)

Schedules as data
-----------------
Advance, Store, Restore, Free, Reverse   the actions a strategy yields
simulate(actions, n), validate(...)      cost and legality, without running f
Cost, Bounds, Schedule                   what they return / promise / wrap
LevelCost                                a Cost's counts at one storage level (Cost.level(k))

Also: optimal_forward_steps, repetition_number, MemoryStore, DiskStore,
CompressedStore (needs the compress extra when made), FsspecStore (any fsspec URL: s3://, gs://, ...;
the remote extra), OverlappedStore (writes behind and reads ahead on a thread), CheckpointStore
(the store protocol),
Result, Stats, Reversal, the errors in revseq.errors, and revseq.testing for
checking a strategy of your own.
"""

from revseq.auto import Choice, choose
from revseq.compressed import CompressedStore
from revseq.disk import DiskStore
from revseq.engine import DEFAULT_STRATEGY, Result, Reversal, Stats, Walk, backprop, reverse, walk
from revseq.errors import ParameterError, RevseqError, ScheduleError, StepError, StoreError
from revseq.fsspec_store import FsspecStore
from revseq.overlap import OverlappedStore
from revseq.recurrence import Recurrence
from revseq.schedule import (
    Action,
    Advance,
    Bounds,
    Cost,
    Free,
    LevelCost,
    Restore,
    Reverse,
    Schedule,
    Store,
    simulate,
    validate,
)
from revseq.store import MemoryStore
from revseq.store import Store as CheckpointStore
from revseq.strategies import (
    BinomialCheckpointing,
    DiskCosts,
    MultistageCheckpointing,
    OnlineCheckpointing,
    OnlineStrategy,
    Recompute,
    RecursiveHalving,
    ReversalStrategy,
    SqrtCheckpointing,
    StoreAll,
    online_lower_bound,
    optimal_forward_steps,
    repetition_number,
)
from revseq.strategies.multistage import Level

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_STRATEGY",
    "Action",
    "Advance",
    "BinomialCheckpointing",
    "Bounds",
    "CheckpointStore",
    "Choice",
    "CompressedStore",
    "Cost",
    "DiskCosts",
    "DiskStore",
    "Free",
    "FsspecStore",
    "Level",
    "LevelCost",
    "MemoryStore",
    "MultistageCheckpointing",
    "OnlineCheckpointing",
    "OnlineStrategy",
    "OverlappedStore",
    "ParameterError",
    "Recompute",
    "Recurrence",
    "RecursiveHalving",
    "Restore",
    "Result",
    "Reversal",
    "ReversalStrategy",
    "Reverse",
    "RevseqError",
    "Schedule",
    "ScheduleError",
    "SqrtCheckpointing",
    "Stats",
    "StepError",
    "Store",
    "StoreAll",
    "StoreError",
    "Walk",
    "__version__",
    "backprop",
    "choose",
    "online_lower_bound",
    "optimal_forward_steps",
    "repetition_number",
    "reverse",
    "simulate",
    "validate",
    "walk",
]
