"""The ``revseq`` command: compare strategies on a recurrence, plan a schedule, draw it.

::

    revseq compare   run every strategy on a recurrence and print what each one cost
    revseq plan      the predicted cost of one strategy (nothing is run); --actions lists its schedule
    revseq plot      the checkpointing diagram and the memory / recomputation frontier, as PNG files

Strategies by short name: storeall, recompute, halving, sqrt, binomial, online
(checkpoints placed without knowing n) and multistage (checkpoints in memory
and on disk; ``compare`` runs it only when asked for, since it writes to disk).
Your own strategy goes beside them as ``-s module:object`` (or
``path/to/file.py:object``): a ReversalStrategy instance, or a function of n
returning one. Its schedule is simulated and checked before anything else
(an illegal one is a usage error naming -s), and run checked.

``revseq <command> --help`` lists the options; docs/cli.md shows real runs.
Exit status: 0 on success, 2 for a usage error (a bad option value, an unknown
strategy, a size too large to run, plan or draw here), 1 when the work fails
(matplotlib missing, the recurrence raising, a file that cannot be written),
130 on Ctrl-C. Errors are one line on stderr, naming the option; an exception
nobody foresaw is one line too (its type, message and where it was raised),
and ``--traceback`` shows it whole.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import json
import math
import os
import re
import sys
import tempfile
import textwrap
import time
import traceback
import tracemalloc
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TextIO

import attrs
import numpy as np

from revseq import _builtin, _limits, _tree
from revseq.auto import Choice, choose
from revseq.benchmarking import describe
from revseq.compressed import CompressedStore, _numcodecs
from revseq.disk import DiskStore
from revseq.engine import Result, backprop
from revseq.errors import ParameterError, RevseqError
from revseq.overlap import OverlappedStore
from revseq.plot import MISSING_MATPLOTLIB
from revseq.recurrence import Recurrence
from revseq.schedule import Cost
from revseq.strategies import (
    BinomialCheckpointing,
    DiskCosts,
    MultistageCheckpointing,
    OnlineCheckpointing,
    Recompute,
    RecursiveHalving,
    SqrtCheckpointing,
    StoreAll,
    online_lower_bound,
    optimal_forward_steps,
    repetition_number,
)
from revseq.strategies.base import OnlineStrategy, ReversalStrategy

__all__ = ["STRATEGIES", "load_strategy", "main"]

STRATEGIES: dict[str, type[ReversalStrategy]] = {
    "storeall": StoreAll,
    "recompute": Recompute,
    "halving": RecursiveHalving,
    "sqrt": SqrtCheckpointing,
    "binomial": BinomialCheckpointing,
    "online": OnlineCheckpointing,
    "multistage": MultistageCheckpointing,
}
"""The short names the command accepts; the class names work too, in any case."""

COMPARE_DEFAULT = ["storeall", "sqrt", "binomial", "online", "halving", "recompute"]
"""What ``compare`` runs without ``--strategies``: every strategy but multistage, which writes to disk."""

DIAGRAM_RAM = 3
"""``revseq plot diagram -s multistage`` without ``--ram``: 3 checkpoints in memory, as the default diagram has."""

# Options that configure one family of strategies: (option, dest in the namespace, the strategies it applies to).
_Option = tuple[str, str, tuple[str, ...]]
_BUDGET_OPTIONS: list[_Option] = [
    ("--checkpoints", "checkpoints", ("binomial", "online")),
    ("--interval", "interval", ("sqrt",)),
]
_DISK_OPTIONS: list[_Option] = [
    (f"--{dest.replace('_', '-')}", dest, ("multistage",))
    for dest in ("ram", "disk", "level", "step_cost", "write_cost", "read_cost", "depth", "adjoint_cost")
]

_ALIASES = {**{name: name for name in STRATEGIES}, **{cls.__name__.lower(): name for name, cls in STRATEGIES.items()}}

RECOMPUTE_MAX_N = 2000
RECOMPUTE_MAX_SECONDS = 10.0
"""``compare`` runs Recompute (about n^2/2 forward steps) by default only for ``n <= RECOMPUTE_MAX_N``
and when the fastest time per step of the runs before it predicts at most ``RECOMPUTE_MAX_SECONDS``."""

MIB = 2**20

MAX_FRONTIER_N = 10**5
"""``plot frontier`` draws n <= MAX_FRONTIER_N: its staircase has a point per budget 1 .. n (about 10 s at the
limit)."""

COMPARE_MAX_SECONDS = 3600.0
"""``compare`` refuses runs predicted to take longer (``--max-seconds`` changes it): the forward steps of
every run, predicted without running anything, times one call of f timed on x_0."""


# -- option types: each raises ArgumentTypeError, which argparse prints as "argument -n: ..." (exit 2) --


MAX_COUNT = 10**100
"""The largest count any option takes: far past anything that can run or be planned, and small enough that
every number the command prints, ratios included, fits in a float."""

_POWER = re.compile(r"(\d+)\s*(?:\*\*|\^)\s*(\d+)")
_SCIENTIFIC = re.compile(r"(\d+)[eE]\+?(\d+)")


def _count(text: str) -> int:
    """An int written as ``1000000``, ``1_000_000``, ``1e6`` or ``10**6``; ValueError otherwise (or past MAX_COUNT)."""
    text = text.strip()
    for pattern in (_POWER, _SCIENTIFIC):
        match = pattern.fullmatch(text)
        if match:
            base, exponent = int(match[1]), int(match[2])
            if exponent > 400:  # past MAX_COUNT however it is written: refused before it is computed
                raise OverflowError(text)
            return int(base**exponent) if pattern is _POWER else base * 10**exponent
    return int(text)


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        shown = text if len(text) <= 40 else text[:37] + "..."
        try:
            value = _count(text)
        except OverflowError:
            value = MAX_COUNT + 1
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an int >= {minimum}, got {shown!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an int >= {minimum}, got {value}")
        if value > MAX_COUNT:
            raise argparse.ArgumentTypeError(f"must be an int from {minimum} to 10**100, got {shown!r}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


def _finite_at_least(minimum: float, *, strict: bool = False) -> Callable[[str], float]:
    relation = ">" if strict else ">="

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a finite number {relation} {minimum:g}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"must be a finite number {relation} {minimum:g}, got {text}")
        return value

    parse.__name__ = f"number {relation} {minimum:g}"
    return parse


def _directory(text: str) -> str:
    """An existing, writable directory (``--disk-dir``), as an absolute path."""
    path = os.path.abspath(text)
    if not os.path.isdir(path):
        why = "not a directory" if os.path.exists(path) else "no such directory"
        raise argparse.ArgumentTypeError(f"must be an existing, writable directory, got {text!r} ({why})")
    if not os.access(path, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"must be an existing, writable directory, got {text!r} (not writable)")
    return path


def _budgets(text: str) -> list[int | None]:
    """Comma-separated budgets, each an int >= 1 or ``auto`` (the strategy's default)."""
    out: list[int | None] = []
    for part in text.split(","):
        part = part.strip()
        if part.lower() == "auto":
            out.append(None)
            continue
        try:
            out.append(_int_at_least(1)(part))
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{exc} (or 'auto')") from None
    return out


@attrs.frozen
class _Yours:
    """A strategy of the user's, named on the command line as ``module:object``; loaded once n is known."""

    spec: str

    def __str__(self) -> str:
        return self.spec


def _strategy_name(text: str) -> str | _Yours:
    """A built-in's short name (from its short or class name, any case), or ``module:object`` as :class:`_Yours`."""
    name = _ALIASES.get(text.strip().lower())
    if name is not None:
        return name
    if ":" in text:
        return _Yours(text.strip())
    choices = ", ".join(STRATEGIES)
    classes = ", ".join(cls.__name__ for cls in STRATEGIES.values())
    raise argparse.ArgumentTypeError(
        f"unknown strategy {text!r}; choose from {choices} (or {classes}), "
        f"or name your own as module:object or path/to/file.py:object"
    )


def _strategy_names(text: str) -> list[str | _Yours]:
    return [_strategy_name(part) for part in text.split(",") if part.strip()]


def load_strategy(spec: str, n: int) -> ReversalStrategy:
    """Load ``module:object`` (or ``path/to/file.py:object``; ``object`` may be dotted) as a strategy for ``n`` steps.

    The object is a :class:`~revseq.ReversalStrategy` instance, or a callable
    taking ``n`` and returning one. Module and attribute are found as
    ``--recurrence`` finds them (the same loader); anything else raises
    :class:`revseq._builtin.LoadError` saying why, in one line.
    """
    target: Any = _builtin.resolve(spec)
    module = spec.rpartition(":")[0]
    if isinstance(target, ReversalStrategy):
        return target
    wanted = "a revseq.ReversalStrategy instance or a function of n returning one"
    if isinstance(target, type) and issubclass(target, ReversalStrategy):
        raise _builtin.LoadError(
            f"{spec} must be {wanted}, got the class {target.__name__}; make one in {module} "
            f"(my_strategy = {target.__name__}(...)) and name that"
        )
    if isinstance(target, type) or not callable(target):
        raise _builtin.LoadError(f"{spec} must be {wanted}, got {_what(target)}")
    if not _takes_one_argument(target):
        raise _builtin.LoadError(f"{spec} must be {wanted}, but it cannot be called with one argument, n")
    try:
        made = target(n)
    except Exception as exc:  # the user's factory failed
        raise _builtin.LoadError(f"calling {spec}({n}) raised {_builtin._summary(exc)}") from exc
    if not isinstance(made, ReversalStrategy):
        is_class = isinstance(made, type) and issubclass(made, ReversalStrategy)
        hint = f"; did you mean {made.__name__}()?" if is_class else ""
        raise _builtin.LoadError(f"{spec}({n}) must return a revseq.ReversalStrategy, got {_what(made)}{hint}")
    return made


def _what(value: Any) -> str:
    """``value`` for an error message: its repr, cut to 80 characters, and its type."""
    if isinstance(value, type):
        return f"the class {value.__name__}"
    text = repr(value)
    return f"{text if len(text) <= 80 else text[:77] + '...'} ({type(value).__name__})"


def _takes_one_argument(fn: Any) -> bool:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # no signature to read (some builtins): let the call decide
        return True
    try:
        signature.bind(0)
    except TypeError:
        return False
    return True


def _small_budget(n: int) -> int:
    """ceil(log2 n) + 1: the small budget ``compare`` gives binomial and online, and multistage's default ram."""
    return (n - 1).bit_length() + 1


def _online(n: int, checkpoints: int | None) -> OnlineCheckpointing:
    """``checkpoints``, or by default the fewest that keep every run of up to ``n`` steps optimal."""
    if checkpoints is None:
        return OnlineCheckpointing.for_max_steps(n)
    return OnlineCheckpointing(checkpoints=checkpoints)


def _multistage(args: argparse.Namespace, n: int, default_ram: int | None = None) -> MultistageCheckpointing:
    """MultistageCheckpointing from --ram, --disk and the three costs (DiskCosts' defaults where not given)."""
    ram = args.ram if args.ram is not None else default_ram if default_ram is not None else _small_budget(n)
    defaults = DiskCosts()
    costs = DiskCosts(
        step=defaults.step if args.step_cost is None else args.step_cost,
        write=defaults.write if args.write_cost is None else args.write_cost,
        read=defaults.read if args.read_cost is None else args.read_cost,
        adjoint=defaults.adjoint if args.adjoint_cost is None else args.adjoint_cost,
    )
    depth = args.depth or 0
    extra = getattr(args, "level", None)
    if extra:  # --level: further levels below the disk, costs in the unit of --step-cost
        from revseq.strategies.multistage import Level

        step = costs.step
        levels = [Level(ram), Level(args.disk, costs.write / step, costs.read / step)]
        levels += [Level(c, w / step, r / step) for c, w, r in extra]
        return MultistageCheckpointing(levels=levels)
    return MultistageCheckpointing(ram=ram, disk=args.disk, costs=costs, depth=depth)


def _level_spec(text: str) -> tuple[int | None, float, float]:
    """``--level C:W:R``: a further storage level's capacity (``none``: unlimited), write and read times."""
    parts = text.split(":")
    usage = f"must be CAPACITY:WRITE:READ (capacity an int >= 0 or none, times finite numbers >= 0), got {text!r}"
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(usage)
    try:
        capacity = None if parts[0].strip().lower() in ("none", "") else int(parts[0])
        write, read = float(parts[1]), float(parts[2])
    except ValueError:
        raise argparse.ArgumentTypeError(usage) from None
    if (capacity is not None and capacity < 0) or not all(math.isfinite(v) and v >= 0 for v in (write, read)):
        raise argparse.ArgumentTypeError(usage)
    return capacity, write, read


def _check_disk_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.ram == 0 and args.disk == 0:
        parser.error("argument --disk: --ram 0 and --disk 0 leave nowhere to keep x_0; give --ram >= 1 or --disk >= 1")
    if args.depth:
        if getattr(args, "level", None):
            parser.error("argument --depth: plans for an overlapped disk store with two levels, not with --level")
        if args.ram is not None and args.depth >= args.ram:
            parser.error(
                f"argument --depth: must be less than --ram (the store's {args.depth} buffers are part of the "
                f"{args.ram} states of memory, and one checkpoint must remain), got --depth {args.depth}"
            )


def _given(args: argparse.Namespace, options: list[_Option]) -> list[tuple[str, tuple[str, ...]]]:
    """The options of ``options`` given on the command line, with the strategies each applies to."""
    return [(option, owners) for option, dest, owners in options if getattr(args, dest, None) is not None]


def _refuse(parser: argparse.ArgumentParser, message: str, status: int = 2) -> NoReturn:
    """End the command with ``message`` on one line of stderr (no usage lines: the value, not the syntax, is wrong)."""
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    raise SystemExit(status)


def _cost_of(strategy: ReversalStrategy, n: int, parser: argparse.ArgumentParser, option: str) -> Cost:
    """``strategy.cost(n)``; a plan too large to make (multistage's limit) is a usage error naming -n.

    A strategy of the user's is costed by simulating its schedule, which checks every action against the
    rules and the strategy's own bounds: an illegal schedule is a usage error naming ``option``, the
    strategy option.
    """
    try:
        return strategy.cost(n)
    except ParameterError as exc:
        if _is_builtin(strategy):
            _refuse(parser, f"argument -n: {exc}")
        _refuse(parser, f"argument {option}: {describe(strategy)} for n = {n}: {exc}")
    except RevseqError as exc:  # a ScheduleError: only a strategy that is not revseq's own can make one
        _refuse(parser, f"argument {option}: {describe(strategy)} makes an illegal schedule for n = {n}: {exc}")


def _predicted_how(strategy: ReversalStrategy) -> str:
    """How ``cost()`` finds its numbers: no built-in strategy walks its schedule, a user's strategy does."""
    if not _is_builtin(strategy):
        return "by simulating its schedule, which checks every action"
    if isinstance(strategy, OnlineStrategy):
        return "from the checkpoints its forward sweep places"
    if isinstance(strategy, MultistageCheckpointing):
        return "from its plan"
    if type(strategy)._closed_cost is ReversalStrategy._closed_cost:
        return "by simulating its schedule"
    return "in closed form from its schedule"


# -- progress: tqdm on a terminal, nothing otherwise ----------------------------------------------


class _Progress:
    """Counts calls of f into a tqdm bar; a no-op object when no bar is shown."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar
        self.pending = 0

    def stage(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description_str(text)

    def wrap(self, recurrence: Recurrence) -> Recurrence:
        """The recurrence with f counting its calls into the bar (unchanged when no bar is shown)."""
        if self.bar is None:
            return recurrence
        f, bar = recurrence.f, self.bar

        def counted(*args: Any) -> Any:
            # Batch updates: tqdm.update per call would cost more than a small step.
            self.pending += 1
            if self.pending >= 64:
                bar.update(self.pending)
                self.pending = 0
            return f(*args)

        return attrs.evolve(recurrence, f=counted)

    def extend(self, steps: int) -> None:
        """Add ``steps`` more calls to the bar's total."""
        if self.bar is not None:
            self.bar.total += steps
            self.bar.refresh()

    def flush(self) -> None:
        if self.bar is not None and self.pending:
            self.bar.update(self.pending)
            self.pending = 0


@contextmanager
def _progress(total: Callable[[], int], enabled: bool, stream: TextIO) -> Iterator[_Progress]:
    """A progress bar over ``total()`` calls of f, if ``enabled``, tqdm is installed and ``stream`` is a terminal."""
    tqdm = None
    if enabled and stream.isatty():
        try:
            tqdm = importlib.import_module("tqdm")
        except ModuleNotFoundError:  # optional: pip install 'revseq[cli]'
            tqdm = None
    if tqdm is None:
        yield _Progress(None)
        return
    bar = tqdm.tqdm(total=total(), unit="step", unit_scale=True, leave=False, file=stream, dynamic_ncols=True)
    try:
        yield _Progress(bar)
    finally:
        bar.close()


# -- compare ----------------------------------------------------------------------------------------


@attrs.frozen
class _Row:
    strategy: ReversalStrategy
    name: str
    checkpoints: int
    forward_steps: int
    recompute_factor: float
    peak_bytes: int
    seconds: float
    deviation: float
    reference: bool
    traced_bytes: int | None = None
    peak_disk: int = 0
    disk_writes: int = 0
    disk_reads: int = 0
    disk_bytes_written: int = 0
    disk_bytes_read: int = 0
    compression_ratio: float | None = None

    @property
    def disk_columns(self) -> bool:
        """Whether the row fills the disk columns: multistage always, others only if they used the disk."""
        used = self.peak_disk or self.disk_writes or self.disk_reads
        return bool(used) or isinstance(self.strategy, MultistageCheckpointing)

    def as_json(self) -> dict[str, Any]:
        return {
            "strategy": describe(self.strategy),
            "name": self.name,
            "checkpoints": self.checkpoints,
            "forward_steps": self.forward_steps,
            "recompute_factor": self.recompute_factor,
            "peak_bytes": self.peak_bytes,
            "peak_mib": self.peak_bytes / MIB,
            "seconds": self.seconds,
            "max_gradient_deviation": self.deviation,
            "reference": self.reference,
            "traced_peak_mib": None if self.traced_bytes is None else self.traced_bytes / MIB,
            "peak_disk": self.peak_disk,
            "disk_writes": self.disk_writes,
            "disk_reads": self.disk_reads,
            "disk_bytes_written": self.disk_bytes_written,
            "disk_bytes_read": self.disk_bytes_read,
            "compression_ratio": self.compression_ratio,
            "disk_mib_written": self.disk_bytes_written / MIB,
            "disk_mib_read": self.disk_bytes_read / MIB,
        }


def _name_of(strategy: ReversalStrategy, yours: dict[int, str]) -> str:
    """The short name of a built-in, or the module:object a strategy of the user's was loaded from."""
    if id(strategy) in yours:
        return yours[id(strategy)]
    for name, cls in STRATEGIES.items():
        if type(strategy) is cls:
            return name
    return type(strategy).__name__  # pragma: no cover - the rest come from the user (above) or --auto


def _is_builtin(strategy: ReversalStrategy) -> bool:
    """Whether ``strategy`` is exactly one of revseq's classes: its schedules are proven legal by the tests."""
    return type(strategy) in STRATEGIES.values()


def _load_yours(yours: _Yours, n: int, parser: argparse.ArgumentParser, option: str) -> ReversalStrategy:
    """The user's strategy for ``n`` steps; a usage error naming ``option`` if it cannot be loaded."""
    try:
        return load_strategy(yours.spec, n)
    except _builtin.LoadError as exc:
        _refuse(parser, f"argument {option}: {exc}")


def _yours_note(strategies: list[ReversalStrategy], yours: dict[int, str]) -> str:
    named = ", ".join(f"{describe(s)} ({yours[id(s)]})" for s in strategies if id(s) in yours)
    return (
        f"yours: {named}; each schedule was simulated and checked before the runs, and the engine checks every "
        f"action as it runs, as it does for any strategy not revseq's own"
    )


@attrs.frozen
class _Plan:
    """What ``compare`` runs, in the order to show it, with the notes to print under the table."""

    strategies: list[ReversalStrategy]
    skipped: list[str]  # one line for each strategy left out, and why
    notes: list[str]  # how a strategy was run
    yours: dict[int, str] = attrs.Factory(dict)  # id of a strategy of the user's -> the module:object it came from


def _compare_plan(args: argparse.Namespace, parser: argparse.ArgumentParser) -> _Plan:
    n = args.n
    explicit = args.strategies is not None
    names = list(dict.fromkeys(args.strategies)) if explicit else COMPARE_DEFAULT
    if args.checkpoints and not {"binomial", "online"} & set(names):
        parser.error("--checkpoints sets the budgets of binomial and online, but --strategies includes neither")
    if args.interval and "sqrt" not in names:
        parser.error("--interval sets sqrt's intervals, but --strategies does not include sqrt")
    disk_options = [option for option, _ in _given(args, _DISK_OPTIONS)]
    if args.disk_dir and getattr(args, "auto", None) is None:  # with --auto, --disk-dir gives it a disk level
        disk_options.append("--disk-dir")
    if disk_options == ["--disk-dir"] and any(isinstance(name, _Yours) for name in names):
        disk_options = []  # a strategy of the user's may store on disk too
    if disk_options and "multistage" not in names:
        parser.error(
            f"{disk_options[0]} configures multistage, but --strategies does not include it "
            f"(multistage runs only when asked for, as it writes checkpoints to disk)"
        )
    _check_disk_options(args, parser)
    small = _small_budget(n)
    chosen: list[ReversalStrategy] = []
    skipped: list[str] = []
    notes: list[str] = []
    yours: dict[int, str] = {}
    for name in names:
        if isinstance(name, _Yours):
            strategy = _load_yours(name, n, parser, "-s/--strategies")
            chosen.append(strategy)
            yours[id(strategy)] = name.spec
        elif name == "binomial":
            budgets = args.checkpoints or [None, small]  # the default, and ceil(log2 n) + 1
            binomial = [BinomialCheckpointing(checkpoints=c) for c in budgets]
            by_budget = {s.budget(n): s for s in reversed(binomial)}  # two spellings of one budget: the first
            chosen.extend(by_budget[c] for c in sorted(by_budget, reverse=True))
        elif name == "online":
            # by default the small budget only, so that its row compares with binomial's
            online = {s.budget(): s for s in reversed([_online(n, c) for c in args.checkpoints or [small]])}
            chosen.extend(online[c] for c in sorted(online, reverse=True))
            bounds = ", ".join(f"{online_lower_bound(n, c)} with {c} checkpoints" for c in sorted(online, reverse=True))
            notes.append(
                f"OnlineCheckpointing ran with n known: its schedule is the one a run of unknown length makes "
                f"if it stops at x_n (checkpoints placed without knowing n). The fewest forward steps any online "
                f"schedule can make: {bounds} (online_lower_bound)"
            )
        elif name == "multistage":
            strategy = _multistage(args, n)
            chosen.append(strategy)
            where = args.disk_dir or tempfile.gettempdir()
            notes.append(
                f"{describe(strategy)} writes its disk checkpoints to a private directory (revseq-XXXXXXXX, mode "
                f"0700) under {where}, made for each run and removed when the run ends"
                + ("" if args.disk_dir else "; --disk-dir chooses where")
                + (
                    f"; through an OverlappedStore(depth={strategy.depth}), which writes behind and reads ahead "
                    f"on a thread (a state read ahead and dropped is read again: disk MiB read may exceed written)"
                    if strategy.depth
                    else ""
                )
            )
        elif name == "sqrt":
            chosen.extend(SqrtCheckpointing(interval=k) for k in dict.fromkeys(args.interval or [None]))
        elif name == "recompute" and not explicit and n > RECOMPUTE_MAX_N:
            skipped.append(_recompute_note(n, f"n > {RECOMPUTE_MAX_N}"))
        else:
            chosen.append(STRATEGIES[name]())
    if yours:
        notes.append(_yours_note(chosen, yours))
    return _Plan(chosen, skipped, notes, yours)


def _recompute_note(n: int, why: str) -> str:
    steps = Recompute().bounds(n).forward_steps
    return (
        f"Recompute() skipped: {steps} forward steps at n = {n}, quadratic ({why}); "
        f"ask for it with --strategies recompute"
    )


def _deviation(a: Result, b: Result) -> float:
    """The largest absolute difference between two results' gradients (x_0's and the parameters')."""
    worst = 0.0
    for mine, theirs in ((a.gradient, b.gradient), (a.params_gradient, b.params_gradient)):
        if mine is None or theirs is None:
            continue
        for x, y in zip(_tree.leaves(mine), _tree.leaves(theirs), strict=True):
            diff = np.abs(np.asarray(x, dtype=float) - np.asarray(y, dtype=float))
            if diff.size:
                worst = max(worst, float(np.max(diff)))
    return worst


def _traced_peak(
    recurrence: Recurrence,
    x0: Any,
    n: int,
    strategy: ReversalStrategy,
    disk: DiskStore | OverlappedStore | None = None,
    store: CompressedStore | None = None,
) -> int:
    """Peak bytes traced by tracemalloc over one backprop: checkpoints, live state, adjoint, temporaries."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        backprop(recurrence, x0, n, strategy, store=store, disk=disk)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _load(args: argparse.Namespace, parser: argparse.ArgumentParser) -> _builtin.Workload:
    size = args.size if args.size is not None else 1000
    try:  # x_0 is drawn at --size (unless the user's callable makes its own): it must fit, three times over
        _limits.check_fits(
            "argument --size", 3 * 8 * size, f"x_0, the live state and the adjoint hold {size} float64 each"
        )
    except ParameterError as exc:
        _refuse(parser, str(exc))
    if args.recurrence is None:
        return _builtin.builtin(size, args.seed)
    try:
        work = _builtin.load(args.recurrence, size, args.seed)
    except _builtin.LoadError as exc:
        _refuse(parser, f"argument --recurrence: {exc}")
    if args.size is not None and not work.sized:
        parser.error(f"argument --size: {args.recurrence} returns its own x0, so --size does not apply")
    return work


def _check_fits_here(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    work: _builtin.Workload,
    runs: list[ReversalStrategy],
    reference: ReversalStrategy,
    cost_of: Callable[[ReversalStrategy], Cost],
) -> None:
    """Refuse, naming -n, runs whose checkpoints cannot fit in this machine's memory; before anything runs.

    Each run needs at least its peak checkpoints (closed form, or the budget) times the state's bytes and
    a MemoryStore's overhead, besides x_0, the live state and the adjoint.
    """
    n = args.n
    state = _tree.nbytes(work.x0)
    for strategy in runs:
        if isinstance(strategy, OnlineCheckpointing):
            held = min(strategy.budget(), n)
        elif isinstance(strategy, MultistageCheckpointing):
            held = min(strategy.budget(), n - 1)  # in memory; the rest goes to disk
        else:
            held = cost_of(strategy).peak_checkpoints  # closed form (instant for any n), or yours simulated
        role = " (run as the gradient reference)" if strategy is reference else ""
        try:
            _limits.check_fits(
                "argument -n",
                held * (state + _limits.STORED_STATE_BYTES) + 3 * state,
                f"{describe(strategy)}{role} for n = {n} holds {held} checkpoints of {_limits.format_bytes(state)}",
                hint="compare runs every strategy for real; `revseq plan` predicts any n without running it",
            )
        except ParameterError as exc:
            _refuse(parser, str(exc))


def _check_time(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    work: _builtin.Workload,
    runs: list[ReversalStrategy],
    optional: ReversalStrategy | None,
    cost_of: Callable[[ReversalStrategy], Cost],
) -> None:
    """Refuse, naming -n, runs predicted to take longer than --max-seconds; before anything runs.

    The prediction is a lower bound: the forward steps of every run (closed forms; online's lower bound;
    n for multistage) times the fastest of a few calls of f on x_0, adjoints and overhead left out.
    """
    n = args.n
    steps = 0
    for strategy in runs:
        if strategy is optional:  # Recompute by default: skipped later if too slow, so not counted
            continue
        if isinstance(strategy, OnlineCheckpointing):
            steps += online_lower_bound(n, strategy.budget())
        elif isinstance(strategy, MultistageCheckpointing):
            steps += n
        else:
            steps += cost_of(strategy).forward_steps
    steps *= 2 if args.trace_memory else 1
    per_step = _limits.time_per_call(work.recurrence.step_at(), work.x0, 0)
    seconds = steps * per_step
    if seconds > args.max_seconds:
        _refuse(
            parser,
            f"argument -n: compare would run for at least {_limits.format_duration(seconds)} ({steps:.3g} forward "
            f"steps over {len(runs)} runs, at {_limits.format_duration(per_step)} per call of f timed on x_0), "
            f"over the limit of {_limits.format_duration(args.max_seconds)} (--max-seconds); choose a smaller -n "
            f"or fewer --strategies, or predict the costs with `revseq plan`, which runs nothing",
        )


def _compare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    n = args.n
    plan = _compare_plan(args, parser)
    strategies, skipped = plan.strategies, plan.skipped
    work = _load(args, parser)
    picked: Choice | None = None
    if args.auto is not None:  # what revseq.choose picks for this workload, run beside the others, and why
        try:
            picked = choose(work.recurrence, work.x0, n, max_bytes=args.auto, disk=args.disk_dir)
        except ParameterError as error:
            parser.error(f"--auto: {error}")
        if picked.strategy not in strategies:
            strategies.append(picked.strategy)
        plan.notes.append(f"auto (--auto {args.auto} bytes): revseq.choose picked {describe(picked.strategy)}")
        plan.notes.extend("  " + line for line in picked.explain().splitlines())
    reference = next((s for s in strategies if type(s) is StoreAll), StoreAll())
    # StoreAll runs first: it is the gradient reference. Recompute, if only defaulted to, runs last,
    # priced by the fastest time per step seen so far.
    runs = [reference, *(s for s in strategies if s is not reference)]
    optional = None if args.strategies is not None else next((s for s in runs if type(s) is Recompute), None)
    costs: dict[int, Cost] = {}

    def cost_of(strategy: ReversalStrategy) -> Cost:  # once each: a strategy of the user's is simulated
        if id(strategy) not in costs:
            costs[id(strategy)] = _cost_of(strategy, n, parser, "-s/--strategies")
        return costs[id(strategy)]

    _check_fits_here(args, parser, work, runs, reference, cost_of)  # what cannot run is refused before it runs
    _check_time(args, parser, work, runs, optional, cost_of)
    predicted = {id(s): cost_of(s) for s in runs}

    passes = 2 if args.trace_memory else 1

    def total() -> int:  # the optional Recompute joins the bar only once it is sure to run
        return passes * sum(c.forward_steps for s, c in zip(runs, predicted.values(), strict=True) if s is not optional)

    def disk_store(strategy: ReversalStrategy) -> DiskStore | OverlappedStore | None:
        # Multistage stores on disk, and a strategy of the user's whose schedule does; the store makes its
        # private directory on the first write.
        uses_disk = isinstance(strategy, MultistageCheckpointing) or predicted[id(strategy)].peak_disk > 0
        if not uses_disk:
            return None
        if isinstance(strategy, MultistageCheckpointing) and strategy.depth:  # the store its plan is for
            return OverlappedStore(DiskStore(args.disk_dir), depth=strategy.depth)
        return DiskStore(args.disk_dir)

    def memory_store(strategy: ReversalStrategy) -> CompressedStore | None:
        # With --compress, every run but the reference keeps its checkpoints compressed (a fresh store each).
        return None if args.compress is None or strategy is reference else CompressedStore(codec=args.compress)

    rows: dict[int, _Row] = {}
    ref_result: Result | None = None
    per_step = 0.0
    with _progress(total, not args.no_progress, sys.stderr) as progress:
        recurrence = progress.wrap(work.recurrence)
        for strategy in runs:
            expected = predicted[id(strategy)]
            if strategy is optional and expected.forward_steps * per_step > RECOMPUTE_MAX_SECONDS:
                estimate = expected.forward_steps * per_step
                skipped.append(_recompute_note(n, f"about {estimate:.0f} s at the pace of the runs above"))
                continue
            if strategy is optional:
                progress.extend(passes * expected.forward_steps)
            progress.stage(describe(strategy))
            disk = disk_store(strategy)
            store = memory_store(strategy)
            start = time.perf_counter()
            result = backprop(recurrence, work.x0, n, strategy, store=store, disk=disk)
            seconds = time.perf_counter() - start
            progress.flush()
            pace = seconds / result.stats.forward_steps
            per_step = pace if strategy is reference else min(per_step, pace)
            if strategy is reference:
                ref_result = result
            assert ref_result is not None
            traced = None
            if args.trace_memory:  # a separate pass, so tracing does not slow the timed run
                progress.stage(f"{describe(strategy)} (tracemalloc)")
                traced = _traced_peak(recurrence, work.x0, n, strategy, disk_store(strategy), memory_store(strategy))
                progress.flush()
            stats = result.stats
            if stats.as_cost() != expected:
                print(
                    f"revseq compare: warning: {describe(strategy)} measured {stats.as_cost()}, predicted {expected}",
                    file=sys.stderr,
                )
            rows[id(strategy)] = _Row(
                strategy=strategy,
                name=_name_of(strategy, plan.yours),
                checkpoints=stats.peak_checkpoints,
                forward_steps=stats.forward_steps,
                recompute_factor=stats.recompute_factor,
                peak_bytes=stats.peak_bytes,
                seconds=seconds,
                deviation=_deviation(result, ref_result),
                reference=strategy is reference,
                traced_bytes=traced,
                peak_disk=stats.peak_disk,
                disk_writes=stats.disk_writes,
                disk_reads=stats.disk_reads,
                disk_bytes_written=stats.disk_bytes_written,
                disk_bytes_read=stats.disk_bytes_read,
                compression_ratio=stats.compression_ratio,
            )
    shown = [rows[id(s)] for s in strategies if id(s) in rows]
    shown_plan = _Plan(strategies, skipped, plan.notes)
    _report(args, work, shown, shown_plan, shown_reference=reference in strategies, auto=picked)
    return 0


def _report(
    args: argparse.Namespace,
    work: _builtin.Workload,
    rows: list[_Row],
    plan: _Plan,
    *,
    shown_reference: bool,
    auto: Choice | None = None,
) -> None:
    n = args.n
    out = sys.stdout
    rec = work.recurrence
    objective = "the recurrence's per-step losses" if rec.loss is not None else "sum(x_n)"
    if args.json:
        doc = {
            "n": n,
            "recurrence": work.description,
            "state_bytes": _tree.nbytes(work.x0),
            "objective": objective,
            "reference": "StoreAll()",
            "compress": None if args.compress is None else _codec_name(args.compress),
            "auto": _auto_json(auto),
            "rows": [row.as_json() for row in rows],
            "skipped": plan.skipped,
            "notes": plan.notes,
        }
        json.dump(doc, out, indent=2)
        out.write("\n")
        return
    state_bytes = _tree.nbytes(work.x0)
    print(f"revseq compare: n = {n}, {work.description}", file=out)
    print(
        f"state: {_size(state_bytes)}; objective: {objective}; its gradient with respect to x_0 "
        f"compared with StoreAll's",
        file=out,
    )
    print(file=out)
    disk = any(row.disk_columns for row in rows)
    header = ["strategy", "checkpoints", "forward steps", "x n", "ckpt MiB"]
    if disk:
        header += ["on disk", "disk w/r", "disk MiB w/r"]
    if args.trace_memory:
        header.append("traced MiB")
    compressed = args.compress is not None
    if compressed:
        header.append("ratio")
    header += ["seconds", "max|grad - StoreAll|"]
    table = []
    for row in rows:
        cells = [
            describe(row.strategy),
            str(row.checkpoints),
            str(row.forward_steps),
            f"{row.recompute_factor:.2f}",
            _mib(row.peak_bytes),
        ]
        if disk and row.disk_columns:
            written, read = _mib(row.disk_bytes_written), _mib(row.disk_bytes_read)
            cells += [str(row.peak_disk), f"{row.disk_writes}/{row.disk_reads}", f"{written}/{read}"]
        elif disk:
            cells += ["-", "-", "-"]
        if args.trace_memory:
            cells.append(_mib(row.traced_bytes or 0))
        if compressed:
            cells.append("-" if row.compression_ratio is None else f"{row.compression_ratio:.2f}")
        cells += [f"{row.seconds:.3f}", "(reference)" if row.reference else f"{row.deviation:.1e}"]
        table.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in table)) if table else len(h) for i, h in enumerate(header)]
    for cells in [header, *table]:
        first = cells[0].ljust(widths[0])
        rest = "  ".join(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        print(f"{first}  {rest}".rstrip(), file=out)
    print(file=out)
    where = " in memory" if disk else ""
    print(
        f"checkpoints: most states held at once{where} (x_0's copy included, the live state not); "
        f"x n: forward steps / n",
        file=out,
    )
    print(f"ckpt MiB: most bytes held in the checkpoint store{where} (nbytes of the stored states)", file=out)
    if disk:
        print("on disk: most checkpoints held on disk at once; disk w/r: states written to / read from disk", file=out)
        print("disk MiB w/r: the bytes of those states, as the engine measured them", file=out)
    if args.trace_memory:
        print("traced MiB: peak of everything Python allocated during the run (tracemalloc, a separate run)", file=out)
    if compressed:
        print(
            f"ratio: the states' bytes / the bytes stored, with checkpoints compressed by {_codec_name(args.compress)} "
            f"(every run but the StoreAll reference; ckpt MiB counts compressed bytes)",
            file=out,
        )
    if not shown_reference:
        print("StoreAll() was run as the gradient reference, not shown", file=out)
    for note in plan.notes:
        print(textwrap.fill(note, width=110, subsequent_indent="  ", break_long_words=False), file=out)
    for note in plan.skipped:  # one line each, whole: easy to grep for
        print(note, file=out)


def _auto_json(choice: Choice | None) -> dict[str, Any] | None:
    if choice is None:
        return None
    return {
        "picked": describe(choice.strategy),
        "max_bytes": choice.max_bytes,
        "step_seconds": choice.step_seconds,
        "write_seconds": choice.write_seconds,
        "read_seconds": choice.read_seconds,
        "candidates": [
            {
                "strategy": describe(c.strategy),
                "predicted_seconds": c.predicted_seconds,
                "forward_steps": c.cost.forward_steps,
                "disk_writes": c.cost.disk_writes,
                "disk_reads": c.cost.disk_reads,
                "peak_bytes": c.peak_bytes,
            }
            for c in choice.candidates
        ],
    }


def _compress_codec(text: str) -> Any:
    """--compress: a CompressedStore shorthand, or zfp:TOL made into numcodecs.ZFPY(tolerance=TOL)."""
    try:
        numcodecs = _numcodecs()  # said now, not after the first runs
    except ModuleNotFoundError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if text in ("blosc", "zstd", "lz4"):
        return text
    match = re.fullmatch(r"zfp:(.+)", text)
    tolerance = None
    if match:
        try:
            tolerance = float(match.group(1))
        except ValueError:
            tolerance = None
    if tolerance is None or not math.isfinite(tolerance) or tolerance <= 0:
        raise argparse.ArgumentTypeError(f"expected blosc, zstd, lz4 or zfp:TOL with a tolerance TOL > 0, got {text!r}")
    return numcodecs.ZFPY(tolerance=tolerance)


def _codec_name(codec: Any) -> str:
    return codec if isinstance(codec, str) else f"zfp (tolerance {codec.tolerance:g})"


def _mib(nbytes: int) -> str:
    """Bytes in MiB to three significant digits, so that small states do not all read 0.00."""
    value = nbytes / MIB
    if value == 0 or value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if value >= 0.001 else f"{value:.1e}"


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", MIB), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit} per state"
    return f"{nbytes} bytes per state"


# -- plan ---------------------------------------------------------------------------------------------


def _single(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    n: int,
    default: str = "binomial",
    default_ram: int | None = None,
) -> ReversalStrategy:
    """The one strategy named by --strategy and configured by the options that apply to it."""
    name = args.strategy or default
    for option, owners in _given(args, _BUDGET_OPTIONS + _DISK_OPTIONS):
        if name not in owners:
            parser.error(f"argument {option}: applies to {' and '.join(owners)} only, not {name}")
    if isinstance(name, _Yours):
        return _load_yours(name, n, parser, "-s/--strategy")
    if name == "binomial":
        return BinomialCheckpointing(checkpoints=args.checkpoints)
    if name == "online":
        return _online(n, args.checkpoints)
    if name == "sqrt":
        return SqrtCheckpointing(interval=args.interval)
    if name == "multistage":
        _check_disk_options(args, parser)
        return _multistage(args, n, default_ram)
    return STRATEGIES[name]()


def _write_json(doc: dict[str, Any], out: TextIO, actions: Iterable[Any] | None) -> None:
    """``json.dump(doc, indent=2)``, with ``actions`` as its last key, streamed: no list of n actions is built."""
    text = json.dumps(doc, indent=2)
    if actions is None:
        out.write(text + "\n")
        return
    out.write(text[: text.rindex("\n}")] + ',\n  "actions": [')  # doc is never empty
    separator = "\n"
    for action in actions:
        out.write(separator + textwrap.indent(json.dumps(_action_json(action), indent=2), "    "))
        separator = ",\n"
    out.write("\n  ]\n}\n" if separator != "\n" else "]\n}\n")


def _action_json(action: Any) -> dict[str, Any]:
    fields = action._asdict() if hasattr(action, "_asdict") else attrs.asdict(action)  # NamedTuple or attrs
    return {"action": type(action).__name__, **fields}


def _number(value: float) -> str:
    """A time in the costs' unit: an integer without its ``.0``, else up to two decimals; ``1.7e+308``, ``inf``.

    Times far from 1 (the costs may be in any unit, from 1e-300 to 1e307) are written with an exponent.
    """
    if not math.isfinite(value):
        return str(value)
    if value != 0 and not 1e-2 <= abs(value) < 1e15:
        return f"{value:.6g}"
    if value == int(value):
        return str(int(value))
    return f"{value:.2f}".rstrip("0")


def _optimal_up_to(c: int) -> int:
    """The longest run for which OnlineCheckpointing(c) is optimal: (c + 1)(c + 2)/2 - 1 steps (docs/online.md)."""
    return (c + 1) * (c + 2) // 2 - 1


def _online_lines(
    strategy: OnlineCheckpointing, n: int, cost: Cost, defaulted: bool
) -> tuple[list[str], dict[str, Any]]:
    """What ``plan`` adds for an online strategy: the online bound and the offline optimum, as lines and JSON."""
    c = strategy.budget()
    bound = online_lower_bound(n, c)
    offline = optimal_forward_steps(n, c)
    up_to = _optimal_up_to(c)
    if cost.forward_steps == bound:
        first = f"{bound} forward steps, met: no online schedule with {c} checkpoints makes fewer"
        second = f"(this one is optimal for every n <= {up_to})"
    else:
        first = f"{bound} forward steps: no online schedule with {c} checkpoints makes fewer"
        second = f"(this one makes {cost.forward_steps / bound:.3f}x as many; it is optimal for n <= {up_to} only)"
    lines = [
        f"  online bound      {first}",
        f"                    {second}",
        f"  offline optimum   {offline} forward steps: binomial with the same {c} checkpoints, told n in advance",
        "  unknown n         this is what a run that stops at x_n costs: its checkpoints are placed without knowing n",
    ]
    if defaulted:
        lines += [
            f"  budget            by default the fewest checkpoints that keep every run of up to {n} steps optimal",
            f"                    (OnlineCheckpointing.for_max_steps({n})); --checkpoints sets it",
        ]
    doc = {"online_lower_bound": bound, "optimal_forward_steps": offline, "optimal_up_to": up_to}
    return lines, doc


def _multistage_lines(strategy: MultistageCheckpointing, n: int, cost: Cost) -> tuple[list[str], dict[str, Any]]:
    """What ``plan`` adds for multistage: the time its costs give, and memory alone (binomial) in the same unit."""
    costs = strategy.costs
    predicted = strategy.predicted_time(n)
    if strategy.depth:
        return _overlapped_lines(strategy, n, cost, predicted)
    if strategy.time_of(cost) != predicted:  # the schedule should take exactly the programme's optimum
        print(
            f"revseq plan: warning: {describe(strategy)} simulated time {strategy.time_of(cost)}, "
            f"predicted {predicted}",
            file=sys.stderr,
        )
    levels = strategy.levels or ()  # three or more: a multilevel plan
    terms = (
        f"{cost.forward_steps} steps x {costs.step:g} + {cost.disk_writes} disk writes x {costs.write:g} "
        f"+ {cost.disk_reads} disk reads x {costs.read:g}"
    )
    if len(levels) > 2:  # in steps: Level costs are in forward steps
        terms = f"{cost.forward_steps} steps" + "".join(
            f" + {cost.level(k).writes} writes x {level.write:g} + {cost.level(k).reads} reads x {level.read:g}"
            f" at level {k}"
            for k, level in enumerate(levels)
            if k
        )
    if strategy.is_exact(n):
        claim = "the least any schedule within these budgets takes"
    elif len(levels) > 2:
        claim = "the better of a periodic plan and each two-level plan (see docs/multistage.md for its gap)"
    elif strategy.disk is None:
        claim = "a periodic plan's, the least possible wherever that was measured"
    else:
        claim = "a long-run plan's, within 1.06x of the least possible wherever that was measured"
    lines = [
        f"  time              {_number(predicted)} = {terms}",
        f"                    {claim} (in the unit of the costs)",
    ]
    ram = strategy.budget()
    alone: dict[str, Any] | None = None
    if ram >= 1:
        binomial = BinomialCheckpointing(checkpoints=ram)
        steps = binomial.cost(n).forward_steps
        time_alone = (1.0 if len(levels) > 2 else costs.step) * steps
        lines.append(
            f"  memory alone      {describe(binomial)}: {steps} forward steps, time {_number(time_alone)} "
            f"({time_alone / predicted:.2f}x as long)"
        )
        alone = {"strategy": describe(binomial), "forward_steps": steps, "time": time_alone}
    else:
        lines.append("  memory alone      impossible: --ram 0 keeps every checkpoint on disk")
    doc = {
        "costs": {"step": costs.step, "write": costs.write, "read": costs.read},  # synchronous: no adjoint
        **({"levels": [attrs.asdict(level) for level in levels]} if len(levels) > 2 else {}),
        "predicted_time": predicted,
        "exact": strategy.is_exact(n),
        "memory_alone": alone,
    }
    return lines, doc


def _overlapped_lines(
    strategy: MultistageCheckpointing, n: int, cost: Cost, predicted: float
) -> tuple[list[str], dict[str, Any]]:
    """What ``plan`` adds for a plan for an overlapped store: its simulated wall time, and the synchronous ones."""
    costs, depth = strategy.costs, strategy.depth
    adjoints = costs.adjoint * n
    synchronous = strategy.time_of(cost) + adjoints  # this schedule with a store that does not overlap
    best = MultistageCheckpointing(ram=strategy.budget(), disk=strategy.disk, costs=costs)
    best_time = best.predicted_time(n) + adjoints
    lines = [
        f"  time              {_number(predicted)} with OverlappedStore(depth={depth}): the event simulation of "
        f"this schedule,",
        f"                    adjoints included ({n} x {costs.adjoint:g}); an estimate of the wall time "
        f"(docs/storage.md)",
        f"  synchronously     {_number(synchronous)} for this schedule; {_number(best_time)} for the synchronous "
        f"plan in all {strategy.budget()} states",
        f"                    of memory ({best_time / predicted:.2f}x as long)",
    ]
    doc = {
        "costs": attrs.asdict(costs),
        "depth": depth,
        "predicted_time": predicted,
        "synchronous_time": synchronous,
        "synchronous_plan_time": best_time,
        "exact": False,
    }
    return lines, doc


def _plan(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    n = args.n
    strategy = _single(args, parser, n)
    out = sys.stdout
    yours = args.strategy if isinstance(args.strategy, _Yours) else None
    if yours is not None and args.actions:  # a strategy of the user's: its schedule is checked before it is listed
        _cost_of(strategy, n, parser, "-s/--strategy")
    if args.actions and not args.json:  # streams: `| head` works for any n, and nothing is costed
        try:
            for action in strategy.schedule(n):
                out.write(f"{action!r}\n")
        except ParameterError as exc:  # multistage's plan too large to make, before any action
            _refuse(parser, f"argument -n: {exc}")
        return 0
    cost = _cost_of(strategy, n, parser, "-s/--strategy")
    bounds = strategy.bounds(n)
    held = max(cost.peak_checkpoints, 1)
    best = optimal_forward_steps(n, held)
    extra: list[str] = []
    extra_doc: dict[str, Any] = {"optimal_forward_steps": best}
    if isinstance(strategy, OnlineCheckpointing):
        extra, extra_doc = _online_lines(strategy, n, cost, defaulted=args.checkpoints is None)
    elif isinstance(strategy, MultistageCheckpointing):
        extra, extra_doc = _multistage_lines(strategy, n, cost)
    if args.json:
        doc: dict[str, Any] = {
            "strategy": describe(strategy),
            **({"from": yours.spec} if yours is not None else {}),
            "n": n,
            **{k: v for k, v in attrs.asdict(cost).items() if k not in ("n", "deep_levels")},
            **({"deep_levels": [level._asdict() for level in cost.deep_levels]} if cost.deep_levels else {}),
            "recompute_factor": cost.recompute_factor,
            "bounds": {k: v for k, v in attrs.asdict(bounds).items() if k != "deep_checkpoints" or v},
            **extra_doc,
        }
        _write_json(doc, out, strategy.schedule(n) if args.actions else None)
        return 0
    promises = [(bounds.forward_steps, "forward steps"), (bounds.checkpoints, "checkpoints")]
    if isinstance(strategy, MultistageCheckpointing):
        promises = [(bounds.checkpoints, "checkpoints in memory"), (bounds.disk_checkpoints, "on disk")]
        promises += [(value, f"at level {k}") for k, value in enumerate(bounds.deep_checkpoints, 2)]
    promise = ", ".join(f"at most {value} {what}" for value, what in promises if value is not None)
    lines = [
        f"{describe(strategy)}{f' (yours, from {yours})' if yours else ''}, n = {n}: "
        f"predicted {_predicted_how(strategy)} (nothing is run)",
        f"  forward steps     {cost.forward_steps}  ({cost.recompute_factor:.2f} x n)",
    ]
    if isinstance(strategy, MultistageCheckpointing):
        deeper = range(2, len(strategy.levels or ()))  # levels 2, 3, ...: where each of those checkpoints lives
        lines += [
            f"  peak checkpoints  {cost.peak_checkpoints} in memory (x_0's copy included), {cost.peak_disk} on disk"
            + "".join(f", {cost.level(k).peak} at level {k}" for k in deeper),
            f"  writes, reads     {cost.writes}, {cost.reads} in memory; {cost.disk_writes}, {cost.disk_reads} on disk"
            + "".join(f"; {cost.level(k).writes}, {cost.level(k).reads} at level {k}" for k in deeper),
        ]
    else:
        lines += [
            f"  peak checkpoints  {cost.peak_checkpoints}  (states held at once, x_0's copy included)",
            f"  writes, reads     {cost.writes}, {cost.reads}  (states stored, restores)",
        ]
    lines.append(f"  promise           {promise or 'none'}")
    if extra:
        lines += extra
    elif cost.forward_steps == best:
        r = repetition_number(n, held)
        lines.append(
            f"  optimum           {best} forward steps is the proven minimum for {held} checkpoints "
            f"(repetition number {r})"
        )
    else:
        lines.append(
            f"  optimum           binomial with the same {held} checkpoints makes {best} forward steps "
            f"(this one makes {cost.forward_steps / best:.2f}x as many)"
        )
    out.write("\n".join(lines) + "\n")
    return 0


# -- plot ---------------------------------------------------------------------------------------------

DIAGRAM_DEFAULT = ("binomial", 3, 20)
"""``revseq plot diagram`` with no options: BinomialCheckpointing(checkpoints=3) on n = 20."""


def _written(path: Path, existed: bool) -> str:
    return f"wrote {path}" + (" (replaced the existing file)" if existed else "")


def _plot(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from revseq import plot

    kinds = [args.kind] if args.kind else ["diagram", "frontier"]
    if args.output is not None and not args.kind:
        parser.error("argument -o/--output: names one file; choose diagram or frontier")
    configured = [option for option, _ in _given(args, _BUDGET_OPTIONS + _DISK_OPTIONS)]
    yours = args.strategy if isinstance(args.strategy, _Yours) else None
    if args.kind == "frontier" and ((args.strategy and not yours) or configured):
        parser.error(
            f"the frontier draws each strategy over its own range of budgets: "
            f"{configured[0] if configured else '--strategy'} does not apply (a strategy of yours, "
            f"-s module:object, is drawn as one point on it)"
        )
    jobs: list[tuple[Callable[[], Any], Path]] = []
    for kind in kinds:
        if kind == "diagram":
            name, c, n = DIAGRAM_DEFAULT
            n = args.n if args.n is not None else n
            if args.strategy or configured:
                strategy = _single(args, parser, n, default=name, default_ram=DIAGRAM_RAM)
            else:
                strategy = BinomialCheckpointing(checkpoints=c)
            if n > plot.MAX_DIAGRAM_N:
                _refuse(
                    parser,
                    f"argument -n: the diagram is drawn for n <= {plot.MAX_DIAGRAM_N}, got {n}; "
                    f"for large n see `revseq plot frontier`, or `revseq plan --actions`",
                )
            if yours is not None:  # checked against its own bounds before it is drawn
                _cost_of(strategy, n, parser, "-s/--strategy")
            jobs.append((functools.partial(plot.draw_diagram, strategy, n), Path(args.output or "revseq-diagram.png")))
        else:
            n = args.n if args.n is not None else 1000
            if n < 2:
                parser.error(f"argument -n: the frontier needs n >= 2, got {n}")
            if n > MAX_FRONTIER_N:
                _refuse(
                    parser,
                    f"argument -n: the frontier is drawn for n <= {MAX_FRONTIER_N} (a point for every budget, "
                    f"and online checkpointing costed at nine), got {n}; for large n, `revseq plan` costs "
                    f"one strategy at a time",
                )
            draw: Callable[[], Any] = functools.partial(plot.draw_frontier, n)
            if yours is not None:
                mine = _load_yours(yours, n, parser, "-s/--strategy")
                draw = functools.partial(_frontier_with, n, mine, _frontier_cost(mine, n, parser))
            jobs.append((draw, Path(args.output or "revseq-frontier.png")))
    for _, path in jobs:
        _check_writable(path, parser)
    plot.require_matplotlib()  # before drawing anything; main() turns its error into the message
    for draw, path in jobs:
        existed = path.exists()
        try:
            plot.save(draw(), path)
        except ValueError as exc:  # an unknown format suffix, from matplotlib
            _refuse(parser, f"argument -o/--output: {exc}")
        except OSError as exc:  # what the checks above cannot foresee: a full disk, a special file system
            _refuse(parser, f"argument -o/--output: cannot write {str(path)!r}: {exc.strerror or exc}", status=1)
        print(_written(path, existed))
    return 0


def _frontier_cost(strategy: ReversalStrategy, n: int, parser: argparse.ArgumentParser) -> Cost:
    """The cost of the user's ``strategy``, checked, for its point on the frontier; refused if it uses the disk."""
    cost = _cost_of(strategy, n, parser, "-s/--strategy")
    if cost.peak_disk:
        _refuse(
            parser,
            f"argument -s/--strategy: {describe(strategy)} keeps checkpoints on disk ({cost.peak_disk} at most), and "
            f"the frontier has one axis, memory; draw it with `revseq plot diagram`, or cost it with `revseq plan`",
        )
    return cost


def _frontier_with(n: int, strategy: ReversalStrategy, cost: Cost) -> Any:
    """The frontier for ``n`` steps with the user's ``strategy`` as one more point, a red triangle."""
    from revseq import plot

    fig = plot.draw_frontier(n)
    ax = fig.axes[0]
    ax.scatter(
        [cost.peak_checkpoints],
        [cost.forward_steps],
        s=150,
        marker="v",
        color="#d62728",
        edgecolors=plot.INK,
        linewidths=0.7,
        zorder=8,
        label=f"{describe(strategy)}: yours",
    )
    ax.legend(loc="upper right", fontsize=8, framealpha=0.95)  # as draw_frontier places it, now with yours
    return fig


def _check_writable(path: Path, parser: argparse.ArgumentParser) -> None:
    """Refuse, naming -o/--output, a path that names a directory or lies where this user cannot write."""
    if path.is_dir():
        _refuse(
            parser,
            f"argument -o/--output: {str(path)!r} is a directory; name a file, such as {str(path / 'plot.png')!r}",
        )
    parent = path.parent
    if not parent.is_dir():
        _refuse(parser, f"argument -o/--output: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        where = f"directory {str(parent)!r}" if not os.access(parent, os.W_OK | os.X_OK) else repr(str(path))
        _refuse(parser, f"argument -o/--output: {where} is not writable")


# -- the parser ---------------------------------------------------------------------------------------


def _add_single_strategy(p: argparse.ArgumentParser, default_note: str, ram_default: str) -> None:
    p.add_argument(
        "-s",
        "--strategy",
        type=_strategy_name,
        metavar="NAME",
        help=f"one of {', '.join(STRATEGIES)} (or the class name), or your own as module:object (or "
        f"path/to/file.py:object): a revseq.ReversalStrategy, or a function of n returning one; {default_note}",
    )
    p.add_argument(
        "--checkpoints",
        type=_int_at_least(1),
        metavar="C",
        help="the budget of binomial (default: about sqrt(2n)) or online (default: the fewest optimal up to n)",
    )
    p.add_argument(
        "--interval", type=_int_at_least(1), metavar="K", help="sqrt's segment length (default: ceil(sqrt(n)))"
    )
    _add_disk_options(p, ram_default)


def _add_traceback(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--traceback",
        action="store_true",
        help="on an error revseq did not foresee (in your step, say), show the whole traceback, not one line",
    )


def _add_disk_options(p: argparse.ArgumentParser, ram_default: str) -> argparse._ArgumentGroup:
    defaults = DiskCosts()
    group = p.add_argument_group(
        "multistage (checkpoints in memory and on disk)",
        "the budgets at both levels, and the time of a step, a disk write and a disk read in any one unit",
    )
    group.add_argument(
        "--ram", type=_int_at_least(0), metavar="R", help=f"checkpoints held in memory at most (default: {ram_default})"
    )
    group.add_argument(
        "--disk", type=_int_at_least(0), metavar="D", help="checkpoints held on disk at most (default: unlimited)"
    )
    group.add_argument(
        "--level",
        action="append",
        type=_level_spec,
        metavar="C:W:R",
        help="a further storage level below the disk (repeat for more, fastest first): C checkpoints at most "
        "(none: unlimited), a write taking W and a read R, in the unit of the other costs; e.g. none:8:4",
    )
    group.add_argument(
        "--depth",
        type=_int_at_least(0),
        metavar="K",
        help="plan for an OverlappedStore with K buffers (writes behind, reads ahead on a thread), which are part "
        "of --ram: each write and read is priced by the computation that hides it (default 0: a synchronous disk)",
    )
    for option, value, what in (
        ("--step-cost", defaults.step, "one forward step"),
        ("--write-cost", defaults.write, "writing a state to disk"),
        ("--read-cost", defaults.read, "reading one back"),
        ("--adjoint-cost", defaults.adjoint, "one adjoint step (used with --depth: adjoints hide reads)"),
    ):
        strict = option == "--step-cost"
        group.add_argument(
            option,
            type=_finite_at_least(0.0, strict=strict),
            metavar="T",
            help=f"the time of {what}, a number {'>' if strict else '>='} 0 (default {value:g})",
        )
    return group


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="revseq",
        description="Reverse long recurrences under a memory budget: compare strategies, plan schedules, draw them.",
        epilog="Run `revseq compare` to see every strategy at work, `revseq plot` for the pictures.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="{compare,plan,plot}")

    c = sub.add_parser(
        "compare",
        help="run every strategy on a recurrence and print what each one cost",
        description="Run a recurrence through each strategy with backprop and print, for each, the checkpoints "
        "held, the forward steps (calls of f), the checkpoint memory, the wall time and how far its gradient "
        "is from StoreAll's. With no options: x_{t+1} = sin(x_t) on 1000 floats, n = 10000.",
    )
    c.add_argument("-n", type=_int_at_least(1), default=10_000, help="number of steps (default 10000)")
    c.add_argument("--size", type=_int_at_least(1), default=None, help="state size: floats in x_0 (default 1000)")
    c.add_argument(
        "-s",
        "--strategies",
        type=_strategy_names,
        action="extend",
        metavar="NAMES",
        help=f"comma-separated, from {', '.join(STRATEGIES)}, and your own as module:object (or "
        f"path/to/file.py:object): a revseq.ReversalStrategy, or a function of n returning one (default: all "
        f"but multistage, which writes to disk, and recompute only if n <= {RECOMPUTE_MAX_N} and it would take "
        f"<= {RECOMPUTE_MAX_SECONDS:.0f} s)",
    )
    c.add_argument(
        "--checkpoints",
        type=_budgets,
        action="extend",
        metavar="C[,C...]",
        help="the budgets of binomial and online, ints or 'auto' (default: binomial at auto and "
        "ceil(log2 n) + 1, online at ceil(log2 n) + 1; online's auto: the fewest optimal up to n)",
    )
    c.add_argument(
        "--interval",
        type=_budgets,
        action="extend",
        metavar="K[,K...]",
        help="sqrt's segment lengths, ints or 'auto' (default: auto = ceil(sqrt(n)))",
    )
    c.add_argument(
        "--recurrence",
        metavar="MODULE:OBJECT",
        help="your own: a revseq.Recurrence, or a function of no arguments returning "
        "(recurrence, x0); MODULE may be a path/to/file.py",
    )
    c.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of the random x_0 (default 0)")
    c.add_argument(
        "--trace-memory",
        action="store_true",
        help="also measure each run's whole peak with tracemalloc (one more, untimed run each)",
    )
    c.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    c.add_argument(
        "--max-seconds",
        type=_finite_at_least(0.0, strict=True),
        default=COMPARE_MAX_SECONDS,
        metavar="S",
        help=f"refuse to start runs predicted to take longer: their forward steps times one step of f timed on "
        f"x_0 (default {COMPARE_MAX_SECONDS:.0f}, an hour)",
    )
    c.add_argument(
        "--auto",
        type=_int_at_least(1),
        metavar="BYTES",
        help="also run what revseq.choose picks for this recurrence with BYTES of checkpoint memory (and a disk "
        "level under --disk-dir, if given), and print its measurements and each candidate's predicted time",
    )
    c.add_argument(
        "--compress",
        type=_compress_codec,
        metavar="CODEC",
        help="keep every run's checkpoints (but the StoreAll reference's) compressed: blosc, zstd, lz4, or "
        "zfp:TOL (lossy, each value within TOL; the gradient column then shows the error it makes); "
        "needs the compress extra",
    )
    c.add_argument("--no-progress", action="store_true", help="no progress bar (shown on a terminal with tqdm)")
    disk = _add_disk_options(c, "ceil(log2 n) + 1")
    disk.add_argument(
        "--disk-dir",
        type=_directory,
        metavar="DIR",
        help="where multistage's private checkpoint directory is made, and removed after the run "
        "(default: the system's temporary directory)",
    )
    _add_traceback(c)
    c.set_defaults(run=_compare, parser=c)

    p = sub.add_parser(
        "plan",
        help="the predicted cost of one strategy, without running anything",
        description="Simulate one strategy's schedule for n steps and print its cost; nothing is run.",
    )
    _add_single_strategy(p, "default binomial", "ceil(log2 n) + 1")
    p.add_argument("-n", type=_int_at_least(1), default=10_000, help="number of steps (default 10000)")
    p.add_argument("--actions", action="store_true", help="list the schedule instead, one action per line")
    p.add_argument("--json", action="store_true", help="print JSON (with --actions: the actions too)")
    _add_traceback(p)
    p.set_defaults(run=_plan, parser=p)

    g = sub.add_parser(
        "plot",
        help="draw the checkpointing diagram and the trade-off frontier (PNG; needs revseq[plot])",
        description="Draw pictures from the schedules alone (nothing is run). `diagram`: one strategy's "
        "schedule in time (default: binomial with 3 checkpoints, n = 20; n <= 64). `frontier`: forward steps "
        "against checkpoints for every strategy but multistage (default n = 1000). With neither, both. An "
        "existing file is replaced, and the message says so.",
    )
    g.add_argument("kind", nargs="?", choices=["diagram", "frontier"], help="which picture (default: both)")
    _add_single_strategy(g, "diagram only; default binomial with --checkpoints 3", str(DIAGRAM_RAM))
    g.add_argument(
        "-n",
        type=_int_at_least(1),
        default=None,
        help="number of steps (default: 20 for the diagram, 1000 for the frontier)",
    )
    g.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="file to write (default revseq-diagram.png / revseq-frontier.png); the suffix picks the format",
    )
    _add_traceback(g)
    g.set_defaults(run=_plot, parser=g)
    return parser


def _version() -> str:
    from revseq import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``revseq`` command with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = argparse.Namespace(command=None, traceback=False)
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return int(args.run(args, args.parser))
    except SystemExit as exc:  # argparse: --help (0) and usage errors (2); _refuse
        return exc.code if isinstance(exc.code, int) else 1
    except RevseqError as exc:
        print(f"revseq {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        if exc.name != "matplotlib":
            return _unexpected(args, exc)
        print(f"revseq {args.command}: error: {MISSING_MATPLOTLIB}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader left (`revseq plan --actions | head`): stop quietly, as other Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:  # the last resort: one line, not a traceback (--traceback shows it)
        return _unexpected(args, exc)


def _unexpected(args: argparse.Namespace, exc: BaseException) -> int:
    """Report an exception revseq did not foresee (a bug in a user's step, or in revseq) on one line: status 1.

    The line names the exception, its message and where it was raised;
    ``--traceback`` raises it again, for the whole traceback.
    """
    if getattr(args, "traceback", False):
        raise exc
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (raised at {Path(frames[-1].filename).name}:{frames[-1].lineno}, in {frames[-1].name})" if frames else ""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    what = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    hint = " (out of memory)" if isinstance(exc, MemoryError) else ""
    command = f"revseq {args.command}" if getattr(args, "command", None) else "revseq"
    print(f"{command}: error: {what}{where}{hint}; --traceback shows the whole traceback", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
