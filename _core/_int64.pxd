# The int64 conversion of the compiled kernels (cimported by _quorum_c, _logindex_c, _codec_c
# and _kv_c; the contract is the pure twins' ``_as_int64``). A declarations-only module: its
# functions are inline C, compiled into each kernel that cimports them, so there is no
# ``openraft_py._core._int64`` to import at run time and no call across modules.
#
# ``as_int64(value, what)`` (and ``as_int64_arg``, the same without the inline fast path,
# for an argument converted once before a loop): ``value`` as an int64, taken as
# ``operator.index`` takes it (an ``int`` or an object with ``__index__``, which it may run;
# never a float, even 2.0: Cython's own conversion of a typed ``int64_t`` argument truncated
# one, through ``__int__``), with ``operator.index``'s ``TypeError`` for anything else and
# ``OverflowError("<what> out of the int64 range [-2**63, 2**63)")`` outside int64. ``what``
# names the value ("node id", "matched index", ...).

from cpython.long cimport PyLong_AsLongLongAndOverflow
from libc.stdint cimport int64_t


cdef extern from *:
    """
    /* Exact ints of one CPython digit (|v| < 2**30: the terms, indexes and ids of nearly
       every call), read in place, as Cython's own conversion of a typed argument does:
       1 and the value in *out, or 0 (anything else: as_int64 takes the slow path). */
    static CYTHON_INLINE int __ork_small_int(PyObject *v, int64_t *out) {
        if (!PyLong_CheckExact(v)) return 0;
    #if PY_VERSION_HEX >= 0x030C0000
        if (!_PyLong_IsCompact((PyLongObject *)v)) return 0;
        *out = (int64_t)_PyLong_CompactValue((PyLongObject *)v);
    #else
        /* Positive first (indexes, terms and ids), then 0 and negative: no multiply. */
        switch (Py_SIZE(v)) {
            case 1: *out = (int64_t)((PyLongObject *)v)->ob_digit[0]; return 1;
            case 0: *out = 0; return 1;
            case -1: *out = -(int64_t)((PyLongObject *)v)->ob_digit[0]; return 1;
            default: return 0;
        }
    #endif
        return 1;
    }

    /* Anything else: 0 and the value in *out, or -1 with the exception set (the TypeError
       of operator.index, or OverflowError naming `what`). Never inlined, so that the inline
       fast path stays small at each of the kernels' many call sites. */
    static Py_NO_INLINE int __ork_int64_slow(PyObject *v, PyObject *what, int64_t *out) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow) {
            PyErr_Format(PyExc_OverflowError, "%U out of the int64 range [-2**63, 2**63)", what);
            return -1;
        }
        if (x == -1 && PyErr_Occurred()) return -1;
        *out = (int64_t)x;
        return 0;
    }
    """
    bint small_int "__ork_small_int"(object v, int64_t* out)
    int _as_int64_slow "__ork_int64_slow"(object v, str what, int64_t* out) except -1


cdef inline int64_t as_int64(object value, str what) except? -1:
    """``value`` as an int64, or the twins' ``TypeError`` / ``OverflowError`` (above)."""
    cdef int64_t v
    if not small_int(value, &v):
        _as_int64_slow(value, what, &v)
    return v


cdef inline int64_t as_int64_arg(object value, str what) except? -1:
    """``as_int64`` without the inline fast path (one call of PyLong_AsLongLongAndOverflow):
    for an argument converted once before a kernel's loop over its input (``start``,
    ``next_index``, ...), where the fast path saves nothing that counts and only adds code
    to the function around the loop (``plain_entries_prefix`` timed 2-11% slower with it,
    from its loop's code, which GCC laid out otherwise)."""
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow:
        raise OverflowError(f"{what} out of the int64 range [-2**63, 2**63)")
    return v

