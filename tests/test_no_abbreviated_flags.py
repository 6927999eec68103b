"""Every command line of the project refuses an abbreviated long flag, as ``openraft-py`` does
(``kv/cli.py``'s ``_Parser``): ``python -m openraft_py.testing.sim --see 5`` ran 5 seeds
as ``--seeds 5`` (argparse's ``allow_abbrev``), so a flag added later that begins alike
would have turned a script's abbreviation into an "ambiguous option" error, and a typo into
another flag."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

REQUIRED = {
    "openraft_py.testing.lincheck": ["--format", "jsonl", "no-such-file"],
    "node": ["--id", "1"],
    "bench/peers/pysyncobj_node.py": ["--self", "127.0.0.1:1", "--partners", "127.0.0.1:2"],
}
"""What a command needs besides the flags under test (argparse reports a missing required
argument before an unrecognised one)."""

COMMANDS = [
    ["-m", "openraft_py.testing.sim"],
    ["-m", "openraft_py.testing.jepsen"],
    ["-m", "openraft_py.testing.lincheck"],
    ["-m", "openraft_py.testing.proc.node"],
    ["-m", "openraft_py.demo"],
    ["examples/aiohttp_service/main.py", "node"],
    ["examples/sqlite_storage/main.py"],
    *([str(p.relative_to(ROOT))] for p in sorted((ROOT / "bench").rglob("*.py"))
      if "ArgumentParser(" in p.read_text()),
]


def _run(cmd: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=50)


def _an_abbreviation(help_text: str) -> str:
    """A prefix of one of the long flags ``help_text`` lists that no other flag begins with:
    with abbreviations allowed, argparse takes it for that flag."""
    flags = sorted(set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]", help_text)) - {"--help"})
    for flag in sorted(flags, key=len, reverse=True):
        prefix = flag[:-1]
        if len(prefix) > 3 and not any(f != flag and f.startswith(prefix) for f in flags + ["--help"]):
            return prefix
    raise AssertionError(f"no long flag to abbreviate in:\n{help_text}")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cmd", COMMANDS, ids=[" ".join(c[1:] if c[0] == "-m" else c) for c in COMMANDS])
def test_an_abbreviated_long_flag_is_refused(cmd: list[str]) -> None:
    shown = _run(cmd, "--help")
    assert shown.returncode == 0, shown.stderr[-2000:]
    abbreviated = _an_abbreviation(shown.stdout)
    # (--no-such-flag: a usage error either way, so that nothing runs even when the
    # abbreviation is taken; the message says which flags were not recognised)
    r = _run(cmd, *REQUIRED.get(cmd[-1], []), abbreviated, "--no-such-flag")
    assert r.returncode == 2, r.stderr[-2000:]
    assert re.search(rf"unrecognized arguments: .*{re.escape(abbreviated)}(\s|$)", r.stderr), (abbreviated, r.stderr)
