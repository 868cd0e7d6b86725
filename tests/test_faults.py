"""A property-based fault suite: whatever goes wrong, revseq gives the exact gradient or a named error.

Hypothesis draws a user strategy that yields a random legal schedule (random
splits, sweeps, kept ranges, checkpoints in memory and on disk, pointless
Store/Free pairs, numpy integers in the fields), a step that is pure, works
in place, reuses output buffers or writes into the array it was handed last, a store, and a fault: the step, the
derivative or the store raising (an ordinary error or KeyboardInterrupt)
at a random call, or the caller dropping the walk half-way. After every
run one of two things holds:

- the gradient equals StoreAll's on the pure step, to the last bit; or
- a :class:`revseq.RevseqError`, or the very exception injected, reached
  the caller;

and in both cases the caller's x0 and adjoint are unchanged, every store
is empty and no file is left on disk. The oracle is independent of the
schedule: plain backpropagation (StoreAll) with a pure step and an empty,
fresh store.
"""

from __future__ import annotations

import gc
import os
import random
import tempfile
from collections.abc import Iterator
from typing import Any

import attrs
import numpy as np
from generators import lengths
from hypothesis import given, settings
from hypothesis import strategies as st
from stores import Forwarding

import revseq
from revseq import Advance, Bounds, DiskStore, Free, MemoryStore, Recurrence, Restore, ReversalStrategy, Reverse, Store

# -- a user strategy yielding random legal schedules --------------------------------------------


@attrs.frozen
class RandomSchedule(ReversalStrategy):
    """A legal schedule drawn from ``seed``: the same for every walk of one n, as a schedule must be.

    ``slots`` checkpoints in memory (x_0's included), promised in ``bounds``;
    with ``disk``, any number more on disk.
    """

    seed: int
    slots: int
    disk: bool = False
    numpy_fields: bool = False

    def actions(self, n: int) -> Iterator[revseq.Action]:
        out: list[Any] = []
        rng = random.Random(self.seed * 100_003 + n)
        if n > 1:
            out.append(Store(0))
        self._reverse(rng, out, 0, n, self.slots - 1)
        if self.numpy_fields:
            out = [type(a)(*(np.bool_(v) if isinstance(v, bool) else np.int64(v) for v in a)) for a in out]
        return iter(out)

    def _reverse(self, rng: random.Random, out: list[Any], base: int, length: int, free: int) -> None:
        """Reverse ``base .. base + length - 1``; x_base is live and, if length > 1, stored. ``free``: memory slots."""
        if length == 1:
            out.append(Reverse(base, base + 1))
            return
        draw = rng.random()
        if free >= length - 2 and draw < 0.3:  # keep every state on the way
            out.append(Advance(base, base + length - 1, keep=length > 2))
            out.append(Reverse(base, base + length))
            return
        if (free == 0 and not self.disk) or draw < 0.45:  # sweeps from x_base, one per step
            for k in range(length, 0, -1):
                if k < length:
                    out.append(Restore(base))
                if k > 1:
                    out.append(Advance(base, base + k - 1))
                out.append(Reverse(base + k - 1, base + k))
            return
        j = rng.randint(1, length - 1)
        mid = base + j
        out.append(Advance(base, mid))
        on_disk = self.disk and (free == 0 or rng.random() < 0.4)
        if rng.random() < 0.15 and (free > 0 or self.disk):  # a pointless but legal Store, then its Free
            out.append(Store(mid, disk=free == 0))
            out.append(Free(mid, mid + 1))
        if length - j > 1:
            out.append(Store(mid, disk=on_disk))
        self._reverse(rng, out, mid, length - j, free if on_disk or length - j == 1 else free - 1)
        out.append(Restore(base))
        self._reverse(rng, out, base, j, free)

    def bounds(self, n: int) -> Bounds:
        return Bounds(checkpoints=self.slots)


# -- steps, pure and not --------------------------------------------------------------------------


def pure(x):
    return np.sin(x)


def in_place(x):
    return np.sin(x, out=x)


class Buffers:
    """np.sin into ``k`` output buffers of its own, in turn."""

    def __init__(self, k: int) -> None:
        self.buffers = [np.empty(3) for _ in range(k)]
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        return np.sin(x, out=self.buffers[self.calls % len(self.buffers)])


class Swaps:
    """np.sin into the array it was handed on the previous call (two buffers, swapped each call)."""

    def __init__(self) -> None:
        self.spare: np.ndarray | None = None

    def __call__(self, x):
        out = self.spare if self.spare is not None else np.empty_like(x)
        self.spare = x
        return np.sin(x, out=out)


STEPS = {
    "pure": lambda: pure,
    "in place": lambda: in_place,
    "1 buffer": lambda: Buffers(1),
    "2 buffers": lambda: Buffers(2),
    "swaps": Swaps,
}


class Injected(Exception):
    """The fault the suite injects: an error of the user's own, not revseq's."""


class Faulty:
    """Calls ``fn`` and raises ``error`` at the ``at``-th call (counted from 1); ``at=0`` never."""

    def __init__(self, fn: Any, at: int, error: BaseException) -> None:
        self.fn, self.at, self.error, self.calls = fn, at, error, 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        if self.calls == self.at:
            raise self.error
        return self.fn(*args)


