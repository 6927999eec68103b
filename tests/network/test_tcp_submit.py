"""The TCP server's AppendEntries path through ``submit_append_entries`` (what ``Raft`` has):
the node calls a reply callback that writes the answer at once, without a task per request.
Asserted: answers reach the right callers in any order, ``max_inflight`` still holds,
every error a node can give maps as on the task path (stopped -> ``Unreachable``, a bad
request or a failure -> ``RemoteError``), a closed connection cancels the handles of its
requests in flight, and ``close()`` waits for them.

Every async test runs on asyncio and on uvloop (tests/network/conftest.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from openraft_py.core.messages import Reply
from openraft_py.errors import InvalidRequest, RemoteError, Stopped, Unreachable
from openraft_py.network.tcp import TcpNetworkFactory, TcpServer
from openraft_py.types import AppendEntriesRequest, AppendEntriesResponse, BasicNode, LogId, RPCOption

from .test_tcp import V1, FakeRaft

pytestmark = pytest.mark.timeout(60)

OPT = RPCOption(hard_ttl=5.0, soft_ttl=5.0)


class SubmitRaft(FakeRaft):
    """A ``FakeRaft`` with ``submit_append_entries``: each request waits in ``pending``
    (prev index -> its ``Reply``) until the test answers it."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: dict[int, Reply] = {}
        self.refuse: BaseException | None = None  # raised by the call itself
        self.answer_now: Any = None  # answered before the call returns (a stopped node)

    def submit_append_entries(self, req: AppendEntriesRequest, reply: Callable[[Any], None]) -> Reply:
        self.received.append(("submit_append_entries", req))
        if self.refuse is not None:
            raise self.refuse
        handle = Reply(reply)
        if self.answer_now is not None:
            handle.set_exception(self.answer_now)
            return handle
        self.pending[-1 if req.prev_log_id is None else req.prev_log_id.index] = handle
        return handle


def ae(i: int | None) -> AppendEntriesRequest:
    return AppendEntriesRequest(V1, None if i is None else LogId(3, i), [], None)


def ok(i: int) -> AppendEntriesResponse:
    return AppendEntriesResponse(V1, True, LogId(3, i))


@asynccontextmanager
async def serving(raft: SubmitRaft, **kw: Any) -> AsyncIterator[tuple[TcpServer, TcpNetworkFactory, Any]]:
    """A ``TcpServer`` for ``raft`` (``kw``: its limits) and a client to it from node 1;
    both closed at the end."""
    server = await TcpServer.start(raft, "127.0.0.1", 0, "c", **kw)
    factory = TcpNetworkFactory(1, "c", backoff_min=0.01, backoff_max=0.05, seed=1)
    try:
        yield server, factory, factory.new_client(2, BasicNode(server.address))
    finally:
        await server.close()
        await factory.close()


async def _until(cond: Callable[[], bool]) -> None:
    while not cond():
        await asyncio.sleep(0.005)  # polled; callers bound it with wait_for


async def test_answers_reach_their_callers_in_any_order_within_max_inflight() -> None:
    raft = SubmitRaft()
    async with serving(raft, max_inflight=8) as (server, factory, client):
        calls = [asyncio.ensure_future(client.append_entries(ae(i), OPT)) for i in range(20)]
        await asyncio.wait_for(_until(lambda: len(raft.pending) == 8), 5)
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(raft.received) == 8  # the rest wait until answers free a slot
        answered = 0
        while answered < 20:
            await asyncio.wait_for(_until(lambda: bool(raft.pending)), 5)
            i = max(raft.pending)  # newest first: out of order
            raft.pending.pop(i).set_result(ok(i))
            assert (await asyncio.wait_for(calls[i], 5)).matching == LogId(3, i)
            answered += 1
        assert server.delivered == 20 and not any(name == "append_entries" for name, _ in raft.received)


@pytest.mark.parametrize(
    ("given", "expected", "refused_at_call"),
    [
        (Stopped(), Unreachable, False),
        (InvalidRequest("append_entries", "bad"), RemoteError, False),
        (RuntimeError("boom"), RemoteError, False),
        (InvalidRequest("append_entries", "bad"), RemoteError, True),
    ],
    ids=["stopped", "invalid-answered", "failure-answered", "invalid-at-call"],
)
async def test_errors_map_as_on_the_task_path(given: BaseException, expected: type[Exception], refused_at_call: bool) -> None:
    raft = SubmitRaft()
    async with serving(raft) as (server, factory, client):
        if refused_at_call:
            raft.refuse = given
        call = asyncio.ensure_future(client.append_entries(ae(1), OPT))
        if not refused_at_call:
            await asyncio.wait_for(_until(lambda: 1 in raft.pending), 5)
            raft.pending.pop(1).set_exception(given)
        with pytest.raises(expected):
            await asyncio.wait_for(call, 5)
        # The connection serves on.
        raft.refuse = None
        nxt = asyncio.ensure_future(client.append_entries(ae(2), OPT))
        await asyncio.wait_for(_until(lambda: 2 in raft.pending), 5)
        raft.pending.pop(2).set_result(ok(2))
        assert (await asyncio.wait_for(nxt, 5)).matching == LogId(3, 2)
        assert server.dropped == 0


async def test_a_node_answering_before_the_call_returns() -> None:
    """A stopped node answers inside ``submit_append_entries``: the request is over then
    (nothing stays in flight: ``close()`` does not wait for it)."""
    raft = SubmitRaft()
    raft.answer_now = Stopped()
    async with serving(raft) as (server, factory, client):
        with pytest.raises(Unreachable):
            await asyncio.wait_for(client.append_entries(ae(1), OPT), 5)
        await asyncio.wait_for(server.close(), 2)


