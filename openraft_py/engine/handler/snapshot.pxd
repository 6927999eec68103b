# Compiled builds only (Cython reads this beside snapshot.py; the pure build never sees it): the
# classes of snapshot.py as extension types, their fields at fixed offsets (see state.pxd).

from openraft_py.engine.handler.base cimport Handler

cdef class SnapshotHandler(Handler):
    pass
