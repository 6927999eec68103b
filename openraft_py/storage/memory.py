"""In-memory storage: a log store and two state machines, for tests and benchmarks.

``MemDisk`` plays the role of one node's disk. Store objects keep no state of their own
beyond a reference to it, so a test models a crash and restart by dropping the store objects
and building new ones over the same ``MemDisk``::

    disk = MemDisk()
    log, sm = MemLogStore(disk), MemStateMachine(disk)
    ...                                            # node runs, then "crashes"
    log, sm = MemLogStore(disk), MemStateMachine(disk)   # restarted, same durable state

Everything written is "durable" at once: ``MemLogStore.append`` completes its ``IOFlushed``
before returning. ``MemLogStore`` is the benchmark store: ``append`` costs O(batch) and a read
is one list slice.

``MemStateMachine`` is a key-value store. Its commands are msgspec Structs (``KvSet``,
``KvDelete``, ``KvCas``, ``KvGet``) encoded with ``encode_kv``: the byte ``KV_PREFIX`` followed
by the msgpack body. Entry data that does not start with ``KV_PREFIX`` is opaque: applied as a
no-op with response ``None`` and never decoded (benchmarks send arbitrary payloads).
"""

from __future__ import annotations

import asyncio
import io
import itertools
import zlib
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, Protocol

import msgspec

from .._core import apply_kv_sets, find_payload
from ..errors import LogCompacted, StorageError, StoreOwnerMismatch
from ..types import (
    EMPTY_STORED_MEMBERSHIP,
    Entry,
    LogId,
    LogState,
    Membership,
    NodeId,
    Normal,
    Snapshot,
    SnapshotMeta,
    StoredMembership,
    Vote,
)
from ..validation import check_node_id, shown
from . import IOFlushed

__all__ = [
    "MemDisk",
    "MemLogStore",
    "MemLogReader",
    "MemStateMachine",
    "NoopStateMachine",
    "KvSet",
    "KvDelete",
    "KvCas",
    "KvGet",
    "KvCommand",
    "KV_PREFIX",
    "KvMap",
    "apply_kv",
    "apply_kv_effect",
    "encode_kv",
    "decode_kv",
]


# -- the key-value commands ---------------------------------------------------------------------


class KvSet(msgspec.Struct, frozen=True, tag="set", array_like=True):
    """Set ``key`` to ``value``. Response: the previous value (``str | None``)."""

    key: str
    value: str


class KvDelete(msgspec.Struct, frozen=True, tag="del", array_like=True):
    """Delete ``key``. Response: the previous value (``str | None``)."""

    key: str


class KvCas(msgspec.Struct, frozen=True, tag="cas", array_like=True):
    """Set ``key`` to ``value`` iff its current value is ``expected`` (``None``: absent).

    Response: ``(ok, current)`` where ``current`` is the value after the command (``value``
    when ``ok``, the unchanged value otherwise).
    """

    key: str
    expected: str | None
    value: str


class KvGet(msgspec.Struct, frozen=True, tag="get", array_like=True):
    """Read ``key`` through the log (a linearizable read). Response: its value or ``None``."""

    key: str


KvCommand = KvSet | KvDelete | KvCas | KvGet
"""Any key-value command."""

KV_PREFIX = b"\xc1"
"""The first byte of every encoded KV command. ``0xc1`` is never used by msgpack, so no plain
msgpack payload is mistaken for a command."""

_kv_encoder = msgspec.msgpack.Encoder()
_kv_decoder = msgspec.msgpack.Decoder(KvCommand)


def encode_kv(cmd: KvCommand) -> bytes:
    """Encode a KV command as entry data for ``MemStateMachine`` (``KV_PREFIX`` + msgpack)."""
    return KV_PREFIX + _kv_encoder.encode(cmd)


def decode_kv(data: bytes) -> KvCommand | None:
    """The KV command in ``data``, or ``None`` when ``data`` is not one (opaque data)."""
    if data[:1] != KV_PREFIX:
        return None
    try:
        return _kv_decoder.decode(memoryview(data)[1:])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class KvMap(Protocol):
    """The key-value data a state machine lets ``apply_kv`` read and write: a ``dict[str,
    str]``, or an adaptor in front of other storage (``_LayeredKv`` here; the RocksDB state
    machine's write batch)."""

    def get(self, key: str, /) -> str | None:
        """The current value of ``key``, or ``None`` when absent."""
        ...

    def __setitem__(self, key: str, value: str, /) -> None:
        """Set ``key`` to ``value``."""
        ...

    def pop(self, key: str, default: None, /) -> str | None:
        """Delete ``key``; its previous value, or ``default`` (``None``) when it was absent."""
        ...


