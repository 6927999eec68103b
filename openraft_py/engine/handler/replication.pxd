# Compiled builds only (Cython reads this beside replication.py; the pure build never sees it): the
# classes of replication.py as extension types, their fields at fixed offsets (see state.pxd).

cimport cython
from openraft_py.engine.progress cimport ProgressEntry
from openraft_py.engine.handler.base cimport LeadingHandler
from openraft_py.engine.handler.log cimport LogHandler
from openraft_py.types cimport _log_id_index

cdef class ReplicationHandler(LeadingHandler):
    # C calls between these methods (``cpdef``); ``p`` and ``cur`` are the target's
    # ``ProgressEntry`` (or ``None``), read at fixed offsets.
    cpdef replicate(self)
    @cython.locals(p=ProgressEntry)
    cpdef heartbeat(self, now)
    @cython.locals(p=ProgressEntry)
    cpdef send(self)
    @cython.locals(p=ProgressEntry)
    cpdef expire_backoffs(self, now)
    @cython.locals(p=ProgressEntry, cur=ProgressEntry)
    cpdef handle_result(self, r)
    cpdef back_off(self, p)
    cpdef update_self_flushed(self)
    @cython.locals(p=ProgressEntry)
    cpdef handle_progress(self, target, matching, sent_at)
    @cython.locals(log=LogHandler)
    cpdef try_commit(self)
