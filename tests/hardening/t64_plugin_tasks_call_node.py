"""A plug-in that calls its own node from the node's other tasks: a log read on a
replication stream, ``save_vote`` on the vote writer, ``build_snapshot`` on its task.

Stop 63 refused the calls that wait for the node's core task or state machine worker when
made on one of those two (``t52_reentrant_calls.py``, ``t53_log_store_calls_its_node.py``).
The node's other tasks were not covered: the core and the worker go on while they wait, so
most calls made there complete, but a few wait for what the very task they hold up would do
next, and those waited for good, with nothing logged:

- A log read on the replication stream to node T (the leader reads from its log store the
  entries a lagging follower needs) that awaits a write of its own node: the write commits
  only once a majority acknowledged it, and when every majority holds T (a config of one or
  two voters) it waits for T's stream, which waits for the read. The two-voter cluster
  stopped for good. So did a wait for an entry past the committed one to be applied.
- ``save_vote`` that awaits a write on the leader (the committed vote a leader saves) when
  every majority holds the leader: a leader counts its own log only once its vote is
  durable. A wait from there for an entry past the committed one to be applied (a
  follower applies what commits from then on only once the vote is durable), and a wait
  for the state of a candidate every majority holds (it wins only with its own vote:
  ``wait().state(LEADER)`` from a lone voter's ``save_vote`` held it up for good).
- ``build_snapshot`` that awaits ``wait().snapshot`` past the current snapshot on a leader,
  which only that build would make.

Each now raises ``RuntimeError`` at once, naming the call, the plug-in and why. Everything
else made from there is taken and completes: a write where a majority without T (or
without the leader) exists, a wait from ``save_vote`` for the log to grow, ``ensure_linearizable`` once the term's first entry committed
(heartbeats go on beside the stream), a wait that can hold, ``trigger.heartbeat``,
``get_current_snapshot`` and a write from ``build_snapshot``.

Stop 65 refused the last three that waited for good: ``add_learner(T, blocking=True)`` from
a read on the stream to T itself, where T cannot catch up without that read; writes from
reads on two streams (or a read and a leader's ``save_vote``) that each hold back what the
other's commit needs, where no majority is left without both (a leader and two followers:
the second write is refused, and the first then commits); and, from ``save_vote`` on a
candidate every majority holds, a wait for a leader (itself, or another where the
membership is not joint: no election is won without its vote) or for its log to grow.

A review of those found: a membership change, ``ensure_linearizable`` of a new leader and a
wait for an entry to be applied, taken from a read, were not recorded as awaiting a commit,
so a write from a read on another stream closed the circle and both waited for good (the
write is now refused); a membership change that changes nothing (``add_learner`` of a member
at its address, the same voters, no learner to remove) was refused as a new entry though the
membership entry that answers it was committed; and a write from a read on a stream of a
leader that stopped leading meanwhile was refused instead of getting ``ForwardToLeader``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from integration.checks import fast_config, write_on_leader

from openraft_py import BasicNode, Raft, ReadPolicy, ServerState, Snapshot, Vote
from openraft_py.storage.memory import MemDisk, MemLogReader, MemLogStore, MemStateMachine
from openraft_py.testing.cluster import Cluster
from openraft_py.types import Entry, NodeId

pytestmark = pytest.mark.timeout(60)

# Generous: a call answered "promptly" returns within this many seconds.
BOUND = 3.0

Call = Callable[[Raft], Awaitable[Any]]


class Probe:
    """One call to make from inside a plug-in, once, on ``raft``'s node, and its outcome.
    ``done`` is set once the call returned or raised."""

    def __init__(self, raft: Raft | None, call: Call) -> None:
        self.raft = raft
        self.call: Call | None = call
        self.outcome: str | None = None
        self.done = asyncio.Event()

    async def fire(self, raft: Raft) -> None:
        """Await the call (on the running task: ``asyncio.wait_for`` would run it in a task of
        its own on 3.11) and record what it did."""
        call, self.call = self.call, None
        assert call is not None
        try:
            await call(raft)
            self.outcome = "returned"
        except (RuntimeError, Exception) as e:  # noqa: BLE001 - recorded for the test to check
            self.outcome = f"{type(e).__name__}: {e}"
        finally:
            self.done.set()

    async def outcome_within(self, bound: float = BOUND) -> str:
        """The outcome, once the call ended (a ``TimeoutError`` when it never ends: the hang)."""
        await asyncio.wait_for(self.done.wait(), bound)
        assert self.outcome is not None
        return self.outcome


# -- a log read on a replication stream --------------------------------------------------------

READ_PROBE: dict[NodeId, Probe] = {}


class ProbingReader(MemLogReader):
    """A reader that, on the node with a probe armed, makes the probe's call in a read."""

    __slots__ = ("node_id",)

    def __init__(self, disk: MemDisk, node_id: NodeId) -> None:
        super().__init__(disk)
        self.node_id = node_id

    async def try_get_log_entries(self, start: int, stop: int) -> list[Entry]:
        out = await super().try_get_log_entries(start, stop)
        probe = READ_PROBE.get(self.node_id)
        if probe is not None and probe.call is not None and probe.raft is not None:
            await probe.fire(probe.raft)
        return out


