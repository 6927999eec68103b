"""A long run of the key-value service under churn, watching what grows.

Runs ``--nodes`` ``openraft-py serve`` processes (``LocalCluster``, loopback) for
``--minutes`` with snapshots and log purges made frequent (``--snapshot-every`` entries,
``max_in_snapshot_log_to_keep`` small), a steady write load of ``--rate`` puts a second over
a bounded key space (``--keys``: the state does not grow), and a churn step every
``--churn-every`` seconds, in turn: kill -9 a follower and restart it, kill -9 the leader and
restart it, a leadership transfer, add a learner (a fresh node, a new id each time) and
remove it again. ``--keep 1`` never kills node 1 (a leader to be killed hands over first), so
one process's figures span the whole run.

Every ``--sample-every`` seconds it records, per node: the process's RSS, open file
descriptors and threads (from ``/proc``), the size and number of files of its data
directory's ``log/``, ``sm/`` (and ``sm/snapshots/``) and of its log file, and from
``GET /metrics`` the number of series and the log indexes (last, purged, snapshot). The
samples go to ``ROOT/soak.jsonl``; the end prints, per node, the first and last sample of its
longest-lived process. At the end every acknowledged write is read back (linearizable): a
key must hold its last acknowledged value or the value of a later write whose outcome was
unknown. Exit 1 if one does not.

    python bench/soak.py [--nodes 3] [--minutes 20] [--rate 30] [--keep 1] [--root DIR]

Informational: nothing is judged but the read-back; the figures are for a human to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from openraft_py.kv.client import KvClient, Outcome
from openraft_py.kv.local_cluster import ClusterError, LocalCluster


def _proc_figures(pid: int) -> dict[str, int]:
    """RSS (KiB), open fds and threads of ``pid`` (empty when it is gone)."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss_kb"] = int(line.split()[1])
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, ValueError):
        return {}
    return out


def _tree(path: Path) -> tuple[int, int]:
    """Total bytes and number of files under ``path``."""
    size = files = 0
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            try:
                size += os.lstat(os.path.join(dirpath, name)).st_size
                files += 1
            except OSError:
                pass
    return size, files


