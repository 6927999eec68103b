"""Units of the key-value service: the conditional delete of ``KvStateMachine``, the node
addresses in a membership, the network factory's address resolution, and ``serve``'s
flags."""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import tempfile
from typing import Any

import pytest

from openraft_py.errors import RPCError
from openraft_py.kv.commands import KvStateMachine, encode_cas
from openraft_py.kv.node import ServeOptions
from openraft_py.kv.nodes import KvNetworkFactory, NodeAddrs, addrs_of, check_addr, check_member_addr, node_of
from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.kv.server import add_serve_arguments, options_from_args
from openraft_py.network.tcp import TcpNetworkFactory
from openraft_py.storage.memory import KvSet, encode_kv
from openraft_py.types import AppendEntriesRequest, BasicNode, Blank, Entry, LogId, Normal, Vote

pytestmark = pytest.mark.timeout(30)


def entries(*datas: bytes | None) -> list[Entry]:
    return [Entry(LogId(1, i), Blank() if d is None else Normal(d)) for i, d in enumerate(datas, 1)]


async def test_cas_delete_applies_in_log_order_and_survives_a_restart() -> None:
    d = tempfile.mkdtemp(prefix="kv-sm-")
    try:
        sm = await KvStateMachine.open(d)
        batch = entries(
            encode_kv(KvSet("k", "a")),
            encode_cas("k", "a", None),  # matches: deleted
            None,
            encode_cas("k", None, None),  # absent matches None: ok, stays absent
            encode_kv(KvSet("k", "b")),
            encode_cas("k", "a", None),  # mismatch: kept
            encode_cas("k", "b", "c"),  # the ordinary cas
            b"opaque",
        )
        out = await sm.apply(batch)
        assert out == [None, (True, None), None, (True, None), None, (False, "b"), (True, "c"), None]
        assert sm.data == {"k": "c"}
        applied, _ = await sm.applied_state()
        assert applied == LogId(1, 8)
        assert await sm.apply(entries(encode_cas("k", "c", None))) == [(True, None)]
        await sm.aclose()
        # a plain RocksStateMachine sees the conditional delete as opaque data; ours reopens
        sm = await KvStateMachine.open(d)
        assert sm.data == {} and (await sm.applied_state())[0] == LogId(1, 1)
        await sm.aclose()
        plain = await RocksStateMachine.open(d)
        assert await plain.apply([Entry(LogId(2, 2), Normal(encode_cas("x", None, None)))]) == [None]
        await plain.aclose()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_node_addresses_round_trip() -> None:
    n = node_of("127.0.0.1:21001", "127.0.0.1:28001")
    assert addrs_of(n) == NodeAddrs("127.0.0.1:21001", "127.0.0.1:28001")
    assert addrs_of(BasicNode("10.0.0.1:5")) == NodeAddrs("10.0.0.1:5", "")
    assert addrs_of(BasicNode("{broken")) == NodeAddrs("", "")
    assert addrs_of(BasicNode("no port")) == NodeAddrs("", "")
    assert addrs_of(node_of("[::1]:7", "[::1]:8")) == NodeAddrs("[::1]:7", "[::1]:8")
    for bad in ("", "host", "h:0", "h:70000", ":5", "h:x"):
        with pytest.raises(ValueError):
            node_of(bad, "h:1")
        with pytest.raises(ValueError):
            node_of("h:1", bad)
    with pytest.raises(TypeError):
        node_of(5, "h:1")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["a b:1", "a\r\nX-Evil: 1\r\nb:2", "h/x:1", "evil.example/x?:2", "u@h:1",
                                 "::1:80", "[zz]:1", "[fe80::1%a b]:1", "[fe80::1%]:1", "h\u00e9:1",
                                 "h:\u0662\u0661\u0660\u0660\u0661", "h:2100\uff11"])
def test_an_address_is_a_host_name_or_ip_and_a_port(bad: str) -> None:
    """The addresses go into URLs (the redirect's ``Location``) and headers: a host with a
    space, a control character, a ``/`` or an unbracketed IPv6 address is refused, and so
    is a port in digits other than ASCII (``int`` reads Arabic-Indic or full-width digits:
    such a port was taken, and a redirect to that node had it in its ``Location``)."""
    with pytest.raises(ValueError, match="not"):
        check_addr(bad, "--raft-addr")
    with pytest.raises(ValueError):
        node_of("h:1", bad)


