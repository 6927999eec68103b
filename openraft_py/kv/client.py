"""An async HTTP client of the key-value service (DESIGN §8) that finds the leader itself.

Used by the ``openraft-py kv`` / ``cluster`` verbs, by ``openraft-py demo`` and by fault
runners that record client histories for ``openraft_py.testing.lincheck``::

    async with KvClient(["127.0.0.1:28001", "127.0.0.1:28002"]) as c:
        r = await c.put("k", "v")          # Response(outcome=OK, status=200, ...)
        r.json()["index"]                  # the log index of the write
        r = await c.get("k", consistency="linearizable")
        r.value                            # "v" (None when absent)

How one call runs, within its ``deadline`` (seconds)::

    attempt ─> node ─┬─ 2xx (or a GET's 404 "key not found") ──────────> OK
                     ├─ 2xx to a key's write, not as a service node answers ─> INFO
                     ├─ 2xx to a key's read, not 200 text/plain ──────────────> FAIL
                     ├─ 307 ─> follow Location (at most max_redirects hops) ─> attempt
                     ├─ refused before anything happened ─┐
                     │   connect error, 503 naming no     ├─ back off, next endpoint ─> attempt
                     │   leader, 503 "stopping": true (a  │   (until the deadline: FAIL)
                     │   stopping node, nothing done),    │
                     │   408 (the request was not read),  │
                     │   a redirect loop ─────────────────┘
                     ├─ other 4xx; 503 with "outcome_unknown": false (nothing
                     │   done) and no "stopping": true (the request's own
                     │   refusal, or a server from before the field); 503 "not
                     │   in a cluster yet" from every endpoint for
                     │   NO_CLUSTER_GRACE (their latest answers) ────────────────> FAIL
                     └─ 5xx, timeout, connection lost after sending ──> reads: retry like a
                                                                        refusal; writes: INFO

The outcome classes are Jepsen's, and what a linearizability checker needs:

- ``OK``: the operation completed and ``Response`` holds its answer.
- ``FAIL``: the operation definitely did not take effect (a 4xx, a refusal before the entry
  was appended, a 503 saying ``"outcome_unknown": false`` for the request's own sake, or
  only refusals until the deadline); or a read got no value (only
  failures until the deadline, or a 2xx that is not a service node's value).
- ``INFO``: unknown. The request may have been applied or not (a timeout, a connection lost
  after the request was sent, a 5xx such as ``outcome_unknown``). A write is never retried
  after such an attempt: a blind retry could apply it twice.

A ``503`` saying ``"stopping": true`` (with ``outcome_unknown`` absent or ``false``) comes
from a node whose stop has begun (a rolling restart's SIGTERM): it did nothing of the
request, for no reason of the request's, so the call goes on to the next endpoint, a write
too, as after a refused connection. The same 503 with ``"outcome_unknown": false`` and no ``stopping`` (a
host name the node's resolver could not tell about) is the request's own refusal: the call
fails at once. A server from before the field says no ``stopping``, so its stopping refusal
fails the call as before: without the field the client cannot tell it from the request's.

A ``408`` says the request was not read (a node answers so on each idle connection it
closes, as it stops or once the connection was idle for ``HTTP_IDLE_TIMEOUT``, and ignores
any request on it: a request sent on a kept-alive connection as the node closes it gets it,
however late it is sent); like any refusal it is retried at the next endpoint, a write too.

Reads (``GET``) have no effect, so every failure of a read is retried within the deadline;
a read that never completes ends as ``FAIL`` or ``INFO`` and carries no value.

No attempt after the first starts with less than ``_RETRY_MIN`` seconds left before the
deadline: the call ends ``FAIL`` with the last refusal instead. An attempt that cannot get
its answer in time would only turn a write's known refusal into an unknown outcome.

Whether an attempt reached the wire is known exactly: sessions come from ``new_session()``,
whose trace hook counts the request headers sent. An attempt that failed before any headers
were sent is a refusal; one that failed after is unknown. (aiohttp resends a ``PUT`` or
``DELETE`` once when the connection drops; without the count, a write received by a node
that then died would look refused when the resend finds the port closed. ``new_session()``
also turns that resend off where aiohttp lets it, so a write is sent once per attempt.)
"""

from __future__ import annotations

import asyncio
import enum
import io
import json as _json
import os
import random
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Self, TypedDict, Unpack

import aiohttp
import yarl

from ..errors import restore_error
from ..validation import check_node_id
from .argtypes import check_duration, quoted

__all__ = ["CONNECT_TIMEOUT", "CONSISTENCIES", "CROSS_LOOP_CLOSE_WAIT", "MAX_KEY_BYTES", "NO_CLUSTER_GRACE", "Outcome", "Response", "KvClient", "ClientError", "NoClusterError", "parse_endpoints", "new_session",
           "CallTimes", "CallOptions"]

CONNECT_TIMEOUT = 2.0
"""``KvClient``'s default ``connect_timeout``: above the 1 s after which a lost connection
request is sent again, so one loss costs no attempt; well below a call's deadline, so a node
that never completes the connection leaves time for the other endpoints. (The connection
was bounded by the attempt alone, and the command line's attempt is its whole ``--timeout``:
``kv put --endpoints DOWN,LIVE`` spent it all on DOWN and never reached LIVE.)"""

CROSS_LOOP_CLOSE_WAIT = 10.0
"""Seconds ``KvClient.close`` called from another loop's coroutine waits for the close it
hands to the client's own loop, running in another thread."""

NO_CLUSTER_GRACE = 1.0
"""Seconds a call goes on retrying once every endpoint answers "not in a cluster yet"
(``"initialized": false``) before it fails with that answer: the time a node that is about
to join takes to hear from its cluster. Nodes initialized through another node hear of the
cluster with its first election, at once after the init, and the new leader's first
entries; a learner being added with the leader's first message. Failed at the first such
answer from every endpoint, a call to them right after ``POST /cluster/init`` (a client
of the other members) failed, telling the user to initialize the cluster just initialized.
Against nodes never initialized (a new user's first try) the call still ends about this
long after its first attempt, not at its deadline."""

_RETRY_MIN = 0.05
"""Seconds a call must have left before its deadline to start another attempt (a retry or a
redirect hop); see the module docstring."""


class Outcome(str, enum.Enum):
    """How a call ended (see the module docstring): ``ok``, ``fail`` or ``info``."""

    OK = "ok"
    FAIL = "fail"
    INFO = "info"


