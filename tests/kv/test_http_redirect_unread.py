"""A follower answers a write with a body (PUT, cas, the admin POSTs) with the redirect
rule's 307 before it reads the body: a client sending a large value to a follower does not
upload it twice, the follower holds none of it, and the connection stays usable."""

from __future__ import annotations

import asyncio
import socket

import pytest

from openraft_py.kv.client import KvClient, Outcome
from openraft_py.kv.http_api import BODY_MIN_RATE

from .kv_helpers import KvCluster, url
from .raw_http import ANSWER_WITHIN, budget, http_addr, read_answer, slow_put_then_read

pytestmark = pytest.mark.timeout(60)





async def test_a_follower_redirects_a_large_put_before_its_body_comes(cluster: KvCluster) -> None:
    """The head of a PUT whose body (``max_body`` bytes) is not sent yet: the 307 comes at
    once. The client then sends the body anyway (as ``http.client`` does): the follower
    drops it, and answers the next request on the same connection. The follower took no
    room for the body (``BodyBudget``). Before, the follower read the whole body before it
    answered: no 307 until the body came."""
    leader = await cluster.wait_leader()
    f = cluster.followers(leader)[0]
    size = f.opts.max_body
    reader, writer = await asyncio.open_connection(*http_addr(f))
    try:
        writer.write(f"PUT /kv/big HTTP/1.1\r\nHost: {f.opts.http_addr}\r\nContent-Length: {size}\r\n\r\n".encode())
        await writer.drain()
        status, headers, body = await read_answer(reader)
        assert status == 307, body
        assert headers["location"] == url(leader, "/kv/big")
        assert headers.get("connection", "").lower() != "close"
        writer.write(b"v" * size)  # sent anyway: read and dropped
        writer.write(f"GET /cluster/status HTTP/1.1\r\nHost: {f.opts.http_addr}\r\n\r\n".encode())
        await writer.drain()
        status, _headers, body = await read_answer(reader)
        assert status == 200, body
    finally:
        writer.close()
    assert budget(f).peak == 0
    assert "big" not in leader.sm.data  # type: ignore[union-attr]


async def test_a_follower_answers_expect_100_continue_with_the_redirect(cluster: KvCluster) -> None:
    """A PUT with ``Expect: 100-continue`` (curl's way for a body over 1 MiB) to a follower:
    no ``100 Continue`` (which would make the client send the body), the 307 instead. A
    client that sends the body anyway (RFC 9110 allows it) has it dropped, and its next
    request on the connection answered. Before, aiohttp answered 100 and the follower
    waited for the body."""
    leader = await cluster.wait_leader()
    f = cluster.followers(leader)[0]
    size = f.opts.max_body
    reader, writer = await asyncio.open_connection(*http_addr(f))
    try:
        writer.write(f"PUT /kv/big HTTP/1.1\r\nHost: {f.opts.http_addr}\r\nContent-Length: {size}\r\n"
                     "Expect: 100-continue\r\n\r\n".encode())
        await writer.drain()
        status, headers, body = await read_answer(reader)
        assert status == 307, (status, body)
        assert headers["location"] == url(leader, "/kv/big")
        writer.write(b"v" * size)
        writer.write(f"GET /cluster/status HTTP/1.1\r\nHost: {f.opts.http_addr}\r\n\r\n".encode())
        await writer.drain()
        status, _headers, body = await read_answer(reader)
        assert status == 200, body
    finally:
        writer.close()
    assert budget(f).peak == 0


async def test_a_leader_still_answers_100_continue(cluster: KvCluster) -> None:
    """The leader answers ``Expect: 100-continue`` with ``100 Continue``, reads the body and
    writes it (the ``Expect`` handler defers to aiohttp's own there)."""
    leader = await cluster.wait_leader()
    reader, writer = await asyncio.open_connection(*http_addr(leader))
    try:
        writer.write(f"PUT /kv/small HTTP/1.1\r\nHost: {leader.opts.http_addr}\r\nContent-Length: 3\r\n"
                     "Expect: 100-continue\r\n\r\n".encode())
        await writer.drain()
        status, _headers, _body = await read_answer(reader)
        assert status == 100
        writer.write(b"abc")
        await writer.drain()
        status, _headers, body = await read_answer(reader)
        assert status == 200, body
    finally:
        writer.close()
    assert leader.sm.data["small"] == "abc"  # type: ignore[union-attr]


