"""The TCP transport (openraft_py.network.tcp) on loopback: every RPC round trip, pipelining
on one connection answered out of order, reconnect after a server restart, the error
mapping (Timeout, Unreachable, RemoteError, NetworkError), draining close, and a 3-node
cluster electing and committing over TCP, plain, with TLS and with mutual TLS.

Every async test runs on asyncio and on uvloop (tests/network/conftest.py)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any

import msgspec
import pytest

from openraft_py._core import FrameReader
from openraft_py.errors import InvalidRequest, NetworkError, RemoteError, Stopped, Timeout, Unreachable
from openraft_py.network import tcp, wire
from openraft_py.network.tcp import TcpNetworkFactory, TcpServer, parse_addr
from openraft_py.types import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    BasicNode,
    Entry,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    LogId,
    Membership,
    Normal,
    RPCOption,
    StoredMembership,
    TransferLeaderRequest,
    Vote,
    VoteRequest,
    VoteResponse,
)

from .tcp_cluster import TcpCluster, steady_tcp_config, tcp_config
from .test_wire import META, sample_messages

pytestmark = pytest.mark.timeout(60)

V1 = Vote.new(3, 1, True)
OPT = RPCOption(hard_ttl=5.0, soft_ttl=5.0)


class _Metrics:
    def __init__(self, node_id: int, members: set[int]) -> None:
        self.id = node_id
        # Following a leader of its membership: a node without one takes any sender
        # (``_may_connect``).
        self.current_leader: int | None = min(members) if members else None
        self.vote = Vote.new(0, 0)
        self.membership_config = StoredMembership(LogId(1, 0) if members else None, Membership.new([members]) if members else Membership((), {}))


class FakeRaft:
    """A scripted ``RaftServer``: records requests, answers from ``behaviour`` (a coroutine
    function per handler name) or with a canned response."""

    def __init__(self, node_id: int = 2, members: set[int] | None = None) -> None:
        self.metrics = _Metrics(node_id, members if members is not None else {1, 2, 3})
        self.received: list[tuple[str, Any]] = []
        self.behaviour: dict[str, Any] = {}

    async def _run(self, name: str, req: Any, default: Any) -> Any:
        self.received.append((name, req))
        fn = self.behaviour.get(name)
        if fn is not None:
            return await fn(req)
        return default

    async def append_entries(self, req: AppendEntriesRequest) -> AppendEntriesResponse:
        return await self._run("append_entries", req, AppendEntriesResponse(req.vote, True, req.prev_log_id))  # type: ignore[no-any-return]

    async def vote(self, req: VoteRequest) -> VoteResponse:
        return await self._run("vote", req, VoteResponse(req.vote, True, LogId(2, 9), req.pre_vote))  # type: ignore[no-any-return]

    async def install_snapshot(self, req: InstallSnapshotRequest) -> InstallSnapshotResponse:
        return await self._run("install_snapshot", req, InstallSnapshotResponse(req.vote))  # type: ignore[no-any-return]

    async def handle_transfer_leader(self, req: TransferLeaderRequest) -> None:
        await self._run("handle_transfer_leader", req, None)


async def _pair(raft: FakeRaft | None = None, **server_kw: Any) -> tuple[FakeRaft, TcpServer, TcpNetworkFactory, Any]:
    raft = raft or FakeRaft()
    server = await TcpServer.start(raft, "127.0.0.1", 0, "c", **server_kw)
    factory = TcpNetworkFactory(1, "c", backoff_min=0.01, backoff_max=0.05, seed=1)
    client = factory.new_client(2, BasicNode(server.address))
    return raft, server, factory, client


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_parse_addr() -> None:
    assert parse_addr("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_addr("[::1]:9") == ("::1", 9)
    assert parse_addr("node-1.example:65535") == ("node-1.example", 65535)
    # A port in other digits than ASCII's (Arabic-Indic, full-width, superscript) is no port,
    # though ``int`` reads the first two.
    for bad in ("", "host", ":80", "h:0", "h:65536", "h:x", "h:\u0662\u0661\u0660\u0660\u0661", "h:\uff18\uff10", "h:\u00b2"):
        with pytest.raises(ValueError):
            parse_addr(bad)


async def test_every_rpc_round_trips() -> None:
    raft, server, factory, client = await _pair()
    try:
        reqs = [(k, m) for k, m in sample_messages() if k in (3, 5, 7, 9)]
        for kind, req in reqs:
            # Every request in the samples names node 2 or 8 as leader; the handshake sender
            # is node 1, so rebuild them from node 1.
            if kind == 9:
                req = TransferLeaderRequest(V1, req.to, req.last_log_id)
            else:
                req = type(req)(V1, *[getattr(req, f) for f in req.__struct_fields__[1:]])
            call = {3: client.append_entries, 5: client.vote, 7: client.install_snapshot, 9: client.transfer_leader}[kind]
            resp = await asyncio.wait_for(call(req, OPT), 5)
            assert raft.received[-1][1] == req
            if kind == 3:
                assert resp == AppendEntriesResponse(V1, True, req.prev_log_id)
            elif kind == 5:
                assert resp == VoteResponse(V1, True, LogId(2, 9), req.pre_vote)
            elif kind == 7:
                assert resp == InstallSnapshotResponse(V1)
            else:
                assert resp is None
        assert server.delivered == len(reqs) and server.connections == 1
    finally:
        await server.close()
        await factory.close()


async def test_pipelined_requests_overlap_and_are_answered_out_of_order() -> None:
    n = 32
    arrived = asyncio.Event()
    release: dict[int, asyncio.Event] = {i: asyncio.Event() for i in range(n)}
    raft = FakeRaft()

    async def held(req: AppendEntriesRequest) -> AppendEntriesResponse:
        if sum(1 for name, _ in raft.received if name == "append_entries") == n:
            arrived.set()
        i = req.prev_log_id.index  # type: ignore[union-attr]
        await release[i].wait()
        return AppendEntriesResponse(req.vote, True, LogId(3, i))

    raft.behaviour["append_entries"] = held
    _, server, factory, client = await _pair(raft)
    try:
        calls = [
            asyncio.ensure_future(client.append_entries(AppendEntriesRequest(V1, LogId(3, i), [], None), OPT))
            for i in range(n)
        ]
        # All n requests reach the server while none is answered: they overlap on the wire.
        await asyncio.wait_for(arrived.wait(), 5)
        assert not any(c.done() for c in calls)
        assert server.connections == 1 and factory.connected(2)
        # Answer in reverse order; each caller gets its own response.
        for i in reversed(range(n)):
            release[i].set()
            resp = await asyncio.wait_for(calls[i], 5)
            assert resp.matching == LogId(3, i)
            assert not any(c.done() for c in calls[:i])
    finally:
        for e in release.values():
            e.set()
        await server.close()
        await factory.close()


async def test_server_max_inflight_holds_the_rest_back() -> None:
    raft = FakeRaft()
    gate = asyncio.Event()
    running = 0
    peak = 0

    async def slow(req: VoteRequest) -> VoteResponse:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1
        return VoteResponse(req.vote, False, None)

    raft.behaviour["vote"] = slow
    _, server, factory, client = await _pair(raft, max_inflight=4)
    try:
        calls = [asyncio.ensure_future(client.vote(VoteRequest(V1, None), OPT)) for _ in range(20)]
        await asyncio.wait_for(_until(lambda: running == 4), 5)
        for _ in range(5):
            await asyncio.sleep(0)
        assert peak == 4 and len(raft.received) == 4
        gate.set()
        out = await asyncio.wait_for(asyncio.gather(*calls), 5)
        assert len(out) == 20 and peak == 4 and server.delivered == 20
    finally:
        gate.set()
        await server.close()
        await factory.close()


async def _until(cond: Any) -> None:
    while not cond():
        await asyncio.sleep(0.005)  # polled; callers bound it with wait_for


async def _vote_until_answered(client: Any) -> VoteResponse:
    """``client``'s vote answer, calling again every 10 ms while it is ``Unreachable`` (its
    back-off after a refused connect); bounded by the caller's ``wait_for``."""
    while True:
        try:
            return await client.vote(VoteRequest(V1, None), OPT)
        except Unreachable:
            await asyncio.sleep(0.01)


