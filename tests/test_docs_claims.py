"""The prose of the user docs states facts the code holds: checked here where it is cheap.

``tests/test_docs.py`` runs the docs' code blocks and ``tests/test_docs_commands.py`` parses
their commands; neither reads the prose. These checks read the claims that have one exact
answer in the code, on README.md and every page of ``docs/`` but the design notes:

- every Prometheus name (``openraft_...``, but the package's own ``openraft_py``) is a family
  or a sample that a key-value service node exposes, and the labels a page gives it
  (``openraft_state{state}``) are that family's labels;
- the ``RaftMetrics`` field table of the metrics guide lists every field of ``RaftMetrics``,
  and no other;
- a default a page gives a ``Config`` field in passing (``Config.max_payload_entries`` (300),
  ``max_entry_bytes`` (4 MiB by default), a table row ``| `Config.max_payload_bytes` | 8 MiB |``)
  is that field's default;
- a name a span gives the node handle (``raft.X``, ``raft.trigger.X``, ``raft.wait(t).X``,
  ``Config.X``, ``metrics.X``) or a transport (``TcpServer.X``, ``router.X``) is one its type
  has (the metrics guide said ``raft.trigger()``);
- the fields docs/reference/errors.md gives an error (``LearnerIsLagging(node_ids,
  threshold)``) are its constructor's first parameters;
- the v0.8 guide's method table names every coroutine of ``RaftStorage``;
- the ``serve`` synopsis of the key-value service guide names every flag ``serve`` takes,
  and its HTTP API table every route of the service.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from openraft_py import Config, LeaderId, LogId, Membership, RaftMetrics, ServerState, StoredMembership, Vote
from openraft_py.metrics import ReadOnlyReplication

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

pytestmark = [
    pytest.mark.skipif(
        not (ROOT / "mkdocs.yml").exists(), reason="the docs are not next to the tests (installed-package run)"
    ),
    pytest.mark.timeout(60),  # each reads the docs and imports a module or two: seconds at most
]


def pages() -> list[Path]:
    """README.md and the user guide: ``docs/`` but its design notes (developer sketches)."""
    return sorted([ROOT / "README.md", *(p for p in DOCS.rglob("*.md") if DOCS / "design" not in p.parents)])


def lines(pages: list[Path]) -> Iterator[tuple[str, str]]:
    """``(where, text)`` of every line of ``pages``, ``where`` as ``path:line``."""
    for page in pages:
        name = page.relative_to(ROOT) if page.is_relative_to(ROOT) else page
        for number, text in enumerate(page.read_text().splitlines(), 1):
            yield f"{name}:{number}", text


# --- Prometheus names ---------------------------------------------------------------------

# A name not followed by a word character or ``*`` (``openraft_kv_*`` is a pattern of names).
_METRIC = re.compile(r"\b(openraft_(?!py\b)[a-z0-9_]+)(?![\w*])(\{[^}]*\})?")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


def label_names(braces: str) -> set[str]:
    """The label names of ``{...}``: a list (``{peer,rpc}``) or PromQL matchers, whatever the
    operator (``{state!="Follower",le="0.5"}``; a quoted value may hold commas and ``=``)."""
    parts = _QUOTED.sub('""', braces.strip("{}")).split(",")
    return {m.group(1) for m in (re.match(r"\s*([a-zA-Z_]\w*)", part) for part in parts) if m}


def exposed_families() -> dict[str, set[str]]:
    """Every name a service node's ``GET /metrics`` can show (family and sample names, the
    ``_total`` of a counter and the ``_bucket``/``_sum``/``_count`` of a histogram too), with
    the labels of its family (a histogram's ``le`` only on its ``_bucket``). Every labelled series is given
    one child so that its labels show, and the TLS gauge is made as a TLS node makes it."""
    pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    from openraft_py.kv.metrics import KvMetrics

    members = StoredMembership(LogId(1, 0), Membership.new([{1, 2, 3}]))
    raft = RaftMetrics(
        id=1, state=ServerState.LEADER, current_term=1, vote=Vote(LeaderId(1, 1), True), last_log_index=5,
        last_applied=LogId(1, 5), committed=LogId(1, 5), current_leader=1, membership_config=members,
        replication=ReadOnlyReplication({1: 5, 2: 5, 3: -1}),
    )
    kv = KvMetrics(lambda: raft)
    kv.on_rpc_error(2, "append_entries", TimeoutError())
    kv.write_seconds.labels("put").observe(0.01)
    kv.read_seconds.labels("lease").observe(0.01)
    kv.http_requests.labels("/kv/{key}", "GET", "200").inc()
    kv.set_tls_cert_expiry(2_000_000_000.0)
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(kv.render().decode()):
        labels = {label for sample in family.samples for label in sample.labels} - {"le"}
        names[family.name] = labels
        for sample in family.samples:
            names[sample.name] = names.get(sample.name, labels) | (set(sample.labels) & {"le"})
    return names


def wrong_metric_names(pages: list[Path]) -> list[str]:
    """Every Prometheus name of ``pages`` that no service node exposes, and every label a
    page gives one that its family does not have."""
    exposed = exposed_families()
    wrong = []
    for where, text in lines(pages):
        for name, braces in _METRIC.findall(text):
            if name not in exposed:
                wrong.append(f"{where}: {name} is no metric of a service node")
                continue
            if label_names(braces) - exposed[name]:
                wrong.append(f"{where}: {name}{braces}: its labels are {sorted(exposed[name])}")
    return wrong


def test_every_metric_named_is_exposed_with_the_labels_given() -> None:
    wrong = wrong_metric_names(pages())
    assert not wrong, "\n".join(wrong)


def test_the_metric_check_reads_promql_as_written(tmp_path: Path) -> None:
    """What a page may write in PromQL is no wrong name: a family pattern (``openraft_kv_*``),
    a bucket's ``le``, the ``!=``, ``=~`` and ``!~`` matchers. A name no node exposes and a
    label its family lacks are."""
    page = tmp_path / "page.md"
    page.write_text("the `openraft_kv_*` families; `openraft_kv_write_seconds_bucket{op=\"put\",le=\"0.5\"}`\n"
                    "`openraft_state{state!=\"Follower\"}`, `openraft_state{state=~\"Leader|Candidate\"}`, "
                    "`openraft_state{state!~\"L.*\"}`, `openraft_state{state=Leader}`\n"
                    "`openraft_terms`, `openraft_state{role=\"Leader\"}`, `openraft_term{le=\"1\"}`\n")
    assert [w.split(": ", 1)[1] for w in wrong_metric_names([page])] == [
        "openraft_terms is no metric of a service node",
        "openraft_state{role=\"Leader\"}: its labels are ['state']",
        "openraft_term{le=\"1\"}: its labels are []",
    ]


def test_the_metrics_table_lists_raft_metrics_fields() -> None:
    """The table under "RaftMetrics: the library's view of a node" names each field once."""
    guide = (DOCS / "guides" / "metrics.md").read_text()
    table = re.search(r"^\| field \| meaning \|\n\|[-| ]+\|\n((?:\|.*\n)+)", guide, re.M)
    assert table is not None, "docs/guides/metrics.md: no RaftMetrics field table"
    named = [n for row in table.group(1).splitlines() for n in re.findall(r"`(\w+)`", row.split("|")[1])]
    assert sorted(named) == sorted(RaftMetrics.__struct_fields__)


# --- Config defaults ----------------------------------------------------------------------

_UNITS = {"": 1, "ms": 1, "bytes": 1, "KiB": 1024, "MiB": 1024 * 1024, "MiB/s": 1024 * 1024}
_VALUE = r"(\d[\d,]*(?:\.\d+)?)\s*(ms|bytes|KiB|MiB/s|MiB)?"
_FIELDS = "|".join(f for f in Config.__struct_fields__)
# "`Config.field` (300)", "`field` (4 MiB by default", "`field` (50 ms)", and a table row
# "| `Config.field` | 8 MiB |".
_IN_PASSING = re.compile(rf"`(?:Config\.)?({_FIELDS})` \({_VALUE}(?:\)| by default)")
_TABLE_ROW = re.compile(rf"^\| `(?:Config\.)?({_FIELDS})` \| {_VALUE} \|")


def config_defaults_given(pages: list[Path]) -> list[tuple[str, str, float]]:
    """``(where, field, value)`` of every default the prose of ``pages`` gives a field."""
    found = []
    for where, text in lines(pages):
        for pattern in (_IN_PASSING, _TABLE_ROW):
            for field, number, unit in pattern.findall(text):
                found.append((where, field, float(number.replace(",", "")) * _UNITS[unit]))
    return found


def test_config_defaults_given_in_prose_are_the_defaults() -> None:
    given = config_defaults_given(pages())
    assert len(given) >= 10, f"the patterns found only {given}: did the docs' wording change?"
    default = Config()
    wrong = [f"{where}: {field} = {value:g}, but its default is {getattr(default, field)!r}"
             for where, field, value in given if getattr(default, field) != value]
    assert not wrong, "\n".join(wrong)


def test_the_default_check_reads_each_form(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("`Config.max_payload_entries` (300) caps ...\n"
                    "`max_entry_bytes` (4 MiB by default, set ...\n"
                    "`Config.replication_min_rate` (1 MiB/s) is ...\n"
                    "| `Config.max_payload_bytes` | 8 MiB | one ...\n"
                    "`heartbeat_interval` (50 ms), and `max_apply_batch` (4,096) ...\n"
                    "`election_timeout_min` (a comment, no value)\n")
    assert [(f, v) for _, f, v in config_defaults_given([page])] == [
        ("max_payload_entries", 300), ("max_entry_bytes", 4 << 20), ("replication_min_rate", 1 << 20),
        ("max_payload_bytes", 8 << 20), ("heartbeat_interval", 50), ("max_apply_batch", 4096)]


# --- names of the node handle ----------------------------------------------------------------

_SPAN = re.compile(r"`([^`\n]+)`")
# What names no object of the handle's types, removed from a span first: a module path
# (``openraft_py.metrics.Wait``) and a file (``openraft_py/kv/metrics.py``, ``metrics.py``).
_NOT_A_HANDLE = re.compile(r"\bopenraft_py(?:[./]\w+)+|[\w/.-]*\w\.(?:py|pyi|pyx|pxd)\b")
# What a span names on a node handle (``raft.X``, ``leader.X``, ``Raft.X``), on its ``trigger``,
# on a ``wait(...)``, on ``Config``, on a node's ``metrics`` and on the transports' classes
# (``module:class`` of each).
_HANDLE_NAMES = [
    (re.compile(r"\b(?:raft|leader|Raft)\.(\w+)"), "openraft_py:Raft"),
    (re.compile(r"\btrigger\.(\w+)"), "openraft_py:Trigger"),
    (re.compile(r"\bwait\([^)]*\)\.(\w+)"), "openraft_py:Wait"),
    (re.compile(r"\bConfig\.(\w+)"), "openraft_py:Config"),
    # (A key-value service node's ``metrics`` is its ``KvMetrics``.)
    (re.compile(r"\bmetrics\.(\w+)"), "openraft_py:RaftMetrics openraft_py.kv.metrics:KvMetrics"),
    (re.compile(r"\bTcpServer\.(\w+)"), "openraft_py.network.tcp:TcpServer"),
    (re.compile(r"\bTcpNetworkFactory\.(\w+)"), "openraft_py.network.tcp:TcpNetworkFactory"),
    (re.compile(r"\b(?:Router|router)\.(\w+)"), "openraft_py.network.router:Router"),
]
# A ``Raft``'s plain attributes (docs/reference/api.md), set per instance.
_RAFT_ATTRIBUTES = {"id", "config", "trigger"}


def _class(owner: str) -> type | None:
    """The class ``module:class`` names; ``None`` when its module cannot be imported (the
    ``kv`` extra missing): its names are then not accepted."""
    module, _, name = owner.partition(":")
    try:
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]
    except ImportError:
        return None


def wrong_handle_names(pages: list[Path]) -> list[str]:
    """Every name a backticked span of ``pages`` gives one of the node handle's types that the
    type does not have, and every ``trigger()`` call (``trigger`` is an attribute)."""
    import openraft_py

    wrong = []
    for where, text in lines(pages):
        for span in _SPAN.findall(text):
            names_of = _NOT_A_HANDLE.sub(" ", span)
            for pattern, owners in _HANDLE_NAMES:
                classes = [c for c in map(_class, owners.split()) if c is not None]
                for name in pattern.findall(names_of):
                    if not any(hasattr(c, name) for c in classes) and not (
                            classes[0] is openraft_py.Raft and name in _RAFT_ATTRIBUTES):
                        wrong.append(f"{where}: `{span}`: {classes[0].__name__} has no {name}")
            if re.search(r"\btrigger\(", span):
                wrong.append(f"{where}: `{span}`: trigger is an attribute (raft.trigger.snapshot())")
    return wrong


def test_names_given_to_the_node_handle_exist() -> None:
    wrong = wrong_handle_names(pages())
    assert not wrong, "\n".join(wrong)


def test_the_handle_name_check_sees_wrong_names(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("`raft.trigger().snapshot()`, `await raft.client_write(b)`, `raft.id`\n"
                    "`leader.add_voter(4)`, `raft.trigger.compact()`, `raft.wait(2.0).applied_at_least(7)`\n"
                    "`Config.max_payload_entries`, `Config.lease_ms()`, `Config.max_entries`, `m.metrics.term`\n"
                    "`TcpServer.start(...)`, `TcpServer.stop()`, `router.isolate(1)`, `router.cut_off(1)`\n")
    assert [w.split(": ", 1)[1] for w in wrong_handle_names([page])] == [
        "`raft.trigger().snapshot()`: trigger is an attribute (raft.trigger.snapshot())",
        "`leader.add_voter(4)`: Raft has no add_voter",
        "`raft.trigger.compact()`: Trigger has no compact",
        "`raft.wait(2.0).applied_at_least(7)`: Wait has no applied_at_least",
        "`Config.max_entries`: Config has no max_entries",
        "`m.metrics.term`: RaftMetrics has no term",
        "`TcpServer.stop()`: TcpServer has no stop",
        "`router.cut_off(1)`: Router has no cut_off",
    ]


def test_the_handle_name_check_skips_modules_files_and_the_service_s_metrics(tmp_path: Path) -> None:
    """A module path (``openraft_py.metrics.Wait``, ``openraft_py.network.router.Router``), a
    file (``openraft_py/kv/metrics.py``) and the key-value service's own metrics
    (``node.metrics.render()``, a ``KvMetrics``) name nothing of the node handle's types."""
    page = tmp_path / "page.md"
    page.write_text("`openraft_py.metrics.Wait`, `openraft_py.network.router.Router`, `openraft_py.raft.Raft`\n"
                    "`openraft_py/kv/metrics.py`, `metrics.py`, `node.metrics.render()`, `raft.metrics.state`\n")
    assert wrong_handle_names([page]) == []


# --- error fields ----------------------------------------------------------------------------

_ERROR_ROW = re.compile(r"^\| `(\w+)\(([^)]*)\)`", re.M)


def test_the_error_reference_gives_each_error_s_own_fields() -> None:
    """A row ``| `LearnerIsLagging(node_ids, threshold)` |`` of docs/reference/errors.md names
    the first parameters of the class's constructor, in order (what ``e.node_ids`` reads)."""
    import inspect

    import openraft_py

    rows = _ERROR_ROW.findall((DOCS / "reference" / "errors.md").read_text())
    assert len(rows) >= 10, rows
    wrong = []
    for name, given in rows:
        fields = [f.split("=")[0].strip() for f in given.split(",") if f.strip()]
        params = [p for p in inspect.signature(getattr(openraft_py, name).__init__).parameters if p != "self"]
        if params[:len(fields)] != fields:
            wrong.append(f"{name}({given}): its constructor takes ({', '.join(params)})")
    assert not wrong, "\n".join(wrong)



# --- the v0.8 storage protocol -------------------------------------------------------------------


def test_the_v08_table_lists_every_raft_storage_method() -> None:
    """The method table of docs/guides/v08-storage.md names each coroutine of the
    ``RaftStorage`` protocol (which ``Adaptor`` requires), and no other."""
    import inspect

    from openraft_py.storage.v08 import RaftStorage

    guide = (DOCS / "guides" / "v08-storage.md").read_text()
    table = re.search(r"^\| method \| contract \|\n\|[-| ]+\|\n((?:\|.*\n)+)", guide, re.M)
    assert table is not None, "docs/guides/v08-storage.md: no method table"
    named = [n for row in table.group(1).splitlines() for n in re.findall(r"`(\w+)\(", row.split("|")[1])]
    protocol = [n for n, f in vars(RaftStorage).items() if inspect.iscoroutinefunction(f)]
    assert sorted(named) == sorted(protocol)


# --- the serve synopsis -------------------------------------------------------------------------


def test_the_serve_synopsis_names_every_flag_of_serve() -> None:
    """The synopsis under "## `serve`" of docs/guides/kv-service.md names every option
    ``openraft-py serve`` takes (its ``--help`` aside): a flag added to ``serve`` without a
    word in its guide fails here. (tests/test_docs_commands.py checks the other way: every
    flag printed is one ``serve`` takes.)"""
    import argparse

    from openraft_py.kv.server import add_serve_arguments

    parser = add_serve_arguments(argparse.ArgumentParser(prog="openraft-py serve"))
    flags = {s for a in parser._actions for s in a.option_strings if s.startswith("--")} - {"--help"}
    guide = (DOCS / "guides" / "kv-service.md").read_text()
    synopsis = re.search(r"^## `serve`\n\n```text\n(.*?)```", guide, re.M | re.S)
    assert synopsis is not None, "docs/guides/kv-service.md: no serve synopsis"
    given = set(re.findall(r"--[a-z][a-z-]*", synopsis.group(1)))
    assert flags - given == set(), f"the serve synopsis leaves out {sorted(flags - given)}"


# --- the HTTP API table ---------------------------------------------------------------------------


def test_the_http_api_table_lists_every_route() -> None:
    """The table under "## The HTTP API" of docs/guides/kv-service.md has one row per route of
    the service (``make_app``; ``HEAD``, which aiohttp adds beside each ``GET``, and the
    catch-all that answers 404/405 aside), and no row for a route the service lacks."""
    pytest.importorskip("aiohttp")
    pytest.importorskip("prometheus_client")
    from openraft_py.kv.http_api import UNMATCHED_PATH, make_app
    from openraft_py.kv.metrics import KvMetrics

    class Options:
        max_body = 1 << 20

    class Node:  # what make_app reads of a node (it keeps a weak reference to it)
        opts = Options()
        metrics = KvMetrics(lambda: None)

    node = Node()
    app = make_app(node)  # type: ignore[arg-type]
    routes = {f"{r.method} {r.resource.canonical}" for r in app.router.routes()
              if r.method != "HEAD" and r.resource is not None and r.resource.canonical != UNMATCHED_PATH.replace(":.*", "")}
    guide = (DOCS / "guides" / "kv-service.md").read_text()
    table = re.search(r"^## The HTTP API\n\n\| method and path \|.*\n\|[-| ]+\|\n((?:\|.*\n)+)", guide, re.M)
    assert table is not None, "docs/guides/kv-service.md: no HTTP API table"
    rows = {re.sub(r"\?.*", "", m) for m in re.findall(r"^\| `([A-Z]+ /[^`]*)` \|", table.group(1), re.M)}
    assert rows == routes
