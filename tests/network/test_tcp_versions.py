"""Protocol versions at the TCP handshake (a rolling upgrade across protocol versions): a peer
that speaks no version of this node's is refused on both sides, naming both versions, and
logged once on each side, not at every reconnect; a handshake answer in another version than
the hello's is refused by the client (it went on speaking its own version to the peer)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import msgspec
import pytest

from openraft_py._core import FrameReader, encode_frame
from openraft_py.errors import Unreachable
from openraft_py.network import wire
from openraft_py.network.tcp import TcpNetworkFactory, TcpServer
from openraft_py.types import BasicNode, LogId, Vote, VoteRequest, VoteResponse

from .test_tcp import FakeRaft
from .test_tcp_security import OPT

pytestmark = pytest.mark.timeout(60)

LOGGER = "openraft_py.network.tcp"
REQ = VoteRequest(Vote.new(1, 1), None, pre_vote=True)


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


async def _attempts(factory: TcpNetworkFactory, target: int, addr: str, n: int,
                    attempts: Callable[[], int]) -> list[str]:
    """Call ``target`` until ``attempts()`` (connections the peer saw) reaches ``n``; the
    messages of the ``Unreachable`` errors of the attempts that reached it (calls during the
    back-off fail without connecting)."""
    client = factory.new_client(target, BasicNode(addr))
    errors: list[str] = []

    async def one() -> bool:
        try:
            await client.vote(REQ, OPT)
        except Unreachable as e:
            if "backing off" not in str(e):
                errors.append(str(e))
        else:
            raise AssertionError("the call succeeded")
        return attempts() >= n

    async def loop() -> None:
        while not await one():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(loop(), 10)
    return errors


async def _errors_against(server: asyncio.Server, connections: list[int]) -> list[str]:
    """``_attempts`` of a fresh client (node 1) to reach node 2 at ``server`` until it saw 3
    connections (``connections`` grows by one a connection); ``server`` is closed after."""
    addr = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    factory = TcpNetworkFactory(1, "c", backoff_min=0.01, backoff_max=0.02, seed=1)
    try:
        return await _attempts(factory, 2, addr, 3, lambda: len(connections))
    finally:
        await factory.close()
        server.close()
        await server.wait_closed()


async def test_a_peer_speaking_no_version_of_ours_is_refused_naming_both_and_logged_once_each_side(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The server speaks only version 2 (a newer release; simulated by its supported set):
    each connect of a version-1 client is refused with an answer naming both versions, and
    each side logs the mismatch once at WARNING (the server logged every reconnect, one a
    second with the default back-off, naming only the hello's version; the client logged
    nothing above DEBUG)."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    monkeypatch.setattr(wire, "SUPPORTED_VERSIONS", frozenset({2}))
    server = await TcpServer.start(FakeRaft(), "127.0.0.1", 0, "c", node_id=2)
    factory = TcpNetworkFactory(1, "c", backoff_min=0.01, backoff_max=0.02, seed=1)
    try:
        errors = await _attempts(factory, 2, server.address, 4, lambda: server.refused)
    finally:
        await factory.close()
        await server.close()
    assert errors and all(
        "unsupported protocol version 1" in e and "this node speaks protocol version 2" in e
        and "this node's hello was in protocol version 1" in e for e in errors
    ), errors
    assert server.refused >= 4
    refused = _warnings(caplog, "refused the connection")
    assert len(refused) == 1 and "this node speaks protocol version 2" in refused[0], refused
    client = _warnings(caplog, "no protocol version in common with node 2")
    assert len(client) == 1 and "unsupported protocol version 1" in client[0], client


async def _fake_server(ack_version: int) -> tuple[asyncio.Server, list[int], list[int]]:
    """A server answering every hello with ``HelloAck(ack_version, 2)`` and every vote with a
    granted vote; returns it, the connections seen and the kinds of the requests received."""
    connections: list[int] = []
    kinds: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        frames = FrameReader(1 << 20)
        try:
            while data := await reader.read(65536):
                for payload in frames.feed(data):
                    kind, rid, body = wire.split_payload(payload)
                    if kind == wire.KIND_HELLO:
                        writer.write(bytes(wire.frame_message(wire.KIND_HELLO_ACK, 0, wire.HelloAck(ack_version, 2))))
                    else:
                        kinds.append(kind)
                        req = wire.decode_body(kind, body)
                        resp = VoteResponse(req.vote, True, LogId(1, 1), req.pre_vote)
                        writer.write(bytes(wire.frame_message(wire.KIND_VOTE_RESP, rid, resp)))
        finally:
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0), connections, kinds


async def test_a_handshake_answer_in_another_version_is_refused_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server that answers the hello in version 2 (the client speaks 1): the client sends
    no request and logs the mismatch once; it took the answer and sent its requests in its
    own version (the vote was answered as if the versions matched)."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    server, connections, kinds = await _fake_server(ack_version=2)
    errors = await _errors_against(server, connections)
    assert errors and all("answered the handshake in protocol version 2, not in 1" in e for e in errors), errors
    assert kinds == []
    logged = _warnings(caplog, "no protocol version in common with node 2")
    assert len(logged) == 1 and "answered the handshake in protocol version 2" in logged[0], logged


async def test_a_hello_ack_names_the_version_of_the_hello(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that speaks versions 1 and 2 answers a version-1 hello in version 1: the
    connection speaks the client's version (it answered its own newest one)."""
    monkeypatch.setattr(wire, "SUPPORTED_VERSIONS", frozenset({1, 2}))
    monkeypatch.setattr(wire, "PROTOCOL_VERSION", 2)
    server = await TcpServer.start(FakeRaft(), "127.0.0.1", 0, "c", node_id=2)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(bytes(wire.frame_message(wire.KIND_HELLO, 0, wire.Hello(1, "c", 1))))
        frames = FrameReader(1 << 20)
        got: list[bytes] = []
        while not got:
            got = frames.feed(await asyncio.wait_for(reader.read(4096), 5))
        writer.close()
        kind, rid, body = wire.split_payload(got[0])
        assert (kind, rid) == (wire.KIND_HELLO_ACK, 0)
        assert wire.decode_body(kind, body) == wire.HelloAck(1, 2)
    finally:
        await server.close()



