"""RocksLogStore append throughput (sync=True) against raw rocksdict WriteBatch + sync, and
the event-loop lag while appending at full speed.

For each batch size, ``WRITERS`` coroutines each append batches and await their IOFlushed
callbacks (so concurrent appends share fsyncs: group commit). The raw baseline writes the same
encoded batches with one ``WriteBatch`` + ``sync=True`` write each, sequentially, in the same
run. A ticker coroutine sleeps 1 ms in a loop and records how late it wakes (the lag).

    python bench/storage.py [--seconds 2] [--payload 100] [--app-tuning]

``--app-tuning`` runs the store again with two process-wide, application-level knobs the
library never sets itself: ``sys.setswitchinterval(0.001)`` and ``gc.freeze()`` after start-up
plus ``gc.set_threshold(50_000, 20, 100)`` (fewer, shorter full collections while hundreds of
thousands of ``Entry`` objects per second come and go).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rocksdict import Options, Rdict, WriteBatch, WriteOptions

from openraft_py._core import KIND_NORMAL, encode_entries, encode_index_key
from openraft_py.storage import IOFlushed
from openraft_py.storage.rocks import RocksLogStore
from openraft_py.types import Entry, LogId, Normal

WRITERS = 8


def raw_rate(path: str, batch: int, payload: bytes, seconds: float) -> float:
    """Entries/s of sequential WriteBatch + sync writes on a bare rocksdict DB."""
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    db = Rdict(path, opts)
    wo = WriteOptions()
    wo.sync = True
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        blobs = encode_entries([(1, i, KIND_NORMAL, payload) for i in range(n, n + batch)])
        wb = WriteBatch(raw_mode=True)
        for i, blob in zip(range(n, n + batch), blobs):
            wb.put(encode_index_key(i), blob)
        db.write(wb, wo)
        n += batch
    dt = time.perf_counter() - t0
    db.close()
    del db
    return n / dt


async def store_rate(path: str, batch: int, payload: bytes, seconds: float) -> tuple[float, list[float], int, list[float]]:
    """Entries/s through RocksLogStore with WRITERS concurrent appenders; the ticker's lags."""
    store = RocksLogStore(path)
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    in_append: list[float] = []  # loop time spent inside store.append (the store's share)
    state = {"next": 0, "stop": False, "done": 0}

    async def ticker() -> None:
        while not state["stop"]:
            t0 = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - t0 - 0.001)

    async def writer() -> None:
        while not state["stop"]:
            lo = state["next"]
            state["next"] = lo + batch
            entries = [Entry(LogId(1, i), Normal(payload)) for i in range(lo, lo + batch)]
            fut: asyncio.Future[None] = loop.create_future()
            await asyncio.sleep(0)  # building the batch is the client's work: its own loop step
            t_in = time.perf_counter()
            await store.append(entries, IOFlushed(lambda e, f=fut: f.set_result(None), loop))
            in_append.append(time.perf_counter() - t_in)
            await fut
            state["done"] += batch

    tick = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(writer()) for _ in range(WRITERS)]
    await asyncio.sleep(seconds)
    state["stop"] = True
    await asyncio.gather(*tasks)
    dt = time.perf_counter() - t0
    await tick
    groups = store.groups_written
    await store.aclose()
    return state["done"] / dt, lags, groups, in_append


def p99(xs: list[float]) -> float:
    return pct(xs, 0.99)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))] if xs else 0.0


def run_table(root: str, tag: str, payload: bytes, seconds: float) -> list[tuple]:
    rows = []
    for batch in (1, 64, 1024):
        raw = raw_rate(os.path.join(root, f"raw{tag}{batch}"), batch, payload, seconds)
        rate, lags, groups, in_append = asyncio.run(store_rate(os.path.join(root, f"st{tag}{batch}"), batch, payload, seconds))
        rows.append((batch, rate, raw, rate / raw, pct(lags, 0.5) * 1e3, p99(lags) * 1e3, max(lags) * 1e3 if lags else 0.0, groups, p99(in_append) * 1e3))
    return rows


def print_table(title: str, rows: list[tuple]) -> None:
    print(title)
    print(f"{'batch':>6} {'store entries/s':>16} {'raw entries/s':>14} {'ratio':>7} {'lag p50 ms':>11} {'lag p99 ms':>11} {'lag max ms':>11} {'fsync groups':>13} {'append() p99 ms':>16}")
    for batch, rate, raw, ratio, lp50, lp99, lmax, groups, ap99 in rows:
        print(f"{batch:>6} {rate:>16,.0f} {raw:>14,.0f} {ratio:>6.0%} {lp50:>11.2f} {lp99:>11.2f} {lmax:>11.2f} {groups:>13} {ap99:>16.2f}")
    bad = [r for r in rows if r[0] >= 64 and r[3] < 0.7] + [r for r in rows if r[5] >= 5.0]
    if bad:
        print(f"below target (ratio >= 70% at 64/1024, lag p99 < 5 ms): batches {sorted({r[0] for r in bad})}")


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--payload", type=int, default=100)
    ap.add_argument("--app-tuning", action="store_true", help="also run with switchinterval 1 ms and gc.freeze()")
    args = ap.parse_args()
    payload = b"x" * args.payload
    root = tempfile.mkdtemp(prefix="openraft-bench-storage-")
    try:
        probe = RocksLogStore(os.path.join(root, "probe"))
        mode = probe.fsync_mode
        probe.close()
        head = f"RocksLogStore append, sync=True, fsync_mode={mode}, payload {args.payload} B, {WRITERS} concurrent appenders, {args.seconds:.0f} s each"
        print_table(head + " (interpreter defaults)", run_table(root, "d", payload, args.seconds))
        if args.app_tuning:
            sys.setswitchinterval(0.001)
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 20, 100)
            print_table(head + " (app tuning: switchinterval 1 ms, gc.freeze, gc threshold 50000)", run_table(root, "t", payload, args.seconds))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
