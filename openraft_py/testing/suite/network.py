"""The network conformance suite: checks any ``RaftNetworkFactory`` / ``RaftNetwork`` (a
transport of your own: gRPC, HTTP, ...) against the contract the node relies on
(``openraft_py.network``; ``docs/reference/network.md``, "The contract a transport keeps").

The suite plays both ends. Its ``SuiteServer`` is the receiving node, ``TARGET`` (node 2): a
scripted ``RaftServer`` (with a ``metrics`` property, so ``TcpServer.start`` serves it) that
records every request it is handed and answers, refuses, fails or holds each as a check
needs. Your builder serves it on your transport and gives the factory of the sending node,
``SOURCE`` (node 1); the checks send through the clients that factory makes::

    from openraft_py.testing import NetworkHandle, run_network_suite

    @contextlib.asynccontextmanager
    async def builder(server):                  # the suite's RaftServer of node 2
        listener = await MyServer.start(server, "127.0.0.1", 0)
        factory = MyNetworkFactory(node_id=1)
        try:
            yield NetworkHandle(factory, BasicNode(listener.address),
                                stop_target=listener.close, start_target=listener.start_again,
                                close=factory.close)
        finally:
            await factory.close()
            await listener.close()

    await run_network_suite(builder)            # raises SuiteFailure naming every failed check

The builder contract
--------------------

``builder(server)`` takes the ``SuiteServer`` and returns an async context manager (the
suite exits it after the check: close what the builder opened) or an awaitable, giving a
``NetworkHandle``: the sending node's ``factory``, the ``node`` (address) at which the server
is served as node ``TARGET``, and optional capabilities; the checks that need a missing one
are reported as skipped:

- ``stop_target()`` / ``start_target()``: stop serving the target (a node that went down)
  and serve the same ``server`` again at the same ``node`` (it came back);
- ``close()``: close the factory (every client): calls in flight and later calls must fail;
- ``config``: the node's ``Config`` whose limits the largest requests take
  (``max_payload_bytes`` in ``max_payload_entries`` entries, ``max_entry_bytes``,
  ``snapshot_max_chunk_size``; default ``Config()``).

A builder that is not a one-argument callable, or that gives something else than a
``NetworkHandle``, raises ``BuilderError`` (a ``TypeError``) at once.

What it checks
--------------

Each RPC's round trip with edge values (the request the server is handed equals, field for
field and type for type, what the client sent; the response the client returns equals what
the server answered): a heartbeat without entries, entries of every payload kind (a joint
membership with long unicode addresses among them), the largest ids
(``validation.MAX_TERM``, ``MAX_INDEX``, ``MAX_NODE_ID``), the largest AppendEntries and
snapshot chunk of ``config``, every shape of response, a multi-chunk snapshot (each chunk's
offset, data and ``done``, in order); the errors (the server's exception is
``RemoteError``, its node stopped, ``Fatal``, is ``Unreachable``, no answer is ``Timeout``
after ``hard_ttl``, a target that is down is ``Unreachable`` and is reached again when it
is back, a node at the address that is not the addressed one is ``Unreachable`` and is
handed nothing); cancelling a call in flight (it ends at once and does not poison the next
call, which gets its own answer); many concurrent calls on one client answered out of
order, each with its own answer; AppendEntries handed over in call order; ``new_client``
(plain, a network client with every RPC method, twice for a target); closing the factory
and calls after that; ``forget``;
the optional ``send_append_entries``, ``submit_append_entries`` and ``heartbeat`` (a
heartbeat round-trips as an AppendEntries and is answered while an AppendEntries handed
over before it waits for its answer).

A check that fails names what the network did and what the contract asks. Each call is
bounded: a client that hangs, or ignores a cancel, fails its check (the hung call is left
running, cancelled) instead of holding the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...config import Config
from ...core.raft_core import drop_not_a_client, not_a_client
from ...errors import InvalidRequest, RemoteError, RPCError, Stopped, Timeout, Unreachable
from ...types import (
    BLANK,
    EMPTY_STORED_MEMBERSHIP,
    AppendEntriesRequest,
    AppendEntriesResponse,
    BasicNode,
    Entry,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    LogId,
    Membership,
    NodeId,
    Normal,
    RPCOption,
    SnapshotMeta,
    StoredMembership,
    TransferLeaderRequest,
    Vote,
    VoteRequest,
    VoteResponse,
)
from ...validation import MAX_ADDR_LEN, MAX_INDEX, MAX_NODE_ID, MAX_TERM
from .base import AnyCheckFn, BuilderError, CheckOutcome, CheckRegistry, CheckSkipped, Suite, abandon, expect

__all__ = [
    "NetworkHandle",
    "NetworkSuite",
    "SOURCE",
    "SuiteServer",
    "TARGET",
    "run_network_suite",
]

SOURCE: NodeId = 1
"""The id of the sending node, whose factory the builder gives."""
TARGET: NodeId = 2
"""The id of the receiving node, the ``SuiteServer`` the builder serves."""
OTHER: NodeId = 3
"""A node the builder serves nowhere: a client to it at the target's address must not reach
the target."""

MAX_SNAPSHOT_ID_LEN = MAX_ADDR_LEN
"""The longest snapshot id the checks send (1024 characters): the most the TCP transport
carries (``wire.MAX_ADDR_LEN``), so a state machine's ids keep to it."""

OPTION = RPCOption(hard_ttl=5.0, soft_ttl=2.5)
"""The option of the checks' calls: an answer is expected well within it."""
CALL_LIMIT = 8.0
"""Seconds a call that must return (an answer or an error) is given before the check fails
it as hung (above ``OPTION.hard_ttl``: a client keeping to it returns before)."""
SHORT_TTL = 0.3
"""``hard_ttl`` of the calls the server does not answer (the timeout checks)."""
PROMPT = 2.0
"""Seconds within which a call must end when it cannot succeed (the target down, the
factory closed, the call cancelled): at once, not after ``hard_ttl``. (Generous: a loaded
machine must not fail a transport that keeps to it.)"""
CANCEL_GRACE = 2.0
"""Seconds a call given up by the suite (cancelled) has to end before it is reported as
ignoring the cancel and left behind."""


# -- the receiving node ----------------------------------------------------------------------


class _SuiteMetrics:
    """What ``TcpServer.start`` (and a transport like it) reads of a served node: its id, no
    membership yet (any sender is accepted), no vote, no leader."""

    def __init__(self, node_id: NodeId) -> None:
        self.id = node_id
        self.current_leader: NodeId | None = None
        self.vote = Vote.new(0, 0)
        self.membership_config = EMPTY_STORED_MEMBERSHIP


Answer = Callable[[Any], Awaitable[Any]]
"""How the server answers one kind of request: an async function of the request."""