async def _first_answer(port: int, frame: bytes) -> bytes:
    """Send ``frame`` on a new connection; everything the server sends until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(frame)
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def test_a_hello_of_another_version_laid_out_otherwise_is_answered_unsupported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A hello of version 2 whose other items this version does not read (a newer release's
    hello may hold anything after its version) is answered ERR_UNSUPPORTED naming both
    versions: it was dropped as malformed, unanswered, and the newer client was told only
    that the server closed the connection before answering (TLS expected?). A hello of
    version 1 that does not decode is still malformed."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    enc = msgspec.msgpack.Encoder()
    server = await TcpServer.start(FakeRaft(), "127.0.0.1", 0, "c", node_id=2)
    try:
        for _ in range(2):
            body = enc.encode([2, {"cluster": "c", "node": 1}, ["features"]])
            data = await _first_answer(server.port, encode_frame(wire.HEADER.pack(wire.KIND_HELLO, 0) + body))
            kind, rid, raw = wire.split_payload(FrameReader(1 << 20).feed(data)[0])
            assert (kind, rid) == (wire.KIND_ERROR, 0)
            answer = wire.decode_body(kind, raw)
            assert answer.code == wire.ERR_UNSUPPORTED
            assert answer.message.startswith("unsupported protocol version 2 (a hello of another layout): this node "
                                              "speaks protocol version 1"), answer
        malformed = enc.encode([1, {"cluster": "c"}])
        assert await _first_answer(server.port, encode_frame(wire.HEADER.pack(wire.KIND_HELLO, 0) + malformed)) == b""
        assert server.refused == 2 and server.dropped == 1
    finally:
        await server.close()
    assert len(_warnings(caplog, "unsupported protocol version 2")) == 1


DEEP_HELLO = b"\x91" * 1000 + b"\x01"
"""A hello body within ``MAX_HELLO_FRAME`` nested past the interpreter's recursion limit:
``[[[...1]]]``, 1000 deep."""


async def test_a_hello_nested_deeper_than_the_recursion_limit_closes_its_connection_as_malformed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A hello that does not decode and is nested 1000 deep is malformed input (the connection
    closed, a WARNING, counted in ``dropped``), and the server goes on. ``hello_version``,
    which reads such a hello's first item, raised ``RecursionError`` out of the protocol
    callback: asyncio logged "Fatal error on transport" with a traceback at ERROR for each
    such connection, which any peer that can reach the port could send, unauthenticated and
    unthrottled (the refusals are logged once per interval)."""
    caplog.set_level(logging.WARNING)
    server = await TcpServer.start(FakeRaft(), "127.0.0.1", 0, "c", node_id=2)
    try:
        for _ in range(2):
            frame = encode_frame(wire.HEADER.pack(wire.KIND_HELLO, 0) + DEEP_HELLO)
            assert await _first_answer(server.port, frame) == b""
        assert server.dropped == 2 and server.refused == 0
        factory = TcpNetworkFactory(node_id=1, cluster_name="c")
        try:  # (and the server still serves)
            client = factory.new_client(2, BasicNode(f"127.0.0.1:{server.port}"))
            assert (await asyncio.wait_for(client.vote(VoteRequest(Vote.new(1, 1), None), OPT), 5)).vote_granted
        finally:
            await factory.close()
    finally:
        await server.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    assert _warnings(caplog, "malformed hello body")