@pytest.mark.parametrize("path, body", [
    ("/kv/k/cas", b'{"expected": null, "value": "x"}'),
    ("/cluster/members", b'{"voters": [1, 2, 3]}'),
    ("/cluster/transfer", b'{"to": 1}'),
    ("/cluster/learners", b'{"id": 9, "raft_addr": "127.0.0.1:1", "http_addr": "127.0.0.1:2"}'),
])
async def test_a_follower_redirects_every_leader_only_post_before_its_body(cluster: KvCluster, path: str,
                                                                            body: bytes) -> None:
    """The head alone of each POST only the leader serves: the 307 comes at once."""
    leader = await cluster.wait_leader()
    f = cluster.followers(leader)[0]
    reader, writer = await asyncio.open_connection(*http_addr(f))
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {f.opts.http_addr}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode())
        await writer.drain()
        status, headers, answer = await read_answer(reader)
        assert status == 307, answer
        assert headers["location"] == url(leader, path)
    finally:
        writer.close()


async def test_the_client_writes_a_large_value_through_a_follower(cluster: KvCluster) -> None:
    """``KvClient`` sending a value of ``max_body`` bytes to a follower: written on the
    leader after one redirect, the follower holding none of it (no room taken for it)."""
    leader = await cluster.wait_leader()
    f = cluster.followers(leader)[0]
    value = "w" * f.opts.max_body
    async with KvClient([f.opts.http_addr], deadline=20) as client:
        r = await client.put("large", value)
        assert r.outcome is Outcome.OK and r.redirects == 1, r
        r = await client.put("after", "x")  # the next call goes to the leader it learned
        assert r.outcome is Outcome.OK and r.redirects == 0, r
    assert budget(f).peak == 0
    assert leader.sm.data["large"] == value  # type: ignore[union-attr]


LINGER = 0.3
"""aiohttp's lingering time (10 s by default) the slow-body test gives the follower, to be
fast: the body arrives over several times this."""



async def test_a_follower_waits_for_a_slow_body_it_redirected(cluster: KvCluster) -> None:
    """A client that sends its body at a rate a leader takes (``BODY_MIN_RATE``) and reads
    the answer once its body is sent gets the 307, however long the body takes within the
    leader's deadline. Before, the follower left the unread body to aiohttp's lingering
    (10 s, here ``LINGER``), then closed the connection under the client still sending:
    a broken pipe, the 307 never read."""
    leader = await cluster.wait_leader()
    f = cluster.followers(leader)[0]
    f._http.server._kwargs["lingering_time"] = LINGER  # connections made from now on
    size = 64 * 1024
    over = 4 * LINGER
    assert size / over >= BODY_MIN_RATE  # a pace a leader reads
    answer = await asyncio.get_running_loop().run_in_executor(None, slow_put_then_read, f.opts.http_addr, size, over)
    assert answer.startswith(b"HTTP/1.1 307 "), answer
    assert budget(f).peak == 0


def _send_until_cut(addr: str, length: int, most: int) -> int:
    """The head of a PUT declaring a body of ``length`` bytes, then body bytes sent as fast as
    the connection takes them, ``most`` at the most: how many were sent before the server
    closed the connection (``most``: it never did)."""
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=ANSWER_WITHIN) as s:
        s.sendall(f"PUT /kv/huge HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {length}\r\n\r\n".encode())
        assert s.recv(64).startswith(b"HTTP/1.1 307 ")
        chunk, sent = b"h" * 65536, 0
        try:
            while sent < most:
                s.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        return sent


async def test_a_follower_drops_a_bounded_part_of_a_redirected_body(cluster: KvCluster) -> None:
    """A PUT declaring a body far over ``max_body``, sent to a follower as fast as it goes:
    the follower reads and drops at most twice ``max_body`` bytes after its 307
    (``_drop_limit``), then closes the connection (what the client got through is that plus
    the sockets' buffers). Before,
    aiohttp's lingering read dropped whatever came for 10 s: a client kept a follower
    reading at line rate with one request."""
    leader = await cluster.wait_leader()
    f = cluster.followers(leader)[0]
    max_body = f.opts.max_body
    sent = await asyncio.get_running_loop().run_in_executor(None, _send_until_cut, f.opts.http_addr, 10**12,
                                                            64 * max_body)
    assert sent < 32 * max_body, sent
