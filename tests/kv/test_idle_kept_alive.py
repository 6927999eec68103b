"""A running node closing its clients' idle connections (``http_api.IdleConnections``): a
request a client sends on one as the node closes it gets an answer that says it was not
read, never a cut connection (for a write: an unknown outcome).

Before, a connection idle after an answer was left to aiohttp's keep-alive timer, which
closed it with no word: a client whose pool reused the connection at that moment met a
closed connection, and could not tell whether its write had been applied."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator

import pytest

from openraft_py.kv import http_api
from openraft_py.kv.node import SHUTDOWN_GRACE, KvNode

from .raw_http import ANSWER_WITHIN, http_addr, read_answer

pytestmark = pytest.mark.timeout(60)


def _sweeper(node: KvNode, timeout: float) -> http_api.IdleConnections:
    """``node``'s idle-connection sweeper, its timer stopped (the test sweeps by hand) and its
    timeout set to ``timeout``."""
    conns = node.http_conns
    assert conns is not None
    conns.close()
    conns.timeout = timeout
    return conns


async def _status(node: KvNode, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One ``GET /cluster/status`` on the connection, its answer read (kept alive)."""
    writer.write(f"GET /cluster/status HTTP/1.1\r\nHost: {node.opts.http_addr}\r\n\r\n".encode())
    await writer.drain()
    status, headers, body = await read_answer(reader)
    assert status == 200 and headers.get("connection", "").lower() != "close", (status, headers, body)


@contextlib.asynccontextmanager
async def _answered(node: KvNode) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A connection to ``node``'s HTTP port on which one ``GET /cluster/status`` was answered
    (kept alive), closed when the block ends."""
    reader, writer = await asyncio.open_connection(*http_addr(node))
    try:
        await _status(node, reader, writer)
        yield reader, writer
    finally:
        writer.close()


def _server_side(node: KvNode, writer: asyncio.StreamWriter) -> object:
    """The node's ``RequestHandler`` of the connection ``writer`` writes on (the cluster's own
    client session keeps connections of its own)."""
    assert node._http is not None and node._http.server is not None
    ours = writer.get_extra_info("sockname")
    [conn] = [c for c in node._http.server.connections
              if c.transport is not None and c.transport.get_extra_info("peername") == ours]
    return conn


def _not_read(status: int, headers: dict[str, str], body: bytes, leader_id: int) -> None:
    assert status == 408, (status, body)
    assert headers["connection"].lower() == "close"
    answer = json.loads(body)
    assert answer == {"error": http_api.IDLE_NOT_READ, "leader_id": leader_id}, answer


async def test_a_connection_idle_after_its_answer_is_closed_with_a_408(leader: KvNode) -> None:
    """A kept-alive connection idle for the timeout after its answer gets the unsolicited 408
    (naming the leader), then its close; the node goes on serving."""
    conns = _sweeper(leader, 0.2)
    conns.start()
    async with _answered(leader) as (reader, writer):
        status, headers, body = await read_answer(reader)  # (unsolicited: the node closes the connection)
        _not_read(status, headers, body, leader.id)
        assert await asyncio.wait_for(reader.read(), ANSWER_WITHIN) == b""
    async with _answered(leader):
        pass  # (the node serves a new connection)


async def test_a_write_sent_as_its_idle_connection_is_closed_is_answered_not_read(leader: KvNode) -> None:
    """The race the 408 is for: the client's pool sends a write on the kept-alive connection
    just as the node retires it (before the client saw the 408). The client reads the 408
    as the write's answer, and the write was not applied."""
    conns = _sweeper(leader, 0.0)
    async with _answered(leader) as (reader, writer):
        conn = _server_side(leader, writer)
        assert conns.sweep() >= 1 and conn in conns.retired()  # idle since its answer, for the (zero) timeout
        writer.write(f"PUT /kv/raced HTTP/1.1\r\nHost: {leader.opts.http_addr}\r\nContent-Length: 1\r\n\r\nv".encode())
        await writer.drain()
        try:
            status, headers, body = await read_answer(reader)
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            raise AssertionError(f"the write got no answer: {e!r}") from None
        _not_read(status, headers, body, leader.id)
        assert await asyncio.wait_for(reader.read(), ANSWER_WITHIN) == b""  # one answer only: the write unread
    reader, writer = await asyncio.open_connection(*http_addr(leader))
    try:
        writer.write(f"GET /kv/raced HTTP/1.1\r\nHost: {leader.opts.http_addr}\r\n\r\n".encode())
        await writer.drain()
        status, _headers, body = await read_answer(reader)
        assert status == 404, (status, body)  # never applied
    finally:
        writer.close()


async def test_a_connection_serving_a_request_is_not_idle(leader: KvNode) -> None:
    """A request started on a connection ends its idle time, even between two sweeps; one
    whose request is still being read is not idle at all."""
    conns = _sweeper(leader, 3600.0)
    async with _answered(leader) as (reader, writer):
        conns.sweep()  # seen idle from now on
        assert not conns.retired()
        conns.timeout = 0.0
        await _status(leader, reader, writer)  # a request since: idle anew
        conns.timeout = 3600.0
        conns.sweep()
        assert not conns.retired()
        # A body that has not come yet: the handler reads it, the connection is busy.
        writer.write(f"PUT /kv/slow HTTP/1.1\r\nHost: {leader.opts.http_addr}\r\nContent-Length: 2\r\n\r\nv".encode())
        await writer.drain()
        conn = _server_side(leader, writer)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ANSWER_WITHIN
        while http_api.StoppingConnections.idle(conn):  # (its head not read yet)
            assert loop.time() < deadline, "the request's head never reached the node"
            await asyncio.sleep(0.01)
        conns.timeout = 0.0
        conns.sweep()
        assert conn not in conns.retired()
        writer.write(b"w")
        status, _headers, body = await read_answer(reader)
        assert status == 200, (status, body)