class ReaderStore(MemLogStore):
    """A ``MemLogStore`` whose readers are ``ProbingReader``s."""

    __slots__ = ("node_id",)

    def __init__(self, disk: MemDisk, node_id: NodeId) -> None:
        super().__init__(disk)
        self.node_id = node_id

    def get_log_reader(self) -> MemLogReader:
        return ProbingReader(self._disk, self.node_id)


async def read_on_stream(voters: int, call: Call) -> tuple[str, Raft]:
    """Start ``voters`` voters; on the leader, with every replication read going to the log
    store (as for a follower that lags past the in-memory tail), make ``call`` from the
    reader during the replication of a write. Returns the call's outcome, and the leader
    after the write it was made in completed (the node went on)."""
    READ_PROBE.clear()
    async with Cluster(fast_config(), log_store=lambda nid, disk: ReaderStore(disk, nid)) as c:
        await c.start(set(range(1, voters + 1)))
        raft = c.nodes[await c.wait_for_leader()]
        await asyncio.wait_for(raft.client_write(b"warm-up"), BOUND)
        # No entry from the cache: every read of a stream goes to the reader.
        raft._core.log.cached = lambda start, stop: []  # type: ignore[method-assign]
        probe = READ_PROBE[raft.id] = Probe(raft, call)
        write = asyncio.ensure_future(raft.client_write(b"trigger"))
        try:
            outcome = await probe.outcome_within()
            await asyncio.wait_for(write, BOUND)
            await asyncio.wait_for(raft.client_write(b"after"), BOUND)
        finally:
            write.cancel()
            READ_PROBE.clear()
        assert raft.metrics.running
        return outcome, raft


def next_index(raft: Raft) -> int:
    return raft.metrics.last_log_index + 1


REFUSED_ON_STREAM: dict[str, Call] = {
    "client_write": lambda r: r.client_write(b"inner"),
    "client_write_many": lambda r: r.client_write_many([b"inner"]),
    "add_learner": lambda r: r.add_learner(9, BasicNode(""), blocking=False),
    "wait().applied_index_at_least": lambda r: r.wait().applied_index_at_least(next_index(r) + 1),
}


@pytest.mark.parametrize("name", sorted(REFUSED_ON_STREAM))
async def test_a_log_read_on_a_stream_whose_target_every_majority_needs_is_refused_a_commit(name: str) -> None:
    outcome, raft = await read_on_stream(2, REFUSED_ON_STREAM[name])
    assert outcome.startswith("RuntimeError"), outcome
    assert f"{name} was called from inside node {raft.id}'s log reader, on its replication stream to node" in outcome
    assert "asyncio.create_task" in outcome


TAKEN_ON_STREAM: dict[str, Call] = {
    "ensure_linearizable": lambda r: r.ensure_linearizable(ReadPolicy.READ_INDEX),
    "ensure_linearizable(LEASE_READ)": lambda r: r.ensure_linearizable(ReadPolicy.LEASE_READ),
    "wait().state": lambda r: r.wait().state(ServerState.LEADER),
    "wait().log_index_at_least": lambda r: r.wait().log_index_at_least(r.metrics.last_log_index),
    "trigger.heartbeat": lambda r: r.trigger.heartbeat(),
    # No payload: ``[]`` at once, nothing to commit (it was refused as a write).
    "client_write_many([])": lambda r: r.client_write_many([]),
}


@pytest.mark.parametrize("name", sorted(TAKEN_ON_STREAM))
async def test_a_log_read_on_a_stream_may_make_the_calls_that_complete(name: str) -> None:
    outcome, _ = await read_on_stream(2, TAKEN_ON_STREAM[name])
    assert outcome == "returned"


async def test_a_write_from_a_log_read_completes_where_a_majority_without_the_target_exists() -> None:
    outcome, _ = await read_on_stream(3, REFUSED_ON_STREAM["client_write"])
    assert outcome == "returned"


# -- save_vote on the vote writer --------------------------------------------------------------

VOTE_PROBE: dict[NodeId, Probe] = {}
RAFTS: dict[NodeId, Raft] = {}


class VoteStore(MemLogStore):
    """A ``MemLogStore`` whose ``save_vote`` of a vote matching ``VOTE_WHEN`` on the node with a
    probe armed makes the probe's call."""

    __slots__ = ("node_id",)

    def __init__(self, disk: MemDisk, node_id: NodeId) -> None:
        super().__init__(disk)
        self.node_id = node_id

    async def save_vote(self, vote: Vote) -> None:
        await super().save_vote(vote)
        probe = VOTE_PROBE.get(self.node_id)
        raft = RAFTS.get(self.node_id)
        if probe is not None and probe.call is not None and raft is not None and VOTE_WHEN(vote):
            await probe.fire(raft)


VOTE_WHEN: Callable[[Vote], bool] = lambda vote: True  # noqa: E731 - replaced per test


async def vote_saved(voters: int, committed: bool, call: Call, *, rival: bool = False) -> tuple[str, Cluster[Any, Any]]:
    """Start ``voters`` voters, then have node 1 elect itself again, making ``call`` from its
    ``save_vote`` of its new vote (the committed one it saves as leader when ``committed``).
    With ``rival``, node 2 campaigns meanwhile (``rival_campaigns``). Returns the call's
    outcome once a leader (node 1 or another) took a write."""
    global VOTE_WHEN
    VOTE_PROBE.clear()
    RAFTS.clear()
    VOTE_WHEN = lambda vote: vote.committed == committed  # noqa: E731
    c: Cluster[Any, Any] = Cluster(
        fast_config(),
        log_store=lambda nid, disk: VoteStore(disk, nid),
        on_start=lambda nid, raft: RAFTS.__setitem__(nid, raft),
    )
    async with c:
        await c.start(set(range(1, voters + 1)))
        # On whichever node leads when it is sent (``fast_config``'s elections move
        # leadership now and then on a loaded machine).
        await write_on_leader(c, b"warm-up", BOUND)
        raft = c.nodes[1]
        probe = VOTE_PROBE[1] = Probe(raft, call)
        await raft.trigger.elect()
        campaigns = asyncio.ensure_future(rival_campaigns(c.nodes[2], probe)) if rival else None
        try:
            outcome = await probe.outcome_within()
            await write_on_leader(c, b"after", BOUND)
        finally:
            VOTE_PROBE.clear()
            if campaigns is not None:
                campaigns.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await campaigns  # (what a campaign raised, raised here)
        return outcome, c


async def rival_campaigns(rival: Raft, probe: Probe) -> None:
    """Have ``rival`` campaign every 20 ms until ``probe``'s call ended: each time in a term
    above the one it last heard of, so it soon asks for a term above node 1's.

    Left to their election timers, node 1 (a candidate whose vote is not durable: it asks
    nobody) and the rival may take turns for a long while: the rival's pre-vote in node
    1's term is refused, it adopts that term, and node 1's next pre-vote (granted, the
    rival having no leader) raises node 1's term again before the rival's timer fires. On
    a loaded machine the timers fire late, in the order of their deadlines, and node 1's
    came first for more than 3 s (seen at load 15 on 2 cores)."""
    while not probe.done.is_set():
        await rival.trigger.elect()
        try:
            await asyncio.wait_for(probe.done.wait(), 0.02)
        except TimeoutError:
            pass


@pytest.mark.parametrize("voters", [1, 2])
@pytest.mark.parametrize(
    "name,call",
    [
        ("client_write", lambda r: r.client_write(b"inner")),
        ("ensure_linearizable", lambda r: r.ensure_linearizable(ReadPolicy.READ_INDEX)),
        ("add_learner", lambda r: r.add_learner(9, BasicNode(""), blocking=False)),
    ],
)
async def test_save_vote_of_a_leader_every_majority_needs_is_refused_a_commit(voters: int, name: str, call: Call) -> None:
    outcome, _ = await vote_saved(voters, True, call)
    assert outcome.startswith("RuntimeError"), outcome
    assert f"{name} was called from inside node 1's log store save_vote, on its vote writer task" in outcome


async def test_save_vote_of_a_candidate_is_refused_a_wait_for_its_election() -> None:
    outcome, _ = await vote_saved(1, False, lambda r: r.wait().state(ServerState.LEADER))
    assert outcome.startswith("RuntimeError"), outcome
    assert "wait().state was called from inside node 1's log store save_vote" in outcome


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r.trigger.heartbeat(),
        # Holds already: the leader saves its committed vote once it leads.
        lambda r: r.wait().state(ServerState.LEADER),
    ],
    ids=["trigger.heartbeat", "wait().state"],
)
async def test_save_vote_may_make_the_calls_that_complete(call: Call) -> None:
    outcome, _ = await vote_saved(1, True, call)
    assert outcome == "returned"


