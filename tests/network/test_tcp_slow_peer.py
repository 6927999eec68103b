"""The TCP server against peers that hold its connections, on loopback with raw sockets:
frames sent slowly, answers left unread, connections that never complete the handshake.

A handshaken peer that trickles the bytes of a frame (one byte now and then, or a length
header and then nothing) used to hold its connection slot and its input buffer for good:
every byte counted as activity for ``idle_timeout``, and enough such peers filled
``max_connections`` so that no real leader could connect. Now a frame in progress must keep
arriving at ``min_frame_rate`` after a grace of ``frame_timeout`` (``TcpServer.start``);
these tests use small settings to stay short. A peer that has not completed the handshake
is bounded by ``handshake_timeout`` however it trickles.

What must NOT be cut: an idle connection with no frame in progress (only ``idle_timeout``
applies to it), a frame that arrives slowly but above the rate, and a frame in progress on a
connection the server itself stopped reading (its requests in flight are at
``max_inflight``): the time reading is paused does not count.

Every async test runs on asyncio and on uvloop (tests/network/conftest.py)."""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import struct
from typing import Any

import pytest

from openraft_py._core import FrameReader
from openraft_py.network import wire
from openraft_py.network.tcp import TcpNetworkFactory, TcpServer, tcp_connection_limit
from openraft_py.types import BasicNode, VoteRequest, VoteResponse

from .test_tcp import OPT, V1, FakeRaft, _pair, _until

pytestmark = pytest.mark.timeout(60)

FRAME_TIMEOUT = 0.4
"""The grace of these tests' servers (``frame_timeout``), in seconds."""
MIN_RATE = 2000
"""Their ``min_frame_rate``, in bytes per second."""
CUT_BOUND = 5.0
"""How long a test waits for the server to close a slow connection (the rule closes it
within about ``FRAME_TIMEOUT`` plus a tick; generous for a loaded machine)."""


def _hello(node_id: int = 1) -> bytes:
    return bytes(wire.frame_message(wire.KIND_HELLO, 0, wire.Hello(wire.PROTOCOL_VERSION, "c", node_id)))


def _vote_frame(rid: int) -> bytes:
    return bytes(wire.frame_message(wire.KIND_VOTE, rid, VoteRequest(V1, None)))


async def _handshaken(port: int, node_id: int = 1) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection that has passed the handshake as ``node_id``."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(_hello(node_id))
    ack = FrameReader(1024)
    while not ack.feed(await asyncio.wait_for(r.read(100), 5)):
        pass
    return r, w


async def _trickle(w: asyncio.StreamWriter, data: bytes, every: float) -> None:
    """Write ``data`` one byte at a time, ``every`` seconds apart, until the peer goes."""
    for i in range(len(data)):
        if w.is_closing():
            return
        w.write(data[i : i + 1])
        try:
            await w.drain()
        except ConnectionError:
            return
        await asyncio.sleep(every)


async def _closed(r: asyncio.StreamReader, bound: float) -> None:
    """Wait (at most ``bound`` seconds) for the server to close the connection."""
    try:
        while await asyncio.wait_for(r.read(4096), bound):
            pass
    except ConnectionError:
        pass


