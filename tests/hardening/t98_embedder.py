"""An embedder's first week: plug-ins written from the docs, and the mistakes their authors
make. The node that runs a broken plug-in stops with an error that names the plug-in's
method and what it should have returned; no other node stops and no caller waits forever.

- A log reader whose ``try_get_log_entries`` returns something other than a list of
  ``Entry`` (a generator, a tuple, a list of dicts), met once the node reads entries from
  storage (a follower far behind, past the in-memory tail): the leader stopped with
  ``Panicked`` "a task failed: TypeError: object of type 'generator' has no len()" (or
  "Argument 'entries' has incorrect type", or an ``AttributeError`` about ``log_id``), which
  named no plug-in and called it a bug of the library. It now stops with ``StorageError``
  naming ``RaftLogReader.try_get_log_entries`` and what it returned; a tuple of entries is
  taken as a list. At start, ``Raft.new`` raises the same ``StorageError`` (a generator's was
  "restoring node 2 from storage: TypeError: 'generator' object is not subscriptable").
- A snapshot builder that returns something other than a ``Snapshot`` (``None``, a tuple),
  called at start to cover a purged log whose snapshot was lost: ``Raft.new`` raised
  ``StorageError`` "restoring node 2 from storage: AttributeError: 'tuple' object has no
  attribute 'data'". It now says what it was building and names the method and what it
  returned, as a build of a running node does.
- A log store whose ``append`` forgets to call its ``IOFlushed`` callback (the entries are
  written, the callback dropped): the node never learned that its entries were durable: a
  single node's writes waited for good, and a leader of three committed on its followers'
  word alone, never counting its own log, nothing said. The callback, garbage-collected uncalled,
  now stops the node with ``StorageError`` saying what ``append`` must do; the other nodes
  go on. A store that holds the callback while it awaits its disk and is cancelled at
  shutdown leaves a clean stop.
- A snapshot builder whose ``build_snapshot`` is a plain ``def`` (``Raft.new`` cannot see it:
  the builder is made at each build), or a ``get_snapshot_builder`` that returns ``None``:
  the node stopped with "object Snapshot can't be used in 'await' expression" or an
  ``AttributeError`` about ``build_snapshot``, naming no plug-in. It now stops with
  ``StorageError`` naming the method and what it must be; the others go on.
- A durable state machine that keeps its applied log id but not its membership (its
  ``applied_state`` answers an empty one after a restart), over a log purged past the
  membership entry: every node restarted as a learner of no cluster, no leader ever, nothing
  said. ``Raft.new`` now refuses it with ``StorageError`` naming ``applied_state`` and what
  it must keep, when its own current snapshot holds a newer membership.
- A log store that reports a failed flush with something other than an exception
  (``callback.io_completed("disk full")``, or the class ``OSError``): the node stopped with
  "str: disk full" or "type: <class 'OSError'>". It still stops (the store meant a failure),
  with a ``TypeError`` saying what ``io_completed`` takes and what it was given.
- A stall of the event loop (a plug-in's long synchronous call) past both a request's
  ``hard_ttl`` and the node's bound on it (twice that): the network's own ``Timeout``, due
  first, became ready in the same loop pass as the bound, and the bound won. The leader
  warned "the network did not answer AppendEntries within ... it must raise Timeout after
  hard_ttl", blaming a network (the TCP transport's own included) that kept its contract.
  The bound now expires one loop pass after its deadline: the network's ``Timeout`` is
  taken, a failed call said at DEBUG.
- A snapshot builder that returns a ``Snapshot`` whose ``meta`` is not a ``SnapshotMeta``
  (a dict): the error said "... whose meta is {...}, expected a Snapshot", which it was. It
  now says the meta should be a ``SnapshotMeta``.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from typing import Any, ClassVar

import pytest
from integration.checks import fast_config

import openraft_py.core.raft_core as raft_core
from openraft_py import (
    ClientWriteResponse,
    ForwardToLeader,
    IOFlushed,
    ServerState,
    SnapshotPolicy,
    Stopped,
    StorageError,
)
from openraft_py.errors import Timeout
from openraft_py.network.router import Router, RouterFactory
from openraft_py.storage import EMPTY_STORED_MEMBERSHIP
from openraft_py.storage.memory import MemLogStore, MemStateMachine
from openraft_py.testing.cluster import Cluster
from openraft_py.types import BasicNode, Entry, RPCOption, Snapshot, SnapshotMeta

pytestmark = pytest.mark.timeout(30)

# Generous: a call answered "promptly" returns within this many seconds.
BOUND = 5.0

# What a broken reader returns in place of the list of entries it read.
WRONG_READS: dict[str, Any] = {
    "generator": lambda got: (e for e in got),
    "dicts": lambda got: [{"log_id": e.log_id, "payload": e.payload} for e in got],
    "str": lambda got: str(got),
}


class ShapeReader:
    """A log reader that rewrites its answers with ``ShapeStore.wrong`` once it is set."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def read_vote(self) -> Any:
        return await self.inner.read_vote()

    async def try_get_log_entries(self, start: int, stop: int) -> Any:
        got = await self.inner.try_get_log_entries(start, stop)
        wrong = ShapeStore.wrong
        return got if wrong is None or not got else wrong(got)


