"""The request bodies a service node holds at once are bounded (``http_api.BodyBudget``,
``MAX_BODY_BYTES_IN_FLIGHT``): a flood of large PUTs waits for room, its bodies unread, instead
of being read, decoded and handed to Raft all at once; a request that waits too long gets 503."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from openraft_py.kv import http_api
from openraft_py.kv.http_api import BUDGET_KEY, BodyBudget, body_budget
from openraft_py.kv.node import KvNode

from .kv_helpers import KvCluster, until_true, url

pytestmark = pytest.mark.timeout(60)

BODY = 100_000


def _budget(node: KvNode) -> BodyBudget:
    assert node._http is not None
    return node._http.app[BUDGET_KEY]  # type: ignore[no-any-return]


def _blocking_put(node: KvNode, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], asyncio.Event]:
    """Make ``node.put`` record its key and wait for the event returned before it writes."""
    entered: list[str] = []
    release = asyncio.Event()
    put = node.put

    async def blocked(key: str, value: str) -> int:
        entered.append(key)
        await release.wait()
        return await put(key, value)

    monkeypatch.setattr(node, "put", blocked)
    return entered, release


async def test_large_puts_beyond_the_budget_wait_their_turn_unread(monkeypatch: pytest.MonkeyPatch) -> None:
    """With room for 3 bodies, 10 concurrent PUTs of one body each: 3 are handled (read and
    in ``put``), 7 wait, and each is served, in order, as one is answered; all 10 end 200.
    Without the budget all 10 bodies were read and handed on at once (the leader of a
    3-node ``serve`` cluster flooded with 1 MB PUTs from 600 connections grew to 2.1 GB and
    lost its leadership)."""
    monkeypatch.setattr(http_api, "MAX_BODY_BYTES_IN_FLIGHT", 3 * BODY)
    c = KvCluster()
    try:
        await c.start(1, max_body=BODY)
        node = c.nodes[1]
        assert body_budget(node.opts.max_body) == 3 * BODY
        budget = _budget(node)
        entered, release = _blocking_put(node, monkeypatch)
        assert c.session is not None
        session = c.session

        async def put(i: int) -> int:
            async with session.put(url(node, f"/kv/k{i}"), data=b"v" * BODY) as r:
                return r.status

        calls = [asyncio.create_task(put(i)) for i in range(10)]
        try:
            await until_true("the ten requests are handled or wait", lambda: len(entered) + budget.waiting == 10)
            assert len(entered) == 3, entered
            assert budget.held == 3 * BODY
        finally:
            release.set()
            statuses = await asyncio.gather(*calls, return_exceptions=True)
        assert statuses == [200] * 10
        assert budget.held == 0 and budget.waiting == 0 and budget.peak == 3 * BODY
        assert node.sm is not None and all(node.sm.get(f"k{i}") == "v" * BODY for i in range(10))
    finally:
        await c.close()


async def test_a_request_that_waits_too_long_for_room_gets_503_and_nothing_is_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Room for one body, held by a PUT that does not finish: a second PUT waits
    ``BODY_BUDGET_WAIT`` and is answered 503 with ``Retry-After`` and a reason naming the
    limit; its key is not written; the connection serves the next request."""
    monkeypatch.setattr(http_api, "MAX_BODY_BYTES_IN_FLIGHT", BODY)
    monkeypatch.setattr(http_api, "BODY_BUDGET_WAIT", 0.2)
    c = KvCluster()
    try:
        await c.start(1, max_body=BODY)
        node = c.nodes[1]
        budget = _budget(node)
        entered, release = _blocking_put(node, monkeypatch)
        assert c.session is not None
        session = c.session

        async def put_first() -> int:
            async with session.put(url(node, "/kv/first"), data=b"a" * BODY) as r:
                return r.status

        first = asyncio.create_task(put_first())
        try:
            await until_true("the first PUT is handled", lambda: entered == ["first"])
            async with session.get(url(node, "/metrics")) as r:  # the budget's gauges
                text = await r.text()
                assert f"openraft_kv_http_body_bytes {float(BODY)}" in text, text
                assert "openraft_kv_http_body_waiting 0.0" in text
            await _second_put_is_refused(node, entered, budget)
        finally:
            release.set()
            status = await asyncio.wait_for(first, 20)
        assert status == 200
        assert budget.held == 0
        assert node.sm is not None and node.sm.get("second") is None and node.sm.get("first") == "a" * BODY
    finally:
        await c.close()


