"""Seeded chaos: writers keep writing unique values while a fault loop driven by
``random.Random(seed)`` partitions the network (symmetric and one-way), drops and delays
messages, and crashes and restarts nodes (a crashed node keeps its disk; at most a minority is
down at once). The Raft safety properties are checked throughout and convergence at the end.

Checked continuously (a monitor wakes on every metrics change) and after every fault step:

- election safety: at most one leader per term, from the metrics of LEADER nodes and from
  every node's committed vote (metrics and disk);
- no node stopped on its own (a crash of the runtime shows as ``running=False``);
- linearizable reads: a ``READ_INDEX`` read started after a write was acknowledged returns a
  log id at or after it, and the node has applied up to it when the call returns;

checked after every fault step, over every node's ``MemDisk`` (crashed nodes included):

- log matching: two logs holding an entry with the same log id agree on every earlier entry;
- leader completeness: every acknowledged write is in the log of every leader of a later (or
  its own) term;
- no acknowledged write lost: it is held, with its log id, by a majority of the disks;
- state machine safety: every ``applied_log`` is a prefix of the longest one, no value is
  applied twice;

and at the end, after healing the network and restarting every crashed node: one leader
agreed by all within a bound, every node applied the same last index, identical
``applied_log`` everywhere, and every acknowledged write in it at its acknowledged log id.

The seed fixes the fault schedule, the router's drops and delays and the nodes' randomness;
timing is wall-clock, so a failing seed reproduces the same schedule, usually the failure.
"""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from openraft_py import ForwardToLeader, LogId, ReadPolicy, ServerState
from openraft_py.errors import Fatal, LinearizableReadError, RaftError
from openraft_py.storage.memory import MemDisk
from openraft_py.testing.cluster import Cluster

from ..checks import check_applied_prefix, check_log_matching, fast_config, holds

SEEDS = int(os.environ.get("CHAOS_SEEDS", "50"))  # more: CHAOS_SEEDS=500 pytest ...
NODES = (1, 2, 3, 4, 5)
MAJORITY = len(NODES) // 2 + 1
MAX_DOWN = len(NODES) - MAJORITY  # crashed at once
STEPS = 16  # fault steps per run
STEP_HOLD = (0.03, 0.10)  # seconds a step's faults hold at most
STEP_ACKS = 30  # ... or until this many new acknowledged writes
WRITERS = 4
CALL_TIMEOUT = 0.2  # per client_write
CONVERGE_TIMEOUT = 10.0


def repro(seed: int) -> str:
    return f"pytest 'tests/integration/chaos/t50_chaos.py::test_chaos[seed{seed}]'"


