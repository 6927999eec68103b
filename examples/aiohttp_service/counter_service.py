"""A replicated counter inside an aiohttp web application.

``add_raft_counter(app, options)`` is all an existing aiohttp application needs: it adds a
cleanup context that starts the Raft node (its TCP transport included) when the application
starts and stops it when the application stops, and three routes:

- ``POST /counter/incr`` (JSON body ``{"by": n}``, default 1, an integer within
  ``+-MAX_BY``; anything else gets 400): add ``n`` to the counter through the Raft log; answers ``{"value", "log_index", "served_by"}`` once the increment is
  committed and applied on the leader. A body that cannot be read (its ``Content-Encoding``
  does not decode it) gets 400, one over aiohttp's ``client_max_size`` (1 MiB) 413; every
  error of these routes is JSON, ``{"error": ...}``.
- ``GET /counter``: a linearizable read (ReadIndex on the leader): ``{"value", "served_by"}``.
- ``GET /counter/status``: this node's view: id, role, leader, term, last applied index and
  its local (possibly stale) value.

Leader forwarding: only the leader can write (and answer a linearizable read). A follower
that receives a request **forwards it to the leader over HTTP** and relays the leader's answer,
adding ``"forwarded_by"``. Clients can then talk to any node, and need not know the leader
or follow redirects; the cost is one extra hop through the follower. Rules:

- at most one hop: a forwarded request carries the ``X-Counter-Forwarded-By`` header, and a
  node that gets one while it is not the leader (leadership moved meanwhile) answers 503
  instead of forwarding again, so requests never loop between nodes;
- no known leader (an election is under way): 503 with ``Retry-After: 1``;
- the leader cannot be reached or does not answer in time: 502 / 504. For an increment the
  outcome is then **unknown** (the leader may have applied it): the answer says so, and a
  client that retries may count twice;
- the leader's own Raft call does not end within ``REQUEST_TIMEOUT`` (its increment did not
  commit, its leadership was not confirmed: a quorum is out of reach): 504, for an increment
  with ``"outcome_unknown": true`` (it may still commit once the quorum is back);
- a write appended by this node as leader whose fate it can no longer tell (a
  ``ForwardToLeader`` with ``outcome_unknown``): 503 with ``"outcome_unknown": true``, never
  forwarded (forwarding would apply it a second time if it did commit).
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import aiohttp
from aiohttp import web

from openraft_py import (
    BasicNode,
    Config,
    Entry,
    ForwardToLeader,
    LinearizableReadError,
    LogId,
    Membership,
    NodeId,
    Normal,
    Raft,
    ReadPolicy,
    Snapshot,
    SnapshotMeta,
    StoredMembership,
)
from openraft_py.network.tcp import TcpNetworkFactory, TcpServer
from openraft_py.storage import EMPTY_STORED_MEMBERSHIP, MemLogStore

__all__ = [
    "FORWARDED_HEADER",
    "CounterNode",
    "CounterOptions",
    "CounterStateMachine",
    "Peer",
    "add_raft_counter",
    "incr_command",
    "parse_peer",
]

FORWARDED_HEADER = "X-Counter-Forwarded-By"
"""Set on a request a follower forwards to the leader (the follower's id)."""

FORWARD_TIMEOUT = 5.0
"""Seconds a follower waits for the leader's answer to a forwarded request."""

REQUEST_TIMEOUT = 4.0
"""Seconds a node waits for its own Raft call (an increment to commit, a read's leadership to
be confirmed) before it answers 504. Raft itself keeps a write waiting for as long as its
leader is cut off from a quorum (until the partition heals): without this bound the client
waited for ever and a graceful stop for aiohttp's shutdown timeout. Less than
``FORWARD_TIMEOUT``, so that a follower relays the leader's own answer."""

EMPTY_MEMBERSHIP = EMPTY_STORED_MEMBERSHIP


def incr_command(by: int) -> bytes:
    """The log entry data that adds ``by`` to the counter (the response is the new value)."""
    return json.dumps({"op": "incr", "by": by}).encode()


MAX_BY = 2**63 - 1
"""The largest increment (in absolute value) ``POST /counter/incr`` takes: a 64-bit counter's
range, which keeps the value far from the size where ``json`` refuses to print an integer."""


def _increment(data: bytes) -> int | None:
    """The ``by`` of ``incr_command`` data, or ``None`` when ``data`` is not such a command
    (not JSON, another op, a ``by`` that is not an integer within ``+-MAX_BY``). Never raises:
    ``apply`` answers ``None`` for such an entry, since an exception there would stop every
    node; and the bound keeps the value printable as JSON, which every snapshot does."""
    try:
        cmd = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(cmd, dict) or cmd.get("op") != "incr":
        return None
    by = cmd.get("by")
    if not isinstance(by, int) or isinstance(by, bool) or abs(by) > MAX_BY:
        return None
    return by


class _Builder:
    def __init__(self, sm: CounterStateMachine) -> None:
        self._sm = sm

    async def build_snapshot(self) -> Snapshot:
        """A snapshot of the counter as of the last applied entry."""
        return self._sm._build()


class CounterStateMachine:
    """A ``RaftStateMachine`` holding one integer, in memory (snapshots in memory too).

    ``Normal`` entries from ``incr_command`` add to it and answer the new value; other data
    (``_increment`` gives ``None``) is a no-op answering ``None``.
    """

    def __init__(self) -> None:
        self.value = 0
        self._last_applied: LogId | None = None
        self._membership = EMPTY_MEMBERSHIP
        self._snapshot: tuple[SnapshotMeta, bytes] | None = None
        self._seq = 0

    async def applied_state(self) -> tuple[LogId | None, StoredMembership]:
        """``(last applied log id, last applied membership)``."""
        return self._last_applied, self._membership

    async def apply(self, entries: list[Entry]) -> list[Any]:
        """Apply ``entries``; an increment answers the new value, anything else ``None``."""
        out: list[Any] = []
        for entry in entries:
            payload = entry.payload
            if isinstance(payload, Normal):
                by = _increment(payload.data)
                if by is None:
                    out.append(None)
                    continue
                self.value += by
                out.append(self.value)
            else:
                if isinstance(payload, Membership):
                    self._membership = StoredMembership(entry.log_id, payload)
                out.append(None)
        if entries:
            self._last_applied = entries[-1].log_id
        return out

    def _build(self) -> Snapshot:
        self._seq += 1
        last = self._last_applied
        meta = SnapshotMeta(last, self._membership, f"{last!r}-{self._seq}")
        data = json.dumps({"counter": self.value}).encode()
        self._snapshot = (meta, data)
        return Snapshot(meta, io.BytesIO(data))

    def get_snapshot_builder(self) -> _Builder:
        """A builder of a snapshot of the current value."""
        return _Builder(self)

    async def begin_receiving_snapshot(self) -> BinaryIO:
        """A new empty in-memory file."""
        return io.BytesIO()

    async def install_snapshot(self, meta: SnapshotMeta, data: BinaryIO) -> None:
        """Adopt the snapshot's value; ``ValueError`` if ``data`` is not a counter snapshot."""
        data.seek(0)
        raw = data.read()
        try:
            value = json.loads(raw)["counter"]
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"not a counter snapshot: {e}") from e
        if not isinstance(value, int):
            raise ValueError("not a counter snapshot: the value is not an integer")
        self.value = value
        self._last_applied, self._membership = meta.last_log_id, meta.last_membership
        self._snapshot = (meta, raw)

    async def get_current_snapshot(self) -> Snapshot | None:
        """The last snapshot built or installed, or ``None``."""
        if self._snapshot is None:
            return None
        meta, data = self._snapshot
        return Snapshot(meta, io.BytesIO(data))


