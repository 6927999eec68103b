# Compiled builds only (Cython reads this beside wakeup.py; the pure build never sees it):
# ``Wakeup`` as an extension type, its fields at fixed offsets (see engine/state.pxd).

cdef class Wakeup:
    cdef public object first, _loop
    cdef public list _more
    cdef public Py_ssize_t _limit
