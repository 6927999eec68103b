"""How the cluster knows each node's two addresses, and the network factory that uses them.

A node of the key-value service listens on two ports: the raft port (the TCP transport) and
the HTTP port (clients, operators, and the redirect to the leader). Both must be known
cluster-wide, atomically with the membership that names the node, and must survive
snapshots and restarts. So both live in the membership itself: the node's ``BasicNode.addr``
holds a compact JSON object::

    BasicNode('{"raft":"127.0.0.1:21001","http":"127.0.0.1:28001"}')

``node_of(raft, http)`` builds one, ``addrs_of(node)`` reads one back (a plain ``"host:port"``
addr, as other tools write it, reads as a raft address with no HTTP address).
``KvNetworkFactory`` hands the TCP transport a ``BasicNode`` holding the raft address only,
and counts the RPC errors per peer for ``/metrics``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol

import msgspec

from ..config import Config
from ..errors import RPCError, Unreachable
from ..network._tcp_client import _resolve_in_thread
from ..network.tcp import TcpNetworkFactory, check_given_addr, parse_addr
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

__all__ = ["NodeAddrs", "node_of", "addrs_of", "same_addr", "check_addr", "check_member_addr", "KvNetworkFactory",
           "RpcErrorHook", "resolve"]


class NodeAddrs(msgspec.Struct, frozen=True):
    """A node's addresses: ``raft`` (``"host:port"`` of its TCP transport) and ``http``
    (``"host:port"`` of its HTTP API; ``""`` when unknown)."""

    raft: str
    http: str = ""


_HOST_NAME = re.compile(r"[A-Za-z0-9_.-]+")
"""The characters of a host name or an IPv4 address (an IPv6 address goes in brackets)."""


def check_addr(addr: Any, what: str) -> str:
    """``addr`` if it is a ``"host:port"`` string; ``TypeError`` / ``ValueError`` otherwise.

    The host is a name or an IPv4 address (letters, digits, ``.``, ``-``, ``_``) or an IPv6
    address in brackets (``[::1]:21001``), the port ASCII digits: an address is also put
    into URLs (the redirect's ``Location``) and HTTP headers, where anything else (a space, a
    control character, a ``/``, a bare IPv6 address, a port in other digits such as
    ``٢١٠٠١``, which ``int`` reads) would make a broken one. A port with a leading zero
    (``127.0.0.1:021001``) is refused too (``check_given_addr``): addresses are kept and
    compared as written, and it is the same port as ``21001``. Only for addresses given:
    one read back from the membership (``addrs_of``) is taken as an earlier release kept it."""
    if type(addr) is not str:
        raise TypeError(f"{what} must be a \"host:port\" string, got {type(addr).__name__}")
    if len(addr) > 255:
        raise ValueError(f"{what} is longer than 255 characters")
    try:
        check_given_addr(addr)  # (a leading zero in the port too)
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None
    host, _, port = addr.rpartition(":")
    if not port.isascii():
        raise ValueError(f"{what}: the port {port!r} is not written in ASCII digits (0-9)")
    if host.startswith("[") and host.endswith("]"):
        ip, percent, zone = host[1:-1].partition("%")  # a zone (fe80::1%eth0) is a name too
        try:
            ipaddress.IPv6Address(ip)
        except ValueError:
            zone = " "
        if (percent or zone) and not _HOST_NAME.fullmatch(zone):
            raise ValueError(f"{what}: {host!r} is not an IPv6 address in brackets")
    elif not _HOST_NAME.fullmatch(host):
        ascii_form = _ascii_form(host)
        if ascii_form is not None:  # (each character a letter, but not ASCII: "letters" misled)
            raise ValueError(f"{what}: {host!r} is not a host name or IP address in ASCII: write it as "
                             f"{ascii_form!r}")
        raise ValueError(f"{what}: {host!r} is not a host name or IP address (letters, digits, '.', '-', '_'; "
                         "an IPv6 address goes in brackets, as in [::1]:21001)")
    return addr


def _ascii_form(host: str) -> str | None:
    """The ASCII form (IDNA, ``xn--...``) of the international host name ``host``
    (``bücher.example``: ``xn--bcher-kva.example``), or ``None`` if it has none that
    ``check_addr`` takes."""
    try:
        ascii_form = host.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return ascii_form if ascii_form != host and _HOST_NAME.fullmatch(ascii_form) else None


def check_member_addr(addr: Any, what: str) -> str:
    """``addr`` if it can go into the membership: ``check_addr``, and not a wildcard host
    (``0.0.0.0``, ``[::]``). The membership's addresses are the ones other nodes connect to
    and clients are redirected to; a wildcard is only good to listen on (a peer dialling
    ``0.0.0.0`` reaches its own machine). ``TypeError`` / ``ValueError`` otherwise."""
    checked = check_addr(addr, what)
    host = checked.rpartition(":")[0].strip("[]")
    try:
        unspecified = ipaddress.ip_address(host).is_unspecified
    except ValueError:  # a host name
        unspecified = False
    if unspecified:
        raise ValueError(f"{what}: {checked!r} is a wildcard address (listen on every interface), which other "
                         "nodes and clients cannot connect to; give an address they reach this node at")
    return checked


async def resolve(host: str, port: int) -> list[tuple[int, str]]:
    """``host``'s addresses for a TCP connection to ``port``, as ``(family, IP address)``
    pairs, resolved as the TCP transport resolves a peer's name: ``socket.getaddrinfo`` in
    a daemon thread of its own, not in the loop's default executor (the storage's threads
    run there; a resolver that hangs would hold one). The resolver's error otherwise
    (``socket.gaierror``; ``UnicodeError`` for a name IDNA refuses, such as a label over 63
    characters). Not bounded: the caller bounds the wait (a cancelled wait leaves the
    thread to end on its own)."""
    return await _resolve_in_thread(asyncio.get_running_loop(), host, port)


def node_of(raft: str, http: str) -> BasicNode:
    """The membership node of a service node reachable at ``raft`` and ``http`` (both
    checked with ``check_member_addr``)."""
    check_member_addr(raft, "raft_addr")
    check_member_addr(http, "http_addr")
    return BasicNode(json.dumps({"raft": raft, "http": http}, separators=(",", ":")))


def addrs_of(node: BasicNode) -> NodeAddrs:
    """The addresses a membership node holds (see the module docstring). An addr that is
    neither our JSON nor ``"host:port"`` gives ``NodeAddrs("", "")`` (unknown)."""
    addr = node.addr
    if addr.startswith("{"):
        try:
            return msgspec.json.decode(addr, type=NodeAddrs)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return NodeAddrs("", "")
    try:
        parse_addr(addr)
    except ValueError:
        return NodeAddrs("", "")
    return NodeAddrs(addr, "")


def same_addr(a: str, b: str) -> bool:
    """Whether addresses ``a`` and ``b`` name the same host and port, a port written with a
    leading zero (``127.0.0.1:021001``, which a membership stored by an earlier release may
    hold) being the port without it. The host is compared as written (``localhost`` is not
    ``127.0.0.1``); an address that is not ``"host:port"`` (``""``, unknown) only equals
    itself."""
    if a == b:
        return True
    try:
        return parse_addr(a) == parse_addr(b)
    except ValueError:
        return False


RpcErrorHook = Callable[[NodeId, str, BaseException], None]
"""Called with ``(target, rpc, error)`` for every RPC that raised an ``RPCError``."""


class _Network(Protocol):
    async def append_entries(self, req: AppendEntriesRequest, option: RPCOption = ...) -> AppendEntriesResponse: ...
    def send_append_entries(
        self, req: AppendEntriesRequest, option: RPCOption = ...
    ) -> Awaitable[AppendEntriesResponse]: ...
    def submit_append_entries(
        self, req: AppendEntriesRequest, option: RPCOption, reply: Callable[[Any], None]
    ) -> Any | None: ...
    async def heartbeat(self, req: AppendEntriesRequest, option: RPCOption = ...) -> AppendEntriesResponse: ...
    async def vote(self, req: VoteRequest, option: RPCOption = ...) -> VoteResponse: ...
    async def install_snapshot(self, req: InstallSnapshotRequest, option: RPCOption = ...) -> InstallSnapshotResponse: ...
    async def transfer_leader(self, req: TransferLeaderRequest, option: RPCOption = ...) -> None: ...


_DEFAULT_OPTION = RPCOption()


class _CountingClient:
    """A ``RaftNetwork`` forwarding to the TCP client and reporting its ``RPCError``s."""

    __slots__ = ("_inner", "_target", "_hook", "_gate")

    def __init__(self, inner: _Network, target: NodeId, hook: RpcErrorHook | None,
                 gate: Callable[[], str | None] | None = None) -> None:
        self._inner = inner
        self._target = target
        self._hook = hook
        self._gate = gate

    def _failed(self, rpc: str, e: BaseException) -> None:
        if self._hook is not None:
            self._hook(self._target, rpc, e)

    async def append_entries(self, req: AppendEntriesRequest, option: RPCOption = _DEFAULT_OPTION) -> AppendEntriesResponse:
        """Forward AppendEntries (errors as the TCP transport's)."""
        try:
            return await self._inner.append_entries(req, option)
        except RPCError as e:
            self._failed("append_entries", e)
            raise

    def send_append_entries(
        self, req: AppendEntriesRequest, option: RPCOption = _DEFAULT_OPTION
    ) -> Awaitable[AppendEntriesResponse]:
        """Forward AppendEntries started now (the TCP client's ``send_append_entries``; see
        ``RaftNetwork``), its errors reported as ``append_entries``'s are."""
        try:
            answer = self._inner.send_append_entries(req, option)
        except RPCError as e:
            self._failed("append_entries", e)
            raise
        return self._reported(answer)

    def submit_append_entries(
        self, req: AppendEntriesRequest, option: RPCOption, reply: Callable[[Any], None]
    ) -> Any | None:
        """Forward AppendEntries with a callback (the TCP client's ``submit_append_entries``;
        see ``RaftNetwork``), its errors reported as ``append_entries``'s are."""
        try:
            return self._inner.submit_append_entries(req, option, partial(self._counted, reply))
        except RPCError as e:
            self._failed("append_entries", e)
            raise

    async def heartbeat(self, req: AppendEntriesRequest, option: RPCOption = _DEFAULT_OPTION) -> AppendEntriesResponse:
        """Forward a heartbeat (the TCP client's ``heartbeat``, on its own connection; see
        ``RaftNetwork``), its errors reported as ``append_entries``'s are. Without it the
        leader's heartbeats went on the connection of its entries, behind them."""
        try:
            return await self._inner.heartbeat(req, option)
        except RPCError as e:
            self._failed("append_entries", e)
            raise

    def _counted(self, reply: Callable[[Any], None], result: Any) -> None:
        if isinstance(result, RPCError):
            self._failed("append_entries", result)
        reply(result)

    async def _reported(self, answer: Awaitable[AppendEntriesResponse]) -> AppendEntriesResponse:
        try:
            return await answer
        except RPCError as e:
            self._failed("append_entries", e)
            raise

    async def vote(self, req: VoteRequest, option: RPCOption = _DEFAULT_OPTION) -> VoteResponse:
        """Forward a vote request (errors as the TCP transport's); ``Unreachable``, nothing
        sent, while the factory's ``campaign_gate`` gives a reason (a catching-up node)."""
        if self._gate is not None:
            why = self._gate()
            if why is not None:
                raise Unreachable(f"vote {req.vote.leader_id.node_id} -> {self._target} not sent: {why}")
        try:
            return await self._inner.vote(req, option)
        except RPCError as e:
            self._failed("vote", e)
            raise

    async def install_snapshot(
        self, req: InstallSnapshotRequest, option: RPCOption = _DEFAULT_OPTION
    ) -> InstallSnapshotResponse:
        """Forward a snapshot chunk (errors as the TCP transport's)."""
        try:
            return await self._inner.install_snapshot(req, option)
        except RPCError as e:
            self._failed("install_snapshot", e)
            raise

    async def transfer_leader(self, req: TransferLeaderRequest, option: RPCOption = _DEFAULT_OPTION) -> None:
        """Forward a leader-transfer notice (errors as the TCP transport's)."""
        try:
            await self._inner.transfer_leader(req, option)
        except RPCError as e:
            self._failed("transfer_leader", e)
            raise


class KvNetworkFactory:
    """A ``RaftNetworkFactory`` over ``TcpNetworkFactory`` for membership nodes written by
    ``node_of``: each client connects to the node's raft address, and ``on_rpc_error`` (if
    given) hears of every ``RPCError`` (for the per-peer error counters). ``on_forget`` (if
    given) hears of each node that left the membership (``forget``), to drop what is kept
    per peer; errors of calls still made to such a node (on a client made before) are not
    reported, until the node gets a client again (added back). ``campaign_gate`` (if given)
    is asked before each vote request: a reason (``rejoin.CatchUpGuard.campaign_refusal``)
    keeps it from being sent (``Unreachable``)."""

    def __init__(
        self, tcp: TcpNetworkFactory, on_rpc_error: RpcErrorHook | None = None,
        on_forget: Callable[[NodeId], None] | None = None,
        campaign_gate: Callable[[], str | None] | None = None,
    ) -> None:
        self.tcp = tcp
        self.on_rpc_error = on_rpc_error
        self.on_forget = on_forget
        self.campaign_gate = campaign_gate
        self._targets: set[NodeId] = set()
        """The nodes given a client and not forgotten since: whose errors are reported."""

    def new_client(self, target: NodeId, node: BasicNode) -> _CountingClient:
        """A client for ``target`` at the raft address in ``node`` (no IO)."""
        raft_addr = addrs_of(node).raft
        client = self.tcp.new_client(target, BasicNode(raft_addr))
        self._targets.add(target)
        hook = self._rpc_failed if self.on_rpc_error is not None else None
        return _CountingClient(client, target, hook, self.campaign_gate)

    def _rpc_failed(self, target: NodeId, rpc: str, error: BaseException) -> None:
        if target in self._targets and self.on_rpc_error is not None:
            self.on_rpc_error(target, rpc, error)

    def forget(self, target: NodeId) -> None:
        """``target`` left the membership: the TCP factory's ``forget`` (closes the
        connection to it), then ``on_forget(target)``."""
        self._targets.discard(target)
        self.tcp.forget(target)
        if self.on_forget is not None:
            self.on_forget(target)

    def check_config(self, config: Config) -> None:
        """The TCP factory's ``check_config`` (``Raft.new`` calls it): ``ConfigError`` if the
        config's requests cannot fit its ``max_frame_size``."""
        self.tcp.check_config(config)

    async def close(self) -> None:
        """Close every connection (after the node shut down)."""
        await self.tcp.close()
