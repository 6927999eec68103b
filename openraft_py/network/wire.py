"""The TCP wire format: frames, message kinds and the versioned msgpack schema.

The layout is documented in ``docs/design/wire.md``; this module is its reference.

Frame (the ``_core`` codec frame, ``encode_frame`` / ``FrameReader``)::

    +-----------+----------+--------------+---------------------------+
    | length    | kind     | request id   | body (msgpack)            |
    | u32 BE    | u8       | u64 BE       | length - 9 bytes          |
    +-----------+----------+--------------+---------------------------+
    \\_ frame __/\\___________________ frame payload (length bytes) _____/

``kind`` is one of the ``KIND_*`` constants; ``request id`` matches a response to its
request on one connection (the client picks it; the handshake uses 0). The body is the
msgpack encoding of the message's schema Struct below: an array (``array_like``) whose
nested values are the encodings of the ``openraft_py.types`` Structs (``LogId``, ``Vote``,
``Entry`` ... as they encode themselves).

Decoding is typed and bounded: :func:`decode_body` first validates the body against the
schema Structs of this module (every term, log index and node id an integer within the
limits of ``openraft_py.validation``: ``MAX_TERM``, ``MAX_INDEX``, ``MAX_NODE_ID``; strings
and collection sizes bounded) and only then builds the
``openraft_py.types`` values the ``Raft`` handlers take, so a malformed message raises
:class:`WireError` and never reaches ``Raft``. AppendEntries (the one hot message) is
decoded in ONE typed pass into the ``openraft_py.types`` values, then the same bounds are
checked on them by :func:`_check_append_entries_bounds` (a flat loop): the schema pass
would cost twice the decode (measured: ~2x for a 256-entry batch) for the same verdict.

Versioning rule: ``PROTOCOL_VERSION`` names this schema. Within one version a message may
only gain *trailing* fields with defaults (older decoders ignore extra trailing array items;
newer ones fill the defaults in); any other change (a new required field, a changed type or
meaning, a renumbered kind) is a new version. A server accepts the versions in
``SUPPORTED_VERSIONS`` and refuses any other at the handshake.
"""

from __future__ import annotations

import operator
import struct
from typing import Annotated, Any, Final

import msgspec

from .._core import FrameTooLarge, plain_entries_prefix
from ..types import (
    MAX_MEMBERSHIP_NODES,
    AppendEntriesRequest,
    AppendEntriesResponse,
    Blank,
    Entry,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    LogId,
    Membership,
    Normal,
    TransferLeaderRequest,
    Vote,
    VoteRequest,
    VoteResponse,
)
from ..validation import MAX_INDEX, MAX_NODE_ID, MAX_TERM

__all__ = [
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "MAX_U63",
    "MAX_ENTRIES",
    "MAX_MEMBERSHIP_NODES",
    "MAX_HELLO_FRAME",
    "HEADER",
    "HEADER_SIZE",
    "KIND_HELLO",
    "KIND_HELLO_ACK",
    "KIND_APPEND_ENTRIES",
    "KIND_APPEND_ENTRIES_RESP",
    "KIND_VOTE",
    "KIND_VOTE_RESP",
    "KIND_INSTALL_SNAPSHOT",
    "KIND_INSTALL_SNAPSHOT_RESP",
    "KIND_TRANSFER_LEADER",
    "KIND_TRANSFER_LEADER_RESP",
    "KIND_ERROR",
    "REQUEST_KINDS",
    "RESPONSE_KIND",
    "KIND_NAMES",
    "ERR_FATAL",
    "ERR_INVALID",
    "ERR_REMOTE",
    "ERR_REFUSED",
    "ERR_UNSUPPORTED",
    "WireError",
    "Hello",
    "HelloAck",
    "ErrorBody",
    "encode_message",
    "frame_message",
    "split_payload",
    "decode_body",
    "hello_version",
]

PROTOCOL_VERSION: Final = 1
"""The schema version this module speaks (sent in ``Hello``)."""

SUPPORTED_VERSIONS: Final = frozenset({1})
"""Versions a server accepts at the handshake."""

MAX_U63: Final = 2**63 - 1
"""Largest unsigned value on the wire: request ids aside, the bound of snapshot offsets."""

