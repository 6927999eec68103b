"""One Jepsen run: start the cluster, run clients and the nemesis, heal, check, report.

::

    cfg = RunConfig(time=60, seed=7, nodes=5)
    result = asyncio.run(run(cfg))        # result.ok, result.report (text), result.out_dir

Phases (every wait bounded):

1. ``n`` ``serve`` processes on loopback (``procs``), RocksDB under a temporary directory;
   the fault proxy (``proxy``) listens for each; the cluster is initialized over HTTP
   (``POST /cluster/init``) with every node's raft address set to its proxy listener.
2. For ``time`` seconds: the clients (``workload``) and the nemesis (``nemesis``) run
   together; a monitor notes any process that exits without the nemesis killing it.
3. Final heal (links, paused and killed nodes), then: every node answers
   ``/cluster/status``; a write succeeds within ``recovery_bound`` seconds; the nodes
   converge (same applied index, equal to the leader's commit); each node's value of every
   key is read with ``consistency=local``, and one linearizable read per key joins the
   history.
4. Checks (``checks``): linearizability (lincheck, per key), local reads, final state, the
   liveness items above. A failing run (or any run given ``out``) writes the history, the
   schedule, each node's log and the report to a directory, and the seed is printed.
"""

from __future__ import annotations

import asyncio
import json
import random
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .checks import Verdict, check_final_state, check_linearizable, check_local_reads, for_lincheck, summarize
from .history import History, Record
from .kvclient import KvHttp
from .nemesis import KINDS, Nemesis, Step, make_schedule
from .procs import NodeSet
from .proxy import ProxyNet
from .report import render_report
from .workload import Workload, WorkloadConfig

__all__ = ["RunConfig", "RunResult", "run", "DEFAULT_RAFT_CONFIG"]

DEFAULT_RAFT_CONFIG: dict[str, Any] = {
    "heartbeat_interval": 100,
    "election_timeout_min": 800,
    "election_timeout_max": 1600,
}
"""Timing for a loaded, shared machine: elections are not triggered by scheduling hiccups."""

_MISSING = object()  # (a field DEFAULT_RAFT_CONFIG does not have)


@dataclass
class RunConfig:
    """What to run. ``time``: seconds of clients and nemesis; ``bugs``: engine fault names
    (test-only, see ``faulty_serve``); ``kinds``: nemesis kinds; ``out``: where to write the
    artifacts (a failing run always writes them, to ``out`` or a fresh directory);
    ``check_timeout``: seconds for lincheck before its verdict is "unknown" (a failure);
    ``recovery_bound``: seconds the cluster has to accept a write after the final heal."""

    time: float = 300.0
    seed: int = 0
    nodes: int = 5
    bugs: tuple[str, ...] = ()
    kinds: tuple[str, ...] = KINDS
    out: Path | None = None
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    raft_config: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_RAFT_CONFIG))
    check_timeout: float = 300.0
    recovery_bound: float = 30.0
    start_bound: float = 60.0
    quiet: tuple[float, float] = (2.0, 5.0)
    hold: tuple[float, float] = (3.0, 8.0)


@dataclass
class RunResult:
    """The outcome: ``ok`` when every check passed; ``verdicts`` per check; ``summary`` ops
    by kind and outcome; ``report`` the printed text; ``out_dir`` where artifacts went."""

    ok: bool
    seed: int
    verdicts: list[Verdict]
    summary: dict[str, dict[str, int]]
    report: str
    out_dir: Path | None
    history: History
    schedule: list[Step]
    lincheck_seconds: float = 0.0


