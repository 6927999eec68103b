"""HTTP/1.1 spoken over raw sockets to a ``KvNode``, for tests of what the API does before it
reads a body (a request's head alone, a body sent slowly or not at all), which no HTTP client
library lets a test control."""

from __future__ import annotations

import asyncio
import socket
import time

from openraft_py.kv.http_api import BUDGET_KEY, BodyBudget
from openraft_py.kv.node import KvNode

ANSWER_WITHIN = 5.0
"""Seconds a test waits for an answer the node gives at once (its body deadline,
``BODY_GRACE``, is 30 s and more: an answer that waits for the body misses this)."""


def budget(node: KvNode) -> BodyBudget:
    """The node's request-body budget (``BodyBudget``: its ``peak`` says whether room was taken)."""
    assert node._http is not None
    return node._http.app[BUDGET_KEY]  # type: ignore[no-any-return]


def http_addr(node: KvNode) -> tuple[str, int]:
    """The node's HTTP ``(host, port)``."""
    host, port = node.opts.http_addr.rsplit(":", 1)
    return host, int(port)


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response read from ``reader`` within ``ANSWER_WITHIN`` s: status, headers
    (lower-cased names), body."""
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ANSWER_WITHIN)
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)}
    body = b""
    if "content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), ANSWER_WITHIN)
    return status, headers, body


def slow_put_then_read(addr: str, size: int, over: float) -> bytes:
    """As ``http.client`` and ``requests`` do: the head and the whole body (``size`` bytes
    sent evenly over ``over`` seconds), then the answer read; the answer's first bytes, or
    ``OSError`` if the connection was reset meanwhile. Blocking: run it in a thread."""
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=ANSWER_WITHIN + over) as s:
        s.sendall(f"PUT /kv/slow HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {size}\r\n\r\n".encode())
        parts = 20
        for i in range(parts):
            s.sendall(b"s" * (size // parts + (size % parts if i == parts - 1 else 0)))
            time.sleep(over / parts)  # the client's pace (a thread of its own, not the test's wait)
        return s.recv(64)
