"""The tuned paho client: its version guard, its reader, and no loss either way."""

from __future__ import annotations

import ssl
import uuid
from collections import deque
from collections.abc import Iterator

import paho.mqtt
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from structlog.testing import capture_logs

from cityvitals.mqttfast import PINNED_PAHO, RECV_CHUNK, TunedClient, private_api_problem
from cityvitals.settings import parse_mqtt_url
from tests.fix_services import Publisher
from tests.mqtt_support import AckingSubscriber, new_client, resume_session


def _client(tuned: bool = True, manual_ack: bool = True) -> TunedClient:
    return TunedClient(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"t-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
        tuned=tuned,
    )


# --- the guard ------------------------------------------------------------------------


def test_pinned_paho_is_the_installed_one() -> None:
    # If this fails, uv.lock moved paho: re-check the overrides before re-pinning.
    assert paho.mqtt.__version__ == PINNED_PAHO
    assert private_api_problem(_client()) is None
    assert _client().tuned


def test_other_paho_version_falls_back_to_stock_with_one_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(paho.mqtt, "__version__", "2.3.0")
    with capture_logs() as logs:
        client = _client()
    assert not client.tuned
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["event"] == "mqtt_client_untuned"
    assert "2.3.0" in warnings[0]["reason"]


def test_missing_private_method_falls_back_to_stock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(mqtt.Client, "_packet_read")
    with capture_logs() as logs:
        client = _client()
    assert not client.tuned
    assert "_packet_read" in logs[0]["reason"]


def test_subclass_names_are_checked_too() -> None:
    class NeedsMore(TunedClient):
        EXTRA_STATE = ("_no_such_paho_state",)

    with capture_logs() as logs:
        client = NeedsMore(callback_api_version=CallbackAPIVersion.VERSION2)
    assert not client.tuned
    assert "_no_such_paho_state" in logs[0]["reason"]


def test_stock_on_request_logs_no_warning() -> None:
    with capture_logs() as logs:
        client = _client(tuned=False)
    assert not client.tuned
    assert [e["log_level"] for e in logs] == ["info"]


# --- ack_many -------------------------------------------------------------------------


def _queued(client: TunedClient) -> list[bytes]:
    return [bytes(p["packet"]) for p in client._out_packet]


def test_ack_many_queues_one_write_for_a_batch() -> None:
    client = _client()
    client.ack_many([1, 2, 0x1234])
    # MQTT 5 §3.4: type 4, remaining length 2, packet id; no reason code = success.
    assert _queued(client) == [bytes.fromhex("400200014002000240021234")]


def test_ack_many_on_stock_paho_is_one_ack_per_message() -> None:
    client = _client(tuned=False)
    client.ack_many([1, 2, 0x1234])
    assert _queued(client) == [
        bytes.fromhex("40020001"),
        bytes.fromhex("40020002"),
        bytes.fromhex("40021234"),
    ]


def test_ack_many_sends_nothing_when_paho_acknowledges_itself() -> None:
    client = _client(manual_ack=False)
    client.ack_many([1, 2])
    client.ack_many([])
    assert _queued(client) == []


# --- the reader, on a scripted TLS-like socket ---------------------------------------


def _publish_packet(topic: str, payload: bytes) -> bytes:
    """An MQTT 5 QoS 0 PUBLISH (§3.3): topic, empty properties, payload."""
    body = len(topic).to_bytes(2, "big") + topic.encode() + b"\x00" + payload
    length, n = b"", len(body)
    while True:
        n, digit = divmod(n, 128)
        length += bytes([digit | (0x80 if n else 0)])
        if not n:
            break
    return b"\x30" + length + body


class ScriptedSocket:
    """An SSL socket stand-in: one `recv()` per record, the rest only seen by `pending()`.

    `select()` would not wake for bytes the SSL layer already decrypted; when the
    records run out, `recv()` raises `SSLWantReadError` like a record that arrived in
    part.
    """

    def __init__(self, records: list[bytes]) -> None:
        self.records = deque(records)
        self.recv_sizes: list[int] = []

    def recv(self, buffer_size: int) -> bytes:
        self.recv_sizes.append(buffer_size)
        if not self.records:
            raise ssl.SSLWantReadError("The operation did not complete (read)")
        record = self.records.popleft()
        if len(record) > buffer_size:
            self.records.appendleft(record[buffer_size:])
        return record[:buffer_size]

    def pending(self) -> int:
        return sum(len(r) for r in self.records)

    def send(self, buffer: bytes | bytearray) -> int:
        return len(buffer)

    def close(self) -> None:
        self.records.clear()

    def fileno(self) -> int:
        return -1

    def setblocking(self, flag: bool) -> None:
        pass


