"""A body over ``max_body``: a declared one (its ``Content-Length``) is answered 413 before it
is read, with no ``100 Continue``; the rest of any body left unread by an answer (that 413,
a chunked body found too large, a 415) is read and dropped in a bounded way
(``_answer_then_drop_body``): within a leader's body deadline and up to twice ``max_body``,
then the connection is closed. Left to aiohttp's lingering read (10 s, no byte bound), a
client sending a slightly oversized body at a rate a leader takes, then reading, got a
broken pipe, and one request made the node read and drop data at line rate for 10 s."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time

import pytest

from openraft_py.kv import http_api
from openraft_py.kv.http_api import BODY_MIN_RATE
from openraft_py.kv.node import SHUTDOWN_GRACE, KvNode

from .raw_http import ANSWER_WITHIN, budget, http_addr, read_answer, slow_put_then_read

pytestmark = pytest.mark.timeout(60)

LINGER = 0.3
"""aiohttp's lingering time (10 s by default) the slow-body test gives the node, to be fast:
the body arrives over several times this."""






@pytest.mark.parametrize("method, path", [("PUT", "/kv/big"), ("POST", "/kv/big/cas"), ("POST", "/cluster/init"),
                                          ("POST", "/cluster/members"), ("GET", "/cluster/status")])
@pytest.mark.parametrize("expect", [False, True])
async def test_a_declared_body_over_max_body_is_refused_before_it_is_sent(leader: KvNode, method: str, path: str,
                                                                          expect: bool) -> None:
    """The head alone of a request declaring a body of ``max_body + 1`` bytes: 413 at once,
    the limit named, no ``100 Continue`` to an ``Expect`` (which would make the client send
    the body), no room taken in the body budget. Before, the leader took room for the body
    and answered only once ``max_body`` bytes of it had come (``100 Continue`` first to an
    ``Expect``); a route that reads no body answered as if there were none, its body left to
    aiohttp."""
    size = leader.opts.max_body + 1
    expect_line = "Expect: 100-continue\r\n" if expect else ""
    reader, writer = await asyncio.open_connection(*http_addr(leader))
    try:
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: {leader.opts.http_addr}\r\nContent-Length: {size}\r\n"
                     f"{expect_line}\r\n".encode())
        await writer.drain()
        status, headers, body = await read_answer(reader)
    finally:
        writer.close()
    assert status == 413, (status, body)
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert f"over {leader.opts.max_body} bytes" in error and "--max-body" in error, error
    assert budget(leader).peak == 0


@pytest.mark.parametrize("chunked", [False, True])
async def test_the_connection_serves_on_after_an_oversized_body_is_dropped(leader: KvNode, chunked: bool) -> None:
    """A body half again over ``max_body`` sent whole after its head (with a
    ``Content-Length``, or chunked: refused once ``max_body`` bytes of it have come), then
    another request on the connection: the 413, then that request's answer. Nothing was
    written."""
    size = leader.opts.max_body + leader.opts.max_body // 2
    head = f"PUT /kv/big HTTP/1.1\r\nHost: {leader.opts.http_addr}\r\n"
    if chunked:
        request = (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (size, b"v" * size)
    else:
        request = (head + f"Content-Length: {size}\r\n\r\n").encode() + b"v" * size
    reader, writer = await asyncio.open_connection(*http_addr(leader))
    try:
        writer.write(request)
        writer.write(f"GET /kv/big?consistency=local HTTP/1.1\r\nHost: {leader.opts.http_addr}\r\n\r\n".encode())
        await writer.drain()
        status, _headers, body = await read_answer(reader)
        assert status == 413, body
        assert f"over {leader.opts.max_body} bytes" in json.loads(body)["error"], body
        status, _headers, body = await read_answer(reader)
        assert status == 404, body
    finally:
        writer.close()



async def test_a_client_sending_an_oversized_body_slowly_gets_the_413(leader: KvNode) -> None:
    """A client that sends a body half again over ``max_body`` at a rate a leader takes
    (``BODY_MIN_RATE``), and reads the answer once its body is sent, gets the 413. Before,
    the leader answered once ``max_body`` bytes had come, then left the rest to aiohttp's
    lingering read (10 s, here ``LINGER``) and closed the connection under the client still
    sending: a broken pipe, the 413 never read."""
    leader._http.server._kwargs["lingering_time"] = LINGER  # type: ignore[union-attr]  # connections from now on
    size = leader.opts.max_body + leader.opts.max_body // 2
    over = 10 * LINGER  # (its last third alone takes three times LINGER)
    assert size / over >= BODY_MIN_RATE  # a pace a leader reads
    answer = await asyncio.get_running_loop().run_in_executor(None, slow_put_then_read, leader.opts.http_addr,
                                                              size, over)
    assert answer.startswith(b"HTTP/1.1 413 "), answer


def _send_until_cut(addr: str, head: bytes, chunked: bool, most: int) -> int:
    """``head``, then body bytes sent as fast as the connection takes them (as chunks of a
    chunked body with ``chunked``), ``most`` at the most, the answer not read: how many
    were sent before the node closed the connection (``most``: it never did)."""
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=ANSWER_WITHIN) as s:
        s.sendall(head)
        data = b"h" * 65536
        chunk = b"%x\r\n%s\r\n" % (len(data), data) if chunked else data
        sent = 0
        try:
            while sent < most:
                s.sendall(chunk)
                sent += len(data)
        except OSError:
            pass
        return sent


@pytest.mark.parametrize("framing", [
    "Content-Length: 1000000000000\r\n",  # the 413 from the header
    "Transfer-Encoding: chunked\r\n",  # the 413 once max_body bytes of it have come
    "Transfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n",  # a 415, before it is read
    "Content-Length: 1000000000000\r\nContent-Encoding: gzip\r\n",
])
async def test_a_refused_body_is_dropped_up_to_a_bound(leader: KvNode, framing: str) -> None:
    """A PUT whose body is far over ``max_body``, sent as fast as it goes: the node reads and
    drops at most twice ``max_body`` bytes of it, then closes the connection (what the client
    got through is that plus the sockets' buffers). Before, aiohttp's lingering read dropped
    whatever came for 10 s: one request kept the node reading at line rate."""
    max_body = leader.opts.max_body
    head = f"PUT /kv/huge HTTP/1.1\r\nHost: {leader.opts.http_addr}\r\n{framing}\r\n".encode()
    sent = await asyncio.get_running_loop().run_in_executor(None, _send_until_cut, leader.opts.http_addr, head,
                                                            "chunked" in framing, 64 * max_body)
    assert sent < 32 * max_body, sent


async def test_a_huge_declared_length_buys_no_time_to_trickle_after_the_413(leader: KvNode,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A client declaring a body of 10**18 bytes that trickles it after the 413: the node
    closes the connection once the drop's deadline passed, the length counted at most at
    twice ``max_body`` (the test's rate is 1 GiB/s: 10**18 bytes would have given it 30
    years, and the connection stayed open as long as the client sent)."""
    monkeypatch.setattr(http_api, "BODY_GRACE", 0.5)
    monkeypatch.setattr(http_api, "BODY_MIN_RATE", 1024 * 1024 * 1024)
    reader, writer = await asyncio.open_connection(*http_addr(leader))
    try:
        writer.write(f"PUT /kv/slow HTTP/1.1\r\nHost: {leader.opts.http_addr}\r\nContent-Length: {10**18}\r\n\r\n"
                     .encode())
        await writer.drain()
        status, _headers, body = await read_answer(reader)
        assert status == 413, body

        async def trickle_until_closed() -> None:
            while not reader.at_eof():
                writer.write(b"t")
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(reader.read(1), 0.05)  # (EOF once the node closed it)

        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(trickle_until_closed(), ANSWER_WITHIN)
    finally:
        writer.close()


@pytest.mark.parametrize(("header", "status"), [("Content-Encoding: gzip", 415),
                                                ("Transfer-Encoding: gzip, chunked", 501)])
async def test_a_refused_coding_gets_no_100_continue(leader: KvNode, header: str, status: int) -> None:
    """A request the node refuses whatever its route (a compressed body: 415; a transfer
    coding it does not take: 501) with ``Expect: 100-continue``: the refusal at once, no
    ``100 Continue`` first (which would make the client send the body only to have it
    dropped)."""
    reader, writer = await asyncio.open_connection(*http_addr(leader))
    try:
        length = "" if header.startswith("Transfer") else "Content-Length: 100\r\n"
        writer.write(f"PUT /kv/k HTTP/1.1\r\nHost: {leader.opts.http_addr}\r\n{header}\r\n{length}"
                     "Expect: 100-continue\r\n\r\n".encode())
        await writer.drain()
        got, _headers, body = await read_answer(reader)
    finally:
        writer.close()
    assert got == status, (got, body)


async def test_a_stop_does_not_wait_for_a_body_being_dropped(leader: KvNode) -> None:
    """A client that got its 413 and sends the rest of its body slowly (here: not at all)
    while the node stops: the drop ends as the stop begins, the connection gets the
    stopping node's 408 (a request the client sends on it next was not read) and is closed,
    and ``stop()`` returns without waiting for the body. Before, the HTTP server's shutdown
    waited ``SHUTDOWN_GRACE`` for the drop (which counts as no request in flight), then
    cancelled it: every stop with such a client took that much longer."""
    reader, writer = await asyncio.open_connection(*http_addr(leader))
    try:
        writer.write(f"PUT /kv/big HTTP/1.1\r\nHost: {leader.opts.http_addr}\r\n"
                     f"Content-Length: {leader.opts.max_body + 1}\r\n\r\nsome".encode())
        await writer.drain()
        status, _headers, body = await read_answer(reader)
        assert status == 413, body
        t0 = time.monotonic()
        await asyncio.wait_for(leader.stop(), 2 * SHUTDOWN_GRACE)
        took = time.monotonic() - t0
        status, headers, _ = await read_answer(reader)
        assert status == 408 and headers["connection"].lower() == "close"
        assert await asyncio.wait_for(reader.read(), ANSWER_WITHIN) == b""  # closed by the node
    finally:
        writer.close()
    assert took < SHUTDOWN_GRACE, took


async def test_a_stopping_node_does_not_wait_for_the_body_of_a_request_it_does_not_read(leader: KvNode) -> None:
    """A PUT on an open, idle connection while the node stops (its head and part of its body,
    then nothing more) gets the stopping node's 408 at once: the node reads no request on
    that connection any more, drops what comes, and the stop returns without waiting for the
    body, closing the connection. Before, aiohttp's lingering read held the connection after
    the answer (then a 503), and the HTTP server's shutdown waited ``SHUTDOWN_GRACE`` for
    it."""
    reader, writer = await asyncio.open_connection(*http_addr(leader))
    try:
        writer.write(f"GET /cluster/status HTTP/1.1\r\nHost: {leader.opts.http_addr}\r\n\r\n".encode())
        await writer.drain()
        status, _headers, body = await read_answer(reader)
        assert status == 200, body
        t0 = time.monotonic()
        stop = asyncio.ensure_future(leader.stop())

        async def stop_began() -> None:
            while leader.accepting:
                await asyncio.sleep(0)

        await asyncio.wait_for(stop_began(), ANSWER_WITHIN)
        writer.write(f"PUT /kv/k HTTP/1.1\r\nHost: {leader.opts.http_addr}\r\n"
                     f"Content-Length: {leader.opts.max_body}\r\n\r\nsome".encode())
        await writer.drain()
        status, headers, body = await read_answer(reader)
        assert status == 408, body
        assert headers["connection"].lower() == "close"
        await asyncio.wait_for(stop, 2 * SHUTDOWN_GRACE)
        took = time.monotonic() - t0
        assert await asyncio.wait_for(reader.read(), ANSWER_WITHIN) == b""  # closed by the node
    finally:
        writer.close()
    assert took < SHUTDOWN_GRACE, took


@pytest.mark.parametrize("method, path, route", [("PUT", "/kv/k", "/kv/{key}"),
                                                 ("GET", "/cluster/status", "/cluster/status")])
async def test_an_unknown_expectation_gets_a_counted_json_417(leader: KvNode, method: str, path: str,
                                                              route: str) -> None:
    """An ``Expect`` other than ``100-continue``: 417 with the API's JSON ``error``, counted in
    ``openraft_kv_http_requests_total``, its body (if any) dropped, and the connection serves
    the next request. Before, aiohttp's ``Expect`` handler answered it in plain text ("Unknown
    Expect: ..."), before the middleware: no JSON and not counted."""
    reader, writer = await asyncio.open_connection(*http_addr(leader))
    try:
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: {leader.opts.http_addr}\r\nExpect: something-else\r\n"
                     "Content-Length: 5\r\n\r\nvalue".encode())
        writer.write(f"GET /cluster/status HTTP/1.1\r\nHost: {leader.opts.http_addr}\r\n\r\n".encode())
        await writer.drain()
        status, _headers, body = await read_answer(reader)
        assert status == 417, body
        assert "something-else" in json.loads(body)["error"]
        status, _headers, body = await read_answer(reader)
        assert status == 200, body
    finally:
        writer.close()
    counted = [line for line in leader.metrics.render().decode().splitlines()
               if line.startswith("openraft_kv_http_requests_total{") and 'status="417"' in line]
    assert counted == [f'openraft_kv_http_requests_total{{method="{method}",route="{route}",status="417"}} 1.0'], counted


