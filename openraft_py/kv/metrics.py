"""The Prometheus metrics of one service node, served by ``GET /metrics``.

Each node has its own ``CollectorRegistry`` (never the process-global one), so several nodes
in one process (tests) keep separate figures. Exposed families:

===========================================  =====================================================
``openraft_build_info{version,extensions}``  1; the package version and whether the compiled
                                             kernels run (``"true"``) or the pure twins
``openraft_node_id``                         this node's id
``openraft_running``                         1 while the node runs, 0 once it stopped
``openraft_term``                            current term
``openraft_state{state}``                    1 for the node's state, 0 for the others
``openraft_leader_id``                       the leader this node knows of (-1: none)
``openraft_last_log_index``                  last log index (-1: empty log)
``openraft_committed_index``                 committed index (-1: none)
``openraft_applied_index``                   last applied index (-1: none)
``openraft_snapshot_index``                  last log index of the current snapshot (-1: none)
``openraft_purged_index``                    last purged log index (-1: none)
``openraft_voters`` / ``openraft_learners``  members of the current membership
``openraft_replication_matched_index{peer}`` leader only: the log index known to match on peer
``openraft_replication_lag{peer}``           leader only: last log index minus matched index
``openraft_rpc_errors_total{peer,rpc,error}`` Raft RPCs to a peer that failed, by RPC and error
                                             (removed when the peer leaves the membership)
``openraft_kv_write_seconds{op}``            histogram: put / delete / cas, until applied
``openraft_kv_read_seconds{consistency}``    histogram: linearizable / lease / local reads
``openraft_kv_http_requests_total{route,method,status}``  HTTP requests answered
``openraft_kv_http_body_bytes``              bytes of request bodies being handled (the body
                                             budget, ``MAX_BODY_BYTES_IN_FLIGHT``)
``openraft_kv_http_body_waiting``            requests waiting for room in that budget
``openraft_kv_tls_cert_expiry_timestamp_seconds``  with TLS only: when the certificate new
                                             connections present expires (Unix time)
===========================================  =====================================================

The Raft figures are read from ``RaftMetrics`` at scrape time (nothing polls).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import __version__ as _VERSION
from .._core import USING_EXTENSIONS
from ..metrics import RaftMetrics
from ..types import NodeId, ServerState

__all__ = ["KvMetrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The content type of the Prometheus text exposition format."""

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _idx(log_id: Any) -> int:
    return -1 if log_id is None else int(log_id.index)