async def test_a_trickled_frame_is_cut_and_frees_its_slot_for_a_real_peer(caplog: pytest.LogCaptureFixture) -> None:
    # Two handshaken peers fill the server's two slots; each announces a 10,000-byte frame
    # and sends it a byte every 50 ms (20 B/s: it stays "active" for idle_timeout).
    raft, server, factory, client = await _pair(
        max_connections=2, idle_timeout=30.0, frame_timeout=FRAME_TIMEOUT, min_frame_rate=MIN_RATE
    )
    loop = asyncio.get_running_loop()
    caplog.set_level(logging.WARNING, logger="openraft_py.network.tcp")
    try:
        conns = [await _handshaken(server.port) for _ in range(2)]
        assert server.connections == 2
        body = _vote_frame(5)
        frame = struct.pack(">I", 10_000) + body[4:] + b"\x00" * (10_000 - len(body) + 4)
        trickles = [asyncio.ensure_future(_trickle(w, frame, 0.05)) for _, w in conns]
        t0 = loop.time()
        for r, _ in conns:
            await _closed(r, CUT_BOUND)
        assert loop.time() - t0 < CUT_BOUND
        await asyncio.wait_for(asyncio.gather(*trickles), 5)
        for _, w in conns:
            w.close()
        assert server.dropped == 2 and server.delivered == 0
        cut = [r.getMessage() for r in caplog.records if "closing the connection from 127.0.0.1:" in r.getMessage()]
        assert len(cut) == 2 and all("frame_timeout" in m and "min_frame_rate" in m for m in cut), cut
        # The slots are free: a real peer connects and is served.
        assert (await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)).vote_granted
    finally:
        await server.close()
        await factory.close()


async def test_a_frame_trickled_inside_tls_is_cut(pki: Any) -> None:
    # The rule reads the decrypted stream: one byte per TLS record, a record every 50 ms.
    raft, server, factory, client = await _pair(
        ssl=pki.server_ctx(mtls=True), idle_timeout=30.0, frame_timeout=FRAME_TIMEOUT, min_frame_rate=MIN_RATE
    )
    loop = asyncio.get_running_loop()
    try:
        r, w = await asyncio.open_connection("127.0.0.1", server.port, ssl=pki.client_ctx("client"))
        w.write(_hello())
        ack = FrameReader(1024)
        while not ack.feed(await asyncio.wait_for(r.read(100), 5)):
            pass
        t0 = loop.time()
        trickle = asyncio.ensure_future(_trickle(w, struct.pack(">I", 10_000) + b"\x05" * 200, 0.05))
        await _closed(r, CUT_BOUND)
        assert loop.time() - t0 < CUT_BOUND
        await asyncio.wait_for(trickle, 5)
        w.close()
        assert server.dropped == 1 and server.delivered == 0
    finally:
        await server.close()
        await factory.close()


async def test_a_length_header_then_nothing_is_cut_after_the_grace() -> None:
    raft, server, factory, client = await _pair(idle_timeout=30.0, frame_timeout=FRAME_TIMEOUT, min_frame_rate=MIN_RATE)
    loop = asyncio.get_running_loop()
    try:
        r, w = await _handshaken(server.port)
        t0 = loop.time()
        w.write(struct.pack(">I", 1_000_000) + b"\x05")
        await _closed(r, CUT_BOUND)
        assert FRAME_TIMEOUT <= loop.time() - t0 < CUT_BOUND
        w.close()
        assert server.dropped == 1 and server.delivered == 0
    finally:
        await server.close()
        await factory.close()


async def test_a_frame_slower_than_the_grace_but_above_the_rate_is_delivered() -> None:
    # 200 bytes every 50 ms (4,000 B/s, twice the minimum) of a 6,000-byte vote request:
    # about 1.5 s, several times the grace. It must arrive whole and be answered.
    raft, server, factory, client = await _pair(idle_timeout=30.0, frame_timeout=FRAME_TIMEOUT, min_frame_rate=MIN_RATE)
    try:
        r, w = await _handshaken(server.port)
        frame = bytes(wire.frame_message(wire.KIND_VOTE, 9, VoteRequest(V1, None)))
        # Pad the body with trailing array items a decoder ignores (the versioning rule): the
        # frame stays a valid vote request, only longer.
        body = bytearray(frame[4 + wire.HEADER_SIZE :])
        assert body[0] & 0xF0 == 0x90
        pad = b"\xc5" + struct.pack(">H", 6000) + b"p" * 6000  # one msgpack bin item
        body = bytes([body[0] + 1]) + bytes(body[1:]) + pad
        payload = frame[4 : 4 + wire.HEADER_SIZE] + body
        data = struct.pack(">I", len(payload)) + payload
        assert len(data) > 6000
        for i in range(0, len(data), 200):
            w.write(data[i : i + 200])
            await w.drain()
            await asyncio.sleep(0.05)
        got = FrameReader(1 << 20)
        frames: list[bytes] = []
        while not frames:
            chunk = await asyncio.wait_for(r.read(4096), 5)
            assert chunk, "the server closed a frame arriving above min_frame_rate"
            frames = got.feed(chunk)
        kind, rid, _ = wire.split_payload(frames[0])
        assert (kind, rid) == (wire.KIND_VOTE_RESP, 9)
        assert server.dropped == 0 and raft.received and raft.received[-1][0] == "vote"
        w.close()
    finally:
        await server.close()
        await factory.close()


