"""openraft-py: a production Raft consensus library for Python."""
