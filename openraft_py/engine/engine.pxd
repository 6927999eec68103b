# Compiled builds only (Cython reads this beside engine.py; the pure build never sees it): the
# classes of engine.py as extension types, their fields at fixed offsets (see state.pxd).

cimport cython

from openraft_py.engine.state cimport RaftState
from openraft_py.engine.leader cimport Leader, Candidate

# Final (no subclass): its ``cpdef`` methods skip Cython's check for a Python override.
# With the instance dict below that check is an attribute lookup on every C call (a bound
# method made and dropped: the handler getters and ``reset_election_timer``, several times
# a write). A method replaced on one instance (a test) is still what Python code calls;
# C calls from the handlers go to the class's method.
@cython.final
cdef class Engine:
    # An instance dict as well, as a plain class has: a test may replace one node's method.
    cdef dict __dict__
    cdef public object config, rng
    cdef public RaftState state
    cdef public list output
    cdef public Leader leader
    cdef public Candidate candidate, pre_candidate
    cdef public object leader_seen_at, transfer_from, snapshot_building, snapshot_every, snapshot_installing
    cdef public object snapshot_unreported, snapshot_wanted, election_deadline, now, injected_faults
    cdef public object snapshot_pacing, snapshot_build_started, snapshot_next_due
    cdef public bint leader_lost
    cdef public double leader_heard_at, silence_ended_at, transfer_heard_at
    # The handlers stay untyped here: their .pxd files cimport this one (for ``Handler.eng``).
    cdef public object _leader_h, _replication_h, _membership_h, _vote, _log, _following, _snapshot, _transfer
    # The handler getters and the timer: C calls from the handlers (``cpdef``).
    cpdef vote_handler(self)
    cpdef log_handler(self)
    cpdef following_handler(self)
    cpdef snapshot_handler(self)
    cpdef transfer_handler(self)
    cpdef leader_handler(self, leader)
    cpdef replication_handler(self, leader)
    cpdef membership_handler(self, leader)
    cpdef reset_election_timer(self, now)
