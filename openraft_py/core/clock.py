"""The runtime's source of time. Injectable so a simulator can drive virtual time."""

from __future__ import annotations

import asyncio
import inspect
import math
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..validation import check_implements


class Clock(Protocol):
    """Monotonic time for one node's runtime."""

    def now(self) -> float:
        """Monotonic seconds, never below 0 (as ``time.monotonic()``)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of this clock's time."""
        ...


MAX_CLOCK_SECONDS = 1e10
"""The most ``Clock.now()`` may read at the start (about 317 years, so any monotonic clock in
seconds): a clock in nanoseconds reads more after 10 s of uptime, and every interval of the
node measured on it would be a billion times too long (no election would ever start)."""

MIN_CLOCK_SECONDS = 0.0
"""The least ``Clock.now()`` may read at the start. The engine marks a time that never came
(no answer from a voter yet, no quorum ack yet) with -1 ms, below every time the clock can
read: on a clock that read below 0, those marks were later than the real answers. None
was recorded, so a leader never stepped down by check-quorum, and ``READ_INDEX`` reads were
confirmed with no quorum asked (-1 at or after the read's time): a leader cut off from every
follower answered them, missing the writes the others committed meanwhile."""

CLOCK_METHODS: tuple[str, ...] = ("now", "sleep")
"""The methods of ``Clock`` (``check_clock`` requires each)."""


def check_clock(clock: Any) -> None:
    """``TypeError`` unless ``clock`` is a ``Clock``: an instance with ``now()`` and
    ``sleep(seconds)`` methods, whose ``now()`` returns a finite ``int`` or ``float`` (monotonic
    seconds; ``ValueError`` below ``MIN_CLOCK_SECONDS`` or past ``MAX_CLOCK_SECONDS``) and
    whose ``sleep(0)`` returns an
    awaitable (not awaited: a coroutine is closed unstarted, so nothing of the clock's runs
    but ``now``).

    ``Raft.new`` checks a ``clock`` it is given with this before it reads storage. Without the
    check, ``clock=time.monotonic`` failed with a bare ``AttributeError`` ('no attribute
    now') after storage was read, and a clock without ``sleep``, or with a blocking one
    (``time.sleep``), gave a node that stopped at its first timer tick ("a task failed")."""
    check_implements(clock, "clock", "Clock", CLOCK_METHODS)
    t = clock.now()
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        raise TypeError(
            f"clock.now() must return the time in seconds as a finite int or float (monotonic), "
            f"got {type(t).__name__} {t!r}"
        )
    if t < MIN_CLOCK_SECONDS:
        raise ValueError(
            f"clock.now() read {t!r}, below 0: a Clock must read 0 or more (as time.monotonic() does); the node "
            "marks times that never came below every reading, and on a clock below 0 it would confirm reads no "
            "quorum confirmed. Shift the clock up, e.g. return time.monotonic() instead of a difference"
        )
    if t > MAX_CLOCK_SECONDS:
        raise ValueError(
            f"clock.now() read {t!r}, more than {MAX_CLOCK_SECONDS:.0e} seconds: a clock in nanoseconds "
            "(time.monotonic_ns)? now() must return seconds, as time.monotonic() does"
        )
    pause = clock.sleep(0)
    if not inspect.isawaitable(pause):
        raise TypeError(
            f"clock.sleep(seconds) must return an awaitable (an async def sleep), got {type(pause).__name__} "
            f"{pause!r}"
        )
    if inspect.iscoroutine(pause):
        pause.close()


def loop_time_source(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """The function ``LoopClock`` reads the time of ``loop`` with: ``loop.time``, except on
    uvloop's own loop, whose ``time()`` is libuv's loop time, the monotonic clock in whole
    milliseconds (``uv_now``): there ``time.monotonic``, the same clock at full resolution
    (its timers and ``asyncio.sleep`` are unchanged: only intervals are measured).

    A ReadIndex read is confirmed by the acknowledgements of requests sent at or after the
    time it arrived (docs/design/reads.md): on whole milliseconds, a heartbeat sent earlier
    in the same millisecond counted, so a read was answered from an acknowledgement older
    than the read (a leader cut off just after a heartbeat round answered most reads made
    within that millisecond, and during a leadership transfer, when the followers grant the
    target at once, such a read can miss the new leader's first write). A loop that
    defines its own ``time()`` (a subclass, virtual time) keeps it."""
    uvloop = sys.modules.get("uvloop")
    uv_time = getattr(getattr(uvloop, "Loop", None), "time", None)
    if uv_time is not None and getattr(type(loop), "time", None) is uv_time:
        return time.monotonic
    return loop.time


class LoopClock:
    """The running event loop's clock (``loop.time()``, at full resolution: see
    ``loop_time_source``) and ``asyncio.sleep``. An event loop with virtual time (the
    simulator's) makes this virtual too."""

    def __init__(self) -> None:
        self._time: Callable[[], float] | None = None

    def now(self) -> float:
        """The running loop's time in seconds (``loop_time_source``; looked up once)."""
        t = self._time
        if t is None:
            t = self._time = loop_time_source(asyncio.get_running_loop())
        return t()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep(seconds)``."""
        await asyncio.sleep(seconds)


def seconds_reader(clock: Clock) -> Callable[[], float]:
    """A function of no argument that reads ``clock.now()``: for a ``LoopClock`` itself (not
    a subclass, which may define its own ``now``), the time source it reads
    (``loop_time_source`` of the running loop, resolved here), with no Python frame per
    read; for any other clock its bound ``now``. Called on the node's running loop (a
    ``LoopClock`` resolves its source from it)."""
    if type(clock) is LoopClock:
        clock.now()  # resolves ``_time`` on the running loop
        t = clock._time  # (its own module)
        if t is not None:
            return t
    return clock.now
