"""A graceful stop and the clients' kept-alive (idle) connections: a request a client sends on
one, however late (its process starved, or stopped, across the whole stop), gets an answer
that says it was not read, never a cut connection (for a write: an unknown outcome).

Before, the stop waited until no request had come for ``DRAIN_QUIET`` (50 ms), then closed
the connections: a client whose process did not run for longer than that sent its next
request on a connection the node had closed, and lost it (``tests/kv/test_graceful_stop.py``
failed so under load, all 8 writers at once)."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import threading

import pytest

from openraft_py.kv.client import KvClient, Outcome, Response
from openraft_py.kv.node import SHUTDOWN_GRACE, KvNode

from .kv_helpers import KvCluster
from .raw_http import ANSWER_WITHIN, http_addr, read_answer

pytestmark = pytest.mark.timeout(60)



async def test_a_request_sent_on_an_idle_connection_after_the_stop_is_answered_408(leader: KvNode) -> None:
    """A client whose connection was idle (kept alive after its answer) all through the stop,
    then sends a write on it: it reads a 408 (``Connection: close``) saying nothing was read,
    not a closed connection with no answer."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(*http_addr(leader))
    try:
        writer.write(f"GET /cluster/status HTTP/1.1\r\nHost: {leader.opts.http_addr}\r\n\r\n".encode())
        await writer.drain()
        status, headers, body = await read_answer(reader)
        assert status == 200 and headers.get("connection", "").lower() != "close", (status, headers, body)
        t0 = loop.time()
        await asyncio.wait_for(leader.stop(), 2 * SHUTDOWN_GRACE)
        took = loop.time() - t0
        # the client wakes up only now, and sends its next request on the connection it kept
        writer.write(f"PUT /kv/late HTTP/1.1\r\nHost: {leader.opts.http_addr}\r\nContent-Length: 1\r\n\r\nv".encode())
        try:
            status, headers, body = await read_answer(reader)
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            raise AssertionError(f"the request got no answer: {e!r}") from None
        assert status == 408, (status, body)
        assert headers["connection"].lower() == "close"
        answer = json.loads(body)
        assert "not read" in answer["error"] and answer["leader_id"] is None, answer
        assert await asyncio.wait_for(reader.read(), ANSWER_WITHIN) == b""  # and the connection is closed
    finally:
        writer.close()
    assert took < SHUTDOWN_GRACE, took  # (the stop did not wait for the idle client)


async def test_a_request_on_a_connection_the_busy_loop_had_not_taken_yet_is_answered(leader: KvNode) -> None:
    """The node's loop busy (here: blocked) while a client connects and sends a write, and the
    stop begins before the loop took the connection (the kernel had completed it, in the
    port's queue): the stop takes it and answers (408 or 503: nothing was done). Before,
    closing the port reset it, the request unread: an unknown outcome."""
    loop = asyncio.get_running_loop()
    host, port = http_addr(leader)
    sent = threading.Event()
    got: list[bytes | OSError] = []

    def client() -> None:
        try:
            with socket.create_connection((host, port), timeout=ANSWER_WITHIN) as s:
                s.sendall(f"PUT /kv/queued HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 1\r\n\r\nv".encode())
                sent.set()
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                got.append(data)
        except OSError as e:
            got.append(e)
        finally:
            sent.set()

    thread = threading.Thread(target=client, name="queued-client")

    def busy() -> None:
        # Runs between the stop's first step and the step that closes the port: the loop
        # takes no connection meanwhile (blocking it is the point).
        thread.start()
        sent.wait(ANSWER_WITHIN)

    stop = asyncio.ensure_future(leader.stop())
    loop.call_soon(busy)
    try:
        await asyncio.wait_for(stop, 2 * SHUTDOWN_GRACE)
    finally:
        await asyncio.to_thread(thread.join, 2 * ANSWER_WITHIN)
    assert len(got) == 1 and isinstance(got[0], bytes), got
    head = got[0].decode("latin-1")
    assert head.split(" ")[1] in ("408", "503") and "Connection: close" in head, head