class SuiteServer:
    """The suite's ``RaftServer`` of node ``TARGET``: serve it on your transport.

    It records each request it is handed (``received``: ``(rpc, request)`` pairs, ``rpc``
    one of ``RPCS``: a heartbeat is an ``append_entries``) and answers from ``answers[rpc]`` when a check set one, else with
    a response made from the request (``default_answer``). Like ``Raft`` it has a
    ``metrics`` property (``id``, an empty membership: ``TcpServer.start`` serves it) and
    the optional ``start_append_entries`` and ``submit_append_entries``, so a transport
    takes the path it takes with a real node. ``release()`` (called by the suite after each
    check) lets every held request answer."""

    def __init__(self, node_id: NodeId = TARGET) -> None:
        self._metrics = _SuiteMetrics(node_id)
        self.received: list[tuple[str, Any]] = []
        self.answers: dict[str, Answer] = {}
        self._arrived = asyncio.Condition()
        self._gates: list[asyncio.Event] = []

    @property
    def metrics(self) -> Any:
        """The node's metrics as a transport's server side reads them (``ServedRaft``)."""
        return self._metrics

    @property
    def id(self) -> NodeId:
        """The id of the node served (``TARGET``)."""
        return int(self._metrics.id)

    async def _handle(self, rpc: str, req: Any) -> Any:
        self.received.append((rpc, req))
        async with self._arrived:
            self._arrived.notify_all()
        answer = self.answers.get(rpc)
        if answer is not None:
            return await answer(req)
        return default_answer(rpc, req)

    async def append_entries(self, req: AppendEntriesRequest) -> AppendEntriesResponse:
        """``RaftServer.append_entries``."""
        return await self._handle("append_entries", req)  # type: ignore[no-any-return]

    def start_append_entries(self, req: AppendEntriesRequest) -> asyncio.Future[AppendEntriesResponse]:
        """``Raft.start_append_entries`` (optional for a ``RaftServer``; a transport that
        delivers from a callback calls it, as ``Router`` does): ``append_entries`` handed
        over now, the future of its answer."""
        return asyncio.ensure_future(self.append_entries(req))

    def submit_append_entries(self, req: AppendEntriesRequest, reply: Callable[[Any], None]) -> asyncio.Future[Any]:
        """``Raft.submit_append_entries`` (optional; the TCP server calls it): ``reply`` is
        called once with the answer or the exception ``append_entries`` raised; the
        returned handle's ``cancel()`` means it is never called."""
        task = asyncio.ensure_future(self.append_entries(req))

        def done(t: asyncio.Future[Any]) -> None:
            if t.cancelled():
                return
            e = t.exception()
            reply(e if e is not None else t.result())

        task.add_done_callback(done)
        return task

    async def vote(self, req: VoteRequest) -> VoteResponse:
        """``RaftServer.vote``."""
        return await self._handle("vote", req)  # type: ignore[no-any-return]

    async def install_snapshot(self, req: InstallSnapshotRequest) -> InstallSnapshotResponse:
        """``RaftServer.install_snapshot``."""
        return await self._handle("install_snapshot", req)  # type: ignore[no-any-return]

    async def handle_transfer_leader(self, req: TransferLeaderRequest) -> None:
        """``RaftServer.handle_transfer_leader``."""
        await self._handle("transfer_leader", req)

    def of(self, rpc: str) -> list[Any]:
        """The requests of kind ``rpc`` received so far, in arrival order."""
        return [req for name, req in self.received if name == rpc]

    async def wait_received(self, count: int, within: float = CALL_LIMIT) -> None:
        """Wait until ``count`` requests have been handed to the server in all;
        ``AssertionError`` after ``within`` seconds."""
        try:
            async with asyncio.timeout(within):
                async with self._arrived:
                    await self._arrived.wait_for(lambda: len(self.received) >= count)
        except TimeoutError:
            raise AssertionError(
                f"the server was handed {len(self.received)} requests within {within}s, expected {count}: "
                f"{[name for name, _ in self.received]}"
            ) from None

    def gate(self) -> asyncio.Event:
        """An event that holds the answers waiting on it until it is set (or ``release``)."""
        ev = asyncio.Event()
        self._gates.append(ev)
        return ev

    def release(self) -> None:
        """Open every gate: each held request answers."""
        for ev in self._gates:
            ev.set()


def default_answer(rpc: str, req: Any) -> Any:
    """What the server answers ``req`` unless a check says otherwise: AppendEntries accepted
    up to its last entry, a vote granted, a snapshot chunk taken, a transfer notice taken."""
    if rpc == "append_entries":
        last = req.entries[-1].log_id if req.entries else req.prev_log_id
        return AppendEntriesResponse(req.vote, True, last)
    if rpc == "vote":
        return VoteResponse(req.vote, True, req.last_log_id, req.pre_vote)
    if rpc == "install_snapshot":
        return InstallSnapshotResponse(req.vote)
    return None


# -- the builder's handle --------------------------------------------------------------------


@dataclass
class NetworkHandle:
    """What the builder gives (see the module docstring): ``factory`` of node ``SOURCE``,
    ``node`` where the suite's server is served as node ``TARGET``, optional capabilities.

    The suite sets ``server`` (the ``SuiteServer`` it passed to the builder)."""

    factory: Any
    node: BasicNode
    stop_target: Callable[[], Awaitable[None]] | None = None
    start_target: Callable[[], Awaitable[None]] | None = None
    close: Callable[[], Awaitable[None]] | None = None
    config: Config = field(default_factory=Config)
    server: SuiteServer = field(default=None, repr=False)  # type: ignore[assignment]  # set by the suite

    def client(self, target: NodeId = TARGET, node: BasicNode | None = None) -> Any:
        """``factory.new_client(target, node)`` (default: the target at ``node``);
        ``AssertionError`` if it gives an awaitable (an ``async def new_client``) or anything
        else that is not a network client (``None``, an object without one of the RPC
        methods): a node treats such a target as unreachable (``RaftCore.client``). What
        was returned is let go (``drop_not_a_client``: a coroutine closed, a task or future
        cancelled)."""
        node = self.node if node is None else node
        made = self.factory.new_client(target, node)
        if inspect.isawaitable(made):
            drop_not_a_client(made)
            raise AssertionError(
                "new_client returned an awaitable: it must be a plain method that returns the client at once "
                "(no IO: connect on the first RPC)"
            )
        lacks = not_a_client(made)
        if lacks is not None:
            raise AssertionError(f"{type(self.factory).__name__}.new_client({target}, {node!r}) returned {lacks}")
        return made


# -- calling the network, bounded ------------------------------------------------------------

class Outcome:
    """How one bounded call ended: ``value`` (returned), ``error`` (raised), or ``hung``
    (nothing within its limit; ``ignored_cancel`` if it did not end once cancelled either)."""

    __slots__ = ("value", "error", "hung", "ignored_cancel", "elapsed")

    def __init__(self) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.hung = False
        self.ignored_cancel = False
        self.elapsed = 0.0

    def describe(self) -> str:
        """What happened, for a failure message."""
        if self.hung:
            extra = " and did not end when cancelled" if self.ignored_cancel else ""
            return f"the call did not return within {self.elapsed:.1f}s{extra}"
        if self.error is not None:
            return f"the call raised {type(self.error).__name__}: {str(self.error)[:200]}"
        return f"the call returned {type(self.value).__name__} {self.value!r:.200}"


