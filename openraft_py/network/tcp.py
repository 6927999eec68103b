"""The TCP transport: ``TcpNetworkFactory`` (client side) and ``TcpServer`` (server side).

The wire format is ``openraft_py.network.wire`` (documented in ``docs/design/wire.md``)::

    server = await TcpServer.start(raft, "127.0.0.1", 21001, cluster_name="prod", ssl=server_ctx)
    factory = TcpNetworkFactory(node_id=1, cluster_name="prod", ssl=client_ctx)
    raft = await Raft.new(1, config, factory, log_store, state_machine)
    ...
    await server.close()
    await factory.close()

Client side: one connection per target node (shared by every client ``new_client`` returns
for it), many requests in flight matched by request id, connect on first use, reconnect
with jittered exponential back-off after a failure. Errors (``openraft_py.errors``):

- ``Unreachable``: the connection could not be made (refused, unreachable, TLS failure,
  handshake refused), the target is backing off after such a failure, the connection broke
  with the request in flight, or the target's node has stopped;
- ``Timeout``: the request was sent and no answer came within ``RPCOption.hard_ttl``;
- ``RemoteError``: the target received the request and answered an error;
- ``NetworkError``: the request cannot be framed (larger than ``max_frame_size``).

Server side: every accepted connection must open with the handshake (protocol version,
cluster name, sender id; the sender must be in the node's membership once it has one);
then its requests are handed to the ``Raft`` handlers concurrently and answered in
whatever order they finish. Malformed input, an oversized frame, a protocol violation or an
idle connection closes that connection only, logged once with the peer address; every other
connection keeps being served.

Both sides run on whatever event loop is running (asyncio or uvloop), set TCP_NODELAY, and
coalesce the frames written in one loop turn into one write.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import logging
import random
import socket
import ssl as _ssl
from collections import deque
from typing import Any

from .. import errors as _errors
from .._core import CodecError, FrameReader
from ..errors import Fatal, NetworkError, RemoteError, Timeout, Unreachable
from ..types import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    BasicNode,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    NodeId,
    RPCOption,
    TransferLeaderRequest,
    VoteRequest,
    VoteResponse,
)
from . import wire
from .wire import (
    ERR_FATAL,
    ERR_INVALID,
    ERR_REFUSED,
    ERR_REMOTE,
    ERR_UNSUPPORTED,
    KIND_APPEND_ENTRIES,
    KIND_ERROR,
    KIND_HELLO,
    KIND_HELLO_ACK,
    KIND_INSTALL_SNAPSHOT,
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

__all__ = ["TcpNetworkFactory", "TcpClient", "TcpServer", "DEFAULT_MAX_FRAME_SIZE", "parse_addr"]

log = logging.getLogger(__name__)

DEFAULT_MAX_FRAME_SIZE = 32 * 1024 * 1024
"""Largest frame either side accepts by default (32 MiB): room for a default 3 MiB snapshot
chunk or a full AppendEntries batch of large entries. Raise it (on every node) when
``Config.snapshot_max_chunk_size`` or entry payloads need more."""

_DEFAULT_OPTION = RPCOption()
_InvalidRequest: type[BaseException] | None = getattr(_errors, "InvalidRequest", None)


def parse_addr(addr: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6addr]:port"``) as ``(host, port)``; ``ValueError`` if
    malformed."""
    host, sep, port_s = addr.rpartition(":")
    if not sep or not host or not port_s.isdigit():
        raise ValueError(f"not a host:port address: {addr!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_s)
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {addr!r}")
    return host, port


def _set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):  # pragma: no cover - not a TCP socket
            pass


