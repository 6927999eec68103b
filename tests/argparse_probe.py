"""The child process of ``test_no_abbreviated_flags``: runs each command line it is given (a
JSON list on stdin, each ``["-m", module, ...]`` or ``[script, ...]`` relative to the project
root) in this one process with ``runpy``, twice: with ``--help``, then with one of the long
flags its help lists abbreviated (``abbreviation``) and ``--no-such-flag`` after it, so that
nothing runs either way (both end in argparse's ``SystemExit``). Prints a JSON object per
command, in order. One process for all: each command in a process of its own (two per
command) took 21 s for 22 commands, Python's start and the imports each time."""

from __future__ import annotations

import contextlib
import io
import json
import re
import runpy
import sys
from pathlib import Path
from typing import Any


def abbreviation(help_text: str) -> str | None:
    """A prefix of one of the long flags ``help_text`` lists that no other flag begins with
    (with abbreviations allowed, argparse takes it for that flag); ``None`` if there is none."""
    flags = sorted(set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]", help_text)) - {"--help"})
    for flag in sorted(flags, key=len, reverse=True):
        prefix = flag[:-1]
        if len(prefix) > 3 and not any(f != flag and f.startswith(prefix) for f in flags + ["--help"]):
            return prefix
    return None


def run(cmd: list[str], args: list[str]) -> tuple[int, str, str]:
    """Run ``cmd`` with ``args`` as ``python`` would, in this process: its exit code (a
    command that returns without ``SystemExit`` is 0), standard output and standard error."""
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if cmd[0] == "-m":
                sys.argv = [cmd[1], *cmd[2:], *args]
                runpy.run_module(cmd[1], run_name="__main__", alter_sys=True)
            else:
                sys.argv = [cmd[0], *cmd[1:], *args]
                sys.path.insert(0, str(Path(cmd[0]).resolve().parent))  # (as python SCRIPT has it)
                runpy.run_path(cmd[0], run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:  # noqa: BLE001 - reported to the test, which fails on it
        code, err = -1, io.StringIO(err.getvalue() + f"{type(e).__name__}: {e}")
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return code, out.getvalue(), err.getvalue()


def main() -> None:
    commands: list[dict[str, Any]] = json.load(sys.stdin)
    results = []
    for c in commands:
        code, out, err = run(c["cmd"], ["--help"])
        res: dict[str, Any] = {"help_code": code, "help_err": err[-2000:], "abbreviation": abbreviation(out),
                               "flags_in_help": out.count("--")}
        if code == 0 and res["abbreviation"] is not None:
            code, _out, err = run(c["cmd"], [*c["required"], res["abbreviation"], "--no-such-flag"])
            res.update(code=code, err=err[-2000:])
        results.append(res)
    sys.stdout.write(json.dumps(results))


if __name__ == "__main__":
    main()
