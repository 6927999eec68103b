"""Clusters of node processes on loopback: the process-level test and benchmark harness.

- ``cluster``: ``ProcCluster`` (start, kill, pause, restart node processes; call them over
  their control channel), ``NodeProcess``, ``NodeExited``, ``NodeCallError``, ``free_port``.
- ``node``: one node in its own process (``python -m openraft_py.testing.proc.node``),
  RocksDB stores and the TCP transport, driven over stdin/stdout.

The former module names ``openraft_py.testing.proc_cluster`` and
``openraft_py.testing.proc_node`` (also as ``python -m``) still work.
"""

from __future__ import annotations

from .cluster import NodeCallError, NodeExited, NodeProcess, ProcCluster, free_port

__all__ = ["NodeCallError", "NodeExited", "NodeProcess", "ProcCluster", "free_port"]