class _Cluster:
    def __init__(self, cfg: RunConfig, root: Path, say: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.say = say
        self.nodes = NodeSet(cfg.nodes, root, cfg.raft_config, tuple(cfg.bugs))
        self.proxy = ProxyNet(sorted(self.nodes.nodes), rng=random.Random(f"proxy-{cfg.seed}"))
        self.http = KvHttp(timeout=5.0)
        self.unexpected: list[str] = []

    @property
    def addrs(self) -> dict[int, str]:
        return {i: n.http_addr for i, n in self.nodes.nodes.items()}

    async def statuses(self) -> dict[int, dict[str, Any] | None]:
        ids = [i for i, n in self.nodes.nodes.items() if n.alive() and not n.paused]
        got = await asyncio.gather(*(self.http.status(self.nodes.nodes[i].http_addr) for i in ids))
        return dict(zip(ids, got))

    async def leader(self) -> int | None:
        best: tuple[int, int] | None = None
        for i, st in (await self.statuses()).items():
            if st and st.get("state") == "Leader" and (best is None or st["term"] > best[0]):
                best = (st["term"], i)
        return None if best is None else best[1]

    async def _post(self, node: int, path: str, obj: Any) -> str:
        """POST ``obj`` to ``node`` (no redirect); ``"STATUS body"``, at most 200 characters."""
        status, body = await self.http.post_json(self.nodes.nodes[node].http_addr, path, obj)
        return f"{status} {body}"[:200]

    async def change_voters(self, leader: int, voters: list[int], retain: bool) -> str:
        """``Admin.change_voters``: ``POST /cluster/members`` on ``leader``."""
        return await self._post(leader, "/cluster/members", {"voters": voters, "retain": retain})

    async def transfer(self, leader: int, to: int) -> str:
        """``Admin.transfer``: ``POST /cluster/transfer`` on ``leader``."""
        return await self._post(leader, "/cluster/transfer", {"to": to})

    async def restore_members(self, bound: float) -> str | None:
        """``Admin.restore_members``: until ``bound`` seconds, look at the leader's
        membership; add each node missing from it as a learner (at its proxy listener), then
        make every node a voter. ``None`` when the leader's membership is every node as a
        voter and not joint, else the last thing that stood in the way."""
        ids = sorted(self.nodes.nodes)
        t = time.monotonic()
        last = "not tried"
        while True:
            leader = await self.leader()
            st = None if leader is None else await self.http.status(self.nodes.nodes[leader].http_addr)
            if leader is None or st is None:
                last = "no leader"
            elif st["voters"] == ids and not st["learners"] and not st["joint"]:
                return None
            else:
                last = f"leader {leader}: voters {st['voters']}, learners {st['learners']}, joint {st['joint']}"
                for i in ids:
                    if i not in st["voters"] and i not in st["learners"]:
                        last += "; add learner " + await self._post(leader, "/cluster/learners", {
                            "id": i, "raft_addr": self.proxy.listen_addr(i), "http_addr": self.nodes.nodes[i].http_addr})
                if not st["joint"]:
                    last += "; members " + await self.change_voters(leader, ids, False)
            if time.monotonic() - t > bound:
                return f"not within {bound:.0f}s ({last})"
            await asyncio.sleep(0.2)

    async def wait(self, what: str, bound: float, cond: Callable[[], Any]) -> float:
        """Poll the async ``cond`` until true; seconds taken; ``TimeoutError`` past ``bound``."""
        t = time.monotonic()
        while True:
            if await cond():
                return time.monotonic() - t
            if time.monotonic() - t > bound:
                raise TimeoutError(f"{what}: not within {bound:.0f}s")
            await asyncio.sleep(0.2)

    async def start(self) -> None:
        await self.proxy.start({i: ("127.0.0.1", n.raft_port) for i, n in self.nodes.nodes.items()})
        for i in self.nodes.nodes:
            self.nodes.start(i)

        retries = {i: 0 for i in self.nodes.nodes}

        async def all_up() -> bool:
            # A port taken meanwhile (by another program) makes a node exit at once: before
            # the cluster is initialized its ports may still change, so pick new ones.
            for i, _code in self.nodes.unexpected_exits():
                retries[i] += 1
                if retries[i] > 3:
                    self._exits_fatal()
                self.nodes.new_ports(i)
                self.proxy.real[i] = ("127.0.0.1", self.nodes.nodes[i].raft_port)
                self.nodes.start(i)
            st = await self.statuses()
            return len(st) == self.cfg.nodes and all(st.values())

        await self.wait("every node answers /cluster/status", self.cfg.start_bound, all_up)
        members = {str(i): {"raft_addr": self.proxy.listen_addr(i), "http_addr": n.http_addr}
                   for i, n in self.nodes.nodes.items()}

        async def inited() -> bool:
            status, body = await self.http.post_json(self.nodes.nodes[1].http_addr, "/cluster/init",
                                                     {"members": members})
            return status in (200, 409)

        await self.wait("POST /cluster/init", self.cfg.start_bound, inited)

        async def has_leader() -> bool:
            return await self.leader() is not None

        await self.wait("a leader", self.cfg.start_bound, has_leader)

    def _exits_fatal(self) -> None:
        bad = self.nodes.unexpected_exits()
        if bad:
            raise RuntimeError(f"node(s) exited at start: {bad} (see their node.log)")

    async def monitor(self, stop: asyncio.Event, now: Callable[[], float]) -> None:
        seen: set[tuple[int, int]] = set()
        while not stop.is_set():
            for i, code in self.nodes.unexpected_exits():
                key = (i, self.nodes.nodes[i].starts)
                if key not in seen:
                    seen.add(key)
                    self.unexpected.append(f"node {i} exited with code {code} at {now():.1f}s "
                                           "without the nemesis killing it")
                    self.say(f"[{now():7.1f}s] !! {self.unexpected[-1]}")
            try:
                async with asyncio.timeout(0.5):
                    await stop.wait()
            except TimeoutError:
                pass


async def run(cfg: RunConfig, say: Callable[[str], None] = print) -> RunResult:
    """Run once (see the module docstring); never raises for a failed check or a cluster
    that misbehaves (those are failed verdicts), only for bad configuration. When it is
    cancelled (Ctrl-C), every node process is stopped and the data directory removed
    before the cancellation goes on."""
    schedule = make_schedule(cfg.seed, cfg.time, cfg.nodes, cfg.kinds, cfg.quiet, cfg.hold)
    tmp = Path(tempfile.mkdtemp(prefix=f"jepsen-{cfg.seed}-"))
    history = History()
    verdicts: list[Verdict] = []
    cluster = _Cluster(cfg, tmp, say)
    lin_seconds = 0.0
    final: dict[int, dict[str, str | None]] = {}
    recovery: float | None = None
    t0 = time.monotonic()
    wl: Workload | None = None
    interrupted = False
    try:
        # In here, so that a say that fails (its reader went away) removes the directory too.
        say(f"jepsen: seed {cfg.seed}, {cfg.nodes} nodes, {cfg.time:.0f}s, {len(schedule)} nemesis steps"
            + (f", TEST-ONLY bugs {list(cfg.bugs)}" if cfg.bugs else "") + f", data in {tmp}")
        await cluster.http.__aenter__()
        try:
            await cluster.start()
        except (TimeoutError, RuntimeError) as e:
            verdicts.append(Verdict("cluster start", False, [str(e)]))
            raise _Abort() from None
        t0 = time.monotonic()

        def now() -> float:
            return time.monotonic() - t0

        say(f"[{now():7.1f}s] cluster up: leader {await cluster.leader()}")
        stop = asyncio.Event()
        wl = Workload(cfg.workload, cluster.addrs, history, random.Random(f"clients-{cfg.seed}"), t0)
        nem = Nemesis(cluster.nodes, cluster.proxy, cluster.leader, say, t0, admin=cluster,
                      member_bound=cfg.recovery_bound)
        tasks = [asyncio.create_task(wl.run(stop)), asyncio.create_task(nem.run(schedule, stop)),
                 asyncio.create_task(cluster.monitor(stop, now))]
        ticker = asyncio.create_task(_progress(stop, now, history, say))
        try:
            async with asyncio.timeout(cfg.time):
                await stop.wait()
        except TimeoutError:
            pass
        stop.set()
        await asyncio.gather(*tasks)
        ticker.cancel()
        say(f"[{now():7.1f}s] clients stopped, every fault healed; {len(history)} operations")

        # -- after the final heal --------------------------------------------------------------
        recovery, verdicts_after = await _after_heal(cluster, history, wl, now, cfg, final)
        verdicts.extend(verdicts_after)
        verdicts.append(Verdict("no unexpected exits", not cluster.unexpected, cluster.unexpected))
    except _Abort:
        pass
    except BaseException:  # interrupted (Ctrl-C cancels this task) or a bug: no verdict
        interrupted = True
        raise
    finally:
        cluster.nodes.stop_all()
        await cluster.proxy.close()
        await cluster.http.__aexit__(None, None, None)
        if interrupted:  # the nodes are stopped: their data is of no use to anyone
            shutil.rmtree(tmp, ignore_errors=True)

    if len(history):
        lin, res = check_linearizable(history, cfg.check_timeout)
        lin_seconds = res.elapsed
        verdicts.append(lin)
        verdicts.append(check_local_reads(history))
        if final:
            verdicts.append(check_final_state(history, final))
    elif not any(not v.ok for v in verdicts):
        verdicts.append(Verdict("operations", False, ["no operation was recorded"]))
    ok = all(v.ok for v in verdicts)
    summary = summarize(history)
    report = render_report(cfg, ok, verdicts, summary, history, schedule, lin_seconds, recovery)
    out_dir: Path | None = None
    if not ok or cfg.out is not None:
        out_dir = _write_artifacts(cfg, tmp, history, schedule, report, cluster)
    shutil.rmtree(tmp, ignore_errors=True)
    say(report)
    if out_dir is not None:
        say(f"artifacts: {out_dir}")
    if not ok:
        extra = {k: v for k, v in cfg.raft_config.items() if DEFAULT_RAFT_CONFIG.get(k, _MISSING) != v}
        say(f"FAILED: seed {cfg.seed} (rerun: python -m openraft_py.testing.jepsen --seed {cfg.seed} "
            f"--time {cfg.time:g} --nodes {cfg.nodes} --clients {cfg.workload.clients}"
            + "".join(f" --bug {b}" for b in cfg.bugs)
            + (f" --nemesis {','.join(cfg.kinds)}" if tuple(cfg.kinds) != KINDS else "")
            + (f" --raft-config {shlex.quote(json.dumps(extra))}" if extra else "") + ")")
    return RunResult(ok, cfg.seed, verdicts, summary, report, out_dir, history, schedule, lin_seconds)


class _Abort(Exception):
    pass


async def _progress(stop: asyncio.Event, now: Callable[[], float], history: History,
                    say: Callable[[str], None]) -> None:
    while not stop.is_set():
        await asyncio.sleep(30.0)
        ok = sum(1 for r in history.records if r.outcome == "ok")
        say(f"[{now():7.1f}s] {len(history)} operations, {ok} ok")


async def _after_heal(cluster: _Cluster, history: History, wl: Workload, now: Callable[[], float],
                      cfg: RunConfig, final: dict[int, dict[str, str | None]]) -> tuple[float | None, list[Verdict]]:
    verdicts: list[Verdict] = []
    http = cluster.http
    first = cluster.nodes.nodes[min(cluster.nodes.nodes)].http_addr

    down: list[int] = []

    async def all_answer() -> bool:
        # Nothing restarts a node that exited on its own: it will never answer, so the wait
        # ends there (a failed verdict) rather than at the bound.
        down[:] = sorted(i for i, _code in cluster.nodes.unexpected_exits())
        if down:
            return True
        st = await cluster.statuses()
        return len(st) == cfg.nodes and all(st.values())

    try:
        await cluster.wait("every node answers /cluster/status after the heal", cfg.recovery_bound, all_answer)
        problem = f"node(s) {down} exited without the nemesis killing them" if down else None
    except TimeoutError as e:
        problem = str(e)
    if problem is not None:
        st = await cluster.statuses()
        verdicts.append(Verdict("all nodes answer", False,
                                [problem, f"answering: {sorted(i for i, s in st.items() if s)}"]))
        return None, verdicts
    verdicts.append(Verdict("all nodes answer", True))

    # A write must succeed within the bound; the probes join the history.
    t_heal = time.monotonic()
    recovery: float | None = None
    n = 0
    while time.monotonic() - t_heal < cfg.recovery_bound:
        n += 1
        rec = history.add(Record(client=-1, op="put", key="final-probe", value=f"probe-{n}", call=now()))
        out = await http.put(first, rec.key, rec.value or "")
        rec.ret, rec.outcome, rec.node, rec.error = now(), out.kind, out.node, out.error
        if out.kind == "ok":
            recovery = time.monotonic() - t_heal
            break
        await asyncio.sleep(0.2)
    verdicts.append(Verdict("writes after the final heal", recovery is not None,
                            [] if recovery is not None else [f"no write succeeded within {cfg.recovery_bound:.0f}s"],
                            f"first write ok {recovery:.2f}s after the heal" if recovery is not None else ""))
    if recovery is None:
        return None, verdicts
    say = cluster.say
    say(f"[{now():7.1f}s] a write succeeded {recovery:.2f}s after the final heal")

    async def converged() -> bool:
        st = await cluster.statuses()
        if len(st) != cfg.nodes or not all(st.values()):
            return False
        leaders = [s for s in st.values() if s and s["state"] == "Leader"]
        if len(leaders) != 1:
            return False
        target = leaders[0]["committed_index"]
        every_voter = leaders[0]["voters"] == sorted(cluster.nodes.nodes) and not leaders[0]["joint"]
        return every_voter and target is not None and leaders[0]["last_log_index"] == target and all(
            s["applied_index"] == target for s in st.values() if s)

    try:
        took = await cluster.wait("the nodes converge", cfg.recovery_bound, converged)
        verdicts.append(Verdict("convergence", True, detail=f"{took:.2f}s"))
        # Whether the run went through snapshots (built, purged up to, installed by a node
        # that had fallen behind): not a check, what to know of a run's coverage.
        st = await cluster.statuses()
        say(f"[{now():7.1f}s] snapshot (purged) index per node: " + ", ".join(
            f"{i}: {s.get('snapshot_index')} ({s.get('purged_index')})" for i, s in sorted(st.items()) if s))
    except TimeoutError as e:
        st = await cluster.statuses()
        verdicts.append(Verdict("convergence", False, [str(e)] + [
            f"node {i}: {None if s is None else {k: s.get(k) for k in ('state', 'term', 'committed_index', 'applied_index', 'last_log_index', 'voters', 'learners')}}"
            for i, s in st.items()]))
        return recovery, verdicts

    keys = sorted(wl.keys() | {"final-probe"})
    leader = await cluster.leader()
    leader_addr = cluster.nodes.nodes[leader].http_addr if leader is not None else first
    sem = asyncio.Semaphore(8)

    async def read_local(i: int, key: str) -> None:
        async with sem:
            out = await http.get(cluster.nodes.nodes[i].http_addr, key, "local")
        if out.kind != "ok":
            raise RuntimeError(f"final local read of {key!r} on node {i}: {out.error}")
        final.setdefault(i, {})[key] = out.value

    async def read_final(key: str) -> None:
        async with sem:
            rec = history.add(Record(client=-2, op="get", key=key, consistency="linearizable", call=now()))
            out = await http.get(leader_addr, key, "linearizable")
            rec.ret, rec.outcome, rec.node, rec.error = now(), out.kind, out.node, out.error
            if out.kind == "ok":
                rec.result = out.value

    try:
        await asyncio.gather(*(read_local(i, k) for i in cluster.nodes.nodes for k in keys))
        await asyncio.gather(*(read_final(k) for k in keys))
    except RuntimeError as e:
        final.clear()
        verdicts.append(Verdict("final reads", False, [str(e)]))
    return recovery, verdicts


def _write_artifacts(cfg: RunConfig, tmp: Path, history: History, schedule: list[Step], report: str,
                     cluster: _Cluster) -> Path:
    out = cfg.out if cfg.out is not None else Path(tempfile.mkdtemp(prefix=f"jepsen-failed-{cfg.seed}-"))
    out.mkdir(parents=True, exist_ok=True)
    history.write_jsonl(out / "history.jsonl")
    history.write_jsonl(out / "history-linearizable.jsonl", for_lincheck)
    (out / "schedule.json").write_text(json.dumps({"seed": cfg.seed, "config": _cfg_json(cfg),
                                                   "steps": [s.to_json() for s in schedule]}, indent=1))
    (out / "report.txt").write_text(report + "\n")
    for i, node in cluster.nodes.nodes.items():
        if node.log_path.exists():
            shutil.copy(node.log_path, out / f"node{i}.log")
    return out


def _cfg_json(cfg: RunConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["out"] = str(cfg.out) if cfg.out is not None else None
    return d
