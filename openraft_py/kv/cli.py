"""The ``openraft-py`` command line (DESIGN §8).

::

    openraft-py serve --id 1 --raft-addr 127.0.0.1:21001 --http-addr 127.0.0.1:28001 --data-dir DIR
    openraft-py cluster up -n 3                  # a local dev cluster in the foreground
    openraft-py cluster init --endpoints H:P,H:P,H:P
    openraft-py cluster add-learner --endpoints E --id 4 --raft-addr H:P --http-addr H:P
    openraft-py cluster remove-learner --endpoints E --id 4
    openraft-py cluster members --endpoints E [--voters 1,2,3,4] [--retain] [--allow-lagging]
    openraft-py cluster status --endpoints E [--json]
    openraft-py cluster transfer --endpoints E --to 2
    openraft-py cluster force-recover --data-dir DIR --new-cluster-name NAME [--i-know-writes-may-be-lost]
    openraft-py kv put|get|delete|cas ... --endpoints E
    openraft-py demo [--quick]                   # what `make run` runs

``--endpoints`` (HTTP addresses, comma-separated) defaults to ``$OPENRAFT_PY_ENDPOINTS``; the
client verbs find the leader from any of them and follow its redirects. Exit codes: 0 done;
1 failed (nothing was applied, or the key is absent, or a ``cas`` did not match; or a
learner was added but has not caught up); 2 bad command line; 3 outcome unknown (a write may
or may not have been applied); 130 interrupted (Ctrl-C; a write's line says that it may or may
not have been applied); 141 the reader of the output went
away (``| head -1``: quietly, as a tool killed by SIGPIPE). Every error is one line on stderr. ``python -m openraft_py.kv`` is the same command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from .._cli import missing_kv_extra, needs_kv_extra, one_line, run_cli
from .._compiled import env_flag
from .argtypes import GIVEN_FLAGS, GivenOnce, decimal_int, given_once, quoted
from .argtypes import cluster_name as _cluster_name
from .argtypes import json_object as _json_object
from .argtypes import node_id as _node_id
from .argtypes import positive_int_at_most as _positive_int_at_most
from .argtypes import timeout as _timeout

ADD_LEARNER_TIMEOUT = 70.0
"""``cluster add-learner``'s default ``--timeout``: above the service's own bound on the call
(``ServeOptions.learner_timeout``, 60 s), so that the service's answer, which says why a
learner did not catch up (not running at its address, a refused certificate, no quorum),
arrives before the command line gives up on it."""

CONTACT_TIMEOUT = 10.0
"""Seconds ``cluster add-learner``, ``members`` and ``remove-learner``, run without
``--timeout``, wait for any endpoint to accept a connection before they give up (the other client verbs'
default ``--timeout``). Their long defaults (70 s, 30 s) are for the service's answer once a
node answers; spent on refused connections (a cluster that is not there, a mistyped port)
they kept a new user waiting, silent, for over a minute. A ``--timeout`` given bounds the
wait for a node instead."""

READ_ATTEMPT_MIN = 1.0
"""The least time one attempt of ``kv get`` is given (seconds; ``--timeout`` if smaller):
above the longest a node takes to answer a read itself (a linearizable read on a leader cut
off from the majority fails once it steps down, one election timeout after its last quorum
ack: ``election_timeout_max``, 300 ms by default)."""

STEP_MIN = 0.1
"""The least time a step of a verb that asks several things in turn (``cluster init``,
``members``, ``status``) is given, once it starts: the verb may end this much after its
``--timeout``."""

SHOWN_MAX = 5
"""The most endpoints (or reasons, or lines about endpoints) a verb's message names; past
that it says how many more (``_first_few``). ``cluster status`` given 2000 endpoints that
did not answer printed 2000 lines and an error line of 150 KB naming each and its reason."""


def _first_few(items: Sequence[str], sep: str = ", ") -> str:
    """The first ``SHOWN_MAX`` of ``items`` joined with ``sep``, then ``" and N more"`` when
    there are more."""
    shown = sep.join(items[:SHOWN_MAX])
    more = len(items) - SHOWN_MAX
    return f"{shown} and {more} more" if more > 0 else shown


if TYPE_CHECKING:  # the verbs import them when they run
    from .client import ClientError, KvClient, Response
    from .local_cluster import LocalCluster

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_UNKNOWN"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNKNOWN = 3

ENDPOINTS_ENV = "OPENRAFT_PY_ENDPOINTS"

MAX_LOCAL_NODES = 9
"""The largest ``cluster up -n``: each node is a ``serve`` process of this one machine, and
Raft clusters have 3, 5 or 7 voters (``-n 3000``, a typo, set out to start that many)."""


class CliError(Exception):
    """A verb failed: one line for stderr and the exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``PROG: error: MESSAGE (see PROG --help)``), exit 2,
    and no abbreviated long flags: ``--tls-cer`` is refused, not taken for ``--tls-cert``.
    (The command line is binding, DESIGN §8: a flag added later that begins alike would turn
    an abbreviation a script relies on into an "ambiguous option" error.)"""

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("allow_abbrev", False)  # (the verbs' parsers are made by add_parser: this class)
        super().__init__(*args, **kw)

    def add_argument(self, *args: Any, **kw: Any) -> argparse.Action:
        """``ArgumentParser.add_argument``, where a flag that takes one value (no ``action``
        given) may be given once (``GivenOnce``): argparse kept the last of a repeated one."""
        if args and isinstance(args[0], str) and args[0].startswith("-") and "action" not in kw:
            kw["action"] = GivenOnce
        return super().add_argument(*args, **kw)

    value_sources: tuple[str, str] | None = None
    """The two ways a verb takes its value (``kv put``: ``("value", "value_file")``): exactly
    one of them must be given. ``None``: the verb has no such pair."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        """``ArgumentParser.parse_known_args``, without ``GivenOnce``'s note in the result."""
        self._parsing = list(sys.argv[1:] if args is None else args)  # (for ``error``'s hints)
        parsed, extras = super().parse_known_args(args, namespace)
        if hasattr(parsed, GIVEN_FLAGS):
            delattr(parsed, GIVEN_FLAGS)
        self._check_value_sources(parsed)
        if extras and not any(isinstance(a, argparse._SubParsersAction) for a in self._actions):
            # A verb's own parser: its extras were reported by the top-level parser, naming
            # "openraft-py" and its help, not the verb's.
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    def _check_value_sources(self, parsed: argparse.Namespace) -> None:
        """A usage error unless exactly one of ``value_sources`` was given. Checked before the
        unrecognized arguments, so that ``kv put k -x`` says the value is missing and why (as
        when the value was a required positional), not only that ``-x`` is unknown."""
        if self.value_sources is None:
            return
        positional, flag = self.value_sources
        given = [name for name in self.value_sources if getattr(parsed, name, None) is not None]
        if not given:
            self.error(f"the following arguments are required: {positional}")
        if len(given) == 2:
            option = "--" + flag.replace("_", "-")
            self.error(f"argument {option}: not allowed with a {positional.upper()} argument: give the value "
                       f"once, as {positional.upper()} or in {option}")

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}{self._dash_hint(message)} (see '{self.prog} --help')\n")

    def _dash_hint(self, message: str) -> str:
        """What to add to ``message`` when an argument that begins with '-' was read as a flag
        where the user meant a key or a value: the error said only that the key or value (or a
        flag's argument) was missing (``kv put k -x``: "the following arguments are required:
        value"; ``kv cas k --expected -x``: "expected one argument"). Empty otherwise."""
        words = getattr(self, "_parsing", [])
        if message.endswith(": expected one argument"):
            flags = message[len("argument "):-len(": expected one argument")].split("/")
            dashed_value = any(w in flags and nxt.startswith("-") and nxt.split("=", 1)[0] not in self._option_string_actions
                               for w, nxt in itertools.pairwise(words))
            return f" (a value that begins with '-' is given as {flags[-1]}=VALUE)" if dashed_value else ""
        if not message.startswith("the following arguments are required:"):
            return ""
        positionals = [a for a in self._actions if not a.option_strings]
        dashed = [a for a in words if a.startswith("-") and a != "--"
                  and not self._negative_number_matcher.match(a)
                  and a.split("=", 1)[0] not in self._option_string_actions]
        if not dashed or not positionals:
            return ""
        names = " ".join(str(a.metavar or a.dest).upper() for a in positionals)
        return (f"; {dashed[0]!r} was read as a flag: to give a key or value that begins with '-', put '--' "
                f"before the key ({self.prog} [flags] -- {names})")


# -- argument types --------------------------------------------------------------------------------


