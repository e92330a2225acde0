"""Faults are normal operating conditions: kill, broker restart, database outage.

Each test publishes a load of distinct readings while the fault happens and then
checks that every reading is stored exactly once and that the collector's counters
add up (received = stored + duplicates + dead-lettered).
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityvitals.cli.localstack import MosquittoServer, PostgresServer
from cityvitals.settings import parse_mqtt_url
from tests.fix_services import CollectorProcess, wait_until

pytestmark = pytest.mark.slow
Factory = Callable[..., CollectorProcess]
N = 20_000


def _load(prefix: str, n: int = N) -> list[tuple[str, bytes]]:
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    return [
        (
            f"{prefix}/energy/em-{i % 100:03d}/telemetry",
            json.dumps(
                {
                    "ts": (base - timedelta(seconds=i // 100)).isoformat(),
                    "active_power_kw": float(i % 977),
                    "seq": i // 100,
                }
            ).encode(),
        )
        for i in range(n)
    ]


def _acked(info: mqtt.MQTTMessageInfo, end: float) -> bool:
    # paho raises instead of returning False when the connection dropped meanwhile.
    try:
        info.wait_for_publish(timeout=max(0.1, min(10.0, end - time.monotonic())))
        return info.is_published()
    except (RuntimeError, ValueError):
        return False


class ResilientPublisher:
    """Publishes QoS 1 in windows and re-publishes whatever the broker did not ack.

    A re-published message may reach the collector twice; the unique keys absorb it.
    """

    def __init__(self, mqtt_url: str) -> None:
        target = parse_mqtt_url(mqtt_url)
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(2000)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 2)
        self.client.connect(target.host, target.port)
        self.client.loop_start()
        self.acked = 0

    def publish_all(
        self, messages: list[tuple[str, bytes]], window: int = 2000, deadline_s: float = 180
    ) -> None:
        end = time.monotonic() + deadline_s
        todo = list(messages)
        while todo:
            if time.monotonic() > end:
                raise AssertionError(f"{len(todo)} messages never acknowledged by the broker")
            chunk, todo = todo[:window], todo[window:]
            infos = [(m, self.client.publish(m[0], m[1], qos=1)) for m in chunk]
            missed = []
            for m, info in infos:
                if _acked(info, end):
                    self.acked += 1
                else:
                    missed.append(m)
            if missed:
                wait_until(self.client.is_connected, 60, "publisher reconnected")
                todo = missed + todo

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _stored(url: str) -> int:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            row = conn.execute("SELECT count(*) FROM readings_energy").fetchone()
            return int(row[0]) if row else 0
    except psycopg.OperationalError:
        return -1


def _assert_counters_add_up(metrics: dict[str, float]) -> None:
    received = metrics["cityvitals_collector_messages_received_total"]
    stored = sum(
        v for k, v in metrics.items() if k.startswith("cityvitals_collector_readings_stored_total")
    )
    dups = sum(
        v for k, v in metrics.items() if k.startswith("cityvitals_collector_duplicates_total")
    )
    rejected = sum(
        v for k, v in metrics.items() if k.startswith("cityvitals_collector_rejected_total")
    )
    assert received == stored + dups + rejected


def _record(scenario: str, published: int, stored: int, *metrics: dict[str, float]) -> None:
    """Append the scenario's counts to test-artifacts/faults.jsonl for the reports."""

    def total(prefix: str) -> float:
        return sum(v for m in metrics for k, v in m.items() if k.startswith(prefix))

    out = Path("test-artifacts")
    out.mkdir(exist_ok=True)
    with (out / "faults.jsonl").open("a") as f:
        f.write(
            json.dumps(
                {
                    "scenario": scenario,
                    "published": published,
                    "stored_rows": stored,
                    "received": total("cityvitals_collector_messages_received_total"),
                    "duplicates": total("cityvitals_collector_duplicates_total"),
                    "dead_lettered": total("cityvitals_collector_rejected_total"),
                }
            )
            + "\n"
        )


def _received(c: CollectorProcess) -> float:
    try:
        return c.metrics().get("cityvitals_collector_messages_received_total", 0.0)
    except OSError:
        return 0.0


def test_readings_redelivered_after_sigkill_are_stored_once(
    collector_factory: Factory, database_url: str, mqtt_url: str, topic_prefix: str
) -> None:
    first = collector_factory(
        database_url, mqtt_url, topic_prefix, client_id="killme", batch_max="500"
    )
    first.start_and_wait()
    pub = ResilientPublisher(mqtt_url)
    load = _load(topic_prefix)
    sender = threading.Thread(target=pub.publish_all, args=(load,))
    sender.start()
    wait_until(lambda: _received(first) >= 2000, 60, "collector mid-load")
    first.stop(signal.SIGKILL)
    second = collector_factory(database_url, mqtt_url, topic_prefix, client_id="killme")
    second.start_and_wait()
    sender.join(timeout=180)
    pub.close()
    wait_until(lambda: _stored(database_url) == N, 120, f"{N} readings stored")
    assert pub.acked == N
    _assert_counters_add_up(second.metrics())
    _record("collector SIGKILL mid-load", N, _stored(database_url), second.metrics())


