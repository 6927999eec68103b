"""Child of ``test_rocks_crash``: appends to a RocksLogStore forever and reports on stdout.

Lines: ``A <index>`` once entry ``index`` is durable (its IOFlushed callback ran), ``V <term>``
once ``save_vote`` of that term returned. Entry payloads derive from the index (``payload``).
Resumes from whatever the store holds, so it can be killed and restarted any number of times.
"""

from __future__ import annotations

import asyncio
import sys

from openraft_py.storage import IOFlushed
from openraft_py.storage.rocks import RocksLogStore
from openraft_py.types import Entry, LogId, Normal, Vote


def payload(index: int) -> bytes:
    return b"entry-%d-" % index + bytes([index % 251]) * (index % 97)


async def main(path: str) -> None:
    store = RocksLogStore(path)
    out = sys.stdout
    state = await store.get_log_state()
    nxt = 0 if state.last_log_id is None else state.last_log_id.index + 1
    vote = await store.read_vote()
    term = 1 if vote is None else vote.term + 1
    loop = asyncio.get_running_loop()
    inflight: list[asyncio.Future[None]] = []
    k = 0
    while True:
        size = 1 + (k * 7) % 40
        batch = [Entry(LogId(1, i), Normal(payload(i))) for i in range(nxt, nxt + size)]
        fut: asyncio.Future[None] = loop.create_future()
        last = nxt + size - 1

        def done(err: BaseException | None, last: int = last, fut: asyncio.Future[None] = fut) -> None:
            assert err is None, err
            out.write(f"A {last}\n")
            out.flush()
            fut.set_result(None)

        await store.append(batch, IOFlushed(done, loop))
        nxt += size
        inflight.append(fut)
        k += 1
        if k % 5 == 0:
            await store.save_vote(Vote.new(term, 1))
            out.write(f"V {term}\n")
            out.flush()
            term += 1
        if len(inflight) > 8:
            await inflight.pop(0)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
