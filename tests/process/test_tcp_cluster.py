"""Three node processes (RocksDB stores) over the TCP transport on loopback.

One scenario, in order: elect a leader, commit 10,000 writes, SIGKILL the leader (a new
leader within 1 s with the default timeouts, measured from the kill to the first survivor
reporting itself leader of a higher term), restart the killed node from its data dir and
watch it catch up, add a learner that can only catch up by snapshot transfer (the leader's
log is purged up to a fresh snapshot), make it a voter, and check that every acknowledged
write is on every node. Every wait is bounded; the harness kills every process and removes
its directory even when the test fails (checked at the end).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from openraft_py._core import USING_EXTENSIONS
from openraft_py.testing.proc.cluster import ProcCluster
from openraft_py.testing.proc.node import value_of

pytestmark = pytest.mark.timeout(150)

IDS = (1, 2, 3)


def acked_keys(result: dict[str, Any], prefix: str) -> list[str]:
    """The keys a ``bulk`` operation acknowledged (writer ``w`` acked keys ``i < acked[w]``)."""
    return [f"{prefix}{w}-{i}" for w, n in enumerate(result["acked"]) for i in range(n)]


async def bulk(c: ProcCluster, prefix: str, count: int, writers: int = 64) -> list[str]:
    """``count`` writes by ``writers`` writers in the leader's process; all must be acked."""
    _, r = await c.call_leader("bulk", timeout=90.0, writers=writers, count=count, prefix=prefix)
    assert r["errors"] == [], r["errors"]
    keys = acked_keys(r, prefix)
    assert len(keys) == count
    return keys


async def first_leader_event(c: ProcCluster, ids: list[int], above_term: int, timeout: float) -> tuple[int, dict[str, Any]]:
    """The earliest ``leader`` event of a term above ``above_term`` among ``ids`` (waits for
    the first one to arrive, then takes the earliest timestamp seen)."""

    def pred(e: dict[str, Any]) -> bool:
        return e.get("event") == "leader" and e["term"] > above_term

    waits = [asyncio.ensure_future(c.node(i).wait_event(pred, timeout)) for i in ids]
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        assert done, f"no new leader among {ids} within {timeout}s"
    finally:
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    seen = [(e["t"], i, e) for i in ids for e in c.node(i).events if pred(e)]
    t, nid, ev = min(seen, key=lambda x: x[0])
    return nid, ev


async def wait_all_applied(c: ProcCluster, ids: list[int], index: int, timeout: float = 30.0) -> None:
    await asyncio.gather(*(c.call(i, "wait", until="applied", index=index, timeout=timeout) for i in ids))


