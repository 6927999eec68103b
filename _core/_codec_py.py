"""Codec kernel, the pure-Python reference twin of ``_codec_c.pyx``.

Storage format of one entry record ``(term, index, kind, payload)``::

    +---------+---------+------+-----------------+
    | term    | index   | kind | payload ...     |
    | u64 BE  | u64 BE  | u8   | (rest of blob)  |
    +---------+---------+------+-----------------+

``kind`` is ``KIND_BLANK`` (0), ``KIND_NORMAL`` (1) or ``KIND_MEMBERSHIP`` (2); the payload
is opaque bytes. Terms and indexes must be in ``[0, 2**63)``.

Every integer argument (a term, index or kind to encode, ``plain_entries_prefix``'s bounds,
``find_payload``'s start, ``FrameReader``'s limit) is an integer as ``operator.index`` takes
it (an ``int`` subclass, ``bool``, an ``__index__`` object), never a float, not even
``2.0``; anything else raises ``operator.index``'s ``TypeError``. A term or index outside
``[0, 2**63)`` or a kind other than 0-2 raises ``CodecError`` naming the integer; the other
arguments, ``OverflowError`` outside int64 ("<argument> out of the int64 range [-2**63,
2**63)"). Both twins raise the same exception, with the same message, for the same
arguments (``tests/kernels/test_twins_agree.py``).

Stream framing: each frame is a u32 big-endian length followed by that many payload bytes.
:class:`FrameReader` splits a byte stream back into frames.

The exception classes are defined here and shared by the compiled module, so callers
catch the same types whichever implementation is loaded.
"""

from __future__ import annotations

import itertools
import operator
import struct
from collections.abc import Callable, Iterable
from typing import Any

KIND_BLANK = 0
KIND_NORMAL = 1
KIND_MEMBERSHIP = 2

HEADER_SIZE = 17
"""Bytes before the payload in an encoded entry: term u64, index u64, kind u8."""

_MAX_INT = 2**63
_MAX_FRAME = 2**32 - 1
_HEADER = struct.Struct(">QQB")
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")


class CodecError(ValueError):
    """A record, key or frame cannot be encoded or decoded."""


class FrameTooLarge(CodecError):
    """A frame is larger than the allowed maximum (the stream cannot be resynchronized)."""


def _check_int(what: str, value: Any) -> int:
    """``value`` as a plain ``int``: ``TypeError`` unless it is an integer
    (``operator.index``), ``CodecError`` outside ``[0, 2**63)``: as the compiled twin's
    conversion to ``int64_t``."""
    v = operator.index(value)
    if not 0 <= v < _MAX_INT:
        raise CodecError(f"{what} {v!r} out of range [0, 2**63)")
    return v


def _check_kind(kind: Any) -> int:
    """``kind`` as a plain ``int``: ``TypeError`` unless it is an integer, ``CodecError``
    unless it is 0, 1 or 2."""
    k = operator.index(kind)
    if not 0 <= k <= KIND_MEMBERSHIP:
        raise CodecError(f"unknown entry kind {k!r}")
    return k


def _as_int64(value: Any, what: str) -> int:
    """``value`` as a plain ``int`` in int64: ``operator.index``'s ``TypeError`` for a
    non-integer, ``OverflowError`` naming ``what`` outside ``[-2**63, 2**63)``."""
    v = operator.index(value)
    if not -_MAX_INT <= v < _MAX_INT:
        raise OverflowError(f"{what} out of the int64 range [-2**63, 2**63)")
    return v


def _range_error(term: int, index: int) -> CodecError:
    """The error for a record whose term or index is outside ``[0, 2**63)``.

    The batch loops test both bounds inline (a call per value would take a fifth of their
    time) and only come here for the message.
    """
    what, value = ("index", index) if 0 <= term < _MAX_INT else ("term", term)
    return CodecError(f"{what} {value!r} out of range [0, 2**63)")


def _record(rec: Any) -> tuple[Any, Any, Any, Any]:
    """``rec`` unpacked as ``(term, index, kind, payload)``, with Python's own errors for
    anything else (the compiled twin calls this for all but an exact 4-tuple: Cython's own
    unpacking words its errors differently)."""
    term, index, kind, payload = rec
    return term, index, kind, payload


def encode_entries(records: list[tuple[int, int, int, bytes]]) -> list[bytes]:
    """Encode ``(term, index, kind, payload)`` records, one blob each.

    ``CodecError`` for an out-of-range term/index or an unknown kind; ``TypeError`` if a
    payload is not ``bytes``.
    """
    out = []
    pack = _HEADER.pack
    for term, index, kind, payload in records:
        if type(term) is not int or type(index) is not int or type(kind) is not int:
            # Anything but plain ints: each converted and checked in turn, as the compiled
            # twin does (a float's comparisons passed, and struct then refused it).
            term = _check_int("term", term)
            index = _check_int("index", index)
            kind = _check_kind(kind)
        if not (0 <= term < _MAX_INT and 0 <= index < _MAX_INT):
            raise _range_error(term, index)
        if not 0 <= kind <= KIND_MEMBERSHIP:
            raise CodecError(f"unknown entry kind {kind!r}")
        if not isinstance(payload, bytes):
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        out.append(pack(term, index, kind) + payload)
    return out


