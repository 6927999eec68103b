"""Cluster throughput benchmark: Openraft's minimal cluster benchmark, in Python.

Three nodes in one process, in-memory log store, the in-process router passing request
objects without serialization, and a state machine that stores nothing. For each writer
count, ``W`` coroutines call ``client_write`` on the leader in a loop; the run reports
writes/s (median of ``--repeat`` runs) for the compiled build and the pure-Python build
(each in its own subprocess, ``OPENRAFT_PY_NO_EXTENSIONS=1`` for the pure one).

    python bench/cluster.py                      # both builds, 1/64/256 writers
    python bench/cluster.py --build c --writers 256 --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time


def _loop_factory() -> str:
    try:
        import uvloop  # noqa: F401

        return "uvloop"
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return "asyncio"


async def run_once(writers: int, seconds: float) -> dict[str, float]:
    """One measurement: ``writers`` concurrent writers for ``seconds``."""
    from openraft_py import Config, SnapshotPolicy
    from openraft_py.storage.memory import NoopStateMachine
    from openraft_py.testing import Cluster

    config = Config(snapshot_policy=SnapshotPolicy.never())
    async with Cluster(config, state_machine=lambda disk: NoopStateMachine(disk)) as c:
        await c.start({1, 2, 3})
        leader = c.nodes[await c.wait_for_leader(timeout=10)]
        # Warm up.
        await asyncio.gather(*(leader.client_write(b"w") for _ in range(1000)))
        stop_at = 0.0
        counts = [0] * writers
        payload = b"x" * 16

        async def writer(k: int) -> None:
            n = 0
            write = leader.client_write
            while time.perf_counter() < stop_at:
                for _ in range(64):
                    await write(payload)
                n += 64
            counts[k] = n

        start = time.perf_counter()
        stop_at = start + seconds
        await asyncio.gather(*(writer(k) for k in range(writers)))
        elapsed = time.perf_counter() - start
        total = sum(counts)
        await c.wait_applied(leader.metrics.last_log_index, timeout=30)
        return {"writes": total, "seconds": elapsed, "writes_per_s": total / elapsed}


def child_main(writers: list[int], seconds: float, repeat: int) -> None:
    """Run the measurements of one build and print them as JSON lines."""
    import openraft_py._core as core

    loop_name = _loop_factory()
    for w in writers:
        rates = []
        for _ in range(repeat):
            if loop_name == "uvloop":
                import uvloop

                r = uvloop.run(run_once(w, seconds))
            else:
                r = asyncio.run(run_once(w, seconds))
            rates.append(r["writes_per_s"])
        print(
            json.dumps(
                {
                    "writers": w,
                    "compiled": core.USING_EXTENSIONS,
                    "loop": loop_name,
                    "median": statistics.median(rates),
                    "runs": rates,
                }
            ),
            flush=True,
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--writers", type=int, nargs="+", default=[1, 64, 256])
    p.add_argument("--seconds", type=float, default=2.0, help="length of one run")
    p.add_argument("--repeat", type=int, default=3, help="runs per point; the median is reported")
    p.add_argument("--build", choices=["both", "c", "py"], default="both")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child_main(args.writers, args.seconds, args.repeat)
        return
    builds = ["c", "py"] if args.build == "both" else [args.build]
    results: dict[tuple[str, int], dict[str, object]] = {}
    for b in builds:
        env = dict(os.environ)
        env.pop("OPENRAFT_PY_NO_EXTENSIONS", None)
        if b == "py":
            env["OPENRAFT_PY_NO_EXTENSIONS"] = "1"
        cmd = [sys.executable, __file__, "--child", "--seconds", str(args.seconds), "--repeat", str(args.repeat)]
        cmd += ["--writers", *map(str, args.writers)]
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            r = json.loads(line)
            if b == "c" and not r["compiled"]:
                sys.exit("the compiled kernels did not load: build the package first (make build)")
            results[(b, r["writers"])] = r
    print(f"3-node in-process cluster, in-memory store, no-op state machine; median of {args.repeat} x {args.seconds}s")
    header = f"{'writers':>8} " + " ".join(f"{b + ' writes/s':>16}" for b in builds)
    if len(builds) == 2:
        header += f" {'c/py':>6}"
    print(header)
    for w in args.writers:
        row = f"{w:>8} " + " ".join(f"{results[(b, w)]['median']:>16,.0f}" for b in builds)
        if len(builds) == 2:
            row += f" {results[('c', w)]['median'] / results[('py', w)]['median']:>6.2f}"
        print(row)
    loop = next(iter(results.values()))["loop"]
    print(f"event loop: {loop}")


if __name__ == "__main__":
    main()
