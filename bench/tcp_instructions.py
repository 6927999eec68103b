"""Instructions per write of the TCP cluster at 256 writers, per node, counted by valgrind.

The cluster of ``bench/tcp.py``: three ``openraft_py.testing.proc.node`` processes on
loopback TCP (``RocksLogStore``, ``RocksStateMachine`` unless ``--state-machine memory``,
snapshots off, uvloop when installed), the writers embedded in the leader's process (its
``bulk`` operation, the same as ``bench/tcp.py``). Every node process runs under
``valgrind --tool=cachegrind --cache-sim=no`` (or ``--tool callgrind``), so each one's
instructions are counted apart: the leader's, and each follower's.

One run starts the cluster, lets node 1 win the first election, makes ``--warm-up`` writes,
then ``N`` writes from ``--writers`` writers, and stops the nodes gracefully (valgrind writes
its totals at exit). Two runs, ``N1`` and ``N2`` writes, give the cost of one write on each
node: ``(count(N2) - count(N1)) / (N2 - N1)``; start-up, the election, the warm-up and the
shutdown cancel out. ``--repeat R`` makes R such pairs and prints each.

    python bench/tcp_instructions.py                       # 256 writers, 5,000 and 25,000 writes
    python bench/tcp_instructions.py --n1 5000 --n2 35000 --repeat 2
    python bench/tcp_instructions.py --tool callgrind --keep /tmp/cg   # keep callgrind.out per node
    python bench/tcp_instructions.py --pythonpath /tmp/base-copy       # count another built tree

``--pythonpath`` puts a directory first on the node processes' ``PYTHONPATH`` (a copy of
another tree's built ``openraft_py``: both builds counted side by side, as
``docs/design/performance.md`` asks of a change). With ``--tool callgrind --keep D`` each
node's ``callgrind.out.<node>.<N>`` stays in ``D``; ``callgrind_annotate --inclusive=yes``
on the ``N2`` file against the ``N1`` file's figures splits a node's write by function.

How the counts are kept steady (``docs/design/performance.md``, the forty-first and
forty-ninth rounds):

- The log stores run without fsync (``--fsync`` turns it on): with fsync, how the leader's
  writes group into rounds depends on when the fsync completes against the slowed process,
  and every per-round cost with it.
- The election timeouts are long (``ELECTION_TIMEOUT_MS``): under valgrind, on a loaded
  machine, a follower's timer would otherwise fire before the first write.
- A count still moves by a few percent from run to run (when the leader's rounds close, the
  collector's passes, the shutdown's memtable flush): compare two builds over at least two
  pairs each, alternately.

Needs valgrind on ``PATH``. Slow: a pair takes a few minutes on two vCPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shlex
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from openraft_py.testing.proc_cluster import ProcCluster  # noqa: E402

ELECTION_TIMEOUT_MS = (60_000, 90_000)
"""Election timeouts of every node: far beyond any pause valgrind makes."""

ROLES = {1: "leader", 2: "follower n2", 3: "follower n3"}

_COUNT = re.compile(r"(?:I\s+refs|Collected)\s*:\s*([\d,]+)")


def _wrapper(tmp: Path, tool: str, python: str) -> Path:
    """A script that runs ``python`` under valgrind, its log and output files named by pid."""
    out = "cachegrind.out" if tool == "cachegrind" else "callgrind.out"
    tool_args = ["--tool=cachegrind", "--cache-sim=no"] if tool == "cachegrind" else ["--tool=callgrind"]
    args = ["valgrind", *tool_args, f"--{tool}-out-file={tmp}/{out}.%p", f"--log-file={tmp}/valgrind.%p", python]
    w = tmp / "python-under-valgrind"
    w.write_text("#!/bin/sh\nexec " + " ".join(shlex.quote(a) for a in args) + ' "$@"\n')
    w.chmod(0o755)
    return w


def _instructions(log: Path) -> int:
    m = _COUNT.findall(log.read_text(errors="replace"))
    if not m:
        raise RuntimeError(f"no instruction count in {log}:\n{log.read_text(errors='replace')[-2000:]}")
    return int(m[-1].replace(",", ""))


async def _all_applied(cluster: ProcCluster, timeout: float = 900.0) -> None:
    """Wait until every node has applied what the leader (node 1) has applied."""
    applied = (await cluster.call(1, "metrics", timeout=timeout))["applied"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = await cluster.metrics(timeout=timeout)
        if len(got) == 3 and all(m["applied"] is not None and m["applied"] >= applied for m in got.values()):
            return
        if loop.time() > deadline:
            raise TimeoutError(f"not every node applied index {applied} within {timeout:g} s: {got}")
        await asyncio.sleep(0.5)


async def _run(args: argparse.Namespace, writes: int, keep: Path | None) -> dict[int, int]:
    """One cluster under valgrind making ``writes`` measured writes: each node's count."""
    tmp = Path(tempfile.mkdtemp(prefix="tcp-instructions-", dir=args.dir))
    cwd = os.getcwd()
    try:
        env = {}
        if args.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join([args.pythonpath, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        config: dict[str, Any] = {
            "snapshot_policy": {"logs_since_last_n": None},  # as bench/tcp.py
            "election_timeout_min": ELECTION_TIMEOUT_MS[0],
            "election_timeout_max": ELECTION_TIMEOUT_MS[1],
        }
        wrapper = _wrapper(tmp, args.tool, args.python)
        # ``python -m`` puts the working directory first on a node's ``sys.path``: start the
        # nodes from the temp directory, so that they import the installed (or
        # ``--pythonpath``) build, never a source tree the driver was started from.
        os.chdir(tmp)
        cluster = ProcCluster(3, root=tmp / "cluster", raft_config=config, sync=args.fsync, events=False,
                              state_machine=args.state_machine, env=env, python=str(wrapper))
        pids: dict[int, int] = {}
        try:
            leader = await cluster.start(timeout=600.0)
            if leader != 1:
                raise RuntimeError(f"node {leader} was elected, not node 1")
            pids = {i: p.pid for i, p in cluster.nodes.items()}
            await cluster.call(1, "bulk", timeout=3600.0, writers=args.writers, count=args.warm_up, prefix="warm-")
            out = await cluster.call(1, "bulk", timeout=3600.0, writers=args.writers, count=writes, prefix="w-")
            if out["errors"] or sum(out["acked"]) != writes:
                raise RuntimeError(f"{writes} writes: {sum(out['acked'])} acknowledged, errors {out['errors'][:3]}")
            # Every node applies every write before the stop: a follower that lags behind (its
            # answers are not needed for the commit) would otherwise leave a part of its work
            # out of one run's count and not the other's.
            await _all_applied(cluster)
            # A graceful stop, with the time valgrind needs: it writes its totals at exit.
            await asyncio.gather(*(p.stop(timeout=600.0) for p in cluster.nodes.values()))
        finally:
            await cluster.close()
        counts = {i: _instructions(tmp / f"valgrind.{pid}") for i, pid in pids.items()}
        if keep is not None and args.tool == "callgrind":
            keep.mkdir(parents=True, exist_ok=True)
            for i, pid in pids.items():
                shutil.copy(tmp / f"callgrind.out.{pid}", keep / f"callgrind.out.{i}.{writes}")
        return counts
    finally:
        os.chdir(cwd)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> list[dict[int, float]]:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--writers", type=int, default=256)
    p.add_argument("--n1", type=int, default=5000, help="measured writes of the first run")
    p.add_argument("--n2", type=int, default=25000, help="measured writes of the second run")
    p.add_argument("--warm-up", type=int, default=500, help="writes made before the measured ones")
    p.add_argument("--repeat", type=int, default=1, help="pairs of runs")
    p.add_argument("--tool", choices=("cachegrind", "callgrind"), default="cachegrind")
    p.add_argument("--keep", help="with --tool callgrind: copy each node's callgrind.out here")
    p.add_argument("--fsync", action="store_true", help="log stores with fsync (counts move more)")
    p.add_argument("--state-machine", choices=("rocks", "memory"), default="rocks")
    p.add_argument("--pythonpath", help="a directory put first on the nodes' PYTHONPATH")
    p.add_argument("--python", default=sys.executable, help="the nodes' interpreter")
    p.add_argument("--dir", default=None, help="where the cluster's directory is made (default: temp dir)")
    args = p.parse_args(argv)
    if not 0 < args.n1 < args.n2 or args.writers < 1 or args.repeat < 1:
        p.error("need 0 < --n1 < --n2, --writers >= 1 and --repeat >= 1")
    if shutil.which("valgrind") is None:
        p.error("valgrind is not on PATH")
    keep = Path(args.keep) if args.keep else None
    print(f"{args.writers} writers, {args.n1:,} and {args.n2:,} writes, {args.tool}, fsync {args.fsync}, "
          f"{args.state_machine} state machine" + (f", PYTHONPATH {args.pythonpath}" if args.pythonpath else ""),
          flush=True)
    results = []
    for r in range(args.repeat):
        c1 = asyncio.run(_run(args, args.n1, keep))
        c2 = asyncio.run(_run(args, args.n2, keep))
        per = {i: (c2[i] - c1[i]) / (args.n2 - args.n1) for i in sorted(c1)}
        results.append(per)
        cells = ", ".join(f"{ROLES[i]} {v:,.0f}" for i, v in per.items())
        print(f"pair {r + 1}: instructions per write: {cells}; all three {sum(per.values()):,.0f}", flush=True)
    if args.repeat > 1:
        med = {i: statistics.median(r[i] for r in results) for i in results[0]}
        print("median: " + ", ".join(f"{ROLES[i]} {v:,.0f}" for i, v in med.items())
              + f"; all three {sum(med.values()):,.0f}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
