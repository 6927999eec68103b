"""A data directory records whose data it holds (``kv/identity.py``): a node started on
another node's (or cluster's) directory is refused before it opens anything there; a new
directory gets the record; one made before the record existed is adopted."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from openraft_py.kv.identity import IDENTITY_FILE, DataDirMismatch, check_identity
from openraft_py.kv.node import KvNode

from .kv_helpers import free_port, node_options

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def root() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="kv-identity-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_the_first_check_records_and_later_ones_compare(root: Path) -> None:
    assert check_identity(root, 2, "prod") == "new"
    assert (root / IDENTITY_FILE).read_bytes() == b'{"node_id":2,"cluster_name":"prod"}\n'
    assert check_identity(root, 2, "prod") == "checked"
    with pytest.raises(DataDirMismatch, match=r"holds the data of node 2, not node 3: start it with --id 2"):
        check_identity(root, 3, "prod")
    with pytest.raises(DataDirMismatch, match=r"of cluster 'prod', not of cluster 'test'"):
        check_identity(root, 2, "test")
    assert (root / IDENTITY_FILE).read_bytes() == b'{"node_id":2,"cluster_name":"prod"}\n', "a refusal rewrote it"


@pytest.mark.parametrize("raw", [b"", b"{", b'{"node_id": "2", "cluster_name": "x"}', b'{"node_id": 2}',
                                 b'{"node_id": 2, "cluster_name": "x", "extra": 1}', b"\xff\xfe"])
def test_an_unreadable_record_is_refused_not_replaced(root: Path, raw: bytes) -> None:
    (root / IDENTITY_FILE).write_bytes(raw)
    with pytest.raises(DataDirMismatch, match="is not a readable node record"):
        check_identity(root, 2, "x")
    assert (root / IDENTITY_FILE).read_bytes() == raw


async def test_a_node_refuses_another_nodes_directory_before_opening_its_stores(root: Path) -> None:
    first = KvNode(node_options(2, str(root)))
    await first.start()
    await first.stop()
    data = root / "n2"
    assert (data / IDENTITY_FILE).exists() and (data / "log").is_dir()
    # node 3 pointed at node 2's directory (say, two directories swapped)
    opts = node_options(3, str(root))
    opts.data_dir = str(data)
    wrong = KvNode(opts)
    with pytest.raises(DataDirMismatch, match=r"holds the data of node 2, not node 3"):
        await wrong.start()
    assert wrong.raft is None and wrong.log_store is None, "it opened the stores"
    # node 2 itself still starts on it
    again = KvNode(node_options(2, str(root)))
    await again.start()
    await again.stop()


async def test_a_directory_from_before_the_record_is_adopted(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    node = KvNode(node_options(1, str(root)))
    await node.start()
    await node.stop()
    data = root / "n1"
    os.unlink(data / IDENTITY_FILE)  # as an earlier version left it
    caplog.set_level(logging.WARNING, logger="openraft_py.kv.node")
    node = KvNode(node_options(1, str(root)))
    await node.start()
    await node.stop()
    assert check_identity(data, 1, "kv-test") == "checked"
    assert any("made by an earlier version" in r.getMessage() for r in caplog.records)


def test_serve_on_another_nodes_directory_exits_1_saying_whose_it_is(root: Path) -> None:
    data = root / "n2"
    data.mkdir()
    check_identity(data, 2, "openraft-py")
    r = subprocess.run(
        [sys.executable, "-m", "openraft_py.kv.server", "--id", "3", "--raft-addr", f"127.0.0.1:{free_port()}",
         "--http-addr", f"127.0.0.1:{free_port()}", "--data-dir", str(data)],
        capture_output=True, timeout=30,
    )
    assert r.returncode == 1, r.stderr
    err = r.stderr.decode()
    assert "could not start" in err and "holds the data of node 2, not node 3" in err, err
    assert not (data / "log").exists(), "the stores were created before the check"
