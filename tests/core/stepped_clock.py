"""``SteppedClock``: a node's clock that a test moves forward, as a stall of its loop would."""

from __future__ import annotations

import asyncio


class SteppedClock:
    """The loop's clock plus an offset the test moves forward (``offset``, in seconds)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return asyncio.get_running_loop().time() + self.offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
