"""Debian's real Prometheus scrapes the real API and collector with the shipped config."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from cityvitals.cli.localstack import free_port, wait_for_port
from cityvitals.settings import parse_mqtt_url

from .conftest import RunningServices
from .promql import PROMETHEUS_DIR, load_yaml

DEADLINE_S = 60.0


class Prometheus:
    """A Prometheus server's HTTP API on a loopback port."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str) -> Any:
        """GET an API path and return its `data`."""
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        return list(self.get("/api/v1/query", query=promql)["result"])

    def wait_for(self, what: str, check: Callable[[], bool], *show: str) -> None:
        """Poll until `check()` holds, failing after a deadline with the `show` queries."""
        end = time.monotonic() + DEADLINE_S
        while time.monotonic() < end:
            if check():
                return
            time.sleep(0.25)
        seen = {q: [(r["metric"], r["value"][1]) for r in self.query(q)] for q in show}
        pytest.fail(f"Prometheus: timed out waiting for {what}; last seen: {seen}")


def scrape_config(services: RunningServices, prom_port: int) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with its targets pointed at the test's services."""
    config: dict[str, Any] = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    config["global"] |= {
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "evaluation_interval": "1s",
    }
    config["rule_files"] = [str(PROMETHEUS_DIR / f) for f in config["rule_files"]]
    targets = {
        "cityvitals-collector": f"127.0.0.1:{services.metrics_port}",
        "cityvitals-api": f"127.0.0.1:{services.api_port}",
        "prometheus": f"127.0.0.1:{prom_port}",
    }
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    # The shipped rule groups evaluate every 15 s; the test cannot wait that long.
    return config


@pytest.fixture
def prometheus(running_services: RunningServices, tmp_path: Path) -> Iterator[Prometheus]:
    """Debian's prometheus binary scraping the running services."""
    binary = shutil.which("prometheus")
    if not binary:
        pytest.fail(
            "prometheus is missing: install Debian's `prometheus` package (`make test` does)"
        )
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(running_services, port)))
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port(port, DEADLINE_S, proc=proc)
        server = Prometheus(port)
        # The port opens before the storage is up; the API answers 503 until /-/ready.
        server.wait_for("Prometheus ready", lambda: _ready(server.base))
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as resp:  # noqa: S310
            return int(resp.status) == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _publish_reading(mqtt_url: str, topic_prefix: str) -> None:
    target = parse_mqtt_url(mqtt_url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if target.username:
        client.username_pw_set(target.username, target.password)
    client.connect(target.host, target.port)
    client.loop_start()
    try:
        info = client.publish(
            f"{topic_prefix}/parking/deploy-p1/telemetry", b'{"occupied": true}', qos=1
        )
        info.wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


def _value(result: list[dict[str, Any]]) -> float:
    return float(result[0]["value"][1]) if result else float("nan")


def test_prometheus_scrapes_services_and_evaluates_every_rule(
    prometheus: Prometheus, running_services: RunningServices, mqtt_url: str, topic_prefix: str
) -> None:
    prometheus.wait_for(
        "both services scraped as up",
        lambda: (
            sorted(r["metric"]["job"] for r in prometheus.query('up{job=~"cityvitals-.*"} == 1'))
            == ["cityvitals-api", "cityvitals-collector"]
        ),
    )
    prometheus.wait_for(
        "the API's snapshot and database gauges",
        lambda: (
            _value(prometheus.query("cityvitals_api_database_up")) == 1
            and bool(prometheus.query("cityvitals_snapshot_age_seconds"))
        ),
        "cityvitals_api_database_up",
        "cityvitals_snapshot_age_seconds",
    )

    prometheus.wait_for(
        "the collector connected to the broker",
        lambda: _value(prometheus.query("cityvitals_collector_mqtt_connected")) == 1,
        "cityvitals_collector_mqtt_connected",
    )
    # Connected is not yet subscribed, and a reading published before the subscription
    # is lost (QoS 1 is kept only for existing sessions): publish again until one counts.
    last_publish = [0.0]

    def publish_now_and_then() -> bool:
        if time.monotonic() - last_publish[0] > 2:
            _publish_reading(mqtt_url, topic_prefix)
            last_publish[0] = time.monotonic()
        return True

    prometheus.wait_for(
        "the reading received, stored and the collector's database up",
        lambda: (
            publish_now_and_then()
            and _value(prometheus.query("sum(cityvitals_collector_messages_received_total)")) >= 1
            and _value(prometheus.query("sum(cityvitals_collector_readings_stored_total)")) >= 1
            and _value(prometheus.query("cityvitals_collector_database_up")) == 1
        ),
        "cityvitals_collector_messages_received_total",
        "cityvitals_collector_readings_stored_total",
        "cityvitals_collector_database_up",
    )
    prometheus.wait_for(
        "every rule evaluated",
        lambda: all(
            r["lastEvaluation"] > "2000"
            for g in prometheus.get("/api/v1/rules")["groups"]
            for r in g["rules"]
        ),
    )
    groups = prometheus.get("/api/v1/rules")["groups"]
    broken = {
        r["name"]: r.get("lastError") for g in groups for r in g["rules"] if r["health"] != "ok"
    }
    assert broken == {}, "rules that fail on the services' real series"
    assert {g["name"] for g in groups} == {
        g["name"]
        for f in sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
        for g in load_yaml(f)["groups"]
    }
