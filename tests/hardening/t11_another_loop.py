"""A node belongs to the event loop it was created on. A call from another loop (another
thread running its own loop, a common mistake) raises ``RuntimeError`` at once, saying so,
before anything is logged; the node is unharmed. (It used to log and apply the write, then
fail in the caller with asyncio's "attached to a different loop".)"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from integration.checks import fast_config

from openraft_py import BasicNode, Raft, ReadPolicy, ServerState
from openraft_py.network.router import Router
from openraft_py.storage.memory import MemLogStore, MemStateMachine
from openraft_py.types import AppendEntriesRequest, Vote

pytestmark = pytest.mark.timeout(30)

CALLS: dict[str, Callable[[Raft], Awaitable[Any]]] = {
    "client_write": lambda r: r.client_write(b"x"),
    "client_write_many": lambda r: r.client_write_many([b"x", b"y"]),
    "ensure_linearizable": lambda r: r.ensure_linearizable(ReadPolicy.READ_INDEX),
    "add_learner": lambda r: r.add_learner(2, BasicNode("b"), blocking=False),
    "change_membership": lambda r: r.change_membership({1}),
    "initialize": lambda r: r.initialize([1]),
    "trigger.heartbeat": lambda r: r.trigger.heartbeat(),
    "trigger.snapshot": lambda r: r.trigger.snapshot(),
    "wait": lambda r: r.wait(1.0).state(ServerState.LEADER),
    # It was not checked: the node's state machine worker answered a future of the other
    # loop from the node's thread, and that loop, asleep, never woke to see it (a hang).
    "get_current_snapshot": lambda r: r.get_current_snapshot(),
    "shutdown": lambda r: r.shutdown(),
}


def in_another_thread(make: Callable[[], Awaitable[Any]]) -> BaseException | None:
    """Run ``make()`` on a new loop in a new thread; the exception it raised, if any."""
    out: list[BaseException | None] = [None]

    def run() -> None:
        async def go() -> None:
            await asyncio.wait_for(make(), 5)

        try:
            asyncio.run(go())
        except BaseException as e:  # noqa: BLE001 - returned to the test
            out[0] = e

    t = threading.Thread(target=run)
    t.start()
    t.join(10)
    assert not t.is_alive(), "the call from another loop hung"
    return out[0]


@pytest.mark.parametrize("name", sorted(CALLS))
async def test_a_call_from_another_loop_is_refused_and_changes_nothing(name: str) -> None:
    router = Router()
    raft = await Raft.new(1, fast_config(), router.factory(1), MemLogStore(), MemStateMachine())
    router.register(1, raft)
    try:
        await raft.initialize([1])
        await raft.wait(5).state(ServerState.LEADER)
        await raft.client_write(b"before")
        last = raft.metrics.last_log_index
        err = await asyncio.to_thread(in_another_thread, lambda: CALLS[name](raft))
        assert isinstance(err, RuntimeError), repr(err)
        assert "belongs to the event loop it was created on" in str(err)
        assert raft.metrics.last_log_index == last, "the refused call logged something"
        assert raft.metrics.running
        resp = await raft.client_write(b"after")
        assert resp.log_id.index == last + 1
    finally:
        await raft.shutdown()


async def test_a_peer_request_outside_the_loop_is_refused() -> None:
    router = Router()
    raft = await Raft.new(1, fast_config(), router.factory(1), MemLogStore(), MemStateMachine())
    try:
        req = AppendEntriesRequest(Vote.new(1, 2, True), None, [], None)
        for call in (lambda: raft.start_append_entries(req), lambda: raft.submit_append_entries(req, lambda r: None)):
            err = await asyncio.to_thread(lambda c=call: _raises(c))
            assert isinstance(err, RuntimeError), repr(err)
        assert raft.metrics.current_term == 0, "the refused request reached the node"
    finally:
        await raft.shutdown()


async def test_metrics_from_another_thread_are_refused_as_every_method() -> None:
    """``metrics``, ``is_leader()`` and ``current_leader()`` (not coroutines) from another
    thread raise the same ``RuntimeError`` as every other method (they answered, unchecked);
    ``repr`` still works from anywhere (a log line, a debugger)."""
    router = Router()
    raft = await Raft.new(1, fast_config(), router.factory(1), MemLogStore(), MemStateMachine())
    try:
        await raft.initialize([1])
        await raft.wait(5).state(ServerState.LEADER)
        reads: list[Callable[[], Any]] = [lambda: raft.metrics, raft.is_leader, raft.current_leader]
        for read in reads:
            err = await asyncio.to_thread(_raises, read)
            assert isinstance(err, RuntimeError), repr(err)
            assert "belongs to the event loop it was created on" in str(err)
        assert "leader" in (await asyncio.to_thread(repr, raft)).lower()
        assert raft.is_leader() and raft.current_leader() == 1 and raft.metrics.running
    finally:
        await raft.shutdown()


def _raises(call: Callable[[], Any]) -> BaseException | None:
    try:
        call()
    except BaseException as e:  # noqa: BLE001 - returned to the test
        return e
    return None


def test_a_call_from_a_later_loop_on_the_same_thread_is_refused() -> None:
    """The node's loop ended (``asyncio.run`` returned), and another ``asyncio.run`` on the same
    thread uses the node: refused, instead of queueing to a node whose tasks are gone."""

    async def make() -> Raft:
        router = Router()
        return await Raft.new(1, fast_config(), router.factory(1), MemLogStore(), MemStateMachine())

    raft = asyncio.run(make())

    async def use() -> None:
        await asyncio.wait_for(raft.client_write(b"x"), 5)

    with pytest.raises(RuntimeError, match="belongs to the event loop it was created on") as refused:
        asyncio.run(use())
    # Not "call it from that loop": it is closed. (The same for a cleanup's shutdown().)
    assert "that loop is closed, and the node ended with it: start a new node with Raft.new" in str(refused.value)
    with pytest.raises(RuntimeError, match="that loop is closed"):
        asyncio.run(raft.shutdown())
