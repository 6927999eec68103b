"""``free_port`` never returns a port an earlier call in the process returned: callers take
several before binding any. Two calls returned the same port now and then (one pair in about
12,000): ``tests/kv/test_identity.py::test_a_directory_from_before_the_record_is_adopted``
failed once in 30 runs with "--raft-addr 127.0.0.1:24552 and --http-addr 127.0.0.1:24552 are
the same port" (``node_options`` takes two), and ``openraft-py cluster up`` (``LocalCluster``)
could give a node one port for both, or two nodes one."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from openraft_py.kv.local_cluster import LocalCluster
from openraft_py.testing.proc.cluster import free_port


@pytest.fixture
def same_pick(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``random.randrange`` picks the same free port every time (as it did, by chance, for
    two calls in a row)."""
    port = free_port()
    monkeypatch.setattr(random, "randrange", lambda a, b: port)
    yield


@pytest.mark.usefixtures("same_pick")
def test_two_calls_never_return_the_same_port() -> None:
    ports = [free_port() for _ in range(4)]
    assert len(set(ports)) == 4, ports


@pytest.mark.usefixtures("same_pick")
def test_the_nodes_of_a_local_cluster_get_distinct_ports() -> None:
    cluster = LocalCluster(3)
    try:
        addrs = [a for n in cluster.nodes.values() for a in (n.raft_addr, n.http_addr)]
        assert len(set(addrs)) == 6, addrs
    finally:
        cluster.close()
