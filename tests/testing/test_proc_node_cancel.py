"""``NodeProcess.wait_exit`` (and so ``stop``) cancelled by its caller (a timeout around a
cluster's teardown, Ctrl-C) while it waits for the output reader to end, once the process
exited: the caller ends cancelled. The wait suppressed ``CancelledError`` (meant for a
reader that ``_close_pipes`` cancelled), so the caller went on as if it had not been
cancelled, and its task stayed marked as being cancelled."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from openraft_py.testing.proc.cluster import NodeProcess

pytestmark = pytest.mark.timeout(30)


async def test_a_cancelled_wait_exit_is_cancelled(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "pass",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    node = NodeProcess(1, "127.0.0.1:1", tmp_path, proc, tmp_path / "node.log")
    real_reader = node._reader
    async with asyncio.timeout(10.0):
        await asyncio.wait({real_reader})
        await proc.wait()
    # The reader in the moment it has not ended yet after the exit (its last lines, the end
    # of the output, still to be read): a stand-in that ends when told.
    reading_on = asyncio.Event()
    node._reader = stand_in = asyncio.ensure_future(reading_on.wait())
    try:
        waiting = asyncio.ensure_future(node.wait_exit(10.0))
        for _ in range(3):  # (loop turns: ``wait_exit`` has seen the exit and awaits the reader)
            await asyncio.sleep(0)
        assert not waiting.done()
        waiting.cancel()
        done, _ = await asyncio.wait({waiting}, timeout=1.0)
        assert waiting in done, "the cancelled wait_exit went on waiting"
        assert waiting.cancelled(), f"the cancelled wait_exit returned {waiting.result()!r}"
        assert not stand_in.done(), "the caller's cancellation cancelled the output reader"
    finally:
        reading_on.set()
        await asyncio.wait({stand_in}, timeout=5.0)
    async with asyncio.timeout(5.0):
        assert await node.wait_exit(5.0) == 0  # not cancelled: the exit code, as before
    node._close_pipes()