async def test_save_vote_of_a_follower_is_refused_a_wait_for_an_entry_past_the_committed_one_to_be_applied() -> None:
    # (Node 1, one of three, campaigns: its vote is saved while it is a candidate.)
    outcome, _ = await vote_saved(3, False, lambda r: r.wait().applied_index_at_least(next_index(r)))
    assert outcome.startswith("RuntimeError"), outcome
    assert "wait().applied_index_at_least was called from inside node 1's log store save_vote" in outcome


async def test_save_vote_of_a_follower_may_wait_for_its_log_to_grow() -> None:
    # Whoever wins, node 1's log gets the new leader's first entry while the vote is out.
    outcome, _ = await vote_saved(3, False, lambda r: r.wait().log_index_at_least(next_index(r)))
    assert outcome == "returned"


async def test_a_write_from_save_vote_completes_where_a_majority_without_the_leader_exists() -> None:
    outcome, _ = await vote_saved(3, True, lambda r: r.client_write(b"inner"))
    assert outcome == "returned"


# -- build_snapshot on its task ----------------------------------------------------------------

BUILD_PROBE: dict[int, Probe] = {}


class BuildingMachine(MemStateMachine):
    """A ``MemStateMachine`` whose build, on the machine with a probe armed, makes its call."""

    async def _build(self) -> Snapshot:  # type: ignore[override]
        probe = BUILD_PROBE.get(id(self))
        if probe is not None and probe.call is not None and probe.raft is not None:
            await probe.fire(probe.raft)
        snap = super()._build()
        if asyncio.iscoroutine(snap):
            snap = await snap
        return snap  # type: ignore[return-value]


async def built(call: Call) -> str:
    """A three-voter cluster whose leader builds a snapshot making ``call`` from the build;
    the call's outcome, once the snapshot was built and the leader took a write."""
    BUILD_PROBE.clear()
    async with Cluster(fast_config(), state_machine=BuildingMachine) as c:
        await c.start({1, 2, 3})
        lid = await c.wait_for_leader()
        raft = c.nodes[lid]
        await asyncio.wait_for(raft.client_write(b"warm-up"), BOUND)
        probe = BUILD_PROBE[id(c.state_machines[lid])] = Probe(raft, call)
        await raft.trigger.snapshot()
        try:
            outcome = await probe.outcome_within()
            await raft.wait(BOUND).snapshot(1)
            await asyncio.wait_for(raft.client_write(b"after"), BOUND)
        finally:
            BUILD_PROBE.clear()
        return outcome


async def test_build_snapshot_of_a_leader_is_refused_a_wait_for_the_snapshot_it_builds() -> None:
    outcome = await built(lambda r: r.wait().snapshot(r.metrics.last_applied.index))  # type: ignore[union-attr]
    assert outcome.startswith("RuntimeError"), outcome
    assert "wait().snapshot was called from inside node" in outcome
    assert "snapshot builder (build_snapshot)" in outcome


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r.client_write(b"inner"),
        lambda r: r.ensure_linearizable(ReadPolicy.READ_INDEX),
        lambda r: r.get_current_snapshot(),
        lambda r: r.wait().applied_index_at_least(r.metrics.last_applied.index),  # holds already
    ],
    ids=["client_write", "ensure_linearizable", "get_current_snapshot", "wait().applied_index_at_least"],
)
async def test_build_snapshot_may_make_the_calls_that_complete(call: Call) -> None:
    assert await built(call) == "returned"


# -- a log read on a stream while earlier entries are in flight to its target -----------------

SLOW_FLUSH: dict[NodeId, float] = {}
READ_AT: dict[NodeId, int] = {}


class SlowFlushStore(ReaderStore):
    """A ``ReaderStore`` that, on a node in ``SLOW_FLUSH``, reports each append durable only
    that many seconds later (a follower answers an AppendEntries once its entries are
    durable), and whose reader fires the probe only for a read starting at ``READ_AT``."""

    __slots__ = ()

    async def append(self, entries: list[Entry], callback: Any) -> None:
        delay = SLOW_FLUSH.get(self.node_id)
        if delay is None:
            await super().append(entries, callback)
            return
        self.append_durable(entries)
        asyncio.get_running_loop().call_later(delay, callback.io_completed, None)

    def get_log_reader(self) -> MemLogReader:
        return AtReader(self._disk, self.node_id)


class AtReader(ProbingReader):
    """A ``ProbingReader`` that fires only in a read starting at ``READ_AT[node]``."""

    __slots__ = ()

    async def try_get_log_entries(self, start: int, stop: int) -> list[Entry]:
        if READ_AT.get(self.node_id) != start:
            return await MemLogReader.try_get_log_entries(self, start, stop)
        return await super().try_get_log_entries(start, stop)


