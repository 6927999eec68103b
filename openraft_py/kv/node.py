"""``KvNode``: one running node of the key-value service and its operations.

A node owns, under its data directory ``D``: the RocksDB log store (``D/log``) and the state
machine (``D/sm``, a ``KvStateMachine``); a ``Raft``; the TCP transport (a ``TcpServer`` on
the raft address and a ``KvNetworkFactory`` for its peers, TLS when configured); the HTTP API
(``http_api``) on the HTTP address; and its Prometheus registry (``metrics``). ``start()``
brings all of it up (from whatever the data directory holds: a restart with the same options
resumes the node), ``stop()`` takes it down in the reverse order, each step bounded.

The operations (``put``, ``read``, ``init``, ...) are what the HTTP handlers call; they raise
the library's errors (``ForwardToLeader``, ``QuorumNotEnough``, ``Fatal`` ...), ``TypeError``
/ ``ValueError`` for bad arguments, and ``ServiceUnavailable`` when an operation could not
finish within its bound. ``http_api`` maps them to HTTP answers.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import re
import resource
import shutil
import socket
import ssl
import stat
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from .. import validation as _v
from ..config import Config
from ..errors import (
    Fatal,
    ForwardToLeader,
    InitializeError,
    LearnerNotFound,
    NotALearner,
    StoreOwnerMismatch,
    WaitTimeout,
)
from ..metrics import RaftMetrics
from ..network._tcp_common import self_handshake
from ..network.accept_errors import AcceptErrors, stop_accepting
from ..network.tcp import TcpNetworkFactory, TcpServer, node_id_from_cert, node_uri, parse_addr, tcp_connection_limit
from ..raft import Raft
from ..storage.rocks import RocksLogStore
from ..storage.rocks.db import CANCELLED_THREAD_WAIT, CLOSE_CALLS_WAIT, in_thread
from ..storage.rocks.files import fsync_dir, special_file_kind
from ..storage.rocks.log_store import log_store_use
from ..types import BasicNode, NodeId, ReadPolicy, ServerState
from .argtypes import check_cluster_name, check_duration
from .client import CONSISTENCIES, MAX_KEY_BYTES
from .commands import KvDelete, KvSet, KvStateMachine, encode_cas, encode_kv
from .identity import (
    IDENTITY_FILE,
    LOG_DIR,
    SM_DIR,
    DataDirMismatch,
    check_identity,
    check_not_a_store,
    check_stores,
    has_stores,
    lock_data_dir,
    owner_mismatch,
    record_identity,
)
from .metrics import KvMetrics
from .nodes import KvNetworkFactory, NodeAddrs, addrs_of, check_addr, check_member_addr, node_of, resolve, same_addr
from .rejoin import CATCHING_UP_FILE, CatchUpGuard, GuardedRaft
from .rocks_state_machine import state_machine_use

__all__ = ["ServeOptions", "KvNode", "ServiceUnavailable", "Conflict", "CONSISTENCIES", "MAX_KEY_BYTES"]

if TYPE_CHECKING:
    from .http_api import IdleConnections
    from .tls_reload import TlsReloader

log = logging.getLogger(__name__)

"""The ``consistency`` values of a read: ``linearizable`` (ReadIndex: a quorum confirms
leadership after the request), ``lease`` (LeaseRead: no RPC while the leader lease holds),
``local`` (this node's applied state as is; may be stale, any node answers)."""

_POLICY = {"linearizable": ReadPolicy.READ_INDEX, "lease": ReadPolicy.LEASE_READ}



_RUNNING: set[KvNode] = set()
"""The nodes between ``start()`` and the end of ``stop()``. The HTTP application refers to its
node weakly (``http_api.make_app``: aiohttp caches applications that served requests), so a
running node a caller no longer refers to is kept here, not by whichever of its callbacks
some server happens to hold."""

SHUTDOWN_GRACE = 3.0
"""Seconds ``stop()`` lets HTTP requests in flight finish before it cancels them."""

HTTP_SHUTDOWN_WAIT = 0.5
"""Seconds the HTTP server's shutdown (aiohttp's, once ``stop()`` drained the connections for
``SHUTDOWN_GRACE`` and stopped Raft) waits for a request still being handled, then as long
again once it cancelled it. By then a request waiting on Raft was answered (``Stopped``), so
only one stuck on its client is left (a body that stalls, an answer the client does not
read): waiting ``SHUTDOWN_GRACE`` again, twice, made such a client hold every stop three
times the grace."""

STOP_STEP_WAIT = 10.0
"""Seconds each step of ``stop()`` after the HTTP drain (the TCP server, Raft, the HTTP
server, the network, each store) may take before it is given up, logged, and the next one
begins; Raft's takes up to ``RAFT_STOP_WAIT``, each store's up to ``STORE_STOP_WAIT``."""

RAFT_STOP_WAIT = STOP_STEP_WAIT + CANCELLED_THREAD_WAIT
"""Seconds ``stop()`` waits for every task of Raft to end (``KvNode._stop_raft``), before the
stores close: a task finishing a store call in its worker thread (an apply batch, a snapshot
build) ends once the thread has, or ``CANCELLED_THREAD_WAIT`` after it was cancelled
(``in_thread``)."""

STORE_STOP_WAIT = STOP_STEP_WAIT + CLOSE_CALLS_WAIT
"""Seconds ``stop()`` gives each store's close (the log store, the state machine): a store
waits up to ``CLOSE_CALLS_WAIT`` for its own calls still running in worker threads (one
an application made, say, through the state machine) before it closes RocksDB. Bounded by
``STOP_STEP_WAIT`` alone, the step gave a close up while it still waited, as designed, and
logged a ``TimeoutError`` in place of what the close had to say."""

DRAIN_POLL = 0.01
"""Seconds between two looks of ``stop()`` at its HTTP connections while it drains them
(``KvNode._drain_http``): each look retires those that became idle and checks whether all
are settled. A poll, not a grace: no client waits on it."""


def _close_taking_queued(server: asyncio.Server) -> list[socket.socket]:
    """Close ``server``'s listening sockets and return the connections the kernel had
    completed on them that the loop had not taken yet (its queue of connections), to be
    served like the others (``KvNode._stop``). Closing a listening socket resets the
    connections in its queue: a client that connected while the loop was busy, and sent its
    request, got a reset after sending (for a write, an unknown outcome). A connection
    completed between the last ``accept`` and the close (the same step of the loop, no
    ``await`` between) is still reset: no request was read on it, but its client cannot
    tell."""
    copies = []
    for ts in server.sockets:
        try:
            copies.append(socket.socket(ts.family, ts.type, ts.proto, fileno=os.dup(ts.fileno())))
        except OSError as e:  # (no descriptor left: the queued connections are reset, as before)
            log.warning("cannot take the HTTP port's queued connections: %r", e)
    server.close()  # the loop stops accepting; each port stays open through its copy
    taken: list[socket.socket] = []
    for copy in copies:
        with copy:
            copy.setblocking(False)
            while True:
                try:
                    conn, _addr = copy.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as e:  # (a connection aborted, no descriptor left: leave the rest)
                    if e.errno == errno.ECONNABORTED:
                        continue
                    log.warning("cannot take the HTTP port's queued connections: %r", e)
                    break
                conn.setblocking(False)
                taken.append(conn)
    return taken


RESOLVE_TIMEOUT = 5.0
"""Seconds ``KvNode.add_learner`` waits for the new learner's raft host to resolve (``init``:
the other members' raft hosts) before it answers that the name could not be resolved now
(503, nothing done): the glibc resolver's own timeout for one server and one try."""

MAX_RESOLVING = 8
"""The most names ``KvNode.add_learner`` and ``init`` resolve at once (each in a thread of its
own, which a resolver that hangs holds for its whole timeout); more wait for a slot, within
``RESOLVE_TIMEOUT``."""

_RESOLVED_NOT_FOUND = frozenset(getattr(socket, n) for n in ("EAI_NONAME", "EAI_NODATA", "EAI_FAIL", "EAI_ADDRFAMILY")
                                if hasattr(socket, n))
"""The resolver's answers that a name has no address (the name is wrong), as against one that
could not find out now (``EAI_AGAIN``: no DNS server answered, say)."""


def _ip_address(host: str) -> bool:
    """Whether ``host`` (of ``parse_addr``) is an IP address, which needs no resolving. Not
    one with a zone (``fe80::1%eth0``): the resolver looks the interface up, and refuses one
    that does not exist, which ``ipaddress`` takes."""
    if "%" in host:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _resolved_to(addr: str, resolved: dict[str, list[str]], other: str) -> str | None:
    """The IP address of ``other`` (an address written with one: a name is compared as
    written only, ``same_addr``; resolving every member's name would make each call wait on
    them) when ``addr``'s host resolves to it (``_ips_of``) and the two ports are the same;
    else ``None``."""
    try:
        host, port = parse_addr(addr)
        other_host, other_port = parse_addr(other)
    except ValueError:
        return None
    if other_port != port or not _ip_address(other_host):
        return None
    return other_host if _ip(other_host) in {_ip(a) for a in _ips_of(host, resolved)} else None


def _ips_of(host: str, resolved: dict[str, list[str]]) -> list[str]:
    """The IP addresses ``host`` (of ``parse_addr``) reaches: its own if it is one (another
    spelling of a member's, ``::ffff:127.0.0.1`` for ``127.0.0.1``, is that member's: the
    strings differ), else its name's (``resolved``: IP addresses by name)."""
    return [host] if _ip_address(host) else resolved.get(host, [])


def _reaching(host: str, ip: str) -> str:
    """How ``host`` reaches the IP address ``ip`` (for a message)."""
    return f"{host!r} and {ip} are one IP address" if _ip_address(host) else f"{host!r} resolves to {ip}"


def _check_members_apart(members: dict[NodeId, NodeAddrs], resolved: dict[str, list[str]]) -> None:
    """``ValueError`` when a member's raft address, its host name resolved (``resolved``),
    reaches another member's raft or HTTP address written as an IP address (``_resolved_to``):
    ``localhost:P`` and ``127.0.0.1:P``, or ``[::ffff:127.0.0.1]:P`` and ``127.0.0.1:P``,
    which the comparison of the strings let through."""
    # The addresses written with an IP address, by IP address and port: one pass over the
    # members, not one over them for each (MAX_MEMBERS members stalled the event loop for
    # seconds). In the members' order, a raft address before an HTTP one.
    written: dict[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int], list[tuple[NodeId, str, str]]] = {}
    for other, b in members.items():
        for theirs, kind in ((b.raft, "raft_addr"), (b.http, "http_addr")):
            host, port = parse_addr(theirs)
            if _ip_address(host):
                written.setdefault((_ip(host), port), []).append((other, kind, theirs))
    order = {nid: n for n, nid in enumerate(members)}
    for nid, a in members.items():
        _check_two_ports(f"member {nid}'s ", a.raft, a.http, resolved)
        host, port = parse_addr(a.raft)
        reached = [w for ip in _ips_of(host, resolved) for w in written.get((_ip(ip), port), ()) if w[0] != nid]
        if reached:
            other, kind, theirs = min(reached, key=lambda w: (order[w[0]], w[1] != "raft_addr"))
            raise ValueError(f"member {nid}'s raft_addr {a.raft!r} is also member {other}'s {kind} {theirs!r} "
                             f"({_reaching(host, parse_addr(theirs)[0])}): each member needs addresses of its own")


