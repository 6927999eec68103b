"""A node that is stopping refuses every request for a reason that has nothing to do with the
request: its 503 says ``"stopping": true`` (with ``"outcome_unknown": false`` when it says
that at all), and ``KvClient`` tries the next endpoint, a write too, since nothing was done.
A 503 that says ``"outcome_unknown": false`` without ``stopping`` (a refusal of the request
itself: a host name the resolver could not tell about; or a server from before the field)
still fails the call at once.

Before, a leader stopped (a rolling restart's SIGTERM) while it resolved the host name of an
add-learner answered 503 ``"outcome_unknown": false``, and the client failed the call at once,
where the next leader would have taken it."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from openraft_py.kv import node as node_module
from openraft_py.kv.client import KvClient, Outcome
from openraft_py.kv.node import SHUTDOWN_GRACE

from .kv_helpers import KvCluster, url

pytestmark = pytest.mark.timeout(60)


async def test_an_add_learner_refused_by_a_stopping_leader_is_taken_by_the_next_leader(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The leader of three nodes gets an add-learner whose raft host name its resolver takes
    long to answer, and is stopped meanwhile (a rolling restart): its 503 says nothing was
    done because it is stopping, so the client goes on to the other endpoints and the next
    leader adds the learner. The call ends ``OK`` there; before, ``FAIL`` ("node N is
    stopping: its raft host names were not resolved")."""
    started = asyncio.Event()

    async def first_one_hangs(host: str, port: int) -> list[tuple[int, str]]:
        if not started.is_set():  # (the stopping leader's: cancelled by its stop)
            started.set()
            await asyncio.Event().wait()
        return [(socket.AF_INET, "127.0.0.1")]

    monkeypatch.setattr(node_module, "resolve", first_one_hangs)
    c = KvCluster()
    try:
        await c.start(3)
        leader = await c.wait_leader()
        others = c.followers(leader)
        learner = await c.start_node(4)
        raft_addr = f"localhost:{learner.opts.raft_addr.rpartition(':')[2]}"
        endpoints = [leader.opts.http_addr] + [n.opts.http_addr for n in others]
        async with KvClient(endpoints, deadline=20.0) as kv:
            call = asyncio.ensure_future(kv.add_learner(4, raft_addr, learner.opts.http_addr))
            try:
                await asyncio.wait_for(started.wait(), 10)
                await asyncio.wait_for(leader.stop(), 3 * SHUTDOWN_GRACE)
                r = await asyncio.wait_for(call, 30)
            finally:
                call.cancel()
        assert r.outcome is Outcome.OK, r
        assert r.node != leader.opts.http_addr and r.retries >= 1, r
        new = await c.wait_leader(among=[n.id for n in others])
        assert 4 in new.nodes(), new.nodes()
    finally:
        await c.close()


async def test_a_stopping_node_s_503_says_so_and_a_write_goes_to_the_next_node(cluster: KvCluster) -> None:
    """A node whose stop has begun (``accepting`` false: the stop's first step) answers
    every request 503 with ``"stopping": true`` (and the leader it knows, as the redirect
    rule's 503 does, without ``outcome_unknown``: a client from before the field retries it
    as a "no leader" refusal); a ``PUT`` given that node first goes on to the next."""
    leader = await cluster.wait_leader()
    node = cluster.followers(leader)[0]
    assert cluster.session is not None
    node.accepting = False  # (what ``stop()`` does first; the rest of the stop is not needed here)
    try:
        async with asyncio.timeout(5), cluster.session.put(url(node, "/kv/k"), data=b"v") as resp:
            body = await resp.json()
            assert resp.status == 503, (resp.status, body)
        assert body.get("stopping") is True and "outcome_unknown" not in body, body
        assert body.get("leader_id") == leader.id, body
        async with KvClient([node.opts.http_addr, leader.opts.http_addr], deadline=10.0) as kv:
            r = await kv.put("k", "v")
        assert r.outcome is Outcome.OK and r.node == leader.opts.http_addr and r.retries >= 1, r
    finally:
        node.accepting = True  # (so that its stop, at the cluster's close, runs in full)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def _fake_nodes(*handlers: Handler) -> AsyncIterator[list[str]]:
    """One fake node per handler (every path and method goes to it), on loopback; yields
    their endpoints in order."""
    async with AsyncExitStack() as stack:
        addrs = []
        for h in handlers:
            app = web.Application()
            app.router.add_route("*", "/{path:.*}", h)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            addrs.append(f"127.0.0.1:{runner.addresses[0][1]}")
        yield addrs


