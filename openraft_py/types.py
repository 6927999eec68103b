"""The Raft data model: identifiers, votes, log entries, membership and RPC messages.

Every type here is a frozen msgspec ``Struct``: cheap to build, hashable where its fields are,
and encodable to msgpack without glue (the TCP transport sends these as they are). The ones
made per log entry (``LogId``, ``Entry``, its payloads, ``Vote``) are ``gc=False``: they hold
no references that could form a cycle, and leaving hundreds of thousands of them per second
out of the garbage collector's generations keeps full collections (and event-loop stalls)
rare.

Conventions (see ``docs/design/log-pointers.md``):

- A log index starts at 0. ``Raft.initialize`` writes the first membership entry at
  ``LogId(0, 0)``. "No log id" is ``None``, never a sentinel ``LogId``.
- ``LogId`` is totally ordered by ``(term, index)``. ``LeaderId`` and ``Vote`` are only
  *partially* ordered: two leader ids of the same term naming different nodes are
  incomparable, so at most one leader exists per term.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import FunctionType, MemberDescriptorType
from typing import IO, Annotated, Any, ClassVar, Final, NoReturn, TypeVar

import msgspec

__all__ = [
    "NodeId",
    "LogId",
    "LeaderId",
    "Vote",
    "BasicNode",
    "Node",
    "ReadOnlyNodes",
    "MAX_MEMBERSHIP_NODES",
    "Membership",
    "StoredMembership",
    "EMPTY_STORED_MEMBERSHIP",
    "Blank",
    "Normal",
    "EntryPayload",
    "Entry",
    "LogState",
    "SnapshotMeta",
    "Snapshot",
    "ServerState",
    "ReadPolicy",
    "ClientWriteResponse",
    "VoteRequest",
    "VoteResponse",
    "AppendEntriesRequest",
    "AppendEntriesResponse",
    "InstallSnapshotRequest",
    "InstallSnapshotResponse",
    "TransferLeaderRequest",
    "RPCOption",
]

NodeId = int
"""A node's id. Any non-negative ``int``."""


def _safe_repr(value: object) -> str:
    """``repr(value)`` for a type's ``repr``, which must never raise: an ``int`` too long to
    write out (over ``sys.get_int_max_str_digits()`` digits) shows as its size in bits, a
    value whose own ``repr`` fails as its type and the error, and ``bytes`` longer than
    ``_REPR_BYTES`` by their first 16 bytes and length. ``repr(LogId(10**5000, 0))`` raised
    "Exceeds the limit (4300 digits) for integer string conversion" (in a log line, an
    error message)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _short_bytes_repr(value)
    try:
        return repr(value)
    except Exception as e:  # noqa: BLE001 - a repr must not raise
        if isinstance(value, int):
            return f"<an int of {value.bit_length()} bits>"
        return f"<a {type(value).__name__} whose repr failed: {type(e).__name__}>"


def _struct_repr(self: msgspec.Struct) -> str:
    """``Name(field=value, ...)`` as msgspec writes it, each value through ``_safe_repr``:
    the ``repr`` of the types here that have no short form of their own."""
    fields = ", ".join(f"{name}={_safe_repr(getattr(self, name))}" for name in self.__struct_fields__)
    return f"{type(self).__name__}({fields})"


class LogId(msgspec.Struct, frozen=True, order=True, array_like=True, gc=False):
    """Identifies one log entry: the ``term`` of the leader that wrote it and its ``index``.

    Totally ordered as the tuple ``(term, index)``; two entries with the same ``LogId`` carry
    the same payload on every node (the log matching property).
    """

    term: int
    index: int

    def __repr__(self) -> str:
        return f"{_safe_repr(self.term)}-{_safe_repr(self.index)}"


class LeaderId(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The leader (or candidate) a vote is for: ``(term, node_id)``.

    Partial order: ``(t1, a) < (t2, b)`` iff ``t1 < t2``; equal iff both fields are equal;
    otherwise (same term, different nodes) incomparable. Never compare as a tuple.
    """

    term: int
    node_id: NodeId

    def partial_cmp(self, other: LeaderId) -> int | None:
        """-1, 0 or 1 as ``self`` is less than, equal to or greater than ``other``; ``None``
        when they are incomparable (same term, different nodes)."""
        if self.term != other.term:
            return -1 if self.term < other.term else 1
        if self.node_id == other.node_id:
            return 0
        return None

    def __repr__(self) -> str:
        return f"T{_safe_repr(self.term)}-N{_safe_repr(self.node_id)}"