def encode_entry_batch(
    entries: Iterable[Any],
    normal_type: type,
    membership_type: type,
    encode_membership: Callable[[Any], bytes],
) -> tuple[list[bytes], list[bytes]]:
    """Return ``(keys, records)``: for each entry, in order, ``encode_index_key(index)`` and
    the record :func:`encode_entries` makes of ``(term, index, kind, data)``. The log store's
    encoding of a batch, which it then puts into its ``WriteBatch`` pair by pair.

    Each entry has ``log_id.term``, ``log_id.index`` and ``payload``. A payload of exactly
    type ``normal_type`` is ``KIND_NORMAL`` with its ``data``; of exactly ``membership_type``,
    ``KIND_MEMBERSHIP`` with ``encode_membership(payload)``; anything else ``KIND_BLANK`` with
    no data. ``CodecError`` for an out-of-range term or index, ``TypeError`` when the data (or
    what ``encode_membership`` returns) is not ``bytes``.
    """
    keys: list[bytes] = []
    records: list[bytes] = []
    pack = _HEADER.pack
    pack_key = _U64.pack
    for e in entries:
        lid = e.log_id
        term = lid.term
        index = lid.index
        if type(term) is not int or type(index) is not int:
            term = _check_int("term", term)
            index = _check_int("index", index)
        if not (0 <= term < _MAX_INT and 0 <= index < _MAX_INT):
            raise _range_error(term, index)
        p = e.payload
        tp = type(p)
        if tp is normal_type:
            kind, data = KIND_NORMAL, p.data
        elif tp is membership_type:
            kind, data = KIND_MEMBERSHIP, encode_membership(p)
        else:
            kind, data = KIND_BLANK, b""
        if not isinstance(data, bytes):
            raise TypeError(f"payload must be bytes, not {type(data).__name__}")
        keys.append(pack_key(index))
        records.append(pack(term, index, kind) + data)
    return keys, records


def decode_entries(blobs: list[bytes]) -> list[tuple[int, int, int, bytes]]:
    """Decode blobs produced by :func:`encode_entries`; ``CodecError`` if one is malformed."""
    out = []
    unpack = _HEADER.unpack_from
    for blob in blobs:
        if len(blob) < HEADER_SIZE:
            raise CodecError(f"entry record too short: {len(blob)} bytes")
        term, index, kind = unpack(blob)
        if term >= _MAX_INT or index >= _MAX_INT:
            raise CodecError(f"term/index out of range in record ({term}, {index})")
        if kind > KIND_MEMBERSHIP:
            raise CodecError(f"unknown entry kind {kind}")
        out.append((term, index, kind, bytes(blob[HEADER_SIZE:])))
    return out


def encode_index_key(index: int) -> bytes:
    """Return the 8-byte big-endian storage key of ``index`` (sorts like the integers)."""
    _check_int("index", index)
    return _U64.pack(index)


def decode_index_key(b: bytes) -> int:
    """Inverse of :func:`encode_index_key`; ``CodecError`` unless ``b`` is a valid 8-byte key."""
    if len(b) != 8:
        raise CodecError(f"index key must be 8 bytes, got {len(b)}")
    (index,) = _U64.unpack(b)
    if index >= _MAX_INT:
        raise CodecError(f"index key out of range: {index}")
    return int(index)


def encode_frame(payload: bytes) -> bytes:
    """Return ``u32 BE length + payload``; ``FrameTooLarge`` if it does not fit in u32."""
    if len(payload) > _MAX_FRAME:
        raise FrameTooLarge(f"frame of {len(payload)} bytes")
    return _U32.pack(len(payload)) + payload


def encode_frames(payloads: list[bytes]) -> bytes:
    """Return the frames of all ``payloads`` concatenated in one buffer."""
    parts = []
    for payload in payloads:
        if len(payload) > _MAX_FRAME:
            raise FrameTooLarge(f"frame of {len(payload)} bytes")
        parts.append(_U32.pack(len(payload)))
        parts.append(payload)
    return b"".join(parts)


