"""Pieces the TCP client and server share: address parsing, TCP_NODELAY, the per-loop-turn
frame writer, the default frame limit, the logger, and the node identity of a TLS
certificate (``node_uri``, ``node_id_from_cert``; see ``openraft_py.network.tcp``)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, unquote

from ..types import NodeId
from ..validation import check_node_id, check_seconds, shown

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "FIRST_BYTES_KEPT",
    "MAX_FRAME_RATE",
    "MAX_FRAME_SIZE",
    "MAX_SECONDS",
    "MIN_FRAME_SIZE",
    "PeerCert",
    "PeerIdOfCert",
    "cert_mismatch",
    "check_cert_binding",
    "check_count",
    "check_duration",
    "check_frame_rate",
    "check_frame_limit",
    "check_given_addr",
    "check_server_certificate",
    "check_seconds",
    "foreign_protocol_hint",
    "http_refusal",
    "log",
    "node_id_from_cert",
    "node_uri",
    "parse_addr",
    "self_handshake",
]

log = logging.getLogger("openraft_py.network.tcp")
"""The transport's logger (client and server): refusals and dropped connections at WARNING."""

DEFAULT_MAX_FRAME_SIZE = 32 * 1024 * 1024
"""Largest frame either side accepts by default (32 MiB): room for a default 3 MiB snapshot
chunk or a full AppendEntries batch of large entries. Raise it (on every node) when
``Config.snapshot_max_chunk_size`` or entry payloads need more."""


MAX_FRAME_SIZE = 2**32 - 1
"""The greatest ``max_frame_size`` ``TcpNetworkFactory`` and ``TcpServer.start`` take: a
frame's length is a u32 on the wire, so no frame can be longer (``2**70`` was taken, and
a limit no frame can reach is no limit)."""

MIN_FRAME_SIZE = 64
"""The least ``max_frame_size`` either side takes (a frame header and a small message)."""

MAX_SECONDS = 3600.0
"""The longest duration a setting of the transport takes (an hour): ``TcpNetworkFactory``'s
``connect_timeout``; ``TcpServer.start``'s ``idle_timeout``, ``handshake_timeout``,
``frame_timeout``, ``drain_timeout`` and ``membership_check_interval``. Each default is a
minute or less, and ``1e12`` or ``1e300`` was taken (``inf`` was refused): a bound in name
only. A connect or handshake that hung held every later call to its peer, a connection that
never sent its hello or stalled its frame held its slot, ``close()`` waited on a peer that
took nothing, and a removed node was served, each for good. (``backoff_max`` has its own,
lower bound: ``MAX_BACKOFF``.)"""

MAX_FRAME_RATE = float(MAX_FRAME_SIZE)
"""The largest ``min_frame_rate`` (bytes per second) ``TcpServer.start`` takes: the largest
frame in one second. A frame must then arrive whole within ``frame_timeout`` and a second
at most, and a greater rate asks nothing more (``1e300`` was taken)."""


def check_frame_limit(value: object) -> int:
    """Return ``max_frame_size`` ``value`` as a plain ``int`` if it is an ``int`` (not
    ``bool``) in ``[MIN_FRAME_SIZE, MAX_FRAME_SIZE]``; ``TypeError`` (a ``float`` too) or
    ``ValueError`` naming ``max_frame_size``."""
    n = check_count(value, "max_frame_size", MIN_FRAME_SIZE)
    if n > MAX_FRAME_SIZE:
        raise ValueError(
            f"max_frame_size must be at most {MAX_FRAME_SIZE} (2**32 - 1, a frame's length is a u32 on the "
            f"wire), got {shown(n)}"
        )
    return n


def check_duration(value: object, what: str, *, zero_ok: bool = False) -> float:
    """Return the duration setting ``value`` (seconds) as a ``float`` if ``check_seconds``
    takes it (a finite number above 0, or at least 0 with ``zero_ok``) and it is at most
    ``MAX_SECONDS``; ``TypeError`` or ``ValueError`` naming ``what`` and the range."""
    seconds = check_seconds(value, what, zero_ok=zero_ok)
    if seconds > MAX_SECONDS:
        raise ValueError(f"{what} must be {'at least' if zero_ok else 'above'} 0 and at most {MAX_SECONDS:g} seconds "
                         f"(MAX_SECONDS, an hour: a longer one bounds nothing), got {shown(value)}")
    return seconds