class _RaftCollector(Collector):
    """Gauges read from the node's ``RaftMetrics`` when scraped."""

    def __init__(self, source: Callable[[], RaftMetrics | None]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        m = self._source()
        if m is None:
            return
        mem = m.membership_config.membership

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        info = GaugeMetricFamily("openraft_build_info", "The package version and whether the compiled kernels run.",
                                 labels=["version", "extensions"])
        info.add_metric([_VERSION, "true" if USING_EXTENSIONS else "false"], 1)
        yield info
        yield gauge("openraft_node_id", "This node's id.", m.id)
        yield gauge("openraft_running", "1 while the node runs, 0 once it stopped.", 1 if m.running else 0)
        yield gauge("openraft_term", "The current term.", m.current_term)
        st = GaugeMetricFamily("openraft_state", "1 for the node's server state, 0 for the others.", labels=["state"])
        for s in ServerState:
            st.add_metric([s.value], 1 if m.state == s else 0)
        yield st
        yield gauge("openraft_leader_id", "The leader this node knows of (-1: none).",
                    -1 if m.current_leader is None else m.current_leader)
        yield gauge("openraft_last_log_index", "The last log index (-1: empty log).", m.last_log_index)
        yield gauge("openraft_committed_index", "The committed log index (-1: none).", _idx(m.committed))
        yield gauge("openraft_applied_index", "The last applied log index (-1: none).", _idx(m.last_applied))
        yield gauge("openraft_snapshot_index", "The last log index in the current snapshot (-1: none).",
                    _idx(m.snapshot))
        yield gauge("openraft_purged_index", "The last purged log index (-1: none).", _idx(m.purged))
        yield gauge("openraft_voters", "Voters in the current membership.", len(mem.voter_ids()))
        yield gauge("openraft_learners", "Learners in the current membership.", len(mem.learner_ids()))
        matched = GaugeMetricFamily("openraft_replication_matched_index",
                                    "Leader only: the log index known to match on each member, the leader's own flushed log "
                                    "included (-1: none).",
                                    labels=["peer"])
        lag = GaugeMetricFamily("openraft_replication_lag",
                                "Leader only: entries each member (the leader included: its log not yet "
                                "flushed) is behind the leader's last log index.",
                                labels=["peer"])
        if m.replication is not None:
            for peer, idx in sorted(m.replication.items()):
                matched.add_metric([str(peer)], idx)
                lag.add_metric([str(peer)], max(m.last_log_index - idx, 0))
        yield matched
        yield lag


class KvMetrics:
    """The registry of one node plus the counters and histograms the service updates.

    ``source`` returns the node's current ``RaftMetrics`` (``None`` before it starts)."""

    def __init__(self, source: Callable[[], RaftMetrics | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_RaftCollector(source))
        self.rpc_errors = Counter(
            "openraft_rpc_errors", "Raft RPCs to a peer that raised an RPCError, by RPC and error.",
            ["peer", "rpc", "error"], registry=self.registry)
        self.write_seconds = Histogram(
            "openraft_kv_write_seconds", "Key-value writes from request to applied on the leader.",
            ["op"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.read_seconds = Histogram(
            "openraft_kv_read_seconds", "Key-value reads, by consistency.",
            ["consistency"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.http_requests = Counter(
            "openraft_kv_http_requests", "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"], registry=self.registry)

        self.body_bytes = Gauge(
            "openraft_kv_http_body_bytes",
            "Bytes of request bodies being handled, out of the body budget (MAX_BODY_BYTES_IN_FLIGHT).",
            registry=self.registry)
        self.body_waiting = Gauge(
            "openraft_kv_http_body_waiting", "Requests waiting for room in the body budget.",
            registry=self.registry)
        self.tls_cert_expiry: Gauge | None = None
        """``openraft_kv_tls_cert_expiry_timestamp_seconds``, made by the first
        ``set_tls_cert_expiry`` (a node without TLS has no such series)."""

    def set_tls_cert_expiry(self, expires_at: float) -> None:
        """Record when the certificate new connections present expires (Unix time): at
        start, and after each renewal loaded (``tls_reload``)."""
        if self.tls_cert_expiry is None:
            self.tls_cert_expiry = Gauge(
                "openraft_kv_tls_cert_expiry_timestamp_seconds",
                "When the TLS certificate new connections present expires, as a Unix time.",
                registry=self.registry)
        self.tls_cert_expiry.set(expires_at)

    def watch_body_budget(self, held: Callable[[], float], waiting: Callable[[], float]) -> None:
        """Read ``openraft_kv_http_body_bytes`` and ``openraft_kv_http_body_waiting`` from
        ``held`` and ``waiting`` at each scrape (the HTTP application's ``BodyBudget``); 0
        until called."""
        self.body_bytes.set_function(held)
        self.body_waiting.set_function(waiting)

    def on_rpc_error(self, target: NodeId, rpc: str, error: BaseException) -> None:
        """Count one failed RPC (the ``KvNetworkFactory`` hook)."""
        self.rpc_errors.labels(str(target), rpc, type(error).__name__).inc()

    def forget_peer(self, target: NodeId) -> None:
        """Remove every ``openraft_rpc_errors_total`` series of peer ``target`` (it left the
        membership): a label set was kept for every peer the node ever had."""
        peer = str(target)
        labels = {tuple(s.labels[n] for n in ("peer", "rpc", "error"))
                  for metric in self.rpc_errors.collect() for s in metric.samples if s.labels.get("peer") == peer}
        for label in labels:
            self.rpc_errors.remove(*label)

    def render(self) -> bytes:
        """The whole registry in the Prometheus text format."""
        return generate_latest(self.registry)
