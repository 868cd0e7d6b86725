"""The recurrences the ``revseq`` command runs: the built-in demo, and loading a user's own.

The built-in one is the original gist's ``x_{t+1} = sin(x_t)`` with the
elementwise derivative ``cos``. ``--recurrence module:object`` names either a
:class:`~revseq.Recurrence` (its start state is drawn like the built-in's) or a
callable taking no arguments that returns ``(recurrence, x0)``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from revseq.recurrence import Recurrence

__all__ = ["LoadError", "Workload", "builtin", "load", "resolve"]


@attrs.frozen
class Workload:
    """A recurrence, its start state, and a one-line description for the report."""

    recurrence: Recurrence
    x0: Any
    description: str
    sized: bool = True  # whether x0 was drawn at the requested size (False: the user's own x0)


def _random_state(size: int, seed: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size)


def builtin(size: int, seed: int = 0) -> Workload:
    """``x_{t+1} = sin(x_t)`` on ``size`` floats drawn uniformly from [-1, 1).

    >>> w = builtin(3)
    >>> w.description
    'x_{t+1} = sin(x_t) (built-in), x_0: 3 float64 drawn from U[-1, 1), seed 0'
    """
    return Workload(
        Recurrence(f=np.sin, df=np.cos),
        _random_state(size, seed),
        f"x_{{t+1}} = sin(x_t) (built-in), x_0: {size} float64 drawn from U[-1, 1), seed {seed}",
    )


class LoadError(Exception):
    """``--recurrence`` names nothing usable; the message says why."""


def _import(module: str) -> Any:
    if module.endswith(".py") or os.sep in module or "/" in module:
        path = Path(module)
        if not path.is_file():
            raise LoadError(f"no such file: {module}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise LoadError(f"cannot load {module} as a Python module")
        mod = importlib.util.module_from_spec(spec)
        added = sys.modules.setdefault(path.stem, mod) is mod
        try:
            spec.loader.exec_module(mod)
        except Exception as exc:  # the user's module failed: one line saying where, not a traceback
            if added:
                del sys.modules[path.stem]
            raise LoadError(f"importing {module} raised {_summary(exc)}") from exc
        return mod
    # Like `python -m`, look in the current directory first: a console script does not.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise LoadError(f"cannot import {module!r}: {exc}") from exc
    except Exception as exc:  # importing ran the user's code, and it failed
        raise LoadError(f"importing {module!r} raised {_summary(exc)}") from exc


def _summary(exc: BaseException) -> str:
    """``exc`` in one line: its type, the first line of its message, and where it was raised (file:line)."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    where = ""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" ({Path(exc.filename).name}:{exc.lineno})"
        message = exc.msg
    elif exc.__traceback__ is not None:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f" ({Path(frame.filename).name}:{frame.lineno}, in {frame.name})"
    return f"{type(exc).__name__}: {message}{where}" if message else f"{type(exc).__name__}{where}"


def _takes_no_arguments(fn: Any) -> bool:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # no signature to read (some builtins): let the call decide
        return True
    try:
        signature.bind()
    except TypeError:
        return False
    return True


def resolve(spec: str) -> Any:
    """The object ``module:object`` (or ``path/to/file.py:object``; ``object`` may be dotted) names.

    Raises :class:`LoadError` saying why it cannot be found.
    """
    module, sep, name = spec.rpartition(":")
    if not sep or not module or not name:
        raise LoadError(f"expected module:object (or path/to/file.py:object), got {spec!r}")
    target: Any = _import(module)
    for part in name.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise LoadError(f"{module!r} has no attribute {name!r}") from None
    return target


def load(spec: str, size: int, seed: int = 0) -> Workload:
    """Load ``module:object`` (or ``path/to/file.py:object``); ``object`` may be dotted.

    The object is a :class:`~revseq.Recurrence`, run from ``size`` floats drawn
    uniformly from [-1, 1), or a callable of no arguments returning
    ``(recurrence, x0)``. Raises :class:`LoadError` with the reason otherwise.
    """
    target = resolve(spec)
    if isinstance(target, Recurrence):
        return Workload(target, _random_state(size, seed), f"{spec}, x_0: {size} float64 drawn from U[-1, 1)")
    if not callable(target):
        raise LoadError(
            f"{spec} must be a revseq.Recurrence or a callable returning (recurrence, x0), got {type(target).__name__}"
        )
    if not _takes_no_arguments(target):
        raise LoadError(
            f"{spec} must be a revseq.Recurrence or a function of no arguments returning (recurrence, x0), "
            f"but it needs arguments; if it is your step f, wrap it: Recurrence(f, df=...) or Recurrence(f, vjp=...)"
        )
    try:
        made = target()
    except Exception as exc:  # the user's factory failed
        raise LoadError(f"calling {spec}() raised {_summary(exc)}") from exc
    if not (isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], Recurrence)):
        raise LoadError(f"{spec}() must return (recurrence, x0) with a revseq.Recurrence first, got {made!r:.80}")
    rec, x0 = made
    return Workload(rec, x0, f"{spec}(), x_0 as it returned", sized=False)
