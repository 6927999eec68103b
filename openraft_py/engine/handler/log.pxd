# Compiled builds only (Cython reads this beside log.py; the pure build never sees it): the
# classes of log.py as extension types, their fields at fixed offsets (see state.pxd).

from openraft_py.engine.handler.base cimport Handler
from openraft_py.types cimport _entry_log_id, _log_id_index, _log_id_term

cdef class LogHandler(Handler):
    # C calls between these methods (``cpdef``).
    cpdef next_io(self)
    cpdef append(self, entries)
    cpdef truncate(self, after_index)
    cpdef commit_to(self, index, when=*)
    cpdef membership_changed(self)
    cpdef mark_flushed(self, io)
