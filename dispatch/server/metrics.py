"""Prometheus metrics (prometheus-client), one registry per application."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from dispatch.core.lifecycle import STAGES

if TYPE_CHECKING:
    from dispatch.runtime import Runtime
    from dispatch.server.hub import Hub


class _StateCollector(Collector):
    """Reads the committed state at scrape time: nothing is counted twice or drifts."""

    def __init__(self, runtime: Runtime, hub: Hub, auth_refused: Mapping[str, int]) -> None:
        self.runtime = runtime
        self.hub = hub
        self.auth_refused = auth_refused

    def collect(self) -> Iterator[Any]:
        rt = self.runtime
        by = Counter((ev.get("status"), ev.get("tier")) for ev in rt.view.events())
        g = GaugeMetricFamily("dispatch_events", "Events by status and tier",
                              labels=["status", "tier"])
        for (status, tier), n in sorted(by.items(), key=str):
            g.add_metric([str(status), str(tier)], n)
        yield g
        b = Counter(stage for ev in rt.view.events() for stage in ev.get("breaches") or ())
        c = CounterMetricFamily("dispatch_breaches", "Stage deadlines breached",
                                labels=["stage"])
        for stage in STAGES:
            c.add_metric([stage], b.get(stage, 0))
        yield c
        hub = self.hub
        yield GaugeMetricFamily("dispatch_ws_clients", "Connected WebSocket clients",
                                value=len(hub.clients))
        q = GaugeMetricFamily("dispatch_queue_depth", "Messages waiting in queues",
                              labels=["queue"])
        q.add_metric(["websocket"], hub.queue_depth())
        yield q
        yield CounterMetricFamily("dispatch_ws_slow_disconnects",
                                  "Clients closed for not keeping up",
                                  value=hub.disconnected_slow)
        refused = CounterMetricFamily("dispatch_auth_refused",
                                      "Requests refused for a missing or bad token (401), "
                                      "or from an address past its failures (429)",
                                      labels=["reason"])
        for reason, n in sorted(self.auth_refused.items()):
            refused.add_metric([reason], n)
        yield refused
        yield CounterMetricFamily("dispatch_ws_revoked_disconnects",
                                  "Sockets closed because their token was removed or revoked",
                                  value=hub.disconnected_revoked)
        yield GaugeMetricFamily("dispatch_journal_seq", "Last journal sequence number",
                                value=rt.view.last_seq)
        coord = rt.coordination  # embedded: no conflicts, every claim its own
        yield CounterMetricFamily(
            "dispatch_journal_conflicts", "Commands re-run because another instance "
            "appended first (compare-and-set refused)", value=coord.conflicts)
        yield CounterMetricFamily("dispatch_deadlines_claimed",
                                  "Deadlines this instance claimed and fired",
                                  value=coord.claimed)


class Metrics:
    """Request latency histogram plus the state collector."""

    def __init__(self, runtime: Runtime, hub: Hub, auth_refused: Mapping[str, int]) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "dispatch_http_request_seconds", "HTTP request latency",
            ["method", "route", "status"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.registry.register(_StateCollector(runtime, hub, auth_refused))

    def render(self) -> bytes:
        return generate_latest(self.registry)
