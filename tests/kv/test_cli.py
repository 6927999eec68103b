"""The ``openraft-py`` command line without a cluster: help on every verb, usage errors as one
line with exit code 2, client verbs without endpoints, ``python -m openraft_py.kv`` and the
console script."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from openraft_py.kv import cli, demo, node, server

if TYPE_CHECKING:
    from aiohttp.web import AbstractRouteDef

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def _fake_node(port: int, routes: Iterable[AbstractRouteDef]) -> AsyncIterator[str]:
    """A fake node serving ``routes`` (``aiohttp.web.get(...)`` and the like) on loopback at
    ``port`` while the block runs; yields its endpoint ``127.0.0.1:port``."""
    from aiohttp import web

    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _node_to_init(port: int, raft_addr: str, posted: list[str]) -> list[AbstractRouteDef]:
    """The routes of a fake node 1 at ``127.0.0.1:port`` that reports ``raft_addr`` in its
    status and appends the body of each ``POST /cluster/init`` to ``posted``."""
    from aiohttp import web

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"id": 1, "raft_addr": raft_addr, "http_addr": f"127.0.0.1:{port}"})

    async def init(request: web.Request) -> web.Response:
        posted.append(await request.text())
        return web.json_response({"members": [1]})

    return [web.get("/cluster/status", status), web.post("/cluster/init", init)]

@contextlib.asynccontextmanager
async def _nodes_to_init(n: int, posted: list[str],
                         edit: Callable[[int, dict[str, object]], None] | None = None) -> AsyncIterator[list[str]]:
    """``n`` fake nodes of no cluster (ids 1 to ``n``) on loopback while the block runs: each
    answers ``GET /cluster/status`` (``edit(i, status)`` changes the status of the ``i``-th,
    from 0) and appends the body of each ``POST /cluster/init`` to ``posted``; yields their
    endpoints."""
    from aiohttp import web

    from openraft_py.testing.proc_cluster import free_port

    ports = [free_port() for _ in range(n)]

    def routes(i: int) -> list[AbstractRouteDef]:
        async def status(request: web.Request) -> web.Response:
            st: dict[str, object] = {"id": i + 1, "state": "Follower", "leader_id": None, "voters": [],
                                     "learners": [], "raft_addr": f"127.0.0.1:{ports[i] + 1}",
                                     "http_addr": f"127.0.0.1:{ports[i]}"}
            if edit is not None:
                edit(i, st)
            return web.json_response(st)

        async def init(request: web.Request) -> web.Response:
            posted.append(await request.text())
            return web.json_response({"members": list(range(1, n + 1))})

        return [web.get("/cluster/status", status), web.post("/cluster/init", init)]

    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(_fake_node(p, routes(i))) for i, p in enumerate(ports)]


VERBS = [
    ["serve"], ["cluster"], ["cluster", "up"], ["cluster", "init"], ["cluster", "add-learner"],
    ["cluster", "remove-learner"], ["cluster", "members"], ["cluster", "status"], ["cluster", "transfer"],
    ["cluster", "force-recover"], ["kv"], ["kv", "put"],
    ["kv", "get"], ["kv", "delete"], ["kv", "cas"], ["demo"],
]


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: " ".join(v))
def test_every_verb_has_help(verb: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*verb, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: openraft-py {' '.join(verb)}")
    assert "--help" in out


def _options_with_defaults(parser: argparse.ArgumentParser, verb: str) -> Iterator[tuple[str, argparse.Action]]:
    """``(verb, action)`` for every option of ``parser`` and its verbs that has a default
    (neither ``None`` nor ``False``: a flag left out means something)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options_with_defaults(sub, f"{verb} {name}")
        elif action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            if not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                yield verb, action


def test_every_flag_with_a_default_names_it_in_its_help() -> None:
    """``--help`` is where a user learns what a flag left out means: serve's --cluster-name
    (``openraft-py``, the ``<cluster-name>`` of the certificates' URIs under
    --tls-bind-node-ids), --log-format and --log-level, and cluster up's, did not say."""
    options = list(_options_with_defaults(cli.build_parser(), "openraft-py"))
    assert any(a.dest == "cluster_name" for _, a in options)
    silent = [f"{verb} {'/'.join(a.option_strings)} (default {a.default!r}): {a.help!r}"
              for verb, a in options if "default" not in (a.help or "")]
    assert not silent, "flags whose --help does not give their default:\n" + "\n".join(silent)


