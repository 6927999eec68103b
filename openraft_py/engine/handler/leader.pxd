# Compiled builds only (Cython reads this beside leader.py; the pure build never sees it): the
# classes of leader.py as extension types, their fields at fixed offsets (see state.pxd).

from openraft_py.engine.handler.base cimport LeadingHandler

cdef class LeaderHandler(LeadingHandler):
    pass
