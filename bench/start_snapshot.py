"""What a node's start costs with a large current snapshot (RocksDB stores, no cluster).

Builds, once, a ``RocksStateMachine`` holding about ``--mb`` MB of values (``--value-kb`` KiB
each) with its snapshot built, and a ``RocksLogStore`` purged up to that snapshot, in
``--dir`` (a temporary directory by default). Then, ``--runs`` times: opens both stores and
runs ``restore_state`` (what ``Raft.new`` runs before the node exists), and reports the wall
time and the process's CPU time (every thread's) of the open and of ``restore_state``. With
``--cold`` the snapshot file is dropped from the page cache before each start
(``posix_fadvise(POSIX_FADV_DONTNEED)`` on that file alone), as after a reboot.

    python bench/start_snapshot.py [--mb 512] [--runs 3] [--cold] [--dir DIR [--keep]]

A ``--dir`` that exists is used as it is (filled first when it holds no ``sm``) and kept;
one this run makes is removed at the end unless ``--keep``.

The figures are informational (nothing is asserted); the functional checks are the restore
tests in ``tests/storage`` and the conformance suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from openraft_py.core.restore import restore_state
from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.storage import KvSet, encode_kv
from openraft_py.storage.rocks import RocksLogStore
from openraft_py.types import BasicNode, Entry, LogId, Membership, Normal

APPLY_BATCH = 64
"""Entries per ``apply`` while filling the state machine."""


def _snapshot_file(sm_dir: str) -> str:
    """The current snapshot file under ``<sm_dir>/snapshots`` (the one ``.snap`` file)."""
    snaps = [n for n in os.listdir(os.path.join(sm_dir, "snapshots")) if n.endswith(".snap")]
    if len(snaps) != 1:
        raise SystemExit(f"expected one snapshot file under {sm_dir}/snapshots, found {snaps}")
    return os.path.join(sm_dir, "snapshots", snaps[0])


async def _fill(root: str, mb: int, value_kb: int) -> LogId:
    """Make the stores under ``root``; return the snapshot's last log id."""
    value = "v" * (value_kb * 1024)
    n = max(1, mb * 1024 // value_kb)
    sm = await RocksStateMachine.open(os.path.join(root, "sm"))
    log_store = await RocksLogStore.open(os.path.join(root, "log"))
    try:
        await sm.apply([Entry(LogId(1, 0), Membership([{1}], {1: BasicNode("127.0.0.1:1")}))])
        for lo in range(1, n + 1, APPLY_BATCH):
            hi = min(n + 1, lo + APPLY_BATCH)
            await sm.apply([Entry(LogId(1, i), Normal(encode_kv(KvSet(f"k{i:09d}", value)))) for i in range(lo, hi)])
        snap = await sm.get_snapshot_builder().build_snapshot()
        snap.data.close()
        last = snap.meta.last_log_id
        assert last is not None
        await log_store.purge(last)  # as a snapshot policy leaves it: nothing to scan
    finally:
        await sm.aclose()
        await log_store.aclose()
    return last


def _drop_from_cache(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


async def _start(root: str) -> tuple[float, float, float, float]:
    """One start: (open wall, open CPU, restore wall, restore CPU) in seconds."""
    w0, c0 = time.perf_counter(), time.process_time()
    sm = await RocksStateMachine.open(os.path.join(root, "sm"))
    log_store = await RocksLogStore.open(os.path.join(root, "log"))
    w1, c1 = time.perf_counter(), time.process_time()
    try:
        state, _cache = await restore_state(1, log_store, sm)
        w2, c2 = time.perf_counter(), time.process_time()
        assert state.snapshot is not None and state.applied == state.snapshot, (state.snapshot, state.applied)
    finally:
        await sm.aclose()
        await log_store.aclose()
    return w1 - w0, c1 - c0, w2 - w1, c2 - c1


async def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=512, help="the state's size in MB (default 512)")
    ap.add_argument("--value-kb", type=int, default=64, help="the size of one value in KiB (default 64)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="drop the snapshot file from the page cache before each start")
    ap.add_argument("--dir", help="where the stores are (made and filled when empty; default: a temporary directory)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the stores this run made afterwards (to start again without refilling); a --dir that "
                         "existed before is always kept")
    args = ap.parse_args()
    made = not (args.dir and os.path.exists(args.dir))
    root = args.dir or tempfile.mkdtemp(prefix="start-snapshot-")
    try:
        if not os.path.isdir(os.path.join(root, "sm")):
            t = time.perf_counter()
            last = await _fill(root, args.mb, args.value_kb)
            print(f"filled {root}: snapshot of {last} in {time.perf_counter() - t:.1f} s")
        path = _snapshot_file(os.path.join(root, "sm"))
        print(f"snapshot file: {os.path.getsize(path) / 1e6:.0f} MB ({'cold' if args.cold else 'warm'} page cache)")
        rows = []
        for run in range(args.runs):
            if args.cold:
                _drop_from_cache(path)
            row = await _start(root)
            rows.append(row)
            print(f"run {run + 1}: open {row[0] * 1000:.0f} ms (CPU {row[1] * 1000:.0f} ms), "
                  f"restore_state {row[2] * 1000:.0f} ms (CPU {row[3] * 1000:.0f} ms)")
        med = [statistics.median(col) * 1000 for col in zip(*rows)]
        print(f"median: open {med[0]:.0f} ms (CPU {med[1]:.0f} ms), restore_state {med[2]:.0f} ms (CPU {med[3]:.0f} ms)")
    finally:
        if made and not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