@pytest.mark.parametrize("body, version", [
    ([1, "c", 3], 1), ([7, {"x": 1}], 7), ([2**32 - 1], 2**32 - 1), ([2**32], None), ([-1, "c"], None),
    (["1", "c", 3], None), ([True, "c"], None), ([], None), ({"version": 1}, None), (3, None),
])
def test_hello_version_reads_the_first_item_only(body: object, version: int | None) -> None:
    assert wire.hello_version(msgspec.msgpack.encode(body)) == version
    assert wire.hello_version(b"\xc1") is None
    assert wire.hello_version(DEEP_HELLO) is None  # (it raised RecursionError)


async def test_a_handshake_answer_of_another_version_laid_out_otherwise_is_named_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server answering the hello with a HelloAck of version 2 that this version cannot
    decode (a newer release's answer may hold anything after its version): the client names
    both versions, once at WARNING; it said "malformed data" at WARNING at every reconnect."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    connections: list[int] = []
    ack = msgspec.msgpack.encode([2, {"node": 2, "features": ["x" * 100]}])

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await reader.read(65536)
        writer.write(encode_frame(wire.HEADER.pack(wire.KIND_HELLO_ACK, 0) + ack))
        await reader.read()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    errors = await _errors_against(server, connections)
    assert errors and all("answered the handshake in protocol version 2, not in 1" in e for e in errors), errors
    logged = _warnings(caplog, "node 2")
    assert len(logged) == 1 and "no protocol version in common with node 2" in logged[0], logged


async def test_a_handshake_answer_nested_deeper_than_the_recursion_limit_is_malformed_data(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server answering the hello with a HelloAck nested 1000 deep: each attempt fails as
    malformed data from the node. The client reads such an answer's version as the server
    reads a hello's (``hello_version``), whose ``RecursionError`` escaped the client's
    protocol callback: asyncio logged "Fatal error on transport" with a traceback at ERROR at
    each reconnect."""
    caplog.set_level(logging.DEBUG)
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await reader.read(65536)
        writer.write(encode_frame(wire.HEADER.pack(wire.KIND_HELLO_ACK, 0) + DEEP_HELLO))
        await reader.read()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    errors = await _errors_against(server, connections)
    assert errors and all("malformed data from node 2" in e for e in errors), errors
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