async def test_three_processes_over_tcp_failover_learner_by_snapshot_and_membership() -> None:
    c = ProcCluster(3, cluster_name="tcp-acceptance")
    root = c.root
    pids: list[int] = []
    acked: list[str] = []
    try:
        leader = await c.start(timeout=30.0)
        pids += [c.node(i).pid for i in IDS]
        # The node processes run the same build (compiled or pure) as this one.
        assert all(c.node(i).events[0]["extensions"] == USING_EXTENSIONS for i in IDS)

        # 10,000 writes.
        acked += await bulk(c, "a", 10_000)
        m = await c.call(leader, "metrics")
        assert m["state"] == "Leader" and m["committed"] >= 10_000
        await wait_all_applied(c, list(IDS), m["committed"])

        # SIGKILL the leader: a survivor leads a higher term within 1 s.
        old_term = c.term
        t_kill = c.kill(leader)
        survivors = [i for i in IDS if i != leader]
        new_leader, ev = await first_leader_event(c, survivors, old_term, timeout=10.0)
        failover = ev["t"] - t_kill
        print(f"\nfailover: n{new_leader} leads term {ev['term']} {failover * 1000:.0f} ms after the kill")
        assert failover < 1.0, f"new leader after {failover:.3f}s"
        await c.wait_dead(leader)
        lid, term = await c.wait_for_leader(min_term=ev["term"], timeout=10.0, among=survivors)
        assert lid == new_leader

        # The cluster commits without the old leader; the old leader restarts and catches up.
        acked += await bulk(c, "b", 1_000)
        await c.restart(leader)
        pids.append(c.node(leader).pid)
        m = await c.call(lid, "metrics")
        await wait_all_applied(c, list(IDS), m["committed"])
        # (Normally the same leader; a restarted node that timed out before the leader
        # reconnected may have forced one more election, which is allowed.)
        lid, term = await c.wait_for_leader(timeout=10.0)
        back = await c.call(leader, "metrics")
        assert back["state"] in ("Follower", "Leader") and back["term"] >= term

        # Snapshot and purge on every node, so a new learner must be sent a snapshot
        # whichever node leads when it is added (an election on a loaded machine moved the
        # leadership to a node that had not purged: the learner caught up by an older
        # snapshot and the log after it).
        snaps = []
        for i in IDS:
            m = await c.call(i, "metrics")
            await c.call(i, "trigger", action="snapshot")
            m = await c.call(i, "wait", until="snapshot", index=m["applied"], timeout=30.0)
            await c.call(i, "trigger", action="purge_log", upto=m["snapshot"])
            m = await c.call(i, "wait", until="purged", index=m["snapshot"], timeout=30.0)
            assert m["purged"] >= m["snapshot"] > 10_000
            snaps.append(m["snapshot"])
        snap = min(snaps)

        await c.start_node(4, timeout=30.0)
        pids.append(c.node(4).pid)
        await c.call_leader("add_learner", timeout=60.0, node=4, addr=c.addr(4), blocking=True)
        m4 = await c.call(4, "metrics")
        assert m4["state"] == "Learner"
        assert m4["snapshot"] >= snap, m4  # caught up by snapshot: the log before it is gone
        assert m4["applied"] >= snap

        # Change the membership: the learner becomes a voter (four voters).
        await c.call_leader("change_membership", timeout=30.0, members=[1, 2, 3, 4])
        ids = [1, 2, 3, 4]
        await asyncio.gather(*(c.call(i, "wait", until="voters", ids=ids, timeout=30.0) for i in ids))
        ms = await c.metrics(ids)
        assert all(x["voters"] == ids and not x["joint"] for x in ms.values()), ms

        # More writes in the new membership, then every acknowledged write on every node.
        lid, _ = await c.wait_for_leader(timeout=10.0)
        acked += await bulk(c, "c", 1_000)
        m = await c.call(lid, "metrics")
        await wait_all_applied(c, ids, m["committed"])
        for i in ids:
            data = (await c.call(i, "dump", timeout=60.0))["data"]
            missing = [k for k in acked if data.get(k) != value_of(k)]
            assert not missing, f"n{i} misses {len(missing)} acknowledged writes, e.g. {missing[:5]}"
        assert len(acked) == 12_000
        finals = await c.metrics(ids)
        assert len({x["term"] for x in finals.values()}) == 1
        assert all(x["running"] and x["error"] is None for x in finals.values())
    finally:
        await c.close()
    # Cleanup: every process is gone and the directory removed.
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not Path(root).exists()


