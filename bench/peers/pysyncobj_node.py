"""One PySyncObj node in its own process, driven over stdin/stdout by
``bench/peers/pysyncobj_bench.py``.

The node replicates a key-value dict (``KvStore.set``) with PySyncObj's defaults (its own
ticker thread) except that log compaction is off, as it is on the openraft-py side of the
comparison, and the ``--conf`` overrides (``SyncObjConf`` fields as JSON). ``--journal PATH`` uses PySyncObj's file journal there
(an mmap'ed file; PySyncObj has no fsync option); without it, its in-memory journal.

Control protocol, one JSON object per line: the node prints ``{"event": "ready"}`` once its
SyncObj is built; then it answers each request line on stdin, in order:

- ``{"op": "status"}`` -> ``{"leader": bool (this node is the leader), "leader_addr": str or
  null (the leader it knows)}``
- ``{"op": "bulk", "writers": W, "seconds": S, "prefix": P}``: ``W`` asyncio writers in this
  process (uvloop) each, in a loop until ``S`` seconds have passed, call ``set(key, value,
  callback=...)`` and await its result, one write in flight per writer; key
  ``f"{P}{w}-{i}"``, value ``"v:" + key`` (the key and value ``bench/tcp.py`` writes). ->
  ``{"acked": writes acknowledged, "elapsed", "errors": [...], "writes_per_s", "p50",
  "p99", "p999"}`` (latencies in ms)
- ``{"op": "size"}`` -> ``{"size": keys in this node's dict}`` (every write sets a new key,
  so it counts the writes this node has applied)
- ``{"op": "stats"}`` -> ``{"cpu": CPU seconds of this process so far (every thread)}``
- ``{"op": "shutdown"}``: the node stops and exits 0 (it does as well when stdin closes).

The process is killed with its parent (``PR_SET_PDEATHSIG``) so none outlives a crashed run.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

from bench.common import percentiles_ms, run_loop


class KvStore(SyncObj):
    """A replicated dict with one command, ``set``."""

    def __init__(self, self_addr: str, partners: list[str], conf: SyncObjConf) -> None:
        super().__init__(self_addr, partners, conf)
        self._data: dict[str, str] = {}

    @replicated
    def set(self, key: str, value: str) -> None:
        """Set ``key`` to ``value`` on every node (applied in log order)."""
        self._data[key] = value

    def size(self) -> int:
        """How many keys this node has applied so far."""
        return len(self._data)


def make_conf(journal: str | None, overrides: dict[str, Any]) -> SyncObjConf:
    """PySyncObj's defaults with log compaction off, the file journal at ``journal`` if given,
    and then ``overrides`` (``SyncObjConf`` keyword arguments)."""
    return SyncObjConf(
        **{"journalFile": journal, "logCompactionMinEntries": 2**62, "logCompactionMinTime": 1e9, **overrides}
    )


async def bulk(node: KvStore, writers: int, seconds: float, prefix: str) -> dict[str, Any]:
    """Run ``writers`` writers for ``seconds`` (see the module docstring)."""
    loop = asyncio.get_running_loop()
    lat: list[float] = []
    errors: list[str] = []
    clock = time.perf_counter
    deadline = clock() + seconds

    def resolve(fut: asyncio.Future[Any], err: Any) -> None:
        if not fut.done():
            fut.set_result(err)

    async def writer(w: int) -> None:
        i = 0
        record = lat.append
        while True:
            t0 = clock()
            if t0 >= deadline:
                return
            key = f"{prefix}{w}-{i}"
            fut: asyncio.Future[Any] = loop.create_future()
            # The callback runs on PySyncObj's ticker thread: hand the outcome to this loop.
            node.set(key, "v:" + key, callback=lambda _res, err, f=fut: loop.call_soon_threadsafe(resolve, f, err))
            err = await fut
            if err != FAIL_REASON.SUCCESS:
                errors.append(f"writer {w} at {i}: FAIL_REASON {err}")
                return
            record(clock() - t0)
            i += 1

    start = clock()
    try:
        await asyncio.wait_for(asyncio.gather(*(writer(w) for w in range(writers))), seconds + 30.0)
    except TimeoutError:
        errors.append(f"writes did not finish within {seconds + 30.0:g} s")
    elapsed = clock() - start
    return {"acked": len(lat), "elapsed": elapsed, "errors": errors[:20], "writes_per_s": len(lat) / elapsed,
            **percentiles_ms(lat)}


def _die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux; elsewhere a no-op)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def main(argv: list[str] | None = None) -> int:
    """Run the node until ``shutdown`` or the end of stdin."""
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--self", dest="self_addr", required=True, help="HOST:PORT of this node")
    p.add_argument("--partners", required=True, help="comma-separated HOST:PORT of the other nodes")
    p.add_argument("--journal", help="file journal path (default: the in-memory journal)")
    p.add_argument("--conf", default="{}", metavar="JSON", help="SyncObjConf keyword arguments")
    args = p.parse_args(argv)
    _die_with_parent()
    node = KvStore(args.self_addr, args.partners.split(","), make_conf(args.journal, json.loads(args.conf)))

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    reply({"event": "ready"})
    try:
        for line in sys.stdin:
            req = json.loads(line)
            op = req.get("op")
            if op == "status":
                leader = node._getLeader()
                reply({"leader": node._isLeader(), "leader_addr": None if leader is None else str(leader)})
            elif op == "size":
                reply({"size": node.size()})
            elif op == "stats":
                reply({"cpu": time.process_time()})  # this process's CPU seconds, every thread
            elif op == "bulk":
                reply(run_loop(bulk(node, int(req["writers"]), float(req["seconds"]), str(req.get("prefix", "k")))))
            elif op == "shutdown":
                reply({"ok": True})
                break
            else:
                reply({"error": f"unknown op {op!r}"})
    finally:
        node.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