async def _stop_task(task: asyncio.Task[Any]) -> bool:
    """Cancel ``task`` and wait up to ``CANCEL_GRACE`` for it to end; ``False`` (left
    behind, referenced) if it did not."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=CANCEL_GRACE)
    if not done:
        abandon(task)
        return False
    if not task.cancelled():
        task.exception()
    return True


def _start(make: Callable[[], Any]) -> asyncio.Task[Any]:
    """A task awaiting what ``make()`` returns (an awaitable; an exception ``make`` raises at
    once is the task's)."""

    async def run() -> Any:
        return await make()

    return asyncio.ensure_future(run())


async def _settle(task: asyncio.Task[Any], within: float) -> Outcome:
    """Wait up to ``within`` seconds for ``task``; cancel it if it has not ended."""
    out = Outcome()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        done, _ = await asyncio.wait({task}, timeout=within)
    except asyncio.CancelledError:
        await _stop_task(task)
        raise
    out.elapsed = loop.time() - t0
    if not done:
        out.hung = True
        out.ignored_cancel = not await _stop_task(task)
        return out
    if task.cancelled():
        out.error = asyncio.CancelledError()
    elif (e := task.exception()) is not None:
        out.error = e
    else:
        out.value = task.result()
    return out


async def call(make: Callable[[], Any], within: float = CALL_LIMIT) -> Outcome:
    """Run the network call ``make()`` (its awaitable awaited) in a task of its own, bounded
    by ``within`` seconds (cancelled past it)."""
    return await _settle(_start(make), within)


async def answer_of(make: Callable[[], Any], what: str, within: float = CALL_LIMIT) -> Any:
    """The value of the call ``make()``; ``AssertionError`` naming ``what`` if it raised or
    did not return within ``within`` seconds."""
    out = await call(make, within)
    if out.hung or out.error is not None:
        raise AssertionError(f"{what}: expected an answer; {out.describe()}")
    return out.value


async def error_of(make: Callable[[], Any], kind: type[BaseException], what: str, within: float = CALL_LIMIT) -> Outcome:
    """The call ``make()`` must raise ``kind`` within ``within`` seconds; ``AssertionError``
    naming ``what`` otherwise."""
    out = await call(make, within)
    if out.error is None or not isinstance(out.error, kind):
        raise AssertionError(f"{what}: expected {kind.__name__} within {within:g}s; {out.describe()}")
    return out


def same(actual: Any, expected: Any, what: str) -> None:
    """``actual == expected`` and of the same type (a transport that decodes a ``Normal``'s
    data as ``str``, or a ``list`` as a ``tuple``, fails here), else ``AssertionError``."""
    expect(actual, expected, what)
    _same_types(actual, expected, what)


def _same_types(actual: Any, expected: Any, what: str) -> None:
    if type(actual) is not type(expected):
        raise AssertionError(f"{what}: expected a {type(expected).__name__}, got a {type(actual).__name__} {actual!r:.100}")
    if isinstance(expected, (list, tuple)):
        for i, (a, b) in enumerate(zip(actual, expected)):
            _same_types(a, b, f"{what}[{i}]")
    elif hasattr(type(expected), "__struct_fields__"):
        for name in type(expected).__struct_fields__:
            _same_types(getattr(actual, name), getattr(expected, name), f"{what}.{name}")


async def round_trip(h: NetworkHandle, client: Any, rpc: str, req: Any, resp: Any, what: str) -> None:
    """Send ``req`` through ``client.<rpc>`` with the server answering ``resp``: the server
    must be handed ``req`` (equal, the same types) and the call must return ``resp``."""
    h.server.answers[rpc] = lambda r: _value(resp)
    before = len(h.server.of(rpc))
    got = await answer_of(lambda: getattr(client, rpc)(req, OPTION), f"{what}: {rpc}")
    handed = h.server.of(rpc)[before:]
    if len(handed) != 1:
        raise AssertionError(f"{what}: the server was handed {len(handed)} {rpc} requests for one call")
    same(handed[0], req, f"{what}: the {rpc} request the server was handed")
    same(got, resp, f"{what}: the {rpc} response the call returned")


async def _value(v: Any) -> Any:
    return v


async def _hold(gate: asyncio.Event, then: Any) -> Any:
    await gate.wait()
    return then


def _held(gate: asyncio.Event, then: Any) -> Answer:
    """An answer that waits for ``gate``, then answers ``then`` whatever the request."""

    async def answer(req: Any) -> Any:
        return await _hold(gate, then)

    return answer


def _calling(client: Any, rpc: str, req: Any, option: RPCOption = OPTION) -> Callable[[], Any]:
    """The call ``client.<rpc>(req, option)``, to be made by ``call`` and its kin."""
    return lambda: getattr(client, rpc)(req, option)


RPCS: tuple[str, ...] = ("append_entries", "vote", "install_snapshot", "transfer_leader")
"""The four RPCs of ``RaftNetwork`` (the optional ``heartbeat`` sends an AppendEntries: the
``Router`` counts it as a fifth, ``network.RPC_NAMES``)."""

V = Vote.new(5, SOURCE, True)
"""The vote of the checks' requests: node 1, leader of term 5."""


def sample_request(rpc: str, i: int = 0) -> Any:
    """A valid request of kind ``rpc`` telling ``i`` apart (in its log ids, offset and the
    term of its vote), whose ``default_answer`` tells ``i`` apart too (but a transfer's)."""
    vote = Vote.new(5 + i, SOURCE, True)
    if rpc == "append_entries":
        return AppendEntriesRequest(vote, LogId(5, 10 + i), [Entry(LogId(5, 11 + i), Normal(b"x%d" % i))], LogId(5, 10))
    if rpc == "vote":
        return VoteRequest(Vote.new(6 + i, SOURCE), LogId(5, 10 + i), pre_vote=True)
    if rpc == "install_snapshot":
        return InstallSnapshotRequest(vote, META, i, b"chunk", False)
    return TransferLeaderRequest(vote, TARGET, LogId(5, 10 + i))


META = SnapshotMeta(LogId(5, 100), StoredMembership(LogId(5, 3), Membership.new([{1, 2, 3}])), "snap-5-100")


def _membership_with_long_addresses() -> Membership:
    addr = ("nœud-ß-東京:" * 100)[: MAX_ADDR_LEN - 6] + ":21001"
    nodes = {1: BasicNode("10.0.0.1:21001"), 2: BasicNode(addr), 4: BasicNode(""), MAX_NODE_ID: BasicNode("h:1")}
    return Membership((frozenset({1, 2}), frozenset({1, 2, 4})), nodes)


# -- the suite -------------------------------------------------------------------------------

_reg = CheckRegistry()
check = _reg.check


def _need(cap: Any, name: str) -> Any:
    if cap is None:
        raise CheckSkipped(f"the builder gives no {name}")
    return cap


async def _run_capability(h: NetworkHandle, name: str) -> None:
    """Await the handle's capability ``name`` (``stop_target``, ``start_target``, ``close``);
    ``CheckSkipped`` without it, ``BuilderError`` if it is not an async function (a plain
    ``lambda: router.unregister(2)`` failed its check with "object NoneType can't be used in
    'await' expression")."""
    fn = _need(getattr(h, name), name)
    made = fn()
    if not inspect.isawaitable(made):
        raise BuilderError(
            f"NetworkHandle.{name} must be an async function (async def), got {fn!r:.80}, which returned "
            f"{type(made).__name__} {made!r:.80}"
        )
    await made


# round trips


@check
async def append_entries_heartbeat(h: NetworkHandle) -> None:
    """An AppendEntries without entries, ``prev_log_id`` and ``leader_commit`` ``None`` (a
    first heartbeat), round-trips, and so does its answer."""
    await round_trip(
        h, h.client(), "append_entries", AppendEntriesRequest(Vote.new(1, SOURCE, True), None, [], None),
        AppendEntriesResponse(Vote.new(1, SOURCE, True), True, None), "a heartbeat",
    )


@check
async def append_entries_every_payload_kind(h: NetworkHandle) -> None:
    """Entries of every payload kind round-trip: a blank, a normal one with empty data, one
    with every byte value, a joint membership whose nodes have long unicode addresses (up to
    ``validation.MAX_ADDR_LEN``) and an empty one; the payload types stay (``Normal.data``
    ``bytes``, a ``Membership``'s configs frozensets). And a log from index 0 (the initial
    membership at ``LogId(0, 0)``, no ``prev_log_id``), what a new node is sent first."""
    entries = [
        Entry(LogId(3, 8), BLANK),
        Entry(LogId(3, 9), Normal(b"")),
        Entry(LogId(3, 10), Normal(bytes(range(256)) * 4)),
        Entry(LogId(4, 11), _membership_with_long_addresses()),
        Entry(LogId(4, 12), Normal("ünïcødé \u2603 \x00".encode())),
    ]
    req = AppendEntriesRequest(Vote.new(4, SOURCE, True), LogId(3, 7), entries, LogId(3, 6))
    client = h.client()
    await round_trip(h, client, "append_entries", req, AppendEntriesResponse(req.vote, True, LogId(4, 12)), "every payload kind")
    # What a new node is sent first: the log from index 0, the initial membership at 0-0.
    first = [Entry(LogId(0, 0), Membership.new([{SOURCE}], {SOURCE: BasicNode("127.0.0.1:21001")})), Entry(LogId(1, 1), BLANK)]
    req = AppendEntriesRequest(Vote.new(1, SOURCE, True), None, first, LogId(1, 1))
    await round_trip(h, client, "append_entries", req, AppendEntriesResponse(req.vote, True, LogId(1, 1)), "the log from index 0")


@check
async def append_entries_largest_ids(h: NetworkHandle) -> None:
    """The largest term, index and node id (``validation.MAX_TERM``, ``MAX_INDEX``,
    ``MAX_NODE_ID``) round-trip in every field that holds one, requests and responses (a
    request's vote names its sender, ``SOURCE``: a transport may refuse another)."""
    big = Vote.new(MAX_TERM, SOURCE, True)
    other = Vote.new(MAX_TERM, MAX_NODE_ID, True)
    mem = Membership.new([{0, MAX_NODE_ID}], {0: BasicNode("a:1"), MAX_NODE_ID: BasicNode("b:2")})
    req = AppendEntriesRequest(
        big, LogId(MAX_TERM, MAX_INDEX - 2),
        [Entry(LogId(MAX_TERM, MAX_INDEX - 1), mem), Entry(LogId(MAX_TERM, MAX_INDEX), Normal(b"last"))],
        LogId(MAX_TERM, MAX_INDEX),
    )
    client = h.client()
    await round_trip(h, client, "append_entries", req, AppendEntriesResponse(big, True, LogId(MAX_TERM, MAX_INDEX)), "the largest ids")
    await round_trip(h, client, "append_entries", req, AppendEntriesResponse(other, False, None, MAX_INDEX), "the largest ids")
    vreq = VoteRequest(big, LogId(MAX_TERM, MAX_INDEX), True, other)
    await round_trip(h, client, "vote", vreq, VoteResponse(other, False, LogId(MAX_TERM, MAX_INDEX), True), "the largest ids")
    await round_trip(h, client, "transfer_leader", TransferLeaderRequest(big, MAX_NODE_ID, LogId(MAX_TERM, MAX_INDEX)), None, "the largest ids")


@check
async def append_entries_every_response_shape(h: NetworkHandle) -> None:
    """Every shape of AppendEntries answer comes back as the server gave it: accepted with a
    ``matching`` or none, refused with a ``conflict_hint`` or without (-1), refused for a
    greater vote (``vote`` another node's, not committed)."""
    client = h.client()
    req = sample_request("append_entries")
    for resp in (
        AppendEntriesResponse(V, True, LogId(5, 11)),
        AppendEntriesResponse(V, True, None),
        AppendEntriesResponse(V, False, None, 7),
        AppendEntriesResponse(V, False, LogId(4, 3), 0),
        AppendEntriesResponse(V, False, None, -1),
        AppendEntriesResponse(Vote.new(9, 3), False, None, -1),
    ):
        await round_trip(h, client, "append_entries", req, resp, f"the answer {resp!r}")


@check
async def append_entries_largest_request(h: NetworkHandle) -> None:
    """The largest AppendEntries ``config`` makes round-trips: ``max_payload_entries``
    entries of ``max_payload_bytes`` payload bytes in all, the first of ``max_entry_bytes``
    (a client write of the largest size), of random bytes."""
    cfg = h.config
    n = cfg.max_payload_entries
    rng = random.Random(7)
    first = min(cfg.max_entry_bytes, cfg.max_payload_bytes)
    rest = cfg.max_payload_bytes - first
    sizes = [first] + [rest // (n - 1) + (1 if i < rest % (n - 1) else 0) for i in range(n - 1)] if n > 1 else [first]
    entries = [Entry(LogId(5, 101 + i), Normal(rng.randbytes(size))) for i, size in enumerate(sizes)]
    req = AppendEntriesRequest(V, LogId(5, 100), entries, LogId(5, 100))
    await round_trip(h, h.client(), "append_entries", req, AppendEntriesResponse(V, True, entries[-1].log_id),
                     f"an AppendEntries of {n} entries, {sum(sizes)} payload bytes")


@check
async def vote_round_trip(h: NetworkHandle) -> None:
    """Vote requests (a pre-vote, a vote, one with ``transfer_from``, with and without
    ``last_log_id``, of term 0) and every shape of answer round-trip."""
    client = h.client()
    cases = [
        (VoteRequest(Vote.new(6, SOURCE), LogId(5, 10), pre_vote=True), VoteResponse(V, False, LogId(5, 12), True)),
        (VoteRequest(Vote.new(6, SOURCE), None), VoteResponse(Vote.new(6, SOURCE), True, None, False)),
        (VoteRequest(Vote.new(7, SOURCE), LogId(6, 1), False, Vote.new(6, 3, True)), VoteResponse(Vote.new(7, SOURCE), True, LogId(6, 1))),
        (VoteRequest(Vote.new(0, SOURCE), None), VoteResponse(Vote.new(0, 0), False, None)),
    ]
    for req, resp in cases:
        await round_trip(h, client, "vote", req, resp, f"the vote request {req!r}")


@check
async def install_snapshot_chunks_in_order(h: NetworkHandle) -> None:
    """A snapshot of several chunks round-trips chunk by chunk, as the leader sends it: each
    chunk's ``offset``, ``data`` and ``done`` (``False`` but on the last) and the ``meta``
    (a joint membership, a unicode id) arrive as sent, in order, each answered."""
    client = h.client()
    meta = SnapshotMeta(LogId(5, 100), StoredMembership(LogId(4, 11), _membership_with_long_addresses()), "snap-5-100-ß")
    data = random.Random(3).randbytes(10_000)
    size = 4096
    offsets = list(range(0, len(data), size))
    sent = []
    for off in offsets:
        req = InstallSnapshotRequest(V, meta, off, data[off : off + size], off + size >= len(data))
        sent.append(req)
        await round_trip(h, client, "install_snapshot", req, InstallSnapshotResponse(V), f"the snapshot chunk at {off}")
    handed = h.server.of("install_snapshot")
    expect([(r.offset, r.done) for r in handed], [(r.offset, r.done) for r in sent], "the chunks' (offset, done) the server was handed")
    expect(b"".join(r.data for r in handed), data, "the snapshot put together from the chunks handed")


@check
async def install_snapshot_edge_chunks(h: NetworkHandle) -> None:
    """The largest chunk ``config`` sends (``snapshot_max_chunk_size`` bytes, at a large
    offset), a snapshot id of ``MAX_SNAPSHOT_ID_LEN`` unicode characters and the chunk of an
    empty snapshot (no data, no last log id, an empty membership, ``done``) round-trip, and
    so does an answer of a greater vote."""
    client = h.client()
    chunk = random.Random(5).randbytes(h.config.snapshot_max_chunk_size)
    await round_trip(h, client, "install_snapshot", InstallSnapshotRequest(V, META, 2**40, chunk, False),
                     InstallSnapshotResponse(V), "the largest snapshot chunk")
    long_id = SnapshotMeta(LogId(5, 100), META.last_membership, ("snap-ß-東京-" * 100)[:MAX_SNAPSHOT_ID_LEN])
    await round_trip(h, client, "install_snapshot", InstallSnapshotRequest(V, long_id, 0, b"x", True),
                     InstallSnapshotResponse(V), f"a snapshot id of {MAX_SNAPSHOT_ID_LEN} characters")
    empty = SnapshotMeta(None, EMPTY_STORED_MEMBERSHIP, "")
    await round_trip(h, client, "install_snapshot", InstallSnapshotRequest(V, empty, 0, b"", True),
                     InstallSnapshotResponse(Vote.new(9, 3, True)), "the chunk of an empty snapshot")


@check
async def transfer_leader_round_trip(h: NetworkHandle) -> None:
    """A leader-transfer notice (with and without ``last_log_id``) round-trips; the call
    returns ``None``."""
    client = h.client()
    for req in (TransferLeaderRequest(V, TARGET, LogId(5, 10)), TransferLeaderRequest(V, 3, None)):
        await round_trip(h, client, "transfer_leader", req, None, f"the notice {req!r}")


# errors


async def _each_rpc_raises(h: NetworkHandle, exc: Callable[[], BaseException], kind: type[RPCError], why: str) -> None:
    client = h.client()
    for rpc in RPCS:
        async def fail(req: Any) -> Any:
            raise exc()

        h.server.answers[rpc] = fail
        await error_of(_calling(client, rpc, sample_request(rpc), OPTION), kind, f"{rpc}, {why}")
        del h.server.answers[rpc]
        # The error broke nothing: the next call is answered.
        await answer_of(_calling(client, rpc, sample_request(rpc, 1), OPTION), f"{rpc} after {why}")


@check
async def server_error_is_remote_error(h: NetworkHandle) -> None:
    """The target's handler raised (a bug over there, or ``InvalidRequest`` for a malformed
    request): every RPC raises ``RemoteError`` (the leader restarts a snapshot transfer on
    it), and the next call is answered."""
    await _each_rpc_raises(h, lambda: RuntimeError("the suite's server fails this request"), RemoteError,
                           "the server's handler raising RuntimeError")
    await _each_rpc_raises(h, lambda: InvalidRequest("vote", "the suite's server refuses it"), RemoteError,
                           "the server's handler raising InvalidRequest")


@check
async def stopped_node_is_unreachable(h: NetworkHandle) -> None:
    """The target's node has stopped (its handler raised ``Fatal``, e.g. ``Stopped``):
    every RPC raises ``Unreachable``, not ``RemoteError``."""
    await _each_rpc_raises(h, lambda: Stopped("the suite's node has stopped"), Unreachable, "the server's node stopped (Fatal)")


@check
async def no_answer_is_timeout(h: NetworkHandle) -> None:
    """A request the target does not answer raises ``Timeout`` once ``option.hard_ttl`` is
    over (not long before, nor more than twice it), each call by its own ``hard_ttl`` (a
    short one while a long one waits); the answer that comes late is not given to the next
    call, which gets its own. The optional ``send_append_entries`` and
    ``submit_append_entries`` keep to ``hard_ttl`` too."""
    client = h.client()
    for rpc in RPCS:
        gate = h.server.gate()
        late = default_answer(rpc, sample_request(rpc, 9))
        h.server.answers[rpc] = _held(gate, late)
        short = RPCOption(hard_ttl=SHORT_TTL, soft_ttl=SHORT_TTL / 2)
        long_call = _start(_calling(client, rpc, sample_request(rpc, 9), OPTION))
        out = await error_of(_calling(client, rpc, sample_request(rpc, 8), short), Timeout,
                             f"{rpc} unanswered with hard_ttl={SHORT_TTL}", within=2 * SHORT_TTL + PROMPT)
        if out.elapsed < SHORT_TTL / 2:
            raise AssertionError(f"{rpc} unanswered raised Timeout after {out.elapsed:.3f}s, before hard_ttl={SHORT_TTL}")
        if long_call.done():
            raise AssertionError(
                f"{rpc} with hard_ttl={OPTION.hard_ttl} ended when a call with hard_ttl={SHORT_TTL} timed out "
                f"({(await _settle(long_call, 0)).describe()}): each call keeps its own hard_ttl"
            )
        del h.server.answers[rpc]
        gate.set()
        got = await _settle(long_call, CALL_LIMIT)
        if got.error is not None or got.hung:
            raise AssertionError(f"{rpc} answered after a while (within its hard_ttl): {got.describe()}")
        same(got.value, late, f"{rpc} answered after a while")
        mine = default_answer(rpc, sample_request(rpc, 2))
        got2 = await answer_of(_calling(client, rpc, sample_request(rpc, 2), OPTION), f"{rpc} after a Timeout")
        same(got2, mine, f"{rpc} after a Timeout (its own answer, not a late one)")
    send = getattr(client, "send_append_entries", None)
    if send is not None:
        await _send_times_out(h, send)
    submit = getattr(client, "submit_append_entries", None)
    if submit is not None:
        await _submit_times_out(h, client, submit)


async def _send_times_out(h: NetworkHandle, send: Callable[..., Any]) -> None:
    """``send_append_entries`` unanswered: what it returned raises ``Timeout`` after
    ``hard_ttl`` (the fast path takes no timer of the node's: the network keeps it)."""
    gate = h.server.gate()
    h.server.answers["append_entries"] = _held(gate, default_answer("append_entries", sample_request("append_entries", 6)))
    short = RPCOption(hard_ttl=SHORT_TTL, soft_ttl=SHORT_TTL / 2)
    await error_of(lambda: send(sample_request("append_entries", 6), short), Timeout,
                   f"send_append_entries unanswered with hard_ttl={SHORT_TTL}", within=2 * SHORT_TTL + PROMPT)
    del h.server.answers["append_entries"]
    gate.set()


async def _submit_times_out(h: NetworkHandle, client: Any, submit: Callable[..., Any]) -> None:
    """``submit_append_entries`` unanswered: ``reply`` gets one ``Timeout`` after
    ``hard_ttl`` (the fast path takes no timer of the node's: the network keeps it)."""
    gate = h.server.gate()
    h.server.answers["append_entries"] = lambda req: _hold(gate, default_answer("append_entries", req))
    replies: list[Any] = []
    short = RPCOption(hard_ttl=SHORT_TTL, soft_ttl=SHORT_TTL / 2)
    handle = submit(sample_request("append_entries", 3), short, replies.append)
    if handle is None:
        return  # not connected: the leader uses append_entries, checked above
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2 * SHORT_TTL + PROMPT
    while not replies and loop.time() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    if len(replies) != 1 or not isinstance(replies[0], Timeout):
        raise AssertionError(
            f"submit_append_entries unanswered with hard_ttl={SHORT_TTL}: expected one reply with a Timeout within "
            f"{2 * SHORT_TTL + PROMPT:g}s, got {replies!r:.200}"
        )
    gate.set()


@check
async def target_down_is_unreachable(h: NetworkHandle) -> None:
    """The target is down (``stop_target``): every RPC raises ``Unreachable`` at once (within
    ``PROMPT``, 2 s, not after ``hard_ttl``, 5 s); once it is back (``start_target``) the same client
    reaches it again (within a few seconds of back-off)."""
    _need(h.stop_target, "stop_target")
    client = h.client()
    await answer_of(lambda: client.vote(sample_request("vote"), OPTION), "vote before the target stops")
    await _run_capability(h, "stop_target")
    for rpc in RPCS:
        await error_of(_calling(client, rpc, sample_request(rpc), OPTION), Unreachable,
                       f"{rpc} to a target that is down", within=PROMPT)
    await _run_capability(h, "start_target")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while True:
        out = await call(lambda: client.vote(sample_request("vote", 3), OPTION))
        if out.error is None and not out.hung:
            break
        if out.hung or not isinstance(out.error, RPCError) or loop.time() > deadline:
            raise AssertionError(f"vote to the target back up (start_target), retried for 5s: {out.describe()}")
        await asyncio.sleep(0.05)
    for rpc in RPCS:
        await answer_of(_calling(client, rpc, sample_request(rpc), OPTION), f"{rpc} once the target is back")


@check
async def another_node_at_the_address_is_unreachable(h: NetworkHandle) -> None:
    """A client to node 3 given the address where node 2 is served (a membership with a
    wrong address) must not deliver to node 2: every RPC raises ``Unreachable`` and node 2
    is handed nothing. Delivered, node 2's vote would count as node 3's too."""
    client = h.client(OTHER, h.node)
    for rpc in RPCS:
        await error_of(_calling(client, rpc, sample_request(rpc), OPTION), Unreachable,
                       f"{rpc} to node {OTHER} at node {TARGET}'s address")
    if h.server.received:
        raise AssertionError(
            f"node {TARGET} was handed {[n for n, _ in h.server.received]} sent to node {OTHER} at its address: a "
            f"transport must check that the node it reached is the one addressed"
        )


# cancellation and concurrency


@check
async def cancelled_call_does_not_poison_the_next(h: NetworkHandle) -> None:
    """A call cancelled while the target holds its answer ends at once with
    ``CancelledError``; the answer that comes later is given to nobody, and the next call on
    the client gets its own answer. For every RPC."""
    client = h.client()
    for rpc in RPCS:
        gate = h.server.gate()
        stale = default_answer(rpc, sample_request(rpc, 7))
        h.server.answers[rpc] = _held(gate, stale)
        before = len(h.server.received)
        task = _start(_calling(client, rpc, sample_request(rpc, 7), OPTION))
        await h.server.wait_received(before + 1)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        if not await _stop_task(task):
            raise AssertionError(f"{rpc} cancelled while in flight did not end within {CANCEL_GRACE}s of the cancel")
        if not task.cancelled():
            out = await _settle(task, 0)
            raise AssertionError(f"{rpc} cancelled while in flight: expected CancelledError; {out.describe()}")
        if loop.time() - t0 > PROMPT:
            raise AssertionError(f"{rpc} cancelled while in flight took {loop.time() - t0:.2f}s to end")
        del h.server.answers[rpc]
        gate.set()
        await asyncio.sleep(0.05)  # the stale answer on its way
        mine = default_answer(rpc, sample_request(rpc, 4))
        got = await answer_of(_calling(client, rpc, sample_request(rpc, 4), OPTION), f"{rpc} after a cancelled {rpc}")
        same(got, mine, f"{rpc} after a cancelled {rpc} (its own answer, not the cancelled call's)")


@check
async def concurrent_calls_get_their_own_answers(h: NetworkHandle) -> None:
    """Many calls in flight at once on one client, of every kind, answered by the target in
    reverse order: each returns its own answer (calls on one client overlap: replication
    pipelines AppendEntries)."""
    client = h.client()
    n = 48
    gates = [h.server.gate() for _ in range(n)]

    def answering(rpc: str) -> Answer:
        async def answer(req: Any) -> Any:
            i = _index_of(rpc, req)
            await gates[i].wait()
            return default_answer(rpc, req)
        return answer

    for rpc in RPCS:
        h.server.answers[rpc] = answering(rpc)
    kinds = [RPCS[i % len(RPCS)] for i in range(n)]
    reqs = [sample_request(kinds[i], i) for i in range(n)]
    tasks = [_start(_calling(client, kinds[i], reqs[i])) for i in range(n)]
    await h.server.wait_received(n)
    for i in reversed(range(n)):
        gates[i].set()
        await asyncio.sleep(0)
    for i, task in enumerate(tasks):
        out = await _settle(task, CALL_LIMIT)
        if out.hung or out.error is not None:
            raise AssertionError(f"call {i} of {n} in flight at once ({kinds[i]}): {out.describe()}")
        same(out.value, default_answer(kinds[i], reqs[i]), f"the answer of call {i} of {n} in flight at once ({kinds[i]})")


def _index_of(rpc: str, req: Any) -> int:
    """The ``i`` of ``sample_request(rpc, i)``."""
    if rpc == "install_snapshot":
        return int(req.offset)
    return int(req.prev_log_id.index if rpc == "append_entries" else req.last_log_id.index) - 10


@check
async def append_entries_handed_over_in_call_order(h: NetworkHandle) -> None:
    """AppendEntries calls started one after the other on a connected client reach the
    target in that order (the leader hands a follower its requests in log order, and a
    request that overtakes the one before it is refused)."""
    client = h.client()
    await answer_of(lambda: client.append_entries(sample_request("append_entries", 99), OPTION), "a first AppendEntries")
    n = 20
    tasks = [_start(_calling(client, "append_entries", sample_request("append_entries", i))) for i in range(n)]
    for task in tasks:
        out = await _settle(task, CALL_LIMIT)
        if out.hung or out.error is not None:
            raise AssertionError(f"AppendEntries of {n} started in order: {out.describe()}")
    got = [r.prev_log_id.index - 10 for r in h.server.of("append_entries")[1:]]
    expect(got, list(range(n)), "the order in which the target was handed AppendEntries started in order 0..19")


# clients and the factory


@check
async def new_client_is_plain(h: NetworkHandle) -> None:
    """``new_client`` is a plain method (the node calls it without awaiting) and does no IO
    (it returns at once, also for an address where nothing listens); its client's four RPCs
    are there; two clients of one target both work."""
    new_client = getattr(h.factory, "new_client", None)
    if new_client is None or inspect.iscoroutinefunction(new_client):
        raise AssertionError(f"the factory's new_client must be a plain method, got {new_client!r}")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    a, b = h.client(), h.client()
    h.client(OTHER, BasicNode("127.0.0.1:1"))
    if loop.time() - t0 > 0.5:
        raise AssertionError(f"new_client took {loop.time() - t0:.3f}s: it must not block (connect on the first RPC)")
    for rpc in RPCS:
        if not callable(getattr(a, rpc, None)):
            raise AssertionError(f"the client {a!r} has no method {rpc}")
    for c in (a, b, a):
        await answer_of(_calling(c, "vote", sample_request("vote")), "vote through one of two clients of the target")


@check
async def close_ends_calls(h: NetworkHandle) -> None:
    """``close()`` ends a call in flight at once with an ``RPCError``; calls made after it
    raise ``Unreachable`` at once and reach nothing; a second ``close()`` is harmless."""
    _need(h.close, "close")
    client = h.client()
    gate = h.server.gate()
    h.server.answers["vote"] = lambda req: _hold(gate, default_answer("vote", req))
    task = _start(lambda: client.vote(sample_request("vote"), OPTION))
    await h.server.wait_received(1)
    await _run_capability(h, "close")
    out = await _settle(task, PROMPT)
    if out.hung or not isinstance(out.error, RPCError):
        raise AssertionError(f"a vote in flight when the factory closed: expected an RPCError within {PROMPT}s; {out.describe()}")
    gate.set()
    for rpc in RPCS:
        await error_of(_calling(client, rpc, sample_request(rpc), OPTION), Unreachable,
                       f"{rpc} after close()", within=PROMPT)
    expect(len(h.server.received), 1, "requests the target was handed after close()")
    await _run_capability(h, "close")


@check
async def forget_then_new_client(h: NetworkHandle) -> None:
    """With the optional ``forget(target)``: a call on an old client of the forgotten target
    (the node makes none) answers or raises an ``RPCError`` at once (the shipped factories:
    ``Unreachable``), a new ``new_client`` reaches the target again, and forgetting a target
    never seen is harmless."""
    forget = _need(getattr(h.factory, "forget", None), "factory with forget()")
    if inspect.iscoroutinefunction(forget):
        raise AssertionError("the factory's forget must be a plain method (the node calls it without awaiting)")
    old = h.client()
    await answer_of(lambda: old.vote(sample_request("vote"), OPTION), "vote before forget")
    forget(TARGET)
    forget(OTHER + 1000)
    out = await call(lambda: old.vote(sample_request("vote", 1), OPTION), PROMPT)
    if out.hung:
        raise AssertionError(f"vote through a client of a forgotten target: {out.describe()}")
    if out.error is not None and not isinstance(out.error, RPCError):
        raise AssertionError(f"vote through a client of a forgotten target: expected an answer or an RPCError; {out.describe()}")
    await answer_of(lambda: h.client().vote(sample_request("vote", 2), OPTION), "vote through a new client after forget")


# the optional fast paths


@check
async def send_append_entries_if_any(h: NetworkHandle) -> None:
    """With the optional ``send_append_entries``: a plain method returning what to await for
    ``append_entries``'s answer (and its errors), the request handed over before it
    returns when connected; a wait for what it returned, cancelled, does not poison the next
    call. (Its ``Timeout``: ``no_answer_is_timeout``.)"""
    client = h.client()
    send = _need(getattr(client, "send_append_entries", None), "client with send_append_entries")
    if inspect.iscoroutinefunction(send):
        raise AssertionError("send_append_entries must be a plain method (not async def): it hands the request over at once")
    await answer_of(lambda: client.append_entries(sample_request("append_entries", 0), OPTION), "a first AppendEntries")
    req = sample_request("append_entries", 1)
    aw = send(req, OPTION)
    if not inspect.isawaitable(aw):
        raise AssertionError(f"send_append_entries returned {type(aw).__name__}, not an awaitable")
    got = await answer_of(lambda: aw, "send_append_entries")
    same(got, default_answer("append_entries", req), "send_append_entries's answer")
    # A call the node gives up: the task awaiting what was returned is cancelled; the answer
    # that comes later goes to nobody, and the next call gets its own.
    gate = h.server.gate()
    h.server.answers["append_entries"] = _held(gate, default_answer("append_entries", sample_request("append_entries", 3)))
    before = len(h.server.received)
    aw = send(sample_request("append_entries", 3), OPTION)
    waiting = _start(lambda: aw)
    await h.server.wait_received(before + 1)
    if not await _stop_task(waiting):
        raise AssertionError(f"awaiting send_append_entries's answer, cancelled, did not end within {CANCEL_GRACE}s")
    del h.server.answers["append_entries"]
    gate.set()
    await asyncio.sleep(0.05)  # the stale answer on its way
    req = sample_request("append_entries", 4)
    got = await answer_of(lambda: send(req, OPTION), "send_append_entries after one given up")
    same(got, default_answer("append_entries", req), "send_append_entries after one given up (its own answer)")

    async def fail(req: Any) -> Any:
        raise RuntimeError("the suite's server fails this request")

    h.server.answers["append_entries"] = fail
    await error_of(lambda: send(sample_request("append_entries", 2), OPTION), RemoteError,
                   "send_append_entries, the server's handler raising")


@check
async def submit_append_entries_if_any(h: NetworkHandle) -> None:
    """With the optional ``submit_append_entries``: a plain method; connected, it returns a
    handle and calls ``reply`` exactly once with the answer, or with the error
    (``RemoteError``) instead of raising it; a handle cancelled before the answer means
    ``reply`` is never called. (Its ``Timeout``: ``no_answer_is_timeout``.)"""
    client = h.client()
    submit = _need(getattr(client, "submit_append_entries", None), "client with submit_append_entries")
    if inspect.iscoroutinefunction(submit):
        raise AssertionError("submit_append_entries must be a plain method (not async def)")
    await answer_of(lambda: client.append_entries(sample_request("append_entries", 0), OPTION), "a first AppendEntries")
    loop = asyncio.get_running_loop()

    async def submitted(i: int, option: RPCOption, within: float) -> tuple[Any, list[Any]]:
        replies: list[Any] = []
        got = loop.create_future()

        def reply(value: Any) -> None:
            replies.append(value)
            if not got.done():
                got.set_result(value)

        handle = submit(sample_request("append_entries", i), option, reply)
        if handle is None:
            raise CheckSkipped("submit_append_entries returned None on a connected client (it never hands over)")
        try:
            async with asyncio.timeout(within):
                await got
        except TimeoutError:
            raise AssertionError(f"submit_append_entries: reply not called within {within:g}s") from None
        await asyncio.sleep(0.05)
        return handle, replies

    _, replies = await submitted(1, OPTION, CALL_LIMIT)
    expect(len(replies), 1, "calls of reply for one submit_append_entries")
    same(replies[0], default_answer("append_entries", sample_request("append_entries", 1)), "submit_append_entries's reply")

    async def fail(req: Any) -> Any:
        raise RuntimeError("the suite's server fails this request")

    h.server.answers["append_entries"] = fail
    _, replies = await submitted(2, OPTION, CALL_LIMIT)
    if len(replies) != 1 or not isinstance(replies[0], RemoteError):
        raise AssertionError(f"submit_append_entries, the server's handler raising: expected one reply with a RemoteError, got {replies!r:.200}")
    gate = h.server.gate()
    h.server.answers["append_entries"] = lambda req: _hold(gate, default_answer("append_entries", req))
    cancelled: list[Any] = []
    before = len(h.server.received)
    handle = submit(sample_request("append_entries", 4), OPTION, cancelled.append)
    if handle is not None:
        await h.server.wait_received(before + 1)
        handle.cancel()
        gate.set()
        await answer_of(lambda: client.append_entries(sample_request("append_entries", 5), OPTION), "AppendEntries after a cancelled submit")
        await asyncio.sleep(0.05)
        expect(cancelled, [], "replies of a submit_append_entries whose handle was cancelled")


@check
async def heartbeat_if_any(h: NetworkHandle) -> None:
    """With the optional ``heartbeat``: a leader's heartbeat beside its window, an
    AppendEntries without entries, reaches the server as an AppendEntries and its answer
    comes back (both equal to what was sent); the server's exception is ``RemoteError``; and
    it is answered while an AppendEntries handed over before it still waits for its answer
    (it must not wait behind the window's requests: a leader whose heartbeats' answers come
    after the window's lost its leadership to check-quorum)."""
    client = h.client()
    beat = _need(getattr(client, "heartbeat", None), "client with heartbeat")
    v = Vote.new(3, SOURCE, True)
    req = AppendEntriesRequest(v, LogId(3, 40), [], LogId(3, 39))
    h.server.answers["append_entries"] = lambda r: _value(AppendEntriesResponse(v, True, LogId(3, 38)))
    before = len(h.server.of("append_entries"))
    got = await answer_of(lambda: beat(req, OPTION), "a heartbeat")
    handed = h.server.of("append_entries")[before:]
    if len(handed) != 1:
        raise AssertionError(f"a heartbeat: the server was handed {len(handed)} AppendEntries for one call")
    same(handed[0], req, "the heartbeat the server was handed")
    same(got, AppendEntriesResponse(v, True, LogId(3, 38)), "the heartbeat's answer")

    async def fail(r: Any) -> Any:
        raise RuntimeError("the suite's server fails this request")

    h.server.answers["append_entries"] = fail
    await error_of(lambda: beat(req, OPTION), RemoteError, "a heartbeat, the server's handler raising")
    # An AppendEntries with entries held unanswered; a heartbeat after it is answered.
    gate = h.server.gate()

    async def hold_entries(r: Any) -> Any:
        if r.entries:
            await gate.wait()
        return default_answer("append_entries", r)

    h.server.answers["append_entries"] = hold_entries
    before = len(h.server.received)
    window = _start(_calling(client, "append_entries", sample_request("append_entries", 7)))
    try:
        await h.server.wait_received(before + 1)
        got = await answer_of(lambda: beat(req, OPTION), "a heartbeat while an AppendEntries waits for its answer",
                              within=PROMPT)
        same(got, default_answer("append_entries", req), "the heartbeat's answer")
        if window.done():
            raise AssertionError("the held AppendEntries was answered before its answer was let go")
    finally:
        gate.set()
    answered = await answer_of(lambda: window, "the held AppendEntries once let go")
    same(answered, default_answer("append_entries", sample_request("append_entries", 7)), "the held AppendEntries' answer")
    del h.server.answers["append_entries"]


class NetworkSuite(Suite):
    """Every network check (see the module docstring)."""

    name = "NetworkSuite"
    checks: ClassVar[dict[str, AnyCheckFn]] = dict(_reg.checks)

    TIMEOUT_CHECKS: ClassVar[tuple[str, ...]] = ("no_answer_is_timeout",)
    """The checks of ``option.hard_ttl``: a transport that leaves its callers to bound their
    calls (the in-process ``Router``, documented so) runs the others (``only``)."""

    @classmethod
    def validate_builder(cls, builder: Any) -> None:
        """``BuilderError`` unless ``builder`` is a callable (not what a builder gives)."""
        made_already = not isinstance(builder, type) and (
            hasattr(builder, "__aenter__") or hasattr(builder, "__enter__") or inspect.isawaitable(builder)
        )
        if not callable(builder) or made_already:
            raise BuilderError(
                f"the builder must be a callable of the suite's server that serves it and gives a NetworkHandle, got "
                f"{type(builder).__name__} {builder!r:.100}: pass the builder itself (builder, not builder(server))"
            )
        try:
            inspect.signature(builder).bind(None)
        except TypeError:
            # (A storage suite's builder takes no argument: each check failed with "takes 0
            # positional arguments but 1 was given".)
            raise BuilderError(
                f"the builder must take one argument, the suite's server (a RaftServer it serves as node {TARGET}): "
                f"{builder!r:.100} cannot be called as builder(server)"
            ) from None
        except ValueError:
            pass  # no signature to read (a builtin): called as it is

    @classmethod
    @contextlib.asynccontextmanager
    async def open_handle(cls, builder: Any) -> AsyncIterator[NetworkHandle]:
        """Serve a fresh ``SuiteServer`` through ``builder``; after the check, release its
        held answers before the builder's clean-up (a server closing waits for them)."""
        server = SuiteServer()
        made = builder(server)
        try:
            if hasattr(made, "__aenter__"):
                async with made as built:
                    try:
                        yield _as_network_handle(built, server)
                    finally:
                        server.release()
            elif inspect.isawaitable(made):
                yield _as_network_handle(await made, server)
            else:
                raise BuilderError(
                    f"builder(server) must return an async context manager or an awaitable, got {type(made).__name__} "
                    f"{made!r:.100}: make it an @contextlib.asynccontextmanager, or an async def"
                )
        finally:
            server.release()


def _as_network_handle(built: Any, server: SuiteServer) -> NetworkHandle:
    if not isinstance(built, NetworkHandle):
        raise BuilderError(f"the builder must give a NetworkHandle, got {type(built).__name__} {built!r:.100}")
    if not isinstance(built.node, BasicNode):
        raise BuilderError(f"NetworkHandle.node must be the BasicNode where the server is served, got {built.node!r:.100}")
    if not callable(getattr(built.factory, "new_client", None)):
        raise BuilderError(f"NetworkHandle.factory must be a RaftNetworkFactory (new_client), got {built.factory!r:.100}")
    for name in ("stop_target", "start_target", "close"):
        fn = getattr(built, name)
        if fn is not None and not callable(fn):
            raise BuilderError(f"NetworkHandle.{name} must be an async function or None, got {fn!r:.80}")
    if not isinstance(built.config, Config):
        raise BuilderError(f"NetworkHandle.config must be a Config (its limits size the largest requests), got {built.config!r:.80}")
    built.server = server
    return built


async def run_network_suite(
    builder: Callable[[SuiteServer], Any],
    *,
    only: Iterable[str] | None = None,
    raise_on_failure: bool = True,
    timeout: float | None = 30.0,
) -> list[CheckOutcome]:
    """``NetworkSuite.run_all(builder, ...)``: run the network checks and return the report;
    raises ``SuiteFailure`` naming every failed check."""
    return await NetworkSuite.run_all(builder, only=only, raise_on_failure=raise_on_failure, timeout=timeout)

