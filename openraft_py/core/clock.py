"""The runtime's source of time. Injectable so a simulator can drive virtual time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    """Monotonic time for one node's runtime."""

    def now(self) -> float:
        """Monotonic seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of this clock's time."""
        ...


class LoopClock:
    """The running event loop's clock (``loop.time()``, ``asyncio.sleep``). An event loop
    with virtual time (the simulator's) makes this virtual too."""

    def __init__(self) -> None:
        self._time: Callable[[], float] | None = None

    def now(self) -> float:
        """``loop.time()`` of the running loop (the loop is looked up once)."""
        t = self._time
        if t is None:
            t = self._time = asyncio.get_running_loop().time
        return t()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep(seconds)``."""
        await asyncio.sleep(seconds)