async def test_reconnect_after_server_restart() -> None:
    raft, server, factory, client = await _pair()
    port = server.port
    try:
        assert (await client.vote(VoteRequest(V1, None), OPT)).vote_granted
        await server.close()
        with pytest.raises(Unreachable):
            await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)
        server = await TcpServer.start(raft, "127.0.0.1", port, "c")
        assert (await asyncio.wait_for(_vote_until_answered(client), 5)).vote_granted
        assert factory.connected(2)
    finally:
        await server.close()
        await factory.close()


async def test_a_target_answering_as_another_node_is_logged_once_until_a_connection_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A membership address that reaches another node: each reconnect (one per back-off,
    about a second with the defaults, for as long as the address is wrong) was a WARNING.
    Now one WARNING, and one INFO once a connection to the target succeeds."""
    caplog.set_level(logging.INFO, logger="openraft_py.network.tcp")
    server = await TcpServer.start(FakeRaft(node_id=3), "127.0.0.1", 0, "c")
    port = server.port
    factory = TcpNetworkFactory(1, "c", backoff_min=0.01, backoff_max=0.02, seed=1)
    client = factory.new_client(2, BasicNode(server.address))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    try:
        while server._accepted < 10:  # ten connections, each answered by node 3
            assert loop.time() < deadline, f"only {server._accepted} connections"
            with pytest.raises(Unreachable):
                await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)
            await asyncio.sleep(0.005)  # (calls within the back-off fail without connecting)
        closing = [r for r in caplog.records if "answered the handshake" in r.getMessage() or "is node 3" in r.getMessage()]
        assert len(closing) == 1 and closing[0].levelno == logging.WARNING, [r.getMessage() for r in closing]
        assert closing[0].getMessage().startswith("tcp client 1 -> node 2: the node at 127.0.0.1:")
        await server.close()
        server = await TcpServer.start(FakeRaft(node_id=2), "127.0.0.1", port, "c")
        assert (await asyncio.wait_for(_vote_until_answered(client), 5)).vote_granted
        connected = [r for r in caplog.records if r.getMessage().startswith("tcp client 1 -> node 2: connected to")]
        assert len(connected) == 1 and connected[0].levelno == logging.INFO, [r.getMessage() for r in connected]
        assert "connections in" in connected[0].getMessage()
    finally:
        await server.close()
        await factory.close()


async def test_timeout_when_no_answer_and_the_connection_stays_usable() -> None:
    raft = FakeRaft()
    never = asyncio.Event()

    async def stuck(req: AppendEntriesRequest) -> AppendEntriesResponse:
        await never.wait()
        raise AssertionError("unreachable")

    raft.behaviour["append_entries"] = stuck
    _, server, factory, client = await _pair(raft, drain_timeout=0.1)
    loop = asyncio.get_running_loop()
    try:
        t0 = loop.time()
        with pytest.raises(Timeout):
            await asyncio.wait_for(
                client.append_entries(AppendEntriesRequest(V1, None, [], None), RPCOption(hard_ttl=0.2, soft_ttl=0.1)),
                5,
            )
        assert 0.15 <= loop.time() - t0 < 3.0
        # The same connection answers the next request.
        assert (await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)).vote_granted
        assert server.connections == 1
    finally:
        never.set()
        await server.close()
        await factory.close()


async def test_each_request_times_out_at_its_own_deadline_with_one_timer_per_connection() -> None:
    """Deadlines are kept by one sweep timer per connection: a short ttl sent after a long
    one still expires on time, the long one later, an answered request in between is not
    disturbed, and a request whose caller gave up is forgotten by the next sweep."""
    raft = FakeRaft()
    release = asyncio.Event()

    async def held(req: VoteRequest) -> VoteResponse:
        if req.last_log_id is not None and req.last_log_id.index == 0:
            await release.wait()  # index 0: answered only when released
        elif req.last_log_id is not None:
            await asyncio.Event().wait()  # any other index: never answered
        return VoteResponse(req.vote, True, None, req.pre_vote)

    raft.behaviour["vote"] = held
    _, server, factory, client = await _pair(raft, drain_timeout=0.1)
    loop = asyncio.get_running_loop()

    async def timed(index: int | None, ttl: float) -> tuple[str, float]:
        t0 = loop.time()
        try:
            await client.vote(VoteRequest(V1, None if index is None else LogId(1, index)), RPCOption(hard_ttl=ttl, soft_ttl=ttl))
            return "ok", loop.time() - t0
        except Timeout:
            return "timeout", loop.time() - t0

    try:
        assert (await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)).vote_granted  # connected
        conn = factory._peers[2].conn
        assert conn is not None
        long = asyncio.ensure_future(timed(1, 1.5))
        await asyncio.sleep(0.05)
        short = asyncio.ensure_future(timed(2, 0.3))
        answered = asyncio.ensure_future(timed(0, 5.0))
        abandoned = asyncio.ensure_future(client.vote(VoteRequest(V1, LogId(1, 3)), RPCOption(hard_ttl=0.5, soft_ttl=0.5)))
        await asyncio.sleep(0.1)
        abandoned.cancel()
        release.set()
        assert (await asyncio.wait_for(answered, 5))[0] == "ok"
        kind, took = await asyncio.wait_for(short, 5)
        # Before the long request's deadline (1.45 s after the short one started): the short
        # deadline did not wait for the timer armed for the long one.
        assert kind == "timeout" and 0.25 <= took < 1.2, took
        assert not long.done()
        kind, took = await asyncio.wait_for(long, 5)
        assert kind == "timeout" and 1.4 <= took < 3.0, took
        assert conn.pending == {} and conn.sweep is None  # the abandoned one was forgotten
        assert (await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)).vote_granted
    finally:
        release.set()
        await server.close()
        await factory.close()


async def test_unreachable_when_refused_then_backing_off() -> None:
    # The back-off (30-60 s) is far longer than the 5 s bound on the second call: it can only
    # finish in time by being refused at once, without waiting or a connect attempt.
    factory = TcpNetworkFactory(1, "c", backoff_min=30.0, backoff_max=60.0, seed=3)
    client = factory.new_client(2, BasicNode(f"127.0.0.1:{_free_port()}"))
    try:
        with pytest.raises(Unreachable, match="failed"):
            await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)
        with pytest.raises(Unreachable, match="backing off"):
            await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)
    finally:
        await factory.close()


async def test_unreachable_for_a_bad_address_and_a_closed_factory() -> None:
    factory = TcpNetworkFactory(1, "c")
    try:
        with pytest.raises(Unreachable):
            await asyncio.wait_for(factory.new_client(2, BasicNode("no-port")).vote(VoteRequest(V1, None), OPT), 5)
    finally:
        await factory.close()
    with pytest.raises(Unreachable):
        await asyncio.wait_for(factory.new_client(3, BasicNode("127.0.0.1:9")).vote(VoteRequest(V1, None), OPT), 5)


async def test_a_factory_used_with_async_with_is_closed_at_its_end() -> None:
    """``async with TcpNetworkFactory(...)``, as ``TcpServer``, ``KvClient`` and the stores
    (it raised "'TcpNetworkFactory' object does not support the asynchronous context manager
    protocol")."""
    async with TcpNetworkFactory(1, "c") as factory:
        assert isinstance(factory, TcpNetworkFactory)
    with pytest.raises(Unreachable, match="closed"):
        await asyncio.wait_for(factory.new_client(3, BasicNode("127.0.0.1:9")).vote(VoteRequest(V1, None), OPT), 5)


async def test_a_host_name_whose_resolver_hangs_holds_one_thread_and_no_worker_of_the_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A resolver that hangs (a DNS server that does not answer: glibc waits 5 s per try)
    # for one name; every other name resolves as usual.
    real = socket.getaddrinfo
    release = threading.Event()
    running: list[int] = []
    most = 0

    def getaddrinfo(host: Any, *args: Any, **kw: Any) -> Any:
        nonlocal most
        if host != "hangs.test":
            return real(host, *args, **kw)
        running.append(1)
        most = max(most, len(running))
        try:
            release.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        finally:
            running.pop()

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    raft, server, factory, _ = await _pair()
    slow = TcpNetworkFactory(1, "c", connect_timeout=0.1, backoff_min=0.01, backoff_max=0.02, seed=1)
    loop = asyncio.get_running_loop()
    try:
        client = slow.new_client(2, BasicNode("hangs.test:4000"))
        errors: list[str] = []
        for _ in range(12):
            with pytest.raises(Unreachable) as e:
                await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)
            errors.append(str(e.value))
            await asyncio.sleep(0.03)  # past the back-off: the next call tries again
        # One resolution at a time, and the loop's worker threads (the storage's) are free.
        assert most == 1
        t0 = loop.time()
        await asyncio.wait_for(asyncio.to_thread(lambda: None), 5)
        assert loop.time() - t0 < 0.5
        tried = [m for m in errors if "backing off" not in m]
        assert len(tried) >= 6, errors
        assert all("resolving 'hangs.test' took more than connect_timeout=0.1s" in m for m in tried), errors
        release.set()  # the resolver gives up: the next attempts say so
        for _ in range(100):
            with pytest.raises(Unreachable) as e:
                await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)
            if "cannot resolve 'hangs.test'" in str(e.value):
                break
            await asyncio.sleep(0.03)
        assert "Temporary failure in name resolution" in str(e.value)
        # A name that resolves connects (to the first of its addresses that answers).
        named = slow.new_client(2, BasicNode(f"localhost:{server.port}"))
        assert (await asyncio.wait_for(named.vote(VoteRequest(V1, None), OPT), 5)).vote_granted
    finally:
        release.set()
        await slow.close()
        await server.close()
        await factory.close()


