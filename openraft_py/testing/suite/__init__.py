"""The conformance suites: run them from your own tests against your own stores and
transports.

- ``run_log_storage_suite`` / ``LogStoreSuite`` (``log_store``, with the start-up checks of
  ``restore``): any ``RaftLogStorage`` against its contract.
- ``run_state_machine_suite`` / ``StateMachineSuite`` (``state_machine``): any
  ``RaftStateMachine`` against its contract.
- ``run_network_suite`` / ``NetworkSuite`` (``network``): any ``RaftNetworkFactory`` and its
  ``RaftNetwork`` clients against their contract, through the builder's own transport
  serving the suite's ``SuiteServer`` (``NetworkHandle``).
- ``base``: the builder contract (``StoreHandle``), the check registry and ``SuiteFailure``
  (raised naming every failed check), ``CheckOutcome``.

Everything here is also importable from ``openraft_py.testing``.
"""

from __future__ import annotations

from .base import CheckOutcome, StoreHandle, SuiteFailure
from .log_store import LogStoreSuite, run_log_storage_suite
from .network import NetworkHandle, NetworkSuite, SuiteServer, run_network_suite
from .state_machine import StateMachineSuite, run_state_machine_suite

__all__ = [
    "CheckOutcome",
    "LogStoreSuite",
    "NetworkHandle",
    "NetworkSuite",
    "StateMachineSuite",
    "StoreHandle",
    "SuiteFailure",
    "SuiteServer",
    "run_log_storage_suite",
    "run_network_suite",
    "run_state_machine_suite",
]