class Vote(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What a node has voted for: a ``LeaderId``, and whether that leader is established.

    ``committed=True`` means a quorum granted this vote (the leader is established); it orders
    above the same leader id uncommitted. Replaces the paper's ``(currentTerm, votedFor)``.
    """

    leader_id: LeaderId
    committed: bool = False

    @classmethod
    def new(cls, term: int, node_id: NodeId, committed: bool = False) -> Vote:
        """``Vote(LeaderId(term, node_id), committed)``."""
        return cls(LeaderId(term, node_id), committed)

    @property
    def term(self) -> int:
        """The term of the leader id."""
        return self.leader_id.term

    def partial_cmp(self, other: Vote) -> int | None:
        """Compare by leader id (partially), then ``committed`` (committed is greater).

        Two votes of the same term for different nodes are incomparable unless exactly one is
        committed: that one is greater."""
        c = self.leader_id.partial_cmp(other.leader_id)
        if c is None:
            # Same term, different nodes: at most one of them can be committed (granted by a
            # quorum), and an established leader outranks a mere candidate of its term.
            if self.committed == other.committed:
                return None
            return 1 if self.committed else -1
        if c != 0:
            return c
        if self.committed == other.committed:
            return 0
        return 1 if self.committed else -1

    def is_ge(self, other: Vote) -> bool:
        """``self >= other`` under the partial order (False when incomparable)."""
        c = self.partial_cmp(other)
        return c is not None and c >= 0

    def is_gt(self, other: Vote) -> bool:
        """``self > other`` under the partial order (False when incomparable)."""
        return self.partial_cmp(other) == 1

    def __repr__(self) -> str:
        return f"<{_safe_repr(self.leader_id)}:{'Q' if self.committed else '-'}>"


class BasicNode(msgspec.Struct, frozen=True):
    """What a cluster knows of a node besides its id: its address (``"host:port"``)."""

    addr: str = ""

    __repr__ = _struct_repr


Node = BasicNode


_K = TypeVar("_K")
_V = TypeVar("_V")


class _ReadOnlyDict(dict[_K, _V]):
    """A ``dict`` that refuses every change with ``TypeError`` naming ``_REFUSED`` (the
    subclass says what it is and what to do instead). Reading, comparing (with a plain
    ``dict`` too), pickling and copying work as for a ``dict``; it is built as one
    (``ReadOnlyNodes(d)``), at a dict's cost.

    The contract: every change made through the object is refused, by its methods
    (``__setitem__``, ``__delitem__``, ``__ior__``, ``clear``, ``pop``, ``popitem``,
    ``setdefault``, ``update``) and so by the operators and functions that call them.
    ``dict``'s own methods called unbound on it (``dict.__setitem__(d, k, v)``,
    ``dict.update(d, ...)``, ``dict.__init__(d, ...)``, also ``d.__init__(...)``, which is
    ``dict.__init__``) and C code writing through the dict API (``PyDict_SetItem``) are not:
    Python gives a ``dict`` subclass no way to refuse them. They bypass the type on purpose,
    as ``msgspec.structs.force_setattr`` bypasses a frozen struct, and are unsupported. It
    stays a ``dict`` subclass rather than a ``Mapping`` that holds one: the documented
    behaviour is a dict's (``isinstance(d, dict)``, ``d.copy()`` and ``d | {...}`` making
    plain dicts, ``json.dumps``, msgspec encoding). Neither a copy per reader (every reader
    of a node's metrics gets the same object) nor an ``__init__`` that changes nothing (the
    work moved to a ``__new__``: 0.36-0.44 us a build of 5 entries against 0.11, compiled,
    in a metrics build of about 1 us) is cheap enough for what it would close."""

    __slots__ = ()
    _REFUSED: ClassVar[str] = "this dict is read-only: make a dict of your own, e.g. dict(d)"

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(type(self)._REFUSED)

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))


class ReadOnlyNodes(_ReadOnlyDict[NodeId, BasicNode]):
    """``Membership.nodes``: a ``dict`` that refuses every change with ``TypeError``.

    A membership is frozen, and the one a program reads (``RaftMetrics.membership_config``,
    ``ClientWriteResponse.membership``, an entry's payload) is the node's own: changing its
    ``nodes`` in place changed the node's membership without any log entry (``nodes[4] =
    BasicNode(...)`` before ``add_learner(4, ...)`` made the call a no-op answering success,
    ``nodes.clear()`` made every later write wait for good). Make a dict of your own
    instead: ``dict(m.nodes)``, or ``dict(m.nodes) | {4: BasicNode(...)}`` (``m.nodes.copy()``
    and ``m.nodes | {...}`` also make a plain ``dict`` when run, but type checkers see
    ``Membership.nodes`` as a read-only ``Mapping``, which has neither). Reading, comparing
    (with a plain ``dict`` too), pickling and copying work as for a ``dict``.

    ``dict``'s methods called unbound on it (``dict.__setitem__(m.nodes, 4, ...)``) are not
    refused (``_ReadOnlyDict``): they change the node's own membership, with no log entry,
    as the refused calls did; never call them on it."""

    __slots__ = ()
    _REFUSED = (
        "Membership.nodes is read-only (a Membership is frozen, and this one may be the node's own): "
        "make a dict of your own, e.g. dict(m.nodes) or dict(m.nodes) | {node_id: BasicNode(addr)}"
    )


_REPR_IDS = 16
"""The most node ids a ``Membership``'s ``repr`` shows per config (and of its learners)."""
_REPR_NODES = 8
"""The most node addresses a ``Membership``'s ``repr`` shows."""
_REPR_ADDR = 64
"""The most characters a ``Membership``'s ``repr`` shows of one address."""