def _endpoints(text: str) -> list[str]:
    from .client import parse_endpoints

    try:
        return parse_endpoints(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _ids(text: str) -> list[int]:
    """Node ids, comma-separated (spaces around each allowed), each as ``argtypes.node_id``
    takes one (``int`` read ``1_0`` as 10, and ``+1`` or other scripts' digits (``\\u0661``)
    as 1), and each once: ``--voters 1,1,2`` made the voters 1 and 2 without a word, where
    the second 1 was likely a typo for another node. An empty item (``1,,3``, ``1,2,``) is
    refused, as ``parse_endpoints`` refuses one: it is an id left out (``$A,$B,$C`` with
    ``B`` unset), and dropping it made a change of the voters remove that node."""
    items = [x.strip() for x in text.split(",")]
    if not any(items):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of node ids")
    for n, item in enumerate(items, 1):
        if not item:
            raise argparse.ArgumentTypeError(f"{text!r}: id {n} of {len(items)} is empty (a comma too many, "
                                             "or an id left out)")
    try:
        ids = [_node_id(x) for x in items]
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of node ids: {e}") from None
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"{text!r} names node {', '.join(map(str, twice))} twice")
    return ids


def _text(text: str) -> str:
    """A value: text that UTF-8 can encode (an argument that was not valid UTF-8 in the
    terminal's encoding arrives holding surrogates). The error quotes the start of it
    (``argtypes.quoted``) and says where the bad byte is: it quoted the whole argument, 390
    KB of escapes for a value of 65,000 bad bytes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise argparse.ArgumentTypeError(
            f"{quoted(text)} is not valid UTF-8 (from character {e.start} on)") from None
    return text


def _value_file(path: str) -> str:
    """``kv put --value-file`` and ``kv cas --value-file``: the text of the file ``path``
    (``-``: standard input), read whole and as it is (a final newline is part of the value),
    and valid UTF-8 (``_text``).
    A value was a command-line argument only, and Linux refuses one over 128 KiB
    (``MAX_ARG_STRLEN``) before the command runs: the shell said "Argument list too long",
    exit 126, for a value the service takes (up to ``--max-body``, 1 MiB by default)."""
    from pathlib import Path

    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot read {path!r}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        where = "standard input" if path == "-" else repr(path)
        raise argparse.ArgumentTypeError(f"{where} is not valid UTF-8 (from byte {e.start} on): the service "
                                         "stores text; store binary data encoded, in base64 say") from None


def _max_body(text: str) -> int:
    """``cluster up --max-body``: bytes, at least 1024, as ``serve --max-body`` takes them.
    (Without it a cluster whose ``--raft-config`` raised ``max_entry_bytes`` refused every
    value over 1 MiB, saying "serve --max-body", a flag ``cluster up`` did not have.)"""
    n = decimal_int(text)
    if n < 1024:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1024 bytes")
    return n


def _key(text: str) -> str:
    """A key: non-empty ``_text`` of at most ``MAX_KEY_BYTES`` bytes of UTF-8 (a longer one
    was sent, and its refusal quoted it whole)."""
    from .client import MAX_KEY_BYTES

    if not text:
        raise argparse.ArgumentTypeError("a key is a non-empty string")
    text = _text(text)
    n = len(text.encode("utf-8"))
    if n > MAX_KEY_BYTES:
        raise argparse.ArgumentTypeError(f"a key is at most {MAX_KEY_BYTES} bytes of UTF-8; this one has {n}: {quoted(text)}")
    return text


def _addr(text: str) -> str:
    """An address for the membership (``nodes.check_member_addr``)."""
    from .nodes import check_member_addr

    try:
        return check_member_addr(text, repr(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _data_root(text: str) -> str:
    """A directory for ``cluster up --data-dir``: not empty (``""``, from an unset variable,
    named the current directory: the nodes' data and logs were written there and kept)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path (leave the flag out for a temporary directory)")
    return text


def _node_dir(text: str) -> str:
    """A node's data directory for ``cluster force-recover``: not empty (``""``, from an
    unset variable, would name the current directory)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path: give the stopped node's data directory (serve's --data-dir)")
    return text


def _host(text: str) -> str:
    """A host the local cluster's addresses can name (``LocalCluster``'s check)."""
    from .local_cluster import ClusterError, check_host

    try:
        check_host(text)
    except ClusterError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


# -- the parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``openraft-py`` argument parser (every verb; see the module docstring)."""
    from .. import __version__

    p = _Parser(prog="openraft-py", description="openraft-py: run and operate the replicated key-value "
                "service (the guide: docs/guides/kv-service.md).",
                epilog="Run 'openraft-py VERB --help' for a verb's flags.")
    p.add_argument("--version", action="version", version=f"openraft-py {__version__}")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    # serve: the service engineer's flags and entry point.
    from .server import add_serve_arguments

    serve = verbs.add_parser("serve", help="run one node in the foreground",
                             description="Run one node of the key-value service until SIGTERM/SIGINT. "
                             "Restarting it with the same flags brings it back from --data-dir.")
    add_serve_arguments(serve)
    serve.set_defaults(run=_run_serve)

    client = _Parser(add_help=False)
    client.add_argument("--endpoints", type=_endpoints, metavar="H:P,H:P",
                        action=given_once("give them all in one, comma-separated: --endpoints H:P,H:P"),
                        help=f"HTTP addresses of the nodes (default: ${ENDPOINTS_ENV})")
    client.add_argument("--timeout", type=_timeout, default=None, metavar="S",
                        help="seconds the call may take in all, retries included (default 10; "
                        f"{ADD_LEARNER_TIMEOUT:g} for add-learner, 30 for members and remove-learner, which "
                        f"give up after {CONTACT_TIMEOUT:g} when no endpoint takes a connection)")

    # cluster
    cluster = verbs.add_parser("cluster", help="start a local cluster or administer one",
                               description="Start a local development cluster, or administer a running one.")
    cv = cluster.add_subparsers(dest="cluster_verb", metavar="VERB", required=True)

    up = cv.add_parser("up", help="a local dev cluster in the foreground (Ctrl-C stops it)",
                       description="Spawn N 'serve' processes on free loopback ports, initialize them as "
                       "one cluster, wait for a leader and print the endpoints. Ctrl-C (or SIGTERM) stops "
                       "every node and removes the temporary data directory.")
    up.add_argument("-n", "--nodes", dest="n", type=_positive_int_at_most(MAX_LOCAL_NODES), default=3,
                    help=f"number of nodes, 1 to {MAX_LOCAL_NODES}: each is a serve process of this machine (default 3)")
    up.add_argument("--data-dir", metavar="DIR", type=_data_root,
                    help="keep the nodes' data in DIR/nI (kept on exit; default: a temporary directory)")
    up.add_argument("--host", type=_host, default=None,
                    help="address the nodes listen on (default 127.0.0.1; with a --data-dir used before, where "
                    "its nodes were: another host is refused)")
    up.add_argument("--cluster-name", default="openraft-py", metavar="NAME", type=_cluster_name,
                    help="the cluster name of every node (default openraft-py)")
    up.add_argument("--raft-config", metavar="JSON", type=_json_object,
                    action=given_once("give it once, every field in one JSON object"),
                    help="Config fields for every node, as one JSON object")
    up.add_argument("--log-level", type=str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                    default="INFO", help="the nodes' log level (default INFO; their logs go to DIR/nI.log)")
    up.add_argument("--max-body", type=_max_body, default=None, metavar="BYTES",
                    help="every node's largest HTTP request body (serve --max-body; default 1 MiB)")
    up.add_argument("--timeout", type=_timeout, default=60.0, metavar="S",
                    help="seconds to wait for the nodes and the leader (default 60)")
    up.set_defaults(run=_cluster_up)

    init = cv.add_parser("init", parents=[client], help="initialize a new cluster of the given nodes",
                         description="Initialize a cluster whose voters are the nodes at --endpoints "
                         "(their ids and raft addresses are read from their GET /cluster/status); "
                         "the first endpoint receives POST /cluster/init (the next one, in turn, when it "
                         "refuses doing nothing: a node that is stopping). Refused, nothing sent, when "
                         "one of them is in a cluster already (a cluster is initialized once).")
    init.set_defaults(run=_cluster_init)

    learner = cv.add_parser("add-learner", parents=[client], help="add a node as a learner",
                            description="POST /cluster/learners on the leader; returns once the learner "
                            "caught up.")
    learner.add_argument("--id", type=_node_id, required=True, help="the new node's id")
    learner.add_argument("--raft-addr", type=_addr, required=True, metavar="H:P", help="its raft address")
    learner.add_argument("--http-addr", type=_addr, required=True, metavar="H:P", help="its HTTP address")
    learner.set_defaults(run=_cluster_add_learner, default_timeout=ADD_LEARNER_TIMEOUT)

    unlearn = cv.add_parser("remove-learner", parents=[client], help="remove a learner from the cluster",
                            description="DELETE /cluster/learners/ID on the leader: the learner leaves the "
                            "membership (the voters do not change), whether its node is running or gone; its "
                            "addresses are free again. A voter leaves with 'cluster members' instead.")
    unlearn.add_argument("--id", type=_node_id, required=True, help="the learner's id")
    unlearn.set_defaults(run=_cluster_remove_learner, default_timeout=30.0)

    members = cv.add_parser("members", parents=[client], help="show or change the voters",
                            description="Without --voters: print the voters and learners. With --voters: "
                            "make exactly those nodes the voters (joint consensus; POST /cluster/members).")
    members.add_argument("--voters", type=_ids, metavar="ID,ID", help="the new voter ids",
                         action=given_once("give them all in one, comma-separated: --voters ID,ID"))
    members.add_argument("--retain", action="store_true", help="removed voters stay as learners")
    members.add_argument("--allow-lagging", action="store_true",
                         help="change even if most new voters have not caught up with the leader "
                         "(refused otherwise: such a change cannot commit until they do)")
    members.set_defaults(run=_cluster_members, default_timeout=30.0)

    status = cv.add_parser("status", parents=[client], help="a table of every member",
                           description="GET /cluster/status of every endpoint and every member they name; "
                           "one row per node.")
    status.add_argument("--json", action="store_true", help="print the statuses as JSON")
    status.set_defaults(run=_cluster_status)

    transfer = cv.add_parser("transfer", parents=[client], help="hand leadership to a voter",
                             description="POST /cluster/transfer; returns once the target leads.")
    transfer.add_argument("--to", type=_node_id, required=True, help="the voter to lead")
    transfer.set_defaults(run=_cluster_transfer)

    from .recover import CONFIRM_FLAG

    force = cv.add_parser("force-recover", help="UNSAFE: make a stopped survivor the only voter of a new cluster",
                          description="UNSAFE, for a cluster that lost a majority of its voters for good: make the "
                          "stopped node of --data-dir the only voter (and only member) of a new cluster named "
                          "--new-cluster-name, keeping its data; then start it with that --cluster-name and add new "
                          "nodes. Writes that only the lost voters held are lost. Refused while the node runs or another "
                          f"voter of its membership answers. Without {CONFIRM_FLAG} it shows what it would do and "
                          "changes nothing.")
    force.add_argument("--data-dir", required=True, metavar="DIR", type=_node_dir,
                       help="the stopped survivor's data directory (the one serve was given)")
    force.add_argument("--new-cluster-name", required=True, metavar="NAME", type=_cluster_name,
                       help="the recovered cluster's name, other than the node's (every node of it is started with "
                       "--cluster-name NAME; the old voters are refused at the handshake)")
    mode = force.add_mutually_exclusive_group()
    mode.add_argument(CONFIRM_FLAG, dest="confirmed", action="store_true",
                      help="do it (without it: show the plan, change nothing)")
    mode.add_argument("--abort", action="store_true",
                      help="give up a recovery to NAME that was interrupted before its membership entry was written, "
                      "so the node may rejoin its old cluster (whose voters came back)")
    force.add_argument("--timeout", type=_timeout, default=2.0, metavar="S",
                       help="seconds to wait for the other voters' answer to GET /cluster/status (default 2)")
    force.set_defaults(run=_cluster_force_recover)

    # kv
    kv = verbs.add_parser("kv", help="read and write keys", description="Key-value client verbs.")
    kvv = kv.add_subparsers(dest="kv_verb", metavar="VERB", required=True)
    put = kvv.add_parser("put", parents=[client], help="set a key", description="PUT /kv/KEY; prints "
                         '{"index": N} once committed.')
    put.add_argument("key", type=_key)
    put.add_argument("value", type=_text, nargs="?", help="the value (or give it in --value-file)")
    put.add_argument("--value-file", type=_value_file, metavar="FILE",
                     help="read the value from FILE ('-': standard input), as it holds it (a final newline "
                     "included): for a value longer than a command-line argument may be (128 KiB on Linux)")
    put.set_defaults(run=_kv_put)
    put.value_sources = ("value", "value_file")
    get = kvv.add_parser("get", parents=[client], help="read a key",
                         description="GET /kv/KEY; prints the value (exit 1 when absent).")
    get.add_argument("key", type=_key)
    get.add_argument("--consistency", choices=("linearizable", "lease", "local"), default="linearizable",
                     help="linearizable (default; ReadIndex), lease (leader lease) or local (this node's "
                     "state, may be stale)")
    get.set_defaults(run=_kv_get)
    delete = kvv.add_parser("delete", parents=[client], help="delete a key",
                            description='DELETE /kv/KEY; prints {"index": N}.')
    delete.add_argument("key", type=_key)
    delete.set_defaults(run=_kv_delete)
    cas = kvv.add_parser("cas", parents=[client], help="compare and set",
                         description="Set KEY to --value or the text of --value-file (neither: delete it) iff "
                         'its value is --expected (omitted: absent). Prints {"ok": bool, "current": value}; '
                         "exit 1 when it did not match.")
    cas.add_argument("key", type=_key)
    cas.add_argument("--expected", type=_text, help="the value KEY must have (omit: KEY must be absent)")
    # (A group's add_argument is not _Parser's: GivenOnce is given here.)
    new_value = cas.add_mutually_exclusive_group()
    new_value.add_argument("--value", type=_text, action=GivenOnce,
                           help="the new value (omit it and --value-file: delete KEY)")
    new_value.add_argument("--value-file", type=_value_file, action=GivenOnce, metavar="FILE",
                           help="read the new value from FILE ('-': standard input), as it holds it (a final "
                           "newline included): for a value longer than a command-line argument may be (128 KiB "
                           "on Linux)")
    cas.set_defaults(run=_kv_cas)

    # demo
    from .demo import add_demo_arguments

    demo = verbs.add_parser("demo", help="a 3-node cluster under load, a leader crash, a new member",
                            description="What 'make run' runs: 3 serve processes, concurrent clients, "
                            "SIGKILL of the leader and its restart, a fourth node added as a voter, "
                            "then a summary with the durability and linearizability checks.")
    add_demo_arguments(demo)
    demo.set_defaults(run=_run_demo)
    return p


