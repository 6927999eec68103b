"""A new user's first hour, and bad input at every boundary they touch (t91).

A client that sends its whole request and then closes its sending side (``shutdown(SHUT_WR)``:
``nc -N``, ``socat``, a one-shot HTTP/1.0 script) is owed its answer: TCP closes one direction
at a time. aiohttp's server closed the connection at that end of the input
(aio-libs/aiohttp#3659): a ``PUT`` was applied, and its client read no answer at all, so it
could not tell that its write was done."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest
from event_loops import LOOPS
from kv.kv_helpers import KvCluster
from kv.raw_http import ANSWER_WITHIN, http_addr

from openraft_py.kv.node import KvNode

pytestmark = pytest.mark.timeout(60)


def _on_leader(loop_name: str, body: Callable[[KvNode], Awaitable[None]]) -> None:
    """``body(leader)`` on the leader of a one-node cluster run on the loop ``loop_name``
    (``serve`` runs on uvloop where it is installed, the tests' loop is asyncio's: both)."""

    async def run() -> None:
        c = KvCluster()
        try:
            await c.start(1)
            await body(await c.wait_leader())
        finally:
            await c.close()

    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(run())


async def _half_closed(node: KvNode, request: bytes) -> bytes:
    """``request`` sent on a new connection whose sending side is then shut (as ``nc -N``
    does), and everything the node sends back until it closes the connection."""
    host, port = http_addr(node)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), ANSWER_WITHIN)
    finally:
        writer.close()


def _answer(raw: bytes) -> tuple[int, bytes]:
    """The status and body of the one response in ``raw``."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head, "the node closed the connection without an answer"
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_a_half_closed_write_gets_its_answer(loop_name: str) -> None:
    async def body(leader: KvNode) -> None:
        raw = await _half_closed(leader, b"PUT /kv/hc HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        status, answer = _answer(raw)
        assert status == 200, raw
        index = json.loads(answer)["index"]
        assert leader.sm.data["hc"] == "hi"  # type: ignore[union-attr]
        assert index == leader.raft.metrics.last_applied.index  # type: ignore[union-attr]

    _on_leader(loop_name, body)


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_a_half_closed_read_gets_its_answer(loop_name: str) -> None:
    async def body(leader: KvNode) -> None:
        raw = await _half_closed(leader, b"GET /cluster/status HTTP/1.1\r\nHost: x\r\n\r\n")
        status, answer = _answer(raw)
        assert status == 200, raw
        assert json.loads(answer)["id"] == 1

    _on_leader(loop_name, body)


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_a_body_cut_short_by_the_half_close_is_not_applied_nor_waited_for(loop_name: str) -> None:
    """The end of the client's input before its body ends: nothing is done, and the
    connection closes at once (not after the body's deadline, 30 s and more)."""

    async def body(leader: KvNode) -> None:
        raw = await _half_closed(leader, b"PUT /kv/cut HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhi")
        assert b" 200 " not in raw.partition(b"\r\n")[0], raw
        assert "cut" not in leader.sm.data  # type: ignore[union-attr]

    _on_leader(loop_name, body)


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_of_requests_pipelined_before_the_half_close_the_first_is_answered_and_none_after_it_done(
    loop_name: str,
) -> None:
    """The connection ends after the first answer: a request behind it is not handled (its
    client reads no answer for it, and nothing of it was done)."""

    async def body(leader: KvNode) -> None:
        raw = await _half_closed(leader, b"PUT /kv/p1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na"
                                         b"PUT /kv/p2 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nb")
        status, _ = _answer(raw)
        assert status == 200, raw
        assert raw.count(b"HTTP/1.1 ") == 1, raw
        assert leader.sm.data.get("p1") == "a"  # type: ignore[union-attr]
        assert "p2" not in leader.sm.data  # type: ignore[union-attr]

    _on_leader(loop_name, body)


def test_the_demo_summary_says_the_kill_time_is_into_the_load() -> None:
    """The demo's event lines count from its start (``[  4.78s] SIGKILL n1``), its progress
    bar and summary from the start of the load: the summary said "SIGKILL n1 at 3.0 s" under
    an event line of 4.78 s, two clocks a first reader could not tell apart."""
    import io
    from types import SimpleNamespace

    from openraft_py.kv.demo import Demo, DemoConfig

    out = io.StringIO()
    demo = Demo(DemoConfig(), out=out, err=io.StringIO())
    demo.t0, demo.t_kill, demo.t_new_leader = 100.0, 103.0, 103.2
    demo.killed, demo.new_leader = 1, (3, 2)
    demo.stats.ok_writes = 1
    verdict = SimpleNamespace(ok=True, explain=lambda: "linearizable: 1 operation")
    cluster = SimpleNamespace(nodes={1: None, 2: None, 3: None})
    demo._summary(cluster, 10.0, {1: {"last_log_index": 3, "applied_index": 3}}, {}, {1: {}},  # type: ignore[arg-type]
                  verdict)  # type: ignore[arg-type]
    [failover] = [line for line in out.getvalue().splitlines() if "failover" in line]
    assert "SIGKILL n1 3.0 s into the load;" in failover, failover


def _from_another_thread(call: Callable[[], Awaitable[object]]) -> BaseException | object:
    """``call()`` run by ``asyncio.run`` in a thread of its own (another event loop): what
    it returned or raised."""
    import threading

    got: list[BaseException | object] = []

    def run() -> None:
        try:
            got.append(asyncio.run(call()))  # type: ignore[arg-type]
        except BaseException as e:  # noqa: BLE001 - the test looks at it
            got.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join(ANSWER_WITHIN * 4)
    assert got, "the call from another loop did not end"
    return got[0]


def test_a_kv_client_called_from_another_loop_says_so_and_sends_nothing() -> None:
    """``KvClient``'s HTTP connections belong to the loop it was first used on. A call from
    another (another thread's loop) failed inside aiohttp ("... attached to a different
    loop") after its request was sent: the write was applied, its caller told only of an
    asyncio error. Now: ``RuntimeError`` naming the mistake, nothing sent."""
    from openraft_py.kv.client import KvClient

    async def body(leader: KvNode) -> None:
        async with KvClient([leader.opts.http_addr]) as client:
            assert (await client.put("k", "mine")).ok
            got = await asyncio.to_thread(_from_another_thread, lambda: client.put("k", "theirs"))
            assert isinstance(got, RuntimeError), got
            assert "nothing was sent" in str(got) and "event loop" in str(got), got
            assert leader.sm.data["k"] == "mine"  # type: ignore[union-attr]
            assert (await client.put("k", "again")).ok  # its own loop: as before

    _on_leader("asyncio", body)


def test_a_kv_client_whose_loop_ended_says_so() -> None:
    """A client made once and used under two ``asyncio.run``s (the second loop is new, the
    first closed): aiohttp's "Event loop is closed", with the client's session left open."""
    from openraft_py.kv.client import KvClient

    client = KvClient(["127.0.0.1:1"], deadline=0.2)  # (nothing listens: refused at once)

    async def first() -> None:
        await client.put("k", "v")
        assert client._session is not None
        await client._session.close()  # (the test's hygiene: no session left to the closed loop)

    asyncio.run(first())
    with pytest.raises(RuntimeError, match=r"its event loop is closed.*nothing was sent"):
        asyncio.run(client.put("k", "v"))


def test_what_a_user_reads_cites_no_document_they_do_not_have() -> None:
    """``openraft-py --help`` and the README sent a new user to "DESIGN §8", a design
    document that is not in the repository nor in the wheel; the user guide
    (``docs/guides/``, the README) is what they have."""
    from pathlib import Path

    from openraft_py.kv.cli import build_parser

    root = Path(__file__).resolve().parents[2]
    texts = {"openraft-py --help": build_parser().format_help()}
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md")), *sorted((root / "docs/guides").glob("*.md"))]:
        texts[str(path.relative_to(root))] = path.read_text()
    cited = [where for where, text in texts.items() if "DESIGN §" in text or "DESIGN section" in text]
    assert not cited, f"cites the DESIGN document a user does not have: {cited}"
    assert "docs/guides/kv-service.md" in texts["openraft-py --help"]


def test_an_init_recording_this_node_elsewhere_than_it_listens_is_warned_of(caplog: pytest.LogCaptureFixture) -> None:
    """``POST /cluster/init`` by hand, node 1's own raft address mistyped: taken (another
    name of the machine, or a translated address, is right), and the node said nothing, so
    that the other nodes, dialling the recorded address, found it cut off later. ``serve``
    warned of it only at its next start."""
    import logging

    from kv.kv_helpers import url

    caplog.set_level(logging.WARNING, logger="openraft_py.kv.node")

    async def run() -> None:
        c = KvCluster()
        try:
            await c.start(1, init=False)
            node = c.nodes[1]
            assert c.session is not None
            members = {"1": {"raft_addr": "127.0.0.1:9", "http_addr": node.opts.http_addr}}
            async with c.session.post(url(node, "/cluster/init"), json={"members": members}) as r:
                assert r.status == 200, await r.text()
        finally:
            await c.close()

    asyncio.run(run())
    warned = [r.getMessage() for r in caplog.records if "records this node at other addresses" in r.getMessage()]
    assert warned and "(recorded: 127.0.0.1:9)" in warned[0], warned
