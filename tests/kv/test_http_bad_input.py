"""Bad input to the HTTP API gets a 4xx with a JSON error, changes nothing, and leaves the
node running and the cluster committing (issue 12 acceptance)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from openraft_py.kv import http_api
from openraft_py.types import Blank
from openraft_py.validation import MAX_NODE_ID

from .kv_helpers import KvCluster, until_true, url

pytestmark = pytest.mark.timeout(60)

MAX_BODY = 64 * 1024

# (method, path, body keyword arguments, expected status)
CASES: list[tuple[str, str, dict[str, Any], int]] = [
    # unknown paths and wrong methods
    ("GET", "/nope", {}, 404),
    ("GET", "/kv", {}, 404),
    ("GET", "/kv/", {}, 404),
    ("GET", "/kv/a/b", {}, 404),
    ("POST", "/cluster/statuses", {"json": {}}, 404),
    ("POST", "/kv/k", {"data": "v"}, 405),
    ("PATCH", "/kv/k", {"data": "v"}, 405),
    ("GET", "/kv/k/cas", {}, 405),
    ("PUT", "/cluster/status", {"data": "x"}, 405),
    ("DELETE", "/metrics", {}, 405),
    ("GET", "/cluster/members", {}, 405),
    # wrong JSON
    ("POST", "/kv/k/cas", {"data": b"{not json"}, 400),
    ("POST", "/kv/k/cas", {"data": b""}, 400),
    ("POST", "/kv/k/cas", {"data": b"\xff\xfe"}, 400),
    ("POST", "/kv/k/cas", {"json": [1, 2]}, 400),
    ("POST", "/kv/k/cas", {"json": {"expected": None}}, 400),
    ("POST", "/kv/k/cas", {"json": {"expected": 1, "value": "x"}}, 400),
    ("POST", "/kv/k/cas", {"json": {"expected": None, "value": ["x"]}}, 400),
    ("POST", "/kv/k/cas", {"json": {"expected": None, "value": "x", "extra": 1}}, 400),
    ("POST", "/cluster/init", {"data": b"null"}, 400),
    ("POST", "/cluster/init", {"json": {"members": {}}}, 400),
    ("POST", "/cluster/init", {"json": {"members": {"x": {"raft_addr": "h:1", "http_addr": "h:2"}}}}, 400),
    ("POST", "/cluster/init", {"json": {"members": {"-1": {"raft_addr": "h:1", "http_addr": "h:2"}}}}, 400),
    ("POST", "/cluster/init", {"json": {"members": {"1": {"raft_addr": "nohost", "http_addr": "h:2"}}}}, 400),
    ("POST", "/cluster/init", {"json": {"members": {"1": {"raft_addr": "h:99999", "http_addr": "h:2"}}}}, 400),
    ("POST", "/cluster/init", {"json": {"members": {"1": "h:1"}}}, 400),
    ("POST", "/cluster/init", {"json": {"members": {"\uff11": {"raft_addr": "h:1", "http_addr": "h:2"}}}}, 400),
    ("POST", "/cluster/init", {"data": b'{"members": {"1": {"raft_addr": "h:1", "http_addr": "h:2"}, '
                                       b'"01": {"raft_addr": "h:3", "http_addr": "h:4"}}}'}, 400),
    ("POST", "/kv/k/cas", {"data": b'{"expected": null, "value": "a\\ud800"}'}, 400),
    ("POST", "/cluster/learners", {"data": b'{"id": 4, "raft_addr": "\\udc00:1", "http_addr": "h:2"}'}, 400),
    ("POST", "/cluster/members", {"json": {"voters": "1,2"}}, 400),
    ("POST", "/cluster/members", {"json": {"voters": []}}, 400),
    ("POST", "/cluster/members", {"json": {"voters": [1, -2]}}, 400),
    ("POST", "/cluster/members", {"json": {"voters": [1, 2**64]}}, 400),
    ("POST", "/cluster/members", {"json": {"voters": [1, 2.5]}}, 400),
    ("POST", "/cluster/members", {"json": {"voters": [1, True]}}, 400),
    # A voter named twice (a typo for another id, likely): the change was made without a word.
    ("POST", "/cluster/members", {"json": {"voters": [1, 2, 2, 3]}}, 400),
    ("POST", "/cluster/members", {"json": {"voters": [1, 2, 3], "retain": "no"}}, 400),
    ("POST", "/cluster/transfer", {"json": {"to": "2"}}, 400),
    ("POST", "/cluster/transfer", {"json": {"to": -1}}, 400),
    ("POST", "/cluster/transfer", {"json": {"to": 2**70}}, 400),
    ("POST", "/cluster/transfer", {"json": {"to": None}}, 400),
    ("POST", "/cluster/transfer", {"json": {}}, 400),
    ("POST", "/cluster/learners", {"json": {"id": "4", "raft_addr": "h:1", "http_addr": "h:2"}}, 400),
    ("POST", "/cluster/learners", {"json": {"id": 4, "raft_addr": 5, "http_addr": "h:2"}}, 400),
    ("POST", "/cluster/learners", {"json": {"id": 4, "raft_addr": "h:1"}}, 400),
    ("POST", "/cluster/learners", {"json": {"id": -4, "raft_addr": "h:1", "http_addr": "h:2"}}, 400),
    # addresses go into the membership, then into redirects: a wildcard, a header injection,
    # a path, a bare IPv6 address
    ("POST", "/cluster/learners", {"json": {"id": 4, "raft_addr": "0.0.0.0:1", "http_addr": "h:2"}}, 400),
    ("POST", "/cluster/learners", {"json": {"id": 4, "raft_addr": "h:1", "http_addr": "[::]:2"}}, 400),
    ("POST", "/cluster/learners", {"json": {"id": 4, "raft_addr": "h:1", "http_addr": "a\r\nX-Evil: 1\r\nb:2"}}, 400),
    ("POST", "/cluster/learners", {"json": {"id": 4, "raft_addr": "h:1", "http_addr": "evil.example/x?:2"}}, 400),
    ("POST", "/cluster/learners", {"json": {"id": 4, "raft_addr": "::1:1", "http_addr": "h:2"}}, 400),
    ("POST", "/cluster/learners", {"json": {"id": 4, "raft_addr": "h:1", "http_addr": "h:\u0662\u0668"}}, 400),
    ("POST", "/cluster/init", {"json": {"members": {"1": {"raft_addr": "0.0.0.0:1", "http_addr": "h:2"}}}}, 400),
    ("POST", "/cluster/init", {"json": {"members": {"1": {"raft_addr": "h:1", "http_addr": "a b:2"}}}}, 400),
    # two members at one address (a copy-paste slip): the cluster could never elect
    ("POST", "/cluster/init", {"json": {"members": {"1": {"raft_addr": "h:1", "http_addr": "h:2"},
                                                    "2": {"raft_addr": "h:1", "http_addr": "h:3"}}}}, 400),
    ("POST", "/cluster/init", {"json": {"members": {"1": {"raft_addr": "h:1", "http_addr": "h:2"},
                                                    "2": {"raft_addr": "h:2", "http_addr": "h:3"}}}}, 400),
    ("POST", "/cluster/init", {"json": {"members": {"1": {"raft_addr": "h:1", "http_addr": "h:1"}}}}, 400),
    # bad values, keys and query strings
    ("PUT", "/kv/k", {"data": b"\xff\xfe\x00"}, 400),
    ("PUT", "/kv/" + "k" * 5000, {"data": "v"}, 400),
    ("PUT", "/kv/%FF%FE", {"data": "v"}, 400),
    ("GET", "/kv/k?consistency=strong", {}, 400),
    ("GET", "/kv/k?consistency=", {}, 400),
    ("GET", "/kv/k?consistency=local&consistency=lease", {}, 400),
    # A query parameter the route does not take (a typo of consistency, one given to a write):
    # it was ignored, so a misspelled consistency=local read was linearizable (a follower's a
    # redirect), and a write's parameter looked as if it meant something.
    ("GET", "/kv/k?consistancy=local", {}, 400),
    ("GET", "/kv/k?consistency=local&x=1", {}, 400),
    ("PUT", "/kv/k?consistency=local", {"data": "v"}, 400),
    ("DELETE", "/kv/k?x", {}, 400),
    ("POST", "/kv/k/cas?x=1", {"json": {"expected": None, "value": "x"}}, 400),
    ("POST", "/cluster/transfer?to=2", {"json": {"to": 2}}, 400),
    ("GET", "/cluster/status?verbose=1", {}, 400),
    # huge bodies
    ("PUT", "/kv/k", {"data": b"x" * (MAX_BODY + 1)}, 413),
    ("POST", "/kv/k/cas", {"data": b"{" + b" " * (2 * MAX_BODY) + b"}"}, 413),
    ("POST", "/cluster/members", {"data": b"[" * (MAX_BODY + 10)}, 413),
    # deeply nested JSON inside the limit
    ("POST", "/cluster/members", {"data": b"[" * 50000}, 400),
    # a compressed body: a value is the body as sent (aiohttp would have decoded gzip, refused
    # br in plain text with a logged traceback, and stored a body of an unknown coding as is)
    ("PUT", "/kv/k", {"data": b"\x1f\x8b not gzip", "headers": {"Content-Encoding": "gzip"}}, 415),
    ("PUT", "/kv/k", {"data": b"v", "headers": {"Content-Encoding": "br"}}, 415),
    ("PUT", "/kv/k", {"data": b"v", "headers": {"Content-Encoding": "x-unknown"}}, 415),
    ("POST", "/kv/k/cas", {"data": b"{}", "headers": {"Content-Encoding": "deflate"}}, 415),
]


def _redirected_unread(method: str, path: str, kw: dict[str, Any], status: int) -> bool:
    """Whether a follower answers the case with the 307 before it reads the body: a body
    that only the leader serves (``http_api._redirects_unread``), sent as it is (415 comes
    first)."""
    if method == "PUT":
        leader_only = path.startswith("/kv/") and path.count("/") == 2
    elif method == "POST":
        cas = path.startswith("/kv/") and path.endswith("/cas")
        leader_only = cas or path in ("/cluster/learners", "/cluster/members", "/cluster/transfer")
    else:
        leader_only = False
    has_body = kw.get("data", b"") != b"" or "json" in kw
    return leader_only and has_body and status != 415 and "?" not in path  # (a query is refused first)


@pytest.fixture
async def cluster() -> AsyncIterator[KvCluster]:
    c = KvCluster()
    try:
        await c.start(3, max_body=MAX_BODY)
        yield c
    finally:
        await c.close()


async def test_bad_requests_get_4xx_and_change_nothing(cluster: KvCluster) -> None:
    leader = await cluster.wait_leader()
    s = cluster.session
    assert s is not None
    async with s.put(url(leader, "/kv/k"), data="before") as r:
        assert r.status == 200
    await cluster.wait_applied(leader.raft.metrics.last_log_index)  # type: ignore[union-attr]
    before = {n.id: n.sm.data for n in cluster.nodes.values()}  # type: ignore[union-attr]
    first_index = leader.raft.metrics.last_log_index + 1  # type: ignore[union-attr]
    targets = [leader, *cluster.followers(leader)]
    for node in targets:
        for method, path, kw, status in CASES:
            if node is not leader and _redirected_unread(method, path, kw, status):
                status = 307  # the leader decides (answered before the body is read)
            async with s.request(method, url(node, path), allow_redirects=False, **kw) as r:
                text = await r.text()
                assert r.status == status, (node.id, method, path, r.status, text)
                if status == 307:
                    assert r.headers["Location"] == url(leader, path), text
                elif method != "HEAD":
                    assert r.headers["Content-Type"].startswith("application/json"), (method, path, text)
                    error = (await r.json())["error"]
                    if status == 413:  # the body limit is named, with the flag that sets it
                        assert f"over {MAX_BODY} bytes" in error and "--max-body" in error, error
    # nothing changed: the same data everywhere, and no command (nor membership) was logged
    after = {n.id: n.sm.data for n in cluster.nodes.values()}  # type: ignore[union-attr]
    assert after == before
    for n in cluster.nodes.values():
        assert n.log_store is not None and n.raft is not None
        logged = await n.log_store.get_log_reader().try_get_log_entries(first_index, n.raft.metrics.last_log_index + 1)
        assert all(type(e.payload) is Blank for e in logged), logged  # at most an election's blank entry
    # every node runs
    for n in cluster.nodes.values():
        assert n.raft is not None and n.raft.metrics.running
        async with s.get(url(n, "/cluster/status")) as r:
            assert r.status == 200
    # and the cluster still commits
    leader = await asyncio.wait_for(cluster.wait_leader(), 10)
    async with s.put(url(leader, "/kv/k"), data="after") as r:
        assert r.status == 200
        index = (await r.json())["index"]
    await cluster.wait_applied(index)
    assert all(n.sm.get("k") == "after" for n in cluster.nodes.values())  # type: ignore[union-attr]
    # 405 names the allowed methods
    async with s.post(url(leader, "/kv/k"), data="v") as r:
        assert r.status == 405 and "PUT" in r.headers["Allow"]


async def test_garbage_on_the_http_port(cluster: KvCluster, caplog: pytest.LogCaptureFixture) -> None:
    leader = await cluster.wait_leader()
    host, port = leader.opts.http_addr.rsplit(":", 1)
    for junk in (b"\x00\x01\x02garbage\r\n\r\n", b"GET /kv/k HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                 b"PUT /kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nshort"):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(junk)
        await writer.drain()
        if junk.endswith(b"short"):
            writer.close()  # body cut short: the request must not be applied
        else:
            line = await asyncio.wait_for(reader.readline(), 5)
            assert line.split()[1].startswith(b"4"), line
            writer.close()
        await writer.wait_closed()
    s = cluster.session
    assert s is not None
    async with s.get(url(leader, "/kv/k?consistency=local")) as r:
        assert r.status == 404  # the cut-short PUT wrote nothing
    async with s.put(url(leader, "/kv/k"), data="fine") as r:
        assert r.status == 200
    # a client that disconnects mid-request changes nothing and harms nothing
    assert leader.raft is not None and leader.raft.metrics.running
    # ... nor is it logged as the service's failure (it was an ERROR with a traceback)
    errors = [r for r in caplog.records if r.name == "openraft_py.kv.http_api" and r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    # the explicit identity coding is no coding
    async with s.put(url(leader, "/kv/k"), data="plain", headers={"Content-Encoding": "identity"}) as r:
        assert r.status == 200


REPEATED_KEYS: list[tuple[str, bytes, str]] = [
    # msgspec (as json.loads) kept the last value: this one made node 1 the only voter
    ("/cluster/members", b'{"voters": [1, 2, 3], "voters": [1]}', "voters"),
    ("/cluster/transfer", b'{"to": 2, "to": 3}', "to"),
    ("/kv/k/cas", b'{"expected": null, "value": "x", "expected": "y"}', "expected"),
    ("/cluster/learners", b'{"id": 4, "raft_addr": "h:1", "http_addr": "h:2", "id": 5}', "id"),
    # in an object inside the body
    ("/cluster/init", b'{"members": {"1": {"raft_addr": "h:1", "http_addr": "h:2", "raft_addr": "h:3"}}}', "raft_addr"),
]
"""Bodies naming a key twice (path, body, the key): which value counts depends on the
parser, so the request is ambiguous."""


async def test_a_key_given_twice_in_a_json_body_is_a_400_naming_it(cluster: KvCluster) -> None:
    """A JSON body naming a key twice is refused 400 ("the key 'voters' is given twice"),
    nothing done: the membership, the leader and the data stay as they were."""
    leader = await cluster.wait_leader()
    s = cluster.session
    assert s is not None
    before = leader.status()
    for path, body, key in REPEATED_KEYS:
        async with s.post(url(leader, path), data=body, allow_redirects=False) as r:
            text = await r.text()
            assert r.status == 400, (path, body, r.status, text)
            assert (await r.json())["error"] == f"invalid body: the key {key!r} is given twice", text
    after = leader.status()
    assert (after["voters"], after["learners"], after["leader_id"]) == (
        before["voters"], before["learners"], before["leader_id"])
    async with s.get(url(leader, "/kv/k")) as r:
        assert r.status == 404  # the cas wrote nothing


INVALID_STRINGS: list[tuple[str, bytes, str]] = [
    # a high surrogate escape followed by no low one: msgspec said "Input data was truncated"
    ("/kv/k/cas", b'{"expected": null, "value": "\\ud800"}', "lone UTF-16 surrogate escape '\\ud800' at byte 29"),
    ("/kv/k/cas", b'{"expected": null, "value": "a\\uD83Dz"}', "lone UTF-16 surrogate escape '\\uD83D' at byte 30"),
    ("/cluster/transfer", b'{"\\udbff": 2}', "lone UTF-16 surrogate escape '\\udbff' at byte 2"),
    ("/cluster/members", b'{"voters": [1], "retain": "\\ud800\\ud800"}', "surrogate escape '\\ud800' at byte 27"),
    ("/cluster/learners", b'{"id": 4, "raft_addr": "\\udc00:1", "http_addr": "h:2"}',
     "lone UTF-16 surrogate escape '\\udc00' at byte 24"),
    ("/cluster/init", b'{"members": {"1": {"raft_addr": "h:1", "http_addr": "h\\ud800"}}}',
     "lone UTF-16 surrogate escape '\\ud800' at byte 54"),
    # bytes that are not UTF-8: the byte and where it is are named
    ("/kv/k/cas", b'{"expected": null, "value": "\xff"}', "not valid UTF-8: byte 0xff at byte 29"),
    ("/cluster/transfer", b'{"\xc3(": 2}', "not valid UTF-8: byte 0xc3 at byte 2"),
]
"""JSON bodies with a string that is not Unicode text (path, body, what the 400 names)."""


async def test_a_400_quotes_a_long_name_of_the_body_in_part(leader: Any) -> None:
    """A JSON body with an unknown field, or a member id given twice, whose name is 200 000
    characters long: the 400 quoted the name whole (an error of 200 KB, printed by the
    command line as its one line). It is cut now, with its length, as the command line
    quotes a long argument (``argtypes.quoted``)."""
    name = "a" * 200_000
    s = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    async with s:
        body = b'{"' + name.encode() + b'": 2}'
        async with s.post(url(leader, "/cluster/transfer"), data=body) as r:
            error = (await r.json())["error"]
            assert r.status == 400, error
        assert error.startswith("invalid body: Object contains unknown field `aaaa") and len(error) < 400, \
            (len(error), error[:100])
        member = b'{"raft_addr": "127.0.0.1:1", "http_addr": "127.0.0.1:2"}'
        body = b'{"members": {"' + name.encode() + b'": ' + member + b', "' + name.encode() + b'": ' + member + b'}}'
        async with s.post(url(leader, "/cluster/init"), data=body) as r:
            error = (await r.json())["error"]
            assert r.status == 400, error
        assert error.startswith("invalid body: the key 'aaaa") and error.endswith("(200000 characters) is given twice"), \
            (len(error), error[:100], error[-100:])
        assert len(error) < 400, len(error)


async def test_the_byte_offsets_of_an_error_count_a_byte_order_mark_too(leader: Any) -> None:
    """A JSON body after a UTF-8 byte order mark (which the service ignores) that is refused:
    the byte offsets of the error counted from after the mark, three bytes short of the
    body the caller sent (its "byte 29" was at byte 32 of the file). They count from the
    body's first byte now, on every path that takes JSON; a mark alone is an empty body."""
    s = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    async with s:
        for path, body, named in INVALID_STRINGS:
            what, _, at = named.rpartition(" at byte ")
            async with s.post(url(leader, path), data=http_api._BOM + body) as r:
                error = (await r.json())["error"]
                assert r.status == 400, (path, body, r.status, error)
            assert f"{what} at byte {int(at) + 3}" in error, (path, body, error)
        async with s.post(url(leader, "/cluster/transfer"), data=http_api._BOM + b'{"to": 1} x') as r:
            error = (await r.json())["error"]
            assert r.status == 400 and error == "body is not valid JSON: JSON is malformed: trailing characters (byte 14)", error  # (11 without the mark)
        for body in (http_api._BOM, b""):
            async with s.post(url(leader, "/cluster/transfer"), data=body) as r:
                error = (await r.json())["error"]
                assert r.status == 400 and error == "a JSON body is required", (body, error)


