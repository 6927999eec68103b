"""The HTTP/JSON API of a service node (DESIGN §8), on aiohttp.

==============================  ==========================================================
``POST /cluster/init``          ``{"members": {"1": {"raft_addr", "http_addr"}, ...}}`` -> 200
                                ``{"members": [ids]}``; 409 if the node is initialized already;
                                400 if another member's raft host does not resolve here
``POST /cluster/learners``      ``{"id", "raft_addr", "http_addr"}`` -> 200 ``{"index"}`` once
                                the learner caught up (503 if not within the bound); 409 if
                                ``id`` is a voter or another member has one of the
                                addresses, or if the learner was removed while the call
                                waited; 400 if the two addresses are the same, or if the
                                host of ``raft_addr`` does not resolve on the leader (503
                                if the resolver cannot tell within ``RESOLVE_TIMEOUT``)
``DELETE /cluster/learners/ID`` remove learner ``ID`` (the voters do not change) -> 200
                                ``{"index", "voters", "learners"}`` once the entry is
                                committed; 404 if ``ID`` is not a member, 409 if it is a
                                voter or while another change runs; 400 if ``ID`` is not a
                                node id (decimal digits)
``POST /cluster/members``       ``{"voters": [ids], "retain": bool, "allow_lagging": bool}``
                                -> 200 ``{"index", "voters", "learners"}``; 409 while another
                                change runs, or when most new voters have not caught up
``POST /cluster/transfer``      ``{"to": id}`` -> 200 ``{"leader_id"}`` once ``to`` leads; 409
                                when another node took over instead (a later transfer or
                                an election came first), or while a membership change
                                waits for its joint config to commit; 400 if ``to`` is
                                not a voter or has not answered the leader lately; 503
                                once this node gave the transfer up and still leads
                                (saying so), or when nobody took over in time
``GET /cluster/status``         this node's view (``KvNode.status``); any node answers
``PUT /kv/{key}``               raw body = the value (UTF-8) -> 200 ``{"index"}``
``GET /kv/{key}``               ``?consistency=linearizable|lease|local`` (default
                                linearizable) -> 200 raw value, 404 when absent; the
                                one query parameter of the API (``GET /metrics``
                                aside): another is a 400 (``unknown_query``)
``DELETE /kv/{key}``            -> 200 ``{"index"}``
``POST /kv/{key}/cas``          ``{"expected": str|null, "value": str|null}`` -> 200
                                ``{"ok", "current"}`` (``value`` null: delete if it matches)
``GET /metrics``                Prometheus text format
==============================  ==========================================================

Keys are the percent-decoded path segment (encode ``/`` as ``%2F``): non-empty, at most
``MAX_KEY_BYTES`` bytes of UTF-8. JSON bodies are decoded into typed structs: a wrong type, a
missing or unknown field, or invalid JSON is a 400 before anything happens (a string that is
not Unicode text, a lone surrogate escape or bytes that are not UTF-8, named with where it is:
``invalid_text``); a UTF-8 byte order mark before the JSON is ignored. The addresses of
``init`` and ``learners`` go into the membership: each is checked with
``nodes.check_member_addr`` (a host name or IP, no wildcard).

The redirect rule: a node that is not the leader answers writes, linearizable and lease
reads and the admin calls (learners, members, transfer) with ``307``, ``Location`` = the
same path and query on the leader's HTTP address, and the body ``{"leader_id",
"leader_http_addr"}``; with no known leader (or none whose HTTP address is known) ``503``
(saying so when the node is in no cluster yet: ``POST /cluster/init`` first). A request
with a body (``PUT``, ``cas``, the admin POSTs) is so answered before its body is read
(``_redirects_unread``; no ``100 Continue`` to an ``Expect``): a body sent anyway is read
and dropped after the answer, never held (``_answer_then_drop_body``, below).
A write whose entry was appended but whose outcome this node can no longer tell
(``ForwardToLeader.outcome_unknown``) is answered ``503`` with ``"outcome_unknown": true``,
never redirected (a blind retry could apply it twice).

Errors: every answer but a value is JSON; errors are ``{"error": message}`` (plus fields
above). ``ForwardToLeader`` -> 307/503; ``QuorumNotEnough``, RPC errors, timeouts -> 503;
``InProgress``, ``LearnerIsLagging``, initialize's ``NotAllowed`` and ``Conflict`` -> 409;
other membership or initialize refusals, ``InvalidRequest``, ``TypeError``, ``ValueError``
-> 400; a body over
``max_body``, or an entry over the Raft ``Config.max_entry_bytes`` (``EntryTooLarge``) -> 413
(a ``Content-Length`` over ``max_body`` on any route before the body is read, with no
``100 Continue``; a chunked body once it passes ``max_body``);
a body with a ``Content-Encoding`` other than ``identity`` (a compressed one) -> 415, before it
is read (the value is the body's bytes as sent: a coding the service decoded or passed through
would store something else than the client meant); a ``Transfer-Encoding`` other than
``chunked`` (``gzip, chunked``) -> 501 (RFC 9112: a transfer coding the server does not
implement), for the same reason; a body that cannot be read (cut short, or
its chunked framing malformed) -> 400, logged at INFO; a body that does not arrive within
``BODY_GRACE`` + its size at ``BODY_MIN_RATE`` -> 408, logged at INFO, its connection closed;
a request whose body waited ``BODY_BUDGET_WAIT`` for room among the bodies the node handles
(``MAX_BODY_BYTES_IN_FLIGHT``, ``BodyBudget``) -> 503 with ``Retry-After``, nothing done;
a ``GET`` of a value of ``LARGE_ANSWER`` bytes or more while the values held in answers not
sent yet (clients that do not read them) would pass ``MAX_ANSWER_BYTES_WAITING`` with it ->
503 with ``Retry-After`` (``check_answer_room``);
unknown paths -> 404; wrong methods -> 405 (both at once, without ``100 Continue``:
``_unmatched``); ``Fatal`` (the node stopped)
-> 503 (with ``"outcome_unknown": true`` but for a ``GET`` or a request made once the Raft had stopped, which say
``"stopping": true``: a write it stopped under may have been appended and committed), logged (an ERROR, but at INFO for ``Stopped`` once ``stop()`` began: the stop was
asked for; and at INFO once the node stopped on its own: its core logged why at ERROR,
``KvNode.stopped_on_its_own``); a node that is stopping answers new requests 503 (with ``leader_id`` and
``"stopping": true``: nothing was done, another node may take the request), and every answer then closes its
connection; a request it had begun and refused because of the stop before doing anything (an ``init`` or
add-learner whose raft host names it was resolving) gets 503 with ``"outcome_unknown": false`` and
``"stopping": true`` (``ServiceUnavailable.stopping``; without ``stopping``, ``"outcome_unknown": false`` is a
refusal of the request itself: a host name the resolver could not tell about); each idle connection it answers at
once with an unsolicited 408 and closes without reading a request on it again
(``StoppingConnections``). Every other 503 of a request the node did nothing of while it stops or once its Raft has
stopped (``_stopping``: a read in flight, the redirect rule's "no leader", a request made after the Raft stopped on
its own, a write then with ``"outcome_unknown": false``) says ``"stopping": true`` too. Nothing is half-applied: validation
runs before the one Raft call a request makes.

The rest of a body that an answer left unread (a redirect, a 413, 415 or 501, a 503 of the
body budget) is read and dropped after the answer (``_answer_then_drop_body``), as fast as
the client sends it, within a body's deadline and up to twice ``max_body``; the connection
then serves the next request, or is closed if the body was slower or larger (or, when a
stop ends the drop, gets the stopping node's 408 first: ``_retire_after_drop``).

A request that is not well-formed HTTP (a malformed request line, header, ``Content-Length``
or chunk framing; a request line over ``MAX_REQUEST_LINE`` or a header over
``MAX_HEADER_FIELD``) is refused by aiohttp's parser before the application sees it: it is
answered 400 with the API's JSON error all the same (``JsonParserErrors``), its connection
closed, and logged in one line at INFO (``SERVER_LOG``), not as an error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import resource
import time
import urllib.parse
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast

import msgspec
from aiohttp import StreamReader, web
from aiohttp.http import HttpProcessingError, HttpVersion11
from aiohttp.web_protocol import RequestPayloadError
from aiohttp.web_urldispatcher import _default_expect_handler

from .. import validation as _v
from ..errors import (
    ChangeMembershipError,
    EntryTooLarge,
    Fatal,
    ForwardToLeader,
    InitializeError,
    InProgress,
    InvalidRequest,
    LearnerIsLagging,
    LinearizableReadError,
    NotAllowed,
    RPCError,
    Stopped,
    WaitTimeout,
)
from ..failure_log import FailureLog
from ..network.accept_errors import AcceptErrors
from ..network.tcp import tcp_connection_limit
from .argtypes import quoted, repeated_json_key
from .metrics import CONTENT_TYPE
from .node import (
    CONSISTENCIES,
    DRAIN_POLL,
    MAX_KEY_BYTES,
    SHUTDOWN_GRACE,
    Conflict,
    KvNode,
    LearnerInForward,
    NotFound,
    ServiceUnavailable,
)
from .nodes import NodeAddrs, check_member_addr

__all__ = ["make_app", "flush_client_mistakes", "NODE_KEY", "MAX_REQUEST_LINE", "SERVER_LOG", "HTTP_IDLE_TIMEOUT", "IdleConnections",
           "StoppingConnections", "STOPPING_NOT_READ",
           "MAX_HTTP_CONNECTIONS", "http_connection_limit", "capped_connections", "REFUSED_LINGER",
           "refused_linger_limit", "connection_limits", "open_descriptors", "FILES_RESERVE",
           "MAX_BODY_BYTES_IN_FLIGHT", "BODY_BUDGET_WAIT", "ADMIN_BODY_EXEMPT_BYTES", "body_budget", "BodyBudget", "Overloaded", "BUDGET_KEY",
           "MAX_ANSWER_BYTES_WAITING", "LARGE_ANSWER", "AnswerBytes", "ANSWERS_KEY", "check_answer_room",
           "SentValue", "invalid_text"]

log = logging.getLogger(__name__)


class _ClientMistakeLog:
    """Bounds the lines logged one per request that failed on the client's side (a
    malformed request, a body cut short or too slow) or was answered 503 by a stopped node:
    each was one INFO line per request, so a client storm at the default level (a broken
    client in a loop, a scanner) wrote a line per request, about 2,000 a second (24 MB a
    minute) from one client on loopback.

    Per ``kind`` of line, in windows of ``every`` seconds starting at the first such
    request: the first ``burst`` are logged as they come, the others counted; when the
    window is over (at the next such request, or at the next sweep of ``IdleConnections``,
    so also once the storm ended) one INFO line says how many more there were and quotes the
    last of them. So a storm that lasts is at most ``burst + 1`` lines a minute per kind,
    and its end is said. Kept per process (as ``SERVER_LOG``, whose filter uses it): the
    nodes a process runs share it. The clock is ``time.monotonic``."""

    def __init__(self, logger: logging.Logger, every: float = 60.0, burst: int = 5) -> None:
        self.log = logger
        self.every = every
        """Seconds of one window."""
        self.burst = burst
        """Lines of each kind logged as they come in one window."""
        # kind -> [window start, lines logged, lines not logged, the last line not logged]
        self._windows: dict[str, list[Any]] = {}

    def allow(self, kind: str, message: str) -> bool:
        """Whether to log ``message``, a line of ``kind`` (``"malformed HTTP requests"``):
        ``False`` counts it instead (see the class docstring)."""
        now = time.monotonic()
        w = self._windows.get(kind)
        if w is not None and now - w[0] >= self.every:
            self._end(kind, now)
            w = None
        if w is None:
            w = self._windows[kind] = [now, 0, 0, ""]
        if w[1] < self.burst:
            w[1] += 1
            return True
        w[2] += 1
        w[3] = message
        return False

    def flush(self, all_windows: bool = False) -> None:
        """End each window that is over (``all_windows``: every window), saying what it did
        not log. ``IdleConnections`` calls it at each sweep, a node's ``stop()`` with
        ``all_windows`` (``flush_client_mistakes``): what a storm left unlogged in its last
        minute was never said when the node stopped within it."""
        now = time.monotonic()
        for kind in [k for k, w in self._windows.items() if all_windows or now - w[0] >= self.every]:
            self._end(kind, now)

    def reset(self) -> None:
        """Forget every window, logging nothing (for tests)."""
        self._windows.clear()

    def _end(self, kind: str, now: float) -> None:
        start, _logged, skipped, last = self._windows.pop(kind)
        if skipped:
            self.log.info("%d more %s in %.1fs were not logged (the first %d of each kind are, every %gs); "
                          "the last: %s", skipped, kind, now - start, self.burst, self.every, last)


_CLIENT_MISTAKES = _ClientMistakeLog(log)
"""The HTTP API's one ``_ClientMistakeLog``."""


