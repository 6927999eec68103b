"""The lease-read scenario under clock-rate skew (``python -m openraft_py.testing.sim --lease F``).

A lease read is safe only while clocks run at nearly the same rate (``docs/design/reads.md``,
"The clock assumption"). The random runs of ``Simulation`` rarely line a lease read up with
an election in the window where that matters, so this scenario builds the window on purpose,
round after round, in virtual time:

1. Node 1, whose clock runs slowest (rate ``1 - skew``), leads; every other node's clock runs
   fastest (``1 + skew``). Node 1's lease is live (a lease read succeeds).
2. In half the rounds, some nodes (fewer than a quorum) stop hearing from node 1 first,
   for longer than an election timeout: their leader stickiness ends, node 1 keeps its
   lease through the others. At a seeded moment between two heartbeats, node 1 is cut off
   from every other node. In a third of the rounds a node that acked node 1 then crashes
   and restarts at once; in a sixth, an operator calls ``trigger.elect()`` on one. In a
   quarter of the rounds (``HAND_OVER_P``, drawn apart) node 1 instead hands leadership over
   to a node that acked it, and is cut off once the target has the TransferLeader notice
   (``_hand_over_then_cut``): the target and its voters, who grant it at once, elect it
   while node 1's lease would still run, so node 1 must serve no lease read from the
   moment it started the transfer.
3. A reader keeps reading a key on node 1 (``LEASE_READ``, or ``READ_INDEX``) until it is
   refused, while a writer writes that key through whichever node of the majority leads
   once one is elected (their fast clocks end their leader stickiness early, in real time).
4. The partition heals, node 1 is made leader again, and the next round starts.

Every read and write goes into a ``lincheck`` history with its real (virtual) call and
return times: a read served by node 1 after the majority's write was acknowledged, that
returns the older value, is a stale read, and the history is then not linearizable.

``skew`` is given as a multiple of the documented bound (``lease_skew_bound``) of the
seed's configuration: at a factor up to 1 the lease must hold (no violation); well above 1
the scenario must find stale lease reads (it can fail). ``READ_INDEX`` reads assume nothing
about clocks and must never be stale.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import dataclass, field
from typing import Any

from ...config import Config
from ...errors import Fatal, ForwardToLeader, InProgress, LinearizableReadError, Unreachable, WaitTimeout
from ...storage import memory
from ...storage.memory import KvSet, MemStateMachine, encode_kv
from ...types import NodeId, ReadPolicy, ServerState
from .. import lincheck
from ..cluster import Cluster
from .env import SimClock, SimDisk, SimLogStore, run_in_virtual_time

__all__ = ["LEASE_ROUNDS", "MAX_LEASE_FACTOR", "LeaseResult", "LeaseSkewRun", "lease_skew_bound", "run_lease_seed"]

LEASE_ROUNDS = 6
"""Partition rounds per run."""

MAX_LEASE_FACTOR = 8.0
"""The largest skew factor: the seeds' bounds are at most 1/9, so the slow clock's rate
``1 - factor * bound`` stays above 0 for every seed."""

HAND_OVER_P = 0.25
"""The share of rounds in which node 1 hands leadership over before it is cut off
(``LeaseSkewRun._hand_over_then_cut``)."""

SLOW = 1
"""The node whose clock runs slowest, made leader at the start of every round."""

KEY = "k"


def lease_skew_bound(election_timeout_min: int, lease_drift_margin: int) -> float:
    """The largest clock-rate skew ``s`` (every node's clock runs at a rate within
    ``[1 - s, 1 + s]`` of real time) that ``lease_drift_margin`` is documented to cover.

    The lease needs that while a follower's clock advances ``E = election_timeout_min`` the
    leader's advances at least ``E - m`` (``m = lease_drift_margin``): the slowest rate over
    the fastest, ``(1 - s) / (1 + s)``, must be at least ``(E - m) / E``, so
    ``s <= m / (2E - m)``. At the defaults (150, 20): 20 / 280, about 0.071."""
    e, m = election_timeout_min, lease_drift_margin
    return m / (2 * e - m)


@dataclass
class LeaseResult:
    """What one run of the lease scenario found. ``ok`` is False when ``violation`` is set."""

    seed: int
    ok: bool
    violation: str | None
    trace: list[str]
    history: list[lincheck.Operation]
    virtual_seconds: float
    factor: float
    skew: float
    policy: ReadPolicy
    stats: dict[str, int] = field(default_factory=dict)
    """``reads_in_partition``: reads node 1 served that began after it was cut off;
    ``reads``: every read it served; ``reads_after_write``: those
    served after the majority's write was acknowledged (stale unless they saw it);
    ``writes``: majority writes acknowledged (one per round when the round completes);
    ``hand_overs``: rounds in which node 1's transfer reached its target before the cut."""

    @property
    def ops(self) -> int:
        return len(self.history)

    def replay_command(self) -> str:
        """A one-line command that replays this run."""
        policy = " --read-index" if self.policy is ReadPolicy.READ_INDEX else ""
        return f"python -m openraft_py.testing.sim --lease {self.factor!r}{policy} --seed {self.seed} --trace"

    def digest(self) -> str:
        """A hash of the trace and the history: equal for equal runs. The final ``VIOLATION``
        line is left out: it is computed from the history, and lincheck's explanation names
        the wall-clock time its check took."""
        import hashlib

        h = hashlib.sha256()
        for line in self.trace:
            if not line.startswith("VIOLATION "):
                h.update(line.encode() + b"\n")
        for op in self.history:
            h.update(lincheck.describe_op(op).encode() + b"\n")
        return h.hexdigest()