def _check_two_ports(whose: str, raft: str, http: str, resolved: dict[str, list[str]]) -> None:
    """``ValueError`` when a node's ``raft`` address reaches its own ``http`` address
    (``_resolved_to``: ``localhost:P`` and ``127.0.0.1:P``), which the comparison of the
    strings let through: a node listens on two ports, and the raft port there would be
    its HTTP port."""
    ip = _resolved_to(raft, resolved, http)
    if ip is not None:
        raise ValueError(f"{whose}raft_addr {raft!r} and http_addr {http!r} are one address "
                         f"({_reaching(parse_addr(raft)[0], ip)}): a node listens on two ports")


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The IP address ``text`` (an IPv6 one's zone kept), an IPv4-mapped IPv6 address as
    its IPv4 address (``::ffff:127.0.0.1`` is ``127.0.0.1``)."""
    ip = ipaddress.ip_address(text)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return mapped if mapped is not None else ip


class ServiceUnavailable(Exception):
    """An operation did not finish within its bound (the node may still complete it); or,
    with ``nothing_done``, the node could not take it now and did nothing of it (a host name
    its resolver could not tell about): the HTTP API answers 503 with
    ``"outcome_unknown": false`` then, a refusal to retry later.

    ``stopping`` (which implies ``nothing_done``): the node refused it, doing nothing of it,
    because it is stopping, not for anything in the request: the HTTP API adds
    ``"stopping": true``, and a client may send the same request to another node at once
    (``KvClient`` does, a write too)."""

    def __init__(self, message: str, *, nothing_done: bool = False, stopping: bool = False) -> None:
        super().__init__(message)
        self.nothing_done = nothing_done or stopping
        self.stopping = stopping


class LearnerInForward(Exception):
    """``KvNode.add_learner``'s ``ForwardToLeader`` (``forward``) when the learner is in:
    ``Raft.add_learner`` raises ``ForwardToLeader`` with ``committed_log_id`` (the entry adding
    the learner committed) when this node stops leading while the call waits for the learner
    to catch up. The redirect stands (the leader finds
    the learner in, appends nothing, and waits for it), but the request was not "nothing
    done": a 503 of it never says ``"stopping": true`` (``http_api._no_leader``).

    NB: not a ``ForwardToLeader`` subclass: ``RaftError``'s subclasses are the library's
    errors (docs/reference/errors.md draws them), and the service adds none."""

    def __init__(self, forward: ForwardToLeader) -> None:
        super().__init__(str(forward))
        self.forward = forward


class Conflict(Exception):
    """The request contradicts the cluster's current state (answered 409); nothing was done."""


class NotFound(Exception):
    """The request names a member the cluster does not have (answered 404); nothing was done."""


TLS_RELOAD_INTERVAL = 60.0
"""Seconds between two looks at the TLS files by default (``--tls-reload-interval``;
``tls_reload``); 0 turns the watch off."""

MIN_TLS_RELOAD_INTERVAL = 0.1
"""The least interval other than 0 (each look ``stat``s the two or three files)."""

MAX_TLS_RELOAD_INTERVAL = 86400.0
"""The largest interval (a day): a renewal is to be taken well before the certificate expires."""

DEFAULT_MAX_BODY = 1024 * 1024
"""``serve --max-body`` when not given: the largest HTTP request body, in bytes."""

MIN_MAX_BODY = 1024
"""The smallest ``--max-body``: room for any admin request of a few members."""

JSON_BYTES_PER_BYTE = 6
"""The most bytes JSON may spell one byte of a string in (``\u0000``): a ``cas`` body carries
its entry's strings as JSON."""


def _pristine(m: RaftMetrics) -> bool:
    """Whether the node of metrics ``m`` holds no log and no vote (``Raft.initialize`` takes
    such a node only)."""
    return m.last_log_index < 0 and m.vote.term == 0


def dangling_link(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be made a directory when it, or the nearest of its parents that
    exists, is a symbolic link that leads nowhere (its target missing: a disk not mounted;
    or links in a loop), else ``None``. Creating the directories failed with a bare "File
    exists" (the link exists); creating the link's target instead would put a node's data on
    whatever disk holds the mount point."""
    p = os.fspath(path)
    while not os.path.lexists(p):  # (up to the nearest that exists, link or not)
        parent = os.path.dirname(p)
        if not parent or parent == p:
            return None
        p = parent
    if not os.path.islink(p) or os.path.exists(p):
        return None
    where = "a symbolic link" if p == os.fspath(path) else f"{p!r} is a symbolic link"
    return (f"{where} to {os.readlink(p)!r}, which leads to no directory (is its disk mounted?): "
            "create the directory it names, or give another --data-dir")


WRITE_CHECK_PREFIX = ".write-check-"
"""The name's start of ``check_writable``'s probe file (``.write-check-*.tmp``)."""


def check_writable(data: Path) -> None:
    """``OSError`` (with its errno and strerror) unless a file can be made in the directory
    ``data``: one is created and removed again. A directory that exists but takes no file
    (``/proc/self``, a read-only mount, one the user may not write) failed later, at the
    first record written, with "FileNotFoundError: ... '/proc/self/tmp-xxx.tmp'", which
    named neither the flag nor the directory. Blocking: run it in a thread."""
    fd, probe = tempfile.mkstemp(dir=data, prefix=WRITE_CHECK_PREFIX, suffix=".tmp")
    os.close(fd)
    os.unlink(probe)


def max_useful_body(config: Config) -> int:
    """The largest ``--max-body`` of a node running ``config``: what a request body can
    carry into one entry of ``config.max_entry_bytes``, every byte spelled in
    ``JSON_BYTES_PER_BYTE`` (a ``cas`` body), plus 64 KiB for the JSON around it; at least
    ``DEFAULT_MAX_BODY``. A larger body is never written (its entry is refused with 413), but
    the node reads it whole before it can tell, and the request-body budget
    (``http_api.body_budget``) grows to it: with ``--max-body 99999999999999`` one 300 MB PUT
    took the node to 1.2 GB before its 413, and nothing bounded many at once."""
    return max(DEFAULT_MAX_BODY, JSON_BYTES_PER_BYTE * config.max_entry_bytes + 64 * 1024)


class ServeOptions(msgspec.Struct, kw_only=True):
    """What one ``serve`` process runs (the §8 flags of ``openraft-py serve``).

    ``raft_config``: ``Config`` fields (milliseconds, Openraft's names) overriding the
    defaults; ``max_body``: the largest HTTP request body in bytes (a larger one gets 413);
    ``learner_timeout``: seconds ``POST /cluster/learners`` waits for the learner to catch up
    (above 0 and at most ``argtypes.MAX_TIMEOUT``, a day, as the command line's ``--timeout``);
    ``tls_bind_node_ids``: with mutual TLS, a peer's certificate must name the node id it
    speaks as, in a subjectAltName URI ``openraft://<cluster_name>/<id>`` (both directions;
    ``openraft_py.network.tcp.node_id_from_cert``); ``tls_reload_interval``: seconds between
    two looks at the TLS files for a renewed certificate, loaded without a restart
    (``tls_reload``; 0: never, the files are read at start only); ``log_format`` / ``log_level``: see ``logs``."""

    id: int
    raft_addr: str
    http_addr: str
    data_dir: str
    cluster_name: str = "openraft-py"
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    tls_bind_node_ids: bool = False
    tls_reload_interval: float = TLS_RELOAD_INTERVAL
    raft_config: dict[str, Any] = {}
    max_body: int = DEFAULT_MAX_BODY
    learner_timeout: float = 60.0
    log_format: str = "text"
    log_level: str = "INFO"

    def check(self) -> None:
        """``ValueError`` unless the options are usable (ids, addresses, TLS files, limits;
        ``raft_config`` and ``max_body`` as ``serve`` checks them: ``server.check_raft_flags``)."""
        _v.check_node_id(self.id)
        check_addr(self.raft_addr, "--raft-addr")
        check_addr(self.http_addr, "--http-addr")
        (rhost, rport), (hhost, hport) = parse_addr(self.raft_addr), parse_addr(self.http_addr)
        if rport == hport and (rhost == hhost or _wildcard_over(rhost, hhost) or _wildcard_over(hhost, rhost)):
            raise ValueError(f"--raft-addr {self.raft_addr} and --http-addr {self.http_addr} are the same port: "
                             "the node listens on two ports")
        if not self.data_dir:
            raise ValueError("--data-dir is required")
        if "\x00" in self.data_dir:  # (the start failed with the file system's bare "embedded null byte")
            raise ValueError(f"--data-dir {self.data_dir!r} holds a NUL character, which no file system takes")
        # The name is recorded in the data directory at the first start (``identity``): one
        # the transport refuses later would bind the directory to it.
        # (``serve``'s flag checks it so as it is read: ``argtypes.cluster_name``.)
        if type(self.cluster_name) is not str:
            raise ValueError(f"--cluster-name must be a str, got {type(self.cluster_name).__name__}")
        try:
            check_cluster_name(self.cluster_name)
        except ValueError as e:
            raise ValueError(f"--cluster-name: {e}") from None
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-ca needs --tls-cert and --tls-key (mutual TLS)")
        if self.tls_bind_node_ids and self.tls_ca is None:
            raise ValueError("--tls-bind-node-ids needs mutual TLS (--tls-cert, --tls-key and --tls-ca)")
        for flag, path in (("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key), ("--tls-ca", self.tls_ca)):
            if path is not None and os.path.isdir(path):
                raise ValueError(f"{flag}: {path!r} is a directory, not a PEM file")
            if path is not None and os.path.exists(path) and not os.path.isfile(path):
                # (a pipe, such as <(vault read ...), or a device: it was called "no such file")
                raise ValueError(f"{flag}: {path!r} is not a regular file (a pipe or a device?): serve reads "
                                 "each TLS file more than once; give a file")
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"{flag}: no such file: {path!r}")
        interval = self.tls_reload_interval
        if type(interval) not in (int, float) or not (
                interval == 0 or MIN_TLS_RELOAD_INTERVAL <= interval <= MAX_TLS_RELOAD_INTERVAL):
            raise ValueError(f"--tls-reload-interval must be 0 (off) or from {MIN_TLS_RELOAD_INTERVAL:g} to "
                             f"{MAX_TLS_RELOAD_INTERVAL:g} seconds, got {interval!r}")
        # Bounded as the command line's --timeout (argtypes.MAX_TIMEOUT): inf and 1e300 were
        # taken, and POST /cluster/learners then waited for good on a learner that never
        # caught up; a str failed with "'>' not supported between instances of 'str' and 'int'".
        check_duration(self.learner_timeout, "learner_timeout")
        # ``raft_config`` (its fields, with the cluster name) and ``max_body`` (from
        # ``MIN_MAX_BODY`` up) as ``serve`` checks its flags: options made in Python
        # (``KvNode(ServeOptions(...))``) were not bounded, and a ``max_body`` over what one
        # entry can use was read whole.
        from .server import check_raft_flags

        check_raft_flags(self.raft_config, self.cluster_name, self.max_body)


MAX_TLS_FILE = 16 * 2**20
"""Largest TLS file (``--tls-cert``, ``--tls-key``, ``--tls-ca``) ``serve`` reads: a CA
bundle of every public CA is about 200 KiB."""

_X509_V_ERR_INVALID_PURPOSE = 26
"""OpenSSL's verify code of a certificate without the extended key usage of its role."""

_X509_V_ERR_HOSTNAME_MISMATCH = 62
_X509_V_ERR_IP_ADDRESS_MISMATCH = 64
"""OpenSSL's verify codes of a certificate that does not name the host dialled."""


class _EncryptedKey(Exception):
    """The ``--tls-key`` file asked for a password (``_no_password``)."""


def _no_password() -> str:
    """The ``password`` of ``load_cert_chain``: without one, OpenSSL prompts on the terminal
    for an encrypted key (twice: once per context) or, with no terminal, fails with a bare
    "[Errno 22] Invalid argument"."""
    raise _EncryptedKey


def read_tls_file(flag: str, path: str, what: str = "") -> bytes:
    """The bytes of ``path`` (the file of ``flag``, holding a PEM ``what``); ``ValueError``
    naming the flag and the path if it cannot be read or is larger than ``MAX_TLS_FILE``
    (refused unread: a wrong path to a large file)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TLS_FILE + 1)
    except OSError as e:
        raise ValueError(f"{flag} {path!r}: cannot read it: {e.strerror or e}") from None
    if len(data) > MAX_TLS_FILE:
        kind = f"PEM {what} file" if what else "PEM file"
        raise ValueError(f"{flag} {path!r}: larger than {MAX_TLS_FILE} bytes, which no {kind} is")
    return data


def _pem_file(flag: str, path: str, markers: tuple[bytes, ...], what: str) -> bytes:
    """The bytes of ``path`` (the file of ``flag``); ``ValueError`` naming the flag and the
    path if it cannot be read (``read_tls_file``) or holds none of ``markers`` (``what``
    names what it should hold): ``ssl`` says only "[SSL] PEM lib", naming neither file."""
    data = read_tls_file(flag, path, what)
    if not any(m in data for m in markers):
        raise ValueError(f"{flag} {path!r}: no {what} in it (a PEM file with a '-----BEGIN {what.upper()}-----' block)")
    return data


def _unloadable_pair(cert: str, key: str, e: OSError) -> ValueError:
    """The ``ValueError`` for ``load_cert_chain(cert, key)`` failing with ``e`` for a reason
    other than an encrypted key or a key of another certificate: the file that does not
    decode is named alone when it can be told (OpenSSL's "[SSL] PEM lib" names neither).
    The certificates of ``cert`` are decoded on their own; if they decode, the key did not."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
    except ssl.SSLError as ce:
        return ValueError(f"--tls-cert {cert!r}: a certificate in it does not decode (the file is damaged or cut "
                          f"short?): {ce}")
    except OSError:  # (read a moment ago: gone meanwhile; say what load_cert_chain said)
        pass
    else:
        if isinstance(e, ssl.SSLError) and e.library == "SSL" and "PEM lib" in str(e):
            return ValueError(f"--tls-key {key!r}: the private key in it does not decode (the file is damaged or cut "
                              f"short, or holds a kind of key OpenSSL does not read?): {e}")
    return ValueError(f"--tls-cert {cert!r} / --tls-key {key!r}: cannot load them: {e}")


def _check_own_certificate(opts: ServeOptions, server: ssl.SSLContext) -> dict[str, Any]:
    """The node's certificate as ``SSLSocket.getpeercert()`` shows it (``serialNumber``,
    ``notAfter`` ...); ``ValueError`` unless the node's certificate would be taken by a peer configured as it
    is: verified as a server certificate against ``--tls-ca`` (else the system's CAs, as
    clients verify servers then) and, with ``--tls-ca``, as a client certificate by
    ``server`` (mutual TLS); with ``--tls-bind-node-ids`` it must name this node of this
    cluster. The host name is not checked (peers dial the address in the membership).

    Such a node used to start and never talk: an expired or not yet valid certificate, one
    the CA did not sign (or a CA file that holds another certificate), one for another node
    id or cluster name; peers refused every connection (the dialling side logging nothing)."""
    assert opts.tls_cert is not None and opts.tls_key is not None
    probe = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=opts.tls_ca)
    probe.check_hostname = False
    probe.load_cert_chain(opts.tls_cert, opts.tls_key, password=_no_password)
    trust = f"--tls-ca {opts.tls_ca!r}"
    if opts.tls_ca is None:
        trust = ("the system's CAs (no --tls-ca: this node's clients verify its peers against them too; "
                 "give the CA that signed the nodes with --tls-ca)")
    try:
        client = self_handshake(probe, server)
    except ssl.SSLError as e:
        if getattr(e, "reason", None) == "BAD_SIGNATURE":
            # The node's own handshake signature does not verify with its certificate's public
            # key: ``load_cert_chain``'s check that the key is the certificate's compares the
            # public parts only, so this is a key whose private part is not the certificate's
            # (a damaged key file). It said "peers would refuse this certificate".
            raise ValueError(f"--tls-key {opts.tls_key!r} does not sign for the certificate in --tls-cert "
                             f"{opts.tls_cert!r}: its public part is the certificate's but its private part is not "
                             "(the key file is damaged?): peers would refuse every handshake (BAD_SIGNATURE)") from None
        why = getattr(e, "verify_message", None) or getattr(e, "reason", None) or str(e)
        role = "client" if getattr(e, "server_side", False) else "server"
        if getattr(e, "verify_code", None) == _X509_V_ERR_INVALID_PURPOSE:
            why += " (a node's certificate serves both roles: extendedKeyUsage serverAuth,clientAuth)"
        raise ValueError(f"--tls-cert {opts.tls_cert!r}: peers would refuse this certificate: {why} "
                         f"(verified as a {role} certificate against {trust})") from None
    _warn_unless_named(opts, probe, server)
    cert: dict[str, Any] = dict(client.getpeercert() or {})  # (verified above: never empty here)
    if opts.tls_bind_node_ids:
        named = node_id_from_cert(opts.cluster_name)(cert)
        if named != opts.id:
            uri = node_uri(opts.cluster_name, opts.id)
            has = f"names node {named}" if named is not None else f"names no node id of cluster {opts.cluster_name!r}"
            raise ValueError(f"--tls-cert {opts.tls_cert!r} {has}, and --tls-bind-node-ids needs it to name "
                             f"node {opts.id}: a subjectAltName URI:{uri}")
    return cert


def _warn_unless_named(opts: ServeOptions, probe: ssl.SSLContext, server: ssl.SSLContext) -> None:
    """Log a WARNING when the node's certificate does not name the host of ``--raft-addr``
    (unless it is a wildcard address): peers dialling that address check the name and refuse
    the certificate. Not an error: the membership may hold another name for the node (given
    to ``cluster init`` or ``add-learner``) that the certificate does hold."""
    host, _ = parse_addr(opts.raft_addr)
    if host in ("0.0.0.0", "::", ""):
        return
    probe.check_hostname = True
    try:
        self_handshake(probe, server, host)
    except ssl.SSLCertVerificationError as e:
        if e.verify_code in (_X509_V_ERR_HOSTNAME_MISMATCH, _X509_V_ERR_IP_ADDRESS_MISMATCH):
            log.warning("--tls-cert %r does not name %r, the host of --raft-addr: peers dialling %s will refuse "
                        "it (%s) unless the membership holds another name of this node that it does name",
                        opts.tls_cert, host, opts.raft_addr, e.verify_message)
    except ssl.SSLError:  # (refused otherwise: _check_own_certificate said so)
        pass
    finally:
        probe.check_hostname = False


def tls_contexts(opts: ServeOptions) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """The (server, client) ``SSLContext``s of the raft port, or ``(None, None)`` without
    ``tls_cert``. With ``tls_ca`` both sides verify the peer against that CA (mutual TLS:
    a peer without a certificate the CA signed is refused); without it, clients verify the
    servers against the system's CAs. Both present ``tls_cert``.

    ``ValueError`` naming the flag and the file for what cannot work: a file that cannot be
    read or holds no PEM certificate (key, CA certificate), an encrypted key (there is no
    flag for a password: OpenSSL would prompt on the terminal), a key that is not the
    certificate's, and a certificate its peers would refuse (``_check_own_certificate``)."""
    if opts.tls_cert is None or opts.tls_key is None:
        return None, None
    server, client, _cert = checked_tls_contexts(opts)
    return server, client


def checked_tls_contexts(opts: ServeOptions) -> tuple[ssl.SSLContext, ssl.SSLContext, dict[str, Any]]:
    """``tls_contexts`` of options with ``tls_cert`` and ``tls_key``, and the node's
    certificate as a peer sees it (``getpeercert()``: ``serialNumber``, ``notAfter`` ...).
    Blocking: it reads the files and parses the key (``tls_reload`` runs it in a thread)."""
    assert opts.tls_cert is not None and opts.tls_key is not None
    _pem_file("--tls-cert", opts.tls_cert, (b"-----BEGIN CERTIFICATE-----",), "certificate")
    key = _pem_file("--tls-key", opts.tls_key, (b"PRIVATE KEY-----",), "private key")
    if opts.tls_ca is not None:
        _pem_file("--tls-ca", opts.tls_ca, (b"-----BEGIN CERTIFICATE-----",), "certificate")
    try:
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(opts.tls_cert, opts.tls_key, password=_no_password)
    except _EncryptedKey:
        raise ValueError(f"--tls-key {opts.tls_key!r} is encrypted (password-protected): serve takes an "
                         "unencrypted key (openssl pkey -in KEY -out NEW_KEY; keep it readable by the node only)"
                         ) from None
    except (OSError, ssl.SSLError) as e:  # (ssl.SSLError is an OSError; named for the reader)
        if getattr(e, "reason", None) == "KEY_VALUES_MISMATCH":
            hint = ""
            if b"CERTIFICATE-----" in key:
                hint = " (the --tls-key file holds a certificate too)"
            raise ValueError(f"--tls-key {opts.tls_key!r} is not the key of the certificate in --tls-cert "
                             f"{opts.tls_cert!r} (its first certificate: the node's own must come first, then "
                             f"its chain){hint}") from None
        raise _unloadable_pair(opts.tls_cert, opts.tls_key, e) from None
    try:
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=opts.tls_ca)
        client.load_cert_chain(opts.tls_cert, opts.tls_key, password=_no_password)
        if opts.tls_ca is not None:
            server.load_verify_locations(opts.tls_ca)
            server.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"--tls-ca {opts.tls_ca!r}: cannot load it: {e}") from None
    cert = _check_own_certificate(opts, server)
    return server, client, cert


def _listen_error(flag: str, addr: str, e: OSError) -> OSError:
    """``e`` (from binding ``addr``) as an ``OSError`` of the same kind naming ``flag``:
    asyncio's own says only "error while attempting to bind on address (host, port)"."""
    if isinstance(e, socket.gaierror):  # (its errno is the resolver's, not the system's)
        why = "the host name does not resolve"
    elif e.errno and e.errno > 0:
        why = os.strerror(e.errno)  # (asyncio's strerror holds its whole message)
    else:
        why = str(e)
    if e.errno == errno.EADDRINUSE:
        why += " (another process listens there)"
    return type(e)(e.errno, f"{flag} {addr}: cannot listen there: {why}")


def check_can_listen(flag: str, addr: str) -> None:
    """``OSError`` naming ``flag`` (``_listen_error``) when ``addr`` cannot be listened on
    now: a port another process listens on, an address not on this machine, a host name
    that does not resolve. Each address the host resolves to is bound as the servers bind
    it (``SO_REUSEADDR``; IPv6 alone on an IPv6 socket) and closed again. Blocking (the
    resolver): call it in a worker thread.

    ``KvNode.start`` asks it of both addresses before it makes anything in the data
    directory: a first start that failed on a port made the directory, its stores and its
    record (``node.json``), and a later start with the right ``--id`` or ``--cluster-name``
    was refused as if another node's data were there. (A port taken between this check and
    the server's own bind fails the start later: a first start then removes what it made,
    ``remove_first_start``.)"""
    host, port = parse_addr(addr)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as e:
        raise _listen_error(flag, addr, e) from None
    for family, kind, proto, _name, sockaddr in dict.fromkeys(infos):
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPV6_V6ONLY"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(sockaddr)
            except OSError as e:
                raise _listen_error(flag, addr, e) from None


def _wildcard_over(host: str, other: str) -> bool:
    """Whether ``host`` (as written) is a wildcard that a listener on ``other`` would share a
    port with: ``0.0.0.0`` over any host but an IPv6 literal, ``::`` over any but an IPv4
    one. The servers bind an IPv6 socket for IPv6 alone (``IPV6_V6ONLY``), so ``0.0.0.0:P``
    and ``[::1]:P`` are two listeners. (A host name may resolve to either family: kept, and
    ``check_distinct_ports`` resolves it at the start.)"""
    if host == "0.0.0.0":
        return ":" not in other  # (an IPv6 literal is the only host with a colon)
    if host == "::":
        return not _is_ipv4(other)
    return False


def _is_ipv4(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET, host)
    except OSError:
        return False
    return True


def check_distinct_ports(raft_addr: str, http_addr: str) -> None:
    """``ValueError`` when ``raft_addr`` and ``http_addr``, as resolved, name one port of one
    address of this machine (the same address, or a wildcard of the same family and any of
    it): the node would listen there twice. ``NodeOptions.check`` compares the hosts as
    written; this resolves them (``127.0.0.1:21001`` and ``localhost:21001``), so the start
    says so, where the second bind failed with "Address already in use (another process
    listens there)" and the process there was the node itself. A host that does not resolve
    passes: ``check_can_listen`` names it. Blocking (the resolver): call it in a worker thread."""
    (rhost, rport), (hhost, hport) = parse_addr(raft_addr), parse_addr(http_addr)
    if rport != hport:
        return
    wildcard: dict[int, str] = {socket.AF_INET: "0.0.0.0", socket.AF_INET6: "::"}
    for family, ip in _bound_ips(rhost, rport):
        for family2, ip2 in _bound_ips(hhost, hport):
            if family == family2 and (ip == ip2 or wildcard.get(family) in (ip, ip2)):
                raise ValueError(f"--raft-addr {raft_addr} and --http-addr {http_addr} are the same port ({ip2} "
                                 f"port {hport}): the node listens on two ports")


def _bound_ips(host: str, port: int) -> set[tuple[int, str]]:
    """The ``(family, ip)`` pairs a listener on ``host``:``port`` binds (none if it does not
    resolve)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return set()
    return {(family, str(sockaddr[0])) for family, _kind, _proto, _name, sockaddr in infos}


FIRST_START_FILE = "first-start-unfinished"
"""The marker of a first start in a data directory (an empty file): made, durably, before
anything else a first start makes there (``mark_first_start``, under the directory's lock),
removed once the directory holds the whole new node and before the raft port opens (no peer
can have reached the node yet), and made again by ``remove_first_start`` before it removes
anything, removed last (``clear_first_start``). So it is there exactly while the directory
holds what a first start made and the node never served from it: a start that finds it
beside anything else was stopped (SIGKILL, a power loss) part way. That start removes the
leftover and goes on as a first start when each entry is one a first start makes
(``made_by_a_first_start``) and its stores hold nothing a first start never writes
(``first_start_stores_used``), and refuses otherwise (``check_first_start_leftover``). Left
alone, a clean-up killed part way left some of the node's files: without ``catching-up.json``
the next start came up as a node that had voted before (no catch-up before it votes), without
``node.json`` the rest was adopted, and a log store half removed failed as an unreadable
database, or as "the node's log and vote are gone"."""

FIRST_START_ENTRIES: dict[str, bool] = {LOG_DIR: True, SM_DIR: True, IDENTITY_FILE: False, CATCHING_UP_FILE: False}
"""What a first start makes in its data directory beside its marker, by name: whether each is
a directory (the stores, ``RocksLogStore`` and ``KvStateMachine``) or a regular file (the
records, ``record_identity`` and ``CatchUpGuard.load``). Their temporary files are
``FIRST_START_TEMPORARY``. A new entry a first start makes must be named here, or a start
killed after making it is refused for good (``check_first_start_leftover``): the test
``test_first_start_leftover`` compares this with what a whole first start made."""

FIRST_START_TEMPORARY = re.compile(rf"(?:tmp-|{re.escape(WRITE_CHECK_PREFIX)})[a-z0-9_]+\.tmp")
"""The temporary files a first start makes in its data directory (regular files), left by a
kill before their rename or removal: ``replace_durably``'s while it writes ``node.json`` or
``catching-up.json`` (``durable_temp``'s default ``tmp-*.tmp``), and ``check_writable``'s
probe (a start on a leftover makes it before it looks at the marker)."""


def made_by_a_first_start(entry: os.DirEntry[str]) -> bool:
    """Whether ``entry`` (of a data directory) is one a first start makes: one of its names
    (``FIRST_START_ENTRIES``, ``FIRST_START_TEMPORARY``) and of that name's kind, a
    directory where it makes a directory and a regular file where it makes a file, never a
    symbolic link (removing one's target, or leaving it, would not be what was made)."""
    is_dir = FIRST_START_ENTRIES.get(entry.name)
    if is_dir is None and FIRST_START_TEMPORARY.fullmatch(entry.name):
        is_dir = False
    if is_dir is None:
        return False
    return entry.is_dir(follow_symlinks=False) if is_dir else entry.is_file(follow_symlinks=False)


def mark_first_start(data: Path) -> None:
    """Make ``data``'s ``FIRST_START_FILE`` (there already: kept), durably: the file (its
    inode) and then the directory's entry are fsynced, before anything else is made. Blocking."""
    fd = os.open(data / FIRST_START_FILE, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(str(data))


def unmark_first_start(data: Path) -> None:
    """Remove ``data``'s ``FIRST_START_FILE``, durably: after everything else a first start made
    there (``remove_first_start``), or once the directory holds the whole new node. Blocking."""
    (data / FIRST_START_FILE).unlink(missing_ok=True)
    fsync_dir(str(data))


def is_locked_dir(data: Path, lock: int) -> bool:
    """Whether the path ``data`` still leads to the directory whose descriptor ``lock`` is
    (``lock_data_dir``): not if a link on the way changed, or the working directory did for
    a relative path. Blocking."""
    locked, now = os.fstat(lock), os.stat(data)
    return (locked.st_dev, locked.st_ino) == (now.st_dev, now.st_ino)


def clear_first_start(data: Path) -> list[str]:
    """Remove everything in ``data`` (what a first start made there), durably and marker
    last, and return the names removed (sorted; the marker's is not among them). The marker
    (``FIRST_START_FILE``) is made first if anything else is there (an empty directory
    needs none: a full disk), so a kill part way leaves it beside what is left; the
    directory is fsynced once the rest is gone and before the marker goes (fsynced again),
    so no crash keeps a removed entry without its marker. The caller holds the directory's
    lock. Blocking; ``OSError`` from a removal or an fsync."""
    names = sorted(name for name in os.listdir(data) if name != FIRST_START_FILE)
    if names:
        mark_first_start(data)  # (before anything is removed)
    for name in names:
        entry = data / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    if names:
        fsync_dir(str(data))
    unmark_first_start(data)  # (last: until here, what is left is recognised)
    return names


def first_start_stores_used(data: Path) -> list[str]:
    """What the stores in ``data`` (``log/``, ``sm/``) hold that no first start writes, each
    prefixed by the store's name ("log: a vote", "sm: applied data"); ``[]`` when they hold
    only what a first start writes there, or are missing.

    A first start's marker is removed before its raft port opens, so no first start ever
    saved a vote, an entry, a committed or purged log id, applied an entry or made a
    snapshot: its stores hold their format markers, their acknowledged-mark flags and the
    owner records (``Raft.new``'s ``check_owner``; of whichever node and cluster that start
    was given) and nothing else (``log_store_use``, ``state_machine_use``: read-only opens,
    nothing written). A store that does not open and holds no write (RocksDB killed while it
    made the database) counts as a first start's. Blocking."""
    used = [f"{LOG_DIR}: {what}" for what in log_store_use(data / LOG_DIR)]
    used += [f"{SM_DIR}: {what}" for what in state_machine_use(data / SM_DIR)]
    return used


def has_first_start_marker(data: Path) -> bool:
    """Whether ``data`` holds ``FIRST_START_FILE``: ``False`` only when nothing at all has
    that name, ``True`` for a regular file (a link to one too), whatever it holds: the marker
    is looked at (``stat``), never read. (It was read whole: a large file there was read
    into memory at every start, a named pipe blocked the start for good, and a link to
    ``/dev/zero`` read until memory ran out.) ``DataDirMismatch`` when what has the name is no
    regular file (a symbolic link to nothing or to itself, a directory, a named pipe, a
    device, a socket): no first start makes that (it makes an empty regular file), so what is
    beside it is not provably a killed start's leftover, and without it the directory is not
    provably a node's data either. (``exists()`` took a link to nothing for no marker: the
    unfinished first start was forgotten, its leftover started on as a node's data, or
    refused as another node's, and the link stayed for good.) Blocking."""
    path = data / FIRST_START_FILE
    try:
        mode = os.stat(path).st_mode  # (follows a link: a link to a regular file is a marker)
    except FileNotFoundError:
        if not os.path.islink(path):
            return False
        why = f"it is a symbolic link to {os.readlink(path)!r}, which does not exist"
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        why = f"it is a symbolic link that never reaches a file: {e.strerror}"
    else:
        if stat.S_ISREG(mode):
            return True
        why = _not_a_regular_file(mode)
    raise DataDirMismatch(
        f"{data}: {FIRST_START_FILE}, the marker of a first start stopped part way, is not a readable file "
        f"({why}): nothing was removed. If the directory holds a node's data you put there (a backup "
        f"restored), remove {FIRST_START_FILE} and start the node again; if not, remove everything in it (or the "
        "directory) and start the node again"
    )


def _not_a_regular_file(mode: int) -> str:
    """What a file of ``mode`` that is not a regular file is, for a refusal."""
    if stat.S_ISDIR(mode):
        return "it is a directory"
    return f"it is {special_file_kind(mode) or 'not a regular file'}"


def check_first_start_leftover(data: Path, lock: int) -> bool:
    """Whether ``data`` held what a first start stopped part way (SIGKILL, a power loss, the
    OOM killer) left (``FIRST_START_FILE``); if so, it is now empty, as at a first start.
    ``False`` without a marker; ``DataDirMismatch`` for a marker that is no readable file
    (``has_first_start_marker``). ``lock``: the directory's flock the caller holds
    (``lock_data_dir``), from before this looks until the start ends or undoes itself.

    What is beside the marker is the files of a node that never served (a first start
    killed while it made them, or while its clean-up removed them). When each is one a first
    start makes (``made_by_a_first_start``) and its stores hold nothing a first start never
    writes (``first_start_stores_used``: no vote, no entry, nothing applied), they are
    removed (``clear_first_start``) and a WARNING names them: refused, under systemd's
    ``Restart=on-failure`` the node exited 1 at each restart until someone emptied the
    directory. Anything else there (another name, a known name of another kind, a store that
    was used: an operator's copy of a node's data, someone else's file), or ``data`` no
    longer the directory ``lock`` holds (a link changed), is not provably the start's:
    ``DataDirMismatch`` says to remove the directory's content, and nothing is changed (a
    used store is named in a WARNING first). Blocking."""
    if not has_first_start_marker(data):
        return False
    with os.scandir(data) as it:
        entries = [entry for entry in it if entry.name != FIRST_START_FILE]
    foreign = sorted(entry.name for entry in entries if not made_by_a_first_start(entry))
    if not is_locked_dir(data, lock):
        why = "the path now leads to another directory than the one this start locked"
    elif foreign:
        why = "entries no first start makes: " + ", ".join(foreign[:6]) + (", ..." if len(foreign) > 6 else "")
    else:
        # Names and kinds are not enough: a real node's stores copied in beside the marker
        # (a backup restored there) hold its vote and the entries it acknowledged.
        used = first_start_stores_used(data)
        why = "stores holding what no first start writes: " + "; ".join(used) if used else ""
        if used:
            log.warning("%s: its stores hold what no first start writes (%s): not a first start's leftover, nothing "
                        "is removed", data, "; ".join(used))
    if why:
        raise DataDirMismatch(
            f"{data} holds the marker of a first start stopped part way ({FIRST_START_FILE}) beside {why}: not "
            f"provably that start's, so nothing was removed. If it is a node's data you put there (a backup "
            f"restored), remove {FIRST_START_FILE} and start the node again; if not, remove everything in it (or the "
            f"directory) and start the node again"
        )
    removed = clear_first_start(data)
    if removed:
        log.warning("%s held what a first start left when it was stopped part way (%s, and its marker %s): that start "
                    "never served, and each of them is what a first start makes, so they were removed; starting as a "
                    "first start", data, ", ".join(removed), FIRST_START_FILE)
    return True


def first_start_dirs(data: Path) -> list[Path] | None:
    """What a start on ``data`` (an absolute path) may make, for ``make_first_start_dirs``
    and ``remove_first_start``: the missing directories (``data`` and each missing parent,
    innermost first), or ``[]`` when ``data`` is an empty directory; ``None`` when it holds
    anything (a node's data, or files of someone else's): not a first start, nothing of it
    is ever removed. A path with ``..`` claims no directory: ``x/../kept/n1`` with ``x``
    missing would count ``x/../kept`` as missing, though it is ``kept`` once ``x`` is made
    (its content is still this start's to remove: ``data`` did not exist)."""
    if data.is_dir():
        return None if any(data.iterdir()) else []
    missing: list[Path] = []
    at = data
    while ".." not in at.parts and not at.exists() and not at.is_symlink() and at != at.parent:
        missing.append(at)
        at = at.parent
    return missing


def make_first_start_dirs(missing: list[Path]) -> list[Path]:
    """Make the directories of ``missing`` (``first_start_dirs``), outermost first, and
    return those this call's own ``mkdir`` created (innermost first): one another process
    made meanwhile (another node's ``serve`` making the same parent) is not this start's to
    remove. Stops at the first other error (the caller's ``mkdir`` then reports it)."""
    made: list[Path] = []
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        except OSError:
            break
        made.append(d)
    made.reverse()
    return made


def remove_first_start(data: Path, made: list[Path], lock: int) -> None:
    """Undo a first start that failed (``KvNode.start``): remove what is in ``data`` (the
    absolute path the start began with), and the directories of ``made``
    (``make_first_start_dirs``: those the start's own ``mkdir`` created) that are empty
    then; never anything that was there before the start (the start found ``data`` empty
    once it held its lock, or made it). ``lock``: the directory's flock the start took and
    still holds (``lock_data_dir``; the caller closes it): held from the start to the end
    of this, no other ``serve`` can have used the directory meanwhile. Nothing is removed
    unless ``data`` is the directory locked (a relative path, the working directory changed,
    or a link changed). Blocking: call it in a worker thread. Best effort: an error is
    logged."""
    try:
        if not is_locked_dir(data, lock):
            log.warning("%s: not the directory this failed first start locked: nothing removed", data)
            return
        clear_first_start(data)
        for d in made:  # (innermost first; a parent that holds something else stays)
            try:
                d.rmdir()
            except OSError:
                break
    except OSError as e:
        log.warning("%s: could not remove what a failed first start made in it: %s", data, e)


def _index(log_id: Any) -> int | None:
    return None if log_id is None else int(log_id.index)


class KvNode:
    """One node of the key-value service (see the module docstring).

    Attributes: ``opts``; ``raft``, ``sm``, ``log_store``, ``tcp_server``, ``factory``
    (``None`` before ``start()``; ``raft`` and ``sm`` stay readable after ``stop()``);
    ``metrics`` (the node's ``KvMetrics``); ``raft_port`` / ``http_port`` (the bound ports);
    ``accepting`` (``False`` once ``stop()`` began: the HTTP API answers 503); ``http_closing``
    (an ``asyncio.Event`` set once ``stop()`` drained the HTTP requests, before it closes the
    HTTP server: a body the API still drops ends then); ``inflight`` (HTTP requests being handled);
    ``stopped`` (an ``asyncio.Event`` set when ``stop()``
    finished).
    """

    def __init__(self, opts: ServeOptions) -> None:
        opts.check()
        self.opts = opts
        self.id: NodeId = opts.id
        self.raft: Raft | None = None
        self.sm: KvStateMachine | None = None
        self.log_store: RocksLogStore | None = None
        self.tcp_server: TcpServer | None = None
        self.factory: KvNetworkFactory | None = None
        self.metrics = KvMetrics(lambda: self.raft.metrics if self.raft is not None else None)
        self._http: Any = None  # aiohttp AppRunner
        self._http_listener: asyncio.Server | None = None  # the HTTP port's listening socket(s)
        self._http_factory: Callable[[], asyncio.BaseProtocol] | None = None  # its connections' protocols
        self._http_accept_errors: AcceptErrors | None = None  # its accept errors, logged once
        self._dir_lock: int | None = None  # the data directory's flock (``identity.lock_data_dir``)
        self._dir_locked = False  # whether start() took that lock (a failed first start may then undo itself)
        self.catch_up: CatchUpGuard | None = None
        """Whether the node is catching up before it votes (``rejoin``); set by ``start()``."""
        self.http_port: int | None = None
        self.raft_port: int | None = None
        self.stopped = asyncio.Event()
        self._stop_task: asyncio.Future[None] | None = None  # ``stop()``'s, once called
        self._started = False  # ``start()`` was called (a node starts once)
        self.accepting = True
        self.http_closing = asyncio.Event()  # set once ``_drain_http`` ended (``_stop``)
        self.inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.last_rpc_error: dict[NodeId, str] = {}
        """The last ``RPCError`` of a request to each peer (``_on_rpc_error``), as text."""
        self._resolve_slots = asyncio.Semaphore(MAX_RESOLVING)  # (``_resolve_in_slot``)
        self._resolving: set[asyncio.Future[Any]] = set()  # the resolutions running (cancelled by stop)
        self.tls_reloader: TlsReloader | None = None
        """Watches the TLS files for a renewal (``tls_reload``); set by ``start()`` with TLS
        and a ``tls_reload_interval`` other than 0."""
        self.http_conns: IdleConnections | None = None
        """Closes the HTTP connections idle for ``HTTP_IDLE_TIMEOUT``, with a 408
        (``http_api.IdleConnections``); set by ``start()``."""

    def _tls_loaded(self, cert: dict[str, Any]) -> None:
        """The certificate new connections present is ``cert`` (at start, or a renewal
        loaded): its expiry goes to ``openraft_kv_tls_cert_expiry_timestamp_seconds``."""
        from .tls_reload import expires_at

        at = expires_at(cert)
        if at is not None:
            self.metrics.set_tls_cert_expiry(at)

    def _on_rpc_error(self, target: NodeId, rpc: str, error: BaseException) -> None:
        """The ``KvNetworkFactory`` hook: count the error and keep it as the peer's last."""
        self.last_rpc_error[target] = str(error)
        self.metrics.on_rpc_error(target, rpc, error)

    def _on_peer_left(self, target: NodeId) -> None:
        """The ``KvNetworkFactory`` hook for a node that left the membership: drop its last
        error and its error counters (they were kept for every node the cluster ever had)."""
        self.last_rpc_error.pop(target, None)
        self.metrics.forget_peer(target)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the stores, start Raft, the TCP server and the HTTP API. On failure, what was
        started is stopped again and the error raised.

        A ``KvNode`` starts once: ``RuntimeError`` (nothing done) when ``start()`` was called
        before (the node runs, or is starting) or ``stop()`` was (to run the node again,
        start a new ``KvNode(opts)``). A second start of a running node failed on its own data
        directory's lock, saying another process used it, and its clean-up stopped the
        running node; a start after ``stop()`` opened everything again but answered every
        request 503, and ``stop()`` (done already) no longer closed anything."""
        if self._stop_task is not None:
            raise RuntimeError(f"node {self.id} was stopped: a KvNode starts once; start a new KvNode(opts) to run "
                               "the node again")
        if self._started:
            raise RuntimeError(f"node {self.id} is running already: a KvNode starts once (stop() it, then start a "
                               "new KvNode(opts) to run it again)")
        self._started = True
        _RUNNING.add(self)
        from .http_api import (
            HTTP_IDLE_TIMEOUT,
            MAX_HEADER_FIELD,
            MAX_REQUEST_LINE,
            SERVER_LOG,
            IdleConnections,
            capped_connections,
            make_app,
        )

        o = self.opts
        data = Path(o.data_dir)
        # What a failed first start removes is named absolutely, once: a relative --data-dir
        # taken again after the working directory changed (a program embedding KvNode) is
        # another directory, maybe another node's.
        where = data.absolute()
        made: list[Path] | None = None  # what a first start made (``make_first_start_dirs``); None: not one
        try:
            # Before anything is made in the data directory (``check_can_listen``).
            for flag, addr in (("--raft-addr", o.raft_addr), ("--http-addr", o.http_addr)):
                await asyncio.to_thread(check_can_listen, flag, addr)
            await asyncio.to_thread(check_distinct_ports, o.raft_addr, o.http_addr)
            try:
                made = first_start_dirs(where)
                if data.exists() and not data.is_dir():
                    raise NotADirectoryError(errno.ENOTDIR, "it is a file, not a directory")
                dangling = dangling_link(data)
                if dangling is not None:
                    raise FileNotFoundError(errno.ENOENT, dangling)
                if made:
                    made = make_first_start_dirs(made)
                data.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise type(e)(e.errno, f"--data-dir {o.data_dir!r}: {e.strerror}") from None
            try:
                await asyncio.to_thread(check_writable, data)
            except OSError as e:
                raise type(e)(e.errno, f"--data-dir {o.data_dir!r}: no file can be made in it: {e.strerror}") from None
            # One process at a time (held until stop): before the record is read or written.
            self._dir_lock = lock_data_dir(data)
            self._dir_locked = True  # (from here on, the directory's content is this start's)
            if made is not None and any(data.iterdir()):
                # Decided again under the lock: another serve given the same new directory
                # may have made, used (a vote, entries acknowledged) and left its data there
                # since ``first_start_dirs`` looked. Not a first start: nothing is removed.
                # Before the leftover check: its refusal must find ``made`` None (it removed
                # the other start's files, though it says that it changes nothing).
                made = None
            if await in_thread(check_first_start_leftover, data, self._dir_lock) and made is None:
                made = []  # (a first start's leftover was removed: the directory is empty now, a first start's)
            if made is not None:  # before anything else is made in it (``FIRST_START_FILE``)
                await in_thread(mark_first_start, data)
            # The steps below run in threads with ``in_thread``: a start cancelled (SIGTERM) while
            # one runs ends once it has, so a failed first start undoes itself after the last
            # write in its directory (``node.json`` written after the removal stayed).
            # Whose data this is (``identity``): checked before anything in it is opened. A
            # directory without the record gets it once its stores exist (below).
            # (``lexists``: a record that is a link to nothing is a record that cannot be read,
            # not a directory without one: it was adopted, the link replaced)
            recorded = os.path.lexists(data / IDENTITY_FILE)
            if recorded:
                await in_thread(check_identity, data, o.id, o.cluster_name)
            else:  # a first start: not one of a node's stores (--data-dir n1/log), nor inside its directory
                await in_thread(check_not_a_store, data)
            # ... and that it holds the node's log if it holds its state machine (or was recorded).
            await in_thread(check_stores, data, recorded)
            adopted = not recorded and await in_thread(has_stores, data)
            # An empty directory (a new node, or a voter whose data was lost) catches up before
            # it votes (``rejoin``); the record of it is written before the node answers anything.
            guard = self.catch_up = await in_thread(CatchUpGuard.load, data, o.id, not recorded and not adopted)
            config = msgspec.convert({**o.raft_config, "cluster_name": o.cluster_name}, Config)
            server_ctx = client_ctx = None
            server_cert: dict[str, Any] = {}
            if o.tls_cert is not None:
                from .tls_reload import tls_file_stats

                tls_stats = tls_file_stats(o)  # (before the files are read: a change while starting is seen)
                server_ctx, client_ctx, server_cert = checked_tls_contexts(o)
                self._tls_loaded(server_cert)
            self.log_store = await RocksLogStore.open(data / LOG_DIR)
            self.sm = await KvStateMachine.open(data / SM_DIR)
            # With --tls-bind-node-ids a peer's certificate must name the node id it speaks as
            # (or, dialled, the node we meant): the openraft://<cluster>/<id> SAN URI.
            bind = node_id_from_cert(o.cluster_name) if o.tls_bind_node_ids else None
            tcp = TcpNetworkFactory(o.id, o.cluster_name, ssl=client_ctx, peer_id_of_cert=bind)
            self.factory = KvNetworkFactory(tcp, self._on_rpc_error, self._on_peer_left,
                                            campaign_gate=guard.campaign_refusal)
            try:
                self.raft = await Raft.new(o.id, config, self.factory, self.log_store, self.sm)
            except StoreOwnerMismatch as e:
                # The log store's own owner record names another node or cluster (its node.json
                # was removed, or the log/ directory came from another node's).
                raise owner_mismatch(data, e) from None
            if not recorded:
                # Only now: the log store's owner (checked or recorded by Raft.new) agrees.
                await in_thread(record_identity, data, o.id, o.cluster_name)
                if adopted:
                    log.warning("%s had no %s (made by an earlier version, or a first start that stopped before "
                                "recording it): recorded as node %s of cluster %r", data, IDENTITY_FILE, o.id,
                                o.cluster_name)
            if made is not None:  # the directory holds the whole new node: before a peer can reach it
                await in_thread(unmark_first_start, data)
            # What the two ports may hold, counting the descriptors the node holds already.
            http_limit, raft_limit = self._connection_limits()
            host, port = parse_addr(o.raft_addr)
            try:
                self.tcp_server = await TcpServer.start(GuardedRaft(self.raft, guard), host, port,
                                                        cluster_name=o.cluster_name, max_connections=raft_limit,
                                                        ssl=server_ctx, peer_id_of_cert=bind)
            except OSError as e:
                raise _listen_error("--raft-addr", o.raft_addr, e) from None
            self.raft_port = self.tcp_server.port
            if server_ctx is not None and client_ctx is not None and o.tls_reload_interval > 0:
                from .tls_reload import TlsReloader

                self.tls_reloader = TlsReloader(o, server_ctx, client_ctx, server_cert, o.tls_reload_interval,
                                                loaded=tls_stats, on_loaded=self._tls_loaded)
                self.tls_reloader.expiry.check(server_cert, time.time())
                self.tls_reloader.start()
            elif server_ctx is not None and o.tls_cert is not None:
                from .tls_reload import ExpiryWarnings

                ExpiryWarnings(o.tls_cert).check(server_cert, time.time())  # (at start only: no watch)
            from aiohttp import web

            app = make_app(self)
            # auto_decompress=False: a compressed body is refused by the API (415) rather than
            # decoded, or refused, by aiohttp's parser (``http_api``). logger: a
            # request the parser refuses is logged in one line (``http_api.SERVER_LOG``).
            # keepalive_timeout: a backstop only; ``IdleConnections`` closes a connection idle
            # for HTTP_IDLE_TIMEOUT first, with a 408 (aiohttp's timer closes it with no word).
            self._http = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=HTTP_SHUTDOWN_WAIT,
                                       max_line_size=MAX_REQUEST_LINE, max_field_size=MAX_HEADER_FIELD,
                                       auto_decompress=False, logger=SERVER_LOG, keepalive_timeout=2 * HTTP_IDLE_TIMEOUT)
            await self._http.setup()
            assert self._http.server is not None  # (made by setup)
            self.http_conns = IdleConnections(self._http.server, HTTP_IDLE_TIMEOUT, self._current_leader_id)
            self.http_conns.start()
            hhost, hport = parse_addr(o.http_addr)
            # The listener's protocol factory caps the open connections (``MAX_HTTP_CONNECTIONS``).
            self._http_accept_errors = AcceptErrors(f"HTTP port {o.http_addr}", log)
            factory = self._http_accept_errors.guard(
                capped_connections(self._http.server, http_limit, self._http_accept_errors))
            self._http_factory = factory
            try:
                self._http_listener = await asyncio.get_running_loop().create_server(
                    factory, hhost, hport, reuse_address=True, backlog=128)
            except OSError as e:
                raise _listen_error("--http-addr", o.http_addr, e) from None
            self.http_port = self._http_listener.sockets[0].getsockname()[1]
            self._http_accept_errors.log.subject = f"HTTP port {hhost}:{self.http_port}"  # (port 0: the one bound)
            self._http_accept_errors.watch(self._http_listener.sockets)
        except BaseException:
            raft_server = self.tcp_server
            # A first start that failed (a port taken after ``check_can_listen``, say) removes
            # what it made: left, the directory was recorded as this node's, and a corrected
            # command line (another --id or --cluster-name) was refused as another node's
            # data. Only if no peer's request reached Raft (``delivered``, read once the server
            # is closed): a vote granted or an entry acknowledged must never be forgotten. The
            # directory's lock is kept from ``stop`` (which releases it) to the removal's end:
            # released between them, another serve could start on the data, serve and leave.
            held = self._dir_lock if made is not None and self._dir_locked else None
            if held is not None:
                self._dir_lock = None
            try:
                await self.stop()
                if held is not None and made is not None and (raft_server is None or raft_server.delivered == 0):
                    await in_thread(remove_first_start, where, made, held)  # (the lock outlives it)
            finally:
                if held is not None:
                    os.close(held)
            raise
        m = self.raft.metrics
        log.info("serving: raft %s, http %s, data %s (term %s, last log index %s)",
                 o.raft_addr, o.http_addr, o.data_dir, m.current_term, m.last_log_index)
        self._warn_if_recorded_elsewhere()

    def _connection_limits(self) -> tuple[int, int]:
        """The HTTP and raft ports' connection limits (``http_api.connection_limits``), a
        WARNING when they are lower than the defaults for the limit of open files and the
        HTTP one below a quarter of ``MAX_HTTP_CONNECTIONS`` (128: a limit of open files
        under about 300); not under the usual 1024, where they are only a little lower."""
        from .http_api import (
            FILES_RESERVE,
            MAX_HTTP_CONNECTIONS,
            connection_limits,
            http_connection_limit,
            open_descriptors,
        )

        in_use = open_descriptors()
        http, raft = connection_limits(in_use)
        default_http, default_raft = http_connection_limit(), tcp_connection_limit()
        if (http, raft) != (default_http, default_raft) and http < MAX_HTTP_CONNECTIONS // 4:
            soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            log.warning("the limit of open files (%d, ulimit -n) leaves %d beyond the %d the node holds: it takes at "
                        "most %d HTTP and %d raft connections (instead of %d and %d), keeping %d for its own files; "
                        "raise the limit (ulimit -n 1024 or more)", soft, soft - (in_use or 0), in_use or 0, http,
                        raft, default_http, default_raft, FILES_RESERVE)
        return http, raft

    def _warn_if_recorded_elsewhere(self, recorded: NodeAddrs | None = None) -> None:
        """One WARNING at start when the membership this node holds records it at other
        addresses than ``--raft-addr`` / ``--http-addr`` (it was restarted on new ones and the
        membership was not told): the other nodes send to the recorded raft address, and
        clients are redirected to the recorded HTTP one, so the node is cut off and nothing
        else says why (the leader logs the recorded address unreachable, this node finds no
        leader). A wildcard listen address (``0.0.0.0``) is not compared: the membership
        cannot hold one. Another name of the same address (``localhost`` for
        ``127.0.0.1``) or a translated one is warned of too; the message says to ignore it
        then. ``recorded``: the addresses a membership this node just made records it at
        (``init``, whose members a client gives: a mistyped own address was taken without a
        word, and warned of only at the next start); by default those of the one it holds."""
        o = self.opts
        if recorded is None:
            node = self._raft().metrics.membership_config.membership.nodes.get(o.id)
            if node is None:
                return
            recorded = addrs_of(node)
        moved = []
        for flag, given, kept in (("--raft-addr", o.raft_addr, recorded.raft), ("--http-addr", o.http_addr, recorded.http)):
            try:
                check_member_addr(given, flag)
            except ValueError:  # a wildcard: not comparable
                continue
            if kept and not same_addr(kept, given):  # (a stored ":021001" is port 21001)
                moved.append(f"{flag} {given} (recorded: {kept})")
        if moved:
            log.warning("node %s: the membership records this node at other addresses than it listens on: %s. The "
                        "other nodes send to the recorded raft address and clients are redirected to the recorded "
                        "HTTP one, so this node is cut off: to move it, add it again with its new addresses (cluster "
                        "add-learner; a voter leaves the voters with cluster members --retain first: see 'Moving a "
                        "node to other addresses' in the key-value service guide), or start it on the recorded ones. If the other nodes reach it at the recorded addresses "
                        "(another name of this machine, or a translated address), ignore this",
                        o.id, "; ".join(moved))

    async def stop(self) -> None:
        """Stop gracefully, each step bounded and logged on failure: the HTTP port stops
        taking connections (a client's connect is refused: nothing was sent; those the
        kernel had completed are taken first, ``_close_taking_queued``); each idle
        connection is answered an unsolicited 408 and closed without reading any request on
        it again, requests on open connections get 503, and those in flight finish (every
        answer from now on closes its connection: ``Connection: close``); once every HTTP
        connection is closed or so answered (``http_api.StoppingConnections``; at most
        ``SHUTDOWN_GRACE`` seconds in all), the TCP server, Raft (requests still waiting get
        the node's ``Stopped``), the HTTP server (requests still stuck on their clients get
        ``HTTP_SHUTDOWN_WAIT`` twice), the network and the stores close.
        Idempotent.

        So every request a client sends on a connection to the stopping node, however late,
        is either answered or provably not read (the 408, which the client reads as the
        answer to it): none meets a connection closed under it, for the client an unknown
        outcome.

        The stop runs in a task of its own: a caller that is cancelled (a timeout around
        ``stop()``, Ctrl-C in a cleanup) leaves it going on, and every later or concurrent
        call returns once it has ended."""
        if self._stop_task is None:
            self._stop_task = asyncio.ensure_future(self._stop())
            # Also when the stop is cancelled (its loop ending under it).
            self._stop_task.add_done_callback(lambda _: _RUNNING.discard(self))
        await asyncio.shield(self._stop_task)

    def raft_stopped(self) -> bool:
        """Whether this node's Raft has stopped: asked to (``stop()``), or on its own
        (``stopped_on_its_own``). ``False`` before it was made."""
        return self.raft is not None and not self.raft.metrics.running

    def stopped_on_its_own(self) -> bool:
        """Whether Raft stopped by itself on a ``Fatal`` error (a storage failure: a full
        disk, an I/O error), which its core logged at ERROR; not a stop that was asked for."""
        return self.raft is not None and not self.raft.metrics.running and self.raft.metrics.error is not None

    async def _stop(self) -> None:
        """``stop()``'s steps, run once. After Raft stopped on its own (``stopped_on_its_own``),
        a store that fails to close is logged at WARNING: the failure logged already is the
        cause (closing a store on a full disk fails too, its flush refused: "Writer has
        previous error", "No space left on device"), and each was another ERROR after it."""
        self.accepting = False
        failed_before = self.stopped_on_its_own()
        for work in list(self._resolving):
            work.cancel()  # (a resolver that hangs: its thread ends on its own, waited for by nobody)
        if self.tls_reloader is not None:
            self.tls_reloader.close()
        if self.http_conns is not None:
            self.http_conns.close()
        http, self._http = self._http, None
        listener, self._http_listener = self._http_listener, None
        if listener is not None:
            try:
                # First the connections the loop accepted already are set up (answered
                # below like the others): closed before that, the port leaked their sockets.
                try:
                    await stop_accepting(listener)
                except BaseException:
                    # Cancelled in that loop pass (the loop ending under the stop): the
                    # listener, taken from the node already, is closed here or by nobody,
                    # and its accept errors are no longer watched (``close`` is idempotent).
                    listener.close()
                    if self._http_accept_errors is not None:
                        self._http_accept_errors.close()
                    raise
                queued = _close_taking_queued(listener)  # closes the listening socket only
                factory = self._http_factory
                if queued and factory is not None:
                    loop = asyncio.get_running_loop()
                    made = await asyncio.gather(*(loop.connect_accepted_socket(factory, sock) for sock in queued),
                                                return_exceptions=True)
                    for sock, outcome in zip(queued, made, strict=True):
                        if isinstance(outcome, BaseException):
                            sock.close()
                            log.warning("cannot serve a connection the HTTP port had queued: %r", outcome)
            except Exception as e:  # noqa: BLE001 - keep stopping
                log.error("closing the HTTP port failed: %r", e)
        if self._http_accept_errors is not None:
            self._http_accept_errors.close()
        if http is not None:
            try:
                await self._drain_http(http.server)
            except Exception as e:  # noqa: BLE001 - keep stopping (the HTTP server's cleanup closes them)
                log.error("draining the HTTP connections failed: %r", e)
        # A body the API drops after an early answer ends now, its connection retired with
        # the 408 or closed (``http_api._answer_then_drop_body``): the HTTP server's shutdown
        # waited for it, as for a request in flight.
        self.http_closing.set()
        # Each step's coroutine is made when its turn comes: none is left unawaited if the
        # stop itself is cancelled (the loop ending under it).
        steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
        if self.tcp_server is not None:
            steps.append(("tcp server", self.tcp_server.close))
            self.tcp_server = None
        if self.raft is not None:
            raft = self.raft
            steps.append(("raft", lambda: self._stop_raft(raft)))
        if http is not None:
            steps.append(("http", http.cleanup))
        if self.factory is not None:
            steps.append(("network", self.factory.close))
            self.factory = None
        for name, store in (("log store", self.log_store), ("state machine", self.sm)):
            if store is not None:
                steps.append((name, store.aclose))
        self.log_store = None
        stores = {"log store", "state machine"}
        for name, step in steps:
            t0 = time.perf_counter()
            try:
                # Invariant: the stores' steps come after Raft's, which returns once every
                # task of the node ended (or its bound ran out): none closes under a task.
                bound = RAFT_STOP_WAIT if name == "raft" else STORE_STOP_WAIT if name in stores else STOP_STEP_WAIT
                async with asyncio.timeout(bound):
                    await step()
                log.debug("stopped the %s in %.3fs", name, time.perf_counter() - t0)
            except Exception as e:  # noqa: BLE001 - keep stopping the rest
                if failed_before and name in stores:
                    log.warning("stopping the %s failed too (the node had stopped on its own error, logged above): %r",
                                name, e)
                else:
                    log.error("stopping the %s failed: %r", name, e)
        if http is not None:
            from .http_api import flush_client_mistakes

            flush_client_mistakes()  # (before "stopped": what the HTTP log left out of its last minute)
        if steps:
            log.info("stopped")
        if self._dir_lock is not None:
            os.close(self._dir_lock)  # the stores are closed: another process may use the directory
            self._dir_lock = None
        self.stopped.set()

    @staticmethod
    async def _stop_raft(raft: Raft) -> None:
        """``raft.shutdown()``, returning once every task of the node ended: past
        ``STOP_STEP_WAIT`` the wait goes on, said at WARNING (the step's bound is
        ``RAFT_STOP_WAIT``). The stores close after this step. (Bounded by
        ``STOP_STEP_WAIT`` alone, the cancelled ``shutdown()`` returned at once and the stores
        were closed under a task still finishing a call in its worker thread: RocksDB closed
        while an apply wrote it or a snapshot build read it.)"""
        try:
            async with asyncio.timeout(STOP_STEP_WAIT):
                await raft.shutdown()
            return
        except TimeoutError:
            pass
        log.warning("Raft's tasks have not ended within %gs (a store call finishing in its worker thread?); "
                    "the stores close once they have", STOP_STEP_WAIT)
        await raft.shutdown()  # (the node is stopped already: this waits for its tasks)

    async def _drain_http(self, server: Any) -> None:
        """Until every HTTP connection of ``server`` (the ``AppRunner``'s ``web.Server``) is
        closed, or retired and settled (``http_api.StoppingConnections``), at most
        ``SHUTDOWN_GRACE`` seconds: idle connections are retired at once, and each
        connection serving a request is retired, or closes, once its answer is sent. Once
        no request is in flight, ``http_closing`` ends the bodies still being dropped.

        A request that reached the node before the stop but was not read yet (the loop was
        busy) gets the 408 with its connection (it is never read), or 503 if its handler had
        been started: never a connection closed under it. (Before, the stop waited for 50 ms
        without a request, then closed the connections: a client starved for longer lost the
        next request it sent on its kept-alive connection.)"""
        from .http_api import StoppingConnections

        conns = StoppingConnections(server, self.http_conns.retired() if self.http_conns is not None else None)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHUTDOWN_GRACE
        while True:
            conns.retire_idle(self.stopping_leader_id())
            if self.inflight == 0:
                self.http_closing.set()  # (the bodies being dropped end; their connections close)
                if conns.settled():
                    return
            left = deadline - loop.time()
            if left <= 0:
                if self.inflight:
                    log.warning("stopping with %d HTTP requests still in flight", self.inflight)
                return
            await asyncio.sleep(min(DRAIN_POLL, left))

    def _current_leader_id(self) -> int | None:
        """The leader as this node knows it (``None``: unknown, or not running)."""
        raft = self.raft
        return raft.metrics.current_leader if raft is not None else None

    def stopping_leader_id(self) -> int | None:
        """The leader a client told "not read" by this node as it stops (a 408) should go to:
        the current leader, unless it is this node or unknown (``None``)."""
        leader_id = self._current_leader_id()
        return None if leader_id == self.id else leader_id

    def request_started(self) -> None:
        """An HTTP request began (the API's bookkeeping for a graceful stop)."""
        self.inflight += 1
        self._idle.clear()

    def request_done(self) -> None:
        """An HTTP request was answered."""
        self.inflight -= 1
        if self.inflight == 0:
            self._idle.set()

    # -- helpers -------------------------------------------------------------------------------

    def _raft(self) -> Raft:
        if self.raft is None:
            raise ServiceUnavailable("the node is not running")
        return self.raft

    def nodes(self) -> dict[NodeId, NodeAddrs]:
        """Every member's addresses, from the current membership."""
        mem = self._raft().metrics.membership_config.membership
        return {nid: addrs_of(n) for nid, n in mem.nodes.items()}

    def leader(self, hint: ForwardToLeader | None = None) -> tuple[NodeId | None, str | None]:
        """``(leader_id, leader_http_addr)`` as this node knows them (``hint``: a
        ``ForwardToLeader`` naming them); either may be ``None``."""
        leader_id = hint.leader_id if hint is not None else self._raft().metrics.current_leader
        if leader_id is None:
            return None, None
        node: BasicNode | None = hint.leader_node if hint is not None else None
        if node is None:
            node = self._raft().metrics.membership_config.membership.nodes.get(leader_id)
        http = addrs_of(node).http if node is not None else ""
        return leader_id, http or None

    def initialized(self) -> bool:
        """Whether this node holds a membership with voters: it is in a cluster that was
        initialized (``False`` for a node never initialized nor added)."""
        return self.raft is not None and bool(self.raft.metrics.membership_config.membership.voter_ids())

    def is_leader(self) -> bool:
        """Whether this node leads right now."""
        return self.raft is not None and self.raft.is_leader()

    def require_leader(self) -> None:
        """Raise ``ForwardToLeader`` (naming the known leader) unless this node leads."""
        raft = self._raft()
        if not raft.is_leader():
            raise ForwardToLeader(raft.metrics.current_leader, None)

    # -- key-value operations ------------------------------------------------------------------

    async def _write(self, op: str, data: bytes) -> Any:
        raft = self._raft()
        t0 = time.perf_counter()
        resp = await raft.client_write(data)
        self.metrics.write_seconds.labels(op).observe(time.perf_counter() - t0)
        return resp

    async def put(self, key: str, value: str) -> int:
        """Set ``key`` to ``value``; the log index once committed and applied here."""
        return int((await self._write("put", encode_kv(KvSet(key, value)))).log_id.index)

    async def delete(self, key: str) -> int:
        """Delete ``key``; the log index once committed and applied here."""
        return int((await self._write("delete", encode_kv(KvDelete(key)))).log_id.index)

    async def cas(self, key: str, expected: str | None, value: str | None) -> tuple[bool, str | None]:
        """Set ``key`` to ``value`` (``None``: delete it) iff its value is ``expected``
        (``None``: absent); ``(ok, current value after the command)``."""
        resp = await self._write("cas", encode_cas(key, expected, value))
        ok, current = resp.data
        return bool(ok), current

    async def read(self, key: str, consistency: str) -> str | None:
        """The value of ``key`` read with ``consistency`` (one of ``CONSISTENCIES``), or
        ``None`` when absent."""
        if consistency not in CONSISTENCIES:
            raise ValueError(f"consistency must be one of {', '.join(CONSISTENCIES)}, got {consistency!r}")
        raft = self._raft()
        t0 = time.perf_counter()
        policy = _POLICY.get(consistency)
        if policy is not None:
            await raft.ensure_linearizable(policy)
        assert self.sm is not None
        value = self.sm.get(key)
        self.metrics.read_seconds.labels(consistency).observe(time.perf_counter() - t0)
        return value

    # -- cluster administration ----------------------------------------------------------------

    async def init(self, members: dict[NodeId, NodeAddrs]) -> None:
        """Initialize a new cluster of ``members`` (each with its raft and HTTP address).
        ``ValueError`` (nothing done) when two addresses are the same: a node dialling
        another member would reach the wrong one, and a cluster needing it could never
        elect a leader; or when another member's raft host does not resolve here
        (``ServiceUnavailable`` when the resolver cannot tell now or in time, or this node is
        stopping: ``_check_resolve``); or when a member's raft address, its host name
        resolved, reaches another member's address or its own HTTP address written as an IP
        address (``_check_members_apart``). ``NotAllowed`` (409) when this node holds a log
        or a vote (initialized already, or reached by a leader: ``_pristine``)."""
        nodes = {nid: node_of(a.raft, a.http) for nid, a in members.items()}  # (checked first)
        _v.check_members(nodes)  # (at most MAX_MEMBERS: before the names are resolved)
        # Each address by its host and port (``same_addr``), so one pass finds a repeated one:
        # compared two by two, MAX_MEMBERS members stalled the event loop for seconds.
        used: dict[tuple[str, int], str] = {}
        for nid, a in members.items():
            for kind, addr in (("raft_addr", a.raft), ("http_addr", a.http)):
                whose = used.setdefault(parse_addr(addr), f"member {nid}'s {kind}")
                if whose != f"member {nid}'s {kind}":
                    raise ValueError(f"member {nid}'s {kind} {addr!r} is also {whose}: each member "
                                     "needs addresses of its own")
        raft = self._raft()
        if _pristine(raft.metrics):  # (else initialize refuses it: NotAllowed, 409)
            # This node connects to the others at their raft addresses: a host that does not
            # resolve (a typo) made a cluster it could never reach a quorum of, for good.
            resolved = await self._check_resolve([(f"member {nid}'s raft_addr", a.raft) for nid, a in members.items()
                                                  if nid != self.id])
            _check_members_apart(members, resolved)
        # A new cluster has nothing to catch up with: this node stops catching up (``rejoin``),
        # before ``initialize``, whose first election sends this node's vote requests at once.
        # Its record goes first, durably: removed after ``initialize``, a node killed between
        # the two came back initialized and still catching up, so it never campaigned, and
        # the other members, which nothing had reached, have no membership to campaign with
        # (and ``init`` again is refused: the node is not pristine): no leader, for good.
        # (A Raft that has stopped writes nothing: ``initialize`` fails at once, with
        # ``Fatal``, and the record stays.)
        guard = self.catch_up
        ending = guard is not None and guard.active and _pristine(raft.metrics) and raft.metrics.running
        if guard is not None and ending:
            await asyncio.to_thread(guard.remove)
            # (Meanwhile the guard may have ended on its own: a first-election vote, a target
            # reached. Then it is not put back below.)
            ending = guard.active
            guard.active = False  # (no await from here to initialize's first step)
        try:
            await raft.initialize(nodes)
        except (InitializeError, TypeError, ValueError, Fatal) as e:
            # Refused, nothing written (a node no longer pristine: a leader's entries reached it
            # meanwhile), or the Raft stopped with none of it taken (``Fatal`` on a node still
            # pristine: it stopped, a storage failure say, while the record was removed): it
            # goes on catching up, its record back. Any other end (cancelled, a ``Fatal`` once
            # the membership was appended) may come after the membership was written: the
            # record stays gone.
            if isinstance(e, Fatal) and not _pristine(raft.metrics):
                raise
            if guard is not None and ending:
                guard.active = True
                await asyncio.to_thread(guard.save)
            raise
        if self.id in members:
            self._warn_if_recorded_elsewhere(members[self.id])

    async def add_learner(self, node_id: NodeId, raft_addr: str, http_addr: str) -> int:
        """Add ``node_id`` as a learner and wait (up to ``learner_timeout``) until it caught
        up; the membership entry's log index. Adding a learner again with the same addresses
        changes nothing; with other addresses, they replace its old ones. ``ValueError`` when
        ``raft_addr`` and ``http_addr`` are the same, also once the host name of ``raft_addr``
        is resolved (``_check_two_ports``). ``Conflict`` (nothing done) when
        ``node_id`` is a voter: ``Raft.add_learner`` would keep it a voter and give it the new
        addresses, cutting it off if they are wrong (a typo in the id); a voter leaves with
        ``change_members``, and moves by leaving the voters with ``retain``, being added again
        with its new addresses, and joining the voters again (the message says so).
        ``ServiceUnavailable`` when the bound ran out, saying whether the
        membership entry committed (then the learner is in, but has not caught up) or not (no
        quorum). ``Conflict`` too when another member already has ``raft_addr`` or
        ``http_addr`` (either of its two, compared as host and port, ``same_addr``; or
        ``raft_addr``'s host name resolved to the IP address a member's address is written
        with, at its port: ``_check_not_a_member_s``): replication to the learner
        would reach that member (the transport refuses it: the learner never catches up), and
        a redirect to the learner would reach that member. ``Conflict`` too when the learner
        was removed (``remove_learner``) while this waited for it to catch up. ``ValueError``
        (nothing done) when the leader cannot resolve the host of ``raft_addr``, which it
        connects to (``ServiceUnavailable`` when the resolver cannot tell in time:
        ``_check_resolve``); ``http_addr`` is not resolved here: only clients connect to it,
        and they may resolve it otherwise. ``ForwardToLeader`` on a follower (nothing
        done), ``LearnerInForward`` (carrying it) when this node stopped leading while it
        waited, the learner in."""
        node = node_of(raft_addr, http_addr)
        if raft_addr == http_addr:
            raise ValueError(f"raft_addr and http_addr are both {raft_addr!r}: a node listens on two ports")
        raft = self._raft()
        if raft.is_leader():  # (a follower's answer is the redirect: add_learner raises ForwardToLeader)
            self._check_new_learner(node_id, raft_addr, http_addr, {})
            # The leader connects to the learner at raft_addr: a host that does not resolve
            # (a typo) made a learner that never caught up, answered 503 only when
            # learner_timeout (60 s) ran out, and left in the membership.
            resolved = await self._check_resolve([("raft_addr", raft_addr)])
            _check_two_ports("", raft_addr, http_addr, resolved)
            # Again, with no await from here to the call: the membership may have changed
            # while the name resolved (a voter by now: its entry would take these addresses).
            if raft.is_leader():
                self._check_new_learner(node_id, raft_addr, http_addr, resolved)
        self.last_rpc_error.pop(node_id, None)  # (what failed before this call is not its answer)
        try:
            async with asyncio.timeout(self.opts.learner_timeout):
                resp = await raft.add_learner(node_id, node, blocking=True)
        except LearnerNotFound as e:  # removed (remove_learner) while this waited: not the request's fault
            raise Conflict(f"{e}: it is not a member (add it again if that was not meant)") from None
        except ForwardToLeader as e:
            # Raised at once (a follower: nothing appended), or once the entry adding the
            # learner committed and this node stopped leading during the wait for its catch-up
            # (the learner is in: ``committed_log_id`` says so).
            if e.committed_log_id is None:
                raise
            raise LearnerInForward(e) from None
        except TimeoutError:
            m = raft.metrics
            entry = m.membership_config.log_id
            committed = m.committed.index if m.committed is not None else -1
            if entry is not None and entry.index > committed:  # (no quorum: the learner is not in yet)
                raise ServiceUnavailable(
                    f"node {node_id} is not added yet: the membership entry adding it did not commit within "
                    f"{self.opts.learner_timeout}s (is a majority of the voters running?)") from None
            # Why the requests to it failed, if they did: a refused TLS certificate, say, is
            # not a node that is not running (the caller would look in the wrong place).
            failed = self.last_rpc_error.get(node_id)
            why = f"; the last request to it failed: {failed}" if failed is not None else ""
            raise ServiceUnavailable(
                f"node {node_id} was added as a learner but did not catch up within "
                f"{self.opts.learner_timeout}s (is it running at {raft_addr}?){why}") from None
        return int(resp.log_id.index)

    def _check_new_learner(self, node_id: NodeId, raft_addr: str, http_addr: str,
                           resolved: dict[str, list[str]]) -> None:
        """``Conflict`` when ``add_learner`` of ``node_id`` at ``raft_addr`` and ``http_addr``
        would give a voter new addresses or a member's address to another node, in the
        membership as it is now (``resolved``: ``raft_addr``'s host name resolved, if it was:
        ``_check_not_a_member_s``)."""
        raft = self._raft()
        if node_id in raft.metrics.membership_config.membership.voter_ids():
            raise Conflict(f"node {node_id} is a voter: add-learner adds a new node (or moves a learner). "
                           f"To move voter {node_id} to other addresses, make it a learner first (cluster members "
                           f"--voters <the other voters> --retain), add it again with its new addresses, then "
                           f"make it a voter again; to replace its machine, add a new node id as a learner, "
                           f"then change the voters")
        for other, a in sorted(self.nodes().items()):
            if other == node_id:  # its own addresses: a learner added again, or moved
                continue
            for kind, addr in (("raft_addr", raft_addr), ("http_addr", http_addr)):
                # (compared as host and port: a member an earlier release stored at
                # ":021001" is at port 21001)
                if same_addr(addr, a.raft) or same_addr(addr, a.http):
                    theirs = "raft_addr" if same_addr(addr, a.raft) else "http_addr"
                    raise Conflict(f"{kind} {addr!r} is node {other}'s {theirs}: each node needs addresses "
                                   f"of its own (to move node {other}, add it with its own id; a voter "
                                   "leaves the voters with --retain first)")
        self._check_not_a_member_s(node_id, raft_addr, resolved)

    def _check_not_a_member_s(self, node_id: NodeId, raft_addr: str, resolved: dict[str, list[str]]) -> None:
        """``Conflict`` when ``raft_addr``, its host name resolved (``resolved``), reaches
        another member's raft or HTTP address written as an IP address (``_resolved_to``):
        ``localhost:P`` where member 1 is at ``127.0.0.1:P``, which the comparison of the
        strings (``same_addr``) let through; the leader's replication reached that member,
        which answered as itself, and the learner never caught up."""
        for other, a in sorted(self.nodes().items()):
            for theirs, kind in ((a.raft, "raft_addr"), (a.http, "http_addr")):
                ip = _resolved_to(raft_addr, resolved, theirs) if other != node_id else None
                if ip is not None:
                    raise Conflict(f"raft_addr {raft_addr!r} is node {other}'s {kind} {theirs!r} "
                                   f"({_reaching(parse_addr(raft_addr)[0], ip)}): each node needs addresses of "
                                   f"its own (to move node {other}, add it with its own id; a voter leaves the voters "
                                   "with --retain first)")

    async def _check_resolve(self, addrs: list[tuple[str, str]]) -> dict[str, list[str]]:
        """The IP addresses of the host names of ``addrs`` (``(what, addr)`` pairs: addresses
        this node is to connect to; an IP address is not resolved), by name, when each
        resolves within ``RESOLVE_TIMEOUT`` (each name once, all at once, in threads: the
        event loop never waits for the resolver; ``_resolve_in_slot``). Else, nothing done: ``ValueError`` naming the first
        address whose name the resolver says has no address (``_RESOLVED_NOT_FOUND``, or a
        name it cannot take); ``ServiceUnavailable`` naming the first it could not tell about
        now (``EAI_AGAIN``) or in time."""
        names = [(what, addr, *parse_addr(addr)) for what, addr in addrs]
        names = [n for n in names if not _ip_address(n[2])]
        if not names:
            return {}
        tasks: dict[str, asyncio.Task[list[tuple[int, str]]]] = {}
        for _, _, host, port in names:
            if host not in tasks:
                tasks[host] = asyncio.ensure_future(self._resolve_in_slot(host, port))
        try:
            await asyncio.wait(tasks.values(), timeout=RESOLVE_TIMEOUT)
        finally:
            for t in tasks.values():
                if t.done() and not t.cancelled():
                    t.exception()  # (retrieved: this call may be cancelled before it reads them)
                t.cancel()  # (the ones still waiting; a thread that resolves keeps its slot until it ends)
        if not self.accepting:  # (``stop`` cancelled the resolutions, or refused to start them)
            raise ServiceUnavailable(f"node {self.id} is stopping: its raft host names were not resolved; nothing "
                                     "was done", stopping=True)
        # (A task cancelled just now is not done yet: it was still waiting. One cancelled
        # before, by ``stop``, got no answer either.)
        problems = [self._resolve_problem(what, addr, host, t if t.done() and not t.cancelled() else None)
                    for what, addr, host, t in ((w, a, h, tasks[h]) for w, a, h, _ in names)]
        # A name that does not exist first (the request's mistake), then one to retry.
        for problem in sorted((p for p in problems if p is not None), key=lambda p: not isinstance(p, ValueError)):
            raise problem
        return {host: [ip for _, ip in t.result()] for host, t in tasks.items()}

    async def _resolve_in_slot(self, host: str, port: int) -> list[tuple[int, str]]:
        """``nodes.resolve(host, port)`` in one of ``MAX_RESOLVING`` slots, waiting for one
        if need be. A slot is held until the resolver answers, also when the caller gave up
        (its thread runs on): resolvers that hang never hold more than ``MAX_RESOLVING``
        threads, whatever the requests (an ``init`` of thousands of names that do not
        answer, say). Once ``stop`` began, none starts (``CancelledError``)."""
        await self._resolve_slots.acquire()
        if not self.accepting:
            # ``stop`` began: the slot it freed (cancelling the resolution in it) starts no
            # other, which would run on after the stop in a thread of its own.
            self._resolve_slots.release()
            raise asyncio.CancelledError
        try:
            work = asyncio.ensure_future(resolve(host, port))
        except BaseException:
            self._resolve_slots.release()
            raise
        self._resolving.add(work)
        work.add_done_callback(self._resolved)
        return await asyncio.shield(work)

    def _resolved(self, work: asyncio.Future[Any]) -> None:
        """A resolution ended (or ``stop`` cancelled it): its slot is free."""
        self._resolving.discard(work)
        self._resolve_slots.release()
        if not work.cancelled():
            work.exception()  # (retrieved: the caller may have given up on it)

    def _resolve_problem(self, what: str, addr: str, host: str,
                         task: asyncio.Future[Any] | None) -> ValueError | ServiceUnavailable | None:
        """What ``_check_resolve``'s ``task`` resolving ``host`` (of ``addr``) ended with
        (``None``: it was still resolving when the bound ran out)."""
        if task is None:
            return ServiceUnavailable(f"{what} {addr!r}: resolving {host!r} took more than {RESOLVE_TIMEOUT}s (a slow "
                                      f"resolver, or {MAX_RESOLVING} names being resolved already): nothing was done; "
                                      "retry once the resolver answers, or give an IP address", nothing_done=True)
        e = task.exception()
        if e is None:
            return None
        if isinstance(e, socket.gaierror) and e.errno not in _RESOLVED_NOT_FOUND:
            return ServiceUnavailable(f"{what} {addr!r}: {host!r} could not be resolved now ({e.strerror}): nothing "
                                      "was done; retry, or give an IP address", nothing_done=True)
        if isinstance(e, OSError | UnicodeError):  # no address; or a name IDNA refuses
            why = e.strerror if isinstance(e, socket.gaierror) else str(e)
            return ValueError(f"{what} {addr!r}: the host {host!r} does not resolve on node {self.id} ({why}): it "
                              "could not connect to the node there; nothing was done")
        return ServiceUnavailable(f"{what} {addr!r}: resolving {host!r} failed ({e!r}): nothing was done",
                                  nothing_done=True)

    async def remove_learner(self, node_id: NodeId) -> int:
        """Remove learner ``node_id`` from the membership (``Raft.remove_learners``; the
        voters do not change); the membership entry's log index, once it is committed and
        applied here. Its addresses are then free (another node may be added with them),
        and the leader no longer sends to it, whether its node is running or gone.
        ``Conflict`` (nothing done) when ``node_id`` is a voter: a voter leaves the voters
        with ``change_members`` (the message says how); ``NotFound`` (nothing done) when it
        is not a member; ``InProgress`` while another membership change is not committed."""
        raft = self._raft()
        try:
            resp = await raft.remove_learners([node_id])
        except NotALearner:
            raise Conflict(f"node {node_id} is a voter, not a learner: a voter leaves with cluster members --voters "
                           f"<the other voters> (POST /cluster/members; with --retain it stays a learner, which "
                           f"remove-learner then removes)") from None
        except LearnerNotFound:
            members = ", ".join(map(str, sorted(raft.metrics.membership_config.membership.nodes)))
            raise NotFound(f"node {node_id} is not a member of the cluster (the members are {members}): "
                           "there is no learner to remove") from None
        return int(resp.log_id.index)

    async def change_members(self, voters: list[NodeId], retain: bool, allow_lagging: bool = False) -> int:
        """Make ``voters`` the voters (joint consensus; see ``Raft.change_membership``); the
        final entry's log index. ``LearnerNotFound`` says how a service user adds a learner
        (the library's message names ``add_learner``)."""
        try:
            resp = await self._raft().change_membership(voters, retain=retain, allow_lagging=allow_lagging)
        except LearnerNotFound as e:
            nid = e.node_id
            raise LearnerNotFound(nid, f"node {nid} is not a learner: add it first (openraft-py cluster add-learner "
                                       f"--id {nid} --raft-addr H:P --http-addr H:P, or POST /cluster/learners)") from None
        return int(resp.log_id.index)

    async def transfer(self, to: NodeId) -> NodeId:
        """Hand leadership to voter ``to`` and wait (up to four election timeouts) until it
        leads; returns ``to``. ``Conflict`` when another node took over instead (a transfer
        asked of this leader meanwhile replaced this one, or an election came first): the
        cluster has a leader, just not ``to``. ``ServiceUnavailable`` as soon as this node
        gave the transfer up and still leads, taking writes again (at once when ``to``
        cannot be reached before it is told to take over, a node that went down a moment
        before; after two election timeouts when no new leader came of it: this node's log
        says why), or when nobody took over within the bound."""
        raft = self._raft()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await raft.trigger.transfer_leader(to)
        bound = 4 * raft.config.election_timeout_max / 1000.0
        me = self.id

        def settled(m: RaftMetrics) -> bool:
            leader = m.current_leader
            return leader == to or (leader is not None and leader != me)

        async def given_up() -> None:
            # Naming itself does nothing on a leader that no longer hands over, and raises
            # ForwardToLeader while it does (or once it no longer leads): asked every
            # heartbeat interval, it tells when the transfer was given up.
            while True:
                await asyncio.sleep(raft.config.heartbeat_interval / 1000.0)
                try:
                    await raft.trigger.transfer_leader(me)
                except ForwardToLeader:
                    continue
                if not settled(raft.metrics):
                    return

        waiting = asyncio.ensure_future(raft.wait(bound).metrics(settled, f"node {to} leads"))
        watching = asyncio.ensure_future(given_up())
        try:
            done, _ = await asyncio.wait((waiting, watching), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (waiting, watching):
                t.cancel()
            await asyncio.gather(waiting, watching, return_exceptions=True)
        if waiting not in done or waiting.exception() is not None:
            if watching in done and watching.exception() is None:
                now = raft.metrics
                given = 2 * raft.config.election_timeout_max
                raise ServiceUnavailable(
                    f"node {to} did not take over: node {me} gave the transfer up after {loop.time() - started:.1f}s "
                    f"and still leads (term {now.current_term}), taking writes again (a transfer is given up at once "
                    f"when node {to} cannot be reached before it is told to take over, and after {given} ms, "
                    f"2 x election_timeout_max, when no new leader came of it; node {me}'s log says why: is node "
                    f"{to} down, cut off, catching up, or far behind?)"
                )
            errors = [t.exception() for t in (waiting, watching) if t in done]
            for e in errors:
                if e is not None and not isinstance(e, WaitTimeout):
                    raise e
            raise ServiceUnavailable(f"node {to} did not take over within {bound:.1f}s") from None
        m = waiting.result()
        if m.current_leader != to:
            raise Conflict(
                f"node {m.current_leader} took over, not node {to}: another transfer or an election "
                f"came first (node {m.current_leader} leads now)"
            )
        return to

    def status(self) -> dict[str, Any]:
        """This node's view of the cluster (``GET /cluster/status``; see DESIGN §8)."""
        raft = self._raft()
        m = raft.metrics
        mem = m.membership_config.membership
        leader_id, leader_http = self.leader()
        state = m.state.value if m.state != ServerState.SHUTDOWN else "Shutdown"
        return {
            "id": m.id,
            "state": state,
            "term": m.current_term,
            "leader_id": leader_id,
            "leader_http_addr": leader_http,
            "last_log_index": m.last_log_index if m.last_log_index >= 0 else None,
            "committed_index": _index(m.committed),
            "applied_index": _index(m.last_applied),
            "snapshot_index": _index(m.snapshot),
            "purged_index": _index(m.purged),
            "voters": sorted(mem.voter_ids()),
            "learners": sorted(mem.learner_ids()),
            "joint": mem.is_joint(),
            "configs": [sorted(c) for c in mem.configs],
            "nodes": {str(nid): {"raft_addr": a.raft, "http_addr": a.http} for nid, a in sorted(self.nodes().items())},
            "replication": None if m.replication is None else {str(k): v for k, v in sorted(m.replication.items())},
            "raft_addr": self.opts.raft_addr,
            "http_addr": self.opts.http_addr,
            "running": m.running,
            "error": m.error,
            # Started on an empty data directory and not caught up yet (``rejoin``): it neither
            # votes nor campaigns, so a cluster needing its vote elects no leader meanwhile.
            "catching_up": self.catch_up is not None and self.catch_up.active,
        }
