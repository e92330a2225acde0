"""The shipped broker config (deploy/mosquitto) on a real Mosquitto: users, ACL and TLS."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cityvitals.brokerconf import QUEUE_SETTINGS, queue_settings
from cityvitals.cli.localstack import free_port, wait_for_port
from tests.fix_servers import mosquitto_21_home

MOSQUITTO_DIR = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
PASSWORDS = {
    "collector": "collector-secret",
    "healthcheck": "health-secret",
    "pk-0001": "device-1-secret",
    "pk-0002": "device-2-secret",
}
WAIT_S = 10.0


@dataclass
class Broker:
    """The production config, paths and ports rewritten to a scratch folder."""

    port: int
    tls_port: int
    ca_file: Path
    proc: subprocess.Popen[bytes]


def _binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if not found:
        pytest.fail(f"`{name}` is missing: install Debian's mosquitto and mosquitto-clients")
    return found


PLUGIN = "/usr/lib/mosquitto_persist_sqlite.so"


def _broker_binary() -> tuple[str, Path | None]:
    """Mosquitto 2.1 when the suite has it (the production broker), else Debian's 2.0."""
    home = mosquitto_21_home()
    if home is not None and (home / "sbin" / "mosquitto").exists():
        return str(home / "sbin" / "mosquitto"), home
    return _binary("mosquitto"), None


