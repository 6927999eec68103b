# Compiled builds only (Cython reads this beside state.py; the pure build never sees it):
# the classes of state.py as extension types, so the compiled engine reads and writes their
# fields at fixed offsets instead of through attribute lookups. Fields typed ``object`` hold
# what the .py puts there; each class here must list every field its .py assigns.

from openraft_py.types cimport _log_id_index, _log_id_term

cdef class MembershipState:
    cdef public object committed, uncommitted
    cpdef append(self, sm)
    cpdef commit(self, index)
    cpdef truncate(self, after_index)

cdef class IOState:
    cdef public object submitted, flushed, pending, flushed_log_id, flushed_vote, vote_io

cdef class RaftState:
    cdef public object id, vote, log_ids, committed, applied, snapshot, membership, server_state
    cdef public IOState io
    # Methods the compiled engine calls on its state: C calls (``cpdef``), still methods in Python.
    cpdef last_log_id(self)
    cpdef last_index(self)
    cpdef log_id_at(self, index)
    cpdef has_log_id(self, log_id)
    cpdef purged_log_id(self)
    cpdef committed_index(self)