async def test_an_idle_connection_between_frames_is_not_cut() -> None:
    # No frame in progress: only idle_timeout applies, however long past frame_timeout.
    raft, server, factory, client = await _pair(idle_timeout=30.0, frame_timeout=0.1, min_frame_rate=MIN_RATE)
    loop = asyncio.get_running_loop()
    try:
        assert (await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)).vote_granted
        r, w = await _handshaken(server.port)
        w.write(_vote_frame(3))
        await asyncio.wait_for(_until(lambda: len(raft.received) == 2), 5)
        t0 = loop.time()
        while loop.time() - t0 < 1.0:  # ten times frame_timeout, with ticks every 50 ms
            await asyncio.sleep(0.1)
            assert server.connections == 2 and server.dropped == 0
        assert (await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)).vote_granted
        w.write(_vote_frame(4))
        await asyncio.wait_for(_until(lambda: len(raft.received) == 4), 5)
        assert server.dropped == 0
        w.close()
    finally:
        await server.close()
        await factory.close()


async def test_time_the_server_does_not_read_does_not_count() -> None:
    # max_inflight=1 and a vote handler held for five times the grace: the server stops
    # reading the connection while the vote runs, with the next frame's first bytes already
    # in its buffer. The peer can send nothing meanwhile; it must not be cut for it.
    gate = asyncio.Event()
    started = asyncio.Event()

    async def held(req: VoteRequest) -> VoteResponse:
        started.set()
        await gate.wait()
        return VoteResponse(req.vote, True, None, req.pre_vote)

    raft = FakeRaft()
    raft.behaviour["vote"] = held
    raft, server, factory, client = await _pair(
        raft, idle_timeout=30.0, max_inflight=1, frame_timeout=FRAME_TIMEOUT, min_frame_rate=MIN_RATE
    )
    try:
        r, w = await _handshaken(server.port)
        second = _vote_frame(2)
        w.write(_vote_frame(1) + second[:6])
        await asyncio.wait_for(started.wait(), 5)
        conn = next(iter(server._conns))
        await asyncio.wait_for(_until(lambda: conn.reader.buffered() == 6), 5)
        await asyncio.sleep(5 * FRAME_TIMEOUT)
        assert server.dropped == 0 and server.connections == 1
        gate.set()
        w.write(second[6:])
        got = FrameReader(1 << 20)
        frames: list[Any] = []
        while len(frames) < 2:
            chunk = await asyncio.wait_for(r.read(4096), 5)
            assert chunk, "the server closed the connection"
            frames += got.feed(chunk)
        assert sorted(wire.split_payload(f)[1] for f in frames) == [1, 2]
        assert server.dropped == 0
        w.close()
    finally:
        await server.close()
        await factory.close()


async def test_a_peer_trickling_its_hello_is_cut_by_the_handshake_timeout() -> None:
    # Before the handshake the bound is handshake_timeout, from the connection's start,
    # however the hello's bytes trickle in.
    raft, server, factory, client = await _pair(handshake_timeout=0.5, idle_timeout=30.0)
    loop = asyncio.get_running_loop()
    try:
        t0 = loop.time()  # (before the connection: the server's bound starts once it accepted it)
        r, w = await asyncio.open_connection("127.0.0.1", server.port)
        trickle = asyncio.ensure_future(_trickle(w, _hello(), 0.05))
        await _closed(r, CUT_BOUND)
        assert 0.5 <= loop.time() - t0 < CUT_BOUND
        await asyncio.wait_for(trickle, 5)
        w.close()
        assert server.dropped == 1 and server.delivered == 0
        assert (await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)).vote_granted
    finally:
        await server.close()
        await factory.close()


