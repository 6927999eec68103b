"""The router's fast mode hands a leader's AppendEntries to the target's
``Raft.submit_append_entries`` (``RouterClient._submit_direct``): the target calls the
leader's reply from its own pass. These tests hold a follower's answers (its log store
reports appends durable only when the test says so), so that requests are in flight on
that path, and then change what is around them: a fault configured, the target crashed or
failed by its storage, the leader shut down or stepped down. Each time the answer must
come exactly once or be withdrawn, be reported as ``append_entries`` reports it (a stopped
node is ``Unreachable``, never a broken network), and replication must go on."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest

from integration.checks import LogRecords, fast_config, log_of, until
from openraft_py import Entry, Raft, ServerState
from openraft_py.storage import IOFlushed
from openraft_py.storage.memory import MemDisk, MemLogStore
from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(30)

# What the leader logs when the network broke its contract (``_warn_broken``), and what a
# ``Reply`` logs when its callback raised: neither may appear for a target that stopped.
BROKEN = ("WrongResponse", "NoAnswer", "StrayCancel", "expected an RPCError", "reply callback")


class GatedLogStore(MemLogStore):
    """A ``MemLogStore`` whose appends, while ``held``, are readable at once but reported
    durable only by ``release`` (a follower then answers no AppendEntries carrying them)."""

    def __init__(self, disk: MemDisk) -> None:
        super().__init__(disk)
        self.held = False
        self.pending: list[IOFlushed] = []

    async def append(self, entries: list[Entry], callback: IOFlushed) -> None:
        if not self.held:
            await super().append(entries, callback)
            return
        await super().append(entries, _Ignored())  # type: ignore[arg-type]
        self.pending.append(callback)

    def release(self, err: BaseException | None = None) -> None:
        """Report every held append durable (or failed with ``err``) and stop holding."""
        self.held = False
        pending, self.pending = self.pending, []
        for callback in pending:
            callback.io_completed(err)


class _Ignored:
    def io_completed(self, err: BaseException | None) -> None:
        pass


@pytest.fixture
def records() -> Iterator[LogRecords]:
    with LogRecords("openraft_py", logging.DEBUG) as handler:
        yield handler


@pytest.fixture
async def gated() -> AsyncIterator[Cluster]:
    # Election timeouts of 300-600 ms: one leader throughout on a loaded machine.
    c = Cluster(fast_config(election_timeout_min=300, election_timeout_max=600), seed=3,
                log_store=lambda nid, disk: GatedLogStore(disk))
    try:
        yield c
    finally:
        await c.shutdown()


def _broken(records: LogRecords) -> list[str]:
    return [f"{r.levelname} {r.getMessage()}" for r in records.records
            if r.levelno >= logging.WARNING and any(b in r.getMessage() for b in BROKEN)]


def _in_flight(leader: Raft, target: int) -> int:
    """How many of the leader's requests to ``target`` handed over with a callback are
    unanswered (the replication channel's ``_submitted``: the path under test)."""
    stream = leader._core._streams.get(target)
    return 0 if stream is None else len(stream._submitted)


async def _held_request(c: Cluster) -> tuple[int, Raft, int, int]:
    """Start 1, 2, 3; hold one follower's answers and write: the leader id, its handle, the
    held follower and the other one, once the write is committed (by the other) and a
    request carrying it waits, handed over directly, for the held follower's answer."""
    await c.start({1, 2, 3})
    leader_id = await c.wait_for_leader(timeout=5.0)
    leader = c.nodes[leader_id]
    await leader.client_write(b"warm")
    held, other = sorted(n for n in (1, 2, 3) if n != leader_id)
    store = c.log_stores[held]
    assert isinstance(store, GatedLogStore)
    store.held = True
    before = c.router.rpc_count("append_entries", leader_id, held)
    await leader.client_write(b"held")
    await until(lambda: store.pending != [], "the held follower's append")
    assert _in_flight(leader, held) >= 1, "the request is not on the direct submit path"
    assert c.router.rpc_count("append_entries", leader_id, held) > before  # (counted)
    return leader_id, leader, held, other


async def _caught_up(c: Cluster, leader: Raft, node: int) -> None:
    last = (await leader.client_write(b"after")).log_id.index
    await c.nodes[node].wait(10.0).applied_index_at_least(last)


async def test_a_fault_set_while_requests_are_in_flight(gated: Cluster, records: LogRecords) -> None:
    """A partition configured with a request in flight: its answer still comes (the
    request was delivered), later requests go through the fault (the follower gets
    nothing), and after ``heal`` the follower catches up through the direct path again."""
    c = gated
    leader_id, leader, held, other = await _held_request(c)
    c.router.partition({leader_id, other}, {held})
    c.log_stores[held].release()
    await until(lambda: _in_flight(leader, held) == 0, "the answer of the request in flight")
    log_before = log_of(c.disks[held])
    await leader.client_write(b"partitioned")
    assert log_of(c.disks[held]) == log_before  # nothing reached it through the fault
    c.router.heal()
    await _caught_up(c, leader, held)
    assert _broken(records) == []


async def test_the_target_crashed_mid_request(gated: Cluster, records: LogRecords) -> None:
    """The held follower crashes: the leader's request in flight fails as ``Unreachable``
    (logged at DEBUG as a failed request, not as a broken network), and the follower,
    restarted, catches up."""
    c = gated
    leader_id, leader, held, _ = await _held_request(c)
    await c.crash(held)
    await until(lambda: _in_flight(leader, held) == 0, "the failure of the request in flight")
    failed = records.lines(logging.DEBUG, f"replication {leader_id}->{held} failed")
    assert any("has stopped" in line for line in failed), failed
    await c.restart(held)
    await _caught_up(c, leader, held)
    assert _broken(records) == []


async def test_the_target_stopped_by_its_storage_mid_request(gated: Cluster, records: LogRecords) -> None:
    """The held follower's storage fails the held append: the node stops (still
    registered in the router), the leader's request fails as ``Unreachable``, and so does
    every later one, answered from inside the call (the stopped node answers at once)
    without the leader spinning; the leader keeps its leadership with the other follower."""
    c = gated
    leader_id, leader, held, _ = await _held_request(c)
    c.log_stores[held].release(OSError("disk gone"))
    await c.nodes[held].wait(5.0).state(ServerState.SHUTDOWN)
    await until(lambda: _in_flight(leader, held) == 0, "the failure of the request in flight")
    for i in range(3):
        await leader.client_write(f"w{i}".encode())
    assert _in_flight(leader, held) == 0
    assert leader.metrics.state is ServerState.LEADER
    assert _broken(records) == []


async def test_the_leader_shut_down_before_the_answer(gated: Cluster, records: LogRecords) -> None:
    """The leader stops with a request in flight: its channel withdraws the reply (the
    target's ``Reply`` is cancelled and lets go of the callback); the held follower's answer,
    released after, reaches nobody and nothing fails; the others elect a new leader."""
    c = gated
    leader_id, leader, held, other = await _held_request(c)
    stream = leader._core._streams[held]
    handles = [h for h in stream._submitted.values() if h is not None]
    assert handles
    await c.crash(leader_id)
    assert all(h.done() for h in handles)  # withdrawn
    c.log_stores[held].release()
    new = await c.wait_for_leader(timeout=10.0)
    assert new in (held, other)
    await _caught_up(c, c.nodes[new], held if new == other else other)
    assert _broken(records) == []


async def test_an_answer_after_the_leader_stepped_down(gated: Cluster, records: LogRecords) -> None:
    """Leadership moves to the other follower with a request in flight to the held one:
    the old leader's channel is gone, the held follower's late answer is dropped, and the
    new leader brings the held follower up to date."""
    c = gated
    leader_id, leader, held, other = await _held_request(c)
    await leader.trigger.transfer_leader(other)
    await c.nodes[other].wait(10.0).state(ServerState.LEADER)
    await until(lambda: leader.metrics.state is not ServerState.LEADER, "the old leader stepping down")
    assert _in_flight(leader, held) == 0
    c.log_stores[held].release()
    await _caught_up(c, c.nodes[other], held)
    await _caught_up(c, c.nodes[other], leader_id)
    assert _broken(records) == []


async def test_the_wire_codec_turned_on_and_off_while_requests_are_in_flight(gated: Cluster,
                                                                         records: LogRecords) -> None:
    """The codec turned on with a request in flight on the direct path: that answer still
    comes, later requests pass through the codec (the channel's direct submit declines);
    turned off again, requests are handed over directly again."""
    c = gated
    leader_id, leader, held, _ = await _held_request(c)
    c.router.set_wire(True)
    c.log_stores[held].release()
    await until(lambda: _in_flight(leader, held) == 0, "the answer of the request in flight")
    before = c.router.wire_messages
    await _caught_up(c, leader, held)
    assert c.router.wire_messages > before
    c.router.set_wire(False)
    store = c.log_stores[held]
    assert isinstance(store, GatedLogStore)
    store.held = True
    await leader.client_write(b"direct again")
    await until(lambda: store.pending != [], "the held follower's append")
    assert _in_flight(leader, held) >= 1
    store.release()
    await _caught_up(c, leader, held)
    assert c.router.wire_errors == 0 and _broken(records) == []