def test_a_wildcard_address_is_refused_in_the_membership_only() -> None:
    """``0.0.0.0`` is good to listen on, but a peer dialling it reaches its own machine."""
    for wildcard in ("0.0.0.0:21001", "[::]:21001", "[0:0::0]:5"):
        assert check_addr(wildcard, "--raft-addr") == wildcard
        with pytest.raises(ValueError, match="wildcard"):
            check_member_addr(wildcard, "raft_addr")
        with pytest.raises(ValueError, match="wildcard"):
            node_of("h:1", wildcard)
    for good in ("localhost:1", "10.0.0.4:21001", "[::1]:7", "[fe80::1%eth0]:7", "node_3.example-x.org:5"):
        assert check_member_addr(good, "raft_addr") == good


async def test_factory_connects_to_the_raft_address() -> None:
    tcp = TcpNetworkFactory(1, "c")
    errors: list[Any] = []
    f = KvNetworkFactory(tcp, lambda *a: errors.append(a))
    client = f.new_client(2, node_of("127.0.0.1:21002", "127.0.0.1:28002"))
    assert "127.0.0.1:21002" in repr(client._inner)
    await f.close()


async def test_started_append_entries_reports_its_errors() -> None:
    """The KV client's ``send_append_entries`` (the leader's path for an idle sender)
    reports an ``RPCError`` to the per-peer counters like ``append_entries``: here, nothing
    listens at the address, so the connection is refused when the answer is awaited."""
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    errors: list[Any] = []
    f = KvNetworkFactory(TcpNetworkFactory(1, "c", connect_timeout=1.0), lambda *a: errors.append(a))
    client = f.new_client(2, node_of(f"127.0.0.1:{port}", "127.0.0.1:28002"))
    req = AppendEntriesRequest(Vote.new(1, 1, True), None, [], None)
    answer = client.send_append_entries(req)
    with pytest.raises(RPCError):
        await answer
    assert [(t, rpc) for t, rpc, _ in errors] == [(2, "append_entries")]
    await f.close()


async def test_a_forgotten_peer_is_reported_left_and_its_later_errors_are_not_counted() -> None:
    """``forget`` (the peer left the membership) tells ``on_forget``; a call on a client made
    before fails (``Unreachable``: it left) without being counted, and a new client (the
    peer added again) counts again."""
    errors: list[Any] = []
    left: list[Any] = []
    f = KvNetworkFactory(TcpNetworkFactory(1, "c", connect_timeout=1.0), lambda *a: errors.append(a), left.append)
    old = f.new_client(2, node_of("127.0.0.1:21002", "127.0.0.1:28002"))
    f.forget(2)
    assert left == [2]
    req = AppendEntriesRequest(Vote.new(1, 1, True), None, [], None)
    with pytest.raises(RPCError, match="left the membership"):
        await old.append_entries(req)
    assert errors == []
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    again = f.new_client(2, node_of(f"127.0.0.1:{port}", "127.0.0.1:28002"))
    with pytest.raises(RPCError):
        await again.append_entries(req)
    assert [(t, rpc) for t, rpc, _ in errors] == [(2, "append_entries")]
    await f.close()


def test_metrics_forget_peer_removes_only_that_peers_error_series() -> None:
    from openraft_py.errors import Timeout, Unreachable
    from openraft_py.kv.metrics import KvMetrics

    m = KvMetrics(lambda: None)
    m.on_rpc_error(2, "vote", Unreachable("x"))
    m.on_rpc_error(2, "append_entries", Timeout("x"))
    m.on_rpc_error(3, "vote", Unreachable("x"))
    m.forget_peer(2)
    m.forget_peer(9)  # never seen: nothing happens
    text = m.render().decode()
    assert 'peer="2"' not in text
    assert 'openraft_rpc_errors_total{error="Unreachable",peer="3",rpc="vote"} 1.0' in text
    m.on_rpc_error(2, "vote", Unreachable("x"))  # counted from zero if it comes back
    assert 'openraft_rpc_errors_total{error="Unreachable",peer="2",rpc="vote"} 1.0' in m.render().decode()


