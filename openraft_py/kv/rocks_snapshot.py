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
(``SNAPSHOT_MAGIC_V1``: the end frame is ``["e", pair_count]``, no checksum) are still read,
with every check their content allows (see ``_read``): a damaged byte inside a value that
still decodes is the one damage that goes unseen in them.
"""

from __future__ import annotations

import io
import time
import zlib
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import msgspec

from .._core import FrameReader, FrameTooLarge, encode_frame
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


_MAX_FRAME = 2**32 - 1  # the longest frame a 4-byte length holds (reading also stops at the file's size)

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
    not one complete, well-formed, intact snapshot: bad magic (a magic of another format,
    ``ORPYKV<n>``, is named with the formats this version reads), a damaged frame length, an
    undecodable or unexpected frame (named by its number), a data frame that is not a list
    of pairs, a pair that is not two utf-8 byte strings, an end frame without a pair count
    (and checksum), a pair count or checksum that does not match, in a file of the first
    format a key not after the one before it, data after the end frame, or a truncated
    file. The error comes after the pairs
    read before the defect were yielded (a
    damaged byte inside a value is found at the end frame): a caller keeps nothing until the
    iteration ended without an error."""
    return _read(data, snapshot_id, decode=True)


def check_snapshot(data: BinaryIO, snapshot_id: str) -> bool:
    """Check the snapshot file ``data`` whole. A file of the current format is checked against
    its checksum, without decoding its data frames (each is only fed to ``zlib.crc32``, which
    releases the GIL for large buffers): about the cost of reading the file; returns ``True``.
    A file of the first format has no checksum: it is read whole with every check
    ``read_snapshot_pairs`` makes (its pairs decoded, not kept); returns ``False``. Raises the
    ``ValueError`` of ``read_snapshot_pairs`` when the file is damaged. Leaves ``data`` at its
    end."""
    data.seek(0)
    checked = data.read(len(SNAPSHOT_MAGIC)) == SNAPSHOT_MAGIC
    for n, _ in enumerate(_read(data, snapshot_id, decode=not checked), 1):
        if n % 1000 == 0:
            time.sleep(0)  # (a worker thread decoding: the event loop's thread may take the GIL)
    return checked


def _bad_magic(magic: bytes) -> str:
    """Why a file starting with ``magic`` is not read: a snapshot of another format version
    (``ORPYKV<n>\\n``: a newer release's, sent by a leader upgraded before this follower), or
    not a snapshot at all."""
    prefix = SNAPSHOT_MAGIC[:6]  # b"ORPYKV"
    if magic[:6] == prefix and magic[7:] == b"\n" and magic[6:7].isdigit():
        found, newest = int(magic[6:7]), int(SNAPSHOT_MAGIC[6:7])
        why = f"it is of snapshot format {found} ({magic[:7].decode()}); this version of openraft-py reads formats 1 to {newest}"
        if found > newest:
            why += (": it was written by a newer version (upgrade this node: followers before the leader, "
                    "docs/guides/upgrading.md)")
        return why
    return "bad magic"


_DATA_TAG = b"\x92\xa1d"  # msgpack ["d", ...]: an array of 2, then the 1-character string "d"


