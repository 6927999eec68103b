"""The log store's on-disk format (one RocksDB, raw bytes keys and values):

- column family ``entries``: key ``encode_index_key(index)`` (8 bytes, big-endian, so keys sort
  like indexes), value the ``_core`` codec record ``(term, index, kind, payload)``: Blank is
  kind 0 with an empty payload, Normal kind 1 with the data, Membership kind 2 with the
  msgspec-msgpack encoding of the ``Membership`` struct.
- column family ``meta`` (msgspec-msgpack values): ``format`` (``LOG_FORMAT``, written when the
  store is created and checked on every open), ``ackmark`` (present: the store has an
  ``OPENRAFT-ACKED`` file), ``vote``, ``committed``, ``purged`` (the last purged log id).
- the file ``OPENRAFT-ACKED`` (outside RocksDB, in the same directory): the acknowledged mark
  (``ackmark.py``).

Changing any of this needs a new ``LOG_FORMAT`` version and a migration.
"""

from __future__ import annotations

import msgspec
from rocksdict import ColumnFamily, WriteBatch

from ..._core import KIND_BLANK, KIND_MEMBERSHIP, KIND_NORMAL, decode_entries, encode_entries, encode_entry_batch
from ...types import BLANK, Entry, LogId, Membership, Normal

__all__ = [
    "END_KEY", "ENTRIES_CF", "K_ACKMARK", "K_COMMITTED", "K_FORMAT", "K_PURGED", "K_VOTE", "LOG_FORMAT", "META_CF",
    "decode_entry_records", "encode_entry_records", "put_entries",
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
