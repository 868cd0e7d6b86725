"""The ``revseq`` command: compare strategies on a recurrence, plan a schedule, draw it.

::

    revseq compare   run every strategy on a recurrence and print what each one cost
    revseq plan      the predicted cost of one strategy (nothing is run); --actions lists its schedule
    revseq plot      the checkpointing diagram and the memory / recomputation frontier, as PNG files

``revseq <command> --help`` lists the options; docs/cli.md shows real runs.
Exit status: 0 on success, 2 for a usage error (a bad option value, an unknown
strategy), 1 when the work fails (matplotlib missing, the recurrence raising a
revseq error), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import attrs
import numpy as np

from revseq import _builtin, _tree
from revseq.engine import Result, backprop
from revseq.errors import RevseqError
from revseq.plot import MISSING_MATPLOTLIB, label
from revseq.recurrence import Recurrence
from revseq.strategies import (
    BinomialCheckpointing,
    Recompute,
    RecursiveHalving,
    SqrtCheckpointing,
    StoreAll,
    optimal_forward_steps,
    repetition_number,
)
from revseq.strategies.base import ReversalStrategy

__all__ = ["STRATEGIES", "main"]

STRATEGIES: dict[str, type[ReversalStrategy]] = {
    "storeall": StoreAll,
    "recompute": Recompute,
    "halving": RecursiveHalving,
    "sqrt": SqrtCheckpointing,
    "binomial": BinomialCheckpointing,
}
"""The short names the command accepts; the class names work too, in any case."""

_ALIASES = {**{name: name for name in STRATEGIES}, **{cls.__name__.lower(): name for name, cls in STRATEGIES.items()}}

RECOMPUTE_MAX_N = 2000
RECOMPUTE_MAX_SECONDS = 10.0
"""``compare`` runs Recompute (about n^2/2 forward steps) by default only for ``n <= RECOMPUTE_MAX_N``
and when the fastest time per step of the runs before it predicts at most ``RECOMPUTE_MAX_SECONDS``."""

MIB = 2**20


# -- option types: each raises ArgumentTypeError, which argparse prints as "argument -n: ..." (exit 2) --


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an int >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an int >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


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


def _strategy_name(text: str) -> str:
    name = _ALIASES.get(text.strip().lower())
    if name is None:
        choices = ", ".join(STRATEGIES)
        classes = ", ".join(cls.__name__ for cls in STRATEGIES.values())
        raise argparse.ArgumentTypeError(f"unknown strategy {text!r}; choose from {choices} (or {classes})")
    return name


def _strategy_names(text: str) -> list[str]:
    return [_strategy_name(part) for part in text.split(",") if part.strip()]


def _make(name: str, *, checkpoints: int | None = None, interval: int | None = None) -> ReversalStrategy:
    if name == "binomial":
        return BinomialCheckpointing(checkpoints=checkpoints)
    if name == "sqrt":
        return SqrtCheckpointing(interval=interval)
    return STRATEGIES[name]()


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

    def as_json(self) -> dict[str, Any]:
        return {
            "strategy": label(self.strategy),
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
        }


def _name_of(strategy: ReversalStrategy) -> str:
    for name, cls in STRATEGIES.items():
        if type(strategy) is cls:
            return name
    return type(strategy).__name__  # pragma: no cover - compare only builds the built-ins


def _compare_plan(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> tuple[list[ReversalStrategy], list[str]]:
    """The strategies to run, in the order to show them, and a note for each one skipped."""
    n = args.n
    explicit = args.strategies is not None
    names = (
        list(dict.fromkeys(args.strategies)) if explicit else ["storeall", "sqrt", "binomial", "halving", "recompute"]
    )
    if args.checkpoints and "binomial" not in names:
        parser.error("--checkpoints sets binomial's budgets, but --strategies does not include binomial")
    if args.interval and "sqrt" not in names:
        parser.error("--interval sets sqrt's intervals, but --strategies does not include sqrt")
    chosen: list[ReversalStrategy] = []
    notes: list[str] = []
    for name in names:
        if name == "binomial":
            budgets = args.checkpoints or [None, (n - 1).bit_length() + 1]  # the default, and ceil(log2 n) + 1
            used: dict[int, BinomialCheckpointing] = {}
            for c in budgets:
                s = BinomialCheckpointing(checkpoints=c)
                used.setdefault(s.budget(n), s)  # two spellings of one budget run once
            chosen.extend(used[c] for c in sorted(used, reverse=True))
        elif name == "sqrt":
            chosen.extend(SqrtCheckpointing(interval=k) for k in dict.fromkeys(args.interval or [None]))
        elif name == "recompute" and not explicit and n > RECOMPUTE_MAX_N:
            notes.append(_recompute_note(n, f"n > {RECOMPUTE_MAX_N}"))
        else:
            chosen.append(_make(name))
    return chosen, notes


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


def _traced_peak(recurrence: Recurrence, x0: Any, n: int, strategy: ReversalStrategy) -> int:
    """Peak bytes traced by tracemalloc over one backprop: checkpoints, live state, adjoint, temporaries."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        backprop(recurrence, x0, n, strategy)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _load(args: argparse.Namespace, parser: argparse.ArgumentParser) -> _builtin.Workload:
    size = args.size if args.size is not None else 1000
    if args.recurrence is None:
        return _builtin.builtin(size, args.seed)
    try:
        work = _builtin.load(args.recurrence, size, args.seed)
    except _builtin.LoadError as exc:
        parser.error(f"argument --recurrence: {exc}")
    if args.size is not None and not work.sized:
        parser.error(f"argument --size: {args.recurrence} returns its own x0, so --size does not apply")
    return work


