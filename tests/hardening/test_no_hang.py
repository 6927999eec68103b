"""No caller ever hangs (issue 9, item 3): whatever stops a node (shutdown, a storage error,
an exception inside an engine call), every pending and later call on its ``Raft`` handle
fails promptly with the node's ``Fatal`` error (``Stopped``, ``StorageError``, ``Panicked``);
the other nodes keep running, commit, and the logs agree."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest
from integration.checks import check_applied_prefix, check_log_matching, fast_config

from openraft_py import Fatal, Panicked, Stopped, StorageError
from openraft_py.core.messages import EngineCall
from openraft_py.core.sm_worker import StateMachineWorker
from openraft_py.storage.memory import MemDisk, MemLogStore
from openraft_py.testing.cluster import Cluster
from openraft_py.types import AppendEntriesRequest, BasicNode, ServerState, Vote, VoteRequest

pytestmark = pytest.mark.timeout(30)

# Generous: a call answered "promptly" returns within this many seconds.
BOUND = 2.0

ERRORS: dict[str, type[Fatal]] = {"shutdown": Stopped, "storage": StorageError, "panic": Panicked}


class BreakableLogStore(MemLogStore):
    """A ``MemLogStore`` whose appends fail with ``OSError`` once ``broken`` is set."""

    def __init__(self, disk: MemDisk) -> None:
        super().__init__(disk)
        self.broken = False

    async def append(self, entries: list[Any], callback: Any) -> None:
        if self.broken:
            raise OSError("disk gone")
        await super().append(entries, callback)


async def within(aw: Awaitable[Any]) -> Any:
    """Await ``aw``, failing the test (not hanging) if it takes longer than ``BOUND``."""
    return await asyncio.wait_for(aw, BOUND)


async def expect(aw: Awaitable[Any], err: type[BaseException]) -> BaseException:
    """``aw`` raises ``err`` within ``BOUND``; return the exception."""
    with pytest.raises(err) as info:
        await within(aw)
    return info.value


def raising_call(raft: Any, exc: BaseException) -> asyncio.Future[Any]:
    """Send the core an engine call whose function raises ``exc`` (a bug inside the engine);
    return the caller's future."""

    def fn(eng: Any, tx: Any, now: float) -> None:
        raise exc

    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    raft._core.send_msg(EngineCall(fn, fut))
    return fut


async def settle_membership(c: Cluster, leader: int) -> int:
    """Commit a write so the initial membership is committed; return its index."""
    resp = await within(c.nodes[leader].client_write(b"first"))
    await c.wait_applied(resp.log_id.index)
    return int(resp.log_id.index)


async def commits_after(c: Cluster, among: set[int], payload: bytes) -> int:
    """A leader among ``among`` commits ``payload`` on every node of ``among``; return the
    index."""
    leader = await c.wait_for_leader(among=among)
    resp = await within(c.nodes[leader].client_write(payload))
    await c.wait_applied(resp.log_id.index, ids=among)
    return int(resp.log_id.index)


async def later_calls_fail(raft: Any, err: type[Fatal]) -> None:
    """Every kind of call on a stopped node fails at once with ``err``."""
    vote = raft.metrics.vote
    calls: list[Awaitable[Any]] = [
        raft.client_write(b"late"),
        raft.client_write_many([b"a", b"b"]),
        raft.client_write_many([]),  # returned [] as if the node ran
        raft.ensure_linearizable(),
        raft.get_current_snapshot(),
        raft.wait(None).state(ServerState.LEADER),
        raft.wait(5).log_index_at_least(10**9),
        raft.append_entries(AppendEntriesRequest(vote, None, [], None)),
        raft.vote(VoteRequest(Vote.new(vote.term + 1, 9), None)),
        raft.trigger.elect(),
        raft.trigger.snapshot(),
        raft.add_learner(9, BasicNode()),
        raft.change_membership({1, 2}),
    ]
    for aw in calls:
        await expect(aw, err)
    assert raft.metrics.running is False
    assert raft.metrics.state == ServerState.SHUTDOWN
    assert raft.current_leader() != raft.metrics.id, "a stopped node names itself the leader"


