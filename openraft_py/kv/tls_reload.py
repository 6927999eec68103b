"""Renewing a node's TLS certificate without a restart (``serve --tls-reload-interval``).

A ``TlsReloader`` watches the files of ``--tls-cert``, ``--tls-key`` and ``--tls-ca``: every
``interval`` seconds it compares each file's modification time, size and inode (``os.stat``,
which follows symlinks: a Kubernetes secret volume swapping its ``..data`` link counts) with
those of the set the node loaded. A changed set is taken once it has stayed the same for one
interval (a CA agent writing the certificate, then the key, is not caught between the two):

1. in a thread, the files are read once into private copies (anonymous memory files on
   Linux, never on a disk; elsewhere a private temporary directory), and the copies are checked as ``serve`` checks its files at start
   (``node.checked_tls_contexts``: PEM contents, the key is the certificate's, the
   certificate is valid now and signed by the CA, the node-id binding with
   ``--tls-bind-node-ids``);
2. only then, on the event loop, the copies are loaded into the node's live contexts (the
   raft port's server and client ``SSLContext``s, shared with ``TcpServer`` and
   ``TcpNetworkFactory``): ``load_cert_chain`` for the certificate and key, and
   ``load_verify_locations`` for a changed CA file. Loaded on the loop, not in a thread: an
   ``SSLContext`` is not to be changed while another thread starts a handshake with it, and
   loading a checked file takes about a millisecond. Loaded from the checked copies, not the
   files: a file rewritten between the check and the load could not put an unchecked
   certificate (or a key of another) in place.

New TLS handshakes then present the new certificate (connections open already keep the one
they began with). A CA added to the ``--tls-ca`` file is trusted from then on; a CA removed
from it stays trusted until the node restarts (OpenSSL adds to a context's trust store, it
never removes from it).

A refused set keeps the node on its current certificate and logs one WARNING naming the file
and the reason, once per change of the files (not every interval); it is checked again at each
look, so a certificate refused as not yet valid (a CA whose clock runs ahead) is taken once it
is. A taken one logs INFO with the new certificate's serial number and expiry.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import ssl
import tempfile
import time
from collections.abc import Callable
from typing import Any

from ..network.tcp import parse_addr
from .node import ServeOptions, checked_tls_contexts, read_tls_file

__all__ = ["TlsReloader", "tls_file_stats", "ExpiryWarnings", "expires_at", "EXPIRY_WARNING_DAYS"]

log = logging.getLogger(__name__)

_Stat = tuple[int, int, int] | None
"""A file's (modification time in ns, size, inode), ``None`` if it cannot be ``stat``-ed."""


def _stat(path: str) -> _Stat:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def tls_file_stats(opts: ServeOptions) -> tuple[_Stat, ...]:
    """The stats of ``opts``' ``--tls-cert``, ``--tls-key`` and ``--tls-ca`` files (the last
    if given): what ``TlsReloader`` compares."""
    paths = (opts.tls_cert, opts.tls_key) + ((opts.tls_ca,) if opts.tls_ca else ())
    return tuple(_stat(p) for p in paths if p is not None)


EXPIRY_WARNING_DAYS = (7, 1)
"""A node warns of the certificate it presents once it expires within 7 days, again within
one day, and once it has expired: a renewal that did not come (a CA agent that stopped) is
said before peers start refusing the certificate."""


def expires_at(cert: dict[str, Any]) -> float | None:
    """When ``cert`` (as ``getpeercert()`` shows it) expires, as a Unix time; ``None`` if it
    does not say."""
    try:
        return float(ssl.cert_time_to_seconds(cert["notAfter"]))
    except (KeyError, TypeError, ValueError):
        return None


