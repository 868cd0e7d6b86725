"""Steps with a known misbehaviour, shared by the fault tests."""

import numpy as np


def failing_on_call(k, error):
    """np.sin, except that the k-th call raises ``error`` (the same object every time)."""
    calls = [0]

    def f(x):
        calls[0] += 1
        if calls[0] == k:
            raise error
        return np.sin(x)

    return f
