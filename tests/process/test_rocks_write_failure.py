"""A RocksLogStore whose writes fail for real (a file size limit makes RocksDB's WAL append
fail) reports ``StorageError`` to the waiting callbacks, ``close()`` raises ``StorageError``
(never a raw rocksdict exception) and still releases the database lock: the same path opens
again in the same process, with every acknowledged entry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(60)


def test_close_after_failed_write_raises_storage_error_and_releases_lock(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.process.rocks_fsize_child", str(tmp_path / "log")],
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=45,
    )
    out = proc.stdout.decode().splitlines()
    assert proc.returncode == 0, f"child failed: {proc.stderr.decode()[-3000:]}"
    acks = [int(line.split()[1]) for line in out if line.startswith("A ")]
    rest = [line for line in out if not line.startswith("A ")]
    assert acks, f"nothing was acknowledged before the failure: {rest}"
    assert rest[0] == "FAILED StorageError", rest
    assert rest[1] == "CLOSE StorageError", rest
    assert rest[2].startswith("REOPEN "), rest
    assert int(rest[2].split()[1]) >= acks[-1], f"acknowledged {acks[-1]}, reopened with {rest[2]}"
    assert rest[3] == "MARK ok", rest
