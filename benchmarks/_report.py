"""What the benchmarks share: results, percentiles, progress lines and the markdown report."""

from __future__ import annotations

import datetime
import math
import os
import platform
import sqlite3
import sys
import time
from collections.abc import Sequence
from typing import NamedTuple


class Row(NamedTuple):
    """One figure of the report."""

    engine: str
    scenario: str
    figure: float
    unit: str


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank `q`-th percentile (0 < q <= 100) of already sorted values."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def rate(count: int, seconds: float) -> float:
    """Items per second; 0 when no time passed (nothing was measured)."""
    return count / seconds if seconds > 0 else 0.0


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or what the platform module knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_count() -> int:
    """The CPUs this process may run on (what `nproc` prints)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def filesystem(path: str) -> str:
    """The type of the filesystem `path` is on (from /proc/mounts), e.g. `ext4` or `tmpfs`."""
    real = os.path.realpath(path)
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount = fields[1]
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, fields[2]
    except OSError:
        pass
    return kind


def machine_info() -> list[tuple[str, str]]:
    """What a reader needs to compare these figures with others, as (label, value) pairs."""
    now = datetime.datetime.now(datetime.UTC)
    return [
        ("date", now.strftime("%Y-%m-%d %H:%M UTC")),
        ("nproc", str(cpu_count())),
        ("CPU", cpu_model()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("SQLite", sqlite3.sqlite_version),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("load average at the end", load_average()),
    ]


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: above nproc, other work shared the CPUs."""
    try:
        return " / ".join(f"{load:.2f}" for load in os.getloadavg())
    except OSError:
        return "unknown"


def format_figure(value: float, unit: str) -> str:
    """Throughputs as whole numbers with separators, times in ms to 3 decimals, ratios to 2."""
    if unit == "ms":
        return f"{value:,.3f}"
    if unit in ("x", "s"):
        return f"{value:,.2f}"
    return f"{value:,.0f}"


def markdown(rows: Sequence[Row], settings: Sequence[tuple[str, str]]) -> str:
    """The report: machine info, the settings used, and one table row per figure."""
    lines = ["# Conveyor engine benchmark", ""]
    lines += [f"- {label}: {value}" for label, value in machine_info()]
    lines += [f"- {label}: {value}" for label, value in settings]
    lines += ["", "| engine | scenario | figure | unit |", "|---|---|---:|---|"]
    for row in rows:
        figure = format_figure(row.figure, row.unit)
        lines.append(f"| {row.engine} | {row.scenario} | {figure} | {row.unit} |")
    return "\n".join(lines) + "\n"


class Progress:
    """Progress of a long phase on stderr, at most one line every `every_s` seconds."""

    def __init__(self, label: str, total: int, every_s: float = 2.0) -> None:
        self._label = label
        self._total = total
        self._every_s = every_s
        self._start = time.perf_counter()
        self._last = self._start

    def update(self, done: int) -> None:
        """Report `done` of the total if enough time passed since the last line."""
        now = time.perf_counter()
        if now - self._last >= self._every_s:
            self._last = now
            elapsed = now - self._start
            note(
                f"  {self._label}: {done:,}/{self._total:,}"
                f" ({100 * done / max(self._total, 1):.0f} %, {rate(done, elapsed):,.0f}/s)"
            )

    def finish(self, done: int) -> None:
        """Report the phase's end."""
        elapsed = time.perf_counter() - self._start
        note(f"  {self._label}: {done:,} in {elapsed:.1f} s ({rate(done, elapsed):,.0f}/s)")


def note(text: str) -> None:
    """One progress line on stderr (stdout carries only the report)."""
    print(text, file=sys.stderr, flush=True)