class Chaos:
    """One seeded run: the cluster, the writers, the fault loop and the invariant checks."""

    def __init__(self, seed: int, *, faults: bool = True) -> None:
        self.seed = seed
        self.faults = faults
        self.rng = random.Random(seed)
        self.c = Cluster(fast_config(), seed=seed)
        self.acked: dict[bytes, LogId] = {}  # value -> log id acknowledged to the writer
        self.leaders: dict[int, tuple[int, str]] = {}  # term -> (leader id, where seen)
        self.crashed: set[int] = set()
        self.trace: list[str] = []
        self.done = False
        self.reads = 0
        self.progress = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()

    def log(self, what: str) -> None:
        self.trace.append(f"{self.loop.time() - self.t0:6.3f}s {what}")

    # -- checks ---------------------------------------------------------------------------------

    def _leader_of(self, term: int, nid: int, where: str) -> None:
        prev = self.leaders.setdefault(term, (nid, where))
        assert prev[0] == nid, f"two leaders in term {term}: n{prev[0]} ({prev[1]}) and n{nid} ({where})"

    def observe(self) -> None:
        """Election safety from every running node's metrics; no node stopped by itself."""
        for nid, raft in self.c.nodes.items():
            m = raft.metrics
            assert m.running, f"n{nid} stopped on its own: {m.error}"
            if m.state == ServerState.LEADER:
                self._leader_of(m.current_term, nid, f"n{nid} metrics LEADER")
            if m.vote.committed:
                lid = m.vote.leader_id
                self._leader_of(lid.term, lid.node_id, f"n{nid} committed vote")

    def check_all(self) -> None:
        """Every invariant over metrics and the disks."""
        self.observe()
        disks: dict[int, MemDisk] = self.c.disks
        for nid, d in disks.items():
            if d.vote is not None and d.vote.committed:
                lid = d.vote.leader_id
                self._leader_of(lid.term, lid.node_id, f"n{nid} durable vote")
        check_log_matching(disks)
        check_applied_prefix(disks)
        for nid, d in disks.items():
            datas = [x for _, x in d.applied_log]
            assert len(datas) == len(set(datas)), f"n{nid} applied a value twice"
        acked = list(self.acked.items())
        for data, lid in acked:
            n = sum(holds(d, lid, data) for d in disks.values())
            assert n >= MAJORITY, f"acknowledged write {lid!r} {data!r} held by only {n} disks"
        for nid, raft in self.c.nodes.items():
            m = raft.metrics
            if m.state != ServerState.LEADER:
                continue
            for data, lid in acked:
                if lid.term <= m.current_term:
                    assert holds(disks[nid], lid, data), (
                        f"leader completeness: n{nid} leads term {m.current_term} without "
                        f"acknowledged write {lid!r} {data!r}"
                    )

    # -- actors ---------------------------------------------------------------------------------

    async def any_change(self, timeout: float) -> None:
        """Until some running node's metrics change, at most ``timeout`` seconds."""
        futs = [r._core.watch.changed() for r in self.c.nodes.values()]
        if futs:
            await asyncio.wait(futs, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for f in futs:
                f.cancel()

    async def monitor(self) -> None:
        while not self.done:
            self.observe()
            await self.any_change(0.02)

    async def writer(self, w: int) -> None:
        rng = random.Random(self.seed * 101 + w)
        target: int | None = None
        i = 0
        while not self.done:
            nodes = self.c.nodes
            if target not in nodes:
                target = self.c.leader() or rng.choice(sorted(nodes))
            data = f"w{w}-{i}".encode()
            i += 1
            try:
                resp = await asyncio.wait_for(nodes[target].client_write(data), CALL_TIMEOUT)
            except ForwardToLeader as e:
                target = e.leader_id
                if target is None or target not in self.c.nodes:
                    target = None
                    await self.any_change(0.05)
                continue
            except (TimeoutError, Fatal):
                target = None
                continue
            self.acked[data] = resp.log_id
            self.progress.set()

    async def reader(self) -> None:
        """Linearizable reads: a ReadIndex read started after a write was acknowledged
        returns a log id at or after it, and the node has applied up to it."""
        target: int | None = None
        while not self.done:
            nodes = self.c.nodes
            if target not in nodes:
                target = self.c.leader()
                if target is None:
                    await self.any_change(0.05)
                    continue
            floor = max((lid.index for lid in self.acked.values()), default=-1)
            raft = nodes[target]
            try:
                read = await asyncio.wait_for(raft.ensure_linearizable(ReadPolicy.READ_INDEX), CALL_TIMEOUT)
            except (ForwardToLeader, LinearizableReadError, TimeoutError, Fatal):
                target = None
                await self.any_change(0.02)
                continue
            assert read is not None and read.index >= floor, (
                f"linearizable read on n{target} returned {read!r}, before the acknowledged index {floor}"
            )
            applied = raft.metrics.last_applied
            assert applied is not None and applied >= read, f"n{target} read at {read!r} but applied {applied!r}"
            self.reads += 1

    async def hold(self) -> None:
        """Let the current faults act: until STEP_ACKS new acks or the step's time is up."""
        budget = self.rng.uniform(*STEP_HOLD)
        deadline = self.loop.time() + budget
        start = len(self.acked)
        while len(self.acked) - start < STEP_ACKS:
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                return
            self.progress.clear()
            try:
                await asyncio.wait_for(self.progress.wait(), remaining)
            except TimeoutError:
                return

    async def fault(self) -> None:
        rng, c, r = self.rng, self.c, self.c.router
        if not self.faults:
            return
        kind = rng.choice(
            ["partition", "partition", "one_way", "isolate_leader", "drop", "delay", "crash", "crash", "restart", "heal"]
        )
        if kind == "partition":
            ids = list(NODES)
            rng.shuffle(ids)
            k = rng.randint(1, len(ids) - 1)
            a, b = set(ids[:k]), set(ids[k:])
            r.partition(a, b)
            self.log(f"partition {sorted(a)} | {sorted(b)}")
        elif kind == "one_way":
            for _ in range(rng.randint(1, 3)):
                a, b = rng.sample(NODES, 2)
                r.cut(a, b, one_way=True)
                self.log(f"cut {a} -> {b} (one way)")
        elif kind == "isolate_leader":
            lid = c.leader()
            victim = lid if lid is not None else rng.choice(NODES)
            r.isolate(victim)
            self.log(f"isolate n{victim} (leader {lid})")
        elif kind == "drop":
            p = rng.choice([0.05, 0.1, 0.2, 0.3])
            r.set_drop_rate(p)
            self.log(f"drop rate {p}")
        elif kind == "delay":
            hi = rng.choice([2, 5, 10, 20])
            r.set_delay(0, hi)
            self.log(f"delay 0..{hi} ms")
        elif kind == "crash":
            running = sorted(c.nodes)
            if len(self.crashed) < MAX_DOWN:
                lid = c.leader()
                victim = lid if lid is not None and rng.random() < 0.5 else rng.choice(running)
                await c.crash(victim)
                self.crashed.add(victim)
                self.log(f"crash n{victim} (leader {lid})")
            else:
                await self.restart_one()
        elif kind == "restart":
            await self.restart_one()
        else:
            r.heal()
            self.log("heal")
        if kind != "heal" and rng.random() < 0.25:
            r.heal()
            self.log("heal")

    async def restart_one(self) -> None:
        if self.crashed:
            victim = self.rng.choice(sorted(self.crashed))
            self.crashed.discard(victim)
            await self.c.restart(victim)
            self.log(f"restart n{victim}")

    # -- the run --------------------------------------------------------------------------------

    async def run(self) -> None:
        c = self.c
        await c.start(NODES)
        await c.wait_for_leader(timeout=2.0)
        self.log(f"leader n{c.leader()}")
        actors = [asyncio.ensure_future(self.monitor())]
        actors += [asyncio.ensure_future(self.writer(w)) for w in range(WRITERS)]
        actors.append(asyncio.ensure_future(self.reader()))
        try:
            for _ in range(STEPS):
                await self.fault()
                await self.hold()
                self.check_all()
        finally:
            self.done = True
            results = await asyncio.gather(*actors, return_exceptions=True)
        for res in results:
            if isinstance(res, BaseException):
                raise res
        await self.converge()

    async def converge(self) -> None:
        c = self.c
        c.router.heal()
        for nid in sorted(self.crashed):
            await c.restart(nid)
            self.log(f"restart n{nid}")
        self.crashed.clear()
        self.log(f"healed; {len(self.acked)} writes acknowledged")
        deadline = self.loop.time() + CONVERGE_TIMEOUT
        # A write in the final leader's term commits everything before it.
        while True:
            remaining = deadline - self.loop.time()
            assert remaining > 0, "no write committed after healing"
            leader = await c.wait_for_leader(timeout=remaining)
            try:
                resp = await asyncio.wait_for(c.nodes[leader].client_write(b"final"), min(1.0, remaining))
                break
            except (ForwardToLeader, TimeoutError):
                continue
        self.acked[b"final"] = resp.log_id
        self.log(f"final write {resp.log_id!r} on n{leader}")
        # Every node applies the leader's log; a leader elected meanwhile (a heartbeat late on
        # a loaded machine: seen once with the load at 4 per core) appends its own first entry,
        # so the nodes are compared once one leader held its place while they applied its log.
        while True:
            last = c.nodes[leader].metrics.last_log_index
            await c.wait_applied(last, timeout=max(0.1, deadline - self.loop.time()))
            now = await c.wait_for_leader(timeout=max(0.1, deadline - self.loop.time()))
            if now == leader and c.nodes[leader].metrics.last_log_index == last:
                break
            assert deadline > self.loop.time(), f"no leader held its place after healing (n{leader}, then n{now})"
            self.log(f"leader n{now} after n{leader} while the nodes applied")
            leader = now
        self.check_all()
        applied = {nid: c.nodes[nid].metrics.last_applied for nid in NODES}
        assert len(set(applied.values())) == 1, f"nodes applied different last log ids: {applied}"
        logs = {nid: c.disks[nid].applied_log for nid in NODES}
        for nid in NODES:
            assert logs[nid] == logs[leader], f"n{nid} applied_log differs from the leader n{leader}'s"
        final = dict(logs[leader])
        for data, lid in self.acked.items():
            assert final.get(lid) == data, f"acknowledged write {lid!r} {data!r} missing from the applied logs"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", range(SEEDS), ids=lambda s: f"seed{s}")
async def test_chaos(seed: int) -> None:
    chaos = Chaos(seed)
    try:
        await chaos.run()
    except (AssertionError, RaftError, TimeoutError) as e:
        trace = "\n  ".join(chaos.trace[-40:])
        raise AssertionError(
            f"chaos seed={seed} failed: {type(e).__name__}: {e}\n"
            f"reproduce: {repro(seed)}\n"
            f"acknowledged writes: {len(chaos.acked)}; leaders by term: "
            f"{ {t: n for t, (n, _) in sorted(chaos.leaders.items())} }\n"
            f"fault trace (last 40):\n  {trace}"
        ) from e
    finally:
        await chaos.c.shutdown()


@pytest.mark.timeout(30)
async def test_chaos_harness_makes_progress_without_faults() -> None:
    """The harness itself works: with no fault the writers and the reader make progress and
    every check passes (a seed whose faults block all writes is fine; a harness that never
    writes is not)."""
    chaos = Chaos(0, faults=False)
    try:
        await chaos.run()
    finally:
        await chaos.c.shutdown()
    assert len(chaos.acked) > 50 and chaos.reads > 5, (len(chaos.acked), chaos.reads)
