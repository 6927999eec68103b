"""``serve``'s TLS flags on the raft port: three nodes with mutual TLS commit writes; a node
whose certificate another CA signed cannot join (its learner never catches up: 503), and
the cluster keeps committing."""

from __future__ import annotations

import logging
import os
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from openraft_py.kv.node import KvNode, ServeOptions, tls_contexts
from openraft_py.network.tcp import node_uri

from .kv_helpers import KvCluster, members_of, url

pytestmark = pytest.mark.timeout(60)

OPENSSL = shutil.which("openssl")


def _ssl(d: Path, *args: str) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *args], cwd=d, check=True, capture_output=True, timeout=60)


def _ca(d: Path, name: str) -> None:
    _ssl(d, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key")
    _ssl(d, "req", "-x509", "-new", "-key", f"{name}.key", "-sha256", "-days", "2", "-subj", f"/CN={name}",
         "-out", f"{name}.pem", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def _leaf(d: Path, name: str, ca: str, uri: str | None = None, usage: str = "serverAuth,clientAuth",
          dates: tuple[str, str] | None = None) -> None:
    """A node certificate: server and client use (each node is both), for 127.0.0.1 (and
    ``uri`` as a subjectAltName URI: the node id binding); ``dates`` (notBefore, notAfter as
    YYYYMMDDHHMMSSZ) instead of two days from now."""
    _ssl(d, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key")
    _ssl(d, "req", "-new", "-key", f"{name}.key", "-subj", f"/CN={name}", "-out", f"{name}.csr")
    (d / f"{name}.ext").write_text(f"basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n"
                                   "subjectAltName=IP:127.0.0.1,DNS:localhost" + (f",URI:{uri}" if uri else "") + "\n")
    if dates is None:
        _ssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "2", "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.pem")
        return
    # ``openssl x509 -req`` of OpenSSL 3.0 takes no dates; ``openssl ca`` does.
    (d / "ca.cnf").write_text("[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n"
                              "default_md = sha256\npolicy = p\nunique_subject = no\n[p]\ncommonName = supplied\n")
    (d / "index.txt").touch()
    if not (d / "serial").exists():
        (d / "serial").write_text("01\n")
    _ssl(d, "ca", "-batch", "-config", "ca.cnf", "-cert", f"{ca}.pem", "-keyfile", f"{ca}.key", "-in", f"{name}.csr",
         "-startdate", dates[0], "-enddate", dates[1], "-extfile", f"{name}.ext", "-out", f"{name}.pem")


@pytest.fixture(scope="module")
def pki() -> Iterator[Path]:
    if OPENSSL is None:
        pytest.skip("the openssl command line is not installed")
    d = Path(tempfile.mkdtemp(prefix="kv-pki-"))
    try:
        _ca(d, "ca")
        _ca(d, "rogue-ca")
        _leaf(d, "node", "ca")
        _leaf(d, "rogue", "rogue-ca")
        for nid in (1, 2, 3):
            _leaf(d, f"bound-{nid}", "ca", node_uri("kv-test", nid))
        _leaf(d, "bound-3-renewed", "ca", node_uri("kv-test", 3))
        _ca(d, "new-ca")
        for nid in (1, 2, 3):
            _leaf(d, f"new-ca-{nid}", "new-ca", node_uri("kv-test", nid))
        (d / "both-cas.pem").write_bytes((d / "ca.pem").read_bytes() + (d / "new-ca.pem").read_bytes())
        _leaf(d, "expired", "ca", dates=("20200101000000Z", "20200102000000Z"))
        _leaf(d, "future", "ca", dates=("20990101000000Z", "20990102000000Z"))
        _leaf(d, "server-only", "ca", usage="serverAuth")
        _ssl(d, "pkcs8", "-topk8", "-in", "node.key", "-out", "node-encrypted.key", "-passout", "pass:secret")
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def test_mutual_tls_cluster_commits_and_refuses_a_foreign_certificate(pki: Path) -> None:
    tls = {"tls_cert": str(pki / "node.pem"), "tls_key": str(pki / "node.key"), "tls_ca": str(pki / "ca.pem")}
    c = KvCluster()
    try:
        await c.start(3, learner_timeout=1.5, **tls)
        leader = await c.wait_leader()
        s = c.session
        assert s is not None
        for i in range(10):
            async with s.put(url(leader, f"/kv/k{i}"), data=str(i)) as r:
                assert r.status == 200
        await c.wait_applied(leader.raft.metrics.last_log_index)  # type: ignore[union-attr]
        assert all(n.sm.get("k9") == "9" for n in c.nodes.values())  # type: ignore[union-attr]
        # a node with the rogue CA's certificate (trusting the rogue CA) cannot join
        rogue = await c.start_node(4, tls_cert=str(pki / "rogue.pem"), tls_key=str(pki / "rogue.key"),
                                   tls_ca=str(pki / "rogue-ca.pem"))
        body = {"id": 4, "raft_addr": rogue.opts.raft_addr, "http_addr": rogue.opts.http_addr}
        async with s.post(url(leader, "/cluster/learners"), json=body) as r:
            assert r.status == 503, await r.text()
            error = (await r.json())["error"]
            # ... and the answer says why (it asked only whether the node was running)
            assert "did not catch up" in error and "the last request to it failed" in error, error
            assert "certificate verify failed" in error, error
        assert rogue.sm is not None and rogue.sm.data == {}
        assert leader.is_leader()
        async with s.put(url(leader, "/kv/after"), data="x") as r:
            assert r.status == 200
    finally:
        await c.close()


def _bound_tls(pki: Path, cert: str) -> dict[str, object]:
    """The serve options of a node presenting ``pki``'s certificate ``cert``, its ids bound
    (``--tls-bind-node-ids``)."""
    return {"tls_cert": str(pki / f"{cert}.pem"), "tls_key": str(pki / f"{cert}.key"),
            "tls_ca": str(pki / "ca.pem"), "tls_bind_node_ids": True}


async def _start_bound(c: KvCluster, pki: Path, **kw: Any) -> aiohttp.ClientSession:
    """Start nodes 1-3 of ``c`` with bound-identity TLS (``_bound_tls``; ``kw`` for each
    node too) and initialize them as one cluster through node 1; returns the session."""
    await c.start(0, init=False)
    for nid in (1, 2, 3):
        await c.start_node(nid, **kw, **_bound_tls(pki, f"bound-{nid}"))
    s = c.session
    assert s is not None
    async with s.post(url(c.nodes[1], "/cluster/init"), json={"members": members_of(list(c.nodes.values()))}) as r:
        assert r.status == 200, await r.text()
    return s


async def test_bound_node_ids_commit_and_refuse_a_certificate_of_another_node(pki: Path) -> None:
    """``--tls-bind-node-ids``: nodes whose certificates name their ids commit; a node with a
    valid certificate of the same CA that names another node (2) cannot start as node 4 with
    the flag, and cannot join as node 4 without it."""
    c = KvCluster()
    try:
        s = await _start_bound(c, pki, learner_timeout=1.5)
        leader = await c.wait_leader()
        for i in range(5):
            async with s.put(url(leader, f"/kv/k{i}"), data=str(i)) as r:
                assert r.status == 200, await r.text()
        await c.wait_applied(leader.raft.metrics.last_log_index)  # type: ignore[union-attr]
        assert all(n.sm.get("k4") == "4" for n in c.nodes.values())  # type: ignore[union-attr]
        # serve refuses to start as node 4 with it (the certificate names node 2) ...
        with pytest.raises(ValueError, match="names node 2, and --tls-bind-node-ids needs it to name node 4"):
            await c.start_node(4, **_bound_tls(pki, "bound-2"))
        # ... and the cluster refuses a node 4 that presents it anyway (binding only its peers)
        impostor = await c.start_node(4, **{**_bound_tls(pki, "bound-2"), "tls_bind_node_ids": False})
        body = {"id": 4, "raft_addr": impostor.opts.raft_addr, "http_addr": impostor.opts.http_addr}
        async with s.post(url(leader, "/cluster/learners"), json=body) as r:
            assert r.status == 503, await r.text()
        assert impostor.sm is not None and impostor.sm.data == {}
        async with s.put(url(leader, "/kv/after"), data="x") as r:
            assert r.status == 200
    finally:
        await c.close()


async def test_a_node_restarted_with_a_renewed_certificate_rejoins(pki: Path) -> None:
    """Rotation: node 3 stops and comes back on its data with a new certificate of the same
    CA (a new key too); it catches up and takes part as before, the others unchanged."""
    c = KvCluster()
    try:
        s = await _start_bound(c, pki)
        await c.nodes[1].raft.trigger.elect()  # type: ignore[union-attr]
        leader = await c.wait_leader()
        await c.wait_caught_up()  # (a node catching up ignores a hand-over: kv/rejoin.py)
        if leader.id == 3:  # (node 3 is the one restarted: keep the leader)
            await leader.raft.trigger.transfer_leader(1)  # type: ignore[union-attr]
            leader = await c.wait_leader(timeout=10)
        async with s.put(url(leader, "/kv/before"), data="1") as r:
            assert r.status == 200, await r.text()
        old = c.nodes[3]
        await old.stop()
        async with s.put(url(leader, "/kv/while"), data="2") as r:
            assert r.status == 200, await r.text()
        renewed = KvNode(msgspec.structs.replace(old.opts, **_bound_tls(pki, "bound-3-renewed")))  # type: ignore[arg-type]
        await renewed.start()
        c.nodes[3] = renewed
        async with s.put(url(leader, "/kv/after"), data="3") as r:
            assert r.status == 200, await r.text()
        await c.wait_applied(leader.raft.metrics.last_log_index)  # type: ignore[union-attr]
        assert renewed.sm is not None and [renewed.sm.get(k) for k in ("before", "while", "after")] == ["1", "2", "3"]
    finally:
        await c.close()


async def test_a_new_ca_rolls_in_node_by_node_without_downtime(pki: Path) -> None:
    """The CA rotation of the network guide, one node at a time, each step a restart on the
    node's data: every node trusts both CAs (``--tls-ca`` a file of the two), then presents
    a certificate of the new CA, then trusts the new CA alone. A leader hands over before it
    stops; after each restart a write commits and the restarted node holds every entry (it
    is connected over TLS with what it was given). Nothing of it is new code: the guide
    described no rotation, and this shows the one it prints works."""
    c = KvCluster()
    try:
        s = await _start_bound(c, pki)
        await c.nodes[1].raft.trigger.elect()  # type: ignore[union-attr]
        await c.wait_leader()
        await c.wait_caught_up()  # (a node catching up ignores a hand-over: kv/rejoin.py)
        steps = [("bound-{}", "both-cas.pem"), ("new-ca-{}", "both-cas.pem"), ("new-ca-{}", "new-ca.pem")]
        for step, (cert, ca) in enumerate(steps):
            for nid in (1, 2, 3):
                leader = await c.wait_leader(timeout=10)
                if leader.id == nid:
                    assert leader.raft is not None
                    await leader.raft.trigger.transfer_leader(nid % 3 + 1)
                    await leader.raft.wait(timeout=10).current_leader(nid % 3 + 1)
                    leader = await c.wait_leader(timeout=10)
                old = c.nodes[nid]
                await old.stop()
                tls = {**_bound_tls(pki, cert.format(nid)), "tls_ca": str(pki / ca)}
                node = KvNode(msgspec.structs.replace(old.opts, **tls))  # type: ignore[arg-type]
                await node.start()
                c.nodes[nid] = node
                async with s.put(url(leader, f"/kv/k{step}{nid}"), data=cert) as r:
                    assert r.status == 200, await r.text()
                await c.wait_applied(leader.raft.metrics.last_log_index, timeout=10)  # type: ignore[union-attr]
        assert all(n.sm is not None and n.sm.get("k23") == "new-ca-{}" for n in c.nodes.values())
    finally:
        await c.close()


def test_bind_node_ids_needs_mutual_tls() -> None:
    from openraft_py.kv.node import ServeOptions

    opts = ServeOptions(id=1, raft_addr="127.0.0.1:1", http_addr="127.0.0.1:2", data_dir="d",
                        tls_cert="c.pem", tls_key="k.pem", tls_bind_node_ids=True)
    with pytest.raises(ValueError, match="--tls-bind-node-ids needs mutual TLS"):
        opts.check()


def _opts(pki: Path, cert: str, key: str | None = None, ca: str | None = "ca.pem", **kw: Any) -> ServeOptions:
    return ServeOptions(id=kw.pop("id", 1), raft_addr=kw.pop("raft_addr", "127.0.0.1:1"), http_addr="127.0.0.1:2", data_dir="d",
                        cluster_name=kw.pop("cluster_name", "kv-test"), tls_cert=str(pki / cert),
                        tls_key=str(pki / (key or cert.replace(".pem", ".key"))),
                        tls_ca=None if ca is None else str(pki / ca), **kw)


def _files(pki: Path) -> dict[str, str]:
    """Files made of the module's PKI for one test: wrongly assembled ones and not-PEM ones."""
    node, key, ca = ((pki / n).read_text() for n in ("node.pem", "node.key", "ca.pem"))
    made = {"combined.pem": node + key, "ca-first.pem": ca + node, "empty.pem": "", "text.pem": "not a certificate\n"}
    for name, text in made.items():
        (pki / name).write_text(text)
    return made


# What a peer configured as the node is would refuse (the node started, and never talked),
# and files that are not what their flag needs (ssl named neither file: "[SSL] PEM lib").
REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"cert": "expired.pem"}, r"--tls-cert '.*expired.pem': peers would refuse this certificate: certificate has "
                              r"expired \(verified as a server certificate against --tls-ca '.*ca.pem'\)"),
    ({"cert": "future.pem"}, r"--tls-cert '.*future.pem': peers would refuse this certificate: certificate is not yet valid"),
    ({"cert": "node.pem", "ca": "rogue-ca.pem"}, r"--tls-cert '.*node.pem': peers would refuse this certificate: "
                                                 r"unable to get local issuer certificate .*--tls-ca '.*rogue-ca.pem'"),
    ({"cert": "node.pem", "ca": "bound-1.pem"}, r"peers would refuse this certificate: unable to get local issuer"),
    ({"cert": "node.pem", "ca": None}, r"peers would refuse this certificate: unable to get local issuer certificate "
                                       r"\(verified as a server certificate against the system's CAs \(no --tls-ca: this node's clients verify its "
                                       r"peers against them too; give the CA that signed the nodes with --tls-ca\)\)"),
    ({"cert": "server-only.pem"}, r"peers would refuse this certificate: unsuitable certificate purpose \(a node's "
                                  r"certificate serves both roles: extendedKeyUsage serverAuth,clientAuth\) \(verified "
                                  r"as a client certificate"),
    ({"cert": "bound-2.pem", "tls_bind_node_ids": True}, r"--tls-cert '.*bound-2.pem' names node 2, and "
                                                         r"--tls-bind-node-ids needs it to name node 1: a subjectAltName "
                                                         r"URI:openraft://kv-test/1"),
    ({"cert": "bound-1.pem", "tls_bind_node_ids": True, "cluster_name": "other"},
     r"names no node id of cluster 'other', and --tls-bind-node-ids needs it to name node 1: a subjectAltName "
     r"URI:openraft://other/1"),
    ({"cert": "node.pem", "tls_bind_node_ids": True}, r"names no node id of cluster 'kv-test'"),
    ({"cert": "node.pem", "key": "node-encrypted.key"}, r"--tls-key '.*node-encrypted.key' is encrypted "
                                                        r"\(password-protected\): serve takes an unencrypted key"),
    ({"cert": "node.pem", "key": "rogue.key"}, r"--tls-key '.*rogue.key' is not the key of the certificate in "
                                               r"--tls-cert '.*node.pem' \(its first certificate: the node's own must come first"),
    ({"cert": "ca-first.pem", "key": "node.key"}, r"is not the key of the certificate in --tls-cert '.*ca-first.pem'"),
    ({"cert": "node.key", "key": "node.key"}, r"--tls-cert '.*node.key': no certificate in it"),
    ({"cert": "node.pem", "key": "node.pem"}, r"--tls-key '.*node.pem': no private key in it"),
    ({"cert": "empty.pem", "key": "node.key"}, r"--tls-cert '.*empty.pem': no certificate in it"),
    ({"cert": "node.pem", "ca": "empty.pem"}, r"--tls-ca '.*empty.pem': no certificate in it"),
    ({"cert": "node.pem", "ca": "text.pem"}, r"--tls-ca '.*text.pem': no certificate in it"),
    ({"cert": "node.pem", "ca": "ca.key"}, r"--tls-ca '.*ca.key': no certificate in it"),
]


