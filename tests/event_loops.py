"""The event loops the tests that care about the loop's kind run on: asyncio's own and uvloop's
(where it builds), by name, each as a factory of a new loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
    uvloop = None  # type: ignore[assignment]

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
"""Name -> a factory of a new event loop of that kind."""
if uvloop is not None:
    LOOPS["uvloop"] = uvloop.new_event_loop