def check_frame_rate(value: object) -> float:
    """Return ``min_frame_rate`` ``value`` (bytes per second) as a ``float`` if it is a finite
    number above 0 and at most ``MAX_FRAME_RATE``; ``TypeError`` or ``ValueError`` naming it."""
    rate = check_seconds(value, "min_frame_rate")
    if rate > MAX_FRAME_RATE:
        # (the bound in full, as the durations' range: ":g" printed it "4.29497e+09")
        raise ValueError(f"min_frame_rate must be above 0 and at most {MAX_FRAME_RATE:.0f} bytes per second "
                         "(MAX_FRAME_RATE, the largest frame in a second: a greater rate asks nothing more), got "
                         f"{shown(value)}")
    return rate


def parse_addr(addr: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6addr]:port"``) as ``(host, port)``; ``ValueError`` if
    malformed (the port must be ASCII digits: ``int`` also reads other scripts' digits)."""
    host, sep, port_s = addr.rpartition(":")
    if not sep or not host or not (port_s.isascii() and port_s.isdigit()):
        raise ValueError(f"not a host:port address: {shown(addr)}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_s)
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {shown(addr)}")
    return host, port


def check_given_addr(addr: str) -> tuple[str, int]:
    """``parse_addr`` for an address an operator or a client gives (a flag, a member of a
    new membership), which must also write its port plainly: ``ValueError`` for a leading
    zero (``127.0.0.1:021001``), saying how to write the port. Such a port is the same as
    the one without the zero (``int`` reads it so), but addresses are kept and compared as
    written, so ``:021001`` and ``:21001`` passed for two members' ports. Only addresses
    given are checked so: one read back (a stored membership, a snapshot's), which an
    earlier release may have taken with a zero, goes through ``parse_addr`` alone."""
    host, port = parse_addr(addr)
    written = addr.rpartition(":")[2]
    if written != str(port):
        raise ValueError(f"the port {written!r} in {shown(addr)} has a leading zero: write the port as {port}")
    return host, port


PeerCert = Mapping[str, Any]
"""A peer's certificate as ``ssl.SSLSocket.getpeercert()`` returns it (``subject``,
``subjectAltName``, ...): what a ``peer_id_of_cert`` callable reads."""

PeerIdOfCert = Callable[[PeerCert], NodeId | None]
"""The node id a verified peer certificate belongs to, or ``None`` if it names none (the
``peer_id_of_cert`` argument of ``TcpServer.start`` and ``TcpNetworkFactory``)."""

NODE_URI_SCHEME = "openraft://"
_MAX_NODE_ID = 2**63 - 1


def node_uri(cluster_name: str, node_id: NodeId) -> str:
    """The subjectAltName URI that binds a certificate to node ``node_id`` of cluster
    ``cluster_name``: ``openraft://<cluster_name, percent-encoded>/<node_id in decimal>``
    (``node_uri("prod", 3) == "openraft://prod/3"``). Put it in a node's certificate
    (``subjectAltName=URI:openraft://prod/3``) and ``node_id_from_cert("prod")`` reads it.
    ``TypeError`` unless ``cluster_name`` is a ``str`` and ``node_id`` an ``int`` (``True``
    and ``1.0`` made "openraft://prod/True" and "openraft://prod/1.0", URIs no node id is
    read from), ``ValueError`` for an id out of range."""
    _check_cluster_name(cluster_name, "node_uri")
    node_id = check_node_id(node_id, "node_uri: node id")
    return f"{NODE_URI_SCHEME}{quote(cluster_name, safe='')}/{node_id}"


def _check_cluster_name(cluster_name: object, who: str) -> None:
    """``TypeError`` naming ``who`` unless ``cluster_name`` is a ``str``."""
    if not isinstance(cluster_name, str):
        raise TypeError(f"{who}: cluster_name must be a str, got {type(cluster_name).__name__} {shown(cluster_name)}")


def node_id_from_cert(cluster_name: str) -> PeerIdOfCert:
    """A ``peer_id_of_cert`` callable for the ``node_uri`` convention: the node id of the
    certificate's ``openraft://<cluster_name>/<id>`` subjectAltName URI.

    It returns ``None`` (so the peer is refused) when the certificate has no such URI for
    ``cluster_name``, when an id is not a plain decimal in ``[0, 2**63 - 1]``, or when
    URIs name different ids; URIs of other clusters and other SAN entries are ignored.
    ``TypeError`` unless ``cluster_name`` is a ``str``: the callable made of ``b"prod"`` or
    ``5`` named no node in any certificate, so every peer was refused."""
    _check_cluster_name(cluster_name, "node_id_from_cert")

    def peer_id_of_cert(cert: PeerCert) -> NodeId | None:
        found: set[NodeId] = set()
        for typ, value in cert.get("subjectAltName", ()):
            if typ != "URI" or not value.startswith(NODE_URI_SCHEME):
                continue
            cluster, sep, id_s = value[len(NODE_URI_SCHEME) :].rpartition("/")
            if not sep or unquote(cluster) != cluster_name:
                continue
            if not (id_s.isdigit() and id_s.isascii()) or (len(id_s) > 1 and id_s[0] == "0"):
                return None
            nid = int(id_s)
            if nid > _MAX_NODE_ID:
                return None
            found.add(nid)
        return found.pop() if len(found) == 1 else None

    return peer_id_of_cert


def check_count(value: object, what: str, minimum: int, maximum: int | None = None, why: str = "") -> int:
    """Return ``value`` as a plain ``int`` if it is an ``int`` (not ``bool``) of at least
    ``minimum`` (and at most ``maximum``, when given; ``why`` says why in the error);
    ``TypeError`` (a ``float`` too) or ``ValueError`` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__} {shown(value)}")
    if value < minimum:
        raise ValueError(f"{what} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{what} must be at most {maximum}{why}, got {value}")
    return int(value)


def check_cert_binding(ctx: ssl.SSLContext | None, peer_id_of_cert: PeerIdOfCert | None, who: str) -> None:
    """``ValueError`` if ``peer_id_of_cert`` is set but ``ctx`` verifies no peer certificate
    (no TLS, or ``verify_mode == CERT_NONE``): there would be no certificate to bind."""
    if peer_id_of_cert is not None and (ctx is None or ctx.verify_mode == ssl.CERT_NONE):
        raise ValueError(f"{who}: peer_id_of_cert needs an ssl context that verifies the peer's certificate")


def self_handshake(client: ssl.SSLContext, server: ssl.SSLContext, server_hostname: str | None = None) -> ssl.SSLObject:
    """A TLS handshake in memory between ``client`` (dialling ``server_hostname``) and
    ``server``; the client's ``SSLObject`` once it completed. ``ssl.SSLError`` from the side
    that refused the other, with ``server_side`` set on it to say which."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_side=False, server_hostname=server_hostname)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {False: False, True: False}
    for _ in range(16):  # a TLS 1.3 handshake takes 2 rounds, 1.2 takes 3
        for side, obj, outbox, peer_in in ((False, c, c_out, s_in), (True, s, s_out, c_in)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as e:
                    e.server_side = side  # type: ignore[attr-defined]
                    raise
            peer_in.write(outbox.read())
        if done[False] and done[True]:
            return c
    raise ssl.SSLError("the TLS handshake did not complete")


def check_server_certificate(ctx: ssl.SSLContext, who: str) -> None:
    """``ValueError`` if the server context ``ctx`` presents no certificate: it has none
    (``load_cert_chain`` was not called) or none that a cipher it allows can use. Found by a
    TLS handshake in memory with a client that verifies nothing, which such a server refuses
    with "no shared cipher" (as it would every connection: the server started and refused
    every peer, the hint in its log only). Any other refusal (a mutual-TLS server wants a
    client certificate the probe has not) is not this check's business."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    try:
        self_handshake(probe, ctx)
    except ssl.SSLError as e:
        if getattr(e, "server_side", False) and e.reason == "NO_SHARED_CIPHER":
            raise ValueError(
                f"{who}: ssl has no certificate to present (call its load_cert_chain(certfile, keyfile)), or none "
                "that a cipher it allows can use: every connection would be refused in the TLS handshake "
                "(no shared cipher)"
            ) from None


def cert_mismatch(
    transport: asyncio.BaseTransport | None, peer_id_of_cert: PeerIdOfCert, node_id: NodeId, side: str
) -> str | None:
    """Why the verified certificate ``transport``'s peer presented does not prove it is node
    ``node_id`` (``side``: ``"client"`` or ``"server"``, for the message), or ``None`` if it
    does. A callable that raises, or returns anything but an ``int`` (``bool`` included) or
    ``None``, counts as naming no node."""
    cert = None if transport is None else transport.get_extra_info("peercert")
    if not cert:
        return f"no verified {side} certificate to bind to node {node_id}"
    try:
        cert_id = peer_id_of_cert(cert)
    except Exception as e:  # noqa: BLE001 - a user callable; its failure refuses the peer
        return f"peer_id_of_cert failed on the {side} certificate: {e!r}"
    if cert_id is None:
        return f"the {side} certificate names no node id"
    if isinstance(cert_id, bool) or not isinstance(cert_id, int):
        # True (a predicate's answer) equals node 1 and 3.0 node 3; "3" (a common name) was
        # refused as "the certificate is node 3's, not node 3's".
        return (f"peer_id_of_cert returned {type(cert_id).__name__} {shown(cert_id)} for the {side} certificate, "
                "not a node id (an int) or None")
    if cert_id != node_id:
        return f"the {side} certificate is node {cert_id}'s, not node {node_id}'s"
    return None


FIRST_BYTES_KEPT = 64
"""How many of the first bytes a connection received before its handshake completed are kept
for ``foreign_protocol_hint``."""


def foreign_protocol_hint(first: bytes, dialled: bool, too_large: bool = False) -> str:
    """What a peer that does not speak this protocol seems to speak, from the first bytes it
    sent (``""`` when they look like nothing in particular): appended to the error that
    closes the connection, which otherwise names only a bogus frame length (the first four
    bytes of ``HTTP/1.1`` read as a length are 1.2 GB). ``dialled``: the peer is a server
    this node connected to (else a client that connected to it). ``too_large``: the first
    frame's length was over the frame limit, which no handshake of any version of this
    protocol comes near (a hello is a few dozen bytes): bytes that look like nothing in
    particular are then quoted as not this protocol's (binary garbage, a port scanner)."""
    if len(first) >= 2 and first[0] in (0x15, 0x16) and first[1] == 0x03:
        return " (it looks like TLS: is TLS configured on one side only?)"
    head = first[:8]
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        line = first.split(b"\n", 1)[0].rstrip(b"\r").decode("ascii", "replace")
        what = "not an openraft-py raft port; is the address right?" if dialled else "not an openraft-py node"
        return f" (it sent text, {line!r}: {what})"
    if too_large and head:
        what = "no openraft-py handshake answer: is the address right?" if dialled else (
            "no openraft-py hello: a client of another protocol, or a scanner")
        return f" (its first bytes, {bytes(head)!r}, are {what})"
    return ""


_HTTP_REQUEST = re.compile(rb"[A-Z]{3,16} /")
"""The start of an HTTP request line with a path (``PUT /kv/a HTTP/1.1``)."""


def http_refusal(first: bytes) -> bytes | None:
    """A whole ``HTTP/1.1 400`` answer with a JSON ``{"error": ...}`` body for a client whose
    first bytes are an HTTP request (``first`` as kept for ``foreign_protocol_hint``), else
    ``None``. The server writes it before it closes such a connection, so an HTTP client
    given a raft port by mistake (the key-value service's API is on another port) reports
    what is wrong; with the connection closed unanswered, the outcome of a write it sent was
    unknown to it."""
    if not _HTTP_REQUEST.match(first):
        return None
    body = json.dumps({
        "error": "this is an openraft-py raft port, where nodes talk to each other; it does not "
                 "serve HTTP: is the address right (the key-value service's HTTP API is on its "
                 "--http-addr)?"
    }).encode()
    head = (
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):  # pragma: no cover - not a TCP socket
            pass


JOIN_MAX_FRAME_BYTES = 64 * 1024
"""Frames queued in one loop turn are joined into one buffer for one transport write while
every one of them is smaller than this; a turn that queued a larger one hands the frames to
the transport as they are (``writelines``). Joining copied a multi-MB AppendEntries (queued
in the same turn as a heartbeat, or as the next batch to the same follower) once more, on
the loop, into a new buffer of its size; the transport sends the frames as they are, with no
copy on uvloop (a list of buffers to one ``writev``)."""


class _FrameWriter:
    """Coalesces the frames queued during one loop turn into one transport write."""

    __slots__ = ("_transport", "_out", "_scheduled", "_loop", "_large")

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport) -> None:
        self._loop = loop
        self._transport = transport
        self._out: list[bytes | bytearray] = []
        self._scheduled = False
        self._large = False
        """Whether a frame of ``_out`` has ``JOIN_MAX_FRAME_BYTES`` or more."""

    def send(self, frame: bytes | bytearray) -> None:
        """Queue ``frame``; it is written at the end of this loop turn."""
        self._out.append(frame)
        if len(frame) >= JOIN_MAX_FRAME_BYTES:
            self._large = True
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write everything queued now (a no-op once the transport is closing): one frame
        as it is, small frames joined, frames of which one is large as they are."""
        self._scheduled = False
        out = self._out
        if not out:
            return
        self._out = []
        large = self._large
        self._large = False
        t = self._transport
        if t.is_closing():
            return
        if len(out) == 1:
            t.write(out[0])
        elif large:
            t.writelines(out)
        else:
            t.write(b"".join(out))