async def test_a_json_string_that_is_not_unicode_text_is_a_400_saying_so(leader: Any) -> None:
    """A JSON body whose string holds a lone surrogate escape (``"\\ud800"``: UTF-8 cannot
    hold it) was answered 400 "body is not valid JSON: Input data was truncated" (msgspec's
    message for a high surrogate not followed by a low one), which sent the caller looking
    for a cut-short body. Every path that takes JSON names the escape and where it is; one
    with bytes that are not UTF-8 names the byte; a body that is cut short still says so;
    a pair of surrogate escapes (one character) is taken."""
    s = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    async with s:
        for path, body, named in INVALID_STRINGS:
            async with s.post(url(leader, path), data=body) as r:
                text = await r.text()
                assert r.status == 400, (path, body, r.status, text)
                error = (await r.json())["error"]
                assert named in error and "truncated" not in error, (path, body, error)
                assert error.startswith("body is not valid JSON: "), error
        async with s.post(url(leader, "/kv/k/cas"), data=b'{"expected": null, "value": "ab') as r:
            assert r.status == 400 and "truncated" in (await r.json())["error"]
        # A UTF-8 byte order mark before the JSON (what some editors and Windows tools
        # write) means nothing (RFC 8259 section 8.1: a parser may ignore it); it was a 400
        # "invalid character (byte 0)".
        async with s.post(url(leader, "/cluster/transfer"), data=b'\xef\xbb\xbf{"to": 1}') as r:
            assert r.status == 200, await r.text()
        async with s.post(url(leader, "/kv/k/cas"), data=b'{"expected": null, "value": "\\ud83d\\ude00 \\\\ud800"}') as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["ok"] is True
        async with s.get(url(leader, "/kv/k?consistency=local")) as r:
            assert r.status == 200 and await r.text() == "\U0001f600 \\ud800"
    assert leader.raft is not None and leader.raft.metrics.running