async def test_a_server_address_it_cannot_listen_on_is_named() -> None:
    # A host name that does not resolve: the resolver's own message names no host.
    with pytest.raises(socket.gaierror, match=r"cannot listen on nosuchhost\.invalid:21999: the host name does not resolve"):
        await asyncio.wait_for(TcpServer.start(FakeRaft(), "nosuchhost.invalid", 21999, "c"), 30)
    # A port in use: the bind error names the address.
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=rf"127\.0\.0\.1.*{port}"):
            await asyncio.wait_for(TcpServer.start(FakeRaft(), "127.0.0.1", port, "c"), 30)
    finally:
        taken.close()


async def test_a_request_nested_deeper_than_the_recursion_limit_closes_only_its_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An install_snapshot whose data is a msgpack value nested 5000 deep: the connection is
    closed as for any malformed input (a WARNING naming the peer, counted in ``dropped``),
    nothing is delivered, and the server goes on serving. (``RecursionError`` escaped the
    server's protocol callback: asyncio logged a fatal error with a traceback.)"""
    import logging

    caplog.set_level(logging.WARNING)
    raft, server, factory, client = await _pair()
    try:
        fields = msgspec.msgpack.decode(
            wire.encode_message(wire.KIND_INSTALL_SNAPSHOT, 1, InstallSnapshotRequest(V1, META, 0, b"x", True))[
                wire.HEADER_SIZE :
            ]
        )
        enc = msgspec.msgpack.Encoder()
        parts = [enc.encode(f) for f in fields]
        parts[3] = b"\x91" * 5000 + b"\xc0"  # the data: [[[...nil]]]
        payload = wire.HEADER.pack(wire.KIND_INSTALL_SNAPSHOT, 7) + bytes([0x90 | len(fields)]) + b"".join(parts)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(bytes(wire.frame_message(wire.KIND_HELLO, 0, wire.Hello(wire.PROTOCOL_VERSION, "c", 1))))
        await writer.drain()
        ack = FrameReader(1024)
        while not ack.feed(await asyncio.wait_for(reader.read(100), 5)):
            pass
        writer.write(len(payload).to_bytes(4, "big") + payload)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing answered
        writer.close()
        assert server.dropped == 1 and server.delivered == 0 and raft.received == []
        dropped = [r for r in caplog.records if "closing the connection from 127.0.0.1:" in r.getMessage()]
        assert len(dropped) == 1 and "malformed install_snapshot body" in dropped[0].getMessage()
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records
        assert (await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)).vote_granted
    finally:
        await server.close()
        await factory.close()


