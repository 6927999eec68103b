"""The TCP transport's client side: ``TcpNetworkFactory`` and the ``TcpClient`` objects it
makes (see ``openraft_py.network.tcp`` for the picture and the errors)."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import ssl as _ssl
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Self

from .._core import CodecError, FrameReader, FrameTooLarge
from ..config import Config
from ..core.messages import Reply
from ..errors import ConfigError, NetworkError, RemoteError, Timeout, Unreachable
from ..failure_log import FailureLog
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
from ..validation import check_node, check_node_id, shown
from . import wire
from ._tcp_common import (
    DEFAULT_MAX_FRAME_SIZE,
    FIRST_BYTES_KEPT,
    PeerIdOfCert,
    _FrameWriter,
    _set_nodelay,
    cert_mismatch,
    check_cert_binding,
    check_duration,
    check_frame_limit,
    check_given_addr,
    check_seconds,
    foreign_protocol_hint,
    log,
    parse_addr,
)
from .wire import (
    ERR_FATAL,
    ERR_UNSUPPORTED,
    KIND_APPEND_ENTRIES,
    KIND_ERROR,
    KIND_HELLO,
    KIND_HELLO_ACK,
    KIND_INSTALL_SNAPSHOT,
    KIND_TRANSFER_LEADER,
    KIND_VOTE,
    MAX_ENTRIES,
    RESPONSE_KIND,
    ErrorBody,
    Hello,
    HelloAck,
    WireError,
    decode_body,
    frame_message,
    split_payload,
)

__all__ = ["TcpNetworkFactory", "TcpClient", "required_frame_size", "check_frame_size", "MIN_ELECTION_TIMEOUT_MS"]

_DEFAULT_OPTION = RPCOption()

# -- what a Config needs of the frame limit ------------------------------------------------------

ENTRY_FRAMING = 64
"""Bytes an AppendEntries body spends on one entry besides its payload bytes (its log id
and payload wrapper: 43 at most in msgpack, rounded up)."""
REQUEST_FRAMING = 256
"""Bytes of an AppendEntries frame besides its entries (header, vote, prev and commit log
ids, the list header: 74 at most, rounded up)."""
SNAPSHOT_FRAMING = 64 * 1024
"""Bytes of an install-snapshot frame besides its data: the meta, whose membership holds a
node's address (at most ``wire.MAX_ADDR_LEN``) per node; enough for about 60 nodes with the
longest addresses."""

_RAISE_FRAME = "raise max_frame_size (of TcpNetworkFactory and TcpServer, on every node)"
_TOO_LARGE_HINT = {
    KIND_APPEND_ENTRIES: "lower Config.max_payload_bytes (an entry larger than it on its own was written "
    f"under an older setting and needs the frame), or {_RAISE_FRAME}",
    KIND_INSTALL_SNAPSHOT: f"lower Config.snapshot_max_chunk_size, or {_RAISE_FRAME}",
}


_X509_V_ERR_HOSTNAME_MISMATCH = 62
_X509_V_ERR_IP_ADDRESS_MISMATCH = 64
"""OpenSSL's verify codes of a certificate that does not name the host dialled."""


def _append_frame_size(config: Config) -> int:
    return config.max_payload_bytes + config.max_payload_entries * ENTRY_FRAMING + REQUEST_FRAMING


def _snapshot_frame_size(config: Config) -> int:
    return config.snapshot_max_chunk_size + SNAPSHOT_FRAMING


def required_frame_size(config: Config) -> int:
    """The largest frame payload a node running ``config`` sends: an AppendEntries of
    ``max_payload_bytes`` payload bytes in ``max_payload_entries`` entries, or a snapshot
    chunk of ``snapshot_max_chunk_size`` bytes, with their framing. Both ends'
    ``max_frame_size`` must be at least this (``TcpNetworkFactory.check_config``,
    ``TcpServer.start``)."""
    return max(_append_frame_size(config), _snapshot_frame_size(config))


def frame_size_excess(config: Config, max_frame_size: int) -> str | None:
    """What of ``config`` needs frames larger than ``max_frame_size`` bytes, naming the
    settings and the size they need (``"an AppendEntries of Config.max_payload_bytes=... in
    up to max_payload_entries=... entries needs N bytes"``, or a snapshot chunk of
    ``snapshot_max_chunk_size``); ``None`` when frames of that size carry everything."""
    append = _append_frame_size(config)
    if append > max_frame_size:
        return (
            f"an AppendEntries of Config.max_payload_bytes={config.max_payload_bytes} in up to "
            f"max_payload_entries={config.max_payload_entries} entries needs {append} bytes"
        )
    snapshot = _snapshot_frame_size(config)
    if snapshot > max_frame_size:
        return f"a snapshot chunk of Config.snapshot_max_chunk_size={config.snapshot_max_chunk_size} needs {snapshot} bytes"
    return None


MIN_ELECTION_TIMEOUT_MS = 10
"""The least ``Config.election_timeout_min`` (ms) a node on the TCP transport runs with
(``TcpNetworkFactory.check_config``, which ``Raft.new`` calls; ``openraft-py serve
--raft-config``). A vote over TCP is a round trip and the voter's durable write of the vote,
and the heartbeats that keep a leader cross the same event loops: below this the answers
come back after the candidates' elections have timed out, and no leader lasts. On loopback,
3 nodes with 2 to 3 ms went through hundreds of terms a second without a leader, and with 5
to 10 ms no leader held for a second (10 to 20 ms kept one leader). The in-process
``Router`` takes less (in virtual time the simulator uses a few ms)."""


def election_timeout_shortfall(config: Config) -> str | None:
    """Why ``config``'s election timeout is too short for the TCP transport (below
    ``MIN_ELECTION_TIMEOUT_MS``), naming the setting and the floor; ``None`` when it is not."""
    if config.election_timeout_min >= MIN_ELECTION_TIMEOUT_MS:
        return None
    return (
        f"Config.election_timeout_min={config.election_timeout_min} ms is below {MIN_ELECTION_TIMEOUT_MS} ms, the "
        "least the TCP transport takes: a vote (a round trip and the voter's durable write) and the heartbeats "
        "come back after such a timeout, and no leader lasts; raise election_timeout_min and election_timeout_max"
    )


def payload_entries_excess(config: Config) -> str | None:
    """Why ``config``'s AppendEntries cannot go over TCP whatever the frame limit: more
    entries in one (``max_payload_entries``) than a receiver decodes (``wire.MAX_ENTRIES``;
    it refuses such a request from its list header, so this node's full batches would never
    reach a follower); ``None`` if they can."""
    if config.max_payload_entries <= MAX_ENTRIES:
        return None
    return (
        f"Config.max_payload_entries={config.max_payload_entries} is over the {MAX_ENTRIES} entries an "
        "AppendEntries may carry over TCP (a receiver refuses more, unread: decoding millions of small entries "
        f"held its event loop for seconds); set max_payload_entries to at most {MAX_ENTRIES}"
    )


