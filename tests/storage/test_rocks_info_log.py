"""RocksDB's info log (``LOG`` in each database's directory) is bounded: a new one starts at
``INFO_LOG_MAX_BYTES`` and at most ``INFO_LOG_KEEP`` are kept. RocksDB's defaults never start
a new one while a database is open (its statistics every ten minutes made it grow by about
1 MiB a day per database, for good) and keep the ``LOG.old.*`` every open leaves, up to a
thousand: a node restarted 20 times held 20 of them in each of its two databases."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.storage.rocks import RocksLogStore, db
from openraft_py.storage.rocks.db import INFO_LOG_KEEP, INFO_LOG_MAX_BYTES
from openraft_py.storage.rocks.wal import read_db_options

pytestmark = pytest.mark.timeout(60)


def _info_logs(db_dir: Path) -> list[str]:
    return sorted(n for n in os.listdir(db_dir) if n == "LOG" or n.startswith("LOG.old."))


async def test_reopened_stores_keep_a_bounded_info_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert INFO_LOG_KEEP >= 2 and INFO_LOG_MAX_BYTES >= 1024 * 1024
    keep = 3  # (fewer opens than with INFO_LOG_KEEP itself)
    monkeypatch.setattr(db, "INFO_LOG_KEEP", keep)
    for _ in range(keep + 3):
        store = await RocksLogStore.open(tmp_path / "log")
        store.close()
        sm = await RocksStateMachine.open(tmp_path / "sm")
        sm.close()
    for db_dir in (tmp_path / "log", tmp_path / "sm" / "db"):
        logs = _info_logs(db_dir)
        assert 1 < len(logs) <= keep, logs
        opts = read_db_options(str(db_dir))
        assert opts["max_log_file_size"] == str(INFO_LOG_MAX_BYTES)
        assert opts["keep_log_file_num"] == str(keep)
