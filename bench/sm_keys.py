"""What a ``RocksStateMachine`` apply costs per entry, by the order its keys arrive in.

RocksDB keeps a memtable as a skip list sorted by key. A key that sorts after the last one
inserted is found from where that insert ended; any other key is searched for from the top,
through memory the caches mostly no longer hold once the memtable is large. So the same
sets cost more when their keys land all over the key space. This script applies batches of
``--batch`` ``KvSet`` commands (values of 16 characters) to one fresh state machine per key
order, in turn, batch by batch (so the orders share the machine's noise):

- ``writers``: the keys ``bench/tcp.py`` writes, ``b{w}-{i}`` for ``w`` in ``range(batch)``:
  one key per writer per batch, each landing beside that writer's earlier keys;
- ``sorted``: the same keys, each batch sorted;
- ``sequential``: a zero-padded counter, every key after all earlier ones;
- ``random``: 16 random hex digits.

For every ``--segment`` batches it prints the median time of ``apply_without_responses`` (what
a follower runs) per entry for each order, and each order's ratio to ``sequential``.

    python bench/sm_keys.py [--batches 3000] [--batch 256] [--segment 1000] [--orders ...]
                            [--dir DIR] [--json F]

``docs/design/performance.md`` (twenty-sixth round) has what it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.storage.memory import KvSet, encode_kv
from openraft_py.types import Entry, LogId, Normal

ORDERS = ("writers", "sorted", "sequential", "random")
VALUE = "v" * 16
MAX_BATCH = 65_536
"""The largest ``--batch``: its entries are built in memory at once, per order."""


def keys_for(order: str, batch_no: int, batch: int, rng: random.Random) -> list[str]:
    """The keys of batch number ``batch_no`` in ``order``."""
    if order == "writers":
        return [f"b{w}-{batch_no}" for w in range(batch)]
    if order == "sorted":
        return sorted(f"b{w}-{batch_no}" for w in range(batch))
    if order == "sequential":
        return [f"{batch_no * batch + w:016d}" for w in range(batch)]
    if order == "random":
        return [f"{rng.getrandbits(64):016x}" for _ in range(batch)]
    raise ValueError(f"unknown key order {order!r}")


async def run(orders: list[str], batches: int, batch: int, segment: int, where: str,
              report: Callable[[str], None] = print) -> dict[str, Any]:
    """Apply ``batches`` batches per order; return the per-segment medians (us per entry)."""
    dirs = {o: tempfile.mkdtemp(prefix=f"sm-{o}-", dir=where) for o in orders}
    sms = {o: await RocksStateMachine.open(d) for o, d in dirs.items()}
    rng = random.Random(0)
    times: dict[str, list[float]] = {o: [] for o in orders}
    segments: list[dict[str, Any]] = []
    index = 0
    try:
        for b in range(batches):
            turn = orders if b % 2 == 0 else orders[::-1]
            for o in turn:
                entries = []
                for key in keys_for(o, b, batch, rng):
                    index += 1
                    entries.append(Entry(LogId(1, index), Normal(encode_kv(KvSet(key, VALUE)))))
                t = time.perf_counter()
                await sms[o].apply_without_responses(entries)
                times[o].append(time.perf_counter() - t)
            if (b + 1) % segment == 0 or b + 1 == batches:
                start = (b // segment) * segment
                med = {o: statistics.median(times[o][start:b + 1]) / batch * 1e6 for o in orders}
                segments.append({"batches": [start + 1, b + 1], "keys_per_order": (b + 1) * batch, "us_per_entry": med})
                base = med.get("sequential")
                parts = [f"{o} {med[o]:.2f}" + (f" ({med[o] / base:.1f}x)" if base and o != "sequential" else "")
                         for o in orders]
                report(f"batches {start + 1}-{b + 1} ({(b + 1) * batch:,} keys each): us per entry: " + ", ".join(parts))
    finally:
        for sm in sms.values():
            await sm.aclose()
        for d in dirs.values():
            shutil.rmtree(d, ignore_errors=True)
    return {"batch": batch, "batches": batches, "orders": orders, "segments": segments}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=3000, help="batches applied per key order")
    p.add_argument("--batch", type=int, default=256, help="entries per batch (the writers of bench/tcp.py)")
    p.add_argument("--segment", type=int, default=1000, help="batches per reported median")
    p.add_argument("--orders", default=",".join(ORDERS), help=f"comma-separated, of {', '.join(ORDERS)}")
    p.add_argument("--dir", default=None, help="where to make the databases (default: the system temp dir)")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    if args.batches < 1 or args.batch < 1 or args.segment < 1:
        p.error("--batches, --batch and --segment must be at least 1")
    if args.batch > MAX_BATCH:
        p.error(f"--batch must be at most {MAX_BATCH}, got {args.batch}")
    orders = [o.strip() for o in args.orders.split(",") if o.strip()]
    bad = [o for o in orders if o not in ORDERS]
    if not orders or bad or len(set(orders)) != len(orders):
        p.error(f"--orders needs distinct names of {', '.join(ORDERS)}, got {args.orders!r}")
    where = args.dir if args.dir is not None else tempfile.gettempdir()
    if not os.path.isdir(where):
        p.error(f"--dir {where!r} is not a directory")
    print(f"{args.batches} batches of {args.batch} sets per key order, alternating, state machines under {where}")
    result = asyncio.run(run(orders, args.batches, args.batch, args.segment, where))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
