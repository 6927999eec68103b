"""The answers a service node holds unsent for clients that do not read them are bounded
(``http_api.MAX_ANSWER_BYTES_WAITING``): a ``GET`` of a large value, while the answers already
waiting in the node's HTTP connections would pass the bound with it, gets 503 with
``Retry-After`` instead of one more copy of the value in memory. Before, a few hundred
connections each sending one ``GET`` of a 1 MB value and reading nothing made a node hold
that value's answer once per connection: 300 of them grew a ``serve`` process from 80 MB to
890 MB (512 connections, the cap, and 4 MiB values, ``--max-body`` raised: gigabytes), for
the 75 s or more until the idle sweep cut them."""

from __future__ import annotations

import asyncio
import socket
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from openraft_py.kv import http_api
from openraft_py.kv.node import KvNode

from .kv_helpers import KvCluster, until_true, url

pytestmark = pytest.mark.timeout(60)

VALUE = 200_000
BUDGET = 1_000_000
PIPELINED = 40  # 8 MB of answers per connection: more than its kernel send buffer holds


@asynccontextmanager
async def _one_node() -> AsyncIterator[tuple[aiohttp.ClientSession, KvNode, list[socket.socket]]]:
    """A one-node cluster's client session and node, with ``tracemalloc`` on, and a list for
    the test's raw sockets: all closed and stopped at the end."""
    c = KvCluster()
    socks: list[socket.socket] = []
    tracemalloc.start()
    try:
        await c.start(1)
        assert c.session is not None
        yield c.session, c.nodes[1], socks
    finally:
        tracemalloc.stop()
        for s in socks:
            s.close()
        await c.close()


def _kept(before: tracemalloc.Snapshot) -> int:
    """The bytes allocated by ``http_api`` since ``before`` and still alive (the answers'
    bodies: ``value.encode()``)."""
    after = tracemalloc.take_snapshot()
    return sum(stat.size_diff for stat in after.compare_to(before, "filename")
               if stat.traceback[0].filename == http_api.__file__)


def _gets_answered(node: KvNode) -> float:
    """The GETs the node answered (``openraft_kv_http_requests``)."""
    return sum(s.value for m in node.metrics.http_requests.collect() for s in m.samples
               if s.name.endswith("_total") and s.labels.get("method") == "GET")


def _reader_that_does_not_read(node: KvNode, path: str) -> socket.socket:
    """A connection that sends ``PIPELINED`` ``GET path`` at once and never reads (a small
    receive window). The node's kernel takes the first answers into the socket's send buffer
    (up to ``tcp_wmem``'s 4 MiB on loopback); the next one waits in the node's process."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", node.http_port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * PIPELINED)
    return s


async def test_large_answers_waiting_for_slow_readers_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """20 connections each ask for a 200 kB value 40 times and read nothing: the values the
    node holds in answers not sent stay within the bound (plus one value), the GETs past it
    are answered 503 with ``Retry-After``, and a small value is still served meanwhile; once
    the slow readers go, nothing is held and the large value is served again."""
    monkeypatch.setattr(http_api, "MAX_ANSWER_BYTES_WAITING", BUDGET)
    async with _one_node() as (session, node, socks):
        async with session.put(url(node, "/kv/big"), data=b"v" * VALUE) as r:
            assert r.status == 200, await r.text()
        async with session.put(url(node, "/kv/small"), data=b"s") as r:
            assert r.status == 200, await r.text()
        before = tracemalloc.take_snapshot()
        for _ in range(20):
            socks.append(_reader_that_does_not_read(node, "/kv/big?consistency=local"))
        # Each connection's kernel buffer fills, then one answer of it waits in the node.
        await until_true("the slow readers' GETs are answered", lambda: _gets_answered(node) >= 40 * 20 // 4,
                         timeout=20)
        await asyncio.sleep(0.5)  # (the last answers written, as far as they go)
        assert _kept(before) <= BUDGET + 2 * VALUE, f"{_kept(before)} bytes of answers kept"
        async with session.get(url(node, "/kv/big?consistency=local")) as r:
            assert r.status == 503, r.status
            assert r.headers.get("Retry-After") == "1"
            assert "waiting for clients to read them" in (await r.json())["error"]
        async with session.get(url(node, "/kv/small?consistency=local")) as r:
            assert (r.status, await r.text()) == (200, "s")
        for s in socks:
            s.close()
        socks.clear()
        assert node._http is not None
        answers = node._http.app[http_api.ANSWERS_KEY]
        await until_true("the slow readers' answers are let go", lambda: answers.held == 0, timeout=20)
        async with session.get(url(node, "/kv/big?consistency=local")) as r:
            assert r.status == 200 and len(await r.read()) == VALUE


def _read_answer(s: socket.socket, size: int) -> bytes:
    """Read one answer with a body of ``size`` bytes from ``s`` (blocking, with a timeout)."""
    s.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < size:
        chunk = s.recv(1 << 16)
        assert chunk, data[:200]
        data += chunk
    return data.split(b"\r\n\r\n", 1)[1]


async def test_an_idle_connection_does_not_keep_the_value_it_was_last_answered() -> None:
    """A client's pool that read a large value and keeps the connection open for its next
    request: aiohttp's connection handler keeps its last response until the next request
    comes, and the response kept the value's bytes: 300 such connections of a 1 MB value held
    300 MB of a ``serve`` process (1 MB each, the kernel holding none of it) until the idle
    sweep closed them, 75 s or more. The answer lets go of its body once it is sent."""
    async with _one_node() as (session, node, socks):
        async with session.put(url(node, "/kv/big"), data=b"v" * VALUE) as r:
            assert r.status == 200, await r.text()
        before = tracemalloc.take_snapshot()
        for _ in range(10):
            s = socket.create_connection(("127.0.0.1", node.http_port))
            s.sendall(b"GET /kv/big?consistency=local HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(s)
            assert await asyncio.to_thread(_read_answer, s, VALUE) == b"v" * VALUE
        kept = _kept(before)
        assert kept < VALUE, f"{kept} bytes allocated by http_api are kept by the 10 idle connections"


async def test_an_idle_connection_does_not_keep_the_value_its_cas_answered() -> None:
    """A ``POST /kv/{key}/cas`` answers the value after the command (``current``): the value
    just written when it succeeds, the one there when it does not. Its answer is as large as
    a ``GET``'s and was kept as one was (aiohttp keeps a connection's last response until its
    next request): 10 idle connections that each last set a 200 kB value by a CAS held 2 MB.
    The answer lets go of its body once it is sent, and is counted among the answers waiting
    (``AnswerBytes``) until then, never refused (the command was done)."""
    async with _one_node() as (session, node, socks):
        body = b'{"expected": null, "value": "' + b"v" * VALUE + b'"}'
        before = tracemalloc.take_snapshot()
        for i in range(10):
            s = socket.create_connection(("127.0.0.1", node.http_port))
            s.sendall(f"POST /kv/big{i}/cas HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            socks.append(s)
            answer = await asyncio.to_thread(_read_answer, s, VALUE + 24)
            assert answer == b'{"ok":true,"current":"' + b"v" * VALUE + b'"}', answer[:100]
        kept = _kept(before)
        assert kept < VALUE, f"{kept} bytes allocated by http_api are kept by the 10 idle connections"
        assert node._http is not None
        assert node._http.app[http_api.ANSWERS_KEY].held == 0
