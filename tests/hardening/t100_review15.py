"""What the review of stop 72's merged changes found, fixed (t100).

1. ``AioFsync`` keeps the completions an interrupted call took (``_ready``) and returns them
   from the next ``reap``, ``wait`` or ``close``; but ``GroupWriter.close_fast`` (the
   store's ``aclose``, and its ``close`` from another thread while the loop runs) waited
   for the event loop's ``_reap``, which runs only when the eventfd is readable: once a
   ``reap`` on the loop was interrupted (Ctrl-C's ``KeyboardInterrupt`` between its
   ``io_getevents`` and its return, the eventfd already read), completions were left kept
   with nothing in the kernel to make the eventfd readable again, and the close waited for
   good, their appends never answered. It returns them itself now before it waits.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from openraft_py.storage.rocks import aio

from .t97_leftovers import _aio_available

pytestmark = pytest.mark.timeout(60)


@pytest.mark.skipif(not _aio_available(), reason="needs Linux native AIO")
async def test_a_store_aclose_returns_what_an_interrupted_reap_kept(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from storage.test_rocks_fast_path import append

    from openraft_py.storage.rocks import RocksLogStore

    store = RocksLogStore(tmp_path / "log")
    writer = store._writer
    try:
        for i in range(3):  # (the first writes take the thread's path)
            assert await asyncio.wait_for(await append(store, i), 10) is None
        real_reap = aio.AioFsync.reap
        drained: list[int] = []

        def drain_only(self: aio.AioFsync) -> list[tuple[int, OSError | None]]:
            # The loop reaps nothing meanwhile; the eventfd is read, so that it is not left
            # readable (the loop would call ``_reap`` again, as after no interrupt).
            try:
                drained.append(os.eventfd_read(self.efd))
            except BlockingIOError:
                pass
            return []

        monkeypatch.setattr(aio.AioFsync, "reap", drain_only)
        first = await append(store, 3)
        for _ in range(1000):
            if drained:  # (the kernel signals a completion on the eventfd)
                break
            await asyncio.sleep(0.01)
        fsync = writer._aio
        assert fsync is not None and drained and fsync.inflight == 1, "its fast-path fsync completed in the kernel"
        for _ in range(5):
            await asyncio.sleep(0)  # (no readiness of the eventfd left for the loop)

        # The loop's reap, interrupted (Ctrl-C) as it is about to return what it took: the
        # eventfd is read and the completion kept. (Run here, without yielding to the loop.)
        monkeypatch.setattr(aio.AioFsync, "reap", real_reap)
        real_take = aio.AioFsync._take

        def interrupted_take(self: aio.AioFsync) -> list[tuple[int, OSError | None]]:
            if self._ready:
                monkeypatch.setattr(aio.AioFsync, "_take", real_take)
                raise KeyboardInterrupt
            return real_take(self)

        monkeypatch.setattr(aio.AioFsync, "_take", interrupted_take)
        deadline = time.monotonic() + 10
        while True:
            try:
                writer._reap()
            except KeyboardInterrupt:
                break
            assert time.monotonic() < deadline, "the kernel never completed the fsync"
            time.sleep(0.005)
        assert fsync._inflight == 0 and len(fsync._ready) == 1, "kept, nothing left in the kernel"
        assert not first.done()

        closing = asyncio.ensure_future(store.aclose())
        done, _ = await asyncio.wait({closing}, timeout=10)
        if not done:
            writer._reap()  # (what the fix does: lets the close end, for the clean-up)
            await asyncio.wait_for(closing, 10)
        assert done, "the store's aclose waited for good for a completion kept by an interrupted reap"
        await closing
        assert first.done() and first.result() is None, "the write was answered: durable"
    finally:
        store.close()