def apply_kv(kv: KvMap, cmd: KvCommand | None) -> Any:
    """Apply one decoded command to ``kv`` and return its response: the one definition of
    the key-value commands' semantics, shared by every shipped key-value state machine
    (``MemStateMachine``, ``openraft_py.kv.rocks_state_machine.RocksStateMachine``).
    ``None`` (data behind ``KV_PREFIX`` that does not decode) is opaque: no change, response
    ``None``. The responses are the ones each command's docstring gives."""
    if type(cmd) is KvSet:
        prev = kv.get(cmd.key)
        kv[cmd.key] = cmd.value
        return prev
    if type(cmd) is KvGet:
        return kv.get(cmd.key)
    if type(cmd) is KvDelete:
        return kv.pop(cmd.key, None)
    if type(cmd) is KvCas:
        cur = kv.get(cmd.key)
        if cur == cmd.expected:
            kv[cmd.key] = cmd.value
            return (True, cmd.value)
        return (False, cur)
    return None  # undecodable data behind the prefix: opaque


def apply_kv_effect(kv: KvMap, cmd: KvCommand | None) -> None:
    """Make the change ``apply_kv(kv, cmd)`` makes, without its response: for a node whose
    responses nobody reads (``apply_without_responses``). A ``KvSet`` then writes without
    reading the previous value, and a ``KvGet`` does nothing; the state afterwards is the
    one ``apply_kv`` leaves."""
    if type(cmd) is KvSet:
        kv[cmd.key] = cmd.value
    elif type(cmd) is not KvGet:
        # A compare-and-set must read the current value; a delete goes through ``pop``,
        # the one delete a ``KvMap`` offers (it reads the previous value too).
        apply_kv(kv, cmd)


# -- the disk -----------------------------------------------------------------------------------


class MemDisk:
    """The durable state of one node: outlives store objects (see the module docstring).

    Log (owned by ``MemLogStore``):

    - ``entries``: the entries held, in index order. Invariant: ``entries[i].log_id.index ==
      offset + i``.
    - ``offset``: the index of ``entries[0]`` (or of the next append when ``entries`` is
      empty). Invariant: ``offset == last_purged.index + 1`` (``0`` when nothing was purged).
    - ``vote``, ``committed``, ``last_purged``.
    - ``owner``: ``(node_id, cluster_name)`` of the node whose log this is
      (``MemLogStore.check_owner``), or ``None`` before a node started on it.

    State machine (owned by ``MemStateMachine`` / ``NoopStateMachine``):

    - ``kv``: the key-value data; ``last_applied``; ``membership`` (the last applied one).
    - ``kv_overlay``: ``None``, or while a snapshot build serializes ``kv`` (copy-on-write:
      ``kv`` is then frozen), the changes applied since: ``key -> value``, or ``DELETED``.
      The data is ``kv`` updated by ``kv_overlay``; the build merges it back when done.
    - ``applied_log``: ``(log_id, data)`` of every applied ``Normal`` entry, when recorded.
    - ``snapshot``: ``(meta, bytes)`` of the current snapshot, or ``None``.
    """

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.offset: int = 0
        self.vote: Vote | None = None
        self.committed: LogId | None = None
        self.last_purged: LogId | None = None
        self.owner: tuple[NodeId, str] | None = None

        self.kv: dict[str, str] = {}
        self.kv_overlay: dict[str, Any] | None = None
        self.last_applied: LogId | None = None
        self.membership: StoredMembership = EMPTY_STORED_MEMBERSHIP
        self.applied_log: list[tuple[LogId, bytes]] = []
        self.snapshot: tuple[SnapshotMeta, bytes] | None = None

    def __repr__(self) -> str:
        return (
            f"MemDisk(log=[{self.offset}, {self.offset + len(self.entries)}), "
            f"purged={self.last_purged!r}, vote={self.vote!r}, applied={self.last_applied!r})"
        )


# -- the log store ------------------------------------------------------------------------------


class MemLogReader:
    """A ``RaftLogReader`` over a ``MemDisk``'s log; see ``RaftLogReader`` for the contract."""

    __slots__ = ("_disk",)

    def __init__(self, disk: MemDisk) -> None:
        self._disk = disk

    async def try_get_log_entries(self, start: int, stop: int) -> list[Entry]:
        """The entries with ``start <= index < stop`` (a list slice). Raises ``LogCompacted``
        when ``start <= last_purged.index``."""
        disk = self._disk
        offset = disk.offset
        if start < offset:
            if disk.last_purged is not None:
                raise LogCompacted(
                    f"entries [{start}, {stop}) requested but the log is purged up to "
                    f"{disk.last_purged!r}"
                )
            start = offset  # negative start on a never-purged log: nothing below 0 exists
        if stop <= start:
            return []
        return disk.entries[start - offset : stop - offset]

    async def read_vote(self) -> Vote | None:
        """The saved vote, or ``None``."""
        return self._disk.vote