async def test_handler_errors_are_mapped(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.WARNING, logger="openraft_py.network.tcp")
    raft = FakeRaft()

    async def bad_value(req: Any) -> Any:
        raise ValueError("handler bug")

    async def stopped(req: Any) -> Any:
        raise Stopped()

    async def invalid(req: Any) -> Any:
        raise InvalidRequest("vote", "term out of range")

    _, server, factory, client = await _pair(raft)
    try:
        raft.behaviour["vote"] = bad_value
        with pytest.raises(RemoteError, match="handler bug") as ei:
            await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)
        assert ei.value.target == 2
        raft.behaviour["vote"] = stopped
        with pytest.raises(Unreachable, match="stopped"):
            await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)
        raft.behaviour["vote"] = invalid
        with pytest.raises(RemoteError, match="InvalidRequest"):
            await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)
        # A correct peer never sends an invalid request: the server says so, and counts it
        # (it answered without a word).
        assert server.refused == 1
        warned = [r.getMessage() for r in caplog.records if "refused an invalid vote" in r.getMessage()]
        assert len(warned) == 1 and "from node 1 at 127.0.0.1:" in warned[0] and "term out of range" in warned[0]
        # Errors are answers: the connection is still the first one.
        assert server.connections == 1 and server.dropped == 0
    finally:
        await server.close()
        await factory.close()