async def test_an_id_of_thousands_of_digits_is_a_plain_400(cluster: KvCluster) -> None:
    """A node id in a path or a JSON key too long for Python's int conversion is refused
    as out of range, like any id over MAX_NODE_ID: it was answered "ValueError: Exceeds the
    limit (4300 digits) for integer string conversion ... use sys.set_int_max_str_digits()",
    advice for a Python programmer, not for the API's client."""
    leader = await cluster.wait_leader()
    s = cluster.session
    assert s is not None
    digits = "9" * 5000
    init = json.dumps({"members": {digits: {"raft_addr": "h:1", "http_addr": "h:2"}}}).encode()
    for method, path, body in (("DELETE", "/cluster/learners/" + digits, b""), ("POST", "/cluster/init", init),
                               ("DELETE", "/cluster/learners/" + "0" * 5000 + "99", b"")):
        async with s.request(method, url(leader, path), data=body) as r:
            text = await r.text()
            assert r.status in (400, 404), (method, r.status, text)
            error = (await r.json())["error"]
            assert "set_int_max_str_digits" not in error and len(error) < 300, error
            if r.status == 400:
                assert f"must be within [0, {MAX_NODE_ID}]" in error, error
            else:  # leading zeros: node 99, a plain id, and no learner
                assert "99" in error, error


