"""``ProxyNet.close()`` closes every connection its listeners took, whatever it was doing.

A connection still sending its hello (``_accept`` reading the first frame) was not among
the relayed ones (``_conns``): the close left it open, its client waiting until the
proxy's hello timeout (5 s), and its handler task pending at the loop's end. And on
asyncio's selector loop a connection accepted in the loop pass the close ran in was never
set up (the listener was closed between the accept and the set-up): its socket was left to
the garbage collector, the client neither served nor closed (``accept_errors.stop_accepting``
is the fix for the node's own listeners)."""

from __future__ import annotations

import asyncio
import select
import socket

import pytest

from openraft_py.testing.jepsen.proxy import ProxyNet

pytestmark = pytest.mark.timeout(30)

CLOSED_WITHIN = 2.0
"""Seconds within which the client must see its connection end (the hello timeout is 5 s)."""


async def _ended(client: socket.socket) -> bool:
    """Whether the proxy ended ``client``'s connection (EOF or reset) within ``CLOSED_WITHIN``."""
    loop = asyncio.get_running_loop()
    client.setblocking(False)
    try:
        data = await asyncio.wait_for(loop.sock_recv(client, 16), CLOSED_WITHIN)
    except ConnectionError:
        return True
    except TimeoutError:
        return False
    return data == b""


async def _until_accepted() -> None:
    """Until the proxy's handler of a connection runs (reading its hello); it counts nothing
    before it has the whole frame, so its task is what there is to see."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CLOSED_WITHIN
    while not any(getattr(t.get_coro(), "__qualname__", "") == "ProxyNet._accept" for t in asyncio.all_tasks()):
        assert loop.time() < deadline, "the proxy never took the connection"
        await asyncio.sleep(0.01)


async def _proxy() -> ProxyNet:
    net = ProxyNet([1, 2])
    # No real node behind it: these connections never get past their hello.
    await net.start({1: ("127.0.0.1", 1), 2: ("127.0.0.1", 1)})
    return net


async def test_close_ends_a_connection_still_sending_its_hello() -> None:
    net = await _proxy()
    client = socket.create_connection(("127.0.0.1", net.ports[1]))
    try:
        client.sendall(b"\x00\x00")  # half a frame's length: the proxy waits for the rest
        await _until_accepted()
        await net.close()
        assert await _ended(client), f"the connection stayed open {CLOSED_WITHIN}s after the close"
    finally:
        client.close()


async def test_close_ends_a_connection_accepted_in_the_same_loop_pass() -> None:
    net = await _proxy()
    listener = net._servers[0].sockets[0]
    client = socket.create_connection(("127.0.0.1", net.ports[1]))
    try:
        # Until the kernel has the connection ready for the listener's accept().
        assert select.select([listener.fileno()], [], [], CLOSED_WITHIN)[0]

        async def close_after_the_accept() -> None:
            # This first step is queued before the loop's next poll, which finds the
            # listener ready and queues its accept after it; the close comes a step later,
            # after the accept and before the connection's set-up (queued by the accept).
            await asyncio.sleep(0)
            await net.close()

        await asyncio.wait_for(asyncio.ensure_future(close_after_the_accept()), 10)
        assert await _ended(client), f"the connection stayed open {CLOSED_WITHIN}s after the close"
    finally:
        client.close()
