"""Cluster throughput benchmark: Openraft's minimal cluster benchmark, in Python.

Three nodes in one process, in-memory log store, the in-process router passing request
objects without serialization, a state machine that stores nothing, and election timeouts
of 1-2 s (so a stall of a busy machine starts no election mid-run). For each writer
count, ``W`` coroutines call ``client_write`` on the leader in a loop; the run reports
writes/s, the p50/p99/p99.9 write latency and the process's CPU time per write (each the
median of ``--repeat`` runs; every write is timed) for the compiled build and the
pure-Python build (each in its own subprocess, ``OPENRAFT_PY_NO_EXTENSIONS=1`` for the pure
one).

    python bench/cluster.py                      # both builds, 1/64/256 writers
    python bench/cluster.py --build c --writers 256 --seconds 3 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import checked_run_args, cpu_us_per_write, loop_name, percentiles_ms, run_loop, summarize


async def run_once(writers: int, seconds: float) -> dict[str, Any]:
    """One measurement: ``writers`` concurrent writers for ``seconds``; ``{"writes",
    "seconds", "writes_per_s", "p50", "p99", "p999", "cpu_us"}`` (latencies in ms;
    ``cpu_us``: this process's CPU time per write while the writers ran, the three nodes and
    the writers together)."""
    from openraft_py import Config, SnapshotPolicy
    from openraft_py.storage.memory import NoopStateMachine
    from openraft_py.testing import Cluster

    # Election timeouts of 1-2 s (heartbeats stay at 50 ms): the three nodes share one event
    # loop, and on a busy machine a stall of a few hundred ms would start an election mid-run.
    config = Config(snapshot_policy=SnapshotPolicy.never(), election_timeout_min=1000, election_timeout_max=2000)
    async with Cluster(config, state_machine=lambda disk: NoopStateMachine(disk)) as c:
        await c.start({1, 2, 3})
        leader = c.nodes[await c.wait_for_leader(timeout=10)]
        # Warm up.
        await asyncio.gather(*(leader.client_write(b"w") for _ in range(1000)))
        stop_at = 0.0
        lat: list[float] = []
        payload = b"x" * 16
        clock = time.perf_counter

        async def writer() -> None:
            write = leader.client_write
            record = lat.append
            while True:
                t0 = clock()
                if t0 >= stop_at:
                    return
                await write(payload)
                record(clock() - t0)

        cpu0 = time.process_time()
        start = clock()
        stop_at = start + seconds
        await asyncio.gather(*(writer() for _ in range(writers)))
        elapsed = clock() - start
        cpu = time.process_time() - cpu0
        await c.wait_applied(leader.metrics.last_log_index, timeout=30)
        return {"writes": len(lat), "seconds": elapsed, "writes_per_s": len(lat) / elapsed, **percentiles_ms(lat),
                "cpu_us": cpu_us_per_write(cpu, len(lat))}


def _fmt_cpu(cpu_us: float | None) -> str:
    """A point's or run's CPU us per write for the printed lines: one decimal, or ``-``."""
    return "-" if cpu_us is None else f"{cpu_us:.1f}"


def child_main(writers: list[int], seconds: float, repeat: int) -> None:
    """Run the measurements of one build and print each point as a JSON line (the point of
    ``bench.common.summarize`` plus ``compiled`` and ``loop``)."""
    import openraft_py._core as core

    for w in writers:
        runs = [run_loop(run_once(w, seconds)) for _ in range(repeat)]
        point = {**summarize(w, runs), "compiled": core.USING_EXTENSIONS, "loop": loop_name()}
        print(json.dumps(point), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--writers", type=int, nargs="+", default=[1, 64, 256])
    p.add_argument("--seconds", type=float, default=2.0, help="length of one run")
    p.add_argument("--repeat", type=int, default=3, help="runs per point; the median is reported")
    p.add_argument("--build", choices=["both", "c", "py"], default="both")
    p.add_argument("--json", help="also write the points to this file ({build: [point, ...]})")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.writers = checked_run_args(p, args.writers, args.seconds, args.repeat)
    if args.child:
        child_main(args.writers, args.seconds, args.repeat)
        return
    builds = ["c", "py"] if args.build == "both" else [args.build]
    results: dict[tuple[str, int], dict[str, Any]] = {}
    for b in builds:
        env = dict(os.environ)
        env.pop("OPENRAFT_PY_NO_EXTENSIONS", None)
        if b == "py":
            env["OPENRAFT_PY_NO_EXTENSIONS"] = "1"
        cmd = [sys.executable, __file__, "--child", "--seconds", str(args.seconds), "--repeat", str(args.repeat)]
        cmd += ["--writers", *map(str, args.writers)]
        with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                r = json.loads(line)
                if b == "c" and not r["compiled"]:
                    proc.kill()
                    sys.exit("the compiled kernels did not load: build the package first (make build)")
                results[(b, r["writers"])] = r
                print(f"  in-process {b:>2} {r['writers']:>4} writers: {r['writes_per_s']:>10,.0f} writes/s  "
                      f"p50 {r['p50']:.3f} ms  p99 {r['p99']:.3f} ms  CPU {_fmt_cpu(r.get('cpu_us'))} us/write", flush=True)
        if proc.returncode:
            sys.exit(f"the {b} build's benchmark failed (exit {proc.returncode})")
    print(f"3-node in-process cluster, in-memory store, no-op state machine; median of {args.repeat} x {args.seconds}s")
    header = f"{'writers':>8} " + " ".join(f"{b + ' writes/s':>16} {b + ' CPU us/write':>16}" for b in builds)
    if len(builds) == 2:
        header += f" {'c/py':>6}"
    print(header)
    for w in args.writers:
        row = f"{w:>8} " + " ".join(
            f"{results[(b, w)]['writes_per_s']:>16,.0f} {_fmt_cpu(results[(b, w)].get('cpu_us')):>16}" for b in builds)
        if len(builds) == 2:
            row += f" {results[('c', w)]['writes_per_s'] / results[('py', w)]['writes_per_s']:>6.2f}"
        print(row)
    loop = next(iter(results.values()))["loop"]
    print(f"event loop: {loop}")
    if args.json:
        out = {b: [results[(b, w)] for w in args.writers] for b in builds}
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
