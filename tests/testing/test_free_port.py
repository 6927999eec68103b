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


@pytest.mark.parametrize(("worker", "count"), [("gw0", "2"), ("gw1", "2"), ("gw2", "3")])
def test_each_xdist_worker_picks_from_a_slice_of_its_own(
    monkeypatch: pytest.MonkeyPatch, worker: str, count: str
) -> None:
    """Two pytest-xdist workers never hand out the same port: ``_HANDED_OUT`` is one
    process's. A loaded run failed ``kv/test_force_recover`` with "Address already in use":
    its node 4, stopped and restarted on its HTTP port, found it taken."""
    from openraft_py.testing.proc import cluster as proc

    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", count)
    low, high = proc._PORTS_LOW, proc._ephemeral_low()
    if high - low < 500 * int(count):
        pytest.skip(f"the ephemeral range starts at {high}: too few ports below it to slice")
    width = (high - low) // int(count)
    n = int(worker[2:])
    ports = [free_port() for _ in range(40)]
    assert all(low + n * width <= p < low + (n + 1) * width for p in ports), (worker, ports)


@pytest.mark.parametrize("env", [{}, {"PYTEST_XDIST_WORKER": "gw5", "PYTEST_XDIST_WORKER_COUNT": "2"},
                                 {"PYTEST_XDIST_WORKER": "gwx", "PYTEST_XDIST_WORKER_COUNT": "2"}])
def test_outside_xdist_or_with_odd_values_the_whole_range(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    from openraft_py.testing.proc import cluster as proc

    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert proc._worker_slice(20000, 32768) == (20000, 32768)
