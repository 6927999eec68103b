# Field declarations of the compiled codec kernel; the contract is in _codec_py.py.

cimport cython
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_TYPE


cdef class FrameReader:
    # Between feeds, the pending bytes of the stream are either _buf[_start:_end]
    # (capacity _cap): fewer than 4 bytes, the start of a frame's length; or, once a length
    # announced a frame that has not all arrived, _frame: a bytes object of that length
    # _need (the payload), of which the first _have bytes are filled. Invariant: while
    # _frame is not None, _buf[_start:_end] is empty and _have < _need.
    cdef unsigned char* _buf
    cdef Py_ssize_t _start
    cdef Py_ssize_t _end
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _max
    # Invariant: once set, every feed raises FrameTooLarge.
    cdef bint _broken
    cdef bytes _frame
    cdef Py_ssize_t _need
    cdef Py_ssize_t _have

    cdef int _append(self, const unsigned char* data, Py_ssize_t n) except -1
    cdef int _begin_frame(self, const unsigned char* data, Py_ssize_t have, Py_ssize_t n) except -1


# -- attribute reads straight from instance slots ---------------------------------------
#
# The kernels read several attributes per entry; through getattr they cost more than
# everything else encode_entry_batch does. msgspec Structs (and __slots__ classes) keep
# their fields in member slots at fixed offsets, which a _Field reads directly, for the
# type it resolved while that type is unmodified (CPython resets a type's version tag on
# every change). Declared here, with ``get`` inline, so that every kernel that cimports it
# reads a slot without a call (``_kv_c``).

cdef extern from *:
    """
    #include <structmember.h>

    /* The slot offset that the attribute descriptor `descr` reads, or -1 unless it is a
       plain object member (T_OBJECT_EX, no audit hook). */
    static Py_ssize_t __orp_member_offset(PyObject *descr) {
        PyMemberDef *m;
        if (descr == NULL || Py_TYPE(descr) != &PyMemberDescr_Type) return -1;
        m = ((PyMemberDescrObject *)descr)->d_member;
        if (m->type != T_OBJECT_EX || (m->flags & PY_AUDIT_READ)) return -1;
        return m->offset;
    }

    /* The version tag of `t`, 0 if it has none (0 is never a valid tag). */
    static CYTHON_INLINE unsigned int __orp_version_tag(PyTypeObject *t) {
        return (t->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) ? t->tp_version_tag : 0;
    }

    /* The object in the slot at `offset` of `o` (borrowed; NULL if unset). */
    static CYTHON_INLINE PyObject *__orp_slot(PyObject *o, Py_ssize_t offset) {
        return *(PyObject **)((char *)o + offset);
    }

    /* Whether `t` reads attributes with the generic algorithm (data descriptors first). */
    static CYTHON_INLINE int __orp_generic_getattr(PyTypeObject *t) {
        return t->tp_getattro == PyObject_GenericGetAttr;
    }
    """
    Py_ssize_t _member_offset "__orp_member_offset"(PyObject* descr)
    unsigned int _version_tag "__orp_version_tag"(PyTypeObject* t)
    PyObject* _slot "__orp_slot"(PyObject* o, Py_ssize_t offset)
    bint _generic_getattr "__orp_generic_getattr"(PyTypeObject* t)
    PyObject* _PyType_Lookup(PyTypeObject* t, PyObject* name)


@cython.final
cdef class _Field:
    cdef str name
    # Invariant: _tp is NULL or the type held by _tp_ref; then _offset is where that type,
    # as of version tag _tag, keeps name (-1: not in a plain slot, use getattr).
    cdef PyTypeObject* _tp
    cdef object _tp_ref
    cdef unsigned int _tag
    cdef Py_ssize_t _offset

    cdef int _resolve(self, object obj) except -1

    cdef inline object get(self, object obj):
        """``getattr(obj, name)``, from the slot when ``obj``'s type is the one resolved."""
        cdef PyTypeObject* tp = Py_TYPE(obj)
        cdef PyObject* v
        if tp != self._tp or _version_tag(tp) != self._tag:
            self._resolve(obj)
        if self._offset >= 0:
            v = _slot(<PyObject*>obj, self._offset)
            if v != NULL:
                return <object>v
        return getattr(obj, self.name)  # unset slots raise AttributeError here
