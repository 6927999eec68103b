"""A node out of file descriptors on asyncio's event loop: the accept errors of its two
listening ports (raft, HTTP) are logged once each, not once per retry, and connections are
accepted again once descriptors are free (``openraft_py.network.accept_errors``)."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import sys
from typing import Any

import pytest

from openraft_py.network.accept_errors import ACCEPT_ERROR_MESSAGE, AcceptErrors

from .kv_helpers import KvCluster

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts descriptors in /proc/self/fd"),
]


async def _until(cond: Any, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_accept_errors_for_want_of_descriptors_are_logged_once_per_port(caplog: pytest.LogCaptureFixture) -> None:
    """With every descriptor of the process taken (by something else than connections: its
    own files), a connection to either port waits in the listen queue. asyncio logged an
    ERROR with a traceback for each accept it tried meanwhile ("socket.accept() out of
    system resource"): about 1,300 a second for the two ports of a ``serve`` on asyncio,
    80,000 lines in 10 s. Now one WARNING per port, then an INFO once the port accepts
    again, and the waiting connections are served."""
    caplog.set_level(logging.INFO)
    c = KvCluster()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[int] = []
    clients: list[socket.socket] = []
    try:
        await c.start(1)
        node = c.nodes[1]
        assert node.tcp_server is not None
        # A limit a little above what the process holds, the rest taken by files.
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, hard))
        for addr in (node.opts.raft_addr, node.opts.http_addr):
            host, port = addr.rsplit(":", 1)
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((host, int(port)))  # completed by the kernel, waiting to be accepted
            clients.append(s)
        try:
            while True:
                held.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass

        def warned() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "accept() fails" in r.getMessage()]

        await _until(lambda: len(warned()) == 2, 10, "a WARNING for each port")
        # Retried for a while (asyncio: a second apart, each turn many accepts), still said once.
        raft_errors, http_errors = node.tcp_server._accept_errors, node._http_accept_errors
        assert raft_errors is not None and http_errors is not None
        await _until(lambda: raft_errors.log.count >= 200 and http_errors.log.count >= 200, 20, "retried accepts")
        for fd in held:
            os.close(fd)
        held.clear()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        http = clients[1]
        http.setblocking(True)
        http.settimeout(10)
        http.sendall(b"GET /cluster/status HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await asyncio.to_thread(http.recv, 100)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        await _until(lambda: sum("accepts connections again" in r.getMessage() for r in caplog.records) == 2, 10,
                     "an INFO for each port")
        assert len(warned()) == 2, warned()
        flood = [r for r in caplog.records if ACCEPT_ERROR_MESSAGE in r.getMessage()]
        assert not flood, f"{len(flood)} accept errors logged by asyncio"
        again = [r.getMessage() for r in caplog.records if "accepts connections again" in r.getMessage()]
        assert all("failed accept" in m for m in again), again
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for s in clients:
            s.close()
        await c.close()


async def test_other_exceptions_go_to_the_handler_it_replaced_which_comes_back() -> None:
    """The filter passes every other call to the loop's handler it replaced (or the
    default), and puts it back when the last listener watched closes."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []

    def mine(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        seen.append(context)

    loop.set_exception_handler(mine)
    try:
        a, b = socket.socket(), socket.socket()
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        ea, eb = AcceptErrors("a", logging.getLogger("t")), AcceptErrors("b", logging.getLogger("t"))
        ea.watch([a])
        eb.watch([b])
        assert loop.get_exception_handler() is not mine
        loop.call_exception_handler({"message": "something else"})
        loop.call_exception_handler({"message": ACCEPT_ERROR_MESSAGE, "exception": OSError(24, "x"), "socket": a})
        assert [s["message"] for s in seen] == ["something else"]
        assert ea.log.failing and not eb.log.failing
        ea.accepted()
        assert not ea.log.failing
        ea.close()
        assert loop.get_exception_handler() is not mine  # b still watched
        eb.close()
        assert loop.get_exception_handler() is mine
        a.close()
        b.close()
    finally:
        loop.set_exception_handler(None)


def test_a_guarded_factory_that_raises_costs_one_connection_on_uvloop(caplog: pytest.LogCaptureFixture) -> None:
    """The HTTP port's factory is guarded too (``AcceptErrors.guard``): on uvloop, a
    factory that raised stopped the listener for good, every later connection left
    unanswered in the listen queue while ``is_serving()`` stayed true."""
    uvloop = pytest.importorskip("uvloop")
    calls = 0

    class Hello(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transport.write(b"hello")  # type: ignore[attr-defined]
            transport.close()

    def flaky() -> asyncio.BaseProtocol:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise MemoryError("no memory for the connection")
        return Hello()

    async def main() -> list[bytes]:
        errors = AcceptErrors("HTTP port test", logging.getLogger("openraft_py.kv.node"))
        server = await asyncio.get_running_loop().create_server(errors.guard(flaky), "127.0.0.1", 0)
        errors.watch(server.sockets)
        port = server.sockets[0].getsockname()[1]
        got = []
        try:
            for _ in range(2):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                got.append(await asyncio.wait_for(reader.read(), 5))
                writer.close()
        finally:
            errors.close()
            server.close()
        return got

    assert uvloop.run(main()) == [b"", b"hello"]
    warned = [r.getMessage() for r in caplog.records if "could not be set up" in r.getMessage()]
    assert len(warned) == 1 and "MemoryError" in warned[0], warned