async def test_an_operators_request_does_not_wait_behind_the_puts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Room for one body, held by a PUT that does not finish, and a second PUT waiting for
    room: a ``/cluster/transfer`` (a small body, ``ADMIN_BODY_EXEMPT_BYTES``) is answered at
    once, not after ``BODY_BUDGET_WAIT`` with 503; a ``/cluster/`` request with a body over
    the exemption still waits its turn."""
    monkeypatch.setattr(http_api, "MAX_BODY_BYTES_IN_FLIGHT", BODY)
    monkeypatch.setattr(http_api, "BODY_BUDGET_WAIT", 5.0)
    c = KvCluster()
    try:
        await c.start(1, max_body=BODY)
        node = c.nodes[1]
        budget = _budget(node)
        entered, release = _blocking_put(node, monkeypatch)
        assert c.session is not None
        session = c.session

        async def put(key: str) -> int:
            async with session.put(url(node, f"/kv/{key}"), data=b"a" * BODY) as r:
                return r.status

        puts = [asyncio.create_task(put("first"))]
        try:
            await until_true("the first PUT is handled", lambda: entered == ["first"])
            puts.append(asyncio.create_task(put("second")))
            await until_true("the second PUT waits for room", lambda: budget.waiting == 1)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
                async with s.get(url(node, "/metrics")) as r:
                    assert "openraft_kv_http_body_waiting 1.0" in await r.text()
                t0 = asyncio.get_running_loop().time()
                async with s.post(url(node, "/cluster/transfer"), json={"to": node.id}) as r:
                    took = asyncio.get_running_loop().time() - t0
                    assert r.status != 503, await r.text()
                assert took < 2.0, f"the transfer request waited {took:.1f}s behind the PUTs"
                padded = {"to": node.id, "pad": "x" * (http_api.ADMIN_BODY_EXEMPT_BYTES + 1)}
                big = asyncio.create_task(s.post(url(node, "/cluster/transfer"), json=padded))
                await until_true("the large operator's request waits its turn", lambda: budget.waiting == 2)
                big.cancel()
        finally:
            release.set()
            statuses = await asyncio.wait_for(asyncio.gather(*puts), 20)
        assert statuses == [200, 200]
    finally:
        await c.close()


async def _second_put_is_refused(node: KvNode, entered: list[str], budget: BodyBudget) -> None:
    """PUT a second body while the first holds the room: 503 (``BODY_BUDGET_WAIT``), nothing done."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        async with s.put(url(node, "/kv/second"), data=b"b" * BODY) as r:
            assert r.status == 503
            assert r.headers["Retry-After"] == "1"
            body: dict[str, Any] = await r.json()
            assert "MAX_BODY_BYTES_IN_FLIGHT" in body["error"] and "nothing was done" in body["error"]
        assert entered == ["first"] and budget.waiting == 0 and budget.held == BODY
        async with s.get(url(node, "/cluster/status")) as r:  # the same connection serves on
            assert r.status == 200


async def test_the_budget_serves_waiters_in_order_and_a_cancelled_one_holds_nothing() -> None:
    """A small request does not overtake a large one that waits; a waiter cancelled (its
    client gone, its timeout) leaves the queue, and one cancelled right after it was granted
    gives its bytes back."""
    b = BodyBudget(10)
    assert await b.acquire(6) == 6
    large = asyncio.create_task(b.acquire(8))
    small = asyncio.create_task(b.acquire(1))
    await asyncio.sleep(0)
    assert b.waiting == 2 and not large.done() and not small.done()  # 1 would fit, but 8 came first
    b.release(6)
    assert await large == 8
    assert await small == 1 and b.held == 9
    # Cancelled while waiting: nothing held, the next waiter is served.
    gone = asyncio.create_task(b.acquire(5))
    nxt = asyncio.create_task(b.acquire(1))
    await asyncio.sleep(0)
    gone.cancel()
    assert await nxt == 1 and b.held == 10
    with pytest.raises(asyncio.CancelledError):
        await gone
    # Granted, then cancelled before it ran: the bytes come back.
    late = asyncio.create_task(b.acquire(4))
    await asyncio.sleep(0)
    b.release(8)
    late.cancel()
    with pytest.raises(asyncio.CancelledError):
        await late
    assert b.held == 2 and b.waiting == 0
    # A body larger than the whole budget takes all of it (``max_body`` refuses it, not this).
    b.release(2)
    assert await b.acquire(100) == 10 and b.held == 10


async def test_a_waiter_cancelled_in_the_pass_that_frees_its_room_holds_nothing_and_breaks_no_release() -> None:
    """A waiter cancelled (its ``BODY_BUDGET_WAIT`` ran out, the server shutting down) and,
    before its task runs again, room freed by another request in the same pass: the release
    serves the next waiter, not the cancelled one, and raises nothing; the cancelled waiter
    ends ``CancelledError``; nothing is held. Before, the release set the result of the
    cancelled future (``InvalidStateError``, raised from the middleware's ``finally``, which
    then skipped ``request_done``), took its bytes for good, and the waiter failed with a
    ``ValueError`` (its entry gone from the queue): every such race shrank the budget until
    every request with a body waited ``BODY_BUDGET_WAIT`` and got 503."""
    b = BodyBudget(10)
    assert await b.acquire(10) == 10
    gone = asyncio.create_task(b.acquire(5))
    after = asyncio.create_task(b.acquire(4))
    await asyncio.sleep(0)
    assert b.waiting == 2
    gone.cancel()
    b.release(10)  # the same pass: ``gone`` has not run since it was cancelled
    assert await after == 4
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert b.held == 4 and b.waiting == 0
    b.release(4)
    assert b.held == 0
    assert await b.acquire(10) == 10  # the whole budget is there again
