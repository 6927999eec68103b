# Compiled builds only (Cython reads this beside following.py; the pure build never sees it): the
# classes of following.py as extension types, their fields at fixed offsets (see state.pxd).

from openraft_py.engine.handler.base cimport Handler

cdef class FollowingHandler(Handler):
    pass