async def test_a_peer_sending_invalid_requests_at_every_heartbeat_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """A faulty peer (a bug, another version) sends an invalid request at every heartbeat,
    twenty a second: each was a WARNING. Now the first is, then one every
    ``failure_log.REPEAT_EVERY`` seconds (or for another RPC); each is still refused and
    counted."""
    import logging

    caplog.set_level(logging.WARNING, logger="openraft_py.network.tcp")
    raft = FakeRaft()

    async def invalid(req: Any) -> Any:
        raise InvalidRequest("vote", "term out of range")

    raft.behaviour["vote"] = invalid
    _, server, factory, client = await _pair(raft)
    try:
        for _ in range(20):
            with pytest.raises(RemoteError, match="InvalidRequest"):
                await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)
        assert server.refused == 20
        warned = [r.getMessage() for r in caplog.records if "refused an invalid vote" in r.getMessage()]
        assert len(warned) == 1, warned
        assert "from node 1 at 127.0.0.1:" in warned[0] and "term out of range (1 refusal in" in warned[0]
    finally:
        await server.close()
        await factory.close()


async def test_a_request_from_another_leader_than_the_sender_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.WARNING, logger="openraft_py.network.tcp")
    raft, server, factory, client = await _pair()
    try:
        with pytest.raises(RemoteError, match="sender"):
            await asyncio.wait_for(client.append_entries(AppendEntriesRequest(Vote.new(3, 3), None, [], None), OPT), 5)
        assert raft.received == [] and server.connections == 1 and server.refused == 1
        warned = [r.getMessage() for r in caplog.records if "refused append_entries from node 1" in r.getMessage()]
        assert len(warned) == 1 and "it names node 3 as its leader" in warned[0], warned
    finally:
        await server.close()
        await factory.close()


