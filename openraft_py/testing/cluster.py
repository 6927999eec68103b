"""``Cluster``: several ``Raft`` nodes in one process on the in-process ``Router``.

For tests, ``make run`` and benchmarks. Each node's storage lives on a ``MemDisk`` that
outlives the node object, so ``crash``/``restart`` model a process restart that keeps its
disk::

    async with Cluster(config, seed=1) as c:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        await c.nodes[leader].client_write(b"x")
        await c.crash(leader)
        await c.restart(leader)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any, Generic, Self, TypeVar, overload

from ..config import Config
from ..core.clock import Clock
from ..errors import WaitTimeout
from ..metrics import check_timeout
from ..network.router import Router
from ..raft import Raft
from ..storage import RaftLogStorage, RaftStateMachine
from ..storage.memory import MemDisk, MemLogStore, MemStateMachine
from ..types import NodeId, ServerState
from ..validation import check_node_id, shown

__all__ = ["Cluster", "StateMachineFactory"]

StateMachineFactory = Callable[[MemDisk], Any]
"""What ``Cluster``'s ``state_machine`` is: a function of a node's ``MemDisk`` to its state
machine (``Cluster`` itself takes ``Callable[[MemDisk], SM]``, typed by its result)."""

SM = TypeVar("SM", bound=RaftStateMachine)
"""The type of a ``Cluster``'s state machines (``MemStateMachine`` by default)."""
LS = TypeVar("LS", bound=RaftLogStorage)
"""The type of a ``Cluster``'s log stores (``MemLogStore`` by default)."""


