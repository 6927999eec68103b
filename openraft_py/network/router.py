"""The in-process transport: nodes of one process talk through a ``Router``.

Used by tests (with fault injection), by ``make run`` and by the throughput benchmark::

    router = Router(seed=7)
    raft1 = await Raft.new(1, config, router.factory(1), log_store, state_machine)
    router.register(1, raft1)                      # anything implementing RaftServer
    router.partition({1, 2}, {3})                  # 3 cannot talk to 1 or 2
    router.heal()

Requests and responses are passed as the very objects the caller built (they are frozen
Structs) unless ``Router(serialize=True)``, which round-trips each through msgspec msgpack
to check wire compatibility, or ``Router(wire=True)`` (also ``set_wire(True)``), which
passes each through the real TCP codec of ``openraft_py.network.wire``: the message is
framed (``frame_message``), split back by a ``FrameReader``, its header checked and its
body decoded with the typed, bounded decoder (``decode_body``), exactly as the TCP
transport does on each side. A message the codec refuses fails the RPC with
``NetworkError`` (request side: the target handles nothing) and is counted in
``wire_errors``; the simulator runs a share of its seeds this way. Setting the environment
variable ``OPENRAFT_PY_ROUTER_WIRE=1`` (or ``true``, ``yes``, ``on``) makes ``wire=True`` the default of every ``Router``
(to run a whole test suite through the codec). The clients offer ``submit_append_entries``
(as the TCP client does), so the leader's replication channels take the callback path they
take over TCP: with the codec on, through every fault (a task of the router per request);
with it off, the fast mode's direct hand-over below.

Faults, all removed by ``heal()``: ``isolate``, ``partition``, ``cut``, ``set_drop_rate``,
``set_duplicate_rate``, ``set_delay``, ``set_rpc_failure``. Every random choice (drops,
duplicates, delays) comes from one ``random.Random(seed)``, so a run with the same seed and
the same call order makes the same choices.

Two lanes, as the TCP transport's two connections per peer: the clients have
``RaftNetwork``'s optional ``heartbeat``, an AppendEntries without entries that a leader
sends beside its replication window. It is the RPC ``"heartbeat"`` for counters, hooks and
``set_rpc_failure`` (which can fail either lane alone), and ``set_delay(..., rpc=...)`` can
delay either lane alone; isolations, partitions and cuts cut both lanes, and drops,
duplicates and delays apply to each message on its own, so a heartbeat can overtake
AppendEntries handed over before it, and its answer arrive before theirs. The target
handles it as any AppendEntries (``RaftServer.append_entries``).

What a caller sees:

- target not registered (stopped or crashed node), path cut, or request dropped:
  ``Unreachable``, and the target handles nothing;
- response dropped: the target handled the request, the caller gets ``Timeout``;
- the target's handler raised ``Fatal`` (the node stopped): ``Unreachable``; raised anything
  else: ``RemoteError``;
- an injected failure (``set_rpc_failure``) or a hook's exception: that exception, and the
  target handles nothing.

The router does not enforce ``RPCOption.hard_ttl``: callers bound their calls. A request
handed over by the fast mode's ``submit_append_entries`` is bounded only by its target: a
``Raft`` answers every request it takes (with its response, or with an error when it stops),
but one whose log store never reports an append durable holds that leader's requests to it
until it does, where the TCP transport would raise ``Timeout`` after ``hard_ttl``. A test of a
hung follower that needs the ``Timeout`` configures a fault or hook (``set_delay``,
``add_hook``), which turns the fast mode off.

Hot path: with no fault, no hook and no serialization configured, ``append_entries`` (and
``heartbeat``) is a flag test, one dict lookup, a counter increment and a direct ``await`` of the server's
method: no task, no ``sleep(0)``. ``submit_append_entries`` then hands the request to the
server's own ``submit_append_entries`` (a ``Raft``'s), whose node calls the caller's reply from
its pass: no task, no future, no loop callback, and the leader's channel's sender task is not
woken (``docs/design/performance.md``, the thirty-seventh round). With a fault or hook
configured it takes nothing (returns ``None``) and the channel uses ``append_entries``.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import random
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from .._compiled import env_flag
from ..errors import Fatal, InvalidRequest, NetworkError, RemoteError, RPCError, Timeout, Unreachable
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
from ..validation import check_bool, check_node_id, shown

if TYPE_CHECKING:
    from . import RaftServer

__all__ = ["Router", "RouterClient", "RouterFactory", "RPC_NAMES", "Hook", "ResponseHook"]

RPC_NAMES: tuple[str, ...] = ("append_entries", "vote", "install_snapshot", "transfer_leader", "heartbeat")
"""The RPC names used by counters, ``set_rpc_failure``, ``set_delay`` and hooks.
``"heartbeat"`` is the heartbeat lane (``RouterClient.heartbeat``): an AppendEntries a leader
sends beside its replication window; ``"append_entries"`` is every other AppendEntries."""

_RPC_INDEX = {name: i for i, name in enumerate(RPC_NAMES)}
_HEARTBEAT = _RPC_INDEX["heartbeat"]
_SERVER_METHOD = {
    "append_entries": "append_entries",
    "vote": "vote",
    "install_snapshot": "install_snapshot",
    "transfer_leader": "handle_transfer_leader",
    "heartbeat": "append_entries",
}
_RESPONSE_TYPE: dict[str, type | None] = {
    "append_entries": AppendEntriesResponse,
    "vote": VoteResponse,
    "install_snapshot": InstallSnapshotResponse,
    "transfer_leader": None,
    "heartbeat": AppendEntriesResponse,
}

Hook = Callable[[str, NodeId, NodeId, Any], "Awaitable[None] | None"]
"""``hook(rpc_name, source, target, request)``; may be a coroutine function; raise an
``RPCError`` to fail the RPC."""

ResponseHook = Callable[[str, NodeId, NodeId, Any, Any], None]
"""``hook(rpc_name, source, target, request, response)``: observes a server's answer."""

