"""What one message between two event loops costs on this machine, with no Raft in it.

Two processes, each running uvloop, bounce a 64-byte message over a loopback TCP connection
(``TCP_NODELAY``). On every message each side first runs ``W`` calls of a one-line Python
function (``--work``, a stand-in for what a Raft node does per message) and reads one byte
from each of ``P`` distinct memory pages in a fixed shuffled order (``--pages``, 0 by
default: a stand-in for the memory a node touches per message), then answers. ``--cpus``
places the two processes: ``any`` (the scheduler's choice), ``one`` (both on CPU 0: every
message switches the CPU from one process to the other) or ``two`` (one each). For each
``W`` it reports:

- ``rtt``: wall time per round trip (median over the run's round trips);
- ``user`` and ``system``: CPU time of the client process per round trip, in user and in
  kernel mode (its whole run over the trips);
- ``work here``: CPU time of the ``W`` calls and ``P`` page reads inside the message handler
  (median; the thread's CPU clock, so time the process spends preempted is not in it),
  against ``work warm``: the same work timed back to back in a loop that never sleeps.

Where ``work here`` is several times ``work warm``, code that runs right after the process
wakes up runs that much slower (caches, TLBs and branch predictors that other work had
meanwhile), and the per-message costs of a multi-process benchmark are higher than
in-process figures suggest. ``docs/design/performance.md`` (twenty-second and twenty-sixth
rounds) has what it measured here.

    python bench/loop_rtt.py [--round-trips 5000] [--work 0,100,400,1600] [--pages 0]
                             [--cpus any|one|two] [--repeat 3] [--json F]

The raw-socket loopback round trip that ``bench/tcp.py`` reports is the floor of this
(blocking sockets, no event loop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import socket
import statistics
import sys
import time
from typing import Any, cast

import uvloop

MESSAGE = b"p" * 64
PAGE = 4096
MAX_PAGES = 262_144
"""The most pages ``--pages`` takes: 1 GiB of buffer in each process."""


def one_call(x: int) -> int:
    """The unit of work: one Python function call."""
    return x + 1


class Work:
    """``calls`` calls of ``one_call``, then one byte read from each of ``pages`` pages of a
    buffer of their own, in a shuffled order fixed at construction (every page written once
    first, so none is a shared zero page)."""

    def __init__(self, calls: int, pages: int = 0) -> None:
        self.calls = calls
        self.buf = bytearray(pages * PAGE)
        for off in range(0, len(self.buf), PAGE):
            self.buf[off] = 1
        self.offsets = [i * PAGE for i in range(pages)]
        random.Random(pages).shuffle(self.offsets)

    def __call__(self) -> int:
        s = 0
        for _ in range(self.calls):
            s = one_call(s)
        buf = self.buf
        for off in self.offsets:
            s += buf[off]
        return s


def pin(cpus: str, side: int) -> None:
    """Place this process for ``--cpus`` (``side`` 0: the client, 1: the server)."""
    if cpus == "one":
        os.sched_setaffinity(0, {0})
    elif cpus == "two":
        os.sched_setaffinity(0, {side})


class _Bouncer(asyncio.Protocol):
    """Answers every complete message after its ``work``; the client side counts
    ``round_trips`` answers, timing each, then resolves ``done``."""

    def __init__(self, work: Work, round_trips: int = 0, done: asyncio.Future[None] | None = None) -> None:
        self.work = work
        self.round_trips = round_trips
        self.done = done
        self.buf = 0
        self.transport: asyncio.Transport | None = None
        self.rtts: list[float] = []
        self.work_times: list[float] = []
        self.sent_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter()
        self.transport.write(MESSAGE)

    def data_received(self, data: bytes) -> None:
        self.buf += len(data)
        while self.buf >= len(MESSAGE):
            self.buf -= len(MESSAGE)
            self._message()

    def _message(self) -> None:
        now = time.perf_counter()
        if self.done is not None:
            self.rtts.append(now - self.sent_at)
            if len(self.rtts) >= self.round_trips:
                if not self.done.done():
                    self.done.set_result(None)
                return
        t = time.thread_time()
        self.work()
        self.work_times.append(time.thread_time() - t)
        self.send()


async def _serve(work: Work, port_out: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Bouncer(work), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    os.write(port_out, f"{port}\n".encode())
    os.close(port_out)
    await asyncio.Event().wait()


async def _client(work: Work, port: int, round_trips: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    transport, proto = await loop.create_connection(lambda: _Bouncer(work, round_trips, done), "127.0.0.1", port)
    try:
        t0 = resource.getrusage(resource.RUSAGE_SELF)
        proto.send()
        await asyncio.wait_for(done, 60.0)
        t1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        transport.close()
    return {
        "rtt_us": statistics.median(proto.rtts) * 1e6,
        "user_us": (t1.ru_utime - t0.ru_utime) / round_trips * 1e6,
        "system_us": (t1.ru_stime - t0.ru_stime) / round_trips * 1e6,
        "work_here_us": statistics.median(proto.work_times) * 1e6 if proto.work_times else 0.0,
    }


def warm_work_us(work: Work, repeat: int = 2000) -> float:
    """Median CPU time of ``work()`` run back to back (the process never sleeps)."""
    times = []
    for _ in range(repeat):
        t = time.thread_time()
        work()
        times.append(time.thread_time() - t)
    return statistics.median(times) * 1e6


def measure(calls: int, round_trips: int, pages: int = 0, cpus: str = "any") -> dict[str, float]:
    """One run: a server process (forked) and this process as the client, placed by ``cpus``
    (this process's own placement is restored afterwards). Each process builds its own
    ``Work`` after the fork, so the two never read the same physical pages (a buffer built
    before the fork would be shared until written, and the other process's reads would keep
    it in the shared caches)."""
    mine = os.sched_getaffinity(0)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the server: never returns
        try:
            os.close(r)
            pin(cpus, 1)
            uvloop.run(_serve(Work(calls, pages), w))
        finally:
            os._exit(0)
    os.close(w)
    try:
        pin(cpus, 0)
        work = Work(calls, pages)
        with os.fdopen(r) as f:
            port = int(f.readline())
        out = uvloop.run(_client(work, port, round_trips))
        out["work_warm_us"] = warm_work_us(work)
    finally:
        os.sched_setaffinity(0, mine)
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--round-trips", type=int, default=5000)
    p.add_argument("--work", default="0,100,400,1600", help="comma-separated calls of work per message")
    p.add_argument("--pages", type=int, default=0, help="distinct memory pages each message's work reads")
    p.add_argument("--cpus", choices=("any", "one", "two"), default="any",
                   help="both processes where the scheduler puts them, both on CPU 0, or one on each of CPUs 0 and 1")
    p.add_argument("--repeat", type=int, default=3, help="runs per work size; medians are reported")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    if args.round_trips < 1 or args.repeat < 1:
        p.error("--round-trips and --repeat must be at least 1")
    try:
        sizes = [int(x) for x in args.work.split(",") if x.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 0:
        p.error(f"--work needs comma-separated whole numbers of calls >= 0, got {args.work!r}")
    if not 0 <= args.pages <= MAX_PAGES:
        p.error(f"--pages must be from 0 to {MAX_PAGES} ({MAX_PAGES * PAGE >> 20} MiB), got {args.pages}")
    usable = os.sched_getaffinity(0)
    needed = {"any": set(), "one": {0}, "two": {0, 1}}[args.cpus]
    if not needed <= usable:
        p.error(f"--cpus {args.cpus} needs CPU 0{' and CPU 1' if args.cpus == 'two' else ''}; this process may use {sorted(usable)}")
    print(f"{args.round_trips} round trips per run, {args.repeat} run(s) per size, {os.cpu_count()} CPUs, "
          f"{args.pages} pages read per message, CPUs: {args.cpus}")
    print("| calls per message | rtt us | client CPU us per round trip (user + system) "
          "| work here us | work warm us | here / warm |")
    print("|--:|--:|--:|--:|--:|--:|")
    points = []
    for calls in sizes:
        runs = [measure(calls, args.round_trips, args.pages, args.cpus) for _ in range(args.repeat)]
        point = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        point["calls"] = calls
        points.append(point)
        ratio = point["work_here_us"] / point["work_warm_us"] if point["work_warm_us"] > 0 else float("nan")
        print(f"| {calls} | {point['rtt_us']:.1f} | {point['user_us']:.1f} + {point['system_us']:.1f} "
              f"| {point['work_here_us']:.2f} "
              f"| {point['work_warm_us']:.2f} | {ratio:.2f} |", flush=True)
    result = {"round_trips": args.round_trips, "repeat": args.repeat, "pages": args.pages, "cpus": args.cpus,
              "points": points}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
