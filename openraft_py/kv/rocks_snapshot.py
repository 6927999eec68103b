"""The snapshot file format of ``RocksStateMachine``: writing one from a stream of key-value
pairs, and reading one back with every structural check.

A file is ``SNAPSHOT_MAGIC``, then length-prefixed frames (``_core`` ``encode_frame``), each a
msgpack ``[tag, body]``: ``["h", [last_applied, membership]]`` first, ``["d", [[key, value],
...]]`` chunks of about ``SNAPSHOT_CHUNK_BYTES``, and ``["e", [pair_count, crc]]`` last (so a
truncated file is detected), where ``crc`` is the CRC-32 (``zlib.crc32``) of every frame's
payload before the end frame, in order: a damaged byte anywhere is detected too (a file on a
failing disk is refused by the node it is sent to, instead of installed with wrong values).
Keys and values are the raw bytes the state machine stores (utf-8). Changing the format needs a
new magic: installed snapshots travel between versions. Files of the first format
(``SNAPSHOT_MAGIC_V1``: the end frame is ``["e", pair_count]``, no checksum) are still read.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import msgspec

from .._core import FrameReader, encode_frame
from ..types import LogId, StoredMembership

__all__ = [
    "SNAPSHOT_CHUNK_BYTES", "SNAPSHOT_MAGIC", "SNAPSHOT_MAGIC_V1", "check_snapshot", "read_snapshot_pairs",
    "write_snapshot",
]

SNAPSHOT_MAGIC = b"ORPYKV2\n"
"""The first bytes of a ``RocksStateMachine`` snapshot file (see the module docstring)."""

SNAPSHOT_MAGIC_V1 = b"ORPYKV1\n"
"""The first bytes of a snapshot file of the first format (no checksum); still read."""

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
    crc = 0

    def put(frame: tuple[str, object]) -> None:
        nonlocal crc
        payload = _enc.encode(frame)
        crc = zlib.crc32(payload, crc)
        f.write(encode_frame(payload))

    put(("h", (last, membership)))
    chunk: list[tuple[bytes, bytes]] = []
    size = count = 0
    for k, v in pairs:
        chunk.append((k, v))
        size += len(k) + len(v) + 1  # + 1: the stored key's prefix byte (chunks as always cut)
        count += 1
        if size >= SNAPSHOT_CHUNK_BYTES:
            put(("d", chunk))
            chunk, size = [], 0
    if chunk:
        put(("d", chunk))
    f.write(encode_frame(_enc.encode(("e", (count, crc)))))  # not in the checksum: it holds it
    return count


def read_snapshot_pairs(data: BinaryIO, snapshot_id: str) -> Iterator[tuple[bytes, bytes]]:
    """The key-value pairs of the snapshot file ``data``, read from its start in chunks.

    Raises ``ValueError("not a RocksStateMachine snapshot (<id>): <why>")`` when ``data`` is
    not one complete, well-formed, intact snapshot: bad magic, an undecodable or unexpected
    frame, a pair that is not two utf-8 byte strings, a pair count or checksum that does not
    match, data after the end frame, or a truncated file. The error comes after the pairs
    read before the defect were yielded (a
    damaged byte inside a value is found at the end frame): a caller keeps nothing until the
    iteration ended without an error."""
    return _read(data, snapshot_id, decode=True)


def check_snapshot(data: BinaryIO, snapshot_id: str) -> bool:
    """Check the snapshot file ``data`` whole against its checksum, without decoding its data
    frames (each is only fed to ``zlib.crc32``, which releases the GIL for large buffers):
    about the cost of reading the file. Returns ``False`` for a file of the first format,
    which has no checksum (nothing checked), ``True`` when it checked out; raises the
    ``ValueError`` of ``read_snapshot_pairs`` otherwise. Leaves ``data`` at its end."""
    data.seek(0)
    if data.read(len(SNAPSHOT_MAGIC_V1)) == SNAPSHOT_MAGIC_V1:
        return False
    for _ in _read(data, snapshot_id, decode=False):
        pass
    return True


_DATA_TAG = b"\x92\xa1d"  # msgpack ["d", ...]: an array of 2, then the 1-character string "d"


def _read(data: BinaryIO, snapshot_id: str, decode: bool) -> Iterator[tuple[bytes, bytes]]:
    """Both readers: with ``decode``, the pairs; without, the data frames of a checksummed
    file are only checksummed (told apart by their first bytes) and nothing is yielded."""
    data.seek(0)
    magic = data.read(len(SNAPSHOT_MAGIC))
    if magic not in (SNAPSHOT_MAGIC, SNAPSHOT_MAGIC_V1):
        raise ValueError(f"not a RocksStateMachine snapshot ({snapshot_id}): bad magic")
    checked = magic == SNAPSHOT_MAGIC
    decode = decode or not checked  # without a checksum, only decoding checks the data
    reader = FrameReader(_MAX_FRAME)
    seen_header = False
    ended = False
    count = 0
    crc = 0
    try:
        while buf := data.read(SNAPSHOT_CHUNK_BYTES):
            for frame in reader.feed(buf):
                if ended:
                    raise ValueError("data after the end frame")
                if not decode and seen_header and bytes(frame[:3]) == _DATA_TAG:
                    crc = zlib.crc32(frame, crc)
                    continue
                tag, body = _dec_any.decode(frame)
                if tag == "h" and not seen_header:
                    seen_header = True
                    crc = zlib.crc32(frame, crc)
                elif tag == "d" and seen_header:
                    crc = zlib.crc32(frame, crc)
                    for k, v in body:
                        # Two utf-8 byte strings, what the state machine stores: a pair of
                        # other types failed the install with a TypeError (which stops the
                        # node as a storage failure) instead of refusing the snapshot, and
                        # bytes that are not utf-8 were installed, then failed every read of
                        # the key. About 0.06 us per pair of ascii (an install: about 0.8 us per pair).
                        if type(k) is not bytes or type(v) is not bytes:
                            raise ValueError(f"pair {count} is not two byte strings: {type(k).__name__}, {type(v).__name__}")
                        if not (k.isascii() and v.isascii()):  # (ascii: utf-8 at a tenth of the cost)
                            k.decode()
                            v.decode()  # UnicodeDecodeError: named below
                        yield k, v
                        count += 1
                elif tag == "e" and seen_header:
                    n = body
                    if checked:
                        n, want = body
                        if want != crc:
                            raise ValueError("checksum mismatch: the file is damaged")
                    if decode and n != count:
                        raise ValueError(f"end frame says {n} pairs, read {count}")
                    ended = True
                else:
                    raise ValueError(f"unexpected frame {tag!r}")
    except UnicodeDecodeError as e:
        raise ValueError(f"not a RocksStateMachine snapshot ({snapshot_id}): pair {count} is not utf-8: {e}") from e
    except (msgspec.DecodeError, TypeError, ValueError, RecursionError) as e:
        # RecursionError: a frame nested deeper than the interpreter's recursion limit.
        raise ValueError(f"not a RocksStateMachine snapshot ({snapshot_id}): {e}") from e
    if not ended or reader.buffered():
        raise ValueError(f"not a RocksStateMachine snapshot ({snapshot_id}): truncated")
