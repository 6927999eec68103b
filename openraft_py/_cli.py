"""What the package's command lines (``openraft-py``; the testing kit's ``lincheck``, ``sim``,
``jepsen``) share at their entry point."""

from __future__ import annotations

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