def test_frame_limits_are_checked() -> None:
    async def start(**kw: Any) -> None:
        server = await TcpServer.start(FakeRaft(), "127.0.0.1", 0, "c", **kw)
        await server.close()

    for kw in ({"frame_timeout": 0}, {"frame_timeout": -1.0}, {"min_frame_rate": 0}, {"min_frame_rate": -5}):
        with pytest.raises(ValueError):
            asyncio.run(start(**kw))


async def test_close_aborts_a_peer_that_does_not_read_its_answers(caplog: pytest.LogCaptureFixture) -> None:
    # A handshaken peer sends requests and never reads: the server stops reading it once
    # its answers back up. close() used to leave that connection open for good (a
    # transport closes once its output is written), with its socket and answers.
    raft, server, factory, client = await _pair(drain_timeout=0.3)
    loop = asyncio.get_running_loop()
    caplog.set_level(logging.WARNING, logger="openraft_py.network.tcp")
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # answers back up sooner
        sock.connect(("127.0.0.1", server.port))
        sock.setblocking(False)
        r, w = await asyncio.open_connection(sock=sock)
        w.write(_hello())
        ack = FrameReader(1024)
        while not ack.feed(await asyncio.wait_for(r.read(100), 5)):
            pass
        conn = next(iter(server._conns))
        # The server's kernel send buffer as small as the peer's receive buffer: its answers
        # back up after some kilobytes, not after the megabytes an autotuned buffer takes.
        conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        batch = _vote_frame(7) * 200
        for _ in range(4000):
            if conn.write_paused:
                break
            if w.transport.get_write_buffer_size() < 1 << 20:
                w.write(batch)
            await asyncio.sleep(0.002)
        assert conn.write_paused, "the server's answers never backed up"
        server_side = conn.transport.get_extra_info("socket")
        t0 = loop.time()
        await asyncio.wait_for(server.close(), 5)
        assert loop.time() - t0 < 3.0
        # The server's end of the connection is closed (its file descriptor released).
        await asyncio.wait_for(_until(lambda: server_side.fileno() == -1), 2)
        # The peer sees the connection end (reset, or the end after what was buffered).
        await _closed(r, CUT_BOUND)
        w.close()
        assert any("did not take its answers" in rec.getMessage() for rec in caplog.records)
    finally:
        await server.close()
        await factory.close()


async def test_a_client_that_never_says_hello_again_and_again_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """A client that connects and never sends a hello (a TCP health check that holds the
    connection, a peer of a broken version) comes back: each closing at
    ``handshake_timeout`` was a WARNING. Now one per host (then one every
    ``failure_log.REPEAT_EVERY`` seconds); each is still counted in ``dropped``."""
    raft, server, factory, client = await _pair(handshake_timeout=0.1)
    caplog.set_level(logging.WARNING, logger="openraft_py.network.tcp")
    try:
        for i in range(5):
            r, w = await asyncio.open_connection("127.0.0.1", server.port)
            await _closed(r, CUT_BOUND)
            w.close()
            await asyncio.wait_for(_until(lambda: server.dropped == i + 1), 5)  # noqa: B023
        silent = [r.getMessage() for r in caplog.records if "no handshake within" in r.getMessage()]
        assert len(silent) == 1 and "(1 refusal in" in silent[0], silent
    finally:
        await server.close()
        await factory.close()


