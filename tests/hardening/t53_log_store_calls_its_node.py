"""A log store that calls its own node and awaits the answer.

The log store runs on the node's core task (``append``, ``truncate_after``, ``purge``,
``save_committed``), and every call of the ``Raft`` handle is answered by that task: a
store method that awaited one (``await raft.trigger.heartbeat()`` from ``append``, say)
waited for the task it was running on. The node stopped for good, its clients with it, with
nothing logged. Such a call now raises ``RuntimeError`` at once, naming it (so does
``start_append_entries``, whose future that task answers too; ``submit_append_entries``
returns at once and is taken: its reply comes once the store returned); a state machine's
``apply`` running inline on that task (until it first suspends) may still make the calls
that do not wait for apply (``tests/hardening/t52_reentrant_calls.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from integration.checks import fast_config

from openraft_py import AppendEntriesRequest, AppendEntriesResponse, Normal, Raft
from openraft_py.storage import IOFlushed
from openraft_py.storage.memory import MemLogStore
from openraft_py.testing.cluster import Cluster
from openraft_py.types import Entry

pytestmark = pytest.mark.timeout(30)

BOUND = 2.0

CALLS: dict[str, Callable[[Raft], Awaitable[Any]]] = {
    "trigger.heartbeat": lambda r: r.trigger.heartbeat(),
    "trigger.snapshot": lambda r: r.trigger.snapshot(),
    "client_write": lambda r: r.client_write(b"follow-up"),
    # A peer request (a heartbeat; never handled: refused before it reaches the core). It
    # went through ``start_append_entries``, past ``_call``'s check, and waited for good.
    "append_entries": lambda r: r.append_entries(AppendEntriesRequest(r.metrics.vote, None, [], None)),
    # A wait on the metrics, which this very task publishes.
    "wait().applied_index_at_least": lambda r: r.wait().applied_index_at_least(r.metrics.last_log_index + 1),
    # ``append_entries`` without a coroutine: its future is answered by the core task, which
    # awaits the store. It took the request and the store waited for good.
    "start_append_entries": lambda r: r.start_append_entries(heartbeat_of(r)),
}


def heartbeat_of(raft: Raft) -> AppendEntriesRequest:
    """A heartbeat from the node's own leader."""
    return AppendEntriesRequest(raft.metrics.vote, None, [], None)


REPLIES: list[object] = []
REPLIED = asyncio.Event()


def replied(resp: object) -> None:
    REPLIES.append(resp)
    REPLIED.set()


async def submitted(raft: Raft) -> None:
    """``submit_append_entries`` of a heartbeat, its reply recorded in ``REPLIES`` (not awaited)."""
    raft.submit_append_entries(heartbeat_of(raft), replied)


class CallsItsNode(MemLogStore):
    """A ``MemLogStore`` whose ``append`` of the entry ``b"trigger"`` on ``armed``'s store
    awaits ``call(raft)`` and records the outcome."""

    raft: Raft | None = None
    armed: MemLogStore | None = None
    call: Callable[[Raft], Awaitable[Any]] | None = None
    outcome: str | None = None

    async def append(self, entries: list[Entry], callback: IOFlushed) -> None:
        await super().append(entries, callback)
        raft, call = CallsItsNode.raft, CallsItsNode.call
        if self is not CallsItsNode.armed or raft is None or call is None:
            return
        if any(isinstance(e.payload, Normal) and e.payload.data == b"trigger" for e in entries):
            CallsItsNode.armed = None
            try:
                await call(raft)
                CallsItsNode.outcome = "returned"
            except RuntimeError as e:
                CallsItsNode.outcome = f"RuntimeError: {e}"


async def triggered(call: Callable[[Raft], Awaitable[Any]]) -> tuple[str, int]:
    """Start three nodes whose leader's store awaits ``call`` in its ``append`` of
    ``b"trigger"``: the call's outcome and the leader's id, once the leader took a write
    after it (the node went on)."""
    CallsItsNode.call, CallsItsNode.outcome = call, None
    async with Cluster(fast_config(), log_store=lambda nid, disk: CallsItsNode(disk)) as c:
        await c.start({1, 2, 3})
        lid = await c.wait_for_leader()
        raft = c.nodes[lid]
        CallsItsNode.raft, CallsItsNode.armed = raft, c.log_stores[lid]
        await asyncio.wait_for(raft.client_write(b"trigger"), BOUND)
        outcome = CallsItsNode.outcome or ""
        await asyncio.wait_for(raft.client_write(b"after"), BOUND)
        assert raft.metrics.running
        return outcome, lid


@pytest.mark.parametrize("name", sorted(CALLS))
async def test_a_call_from_inside_the_log_store_is_refused(name: str) -> None:
    outcome, lid = await triggered(CALLS[name])
    assert outcome.startswith("RuntimeError"), outcome
    assert f"{name} was called from inside node {lid}'s own state machine or log store" in outcome


async def test_submit_append_entries_from_inside_the_log_store_is_taken_and_replied_after() -> None:
    REPLIES.clear()
    REPLIED.clear()
    outcome, _ = await triggered(submitted)
    assert outcome == "returned"
    await asyncio.wait_for(REPLIED.wait(), BOUND)
    assert isinstance(REPLIES[0], AppendEntriesResponse), REPLIES