@pytest.mark.parametrize("cause", sorted(ERRORS))
async def test_every_pending_call_fails_when_the_leader_stops(cause: str) -> None:
    """An isolated leader holds a pending write, a read waiting for a quorum, a metrics
    wait, a blocking add_learner waiting for catch-up and a get_current_snapshot queued on a
    busy state machine; stopping it answers each of them with the node's error."""
    # 300-600 ms election timeouts: the node isolated must still be the leader found before
    # (under load a stall of ``fast_config``'s 50-100 ms elected another node first, and the
    # isolated follower's log never grew: TimeoutError, seen at load 13 on 2 cores).
    config = fast_config(election_timeout_min=300, election_timeout_max=600)
    c = Cluster(config, seed=3, log_store=lambda nid, disk: BreakableLogStore(disk))
    try:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        await settle_membership(c, leader)
        raft = c.nodes[leader]
        sm = c.state_machines[leader]
        # A state machine call that does not return until released.
        gate = asyncio.Event()
        real_snapshot = sm.get_current_snapshot

        async def slow_snapshot() -> Any:
            await gate.wait()
            return await real_snapshot()

        sm.get_current_snapshot = slow_snapshot
        c.router.isolate(leader)
        pending = {
            "write": asyncio.ensure_future(raft.client_write(b"never committed")),
            "write_many": asyncio.ensure_future(raft.client_write_many([b"x", b"y"])),
            "read": asyncio.ensure_future(raft.ensure_linearizable()),
            "wait": asyncio.ensure_future(raft.wait(None).log_index_at_least(10**9)),
            "snapshot": asyncio.ensure_future(raft.get_current_snapshot()),
            "add_learner": asyncio.ensure_future(raft.add_learner(4, BasicNode())),
        }
        # Let every call reach the core (the write is appended, the read is waiting).
        await within(raft.wait(BOUND).log_index_at_least(raft.metrics.last_log_index + 4))
        assert not any(f.done() for f in pending.values()), {k: f for k, f in pending.items() if f.done()}

        err = ERRORS[cause]
        if cause == "shutdown":
            await within(raft.shutdown())
        elif cause == "storage":

            c.log_stores[leader].broken = True
            pending["failed_write"] = asyncio.ensure_future(raft.client_write(b"hits the broken disk"))
        else:
            pending["bug"] = raising_call(raft, RuntimeError("a bug inside the engine"))

        for f in pending.values():
            await expect(f, err)
        if cause != "shutdown":
            assert raft.metrics.error is not None and ("disk gone" in raft.metrics.error or "a bug" in raft.metrics.error)
        await later_calls_fail(raft, err)
        gate.set()

        # The other two elect a leader and commit; the logs agree.
        others = set(c.nodes) - {leader}
        await commits_after(c, others, b"after")
        c.router.unregister(leader)
        await within(raft.shutdown())  # idempotent on a stopped node
        c.nodes.pop(leader)
        c.router.heal()
        await c.restart(leader)
        last = await commits_after(c, {1, 2, 3}, b"all three")
        await c.wait_applied(last)
        check_log_matching(c.disks)
        check_applied_prefix(c.disks)
    finally:
        await c.shutdown()


@pytest.mark.parametrize("cause", sorted(ERRORS))
async def test_add_learner_waiting_for_catch_up_fails_when_the_leader_stops(cause: str) -> None:
    """A blocking add_learner whose entry committed waits (on metrics) for a learner that
    never answers; stopping the leader ends that wait with the node's error."""
    c = Cluster(fast_config(), seed=8, log_store=lambda nid, disk: BreakableLogStore(disk))
    try:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        index = await settle_membership(c, leader)
        raft = c.nodes[leader]
        adding = asyncio.ensure_future(raft.add_learner(4, BasicNode()))  # node 4 never starts
        m = await within(raft.wait(BOUND).applied_index_at_least(index + 1, "the learner entry applied"))
        assert 4 in m.membership_config.membership.nodes
        await within(raft.wait(BOUND).metrics(lambda m: m.replication is not None and 4 in m.replication))
        assert not adding.done()
        err = ERRORS[cause]
        if cause == "shutdown":
            await within(raft.shutdown())
        elif cause == "storage":
            c.log_stores[leader].broken = True
            await expect(raft.client_write(b"hits the broken disk"), StorageError)
        else:
            await expect(raising_call(raft, RuntimeError("a bug")), Panicked)
        await expect(adding, err)
        await later_calls_fail(raft, err)
        others = set(c.nodes) - {leader}
        await commits_after(c, others, b"after")
        check_log_matching(c.disks)
        check_applied_prefix(c.disks)
    finally:
        await c.shutdown()


async def test_exception_inside_an_engine_call_answers_the_caller_with_panicked() -> None:
    """A follower's engine method that raises (not an ApiError) stops that node with
    ``Panicked``: the caller and the calls drained in the same batch are answered; the
    cluster goes on without it."""
    c = Cluster(fast_config(), seed=4)
    try:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        await settle_membership(c, leader)
        follower = min(set(c.nodes) - {leader})
        raft = c.nodes[follower]

        def broken(*args: Any, **kw: Any) -> None:
            raise KeyError("half-way through a change")

        raft._core.engine.handle_vote_req = broken
        vote = raft.metrics.vote
        # Sent in one loop turn: they are drained in one batch with the failing call.
        first = asyncio.ensure_future(raft.vote(VoteRequest(Vote.new(vote.term, 99), None)))
        after = [
            asyncio.ensure_future(raft.append_entries(AppendEntriesRequest(vote, None, [], None))),
            asyncio.ensure_future(raft.client_write(b"to a follower")),
            asyncio.ensure_future(raft.trigger.heartbeat()),
        ]
        e = await expect(first, Panicked)
        assert "half-way through a change" in str(e)
        assert isinstance(e.__cause__, KeyError)
        for f in after:
            await expect(f, Panicked)
        await expect(raft.wait(None).state(ServerState.FOLLOWER, "never again"), Panicked)
        await later_calls_fail(raft, Panicked)
        assert "KeyError" in (raft.metrics.error or "")

        others = set(c.nodes) - {follower}
        for nid in others:
            assert c.nodes[nid].metrics.running
        await commits_after(c, others, b"without the panicked follower")
        await c.restart(follower)
        last = await commits_after(c, {1, 2, 3}, b"with it again")
        await c.wait_applied(last)
        check_log_matching(c.disks)
        check_applied_prefix(c.disks)
    finally:
        await c.shutdown()


