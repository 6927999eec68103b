"""The ``serve`` verb: run one node of the key-value service in the foreground.

::

    openraft-py serve --id 1 --raft-addr 127.0.0.1:21001 --http-addr 127.0.0.1:28001 \\
                      --data-dir DIR [--cluster-name NAME] [--tls-cert F --tls-key F --tls-ca F [--tls-bind-node-ids]] \\
                      [--tls-reload-interval SECONDS] \\
                      [--log-format text|json] [--log-level LEVEL] [--raft-config JSON]
    python -m openraft_py.kv.server ...        # the same, without the console script

The node runs until SIGTERM or SIGINT (then it stops gracefully: HTTP, the TCP server, Raft,
the network, the stores; exit code 0) or SIGKILL. Restarting it with the same arguments
brings it back from ``--data-dir``. A node that fails to start for a reason the operator fixes
(``START_ERRORS``: a port taken, a data directory that is unusable or another node's, TLS files
that do not load, a store that does not open) exits with code 1, the reason logged and then said
as the command line's last line, ``openraft-py serve: error: the node could not start: ...``
(no traceback); any other exception while starting is a bug, logged with its traceback (exit 1).

For the command line: ``add_serve_arguments(parser)`` adds the flags to an argparse parser,
``run_serve(args)`` runs the node from the parsed namespace (returns the exit code),
``serve_main(argv)`` does both. ``serve(opts)`` is the async entry point.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import resource
import signal
import sys
from typing import Any

import msgspec

from .._cli import one_line
from .._compiled import env_flag
from ..errors import ConfigError, StorageError

if __name__ == "__main__":  # ``python -m openraft_py.kv.server``: the kv extra, before importing it
    from .._cli import kv_extra_not_installed, needs_kv_extra

    _missing = kv_extra_not_installed()
    if _missing is not None:  # one line, as ``openraft-py`` says it (it was an import traceback)
        print(f"openraft-py serve: error: {needs_kv_extra('the key-value service', _missing)}", file=sys.stderr)
        sys.exit(1)

from .argtypes import GivenOnce, decimal_int, given_once
from .argtypes import cluster_name as _cluster_name
from .argtypes import json_object as _json_object
from .argtypes import node_id as _node_id
from .logs import LOG_FORMATS, configure_logging
from .node import DEFAULT_MAX_BODY, JSON_BYTES_PER_BYTE, MIN_MAX_BODY, KvNode, ServeOptions, max_useful_body

__all__ = ["add_serve_arguments", "options_from_args", "serve", "run_serve", "serve_main"]

log = logging.getLogger("openraft_py.kv.server")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
"""The levels ``serve --log-level`` takes."""


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``serve`` flags (DESIGN §8) to ``parser``; returns it. Each flag that takes a
    value may be given once (``GivenOnce``), whatever parser this is."""
    p = parser
    p.add_argument("--id", action=GivenOnce, type=_node_id, required=True, help="this node's id (an integer >= 0)")
    p.add_argument("--raft-addr", action=GivenOnce, required=True, metavar="HOST:PORT", help="listen address of the Raft TCP transport")
    p.add_argument("--http-addr", action=GivenOnce, required=True, metavar="HOST:PORT", help="listen address of the HTTP API")
    p.add_argument("--data-dir", action=GivenOnce, required=True, metavar="DIR", help="the node's RocksDB data (created if missing)")
    p.add_argument("--cluster-name", action=GivenOnce, default="openraft-py", metavar="NAME", type=_cluster_name,
                   help="the cluster's name (default openraft-py; printable text, at most 256 characters): peers of "
                        "another cluster name are refused")
    p.add_argument("--tls-cert", action=GivenOnce, metavar="FILE", help="PEM certificate of the raft port (TLS)")
    p.add_argument("--tls-key", action=GivenOnce, metavar="FILE", help="PEM private key of --tls-cert")
    p.add_argument("--tls-ca", action=GivenOnce, metavar="FILE", help="CA bundle peers must be signed by (mutual TLS)")
    p.add_argument("--tls-bind-node-ids", action="store_true",
                   help="with --tls-ca: a peer's certificate must name its node id "
                        "(subjectAltName URI openraft://<cluster-name>/<id>)")
    p.add_argument("--tls-reload-interval", action=GivenOnce, type=_reload_interval, metavar="SECONDS",
                   help="look at the TLS files every SECONDS (default 60) and load a renewed certificate, key or "
                        "CA without a restart, once checked as at start; 0: read them at start only")
    p.add_argument("--log-format", action=GivenOnce, choices=LOG_FORMATS, default="text", help="text lines or JSON lines (stderr; default text)")
    p.add_argument("--log-level", action=GivenOnce, type=str.upper, choices=LOG_LEVELS, default="INFO", help="lowest level logged (default INFO)")
    p.add_argument("--raft-config", metavar="JSON", type=_json_object,
                   action=given_once("give it once, every field in one JSON object"),
                   help='Config fields as a JSON object, e.g. \'{"heartbeat_interval": 50}\' (once)')
    p.add_argument("--max-body", action=GivenOnce, type=decimal_int, default=DEFAULT_MAX_BODY, metavar="BYTES",
                   help="largest HTTP request body (default 1 MiB; at most 6 x max_entry_bytes + 64 KiB, "
                        "or 1 MiB if more); "
                        "larger gets 413")
    return p