async def test_oversized_request_is_a_network_error_and_the_connection_survives() -> None:
    raft, server, _, _ = await _pair()
    factory = TcpNetworkFactory(1, "c", max_frame_size=4096)
    client = factory.new_client(2, BasicNode(server.address))
    try:
        big = InstallSnapshotRequest(V1, META, 0, b"x" * 10_000, False)
        with pytest.raises(NetworkError, match="max_frame_size"):
            await asyncio.wait_for(client.install_snapshot(big, OPT), 5)
        assert (await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)).vote_granted
        assert raft.received[0][0] == "vote"
    finally:
        await server.close()
        await factory.close()


async def test_close_drains_requests_in_flight() -> None:
    raft = FakeRaft()
    started = asyncio.Event()

    async def slowish(req: AppendEntriesRequest) -> AppendEntriesResponse:
        started.set()
        await asyncio.sleep(0.1)
        return AppendEntriesResponse(req.vote, True, LogId(3, 77))

    raft.behaviour["append_entries"] = slowish
    _, server, factory, client = await _pair(raft)
    try:
        call = asyncio.ensure_future(client.append_entries(AppendEntriesRequest(V1, None, [], None), OPT))
        await asyncio.wait_for(started.wait(), 5)
        await asyncio.wait_for(server.close(), 5)
        assert (await asyncio.wait_for(call, 5)).matching == LogId(3, 77)
        assert server.connections == 0
        with pytest.raises(Unreachable):
            await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)
    finally:
        await server.close()
        await factory.close()


async def test_idle_connections_are_closed_and_clients_reconnect() -> None:
    raft, server, factory, client = await _pair(idle_timeout=0.2)
    try:
        assert (await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)).vote_granted
        await asyncio.wait_for(_until(lambda: server.connections == 0), 5)
        await asyncio.wait_for(_until(lambda: not factory.connected(2)), 5)
        assert (await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)).vote_granted
        assert server.dropped >= 1
    finally:
        await server.close()
        await factory.close()


async def test_clients_of_one_target_share_one_connection() -> None:
    raft, server, factory, client = await _pair()
    try:
        other = factory.new_client(2, BasicNode(server.address))
        await asyncio.wait_for(asyncio.gather(client.vote(VoteRequest(V1, None), OPT), other.vote(VoteRequest(V1, None), OPT)), 5)
        assert server.connections == 1
    finally:
        await server.close()
        await factory.close()


def test_tcp_module_names_the_protocols() -> None:
    assert tcp.__all__ and {"TcpNetworkFactory", "TcpServer"} <= set(tcp.__all__)


# -- a 3-node cluster over TCP -------------------------------------------------------------------


async def _commit_and_check(c: TcpCluster, writes: int) -> None:
    await c.start([1, 2, 3])
    leader = await c.wait_for_leader(15)
    last = None
    for i in range(writes):
        last = await c.write(f"w{i}".encode())
    assert last is not None
    await c.wait_applied(last.index, 15)
    logs = {nid: [(lid, d) for lid, d in n.disk.applied_log] for nid, n in c.nodes.items()}
    assert logs[1] == logs[2] == logs[3]
    assert [d for _, d in logs[1]] == [f"w{i}".encode() for i in range(writes)]
    # Followers received AppendEntries over TCP.
    for nid, n in c.nodes.items():
        if nid != leader:
            assert n.counting is not None and n.counting.calls["append_entries"] > 0


@pytest.mark.parametrize("security", ["plain", "tls", "mtls"])
async def test_three_node_cluster_elects_and_commits(security: str, request: pytest.FixtureRequest) -> None:
    server_ssl = client_ssl = None
    if security != "plain":
        pki = request.getfixturevalue("pki")
        server_ssl = pki.server_ctx(mtls=security == "mtls")
        client_ssl = pki.client_ctx("client" if security == "mtls" else None)
    async with TcpCluster(tcp_config(), server_ssl=server_ssl, client_ssl=client_ssl) as c:
        await _commit_and_check(c, 200)


async def test_three_node_cluster_fails_over_and_the_old_leader_catches_up() -> None:
    async with TcpCluster(tcp_config()) as c:
        await c.start([1, 2, 3])
        old = await c.wait_for_leader(15)
        for i in range(50):
            await c.write(f"a{i}".encode())
        await c.stop_node(old)
        new = await c.wait_for_leader(15)
        assert new != old
        last = None
        for i in range(50):
            last = await c.write(f"b{i}".encode())
        await c.start_node(old)  # same port, same disk
        assert last is not None
        await c.wait_applied(last.index, 15)
        datas = [[d for _, d in n.disk.applied_log] for n in c.nodes.values()]
        assert datas[0] == datas[1] == datas[2]
        assert datas[0] == [f"a{i}".encode() for i in range(50)] + [f"b{i}".encode() for i in range(50)]


