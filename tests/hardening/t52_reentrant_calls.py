"""A state machine that calls its own node and awaits what only it can finish.

``apply`` runs on the node's state machine worker (or, until it first suspends, inline on
the node's core task), and the node applies one batch at a time. A call that waits for an
entry to be applied (``client_write``, ``client_write_many``, ``ensure_linearizable``, the
membership changes) or for the worker itself (``get_current_snapshot``), awaited from inside
``apply``, waits for the very call it is in: it never returned, the node applied nothing
more, and every client of the node waited with it, with nothing logged. Such a call now
raises ``RuntimeError`` at once, naming the call and the way out (run it in a task of its
own); the state machine decides what to do with the error (raised on out of ``apply``, it
stops the node with ``StorageError``, as any failure of ``apply`` does).

So too every condition of ``raft.wait()``: the metrics it waits on move only as the node's
core task publishes them and its worker applies, and ``apply`` runs on one of those two.
Awaited there with no timeout, it never returned; with one, the node stood still that long
and the wait failed with a ``WaitTimeout`` that did not say why.
A condition that holds already when awaited there returns the metrics at once (it was
refused as well, though nothing waits for it: ``wait().state(LEADER)`` on the leader, say).

A call that does not wait for apply (``trigger.snapshot()``, ``raft.metrics``) is still
taken from inside ``apply``, and so is a write or a wait handed to a task of its own
(``asyncio.create_task(raft.client_write(...))``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from integration.checks import fast_config

from openraft_py import BasicNode, Config, Normal, Raft, ReadPolicy, ServerState
from openraft_py.storage.memory import MemStateMachine
from openraft_py.testing.cluster import Cluster
from openraft_py.types import Entry

pytestmark = pytest.mark.timeout(30)

# Generous: a call answered "promptly" returns within this many seconds.
BOUND = 2.0


def steady() -> Config:
    """``fast_config`` with election timeouts of 300-600 ms: every test here writes to the node
    that led when it started and hooks that node's state machine (``CallsItsNode.sm``), so
    needs one leader throughout. ``fast_config``'s 50-100 ms passed now and then without a
    heartbeat on a loaded machine, another node was elected, and the write failed with
    ``ForwardToLeader`` (seen at load 9 on 2 cores). No slower to start: the initialized node
    campaigns at once."""
    return fast_config(election_timeout_min=300, election_timeout_max=600)

CALLS: dict[str, Callable[[Raft], Awaitable[Any]]] = {
    "client_write": lambda r: r.client_write(b"follow-up"),
    "client_write_many": lambda r: r.client_write_many([b"follow-up"]),
    "ensure_linearizable": lambda r: r.ensure_linearizable(ReadPolicy.READ_INDEX),
    "add_learner": lambda r: r.add_learner(4, BasicNode(""), blocking=False),
    "get_current_snapshot": lambda r: r.get_current_snapshot(),
    # Each ``wait()`` condition, with no timeout, for something the node reaches only once
    # the triggering entry's ``apply`` returned (the entry after it applied, or logged).
    "wait().applied_index_at_least": lambda r: r.wait().applied_index_at_least(next_index(r)),
    "wait().log_index_at_least": lambda r: r.wait().log_index_at_least(next_index(r) + 5),
    "wait().metrics": lambda r: r.wait().metrics(lambda m: m.last_log_index > next_index(r) + 5, "far"),
    "wait().state": lambda r: r.wait().state(ServerState.FOLLOWER),
}


def next_index(raft: Raft) -> int:
    """One past the last log index the node has now (not reached while the node stands still)."""
    return raft.metrics.last_log_index + 1


class CallsItsNode(MemStateMachine):
    """A ``MemStateMachine`` that, applying the entry ``b"trigger"`` on ``raft``'s node, awaits
    ``call(raft)`` (bounded by ``BOUND``) and records the outcome in ``outcome``."""

    raft: Raft | None = None
    call: Callable[[Raft], Awaitable[Any]] | None = None
    outcome: str | None = None
    suspend_first = False

    async def apply(self, entries: list[Entry]) -> list[Any]:
        out = await super().apply(entries)
        raft, call = CallsItsNode.raft, CallsItsNode.call
        if raft is None or call is None or self is not CallsItsNode.sm:
            return out
        if any(isinstance(e.payload, Normal) and e.payload.data == b"trigger" for e in entries):
            if CallsItsNode.suspend_first:
                await asyncio.sleep(0)  # now on the worker's task, not inline on the core's
            try:
                # Awaited here, on this task (``asyncio.wait_for`` would run it in a task of
                # its own on 3.11): the caller's own bound is around the triggering write.
                await call(raft)
                CallsItsNode.outcome = "returned"
            except RuntimeError as e:
                CallsItsNode.outcome = f"RuntimeError: {e}"
        return out

    sm: MemStateMachine | None = None


async def leader(c: Cluster[CallsItsNode, Any]) -> Raft:
    await c.start({1, 2, 3})
    lid = await c.wait_for_leader()
    CallsItsNode.raft = c.nodes[lid]
    CallsItsNode.sm = c.state_machines[lid]
    return c.nodes[lid]


@pytest.mark.parametrize("suspend_first", [False, True], ids=["inline", "worker"])
@pytest.mark.parametrize("name", sorted(CALLS))
async def test_a_call_from_inside_apply_that_waits_for_apply_is_refused(name: str, suspend_first: bool) -> None:
    CallsItsNode.call, CallsItsNode.outcome, CallsItsNode.suspend_first = CALLS[name], None, suspend_first
    async with Cluster(steady(), state_machine=CallsItsNode) as c:
        raft = await leader(c)
        await asyncio.wait_for(raft.client_write(b"trigger"), 2 * BOUND)
        outcome = CallsItsNode.outcome or ""
        assert outcome.startswith("RuntimeError"), outcome
        assert f"{name} was called from inside node {raft.id}'s own state machine" in outcome
        assert "asyncio.create_task" in outcome
        # The node goes on: the state machine caught the error.
        CallsItsNode.call = None
        await asyncio.wait_for(raft.client_write(b"after"), BOUND)
        assert raft.metrics.running


async def test_the_error_raised_out_of_apply_stops_the_node_instead_of_hanging_it() -> None:
    class Raises(CallsItsNode):
        async def apply(self, entries: list[Entry]) -> list[Any]:
            out = await MemStateMachine.apply(self, entries)
            if self is CallsItsNode.sm and any(
                isinstance(e.payload, Normal) and e.payload.data == b"trigger" for e in entries
            ):
                assert CallsItsNode.raft is not None
                await CallsItsNode.raft.client_write(b"follow-up")  # not caught
            return out

    CallsItsNode.call = None
    async with Cluster(steady(), state_machine=Raises) as c:
        raft = await leader(c)
        with pytest.raises(Exception) as info:
            await asyncio.wait_for(raft.client_write(b"trigger"), BOUND)
        assert "client_write was called from inside node" in str(info.value)
        assert not raft.metrics.running


async def test_calls_that_do_not_wait_for_apply_and_a_write_and_a_wait_in_tasks_of_their_own_are_taken() -> None:
    spawned: list[asyncio.Task[Any]] = []

    async def call(raft: Raft) -> None:
        await raft.trigger.snapshot()
        await raft.trigger.heartbeat()
        spawned.append(asyncio.create_task(raft.client_write(b"in a task of its own")))
        spawned.append(asyncio.create_task(raft.wait(BOUND).applied_index_at_least(next_index(raft))))

    CallsItsNode.call, CallsItsNode.outcome, CallsItsNode.suspend_first = call, None, False
    async with Cluster(steady(), state_machine=CallsItsNode) as c:
        raft = await leader(c)
        await asyncio.wait_for(raft.client_write(b"trigger"), BOUND)
        assert CallsItsNode.outcome == "returned"
        CallsItsNode.call = None
        resp = await asyncio.wait_for(spawned[0], BOUND)
        assert resp.log_id.index > 0
        m = await asyncio.wait_for(spawned[1], BOUND)
        assert m.last_applied is not None


async def test_a_write_from_a_task_of_its_own_does_not_look_the_task_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check costs a write nothing while the node's own tasks are parked waiting for work
    (``RaftCore.parked``, ``StateMachineWorker._idle``), as they are whenever a writer runs
    with stores that do not suspend: the loop's current task is looked up only when one of
    them may be the caller (it was looked up on every write, +3% of an in-process write's
    instructions at 256 writers). The refusals above are the other half: still made."""
    import openraft_py.raft as raft_module

    lookups: list[object] = []
    real = raft_module._current_task

    def counted(loop: asyncio.AbstractEventLoop) -> asyncio.Task[Any] | None:
        lookups.append(loop)
        return real(loop)

    CallsItsNode.call = None
    async with Cluster(steady(), state_machine=MemStateMachine) as c:
        await c.start({1, 2, 3})
        raft = c.nodes[await c.wait_for_leader()]
        await asyncio.wait_for(raft.client_write(b"warm-up"), BOUND)
        monkeypatch.setattr(raft_module, "_current_task", counted)
        for i in range(20):
            await asyncio.wait_for(raft.client_write(b"w%d" % i), BOUND)  # one at a time: the core is parked
        await asyncio.wait_for(asyncio.gather(*(raft.client_write(b"many") for _ in range(50))), BOUND)
        assert raft.metrics.running
    assert lookups == [], f"{len(lookups)} task lookups for 70 writes"


