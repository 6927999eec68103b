"""The package and the examples bound a wait with ``asyncio.timeout()``, never with
``asyncio.wait_for``: on Python 3.11, ``wait_for`` returns the result of an awaitable that
completed in the loop turn its caller was cancelled in, and the cancellation is lost. The
demo then went on writing after Ctrl-C (a million writes, well past the test's 30 s), and a
TCP call given up by its caller went on with the connection it had waited for
(tests/network/test_tcp_cancel_at_completion.py)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("openraft_py", "examples")


def _wait_for_calls(path: Path) -> list[int]:
    """The lines of ``path`` that call ``asyncio.wait_for``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "wait_for"
        and isinstance(node.value, ast.Name) and node.value.id == "asyncio"
    ]


def test_no_asyncio_wait_for_in_the_package_or_the_examples() -> None:
    files = [p for d in CHECKED for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 50, f"found only {len(files)} files under {CHECKED}: the layout changed"
    found = [f"{p.relative_to(ROOT)}:{line}" for p in files for line in _wait_for_calls(p)]
    assert not found, "asyncio.wait_for drops a cancellation on Python 3.11; use asyncio.timeout(): " + ", ".join(found)
