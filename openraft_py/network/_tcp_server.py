"""The TCP transport's server side: ``TcpServer`` and its connections (see
``openraft_py.network.tcp`` for the picture)."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ipaddress
import logging
import os
import resource
import socket
from collections import deque
from ssl import PROTOCOL_TLS_CLIENT, SSLContext
from typing import Any, Protocol, Self

from .._core import CodecError, FrameReader, FrameTooLarge
from ..config import Config
from ..core.messages import Reply
from ..errors import ApiError, Fatal, InvalidRequest
from ..failure_log import FailureLog
from ..metrics import RaftMetrics
from ..types import AppendEntriesResponse, InstallSnapshotResponse, NodeId, Vote, VoteResponse
from ..validation import check_implements, check_node_id, shown
from . import RaftServer, wire
from ._tcp_client import check_frame_size
from ._tcp_common import (
    DEFAULT_MAX_FRAME_SIZE,
    FIRST_BYTES_KEPT,
    PeerIdOfCert,
    _FrameWriter,
    _set_nodelay,
    cert_mismatch,
    check_cert_binding,
    check_count,
    check_duration,
    check_frame_limit,
    check_frame_rate,
    check_server_certificate,
    foreign_protocol_hint,
    http_refusal,
    log,
)
from .accept_errors import AcceptErrors, stop_accepting
from .wire import (
    ERR_FATAL,
    ERR_INVALID,
    ERR_REFUSED,
    ERR_REMOTE,
    ERR_UNSUPPORTED,
    KIND_APPEND_ENTRIES,
    KIND_APPEND_ENTRIES_RESP,
    KIND_ERROR,
    KIND_HELLO,
    KIND_HELLO_ACK,
    KIND_INSTALL_SNAPSHOT,
    KIND_NAMES,
    KIND_TRANSFER_LEADER,
    KIND_VOTE,
    RESPONSE_KIND,
    ErrorBody,
    Hello,
    HelloAck,
    WireError,
    decode_body,
    frame_message,
    split_payload,
)

__all__ = ["ServedRaft", "TcpServer", "DEFAULT_MAX_CONNECTIONS", "tcp_connection_limit"]


class ServedRaft(RaftServer, Protocol):
    """What ``TcpServer.start`` serves: a ``RaftServer`` that also shows the node's metrics
    (the handshake checks a sender against the membership in them). ``Raft`` is one."""

    @property
    def metrics(self) -> RaftMetrics:
        """The node's current metrics."""
        ...


def _check_running(raft: ServedRaft) -> None:
    """``ValueError`` if ``raft`` has stopped (its metrics say ``running`` is false: its
    ``shutdown()`` ran, or it failed): served, every peer's request to it failed, and its
    peers saw it only as unreachable, while nothing said why here (as ``Raft.new`` refuses a
    closed network factory). A stopped ``Raft`` never serves again; serve the one
    ``Raft.new`` returns for the node's next run."""
    if getattr(raft.metrics, "running", True) is not False:
        return
    raise ValueError(
        f"raft {shown(raft)} has stopped (its shutdown() ran, or it failed), so it cannot be served: "
        "start the server on the Raft that Raft.new returns for the node's next run")


_HANDLER = {
    KIND_APPEND_ENTRIES: "append_entries",
    KIND_VOTE: "vote",
    KIND_INSTALL_SNAPSHOT: "install_snapshot",
    KIND_TRANSFER_LEADER: "handle_transfer_leader",
}


_RESPONSE_TYPE: dict[int, type] = {
    KIND_APPEND_ENTRIES: AppendEntriesResponse,
    KIND_VOTE: VoteResponse,
    KIND_INSTALL_SNAPSHOT: InstallSnapshotResponse,
    KIND_TRANSFER_LEADER: type(None),
}
"""What each handler of a ``RaftServer`` must return (``handle_transfer_leader``: ``None``)."""


def _request_sender(kind: int, req: Any) -> NodeId:
    """The node a well-formed request comes from: the leader or candidate it names."""
    vote: Vote = req.from_leader if kind == KIND_TRANSFER_LEADER else req.vote
    return vote.leader_id.node_id


def _known_sender(metrics: Any, node_id: NodeId) -> bool:
    """Whether ``node_id`` is a sender this node knows (``_may_connect`` also takes any
    sender while this node has no leader, on a server that does not bind certificates to
    ids): any node while this one has no membership yet (a
    node about to be added knows no one); otherwise a node of its membership (voters and
    learners), or the leader it follows (a leader that removed itself keeps replicating the
    change and hands over to nodes that already left it out): the leader of its committed
    vote, heard from lately or not (``current_leader`` names none once this node's election
    timer fired, and that leader, slow for a moment, would be shut out before its change
    commits)."""
    nodes = metrics.membership_config.membership.nodes
    if not nodes or node_id in nodes:
        return True
    vote = getattr(metrics, "vote", None)
    return vote is not None and vote.committed and vote.leader_id.node_id == node_id


def _may_connect(metrics: Any, node_id: NodeId, bound: bool) -> bool:
    """Whether a connection from ``node_id`` may open and stay open: a known sender
    (``_known_sender``), or, on a server that does not bind certificates to node ids
    (``bound`` false: no ``peer_id_of_cert``), any node while this one has no leader
    (``current_leader`` is ``None``: its election timer fired, or it has just started).

    A node that was down while a membership change added node 4 holds the old membership:
    when the only nodes it knows are gone as well, node 4 is the one node that can bring it
    up to date, and a refusal of node 4 left the cluster without a quorum for good. What such
    a connection delivers meets the engine's checks of vote and log only: a sender that lies
    about its term and log can win the node's vote and become the leader it follows. Without
    binding, any peer can do that anyway by speaking as a member (the id a hello claims is
    not checked), so the exception opens nothing new; with binding the id is what the
    certificate proves, and a certificate of an id outside the membership (a removed node's)
    is refused at every node that holds a membership, with a leader or without (a member
    that missed a change then waits for a node it knows: ``docs/design/wire.md``,
    "Handshake")."""
    if _known_sender(metrics, node_id):
        return True
    # (Metrics without ``current_leader``, of a ``RaftServer`` of the application's, keep
    # the membership rule alone.)
    return not bound and getattr(metrics, "current_leader", _NO_FIELD) is None


_NO_FIELD = object()


def _check_same_cluster_name(raft: object, cluster_name: str) -> None:
    """``ValueError`` unless ``cluster_name`` is the cluster name of the network factory of
    ``raft`` (a ``Raft``) when that factory has one (a ``TcpNetworkFactory``'s, ``""``
    included: the hello carries it as any other): the node's peers dial with their
    factories, which send the cluster's one name, so a server of another name refused every
    one of them ("wrong cluster name", logged as WARNING only) and the node was never
    reached. The Raft ``Config.cluster_name`` is not compared (the transport does not read
    it), nor is a factory without a ``cluster_name`` (another transport's)."""
    from ..raft import Raft  # (here: the node's module imports the network's)

    if not isinstance(raft, Raft):
        return
    factory_name = getattr(raft._core.network, "cluster_name", None)
    if isinstance(factory_name, str) and factory_name != cluster_name:
        raise ValueError(
            f"cluster_name={shown(cluster_name)} is not the cluster name of the node's network factory, "
            f"{shown(factory_name)}: its peers dial with that name and this server would refuse every one "
            "of them; give TcpServer.start and every node's TcpNetworkFactory the cluster's one name"
        )


_NOT_TLS_REASONS = frozenset({"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE"})
"""The ``ssl.SSLError.reason`` of a TLS handshake whose peer sent something else than TLS (a
node without a TLS context sends its plain hello)."""

_sched_yield = getattr(os, "sched_yield", None)  # POSIX only

DEFAULT_FRAME_TIMEOUT = 30.0
"""``TcpServer.start(frame_timeout=...)``: seconds a frame in progress may stall in all."""

