"""The storage guide's log store and state machine (docs/guides/storage.md), as a user copies
them, satisfy the protocols ``Raft.new`` takes under ``mypy --strict``: a user who
type-checks the copy must not get errors at ``Raft.new`` for code the guide shows as correct.

The guide's first two Python blocks (the log store, the state machine) are checked together
with assignments to ``RaftLogStorage``, ``RaftLogReader``, ``RaftStateMachine`` and
``SnapshotBuilder``. Needs mypy (the ``lint`` extra, as ``make lint``)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
GUIDE = ROOT / "docs" / "guides" / "storage.md"

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not GUIDE.exists(), reason="not a source checkout"),
]

PROTOCOL_CHECKS = """

from openraft_py import RaftLogReader, RaftLogStorage, RaftStateMachine, SnapshotBuilder

_log_store: RaftLogStorage = ListLogStore(LogDisk())
_log_reader: RaftLogReader = ListLogStore(LogDisk()).get_log_reader()
_state_machine: RaftStateMachine = CounterStateMachine()
_builder: SnapshotBuilder = CounterStateMachine().get_snapshot_builder()
"""


def _guide_stores() -> str:
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)
    log_store = next(b for b in blocks if "class ListLogStore" in b)
    state_machine = next(b for b in blocks if "class CounterStateMachine" in b)
    return log_store + "\n" + state_machine + PROTOCOL_CHECKS


def test_the_storage_guides_stores_satisfy_the_protocols_under_mypy_strict(tmp_path: Path) -> None:
    pytest.importorskip("mypy", reason="mypy is not installed (the lint extra)")
    program = tmp_path / "guide_stores.py"
    program.write_text(_guide_stores())
    # From the checkout, with its mypy configuration (the kernels' types through typings/),
    # the package followed silently as an installed one is: only the guide's code reports.
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-warn-unused-configs",
         "--no-error-summary", "--hide-error-context", str(program)],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    assert r.returncode == 0, r.stdout + r.stderr
