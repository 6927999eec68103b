"""Each example's README: its first ``sh`` block runs as printed from the repository root in
a shell whose ``python`` is not the one the package is installed in (a fresh terminal)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import EXAMPLES

ROOT = EXAMPLES.parent
VENV = ROOT / ".venv"


def _first_run(readme: Path) -> str:
    """The first ``sh`` block of ``readme`` up to its first ``python`` line, without the
    ``make build &&`` the test run has done already."""
    block = re.search(r"```sh\n(.*?)```", readme.read_text(), re.S)
    assert block is not None, readme
    lines: list[str] = []
    for line in block.group(1).splitlines():
        lines.append(line.replace("make build && ", "", 1))
        if line.startswith("python "):
            return "\n".join(lines)
    raise AssertionError(f"{readme}: no python line in its first sh block")


@pytest.mark.skipif(Path(sys.prefix).resolve() != VENV.resolve(), reason="the tests do not run in the checkout's .venv")
@pytest.mark.parametrize("example", ["sqlite_storage", "aiohttp_service", "lock_service"])
def test_the_readme_commands_run_as_printed(example: str) -> None:
    """The commands run with a ``PATH`` that does not lead to the ``.venv``: the READMEs
    printed ``python examples/X/main.py`` after "with the package installed (``make
    build``)", which installs into ``.venv`` only, so the command as printed failed with
    ``ModuleNotFoundError`` unless the reader knew to activate it."""
    script = _first_run(EXAMPLES / example / "README.md")
    bin_dir = str(VENV / "bin")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != Path(bin_dir))
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = path
    out = subprocess.run(["sh", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, (script, out.stdout[-2000:], out.stderr[-2000:])
