# Compiled builds only (Cython reads this beside leader.py; the pure build never sees it): the
# classes of leader.py as extension types, their fields at fixed offsets (see state.pxd).

cimport cython
from openraft_py.engine.handler.base cimport LeadingHandler
from openraft_py.engine.handler.log cimport LogHandler
from openraft_py.engine.handler.replication cimport ReplicationHandler

cdef class LeaderHandler(LeadingHandler):
    # The other handlers it calls on a write are typed: C calls (``cpdef`` there).
    @cython.locals(log=LogHandler, rh=ReplicationHandler)
    cpdef client_write(self, payloads)