MAX_NAME_LEN: Final = 256
"""Longest cluster name in a ``Hello``."""
MAX_ADDR_LEN: Final = 1024
"""Longest node address (``BasicNode.addr``) and snapshot id."""
MAX_MESSAGE_LEN: Final = 4096
"""Longest error message in an ``ErrorBody`` (longer ones are cut by the sender)."""
MAX_CONFIGS: Final = 2
"""Voter configs in one membership (two during a joint change)."""
MAX_ENTRIES: Final = 65536
"""Most entries in one AppendEntries (``Config.max_payload_entries`` is at most this on the
TCP transport: ``check_frame_size``). A body with more is refused from its list header,
before any entry is decoded (msgspec checks an array's length first): the entries of a
32 MiB frame (the default ``max_frame_size``) are otherwise up to 1.87 million blank ones,
which took 2.6 s of the event loop to decode, so that a peer past the handshake stalled the
node past its election timeouts. 65536 blank entries take about 0.1 s (``bad-input.md``)."""
MAX_HELLO_FRAME: Final = 1024
"""Largest first frame (the ``Hello``) a server reads from a connection it has not
accepted yet: an unauthenticated peer makes it buffer no more than this."""

HEADER: Final = struct.Struct(">BQ")
"""The frame payload header: kind (u8), request id (u64 BE)."""
HEADER_SIZE: Final = HEADER.size

# -- message kinds ------------------------------------------------------------------------------

KIND_HELLO: Final = 1
KIND_HELLO_ACK: Final = 2
KIND_APPEND_ENTRIES: Final = 3
KIND_APPEND_ENTRIES_RESP: Final = 4
KIND_VOTE: Final = 5
KIND_VOTE_RESP: Final = 6
KIND_INSTALL_SNAPSHOT: Final = 7
KIND_INSTALL_SNAPSHOT_RESP: Final = 8
KIND_TRANSFER_LEADER: Final = 9
KIND_TRANSFER_LEADER_RESP: Final = 10
KIND_ERROR: Final = 15

REQUEST_KINDS: Final = frozenset(
    {KIND_APPEND_ENTRIES, KIND_VOTE, KIND_INSTALL_SNAPSHOT, KIND_TRANSFER_LEADER}
)
"""Kinds a client may send after the handshake."""

RESPONSE_KIND: Final = {
    KIND_APPEND_ENTRIES: KIND_APPEND_ENTRIES_RESP,
    KIND_VOTE: KIND_VOTE_RESP,
    KIND_INSTALL_SNAPSHOT: KIND_INSTALL_SNAPSHOT_RESP,
    KIND_TRANSFER_LEADER: KIND_TRANSFER_LEADER_RESP,
}
"""The success response kind of each request kind (a failure is ``KIND_ERROR``)."""

KIND_NAMES: Final = {
    KIND_HELLO: "hello",
    KIND_HELLO_ACK: "hello_ack",
    KIND_APPEND_ENTRIES: "append_entries",
    KIND_APPEND_ENTRIES_RESP: "append_entries_resp",
    KIND_VOTE: "vote",
    KIND_VOTE_RESP: "vote_resp",
    KIND_INSTALL_SNAPSHOT: "install_snapshot",
    KIND_INSTALL_SNAPSHOT_RESP: "install_snapshot_resp",
    KIND_TRANSFER_LEADER: "transfer_leader",
    KIND_TRANSFER_LEADER_RESP: "transfer_leader_resp",
    KIND_ERROR: "error",
}

# -- error codes (ErrorBody.code) ---------------------------------------------------------------

ERR_FATAL: Final = 1
"""The target node has stopped (its handler raised ``Fatal``): the client raises
``Unreachable``."""
ERR_INVALID: Final = 2
"""The request was malformed or refused by validation (never reached ``Raft``, or ``Raft``
raised ``InvalidRequest``): the client raises ``RemoteError``."""
ERR_REMOTE: Final = 3
"""The handler raised another exception: the client raises ``RemoteError``."""
ERR_REFUSED: Final = 4
"""The handshake was refused (cluster name, sender id): the client raises ``Unreachable``
and the server closes the connection."""
ERR_UNSUPPORTED: Final = 5
"""The handshake named a protocol version the server does not speak."""


class WireError(ValueError):
    """A frame or body does not follow the wire schema (bad kind, bad header, a value of the
    wrong type or out of bounds). The receiving side closes the connection."""


# -- bounded scalar types -------------------------------------------------------------------

