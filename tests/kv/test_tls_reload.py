"""``serve --tls-reload-interval``: a node's renewed certificate (rewritten in place, as a CA
agent does) is taken without a restart once checked; a broken renewal is refused with one
WARNING and the node keeps its certificate; with the interval 0 nothing is watched."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import os
import re
import shutil
import signal
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from openraft_py.kv.node import KvNode, ServeOptions, checked_tls_contexts
from openraft_py.kv.server import add_serve_arguments, options_from_args
from openraft_py.kv.tls_reload import ExpiryWarnings, TlsReloader, expires_at, tls_file_stats
from openraft_py.network.tcp import node_uri

from .kv_helpers import STABLE_TIMEOUTS, KvCluster, members_of, node_options, until_true, url
from .test_tls import OPENSSL, _ca, _leaf

pytestmark = pytest.mark.timeout(90)

INTERVAL = 0.1
RELOAD_LOG = "openraft_py.kv.tls_reload"


def _stamp(t: datetime.datetime) -> str:
    return t.strftime("%Y%m%d%H%M%SZ")


@pytest.fixture(scope="module")
def pki() -> Iterator[Path]:
    if OPENSSL is None:
        pytest.skip("the openssl command line is not installed")
    d = Path(tempfile.mkdtemp(prefix="kv-pki-reload-"))
    try:
        _ca(d, "ca")
        _ca(d, "new-ca")
        for nid in (1, 2, 3):
            _leaf(d, f"n{nid}", "ca", node_uri("kv-test", nid))
        now = datetime.datetime.now(datetime.UTC)
        # the renewal: a new key, a later expiry (three days from now: the first ones expire in two)
        _leaf(d, "n1-renewed", "ca", node_uri("kv-test", 1),
              dates=(_stamp(now - datetime.timedelta(hours=1)), _stamp(now + datetime.timedelta(days=3))))
        _leaf(d, "n1-expired", "ca", node_uri("kv-test", 1), dates=("20200101000000Z", "20200102000000Z"))
        _leaf(d, "n1-new-ca", "new-ca", node_uri("kv-test", 1))
        _leaf(d, "n2-new-ca", "new-ca", node_uri("kv-test", 2))
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _node_files(pki: Path, into: Path, nid: int) -> dict[str, Any]:
    """Node ``nid``'s own copies of its files (rewritten in place by the tests), as options."""
    for ext in ("pem", "key"):
        shutil.copyfile(pki / f"n{nid}.{ext}", into / f"n{nid}.{ext}")
    shutil.copyfile(pki / "ca.pem", into / f"ca-{nid}.pem")
    return {"tls_cert": str(into / f"n{nid}.pem"), "tls_key": str(into / f"n{nid}.key"),
            "tls_ca": str(into / f"ca-{nid}.pem"), "tls_bind_node_ids": True}


def _rewrite(path: str, data: bytes) -> None:
    """Rewrite ``path`` in place (same inode), as a CA agent does."""
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(data)


def _probe(pki: Path, name: str = "n2", ca: str = "ca") -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / f"{ca}.pem"))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(pki / f"{name}.pem"), str(pki / f"{name}.key"))
    return ctx


async def _presented(port: int, ctx: ssl.SSLContext) -> dict[str, Any]:
    """The certificate the raft port at ``port`` presents in a fresh TLS handshake."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx), 5.0)
    try:
        return dict(writer.get_extra_info("peercert"))
    finally:
        writer.close()


def _serial(pki: Path, name: str) -> str:
    ctx = _probe(pki)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(str(pki / f"{name}.pem"), str(pki / f"{name}.key"))
    from openraft_py.network._tcp_common import self_handshake

    return str(self_handshake(ctx, server).getpeercert()["serialNumber"])


def _expiry_metric(node: KvNode) -> float | None:
    """``openraft_kv_tls_cert_expiry_timestamp_seconds`` as ``GET /metrics`` shows it."""
    for line in node.metrics.render().decode().splitlines():
        if line.startswith("openraft_kv_tls_cert_expiry_timestamp_seconds "):
            return float(line.split()[1])
    return None


def _all_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == RELOAD_LOG and r.levelno == logging.WARNING]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The WARNINGs of the watch but those of a certificate near its expiry (the test PKI's
    certificates are short-lived)."""
    return [m for m in _all_warnings(caplog) if not m.startswith(EXPIRY_WARNING)]


def _expiry_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [m for m in _all_warnings(caplog) if m.startswith(EXPIRY_WARNING)]


