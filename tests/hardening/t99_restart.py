"""Crashes, restarts and damaged files (t99): what a node finds in its data directory when it
starts again, and what it says about it.

- A log store's ``MANIFEST`` cut short at any point: the store opens with everything it held, or
  is refused as damaged, with what to do (``DAMAGED_ADVICE``). A cut that dropped the record of
  the table file holding the format marker was refused as "foreign or damaged database: format
  marker missing", without the advice, though the directory holds our ``OPENRAFT-ACKED``.
- A state machine whose ``db`` was removed and whose ``snapshots`` were left is named so, with
  what to do; it was called a "foreign directory".
- A damaged TLS file is named alone: a certificate or key that does not decode (both files
  were named, with OpenSSL's "[SSL] PEM lib"), and a key whose private part is not the
  certificate's though its public part is (the certificate was blamed: "peers would refuse
  this certificate: BAD_SIGNATURE").
- A ``node.json`` whose cluster name is none ``serve`` takes is damaged (it was taken as another
  cluster's: "start it with --cluster-name ", its control characters written raw).
- A ``catching-up.json`` whose numbers no node writes is damaged (a target below -1 was taken
  as caught up: the node voted at once).
- ``cluster force-recover`` run again after a run killed once it was done says so (it refused,
  saying the new cluster name must differ from the node's).
- ``cluster up --data-dir DIR`` on a damaged ``DIR/cluster.json`` is refused naming it, left as
  it is (it was taken for none and overwritten with new ports).
- A ``log/``, ``sm/`` or ``sm/db`` that is a symbolic link to nothing (its disk not mounted) is
  named so (it read as data removed: "empty the whole data directory").
- A named pipe where ``serve`` (or ``cluster up``) reads a file at start (``node.json``,
  ``catching-up.json``, the first-start marker, a store's ``CURRENT``, ``OPENRAFT-ACKED`` or
  ``rocksdict-config.json``, ``cluster.json``) fails the start at once, naming it: the start
  hung for good in a read waiting for a writer, and SIGTERM did not end it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from storage.rocks_one_node import one_rocks_node

from openraft_py import StorageError
from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.storage import KvSet, encode_kv
from openraft_py.storage.rocks import DAMAGED_ADVICE, RocksLogStore

pytestmark = pytest.mark.timeout(60)


async def _make(root: Path) -> None:
    """Writes, a snapshot, the log purged up to it, more writes: the log's MANIFEST then
    records several table files (the format marker's among them) and their write-ahead logs."""
    async with one_rocks_node(root, seed=7) as raft:
        for i in range(30):
            await raft.client_write(encode_kv(KvSet(f"k{i}", "v" * 40)))
        applied = raft.metrics.last_applied
        assert applied is not None
        await raft.trigger.snapshot()
        await raft.wait(10).snapshot(applied, "snapshot built")
        await raft.trigger.purge_log(applied.index - 3)
        await raft.wait(10).metrics(lambda m: m.purged is not None and m.purged.index >= applied.index - 3, "purged")
        for i in range(5):
            await raft.client_write(encode_kv(KvSet(f"j{i}", "w")))


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import asyncio

    root = tmp_path_factory.mktemp("restart") / "node"
    asyncio.run(_make(root))
    return root


async def _content(root: Path, store: str) -> tuple[Any, ...]:
    """What the store ``store`` (``log`` or ``sm``) under ``root`` holds: a log store's log
    state, vote, committed id and entries; a state machine's applied state and data."""
    if store == "log":
        log = await RocksLogStore.open(root / "log")
        try:
            st = await log.get_log_state()
            assert st.last_log_id is not None
            start = 0 if st.last_purged_log_id is None else st.last_purged_log_id.index + 1
            entries = await log.get_log_reader().try_get_log_entries(start, st.last_log_id.index + 1)
            return st, await log.read_vote(), await log.read_committed(), entries
        finally:
            await log.aclose()
    sm = await RocksStateMachine.open(root / "sm")
    try:
        return await sm.applied_state(), sm.data
    finally:
        await sm.aclose()


@pytest.mark.parametrize("store", ["log", "sm"])
async def test_a_manifest_cut_anywhere_opens_whole_or_is_refused_as_damaged(made: Path, tmp_path: Path,
                                                                           store: str) -> None:
    """The store's MANIFEST cut at every 8th byte: never a store that opens with less than it
    held, and every refusal says the database is damaged and what to do."""
    db = Path(store) if store == "log" else Path(store) / "db"
    whole = await _content(_copy(made, tmp_path / "whole"), store)
    manifest = next((made / db).glob("MANIFEST-*"))
    refusals: dict[str, list[int]] = {}
    for cut in range(0, manifest.stat().st_size, 8):
        root = _copy(made, tmp_path / f"cut{cut}")
        with open(root / db / manifest.name, "r+b") as f:
            f.truncate(cut)
        try:
            content = await _content(root, store)
        except StorageError as e:
            if "the database is damaged" not in str(e) or DAMAGED_ADVICE not in str(e):
                refusals.setdefault(str(e).replace(str(root), "<node>"), []).append(cut)
        else:
            assert content == whole, f"the MANIFEST cut at byte {cut} opened with less than the store held"
        shutil.rmtree(root)
    assert not refusals, f"refusals of a damaged MANIFEST not worded as damage, with the cuts: {refusals}"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


async def test_a_state_machine_whose_database_was_removed_is_named_so_not_foreign(made: Path, tmp_path: Path) -> None:
    """``sm/db`` removed, ``sm/snapshots`` left (space freed by hand, or a state machine to
    be rebuilt from the log): the open says the database is missing and what to do. It said
    "foreign directory: no 'db' inside (found ['snapshots'])": a directory of ours, called
    another program's, with no way out."""
    root = _copy(made, tmp_path / "node")
    shutil.rmtree(root / "sm" / "db")
    with pytest.raises(StorageError) as ei:
        sm = await RocksStateMachine.open(root / "sm")
        await sm.aclose()
    msg = str(ei.value)
    assert "foreign" not in msg, msg
    assert f"{root / 'sm' / 'db'} is missing" in msg, msg
    assert "snapshots" in msg and f"remove {root / 'sm'} as a whole" in msg, msg


# -- damaged TLS files ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a node certificate signed by it (``ca.pem``, ``node.pem``, ``node.key``)."""
    from kv.test_tls import OPENSSL, _ca, _leaf

    if OPENSSL is None:
        pytest.skip("the openssl command line is not installed")
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _leaf(d, "node", "ca")
    return d


def _damaged_copy(pki: Path, name: str, damage: Callable[[bytes], bytes]) -> str:
    """A copy of ``pki/name`` with ``damage`` applied to its bytes; its path."""
    out = pki / f"damaged-{name}"
    out.write_bytes(damage((pki / name).read_bytes()))
    return str(out)


def _pem_body_changed(pem: bytes, change: Callable[[bytearray], None]) -> bytes:
    """``pem`` (one block) with ``change`` applied to its DER bytes, encoded again."""
    import base64

    lines = pem.strip().splitlines()
    der = bytearray(base64.b64decode(b"".join(lines[1:-1])))
    change(der)
    body = base64.encodebytes(bytes(der)).replace(b"\n", b"")
    return b"\n".join([lines[0], *(body[i:i + 64] for i in range(0, len(body), 64)), lines[-1]]) + b"\n"


def _flip_private_scalar(der: bytearray) -> None:
    # SEC1 ECPrivateKey (``openssl ecparam -genkey -noout``): 30 len 02 01 01 04 20 <32-byte
    # private scalar> ...; the public point after it stays the certificate's.
    assert der[2:7] == b"\x02\x01\x01\x04\x20", der[:8].hex()
    der[7 + 10] ^= 0x5A


def _tls_error(pki: Path, cert: str = "node.pem", key: str = "node.key") -> str:
    from openraft_py.kv.node import ServeOptions, checked_tls_contexts

    opts = ServeOptions(id=1, raft_addr="127.0.0.1:1", http_addr="127.0.0.1:2", data_dir="d", cluster_name="c",
                        tls_cert=str(pki / cert), tls_key=str(pki / key), tls_ca=str(pki / "ca.pem"))
    with pytest.raises(ValueError) as ei:
        checked_tls_contexts(opts)
    return str(ei.value)


@pytest.mark.parametrize("damage", ["cut short", "a base64 character replaced"])
def test_a_damaged_certificate_file_is_named_alone(pki: Path, damage: str) -> None:
    """A certificate file damaged on disk is named as such. It was "--tls-cert C / --tls-key
    K: cannot load them: [SSL] PEM lib", naming the key as much as the certificate."""
    cut: Callable[[bytes], bytes] = ((lambda b: b[:len(b) // 2]) if damage == "cut short"
                                     else (lambda b: b[:100] + b"!" + b[101:]))
    cert = _damaged_copy(pki, "node.pem", cut)
    msg = _tls_error(pki, cert=cert)
    assert msg.startswith(f"--tls-cert {cert!r}: ") and "does not decode" in msg and "--tls-key" not in msg, msg


def test_a_damaged_key_file_is_named_alone(pki: Path) -> None:
    """A key file cut short is named alone (it was named with the certificate file)."""
    key = _damaged_copy(pki, "node.key", lambda b: b[:len(b) // 2])
    msg = _tls_error(pki, key=key)
    assert msg.startswith(f"--tls-key {key!r}: ") and "does not decode" in msg and "--tls-cert" not in msg, msg


def test_a_key_whose_private_part_is_damaged_is_named_not_the_certificate(pki: Path) -> None:
    """A key file whose private scalar was damaged, its public point intact: OpenSSL's check
    that the key is the certificate's compares the public parts and passes, and the node's
    signatures then fail. It said "--tls-cert C: peers would refuse this certificate:
    BAD_SIGNATURE": the certificate blamed, for its key's damage."""
    key = _damaged_copy(pki, "node.key", lambda b: _pem_body_changed(b, _flip_private_scalar))
    msg = _tls_error(pki, key=key)
    assert msg.startswith(f"--tls-key {key!r}") and "does not sign" in msg, msg
    assert "peers would refuse this certificate" not in msg, msg


# -- a damaged node.json -------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "name"), [
    ("cluster_name", ""), ("cluster_name", "prod\n\x1b[2J"), ("cluster_name", "x" * 300),
    ("recovering_to", ""), ("recovered_from", "a\tb"),
])
def test_a_record_naming_a_cluster_name_serve_refuses_is_damaged(tmp_path: Path, field: str, name: str) -> None:
    """A ``node.json`` whose cluster name is none ``serve`` takes (empty, control characters,
    too long) was never written by ``serve`` (it checks the name before recording it): it is
    damaged. It was taken as another cluster's record, and the refusal said "start it with
    --cluster-name " (a flag ``serve`` refuses), with the name's control characters written
    raw into the error line."""
    import json

    from openraft_py.kv.identity import IDENTITY_FILE, DataDirMismatch, check_identity

    record = {"node_id": 3, "cluster_name": "prod", field: name}
    (tmp_path / IDENTITY_FILE).write_text(json.dumps(record))
    with pytest.raises(DataDirMismatch) as ei:
        check_identity(tmp_path, 3, "prod")
    msg = str(ei.value)
    assert "is not a readable node record" in msg and f"its {field}" in msg and "damaged" in msg, msg
    assert "--cluster-name" not in msg and "\n" not in msg and "\x1b" not in msg, msg


@pytest.mark.parametrize("record", [
    {"target": -7}, {"target": 2**62}, {"target": 5, "granted": [-1, 2, None]},
    {"target": None, "granted": [3, -2, None]}, {"target": None, "granted": [3, 2, [1, -4]]},
])
def test_a_catching_up_record_out_of_range_is_damaged(tmp_path: Path, record: dict[str, Any]) -> None:
    """A ``catching-up.json`` whose numbers no node writes (a target below -1, the "nothing
    committed" mark, or past the largest log index; a granted vote's term, candidate or log id
    out of range) is damaged. A target of -7 was taken as caught up: the node voted at once,
    before it held what its cluster had committed, which the record is there to prevent."""
    import json

    from openraft_py.kv.identity import DataDirMismatch
    from openraft_py.kv.rejoin import CATCHING_UP_FILE, CatchUpGuard

    (tmp_path / CATCHING_UP_FILE).write_text(json.dumps(record))
    with pytest.raises(DataDirMismatch) as ei:
        CatchUpGuard.load(tmp_path, 3, new=False)
    msg = str(ei.value)
    assert "is not a readable record" in msg and "damaged" in msg, msg


def test_a_catching_up_record_in_range_is_read(tmp_path: Path) -> None:
    """The records a node writes read back: the target -1 (nothing committed), a granted
    vote without and with a last log id."""
    import json

    from openraft_py.kv.rejoin import CATCHING_UP_FILE, CatchUpGuard

    for record in ({"target": -1}, {"target": 0, "granted": [1, 1, None]}, {"target": None, "granted": [2, 1, [1, 4]]}):
        (tmp_path / CATCHING_UP_FILE).write_text(json.dumps(record))
        guard = CatchUpGuard.load(tmp_path, 3, new=False)
        assert guard.active and guard.target == record["target"]


# -- a forced recovery run again -----------------------------------------------------------------


async def test_force_recover_run_again_after_it_finished_says_so_and_changes_nothing(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A forced recovery killed after its last step (``node.json`` names the new cluster)
    but before it said so, run again as it was: it says the recovery is done (exit 0), and
    changes nothing. It refused (exit 1) with "the new cluster name must differ from the
    node's, 'kv-test-2'", as if the operator had mistyped the name."""
    from kv.kv_helpers import KvCluster
    from kv.test_force_recover import _recover_async, _snapshot_of, _three_stopped

    from openraft_py.kv.recover import CONFIRM_FLAG

    c = KvCluster()
    try:
        dirs = await _three_stopped(c)
        assert await _recover_async(dirs[1], CONFIRM_FLAG) == 0
        before = await _snapshot_of(dirs[1])
        capsys.readouterr()
        assert await _recover_async(dirs[1], CONFIRM_FLAG) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert "is already the only voter of cluster 'kv-test-2'" in out and "finished" in out, out
        assert "start it with --cluster-name kv-test-2" in out, out
        assert await _snapshot_of(dirs[1]) == before
    finally:
        await c.close()


# -- a local cluster's damaged cluster.json --------------------------------------------------------

_RECORD = {"nodes": {"1": {"raft_addr": "127.0.0.1:20058", "http_addr": "127.0.0.1:22249"},
                     "2": {"raft_addr": "127.0.0.1:20240", "http_addr": "127.0.0.1:32357"}}}


def _damaged_records() -> dict[str, Callable[[Path], None]]:
    import json
    import os

    whole = json.dumps(_RECORD, indent=1).encode()

    def bad_addr(p: Path) -> None:
        rec = json.loads(whole)
        rec["nodes"]["1"]["http_addr"] = "nohost"
        p.write_text(json.dumps(rec))

    return {
        "emptied": lambda p: p.write_bytes(b""),
        "cut short": lambda p: p.write_bytes(whole[:len(whole) // 2]),
        "garbage": lambda p: p.write_bytes(b"\x00\x01garbage"),
        "no nodes object": lambda p: p.write_text('{"nodes": "x"}'),
        "a directory": lambda p: p.mkdir(),
        "a named pipe": lambda p: os.mkfifo(p),
        "an address that is not host:port": bad_addr,
    }


@pytest.mark.parametrize("damage", list(_damaged_records()))
def test_a_local_cluster_s_damaged_record_is_named_and_left_as_it_is(tmp_path: Path, damage: str) -> None:
    """``cluster up --data-dir DIR`` (``LocalCluster``) on a directory whose ``cluster.json``
    is damaged (a power loss after its rename: it is written without fsync): refused naming
    the file, which is left as it is. It was taken for no record: new ports were picked and
    written over it (the nodes' addresses it held were gone), and the start failed later
    saying the membership named addresses "cluster.json does not record ... a node added
    elsewhere"; a directory there was "cannot listen on 127.0.0.1: Is a directory", and a
    damaged address a ``ValueError`` with a hint of a traceback."""
    import os

    from openraft_py.kv.local_cluster import ClusterError, LocalCluster

    record = tmp_path / "cluster.json"
    _damaged_records()[damage](record)
    before = record.read_bytes() if record.is_file() else None  # (never read from a named pipe)
    with pytest.raises(ClusterError) as ei:
        c = LocalCluster(2, root=tmp_path)
        c.close()
    msg = str(ei.value)
    assert msg.startswith(f"{record} is not a readable record of the local cluster's nodes ("), msg
    assert "restore it" in msg, msg
    assert (record.read_bytes() if record.is_file() else None) == before and os.path.lexists(record)
    assert not (tmp_path / "cluster.json.tmp").exists()
    # The directory's lock was let go: a second try finds the same refusal, not "in use".
    with pytest.raises(ClusterError, match="is not a readable record"):
        LocalCluster(2, root=tmp_path).close()


# -- a store behind a symbolic link to nothing ---------------------------------------------------


@pytest.mark.parametrize("links", [("log",), ("sm",), ("log", "sm"), ("sm/db",)])
def test_a_store_that_is_a_link_to_nothing_is_named_so(made: Path, tmp_path: Path, links: tuple[str, ...]) -> None:
    """A node whose ``log/`` or ``sm/`` (or ``sm/db``) is a symbolic link to another disk that
    is not mounted: refused naming the link and its target, with the same question as for a
    ``--data-dir`` that is such a link (is its disk mounted?). It said the node's data was
    removed ("the node's log and vote are gone"; both: "treat the node as a failed machine:
    empty the whole data directory"), or "sm/db is not a directory", or a bare "No such file
    or directory": advice to throw away a node whose data is only out of reach."""
    from openraft_py.kv.identity import check_stores

    root = _copy(made, tmp_path / "node")
    for sub in links:
        shutil.rmtree(root / sub)
        (root / sub).symlink_to(tmp_path / "unmounted" / sub.replace("/", "-"))
    with pytest.raises(StorageError) as ei:
        check_stores(root, True)
    msg = str(ei.value)
    assert f"{root / links[0]} is a symbolic link to" in msg and "is its disk mounted?" in msg, msg
    assert "empty the whole data directory" not in msg and "gone" not in msg, msg


def test_a_local_cluster_record_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    """The record's temporary file cannot be made (a directory of its name): the error names
    it. It said "cannot listen on 127.0.0.1: Is a directory"."""
    from openraft_py.kv.local_cluster import ClusterError, LocalCluster

    (tmp_path / "cluster.json.tmp").mkdir()
    with pytest.raises(ClusterError) as ei:
        LocalCluster(1, root=tmp_path).close()
    assert str(ei.value) == (f"cannot write {tmp_path / 'cluster.json'} ({tmp_path / 'cluster.json.tmp'}): "
                             "Is a directory"), str(ei.value)


# -- a named pipe where a file belongs -------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data directory of a ``serve`` process that started on it (a new node: it holds
    ``node.json``, ``catching-up.json``, ``log/`` and ``sm/``) and stopped on SIGTERM."""
    import subprocess
    import sys
    import time
    import urllib.request

    from openraft_py.testing.proc_cluster import free_port

    data = tmp_path_factory.mktemp("served") / "n1"
    http = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "openraft_py.kv.server", "--id", "1", "--raft-addr",
                             f"127.0.0.1:{free_port()}", "--http-addr", http, "--data-dir", str(data)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://{http}/cluster/status", timeout=1):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.05)
        proc.terminate()
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()
    return data


@pytest.mark.parametrize("name", ["node.json", "catching-up.json", "first-start-unfinished", "log/OPENRAFT-ACKED",
                                  "log/CURRENT", "sm/db/CURRENT", "log/rocksdict-config.json"])
def test_a_named_pipe_where_a_file_belongs_fails_the_start_at_once(served: Path, tmp_path: Path, name: str) -> None:
    """A named pipe in place of a file ``serve`` reads at start: exit 1 within seconds, the
    error line naming it. ``serve`` hung there for good, in a read that waited for a writer
    (SIGTERM did not end it: the start waits for the thread it reads in)."""
    import os
    import subprocess
    import sys

    from openraft_py.testing.proc_cluster import free_port

    data = _copy(served, tmp_path / "n1")
    path = data / name
    if path.exists():
        path.unlink()
    os.mkfifo(path)
    args = [sys.executable, "-m", "openraft_py.kv.server", "--id", "1", "--raft-addr", f"127.0.0.1:{free_port()}",
            "--http-addr", f"127.0.0.1:{free_port()}", "--data-dir", str(data)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"serve did not end within 20 s with a named pipe at {name}")
    last = err.strip().splitlines()[-1]
    assert proc.returncode == 1 and last.startswith("openraft-py serve: error: the node could not start: "), err
    assert str(data) in last and path.name in last and "named pipe" in last and "Traceback" not in err, last


@pytest.mark.parametrize("name", ["node.json", "catching-up.json"])
def test_a_record_larger_than_any_record_is_refused_unread(tmp_path: Path, name: str) -> None:
    """A node's record is a few hundred bytes; one of 16 MiB (a file copied over it by
    mistake, a sparse file) was read whole into memory at every start, then refused for
    what its first bytes held. It is refused for its size, reading no more than the bound."""
    from openraft_py.kv.identity import MAX_RECORD_BYTES, DataDirMismatch, check_identity
    from openraft_py.kv.rejoin import CatchUpGuard

    path = tmp_path / name
    with open(path, "wb") as f:
        f.truncate(16 << 20)
    with pytest.raises(DataDirMismatch, match=f"it holds more than {MAX_RECORD_BYTES} bytes"):
        if name == "node.json":
            check_identity(tmp_path, 3, "prod")
        else:
            CatchUpGuard.load(tmp_path, 3, new=False)
