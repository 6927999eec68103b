"""A log store (and ``RocksStateMachine``) records whose it is (``check_owner``): ``Raft.new``
on a store recorded for another node id or cluster name raises ``StoreOwnerMismatch`` before
anything is read or written (node 2's store opened as node 3 ran with node 2's vote and log; a
state machine of another cluster made the node discard its own log); a store without the
record (new, or of an earlier version) is adopted by the first node started on it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from rocksdict import Options, Rdict

from openraft_py import StorageError, StoreOwnerMismatch
from openraft_py.config import Config
from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.network.router import Router
from openraft_py.network.tcp import TcpNetworkFactory
from openraft_py.raft import Raft
from openraft_py.storage import IOFlushed, KvSet, encode_kv
from openraft_py.storage.memory import MemDisk, MemLogStore, MemStateMachine
from openraft_py.storage.rocks import RocksLogStore
from openraft_py.storage.rocks.log_format import K_OWNER, META_CF
from openraft_py.types import Entry, LogId, LogState, Membership, Normal, Vote

pytestmark = pytest.mark.timeout(60)


async def _start(
    nid: int, store: object, cluster_name: str = "foo", router: Router | None = None, state_machine: object = None
) -> Raft:
    router = router or Router(seed=nid)
    sm = state_machine if state_machine is not None else MemStateMachine(MemDisk())
    raft = await Raft.new(nid, Config(cluster_name=cluster_name), router.factory(nid), store, sm)  # type: ignore[arg-type]
    router.register(nid, raft)
    return raft


async def _three_node_cluster(root: Path) -> None:
    """A cluster of nodes 1, 2, 3 on RocksDB stores ``root/n<id>``, run until it has a leader
    and every node has voted, then stopped."""
    router = Router(seed=7)
    stores = {nid: RocksLogStore(root / f"n{nid}") for nid in (1, 2, 3)}
    nodes = {nid: await _start(nid, stores[nid], router=router) for nid in (1, 2, 3)}
    try:
        await nodes[1].initialize({1, 2, 3})
        for raft in nodes.values():
            await raft.wait(timeout=10).metrics(lambda m: m.current_leader is not None and m.last_applied is not None,
                                                "a leader, applied")
    finally:
        for nid, raft in nodes.items():
            await raft.shutdown()
            stores[nid].close()


async def test_a_node_started_on_another_nodes_store_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    await _three_node_cluster(tmp_path)
    store = RocksLogStore(tmp_path / "n2")
    try:
        assert store.owner == (2, "foo")
        vote, state = await store.read_vote(), await store.get_log_state()
        assert vote is not None and state.last_log_id is not None
        # node 3 started on node 2's store (two directories swapped): it ran with node 2's vote
        with pytest.raises(StoreOwnerMismatch, match=r"holds the log and vote of node 2 of cluster 'foo', not of "
                           r"node 3: start node 2 on it, or give node 3 a store of its own") as ei:
            await _start(3, store)
        e = ei.value
        assert isinstance(e, StorageError)
        assert (e.node_id, e.cluster_name, e.expected_node_id, e.expected_cluster_name) == (2, "foo", 3, "foo")
        assert str(store.path) in str(e)
        assert store.owner == (2, "foo")
        assert await store.read_vote() == vote and await store.get_log_state() == state
    finally:
        store.close()
    store = RocksLogStore(tmp_path / "n2")  # the refusal wrote nothing, and node 2 itself still starts
    try:
        assert store.owner == (2, "foo") and await store.read_vote() == vote
        raft = await _start(2, store)
        await raft.shutdown()
    finally:
        store.close()


async def test_a_store_of_another_cluster_is_refused(tmp_path: Path) -> None:
    store = RocksLogStore(tmp_path / "log")
    try:
        raft = await _start(1, store, cluster_name="blue")
        await raft.initialize({1})
        await raft.wait(timeout=10).metrics(lambda m: m.current_leader == 1, "leader")
        await raft.shutdown()
        with pytest.raises(StoreOwnerMismatch, match=r"holds the log and vote of node 1 of cluster 'blue', not of "
                           r"cluster 'green' \(the network factory's cluster_name, else Config.cluster_name\): "
                           r"start the node in cluster 'blue', or give it a store of its own"):
            await _start(1, store, cluster_name="green")
        assert store.owner == (1, "blue")
        raft = await _start(1, store, cluster_name="blue")
        await raft.shutdown()
    finally:
        store.close()


async def _write_as_an_earlier_version(store: RocksLogStore) -> None:
    """Give ``store`` a vote and a log but no owner record, as an earlier version left it."""
    await store.save_vote(Vote.new(1, 4, committed=True))
    done: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
    await store.append([Entry(LogId(1, 0), Membership.new([{4}]))], IOFlushed(done.set_result))
    assert await done is None


async def test_a_store_without_the_record_is_adopted_by_the_first_node_started_on_it(tmp_path: Path) -> None:
    path = tmp_path / "log"
    store = RocksLogStore(path)
    try:
        await _write_as_an_earlier_version(store)
    finally:
        store.close()
    store = RocksLogStore(path)
    try:
        assert store.owner is None
        raft = await _start(4, store)
        await raft.wait(timeout=10).metrics(lambda m: m.current_leader == 4, "leader")
        await raft.shutdown()
    finally:
        store.close()
    store = RocksLogStore(path)  # the record is durable
    try:
        assert store.owner == (4, "foo")
        with pytest.raises(StoreOwnerMismatch, match="not of node 5"):
            await _start(5, store)
    finally:
        store.close()


async def test_check_owner_records_durably_and_checks_its_arguments(tmp_path: Path) -> None:
    store = RocksLogStore(tmp_path / "log")
    try:
        for bad, err in [(("1", "x"), TypeError), ((-1, "x"), ValueError), ((True, "x"), TypeError),
                         ((1, ""), ValueError), ((1, None), TypeError)]:
            with pytest.raises(err):
                await store.check_owner(*bad)  # type: ignore[arg-type]
        assert store.owner is None
        await store.check_owner(1, "ünïcode ✓")
        await store.check_owner(1, "ünïcode ✓")  # the same owner again: fine
    finally:
        store.close()
    store = RocksLogStore(tmp_path / "log")
    try:
        assert store.owner == (1, "ünïcode ✓")
    finally:
        store.close()
        with pytest.raises(StorageError, match="the store is closed"):
            await store.check_owner(1, "x")


@pytest.mark.parametrize("raw", [b"\xc1", b"\x92\x01", b"\x82\xa7node_id\xff\xaccluster_name\xa1x",
                                 b"\x82\xa7node_id\x01\xaccluster_name\xa0"])
def test_a_damaged_owner_record_is_refused_at_open(tmp_path: Path, raw: bytes) -> None:
    path = str(tmp_path / "log")
    RocksLogStore(path).close()
    db = Rdict(path, Options(raw_mode=True), column_families={cf: Options(raw_mode=True) for cf in ("entries", META_CF)})
    try:
        db.get_column_family(META_CF)[K_OWNER] = raw
    finally:
        db.close()
    with pytest.raises(StorageError, match=r"opening log store at .*the stored 'owner' (does not decode|is damaged)"):
        RocksLogStore(path)


async def test_a_mem_disk_given_to_another_node_is_refused() -> None:
    disk = MemDisk()
    raft = await _start(1, MemLogStore(disk))
    await raft.shutdown()
    assert disk.owner == (1, "foo")
    with pytest.raises(StoreOwnerMismatch, match="not of node 2"):
        await _start(2, MemLogStore(disk))
    with pytest.raises(StoreOwnerMismatch, match="not of cluster 'bar'"):
        await _start(1, MemLogStore(disk), cluster_name="bar")
    raft = await _start(1, MemLogStore(disk))
    await raft.shutdown()


async def test_a_plain_def_check_owner_is_refused_before_anything_is_read() -> None:
    class Store(MemLogStore):
        def check_owner(self, node_id: int, cluster_name: str) -> None:  # type: ignore[override]
            raise AssertionError("called")

    with pytest.raises(TypeError, match=r"log_store.check_owner must be a coroutine function \(async def\)"):
        await _start(1, Store())


async def test_a_store_without_check_owner_is_used_unchecked() -> None:
    class Store(MemLogStore):
        check_owner = None  # type: ignore[assignment]

    disk = MemDisk()
    raft = await _start(1, Store(disk))
    await raft.shutdown()
    raft = await _start(2, Store(disk))
    await raft.shutdown()
    assert disk.owner is None


# -- the state machine (RocksStateMachine) --------------------------------------------------


async def _run_kv(root: Path, cluster_name: str, writes: int, sm_dir: Path | None = None) -> LogState:
    """Start node 1 of ``cluster_name`` on ``root/<cluster_name>/log`` and ``sm_dir`` (default
    ``root/<cluster_name>/sm``), initialize it if new, make ``writes`` writes, stop it; return
    its log state."""
    log = RocksLogStore(root / cluster_name / "log")
    sm = RocksStateMachine(sm_dir or root / cluster_name / "sm")
    try:
        raft = await Raft.new(1, Config(cluster_name=cluster_name), Router(seed=1).factory(1), log, sm)
        try:
            if (await log.get_log_state()).last_log_id is None:
                await raft.initialize({1})
            await raft.wait(timeout=10).metrics(lambda m: m.current_leader == 1, "leader")
            for i in range(writes):
                await raft.client_write(encode_kv(KvSet(f"{cluster_name}{i}", "v")))
        finally:
            await raft.shutdown()
        return await log.get_log_state()
    finally:
        log.close()
        sm.close()


async def test_a_state_machine_of_another_cluster_is_refused_before_the_log_is_touched(tmp_path: Path) -> None:
    """Cluster b's node started with its own log and cluster a's state machine (further
    along) discarded its own log up to that state machine's applied id, its acknowledged
    writes included, and served cluster a's data, with two WARNINGs."""
    await _run_kv(tmp_path, "a", 20)
    b_state = await _run_kv(tmp_path, "b", 5)
    with pytest.raises(StoreOwnerMismatch, match=r"opening state machine at .*/a/sm' for node 1: ValueError: it holds "
                       r"the state machine of node 1 of cluster 'a', not of cluster 'b'") as ei:
        await _run_kv(tmp_path, "b", 0, sm_dir=tmp_path / "a" / "sm")
    assert ei.value.what == "state machine"
    log = RocksLogStore(tmp_path / "b" / "log")
    try:
        assert await log.get_log_state() == b_state, "cluster b's log was changed"
    finally:
        log.close()


