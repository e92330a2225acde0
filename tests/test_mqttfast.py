"""The tuned paho client: its version guard, its reader, and no loss either way."""

from __future__ import annotations

import ssl
import uuid
from collections import deque
from collections.abc import Iterator
from typing import Any

import paho.mqtt
import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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


def _publish_packet(
    topic: str, payload: bytes, *, qos: int = 0, mid: int = 0, properties: bytes = b"\x00"
) -> bytes:
    """An MQTT 5 PUBLISH (§3.3): topic, packet id (QoS 1, 2), properties, payload."""
    name = topic.encode()
    body = len(name).to_bytes(2, "big") + name
    if qos:
        body += mid.to_bytes(2, "big")
    return _packet(0x30 | qos << 1, body + properties + payload)


def _packet(head: int, body: bytes) -> bytes:
    """A control packet: its fixed header byte, remaining length (§1.5.5), body."""
    length, n = b"", len(body)
    while True:
        n, digit = divmod(n, 128)
        length += bytes([digit | (0x80 if n else 0)])
        if not n:
            break
    return bytes([head]) + length + body


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


@pytest.fixture(params=["paho", "raw"])
def reading(request: pytest.FixtureRequest) -> Iterator[tuple[TunedClient, list[bytes]]]:
    client = _client()
    got: list[bytes] = []
    client.on_message = lambda c, u, msg: got.append(bytes(msg.payload))
    if request.param == "raw":
        client.on_publish_raw = lambda topic, payload, mid, qos: got.append(payload)
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


# What a subscriber meets in one stream: the PUBLISH packets the raw path takes whole,
# and those it must leave to paho's reader, with other packets between them.
MIXED: list[tuple[bytes, tuple[str, bytes, int, int] | None, bool]] = [
    # (packet, what it delivers (topic, payload, packet id, QoS) or None, taken raw)
    (_publish_packet("c/energy/m1/telemetry", b'{"a":1}', qos=1, mid=7), None, True),
    (_publish_packet("c/energy/m2/telemetry", b"", qos=1, mid=65535), None, True),
    (_packet(0xD0, b""), None, False),  # PINGRESP
    (_publish_packet("c/parking/p/telemetry", b"zero"), None, True),
    # A payload format indicator (property 0x01): paho parses properties.
    (
        _publish_packet("c/w/h/telemetry", b"prop", qos=1, mid=9, properties=b"\x02\x01\x01"),
        None,
        False,
    ),
    (_publish_packet("$SYS/broker/version", b"mosquitto version 2.1.2"), None, False),
    (
        _publish_packet("c/energy/big/telemetry", b"B" * (RECV_CHUNK + 10), qos=1, mid=10),
        None,
        False,
    ),
    (_publish_packet("c/energy/m1/telemetry", "ü".encode() * 3, qos=1, mid=8), None, True),
    (_publish_packet("c/\u00e9/x/telemetry", b"utf8 topic", qos=1, mid=11), None, True),
]


def _delivered(packet: bytes) -> tuple[bytes, bytes, int, int]:
    qos = (packet[0] >> 1) & 3
    client = _client()
    got: list[tuple[bytes, bytes, int, int]] = []
    client.on_message = lambda c, u, m: got.append((m._topic, bytes(m.payload), m.mid, m.qos))
    client._sock = ScriptedSocket([packet])
    client.loop_read()
    client._sock = None
    assert len(got) == 1, qos
    return got[0]


def _read_all(records: list[bytes], raw: bool) -> tuple[list[Any], list[str]]:
    client = _client()
    got: list[tuple[bytes, bytes, int, int]] = []
    paths: list[str] = []

    def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        got.append((m._topic, bytes(m.payload), m.mid, m.qos))
        paths.append("paho")

    def on_raw(topic: bytes, payload: bytes, mid: int, qos: int) -> None:
        got.append((topic, payload, mid, qos))
        paths.append("raw")

    client.on_message = on_message
    if raw:
        client.on_publish_raw = on_raw
    client._sock = ScriptedSocket(records)
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert not client.has_unread_input()
    client._sock = None
    return got, paths


