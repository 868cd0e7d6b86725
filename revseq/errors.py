"""The one exception hierarchy of revseq.

Every error revseq raises on purpose derives from :class:`RevseqError`, and
also from the built-in exception a caller would catch without knowing
revseq (``ValueError``, ``TypeError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = ["ParameterError", "RevseqError", "ScheduleError", "StepError", "StoreError"]


class RevseqError(Exception):
    """Base class of every error raised by revseq itself."""


class ParameterError(RevseqError, ValueError, TypeError):
    """A parameter has the wrong type or value.

    The message names the parameter, what was expected and what came, for
    example ``checkpoints must be an int >= 1, got 0``.
    """


class ScheduleError(RevseqError, ValueError):
    """A schedule is illegal: the message names the action and why.

    Raised by :func:`revseq.validate`, :func:`revseq.simulate` and by the
    engine before it runs an illegal action, so that nothing illegal runs.
    """

    def __init__(self, message: str, *, index: int | None = None, action: object = None) -> None:
        if index is not None:
            message = f"action #{index} {action!r}: {message}"
        super().__init__(message)
        self.index = index
        self.action = action


class StepError(RevseqError, ValueError):
    """A user-supplied step, derivative or seed returned something unusable.

    For example a step that changes the state's shape or dtype, or an
    adjoint seed whose shape differs from the state's.
    """


class StoreError(RevseqError, OSError):
    """A checkpoint store could not write or read a state (disk full, directory not writable).

    The message names the checkpoint and the place; the run that hit it is
    ended and its store emptied before the error reaches the caller.
    """
