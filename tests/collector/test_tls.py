"""The collector's tuned client over a real TLS listener: nothing lost, nothing re-sent."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityvitals.collector.mqttclient import CollectorClient
from tests.fix_services import Publisher
from tests.mqtt_support import AckingSubscriber, TlsBroker, new_client, resume_session, tls_broker


@pytest.fixture(scope="module")
def broker() -> Iterator[TlsBroker]:
    with tls_broker() as running:
        yield running


@pytest.fixture
def plain_publisher(broker: TlsBroker) -> Iterator[Publisher]:
    pub = Publisher(broker.plain_url)
    yield pub
    pub.close()


def test_collector_client_is_the_tuned_client() -> None:
    client = CollectorClient(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id="t", manual_ack=True
    )
    assert client.tuned
    assert hasattr(client, "ack_many")


@pytest.mark.parametrize("tuned", [True, False], ids=["tuned", "stock"])
def test_qos1_over_tls_is_received_once_and_acknowledged(
    broker: TlsBroker, plain_publisher: Publisher, topic_prefix: str, tuned: bool
) -> None:
    client_id = f"tls-{uuid.uuid4().hex[:8]}"
    sub = AckingSubscriber(
        new_client(client_id, tuned=tuned, ca_file=broker.ca_file, cls=CollectorClient),
        topic_prefix,
    )
    assert sub.client.tuned is tuned
    sub.connect("127.0.0.1", broker.tls_port)
    sock = sub.client.socket()
    assert sock is not None
    assert hasattr(sock, "pending"), "not a TLS connection"
    # Small readings many to a 16 KiB TLS record, and a few that span dozens of records.
    sent = [f"r{i}:".encode() + b"x" * (i % 300) for i in range(4000)]
    sent += [bytes([65 + i]) * (200_000 + 150_000 * i) for i in range(4)]
    try:
        plain_publisher.publish_all(
            [(f"{topic_prefix}/d{i % 5}/reading", p) for i, p in enumerate(sent)]
        )
        sub.receive(len(sent))
    finally:
        sub.close()
    assert sorted(sub.payloads) == sorted(sent)

    present, again = resume_session(
        "127.0.0.1",
        broker.tls_port,
        client_id,
        plain_publisher,
        f"{topic_prefix}/marker",
        ca_file=broker.ca_file,
    )
    assert present, "the broker did not keep the session, so redelivery was not tested"
    assert again == []