def _metrics_figures(text: str) -> dict[str, float]:
    out: dict[str, float] = {"series": 0}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        out["series"] += 1
        name, _, value = line.rpartition(" ")
        if name in ("openraft_last_log_index", "openraft_purged_index", "openraft_snapshot_index",
                    "openraft_applied_index", "openraft_term"):
            out[name.removeprefix("openraft_")] = float(value)
    return out


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = Path(args.root) if args.root else None
        config = {"snapshot_policy": {"logs_since_last_n": args.snapshot_every},
                  "max_in_snapshot_log_to_keep": args.keep_logs}
        self.cluster = LocalCluster(args.nodes, root=self.root, raft_config=config)
        self.voters = list(range(1, args.nodes + 1))
        self.learner = args.nodes + 1
        self.acked: dict[str, str] = {}        # key -> last acknowledged value
        self.unknown: dict[str, set[str]] = {}  # key -> values written after it, outcome unknown
        self.counts = {"ok": 0, "fail": 0, "info": 0}
        self.events: list[str] = []
        self.stop = asyncio.Event()
        self.out = open(self.cluster.root / "soak.jsonl", "a")

    def log(self, what: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {what}"
        self.events.append(line)
        print(line, flush=True)

    async def writer(self) -> None:
        seq = 0
        async with KvClient(self.cluster.endpoints(self.voters), deadline=10.0, attempt_timeout=5.0) as c:
            while not self.stop.is_set():
                t0 = time.monotonic()
                seq += 1
                key = f"k{random.randrange(self.args.keys)}"
                value = f"{seq}-{'x' * random.randrange(self.args.value_bytes)}"
                r = await c.put(key, value)
                self.counts[r.outcome.value] += 1
                if r.outcome is Outcome.OK:
                    self.acked[key] = value
                    self.unknown.pop(key, None)
                elif r.outcome is Outcome.INFO:
                    self.unknown.setdefault(key, set()).add(value)
                await asyncio.sleep(max(0.0, 1.0 / self.args.rate - (time.monotonic() - t0)))

    async def leader(self) -> int:
        lid, _ = await self.cluster.wait_leader(self.voters, timeout=30.0)
        return lid

    async def churn(self) -> None:
        c = self.cluster
        step = 0
        while not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), self.args.churn_every)
                return
            except TimeoutError:
                pass
            kind = step % 4
            step += 1
            try:
                lid = await self.leader()
                if kind == 1 and lid in self.args.keep:
                    to = random.choice([i for i in self.voters if i not in self.args.keep])
                    r = await c.client.transfer(to, deadline=15.0)
                    self.log(f"transfer n{lid} -> n{to} (n{lid} is kept): {r.outcome.value} {r.status}")
                    lid = await self.leader()
                if kind == 0:
                    victim = random.choice([i for i in self.voters if i != lid and i not in self.args.keep])
                    c.kill(victim)
                    self.log(f"kill -9 follower n{victim}")
                    await asyncio.sleep(2.0)
                    await c.start_node(victim)
                    self.log(f"restarted n{victim}")
                elif kind == 1 and lid not in self.args.keep:
                    c.kill(lid)
                    self.log(f"kill -9 leader n{lid}")
                    await asyncio.sleep(1.0)
                    await c.start_node(lid)
                    new = await self.leader()
                    self.log(f"restarted n{lid}; leader n{new}")
                elif kind == 2:
                    to = random.choice([i for i in self.voters if i != lid])
                    r = await c.client.transfer(to, deadline=15.0)
                    self.log(f"transfer n{lid} -> n{to}: {r.outcome.value} {r.status} {r.error or ''}")
                else:
                    await self.learner_cycle()
            except (ClusterError, OSError) as e:
                self.log(f"churn step {kind} failed: {e}")

    async def learner_cycle(self) -> None:
        """Add a fresh node as a learner, then remove it and stop it. Each cycle uses a new
        node id (as machines replaced over a cluster's life), so a map keyed by node id that
        keeps removed nodes shows in the leader's figures."""
        c = self.cluster
        nid = self.learner
        self.learner += 1
        node = c.add_node(nid)
        await c.start_node(nid)
        r = await c.client.add_learner(nid, node.raft_addr, node.http_addr, deadline=60.0, attempt_timeout=60.0)
        self.log(f"add-learner n{nid}: {r.outcome.value} {r.status} {r.error or ''}")
        await asyncio.sleep(5.0)
        r = await c.client.remove_learner(nid, deadline=15.0)
        self.log(f"remove-learner n{nid}: {r.outcome.value} {r.status} {r.error or ''}")
        c.stop(nid)
        shutil.rmtree(node.data_dir, ignore_errors=True)

    async def sample(self, t0: float) -> None:
        c = self.cluster
        row: dict[str, Any] = {"t": round(time.monotonic() - t0, 1), "writes": dict(self.counts),
                               "keys": len(self.acked), "nodes": {}}
        for nid, node in sorted(c.nodes.items()):
            if nid not in self.voters and not node.running and not node.data_dir.exists():
                continue  # a learner removed earlier
            d: dict[str, Any] = {"starts": node.starts}
            if node.running and node.proc is not None:
                d["pid"] = node.proc.pid
                d.update(_proc_figures(node.proc.pid))
                try:
                    r = await c.client.request("GET", "/metrics", endpoint=node.http_addr, follow=False, deadline=3.0)
                    if r.status == 200:
                        d.update(_metrics_figures(r.body.decode()))
                except Exception as e:  # noqa: BLE001 - a sample must not stop the soak
                    d["metrics_error"] = repr(e)
            for part in ("log", "sm", "sm/snapshots"):
                size, files = _tree(node.data_dir / part)
                d[f"{part}_bytes"], d[f"{part}_files"] = size, files
            try:
                d["logfile_bytes"] = node.log.stat().st_size
            except OSError:
                pass
            row["nodes"][str(nid)] = d
        self.out.write(json.dumps(row) + "\n")
        self.out.flush()
        brief = " | ".join(
            f"n{i} rss={d.get('rss_kb', '-')} fds={d.get('fds', '-')} thr={d.get('threads', '-')} "
            f"log={d['log_files']}f/{d['log_bytes'] // 1024}K sm={d['sm_files']}f/{d['sm_bytes'] // 1024}K "
            f"snap={d['sm/snapshots_files']}f series={d.get('series', '-')} purged={d.get('purged_index', '-')}"
            for i, d in row["nodes"].items())
        print(f"[{row['t']:7.1f}s] {row['writes']} {brief}", flush=True)

    async def sampler(self, t0: float) -> None:
        while not self.stop.is_set():
            await self.sample(t0)
            try:
                await asyncio.wait_for(self.stop.wait(), self.args.sample_every)
            except TimeoutError:
                pass

    async def check(self) -> int:
        bad = 0
        async with KvClient(self.cluster.endpoints(self.voters), deadline=30.0) as c:
            for key, value in sorted(self.acked.items()):
                r = await c.get(key)
                got = r.value if r.ok else f"<{r.outcome.value}: {r.error}>"
                if got != value and got not in self.unknown.get(key, set()):
                    bad += 1
                    print(f"LOST: {key}: acknowledged {value[:20]!r}, read {str(got)[:40]!r}")
        print(f"read back {len(self.acked)} acknowledged keys: {bad} wrong")
        return bad

    async def run(self) -> int:
        c = self.cluster
        await c.start(self.voters)
        await c.init(self.voters)
        await self.leader()
        t0 = time.monotonic()
        self.log(f"cluster of {self.args.nodes} up under {c.root}")
        tasks = [asyncio.create_task(self.writer()), asyncio.create_task(self.churn()),
                 asyncio.create_task(self.sampler(t0))]
        try:
            await asyncio.sleep(self.args.minutes * 60)
        finally:
            self.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        for nid in self.voters:
            if not c.nodes[nid].running:
                await c.start_node(nid)
        await self.leader()
        await self.sample(t0)
        print(f"writes: {self.counts}")
        bad = await self.check()
        await c.client.close()
        return 1 if bad else 0