def _compare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    n = args.n
    work = _load(args, parser)
    strategies, notes = _compare_plan(args, parser)
    reference = next((s for s in strategies if type(s) is StoreAll), StoreAll())
    # StoreAll runs first: it is the gradient reference. Recompute, if only defaulted to, runs last,
    # priced by the fastest time per step seen so far.
    runs = [reference, *(s for s in strategies if s is not reference)]
    predicted = {id(s): s.cost(n) for s in runs}
    optional = None if args.strategies is not None else next((s for s in runs if type(s) is Recompute), None)

    passes = 2 if args.trace_memory else 1

    def total() -> int:  # the optional Recompute joins the bar only once it is sure to run
        return passes * sum(c.forward_steps for s, c in zip(runs, predicted.values(), strict=True) if s is not optional)

    rows: dict[int, _Row] = {}
    ref_result: Result | None = None
    per_step = 0.0
    with _progress(total, not args.no_progress, sys.stderr) as progress:
        recurrence = progress.wrap(work.recurrence)
        for strategy in runs:
            expected = predicted[id(strategy)]
            if strategy is optional and expected.forward_steps * per_step > RECOMPUTE_MAX_SECONDS:
                estimate = expected.forward_steps * per_step
                notes.append(_recompute_note(n, f"about {estimate:.0f} s at the pace of the runs above"))
                continue
            if strategy is optional:
                progress.extend(passes * expected.forward_steps)
            progress.stage(label(strategy))
            start = time.perf_counter()
            result = backprop(recurrence, work.x0, n, strategy)
            seconds = time.perf_counter() - start
            progress.flush()
            pace = seconds / result.stats.forward_steps
            per_step = pace if strategy is reference else min(per_step, pace)
            if strategy is reference:
                ref_result = result
            assert ref_result is not None
            traced = None
            if args.trace_memory:  # a separate pass, so tracing does not slow the timed run
                progress.stage(f"{label(strategy)} (tracemalloc)")
                traced = _traced_peak(recurrence, work.x0, n, strategy)
                progress.flush()
            stats = result.stats
            if stats.as_cost() != expected:
                print(
                    f"revseq compare: warning: {label(strategy)} measured {stats.as_cost()}, predicted {expected}",
                    file=sys.stderr,
                )
            rows[id(strategy)] = _Row(
                strategy=strategy,
                name=_name_of(strategy),
                checkpoints=stats.peak_checkpoints,
                forward_steps=stats.forward_steps,
                recompute_factor=stats.recompute_factor,
                peak_bytes=stats.peak_bytes,
                seconds=seconds,
                deviation=_deviation(result, ref_result),
                reference=strategy is reference,
                traced_bytes=traced,
            )
    _report(args, work, [rows[id(s)] for s in strategies if id(s) in rows], notes, shown=reference in strategies)
    return 0