class LeaseSkewRun:
    """One seeded run of the lease scenario (see the module docstring). ``factor``: the clock
    skew as a multiple of ``lease_skew_bound`` of the seed's configuration; ``ValueError``
    unless it is a number >= 0 that keeps the slow clock's rate above 0."""

    def __init__(
        self, seed: int, *, factor: float = 1.0, policy: ReadPolicy = ReadPolicy.LEASE_READ,
        rounds: int = LEASE_ROUNDS,
    ) -> None:
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 <= factor <= MAX_LEASE_FACTOR:
            raise ValueError(f"the skew factor must be a number from 0 to {MAX_LEASE_FACTOR:g}, not {factor!r}")
        if type(policy) is not ReadPolicy:
            raise TypeError(f"policy must be a ReadPolicy, not {policy!r}")
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"rounds must be an integer >= 1, not {rounds!r}")
        self.seed = seed
        self.factor = float(factor)
        self.policy = policy
        self.rounds = rounds
        self.rng = rng = random.Random(f"lease-skew-{seed}")
        self.events_rng = random.Random(f"lease-events-{seed}")
        self.n_nodes = rng.choice((3, 5))
        emin = rng.choice((60, 100, 150))
        margin = max(1, round(emin * rng.choice((0.1, 0.133, 0.2))))
        self.config = Config(
            cluster_name=f"lease-{seed}",
            election_timeout_min=emin,
            # A range narrow enough that the majority campaigns soon after its stickiness
            # ends, wide enough that its votes do not split for long (config.py).
            election_timeout_max=emin + max(20, round(emin * rng.uniform(0.2, 0.5))),
            heartbeat_interval=max(5, emin // 4),
            lease_drift_margin=margin,
            enable_pre_vote=rng.random() < 0.5,
        )
        self.bound = lease_skew_bound(emin, margin)
        self.skew = self.factor * self.bound
        self.rates: dict[NodeId, float] = {
            nid: (1.0 - self.skew if nid == SLOW else 1.0 + self.skew) for nid in range(1, self.n_nodes + 1)
        }
        self.disk_max_ms = rng.choice((0.2, 1.0))
        self.net_max_ms = rng.choice((0.0, 0.5, 2.0))
        self._cut_at = lincheck.INF
        self.paused: dict[NodeId, asyncio.Event] = {}
        self.trace: list[str] = []
        self.history: list[lincheck.Operation] = []
        self.stats: dict[str, int] = {
            "reads": 0, "reads_in_partition": 0, "reads_after_write": 0, "writes": 0, "hand_overs": 0,
        }
        self.cluster: Cluster[MemStateMachine, SimLogStore] = None  # type: ignore[assignment]
        self._failure: str | None = None
        self._seq = itertools.count(1)

    # -- what SimLogStore and SimClock need (``SimWorld``) -------------------------------------

    def disk_latency(self, disk: SimDisk) -> float:
        return self.rng.uniform(0.05, self.disk_max_ms) / 1000.0

    def log(self, msg: str) -> None:
        t = asyncio.get_running_loop().time()
        self.trace.append(f"{t * 1000:10.3f} {msg}")

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> LeaseResult:
        """Run the scenario to the end in a fresh virtual-time loop."""
        violation, virtual_seconds = run_in_virtual_time(
            self._main, self._teardown, self._loop_error, "scenario", finished=lambda: self._failure
        )
        if violation is not None:
            self.trace.append(f"VIOLATION {violation}")
        return LeaseResult(
            seed=self.seed, ok=violation is None, violation=violation, trace=self.trace, history=self.history,
            virtual_seconds=virtual_seconds, factor=self.factor, skew=self.skew, policy=self.policy,
            stats=dict(self.stats),
        )

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if self._failure is None:
            self._failure = f"unhandled in the event loop: {context.get('message')} {context.get('exception')!r}"

    async def _teardown(self) -> None:
        if self.cluster is not None:
            await self.cluster.shutdown()

    async def _main(self) -> None:
        c = self.cluster = Cluster(
            self.config,
            seed=self.seed,
            state_machine=lambda disk: MemStateMachine(disk),
            log_store=lambda nid, disk: SimLogStore(disk, self),  # type: ignore[arg-type]
            disk=lambda nid: SimDisk(),
            clock=lambda nid: SimClock(self, nid, self.rates[nid]),
        )
        memory._snapshot_seq = itertools.count(1)
        loop = asyncio.get_running_loop()
        c.router.set_wire(False)
        if self.net_max_ms:
            c.router.set_delay(0.0, self.net_max_ms)
        self.log(
            f"start: {self.n_nodes} nodes, {self.policy.name} reads, skew {self.skew:.4f} = {self.factor} x the "
            f"bound {self.bound:.4f}; rates " + ", ".join(f"n{i} {r:.4f}" for i, r in sorted(self.rates.items()))
            + f"; disk <= {self.disk_max_ms} ms, network delay <= {self.net_max_ms} ms; {self.config!r}"
        )
        await c.start(range(1, self.n_nodes + 1))
        await self._lead_on_slow_node()
        await self._write(c.nodes[SLOW], "init")
        hb = self.config.heartbeat_interval / 1000.0
        others = set(range(1, self.n_nodes + 1)) - {SLOW}
        for rnd in range(self.rounds):
            await self._lead_on_slow_node()
            lagging: list[NodeId] = []
            if self.rng.random() < 0.5:
                # Some nodes of the majority (fewer than a quorum) stop hearing from node 1
                # for longer than an election timeout, so their leader stickiness ends; node
                # 1 keeps its lease through the others.
                lagging = self.rng.sample(sorted(others), self.rng.randint(1, (self.n_nodes - 1) // 2))
                for n in lagging:
                    c.router.cut(SLOW, n)
                self.log(f"round {rnd}: n{SLOW} cut off from {lagging}")
                await asyncio.sleep(self.config.election_timeout_max * 1.2 / 1000)
            acked = sorted(others - set(lagging))
            # In some rounds node 1 hands leadership over instead of being cut off at once
            # (``_hand_over_then_cut``). Drawn apart, so the other draws stay as they were.
            hand_over = self.events_rng.random() < HAND_OVER_P
            written = asyncio.Event()
            self._cut_at = lincheck.INF
            reader = asyncio.ensure_future(self._read_on_slow_node(written))
            # Cut node 1 off at a seeded moment between two of its heartbeats, while its
            # reads go on (a ReadIndex read may be confirmed by acks still in flight).
            await asyncio.sleep(self.rng.uniform(0.0, hb))
            if hand_over:
                await self._hand_over_then_cut(rnd, acked, others)
                event = 1.0
            else:
                c.router.partition({SLOW}, others)
                self._cut_at = loop.time()
                self.log(f"round {rnd}: n{SLOW} cut off from {sorted(others)}")
                event = self.rng.random()
            if event < 1 / 3:
                # A node that acked node 1 crashes and restarts at once, losing what it had
                # not flushed: the restart rule keeps it sticky (reads.md).
                victim = self.rng.choice(acked)
                store = c.log_stores.get(victim)
                await c.crash(victim)
                if isinstance(store, SimLogStore):
                    store.crash()
                await c.add_node(victim)
                self.log(f"round {rnd}: n{victim} crashed and restarted")
            elif event < 1 / 2:
                # An operator forces an election on a node that acked node 1: its own vote
                # must not count while it is sticky (``VoteHandler.may_grant_self``).
                n = self.rng.choice(acked)
                await c.nodes[n].trigger.elect()
                self.log(f"round {rnd}: trigger.elect() on n{n}")
            await self._write_on_majority(rnd, others, written)
            await reader
            c.router.heal()
            self.log(f"round {rnd}: healed")
        result = lincheck.check(self.history, lincheck.kv_register, timeout=30.0)
        if result.ok is False:
            self._failure = self._failure or "history is not linearizable (a stale read):\n" + result.explain()
        self.log(f"end: {len(self.history)} operations, linearizable: {result.ok}; {self.stats}")

    async def _hand_over_then_cut(self, rnd: int, acked: list[NodeId], others: set[NodeId]) -> None:
        """Node 1 hands leadership over to a node that acked it (``trigger.transfer_leader``),
        and is cut off from every other node as soon as the target has taken the
        TransferLeader: the target campaigns at once, the others grant it at once (its vote
        request names node 1's vote, ``VoteHandler.handle_vote_req``), the writer writes
        through it, and node 1 never hears of it. So node 1 must serve no lease read from
        the moment it started the transfer (refused while it hands over, ``is_handing_over``,
        and for the rest of the term once the notice went out, ``lease_disabled``);
        a ReadIndex read it serves must have been confirmed before the cut. If the transfer
        does not start or reach the target in time, node 1 is cut off as in other rounds."""
        c = self.cluster
        loop = asyncio.get_running_loop()
        to = self.rng.choice(acked)
        taken = asyncio.Event()

        def on_request(rpc: str, source: NodeId, target: NodeId, req: Any) -> None:
            if rpc == "transfer_leader" and source == SLOW and target == to and self._cut_at == lincheck.INF:
                # From now on only node 1's TransferLeader notices get through: node 1 hears
                # nothing of the target's campaign (not even a vote request that would
                # depose it), and its heartbeats reach no one.
                for kind in ("append_entries", "heartbeat", "vote", "install_snapshot"):
                    c.router.set_rpc_failure(SLOW, "out", Unreachable, kind)
                c.router.set_rpc_failure(SLOW, "in", Unreachable)
                self._cut_at = loop.time()

        def on_response(rpc: str, source: NodeId, target: NodeId, req: Any, resp: Any) -> None:
            if rpc == "transfer_leader" and source == SLOW and target == to and not taken.is_set():
                c.router.partition({SLOW}, others)
                taken.set()

        c.router.add_hook(on_request)
        c.router.add_response_hook(on_response)
        try:
            await c.nodes[SLOW].trigger.transfer_leader(to)
            self.log(f"round {rnd}: n{SLOW} hands over to n{to}")
            async with asyncio.timeout(self.config.election_timeout_max / 1000):
                await taken.wait()
            self.stats["hand_overs"] += 1
        except (ForwardToLeader, InProgress, ValueError, TimeoutError) as e:
            self.log(f"round {rnd}: no hand-over to n{to}: {type(e).__name__}")
        finally:
            c.router.clear_hooks()
        if not taken.is_set():
            c.router.partition({SLOW}, others)
            if self._cut_at == lincheck.INF:
                self._cut_at = loop.time()
        self.log(f"round {rnd}: n{SLOW} cut off from {sorted(others)}")

    async def _lead_on_slow_node(self) -> None:
        """Make node 1 the leader with a live lease (hand leadership over to it if needed)."""
        c = self.cluster
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20.0
        slow = c.nodes[SLOW]
        while True:
            if loop.time() > deadline:
                raise WaitTimeout(f"n{SLOW} did not become leader with a lease within 20 s")
            try:
                lid = await c.wait_for_leader(timeout=2.0)
                if lid != SLOW:
                    await c.nodes[lid].trigger.transfer_leader(SLOW)
                    await slow.wait(2.0).metrics(lambda m: m.state == ServerState.LEADER, f"n{SLOW} leads")
                async with asyncio.timeout(1.0):
                    await slow.ensure_linearizable(ReadPolicy.READ_INDEX)
                async with asyncio.timeout(1.0):
                    await slow.ensure_linearizable(ReadPolicy.LEASE_READ)
                return
            except (ForwardToLeader, LinearizableReadError, InProgress, ValueError, TimeoutError, WaitTimeout):
                await asyncio.sleep(0.01)

    async def _write(self, raft: Any, value: str) -> bool:
        """Put ``value`` through ``raft``; record it; True when it was acknowledged."""
        loop = asyncio.get_running_loop()
        call = loop.time()
        try:
            async with asyncio.timeout(4 * self.config.election_timeout_max / 1000):
                await raft.client_write(encode_kv(KvSet(KEY, value)))
        except ForwardToLeader as e:
            if e.outcome_unknown:
                self._record(0, "put", value, None, call, None)
            return False
        except (Fatal, TimeoutError):
            self._record(0, "put", value, None, call, None)
            return False
        self._record(0, "put", value, None, call, loop.time())
        return True

    async def _write_on_majority(self, rnd: int, others: set[NodeId], written: asyncio.Event) -> None:
        """Write the key through the majority's leader, once one is elected."""
        c = self.cluster
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20 * self.config.election_timeout_max / 1000
        try:
            while loop.time() < deadline:
                lid = next((i for i in sorted(others) if i in c.nodes and c.nodes[i].is_leader()), None)
                if lid is None:
                    await asyncio.sleep(0.0005)
                    continue
                value = f"r{rnd}-{next(self._seq)}"
                if await self._write(c.nodes[lid], value):
                    self.stats["writes"] += 1
                    self.log(f"round {rnd}: n{lid} wrote {value!r}")
                    return
                await asyncio.sleep(0.0005)  # refused at once (no longer leader): let time pass
            self.log(f"round {rnd}: no write on the majority side")
        finally:
            written.set()

    async def _read_on_slow_node(self, written: asyncio.Event) -> None:
        """Read the key on node 1 again and again until it refuses after the majority's write."""
        raft = self.cluster.nodes[SLOW]
        sm = self.cluster.state_machines[SLOW]
        loop = asyncio.get_running_loop()
        timeout = self.config.election_timeout_min / 1000
        while True:
            await asyncio.sleep(self.rng.uniform(0.0002, 0.002))
            after_write = written.is_set()
            call = loop.time()
            try:
                async with asyncio.timeout(timeout):
                    await raft.ensure_linearizable(self.policy)
            except (ForwardToLeader, LinearizableReadError, Fatal, TimeoutError) as e:
                if after_write:
                    self.log(f"n{SLOW} refuses reads: {type(e).__name__}")
                    return
                continue
            value = sm.data.get(KEY)
            self.stats["reads"] += 1
            if call >= self._cut_at:
                self.stats["reads_in_partition"] += 1
            if after_write:
                self.stats["reads_after_write"] += 1
                self.log(f"n{SLOW} served a read after the write: {value!r}")
            self._record(1, "get", None, value, call, loop.time())

    def _record(self, client: int, op: str, value: Any, output: Any, call: float, ret: float | None) -> None:
        self.history.append(
            lincheck.Operation(client, op, KEY, value, output, call, lincheck.INF if ret is None else ret,
                               None if ret is None else True)
        )


def run_lease_seed(seed: int, factor: float = 1.0, policy: ReadPolicy = ReadPolicy.LEASE_READ) -> LeaseResult:
    """Run the lease scenario for one seed (see ``LeaseSkewRun``)."""
    return LeaseSkewRun(seed, factor=factor, policy=policy).run()