async def test_a_log_read_on_a_stream_may_wait_for_entries_already_sent_to_its_target() -> None:
    """The stream to T holds back only what it has not handed to T yet: a request sent
    before the read is answered meanwhile (pipelining), and the entries it carries commit.
    A wait from the read for such an entry to be applied completes; it was refused as if
    every entry past the committed one waited for the read. (A new leader's first entry is
    never in flight so: it sends one request at a time until the target matched one.)"""
    READ_PROBE.clear()
    SLOW_FLUSH.clear()
    READ_AT.clear()
    # (Deadlines past the follower's flush: the request in flight is answered, not given up.)
    config = fast_config(heartbeat_interval=50, election_timeout_min=500, election_timeout_max=800)
    async with Cluster(config, log_store=lambda nid, disk: SlowFlushStore(disk, nid)) as c:
        await c.start({1, 2})
        lid = await c.wait_for_leader()
        raft = c.nodes[lid]
        fid = 3 - lid
        await asyncio.wait_for(raft.client_write(b"warm-up"), BOUND)
        raft._core.log.cached = lambda start, stop: []  # type: ignore[method-assign]
        SLOW_FLUSH[fid] = 0.3
        sent = next_index(raft)
        writes = [asyncio.ensure_future(raft.client_write(b"sent"))]
        try:
            # The entry reached the follower (in flight: not durable there, not committed).
            await c.nodes[fid].wait(BOUND).log_index_at_least(sent)
            assert raft.metrics.committed is not None and raft.metrics.committed.index < sent
            probe = READ_PROBE[lid] = Probe(raft, lambda r: r.wait(BOUND).applied_index_at_least(sent))
            READ_AT[lid] = sent + 1
            writes.append(asyncio.ensure_future(raft.client_write(b"read")))
            assert await probe.outcome_within() == "returned"
            await asyncio.wait_for(asyncio.gather(*writes), BOUND)
        finally:
            for w in writes:
                w.cancel()
            READ_PROBE.clear()
            SLOW_FLUSH.clear()
            READ_AT.clear()


async def test_save_vote_of_a_candidate_may_wait_to_step_down() -> None:
    """A candidate of two voters whose vote is not durable cannot win, but the other voter
    campaigns in a higher term meanwhile (``rival_campaigns``), and the candidate steps down: a
    wait for it to follow completes. Only a wait for it to lead is refused; any wait for its state was."""
    outcome, _ = await vote_saved(2, False, lambda r: r.wait(BOUND).state(ServerState.FOLLOWER), rival=True)
    assert outcome == "returned"


async def test_build_snapshot_of_a_leader_is_refused_a_wait_for_a_purge_past_the_current_snapshot() -> None:
    """A leader purges its log only up to its snapshot: past the current one, only the
    snapshot this build makes allows it. Such a wait waited for good."""
    outcome = await built(lambda r: r.wait().purged(r.metrics.last_applied.index))  # type: ignore[union-attr]
    assert outcome.startswith("RuntimeError"), outcome
    assert "wait().purged was called from inside node" in outcome
    assert "snapshot builder (build_snapshot)" in outcome


# -- stop 65: the last three that waited for good ---------------------------------------------

TARGET_PROBES: dict[NodeId, Probe] = {}
"""Probes by the target of the replication stream whose log read makes their call."""


class TargetReader(MemLogReader):
    """A reader that, in a read on the leader's stream to a node with a probe in
    ``TARGET_PROBES``, makes that probe's call (once)."""

    __slots__ = ()

    async def try_get_log_entries(self, start: int, stop: int) -> list[Entry]:
        out = await super().try_get_log_entries(start, stop)
        for probe in list(TARGET_PROBES.values()):
            raft = probe.raft
            if raft is None or probe.call is None:
                continue
            out_call = raft._core.calling_out.get(asyncio.current_task())  # type: ignore[arg-type]
            if out_call is not None and out_call.target is not None and TARGET_PROBES.get(out_call.target) is probe:
                await probe.fire(raft)
                break
        return out


class TargetStore(MemLogStore):
    """A ``MemLogStore`` whose readers are ``TargetReader``s."""

    __slots__ = ()

    def get_log_reader(self) -> MemLogReader:
        return TargetReader(self._disk)


def read_from_store(raft: Raft) -> None:
    """No entry from the cache: every read of ``raft``'s streams goes to the log reader."""
    raft._core.log.cached = lambda start, stop: []  # type: ignore[method-assign]