class ClientError(Exception):
    """A call did not succeed (raised by ``Response.raise_for_outcome``); ``response`` is the
    failed ``Response``."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.error or f"{response.outcome.value} (HTTP {response.status})")
        self.response = response

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled and copied as its message and fields, without calling __init__ again (it
        # takes the response, not the message): see openraft_py.errors.RaftError.
        return (restore_error, (type(self), self.args, self.__dict__))


class NoClusterError(TimeoutError):
    """``KvClient.find_leader`` found no leader because every endpoint is a node in no
    cluster yet (its status names no voter, no learner and no leader), and has said so for
    ``NO_CLUSTER_GRACE``: only an init (``POST /cluster/init``, ``openraft-py cluster
    init``) or adding the nodes to a cluster brings a leader. A ``TimeoutError``, so code
    that catches what ``find_leader`` is documented to raise still catches it; it ends the
    search early, where it went on until its timeout."""


@dataclass(frozen=True, slots=True)
class Response:
    """The final answer of one call.

    ``status`` and ``body`` are those of the last HTTP answer (``None`` / ``b""`` when the
    last attempt got none); ``node`` the ``host:port`` that gave it; ``error`` a one-line
    reason when the outcome is not ``OK``; ``redirects`` and ``retries`` how many 307 hops
    were followed and attempts repeated."""

    outcome: Outcome
    status: int | None
    body: bytes = b""
    node: str | None = None
    error: str | None = None
    redirects: int = 0
    retries: int = 0

    @property
    def ok(self) -> bool:
        """Whether the outcome is ``OK``."""
        return self.outcome is Outcome.OK

    def json(self) -> Any:
        """The body decoded as JSON (``ValueError`` if it is not JSON)."""
        return _loads(self.body)

    @property
    def value(self) -> str | None:
        """A completed read's value: the body as text on 200, ``None`` on 404 (absent).
        ``ValueError`` when the call is not a completed read."""
        if not self.ok or self.status not in (200, 404):
            raise ValueError(f"no value: the read ended {self.outcome.value} ({self.error})")
        return None if self.status == 404 else self.body.decode("utf-8")

    def raise_for_outcome(self) -> Response:
        """``self`` if ``OK``; ``ClientError`` otherwise."""
        if not self.ok:
            raise ClientError(self)
        return self


CONSISTENCIES = ("linearizable", "lease", "local")
"""The ``consistency`` values of ``GET /kv/{key}`` (DESIGN §8)."""

MAX_KEY_BYTES = 4096
"""Longest key (UTF-8 bytes) the service takes: ``KvNode`` answers a longer one 400, and
``KvClient`` refuses it with ``ValueError`` before sending anything."""


def parse_endpoints(text: str | Sequence[str]) -> list[str]:
    """``"h:p,h:p"`` (or a list of such strings) as a list of ``host:port`` strings, with
    ``http://`` prefixes (in any case) and trailing slashes removed; ``ValueError`` naming
    the endpoint as given if one is malformed (the host as ``nodes.check_addr`` takes it; an
    ``https://`` one: the service speaks plain HTTP), or empty (``A,,B``, ``A,``: an endpoint
    left out, as ``$N1,$N2,$N3`` makes with ``N2`` unset, which ran with the others without a
    word), or if none is given; ``TypeError`` if one is not a string."""
    if not isinstance(text, str | Iterable) or isinstance(text, bytes | bytearray | memoryview):
        raise TypeError(f"endpoints are a 'host:port,...' string or a list of them, got {type(text).__name__} "
                        f"{quoted(text)}")
    parts = [text] if isinstance(text, str) else list(text)
    items: list[str] = []
    for part in parts:
        if not isinstance(part, str):
            raise TypeError(f"an endpoint is a 'host:port' string, got {type(part).__name__} {quoted(part)}")
        items.extend(item.strip() for item in part.split(","))
    if not any(items):
        raise ValueError("no endpoint given")
    return [_endpoint(item, n, len(items)) for n, item in enumerate(items, 1)]


def _endpoint(given: str, n: int, of: int) -> str:
    """The ``host:port`` of ``given``, endpoint ``n`` of ``of`` (``parse_endpoints``)."""
    from .nodes import check_addr

    if not given:
        raise ValueError(f"endpoint {n} of {of} is empty (a comma too many, or an endpoint left out)")
    item = given
    scheme, sep, rest = item.partition("://")
    if sep and scheme.lower() == "http":
        item = rest
    elif sep:
        raise ValueError(f"endpoint {quoted(given)}: the service speaks plain HTTP; give host:port")
    item = item.rstrip("/")  # (``http://h:p/``, as a browser writes it, means ``h:p``)
    host, sep, port = item.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint {quoted(given)} is not host:port")
    check_addr(item, f"endpoint {quoted(given)}")
    return item


def _check_utf8(text: str, what: str) -> None:
    """``ValueError`` (naming ``what`` and where) unless UTF-8 can hold ``text``: a ``str``
    with a lone surrogate (``"\\udc80"``, what ``os.fsdecode`` makes of a byte that is not
    UTF-8) failed deep in the call with "'utf-8' codec can't encode character", or, sent in
    a ``cas`` body, came back 400 "JSON is malformed: invalid utf-16 surrogate pair"."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} is text UTF-8 can hold, but {quoted(text)} has a lone surrogate at "
                         f"character {e.start}") from None


def _quote_key(key: str) -> str:
    """``key`` as one path segment. The keys ``.`` and ``..`` go as ``%2E`` and ``%2E%2E``:
    written as dots they are dot-segments, which a URL drops (``/kv/.`` is ``/kv/``)."""
    if not isinstance(key, str):
        raise TypeError(f"a key is a str, got {type(key).__name__} {quoted(key)}")
    if not key:
        raise ValueError("a key is a non-empty string")
    _check_utf8(key, "a key")
    if len(key) > MAX_KEY_BYTES // 4 and (n := len(key.encode("utf-8", "surrogatepass"))) > MAX_KEY_BYTES:
        # Sent, a key over about 13 KiB percent-encoded got the HTTP server's own 400 ("Got
        # more than 13312 bytes when reading"), which does not say what the limit is.
        raise ValueError(f"a key is at most {MAX_KEY_BYTES} bytes of UTF-8, got {n}: {quoted(key)}")
    if key in (".", ".."):
        return key.replace(".", "%2E")
    return urllib.parse.quote(key, safe="")


_QUOTED = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")
"""A URL that is already percent-encoded: only characters a URL may hold as they are, and
``%`` escapes."""


def _url(text: str) -> yarl.URL:
    """The URL ``text`` as the request sends it. Already encoded (the client's own paths, a
    redirect that repeats one), it is sent as written: parsing it again would decode ``%2E``
    and drop the dot-segments, the keys ``.`` and ``..``. Anything else (a path given to
    ``request`` with a space, say) is encoded by yarl as before. ``aiohttp.InvalidURL`` (as
    aiohttp raises for a URL it cannot parse) if it is not a URL."""
    try:
        return yarl.URL(text, encoded=_QUOTED.fullmatch(text) is not None)
    except ValueError as e:
        raise aiohttp.InvalidURL(text, str(e)) from None