def test_submitted_append_entries_reports_its_errors() -> None:
    """The KV client's ``submit_append_entries`` forwards the callback's results and reports
    an ``RPCError``, given to the callback or raised at the call, to the per-peer counters."""
    from openraft_py.errors import NetworkError, Timeout
    from openraft_py.kv.nodes import _CountingClient
    from openraft_py.types import AppendEntriesResponse

    vote = Vote.new(1, 1, True)
    ok = AppendEntriesResponse(vote, True, None)

    class Inner:
        def __init__(self) -> None:
            self.results: list[Any] = [ok, Timeout("no answer within 1s")]

        def submit_append_entries(self, req: Any, option: Any, reply: Any) -> object:
            if not self.results:
                raise NetworkError("cannot frame it")
            reply(self.results.pop(0))
            return object()

    errors: list[Any] = []
    client = _CountingClient(Inner(), 2, lambda *a: errors.append(a))  # type: ignore[arg-type]
    got: list[Any] = []
    req = AppendEntriesRequest(vote, None, [], None)
    assert client.submit_append_entries(req, None, got.append) is not None  # type: ignore[arg-type]
    assert got == [ok] and errors == []
    client.submit_append_entries(req, None, got.append)  # type: ignore[arg-type]
    assert isinstance(got[1], Timeout) and [(t, rpc) for t, rpc, _ in errors] == [(2, "append_entries")]
    with pytest.raises(NetworkError):
        client.submit_append_entries(req, None, got.append)  # type: ignore[arg-type]
    assert len(errors) == 2 and len(got) == 2


def parse(argv: list[str]) -> argparse.Namespace:
    return add_serve_arguments(argparse.ArgumentParser()).parse_args(argv)


BASE = ["--id", "1", "--raft-addr", "127.0.0.1:21001", "--http-addr", "127.0.0.1:28001", "--data-dir", "/tmp/x"]


def base_with(flag: str, value: str) -> list[str]:
    """``BASE`` with ``flag`` (one of its flags) set to ``value`` instead: a flag is given once."""
    argv = list(BASE)
    argv[argv.index(flag) + 1] = value
    return argv


def test_serve_flags() -> None:
    o = options_from_args(parse(BASE + ["--cluster-name", "prod", "--log-format", "json", "--log-level", "debug",
                                        "--raft-config", '{"heartbeat_interval": 20}']))
    assert (o.id, o.cluster_name, o.log_format, o.log_level) == (1, "prod", "json", "DEBUG")
    assert o.raft_config == {"heartbeat_interval": 20}
    for policy in ('{"logs_since_last_n": 100}', '{"logs_since_last_n": null}'):  # the policy's one field
        assert options_from_args(parse(BASE + ["--raft-config", f'{{"snapshot_policy": {policy}}}']))
    # A field of the policy misspelled (or the method's name) was dropped: the default policy ran.
    with pytest.raises(ValueError, match=r"--raft-config: Object contains unknown field `logs_since_last` - at "
                       r"`\$\.snapshot_policy`"):
        options_from_args(parse(BASE + ["--raft-config", '{"snapshot_policy": {"logs_since_last": 100}}']))
    for argv in (base_with("--raft-addr", "nope"), base_with("--http-addr", "h:0"), BASE + ["--tls-cert", "c.pem"],
                 BASE + ["--tls-ca", "ca.pem"], BASE + ["--raft-config", '{"heartbeat_interval": 1000}'],
                 BASE + ["--raft-config", '{"no_such_field": 1}']):
        with pytest.raises(ValueError):
            options_from_args(parse(argv))
    for argv in (BASE + ["--log-format", "xml"], base_with("--id", "x"), base_with("--id", "-3"), base_with("--id", "1_0"),
                 BASE + ["--raft-config", "[1]"], BASE + ["--id", "2"]):  # (the last: a flag given twice)
        with pytest.raises(SystemExit):
            parse(argv)
    # a cluster name in --raft-config: only the one --cluster-name gives (it would be overridden)
    with pytest.raises(ValueError, match="cluster_name 'other' differs from --cluster-name 'prod'"):
        options_from_args(parse(BASE + ["--cluster-name", "prod", "--raft-config", '{"cluster_name": "other"}']))
    o = options_from_args(parse(BASE + ["--cluster-name", "prod", "--raft-config", '{"cluster_name": "prod"}']))
    assert o.cluster_name == "prod"


