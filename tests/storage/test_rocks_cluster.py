"""A 3-node cluster on RocksDB (router network) survives a full-cluster restart: every
acknowledged write is present and every node ends with the same state machine."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from integration.checks import write_on_leader

from openraft_py.config import Config
from openraft_py.errors import ApiError
from openraft_py.kv.rocks_snapshot import write_snapshot
from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.storage import KvSet, encode_kv
from openraft_py.storage.rocks import RocksLogStore
from openraft_py.testing import Cluster
from openraft_py.types import (
    AppendEntriesRequest,
    BasicNode,
    Entry,
    InstallSnapshotRequest,
    LogId,
    Membership,
    SnapshotMeta,
    StoredMembership,
    Vote,
)

pytestmark = pytest.mark.timeout(60)


class NodeDir:
    """Stands in for the ``MemDisk`` of a node: where its RocksDB directories are."""

    def __init__(self, root: Path, node_id: int) -> None:
        self.node_id = node_id
        self.log_path = root / f"n{node_id}" / "log"
        self.sm_path = root / f"n{node_id}" / "sm"


class RocksFactories:
    """Cluster factories opening each node's stores on its directories; reopening a node
    first closes its previous stores (after ``Cluster.crash`` shut the node down)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.open: dict[int, tuple[RocksLogStore | None, RocksStateMachine | None]] = {}

    def disk(self, nid: int) -> Any:
        return NodeDir(self.root, nid)

    def log_store(self, nid: int, d: NodeDir) -> RocksLogStore:
        old_log, old_sm = self.open.get(nid, (None, None))
        if old_log is not None:
            old_log.close()
        store = RocksLogStore(d.log_path)
        self.open[nid] = (store, old_sm)
        return store

    def state_machine(self, d: NodeDir) -> RocksStateMachine:
        old_log, old_sm = self.open.get(d.node_id, (None, None))
        if old_sm is not None:
            old_sm.close()
        sm = RocksStateMachine(d.sm_path)
        self.open[d.node_id] = (old_log, sm)
        return sm

    def close_all(self) -> None:
        for log, sm in self.open.values():
            if log is not None:
                log.close()
            if sm is not None:
                sm.close()
        self.open.clear()


async def test_full_cluster_restart_keeps_acknowledged_writes(tmp_path: Path) -> None:
    f = RocksFactories(tmp_path)
    config = Config(election_timeout_min=150, election_timeout_max=300, heartbeat_interval=50)
    c = Cluster(config, seed=7, disk=f.disk, log_store=f.log_store, state_machine=f.state_machine)
    ids = {1, 2, 3}
    try:
        await c.start(ids)
        leader = await c.wait_for_leader()
        acked: dict[str, str] = {}
        for i in range(60):
            await c.nodes[leader].client_write(encode_kv(KvSet(f"k{i}", f"v{i}")))
            acked[f"k{i}"] = f"v{i}"
        last = c.nodes[leader].metrics.last_log_index
        await c.wait_applied(last)

        # Full-cluster restart: every node stops, every store closes, every node reopens.
        for nid in sorted(ids):
            await c.crash(nid)
        f.close_all()
        for nid in sorted(ids):
            await c.add_node(nid)
        leader = await c.wait_for_leader(timeout=10)
        for i in range(60, 80):
            await c.nodes[leader].client_write(encode_kv(KvSet(f"k{i}", f"v{i}")))
            acked[f"k{i}"] = f"v{i}"
        last = c.nodes[leader].metrics.last_log_index
        await c.wait_applied(last, timeout=10)
        datas = {nid: sm.data for nid, sm in c.state_machines.items()}
        for nid, data in datas.items():
            assert data == acked, f"n{nid} state machine differs"
        applied = {nid: (await sm.applied_state())[0] for nid, sm in c.state_machines.items()}
        assert len(set(applied.values())) == 1, applied
    finally:
        await c.shutdown()
        f.close_all()