async def test_a_lost_connection_cancels_its_requests_in_flight() -> None:
    raft = SubmitRaft()
    async with serving(raft) as (server, factory, client):
        calls = [asyncio.ensure_future(client.append_entries(ae(i), OPT)) for i in range(3)]
        await asyncio.wait_for(_until(lambda: len(raft.pending) == 3), 5)
        handles = list(raft.pending.values())
        await factory.close()  # the client goes away
        await asyncio.gather(*calls, return_exceptions=True)
        await asyncio.wait_for(_until(lambda: server.connections == 0), 5)
        assert all(h.done() for h in handles)  # cancelled: a late answer is ignored
        handles[0].set_result(ok(0))
        assert server.dropped == 0


async def test_close_drains_submitted_requests() -> None:
    raft = SubmitRaft()
    async with serving(raft) as (server, factory, client):
        call = asyncio.ensure_future(client.append_entries(ae(7), OPT))
        await asyncio.wait_for(_until(lambda: 7 in raft.pending), 5)
        closing = asyncio.ensure_future(server.close())
        await asyncio.sleep(0.05)
        assert not closing.done()  # waits for the request in flight
        raft.pending.pop(7).set_result(ok(7))
        assert (await asyncio.wait_for(call, 5)).matching == LogId(3, 7)
        await asyncio.wait_for(closing, 5)
        assert server.connections == 0


async def test_a_reply_callback_that_raises_is_logged_and_dropped() -> None:
    """``Reply`` protects the node's pass from its callback: the error is logged, the
    handle is done, and a second answer is ignored."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign,assignment]
    logger = logging.getLogger("openraft_py.core")
    # (An earlier test's logging setup may have disabled or quietened it.)
    saved = logger.disabled, logger.level
    logger.disabled = False
    logger.setLevel(logging.ERROR)
    logger.addHandler(handler)
    seen: list[Any] = []

    def bad(value: Any) -> None:
        seen.append(value)
        raise RuntimeError("transport bug")

    try:
        r = Reply(bad)
        r.set_result(1)
        r.set_result(2)
        r.set_exception(RuntimeError("late"))
    finally:
        logger.removeHandler(handler)
        logger.disabled = saved[0]
        logger.setLevel(saved[1])
    assert seen == [1] and r.done() and not r.cancel()
    assert [rec.getMessage() for rec in records] == [f"the reply callback {bad!r} failed"]
    c = Reply(seen.append)
    assert c.cancel() and c.done()
    c.set_result(3)
    assert seen == [1]


async def test_a_stopped_node_answers_a_long_backlog_without_recursion() -> None:
    """Thousands of pipelined requests reach a node that answers each before the call
    returns (stopped): every one is answered (``Unreachable``) by one loop over the
    backlog, not one nested call per request."""
    import sys

    raft = SubmitRaft()
    raft.answer_now = Stopped()
    n = sys.getrecursionlimit() + 500
    async with serving(raft, max_inflight=4) as (server, factory, client):
        calls = [client.append_entries(ae(i), OPT) for i in range(n)]
        out = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
        assert len(out) == n and all(isinstance(e, Unreachable) for e in out)
        assert server.dropped == 0 and server.delivered == n


def test_loopback_peers_are_recognised() -> None:
    from openraft_py.network._tcp_server import is_loopback_peer

    for peer in [("127.0.0.1", 5), ("127.9.8.7", 5), ("::1", 5, 0, 0), ("::ffff:127.0.0.1", 5, 0, 0)]:
        assert is_loopback_peer(peer), peer
    for peer in [("10.0.0.1", 5), ("192.168.1.2", 5), ("fe80::1%eth0", 5, 0, 2), ("2001:db8::1", 5, 0, 0), None, "?", (), ("not an ip", 5)]:
        assert not is_loopback_peer(peer), peer


@pytest.mark.parametrize(("setting", "expected"), [(None, 2), (True, 2), (False, 0)], ids=["default-loopback", "on", "off"])
async def test_an_answer_is_followed_by_a_yield_as_configured(
    monkeypatch: pytest.MonkeyPatch, setting: bool | None, expected: int
) -> None:
    """By default a connection from a loopback address (every test's) yields the CPU after
    answering an AppendEntries of 1 to ``YIELD_MAX_ENTRIES`` entries, once the answer is
    written; not after a heartbeat or a larger batch. ``yield_after_answer`` forces it
    either way."""
    from openraft_py.network._tcp_server import YIELD_MAX_ENTRIES
    from openraft_py.types import Entry, Normal

    def with_entries(i: int, n: int) -> AppendEntriesRequest:
        return AppendEntriesRequest(V1, LogId(3, i), [Entry(LogId(3, 100 * i + k), Normal(b"x")) for k in range(n)], None)

    requests = [with_entries(0, 1), with_entries(1, YIELD_MAX_ENTRIES), with_entries(2, YIELD_MAX_ENTRIES + 1), ae(3)]
    from openraft_py.network import _tcp_server

    raft = SubmitRaft()
    written_before_yield: list[bool] = []

    async with serving(raft, yield_after_answer=setting) as (server, factory, client):
        conn = None

        def counting_yield() -> None:
            assert conn is not None
            written_before_yield.append(conn.writer is not None and not conn.writer._out)

        monkeypatch.setattr(_tcp_server, "_sched_yield", counting_yield)
        calls = [asyncio.ensure_future(client.append_entries(r, OPT)) for r in requests]
        await asyncio.wait_for(_until(lambda: len(raft.pending) == 4), 5)
        (conn,) = server._conns
        for i in range(4):
            raft.pending.pop(i).set_result(ok(i))
        for i in range(4):
            assert (await asyncio.wait_for(calls[i], 5)).matching == LogId(3, i)
    assert len(written_before_yield) == expected and all(written_before_yield)
