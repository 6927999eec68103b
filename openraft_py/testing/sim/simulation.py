"""One simulated run: ``Simulation`` (the cluster, the client workload, the admin steps and the
end-of-run liveness and linearizability checks), ``SimResult`` and ``run_seed``. The package
docstring (``openraft_py.testing.sim``) describes what a run does and checks."""


from __future__ import annotations

import asyncio
import hashlib
import itertools
from dataclasses import dataclass, field
from typing import Any

from ...config import Config, SnapshotPolicy
from ...engine.faults import inject
from ...errors import Fatal, ForwardToLeader, LinearizableReadError, WaitTimeout
from ...raft import Raft
from ...storage import memory
from ...storage.memory import KvCas, KvDelete, KvGet, KvSet, MemStateMachine, encode_kv
from ...types import NodeId, ReadPolicy
from .. import lincheck
from ..cluster import Cluster
from .checks import Checker, Violation
from .env import SimClock, SimDisk, SimLogStore, SimStuck, VirtualTimeLoop, run_in_virtual_time
from .faults import FaultSchedule

__all__ = [
    "ENGINE_FAULTS",
    "Checker",
    "SimClock",
    "SimDisk",
    "SimLogStore",
    "SimResult",
    "SimStuck",
    "Simulation",
    "Violation",
    "VirtualTimeLoop",
    "run_seed",
]

ENGINE_FAULTS = (
    "grant_without_log_check",
    "commit_previous_term",
    "reply_before_vote_persisted",
    "apply_before_commit",
    "expired_lease_read",
)
"""Bugs the simulator can inject into the engine (test-only switches) to prove it finds them."""

WIRE_EVERY = 4
"""The share of seeds run through the wire codec: those with ``seed % WIRE_EVERY == 0``."""

MAX_NODES = 7
"""Node ids are 1..MAX_NODES: the first 3 or 5 (or ``nodes``) form the cluster, the others
may join."""

NODE_COUNTS = (3, 4, 5, 6, 7)
"""The cluster sizes ``Simulation(seed, nodes=N)`` (``--nodes N``) takes: 3 to ``MAX_NODES``
(fewer than 3 voters survive no crash, which the fault schedule makes)."""


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
    wire: bool = False
    """Whether the run passed its messages through the TCP wire codec."""
    steps: int = 30
    """The run's number of steps (``--steps``)."""
    skew: float = 0.0
    """The run's clock-rate skew (``--skew``): each node's clock ran at a rate drawn from
    ``[1 - skew, 1 + skew]`` of real time."""
    nodes: int | None = None
    """The cluster size the run was given (``--nodes``); None: the seed's own choice."""

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
        if self.wire != (self.seed % WIRE_EVERY == 0):
            f += " --wire all" if self.wire else " --wire none"
        if self.steps != 30:
            f += f" --steps {self.steps}"
        if self.skew:
            f += f" --skew {self.skew!r}"
        if self.nodes is not None:
            f += f" --nodes {self.nodes}"
        return f"python -m openraft_py.testing.sim --seed {self.seed}{f} --trace"



def _byte_budget(seed: int) -> tuple[int, int] | None:
    """A small ``max_payload_bytes`` for one seed in three, so replication sends batches in
    parts under faults (the workload's entries are under 64 bytes). Drawn from an RNG of its
    own: the other seeds' configurations and traces are those they had without it."""
    import random

    r = random.Random(f"byte-budget-{seed}")
    if r.random() >= 1 / 3:
        return None
    return 128, r.choice((128, 200, 400))  # (max_entry_bytes, max_payload_bytes)


def check_skew(skew: float) -> float:
    """``skew`` as a float if it is a number in ``[0, 1)``; ``ValueError`` otherwise."""
    if isinstance(skew, bool) or not isinstance(skew, (int, float)) or not (0.0 <= skew < 1.0):
        raise ValueError(f"skew must be a number in [0, 1) (a clock rate of 1 - skew must stay > 0), not {skew!r}")
    return float(skew)


def clock_rates(seed: int, skew: float) -> dict[NodeId, float]:
    """The clock rate of each node id 1..MAX_NODES for ``seed``: uniform in ``[1 - skew,
    1 + skew]``, from an RNG of its own (the run's other draws are those it has without
    skew); all 1.0 when ``skew`` is 0."""
    import random

    if not skew:
        return dict.fromkeys(range(1, MAX_NODES + 1), 1.0)
    r = random.Random(f"clock-rate-{seed}")
    return {nid: r.uniform(1.0 - skew, 1.0 + skew) for nid in range(1, MAX_NODES + 1)}