async def test_a_client_connecting_in_a_loop_at_the_limit_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """At ``max_connections``, each new connection from a client that opens them in a loop
    (and never sends a hello) closes the one waiting longest: each closing was a WARNING,
    as many lines as the client made connections. Now one per host (then one every
    ``failure_log.REPEAT_EVERY`` seconds); each closing is still counted in ``dropped``."""
    raft, server, factory, client = await _pair(max_connections=2, handshake_timeout=30.0, idle_timeout=30.0)
    caplog.set_level(logging.WARNING, logger="openraft_py.network.tcp")
    opened = []
    try:
        for _ in range(12):
            opened.append(await asyncio.open_connection("127.0.0.1", server.port))
            await asyncio.wait_for(_until(lambda: server._accepted == len(opened)), 5)
        await asyncio.wait_for(_until(lambda: server.dropped == 10), 5)
        gave_way = [r.getMessage() for r in caplog.records if "makes room for a new one" in r.getMessage()]
        assert len(gave_way) == 1 and "(1 refusal in" in gave_way[0], gave_way
        assert (await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)).vote_granted
    finally:
        for _, w in opened:
            w.close()
        await server.close()
        await factory.close()


async def test_at_the_limit_a_new_connection_replaces_the_longest_waiting_for_its_handshake(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Three clients connect and never send a hello; the server's three slots are full. A real
    # peer that connects now used to be closed on accept (and clients reconnecting each time
    # handshake_timeout closed them kept every slot for good); now the oldest silent one
    # makes room for it, and the others stay.
    raft, server, factory, client = await _pair(max_connections=3, handshake_timeout=30.0, idle_timeout=30.0)
    caplog.set_level(logging.WARNING, logger="openraft_py.network.tcp")
    try:
        silent = []
        for _ in range(3):
            silent.append(await asyncio.open_connection("127.0.0.1", server.port))
            await asyncio.wait_for(_until(lambda: server.connections == len(silent)), 5)
        assert (await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)).vote_granted
        await _closed(silent[0][0], CUT_BOUND)  # the first to connect gave way
        assert server.connections == 3 and server.dropped == 1
        assert not silent[1][0].at_eof() and not silent[2][0].at_eof()
        gave_way = [r.getMessage() for r in caplog.records if "makes room for a new one" in r.getMessage()]
        assert len(gave_way) == 1, gave_way
        # Once every open connection has completed its handshake, each from another node,
        # a new one is refused.
        for _, w in silent[1:]:
            w.close()
        await asyncio.wait_for(_until(lambda: server.connections == 1), 5)
        handshaken = [await _handshaken(server.port, node_id) for node_id in (2, 3)]
        await asyncio.wait_for(_until(lambda: server.connections == 3), 5)
        r, w = await asyncio.open_connection("127.0.0.1", server.port)
        await _closed(r, CUT_BOUND)
        w.close()
        assert server.connections == 3 and not any(hr.at_eof() for hr, _ in handshaken)
        assert (await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)).vote_granted
        for _, hw in handshaken:
            hw.close()
        silent[0][1].close()
    finally:
        await server.close()
        await factory.close()


async def test_with_tls_a_connection_stuck_in_the_tls_handshake_makes_room_too(
    pki: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server_ssl, client_ssl = pki.server_ctx(mtls=True), pki.client_ctx("client")
    raft, server, plain, _ = await _pair(ssl=server_ssl, max_connections=2, handshake_timeout=30.0, idle_timeout=30.0)
    factory = TcpNetworkFactory(1, "c", ssl=client_ssl, backoff_min=0.01, backoff_max=0.05, seed=1)
    client = factory.new_client(2, BasicNode(server.address))
    try:
        silent = []
        for _ in range(2):  # plain TCP, never a TLS ClientHello
            silent.append(await asyncio.open_connection("127.0.0.1", server.port))
            await asyncio.wait_for(_until(lambda: server.connections == len(silent)), 5)
        assert (await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)).vote_granted
        await _closed(silent[0][0], CUT_BOUND)
        assert server.connections == 2 and server.dropped == 1 and not silent[1][0].at_eof()
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records
        for _, w in silent:
            w.close()
    finally:
        await server.close()
        await factory.close()
        await plain.close()