# -- running verbs ---------------------------------------------------------------------------------


def _prog(args: argparse.Namespace) -> str:
    sub = getattr(args, "cluster_verb", None) or getattr(args, "kv_verb", None)
    return " ".join(x for x in ("openraft-py", args.verb, sub) if x)


def _async(fn: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return asyncio.run(fn(args))

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def _run_serve(args: argparse.Namespace) -> int:
    from .server import run_serve

    return run_serve(args)


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args)


def _endpoints_from_env() -> list[str] | None:
    """The endpoints of ``$OPENRAFT_PY_ENDPOINTS`` (``None`` when it is unset or blank); a
    usage error naming the variable when they do not parse. (As the default of
    ``--endpoints``, argparse refused such a value as "argument --endpoints: ...", though no
    ``--endpoints`` was given.)"""
    from .client import parse_endpoints

    text = os.environ.get(ENDPOINTS_ENV, "")
    if not text.strip():
        return None
    try:
        return parse_endpoints(text)
    except ValueError as e:
        raise CliError(f"${ENDPOINTS_ENV}={quoted(text)}: {e} (or pass --endpoints H:P,H:P)", EXIT_USAGE) from None


def _client(args: argparse.Namespace, **kw: Any) -> KvClient:
    """A ``KvClient`` of ``--endpoints``, else ``$OPENRAFT_PY_ENDPOINTS`` (which sets
    ``args.endpoints``), with ``--timeout`` or the verb's default."""
    from .client import KvClient

    if args.endpoints is None:
        args.endpoints = _endpoints_from_env()
    if not args.endpoints:
        raise CliError(f"no endpoints: pass --endpoints H:P,H:P or set ${ENDPOINTS_ENV}", EXIT_USAGE)
    if args.timeout is None:
        args.timeout = getattr(args, "default_timeout", 10.0)
    return KvClient(args.endpoints, deadline=args.timeout, attempt_timeout=args.timeout, **kw)


