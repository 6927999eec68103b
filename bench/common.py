"""What every benchmark of ``make bench`` shares: latency percentiles, the summary of
repeated runs of one point, and the event loop they run on.

A *point* is one configuration at one writer count (e.g. "TCP, fsync on, 64 writers"). It is
measured ``repeat`` times; each run gives writes/s and the percentiles of its per-write
latencies. The point reports the median of each figure over its runs (``summarize``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

PERCENTILES: dict[str, float] = {"p50": 0.50, "p99": 0.99, "p999": 0.999}
"""The latency percentiles every point reports (key -> quantile)."""


def percentiles_ms(samples: Sequence[float]) -> dict[str, float]:
    """``{"p50", "p99", "p999"}`` of ``samples`` (seconds) in milliseconds: the sample at rank
    ``floor(q * n)`` of the sorted samples (nearest rank, no interpolation). Empty input -> {}."""
    if not samples:
        return {}
    s = sorted(samples)
    n = len(s)
    return {k: s[min(n - 1, int(q * n))] * 1000.0 for k, q in PERCENTILES.items()}


def summarize(writers: int, runs: list[dict[str, float]]) -> dict[str, Any]:
    """The point of ``writers`` writers from its ``runs`` (each ``{"writes_per_s", "p50",
    "p99", "p999"}``, latencies in ms; a missing percentile is skipped; optionally
    ``"cpu_us"``): ``{"writers", "writes_per_s": median, "p50"/"p99"/"p999": median over the
    runs that have it (None if none), "runs": [writes/s of each run]}``, and ``"cpu_us"``, the
    median over the runs that have it, when one has it."""
    if not runs:
        raise ValueError("a point needs at least one run")
    out: dict[str, Any] = {
        "writers": writers,
        "writes_per_s": statistics.median(r["writes_per_s"] for r in runs),
    }
    for k in PERCENTILES:
        vals = [r[k] for r in runs if r.get(k) is not None]
        out[k] = statistics.median(vals) if vals else None
    out["runs"] = [r["writes_per_s"] for r in runs]
    cpu = [r["cpu_us"] for r in runs if r.get("cpu_us") is not None]
    if cpu:
        out["cpu_us"] = statistics.median(cpu)
    return out


def cpu_us_per_write(cpu_seconds: float, writes: int) -> float | None:
    """CPU microseconds per write (``None`` without writes): the CPU time of every process
    of the system under test (all their threads) during a run, over the writes it made."""
    return cpu_seconds / writes * 1e6 if writes else None


def loop_name() -> str:
    """``"uvloop"`` when uvloop is installed (what the benchmarks run on), else ``"asyncio"``."""
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return "asyncio"
    return "uvloop"


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh uvloop loop (plain asyncio without uvloop)."""
    if loop_name() == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)  # pragma: no cover - uvloop is a dependency


def checked_run_args(p: argparse.ArgumentParser, writers: str | Sequence[int], seconds: float,
                     repeat: int) -> list[int]:
    """The writer counts of a benchmark's command line (comma-separated text, or a list
    argparse made), each at least 1; ``p.error`` (a usage error, exit 2) for a count that is
    not a whole number or below 1, for ``seconds`` not positive or ``repeat`` below 1."""
    if isinstance(writers, str):
        try:
            counts = [int(x) for x in writers.split(",") if x.strip()]
        except ValueError:
            counts = []
    else:
        counts = list(writers)
    if not counts or min(counts) < 1:
        p.error(f"--writers needs whole numbers >= 1, got {writers!r}")
    if not seconds > 0 or repeat < 1:
        p.error("--seconds must be positive and --repeat at least 1")
    return counts