def _nofile_limit(monkeypatch: pytest.MonkeyPatch, soft: int) -> None:
    """Make the process's soft limit of open files read as ``soft`` (the hard one unchanged)."""
    real = resource.getrlimit

    def getrlimit(which: int) -> tuple[int, int]:
        return (soft, real(which)[1]) if which == resource.RLIMIT_NOFILE else real(which)

    monkeypatch.setattr(resource, "getrlimit", getrlimit)


async def test_the_default_connection_limit_leaves_most_descriptors_to_the_node(monkeypatch: pytest.MonkeyPatch) -> None:
    """``max_connections`` left out is ``DEFAULT_MAX_CONNECTIONS`` (256), but at most a
    quarter of the soft limit of open files (at least 8): it was 256 whatever the limit, so
    250 silent connections to a node limited to 256 descriptors took its last ones, and its
    next snapshot build failed (the node stopped). A number given is kept."""
    for soft, limit in ((resource.RLIM_INFINITY, 256), (1 << 20, 256), (1024, 256), (256, 64), (40, 10), (16, 8)):
        _nofile_limit(monkeypatch, soft)
        assert tcp_connection_limit() == limit, soft
    _nofile_limit(monkeypatch, 256)
    raft = FakeRaft()
    server = await TcpServer.start(raft, "127.0.0.1", 0, "c")
    explicit = await TcpServer.start(raft, "127.0.0.1", 0, "c", max_connections=300)
    try:
        assert server.max_connections == 64 and explicit.max_connections == 300
    finally:
        await server.close()
        await explicit.close()


async def test_a_burst_of_silent_connections_holds_at_most_the_limit_and_a_peer_gets_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """100 connections at once that send nothing, to a server started without
    ``max_connections`` in a process limited to 64 descriptors: it holds 16 of them (the
    rest closed as they come), and a real peer's request still gets through."""
    _nofile_limit(monkeypatch, 64)
    raft, server, factory, client = await _pair(handshake_timeout=30.0, idle_timeout=30.0)
    silent: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        assert server.max_connections == 16
        silent = list(await asyncio.gather(*(asyncio.open_connection("127.0.0.1", server.port) for _ in range(100))))
        await asyncio.wait_for(_until(lambda: server.dropped >= 100 - 16), 10)
        assert server.connections <= 16
        assert (await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)).vote_granted
        assert server.connections <= 16
    finally:
        for _, w in silent:
            w.close()
        await server.close()
        await factory.close()


async def test_at_the_limit_a_sender_holding_several_connections_makes_room(caplog: pytest.LogCaptureFixture) -> None:
    """Every slot held by handshaken connections claiming one node's id (a peer that
    reconnects without closing, a stranger who knows the cluster's name): a real peer that
    connects now takes the place of the quietest of them, and each later one of another;
    the last connection of a sender is never closed for room. The new connection was closed
    on accept, so such a client kept every reconnecting member out for ``idle_timeout``."""
    raft, server, factory, client = await _pair(max_connections=3, handshake_timeout=30.0, idle_timeout=30.0)
    caplog.set_level(logging.WARNING, logger="openraft_py.network.tcp")
    try:
        claimed = [await _handshaken(server.port, 2) for _ in range(3)]
        await asyncio.wait_for(_until(lambda: server.connections == 3), 5)
        loop = asyncio.get_running_loop()
        since = loop.time()  # (uvloop's clock counts milliseconds: let it pass the handshakes')
        await asyncio.wait_for(_until(lambda: loop.time() >= since + 0.01), 5)
        claimed[0][1].write(_vote_frame(1))  # the first is the least quiet now (a request, refused)
        await asyncio.wait_for(_until(lambda: server.refused == 1), 5)
        assert (await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)).vote_granted
        await _closed(claimed[1][0], CUT_BOUND)  # the quietest of node 2's gave way
        assert server.connections == 3 and server.dropped == 1
        assert not claimed[0][0].at_eof() and not claimed[2][0].at_eof()
        gave_way = [r.getMessage() for r in caplog.records if "makes room for a new one" in r.getMessage()]
        assert len(gave_way) == 1 and "node 2 holds 3" in gave_way[0], gave_way
        # Node 2 holds two, node 1 one: the next one closes node 2's quieter, not node 1's.
        extra = await _handshaken(server.port, 3)
        await _closed(claimed[2][0], CUT_BOUND)
        assert not claimed[0][0].at_eof() and not extra[0].at_eof()
        # Three senders with one connection each: a new connection is refused.
        r, w = await asyncio.open_connection("127.0.0.1", server.port)
        await _closed(r, CUT_BOUND)
        w.close()
        assert not claimed[0][0].at_eof() and not extra[0].at_eof()
        assert (await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)).vote_granted
        for _, w in (*claimed, extra):
            w.close()
    finally:
        await server.close()
        await factory.close()


