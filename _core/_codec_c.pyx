# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Codec kernel, compiled. The readable contract is the twin ``_codec_py.py``.

Every integer argument is converted as ``operator.index`` converts it (never a float: a
typed ``long`` or ``int64_t`` target converts one through ``__int__`` and truncates it), or
raises the same ``TypeError`` / ``CodecError`` / ``OverflowError`` as the twin (the int64
ones by ``as_int64``, ``_int64.pxd``).
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_Append, PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.number cimport PyNumber_Index
from cpython.tuple cimport PyTuple_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF, Py_TYPE
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove

from openraft_py._core._int64 cimport as_int64_arg, small_int

# Shared with the pure twin so both raise the same types.
from openraft_py._core._codec_py import CodecError, FrameTooLarge
from openraft_py._core._codec_py import _record as _py_record

KIND_BLANK = 0
KIND_NORMAL = 1
KIND_MEMBERSHIP = 2
HEADER_SIZE = 17

cdef uint64_t _MAX_INT = 0x8000000000000000ULL
cdef Py_ssize_t _MAX_FRAME = 0xFFFFFFFF


# Big-endian u64 loads and stores as one 8-byte access (a byte swap on little-endian
# hosts): byte-at-a-time stores that the compiler merges into wider loads stall on store
# forwarding, which made these the slowest lines of encode_entries.
cdef extern from *:
    """
    #include <string.h>
    #if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
      #define __ORP_BE64(v) __builtin_bswap64(v)
    #elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
      #define __ORP_BE64(v) (v)
    #endif

    static CYTHON_INLINE void __orp_put_u64(unsigned char *p, uint64_t v) {
    #ifdef __ORP_BE64
        v = __ORP_BE64(v);
        memcpy(p, &v, 8);
    #else
        int i;
        for (i = 7; i >= 0; i--) { p[i] = (unsigned char)(v & 0xFF); v >>= 8; }
    #endif
    }

    static CYTHON_INLINE uint64_t __orp_get_u64(const unsigned char *p) {
    #ifdef __ORP_BE64
        uint64_t v;
        memcpy(&v, p, 8);
        return __ORP_BE64(v);
    #else
        uint64_t v = 0;
        int i;
        for (i = 0; i < 8; i++) v = (v << 8) | p[i];
        return v;
    #endif
    }
    """
    void _put_u64 "__orp_put_u64"(unsigned char* p, uint64_t v) noexcept nogil
    uint64_t _get_u64 "__orp_get_u64"(const unsigned char* p) noexcept nogil


