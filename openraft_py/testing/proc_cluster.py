"""The former name of ``openraft_py.testing.proc.cluster`` (``ProcCluster``, ``free_port``, ...),
kept for the callers that import it (the key-value service, the Jepsen runner, benchmarks)."""

from __future__ import annotations

from .proc.cluster import NodeCallError, NodeExited, NodeProcess, ProcCluster, free_port

__all__ = ["NodeCallError", "NodeExited", "NodeProcess", "ProcCluster", "free_port"]