async def test_harness_cleans_up_after_a_failure() -> None:
    """A failure inside the cluster's ``async with`` still kills every node process and
    removes the directory; a call on a killed node raises ``NodeExited`` within its bound."""
    from openraft_py.testing.proc.cluster import NodeExited

    pids: list[int] = []
    root: Path | None = None
    with pytest.raises(RuntimeError, match="boom"):
        async with ProcCluster(3, cluster_name="tcp-cleanup") as c:
            root = c.root
            await c.start(initialize=False, timeout=30.0)
            pids = [c.node(i).pid for i in IDS]
            c.pause(3)  # a frozen node is resumed and stopped by the cleanup too
            c.kill(2)
            await c.wait_dead(2)
            with pytest.raises(NodeExited):
                await c.call(2, "metrics", timeout=5.0)
            raise RuntimeError("boom")
    assert root is not None and not root.exists()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_node_options_from_flags_and_json(tmp_path: Path) -> None:
    """``proc.node`` takes its options from flags, a JSON file, or both (flags win)."""
    import json

    from openraft_py.testing.proc.node import load_options, parse_peers

    o = load_options(["--id", "2", "--raft-addr", "127.0.0.1:9", "--data-dir", str(tmp_path),
                      "--peers", "1=127.0.0.1:8,2=127.0.0.1:9", "--raft-config", '{"heartbeat_interval": 20}',
                      "--no-sync"])
    assert (o.id, o.raft_addr, o.sync, o.events) == (2, "127.0.0.1:9", False, True)
    assert o.peers == {1: "127.0.0.1:8", 2: "127.0.0.1:9"} and o.raft_config == {"heartbeat_interval": 20}
    cfg = tmp_path / "n.json"
    cfg.write_text(json.dumps({"id": 3, "raft_addr": "127.0.0.1:7", "data_dir": str(tmp_path),
                               "peers": {"3": "127.0.0.1:7"}, "cluster_name": "x", "events": False}))
    o = load_options(["--config", str(cfg), "--id", "4"])
    assert (o.id, o.cluster_name, o.events, o.sync, o.peers) == (4, "x", False, True, {3: "127.0.0.1:7"})
    with pytest.raises(ValueError):
        parse_peers("1=127.0.0.1:8,nonsense")
    assert o.state_machine == "rocks"
    o = load_options(["--id", "1", "--raft-addr", "127.0.0.1:9", "--data-dir", str(tmp_path),
                      "--state-machine", "memory"])
    assert o.state_machine == "memory"
    with pytest.raises(SystemExit):
        load_options(["--id", "1", "--raft-addr", "127.0.0.1:9", "--data-dir", str(tmp_path),
                      "--state-machine", "sqlite"])
    with pytest.raises(SystemExit):
        load_options(["--raft-addr", "127.0.0.1:9"])  # no id, no data dir


async def test_memory_state_machine_nodes_rebuild_from_the_log_and_refuse_a_purged_one() -> None:
    """``state_machine="memory"`` (the benchmarks' like-for-like comparison with PySyncObj):
    every node applies every acknowledged write; a node restarted with its log intact
    re-applies the log into its empty state machine; a node whose log was purged refuses to
    start with it (nothing could rebuild the purged part) and says why."""
    from openraft_py.testing.proc.cluster import NodeExited

    async with ProcCluster(3, cluster_name="tcp-memsm", state_machine="memory") as c:
        await c.start(timeout=30.0)
        acked = await bulk(c, "m", 2_000, writers=16)
        lid, _ = await c.wait_for_leader(timeout=10.0)
        follower = next(i for i in IDS if i != lid)
        m = await c.call(lid, "metrics")
        # ``stats`` (what bench/tcp.py reads around a run): the leader has written log groups
        # and, having slept between them, counted voluntary context switches.
        st = await c.call(lid, "stats")
        assert st["log_groups"] > 0 and st["cpu"] > 0
        vol, invol = st["switches"]
        assert type(vol) is int and type(invol) is int and vol > 0 and invol >= 0
        again = await c.call(lid, "stats")
        assert again["switches"][0] >= vol and again["switches"][1] >= invol
        await wait_all_applied(c, list(IDS), m["committed"])

        c.kill(follower)
        await c.wait_dead(follower)
        await c.restart(follower)
        await wait_all_applied(c, [follower], m["committed"])
        data = (await c.call(follower, "dump", timeout=30.0))["data"]
        missing = [k for k in acked if data.get(k) != value_of(k)]
        assert not missing, f"n{follower} misses {len(missing)} acknowledged writes after its restart"
        assert (await c.call(follower, "read", keys=[acked[0], "absent"]))["values"] == [value_of(acked[0]), None]

        await c.call(follower, "trigger", action="snapshot")
        snap = (await c.call(follower, "wait", until="snapshot", index=m["applied"], timeout=30.0))["snapshot"]
        await c.call(follower, "trigger", action="purge_log", upto=snap)
        await c.call(follower, "wait", until="purged", index=snap, timeout=30.0)
        c.kill(follower)
        await c.wait_dead(follower)
        with pytest.raises(NodeExited):
            await c.start_node(follower, timeout=30.0)
        assert "cannot be rebuilt" in c.node(follower).log.read_text()


def test_proc_cluster_refuses_an_unknown_state_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused before anything is made: no temporary directory is left behind."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(ValueError, match="state_machine"):
        ProcCluster(3, state_machine="sqlite")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
