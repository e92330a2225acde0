"""The collector's Prometheus metrics (names fixed in docs/contracts.md)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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
ACK_LAG = Histogram(
    "cityvitals_collector_ack_lag_seconds",
    "Receive to acknowledgement, per message",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
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