class FaultyStore(Forwarding):
    """A store around ``inner`` whose ``op`` raises ``error`` at its ``at``-th call."""

    def __init__(self, inner: Any, op: str, at: int, error: BaseException) -> None:
        super().__init__(inner)
        self.op, self.at, self.error, self.calls = op, at, error, 0

    def _maybe_fail(self, op: str) -> None:
        if op == self.op:
            self.calls += 1
            if self.calls == self.at:
                raise self.error

    def put(self, key: int, state: Any) -> None:
        self._maybe_fail("put")
        super().put(key, state)

    def get(self, key: int) -> Any:
        self._maybe_fail("get")
        return super().get(key)


def files_under(directory: str) -> list[str]:
    return [os.path.join(root, name) for root, _, names in os.walk(directory) for name in names]


X0 = np.array([0.7, -0.3, 1.1])
SEED = np.array([1.0, -2.0, 0.5])


def oracle(n: int) -> np.ndarray:
    return revseq.backprop(Recurrence(pure, np.cos), X0.copy(), n, revseq.StoreAll(), adjoint=SEED.copy()).gradient


schedules = st.builds(
    RandomSchedule,
    seed=st.integers(0, 10**6),
    slots=st.integers(1, 6),
    disk=st.booleans(),
    numpy_fields=st.booleans(),
)
errors = st.sampled_from([Injected("injected"), KeyboardInterrupt()])


@settings(max_examples=300)
@given(
    n=lengths(40),
    strategy=schedules,
    step=st.sampled_from(list(STEPS)),
    store_kind=st.sampled_from(["memory", "memory, copies", "disk"]),
    fault=st.sampled_from(["none", "f", "df", "put", "get", "disk put", "disk get", "drop"]),
    at=st.integers(1, 120),
    error=errors,
)
def test_any_fault_gives_the_exact_gradient_or_a_named_error_and_leaves_nothing(
    n, strategy, step, store_kind, fault, at, error
):
    with tempfile.TemporaryDirectory() as directory:
        x0, seed = X0.copy(), SEED.copy()
        inner: Any = {"memory": MemoryStore(), "memory, copies": MemoryStore(copy=True)}.get(store_kind)
        memory = inner if inner is not None else DiskStore(directory)
        disk_inner = DiskStore(directory)
        store: Any = FaultyStore(memory, fault, at, error) if fault in ("put", "get") else memory
        disk: Any = FaultyStore(disk_inner, fault[5:], at, error) if fault.startswith("disk ") else disk_inner
        f = STEPS[step]()
        f = Faulty(f, at, error) if fault == "f" else f
        df = Faulty(np.cos, at, error) if fault == "df" else np.cos
        rec = Recurrence(f, df)
        copies = store_kind != "memory"
        raised: BaseException | None = None
        out = None
        try:
            if fault == "drop":
                it = revseq.walk(rec, x0, n, strategy, store=store, disk=disk)
                for _ in range(min(at % 7, n)):
                    next(it)
                del it
                gc.collect()
            else:
                out = revseq.backprop(rec, x0, n, strategy, adjoint=seed, store=store, disk=disk)
        except (revseq.RevseqError, Injected, KeyboardInterrupt) as exc:
            raised = exc
        if isinstance(raised, revseq.RevseqError):
            if isinstance(raised, revseq.StepError):  # only ever the refusal of an impure step
                assert "in place" in str(raised) or "wrote into" in str(raised), raised
                assert step != "pure", f"a pure step was refused: {raised}"
            else:
                assert fault != "none", f"no fault was injected, yet: {raised!r}"
        elif raised is not None:
            assert raised is error, f"a different error reached the caller: {raised!r}"
        elif out is not None:
            # No error: the answer is exact. (An impure step may have run without harm: two output
            # buffers corrupt nothing in a run of two calls. But an in-place step writes on every call,
            # and the first is always watched.)
            assert step != "in place" or copies, "an in-place step ran on a referencing store"
            np.testing.assert_array_equal(out.gradient, oracle(n))
            assert out.stats.peak_checkpoints <= strategy.slots
        np.testing.assert_array_equal(x0, X0)
        np.testing.assert_array_equal(seed, SEED)
        assert len(memory) == 0
        assert len(disk_inner) == 0
        assert files_under(directory) == []


@settings(max_examples=200)
@given(n=lengths(60), strategy=schedules)
def test_random_user_schedules_are_legal_and_cost_what_the_engine_measures(n, strategy):
    # The generator itself is under test here: what it makes is a legal schedule within its promise,
    # and the engine measures what the simulator predicts.
    cost = strategy.cost(n)
    with tempfile.TemporaryDirectory() as directory:
        out = revseq.backprop(Recurrence(pure, np.cos), X0, n, strategy, disk=DiskStore(directory))
    assert out.stats.as_cost() == cost
    assert cost.peak_checkpoints <= strategy.slots
    np.testing.assert_array_equal(out.gradient, revseq.backprop(Recurrence(pure, np.cos), X0, n).gradient)
