# Compiled builds only (Cython reads this beside messages.py; the pure build never sees it):
# ``note_logged`` stores a write's ``first`` and ``term`` straight into the msgspec Struct's
# slots (the fifty-seventh round of docs/design/performance.md), at the offsets the
# ``Responder``'s member descriptors record (``types.pxd``'s ``_member_offset``, read once at
# import).

from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF

from openraft_py.types cimport _member_offset, _read_slot


cdef inline void _write_slot(object obj, Py_ssize_t offset, object value):
    """Store ``value`` in ``obj``'s slot at ``offset`` (``obj`` is exactly a class with that
    slot: the caller checked), releasing what the slot held (an empty slot holds NULL)."""
    cdef PyObject** p = <PyObject**>((<char*><PyObject*>obj) + offset)
    cdef PyObject* old = p[0]
    Py_INCREF(value)
    p[0] = <PyObject*>value
    Py_XDECREF(old)


# The offsets found at import (-1: store the field by name).
cdef Py_ssize_t _RESPONDER_FIRST, _RESPONDER_COUNT, _RESPONDER_TERM
