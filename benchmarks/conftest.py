"""Shared plumbing for the revseq benchmarks (pytest-benchmark).

Run them with ``python -m pytest benchmarks/ --benchmark-only`` from the
repository root; they are outside the default test paths on purpose.

Nothing here asserts a time: machines are shared and noisy. Each benchmark
records its exact forward-step count (deterministic, and asserted), and the
ratios against a baseline measured in the same process go into the
benchmark's ``extra_info``, into the JSON of ``--benchmark-json``, and into
a table printed at the end of the run.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from collections.abc import Callable
from typing import Any

import attrs
import pytest

# The tests' independent oracles (tests/oracles.py: the gist verbatim, the formulas) serve the benchmarks too.
sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict[str, str]:
    """What the numbers depend on: the machine and the versions of everything timed."""
    return {
        "cpu": _cpu_model(),
        "nproc": str(os.cpu_count()),
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "revseq": _version("revseq"),
        "checkpoint_schedules": _version("checkpoint-schedules"),
        "pyrevolve": _version("pyrevolve"),
        "numba": _version("numba"),  # checkpoint_schedules jit-compiles n_advance when it is there
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
        # Other processes on the machine: the ratios are taken in one process, so they suffer
        # less than the times, but a load above nproc makes every number noisier.
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    machine_info["revseq_environment"] = environment()


@attrs.frozen
class Timing:
    minimum: float
    median: float
    rounds: int


@attrs.frozen
class Ratio:
    name: str
    baseline: str
    value: float  # time(name) / time(baseline), on the minimum over rounds
    target: str


class Timings:
    """Times measured so far in this process, so later benchmarks can report ratios to earlier ones."""

    def __init__(self) -> None:
        self.times: dict[str, Timing] = {}
        self.ratios: list[Ratio] = []

    def measure(self, benchmark: Any, name: str, fn: Callable[[], Any], *, rounds: int, warmup: int = 0) -> Any:
        """Time ``fn`` with ``benchmark.pedantic``, remember its minimum and median under ``name``."""
        result = benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup, iterations=1)
        stats = getattr(benchmark.stats, "stats", None)  # None under --benchmark-disable
        if stats is not None:
            self.times[name] = Timing(minimum=stats.min, median=stats.median, rounds=stats.rounds)
        benchmark.extra_info["name"] = name
        return result

    def ratio(self, benchmark: Any, name: str, baseline: str, *, key: str, target: str = "") -> float | None:
        """``time(name) / time(baseline)`` on the minimum over rounds, stored in extra_info under ``key``."""
        if name not in self.times or baseline not in self.times:
            return None  # the baseline was deselected, or timing is disabled
        value = self.times[name].minimum / self.times[baseline].minimum
        median = self.times[name].median / self.times[baseline].median
        benchmark.extra_info[key] = round(value, 3)
        benchmark.extra_info[key + "_median"] = round(median, 3)
        benchmark.extra_info[key + "_baseline"] = baseline
        self.add(name, baseline, value, target=target)
        print(f"\n{name} / {baseline} = {value:.3f} (min over rounds), {median:.3f} (median)" + (
            f"; target {target}" if target else ""))  # fmt: skip
        return value

    def add(self, name: str, baseline: str, value: float, *, target: str = "") -> None:
        """Report a ratio measured some other way in the end-of-run table."""
        self.ratios.append(Ratio(name=name, baseline=baseline, value=value, target=target))


_TIMINGS = Timings()


@pytest.fixture(scope="session")
def timings() -> Timings:
    return _TIMINGS


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _TIMINGS.ratios:
        return
    write = terminalreporter.write_line
    terminalreporter.section("revseq benchmark ratios (time / baseline time: min over rounds, or as the row says)")
    for r in _TIMINGS.ratios:
        write(f"{r.value:8.3f}  {r.name}  /  {r.baseline}" + (f"   [target {r.target}]" if r.target else ""))
    env = environment()
    write("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()))