def _ordered(items: Any) -> list[Any]:
    """``items`` sorted when they can be (node ids are ints), else in their own order."""
    try:
        return sorted(items)
    except TypeError:
        return list(items)


def _addr_text(addr: object) -> str:
    """An address for a ``Membership``'s ``repr``: quoted, cut to ``_REPR_ADDR`` characters
    with its length when longer."""
    if isinstance(addr, str) and len(addr) > _REPR_ADDR:
        return f"{addr[:_REPR_ADDR - 16]!r}... ({len(addr)} characters)"
    text = _safe_repr(addr)
    return text if len(text) <= _REPR_ADDR else f"{text[:_REPR_ADDR - 16]}... ({len(text)} characters as written)"


def _ids_text(ids: Any, sep: str) -> str:
    """At most ``_REPR_IDS`` of ``ids``, in order, then their count when there are more."""
    ordered = _ordered(ids)
    text = sep.join(_safe_repr(i) for i in ordered[:_REPR_IDS])
    if len(ordered) > _REPR_IDS:
        text += f"{sep}... ({len(ordered)} ids)"
    return text


MAX_MEMBERSHIP_NODES: Final = 4096
"""The most nodes (voters and learners) one ``Membership`` holds, and so the most voters of
one of its configs. Every decoder of a membership refuses more, from the map's (the
array's) header before any node is decoded: the TCP wire (an AppendEntries' membership
entry, a snapshot's meta) and the stores reading back a log entry or a snapshot's meta with
a ``msgspec`` decoder of these types (``Membership`` declares it on its fields).
``Raft.add_learner`` refuses a learner past it (``MembershipTooLarge``); the other calls
cannot reach it (``validation.MAX_MEMBERS``, 1024, bounds ``initialize``, and
``change_membership`` takes only members). A membership entry of 2 million nodes, a
22.8 MiB frame, decoded and was taken in about 2.1 s, past the election timeouts; one of
4096 nodes decodes in about 1.3 ms. No cluster comes near it: every voter takes part in
every commit, and the leader replicates to every learner (``docs/design/bad-input.md``)."""

_Voters = Annotated[frozenset[NodeId], msgspec.Meta(max_length=MAX_MEMBERSHIP_NODES)]
"""A voter config as decoders see it: at most ``MAX_MEMBERSHIP_NODES`` ids."""