def test_serve_names_a_tls_file_it_cannot_use(tmp_path: Any) -> None:
    """A missing TLS file is a usage error naming the flag and the path (``ssl`` says only
    "No such file or directory"); a file that is not a PEM certificate is refused at start
    naming the flag (tests/kv/test_tls.py has the rest)."""
    from openraft_py.kv.node import tls_contexts

    with pytest.raises(ValueError, match=r"--tls-key: no such file: '/nonexistent/k.pem'"):
        options_from_args(parse(BASE + ["--tls-cert", __file__, "--tls-key", "/nonexistent/k.pem"]))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    o = options_from_args(parse(BASE + ["--tls-cert", str(junk), "--tls-key", str(junk)]))
    with pytest.raises(ValueError, match=r"--tls-cert '.*junk.pem': no certificate in it"):
        tls_contexts(o)


def test_serve_refuses_a_config_whose_frames_the_raft_port_cannot_carry() -> None:
    """A request budget over the raft port's frame limit is refused at start (exit code 2),
    and the KV network factory passes ``Raft.new`` the TCP factory's check."""
    from openraft_py.config import Config
    from openraft_py.errors import ConfigError
    from openraft_py.kv.nodes import KvNetworkFactory
    from openraft_py.network.tcp import DEFAULT_MAX_FRAME_SIZE, TcpNetworkFactory

    huge = {"max_payload_bytes": 2 * DEFAULT_MAX_FRAME_SIZE, "max_entry_bytes": 1024}
    with pytest.raises(ValueError, match=r"--raft-config: an AppendEntries of Config\.max_payload_bytes=67108864 in "
                       r"up to max_payload_entries=300 entries needs \d+ bytes with its framing, over the raft "
                       r"port's frame limit of 33554432 bytes"):
        options_from_args(parse(BASE + ["--raft-config", json.dumps(huge)]))
    # Each entry has 64 bytes of framing: it was max_payload_bytes or snapshot_max_chunk_size
    # that were named, neither of them set.
    with pytest.raises(ValueError, match=r"--raft-config: an AppendEntries of Config\.max_payload_bytes=31457280 in "
                       r"up to max_payload_entries=65536 entries needs 35651840 bytes"):
        options_from_args(parse(BASE + ["--raft-config", '{"max_payload_entries": 65536, "max_payload_bytes": 31457280}']))
    # More entries than a receiver decodes (wire.MAX_ENTRIES): refused whatever the frame.
    with pytest.raises(ValueError, match=r"--raft-config: Config\.max_payload_entries=65537 is over the 65536 entries "
                       r"an AppendEntries may carry over TCP .*set max_payload_entries to at most 65536"):
        options_from_args(parse(BASE + ["--raft-config", '{"max_payload_entries": 65537, "max_payload_bytes": 1024, '
                                        '"max_entry_bytes": 1024}']))
    with pytest.raises(ValueError, match=r"--raft-config: a snapshot chunk of Config\.snapshot_max_chunk_size="
                       r"40000000 needs 40065536 bytes with its framing, over the raft port's frame limit"):
        options_from_args(parse(BASE + ["--raft-config", '{"snapshot_max_chunk_size": 40000000}']))
    factory = KvNetworkFactory(TcpNetworkFactory(1, "kv-test"))
    with pytest.raises(ConfigError, match="max_payload_bytes"):
        factory.check_config(Config(**huge))
    with pytest.raises(ConfigError, match=r"TcpNetworkFactory: Config\.max_payload_entries=65537 is over the 65536"):
        factory.check_config(Config(max_payload_entries=65537, max_payload_bytes=1024, max_entry_bytes=1024))
    factory.check_config(Config(max_payload_entries=65536, max_payload_bytes=1024, max_entry_bytes=1024))
    factory.check_config(Config())  # the defaults fit


class _FakeNode:
    """What ``_map_error`` reads of a node: its id, options, leader lookup and ``raft``
    (``None``: no membership, so no node is said to be outside it)."""

    def __init__(self, leader: tuple[int | None, str | None]) -> None:
        self.id = 1
        self.raft = None
        self._leader = leader

        class _O:
            http_addr = "127.0.0.1:28001"

        self.opts = _O()

    def leader(self, hint: Any = None) -> tuple[int | None, str | None]:
        return self._leader

    def initialized(self) -> bool:
        return True

    def stopped_on_its_own(self) -> bool:
        return False

    def raft_stopped(self) -> bool:
        return False

    accepting = True