async def test_a_stop_retiring_a_connection_its_client_just_closed_goes_on(leader: KvNode) -> None:
    """A client closes its kept-alive connection just as the stop retires it (the node's
    loop has not seen the close yet): the 408 meets a closed connection (the client's
    kernel answers it with a reset) and the connection is dropped; the stop goes on and
    ends. Before, the half-close after the 408 raised "Transport endpoint is not connected"
    out of ``stop()``, which then never closed Raft, the network or the stores."""
    loop = asyncio.get_running_loop()
    s = socket.create_connection(http_addr(leader), timeout=ANSWER_WITHIN)
    try:
        s.sendall(f"GET /cluster/status HTTP/1.1\r\nHost: {leader.opts.http_addr}\r\n\r\n".encode())
        answer = await asyncio.to_thread(s.recv, 4096)
        assert answer.startswith(b"HTTP/1.1 200"), answer
    except BaseException:
        s.close()
        raise

    def close_now() -> None:
        # Runs between the stop's first step and the step that retires the connections:
        # the loop sees the client's close only after that.
        s.close()

    stop = asyncio.ensure_future(leader.stop())
    loop.call_soon(close_now)
    await asyncio.wait_for(stop, 2 * SHUTDOWN_GRACE)
    assert leader.stopped.is_set() and leader.log_store is None  # (every step ran)


async def test_a_starved_client_s_write_on_its_kept_alive_connection_is_retried_not_unknown() -> None:
    """A ``KvClient`` whose event loop does not run (another thread, blocked) from just after
    a write to the leader until that leader's stop has ended, then writes again: the write
    goes first on the connection it kept to the stopped leader, is refused there (408:
    nothing read), and is retried at the other nodes until the new leader takes it. Before,
    it ended ``info`` ("connection lost": the node had closed the connection under it)."""
    c = KvCluster()
    first_done = threading.Event()
    gate = threading.Event()
    results: list[Response] = []
    errors: list[BaseException] = []
    try:
        await c.start(3)
        leader = await c.wait_leader()
        endpoints = [n.opts.http_addr for n in c.nodes.values()]

        async def client() -> None:
            async with KvClient(endpoints, deadline=15.0) as kv:
                results.append(await kv.put("k", "1", endpoint=leader.opts.http_addr))
                first_done.set()
                gate.wait(30)  # the client's loop is starved: blocked, reading nothing
                results.append(await kv.put("k", "2"))

        def run() -> None:
            try:
                asyncio.run(client())
            except BaseException as e:  # noqa: BLE001 - reported by the test
                errors.append(e)
            finally:
                first_done.set()

        thread = threading.Thread(target=run, name="starved-client")
        thread.start()
        try:
            assert await asyncio.to_thread(first_done.wait, 20)
            assert not errors and results[0].ok, (errors, results)
            await asyncio.wait_for(leader.stop(), 2 * SHUTDOWN_GRACE)
        finally:
            gate.set()
            await asyncio.to_thread(thread.join, 30)
        assert not thread.is_alive()
        assert not errors, errors
        second = results[1]
        assert second.outcome is Outcome.OK, second
        assert second.retries >= 1 and second.node != leader.opts.http_addr, second
        # written once, through the new leader
        new = await c.wait_leader(among=[n.id for n in c.followers(leader)])
        assert c.session is not None
        async with c.session.get(f"http://{new.opts.http_addr}/kv/k") as r:
            assert r.status == 200 and await r.text() == "2"
    finally:
        gate.set()
        await c.close()


