"""Payload limits on an in-process cluster whose router passes every message through the TCP
wire codec: a client write over ``Config.max_entry_bytes`` is refused with ``EntryTooLarge``
before anything is logged and the cluster keeps committing; a batch whose payloads add up to
far more than ``Config.max_payload_bytes`` commits, sent as several requests each within the
budget; an entry of exactly the limit commits; entries written under a larger older limit
still replicate, each alone."""

from __future__ import annotations

from typing import Any

import pytest

from openraft_py import EntryTooLarge
from openraft_py.core.replication import payload_bytes
from openraft_py.testing.cluster import Cluster
from openraft_py.types import AppendEntriesRequest, NodeId

from ..checks import check_applied_prefix, check_log_matching, fast_config

pytestmark = pytest.mark.timeout(30)

ENTRY = 16 * 1024
BUDGET = 64 * 1024


def limits_config(**kw: Any) -> Any:
    return fast_config(max_entry_bytes=ENTRY, max_payload_bytes=BUDGET, **kw)


class Sent:
    """Records the entry count and payload bytes of every AppendEntries the router carries."""

    def __init__(self) -> None:
        self.requests: list[tuple[NodeId, int, int]] = []  # (target, entries, payload bytes)

    def hook(self, rpc: str, source: NodeId, target: NodeId, req: Any) -> None:
        if rpc == "append_entries":
            assert isinstance(req, AppendEntriesRequest)
            self.requests.append((target, len(req.entries), payload_bytes(req.entries)))

    def with_entries(self) -> list[tuple[NodeId, int, int]]:
        return [r for r in self.requests if r[1] > 0]


async def wired_cluster(config: Any, ids: set[int]) -> tuple[Cluster, Sent]:
    c = Cluster(config, seed=3)
    c.router.set_wire(True)
    sent = Sent()
    c.router.add_hook(sent.hook)
    await c.start(ids)
    return c, sent


async def test_an_entry_over_the_limit_is_refused_and_nothing_is_logged() -> None:
    c, _ = await wired_cluster(limits_config(), {1, 2, 3})
    try:
        leader = await c.wait_for_leader(timeout=3.0)
        raft = c.nodes[leader]
        first = await raft.client_write(b"before")
        await c.wait_applied(first.log_id.index, timeout=3.0)
        last = raft.metrics.last_log_index
        with pytest.raises(EntryTooLarge) as e:
            await raft.client_write(b"x" * (ENTRY + 1))
        assert (e.value.size, e.value.limit, e.value.position) == (ENTRY + 1, ENTRY, None)
        assert isinstance(e.value, ValueError), "a refused API argument, like the others"
        with pytest.raises(EntryTooLarge) as e:
            await raft.client_write_many([b"ok", b"y" * (ENTRY + 5), b"ok too"])
        assert e.value.position == 1 and "payload 1 of 16389 bytes" in str(e.value)
        assert raft.metrics.last_log_index == last, "nothing of a refused call was logged"
        after = await raft.client_write(b"after")
        assert after.log_id.index == last + 1, "the next write takes the next index: the cluster goes on"
        await c.wait_applied(after.log_id.index, timeout=3.0)
        for nid, disk in c.disks.items():
            datas = [d for _, d in disk.applied_log]
            assert datas == [b"before", b"after"], f"n{nid} applied {datas!r}"
    finally:
        await c.shutdown()


async def test_a_batch_far_over_the_request_budget_commits_in_several_requests() -> None:
    c, sent = await wired_cluster(limits_config(), {1, 2, 3})
    try:
        leader = await c.wait_for_leader(timeout=3.0)
        raft = c.nodes[leader]
        datas = [bytes([i]) * (ENTRY - i) for i in range(200)]  # ~3.2 MiB, 50x the budget
        resps = await raft.client_write_many(datas)
        last = resps[-1].log_id.index
        await c.wait_applied(last, timeout=10.0)
        for nid, disk in c.disks.items():
            assert [d for _, d in disk.applied_log] == datas, f"n{nid} applied something else"
        carrying = sent.with_entries()
        over = [r for r in carrying if r[1] > 1 and r[2] > BUDGET]
        assert over == [], f"requests over the budget: {over}"
        per_target = {t: sum(r[2] for r in carrying if r[0] == t) for t in {r[0] for r in carrying}}
        total = sum(map(len, datas))
        for t, n in per_target.items():
            assert n >= total, f"n{t} was sent {n} payload bytes, less than the {total} written"
            parts = [r for r in carrying if r[0] == t]
            assert len(parts) >= total // BUDGET, f"n{t}: {len(parts)} requests carried {n} bytes"
        check_log_matching(c.disks)
        check_applied_prefix(c.disks)
    finally:
        await c.shutdown()


async def test_an_entry_of_exactly_the_limit_commits() -> None:
    c, sent = await wired_cluster(limits_config(), {1, 2, 3})
    try:
        leader = await c.wait_for_leader(timeout=3.0)
        raft = c.nodes[leader]
        resps = await raft.client_write_many([b"a" * ENTRY] * 8)  # 8 * 16 KiB = 2x the budget
        one = await raft.client_write(b"b" * ENTRY)
        await c.wait_applied(one.log_id.index, timeout=5.0)
        assert one.log_id.index == resps[-1].log_id.index + 1
        assert all(r[2] <= BUDGET for r in sent.with_entries())
    finally:
        await c.shutdown()


async def test_entries_larger_than_a_lowered_budget_still_replicate_each_alone() -> None:
    """Entries of 100 KiB written under the defaults; node 3 misses them; every node restarts
    with a 64 KiB budget (and a 16 KiB entry limit): node 3 catches up, each old entry in a
    request of its own."""
    big = 100 * 1024
    c = Cluster(fast_config(), seed=5)
    c.router.set_wire(True)
    try:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader(timeout=3.0)
        follower = 3 if leader != 3 else 2
        c.router.isolate(follower)
        resps = await c.nodes[leader].client_write_many([bytes([i]) * big for i in range(6)])
        last = resps[-1].log_id.index
        others = [n for n in (1, 2, 3) if n != follower]
        await c.wait_applied(last, timeout=5.0, ids=others)
        for nid in (1, 2, 3):
            await c.crash(nid)
        c.config = limits_config()
        c.router.heal()
        sent = Sent()
        c.router.add_hook(sent.hook)
        for nid in (1, 2, 3):
            await c.restart(nid)
        await c.wait_for_leader(timeout=5.0)
        await c.wait_applied(last, timeout=10.0)
        to_follower = [r for r in sent.with_entries() if r[0] == follower and r[2] >= big]
        assert to_follower, f"n{follower} caught up without a request carrying an old entry"
        assert all(r[1] == 1 for r in to_follower), f"an old entry shared a request: {to_follower}"
        check_log_matching(c.disks)
        check_applied_prefix(c.disks)
    finally:
        await c.shutdown()