async def test_a_state_machine_of_another_node_is_refused_and_one_without_the_record_adopted(tmp_path: Path) -> None:
    sm = RocksStateMachine(tmp_path / "sm")
    try:
        assert sm.owner is None  # as an earlier version left it, or never started on
        await sm.check_owner(2, "foo")
        await sm.check_owner(2, "foo")
        with pytest.raises(StoreOwnerMismatch, match=r"it holds the state machine of node 2 of cluster 'foo', not of "
                           r"node 3: start node 2 on it"):
            await _start(3, MemLogStore(), state_machine=sm)
        with pytest.raises(ValueError, match="cluster_name must not be empty"):
            await sm.check_owner(2, "")
    finally:
        sm.close()
    sm = RocksStateMachine(tmp_path / "sm")
    try:
        assert sm.owner == (2, "foo")
    finally:
        sm.close()


async def test_a_snapshot_does_not_carry_its_senders_owner(tmp_path: Path) -> None:
    src, dst = RocksStateMachine(tmp_path / "src"), RocksStateMachine(tmp_path / "dst")
    try:
        await src.check_owner(1, "foo")
        await dst.check_owner(2, "foo")
        await src.apply([Entry(LogId(1, 0), Membership.new([{1, 2}])), Entry(LogId(1, 1), Normal(encode_kv(KvSet("k", "v"))))])
        snap = await src.get_snapshot_builder().build_snapshot()
        with snap.data:
            await dst.install_snapshot(snap.meta, snap.data)
        assert dst.get("k") == "v" and dst.owner == (2, "foo")
    finally:
        src.close()
        dst.close()
    dst = RocksStateMachine(tmp_path / "dst")
    try:
        assert dst.owner == (2, "foo") and dst.get("k") == "v"
    finally:
        dst.close()