BAD = [
    (["frobnicate"], "invalid choice"),
    ([], "required"),
    (["cluster"], "required"),
    (["cluster", "up", "-n", "zero"], "-n"),
    (["cluster", "up", "-n", "0"], "at least 1"),
    # Each node is a serve process of this machine: -n 3000 set out to start that many.
    (["cluster", "up", "-n", "3000"], f"argument -n/--nodes: '3000' must be at most {cli.MAX_LOCAL_NODES}"),
    (["cluster", "up", "--bogus"], "unrecognized arguments: --bogus"),
    (["cluster", "up", "--max-body", "1000"], "argument --max-body: '1000' must be at least 1024 bytes"),
    (["cluster", "up", "--max-body", "1_048_576"], "argument --max-body: '1_048_576' is not an integer written"),
    (["kv", "put", "k", "v", "--bogus"], "unrecognized arguments: --bogus"),
    (["kv", "put", "k"], "required: value"),
    (["kv", "put", "", "v"], "a key is a non-empty string"),
    (["kv", "put", "k", "\udcff"], "is not valid UTF-8"),  # a non-UTF-8 byte in argv
    (["kv", "get", "\udcffk"], "is not valid UTF-8"),
    (["kv", "delete", ""], "a key is a non-empty string"),
    (["kv", "cas", "k", "--expected", "\udcff"], "is not valid UTF-8"),
    (["kv", "cas", "k", "--value", "a\udcff"], "is not valid UTF-8"),
    (["kv", "get", "k", "--consistency", "sometimes"], "invalid choice"),
    (["kv", "get", "k", "--endpoints", "nohost"], "not host:port"),
    (["kv", "get", "k", "--endpoints", "h:99999"], "not host:port"),
    (["kv", "get", "k", "--endpoints", "https://h:8443"], "plain HTTP"),
    (["kv", "get", "k", "--timeout", "-1"], "must be positive"),
    (["kv", "get", "k", "--timeout", "inf"], "must be a finite number"),
    # Over before the first attempt could start: "gave up after 1 attempts: no attempt made".
    (["kv", "get", "k", "--timeout", "1e-300"], "argument --timeout: '1e-300' must be from 0.01 to 86400 seconds"),
    # Infinity in all but name: it waited for good on a node that never answered.
    (["cluster", "transfer", "--to", "1", "--timeout", "1e300"], "argument --timeout: '1e300' must be from 0.01"),
    (["cluster", "up", "--timeout", "86401", "-n", "0"], "argument --timeout: '86401' must be from 0.01"),
    (["cluster", "members", "--voters", "1,x"], "node ids"),
    # int() reads each of these: '1_0' as node 10, '+1', ' 1' and other scripts' digits as 1.
    (["cluster", "add-learner", "--id", "1_0", "--raft-addr", "h:1", "--http-addr", "h:2"],
     "argument --id: '1_0' is not a node id (written in the digits 0-9)"),
    (["cluster", "transfer", "--to", "+1"], "argument --to: '+1' is not a node id (written in the digits 0-9)"),
    (["cluster", "transfer", "--to", "\u0661"], "argument --to: '\u0661' is not a node id"),
    (["cluster", "transfer", "--to", "-0"], "argument --to: '-0' is not a node id (0 to"),
    (["cluster", "members", "--voters", "1,2_0", "--timeout", "0.5"], "'2_0' is not a node id (written in the digits"),
    # The voters 1 and 2 were made without a word; the second 1 was likely a typo for another id.
    (["cluster", "members", "--voters", "1,1,2", "--timeout", "0.5"], "argument --voters: '1,1,2' names node 1 twice"),
    # An id left out (``--voters $A,$B,$C`` with B unset): the voters 1 and 3 were made without a
    # word, removing node 2, where --endpoints refuses the same list.
    (["cluster", "members", "--voters", "1,,3", "--timeout", "0.5"],
     "argument --voters: '1,,3': id 2 of 3 is empty (a comma too many, or an id left out)"),
    (["cluster", "members", "--voters", "1,2,", "--timeout", "0.5"],
     "argument --voters: '1,2,': id 3 of 3 is empty"),
    (["cluster", "members", "--voters", ",1", "--timeout", "0.5"], "argument --voters: ',1': id 1 of 2 is empty"),
    (["cluster", "up", "-n", "\uff13"], "argument -n/--nodes: '\uff13' is not an integer written in the digits 0-9"),
    (["serve", "--id", " 1", "--raft-addr", "h:1", "--http-addr", "h:2", "--data-dir", ""],
     "argument --id: ' 1' is not a node id"),
    (["serve", "--id", "1", "--raft-addr", "h:1", "--http-addr", "h:2", "--max-body", "1_048_576", "--data-dir", ""],
     "argument --max-body: '1_048_576' is not an integer written in the digits 0-9"),
    (["demo", "--clients", "0x3"], "argument --clients: '0x3' is not an integer written in the digits 0-9"),
    (["demo", "--seed", "1_0"], "argument --seed: '1_0' is not an integer written in the digits 0-9"),
    # Without --voters they were ignored: the members printed as if the change was made.
    (["cluster", "members", "--retain"], "--retain goes with --voters"),
    (["cluster", "members", "--allow-lagging", "--retain"], "--retain and --allow-lagging go with --voters"),
    (["cluster", "add-learner", "--id", "4", "--raft-addr", "h:1"], "--http-addr"),
    (["cluster", "transfer", "--to", "-3"], "not a node id"),
    (["cluster", "remove-learner"], "the following arguments are required: --id"),
    (["cluster", "remove-learner", "--id", "x"], "argument --id: 'x' is not a node id"),
    (["cluster", "remove-learner", "--id", "1_0"], "argument --id: '1_0' is not a node id (written in the digits"),
    (["cluster", "remove-learner", "--id", "4", "--timeout", "0"], "argument --timeout: '0' must be positive"),
    (["cluster", "remove-learner", "--id", "4", "--voters", "1"], "unrecognized arguments: --voters 1"),
    (["cluster", "add-learner", "--id", "4", "--raft-addr", "0.0.0.0:1", "--http-addr", "h:2"], "wildcard"),
    (["cluster", "add-learner", "--id", "4", "--raft-addr", "h:1", "--http-addr", "h/x:2"], "not a host name"),
    (["cluster", "up", "--host", "0.0.0.0"], "not an address the nodes and clients can connect to"),
    # The current directory: the nodes' data and logs were written there and kept. (-n 0
    # fails the command line, should the empty path be taken again.)
    (["cluster", "up", "--data-dir", "", "-n", "0"],
     "argument --data-dir: an empty path (leave the flag out for a temporary directory)"),
    (["serve", "--id", "1"], "required"),
    (["serve", "--id", "one", "--raft-addr", "h:1", "--http-addr", "h:2", "--data-dir", "d"], "--id"),
    (["demo", "--duration", "soon"], "not a number"),
    # The history is kept in memory and the leader crash comes at 30% of the run: 1e9 was taken.
    (["demo", "--duration", "1e9"], f"argument --duration: '1e9' must be at most {demo.MAX_DURATION:g} seconds"),
    (["demo", "--duration", "600.5"], "argument --duration: '600.5' must be at most 600 seconds"),
    # Each made the data directory, started n1 and exited 1 relaying n1's usage error (exit 2).
    (["cluster", "up", "-n", "1", "--max-body", "99999999999"],
     "cluster up: error: --max-body 99999999999 is more than a request can use: at most 25231360 bytes"),
    (["cluster", "up", "-n", "1", "--raft-config", '{"max_entry_bytes": "x"}'],
     "cluster up: error: --raft-config: Expected `int`, got `str` - at `$.max_entry_bytes`"),
    (["cluster", "up", "-n", "1", "--raft-config", '{"cluster_name": "other"}'],
     "cluster up: error: --raft-config: cluster_name 'other' differs from --cluster-name 'openraft-py'"),
    (["cluster", "up", "-n", "1", "--raft-config", '{"max_payload_entries": 100000000}'],
     "cluster up: error: --raft-config: "),
    (["cluster", "up", "-n", "1", "--cluster-name", ""],
     "argument --cluster-name: a cluster name is a non-empty string"),
    # A control character was taken: recorded in node.json, written raw into the refusals
    # that name it ("start it with --cluster-name a" and a new line, the rest on another).
    # (The --data-dir '' after it fails the command line, should the name be taken again.)
    # Now refused as the flag is read, as cluster up's and force-recover's names are.
    (["serve", "--id", "1", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2", "--cluster-name", "a\nb",
      "--data-dir", ""],
     "argument --cluster-name: 'a\\nb' holds an unprintable character ('\\n' at 1): a cluster name is printable text"),
    (["serve", "--id", "1", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2",
      "--cluster-name", "prod\x1b[2J", "--data-dir", ""],
     "argument --cluster-name: 'prod\\x1b[2J' holds an unprintable character ('\\x1b' at 4)"),
    (["serve", "--id", "1", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2",
      "--cluster-name", "a\u2028b", "--data-dir", ""],
     "argument --cluster-name: 'a\\u2028b' holds an unprintable character ('\\u2028' at 1)"),
    (["cluster", "up", "-n", "1", "--cluster-name", "a\tb", "--data-dir", ""],
     "argument --cluster-name: 'a\\tb' holds an unprintable character ('\\t' at 1): a cluster name is printable"),
    (["cluster", "force-recover", "--new-cluster-name", "x\x00", "--data-dir", ""],
     "argument --new-cluster-name: 'x\\x00' holds an unprintable character ('\\x00' at 1)"),
    # A few thousand clients swamped the nodes ("no agreed leader"); a million keys kept the
    # end's reads going for hours.
    (["demo", "--clients", "3000"], f"argument --clients: '3000' must be at most {demo.MAX_CLIENTS}"),
    (["demo", "--clients", "0"], "argument --clients: '0' must be at least 1"),
    (["demo", "--keys", "1000000"], f"argument --keys: '1000000' must be at most {demo.MAX_KEYS}"),
    (["serve", "--id", "1", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2", "--data-dir", "d",
      "--raft-config", '{"heartbeat_interval": "50"}'], "--raft-config: Expected `int`, got `str`"),
    (["serve", "--id", "1", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2", "--data-dir", "d",
      "--raft-config", '{"snapshot_policy": "never"}'], "--raft-config: Expected `object`"),
    (["serve", "--id", "1", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2", "--data-dir", "d",
      "--raft-config", '{"election_timeout_min": 100, "election_timeout_max": 50}'],
     "--raft-config: invalid Config.election_timeout_min=100"),
    (["serve", "--id", "1", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2", "--data-dir", "d",
      "--max-body", "5"], "--max-body must be at least 1024 bytes, got 5"),
    # Over TCP no leader lasts: 3 nodes went through hundreds of terms a second.
    (["serve", "--id", "1", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2", "--data-dir", "d",
      "--raft-config", '{"heartbeat_interval": 1, "election_timeout_min": 2, "election_timeout_max": 3, '
      '"lease_drift_margin": 1}'], "--raft-config: Config.election_timeout_min=2 ms is below 10 ms"),
    # The last one was taken, the first one's settings silently dropped. (The --data-dir ''
    # and -n 0 after it fail the command line, should the repeat be taken again.)
    (["serve", "--id", "1", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2",
      "--raft-config", '{"heartbeat_interval": 20}', "--raft-config", '{"election_timeout_min": 300}',
      "--data-dir", ""], "argument --raft-config: given twice: give it once, every field in one JSON object"),
    (["cluster", "up", "--raft-config", "{}", "--raft-config", '{"heartbeat_interval": 20}', "-n", "0"],
     "argument --raft-config: given twice"),
    # A key given twice in the object: json.loads kept the last value.
    (["serve", "--id", "1", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2",
      "--raft-config", '{"heartbeat_interval": 10, "election_timeout_min": 300, "heartbeat_interval": 20}',
      "--data-dir", ""], "argument --raft-config: the key 'heartbeat_interval' is given twice"),
    (["cluster", "up", "--raft-config", '{"snapshot_policy": {"logs_since_last_n": 9, "logs_since_last_n": 8}}',
      "-n", "0"], "argument --raft-config: the key 'logs_since_last_n' is given twice"),
    # The last one was taken: a one-node cluster of the third node, the third node the only voter.
    (["cluster", "init", "--endpoints", "127.0.0.1:1", "--endpoints", "127.0.0.1:2", "--endpoints", "127.0.0.1:3",
      "--timeout", "0.5"],
     "argument --endpoints: given twice: give them all in one, comma-separated: --endpoints H:P,H:P"),
    (["cluster", "members", "--endpoints", "127.0.0.1:1", "--voters", "1,2", "--voters", "3", "--timeout", "0.5"],
     "argument --voters: given twice: give them all in one, comma-separated: --voters ID,ID"),
    # An argument too many was reported by the top-level parser: "openraft-py: error: ...
    # (see 'openraft-py --help')", the help of the verbs, not of the verb given.
    (["kv", "put", "k", "v", "extra", "--endpoints", "127.0.0.1:1"],
     "openraft-py kv put: error: unrecognized arguments: extra (see 'openraft-py kv put --help')"),
    # A value that begins with '-' is read as a flag: the error said only that the value (or
    # the flag's argument) was missing, where the user had given it.
    (["kv", "put", "k", "-x", "--endpoints", "127.0.0.1:1"],
     "the following arguments are required: value; '-x' was read as a flag: to give a key or value that "
     "begins with '-', put '--' before the key (openraft-py kv put [flags] -- KEY VALUE)"),
    (["kv", "cas", "k", "--expected", "-x", "--value", "y", "--endpoints", "127.0.0.1:1"],
     "argument --expected: expected one argument (a value that begins with '-' is given as --expected=VALUE)"),
    (["kv", "get", "k", "--endpoints", "127.0.0.1:1", "--consistency"],
     "argument --consistency: expected one argument (see"),
    # NaN (which float() reads) was said to be not positive, as if a sign were wrong.
    (["kv", "get", "k", "--endpoints", "127.0.0.1:1", "--timeout", "nan"],
     "argument --timeout: 'nan' is not a number of seconds"),
    (["demo", "--duration", "NaN"], "argument --duration: 'NaN' is not a number of seconds"),
    # Every other flag that takes a value kept the last one without a word: the node ran as
    # node 2 (and its data directory became node 2's), the learner removed was 5, the cas
    # wrote "b".
    (["serve", "--id", "1", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2", "--data-dir", "",
      "--id", "2"], "argument --id: given twice: give it once"),
    (["serve", "--id", "1", "--data-dir", "d1", "--data-dir", "d2"], "argument --data-dir: given twice"),
    (["cluster", "remove-learner", "--endpoints", "127.0.0.1:1", "--id", "4", "--id", "5", "--timeout", "0.5"],
     "argument --id: given twice: give it once"),
    (["kv", "cas", "k", "--endpoints", "127.0.0.1:1", "--value", "a", "--value", "b", "--timeout", "0.5"],
     "argument --value: given twice: give it once"),
    (["cluster", "up", "-n", "3", "--nodes", "2", "--timeout", "0"], "argument -n/--nodes: given twice: give it once"),
    # An abbreviated long flag was taken for the flag it begins (argparse's allow_abbrev):
    # a flag added later that begins alike would make it ambiguous, breaking scripts.
    (["serve", "--id", "1", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2", "--data-dir", "",
      "--tls-cer", "c.pem"], "unrecognized arguments: --tls-cer c.pem"),
    (["kv", "get", "k", "--endpoint", "127.0.0.1:1", "--timeout", "0.5"], "unrecognized arguments: --endpoint"),
    (["cluster", "status", "--endpoints", "127.0.0.1:1", "--time", "0.5"], "unrecognized arguments: --time 0.5"),
    (["--vers", "kv", "get", "k"], "unrecognized arguments: --vers"),
]


@pytest.mark.parametrize("flags", [["--max-body", "5"], ["--raft-config", '{"heartbeat_interval": "50"}']],
                         ids=["max-body", "raft-config"])
