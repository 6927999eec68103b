"""Pieces the TCP client and server share: address parsing, TCP_NODELAY, the per-loop-turn
frame writer, the default frame limit and the logger (see ``openraft_py.network.tcp``)."""

from __future__ import annotations

import asyncio
import logging
import socket

__all__ = ["DEFAULT_MAX_FRAME_SIZE", "parse_addr", "log"]

log = logging.getLogger("openraft_py.network.tcp")
"""The transport's logger (client and server): refusals and dropped connections at WARNING."""

DEFAULT_MAX_FRAME_SIZE = 32 * 1024 * 1024
"""Largest frame either side accepts by default (32 MiB): room for a default 3 MiB snapshot
chunk or a full AppendEntries batch of large entries. Raise it (on every node) when
``Config.snapshot_max_chunk_size`` or entry payloads need more."""


def parse_addr(addr: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6addr]:port"``) as ``(host, port)``; ``ValueError`` if
    malformed."""
    host, sep, port_s = addr.rpartition(":")
    if not sep or not host or not port_s.isdigit():
        raise ValueError(f"not a host:port address: {addr!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_s)
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {addr!r}")
    return host, port


def _set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):  # pragma: no cover - not a TCP socket
            pass


class _FrameWriter:
    """Coalesces the frames queued during one loop turn into one transport write."""

    __slots__ = ("_transport", "_out", "_scheduled", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport) -> None:
        self._loop = loop
        self._transport = transport
        self._out: list[bytes | bytearray] = []
        self._scheduled = False

    def send(self, frame: bytes | bytearray) -> None:
        """Queue ``frame``; it is written at the end of this loop turn."""
        self._out.append(frame)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write everything queued now (a no-op once the transport is closing)."""
        self._scheduled = False
        out = self._out
        if not out:
            return
        self._out = []
        t = self._transport
        if t.is_closing():
            return
        if len(out) == 1:
            t.write(out[0])
        else:
            t.write(b"".join(out))


