"""TCP cluster benchmark: three node processes on loopback, RocksDB stores with fsync.

Each node is ``openraft_py.testing.proc_node`` (``RocksLogStore(sync=True)`` +
``RocksStateMachine``, the TCP transport, uvloop when installed), started by
``openraft_py.testing.proc_cluster``. ``--state-machine memory`` gives each node a
``MemStateMachine`` instead (a dict, no disk: the state PySyncObj keeps, so the comparison
with it does the same work on both sides apart from our log's RocksDB and fsync). The
writers run inside the leader's process: ``W`` coroutines each await ``raft.client_write``
of a key-value set in a loop for ``--seconds``.
The run reports writes/s at each writer count with the per-write latency percentiles
(p50/p90/p99/p99.9; with ``--repeat N``, N runs per writer count on the same cluster and the
median of each figure), and measures in the same run, on the same machine:

- the raw fsync latency: ``write`` + ``os.fsync`` of 128 bytes appended to a file in the
  cluster's directory (the filesystem the stores use): ``--fsync-samples`` before the runs,
  half as many between runs and as many after, reported as the median of all of them (and
  the median of each batch: on a shared VM it moves with the machine's other IO);
- the fsync latency when three threads fsync at once, each its own file (what each node of
  the cluster meets when all three fsync in the same round), informational;
- the loopback TCP round trip: 64 bytes sent to an echo server in another process over
  127.0.0.1 (TCP_NODELAY, blocking sockets), median of ``--rtt-samples``.

Each run also shows where the time goes: the leader's fsync groups (= replication rounds) per
second and writes per group, each node's share of a CPU and the CPU per write (every thread
of the three nodes), and each node's voluntary and involuntary context switches per group
(``getrusage``: a node sleeping and waking, or preempted).

The 1-writer latency target (issue 14: p50 at most ``bench.report.TCP_1W_P50_BOUND`` x (fsync
+ round trip), both measured in the same run) is printed as met or not: nothing here is
asserted. The 256-writer targets compare with PySyncObj, which ``make bench`` runs beside it
(``bench/run.py``); this script alone prints only the writes/s.

    python bench/tcp.py                      # 1, 64 and 256 writers, 3 s each
    python bench/tcp.py --quick              # 1 s each, fewer samples
    python bench/tcp.py --repeat 3           # 3 runs per writer count, medians
    python bench/tcp.py --no-fsync           # log stores with sync=False
    python bench/tcp.py --state-machine memory   # in-memory state machines (RocksDB log as before)
    python bench/tcp.py --profile 256        # cProfile the leader and a follower (256 writers)
    python bench/tcp.py --spy 256            # py-spy every node, all threads (256 writers)
    python bench/tcp.py --raft-config '{"max_apply_batch": 32}'   # extra Config fields
    python bench/tcp.py --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import checked_run_args, cpu_us_per_write, summarize
from bench.report import TCP_1W_P50_BOUND
from openraft_py.testing.proc_cluster import ProcCluster

_ECHO_SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    d = c.recv(65536)
    if not d:
        break
    c.sendall(d)
"""