# Conditions that hold already when awaited from inside ``apply``: they return the metrics at
# once (they were refused as the conditions that would wait, though nothing waits for them).
HELD: dict[str, Callable[[Raft], Awaitable[Any]]] = {
    "wait().state": lambda r: r.wait().state(ServerState.LEADER),
    "wait().current_leader": lambda r: r.wait().current_leader(r.id),
    "wait().voter_ids": lambda r: r.wait().voter_ids({1, 2, 3}),
    "wait().log_index_at_least": lambda r: r.wait().log_index_at_least(r.metrics.last_log_index),
    "wait().applied_index_at_least": lambda r: r.wait().applied_index_at_least(0),
    "wait().metrics": lambda r: r.wait().metrics(lambda m: m.running, "running"),
}


@pytest.mark.parametrize("suspend_first", [False, True], ids=["inline", "worker"])
@pytest.mark.parametrize("name", sorted(HELD))
async def test_a_wait_from_inside_apply_for_a_condition_that_holds_returns_at_once(name: str, suspend_first: bool) -> None:
    CallsItsNode.call, CallsItsNode.outcome, CallsItsNode.suspend_first = HELD[name], None, suspend_first
    async with Cluster(steady(), state_machine=CallsItsNode) as c:
        raft = await leader(c)
        await asyncio.wait_for(raft.client_write(b"warm-up"), BOUND)  # (an entry applied before)
        await asyncio.wait_for(raft.client_write(b"trigger"), BOUND)
        assert CallsItsNode.outcome == "returned"
        CallsItsNode.call = None
        await asyncio.wait_for(raft.client_write(b"after"), BOUND)