class MemLogStore(MemLogReader):
    """An in-memory ``RaftLogStorage`` over ``disk`` (a new ``MemDisk`` when ``None``).

    Every write is durable on return; ``append`` calls ``callback.io_completed(None)`` before
    returning. See ``RaftLogStorage`` for the contract of each method.
    """

    __slots__ = ()

    def __init__(self, disk: MemDisk | None = None) -> None:
        super().__init__(disk if disk is not None else MemDisk())

    @property
    def disk(self) -> MemDisk:
        """The disk this store writes to."""
        return self._disk

    async def get_log_state(self) -> LogState:
        """``LogState(last_purged_log_id, last_log_id)``."""
        disk = self._disk
        last = disk.entries[-1].log_id if disk.entries else disk.last_purged
        return LogState(disk.last_purged, last)

    async def save_vote(self, vote: Vote) -> None:
        """Store ``vote``; durable on return."""
        self._disk.vote = vote

    async def save_committed(self, committed: LogId | None) -> None:
        """Store the committed log id; durable on return."""
        self._disk.committed = committed

    async def check_owner(self, node_id: NodeId, cluster_name: str) -> None:
        """Record node ``node_id`` of ``cluster_name`` as the disk's owner when it has none;
        ``StoreOwnerMismatch`` (disk unchanged) when it records another node id or cluster
        name: a ``MemDisk`` handed to another node (see ``RaftLogStorage.check_owner``)."""
        node_id = check_node_id(node_id)
        if not isinstance(cluster_name, str):
            raise TypeError(f"cluster_name must be a str, got {type(cluster_name).__name__} {shown(cluster_name)}")
        if not cluster_name:
            raise ValueError("cluster_name must not be empty")
        owner = self._disk.owner
        if owner is None:
            self._disk.owner = (node_id, cluster_name)
        elif owner != (node_id, cluster_name):
            raise StoreOwnerMismatch(f"starting node {node_id} on {self._disk!r}", *owner, node_id, cluster_name)

    async def replace_owner(self, node_id: NodeId, cluster_name: str) -> None:
        """Record node ``node_id`` of ``cluster_name`` as the disk's owner, over whatever was
        recorded (``openraft_py.recovery.replace_owners``); errors as ``check_owner``."""
        node_id = check_node_id(node_id)
        if not isinstance(cluster_name, str):
            raise TypeError(f"cluster_name must be a str, got {type(cluster_name).__name__} {shown(cluster_name)}")
        if not cluster_name:
            raise ValueError("cluster_name must not be empty")
        self._disk.owner = (node_id, cluster_name)

    async def read_committed(self) -> LogId | None:
        """The saved committed log id, or ``None``."""
        return self._disk.committed

    async def append(self, entries: list[Entry], callback: IOFlushed) -> None:
        """Append consecutive ``entries`` at the end of the log; O(len(entries)).

        Raises ``ValueError`` (log unchanged, callback not called) when the first index is not
        the next index of the log, or the batch's indexes are not consecutive.
        """
        self.append_durable(entries)
        callback.io_completed(None)

    def append_durable(self, entries: list[Entry]) -> None:
        """``append`` without the callback (durable on return; see ``RaftLogStorage``): what
        the node calls while the class's ``append`` is this one."""
        if entries:
            disk = self._disk
            first = entries[0].log_id.index
            expected = disk.offset + len(disk.entries)
            if first != expected:
                raise ValueError(
                    f"append must continue the log without a hole: the first entry is "
                    f"{entries[0].log_id!r} but the next index is {expected}"
                )
            last = entries[-1].log_id.index
            if last - first != len(entries) - 1:
                raise ValueError(
                    f"append needs consecutive indexes: {len(entries)} entries span "
                    f"{entries[0].log_id!r}..{entries[-1].log_id!r}"
                )
            disk.entries.extend(entries)

    async def truncate_after(self, log_id: LogId | None) -> None:
        """Delete the entries with ``index > log_id.index`` (all non-purged ones for
        ``None``); durable on return."""
        disk = self._disk
        keep = 0 if log_id is None else max(0, log_id.index + 1 - disk.offset)
        del disk.entries[keep:]

    async def purge(self, log_id: LogId) -> None:
        """Delete the entries with ``index <= log_id.index`` and remember ``log_id`` as the
        last purged; a no-op when ``log_id`` is not beyond the last purged. Durable on
        return."""
        disk = self._disk
        if disk.last_purged is not None and log_id.index <= disk.last_purged.index:
            return
        del disk.entries[: log_id.index + 1 - disk.offset]
        disk.offset = log_id.index + 1
        disk.last_purged = log_id

    def get_log_reader(self) -> MemLogReader:
        """A new reader over the same disk."""
        return MemLogReader(self._disk)

    def __repr__(self) -> str:
        return f"MemLogStore({self._disk!r})"