class _Deadline:
    """The end of a verb's ``--timeout`` (seconds from now). A verb that asks several things
    in turn gives each the time left, so that it ends within about ``--timeout`` in all:
    ``cluster init`` gave every status, the init and the wait for the leader a bound of
    their own, and took two to three times ``--timeout``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def expired(self) -> bool:
        return time.monotonic() >= self._end

    def left(self, at_most: float | None = None) -> float:
        """Seconds left (at least ``STEP_MIN``; at most ``at_most`` when given)."""
        left = max(STEP_MIN, self._end - time.monotonic())
        return left if at_most is None else min(left, at_most)


def _check(r: Response, what: str) -> Response:
    """``r`` if OK; otherwise ``CliError`` with the reason (exit 3 when unknown)."""
    from .client import Outcome

    if r.outcome is Outcome.OK:
        return r
    if r.outcome is Outcome.INFO:
        raise CliError(f"{what}: outcome unknown (it may or may not have been applied): {r.error}", EXIT_UNKNOWN)
    raise CliError(f"{what} failed: {r.error}")


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, sort_keys=True))


@_async
async def _cluster_force_recover(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .recover import Refused, abort_recovery, force_recover

    try:
        if args.abort:
            await abort_recovery(Path(args.data_dir), args.new_cluster_name, print)
        else:
            await force_recover(Path(args.data_dir), args.new_cluster_name, args.confirmed, args.timeout, print)
    except Refused as e:
        raise CliError(str(e)) from None
    return EXIT_OK


@_async
async def _kv_put(args: argparse.Namespace) -> int:
    async with _client(args) as c:
        value = args.value if args.value is not None else args.value_file  # (exactly one: _Parser)
        r = _check(await c.put(args.key, value), f"put {args.key!r}")
        _print_json(r.json())
    return EXIT_OK


def _read_attempt_timeout(args: argparse.Namespace) -> float:
    """Seconds one attempt of ``kv get`` may take: ``--timeout`` shared among the endpoints,
    but at least ``READ_ATTEMPT_MIN`` (and at most ``--timeout``). A node that accepts the
    connection and never answers (stopped with SIGSTOP, frozen, overloaded) took the whole
    ``--timeout`` of its attempt, and the read failed without asking the other endpoints. A
    read has no effect, so giving up on one attempt and asking the next endpoint loses
    nothing (a write's attempt keeps the whole ``--timeout``: after it is sent, giving up
    makes its outcome unknown)."""
    timeout: float = args.timeout
    return min(timeout, max(READ_ATTEMPT_MIN, timeout / len(args.endpoints)))


@_async
async def _kv_get(args: argparse.Namespace) -> int:
    async with _client(args) as c:
        r = _check(await c.get(args.key, args.consistency, attempt_timeout=_read_attempt_timeout(args)),
                   f"get {args.key!r}")
        if r.value is None:
            raise CliError(f"key {args.key!r} not found")
        sys.stdout.write(r.value + "\n")
    return EXIT_OK


@_async
async def _kv_delete(args: argparse.Namespace) -> int:
    async with _client(args) as c:
        r = _check(await c.delete(args.key), f"delete {args.key!r}")
        _print_json(r.json())
    return EXIT_OK


@_async
async def _kv_cas(args: argparse.Namespace) -> int:
    async with _client(args) as c:
        value = args.value if args.value is not None else args.value_file  # (None: neither, delete; not both)
        r = _check(await c.cas(args.key, args.expected, value), f"cas {args.key!r}")
        ans = r.json()
        _print_json(ans)
    return EXIT_OK if ans.get("ok") else EXIT_FAILED


@_async
async def _cluster_init(args: argparse.Namespace) -> int:
    from .client import ClientError
    from .nodes import check_member_addr

    async with _client(args) as c:
        deadline = _Deadline(args.timeout)
        members: dict[int, tuple[str, str]] = {}
        # Every status at once (as given: a repeated endpoint is refused below as two of one id).
        statuses = await asyncio.gather(*(c.status(ep, timeout=deadline.left(5.0)) for ep in args.endpoints),
                                        return_exceptions=True)
        read: list[dict[str, Any]] = []
        for ep, st in zip(args.endpoints, statuses):
            if isinstance(st, ClientError):
                raise CliError(f"cannot read the status of {ep}: {st}")
            if isinstance(st, BaseException):
                raise st
            read.append(st)
        # First, before what else a status may be refused for: a node of a running cluster
        # that also listens on a wildcard address was told to "POST /cluster/init" by hand,
        # the very init that starts a second cluster sharing it.
        _refuse_nodes_in_a_cluster(args.endpoints, read)
        for ep, st in zip(args.endpoints, read):
            nid = st.get("id")
            if not isinstance(nid, int) or not st.get("raft_addr"):
                raise CliError(f"{ep} did not report its id and raft address")
            if nid in members:
                raise CliError(f"two endpoints report node id {nid}")
            members[nid] = (str(st["raft_addr"]), str(st.get("http_addr") or ep))
            try:  # what the node listens on goes into the membership: it must be reachable
                for addr in members[nid]:
                    check_member_addr(addr, f"node {nid} (at {ep}) listens on {addr!r}")
            except ValueError as e:
                raise CliError(f"{e}; start it with --raft-addr and --http-addr set to addresses the other "
                               "nodes reach, or POST /cluster/init with them") from None
        if deadline.expired():
            raise CliError(f"init: nothing sent: the nodes' statuses took the whole --timeout of {args.timeout:g}s")
        left = deadline.left()
        # The first endpoint takes it, or the next when one refused, doing nothing: a node
        # whose stop began since its status was read.
        r = _check(await c.init(members, deadline=left, attempt_timeout=left), "init")
        if r.status != 200:
            raise CliError(f"init failed: HTTP {r.status}")
        print(f"initialized: voters {sorted(members)}")
        lid, _ = await _leader_or_fail(c, deadline.left())
        print(f"leader: n{lid}")
    return EXIT_OK


def _in_a_cluster(status: dict[str, Any]) -> bool:
    """Whether a node's ``status`` says it is in a cluster (or was): it names voters,
    learners or a leader."""
    return bool(status.get("voters") or status.get("learners") or status.get("leader_id") is not None)


def _refuse_nodes_in_a_cluster(endpoints: list[str], statuses: list[Any]) -> None:
    """``CliError`` (nothing sent) when a node to initialize is in a cluster already: its
    status names voters, learners or a leader. The init would go to the
    first endpoint (or a later one, when those before it refuse it as they stop), and if that node had not heard from the cluster yet (its data directory
    new, the cluster's leader not elected yet, or the node left out of the first init), it
    would start a second cluster sharing nodes with the first: two leaders, each taking
    writes the other's nodes do not hold. Before, only the first endpoint's own refusal (409,
    once it holds the membership) stopped a second init."""
    for ep, st in zip(endpoints, statuses, strict=True):
        if not all(v is None or (type(v) is list and all(type(i) is int for i in v))
                   for v in (st.get("voters"), st.get("learners"))):
            raise CliError(f"{ep} answered a status whose voters and learners are not lists of node ids "
                           "(is it an openraft-py HTTP address?); nothing was sent")
        if not _in_a_cluster(st):
            continue
        leader = st.get("leader_id")
        voters, learners = st.get("voters") or [], st.get("learners") or []
        nid = st.get("id")
        # A membership without the node itself: a learner removed from its cluster (its data
        # keeps what it last held), or a node being added that has not received the entry
        # adding it yet. Refused all the same (its log is that cluster's), said as it is.
        outside = ""
        if (voters or learners) and nid not in voters and nid not in learners:
            outside = f"; node {nid} is not among them: removed from that cluster, or being added to it"
        raise CliError(f"node {nid} (at {ep}) is in a cluster already (voters {voters}, learners {learners}, leader "
                       f"{'unknown' if leader is None else f'n{leader}'}{outside}): a "
                       "cluster is initialized once, through one node; nothing was sent. To grow that cluster, "
                       "add the new nodes with 'openraft-py cluster add-learner' and 'openraft-py cluster members'; "
                       "to start another cluster, give only nodes of no cluster (new data directories)")


@_async
async def _cluster_add_learner(args: argparse.Namespace) -> int:
    from .client import Outcome

    explicit_timeout = args.timeout is not None
    async with _client(args) as c:
        deadline = _Deadline(args.timeout)
        await _reach_a_node(args, explicit_timeout, deadline)
        r = await c.add_learner(args.id, args.raft_addr, args.http_addr, deadline=deadline.left())
        if r.outcome is Outcome.INFO:
            index = await _what_became_of_the_learner(c, args, r.error, deadline)
            if index is not None:
                print(f"n{args.id} added as a learner and caught up (log index {index})")
                return EXIT_OK
        r = _check(r, f"add-learner {args.id}")
        print(f"n{args.id} added as a learner and caught up (log index {r.json().get('index')})")
    return EXIT_OK


async def _what_became_of_the_learner(c: KvClient, args: argparse.Namespace, why: str | None,
                                      deadline: _Deadline) -> int | None:
    """After an add-learner whose outcome is unknown (the leader's 503 when the learner did
    not catch up within its bound, or no answer within ``--timeout``), asks the leader (the
    one that took the request, or the next) what became of it, once that leader has
    committed its whole log (so the membership too):

    - the learner is in its membership at the addresses given and its replication has
      reached that log: returns the leader's committed index (added and caught up: the
      leader that took the request went away, say, and the next one brought the learner up
      to date; that was reported as "has not caught up ... is it running there?", exit 1);
    - it is there but has not caught up (asked again while time is left): ``CliError``
      (exit 1) saying so, which is what happens when the node is not running there;
    - otherwise, or when that cannot be told: ``None`` (the outcome stays unknown: with no
      quorum, say, the entry may never commit).

    The questions keep to the verb's ``deadline`` (each has the time left, at least
    ``STEP_MIN``; a status is asked again only while time is left): they had bounds of their
    own (5 s to find the leader, then up to five statuses of 2 s), so with no node answering
    ``--timeout 5`` took 10 s, and up to 16 s past it with a leader slow to answer."""
    from .client import ClientError

    lagging = False
    try:
        _, http = await c.find_leader(timeout=deadline.left(5.0))
        # (Writes in flight: the leader commits its log within moments; a new leader
        # reaches the learner within a heartbeat.)
        for asked in range(5):
            if asked and deadline.expired():
                break
            st = await c.status(http, timeout=deadline.left(2.0))
            committed = st.get("committed_index")
            if type(committed) is int and committed == st.get("last_log_index"):
                if not _holds_learner(st, args):
                    return None
                replication = st.get("replication")
                matched = replication.get(str(args.id)) if isinstance(replication, dict) else None
                if type(matched) is int and matched >= committed:
                    return committed
                lagging = True
            await asyncio.sleep(min(0.2, deadline.left()))
    except (TimeoutError, ClientError):
        return None
    if lagging:
        raise CliError(f"add-learner {args.id}: n{args.id} was added as a learner but has not caught up with the "
                       f"leader ({why}): is it running at {args.raft_addr}? It stays a learner and catches up once "
                       "it runs there; if the address was wrong, run add-learner again with the right one; if the "
                       f"id was wrong, remove it with 'cluster remove-learner --id {args.id}'")
    return None


def _holds_learner(st: dict[str, Any], args: argparse.Namespace) -> bool:
    """Whether status ``st``'s membership has ``args.id`` as a learner at the addresses given."""
    learners = st.get("learners")
    nodes = st.get("nodes")
    node = nodes.get(str(args.id)) if isinstance(nodes, dict) else None
    return (isinstance(learners, list) and args.id in learners
            and node == {"raft_addr": args.raft_addr, "http_addr": args.http_addr})