def _reload_interval(text: str) -> float:
    """A ``--tls-reload-interval``: 0 (off) or a finite number of seconds (its range is
    checked by ``ServeOptions.check``)."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number of seconds (0: off)")
    return x


def check_raft_flags(raft_config: dict[str, Any], cluster_name: str, max_body: int) -> None:
    """``ValueError`` naming the flag unless ``--raft-config`` (its ``Config`` fields),
    with ``--cluster-name``, makes a config the node can run over its raft port, and
    ``--max-body`` is one a request can use with it (``max_useful_body``). ``serve``
    checks them at its start (``ServeOptions.check``), and ``cluster up`` before it makes
    anything, so its usage errors exit 2 there too, where they were relayed from its first
    node's log with exit code 1; ``LocalCluster`` before it makes anything, so a bad
    argument in Python is refused at once, not from a child's log. ``TypeError`` unless
    ``raft_config`` is a ``dict`` and ``max_body`` an ``int``."""
    from ..config import Config

    if not isinstance(raft_config, dict):
        raise TypeError(f"--raft-config is a dict of Config fields, got {type(raft_config).__name__}")
    if isinstance(max_body, bool) or not isinstance(max_body, int):
        raise TypeError(f"--max-body is an int (bytes), got {type(max_body).__name__} {max_body!r}")
    if max_body < MIN_MAX_BODY:
        raise ValueError(f"--max-body must be at least {MIN_MAX_BODY} bytes, got {max_body}")
    named = raft_config.get("cluster_name", cluster_name)
    if named != cluster_name:
        # It would be overridden: one name per node, and --cluster-name is the one.
        raise ValueError(f"--raft-config: cluster_name {named!r} differs from --cluster-name "
                         f"{cluster_name!r}; set the cluster name with --cluster-name only")
    unknown = sorted(set(raft_config) - set(Config.__struct_fields__) - {"cluster_name"})
    if unknown:
        raise ValueError(f"--raft-config: unknown Config fields {unknown}")
    try:
        config = msgspec.convert({**raft_config, "cluster_name": cluster_name}, Config)
        config.validate()
    except (msgspec.ValidationError, ConfigError) as e:  # a field's type or value: name the flag
        raise ValueError(f"--raft-config: {e}") from None
    from ..network._tcp_client import election_timeout_shortfall, frame_size_excess, payload_entries_excess
    from ..network.tcp import DEFAULT_MAX_FRAME_SIZE

    many = payload_entries_excess(config)
    if many is not None:
        raise ValueError(f"--raft-config: {many}")
    # Named by the settings that need the larger frames: max_payload_entries (64 bytes
    # of framing each) was blamed on max_payload_bytes or snapshot_max_chunk_size.
    excess = frame_size_excess(config, DEFAULT_MAX_FRAME_SIZE)
    if excess is not None:
        raise ValueError(
            f"--raft-config: {excess} with its framing, over the raft port's frame limit of "
            f"{DEFAULT_MAX_FRAME_SIZE} bytes (fixed): lower the setting named"
        )
    short = election_timeout_shortfall(config)
    if short is not None:
        raise ValueError(f"--raft-config: {short}")
    useful = max_useful_body(config)
    if max_body > useful:
        raise ValueError(
            f"--max-body {max_body} is more than a request can use: at most {useful} bytes with "
            f"max_entry_bytes={config.max_entry_bytes} ({JSON_BYTES_PER_BYTE} times it, as a cas body's "
            "JSON may spell each byte of its entry in six, plus 64 KiB; never below 1 MiB), since a larger "
            "body is read whole before it is refused. For larger values raise max_entry_bytes in --raft-config"
        )


def options_from_args(args: argparse.Namespace) -> ServeOptions:
    """``ServeOptions`` from a namespace parsed with ``add_serve_arguments``'s flags;
    ``ValueError`` if they are not usable (bad address, TLS flags not paired ...)."""
    try:
        opts = ServeOptions(
            id=args.id, raft_addr=args.raft_addr, http_addr=args.http_addr, data_dir=args.data_dir,
            cluster_name=args.cluster_name, tls_cert=args.tls_cert, tls_key=args.tls_key, tls_ca=args.tls_ca,
            tls_bind_node_ids=args.tls_bind_node_ids,
            **({} if args.tls_reload_interval is None else {"tls_reload_interval": args.tls_reload_interval}),
            raft_config=args.raft_config or {}, max_body=args.max_body,
            log_format=args.log_format, log_level=args.log_level)
        if args.tls_reload_interval is not None and args.tls_cert is None:
            raise ValueError("--tls-reload-interval needs --tls-cert and --tls-key (it watches their files)")
        opts.check()  # (with check_raft_flags)
    except (TypeError, msgspec.ValidationError) as e:
        raise ValueError(str(e)) from None
    except Exception as e:
        if isinstance(e, ValueError):
            raise
        raise ValueError(f"{type(e).__name__}: {e}") from None
    return opts


START_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, StorageError, ConfigError)
"""The exceptions of a start that failed for a reason the operator fixes: ``OSError`` (a port
taken or not on this machine, a data directory that cannot be made or written, a TLS file that
cannot be read: ``ssl.SSLError`` is one), ``ValueError`` (``identity.DataDirMismatch``: another
node's or cluster's data, not a node's directory; TLS files that do not go together),
``StorageError`` (a store that does not open: corrupt, locked, of a newer version) and
``ConfigError``. ``serve`` says their message in one line (``OPENRAFT_PY_DEBUG=1`` logs the
traceback too, as the verbs show theirs); any other exception while starting is a bug and
keeps its traceback."""


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""The signals after which ``serve`` stops gracefully. SIGHUP (the terminal ``serve`` runs
in was closed, or a ``kill -HUP`` meant as a reload: ``serve`` has none, it watches its TLS
files instead: ``--tls-reload-interval``) is one of them: by default it ended the process at once, logging nothing,
with the stores not closed and the requests in flight cut off, their outcome unknown. A
SIGHUP ignored when ``serve`` started (``nohup openraft-py serve ...``) stays ignored."""


async def serve(opts: ServeOptions, stop: asyncio.Event | None = None, *,
                start_errors: list[str] | None = None) -> int:
    """Run one node until one of ``STOP_SIGNALS`` (or ``stop`` is set); the exit code: 0
    after a graceful stop, 1 if the node could not start or stopped on its own (a ``Fatal``
    error such as a storage failure: logged, then the process exits so a supervisor
    restarts it). A start that failed with one of ``START_ERRORS`` is logged in one line and,
    with ``start_errors`` given, its reason (``"TypeName: message"``) appended to it, for the
    caller to say (``run_serve`` prints it as the command line's error line once the event loop
    has ended, after every log line); another exception is logged with its traceback."""
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    for sig in STOP_SIGNALS:
        if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:  # (nohup: it asked for that)
            continue
        try:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / platform
            pass
    node: KvNode | None = None
    try:
        try:
            node = KvNode(opts)
            _running.append(node)
            if not await _start_unless_stopped(node, stop):
                log.info("stopped while starting (%s)", received[0] if received else "signal")
                return 0
        except START_ERRORS as e:  # the operator's to fix: its message is enough
            why = f"{type(e).__name__}: {e}"
            log.error("the node could not start: %s", why, exc_info=env_flag("OPENRAFT_PY_DEBUG"))
            if start_errors is not None:
                start_errors.append(why)
            return 1
        except Exception:
            log.error("the node could not start (a bug: please report it with this traceback)", exc_info=True)
            return 1
        assert node.raft is not None
        stopping = asyncio.ensure_future(stop.wait())
        died = asyncio.ensure_future(node.raft.wait(None).metrics(lambda m: not m.running, "the node stopped"))
        try:
            await asyncio.wait({stopping, died}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            died.cancel()
        code = 0
        if died.done() and not died.cancelled():
            code = 1
            err = died.exception()
            log.error("the node stopped on its own: %s", f"{type(err).__name__}: {err}" if err else
                      node.raft.metrics.error)
        else:
            log.info("stopping (%s)", received[0] if received else "signal")
        await node.stop()
        return code
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        if node is not None and node in _running:
            _running.remove(node)


async def _start_unless_stopped(node: KvNode, stop: asyncio.Event) -> bool:
    """Start ``node``; ``True`` once it runs, ``False`` when ``stop`` was set first: the start
    is cancelled then (``KvNode.start`` stops what it opened: the stores close, the data
    directory's lock is released) and this returns once it has ended. A start reads the
    node's whole log (``Raft.new``: 6.5-12 s for 5,000,000 entries), and a signal that came
    meanwhile was taken only after it: the node finished reading, opened its ports and
    served, then stopped. Raises what the start raised, had it failed first."""
    starting = asyncio.ensure_future(node.start())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not starting.done():
            starting.cancel()
        # (also when this call is cancelled: the start ends before the caller goes on)
        await asyncio.wait({starting})
    if starting.cancelled():
        return False
    starting.result()  # raises what the start raised
    return True


MIN_OPEN_FILES = 64
"""The lowest soft limit of open files (``ulimit -n``) ``serve`` starts under: a node holds
about 40 descriptors once started (its stores, its runtime, its two ports) and needs more
for its connections and later files. Under 12, uvloop failed to set up its event loop and
``serve`` ended in two tracebacks; under 16 to 36 the stores failed to open, each time
another error; from 40 to 63 it started with a few descriptors to spare, and stopped at its
first snapshot build, or its first connections."""


def check_open_files_limit() -> None:
    """``ValueError`` if the process's soft limit of open files is under ``MIN_OPEN_FILES``."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < MIN_OPEN_FILES:
        raise ValueError(f"the limit of open files is {soft} (ulimit -n): a node needs at least {MIN_OPEN_FILES} "
                         "(its stores, its two ports, its peers); raise it (ulimit -n 1024)")


def run_serve(args: argparse.Namespace) -> int:
    """Run ``serve`` from parsed flags (see ``add_serve_arguments``): configures logging,
    runs the node on uvloop when installed, returns the exit code (2 for unusable flags,
    with a one-line message on stderr; 1 for a node that could not start, the last line on
    stderr then ``openraft-py serve: error: the node could not start: ...`` when the reason
    is one of ``START_ERRORS``)."""
    try:
        opts = options_from_args(args)
    except ValueError as e:
        # (Worded as the parser's own usage errors: ``cli._Parser.error``.)
        print(f"openraft-py serve: error: {one_line(str(e))} (see 'openraft-py serve --help')", file=sys.stderr)
        return 2
    try:
        check_open_files_limit()
    except ValueError as e:
        print(f"openraft-py serve: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    configure_logging(opts.log_format, opts.log_level, _current_metrics, node_id=opts.id)
    start_errors: list[str] = []
    try:
        import uvloop
    except ImportError:
        code = asyncio.run(serve(opts, start_errors=start_errors))
    else:
        code = uvloop.run(serve(opts, start_errors=start_errors))
    if start_errors:  # (after the loop: no log line of the clean-up comes after it)
        sys.stderr.flush()
        # One line whatever the reason holds (``one_line``): RocksDB's reports may have two.
        print(f"openraft-py serve: error: the node could not start: {one_line(start_errors[-1])}", file=sys.stderr)
    return code


_running: list[KvNode] = []
"""The nodes ``serve`` runs in this process (one in a ``serve`` process): the log context."""


def _current_metrics() -> Any:
    if not _running or _running[-1].raft is None:
        return None
    return _running[-1].raft.metrics


def serve_main(argv: list[str] | None = None) -> int:
    """``python -m openraft_py.kv.server [flags]``: parse the flags, run the node."""
    parser = argparse.ArgumentParser(prog="openraft-py serve", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)  # (as the command line: no abbreviated flags)
    add_serve_arguments(parser)
    return run_serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(serve_main())