@pytest.mark.parametrize("method, path, status", [("PUT", "/nowhere", 404), ("PUT", "/kv/k/extra", 404),
                                                  ("POST", "/kv/k", 405), ("PUT", "/cluster/status", 405)])
async def test_an_unknown_route_gets_no_100_continue(leader: KvNode, method: str, path: str, status: int) -> None:
    """A request with ``Expect: 100-continue`` for a path the API does not have (404) or a
    method its path does not take (405): the JSON error at once, no ``100 Continue`` first
    (which would make the client send a body only to have it dropped), no room taken in the
    body budget; the connection then serves the next request. Before, aiohttp's own
    ``Expect`` handler of an unmatched request sent ``100 Continue`` ahead of the error."""
    reader, writer = await asyncio.open_connection(*http_addr(leader))
    try:
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: {leader.opts.http_addr}\r\nContent-Length: 5\r\n"
                     "Expect: 100-continue\r\n\r\n".encode())
        await writer.drain()
        got, headers, body = await read_answer(reader)
        assert got == status, (got, body)
        assert "error" in json.loads(body)
        if status == 405:
            assert headers["allow"], headers
        writer.write(f"valueGET /cluster/status HTTP/1.1\r\nHost: {leader.opts.http_addr}\r\n\r\n".encode())
        await writer.drain()
        got, _headers, body = await read_answer(reader)
        assert got == 200, (got, body)
    finally:
        writer.close()
    assert budget(leader).peak == 0
    counted = [line for line in leader.metrics.render().decode().splitlines()
               if line.startswith("openraft_kv_http_requests_total{") and f'status="{status}"' in line]
    assert counted == [f'openraft_kv_http_requests_total{{method="{method}",route="unmatched",status="{status}"}} 1.0'], counted


async def test_an_unknown_route_with_an_unknown_expectation_gets_a_json_417(leader: KvNode) -> None:
    """An ``Expect`` other than ``100-continue`` on a path the API does not have: the JSON 417
    of every route, counted. aiohttp's handler of unmatched requests answered it in plain
    text ("Unknown Expect: ..."), before the middleware."""
    reader, writer = await asyncio.open_connection(*http_addr(leader))
    try:
        writer.write(f"PUT /nowhere HTTP/1.1\r\nHost: {leader.opts.http_addr}\r\nExpect: something-else\r\n"
                     "Content-Length: 5\r\n\r\nvalue".encode())
        await writer.drain()
        status, _headers, body = await read_answer(reader)
    finally:
        writer.close()
    assert status == 417, body
    assert "something-else" in json.loads(body)["error"]