async def test_a_408_is_a_refusal_the_client_retries_at_the_next_endpoint() -> None:
    """An endpoint that answers 408 (a stopping node's idle connection, or a body too slow):
    the request was not read, so the client retries it at the next endpoint, a write too,
    and the call succeeds there; with ``follow=False`` it fails at once (``fail``, not
    ``info``)."""
    from aiohttp import web

    seen: list[str] = []

    async def refuse(request: web.Request) -> web.Response:
        seen.append("refuse")
        return web.json_response({"error": "the node is stopping: the request was not read", "leader_id": None},
                                 status=408, headers={"Connection": "close"})

    async def take(request: web.Request) -> web.Response:
        seen.append("take")
        return web.json_response({"index": 7})

    runners = []
    addrs = []
    try:
        for h in (refuse, take):
            app = web.Application()
            app.router.add_put("/kv/{key}", h)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            runners.append(runner)
            port = runner.addresses[0][1]
            addrs.append(f"127.0.0.1:{port}")
        async with KvClient(addrs, deadline=5.0) as kv:
            r = await kv.put("k", "v")
            assert r.outcome is Outcome.OK and r.json() == {"index": 7} and r.node == addrs[1], r
            assert seen == ["refuse", "take"], seen
            r = await kv.put("k", "v", endpoint=addrs[0], follow=False)
            assert r.outcome is Outcome.FAIL and r.status == 408 and "not read" in (r.error or ""), r
    finally:
        for runner in runners:
            await runner.cleanup()


async def test_a_connection_accepted_in_the_loop_pass_the_stop_closes_the_port_is_answered(leader: KvNode) -> None:
    """A client connects and sends a write just as the stop begins: the loop accepts the
    connection in the pass before the stop closes the port. asyncio's selector loop makes
    the connection's transport a pass after accepting it, and failed to once the port was
    closed (``accept_errors.stop_accepting``): the socket was left open to the garbage
    collector, the client waiting for an answer that never came (an unknown outcome) and
    the test failing on its ``ResourceWarning`` if collected. Now it is answered (408 or
    503: nothing was done)."""
    loop = asyncio.get_running_loop()
    host, port = http_addr(leader)
    assert leader._http_listener is not None
    listener = leader._http_listener.sockets[0]
    client = socket.create_connection((host, port), timeout=ANSWER_WITHIN)
    try:
        client.sendall(f"PUT /kv/accepted HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 1\r\n\r\nv".encode())
        # Until the kernel has the connection ready for the port's accept().
        assert select.select([listener.fileno()], [], [], ANSWER_WITHIN)[0]
        # The stop's first step is queued before the loop's next poll, which finds the port
        # ready: its callback accepts the connection after that step (which makes the stop's
        # own task) and queues the connection's set-up after that task, so the stop closes
        # the port between the accept and the set-up.
        stop = asyncio.ensure_future(leader.stop())
        await asyncio.wait_for(stop, 2 * SHUTDOWN_GRACE)
        client.setblocking(False)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await asyncio.wait_for(loop.sock_recv(client, 4096), ANSWER_WITHIN)
            if not chunk:
                break
            data += chunk
    finally:
        client.close()
    head = data.decode("latin-1")
    assert head.split(" ")[1:2] in (["408"], ["503"]) and "Connection: close" in head, head


async def test_a_stop_cancelled_while_it_stops_accepting_still_closes_the_http_port(leader: KvNode) -> None:
    """The stop's task cancelled (its loop ending under it: ``asyncio.run`` cancels what is
    left) in the loop pass it gives the accepted connections (``stop_accepting``), after it
    took the listener from the node: the HTTP port is closed all the same. Before, the
    listener was dropped unclosed, its socket listening for nobody until collected (and, on
    asyncio's loop, no longer read: its clients' connections waited in the queue)."""
    listener = leader._http_listener
    assert listener is not None
    socks = list(listener.sockets)
    stopping = asyncio.ensure_future(leader.stop())
    await asyncio.sleep(0)  # stop() made the stop's task
    stop_task = leader._stop_task
    assert stop_task is not None
    await asyncio.sleep(0)  # the stop's task ran up to its first wait: stop_accepting's loop pass
    assert leader._http_listener is None  # (taken: the cancellation lands where it should)
    stop_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    try:
        assert not listener.is_serving()
        assert all(s.fileno() == -1 for s in socks), socks
        # and its accept errors are no longer watched (the port's descriptor may be reused)
        assert leader._http_accept_errors is None or not leader._http_accept_errors._fds
    finally:
        leader._stop_task = None  # the rest of the stop, for the fixture's cleanup
        await asyncio.wait_for(leader.stop(), 2 * SHUTDOWN_GRACE)