def _read(data: BinaryIO, snapshot_id: str, decode: bool) -> Iterator[tuple[bytes, bytes]]:
    """Both readers: with ``decode``, the pairs; without, the data frames of a checksummed
    file are only checksummed (told apart by their first bytes) and nothing is yielded.

    A file of the first format has no checksum: a damaged byte inside a key or value that
    leaves the frames decodable cannot be found. What can be checked is: the structure of
    every frame, the pair count, utf-8, and the order of the keys (the state machine wrote
    them from a RocksDB scan, in strictly ascending order: a damaged or repeated key, or a
    chunk out of place, breaks it)."""
    data.seek(0)
    magic = data.read(len(SNAPSHOT_MAGIC))
    if magic not in (SNAPSHOT_MAGIC, SNAPSHOT_MAGIC_V1):
        raise ValueError(f"not a RocksStateMachine snapshot ({snapshot_id}): {_bad_magic(magic)}")
    checked = magic == SNAPSHOT_MAGIC
    decode = decode or not checked  # without a checksum, only decoding checks the data
    # No frame is longer than the file: a longer length is damaged, found at once. (A fixed
    # limit, 64 MiB, refused every snapshot holding a value that size or larger, which a
    # Config with a larger max_entry_bytes lets a client write: no follower could install
    # any snapshot of that state, and its own node took each for damaged.)
    data.seek(0, io.SEEK_END)
    size = data.tell()
    data.seek(len(magic))
    reader = FrameReader(min(size, _MAX_FRAME))
    seen_header = False
    ended = False
    frames = 0  # frames read, the current one included
    count = 0
    crc = 0
    prev_key = b""  # (first format) the last key read: keys ascend strictly
    try:
        while buf := data.read(SNAPSHOT_CHUNK_BYTES):
            try:
                got = reader.feed(buf)
            except FrameTooLarge as e:
                raise ValueError(f"a frame's length is damaged: {e} (the whole file has {size} bytes)") from e
            for frame in got:
                frames += 1
                if ended:
                    raise ValueError("data after the end frame")
                if not decode and seen_header and bytes(frame[:3]) == _DATA_TAG:
                    crc = zlib.crc32(frame, crc)
                    continue
                try:
                    decoded = _dec_any.decode(frame)
                except msgspec.DecodeError as e:
                    raise ValueError(f"frame {frames} does not decode: {e}") from e
                if type(decoded) is not list or len(decoded) != 2:
                    raise ValueError(f"frame {frames} is not a [tag, body] pair: {type(decoded).__name__}")
                tag, body = decoded
                if tag == "h" and not seen_header:
                    seen_header = True
                    crc = zlib.crc32(frame, crc)
                elif tag == "d" and seen_header:
                    crc = zlib.crc32(frame, crc)
                    if type(body) is not list:
                        raise ValueError(f"data frame {frames} holds {type(body).__name__}, not a list of pairs")
                    for pair in body:
                        # Two utf-8 byte strings, what the state machine stores: a pair of
                        # other types failed the install with a TypeError (which stops the
                        # node as a storage failure) instead of refusing the snapshot, and
                        # bytes that are not utf-8 were installed, then failed every read of
                        # the key. About 0.06 us per pair of ascii (an install: about 0.8 us per pair).
                        try:
                            k, v = pair
                        except (TypeError, ValueError):
                            raise ValueError(f"pair {count} is not a [key, value] pair: {type(pair).__name__}") from None
                        if type(k) is not bytes or type(v) is not bytes:
                            raise ValueError(f"pair {count} is not two byte strings: {type(k).__name__}, {type(v).__name__}")
                        if not (k.isascii() and v.isascii()):  # (ascii: utf-8 at a tenth of the cost)
                            k.decode()
                            v.decode()  # UnicodeDecodeError: named below
                        if not checked:
                            if k <= prev_key and count:
                                raise ValueError(
                                    f"pair {count}'s key {k[:40]!r} is not after the key before it, {prev_key[:40]!r} "
                                    "(keys are written in ascending order: the file is damaged)"
                                )
                            prev_key = k
                        yield k, v
                        count += 1
                elif tag == "e" and seen_header:
                    if checked:
                        if not (type(body) is list and len(body) == 2 and all(type(x) is int for x in body)):
                            raise ValueError(f"the end frame holds {type(body).__name__}, not [pair count, checksum]")
                        n, want = body
                        if want != crc:
                            raise ValueError("checksum mismatch: the file is damaged")
                    else:
                        n = body
                        if type(n) is not int:
                            raise ValueError(f"the end frame holds {type(n).__name__}, not a pair count")
                    if decode and n != count:
                        raise ValueError(f"end frame says {n} pairs, read {count}")
                    ended = True
                else:
                    raise ValueError(f"unexpected frame {str(tag)[:40]!r}")
    except UnicodeDecodeError as e:
        raise ValueError(f"not a RocksStateMachine snapshot ({snapshot_id}): pair {count} is not utf-8: {e}") from e
    except (msgspec.DecodeError, TypeError, ValueError, RecursionError) as e:
        # RecursionError: a frame nested deeper than the interpreter's recursion limit.
        raise ValueError(f"not a RocksStateMachine snapshot ({snapshot_id}): {e}") from e
    if not ended or reader.buffered():
        raise ValueError(f"not a RocksStateMachine snapshot ({snapshot_id}): truncated")
