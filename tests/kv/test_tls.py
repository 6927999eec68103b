"""``serve``'s TLS flags on the raft port: three nodes with mutual TLS commit writes; a node
whose certificate another CA signed cannot join (its learner never catches up: 503), and
the cluster keeps committing."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

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


def _leaf(d: Path, name: str, ca: str, uri: str | None = None) -> None:
    """A node certificate: server and client use (each node is both), for 127.0.0.1 (and
    ``uri`` as a subjectAltName URI: the node id binding)."""
    _ssl(d, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key")
    _ssl(d, "req", "-new", "-key", f"{name}.key", "-subj", f"/CN={name}", "-out", f"{name}.csr")
    (d / f"{name}.ext").write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n"
                                   "subjectAltName=IP:127.0.0.1,DNS:localhost" + (f",URI:{uri}" if uri else "") + "\n")
    _ssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
         "-days", "2", "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.pem")


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
            assert "did not catch up" in (await r.json())["error"]
        assert rogue.sm is not None and rogue.sm.data == {}
        assert leader.is_leader()
        async with s.put(url(leader, "/kv/after"), data="x") as r:
            assert r.status == 200
    finally:
        await c.close()


async def test_bound_node_ids_commit_and_refuse_a_certificate_of_another_node(pki: Path) -> None:
    """``--tls-bind-node-ids``: nodes whose certificates name their ids commit; a node with a
    valid certificate of the same CA that names another node (2) cannot join as node 4."""
    def tls(cert: str) -> dict[str, object]:
        return {"tls_cert": str(pki / f"{cert}.pem"), "tls_key": str(pki / f"{cert}.key"),
                "tls_ca": str(pki / "ca.pem"), "tls_bind_node_ids": True}

    c = KvCluster()
    try:
        await c.start(0, init=False)
        for nid in (1, 2, 3):
            await c.start_node(nid, learner_timeout=1.5, **tls(f"bound-{nid}"))
        s = c.session
        assert s is not None
        async with s.post(url(c.nodes[1], "/cluster/init"), json={"members": members_of(list(c.nodes.values()))}) as r:
            assert r.status == 200, await r.text()
        leader = await c.wait_leader()
        for i in range(5):
            async with s.put(url(leader, f"/kv/k{i}"), data=str(i)) as r:
                assert r.status == 200, await r.text()
        await c.wait_applied(leader.raft.metrics.last_log_index)  # type: ignore[union-attr]
        assert all(n.sm.get("k4") == "4" for n in c.nodes.values())  # type: ignore[union-attr]
        impostor = await c.start_node(4, **tls("bound-2"))
        body = {"id": 4, "raft_addr": impostor.opts.raft_addr, "http_addr": impostor.opts.http_addr}
        async with s.post(url(leader, "/cluster/learners"), json=body) as r:
            assert r.status == 503, await r.text()
        assert impostor.sm is not None and impostor.sm.data == {}
        async with s.put(url(leader, "/kv/after"), data="x") as r:
            assert r.status == 200
    finally:
        await c.close()


def test_bind_node_ids_needs_mutual_tls() -> None:
    from openraft_py.kv.node import ServeOptions

    opts = ServeOptions(id=1, raft_addr="127.0.0.1:1", http_addr="127.0.0.1:2", data_dir="d",
                        tls_cert="c.pem", tls_key="k.pem", tls_bind_node_ids=True)
    with pytest.raises(ValueError, match="--tls-bind-node-ids needs mutual TLS"):
        opts.check()