EXPIRY_WARNING = "the TLS certificate in --tls-cert "


async def test_a_renewed_certificate_is_taken_without_a_restart_and_a_broken_one_refused(
        pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=RELOAD_LOG)
    files = Path(tempfile.mkdtemp(prefix="kv-tls-files-"))
    c = KvCluster()
    try:
        c.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        for nid in (1, 2, 3):  # (each node its own files)
            await c.start_node(nid, tls_reload_interval=INTERVAL, **_node_files(pki, files, nid))
        s = c.session
        first = c.nodes[1]
        async with s.post(url(first, "/cluster/init"), json={"members": members_of(list(c.nodes.values()))}) as r:
            assert r.status == 200, await r.text()
        await first.raft.trigger.elect()  # type: ignore[union-attr]
        leader = await c.wait_leader()
        await c.wait_caught_up()
        term = leader.raft.metrics.current_term  # type: ignore[union-attr]
        node = c.nodes[1]
        assert node.tls_reloader is not None and node.raft_port is not None
        probe = _probe(pki)
        old = await _presented(node.raft_port, probe)
        assert old["serialNumber"] == _serial(pki, "n1")
        renewed_serial = _serial(pki, "n1-renewed")
        assert renewed_serial != old["serialNumber"]
        assert _expiry_metric(node) == expires_at(old)
        # (the test PKI's certificates are valid for two days: each node said so at start)
        said = _expiry_warnings(caplog)
        assert len(said) == 3 and all("expires in 1.9 days" in m or "expires in 2.0 days" in m for m in said), said

        # the renewal, rewritten in place: the certificate, then the key
        _rewrite(node.opts.tls_cert, (pki / "n1-renewed.pem").read_bytes())  # type: ignore[arg-type]
        _rewrite(node.opts.tls_key, (pki / "n1-renewed.key").read_bytes())  # type: ignore[arg-type]

        async def presents(serial: str) -> None:
            while (await _presented(node.raft_port, probe))["serialNumber"] != serial:  # type: ignore[arg-type]
                await asyncio.sleep(INTERVAL)

        await asyncio.wait_for(presents(renewed_serial), 10.0)
        new = await _presented(node.raft_port, probe)
        assert new["notAfter"] != old["notAfter"]
        assert _expiry_metric(node) == expires_at(new)
        loaded = [r.getMessage() for r in caplog.records if r.name == RELOAD_LOG and r.levelno == logging.INFO]
        assert len(loaded) == 1 and "renewed TLS certificate loaded" in loaded[0] and new["notAfter"] in loaded[0]
        assert _warnings(caplog) == []  # (the certificate written before its key: not caught between the two)
        for i in range(5):
            async with s.put(url(leader, f"/kv/k{i}"), data=str(i)) as r:
                assert r.status == 200, await r.text()
        await c.wait_applied(leader.raft.metrics.last_log_index)  # type: ignore[union-attr]
        assert all(n.raft.metrics.current_term == term for n in c.nodes.values())  # type: ignore[union-attr]
        assert leader.is_leader()

        # broken renewals: each refused with one WARNING naming the file and why
        other_key = (pki / "n2.key").read_bytes()
        broken = [
            ((pki / "n1-renewed.pem").read_bytes(), other_key, "is not the key of the certificate"),
            (b"garbage\n" * 10, (pki / "n1-renewed.key").read_bytes(), "no certificate in it"),
            ((pki / "n1-expired.pem").read_bytes(), (pki / "n1-expired.key").read_bytes(), "expired"),
        ]
        assert node.tls_reloader is not None
        for cert, key, why in broken:
            caplog.clear()
            _rewrite(node.opts.tls_key, key)  # type: ignore[arg-type]
            _rewrite(node.opts.tls_cert, cert)  # type: ignore[arg-type]
            await until_true(f"the warning ({why})", lambda: bool(_warnings(caplog)), 10.0)
            [warning] = _warnings(caplog)
            assert why in warning and repr(node.opts.tls_cert) in warning, warning
            assert "keeps presenting its current certificate" in warning and renewed_serial in warning, warning
            assert "openraft-py-tls-" not in warning and "/proc/self/fd" not in warning, warning  # (the files named, not their private copies)
            # ... once per change: the next looks say nothing
            for _ in range(3):
                assert await node.tls_reloader.check_now() is False
            assert len(_warnings(caplog)) == 1
            assert (await _presented(node.raft_port, probe))["serialNumber"] == renewed_serial
        async with s.put(url(leader, "/kv/after"), data="x") as r:
            assert r.status == 200
        assert all(n.raft.metrics.current_term == term for n in c.nodes.values())  # type: ignore[union-attr]
    finally:
        await c.close()
        shutil.rmtree(files, ignore_errors=True)