DEFAULT_MIN_FRAME_RATE = 16 * 1024
"""``TcpServer.start(min_frame_rate=...)``: bytes per second a frame in progress must arrive
at, on average, after its ``frame_timeout``. Far below any link a cluster can work on with
the default ``Config`` (a leader gives a snapshot chunk or an AppendEntries
``Config.install_snapshot_timeout`` or the replication's base deadline plus its bytes at
``Config.replication_min_rate``, 1 MiB/s by default, 64 times this rate), and still enough
to close a peer that trickles a frame. A cluster whose ``replication_min_rate`` is set below
it (a link slower than 16 KiB/s) must lower it to that rate too: the server cuts a frame
that arrives more slowly once ``frame_timeout`` is over, whatever the leader's deadline."""

DEFAULT_MAX_CONNECTIONS = 256
"""The most connections a ``TcpServer`` holds open at once when ``start`` is given no
``max_connections`` (fewer under a low descriptor limit: ``tcp_connection_limit``)."""


MAX_CONNECTIONS = 65536
"""The largest ``max_connections`` ``TcpServer.start`` takes: a connection holds a file
descriptor, and a number beyond any descriptor limit a node runs under bounds nothing (the
descriptors run out first, and the node's stores fail with them)."""

MAX_INFLIGHT = 1024
"""The largest ``max_inflight`` ``TcpServer.start`` takes: each request in flight may hold a
frame of up to ``max_frame_size`` bytes, and a connection's requests wait on one node (16
times the default, 64, is more than a leader's pipeline sends)."""