def measure_fsync(directory: Path, samples: int) -> list[float]:
    """Seconds of ``write`` + ``os.fsync`` of 128 bytes appended to a file in ``directory``,
    ``samples`` times."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, b"x" * 4096)
        os.fsync(fd)
        out = []
        buf = b"y" * 128
        for _ in range(samples):
            t = time.perf_counter()
            os.write(fd, buf)
            os.fsync(fd)
            out.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return out


def measure_fsync_concurrent(directory: Path, samples: int, n: int = 3) -> float:
    """Median seconds of ``write`` + ``os.fsync`` of 128 bytes when ``n`` threads do it at
    once, each to its own file in ``directory``: what each node of an ``n``-node cluster on
    one disk meets when the nodes fsync in the same round (their writes and device flushes queue up).
    Informational; the targets use the single-file ``measure_fsync``."""
    import threading

    out: list[float] = []
    start = threading.Barrier(n)

    def probe(k: int) -> None:
        path = directory / f"fsync-probe-{k}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            buf = b"y" * 128
            start.wait()
            for _ in range(samples):
                t = time.perf_counter()
                os.write(fd, buf)
                os.fsync(fd)
                out.append(time.perf_counter() - t)
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)

    threads = [threading.Thread(target=probe, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statistics.median(out)


def measure_rtt(samples: int) -> float:
    """Median seconds of a 64-byte round trip to an echo server in another process over
    127.0.0.1."""
    proc = subprocess.Popen([sys.executable, "-c", _ECHO_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            msg = b"p" * 64
            out = []
            for i in range(samples + 50):
                t = time.perf_counter()
                s.sendall(msg)
                got = 0
                while got < len(msg):
                    got += len(s.recv(65536))
                if i >= 50:  # warm-up round trips are not counted
                    out.append(time.perf_counter() - t)
    finally:
        proc.kill()
        proc.wait(10)
    return statistics.median(out)


async def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Start the cluster, run every writer count, return the figures."""
    root = Path(tempfile.mkdtemp(prefix="openraft-bench-tcp-", dir=args.dir))
    raft_config = {"snapshot_policy": {"logs_since_last_n": None}, **json.loads(args.raft_config)}
    results: dict[str, Any] = {"sync": not args.no_fsync, "state_machine": args.state_machine,
                               "seconds": args.seconds, "repeat": args.repeat,
                               "runs": [], "points": []}
    async with ProcCluster(3, root=root, raft_config=raft_config, sync=not args.no_fsync, events=False,
                           state_machine=args.state_machine,
                           cluster_name="bench-tcp") as c:
        try:
            # fsync latency on this kind of VM changes with the other IO on the machine: sample
            # it before, between and after the runs and report the median of all samples.
            fsync_samples = measure_fsync(root, args.fsync_samples)
            fsync_medians = [statistics.median(fsync_samples) * 1000.0]
            results["rtt_ms"] = measure_rtt(args.rtt_samples) * 1000.0
            leader = await c.start(timeout=60.0)
            # Warm up: connections, caches, the first RocksDB memtables.
            await c.call(leader, "bulk", timeout=120.0, writers=64, seconds=min(1.0, args.seconds), prefix="w")
            for w in args.writers:
                if w != args.writers[0]:
                    more = measure_fsync(root, args.fsync_samples // 2)
                    fsync_samples += more
                    fsync_medians.append(statistics.median(more) * 1000.0)
                for rep in range(args.repeat):
                    run = await one_run(c, root, leader, w, rep, args, results)
                    results["runs"].append(run)
                    print(f"  {w:>4} writers: {run['writes_per_s']:>10,.0f} writes/s  p50 {run['p50']:.2f} ms  "
                          f"p99 {run['p99']:.2f} ms", flush=True)
                results["points"].append(summarize(w, [r for r in results["runs"] if r["writers"] == w]))
            results["metrics"] = await c.metrics()
            more = measure_fsync(root, args.fsync_samples)
            fsync_samples += more
            fsync_medians.append(statistics.median(more) * 1000.0)
            results["fsync3_ms"] = measure_fsync_concurrent(root, max(20, args.fsync_samples // 3)) * 1000.0
            results["fsync_ms_each"] = fsync_medians
            results["fsync_ms"] = statistics.median(fsync_samples) * 1000.0
        finally:
            await c.close()
            if args.keep:
                print(f"(cluster directory kept: {root})")
            else:
                shutil.rmtree(root, ignore_errors=True)
    return results


async def one_run(c: ProcCluster, root: Path, leader: int, w: int, rep: int, args: argparse.Namespace,
                  results: dict[str, Any]) -> dict[str, Any]:
    """Run ``w`` writers in the leader for ``args.seconds`` (run ``rep`` of that writer count)
    and return the run's figures (profiling / sampling it as asked, on its first run)."""
    spies = start_spies(c, root, w, args) if args.spy == w and rep == 0 else []
    prof = None
    if args.profile == w and rep == 0:
        prof = str(root / f"leader-{w}.prof")
    follower = next(i for i in c.running() if i != leader)
    fprof = str(root / f"follower-{w}.prof")
    bulk = c.call(leader, "bulk", timeout=args.seconds * 10 + 60, writers=w, seconds=args.seconds,
                  prefix=f"b{w}.{rep}-", latencies=True, **({"profile": prof} if prof else {}))
    if prof:
        r, _ = await asyncio.gather(
            bulk, c.call(follower, "profile", timeout=args.seconds + 60, seconds=args.seconds, path=fprof))
    else:
        stats0 = await stats(c)
        r = await bulk
        stats1 = await stats(c)
    for node_id, proc, path in spies:
        await asyncio.to_thread(proc.wait)
        print_spy(path, args.profile_lines, f"n{node_id}" + (" (leader)" if node_id == leader else ""))
    if r["errors"]:
        raise RuntimeError(f"{w} writers: {r['errors'][:3]}")
    n = sum(r["acked"])
    run = {"writers": w, "writes": n, "elapsed": r["elapsed"], "writes_per_s": n / r["elapsed"],
           **{k: r["latency_ms"].get(k) for k in ("p50", "p90", "p99", "p999", "max")},
           "leader_groups": r["log_groups"]}
    if not prof:  # CPU use of each node (all threads) and its fsync groups
        run["cpu"] = {i: (stats1[i]["cpu"] - stats0[i]["cpu"]) / r["elapsed"] for i in stats1 if i in stats0}
        run["groups"] = {i: stats1[i]["log_groups"] - stats0[i]["log_groups"] for i in stats1 if i in stats0}
        run["cpu_us"] = cpu_us_per_write(sum(stats1[i]["cpu"] - stats0[i]["cpu"] for i in run["cpu"]), n)
        # Context switches of each node (all threads) meanwhile: [voluntary, involuntary].
        run["switches"] = {i: [b - a for a, b in zip(stats0[i]["switches"], stats1[i]["switches"])]
                           for i in stats1 if i in stats0}
    if prof:
        results["profile"] = [prof, fprof]
        print_profile(prof, args.profile_lines, f"leader n{leader}")
        print_profile(fprof, args.profile_lines, f"follower n{follower}")
    return run


async def stats(c: ProcCluster) -> dict[int, dict[str, Any]]:
    """Each running node's CPU seconds, log write groups and context switches so far."""
    ids = c.running()
    got = await asyncio.gather(*(c.call(i, "stats") for i in ids))
    return dict(zip(ids, got))


def start_spies(c: ProcCluster, root: Path, w: int, args: argparse.Namespace) -> list[tuple[int, Any, str]]:
    """Start ``py-spy record`` (sampling, ``--nonblocking``: the nodes are never paused, so no
    election is provoked) on every node process for the middle of the ``w``-writer run."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        raise SystemExit("--spy needs py-spy (pip install 'openraft-py[bench]')")
    seconds = max(1, int(args.seconds * 0.6))
    out = []
    for i in c.running():
        path = str(root / f"spy-n{i}-{w}.txt")
        cmd = [exe, "record", "-p", str(c.nodes[i].proc.pid), "-d", str(seconds), "-r", "200", "--nonblocking",
               "--threads", "-f", "raw", "-o", path]
        out.append((i, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path))
    return out


def print_spy(path: str, lines: int, who: str) -> None:
    """Print, per thread of one node, the share of samples and the functions seen most
    often on top of the stack (own time) in a ``py-spy record -f raw`` file."""
    from collections import Counter

    threads: Counter[str] = Counter()
    own: dict[str, Counter[str]] = {}
    try:
        text = Path(path).read_text()
    except OSError as e:
        print(f"\n--- {who}: no py-spy samples ({e}) ---")
        return
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1]
        threads[thread] += int(n)
        top = frames[-1].rsplit("/", 1)[-1] if len(frames) > 1 else "?"
        own.setdefault(thread, Counter())[frames[-1].split(" (")[0] + " " + top.rstrip(")")] += int(n)
    total = sum(threads.values())
    print(f"\n--- {who}: py-spy, {total} samples (active threads only) ---")
    for thread, n in threads.most_common():
        print(f"  thread {thread}: {n * 100 / max(total, 1):.0f}%")
        for fn, k in own[thread].most_common(max(3, lines // 3)):
            print(f"    {k * 100 / n:5.1f}%  {fn}")


def print_profile(path: str, lines: int, who: str) -> None:
    """Print the top functions of a cProfile dump by own time and by cumulative time."""
    for key in ("tottime", "cumulative"):
        print(f"\n--- {who} profile, top {lines} by {key} ---")
        st = pstats.Stats(path)
        st.strip_dirs().sort_stats(key).print_stats(lines)


def report(res: dict[str, Any]) -> None:
    """Print the table and the targets."""
    fs, rtt = res["fsync_ms"], res["rtt_ms"]
    each = ", ".join(f"{x:.3f}" for x in res["fsync_ms_each"])
    print()
    print(f"log store sync={res['sync']}; raw fsync median {fs:.3f} ms (medians before / between / after the "
          f"runs: {each}); loopback round trip median {rtt * 1000:.0f} us")
    if "fsync3_ms" in res:
        print(f"(3 concurrent fsyncs on that disk, as the 3 nodes do in one round: median {res['fsync3_ms']:.3f} ms each)")
    print()
    print(f"medians of {res['repeat']} run(s) per writer count")
    print("| writers |  writes/s | p50 ms | p99 ms | p99.9 ms | CPU us/write |")
    print("|--------:|----------:|-------:|-------:|---------:|-------------:|")
    for r in res["points"]:
        p999 = "-" if r["p999"] is None else f"{r['p999']:.2f}"
        cpu = "-" if r.get("cpu_us") is None else f"{r['cpu_us']:.1f}"
        print(f"| {r['writers']:>7} | {r['writes_per_s']:>9,.0f} | {r['p50']:>6.2f} | {r['p99']:>6.2f} | {p999:>8} "
              f"| {cpu:>12} |")
    print()
    print("where the time goes: leader fsync groups/s (= replication rounds), writes per group, CPU per node "
          "and per write (the three nodes), each node's context switches per group")
    for r in res["runs"]:
        g = r["leader_groups"]
        cpu = " ".join(f"n{i} {v * 100:.0f}%" for i, v in sorted(r.get("cpu", {}).items()))
        per_write = "" if r.get("cpu_us") is None else f", {r['cpu_us']:.1f} us/write"
        print(f"  {r['writers']:>4} writers: {g / r['elapsed']:>7.0f} groups/s, {r['writes'] / max(g, 1):>6.1f} writes/group"
              + (f", CPU {cpu}{per_write}" if cpu else ""))
        if r.get("switches") and g:
            sw = " ".join(f"n{i} {v / g:.1f}+{iv / g:.1f}" for i, (v, iv) in sorted(r["switches"].items()))
            print(f"{'':>20}context switches per group, voluntary+involuntary: {sw}")
    print()
    by_w = {r["writers"]: r for r in res["points"]}
    if 1 in by_w:
        p50 = by_w[1]["p50"]
        bound = TCP_1W_P50_BOUND * (fs + rtt)
        print(f"target 1-writer p50 <= {TCP_1W_P50_BOUND:g} x (fsync + rtt) = {bound:.3f} ms: {p50:.3f} ms -> "
              f"{'met' if p50 <= bound else 'NOT met'} ({p50 / (fs + rtt):.2f} x)")


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--writers", default="1,64,256", help="comma-separated writer counts")
    p.add_argument("--seconds", type=float, default=3.0, help="seconds per writer count")
    p.add_argument("--repeat", type=int, default=1, help="runs per writer count; medians are reported")
    p.add_argument("--quick", action="store_true", help="1 s per writer count, fewer samples")
    p.add_argument("--no-fsync", action="store_true", help="log stores with sync=False")
    p.add_argument("--state-machine", choices=("rocks", "memory"), default="rocks",
                   help="each node's state machine: RocksStateMachine (default) or MemStateMachine")
    p.add_argument("--fsync-samples", type=int, default=300)
    p.add_argument("--rtt-samples", type=int, default=3000)
    p.add_argument("--profile", type=int, metavar="W", help="cProfile the leader and a follower during the W-writer run")
    p.add_argument("--spy", type=int, metavar="W",
                   help="sample every node with py-spy during the W-writer run (all threads, nodes never paused)")
    p.add_argument("--profile-lines", type=int, default=25)
    p.add_argument("--raft-config", default="{}", metavar="JSON",
                   help="extra Config fields for every node, e.g. '{\"max_apply_batch\": 32}'")
    p.add_argument("--keep", action="store_true", help="keep the cluster directory (with the profile)")
    p.add_argument("--dir", help="where to make the cluster directory (default: the system temp dir)")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    args.writers = checked_run_args(p, args.writers, args.seconds, args.repeat)
    if args.dir is not None and not os.path.isdir(args.dir):
        p.error(f"--dir {args.dir!r} is not a directory")
    if args.quick:
        args.seconds = min(args.seconds, 1.0)
        args.fsync_samples = min(args.fsync_samples, 100)
        args.rtt_samples = min(args.rtt_samples, 1000)
    try:
        import uvloop  # noqa: F401

        loop_name = "uvloop"
    except ImportError:
        loop_name = "asyncio"
    print(f"3 node processes on loopback, RocksDB log sync={not args.no_fsync}, {args.state_machine} state machine, "
          f"{loop_name} in the nodes, "
          f"{args.seconds:g} s per writer count, {os.cpu_count()} CPUs"
          + (f", Config {args.raft_config}" if args.raft_config != "{}" else ""))
    res = asyncio.run(run_bench(args))
    report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
