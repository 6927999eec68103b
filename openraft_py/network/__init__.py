"""Network protocols: how a node sends RPCs to its peers and how a transport delivers them.

- ``RaftNetworkFactory`` (user-supplied, given to ``Raft.new``) makes one ``RaftNetwork``
  client per target; each replication task owns one client.
- ``RaftNetwork`` sends the four RPCs to its target and returns the target's response.
  Rejections (vote not granted, log mismatch, stale leader) are *values* in the responses;
  a client raises only when no response came back, always an ``openraft_py.errors.RPCError``:

  - ``Unreachable``: the target cannot be reached now (connection refused, node down,
    partition). Replication backs off before retrying. Raised with ``connection_kept=True``
    when the request was not sent but the connection is up and still holds requests sent
    before (the TCP client's "not taking": the target has not read what was written to
    it): replication then still counts those requests' bytes ahead of its next ones.
  - ``Timeout``: no response within ``option.hard_ttl`` seconds (the request may or may not
    have been handled). The node gives up an ``append_entries`` call still running after
    twice that; the optional ``send_append_entries`` and ``submit_append_entries`` (see
    ``RaftNetwork``) must keep to the deadline themselves.
  - ``NetworkError``: another transport failure that may succeed if retried.
  - ``RemoteError``: the target received the request but failed to handle it.

  Raising anything else, or returning anything but the RPC's response type, is a bug in the
  client: the node logs a warning and counts the call as failed (it does not stop). Calls on
  one client may overlap (replication pipelines AppendEntries); a client must keep them
  independent.
- ``RaftServer`` is what a transport's server side calls on the receiving node: the ``Raft``
  handle implements it.

``openraft_py.testing.run_network_suite`` checks a transport against this contract
(``docs/reference/network.md``, "The contract a transport keeps").

Transports:

- ``openraft_py.network.tcp``: the TCP transport users deploy. ``TcpNetworkFactory`` (client
  side, one pipelined connection per peer and one for heartbeats, optional TLS) and
  ``TcpServer.start`` (serves a ``Raft`` on a port; handshake on protocol version, cluster
  name and membership, re-checked on open connections as the membership changes; mutual TLS
  with a ``CERT_REQUIRED`` server context, optionally binding certificates to node ids:
  ``peer_id_of_cert``). Its wire format is ``openraft_py.network.wire``
  (``docs/design/wire.md``). Import it from its module.
- ``openraft_py.network.router``: ``Router``, the in-process transport with fault injection
  used by tests and benchmarks; its names are re-exported here.
"""

from __future__ import annotations

from typing import Protocol

from ..types import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    BasicNode,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    NodeId,
    RPCOption,
    TransferLeaderRequest,
    VoteRequest,
    VoteResponse,
)

__all__ = [
    "RaftNetwork",
    "RaftNetworkFactory",
    "RaftServer",
    "Router",
    "RouterClient",
    "RouterFactory",
    "RPC_NAMES",
]


class RaftNetwork(Protocol):
    """A client sending RPCs from one node to one target node (see the module docstring for
    the errors every method may raise).

    Optional: ``send_append_entries(req, option) -> Awaitable[AppendEntriesResponse]``, a
    plain (not ``async``) method that hands the request to the network at once and returns
    what to await for the answer, with ``append_entries``'s result and errors (it may also
    raise them at once). It must not block, and what it does before returning must not
    depend on the calling task (it is called from the Raft core's task, and the replication
    task awaits the result): queue a frame, not open a connection with a timeout. With it,
    a leader hands an AppendEntries to the network in the same loop pass that decided it,
    not one task step later. ``TcpClient`` has it. A result the node will not await (it
    stopped first) is dropped: a future is cancelled, anything else with a ``close()``
    method (a coroutine) closed.

    Optional: ``submit_append_entries(req, option, reply) -> handle | None``, the same with
    a callback instead of an awaitable: it hands the request over at once and returns a
    handle (with ``cancel()``), then calls ``reply`` exactly once, on the loop, with the
    ``AppendEntriesResponse`` or with the error ``append_entries`` would raise (it may also
    raise it at once, and then never calls ``reply``; a second call is ignored, with a
    warning). ``reply`` is quick and never raises.
    When the request cannot be handed over at once (e.g. not connected yet), it returns
    ``None`` and does nothing: the leader then uses the methods above. A coroutine function
    (``async def``) cannot do this: a leader does not use one (it logs a warning). With it,
    the answer is reported from where the network learns it (the connection's read callback)
    instead of from a task that awaits it. ``TcpClient`` has it, and ``RouterClient`` while the
    router's wire codec is on.

    Optional: ``async heartbeat(req, option) -> AppendEntriesResponse``, ``append_entries``
    for a heartbeat a leader sends beside its replication window (its requests in flight to
    the target are unanswered): an AppendEntries without entries whose ``prev_log_id`` the
    target acknowledged. It may reach the target ahead of requests handed over before it
    (nothing about it can be refused for that). A transport that carries requests in order
    on one stream should carry it on another: behind megabytes of entries its answer comes
    back later than an election timeout, and check-quorum deposes the leader. Without it a
    leader sends heartbeats as any AppendEntries. ``TcpClient`` has it (a second
    connection).
    """

    async def append_entries(
        self, req: AppendEntriesRequest, option: RPCOption
    ) -> AppendEntriesResponse:
        """Send AppendEntries (also the heartbeat) and return the target's response.

        ``option.hard_ttl`` is this call's own deadline: the replication's base deadline
        (``max(4 * heartbeat_interval, election_timeout_min)``) plus the time the request's
        payload bytes and those of the requests to the target handed over before it and not
        answered yet take at ``Config.replication_min_rate`` (a request waits for the bytes
        ahead of it on the way). Calls in flight together have different deadlines.

        Raises ``Unreachable``, ``Timeout``, ``NetworkError`` or ``RemoteError``.
        """
        ...

    async def vote(self, req: VoteRequest, option: RPCOption) -> VoteResponse:
        """Send a (pre-)vote request and return the target's response.

        Raises ``Unreachable``, ``Timeout``, ``NetworkError`` or ``RemoteError``.
        """
        ...

    async def install_snapshot(
        self, req: InstallSnapshotRequest, option: RPCOption
    ) -> InstallSnapshotResponse:
        """Send one snapshot chunk (at most ``Config.snapshot_max_chunk_size`` bytes of data)
        and return the target's response. Chunks of one snapshot are sent in order, one at a
        time.

        Raises ``Unreachable``, ``Timeout``, ``NetworkError`` or ``RemoteError``.
        """
        ...

    async def transfer_leader(self, req: TransferLeaderRequest, option: RPCOption) -> None:
        """Ask the target to take over leadership (it calls ``handle_transfer_leader``).

        Raises ``Unreachable``, ``Timeout``, ``NetworkError`` or ``RemoteError``.
        """
        ...


