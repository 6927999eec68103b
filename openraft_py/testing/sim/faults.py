"""The simulator's fault schedule: a mixin of ``Simulation`` with one method per fault, drawn
by weight from the run's profile. See ``docs/design/simulation.md``."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from ...errors import ApiError, Fatal, Unreachable
from ...network.router import Direction
from ...types import BasicNode, Membership, NodeId
from .env import SimLogStore

__all__ = ["FaultSchedule", "REMOVE_LEARNERS_P"]

if TYPE_CHECKING:
    from ...config import Config
    from ...storage.memory import MemStateMachine
    from ..cluster import Cluster
    from .checks import Checker


REMOVE_LEARNERS_P = 0.2
"""How often a membership step with learners present removes some of them (drawn from
``FaultSchedule.remove_rng``)."""


class FaultSchedule:
    """Fault actions of a ``Simulation``: ``_fault_step`` draws one by the profile's weights."""

    # What the fault actions use of the ``Simulation`` they are mixed into (set up by
    # ``Simulation.__init__``; see there).
    rng: random.Random
    remove_rng: random.Random
    config: Config
    cluster: Cluster[MemStateMachine, SimLogStore]
    checker: Checker
    n_nodes: int
    profile: str
    admin: bool
    disk_max_ms: float
    paused: dict[NodeId, asyncio.Event]
    crashed: set[NodeId]
    admin_tasks: list[asyncio.Future[None]]
    faults_over: bool
    log: Callable[[str], None]
    _count: Callable[[str], None]


    # Fault mixes: each run draws one. "mixed" exercises everything; "elections" kills and
    # crash-restarts nodes around elections; "partitions" favours network faults.
    PROFILES: ClassVar[dict[str, dict[str, int]]] = {
        "mixed": {
            "partition": 12, "one_way": 8, "bridge": 6, "isolate": 6, "heal": 12, "drops": 6,
            "duplicates": 5, "delay": 6, "crash": 14, "restart": 10, "slow_disk": 5, "pause": 5,
            "crash_on_rpc": 3, "leader_crash_after": 2, "strand_leader": 3, "pause_leader": 3, "lanes": 6,
        },
        "elections": {
            "isolate": 6, "heal": 10, "delay": 10, "crash": 18, "restart": 18, "pause": 6,
            "crash_on_rpc": 22, "leader_crash_after": 6, "strand_leader": 10, "slow_disk": 4,
            "pause_leader": 10, "lanes": 4,
        },
        "figure8": {"figure8": 30, "heal": 10, "crash": 5, "restart": 10, "delay": 5},
        "partitions": {
            "partition": 20, "one_way": 14, "bridge": 10, "isolate": 10, "heal": 16, "drops": 8,
            "duplicates": 6, "delay": 8, "crash": 4, "restart": 4, "pause_leader": 4, "lanes": 8,
        },
    }

    # Admin operations, added to the profile's weights in runs with ``admin`` on.
    ADMIN: ClassVar[dict[str, int]] = {"membership": 16, "snapshot": 5, "purge": 4, "transfer_leader": 5}

    async def _fault_step(self, step: int) -> None:
        rng = self.rng
        weights = self.PROFILES[self.profile]
        if self.admin:
            weights = {**weights, **self.ADMIN}
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

    async def _fault_lanes(self) -> None:
        # The two lanes of a leader's AppendEntries apart (the TCP transport's two connections
        # per peer): the window slow (a stream behind megabytes of entries), so that the
        # heartbeats beside it overtake its requests and their answers come back first; the
        # heartbeats slow, so that theirs come back after the window's; or the heartbeats to
        # or from one node lost while its window still works. Until the next heal.
        router = self.cluster.router
        hb = self.config.heartbeat_interval
        what = self.rng.choice(("slow_window", "slow_window", "slow_heartbeats", "lost_heartbeats"))
        if what == "lost_heartbeats":
            n = self.rng.choice(sorted(self.cluster.disks))
            direction: Direction = self.rng.choice(("in", "out", "both"))
            router.set_rpc_failure(n, direction, Unreachable, rpc="heartbeat")
            self.log(f"heartbeats {direction} of n{n} lost")
            return
        # At most twice the heartbeat interval each way: a round trip within the
        # replication deadline (max(4 * heartbeat_interval, election_timeout_min)).
        hi = self.rng.choice((1, 2)) * hb
        lo = self.rng.choice((0.0, hb / 2))
        rpc = "append_entries" if what == "slow_window" else "heartbeat"
        router.set_delay(lo, hi, rpc=rpc)
        self.log(f"{rpc} lane delay {lo:g}..{hi:g} ms")

    async def _fault_crash(self) -> None:
        alive = sorted(self.cluster.nodes)
        voters = self._membership().voter_ids()
        majority = len(voters) // 2 + 1
        # Keep a majority of the voters running most of the time.
        if alive and (len(voters & set(alive)) > majority or self.rng.random() < 0.2):
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
        router = c.router
        router.heal()
        others = [x for x in ids if x != a]
        self.log(f"figure 8: strand leader n{a}")
        for lane in ("append_entries", "heartbeat"):
            router.set_rpc_failure(a, "out", Unreachable, rpc=lane)
        await asyncio.sleep(0.03)
        await self._crash(a)
        for x in others:
            for lane in ("append_entries", "heartbeat"):
                router.set_rpc_failure(x, "out", Unreachable, rpc=lane)
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
            for lane in ("append_entries", "heartbeat"):
                router.set_rpc_failure(x, "out", None, rpc=lane)
        armed = [True]
        cnode = next(x for x in others if x != b)

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
        if self.faults_over:
            return  # an armed fault firing after the final heal: the run is past faults
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
            if armed[0] and target == n and (name == rpc or (rpc == "any" and name in ("vote", "append_entries", "heartbeat"))):
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
        if self.faults_over:
            return
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
        # From here on no fault may fire, not even one armed earlier (liveness is judged on
        # a healed cluster).
        self.faults_over = True
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

    # -- admin operations ----------------------------------------------------------------------

    def _membership(self) -> Membership:
        """The effective membership of the leader (of the running node with the latest one
        when there is no leader)."""
        c = self.cluster
        lid = c.leader()
        if lid is not None:
            return c.nodes[lid]._core.engine.state.membership.effective.membership
        best = None
        for nid in sorted(c.nodes):
            sm = c.nodes[nid]._core.engine.state.membership.effective
            if sm.log_id is not None and (best is None or best.log_id is None or sm.log_id > best.log_id):
                best = sm
        return best.membership if best is not None else Membership.new([set(range(1, self.n_nodes + 1))])

    def _admin_target(self) -> NodeId | None:
        """Usually the leader; now and then any running node (which refuses)."""
        c = self.cluster
        lid = c.leader()
        if lid is not None and self.rng.random() < 0.85:
            return lid
        alive = sorted(c.nodes)
        return self.rng.choice(alive) if alive else None

    def _spawn_admin(self, what: str, call: Any, after: Any = None) -> None:
        """Run the admin ``call`` (a coroutine) in the background with a timeout and log its
        outcome; the expected refusals (``ForwardToLeader``, ``InProgress``, a timeout, ...)
        are just logged. ``after``: a coroutine function called with the result on success."""
        timeout = self.rng.uniform(0.3, 3.0)
        self.log(f"admin {what}")
        self._count("admin")

        async def run() -> None:
            try:
                async with asyncio.timeout(timeout):
                    result = await call
            except (ApiError, Fatal, TimeoutError, ValueError) as e:
                self.log(f"admin {what}: {type(e).__name__} {str(e)[:100]}")
                return
            self.log(f"admin {what}: ok")
            self._count("admin_ok")
            if after is not None and not self.faults_over:
                await after(result)

        self.admin_tasks.append(asyncio.ensure_future(run()))

    async def _stop_admin(self) -> None:
        """Cancel the admin calls still running (what they started goes on in the cluster)
        and wait until they ended; an admin call that failed unexpectedly fails the run.
        The run cancelled meanwhile (the watchdog) raises its ``CancelledError``: it was
        taken for an admin call's and dropped (``await t`` in ``except CancelledError:
        pass``), and the stopped run went on during its teardown."""
        tasks, self.admin_tasks = self.admin_tasks, []
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for t in tasks:
            if not t.cancelled():
                t.result()  # its failure, in the order the calls were made

    async def _fault_membership(self) -> None:
        """A membership change through the leader (sometimes through another node): add a
        learner (starting the node if needed), change the voters to a random set of 3..7
        members, remove the leader, replace voters by learners, or remove learners.

        Whether to remove learners is drawn from an RNG of its own (``remove_rng``, drawn
        only when there are learners), before anything else: a run in which it never
        chooses to is the run the seed gave before the step existed."""
        c = self.cluster
        rng = self.rng
        target = self._admin_target()
        if target is None:
            return
        raft = c.nodes[target]
        m = raft._core.engine.state.membership.effective.membership
        voters = sorted(m.voter_ids())
        members = sorted(m.nodes)
        learners = sorted(set(members) - set(voters))
        if learners and self.remove_rng.random() < REMOVE_LEARNERS_P:
            gone = sorted(self.remove_rng.sample(learners, self.remove_rng.randint(1, len(learners))))

            async def stop_some(resp: Any) -> None:
                # An operator stops some of the nodes removed (or not: they stay idle).
                for nid in gone:
                    if nid in c.nodes and rng.random() < 0.5:
                        await self._crash(nid)

            self._spawn_admin(f"remove_learners {gone} via n{target}", raft.remove_learners(gone), stop_some)
            return
        if learners or len(voters) > 3:
            kind = rng.choice(("add_learner", "change", "change", "remove_leader", "replace"))
        else:
            kind = rng.choice(("add_learner", "add_learner", "add_learner", "change"))
        if kind == "add_learner":
            from .simulation import MAX_NODES

            cands = [n for n in range(1, MAX_NODES + 1) if n not in m.nodes]
            if cands:
                nid = rng.choice(cands)
                if nid not in c.nodes:
                    await self._restart(nid)
                blocking = rng.random() < 0.5
                self._spawn_admin(
                    f"add_learner n{nid} blocking={blocking} via n{target}",
                    raft.add_learner(nid, BasicNode(), blocking=blocking),
                )
                return
            kind = "change"
        retain = rng.random() < 0.5
        if kind == "change":
            if len(members) < 3:
                return
            new = set(rng.sample(members, rng.randint(3, len(members))))
        elif kind == "remove_leader":
            new = set(voters) - {target}
            if len(new) < 3 and learners:
                new.add(rng.choice(learners))
        else:
            if not learners:
                return
            k = rng.randint(1, min(len(learners), len(voters)))
            new = (set(voters) - set(rng.sample(voters, k))) | set(rng.sample(learners, k))
        if len(new) < 3:
            return

        async def after(resp: Any) -> None:
            # An operator stops some of the nodes that left the cluster.
            gone = sorted(set(voters) - set(new)) if not retain else []
            for nid in gone:
                if nid in c.nodes and rng.random() < 0.5:
                    await self._crash(nid)

        self._spawn_admin(
            f"change_membership {kind} {sorted(new)} retain={retain} via n{target}",
            # Lagging voters allowed: the simulation explores joint configs that cannot
            # commit for a while (the refusal itself is covered by the engine's tests).
            raft.change_membership(new, retain=retain, allow_lagging=True),
            after,
        )

    async def _fault_snapshot(self) -> None:
        alive = sorted(self.cluster.nodes)
        if alive:
            n = self._pick_crash_target(alive)
            self._spawn_admin(f"trigger snapshot on n{n}", self.cluster.nodes[n].trigger.snapshot())

    async def _fault_purge(self) -> None:
        alive = sorted(self.cluster.nodes)
        if alive:
            n = self._pick_crash_target(alive)
            st = self.cluster.nodes[n]._core.engine.state
            upto = self.rng.randint(0, max(0, st.committed_index()))
            self._spawn_admin(f"trigger purge_log({upto}) on n{n}", self.cluster.nodes[n].trigger.purge_log(upto))

    async def _fault_transfer_leader(self) -> None:
        c = self.cluster
        lid = c.leader()
        if lid is None:
            return
        voters = sorted(self._membership().voter_ids() - {lid})
        if not voters:
            return
        to = self.rng.choice(voters)
        self._spawn_admin(f"transfer leader n{lid} -> n{to}", c.nodes[lid].trigger.transfer_leader(to))
