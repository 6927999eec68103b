"""An in-process cluster whose nodes talk over real TCP on 127.0.0.1 (each node: Mem stores,
its own ``TcpServer`` on a port from ``free_port`` and its own ``TcpNetworkFactory``), and a
``RaftServer`` wrapper that counts the RPCs delivered to a node. Shared by the TCP tests."""

from __future__ import annotations

import asyncio
import ssl
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from openraft_py import Config, SnapshotPolicy
from openraft_py.errors import ForwardToLeader, WaitTimeout
from openraft_py.network.tcp import TcpNetworkFactory, TcpServer
from openraft_py.raft import Raft
from openraft_py.storage.memory import MemDisk, MemLogStore, MemStateMachine
from openraft_py.testing.proc.cluster import free_port
from openraft_py.types import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    BasicNode,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    LogId,
    NodeId,
    ServerState,
    TransferLeaderRequest,
    VoteRequest,
    VoteResponse,
)


def tcp_config(**kw: Any) -> Config:
    """Timeouts that tolerate a loaded 2-core machine; snapshots off unless asked."""
    base: dict[str, Any] = dict(
        election_timeout_min=150,
        election_timeout_max=300,
        heartbeat_interval=40,
        snapshot_policy=SnapshotPolicy.never(),
    )
    base.update(kw)
    return Config(**base)


def steady_tcp_config(**kw: Any) -> Config:
    """``tcp_config`` with election timeouts of 1-2 s, for a test that needs one leader and
    one term throughout and checks something else (an attack, a frozen peer): on a loaded
    2-core machine a stall of the event loop outlasted 150-300 ms and another node took
    the next term, which such a test read as its own failure."""
    base: dict[str, Any] = dict(election_timeout_min=1000, election_timeout_max=2000)
    base.update(kw)
    return tcp_config(**base)


class CountingRaft:
    """A ``RaftServer`` that counts the calls of each handler, then delegates to ``raft``."""

    def __init__(self, raft: Raft) -> None:
        self.raft = raft
        self.calls: Counter[str] = Counter()
        self.terms: set[int] = set()
        """The term of the vote (or ``from_leader``) of every request delivered."""

    @property
    def metrics(self) -> Any:
        """The wrapped node's metrics (the server reads the membership from them)."""
        return self.raft.metrics

    def total(self) -> int:
        """Every call counted so far."""
        return sum(self.calls.values())

    async def append_entries(self, req: AppendEntriesRequest) -> AppendEntriesResponse:
        self.calls["append_entries"] += 1
        self.terms.add(req.vote.leader_id.term)
        return await self.raft.append_entries(req)

    async def vote(self, req: VoteRequest) -> VoteResponse:
        self.calls["vote"] += 1
        self.terms.add(req.vote.leader_id.term)
        return await self.raft.vote(req)

    async def install_snapshot(self, req: InstallSnapshotRequest) -> InstallSnapshotResponse:
        self.calls["install_snapshot"] += 1
        self.terms.add(req.vote.leader_id.term)
        return await self.raft.install_snapshot(req)

    async def handle_transfer_leader(self, req: TransferLeaderRequest) -> None:
        self.calls["handle_transfer_leader"] += 1
        self.terms.add(req.from_leader.leader_id.term)
        await self.raft.handle_transfer_leader(req)


