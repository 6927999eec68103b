"""What users can run against their own code.

- ``Cluster``: several nodes in one process on the in-process router, with restartable
  in-memory disks.
- ``lincheck``: a linearizability checker for client histories (register and key-value
  models; Jepsen, EDN and JSON-lines parsers; ``python -m openraft_py.testing.lincheck``).
- ``sim``: the deterministic simulator: the real engine and runtime in virtual time under
  faults, with safety, liveness and linearizability checks
  (``python -m openraft_py.testing.sim``).
- ``run_log_storage_suite`` / ``run_state_machine_suite`` (``LogStoreSuite``,
  ``StateMachineSuite``): the storage conformance suites, to run on your own stores;
  ``run_network_suite`` (``NetworkSuite``, ``NetworkHandle``, ``SuiteServer``): the network
  conformance suite, to run on your own transport (the ``suite`` sub-package).
- ``invariants``: the Raft safety properties as functions over nodes' logs and states
  (log matching, election safety, leader completeness, applied prefixes, compaction order),
  shared by the simulator and the test suites.
- ``proc``: clusters of node processes on loopback (TCP, RocksDB), for process-level tests
  and benchmarks.

``lincheck`` and ``sim`` load on first use, so ``python -m`` can run them as scripts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .cluster import Cluster
from .suite import (
    CheckOutcome,
    LogStoreSuite,
    NetworkHandle,
    NetworkSuite,
    StateMachineSuite,
    StoreHandle,
    SuiteFailure,
    SuiteServer,
    run_log_storage_suite,
    run_network_suite,
    run_state_machine_suite,
)

if TYPE_CHECKING:
    from . import lincheck, sim
    from .lincheck import CheckResult, Model, Operation, check
    from .sim import SimResult, Simulation, run_seed

_LAZY = {
    "lincheck": ("lincheck", None),
    "sim": ("sim", None),
    "CheckResult": ("lincheck", "CheckResult"),
    "Model": ("lincheck", "Model"),
    "Operation": ("lincheck", "Operation"),
    "check": ("lincheck", "check"),
    "SimResult": ("sim", "SimResult"),
    "Simulation": ("sim", "Simulation"),
    "run_seed": ("sim", "run_seed"),
}


if not TYPE_CHECKING:
    # Hidden from type checkers, which take a module's ``__getattr__`` as declaring every
    # name: a misspelt import (``from openraft_py.testing import Clustr``) was ``Any`` to
    # ``mypy --strict`` and failed only when run. They see the lazy names imported above.

    def __getattr__(name: str) -> Any:
        try:
            module, attr = _LAZY[name]
        except KeyError:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
        mod = importlib.import_module(f"{__name__}.{module}")
        return mod if attr is None else getattr(mod, attr)


__all__ = [
    "CheckOutcome",
    "CheckResult",
    "Cluster",
    "LogStoreSuite",
    "Model",
    "NetworkHandle",
    "NetworkSuite",
    "Operation",
    "SimResult",
    "Simulation",
    "StateMachineSuite",
    "StoreHandle",
    "SuiteFailure",
    "SuiteServer",
    "check",
    "lincheck",
    "run_log_storage_suite",
    "run_network_suite",
    "run_seed",
    "run_state_machine_suite",
    "sim",
]
