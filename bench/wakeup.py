"""Micro-benchmark: ``openraft_py.wakeup.Wakeup`` against the hand-written futures it
replaced (on uvloop, the node's event loop).

- ``handoff``: one consumer task sleeps on an empty queue, a producer task puts one item and
  wakes it (the core's, the state-machine worker's and a replication stream's loop).
  Old: ``self._waiter = loop.create_future()`` / ``set_result`` on the one future.
- ``broadcast``: ``W`` tasks wait for the next change, one task signals it (metrics waiters).
  Old: ``asyncio.shield`` over one shared future (``MetricsWatch.changed`` before).

    python bench/wakeup.py [--rounds 200000] [--waiters 8] [--repeat 5]

Prints nanoseconds per round (median of ``--repeat``); lower is better.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop

from openraft_py.wakeup import Wakeup


class OldSlot:
    """The hand-written single-waiter future (as in the core before ``Wakeup``)."""

    def __init__(self) -> None:
        self._waiter: asyncio.Future[None] | None = None

    def wait(self) -> asyncio.Future[None]:
        w = self._waiter = asyncio.get_running_loop().create_future()
        return w

    def wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)


class OldShield:
    """The shared future behind a shield per waiter (``MetricsWatch`` before ``Wakeup``)."""

    def __init__(self) -> None:
        self._changed: asyncio.Future[None] | None = None

    def wait(self) -> asyncio.Future[None]:
        ch = self._changed
        if ch is None:
            ch = self._changed = asyncio.get_running_loop().create_future()
        return asyncio.shield(ch)

    def wake(self) -> None:
        ch = self._changed
        if ch is not None:
            self._changed = None
            if not ch.done():
                ch.set_result(None)


async def handoff(make: Callable[[], OldSlot | Wakeup], rounds: int) -> float:
    """Nanoseconds per produced-and-consumed item."""
    w = make()
    q: deque[int] = deque()
    done = asyncio.Event()

    async def consumer() -> None:
        n = 0
        while n < rounds:
            if not q:
                await w.wait()
                continue
            q.popleft()
            n += 1
        done.set()

    async def producer() -> None:
        for i in range(rounds):
            q.append(i)
            w.wake()
            await asyncio.sleep(0)

    t = asyncio.get_running_loop().create_task(consumer())
    start = time.perf_counter()
    await producer()
    await done.wait()
    await t
    return (time.perf_counter() - start) / rounds * 1e9


async def broadcast(make: Callable[[], OldShield | Wakeup], rounds: int, waiters: int) -> float:
    """Nanoseconds per change delivered to all ``waiters``."""
    w = make()
    seen = [0] * waiters
    version = 0

    async def waiter(k: int) -> None:
        while seen[k] < rounds:
            if seen[k] == version:
                await w.wait()
                continue
            seen[k] = version

    tasks = [asyncio.get_running_loop().create_task(waiter(k)) for k in range(waiters)]
    await asyncio.sleep(0)
    start = time.perf_counter()
    for _ in range(rounds):
        version += 1
        w.wake()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    return (time.perf_counter() - start) / rounds * 1e9


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=200_000)
    ap.add_argument("--waiters", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    cases: list[tuple[str, Callable[[], Coroutine[Any, Any, float]]]] = [
        ("handoff  old future", lambda: handoff(OldSlot, a.rounds)),
        ("handoff  Wakeup", lambda: handoff(Wakeup, a.rounds)),
        (f"broadcast({a.waiters}) old shield", lambda: broadcast(OldShield, a.rounds // 10, a.waiters)),
        (f"broadcast({a.waiters}) Wakeup", lambda: broadcast(Wakeup, a.rounds // 10, a.waiters)),
    ]
    results: dict[str, list[float]] = {name: [] for name, _ in cases}
    # Interleave the cases so a load change on the machine hits them alike.
    for _ in range(a.repeat):
        for name, case in cases:
            results[name].append(uvloop.run(case()))
    print(f"loop: uvloop, rounds: {a.rounds}, repeat: {a.repeat} (median ns per round)")
    for name, xs in results.items():
        print(f"  {name:28s} {statistics.median(xs):8.0f} ns")


if __name__ == "__main__":
    main()