@_async
async def _cluster_remove_learner(args: argparse.Namespace) -> int:
    from .client import Outcome

    explicit_timeout = args.timeout is not None
    async with _client(args) as c:
        deadline = _Deadline(args.timeout)
        await _reach_a_node(args, explicit_timeout, deadline)
        r = await c.remove_learner(args.id, deadline=deadline.left())
        if r.outcome is Outcome.INFO and await _removed_after_all(c, args.id, deadline):
            print(f"n{args.id} removed (it is not a member of the leader's committed membership)")
            return EXIT_OK
        st = _check(r, f"remove-learner {args.id}").json()
        print(f"n{args.id} removed (log index {st.get('index')})")
        print(f"voters: {','.join(map(str, st.get('voters', [])))}")
        print(f"learners: {','.join(map(str, st.get('learners', []))) or '-'}")
    return EXIT_OK


async def _removed_after_all(c: KvClient, node_id: int, deadline: _Deadline) -> bool:
    """After a remove-learner whose outcome is unknown (no answer within ``--timeout``, a
    503): whether the leader's membership no longer names ``node_id`` and the leader has
    committed its whole log (so that membership too). ``False`` when that cannot be told
    within the verb's ``deadline`` (the outcome stays unknown), as ``_what_became_of_the_learner``
    asks."""
    from .client import ClientError

    try:
        _, http = await c.find_leader(timeout=deadline.left(5.0))
        for asked in range(5):  # (writes in flight: the leader commits its log within moments)
            if asked and deadline.expired():
                return False
            st = await c.status(http, timeout=deadline.left(2.0))
            if st.get("committed_index") is not None and st.get("committed_index") == st.get("last_log_index"):
                return str(node_id) not in (st.get("nodes") or {})
            await asyncio.sleep(min(0.2, deadline.left()))
    except (TimeoutError, ClientError):
        pass
    return False


@_async
async def _cluster_members(args: argparse.Namespace) -> int:
    if args.voters is None:  # they say how to change the voters: alone, nothing would change
        given = [flag for flag, on in (("--retain", args.retain), ("--allow-lagging", args.allow_lagging)) if on]
        if given:
            raise CliError(f"{' and '.join(given)} {'go' if len(given) > 1 else 'goes'} with --voters (without it, "
                           "'cluster members' only prints the voters and learners)", EXIT_USAGE)
    explicit_timeout = args.timeout is not None
    async with _client(args) as c:
        deadline = _Deadline(args.timeout)
        await _reach_a_node(args, explicit_timeout, deadline)
        if args.voters is None:
            await _refuse_if_in_no_cluster(c, args, deadline)
            lid, http = await _leader_or_fail(c, deadline.left())
            st = await c.status(http, timeout=deadline.left(2.0))
        else:
            from .client import Outcome

            r = await c.change_members(args.voters, args.retain, args.allow_lagging, deadline=deadline.left())
            found = await _members_after_all(c, args.voters, deadline) if r.outcome is Outcome.INFO else None
            st = found if found is not None else _check(r, "members").json()
        print(f"voters: {','.join(map(str, st.get('voters', [])))}")
        print(f"learners: {','.join(map(str, st.get('learners', []))) or '-'}")
    return EXIT_OK


async def _members_after_all(c: KvClient, voters: list[int], deadline: _Deadline) -> dict[str, Any] | None:
    """After a ``members --voters`` whose outcome is unknown (a 503 from a leader that
    stepped down meanwhile, no answer within ``--timeout``): the leader's status when its
    membership is uniform with exactly ``voters`` and it has committed its whole log (so that
    membership too); ``None`` when that cannot be told within the verb's ``deadline`` (the
    outcome stays unknown). A leader that takes over a change finishes it on its own."""
    from .client import ClientError

    try:
        _, http = await c.find_leader(timeout=deadline.left(5.0))
        for asked in range(10):  # (the next leader finishes the change within moments)
            if asked and deadline.expired():
                return None
            st = await c.status(http, timeout=deadline.left(2.0))
            if st.get("committed_index") is not None and st.get("committed_index") == st.get("last_log_index") \
                    and not st.get("joint"):
                return st if sorted(st.get("voters") or []) == sorted(voters) else None
            await asyncio.sleep(min(0.2, deadline.left()))
    except (TimeoutError, ClientError):
        pass
    return None


async def _refuse_if_in_no_cluster(c: KvClient, args: argparse.Namespace, deadline: _Deadline) -> None:
    """``CliError`` (exit 1) when no endpoint can lead the search for a leader anywhere:

    - every endpoint answers a status naming no voter and no leader, and still does
      ``client.NO_CLUSTER_GRACE`` (1 s) later: nodes started and never initialized nor
      added, where no leader comes until an init. (Nodes initialized a moment ago through
      another node answer so until they hear from the new leader: hence the grace, as
      ``KvClient``'s.)
    - every endpoint answers, but not with a node's status (a 4xx, or a 200 that is not a
      status): not a node's HTTP API, such as a node's raft port, which answers 400 "this is
      an openraft-py raft port ...". No retry changes that answer.

    The search for a leader waited out the whole ``--timeout`` (30 s) in both cases, then
    said "no leader found". An endpoint that does not answer, or any other answer, returns
    (the search then runs as before); the statuses are asked at once."""
    from .client import NO_CLUSTER_GRACE

    first = time.monotonic()
    kind, why = await _what_the_endpoints_are(c, args, deadline)
    if kind == "foreign":
        raise CliError(f"no node's HTTP API at {_first_few(args.endpoints)}: {why}")
    if kind != "pristine":
        return
    while time.monotonic() - first < NO_CLUSTER_GRACE and not deadline.expired():
        await asyncio.sleep(min(0.2, deadline.left()))
        if (await _what_the_endpoints_are(c, args, deadline))[0] != "pristine":
            return
    # (Safe for nodes of a running cluster started again on empty data directories too: they
    # answer as new nodes until a leader reaches them, and an init would split the cluster.)
    raise CliError(f"no node at {_first_few(args.endpoints)} is in a cluster yet. To start a new cluster, initialize "
                   "it once with 'openraft-py cluster init'. If they were members of a running cluster (their data "
                   "directories lost or new), do not init them, which would start a second cluster: give "
                   "--endpoints of its other nodes, and add back any that is no longer a member with "
                   "'openraft-py cluster add-learner'")