def check_frame_size(config: Config, max_frame_size: int, who: str) -> None:
    """``ConfigError`` unless frames of ``max_frame_size`` bytes carry what ``config`` sends,
    naming the setting that needs more (``frame_size_excess``), or unless its AppendEntries
    carry at most ``wire.MAX_ENTRIES`` entries (``payload_entries_excess``)."""
    many = payload_entries_excess(config)
    if many is not None:
        raise ConfigError(f"{who}: {many}")
    what = frame_size_excess(config, max_frame_size)
    if what is None:
        return
    raise ConfigError(
        f"{who} max_frame_size={max_frame_size} cannot carry what this Config sends: {what} with its "
        f"framing; lower that setting, or raise max_frame_size on every node's TcpNetworkFactory and TcpServer"
    )


_SWEEP_SLACK = 0.001
"""A request whose deadline is this close (seconds) when the sweep runs expires in that
sweep: uvloop's timers have millisecond resolution and may fire just before the deadline."""

UNSENT_FRAMES_MAX = 2
"""A connection holding more than this many ``max_frame_size``s of bytes its target has not
taken yet (the transport's write buffer: bytes written that the kernel could not send) takes
no new request: each raises ``Unreachable`` at once, nothing written, until the target reads
again. A target that stops reading (stopped with SIGSTOP, a frozen VM, a stalled network
path) otherwise had every request written to it kept in the sender's memory: a leader resends
a lagging follower's entries after each timeout (up to ``Config.max_payload_bytes``, 8 MiB,
every quarter second), so its memory grew without bound, by about 36 MB a second under
load, until the follower read again or the leader ran out of memory. A healthy target takes
what is written to it: a full pipeline of the default ``Config`` (8 requests of 8 MiB) fits
the bound of the default frame size (64 MiB)."""

_Pending = tuple["asyncio.Future[Any] | Reply", int, float, int, float]
"""A request in flight: (its future, or the ``Reply`` of ``submit``, the expected response
kind, its deadline on the loop clock, its request kind, its ``hard_ttl``)."""


def _resolve_in_thread(loop: asyncio.AbstractEventLoop, host: str, port: int) -> asyncio.Future[list[tuple[int, str]]]:
    """A future of ``host``'s addresses for a TCP connection, as ``(family, IP address)``
    pairs in ``socket.getaddrinfo``'s order, duplicates dropped; or of the resolver's error.
    The call runs in a daemon thread of its own, not in the loop's default executor: a
    resolver that hangs holds no worker thread the node needs (storage runs there) and
    does not keep the process from exiting."""
    fut: asyncio.Future[list[tuple[int, str]]] = loop.create_future()

    def settle(addrs: list[tuple[int, str]], err: BaseException | None) -> None:
        if fut.done():
            return
        if err is not None:
            fut.set_exception(err)
        else:
            fut.set_result(addrs)

    def run() -> None:
        addrs: list[tuple[int, str]] = []
        err: BaseException | None = None
        try:
            for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
                ip = str(sockaddr[0])
                if len(sockaddr) >= 4 and sockaddr[3]:
                    ip = f"{ip}%{sockaddr[3]}"  # an IPv6 address's zone (a link-local one's interface)
                pair = (int(family), ip)
                if pair not in addrs:
                    addrs.append(pair)
            if not addrs:
                err = OSError(f"no address for {host!r}")
        except Exception as e:  # noqa: BLE001 - handed to the waiting connect attempt
            err = e
        try:
            loop.call_soon_threadsafe(settle, addrs, err)
        except RuntimeError:
            pass  # the loop is closed: nobody waits for it any more

    threading.Thread(target=run, name=f"openraft-resolve:{host}", daemon=True).start()
    return fut