class Membership(msgspec.Struct, frozen=True, tag=True):
    """A cluster configuration: ``configs`` are the voter sets, ``nodes`` every member's node.

    One config is a uniform membership; two is a joint one (``[C_old, C_new]``) during a
    change. Learners are the nodes in ``nodes`` that are in no config.
    Invariant: every voter id of every config is a key of ``nodes``.

    ``nodes`` given as a ``dict`` is kept as a copy of it that cannot be changed
    (``ReadOnlyNodes``, a ``dict`` refusing changes with ``TypeError``), so the membership
    stays what it was made as. Type checkers see it as a read-only ``Mapping``: a program
    that changes it (``m.nodes[4] = ...``, ``m.nodes.clear()``) fails ``mypy --strict``
    (typed ``dict``, it passed and raised ``TypeError`` when run). Give the constructor a
    ``dict`` (a membership with another kind of mapping is refused as malformed); for a
    ``dict`` of your own, ``dict(m.nodes)``.
    """

    # Decoders refuse a config or a ``nodes`` map of more than ``MAX_MEMBERSHIP_NODES`` from
    # its header (msgspec checks ``max_length`` before decoding an element). Type checkers
    # see the plain types; a membership made in Python is not checked (the API is).
    configs: tuple[_Voters, ...]
    nodes: Annotated[Mapping[NodeId, BasicNode], msgspec.Meta(max_length=MAX_MEMBERSHIP_NODES)]

    def __post_init__(self) -> None:
        # Not another type: that is left for validation to refuse with its own message.
        if type(self.nodes) is dict:
            msgspec.structs.force_setattr(self, "nodes", ReadOnlyNodes(self.nodes))

    @classmethod
    def new(
        cls,
        configs: list[set[NodeId]] | list[frozenset[NodeId]] | tuple[frozenset[NodeId], ...],
        nodes: Mapping[NodeId, BasicNode] | None = None,
    ) -> Membership:
        """Build a membership; ``nodes`` (copied: any mapping, another membership's ``nodes``
        too) defaults to ``BasicNode()`` for every voter."""
        cfgs = tuple(frozenset(c) for c in configs)
        all_nodes: dict[NodeId, BasicNode] = dict(nodes or {})
        for c in cfgs:
            for nid in c:
                all_nodes.setdefault(nid, BasicNode())
        return cls(cfgs, dict(sorted(all_nodes.items())))

    def voter_ids(self) -> frozenset[NodeId]:
        """Every node that votes in some config."""
        out: frozenset[NodeId] = frozenset()
        for c in self.configs:
            out = out | c
        return out

    def learner_ids(self) -> frozenset[NodeId]:
        """Every node that is in ``nodes`` but in no config."""
        return frozenset(self.nodes) - self.voter_ids()

    def is_voter(self, node_id: NodeId) -> bool:
        """Whether ``node_id`` votes in some config."""
        return any(node_id in c for c in self.configs)

    def is_joint(self) -> bool:
        """Whether this is a joint membership (two configs)."""
        return len(self.configs) > 1

    def __repr__(self) -> str:
        """The configs and the learners, then each member's address (``[{1,2,3}]+L[4]
        {1:'10.0.0.1:5001', ...}``; left out when no member has one). Bounded for a large
        cluster: at most 16 ids per config and 16 learners, 8 addresses, each cut to 64
        characters, then the count."""
        cfgs = ",".join("{" + _ids_text(c, ",") + "}" for c in self.configs)
        learners = self.learner_ids()
        text = f"[{cfgs}]" + (f"+L[{_ids_text(learners, ', ')}]" if learners else "")
        addrs = {nid: getattr(node, "addr", node) for nid, node in self.nodes.items()}
        if any(addr != "" for addr in addrs.values()):
            shown = [f"{_safe_repr(nid)}:{_addr_text(addr)}"
                     for nid, addr in _ordered(addrs.items())[:_REPR_NODES]]
            if len(addrs) > _REPR_NODES:
                shown.append(f"... ({len(addrs)} nodes)")
            text += " {" + ", ".join(shown) + "}"
        return text


class StoredMembership(msgspec.Struct, frozen=True):
    """A membership and the id of the log entry that carried it (``None`` for the empty
    initial membership)."""

    log_id: LogId | None
    membership: Membership

    __repr__ = _struct_repr


EMPTY_MEMBERSHIP = Membership((), {})
EMPTY_STORED_MEMBERSHIP = StoredMembership(None, EMPTY_MEMBERSHIP)


