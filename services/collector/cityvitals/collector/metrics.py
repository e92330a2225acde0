"""The collector's Prometheus metrics (names fixed in docs/contracts.md)."""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from cityvitals.reasons import Reason
from cityvitals.store import BatchResult

RECEIVED = Counter("cityvitals_collector_messages_received", "MQTT messages taken from the broker")
STORED = Counter(
    "cityvitals_collector_readings_stored",
    "New rows stored (readings, events, status updates)",
    ["kind"],
)
DUPLICATES = Counter(
    "cityvitals_collector_duplicates",
    "Re-deliveries and re-sends absorbed by the unique keys",
    ["kind"],
)
REJECTED = Counter("cityvitals_collector_rejected", "Messages dead-lettered, by reason", ["reason"])
AUTOREGISTERED = Counter(
    "cityvitals_collector_devices_autoregistered", "Unknown devices registered as unassigned"
)
BATCH_SIZE = Histogram(
    "cityvitals_collector_batch_size_messages",
    "Messages per committed batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 20000),
)
COMMIT_SECONDS = Histogram(
    "cityvitals_collector_commit_duration_seconds",
    "Time to write and commit one batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class BatchHistogram(Collector):
    """A histogram fed a batch of values at once, under one lock.

    prometheus-client's `Histogram.observe` takes two locks per value (about 2 µs on the
    project's machine); the ack lag is one value per message, 5,000 per batch. The
    exposition is the same: cumulative `_bucket{le}`, `_sum` and `_count`.
    """

    def __init__(self, name: str, documentation: str, buckets: Iterable[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = [*sorted(float(b) for b in buckets), math.inf]
        self._counts = [0] * len(self.bounds)
        self._sum = 0.0
        self._lock = threading.Lock()
        REGISTRY.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        """Count each value in the first bucket whose bound it does not exceed."""
        counts = [0] * len(self.bounds)
        total = 0.0
        bounds = self.bounds
        for v in values:
            counts[bisect.bisect_left(bounds, v)] += 1
            total += v
        with self._lock:
            self._counts = [a + b for a, b in zip(self._counts, counts, strict=True)]
            self._sum += total

    def describe(self) -> Iterator[HistogramMetricFamily]:
        """The metric's name and help, without its values."""
        yield HistogramMetricFamily(self.name, self.documentation)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        """The cumulative buckets, sum and count."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for bound, n in zip(self.bounds, counts, strict=True):
            running += n
            cumulative.append((floatToGoString(bound), float(running)))  # type: ignore[no-untyped-call]
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=cumulative, sum_value=total
        )


ACK_LAG = BatchHistogram(
    "cityvitals_collector_ack_lag_seconds",
    "Receive to acknowledgement, per message",
    (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
BUFFER = Gauge("cityvitals_collector_buffer_messages", "Messages received and not yet acknowledged")
DATABASE_UP = Gauge(
    "cityvitals_collector_database_up", "1 when the last database operation succeeded"
)
MQTT_CONNECTED = Gauge("cityvitals_collector_mqtt_connected", "1 while connected to the broker")
RECONNECTS = Counter("cityvitals_collector_reconnects", "Reconnections", ["target"])
LAST_COMMIT = Gauge(
    "cityvitals_collector_last_commit_timestamp_seconds", "Unix time of the last committed batch"
)
DB_ERRORS = Counter("cityvitals_collector_database_errors", "Failed batch attempts")
REFUSALS = Counter(
    "cityvitals_collector_database_refusals",
    "Batch attempts the database refused for their data (the refused messages are "
    "isolated and dead-lettered as unstorable; never an outage)",
)
SHARED = Gauge(
    "cityvitals_collector_shared_subscription",
    "1 when the collector takes its share of a shared subscription, 0 for a plain one",
)
CONFLICTS = Counter(
    "cityvitals_collector_batch_conflicts",
    "Batches retried because another collector wrote the same devices",
)

# Every label value exists from the start, so rates and alerts see zeros, not gaps.
for _kind in ("parking", "waste", "energy", "event", "status"):
    STORED.labels(kind=_kind)
    DUPLICATES.labels(kind=_kind)
for _reason in Reason:
    REJECTED.labels(reason=_reason.value)
for _target in ("mqtt", "database"):
    RECONNECTS.labels(target=_target)


def record(result: BatchResult) -> None:
    """Count one committed batch."""
    RECEIVED.inc(result.received)
    BATCH_SIZE.observe(result.received)
    for kind, n in result.stored.items():
        STORED.labels(kind=kind).inc(n)
    for kind, n in result.duplicates.items():
        DUPLICATES.labels(kind=kind).inc(n)
    for reason, n in result.rejected.items():
        REJECTED.labels(reason=reason.value).inc(n)
    if result.autoregistered:
        AUTOREGISTERED.inc(result.autoregistered)
    if result.refusals:
        REFUSALS.inc(result.refusals)


def serve(host: str, port: int) -> None:
    """Serve /metrics on a background thread."""
    start_http_server(port, addr=host)
