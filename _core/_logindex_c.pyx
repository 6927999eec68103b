# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Log index kernel, compiled. The readable contract is the twin ``_logindex_py.py``.

Every term, index and count is converted by ``as_int64`` (``_int64.pxd``): an integer as
``operator.index`` takes it (so never a float, even 2.0: Cython's own conversion of the typed
``int64_t`` arguments these methods had truncated one, through ``__int__``), in int64, or the
same ``TypeError`` / ``OverflowError`` as the twin, in the twin's order. Sums that can pass the
int64 ceiling (``_last + 1``, a new last index, ``_p_index + 1``, the log's length) are
tested before they are made, and answered or refused as the twin's Python ints are.
"""

cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memmove

from openraft_py._core._int64 cimport as_int64

cdef int64_t C_INT64_MAX = 0x7FFFFFFFFFFFFFFF


# Python's own unpacking of anything but an exact 2-tuple (Cython's says "need more than 1
# value to unpack" where Python says "not enough values to unpack (expected 2, got 1)").
from openraft_py._core._logindex_py import _pair as _py_pair


cdef inline tuple _pair(object p):
    """``p`` as a ``(term, index)`` tuple, or Python's error for unpacking it into two."""
    if type(p) is tuple and PyTuple_GET_SIZE(p) == 2:
        return <tuple>p
    return _py_pair(p)


cdef object _last_index_error(object last):
    """The error for an append whose last index would be ``last`` (a Python int), past int64."""
    return OverflowError(f"last index {last} out of the int64 range [-2**63, 2**63)")


cdef enum:
    # ``_term_at`` uses its lookup table from this many key log ids on (below, a search of
    # the few keys costs about as much as the table's two loads).
    _TABLE_MIN_KEYS = 16


cdef inline Py_ssize_t _count_le(const int64_t* firsts, Py_ssize_t base, Py_ssize_t n, int64_t index) noexcept:
    # ``base`` plus the number of ``firsts[base:base + n]`` (increasing) that are <= ``index``.
    # Branch-free: each step halves the range by arithmetic on the comparison, so a lookup at
    # an unpredictable index costs no mispredicted jumps (1,000 lookups at random indexes over
    # 200 terms, call included: 83-123 us with the textbook loop, 59-93 us with this and the
    # last-term test of ``_term_at``). Invariant: the answer is in [base, base + n].
    cdef Py_ssize_t half
    if n == 0:
        return base
    while n > 1:
        half = n >> 1
        base += half * (firsts[base + half] <= index)
        n -= half
    return base + (firsts[base] <= index)


cdef class LogIndex:
    """Term of every log index, compressed to key log ids (see ``_logindex_py.LogIndex``)."""

    def __cinit__(self):
        self._terms = NULL
        self._firsts = NULL
        self._nkeys = 0
        self._cap = 0
        self._has_purged = False
        self._p_term = -1
        self._p_index = -1
        self._last = -1
        self._table = NULL
        self._table_shift = 0
        self._table_ok = False

    def __dealloc__(self):
        PyMem_Free(self._terms)
        PyMem_Free(self._firsts)
        PyMem_Free(self._table)

    # Bounds checked (the module turns them off): ``purged[1]`` of a 1-tuple read past the
    # tuple and crashed the interpreter; it raises IndexError now, as in the twin.
    @cython.boundscheck(True)
    @cython.wraparound(True)
    def __init__(self, purged=None, key_log_ids=None, last_index=-1):
        cdef int64_t p_term = -1, p_index = -1, prev_term, prev_index, term, index, last
        cdef Py_ssize_t i, n
        cdef int64_t* buf = NULL
        cdef tuple pair
        # Empty until every check passed (also when __init__ is called again).
        self._nkeys = 0
        self._has_purged = False
        self._p_term = -1
        self._p_index = -1
        self._last = -1
        self._table_ok = False
        # Every integer converted first, in argument order (as the twin), the keys into a
        # private buffer: a conversion may run Python code (``__index__``).
        if purged is not None:
            p_term = as_int64(purged[0], "term")
            p_index = as_int64(purged[1], "index")
        keys = list(key_log_ids or ())
        n = len(keys)
        try:
            if n:
                buf = <int64_t*>PyMem_Malloc(2 * n * sizeof(int64_t))
                if buf == NULL:
                    raise MemoryError()
            for i in range(n):
                pair = _pair(keys[i])
                buf[2 * i] = as_int64(<object>PyTuple_GET_ITEM(pair, 0), "term")
                buf[2 * i + 1] = as_int64(<object>PyTuple_GET_ITEM(pair, 1), "index")
            last = as_int64(last_index, "last_index")
            if purged is not None:
                if p_term < 0 or p_index < 0:
                    raise ValueError(f"invalid purged log id {(p_term, p_index)!r}")
                shown = (p_term, p_index)
            else:
                shown = None
            if n == 0:
                if last != -1 and last != p_index:
                    raise ValueError(f"last_index {last} without key log ids (purged {shown!r})")
            else:
                if p_index == C_INT64_MAX or buf[1] != p_index + 1:
                    raise ValueError(f"first key log id {(buf[0], buf[1])!r} does not follow purged index {p_index}")
                prev_term = p_term
                prev_index = p_index
                for i in range(n):
                    term = buf[2 * i]
                    index = buf[2 * i + 1]
                    if term < 0 or term < prev_term or (i > 0 and (term == prev_term or index <= prev_index)):
                        raise ValueError(f"key log ids not strictly increasing at {(term, index)!r}")
                    prev_term = term
                    prev_index = index
                if last < prev_index:
                    raise ValueError(f"last_index {last} before last key log id {(buf[2 * n - 2], buf[2 * n - 1])!r}")
                self._reserve(n)
                for i in range(n):
                    self._terms[i] = buf[2 * i]
                    self._firsts[i] = buf[2 * i + 1]
        finally:
            PyMem_Free(buf)
        if purged is not None:
            self._has_purged = True
            self._p_term = p_term
            self._p_index = p_index
            self._last = p_index
        if n:
            self._nkeys = n
            self._last = last

    # -- C helpers --------------------------------------------------------------------

    cdef int _reserve(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t cap
        cdef int64_t* t
        cdef int64_t* f
        if n <= self._cap:
            return 0
        cap = max(n, 2 * self._cap, 8)
        t = <int64_t*>PyMem_Realloc(self._terms, cap * sizeof(int64_t))
        if t == NULL:
            raise MemoryError()
        self._terms = t
        f = <int64_t*>PyMem_Realloc(self._firsts, cap * sizeof(int64_t))
        if f == NULL:
            raise MemoryError()
        self._firsts = f
        self._cap = cap
        return 0

    cdef Py_ssize_t _bisect_right(self, int64_t index) noexcept:
        # The number of key log ids whose first index is <= ``index`` (``_firsts`` is
        # strictly increasing).
        return _count_le(self._firsts, 0, self._nkeys, index)

    cdef void _build_table(self) noexcept:
        # The lookup table of ``_term_at`` (see ``_table`` in the .pxd): ``_nkeys >= 2``.
        # Left invalid when memory runs out (``_term_at`` then searches all the keys).
        cdef Py_ssize_t n = self._nkeys, nb, j, k = 0
        cdef int64_t f0 = self._firsts[0]
        cdef int64_t span = self._firsts[n - 1] - f0
        cdef int shift = 0
        cdef Py_ssize_t* table
        while (span >> shift) >= 2 * n:
            shift += 1
        nb = <Py_ssize_t>(span >> shift) + 1  # buckets: [f0, f0 + (nb << shift)) covers up to the last key
        table = <Py_ssize_t*>PyMem_Realloc(self._table, (nb + 1) * sizeof(Py_ssize_t))
        if table == NULL:
            return
        self._table = table
        for j in range(nb + 1):
            # Offsets from f0, unsigned: the last bucket's end may lie past the largest int64.
            while k < n and <uint64_t>(self._firsts[k] - f0) < (<uint64_t>j << shift):
                k += 1
            table[j] = k
        self._table_shift = shift
        self._table_ok = True

    cdef int64_t _term_at(self, int64_t index) noexcept:
        if self._has_purged and index == self._p_index:
            return self._p_term
        if index > self._last or self._nkeys == 0 or index < self._firsts[0]:
            return -1
        if index >= self._firsts[self._nkeys - 1]:  # the last term's entries: most lookups
            return self._terms[self._nkeys - 1]
        # firsts[0] <= index < firsts[nkeys - 1] from here on.
        cdef Py_ssize_t j, lo
        if self._nkeys >= _TABLE_MIN_KEYS:
            if not self._table_ok:
                self._build_table()
            if self._table_ok:
                j = <Py_ssize_t>((index - self._firsts[0]) >> self._table_shift)
                lo = self._table[j]
                return self._terms[_count_le(self._firsts, lo, self._table[j + 1] - lo, index) - 1]
        return self._terms[self._bisect_right(index) - 1]

    cdef int64_t _last_term(self) noexcept:
        if self._nkeys:
            return self._terms[self._nkeys - 1]
        return self._p_term

    cdef int _push(self, int64_t term, int64_t index) except -1:
        if self._nkeys == 0 or self._terms[self._nkeys - 1] != term:
            self._table_ok = False
            self._reserve(self._nkeys + 1)
            self._terms[self._nkeys] = term
            self._firsts[self._nkeys] = index
            self._nkeys += 1
        return 0

    # -- queries ----------------------------------------------------------------------

    def last(self):
        """Return the last log id; the purged one if the log is empty; None if neither."""
        if self._nkeys:
            return (self._terms[self._nkeys - 1], self._last)
        if self._has_purged:
            return (self._p_term, self._p_index)
        return None

    def last_index(self) -> int:
        """Return the index of ``last()`` (``-1`` if none)."""
        return self._last

    def last_term(self) -> int:
        """Return the term of ``last()`` (``-1`` if none)."""
        return self._last_term()

    def first_index(self) -> int:
        """Return the index of the first present entry: ``purged_index + 1`` (0 if none purged)."""
        if self._p_index == C_INT64_MAX:
            return <object>self._p_index + 1  # 2**63, as the twin's Python int
        return self._p_index + 1

    def purged(self):
        """Return the purged log id, or None."""
        if self._has_purged:
            return (self._p_term, self._p_index)
        return None

    def key_log_ids(self) -> list:
        """Return ``[(term, first_index), ...]`` of the present entries."""
        cdef Py_ssize_t i
        return [(self._terms[i], self._firsts[i]) for i in range(self._nkeys)]

    def term_at(self, index) -> int:
        """Return the term of the entry at ``index`` (also of the purged log id); ``-1`` if absent."""
        return self._term_at(as_int64(index, "index"))

    def has_log_id(self, term, index) -> bool:
        """Return whether ``(term, index)`` is present here (or is the purged log id)."""
        cdef int64_t t = as_int64(term, "term")
        cdef int64_t i = as_int64(index, "index")
        return t >= 0 and self._term_at(i) == t

    def term_first_index(self, term) -> int:
        """Return the smallest known index with ``term`` (purged log id included); ``-1`` if none."""
        cdef int64_t t = as_int64(term, "term")
        cdef Py_ssize_t lo = 0, hi = self._nkeys, mid
        if self._has_purged and self._p_term == t:
            return self._p_index
        while lo < hi:
            mid = (lo + hi) >> 1
            if t < self._terms[mid]:
                hi = mid
            else:
                lo = mid + 1
        if lo > 0 and self._terms[lo - 1] == t:
            return self._firsts[lo - 1]
        return -1

    def first_conflict(self, entries) -> int:
        """Return the position of the first of ``entries`` that is not already in this log."""
        cdef Py_ssize_t pos = 0
        cdef int64_t term, index
        cdef tuple pair
        for p in entries:
            pair = _pair(p)
            term = as_int64(<object>PyTuple_GET_ITEM(pair, 0), "term")
            index = as_int64(<object>PyTuple_GET_ITEM(pair, 1), "index")
            if index > self._p_index:
                if index > self._last or self._term_at(index) != term:
                    return pos
            pos += 1
        return pos

    def __len__(self):
        # The only length past int64: every index from 0 to 2**63 - 1 (the twin's len()
        # raises this for its Python int).
        if self._p_index < 0 and self._last == C_INT64_MAX:
            raise OverflowError("cannot fit 'int' into an index-sized integer")
        return self._last - self._p_index

    def __repr__(self):
        return (
            f"LogIndex(purged={self.purged()!r}, key_log_ids={self.key_log_ids()!r}, "
            f"last_index={self._last})"
        )

    # -- mutations --------------------------------------------------------------------

    def append_term(self, term, first_index, count):
        """Append ``count`` entries of ``term`` at ``first_index``; ValueError on hole/overlap/lower
        term, OverflowError if the last index would pass int64."""
        cdef int64_t t = as_int64(term, "term")
        cdef int64_t f = as_int64(first_index, "first_index")
        cdef int64_t c = as_int64(count, "count")
        if c < 0:
            raise ValueError(f"negative count {c}")
        if self._last == C_INT64_MAX or f != self._last + 1:
            raise ValueError(f"append at {f}, expected {<object>self._last + 1}")
        if t < 0 or t < self._last_term():
            raise ValueError(f"append term {t} below last term {self._last_term()}")
        if c == 0:
            return
        # f >= 0 here (it is _last + 1), so neither side overflows.
        if c - 1 > C_INT64_MAX - f:
            raise _last_index_error(<object>f + c - 1)
        self._push(t, f)
        self._last = f + c - 1

    def append_many(self, log_ids):
        """Append ``(term, index)`` pairs in order, all or nothing (same checks as append_term)."""
        cdef int64_t last = self._last, last_term = self._last_term(), term, index
        cdef Py_ssize_t n = 0, i, cap
        # The converted pairs, checked against the log as it was: pushed only once all
        # passed (a conversion may run Python code). On the stack for small batches.
        cdef int64_t small[64]
        cdef int64_t* buf = small
        cdef int64_t* grown
        cdef tuple pair
        if type(log_ids) is not list:
            log_ids = list(log_ids)
        cap = 32
        try:
            for p in log_ids:
                pair = _pair(p)
                term = as_int64(<object>PyTuple_GET_ITEM(pair, 0), "term")
                index = as_int64(<object>PyTuple_GET_ITEM(pair, 1), "index")
                if last == C_INT64_MAX or index != last + 1:
                    raise ValueError(f"append at {index}, expected {<object>last + 1}")
                if term < 0 or term < last_term:
                    raise ValueError(f"append term {term} below last term {last_term}")
                last = index
                last_term = term
                if n == cap:
                    cap *= 2
                    grown = <int64_t*>PyMem_Realloc(NULL if buf == small else buf, 2 * cap * sizeof(int64_t))
                    if grown == NULL:
                        raise MemoryError()
                    if buf == small:
                        memmove(grown, small, 2 * n * sizeof(int64_t))
                    buf = grown
                buf[2 * n] = term
                buf[2 * n + 1] = index
                n += 1
            for i in range(n):
                self._push(buf[2 * i], buf[2 * i + 1])
        finally:
            if buf != small:
                PyMem_Free(buf)
        if n:
            self._last = last

    def truncate_after(self, index):
        """Keep only entries ``<= index``. ``ValueError`` if ``index`` < the purged index."""
        cdef int64_t i = as_int64(index, "index")
        if i < self._p_index:
            raise ValueError(f"truncate after {i}, below purged index {self._p_index}")
        if i >= self._last:
            return
        self._nkeys = self._bisect_right(i)
        self._last = i
        self._table_ok = False

    def purge(self, term, index):
        """Drop entries ``<= index`` and remember ``(term, index)`` as the purged log id."""
        cdef int64_t t = as_int64(term, "term")
        cdef int64_t x = as_int64(index, "index")
        cdef Py_ssize_t i
        if x <= self._p_index:
            return
        if t < 0:
            raise ValueError(f"invalid purge term {t}")
        if x <= self._last:
            if self._term_at(x) != t:
                raise ValueError(f"purge {(t, x)!r} but the term there is {self._term_at(x)}")
            if x == self._last:
                self._nkeys = 0
            else:
                i = self._bisect_right(x)
                if i == self._nkeys or self._firsts[i] != x + 1:
                    i -= 1
                    self._firsts[i] = x + 1
                if i:
                    memmove(self._terms, self._terms + i, (self._nkeys - i) * sizeof(int64_t))
                    memmove(self._firsts, self._firsts + i, (self._nkeys - i) * sizeof(int64_t))
                    self._nkeys -= i
        else:
            if t < self._last_term():
                raise ValueError(f"purge term {t} below last term {self._last_term()}")
            self._nkeys = 0
            self._last = x
        self._has_purged = True
        self._p_term = t
        self._p_index = x
        self._table_ok = False


cdef Py_ssize_t _COMPACT_MIN = 64


cdef class EntryCache:
    """The in-memory tail of recent entries by log index (see ``_logindex_py.EntryCache``)."""

    def __init__(self):
        self._items = []
        self._offset = 0
        self._first = -1

    def __len__(self):
        return len(self._items) - self._offset

    def first_index(self) -> int:
        """Return the index of the first cached entry, ``-1`` when empty."""
        return self._first if len(self._items) > self._offset else -1

    def last_index(self) -> int:
        """Return the index of the last cached entry, ``-1`` when empty."""
        cdef Py_ssize_t n = len(self._items) - self._offset
        return self._first + n - 1 if n else -1

    # Invariant (as the twin's): the last cached index, _first + n - 1, is in int64; _first + n
    # (the next index) may not be, so it is never computed in C.

    def append(self, first_index, items):
        """Append ``items`` at ``first_index``; must follow the last cached index unless empty.
        OverflowError if the last index would pass int64."""
        cdef int64_t f = as_int64(first_index, "first_index")
        cdef Py_ssize_t n = len(self._items) - self._offset
        cdef list new
        if f < 0:
            raise ValueError(f"negative index {f}")
        if n == 0:
            if not items:
                return
            new = list(items)
            # f >= 0, so neither side overflows.
            if len(new) - 1 > C_INT64_MAX - f:
                raise _last_index_error(<object>f + len(new) - 1)
            self._items = new
            self._offset = 0
            self._first = f
            return
        # f, _first >= 0: the difference does not overflow.
        if f - self._first != n:
            raise ValueError(f"append at {f}, expected {<object>self._first + n}")
        if type(items) is not list:
            items = list(items)
        if len(items) - 1 > C_INT64_MAX - f:
            raise _last_index_error(<object>f + len(items) - 1)
        self._items.extend(items)

    def get(self, start, stop) -> list:
        """Return the entries with indexes in ``[start, stop)``, clipped; ``[]`` if start not cached."""
        cdef int64_t a = as_int64(start, "start")
        cdef int64_t b = as_int64(stop, "stop")
        cdef Py_ssize_t n = len(self._items) - self._offset
        cdef int64_t base, end
        # Offsets from _first: a >= _first and b > a, so no difference below overflows.
        if n == 0 or a < self._first or a - self._first >= n or b <= a:
            return []
        end = n if b - self._first >= n else b - self._first
        base = self._offset
        return self._items[base + (a - self._first):base + end]

    def truncate_after(self, index):
        """Drop the cached entries with index ``> index``."""
        cdef int64_t i = as_int64(index, "index")
        cdef Py_ssize_t n = len(self._items) - self._offset
        if n == 0 or i >= self._first + n - 1:
            return
        if i < self._first:
            self.clear()
            return
        del self._items[self._offset + (i - self._first) + 1:]

    def evict_upto(self, index):
        """Drop the cached entries with index ``<= index`` (amortized O(1) per entry)."""
        cdef int64_t i = as_int64(index, "index")
        cdef Py_ssize_t n = len(self._items) - self._offset
        if n == 0 or i < self._first:
            return
        if i >= self._first + n - 1:
            self.clear()
            return
        self._offset += i - self._first + 1
        self._first = i + 1
        if self._offset > _COMPACT_MIN and self._offset > len(self._items) - self._offset:
            del self._items[:self._offset]
            self._offset = 0

    def clear(self):
        """Drop everything."""
        self._items = []
        self._offset = 0
        self._first = -1

    def __repr__(self):
        return f"EntryCache([{self.first_index()}, {self.last_index()}], len={len(self)})"