_REPR_BYTES = 32
"""The longest ``bytes`` field a ``repr`` shows whole (``Normal.data``, a snapshot chunk's
``data``); a longer one shows its first 16 bytes and its length: a 4 MiB payload made a
16 MiB ``repr`` of a log line."""


def _short_bytes_repr(data: bytes | bytearray | memoryview) -> str:
    """``repr(data)`` when ``data`` is at most ``_REPR_BYTES`` long; else its first 16 bytes
    and its length (``b'0123456789abcdef'... (4194304 bytes)``)."""
    if len(data) <= _REPR_BYTES:
        return repr(data)
    return f"{bytes(data[:16])!r}... ({len(data)} bytes)"


class Blank(msgspec.Struct, frozen=True, tag=True, gc=False):
    """The payload of a new leader's no-op entry."""


class Normal(msgspec.Struct, frozen=True, tag=True, gc=False):
    """An application payload: opaque bytes the state machine interprets.

    Its ``repr`` shows a ``data`` longer than 32 bytes by its first 16 bytes and its
    length."""

    data: bytes

    def __repr__(self) -> str:
        return f"Normal(data={_short_bytes_repr(self.data)})"


EntryPayload = Blank | Normal | Membership
"""What an ``Entry`` carries."""

BLANK = Blank()


class Entry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One log entry."""

    log_id: LogId
    payload: EntryPayload

    def __repr__(self) -> str:
        p = self.payload
        if isinstance(p, Normal):
            d = p.data if len(p.data) <= 16 else p.data[:16] + b"..."
            return f"{_safe_repr(self.log_id)} Normal {d!r}"
        if isinstance(p, Blank):
            return f"{_safe_repr(self.log_id)} Blank"
        return f"{_safe_repr(self.log_id)} Membership {_safe_repr(p)}"


class LogState(msgspec.Struct, frozen=True):
    """What a log store holds: the last purged and the last log id (both may be ``None``).

    When the log is empty after a purge, ``last_log_id == last_purged_log_id``.
    """

    last_purged_log_id: LogId | None
    last_log_id: LogId | None

    __repr__ = _struct_repr


class SnapshotMeta(msgspec.Struct, frozen=True):
    """Describes a snapshot: the last log id it covers, the membership as of that point and a
    unique id."""

    last_log_id: LogId | None
    last_membership: StoredMembership
    snapshot_id: str

    __repr__ = _struct_repr


class Snapshot:
    """A snapshot: its meta and a readable binary file object holding the data.

    ``data`` is read in chunks when sent, so a snapshot never needs to fit in memory twice.
    """

    __slots__ = ("meta", "data")

    def __init__(self, meta: SnapshotMeta, data: IO[bytes]) -> None:
        self.meta = meta
        self.data = data

    def __repr__(self) -> str:
        return f"Snapshot({self.meta!r})"


class ServerState(enum.Enum):
    """The role a node plays right now."""

    LEARNER = "Learner"
    FOLLOWER = "Follower"
    CANDIDATE = "Candidate"
    LEADER = "Leader"
    SHUTDOWN = "Shutdown"


class ReadPolicy(enum.Enum):
    """How ``Raft.ensure_linearizable`` confirms leadership."""

    READ_INDEX = "ReadIndex"
    """Confirm with a quorum heartbeat sent after the request (always safe)."""
    LEASE_READ = "LeaseRead"
    """Trust a quorum ack received within the leader lease (no RPC; relies on bounded drift)."""


class ClientWriteResponse(msgspec.Struct, frozen=True):
    """The answer to a committed and applied client write.

    ``data`` is what the state machine returned for the entry; ``membership`` is set when the
    entry was a membership change.
    """

    log_id: LogId
    data: Any = None
    membership: Membership | None = None

    __repr__ = _struct_repr


# ---------------------------------------------------------------------------------------------
# RPC messages. Rejections are values (fields), never exceptions.


class VoteRequest(msgspec.Struct, frozen=True):
    """A candidate asks for a vote. ``last_log_id`` is the candidate's last log id."""

    vote: Vote
    last_log_id: LogId | None
    pre_vote: bool = False
    transfer_from: Vote | None = None
    """Set when the leader ``transfer_from`` handed leadership to this candidate: a voter
    whose vote is that leader's grants without waiting out its leader stickiness (that
    leader gave up its lease before handing over)."""

    __repr__ = _struct_repr


