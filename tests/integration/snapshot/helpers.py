"""Shared by the snapshot integration tests: a config with snapshots on, bulk writes through
the leader, a fourth node that must take a snapshot, and comparisons of what nodes hold."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from openraft_py import Config, Raft, SnapshotPolicy
from openraft_py.storage.memory import KvSet, MemStateMachine, encode_kv
from openraft_py.testing.cluster import Cluster

from ..checks import fast_config


def snap_config(**kw: object) -> Config:
    """``fast_config`` with snapshots off unless ``kw`` says otherwise, keeping nothing after
    a snapshot and purging at once (so a snapshot purges the log it covers)."""
    base: dict[str, object] = dict(
        snapshot_policy=SnapshotPolicy.never(), max_in_snapshot_log_to_keep=0, purge_batch_size=1
    )
    base.update(kw)
    return fast_config(**base)


async def write(c: Cluster, leader: int, lo: int, hi: int, prefix: str = "k") -> int:
    """Write keys ``prefix<lo>..prefix<hi-1>`` (value = the number) through ``leader`` in
    one batch; return the last log index written."""
    resps = await c.nodes[leader].client_write_many(encode_kv(KvSet(f"{prefix}{i}", str(i))) for i in range(lo, hi))
    return resps[-1].log_id.index


def same_state(c: Cluster, a: int, b: int) -> None:
    """Nodes ``a`` and ``b`` hold the same data, applied log record and last applied id."""
    sa, sb = c.state_machines[a], c.state_machines[b]
    assert isinstance(sa, MemStateMachine) and isinstance(sb, MemStateMachine)
    assert sb.data == sa.data, f"n{b}'s data differs from n{a}'s"
    assert sb.applied_log == sa.applied_log, f"n{b} applied other entries than n{a}"
    assert c.nodes[b].metrics.last_applied == c.nodes[a].metrics.last_applied


def fourth_made_by(make: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A ``Cluster`` ``state_machine`` factory: the fourth state machine made (the node
    ``purged_then_node_4`` adds) is ``make(disk)``, every other a ``MemStateMachine``."""
    made: list[object] = []

    def factory(disk: Any) -> Any:
        m = make(disk) if len(made) == 3 else MemStateMachine(disk)
        made.append(m)
        return m

    return factory


async def purged_then_node_4(c: Cluster, bound: float) -> tuple[Raft, Raft, int]:
    """Start voters 1-3, write 20 keys, snapshot and purge the leader's log up to them, then
    add node 4 (not yet a learner): its only way to catch up is the leader's snapshot.
    Returns ``(leader, node 4, the last index written)``; each wait is bounded by ``bound``."""
    await c.start({1, 2, 3})
    lid = await c.wait_for_leader()
    leader = c.nodes[lid]
    last = await write(c, lid, 0, 20)
    await leader.trigger.snapshot()
    await leader.wait(bound).metrics(lambda m: m.snapshot is not None and m.snapshot.index >= last, "built")
    await leader.trigger.purge_log(last)
    await leader.wait(bound).metrics(lambda m: m.purged is not None and m.purged.index >= last, "purged")
    return leader, await c.add_node(4), last
