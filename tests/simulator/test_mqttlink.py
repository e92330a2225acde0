"""The simulator's link, tuned and stock, over plain TCP and TLS: every QoS 1 acked."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import paho.mqtt
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from structlog.testing import capture_logs

from cityvitals.settings import parse_mqtt_url
from cityvitals.simulator.mqttlink import Link
from tests.fix_services import wait_until
from tests.mqtt_support import TlsBroker, tls_broker


class Counter:
    """Counts the messages that arrive under a prefix (a stock paho subscriber)."""

    def __init__(self, mqtt_url: str, prefix: str) -> None:
        target = parse_mqtt_url(mqtt_url)
        self.count = 0
        self.lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"count-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_connect = lambda c, *_: c.subscribe(f"{prefix}/#", qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(target.host, target.port)
        self.client.loop_start()
        wait_until(subscribed.is_set, 15, "SUBACK")

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.count += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def broker() -> Iterator[TlsBroker]:
    with tls_broker() as running:
        yield running


def _publish_and_drain(link: Link, prefix: str, n: int) -> None:
    link.connect()
    try:
        for i in range(n):
            assert link.publish(f"{prefix}/d{i % 9}/reading", b"%d" % i + b"y" * (i % 500))
        assert link.drain(60), f"{link.outstanding} messages never acknowledged"
    finally:
        link.disconnect()


@pytest.mark.parametrize("tuned", [True, False], ids=["tuned", "stock"])
@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_every_published_message_is_acknowledged_and_arrives(
    broker: TlsBroker,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    tuned: bool,
    transport: str,
) -> None:
    # Link's TLS uses the system's CAs; OpenSSL reads this variable for them.
    monkeypatch.setenv("SSL_CERT_FILE", str(broker.ca_file))
    url = broker.tls_url if transport == "tls" else broker.plain_url
    counter = Counter(broker.plain_url, topic_prefix)
    n = 5000
    link = Link(url, f"link-{uuid.uuid4().hex[:8]}", window=300, tuned=tuned)
    assert link.client.tuned is tuned
    try:
        _publish_and_drain(link, topic_prefix, n)

        def all_arrived() -> bool:
            with counter.lock:
                return counter.count >= n

        wait_until(all_arrived, 30, f"{n} messages at the subscriber")
    finally:
        counter.close()
    assert (link.acked, link.failed, link.outstanding) == (n, 0, 0)
    assert counter.count == n


def test_link_on_an_unknown_paho_is_stock_and_still_delivers(
    broker: TlsBroker, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(paho.mqtt, "__version__", "3.0.0")
    with capture_logs() as logs:
        link = Link(broker.plain_url, f"link-{uuid.uuid4().hex[:8]}")
    assert not link.client.tuned
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["mqtt_client_untuned"]
    _publish_and_drain(link, topic_prefix, 500)
    assert (link.acked, link.outstanding) == (500, 0)
