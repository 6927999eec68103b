"""What the README test and the docs test share to run fenced code blocks: the languages that
run, console transcripts as ``(command, expected output)`` steps, and a bash that sees the
venv's interpreter and commands but none of the test run's ``OPENRAFT_PY_*`` switches."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PYTHON = frozenset({"python", "py", "python3"})
SCRIPT = frozenset({"sh", "shell", "bash"})
CONSOLE = frozenset({"console"})
RUNNABLE = PYTHON | SCRIPT | CONSOLE
COMMAND_TIMEOUT = 60.0


def console_steps(code: str) -> list[tuple[str, list[str]]]:
    """``(command, expected output lines)`` pairs of a console transcript: ``$ `` starts a
    command (a trailing backslash continues it on the next line, as bash joins them); the
    lines up to the next ``$ `` are its output. ``ValueError`` for output before any command."""
    steps: list[tuple[str, list[str]]] = []
    lines = code.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("$ "):
            raise ValueError(f"console block: output before any command: {line!r}")
        command = line[2:]
        while command.endswith("\\") and i + 1 < len(lines):
            i += 1
            command = command + "\n" + lines[i]
        expected: list[str] = []
        while i + 1 < len(lines) and not lines[i + 1].startswith("$ "):
            i += 1
            expected.append(lines[i].rstrip())
        steps.append((command, expected))
        i += 1
    return steps


def shell_env() -> dict[str, str]:
    """The environment of a block's shell: this interpreter's bin directory first on PATH,
    no ``PYTHONPATH`` and no ``OPENRAFT_PY_*`` variable (a block runs as a user would)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENRAFT_PY_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("PYTHONPATH", None)
    return env


def bash(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with ``bash -c`` in ``cwd``, output captured, bounded by
    ``COMMAND_TIMEOUT``."""
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=shell_env(), timeout=COMMAND_TIMEOUT, capture_output=True, text=True
    )
