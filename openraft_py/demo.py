"""``python -m openraft_py.demo``: a 3-node cluster doing real work, in one process.

What it does (``make run`` runs ``openraft-py demo``, the key-value service's demo, instead):

1. starts three nodes on the in-process router, each with in-memory storage that survives
   a restart, and elects a leader;
2. writes 10,000 key-value entries from 64 concurrent writers;
3. halfway through, kills the leader; the writers keep going against the new leader,
   retrying what the dead leader never acknowledged;
4. prints every leader change, the throughput and the p50/p99/max write latency;
5. restarts the killed node, waits until it caught up, and checks that every acknowledged
   write is present, with its value, on all three nodes;
6. grows and reshapes the cluster while a writer keeps writing: adds node 4 as a learner
   (the log was purged behind a snapshot, so it catches up by snapshot transfer), replaces
   node 1 with it by joint consensus, then hands leadership to node 4, and checks every
   acknowledged write again on the final members.

It exits non-zero if any acknowledged write is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable

from .config import Config
from .errors import Fatal, ForwardToLeader, WaitTimeout
from .kv.argtypes import decimal_int, positive_int_at_most
from .storage.memory import KvSet, MemLogStore, MemStateMachine, encode_kv
from .testing.cluster import Cluster
from .types import BasicNode, NodeId, ServerState

__all__ = ["MAX_WRITERS", "MAX_WRITES", "main"]


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def run(total: int, writers: int, seed: int) -> int:
    """Run the demo; return the process exit code."""
    config = Config(cluster_name="demo")
    t0 = time.perf_counter()

    def stamp() -> str:
        return f"[{time.perf_counter() - t0:7.3f}s]"

    async with Cluster(config, seed=seed, state_machine=lambda d: MemStateMachine(d, record_applied=False)) as c:
        ids = {1, 2, 3}
        await c.start(ids)
        leader = await c.wait_for_leader(timeout=10)
        print(f"{stamp()} cluster of {len(ids)} nodes up; n{leader} elected (term {c.nodes[leader].metrics.current_term})")

        changes: list[tuple[float, NodeId | None, int]] = []
        done = asyncio.Event()

        async def watch_leaders() -> None:
            last: NodeId | None = leader
            while not done.is_set():
                lid = c.leader()
                if lid != last and lid is not None:
                    term = c.nodes[lid].metrics.current_term
                    changes.append((time.perf_counter() - t0, lid, term))
                    print(f"{stamp()} leader change: n{last} -> n{lid} (term {term})")
                    last = lid
                waits: list[asyncio.Future[object]] = [
                    asyncio.ensure_future(r._core.watch.changed()) for r in c.nodes.values()]
                waits.append(asyncio.ensure_future(done.wait()))
                _, pending = await asyncio.wait(waits, timeout=0.1, return_when=asyncio.FIRST_COMPLETED)
                for p in pending:
                    p.cancel()

        acked: dict[int, str] = {}
        latencies: list[float] = []
        retries = 0
        next_i = 0
        killed: NodeId | None = None
        killed_at = 0.0
        kill_at = total // 2

        async def writer() -> None:
            nonlocal next_i, retries, killed, killed_at
            while next_i < total:
                i = next_i
                next_i += 1
                key, value = f"key-{i:05d}", f"value-{i}"
                data = encode_kv(KvSet(key, value))
                first_try = time.perf_counter()
                while True:
                    lid = c.leader()
                    if lid is None:
                        try:
                            lid = await c.wait_for_leader(timeout=5)
                        except WaitTimeout:
                            continue
                    try:
                        # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the
                        # result of a write that completed as the task was cancelled, and the
                        # cancellation (Ctrl-C) is lost.
                        async with asyncio.timeout(2.0):
                            await c.nodes[lid].client_write(data)
                    except (ForwardToLeader, Fatal, TimeoutError, KeyError):
                        retries += 1
                        await asyncio.sleep(0.005)
                        continue
                    # End to end, as the client sees it: retries after a failover included.
                    latencies.append(time.perf_counter() - first_try)
                    acked[i] = value
                    break
                if killed is None and len(acked) >= kill_at:
                    killed = c.leader()
                    if killed is not None:
                        print(f"{stamp()} {len(acked)} writes acknowledged; killing the leader n{killed}")
                        killed_at = time.perf_counter() - t0
                        await c.crash(killed)

        watcher = asyncio.ensure_future(watch_leaders())
        w0 = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(writers)))
        elapsed = time.perf_counter() - w0
        done.set()
        await watcher

        print(f"{stamp()} wrote {len(acked)} entries from {writers} writers in {elapsed:.2f}s: {len(acked) / elapsed:,.0f} writes/s")
        print(
            f"           latency p50 {_pct(latencies, 0.50) * 1e3:.2f} ms, p99 {_pct(latencies, 0.99) * 1e3:.2f} ms, "
            f"max {max(latencies) * 1e3:.1f} ms (mean {statistics.fmean(latencies) * 1e3:.2f} ms); {retries} retries"
        )
        print(f"           leader changes after the start: {len(changes)}")
        if killed is not None and changes:
            print(f"           failover: a new leader {(changes[0][0] - killed_at) * 1e3:.0f} ms after the kill")

        if killed is not None:
            await c.restart(killed)
            print(f"{stamp()} restarted n{killed}; waiting for it to catch up")
        lid = await c.wait_for_leader(timeout=10)
        last = c.nodes[lid].metrics.last_log_index
        await c.wait_applied(last, timeout=20)
        if _count_missing(c, acked, sorted(c.state_machines), ""):
            print(f"{stamp()} FAILED: acknowledged writes missing")
            return 1
        print(f"{stamp()} every acknowledged write is on every node")
        return await _reshape(c, acked, stamp)


def _count_missing(c: Cluster[MemStateMachine, MemLogStore], acked: dict[int, str], ids: list[NodeId], note: str) -> int:
    """Print, per node of ``ids``, how many acknowledged writes its state machine holds with
    their value; return how many are missing in all."""
    missing = 0
    for nid in ids:
        data = c.state_machines[nid].data
        bad = sum(1 for i, v in acked.items() if data.get(f"key-{i:05d}") != v)
        missing += bad
        applied = c.nodes[nid].metrics.last_applied
        print(f"           n{nid}: applied up to {applied!r}, {len(acked) - bad}/{len(acked)} acknowledged writes present{note}")
    return missing


async def _reshape(c: Cluster[MemStateMachine, MemLogStore], acked: dict[int, str], stamp: Callable[[], str]) -> int:
    """Step 6: add a learner, replace a voter with it and transfer leadership to it, with a
    writer running; then check every acknowledged write on the final members."""
    stop = asyncio.Event()
    extra = 0

    async def background_writer() -> None:
        nonlocal extra
        i = len(acked) + 1_000_000
        while not stop.is_set():
            lid = c.leader()
            try:
                if lid is None:
                    raise ForwardToLeader()
                key = f"key-{i:05d}"
                async with asyncio.timeout(2.0):
                    await c.nodes[lid].client_write(encode_kv(KvSet(key, "bg")))
                acked[i] = "bg"
                extra += 1
                i += 1
            except (ForwardToLeader, Fatal, TimeoutError, KeyError):
                await asyncio.sleep(0.005)

    writer = asyncio.ensure_future(background_writer())
    lid = await c.wait_for_leader(timeout=10)
    leader = c.nodes[lid]
    m = leader.metrics
    print(f"{stamp()} n{lid}: snapshot at {m.snapshot!r}, log purged up to {m.purged!r}")
    await c.add_node(4)
    t = time.perf_counter()
    await leader.add_learner(4, BasicNode(), blocking=True)
    sent = c.router.rpc_count("install_snapshot", target=4)
    print(f"{stamp()} n4 added as a learner and caught up in {(time.perf_counter() - t) * 1e3:.0f} ms ({sent} snapshot chunks)")
    t = time.perf_counter()
    new_voters = {2, 3, 4}
    await leader.change_membership(new_voters)
    print(f"{stamp()} voters {{1,2,3}} -> {sorted(new_voters)} by joint consensus in {(time.perf_counter() - t) * 1e3:.0f} ms")
    lid = await c.wait_for_leader(timeout=10, among=new_voters)
    if lid != 4:
        t = time.perf_counter()
        await c.nodes[lid].trigger.transfer_leader(4)
        await c.nodes[4].wait(5.0).state(ServerState.LEADER, "n4 leads")
        print(f"{stamp()} leadership n{lid} -> n4 in {(time.perf_counter() - t) * 1e3:.1f} ms")
    stop.set()
    await writer
    last = c.nodes[4].metrics.last_log_index
    await c.wait_applied(last, timeout=20, ids=new_voters)
    if _count_missing(c, acked, sorted(new_voters), f" ({extra} written during the changes)"):
        print(f"{stamp()} FAILED: acknowledged writes missing")
        return 1
    print(f"{stamp()} every acknowledged write is on every member of {sorted(new_voters)}")
    return 0


MAX_WRITES = 1_000_000
"""The largest ``--writes``: the three in-memory state machines hold every write (a million
take about 20 s and a gigabyte here; ten million ran the machine out of memory)."""

MAX_WRITERS = 1000
"""The largest ``--writers``: each keeps one write in flight on the one event loop that
also runs the three nodes; with ten thousand the nodes' heartbeats and votes were not
answered in time, the cluster kept re-electing and the demo never finished."""


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: the run's exit status; 2 for bad arguments, 130 on Ctrl-C
    (one line; everything runs in this process, so nothing is left behind)."""
    p = argparse.ArgumentParser(allow_abbrev=False, prog="python -m openraft_py.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--writes", type=positive_int_at_most(MAX_WRITES), default=10_000,
                   help=f"entries to write, 1 to {MAX_WRITES:,} (default 10,000)")
    p.add_argument("--writers", type=positive_int_at_most(MAX_WRITERS), default=64,
                   help=f"concurrent writers, 1 to {MAX_WRITERS}, each with one write in flight (default 64)")
    p.add_argument("--seed", type=decimal_int, default=1)
    args = p.parse_args(argv)
    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
            return asyncio.run(run(args.writes, args.writers, args.seed))
        return uvloop.run(run(args.writes, args.writers, args.seed))
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