async def _what_the_endpoints_are(c: KvClient, args: argparse.Namespace, deadline: _Deadline) -> tuple[str, str]:
    """What every endpoint's status says (``_refuse_if_in_no_cluster``), asked at once:
    ``("pristine", "")`` when each names no voter, no learner and no leader; ``("foreign",
    why)`` when each answered HTTP but not with a node's status (4xx, or a 200 that is not
    one; ``why`` the answers); else ``("other", "")``, as soon as one endpoint answers
    otherwise, does not answer, or answers 5xx (a node stopping)."""
    from .client import ClientError, in_no_cluster_status

    async def one(ep: str) -> tuple[str, str]:
        try:
            st = await c.status(ep, timeout=deadline.left(2.0))
        except ClientError as e:
            why = _no_node_s_answer(ep, e)
            return ("foreign", why) if why is not None else ("other", "")
        if in_no_cluster_status(st):
            return "pristine", ""
        return "other", ""

    asking = {asyncio.ensure_future(one(ep)) for ep in args.endpoints}
    kinds: set[str] = set()
    whys: list[str] = []
    try:
        while asking:  # the first other answer ends the check: a node slow to answer holds up nothing
            done, asking = await asyncio.wait(asking, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                kind, why = task.result()
                kinds.add(kind)
                whys += [why] if why else []
            if "other" in kinds or len(kinds) > 1:
                return "other", ""
    finally:
        for task in asking:
            task.cancel()
        await asyncio.gather(*asking, return_exceptions=True)
    return kinds.pop(), _first_few(whys, "; ")  # (every endpoint answered alike)


def _no_node_s_answer(ep: str, e: ClientError) -> str | None:
    """The answer of ``ep``, one line starting with ``ep``, when its failed status call ``e``
    shows that no service node is there: it answered, but not with a node's status (a 4xx,
    such as a raft port's 400 "this is an openraft-py raft port ...", or a 200 that is not a
    status), or not in HTTP at all. No retry changes that answer. ``None`` when it did not
    answer, or answered 5xx (a node stopping): that may change."""
    from .client import answered_not_http

    status = e.response.status
    if (status is not None and status < 500) or answered_not_http(e.response):
        text = str(e)
        return text if text.startswith(ep) else f"{ep} answered {text}"
    return None


def _why_no_status(ep: str, e: ClientError) -> str:
    """Why ``ep``'s status call ``e`` failed, one line naming ``ep``: an answer as ``"H:P
    answered HTTP 503: ..."`` (its text names no endpoint: "HTTP 503: the node is stopping"
    alone did not say which one answered so), else the client's reason ("cannot connect to
    H:P: ...", "no answer from H:P within 3s")."""
    text = str(e)
    return f"{ep} answered {text}" if e.response.status is not None and not text.startswith(ep) else text


async def _leader_or_fail(c: KvClient, timeout: float) -> tuple[int, str]:
    try:
        return await c.find_leader(timeout=timeout)
    except TimeoutError as e:
        raise CliError(str(e)) from None


async def _reach_a_node(args: argparse.Namespace, explicit_timeout: bool, deadline: _Deadline) -> None:
    """Return once some endpoint accepts a TCP connection; ``CliError`` (exit 1, nothing
    sent) when none has within ``CONTACT_TIMEOUT`` seconds, or within ``--timeout`` when one
    was given. For the verbs whose default ``--timeout`` is long (see ``CONTACT_TIMEOUT``).
    Only a connection is asked for, not an answer: a node that accepts and is slow to answer
    is the verb's own business (its request may be taken, an unknown outcome it then looks
    into). Every endpoint is tried at once, in rounds; the last reason ends the line."""
    from .client import os_error_text

    bound = deadline.seconds if explicit_timeout else min(CONTACT_TIMEOUT, deadline.seconds)
    end = time.monotonic() + min(bound, deadline.left())

    async def connect(ep: str) -> str | None:
        """``None`` once ``ep`` accepts a connection (closed again), else why not."""
        host, _, port = ep.rpartition(":")
        wait = max(STEP_MIN, min(2.0, end - time.monotonic()))
        try:
            async with asyncio.timeout(wait):
                _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except TimeoutError:
            return f"no connection to {ep} within {wait:.1f}s"
        except OSError as e:
            return f"cannot connect to {ep}: {os_error_text(e)}"
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return None

    why = ""
    while True:
        # The first endpoint that connects ends the wait: one that never completes the
        # connection (a host that is down) holds up none of the others.
        trying = {asyncio.ensure_future(connect(ep)) for ep in args.endpoints}
        try:
            while trying:
                done, trying = await asyncio.wait(trying, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    result = task.result()
                    if result is None:
                        return
                    why = result
        finally:
            for task in trying:
                task.cancel()
            await asyncio.gather(*trying, return_exceptions=True)
        if time.monotonic() + 0.2 >= end:
            raise CliError(f"no node answered at {_first_few(args.endpoints)} within {bound:g}s ({why}): is the "
                           "cluster running there? (--timeout S waits longer)")
        await asyncio.sleep(0.2)


@_async
async def _cluster_transfer(args: argparse.Namespace) -> int:
    async with _client(args) as c:
        _check(await c.transfer(args.to), f"transfer to {args.to}")
        print(f"n{args.to} leads")
    return EXIT_OK


_COLUMNS = ("ID", "STATE", "ROLE", "TERM", "LEADER", "LAST_LOG", "COMMITTED", "APPLIED", "HTTP", "RAFT")


def status_table(rows: dict[int, dict[str, Any] | str], voters: Sequence[int], learners: Sequence[int]) -> str:
    """The ``cluster status`` table: one row per node id of ``rows`` (a status dict, or a
    string saying why there is none), roles from ``voters`` / ``learners``: "voter",
    "learner", or "not a member" for a node an endpoint reached that the membership does
    not name (one removed that still runs: it shows the state it had, e.g. Learner), each
    followed by "(catching up)" when the status says so: the node started on an empty data
    directory and neither votes nor campaigns until it caught up. (That showed nowhere but
    in its directory's ``catching-up.json`` and its log: a cluster that had no leader while
    it caught up showed a voter like any other.)"""

    def cell(v: Any) -> str:
        return "-" if v is None else str(v)

    lines = [list(_COLUMNS)]
    for nid in sorted(rows):
        st = rows[nid]
        role = "voter" if nid in voters else "learner" if nid in learners else "not a member"
        if isinstance(st, dict) and st.get("catching_up") is True:
            role += " (catching up)"  # (it does not vote yet: see the guide's "A lost disk")
        if isinstance(st, str):
            lines.append([str(nid), st, role, "", "", "", "", "", "", ""])
            continue
        lines.append([str(nid), cell(st.get("state")), role, cell(st.get("term")), cell(st.get("leader_id")),
                      cell(st.get("last_log_index")), cell(st.get("committed_index")), cell(st.get("applied_index")),
                      cell(st.get("http_addr")), cell(st.get("raft_addr"))])
    widths = [max(len(r[i]) for r in lines) for i in range(len(_COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in lines)


def _membership_rank(st: dict[str, Any]) -> tuple[int, bool, int]:
    """How recent the membership in status ``st`` is, for ``cluster status`` to show the
    newest one: by term, then the leader's (it holds every membership entry of its term),
    then by last log index (a membership takes effect when appended). The highest term alone
    took the last of the nodes of that term to answer: a node lagging in a membership change
    showed the old voters."""
    term, last = st.get("term"), st.get("last_log_index")
    return (term if isinstance(term, int) else -1, st.get("state") == "Leader", last if isinstance(last, int) else -1)


def _voter_sets(st: dict[str, Any]) -> list[list[int]]:
    """The voter sets of status ``st``'s membership (``configs``: two while a change is in
    progress); ``[]`` when it gives none that are lists of ids (a node of an earlier
    version)."""
    configs = st.get("configs")
    if not isinstance(configs, list) or not all(
            isinstance(c, list) and all(type(i) is int for i in c) for c in configs):
        return []
    return [list(c) for c in configs]


def _rows_by_id(answers: list[tuple[str, dict[str, Any]]], known: dict[int, str],
                ) -> tuple[dict[int, dict[str, Any] | str], dict[str, tuple[int, int]]]:
    """``cluster status``'s rows by node id from ``answers`` (each ``(endpoint, status)``,
    in the order they came; ``known``: each member's HTTP address in the memberships read),
    and ``{endpoint: (member, id)}`` for each member's address that answered as another
    node. Such an answer (a node started with another node's ``--id`` on a member's
    addresses) is no row of the id it claims: that id's row is the answer at that node's own
    address, else the first other; the row of each member at that address says
    ``"answers as nN"`` unless the member answered elsewhere (``wrong`` names the last one
    ``known`` names there). The last answer of an id was taken, whichever address it came
    from, so the impostor's row hid the real node (a leader shown as a Learner of term 0).

    Invariant: an answer is its member's when any membership read names that id at that
    address (``known`` keeps one address per id, but one address may be named for two ids:
    a node replaced by another on its host, while a lagging node's membership still names
    the old one): judged by the last id named there only, the new node was reported as
    another node at the old one's address, and shown unreachable."""
    members_at: dict[str, list[int]] = {}
    for member, http in known.items():
        members_at.setdefault(http, []).append(member)
    rows: dict[int, dict[str, Any] | str] = {}
    wrong: dict[str, tuple[int, int]] = {}
    for ep, st in answers:
        nid: int = st["id"]
        members = members_at.get(ep)
        if members and nid not in members:
            wrong[ep] = (members[-1], nid)
        elif nid not in rows or ep == known.get(nid):  # (the answer at the node's own address wins)
            rows[nid] = st
    for ep, (_member, nid) in wrong.items():
        for member in members_at[ep]:
            rows.setdefault(member, f"answers as n{nid}")
    return rows, wrong


def _newest_membership(statuses: Iterable[dict[str, Any]]) -> tuple[list[int], list[int], list[list[int]]]:
    """``(voters, learners, configs)`` of the newest membership among ``statuses``
    (``_membership_rank``); empty lists when none names its voters."""
    best: tuple[int, bool, int] | None = None
    voters: list[int] = []
    learners: list[int] = []
    configs: list[list[int]] = []
    for st in statuses:
        rank = _membership_rank(st)
        if st.get("voters") is not None and (best is None or rank > best):
            best, voters, learners = rank, list(st["voters"]), list(st.get("learners") or [])
            configs = _voter_sets(st)
    return voters, learners, configs


@_async
async def _cluster_status(args: argparse.Namespace) -> int:
    """Every endpoint's status, and every member's the answers name, each asked as soon as it
    is known (not round after round: a node that does not answer held up the next round, and
    each round had up to 3 s), all within ``--timeout``."""
    from .client import ClientError

    async with _client(args) as c:
        deadline = _Deadline(args.timeout)
        answers: list[tuple[str, dict[str, Any]]] = []  # (endpoint, its status), in the order they came
        known: dict[int, str] = {}
        failed: list[str] = []
        not_nodes: dict[str, str] = {}  # endpoint -> its answer, when it shows no node is there
        why_not: dict[str, str] = {}  # endpoint -> why its call failed ("cannot connect to H:P: ...")
        asking: dict[asyncio.Task[dict[str, Any]], str] = {}  # (in the order asked)
        running: set[asyncio.Task[dict[str, Any]]] = set()

        def ask(ep: str) -> None:
            if ep not in asking.values() and not (asking and deadline.expired()):  # (too late: unreachable)
                task = asyncio.ensure_future(c.status(ep, timeout=deadline.left(3.0)))
                asking[task] = ep
                running.add(task)

        for ep in c.endpoints:
            ask(ep)
        try:
            while running:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                running.difference_update(done)
                for task in sorted(done, key=list(asking).index):
                    ep = asking[task]
                    try:
                        st = task.result()
                    except ClientError as e:
                        failed.append(ep)
                        why = _no_node_s_answer(ep, e)
                        if why is not None:
                            not_nodes[ep] = why
                        why_not[ep] = _why_no_status(ep, e)  # (it said "no answer from H:P", a typo in the host too)
                        continue
                    if not isinstance(st.get("id"), int):
                        continue
                    answers.append((ep, st))
                    for k, addrs in (st.get("nodes") or {}).items():
                        http = addrs.get("http_addr") if isinstance(addrs, dict) else None
                        if k.isdigit() and http:
                            known[int(k)] = http
                            ask(http)
        finally:
            for task in asking:
                task.cancel()
        rows, wrong = _rows_by_id(answers, known)
        voters, learners, configs = _newest_membership(st for st in rows.values() if isinstance(st, dict))
        # (A member's row says it.) In the order asked, not the order their calls failed.
        unreachable_eps = sorted((ep for ep in failed if ep not in known.values()), key=list(asking.values()).index)
        for nid in known:
            rows.setdefault(nid, "unreachable")
        if args.json:
            _print_json({"nodes": {str(k): v for k, v in sorted(rows.items())}, "voters": voters,
                         "learners": learners, "configs": configs, "unreachable_endpoints": unreachable_eps,
                         "wrong_nodes": {ep: {"member": m, "answered_as": n} for ep, (m, n) in wrong.items()}})
        else:
            print(status_table(rows, voters, learners))
            if len(configs) == 2:
                print(f"(joint membership: the voters change from {configs[0]} to {configs[1]}; electing a leader "
                      "and committing take a majority of each)")
            for ep, (member, nid) in wrong.items():
                print(f"({ep}, node {member}'s HTTP address in the membership, answered as node {nid}: another node "
                      f"runs there (started with another --id, or on node {member}'s addresses?); node {member} does "
                      "not answer there)")
            for ep in unreachable_eps[:SHOWN_MAX]:
                print(f"({not_nodes.get(ep) or why_not.get(ep) or f'no answer from {ep}'})")
            if len(unreachable_eps) > SHOWN_MAX:
                print(f"(and {len(unreachable_eps) - SHOWN_MAX} more endpoints gave no status: --json lists them)")
        if not any(isinstance(v, dict) for v in rows.values()):
            if not_nodes and len(not_nodes) == len(c.endpoints):  # (each answered: say what, not "no answer")
                raise CliError(f"no node's HTTP API at {_first_few(c.endpoints)}: "
                               f"{_first_few(list(not_nodes.values()), '; ')}")
            whys = _first_few([why_not[ep] for ep in c.endpoints if ep in why_not], "; ")
            raise CliError(f"no node answered at {_first_few(c.endpoints)}" + (f": {whys}" if whys else ""))
    return EXIT_OK


@_async
async def _cluster_up(args: argparse.Namespace) -> int:
    from .local_cluster import ClusterError, LocalCluster

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # A --data-dir that cannot be one is named with the flag: a file was refused as
    # "[Errno 17] File exists: 'PATH'" (what mkdir says of it), naming no flag.
    where = f"--data-dir {args.data_dir!r}" if args.data_dir is not None else "the temporary data directory"
    if args.data_dir is not None and os.path.exists(args.data_dir) and not os.path.isdir(args.data_dir):
        raise CliError(f"{where}: it is a file, not a directory")
    if args.data_dir is not None:
        from .node import dangling_link

        dangling = dangling_link(args.data_dir)
        if dangling is not None:
            raise CliError(f"{where}: {dangling}")
    # Checked as serve checks them, before anything is made: a --raft-config or --max-body
    # serve refuses made the directory, started n1, and exited 1 relaying n1's usage error.
    from .node import DEFAULT_MAX_BODY
    from .server import check_raft_flags

    try:
        check_raft_flags(args.raft_config or {}, args.cluster_name,
                         DEFAULT_MAX_BODY if args.max_body is None else args.max_body)
    except ValueError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    try:
        cluster = LocalCluster(args.n, root=args.data_dir, host=args.host, cluster_name=args.cluster_name,
                               raft_config=args.raft_config, log_level=args.log_level, max_body=args.max_body)
    except ClusterError as e:
        raise CliError(str(e)) from None
    except OSError as e:  # making the directory or its lock file
        raise CliError(f"{where}: {e.strerror or e}") from None
    try:
        starting = asyncio.ensure_future(_bring_up(cluster, args.timeout))
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            stopper.cancel()
            print("interrupted while starting; stopping the nodes", file=sys.stderr)
            return 130
        stopper.cancel()
        try:
            lid, term = starting.result()
        except ClusterError as e:
            first, *details = str(e).splitlines()
            if details:  # the end of the node's log, before the one-line error
                print("\n".join(details), file=sys.stderr)
            raise CliError(first) from None
        eps = ",".join(cluster.endpoints())
        for n in cluster.nodes.values():
            print(f"n{n.id}  http {n.http_addr}  raft {n.raft_addr}  pid {n.proc.pid if n.proc else '-'}  "
                  f"data {n.data_dir}  log {n.log}")
        print(f"leader: n{lid} (term {term})")
        print(f"endpoints: {eps}")
        print(f"export {ENDPOINTS_ENV}={eps}")
        print("ready; Ctrl-C stops the cluster", flush=True)
        exited: set[int] = set()
        while not stop.is_set():
            try:
                async with asyncio.timeout(0.5):
                    await stop.wait()
            except TimeoutError:
                pass
            for n in cluster.nodes.values():
                if n.proc is not None and n.proc.poll() is not None and n.id not in exited:
                    exited.add(n.id)
                    print(f"n{n.id} exited with code {n.proc.returncode} (log: {n.log})", file=sys.stderr, flush=True)
                elif n.running:
                    exited.discard(n.id)
        print("stopping the nodes", file=sys.stderr, flush=True)
        return EXIT_OK
    finally:
        await cluster.aclose()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _bring_up(cluster: LocalCluster, timeout: float) -> tuple[int, int]:
    """Start the nodes, initialize them (a --data-dir initialized before just restarts) and
    wait for a leader; ``(leader_id, term)``."""
    from .local_cluster import ClusterError

    await cluster.start(timeout=timeout)
    members: set[int] = set()
    first = min(cluster.nodes)
    holding = sorted(i for i, st in (await cluster.statuses()).items() if _in_a_cluster(st))
    if holding and first not in holding:
        # A --data-dir of a cluster initialized before whose first node's directory is new
        # (removed): no init, which that node would take (only a node holding a membership
        # refuses one), ending its catching up (``rejoin``) in a cluster of its own; it
        # comes back as any node whose directory was removed, reached by its leader.
        members = await _check_members_of_earlier_cluster(cluster, holding[0])
    else:
        try:
            await cluster.init()
        except ClusterError as e:
            if "409" not in str(e):  # a --data-dir of a cluster initialized before: it just restarts
                raise
            members = await _check_members_of_earlier_cluster(cluster)
    removed = sorted(i for i in cluster.nodes if members and i not in members)
    if removed:
        names = ", ".join(f"n{i}" for i in removed)
        print(f"{names} {'is' if len(removed) == 1 else 'are'} no longer in the cluster of {cluster.root} (a "
              f"membership change removed {'it' if len(removed) == 1 else 'them'}): running, but not waited for",
              file=sys.stderr, flush=True)
    return await cluster.wait_leader([i for i in cluster.nodes if i not in removed], timeout=timeout)


async def _check_members_of_earlier_cluster(cluster: LocalCluster, first: int | None = None) -> set[int]:
    """``ClusterError`` if ``-n`` started nodes beyond the cluster its ``--data-dir`` held
    (``-n 4`` over a directory of 3 nodes: the fourth node would never join, and ``cluster
    up`` waited out its timeout for a leader every node agreed on), or too few of its voters
    to elect a leader (``-n 3`` over a directory of 7 voters: no majority of them runs, and
    ``cluster up`` waited out its timeout, then said only "no agreed leader"). A joint
    membership (a change cut short: ``cluster members`` to voters that were down) takes a
    majority of each of its two voter sets (the status's ``configs``): a majority of their
    union is not the rule, and such a directory was not checked at all.

    Returns the cluster's members (voters and learners) as node ``first`` (the first node
    holding a membership; default: the first node) knows them, when it is one of them (a
    node removed from the cluster may know an older membership); otherwise, or when it does
    not answer, an empty set."""
    from .local_cluster import ClusterError

    if first is None:
        first = min(cluster.nodes)
    status = (await cluster.statuses([first])).get(first) or {}
    voters = set(status.get("voters") or [])
    members = voters | set(status.get("learners") or [])
    outside = sorted(i for i in cluster.nodes if members and i > max(members))
    if outside:
        names = ", ".join(f"n{i}" for i in outside)
        # The directory as it was: what this run made for them goes (their record too).
        await asyncio.to_thread(cluster.forget_new, outside)
        raise ClusterError(f"{cluster.root} holds a cluster of nodes {sorted(members)}, initialized before; {names} "
                           f"{'is' if len(outside) == 1 else 'are'} not in it: run with -n {max(members)}, "
                           f"or add {'it' if len(outside) == 1 else 'them'} with 'openraft-py cluster add-learner' and 'cluster members'")
    configs = _voter_sets(status)
    if not configs and voters and status.get("joint") is False:
        configs = [sorted(voters)]
    not_here = _voters_not_run_here(cluster, voters, status)
    started = [set(c) & (set(cluster.nodes) - set(not_here)) for c in configs]
    if any(2 * len(s) <= len(c) for s, c in zip(started, configs)):
        missing = ", ".join(f"n{i}" for i in not_here)
        not_started = [i for i, why in not_here.items() if why.startswith("not started")]
        elsewhere = [i for i in not_here if i not in not_started]
        if not elsewhere:
            advice = f"run with -n {max(members)}"
        else:  # -n cannot start those: they are not this directory's nodes
            advice = (f"run with -n {max(not_started)} and " if not_started else "") + (
                f"start {', '.join(f'n{i}' for i in elsewhere)} where {'it runs' if len(elsewhere) == 1 else 'they run'} "
                f"({'; '.join(f'n{i}: {not_here[i]}' for i in elsewhere)})")
        if len(configs) == 1:
            raise ClusterError(f"{cluster.root} holds a cluster of voters {sorted(voters)}, initialized before; -n "
                               f"{len(cluster.nodes)} starts {len(started[0])} of them, and electing a leader takes "
                               f"{len(voters) // 2 + 1} ({missing} not started): {advice}")
        (old, new), (s_old, s_new) = configs, started
        raise ClusterError(f"{cluster.root} holds a cluster whose voters change from {old} to {new} (a membership "
                           f"change in progress), initialized before; -n {len(cluster.nodes)} starts {len(s_old)} "
                           f"of the first and {len(s_new)} of the second, and electing a leader takes a majority "
                           f"of each, {len(old) // 2 + 1} and {len(new) // 2 + 1} ({missing} not started): "
                           f"{advice}")
    if not_here:
        print(_voters_not_run_here_line(cluster, not_here, configs, started), file=sys.stderr, flush=True)
    return members if first in members else set()


def _voters_not_run_here(cluster: LocalCluster, voters: set[int], status: dict[str, Any]) -> dict[int, str]:
    """The voters of the cluster in ``cluster.root`` that this ``cluster up`` does not run,
    each with why: not started (``-n`` left it out, a node of the directory), or not one of
    the directory's nodes (the membership names it at an address ``cluster.json`` does not
    record for it: a node added elsewhere with ``cluster add-learner``, a directory copied
    from another cluster). A node ``-n`` started at another address than the membership's
    is no such voter either: no member sends it anything."""
    from .local_cluster import recorded_nodes

    recorded = recorded_nodes(cluster.root)
    given = status.get("nodes")
    named: dict[str, Any] = given if isinstance(given, dict) else {}
    out: dict[int, str] = {}
    for v in sorted(voters):
        entry = named.get(str(v))
        at = entry.get("raft_addr") if isinstance(entry, dict) else None
        mine = recorded.get(str(v), {}).get("raft_addr")
        if at is not None and at != mine:
            started = " (the one -n started here listens elsewhere)" if v in cluster.nodes else ""
            out[v] = (f"the membership names it at {quoted(at)}, which {cluster.root / 'cluster.json'} does not "
                      f"record for it: a node added elsewhere, or a directory copied from another cluster{started}")
        elif v not in cluster.nodes:
            # Without a cluster.json there is no telling (one that cannot be read is refused at start).
            out[v] = (f"not started: run with -n {v} or more" if mine is not None or not recorded
                      else f"not a node of {cluster.root}: start it where it runs")
    return out


def _voters_not_run_here_line(cluster: LocalCluster, not_here: dict[int, str], configs: list[list[int]],
                              started: list[set[int]]) -> str:
    """The line ``cluster up`` prints about the voters it does not run: which, why, and what
    that leaves of the quorum (it checked already that each voter set has a majority)."""
    names = ", ".join(f"n{v}" for v in not_here)
    why = "; ".join(f"n{v}: {reason}" for v, reason in not_here.items())
    needs = [len(c) // 2 + 1 for c in configs]
    if len(configs) == 1:
        run = f"{len(started[0])} of its {len(configs[0])} voters run here and a leader needs {needs[0]}"
    else:
        run = (f"{len(started[0])} of the {len(configs[0])} voters of its first voter set and {len(started[1])} of "
               f"the {len(configs[1])} of its second run here, and a leader needs {needs[0]} and {needs[1]}")
    spare = min((len(s) - n for s, n in zip(started, needs)), default=0)
    if spare <= 0:
        then = "so the cluster stops taking writes if one more of them stops"
    else:
        then = f"so the cluster keeps a leader with up to {spare} more of them down"
    verb = "is a voter" if len(not_here) == 1 else "are voters"
    return (f"{names} {verb} of the cluster in {cluster.root} that this cluster up does not run ({why}): "
            f"{run}, {then}")


# -- main ------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``openraft-py`` command line on ``argv`` (default ``sys.argv[1:]``); returns
    the exit code (see the module docstring). Usage errors exit 2 with one line on stderr;
    Ctrl-C exits 130 with one line; a reader of the output that went away (``openraft-py
    cluster status | head -1``) ends the command quietly with 141 (``run_cli``)."""
    return run_cli(lambda: _main(argv))


@contextlib.contextmanager
def _stdout_escaping_what_it_cannot_encode() -> Iterator[None]:
    """Standard output with ``errors="backslashreplace"`` meanwhile (as Python's stderr
    always is): a character its encoding cannot carry (``PYTHONIOENCODING=ascii``, a Latin-1
    terminal; a value of ``kv get``, a path of ``cluster up``) is printed as a backslash
    escape (``\\xe9``, ``\\u4e2d``), and so is a lone surrogate. It failed the verb with
    ``UnicodeEncodeError`` after its work was done (exit 1). An encoding that carries the
    text (UTF-8) prints it unchanged. The stream's own handler is put back afterwards."""
    out = sys.stdout
    errors = getattr(out, "errors", None)
    if not isinstance(errors, str) or not hasattr(out, "reconfigure"):
        yield  # not a text file of its own (a StringIO cannot fail to encode)
        return
    out.reconfigure(errors="backslashreplace")
    try:
        yield
    finally:
        try:
            out.reconfigure(errors=errors)  # flushes: a broken pipe is run_cli's to report
        except (OSError, ValueError):
            pass


def _changes_something(args: argparse.Namespace) -> bool:
    """Whether the verb sends a request that changes the cluster (a write of ``kv``, a change
    of ``cluster``): interrupted once it was sent, its outcome is unknown, as after a timeout
    (exit 3), and the line says so."""
    if args.verb == "kv":
        return args.kv_verb in ("put", "delete", "cas")
    if args.verb == "cluster":
        if args.cluster_verb == "force-recover":
            return bool(args.confirmed)
        return args.cluster_verb in ("init", "add-learner", "transfer") or (
            args.cluster_verb == "members" and args.voters is not None)
    return False


def _main(argv: Sequence[str] | None) -> int:
    # The package installs this script with or without the ``kv`` extra, and every verb,
    # ``--help`` and ``--version`` included, needs it (the parser imports the serve flags).
    try:
        parser = build_parser()
    except ModuleNotFoundError as e:
        missing = missing_kv_extra(e)
        if missing is None:
            raise
        print(f"openraft-py: error: {needs_kv_extra('the command line', missing)}", file=sys.stderr)
        return EXIT_FAILED
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help / --version (0) or a usage error (2)
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    try:
        with _stdout_escaping_what_it_cannot_encode():
            return int(args.run(args))
    except CliError as e:
        print(f"{_prog(args)}: error: {one_line(str(e))}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        unknown = "; it may or may not have been applied" if _changes_something(args) else ""
        print(f"{_prog(args)}: interrupted{unknown}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the output's reader went away: run_cli ends quietly
        raise
    except Exception as e:  # a bug or an environment problem: still one line
        if env_flag("OPENRAFT_PY_DEBUG"):  # "0", "false", "no", "off" or "" is off
            raise
        print(f"{_prog(args)}: error: {type(e).__name__}: {one_line(str(e))} (OPENRAFT_PY_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
