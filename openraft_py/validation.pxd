# Compiled builds only (Cython reads this beside validation.py; the pure build never sees it):
# the field checks every request runs are C functions, called without Python's calling
# convention (an AppendEntries runs three of them). Not importable from Python when compiled:
# nothing outside this module calls them.

cdef object _check_vote(rpc, what, v)
cdef object _check_log_id(rpc, what, lid, max_term)