def flush_client_mistakes() -> None:
    """Say now what the HTTP API's log left out of every window still open (a node's
    ``stop()``: the counts of a storm's last minute)."""
    _CLIENT_MISTAKES.flush(all_windows=True)


def _parser_detail(exc: BaseException) -> str:
    """What aiohttp's parser said was wrong with a request, in one line of at most 300
    characters (its message may quote the whole line, and mark a place in it with ``^``)."""
    what = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    lines = [line.strip() for line in str(what).splitlines()]
    return " ".join(line for line in lines if line and set(line) != {"^"})[:300]


_HALF_CLOSED: set[int] = set()
"""The ids of the connections (``JsonParserErrors``) kept open after their client's end of
input to send the answer (``eof_received``); each leaves at its ``connection_lost``, before
its id can be another's. (aiohttp's handler takes no attribute nor weak reference.)"""


class JsonParserErrors(web.RequestHandler):
    """The HTTP connection protocol of the node's listener (``capped_connections``): aiohttp's
    ``RequestHandler``, whose answer to a request its parser refuses (``handle_error`` with
    status 400 and an ``HttpProcessingError``: a malformed request line or header, a request
    line over ``MAX_REQUEST_LINE``, a header over ``MAX_HEADER_FIELD``) is the API's JSON
    ``{"error": ...}`` (DESIGN section 8), not aiohttp's plain text, which clients that parse
    every error as JSON could not read. Everything else is aiohttp's: the parsing, the log
    record (``SERVER_LOG``), the closed connection, and every other answer.

    NB: aiohttp has no parameter for the class of its connection protocol, nor a hook for
    this answer (aio-libs/aiohttp#3287): ``adopt`` makes the ``RequestHandler`` that
    ``web.Server`` made one of these (no state is added: ``__slots__`` is empty), and leaves
    any other protocol as it is (an aiohttp that made another would answer in plain text
    again, which ``tests/kv/test_http_bad_input.py`` would tell)."""

    __slots__ = ()

    @classmethod
    def adopt(cls, handler: asyncio.BaseProtocol) -> asyncio.BaseProtocol:
        """``handler``, made one of these when it is exactly aiohttp's ``RequestHandler`` and
        its class can change (an aiohttp whose handler refused, a compiled type, would
        otherwise fail every connection here: it answers in plain text instead)."""
        if type(handler) is web.RequestHandler:
            try:
                handler.__class__ = cls
            except TypeError:
                pass
        return handler

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """aiohttp's answer (it logs the error, and raises when an answer was sent already),
        in JSON for a request its parser refused."""
        answer = super().handle_error(request, status, exc, message)
        if status != 400 or not isinstance(exc, HttpProcessingError):
            return answer
        return malformed_http_answer(exc)

    def eof_received(self) -> bool | None:  # type: ignore[override]  # (asyncio.Protocol's; aiohttp says None)
        """The client shut its sending side (``shutdown(SHUT_WR)``, as ``nc -N`` does after
        its request): the request it sent is still answered, then the connection closes.
        aiohttp's own returns ``None``, which closes the transport at once: a ``PUT`` was
        applied and its client read no answer, so it could not tell that its write was done
        (aio-libs/aiohttp#3659). A connection that waits for a request (none will come), one
        aiohttp or the node's stop closes already (``StopRetire``: it closes at the client's
        end), one that never received a request, and one whose request body the end cut short (nothing of it is done: its read
        fails as when the connection is lost) still close at once.

        Only the request being handled, or the first one queued, is answered: ``_close``
        ends the connection after it (requests pipelined behind it are not handled, so
        nothing of them is done). Reads aiohttp's internals as ``StopRetire.idle`` does; an
        aiohttp without them closes at once, as it did."""
        if id(self) in _HALF_CLOSED and getattr(self, "_close", False):
            # Called again as reading resumes (uvloop, as the body is read): kept open. (``_close``
            # too: an id left in the set by a handler whose ``connection_lost`` never ran, its
            # loop closed under it, may be this one's.)
            return True
        try:
            waiter = self._waiter
            idle = waiter is not None and not waiter.done() and not self._messages
            # No request received at all (uvloop: the end can come before the handler's
            # task has begun to wait for one, with no waiter yet): nothing to answer either.
            unused = self._request_count == 0
            if self._force_close or idle or unused:
                return None
            payload = self._pending_body()
            if payload is None and self._close:
                return None  # closing, and serving no request: at the client's end, as before
        except AttributeError:
            return None
        if payload is not None and not payload.is_eof():
            return None  # its body can never end: closed at once, as a lost connection
        self._close = True  # answer it, then close: the client reads the answer, then the end
        _HALF_CLOSED.add(id(self))
        if payload is None:
            # Taken from the queue, its handler's task not begun yet (it is scheduled
            # already): its body is known once it has.
            asyncio.get_running_loop().call_soon(self._unless_body_cut_short)
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        _HALF_CLOSED.discard(id(self))
        super().connection_lost(exc)

    def _pending_body(self) -> Any:
        """The body (aiohttp's ``StreamReader``) of the request being handled, else of the
        first one queued; ``None`` when neither is known."""
        if self._current_request is not None:
            return self._current_request.content
        if self._messages:
            return self._messages[0][1]
        return None

    def _unless_body_cut_short(self) -> None:
        """Close the connection at once (as a lost one) if the request ``eof_received`` kept
        it open for has a body that did not arrive whole: it never will, and its handler
        would otherwise wait out the body's deadline (30 s and more) for it."""
        payload = self._pending_body()
        if payload is not None and not payload.is_eof():
            self.force_close()


def malformed_http_answer(exc: HttpProcessingError) -> web.Response:
    """The 400 of a request aiohttp's parser refused: the API's JSON error naming what was
    wrong and the limits, with the connection closed (the rest of what the client sent is
    not read: where the next request would begin is unknown)."""
    error = (f"not a well-formed HTTP request: {_parser_detail(exc)} (a request line is at most {MAX_REQUEST_LINE} "
             f"bytes, a header name or value at most {MAX_HEADER_FIELD} bytes; a key is at most {MAX_KEY_BYTES} "
             "bytes of UTF-8)")
    answer = web.json_response({"error": error}, status=400)
    answer.force_close()
    return answer


class _MalformedHttpInOneLine(logging.Filter):
    """Logs a request aiohttp's parser refused as the client's mistake it is: one line at
    INFO (or the record's own lower level), not an ERROR with aiohttp's traceback. Records
    of any other error pass unchanged. (aiohttp answers such a request before any handler or
    middleware runs: ``JsonParserErrors`` makes that answer the API's JSON 400.)"""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self._logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, (HttpProcessingError, RequestPayloadError)):
            return True
        try:  # (a filter that raised would fail the logging call, and aiohttp's answer with it)
            record.args = (record.getMessage(), _parser_detail(exc))
        except Exception:  # noqa: BLE001 - then the record is logged as it came
            return True
        record.msg = "%s: not a well-formed HTTP request (answered 400, connection closed): %s"
        record.exc_info = record.exc_text = record.stack_info = None
        record.levelno = min(record.levelno, logging.INFO)
        record.levelname = logging.getLevelName(record.levelno)
        if not self._logger.isEnabledFor(record.levelno):  # (the logger let it through as an ERROR)
            return False
        return _CLIENT_MISTAKES.allow("malformed HTTP requests", record.getMessage())


SERVER_LOG = logging.getLogger(f"{__name__}.server")
"""The logger of the HTTP server under the API (aiohttp's ``logger`` parameter, given to its
``AppRunner`` in ``KvNode.start``): a request it cannot parse (a malformed request line,
header, ``Content-Length`` or chunk) is logged in one line at INFO, other errors as aiohttp
logs them."""
SERVER_LOG.addFilter(_MalformedHttpInOneLine(SERVER_LOG))

NODE_KEY: web.AppKey[KvNode] = web.AppKey("kv_node", KvNode)
"""The ``KvNode`` an application serves (``app[NODE_KEY]``): a ``weakref.proxy`` of it
(``make_app``), which reads and calls as the node does."""

MAX_REQUEST_LINE = 3 * MAX_KEY_BYTES + 1024
"""The longest request line the server reads (aiohttp's ``max_line_size``; its default, 8190,
is too short): every byte of a key may take three characters percent-encoded, so a key of
``MAX_KEY_BYTES`` fits with the method, ``/kv/``, ``/cas``, the query and the version."""

MAX_HEADER_FIELD = 8190
"""The longest header name or value the server reads (aiohttp's ``max_field_size``, at its
default): the API reads no header that long (the longest it reads are short tokens and
numbers); a proxy's or a browser's cookies fit."""


BODY_GRACE = 30.0
"""Seconds a request body may take to arrive beyond its share of ``BODY_MIN_RATE``."""

BODY_MIN_RATE = 16 * 1024
"""Bytes per second a request body must arrive at, on average, after ``BODY_GRACE``: a body
of ``n`` bytes (its ``Content-Length``, or ``max_body`` for a chunked one) has ``BODY_GRACE
+ n / BODY_MIN_RATE`` seconds in all (94 s for the default ``max_body`` of 1 MiB). Otherwise
the request is answered ``408`` and its connection closed: a client that sends the headers
and then trickles the body, or stops, held its handler and connection for good (and so did
a bad chunk size arriving after the headers, which aiohttp's compiled parser drops without
an error)."""


HTTP_IDLE_TIMEOUT = 75.0
"""Seconds an HTTP connection may stay idle (no request being read, handled or queued on it):
from its accept until its first request comes, and from each answer until the next request.
``IdleConnections`` then answers it with an unsolicited ``408`` and closes it, between
``HTTP_IDLE_TIMEOUT`` and 1.5 times it after it became idle (aiohttp's own keep-alive timer,
which closes a connection without a word, is set to twice it, a backstop only). A connection
that never sent a request, or only part of one's head, was held for good (aiohttp up to 3.14.0
at least arms no timer before a first request; its keep-alive default is an hour), an open file
descriptor each: a few hundred such connections (a client that leaks its connections, a
scanner) took the process's last descriptors, and the node stopped ("Too many open files"
building a snapshot)."""


