"""A deterministic simulator: the real ``Engine`` and ``RaftCore`` under faults, in virtual time.

One run (``Simulation(seed).run()``) builds a cluster of 3 or 5 nodes on the in-process
router, with simulated disks, inside an event loop whose clock is virtual: when nothing is
runnable, time jumps to the next timer. Every random choice (the cluster's configuration,
fault schedule, client workload, message drops and delays, disk latencies, election
timeouts) comes from the seed, and the loop runs callbacks in a fixed order, so the same seed
gives the same run, byte for byte (the trace and the history are compared in the tests).

During the run, clients write and read a few keys while a fault schedule partitions the
network (symmetric, one-way, bridge), drops, duplicates and delays messages, crashes nodes
(losing what their disk had not flushed) and restarts them, slows disks and pauses nodes.
After every fault step and every few milliseconds of virtual time the checker verifies:

- election safety: at most one leader per term;
- log matching: two logs holding the same log id at an index agree on every entry before it;
- leader completeness: a leader holds every entry committed in an earlier or equal term;
- state machine safety: every node applied the same entry at each index;
- committed entries never change; commit, applied and vote never go back on a node (the vote
  not even across a restart); no node fails with anything but a deliberate stop.

At the end all faults heal and crashed nodes restart: the cluster must elect a leader, serve
a write and converge (liveness). Then the client history is checked for linearizability
(``openraft_py.testing.lincheck``).

Command line (``make sim SEEDS=N``)::

    python -m openraft_py.testing.sim --seeds 1000           # seeds 0..999, progress, summary
    python -m openraft_py.testing.sim --seed 17 --trace      # replay one seed, print its trace
    python -m openraft_py.testing.sim --seeds 200 --fault grant_without_log_check
"""

from __future__ import annotations

import asyncio
import hashlib
import selectors
import sys
from dataclasses import dataclass, field
from typing import Any

from ..config import Config, SnapshotPolicy
from ..errors import Fatal, ForwardToLeader, LinearizableReadError, Stopped, WaitTimeout
from ..raft import Raft
from ..storage import IOFlushed
from ..storage.memory import KvCas, KvDelete, KvGet, KvSet, MemDisk, MemLogStore, MemStateMachine, encode_kv
from ..types import Entry, LogId, NodeId, ReadPolicy, ServerState, Vote
from . import lincheck
from .cluster import Cluster

ENGINE_FAULTS = (
    "grant_without_log_check",
    "commit_previous_term",
    "reply_before_vote_persisted",
    "apply_before_commit",
    "expired_lease_read",
)
"""Bugs the simulator can inject into the engine (test-only switches) to prove it finds them."""


class SimStuck(RuntimeError):
    """Nothing can run and no timer is set: the simulated program is deadlocked."""


# -- virtual time -----------------------------------------------------------------------------


class _InstantSelector(selectors.BaseSelector):
    """A selector that never waits: a wait of ``t`` seconds advances the virtual clock by
    ``t`` and reports no IO."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._loop = loop
        self._map: dict[int, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = selectors._fileobj_to_fd(fileobj)  # type: ignore[attr-defined]
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._map[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._map.pop(selectors._fileobj_to_fd(fileobj))  # type: ignore[attr-defined]

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise SimStuck("no runnable callback and no timer: the simulation is deadlocked")
        if timeout > 0:
            self._loop._now += timeout
        return []

    def get_map(self) -> dict[int, selectors.SelectorKey]:  # type: ignore[override]
        return self._map

    def close(self) -> None:
        self._map.clear()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop whose ``time()`` is virtual: it starts at 0 and jumps to the
    next timer whenever nothing is ready. Single-threaded and deterministic."""

    # A run that spins without letting virtual time pass, or runs past this much virtual
    # time, is reported as stuck instead of hanging the test run.
    MAX_ITERATIONS_WITHOUT_TIME = 200_000
    MAX_VIRTUAL_SECONDS = 600.0

    def __init__(self) -> None:
        self._now = 0.0
        self._spins = 0
        self._spin_at = 0.0
        super().__init__(selector=_InstantSelector(self))

    def time(self) -> float:
        return self._now

    def _run_once(self) -> None:
        if self._now != self._spin_at:
            self._spin_at = self._now
            self._spins = 0
        self._spins += 1
        if self._spins > self.MAX_ITERATIONS_WITHOUT_TIME:
            raise SimStuck(f"livelock: {self._spins} loop iterations at virtual time {self._now:.6f}s")
        if self._now > self.MAX_VIRTUAL_SECONDS:
            raise SimStuck(f"ran past {self.MAX_VIRTUAL_SECONDS} virtual seconds")
        super()._run_once()  # type: ignore[misc]


# -- simulated disk ---------------------------------------------------------------------------


class SimDisk(MemDisk):
    """A ``MemDisk`` that knows what is flushed. Invariant: ``entries[: durable_end - offset]``
    are durable; entries after that are lost by ``crash()``."""

    def __init__(self) -> None:
        super().__init__()
        self.durable_end = 0
        self.gen = 0  # bumped by every truncation: older pending flushes no longer apply
        self.slow = False


