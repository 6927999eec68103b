"""What users can run against their own code: an in-process cluster harness (and, as they
land, the storage conformance suite, the deterministic simulator and the linearizability
checker)."""

from .cluster import Cluster

__all__ = ["Cluster"]