MALFORMED_HTTP: list[tuple[bytes, str]] = [
    (b"PUT /kv/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
     "Invalid character in chunk size"),
    (b"PUT /kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nxyz", "Invalid character in Content-Length"),
    (b"PUT /kv/k HTTP/1.1 extra\r\nHost: x\r\n\r\n", "Bad status line"),
    (b"GET /cluster/status HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", "Invalid header token"),
]
"""Requests aiohttp's parser refuses before the API sees them, and what its answer says."""


async def test_malformed_http_is_a_400_logged_in_one_line(cluster: KvCluster, caplog: pytest.LogCaptureFixture) -> None:
    """A request that is not well-formed HTTP (a bad chunk size, Content-Length or request
    line, a bad header name) is answered 400 by aiohttp's parser, which closes the
    connection, and is logged as the client's mistake: one line at INFO naming what was
    wrong, no traceback (it was an ERROR with aiohttp's traceback, every time). The answer
    is the API's JSON error (``JsonParserErrors``; it was aiohttp's plain text)."""
    caplog.set_level(logging.INFO, logger="openraft_py.kv.http_api.server")
    leader = await cluster.wait_leader()
    host, port = leader.opts.http_addr.rsplit(":", 1)
    for junk, why in MALFORMED_HTTP:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(junk)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 5)  # to EOF: the server closes
        finally:
            writer.close()
            await writer.wait_closed()
        assert answer.split(b"\r\n", 1)[0].split()[1] == b"400", answer
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b"Content-Type: application/json" in head, answer
        assert why in json.loads(body)["error"], answer
    noisy = [r for r in caplog.records if r.levelno > logging.INFO or r.exc_info or r.exc_text]
    assert not noisy, [(r.name, r.levelname, r.getMessage()) for r in noisy]
    lines = [r.getMessage() for r in caplog.records if r.name == "openraft_py.kv.http_api.server"]
    for _, why in MALFORMED_HTTP:
        told = [line for line in lines if why in line and "not a well-formed HTTP request" in line]
        assert len(told) == 1 and "\n" not in told[0], lines
    s = cluster.session
    assert s is not None
    async with s.get(url(leader, "/kv/k?consistency=local")) as r:
        assert r.status == 404  # none of them wrote anything
    async with s.put(url(leader, "/kv/k"), data="fine") as r:
        assert r.status == 200


