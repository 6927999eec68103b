"""A snapshot the state machine cannot install (issue 9, item 4).

- The state machine rejects the data (``ValueError``: not a snapshot of its format; its
  state is unchanged by the ``RaftStateMachine`` contract): that install is refused, the
  leader gets an error and sends the snapshot again later, and the node keeps running with
  its log, committed and applied state as they were. Entries committed while the install
  was in progress are applied after the refusal, in order, with no gap.
- Any other exception (a storage IO error): the node stops with ``StorageError``; its log
  and state machine are as before the install, so a restart catches up consistently.
- A whole snapshot the node does not need (it holds what it covers): answered without an
  install, and its received file closed.
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any, BinaryIO

import pytest
from integration.checks import check_applied_prefix, check_log_matching
from integration.snapshot.helpers import same_state, snap_config, write

from openraft_py import ApiError, Fatal, SnapshotPolicy, StorageError
from openraft_py.storage.memory import KvSet, MemDisk, MemStateMachine, encode_kv
from openraft_py.testing.cluster import Cluster
from openraft_py.types import (
    AppendEntriesRequest,
    BasicNode,
    Entry,
    InstallSnapshotRequest,
    LogId,
    Membership,
    Normal,
    ServerState,
    SnapshotMeta,
    StoredMembership,
    Vote,
)

pytestmark = pytest.mark.timeout(30)

BOUND = 5.0


class FlakySM(MemStateMachine):
    """A ``MemStateMachine`` whose next ``refuse`` installs are given garbage bytes instead
    of the snapshot (the real decoder raises ``ValueError``), whose next ``io_errors``
    installs raise ``OSError``, and whose installs wait for ``gate`` when it is set."""

    def __init__(self, disk: MemDisk) -> None:
        super().__init__(disk)
        self.refuse = 0
        self.io_errors = 0
        self.refused = 0
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.failed = asyncio.Event()

    async def install_snapshot(self, meta: SnapshotMeta, data: BinaryIO) -> None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        try:
            if self.io_errors > 0:
                self.io_errors -= 1
                raise OSError("device error while installing")
            if self.refuse > 0:
                self.refuse -= 1
                self.refused += 1
                await super().install_snapshot(meta, io.BytesIO(b"\x00 not a snapshot \xff"))
                raise AssertionError("garbage was installed")
        except BaseException:
            self.failed.set()
            raise
        await super().install_snapshot(meta, data)


async def lag_behind_a_purge(c: Cluster) -> tuple[int, int]:
    """Start 3 nodes, cut one off while the leader writes past its purge point; return
    ``(leader, lagger)``."""
    await c.start({1, 2, 3})
    leader = await c.wait_for_leader()
    first = await write(c, leader, 0, 5)
    await c.wait_applied(first)
    lagger = min(set(c.nodes) - {leader})
    c.router.isolate(lagger)
    last = first
    for k in range(1, 6):
        last = await write(c, leader, 10 * k, 10 * k + 10)
    await c.wait_applied(last, ids=set(c.nodes) - {lagger})
    m = await c.nodes[leader].wait(BOUND).purged(first + 1, "leader purged past the lagger")
    assert m.purged is not None and c.nodes[lagger].metrics.last_log_index < m.purged.index
    return leader, lagger


def flaky(c: Cluster, nid: int) -> FlakySM:
    sm = c.state_machines[nid]
    assert isinstance(sm, FlakySM)
    return sm


async def heal_and_catch_up(c: Cluster, lagger: int) -> int:
    """Heal the partition and wait until ``lagger`` applied what the leader had applied then
    (its state machine's refusals, if any, come first); returns the leader."""
    c.router.heal()
    leader = await c.wait_for_leader()
    applied = c.nodes[leader].metrics.last_applied
    assert applied is not None
    await c.nodes[lagger].wait(BOUND * 2).applied_index_at_least(applied.index, "lagger caught up")
    return leader


async def test_refused_snapshot_keeps_the_node_running_and_is_sent_again(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="openraft_py.replication")
    c = Cluster(snap_config(snapshot_policy=SnapshotPolicy.logs_since_last(20)), seed=2, state_machine=FlakySM)
    try:
        leader, lagger = await lag_behind_a_purge(c)
        sm = flaky(c, lagger)
        disk = c.disks[lagger]
        before = (list(disk.entries), disk.offset, disk.last_applied, list(disk.applied_log), dict(disk.kv))
        sm.refuse = 2
        # Two refusals, then the third transfer installs; the node never stops.
        leader = await heal_and_catch_up(c, lagger)
        assert sm.refused == 2 and sm.refuse == 0
        assert c.nodes[lagger].metrics.running
        # The sender says so at WARNING once per snapshot (it resends until one installs).
        refusals = [r for r in caplog.records if "refused at" in r.getMessage() and f"->{lagger} " in r.getMessage()]
        assert len(refusals) == 2, [r.getMessage() for r in refusals]
        warned = [r for r in refusals if r.levelno == logging.WARNING]
        ids = {r.getMessage().split()[1] for r in refusals}
        assert len(warned) == len(ids) >= 1, [(r.levelname, r.getMessage()) for r in refusals]
        assert c.nodes[lagger].metrics.snapshot is not None
        same_state(c, leader, lagger)
        # What it held before was a prefix of what it holds now: nothing was lost or skipped.
        assert disk.applied_log[: len(before[3])] == before[3]
        more = await write(c, leader, 100, 105)
        await c.wait_applied(more)
        for nid in c.nodes:
            assert c.nodes[nid].metrics.running
        same_state(c, leader, lagger)
        check_log_matching(c.disks)
        check_applied_prefix(c.disks)
    finally:
        await c.shutdown()


async def test_the_refusing_node_says_so_at_warning_once_per_snapshot(caplog: pytest.LogCaptureFixture) -> None:
    """A snapshot the follower's state machine cannot read (as one of a newer format from a
    leader upgraded before it), sent again after each refusal: the follower logs the refusal
    at WARNING once per snapshot and reason, as the leader does, and at DEBUG at the resends
    (it was a WARNING at each refusal)."""
    caplog.set_level(logging.DEBUG, logger="openraft_py.core")
    c = Cluster(snap_config(snapshot_policy=SnapshotPolicy.logs_since_last(20)), seed=2, state_machine=FlakySM)
    try:
        leader, lagger = await lag_behind_a_purge(c)
        sm = flaky(c, lagger)
        sm.refuse = 4
        await heal_and_catch_up(c, lagger)
        assert sm.refused == 4
        said = f"node {lagger}: the state machine refused snapshot "
        refusals = [r for r in caplog.records if r.getMessage().startswith(said)]
        assert len(refusals) == 4, [r.getMessage() for r in refusals]
        warned = [r for r in refusals if r.levelno == logging.WARNING]
        assert len(warned) == len({r.getMessage() for r in refusals}) >= 1, [(r.levelname, r.getMessage()) for r in refusals]
        assert len(warned) < len(refusals), "every resend was a WARNING"
    finally:
        await c.shutdown()


async def test_install_io_error_stops_the_node_cleanly_and_a_restart_catches_up() -> None:
    c = Cluster(snap_config(snapshot_policy=SnapshotPolicy.logs_since_last(20)), seed=2, state_machine=FlakySM)
    try:
        leader, lagger = await lag_behind_a_purge(c)
        sm = flaky(c, lagger)
        disk = c.disks[lagger]
        log_before = (list(disk.entries), disk.offset, disk.last_purged)
        sm_before = (disk.last_applied, list(disk.applied_log), dict(disk.kv), disk.snapshot)
        sm.io_errors = 1
        raft = c.nodes[lagger]
        c.router.heal()
        with pytest.raises(StorageError) as info:
            await asyncio.wait_for(raft.wait(BOUND).state(ServerState.CANDIDATE, "never"), BOUND)
        assert "installing snapshot" in str(info.value)
        assert isinstance(info.value.__cause__, OSError)
        assert not raft.metrics.running and "device error" in (raft.metrics.error or "")
        with pytest.raises(StorageError):
            await asyncio.wait_for(raft.client_write(b"x"), BOUND)
        # Nothing of the install was half-done on disk.
        assert (list(disk.entries), disk.offset, disk.last_purged) == log_before
        assert (disk.last_applied, list(disk.applied_log), dict(disk.kv), disk.snapshot) == sm_before
        # The others go on; the restarted node catches up by snapshot.
        others = set(c.nodes) - {lagger}
        leader = await c.wait_for_leader(among=others)
        more = await write(c, leader, 200, 205)
        await c.wait_applied(more, ids=others)
        await c.restart(lagger)
        await c.wait_applied(more)
        same_state(c, leader, lagger)
        more = await write(c, leader, 300, 305)
        await c.wait_applied(more)
        check_log_matching(c.disks)
        check_applied_prefix(c.disks)
    finally:
        await c.shutdown()


# -- one follower driven directly by a fake leader -----------------------------------------------


MEMBERSHIP = Membership.new([{1, 2, 3}], {1: BasicNode(), 2: BasicNode(), 3: BasicNode()})
LEADER_VOTE = Vote.new(1, 1, True)


def entries(lo: int, hi: int) -> list[Entry]:
    """The fake leader's entries ``[lo, hi)`` of term 1 (index 0 holds the membership)."""
    out = []
    for i in range(lo, hi):
        payload: Any = MEMBERSHIP if i == 0 else Normal(encode_kv(KvSet(f"k{i}", str(i))))
        out.append(Entry(LogId(1, i), payload))
    return out


async def snapshot_of(upto: int) -> tuple[SnapshotMeta, bytes]:
    """A real ``MemStateMachine`` snapshot of the fake leader's entries up to ``upto``."""
    sm = MemStateMachine(MemDisk())
    await sm.apply(entries(0, upto + 1))
    snap = await sm.get_snapshot_builder().build_snapshot()
    return snap.meta, snap.data.read()


async def test_entries_committed_during_a_refused_install_are_applied_in_order() -> None:
    """While the state machine works on a snapshot up to 7 (applied: 4), the leader commits
    up to 9; the state machine then refuses the snapshot. The follower answers the install
    with an error, keeps its log, and applies 5..9 in order (no gap from the refused
    snapshot); a valid snapshot later installs."""
    c = Cluster(snap_config(enable_tick=False), seed=7, state_machine=FlakySM)
    try:
        raft = await c.add_node(3)
        sm = flaky(c, 3)
        disk = c.disks[3]
        resp = await asyncio.wait_for(
            raft.append_entries(AppendEntriesRequest(LEADER_VOTE, None, entries(0, 10), LogId(1, 4))), BOUND
        )
        assert resp.success
        await raft.wait(BOUND).applied_index_at_least(4)

        sm.refuse = 1
        sm.gate = asyncio.Event()
        meta = SnapshotMeta(LogId(1, 7), StoredMembership(LogId(1, 0), MEMBERSHIP), "s-7")
        install = asyncio.ensure_future(
            raft.install_snapshot(InstallSnapshotRequest(LEADER_VOTE, meta, 0, b"any bytes", True))
        )
        await asyncio.wait_for(sm.entered.wait(), BOUND)
        # Committed moves to 9 while the install is in progress.
        resp = await asyncio.wait_for(
            raft.append_entries(AppendEntriesRequest(LEADER_VOTE, LogId(1, 9), [], LogId(1, 9))), BOUND
        )
        assert resp.success
        sm.gate.set()
        with pytest.raises(ApiError, match="refused snapshot s-7") as info:
            await asyncio.wait_for(install, BOUND)
        assert not isinstance(info.value, Fatal) and isinstance(info.value.__cause__, ValueError)

        m = await raft.wait(BOUND).applied_index_at_least(9)
        assert m.running and m.last_applied == LogId(1, 9) and m.snapshot is None and m.purged is None
        assert [lid.index for lid, _ in disk.applied_log] == list(range(1, 10))
        assert disk.kv == {f"k{i}": str(i) for i in range(1, 10)}
        assert [e.log_id.index for e in disk.entries] == list(range(10)) and disk.offset == 0
        assert disk.snapshot is None

        # The node still takes a valid snapshot (covering more than it holds) afterwards.
        sm.gate = None
        meta, data = await snapshot_of(20)
        resp2 = await asyncio.wait_for(
            raft.install_snapshot(InstallSnapshotRequest(LEADER_VOTE, meta, 0, data, True)), BOUND
        )
        assert resp2.vote == LEADER_VOTE
        m = await raft.wait(BOUND).applied_index_at_least(20)
        assert m.snapshot == LogId(1, 20) and m.running
        assert disk.kv == {f"k{i}": str(i) for i in range(1, 21)}
        resp = await asyncio.wait_for(
            raft.append_entries(AppendEntriesRequest(LEADER_VOTE, LogId(1, 20), entries(21, 23), LogId(1, 22))), BOUND
        )
        assert resp.success
        m = await raft.wait(BOUND).applied_index_at_least(22)
        assert [lid.index for lid, _ in disk.applied_log] == list(range(1, 23))
    finally:
        await c.shutdown()


@pytest.mark.parametrize("cause", ["shutdown", "panic"])
async def test_an_install_in_progress_fails_when_the_node_stops(cause: str) -> None:
    """The leader's last chunk waits while the state machine installs (a new transfer is
    refused meanwhile, the core keeps serving); the node stops: that call and a
    get_current_snapshot queued behind the install are answered with the node's error at
    once, and the node restarts from its disk as it was."""
    from openraft_py import Panicked, Stopped
    from openraft_py.core.messages import EngineCall

    c = Cluster(snap_config(enable_tick=False), seed=9, state_machine=FlakySM)
    try:
        raft = await c.add_node(3)
        sm = flaky(c, 3)
        resp = await asyncio.wait_for(
            raft.append_entries(AppendEntriesRequest(LEADER_VOTE, None, entries(0, 6), LogId(1, 2))), BOUND
        )
        assert resp.success
        sm.gate = asyncio.Event()
        meta, data = await snapshot_of(10)
        install = asyncio.ensure_future(raft.install_snapshot(InstallSnapshotRequest(LEADER_VOTE, meta, 0, data, True)))
        await asyncio.wait_for(sm.entered.wait(), BOUND)
        queued = asyncio.ensure_future(raft.get_current_snapshot())
        other = SnapshotMeta(LogId(1, 12), StoredMembership(LogId(1, 0), MEMBERSHIP), "s-12")
        # A new transfer is refused while the install runs (the core does not wait for it).
        with pytest.raises(ApiError, match="being installed"):
            await asyncio.wait_for(
                raft.install_snapshot(InstallSnapshotRequest(LEADER_VOTE, other, 0, b"ab", False)), BOUND
            )
        for _ in range(5):
            await asyncio.sleep(0)
        assert not install.done() and not queued.done()
        if cause == "shutdown":
            err: type[Fatal] = Stopped
            await asyncio.wait_for(raft.shutdown(), BOUND)
        else:
            err = Panicked

            def fn(eng: Any, tx: Any, now: float) -> None:
                raise RuntimeError("a bug")

            bug: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            raft._core.send_msg(EngineCall(fn, bug))
            with pytest.raises(Panicked):
                await asyncio.wait_for(bug, BOUND)
        for f in (install, queued):
            with pytest.raises(err):
                await asyncio.wait_for(f, BOUND)
        with pytest.raises(err):
            await asyncio.wait_for(raft.get_current_snapshot(), BOUND)
        assert not raft.metrics.running
        sm.gate.set()
        # The snapshot was not installed half-way: the node restarts from its disk as it was.
        disk = c.disks[3]
        assert disk.snapshot is None and disk.last_applied is not None and disk.last_applied.index <= 5
        c.nodes.pop(3)
        c.router.unregister(3)
        raft = await c.add_node(3)
        m = await raft.wait(BOUND).applied_index_at_least(2)
        assert m.running and m.last_log_index == 5
    finally:
        await c.shutdown()


async def test_a_snapshot_damaged_in_transit_is_refused_and_the_intact_one_installs() -> None:
    """A leader's ``MemStateMachine`` snapshot reaches the follower with one bit flipped
    inside a value (a network that spoils a chunk): the follower refuses it (``ApiError``
    naming the checksum mismatch), keeps running with its log and state as they were, and
    installs the intact bytes sent again. The damaged bytes used to be installed: the
    follower then held another value for the key than the leader."""
    c = Cluster(snap_config(enable_tick=False), seed=11)
    try:
        raft = await c.add_node(3)
        disk = c.disks[3]
        resp = await asyncio.wait_for(
            raft.append_entries(AppendEntriesRequest(LEADER_VOTE, None, entries(0, 6), LogId(1, 5))), BOUND
        )
        assert resp.success
        await raft.wait(BOUND).applied_index_at_least(5)
        before = (list(disk.entries), disk.last_applied, list(disk.applied_log), dict(disk.kv))

        meta, data = await snapshot_of(40)
        damaged = bytearray(data)
        damaged[damaged.index(b"k30") + 4] ^= 0x01  # the value "30" becomes "20": it still decodes
        half = len(data) // 2

        async def send(body: bytes) -> Any:
            await asyncio.wait_for(
                raft.install_snapshot(InstallSnapshotRequest(LEADER_VOTE, meta, 0, body[:half], False)), BOUND
            )
            return await asyncio.wait_for(
                raft.install_snapshot(InstallSnapshotRequest(LEADER_VOTE, meta, half, body[half:], True)), BOUND
            )

        with pytest.raises(ApiError, match=f"refused snapshot {meta.snapshot_id}: .*checksum mismatch") as info:
            await send(bytes(damaged))
        assert not isinstance(info.value, Fatal)
        m = raft.metrics
        assert m.running and m.snapshot is None and m.last_applied == LogId(1, 5)
        assert (list(disk.entries), disk.last_applied, list(disk.applied_log), dict(disk.kv)) == before

        resp2 = await send(data)
        assert resp2.vote == LEADER_VOTE
        m = await raft.wait(BOUND).applied_index_at_least(40)
        assert m.snapshot == LogId(1, 40) and m.running
        assert disk.kv == {f"k{i}": str(i) for i in range(1, 41)}
    finally:
        await c.shutdown()


class TrackingSM(MemStateMachine):
    """A ``MemStateMachine`` that keeps every file ``begin_receiving_snapshot`` handed out."""

    def __init__(self, disk: MemDisk) -> None:
        super().__init__(disk)
        self.files: list[BinaryIO] = []

    async def begin_receiving_snapshot(self) -> BinaryIO:
        f = await super().begin_receiving_snapshot()
        self.files.append(f)
        return f


async def test_a_received_snapshot_that_is_not_installed_is_closed() -> None:
    """A whole snapshot that arrives when the node already holds what it covers (another
    snapshot of a state it installed) is answered without installing it. Its
    file was never closed: an open file descriptor per such transfer, and, since a state
    machine may delete only what the node closed, a full snapshot file left in the
    ``RocksStateMachine``'s directory until the next restart. Now it is closed at once."""
    c = Cluster(snap_config(enable_tick=False), seed=11, state_machine=TrackingSM)
    try:
        raft = await c.add_node(3)
        sm = c.state_machines[3]
        assert isinstance(sm, TrackingSM)
        meta, data = await snapshot_of(10)
        # The second time another snapshot of the same state (a resend of the one installed
        # gets its answer without a new transfer: t96_slow_install.py).
        again = SnapshotMeta(meta.last_log_id, meta.last_membership, meta.snapshot_id + "-again")
        for m in (meta, again):
            resp = await asyncio.wait_for(
                raft.install_snapshot(InstallSnapshotRequest(LEADER_VOTE, m, 0, data, True)), BOUND
            )
            assert resp.vote == LEADER_VOTE
            await raft.wait(BOUND).applied_index_at_least(10)
        assert len(sm.files) == 2
        for _ in range(5):
            await asyncio.sleep(0)  # the install's own close runs in its done callback
        assert [f.closed for f in sm.files] == [True, True], "a received snapshot's file was left open"
        assert raft.metrics.running and raft.metrics.snapshot == LogId(1, 10)
    finally:
        await c.shutdown()


async def test_a_transfer_the_target_lost_by_restarting_is_started_over_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The target restarts in the middle of a snapshot transfer: the next chunk is refused
    (it holds nothing of the transfer), and the leader starts over. That is an ordinary
    recovery, said at INFO: a WARNING is for a snapshot the state machine refused."""
    caplog.set_level(logging.DEBUG, logger="openraft_py.replication")
    c = Cluster(snap_config(snapshot_policy=SnapshotPolicy.logs_since_last(20), snapshot_max_chunk_size=64), seed=2)
    try:
        leader, lagger = await lag_behind_a_purge(c)
        restarted = asyncio.Event()
        back = asyncio.Event()

        async def restart_mid_transfer(rpc: str, source: int, target: int, req: Any) -> None:
            if rpc == "install_snapshot" and target == lagger and req.offset > 0 and not restarted.is_set():
                restarted.set()
                await c.crash(lagger)
                await c.restart(lagger)
                back.set()

        c.router.add_hook(restart_mid_transfer)
        c.router.heal()
        await asyncio.wait_for(back.wait(), BOUND)  # restarted in the middle of the transfer
        applied = c.nodes[leader].metrics.last_applied
        assert applied is not None
        await c.nodes[lagger].wait(BOUND * 2).applied_index_at_least(applied.index, "lagger caught up")
        not_taken = [r for r in caplog.records if "not taken" in r.getMessage() and f"->{lagger}:" in r.getMessage()]
        assert not_taken and all(r.levelno == logging.INFO for r in not_taken), [
            (r.levelname, r.getMessage()) for r in not_taken]
        warned = [r for r in caplog.records if r.levelno >= logging.WARNING and "snapshot" in r.getMessage()]
        assert not warned, [r.getMessage() for r in warned]
    finally:
        await c.shutdown()


async def test_a_transfer_the_target_lost_after_its_last_chunk_is_started_over_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The target restarts as the last chunk reaches it (killed after every chunk arrived,
    before it answered): the last chunk, sent again, is refused (it holds nothing of the
    transfer), and the leader starts over. An ordinary recovery, said at INFO as for any
    other chunk: it was the WARNING "refused at N ... starting over" meant for a snapshot
    the target's state machine refused."""
    caplog.set_level(logging.DEBUG, logger="openraft_py.replication")
    c = Cluster(snap_config(snapshot_policy=SnapshotPolicy.logs_since_last(20), snapshot_max_chunk_size=64), seed=2)
    try:
        leader, lagger = await lag_behind_a_purge(c)
        restarted = asyncio.Event()
        back = asyncio.Event()

        async def restart_at_the_last_chunk(rpc: str, source: int, target: int, req: Any) -> None:
            if rpc == "install_snapshot" and target == lagger and req.done and req.offset > 0 and not restarted.is_set():
                restarted.set()
                await c.crash(lagger)
                await c.restart(lagger)
                back.set()

        c.router.add_hook(restart_at_the_last_chunk)
        c.router.heal()
        await asyncio.wait_for(back.wait(), BOUND)
        applied = c.nodes[leader].metrics.last_applied
        assert applied is not None
        await c.nodes[lagger].wait(BOUND * 2).applied_index_at_least(applied.index, "lagger caught up")
        not_taken = [r for r in caplog.records if "not taken" in r.getMessage() and f"->{lagger}:" in r.getMessage()]
        assert not_taken and all(r.levelno == logging.INFO for r in not_taken), [
            (r.levelname, r.getMessage()) for r in not_taken]
        warned = [r for r in caplog.records if r.levelno >= logging.WARNING and "snapshot" in r.getMessage()]
        assert not warned, [r.getMessage() for r in warned]
    finally:
        await c.shutdown()