async def test_two_nodes_started_at_once_on_one_store_object(tmp_path: Path) -> None:
    """Both calls found no record while the first one's write waited, and the second one
    recorded its node over the first's: both nodes ran on one store."""
    log, sm = RocksLogStore(tmp_path / "log"), RocksStateMachine(tmp_path / "sm")
    try:
        for store in (log, sm):
            got = await asyncio.gather(store.check_owner(1, "foo"), store.check_owner(2, "foo"), return_exceptions=True)
            assert got[0] is None and isinstance(got[1], StoreOwnerMismatch), got
            assert store.owner == (1, "foo")
    finally:
        log.close()
        sm.close()
    log, sm = RocksLogStore(tmp_path / "log"), RocksStateMachine(tmp_path / "sm")
    try:
        assert log.owner == sm.owner == (1, "foo")
    finally:
        log.close()
        sm.close()


async def test_the_cluster_name_is_the_tcp_transports_when_it_has_one(tmp_path: Path) -> None:
    """Applications that name their cluster in ``TcpNetworkFactory`` alone (``Config`` left at
    its default) get that name recorded, so a store of another such cluster is refused."""
    store = RocksLogStore(tmp_path / "log")
    try:
        for name, ok in (("prod", True), ("staging", False), ("prod", True)):
            factory = TcpNetworkFactory(1, name)
            try:
                if ok:
                    raft = await Raft.new(1, Config(), factory, store, MemStateMachine(MemDisk()))
                    await raft.shutdown()
                else:
                    with pytest.raises(StoreOwnerMismatch, match=r"of node 1 of cluster 'prod', not of cluster 'staging'"):
                        await Raft.new(1, Config(), factory, store, MemStateMachine(MemDisk()))
            finally:
                await factory.close()
            assert store.owner == (1, "prod")
    finally:
        store.close()