class SimLogStore(MemLogStore):
    """A ``MemLogStore`` whose appends become durable after a random virtual delay, in
    order; votes are written after a delay too. Truncate and purge are durable on return
    (they also make everything before them durable, as a write-ahead log would)."""

    def __init__(self, disk: SimDisk, sim: Simulation) -> None:
        super().__init__(disk)
        self._sim = sim
        self._handles: list[asyncio.TimerHandle] = []
        self._last_flush_at = 0.0

    @property
    def sdisk(self) -> SimDisk:
        return self._disk  # type: ignore[return-value]

    async def append(self, entries: list[Entry], callback: IOFlushed) -> None:
        await super().append(entries, _NoCallback())
        disk = self.sdisk
        end = disk.offset + len(disk.entries)
        loop = asyncio.get_running_loop()
        at = max(loop.time() + self._sim.disk_latency(disk), self._last_flush_at)
        self._last_flush_at = at
        self._handles.append(loop.call_at(at, self._flushed, end, disk.gen, callback))

    def _flushed(self, end: int, gen: int, callback: IOFlushed) -> None:
        disk = self.sdisk
        if gen == disk.gen and end > disk.durable_end:
            disk.durable_end = end
        callback.io_completed(None)

    async def save_vote(self, vote: Vote) -> None:
        await asyncio.sleep(self._sim.disk_latency(self.sdisk))
        await super().save_vote(vote)

    async def truncate_after(self, log_id: LogId | None) -> None:
        await super().truncate_after(log_id)
        disk = self.sdisk
        disk.gen += 1
        disk.durable_end = disk.offset + len(disk.entries)

    async def purge(self, log_id: LogId) -> None:
        await super().purge(log_id)
        disk = self.sdisk
        disk.durable_end = max(disk.durable_end, disk.offset)

    def crash(self) -> None:
        """The process died: pending flushes never happen, unflushed entries are gone."""
        for h in self._handles:
            h.cancel()
        self._handles.clear()
        disk = self.sdisk
        keep = max(0, disk.durable_end - disk.offset)
        del disk.entries[keep:]
        disk.durable_end = disk.offset + len(disk.entries)


class _NoCallback:
    def io_completed(self, error: BaseException | None = None) -> None:
        pass


class SimClock:
    """A node's clock: the loop's virtual time; ``sleep`` also waits while the node is
    paused (its timers freeze, as in a long GC pause or SIGSTOP)."""

    def __init__(self, sim: Simulation, node_id: NodeId) -> None:
        self._sim = sim
        self._id = node_id

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        while True:
            ev = self._sim.paused.get(self._id)
            if ev is None or ev.is_set():
                return
            await ev.wait()


# -- the checker ------------------------------------------------------------------------------


class Violation(AssertionError):
    """A safety or liveness property broke."""