class ShapeStore(MemLogStore):
    wrong: ClassVar[Any] = None

    def get_log_reader(self) -> Any:
        return ShapeReader(super().get_log_reader())


@pytest.fixture(autouse=True)
def _reset_shape_store() -> Any:
    ShapeStore.wrong = None
    yield
    ShapeStore.wrong = None


async def _three_nodes_written(c: Cluster[Any, Any], writes: int) -> tuple[int, int, ClientWriteResponse]:
    """Start nodes 1-3 and commit ``writes`` (at least 1) entries applied on every node;
    return the leader's id, a follower's id and the last write's response."""
    await c.start({1, 2, 3})
    leader = await c.wait_for_leader()
    for i in range(writes):
        resp = await asyncio.wait_for(c.nodes[leader].client_write(b"%d" % i), BOUND)
    await c.wait_applied(resp.log_id.index, timeout=BOUND)
    return leader, min(n for n in c.nodes if n != leader), resp


async def _forty_writes_a_follower_missed(c: Cluster[Any, Any]) -> tuple[int, int, ClientWriteResponse]:
    """Start nodes 1-3 and write 40 entries through the leader while a follower is isolated
    (still isolated on return); return the leader's and the follower's ids and the last
    write's response."""
    await c.start({1, 2, 3})
    leader = await c.wait_for_leader()
    lagging = min(n for n in c.nodes if n != leader)
    c.router.isolate(lagging)
    for i in range(40):
        resp = await asyncio.wait_for(c.nodes[leader].client_write(b"%d" % i), BOUND)
    return leader, lagging, resp


