"""One Raft node in its own process, driven over stdin/stdout: the process-level test and
benchmark harness (not the production server: that is ``openraft-py serve``, DESIGN §8).

The node runs a ``RocksLogStore`` + ``RocksStateMachine`` under ``--data-dir`` (or, with
``--state-machine memory``, a ``MemStateMachine`` in place of the latter), a ``TcpServer`` on
``--raft-addr`` and a ``TcpNetworkFactory`` for its peers::

    python -m openraft_py.testing.proc.node --id 1 --raft-addr 127.0.0.1:21001 \\
        --data-dir /tmp/n1 --peers 1=127.0.0.1:21001,2=127.0.0.1:21002,3=127.0.0.1:21003
    python -m openraft_py.testing.proc.node --config node1.json   # the same keys, as JSON

Options (JSON keys in brackets): ``--id`` [id], ``--raft-addr`` [raft_addr], ``--data-dir``
[data_dir], ``--peers`` [peers: ``{"1": "h:p", ...}``, the default members of
``initialize``], ``--cluster-name`` [cluster_name], ``--raft-config`` [raft_config: ``Config``
fields as a JSON object], ``--no-sync`` [sync: false; the log store's ``sync=False``],
``--no-events`` [events: false], ``--state-machine`` [state_machine: ``rocks``, the default,
or ``memory``]. Restarting the node with the same options brings it back from its data
directory. The ``memory`` state machine (what PySyncObj keeps: a dict, no disk; the benchmarks'
like-for-like comparison) starts empty on every start and Raft re-applies the log into it, so
a node with a purged log refuses to start with it (nothing could rebuild the purged part).

Control protocol, one JSON object per line. The parent writes requests to stdin::

    {"id": 7, "op": "write", "key": "k", "value": "v"}

and the node answers each on stdout, in any order (requests run concurrently)::

    {"id": 7, "ok": true, "result": {"index": 12}}
    {"id": 7, "ok": false, "error": "ForwardToLeader", "message": "...", "leader": 2}

Lines without ``id`` are events: ``{"event": "ready", "id_": N, "pid": P, "addr": "h:p",
"extensions": bool}`` once the server listens (``extensions``: the compiled kernels run), and (unless ``--no-events``) ``{"event": "leader", "term": T,
"t": MONO}`` each time this node becomes leader of a new term, where ``MONO`` is
``time.monotonic()`` (system-wide on Linux, so comparable with the parent's clock).

Operations (``op`` and its fields; the result):

- ``initialize`` [``members``: ``{"id": "h:p"}``, default ``--peers``]
- ``write`` ``key``, ``value`` -> ``{"index"}``
- ``bulk`` ``writers``, and ``count`` (total writes, split over the writers) or ``seconds``;
  [``prefix``, ``value_size``, ``latencies``: bool, ``profile``: a path for cProfile
  stats]. Writer ``w`` writes keys ``f"{prefix}{w}-{i}"`` for ``i = 0, 1, ...`` in order,
  each with ``value_of(key, value_size)``, awaiting every ``client_write``, and stops at its
  first error. -> ``{"acked": [per writer], "elapsed", "errors": [...], "log_groups": the
  log store's write groups (one fsync each) meanwhile, "cpu": this process's CPU seconds
  meanwhile (all threads), "latency_ms": {"p50", "p90", "p99", "max", "mean"} when asked}``. The acknowledged writes are exactly
  keys ``i < acked[w]`` of each writer.
- ``metrics`` -> see ``metrics_dict``
- ``stats`` -> ``{"cpu": CPU seconds of this process so far (all threads), "log_groups": the
  log store's write groups so far (one fsync each with sync on), "switches": [voluntary,
  involuntary] context switches of this process so far (all threads; ``getrusage``)}``
- ``read`` ``keys`` -> ``{"values": [value or null]}``; ``dump`` [``prefix``] -> ``{"data":
  {key: value}}`` (the applied state, a full scan)
- ``wait`` ``until`` (``applied`` / ``log`` / ``snapshot`` / ``purged`` with ``index``;
  ``leader`` with optional ``leader``; ``voters`` with ``ids``), ``timeout`` -> metrics
- ``add_learner`` ``node``, ``addr`` [``blocking``] -> ``{"index"}``
- ``change_membership`` ``members`` [``retain``, ``allow_lagging``] -> ``{"index"}``
- ``trigger`` ``action`` (``elect`` / ``heartbeat`` / ``snapshot`` / ``purge_log`` with
  ``upto`` / ``transfer_leader`` with ``to``)
- ``profile`` ``seconds``, ``path``: runs cProfile over the whole node for ``seconds`` and
  writes its stats to ``path`` (one profile at a time per process)
- ``shutdown``: answers, then stops the server, the node and the stores and exits 0.

The node also shuts down gracefully when stdin closes (its parent went away).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import msgspec

from ...config import Config
from ...errors import ForwardToLeader
from ...kv.rocks_state_machine import RocksStateMachine
from ...metrics import RaftMetrics
from ...raft import Raft
from ...storage.memory import KvSet, MemStateMachine, encode_kv
from ...storage.rocks import RocksLogStore
from ...types import BasicNode, ServerState

__all__ = ["NodeOptions", "metrics_dict", "value_of", "parse_peers", "main"]


class NodeOptions(msgspec.Struct, kw_only=True):
    """What one node process runs (the command line or the ``--config`` JSON)."""

    id: int
    raft_addr: str
    data_dir: str
    peers: dict[int, str] = {}
    cluster_name: str = "openraft-py-proc"
    raft_config: dict[str, Any] = {}
    sync: bool = True
    events: bool = True
    state_machine: Literal["rocks", "memory"] = "rocks"


def value_of(key: str, size: int = 0) -> str:
    """The value the ``bulk`` operation writes under ``key``: derived from the key so a
    checker can verify it without being sent every value; padded to ``size`` characters."""
    v = "v:" + key
    return v + "." * (size - len(v)) if size > len(v) else v


def parse_peers(text: str) -> dict[int, str]:
    """``"1=h:p,2=h:p"`` -> ``{1: "h:p", 2: "h:p"}``. Raises ``ValueError`` on bad input."""
    out: dict[int, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        nid, sep, addr = part.partition("=")
        if not sep or not addr:
            raise ValueError(f"bad peer {part!r}: expected ID=HOST:PORT")
        out[int(nid)] = addr
    return out


def _split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"bad address {addr!r}: expected HOST:PORT")
    return host, int(port)


def metrics_dict(raft: Raft) -> dict[str, Any]:
    """The node's metrics as JSON-able values: ``id``, ``state`` (``"Leader"`` ...), ``term``,
    ``leader``, ``last_log_index``, ``committed`` / ``applied`` / ``snapshot`` / ``purged``
    (indexes, -1 for none), ``voters``, ``learners``, ``joint``, ``running``, ``error``."""
    m = raft.metrics
    mem = m.membership_config.membership

    def idx(log_id: Any) -> int:
        return -1 if log_id is None else int(log_id.index)

    return {
        "id": m.id,
        "state": m.state.value,
        "term": m.current_term,
        "leader": m.current_leader,
        "last_log_index": m.last_log_index,
        "committed": idx(m.committed),
        "applied": idx(m.last_applied),
        "snapshot": idx(m.snapshot),
        "purged": idx(m.purged),
        "voters": sorted(mem.voter_ids()),
        "learners": sorted(mem.learner_ids()),
        "joint": mem.is_joint(),
        "running": m.running,
        "error": m.error,
    }


def _leads_after(term: int) -> Callable[[RaftMetrics], bool]:
    """A metrics predicate: the node leads, in a term after ``term``."""
    return lambda m: m.state == ServerState.LEADER and m.current_term > term


def _percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    s = sorted(samples)
    n = len(s)

    def q(p: float) -> float:
        return s[min(n - 1, int(p * n))] * 1000.0

    return {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999), "max": s[-1] * 1000.0,
            "mean": statistics.fmean(s) * 1000.0, "n": n}


class Node:
    """The running node and its control channel (see the module docstring)."""

    def __init__(self, opts: NodeOptions) -> None:
        self.opts = opts
        self.raft: Raft = None  # type: ignore[assignment]
        self.server: Any = None
        self.factory: Any = None
        self.log_store: RocksLogStore | None = None
        self.sm: RocksStateMachine | MemStateMachine | None = None
        self._out = sys.stdout
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    def emit(self, obj: dict[str, Any]) -> None:
        """Write one JSON line to the parent."""
        self._out.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self._out.flush()

    async def start(self) -> None:
        """Open the stores, start Raft and the TCP server."""
        from ...network.tcp import TcpNetworkFactory, TcpServer

        o = self.opts
        data = Path(o.data_dir)
        data.mkdir(parents=True, exist_ok=True)
        config = msgspec.convert({**o.raft_config, "cluster_name": o.cluster_name}, Config)
        self.log_store = await RocksLogStore.open(data / "log", sync=o.sync)
        if o.state_machine == "memory":
            purged = (await self.log_store.get_log_state()).last_purged_log_id
            if purged is not None:
                raise SystemExit(
                    f"n{o.id}: the log is purged up to {purged}: a memory state machine, empty at start, cannot be "
                    "rebuilt from it (run this data directory with --state-machine rocks)"
                )
            self.sm = MemStateMachine(record_applied=False)
        else:
            self.sm = await RocksStateMachine.open(data / "sm")
        self.factory = TcpNetworkFactory(o.id, o.cluster_name)
        self.raft = await Raft.new(o.id, config, self.factory, self.log_store, self.sm)
        host, port = _split_addr(o.raft_addr)
        self.server = await TcpServer.start(self.raft, host, port, cluster_name=o.cluster_name)
        if o.events:
            self._spawn(self._watch_leader())
        from ..._core import USING_EXTENSIONS

        self.emit({"event": "ready", "id_": o.id, "pid": os.getpid(), "addr": o.raft_addr,
                   "extensions": USING_EXTENSIONS})

    async def stop(self) -> None:
        """Stop the server, the node and the stores (each step bounded)."""
        for t in list(self._tasks):
            t.cancel()
        if self.server is not None:
            try:
                async with asyncio.timeout(5.0):
                    await self.server.close()
            except Exception as e:  # noqa: BLE001 - keep stopping the rest
                print(f"server close: {e!r}", file=sys.stderr)
        if self.raft is not None:
            async with asyncio.timeout(10.0):
                await self.raft.shutdown()
        if self.factory is not None:
            await self.factory.close()
        if self.log_store is not None:
            await self.log_store.aclose()
        if isinstance(self.sm, RocksStateMachine):  # a MemStateMachine holds nothing to close
            await self.sm.aclose()

    def _spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _watch_leader(self) -> None:
        last_term = -1
        while True:
            m = await self.raft.wait(None).metrics(_leads_after(last_term), "leader")
            last_term = m.current_term
            self.emit({"event": "leader", "term": last_term, "t": time.monotonic()})

    # -- the control channel -------------------------------------------------------------------

    async def serve_control(self) -> None:
        """Read requests from stdin until EOF or ``shutdown``."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        eof = asyncio.ensure_future(reader.readline())
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            while True:
                done, _ = await asyncio.wait({eof, stop}, return_when=asyncio.FIRST_COMPLETED)
                if stop in done:
                    return
                line = eof.result()
                if not line:
                    return  # the parent went away
                eof = asyncio.ensure_future(reader.readline())
                self._spawn(self._handle(line))
        finally:
            eof.cancel()
            stop.cancel()

    async def _handle(self, line: bytes) -> None:
        rid = None
        try:
            req = json.loads(line)
            rid = req.get("id")
            op = req.get("op")
            fn = getattr(self, f"op_{op}", None)
            if fn is None:
                raise ValueError(f"unknown op {op!r}")
            result = await fn(req)
            self.emit({"id": rid, "ok": True, "result": result})
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - every failure is an answer to the parent
            ans: dict[str, Any] = {"id": rid, "ok": False, "error": type(e).__name__, "message": str(e)}
            if isinstance(e, ForwardToLeader):
                ans["leader"] = e.leader_id
            self.emit(ans)

    # -- operations ------------------------------------------------------------------------------

    async def op_initialize(self, req: dict[str, Any]) -> None:
        members = req.get("members") or {str(k): v for k, v in self.opts.peers.items()}
        await self.raft.initialize({int(k): BasicNode(v) for k, v in members.items()})

    async def op_write(self, req: dict[str, Any]) -> dict[str, Any]:
        resp = await self.raft.client_write(encode_kv(KvSet(req["key"], req["value"])))
        return {"index": resp.log_id.index}

    async def op_bulk(self, req: dict[str, Any]) -> dict[str, Any]:
        writers = int(req["writers"])
        count = req.get("count")
        seconds = req.get("seconds")
        if writers < 1 or (count is None) == (seconds is None):
            raise ValueError("bulk needs writers >= 1 and exactly one of count, seconds")
        prefix = str(req.get("prefix", "k"))
        size = int(req.get("value_size", 0))
        padded = size > 0  # whether any value may need ``value_of``'s padding
        want_lat = bool(req.get("latencies", False))
        quota = [0] * writers
        if count is not None:
            base, extra = divmod(int(count), writers)
            quota = [base + (1 if w < extra else 0) for w in range(writers)]
        acked = [0] * writers
        errors: list[str] = []
        lat: list[float] = []
        write = self.raft.client_write
        clock = time.perf_counter
        deadline = 0.0 if seconds is None else clock() + float(seconds)

        async def writer(w: int) -> None:
            i = 0
            limit = quota[w]
            kp = f"{prefix}{w}-"
            try:
                while (i < limit) if seconds is None else (clock() < deadline):
                    # The key and ``value_of(key, size)``, its common case inline: PySyncObj's
                    # driver (``bench/peers/pysyncobj_node.py``) makes its key with an f-string
                    # and writes ``"v:" + key``, without a call; the two sides of
                    # ``bench/tcp.py``'s comparison do the same work a write.
                    key = f"{kp}{i}"
                    value = "v:" + key
                    if padded and size > len(value):
                        value = value_of(key, size)
                    data = encode_kv(KvSet(key, value))
                    if want_lat:
                        t0 = clock()
                        await write(data)
                        lat.append(clock() - t0)
                    else:
                        await write(data)
                    i += 1
                    acked[w] = i
            except Exception as e:  # noqa: BLE001 - reported; the writer stops at its first error
                errors.append(f"writer {w} at {i}: {type(e).__name__}: {e}")

        prof = None
        if req.get("profile"):
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        assert self.log_store is not None
        groups0 = self.log_store.groups_written
        cpu0 = time.process_time()
        t0 = clock()
        await asyncio.gather(*(writer(w) for w in range(writers)))
        elapsed = clock() - t0
        cpu = time.process_time() - cpu0
        groups = self.log_store.groups_written - groups0
        if prof is not None:
            prof.disable()
            prof.dump_stats(req["profile"])
        out: dict[str, Any] = {"acked": acked, "elapsed": elapsed, "errors": errors[:20], "log_groups": groups,
                               "cpu": cpu}
        if want_lat:
            out["latency_ms"] = _percentiles(lat)
        return out

    async def op_metrics(self, req: dict[str, Any]) -> dict[str, Any]:
        return metrics_dict(self.raft)

    async def op_stats(self, req: dict[str, Any]) -> dict[str, Any]:
        assert self.log_store is not None
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return {"cpu": time.process_time(), "log_groups": self.log_store.groups_written,
                "switches": [ru.ru_nvcsw, ru.ru_nivcsw]}

    async def op_read(self, req: dict[str, Any]) -> dict[str, Any]:
        assert self.sm is not None
        sm = self.sm
        get = sm.data.get if isinstance(sm, MemStateMachine) else sm.get
        return {"values": [get(k) for k in req["keys"]]}

    async def op_dump(self, req: dict[str, Any]) -> dict[str, Any]:
        assert self.sm is not None
        prefix = req.get("prefix") or ""
        return {"data": {k: v for k, v in self.sm.data.items() if k.startswith(prefix)}}

    async def op_wait(self, req: dict[str, Any]) -> dict[str, Any]:
        w = self.raft.wait(float(req.get("timeout", 10.0)))
        until = req["until"]
        if until == "applied":
            await w.applied_index_at_least(int(req["index"]), "applied")
        elif until == "log":
            await w.log_index_at_least(int(req["index"]), "log")
        elif until == "snapshot":
            i = int(req["index"])
            await w.metrics(lambda m: m.snapshot is not None and m.snapshot.index >= i, f"snapshot >= {i}")
        elif until == "purged":
            i = int(req["index"])
            await w.metrics(lambda m: m.purged is not None and m.purged.index >= i, f"purged >= {i}")
        elif until == "leader":
            want = req.get("leader")
            await w.metrics(lambda m: m.current_leader is not None and (want is None or m.current_leader == want),
                            "a leader")
        elif until == "voters":
            await w.voter_ids({int(i) for i in req["ids"]}, "voters")
        else:
            raise ValueError(f"unknown wait condition {until!r}")
        return metrics_dict(self.raft)

    async def op_add_learner(self, req: dict[str, Any]) -> dict[str, Any]:
        resp = await self.raft.add_learner(int(req["node"]), BasicNode(req["addr"]),
                                           blocking=bool(req.get("blocking", True)))
        return {"index": resp.log_id.index}

    async def op_change_membership(self, req: dict[str, Any]) -> dict[str, Any]:
        resp = await self.raft.change_membership({int(i) for i in req["members"]},
                                                 retain=bool(req.get("retain", False)),
                                                 allow_lagging=bool(req.get("allow_lagging", False)))
        return {"index": resp.log_id.index}

    async def op_trigger(self, req: dict[str, Any]) -> None:
        t = self.raft.trigger
        action = req["action"]
        if action == "elect":
            await t.elect()
        elif action == "heartbeat":
            await t.heartbeat()
        elif action == "snapshot":
            await t.snapshot()
        elif action == "purge_log":
            await t.purge_log(int(req["upto"]))
        elif action == "transfer_leader":
            await t.transfer_leader(int(req["to"]))
        else:
            raise ValueError(f"unknown trigger {action!r}")

    async def op_profile(self, req: dict[str, Any]) -> None:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        try:
            await asyncio.sleep(float(req["seconds"]))
        finally:
            prof.disable()
        prof.dump_stats(req["path"])

    async def op_shutdown(self, req: dict[str, Any]) -> None:
        self._stopping.set()


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (best effort)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


