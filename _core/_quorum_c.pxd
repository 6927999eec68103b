# Field declarations of the compiled quorum kernel; the contract is in _quorum_py.py.
from libc.stdint cimport int64_t


cdef class ProgressTable:
    # Invariant: _n tracked nodes (voters of any config, then learners), ids unique.
    cdef Py_ssize_t _n
    cdef int64_t* _ids          # [_n] node ids, slot order
    cdef int64_t* _matched      # [_n] matched index per slot, -1 = nothing
    cdef char* _is_voter        # [_n] 1 if the slot is in some config
    # Configs as slot lists: config k is _cfg_slots[_cfg_start[k]:_cfg_start[k+1]].
    cdef Py_ssize_t _nconfigs
    cdef Py_ssize_t* _cfg_start  # [_nconfigs + 1]
    cdef Py_ssize_t* _cfg_slots  # [_cfg_start[_nconfigs]]
    cdef int64_t* _scratch       # sort buffer, as long as the largest config
    # Invariant: == joint committed index recomputed from _matched (-1 if no configs).
    cdef int64_t _committed
    # Invariant: == _committed as a Python int (None only before __init__ ran).
    cdef object _committed_obj
    cdef int64_t _self_id
    cdef list _learners          # learner ids as given (may overlap voters)

    cdef Py_ssize_t _slot(self, int64_t node_id)
    cdef int64_t _recompute(self)
    cdef int _refresh(self) except -1
