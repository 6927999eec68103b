"""Validation of everything that enters a node from outside: the caller's arguments to the
``Raft`` methods and the requests a transport hands over from peers.

Two layers, both run in the ``Raft`` method before anything reaches the node's core, so a
refused call changes nothing, logs nothing and never stops the node
(``docs/design/bad-input.md``):

- **API arguments** (``check_node_id``, ``check_payload``, ...): a caller's mistake raises
  ``TypeError`` (wrong type) or ``ValueError`` (right type, value out of range).
- **Peer requests** (``check_append_entries``, ``check_vote``, ``check_install_snapshot``,
  ``check_transfer_leader``): a malformed request raises ``InvalidRequest`` naming the RPC and
  the field. msgspec Structs do not validate on construction, so every field is checked here,
  nested ones included.

Limits. Terms, log indexes and node ids are non-negative ``int``\\s (``bool`` is refused) no
greater than ``MAX_TERM``, ``MAX_INDEX`` and ``MAX_NODE_ID``. The compiled kernels hold them
as C ``int64``; terms and indexes stop at ``2**62 - 1`` so that every ``+ 1`` or ``+ count``
the node does on an accepted value stays far from the ``int64`` ceiling and from the
``INF_INDEX`` (``2**63 - 1``) sentinel of the quorum kernel. Node ids are never computed
with, so they may use the whole non-negative ``int64`` range. The engine never raises its
term past ``MAX_TERM`` (a node at ``MAX_TERM`` does not campaign), so both builds behave the
same for every accepted input. A wire schema should declare the same bounds.

The AppendEntries check runs for every replicated batch; it is written as one flat loop over
the entries with ``type(x) is T`` tests (cheaper than ``isinstance`` and it refuses ``bool``
and ``int`` subclasses alike).
"""

from __future__ import annotations

import inspect
import itertools
import math
import types
from collections.abc import Iterable, Mapping
from typing import Any

from ._core import plain_entries_prefix
from .errors import EntryTooLarge, InvalidRequest
from .types import (
    MAX_MEMBERSHIP_NODES,
    AppendEntriesRequest,
    BasicNode,
    Blank,
    Entry,
    InstallSnapshotRequest,
    LeaderId,
    LogId,
    Membership,
    Normal,
    ReadOnlyNodes,
    SnapshotMeta,
    StoredMembership,
    TransferLeaderRequest,
    Vote,
    VoteRequest,
    _append_entries_entries,
    _append_entries_leader_commit,
    _append_entries_prev_log_id,
    _append_entries_vote,
    _entry_log_id,
    _log_id_index,
    _log_id_term,
)

__all__ = [
    "MAX_TERM",
    "MAX_INDEX",
    "MAX_NODE_ID",
    "MAX_ADDR_LEN",
    "MAX_MEMBERS",
    "MAX_WRITE_MANY",
    "check_node_id",
    "check_index",
    "check_seconds",
    "check_payload",
    "check_payloads",
    "check_entry_sizes",
    "check_node",
    "check_members",
    "check_voters",
    "check_bool",
    "check_append_entries",
    "check_vote",
    "check_install_snapshot",
    "check_transfer_leader",
]

MAX_TERM: int = 2**62 - 1
"""The greatest term a node accepts from a peer or reaches itself (a node at ``MAX_TERM``
does not campaign)."""

MAX_INDEX: int = 2**62 - 1
"""The greatest log index a node accepts (in a log id, an entry, a purge bound)."""

MAX_NODE_ID: int = 2**63 - 1
"""The greatest node id (the ``int64`` maximum)."""

MAX_ADDR_LEN: int = 1024
"""The longest ``BasicNode.addr`` an API call accepts: the TCP wire schema's bound
(``network.wire.MAX_ADDR_LEN``), so a membership entry a caller makes always replicates."""

MAX_MEMBERS: int = 1024
"""The most node ids one call takes: ``Raft.initialize``'s members, ``change_membership``'s
voters, ``remove_learners``' ids (and ``Wait.voter_ids``'). An iterable that yields more is
refused with ``ValueError`` once it passed that many, read no further: an endless one
(``itertools.count()``, a generator that never stops) hung the caller's event loop in the
check. Far above any cluster Raft runs (every voter takes part in every commit). A
membership may still grow past it one ``add_learner`` at a time."""

