"""The public surface is explicit and pinned."""

import revseq

EXPECTED = [
    "online_lower_bound",
    "OnlineStrategy",
    "OnlineCheckpointing",
    "MultistageCheckpointing",
    "DiskCosts",
    "Level",
    "LevelCost",
    "Action",
    "Advance",
    "BinomialCheckpointing",
    "Bounds",
    "CheckpointStore",
    "Choice",
    "CompressedStore",
    "Cost",
    "DiskStore",
    "FsspecStore",
    "OverlappedStore",
    "DEFAULT_STRATEGY",
    "Free",
    "MemoryStore",
    "ParameterError",
    "Recompute",
    "RecursiveHalving",
    "Recurrence",
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
    "optimal_forward_steps",
    "repetition_number",
    "reverse",
    "simulate",
    "validate",
    "walk",
]


def test_all_is_pinned():
    # Order is ruff's (RUF022, checked by test_tooling); membership is pinned here.
    assert sorted(revseq.__all__) == sorted(EXPECTED)


def test_every_public_name_exists():
    for name in revseq.__all__:
        assert hasattr(revseq, name), name


def test_ships_py_typed():
    from importlib.resources import files

    assert files("revseq").joinpath("py.typed").is_file()