@pytest.fixture
def reading() -> Iterator[tuple[TunedClient, list[bytes]]]:
    client = _client()
    got: list[bytes] = []
    client.on_message = lambda c, u, msg: got.append(bytes(msg.payload))
    yield client, got
    client._sock = None


def test_one_wakeup_handles_every_record_the_ssl_layer_holds(
    reading: tuple[TunedClient, list[bytes]],
) -> None:
    client, got = reading
    stream = b"".join(_publish_packet("t/x", f"m{i}".encode() * 50) for i in range(300))
    # 16 KiB records, the most one SSL recv() returns; packets straddle them.
    sock = ScriptedSocket([stream[i : i + 16384] for i in range(0, len(stream), 16384)])
    client._sock = sock
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got == [f"m{i}".encode() * 50 for i in range(300)]
    assert set(sock.recv_sizes) == {RECV_CHUNK}
    assert not client.has_unread_input()


def test_a_packet_cut_by_want_read_is_finished_on_the_next_wakeup(
    reading: tuple[TunedClient, list[bytes]],
) -> None:
    client, got = reading
    stream = _publish_packet("t/x", b"a") + _publish_packet("t/x", b"b" * 5000)
    sock = ScriptedSocket([stream[:3000]])
    client._sock = sock
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got == [b"a"]
    assert client._sock is sock  # want-read is no reason to drop the connection
    sock.records.append(stream[3000:])
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got == [b"a", b"b" * 5000]


def test_a_large_packet_over_many_records_is_read_in_one_wakeup(
    reading: tuple[TunedClient, list[bytes]],
) -> None:
    client, got = reading
    # paho gives up on a packet after 100 reads; the rest waits in the SSL layer.
    stream = _publish_packet("t/x", b"z" * 300_000)
    client._sock = ScriptedSocket([stream[i : i + 1000] for i in range(0, len(stream), 1000)])
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got == [b"z" * 300_000]


# --- through the real broker ----------------------------------------------------------


@pytest.mark.parametrize("tuned", [True, False], ids=["tuned", "stock"])
def test_every_message_is_received_and_acknowledged(
    mqtt_url: str, topic_prefix: str, publisher: Publisher, tuned: bool
) -> None:
    target = parse_mqtt_url(mqtt_url)
    client_id = f"fast-{uuid.uuid4().hex[:8]}"
    sub = AckingSubscriber(new_client(client_id, tuned=tuned), topic_prefix)
    assert sub.client.tuned is tuned
    sub.connect(target.host, target.port)
    sent = [f"reading-{i}".encode() * (1 + i % 40) for i in range(3000)]
    sent.append(b"L" * 600_000)  # spans several bulk reads
    try:
        publisher.publish_all([(f"{topic_prefix}/d{i % 7}/reading", p) for i, p in enumerate(sent)])
        sub.receive(len(sent))
    finally:
        sub.close()
    assert sorted(sub.payloads) == sorted(sent)
    assert sub.qos == {1}

    present, again = resume_session(
        target.host, target.port, client_id, publisher, f"{topic_prefix}/marker"
    )
    assert present, "the broker did not keep the session, so redelivery was not tested"
    assert again == []


@pytest.mark.parametrize("tuned", [True, False], ids=["tuned", "stock"])
def test_only_what_was_not_acknowledged_comes_back(
    mqtt_url: str, topic_prefix: str, publisher: Publisher, tuned: bool
) -> None:
    target = parse_mqtt_url(mqtt_url)
    client_id = f"fast-{uuid.uuid4().hex[:8]}"
    sub = AckingSubscriber(new_client(client_id, tuned=tuned), topic_prefix)
    sub.connect(target.host, target.port)
    sent = [f"m{i}".encode() for i in range(500)]
    withheld = set(sent[::97])
    try:
        publisher.publish_all([(f"{topic_prefix}/d/reading", p) for p in sent])
        sub.receive(len(sent), withhold=withheld.__contains__)
    finally:
        sub.close()

    present, again = resume_session(
        target.host, target.port, client_id, publisher, f"{topic_prefix}/marker"
    )
    assert present
    assert sorted(again) == sorted(withheld)
