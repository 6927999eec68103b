# Compiled builds only (Cython reads this beside leader.py; the pure build never sees it): the
# classes of leader.py as extension types, their fields at fixed offsets (see state.pxd).

cdef class Candidate:
    cdef public object vote, configs, granted, started_at

cdef class PendingRead:
    cdef public object tx, read_log_id, since

cdef class Leader:
    cdef public object vote, node_id, progress, replication, gens, send_due, configs, ack_at, heard_at, noop_log_id
    cdef public object reads, last_heartbeat, elected_at, acks, change_tx, change_retain, transfer_to
    cdef public object transfer_sent, transfer_deadline, transfer_started_at, lease_disabled, voters_changed_at