class _Sends:
    """Per-request trace context: how many times aiohttp sent the request's headers."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


async def _on_headers_sent(session: aiohttp.ClientSession, ctx: Any, params: Any) -> None:
    sends = ctx.trace_request_ctx
    if isinstance(sends, _Sends):
        sends.count += 1


_TRACE = aiohttp.TraceConfig()
_TRACE.on_request_headers_sent.append(_on_headers_sent)


_LARGE_BODY = 1 << 20
"""The size over which aiohttp warns of a ``bytes`` body ("Sending a large body directly with
raw bytes might lock the event loop", a ``ResourceWarning``): a larger body is given to it as
an ``io.BytesIO``, which it sends in chunks, yielding to the loop between them."""


def _body(data: bytes | None) -> bytes | io.BytesIO | None:
    """``data`` as one attempt's request body: a fresh ``io.BytesIO`` over ``data`` when it
    is larger than ``_LARGE_BODY`` (aiohttp closes it once sent; each attempt has its own)."""
    if data is not None and len(data) > _LARGE_BODY:
        return io.BytesIO(data)
    return data


_MAX_HEADER_LINE = 16384
"""The longest status line or header a session of ``new_session()`` reads."""


def new_session(**kw: Any) -> aiohttp.ClientSession:
    """An ``aiohttp.ClientSession`` a ``KvClient`` can use (``kw`` as for ``ClientSession``;
    no connection limit by default). It carries the trace hook that tells a request that
    never left from one that did (see the module docstring)."""
    kw.setdefault("connector", aiohttp.TCPConnector(limit=0))
    kw.setdefault("timeout", aiohttp.ClientTimeout(total=None))
    # A redirect's Location repeats the path, whose key may take 12 KiB percent-encoded
    # (the service's MAX_KEY_BYTES, three characters a byte): over aiohttp's 8190 default.
    kw.setdefault("max_line_size", _MAX_HEADER_LINE)
    kw.setdefault("max_field_size", _MAX_HEADER_LINE)
    kw["trace_configs"] = [*kw.get("trace_configs", []), _TRACE]
    session = aiohttp.ClientSession(**kw)
    if hasattr(session, "_retry_connection"):  # aiohttp >= 3.9: no silent resend of PUT/DELETE
        session._retry_connection = False
    return session


class _Refused(Exception):
    """An attempt that had no effect; the call may try again."""


class _NotHttp(Exception):
    """An attempt answered, but not in HTTP (aiohttp could not parse the status line or the
    headers): another program listens there (SSH, a database, a TLS port). A service node
    always answers in HTTP, so no node took the request: nothing was done, and no retry
    changes the answer. The call fails at once (a read retried until its deadline, and a
    write ended with an unknown outcome)."""


NOT_HTTP = "answered, but not in HTTP (is it an openraft-py HTTP address?)"
"""The words of a ``FAIL`` whose endpoint answered, but not in HTTP (``_NotHttp``): its
``error`` is ``"{host:port} " + NOT_HTTP + ": " + aiohttp's reason`` (``status`` ``None``)."""


def answered_not_http(r: Response) -> bool:
    """Whether ``r`` failed because its endpoint answered, but not in HTTP (``NOT_HTTP``)."""
    return r.outcome is Outcome.FAIL and r.status is None and f" {NOT_HTTP}: " in (r.error or "")


def _loads(body: bytes) -> Any:
    """``body`` decoded as JSON; ``ValueError`` if it is not JSON, or is nested deeper than the
    interpreter's recursion limit (``json.loads`` raises ``RecursionError`` then: an endpoint
    that is not a service node answering so made every verb fail with it, naming no
    endpoint)."""
    try:
        return _json.loads(body)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None


def _one_line(body: bytes, limit: int = 400) -> str:
    """``body`` for an error message, on one line: its JSON ``error`` field when it has one
    (the service's own text, with what to do next), otherwise the body; cut at ``limit``
    characters (a foreign server may send anything)."""
    try:
        obj = _loads(body)
        if isinstance(obj, dict) and "error" in obj:
            text = str(obj["error"])
        else:
            text = body.decode("utf-8", "replace")
    except ValueError:
        text = body.decode("utf-8", "replace")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _body_object(body: bytes) -> dict[str, Any]:
    """``body`` as a JSON object; ``{}`` when it is not one (not JSON, or another value)."""
    try:
        obj = _loads(body)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def _key_not_found(body: bytes) -> bool:
    """Whether a 404 body is the service's answer for an absent key (another server's 404,
    an endpoint that is not a service node, does not say the key is absent)."""
    return _body_object(body).get("error") == "key not found"


def _not_the_service_s_answer(method: str, path: str, status: int, headers: Mapping[str, str],
                              body: bytes) -> str | None:
    """Why a 2xx answer to a key-value or administration call is not one a service node gives
    (DESIGN §8); ``None`` when it is, or when the call is neither (``/cluster/status`` is
    checked by ``KvClient.status``). An administration call's is the object of its fields
    (``_not_the_service_s_admin_answer``). A write's is a JSON object with an
    integer ``index`` for ``put`` and ``delete``, with a boolean ``ok`` for ``cas``; a read's
    is 200 with the value as ``text/plain`` in UTF-8 (as every version of the service sends
    it). Another HTTP server at an endpoint (a web application that answers 200 to any path)
    had its 200 taken for an applied write, and its page (or a 204's empty body) for the
    value; a body that is not UTF-8 failed ``Response.value`` with ``UnicodeDecodeError``."""
    if not path.startswith("/kv/"):
        return _not_the_service_s_admin_answer(method, path, body)
    if method.upper() == "GET":
        ctype = headers.get("Content-Type", "")
        if status == 200 and ctype.partition(";")[0].strip().lower() == "text/plain":
            try:
                body.decode("utf-8")
                return None
            except UnicodeDecodeError:
                return f"but with a body that is not UTF-8, as a value is: {_one_line(body, 100)}"
        return (f"but not with a value (a service node answers a read 200 with it as text/plain; "
                f"this answer is {ctype or 'of no Content-Type'}): {_one_line(body, 100)}")
    try:
        obj = _loads(body)
    except ValueError:
        obj = None
    field, kind = ("ok", bool) if path.split("?")[0].endswith("/cas") else ("index", int)
    if isinstance(obj, dict) and isinstance(obj.get(field), kind):
        return None
    return f"but not with a JSON object holding {field!r}: {_one_line(body, 100)}"


_ADMIN_ANSWERS: dict[tuple[str, str], tuple[tuple[str, type], ...]] = {
    ("POST", "/cluster/init"): (("members", list),),
    ("POST", "/cluster/learners"): (("index", int),),
    ("DELETE", "/cluster/learners/"): (("index", int), ("voters", list), ("learners", list)),
    ("POST", "/cluster/members"): (("index", int), ("voters", list), ("learners", list)),
    ("POST", "/cluster/transfer"): (("leader_id", int),),
}
"""The fields (and their JSON types) of a service node's 2xx answer to each administration
call, by method and path (``DELETE /cluster/learners/`` is followed by the id); DESIGN §8
and ``http_api``."""


def _not_the_service_s_admin_answer(method: str, path: str, body: bytes) -> str | None:
    """Why a 2xx answer to an administration call (``_ADMIN_ANSWERS``) is not one a service
    node gives, ``None`` when it is or when the call is not one of them (see
    ``_not_the_service_s_answer``). Another HTTP server's 200 with any JSON object was taken
    for a done call: ``cluster transfer --to 2`` printed "n2 leads", ``cluster members``
    empty voters, and an array failed with ``AttributeError``."""
    route = path.split("?")[0]
    if route.startswith("/cluster/learners/"):
        route = "/cluster/learners/"
    fields = _ADMIN_ANSWERS.get((method.upper(), route))
    if fields is None:
        return None
    try:
        obj = _loads(body)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and all(isinstance(obj.get(f), t) and not isinstance(obj.get(f), bool)
                                     for f, t in fields):
        return None
    return f"but not with a JSON object holding {', '.join(repr(f) for f, _ in fields)}: {_one_line(body, 100)}"


def _in_no_cluster(body: bytes) -> bool:
    """Whether a 503 body is a node's "not in a cluster yet" answer (``"initialized":
    false``): never initialized nor added, it will name no leader until an init or an add."""
    return _body_object(body).get("initialized") is False


def in_no_cluster_status(st: Mapping[str, Any]) -> bool:
    """Whether a ``GET /cluster/status`` answer is a node's in no cluster yet: no voter, no
    learner, no leader (as ``_in_no_cluster`` for a 503's body). ``find_leader`` and the
    command line's refusal to act on such nodes (``cli._what_the_endpoints_are``) ask this."""
    return st.get("voters") == [] and not st.get("learners") and st.get("leader_id") is None


def _nothing_done(body: bytes) -> bool:
    """Whether a 503 body says the node did nothing of the request: ``"outcome_unknown":
    false`` (``KvNode``'s ``ServiceUnavailable`` with ``nothing_done``)."""
    return _body_object(body).get("outcome_unknown") is False


def _stopping_refusal(body: bytes) -> bool:
    """Whether a 503 body is a stopping node's refusal: ``"stopping": true`` (a JSON
    boolean) and ``outcome_unknown`` absent or ``false``. The node did nothing of the
    request, for a reason that is not the request's (``KvNode``'s ``ServiceUnavailable``
    with ``stopping``, or any request once its stop began), so another node may take it, a
    write too. A server from before the field never says it: its ``"outcome_unknown":
    false`` stays a refusal of the request, not retried (``_nothing_done``)."""
    obj = _body_object(body)
    return obj.get("stopping") is True and obj.get("outcome_unknown", False) is False


def _no_leader_refusal(body: bytes) -> bool:
    """Whether a 503 body is the redirect rule's "no leader is known" answer (nothing was
    appended), as opposed to an unknown outcome or a stopped node."""
    obj = _body_object(body)
    return ("leader_id" in obj and not obj.get("outcome_unknown")
            and not str(obj.get("error", "")).startswith("the node has stopped"))



class CallTimes(TypedDict, total=False):
    """The keyword arguments ``KvClient.init`` passes on to ``KvClient.request``: a call's
    own ``deadline`` and ``attempt_timeout`` (seconds, finite and above 0)."""

    deadline: float | None
    attempt_timeout: float | None


class CallOptions(CallTimes, total=False):
    """The keyword arguments every other verb of ``KvClient`` (``put``, ``get``, ``cas``,
    ``add_learner``, ...) passes on to ``KvClient.request``: ``CallTimes`` and the
    ``endpoint`` to send the first attempt to, and whether to ``follow`` redirects. Typed,
    so that ``mypy --strict`` finds a misspelt one (``deadlin=3``), which the verbs took as
    ``**kw: Any`` and only the call found (``TypeError``)."""

    endpoint: str | None
    follow: bool


class KvClient:
    """A client of the service nodes at ``endpoints`` (``host:port`` of their HTTP API).

    ``deadline``: seconds a call may take in all (attempts, back-off, redirects);
    ``attempt_timeout``: seconds one HTTP attempt may take; ``connect_timeout``: seconds
    the attempt's connection may take to be made (at most ``attempt_timeout``): a node that
    does not complete it (a host that is down drops the connection request, and so does a
    node whose queue of connections is full) refused the attempt, and the call tries the
    next endpoint, a write too, since nothing was sent; ``max_redirects``: 307 hops
    followed in a row before the chain counts as a refusal; ``backoff`` / ``max_backoff``:
    the first and the largest pause between attempts (doubling, with jitter). ``session``: a
    session from ``new_session()`` to use (not closed by ``close()``; ``ValueError`` for
    another session); by default the client opens its own. One client may run many calls
    concurrently. The numbers are checked: ``deadline``, ``attempt_timeout`` and
    ``connect_timeout`` finite and above 0, ``backoff`` and ``max_backoff`` finite and at least 0, each at most
    ``argtypes.MAX_TIMEOUT`` (a day), with ``backoff <= max_backoff`` (the first pause is not the longest, as
    ``TcpNetworkFactory``'s ``backoff_min <= backoff_max``), ``max_redirects`` an int
    of at least 1 (``TypeError`` for a non-number or a ``bool``, ``ValueError`` otherwise).

    ``endpoints`` are kept once each, in the order given (a repeated one would be tried
    again in place of the next: ``[dead, dead, live]`` never reached ``live``).

    The client remembers the last leader it was redirected to and sends the next call there.

    A client belongs to the event loop of its first call (its session's connections are that
    loop's): a call from another loop raises ``RuntimeError``, nothing sent. Make one per
    loop, not one per process used under several ``asyncio.run``.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        deadline: float = 10.0,
        attempt_timeout: float = 5.0,
        connect_timeout: float = CONNECT_TIMEOUT,
        max_redirects: int = 5,
        backoff: float = 0.02,
        max_backoff: float = 0.5,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.endpoints = list(dict.fromkeys(parse_endpoints(endpoints)))
        self.deadline = check_duration(deadline, "deadline")
        self.attempt_timeout = check_duration(attempt_timeout, "attempt_timeout")
        self.connect_timeout = check_duration(connect_timeout, "connect_timeout")
        if isinstance(max_redirects, bool) or not isinstance(max_redirects, int):
            raise TypeError(f"max_redirects is an int, got {type(max_redirects).__name__} {max_redirects!r}")
        if max_redirects < 1:
            raise ValueError("max_redirects must be at least 1")
        self.max_redirects = max_redirects
        self.backoff = check_duration(backoff, "backoff", zero_ok=True)
        self.max_backoff = check_duration(max_backoff, "max_backoff", zero_ok=True)
        if self.backoff > self.max_backoff:  # (the first pause would be the longest)
            raise ValueError(f"backoff={self.backoff} must be at most max_backoff={self.max_backoff}")
        if session is not None and _TRACE not in session.trace_configs:
            raise ValueError("the session must come from openraft_py.kv.client.new_session()")
        self._session = session
        self._own_session = session is None
        self._closed = False
        # The loop of the first call (``_check_loop``): its session's connections are that
        # loop's. Invariant: set once, before the first call sends anything.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next = 0
        self.leader: str | None = None
        """``host:port`` of the leader as last learned from a redirect or an answer."""

    # -- lifecycle -------------------------------------------------------------------------------

    def _check_loop(self) -> None:
        """``RuntimeError`` (nothing sent) unless called on the event loop of the client's
        first call: its HTTP session and pooled connections belong to that loop. A call from
        another (another thread's loop, or a second ``asyncio.run``) failed inside aiohttp
        ("... attached to a different loop", "Event loop is closed") and, from a running
        loop, after its request was sent: a write applied, its caller told of an asyncio
        error."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            if self._loop.is_closed():
                where = "its event loop is closed (a second asyncio.run?)"
            else:
                where = "this call was made from another event loop (another thread, or another asyncio.run)"
            raise RuntimeError(
                f"this KvClient belongs to the event loop of its first call (its HTTP connections are that "
                f"loop's), and {where}: nothing was sent. Make one KvClient per event loop: "
                "async with KvClient(...) in the coroutine the loop runs")

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = new_session()
        return self._session

    async def close(self) -> None:
        """Close the session the client opened (not one it was given). Idempotent; a call
        made afterwards raises ``RuntimeError``, sending nothing (it opened a new session,
        which nothing closed: one per call for a client given a session).

        The session's connections belong to the loop of the client's first call
        (``_check_loop``), and are closed there: from another loop's coroutine, the close
        runs on that loop when it runs in another thread (bounded by
        ``CROSS_LOOP_CLOSE_WAIT``); when that loop is closed or not running, nothing can
        close them: ``RuntimeError`` saying so, nothing done (a close on its loop still
        closes it). (From another loop it failed inside aiohttp, "Non-thread-safe
        operation invoked on an event loop other than the current one", under asyncio's
        debug mode only, touching the other loop's transports from this thread otherwise;
        after the first loop ended it returned as if done, its connections left open.)"""
        session = self._session if self._own_session else None
        if session is not None and not session.closed:
            here = asyncio.get_running_loop()
            loop = self._loop
            if loop is not None and loop is not here and (loop.is_closed() or not loop.is_running()):
                state = "is closed (a second asyncio.run?)" if loop.is_closed() else "is not running"
                raise RuntimeError(
                    f"this KvClient's HTTP connections belong to the event loop of its first call, which {state}: "
                    "they cannot be closed from another loop, and the client was not closed. Close it in the loop "
                    "that used it, before that loop ends: async with KvClient(...) in the coroutine the loop runs")
            self._closed = True  # (from here on: no call starts on it, whatever the close meets)
            if loop is None or loop is here:
                await session.close()
            else:
                await self._close_on(loop, session)
        self._closed = True
        self._session = None

    @staticmethod
    async def _close_on(loop: asyncio.AbstractEventLoop, session: aiohttp.ClientSession) -> None:
        """``session.close()`` on ``loop``, running in another thread (see ``close``)."""
        here = asyncio.get_running_loop()
        done = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(session.close(), loop))
        end = here.time() + CROSS_LOOP_CLOSE_WAIT
        while not done.done():
            # (Polled: a loop that stops or closes meanwhile never runs the close.)
            await asyncio.wait({done}, timeout=0.05)
            if not done.done() and (loop.is_closed() or here.time() >= end):
                done.cancel()
                raise RuntimeError(f"this KvClient's event loop (of its first call, in another thread) did not "
                                   f"close its HTTP connections within {CROSS_LOOP_CLOSE_WAIT:g}s (it stopped or "
                                   "closed meanwhile?): they may be left open (the client takes no more calls)")
        done.result()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the call loop ---------------------------------------------------------------------------

    def _pick(self) -> str:
        if self.leader is not None:
            return self.leader
        ep = self.endpoints[self._next % len(self.endpoints)]
        return ep

    def _rotate(self, failed: str) -> None:
        if self.leader == failed:
            self.leader = None
        if failed in self.endpoints:
            self._next = self.endpoints.index(failed) + 1
        else:
            self._next += 1

    def _unknown(self, r: Response, follow: bool) -> Response:
        """``r``, a write's unknown outcome, after moving the next call on from ``r.node``
        (when the call followed redirects): a node that took the request and did not answer
        may be down or stopped, and the leader the client remembered was the next call's
        first attempt, however long a new leader had served."""
        if follow and r.node is not None:
            self._rotate(r.node)
        return r

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        json: Any = None,
        endpoint: str | None = None,
        follow: bool = True,
        deadline: float | None = None,
        attempt_timeout: float | None = None,
        next_endpoints: Sequence[str] = (),
    ) -> Response:
        """Run one call: ``method`` on ``path`` (with the query string), sending ``body``
        (raw) or ``json``; see the module docstring for the retries and the outcome.

        ``endpoint``: send the first attempt there (and only there when ``follow`` is
        false: no redirects followed, no other endpoint tried; a 307 is then answered
        as is, outcome ``OK``). ``next_endpoints`` (with ``follow`` false): where a refusal
        before anything was done (a refused connection, a 408, a 503 naming no leader or
        saying ``"stopping": true``) sends the call on, each in turn, once; the call fails
        once each refused, its ``error`` naming every refusal. ``deadline`` /
        ``attempt_timeout`` override the client's (``TypeError`` / ``ValueError``, nothing
        sent, unless a finite number above 0, at most a day). ``RuntimeError`` (nothing
        sent) once the client is closed, or when called from another event loop than the
        first call's (``_check_loop``)."""
        if self._closed:
            raise RuntimeError("the KvClient is closed: make a new one")
        self._check_loop()
        for what, v in (("deadline", deadline), ("attempt_timeout", attempt_timeout)):
            if v is not None:
                check_duration(v, what)
        loop = asyncio.get_running_loop()
        total = deadline if deadline is not None else self.deadline
        end = loop.time() + total
        per_try = attempt_timeout if attempt_timeout is not None else self.attempt_timeout
        idempotent = method.upper() == "GET"
        data = body if json is None else _json.dumps(json).encode()
        headers = {"Content-Type": "application/json"} if json is not None else {}
        pause = self.backoff
        redirects = retries = hops = attempts = 0
        again = False  # (the next attempt repeats a failed one: a retry once it starts)
        # The endpoints whose latest answer was "not in a cluster yet" (``_in_no_cluster``),
        # each with the time of the first answer of its current run of them.
        # Invariant: an endpoint leaves it at any other outcome of an attempt to it.
        in_no_cluster: dict[str, float] = {}
        node = endpoint if endpoint is not None else self._pick()
        url = f"http://{node}{path}"
        last: tuple[int | None, bytes, str] = (None, b"", "")
        # Not following: the endpoints a refusal goes on to, and the refusals so far.
        then = list(next_endpoints) if not follow else []
        refusals: list[str] = []
        while True:
            remaining = end - loop.time()
            if remaining <= 0 or (remaining < _RETRY_MIN and attempts):
                return self._gave_up(attempts, last, node, redirects, retries, total)
            attempts += 1
            retries += again
            again = False
            try:
                status, rheaders, rbody = await self._attempt(method, url, data, headers, min(per_try, remaining))
            except _NotHttp as e:  # no node there: nothing done (see _NotHttp)
                return Response(Outcome.FAIL, None, b"", node, str(e), redirects, retries)
            except _Refused as e:
                in_no_cluster.pop(node, None)
                last = (None, b"", str(e))
                if not follow and not then:
                    return self._refused(Response(Outcome.FAIL, None, b"", node, str(e), redirects, retries), refusals)
            except _Unknown as e:
                in_no_cluster.pop(node, None)
                if not follow or not idempotent:
                    return self._unknown(Response(Outcome.INFO, None, b"", node, str(e), redirects, retries), follow)
                last = (None, b"", str(e))
            else:
                no_cluster_since = in_no_cluster.pop(node, None)
                if status == 307 and follow:
                    location = rheaders.get("Location", "")
                    target = urllib.parse.urlsplit(location)
                    if target.scheme == "http" and target.netloc and hops < self.max_redirects:
                        redirects += 1
                        hops += 1
                        last = (status, rbody, f"{node} redirected to {target.netloc}, not reached in time")
                        node = target.netloc
                        self.leader = node
                        url = location
                        continue
                    last = (status, rbody, f"redirect loop or bad Location {location!r}")
                elif 200 <= status < 300 and (foreign := _not_the_service_s_answer(method, path, status, rheaders,
                                                                                   rbody)):
                    why = f"{node} answered HTTP {status}, {foreign} (is it an openraft-py HTTP address?)"
                    if idempotent:  # a read: nothing was done
                        return Response(Outcome.FAIL, status, rbody, node, why, redirects, retries)
                    return self._unknown(Response(Outcome.INFO, status, rbody, node, why, redirects, retries), follow)
                elif 200 <= status < 300 or status == 307 or (status == 404 and idempotent and path.startswith("/kv/")
                                                                and _key_not_found(rbody)):
                    if follow and status != 307:
                        self.leader = node
                    return Response(Outcome.OK, status, rbody, node, None, redirects, retries)
                elif status == 408:
                    # The request was not read (RFC 9110 §15.5.9): nothing was done, so it is a
                    # refusal, retried like one, a write too. A node answers so on the idle
                    # connections it closes (``http_api.StoppingConnections``, ``IdleConnections``),
                    # and a node whose body came too slowly; either way the next node may take it.
                    last = (status, rbody, f"HTTP 408: {_one_line(rbody)}")
                    if not follow and not then:
                        return self._refused(Response(Outcome.FAIL, status, rbody, node, last[2], redirects, retries),
                                             refusals)
                elif 400 <= status < 500:
                    return Response(Outcome.FAIL, status, rbody, node, f"HTTP {status}: {_one_line(rbody)}",
                                    redirects, retries)
                elif status == 503 and _stopping_refusal(rbody):
                    # The node is stopping (a rolling restart) and did nothing of the request:
                    # a refusal like a refused connection, retried at the next endpoint, a
                    # write too.
                    last = (status, rbody, f"HTTP 503: {_one_line(rbody)}")
                    if not follow and not then:
                        return self._refused(Response(Outcome.FAIL, status, rbody, node, last[2], redirects, retries),
                                             refusals)
                elif status == 503 and _nothing_done(rbody):
                    # The node did nothing of the request and says so, for the request's own
                    # sake (a host name its resolver could not tell about, which the leader,
                    # wherever the call goes, would resolve again), or a server from before
                    # ``stopping`` said so: a refusal, not retried here; the caller may retry it.
                    return Response(Outcome.FAIL, status, rbody, node, f"HTTP 503: {_one_line(rbody)}", redirects,
                                    retries)
                elif status == 503 and _no_leader_refusal(rbody):
                    last = (status, rbody, f"HTTP 503: {_one_line(rbody)}")
                    if not follow and not then:
                        return self._refused(Response(Outcome.FAIL, status, rbody, node, last[2], redirects, retries),
                                             refusals)
                    if _in_no_cluster(rbody):
                        now = loop.time()
                        in_no_cluster[node] = now if no_cluster_since is None else no_cluster_since
                        if (all(ep in in_no_cluster for ep in self.endpoints)
                                and now - min(in_no_cluster.values()) >= NO_CLUSTER_GRACE):
                            # Every endpoint is a node of no cluster, and has been for the
                            # grace: only an init or an add helps, which the answer names;
                            # retrying until the deadline (10 s on the command line) only
                            # delayed it.
                            return Response(Outcome.FAIL, status, rbody, node, last[2], redirects, retries)
                else:  # 5xx or anything else: the outcome of a write is unknown
                    why = f"HTTP {status}: {_one_line(rbody)}"
                    if not follow or not idempotent:
                        return self._unknown(Response(Outcome.INFO, status, rbody, node, why, redirects, retries),
                                             follow)
                    last = (status, rbody, why)
            again = True
            if not follow:  # (a refusal, with endpoints left to send the call on to)
                refusals.append(f"{node}: {last[2]}")
                node = then.pop(0)
                url = f"http://{node}{path}"
                continue
            # Try again: after a pause, at the next endpoint (or the leader last heard of).
            hops = 0
            self._rotate(node)
            await asyncio.sleep(min(pause * (0.5 + random.random()), max(0.0, end - loop.time())))
            pause = min(pause * 2, self.max_backoff)
            node = self._pick()
            url = f"http://{node}{path}"

    @staticmethod
    def _refused(r: Response, refusals: list[str]) -> Response:
        """``r``, the last refusal of a call not following redirects, naming the earlier
        ones (``refusals``: ``"host:port: why"``) when it was sent on (``next_endpoints``)."""
        if not refusals:
            return r
        error = "; ".join([*refusals, f"{r.node}: {r.error}"])
        return replace(r, error=f"every endpoint refused it, nothing was done: {error}")

    @staticmethod
    def _gave_up(attempts: int, last: tuple[int | None, bytes, str], node: str, redirects: int, retries: int,
                 deadline: float) -> Response:
        """The ``FAIL`` of a call whose deadline (``deadline`` seconds) is over: after
        ``attempts`` attempts, the last answer or reason ``last``. A deadline so short that it
        was over before the first attempt could start (``deadline=1e-9``) says so: the line
        said "gave up after 1 attempts: no attempt made"; and the count is of the attempts
        made (it counted the one the deadline stopped from starting)."""
        status, rbody, why = last
        if not attempts:
            error = f"no attempt made: the deadline of {deadline:g}s was over before the first could start"
        else:
            error = f"gave up after {attempts} attempt{'s' if attempts > 1 else ''}: {why}"
        return Response(Outcome.FAIL, status, rbody, node, error, redirects, retries)

    async def _attempt(
        self, method: str, url: str, data: bytes | None, headers: Mapping[str, str], timeout: float
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One HTTP exchange without following redirects. ``_Refused`` if nothing reached
        the server; ``_Unknown`` if the request may have been received but no answer came."""
        sends = _Sends()
        connect = min(self.connect_timeout, timeout)
        answered = False  # (the status line and headers parsed: an HTTP answer)
        try:
            async with self._http().request(
                method, _url(url), data=_body(data), headers=headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=connect), trace_request_ctx=sends,
            ) as resp:
                answered = True
                rbody = await resp.read()
                return resp.status, resp.headers, rbody
        except aiohttp.ClientResponseError as e:
            # Raised before ``resp`` exists, it is aiohttp's parse error of what came back
            # (a bad status line, bad headers): not HTTP. (A parse error of the body of an
            # HTTP answer is ClientPayloadError, below.)
            if answered or sends.count == 0:
                raise _Unknown(f"connection to {_host(url)} lost: {type(e).__name__}: {e}") from None
            reason = " ".join(str(e.message).split())
            reason = reason if len(reason) <= 200 else reason[:197] + "..."
            raise _NotHttp(f"{_host(url)} {NOT_HTTP}: {reason}") from None
        except aiohttp.ClientConnectorError as e:  # the (last) connection could not be made
            if sends.count == 0:
                raise _Refused(f"cannot connect to {_host(url)}: {_os_reason(e)}") from None
            raise _Unknown(f"connection to {_host(url)} lost after sending, then refused: "
                           f"{_os_reason(e)}") from None
        except TimeoutError as e:
            if sends.count == 0:  # (aiohttp's ServerTimeoutError: the connection's own bound)
                took = connect if isinstance(e, aiohttp.ServerTimeoutError) else timeout
                raise _Refused(f"cannot connect to {_host(url)} within {_seconds(took)}") from None
            raise _Unknown(f"no answer from {_host(url)} within {_seconds(timeout)}") from None
        except (aiohttp.ClientError, OSError) as e:
            what = f"{type(e).__name__}: {e}".rstrip(": ")
            if sends.count == 0:
                raise _Refused(f"cannot send to {_host(url)}: {what}") from None
            raise _Unknown(f"connection to {_host(url)} lost: {what}") from None

    # -- key-value verbs -------------------------------------------------------------------------

    async def put(self, key: str, value: str, **kw: Unpack[CallOptions]) -> Response:
        """``PUT /kv/{key}``; OK answers ``{"index": N}`` once committed and applied.
        ``TypeError`` (nothing sent) unless ``key`` and ``value`` are ``str`` (``ValueError``
        for an empty key, or one longer than ``MAX_KEY_BYTES`` bytes of UTF-8, in every
        key-value verb, and for a key or value UTF-8 cannot hold: a lone surrogate)."""
        if not isinstance(value, str):
            raise TypeError(f"a value is a str, got {type(value).__name__} {quoted(value)}")
        _check_utf8(value, "a value")
        return await self.request("PUT", f"/kv/{_quote_key(key)}", body=value.encode("utf-8"), **kw)

    async def get(self, key: str, consistency: str = "linearizable", **kw: Unpack[CallOptions]) -> Response:
        """``GET /kv/{key}?consistency=...``; an OK response has ``.value`` (``None`` when
        absent). ``local`` reads are answered by whichever node is asked. ``ValueError``
        (nothing sent) unless ``consistency`` is one the service knows."""
        if consistency not in CONSISTENCIES:
            raise ValueError(f"consistency must be one of {', '.join(CONSISTENCIES)}, got {consistency!r}")
        path = f"/kv/{_quote_key(key)}?consistency={urllib.parse.quote(consistency, safe='')}"
        return await self.request("GET", path, **kw)

    async def delete(self, key: str, **kw: Unpack[CallOptions]) -> Response:
        """``DELETE /kv/{key}``; OK answers ``{"index": N}``."""
        return await self.request("DELETE", f"/kv/{_quote_key(key)}", **kw)

    async def cas(self, key: str, expected: str | None, value: str | None, **kw: Unpack[CallOptions]) -> Response:
        """``POST /kv/{key}/cas``: set ``key`` to ``value`` (``None``: delete it) iff its
        value is ``expected`` (``None``: absent). OK answers ``{"ok": bool, "current": ...}``.
        ``TypeError`` (nothing sent) unless each of ``expected`` and ``value`` is a ``str`` or
        ``None`` (``ValueError`` for one UTF-8 cannot hold)."""
        for what, v in (("expected", expected), ("value", value)):
            if v is not None and not isinstance(v, str):
                raise TypeError(f"{what} is a str or None, got {type(v).__name__} {quoted(v)}")
            if v is not None:
                _check_utf8(v, what)
        return await self.request("POST", f"/kv/{_quote_key(key)}/cas",
                                  json={"expected": expected, "value": value}, **kw)

    # -- cluster administration ------------------------------------------------------------------

    async def init(self, members: Mapping[int, tuple[str, str]], endpoint: str | None = None,
                   next_endpoints: Sequence[str] | None = None, **kw: Unpack[CallTimes]) -> Response:
        """``POST /cluster/init`` at ``endpoint`` with ``members`` = ``{id: (raft_addr,
        http_addr)}``; not redirected. Then on to each of ``next_endpoints`` in turn when one
        refused before doing anything: a node whose stop began (its 503 with ``"stopping":
        true``, the 408 of its idle connection, or its HTTP port closed: a refused
        connection) does not fail the init that the others can take (``request``'s
        ``next_endpoints``). Without ``endpoint``: the client's endpoints, the first then
        the others; with ``endpoint`` alone: there only. ``TypeError`` / ``ValueError``
        (nothing sent) unless ``members`` maps at least one node id to a pair of ``str``
        (the service refuses an empty one with 400, after a round trip) and
        ``next_endpoints`` is ``None`` or a sequence of ``str``."""
        if next_endpoints is not None and (isinstance(next_endpoints, str | bytes) or not isinstance(next_endpoints, Sequence)
                                           or not all(isinstance(e, str) for e in next_endpoints)):
            raise TypeError(f"next_endpoints is a sequence of str (host:port), got {type(next_endpoints).__name__} "
                            f"{quoted(next_endpoints)}")
        if not isinstance(members, Mapping):
            raise TypeError(f"members is a mapping of node ids to (raft_addr, http_addr), got "
                            f"{type(members).__name__} {quoted(members)}")
        if not members:
            raise ValueError("members is empty: a cluster is initialized with at least one node")
        for i, addrs in members.items():
            check_node_id(i, "member id")
            if not (isinstance(addrs, tuple | list) and len(addrs) == 2 and all(isinstance(a, str) for a in addrs)):
                raise TypeError(f"member {i}: its addresses are a (raft_addr, http_addr) pair of str, got "
                                f"{type(addrs).__name__} {quoted(addrs)}")
        body = {"members": {str(i): {"raft_addr": r, "http_addr": h} for i, (r, h) in members.items()}}
        if next_endpoints is None:
            next_endpoints = self.endpoints[1:] if endpoint is None else ()
        return await self.request("POST", "/cluster/init", json=body,
                                  endpoint=endpoint if endpoint is not None else self.endpoints[0], follow=False,
                                  next_endpoints=next_endpoints, **kw)

    async def add_learner(self, node_id: int, raft_addr: str, http_addr: str, **kw: Unpack[CallOptions]) -> Response:
        """``POST /cluster/learners``; OK once the learner caught up (``{"index": N}``).
        ``TypeError`` / ``ValueError`` (nothing sent) unless ``node_id`` is a node id and
        each address a ``str``."""
        check_node_id(node_id, "learner id")
        for what, a in (("raft_addr", raft_addr), ("http_addr", http_addr)):
            if not isinstance(a, str):
                raise TypeError(f"{what} is a str (host:port), got {type(a).__name__} {quoted(a)}")
        return await self.request("POST", "/cluster/learners",
                                  json={"id": node_id, "raft_addr": raft_addr, "http_addr": http_addr}, **kw)

    async def remove_learner(self, node_id: int, **kw: Unpack[CallOptions]) -> Response:
        """``DELETE /cluster/learners/{node_id}``: remove learner ``node_id`` (the voters do
        not change); OK answers ``{"index", "voters", "learners"}`` once the entry removing
        it is committed. 404 when it is not a member, 409 when it is a voter. ``TypeError``
        / ``ValueError`` (nothing sent) unless ``node_id`` is a node id."""
        nid = check_node_id(node_id, "learner id")
        return await self.request("DELETE", f"/cluster/learners/{nid}", **kw)

    async def change_members(
        self, voters: Sequence[int], retain: bool = False, allow_lagging: bool = False,
        **kw: Unpack[CallOptions]
    ) -> Response:
        """``POST /cluster/members``: make ``voters`` the voters (``retain``: removed voters
        stay as learners; ``allow_lagging``: even if most of them have not caught up with the
        leader, which answers 409 otherwise); OK answers ``{"index", "voters", "learners"}``.
        ``TypeError`` / ``ValueError`` (nothing sent) unless ``voters`` is a non-empty sequence
        of distinct node ids (a ``str`` is not: ``"123"`` was sent as the voters ``"1"``,
        ``"2"``, ``"3"``) and ``retain`` and ``allow_lagging`` are ``bool``s (the service
        refuses the others with 400, after a round trip)."""
        if isinstance(voters, str | bytes) or not isinstance(voters, Iterable):
            raise TypeError(f"voters is a sequence of node ids, got {type(voters).__name__} {quoted(voters)}")
        for name, flag in (("retain", retain), ("allow_lagging", allow_lagging)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} is a bool, got {type(flag).__name__} {quoted(flag)}")
        ids = [check_node_id(v, "voter id") for v in voters]
        if not ids:
            raise ValueError("voters is empty: a cluster needs at least one voter")
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"voter ids {twice} are given more than once")
        body = {"voters": ids, "retain": retain}
        if allow_lagging:
            body["allow_lagging"] = True
        return await self.request("POST", "/cluster/members", json=body, **kw)

    async def transfer(self, to: int, **kw: Unpack[CallOptions]) -> Response:
        """``POST /cluster/transfer``; OK once ``to`` leads (``{"leader_id": to}``).
        ``TypeError`` / ``ValueError`` (nothing sent) unless ``to`` is a node id."""
        check_node_id(to, "transfer to")
        return await self.request("POST", "/cluster/transfer", json={"to": to}, **kw)

    async def status(self, endpoint: str, timeout: float = 2.0) -> dict[str, Any]:
        """``GET /cluster/status`` of the node at ``endpoint`` (no redirect, no retry);
        ``ClientError`` when it does not answer 200 with a service node's status (a JSON
        object with an integer ``id``)."""
        r = await self.request("GET", "/cluster/status", endpoint=endpoint, follow=False,
                               deadline=timeout, attempt_timeout=timeout)
        if r.status != 200:
            raise ClientError(Response(Outcome.FAIL, r.status, r.body, endpoint, r.error or
                                       f"HTTP {r.status}: {_one_line(r.body)}"))
        try:
            obj = r.json()
        except ValueError:
            obj = None
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), int):
            raise ClientError(Response(Outcome.FAIL, r.status, r.body, endpoint,
                                       f"{endpoint} answered a status that is not a service node's "
                                       f"(is it an openraft-py HTTP address?): {_one_line(r.body, 100)}"))
        return obj

    async def find_leader(self, timeout: float = 5.0) -> tuple[int, str]:
        """``(leader_id, leader_http_addr)`` once a node of ``endpoints`` names a leader
        whose status says it leads; ``TimeoutError`` after ``timeout`` seconds (each status
        asked for has the time left, at least 0.1 s: a node that never answers costs no
        more).

        Every endpoint is asked at once, in rounds, and the first answer naming a leader
        that says it leads ends the call: a node that does not answer (stopped with
        SIGSTOP, frozen, a host that is down) holds up none of the others. Asked one after
        another, each such node took up to 2 s before the next was asked, so with the first
        endpoint frozen ``find_leader(timeout=2)`` (``cluster members --timeout 2``) never
        reached the nodes that knew the leader.

        ``NoClusterError`` (a ``TimeoutError``) before ``timeout`` when every endpoint's
        status, in every round for ``NO_CLUSTER_GRACE`` (1 s), names no voter, no learner
        and no leader: nodes never initialized nor added, where no leader comes until an
        init (the calls' own rule, ``request``). It searched the whole timeout, then said
        "no leader found". One endpoint that does not answer, or is in a cluster, keeps the
        search going; so do nodes initialized a moment ago through another one, which hear
        of their cluster within the grace."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout

        def left() -> float:
            return min(2.0, max(0.1, end - loop.time()))

        named = ""  # (the last leader named that was asked, for the error)
        no_cluster_since: float | None = None  # since when every round found every endpoint in no cluster
        while True:
            found, why, none_in_a_cluster = await self._leader_in_one_round(left)
            if found is not None:
                self.leader = found[1]
                return found
            named = why or named
            now = loop.time()
            if not none_in_a_cluster:
                no_cluster_since = None
            elif no_cluster_since is None:
                no_cluster_since = now
            elif now - no_cluster_since >= NO_CLUSTER_GRACE:
                raise NoClusterError(
                    f"no leader found: no node at {', '.join(self.endpoints)} is in a cluster yet (each has named no "
                    f"voter and no leader for {_seconds(now - no_cluster_since)}). To start a new cluster, initialize "
                    "it once (POST /cluster/init, or 'openraft-py cluster init'); nodes of a running cluster (their "
                    "data directories lost or new) must not be initialized, which would start a second cluster: "
                    "ask its other nodes, and add back any that is no longer a member")
            if loop.time() >= end:
                raise TimeoutError(f"no leader found at {', '.join(self.endpoints)} within {_seconds(timeout)}{named}")
            await asyncio.sleep(0.05)

    async def _leader_in_one_round(
            self, left: Callable[[], float]) -> tuple[tuple[int, str] | None, str, bool]:
        """One round of ``find_leader``: every endpoint's status asked at once (each with
        ``left()`` seconds), and each leader they name asked once (unless its own status
        came in the round). ``((leader_id, http_addr), "", False)`` for the first named
        leader whose status says it leads; else ``(None, why, none_in_a_cluster)``, ``why``
        naming the last leader named that did not answer or does not lead ("" if none was
        named), ``none_in_a_cluster`` whether every endpoint answered a status naming no
        voter, no learner and no leader (``in_no_cluster_status``)."""
        asking = {asyncio.ensure_future(self.status(ep, timeout=left())): ep for ep in self.endpoints}
        answers: dict[str, dict[str, Any]] = {}
        asked_named: set[str] = set()
        named = ""
        try:
            while asking:
                done, _ = await asyncio.wait(asking, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    ep = asking.pop(task)
                    try:
                        st = task.result()
                    except ClientError:
                        continue
                    answers[ep] = st
                    http = st.get("leader_http_addr") or (st.get("http_addr") if st.get("state") == "Leader" else None)
                    lid = st.get("leader_id")
                    if lid is None or not http:
                        continue
                    lst = answers.get(http)
                    if lst is None:
                        if http in asked_named:
                            continue
                        asked_named.add(http)
                        try:
                            lst = await self.status(http, timeout=left())
                        except ClientError as e:
                            named = f" ({ep} names n{lid} at {http}, which did not answer: {e})"
                            continue
                    if lst.get("state") == "Leader":
                        return (int(lid), http), "", False
                    named = f" ({ep} names n{lid} at {http}, which is {lst.get('state')})"
        finally:
            for task in asking:
                task.cancel()
            # (collected: a task that ended with an error meanwhile would be reported unread)
            await asyncio.gather(*asking, return_exceptions=True)
        none_in_a_cluster = all(ep in answers and in_no_cluster_status(answers[ep]) for ep in self.endpoints)
        return None, named, none_in_a_cluster


class _Unknown(Exception):
    """An attempt whose effect is unknown (the request may have been received)."""


def _seconds(x: float) -> str:
    """``x`` seconds for a message: one decimal (``2.0s``), or two significant digits below
    0.1 s (``0.01s``: one decimal said an attempt of 10 ms had "no answer within 0.0s")."""
    return f"{x:.1f}s" if x >= 0.1 else f"{x:.2g}s"


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc


def os_error_text(err: OSError) -> str:
    """Why a connection failed, as the system says it ("Connection refused"): asyncio's
    ``OSError`` of a failed connect carries the right ``errno`` but the text "Connect call
    failed ('127.0.0.1', 1)", which does not say why. An error with no ``errno`` (several
    addresses of a name failed differently) as it reads."""
    if isinstance(err.errno, int) and err.errno > 0:
        return os.strerror(err.errno)
    return err.strerror or str(err)


def _os_reason(e: aiohttp.ClientConnectorError) -> str:
    err = e.os_error
    return os_error_text(err) if err is not None else str(e)