async def test_add_learner_blocking_from_a_read_on_the_stream_to_that_learner_is_refused() -> None:
    """The learner catches up only once its stream sends on, and that stream waits for the
    read the call is made in: ``add_learner(T, blocking=True)`` from a read on T's stream,
    where T has not been handed the entry that added it (or lags past the threshold), waited
    for good. (Adding it again at the same address appends nothing: the wait is all.)"""
    TARGET_PROBES.clear()
    async with Cluster(fast_config(), log_store=lambda nid, disk: TargetStore(disk)) as c:
        await c.start({1})
        raft = c.nodes[await c.wait_for_leader()]
        await asyncio.wait_for(raft.client_write(b"warm-up"), BOUND)
        read_from_store(raft)
        await c.add_node(2)
        probe = TARGET_PROBES[2] = Probe(raft, lambda r: r.add_learner(2, BasicNode(""), blocking=True))
        try:
            added = await asyncio.wait_for(raft.add_learner(2, BasicNode(""), blocking=False), BOUND)
            outcome = await probe.outcome_within()
            await raft.wait(BOUND).metrics(lambda m: (m.replication or {}).get(2, -1) >= added.log_id.index)
        finally:
            TARGET_PROBES.clear()
    assert outcome.startswith("RuntimeError"), outcome
    assert "add_learner with blocking=True was called from inside node 1's log reader, on its replication stream to node 2" in outcome
    assert "asyncio.create_task" in outcome


async def test_add_learner_blocking_from_a_read_on_the_stream_to_that_caught_up_learner_completes() -> None:
    """Handed the entry that added it, and within the lag threshold once what was handed is
    acknowledged, the learner is caught up without the read: the call is taken."""
    TARGET_PROBES.clear()
    async with Cluster(fast_config(), log_store=lambda nid, disk: TargetStore(disk)) as c:
        await c.start({1})
        raft = c.nodes[await c.wait_for_leader()]
        await c.add_node(2)
        await asyncio.wait_for(raft.add_learner(2, BasicNode(""), blocking=True), BOUND)
        read_from_store(raft)
        probe = TARGET_PROBES[2] = Probe(raft, lambda r: r.add_learner(2, BasicNode(""), blocking=True))
        try:
            await asyncio.wait_for(raft.client_write(b"read"), BOUND)
            outcome = await probe.outcome_within()
        finally:
            TARGET_PROBES.clear()
    assert outcome == "returned", outcome


async def two_streams_write(voters: int) -> list[str]:
    """Start ``voters`` voters; on the leader, with every replication read going to the log
    store, have the reads on the streams to two followers each await a write of their own
    node. The two calls' outcomes, once both ended and the leader took a write after."""
    TARGET_PROBES.clear()
    async with Cluster(fast_config(), log_store=lambda nid, disk: TargetStore(disk)) as c:
        await c.start(set(range(1, voters + 1)))
        raft = c.nodes[await c.wait_for_leader()]
        await asyncio.wait_for(raft.client_write(b"warm-up"), BOUND)
        read_from_store(raft)
        followers = sorted(nid for nid in c.nodes if nid != raft.id)[:2]
        probes = [Probe(raft, lambda r: r.client_write(b"inner")) for _ in followers]
        TARGET_PROBES.update(zip(followers, probes, strict=True))
        write = asyncio.ensure_future(raft.client_write(b"trigger"))
        try:
            outcomes = [await p.outcome_within() for p in probes]
            await asyncio.wait_for(write, BOUND)
            await asyncio.wait_for(raft.client_write(b"after"), BOUND)
        finally:
            write.cancel()
            TARGET_PROBES.clear()
        assert raft.metrics.running
        return sorted(outcomes)


async def test_writes_from_reads_on_two_streams_whose_targets_every_majority_needs_together() -> None:
    """Leader and two followers: either follower makes a majority with the leader, so a
    write from a read on one stream is taken; but a second from a read on the other stream
    while the first waits needs one of the two streams to send on, and both wait for their
    reads: the two waited for good. The second is refused, and the first then commits."""
    outcomes = await two_streams_write(3)
    assert outcomes[0].startswith("RuntimeError"), outcomes
    assert "client_write was called from inside node" in outcomes[0]
    assert outcomes[1] == "returned", outcomes


async def test_writes_from_reads_on_two_streams_complete_where_a_majority_without_both_exists() -> None:
    """Of five voters, the leader and the two others make a majority: both writes are taken."""
    assert await two_streams_write(5) == ["returned", "returned"]


@pytest.mark.parametrize(
    "voters,name,call",
    [
        (1, "wait().current_leader", lambda r: r.wait().current_leader(1)),
        (2, "wait().current_leader", lambda r: r.wait().current_leader(1)),
        (2, "wait().current_leader", lambda r: r.wait().current_leader(2)),
        (1, "wait().log_index_at_least", lambda r: r.wait().log_index_at_least(next_index(r))),
        (2, "wait().log_index_at_least", lambda r: r.wait().log_index_at_least(next_index(r))),
    ],
    ids=["current_leader(self)-1", "current_leader(self)-2", "current_leader(other)-2", "log-1", "log-2"],
)
async def test_save_vote_of_a_candidate_every_majority_needs_is_refused_a_wait_for_a_leader(
    voters: int, name: str, call: Call
) -> None:
    """No leader can be elected without the candidate's vote, its own included, and that
    vote is the one being saved (its grant to another waits behind it): a wait for a
    leader to be known, or for the log to grow (only a leader adds to it), waited for good."""
    outcome, _ = await vote_saved(voters, False, call)
    assert outcome.startswith("RuntimeError"), outcome
    assert f"{name} was called from inside node 1's log store save_vote" in outcome