@pytest.mark.parametrize("wrong", sorted(WRONG_READS))
async def test_a_log_reader_returning_no_list_of_entries_stops_its_node_naming_it(
    wrong: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A short in-memory tail, so that a lagging follower is sent entries read from storage.
    monkeypatch.setattr(raft_core, "CACHE_MAX_ENTRIES", 8)
    async with Cluster(fast_config(max_payload_entries=5), seed=98, log_store=lambda nid, disk: ShapeStore(disk)) as c:
        leader, lagging, resp = await _forty_writes_a_follower_missed(c)
        ShapeStore.wrong = WRONG_READS[wrong]
        c.router.heal()
        m = await c.nodes[leader].wait(timeout=BOUND).metrics(lambda m: not m.running, "the leader stops")
        assert m.error is not None
        assert m.error.startswith("storage error while reading log entries"), m.error
        assert "RaftLogReader.try_get_log_entries returned" in m.error, m.error
        with pytest.raises(StorageError, match=r"RaftLogReader\.try_get_log_entries returned"):
            await c.nodes[leader].client_write(b"after")
        # The others go on: a new leader commits, and every acknowledged write is there.
        ShapeStore.wrong = None
        others = [n for n in c.nodes if n != leader]
        new_leader = await c.wait_for_leader(timeout=BOUND, among=others)
        after = await asyncio.wait_for(c.nodes[new_leader].client_write(b"after"), BOUND)
        await c.wait_applied(after.log_id.index, timeout=BOUND, ids=others)
        assert after.log_id.index > resp.log_id.index


async def test_a_log_reader_returning_a_tuple_of_entries_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(raft_core, "CACHE_MAX_ENTRIES", 8)
    async with Cluster(fast_config(max_payload_entries=5), seed=98, log_store=lambda nid, disk: ShapeStore(disk)) as c:
        leader, lagging, resp = await _forty_writes_a_follower_missed(c)
        ShapeStore.wrong = tuple
        c.router.heal()
        await c.wait_applied(resp.log_id.index, timeout=BOUND, ids=[lagging])
        assert all(r.metrics.running for r in c.nodes.values())
        # And at start, the same reader's tuples are read as lists.
        await c.crash(lagging)
        await c.restart(lagging)
        after = await asyncio.wait_for(c.nodes[leader].client_write(b"after"), BOUND)
        await c.wait_applied(after.log_id.index, timeout=BOUND)


@pytest.mark.parametrize("wrong", sorted(WRONG_READS))
async def test_a_log_reader_returning_no_list_of_entries_is_refused_at_start(wrong: str) -> None:
    async with Cluster(fast_config(), seed=98, log_store=lambda nid, disk: ShapeStore(disk)) as c:
        leader, follower, resp = await _three_nodes_written(c, 10)
        await c.crash(follower)
        ShapeStore.wrong = WRONG_READS[wrong]
        # (A list of something else is named as the entry read, as the checks at start
        # look at every entry.)
        said = r"the log store returned dict" if wrong == "dicts" else r"try_get_log_entries returned"
        with pytest.raises(StorageError, match=said):
            await c.add_node(follower)
        ShapeStore.wrong = None
        assert all(r.metrics.running for r in c.nodes.values())
        await c.add_node(follower)
        after = await asyncio.wait_for(c.nodes[leader].client_write(b"after"), BOUND)
        await c.wait_applied(after.log_id.index, timeout=BOUND)


class ShapeBuilder:
    """A snapshot builder whose result is rewritten by ``ShapeBuildingSm.wrong`` once set."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def build_snapshot(self) -> Any:
        snap = await self.inner.build_snapshot()
        wrong = ShapeBuildingSm.wrong
        return snap if wrong is None else wrong(snap)


class ShapeBuildingSm(MemStateMachine):
    wrong: ClassVar[Any] = None

    def get_snapshot_builder(self) -> Any:
        return ShapeBuilder(super().get_snapshot_builder())


async def _crash_a_purged_follower(c: Cluster[Any, Any]) -> tuple[int, int]:
    """Start nodes 1-3, write 10 entries, have a follower snapshot and purge its whole log
    (the membership entry at index 0 with it), then crash it; return the leader's and the
    follower's ids."""
    leader, follower, resp = await _three_nodes_written(c, 10)
    node = c.nodes[follower]
    await node.trigger.snapshot()
    await node.wait(timeout=BOUND).snapshot(resp.log_id, "built")
    await node.trigger.purge_log(resp.log_id.index)
    await node.wait(timeout=BOUND).purged(resp.log_id, "purged")
    await c.crash(follower)
    return leader, follower


async def _restart_and_commit(c: Cluster[Any, Any], leader: int, follower: int) -> None:
    """Start ``follower`` again (its plug-in mended) and see a new write applied everywhere."""
    await c.add_node(follower)
    after = await asyncio.wait_for(c.nodes[leader].client_write(b"after"), BOUND)
    await c.wait_applied(after.log_id.index, timeout=BOUND)


@pytest.mark.parametrize(
    "wrong", [pytest.param(lambda snap: None, id="None"), pytest.param(lambda snap: (snap.meta, snap.data), id="tuple")]
)
async def test_a_snapshot_builder_returning_no_snapshot_at_start_is_named(wrong: Any) -> None:
    ShapeBuildingSm.wrong = None
    config = fast_config(snapshot_policy=SnapshotPolicy.never(), max_in_snapshot_log_to_keep=0)
    try:
        async with Cluster(config, seed=98, state_machine=lambda disk: ShapeBuildingSm(disk)) as c:
            leader, follower = await _crash_a_purged_follower(c)
            c.disks[follower].snapshot = None  # its snapshot was lost: one is built at start
            ShapeBuildingSm.wrong = wrong
            with pytest.raises(StorageError, match=r"building a snapshot to cover the purged log .*SnapshotBuilder\.build_snapshot returned (NoneType|tuple)"):
                await c.add_node(follower)
            assert all(r.metrics.running for r in c.nodes.values())
            ShapeBuildingSm.wrong = None
            await _restart_and_commit(c, leader, follower)
    finally:
        ShapeBuildingSm.wrong = None


class ForgetsCallback(MemLogStore):
    """A log store whose ``append`` writes the entries but never calls its callback, once
    ``forget`` is set (a subclass overriding ``append`` alone: the node uses it)."""

    forget = False

    async def append(self, entries: list[Entry], callback: IOFlushed) -> None:
        if not self.forget:
            await super().append(entries, callback)
            return
        await super().append(entries, IOFlushed(lambda err: None))  # written; ``callback`` dropped


async def test_an_append_that_forgets_its_callback_stops_its_node_saying_so() -> None:
    stores: dict[int, ForgetsCallback] = {}

    def make(nid: int, disk: Any) -> ForgetsCallback:
        stores[nid] = ForgetsCallback(disk)
        return stores[nid]

    async with Cluster(fast_config(), seed=98, log_store=make) as c:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        resp = await asyncio.wait_for(c.nodes[leader].client_write(b"before"), BOUND)
        stores[leader].forget = True
        with pytest.raises(StorageError, match=r"let go of its IOFlushed callback without calling it.*io_completed\(None\)"):
            await asyncio.wait_for(c.nodes[leader].client_write(b"lost"), BOUND)
        m = c.nodes[leader].metrics
        assert not m.running and m.error is not None and "IOFlushed" in m.error
        others = [n for n in c.nodes if n != leader]
        new_leader = await c.wait_for_leader(timeout=BOUND, among=others)
        after = await asyncio.wait_for(c.nodes[new_leader].client_write(b"after"), BOUND)
        await c.wait_applied(after.log_id.index, timeout=BOUND, ids=others)
        assert after.log_id.index > resp.log_id.index


class GatedAppend(MemLogStore):
    """A log store whose ``append`` awaits ``gate`` (its disk) before calling back."""

    gate: asyncio.Event | None = None
    entered: asyncio.Event | None = None

    async def append(self, entries: list[Entry], callback: IOFlushed) -> None:
        await super().append(entries, IOFlushed(lambda err: None))
        if self.gate is not None:
            if self.entered is not None:
                self.entered.set()
            await self.gate.wait()
        callback.io_completed(None)


async def test_an_append_holding_its_callback_when_cancelled_at_shutdown_stops_cleanly() -> None:
    from openraft_py import Config, Raft
    from openraft_py.storage.memory import MemDisk

    router = Router()
    store = GatedAppend(MemDisk())
    raft = await Raft.new(1, Config(cluster_name="t98"), router.factory(1), store, MemStateMachine())
    router.register(1, raft)
    try:
        await raft.initialize({1})
        await raft.wait(timeout=BOUND).state(ServerState.LEADER, "n1 leads")
        store.gate, store.entered = asyncio.Event(), asyncio.Event()
        write = asyncio.ensure_future(raft.client_write(b"pending"))
        await asyncio.wait_for(store.entered.wait(), BOUND)  # the append awaits its disk
    finally:
        await asyncio.wait_for(raft.shutdown(), BOUND)
    with pytest.raises(Stopped):
        await asyncio.wait_for(write, BOUND)
    m = raft.metrics
    assert not m.running and m.error is None, m.error


class WrongBuilderSm(MemStateMachine):
    """A state machine whose builder goes wrong (``how``) once ``broken`` is set."""

    broken = False
    how = ""

    def get_snapshot_builder(self) -> Any:
        if not WrongBuilderSm.broken:
            return super().get_snapshot_builder()
        if WrongBuilderSm.how == "no builder":
            return None

        disk = self.disk

        class Plain:
            def build_snapshot(self) -> Snapshot:
                # A plain ``def`` that does its work and returns the Snapshot.
                return Snapshot(SnapshotMeta(disk.last_applied, disk.membership, "plain"), io.BytesIO(b""))

        return Plain()


@pytest.mark.parametrize(
    ("how", "said"),
    [
        ("plain def", r"SnapshotBuilder\.build_snapshot must be a coroutine function \(async def\): Plain\.build_snapshot\(\) returned Snapshot"),
        ("no builder", r"RaftStateMachine\.get_snapshot_builder returned NoneType None, expected an object with an async def build_snapshot"),
    ],
)
async def test_a_snapshot_builder_that_cannot_be_awaited_stops_its_node_naming_it(how: str, said: str) -> None:
    WrongBuilderSm.broken, WrongBuilderSm.how = False, how
    try:
        async with Cluster(fast_config(), seed=98, state_machine=lambda disk: WrongBuilderSm(disk)) as c:
            leader, follower, resp = await _three_nodes_written(c, 1)
            WrongBuilderSm.broken = True
            await c.nodes[follower].trigger.snapshot()
            m = await c.nodes[follower].wait(timeout=BOUND).metrics(lambda m: not m.running, "the follower stops")
            assert m.error is not None and m.error.startswith("storage error while building a snapshot"), m.error
            assert re.search(said, m.error), m.error
            WrongBuilderSm.broken = False
            after = await asyncio.wait_for(c.nodes[leader].client_write(b"after"), BOUND)
            others = [n for n in c.nodes if n != follower]
            await c.wait_applied(after.log_id.index, timeout=BOUND, ids=others)
            assert all(c.nodes[n].metrics.running for n in others)
    finally:
        WrongBuilderSm.broken = False


class ForgetsMembership(MemStateMachine):
    """A durable state machine whose ``applied_state`` answers no membership once ``forget``
    is set (it kept its applied id, not the membership it applied)."""

    forget = False

    async def applied_state(self) -> Any:
        applied, membership = await super().applied_state()
        return (applied, EMPTY_STORED_MEMBERSHIP) if ForgetsMembership.forget else (applied, membership)


async def test_a_state_machine_that_lost_its_membership_is_refused_at_start() -> None:
    said = r"applied_state reports the membership of None, older than the one its own current snapshot holds"
    ForgetsMembership.forget = False
    config = fast_config(max_in_snapshot_log_to_keep=0)
    try:
        async with Cluster(config, seed=98, state_machine=lambda disk: ForgetsMembership(disk)) as c:
            leader, follower = await _crash_a_purged_follower(c)  # (the membership entry, index 0, purged)
            ForgetsMembership.forget = True
            with pytest.raises(StorageError, match=said) as info:
                await c.add_node(follower)
            assert "keeps, durably and with its applied log id, the StoredMembership" in str(info.value)
            ForgetsMembership.forget = False
            assert all(r.metrics.running for r in c.nodes.values())
            await _restart_and_commit(c, leader, follower)
    finally:
        ForgetsMembership.forget = False


class ReportsOddly(MemLogStore):
    """A log store whose ``append`` reports its flush with ``odd`` once it is set."""

    odd: ClassVar[Any] = None

    async def append(self, entries: list[Entry], callback: IOFlushed) -> None:
        await super().append(entries, IOFlushed(lambda err: None))
        odd = ReportsOddly.odd
        callback.io_completed(None if odd is None else odd)


@pytest.mark.parametrize(
    ("odd", "said"),
    [("disk full", r"got str 'disk full'"), (OSError, r"got type <class 'OSError'>")],
)
async def test_a_flush_failure_reported_without_an_exception_says_what_io_completed_takes(odd: Any, said: str) -> None:
    ReportsOddly.odd = None
    try:
        async with Cluster(fast_config(), seed=98, log_store=lambda nid, disk: ReportsOddly(disk)) as c:
            await c.start({1})
            raft = c.nodes[1]
            await raft.wait(timeout=BOUND).state(ServerState.LEADER, "n1 leads")
            ReportsOddly.odd = odd
            with pytest.raises(StorageError, match=r"IOFlushed\.io_completed\(error\) takes None or an exception instance, " + said):
                await asyncio.wait_for(raft.client_write(b"x"), BOUND)
            assert not raft.metrics.running
    finally:
        ReportsOddly.odd = None


class KeepsHardTtl:
    """A network client that keeps the contract as the TCP transport does (``Timeout`` after
    ``option.hard_ttl``), to a target that answers nothing while ``KeepsHardTtl.silent``
    holds it."""

    silent: ClassVar[set[int]] = set()

    def __init__(self, inner: Any, target: int) -> None:
        self.inner, self.target = inner, target

    async def _call(self, name: str, req: Any, option: RPCOption) -> Any:
        try:
            async with asyncio.timeout(option.hard_ttl):
                if self.target in KeepsHardTtl.silent:
                    await asyncio.Event().wait()  # no answer
                return await getattr(self.inner, name)(req, option)
        except TimeoutError:
            raise Timeout(f"no answer from node {self.target} within {option.hard_ttl:g}s") from None

    async def append_entries(self, req: Any, option: RPCOption) -> Any:
        return await self._call("append_entries", req, option)

    async def vote(self, req: Any, option: RPCOption) -> Any:
        return await self._call("vote", req, option)

    async def install_snapshot(self, req: Any, option: RPCOption) -> Any:
        return await self._call("install_snapshot", req, option)

    async def transfer_leader(self, req: Any, option: RPCOption) -> Any:
        return await self._call("transfer_leader", req, option)


async def test_a_stalled_event_loop_is_not_taken_for_a_network_that_did_not_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    KeepsHardTtl.silent = set()
    async with Cluster(fast_config(), seed=98) as c:
        factory = c.router.factory

        class Factory:
            def __init__(self, inner: RouterFactory) -> None:
                self.inner = inner

            def new_client(self, target: int, node: BasicNode) -> KeepsHardTtl:
                return KeepsHardTtl(self.inner.new_client(target, node), target)

        c.router.factory = lambda source: Factory(factory(source))  # type: ignore[assignment, return-value]
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        resp = await asyncio.wait_for(c.nodes[leader].client_write(b"x"), BOUND)
        silent = min(n for n in c.nodes if n != leader)
        KeepsHardTtl.silent = {silent}
        caplog.set_level(logging.WARNING)
        for _ in range(3):
            await asyncio.sleep(0.05)  # heartbeats to the silent node go out ...
            time.sleep(0.5)  # ... and the loop stalls past their hard_ttl and the bound (120 ms)
        KeepsHardTtl.silent = set()
        # (The stall may have let an election timer run out: write to whichever node leads.)
        after = None
        while after is None:
            leader = await c.wait_for_leader(timeout=BOUND)
            try:
                after = await asyncio.wait_for(c.nodes[leader].client_write(b"after"), BOUND)
            except ForwardToLeader:
                await asyncio.sleep(0.01)
        await c.wait_applied(after.log_id.index, timeout=BOUND)
        assert after.log_id.index > resp.log_id.index
        blamed = [r.getMessage() for r in caplog.records if "did not answer" in r.getMessage()]
        assert not blamed, blamed


async def test_a_built_snapshot_whose_meta_is_no_snapshot_meta_is_said_so() -> None:
    ShapeBuildingSm.wrong = None
    try:
        async with Cluster(fast_config(), seed=98, state_machine=lambda disk: ShapeBuildingSm(disk)) as c:
            leader, follower, resp = await _three_nodes_written(c, 1)
            ShapeBuildingSm.wrong = lambda snap: Snapshot({"last_log_id": None}, snap.data)  # type: ignore[arg-type]
            await c.nodes[follower].trigger.snapshot()
            m = await c.nodes[follower].wait(timeout=BOUND).metrics(lambda m: not m.running, "the follower stops")
            assert m.error is not None
            assert re.search(r"returned a Snapshot whose meta is dict .*, expected a SnapshotMeta$", m.error), m.error
    finally:
        ShapeBuildingSm.wrong = None
