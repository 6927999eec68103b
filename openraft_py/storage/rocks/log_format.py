"""The log store's on-disk format (one RocksDB, raw bytes keys and values):

- column family ``entries``: key ``encode_index_key(index)`` (8 bytes, big-endian, so keys sort
  like indexes), value the ``_core`` codec record ``(term, index, kind, payload)``: Blank is
  kind 0 with an empty payload, Normal kind 1 with the data, Membership kind 2 with the
  msgspec-msgpack encoding of the ``Membership`` struct.
- column family ``meta`` (msgspec-msgpack values): ``format`` (``LOG_FORMAT``, written when the
  store is created and checked on every open), ``ackmark`` (present: the store has an
  ``OPENRAFT-ACKED`` file), ``vote``, ``committed``, ``purged`` (the last purged log id),
  ``owner`` (``owner.StoreOwner``: the node id and cluster name whose log this is, written by
  ``RocksLogStore.check_owner`` when a node first starts on the store; a store without it,
  made by an earlier version or never started on, is adopted by the first node that starts
  on it. An earlier version ignores the key: it needs no new format version).
- the file ``OPENRAFT-ACKED`` (outside RocksDB, in the same directory): the acknowledged mark
  (``ackmark.py``).

Changing any of this needs a new ``LOG_FORMAT`` version and a migration.
"""

from __future__ import annotations

import msgspec
from rocksdict import ColumnFamily, WriteBatch

from ..._core import KIND_BLANK, KIND_MEMBERSHIP, KIND_NORMAL, decode_entries, encode_entries, encode_entry_batch
from ...types import BLANK, Entry, LogId, Membership, Normal
from ...validation import MAX_TERM

__all__ = [
    "END_KEY", "ENTRIES_CF", "K_ACKMARK", "K_COMMITTED", "K_FORMAT", "K_OWNER", "K_PURGED", "K_VOTE", "LOG_FORMAT",
    "META_CF", "check_stored_run", "decode_entry_records", "decode_stored_entry", "encode_entry_records",
    "put_entries",
]

LOG_FORMAT = {"format": "openraft-py-log", "version": 1}
"""The marker a ``RocksLogStore`` writes in its ``meta`` column family on creation."""

END_KEY = b"\xff" * 9  # sorts after every 8-byte index key
ENTRIES_CF = "entries"  # key encode_index_key(index), value the entry record
META_CF = "meta"  # the keys below, msgpack values
K_FORMAT = b"format"  # LOG_FORMAT
K_VOTE = b"vote"  # Vote
K_COMMITTED = b"committed"  # LogId | None
K_PURGED = b"purged"  # LogId: the last purged
K_ACKMARK = b"ackmark"  # present: the store has an OPENRAFT-ACKED file (see AckMark)
K_OWNER = b"owner"  # StoreOwner (owner.py): whose log this is

_enc = msgspec.msgpack.Encoder()
_dec_membership = msgspec.msgpack.Decoder(Membership)


def encode_entry_records(entries: list[Entry]) -> list[bytes]:
    """The ``entries`` column family values of ``entries``, in order."""
    records: list[tuple[int, int, int, bytes]] = []
    add = records.append
    for e in entries:
        p = e.payload
        lid = e.log_id
        t = type(p)
        if t is Normal:
            add((lid.term, lid.index, KIND_NORMAL, p.data))  # type: ignore[union-attr]
        elif t is Membership:
            add((lid.term, lid.index, KIND_MEMBERSHIP, _enc.encode(p)))
        else:
            add((lid.term, lid.index, KIND_BLANK, b""))
    return encode_entries(records)


def put_entries(wb: WriteBatch, cf: ColumnFamily, entries: list[Entry]) -> None:
    """Put every entry of ``entries`` into ``wb`` (raw mode) in the ``entries`` column family
    ``cf``: key ``encode_index_key(index)``, value the record ``encode_entry_records`` makes.
    One ``_core`` kernel call encodes the whole batch, then one ``put`` per entry: rocksdict
    has no batch put, and this loop costs less than the kernel's own calls to ``put`` did
    (``docs/design/performance.md``)."""
    keys, records = encode_entry_batch(entries, Normal, Membership, _enc.encode)
    put = wb.put
    for key, record in zip(keys, records):
        put(key, record, cf)


def decode_entry_records(blobs: list[bytes]) -> list[Entry]:
    """The entries of the stored values ``blobs`` (raises on a malformed record)."""
    out: list[Entry] = []
    add = out.append
    for term, index, kind, payload in decode_entries(blobs):
        if kind == KIND_NORMAL:
            add(Entry(LogId(term, index), Normal(payload)))
        elif kind == KIND_BLANK:
            add(Entry(LogId(term, index), BLANK))
        else:
            add(Entry(LogId(term, index), _dec_membership.decode(payload)))
    return out


def _entry_index_of_key(key: bytes) -> int:
    """The index an ``entries`` key stands for; ``ValueError`` naming it if it is no index key
    (not 8 bytes)."""
    if len(key) != 8:
        raise ValueError(f"the entries column family holds a key that is no entry index: {key!r}")
    return int.from_bytes(key, "big")


def decode_stored_entry(key: bytes, blob: bytes, prev_term: int = 0) -> Entry:
    """The entry stored at ``key`` with the record ``blob``, checked against the key: it must
    decode, hold the key's index, and a term in ``[prev_term, MAX_TERM]`` (``prev_term``: the
    term of the entry before it; a log's terms never decrease). ``ValueError`` naming the
    entry otherwise: a damaged record is never returned as an entry."""
    index = _entry_index_of_key(key)
    try:
        entry = decode_entry_records([blob])[0]
    except (ValueError, msgspec.DecodeError) as e:  # CodecError is a ValueError
        raise ValueError(f"the record of entry {index} (key {key.hex()}) does not decode: {e}") from e
    lid = entry.log_id
    if lid.index != index:
        raise ValueError(f"the record of entry {index} (key {key.hex()}) holds index {lid.index}: it is damaged")
    if lid.term > MAX_TERM:
        raise ValueError(f"the record of entry {index} holds term {lid.term}, above MAX_TERM: it is damaged")
    if lid.term < prev_term:
        raise ValueError(
            f"the record of entry {index} holds term {lid.term}, below the term {prev_term} of the entry "
            f"before it: it is damaged"
        )
    return entry


def check_stored_run(keys: list[bytes], blobs: list[bytes], start: int) -> list[Entry]:
    """The slow, exact reading of the records ``blobs`` stored at ``keys`` (a scan from the key
    of ``start``): the entries from ``start`` up to the first missing index (a hole: the
    caller finds the result short), each checked by ``decode_stored_entry``. ``ValueError``
    naming the entry for a damaged record or a key that is no index. Used when the fast read
    (one batch decode) found anything amiss."""
    out: list[Entry] = []
    prev_term = 0
    for i, (key, blob) in enumerate(zip(keys, blobs, strict=True)):
        if _entry_index_of_key(key) != start + i:
            break  # index start + i is missing
        entry = decode_stored_entry(key, blob, prev_term)
        prev_term = entry.log_id.term
        out.append(entry)
    return out