@pytest.mark.parametrize("case,match", REFUSED, ids=[str(sorted(c.items())) for c, _ in REFUSED])
def test_serve_refuses_tls_files_that_cannot_work_naming_the_flag(pki: Path, case: dict[str, Any], match: str) -> None:
    """Refused at start (before the stores are opened: ``KvNode.start`` calls it first), so a
    node whose peers would refuse its certificate does not start and then never talk."""
    _files(pki)
    case = dict(case)
    opts = _opts(pki, case.pop("cert"), case.pop("key", None), case.pop("ca", "ca.pem"), **case)
    opts.check()
    with pytest.raises(ValueError, match=match):
        tls_contexts(opts)


def test_serve_takes_tls_files_that_work(pki: Path) -> None:
    _files(pki)
    for opts in (_opts(pki, "node.pem"), _opts(pki, "combined.pem", "combined.pem"),
                 _opts(pki, "bound-1.pem", tls_bind_node_ids=True),
                 _opts(pki, "rogue.pem", ca="rogue-ca.pem")):  # (refused by the cluster: the join test)
        server, client = tls_contexts(opts)
        assert server is not None and server.verify_mode == ssl.CERT_REQUIRED and client is not None


def test_a_tls_file_too_large_to_be_one_is_refused_unread(pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import openraft_py.kv.node as node

    monkeypatch.setattr(node, "MAX_TLS_FILE", 1024)
    (pki / "big.pem").write_bytes((pki / "ca.pem").read_bytes() * 3)
    with pytest.raises(ValueError, match=r"--tls-ca '.*big.pem': larger than 1024 bytes, which no PEM certificate file is"):
        tls_contexts(_opts(pki, "node.pem", ca="big.pem"))


def test_a_certificate_that_does_not_name_the_raft_host_is_warned_of(pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Peers dialling --raft-addr check the name in the certificate (``node.pem`` names
    127.0.0.1 and localhost): a warning, not an error (the membership may hold another name)."""
    caplog.set_level(logging.WARNING, logger="openraft_py.kv.node")
    for addr in ("127.0.0.1:1", "localhost:1", "0.0.0.0:1", "[::]:1"):
        tls_contexts(_opts(pki, "node.pem", raft_addr=addr))
    assert caplog.records == []
    for addr, host in (("127.0.0.2:1", "127.0.0.2"), ("node1.example:1", "node1.example")):
        server, client = tls_contexts(_opts(pki, "node.pem", raft_addr=addr))
        assert server is not None and client is not None and client.check_hostname
        [record] = caplog.records
        assert record.levelno == logging.WARNING and record.getMessage().startswith(
            f"--tls-cert '{pki / 'node.pem'}' does not name '{host}', the host of --raft-addr: peers dialling "
            f"{addr} will refuse it ("), record.getMessage()
        caplog.clear()


def test_a_tls_flag_given_a_directory_says_so(pki: Path) -> None:
    opts = _opts(pki, "node.pem", ca=".")
    with pytest.raises(ValueError, match=r"--tls-ca: '.*' is a directory, not a PEM file"):
        opts.check()


def test_a_tls_flag_given_a_pipe_says_so(pki: Path) -> None:
    """``--tls-key <(vault read ...)`` is a pipe, which exists (it was "no such file")."""
    read, write = os.pipe()
    try:
        opts = _opts(pki, "node.pem", key=f"/dev/fd/{read}")
        with pytest.raises(ValueError, match=rf"--tls-key: '/dev/fd/{read}' is not a regular file \(a pipe or a "
                                             r"device\?\): serve reads each TLS file more than once; give a file"):
            opts.check()
    finally:
        os.close(read)
        os.close(write)
