"""What the package's command lines (``openraft-py``; the testing kit's ``lincheck``, ``sim``,
``jepsen``) share at their entry point."""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Callable
from typing import TextIO


def run_cli(main: Callable[[], int]) -> int:
    """``main()``'s exit status, or 141 (128 + SIGPIPE, what a shell reports for a writer the
    pipe's reader left) without a traceback when standard output or standard error is a pipe
    whose reader went away: ``openraft-py cluster status | head -1``, ``--trace | head``,
    ``lincheck ... | head -1``, ``openraft-py kv get K 2>&1 | true``; such a stream is then
    the null device. (Python raises ``BrokenPipeError`` there instead of dying of SIGPIPE as
    other tools do; restoring SIGPIPE's default action instead would also kill the process
    for a broken pipe to a worker process.)"""
    try:
        status = main()
        sys.stdout.flush()  # output still buffered meets the closed pipe here, not at exit
        return status
    except BrokenPipeError:
        # The interpreter flushes both streams once more on its way out (a failure there
        # prints 'Exception ignored' and exits 120): what the broken one still holds goes
        # nowhere; the other one's output is still written where it goes.
        for stream in (sys.stdout, sys.stderr):
            _null_if_broken(stream)
        return 128 + signal.SIGPIPE


def _null_if_broken(stream: TextIO | None) -> None:
    """Point ``stream``'s file descriptor at the null device if it cannot be flushed."""
    if stream is None:
        return
    try:
        stream.flush()
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


KV_EXTRA_MODULES = ("aiohttp", "prometheus_client")
"""The top-level modules of the ``kv`` extra's packages (aiohttp and prometheus-client) that
the key-value service imports. ``openraft-py`` and the Jepsen test need them; the library,
``lincheck`` and ``sim`` do not."""

_KV_EXTRA_DEPENDENCIES = ("yarl", "multidict")
"""Modules aiohttp brings with it: one missing is the extra not (fully) installed too."""


def missing_kv_extra(e: ModuleNotFoundError) -> str | None:
    """The module of the ``kv`` extra (or of one of its dependencies) whose absence ``e``
    reports, or ``None`` for another missing module (a bug: not hidden)."""
    name = (e.name or "").partition(".")[0]
    return name if name in KV_EXTRA_MODULES + _KV_EXTRA_DEPENDENCIES else None


def kv_extra_not_installed() -> str | None:
    """The first module of the ``kv`` extra that cannot be imported (the extra is not
    installed), or ``None`` when all of them can. It imports them; another module missing
    underneath one of them raises its ``ModuleNotFoundError``."""
    for name in KV_EXTRA_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            missing = missing_kv_extra(e)
            if missing is None:
                raise
            return missing
    return None


def needs_kv_extra(what: str, missing: str) -> str:
    """The one line saying that ``what`` (``"the command line"``) needs the ``kv`` extra,
    whose module ``missing`` is not installed, and how to install it."""
    return (f"{what} needs the 'kv' extra, which is not installed (no module named {missing!r}): "
            f"pip install 'openraft-py[kv]'")


def one_line(text: str) -> str:
    """``text`` on one line, for a command line's ``<prog>: error: ...`` line: each line break,
    with the blanks around it, becomes ``"; "``. A message quoted from a library may hold
    several lines (RocksDB's "Corruption: Sst file size mismatch: .../000009.sst. Expected
    1116, actual size 0" then "  The file .../MANIFEST-000005 may be corrupted."): the error
    line then ended in the middle, and the last line on stderr, the one an operator or a
    supervisor reads, was the message's last line alone, naming another file."""
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())
