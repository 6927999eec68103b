"""PySyncObj, the incumbent Python Raft library, measured as ``bench/tcp.py`` measures
openraft-py: three node processes on loopback (127.0.0.1, free ports), the writers embedded
in the leader's process as asyncio coroutines (uvloop), one write in flight per writer, the
same keys and values, writes/s, p50/p99/p99.9 latency and the CPU time per write of the three
processes together at 1, 64 and 256 writers.

``--journal memory`` is PySyncObj's in-memory journal (nothing reaches the disk);
``--journal file`` its file journal (an mmap'ed file, never fsynced: PySyncObj has no option
for it). Log compaction is off, as on the openraft-py side. Each node is
``bench/peers/pysyncobj_node.py``. At the end every node must have applied every
acknowledged write (else the run fails). Every process is stopped at the end (and on failure:
shutdown, then SIGKILL), and the nodes die with this process.

    python bench/peers/pysyncobj_bench.py                    # memory journal, 3 x 3 s per point
    python bench/peers/pysyncobj_bench.py --journal file --tuning batched --seconds 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from bench.common import cpu_us_per_write, summarize
from openraft_py.testing.proc_cluster import free_port

NODE = Path(__file__).resolve().with_name("pysyncobj_node.py")

TUNINGS: dict[str, dict[str, Any]] = {
    "unbatched": {"appendEntriesUseBatch": False},
    "batched": {"appendEntriesUseBatch": True, "appendEntriesPeriod": 0.002, "autoTickPeriod": 0.001},
}
"""PySyncObj's settings for the comparison (``SyncObjConf`` fields); the comparison takes the
better of the two at each writer count. Its defaults (batched, one AppendEntries round per
0.1 s period) made a write wait for the next period: about 10 writes/s for one writer and
2,400 for 256 on the 2-core machine. ``unbatched`` sends each command at once (the fast
one at 1 writer: ~2,600 writes/s); ``batched`` with a 2 ms period and a 1 ms tick is the
fastest at 256 writers we found (17,000-35,000 writes/s, against 4,000-10,000 unbatched)."""


class NodeProc:
    """One node process and its line-based control channel (see ``pysyncobj_node``)."""

    def __init__(self, addr: str, partners: list[str], journal: Path | None, log: Path, conf: dict[str, Any]) -> None:
        cmd = [sys.executable, str(NODE), "--self", addr, "--partners", ",".join(partners), "--conf", json.dumps(conf)]
        if journal is not None:
            cmd += ["--journal", str(journal)]
        self.addr = addr
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)  # end of output: the process exited

    def recv(self, timeout: float) -> dict[str, Any]:
        """The next line from the node, decoded; ``RuntimeError`` if the node exited or said
        nothing for ``timeout`` seconds."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"node {self.addr}: no answer within {timeout:g} s") from None
        if line is None:
            raise RuntimeError(f"node {self.addr} exited (code {self.proc.wait()}); see {self._log.name}")
        msg: dict[str, Any] = json.loads(line)
        return msg

    def call(self, timeout: float, **req: Any) -> dict[str, Any]:
        """Send one request and return its answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self.recv(timeout)

    def stop(self) -> None:
        """Ask the node to shut down, then kill it if it has not exited within 5 s."""
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write(json.dumps({"op": "shutdown"}) + "\n")
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(5.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5.0)
        self._log.close()


def wait_leader(nodes: list[NodeProc], timeout: float) -> NodeProc:
    """The node all three agree is the leader, polled until ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = [n.call(10.0, op="status") for n in nodes]
        leaders = [n for n, s in zip(nodes, st) if s["leader"]]
        if len(leaders) == 1 and all(s["leader_addr"] == leaders[0].addr for s in st):
            return leaders[0]
        time.sleep(0.05)
    raise RuntimeError(f"no leader agreed on within {timeout:g} s")


def wait_applied(nodes: list[NodeProc], acked: int, timeout: float) -> None:
    """Wait until every node has applied at least ``acked`` writes (each write sets a new
    key); ``RuntimeError`` after ``timeout`` seconds: an acknowledged write went missing."""
    deadline = time.monotonic() + timeout
    while True:
        sizes = [n.call(10.0, op="size")["size"] for n in nodes]
        if min(sizes) >= acked:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{acked} writes acknowledged, but the nodes applied {sizes}")
        time.sleep(0.1)


