"""What the testing kit's command lines (``lincheck``, ``sim``, ``jepsen``) share at their
entry point."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable


def run_cli(main: Callable[[], int]) -> int:
    """``main()``'s exit status, or 141 (128 + SIGPIPE, what a shell reports for a writer the
    pipe's reader left) without a traceback when standard output is a pipe whose reader went
    away: ``--trace | head``, ``lincheck ... | head -1``. (Python raises ``BrokenPipeError``
    there instead of dying of SIGPIPE as other tools do; restoring SIGPIPE's default action
    instead would also kill the process for a broken pipe to a worker process.)"""
    try:
        status = main()
        sys.stdout.flush()  # output still buffered meets the closed pipe here, not at exit
        return status
    except BrokenPipeError:
        # The interpreter flushes stdout once more on its way out: let that write go nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE
