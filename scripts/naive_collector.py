"""The baseline the benchmarks compare against: the obvious collector.

One INSERT per message in autocommit, the broker's acknowledgement sent by paho on
receipt (before anything is stored), no batching. It is what many integrations do,
and it loses messages on a crash; the benchmark shows what batching and acks after
commit cost or save. Not part of the product.
"""

from __future__ import annotations

import signal
import sys
import threading
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from cityvitals.payloads import Limits, Reading, parse_message
from cityvitals.settings import CollectorSettings


def main() -> int:
    """Run until SIGTERM."""
    settings = CollectorSettings()
    conn = psycopg.connect(settings.psycopg_dsn, autocommit=True)
    stop = threading.Event()
    limits = Limits()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        r = parse_message(
            msg.topic,
            bytes(msg.payload),
            datetime.now(UTC),
            prefix=settings.topic_prefix,
            limits=limits,
        )
        if isinstance(r, Reading) and r.kind.value == "energy":
            p = r.payload
            conn.execute(
                "INSERT INTO readings_energy (device_id, ts, received_at, ts_from_broker, seq, "
                "active_power_kw, energy_kwh) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (
                    r.device_id,
                    r.ts,
                    r.received_at,
                    r.ts_from_broker,
                    r.seq,
                    getattr(p, "active_power_kw", 0.0),
                    getattr(p, "energy_kwh", None),
                ),
            )

    def on_connect(client: mqtt.Client, *args: object) -> None:
        client.subscribe(f"{settings.topic_prefix}/#", qos=1)

    def on_subscribe(client: mqtt.Client, *args: object) -> None:
        print("subscribed", flush=True)  # the benchmark waits for this line

    target = settings.mqtt
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=settings.client_id or "naive",
        protocol=mqtt.MQTTv5,
    )
    client.on_message = on_message
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.connect(target.host, target.port)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    client.loop_start()
    stop.wait()
    client.disconnect()
    client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