# The same limits as the ``Raft`` validation layer (``openraft_py.validation``), so a value
# the node would refuse is refused at the door.
Term = Annotated[int, msgspec.Meta(ge=0, le=MAX_TERM)]
"""A term on the wire: ``[0, MAX_TERM]``."""
Index = Annotated[int, msgspec.Meta(ge=0, le=MAX_INDEX)]
"""A log index on the wire: ``[0, MAX_INDEX]``."""
NodeIdW = Annotated[int, msgspec.Meta(ge=0, le=MAX_NODE_ID)]
"""A node id on the wire: ``[0, MAX_NODE_ID]``."""
U63 = Annotated[int, msgspec.Meta(ge=0, le=MAX_U63)]
"""A snapshot offset on the wire."""
_Addr = Annotated[str, msgspec.Meta(max_length=MAX_ADDR_LEN)]
_Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME_LEN)]
_Message = Annotated[str, msgspec.Meta(max_length=MAX_MESSAGE_LEN)]


# -- handshake and error bodies (wire-only messages) --------------------------------------------


class Hello(msgspec.Struct, frozen=True, array_like=True):
    """The first frame a client sends (kind ``KIND_HELLO``, request id 0).

    In every protocol version a hello is an array whose first item is the version: a server
    reads it first (``hello_version``), so a hello of a version it does not speak, whatever
    else it holds, is answered ``ERR_UNSUPPORTED`` naming it."""

    version: Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
    """The protocol version the client speaks (``PROTOCOL_VERSION``)."""
    cluster_name: _Name
    """Must equal the server's cluster name."""
    node_id: NodeIdW
    """The sender's node id; must be in the server's membership once it has one."""


class HelloAck(msgspec.Struct, frozen=True, array_like=True):
    """The server's answer to an accepted ``Hello`` (kind ``KIND_HELLO_ACK``, request id 0)."""

    version: Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
    """The version the connection speaks from now on."""
    node_id: NodeIdW
    """The server's node id."""


class ErrorBody(msgspec.Struct, frozen=True, array_like=True):
    """A failed request (kind ``KIND_ERROR``, the request's id) or a refused handshake
    (request id 0)."""

    code: Annotated[int, msgspec.Meta(ge=0, le=255)]
    """One of the ``ERR_*`` codes (an unknown code is treated as ``ERR_REMOTE``)."""
    message: _Message
    """A human-readable reason."""


# -- the validation schema: mirrors of openraft_py.types with bounds ------------------------------
#
# These Structs encode exactly like the openraft_py.types values they mirror (same field names
# for map Structs, same field order for array-like ones, same tags); they exist to validate a
# body before it is decoded into the real types.


class _LogId(msgspec.Struct, frozen=True, array_like=True):
    term: Term
    index: Index


class _LeaderId(msgspec.Struct, frozen=True, array_like=True):
    term: Term
    node_id: NodeIdW


class _Vote(msgspec.Struct, frozen=True, array_like=True):
    leader_id: _LeaderId
    committed: bool = False


class _BasicNode(msgspec.Struct, frozen=True):
    addr: _Addr = ""


class _Membership(msgspec.Struct, frozen=True, tag="Membership"):
    # The bounds of ``openraft_py.types.Membership`` (``MAX_MEMBERSHIP_NODES``, checked from
    # the headers), and at most ``MAX_CONFIGS`` configs.
    configs: Annotated[
        tuple[Annotated[frozenset[NodeIdW], msgspec.Meta(max_length=MAX_MEMBERSHIP_NODES)], ...],
        msgspec.Meta(max_length=MAX_CONFIGS),
    ]
    nodes: Annotated[dict[NodeIdW, _BasicNode], msgspec.Meta(max_length=MAX_MEMBERSHIP_NODES)]


class _StoredMembership(msgspec.Struct, frozen=True):
    log_id: _LogId | None
    membership: _Membership


class _Blank(msgspec.Struct, frozen=True, tag="Blank"):
    pass


class _Normal(msgspec.Struct, frozen=True, tag="Normal"):
    # Raw: the validation pass skips the bytes (no copy); the build pass checks their type.
    data: msgspec.Raw


class _Entry(msgspec.Struct, frozen=True, array_like=True):
    log_id: _LogId
    payload: _Blank | _Normal | _Membership


