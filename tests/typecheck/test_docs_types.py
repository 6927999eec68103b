"""Code the user guide shows as correct type-checks under ``mypy --strict`` as a user copies
it: the getting-started page's program (a strict user must not find that the page's code
fails on a value the API types as optional), and the storage guide's log store and state
machine, which must satisfy the protocols ``Raft.new`` takes (a user who type-checks the copy
must not get errors at ``Raft.new``).

Needs mypy (the ``lint`` extra, as ``make lint``)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
DOCS = ROOT / "docs"

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not DOCS.exists(), reason="not a source checkout"),
]

PROTOCOL_CHECKS = """

from openraft_py import RaftLogReader, RaftLogStorage, RaftStateMachine, SnapshotBuilder

_log_store: RaftLogStorage = ListLogStore(LogDisk())
_log_reader: RaftLogReader = ListLogStore(LogDisk()).get_log_reader()
_state_machine: RaftStateMachine = CounterStateMachine()
_builder: SnapshotBuilder = CounterStateMachine().get_snapshot_builder()
"""


def _python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S)


def _mypy_strict(program: str, tmp_path: Path, cache: Path) -> None:
    """Fail with mypy's report unless ``program`` checks clean under ``mypy --strict``."""
    pytest.importorskip("mypy", reason="mypy is not installed (the lint extra)")
    path = tmp_path / "doc_program.py"
    path.write_text(program)
    # From the checkout, with its mypy configuration (the kernels' types through typings/),
    # the package followed silently as an installed one is: only the page's code reports.
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-warn-unused-configs",
         "--no-error-summary", "--hide-error-context", "--cache-dir", str(cache), str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    assert r.returncode == 0, r.stdout + r.stderr + "\n" + program


def test_the_getting_started_program_type_checks(tmp_path: Path, mypy_cache: Path) -> None:
    # The page's blocks run in order in one `python -m asyncio` session (top-level await):
    # here, the body of one coroutine.
    blocks = _python_blocks("getting-started.md")
    assert len(blocks) >= 4
    body = "\n".join("    " + line if line else "" for block in blocks for line in block.splitlines())
    _mypy_strict("async def getting_started() -> None:\n" + body + "\n", tmp_path, mypy_cache)


def test_the_storage_guides_stores_satisfy_the_protocols(tmp_path: Path, mypy_cache: Path) -> None:
    blocks = _python_blocks("guides/storage.md")
    log_store = next(b for b in blocks if "class ListLogStore" in b)
    state_machine = next(b for b in blocks if "class CounterStateMachine" in b)
    _mypy_strict(log_store + "\n" + state_machine + PROTOCOL_CHECKS, tmp_path, mypy_cache)


def _run_python_blocks(page: str) -> list[str]:
    """The ``python`` blocks of ``page`` that ``tests/test_docs.py`` runs: those without a
    ``not-run`` marker before them."""
    found = re.findall(r"(<!--\s*not-run:.*?-->\s*\n)?```python\n(.*?)```", (DOCS / page).read_text(), re.S)
    return [code for marker, code in found if not marker]


SESSION_PAGES = (
    "concepts.md",
    "guides/kv-service.md",
    "guides/leader-transfer.md",
    "guides/membership.md",
    "guides/metrics.md",
    "guides/performance.md",
    "guides/reads.md",
    "guides/snapshots.md",
    "guides/testing.md",
)
"""Pages whose ``python`` blocks are one session of typed code (top-level ``await``, no
untyped sketch functions): the getting-started page's rule holds for them too."""


def test_the_guides_sessions_type_check(tmp_path: Path, mypy_cache: Path) -> None:
    """Each page's blocks, in order, as the body of one coroutine (as ``tests/test_docs.py``
    runs them), pass ``mypy --strict``: a strict user who copies them must not find the page
    reading a value the API types as optional without a check (a snapshot ``None`` before the
    first one, a write response's ``membership``), nor one name bound to two types."""
    pytest.importorskip("mypy", reason="mypy is not installed (the lint extra)")
    paths = []
    for page in SESSION_PAGES:
        blocks = _run_python_blocks(page)
        assert blocks, page
        body = "\n".join("    " + line if line else "" for block in blocks for line in block.splitlines())
        path = tmp_path / (page.removesuffix(".md").replace("/", "_").replace("-", "_") + ".py")
        path.write_text(f"# {page}\nasync def page() -> None:\n" + body + "\n")
        paths.append(str(path))
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-warn-unused-configs",
         "--no-error-summary", "--hide-error-context", "--cache-dir", str(mypy_cache), *paths],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    assert r.returncode == 0, r.stdout + r.stderr