def tcp_connection_limit() -> int:
    """``TcpServer.start``'s default ``max_connections``: ``DEFAULT_MAX_CONNECTIONS``, but at
    most a quarter of the process's soft limit of open files (``RLIMIT_NOFILE``), and at
    least 8. Each connection takes a file descriptor, and the node's stores need others: 250
    connections that sent nothing (a stranger, a misconfigured peer), each reopened as soon
    as ``handshake_timeout`` closed it, took the last descriptors of a node limited to 256,
    and its next snapshot build failed ("Too many open files": the node stopped). A quarter
    leaves the rest to the stores, the peers' outgoing connections and (in the key-value
    service) the HTTP port, which takes at most half."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return DEFAULT_MAX_CONNECTIONS
    return min(DEFAULT_MAX_CONNECTIONS, max(8, soft // 4))


YIELD_MAX_ENTRIES = 16
"""A follower yields after answering (``TcpServer.start(yield_after_answer=...)``) only a
request of 1 to this many entries: what it does next (applying them) is short, while after a
large batch the delay would hold back its next round."""


def _error_frame(rid: int, code: int, message: str) -> bytearray:
    """The error frame answering request ``rid`` (0: the handshake) with ``message`` as
    the wire can carry it: at most ``wire.MAX_MESSAGE_LEN`` characters, and a lone surrogate
    (a path decoded with ``surrogateescape`` in a storage error, a state machine's message)
    written as its escape. msgspec refuses to encode one, so the request used to go
    unanswered (the peer waited for its timeout) with a traceback logged instead."""
    text = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return frame_message(KIND_ERROR, rid, ErrorBody(code, text[: wire.MAX_MESSAGE_LEN]))


def is_loopback_peer(peername: object) -> bool:
    """Whether a socket's ``peername`` is a loopback address (``127.0.0.0/8``, ``::1``, or
    an IPv4-mapped loopback): the peer runs on this machine."""
    if not isinstance(peername, tuple) or not peername or not isinstance(peername[0], str):
        return False
    try:
        addr = ipaddress.ip_address(peername[0].split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return bool(addr.is_loopback or (mapped is not None and mapped.is_loopback))


class _Answer:
    """The ``reply`` of one AppendEntries handed to ``Raft.submit_append_entries``: writes
    the response (or the error) to the connection at once, then ends the request."""

    __slots__ = ("conn", "n", "rid", "fired", "yields")

    def __init__(self, conn: _ServerConnection, n: int, rid: int, yields: bool) -> None:
        self.conn = conn
        self.n = n
        self.rid = rid
        self.fired = False
        self.yields = yields  # ``os.sched_yield()`` once the answer is written (``TcpServer.start``)

    def __call__(self, value: Any) -> None:
        self.fired = True
        conn = self.conn
        try:
            if isinstance(value, BaseException):
                conn._answer_exception(self.rid, value)  # (logged even if the peer is gone)
            else:
                try:
                    frame = frame_message(KIND_APPEND_ENTRIES_RESP, self.rid, value)
                except (TypeError, ValueError):  # not a response: a bug of the RaftServer
                    conn._answer_bad_value(self.rid, "append_entries", value)
                else:
                    conn._send(frame)
            if not conn.closed and conn.writer is not None:
                conn.writer.flush()  # now: the node's pass goes on (e.g. to apply) after this
                if self.yields:
                    # The answer woke the leader; on a shared core it waits behind what this
                    # node does next (its apply): let it run first (``TcpServer.start``).
                    _sched_yield()  # type: ignore[misc]  # not None: ``yields`` checks it
        finally:
            conn._done(self.n)


class _ServerConnection(asyncio.Protocol):
    """One accepted connection: handshake, then requests dispatched concurrently."""

    def __init__(self, server: TcpServer) -> None:
        self.server = server
        self.loop = server._loop
        self.transport: asyncio.Transport | None = None
        self.writer: _FrameWriter | None = None
        self.peer = "?"
        self.peer_host = "?"
        """The peer's address without its port: what its refusals are logged by
        (``TcpServer._refusal_log``)."""
        self.yield_after_answer = False
        """Whether an AppendEntries answer is followed by ``os.sched_yield()`` (see
        ``TcpServer.start``); decided when the connection is made."""
        self.sender: NodeId | None = None
        self.reader = FrameReader(wire.MAX_HELLO_FRAME)
        self.tasks: dict[int, asyncio.Task[None] | Reply] = {}
        """The requests being handled, by a number of this connection (``started``): their
        tasks, or the handles of those given to ``submit_append_entries`` (both have
        ``cancel()``). Each removes itself as it ends (connection_lost cancels the rest)."""
        self.started = 0
        # Inside ``_pump``'s loop: a request ending meanwhile (a stopped node answers a
        # submitted request before the call returns) leaves the backlog to that loop
        # instead of starting a nested one (one level per request: a deep recursion).
        self.pumping = False
        self.backlog: deque[tuple[int, int, memoryview]] = deque()
        self.paused = False
        self.write_paused = False
        self.draining = False
        self.closed = False
        self.last_activity = self.opened = self.loop.time()
        server._accepted += 1
        self.number = server._accepted
        """Its place in the order connections were accepted (``TcpServer._make_room``: the
        loop's clock may give several the same ``opened``)."""
        self.in_frame = False
        """Whether a frame has started to arrive and is not complete (after the handshake)."""
        self.frame_time = 0.0
        """Seconds the server has been reading this connection since the frame in progress
        started (``_frame_clock``): time with reading paused does not count."""
        self.frame_since: float | None = None
        """The loop time ``frame_time`` was last brought up to, while it runs (a frame in
        progress and reading on); ``None`` while it stands still."""
        self.handshake_timer: asyncio.TimerHandle | None = None
        self.first = b""
        """The first bytes received before the handshake (``foreign_protocol_hint``)."""
        self.tls_task: asyncio.Task[None] | None = None
        self.gone: asyncio.Future[None] = self.loop.create_future()
        """Done once the transport is closed (``connection_lost``): ``TcpServer.close`` waits
        for it after asking a connection to close once its answers are written."""

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        peername = transport.get_extra_info("peername")
        self.peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        self.peer_host = str(peername[0]) if isinstance(peername, tuple) else self.peer
        srv = self.server
        self.yield_after_answer = _sched_yield is not None and (
            is_loopback_peer(peername) if srv.yield_after_answer is None else srv.yield_after_answer
        )
        if srv._closing:
            transport.close()
            self.closed = True
            return
        if srv._accept_errors is not None:
            srv._accept_errors.accepted()
        if len(srv._conns) >= srv.max_connections and not srv._make_room():
            self._drop_repeating(f"too many connections ({srv.max_connections})", "too many connections")
            return
        srv._conns.add(self)
        _set_nodelay(transport)
        self.handshake_timer = self.loop.call_later(srv.handshake_timeout, self._handshake_timeout)
        if srv._ssl is not None:
            # TLS is layered here rather than by the listener, so that a failed TLS handshake
            # is seen (logged with its reason), counted and bounded like any refusal. This is
            # what ``loop.start_tls`` does, done synchronously: no byte can reach this
            # protocol unencrypted in between (uvloop reads before a coroutine could run).
            waiter: asyncio.Future[None] = self.loop.create_future()
            try:
                tls = asyncio.sslproto.SSLProtocol(
                    self.loop,
                    self,
                    srv._ssl,
                    waiter,
                    server_side=True,
                    call_connection_made=False,
                    ssl_handshake_timeout=srv.handshake_timeout,  # type: ignore[arg-type]  # typeshed says int; asyncio takes seconds as float
                )
                transport.set_protocol(tls)
                tls.connection_made(transport)
            except Exception as e:  # noqa: BLE001 - the context cannot serve: never go on in plain TCP
                self._drop(f"TLS cannot start on it: {e!r}", logging.ERROR)
                return
            self.transport = tls._get_app_transport()  # type: ignore[attr-defined]  # private in CPython 3.11-3.13, not in typeshed
            self.writer = _FrameWriter(self.loop, self.transport)
            self.tls_task = self.loop.create_task(self._tls_handshake(waiter, transport))
            return
        self.writer = _FrameWriter(self.loop, transport)  # type: ignore[arg-type]

    async def _tls_handshake(self, waiter: asyncio.Future[None], raw: asyncio.BaseTransport) -> None:
        try:
            await waiter
        except (TimeoutError, OSError, EOFError, ValueError, RuntimeError, ConnectionError) as e:
            if not self.closed:
                srv = self.server
                self.closed = True
                srv._conns.discard(self)
                srv.refused += 1
                if self.handshake_timer is not None:
                    self.handshake_timer.cancel()
                hint = ""
                if getattr(e, "reason", None) in _NOT_TLS_REASONS:
                    hint = " (the peer does not speak TLS: is TLS configured on this node only?)"
                elif getattr(e, "reason", None) == "NO_SHARED_CIPHER":
                    hint = " (has this node's ssl context a certificate? load_cert_chain)"
                elif isinstance(e, ConnectionResetError) or "ALERT" in str(getattr(e, "reason", "")):
                    # What a client that refuses this node's certificate does; it logs why.
                    hint = " (did the client refuse this node's certificate? its log says why)"
                srv._refusal_log(self.peer_host, None).failed(
                    self.loop.time(), f"TLS {type(e).__name__} {getattr(e, 'reason', None)}",
                    f"TLS refused the connection from {self.peer}: {e!r}{hint}")
                raw.close()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_activity = self.loop.time()
        if self.sender is None and len(self.first) < FIRST_BYTES_KEPT:
            self.first += data[: FIRST_BYTES_KEPT - len(self.first)]
        try:
            frames = self.reader.feed(data)
            if self.sender is None:
                if not frames:
                    return
                if len(frames) > 1 or self.reader.buffered():
                    raise WireError("data after the hello before the handshake was answered")
                self._handshake(frames[0])
                return
            for payload in frames:
                kind, rid, body = split_payload(payload)
                if kind not in _HANDLER:
                    raise WireError(f"a client may not send {wire.KIND_NAMES[kind]}")
                if rid == 0:
                    raise WireError("request id 0 is reserved for the handshake")
                # Kept undecoded until it runs: the backlog holds at most one read's bytes.
                self.backlog.append((kind, rid, body))
            if self.reader.buffered():
                if frames or not self.in_frame:
                    # A frame started in this read: its clock starts (``_frame_check``).
                    self.in_frame = True
                    self.frame_time = 0.0
                    self.frame_since = None if self.paused else self.last_activity
            elif self.in_frame:
                self.in_frame = False
                self.frame_since = None
            self._pump()
        except (WireError, CodecError) as e:
            if self.sender is not None:
                self._drop_repeating(f"malformed input: {e}", "malformed input")
                return
            hint = foreign_protocol_hint(self.first, dialled=False, too_large=isinstance(e, FrameTooLarge))
            answer = http_refusal(self.first)  # an HTTP client at the wrong port: tell it
            reason = f"malformed input: {e}{hint}{'; answered HTTP 400' if answer else ''}"
            # Before any hello: a client of another protocol (a health check or a scraper
            # pointed at this port comes back every few seconds). The kind is what it is, not
            # the reason: that names the length its first bytes read as, new for each client
            # sending something else, and each new kind was a WARNING.
            self._drop_repeating(reason, "HTTP" if answer else "malformed input", answer=answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.gone.done():
            self.gone.set_result(None)
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
        self.server._conns.discard(self)
        self.backlog.clear()
        for t in list(self.tasks.values()):
            t.cancel()

    def pause_writing(self) -> None:
        # The peer does not read its answers: start none of its requests and read none until
        # it does.
        self.write_paused = True
        self._set_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._pump()

    # -- handshake -------------------------------------------------------------------------

    def _handshake(self, payload: bytes) -> None:
        srv = self.server
        kind, rid, body = split_payload(payload)
        if kind != KIND_HELLO or rid != 0:
            raise WireError(f"the first frame is {wire.KIND_NAMES[kind]}, not hello")
        try:
            hello: Hello = decode_body(kind, body)
        except WireError:
            # A hello of another version may be laid out otherwise: its version comes first.
            version = wire.hello_version(body)
            if version is None or version in wire.SUPPORTED_VERSIONS:
                raise
            return self._refuse_version(version, None)
        if hello.version not in wire.SUPPORTED_VERSIONS:
            return self._refuse_version(hello.version, hello.node_id)
        if hello.cluster_name != srv.cluster_name:
            # (Which name is whose: the refused peer's log says the same words of the name it sent.)
            return self._refuse(ERR_REFUSED, f"wrong cluster name {hello.cluster_name!r}", hello.node_id,
                                f" (this node serves cluster {srv.cluster_name!r}: every node of a cluster needs the "
                                "same cluster name)", kind="wrong cluster name")
        if srv.peer_id_of_cert is not None:
            why = cert_mismatch(self.transport, srv.peer_id_of_cert, hello.node_id, "client")
            if why is not None:
                return self._refuse(ERR_REFUSED, f"{why} (the hello claims node {hello.node_id})", hello.node_id,
                                    kind="certificate")
        if not _may_connect(srv._raft.metrics, hello.node_id, srv.peer_id_of_cert is not None):
            return self._refuse(ERR_REFUSED, f"node {hello.node_id} is not in the membership", hello.node_id,
                                kind="not in the membership")
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
            self.handshake_timer = None
        self.sender = hello.node_id
        self.reader = FrameReader(srv.max_frame_size)
        # The connection speaks the client's version (the one it sent), which this node speaks.
        self._send(frame_message(KIND_HELLO_ACK, 0, HelloAck(hello.version, srv.node_id)))
        log.debug("tcp server %s: accepted node %s from %s", srv.address, hello.node_id, self.peer)
        srv._accepted_from(self.peer_host, hello.node_id, self.peer)

    def _refuse_version(self, version: int, sender: NodeId | None) -> None:
        """Refuse a hello of a protocol ``version`` this node does not speak (from ``sender``,
        ``None`` when its hello is of a layout this version does not read), naming the
        versions it speaks. A rolling upgrade across protocol versions: logged through the
        host's ``FailureLog`` as the other refusals (the client logs the answer once too)."""
        speaks = ", ".join(str(v) for v in sorted(wire.SUPPORTED_VERSIONS))
        whose = "a hello of another layout" if sender is None else f"node {sender}'s hello"
        self._refuse(
            ERR_UNSUPPORTED,
            f"unsupported protocol version {version} ({whose}): this node speaks protocol version {speaks}; a "
            "rolling upgrade needs releases that share one",
            sender,
            kind="unsupported protocol version",
        )

    def _refuse(self, code: int, reason: str, node_id: NodeId | None = None, note: str = "", *, kind: str) -> None:
        """Refuse the handshake (of a hello claiming ``node_id``) with ``reason``, sent to
        the peer; ``note`` is added to the log line only. ``kind``: the sort of refusal, the
        same whatever the hello said (the host's ``FailureLog`` logs again at another kind:
        a reason naming the cluster name sent made a WARNING of each connection of a client
        sending a new name each time). Logged under the claimed id only when it is a node of
        the membership (``TcpServer._refusal_id``)."""
        srv = self.server
        srv.refused += 1
        srv._refusal_log(self.peer_host, srv._refusal_id(node_id)).failed(
            self.loop.time(), kind, f"refused the connection from {self.peer}: {reason}{note}")
        self._send(_error_frame(0, code, reason))
        self._close_after_flush()

    def _handshake_timeout(self) -> None:
        self.handshake_timer = None
        if self.sender is None and not self.closed:
            self._drop_repeating(f"no handshake within {self.server.handshake_timeout}s", "no handshake")

    # -- requests ----------------------------------------------------------------------------

    def _pump(self) -> None:
        """Start backlog requests (decoding them now) while fewer than ``max_inflight``
        run and the peer reads its answers; pause reading while any request waits."""
        if self.pumping:
            return
        self.pumping = True
        try:
            self._pump_backlog()
        finally:
            self.pumping = False
        self._set_reading()

    def _pump_backlog(self) -> None:
        srv = self.server
        limit = srv.max_inflight
        backlog = self.backlog
        while backlog and len(self.tasks) < limit and not (self.draining or self.closed or self.write_paused):
            kind, rid, body = backlog.popleft()
            try:
                req = decode_body(kind, body)
            except WireError as e:
                self._drop_repeating(f"malformed input: {e}", "malformed input")
                return
            leader = _request_sender(kind, req)
            if leader != self.sender:
                # Well-formed but not from the handshake's sender: refuse this one request.
                srv.refused += 1
                srv._refusal_log(self.peer_host, self.sender).failed(
                    self.loop.time(), f"{KIND_NAMES[kind]} of another leader",
                    f"refused {KIND_NAMES[kind]} from node {self.sender} at {self.peer}: it names node {leader} as its leader")
                self._answer_error(rid, ERR_INVALID, "the request's leader is not the connection's sender")
                continue
            n = self.started = self.started + 1
            submit = srv._submit_append_entries if kind == KIND_APPEND_ENTRIES else None
            if submit is not None:
                self._submit(submit, n, rid, req)
                continue
            # The task leaves ``tasks`` itself as it ends: no done callback (one loop
            # callback less per request) and no current_task() (a getpid syscall). Under an
            # eager task factory (Python 3.12+) it may have ended already, inside
            # ``create_task`` (a handler answering at once): then it is not recorded (it
            # was, for good: after ``max_inflight`` of them the connection stopped reading).
            task = self.loop.create_task(self._handle(n, kind, rid, req))
            if not task.done():
                self.tasks[n] = task

    def _submit(self, submit: Any, n: int, rid: int, req: Any) -> None:
        """Hand AppendEntries request ``n`` to the node with a callback that writes the
        answer at once (``Raft.submit_append_entries``): from inside the node's pass or its
        log store's flush callback, before it applies what the request committed, and
        without a task per request. The handle stands in ``tasks`` for the request in flight
        (``cancel()`` when the connection goes)."""
        self.server.delivered += 1
        answer = _Answer(self, n, rid, self.yield_after_answer and 0 < len(req.entries) <= YIELD_MAX_ENTRIES)
        try:
            handle = submit(req, answer)
        except Exception as e:  # noqa: BLE001 - InvalidRequest or a bug: the peer learns of it
            self._answer_exception(rid, e)
            return
        if not answer.fired:  # (a stopped node answers before the call returns)
            self.tasks[n] = handle

    def _set_reading(self) -> None:
        t = self.transport
        if t is None or self.closed:
            return
        want_pause = (
            self.draining or self.write_paused or bool(self.backlog) or len(self.tasks) >= self.server.max_inflight
        )
        if want_pause and not self.paused:
            self.paused = True
            if self.frame_since is not None:  # the frame in progress cannot arrive meanwhile
                self._frame_clock(self.loop.time())
                self.frame_since = None
            t.pause_reading()
        elif not want_pause and self.paused:
            self.paused = False
            if self.in_frame:
                self.frame_since = self.loop.time()
            t.resume_reading()

    def _done(self, n: int) -> None:
        """Request task ``n`` ends: start what it held back; finish a drain."""
        self.tasks.pop(n, None)
        if not self.closed and (self.backlog or self.paused):
            self._pump()  # otherwise nothing waits and reading is on: nothing to start
        if self.draining and not self.tasks:
            self.server._drained(self)

    async def _handle(self, n: int, kind: int, rid: int, req: Any) -> None:
        srv = self.server
        srv.delivered += 1
        try:
            try:
                resp = await getattr(srv._raft, _HANDLER[kind])(req)
            except Exception as e:  # noqa: BLE001 - the peer learns of it
                self._answer_exception(rid, e, _HANDLER[kind])
                return
            if not self.closed:
                if not isinstance(resp, _RESPONSE_TYPE[kind]):
                    # A RaftServer's bug: it would not encode, or not decode as the answer,
                    # and the request went unanswered until the peer's timeout.
                    self._answer_bad_value(rid, _HANDLER[kind], resp)
                    return
                self._send(frame_message(RESPONSE_KIND[kind], rid, resp))
        finally:
            self._done(n)  # after the answer is queued: a drain may close

    def _answer_exception(self, rid: int, e: BaseException, what: str = "append_entries") -> None:
        """Answer request ``rid`` with the error its handler raised: ``Fatal`` (the node
        stopped), ``InvalidRequest``, or anything else as a remote error (logged)."""
        if isinstance(e, Fatal):
            self._answer_error(rid, ERR_FATAL, str(e))
            return
        srv = self.server
        if isinstance(e, InvalidRequest):
            # A correct peer never sends one (docs/design/bad-input.md): worth a warning. A
            # faulty one sends one at every heartbeat: logged per peer (``_refusal_log``).
            srv.refused += 1
            srv._refusal_log(self.peer_host, self.sender).failed(
                self.loop.time(), f"invalid {what}", f"refused an invalid {what} from node {self.sender} at {self.peer}: {e}")
            self._answer_error(rid, ERR_INVALID, f"{type(e).__name__}: {e}")
            return
        # An ``ApiError`` is a refusal the node makes by design, which the sender handles
        # (a snapshot chunk that continues nothing after this node restarted mid-transfer:
        # the leader starts over, saying so at INFO) or the node logs itself (a snapshot its
        # state machine refused: at WARNING once per snapshot): at DEBUG here. It was a
        # WARNING at each, so a follower restarted during a transfer warned of an ordinary
        # recovery, and one refusing its leader's snapshots warned at every resend.
        level = logging.DEBUG if isinstance(e, ApiError) else logging.WARNING
        log.log(level, "tcp server %s: %s from node %s failed: %r", srv.address, what, self.sender, e)
        self._answer_error(rid, ERR_REMOTE, f"{type(e).__name__}: {e}")

    def _answer_bad_value(self, rid: int, what: str, value: object) -> None:
        """Answer request ``rid`` with an error: the node's ``what`` returned ``value``, which
        is not the response the RPC carries (logged at ERROR: a bug of the ``RaftServer``)."""
        expected = {"append_entries": "an AppendEntriesResponse", "vote": "a VoteResponse",
                    "install_snapshot": "an InstallSnapshotResponse"}.get(what, "None")  # fmt: skip
        why = f"{what} returned {type(value).__name__}, not {expected}"
        log.error("tcp server %s: %s (request from node %s at %s)", self.server.address, why, self.sender, self.peer)
        self._answer_error(rid, ERR_REMOTE, f"the node's {why}")

    def _answer_error(self, rid: int, code: int, message: str) -> None:
        if not self.closed:
            self._send(_error_frame(rid, code, message))

    # -- output and closing --------------------------------------------------------------------

    def _send(self, frame: bytes | bytearray) -> None:
        if self.writer is not None and not self.closed:
            self.writer.send(frame)

    def _close_after_flush(self) -> None:
        self.closed = True
        self.server._conns.discard(self)
        if self.writer is not None:
            self.writer.flush()
        if self.transport is not None:
            self.transport.close()  # writes what is buffered, then closes

    def _drop_repeating(self, reason: str, kind: str, answer: bytes | None = None) -> None:
        """``_drop`` logged through the ``FailureLog`` of the peer's host and sender
        (``TcpServer._refusal_log``; ``kind`` says what failed): for the closings a peer can
        repeat at every reconnect, which each made a WARNING."""
        # Before the hello, one log per kind: a client taking turns at two (a scanner: a silent
        # connection, then an HTTP probe) made a WARNING at each change of kind.
        whose = self.sender if self.sender is not None else f"{BEFORE_HELLO}{kind}"
        self.server._refusal_log(self.peer_host, whose).failed(
            self.loop.time(), kind, f"closing the connection from {self.peer}: {reason}")
        self._drop(reason, None, answer)

    def _drop(self, reason: str, level: int | None = logging.WARNING, answer: bytes | None = None) -> None:
        """Close at once, logged once at ``level`` with the peer address (``None``: the
        caller logged it); ``answer``: bytes written first (the connection then closes once
        they are sent)."""
        if self.closed:
            return
        self.server.dropped += 1
        if level is not None:
            log.log(level, "tcp server %s: closing the connection from %s: %s", self.server.address, self.peer, reason)
        self.closed = True
        self.server._conns.discard(self)
        self.backlog.clear()
        if self.transport is not None:
            if answer is None:
                self.transport.abort()
            else:
                self.transport.write(answer)
                self.transport.close()

    def idle_check(self, now: float) -> None:
        """Close the connection if the frame in progress arrives too slowly
        (``_frame_check``), or if nothing came in for ``idle_timeout`` seconds and nothing is
        in flight."""
        if self.frame_since is not None and self._frame_check(now):
            return
        if not self.closed and not self.tasks and now - self.last_activity >= self.server.idle_timeout:
            self._drop(f"idle for {self.server.idle_timeout}s", logging.DEBUG)

    def _frame_clock(self, now: float) -> None:
        """Add the reading time since ``frame_since`` to ``frame_time``. One step adds at
        most two idle ticks: a longer one means this node's event loop did not run (a step
        happens every tick while a frame is read), and what the peer sent meanwhile waits
        unread in the socket, so the peer is not charged with it."""
        since = self.frame_since
        if since is not None:
            self.frame_time += min(now - since, 2 * self.server._idle_period())
            self.frame_since = now

    def _frame_check(self, now: float) -> bool:
        """Close the connection (and return ``True``) if the frame in progress is behind
        the server's rule: after ``t`` seconds of reading it (``frame_time``), at least
        ``(t - frame_timeout) * min_frame_rate`` of its bytes must have come. A peer that
        trickles a frame, or sends a length and stops, would otherwise hold a connection
        slot and its buffer for good (each byte counts as activity for ``idle_timeout``)."""
        self._frame_clock(now)
        srv = self.server
        late = self.frame_time - srv.frame_timeout
        if late <= 0:
            return False
        got = self.reader.buffered()
        if got >= late * srv.min_frame_rate:
            return False
        self._drop(
            f"a frame arrives too slowly: {got} bytes in {self.frame_time:.1f}s of reading "
            f"(frame_timeout {srv.frame_timeout}s, then min_frame_rate {srv.min_frame_rate} bytes/s)"
        )
        return True

    def start_drain(self) -> None:
        """Stop reading; answer the requests in flight; the server closes it when done."""
        self.draining = True
        self.backlog.clear()
        self._set_reading()
        if not self.tasks:
            self.server._drained(self)


BEFORE_HELLO = "before the hello: "
"""What the closings of connections before their hello are logged under (``_drop_repeating``):
this followed by the kind of closing, in place of a node id (one log per kind)."""

NOT_A_MEMBER = "not a member"
"""What the refused hellos claiming an id that is no node of the membership are logged under
(``TcpServer._refusal_id``), in place of the id."""

MAX_REFUSAL_LOGS = 1024
"""Peer hosts (and claimed node ids) whose refused connections a ``TcpServer`` keeps
counting for its log (``TcpServer._refusal_log``)."""


class TcpServer:
    """Serves a ``Raft`` node's RPCs on a TCP port (see the module docstring).

    Counters (for tests and monitoring): ``delivered`` requests handed to ``Raft``,
    ``refused`` handshakes and requests refused (a request naming another leader than the
    connection's sender, or one the node refused as ``InvalidRequest``: each logged at
    WARNING; the refused handshakes and TLS handshakes of one peer through a ``FailureLog``,
    see ``_refusal_log``), ``dropped`` connections closed for bad input, a frame arriving too slowly,
    idleness, limits, or a sender that left the membership.
    """

    # Set by ``_unbound`` (the constructor is closed: ``start`` or ``_unbound`` make one).
    _loop: asyncio.AbstractEventLoop
    _raft: ServedRaft
    _submit_append_entries: Any
    _ssl: SSLContext | None
    peer_id_of_cert: PeerIdOfCert | None
    """Binds a client certificate to the hello's sender id (``None``: not bound)."""
    membership_check_interval: float
    """Seconds between two re-checks of the open connections' senders (``_member_tick``)."""
    cluster_name: str
    node_id: NodeId
    max_frame_size: int
    max_inflight: int
    max_connections: int
    idle_timeout: float
    handshake_timeout: float
    frame_timeout: float
    min_frame_rate: float
    drain_timeout: float
    yield_after_answer: bool | None
    """``True``/``False``: whether AppendEntries answers are followed by a yield of the CPU;
    ``None``: on loopback connections only (``start``)."""
    delivered: int
    refused: int
    dropped: int
    _conns: set[_ServerConnection]
    _refusals: dict[tuple[str, NodeId | str | None], FailureLog]
    """The refused connections of each peer host and claimed node id (``None``: refused by
    TLS, before the hello), oldest first (``_refusal_log``)."""
    _accepted: int
    """Connections accepted so far (``_ServerConnection.number``)."""
    """Open connections (handshaken or not); a closed one leaves at once."""
    _closing: bool
    _closed: asyncio.Future[None] | None
    """Set by the first ``close()``, done once it has ended (``None`` before)."""
    _drain_waiter: asyncio.Future[None] | None
    _accept_errors: AcceptErrors | None
    """The listener's accept errors (asyncio's, for want of descriptors), logged once
    (``accept_errors``); ``None`` until ``start`` listens."""
    host: str
    port: int
    """The bound port (the ephemeral one when started with port 0)."""
    address: str
    # Set by ``start`` (an unbound server has neither; ``close`` is for started servers).
    _server: asyncio.AbstractServer
    _idle_timer: asyncio.TimerHandle
    _member_timer: asyncio.TimerHandle

    def __init__(self) -> None:
        raise TypeError("use `await TcpServer.start(...)`")

    @classmethod
    async def start(
        cls,
        raft: ServedRaft,
        host: str,
        port: int,
        cluster_name: str,
        ssl: SSLContext | None = None,
        *,
        node_id: NodeId | None = None,
        peer_id_of_cert: PeerIdOfCert | None = None,
        membership_check_interval: float = 0.1,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_inflight: int = 64,
        max_connections: int | None = None,
        idle_timeout: float = 60.0,
        handshake_timeout: float = 5.0,
        frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
        min_frame_rate: float = DEFAULT_MIN_FRAME_RATE,
        drain_timeout: float = 5.0,
        yield_after_answer: bool | None = None,
    ) -> Self:
        """Listen on ``host:port`` (``port=0``: an ephemeral port, see ``port``) and serve
        ``raft`` (a ``ServedRaft``: anything implementing ``RaftServer`` with a ``metrics``
        property, such as ``Raft``).

        - ``ssl``: a server ``ssl.SSLContext`` (TLS); with ``verify_mode = CERT_REQUIRED``
          a client without a certificate of the context's CAs is refused (mutual TLS). A
          client context (``ssl.create_default_context()``, ``PROTOCOL_TLS_CLIENT``) is a
          ``ValueError``: no connection could start TLS on it; so is a server context with no
          certificate to present (no ``load_cert_chain``), found by a TLS handshake in memory
          (about 1 ms): every connection would be refused with "no shared cipher".
        - ``node_id``: the id sent in the handshake answer (default ``raft.metrics.id``); for
          a ``Raft``, only its own id (``ValueError`` otherwise: every peer would close the
          connection on the answer of another node).
        - ``peer_id_of_cert``: binds client certificates to node ids (off by default; turn
          it on in production mutual TLS). A callable from the verified client certificate
          (``getpeercert()``'s dict) to the node id it belongs to, or ``None``; the handshake
          is refused unless it returns the hello's sender id (no certificate, ``None``, another
          id or an exception: refused and logged like the other handshake refusals).
          ``node_id_from_cert(cluster_name)`` reads the ``node_uri`` subjectAltName
          convention. Needs an ``ssl`` context that verifies client certificates
          (``ValueError`` otherwise).
        - ``membership_check_interval``: every this many seconds the server re-checks the
          sender of every open connection against the node's membership (the handshake's
          rule) and closes the connections of senders that left it (logged at WARNING), so a
          removed node stops being served within this interval of its removal reaching
          this node's log. While the node has no leader every sender is kept (a node added
          while this one was down may be the one to bring it up to date), unless
          ``peer_id_of_cert`` binds certificates to ids.
        - ``max_frame_size``: a larger frame closes the connection (frames are buffered whole,
          so this bounds a connection's input buffer). Before the handshake the bound is
          ``wire.MAX_HELLO_FRAME``. ``ConfigError`` if ``raft.config`` (when it is a
          ``Config``) makes requests larger (``tcp.required_frame_size``): its leader would
          send frames this server refuses.
        - ``max_inflight``: requests of one connection handled at once (1 to
          ``MAX_INFLIGHT``, 1024); more wait, and the connection is not read meanwhile.
        - ``max_connections``: connections open at once. At the limit a new connection
          takes the place of the one that has waited longest for its handshake (closed,
          logged at WARNING); when every open connection has completed it, of the quietest
          of a sender holding several (a node keeps one connection to each peer); when no
          sender holds several either, the new one is closed on accept. ``None`` (default): ``tcp_connection_limit()``, that is
          ``DEFAULT_MAX_CONNECTIONS`` (256) but at most a quarter of the process's soft
          limit of open files (64 under a limit of 256), so that a burst of connections
          cannot take the descriptors the node's stores need. A number given (1 to
          ``MAX_CONNECTIONS``, 65536) is used as is: keep it well under the descriptor
          limit.
        - ``idle_timeout``: a connection with nothing in flight that sent nothing for this
          long is closed. ``handshake_timeout``: a connection must complete the handshake
          within this (and, with ``ssl``, the TLS handshake too).
        - ``frame_timeout`` (seconds, default 30) and ``min_frame_rate`` (bytes per second,
          default 16 KiB/s): a frame that has started to arrive after the handshake must
          keep arriving. After ``t`` seconds of reading it, at least ``(t - frame_timeout)
          * min_frame_rate`` of its bytes must have come, else the connection is closed
          (logged at WARNING, counted in ``dropped``). So a frame may stall for
          ``frame_timeout`` in all, and a frame of ``n`` bytes has at least ``frame_timeout
          + n / min_frame_rate`` seconds (a 32 MiB frame: over 34 minutes). Time the server
          does not read the connection (its requests in flight are at ``max_inflight``, or
          its peer leaves answers unread) does not count, and a connection between frames
          is only subject to ``idle_timeout``. Without this, a peer trickling a frame (a
          byte now and then counts as activity) or sending a length and nothing more held
          its connection slot for good.
        - ``drain_timeout``: how long ``close()`` waits for requests in flight, and then for
          each peer to take its answers (a connection whose peer does not is aborted).
        - ``yield_after_answer``: after writing an AppendEntries answer, give up the CPU
          (``os.sched_yield()``, where the OS has it) before doing anything else. The answer
          wakes the leader; when the leader runs on this machine, the scheduler often puts
          it on this node's core, where it would wait behind what this node does next (it
          applies the entries the request committed) although its commit, and the client it
          answers, wait for it. ``None`` (default): only on connections from a loopback
          address (the leader runs on this machine); ``True``: every connection; ``False``:
          never. Only after a request of 1 to ``YIELD_MAX_ENTRIES`` (16) entries: after a
          large batch, what the node does next is long and holds back its next round. On a
          core nothing else waits for, the call returns at once.

        Raises ``TypeError`` or ``ValueError`` naming the argument for a wrong one: ``raft``
        must be an instance with the ``RaftServer`` methods and ``metrics`` (a ``Raft.new``
        not awaited is named as such) that has not stopped (``ValueError`` for a ``Raft``
        whose ``shutdown()`` ran or that failed: its metrics say ``running`` is false), ``host`` a ``str``, ``port`` an ``int`` in ``[0,
        65535]``; the timeouts, ``membership_check_interval`` and ``min_frame_rate`` finite
        numbers above 0 (``drain_timeout`` at least 0; NaN, an infinity and ``bool`` are
        refused), the durations at most ``MAX_SECONDS`` (an hour) and ``min_frame_rate`` at
        most ``MAX_FRAME_RATE`` (``MAX_FRAME_SIZE`` bytes per second), the limits ``int`` values (``max_frame_size`` in ``[64, MAX_FRAME_SIZE]``,
        ``2**32 - 1``, a frame's length being a u32; the others at least 1, and at most
        ``MAX_INFLIGHT`` and ``MAX_CONNECTIONS``; ``max_connections`` may be ``None``), ``cluster_name`` a non-empty ``str`` of at
        most 256 characters (a ``Config.cluster_name`` only needs to be non-empty; and,
        for a ``Raft`` whose network factory has a cluster name, a ``TcpNetworkFactory``'s, that
        name: its peers dial with it), ``node_id`` the id of the node served, ``ssl`` an
        ``ssl.SSLContext`` and ``yield_after_answer`` a ``bool`` (or ``None``).
        Raises ``OSError`` naming ``host:port`` when it cannot listen there: the port is in
        use or not allowed, the address is not this machine's, or (``socket.gaierror``)
        ``host`` is a name that does not resolve. A start cancelled by its caller leaves
        nothing listening.
        """
        if max_connections is None:
            max_connections = tcp_connection_limit()
        self = cls._unbound(
            raft,
            cluster_name,
            ssl,
            node_id=node_id,
            peer_id_of_cert=peer_id_of_cert,
            membership_check_interval=membership_check_interval,
            max_frame_size=max_frame_size,
            max_inflight=max_inflight,
            max_connections=max_connections,
            idle_timeout=idle_timeout,
            handshake_timeout=handshake_timeout,
            frame_timeout=frame_timeout,
            min_frame_rate=min_frame_rate,
            drain_timeout=drain_timeout,
            yield_after_answer=yield_after_answer,
        )
        if not isinstance(host, str):
            raise TypeError(f"host must be a str, got {type(host).__name__} {shown(host)}")
        # asyncio bound a float port truncated, uvloop took 70000 as 70000 - 65536.
        port = check_count(port, "port", 0)
        if port > 65535:
            raise ValueError(f"port must be within [0, 65535], got {port}")
        self.address = f"{host}:{port}"
        try:
            # Bound but not serving yet: asyncio's create_server starts serving, then yields
            # one loop pass, and a caller cancelled in that pass (a timeout around the start,
            # Ctrl-C) left the listening socket open for nobody. The port stayed taken for as
            # long as the loop ran: the node could not be started on it again ("address
            # already in use"). Here the server is closed if the start is cancelled.
            # (guard: a factory that raised stopped uvloop's listener for good)
            self._accept_errors = AcceptErrors(f"tcp server {self.address}", log)
            server = await self._loop.create_server(
                self._accept_errors.guard(lambda: _ServerConnection(self)), host, port, reuse_address=True,
                start_serving=False,
            )
        except socket.gaierror as e:
            # The resolver's message names no host (the bind errors name their address).
            raise socket.gaierror(
                e.errno, f"cannot listen on {host}:{port}: the host name does not resolve ({e.strerror})"
            ) from e
        try:
            await server.start_serving()
        except BaseException:
            server.close()
            raise
        self._server = server
        sockname = self._server.sockets[0].getsockname()
        self.host = sockname[0]
        self.port = sockname[1]
        self.address = f"{host}:{self.port}"
        # asyncio logged an accept error for want of descriptors up to ~1,300 times a second.
        self._accept_errors.log.subject = f"tcp server {self.address}"
        self._accept_errors.watch(server.sockets)
        self._idle_timer = self._loop.call_later(self._idle_period(), self._idle_tick)
        self._member_timer = self._loop.call_later(self.membership_check_interval, self._member_tick)
        return self

    @classmethod
    def _unbound(
        cls,
        raft: ServedRaft,
        cluster_name: str,
        ssl: SSLContext | None,
        *,
        node_id: NodeId | None,
        max_frame_size: int,
        max_inflight: int,
        max_connections: int,
        idle_timeout: float,
        handshake_timeout: float,
        drain_timeout: float,
        peer_id_of_cert: PeerIdOfCert | None = None,
        membership_check_interval: float = 0.1,
        yield_after_answer: bool | None = None,
        frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
        min_frame_rate: float = DEFAULT_MIN_FRAME_RATE,
    ) -> Self:
        """A configured server that listens nowhere (``start`` binds it; the atheris
        harness feeds its connections directly). Must be called in the running loop."""
        if asyncio.iscoroutine(raft):
            raise TypeError("raft is a coroutine: await Raft.new(...) before serving it")
        check_implements(raft, "raft", "RaftServer", tuple(_HANDLER.values()))
        if not hasattr(raft, "metrics"):
            raise TypeError(f"raft must be a RaftServer with a metrics property: {type(raft).__name__} has none")
        _check_running(raft)
        # Each argument is checked here, naming it: a wrong one otherwise failed far from
        # the call (a NaN timeout fired at once on asyncio and raised inside every accepted
        # connection on uvloop, a str node id or ssl failed every peer's connection, a float
        # max_frame_size every handshake) or silently (a non-str cluster name refused
        # every peer as of a "wrong cluster name").
        if not isinstance(cluster_name, str):
            raise TypeError(f"cluster_name must be a str, got {type(cluster_name).__name__} {shown(cluster_name)}")
        if not cluster_name:
            # As ``Config.cluster_name`` and ``openraft-py serve``: a cluster has a name (the
            # stores record it as their owner's, certificates carry it in ``node_uri``).
            raise ValueError("cluster_name must be a non-empty string, got ''")
        if len(cluster_name) > wire.MAX_NAME_LEN:
            raise ValueError(f"cluster_name longer than {wire.MAX_NAME_LEN} characters (no hello could carry it)")
        if ssl is not None and not isinstance(ssl, SSLContext):
            raise TypeError(f"ssl must be an ssl.SSLContext or None, got {type(ssl).__name__} {shown(ssl)}")
        if ssl is not None and ssl.protocol == PROTOCOL_TLS_CLIENT:
            # Every accepted connection failed to start TLS, and went on in plain TCP: a peer
            # not speaking TLS had its requests delivered (its answers went nowhere).
            raise ValueError(
                "ssl is a client context (ssl.create_default_context() or PROTOCOL_TLS_CLIENT): a server "
                "needs ssl.create_default_context(ssl.Purpose.CLIENT_AUTH) or SSLContext(PROTOCOL_TLS_SERVER)"
            )
        if node_id is not None:
            node_id = check_node_id(node_id, "node_id")
            from ..raft import Raft  # (here: the node's module imports the network's)

            if isinstance(raft, Raft) and node_id != raft.id:
                # Every peer that dialled this node was answered as another node and closed
                # the connection ("the node at ... is node 7"): the node was unreachable.
                raise ValueError(f"node_id={node_id} is not the id of the node served, {raft.id} (leave it out)")
        _check_same_cluster_name(raft, cluster_name)
        if peer_id_of_cert is not None and not callable(peer_id_of_cert):
            raise TypeError(f"peer_id_of_cert must be callable or None, got {type(peer_id_of_cert).__name__}")
        if yield_after_answer is not None and not isinstance(yield_after_answer, bool):
            raise TypeError(
                f"yield_after_answer must be a bool or None, got {type(yield_after_answer).__name__} {shown(yield_after_answer)}"
            )
        max_frame_size = check_frame_limit(max_frame_size)
        max_inflight = check_count(max_inflight, "max_inflight", 1, MAX_INFLIGHT, " (MAX_INFLIGHT)")
        max_connections = check_count(max_connections, "max_connections", 1, MAX_CONNECTIONS, " (MAX_CONNECTIONS)")
        idle_timeout = check_duration(idle_timeout, "idle_timeout")
        handshake_timeout = check_duration(handshake_timeout, "handshake_timeout")
        frame_timeout = check_duration(frame_timeout, "frame_timeout")
        min_frame_rate = check_frame_rate(min_frame_rate)
        drain_timeout = check_duration(drain_timeout, "drain_timeout", zero_ok=True)
        membership_check_interval = check_duration(membership_check_interval, "membership_check_interval")
        check_cert_binding(ssl, peer_id_of_cert, "TcpServer")
        if ssl is not None:  # last: a TLS handshake in memory, after the cheap checks
            check_server_certificate(ssl, "TcpServer")
        config = getattr(raft, "config", None)
        if isinstance(config, Config):
            check_frame_size(config, max_frame_size, "TcpServer")
        self = object.__new__(cls)
        self._loop = asyncio.get_running_loop()
        self._raft = raft
        # ``Raft.submit_append_entries`` when the node has it (a ``RaftServer`` need not):
        # AppendEntries answers are then written as soon as the node knows them.
        self._submit_append_entries = getattr(raft, "submit_append_entries", None)
        self._ssl = ssl
        self.peer_id_of_cert = peer_id_of_cert
        self.membership_check_interval = membership_check_interval
        self.cluster_name = cluster_name
        self.node_id = raft.metrics.id if node_id is None else node_id
        self.max_frame_size = max_frame_size
        self.max_inflight = max_inflight
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self.frame_timeout = frame_timeout
        self.min_frame_rate = min_frame_rate
        self.drain_timeout = drain_timeout
        self.yield_after_answer = yield_after_answer
        self.delivered = 0
        self.refused = 0
        self.dropped = 0
        self._conns = set()
        self._refusals = {}
        self._accepted = 0
        self._closing = False
        self._closed = None
        self._drain_waiter = None
        self._accept_errors = None
        self.host = ""
        self.port = 0
        self.address = "unbound"
        return self

    def _make_room(self) -> bool:
        """At ``max_connections``: close an open connection so that a new one can be
        accepted, if one may give way; return whether one was closed.

        First the connection that has waited longest for its handshake: clients that
        connect and never complete the handshake, reconnecting each time
        ``handshake_timeout`` closes them, otherwise keep the slots for good and every real
        peer that has to reconnect out (the new connection was the one refused). When every
        open connection has completed it: the quietest (the longest since it sent anything)
        of the connections, with nothing in flight, of a sender that holds several. A node's
        ``TcpNetworkFactory`` keeps one connection to each peer for its requests (and one for
        its heartbeats, made again at the next heartbeat if closed), so a sender's older
        one is dead (the peer reconnected, its old connection not seen closed yet), its
        heartbeats' (quiet unless its requests wait) or not a real peer's: a client claiming a member's id again and again (a misconfigured peer, or a
        stranger who knows the cluster's name, without ``peer_id_of_cert``) otherwise held
        every slot for ``idle_timeout`` and refused every reconnecting member meanwhile."""
        waiting = [c for c in self._conns if c.sender is None and not c.closed]
        if waiting:
            oldest = min(waiting, key=lambda c: c.number)
            # (Logged per host: a client that opens connections in a loop makes one each time.)
            reason = (f"too many connections ({self.max_connections}): the one waiting longest for its handshake "
                      f"({self._loop.time() - oldest.opened:.1f}s) makes room for a new one")
            oldest._drop_repeating(reason, "makes room")
            return True
        by_sender: dict[NodeId, list[_ServerConnection]] = {}
        for c in self._conns:
            if c.sender is not None and not c.closed:
                by_sender.setdefault(c.sender, []).append(c)
        spare = [c for held in by_sender.values() if len(held) > 1 for c in held if not c.tasks]
        if not spare:
            return False
        quietest = min(spare, key=lambda c: (c.last_activity, c.number))
        held_by_it = len(by_sender[quietest.sender])  # type: ignore[index]  # not None: in by_sender
        reason = (f"too many connections ({self.max_connections}): node {quietest.sender} holds "
                  f"{held_by_it}, and this one, silent for "
                  f"{self._loop.time() - quietest.last_activity:.1f}s, makes room for a new one")
        quietest._drop_repeating(reason, "makes room")
        return True

    def _refusal_log(self, host: str, node_id: NodeId | str | None) -> FailureLog:
        """The ``FailureLog`` of the connections refused from ``host`` claiming ``node_id``
        (``None``: refused by TLS, before any hello). A peer refused at every reconnect (a
        wrong cluster name, certificate or membership: every second or so, for as long as it
        runs) is logged at WARNING at the first refusal, then at another reason or every
        ``REPEAT_EVERY`` seconds, not at each one. At most ``MAX_REFUSAL_LOGS`` are kept
        (the oldest is dropped)."""
        key = (host, node_id)
        refusals = self._refusals
        flog = refusals.get(key)
        if flog is None:
            if len(refusals) >= MAX_REFUSAL_LOGS:
                del refusals[next(iter(refusals))]
            flog = refusals[key] = FailureLog(log, f"tcp server {self.address}", unit="refusal")
        return flog

    def _refusal_id(self, node_id: NodeId | None) -> NodeId | str | None:
        """The claimed id a refused hello is logged under (``_refusal_log``): ``node_id`` when
        it names a node of this node's membership (or the leader it follows), else
        ``NOT_A_MEMBER`` (``None`` for a hello that names none). Each id claimed had its own
        ``FailureLog``, so a client claiming a new id at each connection (any id goes with
        a wrong cluster name) made a WARNING of every connection, thousands a second from a
        tight loop; now a host has at most one log per member and one for the other ids
        (apart from its closings before any hello, so that the two kinds do not alternate in
        one log: each change of kind is a WARNING)."""
        if node_id is None:
            return None
        metrics = self._raft.metrics
        if metrics.membership_config.membership.nodes and _known_sender(metrics, node_id):
            return node_id
        return NOT_A_MEMBER

    def _accepted_from(self, host: str, node_id: NodeId, peer: str) -> None:
        """A handshake from ``host`` claiming ``node_id`` (at ``peer``) was accepted: the
        refusals logged for it end (logged at INFO)."""
        refusals = self._refusals
        if not refusals:
            return
        before = [k for k in refusals if k[0] == host and isinstance(k[1], str) and k[1].startswith(BEFORE_HELLO)]
        for key in ((host, node_id), (host, None), *before):
            flog = refusals.pop(key, None)
            if flog is not None:
                flog.cleared(self._loop.time(), f"accepted node {node_id} from {peer}, after refusing {host}")

    def _idle_period(self) -> float:
        return max(min(self.idle_timeout, self.handshake_timeout, self.frame_timeout) / 2, 0.01)

    def _idle_tick(self) -> None:
        now = self._loop.time()
        for c in list(self._conns):
            c.idle_check(now)
        if not self._closing:
            self._idle_timer = self._loop.call_later(self._idle_period(), self._idle_tick)

    def _member_tick(self) -> None:
        try:
            self.recheck_membership()
        finally:
            if not self._closing:
                self._member_timer = self._loop.call_later(self.membership_check_interval, self._member_tick)

    def recheck_membership(self) -> int:
        """Close the handshaken connections whose sender the handshake would refuse now (it
        left the membership and is not the leader this node follows); return how many.
        Runs every ``membership_check_interval`` seconds; callable at any time."""
        metrics = self._raft.metrics
        bound = self.peer_id_of_cert is not None
        gone = [c for c in self._conns if c.sender is not None and not _may_connect(metrics, c.sender, bound)]
        for c in gone:
            c._drop(f"node {c.sender} is no longer in the membership")
        return len(gone)

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._conns)

    def _drained(self, conn: _ServerConnection) -> None:
        conn._close_after_flush()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            if not any(c.tasks for c in self._conns):
                self._drain_waiter.set_result(None)

    async def close(self) -> None:
        """Stop accepting, let the requests in flight finish and answer (up to
        ``drain_timeout``), then close every connection once its answers are written: a
        connection whose peer has not taken them within ``drain_timeout`` more is aborted.
        Idempotent: a later or concurrent call returns once the first one has ended.

        A connection the port had accepted when the close began is closed with the others
        (``accept_errors.stop_accepting``: on asyncio's loop, one accepted in the same loop
        pass was left unclosed to the garbage collector).

        A caller cancelled meanwhile (a timeout around ``close()`` shorter than the drain,
        Ctrl-C) gets its ``CancelledError``, and the server is closed all the same, at once:
        the requests still running are cancelled and every connection is aborted. Such a
        close used to leave the connections open and their requests running, and every
        later ``close()`` returned at once, doing nothing; a concurrent one returned while
        the first still drained."""
        if self._closed is not None:
            await asyncio.shield(self._closed)
            return
        closed = self._closed = self._loop.create_future()
        if self._loop.is_closed():
            self._close_after_loop()
            closed.set_result(None)
            return
        conns = list(self._conns)
        try:
            await self._drain_and_close(conns)
        finally:
            try:
                self._abort(conns)
            finally:
                closed.set_result(None)  # whatever failed: a later close() must not wait for good

    def _close_after_loop(self) -> None:
        """``close()`` once the server's loop has ended without one (``asyncio.run``
        returned; the cleanup runs in a later loop): nothing can be drained or written any
        more. The listening socket is closed, so the port is free again, and the
        connections are dropped, their sockets left to the garbage collector. It raised
        "Event loop is closed", and the port stayed taken while the server object lived."""
        self._closing = True
        self._idle_timer.cancel()
        self._member_timer.cancel()
        self._server.close()
        if self._accept_errors is not None:
            self._accept_errors.close()
        for c in self._conns:
            c.closed = True
        self._conns.clear()

    def _abort(self, conns: list[_ServerConnection]) -> None:
        """The end of every ``close()``, also a cancelled or failed one: no request of the
        server runs on, no connection stays open and nothing listens (nothing is left after a
        complete close; a close cancelled before it closed the listener closes it here, and
        stops watching its accept errors: ``AcceptErrors.close`` is idempotent)."""
        self._server.close()
        if self._accept_errors is not None:
            self._accept_errors.close()
        for c in {*conns, *self._conns}:
            for t in list(c.tasks.values()):
                t.cancel()
            c.closed = True
            if not c.gone.done() and c.transport is not None:
                c.transport.abort()
        self._conns.clear()

    async def _drain_and_close(self, conns: list[_ServerConnection]) -> None:
        """``close()``'s graceful part: the drain, then each connection closed once its
        answers are written. ``conns``: the connections open when the close began."""
        self._closing = True
        self._idle_timer.cancel()
        self._member_timer.cancel()
        # A connection accepted in this loop pass is set up first (closed at once, as
        # ``_closing`` is set): closed before that, the listener leaked its socket.
        await stop_accepting(self._server)
        self._server.close()
        if self._accept_errors is not None:
            self._accept_errors.close()
        self._drain_waiter = self._loop.create_future()
        for c in conns:
            c.start_drain()
        if any(c.tasks for c in self._conns):
            try:
                async with asyncio.timeout(self.drain_timeout):
                    await asyncio.shield(self._drain_waiter)
            except TimeoutError:
                log.warning("tcp server %s: requests still in flight after %ss; cancelling", self.address, self.drain_timeout)
        for c in list(self._conns):
            for t in list(c.tasks.values()):
                t.cancel()
            c._close_after_flush()
        self._conns.clear()
        # A transport closes once its output is written: a peer that does not read kept its
        # socket and the answers buffered for it open for good after close() returned (and,
        # never seeing the connection end, did not reconnect to a restarted server).
        lingering = [c.gone for c in conns if not c.gone.done()]
        if lingering:
            await asyncio.wait(lingering, timeout=self.drain_timeout)
        for c in conns:
            if not c.gone.done() and c.transport is not None:
                log.warning(
                    "tcp server %s: the connection from %s did not take its answers within %ss; aborting it",
                    self.address, c.peer, self.drain_timeout,
                )  # fmt: skip
                c.transport.abort()
        try:
            async with asyncio.timeout(1.0):
                await self._server.wait_closed()
        except TimeoutError:  # pragma: no cover - depends on the loop implementation
            pass

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"TcpServer({self.address}, node {self.node_id}, {len(self._conns)} connections)"
