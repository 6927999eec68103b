"""The lock service around the replicated lock table: nodes, a client, a fenced resource.

- ``LockNode``: one Raft node running a ``LockStateMachine``. Its methods run on the leader
  only (others raise ``ForwardToLeader``): writes stamp the leader's clock into the command,
  reads confirm leadership first (``Raft.ensure_linearizable``, ReadIndex).
- ``LockClient``: what an application holds: finds the leader among the nodes and retries
  there.
- ``FencedResource``: a resource the lock protects. It refuses a write whose fencing token is
  older than one it has seen, or is not the live lease's token when it asks the lock service.
- ``LockCluster``: three nodes in one process on the in-process ``Router``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from lease_locks import Acquire, Denied, Granted, Lease, LockStateMachine, Release, Renew, encode_command

from openraft_py import Config, Fatal, ForwardToLeader, NodeId, Raft, ReadPolicy
from openraft_py.network.router import Router
from openraft_py.storage import MemLogStore

__all__ = [
    "Clock",
    "FencedResource",
    "LockClient",
    "LockCluster",
    "MAX_INT",
    "LockNode",
    "ManualClock",
    "StaleToken",
    "wall_clock_ms",
]

T = TypeVar("T")

Clock = Callable[[], float]
"""A clock in milliseconds. Leaders stamp its time into the commands they propose."""


def wall_clock_ms() -> float:
    """The wall clock in ms: comparable across machines, as far as their clocks are synced
    (the lease's safety margin must cover the skew; see the README)."""
    return time.time() * 1000.0


class ManualClock:
    """A clock that moves only when told (tests and the demo: a "pause" without sleeping)."""

    def __init__(self, start_ms: float = 1_000_000.0) -> None:
        self.now_ms = start_ms

    def __call__(self) -> float:
        return self.now_ms

    def advance(self, ms: float) -> None:
        """Move time forward by ``ms``."""
        self.now_ms += ms


MAX_INT = 2**63 - 1
"""The largest ``ttl_ms`` and ``token`` a call takes: a signed 64-bit integer (msgpack cannot
encode an int above 2**64 - 1 at all)."""


def _check_call(lock: object, holder: object, *, ttl_ms: object = 1, token: object = 0) -> None:
    """``TypeError`` / ``ValueError`` naming the argument unless ``lock`` and ``holder`` are
    strings with a UTF-8 form (no lone surrogate), ``ttl_ms`` an int in 1..``MAX_INT`` and
    ``token`` one in 0..``MAX_INT``. Checked before the command is written: the state machine
    answers a command it cannot decode with ``None``, a lease of no duration would be granted
    already expired, and the encoder's own errors (``UnicodeEncodeError``, ``OverflowError``)
    name no argument."""
    for name, value in (("lock", lock), ("holder", holder)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ValueError(f"{name} must be encodable as UTF-8 (it holds a lone surrogate): {value!r}") from None
    for name, value, least in (("ttl_ms", ttl_ms, 1), ("token", token, 0)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < least:
            raise ValueError(f"{name} must be at least {least}, got {value}")
        if value > MAX_INT:
            raise ValueError(f"{name} must be at most {MAX_INT} (2**63 - 1), got {value}")


class LockNode:
    """One lock-service node: a ``Raft`` over a ``LockStateMachine`` with the leader clock
    ``clock``. Every method raises ``ForwardToLeader`` on a node that is not the leader, and
    ``TypeError`` / ``ValueError`` for an argument of the wrong type or range (a ``ttl_ms``
    that is not an int in 1..``MAX_INT``, a name with a lone surrogate, say) before anything
    is written."""

    def __init__(self, raft: Raft, sm: LockStateMachine, clock: Clock) -> None:
        self.raft = raft
        self.sm = sm
        self.clock = clock

    async def acquire(self, lock: str, holder: str, ttl_ms: int) -> Granted | Denied:
        """Take ``lock`` for ``ttl_ms``; ``Granted.token`` is the fencing token."""
        _check_call(lock, holder, ttl_ms=ttl_ms)
        return await self._write(Acquire(lock, holder, ttl_ms, self.clock()))

    async def renew(self, lock: str, holder: str, token: int, ttl_ms: int) -> Granted | Denied:
        """Extend a live lease; ``Denied`` once it expired or changed hands."""
        _check_call(lock, holder, ttl_ms=ttl_ms, token=token)
        return await self._write(Renew(lock, holder, token, ttl_ms, self.clock()))

    async def release(self, lock: str, holder: str, token: int) -> bool:
        """Give the lease up; ``False`` if it was no longer live."""
        _check_call(lock, holder, token=token)
        resp = await self.raft.client_write(encode_command(Release(lock, holder, token, self.clock())))
        return bool(resp.data)

    async def _write(self, cmd: Acquire | Renew) -> Granted | Denied:
        resp = await self.raft.client_write(encode_command(cmd))
        assert isinstance(resp.data, Granted | Denied), resp.data
        return resp.data

    async def lease(self, lock: str) -> Lease | None:
        """The live lease on ``lock`` now, a linearizable read: ReadIndex confirms this node
        is still the leader with a quorum and waits until everything committed before the
        call is applied; then the lease's expiry is checked against this leader's clock."""
        await self.raft.ensure_linearizable(ReadPolicy.READ_INDEX)
        return self.sm.live_lease(lock, self.clock())


class LockClient:
    """Calls the lock service through whichever node leads, retrying on another node when a
    call meets a non-leader or a node that has stopped, for at most ``timeout`` seconds per
    call (then ``TimeoutError``)."""

    def __init__(self, nodes: dict[NodeId, LockNode], timeout: float = 10.0) -> None:
        self._nodes = nodes
        self._timeout = timeout
        self._leader: NodeId | None = None

    def _leader_node(self) -> LockNode | None:
        """The node believed to lead, or ``None`` when no node is leader now."""
        leader = self._leader
        if leader is not None and leader in self._nodes:
            return self._nodes[leader]
        for node in self._nodes.values():
            if node.raft.is_leader():
                self._leader = node.raft.id
                return node
        return None

    async def _call(self, fn: Callable[[LockNode], Awaitable[T]]) -> T:
        """``fn(leader)``, retried on the node a ``ForwardToLeader`` names, on another node
        when the one asked has stopped (``Fatal``: shut down, or its storage failed), or
        after a short pause while no node leads (an election is under way).

        Retrying is safe for these commands: acquiring or renewing a lease one holds again
        keeps its token; a retried release may answer ``False`` after the first one took
        effect."""
        async with asyncio.timeout(self._timeout):
            while True:
                node = self._leader_node()
                if node is not None:
                    try:
                        return await fn(node)
                    except ForwardToLeader as e:
                        self._leader = e.leader_id
                        if e.leader_id is not None:
                            continue
                    except Fatal:
                        # A stopped node never leads again: look for the leader among the
                        # others (a stopped node is not ``is_leader()``).
                        self._leader = None
                await asyncio.sleep(0.01)

    async def acquire(self, lock: str, holder: str, ttl_ms: int) -> Granted | Denied:
        """``LockNode.acquire`` on the leader."""
        return await self._call(lambda n: n.acquire(lock, holder, ttl_ms))

    async def renew(self, lock: str, holder: str, token: int, ttl_ms: int) -> Granted | Denied:
        """``LockNode.renew`` on the leader."""
        return await self._call(lambda n: n.renew(lock, holder, token, ttl_ms))

    async def release(self, lock: str, holder: str, token: int) -> bool:
        """``LockNode.release`` on the leader."""
        return await self._call(lambda n: n.release(lock, holder, token))

    async def lease(self, lock: str) -> Lease | None:
        """``LockNode.lease`` (a linearizable read) on the leader."""
        return await self._call(lambda n: n.lease(lock))


class StaleToken(Exception):
    """``FencedResource.write`` refused a write: its fencing token is not the live one."""


@dataclass
class FencedResource:
    """A store the lock protects (think: a file on shared storage, a database row).

    ``write`` checks the token in two ways, under one lock so a check and its write are not
    interleaved with another write:

    1. the classic fence: a token lower than the highest this resource has accepted for the
       lock is refused, with no call to the lock service;
    2. a linearizable check with the lock service: the token must be the live lease's. This
       refuses a paused holder even before the new holder has written anything.
    """

    locks: LockClient
    data: dict[str, str] = field(default_factory=dict)
    highest_token: dict[str, int] = field(default_factory=dict)
    _mutex: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def write(self, lock: str, token: int, key: str, value: str) -> None:
        """Set ``key`` to ``value`` under lease ``token`` of ``lock``; ``StaleToken`` if the
        token is fenced off."""
        async with self._mutex:
            highest = self.highest_token.get(lock, -1)
            if token < highest:
                raise StaleToken(f"token {token} is older than token {highest}, already used")
            lease = await self.locks.lease(lock)
            if lease is None or lease.token != token:
                live = "no live lease" if lease is None else f"the live lease is token {lease.token} of {lease.holder}"
                raise StaleToken(f"token {token} is not live: {live}")
            self.highest_token[lock] = token
            self.data[key] = value


CONFIG = Config(election_timeout_min=150, election_timeout_max=300, heartbeat_interval=50)


class LockCluster:
    """Three (``ids``) lock nodes in one process on a ``Router``, sharing ``clock``. Use
    ``await LockCluster.start(...)`` and ``await cluster.stop()``."""

    def __init__(self, router: Router, nodes: dict[NodeId, LockNode], clock: Clock) -> None:
        self.router = router
        self.nodes = nodes
        self.clock = clock

    @classmethod
    async def start(cls, clock: Clock = wall_clock_ms, ids: tuple[NodeId, ...] = (1, 2, 3)) -> LockCluster:
        """Start the nodes, initialize the cluster and wait until a leader is elected."""
        router = Router()
        nodes: dict[NodeId, LockNode] = {}
        for i in ids:
            sm = LockStateMachine()
            raft = await Raft.new(i, CONFIG, router.factory(i), MemLogStore(), sm)
            router.register(i, raft)
            nodes[i] = LockNode(raft, sm, clock)
        cluster = cls(router, nodes, clock)
        await nodes[ids[0]].raft.initialize(list(ids))
        await nodes[ids[0]].raft.wait(10.0).metrics(lambda m: m.current_leader is not None, "a leader")
        return cluster

    def client(self) -> LockClient:
        """A client over every node of the cluster."""
        return LockClient(self.nodes)

    async def stop_node(self, node_id: NodeId) -> None:
        """Crash-stop one node (it leaves the network and ``nodes``)."""
        node = self.nodes.pop(node_id)
        self.router.unregister(node_id)
        await node.raft.shutdown()

    async def stop(self) -> None:
        """Shut every node down."""
        for node_id in list(self.nodes):
            await self.stop_node(node_id)