class RaftNetworkFactory(Protocol):
    """Makes ``RaftNetwork`` clients for one node."""

    def new_client(self, target: NodeId, node: BasicNode) -> RaftNetwork:
        """A client sending to ``target`` at ``node`` (its address). Plain method: it must not
        block or do IO; connect lazily on the first RPC. Called again for the same target when
        the membership gives it another ``node`` (it moved: ``add_learner`` with a new
        address); the node then sends to the target only through the new client. Each call
        returns a usable client.
        If it raises, the node treats ``target`` as unreachable (its RPCs raise
        ``Unreachable`` naming the error) and asks again later (at the next vote request or
        leadership, and about once a second while it replicates to ``target``); it does not
        stop. So too if it returns something that is not a ``RaftNetwork``.

        Optional: ``forget(target)``, a plain method the node calls when it no longer sends
        to ``target`` (once ``target`` left its memberships: a leader's replication
        targets, another node's clients of the voters it asked for votes): release what the
        factory keeps for it (a connection). The node drops its client of ``target`` first;
        a later ``new_client(target, ...)`` must work again. ``TcpNetworkFactory`` has it.

        Optional: ``check_node(target, node)``, a plain method that raises ``ValueError``
        for an address the factory can never use; ``Raft.initialize`` and
        ``Raft.add_learner`` call it for each node they are given, before anything is
        logged (``TcpNetworkFactory.check_node`` refuses one that is not ``"host:port"``,
        ``""`` included).

        Optional: ``closed``, an attribute or property that is ``True`` (exactly) once the
        factory can no longer reach any peer, for good (its ``close()`` was called:
        ``TcpNetworkFactory.closed``). ``Raft.new`` refuses such a factory (``ValueError``),
        and a node whose factory becomes closed while it runs says so at WARNING, once
        and then every ``failure_log.REPEAT_EVERY`` seconds, instead of logging each failed
        request at DEBUG as it does a peer that is down (``RaftCore._rpc_failed``). A
        factory that is never closed has none: the in-process ``RouterFactory`` (a
        ``Router`` has no close; every fault it injects is a peer or path down, undone by
        ``heal()``, which a node must ride out quietly)."""
        ...


class RaftServer(Protocol):
    """What a transport's server side calls on the receiving node (``Raft`` implements it).

    Each method raises ``openraft_py.errors.Fatal`` when the node has stopped; a transport
    reports that to the sender as ``Unreachable``. A malformed request raises
    ``InvalidRequest`` (the TCP transport refuses most of them before, at decoding); a
    transport reports it, and any other exception, to the sender as ``RemoteError``.
    """

    async def append_entries(self, req: AppendEntriesRequest) -> AppendEntriesResponse:
        """Handle an AppendEntries request; returns after the entries are durable."""
        ...

    async def vote(self, req: VoteRequest) -> VoteResponse:
        """Handle a vote request; a granted vote is durable before this returns."""
        ...

    async def install_snapshot(self, req: InstallSnapshotRequest) -> InstallSnapshotResponse:
        """Handle one snapshot chunk."""
        ...

    async def handle_transfer_leader(self, req: TransferLeaderRequest) -> None:
        """Handle a leader-transfer request."""
        ...


from .router import RPC_NAMES, Router, RouterClient, RouterFactory  # noqa: E402