class _FrameWriter:
    """Coalesces the frames queued during one loop turn into one transport write."""

    __slots__ = ("_transport", "_out", "_scheduled", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport) -> None:
        self._loop = loop
        self._transport = transport
        self._out: list[bytes | bytearray] = []
        self._scheduled = False

    def send(self, frame: bytes | bytearray) -> None:
        """Queue ``frame``; it is written at the end of this loop turn."""
        self._out.append(frame)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write everything queued now (a no-op once the transport is closing)."""
        self._scheduled = False
        out = self._out
        if not out:
            return
        self._out = []
        t = self._transport
        if t.is_closing():
            return
        if len(out) == 1:
            t.write(out[0])
        else:
            t.write(b"".join(out))


# ==============================================================================================
# client side
# ==============================================================================================


class _ClientConnection(asyncio.Protocol):
    """One established (or being established) connection from a ``_Peer`` to its target."""

    def __init__(self, peer: _Peer) -> None:
        self.peer = peer
        self.loop = peer.loop
        self.transport: asyncio.Transport | None = None
        self.writer: _FrameWriter | None = None
        self.reader = FrameReader(peer.factory.max_frame_size)
        self.pending: dict[int, tuple[asyncio.Future[Any], int]] = {}
        self.hello: asyncio.Future[HelloAck] = self.loop.create_future()
        self.closed = False
        self.close_reason = "connection closed"

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        _set_nodelay(transport)
        self.writer = _FrameWriter(self.loop, transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
            for payload in frames:
                kind, rid, body = split_payload(payload)
                msg = decode_body(kind, body)
                self._on_message(kind, rid, msg)
        except (WireError, CodecError) as e:
            self.fail(f"malformed data from node {self.peer.target}: {e}", log_it=True)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.hello.done():
            reason = "the server closed the connection before answering the handshake"
            if self.peer.factory.ssl is not None or exc is not None:
                reason += " (TLS refused?)" if exc is None else f": {exc!r}"
            self.fail(reason)
        else:
            self.fail(f"connection lost: {exc!r}" if exc else self.close_reason)

    # -- messages ------------------------------------------------------------------------------

    def _on_message(self, kind: int, rid: int, msg: Any) -> None:
        if rid == 0:
            if self.hello.done():
                raise WireError(f"unexpected {wire.KIND_NAMES[kind]} with request id 0")
            if kind == KIND_HELLO_ACK:
                self.hello.set_result(msg)
            elif kind == KIND_ERROR:
                self.hello.set_exception(
                    Unreachable(f"node {self.peer.target} refused the handshake: {msg.message}")
                )
            else:
                raise WireError(f"unexpected {wire.KIND_NAMES[kind]} during the handshake")
            return
        entry = self.pending.pop(rid, None)
        if entry is None:
            return  # the caller gave up (timeout or cancellation)
        fut, expected = entry
        if fut.done():
            return
        if kind == expected:
            fut.set_result(msg)
        elif kind == KIND_ERROR:
            fut.set_exception(self.peer.remote_error(msg))
        else:
            fut.set_exception(Unreachable(f"node {self.peer.target} answered the wrong kind"))
            raise WireError(f"response of kind {wire.KIND_NAMES[kind]} to a request expecting {expected}")

    def send(self, frame: bytes | bytearray) -> None:
        """Queue a frame for this loop turn's write."""
        assert self.writer is not None
        self.writer.send(frame)

    def fail(self, reason: str, log_it: bool = False) -> None:
        """Close the connection and fail the handshake and every request in flight with
        ``Unreachable(reason)``."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        if log_it:
            log.warning("tcp client %s -> node %s: %s; closing", self.peer.factory.node_id, self.peer.target, reason)
        if self.peer.conn is self:
            self.peer.conn = None
        err = f"node {self.peer.target}: {reason}"
        if not self.hello.done():
            self.hello.set_exception(Unreachable(err))
            self.hello.exception()  # mark retrieved: nobody may be awaiting it any more
        pending, self.pending = self.pending, {}
        for fut, _ in pending.values():
            if not fut.done():
                fut.set_exception(Unreachable(err))
        if self.transport is not None:
            self.transport.close()


class _Peer:
    """The connection state towards one target: the live connection, the connect in
    progress, and the back-off after failures."""

    def __init__(self, factory: TcpNetworkFactory, target: NodeId, addr: str) -> None:
        self.factory = factory
        self.loop = asyncio.get_running_loop()
        self.target = target
        self.addr = addr
        self.conn: _ClientConnection | None = None
        self.connecting: asyncio.Future[_ClientConnection] | None = None
        self.failures = 0
        self.retry_at = 0.0
        self.last_error = ""
        self.next_id = 1
        self.closed = False

    def remote_error(self, body: ErrorBody) -> Exception:
        """The exception a caller sees for an ``ErrorBody`` answer."""
        if body.code == ERR_FATAL:
            return Unreachable(f"node {self.target} has stopped: {body.message}")
        return RemoteError(self.target, body.message)

    async def call(self, kind: int, req: Any, option: RPCOption) -> Any:
        """Send ``req`` as ``kind`` and return the decoded response (see the module
        docstring for the errors)."""
        loop = self.loop
        deadline = loop.time() + option.hard_ttl
        conn = self.conn
        if conn is None or conn.closed:
            conn = await self._connect(deadline)
            if conn.closed:  # lost between the connect and this caller resuming
                raise Unreachable(f"node {self.target}: {conn.close_reason}")
        rid = self.next_id
        self.next_id = rid + 1 if rid < 2**63 else 1
        try:
            frame = frame_message(kind, rid, req)
        except CodecError as e:
            raise NetworkError(f"cannot frame a {wire.KIND_NAMES[kind]} request: {e}") from e
        if len(frame) - 4 > self.factory.max_frame_size:
            raise NetworkError(
                f"a {wire.KIND_NAMES[kind]} frame of {len(frame)} bytes exceeds max_frame_size "
                f"{self.factory.max_frame_size}"
            )
        fut: asyncio.Future[Any] = loop.create_future()
        conn.pending[rid] = (fut, RESPONSE_KIND[kind])
        conn.send(frame)
        timer = loop.call_at(deadline, _expire, fut, self.target, kind, option.hard_ttl)
        try:
            return await fut
        finally:
            timer.cancel()
            conn.pending.pop(rid, None)

    async def _connect(self, deadline: float) -> _ClientConnection:
        """The live connection, connecting (and handshaking) if needed; shared by the
        callers that arrive while a connect is in progress."""
        if self.closed:
            raise Unreachable(f"node {self.target}: the network factory is closed")
        loop = self.loop
        if self.connecting is None:
            now = loop.time()
            if now < self.retry_at:
                raise Unreachable(
                    f"node {self.target} at {self.addr}: backing off for {self.retry_at - now:.3f}s "
                    f"after: {self.last_error}"
                )
            self.connecting = loop.create_future()
            task = loop.create_task(self._open())
            task.add_done_callback(self._opened)
        fut = self.connecting
        remaining = deadline - loop.time()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), max(remaining, 0.0))
        except asyncio.TimeoutError:
            raise Unreachable(
                f"node {self.target} at {self.addr}: no connection within the RPC deadline"
            ) from None

    async def _open(self) -> _ClientConnection:
        f = self.factory
        host, port = parse_addr(self.addr)
        conn = _ClientConnection(self)
        kw: dict[str, Any] = {}
        if f.ssl is not None:
            kw["ssl"] = f.ssl
            kw["server_hostname"] = f.server_hostname if f.server_hostname is not None else host
        try:
            await asyncio.wait_for(
                self.loop.create_connection(lambda: conn, host, port, **kw), f.connect_timeout
            )
        except asyncio.TimeoutError:
            raise Unreachable(f"connect to {self.addr} timed out") from None
        except (OSError, _ssl.SSLError, ValueError) as e:
            raise Unreachable(f"connect to {self.addr} failed: {e!r}") from e
        try:
            conn.send(frame_message(KIND_HELLO, 0, Hello(wire.PROTOCOL_VERSION, f.cluster_name, f.node_id)))
            ack = await asyncio.wait_for(asyncio.shield(conn.hello), f.connect_timeout)
        except asyncio.TimeoutError:
            conn.fail("no handshake answer")
            raise Unreachable(f"node {self.target} at {self.addr}: no handshake answer") from None
        except BaseException:
            conn.fail("handshake failed")
            raise
        if ack.node_id != self.target:
            conn.fail(f"the node at {self.addr} is node {ack.node_id}", log_it=True)
            raise Unreachable(f"node {self.target} at {self.addr}: answered as node {ack.node_id}")
        return conn

    def _opened(self, task: asyncio.Task[_ClientConnection]) -> None:
        fut, self.connecting = self.connecting, None
        assert fut is not None
        if task.cancelled():
            fut.set_exception(Unreachable(f"node {self.target}: connect cancelled"))
        elif (e := task.exception()) is not None:
            self.failures += 1
            f = self.factory
            backoff = min(f.backoff_max, f.backoff_min * 2 ** min(self.failures - 1, 30))
            self.retry_at = self.loop.time() + backoff * f._rng.uniform(0.5, 1.0)
            self.last_error = str(e)
            if not isinstance(e, Unreachable):
                e = Unreachable(f"node {self.target}: connect failed: {e!r}")
            fut.set_exception(e)
        else:
            conn = task.result()
            if self.closed:
                conn.fail("the network factory is closed")
                fut.set_exception(Unreachable(f"node {self.target}: the network factory is closed"))
            else:
                self.failures = 0
                self.retry_at = 0.0
                self.conn = conn
                fut.set_result(conn)
        if fut.exception() is not None:
            pass  # retrieved here, so a connect nobody awaits any more logs nothing

    def close(self) -> None:
        """Close the connection; later calls raise ``Unreachable``."""
        self.closed = True
        if self.conn is not None:
            self.conn.fail("the network factory is closed")


def _expire(fut: asyncio.Future[Any], target: NodeId, kind: int, ttl: float) -> None:
    if not fut.done():
        fut.set_exception(Timeout(f"node {target}: no {wire.KIND_NAMES[kind]} answer within {ttl}s"))


class TcpClient:
    """A ``RaftNetwork`` sending to one target over its factory's shared connection to it.

    Calls may overlap freely: each is its own request id on the connection."""

    __slots__ = ("_peer", "target")

    def __init__(self, peer: _Peer) -> None:
        self._peer = peer
        self.target = peer.target

    async def append_entries(
        self, req: AppendEntriesRequest, option: RPCOption = _DEFAULT_OPTION
    ) -> AppendEntriesResponse:
        """Send AppendEntries; see the module docstring for the errors."""
        return await self._peer.call(KIND_APPEND_ENTRIES, req, option)  # type: ignore[no-any-return]

    async def vote(self, req: VoteRequest, option: RPCOption = _DEFAULT_OPTION) -> VoteResponse:
        """Send a vote request; see the module docstring for the errors."""
        return await self._peer.call(KIND_VOTE, req, option)  # type: ignore[no-any-return]

    async def install_snapshot(
        self, req: InstallSnapshotRequest, option: RPCOption = _DEFAULT_OPTION
    ) -> InstallSnapshotResponse:
        """Send one snapshot chunk; see the module docstring for the errors."""
        return await self._peer.call(KIND_INSTALL_SNAPSHOT, req, option)  # type: ignore[no-any-return]

    async def transfer_leader(
        self, req: TransferLeaderRequest, option: RPCOption = _DEFAULT_OPTION
    ) -> None:
        """Send a leader-transfer notice; see the module docstring for the errors."""
        await self._peer.call(KIND_TRANSFER_LEADER, req, option)

    def __repr__(self) -> str:
        return f"TcpClient(-> {self.target} at {self._peer.addr})"


class TcpNetworkFactory:
    """A ``RaftNetworkFactory`` over TCP for node ``node_id`` of cluster ``cluster_name``.

    - ``ssl``: a client ``ssl.SSLContext`` (TLS; give it a certificate for mutual TLS), or
      ``None`` for plain TCP. ``server_hostname`` overrides the name checked against the
      server's certificate (default: the host of the target's address).
    - ``connect_timeout``: seconds for the TCP (and TLS) connect and for the handshake.
    - ``backoff_min`` / ``backoff_max``: after a failed connect, calls to that target raise
      ``Unreachable`` at once for a jittered back-off (uniform in [50%, 100%] of
      ``min(backoff_max, backoff_min * 2**(failures - 1))``) before the next attempt.
    - ``max_frame_size``: largest frame sent or accepted.
    - ``seed``: seeds the back-off jitter.

    Create it in the event loop that runs the node; ``close()`` it after the node shut down.
    """

    def __init__(
        self,
        node_id: NodeId,
        cluster_name: str,
        ssl: _ssl.SSLContext | None = None,
        *,
        server_hostname: str | None = None,
        connect_timeout: float = 1.0,
        backoff_min: float = 0.05,
        backoff_max: float = 1.0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        seed: int | None = None,
    ) -> None:
        if not 0 <= node_id <= wire.MAX_U63:
            raise ValueError(f"node id {node_id} out of range")
        if len(cluster_name) > wire.MAX_NAME_LEN:
            raise ValueError(f"cluster name longer than {wire.MAX_NAME_LEN} characters")
        if not 0 < backoff_min <= backoff_max:
            raise ValueError("need 0 < backoff_min <= backoff_max")
        if connect_timeout <= 0 or max_frame_size < 64:
            raise ValueError("connect_timeout must be positive and max_frame_size at least 64")
        self.node_id = node_id
        self.cluster_name = cluster_name
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.connect_timeout = connect_timeout
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.max_frame_size = max_frame_size
        self._rng = random.Random(seed)
        self._peers: dict[NodeId, _Peer] = {}
        self._closed = False

    def new_client(self, target: NodeId, node: BasicNode) -> TcpClient:
        """A client for ``target`` at ``node.addr`` (``"host:port"``). Every client of one
        target shares one connection; a changed address replaces that connection. Does no
        IO (connects on the first RPC); must be called in the running loop."""
        peer = self._peers.get(target)
        if peer is None or peer.addr != node.addr or peer.closed:
            if peer is not None:
                peer.close()
            peer = _Peer(self, target, node.addr)
            if self._closed:
                peer.closed = True
            self._peers[target] = peer
        return TcpClient(peer)

    def connected(self, target: NodeId) -> bool:
        """Whether a live connection to ``target`` exists now."""
        peer = self._peers.get(target)
        return peer is not None and peer.conn is not None and not peer.conn.closed

    async def close(self) -> None:
        """Close every connection; requests in flight and later calls raise ``Unreachable``."""
        self._closed = True
        for peer in self._peers.values():
            peer.close()
        await asyncio.sleep(0)  # let the transports run their close callbacks

    def __repr__(self) -> str:
        return f"TcpNetworkFactory(node_id={self.node_id}, cluster={self.cluster_name!r})"


# ==============================================================================================
# server side
# ==============================================================================================

_HANDLER = {
    KIND_APPEND_ENTRIES: "append_entries",
    KIND_VOTE: "vote",
    KIND_INSTALL_SNAPSHOT: "install_snapshot",
    KIND_TRANSFER_LEADER: "handle_transfer_leader",
}


def _request_sender(kind: int, req: Any) -> int:
    """The node a well-formed request comes from: the leader or candidate it names."""
    if kind == KIND_TRANSFER_LEADER:
        return req.from_leader.leader_id.node_id  # type: ignore[no-any-return]
    return req.vote.leader_id.node_id  # type: ignore[no-any-return]


class _ServerConnection(asyncio.Protocol):
    """One accepted connection: handshake, then requests dispatched concurrently."""

    def __init__(self, server: TcpServer) -> None:
        self.server = server
        self.loop = server._loop
        self.transport: asyncio.Transport | None = None
        self.writer: _FrameWriter | None = None
        self.peer = "?"
        self.sender: NodeId | None = None
        self.reader = FrameReader(wire.MAX_HELLO_FRAME)
        self.tasks: set[asyncio.Task[None]] = set()
        self.backlog: deque[tuple[int, int, memoryview]] = deque()
        self.paused = False
        self.write_paused = False
        self.draining = False
        self.closed = False
        self.last_activity = self.loop.time()
        self.handshake_timer: asyncio.TimerHandle | None = None
        self.tls_task: asyncio.Task[None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        peername = transport.get_extra_info("peername")
        self.peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        srv = self.server
        if srv._closing:
            transport.close()
            self.closed = True
            return
        if len(srv._conns) >= srv.max_connections:
            self._drop(f"too many connections ({srv.max_connections})")
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
            tls = asyncio.sslproto.SSLProtocol(
                self.loop,
                self,
                srv._ssl,
                waiter,
                server_side=True,
                call_connection_made=False,
                ssl_handshake_timeout=srv.handshake_timeout,
            )
            transport.set_protocol(tls)
            tls.connection_made(transport)
            self.transport = tls._get_app_transport()
            self.writer = _FrameWriter(self.loop, self.transport)
            self.tls_task = self.loop.create_task(self._tls_handshake(waiter, transport))
            return
        self.writer = _FrameWriter(self.loop, transport)  # type: ignore[arg-type]

    async def _tls_handshake(self, waiter: asyncio.Future[None], raw: asyncio.BaseTransport) -> None:
        try:
            await waiter
        except (OSError, asyncio.TimeoutError, EOFError, ValueError, RuntimeError, ConnectionError) as e:
            if not self.closed:
                srv = self.server
                self.closed = True
                srv._conns.discard(self)
                srv.refused += 1
                if self.handshake_timer is not None:
                    self.handshake_timer.cancel()
                log.warning("tcp server %s: TLS refused the connection from %s: %r", srv.address, self.peer, e)
                raw.close()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_activity = self.loop.time()
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
            self._pump()
        except (WireError, CodecError) as e:
            self._drop(f"malformed input: {e}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
        self.server._conns.discard(self)
        self.backlog.clear()
        for t in list(self.tasks):
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
        hello: Hello = decode_body(kind, body)
        if hello.version not in wire.SUPPORTED_VERSIONS:
            return self._refuse(ERR_UNSUPPORTED, f"unsupported protocol version {hello.version}")
        if hello.cluster_name != srv.cluster_name:
            return self._refuse(ERR_REFUSED, f"wrong cluster name {hello.cluster_name!r}")
        nodes = srv._raft.metrics.membership_config.membership.nodes
        if nodes and hello.node_id not in nodes:
            return self._refuse(ERR_REFUSED, f"node {hello.node_id} is not in the membership")
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
            self.handshake_timer = None
        self.sender = hello.node_id
        self.reader = FrameReader(srv.max_frame_size)
        self._send(frame_message(KIND_HELLO_ACK, 0, HelloAck(wire.PROTOCOL_VERSION, srv.node_id)))
        log.debug("tcp server %s: accepted node %s from %s", srv.address, hello.node_id, self.peer)

    def _refuse(self, code: int, reason: str) -> None:
        srv = self.server
        srv.refused += 1
        log.warning("tcp server %s: refused the connection from %s: %s", srv.address, self.peer, reason)
        self._send(frame_message(KIND_ERROR, 0, ErrorBody(code, reason)))
        self._close_after_flush()

    def _handshake_timeout(self) -> None:
        self.handshake_timer = None
        if self.sender is None and not self.closed:
            self._drop(f"no handshake within {self.server.handshake_timeout}s")

    # -- requests ----------------------------------------------------------------------------

    def _pump(self) -> None:
        """Start backlog requests (decoding them now) while fewer than ``max_inflight``
        run and the peer reads its answers; pause reading while any request waits."""
        srv = self.server
        limit = srv.max_inflight
        backlog = self.backlog
        while backlog and len(self.tasks) < limit and not (self.draining or self.closed or self.write_paused):
            kind, rid, body = backlog.popleft()
            try:
                req = decode_body(kind, body)
            except WireError as e:
                self._drop(f"malformed input: {e}")
                return
            if _request_sender(kind, req) != self.sender:
                # Well-formed but not from the handshake's sender: refuse this one request.
                srv.refused += 1
                self._answer_error(rid, ERR_INVALID, "the request's leader is not the connection's sender")
                continue
            task = self.loop.create_task(self._handle(kind, rid, req))
            self.tasks.add(task)
            task.add_done_callback(self._done)
        self._set_reading()

    def _set_reading(self) -> None:
        t = self.transport
        if t is None or self.closed:
            return
        want_pause = (
            self.draining or self.write_paused or bool(self.backlog) or len(self.tasks) >= self.server.max_inflight
        )
        if want_pause and not self.paused:
            self.paused = True
            t.pause_reading()
        elif not want_pause and self.paused:
            self.paused = False
            t.resume_reading()

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not self.closed:
            self._pump()
        if self.draining and not self.tasks:
            self.server._drained(self)

    async def _handle(self, kind: int, rid: int, req: Any) -> None:
        srv = self.server
        srv.delivered += 1
        try:
            resp = await getattr(srv._raft, _HANDLER[kind])(req)
        except Fatal as e:
            self._answer_error(rid, ERR_FATAL, str(e))
            return
        except Exception as e:  # the peer learns of it as RemoteError
            code = ERR_INVALID if _InvalidRequest is not None and isinstance(e, _InvalidRequest) else ERR_REMOTE
            if code == ERR_REMOTE:
                log.warning("tcp server %s: %s from node %s failed: %r", srv.address, _HANDLER[kind], self.sender, e)
            self._answer_error(rid, code, f"{type(e).__name__}: {e}")
            return
        if not self.closed:
            self._send(frame_message(RESPONSE_KIND[kind], rid, resp))

    def _answer_error(self, rid: int, code: int, message: str) -> None:
        if not self.closed:
            self._send(frame_message(KIND_ERROR, rid, ErrorBody(code, message[: wire.MAX_MESSAGE_LEN])))

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

    def _drop(self, reason: str, level: int = logging.WARNING) -> None:
        """Close at once, logged once with the peer address."""
        if self.closed:
            return
        self.server.dropped += 1
        log.log(level, "tcp server %s: closing the connection from %s: %s", self.server.address, self.peer, reason)
        self.closed = True
        self.server._conns.discard(self)
        self.backlog.clear()
        if self.transport is not None:
            self.transport.abort()

    def idle_check(self, now: float) -> None:
        """Close the connection if nothing came in for ``idle_timeout`` seconds and nothing
        is in flight."""
        if not self.closed and not self.tasks and now - self.last_activity >= self.server.idle_timeout:
            self._drop(f"idle for {self.server.idle_timeout}s", logging.DEBUG)

    def start_drain(self) -> None:
        """Stop reading; answer the requests in flight; the server closes it when done."""
        self.draining = True
        self.backlog.clear()
        self._set_reading()
        if not self.tasks:
            self.server._drained(self)


class TcpServer:
    """Serves a ``Raft`` node's RPCs on a TCP port (see the module docstring).

    Counters (for tests and monitoring): ``delivered`` requests handed to ``Raft``,
    ``refused`` handshakes and requests refused, ``dropped`` connections closed for bad input,
    idleness or limits.
    """

    def __init__(self) -> None:
        raise TypeError("use `await TcpServer.start(...)`")

    @classmethod
    async def start(
        cls,
        raft: Any,
        host: str,
        port: int,
        cluster_name: str,
        ssl: _ssl.SSLContext | None = None,
        *,
        node_id: NodeId | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_inflight: int = 64,
        max_connections: int = 256,
        idle_timeout: float = 60.0,
        handshake_timeout: float = 5.0,
        drain_timeout: float = 5.0,
    ) -> TcpServer:
        """Listen on ``host:port`` (``port=0``: an ephemeral port, see ``port``) and serve
        ``raft`` (anything implementing ``RaftServer`` with a ``metrics`` property).

        - ``ssl``: a server ``ssl.SSLContext`` (TLS); with ``verify_mode = CERT_REQUIRED``
          a client without a certificate of the context's CAs is refused (mutual TLS).
        - ``node_id``: the id sent in the handshake answer (default ``raft.metrics.id``).
        - ``max_frame_size``: a larger frame closes the connection (frames are buffered whole,
          so this bounds a connection's input buffer). Before the handshake the bound is
          ``wire.MAX_HELLO_FRAME``.
        - ``max_inflight``: requests of one connection handled at once; more wait, and the
          connection is not read meanwhile.
        - ``max_connections``: connections open at once; more are closed on accept.
        - ``idle_timeout``: a connection with nothing in flight that sent nothing for this
          long is closed. ``handshake_timeout``: a connection must complete the handshake
          within this (and, with ``ssl``, the TLS handshake too).
        - ``drain_timeout``: how long ``close()`` waits for requests in flight.
        """
        self = cls._unbound(
            raft,
            cluster_name,
            ssl,
            node_id=node_id,
            max_frame_size=max_frame_size,
            max_inflight=max_inflight,
            max_connections=max_connections,
            idle_timeout=idle_timeout,
            handshake_timeout=handshake_timeout,
            drain_timeout=drain_timeout,
        )
        self.address = f"{host}:{port}"
        self._server = await self._loop.create_server(
            lambda: _ServerConnection(self), host, port, reuse_address=True
        )
        sockname = self._server.sockets[0].getsockname()
        self.host = sockname[0]
        self.port = sockname[1]
        self.address = f"{host}:{self.port}"
        self._idle_timer = self._loop.call_later(self._idle_period(), self._idle_tick)
        return self

    @classmethod
    def _unbound(
        cls,
        raft: Any,
        cluster_name: str,
        ssl: _ssl.SSLContext | None,
        *,
        node_id: NodeId | None,
        max_frame_size: int,
        max_inflight: int,
        max_connections: int,
        idle_timeout: float,
        handshake_timeout: float,
        drain_timeout: float,
    ) -> TcpServer:
        """A configured server that listens nowhere (``start`` binds it; the atheris
        harness feeds its connections directly). Must be called in the running loop."""
        if max_frame_size < 64 or max_inflight < 1 or max_connections < 1:
            raise ValueError("max_frame_size >= 64, max_inflight >= 1 and max_connections >= 1")
        if idle_timeout <= 0 or handshake_timeout <= 0 or drain_timeout < 0:
            raise ValueError("timeouts must be positive")
        self = object.__new__(cls)
        self._loop = asyncio.get_running_loop()
        self._raft = raft
        self._ssl = ssl
        self.cluster_name = cluster_name
        self.node_id = raft.metrics.id if node_id is None else node_id
        self.max_frame_size = max_frame_size
        self.max_inflight = max_inflight
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self.drain_timeout = drain_timeout
        self.delivered = 0
        self.refused = 0
        self.dropped = 0
        self._conns: set[_ServerConnection] = set()
        self._closing = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.host = ""
        self.port = 0
        """The bound port (the ephemeral one when started with port 0)."""
        self.address = "unbound"
        return self

    def _idle_period(self) -> float:
        return max(min(self.idle_timeout, self.handshake_timeout) / 2, 0.01)

    def _idle_tick(self) -> None:
        now = self._loop.time()
        for c in list(self._conns):
            c.idle_check(now)
        if not self._closing:
            self._idle_timer = self._loop.call_later(self._idle_period(), self._idle_tick)

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
        ``drain_timeout``), then close every connection. Idempotent."""
        if self._closing:
            return
        self._closing = True
        self._idle_timer.cancel()
        self._server.close()
        self._drain_waiter = self._loop.create_future()
        for c in list(self._conns):
            c.start_drain()
        if any(c.tasks for c in self._conns):
            try:
                await asyncio.wait_for(asyncio.shield(self._drain_waiter), self.drain_timeout)
            except asyncio.TimeoutError:
                log.warning("tcp server %s: requests still in flight after %ss; cancelling", self.address, self.drain_timeout)
        for c in list(self._conns):
            for t in list(c.tasks):
                t.cancel()
            c._close_after_flush()
        self._conns.clear()
        try:
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        except asyncio.TimeoutError:  # pragma: no cover - depends on the loop implementation
            pass

    async def __aenter__(self) -> TcpServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"TcpServer({self.address}, node {self.node_id}, {len(self._conns)} connections)"