def summary(path: Path) -> None:
    """Per node: the first and last sample of the process that ran longest."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by_pid: dict[tuple[str, int], list[tuple[float, dict[str, Any]]]] = {}
    for row in rows:
        for nid, d in row["nodes"].items():
            if "pid" in d:
                by_pid.setdefault((nid, d["pid"]), []).append((row["t"], d))
    keys = ("rss_kb", "fds", "threads", "series", "log_files", "log_bytes", "sm_files", "sm_bytes",
            "sm/snapshots_files", "logfile_bytes", "last_log_index", "purged_index")
    best: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    for (nid, _pid), samples in by_pid.items():
        if len(samples) > len(best.get(nid, [])):
            best[nid] = samples
    for nid, samples in sorted(best.items()):
        (t_a, a), (t_b, b) = samples[0], samples[-1]
        print(f"n{nid} pid {a['pid']} from {t_a:.0f}s to {t_b:.0f}s:")
        for k in keys:
            print(f"    {k:20} {a.get(k, '-')!s:>12} -> {b.get(k, '-')!s:>12}")


def main() -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--rate", type=float, default=30.0, help="puts a second")
    p.add_argument("--keys", type=int, default=2000, help="the key space written over")
    p.add_argument("--value-bytes", type=int, default=200)
    p.add_argument("--snapshot-every", type=int, default=300, help="logs_since_last_n")
    p.add_argument("--keep-logs", type=int, default=50, help="max_in_snapshot_log_to_keep")
    p.add_argument("--churn-every", type=float, default=40.0)
    p.add_argument("--sample-every", type=float, default=30.0)
    p.add_argument("--keep", type=lambda v: [int(x) for x in v.split(",") if x], default=[],
                   help="ids of voters never killed (their growth is seen over the whole run), e.g. 1")
    p.add_argument("--root", help="keep the nodes' data here (default: a temporary directory, removed)")
    args = p.parse_args()
    soak = Soak(args)
    try:
        code = asyncio.run(soak.run())
    finally:
        soak.out.close()
        summary(soak.cluster.root / "soak.jsonl")
        soak.cluster.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
