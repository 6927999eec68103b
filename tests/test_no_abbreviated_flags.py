"""Every command line of the project refuses an abbreviated long flag, as ``openraft-py`` does
(``kv/cli.py``'s ``_Parser``): ``python -m openraft_py.testing.sim --see 5`` ran 5 seeds
as ``--seeds 5`` (argparse's ``allow_abbrev``), so a flag added later that begins alike
would have turned a script's abbreviation into an "ambiguous option" error, and a typo into
another flag.

The commands run in one child process (``argparse_probe.py``; a process per run took 21 s),
and every file of the project that makes an ``argparse.ArgumentParser`` is one of them or
said below why not: a command line added later is not left out unseen."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

REQUIRED = {
    "openraft_py.testing.lincheck": ["--format", "jsonl", "no-such-file"],
    "node": ["--id", "1"],
    "bench/peers/pysyncobj_node.py": ["--self", "127.0.0.1:1", "--partners", "127.0.0.1:2"],
    "openraft_py.kv.server": ["--id", "1", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2",
                              "--data-dir", "unused"],
}
"""What a command needs besides the flags under test (argparse reports a missing required
argument before an unrecognised one)."""

COMMANDS = [
    ["-m", "openraft_py.testing.sim"],
    ["-m", "openraft_py.testing.jepsen"],
    ["-m", "openraft_py.testing.lincheck"],
    ["-m", "openraft_py.testing.proc.node"],
    ["-m", "openraft_py.demo"],
    ["-m", "openraft_py.kv.server"],  # (its own parser; openraft-py serve's is kv/cli.py's)
    ["examples/aiohttp_service/main.py", "node"],
    ["examples/sqlite_storage/main.py"],
    *([str(p.relative_to(ROOT))] for p in sorted((ROOT / "bench").rglob("*.py"))
      if "ArgumentParser(" in p.read_text()),
]

ELSEWHERE = {
    "openraft_py/kv/cli.py": "openraft-py and each of its verbs: tests/kv/test_cli.py",
}
"""Files that make a parser and are checked elsewhere."""

NO_FLAGS = {"examples/lock_service/main.py"}
"""Commands with no long flag to abbreviate (``--help`` alone): checked to have none."""


def _files_making_a_parser() -> set[str]:
    found = set()
    for top in ("openraft_py", "examples", "bench"):
        for p in (ROOT / top).rglob("*.py"):
            if "ArgumentParser(" in p.read_text(errors="replace"):
                found.add(str(p.relative_to(ROOT)))
    return found


PARSER_IN = {
    "openraft_py.testing.sim": "openraft_py/testing/sim/cli.py",
    "openraft_py.testing.lincheck": "openraft_py/testing/lincheck/cli.py",
}
"""Modules run with ``-m`` whose parser is made in another file than the one run."""


def _file_of(cmd: list[str]) -> str:
    """The file that makes ``cmd``'s parser."""
    if cmd[0] != "-m":
        return cmd[0]
    if cmd[1] in PARSER_IN:
        return PARSER_IN[cmd[1]]
    module = ROOT / cmd[1].replace(".", "/")
    return str((module / "__main__.py" if module.is_dir() else module.with_suffix(".py")).relative_to(ROOT))


@pytest.fixture(scope="module")
def probed() -> dict[str, dict[str, Any]]:
    """Each command's results from ``argparse_probe.py``, by test id."""
    asked = [{"cmd": c, "required": REQUIRED.get(c[-1], [])} for c in COMMANDS + [[f] for f in sorted(NO_FLAGS)]]
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "argparse_probe.py")], input=json.dumps(asked), cwd=ROOT,
                       capture_output=True, text=True, timeout=100)
    assert r.returncode == 0, r.stderr[-3000:]
    return {_id(a["cmd"]): res for a, res in zip(asked, json.loads(r.stdout), strict=True)}


def _id(cmd: list[str]) -> str:
    return " ".join(cmd[1:] if cmd[0] == "-m" else cmd)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cmd", COMMANDS, ids=[_id(c) for c in COMMANDS])
def test_an_abbreviated_long_flag_is_refused(cmd: list[str], probed: dict[str, dict[str, Any]]) -> None:
    res = probed[_id(cmd)]
    assert res["help_code"] == 0, res["help_err"]
    abbreviated = res["abbreviation"]
    assert abbreviated is not None, f"no long flag to abbreviate in the help of {_id(cmd)}"
    # (--no-such-flag: a usage error either way, so that nothing runs even when the
    # abbreviation is taken; the message says which flags were not recognised)
    assert res["code"] == 2, res["err"]
    assert re.search(rf"unrecognized arguments: .*{re.escape(abbreviated)}(\s|$)", res["err"]), (abbreviated, res["err"])


@pytest.mark.timeout(120)
def test_every_command_line_is_checked(probed: dict[str, dict[str, Any]]) -> None:
    """A file that makes a parser and is in none of the lists above is a command line this
    test does not check; one in ``NO_FLAGS`` that has a flag now must move to ``COMMANDS``."""
    checked = {_file_of(c) for c in COMMANDS} | set(ELSEWHERE) | NO_FLAGS
    assert _files_making_a_parser() <= checked, sorted(_files_making_a_parser() - checked)
    for f in NO_FLAGS:
        res = probed[f]
        assert res["help_code"] == 0 and res["abbreviation"] is None, (f, res)