cdef inline void _put_u32(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = <unsigned char>(v >> 24)
    p[1] = <unsigned char>(v >> 16)
    p[2] = <unsigned char>(v >> 8)
    p[3] = <unsigned char>v


cdef inline uint32_t _get_u32(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef int64_t _range_error(str what, object value) except -1:
    raise CodecError(f"{what} {value!r} out of range [0, 2**63)")


# Terms and indexes are nearly always exact ints of one CPython digit (< 2**30): read those
# in place (``small_int``), as Cython's own int conversions do (the call to
# PyLong_AsLongLongAndOverflow was 6% of encode_entry_batch).
cdef inline int64_t _as_index(str what, object value) except? -1:
    """``value`` as an index or term: ``operator.index``'s ``TypeError`` for a non-integer,
    ``CodecError`` (naming the integer, as the twin) outside ``[0, 2**63)``."""
    cdef int64_t small
    if small_int(value, &small) and small >= 0:
        return small
    return _as_index_slow(what, value)


cdef int64_t _as_index_slow(str what, object value) except? -1:
    """``_as_index`` of anything but a small non-negative int (out of line: the inline fast
    path stays small in the batch loops)."""
    cdef int overflow = 0
    cdef long long v
    value = PyNumber_Index(value)  # one __index__ call; the error message names its result
    v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow or v < 0:
        return _range_error(what, value)
    return v


cdef inline unsigned char _as_kind(object value) except? 255:
    """``value`` as an entry kind: ``operator.index``'s ``TypeError`` for a non-integer,
    ``CodecError`` (naming the integer, as the twin) unless it is 0, 1 or 2."""
    cdef int64_t small
    if small_int(value, &small) and 0 <= small <= 2:
        return <unsigned char>small
    return _as_kind_slow(value)


cdef unsigned char _as_kind_slow(object value) except? 255:
    """``_as_kind`` of anything but a small int 0-2 (out of line, as ``_as_index_slow``)."""
    value = PyNumber_Index(value)
    if not 0 <= value <= 2:
        raise CodecError(f"unknown entry kind {value!r}")
    return <unsigned char>(<long>value)


cdef inline bytes _record(int64_t term, int64_t index, unsigned char kind, bytes data):
    """One entry record: the 17-byte header (term, index: u64 big-endian; kind: u8), then
    ``data``. ``term`` and ``index`` are checked (``_as_index``) by the caller."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef bytes blob = PyBytes_FromStringAndSize(NULL, 17 + n)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(blob)
    _put_u64(p, <uint64_t>term)
    _put_u64(p + 8, <uint64_t>index)
    p[16] = kind
    if n:
        memcpy(p + 17, PyBytes_AS_STRING(data), n)
    return blob


cdef inline bytes _index_key(int64_t index):
    """The 8-byte big-endian storage key of a checked ``index``."""
    cdef bytes key = PyBytes_FromStringAndSize(NULL, 8)
    _put_u64(<unsigned char*>PyBytes_AS_STRING(key), <uint64_t>index)
    return key


def encode_entries(records) -> list:
    """Encode ``(term, index, kind, payload)`` records, one blob each."""
    cdef list out = []
    cdef int64_t term, index
    cdef unsigned char kind
    for rec in records:
        if type(rec) is not tuple or PyTuple_GET_SIZE(rec) != 4:
            rec = _py_record(rec)  # Python's own errors for what is not 4 values
        t, i, k, payload = <tuple>rec
        term = _as_index("term", t)
        index = _as_index("index", i)
        kind = _as_kind(k)
        if not isinstance(payload, bytes):
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        out.append(_record(term, index, kind, payload))
    return out


# -- attribute reads straight from instance slots ---------------------------------------
#
# _Field, its fields, its inline ``get`` and the C helpers it uses are declared in
# _codec_c.pxd (why slots: see there), so that the other kernels read them the same way.

@cython.final
cdef class _Field:
    """Reads the attribute ``name`` as ``getattr`` does, from the instance slot when the
    object's type keeps it in a plain member slot and reads attributes generically."""

    def __cinit__(self, str name):
        self.name = name
        self._tp = NULL
        self._tag = 0
        self._offset = -1

    cdef int _resolve(self, object obj) except -1:
        cdef object tp = type(obj)
        cdef PyTypeObject* t = <PyTypeObject*>tp
        # _PyType_Lookup: the attribute on the type by MRO (borrowed); it also gives the type
        # a version tag. A member descriptor is a data descriptor, so it beats the
        # instance dict, as in generic getattr.
        cdef Py_ssize_t offset = _member_offset(_PyType_Lookup(t, <PyObject*>self.name))
        cdef unsigned int tag = _version_tag(t)
        # Without a tag (none left to give) a change to the type would go unseen: getattr.
        if tag == 0 or not _generic_getattr(t):
            offset = -1
        self._tp = t
        self._tag = tag
        self._offset = offset
        self._tp_ref = tp  # last: the old type's release may run code that reads this _Field
        return 0


cdef _Field _LOG_ID = _Field("log_id")
cdef _Field _PAYLOAD = _Field("payload")
cdef _Field _TERM = _Field("term")
cdef _Field _INDEX = _Field("index")
cdef _Field _DATA = _Field("data")


cdef extern from "Python.h":
    void PyObject_GC_Track(object op)
    void PyObject_GC_UnTrack(object op)


cdef list _presized(object items):
    """A list of ``len(items)`` NULL slots for a list or tuple (empty for other iterables),
    hidden from the garbage collector until ``_finish``: no Python code (a
    ``gc.get_objects()`` in a callback) can see the unset slots. Appends and their regrowth
    were a tenth of ``encode_entry_batch``'s time."""
    cdef Py_ssize_t n = len(items) if type(items) is list or type(items) is tuple else 0
    cdef list out = PyList_New(n)
    PyObject_GC_UnTrack(out)
    return out


cdef inline int _store(list out, Py_ssize_t i, object item) except -1:
    """``out[i] = item`` into a ``_presized`` list's unset slot, or an append past its end."""
    if i < PyList_GET_SIZE(out):
        Py_INCREF(item)  # PyList_SET_ITEM steals a reference
        PyList_SET_ITEM(out, i, item)
        return 0
    return PyList_Append(out, item)


cdef int _finish(list out, Py_ssize_t n) except -1:
    """Drop the unset slots past the first ``n`` and give ``out`` back to the collector."""
    if n < PyList_GET_SIZE(out):
        del out[n:]
    PyObject_GC_Track(out)
    return 0


def encode_entry_batch(entries, normal_type, membership_type, encode_membership) -> tuple:
    """Return ``(keys, records)`` of a batch of entries (see ``_codec_py.encode_entry_batch``)."""
    cdef Py_ssize_t i = 0
    cdef list keys = _presized(entries)
    cdef list records = _presized(entries)
    cdef int64_t term, index
    cdef unsigned char kind
    cdef object lid, payload, tp, data
    for e in entries:
        lid = _LOG_ID.get(e)
        term = _as_index("term", _TERM.get(lid))
        index = _as_index("index", _INDEX.get(lid))
        payload = _PAYLOAD.get(e)
        tp = type(payload)
        if tp is normal_type:
            kind = 1
            data = _DATA.get(payload)
        elif tp is membership_type:
            kind = 2
            data = encode_membership(payload)
        else:
            kind = 0
            data = b""
        if not isinstance(data, bytes):
            raise TypeError(f"payload must be bytes, not {type(data).__name__}")
        _store(keys, i, _index_key(index))
        _store(records, i, _record(term, index, kind, data))
        i += 1
    _finish(keys, i)
    _finish(records, i)
    return keys, records


cdef tuple _KINDS = (0, 1, 2)


def decode_entries(blobs) -> list:
    """Decode blobs produced by ``encode_entries``; ``CodecError`` if one is malformed."""
    cdef Py_ssize_t i = 0, n
    cdef list out = _presized(blobs)
    cdef const unsigned char* p
    cdef uint64_t term, index, last_term = 0
    cdef unsigned char kind
    cdef bytes b
    # The int of the last term seen: a batch's records nearly all share it, so no
    # conversion per record (nor for the kind, from _KINDS).
    cdef object term_obj = None
    for blob in blobs:
        b = blob if type(blob) is bytes else bytes(blob)
        n = PyBytes_GET_SIZE(b)
        if n < 17:
            raise CodecError(f"entry record too short: {n} bytes")
        p = <const unsigned char*>PyBytes_AS_STRING(b)
        term = _get_u64(p)
        index = _get_u64(p + 8)
        kind = p[16]
        if term >= _MAX_INT or index >= _MAX_INT:
            raise CodecError(f"term/index out of range in record ({term}, {index})")
        if kind > 2:
            raise CodecError(f"unknown entry kind {kind}")
        if term_obj is None or term != last_term:
            term_obj = <int64_t>term
            last_term = term
        _store(out, i, (term_obj, <int64_t>index, _KINDS[kind],
                        PyBytes_FromStringAndSize(<const char*>p + 17, n - 17)))
        i += 1
    _finish(out, i)
    return out


def encode_index_key(index) -> bytes:
    """Return the 8-byte big-endian storage key of ``index``."""
    return _index_key(_as_index("index", index))


def decode_index_key(b) -> int:
    """Inverse of ``encode_index_key``; ``CodecError`` unless ``b`` is a valid 8-byte key."""
    cdef bytes k = b if type(b) is bytes else bytes(b)
    cdef uint64_t v
    if PyBytes_GET_SIZE(k) != 8:
        raise CodecError(f"index key must be 8 bytes, got {PyBytes_GET_SIZE(k)}")
    v = _get_u64(<const unsigned char*>PyBytes_AS_STRING(k))
    if v >= _MAX_INT:
        raise CodecError(f"index key out of range: {v}")
    return <int64_t>v


def encode_frame(payload) -> bytes:
    """Return ``u32 BE length + payload``; ``FrameTooLarge`` if it does not fit in u32.
    ``TypeError`` for ``None``, as for any other object that is not bytes-like (a typed
    memoryview takes ``None`` as an empty buffer: this encoded a frame of 0 bytes)."""
    cdef const unsigned char[::1] mv
    cdef Py_ssize_t n
    cdef bytes out
    cdef unsigned char* p
    if payload is None:
        raise TypeError("a bytes-like object is required, not 'NoneType'")
    mv = payload
    n = mv.shape[0]
    if n > _MAX_FRAME:
        raise FrameTooLarge(f"frame of {n} bytes")
    out = PyBytes_FromStringAndSize(NULL, 4 + n)
    p = <unsigned char*>PyBytes_AS_STRING(out)
    _put_u32(p, <uint32_t>n)
    if n:
        memcpy(p + 4, &mv[0], n)
    return out


def encode_frames(payloads) -> bytes:
    """Return the frames of all ``payloads`` concatenated in one buffer."""
    cdef list items = payloads if type(payloads) is list else list(payloads)
    cdef Py_ssize_t total = 0, n, pos = 0
    cdef const unsigned char[::1] mv
    cdef bytes out
    cdef unsigned char* p
    for payload in items:
        n = len(payload)
        if n > _MAX_FRAME:
            raise FrameTooLarge(f"frame of {n} bytes")
        total += 4 + n
    out = PyBytes_FromStringAndSize(NULL, total)
    p = <unsigned char*>PyBytes_AS_STRING(out)
    for payload in items:
        mv = payload
        n = mv.shape[0]
        _put_u32(p + pos, <uint32_t>n)
        if n:
            memcpy(p + pos + 4, &mv[0], n)
        pos += 4 + n
    return out


cdef class FrameReader:
    """Splits a byte stream into length-prefixed frames (see ``_codec_py.FrameReader``).

    A frame that arrives in pieces (a large AppendEntries or snapshot chunk comes in reads
    of 64-256 KiB) is copied once: from the first piece on, into a bytes object of the
    length its header announced, which ``feed`` returns when the last piece arrives. The
    reader no longer grows a buffer to the frame's size and copies the frame out of it
    again (one copy and the buffer's regrowth less per frame; the buffer, which kept the
    capacity of the largest frame ever received for the connection's life, stays small)."""

    def __cinit__(self):
        self._buf = NULL
        self._start = 0
        self._end = 0
        self._cap = 0
        self._broken = False
        self._frame = None
        self._need = 0
        self._have = 0

    def __init__(self, max_frame_size):
        if max_frame_size < 0:
            raise ValueError(f"negative max_frame_size {max_frame_size}")
        self._max = min(max_frame_size, _MAX_FRAME)

    def __dealloc__(self):
        PyMem_Free(self._buf)

    cdef int _append(self, const unsigned char* data, Py_ssize_t n) except -1:
        cdef Py_ssize_t live = self._end - self._start
        cdef Py_ssize_t cap
        cdef unsigned char* nb
        if n == 0:
            return 0
        if self._start and live:
            memmove(self._buf, self._buf + self._start, live)
        self._start = 0
        self._end = live
        if live + n > self._cap:
            cap = max(live + n, 2 * self._cap, 4096)
            nb = <unsigned char*>PyMem_Realloc(self._buf, cap)
            if nb == NULL:
                raise MemoryError()
            self._buf = nb
            self._cap = cap
        memcpy(self._buf + self._end, data, n)
        self._end += n
        return 0

    cdef int _begin_frame(self, const unsigned char* data, Py_ssize_t have, Py_ssize_t n) except -1:
        """Start the frame of ``n`` payload bytes whose first ``have`` (< ``n``) are at
        ``data``: they go into ``_frame``, allocated to its full length."""
        self._frame = PyBytes_FromStringAndSize(NULL, n)
        if have:
            memcpy(PyBytes_AS_STRING(self._frame), data, have)
        self._need = n
        self._have = have
        return 0

    def feed(self, data) -> list:
        """Buffer ``data`` and return every frame payload now complete, in stream order.
        ``TypeError`` for ``None``, as for any other object that is not bytes-like (a typed
        memoryview takes ``None`` as an empty buffer: this returned no frames)."""
        cdef const unsigned char[::1] mv
        cdef Py_ssize_t dn
        cdef const unsigned char* src
        cdef const unsigned char* p
        cdef Py_ssize_t pos = 0, end, take
        cdef uint32_t n
        cdef list frames = []
        cdef bint from_buf
        if self._broken:
            raise FrameTooLarge("frame reader is broken by an oversized frame")
        if data is None:
            raise TypeError("a bytes-like object is required, not 'NoneType'")
        mv = data
        dn = mv.shape[0]
        src = &mv[0] if dn else NULL
        if self._frame is not None:
            # The next piece of the frame in progress, straight into its place.
            take = min(dn, self._need - self._have)
            if take:
                memcpy(PyBytes_AS_STRING(self._frame) + self._have, src, take)
            self._have += take
            if self._have < self._need:
                return frames
            frames.append(self._frame)
            self._frame = None
            self._need = self._have = 0
            src += take
            dn -= take
        from_buf = self._end != self._start
        if not from_buf:
            # Fast path: nothing pending, parse straight from the input.
            p = src
            end = dn
        else:
            self._append(src, dn)
            p = self._buf + self._start
            end = self._end - self._start
        while end - pos >= 4:
            n = _get_u32(p + pos)
            if n > self._max:
                self._broken = True
                self._start = self._end = 0
                raise FrameTooLarge(f"frame of {n} bytes exceeds max_frame_size {self._max}")
            if end - pos - 4 < n:
                self._begin_frame(p + pos + 4, end - pos - 4, n)
                pos = end
                break
            frames.append(PyBytes_FromStringAndSize(<const char*>p + pos + 4, n))
            pos += 4 + n
        if from_buf:
            self._start += pos
            if self._start == self._end:
                self._start = self._end = 0
        elif pos < end:
            self._append(p + pos, end - pos)
        return frames

    def buffered(self) -> int:
        """Return the number of bytes of the pending incomplete frame."""
        if self._frame is not None:
            return 4 + self._have
        return self._end - self._start


def plain_entries_prefix(list entries, next_index, min_term, max_term, entry_type, log_id_type, normal_type, blank_type) -> int:
    """How many entries at the start of ``entries`` are well-formed plain entries (the
    contract is in the twin). Attributes are read from their slots (``_Field``)."""
    cdef Py_ssize_t k
    cdef Py_ssize_t n = len(entries)
    cdef int64_t nxt, lt, hi, i, t
    # Converted as the twin does (a typed int64_t target truncated a float: next_index=1.5
    # passed the entry at index 1).
    nxt = as_int64_arg(next_index, "next_index")
    lt = as_int64_arg(min_term, "min_term")
    hi = as_int64_arg(max_term, "max_term")
    k = 0
    # At most the entries whose indexes nxt, nxt + 1, ... are int64 (past 2**63 - 1 nxt would
    # wrap around to -2**63; the twin's Python int goes on to 2**63, which no int64 index
    # equals): so nxt += 1 below never overflows where it is compared.
    if nxt > 0 and n - 1 > 0x7FFFFFFFFFFFFFFF - nxt:
        n = <Py_ssize_t>(0x7FFFFFFFFFFFFFFF - nxt + 1)
    # One ``try`` around the loop, not one per entry (entering a ``try`` saves the thread's
    # exception state): the only OverflowError possible here is an int index or term past
    # int64 (entries and log ids are of the exact types given, read from their slots), and
    # entry ``k`` fails then.
    try:
        # The list's length is read again at each step, as the twin's list iterator does: an
        # attribute read (a property of a caller's entry type) may run code that shrinks it
        # (the entry at k was read past the list's end: a segmentation fault).
        while k < n and k < PyList_GET_SIZE(entries):
            e = entries[k]
            if type(e) is not entry_type:
                return k
            lid = _LOG_ID.get(e)
            if type(lid) is not log_id_type:
                return k
            oi = _INDEX.get(lid)
            ot = _TERM.get(lid)
            if type(oi) is not int or type(ot) is not int:
                return k
            i = oi
            t = ot
            if i != nxt or t < lt or t > hi:
                return k
            p = _PAYLOAD.get(e)
            tp = type(p)
            if tp is normal_type:
                if type(_DATA.get(p)) is not bytes:
                    return k
            elif tp is not blank_type:
                return k
            lt = t
            nxt = <int64_t>(<uint64_t>nxt + 1)  # wraps only after the last entry looked at
            k += 1
    except OverflowError:
        return k
    return k


def find_payload(list entries, payload_type, start=0) -> int:
    """The position of the first entry at or after ``start`` whose payload is exactly of
    ``payload_type``, or -1 (the contract is in the twin). ``payload`` is read from its slot
    (``_Field``); the list's length is read again at each step (a ``payload`` read through
    ``getattr`` may run code that shrinks the list)."""
    cdef int64_t s = as_int64_arg(start, "start")
    cdef Py_ssize_t k = <Py_ssize_t>s if s > 0 else 0
    while k < PyList_GET_SIZE(entries):
        e = entries[k]
        if type(_PAYLOAD.get(e)) is payload_type:
            return k
        k += 1
    return -1


def normal_data_bytes(list entries, normal_type) -> int:
    """The sum of ``len(payload.data)`` over the entries whose payload is exactly of
    ``normal_type`` (the contract is in the twin). ``payload`` and ``data`` are read from
    their slots (``_Field``); the list's length is read again at each step (a read through
    ``getattr``, or a ``len``, may run code that shrinks the list)."""
    cdef Py_ssize_t k = 0
    cdef Py_ssize_t total = 0
    while k < PyList_GET_SIZE(entries):
        e = entries[k]
        p = _PAYLOAD.get(e)
        if type(p) is normal_type:
            d = _DATA.get(p)
            if type(d) is bytes:
                total += PyBytes_GET_SIZE(d)
            else:
                total += len(d)
        k += 1
    return total
