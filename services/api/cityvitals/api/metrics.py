"""`/metrics`: the names of docs/contracts.md, read from the served snapshot."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cityvitals.api.engine import Engine
from cityvitals.catalogue import Status

# Buckets for a pre-serialized API: most requests finish well under 5 ms.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
REFRESH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class SnapshotCollector(Collector):
    """Indicator, district and alert gauges taken from the engine at scrape time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the gauges of the served snapshot."""
        snap = self.engine.snapshot
        value = GaugeMetricFamily(
            "cityvitals_indicator_value",
            "An indicator's value (absent while it is null).",
            labels=["indicator", "district"],
        )
        status = GaugeMetricFamily(
            "cityvitals_indicator_status",
            "An indicator's status: normal 0, attention 1, warning 2, critical 3.",
            labels=["indicator", "district"],
        )
        coverage = GaugeMetricFamily(
            "cityvitals_indicator_coverage_ratio",
            "Devices that reported within their interval / devices registered in scope.",
            labels=["indicator", "district"],
        )
        district_status = GaugeMetricFamily(
            "cityvitals_district_status",
            "Worst status of a district (or the city), 0-3.",
            labels=["district"],
        )
        for scope in (snap.city, *snap.districts.values()):
            district_status.add_metric([scope.id], float(scope.status))
            for f in scope.figures:
                if f.value is not None:
                    value.add_metric([f.id, scope.id], f.value)
                status.add_metric([f.id, scope.id], float(f.status))
                if f.coverage is not None:
                    coverage.add_metric([f.id, scope.id], f.coverage)
        active = GaugeMetricFamily(
            "cityvitals_alert_active",
            "1 per active alert.",
            labels=["indicator", "entity", "district", "severity"],
        )
        per_severity: Counter[str] = Counter()
        for a in self.engine.alerts.active:
            active.add_metric([a.indicator, a.entity, a.district or "", a.severity.label], 1.0)
            per_severity[a.severity.label] += 1
        count = GaugeMetricFamily(
            "cityvitals_alerts_active", "Active alerts per severity.", labels=["severity"]
        )
        for s in (Status.ATTENTION, Status.WARNING, Status.CRITICAL):
            count.add_metric([s.label], float(per_severity[s.label]))
        yield from (value, status, coverage, district_status, active, count)


class Metrics:
    """The API's registry: snapshot gauges, refresh and HTTP histograms."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(SnapshotCollector(engine))
        age = Gauge(
            "cityvitals_snapshot_age_seconds",
            "Age of the served snapshot.",
            registry=self.registry,
        )
        age.set_function(engine.age_s)
        up = Gauge(
            "cityvitals_api_database_up",
            "1 when the last refresh reached the database.",
            registry=self.registry,
        )
        up.set_function(lambda: 1.0 if engine.db_up else 0.0)
        self.refresh = Histogram(
            "cityvitals_snapshot_refresh_duration_seconds",
            "Time to compute one snapshot.",
            buckets=REFRESH_BUCKETS,
            registry=self.registry,
        )
        engine.on_refresh = self.refresh.observe
        self.http = Histogram(
            "cityvitals_http_request_duration_seconds",
            "HTTP latency.",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )


class HttpMetricsMiddleware:
    """Times every request by method, route template and status (pure ASGI, no copies)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time one request."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            # The route template, never the raw path: device ids would explode labels.
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.http.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - started
            )