def _answering(status: int, body: dict[str, Any], seen: list[str], name: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        seen.append(name)
        await request.read()
        return web.json_response(body, status=status)
    return handler


STOPPING = {"error": "ServiceUnavailable: node 1 is stopping: its raft host names were not resolved; nothing was done",
            "outcome_unknown": False, "stopping": True}
"""The body of the 503 a stopping node answers a request it refused part way (nothing done)."""

REFUSED = {"error": "ServiceUnavailable: raft_addr 'slow.example:2': resolving 'slow.example' took more than 5.0s: "
                    "nothing was done; retry once the resolver answers, or give an IP address",
           "outcome_unknown": False}
"""The body of the 503 of a refusal of the request itself (and of any refusal by a server
from before ``stopping``)."""


@pytest.mark.parametrize("verb", ["put", "add_learner", "get"])
async def test_a_stopping_refusal_is_retried_at_the_next_endpoint(verb: str) -> None:
    """A 503 saying ``"stopping": true`` and ``"outcome_unknown": false``: the call goes on to
    the next endpoint (writes too: nothing was done), which takes it."""
    seen: list[str] = []
    index = {"index": 7}
    async with _fake_nodes(_answering(503, STOPPING, seen, "stopping"),
                           _answering(200, index, seen, "healthy")) as (a, b):
        async with KvClient([a, b], deadline=5.0) as kv:
            if verb == "put":
                r = await kv.put("k", "v")
            elif verb == "add_learner":
                r = await kv.add_learner(4, "127.0.0.1:2", "127.0.0.1:3")
            else:
                r = await kv.request("GET", "/cluster/status")
    assert r.outcome is Outcome.OK and r.node == b and r.retries == 1 and r.json() == index, r
    assert seen == ["stopping", "healthy"], seen


async def test_a_refusal_of_the_request_itself_still_fails_at_once() -> None:
    """A 503 saying ``"outcome_unknown": false`` without ``stopping`` (the request's own
    refusal, or a server from before the field): ``FAIL`` at once, no other endpoint asked
    (another could have done something the first was asked not to, for all the client knows
    of an older server)."""
    seen: list[str] = []
    async with _fake_nodes(_answering(503, REFUSED, seen, "refused"),
                           _answering(200, {"index": 7}, seen, "healthy")) as (a, b):
        async with KvClient([a, b], deadline=5.0) as kv:
            r = await kv.add_learner(4, "slow.example:2", "127.0.0.1:3")
    assert r.outcome is Outcome.FAIL and r.status == 503 and r.retries == 0, r
    assert "resolving 'slow.example' took more than 5.0s" in (r.error or ""), r
    assert seen == ["refused"], seen


@pytest.mark.parametrize("body", [{**STOPPING, "outcome_unknown": True}, {**STOPPING, "outcome_unknown": 1},
                                  {"error": "x", "stopping": "yes"}, {"error": "x", "stopping": 1}],
                         ids=["outcome_unknown", "outcome_unknown_1", "not_a_bool", "one"])
async def test_a_write_s_503_whose_stopping_is_not_a_plain_refusal_is_not_retried(body: dict[str, Any]) -> None:
    """``stopping`` makes a retry only when it is ``true`` and the body does not say the
    outcome is unknown: a write's 503 with an ``outcome_unknown`` other than ``false`` (or a
    ``stopping`` that is not the boolean) is an unknown outcome, never sent elsewhere."""
    seen: list[str] = []
    async with _fake_nodes(_answering(503, body, seen, "first"), _answering(200, {"index": 7}, seen, "healthy")) as eps:
        async with KvClient(eps, deadline=5.0) as kv:
            r = await kv.put("k", "v")
    assert r.outcome is Outcome.INFO and r.status == 503 and seen == ["first"], (r, seen)


async def test_a_stopping_refusal_fails_without_follow_and_when_every_node_stops() -> None:
    """With ``follow=False`` (one endpoint only, as ``init``) a stopping refusal is a
    ``FAIL`` at once; when every endpoint is stopping, the call retries them until its
    deadline and fails with the last refusal (never ``INFO``: nothing was done)."""
    seen: list[str] = []
    stopping = _answering(503, STOPPING, seen, "stopping")
    async with _fake_nodes(stopping, stopping) as (a, b):
        async with KvClient([a, b], deadline=0.5, backoff=0.01, max_backoff=0.02) as kv:
            r = await kv.put("k", "v", endpoint=a, follow=False)
            assert r.outcome is Outcome.FAIL and r.status == 503 and seen == ["stopping"], (r, seen)
            r = await kv.put("k", "v")
    assert r.outcome is Outcome.FAIL and r.status == 503 and len(seen) > 3, (r, len(seen))
    assert (r.error or "").startswith("gave up after ") and "is stopping" in (r.error or ""), r
    assert json.loads(r.body) == STOPPING