def test_serve_flag_checks_point_to_help_as_the_parsers_errors_do(flags: list[str],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The flags ``serve`` checks after parsing (``options_from_args``) ended their usage
    line without the "(see 'openraft-py serve --help')" every parser error has."""
    argv = ["serve", "--id", "1", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2", "--data-dir", "d", *flags]
    assert cli.main(argv) == 2
    line = capsys.readouterr().err.strip()
    assert line.endswith("(see 'openraft-py serve --help')"), line


@pytest.mark.parametrize("argv,needle", BAD, ids=lambda x: " ".join(x) if isinstance(x, list) else None)
def test_bad_command_lines_exit_2_with_one_line(argv: list[str], needle: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("openraft-py") and "error:" in lines[0]
    assert needle in lines[0]


def _value_flags(parser: argparse.ArgumentParser,
                 path: list[str]) -> Iterator[tuple[list[str], argparse.Action]]:
    """Each flag of ``parser`` and of its verbs' parsers that takes one value, with the verb
    path that reaches it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _value_flags(sub, [*path, name])
        elif action.option_strings and action.nargs is None and not isinstance(
                action, (argparse._HelpAction, argparse._VersionAction)):
            yield path, action


# A value each flag's type takes (the verb does not run: the repeat ends the parse).
_FLAG_VALUES = {"id": "1", "raft_addr": "127.0.0.1:1", "http_addr": "127.0.0.1:2", "data_dir": "d",
                "cluster_name": "c", "tls_cert": "c.pem", "tls_key": "k.pem", "tls_ca": "ca.pem",
                "tls_reload_interval": "5", "log_format": "text", "log_level": "INFO", "raft_config": "{}",
                "max_body": "2000000", "n": "3", "host": "127.0.0.1", "timeout": "1",
                "endpoints": "127.0.0.1:1", "voters": "1,2", "to": "2", "new_cluster_name": "c2",
                "consistency": "local", "expected": "a", "value": "b", "duration": "1", "clients": "2",
                "keys": "3", "seed": "7", "history": "h.jsonl", "value_file": "v.txt"}


def test_every_flag_that_takes_a_value_is_refused_given_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """argparse keeps the last value of a repeated flag and drops the first without a word:
    ``serve --id 1 ... --id 2`` ran node 2 (its data directory then held node 2's data),
    ``cluster remove-learner --id 4 --id 5`` removed learner 5, ``kv cas --value a --value b``
    wrote b. Every flag that takes a value, of every verb, is a usage error given twice."""
    monkeypatch.chdir(tmp_path)  # (the types that look at a path find nothing there)
    (tmp_path / "d").mkdir()
    (tmp_path / "v.txt").write_text("v")  # (--value-file's type reads its file)
    parser = cli.build_parser()
    flags = list(_value_flags(parser, []))
    assert len(flags) > 40, flags
    missing = sorted({a.dest for _, a in flags} - set(_FLAG_VALUES))
    assert not missing, f"give _FLAG_VALUES a value for {missing}"
    wrong = []
    for path, action in flags:
        flag, value = action.option_strings[-1], _FLAG_VALUES[action.dest]
        try:  # (parsed only: a verb never runs here)
            parser.parse_args([*path, flag, value, flag, value])
            code: object = "parsed"
        except SystemExit as e:
            code = e.code
        err = capsys.readouterr().err
        if code != 2 or f"argument {'/'.join(action.option_strings)}: given twice" not in err:
            wrong.append((" ".join(path), flag, code, err.strip()[:200]))
    assert not wrong, "\n".join(map(str, wrong))


def test_serve_main_refuses_a_flag_given_twice(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m openraft_py.kv.server`` (``serve_main``, a plain argparse parser with the
    serve flags) refuses a repeated ``--id`` as ``openraft-py serve`` does."""
    with pytest.raises(SystemExit) as exc:
        server.serve_main(["--id", "1", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2",
                           "--data-dir", "", "--id", "2"])
    assert exc.value.code == 2
    assert "argument --id: given twice: give it once" in capsys.readouterr().err


def test_a_long_bad_argument_is_quoted_in_part(capsys: pytest.CaptureFixture[str]) -> None:
    """A value of 65,000 bytes that are not UTF-8 was quoted whole in the usage error (about
    390 KB of escapes on one line); a key over the service's 4096 bytes was sent, refused
    with the HTTP server's own 400 ("Got more than 13312 bytes when reading"), and quoted
    whole in "put '...' failed". Both are usage errors now, quoting the first characters."""
    bad_value = "\udcc3" * 65_000
    assert cli.main(["kv", "put", "k", bad_value]) == 2
    err = capsys.readouterr().err
    assert len(err) < 400, len(err)
    assert "... (65000 characters) is not valid UTF-8 (from character 0 on)" in err
    for verb in (["kv", "put", "K", "v"], ["kv", "get", "K"], ["kv", "delete", "K"], ["kv", "cas", "K", "--value", "v"]):
        argv = [("k" * 20_000 if a == "K" else a) for a in verb]
        assert cli.main([*argv, "--endpoints", "127.0.0.1:1"]) == 2
        err = capsys.readouterr().err
        assert len(err) < 400, len(err)
        assert "argument key: a key is at most 4096 bytes of UTF-8; this one has 20000: 'kkk" in err
        assert "... (20000 characters)" in err
    # 1366 three-byte characters: 4098 bytes.
    assert cli.main(["kv", "get", "\u20ac" * 1366, "--endpoints", "127.0.0.1:1"]) == 2
    assert "this one has 4098" in capsys.readouterr().err


def test_node_ids_and_counts_in_plain_digits_are_taken() -> None:
    """Leading zeros, and spaces around the ids of a comma-separated list, are plain
    decimal digits still."""
    parse = cli.build_parser().parse_args
    assert parse(["cluster", "transfer", "--to", "007"]).to == 7
    assert parse(["cluster", "members", "--voters", " 1, 2 ,3"]).voters == [1, 2, 3]
    assert parse(["cluster", "up", "-n", "03"]).n == 3
    assert parse(["serve", "--id", "0", "--raft-addr", "h:1", "--http-addr", "h:2", "--data-dir", "d",
                  "--max-body", "2048"]).max_body == 2048


@pytest.mark.parametrize(("max_body", "raft_config", "message"), [
    ("99999999999999", "{}", "--max-body 99999999999999 is more than a request can use: at most 25231360 bytes "
                             "with max_entry_bytes=4194304"),
    ("2000000", '{"max_entry_bytes": 4096}', "--max-body 2000000 is more than a request can use: at most 1048576 "
                                             "bytes with max_entry_bytes=4096"),
])
def test_serve_refuses_a_max_body_no_entry_can_use(max_body: str, raft_config: str, message: str) -> None:
    """A body over what one entry can use was read whole before its 413: ``serve --max-body
    99999999999999`` started, a 300 MB PUT took the node to 1.2 GB before it was refused, and
    the body budget (at least ``--max-body``) no longer bounded many such requests at once.
    ``serve`` now refuses the flag (exit 2, as every unusable flag), naming the most it can
    use with the node's ``max_entry_bytes``."""
    args = cli.build_parser().parse_args(
        ["serve", "--id", "1", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2", "--data-dir", "d",
         "--max-body", max_body, "--raft-config", raft_config])
    with pytest.raises(ValueError) as info:
        server.options_from_args(args)
    assert message in str(info.value)


def test_serve_options_in_python_refuse_a_max_body_no_entry_can_use() -> None:
    """``ServeOptions`` made in Python (``KvNode(ServeOptions(...))``, not the command
    line) took any ``max_body``: only ``serve``'s flag parsing bounded it, so an embedding
    program got the unbounded body reads the bound is for. ``check()`` (which ``KvNode``
    runs) now refuses it as ``serve`` does, and a bad ``raft_config`` with it."""
    opts = node.ServeOptions(id=1, raft_addr="127.0.0.1:1", http_addr="127.0.0.1:2", data_dir="d",
                             max_body=10**12)
    with pytest.raises(ValueError, match=r"^--max-body 1000000000000 is more than a request can use: at most "
                                         r"25231360 bytes with max_entry_bytes=4194304 "):
        opts.check()
    opts = node.ServeOptions(id=1, raft_addr="127.0.0.1:1", http_addr="127.0.0.1:2", data_dir="d",
                             raft_config={"heartbeat_interval": -1})
    with pytest.raises(ValueError, match=r"^--raft-config: "):
        opts.check()
    node.ServeOptions(id=1, raft_addr="127.0.0.1:1", http_addr="127.0.0.1:2", data_dir="d",
                      max_body=6 * 4194304 + 65536).check()


@pytest.mark.parametrize(("name", "message"), [
    ("a\nb", "--cluster-name: 'a\\nb' holds an unprintable character ('\\n' at 1): a cluster name is printable text"),
    ("\x7f", "--cluster-name: '\\x7f' holds an unprintable character ('\\x7f' at 0)"),
    ("x" * 257, "--cluster-name: a cluster name is at most 256 characters (the raft handshake's limit)"),
])
def test_serve_options_in_python_refuse_an_unprintable_cluster_name(name: str, message: str) -> None:
    """``ServeOptions.check`` (which ``KvNode`` runs) refuses the cluster names ``serve``'s
    flag does: an embedding program's name with a control character was recorded in the
    data directory and written raw into the refusals that name it."""
    opts = node.ServeOptions(id=1, raft_addr="127.0.0.1:1", http_addr="127.0.0.1:2", data_dir="d", cluster_name=name)
    with pytest.raises(ValueError) as info:
        opts.check()
    assert str(info.value).startswith(message), str(info.value)
    # Printable text of any script, spaces and the longest name the handshake carries are taken.
    for good in ("prod east", "\u751f\u4ea7-\u00e9", "y" * 256):
        node.ServeOptions(id=1, raft_addr="127.0.0.1:1", http_addr="127.0.0.1:2", data_dir="d",
                          cluster_name=good).check()


@pytest.mark.parametrize(("max_body", "raft_config"), [
    (node.DEFAULT_MAX_BODY, {"max_entry_bytes": 1}),  # the default, whatever the entries
    (6 * 4194304 + 65536, {}),  # the most a cas of a 4 MiB entry can spell
    (33554432, {"max_entry_bytes": 33534976, "max_payload_bytes": 33534976}),  # the network guide's largest
])
def test_serve_takes_a_max_body_its_entries_can_use(max_body: int, raft_config: dict[str, int]) -> None:
    args = cli.build_parser().parse_args(
        ["serve", "--id", "1", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2", "--data-dir", "d",
         "--max-body", str(max_body), "--raft-config", json.dumps(raft_config)])
    assert server.options_from_args(args).max_body == max_body


def test_serve_options_refused_by_the_service_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The flags parse, but the service refuses them (a TLS key without a certificate).
    code = cli.main(["serve", "--id", "1", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2",
                     "--data-dir", str(tmp_path), "--tls-key", "k.pem"])
    assert code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "--tls-cert and --tls-key go together" in err[0]
    assert not any(tmp_path.iterdir())  # nothing was created


def test_client_verbs_need_endpoints(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(cli.ENDPOINTS_ENV, raising=False)
    assert cli.main(["kv", "get", "k"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"openraft-py kv get: error: no endpoints: pass --endpoints H:P,H:P or set ${cli.ENDPOINTS_ENV}"]


def test_endpoints_from_the_environment_are_checked(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(cli.ENDPOINTS_ENV, "not-an-endpoint")
    assert cli.main(["kv", "get", "k"]) == 2
    # Named as the variable: it was "argument --endpoints: ...", though no --endpoints was given.
    assert capsys.readouterr().err.splitlines() == [
        f"openraft-py kv get: error: ${cli.ENDPOINTS_ENV}='not-an-endpoint': endpoint 'not-an-endpoint' is not "
        "host:port (or pass --endpoints H:P,H:P)"]
    monkeypatch.setenv(cli.ENDPOINTS_ENV, "  ")  # blank: as unset
    assert cli.main(["cluster", "status"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"openraft-py cluster status: error: no endpoints: pass --endpoints H:P,H:P or set ${cli.ENDPOINTS_ENV}"]


def test_an_empty_endpoint_is_a_usage_error_naming_it(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``$OPENRAFT_PY_ENDPOINTS`` or ``--endpoints`` with an empty item (``A,,B``: an endpoint
    left out, as ``$N1,$N2,$N3`` makes with ``N2`` unset) ran with the others without a word.
    It is a usage error (exit 2) in one line naming the item; a trailing ``/`` is no mistake
    (``http://h:p/`` is how a browser writes it) and is taken as ``h:p``."""
    given = "http://127.0.0.1:1/,,http://127.0.0.1:2"
    monkeypatch.setenv(cli.ENDPOINTS_ENV, given)
    assert cli.main(["cluster", "status", "--timeout", "0.5"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"openraft-py cluster status: error: ${cli.ENDPOINTS_ENV}={given!r}: endpoint 2 of 3 is empty "
                   "(a comma too many, or an endpoint left out) (or pass --endpoints H:P,H:P)"]
    monkeypatch.delenv(cli.ENDPOINTS_ENV)
    for argv in (["kv", "get", "k"], ["cluster", "status"]):
        assert cli.main([*argv, "--endpoints", "127.0.0.1:1,", "--timeout", "0.5"]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and "argument --endpoints: endpoint 2 of 2 is empty" in err[0], err
    monkeypatch.setenv(cli.ENDPOINTS_ENV, "x" * 100_000 + ",")  # quoted in part, in one short line
    assert cli.main(["cluster", "status", "--timeout", "0.5"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and len(err[0]) < 400 and "(100001 characters)" in err[0], err


def test_unreachable_endpoints_fail_in_one_line_within_the_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    from openraft_py.testing.proc_cluster import free_port

    dead = f"127.0.0.1:{free_port()}"
    for argv in (["kv", "put", "k", "v"], ["kv", "get", "k"], ["cluster", "status"], ["cluster", "members"]):
        code = cli.main([*argv, "--endpoints", dead, "--timeout", "0.5"])
        assert code == 1, argv
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith(f"openraft-py {argv[0]} {argv[1]}: error:"), err


@pytest.mark.timeout(40)
def test_verbs_with_long_timeouts_fail_soon_when_no_endpoint_answers(monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """``cluster add-learner`` (default --timeout 70 s), ``members`` and ``remove-learner``
    (30 s), pointed at addresses where nothing listens (a cluster that is not there, a
    mistyped port): without ``--timeout`` they give up once no endpoint has accepted a
    connection for ``CONTACT_TIMEOUT`` seconds, in one line that says so. They retried the refused
    connection for their whole default, silent: add-learner for 71 s ("gave up after 136
    attempts"). Their long defaults are for the service's answer, once a node answers; a
    ``--timeout`` given still bounds the wait for a node in full."""
    from openraft_py.testing.proc_cluster import free_port

    monkeypatch.setattr(cli, "CONTACT_TIMEOUT", 1.0, raising=False)
    dead = f"127.0.0.1:{free_port()}"
    for argv in (["cluster", "add-learner", "--id", "4", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2"],
                 ["cluster", "members", "--voters", "1,2"], ["cluster", "members"],
                 ["cluster", "remove-learner", "--id", "4"]):
        started = time.monotonic()
        code = cli.main([*argv, "--endpoints", dead])
        took = time.monotonic() - started
        err = capsys.readouterr().err.splitlines()
        assert code == 1 and took < 4, (argv, code, took, err)
        assert len(err) == 1 and err[0].startswith(
            f"openraft-py {argv[0]} {argv[1]}: error: no node answered at {dead} within 1s (cannot connect to "
            f"{dead}: Connection refused)"), err  # (asyncio's "Connect call failed ('127.0.0.1', port)" said less)
        assert err[0].endswith("is the cluster running there? (--timeout S waits longer)"), err
    started = time.monotonic()  # an explicit --timeout: the wait for a node is that long
    assert cli.main(["cluster", "remove-learner", "--id", "4", "--endpoints", dead, "--timeout", "2.5"]) == 1
    assert 2.3 < time.monotonic() - started < 5
    assert f"no node answered at {dead} within 2.5s" in capsys.readouterr().err


def test_status_says_why_an_endpoint_did_not_answer(capsys: pytest.CaptureFixture[str]) -> None:
    """``cluster status`` with an endpoint whose host does not resolve (a typo) or whose port
    refuses said "(no answer from H:P)" and "no node answered at H:P", dropping the reason
    the other verbs give ("cannot connect to H:P: Name or service not known")."""
    from openraft_py.testing.proc_cluster import free_port

    dead, typo = f"127.0.0.1:{free_port()}", "no-such-host.invalid:28001"
    started = time.monotonic()
    assert cli.main(["cluster", "status", "--endpoints", f"{typo},{dead}", "--timeout", "2"]) == 1
    assert time.monotonic() - started < 6
    captured = capsys.readouterr()
    out, err = captured.out.splitlines(), captured.err.splitlines()
    assert out[1:] == [f"(cannot connect to {typo}: Name or service not known)",
                       f"(cannot connect to {dead}: Connection refused)"], out
    assert err == [f"openraft-py cluster status: error: no node answered at {typo}, {dead}: cannot connect to {typo}: "
                   f"Name or service not known; cannot connect to {dead}: Connection refused"], err


@pytest.mark.timeout(60)
def test_status_of_many_endpoints_that_do_not_answer_is_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    """``cluster status`` given 600 endpoints that refuse printed a line for each and an
    error line naming every endpoint and every reason (150 KB for 2000 endpoints). It names
    the first few of each now, and how many more (``--json`` still lists every one)."""
    from openraft_py.testing.proc_cluster import free_port

    port = free_port()
    eps = [f"127.0.{i // 250}.{i % 250 + 1}:{port}" for i in range(600)]  # (all loopback: refused at once)
    assert cli.main(["cluster", "status", "--endpoints", ",".join(eps), "--timeout", "10"]) == 1
    captured = capsys.readouterr()
    out, err = captured.out.splitlines(), captured.err.splitlines()
    # Each refused at once; on a loaded machine some of the 600 attempts are only handled
    # after the client's connect bound, and those are reported as not connected within it.
    why = r"(?:: Connection refused| within [0-9.]+s)"
    assert len(out) <= 1 + 5 + 1, len(out)
    assert re.fullmatch(rf"\(cannot connect to {re.escape(eps[0])}{why}\)", out[1]), out[:3]
    assert out[-1] == f"(and {600 - 5} more endpoints gave no status: --json lists them)", out[-3:]
    assert len(err) == 1 and len(err[0]) < 1000, (len(err), len(err[0]))
    assert err[0].startswith(f"openraft-py cluster status: error: no node answered at {eps[0]}, {eps[1]}, "), err[0]
    assert re.search(rf" and {600 - 5} more: cannot connect to {re.escape(eps[0])}{why}; ", err[0]), err[0]
    assert re.search(rf"{why} and {600 - 5} more$", err[0]), err[0]


async def test_add_learner_with_a_raft_host_that_does_not_resolve_fails_at_once(
        capsys: pytest.CaptureFixture[str]) -> None:
    """``cluster add-learner --raft-addr TYPO:P`` waited out the service's bound on the call
    (60 s) and ended "added as a learner but did not catch up", the learner left in the
    membership. The leader resolves the host first: one line naming the address, exit 1,
    nothing done."""
    from .kv_helpers import KvCluster

    c = KvCluster()
    try:
        await c.start(1)
        leader = await c.wait_leader()
        typo = "no-such-host.invalid:21004"
        started = time.monotonic()
        code = await asyncio.to_thread(cli.main, ["cluster", "add-learner", "--id", "4", "--raft-addr", typo,
                                                  "--http-addr", "127.0.0.1:28004", "--endpoints",
                                                  leader.opts.http_addr, "--timeout", "15"])
        took = time.monotonic() - started
        err = capsys.readouterr().err.splitlines()
        assert code == 1 and took < 10, (code, took, err)
        assert len(err) == 1 and err[0].startswith(
            f"openraft-py cluster add-learner: error: add-learner 4 failed: HTTP 400: ValueError: raft_addr {typo!r}: "
            "the host 'no-such-host.invalid' does not resolve on node 1"), err
        assert list(leader.nodes()) == [1]
    finally:
        await c.close()


async def test_no_leader_found_names_its_timeout_as_given(capsys: pytest.CaptureFixture[str]) -> None:
    """``cluster members --timeout 1`` against a node that answers but knows no leader says
    "no leader found at H:P within 1.0s": the search is given the time left of the verb,
    which was printed as is ("within 0.998765s"; "within 29.9991s" without --timeout). A
    fake node answers as a node of no cluster."""
    from aiohttp import web

    from openraft_py.testing.proc_cluster import free_port

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"id": 9, "state": "Follower", "leader_id": None, "voters": [1, 2, 9],
                                  "learners": []})

    async with _fake_node(free_port(), [web.get("/cluster/status", status)]) as ep:
        code = await asyncio.to_thread(cli.main, ["cluster", "members", "--endpoints", ep, "--timeout", "1"])
    assert code == 1
    assert capsys.readouterr().err.splitlines() == [
        f"openraft-py cluster members: error: no leader found at {ep} within 1.0s"]


async def test_cluster_members_of_nodes_in_no_cluster_says_so_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    """``cluster members`` against nodes started but never initialized: each status names no
    voter, and no leader will come until an init. It searched for a leader for its whole
    --timeout (30 s by default), then said "no leader found"; now it says at once that no
    node there is in a cluster yet, and what to do. Two fake nodes answer as such nodes."""
    from aiohttp import web

    from openraft_py.testing.proc_cluster import free_port

    def pristine(nid: int) -> list[AbstractRouteDef]:
        async def status(request: web.Request) -> web.Response:
            return web.json_response({"id": nid, "state": "Learner", "leader_id": None, "voters": [], "learners": []})

        return [web.get("/cluster/status", status)]

    async with _fake_node(free_port(), pristine(1)) as a, _fake_node(free_port(), pristine(2)) as b:
        started = time.monotonic()
        code = await asyncio.to_thread(cli.main, ["cluster", "members", "--endpoints", f"{a},{b}", "--timeout", "5"])
        took = time.monotonic() - started
    assert code == 1 and took < 2, took
    assert capsys.readouterr().err.splitlines() == [
        f"openraft-py cluster members: error: no node at {a}, {b} is in a cluster yet. To start a new cluster, "
        "initialize it once with 'openraft-py cluster init'. If they were members of a running cluster (their data "
        "directories lost or new), do not init them, which would start a second cluster: give --endpoints of its "
        "other nodes, and add back any that is no longer a member with 'openraft-py cluster add-learner'"]


async def test_cluster_members_at_an_address_that_is_no_node_s_http_api_says_so_at_once(
        capsys: pytest.CaptureFixture[str]) -> None:
    """``cluster members --endpoints`` a node's raft port (printed beside its HTTP port by
    ``cluster up``; a likely slip): the raft port answers an HTTP request 400 "this is an
    openraft-py raft port ...", which no retry changes, as does any address whose answer is
    not a node's status. ``kv put`` says so at once; ``cluster members`` searched for a leader
    for its whole --timeout (30 s by default) and then said only "no leader found". Now it
    exits 1 at once with the answer. A fake node answers as a raft port does."""
    from aiohttp import web

    from openraft_py.testing.proc_cluster import free_port

    why = ("this is an openraft-py raft port, where nodes talk to each other; it does not serve HTTP: is the address "
           "right (the key-value service's HTTP API is on its --http-addr)?")

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=400, text=why)

    async with _fake_node(free_port(), [web.get("/cluster/status", refuse)]) as ep:
        started = time.monotonic()
        code = await asyncio.to_thread(cli.main, ["cluster", "members", "--endpoints", ep, "--timeout", "5"])
        took = time.monotonic() - started
    assert code == 1 and took < 2, took
    assert capsys.readouterr().err.splitlines() == [
        f"openraft-py cluster members: error: no node's HTTP API at {ep}: {ep} answered HTTP 400: {why}"]

async def test_cluster_status_at_an_address_that_is_no_node_s_http_api_relays_its_answer(
        capsys: pytest.CaptureFixture[str]) -> None:
    """``cluster status --endpoints`` a node's raft port answered at once, but said "(no answer
    from H:P)" and "no node answered at H:P": the raft port did answer, 400 "this is an
    openraft-py raft port ...", which says what is wrong. Now the answer is relayed. A fake
    node answers as a raft port does."""
    from aiohttp import web

    from openraft_py.testing.proc_cluster import free_port

    why = "this is an openraft-py raft port, where nodes talk to each other; it does not serve HTTP"

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=400, text=why)

    async with _fake_node(free_port(), [web.get("/cluster/status", refuse)]) as ep:
        code = await asyncio.to_thread(cli.main, ["cluster", "status", "--endpoints", ep, "--timeout", "5"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.splitlines()[1:] == [f"({ep} answered HTTP 400: {why})"], captured.out
    assert captured.err.splitlines() == [
        f"openraft-py cluster status: error: no node's HTTP API at {ep}: {ep} answered HTTP 400: {why}"]


async def test_cluster_status_error_names_the_endpoint_of_each_answer_that_is_no_node_s(
        capsys: pytest.CaptureFixture[str]) -> None:
    """``cluster status`` with two endpoints, one a raft port (its answer shows no node's
    HTTP API is there) and one that refuses: the error said "no node answered at A, B: HTTP
    400: this is an openraft-py raft port ...; cannot connect to B: ...", the first reason
    without the endpoint it came from (the line below the table names it). Each reason
    names its endpoint now, as the line does."""
    from aiohttp import web

    from openraft_py.testing.proc_cluster import free_port

    why = "this is an openraft-py raft port, where nodes talk to each other; it does not serve HTTP"
    dead = f"127.0.0.1:{free_port()}"

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=400, text=why)

    async def stopping(request: web.Request) -> web.Response:
        return web.json_response({"error": "the node is stopping", "leader_id": None}, status=503)

    async with _fake_node(free_port(), [web.get("/cluster/status", refuse)]) as ep, \
            _fake_node(free_port(), [web.get("/cluster/status", stopping)]) as ep2:
        code = await asyncio.to_thread(cli.main, ["cluster", "status", "--endpoints", f"{ep},{dead},{ep2}",
                                                  "--timeout", "5"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.splitlines()[1:] == [f"({ep} answered HTTP 400: {why})",
                                             f"(cannot connect to {dead}: Connection refused)",
                                             f"({ep2} answered HTTP 503: the node is stopping)"], captured.out
    assert captured.err.splitlines() == [
        f"openraft-py cluster status: error: no node answered at {ep}, {dead}, {ep2}: {ep} answered HTTP 400: {why}; "
        f"cannot connect to {dead}: Connection refused; {ep2} answered HTTP 503: the node is stopping"], captured.err


@pytest.mark.parametrize("verb", [["cluster", "members"], ["cluster", "status"], ["kv", "get", "k"],
                                  ["kv", "put", "k", "v"], ["cluster", "transfer", "--to", "1"]])
async def test_verbs_at_a_listener_that_is_not_http_say_so_at_once(verb: list[str],
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """An endpoint whose answer is not HTTP at all (another program's port: SSH here): ``kv
    get`` retried it for its whole --timeout and ``cluster members`` searched it for a leader
    as long; ``kv put`` and ``cluster transfer`` said 'outcome unknown' (exit 3), each with
    aiohttp's 'Bad status line' text over several lines. No service node is there: each
    exits 1 at once, in one line that says the answer is not HTTP."""
    from .test_kv_client import _not_http_listener

    async with _not_http_listener() as ep:
        started = time.monotonic()
        code = await asyncio.to_thread(cli.main, [*verb, "--endpoints", ep, "--timeout", "5"])
        took = time.monotonic() - started
    err = capsys.readouterr().err.splitlines()
    assert code == 1 and took < 2, (code, took, err)
    assert len(err) == 1 and f"{ep} answered, but not in HTTP (is it an openraft-py HTTP address?): " in err[0], err


async def test_cluster_members_of_nodes_initialized_a_moment_ago_waits_for_their_leader(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A node initialized through another node names no voter and no leader until the new
    leader's first entries reach it (a moment after the init): ``cluster members`` asked
    then finds the leader, it does not say "no node ... is in a cluster yet" (it did, at the
    first round of statuses). A fake node answers as a node of no cluster for 0.3 s, then
    as the leader of voters [1]."""
    from aiohttp import web

    from openraft_py.testing.proc_cluster import free_port

    port = free_port()
    joined = time.monotonic() + 0.3

    async def status(request: web.Request) -> web.Response:
        if time.monotonic() < joined:
            return web.json_response({"id": 1, "state": "Learner", "leader_id": None, "voters": [], "learners": []})
        return web.json_response({"id": 1, "state": "Leader", "leader_id": 1, "http_addr": f"127.0.0.1:{port}",
                                  "leader_http_addr": f"127.0.0.1:{port}", "voters": [1], "learners": []})

    async with _fake_node(port, [web.get("/cluster/status", status)]) as ep:
        code = await asyncio.to_thread(cli.main, ["cluster", "members", "--endpoints", ep, "--timeout", "5"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "voters: 1" in out.splitlines(), out


@pytest.mark.parametrize("value,traceback", [
    ("", False), ("0", False), ("false", False), ("No", False), ("OFF", False), (" off ", False),
    ("1", True), ("yes", True), ("true", True),
])
def test_openraft_py_debug_zero_or_false_is_off(value: str, traceback: bool, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """An unexpected error is one line unless OPENRAFT_PY_DEBUG is on; "0", "false", "no",
    "off" and "" are off (OPENRAFT_PY_DEBUG=0 showed the traceback: any non-empty value was on)."""
    def broken(args: object) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "_run_demo", broken)
    monkeypatch.setenv("OPENRAFT_PY_DEBUG", value)
    if traceback:
        with pytest.raises(RuntimeError, match="boom"):
            cli.main(["demo"])
        return
    assert cli.main(["demo"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "openraft-py demo: error: RuntimeError: boom (OPENRAFT_PY_DEBUG=1 shows the traceback)"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop(cli.ENDPOINTS_ENV, None)
    return env


@pytest.mark.parametrize("module", ["openraft_py.kv", "openraft_py"])
def test_python_dash_m_runs_the_command_line(module: str) -> None:
    r = subprocess.run([sys.executable, "-m", module, "kv", "get"], capture_output=True, text=True,
                       timeout=30, env=_env())
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "required: key" in r.stderr
    r = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True,
                       timeout=30, env=_env())
    assert r.returncode == 0 and r.stdout.startswith("openraft-py ")


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "openraft-py"
    if not script.exists():
        pytest.skip("openraft-py is not installed next to this interpreter (pip install -e '.[kv]')")
    r = subprocess.run([str(script), "cluster", "up", "--help"], capture_output=True, text=True, timeout=30,
                       env=_env())
    assert r.returncode == 0 and "Ctrl-C" in r.stdout


async def test_cluster_init_refuses_a_node_listening_on_a_wildcard_address(capsys: pytest.CaptureFixture[str]) -> None:
    """``cluster init`` puts the addresses a node reports in the membership: a node started
    with ``--raft-addr 0.0.0.0:P`` is named with the fix, and nothing is posted (other nodes
    would dial 0.0.0.0, their own machine). A fake node on loopback answers the status. (The
    line said "listens on '0.0.0.0:P':: '0.0.0.0:P' is ...", its colon doubled.)"""
    import asyncio

    from openraft_py.testing.proc_cluster import free_port

    posted: list[str] = []
    port = free_port()
    async with _fake_node(port, _node_to_init(port, "0.0.0.0:21001", posted)) as ep:
        code = await asyncio.to_thread(cli.main, ["cluster", "init", "--endpoints", ep, "--timeout", "5"])
    assert code == 1
    err = capsys.readouterr().err
    assert f"node 1 (at {ep}) listens on '0.0.0.0:21001': '0.0.0.0:21001' is a wildcard address" in err, err
    assert posted == []


async def test_cluster_init_refuses_an_endpoint_given_twice(capsys: pytest.CaptureFixture[str]) -> None:
    """``cluster init --endpoints A,A``: one node named twice is a mistake (the voters would
    be fewer than the operator listed), refused before anything is posted, although the
    client itself tries a repeated endpoint only once. A fake node answers the status."""
    import asyncio

    from openraft_py.testing.proc_cluster import free_port

    posted: list[str] = []
    port = free_port()
    async with _fake_node(port, _node_to_init(port, "127.0.0.1:21001", posted)) as ep:
        code = await asyncio.to_thread(cli.main, ["cluster", "init", "--endpoints", f"{ep},http://{ep}/",
                                                  "--timeout", "5"])
    assert code == 1
    assert "two endpoints report node id 1" in capsys.readouterr().err
    assert posted == []


@pytest.mark.parametrize("in_a_cluster", [{"voters": [1]}, {"learners": [4], "voters": [2, 3]}, {"leader_id": 3}],
                         ids=["voter", "learner", "knows-a-leader"])
async def test_cluster_init_refuses_when_a_node_is_in_a_cluster_already(
        in_a_cluster: dict[str, object], capsys: pytest.CaptureFixture[str]) -> None:
    """``cluster init --endpoints B,A,C`` where A already leads a cluster of its own: nothing
    is posted. Before, the init went to B, a node of no cluster, which took it and started a
    second cluster sharing A with the first. Three fake nodes answer the statuses."""
    posted: list[str] = []

    def edit(i: int, st: dict[str, object]) -> None:
        if i == 0:
            st.update(in_a_cluster)

    async with _nodes_to_init(3, posted, edit) as eps:
        code = await asyncio.to_thread(cli.main, ["cluster", "init", "--endpoints", ",".join([eps[1], eps[0], eps[2]]),
                                                  "--timeout", "5"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"node 1 (at {eps[0]}) is in a cluster already" in err and "nothing was sent" in err, err
    assert posted == []


@pytest.mark.parametrize("other_fault", ["wildcard-raft-addr", "same-id-as-another"])
async def test_cluster_init_says_first_that_a_node_is_in_a_cluster_already(
        other_fault: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``cluster init --endpoints B,A`` where A is a member of a running cluster and its
    status would also fail another check (it listens on a wildcard address, as a node added
    by hand with the addresses it is reached at may; or it has the id B has): the answer is
    that A is in a cluster already, nothing sent. Before, the other check answered first,
    and the wildcard's answer advised to ``POST /cluster/init`` by hand, which sent to B
    starts the second cluster sharing A that the refusal is there to prevent."""
    posted: list[str] = []

    def edit(i: int, st: dict[str, object]) -> None:
        if i == 1:  # A: a voter of a running cluster
            st.update({"voters": [2, 5, 6], "leader_id": 5})
            if other_fault == "wildcard-raft-addr":
                st["raft_addr"] = str(st["raft_addr"]).replace("127.0.0.1", "0.0.0.0")
            else:
                st["id"] = 1

    async with _nodes_to_init(2, posted, edit) as eps:
        code = await asyncio.to_thread(cli.main, ["cluster", "init", "--endpoints", ",".join(eps), "--timeout", "5"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"(at {eps[1]}) is in a cluster already" in err and "nothing was sent" in err, err
    assert "POST /cluster/init" not in err, err
    assert posted == []


def test_cluster_init_refusal_says_when_the_node_is_not_in_the_membership_it_holds() -> None:
    """A node whose status names a membership without it (a learner removed from its cluster,
    or a node being added that has not received the entry adding it yet) is refused as any
    node of a cluster, but the line says it is not among the members, rather than only that
    it "is in a cluster already" beside lists that do not name it; and a status without the
    lists does not print "voters None"."""
    with pytest.raises(cli.CliError) as refused:
        cli._refuse_nodes_in_a_cluster(["h:1"], [{"id": 4, "voters": [1, 2, 3], "learners": [], "leader_id": None}])
    msg = str(refused.value)
    assert "node 4 (at h:1)" in msg and "voters [1, 2, 3], learners [], leader unknown" in msg, msg
    assert "node 4 is not among them" in msg and "nothing was sent" in msg, msg
    with pytest.raises(cli.CliError) as refused:
        cli._refuse_nodes_in_a_cluster(["h:1"], [{"id": 4, "leader_id": 2}])
    assert "voters [], learners [], leader n2" in str(refused.value), str(refused.value)
    with pytest.raises(cli.CliError) as refused:
        cli._refuse_nodes_in_a_cluster(["h:1"], [{"id": 2, "voters": [1, 2, 3], "learners": [], "leader_id": 1}])
    assert "not among them" not in str(refused.value), str(refused.value)


def test_add_learner_waits_longer_than_the_service_by_default() -> None:
    """``cluster add-learner`` gives up after the service's own bound on the call, not at the
    same time: the service's 503 says why the learner did not catch up (not running at its
    address, a refused certificate, no quorum), and the command line used to give up first
    (both 60 s) and report an unknown outcome instead."""
    import inspect

    from openraft_py.kv.node import ServeOptions

    served = inspect.signature(ServeOptions).parameters["learner_timeout"].default
    args = cli.build_parser().parse_args(
        ["cluster", "add-learner", "--endpoints", "127.0.0.1:1", "--id", "4", "--raft-addr", "127.0.0.1:2",
         "--http-addr", "127.0.0.1:3"])
    assert args.timeout is None and args.default_timeout == cli.ADD_LEARNER_TIMEOUT
    assert isinstance(served, float) and cli.ADD_LEARNER_TIMEOUT >= served + 5, (cli.ADD_LEARNER_TIMEOUT, served)


_PIPE_VERBS = [
    (["kv", "get", "k"], False), (["kv", "put", "k", "v"], False), (["cluster", "status"], False),
    (["cluster", "status", "--json"], False), (["cluster", "members"], False), (["--help"], False),
    (["kv", "get", "absent"], True),  # its error line goes to the pipe too (2>&1)
]


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("argv,merged", _PIPE_VERBS, ids=lambda x: " ".join(x) if isinstance(x, list) else None)
async def test_a_reader_of_the_output_that_went_away_ends_the_verb_quietly(argv: list[str], merged: bool,
                                                                          buffered: bool) -> None:
    """``openraft-py cluster status | head -1``, ``kv get K | head -c1``, ``kv get K 2>&1 |
    true``: exit 141 as a tool killed by SIGPIPE, nothing on stderr (it printed a
    BrokenPipeError traceback or 'Exception ignored ... BrokenPipeError' and exited 120 with
    its output buffered, or 'error: BrokenPipeError' and exit 1 with PYTHONUNBUFFERED). A fake
    node on loopback answers."""
    import asyncio

    from aiohttp import web

    from openraft_py.testing.proc_cluster import free_port

    port = free_port()
    ep = f"127.0.0.1:{port}"
    status = {"id": 1, "state": "Leader", "term": 1, "leader_id": 1, "raft_addr": "127.0.0.1:1",
              "http_addr": ep, "voters": [1], "learners": [], "nodes": {"1": {"raft_addr": "127.0.0.1:1",
                                                                              "http_addr": ep}}}

    async def get(request: web.Request) -> web.Response:
        if request.match_info["key"] == "absent":
            return web.json_response({"error": "not found"}, status=404)
        return web.Response(text="x" * 100_000)

    async def put(request: web.Request) -> web.Response:
        return web.json_response({"index": 7})

    async def cluster_status(request: web.Request) -> web.Response:
        return web.json_response(status)

    env = _env()
    env.pop("PYTHONUNBUFFERED", None)
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"

    def run() -> tuple[int, str]:
        p = subprocess.Popen([sys.executable, "-m", "openraft_py.kv", *argv, "--endpoints", ep, "--timeout", "10"]
                             if argv != ["--help"] else [sys.executable, "-m", "openraft_py.kv", "--help"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merged else subprocess.PIPE,
                             text=True, env=env)
        try:
            assert p.stdout is not None
            p.stdout.close()  # the reader is gone before the first line is written
            err = "" if p.stderr is None else p.stderr.read()
            p.wait(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            if p.stderr is not None:
                p.stderr.close()
        return p.returncode, err

    routes = [web.get("/kv/{key}", get), web.put("/kv/{key}", put), web.get("/cluster/status", cluster_status)]
    async with _fake_node(port, routes):
        code, err = await asyncio.to_thread(run)
    # (argparse ignores a failed write of --help: unbuffered, nothing is left to fail later)
    assert (code, err) == (0 if argv == ["--help"] and not buffered else 141, "")


@pytest.mark.parametrize("encoding,printed", [
    ("ascii", b"caf\\xe9 \\u4e2d \\u2603\n"),
    ("latin-1", "café \\u4e2d \\u2603\n".encode("latin-1")),
    ("utf-8", "café 中 ☃\n".encode()),
])
async def test_kv_get_prints_a_value_its_output_encoding_cannot_carry_escaped(encoding: str, printed: bytes) -> None:
    """``kv get`` of a non-ASCII value with an output encoding that cannot carry it
    (``PYTHONIOENCODING=ascii``, a Latin-1 terminal) failed after the read with a one-line
    ``UnicodeEncodeError`` (exit 1). Now what the encoding cannot carry is printed as a
    backslash escape, as Python's stderr does, and the verb exits 0; UTF-8 prints it as is.
    A fake node on loopback answers."""
    import asyncio

    from aiohttp import web

    from openraft_py.testing.proc_cluster import free_port

    async def get(request: web.Request) -> web.Response:
        return web.Response(text="café 中 ☃")  # (as the service: text/plain, UTF-8)

    env = {**_env(), "PYTHONIOENCODING": encoding}
    async with _fake_node(free_port(), [web.get("/kv/{key}", get)]) as ep:
        p = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "openraft_py.kv", "kv", "get", "k", "--endpoints", ep,
                             "--timeout", "10"], capture_output=True, env=env, timeout=30)
    assert (p.returncode, p.stderr, p.stdout) == (0, b"", printed)


async def test_kv_get_asks_the_next_endpoint_when_one_accepts_but_never_answers(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A node that accepts the connection and never answers (stopped with SIGSTOP, frozen)
    took the whole ``--timeout`` of ``kv get``'s first attempt when it came first in
    ``--endpoints``: the read failed ("no answer from ... within 4.0s") without asking the
    node that would have answered. Now an attempt gets ``--timeout`` shared among the
    endpoints (at least ``READ_ATTEMPT_MIN``), and the next endpoint answers. Here the hung
    node is a socket that listens and never accepts; a fake node answers the read."""
    import asyncio
    import socket
    import time

    from aiohttp import web

    from openraft_py.testing.proc_cluster import free_port

    async def get(request: web.Request) -> web.Response:
        return web.Response(text="v")

    hung = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)  # the kernel completes connections; nobody reads them
        hung_ep = f"127.0.0.1:{hung.getsockname()[1]}"
        async with _fake_node(free_port(), [web.get("/kv/{key}", get)]) as ep:
            start = time.monotonic()
            code = await asyncio.to_thread(cli.main, ["kv", "get", "k", "--endpoints", f"{hung_ep},{ep}",
                                                      "--timeout", "4"])
            took = time.monotonic() - start
    finally:
        hung.close()
    out = capsys.readouterr()
    assert (code, out.out, out.err) == (0, "v\n", "")
    assert took < 3.5, f"the hung node's attempt took {took:.1f} s of the 4 s"


@pytest.mark.parametrize("n,timeout,attempt", [(1, 10.0, 10.0), (3, 9.0, 3.0), (3, 0.5, 0.5), (20, 10.0, 1.0)])
def test_kv_get_attempt_timeout_shares_the_timeout_among_the_endpoints(n: int, timeout: float, attempt: float) -> None:
    endpoints = ",".join(f"127.0.0.1:{1000 + i}" for i in range(n))
    args = cli.build_parser().parse_args(["kv", "get", "k", "--endpoints", endpoints, "--timeout", str(timeout)])
    assert cli._read_attempt_timeout(args) == pytest.approx(attempt)


@pytest.mark.parametrize("argv,unknown", [
    (["kv", "put", "k", "v"], True),
    (["kv", "get", "k"], False),
])
def test_ctrl_c_during_a_write_says_that_it_may_have_been_applied(argv: list[str], unknown: bool) -> None:
    """A write interrupted once its request was sent may still be applied (the leader has it;
    it commits when it can): the line says so, as exit 3 does after a timeout. It said only
    "interrupted", and a user who stopped a slow ``kv put`` took it as not done. A read's
    line is unchanged. The node is a loopback port that takes the request and never answers."""
    import signal
    import socket

    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    lsock.settimeout(40)  # (the command line starts within it, however busy the machine)
    # SIGINT at its default in the child, as a terminal's Ctrl-C meets it: a runner started in
    # the background (``make test &``, ``nohup``) passes it on ignored, and Python keeps it so.
    proc = subprocess.Popen([sys.executable, "-m", "openraft_py.kv", *argv, "--endpoints",
                             f"127.0.0.1:{lsock.getsockname()[1]}", "--timeout", "30"],
                            stderr=subprocess.PIPE, text=True, env=_env(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        conn, _ = lsock.accept()
        with conn:
            conn.settimeout(20)
            received = b""
            while b"\r\n\r\n" not in received:  # the request's headers arrived: it was sent
                chunk = conn.recv(4096)
                assert chunk, received
                received += chunk
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        lsock.close()
    assert proc.returncode == 130
    line = f"openraft-py {argv[0]} {argv[1]}: interrupted"
    assert err == (f"{line}; it may or may not have been applied\n" if unknown else f"{line}\n")


async def test_cluster_init_ends_within_its_timeout_when_every_status_is_slow(
        capsys: pytest.CaptureFixture[str]) -> None:
    """``cluster init --timeout 2.5`` asked the endpoints' statuses one after the other (each
    with up to 5 s), then posted the init, then looked for the leader with another whole
    ``--timeout``: three nodes whose status takes 1 s, none naming a leader, kept it 6 s.
    Now the statuses are asked together and every step has the time left: the verb ends
    within about ``--timeout``, saying that no leader was found. Three fake nodes on loopback
    answer, each status after 1 s."""
    import asyncio
    import time

    from aiohttp import web

    from openraft_py.testing.proc_cluster import free_port

    posted: list[str] = []
    ports = [free_port() for _ in range(3)]

    def routes(i: int) -> list[AbstractRouteDef]:
        async def status(request: web.Request) -> web.Response:
            await asyncio.sleep(1.0)
            return web.json_response({"id": i + 1, "state": "Follower", "leader_id": None,
                                      "raft_addr": f"127.0.0.1:{ports[i] + 1}", "http_addr": f"127.0.0.1:{ports[i]}"})

        async def init(request: web.Request) -> web.Response:
            posted.append(await request.text())
            return web.json_response({"members": [1, 2, 3]})

        return [web.get("/cluster/status", status), web.post("/cluster/init", init)]

    async with contextlib.AsyncExitStack() as stack:
        eps = [await stack.enter_async_context(_fake_node(p, routes(i))) for i, p in enumerate(ports)]
        start = time.monotonic()
        code = await asyncio.to_thread(cli.main, ["cluster", "init", "--endpoints", ",".join(eps), "--timeout", "2.5"])
        took = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 1 and "no leader found" in err, (code, err)
    assert len(posted) == 1
    assert took < 3.4, f"cluster init --timeout 2.5 took {took:.1f} s"


async def test_cluster_status_ends_within_its_timeout_when_members_named_later_do_not_answer(
        capsys: pytest.CaptureFixture[str]) -> None:
    """``cluster status`` asks the endpoints, then the members their answers name, in
    rounds; every round gave each status up to ``min(--timeout, 3 s)``, so a node that never
    answers among the endpoints and another named only in the second round's answer kept
    ``--timeout 2`` 4 s. Now each status is asked as soon as its node is known, all within
    ``--timeout``. The hung nodes are sockets that listen and never accept; two fake nodes
    answer."""
    import asyncio
    import json
    import socket
    import time

    from aiohttp import web

    from openraft_py.testing.proc_cluster import free_port

    hung = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(2)]
    try:
        for s in hung:
            s.bind(("127.0.0.1", 0))
            s.listen(8)  # the kernel completes connections; nobody reads them
        h1, h2 = (f"127.0.0.1:{s.getsockname()[1]}" for s in hung)
        a, b = (f"127.0.0.1:{free_port()}" for _ in range(2))

        def status_of(nid: int, nodes: dict[int, str]) -> list[AbstractRouteDef]:
            body = {"id": nid, "state": "Leader" if nid == 1 else "Follower", "term": 1, "leader_id": 1,
                    "raft_addr": "127.0.0.1:1", "voters": sorted(nodes), "learners": [],
                    "nodes": {str(k): {"raft_addr": "127.0.0.1:1", "http_addr": v} for k, v in nodes.items()}}

            async def status(request: web.Request) -> web.Response:
                return web.json_response(body)

            return [web.get("/cluster/status", status)]

        async with _fake_node(int(a.rsplit(":")[1]), status_of(1, {1: a, 2: b})), \
                _fake_node(int(b.rsplit(":")[1]), status_of(2, {1: a, 2: b, 3: h2})):
            start = time.monotonic()
            code = await asyncio.to_thread(cli.main, ["cluster", "status", "--json", "--endpoints", f"{h1},{a}",
                                                      "--timeout", "2"])
            took = time.monotonic() - start
    finally:
        for s in hung:
            s.close()
    out = capsys.readouterr()
    assert code == 0, out.err
    printed = json.loads(out.out)
    assert printed["nodes"]["3"] == "unreachable" and printed["unreachable_endpoints"] == [h1]
    assert {k: v["id"] for k, v in printed["nodes"].items() if isinstance(v, dict)} == {"1": 1, "2": 2}
    assert took < 2.9, f"cluster status --timeout 2 took {took:.1f} s"


async def test_cluster_status_shows_the_leaders_membership_over_a_lagging_nodes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """During a membership change a node that has not received the new membership yet (it
    lags, or was cut off) reports the old one in the same term as the leader. ``cluster
    status`` took the membership of whichever node of the highest term answered last, so
    with the leader listed first the table showed the old voters: the node being removed as
    a voter, the new one as not a member. The leader's membership of the highest term is
    shown (else the longest log's of that term). Two fake nodes on loopback answer."""
    import asyncio
    import json

    from aiohttp import web

    from openraft_py.testing.proc_cluster import free_port

    ports = [free_port(), free_port()]

    def status_of(nid: int, state: str, last: int, voters: list[int], port: int) -> dict[str, object]:
        return {"id": nid, "state": state, "term": 5, "leader_id": 1, "last_log_index": last,
                "committed_index": last, "applied_index": last, "voters": voters, "learners": [],
                "nodes": {}, "raft_addr": f"127.0.0.1:{port + 1}", "http_addr": f"127.0.0.1:{port}"}

    leader = status_of(1, "Leader", 12, [1, 2, 4], ports[0])
    lagging = status_of(3, "Follower", 9, [1, 2, 3], ports[1])

    def answer(st: dict[str, object]) -> list[AbstractRouteDef]:
        async def status(request: web.Request) -> web.Response:
            return web.json_response(st)
        return [web.get("/cluster/status", status)]

    async with _fake_node(ports[0], answer(leader)) as a, _fake_node(ports[1], answer(lagging)) as b:
        for endpoints in (f"{a},{b}", f"{b},{a}"):
            code = await asyncio.to_thread(cli.main, ["cluster", "status", "--json", "--endpoints", endpoints])
            assert code == 0
            out = json.loads(capsys.readouterr().out)
            assert (out["voters"], out["learners"]) == ([1, 2, 4], []), endpoints
        code = await asyncio.to_thread(cli.main, ["cluster", "status", "--endpoints", f"{a},{b}"])
        assert code == 0
        rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
        assert rows["1"][2] == "voter" and rows["3"][2:5] == ["not", "a", "member"]


async def test_cluster_status_does_not_take_a_node_at_another_members_address_for_that_node(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A node started with another node's id on a member's addresses (``serve --id 2`` where
    node 3 ran, on a new data directory): ``cluster status`` asked node 3's HTTP address, got
    the answer of "node 2", and showed it as node 2 (Learner, term 0) in place of the real
    node 2, the leader, and node 3 as unreachable. Node 2's row is the answer at node 2's
    address; node 3's says what answers at its address, and a line below says which address
    answered as which node. Three fake nodes on loopback; the impostor answers last."""
    import asyncio
    import json

    from aiohttp import web

    from openraft_py.testing.proc_cluster import free_port

    ports = [free_port(), free_port(), free_port()]
    nodes = {str(i + 1): {"raft_addr": f"127.0.0.1:{p + 1}", "http_addr": f"127.0.0.1:{p}"}
             for i, p in enumerate(ports)}

    def status_of(nid: int, state: str, term: int, port: int, members: bool) -> dict[str, object]:
        last = 40 if members else None
        return {"id": nid, "state": state, "term": term, "leader_id": 2 if members else None,
                "last_log_index": last, "committed_index": last, "applied_index": last,
                "voters": [1, 2, 3] if members else [], "learners": [], "nodes": nodes if members else {},
                "raft_addr": f"127.0.0.1:{port + 1}", "http_addr": f"127.0.0.1:{port}"}

    def answer(st: dict[str, object], delay: float = 0.0) -> list[AbstractRouteDef]:
        async def status(request: web.Request) -> web.Response:
            await asyncio.sleep(delay)
            return web.json_response(st)
        return [web.get("/cluster/status", status)]

    one = status_of(1, "Follower", 7, ports[0], True)
    two = status_of(2, "Leader", 7, ports[1], True)
    impostor = status_of(2, "Learner", 0, ports[2], False)  # "node 2" at node 3's addresses
    async with (_fake_node(ports[0], answer(one)) as a, _fake_node(ports[1], answer(two)),
                _fake_node(ports[2], answer(impostor, 0.3)) as c):
        for endpoints in (a, f"{c},{a}"):
            code = await asyncio.to_thread(cli.main, ["cluster", "status", "--endpoints", endpoints])
            out = capsys.readouterr().out
            assert code == 0, out
            lines = out.splitlines()
            rows = {line.split()[0]: line.split() for line in lines[1:4]}
            assert rows["2"][1:3] == ["Leader", "voter"] and rows["2"][-2] == f"127.0.0.1:{ports[1]}", (endpoints, out)
            assert rows["3"][1:5] == ["answers", "as", "n2", "voter"], (endpoints, out)
            assert (f"({c}, node 3's HTTP address in the membership, answered as node 2: another node runs there "
                    "(started with another --id, or on node 3's addresses?); node 3 does not answer there)") in lines, out
        code = await asyncio.to_thread(cli.main, ["cluster", "status", "--json", "--endpoints", a])
        got = json.loads(capsys.readouterr().out)
        assert code == 0 and got["nodes"]["2"]["http_addr"] == f"127.0.0.1:{ports[1]}", got
        assert got["nodes"]["3"] == "answers as n2" and got["wrong_nodes"] == {c: {"member": 3, "answered_as": 2}}, got


def test_cluster_add_learner_ends_within_its_timeout_when_no_node_answers(
        capsys: pytest.CaptureFixture[str]) -> None:
    """After an add-learner whose outcome is unknown the verb asks the leader what became of
    the change; those questions had bounds of their own (5 s to find the leader, then up to
    five statuses of 2 s), so with a node that accepts connections and never answers
    ``--timeout 1`` took 6 s. Now they keep to ``--timeout`` (each at least ``STEP_MIN``).
    The node is a socket that listens and never accepts."""
    import socket
    import time

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)  # the kernel completes connections; nobody reads them
        start = time.monotonic()
        code = cli.main(["cluster", "add-learner", "--endpoints", f"127.0.0.1:{hung.getsockname()[1]}", "--id", "4",
                         "--raft-addr", "127.0.0.1:2", "--http-addr", "127.0.0.1:3", "--timeout", "1"])
        took = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 3 and "outcome unknown" in err and err.count("\n") == 1, (code, err)
    assert took < 1.8, f"cluster add-learner --timeout 1 took {took:.1f} s"


async def test_cluster_status_names_both_voter_sets_of_a_joint_membership(capsys: pytest.CaptureFixture[str]) -> None:
    """A change stuck in its joint membership (``cluster members --voters 1,6,7
    --allow-lagging`` with nodes 6 and 7 down: the new set has no majority, so no leader is
    elected) showed the voters of both sets as one list, each a "voter": an operator saw
    three of five voters answer and no leader, and nothing said which nodes the new set
    needs. The table now ends with a line naming both sets, and ``--json`` gives them as
    ``configs`` (each node's status too). Two fake nodes on loopback answer."""
    import asyncio
    import json

    from aiohttp import web

    from openraft_py.testing.proc_cluster import free_port

    ports = [free_port(), free_port()]
    configs = [[1, 2, 4, 6, 7], [1, 6, 7]]

    def answer(nid: int, port: int) -> list[AbstractRouteDef]:
        st = {"id": nid, "state": "Follower", "term": 5, "leader_id": None, "last_log_index": 9,
              "committed_index": 8, "applied_index": 8, "voters": [1, 2, 4, 6, 7], "learners": [], "joint": True,
              "configs": configs, "nodes": {}, "raft_addr": f"127.0.0.1:{port + 1}", "http_addr": f"127.0.0.1:{port}"}

        async def status(request: web.Request) -> web.Response:
            return web.json_response(st)
        return [web.get("/cluster/status", status)]

    async with _fake_node(ports[0], answer(1, ports[0])) as a, _fake_node(ports[1], answer(2, ports[1])) as b:
        code = await asyncio.to_thread(cli.main, ["cluster", "status", "--endpoints", f"{a},{b}"])
        assert code == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[-1] == ("(joint membership: the voters change from [1, 2, 4, 6, 7] to [1, 6, 7]; electing a "
                             "leader and committing take a majority of each)"), lines
        code = await asyncio.to_thread(cli.main, ["cluster", "status", "--json", "--endpoints", f"{a},{b}"])
        assert code == 0
        out = json.loads(capsys.readouterr().out)
        assert out["configs"] == configs and out["voters"] == [1, 2, 4, 6, 7]


@pytest.mark.parametrize("matched", [7, 5])
async def test_cluster_add_learner_whose_outcome_was_unknown_reports_a_learner_the_leader_caught_up(
        matched: int, capsys: pytest.CaptureFixture[str]) -> None:
    """When the leader that took an add-learner went away (killed during the learner's
    snapshot: the request's connection was lost) the next leader may have brought the
    learner up to date by the time the verb asks what became of it; the verb exited 1 with
    "n4 was added as a learner but has not caught up ... is it running at ...?", as for a
    node that is not running. It now reads the learner's replication in the leader's status:
    caught up with the leader's committed log, it exits 0 as a caught-up add does (with 5
    of 7 it still says it has not). A fake leader answers the POST with an unknown outcome."""
    import asyncio

    from aiohttp import web

    from openraft_py.testing.proc_cluster import free_port

    port = free_port()
    learner = {"raft_addr": "127.0.0.1:2", "http_addr": "127.0.0.1:3"}

    async def add(request: web.Request) -> web.Response:
        return web.json_response({"error": "not the leader, and no leader is known", "outcome_unknown": True},
                                 status=503)

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"id": 1, "state": "Leader", "term": 2, "leader_id": 1,
                                  "leader_http_addr": f"127.0.0.1:{port}", "last_log_index": 7, "committed_index": 7,
                                  "applied_index": 7, "voters": [1], "learners": [4],
                                  "nodes": {"1": {"raft_addr": f"127.0.0.1:{port + 1}", "http_addr": f"127.0.0.1:{port}"},
                                            "4": learner},
                                  "replication": {"1": 7, "4": matched}})

    async with _fake_node(port, [web.post("/cluster/learners", add), web.get("/cluster/status", status)]) as ep:
        code = await asyncio.to_thread(cli.main, ["cluster", "add-learner", "--endpoints", ep, "--id", "4",
                                                  "--raft-addr", learner["raft_addr"], "--http-addr",
                                                  learner["http_addr"], "--timeout", "3"])
    out = capsys.readouterr()
    if matched == 7:
        assert (code, out.out, out.err) == (0, "n4 added as a learner and caught up (log index 7)\n", "")
    else:
        assert code == 1 and "n4 was added as a learner but has not caught up" in out.err, (code, out)


async def test_a_503_that_says_nothing_was_done_fails_add_learner_with_exit_1(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A leader whose resolver could not tell about the learner's raft host answers 503 with
    ``"outcome_unknown": false``: nothing was done. ``cluster add-learner`` read every 503
    as an unknown outcome and exited 3 ("outcome unknown (it may or may not have been
    applied)") for a request the node had not acted on; it now exits 1 with the node's
    reason, without asking what became of the learner. A fake node answers."""
    import asyncio

    from aiohttp import web

    from openraft_py.testing.proc_cluster import free_port

    port = free_port()
    asked: list[str] = []
    why = "ServiceUnavailable: raft_addr 'slow.example:2': resolving 'slow.example' took more than 5.0s: nothing was done"

    async def refuse(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.json_response({"error": why, "outcome_unknown": False}, status=503)

    routes = [web.post("/cluster/learners", refuse), web.get("/cluster/status", refuse),
              web.get("/cluster/leader", refuse)]
    async with _fake_node(port, routes) as ep:
        code = await asyncio.to_thread(cli.main, ["cluster", "add-learner", "--endpoints", ep, "--id", "4",
                                                  "--raft-addr", "slow.example:2", "--http-addr", "127.0.0.1:3",
                                                  "--timeout", "5"])
    out = capsys.readouterr()
    assert code == 1 and "outcome unknown" not in out.err and why in out.err, (code, out)
    assert out.err.count("\n") == 1 and asked == ["/cluster/learners"], (out.err, asked)


@pytest.mark.parametrize("verb", [
    ["cluster", "add-learner", "--id", "4", "--raft-addr", "127.0.0.1:2", "--http-addr", "127.0.0.1:3"],
    ["kv", "put", "k", "v"],
], ids=["add-learner", "kv put"])
async def test_a_stopping_node_s_refusal_goes_on_to_the_next_endpoint(verb: list[str],
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The first endpoint is a node whose stop has begun (a rolling restart): it answers 503
    with ``"outcome_unknown": false`` and ``"stopping": true``, nothing done. The verb sends
    the request to the next endpoint, which takes it: exit 0. ``cluster add-learner`` exited
    1 with the stopping node's reason, ``kv put`` failed so too. Fake nodes answer."""
    from aiohttp import web

    from openraft_py.testing.proc_cluster import free_port

    asked: list[str] = []
    why = "ServiceUnavailable: node 1 is stopping: its raft host names were not resolved; nothing was done"

    async def stopping(request: web.Request) -> web.Response:
        asked.append(f"stopping {request.method} {request.path}")
        await request.read()
        return web.json_response({"error": why, "outcome_unknown": False, "stopping": True}, status=503)

    async def takes(request: web.Request) -> web.Response:
        asked.append(f"takes {request.method} {request.path}")
        await request.read()
        return web.json_response({"index": 7})

    path = "/cluster/learners" if verb[0] == "cluster" else "/kv/k"
    method = "POST" if verb[0] == "cluster" else "PUT"
    async with _fake_node(free_port(), [web.route(method, path, stopping)]) as ep1, \
            _fake_node(free_port(), [web.route(method, path, takes)]) as ep2:
        code = await asyncio.to_thread(cli.main, [*verb[:2], "--endpoints", f"{ep1},{ep2}", *verb[2:], "--timeout",
                                                  "5"])
    out = capsys.readouterr()
    assert code == 0 and out.err == "", (code, out)
    assert asked == [f"stopping {method} {path}", f"takes {method} {path}"], asked


def test_cluster_remove_learner_ends_within_its_timeout_when_no_node_answers(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A remove-learner whose outcome is unknown (no answer) asks the leader what became of it
    within ``--timeout`` too, and then says the outcome is unknown (exit 3)."""
    import socket
    import time

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)  # the kernel completes connections; nobody reads them
        start = time.monotonic()
        code = cli.main(["cluster", "remove-learner", "--endpoints", f"127.0.0.1:{hung.getsockname()[1]}",
                         "--id", "4", "--timeout", "1"])
        took = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 3 and "remove-learner 4: outcome unknown" in err and err.count("\n") == 1, (code, err)
    assert took < 1.8, f"cluster remove-learner --timeout 1 took {took:.1f} s"


@pytest.mark.parametrize("named,code", [(False, 0), (True, 3)], ids=["removed", "still-a-member"])
async def test_cluster_remove_learner_with_an_unknown_outcome_reads_the_leader_s_membership(
        named: bool, code: int, capsys: pytest.CaptureFixture[str]) -> None:
    """After a 503 to ``DELETE /cluster/learners/4`` (an outcome unknown), the verb reads the
    leader's status: with its whole log committed and node 4 not in its nodes, the learner
    was removed (exit 0); still named, the outcome stays unknown (exit 3). A fake leader."""
    import asyncio

    from aiohttp import web

    from openraft_py.testing.proc_cluster import free_port

    port = free_port()
    ep = f"127.0.0.1:{port}"
    nodes = {str(i): {"raft_addr": f"127.0.0.1:{port + i}", "http_addr": f"127.0.0.1:{port + 10 + i}"}
             for i in ((1, 2, 3, 4) if named else (1, 2, 3))}
    nodes["1"]["http_addr"] = ep

    async def remove(request: web.Request) -> web.Response:
        return web.json_response({"error": "ServiceUnavailable: no answer in time"}, status=503)

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"id": 1, "state": "Leader", "leader_id": 1, "leader_http_addr": ep,
                                  "http_addr": ep, "committed_index": 9, "last_log_index": 9, "nodes": nodes})

    async with _fake_node(port, [web.delete("/cluster/learners/{id}", remove),
                                 web.get("/cluster/status", status)]):
        got = await asyncio.to_thread(cli.main, ["cluster", "remove-learner", "--endpoints", ep, "--id", "4",
                                                 "--timeout", "3"])
    out, err = capsys.readouterr()
    assert got == code, (got, out, err)
    if named:
        assert out == "" and "remove-learner 4: outcome unknown" in err and err.count("\n") == 1, err
    else:
        assert out == "n4 removed (it is not a member of the leader's committed membership)\n" and err == "", err


@pytest.mark.parametrize("voters,joint,code", [([1, 4, 5], False, 0), ([1, 4, 5], True, 3), ([1], False, 3)],
                         ids=["changed", "still-joint", "unchanged"])
async def test_cluster_members_with_an_unknown_outcome_reads_the_leader_s_membership(
        voters: list[int], joint: bool, code: int, capsys: pytest.CaptureFixture[str]) -> None:
    """After a 503 to ``POST /cluster/members`` (an outcome unknown: from one voter to three,
    the leader steps down when it adopts the joint membership before the new voters have
    acknowledged it, and the next leader finishes the change), the verb reads the leader's
    status: with its whole log committed, a uniform membership of the voters asked for means
    done (exit 0); a joint one or other voters leave the outcome unknown (exit 3). A fake
    leader."""
    import asyncio

    from aiohttp import web

    from openraft_py.testing.proc_cluster import free_port

    port = free_port()
    ep = f"127.0.0.1:{port}"

    async def change(request: web.Request) -> web.Response:
        return web.json_response({"error": "not the leader, and no leader is known (the write was appended; whether "
                                  "it commits is unknown)", "outcome_unknown": True, "leader_id": None}, status=503)

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"id": 1, "state": "Leader", "leader_id": 1, "leader_http_addr": ep,
                                  "http_addr": ep, "committed_index": 9, "last_log_index": 9, "voters": voters,
                                  "learners": [], "joint": joint})

    async with _fake_node(port, [web.post("/cluster/members", change), web.get("/cluster/status", status)]):
        got = await asyncio.to_thread(cli.main, ["cluster", "members", "--endpoints", ep, "--voters", "1,4,5",
                                                 "--timeout", "2"])
    out = capsys.readouterr()
    assert got == code, out
    if code == 0:
        assert (out.out, out.err) == ("voters: 1,4,5\nlearners: -\n", "")
    else:
        assert "members: outcome unknown" in out.err


def test_cluster_status_names_a_node_the_membership_does_not_as_not_a_member() -> None:
    """A node an endpoint reached that the membership does not name (removed, still
    running: it shows the state it had, Learner) reads "not a member" in the ROLE column:
    it read "-", the row otherwise that of a learner."""
    row = {"state": "Leader", "term": 3, "leader_id": 1, "last_log_index": 9, "committed_index": 9,
           "applied_index": 9, "http_addr": "h1", "raft_addr": "r1"}
    removed = dict(row, state="Learner", leader_id=None, http_addr="h4", raft_addr="r4")
    table = cli.status_table({1: row, 4: removed, 5: "unreachable"}, [1], [5]).splitlines()
    assert table[0].split()[:3] == ["ID", "STATE", "ROLE"]
    assert table[1].split()[:3] == ["1", "Leader", "voter"]
    assert table[2].split()[:5] == ["4", "Learner", "not", "a", "member"]
    assert table[3].split() == ["5", "unreachable", "learner"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("flags", [["--max-body", "99999999999"], ["--raft-config", '{"heartbeat_interval": "50"}']])
def test_cluster_up_refuses_what_serve_would_refuse_before_making_anything(
        flags: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A ``--max-body`` or ``--raft-config`` that ``serve`` refuses (exit 2): ``cluster up``
    made its data directory, started n1, and exited 1 relaying n1's error from its log. It
    is checked before anything is made now, a usage error (2)."""
    root = tmp_path / "c"
    assert cli.main(["cluster", "up", "-n", "1", "--data-dir", str(root), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("openraft-py cluster up: error: --"), err
    assert not root.exists()


@pytest.mark.parametrize("fields", [{"voters": "1,2"}, {"learners": 4}, {"voters": [1], "learners": {"4": 1}}],
                         ids=["voters-a-string", "learners-a-number", "learners-an-object"])
def test_cluster_init_refuses_a_status_whose_membership_is_not_lists(fields: dict[str, object]) -> None:
    """A status whose ``voters`` or ``learners`` is not a list of ids (not a service node's:
    another server at the address, or a damaged proxy) is refused with a line saying so,
    nothing sent. Before, a string of voters raised ``TypeError`` inside the refusal (``in
    <string>`` of an int), which the command line reported as an unexpected error."""
    st: dict[str, object] = {"id": 4, "leader_id": None, **fields}
    with pytest.raises(cli.CliError) as refused:
        cli._refuse_nodes_in_a_cluster(["h:1"], [st])
    assert "h:1 answered a status whose voters and learners are not lists of node ids" in str(refused.value)


async def test_cluster_status_takes_a_node_at_the_address_of_the_node_it_replaced(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Node 3 replaced by node 4 on node 3's addresses (the dead node's host reused), with a
    lagging follower whose membership still names node 3 there: ``cluster status`` took the
    address for node 3's only (the id named there last in what it read), so node 4's answer
    there was reported as another node answering at node 3's address ("answers as n4", a
    ``wrong_nodes`` entry) and node 4, a voter that answered, as unreachable. An answer at
    an address is its member's when any membership read names that id there. Three fake
    nodes on loopback; the leader is asked first, so node 4 is named before node 3."""
    import asyncio
    import json

    from aiohttp import web

    from openraft_py.testing.proc_cluster import free_port

    ports = [free_port(), free_port(), free_port()]

    def addrs(port: int) -> dict[str, str]:
        return {"raft_addr": f"127.0.0.1:{port + 1}", "http_addr": f"127.0.0.1:{port}"}

    new_nodes = {"1": addrs(ports[0]), "2": addrs(ports[1]), "4": addrs(ports[2])}
    old_nodes = {"1": addrs(ports[0]), "2": addrs(ports[1]), "3": addrs(ports[2])}

    def status_of(nid: int, state: str, port: int, last: int, nodes: dict[str, dict[str, str]]) -> dict[str, object]:
        return {"id": nid, "state": state, "term": 7, "leader_id": 1, "last_log_index": last,
                "committed_index": last, "applied_index": last, "voters": sorted(int(k) for k in nodes),
                "learners": [], "nodes": nodes, **addrs(port)}

    def answer(st: dict[str, object]) -> list[AbstractRouteDef]:
        async def status(request: web.Request) -> web.Response:
            return web.json_response(st)
        return [web.get("/cluster/status", status)]

    leader = status_of(1, "Leader", ports[0], 50, new_nodes)
    lagging = status_of(2, "Follower", ports[1], 40, old_nodes)  # has not got the change yet
    four = status_of(4, "Follower", ports[2], 50, new_nodes)
    async with (_fake_node(ports[0], answer(leader)) as a, _fake_node(ports[1], answer(lagging)),
                _fake_node(ports[2], answer(four)) as c):
        code = await asyncio.wait_for(
            asyncio.to_thread(cli.main, ["cluster", "status", "--json", "--endpoints", a, "--timeout", "5"]), 30)
        got = json.loads(capsys.readouterr().out)
        assert code == 0, got
        assert got["wrong_nodes"] == {}, got
        assert isinstance(got["nodes"]["4"], dict) and got["nodes"]["4"]["http_addr"] == c, got
        assert got["voters"] == [1, 2, 4] and got["nodes"]["3"] == "unreachable", got


async def test_kv_put_takes_its_value_from_a_file_or_standard_input(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A value was a command-line argument only, and Linux refuses an argument over 128 KiB
    (``MAX_ARG_STRLEN``): ``kv put k "$(cat value.txt)"`` of a 300 KB value failed in the
    shell, "Argument list too long", exit 126, for a value the service takes (up to
    ``--max-body``, 1 MiB by default). ``--value-file FILE`` (``-``: standard input) sends the
    file's text as it is, a final newline included. A fake node records the bodies."""
    from aiohttp import web

    from openraft_py.testing.proc_cluster import free_port

    bodies: list[bytes] = []

    async def put(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.json_response({"index": len(bodies)})

    value = "0123456789abcdef" * 20_000 + "\n"  # 320,001 bytes: over MAX_ARG_STRLEN
    path = tmp_path / "value.txt"
    path.write_text(value, encoding="utf-8")
    async with _fake_node(free_port(), [web.put("/kv/{key}", put)]) as ep:
        code = await asyncio.to_thread(cli.main, ["kv", "put", "big", "--value-file", str(path), "--endpoints", ep,
                                                  "--timeout", "5"])
        assert code == 0, capsys.readouterr()
        stdin = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "openraft_py.kv", "kv", "put", "small", "--value-file", "-",
                                "--endpoints", ep, "--timeout", "5"], input=b"caf\xc3\xa9\n", capture_output=True,
                               timeout=30)
    assert stdin.returncode == 0, stdin
    assert bodies == [value.encode(), "café\n".encode()]


@pytest.mark.parametrize(("argv", "message"), [
    (["k", "v", "--value-file", "{file}"],
     "argument --value-file: not allowed with a VALUE argument: give the value once, as VALUE or in --value-file"),
    (["k", "--value-file", "{missing}"], "argument --value-file: cannot read '{missing}': No such file or directory"),
    (["k", "--value-file", "{binary}"],
     "argument --value-file: '{binary}' is not valid UTF-8 (from byte 1 on): the service stores text"),
    (["k"], "the following arguments are required: value (see"),
], ids=["both", "missing", "not-utf8", "neither"])
def test_kv_put_value_file_mistakes_are_usage_errors(argv: list[str], message: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``kv put`` takes exactly one value, as VALUE or in ``--value-file``, and a file it can
    read, of UTF-8 text: anything else is one usage line, exit 2, nothing sent."""
    names = {"file": tmp_path / "v.txt", "missing": tmp_path / "absent.txt", "binary": tmp_path / "v.bin"}
    names["file"].write_text("x")
    names["binary"].write_bytes(b"a\xff")
    argv = [a.format(**{k: str(v) for k, v in names.items()}) for a in argv]
    message = message.format(**{k: str(v) for k, v in names.items()})
    code = cli.main(["kv", "put", *argv, "--endpoints", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, (code, err)