class ExpiryWarnings:
    """Warns of the certificate in ``--tls-cert`` ``path`` as its expiry nears: one WARNING
    at each of ``EXPIRY_WARNING_DAYS`` and one once it expired, per certificate (a renewal
    starts over); nothing while it has longer."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._said: tuple[object, int] | None = None  # (serial, stage) last warned of

    def check(self, cert: dict[str, Any], now: float) -> None:
        """Warn if ``cert`` reached a stage not yet warned of, at time ``now``."""
        at = expires_at(cert)
        if at is None:
            return
        left = at - now
        if left <= 0:
            stage = len(EXPIRY_WARNING_DAYS) + 1
        else:
            stage = sum(1 for days in EXPIRY_WARNING_DAYS if left < days * 86400)
        if stage == 0:
            return
        key = (cert.get("serialNumber"), stage)
        if key == self._said:
            return
        self._said = key
        if left <= 0:
            log.warning("the TLS certificate in --tls-cert %r (%s) has expired: peers refuse it in the TLS handshake; "
                        "renew it (serve takes a renewed certificate without a restart when --tls-reload-interval is "
                        "not 0)", self.path, describe(cert))
        else:
            log.warning("the TLS certificate in --tls-cert %r (%s) expires in %s: renew it before then (peers refuse "
                        "an expired certificate; serve takes a renewed one without a restart when "
                        "--tls-reload-interval is not 0)", self.path, describe(cert), _duration(left))


def _duration(seconds: float) -> str:
    """``3.5 days`` / ``5.0 hours`` / ``12 minutes``."""
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{max(1, round(seconds / 60))} minutes"


def describe(cert: dict[str, Any]) -> str:
    """``serial S, valid until T`` of a certificate as ``getpeercert()`` shows it."""
    return f"serial {cert.get('serialNumber', '?')}, valid until {cert.get('notAfter', '?')}"


class TlsReloader:
    """Watches ``opts``' TLS files and loads a renewed, checked set into ``server`` and
    ``client`` (the live contexts ``tls_contexts(opts)`` made); see the module docstring.

    ``current``: the loaded certificate as ``getpeercert()`` shows it. ``start()`` begins
    watching (in a task), ``close()`` stops it. ``check_now()`` runs one look (the task's
    step; tests call it)."""

    def __init__(self, opts: ServeOptions, server: ssl.SSLContext, client: ssl.SSLContext,
                 current: dict[str, Any], interval: float, loaded: tuple[_Stat, ...] | None = None,
                 on_loaded: Callable[[dict[str, Any]], None] | None = None) -> None:
        assert opts.tls_cert is not None and opts.tls_key is not None
        if not interval > 0:
            raise ValueError(f"the TLS reload interval must be positive, got {interval!r}")
        self.opts = opts
        self.server = server
        self.client = client
        self.current = current
        self.interval = interval
        self.paths: tuple[str, ...] = (opts.tls_cert, opts.tls_key) + ((opts.tls_ca,) if opts.tls_ca else ())
        self.loaded: tuple[_Stat, ...] = self._stats() if loaded is None else loaded
        """The files' stats when the loaded set was read: ``loaded`` (``tls_file_stats(opts)``
        taken before the files were read for ``server`` and ``client``: a change made while
        the node started is then seen), else taken now."""
        self._lock = asyncio.Lock()  # one look at a time (the task's, a caller's)
        self._pending: tuple[_Stat, ...] | None = None  # a change seen, waiting to be stable
        self._refused: tuple[_Stat, ...] | None = None  # the last set refused (warned once)
        self._task: asyncio.Task[None] | None = None
        self.on_loaded = on_loaded
        """Called with the new certificate after a renewal was loaded (the node's expiry
        metric)."""
        self.expiry = ExpiryWarnings(opts.tls_cert)

    def _stats(self) -> tuple[_Stat, ...]:
        return tls_file_stats(self.opts)

    def start(self) -> None:
        """Watch the files every ``interval`` seconds, in a task, until ``close()``."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="tls-reload")

    def close(self) -> None:
        """Stop watching (the task is cancelled; a check in its thread is left to end)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check_now()
            except Exception:  # keep watching (a failure to load a checked copy: not expected)
                log.exception("checking the TLS files for a renewal failed; the node keeps its current certificate")
            self.expiry.check(self.current, time.time())

    async def check_now(self) -> bool:
        """One look at the files: ``True`` if a renewed set was loaded."""
        async with self._lock:
            return await self._look()

    async def _look(self) -> bool:
        stats = await asyncio.to_thread(self._stats)
        if stats == self.loaded:
            self._pending = self._refused = None
            return False
        if stats != self._pending:
            self._pending = stats  # changed since the last look: may be half-written
            return False
        # A set refused is checked again at each look (a certificate of a CA whose clock runs
        # ahead is valid a little later), its WARNING said once.
        return await self._reload(stats)

    async def _reload(self, stats: tuple[_Stat, ...]) -> bool:
        o = self.opts
        scratch = _Copies()
        try:
            try:
                copies, cert = await asyncio.to_thread(self._check_copies, scratch, stats)
            except _Changed:
                self._pending = None  # rewritten while read: look again next interval
                return False
            except ValueError as e:
                if stats != self._refused:
                    self._refused = stats
                    log.warning("the renewed TLS files are refused: %s; the node keeps presenting its current "
                                "certificate (%s) and checks the files again every %gs", e, describe(self.current),
                                self.interval)
                return False
            self.server.load_cert_chain(copies[0], copies[1])
            self.client.load_cert_chain(copies[0], copies[1])
            ca_changed = o.tls_ca is not None and stats[2] != self.loaded[2]
            if ca_changed:
                self.server.load_verify_locations(copies[2])
                self.client.load_verify_locations(copies[2])
        finally:
            scratch.close()
        self.loaded, self.current = stats, cert
        self._pending = self._refused = None
        if self.on_loaded is not None:
            self.on_loaded(cert)
        log.info("renewed TLS certificate loaded from --tls-cert %r: %s; new connections present it (open ones keep "
                 "theirs)", o.tls_cert, describe(cert))
        if ca_changed:
            log.info("--tls-ca %r reloaded: its CAs are trusted from now on (a CA removed from the file stays "
                     "trusted until the node restarts)", o.tls_ca)
        return True

    def _check_copies(self, scratch: _Copies, stats: tuple[_Stat, ...]) -> tuple[list[str], dict[str, Any]]:
        """In a thread: copy the files into ``scratch`` and check the copies as ``serve``
        checks its files at start; the copies' paths and the certificate. ``_Changed`` if a
        file changed while it was read, ``ValueError`` (naming the real files) if refused."""
        copies = []
        for i, path in enumerate(self.paths):
            if not os.path.isfile(path):  # (a device would be read without end, a pipe wait for a writer)
                why = "no such file" if not os.path.exists(path) else "not a regular file"
                raise ValueError(f"{_FLAGS[i]} {path!r}: {why}")
            copies.append(scratch.add(i, read_tls_file(_FLAGS[i], path)))
        if self._stats() != stats:
            raise _Changed
        o = self.opts
        # The listen address a wildcard: the WARNING of a certificate that does not name the
        # host of --raft-addr is said at start only (a name is not a reason to refuse).
        _host, port = parse_addr(o.raft_addr)
        scratch_opts = ServeOptions(id=o.id, raft_addr=f"0.0.0.0:{port}", http_addr=o.http_addr,
                                    data_dir=o.data_dir, cluster_name=o.cluster_name, tls_cert=copies[0],
                                    tls_key=copies[1], tls_ca=copies[2] if o.tls_ca else None,
                                    tls_bind_node_ids=o.tls_bind_node_ids)
        try:
            _server, _client, cert = checked_tls_contexts(scratch_opts)
        except ValueError as e:
            text = str(e)
            for copy, path in zip(copies, self.paths):  # name the files, not their copies
                text = text.replace(repr(copy), repr(path))
            raise ValueError(text) from None
        return copies, cert


_FLAGS = ("--tls-cert", "--tls-key", "--tls-ca")


class _Copies:
    """Private copies of the files read, as paths OpenSSL can open (``load_cert_chain`` and
    ``load_verify_locations`` take paths only): anonymous memory files (``os.memfd_create``,
    opened as ``/proc/self/fd/N``) where Linux has them, so a copy of the private key is never
    on a disk, not even after a ``kill -9``; else files in a private temporary directory
    (mode 0700, files 0600). ``close()`` releases them."""

    def __init__(self) -> None:
        self._fds: list[int] = []
        self._dir: str | None = None

    def add(self, i: int, data: bytes) -> str:
        """A copy of ``data`` (the ``i``-th file); its path."""
        if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
            fd = os.memfd_create(f"openraft-py-tls-{i}", os.MFD_CLOEXEC)
            self._fds.append(fd)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            return f"/proc/self/fd/{fd}"
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="openraft-py-tls-")
        path = os.path.join(self._dir, f"{i}.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        return path

    def close(self) -> None:
        """Release the copies."""
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class _Changed(Exception):
    """A watched file changed while it was copied."""