@dataclass(frozen=True)
class Peer:
    """Where a node listens: ``raft`` (``host:port`` of its TCP transport) and ``http``."""

    raft: str
    http: str


def _is_address(text: str) -> bool:
    """True for ``HOST:PORT`` with a host and a port in 1..65535."""
    host, _, port = text.rpartition(":")
    return bool(host) and port.isdecimal() and port.isascii() and 0 < int(port) < 65536


def parse_peer(text: str) -> tuple[NodeId, Peer]:
    """``"ID=RAFT_HOST:PORT/HTTP_HOST:PORT"`` -> ``(id, Peer)``; ``ValueError`` otherwise (a
    port must be a number in 1..65535)."""
    node_id, _, addrs = text.partition("=")
    raft, _, http = addrs.partition("/")
    if not (node_id.isdecimal() and node_id.isascii()) or not _is_address(raft) or not _is_address(http):
        raise ValueError(f"a peer is ID=RAFT_HOST:PORT/HTTP_HOST:PORT (ports 1-65535), got {text!r}")
    return int(node_id), Peer(raft, http)


@dataclass(frozen=True)
class CounterOptions:
    """How to run this node: its id, every node's addresses (``peers`` includes this node),
    whether this node initializes the cluster (exactly one node of a new cluster does), the
    cluster name checked by the transport, and the Raft ``Config``."""

    node_id: NodeId
    peers: dict[NodeId, Peer]
    initialize: bool = False
    cluster_name: str = "counter"
    config: Config = field(
        default_factory=lambda: Config(election_timeout_min=500, election_timeout_max=1000, heartbeat_interval=100)
    )


