"""``Wakeup``: the one primitive by which a task sleeps until another part of the node has
something for it (the core's queues, the state-machine worker's queue, a replication
stream, metrics waiters, a purge waiting for log reads).

It is edge-triggered: ``wake()`` completes the futures handed out by ``wait()`` so far, and
is not remembered when nobody waits. A waiter therefore checks its condition and calls
``wait()`` with no ``await`` in between (the event loop runs one task at a time, so no
``wake()`` can slip between the check and the wait), and checks again once woken::

    while not queue:
        await wakeup.wait()

Every ``wait()`` returns a future of the caller's own. Cancelling a waiter (a timeout, a
task being stopped) cancels only that future: the others still wake at the next
``wake()``, and later ``wait()`` calls are unaffected. (One future shared by every waiter
is the bug ``tests/integration/cluster/t90_issue_metrics_wait_cancel.py`` guards: one
cancelled waiter woke every other one with ``CancelledError``.)

Cost: the first waiter takes a slot (no list), so a loop with one consumer pays one
``create_future`` per sleep and one ``set_result`` per wake-up, as a hand-written future
would. Further waiters go to a list, from which cancelled futures are dropped in amortized
O(1) so a stream of waiters that time out without a wake-up does not grow it unboundedly.

A ``Wakeup`` belongs to the event loop of its first ``wait()`` (as the node that owns it
does); use it only from that loop's thread.
"""

from __future__ import annotations

import asyncio

__all__ = ["Wakeup"]

_get_running_loop = asyncio.get_running_loop

# The list of extra waiters is compacted (done futures dropped) when it reaches this size,
# or twice the number still waiting after the last compaction.
_COMPACT_MIN = 64


class Wakeup:
    """Wake the tasks waiting in ``wait()`` at the next ``wake()`` (see the module
    docstring for the contract)."""

    __slots__ = ("first", "_more", "_limit", "_loop")

    def __init__(self) -> None:
        # Invariant: every pending future handed out by ``wait()`` since the last ``wake()``
        # is ``first`` or in ``_more``; ``_more`` is non-empty only if ``first`` is set.
        self.first: asyncio.Future[None] | None = None
        """The first future handed out by ``wait()`` since the last ``wake()``, or ``None``.
        Read-only outside this class: ``None`` means nobody waits, so a hot path may test
        ``w.first is not None`` before calling ``w.wake()`` (the test ``wake()`` starts with,
        without the call)."""
        self._more: list[asyncio.Future[None]] = []
        self._limit = _COMPACT_MIN
        self._loop: asyncio.AbstractEventLoop | None = None

    def wait(self) -> asyncio.Future[None]:
        """A new future, the caller's own, that completes (with ``None``) at the next
        ``wake()``. Cancelling it affects no other waiter."""
        loop = self._loop
        if loop is None:
            loop = self._loop = _get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        first = self.first
        if first is None or first.done():
            # The slot is free, or holds a waiter that gave up.
            self.first = fut
        else:
            more = self._more
            more.append(fut)
            if len(more) >= self._limit:
                more = self._more = [f for f in more if not f.done()]
                self._limit = max(_COMPACT_MIN, 2 * len(more))
        return fut

    def waiting(self) -> bool:
        """Whether a future handed out by ``wait()`` may still be pending (a waiter that
        gave up may still count until the next ``wake()``)."""
        first = self.first
        return first is not None and (not first.done() or bool(self._more))

    def wake(self) -> None:
        """Complete every future handed out by ``wait()`` since the last ``wake()`` (those
        cancelled meanwhile are skipped). A ``wake()`` with no waiter does nothing."""
        first = self.first
        if first is None:
            return
        self.first = None
        if not first.done():
            first.set_result(None)
        more = self._more
        if more:
            self._more = []
            self._limit = _COMPACT_MIN
            for f in more:
                if not f.done():
                    f.set_result(None)
