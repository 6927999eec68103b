"""The runtime's source of time. Injectable so a simulator can drive virtual time."""

from __future__ import annotations

import asyncio
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

    def now(self) -> float:
        """``loop.time()`` of the running loop."""
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep(seconds)``."""
        await asyncio.sleep(seconds)
