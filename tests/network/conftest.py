"""Fixtures of the network tests: the event loops the TCP tests run on, and a throwaway PKI.

- The ``test_tcp*`` modules run every async test twice, on plain asyncio and on uvloop
  (the ``pytest_asyncio_loop_factories`` hook); uvloop cases are skipped where it is not
  installed. Other modules here run on plain asyncio only.
- ``pki``: a session-wide directory with two certificate authorities made by the ``openssl``
  command line: the cluster CA (signing a server and a client certificate for 127.0.0.1)
  and a rogue CA (signing a client certificate the cluster must refuse); the cluster CA also
  signs ``node-1`` .. ``node-3``, certificates for both roles bound to their node ids of
  cluster ``test-cluster`` (the ``node_uri`` subjectAltName). Helper methods build the
  ``ssl.SSLContext``\\s the tests need.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from openraft_py.network.tcp import node_uri

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
    uvloop = None  # type: ignore[assignment]


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
    if item.path.name.startswith("test_tcp") and uvloop is not None:
        factories["uvloop"] = uvloop.new_event_loop
    return factories


OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


def _run(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_ca(d: Path, name: str) -> None:
    _run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=d)
    _run(
        "req", "-x509", "-new", "-key", f"{name}.key", "-sha256", "-days", "2",
        "-subj", f"/CN={name}", "-out", f"{name}.pem",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip


def _make_leaf(d: Path, name: str, ca: str, usage: str, uris: tuple[str, ...] = ()) -> None:
    _run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=d)
    _run("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={name}", "-out", f"{name}.csr", cwd=d)
    (d / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        f"extendedKeyUsage={usage}\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost" + "".join(f",URI:{u}" for u in uris) + "\n"
    )
    _run(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "2", "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
        cwd=d,
    )  # fmt: skip


class Pki:
    """Paths of a throwaway PKI and the ``SSLContext``\\s built from it."""

    def __init__(self, d: Path) -> None:
        self.dir = d

    def path(self, name: str) -> str:
        """The path of ``name`` (``"ca.pem"``, ``"server.key"``, ...)."""
        return str(self.dir / name)

    def server_ctx(self, *, mtls: bool, cert: str = "server") -> ssl.SSLContext:
        """The server context presenting ``cert`` (``"server"``, ``"node-1"``, ...); with
        ``mtls`` it requires a client certificate signed by the cluster CA."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.path(f"{cert}.pem"), self.path(f"{cert}.key"))
        if mtls:
            ctx.load_verify_locations(self.path("ca.pem"))
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_ctx(self, cert: str | None = "client") -> ssl.SSLContext:
        """A client context trusting the cluster CA, presenting ``cert`` (``"client"``,
        ``"rogue-client"``, ``"node-1"``, ...) or no certificate (``None``)."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.path("ca.pem"))
        if cert is not None:
            ctx.load_cert_chain(self.path(f"{cert}.pem"), self.path(f"{cert}.key"))
        return ctx


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway PKI: ``ca`` signs ``server``, ``client`` and ``node-1`` .. ``node-4``
    (bound to their ids in ``test-cluster``); ``rogue-ca`` signs ``rogue-client``."""
    if not Path(OPENSSL).exists():
        pytest.skip("the openssl command line is not installed")
    d = tmp_path_factory.mktemp("pki")
    _make_ca(d, "ca")
    _make_ca(d, "rogue-ca")
    _make_leaf(d, "server", "ca", "serverAuth")
    _make_leaf(d, "client", "ca", "clientAuth")
    _make_leaf(d, "rogue-client", "rogue-ca", "clientAuth")
    for nid in (1, 2, 3, 4):
        _make_leaf(d, f"node-{nid}", "ca", "serverAuth,clientAuth", (node_uri("test-cluster", nid),))
    return Pki(d)
