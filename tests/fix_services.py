"""Fixtures that run the project's own services as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityvitals.cli.localstack import free_port

CITYVITALS = str(Path(sys.executable).parent / "cityvitals")


def wait_until(
    check: Callable[[], bool],
    deadline_s: float = 30.0,
    what: str = "condition",
    interval_s: float = 0.05,
) -> None:
    """Poll `check` until it holds; fail the test with `what` when the deadline passes."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if check():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {deadline_s:.0f} s waiting for {what}")


def scrape(port: int) -> dict[str, float]:
    """A metrics endpoint as {series: value} (series with labels as written)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


@dataclass
class ServiceProcess:
    """A `cityvitals` subcommand running as a child process."""

    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        """Start the process, logging to its file."""
        out = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [CITYVITALS, *self.args], env=self.env, stdout=out, stderr=subprocess.STDOUT
        )
        out.close()

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> int | None:
        """Signal the process and wait for it; return its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        code = self.proc.returncode
        self.proc = None
        return code

    def log(self) -> str:
        """What the process wrote."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class CollectorProcess(ServiceProcess):
    """A collector with its own metrics port."""

    metrics_port: int = 0

    def metrics(self) -> dict[str, float]:
        """Its current metrics."""
        return scrape(self.metrics_port)

    def ready(self) -> bool:
        """Connected and subscribed."""
        try:
            return self.metrics().get("cityvitals_collector_mqtt_connected") == 1.0
        except OSError:
            return False

    def start_and_wait(self, deadline_s: float = 30) -> None:
        """Start and wait until it is subscribed."""
        self.start()
        wait_until(self.ready, deadline_s, f"collector ready; log:\n{self.log()[-3000:]}")


def service_env(database_url: str, mqtt_url: str, prefix: str, **extra: str) -> dict[str, str]:
    """The environment for a service pointed at the harness servers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYVITALS_")}
    env.update(
        {
            "CITYVITALS_DATABASE_URL": database_url,
            "CITYVITALS_MQTT_URL": mqtt_url,
            "CITYVITALS_TOPIC_PREFIX": prefix,
            "CITYVITALS_LOG_FORMAT": "json",
        }
    )
    env.update({f"CITYVITALS_{k.upper()}": v for k, v in extra.items()})
    return env


@pytest.fixture
def collector_factory(tmp_path: Path) -> Iterator[Callable[..., CollectorProcess]]:
    """Make collectors (started by the test); all are stopped at the end."""
    made: list[CollectorProcess] = []

    def make(database_url: str, mqtt_url: str, prefix: str, **extra: str) -> CollectorProcess:
        port = free_port()
        extra.setdefault("client_id", f"collector-{prefix.split('/')[0]}-{len(made)}")
        env = service_env(database_url, mqtt_url, prefix, metrics_port=str(port), **extra)
        proc = CollectorProcess(
            ["collector"], env, tmp_path / f"collector-{len(made)}.log", metrics_port=port
        )
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.stop(signal.SIGKILL, 10)


class Publisher:
    """A paho-mqtt 2 client that publishes and waits for every PUBACK."""

    def __init__(self, mqtt_url: str, client_id: str = "") -> None:
        from cityvitals.settings import parse_mqtt_url

        target = parse_mqtt_url(mqtt_url)
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(target.host, target.port)
        self.client.loop_start()

    def publish_all(
        self,
        messages: list[tuple[str, bytes]],
        qos: int = 1,
        retain: bool = False,
        deadline_s: float = 60,
    ) -> None:
        """Publish messages and wait until the broker acknowledged each."""
        infos = [self.client.publish(t, p, qos=qos, retain=retain) for t, p in messages]
        end = time.monotonic() + deadline_s
        for info in infos:
            info.wait_for_publish(timeout=max(0.1, end - time.monotonic()))
            if not info.is_published():
                raise AssertionError("broker did not acknowledge a publish in time")

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(mqtt_url: str) -> Iterator[Publisher]:
    """A connected publisher on the session broker."""
    pub = Publisher(mqtt_url)
    yield pub
    pub.close()
