"""A graceful stop against clients that do what a well-behaved one does not: pipelined
requests, a request head half sent when the stop begins, hundreds of idle connections, a
client that never reads its answer, a body stalled in flight, a client that resets. Each
request is either answered, or provably not read (the stopping node's 408, or the close
announced by the answer before it: RFC 9112 §9.6), and the stop waits for no client beyond
``SHUTDOWN_GRACE`` (plus ``HTTP_SHUTDOWN_WAIT`` twice, aiohttp's own shutdown of what is
left); ``http_api.StoppingConnections`` relies on aiohttp internals that are checked here."""

from __future__ import annotations

import asyncio
import collections
import socket
import struct
import time

import aiohttp
import pytest

from openraft_py.kv.http_api import StoppingConnections
from openraft_py.kv.node import HTTP_SHUTDOWN_WAIT, SHUTDOWN_GRACE, KvNode

from .raw_http import ANSWER_WITHIN, http_addr, read_answer

pytestmark = pytest.mark.timeout(90)

STOP_BOUND = SHUTDOWN_GRACE + 2 * HTTP_SHUTDOWN_WAIT + 1.0
"""Seconds a stop may take with a client stuck in a request (the grace, aiohttp's shutdown
of the rest, and a second for a loaded machine)."""



def puts_answered(node: KvNode) -> float:
    """How many PUTs ``node`` has handled (answered, whatever the status)."""
    return sum(s.value for m in node.metrics.http_requests.collect() for s in m.samples
               if s.name.endswith("_total") and s.labels.get("method") == "PUT")


def gets_answered(node: KvNode) -> float:
    """How many ``GET /kv/{key}`` ``node`` has handled."""
    return sum(s.value for m in node.metrics.http_requests.collect() for s in m.samples
               if s.name.endswith("_total") and s.labels.get("method") == "GET" and s.labels.get("route") == "/kv/{key}")


async def kept_alive(node: KvNode) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to ``node`` that served one request and is kept alive (idle)."""
    reader, writer = await asyncio.open_connection(*http_addr(node))
    writer.write(f"GET /cluster/status HTTP/1.1\r\nHost: {node.opts.http_addr}\r\n\r\n".encode())
    await writer.drain()
    status, headers, _ = await read_answer(reader)
    assert status == 200 and headers.get("connection", "").lower() != "close"
    return reader, writer


async def stop_began(node: KvNode) -> None:
    """Until ``node``'s stop has begun."""
    async def wait() -> None:
        while node.accepting:
            await asyncio.sleep(0)

    await asyncio.wait_for(wait(), ANSWER_WITHIN)


async def test_a_request_pipelined_behind_one_in_flight_is_not_processed(leader: KvNode) -> None:
    """A PUT in flight (its body half sent) as the stop begins, then the rest of its body and
    a second PUT pipelined behind it in one write: the first is answered with ``Connection:
    close``, the connection then closes, and the second is never handled (RFC 9112 §9.6: the
    client may take it as not processed, and resend it)."""
    reader, writer = await kept_alive(leader)
    host = leader.opts.http_addr
    before = puts_answered(leader)
    try:
        writer.write(f"PUT /kv/first HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n\r\na".encode())
        await writer.drain()
        await until_in_flight(leader)
        stop = asyncio.ensure_future(leader.stop())
        await stop_began(leader)
        writer.write(f"b\r\nPUT /kv/second HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1\r\n\r\nv".encode())
        await writer.drain()
        status, headers, _ = await read_answer(reader)
        rest = await asyncio.wait_for(reader.read(), ANSWER_WITHIN)
        await asyncio.wait_for(stop, 2 * STOP_BOUND)
    finally:
        writer.close()
    assert status == 200 and headers["connection"].lower() == "close", (status, headers)
    assert rest == b""
    assert puts_answered(leader) - before == 1


async def until_in_flight(node: KvNode) -> None:
    """Until ``node`` counts a request in flight."""
    async def wait() -> None:
        while node.inflight == 0:
            await asyncio.sleep(0.005)

    await asyncio.wait_for(wait(), ANSWER_WITHIN)


@pytest.mark.parametrize("fresh", [False, True], ids=["kept-alive", "fresh"])
async def test_a_head_half_sent_when_the_stop_begins_is_answered_408_and_never_read(leader: KvNode,
                                                                                 fresh: bool) -> None:
    """Part of a PUT's head on an otherwise idle connection (kept alive, or new) as the stop
    begins: the connection is idle (no request was parsed), so it gets the 408 at once, and
    the rest of the request, sent after, is dropped: no PUT is handled, and the stop does
    not wait for the client."""
    host = leader.opts.http_addr
    before = puts_answered(leader)
    reader, writer = await (asyncio.open_connection(*http_addr(leader)) if fresh else kept_alive(leader))
    try:
        writer.write(f"PUT /kv/half HTTP/1.1\r\nHost: {host}\r\nContent-Le".encode())
        await writer.drain()
        t0 = time.monotonic()
        stop = asyncio.ensure_future(leader.stop())
        status, headers, _ = await read_answer(reader)
        writer.write(b"ngth: 1\r\n\r\nv")
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), ANSWER_WITHIN)
        await asyncio.wait_for(stop, 2 * STOP_BOUND)
        took = time.monotonic() - t0
    finally:
        writer.close()
    assert status == 408 and headers["connection"].lower() == "close" and rest == b""
    assert puts_answered(leader) == before
    assert took < SHUTDOWN_GRACE, took


