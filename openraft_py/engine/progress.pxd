# Compiled builds only (Cython reads this beside progress.py; the pure build never sees it): the
# classes of progress.py as extension types, their fields at fixed offsets (see state.pxd).

cdef class ProgressEntry:
    cdef public object matched, next_index, inflight, gen, first_gen, probing, heartbeat_due, snapshotting, backoff_until, acked_at
