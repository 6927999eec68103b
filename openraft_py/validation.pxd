# Compiled builds only (Cython reads this beside validation.py; the pure build never sees it):
# the field checks every request runs are C functions, called without Python's calling
# convention (an AppendEntries runs three of them). Not importable from Python when compiled:
# nothing outside this module calls them.

from openraft_py.types cimport (
    _append_entries_entries, _append_entries_leader_commit, _append_entries_prev_log_id, _append_entries_vote,
    _entry_log_id, _log_id_index, _log_id_term,
)

cdef object _check_vote(rpc, what, v)
cdef object _check_log_id(rpc, what, lid, max_term)
