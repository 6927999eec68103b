# Compiled builds only (Cython reads this beside replication.py; the pure build never sees it): the
# classes of replication.py as extension types, their fields at fixed offsets (see state.pxd).

from openraft_py.engine.handler.base cimport LeadingHandler

cdef class ReplicationHandler(LeadingHandler):
    pass