@settings(max_examples=60, deadline=None)
@given(
    order=st.permutations(range(len(MIXED))),
    cuts=st.lists(st.integers(min_value=1, max_value=RECV_CHUNK + 400), max_size=12),
)
def test_the_raw_path_delivers_what_paho_does_in_the_same_order(
    order: list[int], cuts: list[int]
) -> None:
    """However the stream is cut into reads, the raw path hands over exactly what
    paho's reader would, in the same order, and takes only the plain PUBLISH packets."""
    stream = b"".join(MIXED[i][0] for i in order)
    points = sorted({c % len(stream) for c in cuts} - {0})
    records = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    by_paho, paho_paths = _read_all(records, raw=False)
    by_raw, raw_paths = _read_all(records, raw=True)
    assert by_raw == by_paho
    assert set(paho_paths) == {"paho"}
    publishes = [i for i in order if MIXED[i][0][0] & 0xF0 == 0x30]
    assert raw_paths == ["raw" if MIXED[i][2] else "paho" for i in publishes]
    assert by_raw == [_delivered(MIXED[i][0]) for i in publishes]


def test_a_paused_reader_leaves_the_rest_in_the_buffer_until_it_resumes() -> None:
    client = _client()
    got: list[bytes] = []
    client.on_publish_raw = lambda topic, payload, mid, qos: got.append(payload)
    held = {"limit": 3}
    client.pause_reading = lambda: len(got) >= held["limit"]
    stream = b"".join(_publish_packet("t/x", b"%d" % i, qos=1, mid=i + 1) for i in range(10))
    sock = ScriptedSocket([stream])
    client._sock = sock
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got == [b"0", b"1", b"2"]
    assert client.has_unread_input()  # held back, not lost
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS  # still paused
    assert len(got) == 3
    held["limit"] = 100
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got == [b"%d" % i for i in range(10)]
    client._sock = None


def test_a_paused_reader_still_reads_a_pingresp_but_no_publish() -> None:
    # paho drops a connection whose PINGRESP it never reads: a pause must not starve it.
    client = _client()
    got: list[bytes] = []
    client.on_publish_raw = lambda topic, payload, mid, qos: got.append(payload)
    client.pause_reading = lambda: True
    pingresp = _packet(0xD0, b"")
    client._sock = ScriptedSocket([pingresp])
    client._ping_t = 1.0  # a PINGREQ is outstanding
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert client._ping_t == 0  # answered
    # Behind a PUBLISH, it waits with it: nothing is read past the pause.
    client._sock = ScriptedSocket([_publish_packet("t/x", b"p", qos=1, mid=1) + pingresp])
    client._ping_t = 1.0
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got == []
    assert client._ping_t == 1.0
    client._sock = None


@pytest.mark.parametrize("raw", [False, True], ids=["paho", "raw"])
def test_a_malformed_length_is_refused_on_both_paths(raw: bool) -> None:
    client = _client()
    if raw:
        client.on_publish_raw = lambda *_: pytest.fail("a malformed packet was delivered")
    client.on_message = lambda *_: pytest.fail("a malformed packet was delivered")
    client._sock = ScriptedSocket([b"\x32\xff\xff\xff\xff\x01" + b"x" * 50])
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_PROTOCOL
    client._sock = None


# --- through the real broker ----------------------------------------------------------


RECEIVE_PATHS = pytest.mark.parametrize(
    ("tuned", "raw"), [(True, True), (True, False), (False, False)], ids=["raw", "tuned", "stock"]
)


@RECEIVE_PATHS
def test_every_message_is_received_and_acknowledged(
    mqtt_url: str, topic_prefix: str, publisher: Publisher, tuned: bool, raw: bool
) -> None:
    target = parse_mqtt_url(mqtt_url)
    client_id = f"fast-{uuid.uuid4().hex[:8]}"
    sub = AckingSubscriber(new_client(client_id, tuned=tuned), topic_prefix, raw=raw)
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


@RECEIVE_PATHS
def test_only_what_was_not_acknowledged_comes_back(
    mqtt_url: str, topic_prefix: str, publisher: Publisher, tuned: bool, raw: bool
) -> None:
    target = parse_mqtt_url(mqtt_url)
    client_id = f"fast-{uuid.uuid4().hex[:8]}"
    sub = AckingSubscriber(new_client(client_id, tuned=tuned), topic_prefix, raw=raw)
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
