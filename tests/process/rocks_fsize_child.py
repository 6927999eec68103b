"""Child of ``test_rocks_write_failure``: makes a RocksLogStore's writes fail for real (a file
size limit, ``RLIMIT_FSIZE``: RocksDB's WAL append fails with ``EFBIG``), then closes the
store and reopens the same path in this same process.

Lines on stdout: ``A <index>`` per acknowledged append, ``FAILED <type>`` for the error the
first failed append reported, ``CLOSE <type or ok>`` for what ``close()`` did, ``REOPEN <last
index>`` once the same path opened again (after the limit was lifted), ``MARK <ok>`` whether
the reopened store recovered every acknowledged write.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import sys

from openraft_py.storage import IOFlushed
from openraft_py.storage.rocks import RocksLogStore
from openraft_py.types import Entry, LogId, Normal

LIMIT_SLACK = 256 * 1024
"""How far past the current files a write may go before the limit makes it fail."""


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(path: str) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write returns EFBIG instead
    store = RocksLogStore(path)
    loop = asyncio.get_running_loop()
    biggest = max(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (biggest + LIMIT_SLACK, hard))
    nxt = 0
    err: BaseException | None = None
    for _ in range(10_000):  # bounded: the limit is reached after a few hundred batches
        fut: asyncio.Future[BaseException | None] = loop.create_future()
        batch = [Entry(LogId(1, i), Normal(b"x" * 200)) for i in range(nxt, nxt + 50)]
        await store.append(batch, IOFlushed(lambda e, f=fut: f.set_result(e), loop))
        err = await asyncio.wait_for(fut, 10)
        if err is not None:
            break
        nxt += 50
        say(f"A {nxt - 1}")
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    say(f"FAILED {type(err).__name__}")
    acked = nxt - 1
    try:
        await store.aclose()
        say("CLOSE ok")
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        say(f"CLOSE {type(e).__name__}")
    reopened = RocksLogStore(path)
    state = await reopened.get_log_state()
    last = -1 if state.last_log_id is None else state.last_log_id.index
    say(f"REOPEN {last}")
    got = await reopened.try_get_log_entries(0, acked + 1)
    say(f"MARK {'ok' if [e.log_id.index for e in got] == list(range(acked + 1)) else 'lost'}")
    await reopened.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
