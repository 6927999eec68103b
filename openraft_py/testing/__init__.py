"""What users can run against their own code.

- ``Cluster``: several nodes in one process on the in-process router, with restartable
  in-memory disks.
- ``lincheck``: a linearizability checker for client histories (register and key-value
  models; Jepsen, EDN and JSON-lines parsers; ``python -m openraft_py.testing.lincheck``).
- ``sim``: the deterministic simulator: the real engine and runtime in virtual time under
  faults, with safety, liveness and linearizability checks
  (``python -m openraft_py.testing.sim``).
"""

from . import lincheck, sim
from .cluster import Cluster
from .lincheck import CheckResult, Model, Operation, check
from .sim import Simulation, SimResult, run_seed

__all__ = [
    "CheckResult",
    "Cluster",
    "Model",
    "Operation",
    "SimResult",
    "Simulation",
    "check",
    "lincheck",
    "run_seed",
    "sim",
]