MAX_WRITE_MANY: int = 1_048_576
"""The most payloads one ``Raft.client_write_many`` call takes (2**20). More is refused
with ``ValueError`` before anything is logged: a list or tuple by its length, another
iterable once it yielded one more, read no further: an endless one
(``iter(lambda: b"x", None)``) hung the caller's event loop, and every node on it, while
the check filled memory. Far above a useful batch (``Config.max_payload_entries``, 300,
entries go in one AppendEntries); split a larger load into several calls."""


_SHOWN_CHARS = 80
"""About the most characters of a value an error message of these checks shows."""


def shown(value: object) -> str:
    """``repr(value)`` for a check's error message, cut to about ``_SHOWN_CHARS`` characters
    with its length when longer (``'xxxxxxxx'... (16777218 characters)``); an ``int`` too
    long to write out (over ``sys.get_int_max_str_digits()`` digits) by its size in bits. A
    16 MiB string given as a node id made a 16 MiB message, and ``10**5000`` failed with
    "Exceeds the limit (4300 digits) for integer string conversion" instead of the check's
    own error. Used on the error paths only (also by ``Raft.wait``'s conditions and
    ``Raft.ensure_linearizable``)."""
    try:
        text = repr(value)
    except Exception as e:  # noqa: BLE001 - the check's error matters, not the repr's
        if isinstance(value, int):
            return f"an int of {value.bit_length()} bits"
        return f"a {type(value).__name__} whose repr failed ({type(e).__name__})"
    if len(text) <= _SHOWN_CHARS:
        return text
    return f"{text[:_SHOWN_CHARS - 16]}... ({len(text)} characters)"


# -- API arguments (TypeError / ValueError) ----------------------------------------------------


def check_node_id(value: Any, what: str = "node id") -> int:
    """Return ``value`` as a plain ``int`` if it is a node id: an ``int`` (not ``bool``) in
    ``[0, MAX_NODE_ID]``. ``TypeError`` for another type, ``ValueError`` out of range."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, got {type(value).__name__} {shown(value)}")
    if not 0 <= value <= MAX_NODE_ID:
        raise ValueError(f"{what} must be within [0, {MAX_NODE_ID}], got {shown(value)}")
    return int(value)


def check_index(value: Any, what: str = "log index") -> int:
    """Return ``value`` as a plain ``int`` if it is a log index: an ``int`` (not ``bool``) in
    ``[0, MAX_INDEX]``. ``TypeError`` for another type, ``ValueError`` out of range."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, got {type(value).__name__} {shown(value)}")
    if not 0 <= value <= MAX_INDEX:
        raise ValueError(f"{what} must be within [0, {MAX_INDEX}], got {shown(value)}")
    return int(value)