async def test_hundreds_of_idle_connections_each_get_the_408_and_the_stop_does_not_wait(leader: KvNode) -> None:
    """300 kept-alive connections, idle through the stop: it ends within the grace, and a
    PUT each sends afterwards reads the 408."""
    conns = [await kept_alive(leader) for _ in range(300)]
    try:
        took = await timed_stop(leader, 2 * STOP_BOUND)
        for _, writer in conns:
            writer.write(b"PUT /kv/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nv")
        statuses = collections.Counter([(await read_answer(reader))[0] for reader, _ in conns])
    finally:
        for _, writer in conns:
            writer.close()
    assert statuses == {408: 300}, statuses
    assert took < SHUTDOWN_GRACE, took


async def test_a_client_that_never_reads_its_answers_delays_the_stop_by_the_grace_only(leader: KvNode) -> None:
    """A client that sends three GETs of a 900 kB value and reads nothing (its receive
    window full, the handler blocked writing): the stop ends within ``STOP_BOUND``. Before,
    the HTTP server's shutdown waited ``SHUTDOWN_GRACE`` twice more after the drain's
    (``shutdown_timeout=SHUTDOWN_GRACE``: a wait for the handler, another after cancelling
    it): 9 s."""
    host, port = http_addr(leader)
    async with aiohttp.ClientSession() as s, s.put(f"http://{leader.opts.http_addr}/kv/big",
                                                   data=b"x" * 900_000) as r:
        assert r.status == 200, await r.text()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    try:
        sock.connect((host, port))
        sock.sendall(f"GET /kv/big HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode() * 3)
        await until_answer_blocked(leader)
        took = await timed_stop(leader, 4 * STOP_BOUND)
    finally:
        sock.close()
    assert took < STOP_BOUND, took


async def timed_stop(node: KvNode, bound: float) -> float:
    """Seconds ``node.stop()`` took; fails the test past ``bound`` (a hang, not a slow stop:
    callers assert their own, tighter, limit on the figure)."""
    t0 = time.monotonic()
    await asyncio.wait_for(node.stop(), bound)
    return time.monotonic() - t0


async def until_answer_blocked(node: KvNode) -> None:
    """Until an answer of ``node`` waits for its client to read (its connection's write
    buffer over the high-water mark: the handler waits to write the rest)."""
    assert node._http is not None and node._http.server is not None
    server = node._http.server

    def blocked() -> bool:
        return any(c.transport is not None
                   and c.transport.get_write_buffer_size() > c.transport.get_write_buffer_limits()[1]
                   for c in server.connections)

    async def wait() -> None:
        while not blocked():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(wait(), ANSWER_WITHIN)


@pytest.mark.parametrize("head", ["Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n",
                                  "Content-Length: 1\r\nExpect: 100-continue\r\n\r\n"],
                         ids=["chunked", "expect-100"])
async def test_a_body_stalled_in_flight_delays_the_stop_by_the_grace_only(leader: KvNode, head: str) -> None:
    """A PUT whose body stalls (a chunk sent, then nothing; or ``Expect: 100-continue``
    answered, then no body) as the stop begins: the stop ends within ``STOP_BOUND``.
    Before: 6 s (the drain's grace, then the HTTP server's shutdown waited as long again)."""
    reader, writer = await kept_alive(leader)
    try:
        writer.write(f"PUT /kv/slow HTTP/1.1\r\nHost: {leader.opts.http_addr}\r\n{head}".encode())
        await writer.drain()
        await until_in_flight(leader)
        took = await timed_stop(leader, 4 * STOP_BOUND)
    finally:
        writer.close()
    assert took < STOP_BOUND, took


async def test_a_client_resetting_its_retired_connection_does_not_hold_the_stop(leader: KvNode) -> None:
    """A kept-alive connection the stop retires (the 408 sent), then reset by its client
    (``SO_LINGER`` 0): the stop ends within the grace."""
    host, port = http_addr(leader)
    sock = socket.create_connection((host, port), timeout=ANSWER_WITHIN)
    try:
        sock.sendall(f"GET /cluster/status HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        assert (await asyncio.to_thread(sock.recv, 4096)).startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        stop = asyncio.ensure_future(leader.stop())
        assert (await asyncio.to_thread(sock.recv, 4096)).startswith(b"HTTP/1.1 408")
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    await asyncio.wait_for(stop, 2 * STOP_BOUND)
    assert time.monotonic() - t0 < SHUTDOWN_GRACE


def test_the_aiohttp_internals_a_stop_reads_exist() -> None:
    """``StoppingConnections.idle`` reads ``RequestHandler._waiter``, ``_messages``,
    ``_force_close`` and ``_close`` (how aiohttp's own keep-alive timer tells an idle
    connection): an aiohttp that renamed one fails here."""
    from aiohttp.web_protocol import RequestHandler

    slots = {name for cls in RequestHandler.__mro__ for name in getattr(cls, "__slots__", ())}
    missing = {"_waiter", "_messages", "_force_close", "_close", "transport"} - slots
    assert not missing, missing


def test_a_connection_lacking_an_aiohttp_internal_fails_loudly() -> None:
    """A connection without one of those internals raises (the stop logs it at ERROR),
    rather than passing for busy: then no idle connection was ever retired, and every stop
    waited the whole grace, then closed the kept-alive connections under their clients."""

    class Lacking:  # an aiohttp RequestHandler whose _waiter was renamed
        def __init__(self) -> None:
            self.transport = object()
            self._messages: collections.deque[object] = collections.deque()
            self._force_close = False
            self._close = False

    with pytest.raises(AttributeError):
        StoppingConnections.idle(Lacking())


async def test_a_request_sent_after_a_body_the_stop_stopped_dropping_is_answered_408(leader: KvNode) -> None:
    """A client that got its 413 before its body was read (kept alive: the node reads and
    drops the rest, ``http_api._answer_then_drop_body``), then is starved across the whole
    stop, then sends the rest of its body and its next request on the connection it kept
    (as ``http.client`` does: all of it, then it reads): it reads the stopping node's 408
    (nothing was read), not a connection closed under the request. Before, the stop cut the
    drop by closing the connection, with no answer: for a write, an unknown outcome."""
    host, port = http_addr(leader)
    size = leader.opts.max_body + 1
    before = puts_answered(leader)
    sock = socket.create_connection((host, port), timeout=ANSWER_WITHIN)
    try:
        sock.sendall(f"PUT /kv/big HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {size}\r\n\r\nsome".encode())
        first = await asyncio.to_thread(sock.recv, 4096)
        assert first.startswith(b"HTTP/1.1 413") and b"Connection: close" not in first, first
        took = await timed_stop(leader, 2 * STOP_BOUND)

        def rest_then_read() -> bytes:
            # the client wakes up only now: the rest of its body, then its next request
            try:
                sock.sendall(b"x" * (size - 4) + f"PUT /kv/next HTTP/1.1\r\nHost: {host}:{port}\r\n"
                             "Content-Length: 1\r\n\r\nv".encode())
            except OSError:
                pass  # the node closed the connection: what it wrote before is still read
            got = b""
            try:
                while chunk := sock.recv(4096):
                    got += chunk
            except OSError:
                pass
            return got

        answer = await asyncio.to_thread(rest_then_read)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408") and b"Connection: close" in answer, answer
    assert puts_answered(leader) - before == 1  # (the 413 only)
    assert took < SHUTDOWN_GRACE, took


async def test_an_idle_client_with_its_window_full_holds_the_stop_the_grace_only_and_reads_the_408(
        leader: KvNode) -> None:
    """A client that asked for a 900 kB value and reads nothing: its answer fits the
    kernels' buffers, so its connection is idle, and it is retired, but its 408 cannot be
    acknowledged (the client's window is full). The stop waits for it ``SHUTDOWN_GRACE`` at
    most, and the client, reading at last, gets its answer, then the 408."""
    host, port = http_addr(leader)
    async with aiohttp.ClientSession() as s, s.put(f"http://{leader.opts.http_addr}/kv/big",
                                                   data=b"x" * 900_000) as r:
        assert r.status == 200, await r.text()
    assert leader._http is not None and leader._http.server is not None
    server = leader._http.server
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    try:
        sock.settimeout(ANSWER_WITHIN)
        sock.connect((host, port))
        sock.sendall(f"GET /kv/big HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())

        async def answer_buffered() -> None:  # (the GET answered, its connection idle)
            while not (gets_answered(leader) and any(
                    StoppingConnections.idle(c) and c.transport is not None
                    and not c.transport.get_write_buffer_size() for c in server.connections)):
                await asyncio.sleep(0.005)

        await asyncio.wait_for(answer_buffered(), ANSWER_WITHIN)
        took = await timed_stop(leader, 4 * STOP_BOUND)

        def read_all() -> bytes:
            got = b""
            while chunk := sock.recv(65536):
                got += chunk
            return got

        got = await asyncio.to_thread(read_all)
    finally:
        sock.close()
    assert took < STOP_BOUND, took
    assert got.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 408" in got[-600:], (got[:100], got[-600:])
