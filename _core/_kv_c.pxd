# The key-value kernel declares no cdef classes; the contract is in _kv_py.py.