class Cluster(Generic[SM, LS]):
    """In-process nodes sharing one ``Router``.

    ``nodes`` holds the running nodes; ``disks`` every node's durable storage (kept across
    crashes). ``state_machines`` the state machine object of each running node, and
    ``log_stores`` its log store: to type checkers, of the types the ``state_machine`` and
    ``log_store`` factories return (``Cluster[MemStateMachine, MemLogStore]`` without them),
    so ``cluster.state_machines[1].data`` is checked as any other attribute (they were
    ``Any``: a misspelt attribute passed ``mypy --strict``), and a factory whose objects do
    not implement the protocols is refused at the call.
    """

    @overload
    def __init__(
        self: Cluster[MemStateMachine, MemLogStore],
        config: Config | None = None,
        *,
        seed: int = 0,
        serialize: bool = False,
        state_machine: None = None,
        log_store: None = None,
        disk: Callable[[NodeId], MemDisk] | None = None,
        clock: Callable[[NodeId], Clock] | None = None,
        on_start: Callable[[NodeId, Raft], None] | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self: Cluster[SM, MemLogStore],
        config: Config | None = None,
        *,
        seed: int = 0,
        serialize: bool = False,
        state_machine: Callable[[MemDisk], SM],
        log_store: None = None,
        disk: Callable[[NodeId], MemDisk] | None = None,
        clock: Callable[[NodeId], Clock] | None = None,
        on_start: Callable[[NodeId, Raft], None] | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self: Cluster[MemStateMachine, LS],
        config: Config | None = None,
        *,
        seed: int = 0,
        serialize: bool = False,
        state_machine: None = None,
        log_store: Callable[[NodeId, MemDisk], LS],
        disk: Callable[[NodeId], MemDisk] | None = None,
        clock: Callable[[NodeId], Clock] | None = None,
        on_start: Callable[[NodeId, Raft], None] | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self: Cluster[SM, LS],
        config: Config | None = None,
        *,
        seed: int = 0,
        serialize: bool = False,
        state_machine: Callable[[MemDisk], SM],
        log_store: Callable[[NodeId, MemDisk], LS],
        disk: Callable[[NodeId], MemDisk] | None = None,
        clock: Callable[[NodeId], Clock] | None = None,
        on_start: Callable[[NodeId, Raft], None] | None = None,
    ) -> None: ...

    def __init__(
        self,
        config: Config | None = None,
        *,
        seed: int = 0,
        serialize: bool = False,
        state_machine: Callable[[MemDisk], Any] | None = None,
        log_store: Callable[[NodeId, MemDisk], Any] | None = None,
        disk: Callable[[NodeId], MemDisk] | None = None,
        clock: Callable[[NodeId], Clock] | None = None,
        on_start: Callable[[NodeId, Raft], None] | None = None,
    ) -> None:
        """``state_machine``, ``log_store``, ``disk`` and ``clock`` build each node's parts
        (defaults: ``MemStateMachine``, ``MemLogStore``, ``MemDisk``, the loop's clock);
        ``on_start`` is called with every node started (the simulator uses it)."""
        self.config = config or Config()
        self.seed = seed
        self.router = Router(seed=seed, serialize=serialize)
        self.nodes: dict[NodeId, Raft] = {}
        self.disks: dict[NodeId, MemDisk] = {}
        self.state_machines: dict[NodeId, SM] = {}
        self.log_stores: dict[NodeId, LS] = {}
        self._sm_factory: Callable[[MemDisk], SM] = state_machine or (lambda disk: MemStateMachine(disk))  # type: ignore[assignment]
        self._log_store_factory: Callable[[NodeId, MemDisk], LS] = log_store or (lambda nid, disk: MemLogStore(disk))  # type: ignore[assignment]
        self._disk_factory = disk or (lambda nid: MemDisk())
        self._clock_factory = clock
        self._on_start = on_start
        self._boots = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    def _running(self, node_id: NodeId) -> Raft:
        """The running node ``node_id``; ``ValueError`` naming the running ones otherwise,
        ``TypeError``/``ValueError`` unless ``node_id`` is a node id (``crash("1")`` said
        "node 1 is not running (running: [1, 2, 3])")."""
        raft = self.nodes.get(check_node_id(node_id))
        if raft is None:
            raise ValueError(f"node {node_id!r} is not running (running: {sorted(self.nodes)})")
        return raft

    async def add_node(self, node_id: NodeId) -> Raft:
        """Start node ``node_id`` (on its existing disk if it had one) and register it.
        ``ValueError`` if it is running already: a second node on the same disk would not
        stop the first (``restart`` stops it, then starts it again). ``TypeError`` /
        ``ValueError`` (nothing made) unless ``node_id`` is a node id (an ``int`` in ``[0,
        MAX_NODE_ID]``)."""
        node_id = check_node_id(node_id)
        if node_id in self.nodes:
            raise ValueError(f"node {node_id} is running already; crash() or restart() it")
        disk = self.disks.get(node_id)
        if disk is None:
            disk = self.disks[node_id] = self._disk_factory(node_id)
        sm = self._sm_factory(disk)
        store = self._log_store_factory(node_id, disk)
        self._boots += 1
        raft = await Raft.new(
            node_id,
            self.config,
            self.router.factory(node_id),
            store,
            sm,
            clock=None if self._clock_factory is None else self._clock_factory(node_id),
            seed=self.seed * 1000003 + node_id * 7919 + self._boots,
        )
        self.nodes[node_id] = raft
        self.state_machines[node_id] = sm
        self.log_stores[node_id] = store
        if self._on_start is not None:
            self._on_start(node_id, raft)
        self.router.register(node_id, raft)
        return raft

    async def start(self, ids: Iterable[NodeId], *, initialize: bool = True) -> None:
        """Start every node of ``ids``; initialize the cluster from the smallest id.
        ``ValueError`` (nothing started) for no ids, an id given twice, or an id of a running
        node; ``TypeError`` / ``ValueError`` (nothing started) for an id that is not a node
        id. With ``initialize``, also ``ValueError`` (nothing started) while a node of the
        cluster that has a membership runs: initialized, ``ids`` would be a second cluster
        beside it (start them with ``initialize=False`` and add them with ``add_learner``
        and ``change_membership``)."""
        given = [check_node_id(nid) for nid in ids]
        ids = sorted(set(given))
        if len(ids) != len(given):
            twice = sorted({nid for nid in given if given.count(nid) > 1})
            raise ValueError(f"start was given node ids {shown(twice)} more than once")
        if not ids:
            raise ValueError("start needs at least one node id")
        running = [nid for nid in ids if nid in self.nodes]
        if running:
            raise ValueError(f"nodes {running} are running already; crash() or restart() them")
        if initialize and any(raft.metrics.membership_config.membership.voter_ids() for raft in self.nodes.values()):
            raise ValueError(
                f"the cluster's nodes {sorted(self.nodes)} run already: initializing {ids} would make another cluster "
                "of them; "
                f"start(..., initialize=False), then add_learner() and change_membership() on the leader")
        for nid in ids:
            await self.add_node(nid)
        if initialize:
            await self.nodes[ids[0]].initialize(set(ids))

    async def crash(self, node_id: NodeId) -> None:
        """Stop ``node_id`` abruptly (its disk stays): it becomes unreachable. ``ValueError``
        if it is not running (never started, or crashed already); ``TypeError``/``ValueError``
        unless ``node_id`` is a node id."""
        self._running(node_id)
        self.router.unregister(node_id)
        raft = self.nodes.pop(node_id)
        self.state_machines.pop(node_id, None)
        self.log_stores.pop(node_id, None)
        await raft.shutdown()

    async def restart(self, node_id: NodeId) -> Raft:
        """Start ``node_id`` again over its disk: stopped first if it runs (as ``crash``),
        then started as ``add_node`` does. ``ValueError`` (nothing started) if it has no disk
        in this cluster (``disks``): a node that never ran here was started new and empty,
        which a test meaning to restart a node never means (``add_node`` starts a new one);
        ``TypeError``/``ValueError`` unless ``node_id`` is a node id."""
        node_id = check_node_id(node_id)
        if node_id not in self.nodes and node_id not in self.disks:
            raise ValueError(
                f"node {node_id} never ran in this cluster: it has no disk to start again over "
                f"(nodes with a disk: {sorted(self.disks)}); add_node({node_id}) starts a new node"
            )
        if node_id in self.nodes:
            await self.crash(node_id)
        return await self.add_node(node_id)

    def leader(self) -> NodeId | None:
        """The running node that is leader with the highest term, if any."""
        best: tuple[int, NodeId] | None = None
        for nid, r in self.nodes.items():
            m = r.metrics
            if m.state == ServerState.LEADER and (best is None or m.current_term > best[0]):
                best = (m.current_term, nid)
        return None if best is None else best[1]

    async def wait_for_leader(self, timeout: float = 5.0, among: Iterable[NodeId] | None = None) -> NodeId:
        """Wait until one of ``among`` (default: the running nodes) is the leader known by
        every other running node of ``among``; return its id. Raises ``WaitTimeout`` after
        ``timeout`` seconds, also when none of ``among`` is running; ``TypeError`` or
        ``ValueError`` for a ``timeout`` that is not a finite number of seconds >= 0.
        ``among`` is read once, when the wait starts (a generator too); ``ValueError`` when
        it names no node (no leader could ever be found among none)."""
        wanted = None if among is None else set(among)
        if wanted is not None and not wanted:
            raise ValueError("wait_for_leader(among=...) names no node: give the ids to wait on, or None for every running node")
        checked = check_timeout(timeout)
        if checked is None:
            raise TypeError("wait_for_leader needs a timeout in seconds, got None")
        timeout = checked
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            ids = set(wanted) if wanted is not None else set(self.nodes)
            ids &= set(self.nodes)
            lid = self.leader()
            if lid is not None and lid in ids and all(self.nodes[i].current_leader() == lid for i in ids):
                return lid
            remaining = deadline - loop.time()
            if remaining <= 0:
                if not ids:
                    what = "in the cluster" if wanted is None else f"among {sorted(wanted)}"
                    raise WaitTimeout(f"no leader {what} within {timeout}s: no node of it is running")
                states = "; ".join(self.nodes[i].metrics.describe() for i in sorted(ids))
                raise WaitTimeout(f"no leader agreed by {sorted(ids)} within {timeout}s: {states}")
            if not ids:  # nothing running to watch yet: poll until one starts or time is up
                await asyncio.sleep(min(remaining, 0.05))
                continue
            # Wake on any node's metrics change, bounded by the remaining time.
            waits = [asyncio.ensure_future(self.nodes[i]._core.watch.changed()) for i in ids]
            done, pending = await asyncio.wait(waits, timeout=min(remaining, 0.05), return_when=asyncio.FIRST_COMPLETED)
            for p in pending:
                p.cancel()

    async def wait_applied(self, index: int, timeout: float = 5.0, ids: Iterable[NodeId] | None = None) -> None:
        """Wait until every node of ``ids`` (default: running ones) applied up to ``index``.
        Raises ``ValueError`` if one of ``ids`` is not running, ``WaitTimeout`` after
        ``timeout`` seconds (per node)."""
        wanted = list(ids if ids is not None else self.nodes)
        for nid in wanted:
            self._running(nid)
        for nid in wanted:
            await self.nodes[nid].wait(timeout).applied_index_at_least(index, f"n{nid} applied >= {index}")

    async def shutdown(self) -> None:
        """Stop every running node."""
        for nid in list(self.nodes):
            await self.crash(nid)
