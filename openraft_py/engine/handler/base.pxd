# Compiled builds only (Cython reads this beside base.py; the pure build never sees it): the
# classes of base.py as extension types, their fields at fixed offsets (see state.pxd).

from openraft_py.engine.engine cimport Engine
from openraft_py.engine.state cimport RaftState
from openraft_py.engine.leader cimport Leader

cdef class Handler:
    cdef public Engine eng
    cdef public RaftState state
    cdef public list output

cdef class LeadingHandler(Handler):
    cdef public Leader leader
