"""The strategies test suites sweep over, shared by the adapter tests."""

import revseq

LISTED = [
    revseq.StoreAll(),
    revseq.Recompute(),
    revseq.RecursiveHalving(),
    revseq.SqrtCheckpointing(),
    revseq.SqrtCheckpointing(interval=3),
    revseq.BinomialCheckpointing(),
    revseq.BinomialCheckpointing(checkpoints=1),
    revseq.BinomialCheckpointing(checkpoints=3),
]


def every_builtin(listed=LISTED):
    """``listed``, plus a default instance of any strategy revseq exports that it does not cover yet."""
    classes = {getattr(revseq, name) for name in revseq.__all__}
    classes = {c for c in classes if isinstance(c, type) and issubclass(c, revseq.ReversalStrategy)}
    extra = []
    for cls in sorted(classes - {revseq.ReversalStrategy} - {type(s) for s in listed}, key=lambda c: c.__name__):
        try:
            extra.append(cls())
        except TypeError:  # it needs configuration this test cannot guess (ParameterError is a TypeError)
            continue
    return listed + extra