class FrameReader:
    """Splits a byte stream into the length-prefixed frames of :func:`encode_frame`.

    Invariants:
    - ``_buf`` holds the bytes of the incomplete frame at the end of the stream fed so
      far (fewer than 4 bytes, or a header plus fewer than ``length`` bytes).
    - once a header declares more than ``max_frame_size`` bytes the reader is broken:
      that ``feed`` and every later one raise ``FrameTooLarge``.
    """

    __slots__ = ("_max", "_buf", "_broken")

    def __init__(self, max_frame_size: int) -> None:
        if max_frame_size < 0:
            raise ValueError(f"negative max_frame_size {max_frame_size}")
        # An integer, as the compiled twin's Py_ssize_t field: TypeError for a float.
        self._max: int = operator.index(max_frame_size)
        self._buf: bytearray = bytearray()
        self._broken: bool = False

    def feed(self, data: bytes) -> list[bytes]:
        """Buffer ``data`` and return every frame payload now complete, in stream order."""
        if self._broken:
            raise FrameTooLarge("frame reader is broken by an oversized frame")
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos, end = 0, len(buf)
        while end - pos >= 4:
            n = int.from_bytes(buf[pos : pos + 4], "big")
            if n > self._max:
                self._broken = True
                raise FrameTooLarge(f"frame of {n} bytes exceeds max_frame_size {self._max}")
            if end - pos - 4 < n:
                break
            frames.append(bytes(buf[pos + 4 : pos + 4 + n]))
            pos += 4 + n
        if pos:
            del buf[:pos]
        return frames

    def buffered(self) -> int:
        """Return the number of bytes of the pending incomplete frame."""
        return len(self._buf)


def plain_entries_prefix(
    entries: list[Any],
    next_index: int,
    min_term: int,
    max_term: int,
    entry_type: Any,
    log_id_type: Any,
    normal_type: Any,
    blank_type: Any,
) -> int:
    """How many entries at the start of ``entries`` are well-formed plain entries: the fast
    path of a follower's check of an AppendEntries (``validation.check_append_entries``),
    which looks at the rest itself (explaining what is wrong, or checking a membership).

    Entry ``k`` passes while every entry before it passed and: it is exactly of
    ``entry_type``; its ``log_id`` exactly of ``log_id_type``; its index an ``int`` equal to
    ``next_index + k``; its term an ``int`` within ``[previous term, max_term]`` (the
    previous term of entry 0 is ``min_term``); its payload exactly of ``blank_type``, or of
    ``normal_type`` with ``data`` exactly ``bytes``. ``next_index``, ``min_term`` and
    ``max_term`` are ints in ``[0, 2**63)`` (so is every index and term that passes); an
    argument that is not an integer in int64 raises (module docstring). Never raises for a
    malformed entry.
    """
    nxt = _as_int64(next_index, "next_index")
    lt = _as_int64(min_term, "min_term")
    max_term = _as_int64(max_term, "max_term")
    k = 0
    for e in entries:
        if type(e) is not entry_type:
            break
        lid = e.log_id
        if type(lid) is not log_id_type:
            break
        i = lid.index
        t = lid.term
        if type(i) is not int or type(t) is not int or i != nxt or t < lt or t > max_term:
            break
        p = e.payload
        tp = type(p)
        if tp is normal_type:
            if type(p.data) is not bytes:
                break
        elif tp is not blank_type:
            break
        lt = t
        k += 1
        if nxt == _MAX_INT - 1:
            return k  # no index of int64 follows 2**63 - 1 (as in the compiled twin)
        nxt += 1
    return k


def find_payload(entries: list[Any], payload_type: Any, start: int = 0) -> int:
    """The position of the first entry of ``entries`` at or after ``start`` whose ``payload``
    is exactly of ``payload_type`` (a subclass does not count), or -1 if there is none.

    The scan a log append and a state machine make for membership entries, which are rare:
    a batch without one costs one call. ``start`` below 0 counts as 0. An entry without a
    ``payload`` attribute raises ``AttributeError``, as reading the attribute does. ``start``
    is an integer in int64 (module docstring).
    """
    first = max(_as_int64(start, "start"), 0)
    # The list's own iterator: it stops at the list's end as of each step (a ``payload``
    # read through ``getattr`` may run code that shrinks the list).
    for k, e in enumerate(itertools.islice(entries, first, None), first):
        if type(e.payload) is payload_type:
            return k
    return -1


def normal_data_bytes(entries: list[Any], normal_type: Any) -> int:
    """The sum of ``len(payload.data)`` over the entries of ``entries`` whose ``payload`` is
    exactly of ``normal_type`` (a subclass does not count); every other payload counts 0.

    The payload bytes of a log append or an AppendEntries batch, for their size limits (a
    caller adds what it counts for other payloads). An entry without a ``payload`` attribute,
    or a normal payload without ``data``, raises ``AttributeError``, as reading the attribute
    does; ``len`` of a ``data`` that is not sized raises ``TypeError``.
    """
    total = 0
    # The list's own iterator: it stops at the list's end as of each step (an attribute
    # read or a ``len`` may run code that shrinks the list).
    for e in entries:
        p = e.payload
        if type(p) is normal_type:
            total += len(p.data)
    return total
