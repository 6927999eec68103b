"""The snapshot file format of ``RocksStateMachine``: writing one from a stream of key-value
pairs, and reading one back with every structural check.

A file is ``SNAPSHOT_MAGIC``, then length-prefixed frames (``_core`` ``encode_frame``), each a
msgpack ``[tag, body]``: ``["h", [last_applied, membership]]`` first, ``["d", [[key, value],
...]]`` chunks of about ``SNAPSHOT_CHUNK_BYTES``, and ``["e", pair_count]`` last (so a
truncated file is detected). Keys and values are the raw bytes the state machine stores
(utf-8). Changing the format needs a new magic: installed snapshots travel between versions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import BinaryIO

import msgspec

from .._core import FrameReader, encode_frame
from ..types import LogId, StoredMembership

__all__ = ["SNAPSHOT_CHUNK_BYTES", "SNAPSHOT_MAGIC", "read_snapshot_pairs", "write_snapshot"]

SNAPSHOT_MAGIC = b"ORPYKV1\n"
"""The first bytes of a ``RocksStateMachine`` snapshot file (see the module docstring)."""

SNAPSHOT_CHUNK_BYTES = 256 * 1024
"""Approximate size of one data frame of a snapshot (bounds the memory of build/install)."""

_MAX_FRAME = 64 * 1024 * 1024  # a frame's length limit when reading

_enc = msgspec.msgpack.Encoder()
_dec_any = msgspec.msgpack.Decoder()


def write_snapshot(
    f: BinaryIO, last: LogId | None, membership: StoredMembership, pairs: Iterable[tuple[bytes, bytes]]
) -> int:
    """Write a whole snapshot file to ``f``: the header for ``last`` / ``membership``, the
    ``pairs`` in chunks, the end frame. Returns the number of pairs. Memory: one chunk."""
    f.write(SNAPSHOT_MAGIC)
    f.write(encode_frame(_enc.encode(("h", (last, membership)))))
    chunk: list[tuple[bytes, bytes]] = []
    size = count = 0
    for k, v in pairs:
        chunk.append((k, v))
        size += len(k) + len(v) + 1  # + 1: the stored key's prefix byte (chunks as always cut)
        count += 1
        if size >= SNAPSHOT_CHUNK_BYTES:
            f.write(encode_frame(_enc.encode(("d", chunk))))
            chunk, size = [], 0
    if chunk:
        f.write(encode_frame(_enc.encode(("d", chunk))))
    f.write(encode_frame(_enc.encode(("e", count))))
    return count


def read_snapshot_pairs(data: BinaryIO, snapshot_id: str) -> Iterator[tuple[bytes, bytes]]:
    """The key-value pairs of the snapshot file ``data``, read from its start in chunks.

    Raises ``ValueError("not a RocksStateMachine snapshot (<id>): <why>")`` when ``data`` is
    not one complete, well-formed snapshot: bad magic, an undecodable or unexpected frame, a
    pair count that does not match, data after the end frame, or a truncated file. The error
    comes after the pairs read before the defect were yielded: a caller keeps nothing until
    the iteration ended without an error."""
    data.seek(0)
    if data.read(len(SNAPSHOT_MAGIC)) != SNAPSHOT_MAGIC:
        raise ValueError(f"not a RocksStateMachine snapshot ({snapshot_id}): bad magic")
    reader = FrameReader(_MAX_FRAME)
    seen_header = False
    ended = False
    count = 0
    try:
        while buf := data.read(SNAPSHOT_CHUNK_BYTES):
            for frame in reader.feed(buf):
                if ended:
                    raise ValueError("data after the end frame")
                tag, body = _dec_any.decode(frame)
                if tag == "h":
                    seen_header = True
                elif tag == "d" and seen_header:
                    for k, v in body:
                        yield k, v
                        count += 1
                elif tag == "e" and seen_header:
                    if body != count:
                        raise ValueError(f"end frame says {body} pairs, read {count}")
                    ended = True
                else:
                    raise ValueError(f"unexpected frame {tag!r}")
    except (msgspec.DecodeError, TypeError, ValueError) as e:
        raise ValueError(f"not a RocksStateMachine snapshot ({snapshot_id}): {e}") from e
    if not ended or reader.buffered():
        raise ValueError(f"not a RocksStateMachine snapshot ({snapshot_id}): truncated")
