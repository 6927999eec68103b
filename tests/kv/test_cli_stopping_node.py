"""The command line's verbs against a node whose stop has begun (a rolling restart): its
refusal (503 with ``"stopping": true``, nothing done) sends the request on to the next
endpoint given, as ``KvClient`` does for every call that follows redirects; the verb fails
only once every endpoint refused, exit 1 with each refusal named.

``cluster init`` posted the init to the first endpoint alone: a first node that began to
stop between its status and the init failed the verb (exit 1, "init failed: HTTP 503: the
node is stopping"), though the other nodes given could take it. Fake nodes answer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web

from openraft_py.kv import cli
from openraft_py.testing.proc_cluster import free_port

from .test_cli import _fake_node

pytestmark = pytest.mark.timeout(60)

STOPPING = {"error": "the node is stopping", "leader_id": None, "stopping": True}


def _node(i: int, port: int, asked: list[str], takes_init: bool) -> list[Any]:
    """The routes of fake node ``i`` of no cluster at ``127.0.0.1:port``: its status; an
    init it takes (then it leads) or refuses as a stopping node. ``asked`` gets each init."""
    led: list[bool] = []

    async def status(request: web.Request) -> web.Response:
        st: dict[str, Any] = {"id": i, "state": "Follower", "leader_id": None, "voters": [], "learners": [],
                              "raft_addr": f"127.0.0.1:{port + 1}", "http_addr": f"127.0.0.1:{port}"}
        if led:
            st.update(state="Leader", leader_id=i, voters=[1, 2])
        return web.json_response(st)

    async def init(request: web.Request) -> web.Response:
        members = sorted(json.loads(await request.read())["members"])
        asked.append(f"n{i} init {members}")
        if not takes_init:
            return web.json_response(STOPPING, status=503)
        led.append(True)
        return web.json_response({"members": [int(m) for m in members]})

    return [web.get("/cluster/status", status), web.post("/cluster/init", init)]


async def test_cluster_init_refused_by_a_stopping_first_node_goes_to_the_next(
        capsys: pytest.CaptureFixture[str]) -> None:
    asked: list[str] = []
    p1, p2 = free_port(), free_port()
    async with _fake_node(p1, _node(1, p1, asked, takes_init=False)) as ep1, \
            _fake_node(p2, _node(2, p2, asked, takes_init=True)) as ep2:
        code = await asyncio.to_thread(cli.main, ["cluster", "init", "--endpoints", f"{ep1},{ep2}", "--timeout", "5"])
    out = capsys.readouterr()
    assert code == 0 and out.err == "", (code, out)
    assert out.out.splitlines() == ["initialized: voters [1, 2]", "leader: n2"], out.out
    assert asked == ["n1 init ['1', '2']", "n2 init ['1', '2']"], asked


async def test_cluster_init_fails_once_every_endpoint_is_stopping(capsys: pytest.CaptureFixture[str]) -> None:
    asked: list[str] = []
    p1, p2 = free_port(), free_port()
    async with _fake_node(p1, _node(1, p1, asked, takes_init=False)) as ep1, \
            _fake_node(p2, _node(2, p2, asked, takes_init=False)) as ep2:
        code = await asyncio.to_thread(cli.main, ["cluster", "init", "--endpoints", f"{ep1},{ep2}", "--timeout", "5"])
    out = capsys.readouterr()
    assert code == cli.EXIT_FAILED and out.out == "", (code, out)
    assert out.err.splitlines() == [
        f"openraft-py cluster init: error: init failed: every endpoint refused it, nothing was done: {ep1}: HTTP 503: "
        f"the node is stopping; {ep2}: HTTP 503: the node is stopping"], out.err
    assert asked == ["n1 init ['1', '2']", "n2 init ['1', '2']"], asked