IDLE_NOT_READ = ("this connection was idle too long and the node closed it: the request sent on it was not read, "
                 "nothing was done; send it again on a new connection")
"""The ``error`` of the 408 with which ``IdleConnections`` closes an idle connection."""


class IdleConnections:
    """Closes the HTTP connections of ``server`` (the ``AppRunner``'s ``web.Server``) that
    stay idle ``timeout`` seconds, so that no request a client sends on one is lost.

    Checked every ``timeout / 4`` seconds by a timer on the loop (``start`` / ``close``). A
    connection is idle when it waits for a request with none being read, handled or queued
    (``StoppingConnections.idle``: after its accept, and after each answer); a request that
    starts on it (``request_started``, called by the middleware for every request) ends its
    idle time. One that a sweep finds idle ``timeout`` seconds after a sweep first found it so,
    with no request started since, is *retired* as a stopping node retires its idle
    connections (``StoppingConnections.retire``): an unsolicited ``408`` (JSON ``{"error":
    IDLE_NOT_READ, "leader_id": ...}``, ``Connection: close``), a FIN, and nothing read on it
    again. A client that sent a request at that moment (its pool reused the connection just
    as it was closed) reads the 408 as its answer and knows the request was not read: with a
    plain close, aiohttp's keep-alive timer's way, the request met a closed connection (a
    reset) and the client could not tell whether a write it sent was applied. A retired
    connection is closed at the first sweep that finds it *settled* (nothing left to send,
    and the client closed it or its kernel acknowledged the 408 and the FIN:
    ``StoppingConnections.delivered``), and cut at the second sweep after its retirement
    otherwise (``transport.abort()``): a client gone,
    or one not reading (its window full: a slow reader of a large answer, which the node
    counts as idle once the answer is written). The cut releases the descriptor and loses
    nothing sent: the socket is closed without a reset (nothing unread on it, no
    ``SO_LINGER`` 0), so the kernel still delivers the rest of the answer, the 408 and the
    FIN to a client that reads them later (``tests/kv/test_idle_kept_alive.py``).

    Each sweep that retires connections on which no request ever came (a leaked connection, a
    scanner) logs one INFO line with their number; connections idle after an answer (a
    client's pool) are routine: DEBUG.

    Invariants (after each sweep): ``_seen`` maps each open, idle, unretired connection to the
    loop time at which a sweep first saw it idle with no request started since; ``_served``
    holds only open connections on which a request started; ``_retired`` maps each open
    connection this retired to its transport and the sweep count at its retirement."""

    def __init__(self, server: web.Server, timeout: float = HTTP_IDLE_TIMEOUT,
                 leader_id: Callable[[], int | None] = lambda: None) -> None:
        self._server = server
        self.timeout = timeout
        """Seconds a connection may stay idle."""
        self._leader_id = leader_id
        self._seen: dict[Any, float] = {}
        self._served: set[Any] = set()
        self._retired: dict[Any, tuple[Any, int]] = {}
        self._sweeps = 0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def server(self) -> web.Server:
        """The ``web.Server`` whose connections this sweeps."""
        return self._server

    def start(self) -> None:
        """Start sweeping, on the running loop."""
        self._timer = asyncio.get_running_loop().call_later(self.timeout / 4, self._tick)

    def close(self) -> None:
        """Stop sweeping (the connections stay as they are; ``retired`` says which this
        retired). Idempotent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def request_started(self, connection: Any) -> None:
        """A request started on ``connection`` (``request.protocol``): its idle time ends."""
        self._served.add(connection)
        self._seen.pop(connection, None)

    def retired(self) -> dict[Any, Any]:
        """The open connections this retired and not closed yet -> their transports (a
        stopping node takes them as retired: ``StoppingConnections``)."""
        return {c: t for c, (t, _n) in self._retired.items()}

    def _tick(self) -> None:
        self._timer = None
        try:
            _CLIENT_MISTAKES.flush()
            self.sweep()
        finally:
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self.timeout / 4, self._tick)

    def sweep(self) -> int:
        """Close the retired connections that settled (cut those retired two sweeps ago),
        then retire the connections a sweep first found idle ``timeout`` seconds ago or more
        with no request started since; return how many this retired."""
        now = asyncio.get_running_loop().time()
        self._sweeps += 1
        conns = set(self._server.connections)
        self._served.intersection_update(conns)
        for conn, (transport, at) in list(self._retired.items()):
            if conn not in conns:
                del self._retired[conn]
            elif StoppingConnections.delivered(transport):
                del self._retired[conn]
                transport.close()
            elif self._sweeps - at >= 2:
                del self._retired[conn]
                transport.abort()
        seen = self._seen
        self._seen = {c: seen.get(c, now) for c in conns
                      if c not in self._retired and StoppingConnections.idle(c)}
        stale = [c for c, t in self._seen.items() if now - t >= self.timeout]
        if not stale:
            return 0
        leader_id = self._leader_id()
        never = 0
        for c in stale:
            del self._seen[c]
            never += c not in self._served
            self._retired[c] = (StoppingConnections.retire(c, leader_id, IDLE_NOT_READ), self._sweeps)
        if never:
            log.info("closed %d HTTP connection(s) on which no request came within %gs", never, self.timeout)
        if len(stale) > never:
            log.debug("answered 408 and closed %d HTTP connection(s) idle for %gs after an answer",
                      len(stale) - never, self.timeout)
        return len(stale)


STOPPING_NOT_READ = ("the node is stopping and closed this connection: the request sent on it was not read, "
                     "nothing was done; send it again on a new connection (to another node)")
"""The ``error`` of the 408 a stopping node sends on each idle connection as it closes it
(``StoppingConnections``)."""


def _tcp_unacknowledged(sock: Any) -> int | None:
    """Bytes ``sock`` sent that its peer has not acknowledged yet, the FIN counting one
    (Linux ``SIOCOUTQ``); ``None`` where that cannot be asked."""
    try:
        import fcntl
        import struct
        import termios

        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))  # (= SIOCOUTQ)
        return int(struct.unpack("i", raw)[0])
    except (ImportError, AttributeError, OSError, ValueError):
        return None


class StoppingConnections:
    """How a stopping node ends its HTTP connections (``KvNode._drain_http``) so that no
    request a client sends on one is lost, however late the client sends it.

    The race it closes: a client keeps a connection alive after an answer and later sends
    its next request on it. Were the node to close the connection meanwhile, the request
    would meet a closed connection, and the client could not tell whether the node read it
    (a write's outcome unknown: the node might have applied it, then died). So each
    connection is ended only at a point where the client can tell:

    - A connection with a request being handled (or read, or queued behind one) is left to
      finish it: every answer of a stopping node carries ``Connection: close``, and aiohttp
      closes the connection after it.
    - An idle connection (its handler waits for the next request, none is queued) is
      *retired* (``retire_idle``): the node writes an unsolicited ``408 Request Timeout``
      (JSON ``{"error": STOPPING_NOT_READ, "leader_id": ...}``, ``Connection: close``) and
      from then on never reads a request on it: whatever comes is dropped unparsed, so any
      request the client sends there, before or after it sees the 408, was not read. A
      client reads the 408 as the answer to that request (RFC 9110 §15.5.9: "If the client
      has an outstanding request in transit, it MAY repeat that request"), or finds the
      connection closed before it uses it and opens a new one. The node half-closes the
      connection after the 408 (a FIN) and keeps reading and dropping, so that closing it
      never resets it with the 408 unread (a close with unread data sends a reset, which
      discards what was not delivered yet).
    - A retired connection is *settled* once the client closed it or its kernel
      acknowledged the 408 and the FIN (``_tcp_unacknowledged`` is 0): the answer is then
      in the client's receive buffer, where a reset no longer destroys it, and the node may
      close the socket. Where that cannot be asked, only the client's close settles it.

    No timing is involved: a client stalled for any time still reads the 408, and the stop
    does not wait for clients that do not send. Uses aiohttp's ``RequestHandler`` internals
    (``_waiter``, ``_messages``: how its own keep-alive timer tells an idle connection;
    ``tests/kv/test_stop_kept_alive.py`` checks them).

    Invariant: ``_retired`` holds only connections this retired that are still open in
    ``server.connections`` (pruned at each ``settled``)."""

    def __init__(self, server: web.Server, retired: dict[Any, Any] | None = None) -> None:
        """``retired``: connections already retired (by ``IdleConnections``) -> their
        transports, taken as this one's."""
        self._server = server
        self._retired: dict[Any, Any] = dict(retired or {})  # connection -> its transport, as it was retired

    @staticmethod
    def idle(conn: Any) -> bool:
        """Whether ``conn`` (a ``RequestHandler``) waits for a request with none queued, none
        being handled, and is not closing."""
        # Read plainly, not with getattr's default: an aiohttp that renamed one raises here
        # (logged at ERROR by the stop; tests/kv/test_stop_adversarial.py), where a default
        # passed every connection for busy, and the stop then closed them under their clients.
        waiter = conn._waiter
        return (waiter is not None and not waiter.done() and not conn._messages and not conn._force_close
                and not conn._close and conn.transport is not None)

    def retire_idle(self, leader_id: int | None) -> int:
        """Retire every idle connection not retired yet (see the class docstring), the 408
        naming ``leader_id``; return how many."""
        n = 0
        for conn in list(self._server.connections):
            if conn in self._retired or not self.idle(conn):
                continue
            self._retired[conn] = self.retire(conn, leader_id, STOPPING_NOT_READ)
            n += 1
        if n:
            log.debug("answered 408 and half-closed %d idle HTTP connection(s): the node is stopping", n)
        return n

    @staticmethod
    def retire(conn: Any, leader_id: int | None, error: str) -> Any:
        """Retire ``conn`` (a ``RequestHandler`` with an open transport, serving no request
        now): from here aiohttp drops what arrives unparsed (``data_received`` with
        ``_close`` set) and its handler, if it waits for a request, stops waiting (the waiter
        is cancelled); the 408 (its JSON ``error`` and ``leader_id``) is written and the
        connection half-closed. Return its transport."""
        body = json.dumps({"error": error, "leader_id": leader_id}).encode()
        answer = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json; charset=utf-8\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        transport = conn.transport
        assert transport is not None
        conn.close()
        try:
            transport.write(answer)
            if transport.can_write_eof():  # (the HTTP port speaks plain TCP: always)
                transport.write_eof()  # FIN after the 408; the transport closes at the client's FIN
            else:
                transport.close()
        except OSError:  # the client reset the connection (not seen by the loop yet): it is gone
            transport.abort()
        return transport

    @staticmethod
    def delivered(transport: Any) -> bool:
        """Whether the 408 and the FIN written on ``transport`` reached the client's kernel
        (or the client closed its side), so that closing the socket cannot lose them."""
        if transport.get_write_buffer_size():
            return False
        if transport.is_closing():
            return True  # the client closed its side: the transport closes, the 408 sent
        sock = transport.get_extra_info("socket")
        return sock is not None and _tcp_unacknowledged(sock) == 0

    def settled(self) -> bool:
        """Whether every open connection is retired and settled (see the class docstring);
        connections still serving a request, or not idle yet, are not."""
        open_now = set(self._server.connections)
        for conn in [c for c in self._retired if c not in open_now]:
            del self._retired[conn]
        for conn in open_now:
            transport = self._retired.get(conn)
            if transport is None:
                return False  # serving a request (its answer closes it), or idle since this look
            if not self.delivered(transport):
                return False
        return True


MAX_HTTP_CONNECTIONS = 512
"""The most HTTP connections a node holds open at once (fewer under a low descriptor limit:
``http_connection_limit``, ``connection_limits``). One more is answered ``503`` with a JSON error saying so
(``Connection: close``) and closed once the client closed it, within ``REFUSED_LINGER``
(``capped_connections``). Each connection takes a
file descriptor, and the node's stores need descriptors too: a burst of connections that
sent nothing (250 to a ``serve`` limited to 256 descriptors) took the last ones, and the
node's next file failed: its snapshot build hit "Too many open files" and the node stopped.
``HTTP_IDLE_TIMEOUT`` closes such connections, but only after it has passed."""


def http_connection_limit() -> int:
    """How many HTTP connections a node holds open at once: ``MAX_HTTP_CONNECTIONS``, but at
    most half of the process's soft limit of open files (``RLIMIT_NOFILE``), so that the
    stores, the raft port and the rest keep the other half."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_HTTP_CONNECTIONS
    return max(1, min(MAX_HTTP_CONNECTIONS, soft // 2))


FILES_RESERVE = 16
"""Descriptors a node leaves to its own later files (its stores' new files, a snapshot
being built, its connections to its peers) beyond those it holds when it starts listening
and those its two ports may hold (``connection_limits``)."""


def open_descriptors() -> int | None:
    """How many file descriptors the process holds (``/proc/self/fd``, ``/dev/fd``), or
    ``None`` where it cannot tell."""
    for d in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(d)) - 1  # (less the listing's own)
        except OSError:
            continue
    return None


def connection_limits(in_use: int | None) -> tuple[int, int]:
    """The HTTP and raft connection limits of a node holding ``in_use`` descriptors when it
    starts listening: ``http_connection_limit()`` and ``tcp_connection_limit()``, but at
    most half and a quarter (at least 1 and 8, as ``tcp_connection_limit``) of the descriptors its soft limit leaves
    beyond ``in_use`` and ``FILES_RESERVE``. Those fractions of the limit itself did not
    count what the node holds (40 descriptors, its stores and runtime): under ``ulimit -n
    64``, 36 HTTP and 20 raft connections that sent nothing took the last ones, and the
    node stopped at its next snapshot build ("Too many open files"). ``in_use`` ``None``:
    the fractions of the limit alone."""
    http, raft = http_connection_limit(), tcp_connection_limit()
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if in_use is None or soft == resource.RLIM_INFINITY:
        return http, raft
    spare = soft - in_use - FILES_RESERVE
    return min(http, max(1, spare // 2)), min(raft, max(8, spare // 4))


REFUSED_LINGER = 1.0
"""Seconds a connection over the limit is kept at most after its ``503``, reading (and
discarding) what the client sends until the client closes it (``_Refused``). Closed right
after the ``503``, a request still arriving met a closed connection: the node's kernel
answered it with a reset, and a client writing its body then (``urllib``, ``http.client``:
the head, then the body) failed with "Broken pipe" or "Connection reset by peer", its
``503`` unread."""


def refused_linger_limit(limit: int) -> int:
    """How many refused connections linger at once (``REFUSED_LINGER``) beside the ``limit``
    served ones: a sixteenth of it, at least 1. One more refused meanwhile is closed right
    after its ``503`` (it may see a reset), so that a burst of refusals holds few descriptors."""
    return max(1, limit // 16)


class _Refused(asyncio.Protocol):
    """A connection over the limit: answered ``503`` before its request comes, the sending
    side shut (``write_eof``), then read and discarded until the client closes it, or for
    ``REFUSED_LINGER`` seconds at most; then closed. Reading the request is what lets the
    client read the ``503``: a connection closed before its request is read is reset. While
    ``max_lingering`` refused connections linger already (``lingering``), one more is closed
    right after its ``503``."""

    def __init__(self, answer: bytes, lingering: set[_Refused], max_lingering: int) -> None:
        self._answer = answer
        self._lingering = lingering
        self._max_lingering = max_lingering
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not ``asyncio.WriteTransport`` instances: no isinstance)
        writer = cast(asyncio.WriteTransport, transport)
        writer.write(self._answer)
        if len(self._lingering) >= self._max_lingering or not writer.can_write_eof():
            transport.close()
            return
        writer.write_eof()
        self._lingering.add(self)
        self._timer = asyncio.get_running_loop().call_later(REFUSED_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # the request, discarded

    def eof_received(self) -> bool:
        return False  # the client closed its side: the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self._lingering.discard(self)
        if self._timer is not None:
            self._timer.cancel()


def capped_connections(server: web.Server, limit: int,
                       accept_errors: AcceptErrors | None = None) -> Callable[[], asyncio.BaseProtocol]:
    """The protocol factory of the node's HTTP listener: ``server``'s (a connection served as
    usual) while it holds fewer than ``limit`` connections, else a protocol that answers
    ``503`` and closes the connection once the client has closed its side, or after
    ``REFUSED_LINGER`` seconds (``_Refused``; at most ``refused_linger_limit(limit)`` of them
    linger at once). The refusals are logged through a ``FailureLog``: a WARNING at the
    first, again every 5 minutes while they go on, and an INFO once a connection is taken
    again. ``accept_errors``: the listener's, told of every connection accepted."""
    body = json.dumps({"error": f"the node holds {limit} HTTP connections, its limit: retry later, or close "
                                "idle ones (MAX_HTTP_CONNECTIONS)"}).encode()
    answer = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    refusals = FailureLog(log, "HTTP server", unit="refused connection")
    lingering: set[_Refused] = set()
    max_lingering = refused_linger_limit(limit)

    def protocol() -> asyncio.BaseProtocol:
        now = asyncio.get_running_loop().time()
        if accept_errors is not None:
            accept_errors.accepted()
        if len(server.connections) >= limit:
            refusals.failed(now, "too many connections",
                            f"it holds {limit} HTTP connections, its limit: a new one is answered 503 and closed")
            return _Refused(answer, lingering, max_lingering)
        if refusals.failing:
            refusals.cleared(now, "takes HTTP connections again")
        return JsonParserErrors.adopt(server())

    return protocol


# -- request bodies ------------------------------------------------------------------------------


class BodyTimeout(Exception):
    """The request body did not arrive in time (``BODY_GRACE``; answered 408)."""


MAX_BODY_BYTES_IN_FLIGHT = 64 * 1024 * 1024
"""The request bodies a node's handlers hold at once, in bytes (each counted at its
``Content-Length``, a chunked one at ``max_body``): at least ``max_body``, so that a body of
the largest size allowed always fits (``body_budget``). A request whose body does not fit
waits, its body unread, until the requests before it are answered (in the order they
came), for ``BODY_BUDGET_WAIT`` seconds at most, then gets ``503``. Without a bound, 512
connections (``MAX_HTTP_CONNECTIONS``) each sending a body of 1 MB made a leader read,
decode and encode 512 MB at once: its process grew to 2.1 GB and its event loop stalled
long enough that it lost its leadership within a second, its writes answered 503 or
redirected."""

BODY_BUDGET_WAIT = 30.0
"""Seconds a request waits at most for room in ``MAX_BODY_BYTES_IN_FLIGHT`` before it is
answered ``503`` (nothing was done: the client may retry)."""


ADMIN_BODY_EXEMPT_BYTES = 16 * 1024
"""A ``/cluster/...`` request (init, learners, members, transfer) whose ``Content-Length``
is at most this many bytes takes no room in ``MAX_BODY_BYTES_IN_FLIGHT``: an operator's
membership change or transfer must not wait behind a flood of PUTs (waiting its turn, it
waited up to ``BODY_BUDGET_WAIT`` and got 503, just when the operator acts on the
overload). Their bodies are a few hundred bytes; at most ``MAX_HTTP_CONNECTIONS`` of them at
once hold 8 MiB at the most."""


def body_budget(max_body: int) -> int:
    """The budget of request-body bytes of a node whose largest body is ``max_body`` bytes:
    ``MAX_BODY_BYTES_IN_FLIGHT``, but at least ``max_body``."""
    return max(MAX_BODY_BYTES_IN_FLIGHT, max_body)


MAX_ANSWER_BYTES_WAITING = 64 * 1024 * 1024
"""The bytes of large values a node holds in answers not sent yet (``AnswerBytes``: from the
answer's making until it is written out, or dropped), past which a ``GET`` of a value of
``LARGE_ANSWER`` bytes or more is refused: ``503`` with ``Retry-After``, the value not copied
into one more answer. A client that reads takes its answer at once; one that does not read
holds its answer, once its socket's kernel buffer is full, until the idle sweep cuts it (75 s
or more). Without a bound, 300 connections each sending five ``GET``s of a 1 MB value and
reading nothing grew a ``serve`` process from 70 MB to 450 MB (512 connections, the cap, and
4 MiB values, ``--max-body`` raised: gigabytes)."""

LARGE_ANSWER = 64 * 1024
"""Values of at least this many bytes are answered as ``SentValue``s, counted in
``AnswerBytes`` and (a ``GET``'s) refused past ``MAX_ANSWER_BYTES_WAITING``; a smaller one is
answered plainly, always (not the memory the bound is for, and no cost on the hot path). A
CAS's answer of this size or more (its ``current``) is a ``SentValue`` too, never refused:
its command was done when its size is known."""


class AnswerBytes:
    """The bytes of values held in answers not sent yet (``SentValue``), one per application
    (``app[ANSWERS_KEY]``). Invariant: ``held`` is the sum of the sizes of the ``SentValue``s
    made and neither written out nor collected."""

    def __init__(self) -> None:
        self.held = 0

    def take(self, n: int) -> None:
        self.held += n

    def release(self, n: int) -> None:
        self.held -= n


ANSWERS_KEY: web.AppKey[AnswerBytes] = web.AppKey("kv_answer_bytes", AnswerBytes)
"""The ``AnswerBytes`` of an application's value answers (``app[ANSWERS_KEY]``; ``make_app``)."""


def check_answer_room(answers: AnswerBytes, size: int) -> None:
    """``Overloaded`` when an answer of ``size`` bytes (``LARGE_ANSWER`` or more) would take the
    values held in answers not sent yet past ``MAX_ANSWER_BYTES_WAITING``."""
    if answers.held + size > MAX_ANSWER_BYTES_WAITING:
        raise Overloaded(
            f"the answers of this node wait unsent ({answers.held} bytes, waiting for clients to read them): one "
            f"of {size} bytes more would pass the bound of {MAX_ANSWER_BYTES_WAITING} bytes "
            "(MAX_ANSWER_BYTES_WAITING); nothing was done: retry")


class SentValue(web.Response):
    """A value's answer, counted in ``answers`` (``AnswerBytes``) until it is written out or
    dropped, which lets go of its body once it is sent. aiohttp's connection handler keeps a
    keep-alive connection's last response until the next request on it comes (a local of its
    loop), so the body of every answer stayed in memory as long as its connection stayed
    open: 300 pooled connections that last read a 1 MB value held 300 MB, for the 75 s or
    more until the idle sweep closed them (``IdleConnections``)."""

    def __init__(self, answers: AnswerBytes, body: bytes, **kwargs: Any) -> None:
        super().__init__(body=body, **kwargs)
        answers.take(len(body))
        # Released once: when the answer is written out, or when it is collected unsent (a
        # client gone before it was prepared: aiohttp then never writes it).
        self._counted = weakref.finalize(self, answers.release, len(body))

    async def write_eof(self, data: bytes = b"") -> None:
        try:
            await super().write_eof(data)
        finally:
            self.body = None  # (sent, or never to be: the transport holds what is unsent)
            self._counted()


class Overloaded(Exception):
    """A request waited ``BODY_BUDGET_WAIT`` seconds for room among the request bodies the
    node holds (``MAX_BODY_BYTES_IN_FLIGHT``) and got none: answered ``503``, nothing done."""


class BodyBudget:
    """Bytes of request bodies the node's handlers hold at once: at most ``limit``.

    ``acquire(n)`` takes ``n`` bytes (at most ``limit``: a body is never refused for its
    size here, ``max_body`` does that), waiting while they do not fit; ``release(n)`` gives
    them back. Waiters are served in the order they came: a small body does not overtake a
    large one that waits (which could otherwise wait for ever under a stream of small ones).
    Invariant: ``held`` is the sum of the sizes acquired and not released, at most
    ``limit``; a waiter in ``_waiters`` holds nothing yet, and one whose future is done
    (cancelled, its task not run since) is never served (``_grant`` drops it)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        # The largest ``held`` was (for tests and the status).
        self.peak = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._log = FailureLog(log, "HTTP server", unit="waiting request")

    @property
    def waiting(self) -> int:
        """How many requests wait for room."""
        return len(self._waiters)

    async def acquire(self, n: int) -> int:
        """Take ``min(n, limit)`` bytes, once they fit and every earlier waiter is served;
        return the bytes taken (what ``release`` must be given). Cancelled (a timeout, the
        client gone) while waiting: nothing is held."""
        n = min(n, self.limit)
        if not self._waiters and self.held + n <= self.limit:
            self._take(n)
            return n
        loop = asyncio.get_running_loop()
        self._log.failed(loop.time(), "bodies over the budget",
                         f"request bodies of {self.held} bytes are being handled, the limit (MAX_BODY_BYTES_IN_FLIGHT): "
                         f"a new one waits for room, {BODY_BUDGET_WAIT:.0f}s at most, then gets 503")
        entry = (n, loop.create_future())
        self._waiters.append(entry)
        try:
            await entry[1]
        except BaseException:
            if entry[1].done() and not entry[1].cancelled():
                self.release(n)  # granted, then cancelled before it ran: give it back
            else:
                if entry in self._waiters:  # (``_grant`` drops a cancelled one it meets)
                    self._waiters.remove(entry)
                self._grant()  # the head may have changed
            raise
        return n

    def release(self, n: int) -> None:
        """Give back ``n`` bytes taken by ``acquire``; serve the waiters that fit now."""
        self.held -= n
        self._grant()
        if not self._waiters and self._log.failing:
            self._log.cleared(asyncio.get_running_loop().time(), "request bodies fit the budget again")

    def _take(self, n: int) -> None:
        self.held += n
        if self.held > self.peak:
            self.peak = self.held

    def _grant(self) -> None:
        """Serve the waiters at the head of the queue whose bytes fit, in order."""
        waiters = self._waiters
        while waiters:
            n, fut = waiters[0]
            if fut.done():
                # Cancelled (its timeout, the server stopping), its task not run since: it
                # holds nothing and is not served (setting its result raised
                # InvalidStateError, in the release of another request, and its bytes stayed
                # taken for good).
                waiters.popleft()
                continue
            if self.held + n > self.limit:
                return
            waiters.popleft()
            self._take(n)
            fut.set_result(None)


BUDGET_KEY: web.AppKey[BodyBudget] = web.AppKey("kv_body_budget", BodyBudget)
"""The ``BodyBudget`` of an application's request bodies (``app[BUDGET_KEY]``; ``make_app``)."""


async def _room_for_body(request: web.Request) -> int:
    """Wait for room for the request's body among those the node holds (``BodyBudget``;
    its ``Content-Length``, a chunked one counted at ``max_body``); the bytes taken, to be
    released once the request is answered. ``Overloaded`` after ``BODY_BUDGET_WAIT``."""
    max_body = request.app[NODE_KEY].opts.max_body
    size = min(request.content_length if request.content_length is not None else max_body, max_body)
    if size <= 0:
        return 0
    if (request.content_length is not None and size <= ADMIN_BODY_EXEMPT_BYTES
            and request.path.startswith("/cluster/")):
        return 0  # an operator's request (ADMIN_BODY_EXEMPT_BYTES)
    budget = request.app[BUDGET_KEY]
    try:
        async with asyncio.timeout(BODY_BUDGET_WAIT):
            return await budget.acquire(size)
    except TimeoutError:
        raise Overloaded(f"the node is overloaded: it handles request bodies of {budget.held} bytes, its limit "
                         f"(MAX_BODY_BYTES_IN_FLIGHT), and this request waited {BODY_BUDGET_WAIT:.0f}s for room; "
                         "nothing was done: retry later") from None


def _body_deadline(request: web.Request, most: int | None = None) -> float:
    """Seconds the request's body may take to arrive: ``BODY_GRACE`` + its size at
    ``BODY_MIN_RATE``, its size counted at ``most`` bytes at the most (default: ``max_body``;
    a chunked body counts as ``most``)."""
    # At most the largest body allowed (or dropped, ``_drop_limit``): a Content-Length of
    # 10**18 must not buy a trickling client a deadline of ages (the body is refused 413
    # once it passes max_body anyway).
    if most is None:
        most = request.app[NODE_KEY].opts.max_body
    size = min(request.content_length if request.content_length is not None else most, most)
    return BODY_GRACE + size / BODY_MIN_RATE


def _drop_limit(request: web.Request) -> int:
    """Bytes of a request's body the node reads and drops at most after an answer given
    before the body was all read (``_answer_then_drop_body``): twice ``max_body``.

    More than ``max_body``, so that a client that sends a body somewhat over the limit whole
    before it reads the answer (``http.client``, ``requests``) reads its 413, not a broken
    pipe: closing a connection with unread data resets it. Bounded, so that a body declared
    (or chunked) far over the limit does not keep the node reading and dropping data."""
    return 2 * request.app[NODE_KEY].opts.max_body


def _declares_too_large(request: web.Request) -> bool:
    """Whether the request's ``Content-Length`` is over ``max_body``: it is answered 413
    before its body is read (a chunked body is refused once it passes ``max_body``)."""
    length = request.content_length
    return length is not None and length > request.app[NODE_KEY].opts.max_body


def _too_large(max_body: int) -> web.Response:
    """The 413 of a body over ``max_body``, saying the limit and where it is set."""
    return _error(413, f"the request body is over {max_body} bytes (serve --max-body, cluster up --max-body)")


async def _read(request: web.Request) -> bytes:
    """The request's body, within ``_body_deadline``; else ``BodyTimeout``. 413
    (``HTTPRequestEntityTooLarge``) above ``client_max_size``."""
    limit = _body_deadline(request)
    try:
        async with asyncio.timeout(limit):
            return await request.read()
    except TimeoutError:
        raise BodyTimeout(f"the request body did not arrive within {limit:.0f}s") from None


class _Member(msgspec.Struct, forbid_unknown_fields=True):
    raft_addr: str
    http_addr: str


class _InitBody(msgspec.Struct, forbid_unknown_fields=True):
    members: dict[str, _Member]


class _LearnerBody(msgspec.Struct, forbid_unknown_fields=True):
    id: int
    raft_addr: str
    http_addr: str


class _MembersBody(msgspec.Struct, forbid_unknown_fields=True):
    voters: list[int]
    retain: bool = False
    allow_lagging: bool = False  # skip the caught-up check (``Raft.change_membership``)


class _TransferBody(msgspec.Struct, forbid_unknown_fields=True):
    to: int


class _CasBody(msgspec.Struct, forbid_unknown_fields=True):
    expected: str | None
    value: str | None


class BadRequest(Exception):
    """The request is malformed (answered 400)."""


async def _body(request: web.Request, typ: type[Any]) -> Any:
    raw = await _read(request)
    if not raw or raw == _BOM:
        raise BadRequest("a JSON body is required")
    if raw.startswith(_BOM):
        # What some editors and Windows tools put first; it means nothing (RFC 8259 §8.1:
        # a parser may ignore it). msgspec refused it: "invalid character (byte 0)". Read as
        # three spaces, so the byte offsets of the errors below count from the body's first
        # byte (dropped, each was three bytes short of the body sent).
        raw = b"   " + raw[len(_BOM):]
    try:
        body = msgspec.json.decode(raw, type=typ)
    except msgspec.ValidationError as e:
        raise BadRequest(f"invalid body: {_cut(str(e))}") from None
    except msgspec.DecodeError as e:
        raise BadRequest(f"body is not valid JSON: {invalid_text(raw) or _cut(str(e))}") from None
    # A key given twice is ambiguous (msgspec keeps the last value, another parser the first):
    # {"voters": [1, 2, 3], "voters": [1]} left node 1 the only voter. Looked for once the
    # typed decode passed, so the document is small and shallow, its numbers in range.
    twice = repeated_json_key(raw)
    if twice is not None:
        raise BadRequest(f"invalid body: the key {quoted(twice)} is given twice")
    return body


_MESSAGE_MAX = 300
"""The most characters of the JSON decoder's message a 400 quotes (``_cut``)."""


def _cut(message: str) -> str:
    """The decoder's ``message``, cut to ``_MESSAGE_MAX`` characters with its length when
    longer: it quotes a field's name whole ("Object contains unknown field `...`", a path
    such as ``$.members['...']``), and a name of 200 000 characters made an error as long."""
    return message if len(message) <= _MESSAGE_MAX else f"{message[:_MESSAGE_MAX]}... ({len(message)} characters)"


_BOM = b"\xef\xbb\xbf"
"""The UTF-8 byte order mark, which a JSON body may start with (``_body`` ignores it)."""

_ESCAPE = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)
"""A backslash escape of a JSON string; group 1 is the code unit of a ``\\uXXXX`` one. Matched
left to right, an escaped backslash (``\\\\``) is one escape, so ``\\\\ud800`` is not taken
for a surrogate escape."""


def invalid_text(raw: bytes) -> str | None:
    """Why the strings of the JSON document ``raw`` are not Unicode text, naming what and
    where (a byte offset), or ``None``: bytes that are not UTF-8, or a lone UTF-16
    surrogate escape (a ``\\uD800``-``\\uDBFF`` not followed at once by a ``\\uDC00``-
    ``\\uDFFF``, or the second alone), which UTF-8 cannot hold. For a body msgspec refused:
    its message for a high surrogate followed by anything but a low one is "Input data was
    truncated", which sent the caller looking for a body cut short."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"it is not valid UTF-8: byte 0x{raw[e.start]:02x} at byte {e.start}"
    high: re.Match[bytes] | None = None  # a high surrogate escape waiting for its low one
    for m in _ESCAPE.finditer(raw):
        unit = int(m.group(1), 16) if m.group(1) is not None else -1
        if high is not None:
            if 0xDC00 <= unit <= 0xDFFF and m.start() == high.end():
                high = None  # a pair: one character
                continue
            return _lone_surrogate(high)
        if 0xD800 <= unit <= 0xDBFF:
            high = m
        elif 0xDC00 <= unit <= 0xDFFF:
            return _lone_surrogate(m)
    return _lone_surrogate(high) if high is not None else None


def _lone_surrogate(escape: re.Match[bytes]) -> str:
    return (f"invalid string: a lone UTF-16 surrogate escape '{escape.group(0).decode()}' at byte "
            f"{escape.start()} (a string is Unicode text: an escape of U+D800-U+DBFF is followed by one of "
            "U+DC00-U+DFFF, the two one character)")


def _decimal_node_id(text: str, what: str) -> int:
    """The node id ``text`` names in the digits 0-9 (a path segment, a JSON object key).
    BadRequest otherwise, or for one over ``MAX_NODE_ID``: checked on the digits before
    ``int`` reads them (thousands of digits were a ValueError saying to call
    ``sys.set_int_max_str_digits``)."""
    if not text.isdigit() or not text.isascii():
        raise BadRequest(f"{what} {text[:40]!r} is not a decimal node id")
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(_v.MAX_NODE_ID)):
        shown = digits if len(digits) <= 40 else f"{digits[:20]}... ({len(digits)} digits)"
        raise BadRequest(f"{what} must be within [0, {_v.MAX_NODE_ID}], got {shown}")
    return _node_id(int(digits), what)


def _key(request: web.Request) -> str:
    # Decoded here from the raw segment, strictly: aiohttp leaves an undecodable escape
    # such as %FF as is, which would make "/kv/%FF" and "/kv/%25FF" the same key.
    parts = request.rel_url.raw_parts
    raw = parts[2] if len(parts) > 2 else ""
    if not raw:
        raise BadRequest("the key is empty")
    try:
        key = urllib.parse.unquote(raw, errors="strict")
        n = len(key.encode("utf-8"))
    except UnicodeError:
        raise BadRequest("the key is not valid percent-encoded UTF-8") from None
    if n > MAX_KEY_BYTES:
        raise BadRequest(f"the key is longer than {MAX_KEY_BYTES} bytes")
    return key


def _node_id(value: int, what: str) -> int:
    try:
        return _v.check_node_id(value, what)
    except (TypeError, ValueError) as e:
        raise BadRequest(str(e)) from None


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=msgspec.json.encode(obj), status=status, content_type="application/json",
                        headers=headers)


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return _json({"error": message, **extra}, status)


# -- handlers --------------------------------------------------------------------------------------


def _node(request: web.Request) -> KvNode:
    return request.app[NODE_KEY]


async def cluster_init(request: web.Request) -> web.Response:
    body: _InitBody = await _body(request, _InitBody)
    if not body.members:
        raise BadRequest("members is empty")
    members: dict[int, NodeAddrs] = {}
    for k, m in body.members.items():
        nid = _decimal_node_id(k, "member id")
        if nid in members:
            raise BadRequest(f"member id {nid} is given twice")
        try:
            members[nid] = NodeAddrs(check_member_addr(m.raft_addr, f"members[{k}].raft_addr"),
                                     check_member_addr(m.http_addr, f"members[{k}].http_addr"))
        except (TypeError, ValueError) as e:
            raise BadRequest(str(e)) from None
    await _node(request).init(members)
    return _json({"members": sorted(members)})


async def cluster_learners(request: web.Request) -> web.Response:
    body: _LearnerBody = await _body(request, _LearnerBody)
    nid = _node_id(body.id, "id")
    try:
        check_member_addr(body.raft_addr, "raft_addr")
        check_member_addr(body.http_addr, "http_addr")
    except (TypeError, ValueError) as e:
        raise BadRequest(str(e)) from None
    index = await _node(request).add_learner(nid, body.raft_addr, body.http_addr)
    return _json({"index": index})


async def cluster_remove_learner(request: web.Request) -> web.Response:
    raw = request.match_info["id"]
    nid = _decimal_node_id(raw, "learner id")
    node = _node(request)
    try:
        index = await node.remove_learner(nid)
    except NotFound as e:
        return _error(404, str(e))
    st = node.status()
    return _json({"index": index, "voters": st["voters"], "learners": st["learners"]})


async def cluster_members(request: web.Request) -> web.Response:
    body: _MembersBody = await _body(request, _MembersBody)
    voters = [_node_id(v, "voter id") for v in body.voters]
    if not voters:
        raise BadRequest("voters is empty")
    twice = sorted({v for v in voters if voters.count(v) > 1})
    if twice:  # (a typo for another id, likely: the change was made without it)
        raise BadRequest(f"voter id {', '.join(map(str, twice))} is given twice")
    node = _node(request)
    index = await node.change_members(voters, body.retain, body.allow_lagging)
    st = node.status()
    return _json({"index": index, "voters": st["voters"], "learners": st["learners"]})


async def cluster_transfer(request: web.Request) -> web.Response:
    body: _TransferBody = await _body(request, _TransferBody)
    to = _node_id(body.to, "to")
    return _json({"leader_id": await _node(request).transfer(to)})


async def cluster_status(request: web.Request) -> web.Response:
    return _json(_node(request).status())


async def kv_put(request: web.Request) -> web.Response:
    key = _key(request)
    raw = await _read(request)
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the value is not valid UTF-8") from None
    return _json({"index": await _node(request).put(key, value)})


def bad_consistency(query: Any) -> BadRequest:
    """The 400 of a ``GET /kv/{key}`` whose ``query`` (a multidict) gives ``consistency``
    more than once or with a value other than ``CONSISTENCIES``: it names which. (Both were
    "consistency must be one of ...", also for ``consistency=local&consistency=local``.)"""
    given = query.getall("consistency", [])
    if len(given) > 1:
        return BadRequest(f"consistency is given {len(given)} times: give it once")
    return BadRequest(f"consistency must be one of {', '.join(CONSISTENCIES)}, got {quoted(given[0])}")


async def kv_get(request: web.Request) -> web.Response:
    key = _key(request)
    consistency = request.query.get("consistency", "linearizable")
    if consistency not in CONSISTENCIES or len(request.query.getall("consistency", [])) > 1:
        raise bad_consistency(request.query)
    node = _node(request)
    value = await node.read(key, consistency)
    if value is None:
        return _error(404, "key not found", key=key)
    body = value.encode("utf-8")
    if len(body) < LARGE_ANSWER:  # (the hot path: no accounting)
        return web.Response(body=body, content_type="text/plain", charset="utf-8")
    answers = request.app[ANSWERS_KEY]
    check_answer_room(answers, len(body))
    return SentValue(answers, body, content_type="text/plain", charset="utf-8")


async def kv_delete(request: web.Request) -> web.Response:
    key = _key(request)
    return _json({"index": await _node(request).delete(key)})


async def kv_cas(request: web.Request) -> web.Response:
    key = _key(request)
    body: _CasBody = await _body(request, _CasBody)
    ok, current = await _node(request).cas(key, body.expected, body.value)
    answer = msgspec.json.encode({"ok": ok, "current": current})
    if len(answer) < LARGE_ANSWER:  # (the hot path: no accounting)
        return web.Response(body=answer, content_type="application/json")
    # As large as a GET's answer (``current``: the value just written, or the one there), and
    # kept as one was until sent; counted, never refused: the command was done.
    return SentValue(request.app[ANSWERS_KEY], answer, content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=_node(request).metrics.render(), headers={"Content-Type": CONTENT_TYPE})


# -- errors ----------------------------------------------------------------------------------------


def _stopping(node: KvNode) -> bool:
    """Whether ``node``'s stop began (``accepting`` false) or its Raft has stopped (asked
    to, or on its own: a storage failure). A 503 for a request it did nothing of then says
    ``"stopping": true`` (``_stopping_extra``): the request may go to another node at once."""
    return not node.accepting or node.raft_stopped()


def _stopping_extra(node: KvNode) -> dict[str, bool]:
    """The extra field of a 503 for a request ``node`` did nothing of (``_stopping``)."""
    return {"stopping": True} if _stopping(node) else {}


def _forward(node: KvNode, request: web.Request, e: ForwardToLeader, learner_in: bool = False) -> web.Response:
    """The redirect rule's answer to ``e``: 307 to the leader, or its 503 (``_no_leader``;
    ``learner_in``: an add-learner whose learner is in, ``node.LearnerInForward``)."""
    if e.outcome_unknown:
        return _error(503, str(e), outcome_unknown=True, leader_id=e.leader_id)
    leader_id, http = node.leader(e)
    if leader_id == node.id and http is None:  # leads now, not in a membership with addresses
        http = node.opts.http_addr
    if leader_id is None or http is None:  # a 503: nothing was appended, unless the learner is in
        return _no_leader(node, leader_id, committed=e, learner_in=learner_in)
    location = f"http://{http}{request.raw_path}"
    return _json({"leader_id": leader_id, "leader_http_addr": http}, 307, headers={"Location": location})


def _no_leader(node: KvNode, leader_id: int | None, committed: ForwardToLeader | None = None,
               learner_in: bool = False) -> web.Response:
    """The redirect rule's 503 (no leader known, or none whose HTTP address is known);
    ``"stopping": true`` too when the node stops (``_stopping``), but for an add-learner
    whose learner is in the membership or a members change whose joint config committed
    (``committed``: the ``ForwardToLeader`` if its ``committed_log_id`` is set;
    ``learner_in``: an add-learner's, from ``node.LearnerInForward``), which says that
    instead. A node, or a leader, that the membership held does not name is said to be
    outside it (``_outside_the_membership``: a leader that removed itself)."""
    done = committed is not None and committed.committed_log_id is not None
    extra = {} if done else _stopping_extra(node)
    if not done:
        why = ""
    elif learner_in:
        why = (" (the learner is in the membership: this node stopped leading before it caught up; add it again at the "
               "leader to wait for it)")
    else:
        why = (" (the change committed and takes effect: this node stopped leading before it completed; the next "
               "leader completes it)")
    if leader_id is None and not node.initialized():  # retrying will not help: say what will
        # A member started again on an empty data directory (its data lost) answers this too
        # until its leader reaches it: the node cannot tell itself from a new one (see
        # rejoin.py), so the advice must be safe for both. "Initialize one" alone told that
        # operator to start a second cluster beside the running one.
        return _error(503, f"no leader is known: node {node.id} is not in a cluster yet. To start a new cluster, "
                           "initialize it once with 'openraft-py cluster init' (or POST /cluster/init). If this node "
                           "was a member of a running cluster (its data directory lost or new), do not init it, "
                           "which would start a second cluster: its leader reaches it if it is still a member; "
                           "otherwise add it back with 'openraft-py cluster add-learner'",
                      # (KvClient stops once every endpoint says so)
                      leader_id=None, initialized=False, **extra)
    outside = _outside_the_membership(node, leader_id)
    if outside is not None:
        return _error(503, outside + why, leader_id=leader_id, **extra)
    if leader_id is None:
        return _error(503, f"no leader is known; retry later{why}", leader_id=None, **extra)
    return _error(503, f"the HTTP address of leader {leader_id} is unknown{why}", leader_id=leader_id, **extra)


def _outside_the_membership(node: KvNode, leader_id: int | None) -> str | None:
    """The reason of the redirect rule's 503 (``_no_leader``) when the membership ``node``
    holds does not name the node it concerns: ``node`` itself when it knows no leader
    (``leader_id`` ``None``), else that leader; ``None`` when it does. After a leader's own
    removal commits, the leader knows no leader for good (nobody replicates to it), and a
    follower names it until the next election: "no leader is known; retry later" sent the
    removed node's clients to retry where no retry helps, and "the HTTP address of leader 1
    is unknown" read as a membership that lost an address. The membership cannot tell a
    removal from an entry not received yet (a learner catching up from before it was added,
    a leader added after the entry held): the words give both."""
    raft = node.raft
    if raft is None:
        return None
    held = raft.metrics.membership_config
    mem = held.membership
    who = node.id if leader_id is None else leader_id
    if held.log_id is None or who in mem.nodes:
        return None
    where = f"log index {held.log_id.index}: voters {sorted(mem.voter_ids())}"
    if leader_id is None:
        return (f"no leader is known: node {who} is not in the membership it holds ({where}): it was removed from the "
                "cluster (send requests to those voters), or was added after that entry and is still catching up "
                "(retry later)")
    return (f"leader {who} is not in the membership this node holds ({where}): it removed itself, and those voters "
            "elect the next leader, or this node has yet to receive the entry adding it; retry later")


_LEADER_ONLY_BODIES = frozenset({("PUT", "/kv/{key}"), ("POST", "/kv/{key}/cas"), ("POST", "/cluster/learners"),
                                 ("POST", "/cluster/members"), ("POST", "/cluster/transfer")})
"""The ``(method, route)`` of the requests with a body that only the leader serves (a
follower answers them with the redirect rule's 307 or 503)."""


def _redirects_unread(node: KvNode, request: web.Request) -> ForwardToLeader | None:
    """The ``ForwardToLeader`` a request with a body that only the leader serves is answered
    with (``_forward``) before its body is read, or ``None`` to read it and go on.

    Only when this node knows it is not the leader and names another node (or none) as
    leader: a follower that read the body first, and waited for room for it
    (``BodyBudget``), made a client sending a large value pay the upload twice, held the
    value in memory, and kept the redirect waiting behind the bodies of other requests.
    A node that still calls itself the leader (stepping down) reads the body and lets
    ``client_write`` decide, as before; so does a node that stopped (its ``Fatal`` is the
    answer, not a redirect: "no leader is known" hid a full disk)."""
    raft = node.raft
    if (raft is None or not request.body_exists or (request.method, _route(request)) not in _LEADER_ONLY_BODIES
            or raft.is_leader() or not raft.metrics.running):
        return None
    leader_id = raft.metrics.current_leader
    return None if leader_id == node.id else ForwardToLeader(leader_id, None)


async def _answer_then_drop_body(request: web.Request, resp: web.StreamResponse) -> None:
    """Send ``resp`` (a request's answer given before its body was all read: a redirect, a
    413, 415 or 501, any answer of a handler that did not read the body) at once, then read
    the rest of the body and drop it, as fast as the client sends it, within the time a
    leader gives a body to arrive (``_body_deadline``, counting the body at most at
    ``_drop_limit``) and at most ``_drop_limit`` bytes (nothing is held); a body that takes
    longer, or is larger, closes the connection. Otherwise the connection serves the next
    request. A drop that a stop ends (``KvNode.http_closing``) retires the connection as the
    stop does an idle one (``_retire_after_drop``: the 408 "not read", then closed).

    Left to aiohttp (its lingering after the answer, 10 s at most, then it closes the
    connection), a client sending a body at a rate a leader takes (``BODY_MIN_RATE``) for
    over 10 s had its connection reset while it sent: one that reads the answer once its
    body is sent (``http.client``, ``requests``) never saw it, but a broken pipe; and a body
    declared (or chunked) far over ``max_body`` was read and dropped at line rate for the
    10 s, with no bound in bytes. Not counted as a request in flight
    (``KvNode.request_done`` was called): a stopping node does not wait for a slow client's
    body; the drop goes on while ``stop()`` drains the requests in flight (a body that comes
    meanwhile is dropped whole, and the client reads its answer), and ends, its connection
    closed, once they are drained (``KvNode.http_closing``). The HTTP server's shutdown
    waited ``SHUTDOWN_GRACE`` for it, as it did for aiohttp's lingering read after a
    stopping node's 503."""
    node = request.app[NODE_KEY]
    limit = _drop_limit(request)
    content = request.content
    try:
        await resp.prepare(request)
        await resp.write_eof()
        async with asyncio.timeout(_body_deadline(request, limit)):
            await _unless_closing(node, _drop_body(content, limit))
    except TimeoutError:
        pass
    except (RequestPayloadError, HttpProcessingError, ConnectionResetError):
        return  # the client went away, or its body is malformed: aiohttp closes the connection
    if content.is_eof():
        return
    conn = request.protocol
    if node.http_closing.is_set() and resp.keep_alive is not False and conn.transport is not None:
        # (An answer that said ``Connection: close``, a stopping node's 503, told its client
        # to send nothing more on the connection: no 408 after it.)
        await _retire_after_drop(node, conn, content)
    else:
        conn.force_close()  # too slow, too large, or its answer closed it: this connection is done


async def _retire_after_drop(node: KvNode, conn: Any, content: StreamReader) -> None:
    """End a connection whose body drop the stop cut (``KvNode.http_closing``) as the stop
    ends an idle one (``StoppingConnections``): its client got its answer before the body,
    so it may send its next request on the connection any time; closing it with no word
    left that request unanswered (for a write, an unknown outcome). So the rest of the body
    and anything after it are dropped unparsed, the 408 "not read" is written, and this
    waits (``SHUTDOWN_GRACE`` at most) until it reached the client, whose kernel then holds
    it through the reset that closing with unread data sends; aiohttp closes the
    connection once this returns. The body's end is marked, so aiohttp does not linger on
    it."""
    transport = StoppingConnections.retire(conn, node.stopping_leader_id(), STOPPING_NOT_READ)
    content.feed_eof()  # (nothing more comes: aiohttp's lingering read does not wait for it)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SHUTDOWN_GRACE
    while not StoppingConnections.delivered(transport) and loop.time() < deadline:
        await asyncio.sleep(DRAIN_POLL)


async def _drop_body(content: StreamReader, limit: int) -> None:
    """Read ``content`` and drop it, until its end or once more than ``limit`` bytes came."""
    dropped = 0
    while dropped <= limit and not content.is_eof():
        dropped += len(await content.readany())


async def _unless_closing(node: KvNode, work: Awaitable[None]) -> None:
    """Await ``work``, but no longer than until ``node``'s stop closes its HTTP server
    (``KvNode.http_closing``): then ``work`` is cancelled and this returns. ``work``'s
    exception is raised; cancelled (a timeout around the call), ``work`` is cancelled too."""
    task = asyncio.ensure_future(work)
    closing = asyncio.ensure_future(node.http_closing.wait())
    try:
        await asyncio.wait((task, closing), return_when=asyncio.FIRST_COMPLETED)
    finally:
        closing.cancel()
        if not task.done():
            task.cancel()
    if task.done():
        task.result()


async def _expect(request: web.Request) -> None:
    """The ``Expect`` handler of every route: ``100 Continue`` (as aiohttp's own handler)
    unless the request is answered before its body is read: refused whatever its route
    (``_refused_at_once``: 503, 417, 415, 501), redirected unread (``_redirects_unread``) or
    declaring a body over ``max_body`` (``_declares_too_large``, 413). Then no ``100``, so
    that a client waiting for it (curl for a body over 1 MiB) sends no body and reads the
    answer (RFC 9110 §10.1.1)."""
    node = request.app[NODE_KEY]
    if _refused_at_once(node, request) is not None:
        return
    if _redirects_unread(node, request) is None and not _declares_too_large(request):
        await _default_expect_handler(request)


def _client_mistake(kind: str, fmt: str, *args: object) -> None:
    """Log one request's line of ``kind`` at INFO, within ``_CLIENT_MISTAKES``' bounds."""
    if log.isEnabledFor(logging.INFO) and _CLIENT_MISTAKES.allow(kind, fmt % args):
        log.info(fmt, *args)


def _map_error(node: KvNode, request: web.Request, e: BaseException, stopped_before: bool = False) -> web.Response:
    """The answer to a request whose handling raised ``e``. ``stopped_before``: the node's
    Raft had stopped before the request began (``_errors_and_counts``), so it appended
    nothing of it."""
    if isinstance(e, BadRequest):
        return _error(400, str(e))
    if isinstance(e, Overloaded):  # its body unread (read and dropped after the answer: _answer_then_drop_body)
        return _json({"error": str(e)}, 503, headers={"Retry-After": "1"})
    if isinstance(e, BodyTimeout):  # the client's failure: logged at INFO, the connection closed
        _client_mistake("requests whose body did not arrive in time", "%s %s: %s (client %s)", request.method,
                        request.path, e, request.remote)
        resp = _error(408, str(e))
        resp.force_close()  # the rest of the body may still come: this connection is done
        return resp
    if isinstance(e, (RequestPayloadError, HttpProcessingError, ConnectionResetError)):
        # The body could not be read (cut short: the client went away; its framing is
        # malformed, a bad chunk): nothing was done, and it is the client's failure, not the
        # service's (not logged as an error).
        why = e.message if isinstance(e, HttpProcessingError) else str(e)
        _client_mistake("requests whose body could not be read", "%s %s: the request body could not be read: %r "
                        "(client %s)", request.method, request.path, e, request.remote)
        return _error(400, f"the request body could not be read: {why}")
    if isinstance(e, ForwardToLeader):
        return _forward(node, request, e)
    if isinstance(e, LearnerInForward):  # (the add-learner's entry may have committed)
        return _forward(node, request, e.forward, learner_in=True)
    if isinstance(e, EntryTooLarge):  # the body fit max_body but the entry is over max_entry_bytes
        return _error(413, f"{type(e).__name__}: {e}")
    if isinstance(e, InProgress):
        return _error(409, _in_progress_text(request, e))
    if isinstance(e, (LearnerIsLagging, NotAllowed)):  # the state, not the request: retry later
        return _error(409, f"{type(e).__name__}: {e}")
    if isinstance(e, Conflict):  # the request contradicts the cluster's state
        return _error(409, str(e))
    if isinstance(e, (ChangeMembershipError, InitializeError, InvalidRequest, TypeError, ValueError)):
        return _error(400, f"{type(e).__name__}: {e}")
    if isinstance(e, Fatal):
        if isinstance(e, Stopped) and not node.accepting:  # stopped as asked (a signal): no failure
            _client_mistake("requests answered 503 by the stopping node", "%s %s: the node has stopped (asked to): %r",
                            request.method, request.path, e)
        elif node.stopped_on_its_own():
            # The core logged why, once, at ERROR ("node 1 stopped: ..."): each request
            # answered meanwhile repeated the whole error at ERROR (a leader whose disk
            # filled: one line per write in flight).
            _client_mistake("requests answered 503 by the stopped node", "%s %s: answered 503, the node has stopped on "
                            "its own: %s", request.method, request.path, type(e).__name__)
        else:
            log.error("%s %s: the node has stopped: %r", request.method, request.path, e)
        if request.method != "GET" and not stopped_before:
            # A write (or membership change) the node stopped under may have been appended,
            # and committed by the others: a leader whose disk filled stopped during a write
            # the next leader then held. Without the flag, the 503 read as "nothing was done".
            return _error(503, f"the node has stopped: {type(e).__name__}: {e}", outcome_unknown=True)
        # A read, or a request that came once the node's Raft had stopped: nothing was
        # done, for no reason of the request's; another node may take it (``KvClient``
        # sends it there). A read's 503 said neither, a write's "outcome_unknown": true. (A
        # read's says no ``outcome_unknown``: a client from before ``stopping`` read a false
        # one as a refusal of the request itself, not retried, as ``_refused_at_once``.)
        if request.method == "GET":
            return _error(503, f"the node has stopped: {type(e).__name__}: {e}", stopping=True)
        return _error(503, f"the node has stopped: {type(e).__name__}: {e}", outcome_unknown=False, stopping=True)
    if isinstance(e, ServiceUnavailable) and e.nothing_done:
        # Said in the body: a bare 503 of a write is an unknown outcome to a client (the
        # bound of an add-learner ran out with the learner added, say); this one is a refusal.
        # One because the node is stopping says so too: another node may take the request
        # (``KvClient`` sends it there); without ``stopping`` it is the request's own refusal.
        if e.stopping:
            return _error(503, f"{type(e).__name__}: {e}", outcome_unknown=False, stopping=True)
        return _error(503, f"{type(e).__name__}: {e}", outcome_unknown=False)
    if isinstance(e, (LinearizableReadError, RPCError, WaitTimeout, ServiceUnavailable)):
        if request.method == "GET":  # a read did nothing: one of a stopping node says so
            return _error(503, f"{type(e).__name__}: {e}", **_stopping_extra(node))
        return _error(503, f"{type(e).__name__}: {e}")
    log.exception("%s %s failed", request.method, request.path, exc_info=e)
    return _error(500, f"internal error: {type(e).__name__}")


def _in_progress_text(request: web.Request, e: InProgress) -> str:
    """The 409 ``error`` of ``InProgress`` in an HTTP client's terms: what is pending (its
    log index and term), that nothing was done, and when to retry. The library's message
    speaks of the Python calls that make a change (``change_membership`` ...), which an HTTP
    client does not make: it relayed "(the call that made it returned)"."""
    pending = e.membership_log_id
    which = "" if pending is None else f" (log index {pending.index}, term {pending.term})"
    when = ("retry once it has (the request that made it is answered then; a change the leader was elected with "
            "commits with its first writes)")
    if request.path == "/cluster/transfer":
        return (f"InProgress: the leadership is not handed over while a membership change{which} has not "
                f"committed: nothing was done; {when}")
    return f"InProgress: another membership change{which} has not committed yet: nothing was done; {when}"


def _codings(header: str) -> set[str]:
    """The codings a ``Content-Encoding`` or ``Transfer-Encoding`` header value lists (every
    header of that name joined with commas), lower-cased; none for an absent header."""
    return {c.strip().lower() for c in header.split(",")} - {""}


_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"})


def _route(request: web.Request) -> str:
    """The route's path pattern (a bounded metric label), ``"unmatched"`` for a request no
    route of the API takes (``_unmatched``)."""
    route = request.match_info.route
    if route.resource is None or route.handler is _unmatched:
        return "unmatched"
    return route.resource.canonical


UNMATCHED_PATH = "/{unmatched_path:.*}"
"""The path pattern of the route added last (``make_app``), which takes every request no
other route takes: its handler answers 404 or 405 (``_unmatched``) and its ``Expect``
handler sends no ``100 Continue`` (``_no_continue``)."""


async def _unmatched(request: web.Request) -> web.StreamResponse:
    """The handler of a request for a path the API does not have (``HTTPNotFound``) or a
    method its path does not take (``HTTPMethodNotAllowed`` listing those it takes, as
    aiohttp's router does): the middleware answers them in the API's JSON. Its body is
    not read (the middleware drops it after the answer)."""
    allowed: set[str] = set()
    for res in request.app.router.resources():
        if any(route.handler is _unmatched for route in res):
            continue  # (this one takes every method)
        _match, methods = await res.resolve(request)
        allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


async def _no_continue(request: web.Request) -> None:
    """The ``Expect`` handler of ``_unmatched``: no ``100 Continue``, whatever the request
    (a 404, 405, or one of ``_refused_at_once``'s refusals follows), so that a client
    waiting for it sends no body. aiohttp's router answers an unmatched request itself,
    with its own ``Expect`` handler, which sent ``100 Continue`` before the 404 or 405 (and
    a plain-text 417 for another expectation, before the middleware)."""


QUERY_PARAMETERS = {("GET", "/kv/{key}"): ("consistency",)}
"""The query parameters each route takes, by method (``HEAD`` as ``GET``) and path pattern;
every other route of the API takes none, but ``GET /metrics``, which takes what a scraper
sends. A request with another is refused (``unknown_query``): ignored, a misspelled
``?consistancy=local`` read linearizably (a follower redirected it), and a parameter given
to a write looked as if it meant something."""


def unknown_query(request: web.Request) -> str | None:
    """The 400's message for a request whose query names a parameter its route does not take
    (``QUERY_PARAMETERS``), naming them and what the route takes; ``None`` otherwise, and for
    a path the API does not have (its 404 or 405 comes first)."""
    if not request.query_string:  # (the hot path: no parsing)
        return None
    route = _route(request)
    if route in ("unmatched", "/metrics"):
        return None
    method = "GET" if request.method == "HEAD" else request.method
    takes = QUERY_PARAMETERS.get((method, route), ())
    unknown = [k for k in dict.fromkeys(request.query) if k not in takes]
    if not unknown:
        return None
    names = ", ".join(quoted(k) for k in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
    return (f"unknown query parameter{'s' if len(unknown) > 1 else ''} {names}: {method} {route} takes "
            f"{', '.join(takes) or 'none'}")


def _refused_at_once(node: KvNode, request: web.Request) -> web.Response | None:
    """The answer to a request refused whatever its route and body: a node that is stopping
    (503: nothing was done, a client may retry on another node), an HTTP/1.1 ``Expect``
    other than ``100-continue`` (417), a compressed body (415), a transfer coding other than
    chunked (501), a query parameter its route does not take (400, ``unknown_query``: on a
    follower too, before any redirect); ``None`` for a request to handle. ``_expect`` sends no ``100 Continue``
    to such a request.

    The 417 is the one aiohttp's ``Expect`` handler gave, but from here: raised there, it
    came before the middleware, in plain text (not the API's JSON) and counted in no
    ``openraft_kv_http_requests_total``."""
    if not node.accepting:
        # ``leader_id`` (the redirect rule's "no leader" refusal: clients from before
        # ``stopping`` retry it too) and no ``outcome_unknown`` (those clients read a
        # ``false`` one as a refusal of the request itself, not retried).
        leader_id = node.raft.metrics.current_leader if node.raft is not None else None
        return _error(503, "the node is stopping", leader_id=None if leader_id == node.id else leader_id,
                      stopping=True)
    expect = ", ".join(request.headers.getall("Expect", []))
    if expect and request.version == HttpVersion11 and expect.strip().lower() != "100-continue":
        return _error(417, f"Expect {expect!r} is not supported: only 100-continue is")
    coding = ", ".join(request.headers.getall("Content-Encoding", []))
    if not _codings(coding) <= {"identity"}:
        return _error(415, f"Content-Encoding {coding!r} is not supported: send the body uncompressed")
    transfer = ", ".join(request.headers.getall("Transfer-Encoding", []))
    if not _codings(transfer) <= {"chunked"}:  # (aiohttp's parser takes "gzip, chunked" as chunked)
        return _error(501, f"Transfer-Encoding {transfer!r} is not supported: send the body as it is, "
                           "with a Content-Length or chunked")
    unknown = unknown_query(request)
    if unknown is not None:
        return _error(400, unknown)
    return None


@web.middleware
async def _errors_and_counts(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    if node.http_conns is not None:
        node.http_conns.request_started(request.protocol)
    resp: web.StreamResponse
    refused = _refused_at_once(node, request)
    if refused is not None:
        resp = refused
    else:
        # (A write that came once the Raft had stopped appended nothing: ``_map_error``.
        # Read before the request is counted, which the ``finally`` below ends.)
        stopped_before = request.method != "GET" and node.raft_stopped()
        node.request_started()
        taken = 0
        try:
            forward = _redirects_unread(node, request)
            if forward is not None:
                # Answered with the body unread; once the answer is sent, the body is read
                # and dropped (``_answer_then_drop_body``) and the connection serves the
                # next request. A client that got no ``100 Continue`` (``_expect``) sends
                # the body anyway or closes the connection (RFC 9110 §10.1.1): either ends
                # the drop.
                resp = _forward(node, request, forward)
            elif _declares_too_large(request):  # refused unread, taking no room (so is its drop)
                resp = _too_large(node.opts.max_body)
            else:
                if request.body_exists and _route(request) != "unmatched":  # (a 404 or 405 reads no body)
                    taken = await _room_for_body(request)
                resp = await handler(request)
        except web.HTTPException as e:  # aiohttp's own: 404, 405, 413 (a chunked body over max_body) ...
            if e.status == 413:  # the body limit: say what it is and where it is set
                resp = _too_large(node.opts.max_body)
            else:
                headers = {k: v for k, v in e.headers.items() if k.lower() in ("allow", "location")}
                resp = _json({"error": e.reason}, e.status, headers=headers)
        except Exception as e:  # noqa: BLE001 - every failure becomes an HTTP answer
            resp = _map_error(node, request, e, stopped_before)
        finally:
            try:
                if taken:
                    request.app[BUDGET_KEY].release(taken)
            finally:
                node.request_done()  # (whatever the release raised: the node's count stays right)
    if not node.accepting:
        # Stopping: the client must not send another request on this connection, which
        # closes with the HTTP server (a request sent on it then is lost: an unknown outcome).
        resp.force_close()
    method = request.method if request.method in _METHODS else "other"  # bounded label values
    node.metrics.http_requests.labels(_route(request), method, str(resp.status)).inc()
    if (not node.accepting or resp.keep_alive is not False) and not request.content.is_eof():
        # The answer came before the body was all read (a redirect, a refusal, a handler
        # that reads no body, a stopping node's 503): the rest is dropped in a bounded way,
        # not left to aiohttp's lingering read (10 s, no bound in bytes, and the HTTP
        # server's shutdown waited for it). A connection closing anyway (a 408) keeps
        # aiohttp's.
        await _answer_then_drop_body(request, resp)
    return resp


def make_app(node: KvNode) -> web.Application:
    """The aiohttp application serving ``node`` (see the module docstring).

    The application refers to ``node`` weakly (``NODE_KEY`` holds a ``weakref.proxy``): the
    node module keeps a running ``KvNode`` (from ``start()`` until ``stop()`` ends), whether
    its caller still refers to it or not. aiohttp keeps every
    application that served a request in a module-level cache (``_cached_build_middleware``,
    1024 entries, one per route used), and with a strong reference each stopped node stayed
    in memory with it, its Raft core, metrics and servers (a process that starts and stops
    many nodes: a test suite, ``docs/design/soak.md``)."""
    app = web.Application(client_max_size=node.opts.max_body, middlewares=[_errors_and_counts])
    app[NODE_KEY] = cast(KvNode, weakref.proxy(node))
    budget = app[BUDGET_KEY] = BodyBudget(body_budget(node.opts.max_body))
    app[ANSWERS_KEY] = AnswerBytes()
    node.metrics.watch_body_budget(lambda: budget.held, lambda: budget.waiting)
    r = app.router
    r.add_post("/cluster/init", cluster_init, expect_handler=_expect)
    r.add_post("/cluster/learners", cluster_learners, expect_handler=_expect)
    r.add_delete("/cluster/learners/{id}", cluster_remove_learner, expect_handler=_expect)
    r.add_post("/cluster/members", cluster_members, expect_handler=_expect)
    r.add_post("/cluster/transfer", cluster_transfer, expect_handler=_expect)
    r.add_get("/cluster/status", cluster_status, expect_handler=_expect)
    r.add_put("/kv/{key}", kv_put, expect_handler=_expect)
    r.add_get("/kv/{key}", kv_get, expect_handler=_expect)
    r.add_delete("/kv/{key}", kv_delete, expect_handler=_expect)
    r.add_post("/kv/{key}/cas", kv_cas, expect_handler=_expect)
    r.add_get("/metrics", metrics, expect_handler=_expect)
    # Last: tried after every other route (aiohttp tries the catch-all's "/" prefix last).
    r.add_route("*", UNMATCHED_PATH, _unmatched, expect_handler=_no_continue)
    return app