GC_THRESHOLDS = (50_000, 20, 100)
"""The node process's ``gc.set_threshold``. With the defaults (700, 10, 10) a node under load
(every write allocates a few dozen objects; the leader's entry cache keeps up to 65,536
entries alive) runs hundreds of young collections a second and a full collection every
second or two, each a pause of ~100 ms on a loaded 2-core VM that stalls the whole cluster's
round (measured with ``gc.callbacks`` during ``bench/tcp.py``). Fewer, larger young
collections and rarer full ones keep the pauses out of the latency (cycles are still
collected)."""


def tune_gc() -> None:
    """Freeze what start-up allocated (never scanned again) and apply ``GC_THRESHOLDS``."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def run(opts: NodeOptions) -> int:
    """Run the node until ``shutdown``, stdin EOF or SIGTERM; returns the exit code."""
    node = Node(opts)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, node._stopping.set)
    try:
        await node.start()
        tune_gc()
        await node.serve_control()
    finally:
        await node.stop()
    return 0


def load_options(argv: list[str] | None = None) -> NodeOptions:
    """Parse the command line (and the ``--config`` JSON it may name) into ``NodeOptions``."""
    p = argparse.ArgumentParser(allow_abbrev=False, prog="python -m openraft_py.testing.proc.node",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="a JSON file with the options below (flags override it)")
    p.add_argument("--id", type=int)
    p.add_argument("--raft-addr")
    p.add_argument("--data-dir")
    p.add_argument("--peers", help="ID=HOST:PORT,... (the default members of initialize)")
    p.add_argument("--cluster-name")
    p.add_argument("--raft-config", help="Config fields as a JSON object")
    p.add_argument("--no-sync", action="store_true", help="open the log store with sync=False")
    p.add_argument("--no-events", action="store_true", help="do not report leadership events")
    p.add_argument("--state-machine", choices=("rocks", "memory"),
                   help="the state machine: RocksStateMachine (default) or MemStateMachine (no disk)")
    a = p.parse_args(argv)
    raw: dict[str, Any] = {}
    if a.config:
        raw = json.loads(Path(a.config).read_text())
    for key, val in (("id", a.id), ("raft_addr", a.raft_addr), ("data_dir", a.data_dir),
                     ("cluster_name", a.cluster_name)):
        if val is not None:
            raw[key] = val
    if a.peers:
        raw["peers"] = parse_peers(a.peers)
    if a.raft_config:
        raw["raft_config"] = json.loads(a.raft_config)
    if a.no_sync:
        raw["sync"] = False
    if a.no_events:
        raw["events"] = False
    if a.state_machine:
        raw["state_machine"] = a.state_machine
    try:
        return msgspec.convert(raw, NodeOptions, strict=False)
    except msgspec.ValidationError as e:
        p.error(str(e))
        raise  # unreachable: p.error exits


def main(argv: list[str] | None = None) -> int:
    """Entry point: run one node on uvloop when installed."""
    opts = load_options(argv)
    _die_with_parent()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run(opts))
    return uvloop.run(run(opts))


if __name__ == "__main__":
    sys.exit(main())