class _ClientConnection(asyncio.Protocol):
    """One established (or being established) connection from a ``_Peer`` to its target.

    Deadlines: one timer per connection (``sweep``), not one per request. It is armed for
    the earliest deadline of ``pending`` (or earlier); when it fires it fails the requests
    whose deadline passed with ``Timeout``, forgets the ones whose caller gave up, and
    re-arms itself for the earliest deadline left.
    """

    def __init__(self, peer: _Peer) -> None:
        self.peer = peer
        self.loop = peer.loop
        self.transport: asyncio.Transport | None = None
        self.writer: _FrameWriter | None = None
        self.reader = FrameReader(peer.factory.max_frame_size)
        self.pending: dict[int, _Pending] = {}
        """Requests in flight by request id. Invariant: an entry leaves when its answer
        comes, when the sweep expires it or finds its future done (the caller gave up), or
        when the connection fails (every entry, with ``Unreachable``)."""
        self.sweep: asyncio.TimerHandle | None = None
        self.sweep_at = 0.0
        """When ``sweep`` fires. Invariant: while ``pending`` holds an entry whose future is
        not done, ``sweep`` is armed at or before that entry's deadline."""
        self.hello: asyncio.Future[HelloAck] = self.loop.create_future()
        self.first = b""
        """The first bytes received before the handshake answer (``foreign_protocol_hint``)."""
        self.closed = False
        self.close_reason = "connection closed"
        self.write_paused = False
        """Whether the transport's write buffer is above its high-water mark (``pause_writing``
        until ``resume_writing``): only then may it hold over ``max_unsent`` bytes, so only
        then do ``_Peer.call`` and ``submit`` read its size (``UNSENT_FRAMES_MAX``)."""

    # -- asyncio.Protocol --------------------------------------------------------------------

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        _set_nodelay(transport)
        # ``write_paused`` must be on whenever more than ``max_unsent`` bytes are unsent: a
        # high-water mark above it (only with a small ``max_frame_size``; TLS's is 512 KiB)
        # is lowered to it.
        limits = transport.get_write_buffer_limits()  # type: ignore[attr-defined]  # (low, high) of a write transport
        if limits[1] > self.peer.factory.max_unsent:
            transport.set_write_buffer_limits(high=self.peer.factory.max_unsent)  # type: ignore[attr-defined]
        self.writer = _FrameWriter(self.loop, transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if not self.hello.done() and len(self.first) < FIRST_BYTES_KEPT:
            self.first += data[: FIRST_BYTES_KEPT - len(self.first)]
        payload = b""
        try:
            frames = self.reader.feed(data)
            for payload in frames:
                kind, rid, body = split_payload(payload)
                msg = decode_body(kind, body)
                self._on_message(kind, rid, msg)
        except (WireError, CodecError) as e:
            if not self.hello.done() and self._ack_of_another_version(payload):
                return
            hint = "" if self.hello.done() else foreign_protocol_hint(self.first, dialled=True,
                                                                     too_large=isinstance(e, FrameTooLarge))
            self.fail(f"malformed data from node {self.peer.target} at {self.peer.addr}: {e}{hint}", log_it=True)

    def _ack_of_another_version(self, payload: bytes) -> bool:
        """Whether ``payload``, the handshake answer that did not decode, is a ``HelloAck`` of
        another protocol version, laid out otherwise (its version comes first,
        ``wire.hello_version``); if so, fail the handshake saying so (logged once by the peer)."""
        try:
            kind, _, body = split_payload(payload)
        except WireError:
            return False
        version = wire.hello_version(body) if kind == KIND_HELLO_ACK else None
        if version is None or version == wire.PROTOCOL_VERSION:
            return False
        why = (f"answered the handshake in protocol version {version}, not in {wire.PROTOCOL_VERSION}, the version "
               "of this node's hello (the only one it speaks)")
        self.peer.version_mismatch(why)
        self.fail(why)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.hello.done():
            reason = "the server closed the connection before answering the handshake"
            if exc is not None:
                reason += f": {exc!r}"
            elif self.peer.factory.ssl is not None:
                reason += " (TLS refused?)"
            else:
                # What a TLS server does with a plain hello (it logs the TLS error); but also a
                # server that is stopping, or a proxy between the two that cannot reach it.
                reason += (" (does the server expect TLS? this node connects without; or the server was stopping, "
                           "or a proxy in between could not reach it)")
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
                why = f"refused the handshake: {msg.message}"
                if msg.code == ERR_UNSUPPORTED:
                    why += f" (this node's hello was in protocol version {wire.PROTOCOL_VERSION})"
                    self.peer.version_mismatch(why)
                else:
                    # (The target logs why it refused this node; this node must be told too:
                    # the ``Unreachable`` is logged at DEBUG only by its callers, so a node
                    # refused at every reconnect, an impostor whose certificate names another
                    # node say, logged nothing about why nobody answered it.)
                    self.peer.refused.failed(self.loop.time(), why, f"{why}; closing")
                self.hello.set_exception(Unreachable(f"node {self.peer.target} {why}"))
            else:
                raise WireError(f"unexpected {wire.KIND_NAMES[kind]} during the handshake")
            return
        entry = self.pending.pop(rid, None)
        if entry is None:
            return  # expired, or the caller gave up and the sweep forgot it
        fut = entry[0]
        expected = entry[1]
        if fut.done():
            return
        if kind == expected:
            fut.set_result(msg)
        elif kind == KIND_ERROR:
            fut.set_exception(self.peer.remote_error(msg))
        else:
            fut.set_exception(Unreachable(f"node {self.peer.target} answered the wrong kind"))
            raise WireError(f"response of kind {wire.KIND_NAMES[kind]} to a request expecting {expected}")

    def unsent(self) -> int:
        """Bytes written to the transport that it has not sent yet (its write buffer)."""
        t = self.transport
        return 0 if t is None else t.get_write_buffer_size()

    def send(self, frame: bytes | bytearray) -> None:
        """Queue a frame for this loop turn's write."""
        assert self.writer is not None
        self.writer.send(frame)

    def request(self, rid: int, frame: bytes | bytearray, kind: int, deadline: float, ttl: float) -> asyncio.Future[Any]:
        """Send the request ``frame`` (id ``rid``, of ``kind``) and return the future of its
        answer: the decoded response, or ``RemoteError`` / ``Unreachable`` / ``Timeout``
        (no answer by ``deadline`` on the loop clock; the message names ``ttl``)."""
        fut: asyncio.Future[Any] = self.loop.create_future()
        self._pend(rid, fut, frame, kind, deadline, ttl)
        return fut

    def submit(self, rid: int, frame: bytes | bytearray, kind: int, deadline: float, ttl: float, slot: Reply) -> None:
        """``request`` with the answer (or the error) given to ``slot`` instead of a future,
        from this connection's callbacks: the read that decoded it, the sweep, ``fail``."""
        self._pend(rid, slot, frame, kind, deadline, ttl)

    def _pend(
        self, rid: int, slot: asyncio.Future[Any] | Reply, frame: bytes | bytearray, kind: int, deadline: float, ttl: float
    ) -> None:
        loop = self.loop
        self.pending[rid] = (slot, RESPONSE_KIND[kind], deadline, kind, ttl)
        self.send(frame)
        if self.sweep is None:
            self.sweep_at = deadline
            self.sweep = loop.call_at(deadline, self._sweep)
        elif deadline < self.sweep_at:  # a shorter ttl than the requests before it
            self.sweep.cancel()
            self.sweep_at = deadline
            self.sweep = loop.call_at(deadline, self._sweep)

    def _sweep(self) -> None:
        """Expire the requests past their deadline; re-arm for the earliest one left."""
        self.sweep = None
        now = self.loop.time()
        pending = self.pending
        target = self.peer.target
        next_at: float | None = None
        for rid, (fut, _, deadline, kind, ttl) in list(pending.items()):
            if fut.done():
                del pending[rid]
            elif deadline - now <= _SWEEP_SLACK:
                del pending[rid]
                fut.set_exception(Timeout(f"node {target}: no {wire.KIND_NAMES[kind]} answer within {ttl}s"))
            elif next_at is None or deadline < next_at:
                next_at = deadline
        if next_at is not None and not self.closed:
            self.sweep_at = next_at
            self.sweep = self.loop.call_at(next_at, self._sweep)

    def fail(self, reason: str, log_it: bool = False) -> None:
        """Close the connection and fail the handshake and every request in flight with
        ``Unreachable(reason)``."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        if log_it:
            self.peer.refused.failed(self.loop.time(), reason, f"{reason}; closing")
        if self.peer.conn is self:
            self.peer.conn = None
        err = f"node {self.peer.target}: {reason}"
        if self.sweep is not None:
            self.sweep.cancel()
            self.sweep = None
        if not self.hello.done():
            self.hello.set_exception(Unreachable(err))
            self.hello.exception()  # mark retrieved: nobody may be awaiting it any more
        pending, self.pending = self.pending, {}
        for entry in pending.values():
            fut = entry[0]
            if not fut.done():
                fut.set_exception(Unreachable(err))
        if self.transport is not None:
            self.transport.close()


class _Peer:
    """The connection state towards one target: the live connection, the connect in
    progress, and the back-off after failures. ``lane`` names a second connection to the
    same target (``heartbeat_lane``) in its logs."""

    def __init__(self, factory: TcpNetworkFactory, target: NodeId, addr: str, lane: str = "") -> None:
        self.factory = factory
        self.loop = asyncio.get_running_loop()
        self.target = target
        self.addr = addr
        self.conn: _ClientConnection | None = None
        self.connecting: asyncio.Future[_ClientConnection] | None = None
        self.opening: asyncio.Task[_ClientConnection] | None = None
        """The task making the connection (``_open``) while ``connecting`` is set: ``close``
        cancels it, so the calls waiting for it end at once."""
        self.failures = 0
        self.retry_at = 0.0
        self.last_error = ""
        self.refused_certificate = ""
        """Why the target's certificate was last refused, as logged (``_log_refused_certificate``)."""
        self.version_refused = ""
        """The last protocol version mismatch with the target, as logged (``version_mismatch``)."""
        self.refused = FailureLog(log, f"tcp client {factory.node_id} -> node {target}{lane}", unit="connection")
        """The connections closed for what the target sent or is (``fail(log_it=True)``: it
        answered as another node, its server certificate names another node, it sent what
        is not the protocol), or refused with the reason it sent (a handshake answered
        ``ERR_REFUSED``: this node's id is outside its membership, its cluster name or its
        certificate is not the target's): at each reconnect, so logged through a ``FailureLog``, ended
        by a connection that succeeds (``_opened``). Each was a WARNING: one a second for a
        membership address that reaches the wrong node."""
        self.next_id = 1
        self.closed = False
        self.close_reason = "the network factory is closed"
        """Why it was closed (``close``): what later calls' ``Unreachable`` says."""
        self.resolving: asyncio.Future[list[tuple[int, str]]] | None = None
        """The resolution of this peer's host name in progress (``_addresses``), if any."""
        self.heartbeats: _Peer | None = None
        """The connection for heartbeats (``heartbeat_lane``), made when first wanted;
        closed with this one. Invariant: ``None`` on a lane itself (a lane has no lane)."""
        self.is_lane = bool(lane)

    def heartbeat_lane(self) -> _Peer:
        """The peer of the target's second connection, which carries only heartbeats
        (``TcpClient.heartbeat``): a heartbeat written behind the AppendEntries already on
        this one waits until the target has read and answered them (one stream is read in
        order), and a leader replicating megabytes of entries lost its leadership to
        check-quorum (its heartbeats' answers came back later than an election timeout).
        On its own connection it waits behind nothing of the replication's: only for the
        target's event loop. Made once, with this peer's address, and connected at the
        leader's first AppendEntries to the target (``_lane_wanted``) or else at its first
        heartbeat; closed with this peer, with its reason."""
        lane = self.heartbeats
        if lane is None:
            assert not self.is_lane, "a heartbeat lane has no lane of its own"
            lane = self.heartbeats = _Peer(self.factory, self.target, self.addr, lane=" (heartbeats)")
            if self.closed:
                lane.close(self.close_reason)
        return lane

    def remote_error(self, body: ErrorBody) -> Exception:
        """The exception a caller sees for an ``ErrorBody`` answer."""
        if body.code == ERR_FATAL:
            return Unreachable(f"node {self.target} has stopped: {body.message}")
        return RemoteError(self.target, body.message)

    def _not_taking(self, unsent: int) -> Unreachable:
        """The error of a request not written because the target has not taken the
        ``unsent`` bytes written to it before (over ``max_unsent``: ``UNSENT_FRAMES_MAX``)."""
        return Unreachable(
            f"node {self.target}: not taking what is sent to it: {unsent} bytes written to it are still unsent "
            f"(over {self.factory.max_unsent}, {UNSENT_FRAMES_MAX} x max_frame_size): is it paused or frozen, or "
            "its network stalled? Nothing more is written to it until it reads again",
            connection_kept=True,
        )

    def submit(self, kind: int, req: Any, option: RPCOption, reply: Callable[[Any], None]) -> Reply | None:
        """Send ``req`` as ``kind`` now if connected; ``reply`` is then called once with the
        decoded response or the error ``call``'s result would raise (unless the returned
        handle is cancelled first). Not connected: ``None``, nothing sent. ``NetworkError``
        at once if ``req`` cannot be framed, ``Unreachable`` at once (nothing sent) if the
        target has not taken what was written to it (``UNSENT_FRAMES_MAX``)."""
        conn = self.conn
        if conn is None or conn.closed:
            return None
        if conn.write_paused and (unsent := conn.unsent()) > self.factory.max_unsent:
            raise self._not_taking(unsent)
        rid, frame = self._frame(kind, req)
        slot = Reply(reply)
        ttl = option.hard_ttl
        conn.submit(rid, frame, kind, self.loop.time() + ttl, ttl, slot)
        return slot

    def call(self, kind: int, req: Any, option: RPCOption) -> Awaitable[Any]:
        """Send ``req`` as ``kind``; await the result for the decoded response (see the
        module docstring for the errors).

        Connected, the request is framed and queued now and the result is the answer's
        future (no coroutine, no timer of its own: the connection's sweep keeps the
        deadline); otherwise a coroutine that connects first. Connected to a target that
        has not taken what was written to it (``UNSENT_FRAMES_MAX``): ``Unreachable`` at
        once, nothing written."""
        conn = self.conn
        if conn is None or conn.closed:
            return self._connect_and_call(kind, req, option)
        if conn.write_paused and (unsent := conn.unsent()) > self.factory.max_unsent:
            raise self._not_taking(unsent)
        rid, frame = self._frame(kind, req)
        ttl = option.hard_ttl
        return conn.request(rid, frame, kind, self.loop.time() + ttl, ttl)

    async def _connect_and_call(self, kind: int, req: Any, option: RPCOption) -> Any:
        loop = self.loop
        deadline = loop.time() + option.hard_ttl
        conn = await self._connect(deadline)
        if conn.closed:  # lost between the connect and this caller resuming
            raise Unreachable(f"node {self.target}: {conn.close_reason}")
        rid, frame = self._frame(kind, req)
        return await conn.request(rid, frame, kind, deadline, option.hard_ttl)

    def _frame(self, kind: int, req: Any) -> tuple[int, bytearray]:
        """The next request id and the frame of ``req`` with it; ``NetworkError`` if it
        cannot be framed or exceeds ``max_frame_size``."""
        rid = self.next_id
        self.next_id = rid + 1 if rid < 2**63 else 1
        try:
            frame = frame_message(kind, rid, req)
        except CodecError as e:
            raise NetworkError(f"cannot frame a {wire.KIND_NAMES[kind]} request: {e}") from e
        if len(frame) - 4 > self.factory.max_frame_size:
            raise NetworkError(
                f"a {wire.KIND_NAMES[kind]} frame of {len(frame) - 4} bytes exceeds max_frame_size="
                f"{self.factory.max_frame_size}: {_TOO_LARGE_HINT.get(kind, _RAISE_FRAME)}"
            )
        return rid, frame

    async def _connect(self, deadline: float) -> _ClientConnection:
        """The live connection, connecting (and handshaking) if needed; shared by the
        callers that arrive while a connect is in progress."""
        if self.closed:
            raise Unreachable(f"node {self.target}: {self.close_reason}")
        loop = self.loop
        if self.connecting is None:
            now = loop.time()
            if now < self.retry_at:
                raise Unreachable(
                    f"node {self.target} at {self.addr}: backing off for {self.retry_at - now:.3f}s "
                    f"after: {self.last_error}"
                )
            self._start_connect()
        fut = self.connecting
        assert fut is not None  # (set by _start_connect)
        remaining = deadline - loop.time()
        try:
            async with asyncio.timeout(max(remaining, 0.0)):
                return await asyncio.shield(fut)
        except TimeoutError:
            raise Unreachable(
                f"node {self.target} at {self.addr}: no connection within the RPC deadline"
            ) from None

    def _start_connect(self) -> None:
        """Start making the connection (``_open``; ``_opened`` takes its outcome)."""
        self.connecting = self.loop.create_future()
        task = self.opening = self.loop.create_task(self._open())
        task.add_done_callback(self._opened)

    def preconnect(self) -> None:
        """Start connecting now, awaited by nobody, unless connected, connecting, closed or
        backing off after a failed connect: a call made later finds the connection ready."""
        conn = self.conn
        if (self.closed or self.connecting is not None or (conn is not None and not conn.closed)
                or self.loop.time() < self.retry_at):
            return
        self._start_connect()

    async def _addresses(self, host: str, port: int, deadline: float) -> list[tuple[int, str]]:
        """``(family, IP address)`` pairs to connect to for ``host``, in ``getaddrinfo``'s
        order: ``host`` itself (family 0: any) when it is an IP address; otherwise ``host``
        resolved by ``socket.getaddrinfo`` in a thread of its own (``_resolve_in_thread``),
        waited for until ``deadline``. ``Unreachable`` when the name does not resolve or its
        resolution is not done by then.

        At most one resolution per peer runs at a time: a connect attempt that finds one
        still running (a resolver that hangs: its timeout is often 5-30 s, far longer than
        ``connect_timeout``) waits for it instead of starting another. ``loop.getaddrinfo``,
        which ``create_connection`` uses for a name, runs in the loop's default executor,
        shared with the storage's worker threads: there every reconnect to a peer whose name
        did not resolve left one more hanging call, and they held back the node's own
        reads, applies and snapshot builds for seconds."""
        try:
            ipaddress.ip_address(host)
            return [(0, host)]
        except ValueError:
            pass
        fut = self.resolving
        if fut is None:
            fut = self.resolving = _resolve_in_thread(self.loop, host, port)
            fut.add_done_callback(self._resolved)
        try:
            async with asyncio.timeout(max(deadline - self.loop.time(), 0.0)):
                return await asyncio.shield(fut)
        except TimeoutError:
            raise Unreachable(
                f"connect to {self.addr} failed: resolving {host!r} took more than connect_timeout="
                f"{self.factory.connect_timeout}s (still resolving: the next attempt waits for it)"
            ) from None
        except Exception as e:  # socket.gaierror, or UnicodeError for a bad name
            raise Unreachable(f"connect to {self.addr} failed: cannot resolve {host!r}: {e}") from e

    def _resolved(self, fut: asyncio.Future[list[tuple[int, str]]]) -> None:
        """A resolution ended: the next connect attempt starts a new one."""
        if self.resolving is fut:
            self.resolving = None
        if not fut.cancelled():
            fut.exception()  # retrieved: the attempts that waited for it may have given up

    async def _open(self) -> _ClientConnection:
        f = self.factory
        host, port = parse_addr(self.addr)
        deadline = self.loop.time() + f.connect_timeout
        kw: dict[str, Any] = {}
        if f.ssl is not None:
            kw["ssl"] = f.ssl
            kw["server_hostname"] = f.server_hostname if f.server_hostname is not None else host
        conn: _ClientConnection | None = None
        error: BaseException | None = None
        # Each address in turn, as ``create_connection`` does with a name, within the deadline.
        for family, ip in await self._addresses(host, port, deadline):
            attempt = _ClientConnection(self)
            try:
                async with asyncio.timeout(max(deadline - self.loop.time(), 0.0)):
                    await self.loop.create_connection(lambda c=attempt: c, ip, port, family=family, **kw)  # type: ignore[misc]
            except TimeoutError:
                raise Unreachable(f"connect to {self.addr} timed out") from None
            except (OSError, _ssl.SSLError, ValueError) as e:
                error = e
                continue
            except asyncio.CancelledError:
                # ``close`` (or a cancel of the loop's tasks): a connection made just as the
                # cancel came is closed, not left open for nobody.
                if attempt.transport is not None:
                    attempt.transport.close()
                raise
            conn = attempt
            break
        if conn is None:
            if isinstance(error, _ssl.SSLCertVerificationError):
                self._log_refused_certificate(error, kw["server_hostname"])
            hint = ""
            if f.ssl is not None and isinstance(error, (ConnectionResetError, _ssl.SSLEOFError)):
                # What a plain server does with a TLS hello (it logs "it looks like TLS").
                hint = " (in the TLS handshake: does the server speak TLS?)"
            raise Unreachable(f"connect to {self.addr} failed: {error!r}{hint}") from error
        if f.peer_id_of_cert is not None:
            # Before the hello: a server that cannot prove it is the target learns nothing.
            why = cert_mismatch(conn.transport, f.peer_id_of_cert, self.target, "server")
            if why is not None:
                conn.fail(f"{why} at {self.addr}", log_it=True)
                raise Unreachable(f"node {self.target} at {self.addr}: {why}")
        try:
            conn.send(frame_message(KIND_HELLO, 0, Hello(wire.PROTOCOL_VERSION, f.cluster_name, f.node_id)))
            async with asyncio.timeout(f.connect_timeout):
                ack = await asyncio.shield(conn.hello)
        except TimeoutError:
            conn.fail("no handshake answer")
            raise Unreachable(f"node {self.target} at {self.addr}: no handshake answer") from None
        except BaseException:
            conn.fail("handshake failed")
            raise
        if ack.version != wire.PROTOCOL_VERSION:
            # It must answer in the version of the hello or refuse it: this node speaks no other.
            why = (f"answered the handshake in protocol version {ack.version}, not in {wire.PROTOCOL_VERSION}, the "
                   "version of this node's hello (the only one it speaks)")
            conn.fail(why)
            self.version_mismatch(why)
            raise Unreachable(f"node {self.target} at {self.addr} {why}")
        if ack.node_id != self.target:
            conn.fail(f"the node at {self.addr} is node {ack.node_id}", log_it=True)
            raise Unreachable(f"node {self.target} at {self.addr}: answered as node {ack.node_id}")
        return conn

    def version_mismatch(self, why: str) -> None:
        """Log at WARNING that the target and this node share no protocol version (``why``:
        what the handshake met), once for each new reason until a connection succeeds: the
        ``Unreachable`` of each reconnect is logged at DEBUG only by replication, so a node
        that spoke no version of its peer's (a rolling upgrade across protocol versions)
        said nothing, and only the refusing side logged, at each reconnect."""
        if why == self.version_refused:
            return
        self.version_refused = why
        log.warning("node %s: no protocol version in common with node %s at %s: it %s", self.factory.node_id,
                    self.target, self.addr, why)

    def _log_refused_certificate(self, error: _ssl.SSLCertVerificationError, server_hostname: str) -> None:
        """Log at WARNING that this node refused the target's certificate, once for each new
        reason until a connection succeeds: only the dialling side knows why (the server
        sees the connection end), and the ``Unreachable`` it raises is logged at DEBUG only
        by replication, so a node whose certificate its peers refuse was never told why."""
        why = error.verify_message or str(error)
        if error.verify_code in (_X509_V_ERR_HOSTNAME_MISMATCH, _X509_V_ERR_IP_ADDRESS_MISMATCH):
            why += f" (it does not name {server_hostname!r}, the host of the address dialled, or server_hostname)"
        if why == self.refused_certificate:
            return
        self.refused_certificate = why
        log.warning("node %s: refused the certificate of node %s at %s: %s", self.factory.node_id, self.target,
                    self.addr, why)

    def _opened(self, task: asyncio.Task[_ClientConnection]) -> None:
        fut, self.connecting = self.connecting, None
        self.opening = None
        assert fut is not None
        if task.cancelled():
            why = self.close_reason if self.closed else "connect cancelled"
            fut.set_exception(Unreachable(f"node {self.target}: {why}"))
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
                conn.fail(self.close_reason)
                fut.set_exception(Unreachable(f"node {self.target}: {self.close_reason}"))
            else:
                self.failures = 0
                self.retry_at = 0.0
                self.refused_certificate = ""
                self.version_refused = ""
                if self.refused.failing:
                    self.refused.cleared(self.loop.time(), f"connected to {self.addr}")
                self.conn = conn
                fut.set_result(conn)
        if fut.exception() is not None:
            pass  # retrieved here, so a connect nobody awaits any more logs nothing

    def close(self, reason: str = "the network factory is closed") -> None:
        """Close the connection, and stop making one: the calls in flight, those waiting
        for the connection and later calls raise ``Unreachable`` saying ``reason``. (A
        connection being made, its TCP connect or its handshake unanswered, went on until
        ``connect_timeout``, and the calls waiting for it with it: ``close()`` or
        ``forget`` ended them only then, saying "no handshake answer".)"""
        if not self.closed:
            self.closed = True
            self.close_reason = reason
        if self.conn is not None:
            self.conn.fail(self.close_reason)
        if self.opening is not None:
            self.opening.cancel()
        if self.heartbeats is not None:
            self.heartbeats.close(self.close_reason)


def _lane_wanted(peer: _Peer) -> None:
    """A leader's replication sends to ``peer`` (the optional fast paths are only the
    replication channel's): start its heartbeat connection now. Made at the first
    heartbeat instead, it was not ready for the first ones, sent once the replication's
    requests were already late (a connect and a handshake on busy event loops: the first
    answer came 640 ms after, in a traced 64 x 1 MB flood). A node that only votes or
    answers opens none."""
    peer.heartbeat_lane().preconnect()


class TcpClient:
    """A ``RaftNetwork`` sending to one target over its factory's shared connection to it,
    and heartbeats (``heartbeat``) over a second one.

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

    def send_append_entries(
        self, req: AppendEntriesRequest, option: RPCOption = _DEFAULT_OPTION
    ) -> Awaitable[AppendEntriesResponse]:
        """``append_entries`` started now (see ``RaftNetwork``): connected, the frame is
        queued and the answer's future returned; otherwise a coroutine that connects
        first, run by whoever awaits it. The first call also starts the heartbeat
        connection (``_lane_wanted``)."""
        peer = self._peer
        if peer.heartbeats is None:
            _lane_wanted(peer)
        return peer.call(KIND_APPEND_ENTRIES, req, option)

    async def heartbeat(self, req: AppendEntriesRequest, option: RPCOption = _DEFAULT_OPTION) -> AppendEntriesResponse:
        """A heartbeat (see ``RaftNetwork``): ``append_entries`` on a second connection to
        the target, which carries nothing else, so that it never waits behind the entries on
        the first one (``_Peer.heartbeat_lane``). While that connection is not up (being
        made, backing off after a failed connect, or closed by the target as idle), on the
        first, as any request, and its connect is started. Errors as ``append_entries``."""
        peer = self._peer
        lane = peer.heartbeat_lane()
        conn = lane.conn
        if conn is None or conn.closed:
            lane.preconnect()
            return await peer.call(KIND_APPEND_ENTRIES, req, option)  # type: ignore[no-any-return]
        return await lane.call(KIND_APPEND_ENTRIES, req, option)  # type: ignore[no-any-return]

    def submit_append_entries(
        self, req: AppendEntriesRequest, option: RPCOption,
        reply: Callable[[AppendEntriesResponse | BaseException], None],
    ) -> Reply | None:
        """``append_entries`` with a callback (see ``RaftNetwork``): connected, the frame is
        queued now and ``reply`` is called once, from the connection's callbacks, with the
        ``AppendEntriesResponse`` or the error ``append_entries`` would raise (``cancel()``
        on the returned handle withdraws it); not connected, nothing is sent and ``None`` is
        returned (the caller uses ``send_append_entries``, which connects first). The first
        call also starts the heartbeat connection (``_lane_wanted``)."""
        peer = self._peer
        if peer.heartbeats is None:
            _lane_wanted(peer)
        return peer.submit(KIND_APPEND_ENTRIES, req, option, reply)

    async def vote(self, req: VoteRequest, option: RPCOption = _DEFAULT_OPTION) -> VoteResponse:
        """Send a vote request; see the module docstring for the errors."""
        return await self._peer.call(KIND_VOTE, req, option)  # type: ignore[no-any-return]

    async def install_snapshot(
        self, req: InstallSnapshotRequest, option: RPCOption = _DEFAULT_OPTION
    ) -> InstallSnapshotResponse:
        """Send one snapshot chunk; see the module docstring for the errors. ``NetworkError``,
        nothing sent, for a snapshot id longer than the wire carries (``wire.MAX_ADDR_LEN``,
        1024 characters) or not a ``str``: the target's server would close the connection as
        malformed, failing every call in flight on it with "connection closed", at each
        resend."""
        sid = req.meta.snapshot_id
        if type(sid) is not str:
            raise NetworkError(f"cannot send a snapshot to node {self.target}: its snapshot id is a {type(sid).__name__} "
                               f"{sid!r:.40}, not a str (the state machine's SnapshotMeta)")
        if len(sid) > wire.MAX_ADDR_LEN:
            raise NetworkError(
                f"cannot send snapshot {sid[:40]!r}... to node {self.target}: a snapshot id of {len(sid)} characters: "
                f"the TCP transport carries at most {wire.MAX_ADDR_LEN}; make the state machine's snapshot ids shorter"
            )
        return await self._peer.call(KIND_INSTALL_SNAPSHOT, req, option)  # type: ignore[no-any-return]

    async def transfer_leader(
        self, req: TransferLeaderRequest, option: RPCOption = _DEFAULT_OPTION
    ) -> None:
        """Send a leader-transfer notice; see the module docstring for the errors."""
        await self._peer.call(KIND_TRANSFER_LEADER, req, option)

    def __repr__(self) -> str:
        return f"TcpClient(-> {self.target} at {self._peer.addr})"


MAX_BACKOFF = 300.0
"""The largest ``backoff_max`` (seconds) ``TcpNetworkFactory`` takes: a longer back-off left
a peer that came back unreachable to this node (``Unreachable`` at once) for that long, its
replication and votes with it; ``1e12`` was taken, a peer then never tried again."""


class TcpNetworkFactory:
    """A ``RaftNetworkFactory`` over TCP for node ``node_id`` of cluster ``cluster_name``.

    - ``ssl``: a client ``ssl.SSLContext`` (TLS; give it a certificate for mutual TLS), or
      ``None`` for plain TCP. Anything else is a ``TypeError``, and a server context
      (``ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)``, ``PROTOCOL_TLS_SERVER``) a
      ``ValueError``: no connection could be made on it. ``server_hostname`` overrides the
      name checked against the server's certificate (default: the host of the target's
      address); it needs ``ssl``, and ``""`` is a ``ValueError`` (asyncio took it as "do not
      check": set ``check_hostname = False`` on the context for that).
    - ``peer_id_of_cert``: binds server certificates to node ids (off by default): a
      callable from the verified server certificate to its node id (or ``None``), e.g.
      ``node_id_from_cert(cluster_name)``; a connection whose server certificate does not
      name the target node is closed before the handshake and the call raises
      ``Unreachable``. Needs an ``ssl`` context that verifies the server (``ValueError``
      otherwise).
    - ``connect_timeout``: seconds for the TCP (and TLS) connect and for the handshake (at
      most ``MAX_SECONDS``, an hour: calls to the target wait for an attempt in progress).
    - ``backoff_min`` / ``backoff_max``: after a failed connect, calls to that target raise
      ``Unreachable`` at once for a jittered back-off (uniform in [50%, 100%] of
      ``min(backoff_max, backoff_min * 2**(failures - 1))``) before the next attempt.
      ``backoff_max`` is at most ``MAX_BACKOFF`` (300 s): a peer back from an outage is
      tried again within it.
    - ``max_frame_size``: largest frame sent or accepted; ``Raft.new`` refuses a ``Config``
      whose requests need more (``check_config``, ``required_frame_size``).
    - ``seed``: seeds the back-off jitter.

    Raises ``TypeError`` or ``ValueError`` naming the argument for a wrong one: ``node_id`` a
    node id, ``cluster_name`` a non-empty ``str`` of at most 256 characters (a
    ``Config.cluster_name`` only needs to be non-empty), ``connect_timeout``,
    ``backoff_min`` and ``backoff_max`` finite numbers above 0 (NaN, an infinity and
    ``bool`` are refused) with ``backoff_min <= backoff_max <= MAX_BACKOFF`` and ``connect_timeout <=
    MAX_SECONDS`` (an hour), ``max_frame_size`` an ``int``
    in ``[64, MAX_FRAME_SIZE]`` (``2**32 - 1``: a frame's length is a u32).

    Create it in the event loop that runs the node; ``close()`` it after the node shut down
    (or use it as ``async with TcpNetworkFactory(...) as factory:``, which closes it at the
    end, as ``TcpServer`` and the stores do).
    Its connections belong to the loop they were made on: used again on another loop once
    that one has ended (one ``asyncio.run`` after another, with the factory kept), it starts
    afresh there, the connections of the ended loop dropped (closed if that loop is not
    closed; left to the garbage collector otherwise: close the factory before its loop
    ends). On a second loop while the first still runs, ``new_client`` raises
    ``RuntimeError``: a factory serves one node.
    """

    def __init__(
        self,
        node_id: NodeId,
        cluster_name: str,
        ssl: _ssl.SSLContext | None = None,
        *,
        server_hostname: str | None = None,
        peer_id_of_cert: PeerIdOfCert | None = None,
        connect_timeout: float = 1.0,
        backoff_min: float = 0.05,
        backoff_max: float = 1.0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        seed: int | None = None,
    ) -> None:
        # Each argument is checked here, naming it, as ``TcpServer.start`` does: a wrong one
        # was taken and every connection then failed far from the mistake (a float or bool
        # node id, a bytes cluster name: every peer refused the handshake as malformed; a
        # float max_frame_size: no frame could be read; a NaN connect_timeout: no connect
        # was ever tried on uvloop), and the node never reached a peer.
        node_id = check_node_id(node_id, "node_id")
        if not isinstance(cluster_name, str):
            raise TypeError(f"cluster_name must be a str, got {type(cluster_name).__name__} {shown(cluster_name)}")
        if not cluster_name:
            # As ``Config.cluster_name`` and ``openraft-py serve``: a cluster has a name (the
            # stores record it as their owner's, certificates carry it in ``node_uri``).
            raise ValueError("cluster_name must be a non-empty string, got ''")
        if len(cluster_name) > wire.MAX_NAME_LEN:
            raise ValueError(f"cluster_name longer than {wire.MAX_NAME_LEN} characters (no hello could carry it)")
        connect_timeout = check_duration(connect_timeout, "connect_timeout")
        backoff_min = check_seconds(backoff_min, "backoff_min")
        backoff_max = check_seconds(backoff_max, "backoff_max")
        if backoff_max > MAX_BACKOFF:
            raise ValueError(f"backoff_max must be at most {MAX_BACKOFF:g} seconds (MAX_BACKOFF: a peer that "
                             f"failed is tried again at least that often), got {shown(backoff_max)}")
        if backoff_min > backoff_max:
            raise ValueError(f"backoff_min={backoff_min} must be at most backoff_max={backoff_max}")
        max_frame_size = check_frame_limit(max_frame_size)
        if ssl is not None and not isinstance(ssl, _ssl.SSLContext):
            raise TypeError(f"ssl must be an ssl.SSLContext or None, got {type(ssl).__name__} {shown(ssl)}")
        if ssl is not None and ssl.protocol == _ssl.PROTOCOL_TLS_SERVER:
            # No connection could be made on it: every RPC raised Unreachable ("Cannot create
            # a client socket with a PROTOCOL_TLS_SERVER context"), logged at DEBUG only.
            raise ValueError(
                "ssl is a server context (ssl.create_default_context(ssl.Purpose.CLIENT_AUTH) or "
                "PROTOCOL_TLS_SERVER): a client needs ssl.create_default_context(ssl.Purpose.SERVER_AUTH, "
                "cafile=...) or SSLContext(PROTOCOL_TLS_CLIENT)"
            )
        if server_hostname is not None:
            if not isinstance(server_hostname, str):
                raise TypeError(f"server_hostname must be a str or None, got {type(server_hostname).__name__} "
                                f"{shown(server_hostname)}")
            if not server_hostname:
                # asyncio's convention: "" connects without checking the name at all.
                raise ValueError("server_hostname '' would turn the host name check off; to do that, set "
                                 "check_hostname = False on the ssl context (None: the host of each target's address)")
            if ssl is None:
                raise ValueError("server_hostname is the name checked in the server's TLS certificate: it needs ssl")
        if peer_id_of_cert is not None and not callable(peer_id_of_cert):
            # (every server was refused at connect: "'int' object is not callable")
            raise TypeError(f"peer_id_of_cert must be callable or None, got {type(peer_id_of_cert).__name__}")
        check_cert_binding(ssl, peer_id_of_cert, "TcpNetworkFactory")
        self.node_id = node_id
        self.cluster_name = cluster_name
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.peer_id_of_cert = peer_id_of_cert
        self.connect_timeout = connect_timeout
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.max_frame_size = max_frame_size
        self.max_unsent = UNSENT_FRAMES_MAX * max_frame_size
        """Bytes a connection may hold unsent before it takes no new request
        (``UNSENT_FRAMES_MAX``)."""
        self._rng = random.Random(seed)
        self._peers: dict[NodeId, _Peer] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop of the connections in ``_peers`` (``None`` before the first ``new_client``)."""
        self._closed = False

    def new_client(self, target: NodeId, node: BasicNode) -> TcpClient:
        """A client for ``target`` at ``node.addr`` (``"host:port"``). Every client of one
        target shares one connection (and one for heartbeats, made on the first); a changed
        address replaces them. Does no
        IO (connects on the first RPC); must be called in the running loop (see the class
        docstring for a factory used on another loop). ``TypeError`` / ``ValueError`` naming
        the argument unless ``target`` is a node id and ``node`` a ``BasicNode`` with a
        ``str`` ``addr`` (a ``str`` given for ``node`` failed with "'str' object has no
        attribute 'addr'"); an ``addr`` that is not ``"host:port"`` is taken, and each RPC
        to it raises ``Unreachable`` saying so (``check_node`` refuses one up front)."""
        target = check_node_id(target, "target")
        check_node(node, "node")
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._move_to(loop)
        peer = self._peers.get(target)
        if peer is None or peer.addr != node.addr or peer.closed:
            if peer is not None:
                peer.close()
            peer = _Peer(self, target, node.addr)
            if self._closed:
                peer.closed = True
            self._peers[target] = peer
        return TcpClient(peer)

    def _move_to(self, loop: asyncio.AbstractEventLoop) -> None:
        """``new_client`` on ``loop``, another loop than the connections' (or the first): the
        connections of a loop that has ended are dropped, and the factory goes on on ``loop``.
        They were kept: on the next loop every RPC failed ("Event loop is closed", "The future
        belongs to a different loop", a coroutine never awaited), and the nodes of a cluster
        restarted in the process could not elect a leader. ``RuntimeError`` if the
        connections' loop still runs (the factory of another running node)."""
        old = self._loop
        if old is not None:
            if old.is_running():
                raise RuntimeError(
                    f"{self!r} is in use on another event loop that runs: a factory serves one node, on the loop "
                    "that runs it; create one for each node"
                )
            peers, self._peers = self._peers, {}
            if not old.is_closed():  # a closed loop can close nothing any more
                for peer in peers.values():
                    peer.close("the network factory moved to another event loop")
        self._loop = loop

    def forget(self, target: NodeId) -> None:
        """``target`` left the membership (the node calls it; see ``RaftNetworkFactory``):
        close the connection to it and forget it. Its clients' calls raise ``Unreachable``
        from now on; a later ``new_client(target, ...)`` connects again. Nothing happens
        for a target it does not know."""
        peer = self._peers.pop(target, None)
        if peer is not None:
            peer.close(f"node {target} left the membership")

    def check_node(self, target: NodeId, node: BasicNode) -> None:
        """Raise ``ValueError`` if ``node.addr`` is not an address this transport can dial
        (``"host:port"``, ``check_given_addr``: a port with a leading zero too, since the
        membership keeps addresses as written): the empty default ``BasicNode()`` included, which
        ``Raft.initialize`` gives each member of a list of ids. ``Raft.initialize`` and
        ``Raft.add_learner`` call it for each node they are given, before anything is
        logged: such a member was accepted into the membership and never reached (every
        RPC to it raised ``Unreachable``), and a learner at ``""`` never caught up, so a
        blocking ``add_learner`` waited for good."""
        try:
            check_given_addr(node.addr)
        except ValueError as e:
            raise ValueError(
                f"node {target}'s addr {shown(node.addr)} is not an address the TCP transport can dial: {e} "
                f'(give BasicNode("host:port"))'
            ) from None

    def check_config(self, config: Config) -> None:
        """Raise ``ConfigError`` if ``config`` makes requests larger than ``max_frame_size``
        (``required_frame_size``), or if its ``election_timeout_min`` is below
        ``MIN_ELECTION_TIMEOUT_MS`` (no leader would last). ``Raft.new`` calls it."""
        check_frame_size(config, self.max_frame_size, "TcpNetworkFactory")
        short = election_timeout_shortfall(config)
        if short is not None:
            raise ConfigError(f"TcpNetworkFactory: {short}")

    def connected(self, target: NodeId) -> bool:
        """Whether a live connection to ``target`` exists now (the one carrying every RPC but
        the heartbeats)."""
        peer = self._peers.get(target)
        return peer is not None and peer.conn is not None and not peer.conn.closed

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called: for good, every RPC of its clients raises
        ``Unreachable``. ``Raft.new`` refuses a closed factory (a node restarted in-process
        on the factory its first run closed reached no peer, each failure logged at DEBUG
        only): make a new one."""
        return self._closed

    async def close(self) -> None:
        """Close every connection; requests in flight and later calls raise ``Unreachable``
        (for good: ``closed``; a node restarted in-process needs a new factory).
        Once the connections' loop has ended without a close (the cleanup runs in a later
        loop), they are dropped, their sockets left to the garbage collector: closing them
        raised "Event loop is closed"."""
        self._closed = True
        loop = self._loop
        if loop is not None and loop.is_closed():
            for peer in self._peers.values():
                peer.closed = True
                if peer.heartbeats is not None:
                    peer.heartbeats.closed = True
            self._peers.clear()
            return
        for peer in self._peers.values():
            peer.close()
        await asyncio.sleep(0)  # let the transports run their close callbacks

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"TcpNetworkFactory(node_id={self.node_id}, cluster={self.cluster_name!r})"