Direction = Literal["in", "out", "both"]

_DEFAULT_OPTION = RPCOption()
_encoder = msgspec.msgpack.Encoder()


def _roundtrip(obj: Any, typ: type) -> Any:
    """``obj`` encoded to msgpack and decoded back as ``typ`` (as the TCP transport would)."""
    return msgspec.msgpack.decode(_encoder.encode(obj), type=typ)


class _WireCodec:
    """Passes RPC messages through the TCP transport's codec (``openraft_py.network.wire``
    and the ``_core`` frame reader): encode, frame, split, check the header, decode."""

    __slots__ = ("wire", "reader_cls", "max_frame", "req_kind", "resp_kind", "_next_id")

    def __init__(self) -> None:
        from .._core import FrameReader
        from . import wire

        self.wire = wire
        self.reader_cls = FrameReader
        self.max_frame = 2**32 - 1
        self.req_kind = {
            "append_entries": wire.KIND_APPEND_ENTRIES,
            "vote": wire.KIND_VOTE,
            "install_snapshot": wire.KIND_INSTALL_SNAPSHOT,
            "transfer_leader": wire.KIND_TRANSFER_LEADER,
            "heartbeat": wire.KIND_APPEND_ENTRIES,
        }
        self.resp_kind = {rpc: wire.RESPONSE_KIND[k] for rpc, k in self.req_kind.items()}
        self._next_id = 0

    def roundtrip(self, kind: int, msg: Any) -> Any:
        """``msg`` sent as ``kind`` and received on the other side; raises ``NetworkError``
        when the codec refuses it on either side."""
        w = self.wire
        self._next_id += 1
        rid = self._next_id
        try:
            frame = w.frame_message(kind, rid, msg)
            # Fed in two pieces: the reader must reassemble a frame split by the stream.
            reader = self.reader_cls(self.max_frame)
            cut = len(frame) // 2
            payloads = reader.feed(frame[:cut]) + reader.feed(frame[cut:])
            if len(payloads) != 1 or reader.buffered():
                raise w.WireError(f"frame reader returned {len(payloads)} frames for one")
            got_kind, got_id, body = w.split_payload(payloads[0])
            if got_kind != kind or got_id != rid:
                raise w.WireError(f"header mismatch: kind {got_kind} id {got_id}, sent {kind} id {rid}")
            return w.decode_body(got_kind, body)
        except (w.WireError, w.FrameTooLarge, ValueError, TypeError, OverflowError) as e:
            raise NetworkError(f"wire codec refused a {w.KIND_NAMES.get(kind, kind)} message: {e}") from e


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Read a dropped answer's outcome, so that asyncio does not log its error as never
    retrieved."""
    if not fut.cancelled():
        fut.exception()


def _server_error(target: NodeId, e: Exception) -> RPCError:
    """What a caller sees when node ``target``'s handler raised ``e``: ``Unreachable`` if
    the node has stopped (``Fatal``), else ``RemoteError`` (its handler failed)."""
    if isinstance(e, Fatal):
        return Unreachable(f"node {target} has stopped: {e}")
    return RemoteError(target, e)


def _mapped_error(target: NodeId, e: BaseException) -> BaseException:
    """A server's error ``e`` as a direct submit's caller sees it: an ``Exception`` as
    ``append_entries`` maps it (``_server_error``), anything else as it is (the error
    mapper of a ``Raft``'s ``Reply``, consulted only when an error is set)."""
    return _server_error(target, e) if isinstance(e, Exception) else e


def _mapped_reply(target: NodeId, reply: Callable[[Any], None], result: Any) -> None:
    """Hand ``reply`` the server's answer ``result``, an error mapped as ``append_entries``
    maps it (``_server_error``)."""
    reply(_server_error(target, result) if isinstance(result, Exception) else result)


class _Answer:
    """The answer of an AppendEntries delivered directly (the router's fast mode): awaited,
    the server's response, its errors mapped as ``RouterClient.append_entries`` maps them.

    ``close()`` drops it unawaited (a replication channel that stopped first: its
    ``_abandon``): the server's future, which fails with ``Stopped`` when that node stops,
    then has its outcome retrieved when it comes. (It was a coroutine: closed unrun, it left
    that future unread, and asyncio logged "Future exception was never retrieved" for it.)"""

    __slots__ = ("target", "fut")

    def __init__(self, target: NodeId, fut: asyncio.Future[AppendEntriesResponse]) -> None:
        self.target = target
        self.fut = fut

    def __await__(self) -> Generator[Any, None, AppendEntriesResponse]:
        try:
            return (yield from self.fut)
        except Exception as e:
            raise _server_error(self.target, e) from e

    def close(self) -> None:
        """Drop the answer: nobody will await it."""
        self.fut.add_done_callback(_retrieve)


class RouterClient:
    """A ``RaftNetwork`` sending from ``source`` to ``target`` through a ``Router``.

    One client per ``(source, target)`` pair: ``new_client`` returns the same object again.
    ``counts[i]`` counts the delivered requests of ``RPC_NAMES[i]``.
    """

    __slots__ = ("_router", "source", "target", "counts", "_map_error")

    def __init__(self, router: Router, source: NodeId, target: NodeId) -> None:
        self._router = router
        self.source = source
        self.target = target
        self.counts = [0] * len(RPC_NAMES)
        # The target's error as ``append_entries`` reports it, made once per client and
        # handed with each direct submit (``_submit_direct``).
        self._map_error: Callable[[BaseException], BaseException] = partial(_mapped_error, target)

    async def append_entries(
        self, req: AppendEntriesRequest, option: RPCOption = _DEFAULT_OPTION
    ) -> AppendEntriesResponse:
        """Deliver AppendEntries to the target (see ``Router`` for the errors)."""
        router = self._router
        if router._fast:
            server = router._servers.get(self.target)
            if server is not None:
                self.counts[0] += 1
                try:
                    return await server.append_entries(req)
                except Exception as e:
                    raise _server_error(self.target, e) from e
        return await router._send("append_entries", self, req)  # type: ignore[no-any-return]

    def send_append_entries(
        self, req: AppendEntriesRequest, option: RPCOption = _DEFAULT_OPTION
    ) -> Awaitable[AppendEntriesResponse]:
        """``append_entries`` started now (see ``RaftNetwork``). In the fast mode, to a
        server with ``start_append_entries`` (a ``Raft``), the request is delivered here
        and then; otherwise the returned coroutine delivers it when awaited."""
        router = self._router
        if router._fast:
            server = router._servers.get(self.target)
            start = getattr(server, "start_append_entries", None)
            if start is not None:
                self.counts[0] += 1
                try:
                    fut = start(req)
                except Exception as e:
                    raise _server_error(self.target, e) from e
                return _Answer(self.target, fut)
        return self.append_entries(req, option)

    @property
    def submit_append_entries(self) -> Callable[[AppendEntriesRequest, RPCOption, Callable[[Any], None]], Any]:
        """``RaftNetwork``'s optional ``submit_append_entries``. While the wire codec is on
        (``Router.set_wire``), where the router stands in for the TCP transport, it delivers
        through every fault as ``append_entries`` does (a task of the router per request);
        otherwise it is the fast mode's direct hand-over (``_submit_direct``), which takes a
        request only while no fault is configured. A replication channel reads it when it
        starts."""
        return self._submit_direct if self._router._wire is None else self._submit_append_entries

    def _submit_direct(
        self, req: AppendEntriesRequest, option: RPCOption, reply: Callable[[Any], None]
    ) -> Any:
        """The fast mode's ``submit_append_entries``: to a server with
        ``submit_append_entries`` (a ``Raft``), the request is handed over here and then and
        the server calls ``reply`` itself, from its own pass (no task, no future, no loop
        callback), with the response or the error mapped as ``append_entries`` maps it
        (``_server_error``). A ``Raft`` gets ``reply`` itself and the client's error mapper
        (``Raft._submit_append_entries_mapped``): its ``Reply`` maps only an error, so a
        response reaches ``reply`` with no wrapper called; another server gets ``reply``
        wrapped (``_mapped_reply``). Returns the server's handle (``cancel()`` withdraws the
        reply), or ``None`` (not taken: a fault or hook is configured, the target is not
        registered, or it has no such method), and the channel then uses the other
        methods, which apply every fault."""
        router = self._router
        if router._fast:
            server = router._servers.get(self.target)
            mapped = getattr(server, "_submit_append_entries_mapped", None)
            if mapped is not None:
                self.counts[0] += 1
                try:
                    return mapped(req, reply, self._map_error)
                except Exception as e:
                    raise _server_error(self.target, e) from e
            submit = getattr(server, "submit_append_entries", None)
            if submit is not None:
                self.counts[0] += 1
                try:
                    return submit(req, partial(_mapped_reply, self.target, reply))
                except Exception as e:
                    raise _server_error(self.target, e) from e
        return None

    def _submit_append_entries(
        self, req: AppendEntriesRequest, option: RPCOption, reply: Callable[[Any], None]
    ) -> asyncio.Task[None]:
        """``append_entries`` with a callback (see ``RaftNetwork``): the request goes through
        every fault as ``append_entries``'s does, delivered by a task of the router that
        calls ``reply`` with the response or the error (requests start in call order);
        cancelling the returned task withdraws it."""
        return self._router._deliver_then_reply(self, req, reply)

    async def heartbeat(
        self, req: AppendEntriesRequest, option: RPCOption = _DEFAULT_OPTION
    ) -> AppendEntriesResponse:
        """``RaftNetwork``'s optional ``heartbeat``: deliver a heartbeat sent beside the
        replication window (an AppendEntries without entries) on the heartbeat lane, the RPC
        ``"heartbeat"``: it is counted, hooked, failed (``set_rpc_failure``) and delayed
        (``set_delay``) apart from ``append_entries``, and its drops and delays are drawn on
        their own, so it may reach the target ahead of AppendEntries handed over before it,
        and its answer come back before theirs. Isolations, partitions and cuts apply to it
        as to every RPC. The target handles it with ``append_entries``; errors as
        ``append_entries``."""
        router = self._router
        if router._fast:
            server = router._servers.get(self.target)
            if server is not None:
                self.counts[_HEARTBEAT] += 1
                try:
                    return await server.append_entries(req)
                except Exception as e:
                    raise _server_error(self.target, e) from e
        return await router._send("heartbeat", self, req)  # type: ignore[no-any-return]

    async def vote(self, req: VoteRequest, option: RPCOption = _DEFAULT_OPTION) -> VoteResponse:
        """Deliver a vote request to the target (see ``Router`` for the errors)."""
        return await self._router._send("vote", self, req)  # type: ignore[no-any-return]

    async def install_snapshot(
        self, req: InstallSnapshotRequest, option: RPCOption = _DEFAULT_OPTION
    ) -> InstallSnapshotResponse:
        """Deliver a snapshot chunk to the target (see ``Router`` for the errors)."""
        return await self._router._send("install_snapshot", self, req)  # type: ignore[no-any-return]

    async def transfer_leader(
        self, req: TransferLeaderRequest, option: RPCOption = _DEFAULT_OPTION
    ) -> None:
        """Deliver a leader-transfer request to the target (see ``Router`` for the errors)."""
        await self._router._send("transfer_leader", self, req)

    def __repr__(self) -> str:
        return f"RouterClient({self.source} -> {self.target})"


class RouterFactory:
    """A ``RaftNetworkFactory`` whose clients send from ``source``.

    It has no ``closed`` (``RaftNetworkFactory``'s optional attribute, which
    ``TcpNetworkFactory`` has): a ``Router`` is never closed, so neither is a factory of it;
    a failed request is always a fault of a peer or path (an unregistered target, an
    isolation, a cut, a drop or an injected failure, each undone by ``Router.heal`` or
    ``register``), which its node logs at DEBUG and rides out, never the WARNING of a
    node whose own transport is closed for good.
    """

    __slots__ = ("_router", "source")

    def __init__(self, router: Router, source: NodeId) -> None:
        self._router = router
        self.source = source

    @property
    def node_id(self) -> NodeId:
        """The node this factory sends for (``source``). ``Raft.new`` refuses the factory for
        another node, as it refuses a ``TcpNetworkFactory`` of another node: one node on
        another's factory sent as that node, so the router's faults cut the wrong node's
        traffic, and the two shared one client per target."""
        return self.source

    def new_client(self, target: NodeId, node: BasicNode) -> RouterClient:
        """The client from ``source`` to ``target`` (``node`` is not used: the router
        addresses nodes by id)."""
        return self._router._client(self.source, target)

    def __repr__(self) -> str:
        return f"RouterFactory(source={self.source})"


def _check_rate(p: object, what: str) -> float:
    """``p`` as a ``float`` if it is a number (``int`` or ``float``, not ``bool``) in
    ``[0, 1]``; else ``TypeError`` (``"0.5"`` failed with a bare "'<=' not supported
    between instances of 'float' and 'str'") or ``ValueError`` (NaN too), naming ``what``."""
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"{what} must be a number in [0, 1], got {type(p).__name__} {shown(p)}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{what} must be within [0, 1], got {shown(p)}")
    return float(p)


