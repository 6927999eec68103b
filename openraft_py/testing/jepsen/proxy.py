"""A fault-injecting TCP proxy between every pair of ``serve`` processes (asyncio, in the runner).

Addressing: the membership is cluster-wide, so every node must reach node ``j`` at the same
address. The cluster is therefore initialized with node ``j``'s raft address set to
``ProxyNet.listen_addr(j)`` (one listener per destination), while ``j`` itself listens on its
real raft port. The *source* of a connection is identified from the transport's handshake: the
first frame a TCP client sends is a ``Hello`` naming the sender's node id (DESIGN §7,
``network/wire.py``). The proxy reads that frame, connects to ``j``'s real port, forwards it,
and from then on relays the two directions frame by frame::

    node i ──> proxy listener of j ──(Hello: sender i)──> link (i -> j) ──> node j, real port
                           <── responses (link j -> i) ──

Every frame is length-prefixed, so the proxy can drop or delay *whole frames* and the streams
stay well-formed. Frames carry requests on the connection ``i`` opened to ``j`` and their
responses back, so the directed link ``a -> b`` covers a's requests to b *and* a's responses
to b's requests: ``block(a, b)`` is a one-way partition (nothing from a reaches b).

A directed link has three knobs (``LinkFault``):

- ``blocked``: every frame from ``a`` to ``b`` is silently discarded (packet loss; the sender
  sees RPC timeouts, not refusals);
- ``drop``: each frame is discarded with this probability (a flaky link);
- ``delay``: each frame is held this many seconds (order is kept).

``cut(a, b)`` closes every connection between ``a`` and ``b`` (both directions) once; new
connections are accepted again afterwards (a reset, as after a node's NIC flaps). ``heal()``
clears every fault. The proxy never changes a byte of a forwarded frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import struct
from dataclasses import dataclass, field

from ...network.accept_errors import stop_accepting
from ...network.wire import KIND_HELLO, Hello, WireError, decode_body, split_payload

__all__ = ["LinkFault", "ProxyNet"]

log = logging.getLogger(__name__)

_LEN = struct.Struct(">I")
_MAX_FRAME = 64 * 1024 * 1024
_HELLO_TIMEOUT = 5.0


@dataclass
class LinkFault:
    """The faults of one directed link ``src -> dst`` (see the module docstring)."""

    blocked: bool = False
    drop: float = 0.0
    delay: float = 0.0

    def clear(self) -> bool:
        """Whether the link is healthy."""
        return not self.blocked and self.drop == 0.0 and self.delay == 0.0


@dataclass(eq=False)
class _Conn:
    src: int
    dst: int
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def close(self) -> None:
        for w in self.writers:
            with contextlib.suppress(Exception):
                w.close()
        for t in self.tasks:
            t.cancel()


class ProxyNet:
    """The proxies of a cluster of node ids ``ids`` on ``host``.

    ``start(real)`` opens one listener per node (``real[j]`` = node ``j``'s real raft
    ``(host, port)``); ``listen_addr(j)`` is the address to put in the membership. ``rng``
    drives the probabilistic drops (seeded by the runner). ``stats`` counts forwarded and
    discarded frames.
    """

    def __init__(self, ids: list[int], host: str = "127.0.0.1", rng: random.Random | None = None) -> None:
        self.ids = list(ids)
        self.host = host
        self.rng = rng or random.Random(0)
        self.links: dict[tuple[int, int], LinkFault] = {(a, b): LinkFault() for a in ids for b in ids if a != b}
        self.real: dict[int, tuple[str, int]] = {}
        self.ports: dict[int, int] = {}
        self._servers: list[asyncio.base_events.Server] = []
        self._conns: set[_Conn] = set()
        # The client side of each connection still in ``_accept`` (reading its hello or
        # connecting to its destination): not in ``_conns`` yet, closed by ``close()`` too.
        self._accepting: set[asyncio.StreamWriter] = set()
        self._closing = False
        self.stats = {"forwarded": 0, "discarded": 0, "connections": 0, "refused": 0}

    async def start(self, real: dict[int, tuple[str, int]], ports: dict[int, int] | None = None) -> None:
        """Listen for every node (on ``ports[j]`` if given, else a free port)."""
        self.real = dict(real)
        self._closing = False
        for j in self.ids:
            server = await asyncio.start_server(functools.partial(self._accept, j), self.host, (ports or {}).get(j, 0))
            self._servers.append(server)
            self.ports[j] = server.sockets[0].getsockname()[1]

    def listen_addr(self, j: int) -> str:
        """``"host:port"`` at which every node reaches node ``j`` (through the proxy)."""
        return f"{self.host}:{self.ports[j]}"

    async def close(self) -> None:
        """Stop listening and close every connection taken: relayed ones and those still
        in their handshake (``_accept``). Each listener accepts nothing more before it is
        closed (``stop_accepting``: on asyncio's loop a connection accepted in the pass
        of a bare ``close()`` was never set up, its socket left to the garbage collector);
        a handler that gets past its handshake after this closes what it opened."""
        self._closing = True
        for s in self._servers:
            await stop_accepting(s)
            s.close()
        for w in list(self._accepting):
            w.close()
        self._accepting.clear()
        for c in list(self._conns):
            c.close()
        self._conns.clear()
        for s in self._servers:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await s.wait_closed()
        self._servers.clear()

    # -- faults ---------------------------------------------------------------------------------

    def block(self, src: int, dst: int) -> None:
        """Discard every frame from ``src`` to ``dst`` (one direction)."""
        self.links[(src, dst)].blocked = True

    def partition(self, groups: list[list[int]]) -> None:
        """Block every link between nodes of different ``groups`` (both directions); nodes
        not named in any group are isolated from everyone."""
        where = {n: gi for gi, g in enumerate(groups) for n in g}
        for (a, b), f in self.links.items():
            if where.get(a, -1 - a) != where.get(b, -1 - b):
                f.blocked = True

    def set_link(self, src: int, dst: int, *, drop: float | None = None, delay: float | None = None) -> None:
        """Set the drop probability and/or delay (seconds) of the link ``src -> dst``."""
        f = self.links[(src, dst)]
        if drop is not None:
            f.drop = drop
        if delay is not None:
            f.delay = delay

    def cut(self, a: int, b: int) -> int:
        """Close every open connection between ``a`` and ``b``; how many were closed."""
        n = 0
        for c in list(self._conns):
            if {c.src, c.dst} == {a, b}:
                c.close()
                self._conns.discard(c)
                n += 1
        return n

    def heal(self) -> None:
        """Clear every link fault."""
        for f in self.links.values():
            f.blocked, f.drop, f.delay = False, 0.0, 0.0

    def faulty_links(self) -> list[tuple[int, int]]:
        """The directed links that have a fault now."""
        return sorted(k for k, f in self.links.items() if not f.clear())

    # -- relaying -------------------------------------------------------------------------------

    async def _accept(self, dst: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:  # (set up after the close began: nothing to relay it to)
            writer.close()
            return
        self._accepting.add(writer)
        try:
            up = await self._handshake(dst, reader)
        finally:
            self._accepting.discard(writer)
        if up is None:
            writer.close()
            return
        up_r, up_w, hello_frame, src = up
        if self._closing:  # the close ran while this connected: it closed the client side
            writer.close()
            up_w.close()
            return
        self.stats["connections"] += 1
        conn = _Conn(src, dst, [writer, up_w])
        self._conns.add(conn)
        # The handshake itself travels src -> dst like any frame (a blocked link loses it).
        conn.tasks.append(asyncio.create_task(self._pump(conn, reader, up_w, src, dst, first=hello_frame)))
        conn.tasks.append(asyncio.create_task(self._pump(conn, up_r, writer, dst, src)))

    async def _handshake(
        self, dst: int, reader: asyncio.StreamReader
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes, int] | None:
        """Read the hello of a connection to ``dst``'s listener and connect to ``dst``: the
        destination's streams, the hello frame and its sender; ``None`` (counted refused)
        if the hello is unusable, its sender unknown, or ``dst`` unreachable."""
        try:
            async with asyncio.timeout(_HELLO_TIMEOUT):
                hello_frame, src = await self._read_hello(reader)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, WireError, ValueError) as e:
            log.debug("proxy %s: no usable handshake: %r", dst, e)
            self.stats["refused"] += 1
            return None
        if src not in self.ids or src == dst or dst not in self.real or self._closing:
            self.stats["refused"] += 1
            return None
        host, port = self.real[dst]
        try:
            async with asyncio.timeout(2.0):
                up_r, up_w = await asyncio.open_connection(host, port)
        except (TimeoutError, OSError):
            self.stats["refused"] += 1  # the destination is down: the source sees the connection fail
            return None
        return up_r, up_w, hello_frame, src

    async def _read_hello(self, reader: asyncio.StreamReader) -> tuple[bytes, int]:
        head = await reader.readexactly(4)
        (n,) = _LEN.unpack(head)
        if n > 4096:
            raise ValueError(f"handshake frame of {n} bytes")
        payload = await reader.readexactly(n)
        kind, _rid, body = split_payload(payload)
        if kind != KIND_HELLO:
            raise ValueError(f"first frame is kind {kind}, not a handshake")
        hello = decode_body(kind, body)
        assert isinstance(hello, Hello)
        return head + payload, int(hello.node_id)

    async def _pump(
        self,
        conn: _Conn,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        src: int,
        dst: int,
        first: bytes | None = None,
    ) -> None:
        """Relay frames ``src -> dst`` through the link's faults until either side closes."""
        link = self.links[(src, dst)]
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                item = await queue.get()
                if item is None:
                    return
                due, frame = item
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(frame)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        conn.tasks.append(sender)

        def offer(frame: bytes) -> None:
            if link.blocked or (link.drop > 0.0 and self.rng.random() < link.drop):
                self.stats["discarded"] += 1
                return
            self.stats["forwarded"] += 1
            queue.put_nowait((loop.time() + link.delay, frame))

        try:
            if first is not None:
                offer(first)
            while True:
                head = await reader.readexactly(4)
                (n,) = _LEN.unpack(head)
                if n > _MAX_FRAME:
                    break
                payload = await reader.readexactly(n)
                offer(head + payload)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            queue.put_nowait(None)
            with contextlib.suppress(BaseException):
                async with asyncio.timeout(5.0):
                    await sender
            conn.close()
            self._conns.discard(conn)