async def test_a_certificate_is_taken_once_its_files_stay_unchanged_for_an_interval(
        pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The look that sees a change waits for the next one: a CA agent between writing the
    certificate and the key is not refused (a WARNING), nor a file caught half-written."""
    caplog.set_level(logging.INFO, logger=RELOAD_LOG)
    with tempfile.TemporaryDirectory() as d:
        opts = node_options(1, d, **_node_files(pki, Path(d), 1))
        server, client, cert = checked_tls_contexts(opts)
        r = TlsReloader(opts, server, client, cert, 3600.0)  # (not started: the test looks)
        assert await r.check_now() is False
        _rewrite(opts.tls_cert, (pki / "n1-renewed.pem").read_bytes())  # type: ignore[arg-type]
        assert await r.check_now() is False  # changed: the key is not written yet
        half = (pki / "n1-renewed.key").read_bytes()
        _rewrite(opts.tls_key, half[: len(half) // 2])  # type: ignore[arg-type]
        assert await r.check_now() is False  # changed again
        _rewrite(opts.tls_key, half)  # type: ignore[arg-type]
        assert await r.check_now() is False
        assert await r.check_now() is True  # unchanged for one look: taken
        assert _warnings(caplog) == []
        assert r.current["serialNumber"] == _serial(pki, "n1-renewed")


async def test_a_certificate_refused_as_not_yet_valid_is_taken_once_it_is(
        pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A renewal from a CA whose clock runs a few seconds ahead: refused (one WARNING), then
    taken at a later look without another change of the files."""
    caplog.set_level(logging.INFO, logger=RELOAD_LOG)
    now = datetime.datetime.now(datetime.UTC)
    _leaf(pki, "n1-early", "ca", node_uri("kv-test", 1),
          dates=(_stamp(now + datetime.timedelta(seconds=3)), _stamp(now + datetime.timedelta(days=3))))
    with tempfile.TemporaryDirectory() as d:
        opts = node_options(1, d, **_node_files(pki, Path(d), 1))
        server, client, cert = checked_tls_contexts(opts)
        r = TlsReloader(opts, server, client, cert, 3600.0)
        _rewrite(opts.tls_cert, (pki / "n1-early.pem").read_bytes())  # type: ignore[arg-type]
        _rewrite(opts.tls_key, (pki / "n1-early.key").read_bytes())  # type: ignore[arg-type]
        assert await r.check_now() is False
        assert await r.check_now() is False
        [warning] = _warnings(caplog)
        assert "not yet valid" in warning, warning

        async def taken() -> None:
            while not await r.check_now():
                await asyncio.sleep(0.2)

        await asyncio.wait_for(taken(), 20.0)
        assert len(_warnings(caplog)) == 1
        assert r.current["serialNumber"] == _serial(pki, "n1-early")


async def test_a_ca_added_to_the_ca_file_is_trusted_without_a_restart(pki: Path) -> None:
    """The first round of a new CA without restarts: ``--tls-ca`` rewritten to hold both CAs
    is loaded; a node with a certificate of the new CA is then accepted."""
    with tempfile.TemporaryDirectory() as d:
        opts = node_options(1, d, **_node_files(pki, Path(d), 1))
        server, client, cert = checked_tls_contexts(opts)
        r = TlsReloader(opts, server, client, cert, 3600.0)
        from openraft_py.network._tcp_common import self_handshake

        newcomer = _probe(pki, "n2-new-ca", ca="ca")
        with pytest.raises(ssl.SSLError):
            self_handshake(newcomer, server)
        _rewrite(opts.tls_ca, (pki / "ca.pem").read_bytes() + (pki / "new-ca.pem").read_bytes())  # type: ignore[arg-type]
        assert await r.check_now() is False
        assert await r.check_now() is True
        self_handshake(newcomer, server)  # the server side trusts the new CA
        # ... and the client side: a peer presenting a certificate of the new CA
        peer = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.pem"))
        peer.load_cert_chain(str(pki / "n2-new-ca.pem"), str(pki / "n2-new-ca.key"))
        client.check_hostname = False
        self_handshake(client, peer)


async def test_with_the_interval_0_nothing_is_watched(pki: Path) -> None:
    with tempfile.TemporaryDirectory() as d:
        watched = KvNode(node_options(1, d, **_node_files(pki, Path(d), 1)))
        off = KvNode(node_options(2, d, tls_reload_interval=0, **_node_files(pki, Path(d), 2)))
        try:
            await watched.start()
            await off.start()
            assert watched.tls_reloader is not None and watched.tls_reloader.interval == 60.0
            assert off.tls_reloader is None
            plain = KvNode(node_options(3, d))
            await plain.start()
            assert plain.tls_reloader is None  # (no TLS: nothing to watch)
            await plain.stop()
        finally:
            await watched.stop()
            await off.stop()
        assert watched.tls_reloader._task is None  # type: ignore[union-attr]  # (stop() ended the watch)


def _parse(*argv: str) -> ServeOptions:
    p = argparse.ArgumentParser()
    add_serve_arguments(p)
    return options_from_args(p.parse_args(["--id", "1", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2",
                                           "--data-dir", "d", *argv]))


def test_the_reload_interval_flag(pki: Path) -> None:
    tls = ["--tls-cert", str(pki / "n1.pem"), "--tls-key", str(pki / "n1.key")]
    assert _parse(*tls).tls_reload_interval == 60.0
    assert _parse(*tls, "--tls-reload-interval", "0").tls_reload_interval == 0
    assert _parse(*tls, "--tls-reload-interval", "2.5").tls_reload_interval == 2.5
    for bad in ("-1", "0.01", "86401", "1e300"):
        with pytest.raises(ValueError, match=r"--tls-reload-interval must be 0 \(off\) or from 0\.1 to 86400"):
            _parse(*tls, "--tls-reload-interval", bad)
    with pytest.raises(ValueError, match="--tls-reload-interval needs --tls-cert"):
        _parse("--tls-reload-interval", "5")
    for bad in ("nan", "inf", "soon"):
        with pytest.raises(SystemExit):
            _parse(*tls, "--tls-reload-interval", bad)
    with pytest.raises(ValueError, match="--tls-reload-interval must be"):
        ServeOptions(id=1, raft_addr="127.0.0.1:1", http_addr="127.0.0.1:2", data_dir="d",
                     tls_reload_interval=True).check()  # type: ignore[arg-type]


async def test_serve_processes_take_a_renewed_certificate_without_a_restart(pki: Path) -> None:
    """Three ``serve`` processes with mutual TLS and ``--tls-reload-interval 0.2``: node 1's
    files rewritten with a renewal; its raft port presents the new certificate in a new
    handshake, logged at INFO with its expiry, and writes go on in the same term."""
    from .serve_procs import ServeProc, init_cluster, put, status, until

    root = Path(tempfile.mkdtemp(prefix="kv-tls-reload-procs-"))
    procs = [ServeProc(nid, str(root), cluster_name="kv-test") for nid in (1, 2, 3)]
    try:
        for p in procs:
            f = _node_files(pki, root, p.id)
            p.start(extra_args=("--tls-cert", f["tls_cert"], "--tls-key", f["tls_key"], "--tls-ca", f["tls_ca"],
                                "--tls-bind-node-ids", "--tls-reload-interval", "0.2",
                                # (timeouts of 1-2 s: the same term is asserted on a busy machine)
                                "--raft-config", json.dumps(STABLE_TIMEOUTS)))
        async with aiohttp.ClientSession() as s:
            await init_cluster(s, procs)
            await until(lambda: put(s, procs[0], "k", "v"), 30, "a write")
            st = await status(s, procs[0])
            assert st is not None
            term = st["term"]
            port = int(procs[0].raft_addr.rsplit(":", 1)[1])
            probe = _probe(pki)
            renewed = _serial(pki, "n1-renewed")
            assert (await _presented(port, probe))["serialNumber"] != renewed
            _rewrite(str(root / "n1.pem"), (pki / "n1-renewed.pem").read_bytes())
            _rewrite(str(root / "n1.key"), (pki / "n1-renewed.key").read_bytes())

            async def presents() -> bool:
                return bool((await _presented(port, probe))["serialNumber"] == renewed)

            await until(presents, 20, "the renewed certificate presented")
            msgs = [x["msg"] for x in procs[0].logs()]
            assert any(m.startswith("renewed TLS certificate loaded") and "valid until" in m for m in msgs), msgs
            for i in range(5):
                assert await until(lambda i=i: put(s, procs[i % 3], f"after{i}", "x"), 20, "a write") is not None
            for p in procs:
                st = await status(s, p)
                assert st is not None and st["term"] == term, st
                assert p.proc is not None and p.proc.poll() is None
    finally:
        for p in procs:
            p.kill(signal.SIGKILL)
            if p.proc is not None:
                p.proc.wait(20)
        shutil.rmtree(root, ignore_errors=True)


def _replace_with_fifo(path: str) -> None:
    os.unlink(path)
    os.mkfifo(path)


@pytest.mark.parametrize(("change", "why"), [
    (lambda d, pki: os.unlink(f"{d}/n1.key"), "--tls-key .*: no such file"),
    (lambda d, pki: _replace_with_fifo(f"{d}/n1.pem"), "--tls-cert .*: not a regular file"),
    (lambda d, pki: (_rewrite(f"{d}/n1.pem", (pki / "n2.pem").read_bytes()),
                     _rewrite(f"{d}/n1.key", (pki / "n2.key").read_bytes())), "names node 2"),
    (lambda d, pki: _rewrite(f"{d}/n1.pem", b"x" * 5000), "--tls-cert .*: larger than 4096 bytes"),
], ids=["removed", "a-pipe", "another-node", "too-large"])
async def test_a_renewal_that_cannot_be_used_is_refused_naming_the_file(
        pki: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, change: Any, why: str) -> None:
    """Each refused with one WARNING, the contexts untouched (a pipe is not opened: that
    would wait for a writer)."""
    import openraft_py.kv.node as kv_node

    monkeypatch.setattr(kv_node, "MAX_TLS_FILE", 4096)  # (read_tls_file's bound)
    caplog.set_level(logging.INFO, logger=RELOAD_LOG)
    with tempfile.TemporaryDirectory() as d:
        opts = node_options(1, d, **_node_files(pki, Path(d), 1))
        server, client, cert = checked_tls_contexts(opts)
        r = TlsReloader(opts, server, client, cert, 3600.0)
        change(d, pki)
        for _ in range(4):
            assert await asyncio.wait_for(r.check_now(), 10.0) is False
        [warning] = _warnings(caplog)
        assert re.search(why, warning), warning
        assert r.current is cert
        assert _presented_by(pki, server) == cert["serialNumber"]


def _presented_by(pki: Path, server: ssl.SSLContext) -> str:
    """The serial number of the certificate ``server`` presents in a new handshake."""
    from openraft_py.network._tcp_common import self_handshake

    return str(self_handshake(_probe(pki), server).getpeercert()["serialNumber"])


async def test_a_renewal_written_while_the_node_started_is_taken(pki: Path) -> None:
    """The loaded files' stats are those from before they were read (``tls_file_stats`` in
    ``KvNode.start``): a renewal written between the read and the watch's start is seen."""
    with tempfile.TemporaryDirectory() as d:
        opts = node_options(1, d, **_node_files(pki, Path(d), 1))
        before = tls_file_stats(opts)
        server, client, cert = checked_tls_contexts(opts)
        _rewrite(opts.tls_cert, (pki / "n1-renewed.pem").read_bytes())  # type: ignore[arg-type]
        _rewrite(opts.tls_key, (pki / "n1-renewed.key").read_bytes())  # type: ignore[arg-type]
        r = TlsReloader(opts, server, client, cert, 3600.0, loaded=before)
        assert await r.check_now() is False
        assert await r.check_now() is True
        assert _presented_by(pki, server) == _serial(pki, "n1-renewed")


async def test_a_renewal_by_rename_or_by_a_symlink_swap_is_taken(pki: Path) -> None:
    """Files replaced by a rename (a new inode) and a Kubernetes secret volume's swap of a
    ``..data`` symlink (the flags name links through it) are seen as changes."""
    with tempfile.TemporaryDirectory() as d:
        v1, v2 = Path(d, "v1"), Path(d, "v2")
        for v, name in ((v1, "n1"), (v2, "n1-renewed")):
            v.mkdir()
            shutil.copyfile(pki / f"{name}.pem", v / "tls.crt")
            shutil.copyfile(pki / f"{name}.key", v / "tls.key")
            shutil.copyfile(pki / "ca.pem", v / "ca.crt")
        os.symlink("v1", Path(d, "..data"))
        for f in ("tls.crt", "tls.key", "ca.crt"):
            os.symlink(f"..data/{f}", Path(d, f))
        opts = node_options(1, d, tls_cert=f"{d}/tls.crt", tls_key=f"{d}/tls.key", tls_ca=f"{d}/ca.crt",
                            tls_bind_node_ids=True)
        server, client, cert = checked_tls_contexts(opts)
        r = TlsReloader(opts, server, client, cert, 3600.0)
        os.symlink("v2", Path(d, "..data.tmp"))
        os.replace(Path(d, "..data.tmp"), Path(d, "..data"))  # (the swap: atomic)
        assert await r.check_now() is False
        assert await r.check_now() is True
        assert _presented_by(pki, server) == _serial(pki, "n1-renewed")
        # ... and a rename over the file itself (a new inode)
        shutil.copyfile(pki / "n1.pem", Path(d, "new.crt"))
        shutil.copyfile(pki / "n1.key", Path(d, "new.key"))
        os.replace(Path(d, "new.crt"), v2 / "tls.crt")
        os.replace(Path(d, "new.key"), v2 / "tls.key")
        assert await r.check_now() is False
        assert await r.check_now() is True
        assert _presented_by(pki, server) == _serial(pki, "n1")


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="anonymous memory files are Linux's")
async def test_a_renewal_s_copies_are_never_written_to_a_disk(pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checked copies of a renewal (the private key's among them) live in anonymous
    memory files: nothing is made in a temporary directory, where a copy of the key
    outlived a ``kill -9`` of the node; and each is closed after the load."""
    def no_disk(*a: Any, **kw: Any) -> str:
        raise AssertionError("a copy of the TLS files was about to be written to a disk")

    with tempfile.TemporaryDirectory() as d:
        opts = node_options(1, d, **_node_files(pki, Path(d), 1))
        server, client, cert = checked_tls_contexts(opts)
        monkeypatch.setattr(tempfile, "mkdtemp", no_disk)
        r = TlsReloader(opts, server, client, cert, 3600.0)  # (not started: the test looks)
        fds = len(os.listdir("/proc/self/fd"))
        _rewrite(opts.tls_cert, (pki / "n1-renewed.pem").read_bytes())  # type: ignore[arg-type]
        _rewrite(opts.tls_key, (pki / "n1-renewed.key").read_bytes())  # type: ignore[arg-type]
        assert await r.check_now() is False
        assert await r.check_now() is True
        assert r.current["serialNumber"] == _serial(pki, "n1-renewed")
        assert len(os.listdir("/proc/self/fd")) == fds


def test_a_certificate_near_its_expiry_is_warned_of_once_per_stage(caplog: pytest.LogCaptureFixture) -> None:
    """One WARNING when 7 days are left, one when a day is, one once expired; none before,
    none again at the same stage, and a renewed certificate (another serial) starts over."""
    caplog.set_level(logging.INFO, logger=RELOAD_LOG)
    at = ssl.cert_time_to_seconds("Dec  8 17:00:00 2026 GMT")
    cert = {"serialNumber": "1A", "notAfter": "Dec  8 17:00:00 2026 GMT"}
    w = ExpiryWarnings("/etc/raft/n1.pem")
    day = 86400.0
    w.check(cert, at - 30 * day)
    w.check(cert, at - 7.5 * day)
    assert _expiry_warnings(caplog) == []
    for now in (at - 6 * day, at - 3 * day, at - 2 * day):
        w.check(cert, now)
    [first] = _expiry_warnings(caplog)
    assert "'/etc/raft/n1.pem'" in first and "serial 1A" in first and "expires in 6.0 days" in first, first
    w.check(cert, at - 5 * 3600)
    w.check(cert, at - 3600)
    assert len(_expiry_warnings(caplog)) == 2 and "expires in 5.0 hours" in _expiry_warnings(caplog)[1]
    w.check(cert, at + 1)
    w.check(cert, at + 60)
    assert len(_expiry_warnings(caplog)) == 3 and "has expired" in _expiry_warnings(caplog)[2]
    renewed = {"serialNumber": "1B", "notAfter": "Dec 18 17:00:00 2026 GMT"}
    w.check(renewed, at + 60)
    assert len(_expiry_warnings(caplog)) == 3
    w.check(renewed, at + 5 * day)
    assert len(_expiry_warnings(caplog)) == 4 and "serial 1B" in _expiry_warnings(caplog)[3]
    w.check({"serialNumber": "1C"}, at)  # (no notAfter: nothing to say)
    assert len(_expiry_warnings(caplog)) == 4
