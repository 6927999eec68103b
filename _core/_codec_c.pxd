# Field declarations of the compiled codec kernel; the contract is in _codec_py.py.


cdef class FrameReader:
    # Pending bytes of the incomplete frame are _buf[_start:_end] (capacity _cap).
    cdef unsigned char* _buf
    cdef Py_ssize_t _start
    cdef Py_ssize_t _end
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _max
    # Invariant: once set, every feed raises FrameTooLarge.
    cdef bint _broken

    cdef int _append(self, const unsigned char* data, Py_ssize_t n) except -1