class _SnapshotMeta(msgspec.Struct, frozen=True):
    last_log_id: _LogId | None
    last_membership: _StoredMembership
    snapshot_id: _Addr


class WireAppendEntriesRequest(msgspec.Struct, frozen=True, array_like=True):
    """Schema of an AppendEntries request body (fields of ``AppendEntriesRequest``)."""

    vote: _Vote
    prev_log_id: _LogId | None
    entries: Annotated[list[_Entry], msgspec.Meta(max_length=MAX_ENTRIES)]
    leader_commit: _LogId | None


class WireAppendEntriesResponse(msgspec.Struct, frozen=True, array_like=True):
    """Schema of an AppendEntries response body (fields of ``AppendEntriesResponse``)."""

    vote: _Vote
    success: bool
    matching: _LogId | None = None
    conflict_hint: Annotated[int, msgspec.Meta(ge=-1, le=MAX_INDEX)] = -1


class WireVoteRequest(msgspec.Struct, frozen=True, array_like=True):
    """Schema of a vote request body (fields of ``VoteRequest``)."""

    vote: _Vote
    last_log_id: _LogId | None
    pre_vote: bool = False
    transfer_from: _Vote | None = None


class WireVoteResponse(msgspec.Struct, frozen=True, array_like=True):
    """Schema of a vote response body (fields of ``VoteResponse``)."""

    vote: _Vote
    vote_granted: bool
    last_log_id: _LogId | None
    pre_vote: bool = False


class WireInstallSnapshotRequest(msgspec.Struct, frozen=True, array_like=True):
    """Schema of an install-snapshot chunk body (fields of ``InstallSnapshotRequest``)."""

    vote: _Vote
    meta: _SnapshotMeta
    offset: U63
    data: msgspec.Raw  # typed (bytes) by the build pass; not copied by the validation pass
    done: bool


class WireInstallSnapshotResponse(msgspec.Struct, frozen=True, array_like=True):
    """Schema of an install-snapshot response body (fields of ``InstallSnapshotResponse``)."""

    vote: _Vote


class WireTransferLeaderRequest(msgspec.Struct, frozen=True, array_like=True):
    """Schema of a leader-transfer request body (fields of ``TransferLeaderRequest``)."""

    from_leader: _Vote
    to: NodeIdW
    last_log_id: _LogId | None


class WireTransferLeaderResponse(msgspec.Struct, frozen=True, array_like=True):
    """Schema of a leader-transfer response body: empty (the handler returns ``None``)."""


# kind -> (schema Struct, openraft_py.types class or None for the wire-only messages)
_SCHEMA: dict[int, tuple[type[msgspec.Struct], type | None]] = {
    KIND_HELLO: (Hello, None),
    KIND_HELLO_ACK: (HelloAck, None),
    KIND_ERROR: (ErrorBody, None),
    KIND_APPEND_ENTRIES: (WireAppendEntriesRequest, AppendEntriesRequest),
    KIND_APPEND_ENTRIES_RESP: (WireAppendEntriesResponse, AppendEntriesResponse),
    KIND_VOTE: (WireVoteRequest, VoteRequest),
    KIND_VOTE_RESP: (WireVoteResponse, VoteResponse),
    KIND_INSTALL_SNAPSHOT: (WireInstallSnapshotRequest, InstallSnapshotRequest),
    KIND_INSTALL_SNAPSHOT_RESP: (WireInstallSnapshotResponse, InstallSnapshotResponse),
    KIND_TRANSFER_LEADER: (WireTransferLeaderRequest, TransferLeaderRequest),
    KIND_TRANSFER_LEADER_RESP: (WireTransferLeaderResponse, None),
}


_BOUNDED_FIELDS: dict[type, dict[str, Any]] = {
    AppendEntriesRequest: {"entries": Annotated[list[Entry], msgspec.Meta(max_length=MAX_ENTRIES)]},
}
"""Fields whose length the build pass bounds (it decodes an AppendEntries without the
validation pass): checked from the array header, before the elements are decoded."""