class Simulation(FaultSchedule):
    """One seeded run. ``faults`` names engine bugs to inject (``ENGINE_FAULTS``); ``wire``
    passes every message through the TCP codec (default: ``seed % WIRE_EVERY == 0``).
    ``skew`` (default 0: every clock is the loop's time) gives each node a clock that runs at
    its own rate, drawn from ``[1 - skew, 1 + skew]`` by ``clock_rates`` (see ``SimClock``);
    ``ValueError`` unless it is a number in ``[0, 1)``. ``nodes`` (``--nodes``; default
    None: the seed draws 3 or 5) is the number of voters the cluster starts with, one of
    ``NODE_COUNTS`` (3 to ``MAX_NODES``), else ``ValueError``; every other choice of the seed
    (configuration, faults, workload) is drawn as without it. Spare nodes join up to id
    ``MAX_NODES``, so a run of ``MAX_NODES`` voters has none (its membership changes remove
    and add back voters of its own). A ``seed`` that is not an ``int``, and ``faults`` given as
    one ``str``, are a ``TypeError``."""

    def __init__(
        self,
        seed: int,
        *,
        faults: tuple[str, ...] | frozenset[str] = (),
        steps: int = 30,
        wire: bool | None = None,
        skew: float = 0.0,
        nodes: int | None = None,
    ) -> None:
        import random

        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an integer (its replay command is --seed SEED), not "
                            f"{type(seed).__name__} {seed!r:.80}")
        if isinstance(faults, str):  # (it iterates as its letters: "unknown engine fault 'c'")
            raise TypeError(f"faults must be a tuple of engine fault names, not the str {faults!r:.80}: "
                            f"faults=({faults!r:.80},)")
        for f in faults:
            if f not in ENGINE_FAULTS:
                raise ValueError(f"unknown engine fault {f!r}; known: {', '.join(ENGINE_FAULTS)}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, not {steps!r}")
        if nodes is not None and (isinstance(nodes, bool) or not isinstance(nodes, int) or nodes not in NODE_COUNTS):
            raise ValueError(f"nodes must be an integer from 3 to {MAX_NODES}, not {nodes!r}")
        self.nodes = nodes
        self.skew = check_skew(skew)
        self.rates = clock_rates(seed, self.skew)
        self.seed = seed
        self.faults = tuple(sorted(faults))
        self.rng = random.Random(seed)
        # Whether a membership step removes learners (``_fault_membership``): an RNG of its
        # own, so that the runs that never do are those the seeds gave before that step.
        self.remove_rng = random.Random(f"remove-learners-{seed}")
        self.steps = steps
        self.wire = (seed % WIRE_EVERY == 0) if wire is None else wire
        self.trace: list[str] = []
        self.history: list[lincheck.Operation] = []
        self.paused: dict[NodeId, asyncio.Event] = {}
        self.boots: dict[NodeId, int] = {}
        self.crashed: set[NodeId] = set()
        self.stats: dict[str, int] = {}
        rng = self.rng
        # Drawn even when ``nodes`` is given: the draws after it are then those of the seed.
        drawn = rng.choice((3, 3, 5))
        self.n_nodes: int = drawn if nodes is None else nodes
        emin = rng.choice((40, 60, 100, 150))
        # Snapshots: a small policy in half the runs (never in the others; explicit triggers
        # still build some), little log kept after one, small chunks now and then.
        snap_n = rng.randint(5, 50) if rng.random() < 0.5 else None
        self.config = Config(
            cluster_name=f"sim-{seed}",
            election_timeout_min=emin,
            election_timeout_max=emin * 2,
            heartbeat_interval=max(5, emin // 4),
            max_payload_entries=rng.choice((1, 2, 3, 16, 300)),
            max_inflight_requests=rng.choice((1, 2, 8)),
            snapshot_policy=SnapshotPolicy.never() if snap_n is None else SnapshotPolicy.logs_since_last(snap_n),
            max_in_snapshot_log_to_keep=rng.randint(0, 10),
            purge_batch_size=rng.choice((1, 1, 4)),
            snapshot_max_chunk_size=rng.choice((3 * 1024 * 1024, 3 * 1024 * 1024, 512, 64)),
            lease_drift_margin=min(20, emin // 3),
            enable_pre_vote=rng.random() < 0.5,
        )
        budget = _byte_budget(seed)
        if budget is not None:
            self.config.max_entry_bytes, self.config.max_payload_bytes = budget
        self.disk_max_ms = rng.choice((0.2, 1.0, 5.0))
        self.profile = rng.choice(("mixed", "mixed", "elections", "partitions"))
        if self.n_nodes == 3 and self.config.max_payload_entries == 1 and rng.random() < 0.5:
            self.profile = "figure8"
        # Admin operations (membership changes, snapshot and purge triggers, leader
        # transfers) in most runs; node ids go up to MAX_NODES; spare nodes start empty and
        # wait to be added as learners.
        self.admin = self.profile != "figure8" and rng.random() < 0.75
        self.spares = 0
        room = MAX_NODES - self.n_nodes
        if self.admin and rng.random() < 0.5 and room > 0:
            self.spares = rng.randint(1, room)
        self.admin_tasks: list[asyncio.Future[None]] = []
        self.cluster: Cluster[MemStateMachine, SimLogStore] = None  # type: ignore[assignment]
        self.checker = Checker(self)
        self._stop_clients = False
        self.faults_over = False
        self._finished = False

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
        inject(raft._core.engine, self.faults)  # test-only bug switches (engine/faults.py)
        self.boots[nid] = self.boots.get(nid, 0) + 1

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> SimResult:
        """Run the simulation to the end in a fresh virtual-time loop."""

        def finished() -> None:
            self._finished = True

        violation, virtual_seconds = run_in_virtual_time(
            self._main, self._teardown, self._loop_error, "simulation", verdicts=(Violation,), finished=finished
        )
        if violation is not None:
            self.trace.append(f"VIOLATION {violation}")
        return SimResult(
            seed=self.seed,
            ok=violation is None,
            violation=violation,
            trace=self.trace,
            history=self.history,
            virtual_seconds=virtual_seconds,
            ops=len(self.history),
            faults=self.faults,
            stats=dict(self.stats),
            wire=self.wire,
            steps=self.steps,
            skew=self.skew,
            nodes=self.nodes,
        )

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """An exception escaped a callback or a task nobody awaited: a bug (reported at the
        next check while the run goes on; ignored once the run is over)."""
        if self.checker.pending is None and not self._finished:
            exc = context.get("exception")
            self.checker.pending = f"unhandled in the event loop: {context.get('message')} {exc!r}"
            self.log(f"VIOLATION seen: {self.checker.pending}")

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
            clock=lambda nid: SimClock(self, nid, self.rates[nid]),
            on_start=self._on_start,
        )
        c = self.cluster
        c.router.set_wire(self.wire)
        # Snapshot ids come from a process-wide counter: restart it so that a run does not
        # depend on the runs before it in the same process.
        memory._snapshot_seq = itertools.count(1)
        self.log(
            f"start: {self.n_nodes} nodes (+{self.spares} spare), profile {self.profile}, "
            f"admin={self.admin}, wire={self.wire}, {self.config!r}, disk <= {self.disk_max_ms} ms, faults={self.faults}"
        )
        if self.skew:
            self.log("clock rates: " + ", ".join(f"n{i} {r:.4f}" for i, r in sorted(self.rates.items())))
        await c.start(ids)
        for nid in range(self.n_nodes + 1, self.n_nodes + self.spares + 1):
            await c.add_node(nid)  # not a member: waits to be added as a learner
        # The cluster exists once its first membership entry is durable on a quorum: wait for
        # the first leader to commit before any fault (a lost initialize is an operator redo).
        lid = await c.wait_for_leader(timeout=10.0, among=ids)
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
            await self._stop_admin()
            await self._heal_all()
            self._stop_clients = True
            await asyncio.gather(*clients)
            await self._converge()
        finally:
            self._stop_clients = True
            checker.cancel()
            for t in clients:
                t.cancel()
        failure = checker.exception() if checker.done() and not checker.cancelled() else None
        if failure is not None:
            raise failure
        if c.router.wire_errors:
            raise Violation(f"the wire codec refused {c.router.wire_errors} message(s) the nodes sent")
        if c.router.invalid_request_count:
            # Nodes of one cluster never send each other a request the target refuses as
            # malformed (e.g. entries contradicting its committed ones): a refusal is a
            # bug of the sender, or a legitimate request refused (a stuck follower).
            raise Violation(f"{c.router.invalid_request_count} request(s) refused as InvalidRequest: "
                            + "; ".join(c.router.invalid_requests))
        if self.wire:
            self.stats["wire_messages"] = c.router.wire_messages
        result = lincheck.check(self.history, lincheck.kv_register, timeout=30.0)
        if result.ok is False:
            raise Violation("history is not linearizable:\n" + result.explain())
        self.log(f"end: {len(self.history)} operations linearizable ({result.ok})")

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(0.005)
            self.checker.check("periodic")

    async def _converge(self) -> None:
        """Liveness: after healing, the voters of the latest committed membership elect a
        leader that serves a write, and every member of that membership converges."""
        c = self.cluster
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20.0
        members: frozenset[NodeId] = frozenset()
        while True:
            try:
                # Like an operator: run exactly the members of the latest committed
                # membership (restart missing ones, stop removed ones).
                members = await self._run_members()
                voters = self._final_membership().voter_ids()
                lid = await c.wait_for_leader(timeout=max(0.1, min(2.0, deadline - loop.time())), among=voters)
                async with asyncio.timeout(2.0):
                    resp = await c.nodes[lid].client_write(encode_kv(KvSet("final", "v")))
                ms = c.nodes[lid]._core.engine.state.membership
                if ms.uncommitted or ms.committed.membership.is_joint():
                    # A change still finishing: the membership to converge on is not final.
                    await asyncio.sleep(0.05)
                    raise WaitTimeout("membership change in progress")
                if frozenset(ms.committed.membership.nodes) != members:
                    continue
                break
            except (ForwardToLeader, Fatal, TimeoutError, WaitTimeout, KeyError) as e:
                # Let time pass: a refusal comes back at once (a leader handing over refuses
                # writes until its transfer times out).
                await asyncio.sleep(0.01)
                if loop.time() > deadline:
                    raise Violation(
                        f"liveness: no leader serving writes among {sorted(members)} 20 s after healing ({e!r})"
                    ) from None
        self.log(f"converge: n{lid} leads members {sorted(members)}, final write at {resp.log_id!r}")
        try:
            await c.wait_applied(resp.log_id.index, timeout=10.0, ids=members)
        except WaitTimeout as e:
            raise Violation(f"liveness: nodes did not converge: {e}") from None
        self.checker.check("converged")
        ref = None
        for nid in sorted(members):
            alog = [x for x in c.disks[nid].applied_log if x[0].index <= resp.log_id.index]
            if ref is None:
                ref = alog
            elif alog[-len(ref) :] != ref[-len(alog) :] if alog and ref else False:
                raise Violation(f"n{nid} applied a different sequence than the others")

    def _final_membership(self) -> Any:
        """The latest committed membership any running node knows."""
        best = None
        for raft in self.cluster.nodes.values():
            sm = raft._core.engine.state.membership.committed
            if sm.log_id is not None and (best is None or best.log_id is None or sm.log_id > best.log_id):
                best = sm
        assert best is not None
        return best.membership

    async def _run_members(self) -> frozenset[NodeId]:
        """Start every member of the latest committed membership that is not running and
        stop every running node that is not a member; return the members."""
        c = self.cluster
        members = frozenset(self._final_membership().nodes)
        for nid in sorted(c.nodes):
            if nid not in members:
                self.log(f"decommission n{nid}: not a member of the final membership")
                store = c.log_stores.get(nid)
                await c.crash(nid)
                if isinstance(store, SimLogStore):
                    store.crash()  # its writes still in flight never complete
        for nid in sorted(members):
            if nid not in c.nodes:
                await self._restart(nid)
        return members

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
                async with asyncio.timeout(timeout):
                    resp = await raft.client_write(encode_kv(cmd))
            except ForwardToLeader as e:
                believed = None
                if e.outcome_unknown:
                    self._record(op, None, None, None)  # appended, then abandoned: unknown
                continue  # refused or replaced: did not take effect
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
            async with asyncio.timeout(timeout):
                await raft.ensure_linearizable(policy)
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


def run_seed(
    seed: int, faults: tuple[str, ...] = (), steps: int = 30, wire: bool | None = None, skew: float = 0.0,
    nodes: int | None = None,
) -> SimResult:
    """Run one seed (see ``Simulation``; ``wire=None`` uses the seed's default share,
    ``nodes=None`` its own cluster size)."""
    return Simulation(seed, faults=faults, steps=steps, wire=wire, skew=skew, nodes=nodes).run()