class Checker:
    """Checks the Raft safety properties over the nodes' states, step after step."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.leaders: dict[int, NodeId] = {}  # term -> leader
        # index -> (entry, term of the node that first saw it committed)
        self.committed: dict[int, tuple[Entry, int]] = {}
        self.applied: dict[int, tuple[LogId, bytes]] = {}
        self.last: dict[NodeId, tuple[int, int, LogId | None, LogId | None]] = {}  # boot, ...
        self.votes: dict[NodeId, Vote] = {}
        self.applied_seen: dict[NodeId, int] = {}
        # (voter, term) -> the candidate it voted for, as seen on the wire: a granted vote
        # response, or a candidate's own vote request (it voted for itself).
        self.granted: dict[tuple[NodeId, int], NodeId] = {}
        self.pending: str | None = None

    def on_request(self, rpc: str, source: NodeId, target: NodeId, req: Any) -> None:
        """Router hook: a candidate asking for votes has voted for itself in that term."""
        if rpc == "vote":
            self._voted(source, req.vote.term, req.vote.leader_id.node_id)

    def on_response(self, rpc: str, source: NodeId, target: NodeId, req: Any, resp: Any) -> None:
        """Router response hook: record every granted vote."""
        if rpc == "vote" and resp.vote_granted:
            self._voted(target, req.vote.term, req.vote.leader_id.node_id)

    def _voted(self, voter: NodeId, term: int, candidate: NodeId) -> None:
        prev = self.granted.setdefault((voter, term), candidate)
        if prev != candidate and self.pending is None:
            # Raised from a router hook the runtime would swallow: report at the next check.
            self.pending = f"n{voter} voted twice in term {term}: for n{prev} and for n{candidate}"
            self.sim.log(f"VIOLATION seen: {self.pending}")

    def check(self, where: str) -> None:
        if self.pending is not None:
            raise Violation(self.pending)
        sim = self.sim
        c = sim.cluster
        for nid, raft in c.nodes.items():
            core = raft._core
            if core.fatal is not None and not isinstance(core.fatal, Stopped):
                raise Violation(f"node {nid} failed: {core.fatal!r}")
            eng = core.engine
            st = eng.state
            try:
                st.validate()
            except Fatal as e:
                raise Violation(str(e)) from e
            # Election safety.
            if eng.leader is not None:
                term = st.vote.term
                prev = self.leaders.setdefault(term, nid)
                if prev != nid:
                    raise Violation(f"two leaders in term {term}: n{prev} and n{nid}")
            # Monotonic per incarnation: committed, applied; the vote across restarts too.
            boot = sim.boots[nid]
            ci = st.committed_index()
            ai = -1 if st.applied is None else st.applied.index
            old = self.last.get(nid)
            if old is not None and old[0] == boot and (ci < old[1] or ai < old[2]):
                raise Violation(f"n{nid} went back: committed {old[1]}->{ci} applied {old[2]}->{ai}")
            self.last[nid] = (boot, ci, ai, None)
            # A vote that was never durable may be lost by a crash (nothing depended on it);
            # a durable one never goes back, even across restarts.
            fv = st.io.flushed_vote
            v = self.votes.get(nid)
            if v is not None and not fv.is_ge(v):
                raise Violation(f"n{nid} durable vote went backward: {v!r} -> {fv!r}")
            self.votes[nid] = fv
            disk = c.disks[nid]
            # Committed entries never change.
            log = disk.entries
            off = disk.offset
            for i in range(max(off, ci - 64 if ci - 64 > 0 else 0), ci + 1):
                k = i - off
                if k < 0 or k >= len(log):
                    continue
                e = log[k]
                seen = self.committed.get(i)
                if seen is None:
                    self.committed[i] = (e, st.vote.term)
                elif seen[0] != e:
                    raise Violation(f"committed entry at {i} changed: {seen[0]!r} then {e!r} on n{nid}")
            # State machine safety (the applied log of Normal entries).
            alog = disk.applied_log
            start = self.applied_seen.get(nid, 0)
            if start > len(alog):
                start = 0
            for lid, data in alog[start:]:
                seen2 = self.applied.get(lid.index)
                if seen2 is None:
                    self.applied[lid.index] = (lid, data)
                elif seen2 != (lid, data):
                    raise Violation(f"n{nid} applied {lid!r} {data!r} at {lid.index}, another node applied {seen2!r}")
            self.applied_seen[nid] = len(alog)
        self._check_logs()

    def _check_logs(self) -> None:
        c = self.sim.cluster
        ids = sorted(c.disks)
        logs = {nid: (c.disks[nid].offset, c.disks[nid].entries) for nid in ids}
        # Leader completeness: a leader of term t holds every entry first seen committed in a
        # term <= t (entries purged from its log are covered by its snapshot).
        for nid, raft in c.nodes.items():
            eng = raft._core.engine
            if eng.leader is None:
                continue
            term = eng.state.vote.term
            off, log = logs[nid]
            for i, (e, seen_term) in self.committed.items():
                if seen_term > term or i < off:
                    continue
                if i - off >= len(log) or log[i - off] != e:
                    raise Violation(f"leader n{nid} (term {term}) lacks committed entry {e!r} at {i}")
        # Log matching, pairwise: find the highest common index with equal log ids and require
        # equal prefixes.
        for a_i, a in enumerate(ids):
            oa, la = logs[a]
            for b in ids[a_i + 1 :]:
                ob, lb = logs[b]
                lo = max(oa, ob)
                hi = min(oa + len(la), ob + len(lb))
                for i in range(hi - 1, lo - 1, -1):
                    if la[i - oa].log_id == lb[i - ob].log_id:
                        if la[lo - oa : i - oa + 1] != lb[lo - ob : i - ob + 1]:
                            raise Violation(f"log matching broken between n{a} and n{b} below index {i}")
                        break


# -- the run ----------------------------------------------------------------------------------


@dataclass
class SimResult:
    """What one run found. ``ok`` is False when ``violation`` is set."""

    seed: int
    ok: bool
    violation: str | None
    trace: list[str]
    history: list[lincheck.Operation]
    virtual_seconds: float
    ops: int
    faults: tuple[str, ...] = ()
    stats: dict[str, int] = field(default_factory=dict)

    def digest(self) -> str:
        """A hash of the trace and the history: equal for equal runs."""
        h = hashlib.sha256()
        for line in self.trace:
            h.update(line.encode())
            h.update(b"\n")
        for op in self.history:
            h.update(lincheck.describe_op(op).encode())
            h.update(b"\n")
        return h.hexdigest()

    def replay_command(self) -> str:
        """A one-line command that replays this run."""
        f = "".join(f" --fault {x}" for x in self.faults)
        return f"python -m openraft_py.testing.sim --seed {self.seed}{f} --trace"


class Simulation:
    """One seeded run. ``faults`` names engine bugs to inject (``ENGINE_FAULTS``)."""

    def __init__(self, seed: int, *, faults: tuple[str, ...] | frozenset[str] = (), steps: int = 30) -> None:
        import random

        for f in faults:
            if f not in ENGINE_FAULTS:
                raise ValueError(f"unknown engine fault {f!r}; known: {', '.join(ENGINE_FAULTS)}")
        self.seed = seed
        self.faults = tuple(sorted(faults))
        self.rng = random.Random(seed)
        self.steps = steps
        self.trace: list[str] = []
        self.history: list[lincheck.Operation] = []
        self.paused: dict[NodeId, asyncio.Event] = {}
        self.boots: dict[NodeId, int] = {}
        self.crashed: set[NodeId] = set()
        self.stats: dict[str, int] = {}
        rng = self.rng
        self.n_nodes = rng.choice((3, 3, 5))
        emin = rng.choice((40, 60, 100, 150))
        self.config = Config(
            cluster_name=f"sim-{seed}",
            election_timeout_min=emin,
            election_timeout_max=emin * 2,
            heartbeat_interval=max(5, emin // 4),
            max_payload_entries=rng.choice((1, 2, 3, 16, 300)),
            max_inflight_requests=rng.choice((1, 2, 8)),
            snapshot_policy=SnapshotPolicy.never(),
            lease_drift_margin=min(20, emin // 3),
        )
        self.disk_max_ms = rng.choice((0.2, 1.0, 5.0))
        self.profile = rng.choice(("mixed", "mixed", "elections", "partitions"))
        if self.n_nodes == 3 and self.config.max_payload_entries == 1 and rng.random() < 0.5:
            self.profile = "figure8"
        self.cluster: Cluster = None  # type: ignore[assignment]
        self.checker = Checker(self)
        self._stop_clients = False

    # -- helpers -----------------------------------------------------------------------------

    def log(self, msg: str) -> None:
        t = asyncio.get_running_loop().time()
        self.trace.append(f"{t * 1000:10.3f} {msg}")

    def disk_latency(self, disk: SimDisk) -> float:
        hi = 30.0 if disk.slow else self.disk_max_ms
        return self.rng.uniform(0.05, hi) / 1000.0

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def _on_start(self, nid: NodeId, raft: Raft) -> None:
        raft._core.engine.faults = set(self.faults)
        self.boots[nid] = self.boots.get(nid, 0) + 1

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> SimResult:
        """Run the simulation to the end in a fresh virtual-time loop."""
        loop = VirtualTimeLoop()
        violation: str | None = None
        try:
            loop.run_until_complete(self._main())
        except Violation as e:
            violation = str(e)
        except SimStuck as e:
            violation = f"stuck: {e}"
        except Exception as e:  # noqa: BLE001 - a crash of the run itself is reported with its seed
            import traceback

            violation = f"the simulation raised {type(e).__name__}: {e}\n{traceback.format_exc()}"
        finally:
            try:
                loop.run_until_complete(self._teardown())
            except Exception:  # noqa: BLE001 - the run already failed or finished
                pass
            loop.close()
        if violation is not None:
            self.trace.append(f"VIOLATION {violation}")
        return SimResult(
            seed=self.seed,
            ok=violation is None,
            violation=violation,
            trace=self.trace,
            history=self.history,
            virtual_seconds=loop._now,
            ops=len(self.history),
            faults=self.faults,
            stats=dict(self.stats),
        )

    async def _teardown(self) -> None:
        self._stop_clients = True
        if self.cluster is not None:
            for ev in self.paused.values():
                ev.set()
            self.paused.clear()
            await self.cluster.shutdown()

    async def _main(self) -> None:
        ids = set(range(1, self.n_nodes + 1))
        self.cluster = Cluster(
            self.config,
            seed=self.seed,
            state_machine=lambda disk: MemStateMachine(disk),
            log_store=lambda nid, disk: SimLogStore(disk, self),  # type: ignore[arg-type]
            disk=lambda nid: SimDisk(),
            clock=lambda nid: SimClock(self, nid),
            on_start=self._on_start,
        )
        c = self.cluster
        self.log(
            f"start: {self.n_nodes} nodes, profile {self.profile}, {self.config!r}, "
            f"disk <= {self.disk_max_ms} ms, faults={self.faults}"
        )
        await c.start(ids)
        # The cluster exists once its first membership entry is durable on a quorum: wait for
        # the first leader to commit before any fault (a lost initialize is an operator redo).
        lid = await c.wait_for_leader(timeout=10.0)
        await c.nodes[lid].wait(10.0).metrics(lambda m: m.committed is not None, "first commit")
        self.log(f"initialized: n{lid} leads")
        c.router.add_hook(self.checker.on_request)
        c.router.add_response_hook(self.checker.on_response)
        clients = [asyncio.ensure_future(self._client(k)) for k in range(4)]
        checker = asyncio.ensure_future(self._check_loop())
        try:
            for step in range(self.steps):
                await self._fault_step(step)
                self.checker.check(f"step {step}")
                await asyncio.sleep(self.rng.uniform(0.01, 0.3))
                self.checker.check(f"after step {step}")
            await self._heal_all()
            self._stop_clients = True
            await asyncio.gather(*clients)
            await self._converge()
        finally:
            self._stop_clients = True
            checker.cancel()
            for t in clients:
                t.cancel()
        if checker.done() and not checker.cancelled() and checker.exception() is not None:
            raise checker.exception()  # type: ignore[misc]
        result = lincheck.check(self.history, lincheck.kv_register, timeout=30.0)
        if result.ok is False:
            raise Violation("history is not linearizable:\n" + result.explain())
        self.log(f"end: {len(self.history)} operations linearizable ({result.ok})")

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(0.005)
            self.checker.check("periodic")

    # -- faults ------------------------------------------------------------------------------

    # Fault mixes: each run draws one. "mixed" exercises everything; "elections" kills and
    # crash-restarts nodes around elections; "partitions" favours network faults.
    PROFILES: dict[str, dict[str, int]] = {
        "mixed": {
            "partition": 12, "one_way": 8, "bridge": 6, "isolate": 6, "heal": 12, "drops": 6,
            "duplicates": 5, "delay": 6, "crash": 14, "restart": 10, "slow_disk": 5, "pause": 5,
            "crash_on_rpc": 3, "leader_crash_after": 2, "strand_leader": 3, "pause_leader": 3,
        },
        "elections": {
            "isolate": 6, "heal": 10, "delay": 10, "crash": 18, "restart": 18, "pause": 6,
            "crash_on_rpc": 22, "leader_crash_after": 6, "strand_leader": 10, "slow_disk": 4,
            "pause_leader": 10,
        },
        "figure8": {"figure8": 30, "heal": 10, "crash": 5, "restart": 10, "delay": 5},
        "partitions": {
            "partition": 20, "one_way": 14, "bridge": 10, "isolate": 10, "heal": 16, "drops": 8,
            "duplicates": 6, "delay": 8, "crash": 4, "restart": 4, "pause_leader": 4,
        },
    }

    async def _fault_step(self, step: int) -> None:
        rng = self.rng
        weights = self.PROFILES[self.profile]
        names = list(weights)
        action = rng.choices(names, weights=[weights[n] for n in names])[0]
        await getattr(self, f"_fault_{action}")()

    async def _fault_partition(self) -> None:
        ids = sorted(self.cluster.disks)
        a = set(self.rng.sample(ids, self.rng.randint(1, len(ids) - 1)))
        self.cluster.router.partition(a, set(ids) - a)
        self.log(f"partition {sorted(a)} | {sorted(set(ids) - a)}")

    async def _fault_one_way(self) -> None:
        x, y = self.rng.sample(sorted(self.cluster.disks), 2)
        self.cluster.router.cut(x, y, one_way=True)
        self.log(f"cut one-way n{x} -> n{y}")

    async def _fault_bridge(self) -> None:
        ids = sorted(self.cluster.disks)
        bridge = self.rng.choice(ids)
        rest = [i for i in ids if i != bridge]
        self.rng.shuffle(rest)
        a, b = rest[: len(rest) // 2], rest[len(rest) // 2 :]
        for x in a:
            for y in b:
                self.cluster.router.cut(x, y)
        self.log(f"bridge n{bridge} between {sorted(a)} and {sorted(b)}")

    async def _fault_isolate(self) -> None:
        n = self._pick_crash_target(sorted(self.cluster.disks))
        self.cluster.router.isolate(n)
        self.log(f"isolate n{n}")

    async def _fault_heal(self) -> None:
        self.cluster.router.heal()
        self.log("heal network")

    async def _fault_drops(self) -> None:
        p = self.rng.choice((0.05, 0.1, 0.3))
        self.cluster.router.set_drop_rate(p)
        self.log(f"drop rate {p}")

    async def _fault_duplicates(self) -> None:
        p = self.rng.choice((0.05, 0.2))
        self.cluster.router.set_duplicate_rate(p)
        self.log(f"duplicate rate {p}")

    async def _fault_delay(self) -> None:
        hi = self.rng.choice((2, 10, 40))
        self.cluster.router.set_delay(0, hi)
        self.log(f"delay 0..{hi} ms")

    async def _fault_crash(self) -> None:
        alive = sorted(self.cluster.nodes)
        majority = len(self.cluster.disks) // 2 + 1
        # Keep a majority of nodes running most of the time.
        if alive and (len(alive) > majority or self.rng.random() < 0.2):
            await self._crash(self._pick_crash_target(alive))

    async def _fault_restart(self) -> None:
        if self.crashed:
            await self._restart(self.rng.choice(sorted(self.crashed)))

    async def _fault_slow_disk(self) -> None:
        n = self.rng.choice(sorted(self.cluster.disks))
        d = self.cluster.disks[n]
        d.slow = not d.slow  # type: ignore[attr-defined]
        self.log(f"disk of n{n} {'slow' if d.slow else 'fast'}")  # type: ignore[attr-defined]

    async def _fault_pause(self) -> None:
        alive = sorted(self.cluster.nodes)
        if alive:
            n = self._pick_crash_target(alive)
            if n not in self.paused:
                await self._pause(n, self.rng.uniform(0.05, 0.5))

    async def _fault_pause_leader(self) -> None:
        # A leader that stalls for several election timeouts (GC pause, SIGSTOP) and wakes
        # up still believing it leads: its lease must have run out by then.
        lid = self.cluster.leader()
        if lid is not None and lid not in self.paused:
            emax = self.config.election_timeout_max / 1000.0
            await self._pause(lid, self.rng.uniform(2 * emax, 5 * emax))

    async def _fault_crash_on_rpc(self) -> None:
        # Crash right after a vote request or an append arrives, then restart at once: the
        # narrow windows of IO ordering (a grant or an ack racing its fsync).
        alive = sorted(self.cluster.nodes)
        if alive:
            n = self.rng.choice(alive)
            what = self.rng.choice(("grant", "vote", "append_entries", "any"))
            if what == "grant":
                self._arm_crash_after_grant(n)
            else:
                self._arm_crash_on_rpc(n, what)

    async def _fault_leader_crash_after(self) -> None:
        # Crash the leader after it sent a few more appends: partial replication.
        lid = self.cluster.leader()
        if lid is not None:
            self._arm_leader_crash(lid, self.rng.randint(1, 6))

    async def _fault_figure8(self) -> None:
        """The thesis' Figure 3.7 (the paper's Figure 8) as a fault schedule, on 3 nodes:

        1. the leader A can no longer send appends; the writes clients still send it stay
           on A alone (an entry of A's term at index i); A crashes;
        2. no survivor can send appends: the next leader B appends its blank entry at i (a
           later term) on itself alone; B crashes;
        3. A restarts and wins (its log is longer than C's), re-replicates its old entry i
           to C, and crashes right after C's acknowledgement reaches it (one entry per
           request, so i travels without A's own blank entry);
        4. B restarts: its entry at i has a later term than C's, so it can win and overwrite
           index i. That is safe only if step 3 did not commit i by counting replicas.
        """
        c = self.cluster
        ids = sorted(c.disks)
        a = c.leader()
        if len(ids) != 3 or a is None or self.crashed or self.paused or len(c.nodes) != 3:
            return
        from ..errors import Unreachable

        router = c.router
        router.heal()
        others = [x for x in ids if x != a]
        self.log(f"figure 8: strand leader n{a}")
        router.set_rpc_failure(a, "out", Unreachable, rpc="append_entries")
        await asyncio.sleep(0.03)
        await self._crash(a)
        for x in others:
            router.set_rpc_failure(x, "out", Unreachable, rpc="append_entries")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3.0
        b = None
        while loop.time() < deadline:
            lid = c.leader()
            if lid in others:
                b = lid
                break
            await asyncio.sleep(0.002)
        if b is None:
            router.heal()
            return
        await asyncio.sleep(0.01)
        await self._crash(b)
        for x in ids:
            router.set_rpc_failure(x, "out", None, rpc="append_entries")
        armed = [True]
        cnode = [x for x in others if x != b][0]

        def rhook(name: str, source: NodeId, target: NodeId, req: Any, resp: Any) -> None:
            if armed[0] and source == a and target == cnode and name == "append_entries" and resp.success and req.entries:
                armed[0] = False
                loop.call_later(0.0005, lambda: asyncio.ensure_future(self._crash(a)))

        router.add_response_hook(rhook)
        await self._restart(a)
        deadline = loop.time() + 3.0
        while a in c.nodes and loop.time() < deadline:
            await asyncio.sleep(0.002)
        armed[0] = False
        await self._restart(b)
        self.log("figure 8: done")

    async def _fault_strand_leader(self) -> None:
        # Cut the leader off so that what clients still send it stays on it alone, then
        # crash it a moment later: old-term entries that exist on one node only (the setup
        # of the thesis' Figure 3.7).
        lid = self.cluster.leader()
        if lid is None:
            return
        self.cluster.router.isolate(lid)
        wait = self.rng.uniform(0.005, 0.05)
        self.log(f"strand leader n{lid}: isolate, crash in {wait * 1000:.0f} ms")
        await asyncio.sleep(wait)
        await self._crash(lid)

    def _pick_crash_target(self, alive: list[NodeId]) -> NodeId:
        leader = self.cluster.leader()
        if leader is not None and self.rng.random() < 0.5:
            return leader
        return self.rng.choice(alive)

    async def _crash(self, n: NodeId) -> None:
        c = self.cluster
        if n not in c.nodes:
            return
        store = c.log_stores.get(n)
        self.log(f"crash n{n}")
        self._count("crash")
        ev = self.paused.pop(n, None)
        if ev is not None:
            ev.set()
        self.checker.check(f"before crash of n{n}")
        st = c.nodes[n]._core.engine.state
        if st.vote != st.io.flushed_vote:
            self._count("crash_with_unflushed_vote")
        # Stop first (no more IO completes), then lose what was not flushed.
        await c.crash(n)
        if isinstance(store, SimLogStore):
            store.crash()
        self.crashed.add(n)

    async def _restart(self, n: NodeId) -> None:
        self.log(f"restart n{n}")
        self._count("restart")
        self.crashed.discard(n)
        await self.cluster.add_node(n)

    async def _pause(self, n: NodeId, seconds: float) -> None:
        ev = asyncio.Event()
        self.paused[n] = ev
        self.cluster.router.isolate(n)
        self.log(f"pause n{n} for {seconds * 1000:.0f} ms")
        self._count("pause")

        def resume() -> None:
            if self.paused.get(n) is ev:
                del self.paused[n]
                ev.set()
                self.log(f"resume n{n}")

        asyncio.get_running_loop().call_later(seconds, resume)

    def _arm_crash_on_rpc(self, n: NodeId, rpc: str) -> None:
        """Crash ``n`` a moment after it next receives ``rpc`` (or either, for ``"any"``),
        and restart it a moment later."""
        rng = self.rng
        armed = [True]
        self.log(f"arm crash-restart of n{n} on its next {rpc}")

        def hook(name: str, source: NodeId, target: NodeId, req: Any) -> None:
            if armed[0] and target == n and (name == rpc or rpc == "any" and name in ("vote", "append_entries")):
                armed[0] = False
                delay = rng.uniform(0.0, self.disk_max_ms * 2) / 1000.0
                down = rng.uniform(0.001, 0.03)
                asyncio.get_running_loop().call_later(delay, lambda: asyncio.ensure_future(self._crash_restart(n, down)))

        self.cluster.router.add_hook(hook)

    def _arm_crash_after_grant(self, n: NodeId) -> None:
        """Crash ``n`` right after it answers a vote request with a grant (the reply has
        left; whatever the node had not flushed by then is lost), then restart it."""
        rng = self.rng
        armed = [True]
        self.log(f"arm crash-restart of n{n} after its next vote grant")

        def rhook(name: str, source: NodeId, target: NodeId, req: Any, resp: Any) -> None:
            if armed[0] and target == n and name == "vote" and resp.vote_granted:
                armed[0] = False
                down = rng.uniform(0.001, 0.03)
                asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self._crash_restart(n, down)))

        self.cluster.router.add_response_hook(rhook)

    def _arm_leader_crash(self, n: NodeId, after: int) -> None:
        """Crash the leader ``n`` once it sent ``after`` more appends."""
        left = [after]
        self.log(f"arm crash of leader n{n} after {after} appends")

        def hook(name: str, source: NodeId, target: NodeId, req: Any) -> None:
            if left[0] > 0 and source == n and name == "append_entries" and req.entries:
                left[0] -= 1
                if left[0] == 0:
                    asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self._crash(n)))

        self.cluster.router.add_hook(hook)

    async def _crash_restart(self, n: NodeId, down: float) -> None:
        if n not in self.cluster.nodes:
            return
        await self._crash(n)
        await asyncio.sleep(down)
        if n in self.crashed:
            await self._restart(n)
            if self.rng.random() < 0.5:
                # Comes back alone: it will run for election from whatever vote it kept.
                self.cluster.router.isolate(n)
                self.log(f"isolate n{n}")

    async def _heal_all(self) -> None:
        c = self.cluster
        self.log("heal all: network, pauses, disks, crashed nodes")
        c.router.heal()
        c.router.clear_hooks()
        c.router.add_hook(self.checker.on_request)
        c.router.add_response_hook(self.checker.on_response)
        for n, ev in list(self.paused.items()):
            del self.paused[n]
            ev.set()
        for d in c.disks.values():
            d.slow = False  # type: ignore[attr-defined]
        for n in sorted(self.crashed):
            await self._restart(n)

    async def _converge(self) -> None:
        """Liveness: after healing, one leader, a write succeeds, every node converges."""
        c = self.cluster
        deadline = asyncio.get_running_loop().time() + 20.0
        while True:
            try:
                lid = await c.wait_for_leader(timeout=max(0.1, deadline - asyncio.get_running_loop().time()))
                resp = await asyncio.wait_for(c.nodes[lid].client_write(encode_kv(KvSet("final", "v"))), 2.0)
                break
            except (ForwardToLeader, Fatal, TimeoutError, WaitTimeout) as e:
                if asyncio.get_running_loop().time() > deadline:
                    raise Violation(f"liveness: no leader serving writes 20 s after healing ({e!r})") from None
        self.log(f"converge: n{lid} leads, final write at {resp.log_id!r}")
        try:
            await c.wait_applied(resp.log_id.index, timeout=10.0)
        except WaitTimeout as e:
            raise Violation(f"liveness: nodes did not converge: {e}") from None
        self.checker.check("converged")
        ref = None
        for nid in sorted(c.nodes):
            alog = [x for x in c.disks[nid].applied_log if x[0].index <= resp.log_id.index]
            if ref is None:
                ref = alog
            elif alog[-len(ref) :] != ref[-len(alog) :] if alog and ref else False:
                raise Violation(f"n{nid} applied a different sequence than the others")

    # -- the workload ------------------------------------------------------------------------

    async def _client(self, k: int) -> None:
        rng = self.rng
        c = self.cluster
        loop = asyncio.get_running_loop()
        seq = 0
        seen: dict[str, str | None] = {}
        # Like a real client, keep talking to the node believed to lead until it refuses
        # or fails; look the leader up again then (and now and then anyway).
        believed: NodeId | None = None
        timeout = rng.choice((0.05, 0.2, 1.0))
        while not self._stop_clients:
            await asyncio.sleep(rng.uniform(0.0, 0.02))
            if self._stop_clients:
                return
            key = f"k{rng.randrange(3)}"
            r = rng.random()
            seq += 1
            if believed is None or believed not in c.nodes or rng.random() < 0.05:
                lid = c.leader()
                believed = lid if lid is not None and rng.random() < 0.9 else rng.choice(sorted(c.disks))
            target = believed
            raft = c.nodes.get(target)
            if raft is None:
                believed = None
                continue
            call = loop.time()
            if r < 0.40:
                value = f"c{k}-{seq}"
                op = lincheck.Operation(k, "put", key, value, None, call)
                cmd: Any = KvSet(key, value)
            elif r < 0.55:
                op = lincheck.Operation(k, "cas", key, (seen.get(key), f"c{k}-{seq}"), None, call)
                cmd = KvCas(key, seen.get(key), f"c{k}-{seq}")
            elif r < 0.60:
                op = lincheck.Operation(k, "delete", key, None, None, call)
                cmd = KvDelete(key)
            elif r < 0.75:
                op = lincheck.Operation(k, "get", key, None, None, call)
                cmd = KvGet(key)
            else:
                # A linearizable read served from the leader's state machine.
                policy = ReadPolicy.LEASE_READ if rng.random() < 0.5 else ReadPolicy.READ_INDEX
                if not await self._read(k, raft, target, key, call, policy, timeout):
                    believed = None
                continue
            try:
                resp = await asyncio.wait_for(raft.client_write(encode_kv(cmd)), timeout)
            except ForwardToLeader:
                believed = None
                continue  # never appended, or cut off the log: did not take effect
            except (Fatal, TimeoutError):
                believed = None
                self._record(op, None, None, None)
                continue
            out = resp.data
            if op.op == "cas":
                applied, current = out
                seen[key] = current
                self._record(op, True, bool(applied), loop.time())
            elif op.op == "get":
                seen[key] = out
                self._record(op, True, out, loop.time())
            else:
                if op.op == "put":
                    seen[key] = op.value
                self._record(op, True, None, loop.time())

    async def _read(
        self, k: int, raft: Raft, target: NodeId, key: str, call: float, policy: ReadPolicy, timeout: float
    ) -> bool:
        """A linearizable read of ``key`` on ``target``; False when it was refused."""
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(raft.ensure_linearizable(policy), timeout)
        except (ForwardToLeader, LinearizableReadError, Fatal, TimeoutError):
            return False  # a read that did not complete constrains nothing
        sm = self.cluster.state_machines.get(target)
        if sm is None:
            return False
        value = sm.data.get(key)
        self._record(lincheck.Operation(k, "get", key, None, None, call), True, value, loop.time())
        return True

    def _record(self, op: lincheck.Operation, ok: bool | None, output: Any, ret: float | None) -> None:
        done = lincheck.Operation(
            op.client, op.op, op.key, op.value, output, op.call, lincheck.INF if ret is None else ret, ok
        )
        self.history.append(done)


def run_seed(seed: int, faults: tuple[str, ...] = (), steps: int = 30) -> SimResult:
    """Run one seed (see ``Simulation``)."""
    return Simulation(seed, faults=faults, steps=steps).run()


def _run_batch(args: tuple[list[int], tuple[str, ...], int]) -> list[tuple[int, bool, str | None, str]]:
    seeds, faults, steps = args
    out = []
    for s in seeds:
        r = run_seed(s, faults, steps)
        out.append((s, r.ok, r.violation, r.replay_command()))
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: run many seeds with a progress bar, or replay one."""
    import argparse
    import os
    import time
    from concurrent.futures import ProcessPoolExecutor

    p = argparse.ArgumentParser(prog="python -m openraft_py.testing.sim", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=100, help="run seeds start..start+N-1")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--seed", type=int, help="run this one seed")
    p.add_argument("--fault", action="append", default=[], choices=ENGINE_FAULTS, help="inject an engine bug")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--trace", action="store_true", help="print the trace of a single seed")
    args = p.parse_args(argv)
    faults = tuple(args.fault)
    if args.seed is not None:
        r = run_seed(args.seed, faults, args.steps)
        if args.trace or not r.ok:
            print("\n".join(r.trace if args.trace else r.trace[-60:]))
        print(f"seed {args.seed}: {'ok' if r.ok else 'VIOLATION: ' + str(r.violation)} "
              f"({r.ops} ops, {r.virtual_seconds:.2f} virtual s, digest {r.digest()[:16]})")
        return 0 if r.ok else 1
    seeds = list(range(args.start, args.start + args.seeds))
    chunks = [seeds[i : i + 10] for i in range(0, len(seeds), 10)]
    failures: list[tuple[int, str | None, str]] = []
    done = 0
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as ex:
        for batch in ex.map(_run_batch, [(ch, faults, args.steps) for ch in chunks]):
            for s, ok, violation, cmd in batch:
                done += 1
                if not ok:
                    failures.append((s, violation, cmd))
            bar = "#" * int(30 * done / len(seeds))
            sys.stdout.write(f"\r[{bar:<30}] {done}/{len(seeds)} seeds, {len(failures)} violations, {time.time() - t0:.0f}s")
            sys.stdout.flush()
    print()
    for s, violation, cmd in failures:
        first = (violation or "").splitlines()[0] if violation else ""
        print(f"seed {s}: {first}\n  replay: {cmd}")
    print(f"{len(seeds)} seeds, {len(seeds) - len(failures)} clean, {len(failures)} with violations "
          f"(faults: {', '.join(faults) or 'none'}) in {time.time() - t0:.0f}s")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