def _localise(text: str, work: Path, port: int, tls_port: int, home: Path | None = None) -> str:
    """Point the container paths at `work` and the listeners at loopback test ports.

    On Debian's 2.0, which has no persist-sqlite plugin, the plugin lines give way to
    its own persistence file; everything else (users, ACL, TLS) is checked as shipped.
    """
    if home is not None:
        text = text.replace(PLUGIN, str(home / "lib" / "mosquitto_persist_sqlite.so"))
    else:
        text = text.replace(f"plugin {PLUGIN}", "persistence true").replace(
            "plugin_opt_flush_period 0\n", ""
        )
    text = text.replace("/mosquitto/config/", f"{work}/").replace("/mosquitto/", f"{work}/")
    text = re.sub(r"^listener 1883$", f"listener {port} 127.0.0.1", text, flags=re.M)
    return re.sub(r"^listener 8883$", f"listener {tls_port} 127.0.0.1", text, flags=re.M)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A real Mosquitto running deploy/mosquitto's config, ACL and TLS listener."""
    work = tmp_path_factory.mktemp("mosquitto-prod")
    (work / "data").mkdir()
    (work / "certs").mkdir()
    (work / "conf.d").mkdir()
    passwd = work / "passwd"
    for i, (user, password) in enumerate(PASSWORDS.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run(
            [_binary("mosquitto_passwd"), *create, "-b", str(passwd), user, password],
            check=True,
            capture_output=True,
        )
    shutil.copy(MOSQUITTO_DIR / "acl", work / "acl")
    openssl = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1"
    subprocess.run(
        [
            *openssl.split(),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(work / "certs" / "server.key")),
            *("-out", str(work / "certs" / "server.crt")),
        ],
        check=True,
        capture_output=True,
    )
    # Self-signed: the certificate is its own CA.
    shutil.copy(work / "certs" / "server.crt", work / "certs" / "ca.crt")
    port, tls_port = free_port(), free_port()
    tls = (MOSQUITTO_DIR / "conf.d" / "tls.conf.example").read_text()
    (work / "conf.d" / "tls.conf").write_text(_localise(tls, work, port, tls_port))
    binary, home = _broker_binary()
    conf = _localise((MOSQUITTO_DIR / "mosquitto.conf").read_text(), work, port, tls_port, home)
    if os.geteuid() == 0:
        # Stay root: the scratch folder is not readable by the `mosquitto` user.
        conf += "\nuser root\n"
    (work / "mosquitto.conf").write_text(conf)
    log = (work / "mosquitto.log").open("wb")
    proc = subprocess.Popen(
        [binary, "-c", str(work / "mosquitto.conf")],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port(port, 15, proc=proc)
        wait_for_port(tls_port, 15, proc=proc)
        yield Broker(port, tls_port, work / "certs" / "ca.crt", proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


@dataclass
class Client:
    """A paho MQTT 5 client that records what the broker answered."""

    mqtt: mqtt.Client
    connack: ReasonCode | None = None
    subacks: dict[int, list[ReasonCode]] = field(default_factory=dict)
    pubacks: dict[int, ReasonCode] = field(default_factory=dict)
    received: list[tuple[str, bytes]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def wait(self, what: str, check: Callable[[], bool]) -> None:
        """Wait until `check()` is true, failing after a deadline."""
        with self.cond:
            if not self.cond.wait_for(check, timeout=WAIT_S):
                pytest.fail(f"timed out waiting for {what}")

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


def _connect(
    broker: Broker, user: str | None, password: str | None = None, *, tls: bool = False
) -> Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"test-{user}-{free_port()}", protocol=mqtt.MQTTv5
    )
    c = Client(client)
    if user is not None:
        client.username_pw_set(user, password if password is not None else PASSWORDS[user])
    if tls:
        client.tls_set(ca_certs=str(broker.ca_file))

    def on_connect(
        _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: Properties | None
    ) -> None:
        with c.cond:
            c.connack = rc
            c.cond.notify_all()

    def on_subscribe(
        _c: mqtt.Client, _u: object, mid: int, rcs: list[ReasonCode], _p: Properties | None
    ) -> None:
        with c.cond:
            c.subacks[mid] = rcs
            c.cond.notify_all()

    def on_publish(
        _c: mqtt.Client, _u: object, mid: int, rc: ReasonCode, _p: Properties | None
    ) -> None:
        with c.cond:
            c.pubacks[mid] = rc
            c.cond.notify_all()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with c.cond:
            c.received.append((msg.topic, bytes(msg.payload)))
            c.cond.notify_all()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_publish = on_publish
    client.on_message = on_message
    client.connect("127.0.0.1", broker.tls_port if tls else broker.port, keepalive=30)
    client.loop_start()
    c.wait("CONNACK", lambda: c.connack is not None)
    return c


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    """Clients a test opened, closed at its end."""
    opened: list[Client] = []
    yield opened
    for c in opened:
        c.close()


def _open(clients: list[Client], broker: Broker, user: str | None, *, tls: bool = False) -> Client:
    c = _connect(broker, user, tls=tls)
    clients.append(c)
    assert c.connack is not None
    assert not c.connack.is_failure, f"{user} refused: {c.connack}"
    return c


def _subscribe(c: Client, topic: str) -> list[ReasonCode]:
    _, mid = c.mqtt.subscribe(topic, qos=1)
    assert mid is not None
    c.wait(f"SUBACK for {topic}", lambda: mid in c.subacks)
    return c.subacks[mid]


def _publish(c: Client, topic: str, payload: bytes) -> ReasonCode:
    mid = c.mqtt.publish(topic, payload, qos=1).mid
    c.wait(f"PUBACK for {topic}", lambda: mid in c.pubacks)
    return c.pubacks[mid]


def test_device_publishes_under_own_id_to_collector_shared_subscription(
    broker: Broker, clients: list[Client]
) -> None:
    collector = _open(clients, broker, "collector")
    granted = _subscribe(collector, "$share/cityvitals/city/+/+/telemetry")
    assert not granted[0].is_failure, f"collector's shared subscription refused: {granted}"
    device = _open(clients, broker, "pk-0001")

    rc = _publish(device, "city/parking/pk-0001/telemetry", b'{"occupied": true}')

    assert not rc.is_failure
    collector.wait("the reading at the collector", lambda: len(collector.received) == 1)
    assert collector.received == [("city/parking/pk-0001/telemetry", b'{"occupied": true}')]


def test_device_publishing_under_another_device_id_is_not_delivered(
    broker: Broker, clients: list[Client]
) -> None:
    collector = _open(clients, broker, "collector")
    _subscribe(collector, "city/#")
    device = _open(clients, broker, "pk-0001")

    forged = _publish(device, "city/parking/pk-0002/telemetry", b'{"occupied": false}')
    # A marker published after the forged message: once it arrives, the forged one
    # would have arrived before it had the broker let it through.
    _publish(device, "city/parking/pk-0001/status", b"online")

    collector.wait("the marker", lambda: len(collector.received) >= 1)
    assert [t for t, _ in collector.received] == ["city/parking/pk-0001/status"]
    assert forged.is_failure, f"broker acknowledged a forged publish: {forged}"


def test_device_does_not_receive_other_devices_readings(
    broker: Broker, clients: list[Client]
) -> None:
    collector = _open(clients, broker, "collector")
    _subscribe(collector, "city/#")
    nosy = _open(clients, broker, "pk-0001")
    # Mosquitto 2.0 grants a wildcard subscription and checks read access per message.
    _subscribe(nosy, "city/#")
    other = _open(clients, broker, "pk-0002")

    _publish(other, "city/parking/pk-0002/telemetry", b'{"occupied": true}')
    collector.wait("the reading at the collector", lambda: len(collector.received) == 1)
    # The broker writes to one connection in order: a message it forwarded to the nosy
    # device went out before the acknowledgement of the device's own later publish.
    _publish(nosy, "city/parking/pk-0001/status", b"online")

    assert nosy.received == []


def test_collector_reads_the_broker_version_it_chooses_its_subscription_by(
    broker: Broker, clients: list[Client]
) -> None:
    collector = _open(clients, broker, "collector")
    _subscribe(collector, "$SYS/broker/version")
    collector.wait("the broker version", lambda: len(collector.received) == 1)
    topic, version = collector.received[0]
    assert topic == "$SYS/broker/version"
    assert version.startswith(b"mosquitto version 2.")


def test_collector_cannot_publish_readings(broker: Broker, clients: list[Client]) -> None:
    collector = _open(clients, broker, "collector")

    assert _publish(collector, "city/parking/pk-0001/telemetry", b"{}").is_failure


@pytest.mark.parametrize(
    ("user", "password"),
    [(None, None), ("pk-0001", "wrong-password"), ("nobody", "whatever")],
    ids=["anonymous", "wrong-password", "unknown-user"],
)
def test_connect_without_valid_credentials_is_refused(
    broker: Broker, user: str | None, password: str | None
) -> None:
    c = _connect(broker, user, password)
    try:
        assert c.connack is not None
        assert c.connack.is_failure, f"broker accepted {user!r}: {c.connack}"
    finally:
        c.close()


def test_tls_listener_takes_device_with_password(broker: Broker, clients: list[Client]) -> None:
    collector = _open(clients, broker, "collector")
    _subscribe(collector, "city/+/+/telemetry")
    device = _open(clients, broker, "pk-0002", tls=True)

    assert not _publish(device, "city/parking/pk-0002/telemetry", b"{}").is_failure
    collector.wait("the reading sent over TLS", lambda: len(collector.received) == 1)


def test_container_health_check_command_succeeds(broker: Broker) -> None:
    # The same mosquitto_sub call as the broker's health check in docker-compose.yml.
    result = subprocess.run(
        [
            _binary("mosquitto_sub"),
            *("-h", "127.0.0.1", "-p", str(broker.port)),
            *("-u", "healthcheck", "-P", PASSWORDS["healthcheck"]),
            *("-t", "$SYS/broker/uptime", "-C", "1", "-W", "5"),
        ],
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()


def test_mosquitto_conf_holds_every_queue_setting_with_its_reason() -> None:
    lines = (MOSQUITTO_DIR / "mosquitto.conf").read_text().splitlines()
    for line, (_, _, why) in zip(queue_settings(), QUEUE_SETTINGS, strict=True):
        assert line in lines, f"deploy/mosquitto/mosquitto.conf lacks `{line}`"
        assert lines[lines.index(line) - 1] == f"# {why}", f"`{line}` lacks its reason"