def _check_ms(value: object, what: str) -> float:
    """``value`` as a ``float`` if it is a number of milliseconds (``int`` or ``float``, not
    ``bool``); else ``TypeError`` naming ``what``. The range is ``set_delay``'s to check."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of milliseconds, got {type(value).__name__} {shown(value)}")
    return float(value)


INVALID_KEPT = 10
"""How many refused requests ``Router.invalid_requests`` keeps (the rest only counted)."""


class Router:
    """An in-process network of ``RaftServer``s with fault injection (see the module
    docstring).

    ``seed`` seeds the one ``random.Random`` used for drops and delays; ``serialize=True``
    round-trips every request and response through msgspec msgpack; ``wire=True`` passes
    them through the TCP codec (``set_wire``; default: on iff ``OPENRAFT_PY_ROUTER_WIRE`` is
    on: ``1``, ``true``, ...; ``0``, ``false``, ``no``, ``off`` or empty is off, as every
    ``OPENRAFT_PY_*`` switch, ``openraft_py._compiled.env_flag``).
    """

    def __init__(self, *, seed: int = 0, serialize: bool = False, wire: bool | None = None) -> None:
        if wire is None:
            wire = env_flag("OPENRAFT_PY_ROUTER_WIRE")
        self.rng = random.Random(seed)
        """The source of every random choice the router makes."""
        self.serialize = serialize
        self._wire: _WireCodec | None = None
        self.wire_messages = 0
        """Messages (requests and responses) passed through the wire codec."""
        self.wire_errors = 0
        """Messages the wire codec refused (each failed its RPC with ``NetworkError``)."""
        self.invalid_requests: list[str] = []
        """The requests a server refused as ``InvalidRequest`` while a fault or hook is
        configured (delivered by ``_send``, duplicates included: their outcome reaches no
        caller), as ``"<rpc> <source> -> <target>: <message>"``, the first
        ``INVALID_KEPT``. Nodes of one cluster never send each other one; the simulator
        fails a run that has any."""
        self.invalid_request_count = 0
        """How many requests ``invalid_requests`` counts, kept or not."""
        self._servers: dict[NodeId, RaftServer] = {}
        self._clients: dict[tuple[NodeId, NodeId], RouterClient] = {}
        self._hooks: list[Hook] = []
        self._response_hooks: list[ResponseHook] = []
        # Faults. Invariant: _fast is True iff none is configured (and no hook, no serialize).
        self._isolated: set[NodeId] = set()
        self._cuts: set[tuple[NodeId, NodeId]] = set()  # directed (source, target) pairs
        self._group_of: dict[NodeId, int] | None = None  # partition: node -> group number
        self._drop_rate = 0.0
        self._delay: tuple[float, float] | None = None  # seconds
        # Delays of one RPC (``set_delay(rpc=...)``), in place of ``_delay``; None: none.
        self._rpc_delays: dict[str, tuple[float, float] | None] = {}
        self._failures: dict[tuple[NodeId, str, str | None], type[RPCError]] = {}
        self._dup_rate = 0.0
        self._dup_tasks: set[asyncio.Task[None]] = set()
        # Deliveries of ``submit_append_entries`` in flight (kept referenced until done).
        self._reply_tasks: set[asyncio.Task[None]] = set()
        self._fast = True
        self.set_wire(wire)

    @property
    def wire(self) -> bool:
        """Whether messages pass through the TCP wire codec (``set_wire``)."""
        return self._wire is not None

    def set_wire(self, enabled: bool) -> None:
        """Pass every request and response through the TCP wire codec from now on
        (``enabled=True``), or hand the objects over directly again. With it on, the
        target receives the request as the TCP server would decode it and the caller the
        response as the TCP client would; a message the codec refuses fails its RPC with
        ``NetworkError`` (and counts in ``wire_errors``). ``TypeError`` unless ``enabled``
        is a ``bool``."""
        check_bool(enabled, "enabled")
        self._wire = _WireCodec() if enabled else None
        self._update_fast()

    def _wire_pass(self, kind: int, msg: Any) -> Any:
        codec = self._wire
        assert codec is not None
        self.wire_messages += 1
        try:
            return codec.roundtrip(kind, msg)
        except NetworkError:
            self.wire_errors += 1
            raise

    # -- membership of the network ---------------------------------------------------------

    def register(self, node_id: NodeId, server: RaftServer) -> None:
        """Route RPCs for ``node_id`` to ``server`` (replacing a previous registration, e.g. a
        restarted node).

        ``TypeError``/``ValueError``, the routes unchanged, unless ``node_id`` is a node id and
        ``server`` an instance (not ``None``, not a class); ``ValueError`` if ``server`` says
        which node it is (an ``int`` ``id``, as ``Raft.id``) and that is not ``node_id``: a
        node registered under another's id received that node's requests, and the other none,
        without a word (``register(1, nodes[i])`` in a loop)."""
        node_id = check_node_id(node_id, "node_id")
        if server is None or isinstance(server, type):
            raise TypeError(f"server must be a RaftServer instance (a Raft), got {shown(server)}")
        own = getattr(server, "id", None)
        if isinstance(own, int) and not isinstance(own, bool) and own != node_id:
            raise ValueError(f"server {shown(server)} is node {own}, not node {node_id}: register it as "
                             f"router.register({own}, ...)")
        self._servers[node_id] = server

    def unregister(self, node_id: NodeId) -> None:
        """Remove ``node_id`` (a stopped or crashed node): RPCs to it raise ``Unreachable``.
        Ids not registered are ignored; ``TypeError``/``ValueError`` unless ``node_id`` is a
        node id (``unregister("1")`` removed nothing, without a word)."""
        self._servers.pop(check_node_id(node_id, "node_id"), None)

    def factory(self, source_id: NodeId) -> RouterFactory:
        """A ``RaftNetworkFactory`` for node ``source_id``: its clients send from it, and
        ``Raft.new`` refuses it for another node (``RouterFactory.node_id``).
        ``TypeError``/``ValueError`` unless ``source_id`` is a node id."""
        return RouterFactory(self, check_node_id(source_id, "source_id"))

    def _client(self, source: NodeId, target: NodeId) -> RouterClient:
        client = self._clients.get((source, target))
        if client is None:
            client = self._clients[(source, target)] = RouterClient(self, source, target)
        return client

    # -- faults ----------------------------------------------------------------------------

    def isolate(self, node_id: NodeId) -> None:
        """Cut ``node_id`` off from every other node, both directions, until ``heal()``.
        ``TypeError``/``ValueError`` unless ``node_id`` is a node id (a ``"1"`` isolated no
        node, without a word)."""
        self._isolated.add(check_node_id(node_id, "node_id"))
        self._update_fast()

    def partition(self, *groups: set[NodeId] | frozenset[NodeId]) -> None:
        """Split the network: nodes in different groups cannot talk; a node in no group is
        isolated (``partition()`` with no group isolates every node; ``heal()`` ends a
        partition). Replaces a previous ``partition`` (cuts and isolations stay). Raises
        ``ValueError`` if a node is in two groups, ``TypeError`` if a group is not a collection
        of ids (a ``str`` or a mapping is not) and ``TypeError``/``ValueError`` for a member that is
        not a node id; nothing changes then."""
        group_of: dict[NodeId, int] = {}
        for i, group in enumerate(groups):
            if isinstance(group, (str, bytes, Mapping)) or not isinstance(group, Iterable):
                raise TypeError(f"each group must be a set of node ids, got {type(group).__name__} {shown(group)}")
            for member in group:
                node_id = check_node_id(member, f"groups[{i}] member")
                if node_id in group_of:
                    raise ValueError(f"node {node_id} is in more than one partition group")
                group_of[node_id] = i
        self._group_of = group_of
        self._update_fast()

    def cut(self, a: NodeId, b: NodeId, *, one_way: bool = False) -> None:
        """Drop messages between ``a`` and ``b``; with ``one_way`` only requests ``a -> b``
        (``b`` can still call ``a``). ``TypeError``/``ValueError`` unless ``a`` and ``b``
        are node ids and ``one_way`` a ``bool``."""
        a = check_node_id(a, "a")
        b = check_node_id(b, "b")
        check_bool(one_way, "one_way")
        self._cuts.add((a, b))
        if not one_way:
            self._cuts.add((b, a))
        self._update_fast()

    def set_drop_rate(self, p: float) -> None:
        """Drop each request with probability ``p`` (the caller gets ``Unreachable``, the
        target sees nothing) and, independently, each response (the target handled the
        request, the caller gets ``Timeout``). ``0`` turns drops off. ``TypeError`` unless
        ``p`` is an ``int`` or ``float`` (not ``bool``), ``ValueError`` outside ``[0, 1]``
        (NaN too)."""
        self._drop_rate = _check_rate(p, "drop rate p")
        self._update_fast()

    def set_duplicate_rate(self, p: float) -> None:
        """Deliver each request a second time with probability ``p``, a little later (up to
        the configured delay, or 5 ms); the duplicate's response is discarded. ``0`` turns
        duplication off. ``TypeError``/``ValueError`` as ``set_drop_rate``."""
        self._dup_rate = _check_rate(p, "duplicate rate p")
        self._update_fast()

    async def _deliver_duplicate(self, rpc: str, source: NodeId, target: NodeId, req: Any, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._path_error(rpc, source, target) is not None:
            return
        server = self._servers.get(target)
        if server is None:
            return
        try:
            await getattr(server, _SERVER_METHOD[rpc])(req)
        except InvalidRequest as e:  # nobody waits for a duplicate's outcome: noted only
            self._note_invalid(rpc, source, target, e)
        except Exception:  # noqa: BLE001 - nobody waits for a duplicate's outcome
            pass

    def _note_invalid(self, rpc: str, source: NodeId, target: NodeId, e: InvalidRequest) -> None:
        """Note that ``target`` refused ``source``'s ``rpc`` as ``InvalidRequest``
        (``invalid_requests``)."""
        self.invalid_request_count += 1
        if len(self.invalid_requests) < INVALID_KEPT:
            self.invalid_requests.append(f"{rpc} {source} -> {target}: {e}")

    def set_delay(self, min_ms: float, max_ms: float, rpc: str | None = None) -> None:
        """Delay each request and each response by a uniform ``[min_ms, max_ms]``
        milliseconds (``asyncio.sleep``), so concurrent messages may be reordered.
        ``set_delay(0, 0)`` turns delays off. With ``rpc`` (one of ``RPC_NAMES``), only that
        RPC's messages, whatever the delay of the others, until ``heal()``: e.g.
        ``set_delay(20, 60, rpc="append_entries")`` makes the replication window slow while
        heartbeats (``rpc="heartbeat"``) keep the delay set without ``rpc``, as a TCP stream
        behind megabytes of entries is slow while the heartbeat connection is not
        (``set_delay(0, 0, rpc=...)``: that RPC is not delayed). Raises ``ValueError``
        unless ``0 <= min_ms <= max_ms`` and both are finite (an infinite delay held every
        message for good), or for an unknown ``rpc``; ``TypeError`` unless both are an
        ``int`` or ``float`` (not ``bool``)."""
        min_ms = _check_ms(min_ms, "min_ms")
        max_ms = _check_ms(max_ms, "max_ms")
        if not (0 <= min_ms <= max_ms and math.isfinite(max_ms)):
            raise ValueError(f"need 0 <= min_ms <= max_ms, both finite, got {min_ms}, {max_ms}")
        if rpc is not None and rpc not in _RPC_INDEX:
            raise ValueError(f"unknown rpc {shown(rpc)}; expected one of {RPC_NAMES}")
        delay = None if max_ms == 0 else (min_ms / 1000.0, max_ms / 1000.0)
        if rpc is None:
            self._delay = delay
        else:
            self._rpc_delays[rpc] = delay
        self._update_fast()

    def _delay_of(self, rpc: str) -> tuple[float, float] | None:
        """The delay range (seconds) of ``rpc``'s messages: its own (``set_delay(rpc=...)``),
        else the one of every RPC; ``None``: not delayed."""
        own = self._rpc_delays
        if own and rpc in own:
            return own[rpc]
        return self._delay

    def set_rpc_failure(
        self,
        node_id: NodeId,
        direction: Direction,
        kind: type[RPCError] | None,
        rpc: str | None = None,
    ) -> None:
        """Fail RPCs sent to (``"in"``), from (``"out"``) or both ways of ``node_id`` by
        raising ``kind`` before delivery; only the RPC named ``rpc`` (see ``RPC_NAMES``) when
        given. ``kind=None`` clears what this ``(node_id, direction, rpc)`` set.
        ``TypeError``/``ValueError`` for a ``node_id`` that is not a node id, another
        ``direction``, an unknown ``rpc`` or a ``kind`` that is not an ``RPCError`` class."""
        node_id = check_node_id(node_id, "node_id")
        if direction not in ("in", "out", "both"):
            raise ValueError(f"direction must be 'in', 'out' or 'both', got {shown(direction)}")
        if rpc is not None and rpc not in _RPC_INDEX:
            raise ValueError(f"unknown rpc {shown(rpc)}; expected one of {RPC_NAMES}")
        if kind is not None and not (isinstance(kind, type) and issubclass(kind, RPCError)):
            raise TypeError(f"kind must be an RPCError subclass or None, got {shown(kind)}")
        dirs = ("in", "out") if direction == "both" else (direction,)
        for d in dirs:
            if kind is None:
                self._failures.pop((node_id, d, rpc), None)
            else:
                self._failures[(node_id, d, rpc)] = kind
        self._update_fast()

    def heal(self) -> None:
        """Remove every fault: isolations, partition, cuts, drop rate, delays (also those of
        one RPC) and injected failures. Hooks stay (``clear_hooks``)."""
        self._isolated.clear()
        self._cuts.clear()
        self._group_of = None
        self._drop_rate = 0.0
        self._delay = None
        self._rpc_delays.clear()
        self._failures.clear()
        self._dup_rate = 0.0
        self._update_fast()

    def add_hook(self, fn: Hook) -> None:
        """Call ``fn(rpc_name, source, target, request)`` for every RPC a client sends,
        before any fault applies (``fn`` may be a coroutine function). If it raises, the RPC
        fails with that exception and the target handles nothing. Raises ``TypeError`` if
        ``fn`` is not callable."""
        if not callable(fn):
            raise TypeError(f"a hook must be callable, got {shown(fn)}")
        self._hooks.append(fn)
        self._update_fast()

    def add_response_hook(self, fn: ResponseHook) -> None:
        """Call ``fn(rpc_name, source, target, request, response)`` for every response a
        server returns, before response faults apply (an observer: it must not raise).
        Raises ``TypeError`` if ``fn`` is not callable."""
        if not callable(fn):
            raise TypeError(f"a response hook must be callable, got {shown(fn)}")
        self._response_hooks.append(fn)
        self._update_fast()

    def clear_hooks(self) -> None:
        """Remove every hook (request and response hooks)."""
        self._hooks.clear()
        self._response_hooks.clear()
        self._update_fast()

    def _update_fast(self) -> None:
        self._fast = not (
            self.serialize
            or self._wire is not None
            or self._hooks
            or self._response_hooks
            or self._isolated
            or self._cuts
            or self._group_of is not None
            or self._drop_rate
            or self._delay
            or self._rpc_delays
            or self._failures
            or self._dup_rate
        )

    def _path_error(self, rpc: str, source: NodeId, target: NodeId) -> RPCError | None:
        """Why ``source`` cannot send ``rpc`` to ``target`` now, or ``None``."""
        if target not in self._servers:
            return Unreachable(f"{rpc} {source} -> {target}: node {target} is not registered")
        if source in self._isolated or target in self._isolated:
            return Unreachable(f"{rpc} {source} -> {target}: isolated")
        if (source, target) in self._cuts:
            return Unreachable(f"{rpc} {source} -> {target}: link cut")
        g = self._group_of
        if g is not None:
            gs, gt = g.get(source), g.get(target)
            if gs is None or gt is None or gs != gt:
                return Unreachable(f"{rpc} {source} -> {target}: partitioned")
        f = self._failures
        if f:
            kind = (
                f.get((source, "out", rpc))
                or f.get((source, "out", None))
                or f.get((target, "in", rpc))
                or f.get((target, "in", None))
            )
            if kind is not None:
                msg = f"{rpc} {source} -> {target}: injected {kind.__name__}"
                if issubclass(kind, RemoteError):
                    return kind(target, msg)
                return kind(msg)
        return None

    # -- delivery --------------------------------------------------------------------------

    def _deliver_then_reply(
        self, client: RouterClient, req: AppendEntriesRequest, reply: Callable[[Any], None]
    ) -> asyncio.Task[None]:
        """``RouterClient.submit_append_entries``: a task delivering ``req`` (tasks start in
        creation order) that calls ``reply`` with the outcome unless it is cancelled first."""
        task = asyncio.ensure_future(self._send_then_reply(client, req, reply))
        self._reply_tasks.add(task)
        task.add_done_callback(self._reply_tasks.discard)
        return task

    async def _send_then_reply(self, client: RouterClient, req: AppendEntriesRequest, reply: Callable[[Any], None]) -> None:
        try:
            resp = await self._send("append_entries", client, req)
        except Exception as e:  # noqa: BLE001 - the RPC's error, given to the caller (not a cancel)
            reply(e)
            return
        reply(resp)

    async def _send(self, rpc: str, client: RouterClient, req: Any) -> Any:
        """Deliver ``req`` from ``client.source`` to ``client.target`` applying every fault;
        return the (possibly round-tripped) response."""
        source, target = client.source, client.target
        for hook in self._hooks:
            r = hook(rpc, source, target, req)
            if inspect.isawaitable(r):
                await r
        if not self._fast:
            err = self._path_error(rpc, source, target)
            if err is not None:
                raise err
            if self._drop_rate and self.rng.random() < self._drop_rate:
                raise Unreachable(f"{rpc} {source} -> {target}: request dropped")
            delay = self._delay_of(rpc)
            if delay is not None:
                await asyncio.sleep(self.rng.uniform(*delay))
                err = self._path_error(rpc, source, target)  # the network changed meanwhile
                if err is not None:
                    raise err
            if self.serialize:
                req = _roundtrip(req, type(req))
            if self._wire is not None:
                req = self._wire_pass(self._wire.req_kind[rpc], req)
            if self._dup_rate and self.rng.random() < self._dup_rate:
                hi = delay[1] if delay is not None else 0.005
                t = asyncio.ensure_future(self._deliver_duplicate(rpc, source, target, req, self.rng.uniform(0, hi)))
                self._dup_tasks.add(t)
                t.add_done_callback(self._dup_tasks.discard)
        server = self._servers.get(target)
        if server is None:
            raise Unreachable(f"{rpc} {source} -> {target}: node {target} is not registered")
        client.counts[_RPC_INDEX[rpc]] += 1
        try:
            resp = await getattr(server, _SERVER_METHOD[rpc])(req)
        except Exception as e:
            if isinstance(e, InvalidRequest):
                self._note_invalid(rpc, source, target, e)
            raise _server_error(target, e) from e
        for rhook in self._response_hooks:
            rhook(rpc, source, target, req, resp)
        if not self._fast:
            if self._drop_rate and self.rng.random() < self._drop_rate:
                raise Timeout(f"{rpc} {source} -> {target}: response dropped")
            delay = self._delay_of(rpc)
            if delay is not None:
                await asyncio.sleep(self.rng.uniform(*delay))
            resp_type = _RESPONSE_TYPE[rpc]
            if self.serialize and resp_type is not None:
                resp = _roundtrip(resp, resp_type)
            if self._wire is not None:
                resp = self._wire_pass(self._wire.resp_kind[rpc], resp)
        return resp

    # -- counters --------------------------------------------------------------------------

    def rpc_count(
        self, rpc: str | None = None, source: NodeId | None = None, target: NodeId | None = None
    ) -> int:
        """How many requests were delivered to a server (handled or not), filtered by RPC
        name, source and target (``None`` matches any)."""
        if rpc is not None and rpc not in _RPC_INDEX:
            raise ValueError(f"unknown rpc {shown(rpc)}; expected one of {RPC_NAMES}")
        total = 0
        for (s, t), client in self._clients.items():
            if (source is None or s == source) and (target is None or t == target):
                total += client.counts[_RPC_INDEX[rpc]] if rpc is not None else sum(client.counts)
        return total

    def reset_counters(self) -> None:
        """Set every counter to 0."""
        for client in self._clients.values():
            client.counts = [0] * len(RPC_NAMES)

    def __repr__(self) -> str:
        return f"Router(nodes={sorted(self._servers)}, fast={self._fast}, wire={self.wire})"
