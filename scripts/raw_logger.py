"""The cheapest deployed write path, as a baseline: MQTT topic and payload text into one table.

What Telegraf's `mqtt_consumer` → `postgresql` output (or mqtt-pg-logger) does: every
message under the prefix is stored as its topic, its payload as text and the time it
arrived, in one table `raw_log` without an index, by COPY in batches. Nothing is
validated, de-duplicated, aggregated or kept as state, and paho acknowledges each
message on receipt (before it is stored), so a crash loses what is not yet committed.
The benchmarks compare the collector's speed and CPU per stored reading with it. Not
part of the product.

It reads the collector's environment (`CITYVITALS_DATABASE_URL`, `CITYVITALS_MQTT_URL`,
`CITYVITALS_TOPIC_PREFIX`, `CITYVITALS_CLIENT_ID`, `CITYVITALS_BATCH_MAX`,
`CITYVITALS_BATCH_AGE_MS`, `CITYVITALS_SESSION_EXPIRY_S`) and keeps a persistent
session like the collector, so that a backlog queued while it was away can be drained;
with `CITYVITALS_SHARED_SUBSCRIPTION=on` it subscribes with the collector's share group,
so that the broker queues for it the same way it does for a collector.
"""

from __future__ import annotations

import signal
import sys
import threading
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cityvitals.settings import CollectorSettings
from cityvitals.topics import subscription

TABLE = "CREATE TABLE IF NOT EXISTS raw_log (topic text, payload text, received_at timestamptz)"
COPY = "COPY raw_log (topic, payload, received_at) FROM STDIN"

Row = tuple[str, str, datetime]


def store(conn: psycopg.Connection, rows: list[Row]) -> None:
    """One COPY and one commit for a batch."""
    with conn.transaction(), conn.cursor() as cur, cur.copy(COPY) as copy:
        for row in rows:
            copy.write_row(row)


def main() -> int:
    """Run until SIGTERM; what arrived before it is stored before leaving."""
    settings = CollectorSettings()
    conn = psycopg.connect(settings.psycopg_dsn, autocommit=True)
    conn.execute(TABLE)
    rows: list[Row] = []
    lock = threading.Lock()
    wake = threading.Event()
    stop = threading.Event()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        row = (msg.topic, bytes(msg.payload).decode(errors="replace"), datetime.now(UTC))
        with lock:
            rows.append(row)
            if len(rows) >= settings.batch_max:
                wake.set()

    def on_connect(client: mqtt.Client, *args: object) -> None:
        shared = settings.shared_subscription == "on"
        topic = subscription(settings.topic_prefix, settings.share_group if shared else None)
        client.subscribe(topic, qos=1)

    def on_subscribe(client: mqtt.Client, *args: object) -> None:
        print("subscribed", flush=True)  # the benchmark waits for this line

    def on_term(*_: object) -> None:
        stop.set()
        wake.set()

    target = settings.mqtt
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=settings.client_id or "raw-logger",
        protocol=mqtt.MQTTv5,
    )
    client.on_message = on_message
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = settings.session_expiry_s
    client.connect(target.host, target.port, clean_start=False, properties=props)
    signal.signal(signal.SIGTERM, on_term)
    client.loop_start()
    while not stop.is_set():
        # A batch as soon as batch_max rows wait, else every batch_age_ms.
        wake.wait(settings.batch_age_ms / 1000)
        wake.clear()
        with lock:
            batch = rows[:]
            rows.clear()
        if batch:
            store(conn, batch)
    client.disconnect()
    client.loop_stop()
    with lock:
        batch = rows[:]
    if batch:
        store(conn, batch)
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
