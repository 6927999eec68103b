"""The review of the testing tools' and the new user's passes (t95).

A client that shuts its sending side before it sends anything (a probe that connects and
half-closes, ``nc -N`` with empty input) is owed the end of the connection at once: the
half-closed client's answer (t91) kept such a connection open on uvloop, where the end of
input can come before aiohttp's handler has begun to wait for a request, until the node's
idle sweep (75 s), holding one of its capped connections."""

from __future__ import annotations

import asyncio

import pytest
from event_loops import LOOPS
from kv.kv_helpers import KvCluster
from kv.raw_http import ANSWER_WITHIN, http_addr

pytestmark = pytest.mark.timeout(60)

CONNECTIONS = 20
"""Connections tried at once (on uvloop, most of them met the race)."""


async def _closed_after_empty_half_close(host: str, port: int) -> bool:
    """Whether the node closes a new connection whose client shuts its sending side at once,
    within ``ANSWER_WITHIN`` seconds (reading nothing)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write_eof()
        try:
            return await asyncio.wait_for(reader.read(), ANSWER_WITHIN) == b""
        except TimeoutError:
            return False
    finally:
        writer.close()


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_a_connection_half_closed_before_any_request_is_closed_at_once(loop_name: str) -> None:
    async def run() -> None:
        c = KvCluster()
        try:
            await c.start(1)
            host, port = http_addr(await c.wait_leader())
            closed = await asyncio.gather(*[_closed_after_empty_half_close(host, port) for _ in range(CONNECTIONS)])
            assert all(closed), f"{closed.count(False)} of {CONNECTIONS} connections left open"
        finally:
            await c.close()

    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(run())


async def test_a_stale_half_closed_id_does_not_keep_a_new_connection_open() -> None:
    """``_HALF_CLOSED`` holds the ids of the connections kept open after their client's end
    of input until their ``connection_lost``; one left there (a loop closed under its
    connections, where none runs) may be the id of a later handler. That handler's end of
    input must still be judged (here: no request ever came, so it closes at once), not
    taken for a connection already answering."""
    from aiohttp import web

    from openraft_py.kv import http_api

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response()

    proto = http_api.JsonParserErrors.adopt(web.Server(handler)())
    assert isinstance(proto, http_api.JsonParserErrors)
    http_api._HALF_CLOSED.add(id(proto))  # (stale: left by an earlier handler of that id)
    try:
        assert proto.eof_received() is None  # closed at once
    finally:
        http_api._HALF_CLOSED.discard(id(proto))