def test_error_mapping() -> None:
    from aiohttp.http_exceptions import ContentLengthError, TransferEncodingError
    from aiohttp.test_utils import make_mocked_request

    from openraft_py import errors as E
    from openraft_py.kv.http_api import BadRequest, _map_error
    from openraft_py.kv.node import ServiceUnavailable

    req = make_mocked_request("PUT", "/kv/a%2Fb?x=1")
    known = _FakeNode((2, "127.0.0.1:28002"))
    r = _map_error(known, req, E.ForwardToLeader(2, None))  # type: ignore[arg-type]
    assert r.status == 307 and r.headers["Location"] == "http://127.0.0.1:28002/kv/a%2Fb?x=1"
    r = _map_error(known, req, E.ForwardToLeader(2, None, outcome_unknown=True))  # type: ignore[arg-type]
    assert r.status == 503 and b'"outcome_unknown":true' in r.body  # type: ignore[operator]
    assert _map_error(_FakeNode((None, None)), req, E.ForwardToLeader()).status == 503  # type: ignore[arg-type]
    assert _map_error(_FakeNode((3, None)), req, E.ForwardToLeader(3)).status == 503  # type: ignore[arg-type]
    cases: list[tuple[BaseException, int]] = [
        (BadRequest("x"), 400), (TypeError("x"), 400), (ValueError("x"), 400),
        (E.InvalidRequest("vote", "x"), 400), (E.EmptyMembership(), 400), (E.LearnerNotFound(5), 400),
        (E.NotInMembers(1, {2}), 400), (E.InProgress(), 409), (E.NotAllowed(None, None), 409),
        (E.QuorumNotEnough("no quorum"), 503), (E.Timeout("t"), 503), (E.Unreachable("u"), 503),
        (E.WaitTimeout("w"), 503), (ServiceUnavailable("s"), 503), (E.Stopped(), 503),
        (E.StorageError("append 1-2", OSError("disk")), 503), (RuntimeError("bug"), 500),
        # a body whose framing is malformed (aiohttp's pure-Python parser raises it in
        # request.read(): it was a 500 'internal error', logged as the service's failure)
        (TransferEncodingError("Not enough data to satisfy transfer length header."), 400),
        (ContentLengthError("Not enough data to satisfy content length header."), 400),
    ]
    for exc, status in cases:
        r = _map_error(known, req, exc)  # type: ignore[arg-type]
        assert r.status == status, (exc, r.status)
        assert r.content_type == "application/json" and b'"error"' in r.body  # type: ignore[operator]


def test_in_progress_speaks_to_an_http_client() -> None:
    """The 409 of ``InProgress`` speaks of requests, not of the library's calls, says that
    nothing was done and when to retry, and names the pending entry by its log index and
    term. It relayed the library's "... retry once it has committed (the call that made it
    returned)", which an HTTP client could not act on (which call? returned when?)."""
    import json

    from aiohttp.test_utils import make_mocked_request

    from openraft_py import errors as E
    from openraft_py.kv.http_api import _map_error
    from openraft_py.types import LogId

    node = _FakeNode((1, "127.0.0.1:28001"))
    pending = E.InProgress(LogId(3, 17))
    r = _map_error(node, make_mocked_request("POST", "/cluster/members"), pending)  # type: ignore[arg-type]
    assert r.status == 409
    assert json.loads(r.body)["error"] == (  # type: ignore[arg-type]
        "InProgress: another membership change (log index 17, term 3) has not committed yet: nothing was done; "
        "retry once it has (the request that made it is answered then; a change the leader was elected with commits "
        "with its first writes)")
    transfer = E.InProgress(LogId(3, 17), "cannot transfer leadership to node 2 while a membership change is in "
                                          "progress (entry 3-17); transfer once it has committed (the change_membership "
                                          "call that made it returns then; one this leader was elected with commits "
                                          "with its first entries)")
    r = _map_error(node, make_mocked_request("POST", "/cluster/transfer"), transfer)  # type: ignore[arg-type]
    assert r.status == 409
    assert json.loads(r.body)["error"] == (  # type: ignore[arg-type]
        "InProgress: the leadership is not handed over while a membership change (log index 17, term 3) has not "
        "committed: nothing was done; retry once it has (the request that made it is answered then; a change the "
        "leader was elected with commits with its first writes)")