class TcpNode:
    """One node: its disk (kept across restarts), and while running its ``Raft``, counting
    wrapper, server and network factory."""

    def __init__(self, node_id: NodeId) -> None:
        self.id = node_id
        self.disk = MemDisk()
        # Below the kernel's ephemeral range (``free_port``), not one the OS picks in it: a
        # node restarted on its port found it taken ("address already in use", once under
        # load), most likely as the local port of some outgoing connection meanwhile.
        self.port = free_port()
        self.raft: Raft | None = None
        self.counting: CountingRaft | None = None
        self.server: TcpServer | None = None
        self.factory: TcpNetworkFactory | None = None

    @property
    def addr(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"


class TcpCluster:
    """Nodes on loopback TCP. ``server_ssl`` / ``client_ssl`` turn on (mutual) TLS, the same
    contexts for every node; ``ssl_of(node_id)`` instead gives each node its own
    ``(server context, client context)``. ``server_kw`` / ``factory_kw`` are extra arguments
    of every ``TcpServer.start`` / ``TcpNetworkFactory``."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        cluster_name: str = "test-cluster",
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        ssl_of: Callable[[NodeId], tuple[ssl.SSLContext, ssl.SSLContext]] | None = None,
        server_kw: dict[str, Any] | None = None,
        factory_kw: dict[str, Any] | None = None,
    ) -> None:
        self.config = config or tcp_config()
        self.cluster_name = cluster_name
        self.server_ssl = server_ssl
        self.client_ssl = client_ssl
        self.ssl_of = ssl_of
        self.server_kw = server_kw or {}
        self.factory_kw = factory_kw or {}
        self.nodes: dict[NodeId, TcpNode] = {}

    async def __aenter__(self) -> TcpCluster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start_node(self, nid: NodeId) -> TcpNode:
        """Start (or restart, on its old port and disk) node ``nid``."""
        node = self.nodes.setdefault(nid, TcpNode(nid))
        server_ssl, client_ssl = self.ssl_of(nid) if self.ssl_of is not None else (self.server_ssl, self.client_ssl)
        node.factory = TcpNetworkFactory(
            nid,
            self.cluster_name,
            ssl=client_ssl,
            backoff_min=0.02,
            backoff_max=0.2,
            seed=nid,
            **self.factory_kw,
        )
        node.raft = await Raft.new(
            nid, self.config, node.factory, MemLogStore(node.disk), MemStateMachine(node.disk), seed=nid
        )
        node.counting = CountingRaft(node.raft)
        node.server = await TcpServer.start(
            node.counting, "127.0.0.1", node.port, self.cluster_name, ssl=server_ssl, **self.server_kw
        )
        node.port = node.server.port
        return node

    async def start(self, ids: list[NodeId]) -> None:
        """Start ``ids`` and initialize the first with all of them as voters."""
        for nid in ids:
            await self.start_node(nid)
        first = self.nodes[ids[0]].raft
        assert first is not None
        await first.initialize({nid: BasicNode(self.nodes[nid].addr) for nid in ids})

    async def stop_node(self, nid: NodeId) -> None:
        """Stop node ``nid`` (server, raft, factory); its disk is kept."""
        node = self.nodes[nid]
        if node.server is not None:
            await node.server.close()
        if node.raft is not None:
            await node.raft.shutdown()
        if node.factory is not None:
            await node.factory.close()
        node.server = node.raft = node.factory = node.counting = None

    def running(self) -> dict[NodeId, Raft]:
        """The running nodes' ``Raft`` handles."""
        return {nid: n.raft for nid, n in self.nodes.items() if n.raft is not None}

    async def wait_for_leader(self, timeout: float = 10.0) -> NodeId:
        """A leader every running node agrees on."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            rafts = self.running()
            leaders = [nid for nid, r in rafts.items() if r.metrics.state == ServerState.LEADER]
            if len(leaders) == 1 and all(r.current_leader() == leaders[0] for r in rafts.values()):
                return leaders[0]
            if loop.time() > deadline:
                raise WaitTimeout("no agreed leader: " + "; ".join(r.metrics.describe() for r in rafts.values()))
            await asyncio.sleep(0.02)  # polling the metrics of several nodes; bounded by the deadline

    async def wait_leader_ready(self, voters: Iterable[NodeId] | None = None, timeout: float = 10.0) -> NodeId:
        """The agreed leader (``wait_for_leader``) once it takes a membership change: it has
        committed an entry of its own term, and each node of ``voters`` (default: every
        other running voter) has matched that entry. ``wait_for_leader`` returns as soon as
        every follower has heard from the leader, before the leader has heard back: a
        leader just elected refuses a change with ``InProgress`` (its membership entry is
        not committed in its view) or ``LearnerIsLagging`` (a voter it has no answer from).
        A leader that changes meanwhile is waited for again; ``WaitTimeout`` after
        ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            lid = await self.wait_for_leader(max(deadline - loop.time(), 0.1))
            raft = self.nodes[lid].raft
            assert raft is not None
            m = raft.metrics
            term = m.current_term
            # A leader appends an entry of its term when elected: it is at or before this one.
            mine = m.last_log_index
            if voters is None:
                want = set(m.membership_config.membership.voter_ids()) & set(self.running()) - {lid}
            else:
                want = set(voters) - {lid}

            def ready(m: Any, term: int = term, mine: int = mine, want: set[NodeId] = want) -> bool:
                if m.state != ServerState.LEADER or m.current_term != term:
                    return True  # not the leader any more: look for the next one
                matched = m.replication or {}
                committed = m.committed.index if m.committed is not None else -1
                return committed >= mine and all(matched.get(nid, -1) >= mine for nid in want)

            what = f"leader {lid} committed its entry {mine} and every voter of {sorted(want)} matched it"
            m = await raft.wait(max(deadline - loop.time(), 0.1)).metrics(ready, what)
            if m.state == ServerState.LEADER and m.current_term == term:
                return lid

    async def write(self, data: bytes, timeout: float = 10.0) -> LogId:
        """Write ``data`` through the current leader (retrying on a leader change)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            lid = await self.wait_for_leader(max(deadline - loop.time(), 0.1))
            try:
                resp = await asyncio.wait_for(self.nodes[lid].raft.client_write(data), 5.0)  # type: ignore[union-attr]
                return resp.log_id
            except ForwardToLeader:
                if loop.time() > deadline:
                    raise

    async def wait_applied(self, index: int, timeout: float = 10.0) -> None:
        """Every running node applied up to ``index``."""
        for nid, r in sorted(self.running().items()):
            await r.wait(timeout).applied_index_at_least(index, f"n{nid} applied >= {index}")

    async def close(self) -> None:
        """Stop every node."""
        for nid in list(self.nodes):
            await self.stop_node(nid)


async def until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``cond()`` until it holds, for network state that has no change to wait on (a
    connection opened or closed); ``AssertionError`` naming ``what`` after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.01)