async def test_save_vote_of_a_candidate_of_three_voters_may_wait_for_a_leader() -> None:
    """One of three voters: the others elect a leader without it, or it wins with theirs."""
    outcome, _ = await vote_saved(3, False, lambda r: r.wait(BOUND).metrics(lambda m: m.current_leader is not None))
    assert outcome == "returned"


class VoteReadStore(VoteStore):
    """A ``VoteStore`` whose readers are ``TargetReader``s."""

    __slots__ = ()

    def get_log_reader(self) -> MemLogReader:
        return TargetReader(self._disk)


async def test_a_write_from_a_read_and_one_from_the_leaders_save_vote_hold_each_other_up() -> None:
    """Of three voters, a leader counts its own log only once its vote is durable, so a write
    from its ``save_vote`` needs both followers; a write from a read on the stream to one of
    them holds that one back. Either alone commits; both waited for good. The second is
    refused, and the first then commits."""
    global VOTE_WHEN
    VOTE_PROBE.clear()
    RAFTS.clear()
    TARGET_PROBES.clear()
    VOTE_WHEN = lambda vote: vote.committed  # noqa: E731
    c: Cluster[Any, Any] = Cluster(
        fast_config(election_timeout_min=300, election_timeout_max=400),
        log_store=lambda nid, disk: VoteReadStore(disk, nid),
        on_start=lambda nid, raft: RAFTS.__setitem__(nid, raft),
    )
    async with c:
        await c.start({1, 2, 3})
        await asyncio.wait_for(c.nodes[await c.wait_for_leader()].client_write(b"warm-up"), BOUND)
        raft = c.nodes[1]
        read_from_store(raft)
        probes = [Probe(raft, lambda r: r.client_write(b"from save_vote")), Probe(raft, lambda r: r.client_write(b"read"))]
        VOTE_PROBE[1], TARGET_PROBES[2] = probes
        await raft.trigger.elect()
        try:
            outcomes = sorted([await p.outcome_within() for p in probes])
            await asyncio.wait_for(c.nodes[await c.wait_for_leader(timeout=BOUND)].client_write(b"after"), BOUND)
        finally:
            VOTE_PROBE.clear()
            TARGET_PROBES.clear()
    assert outcomes[0].startswith("RuntimeError"), outcomes
    assert "client_write was called from inside node 1's" in outcomes[0]
    assert "(no majority is left without them all)" in outcomes[0]
    assert outcomes[1] == "returned", outcomes


async def two_streams_in_turn(first: Call, second: Call, elect: bool = False) -> list[str]:
    """Leader and two followers, every replication read going to the log store: the read on
    the stream to one follower makes ``first``, and the read on the stream to the other
    makes ``second`` once ``first`` was judged and awaits its outcome; during the
    replication of a write, or with ``elect`` of node 1's first entry once elected (the
    others' election timeouts are long). The two outcomes, in that order, once both ended
    and the leader took a write after."""
    TARGET_PROBES.clear()
    judged = asyncio.Event()

    async def make_first(r: Raft) -> Any:
        call = first(r)  # (a coroutine: judged at its first step, before it waits)
        judged.set()  # the waiter runs only once ``first`` suspended
        return await call

    async def make_second(r: Raft) -> Any:
        await judged.wait()
        return await second(r)

    config = fast_config(election_timeout_min=300, election_timeout_max=400) if elect else fast_config()
    async with Cluster(config, log_store=lambda nid, disk: TargetStore(disk)) as c:
        await c.start({1, 2, 3})
        raft = c.nodes[await c.wait_for_leader()]
        await asyncio.wait_for(raft.client_write(b"warm-up"), BOUND)
        if elect:
            raft = c.nodes[1]
        read_from_store(raft)
        followers = sorted(nid for nid in c.nodes if nid != raft.id)
        probes = [Probe(raft, make_first), Probe(raft, make_second)]
        TARGET_PROBES.update(zip(followers, probes, strict=True))
        if elect:
            await raft.trigger.elect()
            write: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            write.set_result(None)
        else:
            write = asyncio.ensure_future(raft.client_write(b"trigger"))
        try:
            outcomes = [await p.outcome_within() for p in probes]
            await asyncio.wait_for(write, BOUND)
            await asyncio.wait_for(c.nodes[await c.wait_for_leader(timeout=BOUND)].client_write(b"after"), BOUND)
        finally:
            write.cancel()
            TARGET_PROBES.clear()
        assert raft.metrics.running
        return outcomes


