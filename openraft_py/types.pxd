# Compiled builds only (Cython reads this beside types.py; the pure build never sees it): the
# field readers at the end of types.py, which the engine's compiled modules call in C
# (``cimport``) and which load a msgspec Struct's field from its slot.
#
# A msgspec Struct keeps each field in a slot of the object, at the offset its member
# descriptor records (a ``PyMemberDef`` of type ``T_OBJECT_EX``, as for any ``__slots__``
# class; msgspec reads its own fields there too). ``_member_offset`` reads that offset once,
# at import, from the class's own descriptor; ``_read_slot`` loads the slot of an object the
# caller has checked is exactly that class.

from cpython.object cimport PyObject

cdef extern from "structmember.h":
    ctypedef struct PyMemberDef:
        const char* name
        int type
        Py_ssize_t offset
        int flags
    enum: T_OBJECT_EX, READONLY

cdef extern from "Python.h":
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member


cdef inline Py_ssize_t _member_offset(object descr, Py_ssize_t basicsize):
    """The slot offset ``descr`` (a ``member_descriptor``, checked by the caller) reads, or -1
    unless it is an object slot (``T_OBJECT_EX``) inside an instance of ``basicsize`` bytes
    that the descriptor reads plainly: no flag but ``READONLY`` (an audited read,
    ``PY_AUDIT_READ``, must go through the descriptor; an offset relative to the subclass's
    own data, ``Py_RELATIVE_OFFSET`` in 3.12, is not from the object's start)."""
    cdef PyMemberDef* m = (<PyMemberDescrObject*><PyObject*>descr).d_member
    if m.type != T_OBJECT_EX or m.flags & ~READONLY:
        return -1
    if m.offset < <Py_ssize_t>sizeof(PyObject):
        return -1
    if m.offset + <Py_ssize_t>sizeof(PyObject*) > basicsize:
        return -1
    return m.offset


cdef inline object _read_slot(object obj, Py_ssize_t offset, str name):
    """``obj``'s field at ``offset`` (``obj`` is exactly the class whose field it is: the
    caller checked), or ``getattr(obj, name)`` when the slot is empty (which raises
    ``AttributeError`` as the attribute read would)."""
    cdef PyObject* v = (<PyObject**>((<char*><PyObject*>obj) + offset))[0]
    if v is NULL:
        return getattr(obj, name)
    return <object>v


# The offsets found at import (-1: read the field by name).
cdef Py_ssize_t _LOG_ID_TERM, _LOG_ID_INDEX, _ENTRY_LOG_ID
cdef Py_ssize_t _AE_VOTE, _AE_PREV_LOG_ID, _AE_ENTRIES, _AE_LEADER_COMMIT

cpdef object _log_id_term(object lid)
cpdef object _log_id_index(object lid)
cpdef object _entry_log_id(object e)
cpdef object _append_entries_vote(object req)
cpdef object _append_entries_prev_log_id(object req)
cpdef object _append_entries_entries(object req)
cpdef object _append_entries_leader_commit(object req)