class VoteResponse(msgspec.Struct, frozen=True):
    """The answer to a ``VoteRequest``: the responder's vote after handling it, whether the
    vote was granted, and the responder's last log id. ``pre_vote`` echoes the request's: a
    pre-vote grant changes nothing on the responder."""

    vote: Vote
    vote_granted: bool
    last_log_id: LogId | None
    pre_vote: bool = False

    __repr__ = _struct_repr


class AppendEntriesRequest(msgspec.Struct, frozen=True):
    """Replicate ``entries`` after ``prev_log_id``; also the heartbeat (no entries).

    ``leader_commit`` is the leader's committed log id.
    """

    vote: Vote
    prev_log_id: LogId | None
    entries: list[Entry]
    leader_commit: LogId | None

    def last_log_id(self) -> LogId | None:
        """The last log id this request makes the follower hold (prev when empty)."""
        return self.entries[-1].log_id if self.entries else self.prev_log_id

    __repr__ = _struct_repr


class AppendEntriesResponse(msgspec.Struct, frozen=True):
    """The answer to an ``AppendEntriesRequest``.

    - ``success``: the follower's log matches the leader's up to ``matching``.
    - not ``success`` and ``vote`` greater than the request's: the leader is stale.
    - not ``success`` otherwise: ``prev_log_id`` did not match; ``conflict_hint`` is the
      next index the leader should try (fast back-off, thesis 5.3).
    """

    vote: Vote
    success: bool
    matching: LogId | None = None
    conflict_hint: int = -1

    __repr__ = _struct_repr


class InstallSnapshotRequest(msgspec.Struct, frozen=True):
    """One chunk of a snapshot: ``data`` at byte ``offset``; ``done`` on the last chunk.

    Its ``repr`` shows a ``data`` longer than 32 bytes by its first 16 bytes and its
    length (a chunk is up to ``Config.snapshot_max_chunk_size``, 3 MiB by default)."""

    vote: Vote
    meta: SnapshotMeta
    offset: int
    data: bytes
    done: bool

    def __repr__(self) -> str:
        return (f"InstallSnapshotRequest(vote={self.vote!r}, meta={self.meta!r}, offset={_safe_repr(self.offset)}, "
                f"data={_safe_repr(self.data)}, done={_safe_repr(self.done)})")


class InstallSnapshotResponse(msgspec.Struct, frozen=True):
    """The answer to an ``InstallSnapshotRequest``: the responder's vote."""

    vote: Vote

    __repr__ = _struct_repr


class TransferLeaderRequest(msgspec.Struct, frozen=True):
    """The leader ``from_leader`` asks ``to`` to start an election right away once its log
    reaches ``last_log_id``."""

    from_leader: Vote
    to: NodeId
    last_log_id: LogId | None

    __repr__ = _struct_repr


class RPCOption(msgspec.Struct, frozen=True):
    """Per-call options a ``RaftNetwork`` receives: the timeouts of that one call, in seconds.

    Each call has its own: an AppendEntries' ``hard_ttl`` grows with the payload bytes it and
    the requests to the same target ahead of it carry (``Config.replication_min_rate``), a
    snapshot chunk's is ``Config.install_snapshot_timeout`` plus the time its bytes take at
    that rate, a vote's and a ``TransferLeader`` notice's ``Config.election_timeout_min``."""

    hard_ttl: float = 1.0
    """Seconds after which the call must have raised ``Timeout`` if no answer came."""
    soft_ttl: float = 0.5
    """Openraft's softer limit, at most ``hard_ttl`` (half of it for an AppendEntries): a
    transport may use it for its own retries within the call; the node reads only
    ``hard_ttl``, and the TCP transport too."""

    __repr__ = _struct_repr


# The engine's field readers (``docs/design/performance.md``, the fortieth round). Compiled
# code reading ``lid.index`` takes CPython's generic attribute lookup (the type's cache, the
# member descriptor, its getter: about 160 instructions), a hundred times and more a write. In
# the compiled build (``types.pxd``) the readers below load the field from its slot when the
# object is exactly the class (its offset read once, here, from that class's own descriptor);
# anything else, a subclass included, is read by name. The pure build has no offsets (-1):
# the readers are plain attribute reads.


