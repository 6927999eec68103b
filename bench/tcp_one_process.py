"""The TCP cluster of ``bench/tcp.py`` with its three nodes in ONE process and one event loop.

Each node is the same ``openraft_py.testing.proc.node.Node`` that ``bench/tcp.py`` starts in
a process of its own (``RocksLogStore`` with or without fsync, a ``RocksStateMachine`` or a
``MemStateMachine``, the TCP transport on 127.0.0.1), and the writers run the same bulk
operation on the leader. Only the placement differs: every message between the nodes still
goes through the kernel's loopback TCP, but no message wakes another process, and the three
nodes never run at once. Set against ``bench/tcp.py`` on the same machine, the difference
is what separate processes cost (their wake-ups and switches); what remains is what the
nodes' own work and their IO cost.

For each writer count it reports writes/s, the p50/p99/p99.9 latency, the CPU time of the
process (the three nodes and all their threads) per write and the log groups (fsyncs of the
leader's log) per write, each the median of ``--repeat`` runs on one cluster; ``--json F``
also has each point's ``fewest_writes``, the fewest writes acknowledged in one of its runs.

    python bench/tcp_one_process.py [--writers 1,256] [--seconds 3] [--repeat 3] [--no-fsync]
                                    [--state-machine rocks|memory] [--profile F] [--dir D]
                                    [--json F]

``--profile F`` writes a cProfile of the process (all three nodes) during the first run at
the last writer count to ``F``. ``docs/design/performance.md`` (twenty-sixth round) has what
it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import checked_run_args, run_loop, summarize
from openraft_py import ServerState
from openraft_py.testing.proc.cluster import free_port
from openraft_py.testing.proc.node import Node, NodeOptions, tune_gc

WARM_UP_WRITES = 2000
"""Writes made before the measured runs (connections, caches and the stores warmed up)."""


async def run(writers: list[int], seconds: float, repeat: int, sync: bool, state_machine: str, where: str,
              profile: str | None = None) -> list[dict[str, Any]]:
    """Start the three nodes under a new directory in ``where``, elect node 1, run every
    writer count ``repeat`` times; stop the nodes and remove the directory."""
    root = tempfile.mkdtemp(prefix="tcp-one-process-", dir=where)
    # Ports below the kernel's ephemeral range (``free_port``): one the OS picked in it and
    # released was taken, now and then, as the local port of node 1's connection to a node
    # not started yet, and that node's start failed ("address already in use").
    peers = {i: f"127.0.0.1:{free_port()}" for i in (1, 2, 3)}
    config = {"snapshot_policy": {"logs_since_last_n": None}}  # as bench/tcp.py
    nodes = [
        Node(NodeOptions(id=i, raft_addr=peers[i], data_dir=f"{root}/n{i}", peers=peers, raft_config=config,
                         sync=sync, events=False, state_machine=state_machine))  # type: ignore[arg-type]
        for i in (1, 2, 3)
    ]
    devnull = open(os.devnull, "w")  # the nodes' control-channel lines are not read here
    started: list[Node] = []
    points: list[dict[str, Any]] = []
    try:
        for n in nodes:
            n._out = devnull
            await n.start()
            started.append(n)
        tune_gc()
        leader = nodes[0]
        await leader.op_initialize({})
        await leader.raft.wait(10.0).state(ServerState.LEADER)
        await leader.op_bulk({"writers": 1, "count": WARM_UP_WRITES, "prefix": "warm-"})
        for wi, w in enumerate(writers):
            runs = []
            for r in range(repeat):
                req: dict[str, Any] = {"writers": w, "seconds": seconds, "latencies": True, "prefix": f"w{w}r{r}-"}
                if profile is not None and wi == len(writers) - 1 and r == 0:
                    req["profile"] = profile
                out = await leader.op_bulk(req)
                if out["errors"]:
                    raise RuntimeError(f"{w} writers: {out['errors'][0]}")
                acked = sum(out["acked"])
                if not acked:
                    raise RuntimeError(f"{w} writers: no write was acknowledged in {seconds:g} s")
                lat = out["latency_ms"]
                runs.append({"writes_per_s": acked / out["elapsed"], "p50": lat.get("p50"), "p99": lat.get("p99"),
                             "p999": lat.get("p999"), "cpu_us": out["cpu"] / acked * 1e6,
                             "groups_per_write": out["log_groups"] / acked, "writes": acked})
                print(f"  {w} writers, run {r + 1}: {runs[-1]['writes_per_s']:,.0f} writes/s, "
                      f"p50 {lat.get('p50', float('nan')):.3f} ms", flush=True)
            point = summarize(w, runs)
            point["groups_per_write"] = statistics.median(r["groups_per_write"] for r in runs)
            # What a run's group count may be off by one against (the leader's durability
            # step of the previous run's last write can end in this run) weighs most here.
            point["fewest_writes"] = min(r["writes"] for r in runs)
            points.append(point)
    finally:
        for n in reversed(started):
            await n.stop()
        devnull.close()
        shutil.rmtree(root, ignore_errors=True)
    return points


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--writers", default="1,256", help="comma-separated writer counts")
    p.add_argument("--seconds", type=float, default=3.0, help="length of one run")
    p.add_argument("--repeat", type=int, default=3, help="runs per writer count; medians are reported")
    p.add_argument("--no-fsync", action="store_true", help="log stores with sync=False")
    p.add_argument("--state-machine", choices=("rocks", "memory"), default="rocks")
    p.add_argument("--profile", help="write a cProfile of the first run at the last writer count here")
    p.add_argument("--dir", default=None, help="where to make the cluster directory (default: the system temp dir)")
    p.add_argument("--json", help="also write the points to this file")
    args = p.parse_args(argv)
    writers = checked_run_args(p, args.writers, args.seconds, args.repeat)
    where = args.dir if args.dir is not None else tempfile.gettempdir()
    if not os.path.isdir(where):
        p.error(f"--dir {where!r} is not a directory")
    print(f"3 nodes in one process on loopback TCP, RocksDB log sync={not args.no_fsync}, "
          f"{args.state_machine} state machine, {args.seconds:g} s per run, {args.repeat} run(s) per writer count")
    points = run_loop(run(writers, args.seconds, args.repeat, not args.no_fsync, args.state_machine, where,
                          args.profile))
    print("| writers | writes/s | p50 ms | p99 ms | p99.9 ms | CPU us/write | log groups/write |")
    print("|--:|--:|--:|--:|--:|--:|--:|")
    for pt in points:
        print(f"| {pt['writers']} | {pt['writes_per_s']:,.0f} | {pt['p50']:.3f} | {pt['p99']:.3f} | {pt['p999']:.3f} "
              f"| {pt['cpu_us']:.1f} | {pt['groups_per_write']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(points, indent=1))
    return points


if __name__ == "__main__":
    main(sys.argv[1:])
