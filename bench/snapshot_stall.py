"""Write latency while the leader builds a large snapshot (in-process cluster, MemStateMachine).

The leader's state machine holds ``--keys`` keys; one writer writes without pause while
``trigger.snapshot()`` builds. Reported: what one synchronous encode of that state costs
(what a build that does not yield would stall the loop for), the build's duration, and the
count, median, 99th percentile and maximum latency of the writes that finished during the
build. The figures are informational (nothing is asserted): the functional check, that writes
keep being acknowledged between the build's pieces, is
``tests/integration/snapshot/t95_snapshot_no_stall.py``.

    python bench/snapshot_stall.py [--keys 600000] [--runs 3]

``--rocks`` measures ``RocksStateMachine`` instead, alone (no cluster): it applies ``--keys``
keys, then builds a snapshot ``--runs`` times while a timer on the event loop wakes every
millisecond, and reports the build's duration and how late the timer woke during it. The
build runs in a worker thread; what the loop waits for there is the GIL (see
``GIL_SHARE_PAIRS`` in ``openraft_py.kv.rocks_state_machine``).

    python bench/snapshot_stall.py --rocks [--keys 300000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from openraft_py import Config, SnapshotPolicy
from openraft_py.storage.memory import (
    EMPTY_STORED_MEMBERSHIP,
    KvSet,
    _KvSnapshotData,
    _snap_encoder,
    encode_kv,
)
from openraft_py.testing import Cluster


def _uvloop_run() -> Any:
    """``uvloop.run`` when uvloop is installed (what the nodes use), else ``asyncio.run``."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def one_shot_encode(keys: int) -> float:
    """Seconds for one synchronous msgpack encode of a state of ``keys`` keys."""
    big = {f"key{i:08d}": "v" * 40 for i in range(keys)}
    t0 = time.perf_counter()
    _snap_encoder.encode(_KvSnapshotData(big, None, EMPTY_STORED_MEMBERSHIP, []))
    return time.perf_counter() - t0


async def one_run(keys: int, seed: int) -> tuple[float, list[float]]:
    """One build under a writer: ``(build seconds, latencies of the writes during it)``."""
    cfg = Config(
        election_timeout_min=1000,
        election_timeout_max=2000,
        heartbeat_interval=100,
        snapshot_policy=SnapshotPolicy.never(),
        max_in_snapshot_log_to_keep=100_000,
    )
    c = Cluster(cfg, seed=seed)
    try:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        raft = c.nodes[leader]
        await raft.client_write(encode_kv(KvSet("warm", "up")))
        disk = c.disks[leader]
        items = [(f"key{i:08d}", "v" * 40) for i in range(keys)]
        for lo in range(0, len(items), 20_000):  # in slices, so the leader keeps heartbeating
            disk.kv.update(items[lo : lo + 20_000])
            await asyncio.sleep(0.001)
        del items
        done: list[tuple[float, float]] = []  # (finished at, latency)
        stop = asyncio.Event()

        async def writer() -> None:
            i = 0
            while not stop.is_set():
                t = time.perf_counter()
                await raft.client_write(encode_kv(KvSet(f"w{i}", str(i))))
                now = time.perf_counter()
                done.append((now, now - t))
                i += 1

        w = asyncio.ensure_future(writer())
        while len(done) < 20 and not w.done():
            await asyncio.sleep(0.001)
        applied = raft.metrics.last_applied
        assert applied is not None
        t0 = time.perf_counter()
        await raft.trigger.snapshot()
        await raft.wait(60).snapshot(applied.index, "leader built its snapshot")
        t1 = time.perf_counter()
        stop.set()
        await w
        return t1 - t0, [lat for at, lat in done if t0 <= at <= t1]
    finally:
        await c.shutdown()


async def _ticker(late: list[float], done: asyncio.Event) -> None:
    """Sleep 1 ms at a time until ``done``, appending how late each wake-up was (seconds)."""
    while not done.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        late.append(time.perf_counter() - t - 0.001)


async def rocks_runs(keys: int, runs: int) -> list[tuple[float, list[float]]]:
    """``runs`` builds of a ``RocksStateMachine`` holding ``keys`` keys: ``(build seconds,
    lateness of each 1 ms timer wake-up during it)``."""
    from openraft_py.kv.rocks_state_machine import RocksStateMachine
    from openraft_py.types import Entry, LogId, Normal

    out: list[tuple[float, list[float]]] = []
    with tempfile.TemporaryDirectory(prefix="openraft-bench-stall-") as d:
        async with RocksStateMachine(os.path.join(d, "sm")) as sm:
            for lo in range(0, keys, 4096):
                hi = min(keys, lo + 4096)
                await sm.apply([Entry(LogId(1, i + 1), Normal(encode_kv(KvSet(f"key{i:09d}", "v" * 40))))
                                for i in range(lo, hi)])
            for _ in range(runs):
                late: list[float] = []
                built = asyncio.Event()
                tick = asyncio.ensure_future(_ticker(late, built))
                await asyncio.sleep(0.02)
                late.clear()
                t0 = time.perf_counter()
                snap = await sm.get_snapshot_builder().build_snapshot()
                took = time.perf_counter() - t0
                snap.data.close()
                built.set()
                await tick
                out.append((took, late))
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one line per run."""
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keys", type=int, default=None, help="keys in the state (600,000; 300,000 with --rocks)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--rocks", action="store_true", help="RocksStateMachine alone: the loop's lag during its builds")
    args = p.parse_args(argv)
    if args.rocks:
        keys = args.keys or 300_000
        run_loop = _uvloop_run()
        for run, (took, late) in enumerate(run_loop(rocks_runs(keys, args.runs))):
            late.sort()
            q = [late[min(len(late) - 1, int(len(late) * f))] * 1e3 for f in (0.5, 0.99)] if late else [0.0, 0.0]
            print(f"run {run}: RocksStateMachine build of {keys} keys {took * 1e3:.1f} ms "
                  f"({took / keys * 1e6:.2f} us/key); a 1 ms timer woke {len(late)} times during it "
                  f"({took / 0.001:.0f} without delays), late by median {q[0]:.2f} ms, p99 {q[1]:.2f} ms, "
                  f"max {(late[-1] if late else 0.0) * 1e3:.2f} ms")
        return 0
    args.keys = args.keys or 600_000
    print(f"one-shot encode of {args.keys} keys: {one_shot_encode(args.keys) * 1e3:.1f} ms")
    for run in range(args.runs):
        build, lats = asyncio.run(one_run(args.keys, seed=6 + run))
        if not lats:
            print(f"run {run}: build {build * 1e3:.1f} ms, NO write finished during the build")
            continue
        lats.sort()
        med, p99, worst = lats[len(lats) // 2], lats[min(len(lats) - 1, int(len(lats) * 0.99))], lats[-1]
        print(f"run {run}: build {build * 1e3:.1f} ms, {len(lats)} writes during it, latency median "
              f"{med * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms, max {worst * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