async def test_node_with_damaged_wal_is_refused_and_the_cluster_goes_on(tmp_path: Path) -> None:
    """Issue 9: a node whose log store's WAL was damaged while it was down must not come back
    serving a shortened log. Its restart raises ``StorageError`` (promptly, naming the path);
    the two other nodes keep committing and their committed logs agree."""
    import asyncio
    import shutil

    from openraft_py.errors import StorageError

    f = RocksFactories(tmp_path)
    config = Config(election_timeout_min=150, election_timeout_max=300, heartbeat_interval=50)
    c = Cluster(config, seed=11, disk=f.disk, log_store=f.log_store, state_machine=f.state_machine)
    try:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        for i in range(60):
            await c.nodes[leader].client_write(encode_kv(KvSet(f"k{i}", f"v{i}")))
        last = c.nodes[leader].metrics.last_log_index
        await c.wait_applied(last)
        victim = next(n for n in (3, 2, 1) if n != leader)
        log_dir = f.disk(victim).log_path
        image = tmp_path / "image"
        shutil.copytree(log_dir, image)  # what a crash of the running node leaves (data in the WAL)
        await c.crash(victim)
        old_log, old_sm = f.open.pop(victim)
        assert old_log is not None and old_sm is not None
        old_log.close()
        old_sm.close()
        wals = sorted((p for p in image.iterdir() if p.name.endswith(".log")), key=lambda p: int(p.name[:-4]))
        data = bytearray(wals[-1].read_bytes())
        assert len(data) > 1000, "the WAL holds the node's writes"
        data[len(data) // 2] ^= 0xFF
        wals[-1].write_bytes(bytes(data))
        shutil.rmtree(log_dir)
        shutil.move(str(image), str(log_dir))

        with pytest.raises(StorageError) as ei:
            await asyncio.wait_for(c.add_node(victim), 10)
        assert str(log_dir) in str(ei.value)
        assert victim not in c.nodes

        # The other two still form a majority: a write commits, and their logs agree.
        rest = sorted(set(c.nodes))
        # (The synchronous file work above held the loop: an election may be under way.)
        resp = await write_on_leader(c, encode_kv(KvSet("after", "x")), timeout=30)
        last = resp.log_id.index
        await c.wait_applied(last, timeout=10)
        logs = []
        for nid in rest:
            assert c.nodes[nid].metrics.running, f"n{nid} stopped"
            logs.append(await c.log_stores[nid].try_get_log_entries(0, last + 1))
        assert logs[0] == logs[1] and len(logs[0]) == last + 1
        datas = [c.state_machines[nid].data for nid in rest]
        assert datas[0] == datas[1] and datas[0]["after"] == "x"
    finally:
        await c.shutdown()
        f.close_all()


async def test_a_node_whose_log_directory_is_removed_stops_and_the_cluster_goes_on(tmp_path: Path) -> None:
    """A follower's log directory removed (``rm -rf``) while it runs: it stops at its next
    write with ``StorageError`` naming the deleted ``OPENRAFT-ACKED`` and ENOENT (it went on
    acknowledging appends into files without a name: its next start would have found none of
    them); the two others keep committing, and their logs agree."""
    import shutil

    from openraft_py.errors import StorageError

    f = RocksFactories(tmp_path)
    config = Config(election_timeout_min=150, election_timeout_max=300, heartbeat_interval=50)
    c = Cluster(config, seed=13, disk=f.disk, log_store=f.log_store, state_machine=f.state_machine)
    try:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        for i in range(10):
            await c.nodes[leader].client_write(encode_kv(KvSet(f"k{i}", f"v{i}")))
        victim = next(n for n in (3, 2, 1) if n != leader)
        raft = c.nodes[victim]
        log_dir = f.disk(victim).log_path
        shutil.rmtree(log_dir)
        for i in range(10, 20):
            await write_on_leader(c, encode_kv(KvSet(f"k{i}", f"v{i}")), timeout=10)
        with pytest.raises(StorageError) as ei:
            await raft.wait(10).metrics(lambda m: False, "the victim stops")  # its error, once it stopped
        assert "[Errno 2]" in str(ei.value) and str(log_dir / "OPENRAFT-ACKED") in str(ei.value)
        rest = sorted(n for n in c.nodes if n != victim)
        resp = await write_on_leader(c, encode_kv(KvSet("after", "x")), timeout=10)
        await c.wait_applied(resp.log_id.index, timeout=10, ids=rest)
        logs = [await c.log_stores[n].try_get_log_entries(0, resp.log_id.index + 1) for n in rest]
        assert logs[0] == logs[1] and len(logs[0]) == resp.log_id.index + 1
    finally:
        await c.shutdown()
        for stores in f.open.values():
            for store in stores:
                try:
                    if store is not None:
                        store.close()
                except StorageError:
                    pass  # the victim's stores: their directory is gone
        f.open.clear()


async def test_a_follower_restored_from_an_older_copy_catches_up_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A follower's directories restored from an older copy (a backup) while it was down:
    its log lacks entries it had acknowledged. The leader logs that once and replicates to
    it from what it holds; it catches up. The leader used to resend from what the follower
    had acknowledged, refused at once every time: a busy loop (about 35,000 probes a second),
    nothing logged, and the follower never caught up."""
    import shutil

    f = RocksFactories(tmp_path)
    config = Config(election_timeout_min=500, election_timeout_max=1000, heartbeat_interval=50)
    c = Cluster(config, seed=17, disk=f.disk, log_store=f.log_store, state_machine=f.state_machine)
    acked: dict[str, str] = {}

    async def writes(lo: int, hi: int) -> int:
        last = -1
        for i in range(lo, hi):
            last = (await write_on_leader(c, encode_kv(KvSet(f"k{i}", f"v{i}")), timeout=10)).log_id.index
            acked[f"k{i}"] = f"v{i}"
        return last

    try:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        await c.wait_applied(await writes(0, 10), timeout=10)
        victim = next(n for n in (3, 2, 1) if n != leader)
        term = c.nodes[leader].metrics.current_term
        node_dir = tmp_path / f"n{victim}"
        backup = tmp_path / "backup"

        async def stop_victim() -> None:
            await c.crash(victim)
            old_log, old_sm = f.open.pop(victim)
            assert old_log is not None and old_sm is not None
            old_log.close()
            old_sm.close()

        await stop_victim()
        # (In a thread: the loop keeps the leader's heartbeats going, no election.)
        await asyncio.to_thread(shutil.copytree, node_dir, backup)
        await c.add_node(victim)
        await c.wait_applied(await writes(10, 30), timeout=10)  # the victim acknowledges them too
        await stop_victim()
        await asyncio.to_thread(shutil.rmtree, node_dir)
        await asyncio.to_thread(shutil.copytree, backup, node_dir)  # the older copy
        caplog.clear()
        await c.add_node(victim)
        last = await writes(30, 35)
        await c.wait_applied(last, timeout=10)
        for nid in sorted(c.nodes):
            assert c.state_machines[nid].data == acked, f"n{nid} state machine differs"
        lost = [r.getMessage() for r in caplog.records if "no longer holds entry" in r.getMessage()]
        if c.leader() == leader and c.nodes[leader].metrics.current_term == term:
            assert len(lost) == 1, lost
            assert f"node {leader}: node {victim} no longer holds entry" in lost[0]
        else:  # (a loaded machine: an election, and the new leader's progress started afresh)
            assert len(lost) <= 1, lost
    finally:
        await c.shutdown()
        f.close_all()


MEMBERS = Membership.new([{1, 2, 3}], {1: BasicNode(), 2: BasicNode(), 3: BasicNode()})
LEADER_VOTE = Vote.new(1, 1, True)


@asynccontextmanager
async def _follower_3(tmp_path: Path) -> AsyncIterator[tuple[Cluster, Any, Membership, Vote]]:
    """Node 3 of a cluster on RocksDB stores under ``tmp_path``, alone and without ticks, its
    log holding leader 1's membership entry at index 0: a follower to send requests to."""
    f = RocksFactories(tmp_path)
    config = Config(election_timeout_min=150, election_timeout_max=300, heartbeat_interval=50, enable_tick=False)
    c = Cluster(config, seed=3, disk=f.disk, log_store=f.log_store, state_machine=f.state_machine)
    try:
        raft = await c.add_node(3)
        resp = await asyncio.wait_for(
            raft.append_entries(AppendEntriesRequest(LEADER_VOTE, None, [Entry(LogId(1, 0), MEMBERS)], LogId(1, 0))), 5
        )
        assert resp.success
        yield c, raft, MEMBERS, LEADER_VOTE
    finally:
        await c.shutdown()
        f.close_all()


@pytest.mark.parametrize("sid", ["../../../escaped", "a/b"])
async def test_a_snapshot_whose_id_is_no_file_name_installs_and_the_node_keeps_running(tmp_path: Path, sid: str) -> None:
    """A leader's snapshot id is any string. A RocksDB node given one that is not a plain
    file name installs it and keeps running; its file stays under ``snapshots/`` (``../`` wrote
    it outside; ``a/b`` failed after the state was replaced, and the node stopped with
    ``StorageError``)."""
    async with _follower_3(tmp_path) as (c, raft, members, vote):
        meta = SnapshotMeta(LogId(1, 9), StoredMembership(LogId(1, 0), members), sid)
        data = io.BytesIO()
        write_snapshot(data, meta.last_log_id, meta.last_membership, [(b"k", b"v")])
        got = await asyncio.wait_for(
            raft.install_snapshot(InstallSnapshotRequest(vote, meta, 0, data.getvalue(), True)), 5
        )
        assert got.vote == vote
        m = await raft.wait(5).applied_index_at_least(9)
        assert m.running and m.snapshot == LogId(1, 9)
        assert c.state_machines[3].get("k") == "v"
        assert not list(tmp_path.rglob("escaped*")), list(tmp_path.rglob("escaped*"))
        snap = await raft.get_current_snapshot()
        assert snap is not None
        with snap.data:
            assert snap.meta == meta


async def test_refused_and_abandoned_transfers_leave_no_files_behind(tmp_path: Path) -> None:
    """A leader sends a RocksDB follower a snapshot it refuses (damaged), five times, then
    starts three transfers it abandons: the follower keeps running and holds only the file of
    the transfer still in progress (each refused or abandoned file stayed until the next
    open: a leader resending a snapshot the follower cannot read filled its disk)."""
    async with _follower_3(tmp_path) as (c, raft, members, vote):
        meta = SnapshotMeta(LogId(1, 9), StoredMembership(LogId(1, 0), members), "s-9")
        data = io.BytesIO()
        write_snapshot(data, meta.last_log_id, meta.last_membership, [(b"k%04d" % i, b"v" * 1000) for i in range(1000)])
        bad = bytearray(data.getvalue())
        bad[len(bad) // 2] ^= 0x01
        for _ in range(5):
            with pytest.raises(ApiError, match="checksum mismatch"):
                await asyncio.wait_for(raft.install_snapshot(InstallSnapshotRequest(vote, meta, 0, bytes(bad), True)), 5)
        for i in range(3):
            other = SnapshotMeta(meta.last_log_id, meta.last_membership, f"abandoned-{i}")
            await asyncio.wait_for(
                raft.install_snapshot(InstallSnapshotRequest(vote, other, 0, bytes(bad[:100_000]), False)), 5
            )
        snapdir = tmp_path / "n3" / "sm" / "snapshots"
        assert [os.path.getsize(snapdir / n) for n in os.listdir(snapdir)] == [100_000]
        assert raft.metrics.running and raft.metrics.last_applied == LogId(1, 0)
