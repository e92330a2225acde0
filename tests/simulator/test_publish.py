"""The simulator against the real broker and database of the test harness."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityvitals.settings import parse_mqtt_url
from cityvitals.simulator.cli import main
from cityvitals.simulator.fleet import build_fleet
from cityvitals.simulator.load import publish_load


class Subscriber:
    """Counts what arrives under a topic filter, by channel."""

    def __init__(self, mqtt_url: str, topic_filter: str) -> None:
        target = parse_mqtt_url(mqtt_url)
        self.counts: Counter[str] = Counter()
        self.retained: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"test-sub-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_connect = lambda c, *_: c.subscribe(topic_filter, qos=1)
        self.client.connect(target.host, target.port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "no SUBACK"

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.counts[msg.topic.rsplit("/", 1)[-1]] += 1
            if msg.topic.endswith("/status"):
                self.retained[msg.topic] = bytes(msg.payload)

    def wait_for(self, condition: Callable[[Counter[str]], bool], deadline_s: float = 20) -> bool:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            with self.lock:
                if condition(self.counts):
                    return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def subscriber(mqtt_url: str, topic_prefix: str) -> Iterator[Subscriber]:
    sub = Subscriber(mqtt_url, f"{topic_prefix}/#")
    try:
        yield sub
    finally:
        sub.close()


@pytest.fixture
def sim_env(monkeypatch: pytest.MonkeyPatch, mqtt_url: str, topic_prefix: str) -> None:
    monkeypatch.setenv("CITYVITALS_MQTT_URL", mqtt_url)
    monkeypatch.setenv("CITYVITALS_TOPIC_PREFIX", topic_prefix)
    monkeypatch.delenv("CITYVITALS_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("CITYVITALS_LOG_FORMAT", "json")


@pytest.mark.usefixtures("sim_env")
def test_simulate_publishes_a_bounded_run_and_marks_devices_offline_at_stop(
    subscriber: Subscriber,
) -> None:
    fleet = build_fleet(0, 0.2)
    code = main(["--scale", "0.2", "--messages", "40", "--register", "none", "--progress", "off"])
    assert code == 0
    assert subscriber.wait_for(lambda c: c["telemetry"] + c["event"] >= 40)
    assert subscriber.wait_for(lambda c: c["status"] >= 2 * len(fleet))
    time.sleep(0.3)  # nothing more may follow; the count is checked after a grace period
    assert subscriber.counts["telemetry"] + subscriber.counts["event"] == 40
    assert set(subscriber.retained.values()) == {b"offline"}
    assert len(subscriber.retained) == len(fleet)


@pytest.mark.usefixtures("sim_env")
def test_register_db_writes_the_fleet_into_the_devices_table(
    monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    monkeypatch.setenv("CITYVITALS_DATABASE_URL", database_url)
    args = ["--scale", "0.5", "--seed", "4", "--register", "db", "--register-only"]
    assert main(args) == 0
    assert main(args) == 0  # a second import updates, it does not duplicate
    fleet = build_fleet(4, 0.5)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT device_id, kind, district FROM devices").fetchall()
        hut = fleet.of_kind("waste")[0]
        hours, site = conn.execute(
            "SELECT opening_hours, site FROM devices WHERE device_id = %s", (hut.device_id,)
        ).fetchone() or (None, None)
        key = conn.execute("SELECT count(*) FROM devices WHERE key_consumer").fetchone()
    assert sorted(r[0] for r in rows) == sorted(fleet.ids())
    assert {r[1] for r in rows} == {"parking", "waste", "energy"}
    # The registry's own form: --register db goes through the registry library.
    assert hours == [{"open": "07:00", "close": "09:00"}, {"open": "18:00", "close": "20:00"}]
    assert site == hut.site
    assert key is not None
    assert key[0] == sum(d.key_consumer for d in fleet)


def test_load_mode_reports_every_message_acknowledged(
    mqtt_url: str, topic_prefix: str, subscriber: Subscriber
) -> None:
    result = publish_load(mqtt_url, topic_prefix, devices=500, messages=20_000, processes=2, seed=1)
    assert result.published == result.acked == 20_000
    assert result.failed == 0
    assert subscriber.wait_for(lambda c: c["telemetry"] >= 20_000, deadline_s=30)
