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


def _uses_wait_for(node: ast.AST) -> bool:
    """Whether ``node`` names asyncio's ``wait_for``: ``asyncio.wait_for``,
    ``asyncio.tasks.wait_for``, or ``from asyncio[.tasks] import wait_for``."""
    if isinstance(node, ast.Attribute) and node.attr == "wait_for":
        v = node.value
        return (isinstance(v, ast.Name) and v.id == "asyncio") or (
            isinstance(v, ast.Attribute) and v.attr == "tasks" and isinstance(v.value, ast.Name)
            and v.value.id == "asyncio")
    if isinstance(node, ast.ImportFrom) and node.module in ("asyncio", "asyncio.tasks"):
        return any(a.name == "wait_for" for a in node.names)
    return False


def _wait_for_calls(path: Path) -> list[int]:
    """The lines of ``path`` that use asyncio's ``wait_for``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [node.lineno for node in ast.walk(tree) if _uses_wait_for(node)]


def test_every_spelling_of_wait_for_is_found(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import asyncio\nfrom asyncio import wait_for\nfrom asyncio.tasks import wait_for as w\n"
                      "asyncio.wait_for(x, 1)\nasyncio.tasks.wait_for(x, 1)\nother.wait_for(x)\n"
                      "async with asyncio.timeout(1):\n    pass\n")
    assert _wait_for_calls(sample) == [2, 3, 4, 5]


def test_no_asyncio_wait_for_in_the_package_or_the_examples() -> None:
    files = [p for d in CHECKED for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 50, f"found only {len(files)} files under {CHECKED}: the layout changed"
    found = [f"{p.relative_to(ROOT)}:{line}" for p in files for line in _wait_for_calls(p)]
    assert not found, "asyncio.wait_for drops a cancellation on Python 3.11; use asyncio.timeout(): " + ", ".join(found)
