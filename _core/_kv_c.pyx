# cython: language_level=3, boundscheck=False, wraparound=False
"""Key-value kernel, compiled. The readable contract is the twin ``_kv_py.py``."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.list cimport PyList_Append, PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

from openraft_py._core._codec_c cimport _Field
from openraft_py._core._int64 cimport as_int64_arg

# A key or value is nearly always ASCII: check 8 bytes at a time and copy them into a new
# compact ASCII string, without PyUnicode_DecodeUTF8's decoding loop (its ASCII scan and
# decoding calls were an eighth of the kernel's instructions). Anything else goes to the
# decoder.
cdef extern from *:
    """
    #include <string.h>
    /* 1 when s[:n] is ASCII (no byte with its high bit set), eight bytes at a time. */
    static int __orp_ascii(const char *s, Py_ssize_t n) {
        const unsigned char *p = (const unsigned char *)s;
        Py_ssize_t i = 0;
        uint64_t w;
        for (; i + 8 <= n; i += 8) {
            memcpy(&w, p + i, 8);
            if (w & 0x8080808080808080ULL) return 0;
        }
        for (; i < n; i++)
            if (p[i] & 0x80) return 0;
        return 1;
    }
    static PyObject *__orp_utf8_str(const char *s, Py_ssize_t n) {
        PyObject *u;
        if (!__orp_ascii(s, n)) return PyUnicode_DecodeUTF8(s, n, NULL);
        u = PyUnicode_New(n, 127);
        if (u != NULL && n)
            memcpy(PyUnicode_1BYTE_DATA(u), s, (size_t)n);
        return u;
    }
    """
    # The str of the UTF-8 bytes s[:n]; UnicodeDecodeError when they are not strict UTF-8.
    object _utf8_str "__orp_utf8_str"(const char* s, Py_ssize_t n)

cdef extern from *:
    """
    /* 1 when s[:n] is strict UTF-8 (what __orp_utf8_str takes), 0 when not, -1 on another
       error; no string is kept (ASCII, nearly always, is checked without one). */
    static int __orp_utf8_ok(const char *s, Py_ssize_t n) {
        PyObject *u;
        if (__orp_ascii(s, n)) return 1;
        u = PyUnicode_DecodeUTF8(s, n, NULL);
        if (u != NULL) {
            Py_DECREF(u);
            return 1;
        }
        if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    """
    int _utf8_ok "__orp_utf8_ok"(const char* s, Py_ssize_t n) except -1

cdef _Field _LOG_ID = _Field("log_id")
cdef _Field _PAYLOAD = _Field("payload")
cdef _Field _DATA = _Field("data")

KV_SET_HEADER = b"\xc1\x93\xa3set"
cdef enum:
    _HEADER_SIZE = 6  # len(KV_SET_HEADER)


cdef inline Py_ssize_t _str_at(const unsigned char* p, Py_ssize_t pos, Py_ssize_t n,
                               Py_ssize_t* length) noexcept:
    """The start of the msgpack str whose header is at ``p[pos]`` (its length in
    ``length``), or -1 when there is none there."""
    cdef unsigned char b
    if pos >= n:
        return -1
    b = p[pos]
    if 0xA0 <= b <= 0xBF:  # fixstr
        length[0] = b & 0x1F
        return pos + 1
    if b == 0xD9:  # str8
        if pos + 2 > n:
            return -1
        length[0] = p[pos + 1]
        return pos + 2
    if b == 0xDA:  # str16
        if pos + 3 > n:
            return -1
        length[0] = (<Py_ssize_t>p[pos + 1] << 8) | p[pos + 2]
        return pos + 3
    if b == 0xDB:  # str32
        if pos + 5 > n:
            return -1
        length[0] = ((<Py_ssize_t>p[pos + 1] << 24) | (<Py_ssize_t>p[pos + 2] << 16)
                     | (<Py_ssize_t>p[pos + 3] << 8) | p[pos + 4])
        return pos + 5
    return -1


cdef bytes _prefixed(const char* prefix, Py_ssize_t np, const char* s, Py_ssize_t n):
    """A new ``bytes`` of ``prefix[:np] + s[:n]`` (one allocation, two copies)."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, np + n)
    cdef char* q = PyBytes_AS_STRING(out)
    if np:
        memcpy(q, prefix, <size_t>np)
    if n:
        memcpy(q + np, s, <size_t>n)
    return out


def apply_kv_sets(dict kv, list entries not None, start, normal_type,
                  list responses, list applied_log, dict puts=None, bytes key_prefix not None=b"") -> int:
    """See ``_kv_py.apply_kv_sets``."""
    cdef Py_ssize_t i, n = PyList_GET_SIZE(entries), m, ks, kl = 0, vs, vl = 0
    # ``start`` as the twin converts it (operator.index, int64), with its messages.
    cdef int64_t s = as_int64_arg(start, "start")
    cdef const unsigned char* p
    cdef PyObject* prev
    cdef object entry, payload, data, key, value
    cdef const char* kp = PyBytes_AS_STRING(key_prefix)
    cdef Py_ssize_t nkp = PyBytes_GET_SIZE(key_prefix)
    if kv is None and responses is not None:
        raise TypeError("kv must be a dict, got NoneType")
    i = <Py_ssize_t>s if s > 0 else 0
    while i < n:
        entry = <object>PyList_GET_ITEM(entries, i)
        payload = _PAYLOAD.get(entry)
        if type(payload) is not normal_type:
            return i
        data = _DATA.get(payload)
        if type(data) is not bytes:
            return i
        p = <const unsigned char*>PyBytes_AS_STRING(data)
        m = PyBytes_GET_SIZE(data)
        if (m < _HEADER_SIZE or p[0] != 0xC1 or p[1] != 0x93 or p[2] != 0xA3
                or p[3] != 0x73 or p[4] != 0x65 or p[5] != 0x74):  # 0xc1 0x93 0xa3 "set"
            return i
        ks = _str_at(p, _HEADER_SIZE, m, &kl)
        if ks < 0 or ks + kl > m:
            return i
        vs = _str_at(p, ks + kl, m, &vl)
        if vs < 0 or vs + vl != m:
            return i
        if kv is None:  # no str kept: only checked (see the twin)
            if not _utf8_ok(<const char*>p + ks, kl) or not _utf8_ok(<const char*>p + vs, vl):
                return i
        else:
            try:
                key = _utf8_str(<const char*>p + ks, kl)
                value = _utf8_str(<const char*>p + vs, vl)
            except UnicodeDecodeError:
                return i
        if applied_log is not None:
            PyList_Append(applied_log, (_LOG_ID.get(entry), data))
        if kv is not None:
            if responses is not None:
                prev = PyDict_GetItem(kv, key)
                PyList_Append(responses, <object>prev if prev is not NULL else None)
            PyDict_SetItem(kv, key, value)
        if puts is not None:
            PyDict_SetItem(puts, _prefixed(kp, nkp, <const char*>p + ks, kl),
                           PyBytes_FromStringAndSize(<const char*>p + vs, vl))
        i += 1
    return i
