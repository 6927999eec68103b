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
from collections.abc import Coroutine, Generator
from types import FunctionType
from typing import Any

__all__ = ["Resumed", "Wakeup", "send_none"]

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


def send_none(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Run ``coro`` (a coroutine not started, or one that last yielded to its driver) to its
    next suspension or its end, as ``coro.send(None)`` does: ``(True, value)`` if it
    returned ``value``, ``(False, yielded)`` if it suspended, yielding ``yielded`` (a future
    the caller's task must wait for before it sends again). What it raises propagates.

    For the core's coroutines that usually complete without suspending (a state machine's
    ``apply``, a log store's ``save_committed``), run where no ``await`` can be: the compiled
    build tells the two cases apart by ``PyIter_Send``'s result code, without the
    ``StopIteration`` that ``send`` raises at the end (its raise and catch cost about twice
    what the ``await`` of the whole coroutine does). The pure build catches it."""
    if _COMPILED:
        return _send_none_c(coro)  # type: ignore[name-defined, no-any-return] # noqa: F821 - wakeup.pxd
    try:
        return False, coro.send(None)
    except StopIteration as stop:
        return True, stop.value


class Resumed:
    """What is left of a coroutine that ``send_none`` started and that suspended, yielding
    ``yielded``: awaiting it drives the rest of ``coro`` from the awaiting task, as
    ``await coro`` would have from that point (``yielded`` goes to the task first; what the
    task sends or throws goes to the coroutine), and gives what ``coro`` returns."""

    __slots__ = ("coro", "yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self.coro = coro
        self.yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self.coro
        value = self.yielded
        while True:
            try:
                sent = yield value
            except BaseException as e:  # noqa: BLE001 - handed on to the coroutine, as await does
                try:
                    value = coro.throw(e)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


# Whether this module is the compiled extension (``wakeup.pxd``'s C part exists), told by
# what Cython makes of a function (never a Python ``function``), as ``types._COMPILED`` is.
_COMPILED = type(send_none) is not FunctionType