# -- the state machines -------------------------------------------------------------------------


class _KvSnapshotData(msgspec.Struct, array_like=True):
    """What a ``MemStateMachine`` snapshot holds (msgpack-encoded, after the header: see
    ``_SNAP_MARK``)."""

    kv: dict[str, str]
    last_applied: LogId | None
    membership: StoredMembership
    applied_log: list[tuple[LogId, bytes]]


_snap_encoder = msgspec.msgpack.Encoder()
_snap_decoder = msgspec.msgpack.Decoder(_KvSnapshotData)

# The snapshot format. A snapshot is a header, then the msgpack of ``_KvSnapshotData`` (the
# body). The header: ``_SNAP_MARK`` (``0xc1``, never a msgpack byte, so never the first byte
# of a first-format snapshot), the format number ``_SNAP_FORMAT``, the body's length (8 bytes)
# and its CRC-32 (``zlib.crc32``, 4 bytes), both big-endian. A damaged or cut snapshot (a
# network or custom store that spoils its bytes) is refused, not installed as wrong state.
# Snapshots of the first format (the body alone, no header: it starts with msgpack's
# ``0x94``) are still read, so that a node of this version catches up from a leader of the
# previous one; they are checked as far as they can be without a checksum
# (``_check_first_format``).
_SNAP_MARK = 0xC1
_SNAP_FORMAT = 2
_SNAP_HEADER_LEN = 14


def _snapshot_header(length: int, crc: int) -> bytes:
    """The header of a snapshot whose body has ``length`` bytes and CRC-32 ``crc``."""
    return bytes((_SNAP_MARK, _SNAP_FORMAT)) + length.to_bytes(8, "big") + crc.to_bytes(4, "big")


def _decode_snapshot(raw: bytes, meta: SnapshotMeta) -> _KvSnapshotData:
    """The data of the snapshot ``raw`` whose meta is ``meta`` (the header checked, see
    ``_SNAP_MARK``, then ``_check_snapshot_data``). Raises ``ValueError`` saying what is
    wrong: a header cut short, an unknown format number, a body of another length than the
    header says (cut short, or with bytes after it), a checksum mismatch (damaged), a body
    that does not decode, or data that does not agree with ``meta``."""
    first_format = raw[:1] != bytes((_SNAP_MARK,))
    if not first_format:
        if len(raw) < _SNAP_HEADER_LEN:
            raise ValueError(f"truncated: {len(raw)} bytes, less than its {_SNAP_HEADER_LEN}-byte header")
        if raw[1] != _SNAP_FORMAT:
            raise ValueError(f"snapshot format {raw[1]} is not one this version reads ({_SNAP_FORMAT})")
        length = int.from_bytes(raw[2:10], "big")
        want = int.from_bytes(raw[10:14], "big")
        body = memoryview(raw)[_SNAP_HEADER_LEN:]
        if len(body) < length:
            raise ValueError(f"truncated: {len(body)} bytes of data, its header says {length}")
        if len(body) > length:
            raise ValueError(f"{len(body) - length} bytes after the end of its data ({length} bytes)")
        crc = zlib.crc32(body)
        if crc != want:
            raise ValueError(f"checksum mismatch: the data is damaged (CRC-32 {crc:08x}, its header says {want:08x})")
    else:
        body = memoryview(raw)  # the first format: the body alone, nothing to check it by
    try:
        data: _KvSnapshotData = _snap_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise ValueError(str(e)) from e
    if first_format:
        _check_first_format(data, meta, body)
    return data


def _map_len(body: memoryview) -> int:
    """The number of pairs the msgpack map of a snapshot body's data says it holds (the body
    decoded: its first byte is the 4-item array's, then comes the map's header)."""
    first = body[1]
    if first < 0x90:  # fixmap
        return first & 0x0F
    return int.from_bytes(body[2:4] if first == 0xDE else body[2:6], "big")


