"""``openraft-py demo`` (what ``make run`` runs): the key-value service across real processes.

::

    t=0            3 x `serve` (RocksDB in a temporary directory), init, a leader
    load  ───────────────────────────────────────────────────────────────────> t=duration
          clients: put / get (linearizable) / cas / delete on a few shared keys,
                   and puts of keys written once (the durability sample)
    t=0.3·d        SIGKILL the leader; time until a new leader, and until it acknowledges
                   a write; restart the killed node from its data directory
    t=0.6·d        start n4, POST /cluster/learners (caught up), voters := {1, 2, 3, 4}
    then           every node applies the leader's commit index; every acknowledged write
                   is read back (consistency=local) on every node; the whole client history
                   is checked by openraft_py.testing.lincheck (model kv_register)

It prints a progress line while the load runs, then a summary (writes/s, p50/p99 latency,
time to the new leader, entries per node, the durability and linearizability verdicts), and
exits 1 on any lost write, any divergence between nodes, a history that is not linearizable
(or could not be decided), or a phase that did not complete. Every process and the temporary
directory are removed at the end, also on Ctrl-C, SIGTERM or an error.

Outcomes follow ``client.Outcome``: an acknowledged operation is ``ok``; one refused before it
could take effect is ``fail`` (dropped by the checker); one whose effect is unknown (a timeout,
a connection lost mid-request) is ``info``: the checker lets it take effect at any time after
its call, or never.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import aiohttp

from ..testing import lincheck
from .argtypes import decimal_int, positive_int_at_most
from .argtypes import positive_float as _positive_float
from .client import KvClient, Outcome, Response, new_session
from .local_cluster import ClusterError, LocalCluster

__all__ = ["add_demo_arguments", "run_demo", "DemoConfig", "Demo"]


MAX_CLIENTS = 64
"""The largest ``--clients``: each client is a connection to the three nodes with one
operation in flight; a few thousand swamped them (the demo failed with "no agreed leader")."""

MAX_KEYS = 1000
"""The largest ``--keys``: the end reads every shared key once linearizably and on every
node (about 7 ms a key here), so a million keys kept the demo reading for two hours."""


MAX_DURATION = 600.0
"""The longest ``--duration`` (seconds, 10 minutes): the run keeps every operation of its
history in memory for the check at the end, and reads back every write-once key on every
node (about 400 operations a second with 4 clients here, 100 of them new keys), and its
leader crash and membership change come at 30% and 60% of it, so ``--duration 1e9``
would hold memory without bound and crash the leader after nine years. For a long load,
run the soak (``bench/soak.py``, docs/design/soak.md)."""


def _duration(text: str) -> float:
    """``--duration``: a finite number of seconds above 0, at most ``MAX_DURATION``."""
    x = _positive_float(text)
    if x > MAX_DURATION:
        raise argparse.ArgumentTypeError(f"{text!r} must be at most {MAX_DURATION:g} seconds")
    return x


def add_demo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``demo`` flags to ``parser``; returns it."""
    p = parser
    p.add_argument("--quick", action="store_true", help="a short run (about 4 s of load, 4 clients)")
    p.add_argument("--duration", type=_duration, metavar="S",
                   help=f"seconds of load, at least, up to {MAX_DURATION:g} (default 10; 4 with --quick); the load also lasts until "
                   "the restart and the membership change are done")
    p.add_argument("--clients", type=positive_int_at_most(MAX_CLIENTS), metavar="N",
                   help=f"concurrent clients, 1 to {MAX_CLIENTS}: each is a connection with one operation in flight "
                   "(default 8; 4 with --quick)")
    p.add_argument("--keys", type=positive_int_at_most(MAX_KEYS), default=8, metavar="N",
                   help=f"shared keys the clients contend on, 1 to {MAX_KEYS}: the end reads each one on every node "
                   "(default 8)")
    p.add_argument("--seed", type=decimal_int, default=None, help="seed of the clients' choices (default: random)")
    p.add_argument("--data-dir", metavar="DIR", help="keep the nodes' data and logs in DIR (default: a temporary directory, removed)")
    p.add_argument("--history", metavar="FILE", help="also write the client history as JSON lines (lincheck --format jsonl)")
    p.add_argument("--no-progress", action="store_true", help="no progress line")
    return p