async def test_engine_method_raising_on_the_leader_fails_its_pending_writes() -> None:
    """``add_learner`` whose engine method raises a non-ApiError on the leader: the caller
    gets ``Panicked`` (it used to hang), and so do writes waiting to commit there."""
    c = Cluster(fast_config(), seed=5)
    try:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        await settle_membership(c, leader)
        raft = c.nodes[leader]
        c.router.isolate(leader)
        waiting = asyncio.ensure_future(raft.client_write(b"waits for a quorum"))
        await within(raft.wait(BOUND).log_index_at_least(raft.metrics.last_log_index + 1))

        def broken(*args: Any, **kw: Any) -> None:
            raise TypeError("'<' not supported between instances of 'str' and 'int'")

        raft._core.engine.add_learner = broken
        await expect(raft.add_learner(4, BasicNode()), Panicked)
        await expect(waiting, Panicked)
        await later_calls_fail(raft, Panicked)
        c.router.heal()
        others = set(c.nodes) - {leader}
        await commits_after(c, others, b"new leader")
        check_log_matching(c.disks)
        check_applied_prefix(c.disks)
    finally:
        await c.shutdown()


async def test_get_current_snapshot_on_a_stopped_node_fails_at_once() -> None:
    c = Cluster(fast_config(), seed=6)
    try:
        await c.start({1})
        await c.wait_for_leader()
        raft = c.nodes[1]
        assert await within(raft.get_current_snapshot()) is None
        await within(raft.shutdown())
        for _ in range(3):
            await expect(raft.get_current_snapshot(), Stopped)
        await expect(raft.wait(None).state(ServerState.LEADER), Stopped)
        await expect(raft.wait(0).state(ServerState.LEADER), Stopped)
    finally:
        await c.shutdown()


# -- the state machine worker on its own -----------------------------------------------------


class _Core:
    """What the worker uses of ``RaftCore``: notifications and the fatal error."""

    def __init__(self) -> None:
        self.fatal: Fatal | None = None
        self.notes: list[Any] = []

    def notify(self, note: Any) -> None:
        self.notes.append(note)


class _FailingSM:
    """A state machine whose ``apply`` fails; other calls wait for ``gate``."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def apply(self, entries: list[Any]) -> list[Any]:
        raise OSError("apply failed")

    async def get_current_snapshot(self) -> None:
        await self.gate.wait()


async def test_worker_fails_queued_and_later_calls_when_apply_fails() -> None:
    """A call queued behind an apply that fails (the core may be awaiting it, e.g. while
    receiving a snapshot) is answered with the StorageError, and so is every later call."""
    from openraft_py.types import Entry, LogId, Normal

    core = _Core()
    w = StateMachineWorker(core.notify, _FailingSM(), 16)  # type: ignore[arg-type]
    task = asyncio.ensure_future(w.run())
    w.submit([Entry(LogId(1, 0), Normal(b"x"))], [])
    queued = w.call(lambda sm: sm.get_current_snapshot())
    e = await expect(queued, StorageError)
    assert "apply failed" in str(e)
    await expect(w.call(lambda sm: sm.get_current_snapshot()), StorageError)
    await within(task)
    assert len(core.notes) == 1 and core.notes[0].error is e


async def test_worker_stop_fails_the_running_call() -> None:
    core = _Core()
    sm = _FailingSM()
    w = StateMachineWorker(core.notify, sm, 16)  # type: ignore[arg-type]
    task = asyncio.ensure_future(w.run())
    running = w.call(lambda s: s.get_current_snapshot())
    queued = w.call(lambda s: s.get_current_snapshot())
    for _ in range(3):
        await asyncio.sleep(0)
    assert not running.done()
    w.stop(Stopped("test stop"))
    task.cancel()
    await expect(running, Stopped)
    await expect(queued, Stopped)
    await expect(w.call(lambda s: s.get_current_snapshot()), Stopped)
    with pytest.raises(asyncio.CancelledError):
        await task