def _check_first_format(data: _KvSnapshotData, meta: SnapshotMeta, body: memoryview) -> None:
    """``ValueError`` unless the decoded ``data`` of a first-format snapshot (no checksum)
    is as far as can be told intact: its last applied log id and membership are the ones its
    meta names (every version builds both from the same point), its map holds as many keys
    as its header says (a key damaged into another one decodes, the pair dropped), and its
    ``applied_log`` is in log order up to that last applied log id (one pass over the
    record). What no check finds is a damaged key, value or applied entry's bytes that
    still decode."""
    if data.last_applied != meta.last_log_id:
        raise ValueError(f"its data was applied up to {data.last_applied}, but its meta says {meta.last_log_id}: "
                         "the data is damaged or another snapshot's")
    if data.membership != meta.last_membership:
        raise ValueError(f"its data's membership {data.membership} is not its meta's {meta.last_membership}: "
                         "the data is damaged or another snapshot's")
    if len(data.kv) != _map_len(body):
        raise ValueError(f"its data holds {_map_len(body) - len(data.kv)} repeated keys: the data is damaged")
    last = meta.last_log_id
    prev: LogId | None = None
    for i, (log_id, _) in enumerate(data.applied_log):
        if (prev is not None and (log_id.index <= prev.index or log_id.term < prev.term)) or last is None \
                or log_id.index > last.index or log_id.term > last.term:
            after = f"after the one before it ({prev}) and " if prev is not None else ""
            raise ValueError(f"its applied entry {i} ({log_id}) is out of log order: it must come {after}at most "
                             f"at the last applied {last}: the data is damaged")
        prev = log_id
_snapshot_seq = itertools.count(1)


def _snapshot_id(last: LogId | None) -> str:
    """A snapshot id unique within the process: ``<term>-<index>-<seq>``."""
    where = "none" if last is None else f"{last.term}-{last.index}"
    return f"{where}-{next(_snapshot_seq)}"


def _read_all(data: BinaryIO) -> bytes:
    """Every byte of ``data`` from its start."""
    data.seek(0)
    return data.read()


DELETED: Any = msgspec.UNSET
"""The value of a key deleted since a snapshot build began (``MemDisk.kv_overlay``)."""


class _LayeredKv:
    """``kv`` (frozen while a build reads it) with the changes since in ``overlay``: the
    ``KvMap`` that ``apply_kv`` uses."""

    __slots__ = ("base", "overlay")

    def __init__(self, base: dict[str, str], overlay: dict[str, Any]) -> None:
        self.base = base
        self.overlay = overlay

    def get(self, key: str) -> str | None:
        v = self.overlay.get(key, None)
        if v is None:
            return self.base.get(key)
        return None if v is DELETED else v

    def __setitem__(self, key: str, value: str) -> None:
        self.overlay[key] = value

    def pop(self, key: str, default: None = None) -> str | None:
        prev = self.get(key)
        if prev is not None:
            self.overlay[key] = DELETED
        return prev


def _merged(base: dict[str, str], overlay: dict[str, Any]) -> dict[str, str]:
    """A new dict: ``base`` updated by ``overlay``."""
    out = dict(base)
    _merge_into(out, overlay)
    return out


def _merge_into(base: dict[str, str], overlay: dict[str, Any]) -> None:
    for k, v in overlay.items():
        if v is DELETED:
            base.pop(k, None)
        else:
            base[k] = v


_ENCODE_CHUNK = 4096
"""Items per piece when a snapshot is serialized piecewise (a piece takes well under a
millisecond to encode)."""


def _header(n: int, small: int, h16: bytes, h32: bytes) -> bytes:
    if n < 16:
        return bytes([small | n])
    if n < 1 << 16:
        return h16 + n.to_bytes(2, "big")
    return h32 + n.to_bytes(4, "big")


def _snapshot_pieces(
    kv: dict[str, str], last: LogId | None, membership: StoredMembership, log: list[Any], n_log: int
) -> Iterator[bytes]:
    """The msgpack of ``_KvSnapshotData(kv, last, membership, log[:n_log])`` in pieces of at
    most ``_ENCODE_CHUNK`` items: joined, byte for byte what one ``encode`` gives. ``kv``
    must not change while the pieces are taken; ``log`` may grow (its first ``n_log`` items
    count)."""
    enc = _snap_encoder.encode
    yield b"\x94" + _header(len(kv), 0x80, b"\xde", b"\xdf")
    items = iter(kv.items())
    while True:
        piece = dict(itertools.islice(items, _ENCODE_CHUNK))
        if not piece:
            break
        yield enc(piece)[len(_header(len(piece), 0x80, b"\xde", b"\xdf")) :]
    yield enc(last) + enc(membership) + _header(n_log, 0x90, b"\xdc", b"\xdd")
    for lo in range(0, n_log, _ENCODE_CHUNK):
        piece_l = log[lo : min(lo + _ENCODE_CHUNK, n_log)]
        yield enc(piece_l)[len(_header(len(piece_l), 0x90, b"\xdc", b"\xdd")) :]


