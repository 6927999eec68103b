"""A state machine that awaits ``raft.wait(...)`` of its own node from inside ``apply``.

``Raft.wait`` waits on the node's metrics, which only the node's core task publishes (at the
end of each pass), and the applied index, which only the state machine's worker moves on,
one batch at a time. ``apply`` runs on one of those two tasks (inline on the core task until
it first suspends, then on the worker's): a condition awaited there that needs the node to
go on (the entry being applied, or any later one, to show as applied; on the core task,
anything at all to change) waited for the very task it was awaited on. With no timeout it
never returned: the node applied nothing more and its clients waited with it, with nothing
logged; with a timeout the node stood still for that long and then the wait failed with a
``WaitTimeout`` that did not say why. Like the calls of ``t52_reentrant_calls.py``, every
condition of ``raft.wait()`` awaited on the node's own tasks now raises ``RuntimeError``
at once, naming the condition and the way out (a task of its own).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from integration.checks import fast_config

from openraft_py import Normal, Raft, ServerState
from openraft_py.storage import IOFlushed
from openraft_py.storage.memory import MemLogStore, MemStateMachine
from openraft_py.testing.cluster import Cluster
from openraft_py.types import Entry

pytestmark = pytest.mark.timeout(30)

BOUND = 2.0

# Each condition, awaited with no timeout, for something the node reaches only once the
# triggering entry's ``apply`` returned (the entry after it applied, or that entry logged).
CONDITIONS: dict[str, Callable[[Raft], Awaitable[Any]]] = {
    "applied_index_at_least": lambda r: r.wait().applied_index_at_least(_next(r)),
    "log_index_at_least": lambda r: r.wait().log_index_at_least(_next(r) + 5),
    "metrics": lambda r: r.wait().metrics(lambda m: m.last_log_index > _next(r) + 5, "far"),
    "state": lambda r: r.wait().state(ServerState.FOLLOWER),
}


def _next(raft: Raft) -> int:
    """One past the last log index the node has now (not reached while the node stands still)."""
    return raft.metrics.last_log_index + 1


class WaitsInApply(MemStateMachine):
    """A ``MemStateMachine`` that, applying the entry ``b"trigger"`` on the armed node,
    awaits ``call(raft)`` and records the outcome in ``outcome``."""

    raft: Raft | None = None
    sm: MemStateMachine | None = None
    call: Callable[[Raft], Awaitable[Any]] | None = None
    outcome: str | None = None
    suspend_first = False

    async def apply(self, entries: list[Entry]) -> list[Any]:
        out = await super().apply(entries)
        raft, call = WaitsInApply.raft, WaitsInApply.call
        if raft is None or call is None or self is not WaitsInApply.sm:
            return out
        if any(isinstance(e.payload, Normal) and e.payload.data == b"trigger" for e in entries):
            WaitsInApply.call = None
            if WaitsInApply.suspend_first:
                await asyncio.sleep(0)  # now on the worker's task, not inline on the core's
            try:
                await call(raft)  # on this task (no ``wait_for``: a task of its own on 3.11)
                WaitsInApply.outcome = "returned"
            except RuntimeError as e:
                WaitsInApply.outcome = f"RuntimeError: {e}"
        return out


async def _leader(c: Cluster[Any, Any]) -> Raft:
    await c.start({1, 2, 3})
    lid = await c.wait_for_leader()
    return c.nodes[lid]


@pytest.mark.parametrize("suspend_first", [False, True], ids=["inline", "worker"])
@pytest.mark.parametrize("name", sorted(CONDITIONS))
async def test_a_wait_from_inside_apply_is_refused(name: str, suspend_first: bool) -> None:
    WaitsInApply.outcome, WaitsInApply.suspend_first = None, suspend_first
    async with Cluster(fast_config(), state_machine=WaitsInApply) as c:
        raft = await _leader(c)
        WaitsInApply.raft, WaitsInApply.sm = raft, c.state_machines[raft.id]
        WaitsInApply.call = CONDITIONS[name]
        # Bounded: before the fix, the wait (with no timeout) never returned, nor this write.
        await asyncio.wait_for(raft.client_write(b"trigger"), BOUND)
        outcome = WaitsInApply.outcome or ""
        assert outcome.startswith("RuntimeError"), outcome
        assert f"wait().{name} was called from inside node {raft.id}'s own state machine" in outcome
        assert "asyncio.create_task" in outcome
        await asyncio.wait_for(raft.client_write(b"after"), BOUND)
        assert raft.metrics.running


async def test_a_wait_in_a_task_of_its_own_is_taken() -> None:
    spawned: list[asyncio.Task[Any]] = []

    async def call(raft: Raft) -> None:
        spawned.append(asyncio.create_task(raft.wait(BOUND).applied_index_at_least(_next(raft))))

    WaitsInApply.outcome, WaitsInApply.suspend_first = None, False
    async with Cluster(fast_config(), state_machine=WaitsInApply) as c:
        raft = await _leader(c)
        WaitsInApply.raft, WaitsInApply.sm, WaitsInApply.call = raft, c.state_machines[raft.id], call
        await asyncio.wait_for(raft.client_write(b"trigger"), BOUND)
        assert WaitsInApply.outcome == "returned"
        await asyncio.wait_for(raft.client_write(b"after"), BOUND)
        m = await asyncio.wait_for(spawned[0], BOUND)
        assert m.last_applied is not None


class WaitsInAppend(MemLogStore):
    """A ``MemLogStore`` whose ``append`` of ``b"trigger"`` on the armed store awaits
    ``raft.wait().applied_index_at_least(...)`` (the log store runs on the core task)."""

    raft: Raft | None = None
    armed: MemLogStore | None = None
    outcome: str | None = None

    async def append(self, entries: list[Entry], callback: IOFlushed) -> None:
        await super().append(entries, callback)
        raft = WaitsInAppend.raft
        if self is not WaitsInAppend.armed or raft is None:
            return
        if any(isinstance(e.payload, Normal) and e.payload.data == b"trigger" for e in entries):
            WaitsInAppend.armed = None
            try:
                await raft.wait().applied_index_at_least(_next(raft))
                WaitsInAppend.outcome = "returned"
            except RuntimeError as e:
                WaitsInAppend.outcome = f"RuntimeError: {e}"


async def test_a_wait_from_inside_the_log_store_is_refused() -> None:
    WaitsInAppend.outcome = None
    async with Cluster(fast_config(), log_store=lambda nid, disk: WaitsInAppend(disk)) as c:
        raft = await _leader(c)
        WaitsInAppend.raft, WaitsInAppend.armed = raft, c.log_stores[raft.id]
        await asyncio.wait_for(raft.client_write(b"trigger"), BOUND)
        outcome = WaitsInAppend.outcome or ""
        assert outcome.startswith("RuntimeError"), outcome
        assert f"wait().applied_index_at_least was called from inside node {raft.id}'s own" in outcome
        await asyncio.wait_for(raft.client_write(b"after"), BOUND)
        assert raft.metrics.running