def _array_twin(cls: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """An ``array_like`` Struct with the fields, types and defaults of ``cls``: decodes a body
    into the real (unbounded) types, filling in trailing defaults; the lengths of
    ``_BOUNDED_FIELDS`` bounded."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    bounded = _BOUNDED_FIELDS.get(cls, {})
    for f in msgspec.structs.fields(cls):
        typ = bounded.get(f.name, f.type)
        if f.default is not msgspec.NODEFAULT:
            fields.append((f.name, typ, f.default))
        elif f.default_factory is not msgspec.NODEFAULT:
            fields.append((f.name, typ, msgspec.field(default_factory=f.default_factory)))
        else:
            fields.append((f.name, typ))
    return msgspec.defstruct(f"_Array{cls.__name__}", fields, array_like=True, frozen=True)


def _check_mirror(wire: type[msgspec.Struct], real: type[msgspec.Struct]) -> None:
    if wire.__struct_fields__ != real.__struct_fields__:
        raise AssertionError(f"wire schema {wire.__name__} does not mirror {real.__name__}")


_VALIDATORS: dict[int, msgspec.msgpack.Decoder[Any]] = {}
_BUILDERS: dict[int, tuple[msgspec.msgpack.Decoder[Any], type]] = {}
for _kind, (_wire, _real) in _SCHEMA.items():
    _VALIDATORS[_kind] = msgspec.msgpack.Decoder(_wire)
    if _real is not None:
        _check_mirror(_wire, _real)
        _BUILDERS[_kind] = (msgspec.msgpack.Decoder(_array_twin(_real)), _real)
del _kind, _wire, _real
# Bodies whose Entry/LogId/Vote values the validation schema mirrors; keep them in step.
_check_mirror(_Entry, Entry)
_check_mirror(_LogId, LogId)
_check_mirror(_Vote, Vote)

_hello_items = msgspec.msgpack.Decoder(list[msgspec.Raw])
_version_item = msgspec.msgpack.Decoder(Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)])


def hello_version(body: bytes | memoryview) -> int | None:
    """The protocol version a hello ``body`` names, read before the rest of it: its first
    item, when the body is an array starting with an integer in ``[0, 2**32 - 1]``; ``None``
    otherwise. For a hello that does not decode as this version's ``Hello``: one of another
    version may hold anything after its version. A body nested deeper than the interpreter's
    recursion limit (msgspec skips each ``Raw`` item whole) is ``None`` too: its
    ``RecursionError`` escaped the server's protocol callback, and asyncio logged a fatal
    error with a traceback for each such connection of an unauthenticated peer."""
    try:
        items = _hello_items.decode(body)
        return _version_item.decode(items[0]) if items else None
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None


_encoder = msgspec.msgpack.Encoder()
_astuple = msgspec.structs.astuple
_EMPTY_BODY: Final = _encoder.encode(())


_FRAME_HEADER: Final = struct.Struct(">IBQ")
_FRAME_PREFIX: Final = _FRAME_HEADER.size  # u32 frame length + the payload header
_MAX_FRAME: Final = 2**32 - 1


_SHARED_ENTRIES_MIN: Final = 4
"""The fewest entries whose AppendEntries body ``_write`` keeps for the next one (below it,
comparing and keeping cost about what encoding again saves)."""

if AppendEntriesRequest.__struct_fields__ != ("vote", "prev_log_id", "entries", "leader_commit"):
    raise ImportError("wire: _write_append_entries splits an AppendEntries body of these four fields")
_is = operator.is_
_Raw = msgspec.Raw
_last_append: tuple[list[Entry], AppendEntriesRequest, bytearray] | None = None
"""The entries of the last AppendEntries framed with ``_SHARED_ENTRIES_MIN`` or more, that
request, and its body (one tuple: read and replaced in one step, whatever thread frames)."""


def _write_append_entries(msg: AppendEntriesRequest, buf: bytearray, offset: int) -> None:
    """Write ``msg``'s body at ``offset`` of ``buf`` (its end), reusing the last AppendEntries'
    body when it carried the same entries (the same objects in the same order): a leader sends
    one batch to each follower, each in its own list (sliced from the log cache), and this
    encodes the batch once. The same other fields (the followers at the same point): the
    body is copied whole; others: only the entries' bytes are (``msgspec.Raw``).

    Invariant: the kept body is exactly the encoding of the kept request, and an entry's
    encoding is a function of the entry alone (every ``Entry``, ``LogId`` and payload is a
    frozen Struct, and the log never changes an entry once made), so the same objects give
    the same bytes: the body is byte for byte the one encoding ``msg`` again would give. The
    body is a copy of the frame's: what the transport does with a frame cannot change it.
    Keeping the last request holds one batch of entries alive until the next."""
    global _last_append
    entries = msg.entries
    if len(entries) < _SHARED_ENTRIES_MIN:
        _encoder.encode_into(_astuple(msg), buf, offset)
        return
    last = _last_append
    if last is not None:
        kept_entries, kept, body = last
        if len(kept_entries) == len(entries) and all(map(_is, kept_entries, entries)):
            if (
                msg.leader_commit == kept.leader_commit
                and msg.prev_log_id == kept.prev_log_id
                and msg.vote == kept.vote
            ):
                buf[offset:] = body
                return
            # The body is the array header (1 byte: 4 items), then vote, prev_log_id, the
            # entries and leader_commit as each encodes alone.
            lo = 1 + len(_encoder.encode(kept.vote)) + len(_encoder.encode(kept.prev_log_id))
            hi = len(body) - len(_encoder.encode(kept.leader_commit))
            _encoder.encode_into((msg.vote, msg.prev_log_id, _Raw(body[lo:hi]), msg.leader_commit), buf, offset)
            return
    _encoder.encode_into(_astuple(msg), buf, offset)
    _last_append = (entries, msg, buf[offset:])


def _write(kind: int, request_id: int, msg: Any, buf: bytearray, offset: int) -> None:
    if kind not in _SCHEMA:
        raise WireError(f"unknown message kind {kind}")
    if not 0 <= request_id <= 2**64 - 1:
        raise WireError(f"request id {request_id} out of range")
    if msg is None:
        if kind != KIND_TRANSFER_LEADER_RESP:
            raise WireError(f"a {KIND_NAMES[kind]} message needs a body")
        buf += _EMPTY_BODY
    elif kind == KIND_APPEND_ENTRIES and type(msg) is AppendEntriesRequest:
        _write_append_entries(msg, buf, offset)
    elif kind in _BUILDERS:
        _encoder.encode_into(_astuple(msg), buf, offset)
    else:
        _encoder.encode_into(msg, buf, offset)


def encode_message(kind: int, request_id: int, msg: Any) -> bytes:
    """The frame payload (header + msgpack body) of ``msg`` sent as ``kind``.

    ``msg`` is an ``openraft_py.types`` RPC Struct for the RPC kinds (encoded as the array of
    its fields), ``None`` for ``KIND_TRANSFER_LEADER_RESP``, or a ``Hello`` / ``HelloAck`` /
    ``ErrorBody``. ``WireError`` for an unknown kind or a request id outside u64.
    """
    buf = bytearray(HEADER_SIZE)
    _write(kind, request_id, msg, buf, HEADER_SIZE)
    HEADER.pack_into(buf, 0, kind, request_id)
    return bytes(buf)


def frame_message(kind: int, request_id: int, msg: Any) -> bytearray:
    """One complete frame of ``msg``: byte for byte ``encode_frame(encode_message(...))``.

    Built in one buffer: msgspec writes the body (snapshot data included) directly after the
    reserved length and header, so the data is copied once. ``FrameTooLarge`` when the
    payload does not fit a u32 length; ``WireError`` as for ``encode_message``.
    """
    buf = bytearray(_FRAME_PREFIX)
    _write(kind, request_id, msg, buf, _FRAME_PREFIX)
    n = len(buf) - 4
    if n > _MAX_FRAME:
        raise FrameTooLarge(f"frame of {n} bytes")
    _FRAME_HEADER.pack_into(buf, 0, n, kind, request_id)
    return buf


def split_payload(payload: bytes) -> tuple[int, int, memoryview]:
    """``(kind, request id, body)`` of one frame payload; the body is a view (no copy).

    ``WireError`` when the payload is shorter than the header or the kind is unknown."""
    if len(payload) < HEADER_SIZE:
        raise WireError(f"frame payload of {len(payload)} bytes is shorter than the header")
    kind, request_id = HEADER.unpack_from(payload)
    if kind not in _SCHEMA:
        raise WireError(f"unknown message kind {kind}")
    return kind, request_id, memoryview(payload)[HEADER_SIZE:]


def _bad_bounds(what: str, value: Any) -> WireError:
    return WireError(f"malformed append_entries body: {what} out of bounds: {value!r}")


def _check_log_id_bounds(what: str, lid: LogId | None) -> None:
    if lid is not None and not (0 <= lid.term <= MAX_TERM and 0 <= lid.index <= MAX_INDEX):
        raise _bad_bounds(what, lid)


def _check_membership_bounds(m: Any) -> None:
    """The ``_Membership`` schema's bounds on a decoded ``Membership``."""
    if len(m.configs) > MAX_CONFIGS:
        raise _bad_bounds("membership configs", len(m.configs))
    for c in m.configs:
        for nid in c:
            if not 0 <= nid <= MAX_NODE_ID:
                raise _bad_bounds("membership voter id", nid)
    for nid, node in m.nodes.items():
        if not 0 <= nid <= MAX_NODE_ID:
            raise _bad_bounds("membership node id", nid)
        if len(node.addr) > MAX_ADDR_LEN:
            raise _bad_bounds("node address length", len(node.addr))


def _check_append_entries_bounds(req: AppendEntriesRequest) -> None:
    """Exactly the bounds of ``WireAppendEntriesRequest`` (which the typed decode into the
    ``openraft_py.types`` values does not know), checked on the decoded request: every term,
    index and node id within the ``validation`` limits, memberships bounded. ``WireError``
    otherwise. Types were checked by the decode (ints are ints, data is bytes)."""
    lid = req.vote.leader_id
    if not (0 <= lid.term <= MAX_TERM and 0 <= lid.node_id <= MAX_NODE_ID):
        raise _bad_bounds("vote", req.vote)
    _check_log_id_bounds("prev_log_id", req.prev_log_id)
    _check_log_id_bounds("leader_commit", req.leader_commit)
    entries = req.entries
    if not entries:
        return
    # The usual batch, in one kernel call: plain entries (no membership to check) with
    # consecutive indexes from a first one in bounds to a last one in bounds, and terms
    # that never decrease from a first one in bounds up to MAX_TERM. Anything else is
    # checked entry by entry below, which names what is out of bounds.
    head = entries[0].log_id
    first = head.index
    t0 = head.term
    if (
        0 <= first <= MAX_INDEX - len(entries) + 1
        and 0 <= t0 <= MAX_TERM
        and plain_entries_prefix(entries, first, t0, MAX_TERM, Entry, LogId, Normal, Blank) == len(entries)
    ):
        return
    membership = Membership
    for e in entries:
        log_id = e.log_id
        t = log_id.term
        i = log_id.index
        if t < 0 or t > MAX_TERM or i < 0 or i > MAX_INDEX:
            raise _bad_bounds("entry log id", log_id)
        if type(e.payload) is membership:
            _check_membership_bounds(e.payload)


_AE_DECODER, _AE_CLS = _BUILDERS[KIND_APPEND_ENTRIES]


def decode_body(kind: int, body: bytes | memoryview) -> Any:
    """Decode the body of a ``kind`` message, validated against the schema first.

    Returns the ``openraft_py.types`` value for an RPC kind (``None`` for
    ``KIND_TRANSFER_LEADER_RESP``), or the ``Hello`` / ``HelloAck`` / ``ErrorBody``.
    Raises ``WireError`` for an unknown kind or a body that does not match the schema (wrong
    types, values out of bounds, truncated or trailing bytes, nesting deeper than the
    interpreter's recursion limit).
    """
    if kind == KIND_APPEND_ENTRIES:
        try:
            req = _AE_CLS(*_astuple(_AE_DECODER.decode(body)))
        except (msgspec.DecodeError, TypeError, ValueError, RecursionError) as e:
            raise WireError(f"malformed {KIND_NAMES[kind]} body: {e}") from None
        _check_append_entries_bounds(req)
        return req
    validator = _VALIDATORS.get(kind)
    if validator is None:
        raise WireError(f"unknown message kind {kind}")
    try:
        checked = validator.decode(body)
        built = _BUILDERS.get(kind)
        if built is None:
            return None if kind == KIND_TRANSFER_LEADER_RESP else checked
        decoder, cls = built
        return cls(*_astuple(decoder.decode(body)))
    except (msgspec.DecodeError, TypeError, ValueError, RecursionError) as e:
        # RecursionError: msgspec skipping a value nested deeper than the interpreter's
        # recursion limit (a snapshot chunk's data, held as ``msgspec.Raw``, is skipped).
        raise WireError(f"malformed {KIND_NAMES[kind]} body: {e}") from None


__all__ += ["FrameTooLarge"]
