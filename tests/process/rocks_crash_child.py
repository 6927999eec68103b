"""Child of ``test_rocks_crash``: appends to a RocksLogStore forever and reports on stdout.

Lines: ``A <index>`` once entry ``index`` is durable (its IOFlushed callback ran), ``V <term>``
once ``save_vote`` of that term returned. Entry payloads derive from the index (``payload``).
Resumes from whatever the store holds, so it can be killed and restarted any number of times.

``--zygote PATH``: pay the interpreter's start and the package's imports once, then start
each run by forking. For every line read on stdin the zygote forks one child that writes
``P <pid>`` (its pid, for the parent's SIGKILL) before anything else and then runs ``main``;
once that child ended, the zygote writes ``X <wait status>``. EOF on stdin ends the zygote.
Every line is one ``write`` of a few bytes to the pipe, so lines never interleave.
"""

from __future__ import annotations

import asyncio
import os
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


def run_forked(path: str) -> None:
    """In a child forked by the zygote: report the pid, then append until killed. Never
    returns into the zygote's loop (``os._exit``), even when ``main`` raised."""
    try:
        sys.stdout.write(f"P {os.getpid()}\n")
        sys.stdout.flush()
        asyncio.run(main(path))
    except BaseException as e:  # noqa: BLE001 - reported on stderr, the child's only exit
        sys.stderr.write(f"rocks_crash_child: {e!r}\n")
        sys.stderr.flush()
    finally:
        os._exit(1)  # only a kill or a failure ends ``main``


def zygote(path: str) -> None:
    """Fork one ``run_forked`` child per line on stdin, reap it, report ``X <status>``.
    The zygote itself never opens the store and runs no event loop, so each child starts
    from a process with no threads and no open database."""
    for _ in sys.stdin:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            run_forked(path)
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(f"X {status}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    if sys.argv[1] == "--zygote":
        zygote(sys.argv[2])
    else:
        asyncio.run(main(sys.argv[1]))
