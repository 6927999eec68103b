# Compiled builds only (Cython reads this beside membership.py; the pure build never sees it): the
# classes of membership.py as extension types, their fields at fixed offsets (see state.pxd).

from openraft_py.engine.handler.base cimport LeadingHandler

cdef class MembershipHandler(LeadingHandler):
    pass