def test_the_package_imports_without_the_kv_extra() -> None:
    import subprocess
    import sys

    code = ("import sys, openraft_py.kv, openraft_py.kv.commands, openraft_py.kv.nodes; "
            "assert 'aiohttp' not in sys.modules and 'prometheus_client' not in sys.modules, 'imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()


async def test_cas_delete_applies_alike_without_responses() -> None:
    """``KvStateMachine.apply_without_responses`` (a follower's) applies a conditional
    delete as ``apply`` does: the inherited ``RocksStateMachine`` one would see it as opaque
    data and keep the key (the divergence the HTTP test caught)."""
    batch = entries(
        encode_kv(KvSet("k", "a")),
        encode_cas("k", "a", None),  # matches: deleted
        encode_kv(KvSet("j", "x")),
        encode_cas("j", "y", None),  # mismatch: kept
    )
    dirs = [tempfile.mkdtemp(prefix="kv-sm-") for _ in range(2)]
    try:
        answered, quiet = await KvStateMachine.open(dirs[0]), await KvStateMachine.open(dirs[1])
        await answered.apply(batch)
        assert await quiet.apply_without_responses(batch) is None
        assert quiet.data == answered.data == {"j": "x"}
        assert await quiet.applied_state() == await answered.applied_state()
        # Batches without a conditional delete take RocksStateMachine's path.
        more = [Entry(LogId(1, 5), Normal(encode_kv(KvSet("k", "b"))))]
        await answered.apply(more)
        await quiet.apply_without_responses(more)
        assert quiet.data == answered.data == {"j": "x", "k": "b"}
        await answered.aclose()
        await quiet.aclose()
    finally:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("given", ["127.0.0.1:021001", "h:00080", "[::1]:07"])
def test_a_given_port_with_a_leading_zero_is_refused(given: str) -> None:
    """``--raft-addr 127.0.0.1:021001`` was taken, and the membership compares addresses as
    written: ``:021001`` and ``:21001`` (the same port) were not seen as one, so two nodes
    could be given one port. An address given (a flag, the HTTP API's and the CLI's member
    addresses, a client's endpoints) is refused with the port as it should be written."""
    port = int(given.rpartition(":")[2])
    for check in (check_addr, check_member_addr):
        with pytest.raises(ValueError, match=rf"^--raft-addr: the port '0+{port}' in '.*' has a leading zero: "
                                             rf"write the port as {port}$"):
            check(given, "--raft-addr")
    with pytest.raises(ValueError, match=f"write the port as {port}"):
        node_of("h:1", given)
    serve = ServeOptions(id=1, raft_addr=given, http_addr="127.0.0.1:28001", data_dir="d")  # serve's flags
    with pytest.raises(ValueError, match=rf"^--raft-addr: the port .* write the port as {port}$"):
        serve.check()


def test_an_address_read_back_from_the_membership_keeps_its_leading_zero() -> None:
    """A membership written by an earlier release may hold ``127.0.0.1:021001``: it is read
    back as it is (the transport dials port 21001), not refused, and ``same_addr`` sees it
    as the same address as ``127.0.0.1:21001``."""
    from openraft_py.kv.nodes import same_addr

    assert addrs_of(BasicNode("127.0.0.1:021001")) == NodeAddrs("127.0.0.1:021001", "")
    old = BasicNode('{"raft":"127.0.0.1:021001","http":"127.0.0.1:028001"}')
    assert addrs_of(old) == NodeAddrs("127.0.0.1:021001", "127.0.0.1:028001")
    assert same_addr("127.0.0.1:021001", "127.0.0.1:21001")
    assert same_addr("127.0.0.1:21001", "127.0.0.1:21001")
    assert not same_addr("127.0.0.1:021001", "127.0.0.1:21002")
    assert not same_addr("127.0.0.2:21001", "127.0.0.1:21001")
    assert not same_addr("", "127.0.0.1:21001") and same_addr("x", "x")


def test_a_data_dir_holding_a_nul_character_is_refused_by_the_options_check() -> None:
    """``ServeOptions.check`` refuses a ``data_dir`` holding a NUL character, naming the flag,
    as the stores refuse such a path (``db.store_path``): it passed the check, and the
    node's start failed with the file system's bare "embedded null byte"."""
    from openraft_py.kv.node import ServeOptions

    opts = ServeOptions(id=1, raft_addr="127.0.0.1:28101", http_addr="127.0.0.1:28102", data_dir="/tmp/n1\x00x")
    with pytest.raises(ValueError, match=r"--data-dir .* holds a NUL character"):
        opts.check()
