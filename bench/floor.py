"""The asyncio floor: the most submit-and-resolve round trips per second this machine's
event loop does, the ceiling every other figure of ``make bench`` is compared with.

``W`` writer coroutines each, in a loop, append a fresh future to a shared queue, wake the
resolver and await their future; ONE resolver task takes everything queued and resolves it
in a batch. That is the least a Raft write through an asyncio core costs: one hop to the core
and one back, no replication, no storage. Every write is timed (``perf_counter`` before and
after, as the cluster benchmarks do), so the latency percentiles are the floor's too.

    python bench/floor.py                         # 1, 64 and 256 writers, 3 runs of 2 s
    python bench/floor.py --writers 1 --seconds 1 --repeat 5 --json floor.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import checked_run_args, loop_name, percentiles_ms, run_loop, summarize


async def run_once(writers: int, seconds: float) -> dict[str, float]:
    """One run: ``writers`` writers for ``seconds``; ``{"writes_per_s", "p50", "p99",
    "p999"}`` (latencies in ms)."""
    loop = asyncio.get_running_loop()
    # Invariant: every future in `queue` is pending and awaited by exactly one writer.
    queue: deque[asyncio.Future[None]] = deque()
    wake = asyncio.Event()

    async def resolver() -> None:
        while True:
            await wake.wait()
            wake.clear()
            batch = list(queue)
            queue.clear()
            for fut in batch:
                fut.set_result(None)

    lat: list[float] = []
    clock = time.perf_counter
    deadline = 0.0

    async def writer() -> None:
        record = lat.append
        while True:
            t0 = clock()
            if t0 >= deadline:
                return
            fut = loop.create_future()
            queue.append(fut)
            wake.set()
            await fut
            record(clock() - t0)

    task = asyncio.create_task(resolver())
    start = clock()
    deadline = start + seconds
    await asyncio.gather(*(writer() for _ in range(writers)))
    elapsed = clock() - start
    task.cancel()
    return {"writes_per_s": len(lat) / elapsed, **percentiles_ms(lat)}


def measure(writers: list[int], seconds: float, repeat: int) -> list[dict[str, Any]]:
    """Each writer count's point (``bench.common.summarize``), with a progress line per point."""
    points = []
    for w in writers:
        runs = [run_loop(run_once(w, seconds)) for _ in range(repeat)]
        p = summarize(w, runs)
        print(f"  floor {w:>4} writers: {p['writes_per_s']:>12,.0f} round trips/s  p50 {p['p50'] * 1000:.1f} us  "
              f"p99 {p['p99'] * 1000:.1f} us", flush=True)
        points.append(p)
    return points


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--writers", default="1,64,256", help="comma-separated writer counts")
    p.add_argument("--seconds", type=float, default=2.0, help="length of one run")
    p.add_argument("--repeat", type=int, default=3, help="runs per point; medians are reported")
    p.add_argument("--json", help="write the points to this file")
    args = p.parse_args(argv)
    writers = checked_run_args(p, args.writers, args.seconds, args.repeat)
    print(f"asyncio floor on {loop_name()}: {args.repeat} x {args.seconds:g} s per writer count", flush=True)
    points = measure(writers, args.seconds, args.repeat)
    if args.json:
        Path(args.json).write_text(json.dumps({"loop": loop_name(), "points": points}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