AWAITING_A_COMMIT: dict[str, Call] = {
    "add_learner": lambda r: r.add_learner(9, BasicNode(""), blocking=False),
    # The entry being read (not committed: neither follower was handed it).
    "wait().applied_index_at_least": lambda r: r.wait().applied_index_at_least(r.metrics.last_log_index),
}
"""Calls other than writes that, taken from a read, await a commit the other reads hold up."""


@pytest.mark.parametrize("name", sorted(AWAITING_A_COMMIT))
async def test_a_write_from_a_read_while_another_read_awaits_a_commit_otherwise_is_refused(name: str) -> None:
    """A membership change, or a wait for an entry past the committed one to be applied,
    taken from a read on the stream to one of two followers, holds that follower back as a
    write does: a write from a read on the other stream then needs one of the two to send
    on, and both waited for good (the first was not recorded as awaiting a commit). The
    write is refused, and the first call then completes."""
    outcomes = await two_streams_in_turn(AWAITING_A_COMMIT[name], lambda r: r.client_write(b"second"))
    assert outcomes[0] == "returned", outcomes
    assert outcomes[1].startswith("RuntimeError"), outcomes
    assert "client_write was called from inside node" in outcomes[1]
    assert "(no majority is left without them all)" in outcomes[1]



def readd_target(blocking: bool) -> Call:
    """``add_learner`` of the other of two voters (the target of the stream whose read makes
    the call) at its own address."""

    def call(r: Raft) -> Awaitable[Any]:
        target = 3 - r.id
        return r.add_learner(target, r.metrics.membership_config.membership.nodes[target], blocking=blocking)

    return call


CHANGING_NOTHING: dict[str, Call] = {
    "add_learner": readd_target(False),
    "add_learner(blocking)": readd_target(True),
    "change_membership": lambda r: r.change_membership({1, 2}),
    "remove_learners": lambda r: r.remove_learners([]),
}
"""Membership changes of two voters that change nothing: the engine appends nothing and
answers with the current membership entry, committed already."""


@pytest.mark.parametrize("name", sorted(CHANGING_NOTHING))
async def test_a_membership_change_that_changes_nothing_from_a_read_on_a_needed_stream_completes(name: str) -> None:
    """Of two voters, a read on the stream to the follower may make a membership change that
    changes nothing (add it again at its address, make the same voters, remove no learner):
    it appends nothing, and the membership entry that answers is committed. It was refused
    as a new entry that needed the follower's acknowledgement."""
    outcome, _ = await read_on_stream(2, CHANGING_NOTHING[name])
    assert outcome == "returned", outcome


async def test_a_write_from_a_read_while_another_read_of_a_new_leader_ensures_linearizable_is_refused() -> None:
    """A new leader's ``ensure_linearizable`` waits for the first entry of its term to
    commit: taken from a read on the stream to one of two followers, it holds that one back
    as a write does, and a write from a read on the other stream then closed the circle
    (both waited for good). The write is refused, and the read index then comes."""
    outcomes = await two_streams_in_turn(
        lambda r: r.ensure_linearizable(ReadPolicy.READ_INDEX), lambda r: r.client_write(b"second"), elect=True
    )
    assert outcomes[0] == "returned", outcomes
    assert outcomes[1].startswith("RuntimeError"), outcomes
    assert "client_write was called from inside node 1's log reader" in outcomes[1]


async def test_a_write_from_a_read_of_a_leader_that_stepped_down_meanwhile_gets_forward_to_leader() -> None:
    """A leader that stopped leading while its stream's read was out holds back nobody's
    acknowledgement: a write from that read is answered at once with ``ForwardToLeader``,
    as anywhere else (it was refused as waiting for the stream's target for good)."""
    READ_PROBE.clear()
    async with Cluster(fast_config(), log_store=lambda nid, disk: ReaderStore(disk, nid)) as c:
        await c.start({1, 2})
        raft = c.nodes[await c.wait_for_leader()]
        await asyncio.wait_for(raft.client_write(b"warm-up"), BOUND)
        read_from_store(raft)

        async def step_down_then_write(r: Raft) -> Any:
            c.router.isolate(r.id)  # check-quorum: it steps down within an election timeout
            await r.wait(BOUND).metrics(lambda m: m.state != ServerState.LEADER)
            return await r.client_write(b"inner")

        probe = READ_PROBE[raft.id] = Probe(raft, step_down_then_write)
        write = asyncio.ensure_future(raft.client_write(b"trigger"))
        try:
            outcome = await probe.outcome_within(2 * BOUND)
        finally:
            write.cancel()
            READ_PROBE.clear()
        assert raft.metrics.running
    assert outcome.startswith("ForwardToLeader"), outcome