async def test_a_retired_connection_is_closed_once_its_client_has_the_408(leader: KvNode) -> None:
    """A client that keeps its retired connection open without reading (a pool holding it)
    has the 408 and the FIN in its kernel's buffer: the next sweep closes the connection
    (its descriptor is not held until the client closes)."""
    conns = _sweeper(leader, 0.0)
    async with _answered(leader) as (reader, writer):
        conn = _server_side(leader, writer)
        assert conns.sweep() >= 1 and conn in conns.retired()
        assert leader._http is not None and leader._http.server is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ANSWER_WITHIN
        while conn in conns.retired():  # each sweep closes it once its kernel acknowledged the 408 and the FIN
            assert loop.time() < deadline, "the retired connection was never closed"
            await asyncio.sleep(0.01)
            conns.sweep()
        while conn in leader._http.server.connections:  # (closed: connection_lost comes on a later turn)
            assert loop.time() < deadline, "the retired connection was never closed"
            await asyncio.sleep(0.01)
        status, headers, body = await read_answer(reader)  # still the client's to read
        _not_read(status, headers, body, leader.id)


async def test_a_stop_takes_the_connections_the_sweep_retired(leader: KvNode) -> None:
    """A connection the sweep retired and that is not closed yet does not hold up a stop for
    its grace: the stop takes it as retired."""
    conns = _sweeper(leader, 0.0)
    async with _answered(leader) as (reader, writer):
        conn = _server_side(leader, writer)
        assert conns.sweep() >= 1 and conn in conns.retired()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.wait_for(leader.stop(), 2 * SHUTDOWN_GRACE)
        took = loop.time() - t0
        status, headers, body = await read_answer(reader)
        _not_read(status, headers, body, leader.id)
    assert took < SHUTDOWN_GRACE / 2, took


async def test_a_slow_reader_cut_at_the_second_sweep_still_gets_its_answer_and_the_408(leader: KvNode) -> None:
    """A retired connection whose client has not acknowledged the 408 two sweeps later is
    cut (``transport.abort()``), its descriptor released: a client that reads its large
    answer slowly (its receive window full) is such a client, not a gone one. The cut loses
    nothing it was sent: the socket is closed without a reset (no ``SO_LINGER`` 0, nothing
    unread from it), so the kernel still delivers the rest of the answer, the 408 and the
    FIN."""
    value = "v" * (1024 * 1024 - 64)
    await leader.put("large", value)
    conns = _sweeper(leader, 0.0)
    assert leader._http is not None and leader._http.server is not None
    server = leader._http.server
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # (before connecting: a small window)
        sock.setblocking(False)
        await loop.sock_connect(sock, http_addr(leader))
        await loop.sock_sendall(sock, b"GET /kv/large?consistency=local HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        deadline = loop.time() + ANSWER_WITHIN
        while True:  # until the answer is written (its rest in the node's buffers): then idle
            conn = [c for c in server.connections
                    if c.transport is not None and c.transport.get_extra_info("peername") == sock.getsockname()]
            if conn and http_api.StoppingConnections.idle(conn[0]):
                break
            assert loop.time() < deadline, "the answer was never written"
            got += await asyncio.wait_for(loop.sock_recv(sock, 4096), ANSWER_WITHIN)  # (what the node holds back)
        [served] = conn
        conns.sweep()
        conns.sweep()
        assert served in conns.retired(), "settled: the client read nothing, so its window is full"
        conns.sweep()  # the second sweep after its retirement: cut
        assert served not in conns.retired()
        while served in server.connections:  # (connection_lost comes on a later turn)
            assert loop.time() < deadline, "the connection was never cut"
            await asyncio.sleep(0.01)
        while chunk := await asyncio.wait_for(loop.sock_recv(sock, 65536), ANSWER_WITHIN):
            got += chunk
    finally:
        sock.close()
    head, _, rest = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert rest.startswith(value.encode()), (len(got), got[-300:])
    answer = rest[len(value):]
    assert answer.startswith(b"HTTP/1.1 408 ") and http_api.IDLE_NOT_READ.encode() in answer, answer


class _Transport:
    """A transport whose client sent its FIN (closing) but reads nothing: bytes stay queued."""

    def __init__(self) -> None:
        self.aborted = False
        self.closed = False

    def is_closing(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return 0 if self.aborted else 65536

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.closed = True


class _Conn:
    """A connection serving nothing (no waiter: not idle, so no sweep retires it anew)."""

    _waiter = None


class _Server:
    def __init__(self) -> None:
        self.connections: list[object] = []


async def test_a_retired_connection_closing_with_bytes_unsent_is_cut_at_the_second_sweep() -> None:
    """A retired connection whose client closed its side but reads nothing (asyncio's buffer
    still holds bytes for it, so the transport's close waits for good) is cut at the second
    sweep like any retired connection not delivered: it was dropped from the sweep's watch
    as soon as it was closing, and held its descriptor as long as the client did."""
    server = _Server()
    conns = http_api.IdleConnections(server, 75.0)  # type: ignore[arg-type]
    conn, transport = _Conn(), _Transport()
    server.connections.append(conn)
    conns._retired[conn] = (transport, 0)
    conns._sweeps = 0
    conns.sweep()
    assert not transport.aborted and conn in conns.retired()
    conns.sweep()
    assert transport.aborted and not transport.closed
    assert conn not in conns.retired()