def _unusable_data_dir(path: str) -> str | None:
    """Why the demo's ``--data-dir`` ``path`` cannot be made a directory, else ``None``: it
    is a file, it lies under a file, or it (or the nearest parent that exists) is a symbolic
    link that leads nowhere. Checked before any node starts; ``mkdir`` refused these with
    "FileExistsError: [Errno 17] File exists", which named no flag."""
    from .node import dangling_link

    dangling = dangling_link(path)
    if dangling is not None:
        return dangling
    p = path
    while not os.path.lexists(p):  # (up to the nearest that exists)
        parent = os.path.dirname(p)
        if not parent or parent == p:
            return None
        p = parent
    if os.path.isdir(p):
        return None
    return "it is a file, not a directory" if p == path else f"{p!r} is a file, not a directory"


@dataclass
class DemoConfig:
    """What one demo run does (see ``add_demo_arguments``)."""

    duration: float = 10.0
    clients: int = 8
    keys: int = 8
    seed: int | None = None
    data_dir: str | None = None
    history: str | None = None
    progress: bool = True
    check_timeout: float = 60.0
    """Seconds lincheck may take; past it the verdict is "undecided" (a failed run)."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DemoConfig:
        """The configuration the parsed ``demo`` flags ask for."""
        return cls(duration=args.duration or (4.0 if args.quick else 10.0),
                   clients=args.clients or (4 if args.quick else 8), keys=args.keys, seed=args.seed,
                   data_dir=args.data_dir, history=args.history, progress=not args.no_progress)


class DemoFailed(Exception):
    """A phase of the demo did not complete (the message says which and why)."""


@dataclass
class _Stats:
    ok_writes: int = 0
    ok_reads: int = 0
    failed: int = 0
    unknown: int = 0
    write_lat: list[float] = field(default_factory=list)
    read_lat: list[float] = field(default_factory=list)


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def _in_progress(r: Response) -> bool:
    """Whether ``r`` is the service's refusal of a membership change while another one is
    not committed (``409`` with ``InProgress``)."""
    return r.status == 409 and b"InProgress" in r.body


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


class Demo:
    """One run of the demo (``await Demo(cfg).run()`` returns the exit code)."""

    def __init__(self, cfg: DemoConfig, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> None:
        self.cfg = cfg
        self.out = out
        self.err = err
        self.rng = random.Random(cfg.seed)
        self.history: list[lincheck.Operation] = []
        self.stats = _Stats()
        self.unique_acked: dict[str, str] = {}
        self.events: list[str] = []
        self.leader: tuple[int, int] | None = None  # (id, term) as last seen
        self.t_start = time.monotonic()  # start of the demo
        self.t0 = 0.0  # start of the load (monotonic)
        self.stop_load = asyncio.Event()
        self.t_kill: float | None = None
        self.t_new_leader: float | None = None
        self.killed: int | None = None
        self.new_leader: tuple[int, int] | None = None
        self.timings: dict[str, float] = {}
        self._next_client = cfg.clients

    # -- output ----------------------------------------------------------------------------------

    def _event(self, text: str) -> None:
        line = f"[{time.monotonic() - self.t_start:6.2f}s] {text}"
        self.events.append(line)
        if self.cfg.progress and self.err.isatty():
            self.err.write("\r\033[K")
        print(line, file=self.err, flush=True)

    def _progress_line(self) -> str:
        d = self.cfg.duration
        el = time.monotonic() - self.t0
        width = 24
        filled = int(width * min(1.0, el / d))
        bar = "#" * filled + "." * (width - filled)
        s = self.stats
        rate = s.ok_writes / el if el > 0 else 0.0
        lead = f"n{self.leader[0]} leads (term {self.leader[1]})" if self.leader else "no leader"
        return (f"[{bar}] {el:4.1f}/{d:g}s  {s.ok_writes} writes ({rate:.0f}/s)  {s.ok_reads} reads  "
                f"{s.unknown} unknown  {s.failed} refused  {lead}")

    async def _show_progress(self, cluster: LocalCluster) -> None:
        tty = self.err.isatty()
        last_line = 0.0
        while not self.stop_load.is_set():
            sts = await cluster.statuses(timeout=0.5)
            leaders = [(st["id"], st["term"]) for st in sts.values() if st.get("state") == "Leader"]
            if leaders:
                self.leader = max(leaders, key=lambda x: x[1])
            now = time.monotonic()
            if self.cfg.progress:
                if tty:
                    self.err.write("\r\033[K" + self._progress_line())
                    self.err.flush()
                elif now - last_line >= 2.0:
                    print(self._progress_line(), file=self.err, flush=True)
                    last_line = now
            try:
                async with asyncio.timeout(0.25):
                    await self.stop_load.wait()
            except TimeoutError:
                pass
        if self.cfg.progress:
            if tty:
                self.err.write("\r\033[K")
            print(self._progress_line(), file=self.err, flush=True)

    # -- the clients -----------------------------------------------------------------------------

    def _record(self, client: int, op: str, key: str, value: Any, call: float, r: Response,
                output: Any = None) -> int:
        """Add the operation to the history and the counters; the client id to use next
        (a client whose operation is pending continues as a new client, as in Jepsen)."""
        ret = time.monotonic()
        is_read = op == "get"
        if r.outcome is Outcome.OK:
            self.history.append(lincheck.Operation(client, op, key, value, output, call, ret, True))
            if is_read:
                self.stats.ok_reads += 1
                self.stats.read_lat.append(ret - call)
            else:
                self.stats.ok_writes += 1
                self.stats.write_lat.append(ret - call)
            return client
        if r.outcome is Outcome.FAIL:
            self.stats.failed += 1
            self.history.append(lincheck.Operation(client, op, key, value, None, call, ret, False))
            return client
        self.stats.unknown += 1
        self.history.append(lincheck.Operation(client, op, key, value, None, call, lincheck.INF, None))
        if is_read:
            return client
        self._next_client += 1
        return self._next_client

    async def _client(self, worker: int, session: aiohttp.ClientSession, endpoints: list[str]) -> None:
        rng = random.Random(self.rng.random())
        c = KvClient(endpoints, session=session, deadline=5.0, attempt_timeout=3.0)
        client = worker
        seen: dict[str, str | None] = {}
        seq = 0
        while not self.stop_load.is_set():
            seq += 1
            key = f"k{rng.randrange(self.cfg.keys)}"
            value = f"c{worker}-{seq}"
            roll = rng.random()
            call = time.monotonic()
            if roll < 0.35:
                r = await c.put(key, value)
                client = self._record(client, "put", key, value, call, r)
                if r.ok:
                    seen[key] = value
            elif roll < 0.65:
                r = await c.get(key, "linearizable")
                out = r.value if r.ok else None
                client = self._record(client, "get", key, None, call, r, out)
                if r.ok:
                    seen[key] = out
            elif roll < 0.77:
                expected = seen.get(key)
                r = await c.cas(key, expected, value)
                applied = bool(r.json().get("ok")) if r.ok else None
                client = self._record(client, "cas", key, (expected, value), call, r, applied)
                if r.ok:
                    seen[key] = value if applied else r.json().get("current")
            elif roll < 0.82:
                r = await c.delete(key)
                client = self._record(client, "delete", key, None, call, r)
                if r.ok:
                    seen[key] = None
            else:  # a key written once: it must be on every node at the end
                ukey = f"u/{worker}/{seq}"
                r = await c.put(ukey, value)
                client = self._record(client, "put", ukey, value, call, r)
                if r.ok:
                    self.unique_acked[ukey] = value

    # -- the conductor ---------------------------------------------------------------------------

    async def _failover(self, cluster: LocalCluster) -> None:
        old, term = await cluster.wait_leader(timeout=10)
        self.killed = old
        self.t_kill = cluster.kill(old)
        self._event(f"SIGKILL n{old}, the leader (term {term})")
        survivors = [i for i in sorted(cluster.nodes) if i != old and cluster.nodes[i].running]
        end = self.t_kill + 10.0
        while True:
            sts = await cluster.statuses(survivors, timeout=0.5)
            now = time.monotonic()
            lead = [st for st in sts.values() if st.get("state") == "Leader" and st.get("term", 0) > term]
            if lead:
                st = lead[0]
                self.t_new_leader = now
                self.new_leader = (int(st["id"]), int(st["term"]))
                self.leader = self.new_leader
                self._event(f"n{st['id']} elected leader (term {st['term']}) "
                            f"{_ms(now - self.t_kill)} after the kill")
                break
            if now > end:
                raise DemoFailed(f"no new leader within 10 s of killing n{old}")
            await asyncio.sleep(0.01)

    async def _restart(self, cluster: LocalCluster) -> None:
        assert self.killed is not None
        await asyncio.sleep(0.3)
        t = time.monotonic()
        await cluster.start_node(self.killed, timeout=30)
        self.timings["restart"] = time.monotonic() - t
        self._event(f"n{self.killed} restarted from its data directory")

    async def _grow(self, cluster: LocalCluster) -> None:
        node = cluster.add_node()
        await cluster.start_node(node.id, timeout=30)
        self._event(f"n{node.id} started; adding it as a learner")
        t = time.monotonic()
        r = await cluster.client.add_learner(node.id, node.raft_addr, node.http_addr, deadline=60.0,
                                             attempt_timeout=60.0)
        if not r.ok:
            raise DemoFailed(f"adding n{node.id} as a learner failed: {r.error}")
        self.timings["learner"] = time.monotonic() - t
        self._event(f"n{node.id} caught up as a learner in {_ms(self.timings['learner'])}")
        voters = sorted(cluster.nodes)
        t = time.monotonic()
        end = t + 30.0
        while True:
            r = await cluster.client.change_members(voters, deadline=max(0.1, end - time.monotonic()),
                                                    attempt_timeout=30.0)
            # 409 InProgress: the leader has not committed the previous change yet. A leader
            # elected after the learner's entry commits it with its own first entry (the
            # library waits for that for election_timeout_max after the election; a slower
            # commit is refused), so this passes; asked again until the deadline. An unknown outcome (the leader stepped
            # down during the change: 503) is asked again too: the same voters asked of the
            # next leader are answered at once if the change took effect, else made.
            if r.ok or not (_in_progress(r) or r.outcome is Outcome.INFO) or time.monotonic() >= end:
                break
            await asyncio.sleep(0.05)
        if not r.ok:
            raise DemoFailed(f"changing the voters to {voters} failed: {r.error}")
        self.timings["members"] = time.monotonic() - t
        self._event(f"voters are now {r.json().get('voters')} (joint consensus, {_ms(self.timings['members'])})")

    async def _conduct(self, cluster: LocalCluster) -> None:
        d = self.cfg.duration
        await asyncio.sleep(max(0.0, self.t0 + 0.3 * d - time.monotonic()))
        await self._failover(cluster)
        restart = asyncio.ensure_future(self._restart(cluster))
        try:
            await asyncio.sleep(max(0.0, self.t0 + 0.6 * d - time.monotonic()))
            await self._grow(cluster)
            await restart
        finally:
            restart.cancel()
        await asyncio.sleep(max(0.0, self.t0 + d - time.monotonic()))

    # -- the checks ------------------------------------------------------------------------------

    async def _converge(self, cluster: LocalCluster) -> dict[int, dict[str, Any]]:
        """Every node's status once all of them applied the leader's commit index."""
        lid, _ = await cluster.wait_leader(timeout=15)
        st = (await cluster.statuses([lid]))[lid]
        target = int(st["committed_index"] or 0)
        end = time.monotonic() + 30.0
        while True:
            sts = await cluster.statuses()
            if len(sts) == len(cluster.nodes) and all((s.get("applied_index") or 0) >= target for s in sts.values()):
                return sts
            if time.monotonic() > end:
                lag = {i: s.get("applied_index") for i, s in sts.items()}
                raise DemoFailed(f"the nodes did not all apply index {target} within 30 s: {lag}")
            await asyncio.sleep(0.05)

    async def _read_everywhere(self, cluster: LocalCluster, session: aiohttp.ClientSession,
                               keys: list[str]) -> dict[int, dict[str, str | None]]:
        """``{node: {key: value}}`` read with consistency=local on every node."""
        sem = asyncio.Semaphore(32)
        result: dict[int, dict[str, str | None]] = {i: {} for i in cluster.nodes}

        async def one(nid: int, c: KvClient, key: str) -> None:
            async with sem:
                r = await c.get(key, "local", endpoint=cluster.nodes[nid].http_addr, follow=False)
            if not r.ok:
                raise DemoFailed(f"a local read of {key!r} on n{nid} failed: {r.error}")
            result[nid][key] = r.value

        clients = {i: KvClient([n.http_addr], session=session, deadline=10.0) for i, n in cluster.nodes.items()}
        await asyncio.gather(*(one(i, clients[i], k) for i in cluster.nodes for k in keys))
        return result

    async def _final_reads(self, cluster: LocalCluster, session: aiohttp.ClientSession) -> dict[str, str | None]:
        """A linearizable read of every shared key, recorded in the history."""
        c = KvClient(cluster.endpoints(), session=session, deadline=10.0)
        final: dict[str, str | None] = {}
        for i in range(self.cfg.keys):
            key = f"k{i}"
            call = time.monotonic()
            r = await c.get(key, "linearizable")
            if not r.ok:
                raise DemoFailed(f"the final read of {key!r} failed: {r.error}")
            final[key] = r.value
            self._record(-1, "get", key, None, call, r, r.value)
        return final

    # -- the run ---------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run the demo; the exit code (0 when every check passed)."""
        cfg = self.cfg
        started = time.monotonic()
        unusable = None if cfg.data_dir is None else _unusable_data_dir(cfg.data_dir)
        if unusable is not None:
            print(f"openraft-py demo: error: --data-dir {cfg.data_dir!r}: {unusable}", file=self.err)
            return 2
        if cfg.data_dir is not None and os.path.isdir(cfg.data_dir) and os.listdir(cfg.data_dir):
            print(f"openraft-py demo: error: --data-dir {cfg.data_dir} is not empty (the demo starts a new cluster)",
                  file=self.err)
            return 2
        if cfg.history is not None:
            try:  # before the run, not after it: a run whose history cannot be written is lost
                open(cfg.history, "w").close()
            except OSError as e:
                print(f"openraft-py demo: error: cannot write --history {cfg.history}: {e.strerror or e}",
                      file=self.err)
                return 2
        cluster = LocalCluster(3, root=cfg.data_dir, cluster_name="demo", log_level="INFO")
        session = new_session()
        try:
            self._event(f"starting 3 serve processes (RocksDB under {cluster.root})")
            await cluster.start(timeout=60)
            await cluster.init()
            lid, term = await cluster.wait_leader(timeout=15)
            self.leader = (lid, term)
            self._event(f"cluster up in {time.monotonic() - started:.1f} s: n{lid} leads (term {term})")
            self.t0 = time.monotonic()
            self._event(f"load: {cfg.clients} clients for {cfg.duration:g} s")
            eps = cluster.endpoints()
            workers = [asyncio.ensure_future(self._client(w, session, eps)) for w in range(cfg.clients)]
            progress = asyncio.ensure_future(self._show_progress(cluster))
            try:
                await self._conduct(cluster)
            except BaseException:  # a failed phase, Ctrl-C, SIGTERM: stop the clients now
                self.stop_load.set()
                for task in (*workers, progress):
                    task.cancel()
                await asyncio.gather(*workers, progress, return_exceptions=True)
                raise
            self.stop_load.set()
            done = await asyncio.gather(*workers, progress, return_exceptions=True)
            load_time = time.monotonic() - self.t0
            for x in done:
                if isinstance(x, BaseException):
                    raise x
            self._event("load stopped; waiting for every node to apply the log")
            sts = await self._converge(cluster)
            final = await self._final_reads(cluster, session)
            keys = sorted(final) + sorted(self.unique_acked)
            values = await self._read_everywhere(cluster, session, keys)
            self._event(f"checking {len(self.history)} operations for linearizability")
            verdict = await asyncio.to_thread(lincheck.check, self.history, lincheck.kv_register,
                                              timeout=cfg.check_timeout)
            if cfg.history:
                lincheck.write_jsonl([op for op in self.history if op.ok is not False], cfg.history)
            return self._summary(cluster, load_time, sts, final, values, verdict)
        except (DemoFailed, ClusterError) as e:
            print(f"openraft-py demo: FAILED: {e}", file=self.err, flush=True)
            return 1
        finally:
            await session.close()
            await cluster.aclose()

    def _summary(self, cluster: LocalCluster, load_time: float, sts: dict[int, dict[str, Any]],
                 final: dict[str, str | None], values: dict[int, dict[str, str | None]],
                 verdict: lincheck.CheckResult) -> int:
        s = self.stats
        problems: list[str] = []
        lost = [(nid, k) for nid, vals in values.items() for k, v in self.unique_acked.items() if vals.get(k) != v]
        diverged = [(nid, k) for nid, vals in values.items() for k, v in final.items() if vals.get(k) != v]
        if lost:
            problems.append(f"{len(lost)} acknowledged writes missing, e.g. {lost[0][1]!r} on n{lost[0][0]}")
        if diverged:
            problems.append(f"{len(diverged)} shared keys differ from the final linearizable read, "
                            f"e.g. {diverged[0][1]!r} on n{diverged[0][0]}")
        if verdict.ok is False:
            problems.append("the history is NOT linearizable")
        elif verdict.ok is None:
            problems.append(f"linearizability was not decided within {self.cfg.check_timeout:g} s")
        if s.ok_writes == 0:
            problems.append("no write was acknowledged")
        first_write = min((op.ret for op in self.history if op.ok and op.op != "get" and self.t_kill is not None
                           and op.call > self.t_kill), default=None)
        w = self.out.write
        w("\nopenraft-py demo: summary\n")
        w(f"  load             {load_time:.1f} s, {self.cfg.clients} clients, {self.cfg.keys} shared keys + "
          f"keys written once\n")
        w(f"  writes           {s.ok_writes} acknowledged ({s.ok_writes / load_time:.0f}/s), "
          f"{s.failed} refused, {s.unknown} unknown outcome\n")
        w(f"  write latency    p50 {_ms(_pct(s.write_lat, 0.5))}  p99 {_ms(_pct(s.write_lat, 0.99))}\n")
        w(f"  reads            {s.ok_reads} linearizable: p50 {_ms(_pct(s.read_lat, 0.5))}  "
          f"p99 {_ms(_pct(s.read_lat, 0.99))}\n")
        if self.t_kill is not None and self.new_leader is not None and self.t_new_leader is not None:
            # Counted from the start of the load, as the progress bar (the event lines count
            # from the demo's start: "at 3.0 s" stood under "[  4.78s] SIGKILL n1").
            w(f"  failover         SIGKILL n{self.killed} {self.t_kill - self.t0:.1f} s into the load; new leader "
              f"n{self.new_leader[0]} (term {self.new_leader[1]}) after {_ms(self.t_new_leader - self.t_kill)}; "
              f"first write acknowledged {_ms(None if first_write is None else first_write - self.t_kill)} "
              f"after the kill\n")
            w(f"  restart          n{self.killed} back from its data directory in {_ms(self.timings.get('restart'))}; "
              f"caught up\n")
        w(f"  membership       n4 added as a learner in {_ms(self.timings.get('learner'))}; voters "
          f"{sorted(cluster.nodes)} in {_ms(self.timings.get('members'))}\n")
        w("  entries per node " + "  ".join(f"n{i}: {st.get('last_log_index')} (applied {st.get('applied_index')})"
                                           for i, st in sorted(sts.items())) + "\n")
        ok_dur = not lost and not diverged
        w(f"  durability       {'OK' if ok_dur else 'FAILED'}: {len(self.unique_acked)} acknowledged write-once keys "
          f"and {len(final)} shared keys read back on all {len(values)} nodes"
          f"{'' if ok_dur else ' (see below)'}\n")
        w(f"  linearizability  {verdict.explain().splitlines()[0]}\n")
        if verdict.ok is False:
            w("\n".join("    " + line for line in verdict.explain().splitlines()[1:]) + "\n")
        for p in problems:
            w(f"  PROBLEM: {p}\n")
        w(f"  result           {'PASS' if not problems else 'FAIL'}\n")
        self.out.flush()
        return 0 if not problems else 1


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo from parsed ``demo`` flags; the exit code. Ctrl-C (SIGINT) and SIGTERM
    stop it, removing the processes and the temporary directory, with exit code 130."""
    cfg = DemoConfig.from_args(args)

    async def main() -> int:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None
        # The loop's own handlers, not asyncio.run's Python-level SIGINT handler: the loop
        # wakes for them at once and they cancel the demo exactly once.
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await Demo(cfg).run()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    try:
        return asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("openraft-py demo: interrupted; every process stopped and the data removed", file=sys.stderr)
        return 130
