"""revseq.choose: the strategy with the least predicted time, against independent counts.

The timings are replaced by fixed ones where the pick is checked, so that the
oracle is arithmetic: binomial's forward steps from Griewank and Walther's
closed form (tests/oracles.py), the multistage optimum from the nested
programme of tests/multistage_oracles.py, StoreAll's n.
"""

from __future__ import annotations

import math
import os

import multistage_oracles
import numpy as np
import pytest
from oracles import closed_form_advances

import revseq
import revseq.auto


def fixed(monkeypatch, step, write=None, read=None):
    monkeypatch.setattr(revseq.auto, "_time_steps", lambda recurrence, x0, samples: step)
    monkeypatch.setattr(revseq.auto, "_time_disk", lambda x0, directory, samples: (write, read))


def test_memory_only_picks_binomial_with_every_checkpoint_that_fits(monkeypatch):
    fixed(monkeypatch, step=1e-3)
    x0 = np.zeros(100)  # 800 bytes
    choice = revseq.choose(np.sin, x0, 10_000, max_bytes=800 * 15 + 799)
    assert choice.strategy == revseq.BinomialCheckpointing(checkpoints=15)
    (only,) = choice.candidates
    assert only.cost.forward_steps == closed_form_advances(10_000, 15) + 1 == 45156  # + the call making x_n
    assert math.isclose(only.predicted_seconds, 45156 * 1e-3)
    assert only.peak_bytes == 15 * 800


def test_store_all_wins_where_every_state_fits(monkeypatch):
    fixed(monkeypatch, step=1e-3)
    choice = revseq.choose(np.sin, np.zeros(10), 50, max_bytes=80 * 50)
    assert choice.strategy == revseq.StoreAll()  # binomial ties (it stores all too): the simpler one
    assert [c.cost.forward_steps for c in choice.candidates] == [50, 50]


@pytest.mark.parametrize(("write", "read", "picked"), [(2.0, 1.0, "multistage"), (500.0, 500.0, "binomial")])
def test_a_disk_is_used_when_it_is_cheaper_than_recomputing(monkeypatch, tmp_path, write, read, picked):
    fixed(monkeypatch, step=1.0, write=write, read=read)
    n, ram = 200, 3
    choice = revseq.choose(np.sin, np.zeros(4), n, max_bytes=32 * ram, disk=tmp_path)
    times = {type(c.strategy).__name__: c.predicted_seconds for c in choice.candidates}
    # The oracles: binomial's closed form, and the least multistage time over nested schedules
    # (which counts the call making x_n: the strategy's cost does too).
    assert times["BinomialCheckpointing"] == closed_form_advances(n, ram) + 1
    best = 1.0 + multistage_oracles.nested_times(n, ram, None, 1.0, write, read)[n]
    assert times["MultistageCheckpointing"] == pytest.approx(best)
    assert type(choice.strategy).__name__.lower().startswith(picked)
    assert choice.strategy is choice.candidates[0].strategy
    assert "picked: " + repr(choice.strategy) in choice.explain()


def test_measures_for_real_and_leaves_no_file(tmp_path):
    choice = revseq.choose(np.sin, np.zeros(1000), 2000, max_bytes=8000 * 10, disk=tmp_path, samples=3)
    assert choice.step_seconds > 0
    assert choice.write_seconds > 0
    assert choice.read_seconds > 0
    assert {type(c.strategy) for c in choice.candidates} == {
        revseq.BinomialCheckpointing,
        revseq.MultistageCheckpointing,
    }
    assert os.listdir(tmp_path) == []  # the timed writes' private directory is gone
    out = revseq.backprop(revseq.Recurrence(np.sin, np.cos), np.zeros(1000), 2000, choice.strategy)
    assert out.stats.as_cost() == choice.candidates[0].cost


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_bytes": 7}, r"max_bytes=7 holds no state of 8000 bytes: give more memory, or a disk directory"),
        ({"max_bytes": 0}, r"max_bytes must be an int >= 1, got 0"),
        ({"max_bytes": 8000, "disk": 3}, r"disk must be a directory"),
        ({"max_bytes": 8000, "samples": 0}, r"samples must be an int >= 1"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(revseq.ParameterError, match=message):
        revseq.choose(np.sin, np.zeros(1000), 100, **kwargs)


def test_a_store_as_disk_is_timed_through_itself_and_left_empty():
    pytest.importorskip("fsspec")
    store = revseq.FsspecStore("memory://revseq-auto-test")
    choice = revseq.choose(np.sin, np.zeros(1000), 2000, max_bytes=8000 * 10, disk=store, samples=3)
    assert store.bytes_written >= 3 * 8000  # three timed writes of x0 went through it
    assert choice.write_seconds > 0
    assert choice.read_seconds > 0
    assert revseq.MultistageCheckpointing in {type(c.strategy) for c in choice.candidates}
    assert len(store) == 0
    out = revseq.backprop(revseq.Recurrence(np.sin, np.cos), np.zeros(1000), 2000, choice.strategy, disk=store)
    assert out.stats.as_cost() == choice.candidates[0].cost
