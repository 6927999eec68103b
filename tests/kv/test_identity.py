"""A data directory records whose data it holds (``kv/identity.py``): a node started on
another node's (or cluster's) directory is refused before it opens anything there; a new
directory gets the record; one made before the record existed is adopted. A directory whose
log store is gone but whose state machine is there is refused too."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from openraft_py import StorageError
from openraft_py.kv.identity import IDENTITY_FILE, LOG_DIR, SM_DIR, DataDirMismatch, check_identity, read_identity
from openraft_py.kv.node import KvNode
from openraft_py.kv.nodes import NodeAddrs
from openraft_py.types import ServerState

from .kv_helpers import STABLE_TIMEOUTS, free_port, node_options

pytestmark = pytest.mark.timeout(60)


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


def _a_directory(path: Path) -> None:
    path.mkdir()


def _a_link_to_itself(path: Path) -> None:
    path.symlink_to(path.name)


def _a_link_to_nothing(path: Path) -> None:
    path.symlink_to(path.parent / "gone" / "node.json")


@pytest.mark.parametrize("make", [_a_directory, _a_link_to_itself, _a_link_to_nothing])
def test_a_record_that_is_no_file_is_refused_not_replaced(root: Path, make: Callable[[Path], None]) -> None:
    """``node.json`` a directory, a symbolic link to itself, or a link whose target is gone (the
    record kept elsewhere, on a mount that is not there): the directory raised Python's bare
    ``IsADirectoryError`` and the loop its ``OSError``, and a link to nothing was taken for no
    record at all: replaced by a new record of whatever ``--id`` was given, the directory
    adopted. Each is refused as a record that cannot be read, and left as it is."""
    (root / LOG_DIR).mkdir()  # (a directory holding a node's data)
    path = root / IDENTITY_FILE
    make(path)
    with pytest.raises(DataDirMismatch, match=f"{path} is not a readable node record"):
        check_identity(root, 2, "x")
    assert path.is_symlink() or path.is_dir(), "the record was replaced"


async def test_a_node_whose_record_is_a_link_to_nothing_is_refused_not_adopted(root: Path) -> None:
    """A node's ``node.json`` a symbolic link whose target is gone: ``serve`` took it for a
    directory without a record, adopted it under the ``--id`` given and replaced the link."""
    first = KvNode(node_options(2, str(root)))
    await first.start()
    await first.stop()
    record = root / "n2" / IDENTITY_FILE
    record.unlink()
    record.symlink_to(root / "gone" / IDENTITY_FILE)
    again = KvNode(node_options(2, str(root)))
    with pytest.raises(DataDirMismatch, match=f"{record} is not a readable node record"):
        await again.start()
    assert again.raft is None and again.log_store is None, "it opened the stores"
    assert record.is_symlink(), "the record was replaced"


@pytest.mark.parametrize("bad_id", [-1, 2**63, 2**64 + 5])
def test_a_record_with_a_node_id_out_of_range_is_reported_damaged(root: Path, bad_id: int) -> None:
    """A ``node.json`` whose ``node_id`` is no node id (``-1``, past ``2**63 - 1``) was read
    as a record of another node: the refusal told the operator to "start it with --id -1",
    which ``serve`` refuses. It is damaged, and said so as other damage to the record is,
    and left as it was (``read_identity``, which ``force-recover`` uses, too)."""
    raw = b'{"node_id": %d, "cluster_name": "x"}' % bad_id
    (root / IDENTITY_FILE).write_bytes(raw)
    with pytest.raises(DataDirMismatch) as caught:
        check_identity(root, 2, "x")
    error = str(caught.value)
    assert error.startswith(f"{root / IDENTITY_FILE} is not a readable node record (its node_id {bad_id} is not a "
                            "node id: 0 to 2**63 - 1, so the record is damaged); it names the node"), error
    assert "restore it, or start node 2 on a directory of its own" in error and "--id" not in error, error
    with pytest.raises(DataDirMismatch, match=rf"its node_id {bad_id} is not a node id"):
        read_identity(root)
    assert (root / IDENTITY_FILE).read_bytes() == raw


def test_a_record_of_a_newer_version_is_refused_as_such(root: Path) -> None:
    """A record with fields this version does not know beside a readable node id and cluster
    name (a newer release's record, met after a downgrade) is refused naming them and saying
    what to run, and left as it was: it was told to restore the record, as a damaged one."""
    raw = b'{"node_id": 2, "cluster_name": "x", "format": 2, "zone": "b"}'
    (root / IDENTITY_FILE).write_bytes(raw)
    with pytest.raises(DataDirMismatch, match=r"node.json is not a readable node record for this version of "
                       r"openraft-py: it holds 'format', 'zone', which this version does not know \(it reads node_id "
                       r"and cluster_name only\): a record written by a newer version of openraft-py\? Run that "
                       r"version on .* \(a downgrade is refused\)"):
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


async def test_a_directory_without_its_record_is_not_adopted_by_another_node(root: Path) -> None:
    """With ``node.json`` gone (removed by hand, or an earlier version's directory run once by
    this one), the log store's own owner record still names node 2: node 3 started there is
    refused before it uses the stores, and no ``node.json`` is written for it (it was adopted
    for node 3, which took over node 2's vote and log)."""
    node = KvNode(node_options(2, str(root)))
    await node.start()
    await node.stop()
    data = root / "n2"
    os.unlink(data / IDENTITY_FILE)
    opts = node_options(3, str(root))
    opts.data_dir = str(data)
    wrong = KvNode(opts)
    with pytest.raises(DataDirMismatch, match=r"n2/log holds the log and vote of node 2, not node 3 \(its own record "
                       r"says so\): start it with --id 2, or give node 3 a data directory of its own"):
        await wrong.start()
    assert wrong.raft is None and wrong.log_store is None, "the stores were left open"
    assert not (data / IDENTITY_FILE).exists(), "node.json was written for node 3"
    opts = node_options(2, str(root))
    opts.cluster_name = "other"
    with pytest.raises(DataDirMismatch, match=r"of cluster 'kv-test', not of cluster 'other' \(its own record says "
                       r"so\): start it with --cluster-name kv-test"):
        await KvNode(opts).start()
    assert not (data / IDENTITY_FILE).exists()
    again = KvNode(node_options(2, str(root)))  # node 2 adopts it again
    await again.start()
    await again.stop()
    assert check_identity(data, 2, "kv-test") == "checked"


@pytest.mark.parametrize(("moved", "holds"), [(LOG_DIR, "the log and vote"), (SM_DIR, "the state machine")])
async def test_a_store_moved_in_from_another_nodes_directory_is_refused(root: Path, moved: str, holds: str) -> None:
    """``n3/log`` (or ``n3/sm``) put in place of node 2's (``node.json`` says node 2):
    refused by that store's own record, naming node 3."""
    for nid in (2, 3):
        node = KvNode(node_options(nid, str(root)))
        await node.start()
        await node.stop()
    shutil.rmtree(root / "n2" / moved)
    shutil.copytree(root / "n3" / moved, root / "n2" / moved)
    wrong = KvNode(node_options(2, str(root)))
    with pytest.raises(DataDirMismatch, match=rf"n2/{moved} holds {holds} of node 3, not node 2 \(its own record says "
                       r"so\): start it with --id 3"):
        await wrong.start()
    assert wrong.raft is None and wrong.log_store is None


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


@pytest.mark.parametrize(("sub", "error"), [
    ("log", r"n1/log is a store's database \(it holds CURRENT\), not a node's data directory: give --data-dir the "
            r"directory that holds the node's log/, sm/ and node.json, or an empty one for a new node"),
    ("sm", r"n1/sm is a state machine's directory \(it holds db/CURRENT\)"),
    ("sm/db", r"n1/sm/db is a store's database \(it holds CURRENT\)"),
    ("sm/snapshots", r"n1/sm/snapshots is inside the data directory .*/n1 \(it holds node.json\): start that node "
                     r"with --data-dir .*/n1, or give this node a directory of its own outside it"),
])
async def test_a_store_of_a_node_given_as_its_data_directory_is_refused(root: Path, sub: str, error: str) -> None:
    """``--data-dir n1/log`` (or ``n1/sm``, ...) instead of ``n1``: the node started as a new
    one, with no vote and no log (it could vote twice in a term), and wrote its record and
    stores into the other's directory. Now refused before anything is written there; node
    1 still starts on its own directory with its data."""
    await _one_node_with_writes(root)
    data = root / "n1" / sub
    before = sorted(os.listdir(data))
    opts = node_options(1, str(root), raft_config=STABLE_TIMEOUTS)
    opts.data_dir = str(data)
    wrong = KvNode(opts)
    with pytest.raises(DataDirMismatch, match=error):
        await wrong.start()
    assert wrong.log_store is None and sorted(os.listdir(data)) == before
    again = KvNode(node_options(1, str(root), raft_config=STABLE_TIMEOUTS))
    await again.start()
    try:
        assert again.sm is not None and again.sm.get("a") == "1"
    finally:
        await again.stop()


async def _one_node_with_writes(root: Path) -> KvNode:
    """Node 1 of a one-node cluster under ``root``, initialized, with two keys written; stopped."""
    node = KvNode(node_options(1, str(root), raft_config=STABLE_TIMEOUTS))
    await node.start()
    try:
        assert node.raft is not None
        await node.init({1: NodeAddrs(node.opts.raft_addr, node.opts.http_addr)})
        await node.raft.trigger.elect()
        await node.raft.wait(10).current_leader(1, "elected")
        await node.put("a", "1")
        await node.put("b", "2")
    finally:
        await node.stop()
    return node


@pytest.mark.parametrize("how", ["removed", "emptied"])
async def test_a_directory_whose_log_is_gone_is_refused(root: Path, how: str) -> None:
    """``log/`` removed (say after it was reported damaged) while ``sm/`` stays: the node would
    start with no vote and no log (it could vote twice in a term, or lose acknowledged writes;
    alone, it elected itself in a term below its state's and stopped with ``Panicked``)."""
    first = await _one_node_with_writes(root)
    log_dir = root / "n1" / LOG_DIR
    shutil.rmtree(log_dir)
    if how == "emptied":
        log_dir.mkdir()
    again = KvNode(first.opts)
    with pytest.raises(StorageError, match=r"log is missing or empty but .*/n1/sm holds the node's state machine: "
                                           r"the node's log and vote are gone"):
        await again.start()
    assert again.raft is None and again.log_store is None, "it opened the stores"
    assert not log_dir.exists() or not any(log_dir.iterdir()), "the refused start created a log store"


async def test_a_directory_whose_state_machine_is_gone_is_rebuilt_from_the_log(root: Path) -> None:
    """The other way round, with the whole log still there: the state machine is rebuilt by
    applying the log again (a log purged past it is refused: ``tests/storage/test_lost_state.py``);
    and a first start that stopped after making the log store, before the state machine, starts."""
    first = await _one_node_with_writes(root)
    shutil.rmtree(root / "n1" / SM_DIR)
    again = KvNode(first.opts)
    await again.start()
    try:
        assert again.raft is not None
        await again.raft.wait(10).state(ServerState.LEADER, "elected")
        assert await again.read("b", "linearizable") == "2"
        assert again.sm is not None and again.sm.get("a") == "1"
    finally:
        await again.stop()
    shutil.rmtree(root / "n1" / SM_DIR)
    shutil.rmtree(root / "n1" / LOG_DIR)
    (root / "n1" / IDENTITY_FILE).unlink()
    (root / "n1" / LOG_DIR).mkdir()  # as a crash right after the log store's creation leaves it
    fresh = KvNode(first.opts)
    await fresh.start()
    await fresh.stop()
    assert check_identity(root / "n1", 1, "kv-test") == "checked"


async def test_a_recorded_directory_whose_stores_are_both_gone_is_refused(root: Path) -> None:
    """A new directory gets its record once its stores exist, so a record without either
    store means they were removed (say, to "start over" after a damaged one): the node
    would start empty under its old id, having forgotten its vote and every entry it
    acknowledged. It was started as a new node."""
    first = await _one_node_with_writes(root)
    shutil.rmtree(root / "n1" / LOG_DIR)
    shutil.rmtree(root / "n1" / SM_DIR)
    again = KvNode(first.opts)
    with pytest.raises(StorageError, match=r"holds the node's record \(node.json\) but neither its log .* nor its "
                                           r"state machine: the node's data was removed"):
        await again.start()
    assert sorted(os.listdir(root / "n1")) == [IDENTITY_FILE], "the refused start created a store"


async def test_a_first_start_that_fails_before_its_stores_records_nothing(root: Path) -> None:
    """A first start that stops before the stores exist (here: a TLS key that cannot be read)
    leaves no record, so the next start is a first start again (a record would have made it
    refuse the directory as one whose stores were removed)."""
    opts = node_options(1, str(root), tls_cert=str(root / "missing.pem"), tls_key=str(root / "missing.key"))
    with pytest.raises(Exception, match="missing"):
        await KvNode(opts).start()
    data = Path(opts.data_dir)
    assert not (data / IDENTITY_FILE).exists() and not (data / LOG_DIR).exists()
    opts.tls_cert = opts.tls_key = None
    node = KvNode(opts)
    await node.start()
    await node.stop()
    assert check_identity(data, 1, "kv-test") == "checked"


async def test_a_data_directory_in_use_by_another_process_is_refused_before_the_record(root: Path) -> None:
    """Two ``serve`` started at once on one new directory both found no record and both wrote
    one: the last one's stayed, whichever process kept the stores (so the node that ran
    was recorded as the other, and the other could later start on its log and vote). Now a
    node holds an ``flock`` on its data directory from before the record until it stops;
    another holder makes the start fail before anything is written."""
    import fcntl

    opts = node_options(1, str(root))
    data = Path(opts.data_dir)
    data.mkdir()
    fd = os.open(data, os.O_RDONLY | os.O_DIRECTORY)  # as another process would hold it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        node = KvNode(opts)
        with pytest.raises(StorageError, match=r"another process uses it \(another serve with the same --data-dir\?\)"):
            await node.start()
        assert os.listdir(data) == [], "the refused start wrote into the directory"
    finally:
        os.close(fd)
    node = KvNode(opts)
    await node.start()
    await node.stop()
    again = KvNode(opts)  # released by stop()
    await again.start()
    await again.stop()
