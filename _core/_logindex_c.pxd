# Field declarations of the compiled log index kernel; the contract is in _logindex_py.py.
from libc.stdint cimport int64_t


cdef class LogIndex:
    # Key log ids as parallel C arrays, both strictly increasing, covering exactly the
    # present entries (purged_index, last]; _nkeys == 0 iff the log is empty.
    cdef int64_t* _terms
    cdef int64_t* _firsts
    cdef Py_ssize_t _nkeys
    cdef Py_ssize_t _cap
    # Invariant: _has_purged == 0 implies _p_term == _p_index == -1.
    cdef bint _has_purged
    cdef int64_t _p_term
    cdef int64_t _p_index
    # Invariant: _p_index <= _last.
    cdef int64_t _last
    # The lookup table of _term_at, built on a lookup when missing, for indexes in
    # [_firsts[0], _firsts[_nkeys - 1]): bucket j holds the 2**_table_shift indexes from
    # _firsts[0] + (j << _table_shift) on, and _table[j] is the number of keys before that
    # first index (so the keys of bucket j are _firsts[_table[j]:_table[j + 1]]). At most
    # 2 * _nkeys buckets, so a bucket holds one key or none on average. Invariant:
    # _table_ok implies it was built from the keys as they are (every change of the keys
    # clears it).
    cdef Py_ssize_t* _table
    cdef int _table_shift
    cdef bint _table_ok

    cdef int _reserve(self, Py_ssize_t n) except -1
    cdef Py_ssize_t _bisect_right(self, int64_t index) noexcept
    cdef void _build_table(self) noexcept
    cdef int64_t _term_at(self, int64_t index) noexcept
    cdef int64_t _last_term(self) noexcept
    cdef int _push(self, int64_t term, int64_t index) except -1


cdef class EntryCache:
    # The cached entries are _items[_offset:], at indexes _first, _first + 1, ...
    cdef list _items
    cdef Py_ssize_t _offset
    cdef int64_t _first