async def test_a_coded_body_is_refused_whatever_headers_carry_the_coding(cluster: KvCluster) -> None:
    """A value is the body's bytes as sent. A ``Transfer-Encoding`` other than ``chunked``
    (``gzip, chunked``) is answered 501 before the body is read: it
    was stored as the value as sent, still coded (aiohttp's parser only takes the chunks
    apart). A ``Content-Encoding`` is refused (415) also when a first header says
    ``identity`` and a second one ``gzip`` (only the first was looked at). Plain chunked
    bodies are taken as before."""
    leader = await cluster.wait_leader()

    async def send(headers: bytes) -> tuple[int, bytes]:
        status, _, body = await _raw_answer(leader.opts.http_addr, b"PUT /kv/k HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                            + headers + b"\r\n3\r\nabc\r\n0\r\n\r\n")
        return status, body

    for headers, status, named in (
        (b"Transfer-Encoding: gzip, chunked\r\n", 501, "Transfer-Encoding 'gzip, chunked'"),
        (b"Transfer-Encoding: chunked\r\nContent-Encoding: identity\r\nContent-Encoding: gzip\r\n", 415,
         "Content-Encoding 'identity, gzip'"),
    ):
        got, body = await send(headers)
        assert got == status, (headers, got, body)
        assert named in json.loads(body)["error"], body
    s = cluster.session
    assert s is not None
    async with s.get(url(leader, "/kv/k?consistency=local")) as r:
        assert r.status == 404  # nothing was stored
    assert (await send(b"Transfer-Encoding: chunked\r\n"))[0] == 200
    async with s.get(url(leader, "/kv/k?consistency=local")) as r:
        assert await r.text() == "abc"


async def test_a_value_over_max_entry_bytes_gets_413_and_the_cluster_goes_on() -> None:
    """A body within ``max_body`` whose entry is over the Raft ``max_entry_bytes`` is refused
    with 413 (``EntryTooLarge``) before anything is logged; smaller writes still commit."""
    c = KvCluster()
    try:
        cfg = {"heartbeat_interval": 50, "election_timeout_min": 1000, "election_timeout_max": 2000,
               "max_entry_bytes": 4096, "max_payload_bytes": 8192}
        await c.start(3, max_body=MAX_BODY, raft_config=cfg)
        leader = await c.wait_leader()
        s = c.session
        assert s is not None
        last = leader.raft.metrics.last_log_index  # type: ignore[union-attr]
        async with s.put(url(leader, "/kv/big"), data=b"x" * 8000) as r:
            body = await r.json()
            assert r.status == 413, body
            assert "EntryTooLarge" in body["error"]
        assert leader.raft.metrics.last_log_index == last  # type: ignore[union-attr]
        async with s.put(url(leader, "/kv/small"), data=b"x" * 100) as r:
            assert r.status == 200
        async with s.get(url(leader, "/kv/small")) as r:
            assert r.status == 200 and await r.read() == b"x" * 100
    finally:
        await c.close()


async def test_a_body_that_does_not_arrive_in_time_is_408(
    cluster: KvCluster, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that sends a request's headers and then trickles its body, or stops, or
    sends a bad chunk size after the headers (which aiohttp's compiled parser drops without
    an error), is answered 408 once ``BODY_GRACE`` + the body's size at ``BODY_MIN_RATE``
    have passed, logged at INFO, and its connection closed. Each of these held its handler
    and connection until the client went away. A body that arrives in time is served."""
    monkeypatch.setattr(http_api, "BODY_GRACE", 0.5)
    monkeypatch.setattr(http_api, "BODY_MIN_RATE", 1024 * 1024 * 1024)
    caplog.set_level(logging.INFO, logger="openraft_py.kv.http_api")
    leader = await cluster.wait_leader()
    host, port = leader.opts.http_addr.rsplit(":", 1)
    head = b"PUT /kv/slow HTTP/1.1\r\nHost: x\r\n"
    for first, later in (
        (head + b"Content-Length: 10\r\n\r\nab", b""),  # stops
        # (a length over max_body is answered 413 before its body is read:
        # test_http_oversize.py, and its drop's deadline is bounded as a body's)
        (head + b"Transfer-Encoding: chunked\r\n\r\n", b"zz\r\nabc\r\n0\r\n\r\n"),  # a bad chunk size, later
        (head + b"Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n", b""),  # no last chunk
    ):
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(first)
            await writer.drain()
            if later:
                await asyncio.sleep(0.1)  # a separate packet, after the headers were parsed
                writer.write(later)
                await writer.drain()
            # The answer, not EOF: aiohttp keeps reading what more comes of the body for its
            # lingering time (10 s) before it closes the connection.
            head_ = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = next(int(h.split(b":")[1]) for h in head_.split(b"\r\n") if h.lower().startswith(b"content-length:"))
            body = await asyncio.wait_for(reader.readexactly(length), 10)
        finally:
            writer.close()
            await writer.wait_closed()
        assert head_.split()[1] == b"408", head_
        assert b"connection: close" in head_.lower(), head_
        assert "did not arrive within" in json.loads(body)["error"], body
    noisy = [r for r in caplog.records if r.levelno > logging.INFO or r.exc_info]
    assert not noisy, [(r.name, r.levelname, r.getMessage()) for r in noisy]
    s = cluster.session
    assert s is not None
    async with s.get(url(leader, "/kv/slow?consistency=local")) as r:
        assert r.status == 404  # none of them wrote anything
    async with s.put(url(leader, "/kv/slow"), data="fine") as r:
        assert r.status == 200


async def _closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """What the server sent on a connection until it closed it (``TimeoutError`` if it has
    not within ``timeout`` seconds)."""
    return await asyncio.wait_for(reader.read(), timeout)


async def test_connections_that_send_no_request_are_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection that sends nothing, or only part of a request's head, is closed once
    ``HTTP_IDLE_TIMEOUT`` has passed, as is one left idle after an answer (each with a 408:
    ``tests/kv/test_idle_kept_alive.py``): each was held for good (aiohttp up to 3.14.0) or for an hour, an
    open file descriptor each, so enough of them (a client leaking its connections) took
    the node's last descriptors and it stopped. A request in progress is not cut: its
    body's own deadline answers it (408)."""
    monkeypatch.setattr(http_api, "HTTP_IDLE_TIMEOUT", 0.5)
    monkeypatch.setattr(http_api, "BODY_GRACE", 3.0)
    c = KvCluster()
    try:
        await c.start(1)
        node = c.nodes[1]
        host, port = node.opts.http_addr.rsplit(":", 1)
        status = b"GET /cluster/status HTTP/1.1\r\nHost: x\r\n\r\n"
        idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        for first in (b"", b"GET /cluster/status HTTP/1.1\r\nHost: x\r\n", status, status + b"GET /clu"):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(first)
            idle.append((reader, writer))
        busy_reader, busy_writer = await asyncio.open_connection(host, int(port))
        busy_writer.write(b"PUT /kv/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        try:
            for i, (reader, _writer) in enumerate(idle):
                got = await _closed_by_server(reader, 10)
                assert got.count(b"HTTP/1.1 200") == (1 if i >= 2 else 0), got
            # Answered, not cut by the idle rule (then aiohttp lingers, reading what more comes).
            answer = await asyncio.wait_for(busy_reader.readuntil(b"\r\n\r\n"), 10)
            assert answer.startswith(b"HTTP/1.1 408"), answer
        finally:
            for _reader, writer in [*idle, (busy_reader, busy_writer)]:
                writer.close()
        assert c.session is not None
        async with c.session.get(url(node, "/cluster/status")) as r:
            assert r.status == 200
    finally:
        await c.close()


async def test_idle_connections_sweep_does_not_need_aiohttp_keepalive(
    cluster: KvCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """``IdleConnections`` alone closes a connection that sends nothing, with a 408 saying
    nothing was read, logging it at INFO (aiohttp's own keep-alive timer, which its later
    versions also arm at a connection's start, is left at twice ``HTTP_IDLE_TIMEOUT`` here:
    150 s)."""
    caplog.set_level(logging.INFO, logger="openraft_py.kv.http_api")
    node = await cluster.wait_leader()
    conns = node.http_conns
    assert conns is not None
    conns.close()
    conns.timeout = 0.3
    conns.start()
    host, port = node.opts.http_addr.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        got = await _closed_by_server(reader, 5)
        assert got.startswith(b"HTTP/1.1 408 ") and http_api.IDLE_NOT_READ.encode() in got, got
    finally:
        writer.close()
    assert any("on which no request came within 0.3s" in r.getMessage() for r in caplog.records)
    assert cluster.session is not None
    async with cluster.session.get(url(node, "/cluster/status")) as r:
        assert r.status == 200


def _put(url: str, body: bytes) -> int | str:
    """``PUT url`` with ``body`` through ``urllib`` (``http.client``: the head, then the body,
    in two writes): the answer's status, or the error."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, method="PUT"), timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError) as e:
        return f"{type(e).__name__}: {e}"


async def test_a_put_over_the_limit_gets_its_503_not_a_broken_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client over the connection limit that sends a request with a body (``urllib``:
    the head, then the body) gets the documented 503: the refused connection is read until
    the client closes it (``REFUSED_LINGER``). It was closed right after the 503, so the
    body's write met a closed connection: 7 to 9 of 10 such PUTs to a ``serve`` failed with
    "[Errno 32] Broken pipe" (``URLError``), the 503 unread."""
    monkeypatch.setattr(http_api, "MAX_HTTP_CONNECTIONS", 4)
    c = KvCluster()
    try:
        await c.start(1)
        node = c.nodes[1]
        host, sport = node.opts.http_addr.rsplit(":", 1)
        held: list[asyncio.StreamWriter] = []
        try:
            assert node._http is not None and node._http.server is not None
            while len(node._http.server.connections) < 4:  # the limit's connections (the cluster's client holds some)
                reader, writer = await asyncio.open_connection(host, int(sport))
                held.append(writer)
                writer.write(b"GET /cluster/status HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 200")
            for size in (10, 100_000):
                got = [await asyncio.to_thread(_put, url(node, "/kv/k"), b"v" * size) for _ in range(10)]
                assert got == [503] * 10, (size, got)
        finally:
            for writer in held:
                writer.close()
    finally:
        await c.close()


def _refused_then_written(host: str, port: int, answered: threading.Event | None = None) -> tuple[bytes, float]:
    """Connect, read until the end of the stream (the 503) leaving the connection open (set
    ``answered``), then write a byte every 20 ms until the node's close shows (an error):
    the answer and the seconds from the connect to that error (at most 10 s)."""
    with socket.create_connection((host, port), timeout=10) as s:
        t0 = time.monotonic()
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        if answered is not None:
            answered.set()
        try:
            while time.monotonic() - t0 < 10:
                s.sendall(b"x")
                time.sleep(0.02)
        except OSError:
            pass
        return data, time.monotonic() - t0


async def test_a_refused_connection_is_read_until_the_client_closes_it_within_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A connection over the limit gets its 503 and the end of the stream at once, and is
    read until the client closes it (so that a request still arriving does not meet a closed
    connection: see ``test_a_put_over_the_limit_gets_its_503_not_a_broken_pipe``), but for
    ``REFUSED_LINGER`` seconds at most; while ``refused_linger_limit`` of them
    linger, one more is closed right after its 503."""
    monkeypatch.setattr(http_api, "MAX_HTTP_CONNECTIONS", 4)
    monkeypatch.setattr(http_api, "REFUSED_LINGER", 0.5)
    monkeypatch.setattr(http_api, "refused_linger_limit", lambda limit: 1)
    c = KvCluster()
    try:
        await c.start(1)
        node = c.nodes[1]
        host, sport = node.opts.http_addr.rsplit(":", 1)
        port = int(sport)
        held: list[asyncio.StreamWriter] = []
        try:
            assert node._http is not None and node._http.server is not None
            while len(node._http.server.connections) < 4:  # the limit's connections (the cluster's client holds some)
                reader, writer = await asyncio.open_connection(host, port)
                held.append(writer)
                writer.write(b"GET /cluster/status HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 200")
            # Refused and left open by the client: read by the node until REFUSED_LINGER.
            answered = threading.Event()
            first = asyncio.ensure_future(asyncio.to_thread(_refused_then_written, host, port, answered))
            assert await asyncio.to_thread(answered.wait, 10)
            # A second while the first lingers: closed right after its 503.
            answer, closed_after = await asyncio.to_thread(_refused_then_written, host, port)
            assert answer.startswith(b"HTTP/1.1 503") and closed_after < 0.4, (answer, closed_after)
            answer, closed_after = await first
            assert answer.startswith(b"HTTP/1.1 503") and b"HTTP connections, its limit" in answer, answer
            assert 0.45 <= closed_after < 5, closed_after
        finally:
            for writer in held:
                writer.close()
    finally:
        await c.close()


def test_refused_connections_linger_a_sixteenth_of_the_limit() -> None:
    """At most a sixteenth of the connection limit of refused connections linger at once
    (at least 1): a burst of refusals holds few descriptors."""
    assert http_api.refused_linger_limit(512) == 32
    assert http_api.refused_linger_limit(128) == 8
    assert http_api.refused_linger_limit(1) == 1


async def test_connections_over_the_limit_are_answered_503_and_closed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A node holds at most ``MAX_HTTP_CONNECTIONS`` HTTP connections (at most half its
    descriptor limit): one more is answered 503 with a JSON error and closed, logged once at
    WARNING, and taken again once connections close (an INFO). Connections that sent nothing
    used to be held without a bound: enough of them took the node's last descriptors, and
    its next file failed ("Too many open files" building a snapshot: the node stopped)."""
    monkeypatch.setattr(http_api, "MAX_HTTP_CONNECTIONS", 6)
    caplog.set_level(logging.INFO, logger="openraft_py.kv.http_api")
    c = KvCluster()
    try:
        await c.start(1)
        node = c.nodes[1]
        host, port = node.opts.http_addr.rsplit(":", 1)
        held: list[asyncio.StreamWriter] = []
        answer = b""
        try:
            for _ in range(10):  # the cluster's own client holds some of the 6
                reader, writer = await asyncio.open_connection(host, int(port))
                held.append(writer)
                writer.write(b"GET /cluster/status HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                if not answer.startswith(b"HTTP/1.1 200"):
                    break
            assert answer.startswith(b"HTTP/1.1 503"), answer
            assert b"connection: close" in answer.lower(), answer
            length = next(int(h.split(b":")[1]) for h in answer.split(b"\r\n") if h.lower().startswith(b"content-length:"))
            error = json.loads(await asyncio.wait_for(reader.readexactly(length), 10))["error"]
            assert "6 HTTP connections, its limit" in error, error
            assert await asyncio.wait_for(reader.read(), 10) == b""  # closed
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "its limit" in r.getMessage()]
            assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
        finally:
            for writer in held:
                writer.close()

        async def served() -> None:  # on a new connection, once the server saw the others close
            while True:
                reader, writer = await asyncio.open_connection(host, int(port))
                try:
                    writer.write(b"GET /cluster/status HTTP/1.1\r\nHost: x\r\n\r\n")
                    if (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200"):
                        return
                finally:
                    writer.close()
                await asyncio.sleep(0.05)

        await asyncio.wait_for(served(), 10)
        assert any("takes HTTP connections again" in r.getMessage() for r in caplog.records)
    finally:
        await c.close()


def test_connection_limits_count_the_descriptors_the_node_holds() -> None:
    """The ports' limits are at most half and a quarter (at least 8) of the descriptors the
    soft limit leaves beyond those the node holds and ``FILES_RESERVE``; the shares of the
    limit alone when it holds few, or when that cannot be told."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    defaults = (http_api.http_connection_limit(), http_api.tcp_connection_limit())
    assert http_api.connection_limits(None) == defaults
    if soft == resource.RLIM_INFINITY:
        pytest.skip("no limit of open files")
    assert http_api.connection_limits(0) == (min(defaults[0], (soft - 16) // 2), min(defaults[1], max(8, (soft - 16) // 4)))
    assert http_api.connection_limits(soft - http_api.FILES_RESERVE - 40) == (20, 10)
    assert http_api.connection_limits(soft - http_api.FILES_RESERVE - 4) == (2, 8)
    assert http_api.connection_limits(soft) == (1, 8)
    assert http_api.open_descriptors() is None or http_api.open_descriptors() > 3  # type: ignore[operator]


async def _raw_answer(addr: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` on a new connection to ``addr``; the answer's status, headers (names in
    lower case) and body, read to EOF (the server closes)."""
    host, port = addr.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.timeout(60)
async def test_a_too_long_request_line_or_header_is_answered_in_json(cluster: KvCluster) -> None:
    """A request line over ``MAX_REQUEST_LINE`` (a key of more than ``MAX_KEY_BYTES``
    percent-encoded, as a client that does not check keys sends it) or a header over
    ``MAX_HEADER_FIELD`` got aiohttp's own plain-text 400 ("400, message: Got more than 13312
    bytes when reading ..."): every other bad request gets the API's JSON ``{"error": ...}``
    (DESIGN section 8), which clients parse. Each is a JSON 400 now, naming the limit, and the
    connection is closed (the rest of the request is not read)."""
    leader = await cluster.wait_leader()
    key = "%C3%A9" * 2400  # 4800 bytes of UTF-8, 14400 characters percent-encoded
    long_line = f"GET /kv/{key} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    long_header = b"GET /cluster/status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    for data, limit in ((long_line, f"{http_api.MAX_REQUEST_LINE} bytes"),
                        (long_header, f"{http_api.MAX_HEADER_FIELD} bytes")):
        status, headers, body = await _raw_answer(leader.opts.http_addr, data)
        assert status == 400, (status, body[:200])
        assert headers.get("content-type", "").startswith("application/json"), (headers, body[:200])
        error = json.loads(body)["error"]
        assert "not a well-formed HTTP request" in error and limit in error, error
        assert len(error) < 1000, len(error)  # (the answer was read to EOF: the connection is closed)


async def test_a_storm_of_bad_requests_is_logged_in_a_bounded_number_of_lines(
    cluster: KvCluster, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that keeps sending malformed requests, or bodies it cuts short, is logged a
    bounded number of times: the first ``burst`` of each kind in a window, then one line
    saying how many more there were once the window is over (said by the idle-connection
    sweep when nothing more comes). Each request was one INFO line: about 2,000 lines a
    second from one client on loopback, at serve's default level."""
    mistakes = http_api._ClientMistakeLog(http_api.log, every=60.0, burst=3)
    monkeypatch.setattr(http_api, "_CLIENT_MISTAKES", mistakes)
    caplog.set_level(logging.INFO, logger="openraft_py.kv.http_api")
    leader = await cluster.wait_leader()
    host, port = leader.opts.http_addr.rsplit(":", 1)
    junk, why = MALFORMED_HTTP[1]
    cut = b"PUT /kv/cut HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc"
    for _ in range(40):
        for data in (junk, cut):
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                writer.write(data)
                await writer.drain()
                if data is junk:
                    await asyncio.wait_for(reader.read(), 5)  # to EOF: the server closes
            finally:
                writer.close()
                await writer.wait_closed()

    def lines(text: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if text in r.getMessage()]

    def seen(kind: str) -> int:
        """The requests of ``kind`` the open window logged or counted."""
        w = mistakes._windows.get(kind)
        return 0 if w is None else w[1] + w[2]

    # Each cut body's read fails once the node has seen the end of its connection, which may
    # come after the client's close returned: wait until all 40 of each kind are accounted.
    await until_true("the 40 cut bodies and malformed requests seen",
                     lambda: seen("requests whose body could not be read") == seen("malformed HTTP requests") == 40)
    assert len(lines("not a well-formed HTTP request")) == 3, lines("not a well-formed")
    assert len(lines("the request body could not be read")) == 3, lines("could not be read")
    assert all("(client 127." in line for line in lines("the request body could not be read"))
    # The windows end (shortened now: the storm, however slow, was in one); the sweep says
    # what they left out, once each.
    mistakes.every = 0.1
    conns = leader.http_conns
    assert conns is not None
    conns.close()
    conns.timeout = 0.2
    conns.start()
    await until_true("the two summary lines", lambda: len(lines("were not logged")) == 2, timeout=10)
    [malformed] = lines("more malformed HTTP requests in")
    assert malformed.startswith("37 more malformed HTTP requests in "), malformed
    assert why in malformed, malformed
    [cut_short] = lines("more requests whose body could not be read in")
    assert cut_short.startswith("37 more requests whose body could not be read in "), cut_short
    noisy = [r for r in caplog.records if r.levelno > logging.INFO or r.exc_info]
    assert not noisy, [(r.name, r.levelname, r.getMessage()) for r in noisy]


async def test_a_node_s_stop_says_what_the_http_log_left_out_of_its_last_minute(
    cluster: KvCluster, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A storm that ends with the node's stop inside its window: the count of what was not
    logged is said at the stop, before "stopped" (it was never said)."""
    mistakes = http_api._ClientMistakeLog(http_api.log, every=3600.0, burst=1)
    monkeypatch.setattr(http_api, "_CLIENT_MISTAKES", mistakes)
    caplog.set_level(logging.INFO, logger="openraft_py.kv")
    node = cluster.nodes[2]
    host, port = node.opts.http_addr.rsplit(":", 1)
    junk, _why = MALFORMED_HTTP[1]
    for _ in range(4):
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(junk)
            await writer.drain()
            await asyncio.wait_for(reader.read(), 5)  # to EOF: the server closes
        finally:
            writer.close()
            await writer.wait_closed()

    def lines(text: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if text in r.getMessage()]

    await until_true("the first line", lambda: len(lines("not a well-formed HTTP request")) == 1)
    assert lines("were not logged") == []
    await node.stop()
    [said] = lines("were not logged")
    assert said.startswith("3 more malformed HTTP requests in "), said
    messages = [r.getMessage() for r in caplog.records]
    assert messages.index(said) < len(messages) - 1 - messages[::-1].index("stopped"), messages[-5:]


def test_repeated_json_key_sees_escaped_and_nested_keys_and_builds_no_decoder_per_call(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``repeated_json_key`` (run on every ``cas`` body, a data route) names a key written
    once plainly and once escaped (msgspec decodes both to the same field), in an object at
    any depth, and not the same key in two objects; and it builds no ``json.JSONDecoder`` per
    call: ``json.loads`` with a hook did, 15 us of a small body's 20."""
    import json

    from openraft_py.kv.argtypes import repeated_json_key

    assert repeated_json_key(b'{"expected": null, "value": "x", "\\u0076alue": "y"}') == "value"
    assert repeated_json_key('{"members": {"1": {"a": 1}, "2": {"a": 2, "b": {"c": 1, "c": 2}}}}') == "c"
    assert repeated_json_key(b'{"voters": [{"x": 1}, {"x": 2}], "x": 3}') is None
    built = []
    real_init = json.JSONDecoder.__init__

    def counting_init(self: json.JSONDecoder, *a: Any, **kw: Any) -> None:
        built.append(kw)
        real_init(self, *a, **kw)

    monkeypatch.setattr(json.JSONDecoder, "__init__", counting_init)
    for _ in range(3):
        assert repeated_json_key(b'{"expected": "a", "value": "b"}') is None
    assert built == [], f"{len(built)} decoders built for 3 calls"


@pytest.mark.parametrize("query,message", [
    # A valid value given twice was said to be none of the three.
    ("consistency=local&consistency=local", "consistency is given 2 times: give it once"),
    ("consistency=local&consistency=lease", "consistency is given 2 times: give it once"),
    # The value refused was not named.
    ("consistency=strong", "consistency must be one of linearizable, lease, local, got 'strong'"),
    ("consistency=", "consistency must be one of linearizable, lease, local, got ''"),
])
async def test_a_bad_consistency_is_a_400_saying_what_is_wrong(query: str, message: str) -> None:
    from aiohttp.test_utils import make_mocked_request

    with pytest.raises(http_api.BadRequest) as err:  # (refused before the handler asks its node)
        await http_api.kv_get(make_mocked_request("GET", f"/kv/k?{query}"))
    assert str(err.value) == message


@pytest.mark.parametrize("method,path,message", [
    ("GET", "/kv/k?consistancy=local", "unknown query parameter 'consistancy': GET /kv/{key} takes consistency"),
    ("GET", "/kv/k?consistency=local&x=1&y=2", "unknown query parameters 'x', 'y': GET /kv/{key} takes consistency"),
    ("PUT", "/kv/k?consistency=local", "unknown query parameter 'consistency': PUT /kv/{key} takes none"),
    ("POST", "/cluster/transfer?to=2", "unknown query parameter 'to': POST /cluster/transfer takes none"),
])
async def test_an_unknown_query_parameter_is_a_400_naming_it_on_every_node(
        cluster: KvCluster, method: str, path: str, message: str) -> None:
    """A parameter the route does not take is refused, on a follower too (before any redirect),
    and nothing is done: it was ignored, so ``?consistancy=local`` (a typo) read linearizably
    and a follower redirected it, and ``PUT /kv/k?consistency=local`` wrote."""
    leader = await cluster.wait_leader()
    s = cluster.session
    assert s is not None
    before = leader.raft.metrics.last_log_index  # type: ignore[union-attr]
    for node in (leader, *cluster.followers(leader)):
        async with s.request(method, url(node, path), data=b'{"to": 2}' if method != "GET" else None,
                             allow_redirects=False) as r:
            assert r.status == 400, (node.id, r.status, await r.text())
            assert (await r.json())["error"] == message
    assert leader.raft.metrics.last_log_index == before  # type: ignore[union-attr]
    assert leader.raft.is_leader()  # type: ignore[union-attr]  # (the transfer was not made)


def test_a_connection_protocol_that_cannot_be_adopted_is_served_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    # An aiohttp whose RequestHandler refused a class change (a compiled type) made every
    # connection of the node fail in the listener's protocol factory: now the connection is
    # aiohttp's own (its parser errors in plain text).
    class Compiled(int):  # (int's subclasses refuse a __class__ assignment, as a compiled type does)
        pass

    handler = Compiled(7)
    monkeypatch.setattr(http_api.web, "RequestHandler", Compiled)
    assert http_api.JsonParserErrors.adopt(handler) is handler  # type: ignore[arg-type]
    assert type(handler) is Compiled
