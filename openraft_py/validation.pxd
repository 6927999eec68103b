# Compiled builds only (Cython reads this beside validation.py; the pure build never sees it):
# the field checks every request runs are C functions, called without Python's calling
# convention (an AppendEntries runs three of them). Not importable from Python when compiled:
# nothing outside this module calls them.

from openraft_py.types cimport (
    append_entries_entries, append_entries_leader_commit, append_entries_prev_log_id, append_entries_vote,
    entry_log_id, log_id_index, log_id_term,
)

cdef object _check_vote(rpc, what, v)
cdef object _check_log_id(rpc, what, lid, max_term)
