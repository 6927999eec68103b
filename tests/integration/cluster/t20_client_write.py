"""Writes on 1, 3 and 5 nodes: applied on every node in the same order; client_write_many;
the KV state machine; a serializing router (wire round trip)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openraft_py import ReadPolicy
from openraft_py.storage.memory import KvCas, KvDelete, KvGet, KvSet, encode_kv
from openraft_py.testing.cluster import Cluster

from ..checks import check_applied_prefix, check_log_matching, fast_config

pytestmark = pytest.mark.timeout(15)


def assert_same_applied(c: Cluster) -> None:
    logs = {nid: d.applied_log for nid, d in c.disks.items()}
    first = logs[min(logs)]
    for nid, al in logs.items():
        assert al == first, f"n{nid} applied {al!r}, n{min(logs)} applied {first!r}"


@pytest.mark.parametrize("n", [1, 3, 5], ids=lambda n: f"{n}nodes")
async def test_writes_applied_everywhere_in_the_same_order(cluster: Cluster, n: int) -> None:
    await cluster.start(range(1, n + 1))
    leader = await cluster.wait_for_leader(timeout=2.0)
    raft = cluster.nodes[leader]
    acked = []
    for i in range(20):
        acked.append(await raft.client_write(f"seq-{i}".encode()))
    # Concurrent writers: the log decides the order, every node follows it.
    conc = await asyncio.gather(*(raft.client_write(f"conc-{i}".encode()) for i in range(50)))
    acked += conc
    idx = [r.log_id.index for r in acked]
    assert idx[:20] == sorted(idx[:20]) and len(set(idx)) == len(idx)
    last = max(idx)
    await cluster.wait_applied(last, timeout=3.0)
    assert_same_applied(cluster)
    applied = cluster.disks[leader].applied_log
    by_id = dict(applied)
    for i, r in enumerate(acked):
        want = f"seq-{i}".encode() if i < 20 else f"conc-{i - 20}".encode()
        assert by_id[r.log_id] == want
    assert [d for _, d in applied[:20]] == [f"seq-{i}".encode() for i in range(20)]
    check_log_matching(cluster.disks)
    check_applied_prefix(cluster.disks)


async def test_client_write_many_results_in_order(cluster: Cluster) -> None:
    await cluster.start({1, 2, 3})
    leader = await cluster.wait_for_leader(timeout=2.0)
    raft = cluster.nodes[leader]
    datas = [encode_kv(KvSet("k", str(i))) for i in range(30)]
    resps = await raft.client_write_many(datas)
    assert len(resps) == 30
    ids = [r.log_id.index for r in resps]
    assert ids == list(range(ids[0], ids[0] + 30))
    # Each response is the state machine's answer to its own entry: the previous value.
    assert [r.data for r in resps] == [None] + [str(i) for i in range(29)]
    assert await raft.client_write_many([]) == []
    await cluster.wait_applied(ids[-1])
    for nid in cluster.nodes:
        tail = cluster.disks[nid].applied_log[-30:]
        assert [lid for lid, _ in tail] == [r.log_id for r in resps]
        assert [d for _, d in tail] == datas


async def test_writes_mixed_with_other_calls_in_one_pass_keep_their_order(cluster: Cluster) -> None:
    # Everything below is queued before the core runs, so one pass takes it all: one-payload
    # writes, a many-payload write and a read call between them (the core's general path),
    # then one-payload writes only (the path that takes the whole queue as one batch).
    await cluster.start({1, 2, 3})
    leader = await cluster.wait_for_leader(timeout=2.0)
    raft = cluster.nodes[leader]
    await raft.client_write(b"warm-up")
    mixed = [
        asyncio.ensure_future(raft.client_write(b"a")),
        asyncio.ensure_future(raft.client_write_many([b"b1", b"b2"])),
        asyncio.ensure_future(raft.ensure_linearizable()),
        asyncio.ensure_future(raft.client_write(b"c")),
    ]
    a, (b1, b2), _, c = await asyncio.gather(*mixed)
    assert [a.log_id.index, b1.log_id.index, b2.log_id.index, c.log_id.index] == list(
        range(a.log_id.index, a.log_id.index + 4)
    )
    only_writes = await asyncio.gather(*(raft.client_write(f"w{i}".encode()) for i in range(40)))
    idx = [r.log_id.index for r in only_writes]
    assert idx == list(range(c.log_id.index + 1, c.log_id.index + 41))
    # One-payload writes of both calls, and nothing else: ``client_write_many`` of one
    # payload answers with a list, ``client_write`` with the response.
    both = await asyncio.gather(
        *(raft.client_write_many([f"m{i}".encode()]) if i % 3 == 0 else raft.client_write(f"m{i}".encode()) for i in range(9))
    )
    assert all(isinstance(r, list) and len(r) == 1 for r in both[::3])
    flat = [r[0] if isinstance(r, list) else r for r in both]
    assert [r.log_id.index for r in flat] == list(range(idx[-1] + 1, idx[-1] + 10))
    await cluster.wait_applied(flat[-1].log_id.index)
    tail = cluster.disks[leader].applied_log[-53:]
    assert [d for _, d in tail] == [
        b"a",
        b"b1",
        b"b2",
        b"c",
        *(f"w{i}".encode() for i in range(40)),
        *(f"m{i}".encode() for i in range(9)),
    ]


async def test_kv_state_machine_same_data_on_every_node(cluster: Cluster) -> None:
    await cluster.start({1, 2, 3, 4, 5})
    leader = await cluster.wait_for_leader(timeout=2.0)
    raft = cluster.nodes[leader]
    for i in range(10):
        assert (await raft.client_write(encode_kv(KvSet(f"k{i}", f"v{i}")))).data is None
    assert (await raft.client_write(encode_kv(KvSet("k1", "v1b")))).data == "v1"
    assert (await raft.client_write(encode_kv(KvDelete("k2")))).data == "v2"
    assert (await raft.client_write(encode_kv(KvCas("k3", "v3", "v3b")))).data == (True, "v3b")
    assert (await raft.client_write(encode_kv(KvCas("k4", "nope", "x")))).data == (False, "v4")
    last = await raft.client_write(encode_kv(KvGet("k1")))
    assert last.data == "v1b"
    await cluster.wait_applied(last.log_id.index)
    want = {f"k{i}": f"v{i}" for i in range(10)} | {"k1": "v1b", "k3": "v3b"}
    del want["k2"]
    for nid, sm in cluster.state_machines.items():
        assert sm.data == want, f"n{nid}"
    assert_same_applied(cluster)


async def test_read_index_covers_the_last_acknowledged_write(cluster: Cluster) -> None:
    await cluster.start({1, 2, 3})
    leader = await cluster.wait_for_leader(timeout=2.0)
    raft = cluster.nodes[leader]
    for i in range(5):
        resp = await raft.client_write(encode_kv(KvSet("x", str(i))))
        read_id = await raft.ensure_linearizable(ReadPolicy.READ_INDEX)
        assert read_id is not None and read_id >= resp.log_id
        m = raft.metrics
        assert m.last_applied is not None and m.last_applied >= read_id
        assert cluster.state_machines[leader].data["x"] == str(i)
    # Without a new write it still returns the committed point.
    again = await raft.ensure_linearizable()
    assert again is not None and again >= resp.log_id


async def test_serializing_router_cluster_works() -> None:
    async with Cluster(fast_config(), seed=5, serialize=True) as c:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader(timeout=2.0)
        raft = c.nodes[leader]
        resps = await raft.client_write_many([encode_kv(KvSet(f"k{i}", "v")) for i in range(5)])
        r = await raft.client_write(b"\x00opaque\xff")
        assert r.data is None
        assert await raft.ensure_linearizable() >= r.log_id
        await c.wait_applied(r.log_id.index)
        for sm in c.state_machines.values():
            assert sm.data == {f"k{i}": "v" for i in range(5)}
        assert_same_applied(c)
        assert c.disks[1].applied_log[-1] == (r.log_id, b"\x00opaque\xff")
        assert resps[-1].log_id.index + 1 == r.log_id.index
        assert c.router.rpc_count("append_entries") > 0 and c.router.rpc_count("vote") > 0


async def test_a_store_reporting_durability_from_its_own_thread() -> None:
    """A log store may call ``IOFlushed.io_completed`` from a thread of its own (a writer
    thread doing the fsync): the node takes it on its loop, and writes commit everywhere."""
    import threading

    from openraft_py.storage import IOFlushed
    from openraft_py.storage.memory import MemDisk, MemLogStore

    threads: set[int] = set()

    class ThreadedStore(MemLogStore):
        async def append(self, entries: Any, callback: IOFlushed) -> None:
            relay = IOFlushed(lambda err: threading.Thread(target=report, args=(err,)).start())

            def report(err: BaseException | None) -> None:
                threads.add(threading.get_ident())
                callback.io_completed(err)

            await super().append(entries, relay)

    def store(nid: int, disk: MemDisk) -> ThreadedStore:
        return ThreadedStore(disk)

    c = Cluster(fast_config(), seed=3, log_store=store)
    try:
        await c.start({1, 2, 3})
        leader = c.nodes[await c.wait_for_leader(timeout=2.0)]
        last = None
        for i in range(30):
            last = await asyncio.wait_for(leader.client_write(f"t{i}".encode()), 5)
        assert last is not None
        await c.wait_applied(last.log_id.index, timeout=5.0)
        assert threads and threading.get_ident() not in threads
        assert_same_applied(c)
    finally:
        await c.shutdown()