class CounterNode:
    """The Raft side of the application: the node, its transport and the forwarding client.

    ``start``/``stop`` are called by the cleanup context ``add_raft_counter`` installs.
    """

    def __init__(self, options: CounterOptions) -> None:
        self.options = options
        self.sm = CounterStateMachine()
        self._raft: Raft | None = None
        self._server: TcpServer | None = None
        self._factory: TcpNetworkFactory | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def raft(self) -> Raft:
        """The running node (``RuntimeError`` before ``start``)."""
        if self._raft is None:
            raise RuntimeError("the counter node is not started")
        return self._raft

    async def start(self) -> None:
        """Start the Raft node over its TCP transport; initialize the cluster if asked to.
        If a step fails (the Raft address is in use, say), what was started is stopped again
        and the error raised: the application does not start, and a Raft node left running
        would go on ticking and calling its peers in the process."""
        opts = self.options
        me = opts.peers[opts.node_id]
        host, _, port = me.raft.rpartition(":")
        try:
            self._factory = TcpNetworkFactory(opts.node_id, opts.cluster_name)
            self._raft = await Raft.new(opts.node_id, opts.config, self._factory, MemLogStore(), self.sm)
            self._server = await TcpServer.start(self._raft, host, int(port), opts.cluster_name)
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT))
            if opts.initialize:
                await self._raft.initialize({i: BasicNode(p.raft) for i, p in opts.peers.items()})
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop serving peers, shut the node down, close the clients. Idempotent."""
        if self._server is not None:
            await self._server.close()
        if self._raft is not None:
            await self._raft.shutdown()
        if self._factory is not None:
            await self._factory.close()
        if self._session is not None:
            await self._session.close()
        self._server = self._factory = self._session = None

    # -- the HTTP handlers ------------------------------------------------------------------------

    def _answer(self, body: dict[str, Any], status: int = 200) -> web.Response:
        return web.json_response({**body, "served_by": self.options.node_id}, status=status)

    async def handle_incr(self, request: web.Request) -> web.Response:
        """``POST /counter/incr``: replicate an increment (forwarded when not the leader)."""
        try:
            body = await request.json() if request.can_read_body else {}
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            body = None
        except web.HTTPRequestEntityTooLarge:
            return self._answer({"error": f"the body is larger than {request.client_max_size} bytes"}, 413)
        except web.RequestPayloadError as e:  # a Content-Encoding it is not in, a malformed chunk
            # The rest of the body cannot be read either: end it here, and close the
            # connection after the answer (aiohttp would read on for the next request, and
            # log the same error again as an "Unhandled exception" with its traceback).
            request.content.feed_eof()
            refused = self._answer({"error": f"the body could not be read: {' '.join(str(e).split())}"}, 400)
            refused.force_close()
            return refused
        by = body.get("by", 1) if isinstance(body, dict) else None
        if not isinstance(by, int) or isinstance(by, bool) or abs(by) > MAX_BY:
            return self._answer({"error": f'the body must be JSON like {{"by": 1}}, "by" an integer within +-{MAX_BY}'}, 400)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                resp = await self.raft.client_write(incr_command(by))
        except ForwardToLeader as e:
            if e.outcome_unknown:
                return self._answer({"error": str(e), "outcome_unknown": True}, 503)
            return await self._forward(request, e, {"by": by}, outcome_unknown_on_error=True)
        except TimeoutError:
            error = f"the increment did not commit within {REQUEST_TIMEOUT}s (is a quorum of nodes reachable?)"
            return self._answer({"error": error, "outcome_unknown": True}, 504)
        return self._answer({"value": resp.data, "log_index": resp.log_id.index})

    async def handle_read(self, request: web.Request) -> web.Response:
        """``GET /counter``: a linearizable read on the leader (forwarded otherwise)."""
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await self.raft.ensure_linearizable(ReadPolicy.READ_INDEX)
        except ForwardToLeader as e:
            return await self._forward(request, e, None, outcome_unknown_on_error=False)
        except LinearizableReadError as e:
            return self._answer({"error": f"leadership not confirmed: {e}"}, 503)
        except TimeoutError:
            return self._answer({"error": f"leadership not confirmed within {REQUEST_TIMEOUT}s"}, 504)
        return self._answer({"value": self.sm.value})

    async def handle_status(self, request: web.Request) -> web.Response:
        """``GET /counter/status``: this node's view of the cluster (never forwarded)."""
        m = self.raft.metrics
        return self._answer(
            {
                "id": m.id,
                "state": m.state.value,
                "leader": m.current_leader,
                "term": m.current_term,
                "last_applied": None if m.last_applied is None else m.last_applied.index,
                "local_value": self.sm.value,
            }
        )

    async def _forward(
        self, request: web.Request, e: ForwardToLeader, body: dict[str, Any] | None, *, outcome_unknown_on_error: bool
    ) -> web.Response:
        """Send ``request`` to the leader ``e`` names and relay its answer (module docstring)."""
        if FORWARDED_HEADER in request.headers:
            return self._answer({"error": "leadership moved while the request was forwarded; retry"}, 503)
        leader = e.leader_id
        if leader is None or leader not in self.options.peers:
            resp = self._answer({"error": "no leader is known (an election is under way); retry"}, 503)
            resp.headers["Retry-After"] = "1"
            return resp
        assert self._session is not None
        url = f"http://{self.options.peers[leader].http}{request.path_qs}"
        headers = {FORWARDED_HEADER: str(self.options.node_id)}
        try:
            async with self._session.request(request.method, url, json=body, headers=headers) as r:
                answer = await r.json()
                return web.json_response({**answer, "forwarded_by": self.options.node_id}, status=r.status)
        except (TimeoutError, aiohttp.ClientError, ValueError) as err:
            status = 504 if isinstance(err, asyncio.TimeoutError) else 502
            out: dict[str, Any] = {"error": f"forwarding to leader {leader} failed: {err!r}"}
            if outcome_unknown_on_error:
                out["outcome_unknown"] = True
            return self._answer(out, status)


COUNTER_NODE = web.AppKey("counter_node", CounterNode)
"""Where ``add_raft_counter`` puts the ``CounterNode`` in the application."""


def add_raft_counter(app: web.Application, options: CounterOptions) -> CounterNode:
    """Embed a replicated counter in ``app``: its routes, and a cleanup context that starts
    the Raft node with the application and stops it with the application."""
    node = CounterNode(options)
    app[COUNTER_NODE] = node

    async def raft_lifecycle(_app: web.Application) -> AsyncIterator[None]:
        await node.start()
        try:
            yield
        finally:
            await node.stop()

    app.cleanup_ctx.append(raft_lifecycle)
    app.router.add_post("/counter/incr", node.handle_incr)
    app.router.add_get("/counter", node.handle_read)
    app.router.add_get("/counter/status", node.handle_status)
    return node
