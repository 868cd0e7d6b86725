"""Pictures of schedules, computed from the actions alone (no f is run).

Two figures:

- :func:`draw_diagram`: the classic checkpointing diagram of one strategy for
  one ``n``. Time runs left to right, one unit per call of f and per reversed
  step; the step index runs bottom to top. Forward sweeps climb, the reversal
  descends, and each checkpoint is a grey bar (brown on disk, another colour
  at each further level of a multilevel schedule) from the moment
  it is stored to the moment it is freed. A lower panel counts the
  checkpoints held.
- :func:`draw_frontier`: the trade-off each strategy makes for one ``n``,
  forward steps against peak checkpoints over a range of budgets, with the
  proven binomial minimum drawn as the bound no schedule can pass. Online
  checkpointing is there; multistage is not (its cost is a time that counts
  disk traffic too, and its memory is split between two levels).

matplotlib is an optional dependency (``pip install 'revseq[plot]'``); it is
imported only when a figure is drawn. :func:`timeline`, the layout the
diagram draws, needs nothing but revseq.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from revseq._validate import check_int
from revseq.errors import ParameterError
from revseq.schedule import Action, Advance, Cost, Free, Restore, Reverse, Store, simulate
from revseq.strategies import (
    BinomialCheckpointing,
    MultistageCheckpointing,
    OnlineCheckpointing,
    Recompute,
    RecursiveHalving,
    SqrtCheckpointing,
    StoreAll,
    optimal_forward_steps,
)
from revseq.strategies.base import ReversalStrategy

if TYPE_CHECKING:
    # Without matplotlib installed (it is an optional extra) mypy sees Any here.
    from matplotlib.figure import Figure  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "MAX_DIAGRAM_N",
    "MISSING_MATPLOTLIB",
    "Timeline",
    "draw_diagram",
    "draw_frontier",
    "frontier",
    "label",
    "require_matplotlib",
    "save",
    "timeline",
]

MAX_DIAGRAM_N = 64
"""Largest ``n`` :func:`draw_diagram` accepts: beyond it the lines merge into a smear."""

MISSING_MATPLOTLIB = "matplotlib is needed for plots: pip install 'revseq[plot]'"

FORWARD = "#1f6fb4"
REVERSE = "#d1492e"
HELD = "#9aa3ad"
DISK = "#b07a3b"
DEEPER = ("#6a3d9a", "#2a9d8f", "#c0392b", "#7f8c8d")  # levels 2, 3, 4, 5 (and again past them)
ONLINE = "#138d90"
INK = "#222222"


@attrs.frozen
class Timeline:
    """A schedule laid out in time: one unit per call of f and per reversed step.

    Attributes
    ----------
    n:
        Number of steps.
    duration:
        Total time: forward steps plus ``n`` reversed steps.
    sweeps:
        ``(time, start, stop)``: f carries ``x_start`` to ``x_stop`` over
        ``[time, time + stop - start]``. The call producing ``x_n`` is a sweep too.
    reversals:
        ``(time, start, stop)``: steps ``stop - 1`` down to ``start`` are
        reversed over ``[time, time + stop - start]``.
    stores:
        ``(time, t, level)``: ``x_t`` is stored, in memory (``False``), on
        disk (``True``) or at a further level (``2``, ``3``, ...: a
        multilevel schedule's ``Store(t, level=k)``); states kept by
        ``Advance(keep=True)`` included.
    restores:
        ``(time, t, previous)``: ``x_t`` becomes the live state; ``previous`` is
        where the last sweep or reversal ended (the jump drawn back to ``t``).
    lifetimes:
        ``(t, begin, end, level)``: ``x_t`` is held from ``begin`` to ``end``:
        until it is freed, or until the reversal of step ``t`` is done (a
        ``Reverse`` releases what it has made useless).
    held, held_disk:
        ``(time, count)``: checkpoints held in memory (on disk) from ``time``
        on, one entry per change, in order (several may share a time).
    held_levels:
        The same for levels 2, 3, ..., one tuple each, up to the deepest
        level the schedule uses (empty for memory and disk alone).
    """

    n: int
    duration: int
    sweeps: tuple[tuple[int, int, int], ...]
    reversals: tuple[tuple[int, int, int], ...]
    stores: tuple[tuple[int, int, int], ...]
    restores: tuple[tuple[int, int, int], ...]
    lifetimes: tuple[tuple[int, int, int, int], ...]
    held: tuple[tuple[int, int], ...]
    held_disk: tuple[tuple[int, int], ...]
    held_levels: tuple[tuple[tuple[int, int], ...], ...] = ()

    @property
    def forward_steps(self) -> int:
        return sum(stop - start for _, start, stop in self.sweeps)

    @property
    def peak_checkpoints(self) -> int:
        """Most checkpoints held in memory at once."""
        return max(count for _, count in self.held)

    @property
    def peak_disk(self) -> int:
        return max(count for _, count in self.held_disk)

    def peak_at(self, level: int) -> int:
        """Most checkpoints held at once at ``level`` (0 memory, 1 disk, 2 and on the further levels)."""
        held = (self.held, self.held_disk, *self.held_levels)
        return max(count for _, count in held[level]) if level < len(held) else 0


def timeline(actions: Iterable[Action], n: int) -> Timeline:
    """Lay out ``actions`` (a schedule for ``n`` steps, as ``backprop`` runs it) in time.

    The schedule is validated first, so an illegal one raises
    :class:`~revseq.errors.ScheduleError` naming the action.

    >>> from revseq import StoreAll
    >>> t = timeline(StoreAll().schedule(3), 3)
    >>> t.sweeps, t.reversals, t.duration
    (((0, 0, 2), (2, 2, 3)), ((3, 0, 3),), 6)
    >>> t.lifetimes  # x_1 is released once step 1 is reversed (time 5), x_0 at the end
    ((0, 0, 6, False), (1, 1, 5, False))
    """
    n = check_int("n", n, 1)
    actions = list(actions)
    simulate(actions, n)
    now = 0
    drawn = 0  # where the picture's pen is: the end of the last sweep or reversal
    output_done = False  # whether a sweep has reached x_n already
    sweeps: list[tuple[int, int, int]] = []
    reversals: list[tuple[int, int, int]] = []
    stores: list[tuple[int, int, int]] = []
    restores: list[tuple[int, int, int]] = []
    lifetimes: list[tuple[int, int, int, int]] = []
    born: dict[tuple[int, int], int] = {}  # (t, level) -> when it was stored; levels 0 and 1 as False, True
    # The number held at each level, after every change, in the order the changes happen (times never
    # decrease): a checkpoint stored and freed at the same time still shows, and counts towards the peak.
    held: dict[int, list[tuple[int, int]]] = {False: [(0, 0)], True: [(0, 0)]}

    def store(t: int, time: int, level: int) -> None:
        level = bool(level) if level <= 1 else level
        if level not in held:
            for k in range(2, level + 1):
                held.setdefault(k, [(0, 0)])
        born[t, level] = time
        stores.append((time, t, level))
        held[level].append((time, held[level][-1][1] + 1))

    def release(t: int, time: int) -> None:
        for level in held:
            if (t, level) in born:
                lifetimes.append((t, born.pop((t, level)), time, level))
                held[level].append((time, held[level][-1][1] - 1))

    for action in actions:
        if isinstance(action, Advance):
            sweeps.append((now, action.start, action.stop))
            if action.keep:
                for t in range(action.start + 1, action.stop):
                    store(t, now + t - action.start, False)
            now += action.stop - action.start
            drawn = action.stop
            output_done = output_done or action.stop == n
        elif isinstance(action, Store):
            store(action.step, now, action.level)
        elif isinstance(action, Restore):
            restores.append((now, action.step, drawn))
            drawn = action.step
        elif isinstance(action, Free):
            for t in range(action.start, action.stop):
                release(t, now)
        elif isinstance(action, Reverse):
            if action.stop == n and not output_done:
                sweeps.append((now, n - 1, n))
                now += 1
                output_done = True
            reversals.append((now, action.start, action.stop))
            for t in range(action.stop - 1, action.start - 1, -1):
                release(t, now + action.stop - t)  # x_t is done with once step t is reversed
            for t in sorted({t for t, _ in born if t >= action.start}):
                release(t, now)  # anything else the reversal made useless (none in the built-ins)
            now += action.stop - action.start
            drawn = action.start
    for (t, level), begin in born.items():
        lifetimes.append((t, begin, now, level))
    return Timeline(
        n=n,
        duration=now,
        sweeps=tuple(sweeps),
        reversals=tuple(reversals),
        stores=tuple(stores),
        restores=tuple(restores),
        lifetimes=tuple(sorted(lifetimes)),
        held=tuple(held[False]),
        held_disk=tuple(held[True]),
        held_levels=tuple(tuple(held[k]) for k in range(2, len(held))),
    )


def label(strategy: Any) -> str:
    """The strategy (or any attrs object) as it would be written, leaving out settings left at their defaults.

    Settings that are attrs objects themselves, such as a multistage
    strategy's ``DiskCosts``, are written the same way.

    >>> label(BinomialCheckpointing()), label(BinomialCheckpointing(checkpoints=15))
    ('BinomialCheckpointing()', 'BinomialCheckpointing(checkpoints=15)')
    >>> from revseq import DiskCosts
    >>> label(MultistageCheckpointing(ram=4, costs=DiskCosts(write=3.0)))
    'MultistageCheckpointing(ram=4, costs=DiskCosts(write=3.0))'
    """
    cls = type(strategy)
    if not attrs.has(cls):
        text = repr(strategy)  # Python's default repr names the class and an address: the class alone
        return cls.__name__ if text.startswith("<") and " object at 0x" in text else text
    parts = []
    levels = getattr(strategy, "levels", None) if isinstance(strategy, MultistageCheckpointing) else None
    for field in attrs.fields(cls):
        if levels is not None and field.name in ("ram", "disk", "costs", "ram_bytes"):
            continue  # given as levels: these are only their two-level view
        value = getattr(strategy, field.name)
        if field.name == "levels" and value is not None:
            parts.append(f"levels=[{', '.join(label(level) for level in value)}]")
            continue
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        if default is attrs.NOTHING or value != default:
            parts.append(f"{field.name}={label(value) if attrs.has(type(value)) else repr(value)}")
    return f"{cls.__name__}({', '.join(parts)})"


def require_matplotlib() -> None:
    """Raise ModuleNotFoundError saying how to install matplotlib if it is missing."""
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "matplotlib":  # matplotlib is there but broken: let its own error speak
            raise
        raise ModuleNotFoundError(MISSING_MATPLOTLIB, name="matplotlib") from exc


def _segments(pieces: Iterable[tuple[int, int, int]], *, down: bool) -> list[list[tuple[float, float]]]:
    # A sweep is a line of slope 1 (one step per time unit); a reversal, of slope -1.
    out = []
    for time, start, stop in pieces:
        length = stop - start
        if down:
            out.append([(float(time), float(stop)), (float(time + length), float(start))])
        else:
            out.append([(float(time), float(start)), (float(time + length), float(stop))])
    return out


def draw_diagram(strategy: ReversalStrategy, n: int) -> Figure:
    """The checkpointing diagram of ``strategy`` for ``n <= MAX_DIAGRAM_N`` steps.

    Raises :class:`~revseq.errors.ParameterError` for a larger ``n`` and
    ``ModuleNotFoundError`` (with the install command) without matplotlib.
    """
    n = check_int("n", n, 1)
    if n > MAX_DIAGRAM_N:
        raise ParameterError(
            f"n must be <= {MAX_DIAGRAM_N} for a readable diagram, got {n}; "
            f"for large n see the frontier plot, or list the schedule with `revseq plan --actions`"
        )
    require_matplotlib()
    from matplotlib.collections import LineCollection  # type: ignore[import-not-found, unused-ignore]
    from matplotlib.figure import Figure  # type: ignore[import-not-found, unused-ignore]
    from matplotlib.lines import Line2D  # type: ignore[import-not-found, unused-ignore]
    from matplotlib.ticker import MaxNLocator  # type: ignore[import-not-found, unused-ignore]

    lay = timeline(strategy.schedule(n), n)
    bounds = strategy.bounds(n)
    uses_disk = any(level for *_, level in lay.lifetimes)
    deeper = len(lay.held_levels)  # levels 2 .. deeper + 1 of a multilevel schedule, each in its colour
    fig = Figure(figsize=(10, 6.6), dpi=150, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[4, 1])

    # Checkpoints held: bars under everything else, from store to release.
    for level in range(2 + deeper):
        color = _level_color(level)
        bars = [[(float(b), float(t)), (float(e), float(t))] for t, b, e, d in lay.lifetimes if d == level]
        if bars:
            top.add_collection(LineCollection(bars, colors=color, linewidths=4, alpha=0.5, capstyle="butt", zorder=1))
    # Restores: a dotted jump of the live state back to a stored one (it costs no step).
    jumps = [[(float(time), float(previous)), (float(time), float(t))] for time, t, previous in lay.restores]
    top.add_collection(LineCollection(jumps, colors=INK, linestyles=":", linewidths=0.8, alpha=0.6, zorder=2))
    top.add_collection(LineCollection(_segments(lay.sweeps, down=False), colors=FORWARD, linewidths=1.6, zorder=3))
    top.add_collection(LineCollection(_segments(lay.reversals, down=True), colors=REVERSE, linewidths=2.4, zorder=4))
    if lay.stores:
        top.scatter([s[0] for s in lay.stores], [s[1] for s in lay.stores], s=16, color=INK, zorder=5, linewidths=0)
    if lay.restores:
        rx, ry = [r[0] for r in lay.restores], [r[1] for r in lay.restores]
        top.scatter(rx, ry, s=30, marker="^", facecolors="white", edgecolors=INK, linewidths=0.9, zorder=6)

    top.set_xlim(-0.5, lay.duration + 0.5)
    top.set_ylim(-0.7, n + 0.7)
    top.set_ylabel("step index t  (state x_t)")
    top.yaxis.set_major_locator(MaxNLocator(integer=True))
    top.grid(True, color="#e6e6e6", linewidth=0.6, zorder=0)
    top.set_axisbelow(True)
    cost = (
        f"{lay.forward_steps} forward steps ({lay.forward_steps / n:.2f} x n), {lay.peak_checkpoints} checkpoints"
        + (f" + {lay.peak_disk} on disk" if uses_disk else "")
        + "".join(f" + {lay.peak_at(k)} at level {k}" for k in range(2, 2 + deeper))
    )
    levels = strategy.levels if isinstance(strategy, MultistageCheckpointing) else None
    if (
        isinstance(strategy, MultistageCheckpointing) and levels is not None and len(levels) > 2
    ):  # what it minimises: steps and the traffic at every level
        sizes = ", ".join("unlimited" if level.capacity is None else f"{level.capacity}" for level in levels)
        prices = ", ".join(f"level {k} {level.write:g}/{level.read:g}" for k, level in enumerate(levels) if k)
        title = (
            f"MultistageCheckpointing over {len(levels)} levels ({sizes} checkpoints), n = {n}\n{cost}\n"
            f"time {strategy.predicted_time(n):g} steps, the least for write/read costs {prices}"
        )
    elif isinstance(strategy, MultistageCheckpointing):  # what it minimises: steps and disk traffic, in time
        costs = strategy.costs
        title = (
            f"{label(strategy)}, n = {n}\n{cost}; time {strategy.predicted_time(n):g}, the least for a step "
            f"{costs.step:g}, a disk write {costs.write:g}, a read {costs.read:g}"
        )
    else:
        title = f"{label(strategy)}, n = {n}: {cost}"
    top.set_title(title, fontsize=11)
    handles = [
        Line2D([], [], color=FORWARD, linewidth=1.6, label="forward sweep (calls of f)"),
        Line2D([], [], color=REVERSE, linewidth=2.4, label="reverse step (adjoint)"),
        Line2D([], [], color=HELD, linewidth=4, alpha=0.5, label="checkpoint held"),
        Line2D([], [], color=INK, marker="o", markersize=4, linestyle="none", label="store"),
        Line2D(
            [],
            [],
            color=INK,
            marker="^",
            markerfacecolor="white",
            linestyle=":",
            linewidth=0.8,
            markersize=5,
            label="restore (jump back)",
        ),
    ]
    if uses_disk:
        handles.insert(3, Line2D([], [], color=DISK, linewidth=4, alpha=0.5, label="checkpoint on disk"))
        for k in range(2, 2 + deeper):
            handles.insert(2 + k, Line2D([], [], color=_level_color(k), linewidth=4, alpha=0.5, label=f"at level {k}"))
    fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 7), fontsize=8, frameon=False)

    counted = [(lay.held, INK, HELD, "in memory"), (lay.held_disk, DISK, DISK, "on disk")]
    counted += [(lay.held_levels[k - 2], _level_color(k), _level_color(k), f"level {k}") for k in range(2, 2 + deeper)]
    for held, color, fill, name in counted:
        if held is lay.held_disk and not uses_disk:
            continue
        times = [time for time, _ in held] + [lay.duration]
        counts = [count for _, count in held] + [held[-1][1]]
        bottom.step(times, counts, where="post", color=color, linewidth=1.2, label=name if uses_disk else None)
        bottom.fill_between(times, counts, step="post", color=fill, alpha=0.4)
    if bounds.checkpoints is not None:
        bottom.axhline(
            bounds.checkpoints,
            color=REVERSE,
            linestyle="--",
            linewidth=0.9,
            label=f"promised bound{' in memory' if uses_disk else ''}: {bounds.checkpoints}",
        )
    if bounds.disk_checkpoints is not None and uses_disk:
        bottom.axhline(
            bounds.disk_checkpoints,
            color=DISK,
            linestyle=(0, (2, 2)),
            linewidth=1.1,
            label=f"promised bound on disk: {bounds.disk_checkpoints}",
        )
    if bounds.checkpoints is not None or uses_disk:
        bottom.legend(loc="upper right", fontsize=8, framealpha=0.92, ncols=2 if uses_disk else 1)
    top_count = max(
        lay.peak_checkpoints,
        lay.peak_disk,
        *(lay.peak_at(k) for k in range(2, 2 + deeper)),
        bounds.checkpoints or 0,
        bounds.disk_checkpoints or 0,
        1,
    )
    bottom.set_ylim(0, top_count * (2.1 if uses_disk else 1.3))  # room for the legend above the counts
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
    bottom.set_ylabel("held")
    bottom.set_xlabel("time (one unit per call of f and per reversed step)")
    bottom.grid(True, color="#e6e6e6", linewidth=0.6)
    return fig


def _level_color(level: int) -> str:
    """The colour of a checkpoint held at ``level``: grey in memory, brown on disk, then ``DEEPER``'s."""
    if level <= 1:
        return DISK if level else HELD
    return DEEPER[(level - 2) % len(DEEPER)]


def _geometric(low: int, high: int, count: int) -> list[int]:
    """About ``count`` distinct integers from ``low`` to ``high``, evenly spaced on a log scale."""
    if high <= low:
        return [low]
    ratio = (high / low) ** (1 / max(count - 1, 1))
    values = {low, high}
    value = float(low)
    while value < high:
        values.add(round(value))
        value *= ratio
    return sorted(values)


def frontier(n: int = 1000) -> dict[str, list[tuple[ReversalStrategy, Cost]]]:
    """The points of the frontier plot: each built-in strategy over a range of budgets, costed by ``cost(n)``.

    Keys are the short strategy names; ``"binomial"`` holds budgets spread
    evenly on a log scale from 2 to ``n - 1`` and the default budget (last),
    ``"online"`` those below ``OnlineCheckpointing.for_max_steps(n)`` and that
    one (last: with it or more, online is optimal, ``2n - c`` forward steps,
    within one of binomial), ``"sqrt"`` intervals from 1 to ``n`` and the
    default interval (last). Multistage checkpointing is not among them: it trades memory for
    disk traffic as well as for steps, which one cost axis cannot show.

    >>> [(label(s), c.forward_steps) for s, c in frontier(100)["halving"]]
    [('RecursiveHalving()', 317)]
    """
    n = check_int("n", n, 2)
    budgets = _geometric(2, n - 1, 9)
    binomial: list[ReversalStrategy] = [BinomialCheckpointing(checkpoints=c) for c in budgets]
    enough = OnlineCheckpointing.for_max_steps(n)
    online: list[ReversalStrategy] = [OnlineCheckpointing(checkpoints=c) for c in budgets if c < enough.budget()]
    sqrt: list[ReversalStrategy] = [SqrtCheckpointing(interval=k) for k in _geometric(1, n, 24)]
    groups: dict[str, list[ReversalStrategy]] = {
        "binomial": [*binomial, BinomialCheckpointing()],
        "online": [*online, enough],
        "sqrt": [*sqrt, SqrtCheckpointing()],
        "halving": [RecursiveHalving()],
        "storeall": [StoreAll()],
        "recompute": [Recompute()],
    }
    return {name: [(s, s.cost(n)) for s in group] for name, group in groups.items()}


def draw_frontier(n: int = 1000) -> Figure:
    """Forward steps against peak checkpoints for the built-in strategies at ``n``, and the binomial bound.

    Every strategy but multistage, whose cost includes disk traffic (see :func:`frontier`).

    Costs are each strategy's ``cost(n)``, equal to simulating its schedule
    (the engine measures the same counts). The staircase is ``optimal_forward_steps(n, c)`` for every budget
    ``c``: no schedule lies below it, and ``BinomialCheckpointing`` lies on it.
    Raises ``ModuleNotFoundError`` (with the install command) without matplotlib.
    """
    n = check_int("n", n, 2)
    require_matplotlib()
    from matplotlib.figure import Figure  # type: ignore[import-not-found, unused-ignore]
    from matplotlib.ticker import FuncFormatter  # type: ignore[import-not-found, unused-ignore]

    data = frontier(n)
    fig = Figure(figsize=(9, 6), dpi=150, layout="constrained")
    ax = fig.subplots()
    xs = [*range(1, n), n]
    bound = [optimal_forward_steps(n, min(c, n - 1)) for c in xs]
    floor = n / 1.6
    ax.fill_between(xs, [floor] * len(xs), bound, step="post", color="#eeeeee", zorder=0, linewidth=0)
    ax.plot(
        xs,
        bound,
        drawstyle="steps-post",
        color=INK,
        linewidth=1.4,
        zorder=2,
        label="binomial: the proven minimum (Revolve)",
    )
    ax.text(0.04, 0.06, "no schedule can do this", transform=ax.transAxes, color="#888888", fontsize=9)

    def xy(points: list[tuple[ReversalStrategy, Cost]]) -> tuple[list[int], list[int]]:
        return [c.peak_checkpoints for _, c in points], [c.forward_steps for _, c in points]

    *budgets, (_, auto) = data["binomial"]
    ax.scatter(*xy(budgets), s=22, color=INK, zorder=5, label="BinomialCheckpointing(checkpoints=c)")
    ax.scatter(
        [auto.peak_checkpoints],
        [auto.forward_steps],
        s=110,
        marker="*",
        color="#e3a21a",
        edgecolors=INK,
        linewidths=0.6,
        zorder=6,
        label=f"BinomialCheckpointing() (default: c = {auto.peak_checkpoints})",
    )
    *intervals, (_, default_sqrt) = data["sqrt"]
    curve = sorted(set(zip(*xy(intervals), strict=True)))
    ax.plot(
        *zip(*curve, strict=True),
        color="#3a923a",
        linewidth=1,
        marker="o",
        markersize=3.5,
        alpha=0.85,
        zorder=3,
        label="SqrtCheckpointing(interval=k), k from 1 to n",
    )
    ax.scatter(
        [default_sqrt.peak_checkpoints],
        [default_sqrt.forward_steps],
        s=70,
        marker="D",
        color="#3a923a",
        edgecolors=INK,
        linewidths=0.6,
        zorder=6,
        label="SqrtCheckpointing() (k = ceil(sqrt n))",
    )
    # Online: rings around binomial's dots (same budgets), so that both show where they nearly coincide.
    *budgets_online, (_, enough) = data["online"]
    ax.scatter(
        *xy(budgets_online),
        s=75,
        marker="o",
        facecolors="none",
        edgecolors=ONLINE,
        linewidths=1.4,
        zorder=7,
        label="OnlineCheckpointing(checkpoints=c): n not known in advance",
    )
    ax.scatter(
        [enough.peak_checkpoints],
        [enough.forward_steps],
        s=260,
        marker="h",
        facecolors="none",
        edgecolors=ONLINE,
        linewidths=1.6,
        zorder=7,
        label=f"OnlineCheckpointing.for_max_steps(n) (c = {enough.peak_checkpoints}: optimal for every run up to n)",
    )
    for name, marker, color in (("halving", "s", "#8a4fbf"), ("storeall", "P", FORWARD), ("recompute", "X", REVERSE)):
        ((strategy, cost),) = data[name]
        ax.scatter(
            [cost.peak_checkpoints],
            [cost.forward_steps],
            s=70,
            marker=marker,
            color=color,
            edgecolors=INK,
            linewidths=0.6,
            zorder=6,
            label=label(strategy),
        )

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(0.8, n * 1.25)
    ax.set_ylim(floor, optimal_forward_steps(n, 1) * 1.6)
    ax.set_xlabel("peak checkpoints held (states in memory, x_0 included)")
    ax.set_ylabel("forward steps (calls of f over a whole backprop)")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))

    def to_factor(steps: Any) -> Any:
        return np.asarray(steps) / n

    def to_steps(factor: Any) -> Any:
        return np.asarray(factor) * n

    right = ax.secondary_yaxis("right", functions=(to_factor, to_steps))
    right.set_ylabel("recompute factor (forward steps / n)")
    right.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.grid(True, which="major", color="#e0e0e0", linewidth=0.7)
    ax.grid(True, which="minor", color="#f2f2f2", linewidth=0.5)
    ax.set_axisbelow(True)
    ax.set_title(f"The memory / recomputation trade-off, n = {n} (costs of the schedules, nothing run)", fontsize=11)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.95)
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (the format follows the suffix; PNG without one) and return the path."""
    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"
    fig.savefig(path, format=fmt)
    return path
