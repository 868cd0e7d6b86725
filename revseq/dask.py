"""States on a dask cluster: checkpoints held in the workers' memory, never pulled to the client.

A recurrence whose state is a ``dask.array`` (or a tuple, list or dict of
them) runs through :func:`revseq.backprop`, :func:`revseq.reverse` and
:func:`revseq.walk` unchanged: the engine picks :class:`ClusterStore` by
itself when ``x0`` is a dask collection and no ``store`` is given. Each
checkpoint is a persisted copy of the state under keys of its own
(``revseq-checkpoint-...``) on the workers that computed it; the client
holds only the futures. Needs the ``dask`` extra:
``pip install 'revseq[dask]'`` (dask.array and dask.distributed).
docs/storage.md, "States on a dask cluster", has the guarantees and the costs.
"""

from __future__ import annotations

import importlib
import itertools
import math
import uuid
from typing import Any

from revseq import _tree
from revseq.errors import ParameterError, StoreError

__all__ = ["ClusterStore"]

PREFIX = "revseq-checkpoint"
"""How the dask key of every checkpoint chunk begins: ``revseq-checkpoint-<store>-<serial>-x<t>[.<leaf>]``."""


def _module(name: str) -> Any:
    """``dask.array`` or ``distributed``, or an error naming the extra that installs it."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:  # only a missing dask; a broken install keeps its own message
        if error.name is None or error.name.split(".")[0] not in ("dask", "distributed"):
            raise
        raise ModuleNotFoundError(
            f"revseq.dask needs {name.split('.')[0]}: pip install 'revseq[dask]' (dask[array,distributed])",
            name=error.name,
        ) from None


def _distributed() -> Any | None:
    """The ``distributed`` module, or None where it is not installed (dask's own schedulers are used then)."""
    try:
        return importlib.import_module("distributed")
    except ModuleNotFoundError as error:
        if error.name != "distributed":
            raise
        return None


def is_lazy(leaf: Any) -> bool:
    """Whether ``leaf`` is a dask collection (it implements dask's collection protocol)."""
    return hasattr(type(leaf), "__dask_graph__")


def _is_array(leaf: Any) -> bool:
    return is_lazy(leaf) and hasattr(leaf, "chunks") and hasattr(leaf, "map_blocks")


def _same(block: Any) -> Any:
    """A checkpoint chunk: the state's chunk itself, under the checkpoint's key (no copy on the worker)."""
    return block


class ClusterStore:
    """Checkpoints of dask arrays, kept in the memory of the cluster that computes them.

    ``put`` persists the state under keys of its own,
    ``revseq-checkpoint-<store>-<serial>-x<t>``, and waits until every chunk
    is in a worker's memory; the client keeps only the futures. ``get``
    returns a new dask array over those keys (a step that assigns into its
    argument, ``x[0] = 0``, changes that object, not the checkpoint);
    ``delete`` and ``clear`` drop the futures, and the scheduler releases the
    chunks, unless an array you still hold (a state a walk gave you) refers
    to them. Nothing is ever computed on, or gathered to, the client.

    The store also *settles* states (see :meth:`settle`): the engine, seeing
    the method, has each state f returns, and the adjoint backprop sums,
    computed on the cluster at once. Otherwise every state would be a
    growing graph of work not yet done, the reversal would run as one graph
    at the end, and dask, not the strategy, would decide what is held.

    Parameters
    ----------
    client:
        The ``distributed.Client`` of the cluster; by default, at each
        persist, the current client (``distributed.default_client()``), or
        where there is none, dask's own scheduler in this process (the
        checkpoints are then numpy chunks in this process's memory).

    ``nbytes`` counts the states' ``nbytes`` (their shape times itemsize, no
    chunk is read). Leaves that are not dask collections (a numpy scalar
    beside the grid) are kept as references, in the client's memory.

    Known limits: one scheduler round trip per call of f (a few ms: with a
    state large enough to need a cluster, the step costs far more); the
    engine's first calls of f are checked for shape and dtype but, dask
    arrays holding no bytes on the client, not for writes into their
    argument; a worker's managed-memory count (not its real memory) shows a
    checkpoint twice while the live state it was stored from is alive.
    """

    copies = False
    """States are not copied: dask arrays are immutable, and the engine would otherwise deep-copy ``x0``'s graph."""

    def __init__(self, client: Any = None) -> None:
        if client is not None:
            distributed = _distributed()
            if isinstance(client, type) or distributed is None or not isinstance(client, distributed.Client):
                raise ParameterError(
                    f"client must be a distributed.Client or None (the current client), got {client!r}"
                )
        self._client = client
        self._id = uuid.uuid4().hex[:8]  # keys are the cluster's: two stores (or two processes) never share one
        self._serial = itertools.count()
        self._held: dict[int, tuple[Any, int]] = {}  # key -> (the state, its nbytes)
        self._nbytes = 0
        self.puts = self.gets = 0

    # -- the Store protocol

    def put(self, key: int, state: Any) -> None:
        serial = next(self._serial)
        count = len([leaf for leaf in _tree.leaves(state) if _is_array(leaf)])
        leaves = itertools.count()

        def rename(leaf: Any) -> Any:
            if not _is_array(leaf):
                return leaf
            name = f"{PREFIX}-{self._id}-{serial}-x{key}" + (f".{next(leaves)}" if count > 1 else "")
            return leaf.map_blocks(_same, name=name, dtype=leaf.dtype, meta=getattr(leaf, "_meta", None))

        stored = self._persist(_tree.tree_map(rename, state), f"checkpoint x_{key}")
        size = _size(stored)
        old = self._held.pop(key, None)  # stored again: the old state goes
        if old is not None:
            self._nbytes -= old[1]
        self._held[key] = (stored, size)
        self._nbytes += size
        self.puts += 1

    def get(self, key: int) -> Any:
        state = self._held[key][0]
        self.gets += 1
        return _tree.tree_map(_fresh, state)

    def delete(self, key: int) -> None:
        self._nbytes -= self._held.pop(key)[1]

    def clear(self) -> None:
        # Dropping the futures releases the keys (a closed client's keys went with it).
        self._held.clear()
        self._nbytes = 0

    def __len__(self) -> int:
        return len(self._held)

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def __repr__(self) -> str:
        return f"ClusterStore(client={self._client!r}, held={len(self._held)}, nbytes={self._nbytes})"

    # -- what the engine calls where a store has it

    def settle(self, value: Any) -> Any:
        """``value`` with each dask collection in it computed on the cluster and held there (persisted).

        The engine calls it on each state f returns and on ``x0``, and
        backprop on the adjoint, parameter gradient and loss it sums after
        each reversed step. What comes back refers to no earlier work, so
        neither the client's graphs nor the cluster's memory grow over a
        run. Leaves that are not dask collections are returned as they are.
        """
        if not any(map(is_lazy, _tree.leaves(value))):
            return value
        return self._persist(value, "a state")

    # -- the cluster

    def _persist(self, value: Any, what: str) -> Any:
        """``value`` with its dask collections persisted, every chunk computed and held; errors from the
        cluster as :class:`StoreError`, a task's own error (the step's code) as it was raised."""
        lazy = [leaf for leaf in _tree.leaves(value) if is_lazy(leaf)]
        if not lazy:
            return value
        distributed = _distributed()
        client = self._client
        if client is None and distributed is not None:
            try:
                client = distributed.default_client()
            except ValueError:  # no client: dask's own scheduler, here
                client = None
        if client is None:
            dask = _module("dask")
            done = list(dask.persist(*lazy))
        else:
            assert distributed is not None
            try:
                done = list(client.persist(lazy))
                futures = distributed.futures_of(done)
                distributed.wait(futures)
            except (OSError, TimeoutError, distributed.client.ClosedClientError) as error:
                raise StoreError(
                    f"could not hold {what} on the dask cluster at {_address(client)}: {type(error).__name__}: {error}"
                ) from error
            for future in futures:
                if future.status == "error":
                    _raise_task_error(future, what, client, distributed)
                elif future.status != "finished":
                    raise StoreError(
                        f"could not hold {what} on the dask cluster at {_address(client)}: key {future.key!r} "
                        f"was {future.status} (was the client closed, or the data lost with a worker?)"
                    )
        results = iter(done)
        return _tree.tree_map(lambda leaf: next(results) if is_lazy(leaf) else leaf, value)


def _raise_task_error(future: Any, what: str, client: Any, distributed: Any) -> None:
    """Raise what a chunk's task raised: the step's own error as it is; a lost worker as a StoreError."""
    try:
        future.result()
    except distributed.KilledWorker as error:
        raise StoreError(
            f"could not hold {what} on the dask cluster at {_address(client)}: {type(error).__name__}: {error}"
        ) from error


def _address(client: Any) -> str:
    try:
        return str(client.scheduler.address)
    except AttributeError:
        return repr(client)


def _fresh(leaf: Any) -> Any:
    """A new dask array object over the same keys (no task added, nothing computed); other leaves as they are."""
    if not _is_array(leaf):
        return leaf
    array = _module("dask.array")
    return array.Array(leaf.dask, leaf.name, leaf.chunks, meta=leaf._meta)


def _size(state: Any) -> int:
    """The bytes the state's leaves report (a dask array: shape times itemsize; 0 where a shape is unknown)."""
    total = 0
    for leaf in _tree.leaves(state):
        size = getattr(leaf, "nbytes", 0)
        if isinstance(size, float) and math.isnan(size):  # chunks of unknown size
            continue
        total += int(size)
    return total
