"""Accept errors of a listener, logged once (``AcceptErrors``).

When ``accept()`` fails for want of descriptors (``EMFILE``, ``ENFILE``) or memory
(``ENOBUFS``, ``ENOMEM``), asyncio's event loop stops reading the listening socket for a
second (``ACCEPT_RETRY_DELAY``) and says so through the loop's exception handler, whose
default logs an ERROR with a traceback. It does so once per pending connection it would
have accepted, up to the listener's backlog (100, 128), in each such turn (CPython 3.11 to
3.13 go on in their accept loop after the error), and once per timer of the turns before:
a node out of descriptors logged about 1,300 tracebacks a second ("socket.accept() out of
system resource") until it had descriptors again, the rest of its log drowned.

``AcceptErrors(...).watch(sockets)`` puts a filter in front of the loop's exception handler that logs
these errors of the watched listeners through a ``FailureLog`` (one WARNING, again every
5 minutes while they go on, an INFO once a connection is accepted again: ``accepted``) and
passes every other call to the handler it replaced (the loop's default when none was set).
uvloop's listeners never report such an error (libuv closes pending connections with a
descriptor it keeps in reserve, or leaves them waiting), so the filter only ever sees
asyncio's.

``stop_accepting(server)``, awaited before a listener is closed, keeps the close from
leaking a connection the listener had just accepted (see its docstring).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Iterable
from typing import Any, cast

from ..failure_log import FailureLog

__all__ = ["AcceptErrors", "ACCEPT_ERROR_MESSAGE", "stop_accepting"]

ACCEPT_ERROR_MESSAGE = "socket.accept() out of system resource"
"""The message asyncio's event loop reports an accept error with (``BaseSelectorEventLoop``)."""

_Handler = Any  # (loop, context) -> None, as asyncio takes it


class _Filter:
    """The exception handler of one loop while listeners of it are watched."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.replaced: _Handler | None = loop.get_exception_handler()
        self.watched: dict[int, AcceptErrors] = {}

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == ACCEPT_ERROR_MESSAGE:
            sock = context.get("socket")
            watcher = self.watched.get(sock.fileno()) if sock is not None else None
            if watcher is not None:
                watcher.failed(context.get("exception"))
                return
        if self.replaced is not None:
            self.replaced(loop, context)
        else:
            loop.default_exception_handler(context)


class _Dropped(asyncio.Protocol):
    """A connection whose protocol could not be made (``AcceptErrors.guard``): closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).abort()


_filters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Filter] = weakref.WeakKeyDictionary()


class AcceptErrors:
    """The accept errors of one listener, logged through a ``FailureLog`` under ``subject``
    (``"raft port 127.0.0.1:5001"``). Its protocol factory is wrapped by ``guard``;
    ``watch`` its sockets once it listens; the factory calls ``accepted`` (a connection came: the errors ended); ``close`` when it
    closes."""

    def __init__(self, subject: str, logger: logging.Logger) -> None:
        """Made in the running loop, the listener's."""
        self._loop = asyncio.get_running_loop()
        self._fds: list[int] = []
        self.log = FailureLog(logger, subject, unit="failed accept")

    def guard(self, factory: Callable[[], asyncio.BaseProtocol]) -> Callable[[], asyncio.BaseProtocol]:
        """The listener's protocol factory: ``factory``'s protocol, or, when ``factory``
        raises (``MemoryError``), one that closes the connection at once, the error logged
        through the ``FailureLog``. uvloop's listener stopped for good after a factory that
        raised, leaving it the accepted connection: every later connection waited in the
        listen queue unanswered, with ``is_serving()`` still true."""

        def protocol() -> asyncio.BaseProtocol:
            try:
                return factory()
            except Exception as e:  # noqa: BLE001 - the listener must go on
                self.log.failed(self._loop.time(), "protocol",
                                f"a connection could not be set up ({e!r}): closed at once, the port listens on")
                return _Dropped()

        return protocol

    def watch(self, sockets: Iterable[Any]) -> None:
        """Watch the listening ``sockets`` (``Server.sockets``). The loop's exception
        handler is wrapped at the first listener watched and put back when the last is
        closed (unless it was replaced meanwhile)."""
        loop = self._loop
        self._fds = [s.fileno() for s in sockets]
        filt = _filters.get(loop)
        if filt is None or loop.get_exception_handler() is not filt:
            filt = _filters[loop] = _Filter(loop)
            loop.set_exception_handler(filt)
        for fd in self._fds:
            filt.watched[fd] = self

    def failed(self, exc: BaseException | None) -> None:
        """One accept error (``exc``) reported by the loop."""
        self.log.failed(self._loop.time(), "accept",
                        f"accept() fails ({exc}): connections wait (asyncio retries every second) until "
                        "descriptors are free again (ulimit -n)")

    def accepted(self) -> None:
        """A connection was accepted: ends a streak of errors (an INFO if it was logged)."""
        if self.log.failing:
            self.log.cleared(self._loop.time(), "accepts connections again")

    def close(self) -> None:
        """Stop watching (the listener closed); the last one puts the replaced handler back."""
        filt = _filters.get(self._loop)
        if filt is None:
            return
        for fd in self._fds:
            if filt.watched.get(fd) is self:
                del filt.watched[fd]
        self._fds = []
        if not filt.watched:
            del _filters[self._loop]
            if self._loop.get_exception_handler() is filt:
                self._loop.set_exception_handler(filt.replaced)


async def stop_accepting(server: asyncio.AbstractServer) -> None:
    """Make ``server`` accept no more connections and let those it has accepted be set up;
    await it just before ``server.close()``, which may then run at once (the sockets of
    ``server.sockets`` still listen meanwhile: their queued connections wait).

    asyncio's selector loop accepts a connection in one loop pass and makes its transport in
    a task, a pass later; a ``Server.close()`` in between made that fail (``Server._attach``
    asserts that the server still listens) and the loop swallowed the error: the accepted
    socket was left to the garbage collector, unclosed, its client neither answered nor
    closed until then (a ``ResourceWarning`` when collected). Here the listening sockets are
    taken off the loop's selector first (no accept can run after this call starts), then one
    loop pass lets the tasks already made set their connections up: each is its protocol's
    to close (the servers' protocols close a connection made once their close has begun).
    Other loops (uvloop makes the transport where it accepts) only get the one pass."""
    loop = asyncio.get_running_loop()
    if isinstance(loop, asyncio.SelectorEventLoop):
        for sock in getattr(server, "sockets", ()):  # (asyncio's Server; AbstractServer names none)
            loop.remove_reader(sock.fileno())
    await asyncio.sleep(0)  # (the set-up tasks were queued before this step's wake-up)
