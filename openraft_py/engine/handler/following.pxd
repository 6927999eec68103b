# Compiled builds only (Cython reads this beside following.py; the pure build never sees it): the
# classes of following.py as extension types, their fields at fixed offsets (see state.pxd).

cimport cython
from openraft_py.engine.handler.base cimport Handler
from openraft_py.engine.handler.log cimport LogHandler
from openraft_py.types cimport (
    _append_entries_entries, _append_entries_leader_commit, _append_entries_prev_log_id, _append_entries_vote,
    _entry_log_id, _log_id_index,
)

cdef class FollowingHandler(Handler):
    # C calls between these methods (``cpdef``).
    @cython.locals(log=LogHandler)
    cpdef append_entries(self, req, tx, now)
    cpdef durable_match(self, prev)
    cpdef accept_leader(self, vote, now)
    @cython.locals(log=LogHandler)
    cpdef commit(self, leader_commit, matching)