async def test_a_big_batch_with_large_entries_goes_through() -> None:
    """AppendEntries frames of several MiB (300 entries of 16 KiB) replicate fine.

    One leader throughout (``steady_tcp_config``): the three nodes share this event loop,
    and a step of such a frame holds it for some 70 ms of CPU on asyncio's loop (25 on
    uvloop's); on a loaded 2-core machine that stalled every node's loop for up to 800 ms,
    past tcp_config's 150-300 ms election timeout, and a follower took the next term while
    the batch was in flight (``ForwardToLeader`` from ``client_write_many``)."""
    async with TcpCluster(steady_tcp_config()) as c:
        await c.start([1, 2, 3])
        leader = await c.wait_for_leader(15)
        raft = c.nodes[leader].raft
        assert raft is not None
        blob = bytes(range(256)) * 64
        out = await asyncio.wait_for(raft.client_write_many([blob + bytes([i % 256]) for i in range(600)]), 30)
        await c.wait_applied(out[-1].log_id.index, 30)
        for n in c.nodes.values():
            assert len(n.disk.applied_log) == 600 and n.disk.applied_log[-1][1] == blob + bytes([599 % 256])


def test_entries_sample_is_normal() -> None:
    # Guards the helper assumptions above: sample AppendEntries carry Normal entries.
    kind, req = sample_messages()[3]
    assert any(isinstance(e, Entry) and isinstance(e.payload, Normal) for e in req.entries)


async def test_a_peer_that_does_not_read_its_answers_is_not_buffered_without_bound() -> None:
    """A peer that sends requests but never reads the answers: once the answers back up
    past the transport's high-water mark, the server stops reading that peer's requests, so
    what it holds for it stays bounded; reading the answers resumes the flow and every
    request is answered."""
    raft, server, factory, _ = await _pair()
    total = 50_000
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the peer takes answers slowly
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", server.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(bytes(wire.frame_message(wire.KIND_HELLO, 0, wire.Hello(1, "c", 1))))
        head = await asyncio.wait_for(reader.readexactly(4), 5)
        await asyncio.wait_for(reader.readexactly(int.from_bytes(head, "big")), 5)
        (conn,) = server._conns
        # A small kernel send buffer on the server, so its answers back up in its own buffer.
        conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        frame = bytes(wire.frame_message(wire.KIND_VOTE, 5, VoteRequest(V1, None)))

        async def send_all() -> None:
            for _ in range(total // 1000):
                writer.write(frame * 1000)
                await writer.drain()

        sender = asyncio.ensure_future(send_all())
        await asyncio.wait_for(_until(lambda: conn.write_paused), 20)
        # The server stopped reading: nothing more is delivered while the answers wait.
        assert conn.paused
        stalled_at = server.delivered
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert server.delivered <= stalled_at + server.max_inflight
        assert 0 < stalled_at < total
        held = conn.transport.get_write_buffer_size() + conn.reader.buffered()
        assert held < 1 << 20, held
        # Now read the answers: everything flows and every request is answered.
        fr = FrameReader(1 << 20)
        answered = 0
        while answered < total:
            chunk = await asyncio.wait_for(reader.read(1 << 16), 10)
            assert chunk
            answered += len(fr.feed(chunk))
        await asyncio.wait_for(sender, 10)
        assert server.delivered == total and server.connections == 1 and not conn.paused
        writer.close()
        print(f"\nstalled after {stalled_at} of {total} requests holding {held} bytes")
    finally:
        sock.close()
        await server.close()
        await factory.close()


async def test_frames_of_one_loop_turn_go_out_in_one_write_with_nagle_off() -> None:
    raft, server, factory, client = await _pair()
    try:
        assert (await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)).vote_granted
        peer = factory._peers[2]
        assert peer.conn is not None and peer.conn.transport is not None
        ctrans = peer.conn.transport
        (sconn,) = server._conns
        for t in (ctrans, sconn.transport):
            sock = t.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        writes: list[int] = []

        class Counting:
            """Counts the writes the connection's frame writer makes."""

            def write(self, data: bytes) -> None:
                writes.append(len(data))
                ctrans.write(data)

            def is_closing(self) -> bool:
                return bool(ctrans.is_closing())

        writer = peer.conn.writer
        assert writer is not None
        writer._transport = Counting()  # type: ignore[assignment]
        try:
            # 16 requests issued in one loop turn leave in one write.
            calls = [asyncio.ensure_future(client.vote(VoteRequest(V1, LogId(1, i)), OPT)) for i in range(16)]
            out = await asyncio.wait_for(asyncio.gather(*calls), 5)
        finally:
            writer._transport = ctrans
        assert len(out) == 16 and len(writes) == 1
        one = len(wire.frame_message(wire.KIND_VOTE, 1, VoteRequest(V1, LogId(1, 1))))
        assert writes[0] >= 16 * (one - 2)
    finally:
        await server.close()
        await factory.close()