def _report(
    args: argparse.Namespace, work: _builtin.Workload, rows: list[_Row], notes: list[str], *, shown: bool
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
            "rows": [row.as_json() for row in rows],
            "skipped": notes,
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
    header = ["strategy", "checkpoints", "forward steps", "x n", "ckpt MiB", "seconds", "max|grad - StoreAll|"]
    if args.trace_memory:
        header.insert(5, "traced MiB")
    table = []
    for row in rows:
        cells = [
            label(row.strategy),
            str(row.checkpoints),
            str(row.forward_steps),
            f"{row.recompute_factor:.2f}",
            _mib(row.peak_bytes),
            f"{row.seconds:.3f}",
            "(reference)" if row.reference else f"{row.deviation:.1e}",
        ]
        if args.trace_memory:
            cells.insert(5, _mib(row.traced_bytes or 0))
        table.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in table)) if table else len(h) for i, h in enumerate(header)]
    for cells in [header, *table]:
        first = cells[0].ljust(widths[0])
        rest = "  ".join(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        print(f"{first}  {rest}".rstrip(), file=out)
    print(file=out)
    print(
        "checkpoints: most states held at once (x_0's copy included, the live state not); x n: forward steps / n",
        file=out,
    )
    print("ckpt MiB: most bytes held in the checkpoint store (nbytes of the stored states)", file=out)
    if args.trace_memory:
        print("traced MiB: peak of everything Python allocated during the run (tracemalloc, a separate run)", file=out)
    if not shown:
        print("StoreAll() was run as the gradient reference, not shown", file=out)
    for note in notes:
        print(note, file=out)


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


def _single(args: argparse.Namespace, parser: argparse.ArgumentParser, default: str = "binomial") -> ReversalStrategy:
    """The one strategy named by --strategy, --checkpoints and --interval."""
    name = args.strategy or default
    if args.checkpoints is not None and name != "binomial":
        parser.error(f"argument --checkpoints: applies to binomial only, not {name}")
    if args.interval is not None and name != "sqrt":
        parser.error(f"argument --interval: applies to sqrt only, not {name}")
    return _make(name, checkpoints=args.checkpoints, interval=args.interval)


def _action_json(action: Any) -> dict[str, Any]:
    fields = action._asdict() if hasattr(action, "_asdict") else attrs.asdict(action)  # NamedTuple or attrs
    return {"action": type(action).__name__, **fields}


def _plan(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    n = args.n
    strategy = _single(args, parser)
    out = sys.stdout
    if args.actions and not args.json:
        for action in strategy.schedule(n):
            out.write(f"{action!r}\n")
        return 0
    cost = strategy.cost(n)
    bounds = strategy.bounds(n)
    held = max(cost.peak_checkpoints, 1)
    best = optimal_forward_steps(n, held)
    if args.json:
        doc: dict[str, Any] = {
            "strategy": label(strategy),
            "n": n,
            **{k: v for k, v in attrs.asdict(cost).items() if k != "n"},
            "recompute_factor": cost.recompute_factor,
            "bounds": attrs.asdict(bounds),
            "optimal_forward_steps": best,
        }
        if args.actions:
            doc["actions"] = [_action_json(a) for a in strategy.schedule(n)]
        json.dump(doc, out, indent=2)
        out.write("\n")
        return 0
    promise = ", ".join(
        f"at most {value} {what}"
        for value, what in ((bounds.forward_steps, "forward steps"), (bounds.checkpoints, "checkpoints"))
        if value is not None
    )
    lines = [
        f"{label(strategy)}, n = {n}: predicted by simulating its schedule (nothing is run)",
        f"  forward steps     {cost.forward_steps}  ({cost.recompute_factor:.2f} x n)",
        f"  peak checkpoints  {cost.peak_checkpoints}  (states held at once, x_0's copy included)",
        f"  writes, reads     {cost.writes}, {cost.reads}  (states stored, restores)",
        f"  promise           {promise or 'none'}",
    ]
    if cost.forward_steps == best:
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
    if args.kind == "frontier" and (args.strategy or args.checkpoints is not None or args.interval is not None):
        parser.error("the frontier shows every strategy: --strategy, --checkpoints and --interval do not apply")
    jobs: list[tuple[Callable[[], Any], Path]] = []
    for kind in kinds:
        if kind == "diagram":
            name, c, n = DIAGRAM_DEFAULT
            if args.strategy or args.checkpoints is not None or args.interval is not None:
                strategy = _single(args, parser, default=name)
            else:
                strategy = BinomialCheckpointing(checkpoints=c)
            n = args.n if args.n is not None else n
            if n > plot.MAX_DIAGRAM_N:
                parser.error(
                    f"argument -n: the diagram is drawn for n <= {plot.MAX_DIAGRAM_N}, got {n}; "
                    f"for large n see `revseq plot frontier`, or `revseq plan --actions`"
                )
            jobs.append((functools.partial(plot.draw_diagram, strategy, n), Path(args.output or "revseq-diagram.png")))
        else:
            n = args.n if args.n is not None else 1000
            if n < 2:
                parser.error(f"argument -n: the frontier needs n >= 2, got {n}")
            jobs.append((functools.partial(plot.draw_frontier, n), Path(args.output or "revseq-frontier.png")))
    for _, path in jobs:
        if not path.parent.is_dir():
            parser.error(f"argument -o/--output: directory {str(path.parent)!r} does not exist")
    plot.require_matplotlib()  # before drawing anything; main() turns its error into the message
    for draw, path in jobs:
        existed = path.exists()
        try:
            plot.save(draw(), path)
        except ValueError as exc:  # an unknown format suffix, from matplotlib
            parser.error(f"argument -o/--output: {exc}")
        print(_written(path, existed))
    return 0


# -- the parser ---------------------------------------------------------------------------------------


def _add_single_strategy(p: argparse.ArgumentParser, default_note: str) -> None:
    p.add_argument(
        "-s",
        "--strategy",
        type=_strategy_name,
        metavar="NAME",
        help=f"one of {', '.join(STRATEGIES)} (or the class name); {default_note}",
    )
    p.add_argument(
        "--checkpoints",
        type=_int_at_least(1),
        metavar="C",
        help="binomial's budget of checkpoints (default: about sqrt(2n))",
    )
    p.add_argument(
        "--interval", type=_int_at_least(1), metavar="K", help="sqrt's segment length (default: ceil(sqrt(n)))"
    )


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
        help=f"comma-separated, from {', '.join(STRATEGIES)} (default: all, but recompute only if n <= "
        f"{RECOMPUTE_MAX_N} and it would take <= {RECOMPUTE_MAX_SECONDS:.0f} s)",
    )
    c.add_argument(
        "--checkpoints",
        type=_budgets,
        action="extend",
        metavar="C[,C...]",
        help="binomial's budgets, ints or 'auto' (default: auto and ceil(log2 n) + 1)",
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
    c.add_argument("--no-progress", action="store_true", help="no progress bar (shown on a terminal with tqdm)")
    c.set_defaults(run=_compare, parser=c)

    p = sub.add_parser(
        "plan",
        help="the predicted cost of one strategy, without running anything",
        description="Simulate one strategy's schedule for n steps and print its cost; nothing is run.",
    )
    _add_single_strategy(p, "default binomial")
    p.add_argument("-n", type=_int_at_least(1), default=10_000, help="number of steps (default 10000)")
    p.add_argument("--actions", action="store_true", help="list the schedule instead, one action per line")
    p.add_argument("--json", action="store_true", help="print JSON (with --actions: the actions too)")
    p.set_defaults(run=_plan, parser=p)

    g = sub.add_parser(
        "plot",
        help="draw the checkpointing diagram and the trade-off frontier (PNG; needs revseq[plot])",
        description="Draw pictures from the schedules alone (nothing is run). `diagram`: one strategy's "
        "schedule in time (default: binomial with 3 checkpoints, n = 20; n <= 64). `frontier`: forward steps "
        "against checkpoints for every strategy (default n = 1000). With neither, both. An existing file is "
        "replaced, and the message says so.",
    )
    g.add_argument("kind", nargs="?", choices=["diagram", "frontier"], help="which picture (default: both)")
    _add_single_strategy(g, "diagram only; default binomial with --checkpoints 3")
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
    g.set_defaults(run=_plot, parser=g)
    return parser


def _version() -> str:
    from revseq import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``revseq`` command with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return int(args.run(args, args.parser))
    except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else 1
    except RevseqError as exc:
        print(f"revseq {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        if exc.name != "matplotlib":
            raise
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