def cpu_seconds(nodes: list[NodeProc]) -> float:
    """The CPU seconds the node processes have used so far, together (each its own figure,
    every thread: ``time.process_time`` in the node)."""
    return sum(float(n.call(30.0, op="stats")["cpu"]) for n in nodes)


def run(journal: str, tuning: str, writers: list[int], seconds: float, repeat: int,
        extra_conf: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start the cluster (``journal``: ``"memory"`` or ``"file"``; ``tuning``: a key of
    ``TUNINGS``, ``extra_conf`` on top), run every point, stop the cluster; ``{"journal",
    "tuning", "conf", "seconds", "repeat", "points": [point], "runs": [run]}`` (points as
    ``bench.common.summarize``)."""
    conf = {**TUNINGS[tuning], **(extra_conf or {})}
    root = Path(tempfile.mkdtemp(prefix="bench-pysyncobj-"))
    addrs: list[str] = []
    while len(addrs) < 3:
        a = f"127.0.0.1:{free_port()}"
        if a not in addrs:
            addrs.append(a)
    nodes: list[NodeProc] = []
    out: dict[str, Any] = {"journal": journal, "tuning": tuning, "conf": conf, "seconds": seconds, "repeat": repeat, "points": [],
                           "runs": []}
    try:
        for i, a in enumerate(addrs):
            j = root / f"journal-{i}.bin" if journal == "file" else None
            nodes.append(NodeProc(a, [x for x in addrs if x != a], j, root / f"node-{i}.log", conf))
        for n in nodes:
            if n.recv(30.0).get("event") != "ready":
                raise RuntimeError(f"node {n.addr} did not start")
        leader = wait_leader(nodes, 30.0)
        warm = leader.call(60.0, op="bulk", writers=64, seconds=min(1.0, seconds), prefix="w")
        if warm["errors"]:
            raise RuntimeError(f"warm-up: {warm['errors'][:3]}")
        acked = warm["acked"]
        for w in writers:
            runs = []
            for rep in range(repeat):
                cpu0 = cpu_seconds(nodes)
                r = leader.call(seconds + 60.0, op="bulk", writers=w, seconds=seconds, prefix=f"b{w}.{rep}-")
                cpu = cpu_seconds(nodes) - cpu0
                if r["errors"]:
                    raise RuntimeError(f"{w} writers: {r['errors'][:3]}")
                runs.append({"writers": w, **r, "cpu_us": cpu_us_per_write(cpu, r["acked"])})
                acked += r["acked"]
                per_write = runs[-1]["cpu_us"]
                print(f"  pysyncobj {journal:>6} {tuning:>9} {w:>4} writers: {r['writes_per_s']:>10,.0f} writes/s  "
                      f"p50 {r['p50']:.2f} ms  p99 {r['p99']:.2f} ms  CPU "
                      + ("-" if per_write is None else f"{per_write:.1f} us/write"), flush=True)
            out["runs"] += runs
            out["points"].append(summarize(w, runs))
        wait_applied(nodes, acked, 30.0)  # the figures count only writes every node applied
    finally:
        for n in nodes:
            n.stop()
        shutil.rmtree(root, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--journal", choices=["memory", "file"], default="memory")
    p.add_argument("--writers", default="1,64,256", help="comma-separated writer counts")
    p.add_argument("--seconds", type=float, default=3.0, help="length of one run")
    p.add_argument("--repeat", type=int, default=3, help="runs per point; medians are reported")
    p.add_argument("--tuning", choices=sorted(TUNINGS), default="unbatched", help="see TUNINGS")
    p.add_argument("--conf", default="{}", metavar="JSON", help="more SyncObjConf keyword arguments (override --tuning)")
    p.add_argument("--json", help="write the figures to this file")
    args = p.parse_args(argv)
    writers = [int(x) for x in args.writers.split(",") if x.strip()]
    from pysyncobj.version import VERSION

    print(f"PySyncObj {VERSION}: 3 processes on loopback, {args.journal} journal, {args.tuning}, "
          f"{args.repeat} x {args.seconds:g} s per writer count", flush=True)
    res = run(args.journal, args.tuning, writers, args.seconds, args.repeat, json.loads(args.conf))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