async def test_handshake_accepts_members_the_followed_leader_and_anyone_before_a_membership() -> None:
    """The sender check: members pass; a non-member passes only while it is the leader this
    node follows (a leader that removed itself still replicates the change); a node with no
    membership yet accepts any sender of its cluster."""
    raft = FakeRaft(members={1, 2, 3})
    server = await TcpServer.start(raft, "127.0.0.1", 0, "c")
    factories: list[TcpNetworkFactory] = []

    async def vote_from(node_id: int) -> Any:
        f = TcpNetworkFactory(node_id, "c", backoff_min=0.01, backoff_max=0.02)
        factories.append(f)
        return await asyncio.wait_for(f.new_client(2, BasicNode(server.address)).vote(VoteRequest(Vote.new(1, node_id), None), OPT), 5)

    try:
        assert (await vote_from(3)).vote_granted
        with pytest.raises(Unreachable, match="not in the membership"):
            await vote_from(9)
        raft.metrics.vote = Vote.new(1, 9, committed=True)  # the leader it follows
        assert (await vote_from(9)).vote_granted
        raft.metrics = _Metrics(2, set())
        assert (await vote_from(77)).vote_granted
    finally:
        await server.close()
        for f in factories:
            await f.close()


async def test_over_tcp_a_learner_joins_by_snapshot_then_replaces_the_leader() -> None:
    """Snapshot transfer in 4 KiB chunks and a membership change that removes the leader,
    all over TCP: the new node catches up from the snapshot, the old leader hands over, the
    new membership commits writes and every remaining node applied the same."""
    cfg = tcp_config(max_in_snapshot_log_to_keep=0, purge_batch_size=1, snapshot_max_chunk_size=4096)
    async with TcpCluster(cfg) as c:
        await c.start([1, 2, 3])
        old = await c.wait_for_leader(15)
        raft = c.nodes[old].raft
        assert raft is not None
        last = None
        pad = b"." * 100
        for i in range(300):
            last = await c.write(b"v%05d" % i + pad)
        assert last is not None
        await c.wait_applied(last.index, 15)
        await raft.trigger.snapshot()
        await raft.wait(10).purged(last.index, "leader purged its log")
        n4 = await c.start_node(4)
        await asyncio.wait_for(raft.add_learner(4, BasicNode(n4.addr), blocking=True), 20)
        assert n4.raft is not None and n4.counting is not None
        await n4.raft.wait(10).snapshot(last.index, "learner installed the snapshot")
        assert n4.counting.calls["install_snapshot"] >= 2  # chunked
        rest = {1, 2, 3} - {old}
        await asyncio.wait_for(raft.change_membership(rest | {4}), 20)
        await c.stop_node(old)
        new = await c.wait_for_leader(15)
        assert new in rest | {4}
        final = None
        for i in range(20):
            final = await c.write(b"after%d" % i)
        assert final is not None
        await c.wait_applied(final.index, 15)
        datas = {nid: [d for _, d in n.disk.applied_log] for nid, n in c.nodes.items() if nid != old}
        ref = datas[4]
        assert all(d == ref for d in datas.values())
        assert ref[:300] == [b"v%05d" % i + pad for i in range(300)] and ref[-1] == b"after19"


async def test_connection_limit_and_handshake_timeout_close_only_the_offenders() -> None:
    raft, server, factory, client = await _pair(max_connections=3, handshake_timeout=0.3)
    loop = asyncio.get_running_loop()
    try:
        assert (await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)).vote_granted
        # Two silent connections fill the limit; a third is closed on accept.
        silent = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
        await asyncio.wait_for(_until(lambda: server.connections == 3), 5)
        r3, w3 = await asyncio.open_connection("127.0.0.1", server.port)
        assert await asyncio.wait_for(r3.read(), 5) == b""
        w3.close()
        # The silent ones are closed by the handshake timeout, bounded.
        t0 = loop.time()
        for r, w in silent:
            assert await asyncio.wait_for(r.read(), 5) == b""
            w.close()
        assert loop.time() - t0 < 3.0
        # The established client was served throughout and still is.
        assert (await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)).vote_granted
        assert server.dropped == 3 and server.connections == 1
    finally:
        await server.close()
        await factory.close()
