# Compiled builds only (Cython reads this beside metrics_view.py; the pure build never sees
# it): ``Publisher`` as an extension type, its fields at fixed offsets (see
# engine/state.pxd). ``publish`` runs after every pass of the core: its fields and the
# watch's ``Wakeup`` are read in C, not looked up (the thirty-eighth round of
# docs/design/performance.md).

from openraft_py.wakeup cimport Wakeup

cdef class Publisher:
    cdef public object engine, watch, _key
    cdef Wakeup _waiters
    cdef list _index_waited