async def _refused_hello(port: int, cluster_name: str, node_id: int) -> None:
    """A connection whose hello the server refuses; returns once the server closed it."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(bytes(wire.frame_message(wire.KIND_HELLO, 0, wire.Hello(wire.PROTOCOL_VERSION, cluster_name, node_id))))
    await _closed(r, CUT_BOUND)
    w.close()


async def test_refused_hellos_with_a_new_name_or_id_each_time_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """A client whose hello the server refuses, sending another cluster name, or claiming
    another node id, at each connection (a tight loop of a stranger, a misconfigured tool):
    one WARNING for the host, not one per connection (each name was a new kind of refusal,
    each id a ``FailureLog`` of its own: 200 connections, 200 WARNINGs). A member's id keeps
    a log of its own, and every refusal is counted."""
    caplog.set_level(logging.WARNING, logger="openraft_py.network.tcp")
    server = await TcpServer.start(FakeRaft(), "127.0.0.1", 0, "c")  # members 1, 2, 3
    try:
        for i in range(100):
            await _refused_hello(server.port, f"other-{i}", 9)
        for i in range(100):
            await _refused_hello(server.port, "other", 100 + i)
        for i in range(50):
            await _refused_hello(server.port, "c", 1000 + i)  # not in the membership
        assert server.refused == 250
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 2, warnings  # the first, then "now" at the other kind of refusal
        assert "wrong cluster name 'other-0'" in warnings[0] and "node 1000 is not in the membership" in warnings[1]
        await _refused_hello(server.port, "other", 2)  # a member, misconfigured: its own log
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 3 and "(1 refusal in" in warnings[2], warnings
        # Refused hellos and closings before any hello (another protocol) taking turns: each
        # has its log, so no WARNING at each change of kind.
        for i in range(20):
            await _refused_hello(server.port, "c", 2000 + i)
            r, w = await asyncio.open_connection("127.0.0.1", server.port)
            w.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            await _closed(r, CUT_BOUND)
            w.close()
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 4 and "HTTP" in warnings[3], warnings
    finally:
        await server.close()


async def test_a_scanner_taking_turns_at_closings_before_the_hello_is_logged_once_per_kind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that connects and sends nothing, then an HTTP request, then random bytes, in
    turn (a port scanner): one WARNING per kind of closing for its host, not one per
    connection (each change of kind was a WARNING, and random bytes were a new kind each
    time, the reason naming the frame length they read as: 60 connections, 60 WARNINGs).
    A handshake accepted from the host ends them (INFO)."""
    caplog.set_level(logging.INFO, logger="openraft_py.network.tcp")
    server = await TcpServer.start(FakeRaft(), "127.0.0.1", 0, "c", handshake_timeout=0.1)
    try:
        for i in range(20):
            for first in (b"", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytes([i + 1, 200 - i, 7, i]) * 16):
                r, w = await asyncio.open_connection("127.0.0.1", server.port)
                w.write(first)
                await _closed(r, CUT_BOUND)
                w.close()
        assert server.dropped == 60
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 3, warnings
        assert "no handshake" in warnings[0] and "HTTP 400" in warnings[1] and "malformed input" in warnings[2]
        r, w = await _handshaken(server.port, 2)
        ended = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "after refusing" in r.getMessage()]
        assert len(ended) == 3, ended
        w.close()
    finally:
        await server.close()