def check_seconds(value: object, what: str, *, zero_ok: bool = False) -> float:
    """Return ``value`` (a setting in seconds, or another rate or amount) as a ``float`` if it
    is a finite real number above 0 (at least 0 with ``zero_ok``). ``TypeError`` naming
    ``what`` for anything else than an ``int`` or a ``float`` (``bool`` included),
    ``ValueError`` for NaN, an infinity or a number out of range: a NaN timer fires at once
    on asyncio and cannot be set on uvloop, an infinite one never fires."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, got {type(value).__name__} {shown(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{what} must be finite, got {shown(value)}") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {shown(value)}")
    if number < 0 or (number == 0 and not zero_ok):
        raise ValueError(f"{what} must be {'at least' if zero_ok else 'above'} 0, got {shown(value)}")
    return number


def check_payload(data: Any) -> bytes:
    """Return an entry payload as ``bytes``: ``bytes`` as is, ``bytearray``, ``memoryview``
    and the subclasses of ``bytearray`` and ``bytes`` (``numpy.bytes_``: ``bytes`` to a type
    checker, it was refused) copied to a plain ``bytes``, never a subclass: a subclass's own
    contents (its buffer), not what its ``__bytes__`` or ``__len__`` say. Anything else
    (``None``, ``str``, ``int``, ...) raises ``TypeError``."""
    t = type(data)
    if t is bytes:
        return data  # type: ignore[no-any-return]
    if t is bytearray or t is memoryview:
        return bytes(data)
    if isinstance(data, (bytes, bytearray)):
        # A subclass: its own contents, read through its buffer. ``bytes(data)`` would call
        # its ``__bytes__``, whose answer ``bytes()`` hands back as it is when it is of a
        # subclass of ``bytes`` too: its ``__len__`` was what ``max_entry_bytes`` measured,
        # and every follower refused the entry ("Normal.data must be bytes"), for good.
        return bytes(memoryview(data))
    raise TypeError(f"a client write payload must be bytes, bytearray or memoryview, got {t.__name__}")


def check_payloads(datas: Any) -> list[bytes]:
    """``check_payload`` over an iterable of payloads (a bytes-like object itself, e.g. one
    ``bytes``, is refused: it is not a list of payloads). ``TypeError`` names the position;
    ``ValueError`` for more than ``MAX_WRITE_MANY`` payloads (an iterable is read no further
    than the one that is too many)."""
    t = type(datas)
    items: Iterable[Any]
    if t is list or t is tuple:
        if len(datas) > MAX_WRITE_MANY:
            raise ValueError(f"client_write_many takes at most {MAX_WRITE_MANY} payloads (MAX_WRITE_MANY), got {len(datas)}")
        items = datas
    elif isinstance(datas, (bytes, bytearray, memoryview, str)) or not isinstance(datas, Iterable):
        raise TypeError(f"client_write_many takes an iterable of payloads, got {t.__name__}")
    else:
        items = itertools.islice(datas, MAX_WRITE_MANY + 1)  # one more tells it is too many
    out: list[bytes] = []
    for i, d in enumerate(items):
        try:
            out.append(check_payload(d))
        except TypeError as e:
            raise TypeError(f"payload {i}: {e}") from None
    if len(out) > MAX_WRITE_MANY:
        raise ValueError(
            f"client_write_many takes at most {MAX_WRITE_MANY} payloads (MAX_WRITE_MANY): its iterable yields more"
        )
    return out


def check_entry_sizes(payloads: list[bytes], limit: int) -> None:
    """``client_write_many``'s payloads: refuse with ``EntryTooLarge`` (a ``ValueError``)
    the first one longer than ``limit`` bytes (``Config.max_entry_bytes``), naming its
    position. (``client_write`` checks its one payload inline.)"""
    for i, d in enumerate(payloads):
        if len(d) > limit:
            raise EntryTooLarge(len(d), limit, i)


def check_node(node: Any, what: str = "node") -> BasicNode:
    """Return ``node`` if it is a ``BasicNode`` (exactly: peers refuse a subclass in a
    membership, as a wire decoder never makes one) whose ``addr`` is a ``str``; else
    ``TypeError``. ``ValueError`` if ``addr`` is longer than ``MAX_ADDR_LEN``."""
    if type(node) is not BasicNode:
        raise TypeError(f"{what} must be a BasicNode, got {type(node).__name__} {shown(node)}")
    if type(node.addr) is not str:
        raise TypeError(f"{what}.addr must be a str, got {type(node.addr).__name__}")
    if len(node.addr) > MAX_ADDR_LEN:
        raise ValueError(f"{what}.addr is {len(node.addr)} characters long (at most {MAX_ADDR_LEN})")
    return node


def _node_ids(ids: Iterable[Any], what: str, kind: str) -> list[int]:
    """The node ids the iterable ``ids`` (``what``: the argument's name) yields, in order:
    each checked by ``check_node_id`` (named ``"<kind> id"``). ``ValueError`` for an id given
    twice (a typo for another id, likely: that node would have been left out without a
    word) and, without reading further, for more than ``MAX_MEMBERS`` ids (an endless
    iterable, ``itertools.count()``, hung the caller's event loop)."""
    out: list[int] = []
    seen: set[int] = set()
    for m in ids:
        nid = check_node_id(m, f"{kind} id")
        if nid in seen:
            raise ValueError(f"{kind} id {nid} is given twice")
        if len(out) == MAX_MEMBERS:
            raise ValueError(f"{what} names more than {MAX_MEMBERS} nodes (MAX_MEMBERS)")
        seen.add(nid)
        out.append(nid)
    return out


def check_members(members: Any) -> dict[int, BasicNode]:
    """``Raft.initialize``'s members: a mapping of node ids to ``BasicNode``s, or an iterable
    of node ids (each gets ``BasicNode()``). Returns the id -> node dict; ``TypeError`` for a
    wrong type, ``ValueError`` for an id out of range, a repeated id, no member or more than
    ``MAX_MEMBERS``."""
    if isinstance(members, Mapping):
        if len(members) > MAX_MEMBERS:
            raise ValueError(f"members names {len(members)} nodes, more than {MAX_MEMBERS} (MAX_MEMBERS)")
        nodes = {check_node_id(k, "member id"): check_node(v, f"member {k!r}") for k, v in members.items()}
    elif isinstance(members, (str, bytes, bytearray, memoryview)) or not isinstance(members, Iterable):
        raise TypeError(
            f"members must be a mapping of node ids to BasicNode or an iterable of node ids, "
            f"got {type(members).__name__}"
        )
    else:
        nodes = {nid: BasicNode() for nid in _node_ids(members, "members", "member")}
    if not nodes:
        raise ValueError("members must name at least one node")
    return nodes


def check_voters(members: Any) -> set[int]:
    """``Raft.change_membership``'s voters (and ``Wait.voter_ids``'): an iterable of node
    ids. Returns them as a set; ``TypeError``/``ValueError`` as ``check_node_id``, and
    ``ValueError`` for an id given twice (``[1, 2, 2]``: the change was made to ``{1, 2}``
    without a word, where the repeated id was likely a typo for another node) or more than
    ``MAX_MEMBERS`` ids."""
    if isinstance(members, (str, bytes, bytearray, memoryview, Mapping)) or not isinstance(members, Iterable):
        raise TypeError(f"voters must be an iterable of node ids, got {type(members).__name__}")
    return set(_node_ids(members, "voters", "voter"))


def check_learner_ids(ids: Any) -> set[int]:
    """``Raft.remove_learners``'s ids: an iterable of node ids. Returns them as a set;
    ``TypeError``/``ValueError`` as ``check_node_id``, and ``ValueError`` for an id given
    twice (a typo for another id, likely: that one would have stayed a member) or more than
    ``MAX_MEMBERS`` ids."""
    if isinstance(ids, (str, bytes, bytearray, memoryview, Mapping)) or not isinstance(ids, Iterable):
        raise TypeError(f"ids must be an iterable of node ids, got {type(ids).__name__}")
    return set(_node_ids(ids, "ids", "learner"))


NETWORK_FACTORY_METHODS = ("new_client",)
"""The methods of ``network.RaftNetworkFactory``."""

LOG_STORAGE_METHODS = (
    "append", "get_log_reader", "get_log_state", "purge", "read_committed", "read_vote",
    "save_committed", "save_vote", "truncate_after", "try_get_log_entries",
)
"""The methods of ``storage.RaftLogStorage`` (its ``RaftLogReader`` part included)."""

STATE_MACHINE_METHODS = (
    "applied_state", "apply", "begin_receiving_snapshot", "get_current_snapshot",
    "get_snapshot_builder", "install_snapshot",
)
"""The methods of ``storage.RaftStateMachine``."""


def check_implements(obj: Any, what: str, protocol: str, methods: tuple[str, ...]) -> None:
    """``TypeError`` unless ``obj`` is an instance with a callable attribute for each of
    ``methods`` (``Raft.new``'s storage and network: a structural check, as the protocols
    are structural; it names what is missing, and a class passed instead of an instance)."""
    if isinstance(obj, type):
        raise TypeError(f"{what} must be a {protocol} instance, got the class {obj.__name__} itself "
                        f"(pass {obj.__name__}(...))")
    missing = [m for m in methods if not callable(getattr(obj, m, None))]
    if missing:
        raise TypeError(f"{what} must implement {protocol}: {type(obj).__name__} has no method "
                        f"{', '.join(missing)}")


PLAIN_METHODS = frozenset({"new_client", "forget", "check_config", "check_node", "get_log_reader",
                           "append_durable", "get_snapshot_builder"})
"""The methods of the storage and network protocols that the node calls without awaiting
what they return (plain ``def``), the optional ones included (``forget``, ``check_config``,
``check_node``, ``append_durable``). Every other method of ``NETWORK_FACTORY_METHODS``,
``LOG_STORAGE_METHODS`` and ``STATE_MACHINE_METHODS`` is a coroutine function."""


def _plain_def(fn: Any) -> bool:
    """Whether ``fn`` is certainly not a coroutine function: a Python function, or a method
    of one, defined with ``def`` and not wrapping another (no ``__wrapped__``: a decorated
    method may return a coroutine)."""
    fn = getattr(fn, "__func__", fn)
    return type(fn) is types.FunctionType and not hasattr(fn, "__wrapped__") and not inspect.iscoroutinefunction(fn)


def check_method_kinds(obj: Any, what: str, methods: tuple[str, ...]) -> None:
    """``TypeError`` naming the method when ``obj`` (which has ``methods``: see
    ``check_implements``) defines one of ``PLAIN_METHODS`` present on it with ``async def``
    (the node would use the coroutine it returns as the result, or drop it unrun: an
    ``append_durable`` that never appends), or one of the other ``methods`` with a plain
    ``def`` (the node awaits what it returns, and stopped at the first call with "object
    NoneType can't be used in 'await' expression"). A method whose kind cannot be told (a
    decorated one, a callable object, a compiled one) passes."""
    cls = type(obj).__name__
    for m in sorted(PLAIN_METHODS):
        fn = getattr(obj, m, None)
        if fn is not None and inspect.iscoroutinefunction(fn):
            raise TypeError(f"{what}.{m} must be a plain method (def), not async def: the node calls "
                            f"{cls}.{m}() and uses what it returns without awaiting it")
    for m in methods:
        if m not in PLAIN_METHODS and _plain_def(getattr(obj, m)):
            raise TypeError(f"{what}.{m} must be a coroutine function (async def): {cls}.{m} is a plain def, "
                            f"and the node awaits what it returns")


def check_bool(value: Any, what: str) -> bool:
    """Return ``value`` if it is a ``bool``; else ``TypeError`` (``0``/``1``/``None`` too)."""
    if type(value) is not bool:
        raise TypeError(f"{what} must be a bool, got {type(value).__name__} {shown(value)}")
    return value


# -- peer requests (InvalidRequest) -------------------------------------------------------------


def _bad(rpc: str, msg: str) -> InvalidRequest:
    return InvalidRequest(rpc, msg)


def _check_vote(rpc: str, what: str, v: Any) -> int:
    """Check a ``Vote`` and return its term."""
    if type(v) is not Vote:
        raise _bad(rpc, f"{what} must be a Vote, got {type(v).__name__}")
    lid = v.leader_id
    if type(lid) is not LeaderId:
        raise _bad(rpc, f"{what}.leader_id must be a LeaderId, got {type(lid).__name__}")
    term = lid.term
    nid = lid.node_id
    if type(term) is not int or not 0 <= term <= MAX_TERM:
        raise _bad(rpc, f"{what} term must be an int within [0, {MAX_TERM}], got {shown(term)}")
    if type(nid) is not int or not 0 <= nid <= MAX_NODE_ID:
        raise _bad(rpc, f"{what} node id must be an int within [0, {MAX_NODE_ID}], got {shown(nid)}")
    if type(v.committed) is not bool:
        raise _bad(rpc, f"{what}.committed must be a bool, got {type(v.committed).__name__}")
    return term


def _check_log_id(rpc: str, what: str, lid: Any, max_term: int) -> int:
    """Check a ``LogId`` (not ``None``) whose term may not exceed ``max_term``; return its
    index."""
    if type(lid) is not LogId:
        raise _bad(rpc, f"{what} must be a LogId or None, got {type(lid).__name__}")
    term = _log_id_term(lid)
    index = _log_id_index(lid)
    if type(term) is not int or not 0 <= term <= MAX_TERM:
        raise _bad(rpc, f"{what} term must be an int within [0, {MAX_TERM}], got {shown(term)}")
    if type(index) is not int or not 0 <= index <= MAX_INDEX:
        raise _bad(rpc, f"{what} index must be an int within [0, {MAX_INDEX}], got {shown(index)}")
    if term > max_term:
        raise _bad(rpc, f"{what} {lid!r} has a term above the sender's vote term {max_term}")
    return index


def _check_membership(rpc: str, what: str, m: Any, allow_empty: bool) -> None:
    """Check a ``Membership``: one or two non-empty voter configs (frozensets of node ids),
    ``nodes`` a dict of node id -> ``BasicNode`` holding every voter. ``allow_empty``: the
    empty membership (no config, no node) of a cluster not yet initialized is accepted."""
    if type(m) is not Membership:
        raise _bad(rpc, f"{what} must be a Membership, got {type(m).__name__}")
    configs = m.configs
    nodes = m.nodes
    if type(configs) is not tuple:
        raise _bad(rpc, f"{what}.configs must be a tuple of frozensets, got {type(configs).__name__}")
    if type(nodes) is not ReadOnlyNodes and type(nodes) is not dict:
        raise _bad(rpc, f"{what}.nodes must be a dict, got {type(nodes).__name__}")
    if len(nodes) > MAX_MEMBERSHIP_NODES:
        # A decoder refuses it from the map's header; this is for a transport that builds
        # requests without one.
        raise _bad(rpc, f"{what} has {len(nodes)} nodes, more than {MAX_MEMBERSHIP_NODES} (MAX_MEMBERSHIP_NODES)")
    for nid, node in nodes.items():
        if type(nid) is not int or not 0 <= nid <= MAX_NODE_ID:
            raise _bad(rpc, f"{what}.nodes: node id must be an int within [0, {MAX_NODE_ID}], got {shown(nid)}")
        if type(node) is not BasicNode or type(node.addr) is not str:
            raise _bad(rpc, f"{what}.nodes[{nid}] must be a BasicNode with a str addr, got {shown(node)}")
    if not configs:
        if allow_empty and not nodes:
            return
        raise _bad(rpc, f"{what} has no voter config")
    if len(configs) > 2:
        raise _bad(rpc, f"{what} has {len(configs)} configs (at most 2: a joint membership)")
    for c in configs:
        if type(c) is not frozenset:
            raise _bad(rpc, f"{what}: a config must be a frozenset of node ids, got {type(c).__name__}")
        if not c:
            raise _bad(rpc, f"{what} has an empty voter config")
        if len(c) > len(nodes):
            raise _bad(rpc, f"{what} has a voter config of {len(c)} ids, more than its {len(nodes)} nodes")
        for nid in c:
            if nid not in nodes:
                raise _bad(rpc, f"{what}: voter {shown(nid)} is not in its nodes")


def check_append_entries(req: Any) -> None:
    """Refuse a malformed ``AppendEntriesRequest`` with ``InvalidRequest``.

    Checks the types and ranges of every field (nested ones included: ``entries`` is a
    ``list`` of ``Entry``, each entry's log id and payload: ``Normal.data`` is ``bytes``, a
    ``Membership`` is well-formed); that the entries are contiguous from
    ``prev_log_id.index + 1`` (from 0 without ``prev_log_id``); that their terms never
    decrease, start at or above ``prev_log_id``'s term, and that no log id (prev, entries,
    leader_commit) has a term above the request's vote. ``leader_commit``
    only needs to be well-formed: the follower commits no further than what the request
    proves to match.
    """
    rpc = "append_entries"
    if type(req) is not AppendEntriesRequest:
        raise _bad(rpc, f"request must be an AppendEntriesRequest, got {type(req).__name__}")
    vterm = _check_vote(rpc, "vote", _append_entries_vote(req))
    prev = _append_entries_prev_log_id(req)
    if prev is None:
        next_index = 0
        last_term = 0
    else:
        next_index = _check_log_id(rpc, "prev_log_id", prev, vterm) + 1
        last_term = _log_id_term(prev)
    lc = _append_entries_leader_commit(req)
    if lc is not None:
        _check_log_id(rpc, "leader_commit", lc, vterm)
    entries = _append_entries_entries(req)
    if type(entries) is not list:
        raise _bad(rpc, f"entries must be a list of Entry, got {type(entries).__name__}")
    if not entries:
        return
    if next_index + len(entries) - 1 > MAX_INDEX:
        raise _bad(rpc, f"entries reach past MAX_INDEX {MAX_INDEX}")
    last = entries[-1]
    last_id = _entry_log_id(last) if type(last) is Entry else None
    if type(last_id) is LogId:
        # Fail fast (and bound the loop's work) before looking at each entry.
        li = _log_id_index(last_id)
        if type(li) is not int or li != next_index + len(entries) - 1:
            raise _bad(rpc, f"entries are not contiguous from index {next_index}: {len(entries)} entries end at {li!r}")
    # The steady state: a kernel passes a run of plain entries in one call (compiled, no
    # Python loop per entry). It stops at a membership entry (checked here, then the next run)
    # or at a bad entry (explained by the slow path).
    n = len(entries)
    k = plain_entries_prefix(entries, next_index, last_term, vterm, Entry, LogId, Normal, Blank)
    while k < n:
        e = entries[k]
        lid = e.log_id if type(e) is Entry else None
        if type(lid) is not LogId:
            break
        i, t = lid.index, lid.term
        prev_term = entries[k - 1].log_id.term if k else last_term
        if type(i) is not int or type(t) is not int or i != next_index + k or t < prev_term or t > vterm:
            break
        p = e.payload
        if type(p) is Normal or type(p) is Blank:
            break  # refused by the kernel: a Normal whose data is not bytes
        # Raises unless ``p`` is a well-formed Membership (naming what else it is).
        _check_membership(rpc, f"entry {lid!r} membership", p, False)
        k += 1
        if k < n:
            k += _plain_run(entries, k, next_index + k, t, vterm)
    else:
        return
    _explain_entries(rpc, entries, next_index, last_term, vterm)


_RUN_WINDOW = 2
"""The first window ``_plain_run`` hands the kernel after a membership entry (small: the
next entry may well be another membership)."""


def _plain_run(entries: list[Any], k: int, index: int, min_term: int, vterm: int) -> int:
    """How many well-formed plain entries start at position ``k`` of ``entries`` (at log
    index ``index``, terms from ``min_term`` up to ``vterm``): ``plain_entries_prefix`` on
    slices of growing size (2, 4, 8, ...) until one is not passed whole. The slices copied
    hold at most twice the run plus 2 entries: the whole rest (``entries[k:]``) after each
    membership entry made a batch of memberships quadratic (65536 one-node membership
    entries, a 3.6 MiB frame, took 38 s of the event loop to check)."""
    n = len(entries)
    got = 0
    w = _RUN_WINDOW
    while True:
        part = entries[k + got:k + got + w]
        m = plain_entries_prefix(part, index + got, min_term, vterm, Entry, LogId, Normal, Blank)
        got += m
        if m < len(part) or k + got >= n:
            return got
        min_term = part[-1].log_id.term
        w *= 2


def _explain_entries(rpc: str, entries: Any, next_index: int, last_term: int, vterm: int) -> None:
    """The slow path of ``check_append_entries``: find the first bad entry and raise
    ``InvalidRequest`` saying what is wrong with it."""
    for e in entries:
        if type(e) is not Entry:
            raise _bad(rpc, f"entry at position {next_index} must be an Entry, got {type(e).__name__}")
        lid = e.log_id
        if type(lid) is not LogId:
            raise _bad(rpc, f"entry log_id must be a LogId, got {type(lid).__name__}")
        term = lid.term
        if lid.index != next_index or type(lid.index) is not int:
            raise _bad(rpc, f"entry {lid!r}: expected index {next_index} (entries must be contiguous from prev + 1)")
        if type(term) is not int:
            raise _bad(rpc, f"entry at index {next_index}: term must be an int, got {shown(term)}")
        if term < last_term:
            raise _bad(rpc, f"entry {lid!r}: term below the previous entry's term {last_term}")
        if term > vterm:
            raise _bad(rpc, f"entry {lid!r} has a term above the sender's vote term {vterm}")
        p = e.payload
        if type(p) is Normal and type(p.data) is not bytes:
            raise _bad(rpc, f"entry {lid!r}: Normal.data must be bytes, got {type(p.data).__name__}")
        last_term = term
        next_index += 1
    raise _bad(rpc, "malformed entries")  # pragma: no cover - the fast path found a fault


def check_vote(req: Any) -> None:
    """Refuse a malformed ``VoteRequest`` with ``InvalidRequest``: the vote (a candidate's,
    so not committed), ``last_log_id`` (term not above the vote's), ``pre_vote`` a bool,
    ``transfer_from`` ``None`` or a well-formed ``Vote``."""
    rpc = "vote"
    if type(req) is not VoteRequest:
        raise _bad(rpc, f"request must be a VoteRequest, got {type(req).__name__}")
    vterm = _check_vote(rpc, "vote", req.vote)
    if req.vote.committed:
        raise _bad(rpc, "vote must be a candidate's (committed=False)")
    if req.last_log_id is not None:
        _check_log_id(rpc, "last_log_id", req.last_log_id, vterm)
    if type(req.pre_vote) is not bool:
        raise _bad(rpc, f"pre_vote must be a bool, got {type(req.pre_vote).__name__}")
    if req.transfer_from is not None:
        _check_vote(rpc, "transfer_from", req.transfer_from)


def _check_snapshot_meta(rpc: str, meta: Any, vterm: int) -> None:
    if type(meta) is not SnapshotMeta:
        raise _bad(rpc, f"meta must be a SnapshotMeta, got {type(meta).__name__}")
    last = meta.last_log_id
    if last is not None:
        _check_log_id(rpc, "meta.last_log_id", last, vterm)
    if type(meta.snapshot_id) is not str:
        raise _bad(rpc, f"meta.snapshot_id must be a str, got {type(meta.snapshot_id).__name__}")
    sm = meta.last_membership
    if type(sm) is not StoredMembership:
        raise _bad(rpc, f"meta.last_membership must be a StoredMembership, got {type(sm).__name__}")
    if sm.log_id is not None:
        _check_log_id(rpc, "meta.last_membership.log_id", sm.log_id, vterm)
        if last is None or sm.log_id > last:
            raise _bad(rpc, f"meta.last_membership.log_id {sm.log_id!r} is past meta.last_log_id {last!r}")
    _check_membership(rpc, "meta.last_membership.membership", sm.membership, sm.log_id is None)


def check_install_snapshot(req: Any) -> None:
    """Refuse a malformed ``InstallSnapshotRequest`` chunk with ``InvalidRequest``: the vote,
    the meta (log ids within range and not above the vote's term, the membership's log id not
    past the snapshot's last log id, a well-formed membership, a ``str`` snapshot id),
    ``offset`` a non-negative int with ``offset + len(data)`` within ``2**63 - 1``, ``data``
    bytes and ``done`` a bool. Whether the chunk continues the bytes received so far is
    checked by the node (an ``ApiError``: the leader starts over)."""
    rpc = "install_snapshot"
    if type(req) is not InstallSnapshotRequest:
        raise _bad(rpc, f"request must be an InstallSnapshotRequest, got {type(req).__name__}")
    vterm = _check_vote(rpc, "vote", req.vote)
    _check_snapshot_meta(rpc, req.meta, vterm)
    if type(req.data) is not bytes:
        raise _bad(rpc, f"data must be bytes, got {type(req.data).__name__}")
    off = req.offset
    if type(off) is not int or off < 0 or off + len(req.data) > 2**63 - 1:
        raise _bad(rpc, f"offset must be a non-negative int (offset + len(data) < 2**63), got {shown(off)}")
    if type(req.done) is not bool:
        raise _bad(rpc, f"done must be a bool, got {type(req.done).__name__}")


def check_transfer_leader(req: Any) -> None:
    """Refuse a malformed ``TransferLeaderRequest`` with ``InvalidRequest``: ``from_leader``
    a well-formed ``Vote``, ``to`` a node id, ``last_log_id`` ``None`` or a log id whose term
    is not above ``from_leader``'s."""
    rpc = "transfer_leader"
    if type(req) is not TransferLeaderRequest:
        raise _bad(rpc, f"request must be a TransferLeaderRequest, got {type(req).__name__}")
    vterm = _check_vote(rpc, "from_leader", req.from_leader)
    to = req.to
    if type(to) is not int or not 0 <= to <= MAX_NODE_ID:
        raise _bad(rpc, f"to must be a node id within [0, {MAX_NODE_ID}], got {shown(to)}")
    if req.last_log_id is not None:
        _check_log_id(rpc, "last_log_id", req.last_log_id, vterm)
