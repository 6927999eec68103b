"""A loopback TCP proxy that models a slow link: the bytes a client sends through it reach
the target at no more than ``rate`` bytes per second, per connection (the target's answers
come back unthrottled). Each connection it accepts opens one to the target; closing the
proxy closes all of them. Used by the tests of replication over slow links."""

from __future__ import annotations

import asyncio
import contextlib

CHUNK = 16 * 1024
"""Bytes read and forwarded at a time: the pacing's granularity (at 4 MiB/s, 4 ms)."""


class ThrottledProxy:
    """``127.0.0.1:<port>`` forwarding to ``target_port`` at ``rate`` bytes per second each
    way a client sends (``start``, then ``close``). ``forwarded`` counts the bytes carried
    to the target so far."""

    def __init__(self, target_port: int, rate: float) -> None:
        self.target_port = target_port
        self.rate = rate
        self.port = 0
        self.forwarded = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def addr(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    async def start(self) -> ThrottledProxy:
        """Listen on an ephemeral loopback port."""
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accepted(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            tr, tw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            w.close()
            return
        self._writers += [w, tw]
        up = asyncio.ensure_future(self._pump(r, tw, self.rate))
        down = asyncio.ensure_future(self._pump(tr, w, None))
        self._tasks.update((up, down))
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        for t in (up, down):
            t.cancel()
        w.close()
        tw.close()

    async def _pump(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, rate: float | None) -> None:
        """Copy ``r`` to ``w`` until either side closes; with ``rate``, each chunk is
        delivered once the link has had ``len(chunk) / rate`` seconds for it after the one
        before (an idle link saves up no credit: no burst above ``rate``)."""
        loop = asyncio.get_running_loop()
        free_at = 0.0
        try:
            while data := await r.read(CHUNK):
                if rate is not None:
                    free_at = max(free_at, loop.time()) + len(data) / rate
                    delay = free_at - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)  # the link's pace, not a wait for a condition
                    self.forwarded += len(data)
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass

    async def close(self) -> None:
        """Stop listening and close every proxied connection."""
        if self._server is not None:
            self._server.close()
        for w in self._writers:
            w.close()
        for t in self._tasks:
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._server is not None:
            await self._server.wait_closed()