def test_database_outage_during_load_loses_nothing(
    collector_factory: Factory,
    private_db: tuple[PostgresServer, str],
    mqtt_url: str,
    topic_prefix: str,
) -> None:
    server, url = private_db
    c = collector_factory(
        url,
        mqtt_url,
        topic_prefix,
        db_retry_min_s="0.2",
        db_retry_max_s="1",
        receive_maximum="5000",
    )
    c.start_and_wait()
    pub = ResilientPublisher(mqtt_url)
    load = _load(topic_prefix)
    sender = threading.Thread(target=pub.publish_all, args=(load,))
    sender.start()
    wait_until(lambda: _stored(url) >= 1000, 60, "some readings stored")
    server.stop()
    wait_until(
        lambda: c.metrics().get("cityvitals_collector_database_up") == 0.0,
        30,
        "collector noticed the outage",
    )
    down_since = time.monotonic()
    wait_until(lambda: time.monotonic() - down_since > 3, 10, "outage of 3 s")
    buffered = c.metrics()["cityvitals_collector_buffer_messages"]
    assert buffered <= 5000 + 500  # bounded by the receive window (+ one batch in hand)
    server.start()
    sender.join(timeout=180)
    pub.close()
    wait_until(lambda: _stored(url) == N, 120, f"{N} readings stored after the outage")
    m = c.metrics()
    assert m["cityvitals_collector_database_up"] == 1.0
    _assert_counters_add_up(m)
    assert m['cityvitals_collector_readings_stored_total{kind="energy"}'] == N
    _record("database down during load", N, _stored(url), m)


def test_broker_restart_during_load_loses_nothing(
    collector_factory: Factory,
    private_mosquitto: MosquittoServer,
    database_url: str,
    topic_prefix: str,
) -> None:
    url = private_mosquitto.url
    # A plain persistent subscription: Mosquitto restores it from its persistence file,
    # so messages published before the collector is back are queued for it. A shared
    # one is not restored (see the next test); docs/ingestion.md says what that means.
    c = collector_factory(
        database_url,
        url,
        topic_prefix,
        reconnect_min_s="0.5",
        reconnect_max_s="2",
        share_group="",
    )
    c.start_and_wait()
    pub = ResilientPublisher(url)
    load = _load(topic_prefix)
    sender = threading.Thread(target=pub.publish_all, args=(load,))
    sender.start()
    wait_until(lambda: _stored(database_url) >= 2000, 60, "some readings stored")
    acked_before = pub.acked
    private_mosquitto.stop()
    private_mosquitto.start()
    sender.join(timeout=240)
    pub.close()
    try:
        wait_until(lambda: _stored(database_url) == N, 120, f"{N} readings stored after restart")
    except AssertionError as err:
        # Slow or lost: the counts, which messages and the collector's account tell.
        with psycopg.connect(database_url) as conn:
            have = {
                (d, int(q))
                for d, q in conn.execute("SELECT device_id, seq FROM readings_energy").fetchall()
            }
        missing = [i for i in range(N) if (f"em-{i % 100:03d}", i // 100) not in have]
        metrics, log = c.metrics(), c.log()[-4000:]
        # Lost, or held back by the broker? A new connection of the same session says.
        c.stop()
        c.start_and_wait()
        with contextlib.suppress(AssertionError):
            wait_until(lambda: _stored(database_url) == N, 30, "the rest after a reconnect")
        raise AssertionError(
            f"{err}; stored {_stored(database_url)} after the collector reconnected, acked "
            f"by the broker before the restart {acked_before}, missing message indexes "
            f"{missing[:20]}…{missing[-5:]} ({len(missing)}), collector metrics "
            f"{metrics}\n{log}"
        ) from None
    m = c.metrics()
    assert m['cityvitals_collector_reconnects_total{target="mqtt"}'] >= 1
    _assert_counters_add_up(m)
    _record("broker restart during load", N, _stored(database_url), m)


@pytest.mark.parametrize(("share_group", "kept"), [("", True), ("cityvitals", False)])
def test_what_a_broker_restart_keeps_for_an_offline_collector(
    collector_factory: Factory,
    private_mosquitto: MosquittoServer,
    database_url: str,
    topic_prefix: str,
    share_group: str,
    kept: bool,
) -> None:
    # Pins down the broker's behaviour the collector's guarantees rest on: Mosquitto
    # restores a plain persistent subscription after a restart and queues for it while
    # the collector is away, but (2.0.11, Debian 12) not a shared one. Readings published
    # between the broker's start and the collectors' re-subscription are then dropped
    # by the broker. If a broker upgrade changes this, this test says so.
    url = private_mosquitto.url
    c = collector_factory(database_url, url, topic_prefix, share_group=share_group)
    c.start_and_wait()
    c.stop()
    private_mosquitto.stop()
    private_mosquitto.start()
    load = _load(topic_prefix, 201)
    pub = ResilientPublisher(url)
    pub.publish_all(load[:200])
    pub.close()
    c.start_and_wait()
    pub = ResilientPublisher(url)
    pub.publish_all(load[200:])  # published after the collector is back: always stored
    pub.close()
    wait_until(lambda: _stored(database_url) >= 1, 30, "the reading published after")
    if kept:
        wait_until(lambda: _stored(database_url) == 201, 30, "the 200 queued readings")
    else:
        assert _stored(database_url) == 1


def test_queued_messages_for_an_absent_collector_survive_beyond_the_stock_limit(
    collector_factory: Factory, database_url: str, mqtt_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    # The stock Mosquitto limit is 1,000 queued messages per session; ours must keep
    # everything published while the collector is away.
    c = collector_factory(database_url, mqtt_url, topic_prefix, client_id="away")
    c.start_and_wait()
    c.stop()
    pub = ResilientPublisher(mqtt_url)
    pub.publish_all(_load(topic_prefix))
    pub.close()
    back = collector_factory(database_url, mqtt_url, topic_prefix, client_id="away")
    back.start_and_wait()
    wait_until(lambda: _stored(database_url) == N, 120, f"{N} queued readings stored")
    _record("collector away while 20,000 are published", N, _stored(database_url), back.metrics())