def _encode_snapshot_body(
    kv: dict[str, str], last: LogId | None, membership: StoredMembership, log: list[Any], n_log: int
) -> bytes:
    """All of ``_snapshot_pieces`` at once."""
    return b"".join(_snapshot_pieces(kv, last, membership, log, n_log))


class _SnapshotBuilder:
    """A ``SnapshotBuilder`` calling back into its state machine."""

    __slots__ = ("_build",)

    def __init__(self, build: Any) -> None:
        self._build = build

    async def build_snapshot(self) -> Snapshot:
        """Build a snapshot of the state machine as of its last applied entry."""
        r = self._build()
        if asyncio.iscoroutine(r):
            return await r  # type: ignore[no-any-return]
        return r  # type: ignore[no-any-return]


class MemStateMachine:
    """An in-memory key-value ``RaftStateMachine`` over ``disk`` (a new ``MemDisk`` when
    ``None``); see ``RaftStateMachine`` for the contract of each method.

    ``Normal`` entry data is a command from ``encode_kv`` (see ``KvSet`` etc. for the
    responses) or opaque bytes (response ``None``). Its state lives in ``disk`` and survives a
    "restart" (new objects over the same disk).

    ``record_applied``: append ``(log_id, data)`` of every applied ``Normal`` entry to
    ``applied_log`` so tests can compare what nodes applied. A snapshot carries the record, so
    a node that installs one continues the builder's record (empty if the builder did not
    record). Turn it off for long benchmarks (it keeps every payload).

    ``volatile``: model a state machine that keeps its state in memory only, with durable
    snapshots (the common design: Openraft's examples). A new object over ``disk`` (a
    restart) forgets the applied state and restores it from the disk's current snapshot
    alone: data, ``applied_log``, last applied log id and membership as the snapshot holds
    them, or empty when there is none. Raft then re-applies the committed log after it. The
    default (``False``) keeps the applied state on the disk across restarts.

    Snapshots: ``build_snapshot`` never stalls the event loop for the size of the state. It
    freezes ``kv`` (copy-on-write: ``apply`` writes to ``MemDisk.kv_overlay`` meanwhile,
    an O(1) switch), reads the last applied log id, membership and ``applied_log`` length at
    that same point, serializes that image in pieces of ``_ENCODE_CHUNK`` items, yielding
    to the event loop between pieces, then merges the overlay back (O(changes during the
    build)). The snapshot is the state at its meta's ``last_log_id`` exactly. The pieces
    run on the loop, not in a worker thread: msgspec holds the GIL while it encodes, so a
    thread would stall the loop for as long as one big ``encode`` (and every GIL hand-off
    costs the loop up to the interpreter's 5 ms switch interval); cooperative pieces keep
    each stall well under a millisecond and keep the deterministic simulator deterministic.

    A snapshot's bytes carry their length and CRC-32 in a small header: ``install_snapshot``
    refuses a snapshot cut short or damaged on its way (``ValueError``, the state unchanged)
    instead of installing wrong data. Snapshots of the first format (no header, from
    earlier versions) are still installed, checked as far as they can be without a checksum
    (their last applied log id and membership against the meta, their ``applied_log`` in
    log order): a damaged key or value that still decodes as text is all that gets in.
    """

    def __init__(self, disk: MemDisk | None = None, *, record_applied: bool = True, volatile: bool = False) -> None:
        self._disk = disk if disk is not None else MemDisk()
        self.record_applied = record_applied
        self.volatile = volatile
        if volatile:
            self._restore_from_snapshot()

    def _restore_from_snapshot(self) -> None:
        """Volatile restart: the applied state is what the current snapshot holds."""
        disk = self._disk
        disk.kv_overlay = None
        snap = disk.snapshot
        if snap is None:
            disk.kv = {}
            disk.applied_log = []
            disk.last_applied = None
            disk.membership = EMPTY_STORED_MEMBERSHIP
            return
        meta, body = snap
        try:
            data = _decode_snapshot(body, meta)
        except ValueError as e:
            raise StorageError(f"restoring MemStateMachine from its snapshot {meta.snapshot_id}", e) from e
        disk.kv = data.kv
        disk.applied_log = data.applied_log
        disk.last_applied = meta.last_log_id
        disk.membership = meta.last_membership

    @property
    def disk(self) -> MemDisk:
        """The disk this state machine writes to."""
        return self._disk

    @property
    def data(self) -> dict[str, str]:
        """The key-value data: the live dict (do not modify), or a merged copy while a
        snapshot build holds the live one frozen."""
        disk = self._disk
        if disk.kv_overlay is None:
            return disk.kv
        return _merged(disk.kv, disk.kv_overlay)

    @property
    def applied_log(self) -> list[tuple[LogId, bytes]]:
        """``(log_id, data)`` of every applied ``Normal`` entry (when recorded)."""
        return self._disk.applied_log

    async def applied_state(self) -> tuple[LogId | None, StoredMembership]:
        """``(last applied log id, last applied membership)``."""
        return self._disk.last_applied, self._disk.membership

    async def apply(self, entries: list[Entry]) -> list[Any]:
        """Apply ``entries``; one response per entry (``None`` for blank, membership and
        opaque entries)."""
        return self._apply(entries, apply_kv)

    async def apply_without_responses(self, entries: list[Entry]) -> None:
        """``apply`` for entries whose responses nobody reads (see ``RaftStateMachine``):
        the same state afterwards, without computing the responses (``apply_kv_effect``)."""
        self._apply(entries, apply_kv_effect)

    def _apply(self, entries: list[Entry], run: Callable[[KvMap, KvCommand | None], Any]) -> list[Any]:
        """Apply ``entries`` with ``run`` (``apply_kv``, or ``apply_kv_effect``: then the
        returned list is not the responses and nobody reads it)."""
        disk = self._disk
        kv: KvMap = disk.kv if disk.kv_overlay is None else _LayeredKv(disk.kv, disk.kv_overlay)
        applied_log = disk.applied_log if self.record_applied else None
        record = None if applied_log is None else applied_log.append
        responses: list[Any] = []
        out = responses.append
        # Runs of ``set`` commands go through the kernel when the data is one plain dict
        # (no snapshot build holds it frozen): the same changes, responses and records as
        # the loop below makes for them, without a decode and a Struct per entry.
        sets_to = disk.kv if disk.kv_overlay is None and type(disk.kv) is dict else None
        set_responses = responses if run is apply_kv else None
        i = 0
        n = len(entries)
        while i < n:
            if sets_to is not None:
                i = apply_kv_sets(sets_to, entries, i, Normal, set_responses, applied_log)
                if i == n:
                    break
            entry = entries[i]
            i += 1
            payload = entry.payload
            if type(payload) is Normal:
                data = payload.data
                if record is not None:
                    record((entry.log_id, data))
                if data[:1] == KV_PREFIX:
                    out(run(kv, decode_kv(data)))
                else:
                    out(None)
            else:
                if type(payload) is Membership:
                    disk.membership = StoredMembership(entry.log_id, payload)
                out(None)
        if entries:
            disk.last_applied = entries[-1].log_id
        return responses

    async def _build(self) -> Snapshot:
        disk = self._disk
        # The image, all taken at one point (no await in between): frozen kv, last applied,
        # membership, applied_log length.
        own: dict[str, Any] | None = None
        if disk.kv_overlay is None:
            kv = disk.kv
            own = disk.kv_overlay = {}
        else:  # another build holds kv frozen: this one takes a copy of the current data
            kv = _merged(disk.kv, disk.kv_overlay)
        last, membership = disk.last_applied, disk.membership
        log = disk.applied_log
        n_log = len(log)
        try:
            parts: list[bytes] = [b""]  # [0]: the header, once the body is known
            crc = length = 0
            for i, part in enumerate(_snapshot_pieces(kv, last, membership, log, n_log)):
                if i > 1:
                    await asyncio.sleep(0)  # let apply, appends and RPCs run between pieces
                parts.append(part)
                crc = zlib.crc32(part, crc)
                length += len(part)
            parts[0] = _snapshot_header(length, crc)
            body = b"".join(parts)
        finally:
            # Unfreeze (also when cancelled), unless an install replaced the data meanwhile.
            if own is not None and disk.kv_overlay is own:
                _merge_into(disk.kv, own)
                disk.kv_overlay = None
        meta = SnapshotMeta(last, membership, _snapshot_id(last))
        cur = disk.snapshot
        if cur is None or cur[0].last_log_id is None or (last is not None and last >= cur[0].last_log_id):
            disk.snapshot = (meta, body)  # never replace a newer one (installed meanwhile)
        return Snapshot(meta, io.BytesIO(body))

    def get_snapshot_builder(self) -> _SnapshotBuilder:
        """A builder; ``build_snapshot`` is a consistent image of one applied point even
        while ``apply`` runs, and does not stall the event loop (see the class docstring)."""
        return _SnapshotBuilder(self._build)

    async def begin_receiving_snapshot(self) -> BinaryIO:
        """A new empty ``io.BytesIO``."""
        return io.BytesIO()

    async def install_snapshot(self, meta: SnapshotMeta, data: BinaryIO) -> None:
        """Replace the state with the snapshot in ``data``. Raises ``ValueError`` (state
        unchanged) when ``data`` is not an intact ``MemStateMachine`` snapshot of ``meta``:
        not one, cut short, with bytes after its end, or damaged (its checksum does not
        match; for the first format, which has none, the checks of ``_check_first_format``,
        ``meta`` among them); the message says which."""
        body = _read_all(data)
        try:
            snap = _decode_snapshot(body, meta)
        except ValueError as e:
            raise ValueError(f"not a MemStateMachine snapshot ({meta.snapshot_id}): {e}") from e
        disk = self._disk
        disk.kv = snap.kv
        disk.kv_overlay = None  # a build running meanwhile keeps its own frozen image
        disk.applied_log = snap.applied_log
        disk.last_applied = meta.last_log_id
        disk.membership = meta.last_membership
        disk.snapshot = (meta, body)

    async def get_current_snapshot(self) -> Snapshot | None:
        """The last built or installed snapshot (fresh ``BytesIO``), or ``None``."""
        snap = self._disk.snapshot
        if snap is None:
            return None
        return Snapshot(snap[0], io.BytesIO(snap[1]))

    async def get_current_snapshot_meta(self) -> SnapshotMeta | None:
        """The meta of the snapshot ``get_current_snapshot`` returns, or ``None`` (the
        optional method of ``RaftStateMachine``)."""
        snap = self._disk.snapshot
        return None if snap is None else snap[0]

    def __repr__(self) -> str:
        disk = self._disk
        return f"MemStateMachine(applied={disk.last_applied!r}, keys={len(disk.kv)})"


