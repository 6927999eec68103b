# Compiled builds only (Cython reads this beside wakeup.py; the pure build never sees it):
# ``Wakeup`` as an extension type, its fields at fixed offsets (see engine/state.pxd).

cdef class Wakeup:
    cdef public object first, _loop
    cdef public list _more
    cdef public Py_ssize_t _limit


# ``send_none``'s C part: ``PyIter_Send`` tells a coroutine's return from its suspension by
# its result code, so a coroutine that returns without suspending costs no ``StopIteration``
# (raising and catching one costs more than the whole ``await`` of a coroutine).
from cpython.object cimport PyObject
from cpython.ref cimport Py_XDECREF

cdef extern from "Python.h":
    # PYGEN_RETURN (0): returned, *presult its value; PYGEN_NEXT (1): yielded *presult;
    # PYGEN_ERROR (-1): raised (the exception is set). *presult is a new reference.
    int PyIter_Send(object iterator, object arg, PyObject** presult) except -1


cdef inline tuple _send_none_c(object coro):
    cdef PyObject* res = NULL
    cdef int r = PyIter_Send(coro, None, &res)
    cdef object value = <object>res
    Py_XDECREF(res)
    return (r == 0, value)
