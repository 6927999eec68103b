"""``openraft-py serve`` that cannot start for a reason the operator fixes (a port taken, a data
directory that is a file or another node's, a store that does not open) ends with the command
line's usual one line, ``openraft-py serve: error: ...``, on stderr and exit code 1 (the
command line's "failed"; 2 is kept for a bad command line), and no traceback; a bug while
starting (an exception of no such kind) keeps its traceback."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from openraft_py.kv import server
from openraft_py.kv.identity import IDENTITY_FILE, LOG_DIR
from openraft_py.kv.node import KvNode

from .kv_helpers import free_port, node_options

pytestmark = pytest.mark.timeout(60)

PREFIX = "openraft-py serve: error: the node could not start: "


def _serve(data: Path, *extra: str, http_port: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openraft_py.kv", "serve", "--id", "1", "--raft-addr", f"127.0.0.1:{free_port()}",
         "--http-addr", f"127.0.0.1:{http_port or free_port()}", "--data-dir", str(data), *extra],
        capture_output=True, text=True, timeout=45)


def _another_nodes_dir(root: Path) -> Path:
    (root / "n2").mkdir()
    (root / "n2" / IDENTITY_FILE).write_text('{"node_id":2,"cluster_name":"openraft-py"}\n')
    return root / "n2"


def _a_file(root: Path) -> Path:
    (root / "f").write_text("x")
    return root / "f"


def _a_corrupt_log(root: Path) -> Path:
    (root / "n1" / LOG_DIR).mkdir(parents=True)
    (root / "n1" / IDENTITY_FILE).write_text('{"node_id":1,"cluster_name":"openraft-py"}\n')
    (root / "n1" / LOG_DIR / "CURRENT").write_text("MANIFEST-000042\n")  # names a manifest that is not there
    return root / "n1"


@pytest.mark.parametrize(("make", "says"), [
    (_another_nodes_dir, "holds the data of node 2, not node 1"),
    (_a_file, "it is a file, not a directory"),
    (_a_corrupt_log, "StorageError"),
])
def test_a_start_failure_ends_with_one_error_line_and_exit_1(
        root: Path, make: Callable[[Path], Path], says: str) -> None:
    r = _serve(make(root), "--log-format", "json")
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(PREFIX) and says in last, r.stderr
    assert "Traceback" not in r.stderr, r.stderr


def test_a_store_error_of_several_lines_is_said_in_one_line(root: Path) -> None:
    """RocksDB's report of a table file cut short is two lines ("Corruption: Sst file size
    mismatch: .../000009.sst. Expected 1116, actual size 0" and "  The file .../MANIFEST-000005
    may be corrupted."): the command line's error line said the first, and the last line on
    stderr was the second, naming the MANIFEST and not the table file (nor the advice)."""
    async def made() -> None:  # a node's data directory with its stores' table files
        node = KvNode(node_options(1, str(root)))
        await node.start()
        await node.stop()

    asyncio.run(made())
    tables = sorted((root / "n1" / LOG_DIR).glob("*.sst"))
    assert tables, sorted(p.name for p in (root / "n1" / LOG_DIR).iterdir())
    tables[0].write_bytes(b"")
    r = _serve(root / "n1", "--cluster-name", node_options(1, str(root)).cluster_name)
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(PREFIX), r.stderr
    assert f"Sst file size mismatch: {tables[0]}" in last and "may be corrupted" in last, r.stderr
    assert "Traceback" not in r.stderr, r.stderr


def test_a_port_taken_ends_with_one_error_line_naming_the_flag(root: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        r = _serve(root / "n1", http_port=holder.getsockname()[1])
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(PREFIX) and "--http-addr" in last and "another process listens there" in last, r.stderr
    assert "Traceback" not in r.stderr
    assert not (root / "n1").exists(), "a first start that failed left its directory"


def test_two_addresses_of_one_port_on_the_same_host_are_named_as_such(root: Path) -> None:
    """``--raft-addr 127.0.0.1:P --http-addr localhost:P``: the command line's check compares
    the hosts as written, so the start bound the raft port and then failed on the HTTP port,
    saying "Address already in use (another process listens there)": the process there was
    the node itself. Now both addresses are resolved before anything is made, and the error
    says they are the same port."""
    port = free_port()
    r = subprocess.run(
        [sys.executable, "-m", "openraft_py.kv", "serve", "--id", "1", "--raft-addr", f"127.0.0.1:{port}",
         "--http-addr", f"localhost:{port}", "--data-dir", str(root / "n1")],
        capture_output=True, text=True, timeout=45)
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(PREFIX) and "are the same port" in last, r.stderr
    assert "another process" not in last, r.stderr
    assert "Traceback" not in r.stderr
    assert not (root / "n1").exists(), "the start made its directory before it found the ports the same"


def test_a_bug_while_starting_keeps_its_traceback(root: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    async def broken(self: object) -> None:
        raise AttributeError("'NoneType' object has no attribute 'x'")

    monkeypatch.setattr(server.KvNode, "start", broken)
    monkeypatch.setattr(server, "configure_logging", lambda *a, **k: None)  # (caplog keeps the records)
    parser = server.add_serve_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--id", "1", "--raft-addr", f"127.0.0.1:{free_port()}",
                              "--http-addr", f"127.0.0.1:{free_port()}", "--data-dir", str(root / "n1")])
    with caplog.at_level(logging.ERROR, logger="openraft_py.kv.server"):
        assert server.run_serve(args) == 1
    bug = [r for r in caplog.records if r.exc_info is not None]
    assert bug and bug[0].exc_info is not None and bug[0].exc_info[0] is AttributeError, caplog.records
    assert "a bug" in bug[0].getMessage()
    assert PREFIX not in capsys.readouterr().err, "a bug reported as the operator's error"


def test_openraft_py_debug_logs_the_traceback_of_a_start_failure(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``OPENRAFT_PY_DEBUG=1``, as for the other verbs, shows the traceback (in the log) of a
    start failure that is the operator's; the last line is still the error line."""
    monkeypatch.setenv("OPENRAFT_PY_DEBUG", "1")
    r = _serve(_a_file(root))
    assert r.returncode == 1 and "Traceback" in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(PREFIX), r.stderr