def _slot_offset(cls: type, name: str) -> int:
    """The offset of ``cls``'s field ``name`` in its instances, or -1 (read it by name): the
    pure build, or not a slot of ``cls``'s own holding an object."""
    d = cls.__dict__.get(name)
    if not _COMPILED or type(d) is not MemberDescriptorType or d.__objclass__ is not cls:
        return -1
    return _member_offset(d, cls.__basicsize__)  # type: ignore[name-defined, no-any-return] # noqa: F821 - types.pxd


# Whether this module is the compiled extension (``types.pxd``'s C helpers exist), told by
# what Cython makes of a function (its own function type, never a Python function), not by
# the file's name: the pure module also runs from a ``.pyc`` alone (a sourceless install, a
# frozen application), where calling the C helper would fail the import.
_COMPILED = type(_slot_offset) is not FunctionType


_LOG_ID_TERM = _slot_offset(LogId, "term")
_LOG_ID_INDEX = _slot_offset(LogId, "index")
_ENTRY_LOG_ID = _slot_offset(Entry, "log_id")
_AE_VOTE = _slot_offset(AppendEntriesRequest, "vote")
_AE_PREV_LOG_ID = _slot_offset(AppendEntriesRequest, "prev_log_id")
_AE_ENTRIES = _slot_offset(AppendEntriesRequest, "entries")
_AE_LEADER_COMMIT = _slot_offset(AppendEntriesRequest, "leader_commit")


def _log_id_term(lid: LogId) -> int:
    """``lid.term``."""
    if _LOG_ID_TERM >= 0 and type(lid) is LogId:
        return _read_slot(lid, _LOG_ID_TERM, "term")  # type: ignore[name-defined, no-any-return] # noqa: F821 - types.pxd
    return lid.term


def _log_id_index(lid: LogId) -> int:
    """``lid.index``."""
    if _LOG_ID_INDEX >= 0 and type(lid) is LogId:
        return _read_slot(lid, _LOG_ID_INDEX, "index")  # type: ignore[name-defined, no-any-return] # noqa: F821 - types.pxd
    return lid.index


def _entry_log_id(e: Entry) -> LogId:
    """``e.log_id``."""
    if _ENTRY_LOG_ID >= 0 and type(e) is Entry:
        return _read_slot(e, _ENTRY_LOG_ID, "log_id")  # type: ignore[name-defined, no-any-return] # noqa: F821 - types.pxd
    return e.log_id


def _append_entries_vote(req: AppendEntriesRequest) -> Vote:
    """``req.vote``."""
    if _AE_VOTE >= 0 and type(req) is AppendEntriesRequest:
        return _read_slot(req, _AE_VOTE, "vote")  # type: ignore[name-defined, no-any-return] # noqa: F821 - types.pxd
    return req.vote


def _append_entries_prev_log_id(req: AppendEntriesRequest) -> LogId | None:
    """``req.prev_log_id``."""
    if _AE_PREV_LOG_ID >= 0 and type(req) is AppendEntriesRequest:
        return _read_slot(req, _AE_PREV_LOG_ID, "prev_log_id")  # type: ignore[name-defined, no-any-return] # noqa: F821 - types.pxd
    return req.prev_log_id


def _append_entries_entries(req: AppendEntriesRequest) -> list[Entry]:
    """``req.entries``."""
    if _AE_ENTRIES >= 0 and type(req) is AppendEntriesRequest:
        return _read_slot(req, _AE_ENTRIES, "entries")  # type: ignore[name-defined, no-any-return] # noqa: F821 - types.pxd
    return req.entries


def _append_entries_leader_commit(req: AppendEntriesRequest) -> LogId | None:
    """``req.leader_commit``."""
    if _AE_LEADER_COMMIT >= 0 and type(req) is AppendEntriesRequest:
        return _read_slot(req, _AE_LEADER_COMMIT, "leader_commit")  # type: ignore[name-defined, no-any-return] # noqa: F821 - types.pxd
    return req.leader_commit


def _fields_read_from_slots() -> bool:
    """Whether the readers above load their fields from the slots (the compiled build), for
    the tests."""
    return min(_LOG_ID_TERM, _LOG_ID_INDEX, _ENTRY_LOG_ID, _AE_VOTE, _AE_PREV_LOG_ID, _AE_ENTRIES, _AE_LEADER_COMMIT) >= 0
