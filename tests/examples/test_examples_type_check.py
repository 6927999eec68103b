"""Each example type-checks under ``mypy --strict`` as ``examples/README.md`` tells a reader to
check it: one directory at a time, from the repository root (``mypy --strict
examples/sqlite_storage``). ``make lint`` checks the package and one user program only, so
without this an example that stopped type-checking against the public API (a bare
``Cluster``, a change to a read-only ``Membership.nodes``, an assignment to ``raft.config``)
would fail only for the reader who ran the printed command. Needs mypy (the ``lint`` extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import EXAMPLES

ROOT = EXAMPLES.parent

pytestmark = pytest.mark.timeout(300)

EXAMPLE_DIRS = ("sqlite_storage", "aiohttp_service", "lock_service")
"""Every example: the directories of ``examples/`` with a ``main.py``."""


def test_every_example_directory_is_checked() -> None:
    """The list below names every example (a directory with a ``main.py``)."""
    assert {p.parent.name for p in EXAMPLES.glob("*/main.py")} == set(EXAMPLE_DIRS)


# ``mypy_cache`` (tests/conftest.py): one cache for every type check of this worker, so the
# package's types are checked once, not once an example (each cold run took 15-22 s).

@pytest.mark.parametrize("example", EXAMPLE_DIRS)
def test_the_example_type_checks_strict(example: str, mypy_cache: Path) -> None:
    pytest.importorskip("mypy", reason="mypy is not installed (the lint extra: pip install -e '.[lint]')")
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(mypy_cache), f"examples/{example}"],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    assert r.returncode == 0, r.stdout + r.stderr