class NoopStateMachine:
    """A ``RaftStateMachine`` that keeps only the last applied log id and membership (in
    ``disk``); every response is ``None``. For benchmarks. Its snapshots hold no data."""

    def __init__(self, disk: MemDisk | None = None) -> None:
        self._disk = disk if disk is not None else MemDisk()

    @property
    def disk(self) -> MemDisk:
        """The disk this state machine writes to."""
        return self._disk

    async def applied_state(self) -> tuple[LogId | None, StoredMembership]:
        """``(last applied log id, last applied membership)``."""
        return self._disk.last_applied, self._disk.membership

    async def apply(self, entries: list[Entry]) -> list[Any]:
        """Record the last applied log id and memberships; ``[None] * len(entries)``."""
        if not entries:
            return []
        disk = self._disk
        k = find_payload(entries, Membership)
        while k >= 0:
            entry = entries[k]
            disk.membership = StoredMembership(entry.log_id, entry.payload)  # type: ignore[arg-type]
            k = find_payload(entries, Membership, k + 1)
        disk.last_applied = entries[-1].log_id
        return [None] * len(entries)

    def _build(self) -> Snapshot:
        disk = self._disk
        meta = SnapshotMeta(disk.last_applied, disk.membership, _snapshot_id(disk.last_applied))
        disk.snapshot = (meta, b"")
        return Snapshot(meta, io.BytesIO(b""))

    def get_snapshot_builder(self) -> _SnapshotBuilder:
        """A builder of an empty-data snapshot at the last applied log id."""
        return _SnapshotBuilder(self._build)

    async def begin_receiving_snapshot(self) -> BinaryIO:
        """A new empty ``io.BytesIO``."""
        return io.BytesIO()

    async def install_snapshot(self, meta: SnapshotMeta, data: BinaryIO) -> None:
        """Adopt ``meta``'s last log id and membership; the data is ignored."""
        disk = self._disk
        disk.last_applied = meta.last_log_id
        disk.membership = meta.last_membership
        disk.snapshot = (meta, b"")

    async def get_current_snapshot(self) -> Snapshot | None:
        """The last built or installed snapshot (empty data), or ``None``."""
        snap = self._disk.snapshot
        if snap is None:
            return None
        return Snapshot(snap[0], io.BytesIO(snap[1]))

    async def get_current_snapshot_meta(self) -> SnapshotMeta | None:
        """The meta of the snapshot ``get_current_snapshot`` returns, or ``None`` (the
        optional method of ``RaftStateMachine``)."""
        snap = self._disk.snapshot
        return None if snap is None else snap[0]

    def __repr__(self) -> str:
        return f"NoopStateMachine(applied={self._disk.last_applied!r})"
