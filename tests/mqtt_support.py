"""Helpers for the tests of the tuned paho client: a TLS broker and session checks."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cityvitals.cli.localstack import MosquittoServer, free_port, wait_for_port
from cityvitals.mqttfast import TunedClient
from tests.fix_services import Publisher, wait_until

# Small enough that the broker waits for our acknowledgements mid-stream (MQTT 5
# §3.1.2.11.3): a PUBACK that never leaves stalls the test instead of passing it.
RECEIVE_MAXIMUM = 100


@dataclass(frozen=True)
class TlsBroker:
    """A Mosquitto with a plain and a TLS listener, and the CA that signed its cert."""

    server: MosquittoServer
    tls_port: int
    ca_file: Path

    @property
    def plain_url(self) -> str:
        """The `mqtt://` URL of the plain listener."""
        return self.server.url

    @property
    def tls_url(self) -> str:
        """The `mqtts://` URL of the TLS listener."""
        return f"mqtts://127.0.0.1:{self.tls_port}"


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    assert openssl, "the TLS tests need the openssl command"
    subprocess.run([openssl, *args], check=True, capture_output=True)


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server cert for 127.0.0.1/localhost: (ca, cert, key)."""
    ca_key, ca = folder / "ca.key", folder / "ca.crt"
    key, csr, cert = folder / "server.key", folder / "server.csr", folder / "server.crt"
    ext = folder / "server.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
    )
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", "/CN=cityvitals test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _openssl("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext),
    )  # fmt: skip
    return ca, cert, key


@contextmanager
def tls_broker() -> Iterator[TlsBroker]:
    """Start a broker of its own with a TLS listener next to the plain one."""
    folder = Path(tempfile.mkdtemp(prefix="cityvitals-mqtls-"))
    folder.chmod(0o711)
    ca, cert, key = make_certificates(folder)
    tls_port = free_port()
    server = MosquittoServer(
        work_dir=folder / "broker",
        port=free_port(),
        extra_config=(
            f"listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
        ),
        log_file=folder / "mosquitto.log",
    )
    server.start()
    try:
        wait_for_port(tls_port, 30, proc=server.proc)
        yield TlsBroker(server, tls_port, ca)
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def session_properties() -> Properties:
    """CONNECT properties of a persistent session that the broker keeps for 5 minutes."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 300
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    return props


def new_client(
    client_id: str,
    *,
    tuned: bool,
    ca_file: Path | None = None,
    cls: type[TunedClient] = TunedClient,
) -> TunedClient:
    """A manually acknowledging MQTT 5 client, tuned or stock, optionally over TLS."""
    client = cls(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=True,
        tuned=tuned,
    )
    if ca_file is not None:
        client.tls_set(ca_certs=str(ca_file))
    return client


class AckingSubscriber:
    """A persistent-session subscriber that acknowledges in batches, the collector's way.

    paho's network thread receives everything under `prefix`; the test's thread calls
    `ack_many`, as the collector's writer loop does after each commit.
    """

    def __init__(self, client: TunedClient, prefix: str, *, raw: bool = False) -> None:
        topic_filter = f"{prefix}/#"
        # Outside the filter, so the round trip in `close` brings nothing back to us.
        self.barrier_topic = f"{prefix}-settled"
        self.client = client
        self.lock = threading.Lock()
        self.payloads: list[bytes] = []
        self.unacked: list[tuple[int, bytes]] = []
        self.qos: set[int] = set()
        self.subscribed = threading.Event()
        client.on_connect = lambda c, *_: c.subscribe(topic_filter, qos=1)
        client.on_subscribe = lambda *_: self.subscribed.set()
        client.on_message = self._on_message
        if raw:
            # PUBLISH packets cut straight from the receive buffer, as the collector takes them.
            client.on_publish_raw = self._on_raw

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self._on_raw(msg._topic, bytes(msg.payload), msg.mid, msg.qos)

    def _on_raw(self, topic: bytes, payload: bytes, mid: int, qos: int) -> None:
        with self.lock:
            self.payloads.append(payload)
            self.unacked.append((mid, payload))
            self.qos.add(qos)

    def connect(self, host: str, port: int) -> None:
        """Connect, keeping the session, and wait for the SUBACK."""
        self.client.connect(host, port, clean_start=False, properties=session_properties())
        self.client.loop_start()
        wait_until(self.subscribed.is_set, 15, "SUBACK")

    def receive(
        self,
        count: int,
        *,
        withhold: Callable[[bytes], bool] = lambda _: False,
        deadline_s: float = 60,
    ) -> None:
        """Take `count` messages, acknowledging every batch except what `withhold` picks."""
        end = time.monotonic() + deadline_s
        while True:
            with self.lock:
                batch, self.unacked = self.unacked, []
                received = len(self.payloads)
            self.client.ack_many(mid for mid, payload in batch if not withhold(payload))
            if received >= count:
                return
            assert time.monotonic() < end, f"received {received} of {count} messages"
            time.sleep(0.01)

    def close(self) -> None:
        """Wait until the broker has handled our PUBACKs, then disconnect."""
        try:
            # Mosquitto 2.0 handles one packet per socket per turn of its loop, so a batch
            # of PUBACKs takes effect over many turns, and a session taken over
            # meanwhile would lose the rest. The broker handles a connection's packets
            # in order: once our own QoS 1 publish is acknowledged, so are they.
            info = self.client.publish(self.barrier_topic, b"", qos=1)
            info.wait_for_publish(timeout=30)
            assert info.is_published(), "the broker did not answer the barrier publish"
        finally:
            self.client.disconnect()
            self.client.loop_stop()


def resume_session(
    host: str,
    port: int,
    client_id: str,
    publisher: Publisher,
    topic: str,
    *,
    ca_file: Path | None = None,
) -> tuple[bool, list[bytes]]:
    """Connect again as `client_id`: (session present, what arrived before a marker).

    The broker re-sends unacknowledged messages as soon as the session resumes, ahead
    of anything published afterwards; a marker published once connected bounds the
    wait, so "nothing came back" needs no fixed sleep.
    """
    marker = f"marker-{uuid.uuid4().hex}".encode()
    got: list[bytes] = []
    present: list[bool] = []
    lock = threading.Lock()

    def on_connect(
        c: mqtt.Client, u: object, flags: mqtt.ConnectFlags, rc: object, p: object
    ) -> None:
        present.append(flags.session_present)

    def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        with lock:
            got.append(bytes(msg.payload))

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
    )
    if ca_file is not None:
        client.tls_set(ca_certs=str(ca_file))
    client.on_connect = on_connect
    client.on_message = on_message
    # No session expiry: the session resumes now and ends with this connection.
    client.connect(host, port, clean_start=False)
    client.loop_start()
    try:
        wait_until(lambda: bool(present), 15, "CONNACK")
        publisher.publish_all([(topic, marker)])

        def marker_seen() -> bool:
            with lock:
                return marker in got

        wait_until(marker_seen, 30, "the marker message")
    finally:
        client.disconnect()
        client.loop_stop()
    with lock:
        return present[0], got[: got.index(marker)]
