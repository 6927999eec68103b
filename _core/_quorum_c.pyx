# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Quorum kernel, compiled. The readable contract is the twin ``_quorum_py.py``.

Every index and node id is converted by ``as_int64`` (``_int64.pxd``): an integer as
``operator.index`` takes it (so never a float, even 2.0: Cython's own conversion of a typed
argument truncated one, through ``__int__``), in int64, or the same ``TypeError`` /
``OverflowError`` as the twin.
"""

cimport cython
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_CheckExact
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.stdint cimport int64_t
from libc.stdlib cimport qsort

from openraft_py._core._int64 cimport as_int64

# Python's own unpacking of an ``update_many`` item that is not an exact 2-tuple.
from openraft_py._core._quorum_py import _pair as _py_pair

INF_INDEX = 2**63 - 1
cdef int64_t C_INF_INDEX = 0x7FFFFFFFFFFFFFFF


# A matched index and the position of its object in the caller's list.
ctypedef struct Ranked:
    int64_t value
    Py_ssize_t pos


cdef int _cmp_ranked_desc(const void* a, const void* b) noexcept nogil:
    # Descending by value, ties in list order: the order of sorted(..., reverse=True).
    cdef const Ranked* x = <const Ranked*>a
    cdef const Ranked* y = <const Ranked*>b
    if x.value != y.value:
        return -1 if x.value > y.value else 1
    return (x.pos > y.pos) - (x.pos < y.pos)


cdef int _cmp_desc(const void* a, const void* b) noexcept nogil:
    cdef int64_t x = (<const int64_t*>a)[0]
    cdef int64_t y = (<const int64_t*>b)[0]
    return (x < y) - (x > y)


cdef inline int64_t _kth_desc(int64_t* buf, Py_ssize_t n) noexcept nogil:
    """Return the n//2-th largest of buf[0:n] (n > 0); reorders buf."""
    cdef Py_ssize_t i, j
    cdef int64_t v
    if n > 16:
        qsort(buf, n, sizeof(int64_t), _cmp_desc)
        return buf[n // 2]
    # Insertion sort, descending: clusters are small.
    for i in range(1, n):
        v = buf[i]
        j = i - 1
        while j >= 0 and buf[j] < v:
            buf[j + 1] = buf[j]
            j -= 1
        buf[j + 1] = v
    return buf[n // 2]


cdef inline Py_ssize_t _rank_exact(list m, Py_ssize_t n, int64_t* value) except -3:
    """For ``0 < n == len(m) <= 16``: the position in ``m`` of the element
    ``sorted(m, reverse=True)[n // 2]``, its value in ``*value``; -2 at the first element
    that is not an exact ``int`` (``_rank_any`` then converts, or refuses, each element in
    order). Exact ints convert without running Python code, so ``m`` cannot change under
    the borrowed reads. ``OverflowError`` outside int64."""
    # An insertion sort into stack arrays (clusters are small).
    # Invariant after step i: vals[0:i+1] descending, pos[k] is where vals[k] is in m.
    cdef int64_t vals[16]
    cdef Py_ssize_t pos[16]
    cdef Py_ssize_t i, j
    cdef PyObject* o
    cdef int64_t v
    for i in range(n):
        o = PyList_GET_ITEM(m, i)
        if not PyLong_CheckExact(<object>o):
            return -2
        v = as_int64(<object>o, "matched index")
        j = i - 1
        # Strict <: equal values keep list order, as the stable sorted() does.
        while j >= 0 and vals[j] < v:
            vals[j + 1] = vals[j]
            pos[j + 1] = pos[j]
            j -= 1
        vals[j + 1] = v
        pos[j + 1] = i
    value[0] = vals[n // 2]
    return pos[n // 2]


cdef Py_ssize_t _rank_any(list m, Py_ssize_t n, int64_t* value) except -3:
    """``_rank_exact`` for any integers and any ``n > 0``, by a qsort of a heap array. ``m``
    must be private: converting an element may run Python code (``__index__``).
    ``TypeError`` / ``OverflowError`` at the first element that is not an int64 integer."""
    cdef Ranked* r = <Ranked*>PyMem_Malloc(n * sizeof(Ranked))
    cdef Py_ssize_t i
    if r == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            r[i].value = as_int64(m[i], "matched index")
            r[i].pos = i
        qsort(r, n, sizeof(Ranked), _cmp_ranked_desc)
        value[0] = r[n // 2].value
        return r[n // 2].pos
    finally:
        PyMem_Free(r)


cdef inline object _majority(object matched, int64_t* value):
    """The committed element object of one config's ``matched`` and its value in ``*value``;
    None if the config is empty."""
    cdef list m = matched if type(matched) is list else list(matched)
    cdef Py_ssize_t n = PyList_GET_SIZE(m)
    cdef Py_ssize_t pos = -2
    if n == 0:
        return None
    if n <= 16:
        pos = _rank_exact(m, n, value)
    if pos == -2:
        # A large config, or elements that may run code when read: rank a private copy.
        m = list(m)
        pos = _rank_any(m, n, value)
    return <object>PyList_GET_ITEM(m, pos)


# Positional-only, METH_O and unbound (no keyword parsing, no function object of Cython's
# own): with a handful of voters the call itself is most of the cost. The pure twin's
# signatures are positional-only too.
@cython.binding(False)
@cython.always_allow_keywords(False)
def majority_committed(matched, /):
    """Return the largest index acknowledged by a strict majority; ``INF_INDEX`` if empty.

    Returns the element of ``matched`` itself, as the pure twin's ``sorted(...)[n // 2]`` does.
    """
    cdef int64_t value
    r = _majority(matched, &value)
    return INF_INDEX if r is None else r


@cython.binding(False)
@cython.always_allow_keywords(False)
def joint_committed(configs, /):
    """Return the min of ``majority_committed`` over ``configs``; ``-1`` if no configs."""
    cdef int64_t best = C_INF_INDEX, value
    cdef bint found = False
    best_obj = INF_INDEX
    if not configs:
        return -1
    for m in configs:
        r = _majority(m, &value)
        if r is None:  # an empty config commits INF_INDEX, an element like any other here
            r = INF_INDEX
            value = C_INF_INDEX
        # The first, then strictly less: the first of equal minima, as min() keeps (also
        # where an element equals INF_INDEX: that element, not INF_INDEX, as the twin).
        if not found or value < best:
            found = True
            best = value
            best_obj = r
    return best_obj


def is_quorum_granted(granted, configs) -> bool:
    """Return whether every config has a strict majority of its voters in ``granted``."""
    cdef Py_ssize_t votes, n
    if not configs:
        return False
    for voters in configs:
        n = len(voters)
        votes = 0
        for node_id in voters:
            if node_id in granted:
                votes += 1
        if n and votes <= n // 2:
            return False
    return True


cdef class ProgressTable:
    """The leader's matched index per target, with an incrementally maintained commit.

    See ``_quorum_py.ProgressTable`` for the contract. Node ids must fit in int64.
    """

    def __cinit__(self):
        self._ids = NULL
        self._matched = NULL
        self._is_voter = NULL
        self._cfg_start = NULL
        self._cfg_slots = NULL
        self._scratch = NULL

    def __init__(self, configs, learners, self_id):
        cdef list cfgs = [list(c) for c in configs]
        cdef list lrn = list(learners)
        cdef dict slots = {}
        cdef list order = []
        cdef Py_ssize_t i, k, total = 0, widest = 0, nv
        cdef int64_t nid
        # The ids as int64 (each checked as met, in the twin's order: configs, learners,
        # self_id), the configs as lists of them.
        for c in cfgs:
            total += len(c)
            if len(c) > widest:
                widest = len(c)
            for i in range(len(c)):
                nid = as_int64(c[i], "node id")
                c[i] = nid
                if nid not in slots:
                    slots[nid] = len(order)
                    order.append(nid)
        nv = len(order)
        for n in lrn:
            nid = as_int64(n, "node id")
            if nid not in slots:
                slots[nid] = len(order)
                order.append(nid)
        self._self_id = as_int64(self_id, "node id")
        self._learners = lrn
        self._n = len(order)
        self._nconfigs = len(cfgs)
        self._ids = <int64_t*>PyMem_Malloc((self._n + 1) * sizeof(int64_t))
        self._matched = <int64_t*>PyMem_Malloc((self._n + 1) * sizeof(int64_t))
        self._is_voter = <char*>PyMem_Malloc((self._n + 1) * sizeof(char))
        self._cfg_start = <Py_ssize_t*>PyMem_Malloc((self._nconfigs + 1) * sizeof(Py_ssize_t))
        self._cfg_slots = <Py_ssize_t*>PyMem_Malloc((total + 1) * sizeof(Py_ssize_t))
        self._scratch = <int64_t*>PyMem_Malloc((widest + 1) * sizeof(int64_t))
        if (self._ids == NULL or self._matched == NULL or self._is_voter == NULL
                or self._cfg_start == NULL or self._cfg_slots == NULL or self._scratch == NULL):
            raise MemoryError()
        for i in range(self._n):
            self._ids[i] = order[i]
            self._matched[i] = -1
            self._is_voter[i] = 1 if i < nv else 0
        k = 0
        for i in range(self._nconfigs):
            self._cfg_start[i] = k
            for n in cfgs[i]:
                self._cfg_slots[k] = slots[n]
                k += 1
        self._cfg_start[self._nconfigs] = k
        self._refresh()

    def __dealloc__(self):
        PyMem_Free(self._ids)
        PyMem_Free(self._matched)
        PyMem_Free(self._is_voter)
        PyMem_Free(self._cfg_start)
        PyMem_Free(self._cfg_slots)
        PyMem_Free(self._scratch)

    cdef Py_ssize_t _slot(self, int64_t node_id):
        cdef Py_ssize_t i
        for i in range(self._n):
            if self._ids[i] == node_id:
                return i
        return -1

    cdef int64_t _recompute(self):
        cdef Py_ssize_t k, j, lo, hi
        cdef int64_t best, c
        if self._nconfigs == 0:
            return -1
        best = C_INF_INDEX
        for k in range(self._nconfigs):
            lo = self._cfg_start[k]
            hi = self._cfg_start[k + 1]
            if hi == lo:
                continue
            for j in range(lo, hi):
                self._scratch[j - lo] = self._matched[self._cfg_slots[j]]
            c = _kth_desc(self._scratch, hi - lo)
            if c < best:
                best = c
        return best

    cdef int _refresh(self) except -1:
        cdef int64_t c = self._recompute()
        # Callers get the same int object until the commit moves: no allocation per ack.
        if self._committed_obj is None or c != self._committed:
            self._committed = c
            self._committed_obj = c
        return 0

    def update(self, node_id, index) -> int:
        """Raise ``matched[node_id]`` to ``index``; return ``committed()``. Unknown ids ignored."""
        cdef int64_t nid = as_int64(node_id, "node id")
        cdef int64_t idx = as_int64(index, "matched index")
        cdef Py_ssize_t s = self._slot(nid)
        if s >= 0 and idx > self._matched[s]:
            self._matched[s] = idx
            if self._is_voter[s]:
                self._refresh()
        return self._committed_obj

    def update_many(self, pairs) -> int:
        """Apply ``update`` to each ``(node_id, index)``, in order; return ``committed()``,
        computed once. A malformed item raises the twin's error; the items before it stay
        applied and counted."""
        cdef Py_ssize_t s
        cdef int64_t node_id, index
        cdef bint changed = False
        try:
            for p in pairs:
                # An exact 2-tuple read in place; anything else unpacked by Python, with its
                # errors (Cython's own unpacking words them differently).
                if type(p) is tuple and PyTuple_GET_SIZE(p) == 2:
                    a = <object>PyTuple_GET_ITEM(p, 0)
                    b = <object>PyTuple_GET_ITEM(p, 1)
                else:
                    a, b = _py_pair(p)
                node_id = as_int64(a, "node id")
                index = as_int64(b, "matched index")
                s = self._slot(node_id)
                if s >= 0 and index > self._matched[s]:
                    self._matched[s] = index
                    if self._is_voter[s]:
                        changed = True
        finally:
            # Also when an item was refused (Invariant of _committed).
            if changed:
                self._refresh()
        return self._committed_obj

    def reset(self, node_id, index) -> int:
        """Set ``matched[node_id]`` to exactly ``index``; return ``committed()``. KeyError if unknown."""
        cdef int64_t nid = as_int64(node_id, "node id")
        cdef int64_t idx = as_int64(index, "matched index")
        cdef Py_ssize_t s = self._slot(nid)
        if s < 0:
            raise KeyError(node_id)
        if self._matched[s] != idx:
            self._matched[s] = idx
            if self._is_voter[s]:
                self._refresh()
        return self._committed_obj

    def matched(self, node_id) -> int:
        """Return the matched index of ``node_id``; ``KeyError`` if it is not tracked."""
        cdef Py_ssize_t s = self._slot(as_int64(node_id, "node id"))
        if s < 0:
            raise KeyError(node_id)
        return self._matched[s]

    def committed(self) -> int:
        """Return the joint committed index (``-1`` if nothing is committed or no configs)."""
        return self._committed_obj

    def voter_ids(self) -> list:
        """Return the sorted ids of all voters (union of the configs)."""
        cdef Py_ssize_t i
        return sorted([self._ids[i] for i in range(self._n) if self._is_voter[i]])

    def learner_ids(self) -> list:
        """Return the sorted ids of the learners that are not also voters."""
        cdef Py_ssize_t i
        return sorted([self._ids[i] for i in range(self._n) if not self._is_voter[i]])

    def target_ids(self) -> list:
        """Return the sorted ids of every tracked node except ``self_id``."""
        cdef Py_ssize_t i
        return sorted([self._ids[i] for i in range(self._n) if self._ids[i] != self._self_id])

    def as_dict(self) -> dict:
        """Return a copy of ``{node_id: matched}`` for every tracked node."""
        cdef Py_ssize_t i
        return {self._ids[i]: self._matched[i] for i in range(self._n)}

    def __len__(self):
        return self._n

    def __repr__(self):
        body = " ".join(f"{n}:{m}" for n, m in sorted(self.as_dict().items()))
        return f"ProgressTable(committed={self._committed} {body})"
